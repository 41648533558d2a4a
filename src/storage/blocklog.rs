//! The append-only block log: where committed consensus containers become durable.
//!
//! In the pipeline, the storage stage receives each committed container (already encoded by
//! the caller: payloads are opaque here), appends a batch of them with [`BlockLog::append_batch`]
//! and only then indexes them in RocksDB ([`super::store`]) and acknowledges them downstream.
//! `append_batch` returns after one data sync covering the whole batch (group commit), so
//! the cost of durability is paid per batch, not per block.
//!
//! Writes go through io_uring (one `RWF_DSYNC` write per batch: write + fdatasync in a single
//! operation and a single `io_uring_enter`) with O_DIRECT into preallocated space; where
//! io_uring is unavailable (old kernel, seccomp, `io_uring_disabled`) the log falls back to
//! `pwrite` + `fdatasync` and says so in the log.
//! This is the only module of the crate that uses the `io-uring` crate.
//!
//! The file format and the crash-recovery rules are in `docs/storage.md` and in the private
//! `format` and `recovery` submodules.

mod aligned;
mod file;
mod format;
mod reader;
mod recovery;

use aligned::AlignedBuf;
use format::{
    align_up, FrameHeader, RecordHeader, Superblock, BLOCK, FRAME_HEADER_LEN, MAX_FRAME_BODY,
    RECORD_HEADER_LEN,
};
use reader::ReaderInner;
pub use reader::{BlockLogReader, Iter};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use format::MAX_RECORD_LEN;

/// Frames start at multiples of this many bytes (the O_DIRECT block size).
pub const ALIGNMENT: u64 = BLOCK;

/// Default preallocation extent: large enough that extending the file is rare (one metadata
/// update per 64 MiB, about 500 blocks of 128 KiB), small enough to be cheap on a new node.
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 64 << 20;

/// Default [`BlockLogOptions::lock_wait`].
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Submission queue depth: a frame is one entry in flight; the rest is slack.
const RING_ENTRIES: u32 = 8;

/// Byte offset of a record's header in the log file; stable for the life of the log, so it
/// is what the height index stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordOffset(pub u64);

/// How writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring if the kernel allows it, else `pwrite` + `fdatasync` (logged).
    #[default]
    Auto,
    /// io_uring only; opening fails if it is unavailable.
    IoUring,
    /// `pwrite` + `fdatasync`.
    Pwrite,
}

/// Options for [`BlockLog::open`].
#[derive(Debug, Clone)]
pub struct BlockLogOptions {
    pub backend: Backend,
    /// Write with O_DIRECT (falls back to buffered writes, logged, where the file system
    /// refuses it). Measured ~1.5× the batched rate of buffered writes on this project's disks.
    pub direct_io: bool,
    /// Extent by which the file is preallocated (`fallocate`) ahead of the writes, so that
    /// appends do not extend the file; 0 disables preallocation.
    pub preallocate_bytes: u64,
    /// How long `open` waits for another writer's lock before failing with
    /// [`BlockLogError::Locked`]. Not zero by default because a writer killed during an
    /// io_uring operation releases its file only when the kernel has torn its ring down, a
    /// few milliseconds after the process is gone; a restart must not fail on that.
    pub lock_wait: Duration,
}

impl Default for BlockLogOptions {
    fn default() -> Self {
        BlockLogOptions {
            backend: Backend::Auto,
            direct_io: true,
            preallocate_bytes: DEFAULT_PREALLOCATE_BYTES,
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }
}

/// What [`BlockLog::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The file did not exist and was created.
    pub created: bool,
    /// Records in the log after recovery.
    pub records: u64,
    /// Logical end of the log (where the next frame goes).
    pub end: u64,
    /// A torn, unacknowledged tail that was cut off.
    pub truncated: Option<TornTail>,
}

/// A torn tail removed at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The log was cut here (start of the torn frame).
    pub at: u64,
    /// First bad offset inside the torn frame.
    pub bad_offset: u64,
    pub reason: &'static str,
    /// Non-zero bytes that were discarded.
    pub discarded_nonzero_bytes: u64,
}

/// Errors of the block log; every variant that touches the file names it.
#[derive(Debug, thiserror::Error)]
pub enum BlockLogError {
    #[error("block log {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("block log {path}: bad superblock: {reason}")]
    BadSuperblock { path: PathBuf, reason: &'static str },
    /// Damage to acknowledged data (never silently skipped or truncated). `next_valid` is
    /// the valid frame found after the damage, which proves the damaged frame was
    /// acknowledged; `None` where the damage is of a kind no crash produces.
    #[error("block log {path}: corrupt at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
        next_valid: Option<u64>,
    },
    #[error("record {index} of the batch is {len} bytes, over MAX_RECORD_LEN ({MAX_RECORD_LEN})")]
    RecordTooLarge { index: usize, len: usize },
    #[error("block log {path}: offset {offset} is past the end of the log ({end})")]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        end: u64,
    },
    #[error("block log {path}: no valid record at offset {offset}: {reason}")]
    BadRecord {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("block log {path}: io_uring unavailable: {source}")]
    IoUringUnavailable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("block log {path}: already opened for writing by another handle or process")]
    Locked { path: PathBuf },
    #[error(
        "block log {path}: an earlier write or sync failed, so the state of the tail is \
         unknown; reopen the log to recover"
    )]
    Poisoned { path: PathBuf },
}

pub type Result<T, E = BlockLogError> = std::result::Result<T, E>;

fn io_err<'p>(path: &'p Path, op: &'static str) -> impl FnOnce(io::Error) -> BlockLogError + 'p {
    move |source| BlockLogError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The writer's engine. Declared first in [`BlockLog`] so the ring is torn down before the
/// staging buffer is freed.
enum Engine {
    Uring(Box<io_uring::IoUring>),
    Pwrite,
}

/// The append-only block log (single writer). Readers on other threads use [`BlockLogReader`].
pub struct BlockLog {
    engine: Engine,
    staging: AlignedBuf,
    /// Write handle (O_DIRECT when `direct`), holding an exclusive `flock`.
    file: File,
    reader: BlockLogReader,
    backend: Backend,
    direct: bool,
    next_seq: u64,
    end: u64,
    /// Current file size: bytes up to here are allocated.
    allocated: u64,
    preallocate: u64,
    records: u64,
    poisoned: bool,
}

impl std::fmt::Debug for BlockLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockLog")
            .field("path", &self.reader.inner.path)
            .field("backend", &self.backend)
            .field("direct", &self.direct)
            .field("end", &self.end)
            .field("records", &self.records)
            .finish()
    }
}

impl BlockLog {
    /// Opens (or creates) the log at `path`, recovering from a crash: a torn tail is cut off
    /// and reported; corruption of acknowledged data is an error naming its offset.
    pub fn open(
        path: impl AsRef<Path>,
        opts: BlockLogOptions,
    ) -> Result<(BlockLog, RecoveryReport)> {
        let path = path.as_ref().to_path_buf();
        let created = match std::fs::symlink_metadata(&path) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                file::create(&path)?;
                true
            }
            Err(e) => return Err(io_err(&path, "stat")(e)),
        };
        let file = file::open_writer(&path, opts.direct_io)?;
        let direct = file.1;
        let file = file.0;
        file::lock(&file, &path, opts.lock_wait)?;
        let read_file = File::open(&path).map_err(io_err(&path, "open for reading"))?;
        let file_len = read_file.metadata().map_err(io_err(&path, "stat"))?.len();

        let mut sb = [0u8; BLOCK as usize];
        let n = file::read_prefix(&read_file, &mut sb).map_err(io_err(&path, "read superblock"))?;
        let sb = Superblock::decode(&sb[..n]).map_err(|reason| BlockLogError::BadSuperblock {
            path: path.clone(),
            reason,
        })?;

        let scan = recovery::scan(&read_file, file_len, sb.log_id).map_err(|e| match e {
            recovery::ScanError::Io(source) => BlockLogError::Io {
                path: path.clone(),
                op: "scan",
                source,
            },
            recovery::ScanError::Corrupt { damage, next_valid } => BlockLogError::Corrupt {
                path: path.clone(),
                offset: damage.offset,
                reason: damage.reason,
                next_valid,
            },
        })?;
        let mut allocated = file_len;
        let truncated = match scan.torn {
            None => None,
            Some(d) => {
                tracing::warn!(
                    path = %path.display(),
                    at = d.frame_offset,
                    bad_offset = d.offset,
                    reason = d.reason,
                    "block log: cutting off a torn, unacknowledged tail"
                );
                // Zero everything past the end (by cutting the file) and make it durable
                // before any new frame is written: recovery relies on nothing but zeros
                // following the last acknowledged frame.
                file.set_len(d.frame_offset)
                    .map_err(io_err(&path, "truncate torn tail"))?;
                file.sync_all().map_err(io_err(&path, "sync truncation"))?;
                allocated = d.frame_offset;
                Some(TornTail {
                    at: d.frame_offset,
                    bad_offset: d.offset,
                    reason: d.reason,
                    discarded_nonzero_bytes: d.nonzero_bytes,
                })
            }
        };

        let (engine, backend) = start_engine(opts.backend, &path)?;
        tracing::info!(
            path = %path.display(),
            backend = ?backend,
            direct_io = direct,
            records = scan.records,
            end = scan.end,
            "block log opened"
        );
        let reader = BlockLogReader {
            inner: Arc::new(ReaderInner {
                file: read_file,
                path,
                log_id: sb.log_id,
                end: AtomicU64::new(scan.end),
            }),
        };
        let report = RecoveryReport {
            created,
            records: scan.records,
            end: scan.end,
            truncated,
        };
        let log = BlockLog {
            engine,
            staging: AlignedBuf::new(),
            file,
            reader,
            backend,
            direct,
            next_seq: scan.next_seq,
            end: scan.end,
            allocated,
            preallocate: opts.preallocate_bytes,
            records: scan.records,
            poisoned: false,
        };
        Ok((log, report))
    }

    /// Appends `records` and returns their offsets once they are durable: one data sync for
    /// the whole batch (a batch of more than about 65 MiB is split into frames, each made
    /// durable in turn). A record's bytes are opaque to the log.
    ///
    /// On an I/O error a prefix of the batch may be durable; the log is then poisoned (every
    /// later append fails) because after a failed fsync the kernel's view of the file can no
    /// longer be trusted. Reopening recovers.
    pub fn append_batch(&mut self, records: &[&[u8]]) -> Result<Vec<RecordOffset>> {
        if self.poisoned {
            return Err(BlockLogError::Poisoned {
                path: self.path().to_path_buf(),
            });
        }
        if let Some((index, r)) = records
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() > MAX_RECORD_LEN)
        {
            return Err(BlockLogError::RecordTooLarge {
                index,
                len: r.len(),
            });
        }
        let mut offsets = Vec::with_capacity(records.len());
        let mut i = 0;
        while i < records.len() {
            let mut body = 0usize;
            let mut j = i;
            while j < records.len()
                && (j == i || body + RECORD_HEADER_LEN + records[j].len() <= MAX_FRAME_BODY)
            {
                body += RECORD_HEADER_LEN + records[j].len();
                j += 1;
            }
            if let Err(e) = self.write_frame(&records[i..j], body, &mut offsets) {
                self.poisoned = true;
                return Err(e);
            }
            i = j;
        }
        Ok(offsets)
    }

    /// Appends one record (its own group commit); prefer [`append_batch`](Self::append_batch).
    pub fn append(&mut self, record: &[u8]) -> Result<RecordOffset> {
        let offsets = self.append_batch(&[record])?;
        // append_batch returns one offset per record: exactly one here.
        Ok(offsets[0])
    }

    fn write_frame(
        &mut self,
        records: &[&[u8]],
        body_len: usize,
        offsets: &mut Vec<RecordOffset>,
    ) -> Result<()> {
        let log_id = self.reader.inner.log_id;
        let pos = self.end;
        let total = align_up((FRAME_HEADER_LEN + body_len) as u64);
        self.staging.resize(total as usize);
        let buf = self.staging.as_mut_slice();
        let header = FrameHeader {
            // Bounded by MAX_FRAME_BODY (< 2^32) in append_batch.
            record_count: records.len() as u32,
            body_len: body_len as u32,
            seq: self.next_seq,
        };
        buf[..FRAME_HEADER_LEN].copy_from_slice(&header.encode(log_id, pos));
        let mut at = FRAME_HEADER_LEN;
        for r in records {
            let offset = pos + at as u64;
            let rh = RecordHeader::for_payload(r).encode(log_id, offset);
            buf[at..at + RECORD_HEADER_LEN].copy_from_slice(&rh);
            at += RECORD_HEADER_LEN;
            buf[at..at + r.len()].copy_from_slice(r);
            at += r.len();
            offsets.push(RecordOffset(offset));
        }
        // Zero padding: recovery rejects anything else after a frame.
        buf[at..].fill(0);

        self.ensure_allocated(pos + total)?;
        let fd = self.file.as_raw_fd();
        let path = &self.reader.inner.path;
        let buf = self.staging.as_slice();
        match &mut self.engine {
            Engine::Uring(ring) => uring_write_dsync(ring, fd, buf, pos)
                .map_err(io_err(path, "io_uring dsync write"))?,
            Engine::Pwrite => {
                self.file
                    .write_all_at(buf, pos)
                    .map_err(io_err(path, "pwrite"))?;
                self.file.sync_data().map_err(io_err(path, "fdatasync"))?;
            }
        }
        self.end = pos + total;
        self.allocated = self.allocated.max(self.end);
        self.next_seq += 1;
        self.records += records.len() as u64;
        self.reader.inner.end.store(self.end, Ordering::Release);
        Ok(())
    }

    /// Makes sure `[0, need)` is allocated, extending the file by whole extents.
    fn ensure_allocated(&mut self, need: u64) -> Result<()> {
        if need <= self.allocated || self.preallocate == 0 {
            return Ok(());
        }
        let extent = align_up(self.preallocate);
        let target = need.max(self.allocated + extent).div_ceil(extent) * extent;
        let len = target - self.allocated;
        // SAFETY: fallocate only reads its integer arguments; the fd is open for writing.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                0,
                self.allocated as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            self.allocated = target;
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            tracing::warn!(
                path = %self.path().display(),
                "block log: the file system cannot preallocate; appends will extend the file"
            );
            self.preallocate = 0;
            return Ok(());
        }
        Err(io_err(self.path(), "fallocate")(err))
    }

    /// Reads the record at `offset` (as returned by an append).
    pub fn read(&self, offset: RecordOffset) -> Result<Vec<u8>> {
        self.reader.read(offset)
    }

    /// Iterates over every record, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        self.reader.iter()
    }

    /// A cheap, cloneable handle for reading from other threads while this handle appends.
    pub fn reader(&self) -> BlockLogReader {
        self.reader.clone()
    }

    /// Number of records in the log.
    pub fn record_count(&self) -> u64 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Logical end of the log: the offset where the next frame will be written.
    pub fn end_offset(&self) -> u64 {
        self.end
    }

    /// The backend in use (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether writes bypass the page cache.
    pub fn direct_io(&self) -> bool {
        self.direct
    }

    pub fn path(&self) -> &Path {
        &self.reader.inner.path
    }
}

/// Writes `buf` at `pos` as one io_uring write with `RWF_DSYNC`: the per-write form of
/// O_DSYNC, i.e. the same guarantee as the write followed by `fdatasync`, in one operation
/// (measured 4–6 % faster than a write linked to an `IORING_OP_FSYNC`). Returns once it has
/// completed; a short write is continued, each part with the same flag.
fn uring_write_dsync(
    ring: &mut io_uring::IoUring,
    fd: RawFd,
    buf: &[u8],
    pos: u64,
) -> io::Result<()> {
    use io_uring::{opcode, types};
    let mut done = 0usize;
    while done < buf.len() {
        let chunk = &buf[done..];
        // Frames are at most MAX_FRAME_BODY plus a block, far below u32::MAX.
        let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let write = opcode::Write::new(types::Fd(fd), chunk.as_ptr(), len)
            .offset(pos + done as u64)
            .rw_flags(libc::RWF_DSYNC)
            .build();
        // SAFETY: the write reads `len` bytes from `chunk`, which stays borrowed (alive and
        // unmoved) until this function returns, and it only returns after reaping the
        // completion below — or on a submission error, after which the ring is never used
        // again: the log is poisoned and the ring is dropped before the buffer. The kernel
        // only reads the buffer, so no memory of ours is ever written behind our back.
        unsafe {
            ring.submission()
                .push(&write)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        let res = loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Some(cqe) = ring.completion().next() {
                break cqe.result();
            }
        };
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        if res == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "io_uring write wrote nothing",
            ));
        }
        // `res` is positive and at most `len`.
        done += res as usize;
    }
    Ok(())
}

fn start_engine(choice: Backend, path: &Path) -> Result<(Engine, Backend)> {
    let uring = || -> io::Result<io_uring::IoUring> {
        let ring = io_uring::IoUring::new(RING_ENTRIES)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(io_uring::opcode::Write::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel lacks IORING_OP_WRITE",
            ));
        }
        Ok(ring)
    };
    match choice {
        Backend::Pwrite => Ok((Engine::Pwrite, Backend::Pwrite)),
        Backend::IoUring => match uring() {
            Ok(r) => Ok((Engine::Uring(Box::new(r)), Backend::IoUring)),
            Err(source) => Err(BlockLogError::IoUringUnavailable {
                path: path.to_path_buf(),
                source,
            }),
        },
        Backend::Auto => match uring() {
            Ok(r) => Ok((Engine::Uring(Box::new(r)), Backend::IoUring)),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "block log: io_uring unavailable, falling back to pwrite + fdatasync"
                );
                Ok((Engine::Pwrite, Backend::Pwrite))
            }
        },
    }
}
