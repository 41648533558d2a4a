//! `kaon init` (genesis, keys and per-node configs for a real network, like Klaytn's homi) and
//! `kaon cn` (one consensus node per process, resuming from its datadir after a restart).

use super::loadgen::dev_account;
use crate::chain::genesis::{Genesis, MAX_TIMEOUT_MS};
use crate::chain::servicechain::MAX_CHAIN_ID;
use crate::config::{CnConfig, Config, RnRegionConfig, RnSection};
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
    /// CNs per region.
    pub cns: usize,
    /// Servicechains per region.
    pub servicechains: usize,
    pub accounts: usize,
    /// The first region's regionchain id; region `r`'s is `region + r × 1 000 000`.
    pub region: ChainId,
    /// Regions, each its own CN set and genesis (1: the layout a single region always had).
    pub regions: usize,
    /// The CNs of every region take ports from here on, region after region, then one RN-network
    /// port per region for the ranger node.
    pub base_port: u16,
    pub round_ms: u64,
    /// Round-0 timeout; `None` keeps genesis's default.
    pub timeout_ms: Option<u64>,
    pub committee_size: usize,
}

impl InitSpec {
    /// Region `r`'s regionchain id (the first is `--region` as given; the others must fit
    /// with their spans below the largest chain id).
    fn region_id(&self, r: usize) -> Option<ChainId> {
        if r == 0 {
            return Some(self.region);
        }
        let offset = (r as u64).checked_mul(super::devnet::REGION_STRIDE)?;
        let id = self.region.0.checked_add(offset)?;
        (id.checked_add(super::devnet::REGION_STRIDE - 1)? <= MAX_CHAIN_ID).then_some(ChainId(id))
    }

    /// Where region `r`'s genesis and CN directories go: the first region at the root.
    fn region_dir(&self, r: usize, id: ChainId) -> PathBuf {
        match r {
            0 => self.out.clone(),
            _ => self.out.join(format!("region-{id}")),
        }
    }

    /// Port of CN `i` of region `r`.
    fn cn_port(&self, r: usize, i: usize) -> usize {
        usize::from(self.base_port) + r * self.cns + i
    }

    /// Port of the ranger node's endpoint on region `r`'s RN network.
    fn rn_port(&self, r: usize) -> usize {
        usize::from(self.base_port) + self.regions * self.cns + r
    }

    /// Refuses what cannot be written (nothing is written then).
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.cns >= 1, "a network needs at least one CN");
        anyhow::ensure!(self.regions >= 1, "a platform needs at least one region");
        let last_port = self
            .cns
            .checked_add(1)
            .and_then(|per_region| per_region.checked_mul(self.regions))
            .and_then(|ports| ports.checked_add(usize::from(self.base_port)))
            .map(|end| end - 1);
        anyhow::ensure!(
            last_port.is_some_and(|last| last <= usize::from(u16::MAX)),
            "{} region(s) of {} CNs and a ranger node from port {} need ports up to {}, beyond \
             65535: lower --base-port, --cns or --regions",
            self.regions,
            self.cns,
            self.base_port,
            last_port.map_or("past usize".into(), |l| l.to_string())
        );
        if let Some(timeout_ms) = self.timeout_ms {
            anyhow::ensure!(
                timeout_ms <= MAX_TIMEOUT_MS,
                "--timeout-ms {timeout_ms} is above the longest round timeout, {MAX_TIMEOUT_MS} ms"
            );
        }
        if self.regions > 1 {
            anyhow::ensure!(
                (self.servicechains as u64) < super::devnet::REGION_STRIDE,
                "{} servicechains per region do not fit between two regions {} ids apart",
                self.servicechains,
                super::devnet::REGION_STRIDE
            );
            anyhow::ensure!(
                self.region_id(self.regions - 1).is_some(),
                "{} regions from id {} do not fit below the largest chain id {MAX_CHAIN_ID}",
                self.regions,
                self.region
            );
        }
        if let Some(taken) = self.files().into_iter().find(|f| f.exists()) {
            anyhow::bail!(
                "{} already exists: kaon init writes into a directory that holds none of its files",
                taken.display()
            );
        }
        Ok(())
    }

    /// Every file init writes (checked before writing any, so a failure leaves nothing half
    /// written and a second run is not refused by what a first one left).
    fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for r in 0..self.regions {
            let Some(id) = self.region_id(r) else {
                continue;
            };
            let dir = self.region_dir(r, id);
            files.push(dir.join("genesis.json"));
            for i in 0..self.cns {
                files.push(dir.join(format!("cn{i}/cn.key")));
                files.push(dir.join(format!("cn{i}/config.toml")));
            }
            files.push(self.out.join(format!("rn/rn-{id}.key")));
        }
        files.push(self.out.join("rn/config.toml"));
        files
    }
}

/// One region `kaon init` wrote: its id, directory, genesis and CN keys.
struct WrittenRegion {
    dir: PathBuf,
    genesis: Genesis,
    keys: Vec<SecretKey>,
}

/// Writes, per region, `genesis.json` and, per CN, `cn<i>/cn.key` (mode 0600) and
/// `cn<i>/config.toml` (the first region in `out`, region `id` in `out/region-<id>/`), and a
/// ranger node following every region: `rn/config.toml` and `rn/rn-<id>.key` per region. Then
/// prints to `out` what it wrote and the commands that start each node.
pub fn init(spec: &InitSpec, out: &mut dyn Write) -> anyhow::Result<()> {
    spec.check()?;
    let mut written: Vec<WrittenRegion> = Vec::with_capacity(spec.regions);
    for r in 0..spec.regions {
        let id = spec
            .region_id(r)
            .with_context(|| format!("region {r}'s id does not fit"))?;
        // Every region after the first names it, the directory region, in its genesis.
        let anchor = match written.first() {
            Some(first) => Some(first.genesis.as_anchor()?),
            None => None,
        };
        written.push(write_region(spec, r, id, anchor)?);
    }
    write_rn(spec, &written)?;
    print_init(spec, &written, out).context("printing what kaon init wrote")
}

/// Writes region `r` (id `id`): its genesis with fresh CN keys (naming the directory region
/// `anchor`, for regions after the first), and each CN's key and config.
fn write_region(
    spec: &InitSpec,
    r: usize,
    id: ChainId,
    anchor: Option<crate::chain::genesis::DirectoryAnchor>,
) -> anyhow::Result<WrittenRegion> {
    let dir = spec.region_dir(r, id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
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
        id,
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
    genesis.directory = anchor;
    genesis.save(&dir.join("genesis.json"))?;
    let addr = |i: usize| format!("127.0.0.1:{}", spec.cn_port(r, i));
    for (i, key) in keys.iter().enumerate() {
        let cn_dir = dir.join(format!("cn{i}"));
        std::fs::create_dir_all(&cn_dir)?;
        super::keyfile::write_secret(&cn_dir.join("cn.key"), &hex::encode(key.to_bytes()))?;
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
        std::fs::write(cn_dir.join("config.toml"), config.to_toml())?;
    }
    Ok(WrittenRegion { dir, genesis, keys })
}

/// Writes `rn/config.toml`, a ranger node following every region written (JSON-RPC on
/// [`RN_RPC`]), with a fresh node key per region in `rn/rn-<id>.key`.
fn write_rn(spec: &InitSpec, regions: &[WrittenRegion]) -> anyhow::Result<()> {
    let dir = spec.out.join("rn");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut followed = Vec::with_capacity(regions.len());
    for (r, region) in regions.iter().enumerate() {
        let id = region.genesis.region;
        let mut ikm = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut ikm);
        let key = SecretKey::from_seed(&ikm)?;
        let key_file = PathBuf::from(format!("rn-{id}.key"));
        super::keyfile::write_secret(&dir.join(&key_file), &hex::encode(key.to_bytes()))?;
        let genesis = match r {
            0 => PathBuf::from("../genesis.json"),
            _ => PathBuf::from(format!("../region-{id}/genesis.json")),
        };
        followed.push(RnRegionConfig {
            genesis,
            key_file,
            listen: format!("127.0.0.1:{}", spec.rn_port(r)),
            cns: (0..spec.cns)
                .map(|i| format!("{i}@127.0.0.1:{}", spec.cn_port(r, i)))
                .collect(),
            rns: Vec::new(),
        });
    }
    let config = Config {
        datadir: PathBuf::from("data"),
        rn: Some(RnSection {
            rpc: Some(RN_RPC.to_string()),
            regions: followed,
            remote: Vec::new(),
        }),
        ..Config::default()
    };
    std::fs::write(dir.join("config.toml"), config.to_toml())?;
    Ok(())
}

/// Where the ranger node `kaon init` writes serves JSON-RPC.
const RN_RPC: &str = "127.0.0.1:8545";

/// `kaon init`'s summary: per region its genesis hash and chain ids and each CN's key and
/// files, then the commands that start the network.
fn print_init(
    spec: &InitSpec,
    regions: &[WrittenRegion],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for (r, region) in regions.iter().enumerate() {
        let (dir, genesis) = (region.dir.display(), &region.genesis);
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
        for (i, key) in region.keys.iter().enumerate() {
            writeln!(
                out,
                "CN {i}: key 0x{}, {dir}/cn{i}/cn.key, {dir}/cn{i}/config.toml, listens on 127.0.0.1:{}",
                hex::encode(key.public_key().to_bytes().0),
                spec.cn_port(r, i)
            )?;
        }
    }
    writeln!(out, "start each CN (one process each):")?;
    for region in regions {
        for i in 0..region.keys.len() {
            writeln!(
                out,
                "  kaon cn --config {}/cn{i}/config.toml",
                region.dir.display()
            )?;
        }
    }
    let out_dir = spec.out.display();
    writeln!(
        out,
        "and a ranger node following every region, serving JSON-RPC on {RN_RPC}:"
    )?;
    writeln!(out, "  kaon --config {out_dir}/rn/config.toml rn")?;
    if regions.len() > 1 {
        // Every CN of the first region approves here; the quorum alone would do.
        let keys: Vec<String> = (0..spec.cns)
            .map(|i| format!("--key-file {out_dir}/cn{i}/cn.key"))
            .collect();
        writeln!(
            out,
            "then record each other region in the first region's directory:"
        )?;
        for (r, region) in regions.iter().enumerate().skip(1) {
            writeln!(
                out,
                "  kaon region create --directory-genesis {out_dir}/genesis.json --genesis {}/genesis.json {} --rn-seed 127.0.0.1:{} --rpc http://{RN_RPC}/chain/{}",
                region.dir.display(),
                keys.join(" "),
                spec.rn_port(r),
                regions[0].genesis.region
            )?;
        }
    }
    Ok(())
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
            regions: 1,
            base_port,
            round_ms: 1000,
            timeout_ms: None,
            committee_size: 100,
        };
        let err = init(&spec(65_534, 4), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("65538"), "{err}");
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
        init(&spec(65_531, 4), &mut printed).unwrap();
        assert!(String::from_utf8(printed).unwrap().contains("65534"));
        let rn = std::fs::read_to_string(dir.path().join("net/rn/config.toml")).unwrap();
        assert!(rn.contains("127.0.0.1:65535"), "{rn}");
    }

    #[test]
    fn init_writes_each_region_apart_and_a_ranger_node_following_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let spec = InitSpec {
            out: dir.path().join("net"),
            cns: 4,
            servicechains: 2,
            accounts: 1,
            region: ChainId(1000),
            regions: 2,
            base_port: 31_000,
            round_ms: 1000,
            timeout_ms: None,
            committee_size: 100,
        };
        let mut printed = Vec::new();
        init(&spec, &mut printed).unwrap();
        let printed = String::from_utf8(printed).unwrap();
        let first = Genesis::load(&spec.out.join("genesis.json")).unwrap();
        let second = Genesis::load(&spec.out.join("region-1001000/genesis.json")).unwrap();
        assert_eq!((first.region, second.region), (1000, 1_001_000));
        assert_eq!(second.servicechains, vec![1_001_001, 1_001_002]);
        assert_ne!(first.cns, second.cns, "each region has its own CN keys");
        let cn = |path: &str| Config::load(&spec.out.join(path)).unwrap().cn.unwrap();
        assert_eq!(cn("cn3/config.toml").listen, "127.0.0.1:31003");
        assert_eq!(
            cn("region-1001000/cn0/config.toml").listen,
            "127.0.0.1:31004"
        );
        assert!(cn("region-1001000/cn0/config.toml")
            .peers
            .contains(&"3@127.0.0.1:31007".to_string()));
        let rn = Config::load(&spec.out.join("rn/config.toml"))
            .unwrap()
            .rn
            .unwrap();
        assert_eq!(rn.regions.len(), 2);
        let listens: Vec<&str> = rn.regions.iter().map(|r| r.listen.as_str()).collect();
        assert_eq!(listens, ["127.0.0.1:31008", "127.0.0.1:31009"]);
        assert_eq!(rn.regions[1].cns[0], "0@127.0.0.1:31004");
        for region in &rn.regions {
            let genesis = Genesis::load(&spec.out.join("rn").join(&region.genesis)).unwrap();
            assert!(region
                .key_file
                .ends_with(format!("rn-{}.key", genesis.region)));
            assert!(read_key(&spec.out.join("rn").join(&region.key_file)).is_ok());
        }
        assert!(
            printed.contains("kaon region create --directory-genesis"),
            "{printed}"
        );
        assert!(printed.contains("--rn-seed 127.0.0.1:31009"), "{printed}");
        // Regions past the largest chain id are refused before anything is written.
        let far = InitSpec {
            out: dir.path().join("far"),
            region: ChainId(MAX_CHAIN_ID - 1_500_000),
            ..spec.clone()
        };
        let err = init(&far, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        assert!(!far.out.exists());
    }
}
