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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::sync::ChainReader;
    use crate::storage::blocklog::BlockLogOptions;
    use crate::storage::state::PendingBlock;
    use crate::storage::store::Store;
    use crate::types::{BlockHash, Height};
    use alloy_primitives::B256;
    use std::sync::Mutex;

    fn block(height: u64, parent: BlockHash) -> Arc<Block> {
        Arc::new(crate::net::sync::tests::block(height, parent, 0))
    }

    /// Holds `block`'s (empty) execution as consensus would on commit.
    fn commit(state: &CommittedState, block: &Block) {
        let height = block.header().height;
        state.committed(PendingBlock::new(
            height,
            block.hash(),
            Vec::new(),
            Vec::new(),
        ));
    }

    /// (height, whether it was readable through the index and the log) of each block an
    /// observer heard of, in order.
    type Heard = Arc<Mutex<Vec<(u64, bool)>>>;

    /// A persist stage in `dir` whose observer records, for each block it hears of, whether
    /// the block could already be read back through the index and the log at that moment.
    fn stage(dir: &std::path::Path) -> (Persist, ChainReader, Heard) {
        let options = BlockLogOptions {
            preallocate_bytes: 0,
            ..Default::default()
        };
        let (log, _) = BlockLog::open(dir.join("blocks.log"), options).unwrap();
        let store = Arc::new(Store::open(dir.join("db")).unwrap());
        let state = Arc::new(CommittedState::open(Arc::clone(&store), &[]).unwrap());
        let chain = ChainReader::new(log.reader(), store);
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (reader, seen) = (chain.clone(), Arc::clone(&heard));
        let on_persisted: OnPersisted = Box::new(move |block: &Block| {
            let height = block.header().height;
            let readable = reader.block_at(height).unwrap().as_ref() == Some(block)
                && reader.block_by_hash(&block.hash()).unwrap().as_ref() == Some(block);
            seen.lock().unwrap().push((height.0, readable));
        });
        let persist = Persist {
            log,
            state,
            on_persisted,
        };
        (persist, chain, heard)
    }

    #[test]
    fn observers_hear_of_a_block_only_once_it_is_in_the_log_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut persist, chain, heard) = stage(dir.path());
        let first = block(1, BlockHash(B256::repeat_byte(9)));
        let second = block(2, first.hash());
        for b in [&first, &second] {
            commit(&persist.state, b);
            persist.handle(Arc::clone(b)).unwrap();
        }
        assert_eq!(*heard.lock().unwrap(), vec![(1, true), (2, true)]);
        assert_eq!(chain.head().unwrap(), Some((Height(2), second.hash())));
        assert_eq!(persist.state.store().state_height().unwrap(), Some(2));
        assert_eq!(persist.state.pending_blocks(), 0);
    }

    #[test]
    fn a_block_without_its_committed_execution_reaches_the_log_but_not_rocksdb_or_observers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut persist, chain, heard) = stage(dir.path());
        let orphan = block(1, BlockHash(B256::repeat_byte(9)));
        let err = persist.handle(Arc::clone(&orphan)).unwrap_err();
        assert!(
            format!("{err:#}").contains("without its execution being committed"),
            "{err:#}"
        );
        assert!(heard.lock().unwrap().is_empty(), "observers heard of it");
        assert_eq!(chain.head().unwrap(), None, "RocksDB indexed it");
        assert_eq!(persist.state.store().state_height().unwrap(), Some(0));
        // The log is written first: the block is there, for a restart to re-execute.
        let logged: Vec<Vec<u8>> = persist.log.iter().map(|r| r.unwrap().1).collect();
        assert_eq!(logged, vec![encode_frame(orphan.as_ref())]);
    }

    #[test]
    fn blocks_handed_out_of_commit_order_are_refused_and_the_order_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut persist, chain, heard) = stage(dir.path());
        let first = block(1, BlockHash(B256::repeat_byte(9)));
        let second = block(2, first.hash());
        commit(&persist.state, &first);
        commit(&persist.state, &second);
        // The second block first: its execution is not the next one held, so nothing of it
        // is written and the first one's execution stays held.
        assert!(persist.handle(Arc::clone(&second)).is_err());
        assert_eq!(chain.head().unwrap(), None);
        assert_eq!(persist.state.pending_blocks(), 2);
        assert!(heard.lock().unwrap().is_empty());
        persist.handle(Arc::clone(&first)).unwrap();
        assert_eq!(chain.head().unwrap(), Some((Height(1), first.hash())));
        assert_eq!(chain.block_at(Height(2)).unwrap(), None);
        assert_eq!(*heard.lock().unwrap(), vec![(1, true)]);
        assert_eq!(persist.state.pending_blocks(), 1);
    }
}
