//! Persistence: the append-only block log and the RocksDB store for state, receipts and
//! indexes.

// A peer's bytes or a disk's contents must never take the node down from here: no `unwrap`,
// `expect` or `panic!` outside tests (an invariant that truly cannot fail says why, in an
// `allow` at its one site).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod blocklog;
pub mod changeset;
pub mod history;
pub mod space;
pub mod state;
pub mod store;
pub mod txjournal;
