//! Node-wide CPU time from `<procfs>/stat`: busy and total time between samples, the file kept open
//! and re-read with `pread`. It reads the aggregate `cpu ` line only.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{ticks_to_nanos, Error, Result};
use crate::activity::NodeCpu;
use crate::files::{open_regular_io, pread_from_start, read_small_text, MAX_ATTRIBUTE_BYTES};

/// The aggregate `cpu ` line of `/proc/stat` in USER_HZ ticks, fields in the kernel's order: user,
/// nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice (guest time is already inside
/// user and nice). Fields missing on old kernels are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuStatTicks(pub(crate) [u64; 10]);

/// user, nice, system, irq, softirq.
const BUSY_FIELDS: [usize; 5] = [0, 1, 2, 5, 6];
/// idle, iowait, steal.
const NOT_BUSY_FIELDS: [usize; 3] = [3, 4, 7];

impl CpuStatTicks {
    /// user+nice+system+irq+softirq (guest time is inside user/nice; steal and idle excluded).
    pub(crate) fn busy(&self) -> u64 {
        self.sum(&BUSY_FIELDS)
    }

    /// Every state from user to steal: elapsed time x CPUs as the kernel counted it.
    pub(crate) fn total(&self) -> u64 {
        self.busy().saturating_add(self.sum(&NOT_BUSY_FIELDS))
    }

    fn sum(&self, fields: &[usize]) -> u64 {
        let values = fields.iter().filter_map(|&i| self.0.get(i));
        values.fold(0u64, |sum, &v| sum.saturating_add(v))
    }

    /// Field-wise difference, saturating at 0 for counters that went backwards (CPU hot-unplug).
    fn saturating_sub(&self, earlier: &CpuStatTicks) -> CpuStatTicks {
        CpuStatTicks(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }
}

/// Parses the aggregate `cpu ` line of `/proc/stat` content. At least user, nice, system and idle
/// must be present; an error says what is malformed.
pub(crate) fn parse_proc_stat_cpu(content: &str) -> Result<CpuStatTicks, &'static str> {
    let line = content
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .ok_or("no aggregate cpu line")?;
    let mut values = [0u64; 10];
    let mut count = 0;
    for field in line.split_ascii_whitespace() {
        let value = field.parse::<u64>().map_err(|_| "non-numeric cpu field")?;
        if let Some(slot) = values.get_mut(count) {
            *slot = value;
        }
        count += 1;
    }
    if count < 4 {
        return Err("cpu line has fewer than 4 fields");
    }
    Ok(CpuStatTicks(values))
}

/// The number of `cpuN` lines in `<procfs_root>/stat`: online logical CPUs. None when unreadable.
pub(crate) fn logical_cpus(procfs_root: &Path) -> Option<u32> {
    let content = read_small_text(&procfs_root.join("stat"), MAX_ATTRIBUTE_BYTES).ok()?;
    let count = content
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.as_bytes().first().is_some_and(u8::is_ascii_digit))
        })
        .count();
    u32::try_from(count).ok().filter(|&n| n > 0)
}

/// Node CPU time between samples, from `<procfs_root>/stat`. The file stays open and is re-read
/// with `pread` from offset 0.
#[derive(Debug)]
pub(crate) struct NodeCpuReader {
    path: PathBuf,
    file: Option<File>,
    previous: Option<CpuStatTicks>,
    buffer: Vec<u8>,
}

impl NodeCpuReader {
    pub(crate) fn new(procfs_root: &Path) -> NodeCpuReader {
        NodeCpuReader {
            path: procfs_root.join("stat"),
            file: None,
            previous: None,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// None on the first successful read (baseline), the CPU time since the previous read after.
    pub(crate) fn sample(&mut self) -> Result<Option<NodeCpu>> {
        let content = self.read_first_line()?;
        let ticks = parse_proc_stat_cpu(&content).map_err(|reason| Error::Parse {
            path: self.path.clone(),
            reason,
        })?;
        let Some(previous) = self.previous.replace(ticks) else {
            return Ok(None);
        };
        let delta = ticks.saturating_sub(&previous);
        Ok(Some(NodeCpu {
            busy: ticks_to_nanos(delta.busy()),
            total: ticks_to_nanos(delta.total()),
        }))
    }

    /// Reads up to the end of the first line (the aggregate `cpu ` line), not the whole file, which
    /// holds a line per CPU and the interrupt counters.
    fn read_first_line(&mut self) -> Result<String> {
        let file = match self.file.take() {
            Some(file) => Ok(file),
            None => open_regular_io(&self.path),
        };
        let read = file.and_then(|file| {
            pread_from_start(&file, &mut self.buffer, true, MAX_ATTRIBUTE_BYTES).map(|()| file)
        });
        // On an error the file is dropped: the next sample reopens it.
        self.file = Some(read.map_err(|source| Error::Read {
            path: self.path.clone(),
            source,
        })?);
        Ok(String::from_utf8_lossy(&self.buffer).into_owned())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::activity::procfs::nanos_per_tick;
    use crate::issue::IssueKind;
    use crate::units::CpuNanos;
    use std::fs;
    use tempfile::TempDir;

    pub(in crate::activity::procfs) const STAT_FIXTURE: &str = "\
cpu  4705 150 1120 16250 520 20 30 5 40 0
cpu0 1393 40 335 8123 260 10 15 3 20 0
cpu1 3312 110 785 8127 260 10 15 2 20 0
intr 114930548 113199788 3 0 5 263 0 4 [... many more numbers]
ctxt 1990473
btime 1062191376
processes 2915
procs_running 1
procs_blocked 0
";

    #[test]
    fn parse_stat_cpu_fixture() {
        let t = parse_proc_stat_cpu(STAT_FIXTURE).unwrap();
        assert_eq!(
            t,
            CpuStatTicks([4705, 150, 1120, 16250, 520, 20, 30, 5, 40, 0])
        );
        assert_eq!(t.busy(), 4705 + 150 + 1120 + 20 + 30);
        assert_eq!(t.total(), 4705 + 150 + 1120 + 16250 + 520 + 20 + 30 + 5);
    }
    #[test]
    fn parse_stat_cpu_short_and_garbage() {
        // old kernels: only four fields
        let t = parse_proc_stat_cpu("cpu 1 2 3 4\n").unwrap();
        assert_eq!(t, CpuStatTicks([1, 2, 3, 4, 0, 0, 0, 0, 0, 0]));
        assert_eq!((t.busy(), t.total()), (6, 10));
        // extra future fields are ignored
        assert_eq!(
            parse_proc_stat_cpu("cpu 1 2 3 4 5 6 7 8 9 10 11 12\n").unwrap(),
            CpuStatTicks([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        );
        for bad in [
            "",
            "\n\n",
            "cpu0 1 2 3 4\n",
            "cpu 1 2 3\n",
            "cpu 1 2 x 4 5\n",
            "cpu -1 2 3 4\n",
            "cpu 99999999999999999999999 2 3 4\n",
            "intr 1 2 3\n",
            "\u{1F600}",
        ] {
            let reason = parse_proc_stat_cpu(bad).unwrap_err();
            assert!(!reason.is_empty(), "{bad:?}");
        }
    }
    #[test]
    fn node_reader_deltas_over_fixture() {
        let tmp = TempDir::new().unwrap();
        let stat = tmp.path().join("stat");
        fs::write(&stat, STAT_FIXTURE).unwrap();
        let mut reader = NodeCpuReader::new(tmp.path());
        assert_eq!(
            reader.sample().unwrap(),
            None,
            "first sample is the baseline"
        );
        // +100 user, +10 system, +5 irq, +300 idle, +2 steal
        fs::write(
            &stat,
            "cpu  4805 150 1130 16550 520 25 30 7 40 0\ncpu0 0 0 0 0\n",
        )
        .unwrap();
        let tick = nanos_per_tick();
        let node = reader.sample().unwrap().unwrap();
        assert_eq!(node.busy, CpuNanos(115 * tick));
        assert_eq!(node.total, CpuNanos(417 * tick));
        // a counter going backwards saturates instead of wrapping
        fs::write(&stat, "cpu  4000 150 1130 16560 520 25 30 7 40 0\n").unwrap();
        let node = reader.sample().unwrap().unwrap();
        assert_eq!(node.busy, CpuNanos(0));
        assert_eq!(node.total, CpuNanos(10 * tick));
        // garbage is an error with the path, and the baseline is kept
        fs::write(&stat, "garbage\n").unwrap();
        let err = reader.sample().unwrap_err();
        assert_eq!(err.kind(), IssueKind::Parse);
        assert!(err.to_string().contains(&stat.display().to_string()));
        fs::write(&stat, "cpu  4001 150 1130 16560 520 25 30 7 40 0\n").unwrap();
        assert_eq!(reader.sample().unwrap().unwrap().busy, CpuNanos(tick));
    }
    #[test]
    fn node_reader_missing_file() {
        let tmp = TempDir::new().unwrap();
        let err = NodeCpuReader::new(tmp.path()).sample().unwrap_err();
        assert_eq!(err.kind(), IssueKind::Vanished);
        assert!(err.to_string().contains("stat"));
    }
    #[test]
    fn logical_cpus_counts_cpu_lines() {
        let tmp = TempDir::new().unwrap();
        fs::write(tmp.path().join("stat"), STAT_FIXTURE).unwrap();
        assert_eq!(logical_cpus(tmp.path()), Some(2));
        fs::write(tmp.path().join("stat"), "cpu 1 2 3 4\ncpux 1\n").unwrap();
        assert_eq!(logical_cpus(tmp.path()), None);
        assert_eq!(logical_cpus(&tmp.path().join("nope")), None);
    }

    #[test]
    fn real_proc_stat() {
        let procfs = Path::new("/proc");
        if !procfs.join("stat").exists() {
            eprintln!("skipping: no /proc");
            return;
        }
        let mut node = NodeCpuReader::new(procfs);
        assert_eq!(node.sample().unwrap(), None);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let delta = node.sample().unwrap().unwrap();
        assert!(delta.busy <= delta.total);
        assert!(delta.total > CpuNanos(0));
        assert!(logical_cpus(procfs).unwrap_or(0) >= 1);
    }
}
