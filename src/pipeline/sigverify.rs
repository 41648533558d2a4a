//! The sigverify stage: decodes raw Ethereum transactions and recovers their senders in rayon
//! batches, passing only verified transactions downstream (to the mempool).
//!
//! Rejections are counted by reason so an operator can tell spam (bad signatures) from client
//! bugs (wrong encoding, missing replay protection).

use super::stage::Stage;
use crate::crypto::tx::{decode_recover_batch, DecodeRules, RecoveredTx, TxError};
use crate::link::LinkSender;
use alloy_primitives::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A batch of raw transactions from ingress (RPC or peer gossip).
pub type RawTxBatch = Vec<Bytes>;

/// Counters of the sigverify stage.
#[derive(Debug, Default)]
pub struct SigVerifyStats {
    pub verified: AtomicU64,
    pub rejected_signature: AtomicU64,
    pub rejected_encoding: AtomicU64,
}

impl SigVerifyStats {
    fn count_rejection(&self, error: &TxError) {
        let counter = match error {
            TxError::InvalidSignature => &self.rejected_signature,
            _ => &self.rejected_encoding,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (verified, rejected for signature, rejected for encoding or policy).
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.verified.load(Ordering::Relaxed),
            self.rejected_signature.load(Ordering::Relaxed),
            self.rejected_encoding.load(Ordering::Relaxed),
        )
    }
}

/// Decode + recover, batch in, verified batch out.
pub struct SigVerify {
    rules: DecodeRules,
    output: LinkSender<Vec<RecoveredTx>>,
    stats: Arc<SigVerifyStats>,
    system: Option<crate::chain::app::CnState>,
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
        }
    }

    /// Hands regionchain system transactions (which carry their own BLS approvals, checked
    /// at execution) to the node's system queue instead of secp256k1 recovery.
    pub fn with_system_queue(mut self, shared: crate::chain::app::CnState) -> Self {
        self.system = Some(shared);
        self
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
