//! What every long-running `kaon` process shares: a tokio runtime whose SIGINT/SIGTERM watch
//! sets a stop flag, a wait for that flag, a watch on the datadir's free space, and the
//! process's memory setup.

use crate::storage::space;
use anyhow::Context;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Set to `1` to keep transparent huge pages (see [`huge_pages`]).
pub const THP_ENV: &str = "KAON_THP";

/// What [`huge_pages`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Kept: the operator asked (`KAON_THP=1`), or the platform has no per-process switch.
    Kept,
    /// Turned off for this process.
    Off,
    /// The kernel refused to turn them off (the call's error number).
    Refused(i32),
}

/// Turns transparent huge pages off for this process unless `KAON_THP=1`. The allocator
/// (mimalloc) asks for huge pages on its arenas, and the kernel then zeroes a whole 2 MiB page
/// on the first touch of any byte in it: a node churning through network frames, decoded
/// transactions and pool entries spent a fifth of its CPU in that zeroing, and committed
/// 43k instead of 61–64k payloads/s in `kaon bench consensus` (docs/benchmarks.md). Called
/// first in `main`; it applies to the pages the process faults in from then on.
pub fn huge_pages() -> HugePages {
    if std::env::var(THP_ENV).is_ok_and(|v| v == "1") {
        return HugePages::Kept;
    }
    turn_huge_pages_off()
}

#[cfg(target_os = "linux")]
fn turn_huge_pages_off() -> HugePages {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    match rc {
        0 => HugePages::Off,
        _ => HugePages::Refused(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
    }
}

/// Elsewhere there is no per-process switch (and no transparent huge pages as Linux has them).
#[cfg(not(target_os = "linux"))]
fn turn_huge_pages_off() -> HugePages {
    HugePages::Kept
}

/// Whether this process has transparent huge pages turned off (`PR_GET_THP_DISABLE`).
#[cfg(target_os = "linux")]
pub fn huge_pages_off() -> bool {
    // SAFETY: PR_GET_THP_DISABLE takes no pointer and changes nothing.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

/// How often a running node looks at its free disk space.
const DISK_CHECK: Duration = Duration::from_secs(1);

/// A node process's runtime and its stop flag.
pub struct Process {
    pub rt: tokio::runtime::Runtime,
    /// Set by SIGINT/SIGTERM (or by the caller).
    pub stop: Arc<AtomicBool>,
}

impl Process {
    /// A two-worker runtime with the signal watch running.
    pub fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_signal_watch(&rt, Arc::clone(&stop));
        Ok(Self { rt, stop })
    }

    /// Refuses to go on unless `min_free_mib` MiB are free under `datadir`, then checks again
    /// every [`DISK_CHECK`] until stopped: a node that falls below it stops loudly (exit status
    /// 70, the reason logged) before its writes fail.
    pub fn watch_disk(&self, datadir: &Path, min_free_mib: u64) -> anyhow::Result<()> {
        std::fs::create_dir_all(datadir)
            .with_context(|| format!("creating {}", datadir.display()))?;
        space::ensure_free(datadir, min_free_mib)?;
        let (datadir, stop) = (datadir.to_path_buf(), Arc::clone(&self.stop));
        crate::pipeline::stage::spawn_critical("disk-space", move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(DISK_CHECK);
                space::ensure_free(&datadir, min_free_mib)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Blocks until the stop flag is set.
    pub fn wait(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::info!("shutting down");
    }
}

/// Sets `stop` on SIGINT or SIGTERM.
pub fn spawn_signal_watch(rt: &tokio::runtime::Runtime, stop: Arc<AtomicBool>) {
    rt.spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod thp_tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_turned_off_for_the_process_by_default() {
        if std::env::var(THP_ENV).is_ok() {
            return; // the operator's choice is under test elsewhere: this run kept them
        }
        assert_eq!(huge_pages(), HugePages::Off);
        assert!(huge_pages_off());
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        assert!(
            status.lines().any(|l| l == "THP_enabled:\t0"),
            "the kernel still reports huge pages on"
        );
    }
}
