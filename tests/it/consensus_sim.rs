//! Deterministic simulation of the BFT state machine: a seeded network with latency,
//! reordering, loss and a partition before GST; Byzantine CNs (silent, equivocating
//! proposer, double voter, voter for invalid blocks, replayer of old messages, sender of
//! decided blocks with forged bodies, proposer stamping far-future timestamps); and honest
//! nodes that crash and restart from their encoded WAL.
//!
//! The application checks what a real one does: a block is validated only on the parent it
//! has applied, and a committed block's body must match its header. Invariants checked on
//! every seed: no two honest nodes commit different blocks at one height (so every honest
//! chain is a prefix of another), every honest node applies only bodies that match their
//! headers, every honest node reaches the target height after the network heals, and a
//! seed run twice gives the same digest of everything the nodes output. A failing seed
//! prints itself; rerun it alone with
//! `KAON_SIM_SEED=<seed> cargo test --test it consensus_sim -- --nocapture`.
//! `KAON_SIM_SEEDS=<n>` runs seeds 0..n (the soak), `KAON_SIM_SEEDS=<a>..<b>` a range.

use alloy_primitives::Bytes;
use kaon::consensus::machine::{
    locate, Application, GotExpected, Input, InvalidBlock, Machine, Output, Params, Tip,
    VoteRouting, WalEntry,
};
use kaon::consensus::proposal::BlockBody;
use kaon::consensus::selection::CnSet;
use kaon::consensus::verifier::SigCache;
use kaon::crypto::bls::{PublicKeyBytes, SecretKey};
use kaon::crypto::hash::sha256;
use kaon::types::{
    Block, BlockHash, ChainId, CnIndex, ConsensusMessage, Height, Proposal, Segment, Vote, VoteKind,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

/// Servicechain id whose presence makes a block invalid for honest applications.
const POISON_CHAIN: ChainId = ChainId(0xbad);
/// Round-0 timeout of the simulated nodes.
const BASE_TIMEOUT_MS: u64 = 300;
/// Heights every honest node must reach.
const TARGET_HEIGHT: u64 = 3;
/// Virtual time after GST within which the target must be reached.
const LIVENESS_WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behavior {
    Honest,
    Silent,
    EquivocatingProposer,
    DoubleVoter,
    InvalidVoter,
    Replayer,
    /// Sends every decided block it relays with another body under the real header and seal.
    BodyForger,
    /// Stamps its proposals at the end of time.
    FutureStamper,
    /// Leaves its prepared certificate out of its round changes (re-signed without it).
    LockHider,
    /// Claims its prepared certificate is of a later round than the quorum signed.
    CertForger,
    /// As proposer after round 0, proposes a fresh block even when its justification carries
    /// a prepared certificate (the lock it must re-propose).
    LockIgnorer,
}

const BYZANTINE: [Behavior; 10] = [
    Behavior::LockHider,
    Behavior::CertForger,
    Behavior::LockIgnorer,
    Behavior::Silent,
    Behavior::EquivocatingProposer,
    Behavior::DoubleVoter,
    Behavior::InvalidVoter,
    Behavior::Replayer,
    Behavior::BodyForger,
    Behavior::FutureStamper,
];

/// The simulated application: builds one-transaction blocks, refuses poisoned ones, and checks
/// what a real application relies on — validation happens only on the applied parent, and a
/// committed block extends the applied tip with a body matching its header.
struct SimApp {
    accept_anything: bool,
    poison: bool,
    /// The last block applied (genesis at first).
    tip: Tip,
    /// The CN set in force after `tip`.
    set: Vec<PublicKeyBytes>,
    /// The height whose block announces a renumbered CN set (every member moves down one
    /// place), taking effect at the next height.
    set_change_at: Option<Height>,
    /// Bytes of padding in each built transaction (large blocks for memory tests).
    pad: usize,
    /// Blocks validated: each one an execution in a real application.
    validations: u64,
}

impl SimApp {
    fn new(behavior: Behavior, tip: Tip, set: &CnSet, set_change_at: Option<Height>) -> Self {
        Self {
            accept_anything: behavior == Behavior::InvalidVoter,
            poison: behavior == Behavior::InvalidVoter,
            tip,
            set: set.keys().iter().map(|k| k.to_bytes()).collect(),
            set_change_at,
            pad: 0,
            validations: 0,
        }
    }

    /// An honest application at genesis of an `n`-CN network that never changes its CN set.
    fn honest(n: usize) -> Self {
        let set = CnSet::new(keys(n).iter().map(SecretKey::public_key).collect()).unwrap();
        Self::new(Behavior::Honest, genesis(), &set, None)
    }

    /// The CN set the block of `height` must announce (empty: none).
    fn announcement(&self, height: Height) -> Vec<PublicKeyBytes> {
        if self.set_change_at != Some(height) {
            return Vec::new();
        }
        let mut renumbered = self.set.clone();
        renumbered.rotate_left(1);
        renumbered
    }

    /// Moves the tip (and the CN set, when the block announces one) to `block`.
    fn follow(&mut self, block: &Block) {
        let announced = &block.header().next_cn_set;
        if !announced.is_empty() {
            self.set = announced.clone();
        }
        self.tip = Tip::of(block);
    }

    /// Applies a committed block, refusing one the machine should never have committed.
    fn commit(&mut self, block: &Block) -> Result<(), String> {
        let header = block.header();
        if header.parent != self.tip.hash {
            return Err(format!(
                "applied block {} on the wrong parent",
                header.height
            ));
        }
        kaon::consensus::proposal::check_body(block).map_err(|e| {
            format!(
                "committed block {} whose body does not match its header: {e}",
                header.height
            )
        })?;
        self.follow(block);
        Ok(())
    }
}

impl Application for SimApp {
    fn build(&mut self, height: Height, parent: &Tip, _timestamp_ms: u64) -> BlockBody {
        let chain_id = if self.poison {
            POISON_CHAIN
        } else {
            ChainId(1)
        };
        let mut tx =
            sha256(&[&height.to_be_bytes()[..], parent.hash.0.as_slice()].concat()).to_vec();
        tx.resize(tx.len() + self.pad, 0);
        let tx = Bytes::from(tx);
        BlockBody {
            next_cn_set: self.announcement(height),
            ..BlockBody::ordering_only(Segment {
                chain_id,
                txs: vec![tx],
            })
        }
    }

    fn validate(&mut self, block: &Block, parent: &Tip) -> Result<(), InvalidBlock> {
        self.validations += 1;
        if parent.hash != self.tip.hash {
            return Err(InvalidBlock::NotOnTip {
                height: block.header().height,
                parent: GotExpected {
                    got: parent.hash,
                    expected: self.tip.hash,
                },
            });
        }
        if self.accept_anything {
            return Ok(());
        }
        if block.segments.iter().any(|s| s.chain_id == POISON_CHAIN) {
            return Err(InvalidBlock::UnregisteredChain(POISON_CHAIN));
        }
        let announced = self.announcement(block.header().height);
        if block.header().next_cn_set != announced {
            return Err(InvalidBlock::UnexpectedCnSet {
                keys: GotExpected {
                    got: block.header().next_cn_set.len(),
                    expected: announced.len(),
                },
            });
        }
        Ok(())
    }
}

struct Node {
    machine: Machine,
    app: SimApp,
    behavior: Behavior,
    key: SecretKey,
    chain: Vec<Block>,
    /// What the node made durable, through the real WAL encoding.
    wal: Vec<Vec<u8>>,
    /// Crashed and not yet restarted: everything sent to it is lost.
    down: bool,
    /// Its cache of verified signatures (shared by all nodes unless a test measures cost).
    sigs: Arc<SigCache>,
    /// Signature claims its machine has checked (BLS verifications, cache misses only).
    checks: u64,
}

enum Event {
    Deliver { to: usize, msg: ConsensusMessage },
    Input { to: usize, input: Input },
    Sync { to: usize, from: Height },
    Crash { to: usize },
    Restart { to: usize },
}

/// The scenario a seed draws.
#[derive(Debug, Clone)]
struct Scenario {
    n: usize,
    behaviors: Vec<Behavior>,
    max_latency_ms: u64,
    /// Share of messages delayed by up to several timeouts before GST.
    stragglers: f64,
    loss: f64,
    gst_ms: u64,
    /// Nodes cut off from the rest until GST.
    partition: Vec<usize>,
    /// Honest nodes that crash at `at` ms and restart `down_ms` later from their WAL.
    crashes: Vec<Crash>,
    committee_size: usize,
    /// The height whose block renumbers the CN set, if any.
    set_change_at: Option<Height>,
    /// Where the nodes send their votes.
    votes: VoteRouting,
}

impl Scenario {
    /// `n` honest CNs on a network that loses nothing and delivers within a millisecond.
    fn calm(n: usize, committee_size: usize, votes: VoteRouting) -> Self {
        Self {
            n,
            behaviors: vec![Behavior::Honest; n],
            max_latency_ms: 1,
            stragglers: 0.0,
            loss: 0.0,
            gst_ms: 0,
            partition: Vec::new(),
            crashes: Vec::new(),
            committee_size,
            set_change_at: None,
            votes,
        }
    }

    fn params(&self) -> Params {
        Params {
            votes: self.votes,
            ..params_for(self.committee_size)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Crash {
    node: usize,
    at: u64,
    down_ms: u64,
}

impl Scenario {
    fn draw(n: usize, f: usize, committee_size: usize, rng: &mut StdRng) -> Self {
        // Exactly f Byzantine nodes, each with its own behaviour.
        let mut behaviors = vec![Behavior::Honest; n];
        let mut order: Vec<usize> = (0..n).collect();
        for i in 0..f {
            let j = rng.gen_range(i..n);
            order.swap(i, j);
            behaviors[order[i]] = BYZANTINE[rng.gen_range(0..BYZANTINE.len())];
        }
        let partition = if rng.gen_bool(0.5) {
            (0..n).filter(|_| rng.gen_bool(0.4)).collect()
        } else {
            Vec::new()
        };
        // One seed in 25 has a long asynchronous period (minutes) before GST.
        let gst_ms = if rng.gen_bool(0.04) {
            rng.gen_range(30_000..180_000)
        } else {
            rng.gen_range(0..3_000)
        };
        // Up to two honest nodes crash and restart, at staggered times.
        let honest: Vec<usize> = (0..n)
            .filter(|&i| behaviors[i] == Behavior::Honest)
            .collect();
        // Every crashed node is back by the middle of the liveness window after GST (a node
        // still down at the deadline could not be expected to have caught up).
        let crashes = (0..rng.gen_range(0..=2))
            .map(|_| {
                let node = honest[rng.gen_range(0..honest.len())];
                let at = rng.gen_range(0..gst_ms + 1_000);
                let down_ms = rng.gen_range(1..(gst_ms / 2).max(4 * BASE_TIMEOUT_MS));
                let back_by = gst_ms + LIVENESS_WINDOW_MS / 2;
                Crash {
                    node,
                    at,
                    down_ms: down_ms.min(back_by.saturating_sub(at)).max(1),
                }
            })
            .collect();
        Self {
            n,
            behaviors,
            max_latency_ms: rng.gen_range(1..60),
            stragglers: if rng.gen_bool(0.5) {
                rng.gen_range(0.0..0.4)
            } else {
                0.0
            },
            loss: if rng.gen_bool(0.5) {
                rng.gen_range(0.0..0.3)
            } else {
                0.0
            },
            gst_ms,
            partition,
            crashes,
            committee_size,
            set_change_at: rng
                .gen_bool(0.5)
                .then(|| Height(rng.gen_range(1..TARGET_HEIGHT))),
            // Mostly the default pattern; all-to-all keeps its coverage.
            votes: if rng.gen_bool(0.25) {
                VoteRouting::AllToAll
            } else {
                VoteRouting::Leader
            },
        }
    }
}

struct Sim {
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    nodes: Vec<Node>,
    scenario: Scenario,
    /// Every message sent so far, for the replayer.
    sent: Vec<ConsensusMessage>,
    stats: SimStats,
    /// Blocks proposed at each height and round so far (the double voter's second choices).
    proposed: BTreeMap<(Height, kaon::types::Round), Vec<BlockHash>>,
    /// Digest of every output of every node, in order (the determinism check).
    digest: sha2::Sha256,
}

/// What happened in a run, so the suite can check its adversaries actually did something.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SimStats {
    misbehavior_reports: u64,
    round_changes: u64,
    syncs: u64,
    restarts: u64,
    forged_bodies: u64,
    future_stamps: u64,
    /// Round changes or proposals that lied about a lock.
    lock_lies: u64,
    /// Second votes for a real competing block of the same round.
    competing_votes: u64,
    /// Blocks committed by honest nodes that renumbered the CN set.
    set_changes: u64,
    /// Consensus messages honest nodes sent (one per recipient) and their bytes on the wire.
    messages: u64,
    bytes: u64,
    /// Digest of all outputs of the run.
    digest: [u8; 32],
}

fn params() -> Params {
    params_for(100)
}

fn params_for(committee_size: usize) -> Params {
    Params {
        region: ChainId(1000),
        committee_size,
        block_interval_ms: 10,
        base_timeout_ms: BASE_TIMEOUT_MS,
        max_timeout_ms: 5_000,
        votes: Default::default(),
    }
}

fn genesis() -> Tip {
    Tip {
        height: Height(0),
        hash: BlockHash(sha256(b"genesis")),
        mix: sha256(b"mix"),
        timestamp_ms: 0,
    }
}

fn keys(n: usize) -> Vec<SecretKey> {
    (0..n)
        .map(|i| SecretKey::from_seed(sha256(format!("sim-cn-{i}").as_bytes()).as_slice()).unwrap())
        .collect()
}

impl Sim {
    fn new(seed: u64, scenario: Scenario, keys: &[SecretKey], sigs: &Arc<SigCache>) -> Self {
        Self::with_caches(seed, scenario, keys, |_| Arc::clone(sigs))
    }

    /// A network whose node `i` verifies signatures through `cache(i)`.
    fn with_caches(
        seed: u64,
        scenario: Scenario,
        keys: &[SecretKey],
        cache: impl Fn(usize) -> Arc<SigCache>,
    ) -> Self {
        let caches: Vec<Arc<SigCache>> = (0..scenario.n).map(cache).collect();
        let set = Arc::new(CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap());
        let (params, genesis) = (scenario.params(), genesis());
        let nodes = (0..scenario.n)
            .map(|i| {
                let behavior = scenario.behaviors[i];
                Node {
                    machine: Machine::new(
                        params.clone(),
                        CnIndex(i as u32),
                        keys[i].clone(),
                        Arc::clone(&set),
                        Arc::clone(&caches[i]),
                        genesis,
                    ),
                    app: SimApp::new(behavior, genesis, &set, scenario.set_change_at),
                    behavior,
                    key: keys[i].clone(),
                    chain: Vec::new(),
                    wal: Vec::new(),
                    down: false,
                    sigs: Arc::clone(&caches[i]),
                    checks: 0,
                }
            })
            .collect();
        let mut sim = Self {
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            scenario,
            sent: Vec::new(),
            stats: SimStats::default(),
            proposed: BTreeMap::new(),
            digest: sha2::Digest::new(),
        };
        for i in 0..sim.nodes.len() {
            sim.schedule(
                0,
                Event::Input {
                    to: i,
                    input: Input::Start,
                },
            );
        }
        for crash in sim.scenario.crashes.clone() {
            sim.schedule(crash.at, Event::Crash { to: crash.node });
            sim.schedule(crash.at + crash.down_ms, Event::Restart { to: crash.node });
        }
        sim
    }

    /// Brings a crashed node back the way a CN restarts: a fresh machine on its last
    /// committed block, its WAL decoded and restored.
    fn restart(&mut self, i: usize) -> Result<(), String> {
        self.stats.restarts += 1;
        let node = &mut self.nodes[i];
        let tip = node.chain.last().map_or_else(genesis, Tip::of);
        // The application is durable: its CN set is the one of its last applied block.
        let set = Arc::new(CnSet::from_bytes(&node.app.set).map_err(|e| e.to_string())?);
        let wal: Vec<WalEntry> = node
            .wal
            .iter()
            .map(|r| kaon::consensus::wal::decode(r).map_err(|e| format!("WAL record: {e}")))
            .collect::<Result<_, _>>()?;
        node.machine = Machine::new(
            self.scenario.params(),
            locate(&set, &node.key),
            node.key.clone(),
            set,
            Arc::clone(&node.sigs),
            tip,
        );
        node.machine.restore(&wal);
        node.app.tip = tip;
        node.down = false;
        self.input(i, Input::Start)
    }

    /// Steps node `to` with `input` at the current time and carries out the outputs; after
    /// each commit the application applies the block and the machine is told.
    fn input(&mut self, to: usize, input: Input) -> Result<(), String> {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            let node = &mut self.nodes[to];
            let before = kaon::crypto::bls::checks_on_this_thread();
            let outputs = node.machine.step(input, self.now, &mut node.app);
            node.checks += kaon::crypto::bls::checks_on_this_thread() - before;
            next = self
                .handle(to, outputs)?
                .map(|height| Input::Applied { height });
        }
        Ok(())
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + after_ms, self.seq, self.seq as usize)));
        self.events.insert(self.seq as usize, event);
    }

    fn honest(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.behavior == Behavior::Honest)
    }

    fn link_up(&self, from: usize, to: usize) -> bool {
        self.now >= self.scenario.gst_ms
            || self.scenario.partition.contains(&from) == self.scenario.partition.contains(&to)
    }

    fn send(&mut self, from: usize, to: usize, msg: ConsensusMessage) {
        if let ConsensusMessage::Proposal(p) = &msg {
            let seen = self
                .proposed
                .entry((p.block.header().height, p.round))
                .or_default();
            let hash = p.block.hash();
            if !seen.contains(&hash) && seen.len() < 4 {
                seen.push(hash);
            }
        }
        if !self.link_up(from, to) {
            return;
        }
        if self.now < self.scenario.gst_ms && self.rng.gen_bool(self.scenario.loss) {
            return;
        }
        let mut latency = self.rng.gen_range(1..=self.scenario.max_latency_ms);
        // Before GST some messages straggle for up to several round timeouts: decisions reach
        // some nodes and not others, which is what round changes must survive.
        if self.now < self.scenario.gst_ms && self.rng.gen_bool(self.scenario.stragglers) {
            latency += self.rng.gen_range(0..4 * BASE_TIMEOUT_MS);
        }
        self.schedule(latency, Event::Deliver { to, msg });
    }

    fn broadcast(&mut self, from: usize, msg: ConsensusMessage) {
        if self.sent.len() < 4096 {
            self.sent.push(msg.clone());
        }
        for to in (0..self.nodes.len()).filter(|&to| to != from) {
            self.send(from, to, msg.clone());
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let deadline = self.scenario.gst_ms + LIVENESS_WINDOW_MS;
        while let Some(Reverse((at, _, id))) = self.queue.pop() {
            self.now = at;
            if self.now > deadline || self.honest().all(|n| n.chain.len() as u64 >= TARGET_HEIGHT) {
                break;
            }
            // Invariant: every queued id has its event stored.
            let event = self.events.remove(&id).expect("scheduled event");
            let (to, input) = match event {
                Event::Deliver { to, msg } => (to, Input::Message(msg)),
                Event::Input { to, input } => (to, input),
                Event::Sync { to, from } => {
                    self.serve_sync(to, from);
                    continue;
                }
                Event::Crash { to } => {
                    self.nodes[to].down = true;
                    continue;
                }
                // A node crashed twice restarts once, at the later time.
                Event::Restart { to } if !self.nodes[to].down => continue,
                Event::Restart { to } => {
                    self.restart(to)?;
                    continue;
                }
            };
            if self.nodes[to].down {
                continue;
            }
            self.input(to, input)?;
        }
        self.stats.digest = sha2::Digest::finalize(self.digest.clone()).into();
        self.check_safety()?;
        for (i, node) in self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.behavior == Behavior::Honest)
        {
            if (node.chain.len() as u64) < TARGET_HEIGHT {
                let at: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("{}/{}", n.machine.height(), n.machine.round()))
                    .collect();
                return Err(format!(
                    "liveness (height/round per node: {}): honest node {i} reached only height {}",
                    at.join(" "),
                    node.chain.len()
                ));
            }
        }
        Ok(())
    }

    /// Carries out `outputs` of node `from`; returns the height it committed and applied.
    fn handle(&mut self, from: usize, outputs: Vec<Output>) -> Result<Option<Height>, String> {
        let behavior = self.nodes[from].behavior;
        let mut applied = None;
        for output in outputs {
            self.digest_output(from, &output);
            self.count_sent(from, &output);
            match output {
                Output::Persist(entry) => self.nodes[from]
                    .wal
                    .push(kaon::consensus::wal::encode(&entry)),
                Output::Misbehavior(_) => self.stats.misbehavior_reports += 1,
                Output::Broadcast(msg @ ConsensusMessage::RoundChange(_)) => {
                    self.stats.round_changes += 1;
                    self.byzantine_broadcast(from, behavior, msg)
                }
                Output::Broadcast(msg) => self.byzantine_broadcast(from, behavior, msg),
                Output::Send { to, message } => {
                    if let Some(to) = self.node_of(from, to) {
                        self.byzantine_send(from, behavior, to, message)
                    }
                }
                Output::ScheduleProposal {
                    height,
                    round,
                    after_ms,
                } => self.schedule(
                    after_ms,
                    Event::Input {
                        to: from,
                        input: Input::ProposalDue { height, round },
                    },
                ),
                Output::ScheduleTimeout {
                    height,
                    round,
                    after_ms,
                } => self.schedule(
                    after_ms,
                    Event::Input {
                        to: from,
                        input: Input::Timeout { height, round },
                    },
                ),
                Output::Committed(block) => {
                    let node = &mut self.nodes[from];
                    if block.header().height.0 != node.chain.len() as u64 + 1 {
                        return Err(format!(
                            "node {from} committed height {} after {}",
                            block.header().height,
                            node.chain.len()
                        ));
                    }
                    if node.behavior == Behavior::Honest {
                        node.app
                            .commit(&block)
                            .map_err(|e| format!("node {from}: {e}"))?;
                        self.stats.set_changes += u64::from(!block.header().next_cn_set.is_empty());
                    } else {
                        node.app.follow(&block);
                    }
                    applied = Some(block.header().height);
                    node.chain.push(*block);
                }
                Output::PeerBehind { peer, height } => {
                    let block = self.nodes[from].chain.get(height.0 as usize - 1).cloned();
                    if let (Some(block), Some(to)) = (block, self.node_of(from, peer)) {
                        self.send(from, to, ConsensusMessage::Decided(Box::new(block)));
                    }
                }
                Output::SyncNeeded { from: height } => {
                    self.stats.syncs += 1;
                    let latency = self.rng.gen_range(1..=self.scenario.max_latency_ms);
                    self.schedule(
                        latency,
                        Event::Sync {
                            to: from,
                            from: height,
                        },
                    );
                }
            }
        }
        Ok(applied)
    }

    /// The node that CN `peer` of node `from`'s current CN set is (found by its key).
    fn node_of(&self, from: usize, peer: CnIndex) -> Option<usize> {
        let key = self.nodes[from]
            .machine
            .cn_set()
            .keys()
            .get(peer.0 as usize)?;
        self.nodes.iter().position(|n| n.key.public_key() == *key)
    }

    /// Counts the messages (one per recipient) and bytes an honest node's output sends.
    fn count_sent(&mut self, from: usize, output: &Output) {
        let (msg, recipients) = match output {
            Output::Broadcast(msg) => (msg, self.nodes.len() as u64 - 1),
            Output::Send { message, .. } => (message, 1),
            _ => return,
        };
        if self.nodes[from].behavior == Behavior::Honest {
            let bytes = kaon::types::codec::encode_frame(msg).len() as u64;
            self.stats.messages += recipients;
            self.stats.bytes += recipients * bytes;
        }
    }

    /// Folds an output into the run's digest: messages by their wire encoding, WAL entries
    /// by theirs, the rest by what identifies them.
    fn digest_output(&mut self, from: usize, output: &Output) {
        use sha2::Digest;
        self.digest.update((from as u64).to_be_bytes());
        self.digest.update(self.now.to_be_bytes());
        match output {
            Output::Persist(entry) => self.digest.update(kaon::consensus::wal::encode(entry)),
            Output::Broadcast(msg) | Output::Send { message: msg, .. } => {
                self.digest.update(kaon::types::codec::encode_frame(msg))
            }
            Output::Committed(block) => self.digest.update(block.hash().0),
            other => self.digest.update(format!("{other:?}")),
        }
    }

    /// A sync request answered by a random peer whose link is up: its decided blocks from
    /// `from` on.
    fn serve_sync(&mut self, to: usize, from: Height) {
        let peer = self.rng.gen_range(0..self.nodes.len());
        if peer == to || !self.link_up(peer, to) {
            return;
        }
        if self.nodes[peer].down {
            return;
        }
        let blocks: Vec<Block> = self.nodes[peer]
            .chain
            .iter()
            .skip(from.0 as usize - 1)
            .take(8)
            .cloned()
            .collect();
        for block in blocks {
            let block = self.maybe_forge_body(peer, block);
            self.send(peer, to, ConsensusMessage::Decided(Box::new(block)));
        }
    }

    /// A body forger's decided block: the real header and seal over another body.
    fn maybe_forge_body(&mut self, from: usize, mut block: Block) -> Block {
        if self.nodes[from].behavior == Behavior::BodyForger {
            self.stats.forged_bodies += 1;
            for segment in &mut block.segments {
                segment.txs = vec![Bytes::from(sha256(b"forged").to_vec())];
            }
        }
        block
    }

    fn byzantine_broadcast(&mut self, from: usize, behavior: Behavior, msg: ConsensusMessage) {
        match (behavior, msg) {
            (Behavior::Silent, _) => {}
            (Behavior::BodyForger, ConsensusMessage::Decided(block)) => {
                let forged = self.maybe_forge_body(from, *block);
                self.broadcast(from, ConsensusMessage::Decided(Box::new(forged)));
            }
            (Behavior::LockHider, ConsensusMessage::RoundChange(rc)) if !rc.prepared.is_empty() => {
                self.stats.lock_lies += 1;
                let mut hidden = *rc;
                hidden.prepared.clear();
                hidden.prepared_block.clear();
                let hidden = self.resign_round_change(from, hidden);
                self.broadcast(from, ConsensusMessage::RoundChange(Box::new(hidden)));
            }
            (Behavior::CertForger, ConsensusMessage::RoundChange(rc))
                if !rc.prepared.is_empty() =>
            {
                self.stats.lock_lies += 1;
                let mut forged = *rc;
                forged.prepared[0].round = kaon::types::Round(forged.round.0 - 1);
                let forged = self.resign_round_change(from, forged);
                self.broadcast(from, ConsensusMessage::RoundChange(Box::new(forged)));
            }
            (Behavior::LockIgnorer, ConsensusMessage::Proposal(p))
                if p.justification.iter().any(|rc| !rc.prepared.is_empty()) =>
            {
                self.stats.lock_lies += 1;
                let fresh = self.fresh_proposal(from, &p);
                self.broadcast(from, ConsensusMessage::Proposal(Box::new(fresh)));
            }
            (Behavior::FutureStamper, ConsensusMessage::Proposal(p)) => {
                self.stats.future_stamps += 1;
                let stamped = self.restamped(from, &p, u64::MAX);
                self.broadcast(from, ConsensusMessage::Proposal(Box::new(stamped)));
            }
            (
                Behavior::EquivocatingProposer | Behavior::DoubleVoter,
                ConsensusMessage::Proposal(p),
            ) => {
                let twin = self.twin_proposal(from, &p);
                self.split(
                    from,
                    ConsensusMessage::Proposal(p),
                    ConsensusMessage::Proposal(Box::new(twin)),
                );
            }
            (Behavior::DoubleVoter, ConsensusMessage::Vote(v)) => {
                let other = self.second_vote(from, &v);
                // Everyone gets the first vote; half the network also gets the second, which
                // counts wherever it arrives first.
                self.broadcast(from, ConsensusMessage::Vote(v));
                for to in (1..self.nodes.len()).step_by(2).filter(|&to| to != from) {
                    self.send(from, to, ConsensusMessage::Vote(Box::new(other.clone())));
                }
            }
            (Behavior::Replayer, msg) => {
                self.broadcast(from, msg);
                self.replay_one(from);
            }
            (_, msg) => self.broadcast(from, msg),
        }
    }

    /// A double voter's second vote in `v`'s round and phase: for a real competing block of
    /// that round when one was proposed (its own twin as proposer, or another equivocator's),
    /// so it can complete a quorum there; otherwise for a block nobody proposed.
    fn second_vote(&mut self, from: usize, v: &Vote) -> Vote {
        let real = self
            .proposed
            .get(&(v.height, v.round))
            .and_then(|seen| seen.iter().find(|h| **h != v.block_hash).copied());
        self.stats.competing_votes += u64::from(real.is_some());
        let competing = real.unwrap_or_else(|| BlockHash(sha256(v.block_hash.0.as_slice())));
        let mut other = v.clone();
        other.block_hash = competing;
        other.signature = self.nodes[from]
            .key
            .sign(&Vote::signing_message(
                other.kind,
                other.height,
                other.round,
                other.block_hash,
            ))
            .to_bytes();
        other
    }

    /// A replayer sends a random node one message seen earlier in the run.
    fn replay_one(&mut self, from: usize) {
        if !self.sent.is_empty() {
            let old = self.sent[self.rng.gen_range(0..self.sent.len())].clone();
            let to = self.rng.gen_range(0..self.nodes.len());
            if to != from {
                self.send(from, to, old);
            }
        }
    }

    /// Sends one node a message, the way `behavior` would: a double voter sends the leader
    /// two votes, a replayer adds an old message, a silent node sends nothing.
    fn byzantine_send(
        &mut self,
        from: usize,
        behavior: Behavior,
        to: usize,
        msg: ConsensusMessage,
    ) {
        match (behavior, msg) {
            (Behavior::Silent, _) => {}
            (Behavior::DoubleVoter, ConsensusMessage::Vote(v)) => {
                let other = self.second_vote(from, &v);
                self.send(from, to, ConsensusMessage::Vote(v));
                self.send(from, to, ConsensusMessage::Vote(Box::new(other)));
            }
            (Behavior::Replayer, msg) => {
                self.send(from, to, msg);
                self.replay_one(from);
            }
            (_, msg) => self.send(from, to, msg),
        }
    }

    /// Sends `even` to the nodes of even index and `odd` to the others: two halves of the
    /// network hear two different things from `from`.
    fn split(&mut self, from: usize, even: ConsensusMessage, odd: ConsensusMessage) {
        for to in (0..self.nodes.len()).filter(|&to| to != from) {
            let msg = if to % 2 == 0 {
                even.clone()
            } else {
                odd.clone()
            };
            self.send(from, to, msg);
        }
    }

    /// The same proposal with a different block (timestamp + 1), properly re-signed.
    fn twin_proposal(&self, from: usize, p: &Proposal) -> Proposal {
        let timestamp_ms = p.block.header().timestamp_ms.saturating_add(1);
        self.restamped(from, p, timestamp_ms)
    }
    /// The proposal's block stamped `timestamp_ms`, the proposer's vote re-signed.
    fn restamped(&self, from: usize, p: &Proposal, timestamp_ms: u64) -> Proposal {
        restamp(&self.nodes[from].key, p, timestamp_ms)
    }

    /// `rc` signed anew by node `from` (after a Byzantine edit).
    fn resign_round_change(
        &self,
        from: usize,
        mut rc: kaon::types::RoundChange,
    ) -> kaon::types::RoundChange {
        let node = &self.nodes[from];
        let msg = kaon::types::RoundChange::signing_message(
            params().region,
            rc.height,
            node.machine.tip().hash,
            rc.round,
            rc.prepared.first(),
        );
        rc.signature = node.key.sign(&msg).to_bytes();
        rc
    }

    /// A justified proposal of round > 0 with a fresh block in place of the locked one.
    fn fresh_proposal(&mut self, from: usize, p: &Proposal) -> Proposal {
        let params = params_for(self.scenario.committee_size);
        let node = &mut self.nodes[from];
        let tip = *node.machine.tip();
        let mut fresh = p.clone();
        let stamp = p.block.header().timestamp_ms.saturating_add(7);
        let body = node.app.build(tip.height.next(), &tip, stamp);
        fresh.block = kaon::consensus::proposal::build_block(
            &params,
            &node.key,
            locate(node.machine.cn_set(), &node.key),
            node.machine.cn_set(),
            &tip,
            p.round,
            stamp,
            body,
        );
        restamp(&node.key, &fresh, stamp)
    }

    fn check_safety(&self) -> Result<(), String> {
        let mut by_height: BTreeMap<u64, (usize, BlockHash)> = BTreeMap::new();
        for (i, node) in self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.behavior == Behavior::Honest)
        {
            for block in &node.chain {
                let h = block.header().height.0;
                match by_height.get(&h) {
                    Some((j, hash)) if *hash != block.hash() => {
                        return Err(format!(
                            "safety: nodes {j} and {i} committed different blocks at height {h}"
                        ))
                    }
                    Some(_) => {}
                    None => {
                        by_height.insert(h, (i, block.hash()));
                    }
                }
            }
        }
        Ok(())
    }
}

fn run_seed(
    (n, f, committee_size): (usize, usize, usize),
    seed: u64,
    keys: &[SecretKey],
    sigs: &Arc<SigCache>,
) -> Result<SimStats, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let scenario = Scenario::draw(n, f, committee_size, &mut rng);
    let mut sim = Sim::new(seed, scenario.clone(), keys, sigs);
    sim.run()
        .map_err(|e| format!("n={n} f={f} seed={seed}: {e}\n  scenario: {scenario:?}"))?;
    if seed.is_multiple_of(DETERMINISM_EVERY) {
        let mut again = Sim::new(seed, scenario.clone(), keys, sigs);
        again
            .run()
            .map_err(|e| format!("n={n} f={f} seed={seed} (rerun): {e}"))?;
        if again.stats != sim.stats {
            return Err(format!(
                "n={n} f={f} seed={seed}: not deterministic: {:?} then {:?}",
                sim.stats, again.stats
            ));
        }
    }
    Ok(sim.stats)
}

/// Every this many seeds, a seed runs twice and both runs must output exactly the same.
const DETERMINISM_EVERY: u64 = 10;

/// The seeds to run: `KAON_SIM_SEED`, or the range `KAON_SIM_SEEDS` names (`N` for 0..N,
/// `A..B`), or `0..default`; seeds that once failed (`regressions`) are added to every range.
fn seeds(default: u64, regressions: &[u64]) -> Vec<u64> {
    if let Some(seed) = std::env::var("KAON_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let spec = std::env::var("KAON_SIM_SEEDS").unwrap_or_default();
    let range = match spec.split_once("..") {
        Some((a, b)) => a.parse().unwrap_or(0)..b.parse().unwrap_or(1_000),
        None => 0..spec.parse().unwrap_or(default),
    };
    let extra: Vec<u64> = regressions
        .iter()
        .filter(|s| !range.contains(s))
        .copied()
        .collect();
    range.chain(extra).collect()
}

/// Seeds CI runs per configuration unless `KAON_SIM_SEEDS` says otherwise.
const CI_SEEDS: u64 = 1_000;

fn run_all(n: usize, f: usize, committee_size: usize, default_seeds: u64, regressions: &[u64]) {
    let keys = keys(n);
    // One cache for the whole run: every node would verify each signature once anyway, and
    // the cache is keyed by (key, message, signature), so sharing it changes no outcome.
    let sigs = Arc::new(SigCache::new());
    let seeds = seeds(default_seeds, regressions);
    // A pool of its own: seeds run for seconds each, and on rayon's global pool they would
    // starve tests running beside them whose nodes execute blocks on it (the in-process
    // devnet's CNs stalled behind them).
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("sim-{i}"))
        .build()
        .expect("simulation thread pool");
    let results: Vec<Result<SimStats, String>> = pool.install(|| {
        seeds
            .par_iter()
            .map(|&seed| run_seed((n, f, committee_size), seed, &keys, &sigs))
            .collect()
    });
    let failures: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(String::as_str))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    if seeds.len() >= 300 {
        // Over many seeds (300 or more; some adversaries act in one seed in thirty) they must
        // have bitten: equivocations and double votes detected, rounds changed, nodes synced.
        let total = results
            .iter()
            .flatten()
            .fold(SimStats::default(), |a, s| SimStats {
                misbehavior_reports: a.misbehavior_reports + s.misbehavior_reports,
                round_changes: a.round_changes + s.round_changes,
                syncs: a.syncs + s.syncs,
                restarts: a.restarts + s.restarts,
                forged_bodies: a.forged_bodies + s.forged_bodies,
                future_stamps: a.future_stamps + s.future_stamps,
                lock_lies: a.lock_lies + s.lock_lies,
                competing_votes: a.competing_votes + s.competing_votes,
                set_changes: a.set_changes + s.set_changes,
                messages: a.messages + s.messages,
                bytes: a.bytes + s.bytes,
                digest: [0; 32],
            });
        assert!(
            total.misbehavior_reports > 0,
            "no misbehaviour detected: {total:?}"
        );
        assert!(total.round_changes > 0, "no round ever changed: {total:?}");
        assert!(total.syncs > 0, "no node ever had to sync: {total:?}");
        assert!(total.restarts > 0, "no node ever restarted: {total:?}");
        assert!(
            total.forged_bodies > 0,
            "no body was ever forged: {total:?}"
        );
        assert!(
            total.future_stamps > 0,
            "no far-future stamp was sent: {total:?}"
        );
        assert!(
            total.lock_lies > 0,
            "no lock was ever lied about: {total:?}"
        );
        assert!(
            total.competing_votes > 0,
            "no second vote ever went to a real competing block: {total:?}"
        );
        assert!(total.set_changes > 0, "no CN set ever changed: {total:?}");
        eprintln!(
            "n={n} f={f} committee={committee_size}: {} seeds, {total:?}",
            seeds.len()
        );
    }
}

#[test]
fn n4_f1_byzantine_lossy_partitioned_network_stays_safe_and_live() {
    run_all(4, 1, 100, CI_SEEDS, &[]);
}

#[test]
fn n7_f2_byzantine_lossy_partitioned_network_stays_safe_and_live() {
    run_all(7, 2, 100, CI_SEEDS, &[]);
}

/// More CNs than the committee: 13 CNs, committees of 7 drawn per height, 2 Byzantine. Seed
/// 2792 kept members a round apart at the timeout cap before rounds timed out from the quorum.
#[test]
fn n13_committee7_f2_byzantine_network_stays_safe_and_live() {
    run_all(13, 2, 7, CI_SEEDS, &[2792]);
}

/// The clock of hand-driven networks.
const MANUAL_NOW_MS: u64 = 1_000;

/// A hand-driven network of honest machines for targeted scenarios.
struct Manual {
    nodes: Vec<Node>,
    /// The clock every node is stepped at: [`MANUAL_NOW_MS`], moved on by the longest round
    /// timeout before each timeout input (a timer fires only once its time has passed).
    now_ms: u64,
}

impl Manual {
    fn new(n: usize) -> Self {
        Self::with_committee(n, params().committee_size)
    }

    /// `n` CNs whose committees have `committee_size` members (all `n` while `n` is at most
    /// one more).
    fn with_committee(n: usize, committee_size: usize) -> Self {
        let keys = keys(n);
        let scenario = Scenario::calm(n, committee_size, VoteRouting::Leader);
        let sim = Sim::new(0, scenario, &keys, &Arc::new(SigCache::new()));
        Self {
            nodes: sim.nodes,
            now_ms: MANUAL_NOW_MS,
        }
    }

    /// Starts every node; returns the one that schedules the first proposal.
    fn start_all(&mut self) -> usize {
        let starts: Vec<Vec<Output>> = (0..self.nodes.len())
            .map(|i| self.step(i, Input::Start))
            .collect();
        starts
            .iter()
            .position(|outs| {
                outs.iter()
                    .any(|o| matches!(o, Output::ScheduleProposal { .. }))
            })
            .expect("some node proposes at round 0")
    }

    /// Steps node `to` at the network's clock; applies each committed block and tells the
    /// machine, returning every output.
    fn step(&mut self, to: usize, input: Input) -> Vec<Output> {
        if matches!(input, Input::Timeout { .. }) {
            self.now_ms += params().timeout(round(u32::MAX));
        }
        self.step_at(to, input, self.now_ms)
    }

    /// [`Manual::step`] with the clock at `now_ms`.
    fn step_at(&mut self, to: usize, input: Input, now_ms: u64) -> Vec<Output> {
        let node = &mut self.nodes[to];
        let mut all = Vec::new();
        let mut next = Some(input);
        while let Some(input) = next.take() {
            let outputs = node.machine.step(input, now_ms, &mut node.app);
            for o in &outputs {
                if let Output::Committed(block) = o {
                    node.app.commit(block).unwrap();
                    node.chain.push((**block).clone());
                    next = Some(Input::Applied {
                        height: block.header().height,
                    });
                }
            }
            all.extend(outputs);
        }
        all
    }

    /// Node `node`'s proposal for `height` and `round` (its outputs).
    fn propose(&mut self, node: usize, height: Height, round: kaon::types::Round) -> Vec<Output> {
        self.step(node, Input::ProposalDue { height, round })
    }

    /// Runs a proposal through both voting phases: it and the prepare votes reach `voters`,
    /// the commit votes reach `deciders`.
    fn vote_through(
        &mut self,
        proposer: usize,
        proposal: &[Output],
        voters: &[usize],
        deciders: &[usize],
    ) {
        let prepares = self.deliver(proposer, proposal, voters);
        let mut commits = Vec::new();
        for (from, outs) in votes_of(&prepares, VoteKind::Prepare) {
            commits.extend(self.deliver(from, &outs, voters));
        }
        let mut sealed = Vec::new();
        for (from, outs) in votes_of(&commits, VoteKind::Commit) {
            sealed.extend(self.deliver(from, &outs, deciders));
        }
        // The leader keeps its own votes and seals with them: its commit certificate is how
        // the deciders that did not see its vote learn of the decision.
        for (from, outs) in certificates_of(&sealed, VoteKind::Commit) {
            self.deliver(from, &outs, deciders);
        }
    }

    /// Delivers every broadcast in `outputs` from `from` to each node in `to`; returns the
    /// outputs of the receivers.
    fn deliver(
        &mut self,
        from: usize,
        outputs: &[Output],
        to: &[usize],
    ) -> Vec<(usize, Vec<Output>)> {
        let mut produced = Vec::new();
        for msg in broadcasts(outputs) {
            for &t in to.iter().filter(|&&t| t != from) {
                let out = self.step(t, Input::Message(msg.clone()));
                produced.push((t, out));
            }
        }
        produced
    }
}

/// The messages in `outputs`, broadcast or sent to one node (hand-driven tests choose the
/// recipients themselves).
fn broadcasts(outputs: &[Output]) -> Vec<ConsensusMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(m) | Output::Send { message: m, .. } => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// The outputs of each node in `outputs` that `keep` selects, by node (nodes left with none
/// are dropped).
fn outputs_where(
    outputs: &[(usize, Vec<Output>)],
    keep: impl Fn(&Output) -> bool,
) -> Vec<(usize, Vec<Output>)> {
    outputs
        .iter()
        .map(|(from, outs)| (*from, outs.iter().filter(|o| keep(o)).cloned().collect()))
        .filter(|(_, outs): &(usize, Vec<Output>)| !outs.is_empty())
        .collect()
}

/// The votes of `kind` among `outputs`, by sender.
fn votes_of(outputs: &[(usize, Vec<Output>)], kind: VoteKind) -> Vec<(usize, Vec<Output>)> {
    outputs_where(outputs, |o| {
        matches!(o, Output::Broadcast(ConsensusMessage::Vote(v))
            | Output::Send { message: ConsensusMessage::Vote(v), .. } if v.kind == kind)
    })
}

/// The leader certificates of `kind` among `outputs`, by sender.
fn certificates_of(outputs: &[(usize, Vec<Output>)], kind: VoteKind) -> Vec<(usize, Vec<Output>)> {
    outputs_where(
        outputs,
        |o| matches!(o, Output::Broadcast(ConsensusMessage::Certificate(c)) if c.kind == kind),
    )
}

/// Round 0 prepares block B everywhere, but only one node sees the commit votes and commits.
/// The others time out; the round-1 proposer must re-propose B (the highest prepared block in
/// its round-change certificate), and a round-1 proposal of any other block — even with a valid
/// justification attached — must be refused. Everyone ends up with B.
#[test]
fn n4_prepared_block_is_reproposed_after_a_partial_commit() {
    let mut net = Manual::new(4);
    let all = [0, 1, 2, 3];
    let proposer0 = net.start_all();
    let h = Height(1);
    let proposal_out = net.propose(proposer0, h, kaon::types::Round(0));
    let block_b = match &broadcasts(&proposal_out)[0] {
        ConsensusMessage::Proposal(p) => p.block.hash(),
        other => panic!("expected a proposal, got {other:?}"),
    };
    let prepares = net.deliver(proposer0, &proposal_out, &all);
    // Every prepare reaches everyone: each node sends its commit vote.
    let mut commits = Vec::new();
    for (from, outs) in votes_of(&prepares, VoteKind::Prepare) {
        commits.extend(net.deliver(from, &outs, &all));
    }
    let commit_votes = votes_of(&commits, VoteKind::Commit);
    assert!(commit_votes.len() >= 3, "a quorum must have commit-voted");
    // Commit votes reach only `lucky`, which is neither proposer of round 0 nor of round 1.
    let lucky = (0..4).find(|&i| i != proposer0).unwrap();
    for (from, outs) in &commit_votes {
        net.deliver(*from, outs, &[lucky]);
    }
    assert_eq!(
        net.nodes[lucky].chain.len(),
        1,
        "the lucky node committed B"
    );
    assert_eq!(net.nodes[lucky].chain[0].hash(), block_b);
    // The others time out in round 0 and exchange round changes carrying PC(0, B).
    let others: Vec<usize> = (0..4).filter(|&i| i != lucky).collect();
    let mut rc_outputs = Vec::new();
    for &i in &others {
        rc_outputs.push((
            i,
            net.step(
                i,
                Input::Timeout {
                    height: h,
                    round: kaon::types::Round(0),
                },
            ),
        ));
    }
    let mut after_rc = Vec::new();
    for (from, outs) in &rc_outputs {
        after_rc.extend(net.deliver(*from, outs, &others));
    }
    // Whoever leads round 1 now proposes; it must be B again.
    let due: Vec<usize> = after_rc
        .iter()
        .chain(rc_outputs.iter())
        .filter(|(_, outs)| {
            outs.iter()
                .any(|o| matches!(o, Output::ScheduleProposal { round, .. } if round.0 == 1))
        })
        .map(|(i, _)| *i)
        .collect();
    let leader = *due
        .first()
        .expect("some node leads round 1 with a full round-change quorum");
    let proposal1 = net.propose(leader, h, kaon::types::Round(1));
    let reproposed = match &broadcasts(&proposal1)[0] {
        ConsensusMessage::Proposal(p) => p.clone(),
        other => panic!("expected a proposal, got {other:?}"),
    };
    assert_eq!(
        reproposed.block.hash(),
        block_b,
        "round 1 must re-propose the prepared block"
    );

    // A round-1 proposal of a fresh, well-formed block by the rightful leader, with the same
    // (valid) justification: it ignores PC(0, B), so it must be refused.
    let mut forged = (*reproposed).clone();
    let leader_key = net.nodes[leader].key.clone();
    let set = CnSet::new(keys(4).iter().map(SecretKey::public_key).collect()).unwrap();
    let body = SimApp::honest(4).build(h, &genesis(), 50);
    forged.block = kaon::consensus::proposal::build_block(
        &params(),
        &leader_key,
        CnIndex(leader as u32),
        &set,
        &genesis(),
        kaon::types::Round(1),
        50,
        body,
    );
    assert_ne!(forged.block.hash(), block_b);
    forged.signature = net.nodes[leader]
        .key
        .sign(&Vote::signing_message(
            VoteKind::Prepare,
            h,
            forged.round,
            forged.block.hash(),
        ))
        .to_bytes();
    let victim = *others.iter().find(|&&i| i != leader).unwrap();
    let refused = net.step(
        victim,
        Input::Message(ConsensusMessage::Proposal(Box::new(forged))),
    );
    assert!(
        votes_of(&[(victim, refused)], VoteKind::Prepare).is_empty(),
        "a proposal that ignores the highest prepared certificate must not get a vote"
    );

    // Round 1 completes with B on the others as well.
    net.vote_through(leader, &proposal1, &others, &others);
    for i in all {
        assert_eq!(net.nodes[i].chain.len(), 1, "node {i} committed height 1");
        assert_eq!(
            net.nodes[i].chain[0].hash(),
            block_b,
            "node {i} committed B"
        );
    }
}

/// A CN that voted, crashed and restarted from its WAL must not vote for a conflicting
/// proposal in the same round (the equivocation a crash could otherwise cause).
#[test]
fn n4_restarted_node_never_votes_twice_in_a_round() {
    let mut net = Manual::new(4);
    let proposer = net.start_all();
    let h = Height(1);
    let round0 = kaon::types::Round(0);
    let proposal_out = net.propose(proposer, h, round0);
    let ConsensusMessage::Proposal(original) = broadcasts(&proposal_out)[0].clone() else {
        panic!("expected a proposal")
    };
    let voter = (0..4).find(|&i| i != proposer).unwrap();
    let out = net.step(
        voter,
        Input::Message(ConsensusMessage::Proposal(original.clone())),
    );
    assert_eq!(
        votes_of(&[(voter, out.clone())], VoteKind::Prepare).len(),
        1,
        "the voter prepared"
    );
    // What the driver would have made durable, through the real WAL encoding.
    let wal: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Persist(e) => {
                Some(kaon::consensus::wal::decode(&kaon::consensus::wal::encode(e)).unwrap())
            }
            _ => None,
        })
        .collect();
    assert!(!wal.is_empty(), "the vote was persisted before it was sent");

    // Crash and restart from the WAL.
    let ks = keys(4);
    let set = Arc::new(CnSet::new(ks.iter().map(SecretKey::public_key).collect()).unwrap());
    let mut restarted = Machine::new(
        params(),
        CnIndex(voter as u32),
        ks[voter].clone(),
        set,
        Arc::new(SigCache::new()),
        genesis(),
    );
    restarted.restore(&wal);
    let mut app = SimApp::honest(4);
    restarted.step(Input::Start, MANUAL_NOW_MS, &mut app);

    // The proposer equivocates: another valid block for the same round.
    let mut twin = (*original).clone();
    twin.block.sealed.header.timestamp_ms += 1;
    twin.signature = net.nodes[proposer]
        .key
        .sign(&Vote::signing_message(
            VoteKind::Prepare,
            h,
            round0,
            twin.block.hash(),
        ))
        .to_bytes();
    let out = restarted.step(
        Input::Message(ConsensusMessage::Proposal(Box::new(twin))),
        MANUAL_NOW_MS,
        &mut app,
    );
    assert!(
        votes_of(&[(voter, out)], VoteKind::Prepare).is_empty(),
        "a restarted node must not prepare a second block in a round it already voted in"
    );
}

/// `p` with its block stamped `timestamp_ms` and the proposer's vote re-signed with `key`.
fn restamp(key: &SecretKey, p: &Proposal, timestamp_ms: u64) -> Proposal {
    let mut twin = p.clone();
    twin.block.sealed.header.timestamp_ms = timestamp_ms;
    let h = twin.block.header().height;
    twin.signature = key
        .sign(&Vote::signing_message(
            VoteKind::Prepare,
            h,
            twin.round,
            twin.block.hash(),
        ))
        .to_bytes();
    twin
}

fn round(r: u32) -> kaon::types::Round {
    kaon::types::Round(r)
}

impl Manual {
    /// Delivers every broadcast in `pending` to every other node, and makes each proposal a
    /// node schedules at once (up to height `last`), until nothing more is sent.
    fn flood(&mut self, pending: Vec<(usize, Vec<Output>)>, last: Height) {
        let mut pending: std::collections::VecDeque<_> = pending.into();
        let n = self.nodes.len();
        let mut steps = 0;
        while let Some((from, outs)) = pending.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the network does not settle");
            for o in &outs {
                if let Output::ScheduleProposal { height, round, .. } = o {
                    if *height <= last {
                        let input = Input::ProposalDue {
                            height: *height,
                            round: *round,
                        };
                        let out = self.step(from, input);
                        pending.push_back((from, out));
                    }
                }
            }
            for msg in broadcasts(&outs) {
                for to in (0..n).filter(|&t| t != from) {
                    let out = self.step(to, Input::Message(msg.clone()));
                    pending.push_back((to, out));
                }
            }
        }
    }

    /// Starts every node and floods until height `last` is decided everywhere.
    fn decide_up_to(&mut self, last: Height) {
        let starts = (0..self.nodes.len())
            .map(|i| (i, self.step(i, Input::Start)))
            .collect();
        self.flood(starts, last);
        for (i, node) in self.nodes.iter().enumerate() {
            assert_eq!(
                node.chain.len() as u64,
                last.0,
                "node {i} decided up to {last}"
            );
        }
    }
}

/// A committee member relays a decided block with the real header and seal over another body
/// (the block hash covers only the header). A node that validated the real proposal commits
/// the body it validated; a node that never saw it refuses the forged body and takes the real
/// one. Kills the rule "a decided block's body must match its header" (hole 2).
#[test]
fn n4_decided_block_with_a_forged_body_is_never_committed() {
    let mut net = Manual::new(4);
    let proposer = net.start_all();
    let out = net.propose(proposer, Height(1), round(0));
    // `late` sees the proposal and the prepares, not the commit votes.
    let late = (0..4).find(|&i| i != proposer).unwrap();
    let all = [0, 1, 2, 3];
    let deciders: Vec<usize> = all.iter().copied().filter(|&i| i != late).collect();
    net.vote_through(proposer, &out, &all, &deciders);
    let real = net.nodes[proposer].chain[0].clone();
    let mut forged = real.clone();
    forged.segments[0].txs = vec![Bytes::from_static(b"forged")];
    assert_eq!(forged.hash(), real.hash(), "same header, same seal");
    assert_ne!(forged, real);

    net.step(
        late,
        Input::Message(ConsensusMessage::Decided(Box::new(forged.clone()))),
    );
    assert_eq!(
        net.nodes[late].chain,
        vec![real.clone()],
        "late commits what it validated"
    );

    // A node of the same chain that saw nothing of height 1.
    let mut fresh = Manual::new(4);
    fresh.start_all();
    fresh.step(
        0,
        Input::Message(ConsensusMessage::Decided(Box::new(forged))),
    );
    assert!(fresh.nodes[0].chain.is_empty(), "a forged body is refused");
    assert_eq!(fresh.nodes[0].machine.rejections().bad_decided, 1);
    fresh.step(
        0,
        Input::Message(ConsensusMessage::Decided(Box::new(real.clone()))),
    );
    assert_eq!(fresh.nodes[0].chain, vec![real]);
}

/// A proposal stamped beyond the validator's clock plus the allowed drift gets no vote (a
/// proposer stamping `u64::MAX` would otherwise end the chain: no later timestamp exists); one
/// at the limit does. Kills the rule "timestamp ≤ now + drift" (hole 3).
#[test]
fn n4_proposal_stamped_beyond_the_clock_drift_gets_no_vote() {
    use kaon::consensus::machine::MAX_CLOCK_DRIFT_MS;
    let mut net = Manual::new(4);
    let proposer = net.start_all();
    let out = net.propose(proposer, Height(1), round(0));
    let ConsensusMessage::Proposal(p) = broadcasts(&out)[0].clone() else {
        panic!("expected a proposal")
    };
    let key = net.nodes[proposer].key.clone();
    let voters: Vec<usize> = (0..4).filter(|&i| i != proposer).collect();
    for (voter, stamp, votes) in [
        (voters[0], u64::MAX, 0),
        (voters[1], MANUAL_NOW_MS + MAX_CLOCK_DRIFT_MS + 1, 0),
        (voters[2], MANUAL_NOW_MS + MAX_CLOCK_DRIFT_MS, 1),
    ] {
        let stamped = restamp(&key, &p, stamp);
        let out = net.step(
            voter,
            Input::Message(ConsensusMessage::Proposal(Box::new(stamped))),
        );
        assert_eq!(
            votes_of(&[(voter, out)], VoteKind::Prepare).len(),
            votes,
            "stamp {stamp} at clock {MANUAL_NOW_MS}"
        );
    }
    // After a parent at the end of time the next timestamp saturates instead of overflowing.
    let mut tip = genesis();
    tip.timestamp_ms = u64::MAX;
    assert_eq!(
        kaon::consensus::machine::proposal_timestamp(0, &tip),
        u64::MAX
    );
}

/// Three CNs go through 40 rounds together (round changes among themselves, no proposal)
/// while the fourth is cut off in round 0 — a long outage. Once their round changes reach it,
/// it jumps to the round f + 1 members reached — 40 rounds away, far beyond the window kept in
/// full — and all four decide. Kills "round changes count at any distance" (hole 4) and
/// "rounds left behind are forgotten" (memory held must not grow with the rounds gone through).
#[test]
fn n4_a_node_forty_rounds_behind_converges_and_decides() {
    let mut net = Manual::new(4);
    net.start_all();
    let h = Height(1);
    let group = [0, 1, 2];
    let mut last = Vec::new();
    let mut held_at_round_2 = 0;
    for r in 0..40 {
        if r == 2 {
            held_at_round_2 = net.nodes[0].machine.held_bytes();
        }
        let timed_out: Vec<(usize, Vec<Output>)> = group
            .iter()
            .map(|&i| {
                let input = Input::Timeout {
                    height: h,
                    round: round(r),
                };
                (i, net.step(i, input))
            })
            .collect();
        for (from, outs) in &timed_out {
            net.deliver(*from, outs, &group);
        }
        last = timed_out;
    }
    for i in group {
        assert_eq!(net.nodes[i].machine.round(), round(40), "node {i}");
    }
    // Rounds left behind cost nothing: what a node holds does not grow with the rounds.
    let held = net.nodes[0].machine.held_bytes();
    assert!(
        held < 2 * held_at_round_2,
        "held {held} bytes at round 40, {held_at_round_2} at round 2"
    );
    assert_eq!(net.nodes[3].machine.round(), round(0));
    let mut pending = Vec::new();
    for (from, outs) in &last {
        pending.extend(net.deliver(*from, outs, &[3]));
    }
    assert_eq!(net.nodes[3].machine.round(), round(40), "node 3 jumped");
    pending.extend(last);
    net.flood(pending, h);
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(node.chain.len(), 1, "node {i} decided height 1");
    }
}

/// A node that times out alone — its round changes reach nobody — repeats its round change
/// instead of running rounds ahead of everyone: it never leaves a round no quorum reached.
/// Without this rule, nodes whose timeouts reached their cap stayed rounds apart for ever
/// (simulation seed 549 of n = 4 after a 97 s asynchronous period).
#[test]
fn n4_a_node_timing_out_alone_stays_in_round_one_and_repeats_its_round_change() {
    let mut net = Manual::new(4);
    net.start_all();
    let h = Height(1);
    net.step(
        0,
        Input::Timeout {
            height: h,
            round: round(0),
        },
    );
    for _ in 0..5 {
        let out = net.step(
            0,
            Input::Timeout {
                height: h,
                round: round(1),
            },
        );
        let resent = broadcasts(&out)
            .into_iter()
            .filter(|m| matches!(m, ConsensusMessage::RoundChange(rc) if rc.round == round(1)))
            .count();
        assert_eq!(resent, 1, "the round change for round 1 is sent again");
    }
    assert_eq!(net.nodes[0].machine.round(), round(1));
}

/// A node that entered round 1 alone, long before the others, counts the round's timeout from
/// when it learns a quorum is there, not from its own entry: leaving as the others arrive kept
/// it a round apart for good once timeouts reached their cap (simulation seed 2792 of n = 13,
/// committees of 7: two honest members a round ahead, the other four one vote short each
/// round). Kills "a round lasts its timeout from when a quorum is known in it".
#[test]
fn n4_a_node_ahead_waits_out_the_round_with_the_quorum() {
    let mut net = Manual::new(4);
    net.start_all();
    let (h, p) = (Height(1), params());
    let timeout_at = |r: u32| Input::Timeout {
        height: h,
        round: round(r),
    };
    // Node 0 times out of round 0 first: it enters round 1 alone.
    let early = MANUAL_NOW_MS + p.timeout(round(0));
    net.step_at(0, timeout_at(0), early);
    assert_eq!(net.nodes[0].machine.round(), round(1));
    // The others time out just before node 0's round-1 timer runs out; their round changes
    // reach node 0.
    let quorum_at = early + p.timeout(round(1)) - 10;
    for i in 1..4 {
        let out = net.step_at(i, timeout_at(0), quorum_at);
        for msg in broadcasts(&out) {
            if matches!(&msg, ConsensusMessage::RoundChange(rc) if rc.round == round(1)) {
                net.step_at(0, Input::Message(msg), quorum_at);
            }
        }
    }
    // Node 0's own round-1 timer fires: it stays, and waits out the round with the others.
    let out = net.step_at(0, timeout_at(1), early + p.timeout(round(1)));
    assert_eq!(
        net.nodes[0].machine.round(),
        round(1),
        "left with the others arriving"
    );
    assert!(
        out.iter().any(
            |o| matches!(o, Output::ScheduleTimeout { round: r, after_ms, .. }
            if *r == round(1) && *after_ms == p.timeout(round(1)) - 10)
        ),
        "the rest of the round is timed from the quorum: {out:?}"
    );
    // Once the round has lasted its timeout for the quorum, node 0 moves on.
    net.step_at(0, timeout_at(1), quorum_at + p.timeout(round(1)));
    assert_eq!(net.nodes[0].machine.round(), round(2));
}

/// A proposal for the next height that arrives while the committed block is not yet applied
/// is validated only once it is (on its real parent), and then voted on. Kills "validate only
/// against the applied parent" (hole 6).
#[test]
fn n4_next_proposal_waits_until_the_commit_is_applied() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(1));
    let proposer_of = |net: &Manual, mix, height| {
        net.nodes[0]
            .machine
            .cn_set()
            .committee(mix, height, round(0), params().committee_size)
            .proposer
            .0 as usize
    };
    let proposer2 = proposer_of(&net, net.nodes[0].machine.tip().mix, Height(2));
    let out = net.propose(proposer2, Height(2), round(0));
    let ConsensusMessage::Proposal(p2) = broadcasts(&out)[0].clone() else {
        panic!("expected a proposal")
    };
    let proposer3 = proposer_of(&net, p2.block.header().mix, Height(3));
    // `slow` neither proposes height 2 nor height 3; the others decide height 2.
    let slow = (0..4).find(|&i| i != proposer2 && i != proposer3).unwrap();
    let others: Vec<usize> = (0..4).filter(|&i| i != slow).collect();
    net.vote_through(proposer2, &out, &others, &others);
    let block2 = net.nodes[proposer2].chain[1].clone();
    let out = net.propose(proposer3, Height(3), round(0));
    let proposal3 = broadcasts(&out)[0].clone();
    // `slow` learns height 2 is decided but has not applied it yet.
    let node = &mut net.nodes[slow];
    let out = node.machine.step(
        Input::Message(ConsensusMessage::Decided(Box::new(block2.clone()))),
        MANUAL_NOW_MS,
        &mut node.app,
    );
    assert!(out.iter().any(|o| matches!(o, Output::Committed(_))));
    let early = node
        .machine
        .step(Input::Message(proposal3), MANUAL_NOW_MS, &mut node.app);
    assert!(
        votes_of(&[(slow, early)], VoteKind::Prepare).is_empty(),
        "no vote on a proposal before its parent is applied"
    );
    node.app.commit(&block2).unwrap();
    let applied = node.machine.step(
        Input::Applied { height: Height(2) },
        MANUAL_NOW_MS,
        &mut node.app,
    );
    assert_eq!(
        votes_of(&[(slow, applied)], VoteKind::Prepare).len(),
        1,
        "the held proposal is validated on the applied parent and voted on"
    );
}

/// Round changes are answered with decided blocks only when signed by their sender for that
/// height's parent and region; a forged one (or one signed for another region) makes the node
/// send nothing. Kills "verify before acting" for past round changes (hole 10) and the
/// region/parent binding of round-change signatures (hole 11).
#[test]
fn n4_round_changes_are_bound_to_region_and_parent_and_verified_before_use() {
    use kaon::types::RoundChange;
    let mut net = Manual::new(4);
    net.decide_up_to(Height(1));
    let parent = net.nodes[0].chain[0].header().parent;
    let key = net.nodes[1].key.clone();
    let rc = |region: ChainId, parent: BlockHash| {
        let msg = RoundChange::signing_message(region, Height(1), parent, round(1), None);
        RoundChange {
            height: Height(1),
            round: round(1),
            sender: CnIndex(1),
            prepared: Vec::new(),
            prepared_block: Vec::new(),
            signature: key.sign(&msg).to_bytes(),
        }
    };
    let behind = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::PeerBehind { .. }))
            .count()
    };
    let region = params().region;
    for (what, forged) in [
        ("another region", rc(ChainId(region.0 + 1), parent)),
        ("another parent", rc(region, BlockHash(sha256(b"other")))),
    ] {
        let out = net.step(
            0,
            Input::Message(ConsensusMessage::RoundChange(Box::new(forged))),
        );
        assert_eq!(behind(&out), 0, "round change signed for {what}");
    }
    let out = net.step(
        0,
        Input::Message(ConsensusMessage::RoundChange(Box::new(rc(region, parent)))),
    );
    assert_eq!(
        behind(&out),
        1,
        "a genuine round change of a peer left behind"
    );
}

/// A CN restarted behind its own WAL (the block log lost its tail while the next height's
/// round change was durable) resumes that height, once it has caught up to it, in the round it
/// had asked for — not round 0, where it could vote again in rounds it has left.
#[test]
fn n4_restarted_behind_its_wal_resumes_in_the_round_it_asked_for() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(1));
    let block1 = net.nodes[0].chain[0].clone();
    let ks = keys(4);
    let set = Arc::new(CnSet::new(ks.iter().map(SecretKey::public_key).collect()).unwrap());
    let mut restarted = Machine::new(
        params(),
        CnIndex(3),
        ks[3].clone(),
        set,
        Arc::new(SigCache::new()),
        genesis(),
    );
    restarted.restore(&[WalEntry::RoundChanged {
        height: Height(2),
        round: round(5),
    }]);
    let mut app = SimApp::honest(4);
    restarted.step(Input::Start, MANUAL_NOW_MS, &mut app);
    let out = restarted.step(
        Input::Message(ConsensusMessage::Decided(Box::new(block1.clone()))),
        MANUAL_NOW_MS,
        &mut app,
    );
    assert!(out.iter().any(|o| matches!(o, Output::Committed(_))));
    app.commit(&block1).unwrap();
    restarted.step(
        Input::Applied { height: Height(1) },
        MANUAL_NOW_MS,
        &mut app,
    );
    assert_eq!(restarted.height(), Height(2));
    assert_eq!(restarted.round(), round(5));
}

/// Decided blocks of later heights are kept unverified while a node catches up; a peer that
/// sends a junk one first (real header and seal, another body) must not keep the real one out.
#[test]
fn n4_junk_decided_block_sent_first_does_not_keep_the_real_one_out() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(2));
    let (block1, block2) = (net.nodes[0].chain[0].clone(), net.nodes[0].chain[1].clone());
    let mut junk = block2.clone();
    junk.segments[0].txs = vec![Bytes::from_static(b"junk")];
    let mut fresh = Manual::new(4);
    fresh.start_all();
    for block in [junk, block2.clone(), block1.clone()] {
        fresh.step(
            0,
            Input::Message(ConsensusMessage::Decided(Box::new(block))),
        );
    }
    assert_eq!(fresh.nodes[0].chain, vec![block1, block2]);
}

/// A node that saw nothing of heights 1..=6 gets them all in one sync answer, highest first
/// (the order its driver feeds blocks that arrive together): block 1 commits after its own
/// checks, and the five buffered above it pass theirs in one batch at that moment, then
/// commit one by one as their heights come. Kills "blocks ahead are verified together"
/// (without it, none is counted as batch-verified).
#[test]
fn n4_a_node_catching_up_checks_the_blocks_ahead_in_one_batch() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(6));
    let chain = net.nodes[0].chain.clone();
    let mut fresh = Manual::new(4);
    fresh.start_all();
    fresh.deliver_decided(0, chain.iter().rev());
    assert_eq!(fresh.nodes[0].chain, chain);
    assert_eq!(fresh.nodes[0].machine.batch_verified(), 5);
}

/// A node holding blocks 2..=6 ahead asks for block 1 (the first height it lacks); once block 1
/// arrives and commits it asks for the range after what it holds (7), while it still has
/// five blocks to apply: fetching overlaps checking. Kills "ask for the next range when the
/// next block is held".
#[test]
fn n4_a_node_catching_up_asks_for_the_range_after_what_it_holds() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(6));
    let chain = net.nodes[0].chain.clone();
    let mut fresh = Manual::new(4);
    fresh.start_all();
    let asked = |outputs: &[Output]| -> Vec<Height> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::SyncNeeded { from } => Some(*from),
                _ => None,
            })
            .collect()
    };
    let mut early = Vec::new();
    for block in chain[1..].iter().rev() {
        early.extend(fresh.step(
            0,
            Input::Message(ConsensusMessage::Decided(Box::new(block.clone()))),
        ));
    }
    assert_eq!(
        asked(&early),
        vec![Height(1)],
        "asked once for what it lacks"
    );
    let outputs = fresh.step(
        0,
        Input::Message(ConsensusMessage::Decided(Box::new(chain[0].clone()))),
    );
    assert_eq!(asked(&outputs), vec![Height(7)]);
    assert_eq!(fresh.nodes[0].chain, chain);
}

/// The same answer with block 4 carrying block 3's certificate (the header is real, so the
/// hash is too): the batch fails and marks nothing, blocks 1 to 3 commit after their own
/// checks, the forged block 4 is refused, and once the real block 4 arrives the rest passes as
/// a batch. Kills "a failed batch marks nothing" (marking its blocks commits the forged one).
#[test]
fn n4_a_forged_certificate_ahead_fails_the_batch_and_is_never_committed() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(6));
    let chain = net.nodes[0].chain.clone();
    let mut forged = chain[3].clone();
    forged.sealed.seal = chain[2].sealed.seal.clone();
    assert_eq!(forged.hash(), chain[3].hash());
    let mut answer = chain.clone();
    answer[3] = forged;
    let mut fresh = Manual::new(4);
    fresh.start_all();
    fresh.deliver_decided(0, answer.iter().rev());
    assert_eq!(fresh.nodes[0].chain, chain[..3]);
    assert_eq!(fresh.nodes[0].machine.batch_verified(), 0);
    assert_eq!(fresh.nodes[0].machine.rejections().bad_decided, 1);
    fresh.deliver_decided(0, [&chain[3]]);
    assert_eq!(fresh.nodes[0].chain, chain);
    assert_eq!(fresh.nodes[0].machine.batch_verified(), 2);
}

/// Blocks 2 and 3 are held ahead; block 1 commits and the batch marks block 2 as checked.
/// Before block 1 is applied, a peer sends block 2's header and seal over another body: it is
/// held for the next height and replayed first. The mark names the header and seal, not the
/// body, so the body is checked again: the forged block is refused and the real one commits.
/// Kills "a block verified ahead still has its body checked" (review finding 2 of hole 2).
#[test]
fn n4_a_forged_body_under_a_block_verified_ahead_is_refused() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(3));
    let chain = net.nodes[0].chain.clone();
    let mut forged = chain[1].clone();
    forged.segments[0].txs = vec![Bytes::from_static(b"forged")];
    assert_eq!(forged.hash(), chain[1].hash());
    let mut fresh = Manual::new(4);
    fresh.start_all();
    fresh.deliver_decided(0, [&chain[2], &chain[1]]);
    // Block 1 commits; the driver has not applied it yet when the forged block 2 arrives.
    let node = &mut fresh.nodes[0];
    let decided = |b: &Block| Input::Message(ConsensusMessage::Decided(Box::new(b.clone())));
    let out = node
        .machine
        .step(decided(&chain[0]), MANUAL_NOW_MS, &mut node.app);
    assert!(out.iter().any(|o| matches!(o, Output::Committed(_))));
    assert!(node.machine.awaiting_applied());
    node.machine
        .step(decided(&forged), MANUAL_NOW_MS, &mut node.app);
    node.app.commit(&chain[0]).unwrap();
    node.chain.push(chain[0].clone());
    fresh.step(0, Input::Applied { height: Height(1) });
    assert_eq!(fresh.nodes[0].chain, chain);
    assert_eq!(fresh.nodes[0].machine.batch_verified(), 2);
    assert_eq!(fresh.nodes[0].machine.rejections().bad_decided, 1);
}

/// Blocks 2..=4 are held ahead and pass as a batch when block 1 commits. Before block 1 is
/// applied, a peer sends another body under block 3's header and seal; it is replayed once
/// block 1 is applied, when height 3 is still verified ahead. A height whose block is
/// verified takes no more candidates, so the node then holds exactly what a node that never
/// saw the other body holds (a held copy would spend the byte budget, and could push out
/// verified blocks further ahead, for a block that can only lose). Kills "no candidates at
/// heights verified ahead".
#[test]
fn n4_a_height_verified_ahead_takes_no_more_candidates() {
    let mut net = Manual::new(4);
    net.decide_up_to(Height(4));
    let chain = net.nodes[0].chain.clone();
    let mut other = chain[2].clone();
    other.segments[0].txs = vec![Bytes::from(vec![7u8; 4096])];
    let decided = |b: &Block| Input::Message(ConsensusMessage::Decided(Box::new(b.clone())));
    let held_after_block_1 = |intruder: Option<&Block>| {
        let mut fresh = Manual::new(4);
        fresh.start_all();
        fresh.deliver_decided(0, chain[1..].iter().rev());
        let node = &mut fresh.nodes[0];
        let out = node
            .machine
            .step(decided(&chain[0]), MANUAL_NOW_MS, &mut node.app);
        assert!(out.iter().any(|o| matches!(o, Output::Committed(_))));
        assert_eq!(
            node.machine.best_known_height(),
            Height(4),
            "2..=4 verified"
        );
        if let Some(block) = intruder {
            node.machine
                .step(decided(block), MANUAL_NOW_MS, &mut node.app);
        }
        node.app.commit(&chain[0]).unwrap();
        // Block 1 applied: the intruder is replayed, and block 2 commits (not applied yet).
        let out = node.machine.step(
            Input::Applied { height: Height(1) },
            MANUAL_NOW_MS,
            &mut node.app,
        );
        assert!(out.iter().any(|o| matches!(o, Output::Committed(_))));
        (node.machine.heights_held_ahead(), node.machine.held_bytes())
    };
    let clean = held_after_block_1(None);
    assert_eq!(clean.0, vec![Height(3), Height(4)]);
    assert_eq!(held_after_block_1(Some(&other)), clean);
}

/// A peer fills the byte budget of blocks ahead with junk further ahead; the next block still
/// finds room, by pushing out the furthest. Kills "nearer blocks ahead push out further ones"
/// (without it the real block is refused while the junk stays until its height).
#[test]
fn n4_junk_far_ahead_does_not_keep_the_next_block_out() {
    use kaon::consensus::machine::MAX_FUTURE_BLOCK_BYTES as BUDGET;
    let mut net = Manual::new(4);
    net.decide_up_to(Height(2));
    let chain = net.nodes[0].chain.clone();
    let junk_at = |height: u64, copy: u8, size: usize| {
        let mut b = chain[1].clone();
        b.sealed.header.height = Height(height);
        b.segments[0].txs = vec![Bytes::from(vec![copy; size])];
        b
    };
    let mut fresh = Manual::new(4);
    fresh.start_all();
    // 1.2 MB of junk per candidate, four per height: more than the budget holds.
    for height in 3..=65 {
        for copy in 0..4 {
            fresh.deliver_decided(0, [&junk_at(height, copy, 1_200_000)]);
        }
    }
    // Then one block that leaves less room than block 2 needs.
    let room = BUDGET - fresh.nodes[0].machine.held_bytes();
    let bare = alloy_rlp::Encodable::length(&junk_at(65, 9, 0));
    fresh.deliver_decided(0, [&junk_at(65, 9, room - bare - 64)]);
    let left = BUDGET - fresh.nodes[0].machine.held_bytes();
    assert!(
        left < alloy_rlp::Encodable::length(&chain[1]),
        "{left} bytes left"
    );
    let before = fresh.nodes[0].machine.heights_held_ahead();
    assert_eq!(before.last(), Some(&Height(65)));
    fresh.deliver_decided(0, [&chain[1]]);
    // Height 65, the furthest, made room for block 2; nothing else went.
    let mut expected = vec![Height(2)];
    expected.extend_from_slice(&before[..before.len() - 1]);
    assert_eq!(fresh.nodes[0].machine.heights_held_ahead(), expected);
    fresh.deliver_decided(0, [&chain[0]]);
    assert_eq!(fresh.nodes[0].chain, chain);
}

/// The byte budget ahead is nearly full of junk at heights 3..=63 and 65; a block at height
/// 64 larger than the room left plus everything beyond it cannot fit, so it is refused and
/// nothing is dropped for it. Kills "nothing is dropped unless the block then fits" (without it height
/// 65 is thrown away for a block that is refused anyway).
#[test]
fn n4_a_block_that_cannot_fit_ahead_drops_nothing() {
    use kaon::consensus::machine::MAX_FUTURE_BLOCK_BYTES as BUDGET;
    let mut net = Manual::new(4);
    net.decide_up_to(Height(1));
    let block = net.nodes[0].chain[0].clone();
    let junk_at = |height: u64, copy: u8, size: usize| {
        let mut b = block.clone();
        b.sealed.header.height = Height(height);
        b.segments[0].txs = vec![Bytes::from(vec![copy; size])];
        b
    };
    let mut fresh = Manual::new(4);
    fresh.start_all();
    for height in (3..=63).chain([65]) {
        for copy in 0..4 {
            fresh.deliver_decided(0, [&junk_at(height, copy, 1_050_000)]);
        }
    }
    let before = fresh.nodes[0].machine.heights_held_ahead();
    assert_eq!(before.last(), Some(&Height(65)));
    let held = fresh.nodes[0].machine.held_bytes();
    assert!(held < BUDGET, "{held} bytes held");
    // Room left plus height 65's 4.2 MB, and 1 MB more.
    fresh.deliver_decided(0, [&junk_at(64, 9, BUDGET - held + 5_200_000)]);
    assert_eq!(fresh.nodes[0].machine.heights_held_ahead(), before);
    assert_eq!(fresh.nodes[0].machine.held_bytes(), held);
}

impl Manual {
    /// Delivers decided blocks to node `to`, in the order given.
    fn deliver_decided<'a>(&mut self, to: usize, blocks: impl IntoIterator<Item = &'a Block>) {
        for block in blocks {
            self.step(
                to,
                Input::Message(ConsensusMessage::Decided(Box::new(block.clone()))),
            );
        }
    }
}

impl Manual {
    /// Height 1's round-0 proposal is prepared by every node (all prepare votes delivered,
    /// commit votes lost); a node other than the proposer times out. Returns that node, a
    /// third node, and its round change for round 1 (carrying the prepared certificate and
    /// block).
    fn prepared_round_change(&mut self) -> (usize, usize, kaon::types::RoundChange) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let proposer = self.start_all();
        let proposal = self.propose(proposer, Height(1), round(0));
        let prepares = self.deliver(proposer, &proposal, &all);
        for (from, outs) in votes_of(&prepares, VoteKind::Prepare) {
            self.deliver(from, &outs, &all);
        }
        let sender = all.iter().copied().find(|&i| i != proposer).unwrap();
        let target = all
            .iter()
            .copied()
            .find(|&i| i != proposer && i != sender)
            .unwrap();
        let timeout = Input::Timeout {
            height: Height(1),
            round: round(0),
        };
        (sender, target, round_change_of(&self.step(sender, timeout)))
    }
}

/// The first round change carried by node `from`'s outputs.
fn round_change_of(outputs: &[Output]) -> kaon::types::RoundChange {
    broadcasts(outputs)
        .into_iter()
        .find_map(|m| match m {
            ConsensusMessage::RoundChange(rc) => Some(*rc),
            _ => None,
        })
        .expect("a round change")
}

/// A member sends its round change with the same 64 KiB prepared block for every round of
/// the window: the receiver holds the block once, not once per round change. Kills "round
/// changes are kept without their blocks, each block once by hash" (the round-change book
/// was bounded by count, not bytes: 16 rounds × members × a block each).
#[test]
fn n4_a_prepared_block_is_held_once_however_many_round_changes_carry_it() {
    let mut net = Manual::new(4);
    for node in &mut net.nodes {
        node.app.pad = 64 << 10;
    }
    let h = Height(1);
    let (sender, target, rc) = net.prepared_round_change();
    assert_eq!(rc.prepared_block.len(), 1, "it carries the prepared block");
    let block_len = alloy_rlp::Encodable::length(&rc.prepared_block[0]);
    let key = net.nodes[sender].key.clone();
    let before = net.nodes[target].machine.held_bytes();
    for r in 1..=16 {
        let mut copy = rc.clone();
        copy.round = round(r);
        let msg = kaon::types::RoundChange::signing_message(
            params().region,
            h,
            genesis().hash,
            copy.round,
            copy.prepared.first(),
        );
        copy.signature = key.sign(&msg).to_bytes();
        net.step(
            target,
            Input::Message(ConsensusMessage::RoundChange(Box::new(copy))),
        );
    }
    assert_eq!(net.nodes[target].machine.round(), round(0), "no jump");
    assert_eq!(net.nodes[target].machine.rejections().bad_round_change, 0);
    let grown = net.nodes[target].machine.held_bytes() - before;
    assert!(
        grown < block_len,
        "16 round changes naming one {block_len}-byte block made the node hold {grown} more bytes"
    );
}

/// A proposer signs ten more blocks for a round it already proposed in: the node executes
/// the first only, and reports each other one as equivocation. Kills "conflicting proposals
/// are found before the block is executed" (each twin cost an execution).
#[test]
fn n4_an_equivocating_proposer_costs_one_execution_per_round() {
    use kaon::consensus::machine::Misbehavior;
    let mut net = Manual::new(4);
    let proposer = net.start_all();
    let out = net.propose(proposer, Height(1), round(0));
    let p = match &broadcasts(&out)[0] {
        ConsensusMessage::Proposal(p) => p.clone(),
        other => panic!("expected a proposal, got {other:?}"),
    };
    let target = (0..4).find(|&i| i != proposer).unwrap();
    let validations = net.nodes[target].app.validations;
    net.step(
        target,
        Input::Message(ConsensusMessage::Proposal(p.clone())),
    );
    assert_eq!(net.nodes[target].app.validations, validations + 1);
    let key = net.nodes[proposer].key.clone();
    let mut reports = 0;
    for k in 1..=10 {
        let twin = restamp(&key, &p, p.block.header().timestamp_ms + k);
        let out = net.step(
            target,
            Input::Message(ConsensusMessage::Proposal(Box::new(twin))),
        );
        reports += out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Misbehavior(Misbehavior::ConflictingProposals { .. })
                )
            })
            .count();
    }
    assert_eq!(
        net.nodes[target].app.validations,
        validations + 1,
        "twins were executed"
    );
    assert_eq!(reports, 10, "each twin is reported");
}

/// Height 1 renumbers the CN set (every member moves down one place); the network goes on
/// deciding. A round change for height 1 is then checked against the set of height 1, and the
/// peer to help is named in the current set. Kills "past round changes are verified against
/// the CN set of their height" (they were verified against the current one).
#[test]
fn n4_after_a_cn_set_change_past_round_changes_are_checked_in_the_set_of_their_height() {
    let mut net = Manual::new(4);
    for node in &mut net.nodes {
        node.app.set_change_at = Some(Height(1));
    }
    net.decide_up_to(Height(2));
    let keys = keys(4);
    assert_eq!(
        net.nodes[0].machine.cn_set().keys()[0],
        keys[1].public_key(),
        "the set was renumbered"
    );
    // CN 1 of height 1's set is CN 0 of the current one.
    let old_rc = |sender: u32| {
        let msg = kaon::types::RoundChange::signing_message(
            params().region,
            Height(1),
            genesis().hash,
            round(1),
            None,
        );
        kaon::types::RoundChange {
            height: Height(1),
            round: round(1),
            sender: CnIndex(sender),
            prepared: Vec::new(),
            prepared_block: Vec::new(),
            signature: keys[1].sign(&msg).to_bytes(),
        }
    };
    let behind = |out: &[Output]| -> Vec<CnIndex> {
        out.iter()
            .filter_map(|o| match o {
                Output::PeerBehind { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    };
    let wrong = net.step(
        2,
        Input::Message(ConsensusMessage::RoundChange(Box::new(old_rc(0)))),
    );
    assert!(
        behind(&wrong).is_empty(),
        "signed by CN 1, not CN 0, at height 1"
    );
    let right = net.step(
        2,
        Input::Message(ConsensusMessage::RoundChange(Box::new(old_rc(1)))),
    );
    assert_eq!(behind(&right), vec![CnIndex(0)], "CN 1 then is CN 0 now");
}

/// Ranks are public and votes carry no proof of selection: a receiver recomputes the
/// committee, and a correctly signed vote from a CN outside it is refused. Kills "votes count
/// only from the height's committee" (6 CNs, committees of 4).
#[test]
fn n6_committee4_a_signed_vote_from_outside_the_committee_is_refused() {
    let mut net = Manual::with_committee(6, 4);
    let proposer = net.start_all();
    let committee =
        net.nodes[proposer]
            .machine
            .cn_set()
            .committee(genesis().mix, Height(1), round(0), 4);
    let outsider = (0..6)
        .find(|&i| committee.position(CnIndex(i as u32)).is_none())
        .expect("two CNs are outside a committee of 4");
    let member = (0..6)
        .find(|&i| i != proposer && committee.position(CnIndex(i as u32)).is_some())
        .unwrap();
    let out = net.propose(proposer, Height(1), round(0));
    let hash = match &broadcasts(&out)[0] {
        ConsensusMessage::Proposal(p) => p.block.hash(),
        other => panic!("expected a proposal, got {other:?}"),
    };
    let signing = Vote::signing_message(VoteKind::Prepare, Height(1), round(0), hash);
    let vote = Vote {
        kind: VoteKind::Prepare,
        height: Height(1),
        round: round(0),
        block_hash: hash,
        voter: CnIndex(outsider as u32),
        signature: net.nodes[outsider].key.sign(&signing).to_bytes(),
    };
    let before = net.nodes[member].machine.rejections().bad_vote;
    net.step(
        member,
        Input::Message(ConsensusMessage::Vote(Box::new(vote))),
    );
    assert_eq!(
        net.nodes[member].machine.rejections().bad_vote,
        before + 1,
        "CN {outsider} is not on the committee"
    );
}

/// A round change carries a real prepared certificate and header but another body (the hash
/// covers only the header): refused, so no other body can be filed and re-proposed under a
/// real certificate. Kills "a carried prepared block's body matches its header".
#[test]
fn n4_a_round_change_carrying_another_body_under_a_real_certificate_is_refused() {
    let mut net = Manual::new(4);
    let (_, target, mut rc) = net.prepared_round_change();
    rc.prepared_block[0].segments[0].txs = vec![Bytes::from_static(b"another body")];
    let before = net.nodes[target].machine.rejections().bad_round_change;
    net.step(
        target,
        Input::Message(ConsensusMessage::RoundChange(Box::new(rc))),
    );
    assert_eq!(
        net.nodes[target].machine.rejections().bad_round_change,
        before + 1
    );
}

// ---- Leader-aggregated votes -------------------------------------------------------------

/// The messages among `outputs` that leave the node (broadcast or sent to one CN).
fn sent(outputs: &[Output]) -> Vec<&Output> {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::Broadcast(_) | Output::Send { .. }))
        .collect()
}

/// Asserts that each node in `outputs` sent exactly one message: its `kind` vote, to `leader`.
fn assert_voted_to(outputs: &[(usize, Vec<Output>)], kind: VoteKind, leader: usize) {
    assert!(!outputs.is_empty(), "some {kind:?} votes were cast");
    for (from, outs) in outputs {
        let sent = sent(outs);
        assert!(
            matches!(sent.as_slice(), [Output::Send { to, message: ConsensusMessage::Vote(v) }]
                if to.0 as usize == leader && v.kind == kind),
            "node {from} must send its {kind:?} vote to the leader only: {sent:?}"
        );
    }
}

/// With votes routed to the leader a height takes O(n) messages: each member sends its
/// prepare and commit votes to the round's proposer only, the proposer broadcasts the two
/// certificates it aggregates, and every member commits the proposed block on them. Kills
/// "the leader broadcasts what it aggregates" and "a member acts on a verified certificate".
#[test]
fn n4_votes_go_to_the_leader_and_its_certificates_decide() {
    let mut net = Manual::new(4);
    let leader = net.start_all();
    let members: Vec<usize> = (0..4).filter(|&i| i != leader).collect();
    let out = net.propose(leader, Height(1), round(0));
    let prepares = net.deliver(leader, &out, &members);
    assert_voted_to(&prepares, VoteKind::Prepare, leader);
    let mut at_leader = Vec::new();
    for (from, outs) in &prepares {
        at_leader.extend(net.deliver(*from, outs, &[leader]));
    }
    let prepared = certificates_of(&at_leader, VoteKind::Prepare);
    assert_eq!(
        prepared.len(),
        1,
        "the leader broadcasts its prepared certificate"
    );
    let commits = net.deliver(leader, &prepared[0].1, &members);
    assert_voted_to(&commits, VoteKind::Commit, leader);
    let mut sealed = Vec::new();
    for (from, outs) in &commits {
        sealed.extend(net.deliver(*from, outs, &[leader]));
    }
    assert_eq!(net.nodes[leader].chain.len(), 1, "the leader decided");
    let seal = certificates_of(&sealed, VoteKind::Commit);
    assert_eq!(
        seal.len(),
        1,
        "the leader broadcasts its commit certificate"
    );
    net.deliver(leader, &seal[0].1, &members);
    let decided = net.nodes[leader].chain[0].hash();
    for i in members {
        assert_eq!(net.nodes[i].chain.len(), 1, "member {i} decided");
        assert_eq!(
            net.nodes[i].chain[0].hash(),
            decided,
            "member {i} decided the same block"
        );
    }
}

/// A commit certificate for `hash` signed by `signers` over `signed` (normally `hash`), with
/// `claimed` as its signer bitmap's members.
fn commit_certificate(
    net: &Manual,
    hash: BlockHash,
    signed: BlockHash,
    signers: &[usize],
    claimed: &[usize],
) -> ConsensusMessage {
    let committee = net.nodes[0].machine.cn_set().committee(
        genesis().mix,
        Height(1),
        round(0),
        params().committee_size,
    );
    let msg = Vote::signing_message(VoteKind::Commit, Height(1), round(0), signed);
    let sigs: Vec<kaon::crypto::bls::Signature> = signers
        .iter()
        .map(|&i| net.nodes[i].key.sign(&msg))
        .collect();
    let mut bitmap = kaon::types::SignerBitmap::with_members(committee.size());
    for &i in claimed {
        bitmap.set(committee.position(CnIndex(i as u32)).expect("a member"));
    }
    ConsensusMessage::Certificate(Box::new(kaon::types::QuorumCertificate {
        kind: VoteKind::Commit,
        height: Height(1),
        round: round(0),
        block_hash: hash,
        signers: bitmap,
        aggregate: kaon::crypto::bls::aggregate_signatures(&sigs)
            .unwrap()
            .to_bytes(),
    }))
}

/// A certificate counts only once its aggregate signature verifies against a quorum of the
/// committee: one whose bitmap claims a signer that did not sign, or whose quorum signed
/// another block, commits nothing; the genuine one commits. Kills "verify a certificate
/// before acting on it".
#[test]
fn n4_a_forged_leader_certificate_commits_nothing() {
    let mut net = Manual::new(4);
    let leader = net.start_all();
    let out = net.propose(leader, Height(1), round(0));
    let hash = match &broadcasts(&out)[0] {
        ConsensusMessage::Proposal(p) => p.block.hash(),
        other => panic!("expected a proposal, got {other:?}"),
    };
    let victim = (0..4).find(|&i| i != leader).unwrap();
    net.deliver(leader, &out, &[victim]);
    let quorum: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
    let other = BlockHash(sha256(b"another block"));
    let forgeries = [
        commit_certificate(&net, hash, hash, &quorum[..2], &quorum),
        commit_certificate(&net, hash, other, &quorum, &quorum),
    ];
    for (n, forged) in forgeries.into_iter().enumerate() {
        net.step(victim, Input::Message(forged));
        assert_eq!(net.nodes[victim].chain.len(), 0, "forgery {n} committed");
        assert_eq!(
            net.nodes[victim].machine.rejections().bad_certificate,
            n as u64 + 1
        );
    }
    let genuine = commit_certificate(&net, hash, hash, &quorum, &quorum);
    net.step(victim, Input::Message(genuine));
    assert_eq!(
        net.nodes[victim].chain.len(),
        1,
        "the genuine certificate commits"
    );
    assert_eq!(net.nodes[victim].chain[0].hash(), hash);
}

/// A member that missed the proposal learns the decision from the leader's commit
/// certificate: it asks peers for the decided block at once (rather than timing out) and
/// commits it when it comes. Kills "fetch the block a commit certificate names".
#[test]
fn n4_a_commit_certificate_without_its_block_fetches_the_block() {
    let mut net = Manual::new(4);
    let leader = net.start_all();
    let out = net.propose(leader, Height(1), round(0));
    let late = (0..4).find(|&i| i != leader).unwrap();
    let others: Vec<usize> = (0..4).filter(|&i| i != late).collect();
    net.vote_through(leader, &out, &others, &others);
    let block = net.nodes[leader].chain[0].clone();
    let seal = block.sealed.seal.clone();
    let certificate = ConsensusMessage::Certificate(Box::new(kaon::types::QuorumCertificate {
        kind: VoteKind::Commit,
        height: Height(1),
        round: seal.round,
        block_hash: block.hash(),
        signers: seal.signers,
        aggregate: seal.aggregate,
    }));
    let asked = net.step(late, Input::Message(certificate));
    assert!(
        asked
            .iter()
            .any(|o| matches!(o, Output::SyncNeeded { from } if *from == Height(1))),
        "the block is asked for: {asked:?}"
    );
    assert!(net.nodes[late].chain.is_empty());
    // That peer may not have committed yet: the round timer asks again.
    let again = net.step(
        late,
        Input::Timeout {
            height: Height(1),
            round: round(0),
        },
    );
    assert!(
        again
            .iter()
            .any(|o| matches!(o, Output::SyncNeeded { from } if *from == Height(1))),
        "the block is asked for again: {again:?}"
    );
    net.step(
        late,
        Input::Message(ConsensusMessage::Decided(Box::new(block.clone()))),
    );
    assert_eq!(net.nodes[late].chain.len(), 1);
    assert_eq!(net.nodes[late].chain[0].hash(), block.hash());
}

/// What one height costs a committee, measured in the simulation.
#[derive(Debug)]
struct HeightCost {
    /// Consensus messages sent per block (one per recipient), by all nodes.
    messages: f64,
    /// Their bytes on the wire per block.
    bytes: f64,
    /// BLS checks per block by the node that checked least / most (the leaders check most).
    checks_min: f64,
    checks_max: f64,
}

/// Runs `n` honest CNs (committee `n`, no loss) to the target height with votes routed by
/// `votes`; each node has its own signature cache when `own_caches` (so checks are counted
/// per node; all-to-all at 100 nodes would take minutes that way, and its message count does
/// not depend on the caches).
fn height_cost(n: usize, votes: VoteRouting, own_caches: bool) -> HeightCost {
    let scenario = Scenario::calm(n, n, votes);
    let shared = Arc::new(SigCache::new());
    let mut sim = Sim::with_caches(1, scenario, &keys(n), |_| match own_caches {
        true => Arc::new(SigCache::new()),
        false => Arc::clone(&shared),
    });
    sim.run().expect("an honest network decides");
    let blocks = sim.nodes.iter().map(|node| node.chain.len()).min().unwrap() as f64;
    let per_block = |node: &Node| node.checks as f64 / node.chain.len() as f64;
    let checks = sim.nodes.iter().map(per_block);
    HeightCost {
        messages: sim.stats.messages as f64 / blocks,
        bytes: sim.stats.bytes as f64 / blocks,
        checks_min: checks.clone().fold(f64::MAX, f64::min),
        checks_max: checks.fold(0.0, f64::max),
    }
}

/// A committee of 100: leader aggregation sends at least ten times fewer consensus messages
/// per block than all-to-all, and the least-loaded member checks at most four signatures a
/// block (the proposal's reveal and prepare vote, the two certificates) instead of one per
/// vote. The figures go to `docs/benchmarks.md`. Kills routing votes to the leader.
#[test]
fn n100_leader_aggregation_sends_ten_times_fewer_messages_per_block() {
    let leader = height_cost(100, VoteRouting::Leader, true);
    let all = height_cost(100, VoteRouting::AllToAll, false);
    for (name, c) in [("leader", &leader), ("all-to-all", &all)] {
        eprintln!(
            "committee of 100, {name}: {:.0} messages, {:.0} bytes, {:.1}..{:.1} checks per block",
            c.messages, c.bytes, c.checks_min, c.checks_max
        );
    }
    assert!(
        all.messages >= 10.0 * leader.messages,
        "leader {leader:?} vs all-to-all {all:?}"
    );
    assert!(leader.checks_min <= 4.0, "{leader:?}");
}
