//! `kaon devnet`: a whole region in one process — CNs talking BFT over QUIC on 127.0.0.1, each
//! with its own block log and RocksDB; ranger nodes that sync and audit the chain from them, the
//! first serving Ethereum JSON-RPC (default 127.0.0.1:8545); development accounts from the
//! published mnemonic (or the user's); a load generator of signed transfers on servicechains
//! of its own, so a developer's chain holds only their transactions; and a status line per
//! second (height, round, transactions per second, finality latency).

use super::accounts::{accounts_of, developer_accounts, DEV_ACCOUNTS, DEV_MNEMONIC};
use super::loadgen::{dev_account, percentile, DevAccount, FinalityTracker, LoadGen};
use crate::chain::directory::{approve_creation, RegionEntry, REGION_ID_SPAN};
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
/// Distance between the regionchain ids of a devnet's regions (1000, 1001000, …): each
/// region's servicechains follow its own id, within the span the directory gives each region.
pub const REGION_STRIDE: u64 = REGION_ID_SPAN;

/// What `kaon devnet` runs.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// CNs per region.
    pub cns: usize,
    /// Regions, each its own CN set, ranger nodes and regionchain, run independently; region
    /// `r`'s regionchain id is `region + r × REGION_STRIDE` and its chains follow it.
    pub regions: usize,
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
    /// How often the regions' headers are relayed into each other's regionchains (with
    /// several regions; tests shorten it).
    pub relay_interval: Duration,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            cns: 4,
            regions: 1,
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
            relay_interval: super::relay::RELAY_INTERVAL,
        }
    }
}

impl DevnetConfig {
    /// The developer's servicechains and the load generator's (none without load) of the
    /// first region, their ids following the region's.
    pub fn chains(&self) -> anyhow::Result<(Vec<ChainId>, Vec<ChainId>)> {
        self.region_chains(0)
    }

    /// Region `r`'s regionchain id (`None` past the largest chain id).
    pub fn region_id(&self, r: usize) -> Option<ChainId> {
        (r as u64)
            .checked_mul(REGION_STRIDE)
            .and_then(|offset| self.region.0.checked_add(offset))
            .map(ChainId)
    }

    /// [`Self::chains`] of region `r`: with several regions each region's chains must stay
    /// below the next region's id.
    pub fn region_chains(&self, r: usize) -> anyhow::Result<(Vec<ChainId>, Vec<ChainId>)> {
        let load = if self.tps > 0 { self.load_chains } else { 0 };
        let count = self.servicechains.saturating_add(load) as u64;
        anyhow::ensure!(
            self.regions <= 1 || count < REGION_STRIDE,
            "{count} servicechains per region do not fit between two regions {REGION_STRIDE} ids apart"
        );
        let region = self.region_id(r).unwrap_or(ChainId(u64::MAX));
        anyhow::ensure!(
            region.0 >= 1
                && region
                    .0
                    .checked_add(count)
                    .is_some_and(|last| last <= MAX_DEVNET_CHAIN_ID),
            "chain ids {}..={} do not fit in 1..={MAX_DEVNET_CHAIN_ID}",
            region.0.saturating_add(1),
            region.0.saturating_add(count)
        );
        let ids: Vec<ChainId> = (1..=count).map(|k| ChainId(region.0 + k)).collect();
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
    /// Each region's own report, in region order (the fields above sum or bound them all).
    pub regions: Vec<RegionReport>,
}

/// What one region of a devnet achieved.
#[derive(Debug, Clone, Default)]
pub struct RegionReport {
    pub region: ChainId,
    pub min_height: u64,
    pub committed_txs: u64,
    pub chains_agree: bool,
}

/// The `i`-th devnet CN key: `sha256("kaon-devnet-cn-" ‖ i)` as BLS key material.
pub fn devnet_cn_key(i: usize) -> SecretKey {
    // Invariant: a 32-byte seed is always accepted.
    SecretKey::from_seed(&node_seed(0, DEVNET_REGION, "cn", i)).expect("32-byte seed")
}

/// One region of a running devnet: its genesis, CNs, ranger nodes and finality tracker.
struct Region {
    id: ChainId,
    /// Its CNs' keys (the devnet approves the first region's directory entries with them).
    keys: Vec<SecretKey>,
    genesis: Genesis,
    chains: Vec<ChainId>,
    load_chains: Vec<ChainId>,
    datadir: PathBuf,
    nodes: Vec<CnNode>,
    rns: Vec<RnHandle>,
    tracker: Arc<FinalityTracker>,
    /// Committed transactions at the last status line.
    last_txs: u64,
    latencies: Vec<u64>,
}

/// Key material of a devnet node: the first region keeps the names it always had
/// (`kaon-devnet-cn-<i>`), the others' carry their id.
fn node_seed(region: usize, id: ChainId, role: &str, i: usize) -> [u8; 32] {
    let name = match region {
        0 => format!("kaon-devnet-{role}-{i}"),
        _ => format!("kaon-devnet-region-{id}-{role}-{i}"),
    };
    sha256(name.as_bytes()).0
}

impl Region {
    /// Starts region `r`: its CNs, then its ranger nodes (the first region in the datadir's
    /// root, the others in `region-<id>/`); `anchor` names the first region in the others'
    /// genesis.
    fn start(
        rt: &tokio::runtime::Runtime,
        config: &DevnetConfig,
        r: usize,
        root: &std::path::Path,
        developers: &[DevAccount],
        accounts: &[DevAccount],
        anchor: Option<crate::chain::genesis::DirectoryAnchor>,
    ) -> anyhow::Result<Self> {
        let id = config
            .region_id(r)
            .ok_or_else(|| anyhow::anyhow!("region {r}'s id does not fit"))?;
        let (chains, load_chains) = config.region_chains(r)?;
        let all_chains = [chains.as_slice(), load_chains.as_slice()].concat();
        let keys = (0..config.cns)
            .map(|i| SecretKey::from_seed(&node_seed(r, id, "cn", i)))
            .collect::<Result<Vec<_>, _>>()?;
        let genesis = Genesis {
            directory: anchor,
            ..devnet_genesis(config, id, &keys, &all_chains, developers, accounts)
        };
        let datadir = match r {
            0 => root.to_path_buf(),
            _ => root.join(format!("region-{id}")),
        };
        write_operator_files(&datadir, &genesis, &keys)?;
        let tracker = Arc::new(FinalityTracker::default());
        let nodes = start_nodes(rt, &keys, &genesis, &datadir, &tracker)?;
        let rns = start_rns(config, r, &genesis, &nodes, &datadir)?;
        Ok(Self {
            id,
            keys,
            genesis,
            chains,
            load_chains,
            datadir,
            nodes,
            rns,
            tracker,
            last_txs: 0,
            latencies: Vec::new(),
        })
    }

    /// This second's status line, with the region named when there are several.
    fn status(&mut self, elapsed: Duration, named: bool) -> String {
        let lat = self.tracker.take_latencies();
        let txs = self.nodes[0]
            .consensus
            .committed_txs
            .load(Ordering::Relaxed);
        let line = status_line(elapsed, &self.nodes, txs - self.last_txs, &lat);
        self.last_txs = txs;
        self.latencies.extend(lat);
        match named {
            true => format!("region {}: {line}", self.id),
            false => line,
        }
    }

    fn lowest_height(&self) -> u64 {
        self.nodes.iter().map(committed_height).min().unwrap_or(0)
    }

    /// This region's entry in the directory: its genesis hash, CN-set root and RN addresses.
    fn entry(&self) -> anyhow::Result<RegionEntry> {
        Ok(RegionEntry {
            region: self.id,
            genesis_hash: self.genesis.hash().0,
            cn_set_root: self.genesis.cn_set()?.root(),
            rn_seeds: self
                .rns
                .iter()
                .map(|rn| rn.listen_addr().to_string())
                .collect(),
        })
    }
}

/// Records every other region in the first region's directory: one creation each, approved
/// by every CN of the first region (the devnet holds their keys), submitted to its CNs.
fn record_regions(regions: &[Region]) -> anyhow::Result<()> {
    let Some((first, others)) = regions.split_first() else {
        return Ok(());
    };
    let set = first.genesis.cn_set()?;
    let approvers: Vec<(CnIndex, &SecretKey)> = first
        .keys
        .iter()
        .enumerate()
        .map(|(i, key)| (CnIndex(i as u32), key))
        .collect();
    let submit = first.nodes[0].submitter();
    for region in others {
        let creation = approve_creation(first.id, &set, region.entry()?, &approvers)?;
        submit.submit(vec![creation.to_system_tx()])?;
    }
    Ok(())
}

/// Runs a devnet until `config.duration` elapses or `stop` is set; writes progress to `out`.
pub fn run(
    config: &DevnetConfig,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> anyhow::Result<DevnetReport> {
    anyhow::ensure!(config.cns >= 1, "a devnet needs at least one CN");
    anyhow::ensure!(config.regions >= 1, "a devnet needs at least one region");
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
    let accounts: Vec<DevAccount> = (0..config.load_accounts).map(dev_account).collect();
    let developers = accounts_of(&config.mnemonic, config.dev_accounts)?;
    for r in 0..config.regions {
        config.region_chains(r)?;
    }
    let (chains, load_chains) = config.chains()?;
    print_banner(out, config, &chains, &load_chains, &accounts, &datadir)?;
    // The first region's genesis is named in every other's, as their directory region.
    let mut regions: Vec<Region> = Vec::with_capacity(config.regions);
    for r in 0..config.regions {
        let anchor = match regions.first() {
            Some(first) => Some(first.genesis.as_anchor()?),
            None => None,
        };
        let region = Region::start(&rt, config, r, &datadir, &developers, &accounts, anchor)?;
        regions.push(region);
    }
    record_regions(&regions)?;
    for region in regions.iter().skip(1) {
        writeln!(
            out,
            "region {}: {} CNs, servicechain ids {}{}, datadir {}; recorded in region {}'s directory",
            region.id,
            config.cns,
            ids(&region.chains),
            match region.load_chains.is_empty() {
                true => String::new(),
                false => format!(" (load generator's: {})", ids(&region.load_chains)),
            },
            region.datadir.display(),
            config.region,
        )?;
    }
    let rpc = match config.rpc {
        Some(addr) if config.rns > 0 => {
            // Each region's RN 0 serves it; its journal lives in that RN's datadir.
            let rn_dirs: Vec<PathBuf> = regions.iter().map(|r| r.datadir.join("rn0")).collect();
            let served: Vec<super::rpc::ServedRegion<'_>> = regions
                .iter()
                .zip(&rn_dirs)
                .filter_map(|(region, dir)| {
                    Some(super::rpc::ServedRegion {
                        genesis: &region.genesis,
                        rn: region.rns.first()?.view(),
                        datadir: Some(dir),
                    })
                })
                .collect();
            let limits = config.rpc_limits.clone();
            let server = super::rpc::serve_regions(rt.handle(), addr, limits, &served, &stop)?;
            print_rpc(out, config, &server, &regions, &developers)?;
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
            Some(server)
        }
        _ => None,
    };
    if let Some(addr) = config.metrics {
        let bound = serve_devnet_metrics(&rt, addr, &regions, rpc.as_ref())?;
        writeln!(out, "metrics: http://{bound}/metrics")?;
    }
    let loadgens = regions
        .iter()
        .map(|region| {
            spawn_loadgen(
                config,
                &region.load_chains,
                &accounts,
                &region.nodes,
                &region.tracker,
                &stop,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let miner = match &rpc {
        Some(rpc) => spawn_miner(config, rpc, &stop)?,
        None => None,
    };
    // Every region's headers are checkpointed into every other region's regionchain, relayed
    // from each region's RN 0 (`node::relay`).
    let relay = match regions.first().and_then(|r| r.rns.first()) {
        Some(_) => {
            let relayed = regions
                .iter()
                .filter_map(|r| {
                    let rn = r.rns.first()?;
                    Some(super::relay::RelayedRegion::new(rn.view(), &r.genesis))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let routes = super::relay::platform_routes(&relayed);
            super::relay::spawn(routes, config.relay_interval, Arc::clone(&stop))?
        }
        None => None,
    };
    let started = Instant::now();
    let named = regions.len() > 1;
    while !stop.load(Ordering::Relaxed) && config.duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_secs(1));
        for region in &mut regions {
            writeln!(out, "{}", region.status(started.elapsed(), named))?;
        }
        let lowest = regions.iter().map(Region::lowest_height).min().unwrap_or(0);
        if config.until_height.is_some_and(|h| lowest >= h) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for handle in loadgens.into_iter().flatten() {
        let _ = handle.join();
    }
    if let Some(handle) = miner {
        let _ = handle.join();
    }
    if let Some(handle) = relay {
        let _ = handle.join();
    }
    if let Some(rpc) = rpc {
        rpc.shutdown();
    }
    let report = finish(regions, started.elapsed())?;
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

/// Every CN's and RN's metrics (labelled `cn`/`rn`, and `region` when there are several)
/// and the RPC server's, on `addr`.
fn serve_devnet_metrics(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    regions: &[Region],
    rpc: Option<&super::rpc::ServedRpc>,
) -> anyhow::Result<std::net::SocketAddr> {
    let named = regions.len() > 1;
    let region_labels: Vec<String> = regions.iter().map(|r| r.id.to_string()).collect();
    let sources: Vec<Vec<_>> = regions
        .iter()
        .map(|r| r.nodes.iter().map(CnNode::metrics_source).collect())
        .collect();
    let rn_views: Vec<Vec<_>> = regions
        .iter()
        .map(|r| r.rns.iter().map(|rn| rn.view()).collect())
        .collect();
    let rpc_metrics = rpc.map(|r| r.server().metrics_source());
    let bound = crate::telemetry::serve_metrics(
        rt.handle(),
        addr,
        Arc::new(move || {
            let mut m = crate::telemetry::Metrics::default();
            for (k, region) in region_labels.iter().enumerate() {
                let labels = |role: &'static str, i: usize| -> Vec<(&'static str, String)> {
                    let mut labels = vec![(role, i.to_string())];
                    if named {
                        labels.push(("region", region.clone()));
                    }
                    labels
                };
                for (i, source) in sources[k].iter().enumerate() {
                    let owned = labels("cn", i);
                    let labels: Vec<(&str, &str)> =
                        owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    source.metrics(&mut m, &labels);
                }
                for (i, rn) in rn_views[k].iter().enumerate() {
                    let owned = labels("rn", i);
                    let labels: Vec<(&str, &str)> =
                        owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    rn.metrics(&mut m, &labels);
                }
            }
            if let Some(rpc) = &rpc_metrics {
                rpc.metrics(&mut m, &[("rn", "0")]);
            }
            m.render()
        }),
    )?;
    Ok(bound)
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
    region: ChainId,
    keys: &[SecretKey],
    chains: &[ChainId],
    developers: &[DevAccount],
    load: &[DevAccount],
) -> Genesis {
    let funded: Vec<alloy_primitives::Address> =
        developers.iter().chain(load).map(|a| a.address).collect();
    Genesis {
        por_bits: config.por_bits,
        ..Genesis::new(
            region,
            keys,
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

/// Starts `config.rns` ranger nodes of region `r` syncing from every CN of the region; RN
/// `i > 0` also dials RN 0.
fn start_rns(
    config: &DevnetConfig,
    r: usize,
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
        let key = SecretKey::from_seed(&node_seed(r, ChainId(genesis.region), "rn", i))?;
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
    regions: &[Region],
    developers: &[DevAccount],
) -> anyhow::Result<()> {
    let addr = rpc.local_addr();
    match regions.len() {
        1 => writeln!(out, "JSON-RPC (HTTP and WebSocket) on ranger node 0:")?,
        n => writeln!(
            out,
            "JSON-RPC (HTTP and WebSocket) of {n} regions on one endpoint (each region's ranger node 0 answers its chains; kaon_regions lists them):"
        )?,
    }
    for region in regions {
        writeln!(
            out,
            "  regionchain  {0}: http://{addr}/chain/{0}",
            region.id
        )?;
        for chain in &region.chains {
            writeln!(out, "  servicechain {chain}: http://{addr}/chain/{chain}")?;
        }
    }
    if let Some(first) = regions.first().and_then(|r| r.chains.first()) {
        writeln!(out, "  (http://{addr}/ is servicechain {first})")?;
    }
    if let [source, target, ..] = regions {
        if let Some(chain) = source.chains.first() {
            let keys: String = (0..source.keys.len() * 2 / 3 + 1)
                .map(|i| {
                    format!(
                        " --key-file {}",
                        source.datadir.join(format!("cn{i}/cn.key")).display()
                    )
                })
                .collect();
            writeln!(
                out,
                "move servicechain {chain} to region {}:\n  kaon region move --genesis {} --chain {chain} --to {}{keys} --rpc http://{addr}",
                target.id,
                source.datadir.join("genesis.json").display(),
                target.id,
            )?;
        }
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

/// Writes a region's `genesis.json` and each CN's `cn<i>/cn.key` into its datadir as `kaon
/// init` lays them out, where missing, so the operator commands (`kaon region move`, `kaon
/// region create`) work against a devnet as against separate processes.
fn write_operator_files(
    datadir: &std::path::Path,
    genesis: &Genesis,
    keys: &[SecretKey],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(datadir)?;
    let path = datadir.join("genesis.json");
    match Genesis::load(&path) {
        Ok(written) if written.hash() == genesis.hash() => {}
        Ok(_) => {
            tracing::warn!(path = %path.display(), "a genesis.json of another network is in the devnet's datadir; left as it is")
        }
        Err(_) if !path.exists() => genesis.save(&path)?,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable genesis.json in the devnet's datadir; left as it is")
        }
    }
    for (i, key) in keys.iter().enumerate() {
        let dir = datadir.join(format!("cn{i}"));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("cn.key");
        if !file.exists() {
            super::keyfile::write_secret(&file, &hex::encode(key.to_bytes()))?;
        }
    }
    Ok(())
}

fn start_nodes(
    rt: &tokio::runtime::Runtime,
    keys: &[SecretKey],
    genesis: &Genesis,
    datadir: &std::path::Path,
    tracker: &Arc<FinalityTracker>,
) -> anyhow::Result<Vec<CnNode>> {
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

/// Each region's report, then the devnet's over all of them; stops every node.
fn finish(regions: Vec<Region>, elapsed: Duration) -> anyhow::Result<DevnetReport> {
    let named = regions.len() > 1;
    let mut report = DevnetReport {
        min_height: u64::MAX,
        elapsed,
        chains_agree: true,
        ..Default::default()
    };
    let mut latencies = Vec::new();
    let mut metrics = crate::telemetry::Metrics::default();
    for region in regions {
        let heights: Vec<u64> = region.nodes.iter().map(committed_height).collect();
        let agree = chains_agree(&region.nodes);
        let txs = region.nodes[0]
            .consensus
            .committed_txs
            .load(Ordering::Relaxed);
        let id = region.id.to_string();
        for (i, node) in region.nodes.iter().enumerate() {
            let cn = i.to_string();
            let mut labels = vec![("cn", cn.as_str())];
            if named {
                labels.push(("region", id.as_str()));
            }
            node.metrics_source().metrics(&mut metrics, &labels);
            report.misbehavior += node.consensus.misbehavior.load(Ordering::Relaxed);
        }
        let min = heights.iter().min().copied().unwrap_or(0);
        report.min_height = report.min_height.min(min);
        report.max_height = report
            .max_height
            .max(heights.iter().max().copied().unwrap_or(0));
        report.committed_txs += txs;
        report.chains_agree &= agree;
        report.regions.push(RegionReport {
            region: region.id,
            min_height: min,
            committed_txs: txs,
            chains_agree: agree,
        });
        latencies.extend(region.latencies);
        for rn in region.rns {
            rn.shutdown()?;
        }
        for node in region.nodes {
            node.shutdown()?;
        }
    }
    latencies.sort_unstable();
    report.finality_p50_ms = percentile(&latencies, 50);
    report.finality_p99_ms = percentile(&latencies, 99);
    report.metrics = metrics.render();
    Ok(report)
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
