//! The CPU miner: the PoR rule computed with raw SHA-256 compressions, three per nonce — one
//! for `sha256(x)` (which picks the strip), two for `sha256(strip ‖ x)` — hand-padded, no
//! digest buffering; two counters at a time, their compressions interleaved on SHA-NI
//! (`crypto::hash::raw::compress_pair`: one counter's chain of compressions alone leaves the
//! SHA unit waiting on each round); nonce ranges split over rayon.

use super::{meets, nonce_bytes, strip_positions, NONCE_LEN, STRIP_LEN};
use crate::crypto::hash::raw::{compress, compress_pair, to_bytes, H0};
use alloy_primitives::{Address, B256};
use rayon::prelude::*;
/// SHA-256 compressions per nonce.
pub const COMPRESSIONS_PER_NONCE: u64 = 3;
/// Counters one rayon task tries (the unit of work stealing); a tuning profile may pick
/// another (`tune::CHUNK_CANDIDATES`). At ~7 M H/s per core a task lasts ~2 ms: long enough
/// that scheduling costs nothing, short enough to balance the cores.
pub const DEFAULT_CHUNK: u64 = 1 << 14;

/// A found share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub counter: u64,
    pub hash: B256,
}

/// Precomputed padding blocks for one miner address.
struct Pads {
    /// `x ‖ 0x80 ‖ 0… ‖ bitlen(28 bytes)`: the single block of `sha256(x)`.
    nonce_block: [u8; 64],
    /// `x ‖ 0x80 ‖ 0… ‖ bitlen(92 bytes)`: the second block of `sha256(strip ‖ x)`.
    share_block: [u8; 64],
}

impl Pads {
    fn new(miner: Address) -> Self {
        let x = nonce_bytes(miner, 0);
        let mut nonce_block = [0u8; 64];
        nonce_block[..NONCE_LEN].copy_from_slice(&x);
        nonce_block[NONCE_LEN] = 0x80;
        nonce_block[56..].copy_from_slice(&((NONCE_LEN as u64) * 8).to_be_bytes());
        let mut share_block = nonce_block;
        share_block[56..].copy_from_slice(&(((STRIP_LEN + NONCE_LEN) as u64) * 8).to_be_bytes());
        Self {
            nonce_block,
            share_block,
        }
    }

    fn set_counter(&mut self, counter: u64) {
        let c = counter.to_be_bytes();
        self.nonce_block[20..28].copy_from_slice(&c);
        self.share_block[20..28].copy_from_slice(&c);
    }
}

/// The share hash for one counter, computed the fast way (tested equal to
/// [`super::share_hash`]).
fn hash_counter(segment: &[u8], positions: u64, pads: &mut Pads, counter: u64) -> B256 {
    pads.set_counter(counter);
    let mut pick = H0;
    compress(&mut pick, &pads.nonce_block);
    let at = super::strip_index(u64::from(pick[0]) << 32 | u64::from(pick[1]), positions) * 4;
    let mut state = H0;
    // Invariant: `at + STRIP_LEN <= segment.len()` by the choice of `positions`.
    let strip: &[u8; 64] = segment[at..at + STRIP_LEN]
        .try_into()
        .expect("strip inside segment");
    compress(&mut state, strip);
    compress(&mut state, &pads.share_block);
    to_bytes(&state)
}

/// [`hash_counter`] for two counters at once, each step of both interleaved.
fn hash_counter_pair(
    segment: &[u8],
    positions: u64,
    [a, b]: &mut [Pads; 2],
    counters: [u64; 2],
) -> [B256; 2] {
    a.set_counter(counters[0]);
    b.set_counter(counters[1]);
    let (mut a_pick, mut b_pick) = (H0, H0);
    compress_pair([&mut a_pick, &mut b_pick], [&a.nonce_block, &b.nonce_block]);
    let strip = |pick: &[u32; 8]| -> &[u8; 64] {
        let at = super::strip_index(u64::from(pick[0]) << 32 | u64::from(pick[1]), positions) * 4;
        // Invariant: `at + STRIP_LEN <= segment.len()` by the choice of `positions`.
        segment[at..at + STRIP_LEN]
            .try_into()
            .expect("strip inside segment")
    };
    let (mut a_state, mut b_state) = (H0, H0);
    compress_pair(
        [&mut a_state, &mut b_state],
        [strip(&a_pick), strip(&b_pick)],
    );
    compress_pair(
        [&mut a_state, &mut b_state],
        [&a.share_block, &b.share_block],
    );
    [to_bytes(&a_state), to_bytes(&b_state)]
}

/// The share hash of `counter` for `miner` over `segment` (the fast path, for tests).
pub fn share_hash_fast(segment: &[u8], miner: Address, counter: u64) -> B256 {
    hash_counter(
        segment,
        strip_positions(segment.len()),
        &mut Pads::new(miner),
        counter,
    )
}

/// Tries counters `start .. start + count` on every core; returns every share under `target`,
/// in counter order.
pub fn mine(segment: &[u8], miner: Address, target: &B256, start: u64, count: u64) -> Vec<Found> {
    mine_chunked(segment, miner, target, start, count, DEFAULT_CHUNK)
}

/// [`mine`] with `chunk` counters per rayon task (at least 1).
pub fn mine_chunked(
    segment: &[u8],
    miner: Address,
    target: &B256,
    start: u64,
    count: u64,
    chunk: u64,
) -> Vec<Found> {
    assert!(segment.len() >= STRIP_LEN, "segment shorter than a strip");
    let positions = strip_positions(segment.len());
    // Counters stop at u64::MAX: `start + count` never wraps.
    let count = count.min(u64::MAX - start);
    let size = chunk.max(1);
    let chunks = count.div_ceil(size);
    let mut found: Vec<Found> = (0..chunks)
        .into_par_iter()
        .flat_map_iter(|chunk| {
            let from = start + chunk * size;
            let to = from.saturating_add(size).min(start.saturating_add(count));
            mine_range(segment, positions, miner, target, from, to)
        })
        .collect();
    found.sort_unstable_by_key(|f| f.counter);
    found
}

/// The shares under `target` among counters `from .. to`, two counters at a time.
fn mine_range(
    segment: &[u8],
    positions: u64,
    miner: Address,
    target: &B256,
    from: u64,
    to: u64,
) -> Vec<Found> {
    let mut pads = [Pads::new(miner), Pads::new(miner)];
    let mut found = Vec::new();
    let mut keep = |counter: u64, hash: B256| {
        if meets(&hash, target) {
            found.push(Found { counter, hash });
        }
    };
    let mut counter = from;
    while to - counter >= 2 {
        let pair = [counter, counter + 1];
        let hashes = hash_counter_pair(segment, positions, &mut pads, pair);
        keep(pair[0], hashes[0]);
        keep(pair[1], hashes[1]);
        counter += 2;
    }
    if counter < to {
        keep(
            counter,
            hash_counter(segment, positions, &mut pads[0], counter),
        );
    }
    found
}

/// Raw compressions per second on one core, measured for `duration` (the miner's reference):
/// two chains of compressions interleaved ([`compress_pair`]), the most the SHA unit gives
/// (one chain alone waits on each round's latency).
pub fn raw_compressions_per_sec(duration: std::time::Duration) -> f64 {
    let block = [0x5au8; 64];
    let (mut a, mut b) = (H0, H0);
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        for _ in 0..2048 {
            let block = std::hint::black_box(&block);
            compress_pair([&mut a, &mut b], [block, block]);
        }
        n += 4096;
    }
    std::hint::black_box((a, b));
    n as f64 / start.elapsed().as_secs_f64()
}

/// Raw compressions per second with every rayon thread compressing at once.
pub fn raw_compressions_per_sec_all_cores(duration: std::time::Duration) -> f64 {
    let threads = rayon::current_num_threads();
    (0..threads)
        .into_par_iter()
        .map(|_| raw_compressions_per_sec(duration))
        .sum()
}

/// What a timed mining run achieved.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub nonces: u64,
    pub shares: usize,
    pub seconds: f64,
    pub threads: usize,
    /// Raw compressions per second of one core, measured just before.
    pub raw_per_core: f64,
    /// Raw compressions per second of all threads at once (SMT siblings share a SHA unit).
    pub raw_all_cores: f64,
}

impl BenchReport {
    pub fn hashes_per_sec(&self) -> f64 {
        self.nonces as f64 / self.seconds
    }

    /// The rate a perfect miner would reach: raw compressions × cores ÷ compressions per nonce.
    pub fn ceiling(&self) -> f64 {
        self.raw_per_core * self.threads as f64 / COMPRESSIONS_PER_NONCE as f64
    }
}

/// Mines `segment` for `duration` on every core (no network), `chunk` counters per rayon
/// task: the operator's and benchmarker's hash rate.
pub fn bench(
    segment: &[u8],
    miner: Address,
    target: &B256,
    duration: std::time::Duration,
    chunk: u64,
) -> BenchReport {
    let raw_per_core = raw_compressions_per_sec(std::time::Duration::from_millis(500));
    let raw_all_cores = raw_compressions_per_sec_all_cores(std::time::Duration::from_millis(500));
    let threads = rayon::current_num_threads();
    let batch = call_counters(chunk, threads);
    let (mut nonces, mut shares) = (0u64, 0usize);
    let start = std::time::Instant::now();
    while start.elapsed() < duration {
        shares += mine_chunked(segment, miner, target, nonces, batch, chunk).len();
        nonces += batch;
    }
    BenchReport {
        nonces,
        shares,
        seconds: start.elapsed().as_secs_f64(),
        threads,
        raw_per_core,
        raw_all_cores,
    }
}

/// Counters per `mine_chunked` call in a timed run: the same for every chunk up to 2^16, so
/// chunk sizes compare at equal per-call overhead (~40 ms of work per call), and at least four
/// tasks per thread for larger chunks.
pub fn call_counters(chunk: u64, threads: usize) -> u64 {
    chunk.max(1 << 16).saturating_mul(threads.max(1) as u64 * 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::por::{synthetic_segment, target_for_bits};

    /// The paired path (SHA-NI lanes in this build) gives each counter's hash of the single
    /// path, and a range gives the shares a counter-by-counter loop finds, for empty, one,
    /// odd and even ranges and at the top of the counter space.
    #[test]
    fn two_counters_at_a_time_find_what_one_at_a_time_finds() {
        let segment = synthetic_segment(1 << 12, 3);
        let miner = Address::repeat_byte(0x77);
        let positions = strip_positions(segment.len());
        let mut pads = [Pads::new(miner), Pads::new(miner)];
        for first in [0, 1, (1 << 32) - 1, u64::MAX - 1] {
            let pair = [first, first + 1];
            let single = pair.map(|c| hash_counter(&segment, positions, &mut Pads::new(miner), c));
            assert_eq!(
                hash_counter_pair(&segment, positions, &mut pads, pair),
                single
            );
        }
        let target = target_for_bits(3);
        for (from, to) in [(5, 5), (5, 6), (5, 12), (6, 12), (u64::MAX - 7, u64::MAX)] {
            let one_by_one: Vec<Found> = (from..to)
                .map(|counter| Found {
                    counter,
                    hash: hash_counter(&segment, positions, &mut pads[0], counter),
                })
                .filter(|f| meets(&f.hash, &target))
                .collect();
            assert_eq!(
                mine_range(&segment, positions, miner, &target, from, to),
                one_by_one,
                "{from}..{to}"
            );
        }
        // A count past the top stops at u64::MAX instead of wrapping.
        let top = mine_chunked(&segment, miner, &target, u64::MAX - 7, 100, 3);
        assert!(top.iter().all(|f| f.counter >= u64::MAX - 7));
    }
}
