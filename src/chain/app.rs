//! The CN's application for consensus: builds proposals from the pools, re-executes proposals
//! from others, and applies committed blocks to state and pools.
//!
//! Segment 0 is the regionchain's (system transactions, [`super::region`]); the others are one
//! per active servicechain, in ascending chain order, and execute in parallel on the EVM
//! ([`crate::exec`]). Execution results are kept by everything execution depends on (parent,
//! height, timestamp, randomness and the segments' commitments), so a block this node built or
//! validated is applied at commit without executing it again, and a block executed at commit
//! must reproduce its header's commitments or it is refused. A
//! committed block's execution is handed to [`CommittedState`], which serves it to readers
//! until the persist stage has written it to RocksDB after the block log.

use super::migration::{
    Adoption, AdoptionChunk, MoveOrder, SealCheck, MAX_OPEN_ADOPTIONS, MAX_SEGMENTS_BESIDE_A_MOVE,
};
use super::posc::{Penalty, ProbeAttestation};
use super::region::{RegionExecution, RegionState};
use super::region_checkpoint::RegionCheckpoint;
use super::servicechain::DEFAULT_CHECKPOINT_INTERVAL;
use crate::consensus::governance::SYSTEM_TX_PREFIX;
use crate::consensus::machine::{Application, GotExpected, InvalidBlock, Tip};
use crate::consensus::proposal::BlockBody;
use crate::consensus::selection::CnSet;
use crate::crypto::hash::{keccak256, sha256};
use crate::crypto::tx::{decode_recover_batch, DecodeRules, RecoveredTx};
use crate::exec::{
    genesis_diff, BlockContext, EvmExecutor, Executor, RecentHashes, SegmentDiff, SegmentExecution,
    SegmentInput, StateError, StateRead, BASE_FEE_WEI, SEGMENT_GAS_LIMIT,
};
use crate::mempool::Mempool;
use crate::storage::state::{CommittedState, PendingBlock};
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind};
use crate::types::{Block, BlockHash, ChainId, Height, Segment, SegmentCommitment};
use alloy_primitives::{Bytes, B256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

/// Executions kept for blocks not yet committed (a few rounds' worth of proposals).
const MAX_PENDING_EXECUTIONS: usize = 64;
/// System transactions waiting for segment 0 (shares, PoSC attestations, governance); a
/// flood beyond this is dropped.
pub const MAX_SYSTEM_TXS: usize = 1024;
/// Bytes of system transactions waiting for segment 0.
pub const MAX_SYSTEM_BYTES: usize = 16 << 20;
/// System transactions one proposal carries (the rest wait for the next).
pub const MAX_SYSTEM_TXS_PER_BLOCK: usize = 256;

/// Shared handles of one CN's state and pools.
#[derive(Clone)]
pub struct CnState {
    pub pool: Arc<Mutex<Mempool>>,
    /// Committed servicechain state (RocksDB plus committed blocks not yet persisted).
    pub state: Arc<CommittedState>,
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
        let bytes: usize = system.iter().map(|tx| tx.len()).sum();
        // An unknown kind belongs to no share below and could never be executed.
        if system.len() >= MAX_SYSTEM_TXS
            || bytes + raw.len() > MAX_SYSTEM_BYTES
            || raw.len() > system::MAX_SYSTEM_TX_BYTES
            || system::split(&raw).is_err()
        {
            return false;
        }
        // Kinds anyone holding an RN link can send unchecked get a share of the queue each, by
        // count and bytes, so a flood of them never keeps the other kinds out.
        for (kind, most, most_bytes) in [
            (
                SystemKind::ProbeAttestation,
                MAX_QUEUED_ATTESTATIONS,
                MAX_SYSTEM_BYTES / 8,
            ),
            (
                SystemKind::RegionCheckpoint,
                MAX_QUEUED_CHECKPOINTS,
                MAX_SYSTEM_BYTES / 8,
            ),
            (
                SystemKind::AdoptServicechain,
                MAX_QUEUED_ADOPTIONS,
                MAX_SYSTEM_BYTES / 8,
            ),
            (
                SystemKind::MoveServicechain,
                MAX_QUEUED_ADOPTIONS,
                MAX_SYSTEM_BYTES / 64,
            ),
            (
                SystemKind::AdoptionChunk,
                MAX_QUEUED_CHUNKS,
                MAX_SYSTEM_BYTES / 4,
            ),
        ] {
            let of_kind = |tx: &[u8]| system::split(tx).is_ok_and(|(k, _)| k == kind);
            if !of_kind(&raw) {
                continue;
            }
            let queued = system.iter().filter(|tx| of_kind(tx));
            let (count, queued_bytes) = queued.fold((0, 0), |(n, b), tx| (n + 1, b + tx.len()));
            if count >= most || queued_bytes + raw.len() > most_bytes {
                return false;
            }
        }
        system.push(raw);
        true
    }

    /// Each block's segments with the senders of their servicechain transactions: from the
    /// pool when this node has seen the transaction (already verified at ingress), else
    /// recovered on the current rayon pool — all the blocks' in one batch: a segment holds
    /// tens of transactions, too few to spread over the cores (a batch that does not split
    /// runs on the calling thread alone). Pass blocks whose certificates and bodies are
    /// already verified.
    pub fn execution_inputs(&self, blocks: &[&Block]) -> Vec<Vec<SegmentInput>> {
        // Hashed before the pool is locked: the RPC and the pool stage wait on that lock.
        let hashes: Vec<Vec<Vec<B256>>> = blocks
            .iter()
            .map(|block| {
                (block.segments.iter().enumerate())
                    .map(|(k, segment)| match k {
                        0 => Vec::new(),
                        _ => segment.txs.iter().map(keccak256).collect(),
                    })
                    .collect()
            })
            .collect();
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let mut inputs: Vec<Vec<SegmentInput>> = blocks
            .iter()
            .zip(&hashes)
            .map(|(block, hashes)| {
                (block.segments.iter().zip(hashes))
                    .map(|(segment, hashes)| {
                        let known = hashes.iter().map(|h| pool.get(h).cloned()).collect();
                        (segment.clone(), known)
                    })
                    .collect()
            })
            .collect();
        drop(pool);
        // (block, segment, transaction) of every sender the pool did not hold.
        let missing: Vec<(usize, usize, usize)> = inputs
            .iter()
            .enumerate()
            .flat_map(|(b, segments)| {
                segments.iter().enumerate().flat_map(move |(k, (_, txs))| {
                    (0..txs.len())
                        .filter(move |&i| txs[i].is_none())
                        .map(move |i| (b, k, i))
                })
            })
            .collect();
        if missing.is_empty() {
            return inputs;
        }
        let raws: Vec<&[u8]> = missing
            .iter()
            .map(|&(b, k, i)| blocks[b].segments[k].txs[i].as_ref())
            .collect();
        let recovered = decode_recover_batch(&raws, &DecodeRules::default());
        for ((b, k, i), r) in missing.into_iter().zip(recovered) {
            inputs[b][k].1[i] = r.ok();
        }
        inputs
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
    /// Regionchain state, shared with readers (the RPC) that lock it briefly.
    region: Arc<RwLock<RegionState>>,
    /// The CN set in force (a copy of the region's, readable without the lock).
    set: Arc<CnSet>,
    executor: EvmExecutor,
    max_txs_per_segment: usize,
    executed: HashMap<B256, BlockExecution>,
    /// Execution inputs of the next block, built off this thread ([`CnApp::prepared`]).
    ahead: Option<(BlockHash, Vec<SegmentInput>)>,
    /// The last committed container: its mix is the next block's PREVRANDAO.
    tip: Tip,
    /// Hashes of the last committed containers, for BLOCKHASH.
    hashes: Arc<RecentHashes>,
    /// Verdicts on queued PoSC attestations (by transaction hash), so each is verified once
    /// however many proposals it waits through.
    attestation_verdicts: HashMap<B256, bool>,
}

/// Attestation verdicts remembered before the cache is cleared.
const MAX_ATTESTATION_VERDICTS: usize = 4096;
/// Attestations waiting in the system queue at once (a flood cannot crowd out shares).
pub const MAX_QUEUED_ATTESTATIONS: usize = 256;
/// Region checkpoints waiting for segment 0 (each region's relay keeps one in flight).
pub const MAX_QUEUED_CHECKPOINTS: usize = 64;
/// Adoptions of moved servicechains a CN queues (each up to a system transaction's size).
pub const MAX_QUEUED_ADOPTIONS: usize = 4;
/// Chunks of adopted states a CN queues (a move sends them all at once; bytes bind first).
pub const MAX_QUEUED_CHUNKS: usize = 64;

/// Wall clock in milliseconds since the Unix epoch (read by drivers, never by the consensus
/// state machine or this application: they are given the time).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The key of an execution: everything its results depend on — the parent it ran on (state
/// and PREVRANDAO), the height and timestamp the EVM saw, and the segments (by their
/// commitments, which include the transaction roots). A re-proposal of the same segments at
/// another timestamp or on another parent is another execution.
fn execution_key(
    parent: &Tip,
    height: Height,
    timestamp_ms: u64,
    commitments: &[SegmentCommitment],
) -> B256 {
    sha256(
        &[
            parent.hash.0.as_slice(),
            parent.mix.as_slice(),
            &height.to_be_bytes(),
            &timestamp_ms.to_be_bytes(),
            &canonical(&commitments.to_vec()),
        ]
        .concat(),
    )
}

/// Why a committed block could not be applied. Either stops the node: going on would store
/// state other than what the certificate sealed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("block {height} does not extend the applied tip: parent {parent}")]
    NotOnTip {
        height: Height,
        parent: GotExpected<crate::types::BlockHash>,
    },
    #[error("block {height}: executing segment {segment}: {commitment}")]
    Diverged {
        height: Height,
        segment: usize,
        commitment: Box<GotExpected<SegmentCommitment>>,
    },
}

/// The first segment whose execution differs from the header's commitment (a count mismatch
/// shows as the first missing index).
fn first_divergence(
    mine: &[SegmentCommitment],
    header: &[SegmentCommitment],
) -> Option<(usize, Box<GotExpected<SegmentCommitment>>)> {
    let empty = || SegmentCommitment {
        chain_id: ChainId(0),
        tx_count: 0,
        tx_root: B256::ZERO,
        receipts_root: B256::ZERO,
        state_root: B256::ZERO,
    };
    (0..mine.len().max(header.len())).find_map(|k| {
        let (got, expected) = (mine.get(k), header.get(k));
        (got != expected).then(|| {
            let commitment = GotExpected {
                got: got.cloned().unwrap_or_else(empty),
                expected: expected.cloned().unwrap_or_else(empty),
            };
            (k, Box::new(commitment))
        })
    })
}

impl CnApp {
    /// An application whose last committed block is `tip` (genesis, until blocks replay).
    pub fn new(
        region: ChainId,
        set: Arc<CnSet>,
        shared: CnState,
        max_txs_per_segment: usize,
        tip: Tip,
    ) -> Self {
        Self {
            shared,
            region: Arc::new(RwLock::new(RegionState::new(
                region,
                Arc::clone(&set),
                DEFAULT_CHECKPOINT_INTERVAL,
            ))),
            set,
            executor: EvmExecutor,
            max_txs_per_segment,
            executed: HashMap::new(),
            ahead: None,
            attestation_verdicts: HashMap::new(),
            tip,
            hashes: Arc::default(),
        }
    }

    /// The CN set in force for the next height to be decided.
    pub fn cn_set(&self) -> &Arc<CnSet> {
        &self.set
    }

    /// The regionchain state, for readers outside consensus (registry, checkpoints, PoP).
    pub fn region_handle(&self) -> Arc<RwLock<RegionState>> {
        Arc::clone(&self.region)
    }

    /// Changes the regionchain state before any block is applied (genesis registrations,
    /// PoP settings, the node's segment source).
    pub fn configure_region(&mut self, f: impl FnOnce(RegionState) -> RegionState) {
        let mut region = self.region_write();
        let current = std::mem::replace(
            &mut *region,
            RegionState::new(ChainId(0), Arc::clone(&self.set), 1),
        );
        *region = f(current);
    }

    fn region_read(&self) -> std::sync::RwLockReadGuard<'_, RegionState> {
        self.region.read().unwrap_or_else(|e| e.into_inner())
    }

    fn region_write(&self) -> std::sync::RwLockWriteGuard<'_, RegionState> {
        self.region.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies segment 0's execution and the header's CN-set announcement.
    fn apply_region(&mut self, execution: &RegionExecution, header: &crate::types::Header) {
        let mut region = self.region_write();
        region.apply(execution, &super::region::Committed::of(header));
        let set = Arc::clone(&region.set);
        drop(region);
        if !Arc::ptr_eq(&set, &self.set) {
            // Verdicts were against the old set's keys.
            self.attestation_verdicts.clear();
        }
        self.set = set;
    }

    /// The EVM's view of block `height` stamped `timestamp_ms` on a parent with `parent_mix`.
    fn context(&self, height: Height, timestamp_ms: u64, parent_mix: B256) -> BlockContext {
        let (credits, numbering) = {
            let region = self.region_read();
            (
                Arc::clone(&region.pop.credits),
                Arc::clone(&region.numbering),
            )
        };
        BlockContext::new(height, timestamp_ms, parent_mix)
            .with_block_hashes(Arc::clone(&self.hashes))
            .with_credits(credits)
            .with_numbering(numbering)
    }

    /// Executes a block's segments: 0 on the regionchain, the rest on the EVM in parallel.
    fn execute(
        &self,
        ctx: &BlockContext,
        segments: &[SegmentInput],
    ) -> Result<BlockExecution, StateError> {
        let region = self.execute_region(ctx.height, segments.first().map(|(s, _)| s));
        if let Some(e) = &region.state_error {
            return Err(StateError::Backend(e.clone().into()));
        }
        let chains = self.executor.execute_block(
            &*self.shared.state,
            ctx,
            segments.get(1..).unwrap_or_default(),
        )?;
        Ok(BlockExecution { region, chains })
    }

    /// Segment 0 (an empty one if a committed block lacks it).
    fn execute_region(&self, height: Height, segment: Option<&Segment>) -> RegionExecution {
        let region = self.region_read();
        let empty = Segment {
            chain_id: region.region,
            txs: Vec::new(),
        };
        region.execute(height, segment.unwrap_or(&empty))
    }

    /// Segment 0 of a block this node committed before, executed again taking the seals of
    /// its region checkpoints as verified (they were when it was first executed: replaying a
    /// long regionchain would otherwise redo a pairing per checkpoint) as long as that
    /// reproduces the segment-0 commitment the certified header holds — its receipts root
    /// says which transactions were accepted — and in full otherwise. Fails when even the full
    /// execution disagrees with the header: the regionchain state this node would rebuild is
    /// not the one the chain committed.
    fn replay_region(
        &self,
        header: &crate::types::Header,
        segment: Option<&Segment>,
    ) -> anyhow::Result<RegionExecution> {
        let region = self.region_read();
        let empty = Segment {
            chain_id: region.region,
            txs: Vec::new(),
        };
        let segment = segment.unwrap_or(&empty);
        let trusted = region.execute_trusting_seals(header.height, segment);
        if header.segments.first() == Some(&trusted.commitment) {
            return Ok(trusted);
        }
        let verified = region.execute(header.height, segment);
        if let Some(e) = &verified.state_error {
            anyhow::bail!("replaying block {}: {e}", header.height);
        }
        if header.segments.first() == Some(&verified.commitment) {
            return Ok(verified);
        }
        // A move refused then for the chain's state at the time (too large) reads today's state
        // now, which may since have shrunk.
        let refusing = region.execute_refusing_moves(header.height, segment);
        anyhow::ensure!(
            header.segments.first() == Some(&refusing.commitment),
            "segment 0 of block {} replays to a commitment other than its certified header's: the regionchain state rebuilt from this datadir differs from the one the chain committed (a changed genesis, or a rule changed without an activation height); refusing to start on it. Check that genesis.json is the one this datadir was made with; otherwise start this node from an empty datadir, and it syncs the chain again from its peers",
            header.height
        );
        Ok(refusing)
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

    /// Hands the application the execution inputs of the next block it will validate or
    /// commit, built off its thread ([`CnState::execution_inputs`]). Only the latest is kept,
    /// so memory stays one block's worth whatever the caller does.
    pub fn prepared(&mut self, block: BlockHash, inputs: Vec<SegmentInput>) {
        self.ahead = Some((block, inputs));
    }

    /// The shared handles (pool, committed state) that readers and helper threads use.
    pub fn shared(&self) -> &CnState {
        &self.shared
    }

    /// Execution inputs of a received block: handed over by [`Self::prepared`], or built now.
    fn senders(&mut self, block: &Block) -> Vec<SegmentInput> {
        let hash = block.hash();
        match self.ahead.take() {
            Some((prepared, inputs)) if prepared == hash => inputs,
            _ => self
                .shared
                .execution_inputs(&[block])
                .pop()
                .unwrap_or_default(),
        }
    }

    /// Applies a committed block: regionchain state (and a CN-set switch it announces),
    /// servicechain state (held by [`CommittedState`] until persisted), pool nonces.
    /// Re-executes only a block this node never executed, and then refuses it unless the
    /// execution reproduces the header's commitments; fails too when state cannot be read.
    pub fn commit(&mut self, block: &Block) -> Result<(), CommitError> {
        let header = block.header();
        if header.parent != self.tip.hash {
            return Err(CommitError::NotOnTip {
                height: header.height,
                parent: GotExpected {
                    got: header.parent,
                    expected: self.tip.hash,
                },
            });
        }
        let key = execution_key(
            &self.tip,
            header.height,
            header.timestamp_ms,
            &header.segments,
        );
        let execution = match self.executed.remove(&key) {
            Some(e) => e,
            None => {
                let ctx = self.context(header.height, header.timestamp_ms, self.tip.mix);
                let inputs = self.senders(block);
                let execution = self.execute(&ctx, &inputs)?;
                if let Some((segment, commitment)) =
                    first_divergence(&Self::commitments(&execution), &header.segments)
                {
                    return Err(CommitError::Diverged {
                        height: header.height,
                        segment,
                        commitment,
                    });
                }
                execution
            }
        };
        self.executed.clear();
        let genesis = self.registered_genesis(&execution)?;
        // Hashed before the pool is locked: sigverify and the pool stage wait on that lock.
        let outcomes: Vec<Vec<(B256, bool)>> = execution
            .chains
            .iter()
            .zip(block.segments.iter().skip(1))
            .map(|(e, segment)| {
                let valid = |r: &crate::exec::Receipt| {
                    !matches!(r.outcome, crate::exec::TxOutcome::Invalid(_))
                };
                segment
                    .txs
                    .iter()
                    .zip(&e.receipts)
                    .map(|(raw, receipt)| (keccak256(raw), valid(receipt)))
                    .collect()
            })
            .collect();
        {
            let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
            for chain in &execution.region.registered {
                pool.add_chain(chain.chain_id);
            }
            if let Some(moved) = &execution.region.moved {
                pool.remove_chain(moved.chain);
            }
            for (e, outcomes) in execution.chains.iter().zip(&outcomes) {
                for (sender, next_nonce) in &e.nonces {
                    pool.committed(e.diff.chain_id, *sender, *next_nonce);
                }
                pool.settle_included(outcomes);
            }
        }
        let segments = (1u32..).zip(execution.chains).collect();
        self.shared.state.committed(PendingBlock::new(
            header.height,
            block.hash(),
            genesis,
            segments,
        ));
        // After the state: a chain registered or adopted here is served only once its state
        // can be read.
        self.apply_region(&execution.region, header);
        if let Some(s0) = block.segments.first() {
            let region = self.region_read();
            let mut system = self.shared.system.lock().unwrap_or_else(|e| e.into_inner());
            let retry: HashSet<&Bytes> = execution
                .region
                .retry
                .iter()
                .filter_map(|&i| s0.txs.get(i))
                .collect();
            system.retain(|tx| {
                (!s0.txs.contains(tx) || retry.contains(tx))
                    && ProbeAttestation::from_system_tx(tx).map_or(true, |a| {
                        region.pop.posc.attestation_live(&a, header.height)
                    })
            });
        }
        self.advance(block);
        Ok(())
    }

    /// Genesis allocations of the servicechains segment 0 registered, as state diffs that
    /// follow each chain's current commitment (applied before the block's segments).
    fn registered_genesis(
        &self,
        execution: &BlockExecution,
    ) -> Result<Vec<SegmentDiff>, StateError> {
        execution
            .region
            .registered
            .iter()
            .map(|chain| {
                if let Some((record, snapshot)) = &chain.adopted {
                    // Its commitment goes on from where the source froze it.
                    return Ok(snapshot.diff(chain.chain_id, record.final_root));
                }
                let allocs: Vec<_> = chain.alloc.iter().map(|a| (a.address, a.balance)).collect();
                let previous = self.shared.state.state_root(chain.chain_id)?;
                Ok(genesis_diff(chain.chain_id, &allocs, previous))
            })
            .collect()
    }

    /// Replays a committed block whose servicechain state is already applied (restart): only
    /// what lives in memory — regionchain state, the tip, recent hashes.
    pub fn replay_applied(&mut self, block: &Block) -> anyhow::Result<()> {
        let header = block.header();
        let region = self.replay_region(header, block.segments.first())?;
        {
            // The pool starts from genesis' chains: those registered, adopted or moved away
            // since are taken in and out again as their blocks replay.
            let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
            for chain in &region.registered {
                pool.add_chain(chain.chain_id);
            }
            if let Some(moved) = &region.moved {
                pool.remove_chain(moved.chain);
            }
        }
        self.apply_region(&region, header);
        self.advance(block);
        Ok(())
    }

    fn advance(&mut self, block: &Block) {
        let segments = Arc::clone(&self.region_read().segments);
        segments.record(block);
        self.tip = Tip::of(block);
        Arc::make_mut(&mut self.hashes).push(self.tip.height, self.tip.hash.0);
    }

    /// Ready transactions of `chain` for a proposal: at most `max_txs_per_segment`, no more gas
    /// than a segment has (a prefix, so each sender's nonces stay contiguous), and nothing from a
    /// sender past a transaction whose fee cap is below the base fee (it could only be marked
    /// invalid, and its successors with it).
    fn segment_txs(&self, pool: &Mempool, chain: ChainId) -> Vec<RecoveredTx> {
        let mut gas = 0u64;
        let mut underpriced = HashSet::new();
        let mut out = Vec::new();
        for tx in pool.ready(chain, self.max_txs_per_segment) {
            if underpriced.contains(&tx.sender()) {
                continue;
            }
            if tx.tx().tx().max_fee_per_gas() < u128::from(BASE_FEE_WEI) {
                underpriced.insert(tx.sender());
                continue;
            }
            gas = gas.saturating_add(tx.tx().gas_limit());
            if gas > SEGMENT_GAS_LIMIT {
                break;
            }
            out.push(tx);
        }
        out
    }
}

impl CnApp {
    /// Queued system transactions that can never be accepted against the regionchain now,
    /// removed from the queue: region checkpoints that fail the cheap checks (malformed,
    /// region not listed, not above its last checkpoint, sealed by a set other than the
    /// trusted one; a relay sends again what still matters), move orders without a quorum or
    /// of a chain not served here, and adoptions that do not prove themselves (their seal
    /// aside). Each kind is a small share of the queue, so this stays cheap.
    fn hopeless_system_txs(&self, txs: &[Bytes]) -> HashSet<Bytes> {
        // Chains whose adoption is queued (its chunks wait for it).
        let adoptions: HashSet<ChainId> = txs
            .iter()
            .filter(|tx| system::split(tx).is_ok_and(|(k, _)| k == SystemKind::AdoptServicechain))
            .filter_map(|tx| Adoption::from_system_tx(tx).ok())
            .map(|a| a.record.chain)
            .collect();
        let region = self.region_read();
        let hopeless_one = |tx: &Bytes| match system::split(tx).map(|(k, _)| k) {
            Ok(SystemKind::RegionCheckpoint) => RegionCheckpoint::from_system_tx(tx)
                .map_or(true, |c| {
                    region.check_checkpoint(&c, &[], SealCheck::Trust).is_err()
                }),
            Ok(SystemKind::MoveServicechain) => MoveOrder::from_system_tx(tx).map_or(true, |o| {
                !region.serves(o.chain) || o.verify(region.region, &region.set).is_err()
            }),
            Ok(SystemKind::AdoptServicechain) => Adoption::from_system_tx(tx).map_or(true, |a| {
                let source = a.record.source;
                let chain = a.record.chain;
                let held = region.registry.contains(chain) || region.adopting.contains_key(&chain);
                a.verify(
                    region.region,
                    region.trusted_set(source),
                    held,
                    SealCheck::Trust,
                )
                .is_err()
            }),
            // A chunk waits for its adoption while that is queued or open.
            Ok(SystemKind::AdoptionChunk) => AdoptionChunk::from_system_tx(tx).map_or(true, |c| {
                c.region != region.region
                    || match region.adopting.get(&c.chain) {
                        Some(adopting) => adopting.check(&c).is_err(),
                        None => !adoptions.contains(&c.chain),
                    }
            }),
            _ => false,
        };
        let hopeless: HashSet<Bytes> = txs.iter().filter(|tx| hopeless_one(tx)).cloned().collect();
        drop(region);
        if !hopeless.is_empty() {
            let mut system = self.shared.system.lock().unwrap_or_else(|e| e.into_inner());
            system.retain(|tx| !hopeless.contains(tx));
        }
        hopeless
    }

    /// Segment 0 of a proposal at `height`: queued system transactions, with the queued PoSC
    /// attestations folded into penalties wherever a quorum attests.
    fn system_txs(&mut self, height: Height) -> Vec<Bytes> {
        let queued = self
            .shared
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (attestations, mut txs): (Vec<_>, Vec<_>) = queued.into_iter().partition(|tx| {
            system::split(tx).is_ok_and(|(k, _)| k == SystemKind::ProbeAttestation)
        });
        // What a container accepts of each kind; the rest waits in the queue for the next.
        let limit = |kind: SystemKind| match kind {
            SystemKind::PorShare => super::pop::MAX_SHARES_PER_CONTAINER,
            SystemKind::RegisterRn => super::posc::MAX_REGISTRATIONS_PER_CONTAINER,
            SystemKind::Withdrawal => super::withdrawal::MAX_WITHDRAWALS_PER_CONTAINER,
            SystemKind::RegionCheckpoint => {
                super::region_checkpoint::MAX_REGION_CHECKPOINTS_PER_CONTAINER
            }
            // Segment 0 looks at one of each (a move reads a chain's state, an adoption
            // hashes one and checks a seal).
            SystemKind::MoveServicechain | SystemKind::AdoptServicechain => 1,
            SystemKind::AdoptionChunk => super::migration::MAX_CHUNKS_PER_BLOCK,
            _ => MAX_SYSTEM_TXS_PER_BLOCK,
        };
        // A checkpoint carrying the directory region's listing goes first: segment 0 looks at
        // it only there (it changes the trust the other checkpoints are checked against).
        txs.sort_by_key(|tx| {
            !RegionCheckpoint::from_system_tx(tx).is_ok_and(|c| c.listing.is_some())
        });
        let mut taken: HashMap<u8, usize> = HashMap::new();
        // Segment 0 looks at one checkpoint per region: another waits for the next container;
        // one that can never be accepted leaves the queue unproposed.
        let hopeless = self.hopeless_system_txs(&txs);
        let owed_move = |tx: &Bytes| {
            let credits = Arc::clone(&self.region_read().pop.credits);
            MoveOrder::from_system_tx(tx).is_ok_and(|o| credits.contains_key(&o.chain))
        };
        let mut checkpointed = HashSet::new();
        // An adoption with chunks to come waits in the queue while every place is taken, so
        // it does not hold back the adoptions behind it.
        let places_taken = self.region_read().adopting.len() >= MAX_OPEN_ADOPTIONS;
        let waits_for_a_place = |tx: &Bytes| {
            places_taken && Adoption::from_system_tx(tx).is_ok_and(|a| a.chunk_roots.len() > 1)
        };
        txs.retain(|tx| match system::split(tx) {
            Ok(_) if hopeless.contains(tx) => false,
            Ok((SystemKind::AdoptServicechain, _)) if waits_for_a_place(tx) => false,
            // Waits in the queue until the chain's owed rewards are paid.
            Ok((SystemKind::MoveServicechain, _)) if owed_move(tx) => false,
            Ok((SystemKind::RegionCheckpoint, _))
                if RegionCheckpoint::from_system_tx(tx)
                    .is_ok_and(|c| !checkpointed.insert(c.region())) =>
            {
                false
            }
            Ok((kind, _)) => {
                let n = taken.entry(kind as u8).or_default();
                *n += 1;
                *n <= limit(kind)
            }
            // Malformed: proposed once, marked invalid, and dropped from the queue.
            Err(_) => true,
        });
        txs.truncate(MAX_SYSTEM_TXS_PER_BLOCK);
        if self.attestation_verdicts.len() > MAX_ATTESTATION_VERDICTS {
            self.attestation_verdicts.clear();
        }
        let (region_id, set) = (self.region_read().region, Arc::clone(&self.set));
        let verdicts = &mut self.attestation_verdicts;
        let attestations: Vec<ProbeAttestation> = attestations
            .iter()
            .filter_map(|tx| {
                let a = ProbeAttestation::from_system_tx(tx).ok()?;
                let valid = *verdicts
                    .entry(keccak256(tx))
                    .or_insert_with(|| a.verify(region_id, &set));
                valid.then_some(a)
            })
            .collect();
        if !attestations.is_empty() {
            let region = self.region_read();
            let penalties =
                region
                    .pop
                    .posc
                    .assemble(&attestations, height, region.region, &region.set);
            txs.extend(penalties.iter().map(Penalty::to_system_tx));
        }
        txs
    }
}

impl CnApp {
    /// Whether a block proposed now would carry something: a ready servicechain transaction
    /// or a regionchain system transaction.
    pub fn has_work(&self) -> bool {
        let system = !self
            .shared
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        system
            || self
                .shared
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .has_ready()
    }
}

impl Application for CnApp {
    fn build(&mut self, height: Height, parent: &Tip, timestamp_ms: u64) -> BlockBody {
        let system = self.system_txs(height);
        let pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        let (region_id, next_cn_set) = {
            let region = self.region_read();
            (region.region, region.expected_next_set(height))
        };
        let mut segments = vec![(
            Segment {
                chain_id: region_id,
                txs: system,
            },
            Vec::new(),
        )];
        // Chains with transactions, and chains owed withdrawn rewards (an empty segment
        // applies them), in ascending order.
        let registered: Vec<ChainId> = {
            let region = self.region_read();
            let owed = region.pop.credits.keys().copied();
            let chains: std::collections::BTreeSet<ChainId> =
                pool.active_chains().into_iter().chain(owed).collect();
            // A chain this block's segment 0 may move is frozen from this block on.
            let moving: HashSet<ChainId> = segments[0]
                .0
                .txs
                .iter()
                .filter_map(|tx| MoveOrder::from_system_tx(tx).ok())
                .map(|order| order.chain)
                .collect();
            // And its header travels in the adoption: the block stays small.
            let most = match moving.is_empty() {
                true => usize::MAX,
                false => MAX_SEGMENTS_BESIDE_A_MOVE,
            };
            chains
                .into_iter()
                .filter(|c| region.serves(*c) && !moving.contains(c))
                .take(most)
                .collect()
        };
        for chain in registered {
            let txs = self.segment_txs(&pool, chain);
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
        let ctx = self.context(height, timestamp_ms, parent.mix);
        let execution = match self.execute(&ctx, &segments) {
            Ok(execution) => execution,
            Err(e) => {
                tracing::error!(error = %e, %height, "cannot execute servicechain segments; proposing segment 0 only, without a move (which reads a chain's state)");
                segments.truncate(1);
                segments[0].0.txs.retain(|tx| {
                    system::split(tx).map_or(true, |(k, _)| k != SystemKind::MoveServicechain)
                });
                BlockExecution {
                    region: self.execute_region(height, segments.first().map(|(s, _)| s)),
                    chains: Vec::new(),
                }
            }
        };
        let commitments = Self::commitments(&execution);
        self.remember(
            execution_key(parent, height, timestamp_ms, &commitments),
            execution,
        );
        BlockBody {
            segments: segments.into_iter().map(|(s, _)| s).collect(),
            commitments,
            next_cn_set,
        }
    }

    fn validate(&mut self, block: &Block, parent: &Tip) -> Result<(), InvalidBlock> {
        let header = block.header();
        // Execution reads the applied state: it must be exactly the parent's.
        if parent.hash != self.tip.hash || header.parent != self.tip.hash {
            return Err(InvalidBlock::NotOnTip {
                height: header.height,
                parent: GotExpected {
                    got: header.parent,
                    expected: self.tip.hash,
                },
            });
        }
        let (region_id, expected_set) = {
            let region = self.region_read();
            (region.region, region.expected_next_set(header.height))
        };
        if header.next_cn_set != expected_set {
            return Err(InvalidBlock::UnexpectedCnSet {
                keys: GotExpected {
                    got: header.next_cn_set.len(),
                    expected: expected_set.len(),
                },
            });
        }
        let key = execution_key(parent, header.height, header.timestamp_ms, &header.segments);
        if self.executed.contains_key(&key) {
            return Ok(());
        }
        match block.segments.first() {
            Some(s0) if s0.chain_id == region_id => {}
            _ => return Err(InvalidBlock::NoRegionSegment),
        }
        if block.segments[1..].iter().any(|s| s.chain_id == region_id) {
            return Err(InvalidBlock::RegionSegmentRepeated);
        }
        if block.segments[1..]
            .windows(2)
            .any(|w| w[0].chain_id >= w[1].chain_id)
        {
            return Err(InvalidBlock::SegmentsOutOfOrder);
        }
        if let Some(s) = block.segments[1..]
            .iter()
            .find(|s| !self.region_read().serves(s.chain_id))
        {
            return Err(InvalidBlock::UnregisteredChain(s.chain_id));
        }
        let ctx = self.context(header.height, header.timestamp_ms, parent.mix);
        let inputs = self.senders(block);
        let execution = self
            .execute(&ctx, &inputs)
            .map_err(|e| InvalidBlock::Execution(e.to_string()))?;
        if let Some(moved) = execution
            .region
            .moved
            .filter(|m| block.segments[1..].iter().any(|s| s.chain_id == m.chain))
        {
            return Err(InvalidBlock::UnregisteredChain(moved.chain));
        }
        let segments = block.segments.len() - 1;
        if execution.region.moved.is_some() && segments > MAX_SEGMENTS_BESIDE_A_MOVE {
            return Err(InvalidBlock::TooManySegmentsBesideAMove {
                got: segments,
                most: MAX_SEGMENTS_BESIDE_A_MOVE,
            });
        }
        if let Some((segment, commitment)) =
            first_divergence(&Self::commitments(&execution), &header.segments)
        {
            return Err(InvalidBlock::Diverged {
                segment,
                commitment,
            });
        }
        self.remember(key, execution);
        Ok(())
    }
}
