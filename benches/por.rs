//! PoR share verification on one core (what a CN pays per submitted share) against the raw
//! cost of the three SHA-256 compressions a share needs, measured in the same run.

use alloy_primitives::Address;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kaon::por::cpu::share_hash_fast;
use kaon::por::{synthetic_segment, target_for_bits, verify_share, DEFAULT_SEGMENT_LEN};
use std::hint::black_box;

fn por(c: &mut Criterion) {
    let segment = synthetic_segment(DEFAULT_SEGMENT_LEN, 5);
    let miner = Address::repeat_byte(0x42);
    // Accept everything: verification cost does not depend on the outcome.
    let target = target_for_bits(0);
    let mut g = c.benchmark_group("por_share");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_share (digest API, the rule)", |b| {
        let mut counter = 0u64;
        b.iter(|| {
            counter += 1;
            verify_share(black_box(&segment), miner, counter, &target).unwrap()
        })
    });
    g.bench_function(
        "share_hash_fast (raw compressions, the miner's path)",
        |b| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                share_hash_fast(black_box(&segment), miner, counter)
            })
        },
    );
    g.finish();
}

criterion_group!(benches, por);
criterion_main!(benches);
