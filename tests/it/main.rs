//! Kaon's one integration-test binary; modules by feature.

mod bench;
mod bls_vectors;
mod burst;
mod certificate;
mod chaos;
mod cn_keys;
mod consensus_sim;
mod devnet;
mod e2e;
mod exec;
mod governance;
mod history;
mod layers;
mod mempool;
mod multiprocess;
mod net;
mod pipeline;
mod pop;
mod por;
mod por_gpu;
mod posc;
mod regions;
mod rn;
mod rpc;
mod selection;
mod servicechain;
mod storage;
mod telemetry;
mod tx;
mod types_codec;

/// Tests that run a region of separate `kaon` processes take turns: two such regions at once
/// on CI's two cores starve each other's CNs past the tests' progress bounds.
pub fn processes_turn() -> std::sync::MutexGuard<'static, ()> {
    static REGIONS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    REGIONS.lock().unwrap_or_else(|e| e.into_inner())
}
