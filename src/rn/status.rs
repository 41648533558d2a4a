//! What a running ranger node reports: its head, how far the chain is known to go, counters,
//! and the bounded list of blocks it rejected (with reasons). Shared between the auditor (the
//! only writer of the head), the sync driver and readers such as the RPC.

use crate::consensus::audit::AuditError;
use crate::consensus::selection::CnSet;
use crate::types::{BlockHash, Height};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Rejected blocks remembered for readers; older ones are forgotten first.
pub const MAX_REJECTED: usize = 256;
/// Blocks whose finality at this node is remembered ([`RnStatus::finality`]).
pub const FINALITY_WINDOW: usize = 64;

/// Whether the node is replaying history or at the head of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPhase {
    /// More than a few blocks behind the highest height a peer reported.
    CatchingUp,
    /// At (or within a block of) the highest height any peer reported.
    Following,
}

/// A snapshot of sync progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStatus {
    pub phase: SyncPhase,
    /// Height the node had when it started (after replaying its own log).
    pub started_at: Height,
    /// Last audited and stored height, and its hash.
    pub head: Height,
    pub head_hash: BlockHash,
    /// Highest height known to be certified: the audited head, or a peer's claimed head whose
    /// block carried a verified commit certificate (a bare claim never counts).
    pub highest_known: Height,
    /// Lowest height this run fetched from a peer (`None`: nothing fetched yet).
    pub first_fetched: Option<Height>,
    /// Blocks fetched through block requests in this run.
    pub blocks_fetched: u64,
}

/// Counters of gossiped equivocation evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceCounts {
    /// Verified and kept (new records).
    pub accepted: u64,
    /// Refused after checks (the sender was penalized).
    pub refused: u64,
    /// Waiting for the node to reach their height.
    pub pending: u64,
}

/// A block the node refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub height: Height,
    pub hash: BlockHash,
    /// The failure class (see [`AuditError::kind`]).
    pub kind: &'static str,
    pub reason: String,
    /// Who sent it (a peer description).
    pub from: String,
    pub at_ms: u64,
}

/// Blocks within this many heights of the highest known one count as following.
pub const FOLLOWING_SLACK: u64 = 2;

/// The shared status of one RN.
#[derive(Debug)]
pub struct RnStatus {
    pub head: AtomicU64,
    head_hash: Mutex<BlockHash>,
    /// The CN set in force after the head (claimed heads are verified against it).
    cn_set: RwLock<Arc<CnSet>>,
    pub started_at: AtomicU64,
    /// Only ever raised to a certified height ([`SyncStatus::highest_known`]).
    pub highest_known: AtomicU64,
    /// `u64::MAX` until something is fetched.
    pub first_fetched: AtomicU64,
    pub blocks_fetched: AtomicU64,
    pub blocks_audited: AtomicU64,
    pub txs_audited: AtomicU64,
    pub blocks_from_gossip: AtomicU64,
    pub blocks_relayed: AtomicU64,
    pub evidence_accepted: AtomicU64,
    pub evidence_refused: AtomicU64,
    /// Evidence items waiting for the node to reach their height.
    pub evidence_pending: AtomicU64,
    /// Bumped on every rejection, so the sync driver knows to re-fetch from the head.
    pub rejection_epoch: AtomicU64,
    rejected_by_kind: [AtomicU64; AuditError::KINDS.len()],
    rejected: Mutex<VecDeque<Rejection>>,
    /// Milliseconds from the timestamp of each of the last [`FINALITY_WINDOW`] blocks proposed
    /// since this node started to when they were durable here.
    finality_ms: Mutex<VecDeque<u64>>,
    /// When this node started (Unix milliseconds).
    started_ms: u64,
}

/// Finality at this node over its last blocks ([`RnStatus::finality`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finality {
    /// Blocks measured.
    pub blocks: usize,
    pub p50_ms: u64,
    pub max_ms: u64,
}

impl RnStatus {
    pub fn new(head: Height, head_hash: BlockHash, cn_set: Arc<CnSet>) -> Self {
        Self {
            head: AtomicU64::new(head.0),
            head_hash: Mutex::new(head_hash),
            cn_set: RwLock::new(cn_set),
            started_at: AtomicU64::new(head.0),
            highest_known: AtomicU64::new(head.0),
            first_fetched: AtomicU64::new(u64::MAX),
            blocks_fetched: AtomicU64::new(0),
            blocks_audited: AtomicU64::new(0),
            txs_audited: AtomicU64::new(0),
            blocks_from_gossip: AtomicU64::new(0),
            blocks_relayed: AtomicU64::new(0),
            evidence_accepted: AtomicU64::new(0),
            evidence_refused: AtomicU64::new(0),
            evidence_pending: AtomicU64::new(0),
            rejection_epoch: AtomicU64::new(0),
            rejected_by_kind: Default::default(),
            rejected: Mutex::new(VecDeque::new()),
            finality_ms: Mutex::new(VecDeque::with_capacity(FINALITY_WINDOW)),
            started_ms: crate::chain::app::now_ms(),
        }
    }

    /// Moves the head (the auditor does, after the blocks are durable).
    pub fn set_head(&self, height: Height, hash: BlockHash) {
        *self.head_hash.lock().unwrap_or_else(|e| e.into_inner()) = hash;
        self.head.store(height.0, Ordering::Release);
        self.highest_known.fetch_max(height.0, Ordering::Relaxed);
    }

    /// Records the CN set in force after the head (the auditor does, when a block switches it).
    pub fn set_cn_set(&self, set: Arc<CnSet>) {
        *self.cn_set.write().unwrap_or_else(|e| e.into_inner()) = set;
    }

    /// The CN set in force after the head.
    pub fn cn_set(&self) -> Arc<CnSet> {
        Arc::clone(&self.cn_set.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Raises the certified height (a claimed head whose certificate verified).
    pub fn certified(&self, height: Height) {
        self.highest_known.fetch_max(height.0, Ordering::Relaxed);
    }

    pub fn head(&self) -> (Height, BlockHash) {
        let hash = *self.head_hash.lock().unwrap_or_else(|e| e.into_inner());
        (Height(self.head.load(Ordering::Acquire)), hash)
    }

    pub fn phase(&self) -> SyncPhase {
        let head = self.head.load(Ordering::Acquire);
        if self.highest_known.load(Ordering::Relaxed) > head + FOLLOWING_SLACK {
            SyncPhase::CatchingUp
        } else {
            SyncPhase::Following
        }
    }

    pub fn snapshot(&self) -> SyncStatus {
        let (head, head_hash) = self.head();
        let first = self.first_fetched.load(Ordering::Relaxed);
        SyncStatus {
            phase: self.phase(),
            started_at: Height(self.started_at.load(Ordering::Relaxed)),
            head,
            head_hash,
            highest_known: Height(self.highest_known.load(Ordering::Relaxed)),
            first_fetched: (first != u64::MAX).then_some(Height(first)),
            blocks_fetched: self.blocks_fetched.load(Ordering::Relaxed),
        }
    }

    pub fn evidence_counts(&self) -> EvidenceCounts {
        EvidenceCounts {
            accepted: self.evidence_accepted.load(Ordering::Relaxed),
            refused: self.evidence_refused.load(Ordering::Relaxed),
            pending: self.evidence_pending.load(Ordering::Relaxed),
        }
    }

    /// Records that a block proposed at `timestamp_ms` (its header's) became durable here at
    /// `now_ms`: what a client of this node waits from the proposal to a readable receipt. A
    /// proposer's clock ahead of this node's counts as 0. A block proposed before this node
    /// started is left out: its age is the node's outage, not the region's finality (one
    /// proposed since, reached while catching up, counts: its clients did wait that long).
    pub fn record_finality(&self, timestamp_ms: u64, now_ms: u64) {
        if timestamp_ms < self.started_ms {
            return;
        }
        let mut window = self.finality_ms.lock().unwrap_or_else(|e| e.into_inner());
        if window.len() >= FINALITY_WINDOW {
            window.pop_front();
        }
        window.push_back(now_ms.saturating_sub(timestamp_ms));
    }

    /// Median and worst finality over the last blocks stored while following (`None` before
    /// the first).
    pub fn finality(&self) -> Option<Finality> {
        let mut lags: Vec<u64> = self
            .finality_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        lags.sort_unstable();
        Some(Finality {
            blocks: lags.len(),
            p50_ms: *lags.get(lags.len() / 2)?,
            max_ms: *lags.last()?,
        })
    }

    /// Records a rejection (bounded list, counter per class); `refetch` bumps the epoch that
    /// sends the sync driver back to the head — only for fetched blocks, so junk gossip cannot
    /// make the driver throw away its lookahead.
    pub fn reject(&self, rejection: Rejection, refetch: bool) {
        if let Some(i) = AuditError::KINDS.iter().position(|k| *k == rejection.kind) {
            self.rejected_by_kind[i].fetch_add(1, Ordering::Relaxed);
        }
        let mut list = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= MAX_REJECTED {
            list.pop_front();
        }
        list.push_back(rejection);
        if refetch {
            self.rejection_epoch.fetch_add(1, Ordering::Release);
        }
    }

    /// The remembered rejections, oldest first.
    pub fn rejected(&self) -> Vec<Rejection> {
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Rejections per failure class, in [`AuditError::KINDS`] order.
    pub fn rejected_by_kind(&self) -> Vec<(&'static str, u64)> {
        AuditError::KINDS
            .iter()
            .zip(&self.rejected_by_kind)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::bls::SecretKey;
    use alloy_primitives::B256;

    fn status(started_ms: u64) -> RnStatus {
        let key = SecretKey::from_seed(&[7; 32]).unwrap();
        let set = Arc::new(CnSet::new(vec![key.public_key()]).unwrap());
        RnStatus {
            started_ms,
            ..RnStatus::new(Height(0), BlockHash(B256::ZERO), set)
        }
    }

    #[test]
    fn finality_is_the_median_and_worst_of_the_last_blocks_and_a_clock_ahead_counts_zero() {
        let s = status(500);
        assert_eq!(s.finality(), None);
        // Proposed before the node started: an outage's age, not finality.
        s.record_finality(499, 10_000);
        assert_eq!(s.finality(), None);
        for (timestamp, now) in [(1_000, 1_030), (2_000, 2_010), (3_000, 3_500)] {
            s.record_finality(timestamp, now);
        }
        let f = s.finality().unwrap();
        assert_eq!((f.blocks, f.p50_ms, f.max_ms), (3, 30, 500));
        // A proposer whose clock runs ahead of this node's.
        s.record_finality(5_000, 4_900);
        assert_eq!(s.finality().unwrap().p50_ms, 30);
        // Only the last FINALITY_WINDOW blocks count: the 500 ms block falls out.
        for _ in 0..FINALITY_WINDOW {
            s.record_finality(10_000, 10_020);
        }
        let f = s.finality().unwrap();
        assert_eq!((f.blocks, f.p50_ms, f.max_ms), (FINALITY_WINDOW, 20, 20));
    }
}
