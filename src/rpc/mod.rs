//! Ethereum JSON-RPC over HTTP and WebSocket: how wallets, DApps and tools (ethers, web3.py,
//! viem, Hardhat scripts) read a servicechain and submit transactions to it.
//!
//! ```text
//! client ─► HTTP POST /chain/<id> or WebSocket ─► limits (connections, body, batch, deadline)
//!        ─► JSON-RPC framing ─► method handler ─► RpcBackend (the node) ─► JSON in geth's encoding
//! node commits a block ─► RpcServer::notify_head / notify_logs ─► bounded broadcast ─► eth_subscribe
//! ```
//!
//! Every chain of the region is served by one listener: `POST /` answers for the configured
//! default chain and `POST /chain/<chain_id>` for chain `<chain_id>` (WebSocket upgrades on the
//! same paths). What the node must provide is the [`RpcBackend`] trait, in the RPC's own types
//! ([`RpcBlock`], [`RpcTransaction`], [`RpcReceipt`], [`RpcLog`], …), so this module depends on
//! no executor or storage type. The server is hyper with its own dispatcher (`docs/rpc.md` says
//! why); every input is bounded: connections, request bodies, batches, WebSocket messages,
//! subscriptions, queued notifications, `eth_getLogs` ranges and results, and each request has
//! a deadline.

mod backend;
mod error;
pub mod fee_oracle;
mod hub;
mod io;
mod json;
mod jsonrpc;
mod methods;
mod metrics;
mod params;
mod server;
mod types;
mod upstream;
mod ws;

pub use backend::{
    BackendError, CallRequest, LogFilter, LogQuery, RpcAccessList, RpcBackend, StateAt, SubmitError,
};
pub use error::RpcError;
pub use metrics::RpcMetrics;
pub use server::RpcServer;
pub use types::{
    BlockTransactions, RpcBlock, RpcFeeHistory, RpcLog, RpcReceipt, RpcTransaction, SyncProgress,
    TxLocation,
};
pub use upstream::Upstream;

use crate::types::ChainId;
use std::time::Duration;

/// Where devnet serves JSON-RPC (the port every Ethereum tool tries first).
pub const DEFAULT_RPC_ADDR: &str = "127.0.0.1:8545";

/// Limits and defaults of the RPC server. `Default` gives geth-like values. The limits are the
/// `[rpc]` section of the node's TOML configuration (durations in whole seconds); the chain
/// served at `/` and the client version are the node's to set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// The chain `POST /` serves.
    #[serde(skip)]
    pub default_chain: ChainId,
    /// `web3_clientVersion`.
    #[serde(skip)]
    pub client_version: String,
    /// Largest HTTP body or WebSocket message (geth: 5 MiB).
    pub max_body_bytes: usize,
    /// Largest response to one HTTP request or WebSocket message; the rest of a batch gets
    /// "response too large" errors (geth: 25 MiB).
    pub max_response_bytes: usize,
    /// Most calls in one batch (geth: 1 000; 100 is what providers allow).
    pub max_batch_len: usize,
    /// Open connections (HTTP and WebSocket); further ones get 503 and are closed.
    pub max_connections: usize,
    /// Subscriptions one WebSocket connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Messages queued towards one WebSocket client; a client that lets it fill is
    /// disconnected instead of growing memory.
    pub ws_queue_len: usize,
    /// A WebSocket client that sends nothing for this long — no request, no pong to the
    /// server's pings (sent every third of it) — is disconnected.
    #[serde(with = "whole_seconds")]
    pub ws_idle_timeout: Duration,
    /// Events buffered per chain for subscribers; a subscriber further behind is disconnected.
    pub notify_capacity: usize,
    /// Time to answer one HTTP request or WebSocket message, batches included.
    #[serde(with = "whole_seconds")]
    pub request_deadline: Duration,
    /// Time for a client to send a request head and body; also the keep-alive idle limit.
    #[serde(with = "whole_seconds")]
    pub read_deadline: Duration,
    /// Time a write to a client may stay blocked (a client that does not read is cut off).
    #[serde(with = "whole_seconds")]
    pub write_deadline: Duration,
    /// Calls that execute, scan, decode blocks or recover senders (blocks, transactions,
    /// receipts, logs, `eth_call`, `eth_estimateGas`, fees, `eth_sendRawTransaction`,
    /// `kaon_*`) run on blocking threads, at most this many at once; the others wait (within
    /// their deadline).
    pub max_blocking_calls: usize,
    /// Gas given to `eth_call`/`eth_estimateGas` when the request names none or more (geth: 50 M).
    pub gas_cap: u64,
    /// Widest `eth_getLogs` block range.
    pub max_log_block_range: u64,
    /// Most logs one `eth_getLogs` returns.
    pub max_logs: usize,
    /// Installed polling filters (`eth_newFilter`, `eth_newBlockFilter`,
    /// `eth_newPendingTransactionFilter`), all clients together.
    pub max_filters: usize,
    /// Hashes of accepted transactions an `eth_newPendingTransactionFilter` filter can have
    /// waiting for its next poll; beyond that the oldest are dropped.
    pub max_pending_filter_hashes: usize,
    /// A filter not polled for this long is removed (geth: 5 minutes).
    #[serde(with = "whole_seconds")]
    pub filter_timeout: Duration,
    /// Most blocks one `eth_feeHistory` covers (geth: 1 024).
    pub max_fee_history_blocks: u64,
    /// `Access-Control-Allow-Origin` sent to browsers; `None` or `""` sends no CORS headers.
    pub cors_allow_origin: Option<String>,
    /// Committed transactions per second the served region was measured to sustain (the
    /// `kaon devnet` figure for the same machines, `docs/benchmarks.md`): `kaon_regions` and
    /// the `kaon_region_*` metrics report the load as a share of it. Unset: not reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region_capacity_tps: Option<f64>,
    /// Endpoints serving chains the backend does not hold (regions this node does not follow),
    /// which requests for those chains are forwarded to ([`Upstream`]); the node sets them
    /// from its `[rn] remote` regions.
    #[serde(skip)]
    pub upstreams: Vec<Upstream>,
}

impl RpcConfig {
    /// Why this configuration cannot serve, if it cannot (a zero limit refuses everything).
    pub fn check(&self) -> Result<(), String> {
        let zero = [
            ("max_body_bytes", self.max_body_bytes == 0),
            ("max_response_bytes", self.max_response_bytes == 0),
            ("max_batch_len", self.max_batch_len == 0),
            ("max_connections", self.max_connections == 0),
            ("ws_queue_len", self.ws_queue_len == 0),
            ("notify_capacity", self.notify_capacity == 0),
            ("max_blocking_calls", self.max_blocking_calls == 0),
            ("request_deadline", self.request_deadline.is_zero()),
            ("read_deadline", self.read_deadline.is_zero()),
            ("write_deadline", self.write_deadline.is_zero()),
            ("ws_idle_timeout", self.ws_idle_timeout.is_zero()),
            ("max_log_block_range", self.max_log_block_range == 0),
            ("max_fee_history_blocks", self.max_fee_history_blocks == 0),
            (
                "max_pending_filter_hashes",
                self.max_pending_filter_hashes == 0,
            ),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(format!("rpc.{name} must be at least 1"));
        }
        if let Some(e) = self.upstreams.iter().find_map(|u| u.check().err()) {
            return Err(e);
        }
        match self.region_capacity_tps {
            Some(c) if !(c.is_finite() && c > 0.0) => Err(format!(
                "rpc.region_capacity_tps must be a positive number of transactions per second, not {c}"
            )),
            _ => Ok(()),
        }
    }
}

/// Durations written as whole seconds in TOML.
mod whole_seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            default_chain: ChainId(1),
            client_version: format!(
                "kaon/v{}/{}-{}/rust",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            ),
            max_body_bytes: 5 << 20,
            max_response_bytes: 25 << 20,
            max_batch_len: 100,
            max_connections: 1024,
            max_subscriptions_per_connection: 64,
            ws_queue_len: 256,
            ws_idle_timeout: Duration::from_secs(90),
            notify_capacity: 256,
            request_deadline: Duration::from_secs(30),
            read_deadline: Duration::from_secs(30),
            write_deadline: Duration::from_secs(10),
            max_blocking_calls: 64,
            gas_cap: 50_000_000,
            max_log_block_range: 10_000,
            max_logs: 10_000,
            max_filters: 1024,
            max_pending_filter_hashes: 4096,
            filter_timeout: Duration::from_secs(300),
            max_fee_history_blocks: 1024,
            cors_allow_origin: Some("*".to_string()),
            region_capacity_tps: None,
            upstreams: Vec::new(),
        }
    }
}
