//! Miner tuning: the knobs `kaon mine` hashes with — GPU invocations per workgroup and
//! counters per dispatch, CPU counters per rayon task — measured once per machine by short,
//! bounded trials and kept as a TOML *mining profile* ([`MiningProfile`], in `tune/profile.rs`).
//! `tuning/*.toml` ships one per device class; `kaon mine` writes its own on first run (see
//! `tuning/README.md`).
//!
//! GPU search (at most [`MAX_GPU_TRIALS`] trials, each about `TuneBudget::trial` long, no new
//! trial once `TuneBudget::total` is spent):
//! 1. probe the default workgroup at the smallest batch to predict dispatch times;
//! 2. compare the candidate workgroup sizes the adapter allows, at the largest batch whose
//!    dispatch the probe predicts to last at most half of [`MAX_DISPATCH`]; another size
//!    replaces the default only when it is more than [`MIN_GAIN`] faster, also than a second
//!    trial of the default;
//! 3. with the fastest workgroup, double the batch from 2^18 while a doubling gains more than
//!    [`MIN_GAIN`] and a dispatch stays under [`MAX_DISPATCH`] (a miner looks for new work
//!    and Ctrl-C between dispatches) and fits the adapter's 65 535 workgroups per dispatch
//!    (wgpu's limit, NVIDIA included: 2^24 counters need a workgroup of 512).
//!
//! CPU search: SHA-NI hashing is compression-bound and every core is used, so the only knob is
//! the counters per rayon task; the default stays unless another candidate is consistently
//! more than [`MIN_GAIN`] faster ([`CPU_ROUNDS`] interleaved trials each, at most
//! 4 × [`CPU_ROUNDS`] trials). On SHA-NI cores it never was (`tuning/README.md`): the profile
//! then just records the measured rate and the thread count.

use super::cpu::{self, DEFAULT_CHUNK};
use super::gpu::{GpuError, GpuMiner, DEFAULT_WORKGROUP_SIZE};
use alloy_primitives::{Address, B256};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thiserror::Error;

mod profile;
pub use profile::{
    default_profile_path, device_class, profile_path_in, DeviceKind, MiningProfile,
    MAX_PROFILE_BYTES,
};

/// Workgroup sizes tried (those above the adapter's maximum are skipped).
pub const WORKGROUP_CANDIDATES: [u32; 4] = [64, 128, 256, 512];
/// Counters per dispatch tried, smallest first: 2^18 … 2^24.
pub const BATCH_CANDIDATES: [u32; 7] = [
    1 << 18,
    1 << 19,
    1 << 20,
    1 << 21,
    1 << 22,
    1 << 23,
    1 << 24,
];
/// Most trials of a GPU search: the probe, the workgroup sizes, the default's second trial,
/// every batch.
pub const MAX_GPU_TRIALS: usize = 1 + WORKGROUP_CANDIDATES.len() + 1 + BATCH_CANDIDATES.len();
/// Counters per rayon task tried on the CPU.
pub const CHUNK_CANDIDATES: [u64; 4] = [1 << 10, 1 << 12, 1 << 14, 1 << 16];
/// A larger batch, or a workgroup size or chunk other than the default, must be this much
/// faster to be chosen: smaller differences are run-to-run noise, and a smaller batch returns
/// sooner.
pub const MIN_GAIN: f64 = 1.05;
/// Interleaved rounds of CPU trials (a challenger's slowest must beat the default's fastest).
pub const CPU_ROUNDS: usize = 2;
/// Longest dispatch the tuner accepts, so a miner stays responsive to new work and Ctrl-C.
pub const MAX_DISPATCH: Duration = Duration::from_millis(100);
/// Address the trials mine for: no trial share is ever submitted.
const TRIAL_MINER: Address = Address::repeat_byte(0x42);
/// Trial target: zero admits no share, so no dispatch overflows the share buffer, while every
/// counter still pays the full hash.
const TRIAL_TARGET: B256 = B256::ZERO;

/// Why a profile could not be read, written or measured.
#[derive(Debug, Error)]
pub enum TuneError {
    #[error("cannot read mining profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mining profile {path} is larger than {max} bytes: not a profile")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("invalid mining profile {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write mining profile {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("GPU trial failed: {0}")]
    Gpu(#[from] GpuError),
}

impl TuneError {
    /// The profile file does not exist (a first run: tune and write it).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// How long tuning may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TuneBudget {
    /// No trial starts after this much time; the best so far is chosen.
    pub total: Duration,
    /// Timed hashing per trial (after one untimed warm-up call).
    pub trial: Duration,
}

impl Default for TuneBudget {
    /// About five seconds: long enough for each trial to span many dispatches, short enough to
    /// wait for on a first run.
    fn default() -> Self {
        Self {
            total: Duration::from_secs(5),
            trial: Duration::from_millis(250),
        }
    }
}

/// One trial's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knobs {
    Gpu { workgroup_size: u32, batch: u32 },
    Cpu { chunk: u64 },
}

/// What one timed run of a device did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub counters: u64,
    pub seconds: f64,
    /// Dispatches (GPU) or `mine` calls (CPU) timed.
    pub calls: u32,
}

impl Measured {
    pub fn hashes_per_sec(&self) -> f64 {
        self.counters as f64 / self.seconds.max(1e-9)
    }

    /// Mean time of one dispatch or call.
    pub fn per_call(&self) -> Duration {
        Duration::from_secs_f64(self.seconds / f64::from(self.calls.max(1)))
    }
}

/// One trial of a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    pub knobs: Knobs,
    pub measured: Measured,
}

impl std::fmt::Display for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.knobs {
            Knobs::Gpu {
                workgroup_size,
                batch,
            } => write!(f, "workgroup {workgroup_size:>4}, batch {batch:>8}")?,
            Knobs::Cpu { chunk } => write!(f, "chunk {chunk:>6}")?,
        }
        write!(
            f,
            ": {:>7.2} M H/s, {:>6.1} ms per {}",
            self.measured.hashes_per_sec() / 1e6,
            self.measured.per_call().as_secs_f64() * 1e3,
            match self.knobs {
                Knobs::Gpu { .. } => "dispatch",
                Knobs::Cpu { .. } => "call",
            }
        )
    }
}

/// A chosen profile and the trials behind it.
#[derive(Debug, Clone)]
pub struct Tuned {
    pub profile: MiningProfile,
    pub trials: Vec<Trial>,
}

/// What the GPU search needs from a device; the search is tested against a model of one.
pub trait GpuBench {
    /// The largest workgroup size the device accepts.
    fn max_workgroup_size(&self) -> u32;
    /// The most counters one dispatch may try at `workgroup_size`.
    fn max_batch(&self, workgroup_size: u32) -> u32;
    /// Runs dispatches of `batch` counters at `workgroup_size` for about `duration`.
    fn run(
        &mut self,
        workgroup_size: u32,
        batch: u32,
        duration: Duration,
    ) -> Result<Measured, GpuError>;
}

/// The wgpu miner as a [`GpuBench`].
struct WgpuBench {
    miner: GpuMiner,
    next: u64,
}

impl WgpuBench {
    fn dispatch(&mut self, batch: u32) -> Result<(), GpuError> {
        self.miner
            .mine(TRIAL_MINER, &TRIAL_TARGET, self.next, batch)?;
        self.next += u64::from(batch);
        Ok(())
    }
}

impl GpuBench for WgpuBench {
    fn max_workgroup_size(&self) -> u32 {
        self.miner.max_workgroup_size()
    }

    fn max_batch(&self, workgroup_size: u32) -> u32 {
        self.miner.max_workgroups().saturating_mul(workgroup_size)
    }

    fn run(
        &mut self,
        workgroup_size: u32,
        batch: u32,
        duration: Duration,
    ) -> Result<Measured, GpuError> {
        if self.miner.workgroup_size() != workgroup_size {
            self.miner.set_workgroup_size(workgroup_size)?;
        }
        // Untimed: the first dispatch of a new pipeline may include driver-side compilation.
        self.dispatch(batch)?;
        let start = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || start.elapsed() < duration {
            self.dispatch(batch)?;
            calls += 1;
        }
        Ok(Measured {
            counters: u64::from(batch) * u64::from(calls),
            seconds: start.elapsed().as_secs_f64(),
            calls,
        })
    }
}

/// Trials of one search, each knob pair measured once (the default workgroup size may get a
/// second trial); the probe is listed but never reused as a measurement.
struct Trials<'a, B> {
    bench: &'a mut B,
    duration: Duration,
    done: Vec<Trial>,
}

impl<B: GpuBench> Trials<'_, B> {
    fn known(&self, workgroup_size: u32, batch: u32) -> Option<Trial> {
        let knobs = Knobs::Gpu {
            workgroup_size,
            batch,
        };
        // The fastest of repeated trials: the default's second trial may supersede its first.
        self.done
            .iter()
            .skip(1)
            .filter(|t| t.knobs == knobs)
            .max_by(|a, b| {
                a.measured
                    .hashes_per_sec()
                    .total_cmp(&b.measured.hashes_per_sec())
            })
            .copied()
    }

    fn measure(&mut self, workgroup_size: u32, batch: u32) -> Result<Trial, GpuError> {
        match self.known(workgroup_size, batch) {
            Some(done) => Ok(done),
            None => self.remeasure(workgroup_size, batch),
        }
    }

    /// Measures again even if measured before (the default's second chance).
    fn remeasure(&mut self, workgroup_size: u32, batch: u32) -> Result<Trial, GpuError> {
        let trial = Trial {
            knobs: Knobs::Gpu {
                workgroup_size,
                batch,
            },
            measured: self.bench.run(workgroup_size, batch, self.duration)?,
        };
        self.done.push(trial);
        Ok(trial)
    }

    fn fits(&self, workgroup_size: u32, batch: u32) -> bool {
        batch <= self.bench.max_batch(workgroup_size)
    }
}

/// How long a dispatch of `batch` counters lasts at `rate`.
fn predicted(batch: u32, rate: f64) -> Duration {
    Duration::from_secs_f64(f64::from(batch) / rate.max(1.0))
}

/// The GPU search (module docs) over any [`GpuBench`]: the chosen trial and every trial run,
/// in order.
pub fn search_gpu(
    bench: &mut impl GpuBench,
    budget: TuneBudget,
) -> Result<(Trial, Vec<Trial>), GpuError> {
    let started = Instant::now();
    let over_budget = || started.elapsed() >= budget.total;
    let max_wg = bench.max_workgroup_size();
    let mut workgroups: Vec<u32> = WORKGROUP_CANDIDATES
        .into_iter()
        .filter(|&wg| wg <= max_wg)
        .collect();
    if workgroups.is_empty() {
        // A device narrower than every candidate: its maximum is the only choice.
        workgroups.push(max_wg);
    }
    let first_wg = if workgroups.contains(&DEFAULT_WORKGROUP_SIZE) {
        DEFAULT_WORKGROUP_SIZE
    } else {
        workgroups[workgroups.len() - 1]
    };
    let mut trials = Trials {
        bench,
        duration: budget.trial,
        done: Vec::new(),
    };
    // 1. The probe. WebGPU guarantees 65 535 workgroups per dispatch, so 2^18 counters fit any
    // workgroup of 4 or more invocations. It only predicts dispatch times: the device's first
    // trial runs slow on lavapipe (its threads and caches still cold), so it is not reused.
    let probe = trials.remeasure(first_wg, BATCH_CANDIDATES[0])?;
    // 2. Workgroup sizes, compared at a batch long enough to hide dispatch overhead.
    let compare_batch = BATCH_CANDIDATES
        .into_iter()
        .rfind(|&b| {
            predicted(b, probe.measured.hashes_per_sec()) <= MAX_DISPATCH / 2
                && workgroups.iter().all(|&wg| trials.fits(wg, b))
        })
        .unwrap_or(BATCH_CANDIDATES[0]);
    // The default goes first and stays unless another size is clearly faster.
    let order =
        std::iter::once(first_wg).chain(workgroups.iter().copied().filter(|&w| w != first_wg));
    let (mut wg, mut wg_rate, mut default_rate) = (first_wg, f64::MIN, f64::MAX);
    for candidate in order {
        if trials.known(candidate, compare_batch).is_none() && over_budget() {
            break;
        }
        let rate = trials
            .measure(candidate, compare_batch)?
            .measured
            .hashes_per_sec();
        if candidate == first_wg {
            default_rate = rate;
        } else if rate > default_rate * MIN_GAIN && rate > wg_rate {
            (wg, wg_rate) = (candidate, rate);
        }
    }
    // A challenger must also beat a second trial of the default, so a burst of other load
    // during the default's first trial does not crown it.
    if wg != first_wg && !over_budget() {
        let again = trials.remeasure(first_wg, compare_batch)?;
        if wg_rate <= again.measured.hashes_per_sec() * MIN_GAIN {
            wg = first_wg;
        }
    }
    // 3. The batch, grown from the smallest while it pays and dispatches stay short.
    let mut best = match trials.known(wg, BATCH_CANDIDATES[0]) {
        Some(trial) => trial,
        // Out of time: `wg` was measured at compare_batch, or it is the probe's.
        None if over_budget() => trials.known(wg, compare_batch).unwrap_or(probe),
        None => trials.measure(wg, BATCH_CANDIDATES[0])?,
    };
    let Knobs::Gpu { batch: from, .. } = best.knobs else {
        unreachable!("GPU trials only")
    };
    for batch in BATCH_CANDIDATES.into_iter().filter(|&b| b > from) {
        if over_budget()
            || !trials.fits(wg, batch)
            || predicted(batch, best.measured.hashes_per_sec()) > MAX_DISPATCH
        {
            break;
        }
        let trial = trials.measure(wg, batch)?;
        if trial.measured.per_call() > MAX_DISPATCH
            || trial.measured.hashes_per_sec() <= best.measured.hashes_per_sec() * MIN_GAIN
        {
            break;
        }
        best = trial;
    }
    Ok((best, trials.done))
}

/// Tunes the GPU miner on `segment` (the default segment length in practice) within `budget`.
pub fn autotune_gpu(segment: &[u8], budget: TuneBudget) -> Result<Tuned, TuneError> {
    let miner = match GpuMiner::new(segment, DEFAULT_WORKGROUP_SIZE) {
        Err(GpuError::WorkgroupSize { max, .. }) => GpuMiner::new(segment, max)?,
        other => other?,
    };
    let adapter = miner.adapter().to_string();
    let mut bench = WgpuBench { miner, next: 0 };
    let (best, trials) = search_gpu(&mut bench, budget)?;
    let Knobs::Gpu {
        workgroup_size,
        batch,
    } = best.knobs
    else {
        unreachable!("the GPU search only runs GPU trials")
    };
    Ok(Tuned {
        profile: MiningProfile {
            class: device_class(DeviceKind::Gpu, &adapter).to_string(),
            device: DeviceKind::Gpu,
            adapter,
            segment_len: segment.len(),
            workgroup_size: Some(workgroup_size),
            batch: Some(batch),
            chunk: None,
            threads: None,
            hashes_per_sec: Some(best.measured.hashes_per_sec() as u64),
        },
        trials,
    })
}

/// The CPU search (module docs) over any timed runner: the chosen chunk's fastest trial and
/// every trial run, in order. Candidates run in [`CPU_ROUNDS`] interleaved rounds; another chunk
/// replaces the default only if its *slowest* trial beats the default's *fastest* by more than
/// [`MIN_GAIN`], so neither a burst of other load nor one lucky trial decides.
pub fn search_cpu(
    budget: TuneBudget,
    mut run: impl FnMut(u64, Duration) -> Measured,
) -> (Trial, Vec<Trial>) {
    let started = Instant::now();
    let order: Vec<u64> = std::iter::once(DEFAULT_CHUNK)
        .chain(CHUNK_CANDIDATES.into_iter().filter(|&c| c != DEFAULT_CHUNK))
        .collect();
    let mut trials: Vec<Trial> = Vec::new();
    'rounds: for _ in 0..CPU_ROUNDS {
        for &chunk in &order {
            if !trials.is_empty() && started.elapsed() >= budget.total {
                break 'rounds;
            }
            trials.push(Trial {
                knobs: Knobs::Cpu { chunk },
                measured: run(chunk, budget.trial),
            });
        }
    }
    let rate = |t: &Trial| t.measured.hashes_per_sec();
    let of = |chunk: u64| {
        trials
            .iter()
            .filter(move |t| t.knobs == Knobs::Cpu { chunk })
    };
    let fastest = |chunk: u64| {
        of(chunk)
            .copied()
            .max_by(|a, b| rate(a).total_cmp(&rate(b)))
    };
    let slowest = |chunk: u64| of(chunk).map(rate).fold(f64::MAX, f64::min);
    // Invariant: the first trial is the default's.
    let default = fastest(DEFAULT_CHUNK).expect("the default chunk is measured first");
    let best = order
        .iter()
        .filter(|&&chunk| slowest(chunk) > rate(&default) * MIN_GAIN)
        .filter_map(|&chunk| fastest(chunk))
        .max_by(|a, b| rate(a).total_cmp(&rate(b)))
        .unwrap_or(default);
    (best, trials)
}

/// Tunes the CPU miner on `segment` within `budget`.
pub fn autotune_cpu(segment: &[u8], budget: TuneBudget) -> Tuned {
    let threads = rayon::current_num_threads();
    // The same counters per call for every candidate, so per-call overhead compares equal.
    let call = cpu::call_counters(CHUNK_CANDIDATES[CHUNK_CANDIDATES.len() - 1], threads);
    let mut next = 0u64;
    let (best, trials) = search_cpu(budget, |chunk, duration| {
        let mine = |next: &mut u64| {
            cpu::mine_chunked(segment, TRIAL_MINER, &TRIAL_TARGET, *next, call, chunk);
            *next += call;
        };
        mine(&mut next);
        let start = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || start.elapsed() < duration {
            mine(&mut next);
            calls += 1;
        }
        Measured {
            counters: call * u64::from(calls),
            seconds: start.elapsed().as_secs_f64(),
            calls,
        }
    });
    let Knobs::Cpu { chunk } = best.knobs else {
        unreachable!("the CPU search only runs CPU trials")
    };
    Tuned {
        profile: MiningProfile {
            class: device_class(DeviceKind::Cpu, "").to_string(),
            device: DeviceKind::Cpu,
            adapter: cpu_name(),
            segment_len: segment.len(),
            workgroup_size: None,
            batch: None,
            chunk: Some(chunk),
            threads: Some(threads),
            hashes_per_sec: Some(best.measured.hashes_per_sec() as u64),
        },
        trials,
    }
}

/// The processor's model name (Linux `/proc/cpuinfo`) and SHA-256 backend, for provenance.
fn cpu_name() -> String {
    let mut text = String::new();
    let model = std::fs::File::open("/proc/cpuinfo")
        .and_then(|f| f.take(MAX_PROFILE_BYTES).read_to_string(&mut text))
        .ok()
        .and_then(|_| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let mut name = format!("{model} (sha256 {})", crate::crypto::hash::sha256_backend());
    name.truncate(profile::MAX_NAME_LEN);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose rate follows a formula: `peak` H/s at the best workgroup size, less at
    /// others, minus a fixed cost per dispatch. `run` takes no time, so budgets never run out
    /// unless they are zero.
    struct ModelGpu {
        peak: f64,
        best_wg: u32,
        /// Rate of the other workgroup sizes, as a fraction of `peak`.
        others: f64,
        /// Rate of the first run, as a fraction (other load on the machine during the probe).
        first: f64,
        per_dispatch: f64,
        max_wg: u32,
        max_groups: u32,
        runs: Vec<(u32, u32)>,
    }

    impl GpuBench for ModelGpu {
        fn max_workgroup_size(&self) -> u32 {
            self.max_wg
        }
        fn max_batch(&self, workgroup_size: u32) -> u32 {
            self.max_groups.saturating_mul(workgroup_size)
        }
        fn run(&mut self, wg: u32, batch: u32, _: Duration) -> Result<Measured, GpuError> {
            assert!(
                wg <= self.max_wg && batch <= self.max_batch(wg),
                "{wg} {batch}"
            );
            self.runs.push((wg, batch));
            let rate = if wg == self.best_wg {
                self.peak
            } else {
                self.peak * self.others
            };
            let rate = if self.runs.len() == 1 {
                rate * self.first
            } else {
                rate
            };
            let seconds = f64::from(batch) / rate + self.per_dispatch;
            Ok(Measured {
                counters: u64::from(batch),
                seconds,
                calls: 1,
            })
        }
    }

    fn model(peak: f64, best_wg: u32, per_dispatch: f64) -> ModelGpu {
        ModelGpu {
            peak,
            best_wg,
            others: 0.8,
            first: 1.0,
            per_dispatch,
            max_wg: 1024,
            max_groups: 65_535,
            runs: Vec::new(),
        }
    }

    fn chosen(trial: &Trial) -> (u32, u32) {
        match trial.knobs {
            Knobs::Gpu {
                workgroup_size,
                batch,
            } => (workgroup_size, batch),
            Knobs::Cpu { .. } => panic!("a CPU trial from the GPU search"),
        }
    }

    #[test]
    fn gpu_search_on_a_slow_device_keeps_dispatches_short() {
        // lavapipe-like: 15 M H/s, 0.2 ms per dispatch; 2^21 would take 140 ms.
        let mut gpu = model(15e6, 128, 2e-4);
        let (best, trials) = search_gpu(&mut gpu, TuneBudget::default()).unwrap();
        let (wg, batch) = chosen(&best);
        assert_eq!(wg, 128);
        assert!(BATCH_CANDIDATES.contains(&batch));
        assert!(f64::from(batch) / 15e6 < MAX_DISPATCH.as_secs_f64());
        assert!(trials.len() <= MAX_GPU_TRIALS);
        assert!(gpu.runs.iter().all(|&(_, b)| b < 1 << 21), "{:?}", gpu.runs);
    }

    #[test]
    fn gpu_search_on_a_fast_device_grows_the_batch_while_it_pays() {
        // H100-like guess: 5 G H/s, 0.2 ms per dispatch: the overhead amortises up to 2^24.
        let mut gpu = model(5e9, 512, 2e-4);
        let (best, trials) = search_gpu(&mut gpu, TuneBudget::default()).unwrap();
        assert_eq!(chosen(&best), (512, 1 << 24));
        assert!(trials.len() <= MAX_GPU_TRIALS);
        // Only the default is measured twice (its second chance against the challenger).
        let mut runs = gpu.runs.clone();
        runs.sort_unstable();
        runs.dedup();
        assert_eq!(runs.len() + 1, gpu.runs.len());
        // Without dispatch overhead nothing gains 5 %: the smallest batch stays.
        let mut flat = model(5e9, 256, 0.0);
        let (best, _) = search_gpu(&mut flat, TuneBudget::default()).unwrap();
        assert_eq!(chosen(&best), (256, 1 << 18));
        // A workgroup size 3 % faster than the default is noise: the default stays.
        let mut close = model(5e9, 512, 2e-4);
        close.others = 1.0 / 1.03;
        let (best, _) = search_gpu(&mut close, TuneBudget::default()).unwrap();
        assert_eq!(chosen(&best).0, DEFAULT_WORKGROUP_SIZE);
    }

    #[test]
    fn gpu_search_is_not_fooled_by_a_slow_probe() {
        // Other load slows the first trial by 30 %: no workgroup size or batch really differs.
        let mut gpu = model(10e6, 256, 0.0);
        (gpu.others, gpu.first) = (1.0, 0.7);
        let (best, trials) = search_gpu(&mut gpu, TuneBudget::default()).unwrap();
        assert_eq!(
            chosen(&best),
            (DEFAULT_WORKGROUP_SIZE, BATCH_CANDIDATES[0]),
            "{trials:?}"
        );
    }

    #[test]
    fn gpu_search_respects_the_adapter_limits_and_the_budget() {
        let mut narrow = model(1e9, 512, 1e-4);
        narrow.max_wg = 128;
        narrow.max_groups = 1 << 14;
        let (best, _) = search_gpu(&mut narrow, TuneBudget::default()).unwrap();
        let (wg, batch) = chosen(&best);
        assert!(wg <= 128 && batch <= (1 << 14) * wg, "{wg} {batch}");
        let mut tiny = model(1e9, 32, 1e-4);
        tiny.max_wg = 32;
        let (best, _) = search_gpu(&mut tiny, TuneBudget::default()).unwrap();
        assert_eq!(chosen(&best).0, 32);
        // A spent budget still measures once and returns that.
        let mut spent = model(1e9, 256, 1e-4);
        let budget = TuneBudget {
            total: Duration::ZERO,
            trial: Duration::ZERO,
        };
        let (best, trials) = search_gpu(&mut spent, budget).unwrap();
        assert_eq!(trials.len(), 1);
        assert_eq!(chosen(&best), (DEFAULT_WORKGROUP_SIZE, BATCH_CANDIDATES[0]));
    }

    #[test]
    fn cpu_search_keeps_the_default_chunk_unless_another_is_clearly_faster() {
        let rate = |table: [(u64, f64); 4]| {
            move |chunk: u64, _: Duration| Measured {
                counters: table.iter().find(|(c, _)| *c == chunk).unwrap().1 as u64,
                seconds: 1.0,
                calls: 1,
            }
        };
        let noise = [
            (1 << 10, 10.3e6),
            (1 << 12, 10.2e6),
            (1 << 14, 10e6),
            (1 << 16, 10.4e6),
        ];
        let (best, trials) = search_cpu(TuneBudget::default(), rate(noise));
        assert_eq!(
            best.knobs,
            Knobs::Cpu {
                chunk: DEFAULT_CHUNK
            }
        );
        assert_eq!(trials.len(), CHUNK_CANDIDATES.len() * CPU_ROUNDS);
        // Other load slows the default's first trial by 10 %: its second trial still counts.
        let mut runs = 0;
        let burst = |chunk: u64, _: Duration| {
            runs += 1;
            let rate = match chunk {
                DEFAULT_CHUNK if runs == 1 => 9e6,
                DEFAULT_CHUNK => 10e6,
                _ => 10.3e6,
            };
            Measured {
                counters: rate as u64,
                seconds: 1.0,
                calls: 1,
            }
        };
        let (best, _) = search_cpu(TuneBudget::default(), burst);
        assert_eq!(
            best.knobs,
            Knobs::Cpu {
                chunk: DEFAULT_CHUNK
            }
        );
        let real = [
            (1 << 10, 9e6),
            (1 << 12, 11e6),
            (1 << 14, 10e6),
            (1 << 16, 12e6),
        ];
        let (best, _) = search_cpu(TuneBudget::default(), rate(real));
        assert_eq!(best.knobs, Knobs::Cpu { chunk: 1 << 16 });
        let spent = TuneBudget {
            total: Duration::ZERO,
            trial: Duration::ZERO,
        };
        let (best, trials) = search_cpu(spent, rate(real));
        assert_eq!(
            (trials.len(), best.knobs),
            (
                1,
                Knobs::Cpu {
                    chunk: DEFAULT_CHUNK
                }
            )
        );
    }
}
