//! The canonical encoding and the wire/log frame.
//!
//! Canonical bytes are the RLP encoding of a value; hashes and signatures are taken over them.
//! On the wire and in the block log every value travels in a frame:
//!
//! ```text
//! version (1) | kind (1) | RLP payload | crc32c of everything before (4, little endian)
//! ```
//!
//! Decoding checks, in order: the size limit of the kind (before touching the payload), the
//! checksum (so a flipped bit or a truncation is caught before parsing), the version, the kind,
//! for kinds with an item floor the count of RLP items against the payload's size, the RLP,
//! and that no bytes trail the value.

use alloy_rlp::{Decodable, Encodable};
use thiserror::Error;

/// Version of the frame layout and of every encoding inside it. Bumped on any change.
pub const WIRE_VERSION: u8 = 1;

/// Bytes the frame adds around the payload: version, kind, checksum.
pub const FRAME_OVERHEAD: usize = 2 + 4;
/// Fewest encoded bytes per RLP item, on average, of a floored payload
/// ([`WireMessage::ITEM_FLOOR`]) holding more than [`ITEM_ALLOWANCE`] items. A decoded item
/// costs up to ≈ 48 bytes of memory (a `Bytes` and its slot in a vector) however short its
/// encoding: an empty transaction is one byte, so an 8 MiB `TxBatch` of them decoded into
/// some 400 MiB. With the floor a payload decodes into at most ≈ 6 times its size (twice
/// that while a vector grows). A transfer is ≈ 110 bytes, the bench's smallest payload 21.
pub const MIN_BYTES_PER_ITEM: usize = 8;
/// Items a floored payload may hold whatever its size.
pub const ITEM_ALLOWANCE: usize = 4096;

/// What a frame carries; the receiver names the kind it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A full consensus container.
    Block = 1,
    /// A header with its commit certificate.
    SealedHeader = 2,
    /// A committee member's vote.
    Vote = 3,
    /// A commit certificate on its own.
    Certificate = 4,
    /// A proof-of-replication share.
    PorShare = 5,
    /// Two conflicting sealed headers at one height.
    Evidence = 6,
    /// A CN-to-CN consensus message (proposal, vote, round change, decided block).
    Consensus = 7,
    /// Raw signed transactions gossiped between CNs to form the global pool.
    TxBatch = 8,
    /// A request for committed blocks by height range (sync).
    BlockRequest = 9,
    /// The blocks answering a [`Kind::BlockRequest`].
    BlockResponse = 10,
}

impl Kind {
    /// The kind named by a frame's second byte, if any.
    pub fn of_frame(frame: &[u8]) -> Option<Self> {
        [
            Self::Block,
            Self::SealedHeader,
            Self::Vote,
            Self::Certificate,
            Self::PorShare,
            Self::Evidence,
            Self::Consensus,
            Self::TxBatch,
            Self::BlockRequest,
            Self::BlockResponse,
        ]
        .into_iter()
        .find(|k| frame.get(1) == Some(&(*k as u8)))
    }
}

/// A value that travels in frames.
pub trait WireMessage: Encodable + Decodable {
    /// The frame kind of this type.
    const KIND: Kind;
    /// Largest payload accepted for this type; anything bigger is refused unread.
    const MAX_PAYLOAD: usize;
    /// Whether a payload must average [`MIN_BYTES_PER_ITEM`] bytes an RLP item, counted before
    /// it is decoded. Only for kinds that never carry a block: a block's validity does not
    /// bound its items per byte (undecodable transactions are valid, marked in receipts), so
    /// a committed block must always decode.
    const ITEM_FLOOR: bool = false;
}

/// Why bytes did not decode. Every variant is a peer's or a file's fault, never a panic.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit for {kind:?}")]
    TooLarge { kind: Kind, len: usize, max: usize },
    #[error("frame of {0} bytes is shorter than the frame overhead")]
    TooShort(usize),
    #[error("frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("expected a {expected:?} frame, got kind byte {got}")]
    WrongKind { expected: Kind, got: u8 },
    #[error("malformed RLP: {0}")]
    Rlp(#[from] alloy_rlp::Error),
    #[error("{0} bytes trail the encoded value")]
    TrailingBytes(usize),
    #[error("invalid value: {0}")]
    Invalid(&'static str),
    #[error("payload of {len} bytes holds more than {max} RLP items (at least {MIN_BYTES_PER_ITEM} bytes an item beyond the first {ITEM_ALLOWANCE})")]
    TooManyItems { len: usize, max: usize },
}

/// The canonical (hashed, signed) bytes of a value.
pub fn canonical<T: Encodable + ?Sized>(value: &T) -> Vec<u8> {
    alloy_rlp::encode(value)
}

/// Decodes canonical bytes that must hold exactly one value.
pub fn decode_exact<T: Decodable>(mut bytes: &[u8]) -> Result<T, CodecError> {
    let value = T::decode(&mut bytes)?;
    if !bytes.is_empty() {
        return Err(CodecError::TrailingBytes(bytes.len()));
    }
    Ok(value)
}

/// Encodes `value` in a frame.
pub fn encode_frame<T: WireMessage>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.length() + FRAME_OVERHEAD);
    out.push(WIRE_VERSION);
    out.push(T::KIND as u8);
    value.encode(&mut out);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a frame holding a `T`.
pub fn decode_frame<T: WireMessage>(frame: &[u8]) -> Result<T, CodecError> {
    let max = T::MAX_PAYLOAD + FRAME_OVERHEAD;
    if frame.len() > max {
        return Err(CodecError::TooLarge {
            kind: T::KIND,
            len: frame.len(),
            max,
        });
    }
    if frame.len() < FRAME_OVERHEAD {
        return Err(CodecError::TooShort(frame.len()));
    }
    let (body, crc_bytes) = frame.split_at(frame.len() - 4);
    // Invariant: split_at left exactly four bytes.
    let stored = u32::from_le_bytes(crc_bytes.try_into().expect("four checksum bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    if body[0] != WIRE_VERSION {
        return Err(CodecError::Version(body[0]));
    }
    if body[1] != T::KIND as u8 {
        return Err(CodecError::WrongKind {
            expected: T::KIND,
            got: body[1],
        });
    }
    let payload = &body[2..];
    if T::ITEM_FLOOR {
        check_items(payload)?;
    }
    decode_exact(payload)
}

/// Refuses a payload with more RLP items (lists and strings, at every depth) than its size
/// allows ([`MIN_BYTES_PER_ITEM`]), before anything is decoded or allocated. One pass over
/// the headers: a list's items follow its header, a string's payload is skipped.
fn check_items(payload: &[u8]) -> Result<(), CodecError> {
    let max = ITEM_ALLOWANCE.saturating_add(payload.len() / MIN_BYTES_PER_ITEM);
    let mut rest = payload;
    let mut items = 0usize;
    while !rest.is_empty() {
        let header = alloy_rlp::Header::decode(&mut rest)?;
        items += 1;
        if items > max {
            return Err(CodecError::TooManyItems {
                len: payload.len(),
                max,
            });
        }
        if !header.list {
            rest = rest
                .get(header.payload_length..)
                .ok_or(alloy_rlp::Error::InputTooShort)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::sync::BlockRangeResponse;
    use crate::types::{
        Block, BlockHash, ChainId, CnIndex, CommitCertificate, Header, Height, Round, SealedHeader,
        Segment, SignerBitmap, TxBatch,
    };
    use alloy_primitives::Bytes;

    fn batch(count: usize, tx_len: usize) -> TxBatch {
        TxBatch {
            txs: vec![Bytes::from(vec![0xab; tx_len]); count],
        }
    }

    #[test]
    fn a_frame_of_one_byte_items_is_refused_before_it_is_decoded() {
        let empty = encode_frame(&batch(100_000, 0));
        assert!(matches!(
            decode_frame::<TxBatch>(&empty),
            Err(CodecError::TooManyItems { .. })
        ));
        // Within the allowance, or with items of a transfer's size, batches decode.
        let few = batch(ITEM_ALLOWANCE - 2, 0);
        assert_eq!(decode_frame::<TxBatch>(&encode_frame(&few)).unwrap(), few);
        let transfers = batch(50_000, 110);
        assert_eq!(
            decode_frame::<TxBatch>(&encode_frame(&transfers)).unwrap(),
            transfers
        );
    }

    #[test]
    fn the_floor_admits_exactly_its_budget_of_items() {
        // A batch of `n` empty transactions is `n + 2` items: the batch's list, its
        // transactions' list and one byte each. The largest `n` within
        // `ITEM_ALLOWANCE + len / 8` decodes; one more is refused.
        let payload_len = |n: usize| canonical(&batch(n, 0)).len();
        let fits = |n: usize| n + 2 <= ITEM_ALLOWANCE + payload_len(n) / MIN_BYTES_PER_ITEM;
        let largest = (ITEM_ALLOWANCE..2 * ITEM_ALLOWANCE)
            .take_while(|&n| fits(n))
            .last()
            .unwrap();
        assert!(decode_frame::<TxBatch>(&encode_frame(&batch(largest, 0))).is_ok());
        assert!(matches!(
            decode_frame::<TxBatch>(&encode_frame(&batch(largest + 1, 0))),
            Err(CodecError::TooManyItems { .. })
        ));
    }

    #[test]
    fn frames_that_carry_blocks_are_not_floored() {
        // A block of many tiny (undecodable, so valid and marked) transactions must still
        // read back from the log and the network.
        let block = Block {
            sealed: SealedHeader {
                header: Header {
                    version: crate::types::block::HEADER_VERSION,
                    region: ChainId(1000),
                    height: Height(1),
                    round: Round(0),
                    parent: BlockHash::default(),
                    timestamp_ms: 1,
                    proposer: CnIndex(0),
                    random_reveal: Default::default(),
                    mix: Default::default(),
                    cn_set_root: Default::default(),
                    next_cn_set: Vec::new(),
                    segments: Vec::new(),
                },
                seal: CommitCertificate {
                    round: Round(0),
                    signers: SignerBitmap::default(),
                    aggregate: Default::default(),
                },
            },
            segments: vec![Segment {
                chain_id: ChainId(1001),
                txs: vec![Bytes::from_static(&[0x01]); 3 * ITEM_ALLOWANCE],
            }],
        };
        let response = BlockRangeResponse {
            head: Height(1),
            blocks: vec![block.clone()],
        };
        assert_eq!(decode_frame::<Block>(&encode_frame(&block)).unwrap(), block);
        assert_eq!(
            decode_frame::<BlockRangeResponse>(&encode_frame(&response)).unwrap(),
            response
        );
    }
}
