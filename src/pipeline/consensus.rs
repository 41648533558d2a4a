//! The consensus stage: owns one CN's [`Machine`], feeds it peer messages, timers and the
//! clock, and carries out its outputs in order — WAL records made durable (one group commit
//! per step) before the broadcasts that follow them, committed blocks applied to state (then
//! [`Input::Applied`]) and handed to the persist stage, sync requests served from recent
//! blocks in memory or, further back, from the block log — so a CN that was down for any
//! length of time catches up from its peers.
//!
//! Applying a committed block fails only when the node's state cannot be read or diverges
//! from the header's commitments; the stage then stops with the error and the node halts
//! loudly rather than store divergent state.

use crate::chain::app::{now_ms, CnApp};
use crate::consensus::machine::{Application, Input, Machine, Misbehavior, Output};
use crate::consensus::wal;
use crate::link::{LinkReceiver, LinkSender};
use crate::net::sync::ChainReader;
use crate::net::{Inbound, Network};
use crate::storage::blocklog::BlockLog;
use crate::types::codec::encode_frame;
use crate::types::{Block, CnIndex, ConsensusMessage, Height, Proposal};
use alloy_primitives::{Bytes, B256};
use anyhow::Context;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Committed blocks kept in memory to answer sync requests from lagging peers.
const RECENT_BLOCKS: usize = 256;
/// Decided blocks sent per sync request (what the machine asks for at once).
const SYNC_BATCH: u64 = crate::consensus::machine::SYNC_RANGE;
/// A peer's sync requests are answered at most [`SYNC_ANSWERS`] times per this window (a
/// fixed window: up to twice that many back to back across its edge), whatever heights they
/// name: a peer cannot have this thread read its log more than 20 times a second. A lagging
/// node asks again each time the first height it lacks moves before a range has fully arrived,
/// so requests come in bursts; one answer per 50 ms, as before, refused them silently and every
/// range then waited for a round timeout. Still 320 blocks/s per asking peer on average.
const SYNC_WINDOW: Duration = Duration::from_millis(200);
/// Sync answers per peer per [`SYNC_WINDOW`].
const SYNC_ANSWERS: u32 = 4;

/// Bytes of encoded blocks one sync answer sends at most (at least one block is always sent):
/// sixteen blocks near the size limit would otherwise queue hundreds of MiB on one link.
const SYNC_ANSWER_BYTES: usize = 16 << 20;

/// Whether a sync answer that has sent `sent` bytes may add a frame of `next` bytes.
fn within_answer_budget(sent: usize, next: usize) -> bool {
    sent == 0 || sent.saturating_add(next) <= SYNC_ANSWER_BYTES
}

/// The heights a sync request from `from` is answered with (saturating: a peer's `from` is
/// any number).
pub fn sync_range(from: Height) -> std::ops::Range<Height> {
    from..Height(from.0.saturating_add(SYNC_BATCH))
}

/// Counters of one CN's consensus, read by the status line and metrics.
#[derive(Debug, Default)]
pub struct ConsensusStatus {
    pub height: AtomicU64,
    /// The highest height known decided (certificate verified): above `height - 1` while
    /// catching up.
    pub best_known: AtomicU64,
    pub round: AtomicU64,
    pub committed_txs: AtomicU64,
    pub misbehavior: AtomicU64,
    pub wal_records: AtomicU64,
    /// Votes this node cast (prepare and commit).
    pub votes_cast: AtomicU64,
    /// Decided blocks verified in batches ahead of their height while catching up.
    pub batch_verified: AtomicU64,
    /// What became of compact proposals, and of requests for this node's in full.
    pub compact: Arc<super::compact::CompactStats>,
    /// Peer messages the state machine refused, by reason.
    pub rejections: std::sync::Mutex<crate::consensus::machine::Rejections>,
    /// Hashes of the last committed blocks, for agreement checks across nodes.
    recent: std::sync::Mutex<BTreeMap<Height, crate::types::BlockHash>>,
}

impl ConsensusStatus {
    /// Heights and hashes of the most recently committed blocks.
    pub fn recent_hashes(&self) -> BTreeMap<Height, crate::types::BlockHash> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record_commit(&self, height: Height, hash: crate::types::BlockHash) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.insert(height, hash);
        while recent.len() > RECENT_BLOCKS {
            recent.pop_first();
        }
    }
}

/// Everything the consensus thread owns.
/// What the consensus stage drives: the machine's [`Application`], plus what the stage itself
/// asks of it. The CN's application ([`CnApp`]) in a node; an opaque-payload one in
/// `kaon bench consensus`.
pub trait StageApp: Application {
    /// Whether something waits to be proposed (see [`ConsensusStage::bring_proposal_forward`]).
    fn has_work(&self) -> bool;
    /// Applies a block the machine committed; an error halts the node.
    fn apply_committed(&mut self, block: &Block) -> anyhow::Result<()>;
    /// The id a compact proposal names `tx` by ([`crate::types::CompactProposal`]).
    fn tx_id(&self, tx: &Bytes) -> B256;
    /// The pooled transactions `ids` name, in order; `None` for each this node does not hold.
    fn pooled_txs(&self, ids: &[B256]) -> Vec<Option<Bytes>>;
}

impl StageApp for CnApp {
    fn has_work(&self) -> bool {
        CnApp::has_work(self)
    }

    fn apply_committed(&mut self, block: &Block) -> anyhow::Result<()> {
        Ok(self.commit(block)?)
    }

    /// The transaction's Ethereum hash, by which the pool holds it.
    fn tx_id(&self, tx: &Bytes) -> B256 {
        crate::crypto::hash::keccak256(tx)
    }

    fn pooled_txs(&self, ids: &[B256]) -> Vec<Option<Bytes>> {
        let pool = self.shared().pool.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .map(|id| pool.get(id).map(|tx| tx.tx().raw().clone()))
            .collect()
    }
}

pub struct ConsensusStage<A: StageApp = CnApp> {
    pub machine: Machine,
    pub app: A,
    pub net: Arc<Network>,
    pub wal: BlockLog,
    pub inbound: LinkReceiver<(CnIndex, ConsensusMessage)>,
    pub committed: LinkSender<Arc<Block>>,
    pub status: Arc<ConsensusStatus>,
    /// The committed chain on disk: sync requests beyond the recent blocks are served from it.
    pub chain: ChainReader,
    /// How long this node, as the next proposer, lets transactions gather once some are
    /// waiting (see [`ConsensusStage::bring_proposal_forward`]).
    pub proposal_batch: Duration,
    pub catch_up: CatchUpLog,
    /// Counts requests for decided blocks, to ask the peers in turn.
    pub sync_turn: usize,
    /// This node's proposals kept for peers, and others' compact proposals being filled.
    pub compact: super::compact::CompactProposals,
}

/// Blocks whose timestamp is older than this are being caught up on, not followed.
const BEHIND_MS: u64 = 10_000;
/// How often catching up is reported.
const CATCH_UP_LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports progress while this node commits blocks far older than its clock (after an outage):
/// height, how far behind, and the rate since the last report.
#[derive(Debug, Default)]
pub struct CatchUpLog {
    /// When and at which height the last report (or the start of catching up) was.
    last: Option<(Instant, Height)>,
}

impl CatchUpLog {
    fn committed(&mut self, header: &crate::types::Header) {
        let behind_ms = now_ms().saturating_sub(header.timestamp_ms);
        if behind_ms < BEHIND_MS {
            if self.last.take().is_some() {
                tracing::info!(height = %header.height, "caught up: following the head");
            }
            return;
        }
        let now = Instant::now();
        let (since, from) = *self.last.get_or_insert((now, header.height));
        let elapsed = now.duration_since(since);
        if elapsed >= CATCH_UP_LOG_EVERY {
            let blocks = header.height.0.saturating_sub(from.0);
            tracing::info!(
                height = %header.height,
                behind_s = behind_ms / 1000,
                blocks_per_s = (blocks as f64 / elapsed.as_secs_f64()).round(),
                "catching up"
            );
            self.last = Some((now, header.height));
        }
    }
}

/// Peer messages taken from the inbound link at once (after the one waited for).
const INBOUND_BATCH: usize = 128;

/// Orders messages that arrived together so that decided blocks come first, highest height
/// first: while catching up, the blocks ahead of this node's height are buffered before the
/// one at its height commits, and the machine then checks them in one batch (see
/// `Machine::verify_ahead`). Other messages keep their order (the network promises none).
fn in_catch_up_order(
    mut batch: Vec<(CnIndex, ConsensusMessage)>,
) -> Vec<(CnIndex, ConsensusMessage)> {
    let height_of_decided = |msg: &ConsensusMessage| match msg {
        ConsensusMessage::Decided(block) => Some(block.header().height),
        _ => None,
    };
    batch.sort_by_key(|(_, msg)| Reverse(height_of_decided(msg)));
    batch
}

/// Blocks a sync request is answered from: the recent ones in memory, older ones from disk.
struct Served {
    recent: BTreeMap<Height, Arc<Block>>,
    /// Answers per peer in its current window (when it began, how many), to refuse requests
    /// coming too fast.
    answered: std::collections::HashMap<CnIndex, (Instant, u32)>,
}

impl Served {
    /// Whether `peer` may be answered now (and counts the answer if so).
    fn admit(&mut self, peer: CnIndex, now: Instant) -> bool {
        let (since, count) = self.answered.entry(peer).or_insert((now, 0));
        if now.duration_since(*since) >= SYNC_WINDOW {
            (*since, *count) = (now, 0);
        }
        if *count >= SYNC_ANSWERS {
            return false;
        }
        *count += 1;
        true
    }
}

/// A timer this far out (about a century) stands for one that never fires.
const NEVER_S: u64 = 100 * 365 * 24 * 3600;

struct Timers {
    queue: BinaryHeap<Reverse<(Instant, u64, TimerInput)>>,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerInput {
    Proposal(Height, u32),
    Timeout(Height, u32),
}

impl Timers {
    fn push(&mut self, after_ms: u64, input: TimerInput) {
        self.seq += 1;
        let now = Instant::now();
        // A delay beyond what `Instant` can represent (a huge configured interval) means never.
        let at = now
            .checked_add(Duration::from_millis(after_ms))
            .unwrap_or(now + Duration::from_secs(NEVER_S));
        self.queue.push(Reverse((at, self.seq, input)));
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_due(&mut self) -> Option<TimerInput> {
        match self.queue.peek() {
            Some(Reverse((at, _, _))) if *at <= Instant::now() => {
                self.queue.pop().map(|Reverse((_, _, i))| i)
            }
            _ => None,
        }
    }
}

impl<A: StageApp> ConsensusStage<A> {
    /// Runs until the inbound link closes (node shutdown).
    pub fn run(mut self) -> anyhow::Result<()> {
        let span = tracing::info_span!("stage", name = "consensus");
        let _entered = span.enter();
        let mut timers = Timers {
            queue: BinaryHeap::new(),
            seq: 0,
        };
        let mut recent = Served {
            recent: BTreeMap::new(),
            answered: Default::default(),
        };
        self.step(Input::Start, &mut timers, &mut recent)?;
        self.ask_peers_ahead();
        // The height whose round-0 proposal was brought forward (once per height).
        let mut brought_forward = None;
        loop {
            let idle = self.bring_proposal_forward(&mut timers, &mut brought_forward);
            while let Some(due) = timers.pop_due() {
                let input = match due {
                    TimerInput::Proposal(height, r) => Input::ProposalDue {
                        height,
                        round: crate::types::Round(r),
                    },
                    TimerInput::Timeout(height, r) => Input::Timeout {
                        height,
                        round: crate::types::Round(r),
                    },
                };
                self.step(input, &mut timers, &mut recent)?;
            }
            let mut wait = timers
                .next_deadline()
                .map_or(Duration::from_millis(100), |d| {
                    d.saturating_duration_since(Instant::now())
                });
            if idle {
                // Look at the pool again within a batching window.
                wait = wait.min(self.proposal_batch.max(Duration::from_millis(1)));
            }
            if self.compact.is_waiting_at(self.machine.height()) {
                wait = wait.min(super::compact::FILL_RETRY);
            }
            let first = match self.inbound.recv_timeout(wait) {
                Ok(first) => Some(first),
                Err(true) => return Ok(()),
                Err(false) => None,
            };
            let mut batch: Vec<_> = first.into_iter().collect();
            batch.extend(self.inbound.drain_ready(INBOUND_BATCH));
            for (peer, msg) in in_catch_up_order(batch) {
                self.on_peer_message(peer, msg, &mut timers, &mut recent)?;
            }
            self.retry_compact(&mut timers, &mut recent)?;
        }
    }

    /// One message from authenticated peer `peer` (numbered as its link is).
    fn on_peer_message(
        &mut self,
        peer: CnIndex,
        msg: ConsensusMessage,
        timers: &mut Timers,
        recent: &mut Served,
    ) -> anyhow::Result<()> {
        match msg {
            ConsensusMessage::SyncRequest(from) => self.serve(peer, from, recent),
            ConsensusMessage::ProposalRequest(req) => {
                if let Some(p) = self.compact.answer(peer, req) {
                    let frame = encode_frame(&ConsensusMessage::Proposal(Box::new((*p).clone())));
                    self.net.send(peer, Arc::new(frame));
                }
            }
            ConsensusMessage::CompactProposal(c) => {
                let app = &self.app;
                let (machine, net) = (&self.machine, &self.net);
                let action = self.compact.receive(
                    peer,
                    *c,
                    Instant::now(),
                    |ids| app.pooled_txs(ids),
                    |c| from_its_proposer(machine, |key| net.configured_index(key), peer, c),
                );
                if let Some(action) = action {
                    self.carry_out(action, timers, recent)?;
                }
            }
            ConsensusMessage::Proposal(p) => {
                let (height, round) = (p.block.header().height, p.round);
                self.compact.received_full(peer, height, round);
                self.step(
                    Input::Message(ConsensusMessage::Proposal(p)),
                    timers,
                    recent,
                )?;
            }
            msg => self.step(Input::Message(msg), timers, recent)?,
        }
        Ok(())
    }

    /// Looks again for the transactions waiting compact proposals lack (see
    /// [`super::compact::CompactProposals::retry`]).
    fn retry_compact(&mut self, timers: &mut Timers, recent: &mut Served) -> anyhow::Result<()> {
        if !self.compact.is_waiting_at(self.machine.height()) {
            return Ok(());
        }
        let (app, machine) = (&self.app, &self.machine);
        let at = super::compact::Position {
            height: machine.height(),
            round: machine.round(),
            proposes: |cn, round| machine.proposes(cn, round),
        };
        let actions = self
            .compact
            .retry(&at, Instant::now(), |ids| app.pooled_txs(ids));
        for action in actions {
            self.carry_out(action, timers, recent)?;
        }
        Ok(())
    }

    fn carry_out(
        &mut self,
        action: super::compact::Action,
        timers: &mut Timers,
        recent: &mut Served,
    ) -> anyhow::Result<()> {
        match action {
            super::compact::Action::Deliver(p) => self.step(
                Input::Message(ConsensusMessage::Proposal(p)),
                timers,
                recent,
            ),
            super::compact::Action::Ask(peer, req) => {
                let frame = encode_frame(&ConsensusMessage::ProposalRequest(req));
                self.net.send(peer, Arc::new(frame));
                Ok(())
            }
        }
    }

    /// Broadcasts this node's proposal: compact when enabled (kept to send in full to a peer
    /// that asks), else in full.
    fn broadcast_proposal(&mut self, p: Box<Proposal>) {
        if !self.compact.enabled {
            let frame = encode_frame(&ConsensusMessage::Proposal(p));
            return self.net.broadcast(Arc::new(frame));
        }
        let compact =
            super::compact::compact(&p, |tx| self.app.tx_id(tx), |ids| self.app.pooled_txs(ids));
        let frame = encode_frame(&ConsensusMessage::CompactProposal(Box::new(compact)));
        self.net.broadcast(Arc::new(frame));
        self.compact.keep_own(Arc::from(p));
    }

    /// Responsive proposing. The machine asks for this node's round-0 proposal after the block
    /// interval, the pace of an idle chain; once transactions are waiting, the proposal is
    /// delivered after the batching window instead. Only the driver's timing changes — an
    /// early `ProposalDue` is the same input — so safety and validity do not depend on it
    /// (timestamps stay above the parent's and within the drift bound). Returns whether a
    /// round-0 proposal is still waiting idle (the pool is then looked at again soon).
    fn bring_proposal_forward(
        &self,
        timers: &mut Timers,
        brought_forward: &mut Option<Height>,
    ) -> bool {
        let height = self.machine.height();
        let soon = Instant::now() + self.proposal_batch;
        let waiting_idle = timers
            .queue
            .iter()
            .any(|Reverse((at, _, input))| *input == TimerInput::Proposal(height, 0) && *at > soon);
        if !waiting_idle || *brought_forward == Some(height) {
            return false;
        }
        if !self.app.has_work() {
            return true;
        }
        *brought_forward = Some(height);
        timers.push(
            self.proposal_batch.as_millis() as u64,
            TimerInput::Proposal(height, 0),
        );
        false
    }

    /// Feeds one input, carries out the outputs, and — after each committed block is applied —
    /// tells the machine so (which may commit the next buffered block, and so on).
    fn step(
        &mut self,
        input: Input,
        timers: &mut Timers,
        recent: &mut Served,
    ) -> anyhow::Result<()> {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            if let Some(height) = self.step_once(input, timers, recent)? {
                next = Some(Input::Applied { height });
            }
        }
        self.status
            .height
            .store(self.machine.height().0, Ordering::Relaxed);
        (self.compact).advance(self.machine.height(), self.machine.round());
        self.status
            .best_known
            .store(self.machine.best_known_height().0, Ordering::Relaxed);
        self.status
            .round
            .store(u64::from(self.machine.round().0), Ordering::Relaxed);
        self.status
            .batch_verified
            .store(self.machine.batch_verified(), Ordering::Relaxed);
        *self
            .status
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.machine.rejections().clone();
        Ok(())
    }

    /// One machine step; returns the height of the block it committed and this node applied.
    fn step_once(
        &mut self,
        input: Input,
        timers: &mut Timers,
        recent: &mut Served,
    ) -> anyhow::Result<Option<Height>> {
        let outputs = self.machine.step(input, now_ms(), &mut self.app);
        let mut applied = None;
        // Group commit: every WAL record of this step in one durable batch, before any
        // message of this step leaves the node.
        let records: Vec<Vec<u8>> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Persist(entry) => Some(wal::encode(entry)),
                _ => None,
            })
            .collect();
        if !records.is_empty() {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            self.wal.append_batch(&refs)?;
            let votes = outputs
                .iter()
                .filter(|o| {
                    matches!(
                        o,
                        Output::Persist(crate::consensus::machine::WalEntry::Voted { .. })
                    )
                })
                .count();
            self.status
                .votes_cast
                .fetch_add(votes as u64, Ordering::Relaxed);
            self.status
                .wal_records
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        for output in outputs {
            match output {
                Output::Persist(_) => {}
                Output::Broadcast(ConsensusMessage::Proposal(p)) => self.broadcast_proposal(p),
                Output::Broadcast(msg) => self.net.broadcast(Arc::new(encode_frame(&msg))),
                // Numbered in the machine's current set, which a CN-set change renumbers:
                // the network finds the peer by key.
                Output::Send { to, message } => {
                    let frame = Arc::new(encode_frame(&message));
                    match self.machine.cn_set().key(to) {
                        Ok(key) => self.net.send_to_key(key, frame),
                        Err(_) => self.net.broadcast(frame),
                    }
                }
                Output::ScheduleProposal {
                    height,
                    round,
                    after_ms,
                } => timers.push(after_ms, TimerInput::Proposal(height, round.0)),
                Output::ScheduleTimeout {
                    height,
                    round,
                    after_ms,
                } => timers.push(after_ms, TimerInput::Timeout(height, round.0)),
                Output::Committed(block) => {
                    applied = Some(block.header().height);
                    self.on_committed(*block, &mut recent.recent)?
                }
                Output::Misbehavior(m) => self.on_misbehavior(m),
                Output::SyncNeeded { from } => {
                    // One peer per request, the next one each time: a silent or slow peer
                    // costs one retry, and ranges fetched back to back come from different
                    // peers instead of every peer sending the same blocks.
                    self.sync_turn = self.sync_turn.wrapping_add(1);
                    let request = encode_frame(&ConsensusMessage::SyncRequest(from));
                    self.net.send_in_turn(self.sync_turn, Arc::new(request));
                }
                // Numbered in the current set; answered on the peer's configured link (a CN
                // that joined later has none there: its number in the current set is tried).
                Output::PeerBehind { peer, height } => {
                    let key = self.machine.cn_set().key(peer).ok();
                    let link = key.and_then(|k| self.net.configured_index(k));
                    self.serve(link.unwrap_or(peer), height, recent)
                }
            }
        }
        Ok(applied)
    }

    fn on_committed(
        &mut self,
        block: Block,
        recent: &mut BTreeMap<Height, Arc<Block>>,
    ) -> anyhow::Result<()> {
        let height = block.header().height;
        self.app
            .apply_committed(&block)
            .with_context(|| format!("applying committed block {height}: halting this node"))?;
        if !block.header().next_cn_set.is_empty() {
            // Peers of the new set may now connect (a joining CN dials us).
            self.net.learn_set(Arc::clone(self.machine.cn_set()));
        }
        let txs: usize = block.segments.iter().map(|s| s.txs.len()).sum();
        self.status
            .committed_txs
            .fetch_add(txs as u64, Ordering::Relaxed);
        self.status
            .record_commit(block.header().height, block.hash());
        self.catch_up.committed(block.header());
        let block = Arc::new(block);
        recent.insert(block.header().height, Arc::clone(&block));
        while recent.len() > RECENT_BLOCKS {
            recent.pop_first();
        }
        self.committed.send(block)?;
        Ok(())
    }

    /// Asks f + 1 peers (at least one of them honest), once at start, for the decided blocks
    /// from the height this node works on: peers ahead answer with them (it was down, or starts
    /// on an old datadir), the others with silence. Otherwise a node behind a stalled region
    /// (no quorum, so nobody proposes and peers' round timers may be long) would learn that it
    /// is behind only from a peer's next message or its own round timeout. Not every peer: in
    /// a large set, every peer's 16-block answer would overflow this node's inbound links.
    /// Queued until the links are up.
    fn ask_peers_ahead(&mut self) {
        let request = Arc::new(encode_frame(&ConsensusMessage::SyncRequest(
            self.machine.height(),
        )));
        let faulty = self.machine.cn_set().len().saturating_sub(1) / 3;
        for _ in 0..=faulty {
            self.sync_turn = self.sync_turn.wrapping_add(1);
            self.net.send_in_turn(self.sync_turn, Arc::clone(&request));
        }
    }

    fn on_misbehavior(&self, m: Misbehavior) {
        self.status.misbehavior.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(?m, "CN misbehaviour observed");
    }

    /// Sends `peer` (numbered as its link is: in the configured set) the decided blocks from
    /// `from` on: from memory when recent, else from the block log (a peer that was down for
    /// long catches up from any distance).
    fn serve(&self, peer: CnIndex, from: Height, served: &mut Served) {
        // A request for heights this node has not decided costs nothing: answered by silence,
        // and it does not use up the peer's turn.
        if from >= self.machine.height() {
            return;
        }
        if !served.admit(peer, Instant::now()) {
            return;
        }
        let mut sent = 0usize;
        for height in (from.0..sync_range(from).end.0).map(Height) {
            if height >= self.machine.height() {
                break;
            }
            let block = match served.recent.get(&height) {
                Some(block) => Arc::clone(block),
                None => match self.chain.block_at(height) {
                    Ok(Some(block)) => Arc::new(block),
                    // Committed but not yet persisted (or pruned): nothing more to send.
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%height, error = %e, "cannot read a block to serve");
                        break;
                    }
                },
            };
            let msg = ConsensusMessage::Decided(Box::new((*block).clone()));
            let frame = encode_frame(&msg);
            if !within_answer_budget(sent, frame.len()) {
                break; // the peer asks again from the first height it lacks
            }
            sent += frame.len();
            self.net.send(peer, Arc::new(frame));
        }
    }
}

/// Whether compact proposal `c`, received on `peer`'s link, may be filled and acted on: it is
/// for the machine's current height from that round's proposer (a round the machine still
/// takes proposals for) or for the next height, came from the link of the CN it names as
/// proposer, and carries that CN's valid signature (checked through the machine's signature
/// cache, so the proposal's own check later costs nothing more). The next height's proposer
/// is not known yet (it depends on the block before): its signature is checked against the
/// current CN set, and its round and proposer once that height is current.
fn from_its_proposer(
    machine: &Machine,
    link_of: impl Fn(&crate::crypto::bls::PublicKey) -> Option<CnIndex>,
    peer: CnIndex,
    c: &crate::types::CompactProposal,
) -> bool {
    let height = c.sealed.header.height;
    let current = height == machine.height();
    if !current && height != machine.height().next() {
        return false;
    }
    if current && !machine.proposes(c.proposer, c.round) {
        return false;
    }
    // The next height starts at round 0; its rounds are bounded as the machine bounds rounds
    // ahead, so a member cannot make this node check a signature per round number.
    if !current && c.round.0 > crate::consensus::machine::MAX_ROUNDS_AHEAD {
        return false;
    }
    let Ok(key) = machine.cn_set().key(c.proposer) else {
        return false;
    };
    if link_of(key) != Some(peer) {
        return false;
    }
    let vote = crate::types::Vote::signing_message(
        crate::types::VoteKind::Prepare,
        height,
        c.round,
        c.sealed.hash(),
    );
    machine.is_signed_by(c.proposer, &vote, &c.signature)
}

/// Routes authenticated peer messages: consensus traffic to the consensus stage, transaction
/// gossip to ingress. Never blocks the network: full links drop and count.
pub fn route_inbound(
    inbound: LinkReceiver<(CnIndex, Inbound)>,
    consensus: LinkSender<(CnIndex, ConsensusMessage)>,
    ingress: LinkSender<super::sigverify::RawTxBatch>,
    dropped: Arc<AtomicU64>,
) {
    while let Some((peer, msg)) = inbound.recv() {
        let delivered = match msg {
            Inbound::Consensus(m) => consensus.try_send((peer, m)).is_ok(),
            Inbound::Txs(batch) => ingress.try_send(batch.txs).is_ok(),
        };
        if !delivered {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::link;
    use crate::types::{BlockHash, TxBatch};
    use alloy_primitives::B256;

    /// A compact proposal for `height`, `round` naming CN `proposer`, signed with `signer`'s key.
    fn compact_by(
        height: u64,
        round: u32,
        proposer: u32,
        signer: &crate::crypto::bls::SecretKey,
    ) -> crate::types::CompactProposal {
        let block = crate::net::sync::tests::block(height, BlockHash(B256::ZERO), 0);
        let round = crate::types::Round(round);
        let vote = crate::types::Vote::signing_message(
            crate::types::VoteKind::Prepare,
            Height(height),
            round,
            block.hash(),
        );
        crate::types::CompactProposal {
            round,
            proposer: CnIndex(proposer),
            signature: signer.sign(&vote).to_bytes(),
            sealed: block.sealed,
            segments: Vec::new(),
            justification: Vec::new(),
            carried: Vec::new(),
        }
    }

    #[test]
    fn a_compact_proposal_is_acted_on_only_from_its_proposers_link_signed_and_near_the_tip() {
        use crate::consensus::machine::{Params, Tip, VoteRouting};
        use crate::crypto::bls::SecretKey;
        use crate::types::Round;
        let keys: Vec<SecretKey> = (1..=4u8)
            .map(|s| SecretKey::from_seed(&[s; 32]).unwrap())
            .collect();
        let public = keys.iter().map(|k| k.public_key()).collect();
        let set = Arc::new(crate::consensus::selection::CnSet::new(public).unwrap());
        let params = Params {
            region: crate::types::ChainId(1000),
            committee_size: 4,
            block_interval_ms: 1000,
            base_timeout_ms: 1000,
            max_timeout_ms: 10_000,
            votes: VoteRouting::Leader,
        };
        let tip = Tip {
            height: Height(0),
            hash: BlockHash(B256::ZERO),
            mix: B256::ZERO,
            timestamp_ms: 0,
        };
        let sigs = Arc::new(crate::consensus::verifier::SigCache::new());
        let machine = Machine::new(params, CnIndex(0), keys[0].clone(), set.clone(), sigs, tip);
        let link_of = |key: &crate::crypto::bls::PublicKey| {
            let i = set.keys().iter().position(|k| k == key)?;
            Some(CnIndex(i as u32))
        };
        let ok = |c: &crate::types::CompactProposal, peer: u32| {
            from_its_proposer(&machine, link_of, CnIndex(peer), c)
        };
        let p = (0..4)
            .find(|&i| machine.proposes(CnIndex(i), Round(0)))
            .expect("round 0 has a proposer");
        let other = (p + 1) % 4;
        let by = |h, r, cn: u32| compact_by(h, r, cn, &keys[cn as usize]);
        assert!(ok(&by(1, 0, p), p), "current height, its proposer");
        assert!(
            ok(&by(2, 0, other), other),
            "next height: its proposer is not known yet"
        );
        assert!(!ok(&by(3, 0, p), p), "two heights ahead");
        assert!(!ok(&by(1, 0, p), other), "relayed by another CN");
        assert!(
            !ok(&compact_by(1, 0, p, &keys[other as usize]), p),
            "signed by another key"
        );
        assert!(!ok(&by(1, 0, other), other), "not the round's proposer");
        // A round past the window whose proposer is `p`: refused for the window alone.
        let beyond = (17..10_000)
            .find(|&r| set.committee(B256::ZERO, Height(1), Round(r), 4).proposer == CnIndex(p))
            .expect("p proposes some round");
        let last = set
            .committee(B256::ZERO, Height(1), Round(16), 4)
            .proposer
            .0;
        assert!(ok(&by(1, 16, last), last), "the window's last round");
        assert!(!ok(&by(1, beyond, p), p), "a round beyond the window");
        assert!(
            !ok(&compact_by(2, 0, other, &keys[p as usize]), other),
            "next height, wrong key"
        );
        assert!(
            !ok(&by(2, 17, other), other),
            "next height, a round beyond the window"
        );
    }

    fn decided(height: u64) -> ConsensusMessage {
        let block = crate::net::sync::tests::block(height, BlockHash(B256::ZERO), 0);
        ConsensusMessage::Decided(Box::new(block))
    }

    #[test]
    fn a_sync_answer_stops_at_its_byte_budget_but_always_sends_one_block() {
        assert!(within_answer_budget(0, usize::MAX), "one block always goes");
        assert!(within_answer_budget(1, SYNC_ANSWER_BYTES - 1));
        assert!(!within_answer_budget(1, SYNC_ANSWER_BYTES));
        assert!(!within_answer_budget(SYNC_ANSWER_BYTES, usize::MAX));
    }

    #[test]
    fn a_peer_gets_a_few_sync_answers_per_window_and_more_once_it_has_passed() {
        let mut served = Served {
            recent: BTreeMap::new(),
            answered: Default::default(),
        };
        let (asker, other) = (CnIndex(1), CnIndex(2));
        let start = Instant::now();
        for _ in 0..SYNC_ANSWERS {
            assert!(
                served.admit(asker, start),
                "the ranges a node keeps in flight"
            );
        }
        assert!(
            !served.admit(asker, start + SYNC_WINDOW / 2),
            "one more in the window"
        );
        assert!(served.admit(other, start), "each peer has its own window");
        assert!(served.admit(asker, start + SYNC_WINDOW), "a new window");
        assert_eq!(
            served.answered.len(),
            2,
            "one entry per peer, whatever it asks"
        );
    }

    #[test]
    fn a_sync_range_saturates_at_the_largest_height() {
        assert_eq!(sync_range(Height(5)), Height(5)..Height(5 + SYNC_BATCH));
        let last = sync_range(Height(u64::MAX));
        assert_eq!(last, Height(u64::MAX)..Height(u64::MAX));
    }

    #[test]
    fn decided_blocks_come_first_highest_first_and_the_rest_keep_their_order() {
        let batch = vec![
            (CnIndex(0), ConsensusMessage::SyncRequest(Height(9))),
            (CnIndex(1), decided(3)),
            (CnIndex(2), ConsensusMessage::SyncRequest(Height(1))),
            (CnIndex(3), decided(7)),
            (CnIndex(1), decided(5)),
        ];
        let peers: Vec<u32> = in_catch_up_order(batch).iter().map(|(p, _)| p.0).collect();
        assert_eq!(peers, vec![3, 1, 1, 0, 2]);
    }

    #[test]
    fn timers_fire_in_deadline_order_and_not_before() {
        let mut timers = Timers {
            queue: BinaryHeap::new(),
            seq: 0,
        };
        timers.push(60_000, TimerInput::Timeout(Height(1), 0));
        timers.push(0, TimerInput::Proposal(Height(1), 1));
        timers.push(0, TimerInput::Proposal(Height(1), 0));
        // Same deadline: the one pushed first fires first.
        assert_eq!(timers.pop_due(), Some(TimerInput::Proposal(Height(1), 1)));
        assert_eq!(timers.pop_due(), Some(TimerInput::Proposal(Height(1), 0)));
        assert_eq!(timers.pop_due(), None, "a minute away is not due");
        assert!(timers.next_deadline().is_some_and(|at| at > Instant::now()));
    }

    #[test]
    fn the_router_drops_and_counts_what_a_full_link_cannot_take() {
        let (net, inbound) = link("net_router", 8);
        let (consensus, consensus_rx) = link("net_consensus", 1);
        let (ingress, ingress_rx) = link("ingress", 1);
        let dropped = Arc::new(AtomicU64::new(0));
        for height in 0..3 {
            net.send((CnIndex(1), Inbound::Consensus(decided(height))))
                .unwrap();
        }
        net.send((CnIndex(2), Inbound::Txs(TxBatch { txs: Vec::new() })))
            .unwrap();
        drop(net);
        route_inbound(inbound, consensus, ingress, Arc::clone(&dropped));
        assert_eq!(dropped.load(Ordering::Relaxed), 2, "two of three blocks");
        assert!(matches!(consensus_rx.recv(), Some((CnIndex(1), _))));
        assert_eq!(ingress_rx.recv(), Some(Vec::new()));
    }
}
