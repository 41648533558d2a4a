//! The sync driver: fetches blocks from peers in height ranges and hands them to the auditor.
//!
//! Catching up, it asks for full ranges ([`SyncConfig::batch_blocks`]) without waiting,
//! spreading requests over its sources (CNs first, then RNs) and staying at most
//! [`SyncConfig::lookahead_batches`] ranges ahead of the audited head (the link to the auditor
//! is bounded too, so memory is). At the head it long-polls: the request for the next height
//! waits on the server until that block is committed, so a new block arrives one round trip
//! after its commit without any per-follower state on the server. A failed request or a
//! rejected block moves it to the next source and back to the audited head.
//!
//! A source's answer names its head, but a bare number proves nothing: a claim above what the
//! node already knows is checked by fetching the claimed block and its parent and verifying the
//! block's commit certificate ([`verify_head`]); only then does the node believe the chain goes
//! that far (and report itself catching up). A claim the source cannot back is a strike. Each
//! source's claim is checked at most every [`CLAIM_CHECK_EVERY`].

use super::auditor::Fetched;
use super::status::{RnStatus, SyncPhase, FOLLOWING_SLACK};
use crate::consensus::audit::{verify_head, HeadClaimError};
use crate::consensus::machine::Params;
use crate::link::LinkSender;
use crate::net::rn::{PeerId, RnNetwork, Source};
use crate::types::sync::{BlockRangeRequest, BlockRangeResponse, MAX_RANGE_BYTES};
use crate::types::{Block, Height};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
/// Shortest interval between two checks of one source's claimed head (each costs two
/// single-block requests).
pub const CLAIM_CHECK_EVERY: Duration = Duration::from_secs(1);

/// When each source's claimed head was last checked; sources that left are forgotten, so the
/// map never holds more than the connected sources.
#[derive(Debug, Default)]
pub struct ClaimChecks(HashMap<PeerId, Instant>);

impl ClaimChecks {
    /// Whether `id`'s claim may be checked now (and if so, records the check).
    fn due(&mut self, id: PeerId, live: &[Source]) -> bool {
        self.0.retain(|peer, _| live.iter().any(|s| s.id == *peer));
        match self.0.get(&id) {
            Some(at) if at.elapsed() < CLAIM_CHECK_EVERY => false,
            _ => {
                self.0.insert(id, Instant::now());
                true
            }
        }
    }
}

/// The sync driver's thread state.
pub struct SyncDriver {
    pub net: Arc<RnNetwork>,
    pub rt: tokio::runtime::Handle,
    pub status: Arc<RnStatus>,
    pub out: LinkSender<Fetched>,
    pub stop: watch::Receiver<bool>,
    pub config: SyncConfig,
    /// The chain's parameters (committee size, region) for checking claimed heads.
    pub params: Params,
    pub claims: ClaimChecks,
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
            if self.check_claim(source, response.head, &sources).is_none() {
                break;
            }
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

    /// Believes `claimed` (the head `source` named) only if the source backs it with the
    /// certified block; `None` if the node stopped meanwhile.
    fn check_claim(&mut self, source: Source, claimed: Height, live: &[Source]) -> Option<()> {
        let known = self.status.highest_known.load(Ordering::Relaxed);
        if claimed.0 <= known.saturating_add(FOLLOWING_SLACK) || !self.claims.due(source.id, live) {
            return Some(());
        }
        // Invariant: claimed > known + FOLLOWING_SLACK >= 2, so the parent height is >= 1.
        let parent = self.fetch_one(source, Height(claimed.0 - 1))?;
        let block = self.fetch_one(source, claimed)?;
        let verdict = match (parent, block) {
            (Some(parent), Some(block)) => {
                verify_head(&self.params, &self.status.cn_set(), &parent, &block)
            }
            _ => Err(HeadClaimError::Missing),
        };
        match verdict {
            Ok(()) => self.status.certified(claimed),
            Err(e) => {
                tracing::debug!(peer = %source.peer, %claimed, error = %e, "claimed head not trusted");
                if e.blames_peer() {
                    self.net.penalize(source.id);
                }
            }
        }
        Some(())
    }

    /// The block at `height` from `source` alone (`Some(None)`: it did not send it).
    fn fetch_one(&mut self, source: Source, height: Height) -> Option<Option<Block>> {
        let request = BlockRangeRequest {
            from: height,
            max_blocks: 1,
            // The server always sends the first block whole, whatever this says.
            max_bytes: 1,
            wait_ms: 0,
        };
        let block = self
            .fetch(source, &request)?
            .ok()
            .and_then(|r| r.blocks.into_iter().next())
            .filter(|b| b.header().height == height);
        Some(block)
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
