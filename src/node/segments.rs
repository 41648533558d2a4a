//! `C(h)` for share verification, read from this node's own block log: the canonical length
//! and mix of every committed block are kept in memory (40 bytes per block), and a segment
//! reads only the blocks it overlaps. Recent segments are cached, since every share of one
//! seed height needs the same one.

use super::pop::SegmentSource;
use crate::por::source::CanonicalLog;
use crate::por::PorError;
use crate::storage::blocklog::{BlockLogReader, RecordOffset};
use crate::storage::store::Store;
use crate::types::codec::FRAME_OVERHEAD;
use crate::types::{Block, Height};
use alloy_primitives::B256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Segments kept (one per seed height in the share-expiry window is plenty).
const CACHED_SEGMENTS: usize = 8;

/// Reads `C(h)` from a block log indexed by a [`Store`].
pub struct LogSegments {
    reader: BlockLogReader,
    store: Arc<Store>,
    segment_len: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    log: CanonicalLog,
    /// `mixes[i]`: the mix of height `i + 1`, the seed of shares for that height.
    mixes: Vec<B256>,
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
    pub fn new(reader: BlockLogReader, store: Arc<Store>, segment_len: usize) -> Self {
        Self {
            reader,
            store,
            segment_len,
            inner: Mutex::default(),
        }
    }

    /// Records a committed block (in height order, from height 1).
    pub fn record(&self, block: &Block) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if block.header().height.0 != inner.log.blocks() + 1 {
            return;
        }
        inner.log.push(alloy_rlp::Encodable::length(block) as u64);
        inner.mixes.push(block.header().mix);
    }

    /// The canonical encoding of block `height`, from the log.
    fn read_block(&self, height: u64) -> Result<Vec<u8>, String> {
        let offset = self
            .store
            .log_offset(height)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("block {height} is not indexed"))?;
        let frame = self
            .reader
            .read(RecordOffset(offset))
            .map_err(|e| e.to_string())?;
        // The frame is version | kind | RLP | crc32c: the RLP is the canonical encoding.
        frame
            .get(2..frame.len().saturating_sub(FRAME_OVERHEAD - 2))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("block {height}: truncated record"))
    }
}

impl SegmentSource for LogSegments {
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
        let segment = inner
            .log
            .segment(height.0, seed, self.segment_len, |h| {
                self.read_block(h).map_err(SegmentReadError::Read)
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
