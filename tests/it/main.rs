//! Kaon's one integration-test binary; modules by feature.

mod bls_vectors;
mod burst;
mod certificate;
mod cn_keys;
mod consensus_sim;
mod devnet;
mod e2e;
mod exec;
mod governance;
mod history;
mod mempool;
mod multiprocess;
mod net;
mod pipeline;
mod pop;
mod por;
mod por_gpu;
mod posc;
mod rn;
mod rpc;
mod selection;
mod servicechain;
mod storage;
mod telemetry;
mod tx;
mod types_codec;
