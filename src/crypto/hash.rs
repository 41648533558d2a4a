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
    if leaves.is_empty() {
        return B256::ZERO;
    }
    let mut level: Vec<B256> = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| merkle_parent(&pair[0], pair.get(1).unwrap_or(&pair[0])))
            .collect();
    }
    level[0]
}

/// `sha256(0x01 ‖ left ‖ right)`, hand-padded into its two blocks: the digest API's
/// buffering costs about as much as the compressions themselves, and block commitments hash
/// a parent for every transaction and receipt.
fn merkle_parent(left: &B256, right: &B256) -> B256 {
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
    let mut state = raw::H0;
    raw::compress(&mut state, &first);
    raw::compress(&mut state, &second);
    raw::to_bytes(&state)
}

/// SHA-256 by its compression function, for hot paths that pad their own blocks.
pub(crate) mod raw {
    use alloy_primitives::B256;
    use sha2::digest::generic_array::GenericArray;

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
        level = level
            .chunks(2)
            .map(|pair| merkle_parent(&pair[0], pair.get(1).unwrap_or(&pair[0])))
            .collect();
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
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
        {
            return Sha256Backend::ShaNi;
        }
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
