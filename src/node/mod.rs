//! Node assembly above the pipeline: the CN's consensus application, the development network
//! and its load generator.

pub mod app;
pub mod devnet;
pub mod loadgen;
