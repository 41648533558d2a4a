//! The pool stage: inserts verified transactions into the mempool, checking nonces against
//! committed state, and counts refusals by reason.

use super::stage::Stage;
use crate::chain::app::CnState;
use crate::crypto::tx::RecoveredTx;
use crate::exec::StateRead;
use crate::mempool::MempoolError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters of the pool stage.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub accepted: AtomicU64,
    pub known: AtomicU64,
    /// Refused as already spent (`nonce too low`).
    pub nonce_too_low: AtomicU64,
    /// Refused as too far ahead of the sender's pending run (`nonce too high`).
    pub nonce_too_high: AtomicU64,
    /// Refused for a full pool, queue or account.
    pub full: AtomicU64,
    /// Refused for any other rule (underpriced replacement, unknown chain, no chain id).
    pub other: AtomicU64,
}

impl PoolStats {
    fn counter(&self, outcome: &Result<Option<RecoveredTx>, MempoolError>) -> &AtomicU64 {
        use MempoolError as E;
        match outcome {
            Ok(_) => &self.accepted,
            Err(E::AlreadyKnown) => &self.known,
            Err(E::NonceTooLow { .. }) => &self.nonce_too_low,
            Err(E::NonceTooHigh { .. }) => &self.nonce_too_high,
            Err(E::PoolFull | E::AccountFull(_)) => &self.full,
            Err(_) => &self.other,
        }
    }

    /// Refusals by reason, as the metric labels them.
    pub fn refusals(&self) -> [(&'static str, u64); 5] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("known", load(&self.known)),
            ("nonce_too_low", load(&self.nonce_too_low)),
            ("nonce_too_high", load(&self.nonce_too_high)),
            ("full", load(&self.full)),
            ("other", load(&self.other)),
        ]
    }
}

pub struct PoolInsert {
    pub shared: CnState,
    pub stats: Arc<PoolStats>,
}

impl Stage for PoolInsert {
    type Input = Vec<RecoveredTx>;

    fn name(&self) -> &'static str {
        "pool"
    }

    fn handle(&mut self, batch: Vec<RecoveredTx>) -> anyhow::Result<()> {
        let state = &self.shared.state;
        let nonces = batch
            .iter()
            .map(|tx| match tx.tx().chain_id() {
                Some(chain) => state.nonce(chain, &tx.sender()),
                None => Ok(0),
            })
            .collect::<Result<Vec<u64>, _>>()?;
        let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        for (tx, nonce) in batch.into_iter().zip(nonces) {
            let outcome = pool.insert(tx, nonce);
            self.stats.counter(&outcome).fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal is counted under its own reason.
    #[test]
    fn refusals_are_counted_by_reason() {
        let stats = PoolStats::default();
        let refusals: [MempoolError; 6] = [
            MempoolError::AlreadyKnown,
            MempoolError::NonceTooLow {
                expected: 2,
                got: 1,
            },
            MempoolError::NonceTooHigh {
                expected: 2,
                got: 9_000,
                limit: 1_024,
            },
            MempoolError::PoolFull,
            MempoolError::AccountFull(4_096),
            MempoolError::MissingChainId,
        ];
        for e in refusals {
            stats.counter(&Err(e)).fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(
            stats.refusals(),
            [
                ("known", 1),
                ("nonce_too_low", 1),
                ("nonce_too_high", 1),
                ("full", 2),
                ("other", 1)
            ]
        );
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 0);
    }
}
