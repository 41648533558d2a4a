//! Segment execution: the EVM ([`EvmExecutor`], revm) over each servicechain's isolated state.
//!
//! ```text
//! committed block ─► segments 1..n ─► execute_block (rayon, one task per segment)
//!                                        │ receipts, state diffs, commitments
//!                                        ▼
//!                     block log + RocksDB (storage::state, one WriteBatch per block)
//! ```
//!
//! Segments of different servicechains touch disjoint state, so a block's segments execute in
//! parallel and the result equals sequential execution; within a segment, transactions run in
//! the proposer's order. A transaction that cannot execute (undecodable, bad signature, wrong
//! chain, bad nonce, unaffordable, gas limit over what the segment has left, ...) stays in its
//! segment with an invalid receipt and changes nothing. Semantics, fees and the state
//! commitment are described in `docs/execution.md`.

mod access_list;
mod call;
mod commitment;
mod evm;
mod numbering;
mod receipt;
mod snapshot;
mod state;

pub use access_list::{AccessListError, AccessListOutcome, MAX_ACCESS_LIST_RUNS};
pub use call::{revert_reason, CallOutcome, CallRequest, EstimateError};
pub use commitment::next_state_root;
pub use evm::{EvmExecutor, SPEC};
pub use numbering::{ChainNumbers, Numbering};
pub use receipt::{
    bloom_of, logs_bloom, receipts_root, Halt, InvalidReason, Log, LogFields, LogFilter, Receipt,
    TxOutcome,
};
pub use snapshot::{
    chunked_root, ChainSnapshot, SnapshotAccount, SnapshotError, SnapshotSize, SnapshotSlot,
    MAX_CHUNKS, MAX_CHUNK_BYTES, MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_ENTRIES,
};
pub use state::{
    genesis_diff, genesis_diffs, Account, MemoryState, Prior, SegmentDiff, StateError, StateRead,
    EMPTY_CODE_HASH,
};

use crate::crypto::hash::{keccak256, merkle_root};
use crate::crypto::tx::RecoveredTx;
use crate::types::{ChainId, Height, Segment, SegmentCommitment};
use alloy_primitives::{address, Address, Bloom, B256};
use rayon::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;

/// Gas of a plain value transfer.
pub const TRANSFER_GAS: u64 = 21_000;

/// Gas one segment may use, and the most one transaction may ask for: 10× an Ethereum block,
/// room for 14 000 transfers, while bounding the time a validator spends re-executing one
/// segment.
pub const SEGMENT_GAS_LIMIT: u64 = 300_000_000;

/// Base fee per gas of every servicechain (1 gwei), constant; it is burned.
pub const BASE_FEE_WEI: u64 = 1_000_000_000;

/// Receives the priority fees (`COINBASE` in the EVM) on every servicechain.
pub const FEE_COLLECTOR: Address = address!("0x000000000000000000000000000000000000fee0");

/// Container hashes BLOCKHASH can return: the EVM's window of 256 blocks.
pub const BLOCK_HASH_WINDOW: usize = 256;

/// Credits waiting for the next segment of each servicechain, (account, amount) in order:
/// reward withdrawals the regionchain approved, minted at the start of that chain's segment.
pub type Credits = std::collections::BTreeMap<ChainId, Vec<(Address, alloy_primitives::U256)>>;

/// Hashes of the most recent containers, oldest first, for the EVM's BLOCKHASH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentHashes {
    /// Height of `hashes[0]`.
    first: u64,
    hashes: VecDeque<B256>,
}

impl RecentHashes {
    /// Records the hash of the container at `height`, which must follow the last one recorded
    /// (a gap starts the window afresh).
    pub fn push(&mut self, height: Height, hash: B256) {
        if self.hashes.is_empty() || height.0 != self.first + self.hashes.len() as u64 {
            self.hashes.clear();
            self.first = height.0;
        }
        self.hashes.push_back(hash);
        if self.hashes.len() > BLOCK_HASH_WINDOW {
            self.hashes.pop_front();
            self.first += 1;
        }
    }

    /// The hash of the container at `height`, if it is in the window.
    pub fn get(&self, height: u64) -> Option<B256> {
        let i = height.checked_sub(self.first)?;
        self.hashes.get(usize::try_from(i).ok()?).copied()
    }
}

/// What the EVM sees of the block being executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockContext {
    /// The container height (`NUMBER` on a chain that never moved, [`Self::number`]).
    pub height: Height,
    /// The header's timestamp; `TIMESTAMP` is this in whole seconds.
    pub timestamp_ms: u64,
    /// `PREVRANDAO`: the randomness mix of the parent container, `mix(h-1)`.
    pub prevrandao: B256,
    /// `COINBASE`: receives priority fees.
    pub coinbase: Address,
    /// `BASEFEE`, burned.
    pub base_fee: u64,
    /// Gas available to each segment (`GASLIMIT`).
    pub gas_limit: u64,
    /// Hashes for `BLOCKHASH`; heights outside them read as zero.
    pub block_hashes: Arc<RecentHashes>,
    /// Reward withdrawals credited before each servicechain's transactions
    /// (reward withdrawals, `chain::withdrawal`).
    pub credits: Arc<Credits>,
    /// How chains adopted from another region number their blocks.
    pub numbering: Arc<Numbering>,
}

impl BlockContext {
    /// The context of container `height` with the chain-wide fee settings and no known block
    /// hashes.
    pub fn new(height: Height, timestamp_ms: u64, prevrandao: B256) -> Self {
        Self {
            height,
            timestamp_ms,
            prevrandao,
            coinbase: FEE_COLLECTOR,
            base_fee: BASE_FEE_WEI,
            gas_limit: SEGMENT_GAS_LIMIT,
            block_hashes: Arc::default(),
            credits: Arc::default(),
            numbering: Arc::default(),
        }
    }

    /// The same context with `numbering` for the chains adopted from another region.
    pub fn with_numbering(mut self, numbering: Arc<Numbering>) -> Self {
        self.numbering = numbering;
        self
    }

    /// `NUMBER` on `chain`: its own number of this block ([`Numbering`]).
    pub fn number(&self, chain: ChainId) -> u64 {
        self.numbering.evm_number(chain, self.height.0)
    }

    /// `BLOCKHASH(number)` on `chain`: the hash of its block `number` if this region holds it
    /// in the window (a chain's blocks from before its adoption read as unknown).
    pub fn block_hash(&self, chain: ChainId, number: u64) -> Option<B256> {
        self.block_hashes.get(self.numbering.height(chain, number)?)
    }

    /// The same context with `credits` applied before the segments' transactions.
    pub fn with_credits(mut self, credits: Arc<Credits>) -> Self {
        self.credits = credits;
        self
    }

    /// The same context with `hashes` for BLOCKHASH.
    pub fn with_block_hashes(mut self, hashes: Arc<RecentHashes>) -> Self {
        self.block_hashes = hashes;
        self
    }
}

/// Result of executing one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentExecution {
    pub commitment: SegmentCommitment,
    /// One per transaction, in segment order.
    pub receipts: Vec<Receipt>,
    /// Bloom over every log of the segment.
    pub bloom: Bloom,
    pub diff: SegmentDiff,
    /// Senders of the segment's transactions with their next nonce, for the mempool.
    pub nonces: Vec<(alloy_primitives::Address, u64)>,
}

/// A segment and the senders of its transactions (`None`: undecodable or bad signature).
pub type SegmentInput = (Segment, Vec<Option<RecoveredTx>>);

/// Executes segments against committed state without changing it.
pub trait Executor: Send + Sync {
    fn execute_segment(
        &self,
        state: &dyn StateRead,
        ctx: &BlockContext,
        segment: &Segment,
        senders: &[Option<RecoveredTx>],
    ) -> Result<SegmentExecution, StateError>;

    /// Executes every segment of a block in parallel; equal to executing them one by one, and
    /// returned in the block's order. Segments are handed to rayon largest first, each a task
    /// of its own, so a big segment is not queued behind the small ones and idle workers can
    /// steal single segments (rayon's splitting decides the exact order).
    fn execute_block(
        &self,
        state: &dyn StateRead,
        ctx: &BlockContext,
        segments: &[SegmentInput],
    ) -> Result<Vec<SegmentExecution>, StateError> {
        let mut done: Vec<(usize, SegmentExecution)> = largest_first(segments)
            .into_par_iter()
            .with_max_len(1)
            .map(|i| {
                let (segment, txs) = &segments[i];
                Ok((i, self.execute_segment(state, ctx, segment, txs)?))
            })
            .collect::<Result<_, StateError>>()?;
        done.sort_unstable_by_key(|(i, _)| *i);
        Ok(done.into_iter().map(|(_, execution)| execution).collect())
    }
}

/// Indices of `segments`, the most transactions first (ties in block order).
fn largest_first(segments: &[SegmentInput]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..segments.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(segments[i].0.txs.len()));
    order
}

/// The commitment of a segment that ran on `chain` with `receipts`, leaving `diff`. The
/// transaction root is [`Segment::tx_root`], taking the hashes recovered transactions already
/// carry instead of hashing their bytes again.
fn segment_commitment(
    chain: ChainId,
    segment: &Segment,
    senders: &[Option<RecoveredTx>],
    receipts: &[Receipt],
    diff: &SegmentDiff,
) -> SegmentCommitment {
    let leaves: Vec<B256> = segment
        .txs
        .iter()
        .enumerate()
        .map(|(i, raw)| match senders.get(i).and_then(Option::as_ref) {
            // Invariant of `SignedTransaction`: its hash is the keccak-256 of its raw bytes.
            Some(tx) if tx.tx().raw() == raw => tx.tx().hash(),
            _ => keccak256(raw),
        })
        .collect();
    SegmentCommitment {
        chain_id: chain,
        tx_count: segment.txs.len() as u32,
        tx_root: merkle_root(&leaves),
        receipts_root: receipts_root(receipts),
        state_root: diff.state_root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_hashes_keep_a_window_and_restart_on_gaps() {
        let mut r = RecentHashes::default();
        for h in 1..=300u64 {
            r.push(Height(h), B256::with_last_byte(h as u8));
        }
        assert_eq!(r.get(300), Some(B256::with_last_byte(44)));
        assert_eq!(r.get(45), Some(B256::with_last_byte(45)));
        assert_eq!(r.get(44), None);
        assert_eq!(r.get(301), None);
        r.push(Height(400), B256::repeat_byte(1));
        assert_eq!(r.get(300), None);
        assert_eq!(r.get(400), Some(B256::repeat_byte(1)));
    }

    #[test]
    fn the_largest_segments_are_scheduled_first() {
        let sized = |n: usize| -> SegmentInput {
            let segment = Segment {
                chain_id: ChainId(1001),
                txs: vec![Default::default(); n],
            };
            (segment, vec![None; n])
        };
        let segments: Vec<SegmentInput> = [2, 9, 0, 9, 5].into_iter().map(sized).collect();
        assert_eq!(largest_first(&segments), vec![1, 3, 4, 0, 2]);
    }
}
