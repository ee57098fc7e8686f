//! Node-wide CPU time from `<procfs>/stat` and per-process CPU time from `<procfs>/<pid>/stat`,
//! as deltas between samples; a process's container comes from its `cgroup` file, read once per pid.
//! Counters only: it never sees energy, and processes vanishing mid-walk are normal, not errors.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing::{debug, warn};

use super::{NodeCpu, ProcessActivity};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::resource::cgroup_path::parse_proc_cgroup;
use crate::units::{ContainerId, CpuNanos, Pid};

const INPUT: Input = Input::Procfs;
/// USER_HZ on every mainstream Linux architecture; used when sysconf cannot tell.
const FALLBACK_CLOCK_TICKS: u64 = 100;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot parse {path}: {reason}")]
    Parse { path: PathBuf, reason: &'static str },
    /// From the pure parsers, which do not know the path; readers wrap it into `Parse`.
    #[error("malformed content: {reason}")]
    Format { reason: &'static str },
}

impl Error {
    /// Short fixed label for self-metrics.
    pub fn kind(&self) -> IssueKind {
        match self {
            Error::Read { source, .. } if vanished(source) => IssueKind::Vanished,
            Error::Read { source, .. } => IssueKind::of_io(source),
            Error::Parse { .. } | Error::Format { .. } => IssueKind::Parse,
        }
    }

    fn at(self, path: &Path) -> Error {
        match self {
            Error::Format { reason } => Error::Parse {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        }
    }
}

/// A process that exited between listing and reading shows up as ENOENT or ESRCH.
fn vanished(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// Nanoseconds per USER_HZ tick, from `sysconf(_SC_CLK_TCK)` once per process.
fn nanos_per_tick() -> u64 {
    static NANOS_PER_TICK: OnceLock<u64> = OnceLock::new();
    *NANOS_PER_TICK.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = u64::try_from(ticks)
            .ok()
            .filter(|&t| t > 0)
            .unwrap_or(FALLBACK_CLOCK_TICKS);
        1_000_000_000 / ticks
    })
}

pub(crate) fn ticks_to_nanos(ticks: u64) -> CpuNanos {
    CpuNanos(ticks.saturating_mul(nanos_per_tick()))
}

/// The aggregate `cpu ` line of `/proc/stat`, in USER_HZ ticks. Fields missing on old kernels are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStatTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    /// Already included in `user`.
    pub guest: u64,
    /// Already included in `nice`.
    pub guest_nice: u64,
}

impl CpuStatTicks {
    /// user+nice+system+irq+softirq (guest time is inside user/nice; steal and idle excluded).
    pub fn busy(&self) -> u64 {
        [self.user, self.nice, self.system, self.irq, self.softirq]
            .into_iter()
            .fold(0u64, u64::saturating_add)
    }

    /// Every state from user to steal: elapsed time x CPUs as the kernel counted it.
    pub fn total(&self) -> u64 {
        self.busy()
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.steal)
    }

    /// Field-wise difference, saturating at 0 for counters that went backwards (CPU hot-unplug).
    fn saturating_sub(&self, earlier: &CpuStatTicks) -> CpuStatTicks {
        CpuStatTicks {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
            guest: self.guest.saturating_sub(earlier.guest),
            guest_nice: self.guest_nice.saturating_sub(earlier.guest_nice),
        }
    }
}

/// Parses the aggregate `cpu ` line of `/proc/stat` content. At least user, nice, system and idle
/// must be present; errors are `Error::Format`.
pub fn parse_proc_stat_cpu(content: &str) -> Result<CpuStatTicks> {
    let line = content
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .ok_or(Error::Format {
            reason: "no aggregate cpu line",
        })?;
    let mut values = [0u64; 10];
    let mut count = 0;
    for field in line.split_ascii_whitespace() {
        let value = field.parse::<u64>().map_err(|_| Error::Format {
            reason: "non-numeric cpu field",
        })?;
        if let Some(slot) = values.get_mut(count) {
            *slot = value;
        }
        count += 1;
    }
    if count < 4 {
        return Err(Error::Format {
            reason: "cpu line has fewer than 4 fields",
        });
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice] = values;
    Ok(CpuStatTicks {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

/// The number of `cpuN` lines in `<procfs_root>/stat`: online logical CPUs. None when unreadable.
pub fn logical_cpus(procfs_root: &Path) -> Option<u32> {
    let content = fs::read_to_string(procfs_root.join("stat")).ok()?;
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
pub struct NodeCpuReader {
    path: PathBuf,
    file: Option<File>,
    previous: Option<CpuStatTicks>,
    buffer: Vec<u8>,
}

impl NodeCpuReader {
    pub fn new(procfs_root: &Path) -> NodeCpuReader {
        NodeCpuReader {
            path: procfs_root.join("stat"),
            file: None,
            previous: None,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// None on the first successful read (baseline), the CPU time since the previous read after.
    pub fn sample(&mut self) -> Result<Option<NodeCpu>> {
        let content = self.read_first_line()?;
        let ticks = parse_proc_stat_cpu(&content).map_err(|e| e.at(&self.path))?;
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
            Some(file) => file,
            None => File::open(&self.path).map_err(|source| Error::Read {
                path: self.path.clone(),
                source,
            })?,
        };
        self.buffer.clear();
        let mut chunk = [0u8; 1024];
        loop {
            let offset = self.buffer.len() as u64;
            let read = match file.read_at(&mut chunk, offset) {
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // Dropping the file: the next sample reopens it.
                Err(source) => {
                    return Err(Error::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            let Some(new_bytes) = chunk.get(..read) else {
                break;
            };
            self.buffer.extend_from_slice(new_bytes);
            if read == 0 || new_bytes.contains(&b'\n') || self.buffer.len() > 64 * 1024 {
                break;
            }
        }
        self.file = Some(file);
        Ok(String::from_utf8_lossy(&self.buffer).into_owned())
    }
}

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    pub comm: String,
    /// utime + stime, in USER_HZ ticks (all threads, live and exited).
    pub cpu_ticks: u64,
    /// Field 22, ticks since boot: tells a reused pid from the process it replaced.
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. `comm` may hold spaces and parentheses, so fields are counted after
/// the LAST `)`.
pub fn parse_pid_stat(content: &str) -> Result<PidStat> {
    let open = content.find('(').ok_or(Error::Format {
        reason: "no '(' before comm",
    })?;
    let close = content.rfind(')').ok_or(Error::Format {
        reason: "no ')' after comm",
    })?;
    let comm = content
        .get(open + 1..close)
        .ok_or(Error::Format {
            reason: "')' before '('",
        })?
        .to_owned();
    let rest = content.get(close + 1..).unwrap_or("");
    // rest starts at field 3 (state): field N is rest[N - 3].
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or(Error::Format {
                reason: "stat line too short",
            })?
            .parse::<u64>()
            .map_err(|_| Error::Format {
                reason: "non-numeric stat field",
            })
    };
    let utime = field(14)?;
    let stime = field(15)?;
    let start_time = field(22)?;
    Ok(PidStat {
        comm,
        cpu_ticks: utime.saturating_add(stime),
        start_time,
    })
}

#[derive(Debug, Clone)]
struct KnownProcess {
    start_time: u64,
    cpu_ticks: u64,
    container: Option<ContainerId>,
}

/// Per-process CPU time between samples, from a walk of `<procfs_root>/<pid>/`.
#[derive(Debug)]
pub struct ProcessScanner {
    root: PathBuf,
    known: HashMap<u32, KnownProcess>,
    baseline_taken: bool,
}

impl ProcessScanner {
    pub fn new(procfs_root: &Path) -> ProcessScanner {
        ProcessScanner {
            root: procfs_root.to_path_buf(),
            known: HashMap::new(),
            baseline_taken: false,
        }
    }

    /// Processes that used CPU since the previous sample (nothing on the first call, which sets the
    /// baseline). A process not seen before gets its whole CPU time; zero deltas are left out.
    pub fn sample(&mut self) -> (Vec<ProcessActivity>, Vec<SourceIssue>) {
        let mut issues = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(source) => {
                let error = Error::Read {
                    path: self.root.clone(),
                    source,
                };
                warn!(error = %error, "cannot list processes");
                issues.push(SourceIssue::new(INPUT, error.kind(), error.to_string()));
                return (Vec::new(), issues);
            }
        };
        let report = self.baseline_taken;
        let mut next = HashMap::with_capacity(self.known.len());
        let mut activity = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            match self.read_process(pid, &entry.path()) {
                Ok((stat, process, delta_ticks)) => {
                    if report && delta_ticks > 0 {
                        activity.push(ProcessActivity {
                            pid: Pid(pid),
                            comm: stat.comm,
                            container: process.container.clone(),
                            cpu_time: ticks_to_nanos(delta_ticks),
                        });
                    }
                    next.insert(pid, process);
                }
                Err(error) => {
                    // A transient failure keeps the baseline so the next good read is not counted twice.
                    if error.kind() != IssueKind::Vanished {
                        if let Some(known) = self.known.get(&pid) {
                            next.insert(pid, known.clone());
                        }
                    }
                    debug!(error = %error, "process skipped");
                    issues.push(SourceIssue::new(INPUT, error.kind(), error.to_string()));
                }
            }
        }
        // Exited processes are not in `next`: their state is forgotten.
        self.known = next;
        self.baseline_taken = true;
        activity.sort_by_key(|p| p.pid);
        (activity, issues)
    }

    /// Reads one process; returns its stat, its new state and its CPU ticks since the previous sample.
    fn read_process(&self, pid: u32, dir: &Path) -> Result<(PidStat, KnownProcess, u64)> {
        let stat_path = dir.join("stat");
        let content = fs::read_to_string(&stat_path).map_err(|source| Error::Read {
            path: stat_path.clone(),
            source,
        })?;
        let stat = parse_pid_stat(&content).map_err(|e| e.at(&stat_path))?;
        let (container, delta_ticks) = match self.known.get(&pid) {
            Some(known) if known.start_time == stat.start_time => (
                known.container.clone(),
                stat.cpu_ticks.saturating_sub(known.cpu_ticks),
            ),
            // New process, or a reused pid: read its cgroup, count all its time.
            _ => (read_container(dir)?, stat.cpu_ticks),
        };
        let process = KnownProcess {
            start_time: stat.start_time,
            cpu_ticks: stat.cpu_ticks,
            container,
        };
        Ok((stat, process, delta_ticks))
    }
}

/// The container of a process from its `cgroup` file. A process gone in the meantime is an error
/// (it is skipped); a file that cannot be read for another reason (EACCES) means "no container".
fn read_container(dir: &Path) -> Result<Option<ContainerId>> {
    let path = dir.join("cgroup");
    match fs::read_to_string(&path) {
        Ok(content) => Ok(parse_proc_cgroup(&content).container().cloned()),
        Err(source) if vanished(&source) => Err(Error::Read { path, source }),
        Err(source) => {
            debug!(path = %path.display(), error = %source, "cgroup unreadable: no container");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tempfile::TempDir;

    const STAT_FIXTURE: &str = "\
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
            CpuStatTicks {
                user: 4705,
                nice: 150,
                system: 1120,
                idle: 16250,
                iowait: 520,
                irq: 20,
                softirq: 30,
                steal: 5,
                guest: 40,
                guest_nice: 0
            }
        );
        assert_eq!(t.busy(), 4705 + 150 + 1120 + 20 + 30);
        assert_eq!(t.total(), 4705 + 150 + 1120 + 16250 + 520 + 20 + 30 + 5);
    }

    #[test]
    fn parse_stat_cpu_short_and_garbage() {
        // old kernels: only four fields
        let t = parse_proc_stat_cpu("cpu 1 2 3 4\n").unwrap();
        assert_eq!((t.user, t.nice, t.system, t.idle, t.steal), (1, 2, 3, 4, 0));
        // extra future fields are ignored
        assert_eq!(
            parse_proc_stat_cpu("cpu 1 2 3 4 5 6 7 8 9 10 11 12\n")
                .unwrap()
                .guest_nice,
            10
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
            let err = parse_proc_stat_cpu(bad).unwrap_err();
            assert_eq!(err.kind(), IssueKind::Parse, "{bad:?}");
        }
    }

    #[test]
    fn parse_pid_stat_forms() {
        let plain = "1234 (bash) S 1 1234 1234 34816 1234 4194304 100 0 0 0 250 75 0 0 20 0 1 0 98765 10000 200\n";
        assert_eq!(
            parse_pid_stat(plain).unwrap(),
            PidStat {
                comm: "bash".into(),
                cpu_ticks: 325,
                start_time: 98765
            }
        );
        // comm with spaces and parentheses: count from the last ')'
        let tricky =
            "77 (my (weird) proc) ) R 1 77 77 0 -1 4194304 5 0 0 0 7 3 0 0 20 0 1 0 555 0 0\n";
        let s = parse_pid_stat(tricky).unwrap();
        assert_eq!(s.comm, "my (weird) proc) ");
        assert_eq!((s.cpu_ticks, s.start_time), (10, 555));
        for bad in [
            "",
            "1234 bash S 1",
            "1234 (bash",
            "1234 )bash( S 1 2",
            "1 (x) S 1 2 3",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a 3 0 0 20 0 1 0 5",
        ] {
            assert_eq!(
                parse_pid_stat(bad).unwrap_err().kind(),
                IssueKind::Parse,
                "{bad:?}"
            );
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

    fn write_proc(root: &Path, pid: u32, comm: &str, ticks: (u64, u64), start: u64, cgroup: &str) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("stat"),
            format!("{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194304 1 0 0 0 {} {} 0 0 20 0 1 0 {start} 0 0\n", ticks.0, ticks.1),
        )
        .unwrap();
        fs::write(dir.join("cgroup"), cgroup).unwrap();
    }

    const UID: &str = "6f1c9a4e_2b9d_4b7e_9a51_0c3f0e2d7a11";
    const CID: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

    fn in_pod() -> String {
        format!("0::/kubepods.slice/kubepods-pod{UID}.slice/cri-containerd-{CID}.scope\n")
    }

    #[test]
    fn scanner_over_fake_procfs() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let tick = nanos_per_tick();
        write_proc(root, 1, "systemd", (10, 5), 1, "0::/init.scope\n");
        write_proc(root, 42, "nginx: worker", (100, 50), 900, &in_pod());
        write_proc(
            root,
            43,
            "idle one",
            (1, 1),
            901,
            "0::/system.slice/x.service\n",
        );
        fs::create_dir_all(root.join("self")).unwrap();
        fs::write(root.join("stat"), STAT_FIXTURE).unwrap();
        // a numeric dir without files: vanished mid-read
        fs::create_dir_all(root.join("999")).unwrap();

        let mut scanner = ProcessScanner::new(root);
        let (first, issues) = scanner.sample();
        assert!(first.is_empty(), "first sample is the baseline");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].kind, IssueKind::Vanished);
        fs::remove_dir_all(root.join("999")).unwrap();

        // pid 42 +30 ticks; its cgroup file now says something else (must come from the cache);
        // pid 43 unchanged (left out); pid 1 exits; pid 50 (plain Docker) appears.
        write_proc(root, 42, "nginx: worker", (120, 60), 900, "0::/\n");
        fs::remove_dir_all(root.join("1")).unwrap();
        let docker = format!("0::/system.slice/docker-{CID}.scope\n");
        write_proc(root, 50, "short (lived)", (7, 3), 1000, &docker);
        let (second, issues) = scanner.sample();
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(second.len(), 2, "{second:?}");
        assert_eq!(second[0].pid, Pid(42));
        assert_eq!(second[0].comm, "nginx: worker");
        assert_eq!(second[0].container, Some(ContainerId::parse(CID).unwrap()));
        assert_eq!(second[0].cpu_time, CpuNanos(30 * tick));
        assert_eq!(second[1].pid, Pid(50));
        assert_eq!(second[1].comm, "short (lived)");
        assert_eq!(
            second[1].cpu_time,
            CpuNanos(10 * tick),
            "a new pid gets its whole time"
        );
        assert_eq!(second[1].container, Some(ContainerId::parse(CID).unwrap()));
        assert!(!scanner.known.contains_key(&1), "exited pids are forgotten");

        // pid 43 is reused by a new process (different start time): whole time, cgroup re-read.
        write_proc(root, 43, "reused", (4, 0), 5000, &in_pod());
        fs::write(root.join("42").join("stat"), "garbage").unwrap();
        let (third, issues) = scanner.sample();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].kind, IssueKind::Parse);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].pid, Pid(43));
        assert_eq!(third[0].cpu_time, CpuNanos(4 * tick));
        assert_eq!(third[0].container, Some(ContainerId::parse(CID).unwrap()));

        // pid 42 readable again: only the growth since its last good read counts.
        write_proc(root, 42, "nginx: worker", (121, 60), 900, "0::/\n");
        let (fourth, issues) = scanner.sample();
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(fourth.len(), 1);
        assert_eq!(fourth[0].pid, Pid(42));
        assert_eq!(fourth[0].cpu_time, CpuNanos(tick));
    }

    #[test]
    fn scanner_missing_root_is_an_issue() {
        let tmp = TempDir::new().unwrap();
        let (activity, issues) = ProcessScanner::new(&tmp.path().join("nope")).sample();
        assert!(activity.is_empty());
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].input, Input::Procfs);
    }

    /// CPU time of the calling thread.
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn real_proc_sees_own_busy_process() {
        let procfs = Path::new("/proc");
        if !procfs.join("self").join("stat").exists() {
            eprintln!("skipping: no /proc");
            return;
        }
        let own_pid = std::process::id();
        let own_comm = fs::read_to_string(procfs.join("self").join("comm")).unwrap();
        let mut scanner = ProcessScanner::new(procfs);
        let (baseline, _) = scanner.sample();
        assert!(baseline.is_empty());

        // Spin until this thread has used 200 ms of CPU (bounded by wall time on a starved machine).
        let spinner = {
            std::thread::spawn(move || {
                let start = thread_cpu_time();
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut x = 0u64;
                while thread_cpu_time() - start < Duration::from_millis(200)
                    && Instant::now() < deadline
                {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                thread_cpu_time() - start
            })
        };
        let spun = spinner.join().unwrap();
        assert!(
            spun >= Duration::from_millis(200),
            "spinner starved: {spun:?}"
        );

        let (activity, _issues) = scanner.sample();
        let own = activity
            .iter()
            .find(|p| p.pid == Pid(own_pid))
            .expect("own process reported");
        assert_eq!(own.comm, own_comm.trim_end_matches('\n'));
        assert!(
            own.cpu_time >= CpuNanos(100_000_000),
            "delta {:?}",
            own.cpu_time
        );

        let mut node = NodeCpuReader::new(procfs);
        assert_eq!(node.sample().unwrap(), None);
        std::thread::sleep(Duration::from_millis(50));
        let delta = node.sample().unwrap().unwrap();
        assert!(delta.busy <= delta.total);
        assert!(logical_cpus(procfs).unwrap_or(0) >= 1);
    }
}
