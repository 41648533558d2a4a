//! Restart: rebuilds a CN's state from what it persisted. Committed blocks are replayed from
//! the block log (re-executed into state, re-indexed where the index lags the log after a
//! crash), the tip is the last block, and the consensus WAL tells the state machine what this
//! node already voted so it never contradicts itself.

use super::app::CnApp;
use crate::consensus::machine::{Tip, WalEntry};
use crate::consensus::wal;
use crate::storage::blocklog::BlockLog;
use crate::storage::store::{BlockIndex, Store};
use crate::types::codec::decode_frame;
use crate::types::Block;
use anyhow::Context;

/// What a restarting CN resumes from.
#[derive(Debug)]
pub struct Recovered {
    pub tip: Tip,
    pub blocks: u64,
    pub reindexed: u64,
    pub wal: Vec<WalEntry>,
}

/// Replays `log` into `app` on top of `genesis`, repairs `store`'s index, and reads `wal_log`.
pub fn replay(
    log: &BlockLog,
    store: &Store,
    wal_log: &BlockLog,
    app: &mut CnApp,
    genesis: Tip,
) -> anyhow::Result<Recovered> {
    let mut tip = genesis;
    let (mut blocks, mut reindexed) = (0u64, 0u64);
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
        app.commit(&block);
        if store.log_offset(header.height.0)? != Some(offset.0) {
            index(store, &block, offset.0)?;
            reindexed += 1;
        }
        tip = Tip::of(&block);
        blocks += 1;
    }
    if let Some(head) = store.head()? {
        anyhow::ensure!(
            head.height <= tip.height.0,
            "the index's head is height {} but the block log ends at height {}: the log lost acknowledged blocks",
            head.height,
            tip.height
        );
    }
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
        tip,
        blocks,
        reindexed,
        wal,
    })
}

/// Indexes one block (height → log offset, hash → height, tx hash → location).
pub fn index(store: &Store, block: &Block, log_offset: u64) -> anyhow::Result<()> {
    let txs: Vec<([u8; 32], u32, u32)> = block
        .segments
        .iter()
        .enumerate()
        .flat_map(|(seg, s)| {
            s.txs
                .iter()
                .enumerate()
                .map(move |(i, raw)| (crate::crypto::hash::keccak256(raw).0, seg as u32, i as u32))
        })
        .collect();
    store.index_block(&BlockIndex {
        height: block.header().height.0,
        hash: block.hash().0 .0,
        log_offset,
        txs: &txs,
    })?;
    Ok(())
}
