//! Servicechain scale on one node: what 100 000 registered servicechains cost the regionchain.
//!
//! - registration: segment 0 blocks of 1 000 owner-signed registrations (ecrecover-bound),
//!   reported per registration;
//! - an idle container (no system transactions, no servicechain segments) with 100 000
//!   registered chains against the same container with only the genesis chain: the target is
//!   that idle chains add < 1 ms;
//! - a container with 1 000 active servicechain segments, and the checkpoint that follows it;
//! - resident memory of the registry, from `/proc/self/statm` before and after.

use alloy_primitives::Bytes;
use alloy_primitives::B256;
use criterion::{criterion_group, criterion_main, Criterion};
use kaon::chain::region::{Committed, RegionState};
use kaon::chain::servicechain::{Registration, ServicechainSpec};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::sha256;
use kaon::node::loadgen::dev_account;
use kaon::types::{BlockHash, ChainId, Height, Segment};
use std::sync::Arc;
use std::time::Instant;

const REGION: ChainId = ChainId(1000);
const CHAINS: u64 = 100_000;
const PER_BLOCK: u64 = 1_000;
const INTERVAL: u64 = 16;

fn empty_state() -> RegionState {
    let keys = (0..4u8)
        .map(|i| SecretKey::from_seed(&sha256(&[i]).0).unwrap().public_key())
        .collect();
    RegionState::new(REGION, Arc::new(CnSet::new(keys).unwrap()), INTERVAL)
}

/// Executes and applies one container; returns nothing, the state moves on.
fn process(state: &mut RegionState, height: u64, system: Vec<Bytes>, chains: &[ChainId]) {
    let execution = state.execute(
        Height(height),
        &Segment {
            chain_id: REGION,
            txs: system,
        },
    );
    state.apply(
        &execution,
        &Committed {
            height: Height(height),
            hash: BlockHash(B256::with_last_byte(height as u8)),
            mix: B256::with_last_byte(height as u8),
            servicechains: chains.to_vec(),
            next_cn_set: &[],
        },
    );
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Registers `CHAINS` chains through segment 0; returns the state and the next height.
fn register_all() -> (RegionState, u64) {
    let owner = dev_account(1);
    let txs: Vec<Bytes> = (1..=CHAINS)
        .map(|k| {
            let spec = ServicechainSpec {
                region: REGION,
                chain_id: ChainId(REGION.0 + k),
                owner: owner.address,
                alloc: Vec::new(),
            };
            Registration::sign(spec, &owner.secret)
                .unwrap()
                .to_system_tx()
        })
        .collect();
    let mut state = empty_state();
    let before = resident_bytes();
    let started = Instant::now();
    let mut height = 1;
    for block in txs.chunks(PER_BLOCK as usize) {
        process(&mut state, height, block.to_vec(), &[]);
        height += 1;
    }
    let elapsed = started.elapsed();
    drop(txs);
    assert_eq!(state.registry.len() as u64, CHAINS);
    eprintln!(
        "servicechains: registered {CHAINS} in {:.2} s ({:.1} µs each, {PER_BLOCK} per container); \
         registry resident ≈ {:.1} MiB",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / CHAINS as f64,
        resident_bytes().saturating_sub(before) as f64 / (1 << 20) as f64,
    );
    (state, height)
}

fn scale(c: &mut Criterion) {
    let (mut registered, mut height) = register_all();
    let mut genesis_only = empty_state().with_genesis_chains(&[ChainId(REGION.0 + 1)]);
    let mut g = c.benchmark_group("servicechains");
    g.sample_size(50);
    // Checkpoint heights are skipped so both sides do the same work.
    let next = |h: &mut u64| {
        *h += 1;
        if h.is_multiple_of(INTERVAL) {
            *h += 1;
        }
        *h
    };
    let mut small_height = height;
    g.bench_function("idle container, 1 registered chain", |b| {
        b.iter(|| process(&mut genesis_only, next(&mut small_height), Vec::new(), &[]))
    });
    g.bench_function("idle container, 100 000 registered chains", |b| {
        b.iter(|| process(&mut registered, next(&mut height), Vec::new(), &[]))
    });
    let active: Vec<ChainId> = (0..1000u64)
        .map(|k| ChainId(REGION.0 + 1 + k * 97))
        .collect();
    g.bench_function("container with 1 000 active segments", |b| {
        b.iter(|| process(&mut registered, next(&mut height), Vec::new(), &active))
    });
    g.bench_function("checkpoint of 1 000 chains", |b| {
        b.iter_batched(
            || {
                let mut state = registered.clone();
                let h = (height / INTERVAL + 1) * INTERVAL;
                process(&mut state, h - 1, Vec::new(), &active);
                (state, h)
            },
            |(mut state, h)| process(&mut state, h, Vec::new(), &[]),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, scale);
criterion_main!(benches);
