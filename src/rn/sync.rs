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
use crate::net::handshake::Peer;
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

/// Whether a request to `source` may wait on the server for the next block (a long poll): at
/// the head, a CN always, an RN only when no CN is linked. A long poll waits on the source's
/// own head, and an RN's head moves only when it gets the block itself (CNs do not gossip
/// blocks to RNs): two RNs at the head polling each other each waited the whole poll (2 s)
/// for a block neither was fetching, while the CNs had committed it long before. An RN is
/// still asked in its turn, without waiting, so CNs that withhold blocks cannot stall this
/// node while an RN has them.
fn long_polls(source: &Source, at_head: bool, sources: &[Source]) -> bool {
    let is_rn = |s: &Source| matches!(s.peer, Peer::Rn(_));
    at_head && (!is_rn(source) || sources.iter().all(is_rn))
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
            let at_head = cursor == head + 1 && self.status.phase() == SyncPhase::Following;
            let sources = self.net.sources();
            let Some(source) = sources.get(turn % sources.len().max(1)).copied() else {
                self.pause(IDLE_PAUSE);
                continue;
            };
            let request = BlockRangeRequest {
                from: Height(cursor),
                max_blocks: self.config.batch_blocks,
                max_bytes: self.config.batch_bytes,
                wait_ms: match long_polls(&source, at_head, &sources) {
                    true => self.config.follow_wait_ms,
                    false => 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::selection::CnSet;
    use crate::crypto::bls::SecretKey;
    use crate::net::rn::RnNetConfig;
    use crate::net::sync::tests::block;
    use crate::types::sync::{MAX_RANGE_BLOCKS, MAX_WAIT_MS};
    use crate::types::{BlockHash, ChainId, CnIndex};
    use alloy_primitives::B256;

    fn source(id: PeerId) -> Source {
        Source {
            id,
            peer: Peer::Cn(CnIndex(id as u32)),
        }
    }

    #[test]
    fn at_the_head_only_cns_are_long_polled_when_any_is_linked() {
        let rn = |id: PeerId| Source {
            id,
            peer: Peer::Rn(crate::crypto::bls::PublicKeyBytes([id as u8; 48])),
        };
        let mixed = [source(1), source(2), rn(3)];
        let polled = |sources: &[Source], at_head| {
            (sources.iter())
                .map(|s| long_polls(s, at_head, sources))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            polled(&mixed, true),
            [true, true, false],
            "the RN is asked, not polled"
        );
        assert_eq!(
            polled(&mixed, false),
            [false; 3],
            "catching up waits on no one"
        );
        assert_eq!(
            polled(&[rn(3), rn(4)], true),
            [true, true],
            "RNs when no CN is linked"
        );
    }

    /// A driver whose node has audited up to `head` and is connected to no one: every block
    /// request fails at once, as with a source that sends nothing back.
    fn driver(head: u64) -> (SyncDriver, watch::Sender<bool>, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = SecretKey::from_seed(&[7; 32]).unwrap();
        let set = Arc::new(CnSet::new(vec![key.public_key()]).unwrap());
        let (gossip, _) = crate::link::link("test_gossip", 1);
        let config = RnNetConfig::new("127.0.0.1:0".parse().unwrap());
        let net = RnNetwork::bind(rt.handle(), config, key, gossip).unwrap();
        let (out, _) = crate::link::link("test_fetched", 1);
        let (stop_tx, stop) = watch::channel(false);
        let driver = SyncDriver {
            net: Arc::new(net),
            rt: rt.handle().clone(),
            status: Arc::new(RnStatus::new(Height(head), BlockHash(B256::ZERO), set)),
            out,
            stop,
            config: SyncConfig::default(),
            params: Params {
                region: ChainId(1000),
                committee_size: 1,
                block_interval_ms: 100,
                base_timeout_ms: 500,
                max_timeout_ms: 5_000,
                votes: Default::default(),
            },
            claims: ClaimChecks::default(),
        };
        (driver, stop_tx, rt)
    }

    fn known(driver: &SyncDriver) -> u64 {
        driver.status.highest_known.load(Ordering::Relaxed)
    }

    #[test]
    fn a_source_s_claim_is_checked_at_most_once_per_interval_each() {
        let mut checks = ClaimChecks::default();
        let live = [source(1), source(2)];
        assert!(checks.due(1, &live));
        assert!(!checks.due(1, &live), "checked twice within the interval");
        assert!(
            checks.due(2, &live),
            "one source's check held back another's"
        );
        // A check made a whole interval ago no longer holds the next one back.
        let earlier = Instant::now().checked_sub(CLAIM_CHECK_EVERY).unwrap();
        checks.0.insert(1, earlier);
        assert!(checks.due(1, &live));
        assert!(!checks.due(1, &live));
    }

    #[test]
    fn claim_checks_remember_only_connected_sources() {
        let mut checks = ClaimChecks::default();
        // A thousand sources, each gone by the time the next one answers.
        for id in 0..1_000 {
            assert!(checks.due(id, &[source(id)]));
            assert_eq!(checks.0.len(), 1, "after source {id}");
        }
        let live: Vec<Source> = (0..10).map(source).collect();
        for s in &live {
            checks.due(s.id, &live);
        }
        assert_eq!(checks.0.len(), 10);
        // Source 3 alone stays: its check is still remembered, the others are forgotten.
        assert!(!checks.due(3, &[source(3)]));
        assert_eq!(checks.0.keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn a_claim_within_the_slack_is_taken_without_a_check_even_at_the_top_of_the_range() {
        for head in [0, 10, u64::MAX - 1, u64::MAX] {
            let (mut driver, _stop, _rt) = driver(head);
            let claimed = Height(head.saturating_add(FOLLOWING_SLACK));
            assert_eq!(
                driver.check_claim(source(1), claimed, &[source(1)]),
                Some(())
            );
            assert!(
                driver.claims.0.is_empty(),
                "head {head}: the claim was checked"
            );
            assert_eq!(
                known(&driver),
                head,
                "head {head}: a bare claim was believed"
            );
            driver.net.close();
        }
    }

    #[test]
    fn a_claim_beyond_the_slack_that_the_source_cannot_back_is_not_believed() {
        for claimed in [10 + FOLLOWING_SLACK + 1, 1 << 40, u64::MAX] {
            let (mut driver, _stop, _rt) = driver(10);
            let live = [source(1)];
            assert_eq!(
                driver.check_claim(source(1), Height(claimed), &live),
                Some(())
            );
            assert!(
                driver.claims.0.contains_key(&1),
                "claim {claimed}: not checked"
            );
            assert_eq!(known(&driver), 10, "claim {claimed}: believed unbacked");
            assert_eq!(driver.status.phase(), SyncPhase::Following);
            driver.net.close();
        }
    }

    #[test]
    fn fetched_blocks_are_counted_and_the_lowest_first_height_kept() {
        let (driver, _stop, _rt) = driver(0);
        let range = |from: u64, n: u64| BlockRangeResponse {
            head: Height(100),
            blocks: (from..from + n)
                .map(|h| block(h, BlockHash(B256::ZERO), 0))
                .collect(),
        };
        assert_eq!(
            driver.status.first_fetched.load(Ordering::Relaxed),
            u64::MAX
        );
        driver.record(&range(5, 3));
        driver.record(&range(3, 2));
        driver.record(&range(9, 1));
        driver.record(&range(1, 0));
        assert_eq!(driver.status.first_fetched.load(Ordering::Relaxed), 3);
        assert_eq!(driver.status.blocks_fetched.load(Ordering::Relaxed), 6);
        driver.net.close();
    }

    #[test]
    fn the_default_requests_stay_within_what_a_server_serves() {
        let config = SyncConfig::default();
        assert!(config.batch_blocks >= 1 && config.batch_blocks <= MAX_RANGE_BLOCKS);
        assert!(config.batch_bytes <= MAX_RANGE_BYTES);
        assert!(config.follow_wait_ms <= MAX_WAIT_MS);
        assert!(config.lookahead_batches >= 1);
    }
}
