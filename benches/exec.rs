//! Segment execution on the EVM.
//!
//! * `exec_1000_segments_x10_transfers`: one block of 1 000 servicechain segments of 10
//!   transfers each, executed on rayon (`Executor::execute_block`) against the same segments
//!   executed one by one, in the same run; beside them the machine's own two-core scaling on
//!   pure computation (1 000 SHA-256 tasks of 16 KiB each, one by one and on rayon), the
//!   ceiling the execution speedup is held against.
//! * `exec_transfers_kaon_vs_revm`: 10 000 transfers in one segment through Kaon's executor
//!   (transaction conversion, segment database, receipts, bloom, diff and commitment) against
//!   the same transfers driven straight through revm over its in-memory database.

use alloy_primitives::{Address, Bytes, U256};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kaon::crypto::hash::sha256;
use kaon::crypto::tx::{address_of, Eip1559Tx, RecoveredTx, Transaction, TxKind};
use kaon::exec::{
    BlockContext, EvmExecutor, Executor, MemoryState, SegmentInput, BASE_FEE_WEI, FEE_COLLECTOR,
    SPEC,
};
use kaon::types::{ChainId, Height, Segment};
use rayon::prelude::*;
use revm::context::{BlockEnv, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::handler::MainnetContext;
use revm::state::AccountInfo;
use revm::{ExecuteCommitEvm, MainBuilder};

/// The node's allocator (`src/main.rs`), so allocation costs are the node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEGMENTS: usize = 1_000;
const PER_SEGMENT: usize = 10;
const RAW_TXS: usize = 10_000;
const SENDERS: usize = 100;
const FIRST_CHAIN: u64 = 10_000;

fn secret(i: usize) -> [u8; 32] {
    sha256(&(i as u64).to_be_bytes()).0
}

fn transfer(chain: ChainId, nonce: u64, to: Address) -> Transaction {
    Transaction::Eip1559(Eip1559Tx {
        chain_id: chain,
        nonce,
        max_priority_fee_per_gas: 1,
        max_fee_per_gas: 2_000_000_000,
        gas_limit: 21_000,
        to: TxKind::Call(to),
        value: U256::from(1u64),
        input: Bytes::new(),
        access_list: Default::default(),
    })
}

/// Signed transactions with their senders, recovered once (recovery is not what is measured).
fn signed(txs: Vec<(usize, Transaction)>) -> Vec<RecoveredTx> {
    txs.into_iter()
        .map(|(from, tx)| RecoveredTx::recover(tx.sign(&secret(from)).unwrap()).unwrap())
        .collect()
}

fn segment(chain: ChainId, txs: Vec<RecoveredTx>) -> SegmentInput {
    let raw = txs.iter().map(|t| t.tx().raw().clone()).collect();
    (
        Segment {
            chain_id: chain,
            txs: raw,
        },
        txs.into_iter().map(Some).collect(),
    )
}

fn ctx() -> BlockContext {
    BlockContext::new(Height(1), 1_700_000_000_000, sha256(b"mix"))
}

/// 1 000 chains, each with `PER_SEGMENT` funded senders sending one transfer each.
fn many_segments() -> (MemoryState, Vec<SegmentInput>) {
    let senders: Vec<Address> = (0..PER_SEGMENT)
        .map(|i| address_of(&secret(i)).unwrap())
        .collect();
    let mut state = MemoryState::default();
    let segments = (0..SEGMENTS as u64)
        .map(|k| {
            let chain = ChainId(FIRST_CHAIN + k);
            for s in &senders {
                state.fund(chain, *s, U256::from(10u128.pow(24)));
            }
            let txs = (0..PER_SEGMENT)
                .map(|i| (i, transfer(chain, 0, Address::repeat_byte(0xee))))
                .collect();
            segment(chain, signed(txs))
        })
        .collect();
    (state, segments)
}

fn parallel_vs_sequential(c: &mut Criterion) {
    let (state, segments) = many_segments();
    let ctx = ctx();
    let ok = |done: &[kaon::exec::SegmentExecution]| {
        assert!(done
            .iter()
            .all(|e| e.receipts.iter().all(|r| r.outcome.status())));
    };
    let mut g = c.benchmark_group("exec_1000_segments_x10_transfers");
    g.sample_size(10);
    g.throughput(Throughput::Elements((SEGMENTS * PER_SEGMENT) as u64));
    // Results are dropped outside the timing in both variants: freeing them is the same
    // one-thread work either way and not part of executing.
    g.bench_function("sequential", |b| {
        b.iter_with_large_drop(|| {
            let done: Vec<_> = segments
                .iter()
                .map(|(s, t)| EvmExecutor.execute_segment(&state, &ctx, s, t).unwrap())
                .collect();
            ok(&done);
            done
        })
    });
    g.bench_function("parallel_rayon", |b| {
        b.iter_with_large_drop(|| {
            let done = EvmExecutor.execute_block(&state, &ctx, &segments).unwrap();
            ok(&done);
            done
        })
    });
    // The machine's own scaling: the same number of tasks, each pure in-cache computation.
    let chunk = vec![0x5au8; 16 << 10];
    let hash_all =
        |tasks: &[usize]| -> u64 { tasks.iter().map(|_| u64::from(sha256(&chunk)[0])).sum() };
    let tasks: Vec<usize> = (0..SEGMENTS).collect();
    g.bench_function("reference_sha256_sequential", |b| {
        b.iter(|| hash_all(&tasks))
    });
    g.bench_function("reference_sha256_rayon", |b| {
        b.iter(|| {
            tasks
                .par_iter()
                .with_max_len(1)
                .map(|_| u64::from(sha256(&chunk)[0]))
                .sum::<u64>()
        })
    });
    g.finish();
}

/// The same block environment Kaon gives the EVM.
fn block_env() -> BlockEnv {
    let ctx = ctx();
    BlockEnv {
        number: U256::from(ctx.height.0),
        beneficiary: FEE_COLLECTOR,
        timestamp: U256::from(ctx.timestamp_ms / 1000),
        gas_limit: ctx.gas_limit,
        basefee: BASE_FEE_WEI,
        prevrandao: Some(ctx.prevrandao),
        ..BlockEnv::default()
    }
}

fn kaon_vs_raw_revm(c: &mut Criterion) {
    let chain = ChainId(FIRST_CHAIN);
    let txs = signed(
        (0..RAW_TXS)
            .map(|i| {
                // Recipients away from the precompile addresses (0x01–0x11).
                let mut to = [0xee; 20];
                to[19] = (i % 200) as u8;
                let to = Address::from(to);
                (i % SENDERS, transfer(chain, (i / SENDERS) as u64, to))
            })
            .collect(),
    );
    let mut state = MemoryState::default();
    let mut raw_db = CacheDB::new(EmptyDB::default());
    for i in 0..SENDERS {
        let sender = address_of(&secret(i)).unwrap();
        state.fund(chain, sender, U256::from(10u128.pow(24)));
        raw_db.insert_account_info(
            sender,
            AccountInfo::default().with_balance(U256::from(10u128.pow(24))),
        );
    }
    let envs: Vec<TxEnv> = txs
        .iter()
        .map(|t| TxEnv {
            tx_type: 2,
            caller: t.sender(),
            gas_limit: 21_000,
            gas_price: 2_000_000_000,
            gas_priority_fee: Some(1),
            kind: revm::primitives::TxKind::Call(t.tx().to().unwrap()),
            value: U256::from(1u64),
            nonce: t.tx().nonce(),
            chain_id: Some(chain.0),
            ..TxEnv::default()
        })
        .collect();
    let input = segment(chain, txs);
    let ctx = ctx();
    let mut g = c.benchmark_group("exec_transfers_kaon_vs_revm");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RAW_TXS as u64));
    g.bench_function("raw_revm_in_memory", |b| {
        b.iter_batched(
            || raw_db.clone(),
            |db| {
                let mut evm = MainnetContext::new(db, SPEC)
                    .modify_cfg_chained(|cfg| cfg.chain_id = chain.0)
                    .with_block(block_env())
                    .build_mainnet();
                for env in &envs {
                    assert!(evm.transact_commit(env.clone()).unwrap().is_success());
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("kaon_segment", |b| {
        b.iter(|| {
            let done = EvmExecutor
                .execute_segment(&state, &ctx, &input.0, &input.1)
                .unwrap();
            assert!(done.receipts.iter().all(|r| r.outcome.status()));
        })
    });
    g.finish();
}

criterion_group!(benches, parallel_vs_sequential, kaon_vs_raw_revm);
criterion_main!(benches);
