//! Free space under a datadir. A node that runs out of disk mid-write leaves the failure to
//! whichever library hits ENOSPC first (RocksDB may abort the process on an assertion); a node
//! refuses to start below a minimum instead, and a running node stops loudly when it falls
//! below it (`node::process`), before writes fail.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use thiserror::Error;

/// Free space a node keeps by default (`[storage] min_free_mib`).
pub const DEFAULT_MIN_FREE_MIB: u64 = 64;

#[derive(Debug, Error)]
pub enum SpaceError {
    #[error("reading free space under {path}: {source}")]
    Stat {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} has {free_mib} MiB free, below the {min_mib} MiB minimum \
         ([storage] min_free_mib): free space on that disk"
    )]
    Low {
        path: String,
        free_mib: u64,
        min_mib: u64,
    },
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, SpaceError> {
    let stat_error = |source| SpaceError::Stat {
        path: path.display().to_string(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| stat_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: `stat` is plain data the call fills in; `c_path` is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(stat_error(std::io::Error::last_os_error()));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// An error unless at least `min_mib` MiB are free under `path`.
pub fn ensure_free(path: &Path, min_mib: u64) -> Result<(), SpaceError> {
    let free = free_bytes(path)?;
    if free < min_mib.saturating_mul(1 << 20) {
        return Err(SpaceError::Low {
            path: path.display().to_string(),
            free_mib: free >> 20,
            min_mib,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimum_above_the_free_space_is_refused_with_both_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let free_mib = free_bytes(dir.path()).unwrap() >> 20;
        ensure_free(dir.path(), 0).unwrap();
        let err = ensure_free(dir.path(), free_mib + 1024).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("min_free_mib"), "{text}");
        assert!(matches!(err, SpaceError::Low { min_mib, .. } if min_mib == free_mib + 1024));
        assert!(matches!(
            free_bytes(&dir.path().join("missing")),
            Err(SpaceError::Stat { .. })
        ));
    }
}
