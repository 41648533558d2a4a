//! Randomness and selection: public, verifiable, and identical on every honest node.
//!
//! - The proposer of height `h` reveals `random_reveal = BLS_sign(sk, "reveal" ‖ h)`. BLS
//!   signatures are unique, so the proposer cannot choose among values; the chain's mix is
//!   `mix(h) = mix(h-1) XOR sha256(random_reveal)`.
//! - Each CN's rank for height `h`, round `r` and a role is
//!   `sha256(mix(h-1) ‖ h ‖ r ‖ role ‖ cn_pubkey)`; lower ranks win.
//! - The committee is every CN while the set has at most `committee_size + 1` members,
//!   otherwise the `committee_size` lowest committee ranks. Committees are ordered by CN index
//!   (the signer bitmap's order).
//! - Proposers take turns: the rounds of a height run through the committee in cycles of its
//!   size `N`, cycle `c` (rounds `c·N` to `c·N + N − 1`) in the order of the members' proposer
//!   ranks for round `c`. Round 0's proposer is the member with the lowest proposer rank; no
//!   member proposes twice in a cycle, so a crashed CN wastes at most one round of each cycle
//!   instead of being drawn again and again (`docs/consensus.md`, "Proposer turns").
//! - Committee ranks are computed at round 0 ([`COMMITTEE_ROUND`]): the committee is fixed for
//!   the whole height and only the proposer changes with the round. A committee redrawn every
//!   round would break safety across rounds — a block committed by round r's committee is
//!   invisible to a disjoint committee at round r+2 (see `docs/consensus.md`).
//! - Quorum is `floor(2N/3) + 1` of the committee's N members: strictly more than two thirds.
//! - Ranks are public: every receiver recomputes who is on the committee and who proposes from
//!   the header chain, so proposals and votes carry no proof of selection (a signature over
//!   public data would prove nothing and cost a pairing per message).

use crate::crypto::bls::{BlsError, PublicKey, PublicKeyBytes, SecretKey, Signature};
use crate::crypto::hash::{sha256, sha256_concat};
use crate::types::{CnIndex, Height, RandomReveal, Round};
use alloy_primitives::B256;
use thiserror::Error;

/// Committee size when the configuration says nothing: large enough that a third of it being
/// Byzantine is unlikely for any reasonable CN population, small enough that a certificate's
/// bitmap and key aggregation stay cheap.
pub const DEFAULT_COMMITTEE_SIZE: usize = 100;

/// The round whose committee ranks pick the committee of every round of a height.
pub const COMMITTEE_ROUND: Round = Round(0);

/// Domain tag of random reveals.
const REVEAL_DOMAIN: &[u8] = b"KAON/reveal/v1";
/// The role a rank is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    Committee = 0,
    Proposer = 1,
}

/// Why a CN set or a random reveal was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SelectionError {
    #[error("the CN set is empty")]
    EmptyCnSet,
    #[error("CN index {0} is outside the CN set")]
    UnknownCn(CnIndex),
    #[error("random reveal of CN {0} does not verify")]
    BadReveal(CnIndex),
    #[error("CN {second}'s key is CN {first}'s key again")]
    DuplicateKey { first: CnIndex, second: CnIndex },
    #[error("malformed BLS point: {0}")]
    Bls(#[from] BlsError),
}

/// The CN set in force at a height: validated, distinct public keys in CN-index order.
///
/// Distinct keys make the signer index and the key interchangeable: a vote or a certificate bit
/// for CN `i` names exactly one key, and one key cannot count twice toward a quorum. Whether
/// each key's holder knows its secret key (no rogue keys) is checked where keys enter a set —
/// genesis and CN-set changes — by their proofs of possession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnSet {
    keys: Vec<PublicKey>,
    /// Compressed keys, kept because every rank hashes one (compression costs an inversion).
    compressed: Vec<PublicKeyBytes>,
}

impl CnSet {
    /// A set from validated keys; a key listed twice is refused.
    pub fn new(keys: Vec<PublicKey>) -> Result<Self, SelectionError> {
        if keys.is_empty() {
            return Err(SelectionError::EmptyCnSet);
        }
        let compressed: Vec<PublicKeyBytes> = keys.iter().map(PublicKey::to_bytes).collect();
        let mut seen = std::collections::HashMap::with_capacity(compressed.len());
        for (i, key) in compressed.iter().enumerate() {
            // Compression is canonical for validated points: equal keys have equal bytes.
            if let Some(first) = seen.insert(key, i) {
                return Err(SelectionError::DuplicateKey {
                    first: CnIndex(first as u32),
                    second: CnIndex(i as u32),
                });
            }
        }
        Ok(Self { keys, compressed })
    }

    /// A set from wire bytes (e.g. a header's `next_cn_set`), validating every key.
    pub fn from_bytes(keys: &[PublicKeyBytes]) -> Result<Self, SelectionError> {
        let keys = keys
            .iter()
            .map(PublicKey::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, cn: CnIndex) -> Result<&PublicKey, SelectionError> {
        self.keys
            .get(cn.0 as usize)
            .ok_or(SelectionError::UnknownCn(cn))
    }

    /// The compressed form of CN `cn`'s key.
    pub fn key_bytes(&self, cn: CnIndex) -> Result<&PublicKeyBytes, SelectionError> {
        self.compressed
            .get(cn.0 as usize)
            .ok_or(SelectionError::UnknownCn(cn))
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Hash committed in headers (`cn_set_root`): SHA-256 over the compressed keys in order.
    pub fn root(&self) -> B256 {
        set_root(&self.compressed)
    }

    /// The committee of the whole set for round `r` of height `h`: every CN signs, whatever
    /// the committee size (what a verifier outside the region can check a certificate against
    /// without the region's genesis parameters).
    pub fn whole_committee(&self, h: Height, r: Round) -> Committee {
        self.committee(B256::ZERO, h, r, self.keys.len())
    }

    /// The public rank of CN `cn` for a role at height `h`, round `r`, given `mix(h-1)`.
    pub fn rank(
        &self,
        mix: B256,
        h: Height,
        r: Round,
        role: Role,
        cn: CnIndex,
    ) -> Result<B256, SelectionError> {
        let key = self
            .compressed
            .get(cn.0 as usize)
            .ok_or(SelectionError::UnknownCn(cn))?;
        Ok(rank_of(mix, h, r, role, key))
    }

    /// Every CN's rank for a role at `h`, `r`, lowest first.
    fn ranked(&self, mix: B256, h: Height, r: Round, role: Role) -> Vec<(B256, CnIndex)> {
        let mut ranks: Vec<(B256, CnIndex)> = self
            .compressed
            .iter()
            .enumerate()
            .map(|(i, key)| (rank_of(mix, h, r, role, key), CnIndex(i as u32)))
            .collect();
        ranks.sort_unstable();
        ranks
    }

    /// The committee and proposer of height `h`, round `r`.
    pub fn committee(&self, mix: B256, h: Height, r: Round, committee_size: usize) -> Committee {
        let mut members: Vec<CnIndex> = if self.keys.len() <= committee_size + 1 {
            (0..self.keys.len() as u32).map(CnIndex).collect()
        } else {
            self.ranked(mix, h, COMMITTEE_ROUND, Role::Committee)
                .into_iter()
                .take(committee_size.max(1))
                .map(|(_, cn)| cn)
                .collect()
        };
        members.sort_unstable();
        let proposer = self.proposer(mix, h, r, &members);
        Committee {
            height: h,
            round: r,
            mix,
            members,
            proposer,
        }
    }

    /// The proposer of round `r` among `members` (non-empty, all in the set). Rounds go
    /// through the committee in cycles of its size: cycle `c` covers rounds `c·N … c·N + N − 1`
    /// and visits the members in the order of their proposer ranks for round `c`, so no member
    /// proposes twice in a cycle and a crashed one costs at most one round of it. Round 0 is
    /// the lowest-ranked member, as a fresh draw per round would give.
    fn proposer(&self, mix: B256, h: Height, r: Round, members: &[CnIndex]) -> CnIndex {
        let n = members.len().max(1) as u32;
        let (cycle, turn) = (Round(r.0 / n), (r.0 % n) as usize);
        let mut order: Vec<(B256, CnIndex)> = members
            .iter()
            .filter_map(|cn| {
                let key = self.compressed.get(cn.0 as usize)?;
                Some((rank_of(mix, h, cycle, Role::Proposer, key), *cn))
            })
            .collect();
        order.sort_unstable();
        order
            .get(turn)
            .map(|(_, cn)| *cn)
            // Unreachable: members are a non-empty subset of the set, so `order` holds `n`
            // entries and `turn < n`; CN 0 exists in every set.
            .unwrap_or(CnIndex(0))
    }
}

/// The fixed committee of one height and round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committee {
    pub height: Height,
    pub round: Round,
    /// `mix(h-1)`, the randomness the committee was drawn from.
    pub mix: B256,
    /// Members, ascending by CN index; position in this list is the signer-bitmap bit.
    pub members: Vec<CnIndex>,
    pub proposer: CnIndex,
}

impl Committee {
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Signatures needed: strictly more than two thirds of the members.
    pub fn quorum(&self) -> usize {
        quorum(self.members.len())
    }

    /// Bitmap position of `cn`, if it is a member.
    pub fn position(&self, cn: CnIndex) -> Option<usize> {
        self.members.binary_search(&cn).ok()
    }
}

/// [`CnSet::root`] of keys in compressed form, without decompressing them.
pub fn set_root(keys: &[PublicKeyBytes]) -> B256 {
    let bytes: Vec<[u8; 48]> = keys.iter().map(|k| k.0).collect();
    sha256(bytes.as_flattened())
}

/// Strictly more than two thirds of `n`: `floor(2n/3) + 1`.
pub const fn quorum(n: usize) -> usize {
    2 * n / 3 + 1
}

/// The message a random reveal signs for height `h`.
pub fn reveal_message(h: Height) -> Vec<u8> {
    [REVEAL_DOMAIN, &h.to_be_bytes()[..]].concat()
}

/// The proposer's random reveal for height `h`.
pub fn reveal(sk: &SecretKey, h: Height) -> RandomReveal {
    RandomReveal(sk.sign(&reveal_message(h)).to_bytes())
}

/// Checks that `reveal` is CN `cn`'s reveal for height `h`.
pub fn verify_reveal(
    set: &CnSet,
    cn: CnIndex,
    h: Height,
    reveal: &RandomReveal,
) -> Result<(), SelectionError> {
    let sig = Signature::try_from(&reveal.0)?;
    if sig.verify(set.key(cn)?, &reveal_message(h)) {
        Ok(())
    } else {
        Err(SelectionError::BadReveal(cn))
    }
}

/// `mix(h) = mix(h-1) XOR sha256(random_reveal(h))`.
pub fn next_mix(previous: B256, reveal: &RandomReveal) -> B256 {
    previous ^ sha256(&reveal.0 .0)
}

/// The rank of the CN holding `key` for a role at height `h`, round `r`, given `mix(h-1)`:
/// SHA-256 over the mix, height, round, role and compressed key.
fn rank_of(mix: B256, h: Height, r: Round, role: Role, key: &PublicKeyBytes) -> B256 {
    sha256_concat(&[
        mix.as_slice(),
        &h.to_be_bytes(),
        &r.to_be_bytes(),
        &[role as u8],
        &key.0,
    ])
}
