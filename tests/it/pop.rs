//! Proof of Participation on the regionchain: PoR shares verified in segment 0 (seed height,
//! expiry, duplicates, difficulty), epoch payouts in proportion to shares with a lock-up, and
//! retargeting — executed through `RegionState` exactly as CNs and RNs run segment 0 — and
//! PoSC: RN registrations, probe selection, penalties by a quorum of CN attestations, slashing.

use alloy_primitives::{Address, Bytes, B256, U256};
use kaon::chain::pop::{
    PopParams, SegmentSource, ShareSubmission, EPOCH_LEN, LOCKUP_EPOCHS, REWARD_PER_EPOCH,
    SHARE_EXPIRY,
};
use kaon::chain::posc::{
    rank, Penalty, PoscParams, ProbeAttestation, RnRegistration, RnSpec, PENALTY_WINDOW,
    PROBE_GRACE,
};
use kaon::chain::region::{Committed, RegionExecution, RegionState};
use kaon::chain::withdrawal::{Withdrawal, WithdrawalSpec};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::sha256;
use kaon::node::loadgen::{dev_account, DevAccount};
use kaon::por::{synthetic_segment, verify_share};
use kaon::types::{BlockHash, ChainId, Height, Segment};
use std::sync::Arc;

const REGION: ChainId = ChainId(1000);
const BITS: u32 = 3;

/// `C(h)` of a fake log: a synthetic segment per height (the real source reads the block log).
#[derive(Debug)]
struct FakeLog;

impl SegmentSource for FakeLog {
    fn segment(&self, height: Height) -> Result<Arc<Vec<u8>>, String> {
        Ok(Arc::new(synthetic_segment(4096, height.0)))
    }
}

/// The CN set's secret keys (4 CNs: a quorum is 3).
fn cn_keys() -> Vec<SecretKey> {
    (0..4u8)
        .map(|i| SecretKey::from_seed(&sha256(&[i]).0).unwrap())
        .collect()
}

fn state(target_shares_per_epoch: u64) -> RegionState {
    let keys = cn_keys().iter().map(SecretKey::public_key).collect();
    RegionState::new(REGION, Arc::new(CnSet::new(keys).unwrap()), 16)
        .with_pop(PopParams {
            initial_bits: BITS,
            target_shares_per_epoch,
            reserve: REWARD_PER_EPOCH * U256::from(3u64),
            posc: PoscParams {
                probes_per_round: 2,
                penalty_limit: 1,
                probe_deadline_ms: 500,
            },
        })
        .with_segments(Arc::new(FakeLog))
}

/// RN `i`'s reward account.
fn rn(i: usize) -> DevAccount {
    dev_account(100 + i)
}

/// RN `i`'s BLS node key.
fn node_secret(i: usize) -> SecretKey {
    SecretKey::from_seed(&sha256(&[0xee, i as u8]).0).unwrap()
}

/// RN `i`'s registration spec, with its node key proven.
fn rn_spec(i: usize, sequence: u64) -> RnSpec {
    RnSpec {
        region: REGION,
        reward: rn(i).address,
        endpoint: format!("127.0.0.1:{}", 7000 + i),
        node_key: node_secret(i).public_key().to_bytes(),
        sequence,
        node_proof: Default::default(),
    }
    .prove_node_key(&node_secret(i))
}

fn registration(i: usize, sequence: u64) -> Bytes {
    RnRegistration::sign(rn_spec(i, sequence), &rn(i).secret)
        .unwrap()
        .to_system_tx()
}

fn mix(height: u64) -> B256 {
    sha256(&height.to_be_bytes())
}

fn commit(state: &mut RegionState, height: u64, txs: Vec<Bytes>) -> RegionExecution {
    let execution = state.execute(
        Height(height),
        &Segment {
            chain_id: REGION,
            txs,
        },
    );
    state.apply(
        &execution,
        &Committed {
            height: Height(height),
            hash: BlockHash(B256::with_last_byte(height as u8)),
            mix: mix(height),
            servicechains: Vec::new(),
            next_cn_set: &[],
        },
    );
    assert_eq!(state.root(), execution.commitment.state_root);
    execution
}

/// The first `n` counters from `from` whose share for seed height `h` meets `bits`, or misses.
fn counters(miner: Address, h: u64, n: usize, valid: bool) -> Vec<u64> {
    let segment = synthetic_segment(4096, h);
    let target = kaon::por::target_for_bits(BITS);
    (0u64..)
        .filter(|c| verify_share(&segment, miner, *c, &target).is_ok() == valid)
        .take(n)
        .collect()
}

/// Share transactions of `miner` for seed height `h` with counters `cs`.
pub(crate) fn shares(miner: Address, h: u64, cs: &[u64]) -> Vec<Bytes> {
    cs.iter()
        .map(|&counter| {
            ShareSubmission {
                height: Height(h),
                miner,
                counter,
            }
            .to_system_tx()
        })
        .collect()
}

#[test]
fn valid_shares_count_and_bad_ones_change_nothing() {
    let mut s = state(64);
    let a = rn(0).address;
    let thief = rn(1).address;
    commit(&mut s, 1, vec![registration(0, 1), registration(1, 1)]);
    let good = counters(a, 1, 2, true);
    let e = commit(&mut s, 2, shares(a, 1, &good));
    assert_eq!(e.pop.shares.len(), 2);
    assert_eq!(s.pop.rns[&a].shares, 2);

    let root = s.root();
    let mut bad = Vec::new();
    bad.extend(shares(a, 1, &good[..1])); // duplicate of an accepted share
    bad.extend(shares(a, 3, &counters(a, 3, 1, true))); // seed height = container
    bad.extend(shares(a, 1, &counters(a, 1, 1, false))); // above the target
                                                         // Someone else claiming a's share: the hash covers the address, so it fails the target
                                                         // (or is a share of its own right — filter to a counter that is valid only for `a`).
    let stolen: Vec<u64> = counters(a, 1, 50, true)
        .into_iter()
        .filter(|c| !counters(thief, 1, 400, true).contains(c))
        .take(1)
        .collect();
    bad.extend(shares(thief, 1, &stolen));
    bad.push(Bytes::from_static(&[0xfe, 0x03, 0x01]));
    // A share for an address no RN registered.
    let stranger = Address::repeat_byte(0x5a);
    bad.extend(shares(stranger, 1, &counters(stranger, 1, 1, true)));
    let e = commit(&mut s, 3, bad);
    assert!(e.pop.shares.is_empty(), "{:?}", e.pop.shares);
    assert_eq!(s.root(), root);
    assert_eq!(s.pop.rns[&a].shares, 2);

    // Two copies of one new share in a container: the first counts.
    let fresh = counters(a, 2, 3, true)[2];
    let e = commit(&mut s, 4, shares(a, 2, &[fresh, fresh]));
    assert_eq!(e.pop.shares.len(), 1);

    // Expired: seed height more than SHARE_EXPIRY containers back.
    let h = 5 + SHARE_EXPIRY;
    let e = commit(&mut s, h, shares(a, 4, &counters(a, 4, 1, true)));
    assert!(e.pop.shares.is_empty());
    let e = commit(&mut s, h + 1, shares(a, h, &counters(a, h, 1, true)));
    assert_eq!(e.pop.shares.len(), 1, "a share of a recent height is fine");
}

#[test]
fn epochs_pay_in_proportion_then_unlock_and_retarget() {
    let mut s = state(1);
    let (a, b) = (rn(0).address, rn(1).address);
    commit(&mut s, 1, vec![registration(0, 1), registration(1, 1)]);
    let mut txs = shares(a, 1, &counters(a, 1, 3, true));
    txs.extend(shares(b, 1, &counters(b, 1, 1, true)));
    commit(&mut s, 2, txs);
    for h in 3..EPOCH_LEN {
        commit(&mut s, h, Vec::new());
    }
    let bits_before = s.pop.bits;
    commit(&mut s, EPOCH_LEN, Vec::new());
    let quarter = REWARD_PER_EPOCH / U256::from(4u64);
    assert_eq!(s.pop.rns[&a].locked_total(), quarter * U256::from(3u64));
    assert_eq!(s.pop.rns[&b].locked_total(), quarter);
    assert_eq!(s.pop.rns[&a].unlocked, U256::ZERO);
    assert_eq!(s.pop.reserve, REWARD_PER_EPOCH * U256::from(2u64));
    assert_eq!(
        s.pop.bits,
        bits_before + 1,
        "4 shares > 2 × target 1: harder"
    );

    // Locked until LOCKUP_EPOCHS epochs later, then withdrawable.
    let unlock = EPOCH_LEN * (1 + LOCKUP_EPOCHS);
    for h in EPOCH_LEN + 1..unlock {
        commit(&mut s, h, Vec::new());
    }
    assert_eq!(s.pop.rns[&a].unlocked, U256::ZERO);
    commit(&mut s, unlock, Vec::new());
    assert_eq!(s.pop.rns[&a].unlocked, quarter * U256::from(3u64));
    assert_eq!(s.pop.rns[&a].locked_total(), U256::ZERO);
    assert!(
        s.pop.bits < bits_before + 1,
        "empty epochs make it easier again"
    );

    // Slashing returns everything accumulated to the reserve.
    let reserve = s.pop.reserve;
    assert_eq!(s.pop.slash(&a), quarter * U256::from(3u64));
    assert_eq!(s.pop.reserve, reserve + quarter * U256::from(3u64));
    assert_eq!(s.pop.rns[&a].unlocked, U256::ZERO);
}

#[test]
fn rn_registrations_are_signed_by_the_reward_key_and_sequenced() {
    let mut s = state(64);
    let root = s.root();
    let sign = |spec: RnSpec, i: usize| {
        RnRegistration::sign(spec, &rn(i).secret)
            .unwrap()
            .to_system_tx()
    };
    let bad = vec![
        sign(
            RnSpec {
                region: ChainId(7),
                ..rn_spec(0, 1)
            },
            0,
        ),
        sign(
            RnSpec {
                endpoint: "not an address".into(),
                ..rn_spec(0, 1)
            },
            0,
        ),
        sign(
            RnSpec {
                endpoint: format!("127.0.0.1:1{}", "0".repeat(80)),
                ..rn_spec(0, 1)
            },
            0,
        ),
        sign(
            RnSpec {
                node_key: kaon::crypto::bls::PublicKeyBytes([0u8; 48]),
                ..rn_spec(0, 1)
            },
            0,
        ),
        sign(rn_spec(0, 1), 1), // signed by another key than the reward address's
        Bytes::from_static(&[0xfe, 0x04, 0xc0]),
    ];
    let e = commit(&mut s, 1, bad);
    assert!(e.pop.registrations.is_empty(), "{:?}", e.pop.registrations);
    assert!(s.pop.posc.rns.is_empty());
    assert_eq!(s.root(), root, "refused registrations change nothing");

    commit(&mut s, 2, vec![registration(0, 1)]);
    let entry = s.pop.posc.rns[&rn(0).address].clone();
    assert_eq!(entry.endpoint.to_string(), "127.0.0.1:7000");
    assert_eq!((entry.sequence, entry.registered_at), (1, Height(2)));

    // A replay, or an older sequence, is refused; a newer one moves the endpoint.
    let root = s.root();
    let e = commit(&mut s, 3, vec![registration(0, 1)]);
    assert!(e.pop.registrations.is_empty());
    assert_eq!(s.root(), root);
    let moved = RnSpec {
        endpoint: "127.0.0.1:9999".into(),
        ..rn_spec(0, 2)
    }
    .prove_node_key(&node_secret(0));
    // RN 1 cannot claim RN 0's node key: without the secret its proof fails, and with it
    // (one operator, two reward addresses) the key is taken.
    let stolen = RnSpec {
        node_key: node_secret(0).public_key().to_bytes(),
        ..rn_spec(1, 1)
    };
    let shared = rn_spec(1, 1).prove_node_key(&node_secret(0));
    let e = commit(&mut s, 4, vec![sign(stolen, 1), sign(shared, 1)]);
    assert!(e.pop.registrations.is_empty(), "{:?}", e.refusals);
    assert!(e.refusals.iter().all(Option::is_some));
    assert!(e.refusals[1]
        .as_deref()
        .is_some_and(|r| r.contains("already registered")));
    commit(&mut s, 5, vec![sign(moved, 0)]);
    let entry = &s.pop.posc.rns[&rn(0).address];
    assert_eq!(
        (entry.endpoint.to_string().as_str(), entry.sequence),
        ("127.0.0.1:9999", 2)
    );
    assert_eq!(
        entry.registered_at,
        Height(2),
        "re-registering buys no new grace from probes"
    );
}

/// CN `signers`' attestations of `rn` failing round `round`, folded.
fn penalty(round: u64, rn: Address, signers: &[usize]) -> Penalty {
    let keys = cn_keys();
    let attestations: Vec<ProbeAttestation> = signers
        .iter()
        .map(|&i| {
            ProbeAttestation::sign(
                REGION,
                Height(round),
                rn,
                kaon::types::CnIndex(i as u32),
                &keys[i],
            )
        })
        .collect();
    let mut bitmap = kaon::types::SignerBitmap::with_members(keys.len());
    for &i in signers {
        bitmap.set(i);
    }
    let sigs: Vec<_> = attestations
        .iter()
        .map(|a| kaon::crypto::bls::Signature::try_from(&a.signature).unwrap())
        .collect();
    Penalty {
        round: Height(round),
        rn,
        signers: bitmap,
        aggregate: kaon::crypto::bls::aggregate_signatures(&sigs)
            .unwrap()
            .to_bytes(),
    }
}

#[test]
fn penalties_need_the_selection_a_quorum_and_the_window_and_slash_beyond_the_limit() {
    let mut s = state(64);
    let (a, b) = (rn(0).address, rn(1).address);
    commit(&mut s, 1, vec![registration(0, 1), registration(1, 1)]);
    // Both earn in the first epoch.
    let mut txs = shares(a, 1, &counters(a, 1, 2, true));
    txs.extend(shares(b, 1, &counters(b, 1, 2, true)));
    commit(&mut s, 2, txs);
    let first_probe = 1 + PROBE_GRACE;
    for h in 3..first_probe {
        commit(&mut s, h, Vec::new());
        assert!(
            s.pop.posc.selected(Height(h)).is_empty(),
            "no probe during the grace"
        );
    }
    for h in first_probe..=EPOCH_LEN + 2 {
        commit(&mut s, h, Vec::new());
    }
    let half = REWARD_PER_EPOCH / U256::from(2u64);
    assert_eq!(s.pop.rns[&a].locked_total(), half);

    // The selection is the public ranking: both RNs (2 per round), lowest rank first.
    let round = EPOCH_LEN + 1;
    let mut expected = vec![a, b];
    expected.sort_by_key(|x| rank(mix(round), Height(round), x));
    assert_eq!(s.pop.posc.selected(Height(round)), expected.as_slice());

    // Forged or unfounded penalties are refused and change nothing.
    let here = EPOCH_LEN + 3;
    let mut forged = penalty(round, a, &[0, 1, 2]);
    forged.aggregate = penalty(round, b, &[0, 1, 2]).aggregate; // signatures over another RN
    let mut wrong_bitmap = penalty(round, a, &[0, 1, 2]);
    wrong_bitmap.signers = kaon::types::SignerBitmap::with_members(9);
    let stranger = Address::repeat_byte(0x5a);
    let refused = [
        penalty(round, a, &[0, 1]), // 2 of 4 is short of the quorum of 3
        forged,
        wrong_bitmap,
        penalty(round, stranger, &[0, 1, 2]), // not selected at that round
        penalty(here, a, &[0, 1, 2]),         // not before the container
        penalty(2, a, &[0, 1, 2]),            // during the grace: nobody was selected
    ];
    let root = s.root();
    let e = commit(
        &mut s,
        here,
        refused.iter().map(Penalty::to_system_tx).collect(),
    );
    assert!(e.pop.penalties.is_empty(), "{:?}", e.pop.penalties);
    assert_eq!(s.root(), root);
    assert_eq!(s.pop.rns[&a].penalties, 0);

    // A quorum's penalty counts once; the same claim again is refused.
    let e = commit(
        &mut s,
        here + 1,
        vec![
            penalty(round, a, &[0, 1, 3]).to_system_tx(),
            penalty(round, a, &[0, 1, 2]).to_system_tx(),
        ],
    );
    assert_eq!(e.pop.penalties.len(), 1);
    assert_eq!(s.pop.rns[&a].penalties, 1);
    let e = commit(
        &mut s,
        here + 2,
        vec![penalty(round, a, &[1, 2, 3]).to_system_tx()],
    );
    assert!(e.pop.penalties.is_empty());

    // Past the window a round can no longer be penalized.
    let late = round + 1 + PENALTY_WINDOW + 1;
    for h in here + 3..late {
        commit(&mut s, h, Vec::new());
    }
    let e = commit(
        &mut s,
        late,
        vec![penalty(round + 1, a, &[0, 1, 2]).to_system_tx()],
    );
    assert!(e.pop.penalties.is_empty(), "expired");
    assert_eq!(s.pop.rns[&a].penalties, 1);

    // One more than the limit (1) slashes everything accumulated and resets the count; the
    // other RN keeps its rewards.
    let recent = late - 1;
    let (locked, reserve) = (
        s.pop.rns[&a].locked_total() + s.pop.rns[&a].unlocked,
        s.pop.reserve,
    );
    assert!(locked > U256::ZERO);
    commit(
        &mut s,
        late + 1,
        vec![penalty(recent, a, &[0, 2, 3]).to_system_tx()],
    );
    assert_eq!(s.pop.rns[&a].penalties, 0, "reset after slashing");
    assert_eq!(
        s.pop.rns[&a].locked_total() + s.pop.rns[&a].unlocked,
        U256::ZERO
    );
    assert_eq!(s.pop.reserve, reserve + locked);
    assert_eq!(s.pop.rns[&b].locked_total() + s.pop.rns[&b].unlocked, half);
    assert_eq!(s.pop.rns[&b].penalties, 0);
}

#[test]
fn proposers_fold_a_quorum_of_attestations_and_a_byzantine_minority_penalizes_nobody() {
    let mut s = state(64);
    let a = rn(0).address;
    commit(&mut s, 1, vec![registration(0, 1)]);
    let round = 1 + PROBE_GRACE;
    for h in 2..=round {
        commit(&mut s, h, Vec::new());
    }
    assert_eq!(s.pop.posc.selected(Height(round)), &[a]);
    let keys = cn_keys();
    let attest = |i: usize, key: &SecretKey| {
        ProbeAttestation::sign(
            REGION,
            Height(round),
            a,
            kaon::types::CnIndex(i as u32),
            key,
        )
    };
    let container = Height(round + 1);
    // One Byzantine CN (f = 1), even repeating itself, is no quorum.
    let minority = vec![attest(3, &keys[3]), attest(3, &keys[3])];
    assert!(s
        .pop
        .posc
        .assemble(&minority, container, REGION, &s.set)
        .is_empty());
    // Three honest attestations and a forged one (CN 2's index, CN 3's key): the forgery is
    // dropped and the honest three still make a quorum.
    let mixed = vec![
        attest(0, &keys[0]),
        attest(1, &keys[1]),
        attest(2, &keys[3]),
        attest(3, &keys[3]),
    ];
    let penalties = s.pop.posc.assemble(&mixed, container, REGION, &s.set);
    assert_eq!(penalties.len(), 1);
    assert_eq!(
        penalties[0].signers.signers().collect::<Vec<_>>(),
        vec![0, 1, 3]
    );
    // A bare attestation is not a transaction.
    let root = s.root();
    let e = commit(&mut s, round + 1, vec![attest(0, &keys[0]).to_system_tx()]);
    assert!(e.pop.penalties.is_empty());
    assert_eq!(s.root(), root);
    let e = commit(&mut s, round + 2, vec![penalties[0].to_system_tx()]);
    assert_eq!(e.pop.penalties.len(), 1);
    assert_eq!(s.pop.rns[&a].penalties, 1);
}

const SERVICECHAIN: ChainId = ChainId(1001);

fn withdrawal(i: usize, amount: U256, nonce: u64) -> WithdrawalSpec {
    WithdrawalSpec {
        region: REGION,
        rn: rn(i).address,
        amount,
        chain: SERVICECHAIN,
        to: Address::repeat_byte(0x70 + i as u8),
        nonce,
    }
}

fn signed(spec: WithdrawalSpec, signer: usize) -> Bytes {
    Withdrawal::sign(spec, &rn(signer).secret)
        .unwrap()
        .to_system_tx()
}

#[test]
fn unlocked_rewards_are_withdrawn_once_to_a_servicechain_account() {
    let mut s = state(64).with_genesis_chains(&[SERVICECHAIN]);
    let a = rn(0).address;
    commit(&mut s, 1, vec![registration(0, 1)]);
    commit(&mut s, 2, shares(a, 1, &counters(a, 1, 1, true)));
    // Locked: nothing to withdraw yet.
    for h in 3..=EPOCH_LEN {
        commit(&mut s, h, Vec::new());
    }
    let paid = s.pop.rns[&a].locked_total();
    assert_eq!(paid, REWARD_PER_EPOCH);
    let e = commit(
        &mut s,
        EPOCH_LEN + 1,
        vec![signed(withdrawal(0, U256::from(1u64), 0), 0)],
    );
    assert!(
        e.pop.withdrawals.is_empty(),
        "locked rewards cannot be withdrawn"
    );
    let unlock = EPOCH_LEN * (1 + LOCKUP_EPOCHS);
    for h in EPOCH_LEN + 2..=unlock {
        commit(&mut s, h, Vec::new());
    }
    assert_eq!(s.pop.rns[&a].unlocked, paid);

    let third = paid / U256::from(3u64);
    let root = s.root();
    let refused = vec![
        signed(
            WithdrawalSpec {
                region: ChainId(9),
                ..withdrawal(0, third, 0)
            },
            0,
        ),
        signed(withdrawal(0, third, 0), 1), // not the reward key
        signed(
            WithdrawalSpec {
                chain: ChainId(4242),
                ..withdrawal(0, third, 0)
            },
            0,
        ),
        signed(
            WithdrawalSpec {
                chain: REGION,
                ..withdrawal(0, third, 0)
            },
            0,
        ),
        signed(withdrawal(0, U256::ZERO, 0), 0),
        signed(withdrawal(0, paid + U256::from(1u64), 0), 0),
        signed(withdrawal(0, third, 1), 0), // nonce ahead
        Bytes::from_static(&[0xfe, 0x07, 0xc1, 0x80]),
    ];
    let e = commit(&mut s, unlock + 1, refused);
    assert!(e.pop.withdrawals.is_empty(), "{:?}", e.pop.withdrawals);
    assert_eq!(s.root(), root);
    assert!(s.pop.credits.is_empty());

    // Two in one container, nonces 0 and 1; a third would overdraw.
    let e = commit(
        &mut s,
        unlock + 2,
        vec![
            signed(withdrawal(0, third, 0), 0),
            signed(withdrawal(0, third, 1), 0),
            signed(withdrawal(0, paid - third, 2), 0),
        ],
    );
    assert_eq!(e.pop.withdrawals.len(), 2);
    let account = &s.pop.rns[&a];
    assert_eq!(account.unlocked, paid - third - third);
    assert_eq!((account.withdrawn, account.withdrawals), (third + third, 2));
    let to = Address::repeat_byte(0x70);
    assert_eq!(s.pop.credits[&SERVICECHAIN], vec![(to, third), (to, third)]);
    // A replayed withdrawal is refused by its nonce.
    let e = commit(&mut s, unlock + 3, vec![signed(withdrawal(0, third, 0), 0)]);
    assert!(e.pop.withdrawals.is_empty());

    // The container that carries a segment of the servicechain applied the credits.
    let execution = s.execute(
        Height(unlock + 4),
        &Segment {
            chain_id: REGION,
            txs: Vec::new(),
        },
    );
    s.apply(
        &execution,
        &Committed {
            height: Height(unlock + 4),
            hash: BlockHash(B256::with_last_byte(4)),
            mix: mix(unlock + 4),
            servicechains: vec![SERVICECHAIN],
            next_cn_set: &[],
        },
    );
    assert!(s.pop.credits.is_empty());
}

#[test]
fn a_withdrawal_and_a_slashing_in_one_container_pay_out_once() {
    let mut s = state(64);
    let a = rn(0).address;
    let unlocked = U256::from(1_000u64);
    let account = s.pop.rns.entry(a).or_default();
    account.unlocked = unlocked;
    account.penalties = 1; // at the limit: the next penalty slashes
    let reserve = s.pop.reserve;
    let w = Withdrawal::sign(withdrawal(0, unlocked, 0), &rn(0).secret).unwrap();
    let penalty = Penalty {
        round: Height(1),
        rn: a,
        signers: kaon::types::SignerBitmap::with_members(4),
        aggregate: Default::default(),
    };
    let delta = kaon::chain::pop::PopDelta {
        withdrawals: vec![w],
        penalties: vec![penalty],
        ..Default::default()
    };
    s.pop.apply(Height(2), mix(2), &[], &delta);
    let credited: U256 = s.pop.credits[&SERVICECHAIN].iter().map(|(_, v)| *v).sum();
    assert_eq!(credited, unlocked, "the withdrawal is paid");
    assert_eq!(s.pop.rns[&a].penalties, 0, "slashed and reset");
    assert_eq!(
        s.pop.reserve, reserve,
        "the slashing found nothing left: no coin is paid twice"
    );
}
