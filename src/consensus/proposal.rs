//! Building proposals and checking everything a CN or RN must check about a proposed or
//! decided block before trusting it: the header chain (parent, height, mix, random reveal,
//! proposer), the body against the header's commitments, the proposer's signature, and the round-change justification of proposals after round 0.

use super::certificate::{CertificateError, QuorumSignature};
use super::interface::MAX_CLOCK_DRIFT_MS;
use super::machine::{Params, Tip};
use super::selection::{next_mix, reveal, reveal_message, CnSet, Committee};
use super::verifier::SigCache;
use crate::crypto::bls::{SecretKey, SignatureBytes};
use crate::types::block::HEADER_VERSION;
use crate::types::{
    Block, CnIndex, CommitCertificate, Header, PreparedCertificate, Proposal, Round, RoundChange,
    SealedHeader, Segment, SegmentCommitment, SignerBitmap, Vote, VoteKind,
};
use thiserror::Error;

/// What the application puts in a new block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockBody {
    pub segments: Vec<Segment>,
    /// One per segment, in order.
    pub commitments: Vec<SegmentCommitment>,
    /// The CN set taking effect at the next height, when a change is due (empty otherwise).
    pub next_cn_set: Vec<crate::crypto::bls::PublicKeyBytes>,
}

impl BlockBody {
    /// A body of one segment that is ordered, not executed: its commitment names the
    /// transactions and leaves receipts and state zero (consensus-only benches, simulations).
    pub fn ordering_only(segment: Segment) -> Self {
        let commitment = SegmentCommitment {
            chain_id: segment.chain_id,
            tx_count: segment.txs.len() as u32,
            tx_root: segment.tx_root(),
            receipts_root: alloy_primitives::B256::ZERO,
            state_root: alloy_primitives::B256::ZERO,
        };
        Self {
            segments: vec![segment],
            commitments: vec![commitment],
            next_cn_set: Vec::new(),
        }
    }
}

/// Why a proposal, round change or decided block was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposalError {
    #[error("header field {0} is wrong")]
    Header(&'static str),
    #[error("block body does not match the header: {0}")]
    Body(&'static str),
    #[error("CN {0} is not the proposer of this round")]
    NotProposer(CnIndex),
    #[error("bad signature: {0}")]
    Signature(&'static str),
    #[error("bad justification: {0}")]
    Justification(&'static str),
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    #[error("application refused the block: {0}")]
    Application(#[from] super::interface::InvalidBlock),
}

/// Assembles an unsealed block for `round` on top of `tip`, stamped `timestamp_ms` (see
/// [`super::interface::proposal_timestamp`]).
#[allow(clippy::too_many_arguments)] // every argument is a distinct header field's source
pub fn build_block(
    params: &Params,
    key: &SecretKey,
    me: CnIndex,
    set: &CnSet,
    tip: &Tip,
    round: Round,
    timestamp_ms: u64,
    body: BlockBody,
) -> Block {
    let height = tip.height.next();
    let random_reveal = reveal(key, height);
    let header = Header {
        version: HEADER_VERSION,
        region: params.region,
        height,
        round,
        parent: tip.hash,
        timestamp_ms,
        proposer: me,
        random_reveal: random_reveal.0,
        mix: next_mix(tip.mix, &random_reveal),
        cn_set_root: set.root(),
        next_cn_set: body.next_cn_set,
        segments: body.commitments,
    };
    let seal = CommitCertificate {
        round,
        signers: SignerBitmap::default(),
        aggregate: SignatureBytes::default(),
    };
    Block {
        sealed: SealedHeader { header, seal },
        segments: body.segments,
    }
}

/// Checks a header against the committed tip: chain linkage, version, CN set, the proposer of
/// its round, the random reveal and the mix it implies.
pub fn check_header(
    params: &Params,
    set: &CnSet,
    sigs: &SigCache,
    tip: &Tip,
    header: &Header,
    proposer_of: impl Fn(Round) -> CnIndex,
) -> Result<(), ProposalError> {
    let checks = [
        (header.version == HEADER_VERSION, "version"),
        (header.region == params.region, "region"),
        (header.height == tip.height.next(), "height"),
        (header.parent == tip.hash, "parent"),
        (header.timestamp_ms > tip.timestamp_ms, "timestamp"),
        (header.cn_set_root == set.root(), "cn_set_root"),
    ];
    if let Some((_, field)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(ProposalError::Header(field));
    }
    // Ranking the CN set costs a hash per CN: only once the cheap checks pass.
    if header.proposer != proposer_of(header.round) {
        return Err(ProposalError::Header("proposer"));
    }
    if !sigs.verify(
        set,
        header.proposer,
        &reveal_message(header.height),
        &header.random_reveal,
    ) {
        return Err(ProposalError::Signature("random reveal"));
    }
    if header.mix != next_mix(tip.mix, &crate::types::RandomReveal(header.random_reveal)) {
        return Err(ProposalError::Header("mix"));
    }
    Ok(())
}

/// Checks that a block's segments are the ones its header commits to (chain ids, counts,
/// transaction roots). Receipts and state roots are the application's to check.
pub fn check_body(block: &Block) -> Result<(), ProposalError> {
    let commitments = &block.header().segments;
    if commitments.len() != block.segments.len() {
        return Err(ProposalError::Body("segment count"));
    }
    for (segment, c) in block.segments.iter().zip(commitments) {
        if segment.chain_id != c.chain_id || segment.txs.len() != c.tx_count as usize {
            return Err(ProposalError::Body("segment chain id or transaction count"));
        }
        if segment.tx_root() != c.tx_root {
            return Err(ProposalError::Body("transaction root"));
        }
    }
    Ok(())
}

/// Everything about a proposal except application validity, judged by a validator whose clock
/// reads `now_ms` (a timestamp beyond it by more than [`MAX_CLOCK_DRIFT_MS`] is refused).
#[allow(clippy::too_many_arguments)] // the inputs of one check, none derivable from another
pub fn check_proposal(
    params: &Params,
    set: &CnSet,
    sigs: &SigCache,
    committee: &Committee,
    tip: &Tip,
    now_ms: u64,
    p: &Proposal,
    proposer_of: impl Fn(Round) -> CnIndex,
) -> Result<(), ProposalError> {
    if p.proposer != committee.proposer {
        return Err(ProposalError::NotProposer(p.proposer));
    }
    let header = p.block.header();
    if header.round > p.round {
        return Err(ProposalError::Header("round"));
    }
    if header.timestamp_ms > now_ms.saturating_add(MAX_CLOCK_DRIFT_MS) {
        return Err(ProposalError::Header(
            "timestamp too far ahead of this node's clock",
        ));
    }
    check_header(params, set, sigs, tip, header, proposer_of)?;
    check_body(&p.block)?;
    let hash = p.block.hash();
    let vote = Vote::signing_message(VoteKind::Prepare, header.height, p.round, hash);
    if !sigs.verify(set, p.proposer, &vote, &p.signature) {
        return Err(ProposalError::Signature("proposer's prepare vote"));
    }
    check_justification(params, set, sigs, committee, tip, p)
}

/// Round 0 needs none; later rounds need a quorum of valid round changes for this round, and
/// the proposal must be the block of their highest prepared certificate, if any.
fn check_justification(
    params: &Params,
    set: &CnSet,
    sigs: &SigCache,
    committee: &Committee,
    tip: &Tip,
    p: &Proposal,
) -> Result<(), ProposalError> {
    let header = p.block.header();
    if p.round.0 == 0 {
        return match (p.justification.is_empty(), header.round.0) {
            (true, 0) => Ok(()),
            _ => Err(ProposalError::Justification(
                "round 0 takes no justification",
            )),
        };
    }
    let mut senders: Vec<CnIndex> = p.justification.iter().map(|rc| rc.sender).collect();
    senders.sort_unstable();
    senders.dedup();
    if senders.len() != p.justification.len() || senders.len() < committee.quorum() {
        return Err(ProposalError::Justification(
            "needs a quorum of distinct round changes",
        ));
    }
    for rc in &p.justification {
        if rc.round != p.round {
            return Err(ProposalError::Justification(
                "round change for another round",
            ));
        }
        check_round_change(
            params,
            set,
            sigs,
            committee,
            tip,
            rc,
            Carried::CertificateOnly,
        )?;
    }
    match highest_prepared(&p.justification) {
        Some(pc) if pc.block_hash != p.block.hash() => Err(ProposalError::Justification(
            "must re-propose the highest prepared block",
        )),
        None if header.round != p.round => Err(ProposalError::Justification(
            "fresh block must carry this round",
        )),
        _ => Ok(()),
    }
}

/// What a round change carries besides its prepared certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// Sent on its own: it carries the block it reports prepared, so the next proposer can
    /// re-propose it.
    Block,
    /// Inside a proposal's justification: the proposal's block is the highest prepared one,
    /// so the round changes carry certificates only (a proposal never holds a quorum of copies
    /// of one block).
    CertificateOnly,
}

/// Checks one round change for the height after `tip`: sender on the committee (which is the
/// same at every round of a height, so no round-dependent state is computed before the
/// signature is checked), signature over region, height, parent and round, and the prepared
/// certificate (a quorum of prepare votes for the block it names) when present, with that
/// block attached exactly when `carried` says so.
pub fn check_round_change(
    params: &Params,
    set: &CnSet,
    sigs: &SigCache,
    committee: &Committee,
    tip: &Tip,
    rc: &RoundChange,
    carried: Carried,
) -> Result<(), ProposalError> {
    let height = tip.height.next();
    if rc.height != height || committee.position(rc.sender).is_none() {
        return Err(ProposalError::Justification(
            "round change from outside the committee",
        ));
    }
    let blocks = match carried {
        Carried::Block => rc.prepared.len(),
        Carried::CertificateOnly => 0,
    };
    if rc.prepared.len() > 1 || rc.prepared_block.len() != blocks {
        return Err(ProposalError::Justification(
            "malformed prepared certificate",
        ));
    }
    let msg = RoundChange::signing_message(
        params.region,
        height,
        tip.hash,
        rc.round,
        rc.prepared.first(),
    );
    if !sigs.verify(set, rc.sender, &msg, &rc.signature) {
        return Err(ProposalError::Signature("round change"));
    }
    if let Some(pc) = rc.prepared.first() {
        let block_fits = rc
            .prepared_block
            .first()
            .is_none_or(|b| b.hash() == pc.block_hash && b.header().height == height);
        if pc.round >= rc.round || !block_fits {
            return Err(ProposalError::Justification(
                "prepared certificate does not fit",
            ));
        }
        // The hash covers the header only: a carried body must match it, or a member could
        // get another body filed (and re-proposed) under a real certificate.
        if let Some(block) = rc.prepared_block.first() {
            check_body(block)?;
        }
        QuorumSignature {
            kind: VoteKind::Prepare,
            round: pc.round,
            block_hash: pc.block_hash,
            signers: &pc.signers,
            aggregate: &pc.aggregate,
        }
        .verify(set, committee)?;
    }
    Ok(())
}

/// The highest-round prepared certificate among round changes.
pub fn highest_prepared<'a>(
    rcs: impl IntoIterator<Item = &'a RoundChange>,
) -> Option<&'a PreparedCertificate> {
    rcs.into_iter()
        .filter_map(|rc| rc.prepared.first())
        .max_by_key(|pc| pc.round)
}
