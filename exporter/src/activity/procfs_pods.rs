//! Per-pod CPU time from a walk of /proc (`--cpu-source procfs`): each process's utime+stime since
//! the previous walk, its pod and container from `/proc/<pid>/cgroup` (read once per process). The
//! last resort: a process that starts and ends between two walks is never seen, so prefer `ebpf` or
//! `cgroup`. Host daemons and kernel threads count toward no pod.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use super::procfs::{parse_pid_stat, ticks_to_nanos};
use super::{ActivitySample, ActivitySource, ContainerActivity, PodActivity};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::resource::cgroup_path::{parse_proc_cgroup, CgroupOwner};
use crate::units::{ContainerId, CpuNanos, PodUid};

const INPUT: Input = Input::Procfs;

#[derive(Debug, Clone)]
struct Known {
    start_time: u64,
    cpu_ticks: u64,
    owner: CgroupOwner,
}

/// Pod activity from a /proc walk.
#[derive(Debug)]
pub struct ProcfsPods {
    root: PathBuf,
    known: HashMap<u32, Known>,
}

impl ProcfsPods {
    pub fn new(procfs_root: &Path) -> ProcfsPods {
        ProcfsPods {
            root: procfs_root.to_path_buf(),
            known: HashMap::new(),
        }
    }

    /// One process: its owner and CPU ticks since the previous walk (all of them when new or reused).
    fn read(&self, pid: u32, dir: &Path) -> Option<Known> {
        let stat = parse_pid_stat(&fs::read_to_string(dir.join("stat")).ok()?).ok()?;
        let owner = match self.known.get(&pid) {
            Some(k) if k.start_time == stat.start_time => k.owner.clone(),
            _ => parse_proc_cgroup(&fs::read_to_string(dir.join("cgroup")).ok()?),
        };
        Some(Known {
            start_time: stat.start_time,
            cpu_ticks: stat.cpu_ticks,
            owner,
        })
    }
}

impl ActivitySource for ProcfsPods {
    fn name(&self) -> &'static str {
        INPUT.as_str()
    }

    fn sample(&mut self) -> ActivitySample {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) => {
                let detail = format!("cannot list {}: {e}", self.root.display());
                return ActivitySample {
                    pods: Vec::new(),
                    issues: vec![SourceIssue::new(INPUT, IssueKind::of_io(&e), detail)],
                };
            }
        };
        let mut next = HashMap::with_capacity(self.known.len());
        let mut pods: BTreeMap<PodUid, (CpuNanos, BTreeMap<ContainerId, CpuNanos>)> =
            BTreeMap::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Vanished or unreadable processes are skipped: a walk is a best effort by nature.
            let Some(process) = self.read(pid, &entry.path()) else {
                continue;
            };
            let delta = match self.known.get(&pid) {
                Some(k) if k.start_time == process.start_time => {
                    process.cpu_ticks.saturating_sub(k.cpu_ticks)
                }
                _ => process.cpu_ticks,
            };
            let time = ticks_to_nanos(delta);
            match &process.owner {
                CgroupOwner::Container { pod, container } => {
                    let p = pods.entry(pod.clone()).or_default();
                    p.0 += time;
                    *p.1.entry(container.clone()).or_default() += time;
                }
                CgroupOwner::PodLevel { pod } => pods.entry(pod.clone()).or_default().0 += time,
                CgroupOwner::OtherContainer { .. } | CgroupOwner::System => {}
            }
            next.insert(pid, process);
        }
        let first = self.known.is_empty();
        self.known = next;
        if first {
            return ActivitySample::default(); // baseline
        }
        ActivitySample {
            pods: pods
                .into_iter()
                .filter(|(_, (t, _))| t.0 > 0)
                .map(|(uid, (cpu_time, containers))| PodActivity {
                    uid,
                    cpu_time,
                    containers: containers
                        .into_iter()
                        .map(|(id, cpu_time)| ContainerActivity { id, cpu_time })
                        .collect(),
                })
                .collect(),
            issues: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
