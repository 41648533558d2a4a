//! The region directory: the platform's regions as the first region's regionchain records
//! them (`docs/regions.md`).
//!
//! A [`RegionCreation`] carries a new region's [`RegionEntry`] — its id (its regionchain's
//! chain id), its genesis hash, the root of its CN set and the addresses of RNs that serve it —
//! with the aggregate approval of strictly more than two thirds of the directory region's
//! current CN set (the approval names that set's root, so it cannot be replayed under a later
//! set). Executed in segment 0, it is folded into the governance root (so the header commits
//! to it) and the entry joins the directory, which every node of the region rebuilds by
//! replaying its chain; anyone can then check a region's genesis and genesis CN set against
//! the entry before following it (later CN-set changes are that region's own governance).
//!
//! Ids: each region numbers its servicechains after its own id (region 1000 → 1001, 1002, …)
//! and registers no others ([`crate::chain::servicechain::Registration::verify`]), so a region
//! owns the ids `[id, id + REGION_ID_SPAN)`; the directory admits no region whose span overlaps
//! a listed one, so chain ids are unique platform-wide. The span holds a million ids: a region
//! serves 100 000+ servicechains.

use super::servicechain::MAX_CHAIN_ID;
use crate::consensus::governance::{check_approval, sign_approval, GovernanceError};
use crate::consensus::selection::CnSet;
use crate::crypto::bls::{SecretKey, SignatureBytes};
use crate::crypto::hash::sha256_concat;
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::{ChainId, CnIndex, SignerBitmap};
use alloy_primitives::{Bytes, B256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use std::collections::BTreeMap;
use thiserror::Error;

/// Chain ids one region owns from its own id on: its regionchain and its servicechains.
pub const REGION_ID_SPAN: u64 = 1_000_000;
/// Most RN addresses one entry lists, and the longest each may be.
pub const MAX_RN_SEEDS: usize = 16;
pub const MAX_RN_SEED_BYTES: usize = 256;
/// Most regions a directory lists, and most bytes their entries take: the directory region's
/// checkpoints carry the whole directory (and a head per region) to the other regions inside
/// one system transaction, beside a header.
pub const MAX_REGIONS: usize = 256;
pub const MAX_DIRECTORY_BYTES: usize = 64 * 1024;

const CREATION_DOMAIN: &[u8] = b"KAON/region-create/v1";
/// Tags the hash of a directory's entries.
const DIRECTORY_DOMAIN: &[u8] = b"KAON/directory/v1";

/// One region as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct RegionEntry {
    /// The region's id: its regionchain's chain id.
    pub region: ChainId,
    /// Its genesis hash (the parent of its block 1).
    pub genesis_hash: B256,
    /// The root of its genesis CN set ([`CnSet::root`]); later changes are its own.
    pub cn_set_root: B256,
    /// Addresses (`host:port`) of RNs that serve it.
    pub rn_seeds: Vec<String>,
}

/// The system transaction that adds a region to the directory.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct RegionCreation {
    /// The region whose regionchain keeps the directory (the first region).
    pub directory: ChainId,
    pub entry: RegionEntry,
    /// Approvers among the directory region's current CN set (bit i = CN i).
    pub approvers: SignerBitmap,
    pub approval: SignatureBytes,
}

/// Why a creation was refused (its system transaction is then marked invalid).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DirectoryError {
    #[error("not a system transaction")]
    NotSystem,
    #[error("malformed region creation: {0}")]
    Malformed(String),
    #[error("the creation is for the directory of region {got}, this is region {expected}")]
    WrongDirectory { got: ChainId, expected: ChainId },
    #[error("region {region}'s ids overlap those of region {with}")]
    Overlaps { region: ChainId, with: ChainId },
    #[error(
        "region {here} is not the directory region: regions are created in region {directory}'s \
         regionchain, and this one copies its directory from there"
    )]
    NotDirectoryRegion { here: ChainId, directory: ChainId },
    #[error("the directory is full: at most {MAX_REGIONS} regions in {MAX_DIRECTORY_BYTES} bytes")]
    Full,
    #[error("region {0}'s ids do not fit in 1..={MAX_CHAIN_ID}")]
    OutOfRange(ChainId),
    #[error("at most {MAX_RN_SEEDS} RN seeds of at most {MAX_RN_SEED_BYTES} bytes each")]
    BadSeeds,
    #[error(transparent)]
    Approval(#[from] GovernanceError),
}

/// The message approvers sign: the directory's region, the approving set and the whole entry.
pub fn creation_message(directory: ChainId, approving_set: B256, entry: &RegionEntry) -> Vec<u8> {
    let digest = sha256_concat(&[&canonical(entry)]);
    [
        CREATION_DOMAIN,
        &directory.to_be_bytes(),
        approving_set.as_slice(),
        digest.as_slice(),
    ]
    .concat()
}

/// Builds a creation approved by `approvers` (index in the directory region's set, key).
pub fn approve_creation(
    directory: ChainId,
    current: &CnSet,
    entry: RegionEntry,
    approvers: &[(CnIndex, &SecretKey)],
) -> Result<RegionCreation, DirectoryError> {
    let msg = creation_message(directory, current.root(), &entry);
    let (approvers, approval) = sign_approval(current, approvers, &msg)?;
    Ok(RegionCreation {
        directory,
        entry,
        approvers,
        approval,
    })
}

/// Whether the id spans of regions `a` and `b` overlap.
pub fn overlap(a: ChainId, b: ChainId) -> bool {
    a.0.abs_diff(b.0) < REGION_ID_SPAN
}

/// Whether `chain` lies in region `region`'s ids `[region, region + REGION_ID_SPAN)`.
pub fn in_span(region: ChainId, chain: ChainId) -> bool {
    chain.0 >= region.0 && chain.0 - region.0 < REGION_ID_SPAN
}

impl RegionCreation {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::CreateRegion, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, DirectoryError> {
        system::decode(raw, SystemKind::CreateRegion).map_err(|e| match e {
            SystemTxError::NotSystem => DirectoryError::NotSystem,
            other => DirectoryError::Malformed(other.to_string()),
        })
    }

    /// Checks the creation in region `here` (whose CN set is `current`) against the regions
    /// the directory already lists (`listed`, this region's own id included).
    pub fn verify(
        &self,
        here: ChainId,
        current: &CnSet,
        listed: impl IntoIterator<Item = ChainId>,
    ) -> Result<(), DirectoryError> {
        if self.directory != here {
            return Err(DirectoryError::WrongDirectory {
                got: self.directory,
                expected: here,
            });
        }
        let entry = &self.entry;
        let last = entry.region.0.checked_add(REGION_ID_SPAN - 1);
        if entry.region.0 == 0 || last.is_none_or(|last| last > MAX_CHAIN_ID) {
            return Err(DirectoryError::OutOfRange(entry.region));
        }
        if entry.rn_seeds.len() > MAX_RN_SEEDS
            || entry.rn_seeds.iter().any(|s| s.len() > MAX_RN_SEED_BYTES)
        {
            return Err(DirectoryError::BadSeeds);
        }
        if let Some(with) = listed.into_iter().find(|&r| overlap(r, entry.region)) {
            return Err(DirectoryError::Overlaps {
                region: entry.region,
                with,
            });
        }
        let msg = creation_message(self.directory, current.root(), entry);
        check_approval(current, &self.approvers, &self.approval, &msg)?;
        Ok(())
    }
}

/// The regions a regionchain's directory lists, by id (the directory's own region is not an
/// entry: its genesis is the one every node of it already holds), with the root its state
/// commits to. The directory region builds it from creations; every other region copies it
/// from a checkpoint of the directory region ([`Self::updated_to`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    entries: BTreeMap<ChainId, RegionEntry>,
    root: B256,
    /// The entries' encoded size.
    bytes: usize,
}

/// Why a directory carried by a checkpoint of the directory region was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ListingError {
    #[error("the listed regions are not in strictly increasing id order")]
    Unordered,
    #[error("a directory lists at most {MAX_REGIONS} regions in {MAX_DIRECTORY_BYTES} bytes")]
    TooLarge,
    #[error("the listing drops or changes region {0}, which this regionchain lists")]
    Drops(ChainId),
}

impl Directory {
    pub fn insert(&mut self, entry: RegionEntry) {
        self.entries.insert(entry.region, entry);
        self.root = Self::root_of(self.entries.values());
        self.bytes = Self::bytes_of(self.entries.values());
    }

    /// Whether `entry` can join without the directory outgrowing [`MAX_REGIONS`] and
    /// [`MAX_DIRECTORY_BYTES`].
    pub fn has_room_for(&self, entry: &RegionEntry) -> bool {
        self.entries.len() < MAX_REGIONS
            && self.bytes + canonical(entry).len() <= MAX_DIRECTORY_BYTES
    }

    fn bytes_of<'a>(entries: impl Iterator<Item = &'a RegionEntry>) -> usize {
        entries.map(|e| canonical(e).len()).sum()
    }

    pub fn get(&self, region: ChainId) -> Option<&RegionEntry> {
        self.entries.get(&region)
    }

    pub fn entries(&self) -> impl Iterator<Item = &RegionEntry> {
        self.entries.values()
    }

    pub fn ids(&self) -> impl Iterator<Item = ChainId> + '_ {
        self.entries.keys().copied()
    }

    /// What the regionchain's state root commits to: a hash over the entries in id order, zero
    /// while there is none (a regionchain without a directory hashes as before directories).
    pub fn root(&self) -> B256 {
        self.root
    }

    fn root_of<'a>(entries: impl ExactSizeIterator<Item = &'a RegionEntry>) -> B256 {
        if entries.len() == 0 {
            return B256::ZERO;
        }
        let encoded: Vec<Vec<u8>> = entries.map(canonical).collect();
        let parts: Vec<&[u8]> = std::iter::once(DIRECTORY_DOMAIN)
            .chain(encoded.iter().map(Vec::as_slice))
            .collect();
        sha256_concat(&parts)
    }

    /// This directory updated to the one `entries` list (in strictly increasing id order, as
    /// [`Self::entries`] gives them, within the size limits), when it keeps every entry this
    /// one has unchanged: the directory region only adds regions, so a listing that drops or
    /// edits one is not its.
    pub fn updated_to(&self, entries: &[RegionEntry]) -> Result<Directory, ListingError> {
        if entries.windows(2).any(|w| w[0].region >= w[1].region) {
            return Err(ListingError::Unordered);
        }
        let bytes = Self::bytes_of(entries.iter());
        if entries.len() > MAX_REGIONS || bytes > MAX_DIRECTORY_BYTES {
            return Err(ListingError::TooLarge);
        }
        let listed: BTreeMap<ChainId, RegionEntry> =
            entries.iter().map(|e| (e.region, e.clone())).collect();
        if let Some(dropped) = self
            .entries()
            .find(|kept| listed.get(&kept.region) != Some(kept))
        {
            return Err(ListingError::Drops(dropped.region));
        }
        Ok(Directory {
            root: Self::root_of(listed.values()),
            entries: listed,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash::sha256;

    const HERE: ChainId = ChainId(1000);
    /// The next region's id: right after this region's span.
    const NEXT: u64 = 1000 + REGION_ID_SPAN;

    fn keys() -> Vec<SecretKey> {
        (0..4)
            .map(|i| SecretKey::from_seed(sha256(format!("directory-{i}").as_bytes()).as_slice()))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn set(keys: &[SecretKey]) -> CnSet {
        CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap()
    }

    fn entry(region: u64) -> RegionEntry {
        RegionEntry {
            region: ChainId(region),
            genesis_hash: B256::repeat_byte(7),
            cn_set_root: B256::repeat_byte(9),
            rn_seeds: vec!["127.0.0.1:30400".into()],
        }
    }

    fn approved_by(keys: &[SecretKey], n: usize, entry: RegionEntry) -> RegionCreation {
        let approvers: Vec<(CnIndex, &SecretKey)> = keys
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, k)| (CnIndex(i as u32), k))
            .collect();
        approve_creation(HERE, &set(keys), entry, &approvers).unwrap()
    }

    #[test]
    fn a_listing_is_copied_only_in_order_and_keeping_every_entry_listed() {
        let mut here = Directory::default();
        assert_eq!(here.root(), B256::ZERO, "no directory, no root");
        here.insert(entry(NEXT));
        let one = here.root();
        assert_ne!(one, B256::ZERO);
        let later = [entry(NEXT), entry(NEXT + REGION_ID_SPAN)];
        let copied = here.updated_to(&later).unwrap();
        assert_eq!(
            copied.ids().collect::<Vec<_>>(),
            [later[0].region, later[1].region]
        );
        // The same root as the directory region's, built by creations.
        let mut built = here.clone();
        built.insert(later[1].clone());
        assert_eq!(copied.root(), built.root());
        assert_ne!(copied.root(), one);
        // Out of order or repeated: one directory has one encoding.
        let swapped = [later[1].clone(), later[0].clone()];
        assert_eq!(here.updated_to(&swapped), Err(ListingError::Unordered));
        let twice = [later[0].clone(), later[0].clone()];
        assert_eq!(here.updated_to(&twice), Err(ListingError::Unordered));
        // Dropping or editing an entry this directory has.
        let dropping = [later[1].clone()];
        assert_eq!(
            here.updated_to(&dropping),
            Err(ListingError::Drops(ChainId(NEXT)))
        );
        let mut edited = later.clone();
        edited[0].rn_seeds.push("127.0.0.1:1".into());
        assert_eq!(
            here.updated_to(&edited),
            Err(ListingError::Drops(ChainId(NEXT)))
        );
    }

    #[test]
    fn a_directory_has_room_for_a_bounded_number_of_regions_and_bytes() {
        let mut many = Directory::default();
        for i in 0..MAX_REGIONS as u64 {
            let next = entry(NEXT + i * REGION_ID_SPAN);
            assert!(many.has_room_for(&next), "entry {i}");
            many.insert(next);
        }
        let one_more = entry(NEXT + MAX_REGIONS as u64 * REGION_ID_SPAN);
        assert!(!many.has_room_for(&one_more));
        let listed: Vec<_> = many.entries().cloned().chain([one_more]).collect();
        assert_eq!(
            Directory::default().updated_to(&listed),
            Err(ListingError::TooLarge)
        );
        // Entries with every seed at its longest fill the bytes first.
        let fat = |i: u64| RegionEntry {
            rn_seeds: vec!["x".repeat(MAX_RN_SEED_BYTES); MAX_RN_SEEDS],
            ..entry(NEXT + i * REGION_ID_SPAN)
        };
        let fit = MAX_DIRECTORY_BYTES / canonical(&fat(0)).len();
        let mut heavy = Directory::default();
        for i in 0..fit as u64 {
            assert!(heavy.has_room_for(&fat(i)), "entry {i}");
            heavy.insert(fat(i));
        }
        assert!(!heavy.has_room_for(&fat(fit as u64)));
    }

    #[test]
    fn a_quorum_approved_creation_round_trips_and_verifies() {
        let keys = keys();
        let creation = approved_by(&keys, 3, entry(NEXT));
        let parsed = RegionCreation::from_system_tx(&creation.to_system_tx()).unwrap();
        assert_eq!(parsed, creation);
        parsed.verify(HERE, &set(&keys), [HERE]).unwrap();
        // The next region after this one's span is free; the last that fits is too.
        let last = MAX_CHAIN_ID + 1 - REGION_ID_SPAN;
        approved_by(&keys, 3, entry(last))
            .verify(HERE, &set(&keys), [HERE])
            .unwrap();
    }

    #[test]
    fn an_approval_counts_only_under_the_set_that_gave_it() {
        let keys = keys();
        // All four approve; in a later set of five, the same four at the same indices are
        // still a quorum.
        let creation = approved_by(&keys, 4, entry(NEXT));
        let mut later: Vec<_> = keys.iter().map(SecretKey::public_key).collect();
        later.push(SecretKey::from_seed(&[99; 32]).unwrap().public_key());
        let later = CnSet::new(later).unwrap();
        assert_eq!(
            creation.verify(HERE, &later, [HERE]),
            Err(DirectoryError::Approval(GovernanceError::BadApproval))
        );
    }

    #[test]
    fn forged_short_misdirected_and_overlapping_creations_are_refused() {
        let keys = keys();
        let current = set(&keys);
        // Two of four approvals are not more than two thirds.
        let short = approved_by(&keys, 2, entry(NEXT));
        assert!(matches!(
            short.verify(HERE, &current, [HERE]),
            Err(DirectoryError::Approval(GovernanceError::NoQuorum {
                got: 2,
                ..
            }))
        ));
        // An entry edited after approval: the signature no longer covers it.
        let mut edited = approved_by(&keys, 3, entry(NEXT));
        edited.entry.genesis_hash = B256::repeat_byte(8);
        assert_eq!(
            edited.verify(HERE, &current, [HERE]),
            Err(DirectoryError::Approval(GovernanceError::BadApproval))
        );
        // Signed by keys outside the set.
        let outsiders: Vec<SecretKey> = (0..4)
            .map(|i| SecretKey::from_seed(&[i + 50; 32]).unwrap())
            .collect();
        let (approvers, approval) = sign_approval(
            &current,
            &[
                (CnIndex(0), &outsiders[0]),
                (CnIndex(1), &outsiders[1]),
                (CnIndex(2), &outsiders[2]),
            ],
            &creation_message(HERE, current.root(), &entry(NEXT)),
        )
        .unwrap();
        let forged = RegionCreation {
            approvers,
            approval,
            ..approved_by(&keys, 3, entry(NEXT))
        };
        assert_eq!(
            forged.verify(HERE, &current, [HERE]),
            Err(DirectoryError::Approval(GovernanceError::BadApproval))
        );
        // For another region's directory.
        let creation = approved_by(&keys, 3, entry(NEXT));
        assert!(matches!(
            creation.verify(ChainId(3000), &current, [ChainId(3000)]),
            Err(DirectoryError::WrongDirectory { .. })
        ));
        // Ids that overlap a listed region's (its own, another's, or this one's chains).
        let overlapping = [
            (NEXT, NEXT),
            (NEXT + REGION_ID_SPAN / 2, NEXT),
            (NEXT - 1, 1000),
            (1, 1000),
        ];
        for (region, listed) in overlapping {
            let creation = approved_by(&keys, 3, entry(region));
            assert_eq!(
                creation.verify(HERE, &current, [HERE, ChainId(listed)]),
                Err(DirectoryError::Overlaps {
                    region: ChainId(region),
                    with: ChainId(listed)
                }),
                "region {region}"
            );
        }
        // Ids past the end of the chain-id range, region 0, too many or too long seeds.
        for region in [0, u64::MAX - 10, MAX_CHAIN_ID - REGION_ID_SPAN + 2] {
            let creation = approved_by(&keys, 3, entry(region));
            assert_eq!(
                creation.verify(HERE, &current, [HERE]),
                Err(DirectoryError::OutOfRange(ChainId(region)))
            );
        }
        let mut seeds = entry(NEXT);
        seeds.rn_seeds = vec!["x".into(); MAX_RN_SEEDS + 1];
        let creation = approved_by(&keys, 3, seeds);
        assert_eq!(
            creation.verify(HERE, &current, [HERE]),
            Err(DirectoryError::BadSeeds)
        );
        let mut long = entry(NEXT);
        long.rn_seeds = vec!["x".repeat(MAX_RN_SEED_BYTES + 1)];
        let creation = approved_by(&keys, 3, long);
        assert_eq!(
            creation.verify(HERE, &current, [HERE]),
            Err(DirectoryError::BadSeeds)
        );
    }
}
