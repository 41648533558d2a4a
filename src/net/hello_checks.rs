//! The bounded pool for BLS checks of hellos from peers not yet authenticated.
//!
//! Anyone can open a QUIC connection and send a hello; checking it costs a point decompression,
//! a subgroup check and a pairing — milliseconds of CPU. Run on the async workers, a flood of
//! hellos would stall every connection's I/O; run without a bound, it would queue unbounded
//! work. So each check runs on the blocking pool, at most [`HelloChecks::limit`] at once, and a
//! connection whose hello finds no free slot is refused (its peer retries later) instead of
//! waiting.

use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Semaphore;

/// Hello checks in flight at once per node: a few per core, enough that honest reconnects
/// never wait.
pub const DEFAULT_MAX_HELLO_CHECKS: usize = 16;

/// Every check slot is taken.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("{0} hello checks already in flight")]
pub struct Busy(pub usize);

/// A bounded number of hello checks in flight.
#[derive(Debug)]
pub struct HelloChecks {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl HelloChecks {
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Checks in flight at most.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Runs `check` on the blocking pool if a slot is free now; [`Busy`] without waiting if not.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Busy(self.limit))?;
        let done = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            check()
        })
        .await;
        // A panicking check is a refused hello, like any other failure to verify.
        done.map_err(|_| Busy(self.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_beyond_the_limit_are_refused_at_once_and_run_off_the_async_worker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let checks = Arc::new(HelloChecks::new(1));
            let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let worker = std::thread::current().id();
            let busy = Arc::clone(&checks);
            let first = tokio::spawn(async move {
                busy.run(move || {
                    let _ = started_tx.send(());
                    // Held until the test releases it.
                    let _ = hold_rx.recv();
                    std::thread::current().id()
                })
                .await
            });
            started_rx.await.unwrap();
            assert_eq!(
                checks.run(|| ()).await,
                Err(Busy(1)),
                "the one slot is held"
            );
            hold_tx.send(()).unwrap();
            let ran_on = first.await.unwrap().unwrap();
            assert_ne!(ran_on, worker, "the check ran on the blocking pool");
            assert_eq!(checks.run(|| 7).await, Ok(7), "the slot is free again");
        });
    }
}
