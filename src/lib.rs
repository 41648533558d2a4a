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
//! Module map, in pipeline order: [`types`] (wire and hashing formats), [`crypto`] (BLS,
//! secp256k1 transactions, SHA-256), [`consensus`] (randomness and selection), [`storage`]
//! (io_uring block log, RocksDB indexes), [`pipeline`] (links, stages, topology), and the
//! operator-facing [`config`] and [`telemetry`].
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
