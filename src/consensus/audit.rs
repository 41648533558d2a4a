//! The consensus half of auditing decided blocks — what a ranger node does to every block it
//! syncs, and a CN to the blocks its peers send ahead of its height while it catches up: for
//! consecutive blocks on top of a known tip,
//! the header chain (version, region, height, parent, timestamp, CN-set root, proposer of the
//! header's round, mix), the body against the header's commitments, the proposer's random
//! reveal, and the commit certificate — more than two thirds of *that round's* committee.
//!
//! Nothing is verified one signature at a time: walking the headers turns every block into two
//! claims (its reveal, and its certificate as "the sum of the signers' keys signed the commit
//! message"), and all claims of a batch are checked in one randomized BLS batch
//! ([`verify_certificates`]). When the batch fails, bisection names the bad claims and the
//! audit keeps the blocks before the first one. Re-execution (the other half) is the
//! application's, on the blocks that pass here.

use super::interface::{Params, Tip};
use crate::consensus::certificate::{certificate_claim, verify_certificates, CertificateError};
use crate::consensus::proposal::{check_body, ProposalError};
use crate::consensus::selection::{next_mix, reveal_message, CnSet, SelectionError};
use crate::crypto::bls::{batch_holds, Signature, SignedMessage};
use crate::types::block::HEADER_VERSION;
use crate::types::{Block, RandomReveal};
use std::borrow::Borrow;
use std::sync::Arc;
use thiserror::Error;

/// Why a block failed its audit. [`AuditError::kind`] names the class for metrics.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuditError {
    #[error("header field {0} is wrong")]
    Header(&'static str),
    #[error("{0}")]
    Body(ProposalError),
    #[error("the random reveal does not verify")]
    Reveal,
    #[error("commit certificate: {0}")]
    Certificate(#[from] CertificateError),
    #[error("the announced CN set is invalid: {0}")]
    CnSet(SelectionError),
    #[error("re-execution: {0}")]
    Execution(#[from] super::interface::InvalidBlock),
    #[error("conflicts with the stored block at its height and its seal does not verify: {0}")]
    Conflict(String),
}

impl AuditError {
    /// A short, stable name of the failure class (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Header(_) => "header",
            Self::Body(_) => "body",
            Self::Reveal => "reveal",
            Self::Certificate(_) => "certificate",
            Self::CnSet(_) => "cn_set",
            Self::Execution(_) => "execution",
            Self::Conflict(_) => "conflict",
        }
    }

    /// Every class, for metrics that list zeroes too.
    pub const KINDS: [&'static str; 7] = [
        "header",
        "body",
        "reveal",
        "certificate",
        "cn_set",
        "execution",
        "conflict",
    ];
}

/// What the next block must extend: the committed tip and the CN set in force after it.
#[derive(Debug, Clone)]
pub struct ChainState {
    pub tip: Tip,
    pub set: Arc<CnSet>,
}

/// The result of auditing a batch: a passing prefix, and the first failure if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOutcome {
    /// Blocks `0..passed` passed every consensus check.
    pub passed: usize,
    /// The first block that did not, with the reason (its index is `passed`).
    pub failure: Option<(usize, AuditError)>,
}

/// The two claims of one block: its random reveal and its commit certificate.
const CLAIMS_PER_BLOCK: usize = 2;

/// Audits the consensus of `blocks` (consecutive, starting at `state.tip.height + 1`).
pub fn audit_consensus(params: &Params, state: &ChainState, blocks: &[Block]) -> AuditOutcome {
    let (claims, failure) = run_claims(params, state, blocks);
    match verify_certificates(&claims) {
        Ok(()) => AuditOutcome {
            passed: claims.len() / CLAIMS_PER_BLOCK,
            failure,
        },
        Err(bad) => {
            // Invariant: a failed batch names at least one claim.
            let first = bad.bad[0];
            let i = first / CLAIMS_PER_BLOCK;
            let reason = match first % CLAIMS_PER_BLOCK {
                0 => AuditError::Reveal,
                _ => AuditError::Certificate(CertificateError::BadSignature),
            };
            AuditOutcome {
                passed: i,
                failure: Some((i, reason)),
            }
        }
    }
}

/// How many of `blocks` (consecutive, on top of `state.tip`) pass every consensus check, with
/// their signatures checked in one batch and no bisection: 0 when the batch fails. For blocks
/// that may come from a hostile peer ahead of their height, where a failure costs one batch
/// and the blocks are then checked one by one as usual.
pub fn verified_prefix(params: &Params, state: &ChainState, blocks: &[&Block]) -> usize {
    let (claims, _) = run_claims(params, state, blocks);
    if batch_holds(&claims) {
        claims.len() / CLAIMS_PER_BLOCK
    } else {
        0
    }
}

/// Walks the header chain of `blocks`: the signature claims of the blocks that pass every
/// other check, and the first block that does not (with the reason).
fn run_claims<B: Borrow<Block>>(
    params: &Params,
    state: &ChainState,
    blocks: &[B],
) -> (Vec<SignedMessage>, Option<(usize, AuditError)>) {
    let mut claims = Vec::with_capacity(blocks.len() * CLAIMS_PER_BLOCK);
    let (mut tip, mut set) = (state.tip, Arc::clone(&state.set));
    for (i, block) in blocks.iter().map(Borrow::borrow).enumerate() {
        let checked = block_claims(params, &set, &tip, block).and_then(|claims| {
            let next = announced_set(block)?;
            Ok((claims, next))
        });
        match checked {
            Ok((own, next)) => {
                claims.extend(own);
                tip = Tip::of(block);
                if let Some(next) = next {
                    set = Arc::new(next);
                }
            }
            Err(e) => return (claims, Some((i, e))),
        }
    }
    (claims, None)
}

/// The CN set a block announces for the next height, validated.
fn announced_set(block: &Block) -> Result<Option<CnSet>, AuditError> {
    let keys = &block.header().next_cn_set;
    if keys.is_empty() {
        return Ok(None);
    }
    CnSet::from_bytes(keys).map(Some).map_err(AuditError::CnSet)
}

/// Every check of one block that needs no signature verification, and the two claims that
/// remain: `[reveal, certificate]`.
pub fn block_claims(
    params: &Params,
    set: &CnSet,
    tip: &Tip,
    block: &Block,
) -> Result<[SignedMessage; CLAIMS_PER_BLOCK], AuditError> {
    let header = block.header();
    let seal = &block.sealed.seal;
    let checks = [
        (header.version == HEADER_VERSION, "version"),
        (header.region == params.region, "region"),
        (header.height == tip.height.next(), "height"),
        (header.parent == tip.hash, "parent"),
        (header.timestamp_ms > tip.timestamp_ms, "timestamp"),
        (header.cn_set_root == set.root(), "cn_set_root"),
        (header.round <= seal.round, "round"),
        (
            header.mix == next_mix(tip.mix, &RandomReveal(header.random_reveal)),
            "mix",
        ),
    ];
    if let Some((_, field)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(AuditError::Header(field));
    }
    let committee = set.committee(tip.mix, header.height, seal.round, params.committee_size);
    let proposer = if header.round == seal.round {
        committee.proposer
    } else {
        set.committee(tip.mix, header.height, header.round, params.committee_size)
            .proposer
    };
    if header.proposer != proposer {
        return Err(AuditError::Header("proposer"));
    }
    check_body(block).map_err(AuditError::Body)?;
    let reveal = SignedMessage {
        public_key: *set
            .key(header.proposer)
            .map_err(|_| AuditError::Header("proposer"))?,
        message: reveal_message(header.height),
        signature: Signature::try_from(&header.random_reveal).map_err(|_| AuditError::Reveal)?,
    };
    let certificate = certificate_claim(set, &committee, block.hash(), seal)?;
    Ok([reveal, certificate])
}

/// Why a peer's claimed head was not trusted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HeadClaimError {
    #[error("the peer sent no block at the height it claimed (or below it)")]
    Missing,
    #[error("the claimed block does not extend the block sent as its parent")]
    NotParent,
    #[error("the claimed block is for another region")]
    Region,
    /// Not the peer's fault: the chain moved to a CN set this node has not reached yet.
    #[error("the claimed block is certified by a CN set this node does not know yet")]
    OtherSet,
    #[error("commit certificate: {0}")]
    Certificate(#[from] CertificateError),
}

impl HeadClaimError {
    /// Whether the peer that made the claim is to blame (an unknown CN set is no lie).
    pub fn blames_peer(&self) -> bool {
        !matches!(self, Self::OtherSet)
    }
}

/// Checks a head claimed by a peer: `block` must carry the commit certificate of a quorum of
/// its round's committee in `set`, the committee drawn from `parent`'s mix (the parent is bound
/// to the block by hash, so the claim needs a real quorum's signatures on the real block).
/// Only a claim that passes may move how far the node believes the chain goes.
pub fn verify_head(
    params: &Params,
    set: &CnSet,
    parent: &Block,
    block: &Block,
) -> Result<(), HeadClaimError> {
    let header = block.header();
    if header.height != parent.header().height.next() || header.parent != parent.hash() {
        return Err(HeadClaimError::NotParent);
    }
    if header.region != params.region {
        return Err(HeadClaimError::Region);
    }
    if header.cn_set_root != set.root() {
        return Err(HeadClaimError::OtherSet);
    }
    let seal = &block.sealed.seal;
    let committee = set.committee(
        parent.header().mix,
        header.height,
        seal.round,
        params.committee_size,
    );
    crate::consensus::certificate::verify_certificate(set, &committee, block.hash(), seal)?;
    Ok(())
}
