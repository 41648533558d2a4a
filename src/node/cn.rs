//! `kaon init` (genesis, keys and per-node configs for a real network, like Klaytn's homi) and
//! `kaon cn` (one consensus node per process, resuming from its datadir after a restart).

use super::loadgen::dev_account;
use crate::chain::genesis::{Genesis, MAX_TIMEOUT_MS};
use crate::config::{CnConfig, Config};
use crate::crypto::bls::SecretKey;
use crate::net::NetConfig;
use crate::pipeline::topology::{BoundCn, CnSpec};
use crate::types::{ChainId, CnIndex};
use alloy_primitives::hex;
use alloy_primitives::U256;
use anyhow::Context;
use rand::RngCore;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `kaon init` writes.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub out: PathBuf,
    pub cns: usize,
    pub servicechains: usize,
    pub accounts: usize,
    pub region: ChainId,
    pub base_port: u16,
    pub round_ms: u64,
    /// Round-0 timeout; `None` keeps genesis's default.
    pub timeout_ms: Option<u64>,
    pub committee_size: usize,
}

/// Writes `genesis.json` and, per CN, `cn<i>/cn.key` (mode 0600) and `cn<i>/config.toml`,
/// then prints to `out` what it wrote and the commands that start each CN and an RN.
pub fn init(spec: &InitSpec, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(spec.cns >= 1, "a network needs at least one CN");
    let last_port = usize::from(spec.base_port).saturating_add(spec.cns - 1);
    anyhow::ensure!(
        last_port <= usize::from(u16::MAX),
        "{} CNs from port {} need ports up to {last_port}, beyond 65535: lower --base-port or --cns",
        spec.cns,
        spec.base_port
    );
    if let Some(timeout_ms) = spec.timeout_ms {
        anyhow::ensure!(
            timeout_ms <= MAX_TIMEOUT_MS,
            "--timeout-ms {timeout_ms} is above the longest round timeout, {MAX_TIMEOUT_MS} ms"
        );
    }
    anyhow::ensure!(
        !spec.out.join("genesis.json").exists(),
        "{} already holds a genesis.json",
        spec.out.display()
    );
    std::fs::create_dir_all(&spec.out)
        .with_context(|| format!("creating {}", spec.out.display()))?;
    let keys: Vec<SecretKey> = (0..spec.cns)
        .map(|_| {
            let mut ikm = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut ikm);
            SecretKey::from_seed(&ikm)
        })
        .collect::<Result<_, _>>()?;
    let accounts: Vec<_> = (0..spec.accounts).map(|i| dev_account(i).address).collect();
    let balance = U256::from(super::devnet::DEV_BALANCE_WEI);
    let mut genesis = Genesis::new(
        spec.region,
        &keys,
        spec.servicechains,
        &accounts,
        balance,
        spec.round_ms,
        spec.committee_size,
    );
    if let Some(timeout_ms) = spec.timeout_ms {
        genesis.base_timeout_ms = timeout_ms;
    }
    genesis.save(&spec.out.join("genesis.json"))?;
    let addr = |i: usize| format!("127.0.0.1:{}", spec.base_port as usize + i);
    for (i, key) in keys.iter().enumerate() {
        let dir = spec.out.join(format!("cn{i}"));
        std::fs::create_dir_all(&dir)?;
        super::keyfile::write_secret(&dir.join("cn.key"), &hex::encode(key.to_bytes()))?;
        let config = Config {
            datadir: PathBuf::from("data"),
            cn: Some(CnConfig {
                index: i as u32,
                key_file: PathBuf::from("cn.key"),
                genesis: PathBuf::from("../genesis.json"),
                listen: addr(i),
                peers: (0..spec.cns)
                    .filter(|&j| j != i)
                    .map(|j| format!("{j}@{}", addr(j)))
                    .collect(),
            }),
            ..Config::default()
        };
        std::fs::write(dir.join("config.toml"), config.to_toml())?;
    }
    print_init(spec, &genesis, &keys, out).context("printing what kaon init wrote")
}

/// `kaon init`'s summary: the genesis hash and chain ids, each CN's key and files, and the
/// commands that start the network.
fn print_init(
    spec: &InitSpec,
    genesis: &Genesis,
    keys: &[SecretKey],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let dir = spec.out.display();
    let port = |i: usize| spec.base_port as usize + i;
    writeln!(out, "wrote {dir}/genesis.json")?;
    writeln!(out, "  genesis hash   {}", genesis.hash())?;
    writeln!(out, "  regionchain    {}", genesis.region)?;
    let chains: Vec<String> = genesis.servicechains.iter().map(u64::to_string).collect();
    writeln!(out, "  servicechains  {}", chains.join(", "))?;
    writeln!(
        out,
        "  funded         {} development accounts on every servicechain",
        spec.accounts
    )?;
    for (i, key) in keys.iter().enumerate() {
        writeln!(
            out,
            "CN {i}: key 0x{}, {dir}/cn{i}/cn.key, {dir}/cn{i}/config.toml, listens on 127.0.0.1:{}",
            hex::encode(key.public_key().to_bytes().0),
            port(i)
        )?;
    }
    writeln!(out, "start each CN (one process each):")?;
    for i in 0..keys.len() {
        writeln!(out, "  kaon cn --config {dir}/cn{i}/config.toml")?;
    }
    let cns: Vec<String> = (0..keys.len())
        .map(|i| format!("--cn {i}@127.0.0.1:{}", port(i)))
        .collect();
    writeln!(out, "and a ranger node serving JSON-RPC on 127.0.0.1:8545:")?;
    writeln!(out, "  kaon keygen --out {dir}/rn.key")?;
    writeln!(
        out,
        "  kaon --datadir {dir}/rn rn --genesis {dir}/genesis.json --key-file {dir}/rn.key {} --rpc 127.0.0.1:8545",
        cns.join(" ")
    )
}

/// Resolves `path` against the directory of the config file.
fn resolve(config_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        config_dir.join(path)
    }
}

/// `index@host:port`.
pub fn parse_peer(s: &str) -> anyhow::Result<(CnIndex, SocketAddr)> {
    let (index, addr) = s
        .split_once('@')
        .with_context(|| format!("peer {s:?} is not index@host:port"))?;
    Ok((
        CnIndex(
            index
                .parse()
                .with_context(|| format!("peer {s:?}: bad index"))?,
        ),
        addr.parse()
            .with_context(|| format!("peer {s:?}: bad address"))?,
    ))
}

pub(crate) fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
    Ok(SecretKey::from_bytes(&super::ranger::read_secret(path)?)?)
}

/// Runs one CN until SIGINT/SIGTERM; prints a line per committed block to `out`.
pub fn run_cn(
    config: &Config,
    config_path: &Path,
    metrics: Option<SocketAddr>,
    out: Arc<std::sync::Mutex<dyn Write + Send>>,
) -> anyhow::Result<()> {
    let cn = config
        .cn
        .as_ref()
        .context("this config has no [cn] section (write one with `kaon init`)")?;
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let genesis = Genesis::load(&resolve(dir, &cn.genesis))?;
    let key = read_key(&resolve(dir, &cn.key_file))?;
    let listen: SocketAddr = cn
        .listen
        .parse()
        .with_context(|| format!("listen address {:?}", cn.listen))?;
    let peers = cn
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let datadir = resolve(dir, &config.datadir);
    let mut net = NetConfig::new(listen);
    config.net.apply_cn(&mut net);
    let mut spec = CnSpec::from_genesis(&genesis, CnIndex(cn.index), key, datadir, net)?;
    spec.pipeline = config.pipeline.clone();
    spec.storage = config.storage.clone();
    let process = super::process::Process::start()?;
    process.watch_disk(&spec.datadir, spec.storage.min_free_mib)?;
    let rt = &process.rt;
    let printer = Arc::clone(&out);
    // One runtime for the process: the node's network and prober, the metrics server.
    let runtime = crate::pipeline::NodeRuntime::Shared(rt.handle().clone());
    let node = BoundCn::bind(runtime, spec)?.start(
        &peers,
        Box::new(move |block| {
            let txs: usize = block.segments.iter().map(|s| s.txs.len()).sum();
            let mut out = printer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(
                out,
                "committed height {} hash {} txs {}",
                block.header().height,
                block.hash(),
                txs
            );
            let _ = out.flush();
        }),
    )?;
    if let Some(addr) = metrics {
        let source = node.metrics_source();
        let bound = crate::telemetry::serve_metrics(
            rt.handle(),
            addr,
            Arc::new(move || {
                let mut m = crate::telemetry::Metrics::default();
                source.metrics(&mut m, &[]);
                m.render()
            }),
        )?;
        tracing::info!(%bound, "serving metrics");
    }
    tracing::info!(cn = cn.index, %listen, "consensus node running");
    process.wait();
    node.shutdown()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_refuses_ports_beyond_65535_or_a_timeout_past_the_cap_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |base_port, cns| InitSpec {
            out: dir.path().join("net"),
            cns,
            servicechains: 1,
            accounts: 1,
            region: crate::types::ChainId(1000),
            base_port,
            round_ms: 1000,
            timeout_ms: None,
            committee_size: 100,
        };
        let err = init(&spec(65_534, 4), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("65537"), "{err}");
        assert!(!dir.path().join("net").exists());
        let err = init(&spec(1, usize::MAX), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("beyond 65535"), "{err}");
        let slow = InitSpec {
            timeout_ms: Some(MAX_TIMEOUT_MS + 1),
            ..spec(30_000, 4)
        };
        let err = init(&slow, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("--timeout-ms"), "{err}");
        assert!(!dir.path().join("net").exists());
        let mut printed = Vec::new();
        init(&spec(65_532, 4), &mut printed).unwrap();
        assert!(String::from_utf8(printed).unwrap().contains("65535"));
    }
}
