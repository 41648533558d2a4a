//! Two SHA-256 compressions at once on the x86 SHA extensions.
//!
//! One compression is a chain of 32 dependent `sha256rnds2` steps, so a single message leaves
//! the unit waiting on each step's latency; two independent messages interleaved step by step
//! fill those gaps (on the 2-vCPU Xeon of `docs/benchmarks.md`, one thread: 41 ns a block
//! against 61 ns for two messages one after the other and 78 ns for one dependent chain;
//! with both hyperthreads busy the shared unit gains little more). Merkle levels and short leaves come in independent pairs, so they take this
//! path; everything else goes through `sha2`. The schedule and round structure follow FIPS
//! 180-4; the unit tests hold every result against `sha2::compress256`.

use super::raw::K;
use std::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
    _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
    _mm_shuffle_epi8, _mm_storeu_si128,
};

/// Independent messages interleaved.
const LANES: usize = 2;

/// Whether this CPU runs [`compress_pair`]; checked once by the standard library, then a load.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("sha")
        && is_x86_feature_detected!("ssse3")
        && is_x86_feature_detected!("sse4.1")
}

/// Compresses `blocks[i]` into `states[i]` for both lanes.
///
/// # Safety
/// The CPU must have the SHA extensions, SSSE3 and SSE4.1 ([`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(super) unsafe fn compress_pair(states: [&mut [u32; 8]; LANES], blocks: [&[u8; 64]; LANES]) {
    // Big-endian message words from little-endian loads.
    let byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
    // The round instruction keeps the state as (A, B, E, F) and (C, D, G, H).
    let mut abef = [_mm_set_epi64x(0, 0); LANES];
    let mut cdgh = [_mm_set_epi64x(0, 0); LANES];
    for lane in 0..LANES {
        let words = states[lane].as_ptr().cast::<__m128i>();
        // SAFETY: `words` points at eight u32s: two unaligned 16-byte loads stay inside.
        let (dcba, hgfe) = unsafe { (_mm_loadu_si128(words), _mm_loadu_si128(words.add(1))) };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        abef[lane] = _mm_alignr_epi8(cdab, efgh, 8);
        cdgh[lane] = _mm_blend_epi16(efgh, cdab, 0xF0);
    }
    let (start_abef, start_cdgh) = (abef, cdgh);
    // The last 16 schedule words of each lane, four to a register.
    let mut schedule = [[_mm_set_epi64x(0, 0); 4]; LANES];
    for group in 0..16 {
        // SAFETY: `K` holds 64 u32s, 16 groups of four: the load stays inside.
        let k = unsafe { _mm_loadu_si128(K.as_ptr().cast::<__m128i>().add(group)) };
        for lane in 0..LANES {
            let w = &mut schedule[lane];
            let words = if group < 4 {
                let block = blocks[lane].as_ptr().cast::<__m128i>();
                // SAFETY: the block is 64 bytes, four 16-byte groups: the load stays inside.
                _mm_shuffle_epi8(unsafe { _mm_loadu_si128(block.add(group)) }, byte_swap)
            } else {
                // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], four at a time.
                let (oldest, next, later, newest) = (
                    w[group % 4],
                    w[(group + 1) % 4],
                    w[(group + 2) % 4],
                    w[(group + 3) % 4],
                );
                let partial = _mm_add_epi32(
                    _mm_sha256msg1_epu32(oldest, next),
                    _mm_alignr_epi8(newest, later, 4),
                );
                _mm_sha256msg2_epu32(partial, newest)
            };
            w[group % 4] = words;
            let rounds = _mm_add_epi32(words, k);
            cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], rounds);
            abef[lane] =
                _mm_sha256rnds2_epu32(abef[lane], cdgh[lane], _mm_shuffle_epi32(rounds, 0x0E));
        }
    }
    for (lane, state) in states.into_iter().enumerate() {
        let feba = _mm_shuffle_epi32(_mm_add_epi32(abef[lane], start_abef[lane]), 0x1B);
        let dchg = _mm_shuffle_epi32(_mm_add_epi32(cdgh[lane], start_cdgh[lane]), 0xB1);
        let words = state.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `words` points at eight u32s: two unaligned 16-byte stores stay inside.
        unsafe {
            _mm_storeu_si128(words, _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(words.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both lanes give FIPS 180-4's digest of "abc" (appendix B.1), one from the initial state
    /// and one continuing another message, against `sha2`. Skipped where the CPU lacks the
    /// extensions (`compress_pair` is never called there).
    #[test]
    fn both_lanes_compress_as_fips_180_4_says() {
        if !available() {
            return;
        }
        let mut abc = [0u8; 64];
        abc[..3].copy_from_slice(b"abc");
        abc[3] = 0x80;
        abc[63] = 24;
        let other = [0x5au8; 64];
        let h0 = crate::crypto::hash::raw::H0;
        let mut continued = h0;
        crate::crypto::hash::raw::compress(&mut continued, &other);
        let (mut a, mut b) = (h0, continued);
        // SAFETY: `available` found the extensions.
        unsafe { compress_pair([&mut a, &mut b], [&abc, &other]) };
        assert_eq!(
            crate::crypto::hash::raw::to_bytes(&a),
            alloy_primitives::b256!(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            )
        );
        let mut expected = continued;
        crate::crypto::hash::raw::compress(&mut expected, &other);
        assert_eq!(b, expected);
    }
}
