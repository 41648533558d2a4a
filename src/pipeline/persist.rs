//! The persist stage: appends each committed block to the block log (durable on return) and
//! indexes it in RocksDB (height → log offset, hash → height, tx hash → location); only then
//! is the block reported as final to observers (clients' receipts, finality metrics).

use super::stage::Stage;
use crate::storage::blocklog::BlockLog;
use crate::storage::store::Store;
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
        crate::node::recovery::index(&self.store, &block, offset.0)?;
        (self.on_persisted)(&block);
        Ok(())
    }
}
