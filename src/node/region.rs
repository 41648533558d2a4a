//! Segment 0: the regionchain's own system transactions. Today that is CN-set governance
//! ([`crate::consensus::governance`]): a valid change becomes pending, the block before its
//! effective height announces the new keys in `next_cn_set`, and the set switches there.

use crate::consensus::governance::CnSetChange;
use crate::consensus::selection::CnSet;
use crate::crypto::bls::PublicKeyBytes;
use crate::crypto::hash::{merkle_root, sha256_concat};
use crate::exec::InvalidReason;
use crate::types::codec::canonical;
use crate::types::{ChainId, Height, Segment, SegmentCommitment};
use alloy_primitives::B256;
use std::sync::Arc;

/// The regionchain state that consensus depends on.
#[derive(Debug, Clone)]
pub struct RegionState {
    pub region: ChainId,
    /// The CN set in force.
    pub set: Arc<CnSet>,
    /// An approved change not yet in force: (effective height, new keys).
    pub pending: Option<(Height, Vec<PublicKeyBytes>)>,
    pub root: B256,
}

/// The outcome of executing segment 0 of one block.
#[derive(Debug, Clone)]
pub struct RegionExecution {
    pub commitment: SegmentCommitment,
    /// The pending change after this segment.
    pub pending: Option<(Height, Vec<PublicKeyBytes>)>,
    pub root: B256,
}

impl RegionState {
    pub fn new(region: ChainId, set: Arc<CnSet>) -> Self {
        Self {
            region,
            set,
            pending: None,
            root: B256::ZERO,
        }
    }

    /// Keys block `height`'s header must announce: the pending set when it takes effect at
    /// the next height, nothing otherwise.
    pub fn expected_next_set(&self, height: Height) -> Vec<PublicKeyBytes> {
        match &self.pending {
            Some((effective, keys)) if *effective == height.next() => keys.clone(),
            _ => Vec::new(),
        }
    }

    /// Executes segment 0 of block `height` without changing this state.
    pub fn execute(&self, height: Height, segment: &Segment) -> RegionExecution {
        let mut pending = self.pending.clone();
        let mut root = self.root;
        let receipts: Vec<B256> = segment
            .txs
            .iter()
            .map(|raw| {
                let outcome = CnSetChange::from_system_tx(raw).and_then(|change| {
                    if pending.is_some() {
                        return Err(crate::consensus::governance::GovernanceError::AlreadyPending);
                    }
                    change.verify(self.region, &self.set, height)?;
                    root = sha256_concat(&[root.as_slice(), &canonical(&change)]);
                    pending = Some((change.effective, change.new_set));
                    Ok(())
                });
                match outcome {
                    Ok(()) => sha256_concat(&[&[1u8]]),
                    Err(e) => {
                        tracing::debug!(error = %e, %height, "system transaction marked invalid");
                        sha256_concat(&[&[0u8, InvalidReason::Unsupported as u8]])
                    }
                }
            })
            .collect();
        RegionExecution {
            commitment: SegmentCommitment {
                chain_id: self.region,
                tx_count: segment.txs.len() as u32,
                tx_root: segment.tx_root(),
                receipts_root: merkle_root(&receipts),
                state_root: root,
            },
            pending,
            root,
        }
    }

    /// Applies a committed block's segment 0 and header announcement.
    pub fn apply(&mut self, execution: &RegionExecution, announced: &[PublicKeyBytes]) {
        self.root = execution.root;
        self.pending = execution.pending.clone();
        if !announced.is_empty() {
            match CnSet::from_bytes(announced) {
                Ok(set) => {
                    tracing::info!(cns = set.len(), "CN set changes at the next height");
                    self.set = Arc::new(set);
                    self.pending = None;
                }
                // Invariant: validation compared the announcement with the verified pending
                // change, whose keys were validated; a failure here is a bug worth seeing.
                Err(e) => tracing::error!(error = %e, "announced CN set does not parse"),
            }
        }
    }
}
