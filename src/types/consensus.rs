//! Messages of consensus and of proof-of-participation: votes, random reveals, selection
//! proofs, PoR shares and equivocation evidence.

use super::codec::{Kind, WireMessage};
use super::primitives::{BlockHash, CnIndex, Height, Round};
use super::SealedHeader;
use crate::crypto::bls::SignatureBytes;
use alloy_primitives::Address;
use alloy_rlp::{
    Decodable, Encodable, RlpDecodable, RlpDecodableWrapper, RlpEncodable, RlpEncodableWrapper,
};

/// A proposer's BLS signature over the height; its hash feeds the randomness mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodableWrapper, RlpDecodableWrapper)]
pub struct RandomReveal(pub SignatureBytes);

/// The two voting phases of the BFT protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum VoteKind {
    /// First phase: "this proposal is valid and I am not locked on anything else".
    Prepare = 0,
    /// Second phase: "a quorum prepared it; I lock and commit". Commit votes form the seal.
    Commit = 1,
}

impl Encodable for VoteKind {
    fn encode(&self, out: &mut dyn alloy_rlp::BufMut) {
        (*self as u8).encode(out)
    }

    fn length(&self) -> usize {
        (*self as u8).length()
    }
}

impl Decodable for VoteKind {
    fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
        match u8::decode(buf)? {
            0 => Ok(Self::Prepare),
            1 => Ok(Self::Commit),
            _ => Err(alloy_rlp::Error::Custom("unknown vote kind")),
        }
    }
}

/// A committee member's vote for a block at a height and round.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Vote {
    pub kind: VoteKind,
    pub height: Height,
    pub round: Round,
    pub block_hash: BlockHash,
    /// A member of the round's committee: ranks are public (`docs/consensus.md`,
    /// "Selection"), so membership is recomputed by the receiver, not proven by the sender.
    pub voter: CnIndex,
    /// BLS signature over [`Vote::signing_message`].
    pub signature: SignatureBytes,
}

/// Domain tag of vote signatures, so a vote can never be replayed as another kind of message.
pub const VOTE_DOMAIN: &[u8] = b"KAON/vote/v1";

impl Vote {
    /// The bytes a vote of this kind for this block signs; identical for every voter, so a
    /// quorum of commit votes aggregates into one certificate.
    pub fn signing_message(
        kind: VoteKind,
        height: Height,
        round: Round,
        block_hash: BlockHash,
    ) -> Vec<u8> {
        let mut msg = Vec::with_capacity(VOTE_DOMAIN.len() + 1 + 8 + 4 + 32);
        msg.extend_from_slice(VOTE_DOMAIN);
        msg.push(kind as u8);
        msg.extend_from_slice(&height.to_be_bytes());
        msg.extend_from_slice(&round.to_be_bytes());
        msg.extend_from_slice(block_hash.0.as_slice());
        msg
    }
}

impl WireMessage for Vote {
    const KIND: Kind = Kind::Vote;
    const MAX_PAYLOAD: usize = 512;
}

/// A proof-of-replication share `(h, x)`: the nonce `x` is the miner's reward address followed
/// by a 64-bit counter, so a share found by one RN cannot be claimed by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, RlpEncodable, RlpDecodable)]
pub struct PorShare {
    pub height: Height,
    pub miner: Address,
    pub nonce: u64,
}

impl WireMessage for PorShare {
    const KIND: Kind = Kind::PorShare;
    const MAX_PAYLOAD: usize = 128;
}

/// Domain tag of [`EquivocationEvidence::digest`] (the digest shares dedup sets with block keys).
const EVIDENCE_DIGEST_DOMAIN: &[u8] = b"KAON/evidence/v1";

/// Two sealed headers for one height with different hashes: proof that CNs equivocated.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct EquivocationEvidence {
    pub first: SealedHeader,
    pub second: SealedHeader,
}

impl EquivocationEvidence {
    /// Builds evidence from two headers, refusing pairs that are not a conflict.
    pub fn new(first: SealedHeader, second: SealedHeader) -> Option<Self> {
        let evidence = Self { first, second };
        evidence.is_conflict().then_some(evidence)
    }

    /// Whether the pair really is two different headers at one height (peer input is checked
    /// with this before anything else).
    pub fn is_conflict(&self) -> bool {
        self.first.header.height == self.second.header.height
            && self.first.hash() != self.second.hash()
    }

    pub fn height(&self) -> Height {
        self.first.header.height
    }

    /// Identity of the conflict, whichever header comes first: SHA-256 over the two header
    /// hashes in ascending order. Seals are outside header hashes, so junk seals on the real
    /// headers share it: nodes key *verified* evidence by it (one record per conflict), and
    /// deduplicate unverified gossip by [`Self::digest`] instead.
    pub fn id(&self) -> alloy_primitives::B256 {
        let (a, b) = (self.first.hash(), self.second.hash());
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        crate::crypto::hash::sha256_concat(&[low.0.as_slice(), high.0.as_slice()])
    }

    /// Identity of this exact piece of evidence, whichever header comes first: SHA-256 over
    /// both sealed headers, seals included — everything its validity depends on besides the
    /// chain. Two items with one digest get one verdict.
    pub fn digest(&self) -> alloy_primitives::B256 {
        let (a, b) = (
            super::codec::canonical(&self.first),
            super::codec::canonical(&self.second),
        );
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        // Lengths keep the two encodings from sliding into each other.
        crate::crypto::hash::sha256_concat(&[
            EVIDENCE_DIGEST_DOMAIN,
            &(low.len() as u64).to_be_bytes(),
            &low,
            &high,
        ])
    }
}

impl WireMessage for EquivocationEvidence {
    const KIND: Kind = Kind::Evidence;
    // Two maximal headers plus the list header around them.
    const MAX_PAYLOAD: usize = 2 * super::block::MAX_HEADER_BYTES + 16;
}

/// Proof that a quorum of one round's committee prepared a block: the aggregate of their
/// prepare votes. Carried in round changes so the next proposer re-proposes the block that may
/// have been committed.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct PreparedCertificate {
    pub round: Round,
    pub block_hash: BlockHash,
    pub signers: super::SignerBitmap,
    pub aggregate: SignatureBytes,
}

/// A quorum of one round's votes of one kind, aggregated by the round's leader and broadcast:
/// a prepare quorum tells the members to lock and commit-vote, a commit quorum is the seal of
/// the block. Self-authenticating (anyone may relay it): the signers' keys and the aggregate
/// signature are checked against the round's committee before it is used.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct QuorumCertificate {
    pub kind: VoteKind,
    pub height: Height,
    pub round: Round,
    pub block_hash: BlockHash,
    pub signers: super::SignerBitmap,
    pub aggregate: SignatureBytes,
}

impl QuorumCertificate {
    /// The prepared certificate a prepare quorum stands for.
    pub fn prepared(&self) -> PreparedCertificate {
        PreparedCertificate {
            round: self.round,
            block_hash: self.block_hash,
            signers: self.signers.clone(),
            aggregate: self.aggregate,
        }
    }

    /// The block seal a commit quorum stands for.
    pub fn seal(&self) -> super::CommitCertificate {
        super::CommitCertificate {
            round: self.round,
            signers: self.signers.clone(),
            aggregate: self.aggregate,
        }
    }
}

/// A proposal for height `h`, round `round`: the block (unsealed), the proposer's prepare vote
/// (the proposal counts as the proposer's vote), and — from round 1 on — the quorum of round
/// changes that justifies it. Who proposes is public (the round's turn among the committee, in
/// proposer-rank order: [`crate::consensus::selection`]), so the receiver recomputes it;
/// nothing is signed to prove it.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Proposal {
    pub round: Round,
    pub proposer: CnIndex,
    /// The proposer's prepare-vote signature over `(h, round, block hash)`.
    pub signature: SignatureBytes,
    pub block: super::Block,
    pub justification: Vec<RoundChange>,
}

/// A proposal as it crosses the network between CNs that already hold its transactions: the
/// header and the proposer's signature as in [`Proposal`], and per segment the ids of its
/// transactions instead of their bytes. A receiver fills it from its own pool into the
/// [`Proposal`] it names (the header's transaction roots then check every byte, as for a
/// full proposal); one it cannot fill in time it asks the proposer for in full
/// ([`ProposalRequest`]). An id is what the application names a pooled transaction by: its
/// Ethereum hash in a CN. What the proposer did not take from its pool travels whole in
/// `carried`: no receiver's pool would hold it either.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct CompactProposal {
    pub round: Round,
    pub proposer: CnIndex,
    /// The proposer's prepare-vote signature over `(h, round, block hash)`.
    pub signature: SignatureBytes,
    pub sealed: SealedHeader,
    /// One per segment of the block, in order.
    pub segments: Vec<CompactSegment>,
    pub justification: Vec<RoundChange>,
    /// The transactions not from the proposer's pool (a CN's regionchain system transactions:
    /// its probe attestations, PoR shares, checkpoints), in ascending block position.
    pub carried: Vec<CarriedTx>,
}

/// A transaction a [`CompactProposal`] carries whole, at its position in the block's order
/// (segments one after the other).
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct CarriedTx {
    pub position: u32,
    pub tx: alloy_primitives::Bytes,
}

/// A segment of a [`CompactProposal`]: its chain and its transactions' ids, in block order.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct CompactSegment {
    pub chain_id: super::ChainId,
    pub tx_ids: Vec<alloy_primitives::B256>,
}

/// "Send me your proposal of `round` at `height` in full": from a CN that could not fill the
/// compact one from its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct ProposalRequest {
    pub height: Height,
    pub round: Round,
}

/// "Round `round` of height `height` should start": sent on timeout, carrying the sender's
/// highest prepared certificate and that block.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct RoundChange {
    pub height: Height,
    pub round: Round,
    pub sender: CnIndex,
    /// Empty, or exactly one prepared certificate (RLP has no optional fields).
    pub prepared: Vec<PreparedCertificate>,
    /// The prepared block, when `prepared` is not empty.
    pub prepared_block: Vec<super::Block>,
    /// BLS signature over [`RoundChange::signing_message`].
    pub signature: SignatureBytes,
}

/// Domain tag of round-change signatures (v2: names the region and the parent).
pub const ROUND_CHANGE_DOMAIN: &[u8] = b"KAON/round-change/v2";

impl RoundChange {
    /// What a round change signs: the region, the target height and the parent it builds on,
    /// the round, and the prepared round and hash it reports (zeroes when none) — so a relay
    /// cannot strip or swap the certificate, and a signature cannot be replayed in another
    /// region or on another fork.
    pub fn signing_message(
        region: super::ChainId,
        height: Height,
        parent: BlockHash,
        round: Round,
        prepared: Option<&PreparedCertificate>,
    ) -> Vec<u8> {
        let (p_round, p_hash) = prepared.map_or((Round(0), BlockHash::default()), |p| {
            (p.round, p.block_hash)
        });
        [
            ROUND_CHANGE_DOMAIN,
            &region.to_be_bytes(),
            &height.to_be_bytes(),
            parent.0.as_slice(),
            &round.to_be_bytes(),
            &[u8::from(prepared.is_some())],
            &p_round.to_be_bytes(),
            p_hash.0.as_slice(),
        ]
        .concat()
    }
}

/// Everything CNs say to each other about consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusMessage {
    Proposal(Box<Proposal>),
    Vote(Box<Vote>),
    RoundChange(Box<RoundChange>),
    /// A committed, sealed block, for nodes that missed the votes.
    Decided(Box<super::Block>),
    /// "Send me the decided blocks from this height on" (served by the node, not consensus).
    SyncRequest(Height),
    /// A prepare or commit quorum aggregated by the round's leader.
    Certificate(Box<QuorumCertificate>),
    /// A proposal naming its transactions by id (turned into a [`Proposal`] by the node).
    CompactProposal(Box<CompactProposal>),
    /// "Send me that proposal in full" (served by the node, not consensus).
    ProposalRequest(ProposalRequest),
}

impl ConsensusMessage {
    const TAG_PROPOSAL: u8 = 0;
    const TAG_VOTE: u8 = 1;
    const TAG_ROUND_CHANGE: u8 = 2;
    const TAG_DECIDED: u8 = 3;
    const TAG_SYNC_REQUEST: u8 = 4;
    const TAG_CERTIFICATE: u8 = 5;
    const TAG_COMPACT_PROPOSAL: u8 = 6;
    const TAG_PROPOSAL_REQUEST: u8 = 7;

    fn tag(&self) -> u8 {
        match self {
            Self::Proposal(_) => Self::TAG_PROPOSAL,
            Self::Vote(_) => Self::TAG_VOTE,
            Self::RoundChange(_) => Self::TAG_ROUND_CHANGE,
            Self::Decided(_) => Self::TAG_DECIDED,
            Self::SyncRequest(_) => Self::TAG_SYNC_REQUEST,
            Self::Certificate(_) => Self::TAG_CERTIFICATE,
            Self::CompactProposal(_) => Self::TAG_COMPACT_PROPOSAL,
            Self::ProposalRequest(_) => Self::TAG_PROPOSAL_REQUEST,
        }
    }

    fn body(&self) -> &dyn Encodable {
        match self {
            Self::Proposal(p) => p.as_ref(),
            Self::Vote(v) => v.as_ref(),
            Self::RoundChange(rc) => rc.as_ref(),
            Self::Decided(b) => b.as_ref(),
            Self::SyncRequest(h) => h,
            Self::Certificate(c) => c.as_ref(),
            Self::CompactProposal(c) => c.as_ref(),
            Self::ProposalRequest(r) => r,
        }
    }

    /// The CN that signed the message, when it names one (a decided block is anyone's).
    pub fn sender(&self) -> Option<CnIndex> {
        match self {
            Self::Proposal(p) => Some(p.proposer),
            Self::CompactProposal(c) => Some(c.proposer),
            Self::Vote(v) => Some(v.voter),
            Self::RoundChange(rc) => Some(rc.sender),
            Self::Decided(_)
            | Self::SyncRequest(_)
            | Self::Certificate(_)
            | Self::ProposalRequest(_) => None,
        }
    }

    /// The height the message is about.
    pub fn height(&self) -> Height {
        match self {
            Self::Proposal(p) => p.block.header().height,
            Self::Vote(v) => v.height,
            Self::RoundChange(rc) => rc.height,
            Self::Decided(b) => b.header().height,
            Self::SyncRequest(h) => *h,
            Self::Certificate(c) => c.height,
            Self::CompactProposal(c) => c.sealed.header.height,
            Self::ProposalRequest(r) => r.height,
        }
    }
}

// Encoded as an RLP list `[tag, body]`.
impl Encodable for ConsensusMessage {
    fn encode(&self, out: &mut dyn alloy_rlp::BufMut) {
        let body = self.body();
        alloy_rlp::Header {
            list: true,
            payload_length: 1 + body.length(),
        }
        .encode(out);
        self.tag().encode(out);
        body.encode(out);
    }

    fn length(&self) -> usize {
        let payload = 1 + self.body().length();
        payload + alloy_rlp::length_of_length(payload)
    }
}

impl Decodable for ConsensusMessage {
    fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
        let header = alloy_rlp::Header::decode(buf)?;
        if !header.list {
            return Err(alloy_rlp::Error::UnexpectedString);
        }
        if buf.len() < header.payload_length {
            return Err(alloy_rlp::Error::InputTooShort);
        }
        let mut body = &buf[..header.payload_length];
        let message = match u8::decode(&mut body)? {
            Self::TAG_PROPOSAL => Self::Proposal(Box::new(Proposal::decode(&mut body)?)),
            Self::TAG_VOTE => Self::Vote(Box::new(Vote::decode(&mut body)?)),
            Self::TAG_ROUND_CHANGE => Self::RoundChange(Box::new(RoundChange::decode(&mut body)?)),
            Self::TAG_DECIDED => Self::Decided(Box::new(super::Block::decode(&mut body)?)),
            Self::TAG_SYNC_REQUEST => Self::SyncRequest(Height::decode(&mut body)?),
            Self::TAG_CERTIFICATE => {
                Self::Certificate(Box::new(QuorumCertificate::decode(&mut body)?))
            }
            Self::TAG_COMPACT_PROPOSAL => {
                Self::CompactProposal(Box::new(CompactProposal::decode(&mut body)?))
            }
            Self::TAG_PROPOSAL_REQUEST => {
                Self::ProposalRequest(ProposalRequest::decode(&mut body)?)
            }
            _ => return Err(alloy_rlp::Error::Custom("unknown consensus message tag")),
        };
        if !body.is_empty() {
            return Err(alloy_rlp::Error::ListLengthMismatch {
                expected: header.payload_length,
                got: header.payload_length - body.len(),
            });
        }
        *buf = &buf[header.payload_length..];
        Ok(message)
    }
}

impl WireMessage for ConsensusMessage {
    const KIND: Kind = Kind::Consensus;
    // A proposal carries a whole block plus a quorum of round changes.
    const MAX_PAYLOAD: usize = 2 * super::block::MAX_BLOCK_BYTES;
}
