//! The WGSL PoR kernel against the CPU rule, on whatever Vulkan device is present — in CI,
//! Mesa's lavapipe (a CPU Vulkan device installed by `.ci/run`).

use alloy_primitives::{Address, B256};
use kaon::por::gpu::{GpuMiner, DEFAULT_WORKGROUP_SIZE};
use kaon::por::{nonce_bytes, share_hash, synthetic_segment};

fn miner_for(segment: &[u8]) -> GpuMiner {
    GpuMiner::new(segment, DEFAULT_WORKGROUP_SIZE).unwrap_or_else(|e| {
        panic!("the GPU path must be tested: {e} (make test installs mesa-vulkan-drivers for lavapipe)")
    })
}

/// The `k`-th smallest rule hash over `start .. start + count` (a target admitting exactly
/// `k - 1` shares, with one hash sitting exactly on the boundary).
fn kth_hash(segment: &[u8], miner: Address, start: u64, count: u64, k: usize) -> B256 {
    let mut hashes: Vec<B256> = (start..start + count)
        .map(|c| share_hash(segment, &nonce_bytes(miner, c)))
        .collect();
    hashes.sort_unstable();
    hashes[k - 1]
}

#[test]
fn gpu_kernel_finds_exactly_the_cpu_shares_including_the_boundary_and_carries() {
    let segment = synthetic_segment(64 << 10, 9);
    let gpu = miner_for(&segment);
    eprintln!("GPU adapter: {}", gpu.adapter());
    let miner = Address::repeat_byte(0xa7);
    // Counters around 2^32 exercise the 32-bit carry of the kernel's counter arithmetic.
    for (start, count) in [
        (0u64, 3000u32),
        ((1u64 << 32) - 1500, 3000),
        (u64::MAX - 3000, 3000),
    ] {
        let target = kth_hash(&segment, miner, start, u64::from(count), 21);
        let gpu_found: Vec<u64> = gpu
            .mine(miner, &target, start, count)
            .unwrap()
            .iter()
            .map(|f| f.counter)
            .collect();
        let cpu_found: Vec<u64> =
            kaon::por::cpu::mine(&segment, miner, &target, start, u64::from(count))
                .iter()
                .map(|f| f.counter)
                .collect();
        assert_eq!(
            cpu_found.len(),
            20,
            "the boundary hash (== target) is excluded on the CPU"
        );
        assert_eq!(
            gpu_found, cpu_found,
            "GPU and CPU disagree for counters {start}..+{count}"
        );
    }
}

#[test]
fn gpu_reports_raw_matches_for_every_share_the_rule_admits() {
    // The CPU re-check filters nothing when the kernel is right: compare the raw count too.
    let segment = synthetic_segment(4096, 3);
    let gpu = miner_for(&segment);
    let miner = Address::repeat_byte(1);
    let target = kaon::por::target_for_bits(4);
    let found = gpu.mine(miner, &target, 10, 1000).unwrap();
    let expected = (10..1010)
        .filter(|&c| share_hash(&segment, &nonce_bytes(miner, c)) < target)
        .count();
    assert_eq!(found.len(), expected);
    assert!(
        expected > 20,
        "a 1/16 target over 1000 counters finds dozens"
    );
}
