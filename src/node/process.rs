//! What every long-running `kaon` process shares: a tokio runtime whose SIGINT/SIGTERM watch
//! sets a stop flag, a wait for that flag, and a watch on the datadir's free space.

use crate::storage::space;
use anyhow::Context;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
