//! The consensus stage: owns one CN's [`Machine`], feeds it peer messages and timers, and
//! carries out its outputs in order — WAL records made durable (one group commit per step)
//! before the broadcasts that follow them, committed blocks applied to state and handed to the
//! persist stage, sync requests served from recent blocks.

use super::link::{LinkReceiver, LinkSender};
use crate::consensus::machine::{Input, Machine, Misbehavior, Output};
use crate::consensus::wal;
use crate::net::{Inbound, Network};
use crate::node::app::CnApp;
use crate::storage::blocklog::BlockLog;
use crate::types::codec::encode_frame;
use crate::types::{Block, CnIndex, ConsensusMessage, Height};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Committed blocks kept in memory to answer sync requests from lagging peers.
const RECENT_BLOCKS: usize = 256;
/// Decided blocks sent per sync request.
const SYNC_BATCH: u64 = 16;

/// Counters of one CN's consensus, read by the status line and metrics.
#[derive(Debug, Default)]
pub struct ConsensusStatus {
    pub height: AtomicU64,
    pub round: AtomicU64,
    pub committed_txs: AtomicU64,
    pub misbehavior: AtomicU64,
    pub wal_records: AtomicU64,
    /// Votes this node cast (prepare and commit).
    pub votes_cast: AtomicU64,
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
pub struct ConsensusStage {
    pub machine: Machine,
    pub app: CnApp,
    pub net: Arc<Network>,
    pub wal: BlockLog,
    pub inbound: LinkReceiver<(CnIndex, ConsensusMessage)>,
    pub committed: LinkSender<Arc<Block>>,
    pub status: Arc<ConsensusStatus>,
}

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
        self.queue.push(Reverse((
            Instant::now() + Duration::from_millis(after_ms),
            self.seq,
            input,
        )));
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

impl ConsensusStage {
    /// Runs until the inbound link closes (node shutdown).
    pub fn run(mut self) -> anyhow::Result<()> {
        let span = tracing::info_span!("stage", name = "consensus");
        let _entered = span.enter();
        let mut timers = Timers {
            queue: BinaryHeap::new(),
            seq: 0,
        };
        let mut recent: BTreeMap<Height, Arc<Block>> = BTreeMap::new();
        self.step(Input::Start, &mut timers, &mut recent)?;
        loop {
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
            let wait = timers
                .next_deadline()
                .map_or(Duration::from_millis(100), |d| {
                    d.saturating_duration_since(Instant::now())
                });
            match self.inbound.recv_timeout(wait) {
                Ok((peer, ConsensusMessage::SyncRequest(from))) => self.serve(peer, from, &recent),
                Ok((_, msg)) => self.step(Input::Message(msg), &mut timers, &mut recent)?,
                Err(true) => return Ok(()),
                Err(false) => {}
            }
        }
    }

    fn step(
        &mut self,
        input: Input,
        timers: &mut Timers,
        recent: &mut BTreeMap<Height, Arc<Block>>,
    ) -> anyhow::Result<()> {
        let outputs = self.machine.step(input, &mut self.app);
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
                Output::Broadcast(msg) => self.net.broadcast(Arc::new(encode_frame(&msg))),
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
                Output::Committed(block) => self.on_committed(*block, recent)?,
                Output::Misbehavior(m) => self.on_misbehavior(m),
                Output::SyncNeeded { from } => self
                    .net
                    .broadcast(Arc::new(encode_frame(&ConsensusMessage::SyncRequest(from)))),
                Output::PeerBehind { peer, height } => self.serve(peer, height, recent),
            }
        }
        self.status
            .height
            .store(self.machine.height().0, Ordering::Relaxed);
        self.status
            .round
            .store(u64::from(self.machine.round().0), Ordering::Relaxed);
        *self
            .status
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.machine.rejections().clone();
        Ok(())
    }

    fn on_committed(
        &mut self,
        block: Block,
        recent: &mut BTreeMap<Height, Arc<Block>>,
    ) -> anyhow::Result<()> {
        self.app.commit(&block)?;
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
        let block = Arc::new(block);
        recent.insert(block.header().height, Arc::clone(&block));
        while recent.len() > RECENT_BLOCKS {
            recent.pop_first();
        }
        self.committed.send(block)?;
        Ok(())
    }

    fn on_misbehavior(&self, m: Misbehavior) {
        self.status.misbehavior.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(?m, "CN misbehaviour observed");
    }

    /// Sends `peer` the decided blocks from `from` on that this node still holds.
    fn serve(&self, peer: CnIndex, from: Height, recent: &BTreeMap<Height, Arc<Block>>) {
        for block in recent
            .range(from..Height(from.0 + SYNC_BATCH))
            .map(|(_, b)| b)
        {
            let msg = ConsensusMessage::Decided(Box::new((**block).clone()));
            self.net.send(peer, Arc::new(encode_frame(&msg)));
        }
    }
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
