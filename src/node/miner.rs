//! `kaon mine --rpc URL --address ADDR`: a PoR miner against a live network. It asks its RN
//! for work (`kaon_getWork`: seed height, difficulty, the segment `C(h)`), hashes on the CPU or
//! the GPU, submits every share (`kaon_submitShare`; the RN checks it and forwards it to the
//! CNs, which verify it again in segment 0), shows its hash rate and shares, refreshes work when
//! a new block arrives, and retries with backoff when the RN is unreachable.

use crate::por::cpu::Found;
use alloy_primitives::{Address, Bytes, B256};
use anyhow::Context;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long one mining slice runs before the miner looks for new work: well inside a share's
/// expiry (32 blocks) even when responsive proposing makes blocks every few tens of ms.
const SLICE: Duration = Duration::from_millis(500);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Largest response accepted from the RN (a segment is 256 KiB, twice that in hex).
const MAX_RESPONSE_BYTES: u64 = 4 << 20;

/// The work an RN hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub seed_height: u64,
    pub bits: u32,
    pub target: B256,
    pub segment: Vec<u8>,
}

/// Where hashes are computed.
pub enum Hasher {
    /// Every core, the default counters per rayon task.
    Cpu,
    /// Every core, `chunk` counters per rayon task (from a tuning profile).
    CpuChunked { chunk: u64 },
    /// The GPU kernel: `workgroup_size` invocations per workgroup, at most `batch` counters per
    /// dispatch; the miner is built on the first work and rebuilt per seed.
    Gpu {
        workgroup_size: u32,
        batch: u32,
        miner: Option<(u64, crate::por::gpu::GpuMiner)>,
    },
}

impl Hasher {
    /// The hasher a mining profile describes (`kaon mine` loads or autotunes one).
    pub fn from_profile(profile: &crate::por::tune::MiningProfile) -> Self {
        match profile.device {
            crate::por::tune::DeviceKind::Cpu => Self::CpuChunked {
                chunk: profile.chunk(),
            },
            crate::por::tune::DeviceKind::Gpu => Self::Gpu {
                workgroup_size: profile.workgroup_size(),
                batch: profile.batch(),
                miner: None,
            },
        }
    }

    /// Shares in `start .. start + count` over `work` (the GPU re-uploads only on a new seed).
    fn mine(
        &mut self,
        work: &Work,
        miner: Address,
        start: u64,
        count: u64,
    ) -> anyhow::Result<Vec<Found>> {
        match self {
            Self::Cpu => Ok(crate::por::cpu::mine(
                &work.segment,
                miner,
                &work.target,
                start,
                count,
            )),
            Self::CpuChunked { chunk } => Ok(crate::por::cpu::mine_chunked(
                &work.segment,
                miner,
                &work.target,
                start,
                count,
                *chunk,
            )),
            Self::Gpu {
                workgroup_size,
                batch,
                miner: loaded,
            } => {
                if loaded.as_ref().is_none_or(|(h, _)| *h != work.seed_height) {
                    let gpu = crate::por::gpu::GpuMiner::new(&work.segment, *workgroup_size)?;
                    *loaded = Some((work.seed_height, gpu));
                }
                let Some((_, gpu)) = loaded.as_ref() else {
                    return Ok(Vec::new());
                };
                let mut found = Vec::new();
                let end = start.saturating_add(count);
                let mut at = start;
                while at < end {
                    // The last dispatch stops at `end`: the caller's next range starts there,
                    // and a counter mined twice would be a duplicate share.
                    let n = (end - at).min(u64::from((*batch).max(1))) as u32;
                    found.extend(gpu.mine(miner, &work.target, at, n)?);
                    at += u64::from(n);
                }
                Ok(found)
            }
        }
    }
}

/// A JSON-RPC client of one RN endpoint.
pub struct RnClient {
    url: String,
    agent: ureq::Agent,
}

impl RnClient {
    pub fn new(url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            url: url.to_string(),
            agent,
        }
    }

    /// A client whose every request ends within `timeout`, going to `url` itself (no redirect,
    /// no proxy from the environment).
    pub fn with_timeout(url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .proxy(None)
            .build()
            .into();
        Self {
            url: url.to_string(),
            agent,
        }
    }

    /// A client of `url` sharing this one's connections and timeout.
    pub fn at(&self, url: &str) -> Self {
        Self {
            url: url.to_string(),
            agent: self.agent.clone(),
        }
    }

    /// POSTs `body` (what = the call, for errors) and reads the answer, at most
    /// [`MAX_RESPONSE_BYTES`].
    fn post(&self, body: &Value, what: &str) -> anyhow::Result<String> {
        let mut response = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .with_context(|| format!("{what} to {}", self.url))?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .with_context(|| format!("reading the answer to {what}"))
    }

    pub(crate) fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let text = self.post(&body, method)?;
        let mut reply: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method}: the answer is not JSON"))?;
        if let Some(error) = reply.get("error") {
            anyhow::bail!("{method}: {}", error["message"].as_str().unwrap_or("error"));
        }
        Ok(reply["result"].take())
    }

    /// One HTTP request carrying `calls` as a JSON-RPC batch: each call's result or the
    /// node's refusal, in order; `Err` when the request got no usable answer.
    pub(crate) fn try_batch(
        &self,
        method: &str,
        calls: &[Value],
    ) -> anyhow::Result<Vec<Result<Value, String>>> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(id, params)| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .collect();
        let text = self.post(&Value::Array(body), &format!("a batch of {method}"))?;
        let replies: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("a batch of {method}: the answer is not a JSON array"))?;
        let mut answers = vec![Err("no answer in the batch".to_string()); calls.len()];
        for mut reply in replies {
            let Some(slot) = reply["id"]
                .as_u64()
                .and_then(|id| answers.get_mut(id as usize))
            else {
                continue;
            };
            *slot = match reply.get("error") {
                Some(error) => Err(error["message"].as_str().unwrap_or("error").to_string()),
                None => Ok(reply["result"].take()),
            };
        }
        Ok(answers)
    }

    /// `kaon_getWork`.
    pub fn work(&self) -> anyhow::Result<Work> {
        let v = self.call("kaon_getWork", json!([]))?;
        let field = |name: &str| {
            v.get(name)
                .with_context(|| format!("kaon_getWork lacks {name}"))
        };
        let segment: Bytes = serde_json::from_value(field("segment")?.clone())?;
        Ok(Work {
            seed_height: field("seedHeight")?.as_u64().context("seedHeight")?,
            bits: field("bits")?.as_u64().context("bits")? as u32,
            target: serde_json::from_value(field("target")?.clone())?,
            segment: segment.to_vec(),
        })
    }

    /// `kaon_submitShare`; `Ok(false)` when the RN refused the share.
    pub fn submit(&self, height: u64, miner: Address, counter: u64) -> anyhow::Result<bool> {
        match self.call("kaon_submitShare", json!([height, miner, counter])) {
            Ok(_) => Ok(true),
            // A share whose seed expired while it was mined is normal when blocks come fast
            // (the caller fetches fresh work); any other refusal is worth a look.
            Err(e) if e.to_string().contains("expired") => {
                tracing::debug!(error = %e, "share expired; fetching fresh work");
                Ok(false)
            }
            Err(e) if e.to_string().contains("share refused") => {
                tracing::warn!(error = %e, "share refused");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// What a mining run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MineReport {
    pub hashes: u64,
    pub found: u64,
    pub accepted: u64,
}

/// How a mining run goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct MineOptions {
    /// Stop after this long (`None`: until `stop`).
    pub duration: Option<Duration>,
    /// At most this many hashes per second (`None`: as fast as the device goes); the devnet's
    /// built-in miner is paced so it leaves the CPU to the nodes.
    pub pace: Option<u64>,
    /// Print a status line every few seconds.
    pub verbose: bool,
}

/// Mines for `miner` against `client` until `options.duration` elapses or `stop` is set.
pub fn run(
    client: &RnClient,
    hasher: &mut Hasher,
    miner: Address,
    options: MineOptions,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<MineReport> {
    let duration = options.duration;
    let started = Instant::now();
    let mut report = MineReport::default();
    let mut backoff = Duration::from_millis(250);
    let mut counter = 0u64;
    let mut chunk = options.pace.map_or(1 << 20, |p| (p / 4).max(1));
    let mut last_print = Instant::now();
    let mut seed = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && duration.is_none_or(|d| started.elapsed() < d)
    {
        let work = match client.work() {
            Ok(w) => {
                backoff = Duration::from_millis(250);
                w
            }
            Err(e) => {
                // A chain too young to cut a segment from, or an RN still starting, is normal
                // for a few retries; a miner still without work at the longest backoff is not.
                if backoff >= MAX_BACKOFF {
                    tracing::warn!(error = %e, retry_in = ?backoff, "no work from the RN");
                } else {
                    tracing::info!(error = %e, retry_in = ?backoff, "no work from the RN yet");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if seed != Some(work.seed_height) {
            seed = Some(work.seed_height);
            counter = 0;
        }
        let slice = Instant::now();
        let mut refused = false;
        while slice.elapsed() < SLICE && !refused {
            let t = Instant::now();
            let found = hasher.mine(&work, miner, counter, chunk)?;
            counter += chunk;
            report.hashes += chunk;
            // Aim each chunk at ~250 ms so work refreshes promptly.
            let secs = t.elapsed().as_secs_f64().max(1e-3);
            chunk = ((chunk as f64 * 0.25 / secs) as u64).clamp(1 << 14, 1 << 28);
            if let Some(pace) = options.pace {
                chunk = (pace / 4).max(1);
                std::thread::sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
            }
            for share in found {
                report.found += 1;
                if client.submit(work.seed_height, miner, share.counter)? {
                    report.accepted += 1;
                } else {
                    // Most likely the seed went stale: mine on fresh work.
                    refused = true;
                }
            }
        }
        if options.verbose && last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            println!(
                "[{:>4}s] seed height {} difficulty 2^-{} | {:.2} M H/s | shares found {} accepted {}",
                started.elapsed().as_secs(),
                work.seed_height,
                work.bits,
                report.hashes as f64 / started.elapsed().as_secs_f64() / 1e6,
                report.found,
                report.accepted
            );
        }
    }
    Ok(report)
}
