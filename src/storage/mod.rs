//! Persistence: the append-only block log and the RocksDB store for state and indexes.

pub mod blocklog;
pub mod store;
