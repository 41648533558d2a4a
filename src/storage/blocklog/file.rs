//! File-level helpers of the block log: atomic creation, the write handle, the writer lock.

use super::format::{self, Superblock, BLOCK};
use super::{io_err, BlockLogError, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Creates a new log holding only its superblock, atomically: written to a temporary file,
/// synced, renamed into place, and the directory synced. A file at `path` therefore always
/// has a complete superblock.
pub(super) fn create(path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".creating");
    let tmp = PathBuf::from(tmp);
    let sb = Superblock {
        log_id: rand::random(),
    };
    let mut block = vec![0u8; BLOCK as usize];
    block[..format::SUPERBLOCK_LEN].copy_from_slice(&sb.encode());
    let mut f = File::create(&tmp).map_err(io_err(&tmp, "create"))?;
    f.write_all(&block)
        .map_err(io_err(&tmp, "write superblock"))?;
    f.sync_all().map_err(io_err(&tmp, "sync superblock"))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename into place"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "sync directory"))?;
    Ok(())
}

/// Opens the write handle; returns whether it is O_DIRECT.
pub(super) fn open_writer(path: &Path, direct: bool) -> Result<(File, bool)> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if direct {
        match o.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(
                    path = %path.display(),
                    "block log: the file system refuses O_DIRECT; using buffered writes"
                );
            }
            Err(e) => return Err(io_err(path, "open for writing")(e)),
        }
    }
    let f = o.open(path).map_err(io_err(path, "open for writing"))?;
    Ok((f, false))
}

/// Takes an exclusive advisory lock so two writers never interleave frames, waiting up to
/// `wait` for a previous holder to go away.
pub(super) fn lock(file: &File, path: &Path, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock only reads its integer arguments; the fd is valid while `file` lives.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Some(libc::EWOULDBLOCK) => {
                return Err(BlockLogError::Locked {
                    path: path.to_path_buf(),
                })
            }
            _ => return Err(io_err(path, "flock")(e)),
        }
    }
}

/// Reads up to `buf.len()` bytes from the start of the file; returns how many were read.
pub(super) fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
