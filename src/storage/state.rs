//! Servicechain state, receipts and logs in the RocksDB store, and [`CommittedState`]: the
//! node's view of committed state while the newest blocks are still on their way to disk.
//!
//! Layout (keys after the 8-byte big-endian chain id that [`Store`]'s `state` family adds):
//!
//! | family | key | value |
//! |---|---|---|
//! | `state` | chain ‖ `00` | state commitment (32 bytes) |
//! | `state` | chain ‖ `01` ‖ address | nonce (8) ‖ balance (32) ‖ code hash (32) |
//! | `state` | chain ‖ `02` ‖ address ‖ slot | value (32 bytes; absent = zero) |
//! | `state` | chain ‖ `03` ‖ code hash | contract code |
//! | `receipts` | height ‖ segment | RLP `[chain, [tx hash…], [receipt…]]` |
//! | `chain_segments` | chain ‖ height | segment (4) ‖ logs bloom (256) |
//! | `meta` | `state_height` | height up to which state is applied (8) |
//!
//! A chain's state is one key range, so an idle chain costs nothing per block; log queries walk
//! one chain's `chain_segments` range and open only the segments whose bloom may match.
//!
//! Every block is written by one [`StoreBatch`]: its indexes, every segment's state diff and
//! receipts, the block's change set ([`super::history`]: what the diffs overwrote), and the
//! new `state_height`, so after a crash the store is at some block boundary and restart
//! re-executes exactly the blocks above `state_height`.

use super::history::{BlockChanges, HistoricalState, HistoryRetention, HistoryWorker, PriorEntry};
use super::store::{
    be_u32, be_u64, state_key, BlockIndex, Result, Store, StoreBatch, StoreError, TxLocation,
    CF_CHAIN_SEGMENTS, CF_META, CF_RECEIPTS, CF_STATE, META_STATE_HEIGHT,
};
use crate::crypto::hash::keccak256;
use crate::exec::{
    genesis_diffs, Account, ChainSnapshot, Log, LogFilter, Receipt, SegmentDiff, SegmentExecution,
    SnapshotError, StateError, StateRead, MAX_SNAPSHOT_ENTRIES,
};
use crate::types::{Block, BlockHash, ChainId, Height};
use alloy_primitives::{Address, Bloom, Bytes, B256, U256};
use alloy_rlp::{Decodable, RlpDecodable, RlpEncodable};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

const TAG_ROOT: u8 = 0;
const TAG_ACCOUNT: u8 = 1;
const TAG_STORAGE: u8 = 2;
const TAG_CODE: u8 = 3;
/// Bytes of a stored account: nonce, balance, code hash.
const ACCOUNT_LEN: usize = 8 + 32 + 32;
/// Bytes of a `chain_segments` value: segment index and bloom.
const SEGMENT_ENTRY_LEN: usize = 4 + 256;

fn account_key(address: &Address) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = TAG_ACCOUNT;
    k[1..].copy_from_slice(address.as_slice());
    k
}

fn slot_key(address: &Address, slot: &U256) -> [u8; 53] {
    let mut k = [0u8; 53];
    k[0] = TAG_STORAGE;
    k[1..21].copy_from_slice(address.as_slice());
    k[21..].copy_from_slice(&slot.to_be_bytes::<32>());
    k
}

/// The state keys (without the chain prefix) `diff` writes, code aside: contract code is keyed
/// by its hash and never overwritten.
fn written_keys(diff: &SegmentDiff) -> Vec<Vec<u8>> {
    let accounts = diff.accounts.keys().map(|a| account_key(a).to_vec());
    let slots = diff.storage.keys().map(|(a, s)| slot_key(a, s).to_vec());
    accounts
        .chain(slots)
        .chain(std::iter::once(vec![TAG_ROOT]))
        .collect()
}

/// The previous value of each key `diff` writes, encoded as the store holds it, where the diff
/// carries it from execution; and the keys whose previous value must be read.
fn split_prior(diff: &SegmentDiff) -> (Vec<PriorEntry>, Vec<Vec<u8>>) {
    let Some(prior) = &diff.prior else {
        return (Vec::new(), written_keys(diff));
    };
    let mut carried = Vec::with_capacity(diff.accounts.len() + diff.storage.len() + 1);
    let mut missing = Vec::new();
    for address in diff.accounts.keys() {
        let key = account_key(address).to_vec();
        match prior.accounts.get(address) {
            Some(a) => carried.push((key, a.as_ref().map(|a| encode_account(a).to_vec()))),
            None => missing.push(key),
        }
    }
    for (address, slot) in diff.storage.keys() {
        let key = slot_key(address, slot).to_vec();
        match prior.storage.get(&(*address, *slot)) {
            // A zero slot is not stored (`apply_diff` deletes it).
            Some(v) => carried.push((key, (!v.is_zero()).then(|| v.to_be_bytes::<32>().to_vec()))),
            None => missing.push(key),
        }
    }
    // A chain without state has no commitment stored; reads take that as zero.
    let root = prior.state_root;
    carried.push((vec![TAG_ROOT], (root != B256::ZERO).then(|| root.to_vec())));
    (carried, missing)
}

fn code_key(hash: &B256) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = TAG_CODE;
    k[1..].copy_from_slice(hash.as_slice());
    k
}

fn encode_account(a: &Account) -> [u8; ACCOUNT_LEN] {
    let mut v = [0u8; ACCOUNT_LEN];
    v[..8].copy_from_slice(&a.nonce.to_be_bytes());
    v[8..40].copy_from_slice(&a.balance.to_be_bytes::<32>());
    v[40..].copy_from_slice(a.code_hash.as_slice());
    v
}

fn decode_account(v: &[u8; ACCOUNT_LEN]) -> Account {
    Account {
        nonce: be_u64(&v[..8]),
        balance: U256::from_be_slice(&v[8..40]),
        code_hash: B256::from_slice(&v[40..]),
    }
}

fn height_segment_key(height: u64, segment: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&height.to_be_bytes());
    k[8..].copy_from_slice(&segment.to_be_bytes());
    k
}

fn chain_height_key(chain: ChainId, height: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&chain.to_be_bytes());
    k[8..].copy_from_slice(&height.to_be_bytes());
    k
}

/// What the `receipts` family stores per segment.
#[derive(RlpEncodable, RlpDecodable)]
struct StoredSegment {
    chain_id: ChainId,
    tx_hashes: Vec<B256>,
    receipts: Vec<Receipt>,
}

/// The receipts of one committed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReceipts {
    pub height: u64,
    /// Position of the segment in its container (0 is the regionchain's).
    pub segment: u32,
    pub chain_id: ChainId,
    /// Ethereum hashes of the segment's transactions, in order.
    pub tx_hashes: Vec<B256>,
    pub receipts: Vec<Receipt>,
}

impl SegmentReceipts {
    /// Index, within the segment, of the first log of transaction `index`.
    pub fn first_log_index(&self, index: usize) -> usize {
        self.receipts[..index.min(self.receipts.len())]
            .iter()
            .map(|r| r.logs.len())
            .sum()
    }
}

/// The receipt of one committed transaction, where it is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReceipt {
    pub location: TxLocation,
    pub chain_id: ChainId,
    pub tx_hash: B256,
    pub receipt: Receipt,
    /// Index, within the segment, of this receipt's first log.
    pub first_log_index: usize,
}

/// One log found by [`Store::logs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub height: u64,
    pub segment: u32,
    /// Transaction position within the segment.
    pub tx_index: u32,
    pub tx_hash: B256,
    /// Log position within the segment.
    pub log_index: u32,
    pub log: Log,
}

impl StoreBatch<'_> {
    /// Writes one segment's state changes and the chain's new commitment.
    pub fn apply_diff(&mut self, diff: &SegmentDiff) -> Result<()> {
        let chain = diff.chain_id.0;
        for (address, account) in &diff.accounts {
            match account {
                Some(a) => self.put_state(chain, &account_key(address), &encode_account(a))?,
                None => self.delete_state(chain, &account_key(address))?,
            }
        }
        for ((address, slot), value) in &diff.storage {
            let key = slot_key(address, slot);
            match value.is_zero() {
                true => self.delete_state(chain, &key)?,
                false => self.put_state(chain, &key, &value.to_be_bytes::<32>())?,
            }
        }
        for (hash, code) in &diff.code {
            self.put_state(chain, &code_key(hash), code)?;
        }
        // Zero is "no state yet": not stored, as a chain without state has no commitment.
        match diff.state_root == B256::ZERO {
            true => self.delete_state(chain, &[TAG_ROOT]),
            false => self.put_state(chain, &[TAG_ROOT], diff.state_root.as_slice()),
        }
    }

    /// Writes the receipts of segment `segment` of block `height` and indexes the segment
    /// under its chain with its logs bloom.
    pub fn put_receipts(
        &mut self,
        height: u64,
        segment: u32,
        chain_id: ChainId,
        tx_hashes: Vec<B256>,
        receipts: Vec<Receipt>,
        bloom: &Bloom,
    ) {
        let stored = StoredSegment {
            chain_id,
            tx_hashes,
            receipts,
        };
        let s = self.store;
        self.batch.put_cf(
            s.cf(CF_RECEIPTS),
            height_segment_key(height, segment),
            alloy_rlp::encode(&stored),
        );
        let mut entry = [0u8; SEGMENT_ENTRY_LEN];
        entry[..4].copy_from_slice(&segment.to_be_bytes());
        entry[4..].copy_from_slice(bloom.as_slice());
        self.batch.put_cf(
            s.cf(CF_CHAIN_SEGMENTS),
            chain_height_key(chain_id, height),
            entry,
        );
    }

    /// Writes block `height`'s state: the change set of what `diffs` overwrite (unless
    /// `retention` keeps no history, which moves the readable floor to the block instead), the
    /// diffs in order, and the new state height. The store must hold the state before the block.
    pub fn apply_block_state(
        &mut self,
        height: u64,
        diffs: &[&SegmentDiff],
        retention: HistoryRetention,
    ) -> Result<()> {
        if retention.writes() {
            let mut changes = BlockChanges::default();
            for diff in diffs {
                let (carried, missing) = split_prior(diff);
                changes.record_carried(diff.chain_id.0, carried);
                changes.record(self.store, diff.chain_id.0, missing)?;
            }
            self.put_change_sets(height, changes)?;
        } else {
            self.set_history_floor(height);
        }
        for diff in diffs {
            self.apply_diff(diff)?;
        }
        self.set_state_height(height);
        Ok(())
    }

    /// Records that state is applied up to block `height`.
    pub fn set_state_height(&mut self, height: u64) {
        let s = self.store;
        self.batch
            .put_cf(s.cf(CF_META), META_STATE_HEIGHT, height.to_be_bytes());
    }
}

impl Store {
    /// Height up to which servicechain state is applied (`None`: never initialised).
    pub fn state_height(&self) -> Result<Option<u64>> {
        Ok(self
            .get_fixed::<8>(CF_META, META_STATE_HEIGHT)?
            .map(u64::from_be_bytes))
    }

    /// An account of `chain` at the latest applied state.
    pub fn account(&self, chain: ChainId, address: &Address) -> Result<Option<Account>> {
        let key = state_key(chain.0, &account_key(address))?;
        Ok(self
            .get_fixed::<ACCOUNT_LEN>(CF_STATE, &key)?
            .map(|v| decode_account(&v)))
    }

    /// A storage slot of a contract of `chain` (zero when unset).
    pub fn storage(&self, chain: ChainId, address: &Address, slot: &U256) -> Result<U256> {
        let key = state_key(chain.0, &slot_key(address, slot))?;
        Ok(self
            .get_fixed::<32>(CF_STATE, &key)?
            .map_or(U256::ZERO, |v| U256::from_be_bytes(v)))
    }

    /// Contract code of `chain` by hash.
    pub fn code(&self, chain: ChainId, code_hash: &B256) -> Result<Option<Bytes>> {
        let key = state_key(chain.0, &code_key(code_hash))?;
        Ok(self.get(CF_STATE, &key)?.map(Bytes::from))
    }

    /// The state commitment of `chain` after its last applied segment (zero: none yet).
    pub fn state_root(&self, chain: ChainId) -> Result<B256> {
        let key = state_key(chain.0, &[TAG_ROOT])?;
        Ok(self
            .get_fixed::<32>(CF_STATE, &key)?
            .map_or(B256::ZERO, B256::from))
    }

    /// Every account and non-zero storage slot of `chain` at the latest applied state, in key
    /// order; [`StoreError::TooLarge`] once more than `max_entries` are read (a chain too large
    /// to hold in memory is never read whole).
    #[allow(clippy::type_complexity)]
    pub fn chain_state(
        &self,
        chain: ChainId,
        max_entries: usize,
    ) -> Result<(BTreeMap<Address, Account>, BTreeMap<(Address, U256), U256>)> {
        let mut accounts = BTreeMap::new();
        let mut storage = BTreeMap::new();
        let start = state_key(chain.0, &[TAG_ACCOUNT])?;
        let end = state_key(chain.0, &[TAG_CODE])?;
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_STATE), mode) {
            let (key, value) = item.map_err(|e| self.db_err("iterate chain state", e))?;
            if key.as_ref() >= end.as_slice() {
                break;
            }
            if accounts.len() + storage.len() >= max_entries {
                return Err(StoreError::TooLarge {
                    what: "chain state",
                    limit: max_entries,
                });
            }
            let bad = || self.undecodable(CF_STATE, "state entry of the wrong size".into());
            match (key.get(8), key.len(), value.len()) {
                (Some(&TAG_ACCOUNT), 29, ACCOUNT_LEN) => {
                    let v: &[u8; ACCOUNT_LEN] = value.as_ref().try_into().map_err(|_| bad())?;
                    accounts.insert(Address::from_slice(&key[9..]), decode_account(v));
                }
                (Some(&TAG_STORAGE), 61, 32) => {
                    let slot = U256::from_be_slice(&key[29..]);
                    storage.insert(
                        (Address::from_slice(&key[9..29]), slot),
                        U256::from_be_slice(&value),
                    );
                }
                _ => return Err(bad()),
            }
        }
        Ok((accounts, storage))
    }

    fn undecodable(&self, cf: &'static str, detail: String) -> StoreError {
        StoreError::Undecodable {
            path: self.path().to_path_buf(),
            cf,
            detail,
        }
    }

    /// The receipts of segment `segment` of block `height`, if it was a servicechain's.
    pub fn segment_receipts(&self, height: u64, segment: u32) -> Result<Option<SegmentReceipts>> {
        let Some(bytes) = self.get(CF_RECEIPTS, &height_segment_key(height, segment))? else {
            return Ok(None);
        };
        let stored = StoredSegment::decode(&mut bytes.as_slice()).map_err(|e| {
            self.undecodable(
                CF_RECEIPTS,
                format!("height {height} segment {segment}: {e}"),
            )
        })?;
        Ok(Some(SegmentReceipts {
            height,
            segment,
            chain_id: stored.chain_id,
            tx_hashes: stored.tx_hashes,
            receipts: stored.receipts,
        }))
    }

    /// The receipts `chain`'s segment of block `height` produced (`None`: the chain had no
    /// segment there).
    pub fn receipts_of(&self, height: u64, chain: ChainId) -> Result<Option<SegmentReceipts>> {
        match self.chain_segment(chain, height)? {
            Some((segment, _)) => self.segment_receipts(height, segment),
            None => Ok(None),
        }
    }

    /// Segment index and bloom of `chain`'s segment in block `height`.
    fn chain_segment(&self, chain: ChainId, height: u64) -> Result<Option<(u32, Bloom)>> {
        Ok(self
            .get_fixed::<SEGMENT_ENTRY_LEN>(CF_CHAIN_SEGMENTS, &chain_height_key(chain, height))?
            .map(|v| (be_u32(&v[..4]), Bloom::from_slice(&v[4..]))))
    }

    /// The receipt of the committed servicechain transaction `tx_hash` (`None`: unknown, or a
    /// regionchain system transaction, which has no EVM receipt).
    pub fn receipt(&self, tx_hash: &B256) -> Result<Option<TxReceipt>> {
        let Some(location) = self.tx_location(&tx_hash.0)? else {
            return Ok(None);
        };
        let Some(segment) = self.segment_receipts(location.height, location.segment)? else {
            return Ok(None);
        };
        let index = location.index as usize;
        let Some(receipt) = segment.receipts.get(index).cloned() else {
            return Err(self.undecodable(
                CF_RECEIPTS,
                format!("tx index points past the receipts of {location:?}"),
            ));
        };
        Ok(Some(TxReceipt {
            location,
            chain_id: segment.chain_id,
            tx_hash: *tx_hash,
            first_log_index: segment.first_log_index(index),
            receipt,
        }))
    }

    /// Logs of `chain` in blocks `from..=to` that pass `filter`, in chain order, at most
    /// `limit` of them. Only this chain's segments are visited, and only those whose bloom may
    /// match are read.
    pub fn logs(
        &self,
        chain: ChainId,
        from: u64,
        to: u64,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>> {
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        let start = chain_height_key(chain, from);
        let end = chain_height_key(chain, to);
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_CHAIN_SEGMENTS), mode) {
            let (key, value) = item.map_err(|e| self.db_err("iterate chain segments", e))?;
            if key.as_ref() > end.as_slice() {
                break;
            }
            if value.len() != SEGMENT_ENTRY_LEN || key.len() != 16 {
                return Err(self.undecodable(CF_CHAIN_SEGMENTS, "entry of the wrong size".into()));
            }
            if !filter.may_match(&Bloom::from_slice(&value[4..])) {
                continue;
            }
            let height = be_u64(&key[8..]);
            let Some(segment) = self.segment_receipts(height, be_u32(&value[..4]))? else {
                return Err(self.undecodable(
                    CF_CHAIN_SEGMENTS,
                    format!("height {height}: indexed segment has no receipts"),
                ));
            };
            if collect_logs(&segment, filter, limit, &mut out) {
                break;
            }
        }
        Ok(out)
    }
}

/// Appends `segment`'s logs that pass `filter` to `out`; true once `out` holds `limit`.
fn collect_logs(
    segment: &SegmentReceipts,
    filter: &LogFilter,
    limit: usize,
    out: &mut Vec<LoggedEvent>,
) -> bool {
    let mut log_index = 0u32;
    for (tx_index, receipt) in segment.receipts.iter().enumerate() {
        for log in &receipt.logs {
            if filter.matches(log) {
                out.push(LoggedEvent {
                    height: segment.height,
                    segment: segment.segment,
                    tx_index: tx_index as u32,
                    tx_hash: segment.tx_hashes.get(tx_index).copied().unwrap_or_default(),
                    log_index,
                    log: log.clone(),
                });
                if out.len() >= limit {
                    return true;
                }
            }
            log_index += 1;
        }
    }
    false
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        StateError::Backend(Box::new(e))
    }
}

/// The latest applied state, straight from RocksDB (consistent with the indexed head).
impl StateRead for Store {
    fn account(&self, chain: ChainId, address: &Address) -> Result<Option<Account>, StateError> {
        Ok(Store::account(self, chain, address)?)
    }

    fn storage(&self, chain: ChainId, address: &Address, slot: &U256) -> Result<U256, StateError> {
        Ok(Store::storage(self, chain, address, slot)?)
    }

    fn code(&self, chain: ChainId, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        Ok(Store::code(self, chain, code_hash)?)
    }

    fn state_root(&self, chain: ChainId) -> Result<B256, StateError> {
        Ok(Store::state_root(self, chain)?)
    }
}

impl HistoricalState<'_> {
    /// A fixed-size state value at this block (`None`: absent).
    fn fixed<const N: usize>(
        &self,
        chain: ChainId,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<[u8; N]>, StateError> {
        let Some(value) = self.value(chain.0, key)? else {
            return Ok(None);
        };
        <[u8; N]>::try_from(value.as_slice())
            .map(Some)
            .map_err(|_| StateError::Corrupt {
                chain,
                what,
                detail: format!(
                    "{} bytes at block {}, expected {N}",
                    value.len(),
                    self.height()
                ),
            })
    }
}

/// The state after a past block: what EVM calls and state reads at that block see.
impl StateRead for HistoricalState<'_> {
    fn account(&self, chain: ChainId, address: &Address) -> Result<Option<Account>, StateError> {
        Ok(self
            .fixed::<ACCOUNT_LEN>(chain, &account_key(address), "account")?
            .map(|v| decode_account(&v)))
    }

    fn storage(&self, chain: ChainId, address: &Address, slot: &U256) -> Result<U256, StateError> {
        Ok(self
            .fixed::<32>(chain, &slot_key(address, slot), "storage slot")?
            .map_or(U256::ZERO, U256::from_be_bytes))
    }

    /// Code is keyed by its hash and never deleted, so the current store answers for any block.
    fn code(&self, chain: ChainId, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        Ok(self.store.code(chain, code_hash)?)
    }

    fn state_root(&self, chain: ChainId) -> Result<B256, StateError> {
        Ok(self
            .fixed::<32>(chain, &[TAG_ROOT], "state commitment")?
            .map_or(B256::ZERO, B256::from))
    }
}

/// A committed block's execution output, held in memory until it is durable.
#[derive(Debug)]
pub struct PendingBlock {
    pub height: Height,
    pub hash: BlockHash,
    /// Genesis allocations of servicechains the block registered (applied first).
    pub genesis: Vec<SegmentDiff>,
    /// Servicechain segments: (position in the block, execution).
    pub segments: Vec<(u32, SegmentExecution)>,
    /// Chain → (its segment, its genesis diff), for reads.
    by_chain: HashMap<ChainId, (Option<usize>, Option<usize>)>,
}

impl PendingBlock {
    pub fn new(
        height: Height,
        hash: BlockHash,
        genesis: Vec<SegmentDiff>,
        segments: Vec<(u32, SegmentExecution)>,
    ) -> Self {
        let mut by_chain: HashMap<ChainId, (Option<usize>, Option<usize>)> = HashMap::new();
        for (i, (_, e)) in segments.iter().enumerate() {
            by_chain.entry(e.diff.chain_id).or_default().0 = Some(i);
        }
        for (i, diff) in genesis.iter().enumerate() {
            by_chain.entry(diff.chain_id).or_default().1 = Some(i);
        }
        Self {
            height,
            hash,
            genesis,
            segments,
            by_chain,
        }
    }

    /// `chain`'s diffs in this block, newest first.
    fn diffs_of(&self, chain: ChainId) -> impl Iterator<Item = &SegmentDiff> {
        let (segment, genesis) = self.by_chain.get(&chain).copied().unwrap_or_default();
        let segment = segment.map(|i| &self.segments[i].1.diff);
        segment.into_iter().chain(genesis.map(|i| &self.genesis[i]))
    }
}

/// Whether a persisted block's write is synced now or by the next block's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSync {
    /// Synced as the store is configured (the last block of a run).
    Now,
    /// Not synced: the next block's synced write makes it durable.
    ByTheNext,
}

/// Committed servicechain state of a node: what RocksDB holds, plus the blocks consensus has
/// committed that the persist stage has not written yet (newest last). Reads see every
/// committed block; RocksDB never runs ahead of the block log, because only [`Self::persist`],
/// called after the block log append, writes a block's state.
#[derive(Debug)]
pub struct CommittedState {
    store: Arc<Store>,
    pending: RwLock<VecDeque<Arc<PendingBlock>>>,
    retention: HistoryRetention,
    /// Indexes change sets and prunes them beyond `retention` in the background (`None`: no
    /// history kept).
    history: Option<HistoryWorker>,
}

/// Why a block could not be persisted.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {height} was persisted without its execution being committed first")]
    NotCommitted { height: Height },
}

impl CommittedState {
    /// Opens the state in `store` keeping all history; a store that never held state gets
    /// `allocations` (the genesis) and `state_height` 0 in one batch.
    pub fn open(store: Arc<Store>, allocations: &[(ChainId, Address, U256)]) -> Result<Self> {
        Self::open_with(store, allocations, HistoryRetention::All)
    }

    /// [`Self::open`] keeping the state history `retention` says. A store that kept no history
    /// so far, or kept it in an earlier layout, starts it at its current height; with history
    /// switched off, what was kept is deleted. Keeping history starts the background
    /// [`HistoryWorker`].
    pub fn open_with(
        store: Arc<Store>,
        allocations: &[(ChainId, Address, U256)],
        retention: HistoryRetention,
    ) -> Result<Self> {
        let mut batch = store.batch();
        let height = match store.state_height()? {
            Some(height) => height,
            None => {
                for diff in genesis_diffs(allocations) {
                    batch.apply_diff(&diff)?;
                }
                batch.set_state_height(0);
                0
            }
        };
        if !retention.writes() || store.history_floor()?.is_none() {
            batch.restart_history(height);
        } else if store.history_is_earlier_layout()? {
            tracing::warn!(
                path = %store.path().display(),
                height,
                "state history was kept in an earlier layout: it is dropped and starts again at the current block"
            );
            batch.restart_history(height);
        }
        batch.commit()?;
        let history = match retention.writes() {
            true => Some(HistoryWorker::spawn(Arc::clone(&store), retention)?),
            false => None,
        };
        Ok(Self {
            store,
            pending: RwLock::default(),
            retention,
            history,
        })
    }

    /// How much state history this node keeps.
    pub fn retention(&self) -> HistoryRetention {
        self.retention
    }

    /// The store underneath (indexes, receipts and logs of persisted blocks).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Holds a committed block's execution until [`Self::persist`] writes it.
    pub fn committed(&self, block: PendingBlock) {
        self.pending
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Arc::new(block));
    }

    /// Committed blocks not yet persisted.
    pub fn pending_blocks(&self) -> usize {
        self.pending.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes `block` (appended to the block log at `log_offset`) with its held execution in
    /// one batch: indexes, state diffs, receipts, blooms and the new `state_height`.
    pub fn persist(&self, block: &Block, log_offset: u64) -> Result<(), PersistError> {
        self.persist_with(block, log_offset, WalSync::Now)
    }

    /// [`Self::persist`], syncing the WAL only when `sync` says so: a run of blocks persisted
    /// together syncs once, at its last ([`super::store::StoreBatch::commit_unsynced`]).
    pub fn persist_with(
        &self,
        block: &Block,
        log_offset: u64,
        sync: WalSync,
    ) -> Result<(), PersistError> {
        let header = block.header();
        let pending = self
            .pending
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .filter(|p| p.height == header.height && p.hash == block.hash())
            .cloned()
            .ok_or(PersistError::NotCommitted {
                height: header.height,
            })?;
        let hashes: Vec<Vec<B256>> = block
            .segments
            .iter()
            .map(|s| s.txs.iter().map(keccak256).collect())
            .collect();
        let txs: Vec<([u8; 32], u32, u32)> = hashes
            .iter()
            .enumerate()
            .flat_map(|(seg, hs)| {
                hs.iter()
                    .enumerate()
                    .map(move |(i, h)| (h.0, seg as u32, i as u32))
            })
            .collect();
        let mut batch = self.store.batch();
        batch.index_block(&BlockIndex {
            height: header.height.0,
            hash: block.hash().0 .0,
            log_offset,
            txs: &txs,
        });
        let diffs: Vec<&SegmentDiff> = pending
            .genesis
            .iter()
            .chain(pending.segments.iter().map(|(_, e)| &e.diff))
            .collect();
        batch.apply_block_state(header.height.0, &diffs, self.retention)?;
        for (segment, execution) in &pending.segments {
            batch.put_receipts(
                header.height.0,
                *segment,
                execution.diff.chain_id,
                hashes.get(*segment as usize).cloned().unwrap_or_default(),
                execution.receipts.clone(),
                &execution.bloom,
            );
        }
        match sync {
            WalSync::Now => batch.commit()?,
            WalSync::ByTheNext => batch.commit_unsynced()?,
        }
        self.pending
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some(history) = &self.history {
            history.wake();
        }
        Ok(())
    }

    /// `chain`'s whole state now — what RocksDB holds with every held block's diffs on top —
    /// and its commitment. Reads under the held blocks' lock, so a block persisted meanwhile
    /// is seen either in the store or among the held ones, and applying a held block's
    /// diffs again over a store that already has them changes nothing.
    pub fn snapshot(&self, chain: ChainId) -> Result<(ChainSnapshot, B256), StateError> {
        let pending = self.pending.read().unwrap_or_else(|e| e.into_inner());
        // The store may hold more entries than the state has (held blocks may delete some),
        // but never more than the limit plus what the held blocks write: past that, the
        // state is too large on every node, however far each has persisted.
        let held_writes: usize = pending
            .iter()
            .flat_map(|block| block.diffs_of(chain))
            .map(|d| d.accounts.len() + d.storage.len())
            .sum();
        let most = MAX_SNAPSHOT_ENTRIES.saturating_add(held_writes);
        let (mut accounts, mut storage) =
            self.store.chain_state(chain, most).map_err(|e| match e {
                StoreError::TooLarge { .. } => StateError::Snapshot(SnapshotError::TooLarge),
                other => other.into(),
            })?;
        let mut root = self.store.state_root(chain)?;
        let mut held_code: HashMap<B256, Bytes> = HashMap::new();
        for block in pending.iter() {
            let diffs = block
                .genesis
                .iter()
                .chain(block.segments.iter().map(|(_, e)| &e.diff));
            for diff in diffs.filter(|d| d.chain_id == chain) {
                for (address, account) in &diff.accounts {
                    match account {
                        Some(a) => accounts.insert(*address, *a),
                        None => accounts.remove(address),
                    };
                }
                for (key, value) in &diff.storage {
                    match value.is_zero() {
                        true => storage.remove(key),
                        false => storage.insert(*key, *value),
                    };
                }
                held_code.extend(diff.code.iter().map(|(h, c)| (*h, c.clone())));
                root = diff.state_root;
            }
        }
        let snapshot = ChainSnapshot::build::<StateError>(&accounts, &storage, |hash| {
            match held_code.get(hash) {
                Some(code) => Ok(Some(code.clone())),
                None => Ok(self.store.code(chain, hash)?),
            }
        })?;
        Ok((snapshot, root))
    }

    /// The state as written, for clients ([`WrittenState`]).
    pub fn written(&self) -> WrittenState<'_> {
        WrittenState(self)
    }

    /// The value `find` reads out of the genesis diff of `chain` held with a block applied and
    /// not yet written: the state a registration or adoption created, none of the blocks
    /// after it.
    fn pending_genesis<T>(
        &self,
        chain: ChainId,
        find: impl Fn(&SegmentDiff) -> Option<T>,
    ) -> Option<T> {
        let pending = self.pending.read().unwrap_or_else(|e| e.into_inner());
        pending.iter().find_map(|block| {
            let (_, genesis) = block.by_chain.get(&chain)?;
            find(&block.genesis[(*genesis)?])
        })
    }

    /// The newest held value `find` reads out of `chain`'s pending diffs.
    fn pending<T>(&self, chain: ChainId, find: impl Fn(&SegmentDiff) -> Option<T>) -> Option<T> {
        let pending = self.pending.read().unwrap_or_else(|e| e.into_inner());
        pending
            .iter()
            .rev()
            .find_map(|block| block.diffs_of(chain).find_map(&find))
    }
}

impl StateRead for CommittedState {
    fn account(&self, chain: ChainId, address: &Address) -> Result<Option<Account>, StateError> {
        match self.pending(chain, |d| d.accounts.get(address).copied()) {
            Some(account) => Ok(account),
            None => Ok(self.store.account(chain, address)?),
        }
    }

    fn storage(&self, chain: ChainId, address: &Address, slot: &U256) -> Result<U256, StateError> {
        match self.pending(chain, |d| d.storage.get(&(*address, *slot)).copied()) {
            Some(value) => Ok(value),
            None => Ok(self.store.storage(chain, address, slot)?),
        }
    }

    fn code(&self, chain: ChainId, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        match self.pending(chain, |d| d.code.get(code_hash).cloned()) {
            Some(code) => Ok(Some(code)),
            None => Ok(self.store.code(chain, code_hash)?),
        }
    }

    fn state_root(&self, chain: ChainId) -> Result<B256, StateError> {
        match self.pending(chain, |d| Some(d.state_root)) {
            Some(root) => Ok(root),
            None => Ok(self.store.state_root(chain)?),
        }
    }
}

/// The state as written to RocksDB, which a block's receipts and index join in the same batch:
/// what clients read, so that a nonce or balance never shows a block whose receipts cannot be
/// read yet (through the applied state a wallet saw its nonce complete while the receipt of
/// its last transfer was `null`, and the head one block behind). A chain that a block applied
/// and not yet written created (registered or adopted) has nothing written: it reads as the
/// state that block created (its genesis diff), never as empty and never ahead of the blocks
/// after it, so reads of it only move forward.
pub struct WrittenState<'a>(&'a CommittedState);

impl WrittenState<'_> {
    fn read<T>(
        &self,
        chain: ChainId,
        created: impl Fn(&SegmentDiff) -> Option<T>,
        written: impl FnOnce(&Store) -> Result<T>,
    ) -> Result<T, StateError> {
        match self.0.pending_genesis(chain, created) {
            Some(value) => Ok(value),
            None => Ok(written(&self.0.store)?),
        }
    }
}

impl StateRead for WrittenState<'_> {
    fn account(&self, chain: ChainId, address: &Address) -> Result<Option<Account>, StateError> {
        self.read(
            chain,
            |d| d.accounts.get(address).copied(),
            |s| s.account(chain, address),
        )
    }

    fn storage(&self, chain: ChainId, address: &Address, slot: &U256) -> Result<U256, StateError> {
        self.read(
            chain,
            |d| d.storage.get(&(*address, *slot)).copied(),
            |s| s.storage(chain, address, slot),
        )
    }

    fn code(&self, chain: ChainId, code_hash: &B256) -> Result<Option<Bytes>, StateError> {
        self.read(
            chain,
            |d| d.code.get(code_hash).cloned().map(Some),
            |s| s.code(chain, code_hash),
        )
    }

    fn state_root(&self, chain: ChainId) -> Result<B256, StateError> {
        self.read(chain, |d| Some(d.state_root), |s| s.state_root(chain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SegmentCommitment;

    const CHAIN: ChainId = ChainId(1001);
    const NEW: ChainId = ChainId(1002);

    fn account(nonce: u64) -> Account {
        Account {
            nonce,
            ..Default::default()
        }
    }

    fn diff(chain_id: ChainId, address: Address, nonce: u64) -> SegmentDiff {
        SegmentDiff {
            chain_id,
            accounts: [(address, Some(account(nonce)))].into_iter().collect(),
            storage: Default::default(),
            code: Default::default(),
            state_root: B256::repeat_byte(nonce as u8),
            prior: None,
        }
    }

    fn execution(diff: SegmentDiff) -> SegmentExecution {
        SegmentExecution {
            commitment: SegmentCommitment {
                chain_id: diff.chain_id,
                tx_count: 0,
                tx_root: B256::ZERO,
                receipts_root: B256::ZERO,
                state_root: diff.state_root,
            },
            receipts: Vec::new(),
            bloom: Default::default(),
            diff,
            nonces: Vec::new(),
        }
    }

    #[test]
    fn clients_read_the_written_state_and_a_chain_created_in_an_applied_block_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let state = CommittedState::open(store, &[(CHAIN, a, U256::from(5))]).unwrap();
        // Block 1 applied, not written: it moves `a`'s nonce on CHAIN and creates NEW with `b`.
        state.committed(PendingBlock::new(
            Height(1),
            BlockHash(B256::repeat_byte(1)),
            vec![diff(NEW, b, 7)],
            vec![(1, execution(diff(CHAIN, a, 1)))],
        ));
        // Block 2 applied too: it moves `b` on the new chain.
        state.committed(PendingBlock::new(
            Height(2),
            BlockHash(B256::repeat_byte(2)),
            Vec::new(),
            vec![(1, execution(diff(NEW, b, 8)))],
        ));
        assert_eq!(state.nonce(CHAIN, &a).unwrap(), 1, "applied");
        assert_eq!(state.nonce(NEW, &b).unwrap(), 8, "applied");
        let written = state.written();
        assert_eq!(written.nonce(CHAIN, &a).unwrap(), 0, "written");
        assert_eq!(
            written.nonce(NEW, &b).unwrap(),
            7,
            "a chain created in an applied block reads as created, not ahead"
        );
        assert_eq!(written.state_root(NEW).unwrap(), B256::repeat_byte(7));
        assert_eq!(
            written.nonce(NEW, &a).unwrap(),
            0,
            "not in its genesis: empty"
        );
    }
}
