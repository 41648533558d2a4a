//! One CN's transaction pipeline on this machine's cores — verify (decode + ecrecover on
//! rayon) → order (mempool insert + ready) → execute (EVM segment) → persist (block log +
//! one RocksDB batch: index, state diff, receipts) — for a block of 10 000 transfers, against
//! the ecrecover ceiling measured in the same run (recovering the same transactions on rayon
//! and nothing else).

use alloy_primitives::{Address, Bytes, U256};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kaon::chain::recovery::persist;
use kaon::consensus::machine::{Params, Tip};
use kaon::consensus::proposal::{build_block, BlockBody};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::sha256;
use kaon::crypto::tx::{decode_recover_batch, DecodeRules, Eip1559Tx, Transaction, TxKind};
use kaon::exec::{BlockContext, EvmExecutor, Executor, MemoryState};
use kaon::mempool::{Mempool, MempoolConfig};
use kaon::storage::blocklog::{BlockLog, BlockLogOptions};
use kaon::storage::state::{CommittedState, PendingBlock};
use kaon::storage::store::Store;
use kaon::types::codec::encode_frame;
use kaon::types::{BlockHash, ChainId, CnIndex, Height, Round, Segment};
use std::sync::Arc;

const TXS: usize = 10_000;
const SENDERS: usize = 250;
const CHAIN: ChainId = ChainId(1001);

fn signed_transfers() -> (Vec<Bytes>, Vec<Address>) {
    let secrets: Vec<[u8; 32]> = (0..SENDERS)
        .map(|i| sha256(&(i as u64).to_be_bytes()).0)
        .collect();
    let raws = (0..TXS)
        .map(|i| {
            let tx = Transaction::Eip1559(Eip1559Tx {
                chain_id: CHAIN,
                nonce: (i / SENDERS) as u64,
                max_priority_fee_per_gas: 1,
                max_fee_per_gas: 1_000_000_000,
                gas_limit: 21_000,
                to: TxKind::Call(Address::repeat_byte(0xee)),
                value: U256::from(1u64),
                input: Bytes::new(),
                access_list: Default::default(),
            });
            tx.sign(&secrets[i % SENDERS]).unwrap().raw().clone()
        })
        .collect();
    let senders = secrets
        .iter()
        .map(|s| kaon::crypto::tx::address_of(s).unwrap())
        .collect();
    (raws, senders)
}

fn pipeline(c: &mut Criterion) {
    let (raws, senders) = signed_transfers();
    let mut state = MemoryState::default();
    for s in &senders {
        state.fund(CHAIN, *s, U256::from(10u128.pow(24)));
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (mut log, _) =
        BlockLog::open(dir.path().join("blocks.log"), BlockLogOptions::default()).unwrap();
    let store = Arc::new(Store::open(dir.path().join("db")).unwrap());
    let committed = CommittedState::open(store, &[]).unwrap();
    let ctx = BlockContext::new(Height(1), 1_000, sha256(b"m"));
    let key = SecretKey::from_seed(&[7; 32]).unwrap();
    let set = CnSet::new(vec![key.public_key()]).unwrap();
    let params = Params {
        region: ChainId(1000),
        committee_size: 1,
        block_interval_ms: 0,
        base_timeout_ms: 1,
        max_timeout_ms: 1,
        votes: Default::default(),
    };
    let tip = Tip {
        height: Height(0),
        hash: BlockHash(sha256(b"g")),
        mix: sha256(b"m"),
        timestamp_ms: 0,
    };
    let rules = DecodeRules::default();

    let mut g = c.benchmark_group("cn_pipeline_10k_transfers");
    g.sample_size(10);
    g.throughput(Throughput::Elements(TXS as u64));
    g.bench_function("ecrecover_ceiling", |b| {
        b.iter(|| decode_recover_batch(&raws, &rules))
    });
    g.bench_function("verify_order_execute_persist", |b| {
        b.iter(|| {
            let verified = decode_recover_batch(&raws, &rules);
            let mut pool = Mempool::new(MempoolConfig::default(), [CHAIN]);
            for tx in verified.into_iter().flatten() {
                pool.insert(tx, 0).unwrap();
            }
            let ready = pool.ready(CHAIN, TXS);
            let segment = Segment {
                chain_id: CHAIN,
                txs: ready.iter().map(|t| t.tx().raw().clone()).collect(),
            };
            let txs: Vec<_> = ready.into_iter().map(Some).collect();
            let mut execution = EvmExecutor
                .execute_segment(&state, &ctx, &segment, &txs)
                .unwrap();
            assert!(execution.receipts.iter().all(|r| r.outcome.status()));
            // The block runs on an in-memory state, not on the store it is persisted into, so
            // the values its writes replace (for the change sets) come from that store: a read
            // a node does not pay, as its execution captures them from the state it runs on.
            execution.diff.prior = Some(execution.diff.prior_in(&committed).unwrap());
            let body = BlockBody {
                segments: vec![segment],
                commitments: vec![execution.commitment.clone()],
                next_cn_set: Vec::new(),
            };
            let block = build_block(&params, &key, CnIndex(0), &set, &tip, Round(0), 1, body);
            let header = block.header();
            committed.committed(PendingBlock::new(
                header.height,
                block.hash(),
                Vec::new(),
                vec![(0, execution)],
            ));
            let offset = log.append(&encode_frame(&block)).unwrap();
            persist(&committed, &block, offset.0).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
