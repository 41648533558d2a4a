//! PoR share verification on one core (what a CN pays per submitted share) against the raw
//! cost of the three SHA-256 compressions a share needs, measured in the same run; and what
//! PoSC costs every node per container: the probe selection over 10 000 registered RNs, and
//! the check of one penalty signed by 67 of 100 CNs against one plain BLS verification.

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

fn posc(c: &mut Criterion) {
    use kaon::chain::posc::{PoscParams, PoscState, ProbeAttestation, RnEntry};
    use kaon::consensus::selection::CnSet;
    use kaon::crypto::bls::SecretKey;
    use kaon::crypto::hash::sha256;
    use kaon::types::{ChainId, CnIndex, Height};
    let region = ChainId(1000);
    let mut state = PoscState::new(PoscParams::default());
    let node_key = SecretKey::from_seed(&[7u8; 32])
        .unwrap()
        .public_key()
        .to_bytes();
    for i in 0..10_000u32 {
        state.rns.insert(
            Address::from_slice(&sha256(&i.to_be_bytes())[..20]),
            RnEntry {
                endpoint: "127.0.0.1:1".parse().unwrap(),
                node_key,
                sequence: 1,
                registered_at: Height(0),
            },
        );
    }
    let mut g = c.benchmark_group("posc");
    g.bench_function("select 1 of 10 000 registered RNs", |b| {
        let mut round = 100u64;
        b.iter(|| {
            round += 1;
            state.select(sha256(&round.to_be_bytes()), Height(round))
        })
    });
    let keys: Vec<SecretKey> = (0..100u32)
        .map(|i| SecretKey::from_seed(&sha256(&i.to_be_bytes()).0).unwrap())
        .collect();
    let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
    // Give the state a selection at round 16 to penalize.
    let mix = sha256(b"posc-bench");
    state.apply(Height(16), mix, &[], &[]);
    let rn = state.selected(Height(16))[0];
    let attestations: Vec<ProbeAttestation> = (0..67)
        .map(|i| ProbeAttestation::sign(region, Height(16), rn, CnIndex(i), &keys[i as usize]))
        .collect();
    let penalty = state.assemble(&attestations, Height(17), region, &set);
    assert_eq!(penalty.len(), 1, "67 of 100 is a quorum");
    g.bench_function("check one penalty (67 of 100 CNs, aggregate)", |b| {
        b.iter(|| {
            state
                .check_penalty(black_box(&penalty[0]), Height(17), region, &set, &[])
                .unwrap()
        })
    });
    let message = kaon::chain::posc::attestation_message(region, Height(16), rn);
    let signature = keys[0].sign(&message);
    let key = keys[0].public_key();
    g.bench_function("one BLS verification (reference)", |b| {
        b.iter(|| assert!(signature.verify(black_box(&key), &message)))
    });
    g.finish();
}

criterion_group!(benches, por, posc);
criterion_main!(benches);
