//! On-disk format of the block log: superblock, frames (one per group commit) and records.
//!
//! ```text
//! offset 0      superblock   (one 4 KiB block: magic, version, block size, log id, crc)
//! offset 4096   frame 0      header (32 B) | record | record | ... | zero padding to 4 KiB
//! ...           frame 1      header (32 B) | record | ...        | zero padding to 4 KiB
//! ...           zeros        (preallocated, not yet written)
//!
//! frame header  magic u32 | record_count u32 | body_len u32 | reserved u32 (0)
//!               | seq u64 | reserved u32 (0) | header_crc u32
//! record        payload_len u32 | payload_crc u32 | header_crc u32 | payload bytes
//! ```
//!
//! All integers are little-endian. `payload_crc = crc32c(payload)`. Every header CRC is
//! keyed with the log's random `log_id` and the header's own file offset, so a header is only
//! valid in the file and at the place it was written for: stale bytes, a block written to the
//! wrong place, or a header forged inside some payload (the payload is opaque, partly chosen by
//! users) are all rejected without knowing anything else.

/// Unit of alignment for frames and of every O_DIRECT write: the largest logical block size of
/// the disks we run on (512 B and 4 KiB are both satisfied).
pub const BLOCK: u64 = 4096;

/// Largest payload one record may carry: one encoded consensus container, whose limit is
/// 64 MiB (`types::block::MAX_BLOCK_BYTES`), plus room for its codec envelope. Also bounds
/// what a reader allocates from a length field read off disk.
pub const MAX_RECORD_LEN: usize = (64 << 20) + 4096;

/// Largest frame body (the records of one group commit). A batch larger than this is written
/// as several frames, each made durable before the next is written, so that at any moment at
/// most one frame is in flight (the recovery rule depends on it). Holds one maximal record;
/// 64 MiB per fdatasync already amortises the sync to nothing.
pub const MAX_FRAME_BODY: usize = MAX_RECORD_LEN + (1 << 20);

pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"KAONBLOG";
pub const FORMAT_VERSION: u32 = 1;
pub const SUPERBLOCK_LEN: usize = 28;

pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"KBFR");
pub const FRAME_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 12;

/// Rounds `n` up to a multiple of [`BLOCK`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// CRC of a header's fields, keyed with the log id and the header's file offset.
fn keyed_crc(log_id: u64, offset: u64, fields: &[u8]) -> u32 {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&log_id.to_le_bytes());
    key[8..].copy_from_slice(&offset.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&key), fields)
}

/// The first block of the file; written once, at creation, through a rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub log_id: u64,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_LEN] {
        let mut b = [0u8; SUPERBLOCK_LEN];
        b[..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // BLOCK is 4096: the cast cannot truncate.
        b[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.log_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the superblock from the file's first block; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if (b.len() as u64) < BLOCK {
            return Err("file shorter than the superblock's block");
        }
        if b[..8] != SUPERBLOCK_MAGIC {
            return Err("bad magic (not a Kaon block log)");
        }
        if crc32c::crc32c(&b[..24]) != u32_at(b, 24) {
            return Err("superblock checksum mismatch");
        }
        if u32_at(b, 8) != FORMAT_VERSION {
            return Err("unsupported format version");
        }
        if u64::from(u32_at(b, 12)) != BLOCK {
            return Err("unsupported block size");
        }
        if b[SUPERBLOCK_LEN..].iter().any(|&x| x != 0) {
            return Err("non-zero bytes after the superblock fields");
        }
        Ok(Superblock {
            log_id: u64_at(b, 16),
        })
    }
}

/// Header of one frame: the records of one group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub record_count: u32,
    pub body_len: u32,
    pub seq: u64,
}

impl FrameHeader {
    pub fn encode(&self, log_id: u64, offset: u64) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.record_count.to_le_bytes());
        b[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        let crc = keyed_crc(log_id, offset, &b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a frame header found at `offset`. `None` if it is not a valid header
    /// of this log at this offset (torn, corrupt, zero, or foreign bytes).
    pub fn decode(b: &[u8], log_id: u64, offset: u64) -> Option<Self> {
        if b.len() < FRAME_HEADER_LEN || u32_at(b, 0) != FRAME_MAGIC {
            return None;
        }
        if keyed_crc(log_id, offset, &b[..28]) != u32_at(b, 28) {
            return None;
        }
        let h = FrameHeader {
            record_count: u32_at(b, 4),
            body_len: u32_at(b, 8),
            seq: u64_at(b, 16),
        };
        // A header with a valid CRC and impossible sizes was written by a buggy or foreign
        // writer; treat it as not ours.
        let sane = u32_at(b, 12) == 0
            && u32_at(b, 24) == 0
            && h.body_len as usize <= MAX_FRAME_BODY
            && (h.record_count as usize) * RECORD_HEADER_LEN <= h.body_len as usize;
        sane.then_some(h)
    }
}

/// Header of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: u32,
    pub payload_crc: u32,
}

/// Why a record header does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordHeaderError {
    /// Fewer than [`RECORD_HEADER_LEN`] bytes.
    Truncated,
    /// Checksum mismatch: corrupt, or no record starts at this offset.
    Checksum,
    /// Checksum fine but the length exceeds [`MAX_RECORD_LEN`].
    Oversized(u32),
}

impl RecordHeader {
    pub fn for_payload(payload: &[u8]) -> Self {
        RecordHeader {
            // Callers check `payload.len() <= MAX_RECORD_LEN` (< 2^32) before encoding.
            payload_len: payload.len() as u32,
            payload_crc: crc32c::crc32c(payload),
        }
    }

    pub fn encode(&self, log_id: u64, offset: u64) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&self.payload_len.to_le_bytes());
        b[4..8].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = keyed_crc(log_id, offset, &b[..8]);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8], log_id: u64, offset: u64) -> Result<Self, RecordHeaderError> {
        if b.len() < RECORD_HEADER_LEN {
            return Err(RecordHeaderError::Truncated);
        }
        if keyed_crc(log_id, offset, &b[..8]) != u32_at(b, 8) {
            return Err(RecordHeaderError::Checksum);
        }
        let payload_len = u32_at(b, 0);
        if payload_len as usize > MAX_RECORD_LEN {
            return Err(RecordHeaderError::Oversized(payload_len));
        }
        Ok(RecordHeader {
            payload_len,
            payload_crc: u32_at(b, 4),
        })
    }

    /// Whether `payload` is the one this header was written for.
    pub fn check(&self, payload: &[u8]) -> bool {
        payload.len() == self.payload_len as usize && crc32c::crc32c(payload) == self.payload_crc
    }
}

/// Why a frame body does not check out; `offset` is the file offset of the offending record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyError {
    pub offset: u64,
    pub reason: &'static str,
}

/// Walks the records of a frame body that starts at file offset `body_offset`, checking every
/// header and payload. Calls `f(record_offset, payload)` for each record in order.
pub fn walk_body(
    body: &[u8],
    header: &FrameHeader,
    log_id: u64,
    body_offset: u64,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<(), BodyError> {
    let mut at = 0usize;
    for _ in 0..header.record_count {
        let offset = body_offset + at as u64;
        let rh = RecordHeader::decode(&body[at..], log_id, offset).map_err(|e| BodyError {
            offset,
            reason: match e {
                RecordHeaderError::Truncated => "record header runs past the frame",
                RecordHeaderError::Checksum => "record header checksum mismatch",
                RecordHeaderError::Oversized(_) => "record length over MAX_RECORD_LEN",
            },
        })?;
        let start = at + RECORD_HEADER_LEN;
        let end = start + rh.payload_len as usize;
        let payload = body.get(start..end).ok_or(BodyError {
            offset,
            reason: "record payload runs past the frame",
        })?;
        if !rh.check(payload) {
            return Err(BodyError {
                offset,
                reason: "record payload checksum mismatch",
            });
        }
        f(offset, payload);
        at = end;
    }
    if at != body.len() {
        return Err(BodyError {
            offset: body_offset + at as u64,
            reason: "frame length disagrees with its records",
        });
    }
    Ok(())
}
