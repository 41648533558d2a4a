//! Kaon's data model and its one canonical encoding.
//!
//! Everything a node hashes, signs, stores or sends is defined here and encoded with RLP
//! (the encoding the Ethereum tooling we serve already speaks). [`codec`] wraps that encoding in
//! a versioned, checksummed, length-limited frame for the wire and the block log; hashes are
//! taken over the bare RLP so that they do not depend on the framing.

pub mod block;
pub mod codec;
pub mod consensus;
pub mod primitives;
pub mod sync;
pub mod system;

pub use block::{
    Block, CommitCertificate, Header, SealedHeader, Segment, SegmentCommitment, TxBatch,
};
pub use codec::{CodecError, WireMessage};
pub use consensus::{
    CarriedTx, CompactProposal, CompactSegment, ConsensusMessage, EquivocationEvidence, PorShare,
    PreparedCertificate, Proposal, ProposalRequest, QuorumCertificate, RandomReveal, RoundChange,
    Vote, VoteKind,
};
pub use primitives::{BlockHash, ChainId, CnIndex, Height, Round, SegmentId, SignerBitmap};
