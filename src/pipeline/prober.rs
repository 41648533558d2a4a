//! A CN's PoSC duty: after each durable container, probe the RNs the regionchain selected for
//! that round ([`crate::chain::posc`]) and, for each that fails, gossip a signed attestation to every
//! CN (the proposer folds a quorum of them into a penalty).
//!
//! Probes run on the node's tokio runtime, each under the genesis deadline; every round is
//! probed as it arrives (rounds overlap, so every CN probes every round and their attestations
//! meet), through a bounded queue and at most [`MAX_PROBES_IN_FLIGHT`] at once — beyond that a
//! round is skipped and counted, never queued without bound.

use super::topology::Submitter;
use crate::chain::posc::{ProbeAttestation, ProbeTarget};
use crate::chain::region::RegionState;
use crate::crypto::bls::SecretKey;
use crate::net::probe::{read_height, Probe, Prober};
use crate::net::sync::ChainReader;
use crate::types::{CnIndex, Height};
use alloy_primitives::B256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Rounds waiting to be probed.
const ROUND_QUEUE: usize = 16;
/// Probes running at once (rounds overlap while a dead RN runs out its deadline).
const MAX_PROBES_IN_FLIGHT: usize = 64;

/// Counters of a CN's probing.
#[derive(Debug, Default)]
pub struct ProbeStats {
    pub probes: AtomicU64,
    pub failures: AtomicU64,
    pub attestations: AtomicU64,
    pub skipped_rounds: AtomicU64,
}

/// Hands committed rounds to the probing task.
#[derive(Clone)]
pub struct ProbeRounds {
    queue: mpsc::Sender<(Height, B256)>,
    pub stats: Arc<ProbeStats>,
}

impl ProbeRounds {
    /// Notes that container `height` with mix `mix` is durable (never blocks).
    pub fn committed(&self, height: Height, mix: B256) {
        if self.queue.try_send((height, mix)).is_err() {
            self.stats.skipped_rounds.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the probing task needs of its node.
pub struct ProberDuty {
    pub prober: Prober,
    pub key: SecretKey,
    pub region: Arc<RwLock<RegionState>>,
    pub submitter: Submitter,
    pub deadline: Duration,
    /// This CN's chain: the hash of each block a probe reads.
    pub chain: ChainReader,
}

impl ProberDuty {
    /// Starts the probing task on `rt`; abort the handle to stop it (and every probe in
    /// flight) before the node's ingress is closed.
    pub fn spawn(self, rt: &tokio::runtime::Handle) -> (ProbeRounds, tokio::task::AbortHandle) {
        let (queue, rounds) = mpsc::channel(ROUND_QUEUE);
        let stats = Arc::new(ProbeStats::default());
        let task = rt.spawn(run(Arc::new(self), rounds, Arc::clone(&stats)));
        (ProbeRounds { queue, stats }, task.abort_handle())
    }

    /// This CN's index in the set in force and the round's targets.
    fn round(&self, round: Height) -> Option<(CnIndex, Vec<ProbeTarget>)> {
        let region = self.region.read().unwrap_or_else(|e| e.into_inner());
        let me = self.key.public_key().to_bytes();
        let index = region.set.keys().iter().position(|k| k.to_bytes() == me)?;
        Some((CnIndex(index as u32), region.pop.posc.targets(round)))
    }
}

async fn run(
    duty: Arc<ProberDuty>,
    mut rounds: mpsc::Receiver<(Height, B256)>,
    stats: Arc<ProbeStats>,
) {
    // Rounds overlap (a dead RN holds its probe for the whole deadline); dropped, and every
    // probe aborted, with this task.
    let mut probes = tokio::task::JoinSet::new();
    while let Some((round, mix)) = rounds.recv().await {
        while probes.try_join_next().is_some() {}
        let Some((me, targets)) = duty.round(round) else {
            continue;
        };
        if probes.len() + targets.len() > MAX_PROBES_IN_FLIGHT {
            stats.skipped_rounds.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        for target in targets {
            let span = tracing::debug_span!("posc_probe", %round, rn = %target.rn);
            let (duty, stats) = (Arc::clone(&duty), Arc::clone(&stats));
            probes.spawn(
                async move { probe_one(&duty, &stats, me, target, mix).await }.instrument(span),
            );
        }
    }
}

async fn probe_one(
    duty: &ProberDuty,
    stats: &ProbeStats,
    me: CnIndex,
    target: ProbeTarget,
    mix: B256,
) {
    let read = read_height(target.round, &target.rn, mix);
    let chain = duty.chain.clone();
    let hash = match tokio::task::spawn_blocking(move || chain.block_at(read)).await {
        Ok(Ok(Some(block))) => block.hash(),
        other => {
            tracing::warn!(%read, ?other, "cannot read the probed block from this CN's chain; not probing");
            return;
        }
    };
    stats.probes.fetch_add(1, Ordering::Relaxed);
    let probe = Probe {
        endpoint: target.endpoint,
        node_key: target.node_key,
        read,
        hash,
    };
    let failure = match duty.prober.probe(me, &probe, duty.deadline).await {
        Ok(head) => {
            tracing::debug!(%head, "RN answered its probe");
            return;
        }
        Err(failure) => failure,
    };
    stats.failures.fetch_add(1, Ordering::Relaxed);
    tracing::info!(rn = %target.rn, round = %target.round, endpoint = %target.endpoint, %failure, "RN failed its probe; attesting");
    let region = duty.region.read().unwrap_or_else(|e| e.into_inner()).region;
    let attestation = ProbeAttestation::sign(region, target.round, target.rn, me, &duty.key);
    let submitter = duty.submitter.clone();
    let sent =
        tokio::task::spawn_blocking(move || submitter.submit(vec![attestation.to_system_tx()]))
            .await;
    if matches!(sent, Ok(Ok(()))) {
        stats.attestations.fetch_add(1, Ordering::Relaxed);
    }
}
