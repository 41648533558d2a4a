//! Reading the block log: by offset, or as a verified scan; usable from any thread.

use super::format::{
    self, align_up, FrameHeader, RecordHeader, BLOCK, FRAME_HEADER_LEN, RECORD_HEADER_LEN,
};
use super::{io_err, BlockLogError, RecordOffset, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(super) struct ReaderInner {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) log_id: u64,
    /// Logical end, published (Release) after each durable frame.
    pub(super) end: AtomicU64,
}

/// Read-only handle on a [`BlockLog`], cheap to clone and safe to use from other threads
/// while the writer appends. It sees every record acknowledged before the read starts.
#[derive(Clone)]
pub struct BlockLogReader {
    pub(super) inner: Arc<ReaderInner>,
}

impl std::fmt::Debug for BlockLogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockLogReader")
            .field("path", &self.inner.path)
            .field("end", &self.end_offset())
            .finish()
    }
}

impl BlockLogReader {
    /// Logical end of the log as of the last acknowledged append.
    pub fn end_offset(&self) -> u64 {
        self.inner.end.load(Ordering::Acquire)
    }

    fn bad(&self, offset: u64, reason: &'static str) -> BlockLogError {
        BlockLogError::BadRecord {
            path: self.inner.path.clone(),
            offset,
            reason,
        }
    }

    /// Reads and verifies the record whose header is at `offset`.
    pub fn read(&self, offset: RecordOffset) -> Result<Vec<u8>> {
        let RecordOffset(offset) = offset;
        let end = self.end_offset();
        let path = &self.inner.path;
        let header_end = offset.saturating_add(RECORD_HEADER_LEN as u64);
        if offset < BLOCK + FRAME_HEADER_LEN as u64 || header_end > end {
            return Err(if offset >= end {
                BlockLogError::OutOfRange {
                    path: path.clone(),
                    offset,
                    end,
                }
            } else {
                self.bad(offset, "not a record offset")
            });
        }
        let mut head = [0u8; RECORD_HEADER_LEN];
        self.inner
            .file
            .read_exact_at(&mut head, offset)
            .map_err(io_err(path, "read record header"))?;
        let rh = RecordHeader::decode(&head, self.inner.log_id, offset).map_err(|e| {
            self.bad(
                offset,
                match e {
                    format::RecordHeaderError::Truncated => "record header truncated",
                    format::RecordHeaderError::Checksum => {
                        "record header checksum mismatch (corrupt, or no record starts here)"
                    }
                    format::RecordHeaderError::Oversized(_) => "record length over MAX_RECORD_LEN",
                },
            )
        })?;
        let start = offset + RECORD_HEADER_LEN as u64;
        if start + u64::from(rh.payload_len) > end {
            return Err(self.bad(offset, "record runs past the end of the log"));
        }
        let mut payload = vec![0u8; rh.payload_len as usize];
        self.inner
            .file
            .read_exact_at(&mut payload, start)
            .map_err(io_err(path, "read record payload"))?;
        if !rh.check(&payload) {
            return Err(self.bad(offset, "record payload checksum mismatch"));
        }
        Ok(payload)
    }

    /// Iterates over every record up to the current end, oldest first, verifying each.
    /// After the first error the iterator ends.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            reader: self,
            pos: BLOCK,
            end: self.end_offset(),
            frame: Vec::new(),
            records: Vec::new(),
            next: 0,
            failed: false,
        }
    }
}

/// Iterator over the records of a log: `(offset, payload)`.
pub struct Iter<'a> {
    reader: &'a BlockLogReader,
    pos: u64,
    end: u64,
    frame: Vec<u8>,
    /// (record offset, payload range within `frame`) of the frame being yielded.
    records: Vec<(u64, std::ops::Range<usize>)>,
    next: usize,
    failed: bool,
}

impl Iter<'_> {
    /// Loads the frame at `self.pos` into `self.frame` / `self.records`.
    fn load_frame(&mut self) -> Result<()> {
        let inner = &self.reader.inner;
        let pos = self.pos;
        let mut head = [0u8; FRAME_HEADER_LEN];
        inner
            .file
            .read_exact_at(&mut head, pos)
            .map_err(io_err(&inner.path, "read frame header"))?;
        let h = FrameHeader::decode(&head, inner.log_id, pos)
            .ok_or_else(|| self.reader.bad(pos, "frame header invalid"))?;
        let body_offset = pos + FRAME_HEADER_LEN as u64;
        let next = align_up(body_offset + u64::from(h.body_len));
        if next > self.end {
            return Err(self.reader.bad(pos, "frame runs past the end of the log"));
        }
        self.frame.resize(h.body_len as usize, 0);
        inner
            .file
            .read_exact_at(&mut self.frame, body_offset)
            .map_err(io_err(&inner.path, "read frame body"))?;
        self.records.clear();
        let records = &mut self.records;
        format::walk_body(
            &self.frame,
            &h,
            inner.log_id,
            body_offset,
            |off, payload| {
                let start = (off - body_offset) as usize + RECORD_HEADER_LEN;
                records.push((off, start..start + payload.len()));
            },
        )
        .map_err(|e| self.reader.bad(e.offset, e.reason))?;
        self.next = 0;
        self.pos = next;
        Ok(())
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<(RecordOffset, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            if let Some((off, range)) = self.records.get(self.next) {
                self.next += 1;
                return Some(Ok((RecordOffset(*off), self.frame[range.clone()].to_vec())));
            }
            if self.pos >= self.end {
                return None;
            }
            if let Err(e) = self.load_frame() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        None
    }
}
