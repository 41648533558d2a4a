//! The auditor: the one thread that owns an RN's chain. Blocks arrive fetched in ranges (from
//! the sync driver) or gossiped one at a time (from the RN network); each batch goes through
//! the consensus audit ([`super::audit`]), then re-execution by the CN application
//! (`validate`, then `commit`) with the senders of the blocks ahead recovered meanwhile
//! ([`super::recovery`]), and only the blocks that pass both are made durable, indexed,
//! served and — near the head — relayed. A block that fails is rejected with its reason and
//! its sender is penalized; nothing of it is stored.
//!
//! A block at a height already stored with a different hash is checked as equivocation
//! evidence against the stored one; so is evidence gossiped by other RNs. Evidence that
//! verifies is persisted, kept for readers and relayed; evidence for heights the node has not
//! reached yet waits (in a short height window, bounded in items and bytes) until it gets
//! there. Gossiped evidence is remembered by its full digest (seals included) and only after a
//! verdict, so a forged copy of a real conflict sent first cannot get the real one ignored.

use super::evidence::{
    check_evidence, Deferral, EvidenceBook, EvidenceError, EvidenceRecord, Finding, PendingEvidence,
};
use super::ledger::{Ledger, SetHistory};
use super::recovery::SenderRecovery;
use super::status::{Rejection, RnStatus, SyncPhase};
use crate::chain::app::{now_ms, CnApp};
use crate::consensus::audit::{audit_consensus, AuditError, ChainState};
use crate::consensus::machine::{Application, InvalidBlock, Params, Tip};
use crate::exec::SegmentInput;
use crate::link::LinkReceiver;
use crate::net::rn::{Gossip, PeerId, RnNetwork};
use crate::net::sync::BlockServer;
use crate::types::codec::{canonical, encode_frame};
use crate::types::{Block, BlockHash, EquivocationEvidence, Height};
use alloy_primitives::B256;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Gossip items handled between two waits for fetched blocks.
const GOSSIP_PER_TURN: usize = 64;
/// Longest wait for fetched blocks before gossip is looked at again.
const POLL: Duration = Duration::from_millis(20);
/// Hashes of recently stored blocks kept in memory for duplicate checks.
const RECENT_HASHES: usize = 1024;
/// Gossip items remembered for deduplication.
const SEEN: usize = 16_384;
/// Blocks this close to the highest known height are relayed to RN peers when stored.
const RELAY_WINDOW: u64 = 2;
/// Blocks of a fetched range applied between two writes to the ledger (each write ends with
/// one WAL sync).
const STORE_EVERY: usize = 16;
/// Interval of the catch-up progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Blocks the sync driver fetched from one peer.
#[derive(Debug)]
pub struct Fetched {
    pub source: PeerId,
    pub blocks: Vec<Block>,
}

/// How a block reached the auditor.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Sync(PeerId),
    Gossip(PeerId),
}

impl Origin {
    fn peer(self) -> PeerId {
        match self {
            Self::Sync(p) | Self::Gossip(p) => p,
        }
    }
}

/// A bounded set that forgets its oldest entries.
struct Seen {
    set: HashSet<B256>,
    order: VecDeque<B256>,
}

impl Seen {
    fn new() -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn contains(&self, key: &B256) -> bool {
        self.set.contains(key)
    }

    /// False if `key` was already there.
    fn insert(&mut self, key: B256) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The gossip identity of a block: its hash *and* its seal (the seal is outside the hash, so a
/// forged seal on a real header must not shadow the real block).
fn seen_key(block: &Block) -> B256 {
    crate::crypto::hash::sha256_concat(&[block.hash().0.as_slice(), &canonical(&block.sealed.seal)])
}

/// Why applying a range stopped early.
enum Stop {
    /// The block does not re-execute to its header: refused, its sender penalized.
    Invalid(InvalidBlock),
    /// The node cannot go on.
    Storage(anyhow::Error),
}

/// The catch-up progress line.
struct Progress {
    at: Instant,
    height: u64,
    phase: SyncPhase,
}

/// Everything the auditor thread owns.
pub struct Auditor {
    pub params: Params,
    pub genesis: Tip,
    pub app: CnApp,
    /// Recovers the senders of the blocks ahead while `app` executes.
    pub recovery: Arc<SenderRecovery>,
    pub ledger: Ledger,
    pub tip: Tip,
    pub sets: SetHistory,
    pub net: Arc<RnNetwork>,
    pub server: Arc<BlockServer>,
    pub status: Arc<RnStatus>,
    pub evidence: Arc<EvidenceBook>,
    pub fetched: LinkReceiver<Fetched>,
    pub gossip: LinkReceiver<(PeerId, Gossip)>,
}

/// The auditor's working memory.
struct Memory {
    seen: Seen,
    recent: BTreeMap<Height, BlockHash>,
    pending: PendingEvidence,
    progress: Progress,
}

impl Auditor {
    /// Runs until the sync driver stops (its link closes); an error is a storage failure.
    pub fn run(mut self) -> anyhow::Result<()> {
        let span = tracing::info_span!("stage", name = "rn_audit");
        let _entered = span.enter();
        let mut memory = Memory {
            seen: Seen::new(),
            recent: BTreeMap::new(),
            pending: PendingEvidence::new(),
            progress: Progress {
                at: Instant::now(),
                height: self.tip.height.0,
                phase: self.status.phase(),
            },
        };
        loop {
            for (peer, item) in self.gossip.drain_ready(GOSSIP_PER_TURN) {
                self.on_gossip(&mut memory, peer, item)?;
            }
            match self.fetched.recv_timeout(POLL) {
                Ok(f) => self.on_blocks(&mut memory, Origin::Sync(f.source), f.blocks)?,
                Err(true) => return Ok(()),
                Err(false) => {}
            }
            self.tick(&mut memory)?;
        }
    }

    fn on_gossip(&mut self, memory: &mut Memory, peer: PeerId, item: Gossip) -> anyhow::Result<()> {
        match item {
            Gossip::Block(block) => {
                if !memory.seen.insert(seen_key(&block)) {
                    return Ok(());
                }
                let height = block.header().height;
                if height == self.tip.height.next() {
                    self.status
                        .blocks_from_gossip
                        .fetch_add(1, Ordering::Relaxed);
                    self.on_blocks(memory, Origin::Gossip(peer), vec![*block])
                } else if height <= self.tip.height {
                    self.on_known_height(memory, Origin::Gossip(peer), *block)
                } else {
                    // Ahead of this node: the sync driver fetches it in order.
                    Ok(())
                }
            }
            Gossip::Evidence(evidence) => self.on_evidence(memory, peer, *evidence),
        }
    }

    /// Audits, executes and stores blocks (those at stored heights are duplicate or conflict
    /// checks; a gap is left for the sync driver to fill).
    fn on_blocks(
        &mut self,
        memory: &mut Memory,
        origin: Origin,
        blocks: Vec<Block>,
    ) -> anyhow::Result<()> {
        let mut fresh = Vec::with_capacity(blocks.len());
        for block in blocks {
            if block.header().height <= self.tip.height {
                self.on_known_height(memory, origin, block)?;
            } else {
                fresh.push(block);
            }
        }
        if fresh
            .first()
            .is_none_or(|b| b.header().height != self.tip.height.next())
        {
            return Ok(());
        }
        let span =
            tracing::debug_span!("audit", from = %self.tip.height.next(), blocks = fresh.len());
        let _entered = span.enter();
        let state = ChainState {
            tip: self.tip,
            set: Arc::clone(self.app.cn_set()),
        };
        let outcome = audit_consensus(&self.params, &state, &fresh);
        let (mut accepted, mut stored) = (0, 0);
        let recovery = Arc::clone(&self.recovery);
        let stopped = recovery.for_each(&fresh[..outcome.passed], |block, inputs| {
            if let Err(stop) = self.apply(block, inputs) {
                return ControlFlow::Break(stop);
            }
            accepted += 1;
            // Stored as the range goes, so the writes overlap the recovery of what follows.
            if accepted - stored == STORE_EVERY {
                if let Err(e) = self.store(memory, origin, &fresh[stored..accepted]) {
                    return ControlFlow::Break(Stop::Storage(e));
                }
                stored = accepted;
            }
            ControlFlow::Continue(())
        });
        let failure = match stopped {
            Some(Stop::Invalid(e)) => Some((accepted, AuditError::Execution(e))),
            Some(Stop::Storage(e)) => return Err(e),
            None => outcome.failure,
        };
        self.store(memory, origin, &fresh[stored..accepted])?;
        if let Some((i, reason)) = failure {
            self.reject(origin, &fresh[i], reason);
        }
        Ok(())
    }

    /// Re-executes an audited block on the tip and applies it.
    fn apply(&mut self, block: &Block, inputs: Vec<SegmentInput>) -> Result<(), Stop> {
        self.app.prepared(block.hash(), inputs);
        self.app.validate(block, &self.tip).map_err(Stop::Invalid)?;
        self.app.commit(block).map_err(|e| {
            Stop::Storage(anyhow::anyhow!(
                "applying block {}: {e}",
                block.header().height
            ))
        })?;
        self.advance(block);
        Ok(())
    }

    /// Moves the in-memory tip past a committed block.
    fn advance(&mut self, block: &Block) {
        self.tip = Tip::of(block);
        if !block.header().next_cn_set.is_empty() {
            self.sets
                .switch(self.tip.height.next(), Arc::clone(self.app.cn_set()));
            self.status.set_cn_set(Arc::clone(self.app.cn_set()));
            self.net.allow_probers(self.app.cn_set().keys().to_vec());
        }
    }

    /// Makes audited blocks durable and visible, and relays them when near the head.
    fn store(
        &mut self,
        memory: &mut Memory,
        origin: Origin,
        blocks: &[Block],
    ) -> anyhow::Result<()> {
        let Some(last) = blocks.last() else {
            return Ok(());
        };
        self.ledger.append(blocks)?;
        let txs: usize = blocks
            .iter()
            .flat_map(|b| &b.segments)
            .map(|s| s.txs.len())
            .sum();
        self.status
            .blocks_audited
            .fetch_add(blocks.len() as u64, Ordering::Relaxed);
        self.status
            .txs_audited
            .fetch_add(txs as u64, Ordering::Relaxed);
        self.status.set_head(last.header().height, last.hash());
        self.server.committed(last.header().height);
        for block in blocks {
            memory.seen.insert(seen_key(block));
            memory.recent.insert(block.header().height, block.hash());
        }
        while memory.recent.len() > RECENT_HASHES {
            memory.recent.pop_first();
        }
        // The region's finality as this node's clients see it (blocks proposed before the
        // node started are left out: their age is the outage's).
        let now_ms = crate::chain::app::now_ms();
        for block in blocks {
            self.status
                .record_finality(block.header().timestamp_ms, now_ms);
        }
        // Near the head, peers want each new block now; history they fetch themselves.
        let highest = self.status.highest_known.load(Ordering::Relaxed);
        let relayed = blocks.iter().filter(|b| {
            matches!(origin, Origin::Gossip(_)) || b.header().height.0 + RELAY_WINDOW >= highest
        });
        for block in relayed {
            let sent = self
                .net
                .gossip(Arc::new(encode_frame(block)), Some(origin.peer()));
            self.status
                .blocks_relayed
                .fetch_add(sent as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A block at a height this node already stored: a duplicate, or a conflict to check.
    fn on_known_height(
        &mut self,
        memory: &mut Memory,
        origin: Origin,
        block: Block,
    ) -> anyhow::Result<()> {
        let height = block.header().height;
        if height.0 == 0 {
            self.reject(origin, &block, AuditError::Header("height"));
            return Ok(());
        }
        let ours = match memory.recent.get(&height) {
            Some(hash) => *hash,
            None => match self.ledger.chain().block_at(height)? {
                Some(stored) => stored.hash(),
                None => return Ok(()),
            },
        };
        if block.hash() == ours {
            return Ok(());
        }
        let Some(stored) = self.ledger.chain().block_at(height)? else {
            return Ok(());
        };
        let Some(evidence) = EquivocationEvidence::new(stored.sealed, block.sealed.clone()) else {
            return Ok(());
        };
        match self.verify(&evidence) {
            Ok(finding) => self.accept_evidence(memory, evidence, finding, Some(origin.peer())),
            Err(e) => {
                self.reject(origin, &block, AuditError::Conflict(e.to_string()));
                Ok(())
            }
        }
    }

    fn on_evidence(
        &mut self,
        memory: &mut Memory,
        peer: PeerId,
        evidence: EquivocationEvidence,
    ) -> anyhow::Result<()> {
        // The digest covers the seals: junk on the real headers has a digest of its own. The
        // conflict id is trusted only for what the book holds, which was verified.
        let (digest, height) = (evidence.digest(), evidence.height());
        if memory.seen.contains(&digest) || self.evidence.contains(evidence.id(), height) {
            return Ok(());
        }
        if height.0 == 0 || !evidence.is_conflict() {
            memory.seen.insert(digest);
            self.refuse_evidence(peer, height, &EvidenceError::NotAConflict);
            return Ok(());
        }
        let next = self.tip.height.next();
        if height > next {
            // Not marked seen: a dropped item may come again when the node is closer.
            match memory.pending.offer(next, peer, evidence) {
                Deferral::Queued => {}
                Deferral::TooFar => {
                    tracing::debug!(%height, %next, %peer, "evidence too far ahead; dropped")
                }
                Deferral::Full => tracing::debug!(%height, %peer, "evidence queue full; dropped"),
            }
            self.note_pending(memory);
            return Ok(());
        }
        self.check_gossiped(memory, peer, evidence)
    }

    /// Verifies gossiped evidence at a checkable height and remembers the verdict by digest.
    fn check_gossiped(
        &mut self,
        memory: &mut Memory,
        peer: PeerId,
        evidence: EquivocationEvidence,
    ) -> anyhow::Result<()> {
        if self.evidence.contains(evidence.id(), evidence.height()) {
            return Ok(());
        }
        let height = evidence.height();
        let verdict = self.verify(&evidence);
        memory.seen.insert(evidence.digest());
        match verdict {
            Ok(finding) => self.accept_evidence(memory, evidence, finding, Some(peer)),
            Err(e) => {
                self.refuse_evidence(peer, height, &e);
                Ok(())
            }
        }
    }

    fn note_pending(&self, memory: &Memory) {
        self.status
            .evidence_pending
            .store(memory.pending.len() as u64, Ordering::Relaxed);
    }

    fn refuse_evidence(&self, peer: PeerId, height: Height, error: &EvidenceError) {
        tracing::warn!(%height, %peer, %error, "evidence refused");
        self.status.evidence_refused.fetch_add(1, Ordering::Relaxed);
        self.net.penalize(peer);
    }

    /// Checks evidence at a height up to the next one, against that height's CN set and the
    /// mix of the height before.
    fn verify(&self, evidence: &EquivocationEvidence) -> Result<Finding, EvidenceError> {
        let height = evidence.height();
        let before = Height(height.0.saturating_sub(1));
        let mix_before = if before == self.tip.height {
            Some(self.tip.mix)
        } else if before.0 == 0 {
            Some(self.genesis.mix)
        } else {
            self.ledger
                .chain()
                .block_at(before)
                .ok()
                .flatten()
                .map(|b| b.header().mix)
        };
        let mix_before = mix_before.ok_or(EvidenceError::NotAConflict)?;
        check_evidence(&self.params, self.sets.at(height), mix_before, evidence)
    }

    fn accept_evidence(
        &mut self,
        memory: &mut Memory,
        evidence: EquivocationEvidence,
        finding: Finding,
        from: Option<PeerId>,
    ) -> anyhow::Result<()> {
        memory.seen.insert(evidence.digest());
        let record = EvidenceRecord { evidence, finding };
        if !self.evidence.insert(record.clone())? {
            return Ok(());
        }
        tracing::warn!(
            height = %record.height(),
            first = %record.evidence.first.hash(),
            second = %record.evidence.second.hash(),
            conflicting_quorums = record.finding.conflicting_quorums,
            in_both = ?record.finding.in_both,
            "equivocation evidence"
        );
        self.status
            .evidence_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.net
            .gossip(Arc::new(encode_frame(&record.evidence)), from);
        Ok(())
    }

    fn reject(&self, origin: Origin, block: &Block, reason: AuditError) {
        let header = block.header();
        tracing::warn!(height = %header.height, hash = %block.hash(), peer = origin.peer(), kind = reason.kind(), %reason, "block rejected");
        self.status.reject(
            Rejection {
                height: header.height,
                hash: block.hash(),
                kind: reason.kind(),
                reason: reason.to_string(),
                from: format!("peer {}", origin.peer()),
                at_ms: now_ms(),
            },
            matches!(origin, Origin::Sync(_)),
        );
        self.net.penalize(origin.peer());
    }

    /// Periodic work: evidence that became checkable, the progress line.
    fn tick(&mut self, memory: &mut Memory) -> anyhow::Result<()> {
        let ready = memory.pending.take_ready(self.tip.height.next());
        if !ready.is_empty() {
            self.note_pending(memory);
        }
        for (peer, evidence) in ready {
            self.check_gossiped(memory, peer, evidence)?;
        }
        self.progress(&mut memory.progress);
        Ok(())
    }

    fn progress(&self, progress: &mut Progress) {
        let elapsed = progress.at.elapsed();
        if elapsed < PROGRESS_EVERY {
            return;
        }
        let head = self.tip.height.0;
        let target = self.status.highest_known.load(Ordering::Relaxed);
        let rate = (head - progress.height) as f64 / elapsed.as_secs_f64();
        let phase = self.status.phase();
        match phase {
            SyncPhase::CatchingUp => {
                let eta_s = if rate > 0.0 {
                    format!("{:.0}", target.saturating_sub(head) as f64 / rate)
                } else {
                    "-".to_string()
                };
                tracing::info!(
                    height = head,
                    target,
                    blocks_per_s = format!("{rate:.1}"),
                    eta_s,
                    "catching up"
                );
            }
            SyncPhase::Following if progress.phase == SyncPhase::CatchingUp => {
                tracing::info!(height = head, "caught up; following the head");
            }
            SyncPhase::Following => {}
        }
        *progress = Progress {
            at: Instant::now(),
            height: head,
            phase,
        };
    }
}
