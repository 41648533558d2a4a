//! PoSC over real nodes: four CNs and two RNs over QUIC on 127.0.0.1. Both RNs register
//! themselves with their reward keys, earn PoR rewards, and are probed every round; one stops
//! answering, and the regionchain records penalties against it (quorums of CN attestations)
//! and then slashes it, while the RN that answers keeps its rewards, is never penalized, and
//! withdraws them to a servicechain account once they unlock.

use super::pop::shares;
use super::rn::{describe, head, wait_or_explain, Cluster};
use alloy_primitives::{Address, U256};
use kaon::chain::posc::{Penalty, PoscParams};
use kaon::net::probe::{Probe, ProbeFailure, Prober};
use kaon::node::loadgen::dev_account;
use kaon::node::rewards::{withdraw, WithdrawRequest};
use kaon::rn::register::RewardKey;
use kaon::rn::{RnHandle, RnNode};
use kaon::types::system::{self, SystemKind};
use kaon::types::{CnIndex, Height};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Submits a few shares for `miner` over `rn`'s current head (the difficulty is tiny here).
fn mine_some(rn: &RnHandle, miner: Address, from: u64) -> u64 {
    let h = head(rn);
    let (segment, target) = {
        let region = rn.region().read().unwrap();
        (region.segments.segment(Height(h)), region.pop.target())
    };
    let Ok(segment) = segment else {
        return from;
    };
    let counters: Vec<u64> = (from..from + 4096)
        .filter(|c| kaon::por::verify_share(&segment, miner, *c, &target).is_ok())
        .take(4)
        .collect();
    let txs = shares(miner, h, &counters);
    let _ = rn.forward_txs(txs);
    from + 4096
}

/// (shares, locked + unlocked rewards, penalties) of `rn_address` as `view` audited it.
fn rewards(view: &RnHandle, rn_address: Address) -> (u64, U256, u32) {
    let region = view.region().read().unwrap();
    let r = region.pop.rns.get(&rn_address).cloned().unwrap_or_default();
    (r.shares, r.locked_total() + r.unlocked, r.penalties)
}

/// Every penalty committed in blocks `1..=head` of `view`'s chain.
fn committed_penalties(view: &RnHandle) -> Vec<Penalty> {
    (1..=head(view))
        .filter_map(|h| view.block_by_height(Height(h)).unwrap())
        .flat_map(|b| b.segments[0].txs.clone())
        .filter(|tx| system::split(tx).is_ok_and(|(k, _)| k == SystemKind::Penalty))
        .map(|tx| Penalty::from_system_tx(&tx).unwrap())
        .collect()
}

#[test]
fn an_rn_that_stops_answering_is_penalized_then_slashed_while_a_healthy_one_keeps_its_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(dir.path(), |g| {
        g.por_bits = 2;
        g.posc = PoscParams {
            probes_per_round: 2,
            penalty_limit: 1,
            ..PoscParams::default()
        };
    });
    let (good_key, bad_key) = (dev_account(200), dev_account(201));
    let start = |name: &str, key: &kaon::node::loadgen::DevAccount| {
        let mut config = cluster.rn_config(dir.path(), name, cluster.peers(), vec![]);
        config.reward_key = Some(RewardKey(key.secret));
        RnNode::start(config).unwrap()
    };
    let good = start("good", &good_key);
    let bad = start("bad", &bad_key);
    let (g, b) = (good_key.address, bad_key.address);
    let registered = |a: Address| good.region().read().unwrap().pop.posc.rns.contains_key(&a);
    wait_or_explain(
        "both RNs registered on the regionchain",
        || registered(g) && registered(b),
        || describe(&[&good, &bad]),
    );

    // Both mine until the reserve has paid each of them (an epoch closes every 16 blocks).
    let (mut next_g, mut next_b) = (0, 0);
    wait_or_explain(
        "epoch rewards for both RNs",
        || {
            next_g = mine_some(&good, g, next_g);
            next_b = mine_some(&bad, b, next_b);
            rewards(&good, g).1 > U256::ZERO && rewards(&good, b).1 > U256::ZERO
        },
        || format!("{:?} {:?}", rewards(&good, g), rewards(&good, b)),
    );
    let earned_b = rewards(&good, b);
    assert!(
        committed_penalties(&good).is_empty(),
        "both answer their probes"
    );

    // A probe by hand: the registered key and the committed block pass; another key, another
    // hash, or nobody at the endpoint fail, each with its reason.
    let prober = Prober::bind(
        cluster.rt.handle(),
        "127.0.0.1:0".parse().unwrap(),
        cluster.keys[0].clone(),
    )
    .unwrap();
    let round = Height(head(&good));
    let read = kaon::net::probe::read_height(round, &g, alloy_primitives::B256::repeat_byte(3));
    assert!(read.0 >= 1 && read.0 + kaon::net::probe::MAX_PROBE_LAG <= round.0.max(33));
    let probe = Probe {
        endpoint: good.listen_addr(),
        node_key: good.public_key(),
        read,
        hash: good.block_by_height(read).unwrap().unwrap().hash(),
    };
    let deadline = Duration::from_secs(5);
    let run = |p: &Probe| cluster.rt.block_on(prober.probe(CnIndex(0), p, deadline));
    assert!(run(&probe).unwrap() >= round);
    // A block the RN does not have (beyond its head) is a failure, whatever head it reports.
    let ahead = Probe {
        read: Height(round.0 + 1_000),
        ..probe.clone()
    };
    assert!(matches!(run(&ahead), Err(ProbeFailure::Missing { .. })));
    // Only CNs probe: a hello claiming CN 0 without CN 0's key is turned away, so strangers
    // cannot hold the probe slots.
    let stranger = Prober::bind(
        cluster.rt.handle(),
        "127.0.0.1:0".parse().unwrap(),
        super::rn::node_key("stranger"),
    )
    .unwrap();
    let refused = cluster
        .rt
        .block_on(stranger.probe(CnIndex(0), &probe, deadline));
    assert!(
        matches!(refused, Err(ProbeFailure::Unreachable(_))),
        "{refused:?}"
    );
    let other_key = Probe {
        node_key: bad.public_key(),
        ..probe.clone()
    };
    assert_eq!(run(&other_key), Err(ProbeFailure::WrongKey));
    let other_hash = Probe {
        hash: kaon::types::BlockHash(alloy_primitives::B256::repeat_byte(9)),
        ..probe.clone()
    };
    assert!(matches!(
        run(&other_hash),
        Err(ProbeFailure::WrongBlock { .. })
    ));
    let nobody = Probe {
        endpoint: std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        ..probe.clone()
    };
    let short = |p: &Probe| {
        cluster
            .rt
            .block_on(prober.probe(CnIndex(0), p, Duration::from_millis(300)))
    };
    assert!(matches!(
        short(&nobody),
        Err(ProbeFailure::Timeout(_) | ProbeFailure::Unreachable(_))
    ));

    // The bad RN goes away; every round probes both; the CNs attest, proposers fold a quorum
    // into penalties, and the second penalty (limit 1) slashes.
    bad.shutdown().unwrap();
    wait_or_explain(
        "the silent RN slashed",
        || {
            let (_, rewarded, _) = rewards(&good, b);
            rewarded == U256::ZERO && committed_penalties(&good).len() >= 2
        },
        || {
            let probes = &cluster.cns[0].probes.stats;
            format!(
                "bad {:?}, good {:?}, CN 0 probes {} failures {} attestations {}\n{}",
                rewards(&good, b),
                rewards(&good, g),
                probes.probes.load(Relaxed),
                probes.failures.load(Relaxed),
                probes.attestations.load(Relaxed),
                describe(&[&good])
            )
        },
    );
    let penalties = committed_penalties(&good);
    assert!(
        penalties.iter().all(|p| p.rn == b),
        "only the silent RN is penalized: {penalties:?}"
    );
    let set = cluster.cns.len();
    assert!(penalties.iter().all(|p| p.signers.count() > 2 * set / 3));
    assert!(earned_b.1 > U256::ZERO);

    // The healthy RN keeps its rewards and has no penalty.
    let (shares, rewarded, penalized) = rewards(&good, g);
    assert!(shares > 0 && rewarded > U256::ZERO, "{shares} {rewarded}");
    assert_eq!(penalized, 0);

    // Once unlocked, the healthy RN withdraws to an account on the servicechain: the credit
    // lands with the chain's next segment (an empty one if nobody transacts).
    let unlocked = || {
        let region = good.region().read().unwrap();
        region.pop.rns.get(&g).map_or(U256::ZERO, |r| r.unlocked)
    };
    wait_or_explain(
        "the healthy RN's first rewards unlocked",
        || unlocked() > U256::ZERO,
        || format!("{:?}", rewards(&good, g)),
    );
    // Through the healthy RN's JSON-RPC, as `kaon withdraw` does it.
    let stop = Arc::new(AtomicBool::new(false));
    let rpc = kaon::node::rpc::serve(
        cluster.rt.handle(),
        "127.0.0.1:0".parse().unwrap(),
        kaon::rpc::RpcConfig::default(),
        &cluster.genesis,
        good.view(),
        None,
        &stop,
    )
    .unwrap();
    let chain = kaon::types::ChainId(cluster.genesis.servicechains[0]);
    let to = Address::repeat_byte(0x7e);
    let request = |chain, amount| WithdrawRequest {
        rpc: format!(
            "http://{}/chain/{}",
            rpc.local_addr(),
            cluster.genesis.region
        ),
        reward_secret: good_key.secret,
        amount,
        chain,
        to,
    };
    let amount = unlocked();
    let refused = withdraw(&request(kaon::types::ChainId(4242), None)).unwrap_err();
    assert!(
        format!("{refused:#}").contains("servicechain 4242 is not registered"),
        "{refused:#}"
    );
    let too_much = withdraw(&request(chain, Some(amount + U256::from(1u64)))).unwrap_err();
    assert!(format!("{too_much:#}").contains("exceeds"), "{too_much:#}");
    let receipt = withdraw(&request(chain, None)).unwrap();
    assert_eq!((receipt.amount, receipt.nonce), (amount, 0));
    let balance = || {
        use kaon::exec::StateRead;
        good.state()
            .state
            .account(chain, &to)
            .unwrap()
            .map_or(U256::ZERO, |a| a.balance)
    };
    wait_or_explain(
        "the withdrawal credited on the servicechain",
        || balance() == amount,
        || format!("balance {} of {amount}; {:?}", balance(), rewards(&good, g)),
    );
    let region = good.region().read().unwrap();
    let account = &region.pop.rns[&g];
    assert_eq!((account.withdrawn, account.withdrawals), (amount, 1));
    assert!(region.pop.credits.is_empty());
    drop(region);
    rpc.shutdown();

    let failures: u64 = cluster
        .cns
        .iter()
        .map(|cn| cn.probes.stats.failures.load(Relaxed))
        .sum();
    assert!(failures >= 3, "the CNs saw the failures ({failures})");
    good.shutdown().unwrap();
    cluster.shutdown();
}
