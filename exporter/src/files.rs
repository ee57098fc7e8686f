//! Bounded reads of small regular files named by an operator: web configuration, certificates, keys,
//! key files. Opens without blocking (a FIFO or a device never stalls the caller), refuses anything
//! that is not a regular file, and never reads more than the caller's limit.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a small file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FileError {
    /// Short, stable name for self-metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FileError::Open { source, .. } | FileError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                "not_found"
            }
            FileError::Open { source, .. } | FileError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                "permission_denied"
            }
            FileError::Open { .. } | FileError::Read { .. } => "io",
            FileError::NotRegular { .. } => "not_regular",
            FileError::TooLarge { .. } => "too_large",
        }
    }
}

/// Read a regular file of at most `limit` bytes. `O_NONBLOCK` makes opening a FIFO return at once;
/// the type check then refuses it before any read.
pub fn read_small_file(path: &Path, limit: usize) -> Result<Vec<u8>, FileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| FileError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let mut out = Vec::with_capacity((meta.len() as usize).min(limit) + 1);
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    Read::take(&file, cap)
        .read_to_end(&mut out)
        .map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

/// What identifies one version of a file: a rewrite or a symlink swap (Kubernetes Secret volumes,
/// cert-manager rotation) changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub device: u64,
    pub inode: u64,
    pub len: u64,
    pub modified_ns: i128,
}

/// The stamp of the file `path` resolves to now; `None` when it cannot be stat'ed.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        device: meta.dev(),
        inode: meta.ino(),
        len: meta.len(),
        modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_small_file(&path, 5).unwrap(), b"12345");
        let e = read_small_file(&path, 4).unwrap_err();
        assert_eq!(e.kind(), "too_large");
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_small_file(&fifo, 10).unwrap_err().kind(),
            "not_regular"
        );
        let zero = read_small_file(Path::new("/dev/zero"), 10).unwrap_err();
        assert_eq!(zero.kind(), "not_regular");
        assert_eq!(
            read_small_file(dir.path(), 10).unwrap_err().kind(),
            "not_regular"
        );
        let missing = read_small_file(&dir.path().join("nope"), 10).unwrap_err();
        assert_eq!(missing.kind(), "not_found");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn stamp_changes_when_the_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert");
        std::fs::write(&path, b"one").unwrap();
        let first = stamp(&path).unwrap();
        let tmp = dir.path().join("cert.new");
        std::fs::write(&tmp, b"two!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(stamp(&path).unwrap(), first);
        assert_eq!(stamp(&dir.path().join("gone")), None);
    }
}
