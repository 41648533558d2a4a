//! Hashing: SHA-256 for everything Kaon defines (block hashes, ranks, the randomness mix, PoR
//! shares) and Keccak-256 where Ethereum compatibility demands it (transaction hashes,
//! addresses).
//!
//! SHA-256 goes through `sha2` built with its `asm` feature, which uses the CPU's SHA
//! extensions when present. [`sha256_backend`] says which path the running CPU takes, so a
//! node can log it at startup rather than silently run ~10× slower in software.

use alloy_primitives::B256;
use sha2::{Digest, Sha256};

pub use alloy_primitives::keccak256;

#[cfg(target_arch = "x86_64")]
// Only `available` is used by a debug build outside unit tests (see `raw::compress_pair`).
#[cfg_attr(all(debug_assertions, not(test)), allow(dead_code))]
mod sha_ni;

/// SHA-256 of one contiguous byte string.
pub fn sha256(data: &[u8]) -> B256 {
    B256::from(<[u8; 32]>::from(Sha256::digest(data)))
}

/// SHA-256 of the concatenation of `parts`, without building the concatenation.
pub fn sha256_concat(parts: &[&[u8]]) -> B256 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    B256::from(<[u8; 32]>::from(hasher.finalize()))
}

/// Root of a binary SHA-256 Merkle tree over `leaves` (an odd node is paired with itself;
/// the empty tree's root is zero). Inner nodes hash `0x01 ‖ left ‖ right` and leaves enter as
/// given, so an inner node can never be passed off as a leaf.
pub fn merkle_root(leaves: &[B256]) -> B256 {
    match leaves {
        [] => B256::ZERO,
        [only] => *only,
        _ => {
            let mut level = parents(leaves);
            while level.len() > 1 {
                level = parents(&level);
            }
            level[0]
        }
    }
}

/// The level above `level` (at least one node): parent `i` hashes nodes `2i` and `2i + 1`, an
/// odd last node paired with itself. Parents are hashed two at a time ([`raw::compress_pair`]).
fn parents(level: &[B256]) -> Vec<B256> {
    let children = |parent: usize| {
        let left = &level[2 * parent];
        (left, level.get(2 * parent + 1).unwrap_or(left))
    };
    let count = level.len().div_ceil(2);
    let mut out = Vec::with_capacity(count);
    for first in (0..count - 1).step_by(2) {
        out.extend(merkle_parent_pair(children(first), children(first + 1)));
    }
    if count % 2 == 1 {
        let (left, right) = children(count - 1);
        out.push(merkle_parent(left, right));
    }
    out
}

/// `sha256(0x01 ‖ left ‖ right)`, hand-padded into its two blocks: the digest API's
/// buffering costs about as much as the compressions themselves, and block commitments hash
/// a parent for every transaction and receipt.
fn merkle_parent(left: &B256, right: &B256) -> B256 {
    let [first, second] = parent_blocks(left, right);
    let mut state = raw::H0;
    raw::compress(&mut state, &first);
    raw::compress(&mut state, &second);
    raw::to_bytes(&state)
}

/// Two [`merkle_parent`]s at once.
fn merkle_parent_pair(a: (&B256, &B256), b: (&B256, &B256)) -> [B256; 2] {
    let [a_first, a_second] = parent_blocks(a.0, a.1);
    let [b_first, b_second] = parent_blocks(b.0, b.1);
    let (mut a_state, mut b_state) = (raw::H0, raw::H0);
    raw::compress_pair([&mut a_state, &mut b_state], [&a_first, &b_first]);
    raw::compress_pair([&mut a_state, &mut b_state], [&a_second, &b_second]);
    [raw::to_bytes(&a_state), raw::to_bytes(&b_state)]
}

/// The two padded blocks of `0x01 ‖ left ‖ right`.
fn parent_blocks(left: &B256, right: &B256) -> [[u8; 64]; 2] {
    /// Bits hashed: the tag and two children.
    const BITS: u64 = (1 + 32 + 32) * 8;
    let mut first = [0u8; 64];
    first[0] = 1;
    first[1..33].copy_from_slice(left.as_slice());
    first[33..].copy_from_slice(&right[..31]);
    let mut second = [0u8; 64];
    second[0] = right[31];
    second[1] = 0x80;
    second[56..].copy_from_slice(&BITS.to_be_bytes());
    [first, second]
}

/// Bytes a message may have to fit, padded, in one block.
const ONE_BLOCK: usize = 64 - 1 - 8;

/// SHA-256 of `a` and of `b`; two messages of at most 55 bytes are hashed as one padded block
/// each, both at once (a transfer's receipt leaf is about 25 bytes).
pub fn sha256_pair(a: &[u8], b: &[u8]) -> [B256; 2] {
    match (one_block(a), one_block(b)) {
        (Some(a_block), Some(b_block)) => {
            let (mut a_state, mut b_state) = (raw::H0, raw::H0);
            raw::compress_pair([&mut a_state, &mut b_state], [&a_block, &b_block]);
            [raw::to_bytes(&a_state), raw::to_bytes(&b_state)]
        }
        _ => [sha256(a), sha256(b)],
    }
}

/// `message` padded into its single block, if it fits in one.
fn one_block(message: &[u8]) -> Option<[u8; 64]> {
    if message.len() > ONE_BLOCK {
        return None;
    }
    let mut block = [0u8; 64];
    block[..message.len()].copy_from_slice(message);
    block[message.len()] = 0x80;
    block[56..].copy_from_slice(&((message.len() as u64) * 8).to_be_bytes());
    Some(block)
}

/// SHA-256 by its compression function, for hot paths that pad their own blocks.
pub(crate) mod raw {
    use alloy_primitives::B256;
    use sha2::digest::generic_array::GenericArray;

    /// SHA-256 round constants (FIPS 180-4, 4.2.2), for every SHA-256 Kaon computes itself
    /// (`sha_ni` and the WGSL kernel that `por::gpu` generates).
    pub static K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// SHA-256 initial state (FIPS 180-4, 5.3.3).
    pub const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    type Block = GenericArray<u8, sha2::digest::consts::U64>;

    /// One compression of `block` into `state`.
    pub fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
        sha2::compress256(state, std::slice::from_ref(Block::from_slice(block)));
    }

    /// `blocks[i]` compressed into `states[i]`, both lanes interleaved on SHA-NI
    /// ([`super::sha_ni`]); one after the other elsewhere. A debug build of the library (other
    /// than its own unit tests, which hold the lanes against `sha2`) takes `sha2` too: this
    /// crate is compiled without optimization there, where every intrinsic stays a call and
    /// the lanes run tens of times slower than `sha2`, which is always optimized.
    pub fn compress_pair(states: [&mut [u32; 8]; 2], blocks: [&[u8; 64]; 2]) {
        #[cfg(all(target_arch = "x86_64", any(test, not(debug_assertions))))]
        if super::sha_ni::available() {
            // SAFETY: `available` found the extensions `compress_pair` is compiled for.
            unsafe { super::sha_ni::compress_pair(states, blocks) };
            return;
        }
        let [a, b] = states;
        compress(a, blocks[0]);
        compress(b, blocks[1]);
    }

    /// The digest a final `state` stands for.
    pub fn to_bytes(state: &[u32; 8]) -> B256 {
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        B256::from(out)
    }
}

/// The siblings from leaf `index` up to the root of [`merkle_root`]`(leaves)`, bottom first;
/// `None` when `index` is out of range.
pub fn merkle_proof(leaves: &[B256], mut index: usize) -> Option<Vec<B256>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let mut level: Vec<B256> = leaves.to_vec();
    while level.len() > 1 {
        let sibling = index ^ 1;
        path.push(*level.get(sibling).unwrap_or(&level[index]));
        level = parents(&level);
        index /= 2;
    }
    Some(path)
}

/// The root that `path` ([`merkle_proof`]) leads to from `leaf` at `index` of a tree of
/// `leaf_count` leaves; `None` when the index or the path length does not fit such a tree.
pub fn merkle_root_from_path(
    leaf: B256,
    mut index: usize,
    leaf_count: usize,
    path: &[B256],
) -> Option<B256> {
    if index >= leaf_count {
        return None;
    }
    let depth = usize::BITS - (leaf_count - 1).leading_zeros();
    if path.len() != depth as usize {
        return None;
    }
    Some(path.iter().fold(leaf, |node, sibling| {
        let parent = match index % 2 {
            0 => merkle_parent(&node, sibling),
            _ => merkle_parent(sibling, &node),
        };
        index /= 2;
        parent
    }))
}

/// Whether `path` proves `leaf` at `index` of a `leaf_count`-leaf tree with root `root`.
pub fn verify_merkle_proof(
    leaf: B256,
    index: usize,
    leaf_count: usize,
    path: &[B256],
    root: B256,
) -> bool {
    merkle_root_from_path(leaf, index, leaf_count, path) == Some(root)
}

/// The SHA-256 implementation the running CPU gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha256Backend {
    /// x86 SHA extensions (SHA-NI): tens of millions of blocks per second per core.
    ShaNi,
    /// Portable code: roughly an order of magnitude slower.
    Software,
}

impl std::fmt::Display for Sha256Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ShaNi => "sha-ni",
            Self::Software => "software",
        })
    }
}

/// Detects the SHA-256 backend of this CPU.
pub fn sha256_backend() -> Sha256Backend {
    // The same test that picks the paired path; `sha2` asks for no more than it.
    #[cfg(target_arch = "x86_64")]
    if sha_ni::available() {
        return Sha256Backend::ShaNi;
    }
    #[cfg(target_arch = "x86")]
    if std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1") {
        return Sha256Backend::ShaNi;
    }
    Sha256Backend::Software
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::hex;

    /// The hand-padded Merkle parent is the SHA-256 of `0x01 ‖ left ‖ right`.
    #[test]
    fn merkle_parent_is_the_digest_of_tag_and_children() {
        for seed in 0u8..16 {
            let left = sha256(&[seed]);
            let right = sha256(&[seed, seed]);
            assert_eq!(
                merkle_parent(&left, &right),
                sha256_concat(&[&[1u8], left.as_slice(), right.as_slice()])
            );
        }
    }

    /// A deterministic stream of test bytes.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| sha256(&(seed * 1_000 + i / 32).to_be_bytes())[(i % 32) as usize])
            .collect()
    }

    /// Both lanes of a paired compression equal a compression each, from any state.
    #[test]
    fn a_paired_compression_equals_two_single_ones() {
        for seed in 0..32u64 {
            let block = |s: u64| <[u8; 64]>::try_from(bytes(s, 64)).unwrap();
            let (a_block, b_block) = (block(2 * seed), block(2 * seed + 1));
            let mut a_state = raw::H0;
            raw::compress(&mut a_state, &block(seed + 100));
            let b_state = raw::H0;
            let (mut a_paired, mut b_paired) = (a_state, b_state);
            raw::compress_pair([&mut a_paired, &mut b_paired], [&a_block, &b_block]);
            let (mut a_single, mut b_single) = (a_state, b_state);
            raw::compress(&mut a_single, &a_block);
            raw::compress(&mut b_single, &b_block);
            assert_eq!((a_paired, b_paired), (a_single, b_single), "seed {seed}");
        }
    }

    /// Every length pairing, across the one-block limit (55) and beyond two blocks.
    #[test]
    fn sha256_pair_is_the_digest_of_each_message() {
        for a_len in (0..=70).chain([119, 120, 200]) {
            for b_len in [0, 1, 31, 54, 55, 56, 64, 130] {
                let (a, b) = (bytes(a_len as u64, a_len), bytes(b_len as u64 + 7, b_len));
                assert_eq!(
                    sha256_pair(&a, &b),
                    [sha256(&a), sha256(&b)],
                    "{a_len} {b_len}"
                );
            }
        }
    }

    /// The level-by-level root with paired parents equals the tree written out one parent at a
    /// time, for every size from 1 to 40 leaves (odd levels of every shape).
    #[test]
    fn merkle_root_equals_the_tree_hashed_parent_by_parent() {
        fn by_digest(level: &[B256]) -> B256 {
            if level.len() == 1 {
                return level[0];
            }
            let up: Vec<B256> = level
                .chunks(2)
                .map(|pair| {
                    let right = pair.get(1).unwrap_or(&pair[0]);
                    sha256_concat(&[&[1u8], pair[0].as_slice(), right.as_slice()])
                })
                .collect();
            by_digest(&up)
        }
        for n in 1..=40u64 {
            let leaves: Vec<B256> = (0..n).map(|i| sha256(&i.to_be_bytes())).collect();
            assert_eq!(merkle_root(&leaves), by_digest(&leaves), "{n} leaves");
        }
    }

    #[test]
    fn sha256_matches_fips_180_example() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex::encode(sha256(b"abc")), expected);
        assert_eq!(hex::encode(sha256_concat(&[b"a", b"", b"bc"])), expected);
    }

    #[test]
    fn merkle_root_commits_to_order_and_content() {
        let leaves: Vec<B256> = (0u8..5).map(|i| sha256(&[i])).collect();
        let root = merkle_root(&leaves);
        assert_ne!(root, B256::ZERO);
        assert_eq!(merkle_root(&leaves[..1]), leaves[0]);
        let mut swapped = leaves.clone();
        swapped.swap(1, 2);
        assert_ne!(merkle_root(&swapped), root);
        assert_ne!(merkle_root(&leaves[..4]), root);
        assert_eq!(merkle_root(&[]), B256::ZERO);
    }

    #[test]
    fn merkle_proofs_verify_every_leaf_and_nothing_else() {
        for n in 1..=9usize {
            let leaves: Vec<B256> = (0..n as u8).map(|i| sha256(&[i])).collect();
            let root = merkle_root(&leaves);
            for (i, leaf) in leaves.iter().enumerate() {
                let path = merkle_proof(&leaves, i).unwrap();
                assert!(verify_merkle_proof(*leaf, i, n, &path, root), "n={n} i={i}");
                assert!(!verify_merkle_proof(sha256(b"x"), i, n, &path, root));
                assert!(!verify_merkle_proof(*leaf, i, n + 8, &path, root));
                if n > 1 {
                    assert!(!verify_merkle_proof(*leaf, (i + 1) % n, n, &path, root));
                }
            }
            assert!(merkle_proof(&leaves, n).is_none());
        }
    }

    #[test]
    fn keccak_matches_empty_string_hash() {
        let expected = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470";
        assert_eq!(hex::encode(keccak256([])), expected);
    }
}
