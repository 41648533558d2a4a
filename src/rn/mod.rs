//! Ranger nodes (RNs): replicate and audit the chain the CNs decide, store it, serve reads and
//! forward writes.
//!
//! ```text
//!  CNs ──block ranges (QUIC, long poll at the head)──► sync driver ──sync_audit──┐
//!  RN peers ──gossip: blocks, evidence──► RN network ──net_audit─────────────────┤
//!                                                                              auditor
//!   header chain + body + reveal/certificate claims (one BLS batch per range) ◄──┤
//!   re-execution: CnApp::validate, then commit ◄─────────────────────────────────┤
//!   block log + RocksDB index ◄──────────────────────────────────────────────────┘
//!        │                       └─► evidence book (RocksDB meta) ─► gossip to RNs
//!        └─► block server (ranges for other RNs), RnView (RPC reads)
//! ```
//!
//! An RN is not a CN-set member: it authenticates with its own node key, may ask CNs for
//! blocks and forward transactions to them, and gossips with other RNs; it never votes. It
//! trusts nothing it receives: every block is audited before it is stored (see
//! [`crate::consensus::audit`] and [`auditor`]), and two valid-looking blocks at one height become equivocation evidence
//! ([`evidence`]) that every RN ends up holding. `docs/ranger.md` describes the protocol.

pub mod auditor;
pub mod evidence;
pub mod ledger;
pub mod recovery;
pub mod register;
pub mod status;
pub mod sync;

use crate::chain::app::{CnApp, CnState};
use crate::chain::genesis::Genesis;
use crate::config::StorageConfig;
use crate::consensus::selection::CnSet;
use crate::crypto::bls::{PublicKey, PublicKeyBytes, SecretKey};
use crate::link::link;
use crate::mempool::Mempool;
use crate::net::rn::{RnNetConfig, RnNetwork};
use crate::net::sync::{BlockServer, ChainReader};
use crate::pipeline::NodeRuntime;
use crate::storage::store::Store;
use crate::types::codec::encode_frame;
use crate::types::{Block, BlockHash, ChainId, CnIndex, Height, TxBatch};
use alloy_primitives::Bytes;
use anyhow::Context;
use evidence::{EvidenceBook, EvidenceRecord};
use ledger::{Ledger, SetHistory};
use status::{Rejection, RnStatus, SyncStatus};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use sync::SyncConfig;

pub use status::{Finality, SyncPhase};

/// Capacity of the gossip link (items; each at most one block).
const GOSSIP_LINK: usize = 64;
/// Capacity of the fetched-ranges link (ranges; each at most 16 MiB of blocks).
const FETCHED_LINK: usize = 2;
/// Evidence items sent to each RN peer when it connects (the most recent ones).
const WELCOME_EVIDENCE: usize = 64;
/// Transactions per segment the application would build with (an RN never builds).
const MAX_TXS_PER_SEGMENT: usize = 10_000;

/// A CN an RN fetches blocks from and forwards transactions to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CnPeer {
    pub addr: SocketAddr,
    /// Its BLS key: the RN checks the CN's hello against it.
    pub key: PublicKeyBytes,
}

impl CnPeer {
    /// Peers for CNs of `genesis` at the given addresses, keys taken from genesis.
    pub fn from_genesis(
        genesis: &Genesis,
        addrs: &[(CnIndex, SocketAddr)],
    ) -> anyhow::Result<Vec<Self>> {
        let set = genesis.cn_set()?;
        addrs
            .iter()
            .map(|(cn, addr)| {
                Ok(Self {
                    addr: *addr,
                    key: *set.key_bytes(*cn).with_context(|| format!("CN {cn}"))?,
                })
            })
            .collect()
    }
}

/// Everything an RN needs to start.
#[derive(Debug, Clone)]
pub struct RnConfig {
    /// Where the block log (`blocks.log`) and RocksDB (`db/`) live.
    pub datadir: PathBuf,
    pub genesis: Genesis,
    /// This RN's node key (it authenticates with it; it is never a CN key).
    pub key: SecretKey,
    /// Listen address, limits, gossip fan-out.
    pub net: RnNetConfig,
    pub cn_peers: Vec<CnPeer>,
    /// RNs to dial (others may dial this one).
    pub rn_peers: Vec<SocketAddr>,
    pub storage: StorageConfig,
    pub sync: SyncConfig,
    /// Secret key of the reward address: with one, the RN registers itself for PoSC probes
    /// and PoR rewards ([`register`]).
    pub reward_key: Option<register::RewardKey>,
}

impl RnConfig {
    /// Defaults for an RN of `genesis` listening on `listen`, with no peers yet.
    pub fn new(datadir: PathBuf, genesis: Genesis, key: SecretKey, listen: SocketAddr) -> Self {
        Self {
            datadir,
            genesis,
            key,
            net: RnNetConfig::new(listen),
            cn_peers: Vec::new(),
            rn_peers: Vec::new(),
            storage: StorageConfig::default(),
            sync: SyncConfig::default(),
            reward_key: None,
        }
    }
}

/// Starts ranger nodes.
pub struct RnNode;

impl RnNode {
    /// [`RnNode::start_on`] a runtime of the node's own (two workers): its sync and gossip
    /// then never wait behind other work of the process, such as a burst of JSON-RPC calls.
    pub fn start(config: RnConfig) -> anyhow::Result<RnHandle> {
        Self::start_on(NodeRuntime::own("rn-net", 2)?, config)
    }

    /// Opens the datadir (replaying what is there), binds the network on `runtime`, dials the
    /// peers, and starts syncing and auditing. Returns once the node runs.
    pub fn start_on(runtime: NodeRuntime, config: RnConfig) -> anyhow::Result<RnHandle> {
        let disk = Disk::open(&config)?;
        let status = Arc::new(RnStatus::new(
            disk.tip.height,
            disk.tip.hash,
            Arc::clone(disk.app.cn_set()),
        ));
        let rt = runtime.handle().clone();
        let (gossip_tx, gossip_rx) = link("net_audit", GOSSIP_LINK);
        let (fetched_tx, fetched_rx) = link("sync_audit", FETCHED_LINK);
        let server = BlockServer::new(disk.ledger.chain().clone())?;
        let net = start_network(&rt, &config, gossip_tx, &server, &disk.evidence)?;
        net.allow_probers(disk.app.cn_set().keys().to_vec());
        let listen = net.local_addr()?;
        tracing::info!(%listen, height = %disk.tip.height, cns = config.cn_peers.len(), rns = config.rn_peers.len(), "ranger node running");
        let view = RnView {
            status: Arc::clone(&status),
            chain: disk.ledger.chain().clone(),
            evidence: Arc::clone(&disk.evidence),
            state: disk.state,
            region: disk.app.region_handle(),
            net: Arc::clone(&net),
            listen,
        };
        let recovery = Arc::new(recovery::SenderRecovery::new(disk.app.shared().clone())?);
        let auditor = auditor::Auditor {
            params: config.genesis.params(),
            genesis: config.genesis.tip(),
            app: disk.app,
            recovery,
            ledger: disk.ledger,
            tip: disk.tip,
            sets: disk.sets,
            net: Arc::clone(&net),
            server,
            status: Arc::clone(&status),
            evidence: disk.evidence,
            fetched: fetched_rx,
            gossip: gossip_rx,
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(reward_key) = config.reward_key.clone() {
            let registrant = register::Registrant {
                view: view.clone(),
                region: ChainId(config.genesis.region),
                reward_key,
                node_key: config.key.clone(),
            };
            rt.spawn(registrant.run(stop_rx.clone()));
        }
        let driver = sync::SyncDriver {
            net,
            rt: rt.clone(),
            status,
            out: fetched_tx,
            stop: stop_rx,
            config: config.sync.clone(),
            params: config.genesis.params(),
            claims: Default::default(),
        };
        // Shutdown: syncing stops, the auditor finishes what it holds (its input closes when
        // the sync driver ends), the network closes, the runtime goes last. An RN whose sync
        // or audit thread died would serve a chain that no longer advances: both are critical.
        let mut parts = crate::pipeline::Supervisor::new("RN");
        parts.on_stop(move || {
            let _ = stop.send(true);
        });
        parts.spawn("rn_sync", move || driver.run())?;
        parts.spawn("rn_audit", move || auditor.run())?;
        let closing = Arc::clone(&view.net);
        parts.on_stopped(move || closing.close());
        parts.run_on(runtime);
        Ok(RnHandle { view, parts })
    }
}

/// What an RN resumes from: its datadir opened and replayed.
struct Disk {
    ledger: Ledger,
    evidence: Arc<EvidenceBook>,
    app: CnApp,
    state: CnState,
    sets: SetHistory,
    tip: crate::consensus::machine::Tip,
}

impl Disk {
    fn open(config: &RnConfig) -> anyhow::Result<Self> {
        let genesis = &config.genesis;
        let ledger = Ledger::open(&config.datadir, &config.storage, &genesis.allocations())?;
        let evidence = Arc::new(EvidenceBook::open(Arc::clone(ledger.chain().store()))?);
        let (mut app, state) = audit_app(genesis, Arc::clone(ledger.state()), ledger.chain())?;
        let mut sets = SetHistory::new(Arc::clone(app.cn_set()));
        let tip = ledger.replay(genesis.tip(), &mut app, |app, block| {
            if !block.header().next_cn_set.is_empty() {
                sets.switch(block.header().height.next(), Arc::clone(app.cn_set()));
            }
        })?;
        Ok(Self {
            ledger,
            evidence,
            app,
            state,
            sets,
            tip,
        })
    }
}

/// Binds the RN's endpoint: block ranges served from `server`, every new peer handed the
/// latest evidence, CN and RN peers dialled.
fn start_network(
    rt: &tokio::runtime::Handle,
    config: &RnConfig,
    gossip: crate::link::LinkSender<(crate::net::rn::PeerId, crate::net::rn::Gossip)>,
    server: &Arc<BlockServer>,
    evidence: &Arc<EvidenceBook>,
) -> anyhow::Result<Arc<RnNetwork>> {
    let net = RnNetwork::bind(rt, config.net.clone(), config.key.clone(), gossip)?;
    net.serve_blocks(Arc::clone(server));
    // A peer that joins later still learns of every equivocation this node knows.
    let book = Arc::clone(evidence);
    net.welcome_with(Box::new(move || {
        book.latest(WELCOME_EVIDENCE)
            .iter()
            .map(|r| Arc::new(encode_frame(&r.evidence)))
            .collect()
    }));
    for peer in &config.cn_peers {
        net.connect_cn(peer.addr, PublicKey::try_from(&peer.key)?);
    }
    for addr in &config.rn_peers {
        net.connect_rn(*addr);
    }
    Ok(Arc::new(net))
}

/// The application an RN re-executes blocks with: a [`CnApp`] on `state`. An RN never
/// proposes; its pool holds the transactions its RPC accepted ([`crate::node::outbox`]), which
/// the application's commits clear as they are included.
fn audit_app(
    genesis: &Genesis,
    state: Arc<crate::storage::state::CommittedState>,
    chain: &ChainReader,
) -> anyhow::Result<(CnApp, CnState)> {
    let region = ChainId(genesis.region);
    let chains = genesis
        .servicechains
        .iter()
        .map(|&c| ChainId(c))
        .chain([region]);
    let shared = CnState {
        pool: Arc::new(Mutex::new(Mempool::new(Default::default(), chains))),
        state,
        system: Arc::default(),
    };
    let set: Arc<CnSet> = Arc::new(genesis.cn_set()?);
    let mut app = CnApp::new(
        region,
        set,
        shared.clone(),
        MAX_TXS_PER_SEGMENT,
        genesis.tip(),
    );
    let servicechains: Vec<ChainId> = genesis.servicechains.iter().map(|&c| ChainId(c)).collect();
    let segments = Arc::new(crate::chain::segments::LogSegments::new(
        chain.clone(),
        crate::por::DEFAULT_SEGMENT_LEN,
    ));
    app.configure_region(|r| {
        r.with_genesis_chains(&servicechains)
            .with_pop(genesis.pop_params())
            .with_segments(segments)
            .with_directory_anchor(genesis.directory_entry())
            .with_states(shared.state.clone())
    });
    Ok((app, shared))
}

/// Read access to a running RN, cheap to clone (what the RPC server holds).
#[derive(Clone)]
pub struct RnView {
    status: Arc<RnStatus>,
    chain: ChainReader,
    evidence: Arc<EvidenceBook>,
    state: CnState,
    region: Arc<std::sync::RwLock<crate::chain::region::RegionState>>,
    net: Arc<RnNetwork>,
    listen: SocketAddr,
}

impl RnView {
    /// Height and hash of the last audited, stored block (height 0: only genesis).
    pub fn head(&self) -> (Height, BlockHash) {
        self.status.head()
    }

    /// A stored block by height (from the block log through the index).
    pub fn block_by_height(&self, height: Height) -> anyhow::Result<Option<Block>> {
        self.chain.block_at(height)
    }

    /// A stored block by header hash.
    pub fn block_by_hash(&self, hash: &BlockHash) -> anyhow::Result<Option<Block>> {
        self.chain.block_by_hash(hash)
    }

    /// The RocksDB store: height, hash and transaction indexes.
    pub fn store(&self) -> &Arc<Store> {
        self.chain.store()
    }

    /// The chain reader (block log + index).
    pub fn chain(&self) -> &ChainReader {
        &self.chain
    }

    /// The re-executed state (the application's shared handles; the pool holds what the RPC
    /// accepted, until it is included).
    pub fn state(&self) -> &CnState {
        &self.state
    }

    /// The regionchain state as audited so far (registry, checkpoints, PoP).
    pub fn region(&self) -> &Arc<std::sync::RwLock<crate::chain::region::RegionState>> {
        &self.region
    }

    /// Every piece of equivocation evidence held, lowest height first.
    pub fn evidence(&self) -> Vec<EvidenceRecord> {
        self.evidence.list(Height(0), usize::MAX)
    }

    /// Evidence at or above `from`, at most `limit` (for `kaon_getEvidence`).
    pub fn evidence_from(&self, from: Height, limit: usize) -> Vec<EvidenceRecord> {
        self.evidence.list(from, limit)
    }

    /// Recently rejected blocks, oldest first, with their reasons.
    pub fn rejected(&self) -> Vec<Rejection> {
        self.status.rejected()
    }

    pub fn sync_status(&self) -> SyncStatus {
        self.status.snapshot()
    }

    /// Finality at this node over its last blocks stored while following the head.
    pub fn finality(&self) -> Option<status::Finality> {
        self.status.finality()
    }

    /// Gossiped evidence accepted, refused and waiting.
    pub fn evidence_counts(&self) -> status::EvidenceCounts {
        self.status.evidence_counts()
    }

    /// Forwards raw signed transactions to every connected CN (as a `TxBatch`); the number
    /// of CNs they were queued for. Fails when no CN link exists.
    pub fn forward_txs(&self, txs: Vec<Bytes>) -> anyhow::Result<usize> {
        let queued = self.net.forward(&TxBatch { txs })?;
        anyhow::ensure!(queued > 0, "no CN link to forward transactions to");
        Ok(queued)
    }

    /// The address the RN listens on (RNs join the network by dialling it).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// This RN's public node key.
    pub fn public_key(&self) -> PublicKeyBytes {
        self.net.public_key()
    }

    /// The network's counters (connects, refusals, bad frames, …).
    pub fn net_stats(&self) -> &Arc<crate::net::NetStats> {
        self.net.stats()
    }

    /// Connected peers (CNs and RNs).
    pub fn peer_count(&self) -> usize {
        self.net.peer_count()
    }

    /// This node's counters for the Prometheus endpoint, with `labels` on every sample.
    pub fn metrics(&self, m: &mut crate::telemetry::Metrics, labels: &[(&str, &str)]) {
        let s = &self.status;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let gauges = [
            (
                "kaon_rn_height",
                "Last audited and stored height",
                load(&s.head),
            ),
            (
                "kaon_rn_highest_known",
                "Highest height a peer reported",
                load(&s.highest_known),
            ),
            (
                "kaon_rn_peers",
                "Connected peers (CNs and RNs)",
                self.peer_count() as u64,
            ),
            (
                "kaon_rn_evidence",
                "Equivocation evidence held",
                self.evidence.len() as u64,
            ),
            (
                "kaon_rn_evidence_pending",
                "Gossiped evidence waiting for the node to reach its height",
                load(&s.evidence_pending),
            ),
            (
                "kaon_rn_history_floor",
                "Oldest block whose state can be read (eth_getBalance, eth_call at past blocks)",
                self.store().history_floor().ok().flatten().unwrap_or(0),
            ),
            (
                "kaon_rn_history_indexed",
                "Highest block whose state changes are indexed per key (reads above it look in the blocks' change sets)",
                self.store().history_indexed().unwrap_or(0),
            ),
        ];
        for (name, help, value) in gauges {
            m.gauge(name, help, labels, value as f64);
        }
        m.chain_head(
            labels,
            crate::telemetry::ChainHead {
                height: load(&s.head),
                best_known: load(&s.highest_known),
                peers: self.peer_count() as u64,
            },
        );
        let n = self.net.stats();
        let counters = [
            (
                "kaon_rn_blocks_audited_total",
                "Blocks audited and stored",
                load(&s.blocks_audited),
            ),
            (
                "kaon_rn_txs_audited_total",
                "Transactions in audited blocks",
                load(&s.txs_audited),
            ),
            (
                "kaon_rn_blocks_fetched_total",
                "Blocks fetched by range requests",
                load(&s.blocks_fetched),
            ),
            (
                "kaon_rn_blocks_gossiped_total",
                "Blocks first received by gossip",
                load(&s.blocks_from_gossip),
            ),
            (
                "kaon_rn_blocks_relayed_total",
                "Block frames relayed to RN peers",
                load(&s.blocks_relayed),
            ),
            (
                "kaon_rn_evidence_refused_total",
                "Gossiped evidence that did not verify",
                load(&s.evidence_refused),
            ),
            (
                "kaon_rn_requests_served_total",
                "Block requests answered",
                load(&n.requests_served),
            ),
            (
                "kaon_rn_request_failures_total",
                "Block requests without a usable answer",
                load(&n.request_failures),
            ),
            (
                "kaon_rn_dropped_total",
                "Frames dropped: a peer's queue or the auditor's inbox was full",
                load(&n.dropped_queue_full) + load(&n.dropped_inbound_full),
            ),
            (
                "kaon_rn_bad_frames_total",
                "Bad frames, requests and blocks from peers",
                load(&n.bad_frames),
            ),
        ];
        for (name, help, value) in counters {
            m.counter(name, help, labels, value);
        }
        for (kind, value) in s.rejected_by_kind() {
            let mut with = labels.to_vec();
            with.push(("reason", kind));
            m.counter(
                "kaon_rn_rejected_total",
                "Blocks rejected by the audit",
                &with,
                value,
            );
        }
    }
}

/// A running RN: its read view (dereferences to [`RnView`]) and its parts (sync and audit
/// threads, network, runtime), stopped one way ([`crate::pipeline::Supervisor`]).
pub struct RnHandle {
    view: RnView,
    parts: crate::pipeline::Supervisor,
}

impl std::ops::Deref for RnHandle {
    type Target = RnView;

    fn deref(&self) -> &RnView {
        &self.view
    }
}

impl RnHandle {
    /// A clone of the read view.
    pub fn view(&self) -> RnView {
        self.view.clone()
    }

    /// Stops syncing, lets the auditor finish what it holds, closes the network. The datadir
    /// can then be reopened by a new [`RnNode::start`]. (Dropping the handle does the same.)
    pub fn shutdown(self) -> anyhow::Result<()> {
        self.parts.shutdown()
    }
}
