//! `kaon devnet`: a whole region in one process — CNs talking BFT over QUIC on 127.0.0.1, each
//! with its own block log and RocksDB; ranger nodes that sync and audit the chain from them, the
//! first serving Ethereum JSON-RPC (default 127.0.0.1:8545); development accounts from the
//! published mnemonic (or the user's); a load generator of signed transfers on servicechains
//! of its own, so a developer's chain holds only their transactions; and a status line per
//! second (height, round, transactions per second, finality latency).

use super::accounts::{accounts_of, developer_accounts, DEV_ACCOUNTS, DEV_MNEMONIC};
use super::loadgen::{dev_account, percentile, DevAccount, FinalityTracker, LoadGen};
use crate::chain::genesis::Genesis;
use crate::crypto::bls::SecretKey;
use crate::crypto::hash::{keccak256, sha256};
use crate::net::NetConfig;
use crate::pipeline::topology::{start_cluster, CnNode, CnSpec};
use crate::rn::{CnPeer, RnConfig, RnHandle, RnNode};
use crate::types::{ChainId, CnIndex};
use alloy_primitives::hex;
use alloy_primitives::U256;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The regionchain's chain id on a devnet; servicechains follow it (1001, 1002, …).
pub const DEVNET_REGION: ChainId = ChainId(1000);
/// Balance of every development account on every servicechain: 10^6 ether.
pub const DEV_BALANCE_WEI: u128 = 1_000_000 * WEI_PER_ETHER;
/// Wei in one ether.
pub const WEI_PER_ETHER: u128 = 1_000_000_000_000_000_000;
/// Largest chain id a devnet takes (`--chain-id`): every wallet and library handles it.
pub const MAX_DEVNET_CHAIN_ID: u64 = u32::MAX as u64;

/// What `kaon devnet` runs.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub cns: usize,
    /// The regionchain's chain id; the servicechains' follow it.
    pub region: ChainId,
    /// The developer's servicechains (`region + 1`, …), which the load generator leaves alone.
    pub servicechains: usize,
    /// Transfers per second offered by the load generator (0: none).
    pub tps: u64,
    /// Servicechains of the load generator's own, after the developer's (when `tps > 0`).
    pub load_chains: usize,
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    pub round_ms: u64,
    /// Accounts of the load generator's own.
    pub load_accounts: usize,
    /// Development accounts: the first `dev_accounts` of `mnemonic`, each funded with
    /// `dev_balance` on every servicechain.
    pub mnemonic: String,
    pub dev_accounts: usize,
    pub dev_balance: U256,
    /// Where node data goes; a fresh temporary directory (removed at exit) when `None`.
    pub datadir: Option<PathBuf>,
    pub committee_size: usize,
    /// Stop once every CN has committed this height (tests and benchmarks).
    pub until_height: Option<u64>,
    /// Serve Prometheus metrics of every CN (label `cn`) here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Ranger nodes (0: none, and no RPC).
    pub rns: usize,
    /// JSON-RPC of the first RN (`None`: not served).
    pub rpc: Option<std::net::SocketAddr>,
    /// Limits of the JSON-RPC server (the config's `[rpc]` section).
    pub rpc_limits: crate::rpc::RpcConfig,
    /// Starting PoR difficulty in bits (low, so the built-in miner finds shares quickly).
    pub por_bits: u32,
    /// Hashes per second of the built-in CPU miner (0: no miner; needs the RPC).
    pub miner_pace: u64,
    /// Blocks of state history the ranger nodes keep readable (`None`: all; CNs keep their
    /// default window).
    pub history_blocks: Option<u64>,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            cns: 4,
            region: DEVNET_REGION,
            servicechains: 2,
            tps: 1_000,
            load_chains: 1,
            duration: None,
            round_ms: 1_000,
            load_accounts: 64,
            mnemonic: DEV_MNEMONIC.to_string(),
            dev_accounts: DEV_ACCOUNTS,
            dev_balance: U256::from(DEV_BALANCE_WEI),
            datadir: None,
            committee_size: crate::consensus::selection::DEFAULT_COMMITTEE_SIZE,
            until_height: None,
            metrics: None,
            rns: 2,
            rpc: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8545))),
            rpc_limits: crate::rpc::RpcConfig::default(),
            por_bits: 14,
            miner_pace: 1 << 16,
            history_blocks: None,
        }
    }
}

impl DevnetConfig {
    /// The developer's servicechains and the load generator's (none without load), their
    /// ids following the region's.
    pub fn chains(&self) -> anyhow::Result<(Vec<ChainId>, Vec<ChainId>)> {
        let load = if self.tps > 0 { self.load_chains } else { 0 };
        let count = self.servicechains.saturating_add(load) as u64;
        anyhow::ensure!(
            self.region.0 >= 1
                && self
                    .region
                    .0
                    .checked_add(count)
                    .is_some_and(|last| last <= MAX_DEVNET_CHAIN_ID),
            "chain ids {}..={} do not fit in 1..={MAX_DEVNET_CHAIN_ID}",
            self.region.0.saturating_add(1),
            self.region.0.saturating_add(count)
        );
        let ids: Vec<ChainId> = (1..=count).map(|k| ChainId(self.region.0 + k)).collect();
        let (developer, load) = ids.split_at(self.servicechains);
        Ok((developer.to_vec(), load.to_vec()))
    }
}

/// `wei` in ether, as a decimal (`1.5`, `1000000`).
fn ether(wei: U256) -> String {
    let unit = U256::from(WEI_PER_ETHER);
    let (whole, rest) = (wei / unit, wei % unit);
    if rest.is_zero() {
        return whole.to_string();
    }
    let fraction = format!("{:018}", rest.to::<u128>());
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// What a devnet run achieved.
#[derive(Debug, Clone, Default)]
pub struct DevnetReport {
    /// Lowest committed height across CNs at the end.
    pub min_height: u64,
    pub max_height: u64,
    /// Transactions committed by CN 0.
    pub committed_txs: u64,
    pub elapsed: Duration,
    pub finality_p50_ms: Option<u64>,
    pub finality_p99_ms: Option<u64>,
    /// Every CN committed the same block at every height they share (checked at the end).
    pub chains_agree: bool,
    pub misbehavior: u64,
    /// Every CN's counters at the end, in the Prometheus text format.
    pub metrics: String,
}

/// The `i`-th devnet CN key: `sha256("kaon-devnet-cn-" ‖ i)` as BLS key material.
pub fn devnet_cn_key(i: usize) -> SecretKey {
    // Invariant: a 32-byte seed is always accepted.
    SecretKey::from_seed(sha256(format!("kaon-devnet-cn-{i}").as_bytes()).as_slice())
        .expect("32-byte seed")
}

/// Runs a devnet until `config.duration` elapses or `stop` is set; writes progress to `out`.
pub fn run(
    config: &DevnetConfig,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> anyhow::Result<DevnetReport> {
    anyhow::ensure!(config.cns >= 1, "a devnet needs at least one CN");
    let (datadir, temporary) = match &config.datadir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "kaon-devnet-{}-{}",
                std::process::id(),
                crate::chain::app::now_ms()
            )),
            true,
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    super::process::spawn_signal_watch(&rt, Arc::clone(&stop));
    let (chains, load_chains) = config.chains()?;
    let accounts: Vec<DevAccount> = (0..config.load_accounts).map(dev_account).collect();
    let developers = accounts_of(&config.mnemonic, config.dev_accounts)?;
    let all_chains = [chains.as_slice(), load_chains.as_slice()].concat();
    let genesis = devnet_genesis(config, &all_chains, &developers, &accounts);
    print_banner(out, config, &chains, &load_chains, &accounts, &datadir)?;
    let tracker = Arc::new(FinalityTracker::default());
    let nodes = start_nodes(&rt, config, &genesis, &datadir, &tracker)?;
    let rns = start_rns(config, &genesis, &nodes, &datadir)?;
    let rpc = match (config.rpc, rns.first()) {
        (Some(addr), Some(rn)) => {
            let limits = config.rpc_limits.clone();
            let view = rn.view();
            let served = super::rpc::serve(
                rt.handle(),
                addr,
                limits,
                &genesis,
                view,
                Some(&datadir.join("rn0")),
                &stop,
            )?;
            print_rpc(out, config, &served, &all_chains, &developers)?;
            for i in 0..config.rns {
                writeln!(
                    out,
                    "RN {i}: registers for PoSC probes and rewards with account ({}) of the default mnemonic {}",
                    DEV_ACCOUNTS - 1 - i % DEV_ACCOUNTS,
                    devnet_rn_reward(i).address
                )?;
            }
            if config.miner_pace > 0 {
                writeln!(
                    out,
                    "PoR miner: CPU, {} hashes/s, rewards to account (9) of the default mnemonic {}; see kaon_popState",
                    config.miner_pace,
                    devnet_miner_address()
                )?;
            }
            Some(served)
        }
        _ => None,
    };
    if let Some(addr) = config.metrics {
        let sources: Vec<_> = nodes.iter().map(CnNode::metrics_source).collect();
        let rn_views: Vec<_> = rns.iter().map(|r| r.view()).collect();
        let rpc_metrics = rpc.as_ref().map(|r| r.server().metrics_source());
        let bound = crate::telemetry::serve_metrics(
            rt.handle(),
            addr,
            Arc::new(move || {
                let mut m = crate::telemetry::Metrics::default();
                for (i, source) in sources.iter().enumerate() {
                    source.metrics(&mut m, &[("cn", &i.to_string())]);
                }
                for (i, rn) in rn_views.iter().enumerate() {
                    rn.metrics(&mut m, &[("rn", &i.to_string())]);
                }
                if let Some(rpc) = &rpc_metrics {
                    rpc.metrics(&mut m, &[("rn", "0")]);
                }
                m.render()
            }),
        )?;
        writeln!(out, "metrics: http://{bound}/metrics")?;
    }
    let loadgen = spawn_loadgen(config, &load_chains, &accounts, &nodes, &tracker, &stop)?;
    let miner = match &rpc {
        Some(rpc) => spawn_miner(config, rpc, &stop)?,
        None => None,
    };
    let started = Instant::now();
    let mut all_latencies = Vec::new();
    let mut last_txs = 0u64;
    while !stop.load(Ordering::Relaxed) && config.duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_secs(1));
        let lat = tracker.take_latencies();
        let txs = nodes[0].consensus.committed_txs.load(Ordering::Relaxed);
        writeln!(
            out,
            "{}",
            status_line(started.elapsed(), &nodes, txs - last_txs, &lat)
        )?;
        last_txs = txs;
        all_latencies.extend(lat);
        let lowest = nodes.iter().map(committed_height).min().unwrap_or(0);
        if config.until_height.is_some_and(|h| lowest >= h) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(handle) = loadgen {
        let _ = handle.join();
    }
    if let Some(handle) = miner {
        let _ = handle.join();
    }
    if let Some(rpc) = rpc {
        rpc.shutdown();
    }
    for rn in rns {
        rn.shutdown()?;
    }
    let report = finish(nodes, started.elapsed(), all_latencies)?;
    if temporary {
        let _ = std::fs::remove_dir_all(&datadir);
    }
    writeln!(
        out,
        "summary: heights {}..{}, {} transfers committed in {:.1} s ({:.0}/s), finality p50 {} p99 {}, chains agree: {}",
        report.min_height,
        report.max_height,
        report.committed_txs,
        report.elapsed.as_secs_f64(),
        report.committed_txs as f64 / report.elapsed.as_secs_f64().max(1e-9),
        fmt_ms(report.finality_p50_ms),
        fmt_ms(report.finality_p99_ms),
        report.chains_agree,
    )?;
    Ok(report)
}

fn ids(chains: &[ChainId]) -> String {
    let ids: Vec<String> = chains.iter().map(|c| c.to_string()).collect();
    ids.join(", ")
}

fn fmt_ms(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |ms| format!("{ms} ms"))
}

fn print_banner(
    out: &mut dyn Write,
    config: &DevnetConfig,
    chains: &[ChainId],
    load_chains: &[ChainId],
    accounts: &[DevAccount],
    datadir: &std::path::Path,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "kaon devnet: {} CNs over QUIC on 127.0.0.1, {} ms rounds, datadir {}",
        config.cns,
        config.round_ms,
        datadir.display()
    )?;
    writeln!(
        out,
        "regionchain id {}; servicechain ids {}",
        config.region,
        ids(chains)
    )?;
    if load_chains.is_empty() {
        writeln!(out, "load generator: off")?;
    } else {
        writeln!(
            out,
            "load generator: {} transfers/s on servicechain(s) {} of its own, from {} accounts (key = sha256(\"kaon-devnet-account-<i>\"))",
            config.tps,
            ids(load_chains),
            accounts.len()
        )?;
    }
    Ok(())
}

/// The devnet's genesis: its CN keys, servicechains, and every development and load account
/// funded on every servicechain.
fn devnet_genesis(
    config: &DevnetConfig,
    chains: &[ChainId],
    developers: &[DevAccount],
    load: &[DevAccount],
) -> Genesis {
    let keys: Vec<_> = (0..config.cns).map(devnet_cn_key).collect();
    let funded: Vec<alloy_primitives::Address> =
        developers.iter().chain(load).map(|a| a.address).collect();
    Genesis {
        por_bits: config.por_bits,
        ..Genesis::new(
            config.region,
            &keys,
            chains.len(),
            &funded,
            config.dev_balance,
            config.round_ms,
            config.committee_size,
        )
    }
}

/// Reward account of devnet RN `i`: development account `9 - i` (RN 0's is the miner's).
pub fn devnet_rn_reward(i: usize) -> DevAccount {
    developer_accounts(DEV_ACCOUNTS).swap_remove(DEV_ACCOUNTS - 1 - i % DEV_ACCOUNTS)
}

/// Reward address of the devnet's built-in miner: development account 9, RN 0's.
pub fn devnet_miner_address() -> alloy_primitives::Address {
    devnet_rn_reward(0).address
}

/// The built-in PoR miner: CPU, paced, against the regionchain endpoint of RN 0's RPC.
fn spawn_miner(
    config: &DevnetConfig,
    rpc: &super::rpc::ServedRpc,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    if config.miner_pace == 0 {
        return Ok(None);
    }
    let url = format!("http://{}/chain/{}", rpc.local_addr(), config.region);
    let options = super::miner::MineOptions {
        duration: None,
        pace: Some(config.miner_pace),
        verbose: false,
    };
    let stop = Arc::clone(stop);
    let handle = std::thread::Builder::new()
        .name("por-miner".into())
        .spawn(move || {
            let client = super::miner::RnClient::new(&url);
            let mut hasher = super::miner::Hasher::Cpu;
            if let Err(e) =
                super::miner::run(&client, &mut hasher, devnet_miner_address(), options, &stop)
            {
                tracing::warn!(error = %e, "devnet miner stopped");
            }
        })?;
    Ok(Some(handle))
}

/// Starts `config.rns` ranger nodes syncing from every CN; RN `i > 0` also dials RN 0.
fn start_rns(
    config: &DevnetConfig,
    genesis: &Genesis,
    nodes: &[CnNode],
    datadir: &std::path::Path,
) -> anyhow::Result<Vec<RnHandle>> {
    let addrs = nodes
        .iter()
        .map(|n| Ok((n.me, n.net.local_addr()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cn_peers = CnPeer::from_genesis(genesis, &addrs)?;
    let mut rns: Vec<RnHandle> = Vec::with_capacity(config.rns);
    for i in 0..config.rns {
        let key =
            SecretKey::from_seed(sha256(format!("kaon-devnet-rn-{i}").as_bytes()).as_slice())?;
        let mut rn = RnConfig::new(
            datadir.join(format!("rn{i}")),
            genesis.clone(),
            key,
            "127.0.0.1:0".parse()?,
        );
        rn.cn_peers = cn_peers.clone();
        rn.storage.history_blocks = config.history_blocks;
        rn.rn_peers = rns.first().map(|r| r.listen_addr()).into_iter().collect();
        rn.reward_key = Some(crate::rn::register::RewardKey(devnet_rn_reward(i).secret));
        rns.push(RnNode::start(rn)?);
    }
    Ok(rns)
}

fn print_rpc(
    out: &mut dyn Write,
    config: &DevnetConfig,
    rpc: &super::rpc::ServedRpc,
    chains: &[ChainId],
    developers: &[DevAccount],
) -> anyhow::Result<()> {
    let addr = rpc.local_addr();
    writeln!(out, "JSON-RPC (HTTP and WebSocket) on ranger node 0:")?;
    writeln!(
        out,
        "  regionchain  {0}: http://{addr}/chain/{0}",
        config.region
    )?;
    for chain in chains {
        writeln!(out, "  servicechain {chain}: http://{addr}/chain/{chain}")?;
    }
    if let Some(first) = chains.first() {
        writeln!(out, "  (http://{addr}/ is servicechain {first})")?;
    }
    writeln!(
        out,
        "development accounts, {} ether each on every servicechain; mnemonic \"{}\":",
        ether(config.dev_balance),
        config.mnemonic
    )?;
    for (i, a) in developers.iter().enumerate() {
        writeln!(
            out,
            "  ({i}) {}  key 0x{}",
            a.address,
            hex::encode(a.secret)
        )?;
    }
    Ok(())
}

fn start_nodes(
    rt: &tokio::runtime::Runtime,
    config: &DevnetConfig,
    genesis: &Genesis,
    datadir: &std::path::Path,
    tracker: &Arc<FinalityTracker>,
) -> anyhow::Result<Vec<CnNode>> {
    let keys: Vec<SecretKey> = (0..config.cns).map(devnet_cn_key).collect();
    let specs = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let net = NetConfig::new("127.0.0.1:0".parse()?);
            CnSpec::from_genesis(
                genesis,
                CnIndex(i as u32),
                key.clone(),
                datadir.join(format!("cn{i}")),
                net,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tracker = Arc::clone(tracker);
    start_cluster(
        rt.handle(),
        specs,
        move |i| -> crate::pipeline::persist::OnPersisted {
            let tracker = Arc::clone(&tracker);
            match i {
                // CN 0 reports finality: a transfer is final once CN 0 has persisted its block.
                0 => Box::new(move |block| {
                    tracker.finalized(
                        block
                            .segments
                            .iter()
                            .flat_map(|s| s.txs.iter().map(keccak256)),
                    )
                }),
                _ => Box::new(|_| {}),
            }
        },
    )
}

fn spawn_loadgen(
    config: &DevnetConfig,
    chains: &[ChainId],
    accounts: &[DevAccount],
    nodes: &[CnNode],
    tracker: &Arc<FinalityTracker>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    if config.tps == 0 || chains.is_empty() {
        return Ok(None);
    }
    const TICK: Duration = Duration::from_millis(50);
    let per_tick = (config.tps as usize * TICK.as_millis() as usize / 1000).max(1);
    let mut gen = LoadGen::new(accounts, chains);
    let targets: Vec<_> = nodes
        .iter()
        .map(|n| (n.submitter(), Arc::clone(&n.shared.state)))
        .collect();
    let (tracker, stop) = (Arc::clone(tracker), Arc::clone(stop));
    let handle = std::thread::Builder::new()
        .name("loadgen".into())
        .spawn(move || {
            let mut next = Instant::now();
            let mut rr = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let batch = gen.next_batch(per_tick, &*targets[0].1);
                tracker.submitted(batch.iter().map(keccak256));
                let (submit, _) = &targets[rr % targets.len()];
                rr += 1;
                if !batch.is_empty() && submit.submit(batch).is_err() {
                    return;
                }
                next += TICK;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })?;
    Ok(Some(handle))
}

fn status_line(elapsed: Duration, nodes: &[CnNode], txs: u64, latencies: &[u64]) -> String {
    let heights: Vec<u64> = nodes.iter().map(committed_height).collect();
    let round = nodes[0].consensus.round.load(Ordering::Relaxed);
    let pool = nodes[0].shared.pool.lock().map_or(0, |p| p.len());
    let misbehavior: u64 = nodes
        .iter()
        .map(|n| n.consensus.misbehavior.load(Ordering::Relaxed))
        .sum();
    format!(
        "[{:>4}s] height {} (CNs {:?}) round {} | {} tx/s | finality p50 {} p99 {} | pool {} | misbehaviour {}",
        elapsed.as_secs(),
        heights.iter().max().copied().unwrap_or(0),
        heights,
        round,
        txs,
        fmt_ms(percentile(latencies, 50)),
        fmt_ms(percentile(latencies, 99)),
        pool,
        misbehavior,
    )
}

fn finish(
    nodes: Vec<CnNode>,
    elapsed: Duration,
    mut latencies: Vec<u64>,
) -> anyhow::Result<DevnetReport> {
    latencies.sort_unstable();
    let heights: Vec<u64> = nodes.iter().map(committed_height).collect();
    let committed_txs = nodes[0].consensus.committed_txs.load(Ordering::Relaxed);
    let misbehavior = nodes
        .iter()
        .map(|n| n.consensus.misbehavior.load(Ordering::Relaxed))
        .sum();
    let chains_agree = chains_agree(&nodes);
    let mut metrics = crate::telemetry::Metrics::default();
    for (i, node) in nodes.iter().enumerate() {
        node.metrics_source()
            .metrics(&mut metrics, &[("cn", &i.to_string())]);
    }
    for node in nodes {
        node.shutdown()?;
    }
    Ok(DevnetReport {
        min_height: heights.iter().min().copied().unwrap_or(0),
        max_height: heights.iter().max().copied().unwrap_or(0),
        committed_txs,
        elapsed,
        finality_p50_ms: percentile(&latencies, 50),
        finality_p99_ms: percentile(&latencies, 99),
        chains_agree,
        misbehavior,
        metrics: metrics.render(),
    })
}

/// Whether every pair of CNs committed the same block at every height both still remember.
fn chains_agree(nodes: &[CnNode]) -> bool {
    let chains: Vec<_> = nodes.iter().map(|n| n.consensus.recent_hashes()).collect();
    chains.iter().all(|a| {
        chains.iter().all(|b| {
            a.iter()
                .all(|(h, hash)| b.get(h).is_none_or(|other| other == hash))
        })
    })
}

/// Highest height a CN has committed (it works on the next one).
fn committed_height(node: &CnNode) -> u64 {
    node.consensus
        .height
        .load(Ordering::Relaxed)
        .saturating_sub(1)
}
