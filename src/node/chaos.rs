//! `kaon chaos`: a region of separate processes (4 `kaon cn`, 1–2 `kaon rn` from the code of
//! `kaon init`) under signed load through the RNs' JSON-RPC, with faults injected into the CNs
//! from a seeded schedule, then checked: nothing acknowledged lost, no fork, bounded stalls and
//! catch-up (`docs/reliability.md` states the fault model and why the bounds are what they are).
//!
//! ```text
//!  load thread ── eth_sendRawTransaction ─► RN ─► CNs ◄── faults: kill -9 (+restart now / later),
//!      │ acknowledged hashes                  │          SIGSTOP … SIGCONT; one CN at a time
//!      ▼                                      ▼
//!  receipt thread ── eth_getTransactionReceipt   CN stdout ─► committed (height → hash) per CN
//!                                                              └─► stall monitor, fork check
//! ```
//!
//! A fault's CN counts as faulty until it is back within [`WITHIN_BLOCKS`] of the head; only
//! then does the next fault start, so at most f = 1 of the 4 CNs is ever faulty.

use super::cluster::{self, Chains, KillOnDrop, RnLaunch};
use super::miner::RnClient;
use super::netem::{LinkQuality, Netem};
use super::tmpfs::Tmpfs;
use crate::pipeline::stage::EXIT_STAGE_DIED;
use crate::types::ChainId;
use alloy_primitives::{hex, Address, Bytes, B256};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CNs of the region: the smallest committee that survives one faulty member (n = 3f + 1).
const CNS: usize = 4;
/// Short rounds, so a fault of a few seconds spans tens of blocks.
const ROUND_MS: u64 = 100;
/// Round-0 timeout: a dead proposer's turn costs this.
const TIMEOUT_MS: u64 = 300;
/// Regionchain id; the servicechain carrying the load is the next one.
const REGION: u64 = 1000;
/// Development accounts funded by genesis and sending the steady load...
const ACCOUNTS: usize = 16;
/// ... and, after them, the accounts of the overload's clients.
const OVERLOAD_ACCOUNTS: usize = 32;
/// Concurrent clients of the overload, each sending as fast as it is answered.
const OVERLOAD_CLIENTS: usize = 16;
/// Default bound on every node's resident memory (peak, sampled during overloads): a debug
/// build of a CN holding a full pool and its RocksDB caches stays well below it.
pub const DEFAULT_RSS_BOUND_MIB: u64 = 1_024;
/// Default `--throughput-floor`: the share the issue states, 80 %.
pub const DEFAULT_THROUGHPUT_FLOOR: u64 = 80;
/// A restarted or resumed CN is back once it is this close to the head (the issue's bound).
pub const WITHIN_BLOCKS: u64 = 5;
/// Default worst stall: with one CN of four faulty, a quorum remains, so commits stall only
/// for the dead proposer's timeouts (a few × [`TIMEOUT_MS`]) plus scheduling noise on a loaded
/// machine; 10 s is ~30 round-0 timeouts.
pub const DEFAULT_STALL_BOUND: Duration = Duration::from_secs(10);
/// Default catch-up bound: process start, RocksDB open and sync of a few hundred blocks.
pub const DEFAULT_CATCH_UP_BOUND: Duration = Duration::from_secs(30);
/// After the load stops, acknowledged transactions may take this long without any new
/// receipt appearing (a backlog still being included is not a loss)...
const DRAIN: Duration = Duration::from_secs(30);
/// ... and this long in all.
const DRAIN_CAP: Duration = Duration::from_secs(180);
/// How long the region may take to start (CNs committing, RNs answering).
const START_DEADLINE: Duration = Duration::from_secs(90);
/// Receipts asked per polling round, and the pause between rounds.
const RECEIPTS_PER_ROUND: usize = 100;
const RECEIPT_POLL: Duration = Duration::from_millis(200);
/// Sampling interval of heights (stall and catch-up measurement).
const SAMPLE: Duration = Duration::from_millis(50);
/// The full-disk CN's datadir: a tmpfs this large (the block log preallocates 64 MiB)...
const DISK_BYTES: u64 = 512 << 20;
/// ... filled to all but this much when the fault starts: below the node's 64 MiB minimum,
/// so its disk watch stops it, with room left for writes in flight until it does...
const DISK_LEFT: u64 = 32 << 20;
/// ... the CN must stop within this long; then it is restarted on the full disk...
const DISK_RUNNING: Duration = Duration::from_secs(5);
/// ... and the space is freed once that start fails, or after this long.
const DISK_WAIT: Duration = Duration::from_secs(20);
/// Blocks the other CNs commit while a `long-down` CN is down.
const LONG_DOWN_BLOCKS: u64 = 2_000;
/// ... or at most this long.
const LONG_DOWN_WAIT: Duration = Duration::from_secs(600);
/// Heights below each RN's head compared with what the CNs committed at the end.
const RN_COMPARED: u64 = 2_000;

/// One kind of fault, injected into one CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9`, restarted at once.
    Restart,
    /// `kill -9`, restarted after a downtime of several seconds.
    Down,
    /// `kill -9`, restarted once the others have committed [`LONG_DOWN_BLOCKS`] more blocks
    /// (minutes at the harness's 100 ms rounds): far more than any peer keeps in memory, so the
    /// CN catches up from their block logs. Only by name (`--faults long-down`).
    LongDown,
    /// `SIGSTOP` for a few seconds, then `SIGCONT`.
    Pause,
    /// One CN cut off from every other node, both ways, for a few seconds.
    Isolate,
    /// One CN heard by nobody while it still hears everyone ("A hears B but not back").
    OneWay,
    /// The CNs split two and two (no quorum on either side) for a few seconds; the RNs still
    /// reach everyone.
    Split,
    /// Every link loses, duplicates and delays (reordering) datagrams for a few seconds.
    Lossy,
    /// One CN's datadir (a size-limited tmpfs) fills up: it must stop loudly (exit status
    /// 70, the reason logged) before its writes fail, and a start on the full disk must be
    /// refused with a non-zero exit status. It is restarted once space is freed. Skipped, and
    /// said so, where a tmpfs cannot be mounted.
    Disk,
    /// `kill -9` one RN, restarted after a few seconds: what it acknowledged is in its journal,
    /// and it must sync back to the head.
    RnDown,
    /// `SIGSTOP` one RN for a few seconds, then `SIGCONT`.
    RnPause,
    /// One RN cut off from every CN and RN, both ways, for a few seconds (its clients still
    /// reach its JSON-RPC): what it acknowledged meanwhile is held and forwarded once the
    /// network heals, and it must sync back to the head.
    RnIsolate,
    /// Clients send batches of transfers as fast as the RNs answer, for a few seconds; the run
    /// prints what they sent against what the region committed meanwhile. Every answer must be
    /// a hash or a stated refusal (no timeout, no dropped connection), every node's memory
    /// stays under the RSS bound, and what was acknowledged is included like the rest.
    Overload,
}

impl FaultKind {
    /// The kinds a seed draws from. Not `LongDown`: minutes long, it is injected by name.
    const ALL: [Self; 12] = [
        Self::Restart,
        Self::Down,
        Self::Pause,
        Self::Isolate,
        Self::OneWay,
        Self::Split,
        Self::Lossy,
        Self::Disk,
        Self::RnDown,
        Self::RnPause,
        Self::RnIsolate,
        Self::Overload,
    ];

    /// Whether the fault strikes a ranger node (the others strike CNs or links).
    fn on_rn(self) -> bool {
        matches!(self, Self::RnDown | Self::RnPause | Self::RnIsolate)
    }

    /// Seconds the fault lasts (downtime, pause, or until the network heals), drawn.
    fn draw_seconds(self, rng: &mut StdRng) -> u64 {
        match self {
            Self::Restart => 0,
            Self::Down => rng.gen_range(3..=10),
            // The most it waits for the blocks to pass.
            Self::LongDown => LONG_DOWN_WAIT.as_secs(),
            Self::Pause
            | Self::Isolate
            | Self::OneWay
            | Self::Split
            | Self::Lossy
            | Self::RnDown
            | Self::RnPause
            | Self::RnIsolate
            | Self::Overload => rng.gen_range(2..=6),
            // The longest wait for the CN to hit the full disk and stop.
            Self::Disk => DISK_WAIT.as_secs(),
        }
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restart" => Ok(Self::Restart),
            "down" => Ok(Self::Down),
            "long-down" => Ok(Self::LongDown),
            "pause" => Ok(Self::Pause),
            "isolate" => Ok(Self::Isolate),
            "oneway" => Ok(Self::OneWay),
            "split" => Ok(Self::Split),
            "lossy" => Ok(Self::Lossy),
            "disk" => Ok(Self::Disk),
            "rn-down" => Ok(Self::RnDown),
            "rn-pause" => Ok(Self::RnPause),
            "rn-isolate" => Ok(Self::RnIsolate),
            "overload" => Ok(Self::Overload),
            _ => Err(format!(
                "unknown fault {s:?}: restart, down, long-down, pause, isolate, oneway, split, lossy, disk, rn-down, rn-pause, rn-isolate or overload"
            )),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosSpec {
    /// The `kaon` binary the children run.
    pub kaon: PathBuf,
    pub seed: u64,
    /// How long faults are injected under load (the drain comes after).
    pub duration: Duration,
    /// Transfers per second offered.
    pub rate: u64,
    /// Ranger nodes (1 or 2); the load goes round-robin through their JSON-RPC.
    pub rns: usize,
    /// Faults in this order (then no more); empty: kinds drawn from the seed until the end.
    pub faults: Vec<FaultKind>,
    /// CN i listens on base_port + i, RN j on base_port + 10 + 2j (JSON-RPC one above).
    pub base_port: u16,
    pub stall_bound: Duration,
    pub catch_up_bound: Duration,
    /// Most resident memory any node may use, in MiB (checked during overloads).
    pub rss_bound_mib: u64,
    /// Least share (percent) of what the steady load got acknowledged that must commit in the
    /// window after each fault heals (0: printed, not judged).
    pub throughput_floor: u64,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub faults: usize,
    pub acknowledged: usize,
    pub lost: usize,
    pub forks: usize,
    pub max_catch_up: Duration,
    pub worst_stall: Duration,
    /// Highest resident memory of any node sampled during overloads, in MiB.
    pub peak_rss_mib: u64,
    /// Each failed criterion, in words; empty when the run passed.
    pub failures: Vec<String>,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The last line `kaon chaos` prints.
    pub fn summary(&self) -> String {
        format!(
            "chaos: {} faults, {} acknowledged, {} lost, {} forks, max catch-up {:.1} s, worst stall {:.1} s",
            self.faults,
            self.acknowledged,
            self.lost,
            self.forks,
            self.max_catch_up.as_secs_f64(),
            self.worst_stall.as_secs_f64()
        )
    }
}

/// A scratch directory removed when dropped (declared before the children, so dropped after).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the region, the load and the faults; prints progress to `out` (not the summary).
/// `stop` (SIGINT/SIGTERM) ends it early, as a failure. Every child is killed on return.
pub fn run(
    spec: &ChaosSpec,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> anyhow::Result<ChaosReport> {
    anyhow::ensure!((1..=2).contains(&spec.rns), "--rns must be 1 or 2");
    anyhow::ensure!(spec.rate >= 1, "--rate must be at least 1");
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "kaon-chaos-{}-{}",
        std::process::id(),
        spec.seed
    )));
    let dir = scratch.0.clone();
    let _ = std::fs::remove_dir_all(&dir);
    super::cn::init(
        &super::cn::InitSpec {
            out: dir.clone(),
            cns: CNS,
            servicechains: 1,
            accounts: ACCOUNTS + OVERLOAD_ACCOUNTS,
            region: ChainId(REGION),
            regions: 1,
            base_port: spec.base_port,
            round_ms: ROUND_MS,
            timeout_ms: Some(TIMEOUT_MS),
            committee_size: crate::config::Config::default().consensus.committee_size,
        },
        &mut std::io::sink(),
    )?;
    writeln!(
        out,
        "chaos: seed {}, region in {}",
        spec.seed,
        dir.display()
    )?;
    let netem = start_netem(spec, &dir)?;
    let disk = mount_disk(spec, &dir, out)?;
    let chains = cluster::new_chains(CNS);
    let mut children = KillOnDrop::default();
    for i in 0..CNS {
        children.push(cluster::spawn_cn(&spec.kaon, &dir, i, &chains).context("starting kaon cn")?);
    }
    wait_until(stop, START_DEADLINE, || {
        cluster::heights(&chains).iter().all(|&h| h >= 2)
    })
    .context("the four CNs did not commit height 2")?;
    let (urls, launches) = start_rns(spec, &dir, &netem, &mut children)?;
    for url in &urls {
        let client = RnClient::new(url);
        wait_until(stop, START_DEADLINE, || {
            client.call("eth_blockNumber", json!([])).is_ok()
        })
        .with_context(|| format!("no JSON-RPC answer from {url}"))?;
    }
    writeln!(
        out,
        "chaos: {CNS} CNs and {} RNs up; load {} tx/s",
        spec.rns, spec.rate
    )?;
    let mut report = ChaosReport::default();
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let no_quorum = Arc::new(AtomicBool::new(false));
    let monitor = spawn_stall_monitor(
        Arc::clone(&chains),
        Arc::clone(&done),
        Arc::clone(&no_quorum),
        started,
    );
    let load = Load::start(spec.rate, &urls);
    let mut region = Region {
        spec,
        dir: &dir,
        chains: &chains,
        children: &mut children,
        netem: &netem,
        disk: disk.as_ref().map(|(cn, tmpfs)| (*cn, tmpfs)),
        no_quorum: &no_quorum,
        record: (0..CNS).collect(),
        rns: launches,
        rn_urls: &urls,
        overload_acked: Vec::new(),
        overload_nonces: vec![0; OVERLOAD_ACCOUNTS],
        load_acked: Arc::clone(&load.acked),
    };
    let faults = inject(&mut region, stop, &mut report, out);
    let mut acked = load.stop();
    acked.append(&mut region.overload_acked);
    report.acknowledged = acked.len();
    writeln!(
        out,
        "chaos: load stopped after {:.0} s; draining receipts",
        started.elapsed().as_secs_f64()
    )?;
    let lost = drain(&urls[0], acked, stop);
    let proxy = netem.stats();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    writeln!(
        out,
        "chaos: proxy forwarded {} datagrams; cut {}, lost {}, duplicated {}, delayed {}",
        count(&proxy.forwarded),
        count(&proxy.cut),
        count(&proxy.lost),
        count(&proxy.duplicated),
        count(&proxy.delayed)
    )?;
    done.store(true, Ordering::Relaxed);
    let stall = monitor.join().unwrap_or_default();
    report.worst_stall = stall.length;
    writeln!(
        out,
        "chaos: worst stall {:.1} s at height {}, from {:.1} s",
        stall.length.as_secs_f64(),
        stall.height,
        stall.from.as_secs_f64()
    )?;
    faults?;
    report.lost = lost.len();
    for hash in lost.iter().take(5) {
        writeln!(out, "chaos: acknowledged but no receipt: {hash}")?;
    }
    let mut forks = cluster::forks(&chains);
    let rns = rn_forks(&urls, &chains);
    writeln!(
        out,
        "chaos: RNs compared with the CNs at {} heights, {} differ, {} reads unanswered",
        rns.compared,
        rns.differ.len(),
        rns.unanswered.len()
    )?;
    for unanswered in rns.unanswered.iter().take(5) {
        writeln!(out, "chaos: RN read unanswered: {unanswered}")?;
    }
    if !rns.unanswered.is_empty() {
        report.failures.push(format!(
            "{} RN reads unanswered after {RN_READ_ATTEMPTS} attempts each",
            rns.unanswered.len()
        ));
    }
    forks.extend(rns.differ);
    if rns.compared == 0 {
        report
            .failures
            .push("no RN block was compared with the CNs'".into());
    }
    report.forks = forks.len();
    for fork in forks.iter().take(5) {
        writeln!(out, "chaos: fork at {fork}")?;
    }
    judge(spec, &mut children, stop, &mut report);
    for failure in &report.failures {
        writeln!(out, "chaos: FAILED: {failure}")?;
    }
    Ok(report)
}

/// Adds a failure for each criterion the run missed.
fn judge(spec: &ChaosSpec, children: &mut KillOnDrop, stop: &AtomicBool, report: &mut ChaosReport) {
    let mut fail = |what: String| report.failures.push(what);
    if stop.load(Ordering::Relaxed) {
        fail("interrupted".into());
    }
    if report.acknowledged == 0 {
        fail("no transaction was acknowledged: the load never ran".into());
    }
    if report.lost > 0 {
        fail(format!(
            "{} acknowledged transactions have no receipt",
            report.lost
        ));
    }
    if report.forks > 0 {
        fail(format!(
            "{} heights with different blocks on different CNs",
            report.forks
        ));
    }
    if report.worst_stall > spec.stall_bound {
        fail(format!(
            "worst stall {:.1} s exceeds {:.0} s",
            report.worst_stall.as_secs_f64(),
            spec.stall_bound.as_secs_f64()
        ));
    }
    for (i, child) in children.iter_mut().enumerate() {
        if let Ok(Some(status)) = child.try_wait() {
            fail(format!(
                "process {i} (CNs 0-3, then RNs) exited by itself: {status}"
            ));
        }
    }
}

/// Starts the RNs (each dialing the ones before it); their servicechain JSON-RPC URLs.
fn start_rns(
    spec: &ChaosSpec,
    dir: &Path,
    netem: &Netem,
    children: &mut KillOnDrop,
) -> anyhow::Result<(Vec<String>, Vec<RnLaunch>)> {
    let cns = (0..CNS)
        .map(|i| format!("{i}@{}", netem.front(i)))
        .collect::<Vec<_>>();
    let mut fronts = Vec::new();
    let mut urls = Vec::new();
    let mut launches = Vec::new();
    for j in 0..spec.rns {
        let key_file = dir.join(format!("rn{j}.key"));
        cluster::write_node_key(&key_file)?;
        let listen = rn_listen(spec, j)?;
        let rpc = SocketAddr::from(([127, 0, 0, 1], port(spec, 11 + 2 * j)?));
        let launch = RnLaunch {
            genesis: dir.join("genesis.json"),
            datadir: dir.join(format!("rn{j}")),
            key_file,
            reward_key_file: None,
            listen,
            rpc,
            cns: cns.clone(),
            rns: fronts.clone(),
        };
        children.push(cluster::spawn_rn(&spec.kaon, &launch).context("starting kaon rn")?);
        launches.push(launch);
        fronts.push(netem.front(CNS + j));
        urls.push(format!("http://{rpc}/chain/{}", REGION + 1));
    }
    Ok((urls, launches))
}

/// The last line of a log file, or a note that there is none.
fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|log| log.lines().last().map(str::to_string))
        .unwrap_or_else(|| "(no log line)".into())
}

/// Mounts a tmpfs as the datadir of the CN the seed names when the disk fault may be drawn;
/// where the machine refuses, says so and returns none (the fault is then skipped).
fn mount_disk(
    spec: &ChaosSpec,
    dir: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<Option<(usize, Tmpfs)>> {
    if !(spec.faults.is_empty() || spec.faults.contains(&FaultKind::Disk)) {
        return Ok(None);
    }
    let cn = (spec.seed % CNS as u64) as usize;
    match Tmpfs::mount(&dir.join(format!("cn{cn}/data")), DISK_BYTES) {
        Ok(tmpfs) => Ok(Some((cn, tmpfs))),
        Err(e) => {
            writeln!(out, "chaos: no full-disk faults: {e:#}")?;
            Ok(None)
        }
    }
}

/// Port `base_port + offset`.
fn port(spec: &ChaosSpec, offset: usize) -> anyhow::Result<u16> {
    u16::try_from(spec.base_port as usize + offset).context("--base-port too high")
}

/// Where RN `j` listens (its RN-network and CN-facing QUIC endpoint).
fn rn_listen(spec: &ChaosSpec, j: usize) -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], port(spec, 10 + 2 * j)?)))
}

/// Starts the proxy in front of every node (CNs `0..CNS`, then the RNs) and points each CN's
/// configured peers at their fronts; the RNs are pointed there as they start.
fn start_netem(spec: &ChaosSpec, dir: &Path) -> anyhow::Result<Netem> {
    let mut nodes = (0..CNS)
        .map(|i| Ok(SocketAddr::from(([127, 0, 0, 1], port(spec, i)?))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for j in 0..spec.rns {
        nodes.push(rn_listen(spec, j)?);
    }
    let netem = Netem::start(&nodes, spec.seed).context("starting the UDP proxy")?;
    for i in 0..CNS {
        let path = dir.join(format!("cn{i}/config.toml"));
        let mut config = crate::config::Config::load(&path)?;
        if let Some(cn) = config.cn.as_mut() {
            cn.peers = (0..CNS)
                .filter(|&j| j != i)
                .map(|j| format!("{j}@{}", netem.front(j)))
                .collect();
        }
        std::fs::write(&path, config.to_toml())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(netem)
}

/// Polls `cond` every [`SAMPLE`] until it holds; an error after `deadline` or on `stop`.
fn wait_until(
    stop: &AtomicBool,
    deadline: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond() {
        anyhow::ensure!(!stop.load(Ordering::Relaxed), "interrupted");
        anyhow::ensure!(start.elapsed() < deadline, "not within {deadline:?}");
        std::thread::sleep(SAMPLE);
    }
    Ok(())
}

/// Sleeps `d` in short steps; false when `stop` was set meanwhile.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(SAMPLE.min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::Relaxed)
}

/// The region under test, as the fault schedule acts on it.
struct Region<'a> {
    spec: &'a ChaosSpec,
    dir: &'a Path,
    chains: &'a Chains,
    children: &'a mut KillOnDrop,
    netem: &'a Netem,
    /// The CN whose datadir is a tmpfs, and the tmpfs (none where it cannot be mounted).
    disk: Option<(usize, &'a Tmpfs)>,
    /// Set while the CNs are split with no quorum anywhere (the stall clock stops).
    no_quorum: &'a AtomicBool,
    /// Which record of `chains` each CN's current process writes.
    record: Vec<usize>,
    /// How each RN was started (to start it again), and its servicechain JSON-RPC URL.
    rns: Vec<RnLaunch>,
    rn_urls: &'a [String],
    /// What overloads got acknowledged (checked for receipts with the steady load's), and
    /// each overload account's next nonce.
    overload_acked: Vec<B256>,
    overload_nonces: Vec<u64>,
    /// Transfers the steady load got acknowledged so far.
    load_acked: Arc<AtomicU64>,
}

/// The fault schedule: a seeded gap before each fault, then the fault, then the wait for the
/// region to be whole again, until `spec.duration` has passed; listed faults (`spec.faults`)
/// are all injected, and the load then runs out the rest of the duration.
fn inject(
    region: &mut Region<'_>,
    stop: &AtomicBool,
    report: &mut ChaosReport,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let spec = region.spec;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let start = Instant::now();
    let mut listed = spec.faults.iter().copied();
    loop {
        let window = Window::open(region);
        let gap = Duration::from_millis(rng.gen_range(3_000..=8_000));
        let kind = if spec.faults.is_empty() {
            let left = spec.duration.saturating_sub(start.elapsed());
            if !sleep_unless(stop, gap.min(left)) || start.elapsed() >= spec.duration {
                return Ok(());
            }
            FaultKind::ALL[rng.gen_range(0..FaultKind::ALL.len())]
        } else {
            // Listed faults all happen; the duration is then the least the load runs.
            let Some(kind) = listed.next() else {
                sleep_unless(stop, spec.duration.saturating_sub(start.elapsed()));
                return Ok(());
            };
            if !sleep_unless(stop, gap) {
                return Ok(());
            }
            kind
        };
        // The CN struck, or for an RN fault the RN.
        let mut cn = rng.gen_range(0..CNS);
        let secs = kind.draw_seconds(&mut rng);
        if kind.on_rn() {
            cn = rng.gen_range(0..spec.rns);
        }
        if kind == FaultKind::Disk {
            let Some((disk_cn, _)) = region.disk else {
                writeln!(
                    out,
                    "chaos: full-disk fault skipped: no tmpfs on this machine"
                )?;
                continue;
            };
            cn = disk_cn;
        }
        report.faults += 1;
        let before = window.close(region, stop);
        let at = start.elapsed().as_secs_f64();
        writeln!(
            out,
            "chaos: fault {} at {at:.1} s: {}",
            report.faults,
            describe(kind, cn, secs)
        )?;
        let length = Duration::from_secs(secs);
        if !region.apply(kind, cn, &mut rng, length, stop, report, out)? {
            return Ok(());
        }
        let healed = Instant::now();
        // Whole again: every CN has committed the head of the moment the fault ended, or
        // higher, in the record of its current process (a restarted one starts a fresh
        // record), is within WITHIN_BLOCKS of the head, and the head has moved on since.
        let target = cluster::heights(region.chains)
            .into_iter()
            .max()
            .unwrap_or(0);
        let rn = kind.on_rn().then(|| RnClient::new(&region.rn_urls[cn]));
        let back = wait_until(stop, spec.catch_up_bound, || {
            let heights = cluster::heights(region.chains);
            let head = heights.iter().copied().max().unwrap_or(0);
            let near = |h: u64| h >= target && h + WITHIN_BLOCKS >= head;
            head > target
                && region.record.iter().all(|&r| near(heights[r]))
                && rn.as_ref().is_none_or(|rn| rn_height(rn).is_some_and(near))
        });
        let took = healed.elapsed();
        report.max_catch_up = report.max_catch_up.max(took);
        if back.is_err() {
            report.failures.push(format!(
                "the CNs not all within {WITHIN_BLOCKS} blocks of a moving head {:.0} s after fault {}",
                spec.catch_up_bound.as_secs_f64(),
                report.faults
            ));
            // Still faulty: another fault now could take a second CN down.
            return Ok(());
        }
        let (node, height) = match &rn {
            Some(rn) => (format!("RN {cn}"), rn_height(rn).unwrap_or(0)),
            None => (
                format!("CN {cn}"),
                cluster::height(region.chains, region.record[cn]),
            ),
        };
        writeln!(
            out,
            "chaos:   every node back within {WITHIN_BLOCKS} blocks of the head in {:.1} s ({node} at height {height})",
            took.as_secs_f64()
        )?;
        // Throughput once healed and settled, against the window before the fault.
        if !sleep_unless(stop, SETTLE) {
            return Ok(());
        }
        let after = Window::open(region);
        if !sleep_unless(stop, AFTER_WINDOW) {
            return Ok(());
        }
        let after = after.close(region, stop);
        writeln!(
            out,
            "chaos:   committed {:.0} tx/s before the fault ({:.0} acknowledged), {:.0} tx/s after it healed ({} of the {} transfers the load got acknowledged meanwhile{})",
            before.per_second(),
            before.acked_per_second(),
            after.per_second(),
            after.txs,
            after.acked,
            match after.uncounted {
                0 => String::new(),
                n => format!("; {n} blocks not counted: no RN had audited them"),
            }
        )?;
        let floor = spec.throughput_floor as f64 / 100.0;
        if after.uncounted > 0 && spec.throughput_floor > 0 {
            report.failures.push(format!(
                "after fault {} healed, {} blocks of the throughput window were not counted: no RN reached them within 10 s or served them",
                report.faults, after.uncounted
            ));
        } else if after.acked >= MIN_WINDOW_TXS && (after.txs as f64) < floor * after.acked as f64 {
            report.failures.push(format!(
                "after fault {} healed the region committed {} transactions while the load got {} acknowledged: under {} %",
                report.faults, after.txs, after.acked, spec.throughput_floor
            ));
        }
    }
}

/// Throughput is judged once a fault has healed and this long has passed (a restarted node
/// refilling its pool, links reconnecting)...
const SETTLE: Duration = Duration::from_secs(1);
/// ... over this long: the region must commit at least 80 % as many transactions as the
/// steady load got acknowledged meanwhile (it keeps up with what it is offered; the offered
/// rate itself dips when calls are slow, as the load waits for each answer)...
const AFTER_WINDOW: Duration = Duration::from_secs(5);
/// ... judged when the load got at least this many acknowledged (fewer say too little).
const MIN_WINDOW_TXS: u64 = 20;

/// A stretch of time, with the CNs' head and the load's acknowledged count when it began.
struct Window {
    opened: Instant,
    height: u64,
    acked: u64,
}

/// What a [`Window`] committed, and what the steady load got acknowledged meanwhile.
struct Committed {
    txs: u64,
    acked: u64,
    seconds: f64,
    /// Blocks not counted (0 unless no RN reached the closing head within [`COUNT_WAIT`], or a
    /// height could not be read): the window is then not judged on its count — an RN that
    /// cannot serve the region's blocks fails the run as that, not as a throughput dip.
    uncounted: u64,
}

impl Committed {
    fn per_second(&self) -> f64 {
        self.txs as f64 / self.seconds.max(1e-3)
    }

    fn acked_per_second(&self) -> f64 {
        self.acked as f64 / self.seconds.max(1e-3)
    }
}

/// How long closing a window waits for an RN to have audited the window's last block.
const COUNT_WAIT: Duration = Duration::from_secs(10);

impl Window {
    /// Both ends are the CNs' head, which is what the region committed: an RN audits each
    /// block after the CNs commit it, and how far it lags moves with the load on the box, so a
    /// window read at an RN's head gains or loses a second of commits at either end.
    fn open(region: &Region<'_>) -> Self {
        Self {
            opened: Instant::now(),
            height: cns_head(region),
            acked: region.load_acked.load(Ordering::Relaxed),
        }
    }

    /// Closes the window at the CNs' head now and counts its blocks' transactions through the
    /// first RN to have audited them (waiting up to [`COUNT_WAIT`], which is not part of the
    /// window).
    fn close(&self, region: &Region<'_>, stop: &AtomicBool) -> Committed {
        let seconds = self.opened.elapsed().as_secs_f64();
        let acked = region
            .load_acked
            .load(Ordering::Relaxed)
            .saturating_sub(self.acked);
        let head = cns_head(region);
        let (txs, uncounted) = count_committed(region, self.height, head, stop);
        Committed {
            txs,
            acked,
            seconds,
            uncounted,
        }
    }
}

/// Transactions committed at heights `after + 1..=head`, counted through the first RN to have
/// audited `head` (waiting up to [`COUNT_WAIT`]), and how many of those blocks could not be
/// counted (none unless no RN got there, or a height could not be read: then all of them).
fn count_committed(region: &Region<'_>, after: u64, head: u64, stop: &AtomicBool) -> (u64, u64) {
    let reached = |url: &String| rn_height(&RnClient::new(url)).is_some_and(|h| h >= head);
    let _ = wait_until(stop, COUNT_WAIT, || region.rn_urls.iter().any(reached));
    let (url, counted) = counted_head(region);
    let counted = counted.min(head);
    match committed_between(url, after + 1, counted) {
        Some(txs) => (txs, head - counted),
        None => (0, head.saturating_sub(after)),
    }
}

/// The highest height any CN has committed.
fn cns_head(region: &Region<'_>) -> u64 {
    cluster::heights(region.chains)
        .into_iter()
        .max()
        .unwrap_or(0)
}

/// The RN furthest ahead and its head, where windows count committed transactions (never above
/// the CNs' head; the CNs' head on RN 0 when no RN answers).
fn counted_head<'r>(region: &'r Region<'_>) -> (&'r str, u64) {
    let cns = cns_head(region);
    let (url, head) = region
        .rn_urls
        .iter()
        .filter_map(|url| Some((url.as_str(), rn_height(&RnClient::new(url))?)))
        .max_by_key(|(_, head)| *head)
        .unwrap_or((region.rn_urls[0].as_str(), cns));
    (url, head.min(cns))
}

/// A fault in the words of the progress lines.
fn describe(kind: FaultKind, cn: usize, secs: u64) -> String {
    match kind {
        FaultKind::Restart | FaultKind::Down => {
            format!("kill -9 CN {cn}, restart after {secs} s")
        }
        FaultKind::LongDown => format!(
            "kill -9 CN {cn}, restart after the others commit {LONG_DOWN_BLOCKS} blocks (at most {secs} s)"
        ),
        FaultKind::Pause => format!("SIGSTOP CN {cn} for {secs} s"),
        FaultKind::Isolate => format!("CN {cn} cut off from every node for {secs} s"),
        FaultKind::OneWay => format!("nobody hears CN {cn} (it hears them) for {secs} s"),
        FaultKind::Split => format!("CNs split 2 | 2 around CN {cn} for {secs} s"),
        FaultKind::Lossy => format!("every link lossy, duplicating, delaying for {secs} s"),
        FaultKind::Disk => {
            format!("CN {cn}'s datadir full (tmpfs) until it stops and a start on it fails")
        }
        FaultKind::RnDown => format!("kill -9 RN {cn}, restart after {secs} s"),
        FaultKind::Overload => {
            format!("{OVERLOAD_CLIENTS} clients send as fast as they are answered for {secs} s")
        }
        FaultKind::RnPause => format!("SIGSTOP RN {cn} for {secs} s"),
        FaultKind::RnIsolate => format!("RN {cn} cut off from every node for {secs} s"),
    }
}

/// What the overload's clients saw.
#[derive(Debug, Default)]
struct Burst {
    acked: Vec<B256>,
    /// Refusals by the node's own words (the part before any detail after a colon).
    refused: BTreeMap<String, u64>,
    /// Calls without a usable answer: timeouts, resets, bodies that are not JSON.
    failed: u64,
    /// One of those, in words.
    failure: Option<String>,
}

impl Burst {
    fn absorb(&mut self, other: Burst) {
        self.acked.extend(other.acked);
        for (reason, n) in other.refused {
            *self.refused.entry(reason).or_default() += n;
        }
        self.failed += other.failed;
        self.failure = self.failure.take().or(other.failure);
    }

    fn answered(&self) -> u64 {
        self.acked.len() as u64 + self.refused.values().sum::<u64>()
    }
}

/// Transfers one overload request carries (a JSON-RPC batch, as ethers sends bursts).
const OVERLOAD_BATCH: u64 = 32;

/// One overload client: sends batches of transfers from `accounts` (index, next nonce)
/// round-robin to `url` as fast as it is answered, until `until` or `stop`.
fn overload_client(
    url: &str,
    accounts: &mut [(usize, u64)],
    until: Instant,
    stop: &AtomicBool,
) -> Burst {
    let client = RnClient::new(url);
    let chain = ChainId(REGION + 1);
    let mut burst = Burst::default();
    let mut k = 0usize;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let (index, nonce) = &mut accounts[k % accounts.len()];
        k = k.wrapping_add(1);
        let secret = super::loadgen::dev_account(*index).secret;
        let calls: Vec<Value> = (*nonce..*nonce + OVERLOAD_BATCH)
            .map(|n| {
                let raw = super::loadgen::transfer(chain, n, &secret, Address::repeat_byte(0xef));
                json!([hex::encode_prefixed(&raw)])
            })
            .collect();
        let answers = match client.try_batch("eth_sendRawTransaction", &calls) {
            Ok(answers) => answers,
            Err(e) => {
                burst.failed += calls.len() as u64;
                burst.failure.get_or_insert(format!("{e:#}"));
                continue;
            }
        };
        // The account's next nonce is the first not taken: later ones acknowledged after a
        // refusal are sent again (answered "already known") once the gap is filled.
        let start = *nonce;
        let mut gap = false;
        for (offset, answer) in (0u64..).zip(answers) {
            let taken = match answer {
                Ok(answer) => match serde_json::from_value::<B256>(answer) {
                    Ok(hash) => {
                        burst.acked.push(hash);
                        true
                    }
                    Err(e) => {
                        burst.failed += 1;
                        burst.failure.get_or_insert(format!("not a hash: {e}"));
                        false
                    }
                },
                Err(message) => {
                    let reason = message.split(':').next().unwrap_or_default().to_string();
                    *burst.refused.entry(reason).or_default() += 1;
                    is_taken(&message)
                }
            };
            gap |= !taken;
            if taken && !gap {
                *nonce = start + offset + 1;
            }
        }
    }
    burst
}

/// Resident memory of process `pid` in MiB (from `/proc`), `None` when it cannot be read.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Transactions the CNs committed on the load's servicechain at heights `from..=to`, counted
/// through an RN's JSON-RPC (each read retried); `None` when a height could not be read.
fn committed_between(url: &str, from: u64, to: u64) -> Option<u64> {
    let rn = RnClient::new(url);
    (from..=to)
        .map(|h| {
            let count = rn_read(
                &rn,
                "eth_getBlockTransactionCountByNumber",
                json!([format!("{h:#x}")]),
            )
            .ok()?;
            u64::from_str_radix(count.as_str()?.trim_start_matches("0x"), 16).ok()
        })
        .sum()
}

/// The head an RN's JSON-RPC reports, `None` when it does not answer.
fn rn_height(rn: &RnClient) -> Option<u64> {
    let answer = rn.call("eth_blockNumber", json!([])).ok()?;
    u64::from_str_radix(answer.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// Attempts a read of an RN gets before it counts as unanswered (a restarted RN, or one
/// busy with the drain's last receipts, may miss one).
const RN_READ_ATTEMPTS: u32 = 3;

/// `method(params)` on an RN, retried; the last error when every attempt failed.
fn rn_read(rn: &RnClient, method: &str, params: Value) -> Result<Value, String> {
    let mut last = String::new();
    for attempt in 0..RN_READ_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        match rn.call(method, params.clone()) {
            Ok(answer) => return Ok(answer),
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(last)
}

/// What comparing the RNs' blocks with the CNs' found: the (RN, height) pairs compared, the
/// pairs that differ (forks), and the reads an RN did not answer (not forks: the run fails on
/// them as unavailability).
#[derive(Debug, Default)]
struct RnComparison {
    compared: usize,
    differ: Vec<String>,
    unanswered: Vec<String>,
}

/// Compares what each RN serves with what the CNs committed, over the last [`RN_COMPARED`]
/// heights below each RN's head (through its servicechain JSON-RPC).
fn rn_forks(urls: &[String], chains: &Chains) -> RnComparison {
    let committed: BTreeMap<u64, String> = {
        let chains = chains.lock().unwrap_or_else(|e| e.into_inner());
        chains
            .iter()
            .flat_map(|c| c.iter().map(|(h, hash)| (*h, hash.clone())))
            .collect()
    };
    let mut found = RnComparison::default();
    for (j, url) in urls.iter().enumerate() {
        let rn = RnClient::new(url);
        let head = rn_read(&rn, "eth_blockNumber", json!([])).and_then(|answer| {
            let hex = answer.as_str().unwrap_or_default().trim_start_matches("0x");
            u64::from_str_radix(hex, 16).map_err(|e| format!("eth_blockNumber {answer}: {e}"))
        });
        let head = match head {
            Ok(head) => head,
            Err(e) => {
                found
                    .unanswered
                    .push(format!("RN {j} eth_blockNumber: {e}"));
                continue;
            }
        };
        for (height, hash) in committed.range(head.saturating_sub(RN_COMPARED)..=head) {
            let params = json!([format!("{height:#x}"), false]);
            let served = match rn_read(&rn, "eth_getBlockByNumber", params) {
                Ok(block) => block["hash"].as_str().map(str::to_string),
                Err(e) => {
                    found.unanswered.push(format!("RN {j} block {height}: {e}"));
                    continue;
                }
            };
            found.compared += 1;
            if served.as_deref() != Some(hash.as_str()) {
                found.differ.push(format!(
                    "height {height}: CNs {hash}, RN {j} {}",
                    served.as_deref().unwrap_or("(none)")
                ));
            }
        }
    }
    found
}

impl Region<'_> {
    /// Runs the overload for `length`, sampling every node's memory meanwhile; judges it.
    fn overload(
        &mut self,
        length: Duration,
        stop: &AtomicBool,
        report: &mut ChaosReport,
        out: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let from = cluster::heights(self.chains).into_iter().max().unwrap_or(0);
        let started = Instant::now();
        let until = started + length;
        let per_client = OVERLOAD_ACCOUNTS / OVERLOAD_CLIENTS;
        let mut peak = 0u64;
        let burst = std::thread::scope(|scope| {
            let clients: Vec<_> = self
                .overload_nonces
                .chunks_mut(per_client)
                .enumerate()
                .map(|(c, nonces)| {
                    let url = &self.rn_urls[c % self.rn_urls.len()];
                    scope.spawn(move || {
                        let mut accounts: Vec<(usize, u64)> = nonces
                            .iter()
                            .enumerate()
                            .map(|(i, n)| (ACCOUNTS + c * per_client + i, *n))
                            .collect();
                        let burst = overload_client(url, &mut accounts, until, stop);
                        for (slot, (_, next)) in nonces.iter_mut().zip(accounts) {
                            *slot = next;
                        }
                        burst
                    })
                })
                .collect();
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                for child in self.children.iter() {
                    peak = peak.max(rss_mib(child.id()).unwrap_or(0));
                }
                std::thread::sleep(SAMPLE * 4);
            }
            let mut total = Burst::default();
            for client in clients {
                total.absorb(client.join().unwrap_or_default());
            }
            total
        });
        let seconds = started.elapsed().as_secs_f64().max(1e-3);
        let to = cluster::heights(self.chains)
            .into_iter()
            .max()
            .unwrap_or(from);
        let (committed, _) = count_committed(self, from, to, stop);
        let offered = burst.answered() + burst.failed;
        let ratio = offered as f64 / (committed as f64).max(1.0);
        report.peak_rss_mib = report.peak_rss_mib.max(peak);
        writeln!(
            out,
            "chaos:   overload: {offered} sent in {seconds:.1} s ({:.0}/s), {} acknowledged, refused {:?}, {} without an answer; {committed} committed meanwhile ({ratio:.1}x); peak RSS {peak} MiB",
            offered as f64 / seconds,
            burst.acked.len(),
            burst.refused,
            burst.failed
        )?;
        if burst.failed > 0 {
            report.failures.push(format!(
                "{} overload calls got no answer (e.g. {}): a busy node must refuse, not time out",
                burst.failed,
                burst.failure.as_deref().unwrap_or("?")
            ));
        }
        if peak > self.spec.rss_bound_mib {
            report.failures.push(format!(
                "a node's memory peaked at {peak} MiB during an overload, over the {} MiB bound",
                self.spec.rss_bound_mib
            ));
        }
        self.overload_acked.extend(burst.acked);
        Ok(!stop.load(Ordering::Relaxed))
    }

    /// The process of RN `j` among the children (after the CNs).
    fn rn_child(&mut self, j: usize) -> &mut std::process::Child {
        &mut self.children[CNS + j]
    }

    /// Injects one fault and undoes it after `length`; false when `stop` cut it short.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        kind: FaultKind,
        cn: usize,
        rng: &mut StdRng,
        length: Duration,
        stop: &AtomicBool,
        report: &mut ChaosReport,
        out: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let nodes = CNS + self.spec.rns;
        let others = |me: usize| (0..nodes).filter(move |&n| n != me).collect::<Vec<_>>();
        match kind {
            FaultKind::Restart | FaultKind::Down => {
                self.children[cn].kill().context("kill -9")?;
                self.children[cn].wait().context("reaping the killed CN")?;
                if !sleep_unless(stop, length) {
                    return Ok(false);
                }
                self.restart(cn)?;
                Ok(true)
            }
            FaultKind::LongDown => {
                self.children[cn].kill().context("kill -9")?;
                self.children[cn].wait().context("reaping the killed CN")?;
                let live = |h: &[u64]| {
                    (0..CNS)
                        .filter(|&c| c != cn)
                        .map(|c| h[self.record[c]])
                        .min()
                };
                let from = live(&cluster::heights(self.chains)).unwrap_or(0);
                let passed = wait_until(stop, length, || {
                    live(&cluster::heights(self.chains))
                        .is_some_and(|h| h >= from.saturating_add(LONG_DOWN_BLOCKS))
                });
                if stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                if passed.is_err() {
                    writeln!(
                        out,
                        "chaos:   the others committed fewer than {LONG_DOWN_BLOCKS} blocks in {} s; restarting CN {cn} anyway",
                        length.as_secs()
                    )?;
                }
                self.restart(cn)?;
                Ok(true)
            }
            FaultKind::Disk => self.fill_disk(cn, length, stop, report, out),
            FaultKind::Pause => {
                cluster::signal(&self.children[cn], libc::SIGSTOP).context("SIGSTOP")?;
                let slept = sleep_unless(stop, length);
                cluster::signal(&self.children[cn], libc::SIGCONT).context("SIGCONT")?;
                Ok(slept)
            }
            FaultKind::Isolate => {
                self.netem.partition(&[cn], &others(cn));
                Ok(self.heal_after(length, stop))
            }
            FaultKind::OneWay => {
                for to in others(cn) {
                    self.netem.cut(cn, to);
                }
                Ok(self.heal_after(length, stop))
            }
            FaultKind::Split => {
                let partner = (cn + 1 + rng.gen_range(0..CNS - 1)) % CNS;
                let (side, rest): (Vec<usize>, Vec<usize>) =
                    (0..CNS).partition(|&c| c == cn || c == partner);
                self.netem.partition(&side, &rest);
                self.no_quorum.store(true, Ordering::Relaxed);
                let slept = self.heal_after(length, stop);
                self.no_quorum.store(false, Ordering::Relaxed);
                Ok(slept)
            }
            FaultKind::RnDown => {
                let j = cn;
                self.rn_child(j).kill().context("kill -9 RN")?;
                self.rn_child(j).wait().context("reaping the killed RN")?;
                if !sleep_unless(stop, length) {
                    return Ok(false);
                }
                *self.rn_child(j) = cluster::spawn_rn(&self.spec.kaon, &self.rns[j])
                    .context("restarting kaon rn")?;
                Ok(true)
            }
            FaultKind::Overload => self.overload(length, stop, report, out),
            FaultKind::RnPause => {
                let j = cn;
                cluster::signal(self.rn_child(j), libc::SIGSTOP).context("SIGSTOP RN")?;
                let slept = sleep_unless(stop, length);
                cluster::signal(self.rn_child(j), libc::SIGCONT).context("SIGCONT RN")?;
                Ok(slept)
            }
            FaultKind::RnIsolate => {
                let rn = CNS + cn;
                self.netem.partition(&[rn], &others(rn));
                Ok(self.heal_after(length, stop))
            }
            FaultKind::Lossy => {
                self.netem.set_quality(LinkQuality {
                    loss: rng.gen_range(0.05..=0.25),
                    duplicate: rng.gen_range(0.0..=0.1),
                    delay_ms: (0, rng.gen_range(10..=80)),
                });
                Ok(self.heal_after(length, stop))
            }
        }
    }

    /// Starts CN `cn` again (its previous process has exited and was reaped), recording into
    /// a fresh record.
    fn restart(&mut self, cn: usize) -> anyhow::Result<()> {
        self.record[cn] = cluster::add_record(self.chains);
        self.children[cn] =
            cluster::spawn_cn_into(&self.spec.kaon, self.dir, cn, self.record[cn], self.chains)
                .context("restarting kaon cn")?;
        Ok(())
    }

    /// Fills CN `cn`'s datadir and waits up to [`DISK_RUNNING`] for it to stop; restarts it
    /// on the full disk and waits up to `wait` for that start to fail; then frees the space
    /// and restarts it. The running CN must stop with [`EXIT_STAGE_DIED`] (its disk watch, the
    /// reason logged) and the start must fail with a non-zero exit status, not a signal (an
    /// abort inside a library is not a clear error); anything else is a failure.
    fn fill_disk(
        &mut self,
        cn: usize,
        wait: Duration,
        stop: &AtomicBool,
        report: &mut ChaosReport,
        out: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let Some((_, tmpfs)) = self.disk else {
            return Ok(true);
        };
        tmpfs.fill(DISK_LEFT)?;
        let running = self.wait_exit(cn, DISK_RUNNING, stop)?;
        if running.is_none() {
            self.children[cn].kill().context("kill -9")?;
            self.children[cn].wait().context("reaping the killed CN")?;
        }
        let stopped_loudly = |s: ExitStatus| s.code() == Some(EXIT_STAGE_DIED);
        self.judge_exit(cn, "running", running, stopped_loudly, report, out)?;
        self.restart(cn)?;
        let starting = self.wait_exit(cn, wait, stop)?;
        let refused = |s: ExitStatus| s.code().is_some_and(|c| c != 0);
        self.judge_exit(cn, "starting", starting, refused, report, out)?;
        tmpfs.empty()?;
        if starting.is_some() {
            self.restart(cn)?;
        }
        Ok(!stop.load(Ordering::Relaxed))
    }

    /// Prints how CN `cn` ended `when` on the full disk (with the last line it logged) and
    /// adds a failure unless it ended and `expected` holds.
    fn judge_exit(
        &self,
        cn: usize,
        when: &str,
        status: Option<ExitStatus>,
        expected: impl Fn(ExitStatus) -> bool,
        report: &mut ChaosReport,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let Some(status) = status else {
            report
                .failures
                .push(format!("CN {cn} {when} on a full disk did not stop"));
            return writeln!(out, "chaos:   CN {cn} {when} on the full disk did not stop");
        };
        let why = last_line(&cluster::cn_log(self.dir, cn));
        if !expected(status) {
            report.failures.push(format!(
                "CN {cn} {when} on a full disk ended with {status}: {why}"
            ));
        }
        writeln!(
            out,
            "chaos:   CN {cn} {when} on the full disk: {status}: {why}"
        )
    }

    /// CN `cn`'s exit status if it exits within `wait`.
    fn wait_exit(
        &mut self,
        cn: usize,
        wait: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<Option<ExitStatus>> {
        let start = Instant::now();
        while start.elapsed() < wait && !stop.load(Ordering::Relaxed) {
            if let Some(status) = self.children[cn].try_wait().context("polling the CN")? {
                return Ok(Some(status));
            }
            std::thread::sleep(SAMPLE);
        }
        Ok(None)
    }

    /// Waits `length`, then heals the network whatever happened.
    fn heal_after(&self, length: Duration, stop: &AtomicBool) -> bool {
        let slept = sleep_unless(stop, length);
        self.netem.heal();
        slept
    }
}

/// Samples the highest committed height until `done`: the longest time it did not move, and
/// when (since `started`) that stall began and at what height.
/// While `no_quorum` is set (the CNs are split with no quorum on either side) no commit is
/// expected, so the stall clock starts again when it clears.
fn spawn_stall_monitor(
    chains: Chains,
    done: Arc<AtomicBool>,
    no_quorum: Arc<AtomicBool>,
    started: Instant,
) -> std::thread::JoinHandle<Stall> {
    std::thread::spawn(move || {
        let head = || cluster::heights(&chains).into_iter().max().unwrap_or(0);
        let (mut last, mut since) = (head(), Instant::now());
        let mut worst = Stall::default();
        let close = |last: u64, since: Instant, worst: &mut Stall| {
            if since.elapsed() > worst.length {
                *worst = Stall {
                    length: since.elapsed(),
                    from: since.duration_since(started),
                    height: last,
                };
            }
        };
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(SAMPLE);
            let now = head();
            if no_quorum.load(Ordering::Relaxed) {
                (last, since) = (now, Instant::now());
                continue;
            }
            if now > last {
                close(last, since, &mut worst);
                (last, since) = (now, Instant::now());
            }
        }
        close(last, since, &mut worst);
        worst
    })
}

/// The longest time without a new committed height.
#[derive(Debug, Clone, Copy, Default)]
struct Stall {
    length: Duration,
    /// When it began, since the load started.
    from: Duration,
    /// The head height it stalled at.
    height: u64,
}

/// One sending account: its next nonce, and a transaction to send again after a refusal.
struct Account {
    secret: [u8; 32],
    nonce: u64,
    retry: Option<Bytes>,
}

/// The load thread: transfers at a steady rate, round-robin over accounts and RNs.
struct Load {
    stop: Arc<AtomicBool>,
    /// Transfers acknowledged so far (read by the throughput windows).
    acked: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<B256>>,
}

impl Load {
    fn start(rate: u64, urls: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<RnClient> = urls.iter().map(|u| RnClient::new(u)).collect();
        let flag = Arc::clone(&stop);
        let acked_count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&acked_count);
        let thread = std::thread::spawn(move || {
            let mut accounts: Vec<Account> = (0..ACCOUNTS)
                .map(|i| Account {
                    secret: super::loadgen::dev_account(i).secret,
                    nonce: 0,
                    retry: None,
                })
                .collect();
            let interval = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX);
            let mut acked = Vec::new();
            let mut next = Instant::now();
            let mut k = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let account = &mut accounts[k % ACCOUNTS];
                send(&clients[k % clients.len()], account, &mut acked);
                counter.store(acked.len() as u64, Ordering::Relaxed);
                k = k.wrapping_add(1);
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            acked
        });
        Self {
            stop,
            acked: acked_count,
            thread,
        }
    }

    /// Stops the load; the acknowledged hashes, in the order acknowledged.
    fn stop(self) -> Vec<B256> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Sends `account`'s next transfer (or its refused one again); records the acknowledged hash.
fn send(client: &RnClient, account: &mut Account, acked: &mut Vec<B256>) {
    let chain = ChainId(REGION + 1);
    let raw = account.retry.take().unwrap_or_else(|| {
        super::loadgen::transfer(
            chain,
            account.nonce,
            &account.secret,
            Address::repeat_byte(0xee),
        )
    });
    match client.call(
        "eth_sendRawTransaction",
        json!([hex::encode_prefixed(&raw)]),
    ) {
        Ok(answer) => match serde_json::from_value::<B256>(answer) {
            Ok(hash) => {
                acked.push(hash);
                account.nonce += 1;
            }
            Err(_) => account.retry = Some(raw),
        },
        // An earlier try got through without its answer reaching us: not acknowledged to us,
        // so not counted, but the nonce is taken.
        Err(e) if is_taken(&e.to_string()) => account.nonce += 1,
        Err(_) => account.retry = Some(raw),
    }
}

/// Whether a refusal says the transaction (or its nonce) is already in.
fn is_taken(message: &str) -> bool {
    message.contains("already known") || message.contains("nonce too low")
}

/// Polls receipts of `acked` on `url` until all have one, or [`DRAIN`] passes without a new
/// one, or [`DRAIN_CAP`] after the load stopped; the hashes still without a receipt.
fn drain(url: &str, acked: Vec<B256>, stop: &AtomicBool) -> Vec<B256> {
    let client = RnClient::new(url);
    let mut pending: VecDeque<B256> = acked.into();
    let start = Instant::now();
    let mut progress = Instant::now();
    let over = |progress: Instant| progress.elapsed() >= DRAIN || start.elapsed() >= DRAIN_CAP;
    while !pending.is_empty() && !over(progress) && !stop.load(Ordering::Relaxed) {
        let mut found = 0;
        for _ in 0..RECEIPTS_PER_ROUND.min(pending.len()) {
            if over(progress) {
                break;
            }
            let Some(hash) = pending.pop_front() else {
                break;
            };
            match client.call("eth_getTransactionReceipt", json!([hash])) {
                Ok(receipt) if !receipt.is_null() => {
                    found += 1;
                    progress = Instant::now();
                }
                _ => pending.push_back(hash),
            }
        }
        if found == 0 {
            std::thread::sleep(RECEIPT_POLL);
        }
    }
    pending.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_reads_as_documented() {
        let report = ChaosReport {
            faults: 3,
            acknowledged: 120,
            lost: 0,
            forks: 0,
            max_catch_up: Duration::from_millis(2_340),
            worst_stall: Duration::from_millis(900),
            failures: vec![],
            ..ChaosReport::default()
        };
        assert_eq!(
            report.summary(),
            "chaos: 3 faults, 120 acknowledged, 0 lost, 0 forks, max catch-up 2.3 s, worst stall 0.9 s"
        );
        assert!(report.passed());
    }

    #[test]
    fn fault_kinds_parse_by_name() {
        assert_eq!("down".parse::<FaultKind>(), Ok(FaultKind::Down));
        assert_eq!("rn-down".parse::<FaultKind>(), Ok(FaultKind::RnDown));
        assert_eq!("rn-pause".parse::<FaultKind>(), Ok(FaultKind::RnPause));
        assert_eq!("rn-isolate".parse::<FaultKind>(), Ok(FaultKind::RnIsolate));
        assert_eq!("long-down".parse::<FaultKind>(), Ok(FaultKind::LongDown));
        assert!("partition".parse::<FaultKind>().is_err());
        // Every kind the seed may draw is one a user can name.
        for kind in FaultKind::ALL {
            let name = format!("{kind:?}")
                .replace("Rn", "rn-")
                .replace("OneWay", "oneway")
                .replace("LongDown", "long-down")
                .to_lowercase();
            assert_eq!(name.parse::<FaultKind>(), Ok(kind), "{name}");
        }
    }
}
