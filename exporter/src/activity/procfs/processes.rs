//! Per-process CPU time from a walk of `<procfs>/<pid>/`: `ProcessScanner` keeps each process's ticks,
//! start time and cgroup owner (resolved once per process) between walks, for process metrics and
//! for `pods`. It never decides pod attribution itself.

use crate::files::{read_small_text_io, MAX_ATTRIBUTE_BYTES};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, warn};

use super::{ticks_to_nanos, Error, Result, INPUT};
use crate::activity::ProcessActivity;
use crate::issue::{IssueKind, SourceIssue};
use crate::resource::cgroup_path::CgroupOwner;
use crate::resource::process_owner::owner_of;
use crate::units::{CpuNanos, Pid};

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PidStat {
    pub(crate) comm: String,
    /// utime + stime, in USER_HZ ticks (all threads, live and exited).
    pub(crate) cpu_ticks: u64,
    /// Field 22, ticks since boot: tells a reused pid from the process it replaced.
    pub(crate) start_time: u64,
}

/// Parses `/proc/<pid>/stat`. `comm` may hold spaces and parentheses, so fields are counted after
/// the LAST `)`.
pub(crate) fn parse_pid_stat(content: &str) -> Result<PidStat, &'static str> {
    let open = content.find('(').ok_or("no '(' before comm")?;
    let close = content.rfind(')').ok_or("no ')' after comm")?;
    let comm = content
        .get(open + 1..close)
        .ok_or("')' before '('")?
        .to_owned();
    let rest = content.get(close + 1..).unwrap_or("");
    // rest starts at field 3 (state): field N is rest[N - 3].
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<u64, &'static str> {
        fields
            .get(n - 3)
            .ok_or("stat line too short")?
            .parse::<u64>()
            .map_err(|_| "non-numeric stat field")
    };
    let cpu_ticks = field(14)?.saturating_add(field(15)?); // utime + stime
    let start_time = field(22)?;
    Ok(PidStat {
        comm,
        cpu_ticks,
        start_time,
    })
}

/// `<dir>/exe`'s target, or empty where it cannot be read (a kernel thread has none; another user's
/// process needs CAP_SYS_PTRACE).
fn executable(dir: &Path) -> Arc<str> {
    let target = fs::read_link(dir.join("exe"));
    target.map_or_else(|_| "".into(), |path| path.to_string_lossy().into())
}

#[derive(Debug, Clone)]
struct KnownProcess {
    start_time: u64,
    cpu_ticks: u64,
    owner: CgroupOwner,
    exe: Arc<str>,
}

/// Per-process CPU time between walks of `<procfs_root>`, with the processes as of the last walk.
#[derive(Debug)]
pub(crate) struct ProcessScanner {
    root: PathBuf,
    known: HashMap<u32, KnownProcess>,
    baseline_taken: bool,
}

impl ProcessScanner {
    pub(crate) fn new(procfs_root: &Path) -> ProcessScanner {
        ProcessScanner {
            root: procfs_root.to_path_buf(),
            known: HashMap::new(),
            baseline_taken: false,
        }
    }

    /// Every process with its CPU time since the previous walk and its owner (nothing on the first
    /// walk, which sets the baseline). A process not seen before, or a reused pid, gets its whole time.
    pub(super) fn walk(&mut self) -> (Vec<(ProcessActivity, CgroupOwner)>, Vec<SourceIssue>) {
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
        let mut deltas = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            match self.read_process(pid, &entry.path()) {
                Ok((activity, process)) => {
                    if report {
                        deltas.push((activity, process.owner.clone()));
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
        deltas.sort_by_key(|(p, _)| p.pid);
        (deltas, issues)
    }

    /// Reads one process: its CPU time since the previous walk, and its new state.
    fn read_process(&self, pid: u32, dir: &Path) -> Result<(ProcessActivity, KnownProcess)> {
        let stat_path = dir.join("stat");
        let content =
            read_small_text_io(&stat_path, MAX_ATTRIBUTE_BYTES).map_err(|source| Error::Read {
                path: stat_path.clone(),
                source,
            })?;
        let stat = parse_pid_stat(&content).map_err(|reason| Error::Parse {
            path: stat_path.clone(),
            reason,
        })?;
        let (owner, exe, ticks) = match self.known.get(&pid) {
            Some(known) if known.start_time == stat.start_time => (
                known.owner.clone(),
                known.exe.clone(),
                stat.cpu_ticks.saturating_sub(known.cpu_ticks),
            ),
            // New process, or a reused pid: resolve its owner and executable, count all its time.
            _ => (self.owner(pid)?, executable(dir), stat.cpu_ticks),
        };
        let process = KnownProcess {
            start_time: stat.start_time,
            cpu_ticks: stat.cpu_ticks,
            owner,
            exe,
        };
        let container = process.owner.container().cloned();
        let (pid, comm, cpu_time) = (Pid(pid), stat.comm, ticks_to_nanos(ticks));
        let activity = ProcessActivity {
            pid,
            comm,
            exe: process.exe.clone(),
            container,
            cpu_time,
        };
        Ok((activity, process))
    }

    /// A process gone in the meantime is an error (it is skipped); a cgroup file that cannot be read
    /// for another reason (EACCES) means "no pod, no container".
    fn owner(&self, pid: u32) -> Result<CgroupOwner> {
        match owner_of(&self.root, Pid(pid)) {
            Ok(owner) => Ok(owner),
            Err(error) if error.kind() == IssueKind::Vanished => Err(error.into()),
            Err(error) => {
                debug!(error = %error, "cgroup unreadable: no container");
                Ok(CgroupOwner::System)
            }
        }
    }

    /// Processes that used CPU since the previous sample (nothing on the first call, which sets the
    /// baseline). A process not seen before gets its whole CPU time; zero deltas are left out.
    pub(crate) fn sample(&mut self) -> (Vec<ProcessActivity>, Vec<SourceIssue>) {
        let (deltas, issues) = self.walk();
        let busy = deltas
            .into_iter()
            .filter(|(p, _)| p.cpu_time > CpuNanos::ZERO);
        let activity = busy.map(|(p, _)| p).collect();
        (activity, issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::procfs::nanos_per_tick;
    use crate::activity::procfs::node_cpu::tests::STAT_FIXTURE;
    use crate::issue::Input;
    use crate::units::{ContainerId, CpuNanos};
    use std::time::{Duration, Instant};
    use tempfile::TempDir;
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
            assert!(parse_pid_stat(bad).is_err(), "{bad:?}");
        }
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
        // The executable, read once: the test binary itself.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(&*own.exe, exe.to_str().unwrap());
    }

    #[test]
    fn exe_is_the_link_target_or_empty() {
        let tmp = TempDir::new().unwrap();
        assert_eq!(&*executable(tmp.path()), "", "a kernel thread has no exe");
        std::os::unix::fs::symlink("/usr/bin/python3 (deleted)", tmp.path().join("exe")).unwrap();
        assert_eq!(&*executable(tmp.path()), "/usr/bin/python3 (deleted)");
    }
}
