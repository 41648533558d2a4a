//! A ranger node catching up: blocks/s and tx/s of the whole path — range requests over QUIC
//! on 127.0.0.1, header chain, one BLS batch per range for reveals and certificates, EVM
//! re-execution, block log + RocksDB — on a chain four CNs produced under load. In the same
//! run, over the same chain's certificates: one randomized batch against one verification per
//! certificate (the reference).
//!
//! The reference for the transaction rate is the machine's own ceiling, measured in the same
//! run: recovering the senders of the same transactions on rayon and nothing else (every RN
//! recovers every sender).
//!
//! Setup (not measured): four CNs with a load generator run until the chain is `BLOCKS` high,
//! then stop; CN 0's datadir is served by an RN endpoint. Each catch-up sample starts a fresh
//! RN on an empty datadir that dials that endpoint and ends when the RN has stored the head;
//! the sample counts from the started node (its datadir opened: RocksDB's open is a fixed cost
//! per process, printed apart, not a per-block one).
//!
//! A consensus node rejoining after an outage takes the same chain another way: CNs 1 and 2
//! restart from their datadirs, and each `cn_catch_up` sample starts CN 3 on an empty datadir
//! (same key, same address); it asks them for decided blocks, checks each held run in one BLS
//! batch, re-executes and applies block by block, and the sample ends when it has applied the
//! chain's last loaded block.

use alloy_primitives::U256;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kaon::chain::genesis::Genesis;
use kaon::consensus::audit::{audit_consensus, ChainState};
use kaon::consensus::certificate::{certificate_claim, verify_certificates};
use kaon::consensus::machine::Tip;
use kaon::crypto::bls::{SecretKey, SignedMessage};
use kaon::crypto::hash::sha256;
use kaon::crypto::tx::{decode_recover_batch, DecodeRules};
use kaon::net::rn::{RnNetConfig, RnNetwork};
use kaon::net::sync::{BlockServer, ChainReader};
use kaon::net::NetConfig;
use kaon::node::loadgen::{dev_account, DevAccount, LoadGen};
use kaon::pipeline::topology::{start_cluster, BoundCn, CnNode, CnSpec};
use kaon::pipeline::{link, NodeRuntime};
use kaon::rn::{RnConfig, RnNode};
use kaon::storage::blocklog::BlockLog;
use kaon::storage::store::Store;
use kaon::types::{Block, ChainId, CnIndex, Height};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Height of the chain the RN catches up on.
const BLOCKS: u64 = 120;
/// Load offered while the chain is built (transfers per second).
const TPS: usize = 1_500;
const ROUND_MS: u64 = 100;
const ACCOUNTS: usize = 64;
const REGION: ChainId = ChainId(1000);

fn cn_key(i: usize) -> SecretKey {
    SecretKey::from_seed(sha256(format!("audit-bench-cn-{i}").as_bytes()).as_slice()).unwrap()
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// The bench's runtime, shared by the CNs it starts.
fn shared(rt: &tokio::runtime::Runtime) -> NodeRuntime {
    NodeRuntime::Shared(rt.handle().clone())
}

/// CN `i` of the bench's genesis on `datadir`, listening on `listen`.
fn cn_spec(
    genesis: &Genesis,
    i: usize,
    datadir: std::path::PathBuf,
    listen: std::net::SocketAddr,
) -> CnSpec {
    CnSpec::from_genesis(
        genesis,
        CnIndex(i as u32),
        cn_key(i),
        datadir,
        NetConfig::new(listen),
    )
    .unwrap()
}

/// Binds again an address a stopped node held: its socket is released once the tasks of the
/// shared runtime that still hold it have ended, a moment after the node's shutdown.
fn rebind(mut bind: impl FnMut() -> anyhow::Result<BoundCn>) -> BoundCn {
    let started = Instant::now();
    loop {
        match bind() {
            Ok(bound) => return bound,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("binding the rejoining CN: {e:#}"),
        }
    }
}

/// Runs four CNs under load until they committed `BLOCKS`, then stops them.
fn build_chain(dir: &Path) -> Genesis {
    let keys: Vec<SecretKey> = (0..4).map(cn_key).collect();
    let accounts: Vec<DevAccount> = (0..ACCOUNTS).map(dev_account).collect();
    let balance = U256::from(10u64).pow(U256::from(24u64));
    let funded: Vec<_> = accounts.iter().map(|a| a.address).collect();
    let genesis = Genesis::new(REGION, &keys, 2, &funded, balance, ROUND_MS, 100);
    let rt = runtime(2);
    let specs = (0..4)
        .map(|i| {
            let net = NetConfig::new("127.0.0.1:0".parse().unwrap());
            let datadir = dir.join(format!("cn{i}"));
            CnSpec::from_genesis(&genesis, CnIndex(i as u32), keys[i].clone(), datadir, net)
                .unwrap()
        })
        .collect();
    let nodes = start_cluster(rt.handle(), specs, |_| Box::new(|_| {})).unwrap();
    let chains: Vec<ChainId> = genesis.servicechains.iter().map(|&c| ChainId(c)).collect();
    let mut load = LoadGen::new(&accounts, &chains);
    let submit = nodes[0].submitter();
    let tick = Duration::from_millis(50);
    let per_tick = TPS * tick.as_millis() as usize / 1000;
    let started = Instant::now();
    while nodes[0].consensus.height.load(Relaxed) <= BLOCKS {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the CNs stalled"
        );
        let batch = load.next_batch(per_tick, &*nodes[0].shared.state);
        if !batch.is_empty() {
            submit.submit(batch).unwrap();
        }
        std::thread::sleep(tick);
    }
    drop(submit);
    for node in nodes {
        node.shutdown().unwrap();
    }
    genesis
}

/// The median of `samples` (sorted in place); none when there are none.
fn median(samples: &mut [f64]) -> Option<f64> {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied()
}

/// CN 0's blocks from its datadir, in height order.
fn read_chain(chain: &ChainReader) -> Vec<Block> {
    let (head, _) = chain.head().unwrap().unwrap();
    (1..=head.0)
        .map(|h| chain.block_at(Height(h)).unwrap().unwrap())
        .collect()
}

/// Each block's certificate as one claim against its round's committee.
fn certificate_claims(genesis: &Genesis, blocks: &[Block]) -> Vec<SignedMessage> {
    let set = genesis.cn_set().unwrap();
    let params = genesis.params();
    let mut tip: Tip = genesis.tip();
    blocks
        .iter()
        .map(|b| {
            let seal = &b.sealed.seal;
            let committee = set.committee(
                tip.mix,
                b.header().height,
                seal.round,
                params.committee_size,
            );
            let claim = certificate_claim(&set, &committee, b.hash(), seal).unwrap();
            tip = Tip::of(b);
            claim
        })
        .collect()
}

fn audit(c: &mut Criterion) {
    // Quiet by default; `RUST_LOG=kaon::rn=info` shows the RN's catch-up progress lines.
    kaon::telemetry::init_logging("warn");
    let dir = tempfile::tempdir().unwrap();
    let genesis = build_chain(dir.path());
    let cn0 = dir.path().join("cn0");
    let (log, _) = BlockLog::open(cn0.join("blocks.log"), Default::default()).unwrap();
    let store = Arc::new(Store::open(cn0.join("db")).unwrap());
    let chain = ChainReader::new(log.reader(), store);
    let blocks = read_chain(&chain);
    let txs: usize = blocks
        .iter()
        .flat_map(|b| &b.segments)
        .map(|s| s.txs.len())
        .sum();
    let target = blocks.len() as u64;
    println!("chain: {target} blocks, {txs} transactions");

    // CN 0's chain, served to RNs by an RN endpoint.
    let rt = runtime(1);
    let (inbox, _drop) = link("bench_inbox", 16);
    let source = RnNetwork::bind(
        rt.handle(),
        RnNetConfig::new("127.0.0.1:0".parse().unwrap()),
        SecretKey::from_seed(&[7; 32]).unwrap(),
        inbox,
    )
    .unwrap();
    source.serve_blocks(BlockServer::new(chain.clone()).unwrap());
    let source_addr = source.local_addr().unwrap();

    let mut catch_up = c.benchmark_group("rn_catch_up");
    catch_up.sample_size(10);
    catch_up.warm_up_time(Duration::from_millis(500));
    catch_up.measurement_time(Duration::from_secs(30));
    catch_up.throughput(Throughput::Elements(target));
    let (mut seconds, mut starts) = (Vec::new(), Vec::new());
    catch_up.bench_function(BenchmarkId::new("blocks", target), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let rn_dir = dir.path().join(format!("rn-{}-{i}", seconds.len()));
                let key = SecretKey::from_seed(&[9; 32]).unwrap();
                let mut config = RnConfig::new(
                    rn_dir.clone(),
                    genesis.clone(),
                    key,
                    "127.0.0.1:0".parse().unwrap(),
                );
                config.rn_peers = vec![source_addr];
                let opening = Instant::now();
                let rn = RnNode::start(config).unwrap();
                starts.push(opening.elapsed().as_secs_f64());
                // The catch-up proper: from a started node (datadir open, sockets bound).
                let started = Instant::now();
                while rn.head().0 .0 < target {
                    assert!(
                        started.elapsed() < Duration::from_secs(300),
                        "catch-up stalled"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                let took = started.elapsed();
                total += took;
                seconds.push(took.as_secs_f64());
                assert!(rn.rejected().is_empty(), "{:?}", rn.rejected());
                rn.shutdown().unwrap();
                std::fs::remove_dir_all(&rn_dir).unwrap();
            }
            total
        })
    });
    catch_up.finish();
    // (Nothing to print when a filter left the group out.)
    if let (Some(catching_up), Some(opening)) = (median(&mut seconds), median(&mut starts)) {
        println!(
            "catch-up median over {} runs: {:.0} blocks/s, {:.0} tx/s (node start before it, not counted: {:.1} ms)",
            seconds.len(),
            target as f64 / catching_up,
            txs as f64 / catching_up,
            opening * 1e3
        );
    }

    cn_catch_up(c, dir.path(), &genesis, target, txs);

    // The consensus half alone (headers + one batch for all reveals and certificates).
    let state = ChainState {
        tip: genesis.tip(),
        set: Arc::new(genesis.cn_set().unwrap()),
    };
    let params = genesis.params();
    let mut consensus = c.benchmark_group("rn_consensus_audit");
    consensus.sample_size(10);
    consensus.throughput(Throughput::Elements(target));
    consensus.bench_function(BenchmarkId::new("batched", target), |b| {
        b.iter(|| {
            assert_eq!(
                audit_consensus(&params, &state, &blocks).passed,
                blocks.len()
            )
        })
    });
    consensus.finish();

    // Certificates of the whole chain: one batch against one by one.
    let claims = certificate_claims(&genesis, &blocks);
    let mut certs = c.benchmark_group("rn_certificates");
    certs.sample_size(10);
    certs.throughput(Throughput::Elements(claims.len() as u64));
    certs.bench_function(BenchmarkId::new("batch", claims.len()), |b| {
        b.iter(|| verify_certificates(&claims).unwrap())
    });
    certs.bench_function(BenchmarkId::new("one_by_one", claims.len()), |b| {
        b.iter(|| assert!(claims.iter().all(SignedMessage::verify)))
    });
    certs.finish();

    // The ceiling of the transaction rate: sender recovery alone, on every core.
    let raws: Vec<&[u8]> = blocks
        .iter()
        .flat_map(|b| b.segments.iter().skip(1))
        .flat_map(|s| s.txs.iter().map(|t| t.as_ref()))
        .collect();
    let mut reference = c.benchmark_group("rn_reference");
    reference.sample_size(10);
    reference.throughput(Throughput::Elements(raws.len() as u64));
    reference.bench_function(BenchmarkId::new("ecrecover", raws.len()), |b| {
        b.iter(|| {
            let recovered = decode_recover_batch(&raws, &DecodeRules::default());
            assert!(recovered.iter().all(Result::is_ok));
        })
    });
    reference.finish();
    source.close();
}

/// A CN rejoining from an empty datadir: CNs 1 and 2 serve the chain (CN 0 stays down, so no
/// quorum commits past it until CN 3 is back), and each sample starts CN 3 afresh on one
/// address and ends when it has applied height `target`.
fn cn_catch_up(c: &mut Criterion, dir: &Path, genesis: &Genesis, target: u64, txs: usize) {
    let rt = runtime(2);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    // CN 3 rejoins on an empty datadir, removed after each sample.
    let rejoin_dir = dir.join("cn3-rejoin");
    let datadir = |i: usize| match i {
        3 => rejoin_dir.clone(),
        _ => dir.join(format!("cn{i}")),
    };
    let mut bound: Vec<BoundCn> = (1..4)
        .map(|i| BoundCn::bind(shared(&rt), cn_spec(genesis, i, datadir(i), any)).unwrap())
        .collect();
    let addrs: Vec<(CnIndex, std::net::SocketAddr)> = (1..4)
        .zip(&bound)
        .map(|(i, b)| (CnIndex(i as u32), b.local_addr().unwrap()))
        .collect();
    let peers_of = |me: usize| -> Vec<_> {
        addrs
            .iter()
            .filter(|(cn, _)| cn.0 as usize != me)
            .copied()
            .collect()
    };
    // The first sample's CN 3 is the one bound above; later ones bind its address again (the
    // one CNs 1 and 2 dial).
    let mut first = bound.pop();
    let cn3_addr = addrs[2].1;
    let servers: Vec<CnNode> = bound
        .into_iter()
        .zip(1..)
        .map(|(cn, i)| cn.start(&peers_of(i), Box::new(|_| {})).unwrap())
        .collect();

    let mut group = c.benchmark_group("cn_catch_up");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(target));
    let mut seconds = Vec::new();
    group.bench_function(BenchmarkId::new("blocks", target), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let cn = first.take().unwrap_or_else(|| {
                    rebind(|| {
                        let spec = cn_spec(genesis, 3, datadir(3), cn3_addr);
                        BoundCn::bind(shared(&rt), spec)
                    })
                });
                let node = cn.start(&peers_of(3), Box::new(|_| {})).unwrap();
                let started = Instant::now();
                // `height` is the height being decided: the last applied one plus one.
                while node.consensus.height.load(Relaxed) <= target {
                    assert!(
                        started.elapsed() < Duration::from_secs(300),
                        "CN catch-up stalled at {}",
                        node.consensus.height.load(Relaxed)
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                let took = started.elapsed();
                total += took;
                seconds.push(took.as_secs_f64());
                node.shutdown().unwrap();
                std::fs::remove_dir_all(datadir(3)).unwrap();
            }
            total
        })
    });
    group.finish();
    if let Some(median) = median(&mut seconds) {
        println!(
            "CN catch-up median over {} runs: {:.0} blocks/s, {:.0} tx/s",
            seconds.len(),
            target as f64 / median,
            txs as f64 / median
        );
    }
    for node in servers {
        node.shutdown().unwrap();
    }
}

criterion_group!(benches, audit);
criterion_main!(benches);
