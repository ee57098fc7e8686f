//! Counter files kept open and re-read with `pread`, within a budget of file descriptors derived from
//! the process's `RLIMIT_NOFILE`. It owns the only process-wide policy of the cgroup source (raising
//! the soft fd limit, called once by `main`); it knows nothing of cgroup trees or counter formats.

use std::fs;
use std::io;
use std::path::Path;

use crate::files::{open_regular_io, pread_from_start, MAX_ATTRIBUTE_BYTES};
use crate::units::CpuNanos;

/// Kept-open counter files take at most this share of the soft fd limit (1/2): the rest stays for
/// everything else (the HTTP server's connections, the walk's directory handles, NVML, eBPF maps,
/// the kube client), so a huge node does not starve accept or the walk.
const FD_SHARE_DIVISOR: u64 = 2;

/// A cgroup's last counter value and, while fds allow, its counter file kept open: re-reading an
/// open file (`pread` at offset 0; kernfs regenerates the content) costs a fraction of a path
/// lookup + open + read + close.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) value: CpuNanos,
    pub(super) file: Option<fs::File>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (commonly 1,024 -> 524,288 on hosts; already
/// high in containers), so that counter files of every cgroup can stay open. Call before
/// `discover`/`with_root`. Returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    let Some(limit) = open_file_limit() else {
        return 0;
    };
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

/// The process's `RLIMIT_NOFILE`, if it can be read.
fn open_file_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// How many counter files may stay open under the process's `RLIMIT_NOFILE`: half the soft limit.
pub(super) fn max_open_counters() -> usize {
    open_file_limit().map_or(0, |limit| counter_budget(limit.rlim_cur))
}

fn counter_budget(soft_limit: u64) -> usize {
    usize::try_from((soft_limit / FD_SHARE_DIVISOR).min(1 << 20)).unwrap_or(0)
}

/// Counter files held open now (kept from the last sample or opened in this one), and how many may be.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenFiles {
    pub(super) open: usize,
    pub(super) max_open: usize,
}

impl OpenFiles {
    /// Reads a counter file into `buf`: through `kept` (its open file, re-read from offset 0) when
    /// there is one and it still works, else by path. Returns the read's result, the file to keep for
    /// next time (the one used, or the newly opened one while the budget allows), and whether a kept
    /// file had failed while the path opened again (the cgroup was removed and recreated at the same
    /// path).
    pub(super) fn read(
        &mut self,
        kept: Option<fs::File>,
        path: &Path,
        buf: &mut Vec<u8>,
    ) -> (io::Result<()>, Option<fs::File>, bool) {
        let had_kept = kept.is_some();
        if let Some(file) = kept {
            if pread_from_start(&file, buf, false, MAX_ATTRIBUTE_BYTES).is_ok() {
                return (Ok(()), Some(file), false);
            }
            // The cgroup was removed (ENODEV), perhaps recreated at the same path: try the path.
            self.open = self.open.saturating_sub(1);
        }
        match open_regular_io(path).and_then(|file| {
            pread_from_start(&file, buf, false, MAX_ATTRIBUTE_BYTES).map(|()| file)
        }) {
            Ok(file) => {
                let keep = self.open < self.max_open;
                self.open += usize::from(keep);
                (Ok(()), keep.then_some(file), had_kept)
            }
            Err(e) => (Err(e), None, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_files_take_at_most_half_the_soft_limit() {
        assert_eq!(counter_budget(1024), 512);
        assert_eq!(counter_budget(20_000), 10_000);
        assert_eq!(counter_budget(1), 0);
        assert_eq!(counter_budget(u64::MAX), 1 << 20);
        // In force now: never more than half of this process's soft limit.
        let soft = open_file_limit().unwrap().rlim_cur;
        assert!(max_open_counters() as u64 <= soft / 2);
    }
}
