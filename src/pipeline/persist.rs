//! The persist stage: appends each committed block to the block log (durable on return), then
//! writes it to RocksDB in one batch — indexes (height → log offset, hash → height, tx hash →
//! location), servicechain state, receipts — so RocksDB never runs ahead of the log; only then
//! is the block reported as final to observers (clients' receipts, finality metrics).

use super::stage::Stage;
use crate::storage::blocklog::BlockLog;
use crate::storage::state::CommittedState;
use crate::types::codec::encode_frame;
use crate::types::Block;
use std::sync::Arc;

/// Called with each block once it is durable.
pub type OnPersisted = Box<dyn FnMut(&Block) + Send>;

pub struct Persist {
    pub log: BlockLog,
    /// Holds the block's execution from commit until it is written here.
    pub state: Arc<CommittedState>,
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
        crate::chain::recovery::persist(&self.state, &block, offset.0)?;
        (self.on_persisted)(&block);
        Ok(())
    }
}
