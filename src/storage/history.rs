//! Historical state: what every block overwrote, so that state can be read at any retained
//! block without keeping copies of it.
//!
//! Two column families (the change-set and history-index model of reth):
//!
//! | family | key | value | written |
//! |---|---|---|---|
//! | `changes` | height ‖ chain | the block's [change set](super::changeset) of the chain: each key it wrote, with its value before the block | with the block, in its [`StoreBatch`] |
//! | `history` | chain ‖ state key ‖ height | the key's value before block `height` (empty: absent) | later, by the [`HistoryWorker`] |
//!
//! State keys are those of [`super::state`] without the chain prefix: accounts, storage slots
//! and the chain's commitment. Contract code is keyed by its hash and never overwritten or
//! deleted, so it needs no history. Each servicechain's history is its own key range, like its
//! state.
//!
//! Persisting a block adds one value per chain it changed, however many keys that is; the
//! per-key index, whose random-order inserts cost more than the block's own state writes, is
//! built off the persist path. `meta`'s `history_indexed` is the highest block the index
//! covers. A read of key `k` of chain `c` at block `n` first seeks `history` to
//! `c ‖ k ‖ n+1` (when `n` is below the indexed height): an entry found is the first indexed
//! change of `k` after `n`, and its value the answer. Otherwise it looks `k` up in the change
//! sets of the blocks above both `n` and the indexed height, oldest first (few: the worker
//! follows the head); when none wrote `k`, its current value is the answer. Every read of one
//! [`HistoricalState`] goes through one RocksDB snapshot, so a block persisted, an index batch
//! or a pruning pass committed meanwhile never mixes into it.
//!
//! Retention: `meta`'s `history_floor` is the oldest block whose state is readable. A new
//! store starts it at 0 (genesis); a store written before history existed, or with an earlier
//! layout of it, starts it at the height it had. [`Store::prune_history`] deletes the change
//! sets and index entries of the oldest blocks and raises the floor in one batch;
//! [`HistoryRetention`] says how far a node prunes.

use super::changeset::{self, ChangeSet};
use super::store::{
    be_u64, state_key, Result, Store, StoreBatch, StoreError, CF_CHANGES, CF_HISTORY, CF_META,
    CF_STATE, MAX_STATE_KEY_LEN, META_HISTORY_FLOOR, META_HISTORY_INDEXED, META_HISTORY_LAYOUT,
    META_STATE_HEIGHT,
};
use rocksdb::{Direction, IteratorMode, ReadOptions, Snapshot};
use std::collections::BTreeMap;

/// Bytes of a `changes` key: height and chain.
const CHANGE_KEY_LEN: usize = 16;

/// The on-disk layout of history this code reads and writes, recorded in `meta` (layout 1,
/// unrecorded, kept one `changes` entry per key and an index without values).
pub(super) const HISTORY_LAYOUT: u8 = 2;

/// A state key and its value before a block, as the store holds it (`None`: absent).
pub type PriorEntry = (Vec<u8>, Option<Vec<u8>>);

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
    /// Chain → its entries in the order recorded; of two entries of one key the first wins
    /// (an earlier diff of the block wrote the key first, so only its value is the block's).
    chains: BTreeMap<u64, Vec<PriorEntry>>,
}

impl BlockChanges {
    /// Records the current value in `store` of each of `keys` of `chain`. `store` must hold
    /// the state before the block (blocks are persisted in order, so it does).
    pub fn record(&mut self, store: &Store, chain: u64, keys: Vec<Vec<u8>>) -> Result<()> {
        let values = store.get_states(chain, &keys)?;
        self.chains
            .entry(chain)
            .or_default()
            .extend(keys.into_iter().zip(values));
        Ok(())
    }

    /// Records values before the block that execution captured, `(state key, value)`.
    pub fn record_carried(&mut self, chain: u64, entries: Vec<PriorEntry>) {
        self.chains.entry(chain).or_default().extend(entries);
    }

    /// Each chain's change set: its entries sorted by key, the first recorded of each key.
    fn into_change_sets(self) -> impl Iterator<Item = (u64, Vec<PriorEntry>)> {
        self.chains.into_iter().map(|(chain, mut entries)| {
            // Stable, so the first recorded of equal keys stays first and dedup keeps it.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, earlier| later.0 == earlier.0);
            (chain, entries)
        })
    }
}

fn change_key(height: u64, chain: u64) -> [u8; CHANGE_KEY_LEN] {
    let mut k = [0; CHANGE_KEY_LEN];
    k[..8].copy_from_slice(&height.to_be_bytes());
    k[8..].copy_from_slice(&chain.to_be_bytes());
    k
}

fn history_key(chain: u64, key: &[u8], height: u64) -> Result<Vec<u8>> {
    let mut k = state_key(chain, key)?;
    k.extend_from_slice(&height.to_be_bytes());
    Ok(k)
}

impl StoreBatch<'_> {
    /// Writes block `height`'s change sets, one value per chain.
    pub fn put_change_sets(&mut self, height: u64, changes: BlockChanges) -> Result<()> {
        let s = self.store;
        for (chain, entries) in changes.into_change_sets() {
            #[cfg(debug_assertions)]
            s.check_change_set(chain, &entries);
            let bytes = changeset::encode(&entries).map_err(|source| StoreError::ChangeSet {
                path: s.path().to_path_buf(),
                height,
                chain,
                source,
            })?;
            self.batch
                .put_cf(s.cf(CF_CHANGES), change_key(height, chain), bytes);
        }
        Ok(())
    }

    /// Sets the oldest block whose state is readable.
    pub fn set_history_floor(&mut self, height: u64) {
        let s = self.store;
        self.batch
            .put_cf(s.cf(CF_META), META_HISTORY_FLOOR, height.to_be_bytes());
    }

    /// Sets the highest block whose change sets are in the per-key index.
    pub(super) fn set_history_indexed(&mut self, height: u64) {
        let s = self.store;
        self.batch
            .put_cf(s.cf(CF_META), META_HISTORY_INDEXED, height.to_be_bytes());
    }

    /// Records that history is kept in this module's layout.
    pub(super) fn set_history_layout(&mut self) {
        let s = self.store;
        self.batch
            .put_cf(s.cf(CF_META), META_HISTORY_LAYOUT, [HISTORY_LAYOUT]);
    }

    /// Deletes every change set and history entry, and starts history afresh at `height`
    /// (history switched off, or kept in an earlier layout).
    pub(super) fn restart_history(&mut self, height: u64) {
        let s = self.store;
        // Above every key: the longest is a history key (chain, state key, height).
        let end = vec![0xff; 8 + MAX_STATE_KEY_LEN + 9];
        for cf in [CF_CHANGES, CF_HISTORY] {
            self.batch
                .delete_range_cf(s.cf(cf), Vec::<u8>::new(), end.clone());
        }
        self.set_history_floor(height);
        self.set_history_indexed(height);
        self.set_history_layout();
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

    /// Debug builds check every change set against what the store holds before the block (a
    /// stored zero commitment, written before zero was stored as absent, counts as absent):
    /// every test and debug devnet run then proves the values execution captured right.
    #[cfg(debug_assertions)]
    fn check_change_set(&self, chain: u64, entries: &[PriorEntry]) {
        let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
        let Ok(stored) = self.get_states(chain, &keys) else {
            return; // the persist that follows reports the store's error
        };
        for ((key, value), stored) in entries.iter().zip(stored) {
            let stored = stored.filter(|v| !v.iter().all(|b| *b == 0) || v.len() != 32);
            assert_eq!(
                value, &stored,
                "chain {chain} key {key:02x?}: the value execution captured differs from the store's"
            );
        }
    }

    /// A `meta` height.
    fn meta_height(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.get_fixed::<8>(CF_META, key)?.map(u64::from_be_bytes))
    }

    /// The oldest block whose state is readable (`None`: the store predates history).
    pub fn history_floor(&self) -> Result<Option<u64>> {
        self.meta_height(META_HISTORY_FLOOR)
    }

    /// The highest block whose change sets are in the per-key index (never below the floor).
    pub fn history_indexed(&self) -> Result<u64> {
        let floor = self.history_floor()?.unwrap_or(0);
        Ok(self
            .meta_height(META_HISTORY_INDEXED)?
            .unwrap_or(0)
            .max(floor))
    }

    /// The layout of the history this store keeps (`None`: the first, unrecorded one, or
    /// none at all).
    pub(super) fn history_layout(&self) -> Result<Option<u8>> {
        Ok(self
            .get_fixed::<1>(CF_META, META_HISTORY_LAYOUT)?
            .map(|[v]| v))
    }

    /// Whether the history kept is in an earlier layout than this module's: none recorded, or
    /// a `changes` key of another length at either end (an older binary wrote after this one
    /// had marked the store). A newer layout is an error: this code cannot read it.
    pub(super) fn history_is_earlier_layout(&self) -> Result<bool> {
        match self.history_layout()? {
            Some(HISTORY_LAYOUT) => {}
            Some(newer) if newer > HISTORY_LAYOUT => {
                return Err(StoreError::Undecodable {
                    path: self.path().to_path_buf(),
                    cf: CF_META,
                    detail: format!(
                        "state history is kept in layout {newer}, newer than this build's \
                         {HISTORY_LAYOUT}: run a newer kaon"
                    ),
                })
            }
            _ => return Ok(true),
        }
        for mode in [IteratorMode::Start, IteratorMode::End] {
            if let Some(item) = self.db.iterator_cf(self.cf(CF_CHANGES), mode).next() {
                let (key, _) = item.map_err(|e| self.db_err("iterate changes", e))?;
                if key.len() != CHANGE_KEY_LEN {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Calls `each` with the stored bytes of every change set of blocks `from..=to`, in order
    /// of height, until it returns `false`.
    fn for_each_change_set(
        &self,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_CHANGES), mode) {
            let (key, value) = item.map_err(|e| self.db_err("iterate changes", e))?;
            if key.len() != CHANGE_KEY_LEN {
                return Err(self.malformed_change(&key));
            }
            let (height, chain) = (be_u64(&key[..8]), be_u64(&key[8..]));
            if height > to || !each(height, chain, &value)? {
                break;
            }
        }
        Ok(())
    }

    /// Every entry of a stored change set, checked.
    fn change_set_entries<'v>(
        &self,
        height: u64,
        chain: u64,
        bytes: &'v [u8],
    ) -> Result<Vec<changeset::Entry<'v>>> {
        let set = self.change_set(height, chain, bytes)?;
        set.entries()
            .collect::<Result<_, _>>()
            .map_err(|e| self.bad_change_set(height, chain, e))
    }

    /// Stored change-set bytes, header checked.
    fn change_set<'v>(&self, height: u64, chain: u64, bytes: &'v [u8]) -> Result<ChangeSet<'v>> {
        ChangeSet::new(bytes).map_err(|source| self.bad_change_set(height, chain, source))
    }

    fn bad_change_set(
        &self,
        height: u64,
        chain: u64,
        source: changeset::ChangeSetError,
    ) -> StoreError {
        StoreError::ChangeSet {
            path: self.path().to_path_buf(),
            height,
            chain,
            source,
        }
    }

    /// Indexes per key the change sets of up to `max_blocks` blocks above the indexed height
    /// (fewer once they hold [`INDEX_BATCH_ENTRIES`] entries, at least one block) and returns
    /// the new indexed height. The entries go in key order, in batches of at most
    /// [`INDEX_CHUNK_ENTRIES`] so that a persist never waits behind one long write; only the
    /// last batch raises `history_indexed`. Entries of one key are adjacent in that order, its
    /// lower heights first, so a reader that finds an entry above the indexed height has also
    /// found every lower one it needs: reads stay right between the batches. The index is
    /// derived data: its batches are not synced, and one lost in a crash is rebuilt from the
    /// change sets.
    pub fn index_history(&self, max_blocks: u64) -> Result<u64> {
        let _writer = self.history_writer();
        let indexed = self.history_indexed()?;
        let applied = self.state_height()?.unwrap_or(0);
        let last = applied.min(indexed.saturating_add(max_blocks));
        if last <= indexed {
            return Ok(indexed);
        }
        let mut target = indexed;
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.for_each_change_set(indexed + 1, last, |height, chain, bytes| {
            if height > target && entries.len() >= INDEX_BATCH_ENTRIES {
                return Ok(false);
            }
            for (key, value) in self.change_set_entries(height, chain, bytes)? {
                let value = value.map(<[u8]>::to_vec).unwrap_or_default();
                entries.push((history_key(chain, key, height)?, value));
            }
            target = height;
            Ok(true)
        })?;
        // Blocks that changed nothing have no change set: the whole range is done.
        if entries.len() < INDEX_BATCH_ENTRIES {
            target = last;
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let count = entries.len();
        let mut chunks = entries.chunks(INDEX_CHUNK_ENTRIES).peekable();
        loop {
            let mut batch = self.batch();
            for (key, value) in chunks.next().unwrap_or_default() {
                batch.batch.put_cf(self.cf(CF_HISTORY), key, value);
            }
            if chunks.peek().is_none() {
                batch.set_history_indexed(target);
                batch.commit_unsynced()?;
                break;
            }
            batch.commit_unsynced()?;
        }
        tracing::debug!(indexed = target, entries = count, "indexed state history");
        Ok(target)
    }

    /// Deletes the change sets and index entries of the blocks above the floor up to `to` (at
    /// most the applied height), at most `max_blocks` of them, and raises the floor to the last
    /// one, in one batch. Returns the new floor.
    pub fn prune_history(&self, to: u64, max_blocks: u64) -> Result<u64> {
        let _writer = self.history_writer();
        let floor = self.history_floor()?.unwrap_or(0);
        let applied = self.state_height()?.unwrap_or(0);
        let target = to.min(applied).min(floor.saturating_add(max_blocks));
        if target <= floor {
            return Ok(floor);
        }
        let indexed = self.history_indexed()?;
        let mut batch = self.batch();
        let mut deleted = 0usize;
        self.for_each_change_set(floor + 1, target, |height, chain, bytes| {
            if height <= indexed {
                match self.change_set_entries(height, chain, bytes) {
                    Ok(entries) => {
                        for (key, _) in &entries {
                            let index = history_key(chain, key, height)?;
                            batch.batch.delete_cf(self.cf(CF_HISTORY), index);
                        }
                        deleted += entries.len();
                    }
                    // Its index entries cannot be listed; left below the floor, no read
                    // reaches them. Pruning goes on rather than keep history forever.
                    Err(e) => tracing::error!(error = %e, "pruning a damaged change set"),
                }
            }
            batch
                .batch
                .delete_cf(self.cf(CF_CHANGES), change_key(height, chain));
            Ok(true)
        })?;
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
        let indexed = meta(META_HISTORY_INDEXED)?.unwrap_or(0).max(oldest);
        Ok(HistoricalState {
            store: self,
            snapshot,
            height,
            indexed,
            applied,
        })
    }
}

/// Servicechain state after one retained block, read through a snapshot of the store (its
/// [`crate::exec::StateRead`] lives with the state layout in [`super::state`]).
pub struct HistoricalState<'s> {
    pub(super) store: &'s Store,
    snapshot: Snapshot<'s>,
    height: u64,
    /// The indexed and the applied height in the snapshot.
    indexed: u64,
    applied: u64,
}

impl std::fmt::Debug for HistoricalState<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoricalState")
            .field("height", &self.height)
            .field("indexed", &self.indexed)
            .field("applied", &self.applied)
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
        if let Some(prior) = self.indexed_change(chain, key)? {
            return Ok(prior);
        }
        for height in self.height.max(self.indexed) + 1..=self.applied {
            if let Some(prior) = self.unindexed_change(height, chain, key)? {
                return Ok(prior);
            }
        }
        let s = self.store;
        self.snapshot
            .get_cf(s.cf(CF_STATE), state_key(chain, key)?)
            .map_err(|e| s.db_err("get", e))
    }

    /// The value before the first indexed change of `key` of `chain` after `self.height`
    /// (`None`: no indexed block after it changed the key).
    fn indexed_change(&self, chain: u64, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        if self.height >= self.indexed {
            return Ok(None);
        }
        let s = self.store;
        let start = history_key(chain, key, self.height + 1)?;
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
            Some(Ok((found, value)))
                if found.len() == start.len() && found[..prefix_len] == start[..prefix_len] =>
            {
                Ok(Some(Some(value.into_vec()).filter(|v| !v.is_empty())))
            }
            Some(Ok(_)) => Ok(None),
        }
    }

    /// The value of `key` of `chain` before block `height`, if that block changed it.
    fn unindexed_change(
        &self,
        height: u64,
        chain: u64,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>> {
        let s = self.store;
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        let Some(bytes) =
            s.db.get_pinned_cf_opt(s.cf(CF_CHANGES), change_key(height, chain), &opts)
                .map_err(|e| s.db_err("get change set", e))?
        else {
            return Ok(None);
        };
        let set = s.change_set(height, chain, &bytes)?;
        let found = set
            .get(key)
            .map_err(|e| s.bad_change_set(height, chain, e))?;
        Ok(found.map(|prior| prior.map(<[u8]>::to_vec)))
    }
}

/// Most blocks whose change sets one pruning batch deletes, so a pass that catches up on a long
/// backlog (history bound lowered, or first start with a bound) commits in bounded batches.
pub const PRUNE_BATCH_BLOCKS: u64 = 64;
/// Blocks the worker waits for before it indexes, and indexes in one pass: inserted together
/// in key order, the entries of a key changed in several of them go in side by side, which
/// halves the index's cost for keys that change often (`benches/history.rs`).
pub const INDEX_BATCH_BLOCKS: u64 = 16;
/// Most entries one indexing pass collects (blocks beyond are left to the next pass, so memory
/// stays bounded however many keys blocks change): ≈ 20 MB of keys and values.
pub const INDEX_BATCH_ENTRIES: usize = 200_000;
/// Most entries one index write holds (a persist waits for at most one such write).
pub const INDEX_CHUNK_ENTRIES: usize = 8_192;
/// Longest a block waits to be indexed when fewer than [`INDEX_BATCH_BLOCKS`] follow it (an
/// idle chain); reads meanwhile look it up in its change set.
const INDEX_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// The background thread that indexes each persisted block's change sets per key and keeps
/// the state history within its [`HistoryRetention`]. Woken after each persisted block;
/// stops (and is joined) when dropped.
#[derive(Debug)]
pub struct HistoryWorker {
    wake: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HistoryWorker {
    pub(super) fn spawn(store: std::sync::Arc<Store>, retention: HistoryRetention) -> Result<Self> {
        Self::spawn_with(store, retention, INDEX_DELAY)
    }

    /// [`Self::spawn`] with blocks indexed at the latest `delay` after they wait.
    fn spawn_with(
        store: std::sync::Arc<Store>,
        retention: HistoryRetention,
        delay: std::time::Duration,
    ) -> Result<Self> {
        let (wake, woken) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || history_loop(&store, retention, delay, &woken))
            .map_err(StoreError::HistoryWorker)?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Tells the worker a block was persisted (never blocks).
    pub(super) fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for HistoryWorker {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the state history worker panicked");
            }
        }
    }
}

fn history_loop(
    store: &Store,
    retention: HistoryRetention,
    delay: std::time::Duration,
    woken: &crossbeam_channel::Receiver<()>,
) {
    let mut waiting_since = None;
    loop {
        // Each step on its own: a change set that cannot be indexed must not stop pruning.
        if let Err(e) = prune_pass(store, retention, woken) {
            tracing::error!(error = %e, "state history pruning failed");
        }
        if let Err(e) = index_pass(store, delay, woken, &mut waiting_since) {
            tracing::error!(error = %e, "state history indexing failed");
        }
        match woken.recv_timeout(delay) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Whether the worker's owner dropped it (a wake-up read meanwhile is consumed: the pass that
/// checks is already running).
fn dropped(woken: &crossbeam_channel::Receiver<()>) -> bool {
    matches!(
        woken.try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

/// Indexes the blocks waiting once [`INDEX_BATCH_BLOCKS`] of them are, or once the oldest has
/// waited `delay` (`waiting_since`: since when blocks wait), one pass at a time.
fn index_pass(
    store: &Store,
    delay: std::time::Duration,
    woken: &crossbeam_channel::Receiver<()>,
    waiting_since: &mut Option<std::time::Instant>,
) -> Result<()> {
    while !dropped(woken) {
        let waiting = store
            .state_height()?
            .unwrap_or(0)
            .saturating_sub(store.history_indexed()?);
        if waiting == 0 {
            *waiting_since = None;
            break;
        }
        let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
        if waiting < INDEX_BATCH_BLOCKS && since.elapsed() < delay {
            break;
        }
        store.index_history(INDEX_BATCH_BLOCKS)?;
        *waiting_since = None;
    }
    Ok(())
}

/// Prunes up to the floor `retention` sets for the head, one bounded batch at a time.
fn prune_pass(
    store: &Store,
    retention: HistoryRetention,
    woken: &crossbeam_channel::Receiver<()>,
) -> Result<()> {
    let Some(target) = retention.floor_for(store.state_height()?.unwrap_or(0)) else {
        return Ok(());
    };
    let mut floor = store.history_floor()?.unwrap_or(0);
    while floor < target && !dropped(woken) {
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
        assert_eq!(written.len(), 6, "one change set per block and chain");
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

    /// Waits (bounded) until `done` holds of the store.
    fn wait_for(store: &Store, what: &str, done: impl Fn(&Store) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(store) {
            assert!(Instant::now() < deadline, "the history worker never {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn background_worker_indexes_and_keeps_the_configured_window() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        // Six blocks wait, fewer than a batch: the worker indexes them once they have waited
        // its delay (short here).
        let delay = Duration::from_millis(100);
        let worker =
            HistoryWorker::spawn_with(Arc::clone(&store), HistoryRetention::Blocks(2), delay)
                .unwrap();
        worker.wake();
        wait_for(&store, "reached floor 4", |s| {
            s.history_floor().unwrap() == Some(4) && s.history_indexed().unwrap() == 6
        });
        drop(worker);
        assert_eq!(
            index_entries(&store).iter().map(|(_, h)| *h).min(),
            Some(5),
            "index entries of pruned blocks are deleted"
        );
        assert!(matches!(
            store.state_at(3),
            Err(HistoryError::Pruned { oldest: 4, .. })
        ));
        for (height, state) in states.iter().enumerate().skip(4) {
            assert_matches(&store, height as u64, state);
        }
    }

    /// (state key without chain, height) of every `history` entry.
    fn index_entries(store: &Store) -> Vec<(Vec<u8>, u64)> {
        store
            .db
            .iterator_cf(store.cf(CF_HISTORY), IteratorMode::Start)
            .map(Result::unwrap)
            .map(|(k, _)| (k[8..k.len() - 8].to_vec(), be_u64(&k[k.len() - 8..])))
            .collect()
    }

    /// Reads give the same answers whatever part of the history the index covers: none of
    /// it (read from the change sets), some of it, or all of it.
    #[test]
    fn reads_match_however_far_the_index_has_come() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        assert_eq!(store.history_indexed().unwrap(), 0);
        for indexed in 0..=6 {
            assert_eq!(store.history_indexed().unwrap(), indexed);
            for (height, state) in states.iter().enumerate() {
                assert_matches(&store, height as u64, state);
            }
            assert_eq!(store.index_history(1).unwrap(), (indexed + 1).min(6));
        }
        // Every key of every change set is indexed, under the block that changed it.
        let entries = index_entries(&store);
        assert!(
            entries.contains(&(vec![0], 6)),
            "the commitment (key 0) changed in block 6"
        );
        let mut sets = 0;
        store
            .for_each_change_set(1, 6, |height, chain, bytes| {
                for (key, _) in store.change_set_entries(height, chain, bytes).unwrap() {
                    assert!(entries.contains(&(key.to_vec(), height)), "block {height}");
                    sets += 1;
                }
                Ok(true)
            })
            .unwrap();
        // Chain A's and chain B's entries of one address are separate entries.
        assert_eq!(entries.len(), sets);
    }

    /// An index pass whose entries do not fit one write goes in several, and reads taken
    /// between them (entries above the indexed height already written) stay right.
    #[test]
    fn reads_stay_right_between_the_writes_of_one_index_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        // As if the first write of a pass covering blocks 1..=6 had landed: the entries of
        // the keys that sort first (chain A's accounts), without the indexed height.
        let mut batch = store.batch();
        let mut written = 0;
        store
            .for_each_change_set(1, 6, |height, chain, bytes| {
                for (key, value) in store.change_set_entries(height, chain, bytes).unwrap() {
                    if chain == A.0 && key.len() == 21 {
                        let k = history_key(chain, key, height).unwrap();
                        batch
                            .batch
                            .put_cf(store.cf(CF_HISTORY), k, value.unwrap_or_default());
                        written += 1;
                    }
                }
                Ok(true)
            })
            .unwrap();
        batch.commit().unwrap();
        assert!(written > 3);
        assert_eq!(store.history_indexed().unwrap(), 0);
        for (height, state) in states.iter().enumerate() {
            assert_matches(&store, height as u64, state);
        }
    }

    /// A view keeps reading the state of its block while blocks are indexed and pruned under
    /// it: every read goes through its snapshot.
    #[test]
    fn a_view_is_unchanged_by_indexing_and_pruning_after_it_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        let view = store.state_at(2).unwrap();
        assert_eq!(store.index_history(64).unwrap(), 6);
        assert_eq!(store.prune_history(5, 64).unwrap(), 5);
        assert!(matches!(
            store.state_at(2),
            Err(HistoryError::Pruned { .. })
        ));
        for a in [1, 2] {
            assert_eq!(
                view.account(A, &who(a)).unwrap(),
                states[2].account(A, &who(a)).unwrap()
            );
        }
        assert_eq!(
            view.storage(A, &who(9), &U256::from(1)).unwrap(),
            states[2].storage(A, &who(9), &U256::from(1)).unwrap()
        );
        // Pruning never passes the applied state: its block stays readable.
        assert_eq!(store.prune_history(u64::MAX, 64).unwrap(), 6);
        assert_matches(&store, 6, &states[6]);
    }

    /// Reopening a store keeps its history (the layout check recognises its own layout).
    #[test]
    fn history_survives_reopening_through_the_committed_state() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        store.index_history(3).unwrap();
        drop(CommittedState::open(Arc::clone(&store), &[]).unwrap());
        assert_eq!(store.history_floor().unwrap(), Some(0));
        for (height, state) in states.iter().enumerate() {
            assert_matches(&store, height as u64, state);
        }
    }

    /// A layout newer than this code's is refused, not dropped as an old one.
    #[test]
    fn a_newer_history_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        commit_all(&store, model);
        store
            .db
            .put_cf(store.cf(CF_META), META_HISTORY_LAYOUT, [HISTORY_LAYOUT + 1])
            .unwrap();
        let err = CommittedState::open(Arc::clone(&store), &[]).unwrap_err();
        assert!(err.to_string().contains("layout 3"), "{err}");
        assert_eq!(change_sets(&store).len(), 6, "nothing deleted");
    }

    /// Pruning blocks the index has not reached yet deletes their change sets and moves the
    /// indexed height up with the floor, so nothing below the floor is indexed later.
    #[test]
    fn pruning_ahead_of_the_index_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        let states = commit_all(&store, model);
        assert_eq!(store.index_history(2).unwrap(), 2);
        assert_eq!(store.prune_history(4, 64).unwrap(), 4);
        assert_eq!(store.history_indexed().unwrap(), 4);
        assert!(index_entries(&store).is_empty(), "blocks 1 and 2 unindexed");
        for (height, state) in states.iter().enumerate().skip(4) {
            assert_matches(&store, height as u64, state);
        }
        assert_eq!(store.index_history(64).unwrap(), 6);
        assert!(index_entries(&store).iter().all(|(_, h)| *h > 4));
        for (height, state) in states.iter().enumerate().skip(4) {
            assert_matches(&store, height as u64, state);
        }
    }

    /// A change set whose bytes are damaged on disk gives a clear error naming the block and
    /// chain, not a panic or a wrong value.
    #[test]
    fn a_damaged_change_set_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (store, model) = genesis(dir.path());
        commit_all(&store, model);
        store
            .db
            .put_cf(store.cf(CF_CHANGES), change_key(2, A.0), [0, 0, 0, 9, 1])
            .unwrap();
        let err = store.state_at(1).unwrap().account(A, &who(2)).unwrap_err();
        assert!(err.to_string().contains("chain 1001 at block 2"), "{err}");
        let err = store.index_history(64).unwrap_err();
        assert!(
            matches!(err, StoreError::ChangeSet { height: 2, .. }),
            "{err}"
        );
    }

    /// A store that kept history in the first layout (one `changes` entry per key, no layout
    /// recorded), or to which an older binary wrote such entries after this one had marked it,
    /// starts history again at its height instead of misreading it.
    #[test]
    fn history_of_an_earlier_layout_is_dropped_not_misread() {
        for marked in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (store, model) = genesis(dir.path());
            commit_all(&store, model);
            let mut old_key = change_key(7, A.0).to_vec();
            old_key.extend_from_slice(&[0x01; 21]);
            store.db.put_cf(store.cf(CF_CHANGES), &old_key, []).unwrap();
            if !marked {
                store
                    .db
                    .delete_cf(store.cf(CF_META), META_HISTORY_LAYOUT)
                    .unwrap();
                store.db.delete_cf(store.cf(CF_CHANGES), &old_key).unwrap();
            }
            drop(CommittedState::open(Arc::clone(&store), &[]).unwrap());
            assert_eq!(store.history_floor().unwrap(), Some(6), "marked: {marked}");
            assert!(change_sets(&store).is_empty());
            assert!(matches!(
                store.state_at(5),
                Err(HistoryError::Pruned { oldest: 6, .. })
            ));
            assert_eq!(store.history_layout().unwrap(), Some(HISTORY_LAYOUT));
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
