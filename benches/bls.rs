//! BLS: single verification (the reference), commit-certificate verification by committee
//! size, and a batch of 64 certificates over different messages against one by one.

use alloy_primitives::B256;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kaon::consensus::certificate::{
    aggregate_commit_votes, certificate_claim, verify_certificate, verify_certificates,
};
use kaon::consensus::selection::{CnSet, Committee};
use kaon::crypto::bls::{SecretKey, Signature};
use kaon::crypto::hash::sha256;
use kaon::types::{BlockHash, CommitCertificate, Height, Round, Vote, VoteKind};
use std::hint::black_box;

struct Fixture {
    set: CnSet,
    committee: Committee,
    hash: BlockHash,
    cert: CommitCertificate,
}

fn keys(n: usize) -> Vec<SecretKey> {
    (0..n)
        .map(|i| SecretKey::from_seed(sha256(&(i as u64).to_be_bytes()).as_slice()).unwrap())
        .collect()
}

/// A certificate signed by every member of an `n`-member committee for block `tag`.
fn fixture(sk: &[SecretKey], tag: u64) -> Fixture {
    let set = CnSet::new(sk.iter().map(SecretKey::public_key).collect()).unwrap();
    let committee = set.committee(sha256(b"bench"), Height(tag + 1), Round(0), sk.len());
    let hash = BlockHash(sha256(&tag.to_be_bytes()));
    let msg = Vote::signing_message(VoteKind::Commit, committee.height, committee.round, hash);
    let votes: Vec<_> = committee
        .members
        .iter()
        .map(|&cn| (cn, sk[cn.0 as usize].sign(&msg)))
        .collect();
    let cert = aggregate_commit_votes(&committee, &votes).unwrap();
    Fixture {
        set,
        committee,
        hash,
        cert,
    }
}

fn single_vs_certificate(c: &mut Criterion) {
    let mut g = c.benchmark_group("bls_certificate");
    g.sample_size(20);
    let sk = keys(400);
    let msg = B256::repeat_byte(7);
    let sig = sk[0].sign(msg.as_slice());
    let pk = sk[0].public_key();
    g.bench_function("single_verify", |b| {
        b.iter(|| assert!(black_box(&sig).verify(&pk, msg.as_slice())))
    });
    // The like-for-like reference for a certificate from the wire: one vote from the wire also
    // pays decompression and the subgroup check of its signature.
    let sig_bytes = sig.to_bytes();
    g.bench_function("single_verify_from_bytes", |b| {
        b.iter(|| {
            let sig = Signature::try_from(black_box(&sig_bytes)).unwrap();
            assert!(sig.verify(&pk, msg.as_slice()))
        })
    });
    for n in [4usize, 16, 100, 400] {
        let f = fixture(&sk[..n], 0);
        g.bench_with_input(BenchmarkId::new("certificate_verify", n), &f, |b, f| {
            b.iter(|| verify_certificate(&f.set, &f.committee, f.hash, black_box(&f.cert)).unwrap())
        });
    }
    g.finish();
}

fn batch_vs_one_by_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("bls_batch64");
    g.sample_size(10);
    let sk = keys(16);
    let fixtures: Vec<Fixture> = (0..64).map(|i| fixture(&sk, i)).collect();
    g.bench_function("one_by_one", |b| {
        b.iter(|| {
            for f in &fixtures {
                verify_certificate(&f.set, &f.committee, f.hash, &f.cert).unwrap();
            }
        })
    });
    g.bench_function("batched", |b| {
        b.iter(|| {
            let claims: Vec<_> = fixtures
                .iter()
                .map(|f| certificate_claim(&f.set, &f.committee, f.hash, &f.cert).unwrap())
                .collect();
            verify_certificates(&claims).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, single_vs_certificate, batch_vs_one_by_one);
criterion_main!(benches);
