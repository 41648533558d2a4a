//! Checkpoints of other regions' headers in a regionchain (`docs/regions.md`, "Checkpoints
//! between regions").
//!
//! A [`RegionCheckpoint`] carries a sealed header of a region the receiving regionchain lists
//! and the CN set that sealed it. Segment 0 accepts it when the set is the one it trusts for
//! that region — the listed entry's genesis set until a checkpointed header announces a
//! change, then the announced one — and strictly more than two thirds of that whole set
//! signed the header's commit, and the header is above the last one recorded. The recorded
//! [`RegionHead`]s are folded into the governance root, so each region's headers commit to
//! every other region's progress: the platform-wide loose ordering of the seed, and a root a
//! client of one region can check another region's block against (by its parent links down
//! from a checkpointed header).
//!
//! The directory region lists the regions it created; every other region lists the regions
//! its copy of that directory holds. The copy comes with the directory region's checkpoints:
//! one may carry a [`Listing`] — the directory, the directory region's head of each region, and
//! the roots of the header's segment 0 — which the receiver takes only when the roots hash to
//! the state root that segment commits to, the entries and heads to the roots' `directory`
//! part ([`platform_root`]), and it keeps every entry already listed; it then takes each head
//! further on than its own, so its trust in a region's CN set starts where the directory
//! region's stands. The header recorded last may come again with a listing (a checkpoint
//! without one can take its height first); a listing is looked at only as the first
//! checkpoint of a block, so every later one is checked against the trust it brought.
//!
//! Anyone may relay a checkpoint (an RN that follows both regions does, `node::relay`): it
//! proves itself, so a relayer is trusted with nothing but liveness.

use super::directory::{Directory, ListingError, RegionEntry, MAX_REGIONS};
use super::servicechain::RegionRoots;
use crate::consensus::certificate::{verify_certificate, CertificateError};
use crate::consensus::selection::{set_root, CnSet, SelectionError};
use crate::crypto::bls::PublicKeyBytes;
use crate::crypto::hash::sha256_concat;
use crate::types::codec::canonical;
use crate::types::system::{self, SystemKind, SystemTxError};
use crate::types::{BlockHash, ChainId, Header, Height, SealedHeader};
use alloy_primitives::{Bytes, B256};
use alloy_rlp::{RlpDecodable, RlpEncodable};
use thiserror::Error;

/// Checkpoints one segment 0 looks at, accepted or not: each costs its verification (up to
/// decompressing a CN set and a pairing), so a block's cost stays bounded whatever the queue
/// holds.
pub const MAX_REGION_CHECKPOINTS_PER_CONTAINER: usize = 16;
/// Tags the hash of a regionchain's view of the platform.
const PLATFORM_DOMAIN: &[u8] = b"KAON/platform/v1";

/// The system transaction that records another region's header.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
#[rlp(trailing(canonical))]
pub struct RegionCheckpoint {
    /// The regionchain recording it, so it is not replayed elsewhere.
    pub directory: ChainId,
    /// The other region's header and its commit certificate.
    pub sealed: SealedHeader,
    /// The CN set in force at the header's height, in order (its root is the header's).
    pub cn_set: Vec<PublicKeyBytes>,
    /// In a checkpoint of the directory region only: the platform as it records it at that
    /// header, which the receiving regionchain copies (absent: its copy stays as it is).
    pub listing: Option<Listing>,
}

/// The directory region's view of the platform at a header — its directory and its last
/// checkpoint of each region — with the roots of that header's segment 0 that prove it: the
/// roots hash to the segment's state root, and the entries and heads to the roots' `directory`
/// part ([`platform_root`]).
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Listing {
    pub roots: RegionRoots,
    pub entries: Vec<RegionEntry>,
    /// In strictly increasing region order.
    pub heads: Vec<RegionHead>,
}

/// What a regionchain commits to of the platform (its state root's `directory` part): the
/// regions its directory lists and its last checkpoint of each other region, in id order;
/// zero while it has neither (a single region hashes as before regions existed).
pub fn platform_root<'a>(
    directory: &Directory,
    heads: impl ExactSizeIterator<Item = &'a RegionHead>,
) -> B256 {
    if directory.root() == B256::ZERO && heads.len() == 0 {
        return B256::ZERO;
    }
    let heads: Vec<Vec<u8>> = heads.map(canonical).collect();
    let entries = directory.root();
    let parts: Vec<&[u8]> = [PLATFORM_DOMAIN, entries.as_slice()]
        .into_iter()
        .chain(heads.iter().map(Vec::as_slice))
        .collect();
    sha256_concat(&parts)
}

/// The regionchain state root `header`'s segment 0 commits to (none if it has no segment 0).
pub fn committed_state_root(header: &Header) -> Option<B256> {
    header
        .segments
        .first()
        .filter(|s| s.chain_id == header.region)
        .map(|s| s.state_root)
}

/// What a regionchain takes from a proven [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub directory: Directory,
    pub heads: Vec<RegionHead>,
}

impl Listing {
    /// A regionchain's view of the platform — its `roots`, `directory` and `heads` — as a
    /// listing (the relay's side, from the directory region's state).
    pub fn of<'a>(
        roots: RegionRoots,
        directory: &Directory,
        heads: impl Iterator<Item = &'a RegionHead>,
    ) -> Self {
        Self {
            roots,
            entries: directory.entries().cloned().collect(),
            heads: heads.copied().collect(),
        }
    }

    /// The view this listing proves `header` commits to, for a regionchain whose directory is
    /// `current` now.
    pub fn check(
        &self,
        header: &Header,
        current: &Directory,
    ) -> Result<Platform, RegionCheckpointError> {
        if committed_state_root(header) != Some(self.roots.state_root()) {
            return Err(RegionCheckpointError::ListingUnproven);
        }
        let directory = current.updated_to(&self.entries)?;
        let ordered = self.heads.windows(2).all(|w| w[0].region < w[1].region);
        if !ordered || self.heads.len() > MAX_REGIONS {
            return Err(RegionCheckpointError::ListingUnproven);
        }
        if platform_root(&directory, self.heads.iter()) != self.roots.directory {
            return Err(RegionCheckpointError::ListingUnproven);
        }
        Ok(Platform {
            directory,
            heads: self.heads.clone(),
        })
    }
}

/// What a regionchain has recorded of another region's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct RegionHead {
    pub region: ChainId,
    /// The last checkpointed header's height and hash.
    pub height: Height,
    pub hash: BlockHash,
    /// The root of the CN set that must seal the next checkpoint: the set in force at that
    /// header, or the one it announced.
    pub set_root: B256,
}

/// Why a checkpoint was refused (its system transaction is then marked invalid).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RegionCheckpointError {
    #[error("not a system transaction")]
    NotSystem,
    #[error("malformed region checkpoint: {0}")]
    Malformed(String),
    #[error("the checkpoint is for the regionchain of region {got}, this is region {expected}")]
    WrongDirectory { got: ChainId, expected: ChainId },
    #[error("region {0} is not in this directory")]
    NotListed(ChainId),
    #[error(
        "region {region} is checkpointed up to height {last}; height {height} is not above it"
    )]
    Stale {
        region: ChainId,
        height: Height,
        last: Height,
    },
    #[error(
        "the header is sealed by CN set {got}, the directory trusts {trusted} for region {region} \
         (a change is followed only through a checkpointed header that announced it)"
    )]
    UntrustedSet {
        region: ChainId,
        got: B256,
        trusted: B256,
    },
    #[error("the CN set carried ({carried}) is not the header's ({header})")]
    SetNotHeaders { carried: B256, header: B256 },
    #[error(
        "a checkpoint of region {0} carries a directory listing; only the directory region's do"
    )]
    ListingNotFromDirectory(ChainId),
    #[error("the directory listing is not the one the header's segment 0 commits to")]
    ListingUnproven,
    #[error(
        "the header of region {0} recorded last, sent again with a listing that changes nothing"
    )]
    NothingNew(ChainId),
    #[error("a checkpoint carrying a listing must be the first region checkpoint of its block")]
    ListingNotFirst,
    #[error("directory listing: {0}")]
    Listing(#[from] ListingError),
    #[error("region {0} already has a checkpoint in this block")]
    AlreadyInBlock(ChainId),
    #[error("at most {MAX_REGION_CHECKPOINTS_PER_CONTAINER} region checkpoints per block")]
    TooManyInBlock,
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error("commit certificate: {0}")]
    Certificate(#[from] CertificateError),
}

impl RegionCheckpoint {
    pub fn to_system_tx(&self) -> Bytes {
        system::encode(SystemKind::RegionCheckpoint, self)
    }

    pub fn from_system_tx(raw: &[u8]) -> Result<Self, RegionCheckpointError> {
        system::decode(raw, SystemKind::RegionCheckpoint).map_err(|e| match e {
            SystemTxError::NotSystem => RegionCheckpointError::NotSystem,
            other => RegionCheckpointError::Malformed(other.to_string()),
        })
    }

    /// The region whose header this is.
    pub fn region(&self) -> ChainId {
        self.sealed.header.region
    }

    /// What can be checked without signature work: the regionchain, the region listed and not
    /// this one, the header above the last checkpoint, sealed by the trusted set, which is the
    /// set carried. A checkpoint failing it can never be accepted (a proposer drops it unseen).
    pub fn precheck(
        &self,
        here: ChainId,
        entry: Option<&RegionEntry>,
        last: Option<&RegionHead>,
    ) -> Result<(), RegionCheckpointError> {
        if self.directory != here {
            return Err(RegionCheckpointError::WrongDirectory {
                got: self.directory,
                expected: here,
            });
        }
        let header = &self.sealed.header;
        let region = header.region;
        let entry = entry
            .filter(|e| e.region == region && region != here)
            .ok_or(RegionCheckpointError::NotListed(region))?;
        if let Some(last) = last.filter(|l| header.height <= l.height) {
            return Err(RegionCheckpointError::Stale {
                region,
                height: header.height,
                last: last.height,
            });
        }
        let trusted = last.map_or(entry.cn_set_root, |l| l.set_root);
        if header.cn_set_root != trusted {
            return Err(RegionCheckpointError::UntrustedSet {
                region,
                got: header.cn_set_root,
                trusted,
            });
        }
        self.carries_headers_set()
    }

    /// What is checked without signature work of the header recorded last, sent again with a
    /// listing: the regionchain, and the carried set the header's (its height and set were
    /// checked when it was recorded, and the seal is checked as for any checkpoint).
    pub fn precheck_again(&self, here: ChainId) -> Result<(), RegionCheckpointError> {
        if self.directory != here {
            return Err(RegionCheckpointError::WrongDirectory {
                got: self.directory,
                expected: here,
            });
        }
        self.carries_headers_set()
    }

    fn carries_headers_set(&self) -> Result<(), RegionCheckpointError> {
        let carried = set_root(&self.cn_set);
        let header = self.sealed.header.cn_set_root;
        match carried == header {
            true => Ok(()),
            false => Err(RegionCheckpointError::SetNotHeaders { carried, header }),
        }
    }

    /// Checks the checkpoint in regionchain `here`, whose directory lists the region as
    /// `entry` (`None`: not listed) and has recorded `last` of it; the head it records.
    /// [`Self::precheck`] first, so ids, height and set roots are compared before any key is
    /// decompressed or any pairing is computed.
    pub fn verify(
        &self,
        here: ChainId,
        entry: Option<&RegionEntry>,
        last: Option<&RegionHead>,
    ) -> Result<RegionHead, RegionCheckpointError> {
        self.precheck(here, entry, last)?;
        verify_seal(&self.sealed, &self.cn_set)?;
        Ok(self.head())
    }

    /// The head this checkpoint records once accepted: its header's height and hash, and the
    /// set root the next checkpoint needs (the set it announced, or the one that sealed it).
    pub fn head(&self) -> RegionHead {
        let header = &self.sealed.header;
        RegionHead {
            region: header.region,
            height: header.height,
            hash: self.sealed.hash(),
            set_root: match header.next_cn_set.as_slice() {
                [] => header.cn_set_root,
                next => set_root(next),
            },
        }
    }
}

/// Checks that strictly more than two thirds of the **whole** CN set `cn_set` (the set in
/// force at the header, whose root the caller compared) signed `sealed`'s commit: one
/// aggregate pairing check, after decompressing the set.
pub fn verify_seal(
    sealed: &SealedHeader,
    cn_set: &[PublicKeyBytes],
) -> Result<(), RegionCheckpointError> {
    let set = CnSet::from_bytes(cn_set)?;
    let committee = set.whole_committee(sealed.header.height, sealed.seal.round);
    verify_certificate(&set, &committee, sealed.hash(), &sealed.seal)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::consensus::certificate::aggregate_commit_votes;
    use crate::crypto::bls::SecretKey;
    use crate::crypto::hash::sha256;
    use crate::types::{
        block::HEADER_VERSION, CnIndex, CommitCertificate, Header, Round, SignerBitmap, Vote,
        VoteKind,
    };

    pub(crate) const HERE: ChainId = ChainId(1000);
    pub(crate) const OTHER: ChainId = ChainId(1_001_000);

    pub(crate) fn cn_keys(tag: &str) -> Vec<SecretKey> {
        (0..4)
            .map(|i| SecretKey::from_seed(sha256(format!("{tag}-{i}").as_bytes()).as_slice()))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn compressed(keys: &[SecretKey]) -> Vec<PublicKeyBytes> {
        keys.iter().map(|k| k.public_key().to_bytes()).collect()
    }

    pub(crate) fn entry(keys: &[SecretKey]) -> RegionEntry {
        RegionEntry {
            region: OTHER,
            genesis_hash: B256::repeat_byte(7),
            cn_set_root: set_root(&compressed(keys)),
            rn_seeds: Vec::new(),
        }
    }

    /// Region OTHER's header at `height`, sealed by the first `signers` of `keys` (its whole
    /// CN set; `next` announced).
    pub(crate) fn sealed(
        keys: &[SecretKey],
        height: u64,
        signers: usize,
        next: &[SecretKey],
    ) -> SealedHeader {
        let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
        let header = Header {
            version: HEADER_VERSION,
            region: OTHER,
            height: Height(height),
            round: Round(0),
            parent: BlockHash(B256::repeat_byte(1)),
            timestamp_ms: 1_700_000_000_000,
            proposer: CnIndex(0),
            random_reveal: keys[0].sign(b"reveal").to_bytes(),
            mix: B256::repeat_byte(2),
            cn_set_root: set.root(),
            next_cn_set: compressed(next),
            segments: Vec::new(),
        };
        seal(keys, header, signers)
    }

    /// `header` sealed by every one of `keys` (its whole CN set).
    pub(crate) fn reseal(keys: &[SecretKey], header: Header) -> SealedHeader {
        seal(keys, header, keys.len())
    }

    /// `header` sealed in round 1 by the first `signers` of `keys` (a quorum at least).
    fn seal(keys: &[SecretKey], header: Header, signers: usize) -> SealedHeader {
        let set = CnSet::new(keys.iter().map(SecretKey::public_key).collect()).unwrap();
        let hash = header.hash();
        let round = Round(1);
        let committee = set.whole_committee(header.height, round);
        let message = Vote::signing_message(VoteKind::Commit, header.height, round, hash);
        let votes: Vec<_> = keys
            .iter()
            .enumerate()
            .take(signers)
            .map(|(i, k)| (CnIndex(i as u32), k.sign(&message)))
            .collect();
        let seal: CommitCertificate = aggregate_commit_votes(&committee, &votes).unwrap();
        SealedHeader { header, seal }
    }

    pub(crate) fn checkpoint(keys: &[SecretKey], sealed: SealedHeader) -> RegionCheckpoint {
        RegionCheckpoint {
            directory: HERE,
            sealed,
            cn_set: compressed(keys),
            listing: None,
        }
    }

    #[test]
    fn a_quorum_sealed_header_is_recorded_and_round_trips() {
        let keys = cn_keys("other");
        let cp = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        let parsed = RegionCheckpoint::from_system_tx(&cp.to_system_tx()).unwrap();
        assert_eq!(parsed, cp);
        let head = parsed.verify(HERE, Some(&entry(&keys)), None).unwrap();
        assert_eq!(head.region, OTHER);
        assert_eq!(head.height, Height(5));
        assert_eq!(head.hash, cp.sealed.hash());
        assert_eq!(head.set_root, entry(&keys).cn_set_root);
        // The next one must be higher.
        assert_eq!(
            parsed.verify(HERE, Some(&entry(&keys)), Some(&head)),
            Err(RegionCheckpointError::Stale {
                region: OTHER,
                height: Height(5),
                last: Height(5)
            })
        );
        let later = checkpoint(&keys, sealed(&keys, 6, 4, &[]));
        assert!(later.verify(HERE, Some(&entry(&keys)), Some(&head)).is_ok());
    }

    #[test]
    fn a_checkpoint_without_a_listing_has_one_encoding() {
        use alloy_rlp::Encodable;
        let keys = cn_keys("other");
        let cp = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        // The same fields followed by an empty string where the listing would be.
        let mut fields = Vec::new();
        cp.directory.encode(&mut fields);
        cp.sealed.encode(&mut fields);
        cp.cn_set.encode(&mut fields);
        fields.push(alloy_rlp::EMPTY_STRING_CODE);
        let mut raw = vec![
            crate::types::system::SYSTEM_TX_PREFIX,
            SystemKind::RegionCheckpoint as u8,
        ];
        alloy_rlp::Header {
            list: true,
            payload_length: fields.len(),
        }
        .encode(&mut raw);
        raw.extend_from_slice(&fields);
        assert!(matches!(
            RegionCheckpoint::from_system_tx(&raw),
            Err(RegionCheckpointError::Malformed(_))
        ));
        assert_eq!(
            RegionCheckpoint::from_system_tx(&cp.to_system_tx()).unwrap(),
            cp
        );
    }

    #[test]
    fn short_forged_unlisted_and_misdirected_checkpoints_are_refused() {
        let keys = cn_keys("other");
        let listed = entry(&keys);
        // Two of four signers are not more than two thirds (a bitmap with one signer less).
        let mut short = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        short.sealed.seal.signers = SignerBitmap(Bytes::from_static(&[0b0011]));
        assert!(matches!(
            short.verify(HERE, Some(&listed), None),
            Err(RegionCheckpointError::Certificate(
                CertificateError::NoQuorum { .. }
            ))
        ));
        // A header edited after sealing: the certificate no longer covers it.
        let mut edited = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        edited.sealed.header.timestamp_ms += 1;
        assert_eq!(
            edited.verify(HERE, Some(&listed), None),
            Err(RegionCheckpointError::Certificate(
                CertificateError::BadSignature
            ))
        );
        // A set of the forger's own, sealing a header that names it: not the trusted set.
        let forger = cn_keys("forger");
        let forged = checkpoint(&forger, sealed(&forger, 5, 4, &[]));
        assert!(matches!(
            forged.verify(HERE, Some(&listed), None),
            Err(RegionCheckpointError::UntrustedSet { .. })
        ));
        // The trusted header, but another set carried beside it.
        let mut swapped = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        swapped.cn_set = compressed(&forger);
        assert!(matches!(
            swapped.verify(HERE, Some(&listed), None),
            Err(RegionCheckpointError::SetNotHeaders { .. })
        ));
        // Unlisted, or for another regionchain, or this region's own header.
        let cp = checkpoint(&keys, sealed(&keys, 5, 3, &[]));
        assert_eq!(
            cp.verify(HERE, None, None),
            Err(RegionCheckpointError::NotListed(OTHER))
        );
        assert!(matches!(
            cp.verify(ChainId(3000), Some(&listed), None),
            Err(RegionCheckpointError::WrongDirectory { .. })
        ));
        let own = RegionCheckpoint {
            directory: OTHER,
            ..cp.clone()
        };
        assert_eq!(
            own.verify(OTHER, Some(&listed), None),
            Err(RegionCheckpointError::NotListed(OTHER))
        );
    }

    #[test]
    fn a_set_change_is_followed_only_through_the_header_that_announced_it() {
        let (old, new) = (cn_keys("other"), cn_keys("other-next"));
        let listed = entry(&old);
        // A header sealed by the new set before the change was checkpointed: refused.
        let early = checkpoint(&new, sealed(&new, 9, 4, &[]));
        assert!(matches!(
            early.verify(HERE, Some(&listed), None),
            Err(RegionCheckpointError::UntrustedSet { .. })
        ));
        // The old set's header announcing the new set moves the trust...
        let announcing = checkpoint(&old, sealed(&old, 8, 3, &new));
        let head = announcing.verify(HERE, Some(&listed), None).unwrap();
        assert_eq!(head.set_root, set_root(&compressed(&new)));
        // ... so the new set's header verifies, and the old set's no longer does.
        assert!(early.verify(HERE, Some(&listed), Some(&head)).is_ok());
        let stale_set = checkpoint(&old, sealed(&old, 9, 4, &[]));
        assert!(matches!(
            stale_set.verify(HERE, Some(&listed), Some(&head)),
            Err(RegionCheckpointError::UntrustedSet { .. })
        ));
    }
}
