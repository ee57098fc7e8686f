//! Bounded reads of small files: operator-named ones (web configuration, certificates, keys, key
//! files, `--config`) and the kernel's attributes (sysfs, cgroupfs, procfs). Opens without blocking (a
//! FIFO or a device never stalls the caller), refuses anything that is not a regular file (sysfs,
//! cgroupfs and procfs attributes are regular files), and never reads more than the caller's limit.

use crate::issue::IssueKind;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a small file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {what}, not a regular file")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
}

impl FileError {
    /// What failed, as the `kind` of a source issue.
    pub(crate) fn issue_kind(&self) -> IssueKind {
        match self {
            FileError::Open { source, .. } | FileError::Read { source, .. } => {
                IssueKind::of_io(source)
            }
            FileError::NotRegular { .. } => IssueKind::NotRegular,
            FileError::TooLarge { .. } => IssueKind::TooLarge,
            FileError::NotUtf8 { .. } => IssueKind::Parse,
        }
    }

    /// Short, stable name for self-metric labels.
    pub(crate) fn kind(&self) -> &'static str {
        self.issue_kind().as_str()
    }

    /// The operating system's error, where the failure was one.
    pub(crate) fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            FileError::Open { source, .. } | FileError::Read { source, .. } => Some(source),
            _ => None,
        }
    }

    /// As an `io::Error`: the operating system's own where there is one, else this error inside one
    /// (found again by [`IssueKind::of_io`]).
    pub(crate) fn into_io(self) -> std::io::Error {
        match self {
            FileError::Open { source, .. } | FileError::Read { source, .. } => source,
            other => std::io::Error::other(other),
        }
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        match self {
            FileError::Open { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::Read { path, .. }
            | FileError::NotUtf8 { path } => path,
        }
    }
}

/// What a file that is not a regular file is, for the error message.
fn describe(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Longest kernel attribute read (a `cpu.stat`, `/proc/stat` of a large machine, a mountinfo).
pub(crate) const MAX_ATTRIBUTE_BYTES: usize = 1 << 20;

/// Open `path` for reading if it is a regular file (sysfs, cgroupfs and procfs attributes are).
/// `O_NONBLOCK` makes opening a FIFO return at once; the type check on the open descriptor then refuses
/// it, a device or a directory before any read. The file can be kept and re-read with
/// [`pread_from_start`].
pub(crate) fn open_regular(path: &Path) -> Result<File, FileError> {
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
            what: describe(meta.file_type()),
        });
    }
    Ok(file)
}

/// [`open_regular`] for readers whose errors are `io::Error`s: the `FileError` travels inside it, and
/// [`IssueKind::of_io`] finds its kind again.
pub(crate) fn open_regular_io(path: &Path) -> std::io::Result<File> {
    open_regular(path).map_err(FileError::into_io)
}

/// [`read_small_text`] for readers whose errors are `io::Error`s (see [`open_regular_io`]).
pub(crate) fn read_small_text_io(path: &Path, limit: usize) -> std::io::Result<String> {
    read_small_text(path, limit).map_err(FileError::into_io)
}

/// `pread`s a file from offset 0 into `buf` (kernfs and procfs regenerate a file's content on a read
/// at offset 0, so a file kept open is re-read without a path lookup): to its end, or to the end of
/// its first line with `first_line`. More than `limit` bytes is an `ErrorKind::FileTooLarge` error.
pub(crate) fn pread_from_start(
    file: &File,
    buf: &mut Vec<u8>,
    first_line: bool,
    limit: usize,
) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let want = chunk
            .len()
            .min(limit.saturating_add(1).saturating_sub(buf.len()));
        let n = match file.read_at(&mut chunk[..want], buf.len() as u64) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read?,
        };
        let new_bytes = chunk.get(..n).unwrap_or_default();
        buf.extend_from_slice(new_bytes);
        if buf.len() > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("more than {limit} bytes"),
            ));
        }
        if n == 0 || (first_line && new_bytes.contains(&b'\n')) {
            return Ok(());
        }
    }
}

/// Read an open file from offset 0, at most `limit` bytes. `path` names it in errors.
pub(crate) fn read_at_most(file: &File, path: &Path, limit: usize) -> Result<Vec<u8>, FileError> {
    let mut out = Vec::new();
    match pread_from_start(file, &mut out, false, limit) {
        Ok(()) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        }),
        Err(source) => Err(FileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Read a regular file of at most `limit` bytes ([`open_regular`], then [`read_at_most`]).
pub(crate) fn read_small_file(path: &Path, limit: usize) -> Result<Vec<u8>, FileError> {
    let file = open_regular(path)?;
    read_at_most(&file, path, limit)
}

/// [`read_small_file`] as UTF-8 text.
pub(crate) fn read_small_text(path: &Path, limit: usize) -> Result<String, FileError> {
    String::from_utf8(read_small_file(path, limit)?).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// What identifies one version of a file: a rewrite or a symlink swap (Kubernetes Secret volumes,
/// cert-manager rotation) changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    pub(crate) device: u64,
    pub(crate) inode: u64,
    pub(crate) len: u64,
    pub(crate) modified_ns: i128,
}

/// The stamp of the file `path` resolves to now; `None` when it cannot be stat'ed.
pub(crate) fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        device: meta.dev(),
        inode: meta.ino(),
        len: meta.len(),
        modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

/// Test support: make a FIFO at `path` (a reader that opens it without `O_NONBLOCK` blocks until a
/// writer comes).
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .unwrap_or_else(|_| panic!("{} has a NUL byte", path.display()));
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
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
        mkfifo(&fifo);
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
    fn pread_from_start_reads_whole_files_first_lines_and_refuses_huge_ones() {
        let tmp = tempfile::TempDir::new().unwrap();
        let path = tmp.path().join("counter");
        let long_line = "7".repeat(10_000);
        std::fs::write(&path, format!("{long_line}\nsecond\n")).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut buf = b"stale".to_vec();
        pread_from_start(&file, &mut buf, false, MAX_ATTRIBUTE_BYTES).unwrap();
        assert_eq!(buf, format!("{long_line}\nsecond\n").as_bytes());
        pread_from_start(&file, &mut buf, true, MAX_ATTRIBUTE_BYTES).unwrap();
        assert!(buf.starts_with(format!("{long_line}\n").as_bytes()));
        assert!(
            buf.len() < 10_000 + 4096,
            "stops in the chunk holding the newline"
        );
        // Rewritten in place (kernfs regenerates): the same open file sees the new content.
        std::fs::write(&path, "42\n").unwrap();
        pread_from_start(&file, &mut buf, false, MAX_ATTRIBUTE_BYTES).unwrap();
        assert_eq!(buf, b"42\n");
        std::fs::write(&path, vec![b'x'; (1 << 20) + 5000]).unwrap();
        let err = pread_from_start(&file, &mut buf, true, MAX_ATTRIBUTE_BYTES).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
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
