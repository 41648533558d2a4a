//! The CN's application for consensus: builds proposals from the pools, re-executes proposals
//! from others, and applies committed blocks to state and pools.
//!
//! Segment 0 is the regionchain's (system transactions, [`super::region`]); the others are one
//! per active servicechain and execute in parallel. Execution results are kept by the header
//! commitments they produced, so a block this node built or validated is applied at commit
//! without executing it again.

use super::region::{RegionExecution, RegionState};
use super::servicechain::DEFAULT_CHECKPOINT_INTERVAL;
use crate::consensus::governance::SYSTEM_TX_PREFIX;
use crate::consensus::machine::{Application, Tip};
use crate::consensus::proposal::BlockBody;
use crate::consensus::selection::CnSet;
use crate::crypto::hash::{keccak256, sha256};
use crate::crypto::tx::{decode_recover_batch, DecodeRules, RecoveredTx};
use crate::exec::{Executor, MemoryState, SegmentExecution, TransferExecutor};
use crate::mempool::Mempool;
use crate::types::codec::canonical;
use crate::types::{Block, ChainId, Height, Segment, SegmentCommitment};
use alloy_primitives::{Bytes, B256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Executions kept for blocks not yet committed (a few rounds' worth of proposals).
const MAX_PENDING_EXECUTIONS: usize = 64;
/// System transactions waiting for segment 0 (governance is rare; a flood is dropped).
pub const MAX_SYSTEM_TXS: usize = 64;

/// Shared handles of one CN's state and pools.
#[derive(Clone)]
pub struct CnState {
    pub pool: Arc<Mutex<Mempool>>,
    pub state: Arc<RwLock<MemoryState>>,
    /// Regionchain system transactions waiting for a proposal.
    pub system: Arc<Mutex<Vec<Bytes>>>,
}

impl CnState {
    /// Queues a system transaction once; false if the queue is full.
    pub fn add_system_tx(&self, raw: Bytes) -> bool {
        let mut system = self.system.lock().unwrap_or_else(|e| e.into_inner());
        if system.contains(&raw) {
            return true;
        }
        if system.len() >= MAX_SYSTEM_TXS {
            return false;
        }
        system.push(raw);
        true
    }
}

/// Whether raw bytes are a regionchain system transaction rather than an Ethereum one.
pub fn is_system_tx(raw: &[u8]) -> bool {
    raw.first() == Some(&SYSTEM_TX_PREFIX)
}

/// Everything executing one block produced.
struct BlockExecution {
    region: RegionExecution,
    chains: Vec<SegmentExecution>,
}

/// Pools + executors behind [`Application`].
pub struct CnApp {
    shared: CnState,
    region: RegionState,
    executor: TransferExecutor,
    max_txs_per_segment: usize,
    executed: HashMap<B256, BlockExecution>,
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
    pub fn new(
        region: ChainId,
        set: Arc<CnSet>,
        shared: CnState,
        max_txs_per_segment: usize,
    ) -> Self {
        Self {
            shared,
            region: RegionState::new(region, set, DEFAULT_CHECKPOINT_INTERVAL),
            executor: TransferExecutor,
            max_txs_per_segment,
            executed: HashMap::new(),
        }
    }

    /// The CN set in force for the next height to be decided.
    pub fn cn_set(&self) -> &Arc<CnSet> {
        &self.region.set
    }

    fn execute(
        &self,
        height: Height,
        segments: &[(Segment, Vec<Option<RecoveredTx>>)],
    ) -> BlockExecution {
        let region = self.region.execute(height, &segments[0].0);
        let state = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        let chains = self.executor.execute_block(&*state, &segments[1..]);
        BlockExecution { region, chains }
    }

    fn commitments(execution: &BlockExecution) -> Vec<SegmentCommitment> {
        std::iter::once(execution.region.commitment.clone())
            .chain(execution.chains.iter().map(|e| e.commitment.clone()))
            .collect()
    }

    fn remember(&mut self, key: B256, execution: BlockExecution) {
        if self.executed.len() >= MAX_PENDING_EXECUTIONS {
            self.executed.clear();
        }
        self.executed.insert(key, execution);
    }

    /// Senders of a received block's servicechain transactions: from the pool when this node
    /// has seen the transaction (already verified at ingress), else recovered now on rayon.
    fn senders(&self, block: &Block) -> Vec<(Segment, Vec<Option<RecoveredTx>>)> {
        let pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        let known: Vec<Vec<Option<RecoveredTx>>> = block
            .segments
            .iter()
            .enumerate()
            .map(|(k, s)| match k {
                0 => Vec::new(),
                _ => s
                    .txs
                    .iter()
                    .map(|raw| pool.get(&keccak256(raw)).cloned())
                    .collect(),
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

    /// Applies a committed block: regionchain state (and a CN-set switch it announces),
    /// servicechain state, pool nonces. Re-executes only a block this node never executed.
    pub fn commit(&mut self, block: &Block) {
        let header = block.header();
        let key = commitments_key(&header.segments);
        let execution = match self.executed.remove(&key) {
            Some(e) => e,
            None => self.execute(header.height, &self.senders(block)),
        };
        self.executed.clear();
        self.region.apply(&execution.region, header);
        let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
        let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        for e in &execution.chains {
            state.apply(&e.diff);
            for (sender, next_nonce) in &e.nonces {
                pool.committed(e.diff.chain_id, *sender, *next_nonce);
            }
        }
        if let Some(s0) = block.segments.first() {
            let mut system = self.shared.system.lock().unwrap_or_else(|e| e.into_inner());
            system.retain(|tx| !s0.txs.contains(tx));
        }
    }
}

impl Application for CnApp {
    fn build(&mut self, height: Height, _parent: &Tip) -> BlockBody {
        let system = self
            .shared
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        let mut segments = vec![(
            Segment {
                chain_id: self.region.region,
                txs: system,
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
        let execution = self.execute(height, &segments);
        let commitments = Self::commitments(&execution);
        self.remember(commitments_key(&commitments), execution);
        BlockBody {
            timestamp_ms: now_ms(),
            segments: segments.into_iter().map(|(s, _)| s).collect(),
            commitments,
            next_cn_set: self.region.expected_next_set(height),
        }
    }

    fn validate(&mut self, block: &Block, _parent: &Tip) -> Result<(), String> {
        let header = block.header();
        if header.next_cn_set != self.region.expected_next_set(header.height) {
            return Err("header announces a CN set other than the approved change".into());
        }
        let key = commitments_key(&header.segments);
        if self.executed.contains_key(&key) {
            return Ok(());
        }
        match block.segments.first() {
            Some(s0) if s0.chain_id == self.region.region => {}
            _ => return Err("segment 0 must be the regionchain's".into()),
        }
        if block.segments[1..]
            .iter()
            .any(|s| s.chain_id == self.region.region)
        {
            return Err("the regionchain has exactly one segment, segment 0".into());
        }
        let execution = self.execute(header.height, &self.senders(block));
        for (k, (mine, theirs)) in Self::commitments(&execution)
            .iter()
            .zip(&header.segments)
            .enumerate()
        {
            if mine != theirs {
                return Err(format!(
                    "segment {k} (chain {}): re-execution disagrees with the header",
                    theirs.chain_id
                ));
            }
        }
        self.remember(key, execution);
        Ok(())
    }
}
