//! `kaon rn`: one ranger node per process — syncs and audits the region's containers from its
//! CNs, joins the RN network, serves JSON-RPC, and (given a reward key) registers for PoSC
//! probes and PoR rewards. Resumes from its datadir after a restart; SIGINT/SIGTERM stop it.

use crate::chain::genesis::Genesis;
use crate::rn::register::RewardKey;
use crate::rn::{CnPeer, RnConfig, RnNode};
use crate::types::CnIndex;
use alloy_primitives::hex;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `kaon rn` runs.
#[derive(Debug, Clone)]
pub struct RnSpec {
    pub genesis: PathBuf,
    pub datadir: PathBuf,
    /// BLS node key file (hex), e.g. from `kaon keygen`.
    pub key_file: PathBuf,
    /// Reward address's secp256k1 key file (hex): registers for PoSC and rewards.
    pub reward_key_file: Option<PathBuf>,
    pub listen: SocketAddr,
    /// CNs as `(index, address)`; their keys come from genesis.
    pub cns: Vec<(CnIndex, SocketAddr)>,
    pub rns: Vec<SocketAddr>,
    pub rpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub storage: crate::config::StorageConfig,
    /// Limits of the JSON-RPC server (the config's `[rpc]` section).
    pub rpc_limits: crate::rpc::RpcConfig,
    pub net: crate::config::NetLimitsConfig,
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

/// Runs the RN until SIGINT/SIGTERM; writes where it serves to `out`.
pub fn run_rn(spec: &RnSpec, out: &mut dyn Write) -> anyhow::Result<()> {
    let genesis = Genesis::load(&spec.genesis)?;
    let key = crate::crypto::bls::SecretKey::from_bytes(&read_secret(&spec.key_file)?)?;
    let mut config = RnConfig::new(spec.datadir.clone(), genesis.clone(), key, spec.listen);
    config.cn_peers = CnPeer::from_genesis(&genesis, &spec.cns)?;
    config.rn_peers = spec.rns.clone();
    config.storage = spec.storage.clone();
    spec.net.apply_rn(&mut config.net);
    config.reward_key = spec
        .reward_key_file
        .as_deref()
        .map(read_secret)
        .transpose()?
        .map(RewardKey);
    let process = super::process::Process::start()?;
    process.watch_disk(&spec.datadir, spec.storage.min_free_mib)?;
    let rn = RnNode::start(config)?;
    let (rt, stop) = (&process.rt, &process.stop);
    writeln!(out, "ranger node on the RN network at {}", rn.listen_addr())?;
    let rpc = spec
        .rpc
        .map(|addr| {
            let limits = spec.rpc_limits.clone();
            let view = rn.view();
            super::rpc::serve(
                rt.handle(),
                addr,
                limits,
                &genesis,
                view,
                Some(&spec.datadir),
                stop,
            )
        })
        .transpose()?;
    if let Some(rpc) = &rpc {
        let addr = rpc.local_addr();
        writeln!(
            out,
            "JSON-RPC: regionchain http://{addr}/chain/{}",
            genesis.region
        )?;
        for chain in &genesis.servicechains {
            writeln!(out, "JSON-RPC: servicechain http://{addr}/chain/{chain}")?;
        }
    }
    if let Some(addr) = spec.metrics {
        let view = rn.view();
        let rpc_metrics = rpc.as_ref().map(|r| r.server().metrics_source());
        let bound = crate::telemetry::serve_metrics(
            rt.handle(),
            addr,
            Arc::new(move || {
                let mut m = crate::telemetry::Metrics::default();
                view.metrics(&mut m, &[]);
                if let Some(rpc) = &rpc_metrics {
                    rpc.metrics(&mut m, &[]);
                }
                m.render()
            }),
        )?;
        writeln!(out, "metrics: http://{bound}/metrics")?;
    }
    out.flush()?;
    process.wait();
    if let Some(rpc) = rpc {
        rpc.shutdown();
    }
    rn.shutdown()
}
