//! What every long-running `kaon` process shares: a tokio runtime whose SIGINT/SIGTERM watch
//! sets a stop flag, and a wait for that flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
