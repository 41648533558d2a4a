//! Node assembly above the pipeline: the CN's consensus application, the development network
//! and its load generator.

pub mod accounts;
pub mod app;
pub mod cn;
pub mod devnet;
pub mod genesis;
pub mod loadgen;
pub mod miner;
pub mod outbox;
pub mod pop;
pub mod posc;
pub mod prober;
pub mod process;
pub mod ranger;
pub mod recovery;
pub mod region;
pub mod rewards;
pub mod rpc;
pub mod segments;
pub mod servicechain;
pub mod withdrawal;
