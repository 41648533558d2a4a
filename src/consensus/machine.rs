//! The BFT state machine of one consensus node: pure (`step(input) -> outputs`), no I/O, no
//! clock, so the same code runs in the node and in the deterministic simulation.
//!
//! Two voting phases with instant finality (the IBFT 2.0 / PBFT family):
//!
//! 1. the round's proposer — its *leader*, recomputed by every receiver from public ranks —
//!    broadcasts a [`Proposal`]; the proposal is also its prepare vote;
//! 2. committee members that accept it send the leader a prepare vote; the leader aggregates
//!    a quorum of them into a [`PreparedCertificate`] and broadcasts it
//!    ([`QuorumCertificate`]); a member holding the accepted block and the certificate
//!    *prepares* it (locks on it) and sends the leader a commit vote;
//! 3. the leader aggregates a quorum of commit votes into the [`CommitCertificate`] that seals
//!    the block and broadcasts it: the block is final.
//!
//! So a phase costs O(n) messages, and a member checks one aggregate signature per phase
//! instead of one signature per member. With [`VoteRouting::AllToAll`] votes go to every CN
//! instead (the pattern before leader aggregation). Either way a node counts every verified
//! vote that reaches it and acts on every verified certificate, so the rules — and the safety
//! argument — do not depend on where votes are sent, only on quorums of signatures.
//!
//! On timeout a node broadcasts a [`RoundChange`] for the next round carrying its highest
//! prepared certificate. The next proposer needs a quorum of them (the round-change
//! certificate) and must re-propose the block of the highest prepared certificate in it, if
//! any; members check that justification before voting. Timeouts grow by half per round. The safety
//! argument is in `docs/consensus.md`.
//!
//! Votes a node casts are emitted as [`Output::Persist`] before the [`Output::Broadcast`] that
//! sends them; the driver must make each persist durable before sending what follows, so a
//! restarted node (see [`Machine::restore`]) never votes twice in one round and phase.

use super::audit::{verified_prefix, ChainState};
use super::certificate::verify_certificate;
use super::certificate::QuorumSignature;
pub use super::interface::{
    proposal_timestamp, Application, GotExpected, Input, InvalidBlock, Misbehavior, Output, Params,
    Rejections, Tip, VoteRouting, WalEntry, MAX_CLOCK_DRIFT_MS,
};
use super::proposal::{self, ProposalError};
use super::selection::{CnSet, Committee};
use super::tally::{Recorded, Tally};
use super::verifier::SigCache;
use crate::crypto::bls::{SecretKey, SignatureBytes};
use crate::types::{
    Block, BlockHash, CnIndex, CommitCertificate, ConsensusMessage, Height, PreparedCertificate,
    Proposal, QuorumCertificate, Round, RoundChange, Vote, VoteKind,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The index of a node outside the CN set: never a committee member, never a proposer.
pub const NOT_A_MEMBER: CnIndex = CnIndex(u32::MAX);

/// The index of `key` in `set`, or [`NOT_A_MEMBER`].
pub fn locate(set: &CnSet, key: &SecretKey) -> CnIndex {
    let mine = key.public_key();
    set.keys()
        .iter()
        .position(|k| *k == mine)
        .map_or(NOT_A_MEMBER, |i| CnIndex(i as u32))
}

/// Rounds ahead of the current one for which votes, proposals and round changes are kept in
/// full; bounds memory against a peer flooding far-future rounds. Round changes beyond it
/// still count towards a round jump (each member's highest one is kept), so nodes any number
/// of rounds apart converge.
pub(crate) const MAX_ROUNDS_AHEAD: u32 = 16;
/// Rounds behind the current one whose votes and accepted proposals are still kept (a late
/// commit quorum there still decides); older ones are dropped, so a long asynchronous period
/// costs no peer-supplied memory per round it went through (this node's own votes, two small
/// entries per round, are kept for the height).
const ROUNDS_KEPT_BEHIND: u32 = 16;
/// Messages for the next height kept while this one finishes (others commit a little earlier).
const MAX_NEXT_HEIGHT_MESSAGES: usize = 1024;
/// Bytes of messages for the next height kept (a proposal can carry a large block).
const MAX_NEXT_HEIGHT_BYTES: usize = 64 << 20;
/// Decided blocks above the next height kept while catching up, and how far ahead they may be.
const MAX_FUTURE_BLOCKS: usize = 64;
/// Candidate decided blocks kept per later height: a peer sending junk first cannot keep the
/// real block out.
const FUTURE_CANDIDATES: usize = 4;
/// Bytes of unverified decided blocks kept ahead of the next height.
pub const MAX_FUTURE_BLOCK_BYTES: usize = 256 << 20;
/// Milliseconds a request for decided blocks is given before it is sent again.
const SYNC_RETRY_MS: u64 = 200;
/// Decided blocks one sync request asks for (from its first height on); peers answer with up
/// to this many.
pub const SYNC_RANGE: u64 = 16;
/// Recent heights whose parent hash and CN set are remembered, to check round changes of
/// peers that are still working on a height this node has decided.
const RECENT_HEIGHTS: usize = 16;

/// What a round change of a decided height is checked against: that height's parent and the
/// CN set that voted there (a CN-set change renumbers the members).
struct DecidedHeight {
    parent: BlockHash,
    set: Arc<CnSet>,
}

/// One CN's consensus state.
pub struct Machine {
    params: Params,
    me: CnIndex,
    key: SecretKey,
    set: Arc<CnSet>,
    sigs: Arc<SigCache>,
    tip: Tip,
    round: Round,
    /// Committee of the current height (fixed across rounds; the proposer is per round).
    committee: Committee,
    /// Blocks of accepted proposals and of verified prepared certificates, by hash: each held
    /// once however many messages carry it (pruned with the rounds that name them).
    blocks: HashMap<BlockHash, Block>,
    accepted: BTreeMap<Round, BlockHash>,
    tally: Tally,
    my_votes: HashMap<(VoteKind, Round), BlockHash>,
    prepared: Option<(PreparedCertificate, Block)>,
    /// Verified prepare quorums broadcast by leaders, by round (one per round, within the
    /// round window): a member prepares once it also holds the accepted block.
    certified: BTreeMap<Round, PreparedCertificate>,
    /// A verified commit quorum of this height whose block this node has not accepted: the
    /// block is fetched from peers and committed under this seal (or its decided copy).
    pending_seal: Option<(BlockHash, CommitCertificate)>,
    /// Verified round changes of the current and later rounds in the window, without their
    /// blocks (those are in `blocks`).
    round_changes: BTreeMap<Round, BTreeMap<CnIndex, RoundChange>>,
    /// This node's own round changes as sent (with their blocks): the one of the latest round
    /// it left, repeated on timeouts, and the current one.
    my_round_changes: BTreeMap<Round, RoundChange>,
    proposed: Option<Round>,
    next_height: Vec<ConsensusMessage>,
    next_height_bytes: usize,
    replay: VecDeque<ConsensusMessage>,
    /// Up to [`FUTURE_CANDIDATES`] decided blocks per later height (first come; each is
    /// checked when its height comes, so junk cannot keep the real one out).
    future_blocks: BTreeMap<Height, Vec<Block>>,
    future_block_bytes: usize,
    /// Buffered decided blocks whose consensus checks passed in one batch when the block
    /// before them committed (see [`Machine::verify_ahead`]): the hash and seal that passed,
    /// by height. Only heights held in `future_blocks`, so bounded the same way.
    verified_ahead: BTreeMap<Height, (BlockHash, CommitCertificate)>,
    /// Decided blocks whose consensus checks passed in a batch ahead of their height.
    batch_verified: u64,
    /// Each committee member's highest verified round change beyond [`MAX_ROUNDS_AHEAD`]
    /// (without its block).
    far_round_changes: BTreeMap<CnIndex, RoundChange>,
    /// Recently decided heights (bounded by [`RECENT_HEIGHTS`]).
    recent: BTreeMap<Height, DecidedHeight>,
    /// The clock as the driver last gave it (milliseconds since the Unix epoch).
    now_ms: u64,
    /// The highest round this node has asked for at this height (persisted when raised).
    asked_round: Round,
    /// When (clock input) this node first knew a quorum to be in the current round. The
    /// round's timeout counts from then: a node that entered the round alone, ahead of the
    /// others, would otherwise leave it as they arrive and stay a round apart for good once
    /// timeouts stop growing (see [`Machine::on_timeout`]).
    round_live_since: Option<u64>,
    /// A block was output as committed and the driver has not yet said it is applied.
    awaiting_applied: bool,
    /// The last request for decided blocks: from which height, and when (clock input).
    sync_requested: Option<(Height, u64)>,
    /// WAL entries of heights not reached yet (after a restart behind the chain).
    restored: BTreeMap<Height, Vec<WalEntry>>,
    /// Proposers of the current height's rounds (bounded by the rounds seen).
    proposers: std::cell::RefCell<HashMap<Round, CnIndex>>,
    /// Peers already told about a decided height (bounded: cleared every height).
    peers_behind: HashSet<(CnIndex, Height)>,
    rejections: Rejections,
}

impl Machine {
    /// A machine for CN `me` that will work on the height after `tip`.
    pub fn new(
        params: Params,
        me: CnIndex,
        key: SecretKey,
        set: Arc<CnSet>,
        sigs: Arc<SigCache>,
        tip: Tip,
    ) -> Self {
        let committee = set.committee(tip.mix, tip.height.next(), Round(0), params.committee_size);
        Self {
            params,
            me,
            key,
            set,
            sigs,
            tip,
            round: Round(0),
            committee,
            blocks: HashMap::new(),
            accepted: BTreeMap::new(),
            tally: Tally::default(),
            my_votes: HashMap::new(),
            prepared: None,
            certified: BTreeMap::new(),
            pending_seal: None,
            round_changes: BTreeMap::new(),
            my_round_changes: BTreeMap::new(),
            proposed: None,
            next_height: Vec::new(),
            next_height_bytes: 0,
            replay: VecDeque::new(),
            future_blocks: BTreeMap::new(),
            future_block_bytes: 0,
            verified_ahead: BTreeMap::new(),
            batch_verified: 0,
            far_round_changes: BTreeMap::new(),
            recent: BTreeMap::new(),
            now_ms: 0,
            asked_round: Round(0),
            round_live_since: None,
            awaiting_applied: false,
            sync_requested: None,
            restored: BTreeMap::new(),
            proposers: Default::default(),
            peers_behind: HashSet::new(),
            rejections: Rejections::default(),
        }
    }

    /// Re-applies this node's write-ahead log after a restart, so it never casts a vote that
    /// conflicts with one it cast before the crash. Entries for other heights are ignored.
    pub fn restore(&mut self, wal: &[WalEntry]) {
        for entry in wal {
            let height = match entry {
                WalEntry::Voted { height, .. }
                | WalEntry::Prepared { height, .. }
                | WalEntry::RoundChanged { height, .. } => *height,
            };
            if height >= self.height() {
                self.restored.entry(height).or_default().push(entry.clone());
            }
        }
        self.apply_restored();
    }

    /// Re-applies WAL entries of the height now being worked on (entries of later heights wait:
    /// a node restarted behind the chain may reach them again while catching up).
    fn apply_restored(&mut self) {
        let height = self.height();
        self.restored = self.restored.split_off(&height);
        for entry in self.restored.remove(&height).unwrap_or_default() {
            match entry {
                WalEntry::Voted {
                    round, kind, hash, ..
                } => {
                    self.my_votes.insert((kind, round), hash);
                    self.round = self.round.max(round);
                }
                WalEntry::Prepared {
                    certificate, block, ..
                } => {
                    self.blocks.insert(certificate.block_hash, (*block).clone());
                    self.prepared = Some((certificate, *block));
                }
                WalEntry::RoundChanged { round, .. } => {
                    self.round = self.round.max(round);
                    self.asked_round = self.asked_round.max(round);
                }
            }
        }
    }

    pub fn height(&self) -> Height {
        self.tip.height.next()
    }

    pub fn round(&self) -> Round {
        self.round
    }

    /// Whether CN `cn` proposes `round` at the current height, a round this node still takes
    /// proposals for (its current round up to the window ahead).
    pub fn proposes(&self, cn: CnIndex, round: Round) -> bool {
        round >= self.round && self.within_window(round) && self.proposer_of(round) == cn
    }

    /// Whether `sig` is CN `cn`'s (in the current set) over `msg`; remembered in the signature
    /// cache the machine's own checks consult.
    pub fn is_signed_by(&self, cn: CnIndex, msg: &[u8], sig: &SignatureBytes) -> bool {
        self.sigs.verify(&self.set, cn, msg, sig)
    }

    /// The CN set in force at the height being decided.
    pub fn cn_set(&self) -> &Arc<CnSet> {
        &self.set
    }

    pub fn tip(&self) -> &Tip {
        &self.tip
    }

    /// Decided blocks whose consensus checks (header chain, body, reveal, certificate)
    /// passed in one batch ahead of their height while catching up.
    pub fn batch_verified(&self) -> u64 {
        self.batch_verified
    }

    /// The highest height this node knows to be decided: its tip, or the last block ahead
    /// whose certificate it has verified while catching up (never an unverified claim).
    pub fn best_known_height(&self) -> Height {
        self.verified_ahead
            .last_key_value()
            .map_or(self.tip.height, |(h, _)| (*h).max(self.tip.height))
    }

    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// The later heights for which decided blocks are held ahead, nearest first (for tests and
    /// diagnostics).
    pub fn heights_held_ahead(&self) -> Vec<Height> {
        self.future_blocks.keys().copied().collect()
    }

    /// Bytes of peer-supplied data held for the current and next heights: blocks (each
    /// once), the prepared block, round changes, messages for the next height and decided
    /// blocks ahead. It walks everything held: for tests and diagnostics, not every step.
    pub fn held_bytes(&self) -> usize {
        use alloy_rlp::Encodable;
        let blocks = self
            .blocks
            .values()
            .chain(self.prepared.iter().map(|(_, b)| b))
            .map(Encodable::length);
        let round_changes = self
            .round_changes
            .values()
            .flat_map(BTreeMap::values)
            .chain(self.far_round_changes.values())
            .chain(self.my_round_changes.values())
            .map(Encodable::length);
        blocks.chain(round_changes).sum::<usize>()
            + self.next_height_bytes
            + self.future_block_bytes
    }

    /// Whether a committed block awaits the driver's [`Input::Applied`].
    pub fn awaiting_applied(&self) -> bool {
        self.awaiting_applied
    }

    /// Advances the machine by one input, at wall-clock `now_ms` (the machine never reads a
    /// clock: time is an input like any other).
    pub fn step(&mut self, input: Input, now_ms: u64, app: &mut dyn Application) -> Vec<Output> {
        self.now_ms = now_ms;
        let mut out = Vec::new();
        match input {
            Input::Applied { height } if self.awaiting_applied && height == self.tip.height => {
                self.resume(&mut out)
            }
            Input::Message(msg) if self.awaiting_applied => self.hold_for_next_height(msg),
            _ if self.awaiting_applied => {}
            Input::Start => self.enter_round(self.round, &mut out),
            Input::ProposalDue { height, round }
                if height == self.height() && round == self.round =>
            {
                self.propose(app, &mut out)
            }
            Input::Timeout { height, round } if height == self.height() && round == self.round => {
                self.on_timeout(&mut out)
            }
            Input::Applied { .. } | Input::ProposalDue { .. } | Input::Timeout { .. } => {}
            Input::Message(msg) => self.on_message(msg, app, &mut out),
        }
        // After a commit, what was held back waits for the driver's `Applied`.
        while !self.awaiting_applied {
            let Some(msg) = self.replay.pop_front() else {
                break;
            };
            self.on_message(msg, app, &mut out);
        }
        self.note_round_live();
        out
    }

    /// Records the first moment a quorum is known to be in the current round.
    fn note_round_live(&mut self) {
        if self.round_live_since.is_none()
            && !self.awaiting_applied
            && self.quorum_reached(self.round)
        {
            self.round_live_since = Some(self.now_ms);
        }
    }

    /// Keeps a message for the next height, bounded by count and bytes.
    fn hold_for_next_height(&mut self, msg: ConsensusMessage) {
        let size = message_size(&msg);
        if self.next_height.len() < MAX_NEXT_HEIGHT_MESSAGES
            && self.next_height_bytes.saturating_add(size) <= MAX_NEXT_HEIGHT_BYTES
        {
            self.next_height_bytes += size;
            self.next_height.push(msg);
        }
    }

    /// Rounds this far ahead are kept in full (votes, proposals, round changes).
    fn within_window(&self, round: Round) -> bool {
        round.0 <= self.round.0.saturating_add(MAX_ROUNDS_AHEAD)
    }

    /// Rounds this far behind still count votes (see [`ROUNDS_KEPT_BEHIND`]).
    fn still_kept(&self, round: Round) -> bool {
        round.0.saturating_add(ROUNDS_KEPT_BEHIND) >= self.round.0
    }

    /// The proposer of `round` at the current height. Ranking the whole CN set is O(n log n)
    /// and every vote, proposal and round change asks, so answers are kept for the height.
    /// Only rounds within the window are remembered, so peer-chosen rounds cannot grow it.
    fn proposer_of(&self, round: Round) -> CnIndex {
        if let Some(p) = self.proposers.borrow().get(&round) {
            return *p;
        }
        let proposer = self
            .set
            .committee(
                self.tip.mix,
                self.height(),
                round,
                self.params.committee_size,
            )
            .proposer;
        if self.within_window(round) {
            self.proposers.borrow_mut().insert(round, proposer);
        }
        proposer
    }

    fn committee_at(&self, round: Round) -> Committee {
        let mut c = self.members_at(round);
        c.proposer = self.proposer_of(round);
        c
    }

    /// The committee of `round` for checking signatures: the members are the same at every
    /// round of a height, so this computes no ranking (the proposer field is not meaningful).
    fn members_at(&self, round: Round) -> Committee {
        let mut c = self.committee.clone();
        c.round = round;
        c
    }

    fn enter_round(&mut self, round: Round, out: &mut Vec<Output>) {
        let height = self.height();
        self.round = round;
        self.round_live_since = None;
        self.committee = self.committee_at(round);
        self.forget_old_rounds();
        self.admit_far_round_changes();
        out.push(Output::ScheduleTimeout {
            height,
            round,
            after_ms: self.params.timeout(round),
        });
        if self.committee.proposer == self.me {
            let after_ms = if round.0 == 0 {
                self.params.block_interval_ms
            } else {
                0
            };
            out.push(Output::ScheduleProposal {
                height,
                round,
                after_ms,
            });
        }
    }

    fn propose(&mut self, app: &mut dyn Application, out: &mut Vec<Output>) {
        // A prepare vote already cast in this round (possibly before a restart) forbids
        // proposing: the new proposal would be a second, conflicting vote.
        if self.committee.proposer != self.me
            || self.proposed == Some(self.round)
            || self.my_votes.contains_key(&(VoteKind::Prepare, self.round))
        {
            return;
        }
        let round = self.round;
        let justification: Vec<RoundChange> = match round.0 {
            0 => Vec::new(),
            _ => match self.round_changes.get(&round) {
                Some(rcs) if rcs.len() >= self.committee.quorum() => {
                    rcs.values().cloned().collect()
                }
                // Not justified yet: the quorum of round changes will trigger the proposal.
                _ => return,
            },
        };
        let block = match proposal::highest_prepared(&justification) {
            Some(pc) => match self.blocks.get(&pc.block_hash) {
                Some(block) => block.clone(),
                // Invariant: a verified round change's block is filed when it arrives and kept
                // while the round change is.
                None => {
                    tracing::error!(round = %round, "prepared block of the justification is not held");
                    return;
                }
            },
            None => {
                let timestamp_ms = proposal_timestamp(self.now_ms, &self.tip);
                let body = app.build(self.height(), &self.tip, timestamp_ms);
                proposal::build_block(
                    &self.params,
                    &self.key,
                    self.me,
                    &self.set,
                    &self.tip,
                    round,
                    timestamp_ms,
                    body,
                )
            }
        };
        let hash = block.hash();
        let signature = self
            .key
            .sign(&Vote::signing_message(
                VoteKind::Prepare,
                self.height(),
                round,
                hash,
            ))
            .to_bytes();
        let p = Proposal {
            round,
            proposer: self.me,
            signature,
            block,
            justification,
        };
        self.proposed = Some(round);
        self.persist_vote(VoteKind::Prepare, round, hash, out);
        self.accept(&p);
        out.push(Output::Broadcast(ConsensusMessage::Proposal(Box::new(p))));
        self.check_thresholds(round, hash, out);
    }

    /// A round timed out. The node moves on only from a round that a quorum is known to have
    /// reached (round 0, a quorum of round changes, or a justified proposal); otherwise it
    /// repeats its round change for this round and waits again. So no honest node runs more
    /// than one round ahead of a quorum, and after any asynchronous period the honest nodes
    /// meet (the f + 1 jump brings laggards up) instead of timing out in step, rounds apart,
    /// for ever once timeouts reach their cap.
    fn on_timeout(&mut self, out: &mut Vec<Output>) {
        // The round has been live for less than its timeout: this timer was set when the node
        // entered the round ahead of the quorum. Wait out the rest with the others.
        let timeout = self.params.timeout(self.round);
        // A clock that stepped back: the round counts as live from now, so the wait below is
        // at most one timeout in all.
        if self.round_live_since.is_some_and(|t| t > self.now_ms) {
            self.round_live_since = Some(self.now_ms);
        }
        if let Some(due) = self.round_live_since.map(|t| t.saturating_add(timeout)) {
            if due > self.now_ms {
                // Never longer than one timeout: "now" is the driver's wall clock, and one
                // that stepped back must not stretch the wait.
                out.push(Output::ScheduleTimeout {
                    height: self.height(),
                    round: self.round,
                    after_ms: (due - self.now_ms).min(timeout),
                });
                return;
            }
        }
        self.sync_requested = None;
        if self.pending_seal.is_some() {
            // The height is decided and only its block is missing: ask again (the first
            // request may have gone to a peer that had not committed yet).
            self.request_sync(out);
        }
        self.repeat_previous_round_change(out);
        if !self.quorum_reached(self.round) {
            let round = self.round;
            self.send_round_change(round, out);
            out.push(Output::ScheduleTimeout {
                height: self.height(),
                round,
                after_ms: self.params.timeout(round),
            });
            return;
        }
        let next = self.round.next();
        self.send_round_change(next, out);
        self.enter_round(next, out);
        self.try_justified_proposal(out);
    }

    /// Sends again this node's round change for the round it left last. A node that left
    /// round `r` saw a quorum of round changes for `r`; one still in `r` may have lost some of
    /// them before GST, and the senders that moved on never repeat them otherwise. Every
    /// honest member repeating its own is enough: honest members are at least a quorum.
    fn repeat_previous_round_change(&self, out: &mut Vec<Output>) {
        if let Some((_, rc)) = self.my_round_changes.range(..self.round).next_back() {
            out.push(Output::Broadcast(ConsensusMessage::RoundChange(Box::new(
                rc.clone(),
            ))));
        }
    }

    /// Whether a quorum of the committee is known to have reached `round`.
    /// Evidence: round 0; a justified proposal of `round`; a prepared certificate of `round` or
    /// later (a quorum voted there); or round changes for `round` or later from a quorum of
    /// distinct members (a member asking for a later round has left this one).
    fn quorum_reached(&self, round: Round) -> bool {
        if round.0 == 0
            || self.accepted.contains_key(&round)
            || self
                .prepared
                .as_ref()
                .is_some_and(|(pc, _)| pc.round >= round)
        {
            return true;
        }
        let mut senders: HashSet<CnIndex> = self
            .round_changes
            .range(round..)
            .flat_map(|(_, rcs)| rcs.keys().copied())
            .collect();
        senders.extend(
            self.far_round_changes
                .iter()
                .filter(|(_, rc)| rc.round >= round)
                .map(|(sender, _)| *sender),
        );
        senders.len() >= self.committee.quorum()
    }

    fn send_round_change(&mut self, round: Round, out: &mut Vec<Output>) {
        // A certificate of `round` or later cannot be reported in it (peers refuse such a
        // round change); holding one, the node has evidence to move on instead (see
        // `quorum_reached`), so this only happens if asked to repeat an older round.
        let (prepared, prepared_block) = match &self.prepared {
            Some((pc, _)) if pc.round >= round => return,
            Some((pc, block)) => (vec![pc.clone()], vec![block.clone()]),
            None => (Vec::new(), Vec::new()),
        };
        if round > self.asked_round {
            self.asked_round = round;
            out.push(Output::Persist(WalEntry::RoundChanged {
                height: self.height(),
                round,
            }));
        }
        let msg = RoundChange::signing_message(
            self.params.region,
            self.height(),
            self.tip.hash,
            round,
            prepared.first(),
        );
        let rc = RoundChange {
            height: self.height(),
            round,
            sender: self.me,
            prepared,
            prepared_block,
            signature: self.key.sign(&msg).to_bytes(),
        };
        self.my_round_changes.insert(round, rc.clone());
        let filed = self.file_block_of(rc.clone());
        self.round_changes
            .entry(round)
            .or_default()
            .insert(self.me, filed);
        out.push(Output::Broadcast(ConsensusMessage::RoundChange(Box::new(
            rc,
        ))));
    }

    /// After round changes arrive: propose if this node leads the current round and the
    /// round-change quorum is complete. (Proposals at round > 0 need no block interval.)
    fn try_justified_proposal(&mut self, out: &mut Vec<Output>) {
        if self.round.0 > 0
            && self.committee.proposer == self.me
            && self.proposed != Some(self.round)
        {
            let ready = self
                .round_changes
                .get(&self.round)
                .is_some_and(|r| r.len() >= self.committee.quorum());
            if ready {
                out.push(Output::ScheduleProposal {
                    height: self.height(),
                    round: self.round,
                    after_ms: 0,
                });
            }
        }
    }

    fn on_message(
        &mut self,
        msg: ConsensusMessage,
        app: &mut dyn Application,
        out: &mut Vec<Output>,
    ) {
        if matches!(
            msg,
            ConsensusMessage::SyncRequest(_)
                | ConsensusMessage::ProposalRequest(_)
                | ConsensusMessage::CompactProposal(_)
        ) {
            return; // the node serves these, or fills them into proposals first
        }
        let height = msg.height();
        if height > self.height() {
            // The chain has moved on without this node: keep what helps and ask for blocks.
            if let ConsensusMessage::Decided(block) = msg {
                self.buffer_future_block(*block);
            } else if height == self.height().next() {
                self.hold_for_next_height(msg);
            }
            self.request_sync(out);
            return;
        }
        if height < self.height() {
            self.rejections.stale += 1;
            // A round change for a decided height means its sender timed out there: it missed
            // the decision. (Late votes are normal and say nothing.) Only a verified one is
            // answered, so nobody can make this node send blocks on another's behalf.
            if let ConsensusMessage::RoundChange(rc) = &msg {
                if let Some(peer) = self.peer_behind(rc) {
                    out.push(Output::PeerBehind { peer, height });
                }
            }
            return;
        }
        match msg {
            ConsensusMessage::Proposal(p) => self.on_proposal(*p, app, out),
            ConsensusMessage::Vote(v) => self.on_vote(*v, out),
            ConsensusMessage::RoundChange(rc) => self.on_round_change(*rc, out),
            ConsensusMessage::Decided(block) => self.on_decided(*block, app, out),
            ConsensusMessage::Certificate(qc) => self.on_certificate(*qc, out),
            // The node's to serve or fill (returned above); consensus state does not change.
            ConsensusMessage::SyncRequest(_)
            | ConsensusMessage::ProposalRequest(_)
            | ConsensusMessage::CompactProposal(_) => {}
        }
    }

    /// The peer to send the decided block of `rc`'s height to, numbered in the current CN
    /// set: once per peer and height, and only for a round change signed by its sender in the
    /// set of that height (a CN-set change renumbers members; one that left gets nothing).
    fn peer_behind(&mut self, rc: &RoundChange) -> Option<CnIndex> {
        let decided = self.recent.get(&rc.height)?;
        let key = decided.set.keys().get(rc.sender.0 as usize)?;
        let peer = CnIndex(self.set.keys().iter().position(|k| k == key)? as u32);
        if self.peers_behind.contains(&(peer, rc.height))
            || !self.is_signed_round_change_of_the_past(rc, decided)
        {
            return None;
        }
        self.peers_behind.insert((peer, rc.height));
        Some(peer)
    }

    /// Whether `rc` is signed by its sender for the decided height it names.
    fn is_signed_round_change_of_the_past(
        &self,
        rc: &RoundChange,
        decided: &DecidedHeight,
    ) -> bool {
        let msg = RoundChange::signing_message(
            self.params.region,
            rc.height,
            decided.parent,
            rc.round,
            rc.prepared.first(),
        );
        self.sigs
            .verify(&decided.set, rc.sender, &msg, &rc.signature)
    }

    fn on_proposal(&mut self, p: Proposal, app: &mut dyn Application, out: &mut Vec<Output>) {
        if p.round < self.round || !self.within_window(p.round) {
            self.rejections.stale += 1;
            return;
        }
        let committee = self.committee_at(p.round);
        let checked = proposal::check_proposal(
            &self.params,
            &self.set,
            &self.sigs,
            &committee,
            &self.tip,
            self.now_ms,
            &p,
            |round| self.proposer_of(round),
        );
        // Signed by the round's proposer: a second block for a round is equivocation whatever
        // its content, found before paying for its execution.
        let hash = p.block.hash();
        if let (Ok(()), Some(&earlier)) = (&checked, self.accepted.get(&p.round)) {
            if earlier != hash {
                out.push(Output::Misbehavior(Misbehavior::ConflictingProposals {
                    height: self.height(),
                    round: p.round,
                    proposer: p.proposer,
                }));
            }
            return;
        }
        if let Err(e) = checked.and_then(|()| {
            app.validate(&p.block, &self.tip)
                .map_err(ProposalError::Application)
        }) {
            tracing::debug!(height = %self.height(), round = %p.round, error = %e, "proposal refused");
            self.rejections.invalid_proposal += 1;
            return;
        }
        if p.round > self.round {
            // A valid justification proves a quorum moved to this round: follow it.
            self.enter_round(p.round, out);
        }
        self.accept(&p);
        if !self.my_votes.contains_key(&(VoteKind::Prepare, p.round)) {
            self.cast(VoteKind::Prepare, p.round, hash, out);
        }
        self.check_thresholds(p.round, hash, out);
    }

    /// Records an accepted proposal and the proposer's vote that it carries.
    fn accept(&mut self, p: &Proposal) {
        let hash = p.block.hash();
        self.blocks.insert(hash, p.block.clone());
        self.accepted.insert(p.round, hash);
        self.tally
            .record(VoteKind::Prepare, p.round, p.proposer, hash, p.signature);
    }

    fn persist_vote(
        &mut self,
        kind: VoteKind,
        round: Round,
        hash: BlockHash,
        out: &mut Vec<Output>,
    ) {
        self.my_votes.insert((kind, round), hash);
        out.push(Output::Persist(WalEntry::Voted {
            height: self.height(),
            round,
            kind,
            hash,
        }));
    }

    fn cast(&mut self, kind: VoteKind, round: Round, hash: BlockHash, out: &mut Vec<Output>) {
        if self.committee.position(self.me).is_none() {
            return;
        }
        self.persist_vote(kind, round, hash, out);
        let height = self.height();
        let vote = Vote {
            kind,
            height,
            round,
            block_hash: hash,
            voter: self.me,
            signature: self
                .key
                .sign(&Vote::signing_message(kind, height, round, hash))
                .to_bytes(),
        };
        self.tally
            .record(kind, round, self.me, hash, vote.signature);
        let message = ConsensusMessage::Vote(Box::new(vote));
        match self.params.votes {
            VoteRouting::AllToAll => out.push(Output::Broadcast(message)),
            // The leader's own vote is counted above; it aggregates the others'.
            VoteRouting::Leader => match self.proposer_of(round) {
                leader if leader == self.me => {}
                leader => out.push(Output::Send {
                    to: leader,
                    message,
                }),
            },
        }
    }

    /// Whether this node leads (proposes in) `round` of the current height.
    fn leads(&self, round: Round) -> bool {
        self.proposer_of(round) == self.me
    }

    fn on_vote(&mut self, v: Vote, out: &mut Vec<Output>) {
        if !self.within_window(v.round) || !self.still_kept(v.round) {
            self.rejections.stale += 1;
            return;
        }
        // Membership is the same at every round of a height: no proposer ranking needed.
        let committee = self.members_at(v.round);
        let authentic = committee.position(v.voter).is_some()
            && self.sigs.verify(
                &self.set,
                v.voter,
                &Vote::signing_message(v.kind, v.height, v.round, v.block_hash),
                &v.signature,
            );
        if !authentic {
            self.rejections.bad_vote += 1;
            return;
        }
        match self
            .tally
            .record(v.kind, v.round, v.voter, v.block_hash, v.signature)
        {
            Recorded::New => self.check_thresholds(v.round, v.block_hash, out),
            Recorded::Duplicate => {}
            Recorded::Conflicting { .. } => {
                out.push(Output::Misbehavior(Misbehavior::DoubleVote {
                    height: v.height,
                    round: v.round,
                    kind: v.kind,
                    voter: v.voter,
                }))
            }
        }
    }

    /// Acts on quorums for `hash` at `round`: prepare → commit vote, commit → decide.
    fn check_thresholds(&mut self, round: Round, hash: BlockHash, out: &mut Vec<Output>) {
        let validated = self.accepted.get(&round) == Some(&hash);
        let committee = self.committee_at(round);
        let newer = self
            .prepared
            .as_ref()
            .is_none_or(|(pc, _)| pc.round < round);
        if validated && newer {
            let from_votes = self.tally.prepared(&committee, round, hash);
            let aggregated_here = from_votes.is_some();
            let received = || {
                self.certified
                    .get(&round)
                    .filter(|pc| pc.block_hash == hash)
                    .cloned()
            };
            if let Some(pc) = from_votes.or_else(received) {
                let block = self.blocks[&hash].clone();
                out.push(Output::Persist(WalEntry::Prepared {
                    height: self.height(),
                    certificate: pc.clone(),
                    block: Box::new(block.clone()),
                }));
                if aggregated_here && self.leads(round) {
                    self.broadcast_certificate(
                        VoteKind::Prepare,
                        &pc.signers,
                        pc.aggregate,
                        round,
                        hash,
                        out,
                    );
                }
                self.prepared = Some((pc, block));
            }
        }
        let prepared_here = self
            .prepared
            .as_ref()
            .is_some_and(|(pc, _)| pc.round == round && pc.block_hash == hash);
        if prepared_here
            && round == self.round
            && !self.my_votes.contains_key(&(VoteKind::Commit, round))
        {
            self.cast(VoteKind::Commit, round, hash, out);
        }
        if !self.accepted.values().any(|h| *h == hash) {
            return;
        }
        if let Some((signers, aggregate)) =
            self.tally
                .certify(&committee, VoteKind::Commit, round, hash)
        {
            if self.leads(round) {
                self.broadcast_certificate(VoteKind::Commit, &signers, aggregate, round, hash, out);
            }
            let seal = CommitCertificate {
                round,
                signers,
                aggregate,
            };
            self.commit_accepted(hash, seal, out);
        } else if let Some((_, seal)) = self.pending_seal.take_if(|(h, _)| *h == hash) {
            self.commit_accepted(hash, seal, out);
        }
    }

    /// Commits the accepted block `hash` under `seal`.
    fn commit_accepted(&mut self, hash: BlockHash, seal: CommitCertificate, out: &mut Vec<Output>) {
        let mut block = self.blocks[&hash].clone();
        block.sealed.seal = seal;
        self.commit(block, out);
    }

    /// Broadcasts a quorum this node aggregated as the round's leader.
    fn broadcast_certificate(
        &self,
        kind: VoteKind,
        signers: &crate::types::SignerBitmap,
        aggregate: crate::crypto::bls::SignatureBytes,
        round: Round,
        block_hash: BlockHash,
        out: &mut Vec<Output>,
    ) {
        let certificate = QuorumCertificate {
            kind,
            height: self.height(),
            round,
            block_hash,
            signers: signers.clone(),
            aggregate,
        };
        out.push(Output::Broadcast(ConsensusMessage::Certificate(Box::new(
            certificate,
        ))));
    }

    /// A leader's certificate. A prepare quorum is kept for its round (the latest verified;
    /// two genuine ones of this chain cannot differ) and acted on once the block is accepted;
    /// a commit quorum
    /// decides the height: the accepted block is committed under it, or — not holding the
    /// block — fetched from peers. Each is verified (one aggregate signature) before use.
    fn on_certificate(&mut self, qc: QuorumCertificate, out: &mut Vec<Output>) {
        // Kept by block hash, not first come: a genuine certificate of another chain whose CNs
        // share keys (votes do not sign the region) must not keep this chain's one out.
        let useless = match qc.kind {
            VoteKind::Prepare => {
                !self.within_window(qc.round)
                    || !self.still_kept(qc.round)
                    || self
                        .certified
                        .get(&qc.round)
                        .is_some_and(|pc| pc.block_hash == qc.block_hash)
                    || self
                        .prepared
                        .as_ref()
                        .is_some_and(|(pc, _)| pc.round >= qc.round)
            }
            VoteKind::Commit => self
                .pending_seal
                .as_ref()
                .is_some_and(|(hash, _)| *hash == qc.block_hash),
        };
        if useless {
            self.rejections.stale += 1;
            return;
        }
        let quorum = QuorumSignature {
            kind: qc.kind,
            round: qc.round,
            block_hash: qc.block_hash,
            signers: &qc.signers,
            aggregate: &qc.aggregate,
        };
        if let Err(e) = quorum.verify(&self.set, &self.members_at(qc.round)) {
            tracing::debug!(error = %e, kind = ?qc.kind, round = %qc.round, "certificate refused");
            self.rejections.bad_certificate += 1;
            return;
        }
        match qc.kind {
            VoteKind::Prepare => {
                self.certified.insert(qc.round, qc.prepared());
            }
            VoteKind::Commit => {
                self.pending_seal = Some((qc.block_hash, qc.seal()));
                if !self.accepted.values().any(|h| *h == qc.block_hash) {
                    self.request_sync(out);
                    return;
                }
            }
        }
        self.check_thresholds(qc.round, qc.block_hash, out);
    }

    fn on_round_change(&mut self, rc: RoundChange, out: &mut Vec<Output>) {
        // Round 0 needs no change; rounds already left are noise.
        if rc.round < self.round || rc.round.0 == 0 {
            self.rejections.stale += 1;
            return;
        }
        // Beyond the window only a member's new highest counts: refuse anything else before
        // paying for its signatures.
        if !self.within_window(rc.round)
            && self
                .far_round_changes
                .get(&rc.sender)
                .is_some_and(|kept| kept.round >= rc.round)
        {
            self.rejections.stale += 1;
            return;
        }
        // Verified before anything is kept or computed for its round.
        let committee = self.members_at(rc.round);
        if let Err(e) = proposal::check_round_change(
            &self.params,
            &self.set,
            &self.sigs,
            &committee,
            &self.tip,
            &rc,
            proposal::Carried::Block,
        ) {
            tracing::debug!(error = %e, sender = %rc.sender, "round change refused");
            self.rejections.bad_round_change += 1;
            return;
        }
        let rc = self.file_block_of(rc);
        if self.within_window(rc.round) {
            self.round_changes
                .entry(rc.round)
                .or_default()
                .insert(rc.sender, rc);
        } else if self
            .far_round_changes
            .get(&rc.sender)
            .is_none_or(|kept| kept.round < rc.round)
        {
            // Beyond the window only each member's highest counts: memory stays one round
            // change per member however far apart the nodes are.
            self.far_round_changes.insert(rc.sender, rc);
        }
        self.maybe_skip_rounds(out);
        self.try_justified_proposal(out);
    }

    /// f + 1 members asking for rounds above ours means at least one honest node timed out
    /// there: join the highest round that f + 1 of them reached, at any distance (so nodes
    /// that drifted apart during an asynchronous period converge once messages flow).
    fn maybe_skip_rounds(&mut self, out: &mut Vec<Output>) {
        let f = (self.committee.size() - 1) / 3;
        let mut highest: BTreeMap<CnIndex, Round> = BTreeMap::new();
        for (round, senders) in self.round_changes.range(self.round.next()..) {
            for sender in senders.keys() {
                highest.insert(*sender, *round);
            }
        }
        for (sender, rc) in &self.far_round_changes {
            let round = highest.entry(*sender).or_insert(rc.round);
            *round = (*round).max(rc.round);
        }
        let mut rounds: Vec<Round> = highest.into_values().collect();
        if rounds.len() <= f {
            return;
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let target = rounds[f];
        if target > self.round {
            self.send_round_change(target, out);
            self.enter_round(target, out);
        }
    }

    /// Takes the block out of a verified round change into `blocks` (once per hash, however
    /// many round changes carry it) and returns the round change without it.
    fn file_block_of(&mut self, mut rc: RoundChange) -> RoundChange {
        if let Some(block) = rc.prepared_block.pop() {
            self.blocks.entry(block.hash()).or_insert(block);
        }
        rc
    }

    /// Drops what rounds left behind no longer need: round changes below the current round
    /// (but this node's latest one, which it repeats), votes and accepted proposals more than
    /// [`ROUNDS_KEPT_BEHIND`] rounds back, and blocks nothing kept names any more.
    fn forget_old_rounds(&mut self) {
        let round = self.round;
        self.round_changes = self.round_changes.split_off(&round);
        if let Some(&left) = self
            .my_round_changes
            .range(..round)
            .next_back()
            .map(|(r, _)| r)
        {
            self.my_round_changes = self.my_round_changes.split_off(&left);
        }
        let oldest = Round(round.0.saturating_sub(ROUNDS_KEPT_BEHIND));
        self.accepted = self.accepted.split_off(&oldest);
        self.certified = self.certified.split_off(&oldest);
        self.tally.forget_before(oldest);
        let named: HashSet<BlockHash> = self
            .accepted
            .values()
            .copied()
            .chain(self.prepared.iter().map(|(pc, _)| pc.block_hash))
            .chain(
                self.round_changes
                    .values()
                    .flat_map(BTreeMap::values)
                    .chain(self.far_round_changes.values())
                    .filter_map(|rc| rc.prepared.first().map(|pc| pc.block_hash)),
            )
            .collect();
        self.blocks.retain(|hash, _| named.contains(hash));
    }

    /// Moves the far round changes that the window now covers into the round books.
    fn admit_far_round_changes(&mut self) {
        let (round, window_end) = (self.round, self.round.0.saturating_add(MAX_ROUNDS_AHEAD));
        let far = std::mem::take(&mut self.far_round_changes);
        for (sender, rc) in far {
            if rc.round.0 > window_end {
                self.far_round_changes.insert(sender, rc);
            } else if rc.round >= round {
                self.round_changes
                    .entry(rc.round)
                    .or_default()
                    .insert(sender, rc);
            }
        }
    }

    fn on_decided(&mut self, block: Block, app: &mut dyn Application, out: &mut Vec<Output>) {
        match self.check_decided(block, app) {
            Ok(block) => self.commit(block, out),
            Err(e) => {
                tracing::debug!(error = %e, "decided block refused");
                self.rejections.bad_decided += 1;
            }
        }
    }

    /// The block to commit for a decided message: its header and certificate verified, and a
    /// body that matches the header — the one this node already validated for that header, or
    /// the received one once it matches the header's commitments and re-executes to them. (The
    /// block hash covers only the header, so a sender could otherwise pair a real header and
    /// certificate with another body.)
    fn check_decided(
        &mut self,
        block: Block,
        app: &mut dyn Application,
    ) -> Result<Block, ProposalError> {
        let hash = block.hash();
        let verified = self.was_verified_ahead(&block, hash);
        if !verified {
            let header = block.header();
            proposal::check_header(
                &self.params,
                &self.set,
                &self.sigs,
                &self.tip,
                header,
                |r| self.proposer_of(r),
            )?;
            let committee = self.members_at(block.sealed.seal.round);
            verify_certificate(&self.set, &committee, hash, &block.sealed.seal)?;
        }
        if self.accepted.values().any(|h| *h == hash) {
            if let Some(mut ours) = self.blocks.remove(&hash) {
                ours.sealed.seal = block.sealed.seal;
                return Ok(ours);
            }
        }
        // Always, even when verified ahead: the mark names the header and seal, and another
        // body can come under them (the batch checked the body it saw, maybe not this one).
        proposal::check_body(&block)?;
        app.validate(&block, &self.tip)
            .map_err(ProposalError::Application)?;
        Ok(block)
    }

    /// Whether `block` (hashing to `hash`) has the header and certificate that passed
    /// [`Machine::verify_ahead`] on top of this node's tip (its body is checked regardless).
    fn was_verified_ahead(&self, block: &Block, hash: BlockHash) -> bool {
        let header = block.header();
        header.height == self.tip.height.next()
            && header.parent == self.tip.hash
            && self
                .verified_ahead
                .get(&header.height)
                .is_some_and(|(h, seal)| *h == hash && *seal == block.sealed.seal)
    }

    /// Catching up: once a block commits, the buffered decided blocks that extend it are
    /// checked together — header chain, bodies, reveals and certificates, every signature in
    /// one BLS batch — instead of one pairing check after another as each height comes (each
    /// still re-executes when its turn comes). A batch that fails marks nothing: those blocks
    /// are then checked one by one as before, so a peer sending forged blocks ahead costs at
    /// most one batch per committed height.
    fn verify_ahead(&mut self) {
        let mut run: Vec<&Block> = Vec::new();
        let (mut height, mut parent) = (self.tip.height.next(), self.tip.hash);
        while let Some(block) = self
            .future_blocks
            .get(&height)
            .and_then(|held| held.iter().find(|b| b.header().parent == parent))
        {
            run.push(block);
            (height, parent) = (height.next(), block.hash());
        }
        if run.len() < 2 {
            return; // one block gains nothing from a batch
        }
        let state = ChainState {
            tip: self.tip,
            set: Arc::clone(&self.set),
        };
        let passed = verified_prefix(&self.params, &state, &run);
        self.batch_verified += passed as u64;
        self.verified_ahead = run[..passed]
            .iter()
            .map(|b| (b.header().height, (b.hash(), b.sealed.seal.clone())))
            .collect();
    }

    /// Keeps a decided block of a later height for when this node gets there. It cannot be
    /// verified yet (its committee depends on blocks not held), so the buffer is bounded by
    /// count, bytes and distance, and a height already held is not overwritten; each block is
    /// fully checked when its height comes.
    fn buffer_future_block(&mut self, block: Block) {
        let height = block.header().height;
        let distance = height.0.saturating_sub(self.height().0);
        let held = self
            .future_blocks
            .get(&height)
            .map_or(&[][..], Vec::as_slice);
        if block.header().region != self.params.region
            || distance > MAX_FUTURE_BLOCKS as u64
            || held.len() >= FUTURE_CANDIDATES
            || held.contains(&block)
            || self.verified_ahead.contains_key(&height)
        {
            return;
        }
        let size = alloy_rlp::Encodable::length(&block);
        if !self.make_room_ahead(height, size) {
            return;
        }
        self.future_block_bytes += size;
        self.future_blocks.entry(height).or_default().push(block);
    }

    /// Frees room for `size` bytes at `height` by dropping the furthest heights held beyond
    /// it: nearer blocks are needed first, so junk sent far ahead cannot keep the next block
    /// out. Nothing is dropped unless the block then fits. Whether it fits.
    fn make_room_ahead(&mut self, height: Height, size: usize) -> bool {
        let over = self
            .future_block_bytes
            .saturating_add(size)
            .saturating_sub(MAX_FUTURE_BLOCK_BYTES);
        if over == 0 {
            return true;
        }
        // Heights verified ahead are a run from the next height, and no block is taken at
        // them (see `buffer_future_block`), so everything above `height` is unverified.
        let mut freed = 0usize;
        let mut victims = Vec::new();
        for (&furthest, blocks) in self.future_blocks.range(height.next()..).rev() {
            if freed >= over {
                break;
            }
            freed = freed.saturating_add(blocks.iter().map(alloy_rlp::Encodable::length).sum());
            victims.push(furthest);
        }
        if freed < over {
            return false;
        }
        for victim in victims {
            self.take_future_blocks(victim);
        }
        true
    }

    /// Takes the buffered decided blocks of `height` (the first valid one commits; the others
    /// are then stale).
    fn take_future_blocks(&mut self, height: Height) -> Vec<Block> {
        let blocks = self.future_blocks.remove(&height).unwrap_or_default();
        let size: usize = blocks.iter().map(alloy_rlp::Encodable::length).sum();
        self.future_block_bytes = self.future_block_bytes.saturating_sub(size);
        blocks
    }

    /// Asks the driver for decided blocks from the first height not held yet: once per such
    /// height, again after [`SYNC_RETRY_MS`] without progress (the driver asks another peer
    /// each time) or after a timeout. While blocks ahead are held the next range is asked for
    /// at once, so fetching overlaps checking; nothing is asked beyond what the buffer of
    /// blocks ahead can keep.
    fn request_sync(&mut self, out: &mut Vec<Output>) {
        let from = self.sync_frontier();
        if from.0.saturating_sub(self.height().0) >= MAX_FUTURE_BLOCKS as u64 {
            return;
        }
        if let Some((asked, at)) = self.sync_requested {
            if asked == from && self.now_ms.saturating_sub(at) < SYNC_RETRY_MS {
                return;
            }
        }
        self.sync_requested = Some((from, self.now_ms));
        out.push(Output::SyncNeeded { from });
    }

    /// The first height, from the one being worked on, for which no decided block is held.
    fn sync_frontier(&self) -> Height {
        let mut height = self.height();
        while self.future_blocks.contains_key(&height) {
            height = height.next();
        }
        height
    }

    /// Outputs a final block and waits for the driver to apply it ([`Input::Applied`]).
    fn commit(&mut self, block: Block, out: &mut Vec<Output>) {
        let header = block.header();
        self.recent.insert(
            header.height,
            DecidedHeight {
                parent: header.parent,
                set: Arc::clone(&self.set),
            },
        );
        while self.recent.len() > RECENT_HEIGHTS {
            self.recent.pop_first();
        }
        self.tip = Tip::of(&block);
        let announced = &block.header().next_cn_set;
        if !announced.is_empty() {
            self.switch_cn_set(announced);
        }
        out.push(Output::Committed(Box::new(block)));
        self.reset_height();
        self.awaiting_applied = true;
        self.verified_ahead = self.verified_ahead.split_off(&self.tip.height.next());
        if self.future_blocks.contains_key(&self.tip.height.next()) {
            // Catching up: check what is held ahead, and fetch the range after it meanwhile.
            if !self.verified_ahead.contains_key(&self.tip.height.next()) {
                self.verify_ahead();
            }
            self.request_sync(out);
        }
    }

    /// The committed block is applied: start the next height, and re-feed (through `step`)
    /// the messages that arrived early and the block decided next, if held.
    fn resume(&mut self, out: &mut Vec<Output>) {
        self.awaiting_applied = false;
        // Round 0, or the round the WAL says this node had reached at this height (a node
        // restarted behind its own WAL must not vote again in rounds it has left).
        self.enter_round(self.round, out);
        self.replay.extend(std::mem::take(&mut self.next_height));
        self.next_height_bytes = 0;
        for block in self.take_future_blocks(self.height()) {
            self.replay
                .push_back(ConsensusMessage::Decided(Box::new(block)));
        }
    }

    /// Moves to the CN set a committed header announced; this node's index is found by its
    /// key ([`NOT_A_MEMBER`] when the new set leaves it out: it then only follows the chain).
    fn switch_cn_set(&mut self, keys: &[crate::crypto::bls::PublicKeyBytes]) {
        match CnSet::from_bytes(keys) {
            Ok(set) => {
                self.me = locate(&set, &self.key);
                self.set = Arc::new(set);
            }
            // Invariant: the application checked the announcement against a verified change.
            Err(e) => {
                tracing::error!(error = %e, "announced CN set does not parse; keeping the old one")
            }
        }
    }

    fn reset_height(&mut self) {
        self.round = Round(0);
        self.proposers.get_mut().clear();
        self.committee = self.set.committee(
            self.tip.mix,
            self.height(),
            Round(0),
            self.params.committee_size,
        );
        self.blocks.clear();
        self.accepted.clear();
        self.tally = Tally::default();
        self.my_votes.clear();
        self.prepared = None;
        self.certified.clear();
        self.pending_seal = None;
        self.round_changes.clear();
        self.my_round_changes.clear();
        self.far_round_changes.clear();
        self.asked_round = Round(0);
        self.proposed = None;
        self.peers_behind.clear();
        self.apply_restored();
    }
}

/// Bytes a buffered message holds: the encoded length of everything it carries (blocks,
/// round changes with their certificates and bitmaps), plus a constant for the rest.
fn message_size(msg: &ConsensusMessage) -> usize {
    use alloy_rlp::Encodable;
    const SMALL: usize = 256;
    match msg {
        ConsensusMessage::Proposal(p) => {
            p.block.length() + p.justification.iter().map(Encodable::length).sum::<usize>() + SMALL
        }
        ConsensusMessage::Decided(block) => block.length(),
        ConsensusMessage::RoundChange(rc) => rc.length() + SMALL,
        ConsensusMessage::Certificate(qc) => qc.length() + SMALL,
        ConsensusMessage::CompactProposal(c) => c.length() + SMALL,
        ConsensusMessage::Vote(_)
        | ConsensusMessage::SyncRequest(_)
        | ConsensusMessage::ProposalRequest(_) => SMALL,
    }
}
