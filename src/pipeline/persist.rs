//! The persist stage: appends each committed block to the block log (durable on return) and
//! indexes it in RocksDB (height → log offset, hash → height, tx hash → location); only then
//! is the block reported as final to observers (clients' receipts, finality metrics).

use super::stage::Stage;
use crate::storage::blocklog::BlockLog;
use crate::storage::store::{BlockIndex, Store};
use crate::types::codec::encode_frame;
use crate::types::Block;
use std::sync::Arc;

/// Called with each block once it is durable.
pub type OnPersisted = Box<dyn FnMut(&Block) + Send>;

pub struct Persist {
    pub log: BlockLog,
    pub store: Store,
    pub on_persisted: OnPersisted,
}

impl Stage for Persist {
    type Input = Arc<Block>;

    fn name(&self) -> &'static str {
        "persist"
    }

    fn handle(&mut self, block: Arc<Block>) -> anyhow::Result<()> {
        let frame = encode_frame(block.as_ref());
        let offset = self.log.append(&frame)?;
        let txs: Vec<([u8; 32], u32, u32)> = block
            .segments
            .iter()
            .enumerate()
            .flat_map(|(seg, s)| {
                s.txs.iter().enumerate().map(move |(i, raw)| {
                    (crate::crypto::hash::keccak256(raw).0, seg as u32, i as u32)
                })
            })
            .collect();
        self.store.index_block(&BlockIndex {
            height: block.header().height.0,
            hash: block.hash().0 .0,
            log_offset: offset.0,
            txs: &txs,
        })?;
        (self.on_persisted)(&block);
        Ok(())
    }
}
