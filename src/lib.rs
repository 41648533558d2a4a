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
//! Module map, bottom up by layer (a module uses only its own layer and those below; the list
//! in `docs/architecture.md` is checked by `tests/it/layers.rs`):
//! 1. [`types`] (wire and hashing formats, the one canonical encoding) and [`crypto`] (BLS,
//!    secp256k1 transactions, SHA-256 and Keccak);
//! 2. [`link`] (bounded counted channels) and [`telemetry`] (logging, metrics);
//! 3. [`consensus`] (selection, certificates, the BFT state machine and its WAL), [`exec`]
//!    (segment execution on the EVM), [`mempool`] (per-servicechain pools) and [`por`]
//!    (Proof of Replication shares, the CPU and GPU miners);
//! 4. [`storage`]: the io_uring block log and the RocksDB store (state, indexes, history);
//! 5. [`net`] (QUIC between CNs and RNs, block ranges, PoSC probes) and [`rpc`] (Ethereum
//!    JSON-RPC over HTTP and WebSocket);
//! 6. [`config`]: the operator's TOML;
//! 7. [`chain`]: the chain's rules (CN application, regionchain, PoP, PoSC, withdrawals);
//! 8. [`pipeline`]: a CN's stages and topology;
//! 9. [`rn`]: ranger nodes (sync, audit, evidence gossip);
//! 10. [`node`]: the processes (`kaon cn`, `kaon rn`, the devnet);
//! 11. [`cli`]: the `kaon` command.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod chain;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod crypto;
pub mod exec;
pub mod link;
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
