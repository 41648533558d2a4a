//! `C(h)` for share verification, read from this node's own chain. The canonical log is the
//! concatenation of every block's [`Block::agreed_bytes`] (header and segments, not the seal,
//! which differs between nodes). Its length and the mix of every committed block are kept in
//! memory (40 bytes per block), and a segment reads
//! only the blocks it overlaps. Recent blocks are kept whole, because a block is committed (and
//! the next container executed) before the persist stage has written it: shares are verified
//! against exactly the same bytes on every node, whatever its persist lag. Recent segments are
//! cached, since every share of one seed height needs the same one.

use super::pop::{SegmentSource, SHARE_EXPIRY};
use crate::net::sync::ChainReader;
use crate::por::source::CanonicalLog;
use crate::por::PorError;
use crate::types::{Block, Height};
use alloy_primitives::B256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Segments kept (one per seed height in use is plenty).
const CACHED_SEGMENTS: usize = 8;
/// Whole blocks kept in memory: the share-expiry window plus a margin for the persist lag.
const RECENT_BLOCKS: usize = SHARE_EXPIRY as usize + 8;

/// Reads `C(h)` from a node's chain.
pub struct LogSegments {
    chain: ChainReader,
    segment_len: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    log: CanonicalLog,
    /// `mixes[i]`: the mix of height `i + 1`, the seed of shares for that height.
    mixes: Vec<B256>,
    /// Canonical bytes of the most recent blocks, oldest first: (height, bytes).
    recent: VecDeque<(u64, Arc<Vec<u8>>)>,
    cache: VecDeque<(Height, Arc<Vec<u8>>)>,
}

impl std::fmt::Debug for LogSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSegments")
            .field("segment_len", &self.segment_len)
            .finish_non_exhaustive()
    }
}

impl LogSegments {
    pub fn new(chain: ChainReader, segment_len: usize) -> Self {
        Self {
            chain,
            segment_len,
            inner: Mutex::default(),
        }
    }

    /// The canonical encoding of block `height`: from memory if recent, else from the log.
    fn read_block(
        &self,
        recent: &VecDeque<(u64, Arc<Vec<u8>>)>,
        height: u64,
    ) -> Result<Vec<u8>, String> {
        if let Some((_, bytes)) = recent.iter().find(|(h, _)| *h == height) {
            return Ok(bytes.to_vec());
        }
        let block = self
            .chain
            .block_at(Height(height))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("block {height} is not stored"))?;
        Ok(block.agreed_bytes())
    }
}

impl SegmentSource for LogSegments {
    fn record(&self, block: &Block) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let height = block.header().height.0;
        if height != inner.log.blocks() + 1 {
            return;
        }
        let bytes = block.agreed_bytes();
        inner.log.push(bytes.len() as u64);
        inner.mixes.push(block.header().mix);
        inner.recent.push_back((height, Arc::new(bytes)));
        if inner.recent.len() > RECENT_BLOCKS {
            inner.recent.pop_front();
        }
    }

    fn segment(&self, height: Height) -> Result<Arc<Vec<u8>>, String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, hit)) = inner.cache.iter().find(|(h, _)| *h == height) {
            return Ok(hit.clone());
        }
        let seed = *height
            .0
            .checked_sub(1)
            .and_then(|i| inner.mixes.get(i as usize))
            .ok_or_else(|| PorError::UnknownHeight(height.0).to_string())?;
        let recent = &inner.recent;
        let segment = inner
            .log
            .segment(height.0, seed, self.segment_len, |h| {
                self.read_block(recent, h).map_err(SegmentReadError::Read)
            })
            .map_err(|e| e.to_string())?;
        let segment = Arc::new(segment);
        inner.cache.push_back((height, segment.clone()));
        if inner.cache.len() > CACHED_SEGMENTS {
            inner.cache.pop_front();
        }
        Ok(segment)
    }
}

/// A segment read that failed in the rule or in the storage below it.
#[derive(Debug, thiserror::Error)]
enum SegmentReadError {
    #[error(transparent)]
    Rule(#[from] PorError),
    #[error("{0}")]
    Read(String),
}
