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
use crate::types::ChainId;
use alloy_primitives::{hex, Address, Bytes, B256};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
/// Development accounts funded by genesis and sending the load.
const ACCOUNTS: usize = 16;
/// A restarted or resumed CN is back once it is this close to the head (the issue's bound).
pub const WITHIN_BLOCKS: u64 = 5;
/// Default worst stall: with one CN of four faulty, a quorum remains, so commits stall only
/// for the dead proposer's timeouts (a few × [`TIMEOUT_MS`]) plus scheduling noise on a loaded
/// machine; 10 s is ~30 round-0 timeouts.
pub const DEFAULT_STALL_BOUND: Duration = Duration::from_secs(10);
/// Default catch-up bound: process start, RocksDB open and sync of a few hundred blocks.
pub const DEFAULT_CATCH_UP_BOUND: Duration = Duration::from_secs(30);
/// After the load stops, how long acknowledged transactions may take to show receipts.
const DRAIN: Duration = Duration::from_secs(30);
/// How long the region may take to start (CNs committing, RNs answering).
const START_DEADLINE: Duration = Duration::from_secs(90);
/// Receipts asked per polling round, and the pause between rounds.
const RECEIPTS_PER_ROUND: usize = 100;
const RECEIPT_POLL: Duration = Duration::from_millis(200);
/// Sampling interval of heights (stall and catch-up measurement).
const SAMPLE: Duration = Duration::from_millis(50);

/// One kind of fault, injected into one CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `kill -9`, restarted at once.
    Restart,
    /// `kill -9`, restarted after a downtime of several seconds.
    Down,
    /// `SIGSTOP` for a few seconds, then `SIGCONT`.
    Pause,
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restart" => Ok(Self::Restart),
            "down" => Ok(Self::Down),
            "pause" => Ok(Self::Pause),
            _ => Err(format!("unknown fault {s:?}: restart, down or pause")),
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
            accounts: ACCOUNTS,
            region: ChainId(REGION),
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
    let chains = cluster::new_chains(CNS);
    let mut children = KillOnDrop::default();
    for i in 0..CNS {
        children.push(cluster::spawn_cn(&spec.kaon, &dir, i, &chains).context("starting kaon cn")?);
    }
    wait_until(stop, START_DEADLINE, || {
        cluster::heights(&chains).iter().all(|&h| h >= 2)
    })
    .context("the four CNs did not commit height 2")?;
    let urls = start_rns(spec, &dir, &mut children)?;
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
    let monitor = spawn_stall_monitor(Arc::clone(&chains), Arc::clone(&done), started);
    let load = Load::start(spec.rate, &urls);
    let faults = inject(spec, &dir, &chains, &mut children, stop, &mut report, out);
    let acked = load.stop();
    report.acknowledged = acked.len();
    writeln!(
        out,
        "chaos: load stopped after {:.0} s; draining receipts",
        started.elapsed().as_secs_f64()
    )?;
    let lost = drain(&urls[0], acked, stop);
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
    let forks = cluster::forks(&chains);
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
    children: &mut KillOnDrop,
) -> anyhow::Result<Vec<String>> {
    let port = |offset: usize| -> anyhow::Result<u16> {
        u16::try_from(spec.base_port as usize + offset).context("--base-port too high")
    };
    let cns = (0..CNS)
        .map(|i| Ok(format!("{i}@127.0.0.1:{}", port(i)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut listens = Vec::new();
    let mut urls = Vec::new();
    for j in 0..spec.rns {
        let key_file = dir.join(format!("rn{j}.key"));
        cluster::write_node_key(&key_file)?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port(10 + 2 * j)?));
        let rpc = std::net::SocketAddr::from(([127, 0, 0, 1], port(11 + 2 * j)?));
        let launch = RnLaunch {
            genesis: dir.join("genesis.json"),
            datadir: dir.join(format!("rn{j}")),
            key_file,
            reward_key_file: None,
            listen,
            rpc,
            cns: cns.clone(),
            rns: listens.clone(),
        };
        children.push(cluster::spawn_rn(&spec.kaon, &launch).context("starting kaon rn")?);
        listens.push(listen);
        urls.push(format!("http://{rpc}/chain/{}", REGION + 1));
    }
    Ok(urls)
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

/// The fault schedule: a seeded gap before each fault, then the fault, then the wait for the
/// CN to be back, until `spec.duration` has passed; listed faults (`spec.faults`) are all
/// injected, and the load then runs out the rest of the duration.
fn inject(
    spec: &ChaosSpec,
    dir: &Path,
    chains: &Chains,
    children: &mut KillOnDrop,
    stop: &AtomicBool,
    report: &mut ChaosReport,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let start = Instant::now();
    let mut listed = spec.faults.iter().copied();
    // Which record of `chains` each CN's current process writes.
    let mut record: Vec<usize> = (0..CNS).collect();
    loop {
        let gap = Duration::from_millis(rng.gen_range(3_000..=8_000));
        let kind = if spec.faults.is_empty() {
            let left = spec.duration.saturating_sub(start.elapsed());
            if !sleep_unless(stop, gap.min(left)) || start.elapsed() >= spec.duration {
                return Ok(());
            }
            [FaultKind::Restart, FaultKind::Down, FaultKind::Pause][rng.gen_range(0..3)]
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
        let cn = rng.gen_range(0..CNS);
        let secs = match kind {
            FaultKind::Restart => 0,
            FaultKind::Down => rng.gen_range(3..=10),
            FaultKind::Pause => rng.gen_range(2..=6),
        };
        report.faults += 1;
        let at = start.elapsed().as_secs_f64();
        match kind {
            FaultKind::Restart | FaultKind::Down => {
                writeln!(
                    out,
                    "chaos: fault {} at {at:.1} s: kill -9 CN {cn}, restart after {secs} s",
                    report.faults
                )?;
                children[cn].kill().context("kill -9")?;
                children[cn].wait().context("reaping the killed CN")?;
                if !sleep_unless(stop, Duration::from_secs(secs)) {
                    return Ok(());
                }
                // The killed CN's `Child` was reaped above; replacing it drops nothing running.
                record[cn] = cluster::add_record(chains);
                children[cn] = cluster::spawn_cn_into(&spec.kaon, dir, cn, record[cn], chains)
                    .context("restarting kaon cn")?;
            }
            FaultKind::Pause => {
                writeln!(
                    out,
                    "chaos: fault {} at {at:.1} s: SIGSTOP CN {cn} for {secs} s",
                    report.faults
                )?;
                cluster::signal(&children[cn], libc::SIGSTOP).context("SIGSTOP")?;
                let slept = sleep_unless(stop, Duration::from_secs(secs));
                cluster::signal(&children[cn], libc::SIGCONT).context("SIGCONT")?;
                if !slept {
                    return Ok(());
                }
            }
        }
        let resumed = Instant::now();
        // Back means committing the head of the moment it resumed, or higher, in the record of
        // its current process (a restarted one starts a fresh record).
        let target = cluster::heights(chains).into_iter().max().unwrap_or(0);
        let back = wait_until(stop, spec.catch_up_bound, || {
            let heights = cluster::heights(chains);
            let head = heights.iter().copied().max().unwrap_or(0);
            heights[record[cn]] >= target && heights[record[cn]] + WITHIN_BLOCKS >= head
        });
        let took = resumed.elapsed();
        report.max_catch_up = report.max_catch_up.max(took);
        if back.is_err() {
            report.failures.push(format!(
                "CN {cn} not within {WITHIN_BLOCKS} blocks of the head {:.0} s after fault {}",
                spec.catch_up_bound.as_secs_f64(),
                report.faults
            ));
            // It is still faulty: another fault now could take a second CN down.
            return Ok(());
        }
        let height = cluster::height(chains, record[cn]);
        let took = took.as_secs_f64();
        writeln!(
            out,
            "chaos:   CN {cn} back within {WITHIN_BLOCKS} blocks of the head in {took:.1} s (height {height})"
        )?;
    }
}

/// Samples the highest committed height until `done`: the longest time it did not move, and
/// when (since `started`) that stall began and at what height.
fn spawn_stall_monitor(
    chains: Chains,
    done: Arc<AtomicBool>,
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
    thread: std::thread::JoinHandle<Vec<B256>>,
}

impl Load {
    fn start(rate: u64, urls: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<RnClient> = urls.iter().map(|u| RnClient::new(u)).collect();
        let flag = Arc::clone(&stop);
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
                k = k.wrapping_add(1);
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            acked
        });
        Self { stop, thread }
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

/// Polls receipts of `acked` on `url` until all have one or [`DRAIN`] passes after the load
/// stopped; the hashes still without a receipt.
fn drain(url: &str, acked: Vec<B256>, stop: &AtomicBool) -> Vec<B256> {
    let client = RnClient::new(url);
    let mut pending: VecDeque<B256> = acked.into();
    let start = Instant::now();
    while !pending.is_empty() && start.elapsed() < DRAIN && !stop.load(Ordering::Relaxed) {
        let mut found = 0;
        for _ in 0..RECEIPTS_PER_ROUND.min(pending.len()) {
            if start.elapsed() >= DRAIN {
                break;
            }
            let Some(hash) = pending.pop_front() else {
                break;
            };
            match client.call("eth_getTransactionReceipt", json!([hash])) {
                Ok(receipt) if !receipt.is_null() => found += 1,
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
        assert!("partition".parse::<FaultKind>().is_err());
    }
}
