//! Restart: rebuilds a CN's state from what it persisted. RocksDB holds servicechain state,
//! receipts and indexes up to its `state_height` (each block written in one batch after its
//! block-log append); the block log is the authority above that. Every block of the log is
//! replayed into the in-memory parts (regionchain state, tip, recent hashes), blocks above
//! `state_height` are re-executed and written, the tip is the last block, and the consensus
//! WAL tells the state machine what this node already voted so it never contradicts itself.

use super::app::CnApp;
use crate::consensus::machine::{Tip, WalEntry};
use crate::consensus::wal;
use crate::storage::blocklog::BlockLog;
use crate::storage::state::CommittedState;
use crate::types::codec::decode_frame;
use crate::types::Block;
use anyhow::Context;

/// What a restarting CN resumes from.
#[derive(Debug)]
pub struct Recovered {
    pub tip: Tip,
    /// Blocks in the block log.
    pub blocks: u64,
    /// Blocks above the state's applied height, executed and written again.
    pub reexecuted: u64,
    pub wal: Vec<WalEntry>,
}

/// What replaying a block log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub tip: Tip,
    pub blocks: u64,
    pub reexecuted: u64,
}

/// Replays `log` into `app` on top of `genesis`, brings `state` up to the log's last block,
/// and reads `wal_log`.
pub fn replay(
    log: &BlockLog,
    state: &CommittedState,
    wal_log: &BlockLog,
    app: &mut CnApp,
    genesis: Tip,
) -> anyhow::Result<Recovered> {
    let replayed = replay_log(log, state, app, genesis, |_, _| {})?;
    let wal = wal_log
        .iter()
        .map(|record| {
            let (offset, bytes) = record?;
            wal::decode(&bytes).with_context(|| {
                format!(
                    "consensus WAL record at offset {} does not decode",
                    offset.0
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Recovered {
        tip: replayed.tip,
        blocks: replayed.blocks,
        reexecuted: replayed.reexecuted,
        wal,
    })
}

/// Replays every block of `log` into `app` (calling `on_block` after each) on top of
/// `genesis`; blocks above the state's applied height are re-executed and written to `state`.
pub fn replay_log(
    log: &BlockLog,
    state: &CommittedState,
    app: &mut CnApp,
    genesis: Tip,
    mut on_block: impl FnMut(&CnApp, &Block),
) -> anyhow::Result<Replayed> {
    let store = state.store();
    let applied = store
        .state_height()?
        .context("the state was never initialised (open it with its genesis first)")?;
    let mut tip = genesis;
    let (mut blocks, mut reexecuted) = (0u64, 0u64);
    let mut progress = Progress::new(applied);
    for record in log.iter() {
        let (offset, frame) = record?;
        let block: Block = decode_frame(&frame)
            .with_context(|| format!("block log record at offset {} does not decode", offset.0))?;
        let header = block.header();
        anyhow::ensure!(
            header.height == tip.height.next() && header.parent == tip.hash,
            "block log record at offset {} (height {}) does not extend height {}",
            offset.0,
            header.height,
            tip.height
        );
        if header.height.0 <= applied {
            app.replay_applied(&block)?;
        } else {
            app.commit(&block)
                .with_context(|| format!("re-executing block {}", header.height))?;
            persist(state, &block, offset.0)?;
            reexecuted += 1;
        }
        on_block(app, &block);
        tip = Tip::of(&block);
        blocks += 1;
        progress.replayed(tip.height.0, reexecuted);
    }
    anyhow::ensure!(
        applied <= tip.height.0,
        "the state is applied up to height {applied} but the block log ends at height {}: the log lost acknowledged blocks",
        tip.height
    );
    Ok(Replayed {
        tip,
        blocks,
        reexecuted,
    })
}

/// How often a long replay says where it is.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Logs a long replay's progress every [`PROGRESS_EVERY`], so an operator watching a node
/// start sees it working through its block log rather than hanging.
struct Progress {
    applied: u64,
    started: std::time::Instant,
    next: std::time::Instant,
}

impl Progress {
    fn new(applied: u64) -> Self {
        let started = std::time::Instant::now();
        Self {
            applied,
            started,
            next: started + PROGRESS_EVERY,
        }
    }

    fn replayed(&mut self, height: u64, reexecuted: u64) {
        let now = std::time::Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + PROGRESS_EVERY;
        tracing::info!(
            height,
            state_applied = self.applied,
            reexecuted,
            seconds = self.started.elapsed().as_secs(),
            "replaying the block log"
        );
    }
}

/// Writes a committed block, durable in the block log at `log_offset`, to RocksDB: indexes
/// (height → log offset, hash → height, tx hash → location), state, receipts, logs bloom and
/// the state's applied height, in one batch.
pub fn persist(state: &CommittedState, block: &Block, log_offset: u64) -> anyhow::Result<()> {
    state
        .persist(block, log_offset)
        .with_context(|| format!("persisting block {}", block.header().height))
}
