//! Commit certificates: a quorum of one committee's commit votes folded into one aggregate
//! BLS signature plus a signer bitmap — the seal of every container.
//!
//! Verification is counted against the *committee of the certificate's round*, never the whole
//! CN set, and costs about one signature check whatever the committee size: the signers' keys
//! are summed and the aggregate signature is verified once. Many certificates (an RN catching
//! up) go through [`verify_certificates`], one randomized batch for all of them.
//!
//! A signer bit names a committee position, hence one CN index, hence one key: a [`CnSet`]
//! holds distinct keys, each admitted with a proof of possession, so the key sum cannot hide a
//! rogue key and no key counts twice toward a quorum.

use super::selection::{CnSet, Committee, SelectionError};
use crate::crypto::bls::{self, BatchFailure, BlsError, Signature, SignatureBytes, SignedMessage};
use crate::types::{BlockHash, CnIndex, CommitCertificate, Round, SignerBitmap, Vote, VoteKind};
use thiserror::Error;

/// Why a certificate was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CertificateError {
    #[error("certificate is for round {got}, committee is for round {expected}")]
    WrongRound { got: u32, expected: u32 },
    #[error("signer bitmap does not fit a committee of {members}")]
    BadBitmap { members: usize },
    #[error("{signers} signers is short of the quorum of {quorum}")]
    NoQuorum { signers: usize, quorum: usize },
    #[error("CN {0} is not on the committee")]
    NotOnCommittee(CnIndex),
    #[error("aggregate signature does not verify")]
    BadSignature,
    #[error(transparent)]
    Bls(#[from] BlsError),
    #[error(transparent)]
    Selection(#[from] SelectionError),
}

/// Turns a certificate into the single claim "the sum of the signers' keys signed the commit
/// message", after the structural checks (round, bitmap shape, quorum).
pub fn certificate_claim(
    set: &CnSet,
    committee: &Committee,
    block_hash: BlockHash,
    cert: &CommitCertificate,
) -> Result<SignedMessage, CertificateError> {
    if cert.round != committee.round {
        return Err(CertificateError::WrongRound {
            got: cert.round.0,
            expected: committee.round.0,
        });
    }
    let quorum = QuorumSignature {
        kind: VoteKind::Commit,
        round: cert.round,
        block_hash,
        signers: &cert.signers,
        aggregate: &cert.aggregate,
    };
    quorum.claim(set, committee)
}

/// A quorum's aggregate signature over one vote message: the common shape of commit
/// certificates and prepared certificates.
#[derive(Debug, Clone, Copy)]
pub struct QuorumSignature<'a> {
    pub kind: VoteKind,
    pub round: Round,
    pub block_hash: BlockHash,
    pub signers: &'a SignerBitmap,
    pub aggregate: &'a SignatureBytes,
}

impl QuorumSignature<'_> {
    /// Structural checks (bitmap shape, quorum of `committee`) and the single claim to verify.
    pub fn claim(
        &self,
        set: &CnSet,
        committee: &Committee,
    ) -> Result<SignedMessage, CertificateError> {
        if !self.signers.fits(committee.size()) {
            return Err(CertificateError::BadBitmap {
                members: committee.size(),
            });
        }
        let signers = self.signers.count();
        if signers < committee.quorum() {
            return Err(CertificateError::NoQuorum {
                signers,
                quorum: committee.quorum(),
            });
        }
        let keys = self
            .signers
            .signers()
            .map(|pos| set.key(committee.members[pos]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignedMessage {
            public_key: bls::aggregate_public_keys(keys)?,
            message: Vote::signing_message(
                self.kind,
                committee.height,
                self.round,
                self.block_hash,
            ),
            signature: Signature::try_from(self.aggregate)?,
        })
    }

    /// Verifies the quorum signature against `committee`.
    pub fn verify(&self, set: &CnSet, committee: &Committee) -> Result<(), CertificateError> {
        if self.claim(set, committee)?.verify() {
            Ok(())
        } else {
            Err(CertificateError::BadSignature)
        }
    }
}

/// Verifies one certificate for `block_hash` against `committee`.
pub fn verify_certificate(
    set: &CnSet,
    committee: &Committee,
    block_hash: BlockHash,
    cert: &CommitCertificate,
) -> Result<(), CertificateError> {
    if certificate_claim(set, committee, block_hash, cert)?.verify() {
        Ok(())
    } else {
        Err(CertificateError::BadSignature)
    }
}

/// Verifies many prepared certificate claims in one randomized batch; names the bad ones.
pub fn verify_certificates(claims: &[SignedMessage]) -> Result<(), BatchFailure> {
    bls::batch_verify(claims)
}

/// Folds commit votes of `committee` (signatures already verified one by one as they arrived)
/// into a certificate. Votes from non-members are refused; duplicates count once.
pub fn aggregate_commit_votes(
    committee: &Committee,
    votes: &[(CnIndex, Signature)],
) -> Result<CommitCertificate, CertificateError> {
    let mut bitmap = SignerBitmap::with_members(committee.size());
    let mut sigs = Vec::with_capacity(votes.len());
    for (cn, sig) in votes {
        let pos = committee
            .position(*cn)
            .ok_or(CertificateError::NotOnCommittee(*cn))?;
        if !bitmap.get(pos) {
            bitmap.set(pos);
            sigs.push(sig);
        }
    }
    if sigs.len() < committee.quorum() {
        return Err(CertificateError::NoQuorum {
            signers: sigs.len(),
            quorum: committee.quorum(),
        });
    }
    Ok(CommitCertificate {
        round: committee.round,
        signers: bitmap,
        aggregate: bls::aggregate_signatures(sigs)?.to_bytes(),
    })
}
