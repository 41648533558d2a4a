//! Historical state: what every block overwrote, so that state can be read at any retained
//! block without keeping copies of it.
//!
//! Two column families, written in the same [`StoreBatch`] as the block's state (the
//! change-set and history-index model of reth):
//!
//! | family | key | value |
//! |---|---|---|
//! | `changes` | height ‖ chain ‖ state key | the key's value before block `height` (empty: absent) |
//! | `history` | chain ‖ state key ‖ height | empty |
//!
//! State keys are those of [`super::state`] without the chain prefix: accounts, storage slots
//! and the chain's commitment. Contract code is keyed by its hash and never overwritten or
//! deleted, so it needs no history. Each servicechain's history is its own key range, like its
//! state.
//!
//! A read of key `k` of chain `c` at block `n` seeks `history` to `c ‖ k ‖ n+1`: the first
//! entry found, at height `h`, is the first change of `k` after `n`, and the value at `n` is
//! what block `h` overwrote (`changes[h ‖ c ‖ k]`); when there is none, `k` has not changed
//! since `n` and its current value is the answer. Every read of one [`HistoricalState`] goes
//! through one RocksDB snapshot, so a block persisted or a pruning pass committed meanwhile
//! never mixes into it.
//!
//! Retention: `meta`'s `history_floor` is the oldest block whose state is readable. A new
//! store starts it at 0 (genesis); a store written before history existed starts it at the
//! height it had. [`Store::prune_history`] deletes the change sets of the oldest blocks and
//! raises the floor in one batch; [`HistoryRetention`] says how far a node prunes.

use super::store::{
    be_u64, state_key, Result, Store, StoreBatch, StoreError, CF_CHANGES, CF_HISTORY, CF_META,
    CF_STATE, META_HISTORY_FLOOR, META_STATE_HEIGHT,
};
use rocksdb::{Direction, IteratorMode, ReadOptions, Snapshot};
use std::collections::BTreeMap;

/// Bytes of the height and chain prefix of a `changes` key.
const CHANGE_PREFIX_LEN: usize = 16;

/// How much state history a node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRetention {
    /// Every block since genesis (or since the store first kept history).
    All,
    /// The state after each of the newest `n` blocks below the head, and the head's; `0` writes
    /// no change sets at all.
    Blocks(u64),
}

impl HistoryRetention {
    /// Whether blocks write change sets.
    pub fn writes(self) -> bool {
        self != Self::Blocks(0)
    }

    /// The oldest block to keep readable when the head is `head` (`None`: keep everything).
    pub fn floor_for(self, head: u64) -> Option<u64> {
        match self {
            Self::All => None,
            Self::Blocks(n) => Some(head.saturating_sub(n)),
        }
    }
}

/// Why state at a block cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("state at block {requested} is pruned: the oldest retained block is {oldest}")]
    Pruned { requested: u64, oldest: u64 },
    #[error("state at block {requested} is not applied yet (applied up to {applied})")]
    Ahead { requested: u64, applied: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The value of every state key a block overwrote, as it was before the block.
#[derive(Debug, Default)]
pub struct BlockChanges {
    /// (chain, state key) → the value before the block (`None`: absent).
    prior: BTreeMap<(u64, Vec<u8>), Option<Vec<u8>>>,
}

impl BlockChanges {
    /// Records the value before the block of each of `keys` of `chain` that an earlier diff of
    /// the same block has not already written. `store` must hold the state before the block
    /// (blocks are persisted in order, so it does).
    pub fn record(&mut self, store: &Store, chain: u64, keys: Vec<Vec<u8>>) -> Result<()> {
        let fresh: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| !self.prior.contains_key(&(chain, k.clone())))
            .collect();
        let values = store.get_states(chain, &fresh)?;
        for (key, value) in fresh.into_iter().zip(values) {
            self.prior.insert((chain, key), value);
        }
        Ok(())
    }

    /// Records values before the block that execution captured, `(state key, value)`, for
    /// keys an earlier diff of the same block has not already written.
    pub fn record_carried(&mut self, chain: u64, entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        for (key, value) in entries {
            self.prior.entry((chain, key)).or_insert(value);
        }
    }

    /// The entries of `carried` whose keys no earlier diff of the block recorded: those that
    /// [`Self::record_carried`] will keep.
    #[cfg(debug_assertions)]
    pub fn fresh(
        &self,
        chain: u64,
        carried: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        carried
            .iter()
            .filter(|(key, _)| !self.prior.contains_key(&(chain, key.clone())))
            .cloned()
            .collect()
    }

    /// Number of keys recorded.
    pub fn len(&self) -> usize {
        self.prior.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prior.is_empty()
    }
}

fn change_key(height: u64, chain: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(CHANGE_PREFIX_LEN + key.len());
    k.extend_from_slice(&height.to_be_bytes());
    k.extend_from_slice(&chain.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn history_key(chain: u64, key: &[u8], height: u64) -> Result<Vec<u8>> {
    let mut k = state_key(chain, key)?;
    k.extend_from_slice(&height.to_be_bytes());
    Ok(k)
}

impl StoreBatch<'_> {
    /// Writes block `height`'s change set and indexes each changed key under it.
    pub fn put_change_sets(&mut self, height: u64, changes: &BlockChanges) -> Result<()> {
        let s = self.store;
        for ((chain, key), prior) in &changes.prior {
            let value = prior.as_deref().unwrap_or_default();
            self.batch
                .put_cf(s.cf(CF_CHANGES), change_key(height, *chain, key), value);
            self.batch
                .put_cf(s.cf(CF_HISTORY), history_key(*chain, key, height)?, []);
        }
        Ok(())
    }

    /// Sets the oldest block whose state is readable.
    pub fn set_history_floor(&mut self, height: u64) {
        let s = self.store;
        self.batch
            .put_cf(s.cf(CF_META), META_HISTORY_FLOOR, height.to_be_bytes());
    }

    /// Deletes every change set and history entry (history switched off).
    pub(super) fn clear_history(&mut self) {
        let s = self.store;
        for cf in [CF_CHANGES, CF_HISTORY] {
            self.batch
                .delete_range_cf(s.cf(cf), Vec::<u8>::new(), vec![0xff; 128]);
        }
    }
}

impl Store {
    /// Current values of `keys` of `chain` (one batched read).
    fn get_states(&self, chain: u64, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let full: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| state_key(chain, k))
            .collect::<Result<_>>()?;
        self.db
            .batched_multi_get_cf(self.cf(CF_STATE), &full, false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|v| v.to_vec()))
                    .map_err(|e| self.db_err("multi-get state", e))
            })
            .collect()
    }

    /// Debug builds check every value execution carried against what the store holds (a
    /// stored zero commitment, written before zero was stored as absent, counts as absent):
    /// every test and debug devnet run then proves the captured history right.
    #[cfg(debug_assertions)]
    pub(super) fn check_carried(&self, chain: u64, carried: &[(Vec<u8>, Option<Vec<u8>>)]) {
        let keys: Vec<Vec<u8>> = carried.iter().map(|(k, _)| k.clone()).collect();
        let Ok(stored) = self.get_states(chain, &keys) else {
            return; // the persist that follows reports the store's error
        };
        for ((key, value), stored) in carried.iter().zip(stored) {
            let stored = stored.filter(|v| !v.iter().all(|b| *b == 0) || v.len() != 32);
            assert_eq!(
                value, &stored,
                "chain {chain} key {key:02x?}: the value execution captured differs from the store's"
            );
        }
    }

    /// The oldest block whose state is readable (`None`: the store predates history).
    pub fn history_floor(&self) -> Result<Option<u64>> {
        Ok(self
            .get_fixed::<8>(CF_META, META_HISTORY_FLOOR)?
            .map(u64::from_be_bytes))
    }

    /// Deletes the change sets of the blocks above the floor up to `to`, at most `max_blocks`
    /// of them, and raises the floor to the last one, in one batch. Returns the new floor.
    pub fn prune_history(&self, to: u64, max_blocks: u64) -> Result<u64> {
        let floor = self.history_floor()?.unwrap_or(0);
        let target = to.min(floor.saturating_add(max_blocks));
        if target <= floor {
            return Ok(floor);
        }
        let mut batch = self.batch();
        let start = (floor + 1).to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut deleted = 0usize;
        for item in self.db.iterator_cf(self.cf(CF_CHANGES), mode) {
            let (key, _) = item.map_err(|e| self.db_err("iterate changes", e))?;
            if key.len() <= CHANGE_PREFIX_LEN {
                return Err(self.malformed_change(&key));
            }
            let height = be_u64(&key[..8]);
            if height > target {
                break;
            }
            let chain = be_u64(&key[8..CHANGE_PREFIX_LEN]);
            let index = history_key(chain, &key[CHANGE_PREFIX_LEN..], height)?;
            batch.batch.delete_cf(self.cf(CF_HISTORY), index);
            batch.batch.delete_cf(self.cf(CF_CHANGES), &key);
            deleted += 1;
        }
        batch.set_history_floor(target);
        batch.commit()?;
        tracing::debug!(floor = target, deleted, "pruned state history");
        Ok(target)
    }

    fn malformed_change(&self, key: &[u8]) -> StoreError {
        StoreError::Undecodable {
            path: self.path().to_path_buf(),
            cf: CF_CHANGES,
            detail: format!("key of {} bytes", key.len()),
        }
    }

    /// A read-only view of the state after block `height`.
    pub fn state_at(&self, height: u64) -> Result<HistoricalState<'_>, HistoryError> {
        let snapshot = self.db.snapshot();
        let meta = |key: &[u8]| -> Result<Option<u64>> {
            let value = snapshot
                .get_cf(self.cf(CF_META), key)
                .map_err(|e| self.db_err("get", e))?;
            value
                .map(|v| {
                    <[u8; 8]>::try_from(v.as_slice())
                        .map(u64::from_be_bytes)
                        .map_err(|_| StoreError::Malformed {
                            path: self.path().to_path_buf(),
                            cf: CF_META,
                            expected: 8,
                            found: v.len(),
                        })
                })
                .transpose()
        };
        let applied = meta(META_STATE_HEIGHT)?.unwrap_or(0);
        if height > applied {
            return Err(HistoryError::Ahead {
                requested: height,
                applied,
            });
        }
        let oldest = meta(META_HISTORY_FLOOR)?.unwrap_or(applied);
        if height < oldest {
            return Err(HistoryError::Pruned {
                requested: height,
                oldest,
            });
        }
        Ok(HistoricalState {
            store: self,
            snapshot,
            height,
        })
    }
}

/// Servicechain state after one retained block, read through a snapshot of the store (its
/// [`crate::exec::StateRead`] lives with the state layout in [`super::state`]).
pub struct HistoricalState<'s> {
    pub(super) store: &'s Store,
    snapshot: Snapshot<'s>,
    height: u64,
}

impl std::fmt::Debug for HistoricalState<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoricalState")
            .field("height", &self.height)
            .finish()
    }
}

impl HistoricalState<'_> {
    /// The block whose state this is.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The value of state key `key` of `chain` after block `self.height()`.
    pub(super) fn value(&self, chain: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let s = self.store;
        let current = state_key(chain, key)?;
        if let Some(changed_at) = self.next_change(chain, key)? {
            let prior = self
                .snapshot
                .get_cf(s.cf(CF_CHANGES), change_key(changed_at, chain, key))
                .map_err(|e| s.db_err("get change", e))?
                .ok_or_else(|| StoreError::Undecodable {
                    path: s.path().to_path_buf(),
                    cf: CF_CHANGES,
                    detail: format!("indexed change of chain {chain} at {changed_at} is missing"),
                })?;
            return Ok(Some(prior).filter(|v| !v.is_empty()));
        }
        self.snapshot
            .get_cf(s.cf(CF_STATE), current)
            .map_err(|e| s.db_err("get", e))
    }

    /// Height of the first block after `self.height` that changed `key` of `chain`.
    fn next_change(&self, chain: u64, key: &[u8]) -> Result<Option<u64>> {
        let Some(after) = self.height.checked_add(1) else {
            return Ok(None);
        };
        let s = self.store;
        let start = history_key(chain, key, after)?;
        let prefix_len = start.len() - 8;
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut iter = s.db.iterator_cf_opt(s.cf(CF_HISTORY), opts, mode);
        match iter.next() {
            None => Ok(None),
            Some(Err(e)) => Err(s.db_err("iterate history", e)),
            // Every history key of one kind of state key has the same length, so a key of
            // this length with this prefix is an entry of this key.
            Some(Ok((found, _)))
                if found.len() == start.len() && found[..prefix_len] == start[..prefix_len] =>
            {
                Ok(Some(be_u64(&found[prefix_len..])))
            }
            Some(Ok(_)) => Ok(None),
        }
    }
}

/// Most blocks whose change sets one pruning batch deletes, so a pass that catches up on a long
/// backlog (history bound lowered, or first start with a bound) commits in bounded batches.
pub const PRUNE_BATCH_BLOCKS: u64 = 64;
/// How often the pruner looks at the head when no block wakes it.
const PRUNE_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// The background thread that keeps the state history within its [`HistoryRetention`]. Woken
/// after each persisted block; stops (and is joined) when dropped.
#[derive(Debug)]
pub struct Pruner {
    wake: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pruner {
    pub(super) fn spawn(store: std::sync::Arc<Store>, retention: HistoryRetention) -> Result<Self> {
        let (wake, woken) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("history-prune".into())
            .spawn(move || prune_loop(&store, retention, &woken))
            .map_err(StoreError::Pruner)?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Tells the pruner a block was persisted (never blocks).
    pub(super) fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn prune_loop(store: &Store, retention: HistoryRetention, woken: &crossbeam_channel::Receiver<()>) {
    loop {
        if let Err(e) = prune_pass(store, retention, woken) {
            tracing::error!(error = %e, "state history pruning failed");
        }
        match woken.recv_timeout(PRUNE_IDLE) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Prunes up to the floor `retention` sets for the current head, one bounded batch at a time;
/// stops early when the pruner is dropped.
fn prune_pass(
    store: &Store,
    retention: HistoryRetention,
    woken: &crossbeam_channel::Receiver<()>,
) -> Result<()> {
    let Some(target) = retention.floor_for(store.state_height()?.unwrap_or(0)) else {
        return Ok(());
    };
    let mut floor = store.history_floor()?.unwrap_or(0);
    while floor < target {
        if matches!(
            woken.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        ) {
            return Ok(());
        }
        floor = store.prune_history(target, PRUNE_BATCH_BLOCKS)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Account, MemoryState, SegmentDiff, StateRead, EMPTY_CODE_HASH};
    use crate::storage::state::CommittedState;
    use crate::types::ChainId;
    use alloy_primitives::{Address, B256, U256};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const A: ChainId = ChainId(1001);
    const B: ChainId = ChainId(1002);

    fn who(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    fn account(nonce: u64, balance: u64) -> Option<Account> {
        Some(Account {
            nonce,
            balance: U256::from(balance),
            code_hash: EMPTY_CODE_HASH,
        })
    }

    /// One diff: account writes, slot writes, and a commitment named after `tag`.
    fn diff(
        chain: ChainId,
        tag: u8,
        accounts: &[(u8, Option<Account>)],
        slots: &[(u8, u64, u64)],
    ) -> SegmentDiff {
        SegmentDiff {
            chain_id: chain,
            accounts: accounts.iter().map(|(a, v)| (who(*a), *v)).collect(),
            storage: slots
                .iter()
                .map(|(a, s, v)| ((who(*a), U256::from(*s)), U256::from(*v)))
                .collect(),
            code: Default::default(),
            state_root: B256::repeat_byte(tag),
            prior: None,
        }
    }

    /// A store with genesis (chain A: 0x01 holds 1000) at block 0, all history kept.
    fn genesis(dir: &std::path::Path) -> (Arc<Store>, MemoryState) {
        let store = Arc::new(Store::open(dir).unwrap());
        let allocations = [(A, who(1), U256::from(1000))];
        drop(CommittedState::open(Arc::clone(&store), &allocations).unwrap());
        let mut model = MemoryState::default();
        for d in crate::exec::genesis_diffs(&allocations) {
            model.apply(&d);
        }
        (store, model)
    }

    fn commit(store: &Store, height: u64, diffs: &[SegmentDiff], retention: HistoryRetention) {
        let diffs: Vec<&SegmentDiff> = diffs.iter().collect();
        let mut batch = store.batch();
        batch.apply_block_state(height, &diffs, retention).unwrap();
        batch.commit().unwrap();
    }

    /// Blocks 1..=6: several changes of one account, a slot set, changed and deleted, an
    /// account created and then deleted (self-destruct), a block whose two diffs of one chain
    /// write the same keys, and the same address changing on another chain.
    fn blocks() -> Vec<Vec<SegmentDiff>> {
        vec![
            vec![diff(A, 1, &[(1, account(1, 900))], &[])],
            vec![diff(A, 2, &[(2, account(0, 5))], &[(9, 1, 7)])],
            vec![
                diff(
                    A,
                    3,
                    &[(1, account(2, 800)), (2, account(0, 6))],
                    &[(9, 1, 8)],
                ),
                diff(A, 4, &[(1, account(3, 700))], &[(9, 1, 9), (9, 2, 1)]),
            ],
            vec![diff(B, 5, &[(1, account(1, 50))], &[(9, 1, 42)])],
            vec![diff(A, 6, &[(2, None)], &[(9, 1, 0)])],
            vec![diff(A, 7, &[(1, account(4, 600))], &[(9, 2, 3)])],
        ]
    }

    /// Every account, slot and commitment the blocks touch, at `height`, equals the model.
    fn assert_matches(store: &Store, height: u64, model: &MemoryState) {
        let view = store.state_at(height).unwrap();
        for chain in [A, B] {
            for a in [1, 2, 3] {
                assert_eq!(
                    view.account(chain, &who(a)).unwrap(),
                    model.account(chain, &who(a)).unwrap(),
                    "account {a} of chain {chain} at block {height}"
                );
            }
            for slot in [1u64, 2, 3] {
                let slot = U256::from(slot);
                assert_eq!(
                    view.storage(chain, &who(9), &slot).unwrap(),
                    model.storage(chain, &who(9), &slot).unwrap(),
                    "slot {slot} of chain {chain} at block {height}"
                );
            }
            assert_eq!(
                view.state_root(chain).unwrap(),
                model.state_root(chain).unwrap(),
                "commitment of chain {chain} at block {height}"
            );
        }
    }

    /// Commits `blocks()` and returns the model state after each block (index = height).
    fn commit_all(store: &Store, mut model: MemoryState) -> Vec<MemoryState> {
        let mut states = vec![model.clone()];
        for (i, diffs) in blocks().iter().enumerate() {
            commit(store, i as u64 + 1, diffs, HistoryRetention::All);
            for d in diffs {
                model.apply(d);
            }
            states.push(model.clone());
        }
        states
    }

    /// A raw RocksDB entry: key and value.
    type RawEntry = (Box<[u8]>, Box<[u8]>);

    /// Every `changes` entry of `store`.
    fn change_sets(store: &Store) -> Vec<RawEntry> {
        store
            .db
            .iterator_cf(store.cf(CF_CHANGES), IteratorMode::Start)
            .map(Result::unwrap)
            .collect()
    }

    /// Diffs that carry the values they overwrite (as execution captures them) write the same
    /// change sets, byte for byte, as diffs whose previous values the store reads.
    #[test]
    fn carried_previous_values_write_the_change_sets_the_store_would_read() {
        let (read_dir, carried_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (read, model) = genesis(read_dir.path());
        let (carried, _) = genesis(carried_dir.path());
        commit_all(&read, model.clone());
        let mut state = model;
        for (i, diffs) in blocks().into_iter().enumerate() {
            let mut with_prior = Vec::new();
            for mut d in diffs {
                d.prior = Some(d.prior_in(&state).unwrap());
                state.apply(&d);
                with_prior.push(d);
            }
            commit(&carried, i as u64 + 1, &with_prior, HistoryRetention::All);
        }
        let written = change_sets(&read);
        assert!(written.len() > 10, "the blocks write change sets");
        assert_eq!(change_sets(&carried), written);
    }

    #[test]
    fn reads_at_every_block_match_what_was_true_then() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        // The model is not trivially constant: the blocks change what is read.
        assert_ne!(states[0], states[6]);
        for (height, state) in states.iter().enumerate() {
            assert_matches(&store, height as u64, state);
        }
        // Spot checks of the rules: a slot deleted reads zero after, its value before; an
        // account deleted reads absent after, present before, absent before its creation.
        let slot = U256::from(1);
        let at = |h| store.state_at(h).unwrap();
        assert_eq!(at(4).storage(A, &who(9), &slot).unwrap(), U256::from(9));
        assert_eq!(at(5).storage(A, &who(9), &slot).unwrap(), U256::ZERO);
        assert_eq!(at(1).account(A, &who(2)).unwrap(), None);
        assert_eq!(at(4).account(A, &who(2)).unwrap(), account(0, 6));
        assert_eq!(at(5).account(A, &who(2)).unwrap(), None);
        // Two diffs of one block: the value before the block is the one before the first.
        assert_eq!(at(2).account(A, &who(1)).unwrap(), account(1, 900));
        assert_eq!(at(3).account(A, &who(1)).unwrap(), account(3, 700));
        // Chains are isolated: chain B's change of the same address is not chain A's.
        assert_eq!(at(4).account(B, &who(1)).unwrap(), account(1, 50));
        assert_eq!(at(3).account(B, &who(1)).unwrap(), None);
        assert_eq!(at(4).account(A, &who(1)).unwrap(), account(3, 700));
    }

    #[test]
    fn history_is_readable_after_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let states = {
            let (store, model) = genesis(dir.path());
            commit_all(&store, model)
        };
        let store = Store::open(dir.path()).unwrap();
        for (height, state) in states.iter().enumerate() {
            assert_matches(&store, height as u64, state);
        }
    }

    #[test]
    fn reads_above_the_applied_state_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        commit_all(&store, model);
        assert!(matches!(
            store.state_at(7),
            Err(HistoryError::Ahead {
                requested: 7,
                applied: 6
            })
        ));
        assert!(matches!(
            store.state_at(u64::MAX),
            Err(HistoryError::Ahead { .. })
        ));
    }

    #[test]
    fn pruning_raises_the_floor_and_keeps_what_is_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        assert_eq!(
            store.prune_history(3, 2).unwrap(),
            2,
            "at most 2 blocks a batch"
        );
        assert_eq!(store.prune_history(3, 64).unwrap(), 3);
        assert_eq!(store.history_floor().unwrap(), Some(3));
        for height in 0..3 {
            match store.state_at(height) {
                Err(HistoryError::Pruned { requested, oldest }) => {
                    assert_eq!((requested, oldest), (height, 3))
                }
                other => panic!("block {height}: {other:?}"),
            }
        }
        for (height, state) in states.iter().enumerate().skip(3) {
            assert_matches(&store, height as u64, state);
        }
        // The pruned change sets are gone from disk, not just hidden.
        let first = store
            .db
            .iterator_cf(store.cf(CF_CHANGES), IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(be_u64(&first.0[..8]), 4);
        let reopened = {
            drop(store);
            Store::open(dir.path()).unwrap()
        };
        assert_eq!(reopened.history_floor().unwrap(), Some(3));
    }

    #[test]
    fn background_pruner_keeps_the_configured_window() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        let pruner = Pruner::spawn(Arc::clone(&store), HistoryRetention::Blocks(2)).unwrap();
        pruner.wake();
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.history_floor().unwrap() != Some(4) {
            assert!(
                Instant::now() < deadline,
                "the pruner never reached block 4"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(pruner);
        assert!(matches!(
            store.state_at(3),
            Err(HistoryError::Pruned { oldest: 4, .. })
        ));
        for (height, state) in states.iter().enumerate().skip(4) {
            assert_matches(&store, height as u64, state);
        }
    }

    #[test]
    fn history_off_writes_no_change_sets_and_reads_only_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = genesis(dir.path());
        commit(&store, 1, &blocks()[0], HistoryRetention::All);
        let off = HistoryRetention::Blocks(0);
        drop(CommittedState::open_with(Arc::clone(&store), &[], off).unwrap());
        let mut changes = store
            .db
            .iterator_cf(store.cf(CF_CHANGES), IteratorMode::Start);
        assert!(changes.next().is_none(), "switching history off deletes it");
        commit(&store, 2, &blocks()[1], off);
        assert!(matches!(
            store.state_at(1),
            Err(HistoryError::Pruned { oldest: 2, .. })
        ));
        assert_eq!(
            store.state_at(2).unwrap().account(A, &who(2)).unwrap(),
            account(0, 5)
        );
        assert!(store
            .db
            .iterator_cf(store.cf(CF_CHANGES), IteratorMode::Start)
            .next()
            .is_none());
    }

    #[test]
    fn a_store_without_history_starts_it_at_its_height() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = genesis(dir.path());
        commit(&store, 1, &blocks()[0], HistoryRetention::All);
        // As a store written before history existed: no floor.
        store
            .db
            .delete_cf(store.cf(CF_META), META_HISTORY_FLOOR)
            .unwrap();
        drop(CommittedState::open(Arc::clone(&store), &[]).unwrap());
        assert_eq!(store.history_floor().unwrap(), Some(1));
        assert!(matches!(
            store.state_at(0),
            Err(HistoryError::Pruned { oldest: 1, .. })
        ));
    }
}
