//! The method table and dispatch: each method's name, how many parameters it takes, whether
//! it runs inline or on the bounded blocking pool, and its handler. Handlers parse their
//! parameters, ask the backend, and return the JSON result.

mod chain;
mod fees;
mod filters;
mod state;

pub(crate) use filters::Filters;

use super::error::RpcError;
use super::jsonrpc::to_raw;
use super::params::Params;
use super::server::Shared;
use crate::types::ChainId;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;

/// Where a method runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    /// Answered on the async thread (memory or point reads).
    Inline,
    /// Executes, scans, decodes blocks or recovers senders: runs on the bounded blocking pool,
    /// so one large request cannot hold an async worker (every HTTP and WebSocket client
    /// shares them).
    Blocking,
}

macro_rules! methods {
    ($($variant:ident = $name:literal, $cost:ident, $max:literal;)*) => {
        /// Every method the server knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Method { $($variant),* }

        impl Method {
            pub(crate) const ALL: &'static [Method] = &[$(Method::$variant),*];

            pub(crate) fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)*
                    _ => None,
                }
            }

            pub(crate) const fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            const fn cost(self) -> Cost {
                match self { $(Self::$variant => Cost::$cost),* }
            }

            /// Most positional parameters the method accepts.
            const fn max_params(self) -> usize {
                match self { $(Self::$variant => $max),* }
            }
        }
    };
}

methods! {
    Web3ClientVersion = "web3_clientVersion", Inline, 0;
    Web3Sha3 = "web3_sha3", Inline, 1;
    NetVersion = "net_version", Inline, 0;
    NetListening = "net_listening", Inline, 0;
    NetPeerCount = "net_peerCount", Inline, 0;
    EthChainId = "eth_chainId", Inline, 0;
    EthBlockNumber = "eth_blockNumber", Inline, 0;
    EthSyncing = "eth_syncing", Inline, 0;
    EthAccounts = "eth_accounts", Inline, 0;
    EthGetBlockByNumber = "eth_getBlockByNumber", Blocking, 2;
    EthGetBlockByHash = "eth_getBlockByHash", Blocking, 2;
    EthGetBlockTransactionCountByNumber = "eth_getBlockTransactionCountByNumber", Blocking, 1;
    EthGetBlockTransactionCountByHash = "eth_getBlockTransactionCountByHash", Blocking, 1;
    EthGetTransactionByHash = "eth_getTransactionByHash", Blocking, 1;
    EthGetTransactionByBlockNumberAndIndex = "eth_getTransactionByBlockNumberAndIndex", Blocking, 2;
    EthGetTransactionByBlockHashAndIndex = "eth_getTransactionByBlockHashAndIndex", Blocking, 2;
    EthGetTransactionReceipt = "eth_getTransactionReceipt", Blocking, 1;
    EthGetBlockReceipts = "eth_getBlockReceipts", Blocking, 1;
    EthGetUncleCountByBlockNumber = "eth_getUncleCountByBlockNumber", Blocking, 1;
    EthGetUncleCountByBlockHash = "eth_getUncleCountByBlockHash", Blocking, 1;
    EthGetUncleByBlockNumberAndIndex = "eth_getUncleByBlockNumberAndIndex", Inline, 2;
    EthGetUncleByBlockHashAndIndex = "eth_getUncleByBlockHashAndIndex", Inline, 2;
    EthGetBalance = "eth_getBalance", Inline, 2;
    EthGetTransactionCount = "eth_getTransactionCount", Inline, 2;
    EthGetCode = "eth_getCode", Inline, 2;
    EthGetStorageAt = "eth_getStorageAt", Inline, 3;
    EthCall = "eth_call", Blocking, 3;
    EthEstimateGas = "eth_estimateGas", Blocking, 3;
    EthCreateAccessList = "eth_createAccessList", Blocking, 3;
    EthGasPrice = "eth_gasPrice", Blocking, 0;
    EthMaxPriorityFeePerGas = "eth_maxPriorityFeePerGas", Blocking, 0;
    EthFeeHistory = "eth_feeHistory", Blocking, 3;
    EthSendRawTransaction = "eth_sendRawTransaction", Blocking, 1;
    EthGetLogs = "eth_getLogs", Blocking, 1;
    EthNewFilter = "eth_newFilter", Inline, 1;
    EthNewBlockFilter = "eth_newBlockFilter", Inline, 0;
    EthNewPendingTransactionFilter = "eth_newPendingTransactionFilter", Inline, 1;
    EthGetFilterChanges = "eth_getFilterChanges", Blocking, 1;
    EthGetFilterLogs = "eth_getFilterLogs", Blocking, 1;
    EthUninstallFilter = "eth_uninstallFilter", Inline, 1;
    EthSubscribe = "eth_subscribe", Inline, 2;
    EthUnsubscribe = "eth_unsubscribe", Inline, 1;
    KaonServicechains = "kaon_servicechains", Blocking, 0;
    KaonRegions = "kaon_regions", Blocking, 0;
    KaonGetCheckpointProof = "kaon_getCheckpointProof", Blocking, 1;
    KaonGetAdoption = "kaon_getAdoption", Blocking, 1;
    KaonGetEvidence = "kaon_getEvidence", Blocking, 2;
    KaonPopState = "kaon_popState", Blocking, 1;
    KaonGetWork = "kaon_getWork", Blocking, 0;
    KaonSubmitShare = "kaon_submitShare", Blocking, 3;
    KaonSendSystemTransaction = "kaon_sendSystemTransaction", Blocking, 1;
}

/// Most evidence items one `kaon_getEvidence` returns.
const MAX_EVIDENCE_ITEMS: usize = 100;

/// What a handler sees: the server's shared state and the chain the request was routed to.
pub(crate) struct Cx<'a> {
    pub shared: &'a Shared,
    pub chain: ChainId,
}

pub(crate) type MethodResult = Result<Box<RawValue>, RpcError>;

/// Runs `method` with `params` for `chain`, on the blocking pool if it is expensive, and
/// records it in the metrics. Subscriptions are the WebSocket session's business; over HTTP
/// they are refused here.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    chain: ChainId,
    method: Method,
    params: Option<&RawValue>,
) -> MethodResult {
    let started = Instant::now();
    let span = tracing::debug_span!("rpc", method = method.name(), chain = chain.get());
    let result = match method.cost() {
        Cost::Inline => span.in_scope(|| run(&Cx { shared, chain }, method, params)),
        Cost::Blocking => run_blocking(shared, chain, method, params, span.clone()).await,
    };
    if let Err(e) = &result {
        span.in_scope(|| tracing::debug!(code = e.code, message = %e.message, "call failed"));
    }
    shared
        .metrics
        .record(method, started.elapsed(), result.is_ok());
    result
}

async fn run_blocking(
    shared: &Arc<Shared>,
    chain: ChainId,
    method: Method,
    params: Option<&RawValue>,
    span: tracing::Span,
) -> MethodResult {
    let permit = Arc::clone(&shared.blocking)
        .acquire_owned()
        .await
        .map_err(|_| RpcError::internal("server is shutting down"))?;
    let params = params.map(RawValue::to_owned);
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _entered = span.enter();
        run(
            &Cx {
                shared: &shared,
                chain,
            },
            method,
            params.as_deref(),
        )
    })
    .await
    .map_err(|e| RpcError::internal(format!("handler failed: {e}")))?
}

fn run(cx: &Cx<'_>, method: Method, params: Option<&RawValue>) -> MethodResult {
    let p = Params::parse(params, method.max_params())?;
    use Method::*;
    match method {
        Web3ClientVersion => to_raw(&cx.shared.config.client_version),
        Web3Sha3 => {
            let data: alloy_primitives::Bytes = p.required(0)?;
            to_raw(&super::json::Data(
                crate::crypto::hash::keccak256(&data).as_slice(),
            ))
        }
        NetVersion => to_raw(&cx.chain.get().to_string()),
        NetListening => to_raw(&true),
        NetPeerCount => to_raw(&super::json::Quantity(
            cx.shared.backend.peer_count().into(),
        )),
        EthChainId => to_raw(&super::json::Quantity(cx.chain.get().into())),
        EthAccounts => to_raw(&[(); 0]),
        EthSubscribe | EthUnsubscribe => Err(RpcError::new(
            super::error::METHOD_NOT_FOUND,
            "notifications not supported",
        )),
        EthBlockNumber => chain::block_number(cx),
        EthSyncing => chain::syncing(cx),
        EthGetBlockByNumber => chain::block_by_number(cx, &p),
        EthGetBlockByHash => chain::block_by_hash(cx, &p),
        EthGetBlockTransactionCountByNumber => chain::tx_count_by_number(cx, &p),
        EthGetBlockTransactionCountByHash => chain::tx_count_by_hash(cx, &p),
        EthGetTransactionByHash => chain::transaction(cx, &p),
        EthGetTransactionByBlockNumberAndIndex => chain::transaction_by_number_and_index(cx, &p),
        EthGetTransactionByBlockHashAndIndex => chain::transaction_by_hash_and_index(cx, &p),
        EthGetTransactionReceipt => chain::receipt(cx, &p),
        EthGetBlockReceipts => chain::block_receipts(cx, &p),
        EthGetUncleCountByBlockNumber => chain::uncle_count_by_number(cx, &p),
        EthGetUncleCountByBlockHash => chain::uncle_count_by_hash(cx, &p),
        EthGetUncleByBlockNumberAndIndex | EthGetUncleByBlockHashAndIndex => chain::uncle(&p),
        EthGetLogs => chain::logs(cx, &p),
        EthNewFilter => filters::new_filter(cx, &p),
        EthNewBlockFilter => filters::new_block_filter(cx),
        EthNewPendingTransactionFilter => filters::new_pending_transaction_filter(cx, &p),
        EthGetFilterChanges => filters::changes(cx, &p),
        EthGetFilterLogs => filters::logs(cx, &p),
        EthUninstallFilter => filters::uninstall(cx, &p),
        EthGetBalance => state::balance(cx, &p),
        EthGetTransactionCount => state::nonce(cx, &p),
        EthGetCode => state::code(cx, &p),
        EthGetStorageAt => state::storage(cx, &p),
        EthCall => state::call(cx, &p),
        EthEstimateGas => state::estimate_gas(cx, &p),
        EthCreateAccessList => state::create_access_list(cx, &p),
        EthSendRawTransaction => state::send_raw_transaction(cx, &p),
        EthGasPrice => fees::gas_price(cx),
        EthMaxPriorityFeePerGas => fees::max_priority_fee(cx),
        EthFeeHistory => fees::fee_history(cx, &p),
        KaonServicechains => to_raw(&cx.shared.backend.servicechains(cx.chain)?),
        KaonRegions => to_raw(&cx.shared.backend.regions()?),
        KaonGetAdoption => {
            let chunk = p.optional::<super::params::CountArg>(0)?.map(|c| c.0);
            to_raw(&cx.shared.backend.adoption(cx.chain, chunk)?)
        }
        KaonGetCheckpointProof => {
            let hash = p.required(0)?;
            to_raw(&cx.shared.backend.checkpoint_proof(cx.chain, hash)?)
        }
        KaonGetEvidence => {
            let from = p.optional::<super::params::CountArg>(0)?.map_or(0, |c| c.0);
            let limit = p
                .optional::<super::params::CountArg>(1)?
                .map_or(MAX_EVIDENCE_ITEMS, |c| {
                    (c.0 as usize).min(MAX_EVIDENCE_ITEMS)
                });
            to_raw(&cx.shared.backend.evidence(cx.chain, from, limit)?)
        }
        KaonPopState => to_raw(&cx.shared.backend.pop_state(cx.chain, p.optional(0)?)?),
        KaonGetWork => to_raw(&cx.shared.backend.por_work(cx.chain)?),
        KaonSubmitShare => {
            let height = p.required::<super::params::CountArg>(0)?.0;
            let miner = p.required(1)?;
            let counter = p.required::<super::params::CountArg>(2)?.0;
            to_raw(
                &cx.shared
                    .backend
                    .submit_share(cx.chain, height, miner, counter)?,
            )
        }
        KaonSendSystemTransaction => {
            let raw: alloy_primitives::Bytes = p.required(0)?;
            to_raw(&cx.shared.backend.send_system_transaction(cx.chain, raw)?)
        }
    }
}
