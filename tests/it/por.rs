//! Proof of replication: the fast miner computes exactly the rule, finds exactly the shares
//! under the target, and the rule's edges (boundary, address binding, short logs) hold.

use alloy_primitives::{Address, B256};
use kaon::por::cpu::{mine, mine_chunked, share_hash_fast};
use kaon::por::{
    nonce_bytes, segment_of, segment_window, share_hash, strip_offset, synthetic_segment,
    target_for_bits, verify_share, PorError, STRIP_LEN,
};
use proptest::prelude::*;

#[test]
fn fast_miner_hash_equals_the_rule_for_every_segment_shape() {
    for len in [64usize, 65, 67, 68, 1000, 4096, 1 << 20] {
        let segment = synthetic_segment(len, len as u64);
        for (i, miner) in [Address::ZERO, Address::repeat_byte(0x5a)]
            .into_iter()
            .enumerate()
        {
            for counter in (0..500u64).chain([u64::MAX, 1 << 32, (1 << 32) - 1]) {
                assert_eq!(
                    share_hash_fast(&segment, miner, counter),
                    share_hash(&segment, &nonce_bytes(miner, counter)),
                    "len {len} miner {i} counter {counter}"
                );
            }
        }
    }
}

#[test]
fn mine_finds_exactly_the_shares_under_the_target() {
    let segment = synthetic_segment(1 << 16, 7);
    let miner = Address::repeat_byte(0x11);
    let target = target_for_bits(6);
    let found = mine(&segment, miner, &target, 1_000, 5_000);
    let expected: Vec<u64> = (1_000..6_000)
        .filter(|&c| share_hash(&segment, &nonce_bytes(miner, c)) < target)
        .collect();
    assert_eq!(
        found.iter().map(|f| f.counter).collect::<Vec<_>>(),
        expected
    );
    // 5 000 tries at 1/64: about 78 shares; far outside [30, 160] means a broken target.
    assert!((30..160).contains(&found.len()), "{} shares", found.len());
    for f in &found {
        assert_eq!(
            verify_share(&segment, miner, f.counter, &target),
            Ok(f.hash)
        );
    }
}

#[test]
fn the_difficulty_boundary_is_strict() {
    let segment = synthetic_segment(4096, 1);
    let miner = Address::repeat_byte(3);
    let hash = share_hash(&segment, &nonce_bytes(miner, 42));
    // hash == d is not below d.
    assert_eq!(
        verify_share(&segment, miner, 42, &hash),
        Err(PorError::AboveTarget)
    );
    let mut above = hash.0;
    let last = above.iter().rposition(|b| *b != 0xff).unwrap();
    above[last] += 1;
    above[last + 1..].fill(0);
    assert_eq!(
        verify_share(&segment, miner, 42, &B256::from(above)),
        Ok(hash)
    );
}

#[test]
fn a_share_belongs_to_its_reward_address() {
    let segment = synthetic_segment(1 << 14, 2);
    let (owner, thief) = (Address::repeat_byte(1), Address::repeat_byte(2));
    let target = target_for_bits(4);
    let share = mine(&segment, owner, &target, 0, 1_000)[0];
    let thief_hash = share_hash(&segment, &nonce_bytes(thief, share.counter));
    assert_ne!(
        thief_hash, share.hash,
        "the same counter under another address is another hash"
    );
    assert_eq!(
        verify_share(&segment, owner, share.counter, &target),
        Ok(share.hash)
    );
}

#[test]
fn segments_come_from_the_canonical_log_across_block_boundaries() {
    let blocks: Vec<Vec<u8>> = (0..40u64)
        .map(|i| synthetic_segment(100 + i as usize * 37, i))
        .collect();
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    let log: Vec<u8> = blocks.concat();
    for seed in 0..50u8 {
        let seed = B256::repeat_byte(seed);
        let segment = segment_of(&refs, seed, 1000).unwrap();
        let (offset, len) = segment_window(seed, log.len() as u64, 1000).unwrap();
        assert_eq!(len, 1000);
        assert_eq!(segment, &log[offset as usize..offset as usize + len]);
    }
    // A log shorter than the segment is used whole; shorter than a strip cannot be mined.
    assert_eq!(
        segment_of(&refs[..1], B256::ZERO, 1 << 20).unwrap(),
        blocks[0]
    );
    assert_eq!(
        segment_of(&[&[0u8; 10][..]], B256::ZERO, 1000),
        Err(PorError::LogTooShort(10))
    );
    let a = segment_window(B256::repeat_byte(1), 1 << 30, 1 << 20).unwrap();
    let b = segment_window(B256::repeat_byte(2), 1 << 30, 1 << 20).unwrap();
    assert_ne!(a.0, b.0, "the seed moves the segment");
}

#[test]
fn every_chunk_size_finds_the_same_shares() {
    let segment = synthetic_segment(1 << 14, 11);
    let miner = Address::repeat_byte(0x21);
    let target = target_for_bits(5);
    let expected = mine(&segment, miner, &target, 77, 20_000);
    assert!(!expected.is_empty());
    for chunk in kaon::por::tune::CHUNK_CANDIDATES
        .into_iter()
        .chain([0, 1, 7, 19_999, 1 << 20])
    {
        assert_eq!(
            mine_chunked(&segment, miner, &target, 77, 20_000, chunk),
            expected,
            "chunk {chunk}"
        );
    }
}

#[test]
fn cpu_autotune_picks_a_candidate_and_writes_a_loadable_profile() {
    use kaon::por::tune::{autotune_cpu, DeviceKind, MiningProfile, TuneBudget, CHUNK_CANDIDATES};
    use std::time::Duration;
    let segment = synthetic_segment(1 << 16, 4);
    // A spent budget still measures the default once; a short one tries every candidate.
    let budgets = [
        (Duration::ZERO, 1),
        (
            Duration::from_secs(30),
            CHUNK_CANDIDATES.len() * kaon::por::tune::CPU_ROUNDS,
        ),
    ];
    for (total, trials) in budgets {
        let budget = TuneBudget {
            total,
            trial: Duration::from_millis(10),
        };
        let tuned = autotune_cpu(&segment, budget);
        assert_eq!(tuned.trials.len(), trials);
        let profile = tuned.profile;
        assert_eq!(
            (profile.device, profile.class.as_str()),
            (DeviceKind::Cpu, "cpu")
        );
        assert!(CHUNK_CANDIDATES.contains(&profile.chunk()), "{profile:?}");
        assert_eq!(profile.threads, Some(rayon::current_num_threads()));
        assert_eq!(profile.segment_len, segment.len());
        assert!(profile.hashes_per_sec.is_some_and(|r| r > 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaon/mine-cpu.toml");
        profile.save(&path).unwrap();
        assert_eq!(MiningProfile::load(&path).unwrap(), profile);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn strips_are_word_aligned_and_inside_the_segment(len in STRIP_LEN..100_000usize, c in any::<u64>(), a in any::<[u8; 20]>()) {
        let at = strip_offset(&nonce_bytes(Address::from(a), c), len);
        prop_assert_eq!(at % 4, 0);
        prop_assert!(at + STRIP_LEN <= len);
    }
}
