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
    pub rejected: AtomicU64,
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
            let counter = match pool.insert(tx, nonce) {
                Ok(_) => &self.stats.accepted,
                Err(MempoolError::AlreadyKnown) => &self.stats.known,
                Err(_) => &self.stats.rejected,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
