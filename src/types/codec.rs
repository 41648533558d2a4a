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
//! the RLP, and that no bytes trail the value.

use alloy_rlp::{Decodable, Encodable};
use thiserror::Error;

/// Version of the frame layout and of every encoding inside it. Bumped on any change.
pub const WIRE_VERSION: u8 = 1;

/// Bytes the frame adds around the payload: version, kind, checksum.
pub const FRAME_OVERHEAD: usize = 2 + 4;

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
    decode_exact(&body[2..])
}
