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

#[test]
fn gpu_autotune_picks_candidates_and_the_tuned_miner_equals_the_cpu_rule() {
    use kaon::por::tune::{self, autotune_gpu, DeviceKind, MiningProfile, TuneBudget};
    let segment = synthetic_segment(kaon::por::DEFAULT_SEGMENT_LEN, 12);
    let budget = TuneBudget {
        total: std::time::Duration::from_millis(1500),
        trial: std::time::Duration::from_millis(50),
    };
    let tuned = autotune_gpu(&segment, budget).unwrap_or_else(|e| {
        panic!("the GPU path must be tested: {e} (make test installs mesa-vulkan-drivers for lavapipe)")
    });
    for trial in &tuned.trials {
        eprintln!("  {trial}");
    }
    let profile = tuned.profile;
    assert_eq!(profile.device, DeviceKind::Gpu);
    assert_eq!(
        profile.class,
        tune::device_class(DeviceKind::Gpu, &profile.adapter)
    );
    assert!(
        tune::WORKGROUP_CANDIDATES.contains(&profile.workgroup_size()),
        "{profile:?}"
    );
    assert!(
        tune::BATCH_CANDIDATES.contains(&profile.batch()),
        "{profile:?}"
    );
    assert!(tuned.trials.len() <= tune::MAX_GPU_TRIALS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("mine-{}.toml", profile.class));
    profile.save(&path).unwrap();
    let profile = MiningProfile::load(&path).unwrap();

    let gpu = GpuMiner::new(&segment, profile.workgroup_size()).unwrap();
    let miner = Address::repeat_byte(0x3c);
    // About 256 shares per 2^18 counters: many, well under the share buffer.
    let target = kaon::por::target_for_bits(10);
    let count = profile.batch().min(1 << 18);
    let start = (1u64 << 32) - u64::from(count / 2);
    let gpu_found = gpu.mine(miner, &target, start, count).unwrap();
    let cpu_found = kaon::por::cpu::mine(&segment, miner, &target, start, u64::from(count));
    assert!(cpu_found.len() > 100, "{} shares", cpu_found.len());
    assert_eq!(gpu_found, cpu_found);
}

#[test]
fn gpu_knobs_outside_the_adapter_limits_are_errors_not_panics() {
    use kaon::por::gpu::GpuError;
    let segment = synthetic_segment(4096, 5);
    let mut gpu = miner_for(&segment);
    let max = gpu.max_workgroup_size();
    for size in [0, max + 1] {
        assert!(
            matches!(
                gpu.set_workgroup_size(size),
                Err(GpuError::WorkgroupSize { .. })
            ),
            "workgroup size {size}"
        );
        assert!(matches!(
            GpuMiner::new(&segment, size),
            Err(GpuError::WorkgroupSize { .. })
        ));
    }
    gpu.set_workgroup_size(64).unwrap();
    assert_eq!(gpu.workgroup_size(), 64);
    let target = kaon::por::target_for_bits(4);
    let miner = Address::repeat_byte(1);
    assert_eq!(
        gpu.mine(miner, &target, 10, 1000).unwrap().len(),
        (10..1010)
            .filter(|&c| share_hash(&segment, &nonce_bytes(miner, c)) < target)
            .count(),
        "the recompiled kernel still follows the rule"
    );
    if let Some(over) = gpu.max_batch().checked_add(1) {
        assert!(matches!(
            gpu.mine(miner, &target, 0, over),
            Err(GpuError::Batch { .. })
        ));
    }
}
