//! The CN's application for consensus: builds proposals from the mempool, re-executes
//! proposals from others, and applies committed blocks to state and pool.
//!
//! Execution results are kept by the header commitments they produced, so a block this node
//! built or validated is applied at commit without executing it again.

use crate::consensus::machine::{Application, Tip};
use crate::consensus::proposal::BlockBody;
use crate::crypto::hash::{keccak256, sha256};
use crate::crypto::tx::{decode_recover_batch, DecodeRules, RecoveredTx};
use crate::exec::{Executor, MemoryState, SegmentExecution, TransferExecutor};
use crate::mempool::Mempool;
use crate::types::codec::canonical;
use crate::types::{Block, ChainId, Height, Segment, SegmentCommitment};
use alloy_primitives::B256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Executions kept for blocks not yet committed (a few rounds' worth of proposals).
const MAX_PENDING_EXECUTIONS: usize = 64;

/// Shared handles of one CN's state and pool.
#[derive(Clone)]
pub struct CnState {
    pub pool: Arc<Mutex<Mempool>>,
    pub state: Arc<RwLock<MemoryState>>,
}

/// Mempool + executor behind [`Application`].
pub struct CnApp {
    region: ChainId,
    shared: CnState,
    executor: TransferExecutor,
    max_txs_per_segment: usize,
    executed: HashMap<B256, Vec<SegmentExecution>>,
}

/// Wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn commitments_key(commitments: &[SegmentCommitment]) -> B256 {
    sha256(&canonical(&commitments.to_vec()))
}

impl CnApp {
    pub fn new(region: ChainId, shared: CnState, max_txs_per_segment: usize) -> Self {
        Self {
            region,
            shared,
            executor: TransferExecutor,
            max_txs_per_segment,
            executed: HashMap::new(),
        }
    }

    fn execute(&self, segments: &[(Segment, Vec<Option<RecoveredTx>>)]) -> Vec<SegmentExecution> {
        let state = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        self.executor.execute_block(&*state, segments)
    }

    fn remember(&mut self, key: B256, executions: Vec<SegmentExecution>) {
        if self.executed.len() >= MAX_PENDING_EXECUTIONS {
            self.executed.clear();
        }
        self.executed.insert(key, executions);
    }

    /// Senders of a received block's transactions: from the pool when this node has seen the
    /// transaction (already verified at ingress), else recovered now in a rayon batch.
    fn senders(&self, block: &Block) -> Vec<(Segment, Vec<Option<RecoveredTx>>)> {
        let pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        let known: Vec<Vec<Option<RecoveredTx>>> = block
            .segments
            .iter()
            .map(|s| {
                s.txs
                    .iter()
                    .map(|raw| pool.get(&keccak256(raw)).cloned())
                    .collect()
            })
            .collect();
        drop(pool);
        block
            .segments
            .iter()
            .zip(known)
            .map(|(segment, mut txs)| {
                let missing: Vec<usize> = (0..txs.len()).filter(|&i| txs[i].is_none()).collect();
                if !missing.is_empty() {
                    let raws: Vec<&[u8]> =
                        missing.iter().map(|&i| segment.txs[i].as_ref()).collect();
                    let recovered = decode_recover_batch(&raws, &DecodeRules::default());
                    for (i, r) in missing.into_iter().zip(recovered) {
                        txs[i] = r.ok();
                    }
                }
                (segment.clone(), txs)
            })
            .collect()
    }

    /// Applies a committed block: state writes, pool nonces. Re-executes only if this node
    /// never executed the block (e.g. it arrived through sync).
    pub fn commit(&mut self, block: &Block) {
        let key = commitments_key(&block.header().segments);
        let executions = match self.executed.remove(&key) {
            Some(e) => e,
            None => self.execute(&self.senders(block)),
        };
        self.executed.clear();
        let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
        let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        for e in &executions {
            state.apply(&e.diff);
            for (sender, next_nonce) in &e.nonces {
                pool.committed(e.diff.chain_id, *sender, *next_nonce);
            }
        }
    }
}

impl Application for CnApp {
    fn build(&mut self, _height: Height, _parent: &Tip) -> BlockBody {
        let pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        let mut segments = vec![(
            Segment {
                chain_id: self.region,
                txs: Vec::new(),
            },
            Vec::new(),
        )];
        for chain in pool.active_chains() {
            let txs = pool.ready(chain, self.max_txs_per_segment);
            let raw = txs.iter().map(|t| t.tx().raw().clone()).collect();
            segments.push((
                Segment {
                    chain_id: chain,
                    txs: raw,
                },
                txs.into_iter().map(Some).collect(),
            ));
        }
        drop(pool);
        let executions = self.execute(&segments);
        let commitments: Vec<SegmentCommitment> =
            executions.iter().map(|e| e.commitment.clone()).collect();
        self.remember(commitments_key(&commitments), executions);
        BlockBody {
            timestamp_ms: now_ms(),
            segments: segments.into_iter().map(|(s, _)| s).collect(),
            commitments,
        }
    }

    fn validate(&mut self, block: &Block, _parent: &Tip) -> Result<(), String> {
        let header = block.header();
        let key = commitments_key(&header.segments);
        if self.executed.contains_key(&key) {
            return Ok(());
        }
        match block.segments.first() {
            Some(s0) if s0.chain_id == self.region => {}
            _ => return Err("segment 0 must be the regionchain's".into()),
        }
        let executions = self.execute(&self.senders(block));
        for (k, (e, c)) in executions.iter().zip(&header.segments).enumerate() {
            if e.commitment != *c {
                return Err(format!(
                    "segment {k} (chain {}): re-execution disagrees with the header",
                    c.chain_id
                ));
            }
        }
        self.remember(key, executions);
        Ok(())
    }
}
