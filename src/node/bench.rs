//! `kaon bench consensus`: the consensus layer alone, for benchmarkers.
//!
//! `nodes` CNs run in this process, each with the consensus stage a CN runs (the state machine,
//! its WAL with one group commit per step, QUIC on 127.0.0.1, sync between peers), ordering
//! opaque payloads: no signature recovery, no execution. One client per CN offers payloads at
//! an even share of the rate and gossips them to the other CNs (the global pool, as CN ingress
//! does with transactions); each payload carries its send time, so CN 0 measures client send →
//! commit for every payload it commits. The report is committed payloads per second and the
//! latency percentiles, plus what was still uncommitted after a drain and what was committed
//! twice (both zero below saturation).
//!
//! May import the layers below `node/` (consensus, crypto, link, net, pipeline, storage, types).

use crate::consensus::machine::{Application, InvalidBlock, Machine, Params, Tip, VoteRouting};
use crate::consensus::proposal::BlockBody;
use crate::consensus::selection::CnSet;
use crate::consensus::verifier::SigCache;
use crate::crypto::bls::SecretKey;
use crate::link::{link, LinkReceiver};
use crate::net::{Inbound, NetConfig, Network};
use crate::pipeline::consensus::{route_inbound, ConsensusStage, ConsensusStatus, StageApp};
use crate::pipeline::Supervisor;
use crate::storage::blocklog::{BlockLog, BlockLogOptions};
use crate::types::codec::encode_frame;
use crate::types::{Block, BlockHash, ChainId, CnIndex, Height, Segment, TxBatch};
use alloy_primitives::{Bytes, B256};
use anyhow::Context;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Smallest payload: its send time (8 bytes), client (4) and sequence number (8).
pub const MIN_PAYLOAD_BYTES: usize = 20;
/// Largest payload (a transaction's size bound).
pub const MAX_PAYLOAD_BYTES: usize = 128 << 10;
/// Payload bytes one block takes at most.
const MAX_BLOCK_PAYLOAD_BYTES: usize = 4 << 20;
/// Payload bytes all CNs together hold unordered (each its share); a client whose CN is full
/// offers the same payloads again next tick, as a client under backpressure does.
const POOL_BYTES: usize = 1 << 30;
/// Payload bytes a client makes in one tick at most (the rest come due next tick).
const TICK_BYTES: usize = 64 << 20;
/// Latency histogram resolution and range: 100 µs buckets up to a minute (and one beyond).
const LATENCY_BUCKET_US: u64 = 100;
const LATENCY_BUCKETS: usize = 600_000;
/// How often a client offers what its rate has made due.
const CLIENT_TICK: Duration = Duration::from_millis(5);
/// How long committing may go on after the clients stop, for the payloads still in flight.
const DRAIN: Duration = Duration::from_secs(10);
/// The region the bench's CNs form (any id: nothing outside the process sees it).
const REGION: ChainId = ChainId(1000);

/// What `kaon bench consensus` runs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub nodes: usize,
    pub payload_bytes: usize,
    /// Payloads per second offered by all clients together.
    pub rate: u64,
    pub duration: Duration,
    pub votes: VoteRouting,
    /// How long a proposer lets payloads gather once some wait.
    pub batch_ms: u64,
    /// Interval of empty blocks when nothing waits (and the base of the round timeout).
    pub idle_ms: u64,
    /// Each CN's WAL and logs go in a subdirectory of this.
    pub datadir: PathBuf,
    /// Proposals name their payloads by id (filled from each CN's pool) instead of carrying
    /// them ([`crate::pipeline::compact`]).
    pub compact: bool,
    /// Clients do not gossip: each CN holds only its own client's payloads, so every compact
    /// proposal is asked of its proposer in full (the fall-back's cost, and its test).
    pub no_gossip: bool,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub nodes: usize,
    pub payload_bytes: usize,
    pub offered_rate: u64,
    /// Payloads the clients offered and their CN took.
    pub sent: u64,
    /// Payloads that came due but were still waiting for room in their CN's full pool when
    /// the load stopped (a client under backpressure offers them again; latency counts from
    /// when its CN took a payload).
    pub deferred: u64,
    /// Distinct payloads CN 0 committed.
    pub committed: u64,
    /// Payloads sent but not committed at CN 0 when the drain ended (10 s after the load
    /// stopped): past saturation, the backlog.
    pub uncommitted: u64,
    /// Payloads CN 0 saw committed a second time.
    pub duplicates: u64,
    /// How proposals crossed the network ("compact" or "full").
    pub proposals: &'static str,
    /// Compact proposals a CN could not fill from its pool in time and asked for in full.
    pub asked_full: u64,
    /// Payloads those lacked.
    pub missing_when_asked: u64,
    pub blocks: u64,
    /// Payloads committed per second in the measured window (after a warm-up).
    pub committed_rate: f64,
    /// Client send → commit at CN 0, milliseconds, of payloads sent in the window (the mean
    /// is what asonnino/hotstuff's benchmark reports as end-to-end latency).
    pub latency_mean_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_p99_ms: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "consensus bench: {} nodes, {}-byte payloads, offered {}/s: committed {:.0}/s, \
             latency mean {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms \
             (client send -> commit), \
             {} blocks, {} uncommitted, {} duplicates, {} deferred, \
             {} proposals, {} asked in full ({} payloads missing)",
            self.nodes,
            self.payload_bytes,
            self.offered_rate,
            self.committed_rate,
            self.latency_mean_ms,
            self.latency_p50_ms,
            self.latency_p90_ms,
            self.latency_p99_ms,
            self.blocks,
            self.uncommitted,
            self.duplicates,
            self.deferred,
            self.proposals,
            self.asked_full,
            self.missing_when_asked
        )
    }
}

/// A payload's identity: the client that made it and its sequence number there.
type PayloadId = (u32, u64);

/// The header every payload starts with; the rest is padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PayloadHeader {
    sent_us: u64,
    client: u32,
    seq: u64,
}

impl PayloadHeader {
    fn encode(&self, size: usize) -> Bytes {
        let mut bytes = vec![0u8; size.max(MIN_PAYLOAD_BYTES)];
        bytes[..8].copy_from_slice(&self.sent_us.to_be_bytes());
        bytes[8..12].copy_from_slice(&self.client.to_be_bytes());
        bytes[12..20].copy_from_slice(&self.seq.to_be_bytes());
        Bytes::from(bytes)
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        let head = payload.get(..MIN_PAYLOAD_BYTES)?;
        Some(Self {
            sent_us: u64::from_be_bytes(head[..8].try_into().ok()?),
            client: u32::from_be_bytes(head[8..12].try_into().ok()?),
            seq: u64::from_be_bytes(head[12..20].try_into().ok()?),
        })
    }

    fn id(&self) -> PayloadId {
        (self.client, self.seq)
    }
}

/// One client's committed sequence numbers: every one below `floor`, and those in `above`
/// (bounded by how far commits run out of the client's order).
#[derive(Debug, Default)]
struct CommittedSeqs {
    floor: u64,
    above: BTreeSet<u64>,
}

impl CommittedSeqs {
    fn contains(&self, seq: u64) -> bool {
        seq < self.floor || self.above.contains(&seq)
    }

    fn insert(&mut self, seq: u64) {
        if seq >= self.floor {
            self.above.insert(seq);
            while self.above.remove(&self.floor) {
                self.floor += 1;
            }
        }
    }
}

/// Payloads waiting to be ordered at one CN, in arrival order, bounded by bytes; a payload
/// once committed is never taken again (a late gossip copy included).
#[derive(Debug, Default)]
struct PayloadPool {
    held: HashMap<PayloadId, Bytes>,
    order: VecDeque<PayloadId>,
    bytes: usize,
    /// Bytes held at most.
    capacity: usize,
    committed: HashMap<u32, CommittedSeqs>,
}

impl PayloadPool {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    fn is_committed(&self, (client, seq): PayloadId) -> bool {
        self.committed.get(&client).is_some_and(|c| c.contains(seq))
    }

    /// Takes a payload from a client: only while the pool is less than half full, so the
    /// gossip of payloads the other CNs took always finds room here (every pool holds every
    /// client's payloads; one that refused some could fill no compact proposal naming them).
    fn admit(&mut self, payload: Bytes) -> bool {
        self.bytes.saturating_add(payload.len()) <= self.capacity / 2 && self.insert(payload)
    }

    /// Takes a payload; false when it is malformed, held, committed or the pool is full.
    fn insert(&mut self, payload: Bytes) -> bool {
        let Some(id) = PayloadHeader::decode(&payload).map(|h| h.id()) else {
            return false;
        };
        let full = self.bytes.saturating_add(payload.len()) > self.capacity;
        if full || self.held.contains_key(&id) || self.is_committed(id) {
            return false;
        }
        self.bytes += payload.len();
        self.order.push_back(id);
        self.held.insert(id, payload);
        true
    }

    /// The oldest payloads, up to `max_bytes`, left in the pool until committed.
    fn oldest(&mut self, max_bytes: usize) -> Vec<Bytes> {
        while self
            .order
            .front()
            .is_some_and(|id| !self.held.contains_key(id))
        {
            self.order.pop_front();
        }
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        for payload in self.order.iter().filter_map(|id| self.held.get(id)) {
            if bytes + payload.len() > max_bytes {
                break;
            }
            bytes += payload.len();
            taken.push(payload.clone());
        }
        taken
    }

    fn commit(&mut self, id: PayloadId) {
        if let Some(payload) = self.held.remove(&id) {
            self.bytes -= payload.len();
        }
        self.committed.entry(id.0).or_default().insert(id.1);
    }
}

/// Orders opaque payloads: a block is one segment of them; valid when each is well formed,
/// not committed before and in the block once.
struct OpaqueApp {
    pool: Arc<Mutex<PayloadPool>>,
}

impl OpaqueApp {
    fn pool(&self) -> std::sync::MutexGuard<'_, PayloadPool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Application for OpaqueApp {
    fn build(&mut self, _height: Height, _parent: &Tip, _timestamp_ms: u64) -> BlockBody {
        let txs = self.pool().oldest(MAX_BLOCK_PAYLOAD_BYTES);
        BlockBody::ordering_only(Segment {
            chain_id: REGION,
            txs,
        })
    }

    fn validate(&mut self, block: &Block, _parent: &Tip) -> Result<(), InvalidBlock> {
        let refuse = |why: &str| Err(InvalidBlock::Execution(why.to_string()));
        let [segment] = block.segments.as_slice() else {
            return refuse("a bench block has exactly one segment");
        };
        let pool = self.pool();
        let mut seen = std::collections::HashSet::with_capacity(segment.txs.len());
        for payload in &segment.txs {
            let Some(id) = PayloadHeader::decode(payload).map(|h| h.id()) else {
                return refuse("payload shorter than its header");
            };
            if payload.len() > MAX_PAYLOAD_BYTES || pool.is_committed(id) || !seen.insert(id) {
                return refuse("payload oversized, committed before or repeated");
            }
        }
        Ok(())
    }
}

/// A payload's id in a compact proposal: its header (send time, client, sequence number),
/// zero-padded. Unique among honest clients' payloads; a block filled from a colliding id
/// fails its header's transaction root like any wrong block.
fn payload_id(payload: &Bytes) -> B256 {
    let mut id = B256::ZERO;
    let head = &payload[..payload.len().min(MIN_PAYLOAD_BYTES)];
    id[..head.len()].copy_from_slice(head);
    id
}

impl StageApp for OpaqueApp {
    fn tx_id(&self, tx: &Bytes) -> B256 {
        payload_id(tx)
    }

    fn pooled_txs(&self, ids: &[B256]) -> Vec<Option<Bytes>> {
        let pool = self.pool();
        ids.iter()
            .map(|id| {
                let header = PayloadHeader::decode(id.as_slice())?;
                pool.held
                    .get(&header.id())
                    .filter(|p| payload_id(p) == *id)
                    .cloned()
            })
            .collect()
    }

    fn has_work(&self) -> bool {
        !self.pool().held.is_empty()
    }

    fn apply_committed(&mut self, block: &Block) -> anyhow::Result<()> {
        let mut pool = self.pool();
        for payload in block.segments.iter().flat_map(|s| &s.txs) {
            if let Some(header) = PayloadHeader::decode(payload) {
                pool.commit(header.id());
            }
        }
        Ok(())
    }
}

/// Counts of latencies in [`LATENCY_BUCKET_US`] buckets: memory independent of the rate and
/// the duration.
#[derive(Debug)]
struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; LATENCY_BUCKETS + 1],
            total: 0,
            sum_us: 0,
        }
    }
}

impl LatencyHistogram {
    fn add(&mut self, us: u64) {
        let bucket = ((us / LATENCY_BUCKET_US) as usize).min(LATENCY_BUCKETS);
        self.counts[bucket] += 1;
        self.total += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    fn mean_ms(&self) -> f64 {
        match self.total {
            0 => 0.0,
            n => self.sum_us as f64 / n as f64 / 1000.0,
        }
    }

    /// The upper edge of the bucket holding quantile `q` (nearest rank), in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return ((bucket as u64 + 1) * LATENCY_BUCKET_US) as f64 / 1000.0;
            }
        }
        (LATENCY_BUCKETS as u64 * LATENCY_BUCKET_US) as f64 / 1000.0
    }
}

/// What CN 0 saw committed, measured against the window (microseconds since the epoch) the
/// clients' load is judged in.
#[derive(Debug, Default)]
struct Recorder {
    window: std::ops::Range<u64>,
    seen: HashMap<u32, CommittedSeqs>,
    /// Distinct payloads committed, and those committed inside the window.
    committed: u64,
    committed_in_window: u64,
    /// Send → commit of the payloads sent inside the window.
    latency: LatencyHistogram,
    duplicates: u64,
    blocks: u64,
}

impl Recorder {
    fn record(&mut self, block: &Block, now_us: u64) {
        self.blocks += 1;
        for header in block
            .segments
            .iter()
            .flat_map(|s| &s.txs)
            .filter_map(|p| PayloadHeader::decode(p))
        {
            let seen = self.seen.entry(header.client).or_default();
            if seen.contains(header.seq) {
                self.duplicates += 1;
                continue;
            }
            seen.insert(header.seq);
            self.committed += 1;
            self.committed_in_window += u64::from(self.window.contains(&now_us));
            if self.window.contains(&header.sent_us) {
                self.latency.add(now_us.saturating_sub(header.sent_us));
            }
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One CN of the bench: its threads, its pool and its network.
struct BenchNode {
    parts: Supervisor,
    pool: Arc<Mutex<PayloadPool>>,
    net: Arc<Network>,
    compact: Arc<crate::pipeline::compact::CompactStats>,
}

/// A CN's network, bound (so every address is known before anyone dials).
struct BoundNet {
    net: Network,
    inbound: LinkReceiver<(CnIndex, Inbound)>,
}

const LINK_CAPACITY: usize = 1024;

fn bind(
    rt: &tokio::runtime::Handle,
    me: CnIndex,
    key: &SecretKey,
    set: &Arc<CnSet>,
) -> anyhow::Result<BoundNet> {
    let (tx, inbound) = link("net_router", LINK_CAPACITY * 16);
    let config = NetConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let net = Network::bind(rt, config, me, key.clone(), Arc::clone(set), tx)?;
    Ok(BoundNet { net, inbound })
}

fn params(config: &BenchConfig) -> Params {
    Params {
        region: REGION,
        committee_size: config.nodes,
        block_interval_ms: config.idle_ms,
        base_timeout_ms: config.idle_ms.max(500),
        max_timeout_ms: 10_000,
        votes: config.votes,
    }
}

fn genesis() -> Tip {
    Tip {
        height: Height(0),
        hash: BlockHash(crate::crypto::hash::sha256(b"kaon bench consensus genesis")),
        mix: crate::crypto::hash::sha256(b"kaon bench consensus mix"),
        timestamp_ms: 0,
    }
}

/// Starts CN `me`: consensus stage, router, gossip intake and the committed-block sink
/// (CN 0's records what it commits).
fn start_node(
    rt: &tokio::runtime::Handle,
    config: &BenchConfig,
    (me, key, set): (CnIndex, &SecretKey, &Arc<CnSet>),
    mut bound: BoundNet,
    peers: &[(CnIndex, std::net::SocketAddr)],
    recorder: Option<Arc<Mutex<Recorder>>>,
) -> anyhow::Result<BenchNode> {
    let dir = config.datadir.join(format!("cn{}", me.0));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    bound.net.connect(rt, peers);
    let net = Arc::new(bound.net);
    let (wal, _) = BlockLog::open(dir.join("consensus.wal"), BlockLogOptions::default())?;
    let (log, _) = BlockLog::open(dir.join("blocks.log"), BlockLogOptions::default())?;
    let store = Arc::new(crate::storage::store::Store::open(dir.join("index"))?);
    let pool = Arc::new(Mutex::new(PayloadPool::with_capacity(
        POOL_BYTES / config.nodes.max(1),
    )));
    let status = Arc::new(ConsensusStatus::default());
    let (consensus_tx, consensus_rx) = link("net_consensus", LINK_CAPACITY * 16);
    let (intake_tx, intake_rx) = link("gossip_intake", LINK_CAPACITY);
    let (committed_tx, committed_rx) = link::<Arc<Block>>("committed", LINK_CAPACITY);
    let stage = ConsensusStage {
        machine: Machine::new(
            params(config),
            me,
            key.clone(),
            Arc::clone(set),
            Arc::new(SigCache::new()),
            genesis(),
        ),
        app: OpaqueApp {
            pool: Arc::clone(&pool),
        },
        net: Arc::clone(&net),
        wal,
        inbound: consensus_rx,
        committed: committed_tx,
        status: Arc::clone(&status),
        chain: crate::net::sync::ChainReader::new(log.reader(), store),
        proposal_batch: Duration::from_millis(config.batch_ms),
        catch_up: Default::default(),
        sync_turn: 0,
        compact: crate::pipeline::compact::CompactProposals::new(
            config.compact,
            Arc::clone(&status.compact),
        ),
    };
    let compact = Arc::clone(&status.compact);
    let mut parts = Supervisor::new(format!("bench CN {}", me.0));
    let closing = Arc::clone(&net);
    parts.on_stop(move || closing.close());
    parts.spawn("consensus", move || stage.run())?;
    let inbound = bound.inbound;
    let dropped = Arc::new(AtomicU64::new(0));
    parts.spawn("net_router", move || {
        route_inbound(inbound, consensus_tx, intake_tx, dropped);
        Ok(())
    })?;
    let intake_pool = Arc::clone(&pool);
    parts.spawn("gossip_intake", move || {
        while let Some(batch) = intake_rx.recv() {
            let mut pool = intake_pool.lock().unwrap_or_else(|e| e.into_inner());
            for payload in batch {
                pool.insert(payload);
            }
        }
        Ok(())
    })?;
    parts.spawn("committed", move || {
        while let Some(block) = committed_rx.recv() {
            if let Some(recorder) = &recorder {
                let mut recorder = recorder.lock().unwrap_or_else(|e| e.into_inner());
                recorder.record(&block, now_us());
            }
        }
        Ok(())
    })?;
    Ok(BenchNode {
        parts,
        pool,
        net,
        compact,
    })
}

/// Counters the clients share.
#[derive(Debug, Default)]
struct Offered {
    sent: AtomicU64,
    /// Payloads that came due but were still waiting for room in their CN's full pool when
    /// the load stopped.
    deferred: AtomicU64,
}

/// Client `client`: offers `rate` payloads a second to its CN's pool and gossips each tick's
/// payloads to the other CNs through `net` (unless `None`), until `until`.
fn run_client(
    client: u32,
    node: (&Arc<Mutex<PayloadPool>>, Option<&Network>),
    rate: f64,
    payload_bytes: usize,
    until: Instant,
    offered: &Offered,
) {
    let (pool, net) = node;
    let start = Instant::now();
    let per_tick = (TICK_BYTES / payload_bytes).max(1) as u64;
    let (mut seq, mut due) = (0u64, 0u64);
    while Instant::now() < until {
        // No more than the peers' gossip queues take: a CN that admitted more would drop
        // their gossip, and the others could fill no proposal naming them (backpressure).
        let room = net.map_or(usize::MAX, |net| net.gossip_room() / (payload_bytes + 8)) as u64;
        due = ((start.elapsed().as_secs_f64() * rate) as u64).min(seq + per_tick.min(room));
        let sent_us = now_us();
        let mut accepted = Vec::new();
        {
            let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            // In order, never skipping a number: what the full pool refuses is offered again
            // next tick (sequence numbers stay dense, so committed sets stay small).
            for s in seq..due {
                let payload = PayloadHeader {
                    sent_us,
                    client,
                    seq: s,
                }
                .encode(payload_bytes);
                if !pool.admit(payload.clone()) {
                    break;
                }
                accepted.push(payload);
            }
        }
        let taken = accepted.len() as u64;
        seq += taken;
        offered.sent.fetch_add(taken, Ordering::Relaxed);
        if let Some(net) = net {
            gossip(net, accepted, payload_bytes);
        }
        std::thread::sleep(CLIENT_TICK);
    }
    // What the last tick could not place (payloads due after it are simply past the run).
    offered
        .deferred
        .fetch_add(due.saturating_sub(seq), Ordering::Relaxed);
}

/// Sends payloads to the other CNs in frames within the batch size limit.
fn gossip(net: &Network, payloads: Vec<Bytes>, payload_bytes: usize) {
    let per_frame =
        (<TxBatch as crate::types::WireMessage>::MAX_PAYLOAD / 2 / (payload_bytes + 8)).max(1);
    for chunk in payloads.chunks(per_frame) {
        let frame = encode_frame(&TxBatch {
            txs: chunk.to_vec(),
        });
        net.broadcast_gossip(Arc::new(frame));
    }
}

/// Runs the bench and reports (see the module docs).
pub fn run(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    anyhow::ensure!((1..=64).contains(&config.nodes), "--nodes must be 1..=64");
    anyhow::ensure!(
        (MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&config.payload_bytes),
        "--tx-size must be {MIN_PAYLOAD_BYTES}..={MAX_PAYLOAD_BYTES} bytes"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-net")
        .build()
        .context("starting the network runtime")?;
    let rt = runtime.handle();
    let keys: Vec<SecretKey> = (0..config.nodes)
        .map(|i| {
            SecretKey::from_seed(
                crate::crypto::hash::sha256(format!("kaon bench consensus cn {i}").as_bytes())
                    .as_slice(),
            )
        })
        .collect::<Result<_, _>>()?;
    let set = Arc::new(CnSet::new(
        keys.iter().map(SecretKey::public_key).collect(),
    )?);
    let bound = (0..config.nodes)
        .map(|i| bind(rt, CnIndex(i as u32), &keys[i], &set))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addrs: Vec<(CnIndex, std::net::SocketAddr)> = bound
        .iter()
        .enumerate()
        .map(|(i, b)| Ok((CnIndex(i as u32), b.net.local_addr()?)))
        .collect::<anyhow::Result<_>>()?;
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let mut nodes = Vec::with_capacity(config.nodes);
    for (i, b) in bound.into_iter().enumerate() {
        let me = CnIndex(i as u32);
        let peers: Vec<_> = addrs.iter().filter(|(cn, _)| *cn != me).copied().collect();
        let record = (i == 0).then(|| Arc::clone(&recorder));
        nodes.push(start_node(
            rt,
            config,
            (me, &keys[i], &set),
            b,
            &peers,
            record,
        )?);
    }
    let report = measure(config, &nodes, &recorder);
    for node in nodes {
        node.parts.shutdown()?;
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    report
}

/// Drives the clients for the configured duration, lets the rest commit, and computes the
/// report from CN 0's records.
fn measure(
    config: &BenchConfig,
    nodes: &[BenchNode],
    recorder: &Arc<Mutex<Recorder>>,
) -> anyhow::Result<BenchReport> {
    let offered = Offered::default();
    let start_us = now_us();
    let duration_us = config.duration.as_micros() as u64;
    let warm_us = (duration_us / 4).min(1_000_000);
    let window = (start_us + warm_us)..(start_us + duration_us);
    recorder.lock().unwrap_or_else(|e| e.into_inner()).window = window.clone();
    let until = Instant::now() + config.duration;
    let rate = config.rate as f64 / nodes.len() as f64;
    std::thread::scope(|scope| {
        for (i, node) in nodes.iter().enumerate() {
            let (offered, pool) = (&offered, &node.pool);
            let net = (!config.no_gossip).then_some(&*node.net);
            scope.spawn(move || {
                run_client(
                    i as u32,
                    (pool, net),
                    rate,
                    config.payload_bytes,
                    until,
                    offered,
                )
            });
        }
    });
    let sent = offered.sent.load(Ordering::Relaxed);
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until {
        if recorder.lock().unwrap_or_else(|e| e.into_inner()).committed >= sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let recorder = recorder.lock().unwrap_or_else(|e| e.into_inner());
    let window_s = (window.end - window.start) as f64 / 1e6;
    let latency = &recorder.latency;
    Ok(BenchReport {
        nodes: config.nodes,
        payload_bytes: config.payload_bytes,
        offered_rate: config.rate,
        sent,
        deferred: offered.deferred.load(Ordering::Relaxed),
        committed: recorder.committed,
        uncommitted: sent.saturating_sub(recorder.committed),
        duplicates: recorder.duplicates,
        proposals: if config.compact { "compact" } else { "full" },
        asked_full: nodes
            .iter()
            .map(|n| n.compact.asked_full.load(Ordering::Relaxed))
            .sum(),
        missing_when_asked: nodes
            .iter()
            .map(|n| n.compact.missing_when_asked.load(Ordering::Relaxed))
            .sum(),
        blocks: recorder.blocks,
        committed_rate: recorder.committed_in_window as f64 / window_s.max(1e-6),
        latency_mean_ms: latency.mean_ms(),
        latency_p50_ms: latency.quantile_ms(0.50),
        latency_p90_ms: latency.quantile_ms(0.90),
        latency_p99_ms: latency.quantile_ms(0.99),
    })
}

/// A scratch directory for one run under the system's temporary directory.
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("kaon-bench-consensus-{}", std::process::id()))
}

/// Removes a scratch directory made by [`scratch_dir`] (best effort).
pub fn remove_scratch(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "scratch directory not removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(client: u32, seq: u64) -> Bytes {
        PayloadHeader {
            sent_us: 7,
            client,
            seq,
        }
        .encode(64)
    }

    fn block_of(payloads: Vec<Bytes>) -> Block {
        let mut app = OpaqueApp {
            pool: Arc::default(),
        };
        let body = BlockBody {
            segments: vec![Segment {
                chain_id: REGION,
                txs: payloads,
            }],
            ..app.build(Height(1), &genesis(), 1)
        };
        let key = SecretKey::from_seed(&[7u8; 32]).unwrap();
        let set = CnSet::new(vec![key.public_key()]).unwrap();
        crate::consensus::proposal::build_block(
            &params(&BenchConfig {
                nodes: 1,
                payload_bytes: 64,
                rate: 1,
                duration: Duration::from_secs(1),
                votes: VoteRouting::Leader,
                batch_ms: 1,
                idle_ms: 1,
                datadir: PathBuf::new(),
                compact: true,
                no_gossip: false,
            }),
            &key,
            CnIndex(0),
            &set,
            &genesis(),
            crate::types::Round(0),
            1,
            body,
        )
    }

    #[test]
    fn a_payload_header_round_trips_and_short_payloads_have_none() {
        let header = PayloadHeader {
            sent_us: u64::MAX,
            client: 3,
            seq: 1 << 40,
        };
        assert_eq!(PayloadHeader::decode(&header.encode(512)), Some(header));
        assert_eq!(header.encode(512).len(), 512);
        assert_eq!(PayloadHeader::decode(&[0u8; MIN_PAYLOAD_BYTES - 1]), None);
    }

    #[test]
    fn a_committed_payload_is_never_taken_again_even_from_a_late_copy() {
        let mut pool = PayloadPool::with_capacity(POOL_BYTES);
        assert!(pool.insert(payload(1, 0)));
        assert!(!pool.insert(payload(1, 0)), "held already");
        assert!(pool.insert(payload(1, 1)));
        pool.commit((1, 0));
        pool.commit((1, 2)); // committed out of this pool's order (another CN's block)
        assert!(
            !pool.insert(payload(1, 0)),
            "a late gossip copy of a committed payload"
        );
        assert!(!pool.insert(payload(1, 2)));
        assert_eq!(pool.oldest(usize::MAX), vec![payload(1, 1)]);
        pool.commit((1, 1));
        assert_eq!(pool.committed[&1].floor, 3, "the contiguous prefix folds");
        assert!(pool.committed[&1].above.is_empty());
        assert_eq!(pool.bytes, 0);
    }

    #[test]
    fn a_block_takes_the_oldest_payloads_up_to_its_byte_bound() {
        let mut pool = PayloadPool::with_capacity(POOL_BYTES);
        for seq in 0..10 {
            assert!(pool.insert(payload(0, seq)));
        }
        let taken = pool.oldest(3 * 64 + 10);
        assert_eq!(taken, (0..3).map(|s| payload(0, s)).collect::<Vec<_>>());
        assert_eq!(pool.held.len(), 10, "taken payloads stay until committed");
    }

    #[test]
    fn a_block_repeating_or_recommitting_a_payload_is_refused() {
        let mut app = OpaqueApp {
            pool: Arc::default(),
        };
        let fresh = block_of(vec![payload(0, 0), payload(0, 1)]);
        assert_eq!(app.validate(&fresh, &genesis()), Ok(()));
        let repeated = block_of(vec![payload(0, 0), payload(0, 0)]);
        assert!(app.validate(&repeated, &genesis()).is_err());
        app.apply_committed(&fresh).unwrap();
        let again = block_of(vec![payload(0, 1)]);
        assert!(
            app.validate(&again, &genesis()).is_err(),
            "committed before"
        );
        let short = block_of(vec![Bytes::from_static(b"short")]);
        assert!(app.validate(&short, &genesis()).is_err());
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_bucket_upper_edges_and_the_mean_is_exact() {
        let mut h = LatencyHistogram::default();
        for us in [150, 250, 250, 950, 120_000_000] {
            h.add(us);
        }
        assert_eq!(
            h.quantile_ms(0.2),
            0.2,
            "150 µs lies in the 100..200 µs bucket"
        );
        assert_eq!(h.quantile_ms(0.6), 0.3);
        assert_eq!(h.quantile_ms(0.8), 1.0);
        assert_eq!(
            h.quantile_ms(1.0),
            60_000.1,
            "beyond a minute: the last bucket"
        );
        assert_eq!(
            h.mean_ms(),
            (150 + 250 + 250 + 950 + 120_000_000) as f64 / 5.0 / 1000.0
        );
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), 0.0);
    }
}
