//! SHA-256 of 64 + 8 bytes (a PoR strip and its nonce): the digest API Kaon uses everywhere
//! against the raw compression function, which bounds what a miner can reach per core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kaon::crypto::hash::{sha256, sha256_backend, sha256_concat};
use sha2::digest::generic_array::GenericArray;
use std::hint::black_box;

/// SHA-256 initial state (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

fn sha256_72(c: &mut Criterion) {
    eprintln!("sha256 backend: {}", sha256_backend());
    let mut g = c.benchmark_group("sha256_72B");
    g.throughput(Throughput::Elements(1));
    let strip = [0x5au8; 64];
    let nonce = 42u64.to_le_bytes();
    let joined: Vec<u8> = [&strip[..], &nonce].concat();
    g.bench_function("digest", |b| b.iter(|| sha256(black_box(&joined))));
    g.bench_function("digest_concat", |b| {
        b.iter(|| sha256_concat(&[black_box(&strip), &nonce]))
    });
    // The reference: the two compressions a 72-byte message needs (the second block holds the
    // nonce, the padding and the length), with no buffering around them.
    let mut second = [0u8; 64];
    second[..8].copy_from_slice(&nonce);
    second[8] = 0x80;
    second[56..].copy_from_slice(&(72u64 * 8).to_be_bytes());
    let blocks = [
        *GenericArray::from_slice(&strip),
        *GenericArray::from_slice(&second),
    ];
    let mut state = H0;
    sha2::compress256(&mut state, &blocks);
    let raw: Vec<u8> = state.iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(
        raw,
        sha256(&joined).as_slice(),
        "hand-padded compression must equal the digest"
    );
    g.bench_function("raw_compress256_x2", |b| {
        b.iter(|| {
            let mut state = H0;
            sha2::compress256(&mut state, black_box(&blocks));
            state
        })
    });
    g.finish();
}

criterion_group!(benches, sha256_72);
criterion_main!(benches);
