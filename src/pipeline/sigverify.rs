//! The sigverify stage: decodes raw Ethereum transactions and recovers their senders in rayon
//! batches, passing only verified transactions downstream (to the mempool).
//!
//! Rejections are counted by reason so an operator can tell spam (bad signatures) from client
//! bugs (wrong encoding, missing replay protection). A transaction the pool already holds, or
//! one recently included, is dropped by its hash before recovery: resends and re-gossip (or a
//! peer replaying old transactions to burn this node's CPU) cost a Keccak hash, not a
//! signature recovery.

use super::stage::Stage;
use crate::crypto::hash::keccak256;
use crate::crypto::tx::{decode_recover_batch, DecodeRules, RecoveredTx, TxError};
use crate::link::LinkSender;
use crate::mempool::Mempool;
use alloy_primitives::{Bytes, B256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A batch of raw transactions from ingress (RPC or peer gossip).
pub type RawTxBatch = Vec<Bytes>;

/// Counters of the sigverify stage.
#[derive(Debug, Default)]
pub struct SigVerifyStats {
    pub verified: AtomicU64,
    pub rejected_signature: AtomicU64,
    pub rejected_encoding: AtomicU64,
    /// Dropped before recovery: pooled or recently included already.
    pub known: AtomicU64,
}

impl SigVerifyStats {
    fn count_rejection(&self, error: &TxError) {
        let counter = match error {
            TxError::InvalidSignature => &self.rejected_signature,
            _ => &self.rejected_encoding,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (verified, rejected for signature, rejected for encoding or policy, known).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        (
            self.verified.load(Ordering::Relaxed),
            self.rejected_signature.load(Ordering::Relaxed),
            self.rejected_encoding.load(Ordering::Relaxed),
            self.known.load(Ordering::Relaxed),
        )
    }
}

/// Decode + recover, batch in, verified batch out.
pub struct SigVerify {
    rules: DecodeRules,
    output: LinkSender<Vec<RecoveredTx>>,
    stats: Arc<SigVerifyStats>,
    system: Option<crate::chain::app::CnState>,
    pool: Option<Arc<Mutex<Mempool>>>,
}

impl SigVerify {
    pub fn new(
        rules: DecodeRules,
        output: LinkSender<Vec<RecoveredTx>>,
        stats: Arc<SigVerifyStats>,
    ) -> Self {
        Self {
            rules,
            output,
            stats,
            system: None,
            pool: None,
        }
    }

    /// Hands regionchain system transactions (which carry their own BLS approvals, checked
    /// at execution) to the node's system queue instead of secp256k1 recovery, and drops
    /// transactions the node's pool already knows.
    pub fn with_node_state(self, shared: crate::chain::app::CnState) -> Self {
        let pool = Arc::clone(&shared.pool);
        Self {
            system: Some(shared),
            ..self.dropping_known(pool)
        }
    }

    /// Drops transactions that `pool` holds or recently included before recovering them.
    pub fn dropping_known(mut self, pool: Arc<Mutex<Mempool>>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Drops from `batch` what the pool holds or recently included, counting it.
    fn drop_known(&self, batch: &mut RawTxBatch) {
        let Some(pool) = &self.pool else { return };
        // Oversized raws are left for decoding to refuse: a peer cannot make this hash them.
        let hashes: Vec<Option<B256>> = batch
            .iter()
            .map(|raw| (raw.len() <= self.rules.max_bytes).then(|| keccak256(raw)))
            .collect();
        let known: Vec<bool> = {
            let pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            hashes
                .iter()
                .map(|h| h.as_ref().is_some_and(|h| pool.knows(h)))
                .collect()
        };
        let mut known = known.into_iter();
        let before = batch.len();
        batch.retain(|_| !known.next().unwrap_or(false));
        self.stats
            .known
            .fetch_add((before - batch.len()) as u64, Ordering::Relaxed);
    }
}

impl Stage for SigVerify {
    type Input = RawTxBatch;

    fn name(&self) -> &'static str {
        "sigverify"
    }

    fn handle(&mut self, mut batch: RawTxBatch) -> anyhow::Result<()> {
        let span = tracing::trace_span!("sigverify_batch", txs = batch.len());
        let _entered = span.enter();
        if let Some(shared) = &self.system {
            batch.retain(|raw| {
                let system = crate::chain::app::is_system_tx(raw);
                if system && !shared.add_system_tx(raw.clone()) {
                    self.stats.rejected_encoding.fetch_add(1, Ordering::Relaxed);
                }
                !system
            });
        }
        self.drop_known(&mut batch);
        let mut verified = Vec::with_capacity(batch.len());
        for result in decode_recover_batch(&batch, &self.rules) {
            match result {
                Ok(tx) => verified.push(tx),
                Err(e) => self.stats.count_rejection(&e),
            }
        }
        self.stats
            .verified
            .fetch_add(verified.len() as u64, Ordering::Relaxed);
        if !verified.is_empty() {
            self.output.send(verified)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tx::{Eip1559Tx, Transaction, TxKind};
    use crate::link::link;
    use crate::types::ChainId;
    use alloy_primitives::{Address, U256};

    const CHAIN: ChainId = ChainId(1001);

    fn transfer(nonce: u64) -> RecoveredTx {
        let tx = Transaction::Eip1559(Eip1559Tx {
            chain_id: CHAIN,
            nonce,
            max_priority_fee_per_gas: 1,
            max_fee_per_gas: 2_000_000_000,
            gas_limit: 21_000,
            to: TxKind::Call(Address::repeat_byte(0xee)),
            value: U256::from(1u64),
            input: Bytes::new(),
            access_list: Default::default(),
        });
        RecoveredTx::recover(tx.sign(&[7; 32]).unwrap()).unwrap()
    }

    /// A pooled or recently included transaction that arrives again is dropped by its hash and
    /// never reaches recovery; a new one is recovered and passed on.
    #[test]
    fn pooled_and_included_transactions_are_dropped_before_recovery() {
        let (pooled, included, fresh) = (transfer(0), transfer(1), transfer(2));
        let mut pool = Mempool::new(Default::default(), [CHAIN]);
        pool.insert(pooled.clone(), 0).unwrap();
        pool.included(included.tx().hash());
        let (out, received) = link("sigverify_out", 4);
        let stats = Arc::new(SigVerifyStats::default());
        let mut stage = SigVerify::new(DecodeRules::default(), out, Arc::clone(&stats))
            .dropping_known(Arc::new(Mutex::new(pool)));
        let raw = |tx: &RecoveredTx| tx.tx().raw().clone();
        stage
            .handle(vec![raw(&pooled), raw(&included), raw(&fresh)])
            .unwrap();
        let passed = received.recv().unwrap();
        assert_eq!(passed.len(), 1);
        assert_eq!(passed[0].tx().hash(), fresh.tx().hash());
        assert_eq!(stats.totals(), (1, 0, 0, 2));
    }
}
