//! Open-time scan of the block log: find the logical end, verify every record, and decide
//! whether damage is a torn tail (truncate) or corruption of acknowledged data (refuse).
//!
//! The rule rests on one invariant of the writer: frames are written one at a time and each is
//! made durable (fdatasync) before the next is written, and recovery leaves nothing but zeros
//! past the logical end. So after any crash, the bytes past the last acknowledged frame are
//! zeros plus, at most, part of a single unacknowledged frame — which contains no valid frame
//! header except possibly its own, at its own start. Hence, for the first damaged frame at
//! offset `p`:
//! - a valid frame header anywhere after `p`'s first block means frame `p` was acknowledged
//!   (its successor was written after its fsync): corruption, reported with its offset;
//! - otherwise frame `p` is the torn, unacknowledged tail: the file is cut at `p`.

use super::format::{align_up, walk_body, FrameHeader, BLOCK, FRAME_HEADER_LEN};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes read per I/O while scanning: large sequential reads keep the scan disk-bound.
const SCAN_CHUNK: usize = 4 << 20;

/// Result of a successful scan.
#[derive(Debug)]
pub struct Scan {
    /// Logical end: offset where the next frame goes.
    pub end: u64,
    /// Sequence number the next frame must carry.
    pub next_seq: u64,
    /// Number of records in the valid prefix.
    pub records: u64,
    /// Set when a torn tail must be cut off at `cut_at`.
    pub torn: Option<Damage>,
}

/// The first damaged spot found by the scan.
#[derive(Debug, Clone, Copy)]
pub struct Damage {
    /// Start of the damaged frame: where the log is cut if the damage is a torn tail.
    pub frame_offset: u64,
    /// Offset of the first bad byte range found (the frame, or a record inside it).
    pub offset: u64,
    pub reason: &'static str,
    /// Bytes from `frame_offset` to the end of the file that were not zero.
    pub nonzero_bytes: u64,
}

/// Outcome that the caller turns into an error with the path attached.
#[derive(Debug)]
pub enum ScanError {
    Io(io::Error),
    /// Damage that cannot be a torn write: followed by a valid frame at `next_valid`, or of
    /// a kind a crash does not produce.
    Corrupt {
        damage: Damage,
        next_valid: Option<u64>,
    },
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

/// Sequential reader that keeps one large chunk of the file in memory.
struct Chunks<'a> {
    file: &'a File,
    file_len: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> Chunks<'a> {
    /// Returns the bytes `[offset, offset + len)`, clipped to the end of the file.
    fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let want_end = (offset + len as u64).min(self.file_len);
        let have_end = self.start + self.buf.len() as u64;
        if offset < self.start || want_end > have_end {
            let n = (want_end.saturating_sub(offset) as usize)
                .max(SCAN_CHUNK)
                .min(self.file_len.saturating_sub(offset) as usize);
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        let to = (want_end.max(offset) - self.start) as usize;
        Ok(&self.buf[from..to])
    }
}

/// Scans frames from the end of the superblock to `file_len`.
pub fn scan(file: &File, file_len: u64, log_id: u64) -> Result<Scan, ScanError> {
    let mut rd = Chunks {
        file,
        file_len,
        buf: Vec::new(),
        start: 0,
    };
    let mut pos = BLOCK;
    let mut next_seq = 0u64;
    let mut records = 0u64;
    loop {
        if pos >= file_len {
            return Ok(Scan {
                end: pos,
                next_seq,
                records,
                torn: None,
            });
        }
        let head = rd.get(pos, FRAME_HEADER_LEN)?;
        let damage = |offset, reason| Damage {
            frame_offset: pos,
            offset,
            reason,
            nonzero_bytes: 0,
        };
        let bad = match FrameHeader::decode(head, log_id, pos) {
            None if head.iter().all(|&b| b == 0) => {
                Some(damage(pos, "frame header is zero (unwritten)"))
            }
            None => Some(damage(pos, "frame header invalid (torn or corrupt)")),
            Some(h) if h.seq != next_seq => {
                // A valid header with the wrong sequence number cannot come from a torn write.
                return Err(ScanError::Corrupt {
                    damage: damage(pos, "frame sequence number out of order"),
                    next_valid: None,
                });
            }
            Some(h) => {
                let body_offset = pos + FRAME_HEADER_LEN as u64;
                let body = rd.get(body_offset, h.body_len as usize)?;
                if body.len() < h.body_len as usize {
                    Some(damage(pos, "frame runs past the end of the file"))
                } else {
                    match walk_body(body, &h, log_id, body_offset, |_, _| {}) {
                        Ok(()) => {
                            let body_end = body_offset + u64::from(h.body_len);
                            let next = align_up(body_end);
                            let pad = rd.get(body_end, (next - body_end) as usize)?;
                            if pad.iter().any(|&b| b != 0) {
                                // The padding is written with the body in one write; a crash
                                // leaves it zero or unwritten (zero), never anything else.
                                return Err(ScanError::Corrupt {
                                    damage: damage(body_end, "non-zero padding after a frame"),
                                    next_valid: None,
                                });
                            }
                            records += u64::from(h.record_count);
                            next_seq += 1;
                            pos = next;
                            None
                        }
                        Err(e) => Some(damage(e.offset, e.reason)),
                    }
                }
            }
        };
        if let Some(mut d) = bad {
            let (next_valid, nonzero) = look_past(&mut rd, pos, log_id)?;
            d.nonzero_bytes = nonzero;
            if let Some(next_valid) = next_valid {
                return Err(ScanError::Corrupt {
                    damage: d,
                    next_valid: Some(next_valid),
                });
            }
            let torn = (nonzero > 0).then_some(d);
            return Ok(Scan {
                end: pos,
                next_seq,
                records,
                torn,
            });
        }
    }
}

/// From the damaged frame at `pos` to the end of the file: the first valid frame header after
/// `pos`'s own block, and how many bytes are not zero.
fn look_past(rd: &mut Chunks<'_>, pos: u64, log_id: u64) -> io::Result<(Option<u64>, u64)> {
    let mut nonzero = 0u64;
    let mut at = pos;
    while at < rd.file_len {
        let block = rd.get(at, BLOCK as usize)?;
        if at > pos && FrameHeader::decode(block, log_id, at).is_some() {
            return Ok((Some(at), nonzero));
        }
        nonzero += block.iter().filter(|&&b| b != 0).count() as u64;
        at += BLOCK;
    }
    Ok((None, nonzero))
}
