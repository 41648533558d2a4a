//! Block sync over QUIC: committed containers served by height range from the block log and
//! its RocksDB index, on bidirectional streams — one stream per request, one response each.
//!
//! ```text
//!  asker (RN)                               server (CN or RN)
//!  open_bi ── len | BlockRangeRequest ──►  read (limit, deadline) ─► wait for `from` (≤ 5 s)
//!          ◄── len | BlockRangeResponse ──  read log by height (≤ 256 blocks, ≤ 16 MiB, ≤ 2 s)
//! ```
//!
//! Every bound is the server's: the request's numbers are clamped, the disk work for one
//! response stops at a deadline, a connection's requests are served one at a time, and a
//! malformed or stalled request is a strike against the peer (eight and the connection is
//! closed). The asker bounds the response size and the whole exchange with a deadline, and
//! checks that the blocks are the consecutive heights it asked for; what they contain is the
//! auditor's business.

use super::{read_frame_within, write_frame, NetStats, PeerScore};
use crate::storage::blocklog::{BlockLogReader, RecordOffset};
use crate::storage::store::Store;
use crate::types::codec::{decode_frame, encode_frame, FRAME_OVERHEAD};
use crate::types::sync::{
    BlockRangeRequest, BlockRangeResponse, MAX_RANGE_BLOCKS, MAX_RANGE_BYTES, MAX_WAIT_MS,
};
use crate::types::{Block, BlockHash, Height, WireMessage};
use anyhow::Context;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Disk work allowed for one response; what was read by then is sent.
const SERVE_DEADLINE: Duration = Duration::from_secs(2);
/// Longest a response may take to leave (a peer that stops reading loses the stream).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request frame.
const MAX_REQUEST_FRAME: usize = BlockRangeRequest::MAX_PAYLOAD + FRAME_OVERHEAD;
/// Largest response frame.
const MAX_RESPONSE_FRAME: usize = BlockRangeResponse::MAX_PAYLOAD + FRAME_OVERHEAD;

/// Read access to a node's committed chain: the block log by height or hash through the
/// RocksDB index. Cheap to clone; safe on any thread while the node appends.
#[derive(Clone, Debug)]
pub struct ChainReader {
    log: BlockLogReader,
    index: Arc<Store>,
}

impl ChainReader {
    pub fn new(log: BlockLogReader, index: Arc<Store>) -> Self {
        Self { log, index }
    }

    /// The RocksDB store (indexes and everything else kept there).
    pub fn store(&self) -> &Arc<Store> {
        &self.index
    }

    /// Height and hash of the last indexed block; `None` before block 1.
    pub fn head(&self) -> anyhow::Result<Option<(Height, BlockHash)>> {
        Ok(self
            .index
            .head()?
            .map(|h| (Height(h.height), BlockHash(h.hash.into()))))
    }

    /// The framed block at `height` as stored in the log.
    pub fn frame_at(&self, height: Height) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(offset) = self.index.log_offset(height.0)? else {
            return Ok(None);
        };
        let frame = self
            .log
            .read(RecordOffset(offset))
            .with_context(|| format!("block {height} in the log"))?;
        Ok(Some(frame))
    }

    /// The block at `height`.
    pub fn block_at(&self, height: Height) -> anyhow::Result<Option<Block>> {
        self.frame_at(height)?
            .map(|frame| {
                decode_frame::<Block>(&frame)
                    .with_context(|| format!("block {height} in the log does not decode"))
            })
            .transpose()
    }

    /// The block with header hash `hash`.
    pub fn block_by_hash(&self, hash: &BlockHash) -> anyhow::Result<Option<Block>> {
        match self.index.height_of(&hash.0 .0)? {
            Some(height) => self.block_at(Height(height)),
            None => Ok(None),
        }
    }
}

/// Counters of a block server.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub requests: std::sync::atomic::AtomicU64,
    pub blocks: std::sync::atomic::AtomicU64,
}

/// Answers [`BlockRangeRequest`]s from a [`ChainReader`].
#[derive(Debug)]
pub struct BlockServer {
    chain: ChainReader,
    /// Highest indexed height; long polls wait on it.
    head: watch::Sender<u64>,
    pub stats: ServeStats,
}

impl BlockServer {
    pub fn new(chain: ChainReader) -> anyhow::Result<Arc<Self>> {
        let head = chain.head()?.map_or(0, |(h, _)| h.0);
        Ok(Arc::new(Self {
            chain,
            head: watch::Sender::new(head),
            stats: ServeStats::default(),
        }))
    }

    /// Tells waiting requests that `height` is now indexed.
    pub fn committed(&self, height: Height) {
        self.head.send_if_modified(|h| {
            let moved = height.0 > *h;
            *h = (*h).max(height.0);
            moved
        });
    }

    /// The response to `request`, after waiting (bounded) for its first height if needed.
    pub async fn answer(
        self: &Arc<Self>,
        request: BlockRangeRequest,
    ) -> anyhow::Result<BlockRangeResponse> {
        let wait = Duration::from_millis(u64::from(request.wait_ms.min(MAX_WAIT_MS)));
        let mut head = self.head.subscribe();
        if !wait.is_zero() {
            // Timing out is a normal answer: an empty range.
            let _ = tokio::time::timeout(wait, head.wait_for(|h| *h >= request.from.0)).await;
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.read_range(&request)).await?
    }

    /// Reads consecutive blocks from `request.from` within every bound.
    pub fn read_range(&self, request: &BlockRangeRequest) -> anyhow::Result<BlockRangeResponse> {
        let head = self.chain.head()?.map_or(Height(0), |(h, _)| h);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if request.from.0 == 0 {
            // Height 0 is genesis, which no log holds.
            return Ok(BlockRangeResponse {
                head,
                blocks: Vec::new(),
            });
        }
        let max_blocks = request.max_blocks.clamp(1, MAX_RANGE_BLOCKS) as usize;
        let max_bytes = request.max_bytes.min(MAX_RANGE_BYTES) as usize;
        let deadline = Instant::now() + SERVE_DEADLINE;
        let (mut blocks, mut bytes) = (Vec::new(), 0usize);
        let mut height = request.from;
        while height <= head && blocks.len() < max_blocks && Instant::now() < deadline {
            let Some(frame) = self.chain.frame_at(height)? else {
                break;
            };
            // The first block always goes, so that a block larger than the byte budget can
            // still be fetched (alone).
            if !blocks.is_empty() && bytes + frame.len() > max_bytes {
                break;
            }
            bytes += frame.len();
            blocks.push(
                decode_frame::<Block>(&frame)
                    .with_context(|| format!("block {height} in the log does not decode"))?,
            );
            height = height.next();
        }
        self.stats
            .blocks
            .fetch_add(blocks.len() as u64, Ordering::Relaxed);
        Ok(BlockRangeResponse { head, blocks })
    }
}

/// Where a connection's block requests are answered from; set once the node's storage is
/// open (requests that arrive before are refused).
pub type ServerSlot = Arc<OnceLock<Arc<BlockServer>>>;

/// Serves `conn`'s block requests one at a time until the connection ends.
pub(crate) async fn serve_requests(
    conn: quinn::Connection,
    server: ServerSlot,
    frame_timeout: Duration,
    score: Arc<PeerScore>,
    stats: Arc<NetStats>,
) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        score.touch();
        let request = match read_request(&mut recv, frame_timeout, &stats).await {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!(peer = %score.peer, error = %e, "bad block request");
                if score.strike(&stats) {
                    return;
                }
                let _ = send.reset(1u32.into());
                continue;
            }
        };
        let Some(server) = server.get() else {
            let _ = send.reset(2u32.into());
            continue;
        };
        let response = match server.answer(request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read blocks to serve");
                let _ = send.reset(3u32.into());
                continue;
            }
        };
        let frame = encode_frame(&response);
        let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
            write_frame(&mut send, &frame).await?;
            send.finish()?;
            anyhow::Ok(())
        })
        .await;
        if matches!(sent, Ok(Ok(()))) {
            stats.requests_served.fetch_add(1, Ordering::Relaxed);
        }
        // A long poll ends here: the peer was busy with this connection the whole time.
        score.touch();
    }
}

async fn read_request(
    recv: &mut quinn::RecvStream,
    frame_timeout: Duration,
    stats: &NetStats,
) -> anyhow::Result<BlockRangeRequest> {
    let frame = read_frame_within(recv, MAX_REQUEST_FRAME, frame_timeout, stats).await?;
    Ok(decode_frame::<BlockRangeRequest>(&frame)?)
}

/// Asks `conn`'s node for `request`; the whole exchange ends within `timeout` plus the
/// request's wait. The answer is checked to be the consecutive heights asked for.
pub async fn request_blocks(
    conn: &quinn::Connection,
    request: &BlockRangeRequest,
    timeout: Duration,
    stats: &NetStats,
) -> anyhow::Result<BlockRangeResponse> {
    let wait = Duration::from_millis(u64::from(request.wait_ms.min(MAX_WAIT_MS)));
    stats.requests_sent.fetch_add(1, Ordering::Relaxed);
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, &encode_frame(request)).await?;
        send.finish()?;
        let frame = read_frame_within(&mut recv, MAX_RESPONSE_FRAME, timeout + wait, stats).await?;
        let response = decode_frame::<BlockRangeResponse>(&frame)?;
        anyhow::ensure!(
            response.fits(request),
            "the response is not the consecutive heights from {} asked for",
            request.from
        );
        Ok(response)
    };
    let result = match tokio::time::timeout(timeout + wait, exchange).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("block request timed out")),
    };
    if result.is_err() {
        stats.request_failures.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Wraps an observer of durable blocks so that `server`'s waiting requests hear of each one
/// right after `observer` does.
pub fn notify_after(
    server: Arc<BlockServer>,
    mut observer: impl FnMut(&Block) + Send + 'static,
) -> Box<dyn FnMut(&Block) + Send> {
    Box::new(move |block| {
        observer(block);
        server.committed(block.header().height);
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::bls::SignatureBytes;
    use crate::storage::blocklog::{BlockLog, BlockLogOptions};
    use crate::storage::store::BlockIndex;
    use crate::types::{
        ChainId, CnIndex, CommitCertificate, Header, Round, SealedHeader, Segment, SignerBitmap,
    };
    use alloy_primitives::{Bytes, B256};

    /// An unsealed block at `height` on `parent`, with `pad` bytes of transaction data in one
    /// segment (none when 0): for code that checks neither seal nor contents.
    pub(crate) fn block(height: u64, parent: BlockHash, pad: usize) -> Block {
        let header = Header {
            version: crate::types::block::HEADER_VERSION,
            region: ChainId(1000),
            height: Height(height),
            round: Round(0),
            parent,
            timestamp_ms: height,
            proposer: CnIndex(0),
            random_reveal: SignatureBytes::default(),
            mix: B256::ZERO,
            cn_set_root: B256::ZERO,
            next_cn_set: Vec::new(),
            segments: Vec::new(),
        };
        let seal = CommitCertificate {
            round: Round(0),
            signers: SignerBitmap::default(),
            aggregate: SignatureBytes::default(),
        };
        let segments = (pad > 0)
            .then(|| Segment {
                chain_id: ChainId(1000),
                txs: vec![Bytes::from(vec![0xab; pad])],
            })
            .into_iter()
            .collect();
        Block {
            sealed: SealedHeader { header, seal },
            segments,
        }
    }

    /// Blocks `1..=n` of `pad` bytes each, appended to a log and indexed in `dir`; the log
    /// writer is returned to keep it open.
    fn served(
        dir: &std::path::Path,
        n: u64,
        pad: usize,
    ) -> (Arc<BlockServer>, Vec<Block>, BlockLog) {
        let options = BlockLogOptions {
            preallocate_bytes: 0,
            ..Default::default()
        };
        let (mut log, _) = BlockLog::open(dir.join("blocks.log"), options).unwrap();
        let store = Arc::new(Store::open(dir.join("db")).unwrap());
        let mut blocks: Vec<Block> = Vec::new();
        for h in 1..=n {
            let parent = blocks.last().map_or(BlockHash(B256::ZERO), Block::hash);
            blocks.push(block(h, parent, pad));
        }
        let frames: Vec<Vec<u8>> = blocks.iter().map(encode_frame).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let offsets = log.append_batch(&refs).unwrap();
        let mut batch = store.batch();
        for (b, offset) in blocks.iter().zip(offsets) {
            batch.index_block(&BlockIndex {
                height: b.header().height.0,
                hash: b.hash().0 .0,
                log_offset: offset.0,
                txs: &[],
            });
        }
        batch.commit().unwrap();
        let server = BlockServer::new(ChainReader::new(log.reader(), store)).unwrap();
        (server, blocks, log)
    }

    fn request(from: u64, max_blocks: u32, max_bytes: u32) -> BlockRangeRequest {
        BlockRangeRequest {
            from: Height(from),
            max_blocks,
            max_bytes,
            wait_ms: 0,
        }
    }

    fn heights(response: &BlockRangeResponse) -> Vec<u64> {
        response
            .blocks
            .iter()
            .map(|b| b.header().height.0)
            .collect()
    }

    #[test]
    fn a_range_is_the_consecutive_stored_blocks_and_stops_at_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let (server, blocks, _log) = served(dir.path(), 5, 10);
        let asked = request(3, 100, MAX_RANGE_BYTES);
        let response = server.read_range(&asked).unwrap();
        assert_eq!(response.head, Height(5));
        assert_eq!(response.blocks, blocks[2..].to_vec());
        assert!(response.fits(&asked));
        assert_eq!(server.stats.requests.load(Ordering::Relaxed), 1);
        assert_eq!(server.stats.blocks.load(Ordering::Relaxed), 3);
        // Through the reader too: by height and by hash, nothing past the head.
        assert_eq!(
            server.chain.block_at(Height(4)).unwrap().as_ref(),
            Some(&blocks[3])
        );
        assert_eq!(
            server
                .chain
                .block_by_hash(&blocks[0].hash())
                .unwrap()
                .as_ref(),
            Some(&blocks[0])
        );
        assert_eq!(server.chain.block_at(Height(6)).unwrap(), None);
        assert_eq!(
            server.chain.block_by_hash(&BlockHash(B256::ZERO)).unwrap(),
            None
        );
    }

    #[test]
    fn hostile_heights_get_an_empty_answer_naming_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let (server, _, _log) = served(dir.path(), 3, 10);
        for from in [0, 4, 1 << 40, u64::MAX - 1, u64::MAX] {
            let response = server
                .read_range(&request(from, u32::MAX, u32::MAX))
                .unwrap();
            assert_eq!(response.head, Height(3), "from {from}");
            assert!(
                response.blocks.is_empty(),
                "from {from}: {:?}",
                heights(&response)
            );
        }
        assert_eq!(server.stats.blocks.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_block_count_is_clamped_to_between_one_and_the_server_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let total = u64::from(MAX_RANGE_BLOCKS) + 10;
        let (server, _, _log) = served(dir.path(), total, 0);
        let none = server.read_range(&request(1, 0, MAX_RANGE_BYTES)).unwrap();
        assert_eq!(heights(&none), vec![1], "zero blocks asked: one sent");
        let greedy = server.read_range(&request(2, u32::MAX, u32::MAX)).unwrap();
        assert_eq!(
            heights(&greedy),
            (2..2 + u64::from(MAX_RANGE_BLOCKS)).collect::<Vec<_>>()
        );
        assert_eq!(greedy.head, Height(total));
    }

    #[test]
    fn the_byte_budget_is_exact_but_never_withholds_the_first_block() {
        let dir = tempfile::tempdir().unwrap();
        let (server, blocks, _log) = served(dir.path(), 4, 1_000);
        let size = |i: usize| encode_frame(&blocks[i]).len() as u32;
        let three = size(0) + size(1) + size(2);
        assert_eq!(
            heights(&server.read_range(&request(1, 10, three)).unwrap()),
            vec![1, 2, 3]
        );
        assert_eq!(
            heights(&server.read_range(&request(1, 10, three - 1)).unwrap()),
            vec![1, 2]
        );
        // A budget smaller than any block still gets the first one, alone.
        for budget in [0, 1, size(0) - 1] {
            let response = server.read_range(&request(1, 10, budget)).unwrap();
            assert_eq!(heights(&response), vec![1], "budget {budget}");
        }
    }

    #[test]
    fn a_byte_budget_above_the_server_maximum_is_clamped_to_it() {
        let dir = tempfile::tempdir().unwrap();
        // Three blocks of 6 MiB: two fit in the server's 16 MiB, three do not.
        let (server, _, _log) = served(dir.path(), 3, 6 << 20);
        let response = server.read_range(&request(1, 10, u32::MAX)).unwrap();
        assert_eq!(heights(&response), vec![1, 2]);
        let bytes: usize = response.blocks.iter().map(|b| encode_frame(b).len()).sum();
        assert!(bytes <= MAX_RANGE_BYTES as usize, "{bytes} bytes sent");
    }

    #[test]
    fn committed_only_moves_the_head_forward_and_wakes_waiters_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let (server, _, _log) = served(dir.path(), 3, 0);
        let mut head = server.head.subscribe();
        assert_eq!(*head.borrow_and_update(), 3, "starts at the indexed head");
        server.committed(Height(2));
        server.committed(Height(3));
        assert!(!head.has_changed().unwrap(), "an old height woke waiters");
        assert_eq!(*head.borrow(), 3);
        server.committed(Height(7));
        assert!(head.has_changed().unwrap());
        assert_eq!(*head.borrow_and_update(), 7);
        server.committed(Height(5));
        assert_eq!(*head.borrow(), 7, "the head went back");
    }

    #[test]
    fn notify_after_runs_the_observer_before_telling_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let (server, blocks, _log) = served(dir.path(), 3, 0);
        let watcher = server.head.subscribe();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let mut observe = notify_after(Arc::clone(&server), move |b: &Block| {
            // Waiters have not been told yet when the observer runs.
            log.lock()
                .unwrap()
                .push((b.header().height.0, *watcher.borrow()));
        });
        let next = block(4, blocks[2].hash(), 0);
        observe(&next);
        assert_eq!(*seen.lock().unwrap(), vec![(4, 3)]);
        assert_eq!(*server.head.borrow(), 4);
    }
}
