//! Vote bookkeeping for one height: who voted what in each round and phase, with double votes
//! detected, and quorum certificates built from the tallies.

use super::selection::Committee;
use crate::crypto::bls::{self, Signature, SignatureBytes};
use crate::types::{BlockHash, CnIndex, PreparedCertificate, Round, SignerBitmap, VoteKind};
use std::collections::{BTreeMap, HashMap};

/// Result of recording one vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new vote.
    New,
    /// The same vote again: ignored.
    Duplicate,
    /// The voter already voted for another block in this round and phase: Byzantine.
    Conflicting { earlier: BlockHash },
}

/// All verified votes of one height.
#[derive(Debug, Default)]
pub struct Tally {
    votes: HashMap<(VoteKind, Round), BTreeMap<CnIndex, (BlockHash, SignatureBytes)>>,
}

impl Tally {
    /// Records a vote whose signature has already been verified.
    pub fn record(
        &mut self,
        kind: VoteKind,
        round: Round,
        voter: CnIndex,
        hash: BlockHash,
        sig: SignatureBytes,
    ) -> Recorded {
        let round_votes = self.votes.entry((kind, round)).or_default();
        match round_votes.get(&voter) {
            Some((earlier, _)) if *earlier == hash => Recorded::Duplicate,
            Some((earlier, _)) => Recorded::Conflicting { earlier: *earlier },
            None => {
                round_votes.insert(voter, (hash, sig));
                Recorded::New
            }
        }
    }

    /// Drops the votes of rounds before `round`.
    pub fn forget_before(&mut self, round: Round) {
        self.votes.retain(|(_, r), _| *r >= round);
    }

    /// Votes for `hash` in this round and phase.
    pub fn count(&self, kind: VoteKind, round: Round, hash: BlockHash) -> usize {
        self.votes
            .get(&(kind, round))
            .map_or(0, |v| v.values().filter(|(h, _)| *h == hash).count())
    }

    /// The signers for `hash` as committee positions and their signatures, ascending by CN.
    fn signers(
        &self,
        committee: &Committee,
        kind: VoteKind,
        round: Round,
        hash: BlockHash,
    ) -> (SignerBitmap, Vec<Signature>) {
        let mut bitmap = SignerBitmap::with_members(committee.size());
        let mut sigs = Vec::new();
        for (cn, (h, sig)) in self.votes.get(&(kind, round)).into_iter().flatten() {
            let (Some(pos), true) = (committee.position(*cn), *h == hash) else {
                continue;
            };
            // Votes are verified before they are recorded, so the bytes decode.
            if let Ok(sig) = Signature::try_from(sig) {
                bitmap.set(pos);
                sigs.push(sig);
            }
        }
        (bitmap, sigs)
    }

    /// Aggregates the votes for `hash` into `(bitmap, aggregate signature)`, or `None` short of
    /// a quorum.
    pub fn certify(
        &self,
        committee: &Committee,
        kind: VoteKind,
        round: Round,
        hash: BlockHash,
    ) -> Option<(SignerBitmap, SignatureBytes)> {
        // Counting is cheap, decoding signatures is not: a leader asks on every vote it
        // receives, so below a quorum nothing is decoded (votes come from members only).
        if self.count(kind, round, hash) < committee.quorum() {
            return None;
        }
        let (bitmap, sigs) = self.signers(committee, kind, round, hash);
        if sigs.len() < committee.quorum() {
            return None;
        }
        let aggregate = bls::aggregate_signatures(&sigs).ok()?;
        Some((bitmap, aggregate.to_bytes()))
    }

    /// A prepared certificate for `hash` at `round`, if a quorum prepared it.
    pub fn prepared(
        &self,
        committee: &Committee,
        round: Round,
        hash: BlockHash,
    ) -> Option<PreparedCertificate> {
        let (signers, aggregate) = self.certify(committee, VoteKind::Prepare, round, hash)?;
        Some(PreparedCertificate {
            round,
            block_hash: hash,
            signers,
            aggregate,
        })
    }
}
