//! Proof of Replication (the seed's "Proof of Replication", as the design card fixes it).
//!
//! For height `h` with seed `s = mix(h)`:
//!
//! * the *canonical block log* before `h` is the concatenation of the canonical (RLP)
//!   encodings of blocks `1 … h-1` — the same bytes on every node, whatever its file format;
//! * `C(h)` is the `segment_len`-byte window of that log starting at
//!   `be64(sha256("KAON/por/segment/v1" ‖ s)[..8]) mod (L − segment_len + 1)`;
//! * the nonce is `x = reward address (20 bytes) ‖ counter (8 bytes, big endian)`, so a share
//!   names who may be paid for it and cannot be stolen;
//! * `B(seg, x)` is the `STRIP_LEN`-byte strip at `4 · ⌊be64(sha256(x)[..8]) · W / 2^64⌋`, with
//!   `W = (segment_len − STRIP_LEN) / 4 + 1` word-aligned positions (a multiply-shift instead of
//!   a division: same uniformity, cheaper per nonce): the strip depends on a hash
//!   of `x`, so grinding nonces needs the whole segment, not one cached strip (word alignment
//!   lets a GPU read strips as 32-bit words);
//! * share `(h, x)` is valid iff `sha256(strip ‖ x) < d` as a 256-bit big-endian integer.
//!
//! [`share_hash`] is the one statement of the rule; the miners ([`cpu`]) compute the same
//! function faster and are tested against it.

pub mod cpu;
pub mod gpu;
pub mod source;
pub mod tune;

use crate::crypto::hash::{sha256, sha256_concat};
use alloy_primitives::{Address, B256};
use thiserror::Error;

/// Bytes of a strip: one SHA-256 block, so `strip ‖ x` is exactly two compressions.
pub const STRIP_LEN: usize = 64;
/// Bytes of a nonce `x`: reward address and counter.
pub const NONCE_LEN: usize = 28;
/// Default segment: thousands of strips (a strip cache is useless), small enough to stay in a
/// CPU core's L2 cache and to upload to a GPU once per seed.
pub const DEFAULT_SEGMENT_LEN: usize = 256 << 10;
/// Domain tag of the segment offset.
const SEGMENT_DOMAIN: &[u8] = b"KAON/por/segment/v1";

/// Why a share or a segment was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PorError {
    #[error("the block log before this height has {0} bytes, fewer than one strip")]
    LogTooShort(u64),
    #[error("share hash does not meet the difficulty")]
    AboveTarget,
    #[error("height {0} is not in the canonical log yet")]
    UnknownHeight(u64),
    #[error("block {0} read back with a different canonical length than it committed with")]
    LengthMismatch(u64),
}

/// The nonce `x` of a share.
pub fn nonce_bytes(miner: Address, counter: u64) -> [u8; NONCE_LEN] {
    let mut x = [0u8; NONCE_LEN];
    x[..20].copy_from_slice(miner.as_slice());
    x[20..].copy_from_slice(&counter.to_be_bytes());
    x
}

fn be64(hash: &B256) -> u64 {
    // Invariant: a hash has 32 bytes.
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// `C(h)`: offset and length of the segment in a log of `log_len` bytes under `seed`.
pub fn segment_window(
    seed: B256,
    log_len: u64,
    segment_len: usize,
) -> Result<(u64, usize), PorError> {
    if log_len < STRIP_LEN as u64 {
        return Err(PorError::LogTooShort(log_len));
    }
    let len = (segment_len as u64).min(log_len);
    let offset = be64(&sha256_concat(&[SEGMENT_DOMAIN, seed.as_slice()])) % (log_len - len + 1);
    Ok((offset, len as usize))
}

/// Word-aligned strip positions in a segment of `segment_len` bytes.
pub fn strip_positions(segment_len: usize) -> u64 {
    ((segment_len - STRIP_LEN) / 4 + 1) as u64
}

/// `B(seg, x)`: byte offset of the strip for nonce `x`.
pub fn strip_offset(x: &[u8; NONCE_LEN], segment_len: usize) -> usize {
    strip_index(be64(&sha256(x)), strip_positions(segment_len)) * 4
}

/// Maps a uniform 64-bit value to `0..positions` by multiply-shift.
pub fn strip_index(h: u64, positions: u64) -> usize {
    ((u128::from(h) * u128::from(positions)) >> 64) as usize
}

/// The share hash `sha256(B(seg, x) ‖ x)`: the rule every node applies.
pub fn share_hash(segment: &[u8], x: &[u8; NONCE_LEN]) -> B256 {
    let at = strip_offset(x, segment.len());
    sha256_concat(&[&segment[at..at + STRIP_LEN], x])
}

/// Whether `hash < target` as 256-bit big-endian integers.
pub fn meets(hash: &B256, target: &B256) -> bool {
    hash < target
}

/// A target accepting one hash in `2^bits` on average.
pub fn target_for_bits(bits: u32) -> B256 {
    let mut t = [0xffu8; 32];
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    t[..whole.min(32)].fill(0);
    if whole < 32 {
        t[whole] = 0xff >> rest;
    }
    B256::from(t)
}

/// Checks one share against its segment and target.
pub fn verify_share(
    segment: &[u8],
    miner: Address,
    counter: u64,
    target: &B256,
) -> Result<B256, PorError> {
    if segment.len() < STRIP_LEN {
        return Err(PorError::LogTooShort(segment.len() as u64));
    }
    let hash = share_hash(segment, &nonce_bytes(miner, counter));
    if meets(&hash, target) {
        Ok(hash)
    } else {
        Err(PorError::AboveTarget)
    }
}

/// `C(h)` over a canonical log given as the canonical encodings of blocks `1 … h-1` in order:
/// copies out the segment's bytes (which may span blocks).
pub fn segment_of(
    encoded_blocks: &[&[u8]],
    seed: B256,
    segment_len: usize,
) -> Result<Vec<u8>, PorError> {
    let log_len: u64 = encoded_blocks.iter().map(|b| b.len() as u64).sum();
    let (offset, len) = segment_window(seed, log_len, segment_len)?;
    let mut out = Vec::with_capacity(len);
    let mut at = 0u64;
    for block in encoded_blocks {
        let end = at + block.len() as u64;
        let from = offset.max(at);
        let to = (offset + len as u64).min(end);
        if from < to {
            out.extend_from_slice(&block[(from - at) as usize..(to - at) as usize]);
        }
        at = end;
        if at >= offset + len as u64 {
            break;
        }
    }
    Ok(out)
}

/// A deterministic synthetic segment for benchmarks (`kaon mine --bench`).
pub fn synthetic_segment(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            sha256_concat(&[&seed.to_be_bytes(), &counter.to_be_bytes()]).as_slice(),
        );
        counter += 1;
    }
    out.truncate(len);
    out
}
