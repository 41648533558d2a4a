//! RocksDB store for indexes and state: the random-access side of storage.
//!
//! The block log ([`super::blocklog`]) holds the blocks themselves; this store holds what is
//! looked up by key: height → log offset, block hash → height, tx hash → location, and the
//! per-servicechain state that execution produces. The storage stage appends a batch of
//! containers to the log first and then commits one [`StoreBatch`] per container, so the index
//! never points at bytes that are not durable; after a crash the index may lag the log (the
//! log is the authority) but never leads it. This is the only module of the crate that uses
//! the `rocksdb` crate.
//!
//! Column families: `meta` (small named values, the indexed head, the state-applied height,
//! the oldest readable block), `height_index`, `hash_index`, `tx_index`, `state`, `receipts`
//! and `chain_segments` (laid out by [`super::state`]), `changes` and `history` (laid out by
//! [`super::history`]). Integers in keys are big-endian so that
//! RocksDB's byte order is numeric order; state keys are prefixed with the servicechain id
//! (big-endian u64) so each chain's state is one contiguous key range.

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch,
    WriteOptions, DB,
};
use std::path::{Path, PathBuf};

pub(super) const CF_META: &str = "meta";
const CF_HEIGHT: &str = "height_index";
const CF_HASH: &str = "hash_index";
const CF_TX: &str = "tx_index";
pub(super) const CF_STATE: &str = "state";
pub(super) const CF_RECEIPTS: &str = "receipts";
pub(super) const CF_CHAIN_SEGMENTS: &str = "chain_segments";
pub(super) const CF_CHANGES: &str = "changes";
pub(super) const CF_HISTORY: &str = "history";
const COLUMN_FAMILIES: [&str; 9] = [
    CF_META,
    CF_HEIGHT,
    CF_HASH,
    CF_TX,
    CF_STATE,
    CF_RECEIPTS,
    CF_CHAIN_SEGMENTS,
    CF_CHANGES,
    CF_HISTORY,
];

/// `meta` key of the last indexed block: height ‖ hash ‖ log offset. Internal `meta` keys
/// start with 0x00; keys set through `put_meta` are stored under a 0x01 prefix, so callers
/// can never overwrite the head.
const META_HEAD: &[u8] = b"\x00head";
/// `meta` key of the height up to which servicechain state is applied (see [`super::state`]).
pub(super) const META_STATE_HEIGHT: &[u8] = b"\x00state_height";
/// `meta` key of the oldest block whose state is readable (see [`super::history`]).
pub(super) const META_HISTORY_FLOOR: &[u8] = b"\x00history_floor";
/// Highest block whose change sets are in the per-key history index ([`super::history`]).
pub(super) const META_HISTORY_INDEXED: &[u8] = b"\x00history_indexed";
/// Layout of the state history ([`super::history::HISTORY_LAYOUT`]).
pub(super) const META_HISTORY_LAYOUT: &[u8] = b"\x00history_layout";
const META_USER_PREFIX: u8 = 0x01;

/// Longest state key accepted (after the chain-id prefix). Storage slots and account keys are
/// 20–64 bytes; 1 KiB leaves room for composite keys while keeping a bound on bad input.
pub const MAX_STATE_KEY_LEN: usize = 1024;

/// Default shared block cache. Small because the project's machines have a few GiB of RAM;
/// operators raise it with [`StoreOptions::block_cache_bytes`].
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 128 << 20;

/// Bloom filter bits per key: ~1 % false positives, so a lookup of an absent hash (the common
/// case for `eth_getTransactionReceipt` on pending txs) touches no data block.
pub const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Options for [`Store::open_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Shared LRU block cache for all column families, in bytes.
    pub block_cache_bytes: usize,
    /// fsync the WAL on every commit (measured 10–20 % slower than WAL without sync). With it
    /// off, a machine crash can lose the last commits, which the node re-derives from the log.
    pub sync_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            sync_writes: true,
        }
    }
}

/// Errors of the store; each names the database directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Missing permissions, a lock held by another process, or corruption. The database is
    /// never repaired or reset automatically.
    #[error("store {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("store {path}: {op}: {source}")]
    Db {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    #[error("store {path}: malformed value in {cf}: expected {expected} bytes, found {found}")]
    Malformed {
        path: PathBuf,
        cf: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("state key of {len} bytes is over MAX_STATE_KEY_LEN ({MAX_STATE_KEY_LEN})")]
    KeyTooLarge { len: usize },
    #[error("{what} has more than {limit} entries")]
    TooLarge { what: &'static str, limit: usize },
    #[error("cannot start the state history worker: {0}")]
    HistoryWorker(#[source] std::io::Error),
    #[error("store {path}: change set of chain {chain} at block {height}: {source}")]
    ChangeSet {
        path: PathBuf,
        height: u64,
        chain: u64,
        #[source]
        source: super::changeset::ChangeSetError,
    },
    /// A stored value has the right size but does not decode.
    #[error("store {path}: malformed value in {cf}: {detail}")]
    Undecodable {
        path: PathBuf,
        cf: &'static str,
        detail: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a transaction is: block height, segment (0 = regionchain, k = servicechain k's
/// segment) and position within the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxLocation {
    pub height: u64,
    pub segment: u32,
    pub index: u32,
}

impl TxLocation {
    const LEN: usize = 16;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.height.to_be_bytes());
        b[8..12].copy_from_slice(&self.segment.to_be_bytes());
        b[12..].copy_from_slice(&self.index.to_be_bytes());
        b
    }

    fn decode(b: &[u8; Self::LEN]) -> Self {
        TxLocation {
            height: be_u64(&b[..8]),
            segment: be_u32(&b[8..12]),
            index: be_u32(&b[12..]),
        }
    }
}

/// Everything indexed for one block.
#[derive(Debug, Clone, Copy)]
pub struct BlockIndex<'a> {
    pub height: u64,
    pub hash: [u8; 32],
    /// Offset of the block's record in the block log.
    pub log_offset: u64,
    /// (tx hash, segment, index in segment) of every transaction in the block.
    pub txs: &'a [([u8; 32], u32, u32)],
}

/// The last indexed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub height: u64,
    pub hash: [u8; 32],
    pub log_offset: u64,
}

impl Head {
    const LEN: usize = 48;
}

/// Writes that commit atomically (one RocksDB WriteBatch): a block's indexes and the state
/// changes it caused go in together.
pub struct StoreBatch<'s> {
    pub(super) store: &'s Store,
    pub(super) batch: WriteBatch,
}

impl StoreBatch<'_> {
    /// Adds a block's indexes and moves the head to it.
    pub fn index_block(&mut self, b: &BlockIndex<'_>) {
        let s = self.store;
        let height = b.height.to_be_bytes();
        self.batch
            .put_cf(s.cf(CF_HEIGHT), height, b.log_offset.to_be_bytes());
        self.batch.put_cf(s.cf(CF_HASH), b.hash, height);
        for (tx_hash, segment, index) in b.txs {
            let loc = TxLocation {
                height: b.height,
                segment: *segment,
                index: *index,
            };
            self.batch.put_cf(s.cf(CF_TX), tx_hash, loc.encode());
        }
        let mut head = [0u8; Head::LEN];
        head[..8].copy_from_slice(&height);
        head[8..40].copy_from_slice(&b.hash);
        head[40..].copy_from_slice(&b.log_offset.to_be_bytes());
        self.batch.put_cf(s.cf(CF_META), META_HEAD, head);
    }

    /// Sets `key` in servicechain `chain_id`'s state.
    pub fn put_state(&mut self, chain_id: u64, key: &[u8], value: &[u8]) -> Result<()> {
        let k = state_key(chain_id, key)?;
        self.batch.put_cf(self.store.cf(CF_STATE), k, value);
        Ok(())
    }

    /// Removes `key` from servicechain `chain_id`'s state.
    pub fn delete_state(&mut self, chain_id: u64, key: &[u8]) -> Result<()> {
        let k = state_key(chain_id, key)?;
        self.batch.delete_cf(self.store.cf(CF_STATE), k);
        Ok(())
    }

    /// Sets a named value in `meta` (e.g. the genesis hash).
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_META), meta_key(key), value);
    }

    /// Number of operations queued.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Commits every queued write atomically.
    pub fn commit(self) -> Result<()> {
        let s = self.store;
        s.db.write_opt(self.batch, &s.write_opts)
            .map_err(|source| s.db_err("write batch", source))
    }

    /// Commits without syncing the WAL, whatever the store's setting: for a batch that a
    /// synced [`Self::commit`] follows at once, or one whose loss costs nothing but redoing it
    /// (the history index, rebuilt from the change sets). The WAL is written in order, so the
    /// next synced commit makes this batch durable too, and a crash before it loses this batch
    /// only with every later one (the store stays a prefix of the log).
    pub fn commit_unsynced(self) -> Result<()> {
        let s = self.store;
        let mut options = WriteOptions::default();
        options.set_sync(false);
        s.db.write_opt(self.batch, &options)
            .map_err(|source| s.db_err("write batch", source))
    }
}

/// Big-endian u64 from exactly 8 bytes (callers slice fixed-size arrays).
pub(super) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// Big-endian u32 from exactly 4 bytes (callers slice fixed-size arrays).
pub(super) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn meta_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(META_USER_PREFIX);
    k.extend_from_slice(key);
    k
}

pub(super) fn state_key(chain_id: u64, key: &[u8]) -> Result<Vec<u8>> {
    if key.len() > MAX_STATE_KEY_LEN {
        return Err(StoreError::KeyTooLarge { len: key.len() });
    }
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&chain_id.to_be_bytes());
    k.extend_from_slice(key);
    Ok(k)
}

/// The RocksDB store. Thread-safe: reads and batches may come from any thread.
pub struct Store {
    pub(super) db: DB,
    path: PathBuf,
    write_opts: WriteOptions,
    /// Serializes history indexing and pruning, which read and rewrite the same entries.
    history_writer: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if missing) the store in directory `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let cache = Cache::new_lru_cache(opts.block_cache_bytes).map_err(open_err)?;
        let table = |cache: &Cache| {
            let mut t = BlockBasedOptions::default();
            t.set_block_cache(cache);
            t.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            t.set_cache_index_and_filter_blocks(true);
            t.set_pin_l0_filter_and_index_blocks_in_cache(true);
            t
        };
        let cf_opts = |name: &str| {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table(&cache));
            if ![CF_STATE, CF_META, CF_RECEIPTS, CF_CHANGES].contains(&name) {
                // Keys and values of the indexes are hashes and integers: incompressible.
                o.set_compression_type(DBCompressionType::None);
            }
            o
        };
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_paranoid_checks(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_block_based_table_factory(&table(&cache));
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_opts(name)));
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs).map_err(open_err)?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(opts.sync_writes);
        let store = Store {
            db,
            path,
            write_opts,
            history_writer: std::sync::Mutex::default(),
        };
        // A marker that does not decode means a corrupt database: refuse it rather than start
        // from genesis over it.
        store.state_height()?;
        tracing::info!(path = %store.path.display(), sync = opts.sync_writes, "store opened");
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Held while indexing or pruning state history.
    pub(super) fn history_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.history_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    // Every name in COLUMN_FAMILIES is created at open (create_missing_column_families), and
    // callers pass only those names: the handle is always there.
    #[allow(clippy::expect_used)]
    pub(super) fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    pub(super) fn db_err(&self, op: &'static str, source: rocksdb::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            op,
            source,
        }
    }

    pub(super) fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf), key)
            .map_err(|e| self.db_err("get", e))
    }

    pub(super) fn get_fixed<const N: usize>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<[u8; N]>> {
        let Some(v) = self.get(cf, key)? else {
            return Ok(None);
        };
        let found = v.len();
        v.try_into().map(Some).map_err(|_| StoreError::Malformed {
            path: self.path.clone(),
            cf,
            expected: N,
            found,
        })
    }

    /// Starts an atomic batch of writes.
    pub fn batch(&self) -> StoreBatch<'_> {
        StoreBatch {
            store: self,
            batch: WriteBatch::default(),
        }
    }

    /// Indexes one block atomically (its own batch).
    pub fn index_block(&self, block: &BlockIndex<'_>) -> Result<()> {
        let mut b = self.batch();
        b.index_block(block);
        b.commit()
    }

    /// Log offset of the block at `height`.
    pub fn log_offset(&self, height: u64) -> Result<Option<u64>> {
        Ok(self
            .get_fixed::<8>(CF_HEIGHT, &height.to_be_bytes())?
            .map(u64::from_be_bytes))
    }

    /// Height of the block with `hash`.
    pub fn height_of(&self, hash: &[u8; 32]) -> Result<Option<u64>> {
        Ok(self.get_fixed::<8>(CF_HASH, hash)?.map(u64::from_be_bytes))
    }

    /// Location of the transaction with `tx_hash`.
    pub fn tx_location(&self, tx_hash: &[u8; 32]) -> Result<Option<TxLocation>> {
        Ok(self
            .get_fixed::<{ TxLocation::LEN }>(CF_TX, tx_hash)?
            .map(|b| TxLocation::decode(&b)))
    }

    /// The last indexed block, if any.
    pub fn head(&self) -> Result<Option<Head>> {
        Ok(self
            .get_fixed::<{ Head::LEN }>(CF_META, META_HEAD)?
            .map(|b| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&b[8..40]);
                Head {
                    height: be_u64(&b[..8]),
                    hash,
                    log_offset: be_u64(&b[40..]),
                }
            }))
    }

    /// Value of `key` in servicechain `chain_id`'s state.
    pub fn get_state(&self, chain_id: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(CF_STATE, &state_key(chain_id, key)?)
    }

    /// Sets one state value (its own batch); prefer [`StoreBatch::put_state`].
    pub fn put_state(&self, chain_id: u64, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = self.batch();
        b.put_state(chain_id, key, value)?;
        b.commit()
    }

    /// A named value from `meta`.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(CF_META, &meta_key(key))
    }

    /// Sets a named value in `meta` (its own batch).
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = self.batch();
        b.put_meta(key, value);
        b.commit()
    }

    /// Flushes memtables to SST files (tests and benchmarks use it to exercise the read path
    /// through the block cache and bloom filters).
    pub fn flush(&self) -> Result<()> {
        for name in COLUMN_FAMILIES {
            self.db
                .flush_cf(self.cf(name))
                .map_err(|e| self.db_err("flush", e))?;
        }
        Ok(())
    }
}

impl Store {
    /// Named values of `meta` whose names start with `prefix`, in name order, at most `limit`
    /// (names are returned as given to [`Store::put_meta`]).
    pub fn meta_with_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = meta_key(prefix);
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_META), mode) {
            let (key, value) = item.map_err(|e| self.db_err("iterate meta", e))?;
            if out.len() >= limit || !key.starts_with(&start) {
                break;
            }
            out.push((key[1..].to_vec(), value.into_vec()));
        }
        Ok(out)
    }
}
