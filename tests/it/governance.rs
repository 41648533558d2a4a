//! CN-set governance end to end: four CNs over QUIC and a fifth waiting outside the set. A
//! change approved by too few CNs is marked invalid and changes nothing; one approved by three
//! of four is executed in segment 0, announced in the header before its effective height, and
//! from then on the fifth CN votes and every certificate is counted against five keys.

use alloy_primitives::U256;
use kaon::chain::genesis::Genesis;
use kaon::consensus::governance::{approve, proof_of_possession};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::sha256;
use kaon::net::NetConfig;
use kaon::pipeline::topology::{start_cluster, CnNode, CnSpec};
use kaon::storage::blocklog::{BlockLog, BlockLogOptions};
use kaon::types::codec::decode_frame;
use kaon::types::{Block, ChainId, CnIndex, Height};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(90);

fn key(i: usize) -> SecretKey {
    SecretKey::from_seed(sha256(format!("governance-cn-{i}").as_bytes()).as_slice()).unwrap()
}

fn height(node: &CnNode) -> u64 {
    node.consensus.height.load(Relaxed).saturating_sub(1)
}

fn wait_until(what: &str, nodes: &[CnNode], cond: impl Fn(&[CnNode]) -> bool) {
    let start = Instant::now();
    while !cond(nodes) {
        let heights: Vec<u64> = nodes.iter().map(height).collect();
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: heights {heights:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fifth_cn_joins_through_an_approved_change_and_votes() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<SecretKey> = (0..5).map(key).collect();
    let region = ChainId(1000);
    let genesis_keys: Vec<_> = keys[..4].iter().map(SecretKey::public_key).collect();
    let genesis = Genesis::new(region, &keys[..4], 1, &[], U256::ZERO, 150, 100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let specs = (0..5)
        .map(|i| {
            let net = NetConfig::new("127.0.0.1:0".parse().unwrap());
            let datadir = dir.path().join(format!("cn{i}"));
            CnSpec::from_genesis(&genesis, CnIndex(i as u32), keys[i].clone(), datadir, net)
                .unwrap()
        })
        .collect();
    let nodes = start_cluster(rt.handle(), specs, |_| Box::new(|_| {})).unwrap();
    wait_until("the four genesis CNs at height 2", &nodes, |n| {
        n[..4].iter().all(|n| height(n) >= 2)
    });

    let current = CnSet::new(genesis_keys.clone()).unwrap();
    let new_set: Vec<_> = keys.iter().map(|k| k.public_key().to_bytes()).collect();
    let pops: Vec<_> = keys.iter().map(proof_of_possession).collect();
    let submit = nodes[0].submitter();

    // Two approvals of four is not more than two thirds: marked invalid, nothing changes.
    let weak_effective = Height(height(&nodes[0]) + 3);
    let weak = approve(
        region,
        &current,
        weak_effective,
        new_set.clone(),
        pops.clone(),
        &[(CnIndex(0), &keys[0]), (CnIndex(1), &keys[1])],
    )
    .unwrap();
    submit.submit(vec![weak.to_system_tx()]).unwrap();
    wait_until("the weak change's effective height to pass", &nodes, |n| {
        n[..4].iter().all(|n| height(n) > weak_effective.0)
    });
    assert_eq!(
        nodes[4].consensus.votes_cast.load(Relaxed),
        0,
        "the fifth CN must not vote yet"
    );

    // Three of four approve.
    let effective = Height(height(&nodes[0]) + 4);
    let approvers: Vec<_> = (0..3).map(|i| (CnIndex(i as u32), &keys[i])).collect();
    let change = approve(
        region,
        &current,
        effective,
        new_set.clone(),
        pops,
        &approvers,
    )
    .unwrap();
    submit.submit(vec![change.to_system_tx()]).unwrap();
    wait_until("all five CNs three heights past the change", &nodes, |n| {
        n.iter().all(|n| height(n) >= effective.0 + 3)
    });
    assert!(
        nodes[4].consensus.votes_cast.load(Relaxed) > 0,
        "the joined CN votes"
    );
    let agreed: Vec<_> = nodes.iter().map(|n| n.consensus.recent_hashes()).collect();
    drop(submit);
    for node in nodes {
        node.shutdown().unwrap();
    }
    for a in &agreed {
        for b in &agreed {
            assert!(
                a.iter().all(|(h, hash)| b.get(h).is_none_or(|o| o == hash)),
                "CNs disagree"
            );
        }
    }

    // The chain on disk: invalid change left in segment 0 without effect, the announcement,
    // then certificates over five keys.
    let (log, _) = BlockLog::open(
        dir.path().join("cn0/blocks.log"),
        BlockLogOptions::default(),
    )
    .unwrap();
    let blocks: Vec<Block> = log
        .iter()
        .map(|r| decode_frame(&r.unwrap().1).unwrap())
        .collect();
    let new_root = CnSet::from_bytes(&new_set).unwrap().root();
    let weak_tx = weak.to_system_tx();
    assert!(
        blocks.iter().any(|b| b.segments[0].txs.contains(&weak_tx)),
        "the weak change is kept in segment 0"
    );
    for b in &blocks {
        let h = b.header();
        let announces = h.height.0 + 1 == effective.0;
        assert_eq!(
            !h.next_cn_set.is_empty(),
            announces,
            "only height {} announces; {} does",
            effective.0 - 1,
            h.height
        );
        if announces {
            assert_eq!(h.next_cn_set, new_set);
        }
        if h.height >= effective {
            assert_eq!(
                h.cn_set_root, new_root,
                "height {} under the new set",
                h.height
            );
            assert_eq!(b.sealed.seal.signers.0.len(), 1, "bitmap sized for five");
            assert!(b.sealed.seal.signers.count() >= 4, "quorum of five is four");
        } else {
            assert_ne!(h.cn_set_root, new_root);
        }
    }
}

#[test]
fn changes_are_refused_with_a_reason() {
    use kaon::consensus::governance::{CnSetChange, GovernanceError};
    let keys: Vec<SecretKey> = (0..5).map(key).collect();
    let region = ChainId(1000);
    let current = CnSet::new(keys[..4].iter().map(SecretKey::public_key).collect()).unwrap();
    let new_set: Vec<_> = keys.iter().map(|k| k.public_key().to_bytes()).collect();
    let pops: Vec<_> = keys.iter().map(proof_of_possession).collect();
    let three: Vec<_> = (0..3).map(|i| (CnIndex(i as u32), &keys[i])).collect();
    let at = Height(10);
    let good = approve(
        region,
        &current,
        Height(12),
        new_set.clone(),
        pops.clone(),
        &three,
    )
    .unwrap();
    assert_eq!(good.verify(region, &current, at).unwrap().len(), 5);
    // Round trip through the system-transaction bytes.
    assert_eq!(
        CnSetChange::from_system_tx(&good.to_system_tx()),
        Ok(good.clone())
    );
    assert_eq!(
        CnSetChange::from_system_tx(&[0x02, 0xc0]),
        Err(GovernanceError::NotSystem)
    );
    assert!(matches!(
        CnSetChange::from_system_tx(&[0xfe, 0x01]),
        Err(GovernanceError::Malformed(_))
    ));

    assert_eq!(
        good.verify(ChainId(7), &current, at),
        Err(GovernanceError::WrongRegion {
            got: region,
            expected: ChainId(7)
        })
    );
    assert_eq!(
        good.verify(region, &current, Height(11)),
        Err(GovernanceError::TooSoon {
            effective: Height(12),
            height: Height(11)
        })
    );
    let two = approve(
        region,
        &current,
        Height(12),
        new_set.clone(),
        pops.clone(),
        &three[..2],
    )
    .unwrap();
    assert_eq!(
        two.verify(region, &current, at),
        Err(GovernanceError::NoQuorum {
            got: 2,
            needed: 3,
            of: 4
        })
    );
    // An approval signed over another set does not carry over.
    let mut swapped = good.clone();
    swapped.new_set.pop();
    swapped.pops.pop();
    assert_eq!(
        swapped.verify(region, &current, at),
        Err(GovernanceError::BadApproval)
    );
    // A claimed approver who did not sign.
    let mut padded = good.clone();
    padded.approvers.set(3);
    assert_eq!(
        padded.verify(region, &current, at),
        Err(GovernanceError::BadApproval)
    );
    // A key without its own proof of possession (another key's proof in its place).
    let mut rogue = pops.clone();
    rogue[4] = rogue[0];
    let no_pop = approve(region, &current, Height(12), new_set.clone(), rogue, &three).unwrap();
    assert_eq!(
        no_pop.verify(region, &current, at),
        Err(GovernanceError::BadPop(4))
    );
    let short = approve(
        region,
        &current,
        Height(12),
        new_set,
        pops[..4].to_vec(),
        &three,
    )
    .unwrap();
    assert_eq!(
        short.verify(region, &current, at),
        Err(GovernanceError::BadSet)
    );
}
