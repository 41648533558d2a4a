//! A size-limited tmpfs as one node's datadir, for `kaon chaos`'s full-disk fault: mounted
//! before the node starts, filled to all but a few KiB on demand (the node's next writes fail
//! with ENOSPC), emptied again, and unmounted when dropped. Mounting needs root (or
//! CAP_SYS_ADMIN); where the machine refuses, [`Tmpfs::mount`] says why and the fault is
//! skipped.

use anyhow::Context;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Name of the file that takes the free space.
const FILLER: &str = "chaos-filler";

/// A mounted tmpfs; unmounted (lazily, so a process still holding it cannot block the
/// harness) when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path` (created if missing).
    pub fn mount(path: &Path, bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let target = c_path(path)?;
        let options = CString::new(format!("size={bytes},mode=0700"))?;
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mounting a tmpfs at {}", path.display()));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Takes all but `leave` bytes of the free space with one allocated file.
    pub fn fill(&self, leave: u64) -> anyhow::Result<()> {
        let take = crate::storage::space::free_bytes(&self.path)?.saturating_sub(leave);
        let file = std::fs::File::create(self.path.join(FILLER)).context("creating the filler")?;
        let len = libc::off_t::try_from(take).context("filler length")?;
        // SAFETY: a valid open descriptor; allocates `len` bytes (tmpfs supports it).
        let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, len) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc)).context("allocating the filler");
        }
        Ok(())
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn empty(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.path.join(FILLER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("removing the filler")
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(path) = c_path(&self.path) {
            // SAFETY: a NUL-terminated path; a lazy unmount cannot fail on a busy mount.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_tmpfs_refuses_writes_until_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(tmpfs) = Tmpfs::mount(&dir.path().join("disk"), 4 << 20) else {
            eprintln!("tmpfs cannot be mounted here (not root): nothing to check");
            return;
        };
        tmpfs.fill(0).unwrap();
        let write = || std::fs::write(dir.path().join("disk/data"), vec![1u8; 64 << 10]);
        let err = write().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        tmpfs.empty().unwrap();
        write().unwrap();
    }
}
