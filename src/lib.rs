//! Kaon: a performance-first node for a two-layer blockchain.
//!
//! Consensus nodes (CNs) agree on consensus containers with a BFT protocol whose proposer and
//! committee are chosen by public, verifiable ranks; ranger nodes (RNs) replicate and audit
//! them. The node is a pipeline of stages joined by bounded channels (see [`pipeline`]):
//!
//! ```text
//! ingress ─► tx sigverify ─► mempool ─► consensus ─► segment execution ─► block log + RocksDB
//! ```
//!
//! Module map, from the bottom up (a module uses only those listed before it; the table in
//! `docs/architecture.md` says what each one owns):
//! - [`types`]: wire and hashing formats, the one canonical encoding;
//! - [`crypto`]: BLS, secp256k1 transactions, SHA-256 and Keccak;
//! - [`config`] and [`telemetry`]: the operator's TOML, logging and metrics;
//! - [`storage`]: the io_uring block log and the RocksDB store (state, indexes, history);
//! - [`consensus`]: randomness, selection, certificates, the BFT state machine and its WAL;
//! - [`exec`]: segment execution on the EVM, receipts, `eth_call`;
//! - [`mempool`]: per-servicechain transaction pools;
//! - [`por`]: Proof of Replication shares, the CPU and GPU miners;
//! - [`net`]: QUIC between CNs and RNs, block ranges, PoSC probes;
//! - [`pipeline`]: links, stages and the CN's topology;
//! - [`rn`]: ranger nodes (sync, audit, evidence gossip);
//! - [`rpc`]: Ethereum JSON-RPC over HTTP and WebSocket;
//! - [`node`]: the chain's rules (CN application, regionchain, PoP, PoSC, withdrawals) and
//!   the processes (`kaon cn`, `kaon rn`, the devnet);
//! - [`cli`]: the `kaon` command, the top.
//!
//! Known crossings of that order (issue: the structural split) are listed in
//! `docs/architecture.md` under "Known limits".
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod config;
pub mod consensus;
pub mod crypto;
pub mod exec;
pub mod mempool;
pub mod net;
pub mod node;
pub mod pipeline;
pub mod por;
pub mod rn;
pub mod rpc;
pub mod storage;
pub mod telemetry;
pub mod types;
