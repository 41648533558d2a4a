//! An RN's chain on disk: audited blocks appended to the block log (one group commit per
//! batch) and indexed in RocksDB (height → offset, hash → height, tx hash → location) — the
//! same layout as a CN's, so the same [`ChainReader`] and [`BlockServer`] read and serve it.
//! On restart the log is replayed (each block re-applied, the index repaired where it lags)
//! and the node continues from its last block.
//!
//! [`BlockServer`]: crate::net::sync::BlockServer

use crate::chain::app::CnApp;
use crate::chain::recovery::{persist, replay_log};
use crate::config::StorageConfig;
use crate::consensus::machine::Tip;
use crate::consensus::selection::CnSet;
use crate::net::sync::ChainReader;
use crate::storage::blocklog::BlockLog;
use crate::storage::history::HistoryRetention;
use crate::storage::state::CommittedState;
use crate::storage::store::{Store, StoreOptions};
use crate::types::codec::encode_frame;
use crate::types::{Block, ChainId, Height};
use alloy_primitives::{Address, U256};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;

/// The CN set in force from each height on (genesis, then every announced change).
#[derive(Debug, Clone)]
pub struct SetHistory(Vec<(Height, Arc<CnSet>)>);

impl SetHistory {
    /// History starting with the genesis set at height 1.
    pub fn new(genesis: Arc<CnSet>) -> Self {
        Self(vec![(Height(1), genesis)])
    }

    /// The set in force at `height`.
    pub fn at(&self, height: Height) -> &Arc<CnSet> {
        let i = self.0.partition_point(|(from, _)| *from <= height);
        // Invariant: the genesis entry covers every height from 1, and height 0 has no set of
        // its own (its callers ask about blocks, which start at 1).
        &self.0[i.saturating_sub(1)].1
    }

    /// Records that `set` is in force from `from` on.
    pub fn switch(&mut self, from: Height, set: Arc<CnSet>) {
        self.0.retain(|(h, _)| *h < from);
        self.0.push((from, set));
    }
}

/// The block log (single writer) and the index of an RN.
pub struct Ledger {
    log: BlockLog,
    chain: ChainReader,
    state: Arc<CommittedState>,
}

impl Ledger {
    /// Opens (creating if needed) `datadir/blocks.log` and `datadir/db`, the latter with
    /// `allocations` as servicechain genesis state when new.
    pub fn open(
        datadir: &Path,
        storage: &StorageConfig,
        allocations: &[(ChainId, Address, U256)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(datadir)
            .with_context(|| format!("creating {}", datadir.display()))?;
        let options = crate::pipeline::topology::log_options(storage);
        let (log, report) = BlockLog::open(datadir.join("blocks.log"), options)?;
        if let Some(torn) = report.truncated {
            tracing::warn!(
                at = torn.at,
                reason = torn.reason,
                "block log: cut a torn tail"
            );
        }
        let store = Store::open_with(
            datadir.join("db"),
            StoreOptions {
                block_cache_bytes: storage.rocksdb_cache_mib << 20,
                ..Default::default()
            },
        )?;
        let store = Arc::new(store);
        let retention = storage.history(HistoryRetention::All);
        let state = Arc::new(CommittedState::open_with(
            Arc::clone(&store),
            allocations,
            retention,
        )?);
        let chain = ChainReader::new(log.reader(), store);
        Ok(Self { log, chain, state })
    }

    pub fn chain(&self) -> &ChainReader {
        &self.chain
    }

    /// Servicechain state, receipts and logs (re-executed blocks are held here until
    /// [`Self::append`] writes them).
    pub fn state(&self) -> &Arc<CommittedState> {
        &self.state
    }

    /// Replays the log into `app` on top of `genesis`, calling `on_block` after each block;
    /// blocks above the state's applied height (a crash between append and write) are
    /// re-executed and written. Returns the tip.
    pub fn replay(
        &self,
        genesis: Tip,
        app: &mut CnApp,
        on_block: impl FnMut(&CnApp, &Block),
    ) -> anyhow::Result<Tip> {
        let replayed = replay_log(&self.log, &self.state, app, genesis, on_block)?;
        if let Some(head) = self.chain.store().head()? {
            anyhow::ensure!(
                head.height <= replayed.tip.height.0,
                "the index's head is height {} but the block log ends at height {}",
                head.height,
                replayed.tip.height
            );
        }
        Ok(replayed.tip)
    }

    /// Makes `blocks` durable (one group commit), then writes each with its execution (index,
    /// state, receipts) to RocksDB.
    pub fn append(&mut self, blocks: &[Block]) -> anyhow::Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let frames: Vec<Vec<u8>> = blocks.iter().map(encode_frame).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let offsets = self.log.append_batch(&refs)?;
        for (block, offset) in blocks.iter().zip(offsets) {
            persist(&self.state, block, offset.0)?;
        }
        Ok(())
    }
}
