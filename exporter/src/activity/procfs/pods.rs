//! Per-pod CPU time from a walk of /proc (`--cpu-source procfs`): each process's utime+stime since
//! the previous walk, its pod and container from `/proc/<pid>/cgroup` (resolved once per process). The
//! last resort: a process that starts and ends between two walks is never seen, so prefer `ebpf` or
//! `cgroup`. Host daemons and kernel threads count toward no pod.

use std::path::Path;

use super::processes::ProcessScanner;
use super::INPUT;
use crate::activity::{ActivitySample, ActivitySource, PodTimes};

/// Pod activity from a /proc walk.
#[derive(Debug)]
pub(crate) struct ProcfsPods {
    processes: ProcessScanner,
}

impl ProcfsPods {
    pub(crate) fn new(procfs_root: &Path) -> ProcfsPods {
        ProcfsPods {
            processes: ProcessScanner::new(procfs_root),
        }
    }
}

impl ActivitySource for ProcfsPods {
    fn name(&self) -> &'static str {
        INPUT.as_str()
    }

    fn sample(&mut self) -> ActivitySample {
        let (processes, issues) = self.processes.walk();
        let mut pods = PodTimes::default();
        for (process, owner) in processes {
            pods.add(owner, process.cpu_time);
        }
        ActivitySample {
            pods: pods.into_pods().filter(|p| p.cpu_time.0 > 0).collect(),
            issues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::procfs::ticks_to_nanos;
    use crate::issue::{Input, IssueKind};
    use crate::units::CpuNanos;
    use std::fs;
    use tempfile::TempDir;

    const UID: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";
    const CID: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

    fn process(proc: &Path, pid: u32, ticks: u64, start: u64, cgroup: &str) {
        let dir = proc.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        let stat = format!(
            "{pid} (busy loop) R 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 {start} 0 0\n"
        );
        fs::write(dir.join("stat"), stat).unwrap();
        fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
    }

    #[test]
    fn deltas_per_pod_and_container_with_pid_reuse_and_system() {
        let tmp = TempDir::new().unwrap();
        let proc = tmp.path();
        let in_pod = format!("/kubepods/burstable/pod{UID}/{CID}");
        process(proc, 10, 100, 5, &in_pod);
        process(proc, 11, 50, 5, "/system.slice/sshd.service");
        fs::write(proc.join("stat"), "not a pid").unwrap();
        let mut source = ProcfsPods::new(proc);
        assert!(
            source.sample().pods.is_empty(),
            "first walk is the baseline"
        );

        process(proc, 10, 130, 5, &in_pod);
        process(proc, 11, 90, 5, "/system.slice/sshd.service");
        process(proc, 12, 7, 9, &format!("/kubepods/burstable/pod{UID}"));
        let sample = source.sample();
        assert_eq!(sample.pods.len(), 1);
        let pod = &sample.pods[0];
        assert_eq!(pod.cpu_time, ticks_to_nanos(30 + 7));
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].cpu_time, ticks_to_nanos(30));

        // A garbled stat for one walk keeps the process's baseline: the next good read counts only
        // the growth since the last good one. A pid listed without files vanished mid-walk.
        fs::write(proc.join("12").join("stat"), "garbage").unwrap();
        fs::create_dir_all(proc.join("99")).unwrap();
        let sample = source.sample();
        let mut kinds: Vec<IssueKind> = sample.issues.iter().map(|i| i.kind).collect();
        kinds.sort();
        assert_eq!(kinds, vec![IssueKind::Parse, IssueKind::Vanished]);
        assert!(sample.pods.is_empty(), "{:?}", sample.pods);
        fs::remove_dir_all(proc.join("99")).unwrap();
        process(proc, 12, 9, 9, &format!("/kubepods/burstable/pod{UID}"));
        let sample = source.sample();
        assert_eq!(sample.pods.len(), 1);
        assert_eq!(sample.pods[0].cpu_time, ticks_to_nanos(2));
        // pid 10 did not run: its container is listed with no time, as before.
        assert_eq!(sample.pods[0].containers.len(), 1);
        assert_eq!(sample.pods[0].containers[0].cpu_time, CpuNanos(0));

        // pid 10 reused by a host process: its whole time is the new process's, and not the pod's.
        process(proc, 10, 3, 77, "/user.slice");
        fs::remove_dir_all(proc.join("12")).unwrap();
        assert!(source.sample().pods.is_empty());
    }

    #[test]
    fn missing_root_is_an_issue() {
        let tmp = TempDir::new().unwrap();
        let mut source = ProcfsPods::new(&tmp.path().join("nope"));
        let sample = source.sample();
        assert_eq!(sample.issues.len(), 1);
        assert_eq!(sample.issues[0].input, Input::Procfs);
    }
}
