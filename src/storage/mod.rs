//! Persistence: the append-only block log and the RocksDB store for state, receipts and
//! indexes.

pub mod blocklog;
pub mod history;
pub mod state;
pub mod store;
