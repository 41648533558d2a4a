//! The one place where a CN's stages and links are created: reading this file shows the node.
//!
//! ```text
//!  ingress ─ingress_sigverify─► sigverify (rayon) ─sigverify_pool─► pool insert ──► mempool
//!  QUIC peers ─► net_router ─net_consensus─► consensus (machine + application)
//!                          └─► ingress (transactions relayed by peers)
//!  consensus ─consensus_persist─► persist (block log + RocksDB) ─► block server, PoSC prober
//! ```
//!
//! [`IngressTopology`] is the front half alone (benchmarks, tests); [`BoundCn::start`] the
//! whole CN. Each link is named `producer_consumer` and sized from [`PipelineConfig`].

use super::sigverify::{RawTxBatch, SigVerify, SigVerifyStats};
use super::stage::{spawn_stage, StageHandle, StageReport};
use crate::config::PipelineConfig;
use crate::crypto::tx::{DecodeRules, RecoveredTx};
use crate::link::{link, LinkReceiver, LinkSender, LinkSnapshot, LinkStats};
use std::sync::Arc;

/// The running front half of the node: raw transactions in, verified transactions out.
pub struct IngressTopology {
    /// Where RPC and peer gossip put raw transaction batches.
    pub ingress: LinkSender<RawTxBatch>,
    pub sigverify_stats: Arc<SigVerifyStats>,
    stages: Vec<StageHandle>,
    links: Vec<Arc<LinkStats>>,
}

impl IngressTopology {
    /// Creates the links, starts the stages, and hands back the receiver of verified
    /// transactions for the next stage (the mempool).
    pub fn start(
        config: &PipelineConfig,
        rules: DecodeRules,
    ) -> std::io::Result<(Self, LinkReceiver<Vec<RecoveredTx>>)> {
        let (ingress, ingress_sigverify) = link("ingress_sigverify", config.link_capacity);
        let (sigverify_out, sigverify_mempool) = link("sigverify_mempool", config.link_capacity);
        let links = vec![
            Arc::clone(ingress.stats()),
            Arc::clone(sigverify_out.stats()),
        ];
        let sigverify_stats = Arc::new(SigVerifyStats::default());
        let stages = vec![spawn_stage(
            SigVerify::new(rules, sigverify_out, Arc::clone(&sigverify_stats)),
            ingress_sigverify,
        )?];
        Ok((
            Self {
                ingress,
                sigverify_stats,
                stages,
                links,
            },
            sigverify_mempool,
        ))
    }

    /// Counters of every link, in pipeline order.
    pub fn links(&self) -> Vec<LinkSnapshot> {
        self.links.iter().map(|l| l.snapshot()).collect()
    }

    /// Closes the ingress and waits for every stage to drain and stop, in pipeline order.
    pub fn shutdown(self) -> anyhow::Result<Vec<StageReport>> {
        drop(self.ingress);
        self.stages.into_iter().map(StageHandle::join).collect()
    }
}

/// Everything one consensus node needs to start.
pub struct CnSpec {
    pub me: crate::types::CnIndex,
    pub key: crate::crypto::bls::SecretKey,
    pub set: Arc<crate::consensus::selection::CnSet>,
    pub params: crate::consensus::machine::Params,
    pub genesis: crate::consensus::machine::Tip,
    /// Servicechains this region runs (the regionchain is `params.region`).
    pub chains: Vec<crate::types::ChainId>,
    /// Genesis balances: (chain, address, wei).
    pub allocations: Vec<(
        crate::types::ChainId,
        alloy_primitives::Address,
        alloy_primitives::U256,
    )>,
    pub datadir: std::path::PathBuf,
    pub net: crate::net::NetConfig,
    pub pipeline: PipelineConfig,
    pub storage: crate::config::StorageConfig,
    pub max_txs_per_segment: usize,
    /// Proof-of-participation settings from genesis.
    pub pop: crate::chain::pop::PopParams,
    /// The directory region genesis names (regions after the first), whose headers this
    /// region's regionchain checkpoints.
    pub directory_anchor: Option<crate::chain::directory::RegionEntry>,
}

impl CnSpec {
    /// Everything CN `me` needs to start on this genesis.
    pub fn from_genesis(
        genesis: &crate::chain::genesis::Genesis,
        me: crate::types::CnIndex,
        key: crate::crypto::bls::SecretKey,
        datadir: std::path::PathBuf,
        net: crate::net::NetConfig,
    ) -> anyhow::Result<Self> {
        let set = genesis.cn_set()?;
        // A key outside the genesis set is a CN waiting to join through governance: it follows
        // the chain until a change names it. A key at the wrong index is a configuration error.
        if let Ok(k) = set.key(me) {
            anyhow::ensure!(
                *k == key.public_key(),
                "the key given for CN {me} is not the one in genesis"
            );
        }
        Ok(Self {
            me,
            key,
            set: Arc::new(set),
            params: genesis.params(),
            genesis: genesis.tip(),
            chains: genesis
                .servicechains
                .iter()
                .map(|&c| crate::types::ChainId(c))
                .collect(),
            allocations: genesis.allocations(),
            datadir,
            net,
            pipeline: crate::config::PipelineConfig::default(),
            storage: crate::config::StorageConfig::default(),
            max_txs_per_segment: 10_000,
            pop: genesis.pop_params(),
            directory_anchor: genesis.directory_entry(),
        })
    }
}

/// A running consensus node:
///
/// ```text
///  submit/RPC ─┬─► net (gossip TxBatch) ─────────────────────────────────────┐
///              └─► ingress_sigverify ─► sigverify ─► sigverify_pool ─► pool   │
///  net inbound ─► router ─┬─ consensus msgs ─► net_consensus ─► consensus ─► consensus_persist ─► persist
///                         └─ TxBatch ────────► ingress_sigverify ◄──────────┘
/// ```
pub struct CnNode {
    pub me: crate::types::CnIndex,
    ingress: LinkSender<RawTxBatch>,
    pub net: Arc<crate::net::Network>,
    pub consensus: Arc<super::consensus::ConsensusStatus>,
    pub sigverify: Arc<SigVerifyStats>,
    pub pool: Arc<super::pool::PoolStats>,
    pub shared: crate::chain::app::CnState,
    pub dropped_inbound: Arc<std::sync::atomic::AtomicU64>,
    /// PoSC probing: rounds in, counters out; aborted first at shutdown.
    pub probes: super::prober::ProbeRounds,
    links: Vec<Arc<LinkStats>>,
    /// The stage threads, the prober and the network, stopped one way.
    parts: super::Supervisor,
}

/// A node whose network is bound but not yet connected (ports are known, peers are dialled
/// once every node of a devnet is bound).
pub struct BoundCn {
    spec: CnSpec,
    runtime: super::NodeRuntime,
    net: crate::net::Network,
    net_inbound: LinkReceiver<(crate::types::CnIndex, crate::net::Inbound)>,
}

impl BoundCn {
    /// Binds the node's network on `runtime`, where its network and prober will run.
    pub fn bind(runtime: super::NodeRuntime, spec: CnSpec) -> anyhow::Result<Self> {
        let (net_tx, net_inbound) = link("net_router", spec.pipeline.link_capacity * 16);
        let net = crate::net::Network::bind(
            runtime.handle(),
            spec.net.clone(),
            spec.me,
            spec.key.clone(),
            Arc::clone(&spec.set),
            net_tx,
        )?;
        Ok(Self {
            spec,
            runtime,
            net,
            net_inbound,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.net.local_addr()
    }

    /// Dials the peers and starts every stage.
    pub fn start(
        mut self,
        peers: &[(crate::types::CnIndex, std::net::SocketAddr)],
        on_persisted: super::persist::OnPersisted,
    ) -> anyhow::Result<CnNode> {
        use crate::storage::blocklog::BlockLog;
        let spec = self.spec;
        let runtime = self.runtime;
        let handle = runtime.handle().clone();
        let rt = &handle;
        self.net.connect(rt, peers);
        let net = Arc::new(self.net);
        let shared = open_shared(&spec)?;
        let cap = spec.pipeline.link_capacity;
        let (ingress, ingress_sigverify) = link("ingress_sigverify", cap);
        let (sigverify_out, sigverify_pool) = link("sigverify_pool", cap);
        let (consensus_tx, net_consensus) = link("net_consensus", cap * 16);
        let (committed, consensus_persist) = link("consensus_persist", cap);
        let links = vec![
            Arc::clone(ingress.stats()),
            Arc::clone(sigverify_out.stats()),
            Arc::clone(consensus_tx.stats()),
            Arc::clone(committed.stats()),
        ];
        let sigverify = Arc::new(SigVerifyStats::default());
        let pool = Arc::new(super::pool::PoolStats::default());
        let status = Arc::new(super::consensus::ConsensusStatus::default());
        let dropped_inbound = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let log_options = log_options(&spec.storage);
        let (wal, _) = BlockLog::open(spec.datadir.join("consensus.wal"), log_options.clone())?;
        let (log, _) = BlockLog::open(spec.datadir.join("blocks.log"), log_options)?;
        let chain =
            crate::net::sync::ChainReader::new(log.reader(), Arc::clone(shared.state.store()));
        let mut app = new_app(&spec, &shared, &chain);
        let recovered =
            crate::chain::recovery::replay(&log, &shared.state, &wal, &mut app, spec.genesis)?;
        if recovered.blocks > 0 {
            tracing::info!(cn = %spec.me, height = %recovered.tip.height, reexecuted = recovered.reexecuted, wal = recovered.wal.len(), "recovered from disk");
        }
        use std::sync::atomic::Ordering::Relaxed;
        status.height.store(recovered.tip.height.0 + 1, Relaxed);
        status.best_known.store(recovered.tip.height.0, Relaxed);
        // Ranger nodes' block requests are served from the log through the index.
        let block_server = crate::net::sync::BlockServer::new(chain.clone())?;
        net.serve_blocks(Arc::clone(&block_server));
        let mut on_persisted = crate::net::sync::notify_after(block_server, on_persisted);
        let submitter = Submitter {
            ingress: ingress.clone(),
            net: Arc::clone(&net),
        };
        let (probe_rounds, prober) = start_prober(rt, &spec, &app, submitter, &chain)?;
        let rounds = probe_rounds.clone();
        let on_persisted: super::persist::OnPersisted = Box::new(move |block| {
            on_persisted(block);
            rounds.committed(block.header().height, block.header().mix);
        });
        let mut parts = super::Supervisor::new(format!("CN {}", spec.me));
        parts.run_on(runtime);
        // Shutdown: no more probes, no more peers; the stages then drain in pipeline order
        // as their inputs close.
        parts.on_stop(move || prober.abort());
        let closing = Arc::clone(&net);
        parts.on_stop(move || closing.close());
        parts.stage(
            SigVerify::new(
                DecodeRules::default(),
                sigverify_out,
                Arc::clone(&sigverify),
            )
            .with_node_state(shared.clone()),
            ingress_sigverify,
        )?;
        parts.stage(
            super::pool::PoolInsert {
                shared: shared.clone(),
                stats: Arc::clone(&pool),
            },
            sigverify_pool,
        )?;
        parts.stage(
            super::persist::Persist {
                log,
                state: Arc::clone(&shared.state),
                on_persisted,
            },
            consensus_persist,
        )?;
        // After recovery the set in force may differ from genesis (a committed change).
        net.learn_set(Arc::clone(app.cn_set()));
        let machine = new_machine(&spec, &app, &recovered);
        let consensus = super::consensus::ConsensusStage {
            machine,
            app,
            net: Arc::clone(&net),
            wal,
            inbound: net_consensus,
            committed,
            status: Arc::clone(&status),
            chain: chain.clone(),
            proposal_batch: std::time::Duration::from_millis(spec.pipeline.proposal_batch_ms),
            catch_up: Default::default(),
            sync_turn: 0,
            compact: super::compact::CompactProposals::new(
                spec.pipeline.compact_proposals,
                Arc::clone(&status.compact),
            ),
        };
        let router_ingress = ingress.clone();
        let router_dropped = Arc::clone(&dropped_inbound);
        let net_inbound = self.net_inbound;
        // A node without its consensus or router thread must not keep running as if healthy.
        parts.spawn("consensus", move || consensus.run())?;
        parts.spawn("net_router", move || {
            super::consensus::route_inbound(
                net_inbound,
                consensus_tx,
                router_ingress,
                router_dropped,
            );
            Ok(())
        })?;
        Ok(CnNode {
            me: spec.me,
            ingress,
            net,
            consensus: status,
            sigverify,
            pool,
            shared,
            dropped_inbound,
            probes: probe_rounds,
            links,
            parts,
        })
    }
}

/// The CN's RocksDB store, its committed state (genesis allocations on a new datadir) and the
/// pools, shared by the application and the stages.
fn open_shared(spec: &CnSpec) -> anyhow::Result<crate::chain::app::CnState> {
    std::fs::create_dir_all(&spec.datadir)?;
    let store = Arc::new(crate::storage::store::Store::open_with(
        spec.datadir.join("db"),
        crate::storage::store::StoreOptions {
            block_cache_bytes: spec.storage.rocksdb_cache_mib << 20,
            ..Default::default()
        },
    )?);
    let retention = spec
        .storage
        .history(crate::storage::history::HistoryRetention::Blocks(
            crate::config::CN_HISTORY_BLOCKS,
        ));
    let state = crate::storage::state::CommittedState::open_with(
        Arc::clone(&store),
        &spec.allocations,
        retention,
    )?;
    let mut all_chains = spec.chains.clone();
    all_chains.push(spec.params.region);
    Ok(crate::chain::app::CnState {
        pool: Arc::new(std::sync::Mutex::new(crate::mempool::Mempool::new(
            Default::default(),
            all_chains,
        ))),
        state: Arc::new(state),
        system: Arc::default(),
    })
}

/// The consensus application on `shared`, configured for the region: the genesis
/// servicechains, the PoP settings, and PoR segments cut from this node's own chain.
fn new_app(
    spec: &CnSpec,
    shared: &crate::chain::app::CnState,
    chain: &crate::net::sync::ChainReader,
) -> crate::chain::app::CnApp {
    let mut app = crate::chain::app::CnApp::new(
        spec.params.region,
        Arc::clone(&spec.set),
        shared.clone(),
        spec.max_txs_per_segment,
        spec.genesis,
    );
    let segments = Arc::new(crate::chain::segments::LogSegments::new(
        chain.clone(),
        crate::por::DEFAULT_SEGMENT_LEN,
    ));
    app.configure_region(|r| {
        r.with_genesis_chains(&spec.chains)
            .with_pop(spec.pop)
            .with_segments(segments)
            .with_directory_anchor(spec.directory_anchor.clone())
            .with_states(shared.state.clone())
    });
    app
}

/// The CN's PoSC duty: probes the RNs the regionchain selects after each durable block and
/// submits attestations for those that fail.
fn start_prober(
    rt: &tokio::runtime::Handle,
    spec: &CnSpec,
    app: &crate::chain::app::CnApp,
    submitter: Submitter,
    chain: &crate::net::sync::ChainReader,
) -> anyhow::Result<(super::prober::ProbeRounds, tokio::task::AbortHandle)> {
    let prober = crate::net::probe::Prober::bind(
        rt,
        std::net::SocketAddr::new(spec.net.listen.ip(), 0),
        spec.key.clone(),
    )?;
    Ok(super::prober::ProberDuty {
        prober,
        key: spec.key.clone(),
        region: app.region_handle(),
        submitter,
        deadline: std::time::Duration::from_millis(spec.pop.posc.probe_deadline_ms),
        chain: chain.clone(),
    }
    .spawn(rt))
}

/// The consensus state machine at the recovered tip, in the CN set in force there, with the
/// rounds and votes its WAL recorded at the next height.
fn new_machine(
    spec: &CnSpec,
    app: &crate::chain::app::CnApp,
    recovered: &crate::chain::recovery::Recovered,
) -> crate::consensus::machine::Machine {
    let set = Arc::clone(app.cn_set());
    let mut machine = crate::consensus::machine::Machine::new(
        spec.params.clone(),
        crate::consensus::machine::locate(&set, &spec.key),
        spec.key.clone(),
        set,
        Arc::new(crate::consensus::verifier::SigCache::new()),
        recovered.tip,
    );
    machine.restore(&recovered.wal);
    machine
}

/// Block-log options from the operator's storage settings.
pub fn log_options(
    storage: &crate::config::StorageConfig,
) -> crate::storage::blocklog::BlockLogOptions {
    use crate::config::LogBackend;
    use crate::storage::blocklog::Backend;
    crate::storage::blocklog::BlockLogOptions {
        backend: match storage.log_backend {
            LogBackend::Auto => Backend::Auto,
            LogBackend::IoUring => Backend::IoUring,
            LogBackend::Pwrite => Backend::Pwrite,
        },
        preallocate_bytes: storage.log_preallocate_mib << 20,
        ..Default::default()
    }
}

/// Binds every CN of `specs` (so all addresses are known), then starts each with all the others
/// as peers; `on_persisted(i)` gives CN `i`'s observer of durable blocks.
pub fn start_cluster(
    rt: &tokio::runtime::Handle,
    specs: Vec<CnSpec>,
    mut on_persisted: impl FnMut(usize) -> super::persist::OnPersisted,
) -> anyhow::Result<Vec<CnNode>> {
    let bound = specs
        .into_iter()
        .map(|spec| BoundCn::bind(super::NodeRuntime::Shared(rt.clone()), spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addrs: Vec<(crate::types::CnIndex, std::net::SocketAddr)> = bound
        .iter()
        .map(|b| Ok((b.spec.me, b.local_addr()?)))
        .collect::<anyhow::Result<_>>()?;
    bound
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let peers: Vec<_> = addrs
                .iter()
                .filter(|(cn, _)| *cn != b.spec.me)
                .copied()
                .collect();
            b.start(&peers, on_persisted(i))
        })
        .collect()
}

/// Where clients' transactions enter a CN; clone it for each client thread (drop every clone
/// before shutting the node down).
#[derive(Clone)]
pub struct Submitter {
    ingress: LinkSender<RawTxBatch>,
    net: Arc<crate::net::Network>,
}

impl Submitter {
    /// Takes a client's raw transactions: gossips them to the other CNs (the global pool) and
    /// verifies them locally. Waits if this node's ingress is full (backpressure).
    pub fn submit(&self, txs: Vec<alloy_primitives::Bytes>) -> anyhow::Result<()> {
        let batch = crate::types::TxBatch { txs };
        self.net
            .broadcast_gossip(Arc::new(crate::types::codec::encode_frame(&batch)));
        self.ingress.send(batch.txs)?;
        Ok(())
    }
}

impl CnNode {
    pub fn submitter(&self) -> Submitter {
        Submitter {
            ingress: self.ingress.clone(),
            net: Arc::clone(&self.net),
        }
    }

    pub fn links(&self) -> Vec<LinkSnapshot> {
        self.links.iter().map(|l| l.snapshot()).collect()
    }

    /// The counters of this node, for a metrics endpoint that outlives no stage.
    pub fn metrics_source(&self) -> CnMetrics {
        CnMetrics {
            consensus: Arc::clone(&self.consensus),
            sigverify: Arc::clone(&self.sigverify),
            pool: Arc::clone(&self.pool),
            shared: self.shared.clone(),
            net: Arc::clone(&self.net),
            dropped_inbound: Arc::clone(&self.dropped_inbound),
            probes: Arc::clone(&self.probes.stats),
            links: self.links.clone(),
        }
    }

    /// Stops probing, closes the network and the ingress, then lets every stage drain and
    /// stop in pipeline order ([`super::Supervisor::shutdown`]).
    pub fn shutdown(self) -> anyhow::Result<()> {
        drop(self.ingress);
        self.parts.shutdown()
    }
}

/// Shared handles on one CN's counters (cheap to clone, safe to read from any thread).
#[derive(Clone)]
pub struct CnMetrics {
    consensus: Arc<super::consensus::ConsensusStatus>,
    sigverify: Arc<SigVerifyStats>,
    pool: Arc<super::pool::PoolStats>,
    shared: crate::chain::app::CnState,
    net: Arc<crate::net::Network>,
    dropped_inbound: Arc<std::sync::atomic::AtomicU64>,
    probes: Arc<super::prober::ProbeStats>,
    links: Vec<Arc<LinkStats>>,
}

impl CnMetrics {
    /// This node's counters for the Prometheus endpoint, with `labels` on every sample.
    pub fn metrics(&self, m: &mut crate::telemetry::Metrics, labels: &[(&str, &str)]) {
        use std::sync::atomic::Ordering::Relaxed;
        let (c, n) = (&self.consensus, self.net.stats());
        let with = |reason: &'static str| {
            let mut l = labels.to_vec();
            l.push(("reason", reason));
            l
        };
        let plain = labels.to_vec();
        let outcome = |outcome: &'static str| {
            let mut l = labels.to_vec();
            l.push(("outcome", outcome));
            l
        };
        let pooled = self.shared.pool.lock().map_or(0, |p| p.len());
        // One read: the gauge and the chain head must agree within a scrape.
        let height = c.height.load(Relaxed);
        let gauges = [
            (
                "kaon_height",
                "Height being decided (last committed + 1)",
                height,
            ),
            (
                "kaon_round",
                "Consensus round at the current height",
                c.round.load(Relaxed),
            ),
            (
                "kaon_pool_size",
                "Transactions waiting in the pool",
                pooled as u64,
            ),
        ];
        for (name, help, value) in gauges {
            m.gauge(name, help, labels, value as f64);
        }
        let head = crate::telemetry::ChainHead {
            height: height.saturating_sub(1),
            best_known: c.best_known.load(Relaxed),
            peers: n.peer_count(),
        };
        m.chain_head(labels, head);
        n.peer_metrics(m, labels);
        let (verified, bad_sig, bad_enc, known) = self.sigverify.totals();
        let p = &self.probes;
        let counters = [
            (
                "kaon_posc_probes_total",
                "PoSC probes of selected RNs",
                &plain,
                p.probes.load(Relaxed),
            ),
            (
                "kaon_posc_probe_failures_total",
                "PoSC probes the RN failed (deadline, wrong key, wrong block, too far behind)",
                &plain,
                p.failures.load(Relaxed),
            ),
            (
                "kaon_posc_attestations_total",
                "Failed-probe attestations gossiped to the CNs",
                &plain,
                p.attestations.load(Relaxed),
            ),
            (
                "kaon_posc_skipped_rounds_total",
                "Rounds not probed because too many probes were in flight",
                &plain,
                p.skipped_rounds.load(Relaxed),
            ),
            (
                "kaon_committed_txs_total",
                "Transactions in committed blocks",
                &plain,
                c.committed_txs.load(Relaxed),
            ),
            (
                "kaon_misbehavior_total",
                "Provable CN misbehaviour observed",
                &plain,
                c.misbehavior.load(Relaxed),
            ),
            (
                "kaon_wal_records_total",
                "Consensus WAL records made durable",
                &plain,
                c.wal_records.load(Relaxed),
            ),
            (
                "kaon_full_proposals_served_total",
                "This CN's proposals sent in full to a peer that could not fill them",
                &plain,
                c.compact.served_full.load(Relaxed),
            ),
            (
                "kaon_votes_cast_total",
                "Votes this CN cast",
                &plain,
                c.votes_cast.load(Relaxed),
            ),
            (
                "kaon_catch_up_batch_verified_total",
                "Decided blocks whose certificates were verified in batches while catching up",
                &plain,
                c.batch_verified.load(Relaxed),
            ),
            (
                "kaon_sigverify_verified_total",
                "Transactions whose sender was recovered",
                &plain,
                verified,
            ),
            (
                "kaon_sigverify_known_total",
                "Transactions dropped before recovery: pooled or recently included already",
                &plain,
                known,
            ),
            (
                "kaon_sigverify_rejected_total",
                "Transactions refused by sigverify",
                &with("signature"),
                bad_sig,
            ),
            (
                "kaon_sigverify_rejected_total",
                "Transactions refused by sigverify",
                &with("encoding"),
                bad_enc,
            ),
            (
                "kaon_pool_accepted_total",
                "Transactions pooled",
                &plain,
                self.pool.accepted.load(Relaxed),
            ),
            (
                "kaon_net_frames_sent_total",
                "Frames written to peers",
                &plain,
                n.frames_sent.load(Relaxed),
            ),
            (
                "kaon_net_frames_received_total",
                "Frames read from peers",
                &plain,
                n.frames_received.load(Relaxed),
            ),
            (
                "kaon_net_dropped_total",
                "Frames dropped",
                &with("peer_queue_full"),
                n.dropped_queue_full.load(Relaxed),
            ),
            (
                "kaon_net_dropped_total",
                "Frames dropped",
                &with("inbound_full"),
                n.dropped_inbound_full.load(Relaxed),
            ),
            (
                "kaon_net_dropped_total",
                "Frames dropped",
                &with("gossip_backlog"),
                n.dropped_gossip.load(Relaxed),
            ),
            (
                "kaon_net_dropped_total",
                "Frames dropped",
                &with("router_full"),
                self.dropped_inbound.load(Relaxed),
            ),
            (
                "kaon_net_bad_frames_total",
                "Malformed, oversize or stalled frames",
                &plain,
                n.bad_frames.load(Relaxed),
            ),
            (
                "kaon_net_rejected_handshakes_total",
                "Peers that failed authentication",
                &plain,
                n.rejected_handshakes.load(Relaxed),
            ),
            (
                "kaon_net_connects_total",
                "Outbound connections established",
                &plain,
                n.connects.load(Relaxed),
            ),
        ];
        for (name, help, labels, value) in counters {
            m.counter(name, help, labels, value);
        }
        for (what, value) in c.compact.outcomes() {
            m.counter(
                "kaon_compact_proposals_total",
                "Compact proposals received, by what became of them",
                &outcome(what),
                value,
            );
        }
        for (reason, value) in self.pool.refusals() {
            m.counter(
                "kaon_pool_rejected_total",
                "Transactions refused by the pool",
                &with(reason),
                value,
            );
        }
        let r = c.rejections.lock().map(|r| r.clone()).unwrap_or_default();
        let refused = [
            ("stale", r.stale),
            ("invalid_proposal", r.invalid_proposal),
            ("bad_vote", r.bad_vote),
            ("bad_round_change", r.bad_round_change),
            ("bad_decided", r.bad_decided),
            ("bad_certificate", r.bad_certificate),
        ];
        for (reason, value) in refused {
            m.counter(
                "kaon_consensus_refused_total",
                "Peer consensus messages refused",
                &with(reason),
                value,
            );
        }
        let links: Vec<LinkSnapshot> = self.links.iter().map(|l| l.snapshot()).collect();
        m.links(&links, labels);
    }
}
