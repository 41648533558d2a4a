//! Command line: `kaon <subcommand>` in the style of reth and geth. Only subcommands that
//! work are listed; global flags (`--config`, `--datadir`, `--log`) apply to all of them.

use crate::config::Config;
use crate::crypto::bls::SecretKey;
use crate::crypto::hash::sha256_backend;
use alloy_primitives::hex;
use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::RngCore;
use std::path::PathBuf;

/// The longest block interval or round timeout a flag accepts: a day. Longer ones are
/// typos, and timer arithmetic on them would overflow.
const MAX_INTERVAL_MS: u64 = 86_400_000;

/// Kaon: a performance-first node for a two-layer blockchain with servicechains.
#[derive(Debug, Parser)]
#[command(name = "kaon", version, about)]
pub struct Cli {
    /// TOML configuration file; every key is optional (see `kaon config`).
    #[arg(long, global = true, env = "KAON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (block log and RocksDB); overrides the config file.
    #[arg(long, global = true, env = "KAON_DATADIR")]
    pub datadir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `kaon=debug`; overrides the config file (`RUST_LOG` wins).
    /// Default `info`, but `warn` for `kaon devnet` (its terminal shows a status line) and
    /// `kaon chaos` (its lines are the report).
    #[arg(long, global = true, env = "KAON_LOG")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole region in this process: CNs agreeing over QUIC on 127.0.0.1, each with its
    /// own block log and RocksDB, plus a load generator of signed transfers. Ctrl-C stops.
    Devnet(DevnetArgs),
    /// Write genesis.json, CN keys and one config per CN for a network of separate processes.
    Init(InitArgs),
    /// Fault injection: 4 `kaon cn` and 1–2 `kaon rn` processes under signed load, CNs killed
    /// (-9, restarted at once or later) and paused (SIGSTOP) from a seeded schedule; checks
    /// nothing acknowledged is lost, no fork, bounded stalls and catch-up. The last line is the
    /// summary; the exit status is non-zero when a criterion fails.
    Chaos(ChaosArgs),
    /// Proof-of-replication mining. `--bench SECONDS` mines a synthetic segment without a
    /// network and prints the hash rate (H/s) as its last line.
    Mine(MineArgs),
    /// Benchmarks of one layer in isolation; each prints its result as the last line.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run one ranger node: sync and audit from the CNs, join the RN network, serve JSON-RPC,
    /// and (with a reward key) register for PoSC probes and PoR rewards. Resumes from its
    /// datadir; SIGINT/SIGTERM stop it.
    Rn(RnArgs),
    /// Withdraw an RN's unlocked PoR rewards to an account on a servicechain, through an RN's
    /// JSON-RPC; the credit lands with that servicechain's next segment.
    Withdraw(WithdrawArgs),
    /// The platform's regions (`docs/regions.md`).
    #[command(subcommand)]
    Region(RegionCommand),
    /// Run one consensus node (`--config <dir>/cn<i>/config.toml` from `kaon init`); resumes
    /// from its datadir after a restart. SIGINT/SIGTERM stop it cleanly.
    Cn {
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9100).
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Print the effective configuration as TOML (defaults plus overrides).
    Config,
    /// Generate a consensus-node BLS key: writes the secret key (mode 0600) and prints the
    /// public key, then its proof of possession, one per line, for genesis's `cns` and
    /// `cn_pops`.
    Keygen {
        /// Where to write the secret key (hex); refuses to overwrite an existing file.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Parses the process arguments and runs the chosen subcommand.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = effective_config(&cli)?;
    crate::telemetry::init_logging(log_filter(&cli, &config));
    tracing::info!(sha256 = %sha256_backend(), "SHA-256 backend");
    match cli.command {
        Command::Config => {
            // The filter in force, whether it came from a flag, the file or the default.
            let mut shown = config.clone();
            shown.telemetry.log = Some(log_filter(&cli, &config).to_string());
            print!("{}", shown.to_toml());
            Ok(())
        }
        Command::Keygen { out } => keygen(&out),
        Command::Devnet(args) => devnet(args, &cli.datadir, &config),
        Command::Mine(args) => mine(&args),
        Command::Withdraw(args) => withdraw(&args),
        Command::Region(RegionCommand::Create(args)) => {
            crate::node::region_create::create(&args.into_request(), &mut std::io::stdout())
        }
        Command::Region(RegionCommand::ApproveMove(args)) => {
            let line = crate::node::region_move::approve(
                &args.genesis,
                crate::types::ChainId(args.chain),
                crate::types::ChainId(args.to),
                &args.key_file,
                &mut std::io::stderr(),
            )?;
            println!("{line}");
            Ok(())
        }
        Command::Region(RegionCommand::Move(args)) => {
            crate::node::region_move::run(&args.into_request(), &mut std::io::stdout())
        }
        Command::Region(RegionCommand::Approve(args)) => {
            let line = crate::node::region_create::approve(
                &args.directory_genesis,
                &args.genesis,
                &args.rn_seeds,
                &args.key_file,
                &mut std::io::stderr(),
            )?;
            println!("{line}");
            Ok(())
        }
        Command::Rn(args) => {
            let spec = args.into_spec(&cli.datadir, &config, cli.config.as_deref())?;
            crate::node::ranger::run_rn(&spec, &mut std::io::stdout())
        }
        Command::Chaos(args) => chaos(&args),
        Command::Bench(BenchCommand::Consensus(args)) => bench_consensus(&args, &cli.datadir),
        Command::Init(args) => {
            crate::node::cn::init(&args.into_spec(&config), &mut std::io::stdout())
        }
        Command::Cn { metrics } => {
            let path = cli
                .config
                .as_deref()
                .context("kaon cn needs --config <dir>/cn<i>/config.toml")?;
            let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
            crate::node::cn::run_cn(&config, path, metrics, out)
        }
    }
}

/// The log filter: `--log`/`KAON_LOG` or the config file's; `kaon devnet`, whose terminal shows
/// the banner, the URLs and one status line, logs only warnings unless told otherwise.
fn log_filter<'a>(cli: &Cli, config: &'a Config) -> &'a str {
    match (&config.telemetry.log, &cli.command) {
        (Some(told), _) => told,
        (None, Command::Devnet(_) | Command::Chaos(_) | Command::Bench(_)) => "warn",
        (None, _) => "info",
    }
}

fn effective_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(datadir) = &cli.datadir {
        config.datadir = datadir.clone();
    }
    if let Some(log) = &cli.log {
        config.telemetry.log = Some(log.clone());
    }
    Ok(config)
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let mut ikm = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut ikm);
    let sk = SecretKey::from_seed(&ikm)?;
    crate::node::keyfile::write_secret(out, &hex::encode(sk.to_bytes()))?;
    // The public key stays the first line, as scripts read it.
    println!("0x{}", hex::encode(sk.public_key().to_bytes().0));
    println!("0x{}", hex::encode(sk.prove_possession().to_bytes().0));
    Ok(())
}

/// `kaon devnet` flags.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Consensus nodes per region.
    #[arg(long, default_value_t = 4)]
    pub cns: usize,
    /// Regions, each with its own CNs, ranger nodes and regionchain (ids 1000, 1001000, …: a
    /// million apart, each region's servicechains after its id), all served by one JSON-RPC
    /// endpoint; regions 2.. are recorded in the first region's directory.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub regions: usize,
    /// The developer's servicechains (chain ids 1001, 1002, …); the load generator has its own.
    #[arg(long, default_value_t = 2)]
    pub servicechains: usize,
    /// The first servicechain's chain id, as anvil takes it (the regionchain's is one less; the
    /// others follow). Default 1001.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=crate::node::devnet::MAX_DEVNET_CHAIN_ID))]
    pub chain_id: Option<u64>,
    /// Transfers per second offered by the load generator (0 disables it), on servicechains
    /// of its own after the developer's.
    #[arg(long, default_value_t = 1000)]
    pub tps: u64,
    /// Servicechains the load generator spreads its transfers over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub load_chains: u64,
    /// Seconds to run; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Interval of empty blocks when no transaction waits, in milliseconds (a waiting
    /// transaction is proposed within `pipeline.proposal_batch_ms`); at most a day.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_MS))]
    pub round_ms: u64,
    /// The same interval in whole seconds, as anvil takes it (overrides `--round-ms`).
    #[arg(long, value_name = "SECONDS", conflicts_with = "round_ms", value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_MS / 1000))]
    pub block_time: Option<u64>,
    /// Development accounts funded and printed, derived from `--mnemonic` (anvil's meaning).
    #[arg(long, default_value_t = crate::node::accounts::DEV_ACCOUNTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=crate::node::accounts::MAX_DEV_ACCOUNTS as u64))]
    pub accounts: usize,
    /// The BIP-39 phrase development accounts are derived from (`m/44'/60'/0'/0/i`).
    #[arg(long, default_value = crate::node::accounts::DEV_MNEMONIC)]
    pub mnemonic: String,
    /// Ether each development account holds on every servicechain.
    #[arg(long, value_name = "ETHER", default_value_t = 1_000_000)]
    pub balance: u64,
    /// Accounts of the load generator's own.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub load_accounts: usize,
    /// Serve Prometheus metrics of every CN on this address (e.g. 127.0.0.1:9100).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Ranger nodes syncing and auditing the chain (0: none, and no JSON-RPC).
    #[arg(long, default_value_t = 2)]
    pub rns: usize,
    /// JSON-RPC (HTTP and WebSocket) of the first ranger node.
    #[arg(long, default_value = "127.0.0.1:8545")]
    pub rpc: std::net::SocketAddr,
    /// The JSON-RPC address's host, as anvil takes it (overrides `--rpc`'s).
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
    /// The JSON-RPC address's port, as anvil takes it (overrides `--rpc`'s).
    #[arg(long)]
    pub port: Option<u16>,
    /// Do not serve JSON-RPC.
    #[arg(long)]
    pub no_rpc: bool,
    /// Ranger nodes keep the state of only the last N blocks readable (default: all).
    #[arg(long, value_name = "N")]
    pub history_blocks: Option<u64>,
}

impl DevnetArgs {
    /// `--rpc` with anvil's `--host`/`--port` applied.
    fn rpc_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(
            self.host.unwrap_or(self.rpc.ip()),
            self.port.unwrap_or(self.rpc.port()),
        )
    }
}

fn devnet(args: DevnetArgs, datadir: &Option<PathBuf>, config: &Config) -> anyhow::Result<()> {
    let devnet = devnet_config(&args, datadir, config);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report = crate::node::devnet::run(&devnet, stop, &mut std::io::stdout())?;
    anyhow::ensure!(
        report.chains_agree,
        "CNs committed different blocks at one height"
    );
    Ok(())
}

/// What `kaon devnet` runs, from its flags and the config file.
fn devnet_config(
    args: &DevnetArgs,
    datadir: &Option<PathBuf>,
    config: &Config,
) -> crate::node::devnet::DevnetConfig {
    crate::node::devnet::DevnetConfig {
        cns: args.cns,
        regions: args.regions,
        region: args
            .chain_id
            .map_or(crate::node::devnet::DEVNET_REGION, |id| {
                crate::types::ChainId(id - 1)
            }),
        servicechains: args.servicechains,
        tps: args.tps,
        load_chains: args.load_chains as usize,
        duration: (args.duration > 0).then(|| std::time::Duration::from_secs(args.duration)),
        round_ms: args
            .block_time
            .map_or(args.round_ms, |s| s.saturating_mul(1000)),
        load_accounts: args.load_accounts,
        mnemonic: args.mnemonic.clone(),
        dev_accounts: args.accounts,
        dev_balance: alloy_primitives::U256::from(args.balance)
            * alloy_primitives::U256::from(crate::node::devnet::WEI_PER_ETHER),
        datadir: datadir.clone(),
        committee_size: config.consensus.committee_size,
        until_height: None,
        metrics: args.metrics,
        rns: args.rns,
        rpc: (!args.no_rpc).then_some(args.rpc_addr()),
        rpc_limits: config.rpc.clone(),
        history_blocks: args.history_blocks.or(config.storage.history_blocks),
        ..Default::default()
    }
}

/// `kaon chaos` flags.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule (which CN, when, how long); a failing seed reproduces it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Minutes of faults under load (then a drain of at most 30 s).
    #[arg(long, default_value_t = 2)]
    pub minutes: u64,
    /// Seconds of faults under load instead of `--minutes` (short runs, tests).
    #[arg(long, conflicts_with = "minutes")]
    pub seconds: Option<u64>,
    /// Transfers per second offered through the RNs' JSON-RPC.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Ranger nodes (1 or 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub rns: u64,
    /// Inject exactly these faults in order, comma-separated (`restart`: kill -9 and restart;
    /// `down`: kill -9, restart seconds later; `long-down`: restart after 2 000 blocks;
    /// `pause`: SIGSTOP … SIGCONT; `isolate`: one CN cut off; `oneway`: one CN heard by
    /// nobody; `split`: CNs 2 | 2; `lossy`: loss, duplicates and delay on every link; `disk`:
    /// a CN's disk full; `rn-down`, `rn-pause`, `rn-isolate`: the same for an RN; `overload`:
    /// clients as fast as answered), all of them even past the duration; default: kinds drawn
    /// from the seed until the time is up.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<crate::node::chaos::FaultKind>,
    /// CN i listens on base_port + i, RNs from base_port + 10 (default: from the process id).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Fail when the chain goes longer than this without a new block (seconds).
    #[arg(long, default_value_t = crate::node::chaos::DEFAULT_STALL_BOUND.as_secs())]
    pub stall_bound: u64,
    /// Fail when a faulted CN is not back within 5 blocks of the head after this (seconds).
    #[arg(long, default_value_t = crate::node::chaos::DEFAULT_CATCH_UP_BOUND.as_secs())]
    pub catch_up_bound: u64,
    /// Most resident memory (MiB) any node may use during an overload.
    #[arg(long, default_value_t = crate::node::chaos::DEFAULT_RSS_BOUND_MIB)]
    pub rss_bound_mib: u64,
    /// Least share (percent) of the steady load's acknowledged transfers that must commit in
    /// the 5 s after each fault heals (0: printed, not judged).
    #[arg(long, default_value_t = crate::node::chaos::DEFAULT_THROUGHPUT_FLOOR, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub throughput_floor: u64,
}

fn chaos(args: &ChaosArgs) -> anyhow::Result<()> {
    use std::time::Duration;
    let spec = crate::node::chaos::ChaosSpec {
        kaon: std::env::current_exe().context("locating the kaon binary")?,
        seed: args.seed,
        duration: Duration::from_secs(args.seconds.unwrap_or(args.minutes.saturating_mul(60))),
        rate: args.rate,
        rns: args.rns as usize,
        faults: args.faults.clone(),
        // Below Linux's ephemeral range (32768–60999), where other sockets draw from.
        base_port: args
            .base_port
            .unwrap_or(20_000 + (std::process::id() % 12_000) as u16),
        stall_bound: Duration::from_secs(args.stall_bound),
        catch_up_bound: Duration::from_secs(args.catch_up_bound),
        rss_bound_mib: args.rss_bound_mib,
        throughput_floor: args.throughput_floor,
    };
    let process = crate::node::process::Process::start()?;
    let report = crate::node::chaos::run(&spec, &process.stop, &mut std::io::stdout())?;
    println!("{}", report.summary());
    anyhow::ensure!(
        report.passed(),
        "chaos: seed {} failed: {}",
        args.seed,
        report.failures.join("; ")
    );
    Ok(())
}

/// `kaon init` flags.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write genesis.json, cn<i>/ and rn/ into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub cns: usize,
    #[arg(long, default_value_t = 2)]
    pub servicechains: usize,
    /// Development accounts funded on every servicechain.
    #[arg(long, default_value_t = 16)]
    pub accounts: usize,
    /// Regionchain id; servicechains take the following ids.
    #[arg(long, default_value_t = 1000)]
    pub region: u64,
    /// Regions, each its own CN set and genesis (region r's regionchain id is `--region` +
    /// r × 1 000 000, in `region-<id>/`); the ranger node `rn/config.toml` follows them all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub regions: u64,
    /// CN i of region r listens on 127.0.0.1:(base_port + r × cns + i); the ranger node's RN
    /// network ports follow the CNs'.
    #[arg(long, default_value_t = 30300)]
    pub base_port: u16,
    /// Interval of empty blocks when no transaction waits, in milliseconds; at most a day.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_MS))]
    pub round_ms: u64,
    /// Round-0 timeout in milliseconds (growing by half per round); default max(round_ms, 500). A
    /// short one makes a dead proposer cost less on a fast local network.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_MS))]
    pub timeout_ms: Option<u64>,
}

impl InitArgs {
    fn into_spec(self, config: &Config) -> crate::node::cn::InitSpec {
        crate::node::cn::InitSpec {
            out: self.out,
            cns: self.cns,
            servicechains: self.servicechains,
            accounts: self.accounts,
            region: crate::types::ChainId(self.region),
            regions: self.regions as usize,
            base_port: self.base_port,
            round_ms: self.round_ms,
            timeout_ms: self.timeout_ms,
            committee_size: config.consensus.committee_size,
        }
    }
}

/// `kaon rn` flags.
#[derive(Debug, clap::Args)]
pub struct RnArgs {
    /// The region's genesis.json (from `kaon init`). Without it the regions come from the
    /// config file's `[rn]` section (`kaon init --regions` writes one per RN).
    #[arg(long, requires_all = ["key_file", "cns"])]
    pub genesis: Option<PathBuf>,
    /// This RN's BLS node key (hex; `kaon keygen --out FILE` writes one).
    #[arg(long, requires = "genesis")]
    pub key_file: Option<PathBuf>,
    /// The reward address's secp256k1 key (hex): the RN registers for PoSC probes and rewards.
    #[arg(long)]
    pub reward_key_file: Option<PathBuf>,
    /// RN-network address (CNs probe it; other RNs dial it).
    #[arg(long, default_value = "127.0.0.1:30400")]
    pub listen: std::net::SocketAddr,
    /// A CN to sync from, `index@host:port` (repeat for each).
    #[arg(long = "cn", requires = "genesis")]
    pub cns: Vec<String>,
    /// Another RN to dial (repeat for each); with `--config`'s `[rn]` each region lists its own.
    #[arg(long = "rn", requires = "genesis")]
    pub rns: Vec<std::net::SocketAddr>,
    /// Serve JSON-RPC (HTTP and WebSocket) here.
    #[arg(long)]
    pub rpc: Option<std::net::SocketAddr>,
    /// Serve JSON-RPC on this host, as reth and geth take it (port `--http.port`, default
    /// 8545); overrides `--rpc`'s host.
    #[arg(long = "http.addr", value_name = "IP")]
    pub http_addr: Option<std::net::IpAddr>,
    /// Serve JSON-RPC on this port (host `--http.addr`, default 127.0.0.1); overrides
    /// `--rpc`'s port.
    #[arg(long = "http.port", value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Serve Prometheus metrics here.
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Keep the state of only the last N blocks readable (`eth_getBalance`, `eth_call`, … at
    /// past blocks); older history is pruned in the background. Default: all history
    /// (`storage.history_blocks` in the config file).
    #[arg(long, value_name = "N")]
    pub history_blocks: Option<u64>,
}

impl RnArgs {
    fn into_spec(
        self,
        datadir: &Option<PathBuf>,
        config: &crate::config::Config,
        config_path: Option<&std::path::Path>,
    ) -> anyhow::Result<crate::node::ranger::RnSpec> {
        let mut datadir = datadir.clone().unwrap_or_else(|| config.datadir.clone());
        let regions = match (self.genesis, &config.rn) {
            (Some(genesis), _) => vec![crate::node::ranger::FollowedRegion {
                genesis,
                key_file: self.key_file.context("--genesis needs --key-file")?,
                listen: self.listen,
                cns: parse_peers(&self.cns)?,
                rns: self.rns,
            }],
            (None, Some(section)) => {
                let dir = config_path
                    .and_then(std::path::Path::parent)
                    .unwrap_or(std::path::Path::new("."));
                // As for `kaon cn`: the config's paths, its datadir included, are relative to it.
                datadir = dir.join(datadir);
                section
                    .regions
                    .iter()
                    .map(|r| followed_region(dir, r))
                    .collect::<anyhow::Result<_>>()?
            }
            (None, None) => anyhow::bail!(
                "kaon rn needs --genesis, --key-file and --cn, or --config with an [rn] section \
                 (kaon init --regions writes one)"
            ),
        };
        let section_rpc = config
            .rn
            .as_ref()
            .and_then(|s| s.rpc.as_deref())
            .map(|a| a.parse().with_context(|| format!("[rn] rpc address {a:?}")))
            .transpose()?;
        Ok(crate::node::ranger::RnSpec {
            regions,
            datadir,
            reward_key_file: self.reward_key_file,
            rpc: rpc_addr(self.rpc.or(section_rpc), self.http_addr, self.http_port),
            metrics: self.metrics,
            storage: crate::config::StorageConfig {
                history_blocks: self.history_blocks.or(config.storage.history_blocks),
                ..config.storage.clone()
            },
            rpc_limits: crate::rpc::RpcConfig {
                upstreams: remote_upstreams(config.rn.iter().flat_map(|s| &s.remote))?,
                ..config.rpc.clone()
            },
            net: config.net.clone(),
        })
    }
}

/// The upstreams of `[rn] remote`, refusing two whose regions' spans overlap.
fn remote_upstreams<'a>(
    remotes: impl Iterator<Item = &'a crate::config::RemoteRegion>,
) -> anyhow::Result<Vec<crate::rpc::Upstream>> {
    let mut upstreams: Vec<crate::rpc::Upstream> = Vec::new();
    for remote in remotes {
        let upstream = remote_upstream(remote)?;
        if let Some(earlier) = upstreams
            .iter()
            .find(|u| crate::chain::directory::overlap(u.first, upstream.first))
        {
            anyhow::bail!(
                "[rn] remote regions {} and {} overlap: list each region once",
                earlier.first,
                upstream.first
            );
        }
        upstreams.push(upstream);
    }
    Ok(upstreams)
}

/// The upstream the JSON-RPC server forwards `remote`'s chains (its region's id span) to.
fn remote_upstream(remote: &crate::config::RemoteRegion) -> anyhow::Result<crate::rpc::Upstream> {
    let span = crate::chain::directory::REGION_ID_SPAN;
    let last = remote
        .region
        .checked_add(span - 1)
        .with_context(|| format!("[rn] remote region {} is not a region id", remote.region))?;
    let upstream = crate::rpc::Upstream {
        first: crate::types::ChainId(remote.region),
        last: crate::types::ChainId(last),
        url: remote.rpc.clone(),
    };
    upstream
        .check()
        .map_err(|e| anyhow::anyhow!("[rn] remote: {e}"))?;
    Ok(upstream)
}

/// `index@host:port` peers.
fn parse_peers(
    peers: &[String],
) -> anyhow::Result<Vec<(crate::types::CnIndex, std::net::SocketAddr)>> {
    peers
        .iter()
        .map(|p| crate::node::cn::parse_peer(p))
        .collect()
}

/// A config file's region entry, its paths resolved against the config file's directory.
fn followed_region(
    dir: &std::path::Path,
    region: &crate::config::RnRegionConfig,
) -> anyhow::Result<crate::node::ranger::FollowedRegion> {
    let rns = region
        .rns
        .iter()
        .map(|a| a.parse().with_context(|| format!("[rn] RN address {a:?}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(crate::node::ranger::FollowedRegion {
        genesis: dir.join(&region.genesis),
        key_file: dir.join(&region.key_file),
        listen: region
            .listen
            .parse()
            .with_context(|| format!("[rn] listen address {:?}", region.listen))?,
        cns: parse_peers(&region.cns)?,
        rns,
    })
}

/// The RN's JSON-RPC address from `--rpc` and reth's `--http.addr`/`--http.port`: either of
/// the latter turns JSON-RPC on, on 127.0.0.1:8545 unless given.
fn rpc_addr(
    rpc: Option<std::net::SocketAddr>,
    host: Option<std::net::IpAddr>,
    port: Option<u16>,
) -> Option<std::net::SocketAddr> {
    if host.is_none() && port.is_none() {
        return rpc;
    }
    let base = rpc.unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8545)));
    Some(std::net::SocketAddr::new(
        host.unwrap_or(base.ip()),
        port.unwrap_or(base.port()),
    ))
}

/// `kaon withdraw` flags.
#[derive(Debug, clap::Args)]
pub struct WithdrawArgs {
    /// The regionchain endpoint of an RN's JSON-RPC, e.g. http://127.0.0.1:8545/chain/1000
    /// (also `--rpc-url` or `ETH_RPC_URL`, as Foundry's tools take it).
    #[arg(long, visible_alias = "rpc-url", env = "ETH_RPC_URL")]
    pub rpc: String,
    /// File holding the reward address's secp256k1 secret key (hex).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Servicechain to credit.
    #[arg(long)]
    pub chain: u64,
    /// Account credited on that servicechain.
    #[arg(long)]
    pub to: alloy_primitives::Address,
    /// Amount in wei (default: everything unlocked).
    #[arg(long)]
    pub amount: Option<alloy_primitives::U256>,
}

fn withdraw(args: &WithdrawArgs) -> anyhow::Result<()> {
    let secret = crate::node::ranger::read_secret(&args.key_file)?;
    let receipt = crate::node::rewards::withdraw(&crate::node::rewards::WithdrawRequest {
        rpc: args.rpc.clone(),
        reward_secret: secret,
        amount: args.amount,
        chain: crate::types::ChainId(args.chain),
        to: args.to,
    })?;
    println!(
        "withdrawal {} of {} wei (nonce {}) forwarded; {} is credited on chain {} with its next segment",
        receipt.hash, receipt.amount, receipt.nonce, args.to, args.chain
    );
    Ok(())
}

/// `kaon region` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Record a new region in the first region's directory: builds the CreateRegion system
    /// transaction (the new region's id, genesis hash, CN-set root, RN seeds) approved by the
    /// given CN keys or approvals of the first region, checks it, and sends it to an RN of the
    /// first region (or prints it without `--rpc`).
    Create(RegionCreateArgs),
    /// One CN operator's approval of a new region, signed with that CN's key where it lives:
    /// prints `<index>:0x<signature>` for `kaon region create --approval`. Give the same
    /// genesis files and RN seeds as the create will.
    Approve(RegionApproveArgs),
    /// Move a servicechain to another region: builds the source region's MoveServicechain
    /// order approved by the given CN keys, sends it to an RN of the source region, waits for
    /// the freeze and sends the adoption it serves (`kaon_getAdoption`) to the target region,
    /// which checks it against the source's sealed header before the chain starts there.
    Move(RegionMoveArgs),
    /// One CN operator's approval of a move, signed with that CN's key where it lives: prints
    /// `<index>:0x<signature>` for `kaon region move --approval`.
    ApproveMove(RegionApproveMoveArgs),
}

/// `kaon region approve-move` flags.
#[derive(Debug, clap::Args)]
pub struct RegionApproveMoveArgs {
    /// The source region's genesis.json.
    #[arg(long)]
    pub genesis: PathBuf,
    /// The servicechain to move.
    #[arg(long)]
    pub chain: u64,
    /// The region to move it to.
    #[arg(long)]
    pub to: u64,
    /// This CN's secret key file (a CN of the source region).
    #[arg(long)]
    pub key_file: PathBuf,
}

/// `kaon region move` flags.
#[derive(Debug, clap::Args)]
pub struct RegionMoveArgs {
    /// The source region's genesis.json (its CN set approves the move).
    #[arg(long)]
    pub genesis: PathBuf,
    /// The servicechain to move (one of the source region's own ids).
    #[arg(long)]
    pub chain: u64,
    /// The region to move it to (listed in the source's directory, or the directory region).
    #[arg(long)]
    pub to: u64,
    /// Secret key file of an approving CN of the source region; repeatable. With the
    /// `--approval`s, more than two thirds of its set.
    #[arg(long = "key-file", required_unless_present = "approvals")]
    pub key_files: Vec<PathBuf>,
    /// An approval from `kaon region approve-move` (`<index>:0x<signature>`); repeatable.
    #[arg(long = "approval")]
    pub approvals: Vec<String>,
    /// JSON-RPC endpoint of an RN of the source region, e.g. http://127.0.0.1:8545.
    #[arg(long, visible_alias = "rpc-url")]
    pub rpc: String,
    /// JSON-RPC endpoint of an RN of the target region (default: --rpc).
    #[arg(long)]
    pub target_rpc: Option<String>,
    /// Seconds to wait for the source region to freeze the chain.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

impl RegionMoveArgs {
    fn into_request(self) -> crate::node::region_move::MoveRequest {
        crate::node::region_move::MoveRequest {
            genesis: self.genesis,
            chain: crate::types::ChainId(self.chain),
            target: crate::types::ChainId(self.to),
            key_files: self.key_files,
            approvals: self.approvals,
            rpc: self.rpc,
            target_rpc: self.target_rpc,
            timeout: std::time::Duration::from_secs(self.timeout),
        }
    }
}

/// `kaon region approve` flags.
#[derive(Debug, clap::Args)]
pub struct RegionApproveArgs {
    /// The first region's genesis.json (its CN set approves).
    #[arg(long)]
    pub directory_genesis: PathBuf,
    /// The new region's genesis.json.
    #[arg(long)]
    pub genesis: PathBuf,
    /// This CN's secret key file (a CN of the first region).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Address (host:port) of an RN that serves the new region; repeatable, in the order the
    /// create will give them.
    #[arg(long = "rn-seed")]
    pub rn_seeds: Vec<String>,
}

/// `kaon region create` flags.
#[derive(Debug, clap::Args)]
pub struct RegionCreateArgs {
    /// The first region's genesis.json (its CN set approves).
    #[arg(long)]
    pub directory_genesis: PathBuf,
    /// The new region's genesis.json.
    #[arg(long)]
    pub genesis: PathBuf,
    /// Secret key file of an approving CN of the first region; repeatable. With the
    /// `--approval`s, more than two thirds of its set.
    #[arg(long = "key-file", required_unless_present = "approvals")]
    pub key_files: Vec<PathBuf>,
    /// An approval from `kaon region approve` (`<index>:0x<signature>`); repeatable.
    #[arg(long = "approval")]
    pub approvals: Vec<String>,
    /// Address (host:port) of an RN that serves the new region; repeatable.
    #[arg(long = "rn-seed")]
    pub rn_seeds: Vec<String>,
    /// The first region's regionchain endpoint on an RN, e.g.
    /// http://127.0.0.1:8545/chain/1000; without it the transaction is printed (hex).
    #[arg(long, visible_alias = "rpc-url")]
    pub rpc: Option<String>,
}

impl RegionCreateArgs {
    fn into_request(self) -> crate::node::region_create::CreateRequest {
        crate::node::region_create::CreateRequest {
            directory_genesis: self.directory_genesis,
            genesis: self.genesis,
            key_files: self.key_files,
            approvals: self.approvals,
            rn_seeds: self.rn_seeds,
            rpc: self.rpc,
        }
    }
}

/// `kaon bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The consensus layer alone: CNs in this process over QUIC on 127.0.0.1 (WAL, leader
    /// votes, sync as a CN runs them) order opaque payloads — no signature recovery, no
    /// execution — offered by one client per CN at a fixed total rate. Last line: committed
    /// payloads/s and client send → commit latency percentiles at CN 0, with what was lost or
    /// committed twice.
    Consensus(ConsensusBenchArgs),
}

/// `kaon bench consensus` flags.
#[derive(Debug, clap::Args)]
pub struct ConsensusBenchArgs {
    /// Consensus nodes (all on the committee).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub nodes: u64,
    /// Bytes per payload (at least 20: send time, client, sequence number).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(20..=131072))]
    pub tx_size: u64,
    /// Payloads per second offered by all clients together.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub rate: u64,
    /// Seconds the clients offer load (the first quarter, at most 1 s, is warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Where votes go: `leader` (aggregated by the round's leader) or `all-to-all`.
    #[arg(long, default_value = "leader", value_parser = ["leader", "all-to-all"])]
    pub votes: String,
    /// Milliseconds a proposer lets payloads gather once some wait.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub batch_ms: u64,
    /// Milliseconds between empty blocks when nothing waits.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub idle_ms: u64,
    /// Proposals carry their payloads instead of naming them by id (the compact form every
    /// CN fills from its pool is the default).
    #[arg(long)]
    pub full_proposals: bool,
    /// Clients do not gossip their payloads: every CN must ask each proposer for its proposal
    /// in full (what the fall-back of compact proposals costs).
    #[arg(long)]
    pub no_gossip: bool,
}

fn bench_consensus(args: &ConsensusBenchArgs, datadir: &Option<PathBuf>) -> anyhow::Result<()> {
    use crate::node::bench;
    let scratch = datadir.is_none();
    let datadir = datadir.clone().unwrap_or_else(bench::scratch_dir);
    let config = bench::BenchConfig {
        nodes: args.nodes as usize,
        payload_bytes: args.tx_size as usize,
        rate: args.rate,
        duration: std::time::Duration::from_secs(args.duration),
        votes: match args.votes.as_str() {
            "all-to-all" => crate::consensus::machine::VoteRouting::AllToAll,
            _ => crate::consensus::machine::VoteRouting::Leader,
        },
        batch_ms: args.batch_ms,
        idle_ms: args.idle_ms,
        datadir: datadir.clone(),
        compact: !args.full_proposals,
        no_gossip: args.no_gossip,
    };
    let report = bench::run(&config);
    if scratch {
        bench::remove_scratch(&datadir);
    }
    println!("{}", report?);
    Ok(())
}

/// `kaon mine` flags.
#[derive(Debug, clap::Args)]
pub struct MineArgs {
    /// Where to hash: `cpu` (SHA-NI on every core) or `gpu` (the WGSL kernel on Vulkan).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"])]
    pub device: String,
    /// Mining profile (TOML, see tuning/): read if it exists; otherwise the device is
    /// autotuned and the result written here. Default: $XDG_CONFIG_HOME/kaon/mine-CLASS.toml
    /// (or ~/.config/kaon/…), CLASS one of cpu, lavapipe, h100, consumer-gpu.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Autotune even if the profile exists, and overwrite it.
    #[arg(long)]
    pub retune: bool,
    /// GPU invocations per workgroup; overrides the profile.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workgroup_size: Option<u32>,
    /// GPU counters per dispatch; overrides the profile.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// Mine a synthetic segment for this many seconds without a network and report the rate
    /// (H/s on the last line).
    #[arg(long, required_unless_present = "rpc", conflicts_with = "rpc")]
    pub bench: Option<u64>,
    /// Mine for the network: the JSON-RPC of this operator's RN on the regionchain
    /// (e.g. http://127.0.0.1:8545/chain/1000); shares go to the CNs through it. Also
    /// `--rpc-url`.
    #[arg(long, visible_alias = "rpc-url", requires = "address")]
    pub rpc: Option<String>,
    /// Reward address the shares pay (it is part of every nonce).
    #[arg(long)]
    pub address: Option<alloy_primitives::Address>,
    /// Stop network mining after this many seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Segment bytes.
    #[arg(long, default_value_t = crate::por::DEFAULT_SEGMENT_LEN)]
    pub segment_len: usize,
    /// Difficulty as leading zero bits of the share hash.
    #[arg(long, default_value_t = 24)]
    pub bits: u32,
}

fn mine(args: &MineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.segment_len >= crate::por::STRIP_LEN,
        "segment must hold at least one strip"
    );
    let profile = mining_profile(args)?;
    if let (Some(rpc), Some(address)) = (&args.rpc, args.address) {
        return mine_network(args, &profile, rpc, address);
    }
    let segment = crate::por::synthetic_segment(args.segment_len, 1);
    let miner = alloy_primitives::Address::repeat_byte(0x42);
    let target = crate::por::target_for_bits(args.bits);
    let duration = std::time::Duration::from_secs(args.bench.unwrap_or(5));
    if profile.device == crate::por::tune::DeviceKind::Gpu {
        return mine_gpu(args, &profile, &segment, miner, &target, duration);
    }
    println!(
        "device cpu (sha256 backend {}), chunk {}, segment {} bytes, difficulty 2^-{}",
        sha256_backend(),
        profile.chunk(),
        args.segment_len,
        args.bits
    );
    let report = crate::por::cpu::bench(&segment, miner, &target, duration, profile.chunk());
    println!(
        "reference: {:.1} M raw SHA-256 compressions/s per core (two chains at once) x {} threads / {} per nonce = ceiling {:.1} M H/s",
        report.raw_per_core / 1e6,
        report.threads,
        crate::por::cpu::COMPRESSIONS_PER_NONCE,
        report.ceiling() / 1e6
    );
    println!(
        "all {} threads compressing at once: {:.1} M/s = {:.1} M H/s",
        report.threads,
        report.raw_all_cores / 1e6,
        report.raw_all_cores / 3e6
    );
    println!(
        "mined {} nonces in {:.2} s, {} shares: {:.1} % of the per-core ceiling, {:.1} % of the all-threads rate",
        report.nonces,
        report.seconds,
        report.shares,
        100.0 * report.hashes_per_sec() / report.ceiling(),
        100.0 * report.hashes_per_sec() * 3.0 / report.raw_all_cores
    );
    println!("{:.0} H/s", report.hashes_per_sec());
    Ok(())
}

/// The knobs `kaon mine` runs with: the profile at `--profile` (or the device class's default
/// path), autotuned and written when missing or with `--retune`, then the explicit flags on top.
fn mining_profile(args: &MineArgs) -> anyhow::Result<crate::por::tune::MiningProfile> {
    use crate::por::tune::{self, DeviceKind, MiningProfile};
    let kind: DeviceKind = args.device.parse().map_err(anyhow::Error::msg)?;
    let adapter = match kind {
        DeviceKind::Gpu => crate::por::gpu::adapter_name()?,
        DeviceKind::Cpu => String::new(),
    };
    let class = tune::device_class(kind, &adapter);
    let explicit = kind == DeviceKind::Gpu && args.workgroup_size.is_some() && args.batch.is_some();
    let mut profile = if explicit && !args.retune {
        // Every knob is given: no file is read, tuned or written.
        MiningProfile {
            class: class.to_string(),
            device: kind,
            adapter,
            segment_len: args.segment_len,
            workgroup_size: args.workgroup_size,
            batch: args.batch,
            chunk: None,
            threads: None,
            hashes_per_sec: None,
        }
    } else {
        let path = args
            .profile
            .clone()
            .unwrap_or_else(|| tune::default_profile_path(class));
        let loaded = if args.retune {
            None
        } else {
            match MiningProfile::load(&path) {
                Ok(p) => Some(p),
                Err(e) if e.is_not_found() => None,
                Err(e) => anyhow::bail!("{e} (fix or delete it, or pass --retune to overwrite it)"),
            }
        };
        match loaded {
            Some(p) => {
                anyhow::ensure!(
                    p.device == kind,
                    "profile {} is for --device {}, not {kind}",
                    path.display(),
                    p.device
                );
                let measured = p.hashes_per_sec.map_or_else(
                    || "unmeasured starting values".to_string(),
                    |r| format!("{:.1} M H/s on {}", r as f64 / 1e6, p.adapter),
                );
                println!("profile {}: {} ({measured})", path.display(), p.knobs());
                if p.class != class {
                    println!(
                        "  (a {} profile; this adapter is {class}: {adapter}; --retune measures it)",
                        p.class
                    );
                } else if kind == DeviceKind::Gpu
                    && p.hashes_per_sec.is_some()
                    && p.adapter != adapter
                {
                    println!(
                        "  (measured on {}; this adapter is {adapter}; --retune measures it)",
                        p.adapter
                    );
                }
                p
            }
            None => autotune(kind, args, &path)?,
        }
    };
    if let Some(n) = args.workgroup_size.filter(|_| kind == DeviceKind::Gpu) {
        profile.workgroup_size = Some(n);
    }
    if let Some(n) = args.batch.filter(|_| kind == DeviceKind::Gpu) {
        profile.batch = Some(n);
    }
    Ok(profile)
}

/// Tunes the device on a synthetic segment of `--segment-len` bytes and writes the profile.
fn autotune(
    kind: crate::por::tune::DeviceKind,
    args: &MineArgs,
    path: &std::path::Path,
) -> anyhow::Result<crate::por::tune::MiningProfile> {
    use crate::por::tune::{self, DeviceKind, TuneBudget};
    let budget = TuneBudget::default();
    println!(
        "autotuning the {kind} miner (at most ~{} s of trials) for {}",
        budget.total.as_secs(),
        path.display()
    );
    let segment = crate::por::synthetic_segment(args.segment_len, 1);
    let tuned = match kind {
        DeviceKind::Gpu => tune::autotune_gpu(&segment, budget)?,
        DeviceKind::Cpu => tune::autotune_cpu(&segment, budget),
    };
    for (i, trial) in tuned.trials.iter().enumerate() {
        let probe = i == 0 && kind == DeviceKind::Gpu;
        println!("  {trial}{}", if probe { " (probe)" } else { "" });
    }
    let p = tuned.profile;
    println!(
        "chose {} on {} ({:.1} M H/s)",
        p.knobs(),
        p.adapter,
        p.hashes_per_sec.unwrap_or(0) as f64 / 1e6
    );
    p.save(path)?;
    println!("wrote profile {}", path.display());
    Ok(p)
}

fn mine_network(
    args: &MineArgs,
    profile: &crate::por::tune::MiningProfile,
    rpc: &str,
    address: alloy_primitives::Address,
) -> anyhow::Result<()> {
    use crate::node::miner::{run, Hasher, RnClient};
    let mut hasher = Hasher::from_profile(profile);
    println!(
        "mining for {address} on {} ({}) via {rpc}",
        profile.device,
        profile.knobs()
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    crate::node::process::spawn_signal_watch(&rt, std::sync::Arc::clone(&stop));
    let duration = (args.duration > 0).then(|| std::time::Duration::from_secs(args.duration));
    let report = std::thread::scope(|s| {
        let options = crate::node::miner::MineOptions {
            duration,
            pace: None,
            verbose: true,
        };
        let worker =
            s.spawn(move || run(&RnClient::new(rpc), &mut hasher, address, options, &stop));
        while !worker.is_finished() {
            rt.block_on(tokio::time::sleep(std::time::Duration::from_millis(100)));
        }
        worker.join()
    })
    .map_err(|_| anyhow::anyhow!("the mining thread panicked"))??;
    println!(
        "mined {} hashes, {} shares found, {} accepted by the RN",
        report.hashes, report.found, report.accepted
    );
    Ok(())
}

fn mine_gpu(
    args: &MineArgs,
    profile: &crate::por::tune::MiningProfile,
    segment: &[u8],
    miner: alloy_primitives::Address,
    target: &alloy_primitives::B256,
    duration: std::time::Duration,
) -> anyhow::Result<()> {
    let (workgroup_size, batch) = (profile.workgroup_size(), profile.batch());
    let gpu = crate::por::gpu::GpuMiner::new(segment, workgroup_size)?;
    println!(
        "device gpu {}, workgroup {workgroup_size}, batch {batch}, segment {} bytes, difficulty 2^-{}",
        gpu.adapter(),
        args.segment_len,
        args.bits
    );
    let start = std::time::Instant::now();
    let (mut nonces, mut shares) = (0u64, 0usize);
    while start.elapsed() < duration {
        shares += gpu.mine(miner, target, nonces, batch)?.len();
        nonces += u64::from(batch);
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("mined {nonces} nonces in {seconds:.2} s, {shares} shares");
    println!("{:.0} H/s", nonces as f64 / seconds);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("kaon").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn devnet_logs_warnings_unless_the_flag_or_the_config_file_says_otherwise() {
        let cli = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("kaon").chain(args.iter().copied())).unwrap()
        };
        let file = |text: &str| Config::from_toml(text, std::path::Path::new("kaon.toml")).unwrap();
        let (devnet, node) = (cli(&["devnet"]), cli(&["config"]));
        assert_eq!(log_filter(&devnet, &Config::default()), "warn");
        assert_eq!(log_filter(&node, &Config::default()), "info");
        // A file saying the default out loud is still a choice.
        let said = file("[telemetry]\nlog = \"info\"\n");
        assert_eq!(log_filter(&devnet, &said), "info");
        let flagged = cli(&["devnet", "--log", "kaon=debug"]);
        let config = effective_config(&flagged).unwrap();
        assert_eq!(log_filter(&flagged, &config), "kaon=debug");
    }

    #[test]
    fn flags_refuse_intervals_beyond_a_day() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("kaon").chain(args.iter().copied()))
        };
        assert!(parse(&["devnet", "--round-ms", "86400000"]).is_ok());
        assert!(parse(&["devnet", "--round-ms", "18446744073709551615"]).is_err());
        assert!(parse(&["devnet", "--block-time", "86401"]).is_err());
        assert!(parse(&["init", "--out", "x", "--timeout-ms", "86400001"]).is_err());
    }

    #[test]
    fn devnet_takes_anvils_block_time_host_and_port() {
        let Command::Devnet(args) = parse(&[
            "devnet",
            "--block-time",
            "2",
            "--host",
            "127.0.0.2",
            "--port",
            "9545",
        ]) else {
            panic!("not devnet")
        };
        assert_eq!(args.block_time, Some(2));
        assert_eq!(args.rpc_addr(), "127.0.0.2:9545".parse().unwrap());
        let Command::Devnet(plain) = parse(&["devnet"]) else {
            panic!("not devnet")
        };
        assert_eq!(plain.rpc_addr(), "127.0.0.1:8545".parse().unwrap());
        // Both intervals at once is a contradiction, refused.
        assert!(
            Cli::try_parse_from(["kaon", "devnet", "--block-time", "1", "--round-ms", "5"])
                .is_err()
        );
    }

    #[test]
    fn devnet_takes_anvils_chain_id_mnemonic_balance_and_accounts() {
        let config = |args: &[&str]| {
            let Command::Devnet(args) = parse(args) else {
                panic!("not devnet")
            };
            devnet_config(&args, &None, &Config::default())
        };
        let plain = config(&["devnet"]);
        assert_eq!(plain.region, crate::types::ChainId(1000));
        assert_eq!(plain.dev_accounts, 10);
        assert_eq!(plain.mnemonic, crate::node::accounts::DEV_MNEMONIC);
        let (mine, load) = plain.chains().unwrap();
        assert_eq!(
            mine,
            vec![crate::types::ChainId(1001), crate::types::ChainId(1002)]
        );
        assert_eq!(
            load,
            vec![crate::types::ChainId(1003)],
            "the load has its own"
        );
        let phrase = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
        let custom = config(&[
            "devnet",
            "--chain-id",
            "31337",
            "--mnemonic",
            phrase,
            "--balance",
            "10000",
            "--accounts",
            "3",
            "--load-accounts",
            "5",
            "--servicechains",
            "1",
            "--load-chains",
            "2",
        ]);
        let (mine, load) = custom.chains().unwrap();
        assert_eq!(mine, vec![crate::types::ChainId(31337)]);
        assert_eq!(
            load,
            vec![crate::types::ChainId(31338), crate::types::ChainId(31339)]
        );
        assert_eq!(custom.mnemonic, phrase);
        assert_eq!((custom.dev_accounts, custom.load_accounts), (3, 5));
        assert_eq!(
            custom.dev_balance,
            alloy_primitives::U256::from(10_000u64)
                * alloy_primitives::U256::from(10u64).pow(alloy_primitives::U256::from(18))
        );
        // No load, no load chain.
        let idle = config(&["devnet", "--tps", "0"]);
        assert!(idle.chains().unwrap().1.is_empty());
        // Chain ids past the bound, an id whose regionchain would be 0, too many accounts.
        let refused = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("kaon").chain(args.iter().copied())).is_err()
        };
        assert!(refused(&["devnet", "--chain-id", "1"]));
        assert!(refused(&["devnet", "--chain-id", "4294967296"]));
        assert!(refused(&["devnet", "--accounts", "1001"]));
        let last = config(&["devnet", "--chain-id", "4294967295"]);
        assert!(
            last.chains().is_err(),
            "the next chains' ids would pass the bound"
        );
        // Regions: a span apart, each region's chains after its own id, never overlapping.
        assert!(refused(&["devnet", "--regions", "0"]));
        let two = config(&["devnet", "--regions", "2", "--servicechains", "3"]);
        assert_eq!(two.regions, 2);
        let ids = |r| two.region_chains(r).unwrap().0;
        let next = 1000 + crate::chain::directory::REGION_ID_SPAN;
        assert_eq!(
            ids(1),
            [next + 1, next + 2, next + 3]
                .map(crate::types::ChainId)
                .to_vec()
        );
        assert_eq!(two.region_id(1), Some(crate::types::ChainId(next)));
        let high = config(&["devnet", "--regions", "2", "--chain-id", "4294000000"]);
        assert!(high.region_chains(0).is_ok());
        assert!(
            high.region_chains(1).is_err(),
            "the second region's ids would pass the bound"
        );
    }

    #[test]
    fn rn_takes_reths_http_addr_and_port() {
        let rn = |extra: &[&str]| -> Option<std::net::SocketAddr> {
            let mut args = vec![
                "rn",
                "--genesis",
                "g",
                "--key-file",
                "k",
                "--cn",
                "0@1.2.3.4:5",
            ];
            args.extend_from_slice(extra);
            let Command::Rn(rn) = parse(&args) else {
                panic!("not rn")
            };
            rpc_addr(rn.rpc, rn.http_addr, rn.http_port)
        };
        assert_eq!(rn(&[]), None);
        assert_eq!(rn(&["--http.port", "9000"]), "127.0.0.1:9000".parse().ok());
        assert_eq!(
            rn(&["--rpc", "127.0.0.3:1234", "--http.addr", "127.0.0.4"]),
            "127.0.0.4:1234".parse().ok()
        );
    }

    #[test]
    fn withdraw_takes_foundrys_rpc_url() {
        let Command::Withdraw(args) = parse(&[
            "withdraw",
            "--rpc-url",
            "http://127.0.0.1:8545/chain/1000",
            "--key-file",
            "k",
            "--chain",
            "1001",
            "--to",
            "0x0000000000000000000000000000000000000001",
        ]) else {
            panic!("not withdraw")
        };
        assert_eq!(args.rpc, "http://127.0.0.1:8545/chain/1000");
    }
}
