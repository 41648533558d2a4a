//! The sync driver: fetches blocks from peers in height ranges and hands them to the auditor.
//!
//! Catching up, it asks for full ranges ([`SyncConfig::batch_blocks`]) without waiting,
//! spreading requests over its sources (CNs first, then RNs) and staying at most
//! [`SyncConfig::lookahead_batches`] ranges ahead of the audited head (the link to the auditor
//! is bounded too, so memory is). At the head it long-polls: the request for the next height
//! waits on the server until that block is committed, so a new block arrives one round trip
//! after its commit without any per-follower state on the server. A failed request or a
//! rejected block moves it to the next source and back to the audited head.

use super::auditor::Fetched;
use super::status::{RnStatus, SyncPhase};
use crate::net::rn::{RnNetwork, Source};
use crate::pipeline::LinkSender;
use crate::types::sync::{BlockRangeRequest, BlockRangeResponse, MAX_RANGE_BYTES};
use crate::types::Height;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How an RN fetches blocks.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Blocks asked for per request while catching up (the server caps it at 256).
    pub batch_blocks: u32,
    /// Bytes of blocks asked for per request (the server caps it at 16 MiB).
    pub batch_bytes: u32,
    /// How long a request at the head may wait on the server for the next block.
    pub follow_wait_ms: u32,
    /// Ranges fetched ahead of the audited head.
    pub lookahead_batches: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            batch_blocks: 128,
            batch_bytes: MAX_RANGE_BYTES,
            follow_wait_ms: 2_000,
            lookahead_batches: 2,
        }
    }
}

/// Pause after a failed request or an empty answer while catching up.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause while waiting for the auditor or for a first peer.
const IDLE_PAUSE: Duration = Duration::from_millis(20);

/// The sync driver's thread state.
pub struct SyncDriver {
    pub net: Arc<RnNetwork>,
    pub rt: tokio::runtime::Handle,
    pub status: Arc<RnStatus>,
    pub out: LinkSender<Fetched>,
    pub stop: watch::Receiver<bool>,
    pub config: SyncConfig,
}

impl SyncDriver {
    /// Runs until `stop` is set.
    pub fn run(mut self) -> anyhow::Result<()> {
        let span = tracing::info_span!("stage", name = "rn_sync");
        let _entered = span.enter();
        let mut cursor = self.head() + 1;
        let mut epoch = self.status.rejection_epoch.load(Ordering::Acquire);
        let mut turn = 0usize;
        let lookahead = self.config.lookahead_batches * u64::from(self.config.batch_blocks);
        while !*self.stop.borrow() {
            let head = self.head();
            let rejections = self.status.rejection_epoch.load(Ordering::Acquire);
            if rejections != epoch {
                // A fetched block was refused: try another source, from the audited head.
                epoch = rejections;
                turn += 1;
                cursor = head + 1;
            }
            cursor = cursor.max(head + 1);
            if cursor > head + 1 + lookahead {
                self.pause(IDLE_PAUSE);
                continue;
            }
            let sources = self.net.sources();
            let Some(source) = sources.get(turn % sources.len().max(1)).copied() else {
                self.pause(IDLE_PAUSE);
                continue;
            };
            let at_head = cursor == head + 1 && self.status.phase() == SyncPhase::Following;
            let request = BlockRangeRequest {
                from: Height(cursor),
                max_blocks: self.config.batch_blocks,
                max_bytes: self.config.batch_bytes,
                wait_ms: if at_head {
                    self.config.follow_wait_ms
                } else {
                    0
                },
            };
            let response = match self.fetch(source, &request) {
                None => break,
                Some(Ok(response)) => response,
                Some(Err(e)) => {
                    tracing::debug!(peer = %source.peer, error = %e, "block request failed");
                    turn += 1;
                    self.pause(RETRY_PAUSE);
                    continue;
                }
            };
            self.status
                .highest_known
                .fetch_max(response.head.0, Ordering::Relaxed);
            if response.blocks.is_empty() {
                // This source has nothing from `cursor` yet: ask another next time.
                turn += 1;
                if !at_head {
                    self.pause(RETRY_PAUSE);
                }
                continue;
            }
            cursor += response.blocks.len() as u64;
            self.record(&response);
            if self
                .out
                .send(Fetched {
                    source: source.id,
                    blocks: response.blocks,
                })
                .is_err()
            {
                break;
            }
            if !at_head {
                turn += 1;
            }
        }
        Ok(())
    }

    fn head(&self) -> u64 {
        self.status.head.load(Ordering::Acquire)
    }

    fn record(&self, response: &BlockRangeResponse) {
        if let Some(first) = response.blocks.first() {
            self.status
                .first_fetched
                .fetch_min(first.header().height.0, Ordering::Relaxed);
        }
        self.status
            .blocks_fetched
            .fetch_add(response.blocks.len() as u64, Ordering::Relaxed);
    }

    /// One request, abandoned if the node stops meanwhile (`None`).
    fn fetch(
        &mut self,
        source: Source,
        request: &BlockRangeRequest,
    ) -> Option<anyhow::Result<BlockRangeResponse>> {
        let mut stop = self.stop.clone();
        let net = Arc::clone(&self.net);
        self.rt.block_on(async move {
            tokio::select! {
                response = net.request_blocks(source.id, request) => Some(response),
                _ = stop.wait_for(|stopped| *stopped) => None,
            }
        })
    }

    /// Sleeps `duration` or until the node stops.
    fn pause(&mut self, duration: Duration) {
        let mut stop = self.stop.clone();
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(duration, stop.wait_for(|stopped| *stopped)).await;
        });
    }
}
