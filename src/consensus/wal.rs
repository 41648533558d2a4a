//! The consensus write-ahead log: what this CN voted and prepared, and the rounds it asked
//! for, made durable before the message leaves the node, so a restarted CN never contradicts
//! itself and resumes in the round it had reached. Records are RLP lists
//! `[tag, …]` written as block-log records (checksummed, group-committed).

use super::machine::WalEntry;
use crate::types::codec::decode_exact;
use crate::types::{Block, BlockHash, CodecError, Height, PreparedCertificate, Round, VoteKind};
use alloy_rlp::{Decodable, Encodable, Header};

const TAG_VOTED: u8 = 0;
const TAG_PREPARED: u8 = 1;
const TAG_ROUND_CHANGED: u8 = 2;

/// Encodes one WAL entry.
pub fn encode(entry: &WalEntry) -> Vec<u8> {
    let mut payload = Vec::new();
    match entry {
        WalEntry::Voted {
            height,
            round,
            kind,
            hash,
        } => {
            TAG_VOTED.encode(&mut payload);
            height.encode(&mut payload);
            round.encode(&mut payload);
            kind.encode(&mut payload);
            hash.encode(&mut payload);
        }
        WalEntry::Prepared {
            height,
            certificate,
            block,
        } => {
            TAG_PREPARED.encode(&mut payload);
            height.encode(&mut payload);
            certificate.encode(&mut payload);
            block.encode(&mut payload);
        }
        WalEntry::RoundChanged { height, round } => {
            TAG_ROUND_CHANGED.encode(&mut payload);
            height.encode(&mut payload);
            round.encode(&mut payload);
        }
    }
    let mut out = Vec::with_capacity(payload.len() + 9);
    Header {
        list: true,
        payload_length: payload.len(),
    }
    .encode(&mut out);
    out.extend_from_slice(&payload);
    out
}

/// Decodes one WAL entry; a damaged record is an error, never a guess.
pub fn decode(bytes: &[u8]) -> Result<WalEntry, CodecError> {
    decode_exact::<Record>(bytes).map(|r| r.0)
}

struct Record(WalEntry);

impl Decodable for Record {
    fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
        let header = Header::decode(buf)?;
        if !header.list || buf.len() < header.payload_length {
            return Err(alloy_rlp::Error::Custom(
                "WAL record is not a complete list",
            ));
        }
        let mut body = &buf[..header.payload_length];
        let entry = match u8::decode(&mut body)? {
            TAG_VOTED => WalEntry::Voted {
                height: Height::decode(&mut body)?,
                round: Round::decode(&mut body)?,
                kind: VoteKind::decode(&mut body)?,
                hash: BlockHash::decode(&mut body)?,
            },
            TAG_PREPARED => WalEntry::Prepared {
                height: Height::decode(&mut body)?,
                certificate: PreparedCertificate::decode(&mut body)?,
                block: Box::new(Block::decode(&mut body)?),
            },
            TAG_ROUND_CHANGED => WalEntry::RoundChanged {
                height: Height::decode(&mut body)?,
                round: Round::decode(&mut body)?,
            },
            _ => return Err(alloy_rlp::Error::Custom("unknown WAL record tag")),
        };
        if !body.is_empty() {
            return Err(alloy_rlp::Error::Custom("trailing bytes in WAL record"));
        }
        *buf = &buf[header.payload_length..];
        Ok(Record(entry))
    }
}
