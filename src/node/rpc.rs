//! The node's chain data as the JSON-RPC server sees it ([`crate::rpc::RpcBackend`]).
//!
//! Servicechain `k`'s block `n` is container `n` seen from chain `k`: its segment's
//! transactions and receipts (none when the chain was idle in that container), the container's
//! hash, parent hash, timestamp and mix. The block hash is the container hash on every chain;
//! the checkpoint entry of chain `k` at `n` is `segment_hash(container hash, k)`
//! (`docs/servicechains.md`). The regionchain's own endpoint has no EVM: it serves heads, the
//! `kaon_*` methods, and `eth_call` against the RN reward reserve's native contract.
//!
//! State reads name a block: the head's reads the latest committed state; an older one reads
//! the state after that block through the store's change sets ([`crate::storage::history`]),
//! and a block older than the retained history answers an error naming the oldest readable
//! one. Calls at an older block `n` run in the context of block `n + 1` (its number, time and
//! PREVRANDAO), as calls at the head run in the next block's. Writes are checked against the
//! latest state (nonce, funds,
//! gas, fee) and then against the pool rules ([`super::outbox`]) before the hash is answered,
//! so a client sees geth's error messages and a hash means the RN holds the transaction until
//! it is included; `pending` nonces count only what the RN holds without a gap.

use crate::chain::migration::{cut_state, Adoption, AdoptionChunk, MoveRecord};
use crate::chain::pop::{PopState, RESERVE_ADDRESS};
use crate::chain::region::RegionState;
use crate::chain::servicechain::segment_hash;
use crate::consensus::machine::Tip;
use crate::consensus::selection::set_root;
use crate::crypto::hash::keccak256;
use crate::crypto::tx::{RecoveredTx, SignedTransaction};
use crate::exec::{
    self, BlockContext, ChainSnapshot, EvmExecutor, Numbering, StateRead, TxOutcome, BASE_FEE_WEI,
    FEE_COLLECTOR, SEGMENT_GAS_LIMIT, TRANSFER_GAS,
};
use crate::net::sync::ChainReader;
use crate::rpc::fee_oracle::{self, GasPriceOracle, PaidTip};
use crate::rpc::{
    BackendError, BlockTransactions, CallRequest, LogQuery, RpcAccessList, RpcBackend, RpcBlock,
    RpcFeeHistory, RpcLog, RpcReceipt, RpcTransaction, StateAt, SubmitError, SyncProgress,
    TxLocation,
};
use crate::storage::history::HistoryError;
use crate::storage::state::CommittedState;
use crate::types::{Block, BlockHash, ChainId, CnIndex, Height, Segment};
use alloy_primitives::{Address, Bloom, Bytes, B256, U256};
use anyhow::Context;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

/// The system transactions that start a moved chain in its target region, in the order they
/// are sent: the adoption (with chunk 0 of the state), then chunk 1, 2, ….
#[derive(Debug)]
struct AdoptionTxs {
    record: MoveRecord,
    txs: Vec<Bytes>,
}

/// Moved chains whose adoption transactions an RN keeps cut ([`ChainRpc::adoption_txs`]): as
/// many as a target region adopts at once, each up to 32 MiB of chunks.
const ADOPTIONS_KEPT: usize = crate::chain::migration::MAX_OPEN_ADOPTIONS;

/// A region's moves as `kaon_regions` and the metrics show them ([`ChainRpc::moves`]).
struct Moves {
    moved_away: Vec<Value>,
    adopting: Vec<Value>,
    open: usize,
    /// Chunks the open adoptions still wait for.
    missing: usize,
}

/// Blocks `kaon_regions` reads back to measure a region's recent load.
pub const UTILISATION_BLOCKS: u64 = 32;

/// A region's load over its last blocks ([`ChainRpc::region_summary`]).
#[derive(Debug, Clone, Copy)]
struct RecentLoad {
    head: u64,
    blocks: u64,
    txs: u64,
    /// Gas the servicechains' segments used (transactions marked invalid use none).
    gas: u64,
    tx_per_second: Option<f64>,
    gas_per_second: Option<f64>,
    /// The head block's timestamp (`None`: no block read).
    head_timestamp_ms: Option<u64>,
}

impl RecentLoad {
    /// Milliseconds from the head block's timestamp to `now_ms` (0 when the proposer's clock
    /// ran ahead).
    fn head_age_ms(&self, now_ms: u64) -> Option<u64> {
        self.head_timestamp_ms.map(|t| now_ms.saturating_sub(t))
    }

    fn empty(head: u64) -> Self {
        Self {
            head,
            blocks: 0,
            txs: 0,
            gas: 0,
            tx_per_second: None,
            gas_per_second: None,
            head_timestamp_ms: None,
        }
    }
}
/// Chains whose suggested tip is remembered for their current head.
const MAX_CACHED_SUGGESTIONS: usize = 4096;

/// What the RPC needs from the node around it, beyond its stored chain.
pub trait NodeLink: Send + Sync {
    /// Sends raw transactions towards the CNs.
    fn forward(&self, txs: Vec<Bytes>) -> Result<(), String>;
    /// Equivocation evidence at or above `from_height`, at most `limit`, as JSON.
    fn evidence(&self, from_height: u64, limit: usize) -> Vec<Value>;
    /// Catch-up progress, `None` when following the head.
    fn syncing(&self) -> Option<SyncProgress> {
        None
    }
    fn peers(&self) -> u64 {
        0
    }
    /// Finality as this node's clients see it over its last blocks (`None`: not measured).
    fn finality(&self) -> Option<crate::rn::Finality> {
        None
    }
}

/// [`RpcBackend`] over a node's block log, RocksDB and regionchain state.
pub struct ChainRpc {
    region: ChainId,
    genesis: Tip,
    state: Arc<CommittedState>,
    chain: ChainReader,
    regionchain: Arc<RwLock<RegionState>>,
    link: Arc<dyn NodeLink>,
    executor: EvmExecutor,
    /// The transactions this node accepted, until they are included.
    outbox: Arc<super::outbox::Outbox>,
    /// The head's height and mix, for calls' PREVRANDAO.
    head_mix: Mutex<Option<(u64, B256)>>,
    /// The oracle's suggested tip per chain, with the head it was computed at.
    suggested_tips: Mutex<HashMap<ChainId, (u64, u128)>>,
    /// `kaon_regions`' load figures, for the head they were read at.
    recent_load: Mutex<Option<RecentLoad>>,
    /// The system transactions that start the moved chains last asked for in their target
    /// regions ([`Self::adoption_txs`]): a move's client reads them one by one. The lock is
    /// held while a state is read and cut, so concurrent asks do that once.
    adoption_txs: Mutex<Vec<(ChainId, Arc<AdoptionTxs>)>>,
    /// The committed transactions per second this region was measured to sustain, against
    /// which its load is reported (`[rpc] region_capacity_tps`; `None`: not stated).
    capacity_tps: Option<f64>,
}

fn internal(e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(e.to_string())
}

fn history_error(e: HistoryError) -> BackendError {
    match e {
        HistoryError::Pruned { requested, oldest } => {
            BackendError::HistoryPruned { requested, oldest }
        }
        HistoryError::Ahead { .. } => BackendError::UnknownBlock,
        HistoryError::Store(e) => internal(e),
    }
}

impl ChainRpc {
    pub fn new(
        region: ChainId,
        genesis: Tip,
        state: Arc<CommittedState>,
        chain: ChainReader,
        regionchain: Arc<RwLock<RegionState>>,
        link: Arc<dyn NodeLink>,
        outbox: Arc<super::outbox::Outbox>,
    ) -> Self {
        Self {
            region,
            genesis,
            state,
            chain,
            regionchain,
            link,
            executor: EvmExecutor,
            outbox,
            head_mix: Mutex::default(),
            suggested_tips: Mutex::default(),
            recent_load: Mutex::default(),
            adoption_txs: Mutex::default(),
            capacity_tps: None,
        }
    }

    /// States the region's measured capacity (committed transactions per second), so its
    /// load is also reported as a share of it.
    pub fn with_capacity(mut self, capacity_tps: Option<f64>) -> Self {
        self.capacity_tps = capacity_tps.filter(|c| c.is_finite() && *c > 0.0);
        self
    }

    /// What the transactions of `chain` in block `height` paid above the base fee (those
    /// marked invalid paid nothing and are left out).
    fn paid_tips(&self, chain: ChainId, height: u64) -> Result<Vec<PaidTip>, BackendError> {
        let receipts = self
            .state
            .store()
            .receipts_of(height, chain)
            .map_err(internal)?
            .map(|r| r.receipts)
            .unwrap_or_default();
        Ok(receipts
            .iter()
            .filter(|r| !matches!(r.outcome, exec::TxOutcome::Invalid(_)))
            .map(|r| PaidTip {
                tip: r
                    .effective_gas_price
                    .saturating_sub(u128::from(BASE_FEE_WEI)),
                gas_used: r.gas_used,
            })
            .collect())
    }

    /// The gas price oracle's tip for `chain` at its head, computed once per head.
    fn suggested_tip(&self, chain: ChainId) -> Result<u128, BackendError> {
        let head = self.head_height()?;
        let cached = self
            .suggested_tips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&chain)
            .copied();
        if let Some((_, tip)) = cached.filter(|(at, _)| *at == head) {
            return Ok(tip);
        }
        let oracle = GasPriceOracle::default();
        let oldest = head.saturating_sub(oracle.blocks.saturating_sub(1)).max(1);
        let blocks = (oldest..=head)
            .map(|n| self.paid_tips(chain, n))
            .collect::<Result<Vec<_>, _>>()?;
        let tip = oracle.suggest(blocks.iter().map(Vec::as_slice));
        let mut cache = self
            .suggested_tips
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_SUGGESTIONS && !cache.contains_key(&chain) {
            if let Some(evicted) = cache.keys().next().copied() {
                cache.remove(&evicted);
            }
        }
        cache.insert(chain, (head, tip));
        Ok(tip)
    }

    fn head_height(&self) -> Result<u64, BackendError> {
        Ok(self
            .state
            .store()
            .head()
            .map_err(internal)?
            .map_or(0, |h| h.height))
    }

    /// The region this backend serves (its regionchain's id).
    pub fn region(&self) -> ChainId {
        self.region
    }

    /// Whether this region serves `chain` now: its regionchain, or a servicechain it holds
    /// and has not moved away (a moved one is still read for its history).
    pub fn serves(&self, chain: ChainId) -> bool {
        chain == self.region
            || self
                .regionchain
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .serves(chain)
    }

    /// Transactions this RN accepted for chains its region moved away, not included before
    /// the move ([`super::regions::hand_off`] sends them to the chain's new region).
    pub fn take_departed(&self) -> Vec<RecoveredTx> {
        self.outbox.take_departed()
    }

    /// Keeps what this RN accepted for chains that move away, for [`Self::take_departed`]
    /// (only where a hand-off runs: elsewhere nothing would take them).
    pub fn keep_departed(&self) {
        self.outbox.keep_departed();
    }

    /// Whether `chain` came to this region from another one.
    pub fn adopted(&self, chain: ChainId) -> bool {
        self.numbering().adopted(chain)
    }

    /// Where and when this region moved `chain` away, if it did.
    pub fn moved(&self, chain: ChainId) -> Option<MoveRecord> {
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        region.moved.get(&chain).map(|m| m.record)
    }

    /// How this region's chains number their blocks: by height, except those adopted from
    /// another region, which count on from where they were frozen.
    fn numbering(&self) -> Arc<Numbering> {
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&region.numbering)
    }

    /// This region's height of `chain`'s block `number`; a block of an adopted chain from
    /// before its adoption is in the region it left ("header not found" here).
    fn height_of(&self, chain: ChainId, number: u64) -> Result<u64, BackendError> {
        self.numbering()
            .height(chain, number)
            .ok_or(BackendError::UnknownBlock)
    }

    /// The adoption that starts `chain`, which this region moved, in its target region:
    /// the sealed header of the freezing block with the set that sealed it, the roots and the
    /// record it commits, and the chain's state read here, checked against the record and cut
    /// into chunks (the adoption carries the first, the others are returned beside it).
    fn adoption_of(
        &self,
        chain: ChainId,
    ) -> Result<Option<(Adoption, Vec<ChainSnapshot>)>, BackendError> {
        let (moved, set) = {
            let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
            match region.moved.get(&chain) {
                Some(moved) => (moved.clone(), Arc::clone(&region.set)),
                None => return Ok(None),
            }
        };
        let record = moved.record;
        // The regionchain state runs ahead of the block log: the freeze is applied before its
        // block is stored, and until then there is no adoption to give yet.
        if record.height.0 > self.head_height()? {
            return Ok(None);
        }
        let block = self.container(record.height.0)?.ok_or_else(|| {
            BackendError::Execution(format!("block {} is not stored here", record.height))
        })?;
        let cn_set = (0..set.len() as u32)
            .map(|i| set.key_bytes(CnIndex(i)).copied())
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        if set_root(&cn_set) != block.header().cn_set_root {
            return Err(BackendError::Execution(format!(
                "the CN set changed since height {}; an adoption needs the set that sealed it",
                record.height
            )));
        }
        let (snapshot, root) = self.state.snapshot(chain).map_err(internal)?;
        let cut = cut_state(&snapshot).map_err(internal)?;
        if root != record.final_root || cut.snapshot_root() != record.snapshot_root {
            return Err(BackendError::Internal(format!(
                "this node's state of chain {chain} is not the one its move recorded"
            )));
        }
        let (mut chunks, chunk_roots) = (cut.chunks, cut.roots);
        let first = chunks.remove(0); // one chunk at least
        let adoption = Adoption {
            region: record.target,
            sealed: block.sealed,
            cn_set,
            roots: moved.roots,
            previous_moves: moved.previous_moves,
            record,
            chunk_roots,
            snapshot: first,
        };
        Ok(Some((adoption, chunks)))
    }

    /// [`Self::adoption_of`] as system transactions: the adoption, then chunk 1, 2, … —
    /// cut once and kept for the last [`ADOPTIONS_KEPT`] chains asked.
    fn adoption_txs(&self, chain: ChainId) -> Result<Option<Arc<AdoptionTxs>>, BackendError> {
        let mut kept = self.adoption_txs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, txs)) = kept.iter().find(|(c, _)| *c == chain) {
            return Ok(Some(Arc::clone(txs)));
        }
        let Some((adoption, rest)) = self.adoption_of(chain)? else {
            return Ok(None);
        };
        let chunk = |(i, snapshot)| {
            AdoptionChunk {
                region: adoption.region,
                chain,
                index: i as u32 + 1,
                snapshot,
            }
            .to_system_tx()
        };
        let txs = Arc::new(AdoptionTxs {
            record: adoption.record,
            txs: std::iter::once(adoption.to_system_tx())
                .chain(rest.into_iter().enumerate().map(chunk))
                .collect(),
        });
        if kept.len() >= ADOPTIONS_KEPT {
            kept.remove(0);
        }
        kept.push((chain, Arc::clone(&txs)));
        Ok(Some(txs))
    }

    /// This region for `kaon_regions`: its id, servicechains, head, and its load over the
    /// last [`UTILISATION_BLOCKS`] blocks (transactions per second by the blocks' own
    /// timestamps) with the depth of this node's pool — what an operator compares with the
    /// region's measured capacity (`docs/regions.md`) — its directory, the directory region its
    /// genesis names, and the other regions' headers its regionchain checkpointed.
    pub fn region_summary(&self) -> Result<Value, BackendError> {
        let head = self.head_height()?;
        let (chains, directory, checkpoints, anchor): (Vec<u64>, Vec<Value>, Vec<Value>, _) = {
            let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
            let chains = region
                .registry
                .list()
                .into_iter()
                .map(|(c, _)| c.0)
                .collect();
            let directory = region
                .directory
                .entries()
                .map(|e| {
                    let checkpoint = region.region_heads.get(&e.region).map(|h| {
                        json!({ "height": h.height.0, "hash": h.hash.0, "setRoot": h.set_root })
                    });
                    json!({
                        "region": e.region.0,
                        "genesisHash": e.genesis_hash,
                        "cnSetRoot": e.cn_set_root,
                        "rnSeeds": e.rn_seeds,
                        "checkpoint": checkpoint,
                    })
                })
                .collect();
            let checkpoints: Vec<Value> = region
                .region_heads
                .values()
                .map(|h| {
                    json!({
                        "region": h.region.0,
                        "height": h.height.0,
                        "hash": h.hash.0,
                        "setRoot": h.set_root,
                    })
                })
                .collect();
            let anchor = region.anchor.as_ref().map(|a| a.region.0);
            (chains, directory, checkpoints, anchor)
        };
        let moves = self.moves();
        let load = self.recent_load(head)?;
        let finality = self.link.finality();
        let head_age_ms = load.head_age_ms(crate::chain::app::now_ms());
        Ok(json!({
            "region": self.region.0,
            "servicechains": chains,
            "head": head,
            "recentBlocks": load.blocks,
            "recentTransactions": load.txs,
            "recentGas": load.gas,
            "txPerSecond": load.tx_per_second,
            "gasPerSecond": load.gas_per_second,
            "capacityTxPerSecond": self.capacity_tps,
            "utilisation": self.utilisation(&load),
            "poolDepth": self.outbox.pooled(),
            "headAgeMs": head_age_ms,
            "finalityMs": finality.map(|f| json!({ "blocks": f.blocks, "p50": f.p50_ms, "max": f.max_ms })),
            "directory": directory,
            "directoryRegion": anchor,
            "checkpoints": checkpoints,
            "movedAway": moves.moved_away,
            "adopting": moves.adopting,
        }))
    }

    /// The chains this region moved away and the adoptions whose state is still arriving,
    /// for `kaon_regions` and the metrics.
    fn moves(&self) -> Moves {
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        let moved_away = region
            .moved
            .values()
            .map(|m| {
                let r = &m.record;
                json!({ "chain": r.chain.0, "target": r.target.0, "height": r.height.0 })
            })
            .collect();
        let adopting: Vec<Value> = region
            .adopting
            .values()
            .map(|a| {
                json!({
                    "chain": a.record.chain.0,
                    "source": a.record.source.0,
                    "chunks": a.chunk_roots.len(),
                    "missing": a.missing(),
                    "lastProgress": a.progress.0,
                })
            })
            .collect();
        let missing = region.adopting.values().map(|a| a.missing()).sum();
        Moves {
            moved_away,
            open: adopting.len(),
            adopting,
            missing,
        }
    }

    /// Committed transactions per second as a share of the stated capacity.
    fn utilisation(&self, load: &RecentLoad) -> Option<f64> {
        Some(load.tx_per_second? / self.capacity_tps?)
    }

    /// This region's load for the Prometheus endpoint, with `labels` on every sample:
    /// what an operator's alert on "time to add a region" (`docs/regions.md`) reads.
    pub fn load_metrics(
        &self,
        m: &mut crate::telemetry::Metrics,
        labels: &[(&str, &str)],
    ) -> Result<(), BackendError> {
        let load = self.recent_load(self.head_height()?)?;
        let finality = self.link.finality();
        let now_ms = crate::chain::app::now_ms();
        let moves = self.moves();
        let gauges = [
            (
                "kaon_region_head_age_seconds",
                "Time since the timestamp of the region's head block at this node: grows while the region or this node's sync is stalled (the rates and finality keep their last values then)",
                load.head_age_ms(now_ms).map(|ms| ms as f64 / 1e3),
            ),
            (
                "kaon_region_tx_per_second",
                "Committed servicechain transactions per second over the region's last blocks",
                load.tx_per_second,
            ),
            (
                "kaon_region_gas_per_second",
                "Gas the servicechains used per second over the region's last blocks",
                load.gas_per_second,
            ),
            (
                "kaon_region_capacity_tx_per_second",
                "The region's measured capacity as stated in [rpc] region_capacity_tps",
                self.capacity_tps,
            ),
            (
                "kaon_region_utilisation",
                "Committed transactions per second as a share of the stated capacity",
                self.utilisation(&load),
            ),
            (
                "kaon_region_pool_depth",
                "Transactions this node accepted for the region and holds until included",
                Some(self.outbox.pooled() as f64),
            ),
            (
                "kaon_region_finality_p50_seconds",
                "Median time from a block's timestamp to its being readable at this node, last blocks",
                finality.map(|f| f.p50_ms as f64 / 1e3),
            ),
            (
                "kaon_region_finality_max_seconds",
                "Worst time from a block's timestamp to its being readable at this node, last blocks",
                finality.map(|f| f.max_ms as f64 / 1e3),
            ),
            (
                "kaon_region_adoptions_open",
                "Adoptions of chains moved here whose state is still arriving in chunks (at most 4; each closes after 4096 blocks without a chunk)",
                Some(moves.open as f64),
            ),
            (
                "kaon_region_adoption_chunks_missing",
                "Chunks of state the open adoptions still wait for",
                Some(moves.missing as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                m.gauge(name, help, labels, value);
            }
        }
        Ok(())
    }

    /// The load of the last [`UTILISATION_BLOCKS`] blocks up to `head`, read once per head
    /// (the method is open to any client; the blocks are read from the log only when the head
    /// moved).
    fn recent_load(&self, head: u64) -> Result<RecentLoad, BackendError> {
        let mut cached = self.recent_load.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(load) = cached.filter(|l| l.head == head) {
            return Ok(load);
        }
        let from = head.saturating_sub(UTILISATION_BLOCKS - 1).max(1);
        let (mut load, mut first_ms, mut last_ms, mut after_first, mut gas_after_first) =
            (RecentLoad::empty(head), None, 0u64, 0u64, 0u64);
        for height in from..=head {
            let Some(block) = self.container(height)? else {
                break;
            };
            let header = block.header();
            let txs: u64 = header
                .segments
                .iter()
                .skip(1)
                .map(|s| u64::from(s.tx_count))
                .sum();
            let gas = self.block_gas(&block)?;
            load.blocks += 1;
            load.txs += txs;
            load.gas += gas;
            // The rates count the transactions and gas of the blocks that end each interval.
            if first_ms.is_some() {
                after_first += txs;
                gas_after_first += gas;
            }
            first_ms.get_or_insert(header.timestamp_ms);
            last_ms = header.timestamp_ms;
        }
        load.head_timestamp_ms = first_ms.map(|_| last_ms);
        let span_ms = last_ms.saturating_sub(first_ms.unwrap_or(last_ms));
        let per_second = |n: u64| (span_ms > 0).then(|| n as f64 * 1e3 / span_ms as f64);
        load.tx_per_second = per_second(after_first);
        load.gas_per_second = per_second(gas_after_first);
        *cached = Some(load);
        Ok(load)
    }

    /// Gas the servicechain segments of `block` used, from their stored receipts.
    fn block_gas(&self, block: &Block) -> Result<u64, BackendError> {
        let height = block.header().height.0;
        let mut gas = 0u64;
        for segment in block.header().segments.iter().skip(1) {
            let used = self
                .state
                .store()
                .receipts_of(height, segment.chain_id)
                .map_err(internal)?
                .and_then(|r| r.receipts.last().map(|l| l.cumulative_gas_used))
                .unwrap_or(0);
            gas = gas.saturating_add(used);
        }
        Ok(gas)
    }

    /// Container `height` from the block log (`None` above the head).
    pub fn container(&self, height: u64) -> Result<Option<Block>, BackendError> {
        self.chain.block_at(Height(height)).map_err(internal)
    }

    /// Runs `read` against the state `at` names on `chain`: the latest written state
    /// ([`crate::storage::state::WrittenState`]: never ahead of the receipts and blocks that
    /// explain it), or the state after an older block read from the retained history.
    fn read_state<T>(
        &self,
        chain: ChainId,
        at: StateAt,
        read: impl FnOnce(&dyn StateRead) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        match at {
            StateAt::Historical(number) => {
                self.read_state_after(self.height_of(chain, number)?, read)
            }
            _ => read(&self.state.written()),
        }
    }

    /// Runs `read` against the state after this region's block `height` (the latest committed
    /// state from the head on).
    fn read_state_after<T>(
        &self,
        height: u64,
        read: impl FnOnce(&dyn StateRead) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        if height < self.head_height()? {
            let view = self.state.store().state_at(height).map_err(history_error)?;
            return read(&view);
        }
        read(&self.state.written())
    }

    /// The EVM context a call at `at` on `chain` runs in: the next block's after the head,
    /// block `n + 1`'s for an older block `n`.
    fn call_context(&self, chain: ChainId, at: StateAt) -> Result<BlockContext, BackendError> {
        let n = match at {
            StateAt::Historical(number) => self.height_of(chain, number)?,
            _ => return self.next_context(),
        };
        if n >= self.head_height()? {
            return self.next_context();
        }
        let next = n + 1; // n < head, so no overflow
        let timestamp_ms = self
            .container(next)?
            .ok_or(BackendError::UnknownBlock)?
            .header()
            .timestamp_ms;
        let mix = match self.container(n)? {
            Some(b) if n > 0 => b.header().mix,
            _ => self.genesis.mix,
        };
        Ok(BlockContext::new(Height(next), timestamp_ms, mix).with_numbering(self.numbering()))
    }

    /// The EVM context of the block after the head (the head's mix is read once per head).
    fn next_context(&self) -> Result<BlockContext, BackendError> {
        let head = self.head_height()?;
        let cached = *self.head_mix.lock().unwrap_or_else(|e| e.into_inner());
        let mix = match cached {
            Some((height, mix)) if height == head => mix,
            _ => {
                let mix = match self.container(head)? {
                    Some(b) => b.header().mix,
                    None => self.genesis.mix,
                };
                *self.head_mix.lock().unwrap_or_else(|e| e.into_inner()) = Some((head, mix));
                mix
            }
        };
        Ok(
            BlockContext::new(Height(head + 1), crate::chain::app::now_ms(), mix)
                .with_numbering(self.numbering()),
        )
    }

    /// Block `block` as `chain` sees it (`None`: `chain` was adopted here after it).
    fn rpc_block(
        &self,
        chain: ChainId,
        block: &Block,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        let header = block.header();
        let Some(number) = self.numbering().number(chain, header.height.0) else {
            return Ok(None);
        };
        let position = header.segments.iter().position(|s| s.chain_id == chain);
        let commitment = position.map(|i| &header.segments[i]);
        let receipts = match position {
            Some(i) if chain != self.region => self
                .state
                .store()
                .segment_receipts(header.height.0, i as u32)
                .map_err(internal)?
                .map(|r| r.receipts)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let txs: Vec<&Bytes> = match position {
            Some(i) if chain != self.region => block.segments[i].txs.iter().collect(),
            _ => Vec::new(),
        };
        let transactions = if full {
            let location = |index| TxLocation {
                block_hash: block.hash().0,
                block_number: number,
                block_timestamp: header.timestamp_ms / 1000,
                index,
                base_fee_per_gas: Some(BASE_FEE_WEI),
            };
            BlockTransactions::Full(
                txs.iter()
                    .enumerate()
                    .filter_map(|(i, raw)| rpc_tx(raw, Some(location(i as u64))))
                    .collect(),
            )
        } else {
            BlockTransactions::Hashes(txs.iter().map(keccak256).collect())
        };
        Ok(Some(RpcBlock {
            number,
            hash: block.hash().0,
            parent_hash: header.parent.0,
            timestamp: header.timestamp_ms / 1000,
            gas_used: receipts.last().map_or(0, |r| r.cumulative_gas_used),
            gas_limit: SEGMENT_GAS_LIMIT,
            base_fee_per_gas: Some(BASE_FEE_WEI),
            state_root: match commitment {
                Some(c) => c.state_root,
                None => self.state_root_at(chain, header.height.0),
            },
            transactions_root: commitment.map_or(B256::ZERO, |c| c.tx_root),
            receipts_root: commitment.map_or(B256::ZERO, |c| c.receipts_root),
            logs_bloom: exec::logs_bloom(&receipts),
            miner: FEE_COLLECTOR,
            mix_hash: header.mix,
            extra_data: Bytes::new(),
            // The chain's own block: the sealed header and this chain's segment (the other
            // chains' segments are not part of what this chain's clients see).
            size: (alloy_rlp::Encodable::length(&block.sealed)
                + position.map_or(0, |i| alloy_rlp::Encodable::length(&block.segments[i])))
                as u64,
            transactions,
        }))
    }

    /// The state commitment of `chain` after block `height`, for a block without a segment of
    /// that chain (genesis, or an idle block): read from the retained history, zero where the
    /// history no longer reaches.
    fn state_root_at(&self, chain: ChainId, height: u64) -> B256 {
        self.read_state_after(height, |state| state.state_root(chain).map_err(internal))
            .unwrap_or(B256::ZERO)
    }

    /// This region's block `height` as `chain` sees it (`None` where it is not one of the
    /// chain's blocks: before it came here).
    fn block_at(
        &self,
        chain: ChainId,
        height: u64,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        if height == 0 {
            let ours = self.numbering().number(chain, 0).is_some();
            return Ok(ours.then(|| self.genesis_block(chain)));
        }
        match self.container(height)? {
            Some(block) => self.rpc_block(chain, &block, full),
            None => Ok(None),
        }
    }

    fn genesis_block(&self, chain: ChainId) -> RpcBlock {
        RpcBlock {
            number: 0,
            hash: self.genesis.hash.0,
            parent_hash: B256::ZERO,
            timestamp: self.genesis.timestamp_ms / 1000,
            gas_used: 0,
            gas_limit: SEGMENT_GAS_LIMIT,
            base_fee_per_gas: Some(BASE_FEE_WEI),
            state_root: self.state_root_at(chain, 0),
            transactions_root: B256::ZERO,
            receipts_root: B256::ZERO,
            logs_bloom: Bloom::ZERO,
            miner: FEE_COLLECTOR,
            mix_hash: self.genesis.mix,
            extra_data: Bytes::new(),
            size: 0,
            transactions: BlockTransactions::Hashes(Vec::new()),
        }
    }

    fn pending_nonce(&self, chain: ChainId, address: Address) -> Result<u64, BackendError> {
        let committed = self.state.nonce(chain, &address).map_err(internal)?;
        Ok(self.outbox.pending_nonce(chain, address, committed))
    }

    fn to_exec_request(request: &CallRequest) -> exec::CallRequest {
        exec::CallRequest {
            from: request.from,
            to: request.to,
            gas: Some(request.gas),
            gas_price: request.gas_price,
            max_fee_per_gas: request.max_fee_per_gas,
            max_priority_fee_per_gas: request.max_priority_fee_per_gas,
            value: Some(request.value),
            input: request.input.clone(),
            nonce: request.nonce,
            access_list: request.access_list.clone(),
        }
    }

    /// Checks `tx` against committed state; the sender's committed next nonce.
    fn check_submission(&self, chain: ChainId, tx: &RecoveredTx) -> Result<u64, SubmitError> {
        if let Some(moved) = self.moved(chain) {
            return Err(SubmitError::Rejected(format!(
                "chain {chain} moved to region {} at height {}: send its transactions there",
                moved.target, moved.height
            )));
        }
        let signed = tx.tx();
        let sender = tx.sender();
        let unavailable = |e: exec::StateError| SubmitError::Unavailable(e.to_string());
        let committed = self.state.nonce(chain, &sender).map_err(unavailable)?;
        if signed.nonce() < committed {
            return Err(SubmitError::NonceTooLow {
                next: committed,
                got: signed.nonce(),
            });
        }
        // EIP-2681: no account can ever use this nonce (its successor would overflow).
        if signed.nonce() == u64::MAX {
            return Err(SubmitError::Rejected("nonce has max value".into()));
        }
        if signed.gas_limit() > SEGMENT_GAS_LIMIT {
            return Err(SubmitError::GasLimit);
        }
        if signed.gas_limit() < TRANSFER_GAS {
            return Err(SubmitError::IntrinsicGas {
                got: signed.gas_limit(),
                needed: TRANSFER_GAS,
            });
        }
        let max_fee = signed.tx().max_fee_per_gas();
        if max_fee < u128::from(BASE_FEE_WEI) {
            return Err(SubmitError::Underpriced {
                needed: u128::from(BASE_FEE_WEI),
                got: max_fee,
            });
        }
        let have = self
            .state
            .account(chain, &sender)
            .map_err(unavailable)?
            .map_or(U256::ZERO, |a| a.balance);
        let want = signed.tx().max_cost();
        if want > have {
            return Err(SubmitError::InsufficientFunds { have, want });
        }
        Ok(committed)
    }

    /// `eth_call` on the regionchain: the RN reward reserve's read-only functions.
    /// Runs `run` with the executor over the state at `at`, in the block context a call at
    /// `at` sees, with `request` in the executor's terms: what `eth_call`, `eth_estimateGas`
    /// and `eth_createAccessList` share on a servicechain.
    fn simulate<T>(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
        run: impl FnOnce(&dyn StateRead, &BlockContext, &exec::CallRequest) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let ctx = self.call_context(chain, at)?;
        let request = Self::to_exec_request(request);
        self.read_state(chain, at, |state| run(state, &ctx, &request))
    }

    /// The regionchain has no EVM: `what` cannot be answered there.
    fn refuse_on_region(&self, chain: ChainId, what: &str) -> Result<(), BackendError> {
        if chain == self.region {
            return Err(BackendError::Execution(format!(
                "the regionchain has no EVM: {what}"
            )));
        }
        Ok(())
    }

    fn reserve_call(&self, request: &CallRequest) -> Result<Bytes, BackendError> {
        if request.to != Some(RESERVE_ADDRESS) {
            return Err(BackendError::Execution(
                "the regionchain has no EVM: only the reward reserve answers eth_call".into(),
            ));
        }
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        reserve_answer(&region.pop, &request.input)
            .map(|v| Bytes::from(v.to_be_bytes::<32>().to_vec()))
            .ok_or_else(|| BackendError::Reverted {
                output: Bytes::new(),
            })
    }
}

/// The pool's refusal as the client sees it (geth's wording first).
fn pool_refusal(e: super::outbox::Refusal) -> SubmitError {
    use super::outbox::Refusal;
    use crate::mempool::MempoolError;
    match e {
        Refusal::Pool(MempoolError::AlreadyKnown) => SubmitError::AlreadyKnown,
        Refusal::Pool(MempoolError::PoolFull) => SubmitError::PoolFull,
        Refusal::Pool(MempoolError::NonceTooLow { expected, got }) => SubmitError::NonceTooLow {
            next: expected,
            got,
        },
        Refusal::Pool(other) => SubmitError::Rejected(other.to_string()),
        journal @ Refusal::Journal(_) => SubmitError::Unavailable(journal.to_string()),
    }
}

/// The reserve's ABI: `reserve()`, `difficultyBits()`, and per RN `sharesOf(address)`,
/// `lockedOf(address)`, `unlockedOf(address)`, `penaltiesOf(address)`, `withdrawnOf(address)`,
/// `withdrawalNonceOf(address)`, each returning one `uint256`.
pub fn reserve_answer(pop: &PopState, input: &[u8]) -> Option<U256> {
    let selector = |sig: &str| keccak256(sig.as_bytes())[..4].to_vec();
    let (head, args) = input.split_at_checked(4)?;
    let rn = || -> Option<Address> {
        let word = args.get(..32)?;
        word[..12]
            .iter()
            .all(|b| *b == 0)
            .then(|| Address::from_slice(&word[12..]))
    };
    let account = |a: Address| pop.rns.get(&a).cloned().unwrap_or_default();
    let head = head.to_vec();
    if head == selector("reserve()") {
        Some(pop.reserve)
    } else if head == selector("difficultyBits()") {
        Some(U256::from(pop.bits))
    } else if head == selector("sharesOf(address)") {
        Some(U256::from(account(rn()?).shares))
    } else if head == selector("lockedOf(address)") {
        Some(account(rn()?).locked_total())
    } else if head == selector("unlockedOf(address)") {
        Some(account(rn()?).unlocked)
    } else if head == selector("penaltiesOf(address)") {
        Some(U256::from(account(rn()?).penalties))
    } else if head == selector("withdrawnOf(address)") {
        Some(account(rn()?).withdrawn)
    } else if head == selector("withdrawalNonceOf(address)") {
        Some(U256::from(account(rn()?).withdrawals))
    } else {
        None
    }
}

/// A raw servicechain transaction as the RPC shows it (`None` if it does not decode or
/// recover: such a transaction is marked invalid in its segment and has no sender).
/// The RPC receipt of transaction `hash` (`tx`, at `location`), whose first log is the block's
/// log number `first_log_index`.
fn rpc_receipt(
    hash: B256,
    tx: &RpcTransaction,
    location: &TxLocation,
    receipt: &exec::Receipt,
    first_log_index: usize,
) -> RpcReceipt {
    let logs = receipt
        .logs
        .iter()
        .enumerate()
        .map(|(i, log)| RpcLog {
            address: log.address,
            topics: log.topics.clone(),
            data: log.data.clone(),
            block_number: location.block_number,
            block_hash: location.block_hash,
            block_timestamp: location.block_timestamp,
            transaction_hash: hash,
            transaction_index: location.index,
            log_index: first_log_index.saturating_add(i) as u64,
            removed: false,
        })
        .collect();
    RpcReceipt {
        transaction_hash: hash,
        transaction_index: location.index,
        block_hash: location.block_hash,
        block_number: location.block_number,
        from: tx.from,
        to: tx.tx.to(),
        tx_type: tx.tx.tx_type() as u8,
        status: receipt.outcome == TxOutcome::Success,
        gas_used: receipt.gas_used,
        cumulative_gas_used: receipt.cumulative_gas_used,
        effective_gas_price: receipt.effective_gas_price,
        contract_address: receipt.contract_address,
        logs,
    }
}

fn rpc_tx(raw: &Bytes, location: Option<TxLocation>) -> Option<RpcTransaction> {
    let signed = SignedTransaction::decode(raw).ok()?;
    let recovered = RecoveredTx::recover(signed).ok()?;
    let (tx, from) = recovered.into_parts();
    Some(RpcTransaction { tx, from, location })
}

impl RpcBackend for ChainRpc {
    fn has_chain(&self, chain: ChainId) -> bool {
        chain == self.region
            || self
                .regionchain
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .registry
                .contains(chain)
    }

    fn head(&self, chain: ChainId) -> Result<u64, BackendError> {
        let head = self.head_height()?;
        Ok(self.numbering().last(chain, head))
    }

    fn block_by_number(
        &self,
        chain: ChainId,
        number: u64,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        match self.numbering().height(chain, number) {
            Some(height) => self.block_at(chain, height, full),
            None => Ok(None),
        }
    }

    fn block_by_hash(
        &self,
        chain: ChainId,
        hash: B256,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError> {
        let height = match hash == self.genesis.hash.0 {
            true => Some(0),
            false => self.state.store().height_of(&hash.0).map_err(internal)?,
        };
        match height {
            Some(height) => self.block_at(chain, height, full),
            None => Ok(None),
        }
    }

    fn transaction(
        &self,
        chain: ChainId,
        hash: B256,
    ) -> Result<Option<RpcTransaction>, BackendError> {
        let store = self.state.store();
        let Some(at) = store.tx_location(&hash.0).map_err(internal)? else {
            return Ok(None);
        };
        let Some(block) = self.container(at.height)? else {
            return Ok(None);
        };
        let Some(segment) = block.segments.get(at.segment as usize) else {
            return Ok(None);
        };
        if segment.chain_id != chain || chain == self.region {
            return Ok(None);
        }
        let Some(number) = self.numbering().number(chain, at.height) else {
            return Ok(None);
        };
        let location = TxLocation {
            block_hash: block.hash().0,
            block_number: number,
            block_timestamp: block.header().timestamp_ms / 1000,
            index: u64::from(at.index),
            base_fee_per_gas: Some(BASE_FEE_WEI),
        };
        Ok(segment
            .txs
            .get(at.index as usize)
            .and_then(|raw| rpc_tx(raw, Some(location))))
    }

    fn receipt(&self, chain: ChainId, hash: B256) -> Result<Option<RpcReceipt>, BackendError> {
        let Some(found) = self.state.store().receipt(&hash).map_err(internal)? else {
            return Ok(None);
        };
        if found.chain_id != chain {
            return Ok(None);
        }
        let Some(tx) = self.transaction(chain, hash)? else {
            return Ok(None);
        };
        let Some(location) = tx.location else {
            return Ok(None);
        };
        Ok(Some(rpc_receipt(
            hash,
            &tx,
            &location,
            &found.receipt,
            found.first_log_index,
        )))
    }

    fn balance(&self, chain: ChainId, address: Address, at: StateAt) -> Result<U256, BackendError> {
        self.read_state(chain, at, |state| {
            Ok(state
                .account(chain, &address)
                .map_err(internal)?
                .map_or(U256::ZERO, |a| a.balance))
        })
    }

    fn nonce(&self, chain: ChainId, address: Address, at: StateAt) -> Result<u64, BackendError> {
        match at {
            StateAt::Pending => self.pending_nonce(chain, address),
            _ => self.read_state(chain, at, |state| {
                state.nonce(chain, &address).map_err(internal)
            }),
        }
    }

    fn code(&self, chain: ChainId, address: Address, at: StateAt) -> Result<Bytes, BackendError> {
        self.read_state(chain, at, |state| {
            let Some(account) = state.account(chain, &address).map_err(internal)? else {
                return Ok(Bytes::new());
            };
            if !account.has_code() {
                return Ok(Bytes::new());
            }
            Ok(state
                .code(chain, &account.code_hash)
                .map_err(internal)?
                .unwrap_or_default())
        })
    }

    fn storage(
        &self,
        chain: ChainId,
        address: Address,
        slot: B256,
        at: StateAt,
    ) -> Result<B256, BackendError> {
        self.read_state(chain, at, |state| {
            let value = state
                .storage(chain, &address, &U256::from_be_bytes(slot.0))
                .map_err(internal)?;
            Ok(B256::from(value.to_be_bytes::<32>()))
        })
    }

    fn call(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<Bytes, BackendError> {
        if chain == self.region {
            // The reserve's native contract reads the live regionchain state only.
            if matches!(at, StateAt::Historical(n) if n < self.head_height()?) {
                return Err(BackendError::HistoricalState);
            }
            return self.reserve_call(request);
        }
        let outcome = self.simulate(chain, request, at, |state, ctx, req| {
            self.executor.call(state, ctx, chain, req).map_err(internal)
        })?;
        match outcome.outcome {
            TxOutcome::Success => Ok(outcome.output),
            TxOutcome::Reverted => Err(BackendError::Reverted {
                output: outcome.output,
            }),
            _ => Err(BackendError::Execution(
                outcome.reason.unwrap_or_else(|| "execution failed".into()),
            )),
        }
    }

    fn estimate_gas(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<u64, BackendError> {
        self.refuse_on_region(chain, "nothing to estimate")?;
        self.simulate(chain, request, at, |state, ctx, req| {
            self.executor
                .estimate_gas(state, ctx, chain, req)
                .map_err(|e| match e {
                    exec::EstimateError::Reverted { output, .. } => {
                        BackendError::Reverted { output }
                    }
                    exec::EstimateError::State(s) => internal(s),
                    other => BackendError::Execution(other.to_string()),
                })
        })
    }

    fn create_access_list(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<RpcAccessList, BackendError> {
        self.refuse_on_region(chain, "no access list to create")?;
        let found = self.simulate(chain, request, at, |state, ctx, req| {
            self.executor
                .create_access_list(state, ctx, chain, req)
                .map_err(|e| match e {
                    exec::AccessListError::State(s) => internal(s),
                    unsettled => BackendError::Execution(unsettled.to_string()),
                })
        })?;
        let call = found.call;
        if let TxOutcome::Invalid(reason) = call.outcome {
            return Err(BackendError::Execution(format!(
                "failed to apply transaction: {reason}"
            )));
        }
        Ok(RpcAccessList {
            access_list: found.access_list,
            gas_used: call.gas_used,
            error: call.reason,
        })
    }

    fn send_raw_transaction(
        &self,
        chain: ChainId,
        tx: SignedTransaction,
    ) -> Result<B256, SubmitError> {
        if chain == self.region {
            return Err(SubmitError::Rejected(
                "the regionchain takes system transactions only; send to a servicechain".into(),
            ));
        }
        let hash = tx.hash();
        let recovered = RecoveredTx::recover(tx)
            .map_err(|e| SubmitError::Rejected(format!("invalid sender: {e}")))?;
        let committed = self.check_submission(chain, &recovered)?;
        self.outbox
            .submit(recovered, committed)
            .map_err(pool_refusal)?;
        Ok(hash)
    }

    fn logs(&self, chain: ChainId, query: &LogQuery) -> Result<Vec<RpcLog>, BackendError> {
        let numbering = self.numbering();
        // Blocks of a chain that came or left are partly in another region.
        let Some(heights) = numbering.heights(chain, query.from_block, query.to_block) else {
            return Ok(Vec::new());
        };
        let events = self
            .state
            .store()
            .logs(
                chain,
                *heights.start(),
                *heights.end(),
                &query.filter,
                query.limit,
            )
            .map_err(internal)?;
        // Each block's hash and timestamp (seconds), read once per block.
        let mut blocks: HashMap<u64, (B256, u64)> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let (block_hash, block_timestamp) = match blocks.get(&e.height) {
                Some(known) => *known,
                None => {
                    let known = self.container(e.height)?.map_or((B256::ZERO, 0), |b| {
                        (b.hash().0, b.header().timestamp_ms / 1000)
                    });
                    blocks.insert(e.height, known);
                    known
                }
            };
            out.push(RpcLog {
                address: e.log.address,
                topics: e.log.topics,
                data: e.log.data,
                block_number: numbering.number(chain, e.height).unwrap_or(e.height),
                block_hash,
                block_timestamp,
                transaction_hash: e.tx_hash,
                transaction_index: u64::from(e.tx_index),
                log_index: u64::from(e.log_index),
                removed: false,
            });
        }
        Ok(out)
    }

    fn gas_price(&self, chain: ChainId) -> Result<u128, BackendError> {
        Ok(u128::from(BASE_FEE_WEI).saturating_add(self.suggested_tip(chain)?))
    }

    fn max_priority_fee(&self, chain: ChainId) -> Result<u128, BackendError> {
        self.suggested_tip(chain)
    }

    fn fee_history(
        &self,
        chain: ChainId,
        block_count: u64,
        newest: u64,
        percentiles: &[f64],
    ) -> Result<RpcFeeHistory, BackendError> {
        // The method clamps the count to the blocks that exist up to `newest`.
        let oldest = newest.saturating_add(1).saturating_sub(block_count);
        let mut ratios = Vec::with_capacity(block_count as usize);
        let mut rewards = Vec::with_capacity(block_count as usize);
        let numbering = self.numbering();
        for n in oldest..=newest {
            // An adopted chain's blocks from before its adoption count as empty here.
            let height = numbering.height(chain, n);
            let receipts = match height {
                Some(height) => self
                    .state
                    .store()
                    .receipts_of(height, chain)
                    .map_err(internal)?,
                None => None,
            };
            let used = receipts
                .and_then(|r| r.receipts.last().map(|l| l.cumulative_gas_used))
                .unwrap_or(0);
            ratios.push(used as f64 / SEGMENT_GAS_LIMIT as f64);
            if !percentiles.is_empty() {
                let paid = match height {
                    Some(height) => self.paid_tips(chain, height)?,
                    None => Vec::new(),
                };
                rewards.push(fee_oracle::rewards(&paid, percentiles));
            }
        }
        Ok(RpcFeeHistory {
            oldest_block: oldest,
            base_fee_per_gas: vec![u128::from(BASE_FEE_WEI); block_count as usize + 1],
            gas_used_ratio: ratios,
            reward: (!percentiles.is_empty()).then_some(rewards),
        })
    }

    /// One container read, one receipts read and one sender recovery per transaction for the
    /// whole block (asking per transaction would decode the container once per transaction).
    fn block_receipts(
        &self,
        chain: ChainId,
        number: u64,
    ) -> Result<Option<Vec<RpcReceipt>>, BackendError> {
        if chain == self.region {
            return Ok((number <= self.head_height()?).then(Vec::new));
        }
        let Some(height) = self.numbering().height(chain, number) else {
            return Ok(None);
        };
        if height == 0 {
            return Ok(Some(Vec::new()));
        }
        let Some(block) = self.container(height)? else {
            return Ok(None);
        };
        let Some(position) = block.segments.iter().position(|s| s.chain_id == chain) else {
            return Ok(Some(Vec::new()));
        };
        let receipts = self
            .state
            .store()
            .segment_receipts(height, position as u32)
            .map_err(internal)?
            .map(|r| r.receipts)
            .unwrap_or_default();
        let txs = &block.segments[position].txs;
        if receipts.len() != txs.len() {
            return Err(internal(format!(
                "block {number}: {} receipts for {} transactions",
                receipts.len(),
                txs.len()
            )));
        }
        let block_hash = block.hash().0;
        let mut first_log_index = 0usize;
        let mut out = Vec::with_capacity(txs.len());
        for (i, (raw, receipt)) in txs.iter().zip(&receipts).enumerate() {
            let location = TxLocation {
                block_hash,
                block_number: number,
                block_timestamp: block.header().timestamp_ms / 1000,
                index: i as u64,
                base_fee_per_gas: Some(BASE_FEE_WEI),
            };
            // A transaction kept but marked invalid because it does not decode or recover has
            // no sender: like `eth_getTransactionReceipt`, there is no receipt to give for it.
            let Some(tx) = rpc_tx(raw, Some(location)) else {
                first_log_index = first_log_index.saturating_add(receipt.logs.len());
                continue;
            };
            out.push(rpc_receipt(
                keccak256(raw),
                &tx,
                &location,
                receipt,
                first_log_index,
            ));
            first_log_index = first_log_index.saturating_add(receipt.logs.len());
        }
        Ok(Some(out))
    }

    fn syncing(&self, _chain: ChainId) -> Result<Option<SyncProgress>, BackendError> {
        Ok(self.link.syncing())
    }

    fn peer_count(&self) -> u64 {
        self.link.peers()
    }

    fn servicechains(&self, _chain: ChainId) -> Result<Value, BackendError> {
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        let chains: Vec<Value> = region
            .registry
            .list()
            .into_iter()
            .map(|(chain, entry)| {
                json!({
                    "chainId": chain.0,
                    "owner": entry.owner,
                    "registeredAt": entry.registered_at.0,
                })
            })
            .collect();
        Ok(json!({
            "region": self.region.0,
            "count": chains.len(),
            "checkpointInterval": region.checkpoints.interval,
            "servicechains": chains,
        }))
    }

    fn checkpoint_proof(
        &self,
        chain: ChainId,
        block_hash: B256,
    ) -> Result<Option<Value>, BackendError> {
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        let segment = segment_hash(&BlockHash(block_hash), chain);
        Ok(region
            .checkpoints
            .prove(&segment)
            .map(|proof| json!({ "segmentHash": segment, "proof": proof })))
    }

    fn regions(&self) -> Result<Value, BackendError> {
        Ok(Value::Array(vec![self.region_summary()?]))
    }

    fn adoption(&self, chain: ChainId, chunk: Option<u64>) -> Result<Option<Value>, BackendError> {
        let Some(adoption) = self.adoption_txs(chain)? else {
            return Ok(None);
        };
        let chunks = adoption.txs.len();
        Ok(Some(match chunk {
            None => json!({
                "record": adoption.record,
                "adoption": adoption.txs[0],
                "chunks": chunks,
            }),
            Some(i) => {
                let tx = usize::try_from(i)
                    .ok()
                    .filter(|&i| i > 0)
                    .and_then(|i| adoption.txs.get(i))
                    .ok_or_else(|| {
                        BackendError::InvalidParams(format!(
                            "chain {chain}'s state has chunks 1 to {} beside the adoption; there is no chunk {i}",
                            chunks - 1
                        ))
                    })?;
                json!({ "index": i, "chunk": tx })
            }
        }))
    }

    fn evidence(
        &self,
        _chain: ChainId,
        from_height: u64,
        limit: usize,
    ) -> Result<Value, BackendError> {
        Ok(Value::Array(self.link.evidence(from_height, limit)))
    }

    fn pop_state(&self, _chain: ChainId, rn: Option<Address>) -> Result<Value, BackendError> {
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        let pop = &region.pop;
        let addresses: std::collections::BTreeSet<&Address> =
            pop.rns.keys().chain(pop.posc.rns.keys()).collect();
        let rns: serde_json::Map<String, Value> = addresses
            .into_iter()
            .filter(|a| rn.is_none_or(|want| want == **a))
            .map(|a| {
                let r = pop.rns.get(a).cloned().unwrap_or_default();
                let registration = pop.posc.rns.get(a).map(|e| {
                    json!({
                        "endpoint": e.endpoint.to_string(),
                        "nodeKey": Bytes::copy_from_slice(&e.node_key.0),
                        "sequence": e.sequence,
                        "registeredAt": e.registered_at.0,
                    })
                });
                (
                    a.to_checksum(None),
                    json!({
                        "shares": r.shares,
                        "epochShares": r.epoch_shares,
                        "locked": r.locked_total(),
                        "unlocked": r.unlocked,
                        "penalties": r.penalties,
                        "withdrawn": r.withdrawn,
                        "withdrawalNonce": r.withdrawals,
                        "registration": registration,
                    }),
                )
            })
            .collect();
        let posc = pop.posc.params;
        Ok(json!({
            "reserveAddress": RESERVE_ADDRESS,
            "reserve": pop.reserve,
            "difficultyBits": pop.bits,
            "probesPerRound": posc.probes_per_round,
            "penaltyLimit": posc.penalty_limit,
            "probeDeadlineMs": posc.probe_deadline_ms,
            "rns": rns,
        }))
    }

    fn por_work(&self, _chain: ChainId) -> Result<Value, BackendError> {
        let height = self.head_height()?;
        let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
        let segment = region
            .segments
            .segment(Height(height))
            .map_err(BackendError::Execution)?;
        Ok(json!({
            "seedHeight": height,
            "bits": region.pop.bits,
            "target": region.pop.target(),
            "expiresAfter": height + crate::chain::pop::SHARE_EXPIRY,
            "segment": Bytes::from(segment.to_vec()),
        }))
    }

    fn submit_share(
        &self,
        _chain: ChainId,
        height: u64,
        miner: Address,
        counter: u64,
    ) -> Result<Value, BackendError> {
        let share = crate::chain::pop::ShareSubmission {
            height: Height(height),
            miner,
            counter,
        };
        let next = Height(self.head_height()? + 1);
        {
            let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
            region
                .pop
                .check_share(&share, next, &[], &*region.segments)
                .map_err(|e| BackendError::InvalidParams(format!("share refused: {e}")))?;
        }
        self.link
            .forward(vec![share.to_system_tx()])
            .map_err(BackendError::Execution)?;
        Ok(json!({ "accepted": true, "seedHeight": height }))
    }

    fn send_system_transaction(&self, _chain: ChainId, raw: Bytes) -> Result<Value, BackendError> {
        use crate::types::system::{split, SystemKind};
        let kind = split(&raw)
            .map_err(|e| BackendError::InvalidParams(e.to_string()))?
            .0;
        if !matches!(
            kind,
            SystemKind::RegisterRn
                | SystemKind::Withdrawal
                | SystemKind::RegisterServicechain
                | SystemKind::CreateRegion
                | SystemKind::RegionCheckpoint
                | SystemKind::MoveServicechain
                | SystemKind::AdoptServicechain
                | SystemKind::AdoptionChunk
        ) {
            return Err(BackendError::InvalidParams(format!(
                "{kind:?} is not submitted by clients"
            )));
        }
        let next = Height(self.head_height()? + 1);
        let refusal = {
            let region = self.regionchain.read().unwrap_or_else(|e| e.into_inner());
            let segment = Segment {
                chain_id: region.region,
                txs: vec![raw.clone()],
            };
            match kind {
                SystemKind::AdoptionChunk => region.check_chunk(&raw).err().map(|e| e.to_string()),
                _ => region.execute(next, &segment).refusals.remove(0),
            }
        };
        if let Some(reason) = refusal {
            return Err(BackendError::InvalidParams(format!(
                "{kind:?} refused: {reason}"
            )));
        }
        self.link
            .forward(vec![raw.clone()])
            .map_err(BackendError::Execution)?;
        Ok(json!({ "hash": keccak256(&raw) }))
    }
}

impl NodeLink for crate::rn::RnView {
    fn forward(&self, txs: Vec<Bytes>) -> Result<(), String> {
        self.forward_txs(txs).map(|_| ()).map_err(|e| e.to_string())
    }

    fn evidence(&self, from_height: u64, limit: usize) -> Vec<Value> {
        self.evidence_from(Height(from_height), limit)
            .iter()
            .map(|r| r.to_json())
            .collect()
    }

    fn syncing(&self) -> Option<SyncProgress> {
        let status = self.sync_status();
        (status.phase == crate::rn::SyncPhase::CatchingUp).then_some(SyncProgress {
            starting_block: status.started_at.0,
            current_block: status.head.0,
            highest_block: status.highest_known.0,
        })
    }

    fn peers(&self) -> u64 {
        self.peer_count() as u64
    }

    fn finality(&self) -> Option<crate::rn::Finality> {
        crate::rn::RnView::finality(self)
    }
}

/// A JSON-RPC server over one RN per region, with each region's threads: the one that pushes
/// its new heads and logs to subscribers and the one that forwards its accepted transactions
/// to the CNs ([`super::outbox`]).
pub struct ServedRpc {
    server: Arc<crate::rpc::RpcServer>,
    /// Each region's backend, in the order served.
    regions: Vec<Arc<ChainRpc>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl ServedRpc {
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn server(&self) -> &crate::rpc::RpcServer {
        &self.server
    }

    /// The backend of each region served, in the order given: its load figures for metrics.
    pub fn regions(&self) -> &[Arc<ChainRpc>] {
        &self.regions
    }

    /// Stops the notifiers, the forwarders and the server.
    pub fn shutdown(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.server.shutdown();
    }
}

/// Reads the journal at `path` back into the pool through the same rules as a new
/// submission (what has been included since is refused as "nonce too low"), then attaches it
/// to `outbox`, rewritten with what is held. Transactions of chains this region moved away
/// since go to the outbox's hand-off instead (kept only where one runs).
fn reopen_journal(
    path: &std::path::Path,
    backend: &ChainRpc,
    outbox: &super::outbox::Outbox,
) -> anyhow::Result<()> {
    let (journal, recovered) = crate::storage::txjournal::TxJournal::open(path)
        .with_context(|| format!("opening the transaction journal {}", path.display()))?;
    // Its tail would be rewritten away at attach: acknowledged transactions lost. An operator
    // decides (the journal is only this large after compactions failed for a long time).
    anyhow::ensure!(
        recovered.unread_bytes == 0,
        "the transaction journal {} is {} bytes past the {}-byte read-back limit; starting would drop the acknowledged transactions in its tail: move it aside (and resubmit them) to start",
        path.display(),
        recovered.unread_bytes,
        crate::storage::txjournal::MAX_JOURNAL_BYTES
    );
    let (mut held, mut refused, mut keep) = (0usize, 0usize, Vec::new());
    // Of chains moved away since they were acknowledged: handed on, not journaled again.
    let mut departing: BTreeMap<ChainId, Vec<RecoveredTx>> = BTreeMap::new();
    for raw in recovered.transactions {
        let decoded = SignedTransaction::decode(&raw)
            .ok()
            .and_then(|tx| Some((tx.chain_id()?, tx)));
        if let Some((chain, tx)) = decoded
            .as_ref()
            .filter(|(c, _)| backend.moved(*c).is_some())
        {
            if let Ok(tx) = RecoveredTx::recover(tx.clone()) {
                departing.entry(*chain).or_default().push(tx);
            }
            continue;
        }
        let again = decoded.map(|(chain, tx)| backend.send_raw_transaction(chain, tx));
        match again {
            Some(Ok(_)) => held += 1,
            // Included since (or a duplicate in the journal): nothing left to hold.
            Some(Err(SubmitError::NonceTooLow { .. } | SubmitError::AlreadyKnown)) | None => {
                refused += 1
            }
            // Refused for now (state not readable, pool full, a chain not known yet): kept.
            Some(Err(_)) => keep.push(raw),
        }
    }
    let kept = keep.len();
    let departed: usize = departing.values().map(Vec::len).sum();
    for (chain, txs) in departing {
        outbox.depart(chain, txs);
    }
    outbox
        .attach_journal(journal, keep)
        .with_context(|| format!("rewriting the transaction journal {}", path.display()))?;
    tracing::info!(
        held,
        refused,
        kept,
        departed,
        torn_bytes = recovered.torn_bytes,
        "transaction journal read back"
    );
    Ok(())
}

/// The transaction journal's file name in an RN's datadir.
pub const TX_JOURNAL: &str = "txs.journal";

/// One region an endpoint serves: its genesis, the RN that follows it, and that RN's datadir
/// (for the transaction journal).
pub struct ServedRegion<'a> {
    pub genesis: &'a crate::chain::genesis::Genesis,
    pub rn: crate::rn::RnView,
    pub datadir: Option<&'a std::path::Path>,
}

/// Serves `rn`'s chain on `addr` within `limits`: every servicechain of `genesis` and the
/// regionchain, the first servicechain at `/`. With the RN's `datadir`, accepted
/// transactions are made durable in its journal ([`TX_JOURNAL`], read back first: what an
/// earlier process acknowledged is held again). Stops with `stop` or [`ServedRpc::shutdown`].
pub fn serve(
    rt: &tokio::runtime::Handle,
    addr: std::net::SocketAddr,
    limits: crate::rpc::RpcConfig,
    genesis: &crate::chain::genesis::Genesis,
    rn: crate::rn::RnView,
    datadir: Option<&std::path::Path>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<ServedRpc> {
    let region = ServedRegion {
        genesis,
        rn,
        datadir,
    };
    serve_regions(rt, addr, limits, &[region], stop)
}

/// [`serve`] for several regions on one endpoint: `/chain/<id>` is answered by the region
/// holding `id` ([`super::regions::RegionRouter`]), `/` by the first region's first
/// servicechain.
pub fn serve_regions(
    rt: &tokio::runtime::Handle,
    addr: std::net::SocketAddr,
    limits: crate::rpc::RpcConfig,
    regions: &[ServedRegion<'_>],
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<ServedRpc> {
    let first = regions.first().context("no region to serve")?;
    let region = ChainId(first.genesis.region);
    // Transactions of chains that move away are handed on where another region is served
    // here, or reachable through an `[rn] remote` endpoint.
    let hands_off = regions.len() > 1 || !limits.upstreams.is_empty();
    let remotes = limits.upstreams.clone();
    let backends = regions
        .iter()
        .map(|served| region_backend(served, limits.region_capacity_tps, hands_off))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = crate::rpc::RpcConfig {
        default_chain: first
            .genesis
            .servicechains
            .first()
            .map_or(region, |c| ChainId(*c)),
        ..limits
    };
    let backend: Arc<dyn RpcBackend> = match backends.as_slice() {
        [(only, _)] => Arc::clone(only) as Arc<dyn RpcBackend>,
        _ => Arc::new(super::regions::RegionRouter::new(
            backends.iter().map(|(b, _)| Arc::clone(b)).collect(),
        )?),
    };
    let server = Arc::new(
        crate::rpc::RpcServer::start(rt, addr, config, backend)
            .map_err(|e| anyhow::anyhow!("JSON-RPC cannot listen on {addr}: {e}"))?,
    );
    let stop = Arc::clone(stop);
    let mut threads = Vec::new();
    let served_backends: Vec<Arc<ChainRpc>> = backends.iter().map(|(b, _)| Arc::clone(b)).collect();
    if hands_off {
        let (regions, stop) = (served_backends.clone(), Arc::clone(&stop));
        threads.push(crate::pipeline::spawn_critical("rpc-handoff", move || {
            super::regions::hand_off(&regions, &remotes, &stop)
        })?);
    }
    for (served, (backend, outbox)) in regions.iter().zip(backends) {
        let forwarder = {
            let (link, state) = (served.rn.clone(), Arc::clone(&served.rn.state().state));
            super::outbox::spawn(
                outbox,
                Box::new(move |txs| NodeLink::forward(&link, txs)),
                Box::new(move |chain, sender| state.nonce(chain, &sender).ok()),
                Arc::clone(&stop),
            )?
        };
        threads.push(forwarder);
        let notifier = {
            let (server, stop, rn) = (Arc::clone(&server), Arc::clone(&stop), served.rn.clone());
            std::thread::Builder::new()
                .name("rpc-heads".into())
                .spawn(move || {
                    push_heads(&backend, &server, &rn, &stop);
                    Ok(())
                })?
        };
        threads.push(notifier);
    }
    Ok(ServedRpc {
        server,
        regions: served_backends,
        stop,
        threads,
    })
}

/// One region's backend over its RN, with the outbox its accepted transactions wait in (its
/// journal read back first; with `hands_off`, what it held for chains moved away since is
/// kept for the endpoint's hand-off).
fn region_backend(
    served: &ServedRegion<'_>,
    capacity_tps: Option<f64>,
    hands_off: bool,
) -> anyhow::Result<(Arc<ChainRpc>, Arc<super::outbox::Outbox>)> {
    let rn = &served.rn;
    let outbox = Arc::new(super::outbox::Outbox::new(Arc::clone(&rn.state().pool)));
    if hands_off {
        // Before the journal is read back: what it holds for moved chains is handed on.
        outbox.keep_departed();
    }
    let backend = Arc::new(
        ChainRpc::new(
            ChainId(served.genesis.region),
            served.genesis.tip(),
            Arc::clone(&rn.state().state),
            rn.chain().clone(),
            Arc::clone(rn.region()),
            Arc::new(rn.clone()),
            Arc::clone(&outbox),
        )
        .with_capacity(capacity_tps),
    );
    if let Some(datadir) = served.datadir {
        reopen_journal(&datadir.join(TX_JOURNAL), &backend, &outbox)?;
    }
    Ok((backend, outbox))
}

/// Pushes every new audited block to the chains with subscribers, until `stop`.
fn push_heads(
    backend: &ChainRpc,
    server: &crate::rpc::RpcServer,
    rn: &crate::rn::RnView,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut last = rn.head().0 .0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let head = rn.head().0 .0;
        for height in last + 1..=head {
            // Only subscribed chains: nothing per block for the (possibly 100 000) others; and
            // only this region's (one server may serve several regions, each with a pusher).
            let chains = server.subscribed_chains();
            // A block outside a moved chain's blocks here is left to the region holding it
            // (`notify` numbers each block or skips it).
            for chain in chains.into_iter().filter(|&c| backend.has_chain(c)) {
                notify(backend, server, chain, height);
            }
        }
        last = head;
    }
}

/// Pushes `chain`'s block at this region's `height` to its subscribers, numbered as the chain
/// numbers it.
fn notify(backend: &ChainRpc, server: &crate::rpc::RpcServer, chain: ChainId, height: u64) {
    let Some(number) = backend.numbering().number(chain, height) else {
        return;
    };
    if let Ok(Some(block)) = backend.block_by_number(chain, number, false) {
        server.notify_head(chain, &block);
    }
    let query = LogQuery {
        from_block: number,
        to_block: number,
        filter: Default::default(),
        limit: 10_000,
    };
    if let Ok(logs) = backend.logs(chain, &query) {
        server.notify_logs(chain, &logs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::pop::RnRewards;
    use crate::chain::servicechain::ChainEntry;
    use crate::consensus::selection::CnSet;
    use crate::crypto::bls::SecretKey;
    use crate::crypto::hash::sha256;
    use crate::crypto::tx::{address_of, Eip1559Tx, Transaction, TxKind};
    use crate::exec::{Account, InvalidReason, Receipt, SegmentDiff, EMPTY_CODE_HASH};
    use crate::mempool::{Mempool, MempoolConfig};
    use crate::storage::blocklog::{BlockLog, BlockLogOptions};
    use crate::storage::history::HistoryRetention;
    use crate::storage::store::{BlockIndex, Store};
    use crate::types::codec::encode_frame;
    use crate::types::SegmentCommitment;

    const REGION: ChainId = ChainId(1000);
    const CHAIN: ChainId = ChainId(1001);
    const GWEI: u128 = 1_000_000_000;
    const SENDER_KEY: [u8; 32] = [0x5e; 32];
    /// What the sender holds at genesis: far more than any test transaction costs.
    const FUNDS: u64 = 1_000_000_000_000_000_000;

    fn sender() -> Address {
        address_of(&SENDER_KEY).unwrap() // a fixed, valid secret key
    }

    fn genesis() -> Tip {
        Tip {
            height: Height(0),
            hash: BlockHash(sha256(b"rpc-test-genesis")),
            mix: B256::repeat_byte(0x99),
            timestamp_ms: 0,
        }
    }

    /// Block `height`'s mix: distinct per block and from the genesis mix.
    fn mix(height: u64) -> B256 {
        B256::from(U256::from(height))
    }

    /// A link to no node: nothing is forwarded anywhere.
    struct NoLink;

    impl NodeLink for NoLink {
        fn forward(&self, _txs: Vec<Bytes>) -> Result<(), String> {
            Ok(())
        }

        fn evidence(&self, _from_height: u64, _limit: usize) -> Vec<Value> {
            Vec::new()
        }
    }

    /// What one test block holds besides its place in the chain (its timestamp is
    /// `1000 * height`, its mix [`mix`]).
    #[derive(Default)]
    struct Contents {
        /// Transactions `CHAIN`'s segment commits to.
        txs: u32,
        /// Accounts of `CHAIN` the block writes.
        accounts: Vec<(Address, Account)>,
        /// `CHAIN`'s receipts.
        receipts: Vec<Receipt>,
    }

    /// A [`ChainRpc`] over a real block log and store in a temporary directory, with `CHAIN`
    /// registered and the sender funded at genesis.
    struct Fixture {
        rpc: ChainRpc,
        log: BlockLog,
        blocks: Vec<Block>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let options = BlockLogOptions {
                preallocate_bytes: 0,
                ..Default::default()
            };
            let (log, _) = BlockLog::open(dir.path().join("blocks.log"), options).unwrap();
            let store = Arc::new(Store::open(dir.path().join("db")).unwrap());
            let allocations = [(CHAIN, sender(), U256::from(FUNDS))];
            let state = Arc::new(CommittedState::open(Arc::clone(&store), &allocations).unwrap());
            let chain = ChainReader::new(log.reader(), store);
            let key = SecretKey::from_seed(&[7; 32]).unwrap();
            let set = Arc::new(CnSet::new(vec![key.public_key()]).unwrap());
            let region = RegionState::new(REGION, set, 1).with_genesis_chains(&[CHAIN]);
            let pool = Mempool::new(MempoolConfig::default(), [CHAIN]);
            let outbox = Arc::new(super::super::outbox::Outbox::new(Arc::new(Mutex::new(
                pool,
            ))));
            let rpc = ChainRpc::new(
                REGION,
                genesis(),
                state,
                chain,
                Arc::new(RwLock::new(region)),
                Arc::new(NoLink),
                outbox,
            );
            Self {
                rpc,
                log,
                blocks: Vec::new(),
                _dir: dir,
            }
        }

        fn store(&self) -> &Store {
            self.rpc.state.store()
        }

        /// Appends the next block holding `contents`.
        fn push(&mut self, contents: Contents) {
            self.write(self.blocks.len() as u64 + 1, contents);
        }

        /// Writes a block holding `contents` at `height` (at most one above the head; at or
        /// below it, it replaces the block there and the head moves to it): appended to the
        /// log, indexed, with its state and receipts, in one batch as the persist stage does.
        fn write(&mut self, height: u64, contents: Contents) {
            self.blocks.truncate(height as usize - 1);
            let parent = self.blocks.last().map_or(genesis().hash, Block::hash);
            let mut block = crate::net::sync::tests::block(height, parent, 0);
            let header = &mut block.sealed.header;
            header.timestamp_ms = 1000 * height;
            header.mix = mix(height);
            let commitment = |chain_id, tx_count| SegmentCommitment {
                chain_id,
                tx_count,
                tx_root: B256::ZERO,
                receipts_root: B256::ZERO,
                state_root: B256::ZERO,
            };
            // Segment 0 is the regionchain's system transactions, which a region's load leaves
            // out: many of them, so that counting them shows.
            header.segments = vec![commitment(REGION, 1000), commitment(CHAIN, contents.txs)];
            block.segments = [REGION, CHAIN]
                .map(|chain_id| Segment {
                    chain_id,
                    txs: Vec::new(),
                })
                .to_vec();
            let offset = self.log.append(&encode_frame(&block)).unwrap();
            let diff = SegmentDiff {
                chain_id: CHAIN,
                accounts: contents
                    .accounts
                    .into_iter()
                    .map(|(a, v)| (a, Some(v)))
                    .collect(),
                storage: Default::default(),
                code: Default::default(),
                state_root: B256::repeat_byte(height as u8),
                prior: None,
            };
            let store = self.rpc.state.store();
            let mut batch = store.batch();
            batch.index_block(&BlockIndex {
                height,
                hash: block.hash().0 .0,
                log_offset: offset.0,
                txs: &[],
            });
            batch
                .apply_block_state(height, &[&diff], HistoryRetention::All)
                .unwrap();
            let hashes = (0..contents.receipts.len())
                .map(|i| B256::from(U256::from(i)))
                .collect();
            let bloom = exec::logs_bloom(&contents.receipts);
            batch.put_receipts(height, 1, CHAIN, hashes, contents.receipts, &bloom);
            batch.commit().unwrap();
            self.blocks.push(block);
        }
    }

    fn account(nonce: u64, balance: u64) -> Account {
        Account {
            nonce,
            balance: U256::from(balance),
            code_hash: EMPTY_CODE_HASH,
        }
    }

    /// The receipt of a transfer that paid `tip` above the base fee for `gas_used`.
    fn paid(tip: u128, gas_used: u64, cumulative_gas_used: u64) -> Receipt {
        Receipt {
            outcome: TxOutcome::Success,
            gas_used,
            cumulative_gas_used,
            effective_gas_price: u128::from(BASE_FEE_WEI) + tip,
            contract_address: None,
            logs: Vec::new(),
        }
    }

    /// A transfer from the sender on `CHAIN`, as `edit` shapes it.
    fn signed(edit: impl FnOnce(&mut Eip1559Tx)) -> SignedTransaction {
        let mut tx = Eip1559Tx {
            chain_id: CHAIN,
            nonce: 0,
            max_priority_fee_per_gas: 1,
            max_fee_per_gas: 2 * GWEI,
            gas_limit: TRANSFER_GAS,
            to: TxKind::Call(Address::repeat_byte(0x42)),
            value: U256::ZERO,
            input: Bytes::new(),
            access_list: Default::default(),
        };
        edit(&mut tx);
        Transaction::Eip1559(tx).sign(&SENDER_KEY).unwrap()
    }

    #[test]
    fn block_zero_is_the_genesis_and_blocks_beyond_the_head_are_absent() {
        let mut f = Fixture::new();
        f.push(Contents::default());
        let rpc = &f.rpc;
        let zero = rpc.block_by_number(CHAIN, 0, false).unwrap().unwrap();
        assert_eq!(
            (zero.hash, zero.mix_hash),
            (genesis().hash.0, genesis().mix)
        );
        let by_hash = rpc.block_by_hash(CHAIN, genesis().hash.0, false).unwrap();
        assert_eq!(by_hash.map(|b| b.number), Some(0));
        let one = rpc.block_by_number(CHAIN, 1, false).unwrap().unwrap();
        assert_eq!(
            (one.hash, one.parent_hash),
            (f.blocks[0].hash().0, genesis().hash.0)
        );
        assert_eq!(rpc.block_by_number(CHAIN, 2, false).unwrap(), None);
        // The regionchain has no receipts, but a block beyond the head is still absent.
        assert_eq!(rpc.block_receipts(REGION, 1).unwrap(), Some(Vec::new()));
        assert_eq!(rpc.block_receipts(REGION, 2).unwrap(), None);
        assert_eq!(rpc.block_receipts(CHAIN, 2).unwrap(), None);
    }

    /// A fixture of `blocks` blocks, the sender's balance `100 * height` after each, whose
    /// region numbers `CHAIN` as `number` says.
    fn numbered(blocks: u64, number: impl FnOnce(&mut Numbering)) -> Fixture {
        let mut f = Fixture::new();
        for height in 1..=blocks {
            f.push(Contents {
                accounts: vec![(sender(), account(height, 100 * height))],
                ..Default::default()
            });
        }
        let mut region = f.rpc.regionchain.write().unwrap();
        number(Arc::make_mut(&mut region.numbering));
        drop(region);
        f
    }

    #[test]
    fn a_journal_read_back_hands_on_what_it_held_for_a_chain_moved_away_since() {
        use crate::chain::region::MovedChain;
        use crate::node::outbox::Outbox;
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TX_JOURNAL);
        // Acknowledged, and so journaled, before the move.
        reopen_journal(&path, &f.rpc, &f.rpc.outbox).unwrap();
        let tx = signed(|_| {});
        f.rpc.send_raw_transaction(CHAIN, tx.clone()).unwrap();
        let record = MoveRecord {
            chain: CHAIN,
            source: REGION,
            target: ChainId(1_001_000),
            height: Height(1),
            owner: Address::ZERO,
            final_root: B256::ZERO,
            snapshot_root: B256::ZERO,
        };
        let moved = MovedChain {
            record,
            previous_moves: B256::ZERO,
            roots: Default::default(),
        };
        f.rpc
            .regionchain
            .write()
            .unwrap()
            .moved
            .insert(CHAIN, moved);
        // Restarted where a hand-off runs: the transaction is kept for it, and the journal
        // no longer holds it (the new region's journal will).
        let restarted = || {
            let pool = Mempool::new(MempoolConfig::default(), [CHAIN]);
            Outbox::new(Arc::new(Mutex::new(pool)))
        };
        let handing_on = restarted();
        handing_on.keep_departed();
        reopen_journal(&path, &f.rpc, &handing_on).unwrap();
        let departed: Vec<B256> = handing_on
            .take_departed()
            .iter()
            .map(|t| t.tx().hash())
            .collect();
        assert_eq!(departed, [tx.hash()]);
        let again = restarted();
        again.keep_departed();
        reopen_journal(&path, &f.rpc, &again).unwrap();
        assert!(again.take_departed().is_empty());
    }

    #[test]
    fn a_chain_moved_away_ends_before_its_freezing_block_here() {
        let f = numbered(5, |n| n.move_away(CHAIN, Height(3)));
        let rpc = &f.rpc;
        assert_eq!(rpc.head(CHAIN).unwrap(), 2);
        assert_eq!(rpc.head(REGION).unwrap(), 5);
        let two = rpc.block_by_number(CHAIN, 2, false).unwrap().unwrap();
        assert_eq!(two.hash, f.blocks[1].hash().0);
        assert_eq!(rpc.block_by_number(CHAIN, 3, false).unwrap(), None);
        let after = rpc.block_by_hash(CHAIN, f.blocks[3].hash().0, false);
        assert_eq!(after.unwrap(), None);
        assert_eq!(rpc.block_receipts(CHAIN, 3).unwrap(), None);
        // The region's own chain still has every block.
        assert!(rpc.block_by_number(REGION, 5, false).unwrap().is_some());
    }

    #[test]
    fn an_adopted_chain_numbers_this_regions_blocks_on_from_its_freeze() {
        // Frozen at 100 where it was, adopted here by block 2.
        let f = numbered(5, |n| n.adopt(CHAIN, 100, Height(2)));
        let rpc = &f.rpc;
        assert_eq!(rpc.head(CHAIN).unwrap(), 103);
        for (number, height) in [(100, 2), (101, 3), (103, 5)] {
            let block = rpc.block_by_number(CHAIN, number, true).unwrap().unwrap();
            assert_eq!(
                (block.number, block.hash),
                (number, f.blocks[height - 1].hash().0)
            );
            let by_hash = rpc.block_by_hash(CHAIN, block.hash, false).unwrap();
            assert_eq!(by_hash.map(|b| b.number), Some(number));
            assert_eq!(rpc.block_receipts(CHAIN, number).unwrap(), Some(Vec::new()));
        }
        // Blocks from before the adoption are the other region's.
        for number in [0, 1, 99] {
            assert_eq!(rpc.block_by_number(CHAIN, number, false).unwrap(), None);
            assert_eq!(rpc.block_receipts(CHAIN, number).unwrap(), None);
        }
        let before = rpc.block_by_hash(CHAIN, f.blocks[0].hash().0, false);
        assert_eq!(before.unwrap(), None);
        assert_eq!(rpc.block_by_number(CHAIN, u64::MAX, false).unwrap(), None);
        // State reads and calls name the chain's numbers.
        let balance = |at| rpc.balance(CHAIN, sender(), at);
        assert_eq!(balance(StateAt::Historical(101)), Ok(U256::from(300)));
        assert_eq!(
            balance(StateAt::Historical(99)),
            Err(BackendError::UnknownBlock)
        );
        let ctx = rpc.call_context(CHAIN, StateAt::Historical(101)).unwrap();
        assert_eq!((ctx.height, ctx.number(CHAIN)), (Height(4), 102));
        let next = rpc.call_context(CHAIN, StateAt::Latest).unwrap();
        assert_eq!(next.number(CHAIN), 104);
        // The region's own chain numbers by height.
        assert_eq!(rpc.head(REGION).unwrap(), 5);
    }

    #[test]
    fn state_below_the_head_is_read_from_history_and_at_the_head_from_the_latest() {
        let mut f = Fixture::new();
        for (height, balance) in [(1, 900), (2, 800)] {
            f.push(Contents {
                accounts: vec![(sender(), account(height, balance))],
                ..Default::default()
            });
        }
        let balance = |at| f.rpc.balance(CHAIN, sender(), at).unwrap();
        assert_eq!(balance(StateAt::Historical(0)), U256::from(FUNDS));
        assert_eq!(balance(StateAt::Historical(1)), U256::from(900));
        for at in [StateAt::Historical(2), StateAt::Latest, StateAt::Pending] {
            assert_eq!(balance(at), U256::from(800), "{at:?}");
        }
        let nonce = |at| f.rpc.nonce(CHAIN, sender(), at).unwrap();
        assert_eq!(
            [nonce(StateAt::Historical(0)), nonce(StateAt::Historical(1))],
            [0, 1]
        );
        assert_eq!(nonce(StateAt::Latest), 2);
    }

    #[test]
    fn the_latest_state_is_the_written_one_not_a_block_applied_and_not_yet_written() {
        let mut f = Fixture::new();
        f.push(Contents {
            accounts: vec![(sender(), account(1, 900))],
            ..Default::default()
        });
        // Block 2 applied, its receipts not yet written with it: the sender's nonce moves to
        // 2 in the applied state only.
        let diff = SegmentDiff {
            chain_id: CHAIN,
            accounts: [(sender(), Some(account(2, 800)))].into_iter().collect(),
            storage: Default::default(),
            code: Default::default(),
            state_root: B256::repeat_byte(2),
            prior: None,
        };
        let execution = exec::SegmentExecution {
            commitment: f.blocks[0].header().segments[1].clone(),
            receipts: Vec::new(),
            bloom: Default::default(),
            diff,
            nonces: Vec::new(),
        };
        f.rpc
            .state
            .committed(crate::storage::state::PendingBlock::new(
                Height(2),
                BlockHash(B256::repeat_byte(2)),
                Vec::new(),
                vec![(1, execution)],
            ));
        assert_eq!(f.rpc.state.nonce(CHAIN, &sender()).unwrap(), 2, "applied");
        for at in [StateAt::Latest, StateAt::Historical(1)] {
            assert_eq!(f.rpc.nonce(CHAIN, sender(), at).unwrap(), 1, "{at:?}");
            assert_eq!(f.rpc.balance(CHAIN, sender(), at).unwrap(), U256::from(900));
        }
        // The next nonce a wallet is told counts from what is applied.
        assert_eq!(f.rpc.nonce(CHAIN, sender(), StateAt::Pending).unwrap(), 2);
    }

    #[test]
    fn a_block_older_than_the_retained_history_is_refused_naming_the_oldest_readable_one() {
        let mut f = Fixture::new();
        for height in 1..=3 {
            f.push(Contents {
                accounts: vec![(sender(), account(height, 100 * height))],
                ..Default::default()
            });
        }
        assert_eq!(f.store().prune_history(2, 10).unwrap(), 2);
        let err = f
            .rpc
            .balance(CHAIN, sender(), StateAt::Historical(1))
            .unwrap_err();
        assert_eq!(
            err,
            BackendError::HistoryPruned {
                requested: 1,
                oldest: 2
            }
        );
        assert!(err.to_string().contains("oldest retained block 2"), "{err}");
        let kept = f.rpc.balance(CHAIN, sender(), StateAt::Historical(2));
        assert_eq!(kept.unwrap(), U256::from(200));
    }

    #[test]
    fn a_call_at_an_older_block_runs_in_the_context_of_the_block_after_it() {
        let mut f = Fixture::new();
        f.push(Contents::default());
        f.push(Contents::default());
        let context = |at| {
            let ctx = f.rpc.call_context(CHAIN, at).unwrap();
            (ctx.height.0, ctx.prevrandao)
        };
        // Block n + 1's number and time, block n's mix (its PREVRANDAO).
        let after_one = f.rpc.call_context(CHAIN, StateAt::Historical(1)).unwrap();
        assert_eq!(after_one.timestamp_ms, f.blocks[1].header().timestamp_ms);
        assert_eq!(context(StateAt::Historical(1)), (2, mix(1)));
        assert_eq!(context(StateAt::Historical(0)), (1, genesis().mix));
        // At the head and beyond it, the block after the head's (no n + 1 computed).
        for at in [
            StateAt::Latest,
            StateAt::Pending,
            StateAt::Historical(2),
            StateAt::Historical(u64::MAX),
        ] {
            assert_eq!(context(at), (3, mix(2)), "{at:?}");
        }
    }

    #[test]
    fn submissions_are_checked_against_the_latest_state_with_geths_errors() {
        let mut f = Fixture::new();
        f.push(Contents {
            accounts: vec![(sender(), account(2, FUNDS))],
            ..Default::default()
        });
        let send = |tx| f.rpc.send_raw_transaction(CHAIN, tx);
        let base = u128::from(BASE_FEE_WEI);
        let refusals = [
            // A stale nonce first, whatever else is wrong: a transaction sent again after its
            // inclusion is told so, not that its sender's balance no longer covers it.
            (
                signed(|t| (t.nonce, t.value) = (1, U256::from(FUNDS))),
                SubmitError::NonceTooLow { next: 2, got: 1 },
            ),
            (
                signed(|t| (t.nonce, t.gas_limit) = (2, SEGMENT_GAS_LIMIT + 1)),
                SubmitError::GasLimit,
            ),
            (
                signed(|t| (t.nonce, t.gas_limit) = (2, TRANSFER_GAS - 1)),
                SubmitError::IntrinsicGas {
                    got: TRANSFER_GAS - 1,
                    needed: TRANSFER_GAS,
                },
            ),
            (
                signed(|t| (t.nonce, t.max_fee_per_gas) = (2, base - 1)),
                SubmitError::Underpriced {
                    needed: base,
                    got: base - 1,
                },
            ),
            (
                signed(|t| (t.nonce, t.value) = (2, U256::from(FUNDS))),
                SubmitError::InsufficientFunds {
                    have: U256::from(FUNDS),
                    want: U256::from(FUNDS) + U256::from(u128::from(TRANSFER_GAS) * 2 * GWEI),
                },
            ),
        ];
        for (tx, refusal) in refusals {
            assert_eq!(send(tx), Err(refusal.clone()), "{refusal}");
        }
        assert_eq!(f.rpc.outbox.pooled(), 0, "a refused transaction was pooled");
        let good = signed(|t| t.nonce = 2);
        assert_eq!(send(good.clone()), Ok(good.hash()));
        assert_eq!(send(good), Err(SubmitError::AlreadyKnown));
        assert_eq!(f.rpc.nonce(CHAIN, sender(), StateAt::Pending), Ok(3));
        assert_eq!(f.rpc.nonce(CHAIN, sender(), StateAt::Latest), Ok(2));
    }

    #[test]
    fn a_nonce_at_u64_max_is_refused_as_its_successor_would_overflow() {
        // EIP-2681: an account whose next nonce is u64::MAX can send nothing more.
        let mut f = Fixture::new();
        f.push(Contents {
            accounts: vec![(sender(), account(u64::MAX, FUNDS))],
            ..Default::default()
        });
        let tx = signed(|t| t.nonce = u64::MAX);
        assert_eq!(
            f.rpc.send_raw_transaction(CHAIN, tx),
            Err(SubmitError::Rejected("nonce has max value".into()))
        );
        assert_eq!(f.rpc.outbox.pooled(), 0);
        let pending = f.rpc.nonce(CHAIN, sender(), StateAt::Pending);
        assert_eq!(pending, Ok(u64::MAX));
    }

    #[test]
    fn the_regionchain_refuses_user_transactions_and_evm_methods_but_answers_the_reserve() {
        let mut f = Fixture::new();
        f.push(Contents::default());
        let rn = Address::repeat_byte(0x77);
        {
            let mut region = f.rpc.regionchain.write().unwrap();
            region.pop.reserve = U256::from(123_456);
            let rewards = RnRewards {
                shares: 7,
                ..Default::default()
            };
            region.pop.rns.insert(rn, rewards);
        }
        let sent = f.rpc.send_raw_transaction(REGION, signed(|_| ()));
        assert!(
            matches!(&sent, Err(SubmitError::Rejected(m)) if m.contains("system transactions only")),
            "{sent:?}"
        );
        let to_reserve = |input: Vec<u8>| CallRequest {
            to: Some(RESERVE_ADDRESS),
            input: input.into(),
            ..Default::default()
        };
        let estimated = f
            .rpc
            .estimate_gas(REGION, &to_reserve(Vec::new()), StateAt::Latest);
        assert!(
            matches!(&estimated, Err(BackendError::Execution(m)) if m.contains("no EVM")),
            "{estimated:?}"
        );
        let selector = |sig: &str| keccak256(sig.as_bytes())[..4].to_vec();
        let reserve = to_reserve(selector("reserve()"));
        let word = |v: U256| Bytes::from(v.to_be_bytes::<32>().to_vec());
        assert_eq!(
            f.rpc.call(REGION, &reserve, StateAt::Latest),
            Ok(word(U256::from(123_456)))
        );
        // The reserve's state is the live one only.
        assert_eq!(
            f.rpc.call(REGION, &reserve, StateAt::Historical(0)),
            Err(BackendError::HistoricalState)
        );
        let elsewhere = CallRequest {
            to: Some(Address::repeat_byte(1)),
            ..reserve.clone()
        };
        assert!(matches!(
            f.rpc.call(REGION, &elsewhere, StateAt::Latest),
            Err(BackendError::Execution(_))
        ));
        let mut shares = selector("sharesOf(address)");
        shares.extend_from_slice(&[0; 12]);
        shares.extend_from_slice(rn.as_slice());
        assert_eq!(
            f.rpc
                .call(REGION, &to_reserve(shares.clone()), StateAt::Latest),
            Ok(word(U256::from(7)))
        );
        // An address word with bits above its 20 bytes is not an address.
        shares[4] = 1;
        assert_eq!(
            f.rpc.call(REGION, &to_reserve(shares), StateAt::Latest),
            Err(BackendError::Reverted {
                output: Bytes::new()
            })
        );
    }

    #[test]
    fn has_chain_knows_the_region_and_its_registered_servicechains_only() {
        let f = Fixture::new();
        let other = ChainId(1002);
        assert!(f.rpc.has_chain(REGION));
        assert!(f.rpc.has_chain(CHAIN));
        assert!(!f.rpc.has_chain(other));
        assert!(!f.rpc.has_chain(ChainId(u64::MAX)));
        // Read live: a servicechain registered later is served from then on.
        let entry = ChainEntry {
            owner: Address::ZERO,
            registered_at: Height(1),
        };
        f.rpc
            .regionchain
            .write()
            .unwrap()
            .registry
            .insert(other, entry);
        assert!(f.rpc.has_chain(other));
    }

    #[test]
    fn the_suggested_tip_is_computed_once_per_head_from_what_was_paid() {
        let mut f = Fixture::new();
        let base = u128::from(BASE_FEE_WEI);
        f.push(Contents {
            receipts: vec![paid(5 * GWEI, TRANSFER_GAS, TRANSFER_GAS)],
            ..Default::default()
        });
        assert_eq!(f.rpc.max_priority_fee(CHAIN), Ok(5 * GWEI));
        assert_eq!(f.rpc.gas_price(CHAIN), Ok(base + 5 * GWEI));
        // Other receipts under the same head: the answer computed for that head stands.
        let dearer = || Contents {
            receipts: vec![paid(9 * GWEI, TRANSFER_GAS, TRANSFER_GAS)],
            ..Default::default()
        };
        f.write(1, dearer());
        assert_eq!(f.rpc.max_priority_fee(CHAIN), Ok(5 * GWEI));
        // A new head: computed again, over both blocks.
        f.push(dearer());
        assert_eq!(f.rpc.max_priority_fee(CHAIN), Ok(9 * GWEI));
        assert_eq!(f.rpc.gas_price(CHAIN), Ok(base + 9 * GWEI));
        // A chain without paid tips gets the oracle's idle suggestion.
        let idle = GasPriceOracle::default().idle_tip;
        assert_eq!(f.rpc.max_priority_fee(ChainId(1002)), Ok(idle));
    }

    #[test]
    fn the_tip_cache_is_bounded_by_evicting_one_chain_not_all() {
        let f = Fixture::new();
        // One chain more than the cache holds.
        let (first, newest) = (2000, 2000 + MAX_CACHED_SUGGESTIONS as u64);
        for chain in first..=newest {
            f.rpc.max_priority_fee(ChainId(chain)).unwrap();
        }
        let cache = f.rpc.suggested_tips.lock().unwrap();
        assert_eq!(cache.len(), MAX_CACHED_SUGGESTIONS);
        assert!(
            cache.contains_key(&ChainId(newest)),
            "the newest answer was evicted"
        );
    }

    #[test]
    fn fee_history_reports_gas_used_and_leaves_invalid_transactions_out_of_rewards() {
        let mut f = Fixture::new();
        let receipts = vec![
            Receipt::invalid(InvalidReason::BadNonce, 0),
            paid(7 * GWEI, 50_000, 50_000),
            paid(3 * GWEI, TRANSFER_GAS, 50_000 + TRANSFER_GAS),
        ];
        f.push(Contents {
            txs: 3,
            receipts,
            ..Default::default()
        });
        let history = f.rpc.fee_history(CHAIN, 2, 1, &[0.0, 100.0]).unwrap();
        assert_eq!(history.oldest_block, 0);
        assert_eq!(history.base_fee_per_gas, vec![u128::from(BASE_FEE_WEI); 3]);
        let used = (50_000 + TRANSFER_GAS) as f64 / SEGMENT_GAS_LIMIT as f64;
        assert_eq!(history.gas_used_ratio, vec![0.0, used]);
        // The cheapest tip is the cheapest one paid: the invalid transaction paid nothing.
        assert_eq!(
            history.reward,
            Some(vec![vec![0, 0], vec![3 * GWEI, 7 * GWEI]])
        );
        let without = f.rpc.fee_history(CHAIN, 1, 1, &[]).unwrap();
        assert_eq!((without.oldest_block, without.reward), (1, None));
    }

    #[test]
    fn region_summary_rates_the_last_blocks_by_their_timestamps_once_per_head() {
        let mut f = Fixture::new();
        let head = UTILISATION_BLOCKS + 8;
        for height in 1..=head {
            f.push(Contents {
                txs: height as u32,
                ..Default::default()
            });
        }
        let summary = f.rpc.region_summary().unwrap();
        let first = head - UTILISATION_BLOCKS + 1;
        let txs: u64 = (first..=head).sum();
        // The rate counts what the blocks after the first added over the time they span.
        let rate = (txs - first) as f64 / (head - first) as f64;
        assert_eq!(summary["region"], json!(REGION.0));
        assert_eq!(summary["servicechains"], json!([CHAIN.0]));
        assert_eq!(summary["head"], json!(head));
        assert_eq!(summary["recentBlocks"], json!(UTILISATION_BLOCKS));
        assert_eq!(summary["recentTransactions"], json!(txs));
        assert_eq!(summary["txPerSecond"], json!(rate));
        // The head's block replaced by a busier one: the load read at that head stands...
        f.write(
            head,
            Contents {
                txs: 10_000,
                ..Default::default()
            },
        );
        // (the head's age is read at each call)
        let without_age = |mut v: Value| {
            v.as_object_mut().unwrap().remove("headAgeMs");
            v
        };
        assert_eq!(
            without_age(f.rpc.region_summary().unwrap()),
            without_age(summary)
        );
        // ... until the head moves.
        f.push(Contents::default());
        let moved = f.rpc.region_summary().unwrap();
        let txs = txs - first - head + 10_000;
        assert_eq!(moved["recentTransactions"], json!(txs));
    }

    #[test]
    fn region_load_reports_gas_and_a_share_of_the_stated_capacity_in_the_summary_and_metrics() {
        let mut f = Fixture::new();
        assert_eq!(f.rpc.region_summary().unwrap()["utilisation"], Value::Null);
        f.rpc = f.rpc.with_capacity(Some(4.0));
        // Block h: h transfers, h × TRANSFER_GAS gas, one second after the one before.
        let head = 10u64;
        for height in 1..=head {
            let receipts = (1..=height)
                .map(|i| paid(GWEI, TRANSFER_GAS, i * TRANSFER_GAS))
                .collect();
            f.push(Contents {
                txs: height as u32,
                receipts,
                ..Default::default()
            });
        }
        let summary = f.rpc.region_summary().unwrap();
        let all: u64 = (1..=head).sum();
        assert_eq!(summary["recentGas"], json!(all * TRANSFER_GAS));
        // Over the 9 s the blocks after the first span.
        let rate = (all - 1) as f64 / (head - 1) as f64;
        assert_eq!(summary["txPerSecond"], json!(rate));
        assert_eq!(summary["gasPerSecond"], json!(rate * TRANSFER_GAS as f64));
        assert_eq!(summary["capacityTxPerSecond"], json!(4.0));
        assert_eq!(summary["utilisation"], json!(rate / 4.0));
        // No RN behind the fixture: finality is not measured, and says so.
        assert_eq!(summary["finalityMs"], Value::Null);

        let mut m = crate::telemetry::Metrics::default();
        f.rpc.load_metrics(&mut m, &[("region", "1000")]).unwrap();
        let samples = crate::telemetry::parse_exposition(&m.render()).unwrap();
        let at = |name: &str| samples.get(&format!("{name}{{region=\"1000\"}}")).copied();
        assert_eq!(at("kaon_region_tx_per_second"), Some(rate));
        assert_eq!(at("kaon_region_utilisation"), Some(rate / 4.0));
        assert_eq!(at("kaon_region_pool_depth"), Some(0.0));
        assert_eq!(at("kaon_region_finality_p50_seconds"), None);
        // The fixture's blocks are stamped in 1970: the head is old, and says so.
        assert!(at("kaon_region_head_age_seconds") > Some(1e6));
        assert!(summary["headAgeMs"].as_u64() > Some(1_000_000_000));
        // A capacity that is no positive number is not stated.
        f.rpc = f.rpc.with_capacity(Some(f64::NAN));
        assert_eq!(f.rpc.region_summary().unwrap()["utilisation"], Value::Null);
    }

    #[test]
    fn an_open_adoption_is_shown_with_the_chunks_it_waits_for_in_the_summary_and_metrics() {
        use crate::chain::migration::tests::{adoption_of, state_of};
        use crate::chain::migration::Adopting;
        let f = Fixture::new();
        let (adoption, _, rest) = adoption_of(&state_of(3_000));
        let chain = adoption.record.chain;
        let open = Adopting::open(adoption, Height(3));
        f.rpc
            .regionchain
            .write()
            .unwrap()
            .adopting
            .insert(chain, open);
        let summary = f.rpc.region_summary().unwrap();
        assert_eq!(
            summary["adopting"],
            json!([{
                "chain": chain.0,
                "source": 1_001_000,
                "chunks": rest.len() + 1,
                "missing": rest.len(),
                "lastProgress": 3,
            }])
        );
        assert_eq!(summary["movedAway"], json!([]));
        let mut m = crate::telemetry::Metrics::default();
        f.rpc.load_metrics(&mut m, &[("region", "1000")]).unwrap();
        let samples = crate::telemetry::parse_exposition(&m.render()).unwrap();
        let at = |name: &str| samples.get(&format!("{name}{{region=\"1000\"}}")).copied();
        assert_eq!(at("kaon_region_adoptions_open"), Some(1.0));
        assert_eq!(
            at("kaon_region_adoption_chunks_missing"),
            Some(rest.len() as f64)
        );
    }
}
