//! The consensus container ("block"): a header that commits to every segment, the commit
//! certificate that seals it, and the segments themselves (segment 0 is the regionchain's own
//! system transactions, segment k one servicechain's transactions for this round).

use super::codec::{canonical, Kind, WireMessage};
use super::primitives::{BlockHash, ChainId, CnIndex, Height, Round, SignerBitmap};
use crate::crypto::bls::{PublicKeyBytes, SignatureBytes};
use crate::crypto::hash::sha256;
use alloy_primitives::{Bytes, B256};
use alloy_rlp::{RlpDecodable, RlpEncodable};

/// Version of the header layout, hashed with the header so old and new headers never collide.
pub const HEADER_VERSION: u8 = 1;

/// Largest encoded container: bounds memory per block received from a peer or read from disk.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// Largest encoded sealed header: room for thousands of segment commitments and a CN set change.
pub const MAX_HEADER_BYTES: usize = 4 << 20;

/// What the header records about one segment, so an auditor can check one segment or all.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct SegmentCommitment {
    /// The chain whose transactions the segment holds (the regionchain's id for segment 0).
    pub chain_id: ChainId,
    /// Number of transactions in the segment, valid or marked invalid.
    pub tx_count: u32,
    /// Root over the segment's raw transactions, in order.
    pub tx_root: B256,
    /// Root over the segment's receipts (invalid transactions get an invalid receipt).
    pub receipts_root: B256,
    /// The chain's state commitment after the segment.
    pub state_root: B256,
}

/// A container header. Its canonical encoding is what votes sign (through its hash).
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Header {
    /// Layout version, [`HEADER_VERSION`].
    pub version: u8,
    /// The regionchain this container belongs to.
    pub region: ChainId,
    pub height: Height,
    /// Round in which this header was first proposed.
    pub round: Round,
    pub parent: BlockHash,
    /// Proposer's wall clock in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The proposer's index in the CN set in force at this height.
    pub proposer: CnIndex,
    /// The proposer's BLS signature over the height: unique, so it cannot be ground.
    pub random_reveal: SignatureBytes,
    /// `mix(h) = mix(h-1) XOR sha256(random_reveal)`; seeds selection at `h + 1`.
    pub mix: B256,
    /// Hash of the CN set in force at this height.
    pub cn_set_root: B256,
    /// The CN set that takes effect next, listed only when it changes (empty otherwise).
    pub next_cn_set: Vec<PublicKeyBytes>,
    /// One commitment per segment, in segment order.
    pub segments: Vec<SegmentCommitment>,
}

impl Header {
    /// The header's hash: SHA-256 of its canonical encoding.
    pub fn hash(&self) -> BlockHash {
        BlockHash(sha256(&canonical(self)))
    }
}

/// Proof that more than two thirds of a round's committee voted to commit a block: the
/// aggregate of their BLS signatures and the bitmap of who signed.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct CommitCertificate {
    /// The round whose committee signed (may be later than the header's proposal round).
    pub round: Round,
    pub signers: SignerBitmap,
    pub aggregate: SignatureBytes,
}

/// A header with its seal; what RNs need to audit the consensus part of a block.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct SealedHeader {
    pub header: Header,
    pub seal: CommitCertificate,
}

impl SealedHeader {
    /// Hash of the header (the seal is not part of it: it signs the hash).
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }
}

/// One chain's transactions for one round, as raw signed Ethereum transactions in the
/// proposer's order. Invalid ones stay here, marked in the receipts.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Segment {
    pub chain_id: ChainId,
    pub txs: Vec<Bytes>,
}

impl Segment {
    /// Merkle root over the Ethereum hashes (Keccak-256) of the raw transactions, in order.
    pub fn tx_root(&self) -> B256 {
        let leaves: Vec<B256> = self
            .txs
            .iter()
            .map(crate::crypto::hash::keccak256)
            .collect();
        crate::crypto::hash::merkle_root(&leaves)
    }
}

/// The consensus container: a sealed header and its segments.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Block {
    pub sealed: SealedHeader,
    pub segments: Vec<Segment>,
}

impl Block {
    pub fn header(&self) -> &Header {
        &self.sealed.header
    }

    pub fn hash(&self) -> BlockHash {
        self.sealed.hash()
    }

    /// The bytes of this block that are identical on every node: the canonical header followed
    /// by the canonical segments. The seal is left out: each node may hold a different (equally
    /// valid) commit certificate for the same block. The PoR canonical log is made of these.
    pub fn agreed_bytes(&self) -> Vec<u8> {
        let mut out = canonical(self.header());
        alloy_rlp::Encodable::encode(&self.segments, &mut out);
        out
    }
}

impl WireMessage for Block {
    const KIND: Kind = Kind::Block;
    const MAX_PAYLOAD: usize = MAX_BLOCK_BYTES;
}

impl WireMessage for SealedHeader {
    const KIND: Kind = Kind::SealedHeader;
    const MAX_PAYLOAD: usize = MAX_HEADER_BYTES;
}

impl WireMessage for CommitCertificate {
    const KIND: Kind = Kind::Certificate;
    // A bitmap for 8 192 members plus the signature and framing, with room to spare.
    const MAX_PAYLOAD: usize = 2048;
}

/// Raw signed transactions travelling together (gossip between CNs, RPC forwarding).
#[derive(Debug, Clone, Default, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct TxBatch {
    pub txs: Vec<Bytes>,
}

impl WireMessage for TxBatch {
    const KIND: Kind = Kind::TxBatch;
    // Room for 64 maximal (128 KiB) transactions or thousands of transfers.
    const MAX_PAYLOAD: usize = 8 << 20;
    // Pooled transactions only, never a block: empty ones from an RN link are refused unread.
    const ITEM_FLOOR: bool = true;
}
