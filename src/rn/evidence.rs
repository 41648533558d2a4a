//! Equivocation evidence: two sealed headers at one height with different hashes, each seal
//! carrying commit votes of that height's committee that verify.
//!
//! A pair proves misbehaviour when either
//! - both seals reach a quorum (> 2/3 of their round's committee): two blocks are final at one
//!   height, which the safety argument says takes more than a third of the committee breaking
//!   the protocol; or
//! - both seals are of the same round and share a signer: that CN signed commit votes for two
//!   blocks in one round (one such vote is enough — the second seal may be short of a quorum).
//!
//! Anything else (say, a lone commit vote for another block in another round) proves nothing
//! and is refused. Accepted evidence is kept in the RocksDB `meta` column family under
//! `rn/evidence/<height><id>`, deduplicated by [`EquivocationEvidence::id`], bounded in count.
//!
//! Nothing unverified may shadow real evidence: gossip is deduplicated by the full
//! [`EquivocationEvidence::digest`] (seals included) and only once a verdict exists, and
//! evidence for heights the node has not reached waits in [`PendingEvidence`] — a short window
//! above the node's next height, bounded in items and bytes.

use crate::consensus::certificate::CertificateError;
use crate::consensus::machine::Params;
use crate::consensus::selection::CnSet;
use crate::crypto::bls::{aggregate_public_keys, Signature, SignedMessage};
use crate::net::rn::PeerId;
use crate::storage::store::Store;
use crate::types::codec::{canonical, decode_exact};
use crate::types::{CnIndex, EquivocationEvidence, Height, Round, SealedHeader, Vote, VoteKind};
use alloy_primitives::hex;
use alloy_primitives::B256;
use alloy_rlp::{RlpDecodable, RlpEncodable};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use thiserror::Error;

/// Most evidence items kept; equivocation is rare, so reaching this means an attack on the
/// node's storage, which then keeps the first ones.
pub const MAX_EVIDENCE: usize = 4096;

/// Heights above the node's next one within which evidence may wait to be checked. A node
/// further behind is catching up and gets conflicting blocks from sync; farther items would pin
/// unverified bytes in memory for as long as the catch-up takes.
pub const PENDING_EVIDENCE_WINDOW: u64 = 64;
/// Evidence items waiting for the node to reach their height.
pub const MAX_PENDING_EVIDENCE: usize = 64;
/// Bytes of evidence waiting: one item may be two 4 MiB headers, so the count alone would let
/// unverified gossip hold half a gigabyte.
pub const MAX_PENDING_EVIDENCE_BYTES: usize = 16 << 20;

/// `meta` prefix of stored evidence.
const KEY_PREFIX: &[u8] = b"rn/evidence/";

/// Why a pair of headers is not evidence.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EvidenceError {
    #[error("the headers are not two different blocks at one height")]
    NotAConflict,
    #[error("the {which} seal does not verify: {error}")]
    Seal {
        which: &'static str,
        error: CertificateError,
    },
    #[error("the seals prove no misbehaviour (no two quorums, no shared signer in one round)")]
    NothingProven,
}

/// What a piece of evidence proves.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Finding {
    /// Both seals reach a quorum of their round's committee: two blocks final at one height.
    pub conflicting_quorums: bool,
    /// The two seals are of the same round.
    pub same_round: bool,
    /// CNs whose commit votes are in both seals (in one round: each signed two blocks).
    pub in_both: Vec<CnIndex>,
}

/// One seal after verification of its signature (quorum not required).
struct SealCheck {
    round: Round,
    signers: Vec<CnIndex>,
    quorum: bool,
}

/// Verifies the commit votes folded into `sealed`'s seal against the committee of its height
/// (drawn from `set` and `mix_before`, the mix of the height before).
fn check_seal(
    params: &Params,
    set: &CnSet,
    mix_before: B256,
    sealed: &SealedHeader,
) -> Result<SealCheck, CertificateError> {
    let (header, seal) = (&sealed.header, &sealed.seal);
    let committee = set.committee(mix_before, header.height, seal.round, params.committee_size);
    if !seal.signers.fits(committee.size()) || seal.signers.count() == 0 {
        return Err(CertificateError::BadBitmap {
            members: committee.size(),
        });
    }
    let signers: Vec<CnIndex> = seal
        .signers
        .signers()
        .map(|pos| committee.members[pos])
        .collect();
    let keys = signers
        .iter()
        .map(|cn| set.key(*cn))
        .collect::<Result<Vec<_>, _>>()?;
    let claim = SignedMessage {
        public_key: aggregate_public_keys(keys)?,
        message: Vote::signing_message(VoteKind::Commit, header.height, seal.round, sealed.hash()),
        signature: Signature::try_from(&seal.aggregate)?,
    };
    if !claim.verify() {
        return Err(CertificateError::BadSignature);
    }
    Ok(SealCheck {
        round: seal.round,
        quorum: signers.len() >= committee.quorum(),
        signers,
    })
}

/// Checks that `evidence` proves misbehaviour at its height, where `set` was in force and the
/// previous height's mix was `mix_before`.
pub fn check_evidence(
    params: &Params,
    set: &CnSet,
    mix_before: B256,
    evidence: &EquivocationEvidence,
) -> Result<Finding, EvidenceError> {
    if !evidence.is_conflict() {
        return Err(EvidenceError::NotAConflict);
    }
    let seal = |which, sealed| {
        check_seal(params, set, mix_before, sealed)
            .map_err(|error| EvidenceError::Seal { which, error })
    };
    let a = seal("first", &evidence.first)?;
    let b = seal("second", &evidence.second)?;
    let finding = Finding {
        conflicting_quorums: a.quorum && b.quorum,
        same_round: a.round == b.round,
        in_both: a
            .signers
            .iter()
            .filter(|cn| b.signers.contains(cn))
            .copied()
            .collect(),
    };
    if finding.conflicting_quorums || (finding.same_round && !finding.in_both.is_empty()) {
        Ok(finding)
    } else {
        Err(EvidenceError::NothingProven)
    }
}

/// Accepted evidence with what it proves.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct EvidenceRecord {
    pub evidence: EquivocationEvidence,
    pub finding: Finding,
}

impl EvidenceRecord {
    pub fn id(&self) -> B256 {
        self.evidence.id()
    }

    pub fn height(&self) -> Height {
        self.evidence.height()
    }

    /// The JSON shape served by `kaon_getEvidence`.
    pub fn to_json(&self) -> serde_json::Value {
        let header = |s: &SealedHeader| {
            serde_json::json!({
                "hash": s.hash().to_string(),
                "round": s.header.round.0,
                "proposer": s.header.proposer.0,
                "sealRound": s.seal.round.0,
                "signers": s.seal.signers.count(),
                "sealedHeader": format!("0x{}", hex::encode(canonical(s))),
            })
        };
        serde_json::json!({
            "id": self.id().to_string(),
            "height": self.height().0,
            "conflictingQuorums": self.finding.conflicting_quorums,
            "sameRound": self.finding.same_round,
            "inBoth": self.finding.in_both.iter().map(|cn| cn.0).collect::<Vec<_>>(),
            "first": header(&self.evidence.first),
            "second": header(&self.evidence.second),
        })
    }
}

/// Evidence this node holds: in memory for reads, in RocksDB for restarts.
#[derive(Debug)]
pub struct EvidenceBook {
    store: Arc<Store>,
    records: RwLock<BTreeMap<(Height, B256), EvidenceRecord>>,
}

fn key(height: Height, id: B256) -> Vec<u8> {
    [KEY_PREFIX, &height.to_be_bytes(), id.as_slice()].concat()
}

impl EvidenceBook {
    /// Loads the evidence stored in `store`.
    pub fn open(store: Arc<Store>) -> anyhow::Result<Self> {
        let mut records = BTreeMap::new();
        for (name, value) in store.meta_with_prefix(KEY_PREFIX, MAX_EVIDENCE)? {
            let record: EvidenceRecord = decode_exact(&value).map_err(|e| {
                anyhow::anyhow!(
                    "stored evidence {} does not decode: {e}",
                    hex::encode(&name)
                )
            })?;
            records.insert((record.height(), record.id()), record);
        }
        Ok(Self {
            store,
            records: RwLock::new(records),
        })
    }

    pub fn contains(&self, id: B256, height: Height) -> bool {
        self.read().contains_key(&(height, id))
    }

    /// Keeps `record` (persisted first); false when it was already known or the book is full.
    pub fn insert(&self, record: EvidenceRecord) -> anyhow::Result<bool> {
        let at = (record.height(), record.id());
        if self.read().contains_key(&at) {
            return Ok(false);
        }
        if self.len() >= MAX_EVIDENCE {
            tracing::warn!(
                limit = MAX_EVIDENCE,
                "evidence book full; new evidence not kept"
            );
            return Ok(false);
        }
        self.store.put_meta(&key(at.0, at.1), &canonical(&record))?;
        self.records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(at, record);
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evidence at or above `from`, lowest heights first, at most `limit`.
    pub fn list(&self, from: Height, limit: usize) -> Vec<EvidenceRecord> {
        self.read()
            .range((from, B256::ZERO)..)
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The `limit` highest-height items.
    pub fn latest(&self, limit: usize) -> Vec<EvidenceRecord> {
        self.read().values().rev().take(limit).cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(Height, B256), EvidenceRecord>> {
        // Inserts are single map operations; a poisoned lock still holds a consistent map.
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`PendingEvidence::offer`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Waiting for its height (or already waiting).
    Queued,
    /// Above the window: dropped, and may be offered again once the node is closer.
    TooFar,
    /// Over the item or byte bound, with nothing lower to make room: dropped.
    Full,
}

/// One waiting item: who sent it, its digest and size.
#[derive(Debug)]
struct Waiting {
    peer: PeerId,
    digest: B256,
    bytes: usize,
    evidence: EquivocationEvidence,
}

/// Unverified evidence for heights a little above the node's next one, bounded in height,
/// items and bytes. When full, an item closer to being checked displaces the highest one.
#[derive(Debug, Default)]
pub struct PendingEvidence {
    by_height: BTreeMap<Height, Vec<Waiting>>,
    items: usize,
    bytes: usize,
}

impl PendingEvidence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers evidence from `peer` while the node's next height is `next`. Items at or below
    /// `next` are the caller's to check now.
    pub fn offer(
        &mut self,
        next: Height,
        peer: PeerId,
        evidence: EquivocationEvidence,
    ) -> Deferral {
        let height = evidence.height();
        if height.0 > next.0.saturating_add(PENDING_EVIDENCE_WINDOW) {
            return Deferral::TooFar;
        }
        let digest = evidence.digest();
        if self
            .by_height
            .get(&height)
            .is_some_and(|w| w.iter().any(|i| i.digest == digest))
        {
            return Deferral::Queued;
        }
        let bytes = alloy_rlp::Encodable::length(&evidence);
        if bytes > MAX_PENDING_EVIDENCE_BYTES {
            return Deferral::Full;
        }
        while self.items >= MAX_PENDING_EVIDENCE || self.bytes + bytes > MAX_PENDING_EVIDENCE_BYTES
        {
            if !self.evict_above(height) {
                return Deferral::Full;
            }
        }
        self.items += 1;
        self.bytes += bytes;
        self.by_height.entry(height).or_default().push(Waiting {
            peer,
            digest,
            bytes,
            evidence,
        });
        Deferral::Queued
    }

    /// Drops one item of the highest height if that height is above `height`.
    fn evict_above(&mut self, height: Height) -> bool {
        let Some(mut highest) = self.by_height.last_entry() else {
            return false;
        };
        if *highest.key() <= height {
            return false;
        }
        if let Some(dropped) = highest.get_mut().pop() {
            self.items -= 1;
            self.bytes -= dropped.bytes;
        }
        if highest.get().is_empty() {
            highest.remove();
        }
        true
    }

    /// Removes and returns the items at heights up to `next` (now checkable), lowest first.
    pub fn take_ready(&mut self, next: Height) -> Vec<(PeerId, EquivocationEvidence)> {
        let later = self.by_height.split_off(&Height(next.0.saturating_add(1)));
        let ready = std::mem::replace(&mut self.by_height, later);
        let ready: Vec<Waiting> = ready.into_values().flatten().collect();
        self.items -= ready.len();
        self.bytes -= ready.iter().map(|w| w.bytes).sum::<usize>();
        ready.into_iter().map(|w| (w.peer, w.evidence)).collect()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
