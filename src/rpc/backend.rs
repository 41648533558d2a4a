//! What the node provides to the RPC server: [`RpcBackend`], one object for every chain it
//! serves, and the query types the server hands it after parsing and bounding the request.
//!
//! Contract for implementors: methods are synchronous. Reads (`head`, blocks, transactions,
//! receipts, account state, fees) run inline on the server's async threads and must be quick
//! (memory or point lookups); the expensive ones (`call`, `estimate_gas`,
//! `create_access_list`, `logs`, `send_raw_transaction`, `fee_history`, the `kaon_*` ones) run
//! on a bounded pool of blocking threads.

use super::types::{RpcBlock, RpcFeeHistory, RpcLog, RpcReceipt, RpcTransaction, SyncProgress};
use crate::crypto::tx::SignedTransaction;
use crate::types::ChainId;
use alloy_primitives::{Address, Bytes, B256, U256};

/// Which state a read is against, after the server resolved the block tag against the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAt {
    /// The newest committed block (`latest`, `safe`, `finalized`, or the head's number:
    /// finality is instant).
    Latest,
    /// Committed state plus what the pool holds: for nonces, the sender's next nonce after its
    /// pooled transactions; for other reads, `Latest` is a fine answer.
    Pending,
    /// An older block. A backend answers [`BackendError::HistoryPruned`] for a block older
    /// than the history it keeps ([`BackendError::HistoricalState`] if it keeps none).
    Historical(u64),
}

/// An `eth_call` / `eth_estimateGas` request. `gas` is already capped by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRequest {
    pub from: Option<Address>,
    /// `None`: contract creation with `input` as init code.
    pub to: Option<Address>,
    pub gas: u64,
    pub gas_price: Option<u128>,
    pub max_fee_per_gas: Option<u128>,
    pub max_priority_fee_per_gas: Option<u128>,
    pub value: U256,
    pub input: Bytes,
    pub nonce: Option<u64>,
    pub access_list: crate::crypto::tx::AccessList,
}

/// `eth_createAccessList`'s answer, as geth gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcAccessList {
    /// What the call touches, without the sender, the recipient's own entry unless it has
    /// slots, and the precompiles.
    pub access_list: crate::crypto::tx::AccessList,
    /// Gas the call uses with that list.
    pub gas_used: u64,
    /// Why the call failed with it (`execution reverted…`, a halt), if it did.
    pub error: Option<String>,
}

/// Which logs match: the exec layer's filter, used by `eth_getLogs`, filters and `logs`
/// subscriptions alike.
pub use crate::exec::LogFilter;

/// An `eth_getLogs` query, with the block range resolved and checked against the server's cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub from_block: u64,
    /// Inclusive; never above the head.
    pub to_block: u64,
    pub filter: LogFilter,
    /// Return at most this many logs, in chain order. The server asks for one more than it
    /// serves, so returning exactly `limit` tells it the answer was cut.
    pub limit: usize,
}

/// A failed read or execution, mapped to JSON-RPC codes by the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// State of an older block was asked and this node keeps only the latest (-32000).
    #[error("historical state not available")]
    HistoricalState,
    /// State of a block older than the retained history was asked (-32000).
    #[error("historical state not available: block {requested} is older than the oldest retained block {oldest} (history is bounded by --history-blocks)")]
    HistoryPruned { requested: u64, oldest: u64 },
    /// The block a read names does not exist (-32000, geth's "header not found").
    #[error("header not found")]
    UnknownBlock,
    /// The call reverted; `output` is the revert data (error code 3, data = output).
    #[error("execution reverted")]
    Reverted { output: Bytes },
    /// The call could not execute or halted, e.g. "out of gas", "insufficient funds for gas *
    /// price + value", "gas required exceeds allowance (30000000)" (-32000, message as given).
    #[error("{0}")]
    Execution(String),
    /// The request is well-formed JSON but makes no sense to the backend (-32602).
    #[error("{0}")]
    InvalidParams(String),
    /// The answer would exceed a backend limit (-32005).
    #[error("{0}")]
    LimitExceeded(String),
    /// Storage failure or a bug (-32603).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a raw transaction was refused. Messages are geth's, which the tools match on (ethers
/// maps "nonce too low", "insufficient funds", "replacement transaction underpriced").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("already known")]
    AlreadyKnown,
    #[error("nonce too low: next nonce {next}, tx nonce {got}")]
    NonceTooLow { next: u64, got: u64 },
    #[error("insufficient funds for gas * price + value: have {have} want {want}")]
    InsufficientFunds { have: U256, want: U256 },
    #[error("transaction underpriced: tip needed {needed}, tip permitted {got}")]
    Underpriced { needed: u128, got: u128 },
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    #[error("intrinsic gas too low: gas {got}, minimum needed {needed}")]
    IntrinsicGas { got: u64, needed: u64 },
    #[error("exceeds block gas limit")]
    GasLimit,
    #[error("txpool is full")]
    PoolFull,
    /// Any other refusal, message as given.
    #[error("{0}")]
    Rejected(String),
    /// The node cannot take transactions now (no route to a CN, shutting down).
    #[error("{0}")]
    Unavailable(String),
}

/// The node, as the RPC server sees it. One object serves every chain; each method gets the
/// chain id the request was routed to (already checked with [`Self::has_chain`]); the
/// region-wide `kaon_*` methods answer for the region that holds that chain.
pub trait RpcBackend: Send + Sync + 'static {
    /// Whether this node serves `chain` (the regionchain or a servicechain).
    fn has_chain(&self, chain: ChainId) -> bool;

    /// Number of the newest committed block of `chain`.
    fn head(&self, chain: ChainId) -> Result<u64, BackendError>;

    /// Block `number` of `chain`; `full` asks for transaction objects instead of hashes.
    fn block_by_number(
        &self,
        chain: ChainId,
        number: u64,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError>;

    /// The block of `chain` with this hash.
    fn block_by_hash(
        &self,
        chain: ChainId,
        hash: B256,
        full: bool,
    ) -> Result<Option<RpcBlock>, BackendError>;

    /// A committed transaction (with its location) or a pooled one (location `None`).
    fn transaction(
        &self,
        chain: ChainId,
        hash: B256,
    ) -> Result<Option<RpcTransaction>, BackendError>;

    /// The receipt of a committed transaction.
    fn receipt(&self, chain: ChainId, hash: B256) -> Result<Option<RpcReceipt>, BackendError>;

    /// The receipts of every transaction of `chain` in block `number`, in order (`None`: no
    /// such block). The default asks per transaction; a backend should read the block once.
    fn block_receipts(
        &self,
        chain: ChainId,
        number: u64,
    ) -> Result<Option<Vec<RpcReceipt>>, BackendError> {
        let Some(block) = self.block_by_number(chain, number, false)? else {
            return Ok(None);
        };
        let hashes = match block.transactions {
            super::BlockTransactions::Hashes(hashes) => hashes,
            super::BlockTransactions::Full(txs) => txs.iter().map(|t| t.tx.hash()).collect(),
        };
        hashes
            .into_iter()
            .map(|hash| {
                self.receipt(chain, hash)?.ok_or_else(|| {
                    BackendError::Internal(format!("no receipt for {hash} in block {number}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn balance(&self, chain: ChainId, address: Address, at: StateAt) -> Result<U256, BackendError>;

    /// The account nonce; at [`StateAt::Pending`], the next nonce counting pooled transactions.
    fn nonce(&self, chain: ChainId, address: Address, at: StateAt) -> Result<u64, BackendError>;

    fn code(&self, chain: ChainId, address: Address, at: StateAt) -> Result<Bytes, BackendError>;

    fn storage(
        &self,
        chain: ChainId,
        address: Address,
        slot: B256,
        at: StateAt,
    ) -> Result<B256, BackendError>;

    /// Executes `request` without committing; returns the output.
    fn call(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<Bytes, BackendError>;

    /// Gas `request` needs to succeed (at most `request.gas`).
    fn estimate_gas(
        &self,
        chain: ChainId,
        request: &CallRequest,
        at: StateAt,
    ) -> Result<u64, BackendError>;

    /// The EIP-2930 access list `request` needs and its gas with it. Nodes without an EVM
    /// refuse.
    fn create_access_list(
        &self,
        _chain: ChainId,
        _request: &CallRequest,
        _at: StateAt,
    ) -> Result<RpcAccessList, BackendError> {
        Err(BackendError::Execution(
            "this node does not create access lists".into(),
        ))
    }

    /// Submits a decoded transaction whose chain id is `chain` (the server checked both).
    /// Returns its hash once the node accepted it into its pool (or forwarded it to a CN).
    fn send_raw_transaction(
        &self,
        chain: ChainId,
        tx: SignedTransaction,
    ) -> Result<B256, SubmitError>;

    /// Logs of `chain` in the query's block range that pass its filter, at most `query.limit`.
    fn logs(&self, chain: ChainId, query: &LogQuery) -> Result<Vec<RpcLog>, BackendError>;

    /// Suggested legacy gas price (base fee + suggested tip).
    fn gas_price(&self, chain: ChainId) -> Result<u128, BackendError>;

    /// Suggested EIP-1559 tip.
    fn max_priority_fee(&self, chain: ChainId) -> Result<u128, BackendError>;

    /// Fee history of `block_count` blocks ending at `newest` (both already clamped to the
    /// chain: `block_count >= 1`, `block_count <= newest + 1`); `percentiles` are checked to
    /// be non-decreasing within `[0, 100]`; empty means no rewards.
    fn fee_history(
        &self,
        chain: ChainId,
        block_count: u64,
        newest: u64,
        percentiles: &[f64],
    ) -> Result<RpcFeeHistory, BackendError>;

    /// Catch-up progress; `None` when in sync.
    fn syncing(&self, _chain: ChainId) -> Result<Option<SyncProgress>, BackendError> {
        Ok(None)
    }

    /// Connected peers, for `net_peerCount`.
    fn peer_count(&self) -> u64 {
        0
    }

    /// `kaon_servicechains`: the registered servicechains of `chain`'s region.
    fn servicechains(&self, chain: ChainId) -> Result<serde_json::Value, BackendError>;

    /// `kaon_regions`: every region this node serves — its id, servicechains, head and
    /// utilisation.
    fn regions(&self) -> Result<serde_json::Value, BackendError> {
        Err(BackendError::Execution(
            "this node does not describe its regions".into(),
        ))
    }

    /// `kaon_getAdoption`: for a servicechain its region moved away, the move's record, the
    /// adoption system transaction that starts it in the target region and how many chunks
    /// its state has; with `chunk` = i, the system transaction carrying chunk i (1 or more);
    /// `None` if `chain` was not moved.
    fn adoption(
        &self,
        _chain: ChainId,
        _chunk: Option<u64>,
    ) -> Result<Option<serde_json::Value>, BackendError> {
        Err(BackendError::Execution(
            "this node does not move servicechains".into(),
        ))
    }

    /// `kaon_getCheckpointProof`: proof that block `block_hash` of `chain` is anchored in a
    /// regionchain checkpoint; `None` if it is not (yet).
    fn checkpoint_proof(
        &self,
        chain: ChainId,
        block_hash: B256,
    ) -> Result<Option<serde_json::Value>, BackendError>;

    /// `kaon_getEvidence`: equivocation evidence recorded at or after `from_height`, at most
    /// `limit` items.
    fn evidence(
        &self,
        chain: ChainId,
        from_height: u64,
        limit: usize,
    ) -> Result<serde_json::Value, BackendError>;

    /// `kaon_popState`: proof-of-participation (PoR shares, PoSC penalties, rewards) of one
    /// RN, or of all RNs when `rn` is `None`.
    fn pop_state(
        &self,
        chain: ChainId,
        rn: Option<Address>,
    ) -> Result<serde_json::Value, BackendError>;

    /// `kaon_getWork`: what a PoR miner needs now — seed height, difficulty bits, target and
    /// the segment `C(h)` (hex).
    fn por_work(&self, _chain: ChainId) -> Result<serde_json::Value, BackendError> {
        Err(BackendError::Execution(
            "this node does not serve PoR work".into(),
        ))
    }

    /// `kaon_submitShare`: checks a share `(height, miner, counter)` and forwards it to the
    /// CNs as a regionchain system transaction.
    fn submit_share(
        &self,
        _chain: ChainId,
        _height: u64,
        _miner: Address,
        _counter: u64,
    ) -> Result<serde_json::Value, BackendError> {
        Err(BackendError::Execution(
            "this node does not take PoR shares".into(),
        ))
    }

    /// `kaon_sendSystemTransaction`: checks a regionchain system transaction (RN registration,
    /// reward withdrawal, servicechain registration) against the current state and forwards it
    /// to the CNs; its hash.
    fn send_system_transaction(
        &self,
        _chain: ChainId,
        _raw: alloy_primitives::Bytes,
    ) -> Result<serde_json::Value, BackendError> {
        Err(BackendError::Execution(
            "this node does not take system transactions".into(),
        ))
    }
}
