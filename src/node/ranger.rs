//! `kaon rn`: one ranger node process — for each region it follows (one by default; several
//! from a config's `[rn]` section, as `kaon init --regions` writes it) it syncs and audits the
//! region's containers from its CNs, joins that region's RN network and (given a reward key)
//! registers for PoSC probes and PoR rewards; one JSON-RPC endpoint serves every followed
//! region, `/chain/<id>` answered by the region holding `id`. Resumes from its datadir after a
//! restart; SIGINT/SIGTERM stop it.

use crate::chain::genesis::Genesis;
use crate::rn::register::RewardKey;
use crate::rn::{CnPeer, RnConfig, RnNode};
use crate::types::{ChainId, CnIndex};
use alloy_primitives::hex;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `kaon rn` runs.
#[derive(Debug, Clone)]
pub struct RnSpec {
    /// The regions followed, at least one; the first keeps the datadir's root.
    pub regions: Vec<FollowedRegion>,
    pub datadir: PathBuf,
    /// Reward address's secp256k1 key file (hex): registers for PoSC in every region followed.
    pub reward_key_file: Option<PathBuf>,
    /// JSON-RPC for every region followed (`/chain/<id>` routed to the region holding `id`).
    pub rpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub storage: crate::config::StorageConfig,
    /// Limits of the JSON-RPC server (the config's `[rpc]` section).
    pub rpc_limits: crate::rpc::RpcConfig,
    pub net: crate::config::NetLimitsConfig,
}

/// One region an RN follows: its genesis, this RN's key and address in its RN network, its CNs
/// and RNs.
#[derive(Debug, Clone)]
pub struct FollowedRegion {
    pub genesis: PathBuf,
    /// BLS node key file (hex), e.g. from `kaon keygen`.
    pub key_file: PathBuf,
    pub listen: SocketAddr,
    /// CNs as `(index, address)`; their keys come from genesis.
    pub cns: Vec<(CnIndex, SocketAddr)>,
    pub rns: Vec<SocketAddr>,
}

/// Reads a 32-byte hex secret (`0x` optional, surrounding whitespace ignored).
pub fn read_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    hex::decode(text.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is not a 32-byte hex key", path.display()))
}

/// A started region: its genesis, node and datadir.
struct Following {
    genesis: Genesis,
    rn: crate::rn::RnHandle,
    datadir: PathBuf,
}

/// Runs the RN until SIGINT/SIGTERM; writes where it serves to `out`.
pub fn run_rn(spec: &RnSpec, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        !spec.regions.is_empty(),
        "a ranger node follows at least one region"
    );
    let reward_key = spec
        .reward_key_file
        .as_deref()
        .map(read_secret)
        .transpose()?
        .map(RewardKey);
    let process = super::process::Process::start()?;
    process.watch_disk(&spec.datadir, spec.storage.min_free_mib)?;
    let mut followed: Vec<Following> = Vec::with_capacity(spec.regions.len());
    for (k, region) in spec.regions.iter().enumerate() {
        let genesis = Genesis::load(&region.genesis)?;
        if let Some(twin) = followed.iter().find(|f| f.genesis.region == genesis.region) {
            anyhow::bail!(
                "{} and an earlier region are both region {}",
                region.genesis.display(),
                twin.genesis.region
            );
        }
        // A followed region's chains are answered here, never forwarded.
        if let Some(remote) = spec
            .rpc_limits
            .upstreams
            .iter()
            .find(|u| crate::chain::directory::overlap(u.first, ChainId(genesis.region)))
        {
            anyhow::bail!(
                "region {} is both followed ({}) and forwarded to {} ([rn] remote): list it once",
                genesis.region,
                region.genesis.display(),
                remote.url
            );
        }
        let datadir = match k {
            0 => spec.datadir.clone(),
            _ => spec.datadir.join(format!("region-{}", genesis.region)),
        };
        let rn = start_region(spec, region, &genesis, &datadir, reward_key.clone())
            .with_context(|| format!("following region {}", genesis.region))?;
        writeln!(
            out,
            "ranger node of region {} on the RN network at {}",
            genesis.region,
            rn.listen_addr()
        )?;
        followed.push(Following {
            genesis,
            rn,
            datadir,
        });
    }
    let (rt, stop) = (&process.rt, &process.stop);
    // Each followed region's regionchain records the others' headers (and the directory
    // region's checkpoints carry its directory to the others).
    let relayed = followed
        .iter()
        .map(|f| super::relay::RelayedRegion::new(f.rn.view(), &f.genesis))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let routes = super::relay::platform_routes(&relayed);
    let relay = super::relay::spawn(routes, super::relay::RELAY_INTERVAL, Arc::clone(stop))?;
    let rpc = spec
        .rpc
        .map(|addr| {
            let served: Vec<super::rpc::ServedRegion<'_>> = followed
                .iter()
                .map(|f| super::rpc::ServedRegion {
                    genesis: &f.genesis,
                    rn: f.rn.view(),
                    datadir: Some(&f.datadir),
                })
                .collect();
            super::rpc::serve_regions(rt.handle(), addr, spec.rpc_limits.clone(), &served, stop)
        })
        .transpose()?;
    if let Some(rpc) = &rpc {
        let addr = rpc.local_addr();
        for f in &followed {
            writeln!(
                out,
                "JSON-RPC: regionchain http://{addr}/chain/{}",
                f.genesis.region
            )?;
            for chain in &f.genesis.servicechains {
                writeln!(out, "JSON-RPC: servicechain http://{addr}/chain/{chain}")?;
            }
        }
    }
    if let Some(addr) = spec.metrics {
        let views: Vec<(String, crate::rn::RnView)> = followed
            .iter()
            .map(|f| (f.genesis.region.to_string(), f.rn.view()))
            .collect();
        let rpc_metrics = rpc.as_ref().map(|r| r.server().metrics_source());
        let loads: Vec<_> = rpc.iter().flat_map(|r| r.regions().to_vec()).collect();
        let bound = crate::telemetry::serve_metrics(
            rt.handle(),
            addr,
            Arc::new(move || {
                let mut m = crate::telemetry::Metrics::default();
                for (region, view) in &views {
                    // One region keeps the unlabelled series it always had.
                    let labels: &[(&str, &str)] = match views.len() {
                        1 => &[],
                        _ => &[("region", region.as_str())],
                    };
                    view.metrics(&mut m, labels);
                }
                if let Some(rpc) = &rpc_metrics {
                    rpc.metrics(&mut m, &[]);
                }
                for load in &loads {
                    let region = load.region().to_string();
                    if let Err(e) = load.load_metrics(&mut m, &[("region", region.as_str())]) {
                        tracing::debug!(%region, "region load not read for metrics: {e}");
                    }
                }
                m.render()
            }),
        )?;
        writeln!(out, "metrics: http://{bound}/metrics")?;
    }
    out.flush()?;
    process.wait();
    if let Some(relay) = relay {
        let _ = relay.join();
    }
    if let Some(rpc) = rpc {
        rpc.shutdown();
    }
    let mut first_error = None;
    for f in followed {
        if let Err(e) = f.rn.shutdown() {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Starts this process's ranger node of one region in `datadir`.
fn start_region(
    spec: &RnSpec,
    region: &FollowedRegion,
    genesis: &Genesis,
    datadir: &Path,
    reward_key: Option<RewardKey>,
) -> anyhow::Result<crate::rn::RnHandle> {
    let key = crate::crypto::bls::SecretKey::from_bytes(&read_secret(&region.key_file)?)?;
    let mut config = RnConfig::new(datadir.to_path_buf(), genesis.clone(), key, region.listen);
    config.cn_peers = CnPeer::from_genesis(genesis, &region.cns)?;
    config.rn_peers = region.rns.clone();
    config.storage = spec.storage.clone();
    spec.net.apply_rn(&mut config.net);
    config.reward_key = reward_key;
    RnNode::start(config)
}
