//! Sender recovery beside the auditor: while the auditor executes and applies a fetched range
//! block by block on its own thread, the senders of the blocks after it are recovered on a
//! pool of their own, a few blocks at a time, and handed over in order.
//!
//! Recovery is most of an RN's catch-up work and spreads over every core; execution runs on
//! the auditor's thread. One after the other, a core idled through every execution; side by
//! side, recovery fills the time the executor leaves. The pool is the RN's own, not rayon's
//! global one, so the executor's own parallel work never queues behind a recovery batch.
//!
//! Only blocks whose certificates and bodies verified are given here; beyond the range itself,
//! memory holds at most [`CHUNKS_AHEAD`] recovered chunks waiting, plus the one being recovered
//! and the one being walked.

use crate::chain::app::CnState;
use crate::exec::SegmentInput;
use crate::types::Block;
use anyhow::Context;
use std::ops::ControlFlow;

/// Blocks recovered in one batch: enough transactions to split over the cores, few enough
/// that execution starts soon after the range arrives.
pub const CHUNK_BLOCKS: usize = 8;
/// Recovered chunks waiting for the executor at most.
pub const CHUNKS_AHEAD: usize = 2;

/// The RN's sender-recovery pool and the shared state whose pool it reads senders from.
pub struct SenderRecovery {
    pool: rayon::ThreadPool,
    state: CnState,
}

impl SenderRecovery {
    /// A pool with one thread per core.
    pub fn new(state: CnState) -> anyhow::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("rn-recover-{i}"))
            .build()
            .context("starting the sender-recovery pool")?;
        Ok(Self { pool, state })
    }

    /// Calls `each` on every block of `blocks` in order with its execution inputs, recovering
    /// the next chunks meanwhile. Stops at the first `Break`, whose value it returns; the
    /// recovery in flight then finishes its chunk and stops. A panic while recovering is
    /// raised here once the blocks before it are walked.
    pub fn for_each<R>(
        &self,
        blocks: &[Block],
        mut each: impl FnMut(&Block, Vec<SegmentInput>) -> ControlFlow<R>,
    ) -> Option<R> {
        if blocks.len() <= CHUNK_BLOCKS {
            // One chunk (a gossiped block at the head): nothing to overlap, no thread.
            return walk(blocks.iter().zip(self.recover(blocks)), &mut each);
        }
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Vec<SegmentInput>>>(CHUNKS_AHEAD);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for chunk in blocks.chunks(CHUNK_BLOCKS) {
                    if tx.send(self.recover(chunk)).is_err() {
                        return; // the walk stopped
                    }
                }
            });
            let inputs = rx.iter().flatten();
            let outcome = walk(blocks.iter().zip(inputs), &mut each);
            drop(rx); // a recovery still running sees the closed link and stops
            outcome
        })
    }

    /// The execution inputs of `blocks`, recovered on this pool.
    fn recover(&self, blocks: &[Block]) -> Vec<Vec<SegmentInput>> {
        let refs: Vec<&Block> = blocks.iter().collect();
        self.pool.install(|| self.state.execution_inputs(&refs))
    }
}

/// Hands each block its inputs until `each` breaks.
fn walk<'b, R>(
    pairs: impl Iterator<Item = (&'b Block, Vec<SegmentInput>)>,
    each: &mut impl FnMut(&Block, Vec<SegmentInput>) -> ControlFlow<R>,
) -> Option<R> {
    for (block, inputs) in pairs {
        if let ControlFlow::Break(r) = each(block, inputs) {
            return Some(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::Mempool;
    use crate::net::sync::tests::block;
    use crate::storage::state::CommittedState;
    use crate::storage::store::Store;
    use crate::types::{BlockHash, ChainId, Segment};
    use std::sync::{Arc, Mutex};

    /// Blocks 1..=n, each with one segment of one transaction as long as its height plus 16.
    fn chain(n: u64) -> Vec<Block> {
        (1..=n)
            .map(|h| block(h, BlockHash::default(), 16 + h as usize))
            .collect()
    }

    fn recovery(dir: &std::path::Path) -> SenderRecovery {
        let store = Arc::new(Store::open(dir).unwrap());
        let state = CnState {
            pool: Arc::new(Mutex::new(Mempool::new(
                Default::default(),
                [ChainId(1000)],
            ))),
            state: Arc::new(CommittedState::open(store, &[]).unwrap()),
            system: Arc::default(),
        };
        SenderRecovery::new(state).unwrap()
    }

    #[test]
    fn every_block_is_handed_over_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let recovery = recovery(dir.path());
        // Several chunks (the recovering thread), one chunk (inline), none.
        for n in [3 * CHUNK_BLOCKS as u64 + 1, 3, 0] {
            let blocks = chain(n);
            let mut seen = Vec::new();
            let stopped = recovery.for_each(&blocks, |block, inputs| {
                let segments: Vec<&Segment> = inputs.iter().map(|(segment, _)| segment).collect();
                assert_eq!(segments, block.segments.iter().collect::<Vec<_>>());
                seen.push(block.header().height.0);
                ControlFlow::<()>::Continue(())
            });
            assert_eq!(stopped, None);
            let heights: Vec<u64> = blocks.iter().map(|b| b.header().height.0).collect();
            assert_eq!(seen, heights, "{n} blocks");
        }
    }

    #[test]
    fn a_break_stops_the_walk_and_returns_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = chain(5 * CHUNK_BLOCKS as u64);
        let mut calls = 0;
        let stopped = recovery(dir.path()).for_each(&blocks, |block, _| {
            calls += 1;
            match block.header().height.0 {
                3 => ControlFlow::Break("refused at 3"),
                _ => ControlFlow::Continue(()),
            }
        });
        assert_eq!(stopped, Some("refused at 3"));
        assert_eq!(calls, 3);
    }
}
