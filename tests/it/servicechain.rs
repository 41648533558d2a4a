//! Servicechain registration, the registry, and checkpoints with their proofs, executed through
//! the regionchain's segment 0 exactly as CNs and RNs run it.

use alloy_primitives::{B256, U256};
use kaon::chain::directory::REGION_ID_SPAN;
use kaon::chain::region::{Committed, RegionExecution, RegionState};
use kaon::chain::servicechain::{
    segment_hash, GenesisAlloc, Registration, RegistryError, ServicechainSpec, MAX_ALLOCATIONS,
    MAX_CHAIN_ID,
};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::sha256;
use kaon::node::loadgen::dev_account;
use kaon::types::{BlockHash, ChainId, CnIndex, Height, Segment};
use std::sync::Arc;

const REGION: ChainId = ChainId(1000);

fn region_state(interval: u64) -> RegionState {
    let keys = (0..4u8)
        .map(|i| SecretKey::from_seed(&sha256(&[i]).0).unwrap().public_key())
        .collect();
    RegionState::new(REGION, Arc::new(CnSet::new(keys).unwrap()), interval)
        .with_genesis_chains(&[ChainId(1001)])
}

fn spec(chain: u64, owner: usize) -> ServicechainSpec {
    ServicechainSpec {
        region: REGION,
        chain_id: ChainId(chain),
        owner: dev_account(owner).address,
        alloc: vec![GenesisAlloc {
            address: dev_account(7).address,
            balance: U256::from(10u64).pow(U256::from(21u64)),
        }],
    }
}

fn registration(chain: u64, owner: usize) -> Registration {
    Registration::sign(spec(chain, owner), &dev_account(owner).secret).unwrap()
}

/// Executes and applies one block carrying `system` in segment 0 and segments of `chains`.
fn commit(
    state: &mut RegionState,
    height: u64,
    system: Vec<alloy_primitives::Bytes>,
    chains: &[u64],
) -> (RegionExecution, BlockHash) {
    let segment = Segment {
        chain_id: REGION,
        txs: system,
    };
    let execution = state.execute(Height(height), &segment);
    let hash = BlockHash(sha256(&height.to_be_bytes()));
    state.apply(
        &execution,
        &Committed {
            height: Height(height),
            hash,
            mix: hash.0,
            servicechains: chains.iter().map(|c| ChainId(*c)).collect(),
            next_cn_set: &[],
        },
    );
    assert_eq!(state.root(), execution.commitment.state_root);
    (execution, hash)
}

#[test]
fn a_signed_registration_adds_the_chain_and_a_bad_one_changes_nothing() {
    let mut state = region_state(16);
    let good = registration(2001, 1);
    let root_before = state.root();
    let (execution, _) = commit(&mut state, 1, vec![good.to_system_tx()], &[]);
    assert_eq!(execution.registered.len(), 1);
    assert_eq!(execution.registered[0].alloc, good.spec.alloc);
    assert_ne!(state.root(), root_before);
    let entry = state.registry.get(ChainId(2001)).unwrap();
    assert_eq!(entry.owner, dev_account(1).address);
    assert_eq!(entry.registered_at, Height(1));
    assert_eq!(state.registry.len(), 2);

    // Each refused registration is marked invalid and leaves the root untouched.
    let mut forged = registration(2002, 1);
    forged.spec.owner = dev_account(2).address;
    let mut too_many = spec(2003, 1);
    too_many.alloc = vec![too_many.alloc[0].clone(); MAX_ALLOCATIONS + 1];
    let refused = [
        registration(2001, 3).to_system_tx(),     // id taken
        registration(1001, 3).to_system_tx(),     // genesis chain
        registration(REGION.0, 3).to_system_tx(), // the regionchain's own id
        registration(MAX_CHAIN_ID + 1, 3).to_system_tx(),
        forged.to_system_tx(),
        Registration::sign(too_many, &dev_account(1).secret)
            .unwrap()
            .to_system_tx(),
        alloy_primitives::Bytes::from_static(&[0xfe, 0x02, 0xc0]),
        alloy_primitives::Bytes::from_static(&[0xfe, 0x63]),
    ];
    let root = state.root();
    let (execution, _) = commit(&mut state, 2, refused.to_vec(), &[]);
    assert!(execution.registered.is_empty());
    assert_eq!(state.root(), root);
    assert_eq!(state.registry.len(), 2);

    // Reasons, checked one by one.
    assert_eq!(
        registration(2001, 3).verify(ChainId(999)),
        Err(RegistryError::WrongRegion {
            got: REGION,
            expected: ChainId(999)
        })
    );
    assert_eq!(forged.verify(REGION), Err(RegistryError::NotOwner));
    assert_eq!(
        registration(0, 1).verify(REGION),
        Err(RegistryError::BadChainId(ChainId(0)))
    );
}

/// A region registers servicechains only among its own ids — after its id, fewer than
/// `REGION_ID_SPAN` apart — so no two regions (whose spans the directory keeps apart) can
/// hold one id, and none needs another's registry to know it.
#[test]
fn a_region_registers_only_ids_in_its_own_span() {
    let mut state = region_state(16);
    let last = REGION.0 + REGION_ID_SPAN - 1;
    let (execution, _) = commit(
        &mut state,
        1,
        vec![
            registration(last, 1).to_system_tx(),
            registration(last + 1, 1).to_system_tx(),
            registration(REGION.0 - 1, 1).to_system_tx(),
        ],
        &[],
    );
    assert_eq!(execution.refusals[0], None);
    for refusal in &execution.refusals[1..] {
        assert!(
            refusal
                .as_deref()
                .is_some_and(|r| r.contains("not one of this region's servicechain ids")),
            "{:?}",
            execution.refusals
        );
    }
    assert!(state.registry.contains(ChainId(last)));
    assert!(!state.registry.contains(ChainId(last + 1)));
    assert_eq!(
        registration(last + 1, 1).verify(REGION),
        Err(RegistryError::BadChainId(ChainId(last + 1)))
    );
}

#[test]
fn two_registrations_of_one_id_in_a_block_admit_only_the_first() {
    let mut state = region_state(16);
    let (execution, _) = commit(
        &mut state,
        1,
        vec![
            registration(3001, 1).to_system_tx(),
            registration(3001, 2).to_system_tx(),
        ],
        &[],
    );
    assert_eq!(execution.registered.len(), 1);
    assert_eq!(
        state.registry.get(ChainId(3001)).unwrap().owner,
        dev_account(1).address
    );
}

#[test]
fn checkpoints_record_moved_chains_and_their_proofs_verify_against_the_region_root() {
    let mut state = region_state(4);
    let regs: Vec<_> = (0..3)
        .map(|k| registration(4000 + k, 1).to_system_tx())
        .collect();
    commit(&mut state, 1, regs, &[]);
    // Chain 4000 moves at heights 2 and 3, chain 4001 at height 3; 4002 stays idle.
    let (_, h2) = commit(&mut state, 2, vec![], &[4000]);
    let (_, h3) = commit(&mut state, 3, vec![], &[4000, 4001]);
    let (cp, _) = commit(&mut state, 4, vec![], &[]);
    let checkpoint = cp
        .checkpoint
        .clone()
        .expect("height 4 is a checkpoint height");
    let chains: Vec<u64> = checkpoint.entries.iter().map(|e| e.chain_id.0).collect();
    assert_eq!(chains, vec![4000, 4001], "idle chains are not checkpointed");
    let latest = segment_hash(&h3, ChainId(4000));
    assert_eq!(checkpoint.entries[0].segment_hash, latest);
    assert_eq!(checkpoint.entries[0].height, Height(3));

    let proof = state
        .checkpoints
        .prove(&latest)
        .expect("latest segment is provable");
    assert!(proof.verify(cp.commitment.state_root));
    // A proof is bound to the root, the entry and its position.
    assert!(!proof.verify(B256::ZERO));
    let mut wrong = proof.clone();
    wrong.entry.height = Height(2);
    assert!(!wrong.verify(cp.commitment.state_root));
    let mut wrong = proof.clone();
    wrong.index ^= 1;
    assert!(!wrong.verify(cp.commitment.state_root));
    // The superseded segment of chain 4000 (height 2) was never the latest at a checkpoint.
    assert!(state
        .checkpoints
        .prove(&segment_hash(&h2, ChainId(4000)))
        .is_none());

    // Nothing moved since: the next checkpoint height records nothing and the head stays.
    for h in 5..=8 {
        let (e, _) = commit(&mut state, h, vec![], &[]);
        assert!(e.checkpoint.is_none());
    }
    assert_eq!(state.root(), cp.commitment.state_root);
}

#[test]
fn a_hundred_thousand_registered_chains_cost_nothing_per_idle_block() {
    let chains: Vec<ChainId> = (1..=100_000u64).map(|k| ChainId(REGION.0 + k)).collect();
    let mut state = region_state(16).with_genesis_chains(&chains);
    assert_eq!(state.registry.len(), 100_000);
    // 1 000 of them move in one container; the next checkpoint lists exactly those.
    let active: Vec<u64> = (0..1000u64).map(|k| REGION.0 + 1 + k * 100).collect();
    commit(&mut state, 15, vec![], &active);
    let (cp, _) = commit(&mut state, 16, vec![], &[]);
    let checkpoint = cp.checkpoint.unwrap();
    assert_eq!(checkpoint.entries.len(), 1000);
    let listed: Vec<u64> = checkpoint.entries.iter().map(|e| e.chain_id.0).collect();
    assert_eq!(listed, active);
}

/// Over a running 4-CN cluster (QUIC, RocksDB): a registration submitted as a system
/// transaction creates the chain with its allocations on every CN, and a transaction with the
/// new chain id is then routed to it and committed; a transaction for an unregistered chain id
/// never is.
#[test]
fn a_registered_servicechain_takes_transactions_on_a_running_cluster() {
    use alloy_primitives::Address;
    use kaon::chain::genesis::Genesis;
    use kaon::crypto::tx::{Eip1559Tx, Transaction, TxKind};
    use kaon::exec::StateRead;
    use kaon::net::NetConfig;
    use kaon::pipeline::topology::{start_cluster, CnNode, CnSpec};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<SecretKey> = (0..4u8)
        .map(|i| SecretKey::from_seed(&sha256(&[b'r', i]).0).unwrap())
        .collect();
    let genesis = Genesis::new(REGION, &keys, 1, &[], U256::ZERO, 150, 100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let specs = (0..4)
        .map(|i| {
            let net = NetConfig::new("127.0.0.1:0".parse().unwrap());
            CnSpec::from_genesis(
                &genesis,
                CnIndex(i as u32),
                keys[i].clone(),
                dir.path().join(format!("cn{i}")),
                net,
            )
            .unwrap()
        })
        .collect();
    let nodes = start_cluster(rt.handle(), specs, |_| Box::new(|_| {})).unwrap();
    let wait = |what: &str, cond: &dyn Fn(&[CnNode]) -> bool| {
        let start = Instant::now();
        while !cond(&nodes) {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let balance = |n: &CnNode, chain: u64, who: Address| {
        n.shared
            .state
            .account(ChainId(chain), &who)
            .unwrap()
            .map_or(U256::ZERO, |a| a.balance)
    };
    let funded = dev_account(7);
    nodes[0]
        .submitter()
        .submit(vec![registration(5000, 1).to_system_tx()])
        .unwrap();
    wait("the registration's allocation on every CN", &|n| {
        n.iter()
            .all(|n| balance(n, 5000, funded.address) > U256::ZERO)
    });

    let transfer = |chain: u64, to: Address| {
        Transaction::Eip1559(Eip1559Tx {
            chain_id: ChainId(chain),
            nonce: 0,
            max_priority_fee_per_gas: 1_000_000_000,
            max_fee_per_gas: 3_000_000_000,
            gas_limit: 21_000,
            to: TxKind::Call(to),
            value: U256::from(12345u64),
            input: Default::default(),
            access_list: Default::default(),
        })
        .sign(&funded.secret)
        .unwrap()
        .raw()
        .clone()
    };
    let (to, stranger) = (Address::repeat_byte(0x51), Address::repeat_byte(0x52));
    nodes[1]
        .submitter()
        .submit(vec![transfer(5000, to), transfer(6000, stranger)])
        .unwrap();
    wait("the transfer on the new chain", &|n| {
        n.iter()
            .all(|n| balance(n, 5000, to) == U256::from(12345u64))
    });
    assert_eq!(balance(&nodes[0], 6000, stranger), U256::ZERO);
    // The same transfer sent again after it was included: the CN it is sent to drops it by
    // its hash (it spent its nonce) instead of recovering its sender again. (Gossip to the
    // others is best effort, so only the receiving CN is checked.)
    let seen = |n: &CnNode| {
        let (recovered, _, _, known) = n.sigverify.totals();
        (recovered, known)
    };
    wait("the receiving CN to see the first batch", &|n| {
        seen(&n[2]).0 + seen(&n[2]).1 >= 2
    });
    let before = seen(&nodes[2]);
    nodes[2]
        .submitter()
        .submit(vec![transfer(5000, to)])
        .unwrap();
    wait("the receiving CN to drop the included transfer", &|n| {
        seen(&n[2]).1 > before.1
    });
    assert_eq!(
        seen(&nodes[2]),
        (before.0, before.1 + 1),
        "dropped once, nothing recovered again"
    );
    for node in nodes {
        node.shutdown().unwrap();
    }
}
