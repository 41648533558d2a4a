//! Proof of Participation on the regionchain: PoR shares verified in segment 0 (seed height,
//! expiry, duplicates, difficulty), epoch payouts in proportion to shares with a lock-up, and
//! retargeting — executed through `RegionState` exactly as CNs and RNs run segment 0.

use alloy_primitives::{Address, Bytes, B256, U256};
use kaon::consensus::selection::CnSet;
use kaon::crypto::bls::SecretKey;
use kaon::crypto::hash::sha256;
use kaon::node::pop::{
    PopParams, SegmentSource, ShareSubmission, EPOCH_LEN, LOCKUP_EPOCHS, REWARD_PER_EPOCH,
    SHARE_EXPIRY,
};
use kaon::node::region::{Committed, RegionExecution, RegionState};
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

fn state(target_shares_per_epoch: u64) -> RegionState {
    let keys = (0..4u8)
        .map(|i| SecretKey::from_seed(&sha256(&[i]).0).unwrap().public_key())
        .collect();
    RegionState::new(REGION, Arc::new(CnSet::new(keys).unwrap()), 16)
        .with_pop(PopParams {
            initial_bits: BITS,
            target_shares_per_epoch,
            reserve: REWARD_PER_EPOCH * U256::from(3u64),
        })
        .with_segments(Arc::new(FakeLog))
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

fn shares(miner: Address, h: u64, cs: &[u64]) -> Vec<Bytes> {
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
    let a = Address::repeat_byte(0xa1);
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
    let thief = Address::repeat_byte(0x77);
    let stolen: Vec<u64> = counters(a, 1, 50, true)
        .into_iter()
        .filter(|c| !counters(thief, 1, 400, true).contains(c))
        .take(1)
        .collect();
    bad.extend(shares(thief, 1, &stolen));
    bad.push(Bytes::from_static(&[0xfe, 0x03, 0x01]));
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
    let (a, b) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xb2));
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
