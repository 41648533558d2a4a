//! BLS: single verification (the reference), commit-certificate verification by committee
//! size, a batch of 64 certificates over different messages against one by one, and what the
//! directory region pays to check another region's checkpoint (`RegionCheckpoint::verify`:
//! set root, key decompression, one aggregate pairing check) by that region's CN-set size.

use alloy_primitives::{Address, B256, U256};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use kaon::chain::directory::RegionEntry;
use kaon::chain::migration::{Adopting, Adoption, AdoptionChunk, MoveRecord, SealCheck};
use kaon::chain::region_checkpoint::RegionCheckpoint;
use kaon::chain::servicechain::RegionRoots;
use kaon::consensus::certificate::{
    aggregate_commit_votes, certificate_claim, verify_certificate, verify_certificates,
};
use kaon::consensus::selection::{CnSet, Committee};
use kaon::crypto::bls::{SecretKey, Signature};
use kaon::crypto::hash::sha256;
use kaon::exec::{
    chunked_root, Account, ChainSnapshot, SnapshotError, SnapshotSize, MAX_CHUNK_BYTES,
};
use kaon::types::block::HEADER_VERSION;
use kaon::types::system::MAX_SYSTEM_TX_BYTES;
use kaon::types::SegmentCommitment;
use kaon::types::{
    BlockHash, ChainId, CnIndex, CommitCertificate, Header, Height, Round, SealedHeader, Vote,
    VoteKind,
};
use std::collections::BTreeMap;
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

/// Another region's header at height 5, sealed by all of `sk` (its whole CN set), as a
/// checkpoint for region 1000's directory, with the entry that lists it.
fn region_checkpoint(sk: &[SecretKey]) -> (RegionCheckpoint, RegionEntry) {
    let set = CnSet::new(sk.iter().map(SecretKey::public_key).collect()).unwrap();
    let cn_set: Vec<_> = sk.iter().map(|k| k.public_key().to_bytes()).collect();
    let header = Header {
        version: HEADER_VERSION,
        region: ChainId(1_001_000),
        height: Height(5),
        round: Round(0),
        parent: BlockHash(B256::repeat_byte(1)),
        timestamp_ms: 1_700_000_000_000,
        proposer: CnIndex(0),
        random_reveal: sk[0].sign(b"reveal").to_bytes(),
        mix: B256::repeat_byte(2),
        cn_set_root: set.root(),
        next_cn_set: Vec::new(),
        segments: Vec::new(),
    };
    let entry = RegionEntry {
        region: header.region,
        genesis_hash: B256::repeat_byte(3),
        cn_set_root: set.root(),
        rn_seeds: Vec::new(),
    };
    let checkpoint = RegionCheckpoint {
        directory: ChainId(1000),
        sealed: seal(sk, header),
        cn_set,
        listing: None,
    };
    (checkpoint, entry)
}

/// `header` sealed by all of `sk` (its region's whole CN set).
fn seal(sk: &[SecretKey], header: Header) -> SealedHeader {
    let set = CnSet::new(sk.iter().map(SecretKey::public_key).collect()).unwrap();
    let committee = set.whole_committee(header.height, Round(0));
    let msg = Vote::signing_message(VoteKind::Commit, header.height, Round(0), header.hash());
    let votes: Vec<_> = committee
        .members
        .iter()
        .map(|&cn| (cn, sk[cn.0 as usize].sign(&msg)))
        .collect();
    let seal = aggregate_commit_votes(&committee, &votes).unwrap();
    SealedHeader { header, seal }
}

/// The adoption by region 1000 of a chain region 1 001 000 (sealed by all of `sk`) froze
/// with a state of `accounts` plain accounts, and the set root region 1000 trusts for it.
fn adoption(sk: &[SecretKey], accounts: usize) -> (Adoption, B256) {
    let (checkpoint, entry) = region_checkpoint(sk);
    let state: BTreeMap<Address, Account> = (0..accounts as u64)
        .map(|i| {
            let mut a = [0u8; 20];
            a[..8].copy_from_slice(&i.to_be_bytes());
            (Address::from(a), Account::with_balance(U256::from(i + 1)))
        })
        .collect();
    let snapshot =
        ChainSnapshot::build::<SnapshotError>(&state, &BTreeMap::new(), |_| Ok(None)).unwrap();
    let record = MoveRecord {
        chain: ChainId(1_001_001),
        source: ChainId(1_001_000),
        target: ChainId(1000),
        height: Height(5),
        owner: Address::ZERO,
        final_root: B256::repeat_byte(4),
        snapshot_root: chunked_root(&[snapshot.root()]),
    };
    let roots = RegionRoots {
        moves: record.fold(B256::ZERO),
        ..Default::default()
    };
    let mut header = checkpoint.sealed.header;
    header.segments = vec![SegmentCommitment {
        chain_id: header.region,
        tx_count: 1,
        tx_root: B256::ZERO,
        receipts_root: B256::ZERO,
        state_root: roots.state_root(),
    }];
    let adoption = Adoption {
        region: ChainId(1000),
        sealed: seal(sk, header),
        cn_set: checkpoint.cn_set,
        roots,
        previous_moves: B256::ZERO,
        record,
        chunk_roots: vec![snapshot.root()],
        snapshot,
    };
    (adoption, entry.cn_set_root)
}

/// The reference every group compares with: one BLS verification by `key`, in the same run.
fn single_verify(g: &mut BenchmarkGroup<'_, WallTime>, key: &SecretKey) {
    let msg = B256::repeat_byte(7);
    let sig = key.sign(msg.as_slice());
    let pk = key.public_key();
    g.bench_function("single_verify", |b| {
        b.iter(|| assert!(black_box(&sig).verify(&pk, msg.as_slice())))
    });
}

/// What a region's segment 0 pays to adopt a moved chain (one adoption a block at most): a
/// full first chunk of state (a larger state's further chunks are hashed only), and a small
/// state, against one BLS verification.
fn adoption_vs_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("migration");
    g.sample_size(20);
    let sk = keys(4);
    single_verify(&mut g, &sk[0]);
    let largest = MAX_CHUNK_BYTES / SnapshotSize::ACCOUNT;
    for accounts in [10, largest] {
        let (adoption, trusted) = adoption(&sk, accounts);
        assert!(adoption.to_system_tx().len() <= MAX_SYSTEM_TX_BYTES);
        g.bench_with_input(
            BenchmarkId::new("adoption_verify_accounts", accounts),
            &adoption,
            |b, a| {
                b.iter(|| {
                    black_box(a)
                        .verify(ChainId(1000), Some(trusted), false, SealCheck::Verify)
                        .unwrap()
                })
            },
        );
    }
    // A further chunk of a larger state: checked against its recorded root (no signature).
    let (adoption, _) = adoption(&sk, largest);
    let chunk = AdoptionChunk {
        region: ChainId(1000),
        chain: adoption.record.chain,
        index: 1,
        snapshot: adoption.snapshot.clone(),
    };
    let open = Adopting {
        record: adoption.record,
        chunk_roots: vec![adoption.chunk_roots[0]; 2],
        chunks: vec![Some(adoption.snapshot.clone()), None],
        progress: Height(1),
    };
    assert!(chunk.to_system_tx().len() <= MAX_SYSTEM_TX_BYTES);
    g.bench_with_input(
        BenchmarkId::new("chunk_check_accounts", largest),
        &chunk,
        |b, chunk| b.iter(|| open.check(black_box(chunk)).unwrap()),
    );
    g.finish();
}

fn checkpoint_vs_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("region_checkpoint");
    g.sample_size(20);
    let sk = keys(100);
    single_verify(&mut g, &sk[0]);
    for n in [4usize, 100] {
        let (checkpoint, entry) = region_checkpoint(&sk[..n]);
        g.bench_with_input(BenchmarkId::new("verify", n), &checkpoint, |b, cp| {
            b.iter(|| {
                black_box(cp)
                    .verify(ChainId(1000), Some(&entry), None)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    single_vs_certificate,
    batch_vs_one_by_one,
    checkpoint_vs_single,
    adoption_vs_single
);
criterion_main!(benches);
