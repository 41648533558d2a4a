//! The write cost of state history on the persist path: the same blocks committed to two
//! stores in the same run, one keeping every block's change sets (`HistoryRetention::All`, a
//! ranger node's default) and one writing none (`HistoryRetention::Blocks(0)`). Timed:
//! `CommittedState::persist`, the one RocksDB batch a block costs (index, state diff,
//! receipts, and the change sets), with the default synced WAL, while the history node's
//! worker builds the per-key index beside it as in a running node; the paired comparison also
//! prints that worker's CPU per block. Two workloads: a block of 10 000 transfers from
//! 250 senders (as `benches/pipeline.rs`), and a state-heavy block writing 5 000 accounts and
//! 5 000 storage slots.

use alloy_primitives::{Address, Bytes, B256, U256};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use kaon::consensus::machine::{Params, Tip};
use kaon::consensus::proposal::{build_block, BlockBody};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::sha256;
use kaon::crypto::tx::{decode_recover_batch, DecodeRules, Eip1559Tx, Transaction, TxKind};
use kaon::exec::{
    Account, BlockContext, EvmExecutor, Executor, MemoryState, SegmentExecution, StateRead,
};
use kaon::storage::history::HistoryRetention;
use kaon::storage::state::{CommittedState, PendingBlock};
use kaon::storage::store::Store;
use kaon::types::{Block, BlockHash, ChainId, CnIndex, Height, Round, Segment};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TXS: usize = 10_000;
const SENDERS: usize = 250;
/// Accounts and slots the state-heavy block writes (each).
const HEAVY_KEYS: usize = 5_000;
const CHAIN: ChainId = ChainId(1001);

/// One block of 10 000 executed transfers.
fn transfers() -> (Segment, SegmentExecution) {
    let secrets: Vec<[u8; 32]> = (0..SENDERS)
        .map(|i| sha256(&(i as u64).to_be_bytes()).0)
        .collect();
    let raws: Vec<Bytes> = (0..TXS)
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
    let mut state = MemoryState::default();
    for s in &secrets {
        let sender = kaon::crypto::tx::address_of(s).unwrap();
        state.fund(CHAIN, sender, U256::from(10u128.pow(24)));
    }
    let txs: Vec<_> = decode_recover_batch(&raws, &DecodeRules::default())
        .into_iter()
        .map(Result::ok)
        .collect();
    let segment = Segment {
        chain_id: CHAIN,
        txs: raws,
    };
    let ctx = BlockContext::new(Height(1), 1_000, sha256(b"m"));
    let execution = EvmExecutor
        .execute_segment(&state, &ctx, &segment, &txs)
        .unwrap();
    assert!(execution.receipts.iter().all(|r| r.outcome.status()));
    (segment, execution)
}

/// `base` with its diff replaced by writes of `HEAVY_KEYS` accounts and slots whose values
/// depend on `height` (so every block changes them all).
fn state_heavy(base: &SegmentExecution, height: u64) -> SegmentExecution {
    let mut execution = base.clone();
    let diff = &mut execution.diff;
    diff.accounts.clear();
    diff.storage.clear();
    for i in 0..HEAVY_KEYS as u64 {
        let address = Address::from_word(B256::from(U256::from(i + 1)));
        let account = Account::with_balance(U256::from(height * 1_000 + i));
        diff.accounts.insert(address, Some(account));
        let slot = (Address::repeat_byte(0xcc), U256::from(i));
        diff.storage.insert(slot, U256::from(height + i + 1));
    }
    execution
}

/// Builds one workload's block at a height from the executed transfers.
type BlockOf = fn(&SegmentExecution, u64) -> SegmentExecution;

/// The two workloads: the transfers block as executed, and the state-heavy block.
fn workloads() -> [(&'static str, BlockOf); 2] {
    [
        ("10k_transfers", |e, _| e.clone()),
        ("5k_accounts_5k_slots", state_heavy),
    ]
}

/// A node's committed state on disk, and the tip of its chain.
struct Node {
    _dir: tempfile::TempDir,
    state: CommittedState,
    tip: Tip,
}

impl Node {
    fn new(retention: HistoryRetention) -> Self {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let store = Arc::new(Store::open(dir.path().join("db")).unwrap());
        let state = CommittedState::open_with(store, &[], retention).unwrap();
        let tip = Tip {
            height: Height(0),
            hash: BlockHash(sha256(b"g")),
            mix: sha256(b"m"),
            timestamp_ms: 0,
        };
        Self {
            _dir: dir,
            state,
            tip,
        }
    }

    /// Builds the next block around `segment` (untimed), then times its persist. The diff
    /// carries the values it overwrites, as execution captures them.
    fn persist_next(&mut self, segment: &Segment, mut execution: SegmentExecution) -> Duration {
        execution.diff.prior = Some(execution.diff.prior_in(&self.state).unwrap());
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
        let body = BlockBody {
            segments: vec![segment.clone()],
            commitments: vec![execution.commitment.clone()],
            next_cn_set: Vec::new(),
        };
        let block: Block = build_block(
            &params,
            &key,
            CnIndex(0),
            &set,
            &self.tip,
            Round(0),
            1,
            body,
        );
        let header = block.header();
        self.tip = Tip {
            height: header.height,
            hash: block.hash(),
            mix: header.mix,
            timestamp_ms: header.timestamp_ms,
        };
        self.state.committed(PendingBlock::new(
            header.height,
            block.hash(),
            Vec::new(),
            vec![(0, execution)],
        ));
        let started = Instant::now();
        self.state.persist(&block, 0).unwrap();
        started.elapsed()
    }
}

fn history_write_cost(c: &mut Criterion) {
    let (segment, transfers) = transfers();
    let mut g = c.benchmark_group("persist_with_history");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    let workloads = workloads();
    for (workload, block_of) in workloads {
        for (variant, retention) in [
            ("no_history", HistoryRetention::Blocks(0)),
            ("change_sets", HistoryRetention::All),
        ] {
            let mut node = Node::new(retention);
            g.bench_function(BenchmarkId::new(workload, variant), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let height = node.tip.height.0 + 1;
                            node.persist_next(&segment, block_of(&transfers, height))
                        })
                        .sum()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, history_write_cost);

/// Rounds of the paired comparison printed after the criterion groups (a multiple of the
/// worker's 16-block batches, so each node sees whole batches).
const PAIRED_ROUNDS: usize = 64;

/// The same blocks persisted with and without change sets in alternating order, so that slow
/// minutes of a shared machine hit both alike; prints each workload's median times and their
/// ratio (the number `docs/benchmarks.md` records).
fn paired() {
    let (segment, transfers) = transfers();
    let workloads = workloads();
    for (workload, block_of) in workloads {
        let mut nodes = [
            Node::new(HistoryRetention::Blocks(0)),
            Node::new(HistoryRetention::All),
        ];
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..PAIRED_ROUNDS {
            let height = nodes[0].tip.height.0 + 1;
            for k in 0..2 {
                let m = (k + round) % 2;
                times[m].push(nodes[m].persist_next(&segment, block_of(&transfers, height)));
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
        let (mean_without, mean_with) = (mean(&times[0]), mean(&times[1]));
        let (without, with) = (median(&mut times[0]), median(&mut times[1]));
        println!(
            "paired {workload}: persist median {without:?} without history, {with:?} with change sets: ratio {:.3}; means {mean_without:?}, {mean_with:?}: ratio {:.3} ({PAIRED_ROUNDS} rounds)",
            with.as_secs_f64() / without.as_secs_f64(),
            mean_with.as_secs_f64() / mean_without.as_secs_f64()
        );
        let indexing = indexing_cpu(&nodes[1]) / PAIRED_ROUNDS as u32;
        println!(
            "paired {workload}: history index built in the background: {indexing:?} CPU per block = {:.3} of the persist without history",
            indexing.as_secs_f64() / without.as_secs_f64()
        );
    }
}

/// CPU time spent indexing the node's history, once every block is indexed.
fn indexing_cpu(node: &Node) -> Duration {
    // What the worker has not reached yet is indexed here, and timed.
    let store = node.state.store();
    let started = Instant::now();
    store.index_history(u64::MAX).unwrap();
    history_thread_cpu() + started.elapsed()
}

/// User + system CPU of this process's threads named `history` (the state history worker),
/// from `/proc/self/task/*/stat` (clock ticks of 10 ms). RocksDB's own flushes and compactions
/// of the index run on its background threads and are not in it.
fn history_thread_cpu() -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": fields after the closing parenthesis, utime and stime
        // are the 12th and 13th of them.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(history") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    Duration::from_millis(ticks * 10)
}

/// Blocks written for the read comparison; reads are at the middle one.
const READ_BLOCKS: u64 = 16;
/// Account reads timed per variant.
const READS: usize = 2_000;

/// What indexing buys reads: accounts read at a past block while the blocks above it are
/// still only in their change sets (as for up to `INDEX_BATCH_BLOCKS` blocks behind the head)
/// and once they are indexed. Written through the store directly, so no worker indexes
/// behind the measurement's back.
fn reads() {
    let (_, transfers) = transfers();
    for (workload, block_of) in workloads() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let store = Arc::new(Store::open(dir.path().join("db")).unwrap());
        // Starts history at genesis; its worker stops with it.
        drop(CommittedState::open(Arc::clone(&store), &[]).unwrap());
        for height in 1..=READ_BLOCKS {
            // Without carried values the store reads what each block overwrites (the
            // transfers block's captured ones are those of its first execution).
            let mut diff = block_of(&transfers, height).diff;
            diff.prior = None;
            let mut batch = store.batch();
            batch
                .apply_block_state(height, &[&diff], HistoryRetention::All)
                .unwrap();
            batch.commit().unwrap();
        }
        // Accounts the blocks write and keep (not the ones a block deletes).
        let addresses: Vec<Address> = block_of(&transfers, 1)
            .diff
            .accounts
            .into_iter()
            .filter_map(|(address, account)| account.map(|_| address))
            .collect();
        let time_reads = || {
            let view = store.state_at(READ_BLOCKS / 2).unwrap();
            let started = Instant::now();
            for i in 0..READS {
                let address = &addresses[i * 7919 % addresses.len()];
                assert!(view.account(CHAIN, address).unwrap().is_some());
            }
            started.elapsed() / READS as u32
        };
        let unindexed = time_reads();
        store.index_history(u64::MAX).unwrap();
        let indexed = time_reads();
        println!(
            "reads {workload}: account at a block {} below the head: {unindexed:?} from change sets, {indexed:?} indexed",
            READ_BLOCKS / 2
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    paired();
    reads();
}
