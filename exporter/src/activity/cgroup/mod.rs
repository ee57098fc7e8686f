//! Per-pod and per-container CPU time from cgroup counters, one room per concern: `mounts` (the
//! mountinfo reader), `mode` (v1, v2 or hybrid, and where kubelet's pods are), `counter` (v1
//! `cpuacct.usage`, v2 `cpu.stat`), `open_files` (counter files kept open within the fd budget) and
//! `walk` (kubelet's subtree, deltas per cgroup). It never walks /proc, never sees energy, and never
//! panics on odd trees.

mod counter;
mod mode;
pub(crate) mod mounts;
mod open_files;
mod walk;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use tracing::info;

use super::{ActivitySample, ActivitySource, PodActivity};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::units::PodUid;
pub use counter::CounterFile;
use mode::{Hierarchy, Mode};
use mounts::CgroupMounts;
pub use open_files::raise_open_file_limit;
use open_files::{max_open_counters, OpenFiles, Tracked};
use walk::Walk;

const INPUT: Input = Input::Cgroup;

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("cannot read mountinfo {path}: {source}")]
    ReadMountinfo { path: PathBuf, source: io::Error },
    #[error("no cgroup v2 or cgroup v1 cpuacct mount listed in {path}")]
    NoCgroupMount { path: PathBuf },
    #[error("cgroup mount {mount_point} not found at {path} (is the host's /sys mounted there?)")]
    MountUnreachable { mount_point: PathBuf, path: PathBuf },
    #[error("cannot read {path}: {source}")]
    ReadCounter { path: PathBuf, source: io::Error },
    #[error("cannot parse CPU counter in {path}: {reason}")]
    ParseCounter { path: PathBuf, reason: &'static str },
    #[error("cannot list cgroup directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
}

impl Error {
    /// Short fixed label for self-metrics.
    pub(crate) fn kind(&self) -> IssueKind {
        match self {
            Error::ReadMountinfo { .. } => IssueKind::Mountinfo,
            Error::NoCgroupMount { .. } => IssueKind::NoCgroupMount,
            Error::MountUnreachable { .. } => IssueKind::MountUnreachable,
            Error::ReadCounter { source, .. } | Error::ReadDir { source, .. } => {
                match source.kind() {
                    io::ErrorKind::NotFound => IssueKind::Vanished,
                    _ => IssueKind::of_io(source),
                }
            }
            Error::ParseCounter { .. } => IssueKind::Parse,
        }
    }

    fn into_issue(self) -> SourceIssue {
        SourceIssue::new(INPUT, self.kind(), self.to_string())
    }
}

/// CPU activity per pod and container from the cgroup filesystem.
#[derive(Debug)]
pub struct CgroupActivity {
    /// The hierarchy walked now.
    active: Hierarchy,
    /// The host's layout while kubelet's pods have not been found in it: looked at again before
    /// each walk (kubelet may start later). None once they have been.
    undecided: Option<Mode>,
    /// Last counter per cgroup directory, with its counter file kept open.
    previous: HashMap<PathBuf, Tracked>,
    baseline_taken: bool,
    /// Counter files this source may keep open (the process's fd limit minus a reserve).
    max_open: usize,
    /// Reusable read buffer.
    buf: Vec<u8>,
}

impl CgroupActivity {
    /// Reads `<procfs_root>/1/mountinfo` (else `<procfs_root>/self/mountinfo`), rebases host mount
    /// points under `sysfs_root`, and picks the v1 cpuacct or v2 hierarchy that holds kubelet's pods.
    pub(crate) fn discover(sysfs_root: &Path, procfs_root: &Path) -> Result<CgroupActivity> {
        let mode = Mode::of(&CgroupMounts::read(procfs_root)?, sysfs_root)?;
        let (active, found) = mode.choose();
        info!(root = %active.root.display(), counter = active.counter.file_name(), kubepods_found = found,
              ?mode, "cgroup activity source");
        let mut source = CgroupActivity::with_root(active.root.clone(), active.counter);
        source.undecided = (!found).then_some(mode);
        Ok(source)
    }

    /// A source over a known hierarchy root, without discovery (tests, explicit configuration).
    pub fn with_root(root: PathBuf, counter: CounterFile) -> CgroupActivity {
        CgroupActivity {
            active: Hierarchy { root, counter },
            undecided: None,
            previous: HashMap::new(),
            max_open: max_open_counters(),
            buf: Vec::with_capacity(4096),
            baseline_taken: false,
        }
    }

    /// The pods whose cgroup directories exist now, without reading any counter (a few readdirs:
    /// the walk stops at pod directories). Sources that only see busy consumers (eBPF) use it so an
    /// idle pod is not taken for an ended one.
    pub(crate) fn present_pods(&mut self) -> (Vec<PodUid>, Vec<SourceIssue>) {
        let (pods, issues) = self.walk(false);
        let mut uids: Vec<PodUid> = pods.into_iter().map(|p| p.uid).collect();
        uids.sort();
        uids.dedup();
        (uids, issues)
    }

    /// How many counter files may stay open (default: half the soft fd limit); 0 reads every
    /// counter by path, as before files were kept open (benchmarks compare the two).
    pub fn set_open_file_budget(&mut self, max_open: usize) {
        self.max_open = max_open;
    }

    /// The hierarchy root being walked.
    pub(crate) fn root(&self) -> &Path {
        &self.active.root
    }

    /// Walks the active hierarchy, after looking again for kubelet's pods while undecided. Without
    /// `read_counters` it only lists pod directories and leaves the baselines alone.
    fn walk(&mut self, read_counters: bool) -> (Vec<PodActivity>, Vec<SourceIssue>) {
        if let Some(mode) = &self.undecided {
            let (chosen, found) = mode.choose();
            if *chosen != self.active {
                info!(root = %chosen.root.display(), counter = chosen.counter.file_name(),
                      "kubepods found: switching cgroup hierarchy");
                self.active = chosen.clone();
            }
            if found {
                self.undecided = None;
            }
        }
        let mut previous = match read_counters {
            true => std::mem::take(&mut self.previous),
            false => HashMap::new(),
        };
        let open = previous.values().filter(|t| t.file.is_some()).count();
        let mut walk = Walk {
            counter: read_counters.then_some(self.active.counter),
            next: HashMap::with_capacity(previous.len()),
            previous: &mut previous,
            pods: Vec::new(),
            issues: Vec::new(),
            files: OpenFiles {
                open,
                max_open: self.max_open,
            },
            buf: &mut self.buf,
        };
        walk.visit(&self.active.root, 0, false);
        if read_counters {
            // Cgroups not seen this time are gone: their state (and open file) goes with them.
            self.previous = walk.next;
        }
        (walk.pods, walk.issues)
    }
}

impl ActivitySource for CgroupActivity {
    fn name(&self) -> &'static str {
        INPUT.as_str()
    }

    fn sample(&mut self) -> ActivitySample {
        let (mut pods, issues) = self.walk(true);
        if !self.baseline_taken {
            self.baseline_taken = true;
            pods.clear();
        }
        pods.sort_by(|a, b| a.uid.cmp(&b.uid));
        ActivitySample { pods, issues }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{ContainerId, CpuNanos};
    use std::fs;
    use tempfile::TempDir;

    const UID_A: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";
    const UID_B: &str = "11111111-2222-3333-4444-555555555555";
    const C1: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
    const C2: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    const C3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn write_counter(dir: &Path, counter: CounterFile, ns: u64) {
        fs::create_dir_all(dir).unwrap();
        let content = match counter {
            CounterFile::CpuacctUsage => format!("{ns}\n"),
            CounterFile::CpuStat => format!(
                "usage_usec {}\nuser_usec {}\nsystem_usec 0\nnr_periods 0\n",
                ns / 1000,
                ns / 1000
            ),
        };
        fs::write(dir.join(counter.file_name()), content).unwrap();
    }

    #[derive(Clone, Copy)]
    enum Layout {
        Cgroupfs,
        Systemd,
    }

    fn pod_dir(root: &Path, layout: Layout, uid: &str) -> PathBuf {
        match layout {
            Layout::Cgroupfs => root
                .join("kubepods")
                .join("burstable")
                .join(format!("pod{uid}")),
            Layout::Systemd => root
                .join("kubepods.slice")
                .join("kubepods-burstable.slice")
                .join(format!(
                    "kubepods-burstable-pod{}.slice",
                    uid.replace('-', "_")
                )),
        }
    }

    fn container_dir(pod: &Path, layout: Layout, id: &str) -> PathBuf {
        match layout {
            Layout::Cgroupfs => pod.join(id),
            Layout::Systemd => pod.join(format!("cri-containerd-{id}.scope")),
        }
    }

    fn uid(raw: &str) -> PodUid {
        PodUid::parse(raw).unwrap()
    }

    fn find<'a>(sample: &'a ActivitySample, raw_uid: &str) -> &'a PodActivity {
        let want = uid(raw_uid);
        sample
            .pods
            .iter()
            .find(|p| p.uid == want)
            .expect("pod reported")
    }

    fn container_time(pod: &PodActivity, id: &str) -> Option<u64> {
        let want = ContainerId::parse(id).unwrap();
        pod.containers
            .iter()
            .find(|c| c.id == want)
            .map(|c| c.cpu_time.0)
    }

    /// Two samples and a third over one tree, for a layout and counter kind.
    fn run_delta_scenario(layout: Layout, counter: CounterFile) {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        // Noise outside kubelet's subtree must never be read.
        write_counter(
            &root.join("system.slice").join(format!("docker-{C3}.scope")),
            counter,
            9_000_000,
        );
        write_counter(&root.join("system.slice"), counter, 9_000_000);
        let pod_a = pod_dir(root, layout, UID_A);
        let c1 = container_dir(&pod_a, layout, C1);
        let c2 = container_dir(&pod_a, layout, C2);
        write_counter(&pod_a, counter, 10_000_000);
        write_counter(&c1, counter, 6_000_000);
        write_counter(&c2, counter, 3_000_000);

        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        assert_eq!(source.name(), "cgroup");
        let first = source.sample();
        assert!(first.pods.is_empty(), "first sample is the baseline");
        assert!(first.issues.is_empty(), "{:?}", first.issues);

        // Interval 2: c1 +2ms, c2 unchanged, a new pod B with one container appears.
        write_counter(&pod_a, counter, 12_500_000);
        write_counter(&c1, counter, 8_000_000);
        let pod_b = pod_dir(root, layout, UID_B);
        write_counter(&pod_b, counter, 4_000_000);
        write_counter(&container_dir(&pod_b, layout, C3), counter, 3_500_000);
        let second = source.sample();
        assert!(second.issues.is_empty(), "{:?}", second.issues);
        assert_eq!(second.pods.len(), 2);
        let a = find(&second, UID_A);
        assert_eq!(a.cpu_time, CpuNanos(2_500_000));
        assert_eq!(container_time(a, C1), Some(2_000_000));
        assert_eq!(
            container_time(a, C2),
            Some(0),
            "zero deltas are still reported"
        );
        let b = find(&second, UID_B);
        assert_eq!(
            b.cpu_time,
            CpuNanos(4_000_000),
            "a new pod reports its whole counter"
        );
        assert_eq!(container_time(b, C3), Some(3_500_000));

        // Interval 3: c2 removed (its time stays in the pod counter), a new short-lived container
        // appears in A, pod B is gone.
        fs::remove_dir_all(&c2).unwrap();
        fs::remove_dir_all(&pod_b).unwrap();
        write_counter(&pod_a, counter, 14_000_000);
        let c3 = container_dir(&pod_a, layout, C3);
        write_counter(&c3, counter, 1_000_000);
        let third = source.sample();
        assert!(third.issues.is_empty(), "{:?}", third.issues);
        assert_eq!(third.pods.len(), 1);
        let a = find(&third, UID_A);
        assert_eq!(a.cpu_time, CpuNanos(1_500_000));
        assert_eq!(container_time(a, C1), Some(0));
        assert_eq!(container_time(a, C2), None);
        assert_eq!(container_time(a, C3), Some(1_000_000));
        assert!(
            !source.previous.contains_key(&c2),
            "state of removed cgroups is forgotten"
        );
        assert!(!source.previous.contains_key(&pod_b));
        assert!(!source
            .previous
            .keys()
            .any(|p| p.starts_with(root.join("system.slice"))));
    }

    #[test]
    fn v1_cgroupfs_deltas() {
        run_delta_scenario(Layout::Cgroupfs, CounterFile::CpuacctUsage);
    }

    #[test]
    fn v1_systemd_deltas() {
        run_delta_scenario(Layout::Systemd, CounterFile::CpuacctUsage);
    }

    #[test]
    fn v2_cgroupfs_deltas() {
        run_delta_scenario(Layout::Cgroupfs, CounterFile::CpuStat);
    }

    #[test]
    fn v2_systemd_deltas() {
        run_delta_scenario(Layout::Systemd, CounterFile::CpuStat);
    }

    #[test]
    fn guaranteed_pods_nested_kind_layouts_and_conmon() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let counter = CounterFile::CpuStat;
        // Guaranteed pod (no QoS level), systemd, CRI-O with its conmon sibling.
        let guaranteed = root
            .join("kubepods.slice")
            .join(format!("kubepods-pod{}.slice", UID_A.replace('-', "_")));
        write_counter(&guaranteed, counter, 1_000_000);
        write_counter(
            &guaranteed.join(format!("crio-{C1}.scope")),
            counter,
            500_000,
        );
        write_counter(
            &guaranteed.join(format!("crio-conmon-{C1}.scope")),
            counter,
            100_000,
        );
        // kind node, cgroupfs driver: /kubelet/kubepods/besteffort/pod<uid>/<id>
        let kind_pod = root
            .join("kubelet")
            .join("kubepods")
            .join("besteffort")
            .join(format!("pod{UID_B}"));
        write_counter(&kind_pod, counter, 2_000_000);
        write_counter(&kind_pod.join(C2), counter, 1_500_000);
        // a pod-like directory outside kubelet's subtree is ignored
        write_counter(
            &root.join("user.slice").join(format!("pod{UID_B}")),
            counter,
            7_000_000,
        );

        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        assert!(source.sample().pods.is_empty());
        write_counter(&guaranteed, counter, 1_300_000);
        write_counter(
            &guaranteed.join(format!("crio-{C1}.scope")),
            counter,
            700_000,
        );
        write_counter(&kind_pod, counter, 2_100_000);
        let sample = source.sample();
        assert!(sample.issues.is_empty(), "{:?}", sample.issues);
        assert_eq!(sample.pods.len(), 2);
        let a = find(&sample, UID_A);
        assert_eq!(a.cpu_time, CpuNanos(300_000));
        assert_eq!(a.containers.len(), 1, "conmon is not a container");
        assert_eq!(container_time(a, C1), Some(200_000));
        let b = find(&sample, UID_B);
        assert_eq!(b.cpu_time, CpuNanos(100_000));
        assert_eq!(container_time(b, C2), Some(0));
    }

    #[test]
    fn counter_going_backwards_reports_current_value() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let counter = CounterFile::CpuacctUsage;
        let pod = pod_dir(root, Layout::Cgroupfs, UID_A);
        let c1 = container_dir(&pod, Layout::Cgroupfs, C1);
        write_counter(&pod, counter, 50_000);
        write_counter(&c1, counter, 40_000);
        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        source.sample();
        // container recreated between samples with the same name
        write_counter(&c1, counter, 7_000);
        write_counter(&pod, counter, 60_000);
        let sample = source.sample();
        let a = find(&sample, UID_A);
        assert_eq!(container_time(a, C1), Some(7_000));
        assert_eq!(a.cpu_time, CpuNanos(10_000));
    }

    #[test]
    fn pod_never_below_its_containers() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let counter = CounterFile::CpuacctUsage;
        let pod = pod_dir(root, Layout::Cgroupfs, UID_A);
        write_counter(&pod, counter, 100);
        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        source.sample();
        // a container appears with more time than the pod gained (non-atomic reads)
        write_counter(&container_dir(&pod, Layout::Cgroupfs, C1), counter, 500);
        write_counter(&pod, counter, 400);
        let sample = source.sample();
        assert_eq!(find(&sample, UID_A).cpu_time, CpuNanos(500));
    }

    /// A cgroupfs tree with pod `UID_A` holding containers `C1` and `C2`, counters `[pod, c1, c2]`.
    fn pod_with_two_containers(
        counter: CounterFile,
        ns: [u64; 3],
    ) -> (TempDir, PathBuf, PathBuf, PathBuf) {
        let tmp = TempDir::new().unwrap();
        let pod = pod_dir(tmp.path(), Layout::Cgroupfs, UID_A);
        let c1 = container_dir(&pod, Layout::Cgroupfs, C1);
        let c2 = container_dir(&pod, Layout::Cgroupfs, C2);
        for (dir, value) in [(&pod, ns[0]), (&c1, ns[1]), (&c2, ns[2])] {
            write_counter(dir, counter, value);
        }
        (tmp, pod, c1, c2)
    }

    #[test]
    fn garbage_counters_are_issues_and_keep_the_baseline() {
        let counter = CounterFile::CpuacctUsage;
        let (tmp, pod, c1, c2) = pod_with_two_containers(counter, [1_000, 400, 300]);
        let mut source = CgroupActivity::with_root(tmp.path().to_path_buf(), counter);
        source.sample();

        fs::write(c1.join("cpuacct.usage"), "not a number\n").unwrap();
        fs::write(c2.join("cpuacct.usage"), "").unwrap();
        write_counter(&pod, counter, 1_500);
        let sample = source.sample();
        assert_eq!(sample.issues.len(), 2, "{:?}", sample.issues);
        assert!(sample
            .issues
            .iter()
            .all(|i| i.kind == IssueKind::Parse && i.input == Input::Cgroup));
        let a = find(&sample, UID_A);
        assert_eq!(a.cpu_time, CpuNanos(500));
        assert!(a.containers.is_empty());

        // Recovered: only the growth since the last good read counts.
        write_counter(&c1, counter, 450);
        write_counter(&c2, counter, 300);
        let sample = source.sample();
        assert!(sample.issues.is_empty());
        let a = find(&sample, UID_A);
        assert_eq!(container_time(a, C1), Some(50));
        assert_eq!(container_time(a, C2), Some(0));
    }

    #[test]
    fn counter_files_stay_open_within_the_fd_budget_and_are_reread() {
        let counter = CounterFile::CpuacctUsage;
        let (tmp, pod, c1, c2) = pod_with_two_containers(counter, [1_000, 400, 500]);
        let mut source = CgroupActivity::with_root(tmp.path().to_path_buf(), counter);
        source.max_open = 2; // three counters: one is read by path every time
        source.sample();
        let open = |s: &CgroupActivity| s.previous.values().filter(|t| t.file.is_some()).count();
        assert_eq!(open(&source), 2);
        // Rewritten in place (same inode, as kernfs regenerates): the kept files see new values.
        for (dir, ns) in [(&pod, 1_900), (&c1, 700), (&c2, 1_000)] {
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(dir.join("cpuacct.usage"))
                .unwrap();
            write_counter(dir, counter, ns);
        }
        let sample = source.sample();
        let a = find(&sample, UID_A);
        assert_eq!(a.cpu_time, CpuNanos(900));
        assert_eq!(container_time(a, C1), Some(300));
        assert_eq!(container_time(a, C2), Some(500));
        assert_eq!(open(&source), 2);
        assert!(sample.issues.is_empty());
        // New cgroups never push the held files over the budget (kept ones count too).
        write_counter(&container_dir(&pod, Layout::Cgroupfs, C3), counter, 50);
        let sample = source.sample();
        assert_eq!(container_time(find(&sample, UID_A), C3), Some(50));
        assert_eq!(open(&source), 2);
        // A removed container takes its open file with it.
        fs::remove_dir_all(&c2).unwrap();
        source.sample();
        assert!(!source.previous.contains_key(&c2));
        assert!(open(&source) <= 2);
    }

    #[test]
    fn vanished_counter_is_a_vanished_issue() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let counter = CounterFile::CpuacctUsage;
        let pod = pod_dir(root, Layout::Cgroupfs, UID_A);
        let c1 = container_dir(&pod, Layout::Cgroupfs, C1);
        write_counter(&pod, counter, 1_000);
        write_counter(&c1, counter, 400);
        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        // On a TempDir a kept file stays readable after unlink; on cgroupfs a removed cgroup's open
        // counter file answers ENODEV and the path is tried again. Read by path here.
        source.max_open = 0;
        source.sample();
        // The directory is still listed but its counter file is gone (removal in progress).
        fs::remove_file(c1.join("cpuacct.usage")).unwrap();
        let sample = source.sample();
        assert_eq!(sample.issues.len(), 1);
        assert_eq!(sample.issues[0].kind, IssueKind::Vanished);
        assert!(find(&sample, UID_A).containers.is_empty());
        assert!(!source.previous.contains_key(&c1));
    }

    /// A FIFO or a /dev/zero symlink as a counter file is counted and skipped, never read: the
    /// sample returns (a read of a FIFO would block the tick loop for good).
    #[test]
    fn fifo_and_device_counters_are_refused_unread() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let counter = CounterFile::CpuStat;
        let pod = pod_dir(root, Layout::Cgroupfs, UID_A);
        let c1 = container_dir(&pod, Layout::Cgroupfs, C1);
        let c2 = container_dir(&pod, Layout::Cgroupfs, C2);
        write_counter(&pod, counter, 1_000);
        fs::create_dir_all(&c1).unwrap();
        crate::files::mkfifo(&c1.join("cpu.stat"));
        fs::create_dir_all(&c2).unwrap();
        std::os::unix::fs::symlink("/dev/zero", c2.join("cpu.stat")).unwrap();
        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        for round in 0..2 {
            write_counter(&pod, counter, 1_000_000 + round * 500_000);
            let sample = source.sample();
            let kinds: Vec<IssueKind> = sample.issues.iter().map(|i| i.kind).collect();
            assert_eq!(kinds, [IssueKind::NotRegular, IssueKind::NotRegular]);
            assert!(sample
                .issues
                .iter()
                .all(|i| i.detail.contains("not a regular file")));
            if round == 1 {
                // After the baseline, the pod itself is still measured.
                let pod = find(&sample, UID_A);
                assert_eq!(pod.cpu_time, CpuNanos(500_000));
                assert!(pod.containers.is_empty());
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_dir_reports_io_kind() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let counter = CounterFile::CpuacctUsage;
        let pod = pod_dir(root, Layout::Cgroupfs, UID_A);
        write_counter(&pod, counter, 1_000);
        let qos = root.join("kubepods").join("burstable");
        fs::set_permissions(&qos, fs::Permissions::from_mode(0o000)).unwrap();
        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        let sample = source.sample();
        fs::set_permissions(&qos, fs::Permissions::from_mode(0o755)).unwrap();
        if sample.issues.is_empty() {
            eprintln!("skipping: running as root, permissions are not enforced");
            return;
        }
        assert_eq!(sample.issues[0].kind, IssueKind::PermissionDenied);
    }

    #[test]
    fn present_pods_lists_pod_directories_without_reading_counters() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path();
        let counter = CounterFile::CpuStat;
        // An idle pod: directories only, no counter file anywhere.
        fs::create_dir_all(pod_dir(root, Layout::Cgroupfs, UID_A).join(C1)).unwrap();
        write_counter(&pod_dir(root, Layout::Systemd, UID_B), counter, 5_000);
        fs::create_dir_all(root.join("system.slice").join(format!("pod{UID_A}"))).unwrap();
        let mut source = CgroupActivity::with_root(root.to_path_buf(), counter);
        let (pods, issues) = source.present_pods();
        let uids: Vec<&str> = pods.iter().map(|p| p.as_str()).collect();
        assert_eq!(uids, vec![UID_B, UID_A]);
        assert!(issues.is_empty(), "{issues:?}");
        // Presence does not touch the counter baselines.
        assert!(source.previous.is_empty());
    }

    #[test]
    fn missing_root_is_an_issue_not_a_panic() {
        let tmp = TempDir::new().unwrap();
        let mut source = CgroupActivity::with_root(tmp.path().join("nope"), CounterFile::CpuStat);
        let sample = source.sample();
        assert!(sample.pods.is_empty());
        assert_eq!(sample.issues.len(), 1);
        assert_eq!(sample.issues[0].kind, IssueKind::Vanished);
    }

    // ---- discovery ----

    use mounts::tests::{MOUNTINFO_HYBRID, MOUNTINFO_V1, MOUNTINFO_V2};

    /// A fake host: `<tmp>/proc/1/mountinfo` and `<tmp>/host/sys/fs/cgroup/...`.
    struct FakeHost {
        tmp: TempDir,
    }

    impl FakeHost {
        fn new(mountinfo: &str) -> FakeHost {
            let tmp = TempDir::new().unwrap();
            let proc1 = tmp.path().join("proc").join("1");
            fs::create_dir_all(&proc1).unwrap();
            fs::write(proc1.join("mountinfo"), mountinfo).unwrap();
            FakeHost { tmp }
        }
        fn sysfs(&self) -> PathBuf {
            self.tmp.path().join("host").join("sys")
        }
        fn procfs(&self) -> PathBuf {
            self.tmp.path().join("proc")
        }
        fn cgroup(&self, rest: &str) -> PathBuf {
            let dir = self.sysfs().join("fs").join("cgroup").join(rest);
            fs::create_dir_all(&dir).unwrap();
            dir
        }
        fn discover(&self) -> CgroupActivity {
            CgroupActivity::discover(&self.sysfs(), &self.procfs()).unwrap()
        }
    }

    #[test]
    fn discover_pure_v2() {
        let host = FakeHost::new(MOUNTINFO_V2);
        let root = host.cgroup("");
        host.cgroup("kubepods.slice");
        let source = host.discover();
        assert_eq!(source.active.root, root);
        assert_eq!(source.active.counter, CounterFile::CpuStat);
        assert!(source.undecided.is_none());
    }

    #[test]
    fn discover_v1_rebased_and_sampled() {
        let host = FakeHost::new(MOUNTINFO_V1);
        let cpuacct = host.cgroup("cpu,cpuacct");
        host.cgroup("memory/kubepods");
        let pod = pod_dir(&cpuacct, Layout::Cgroupfs, UID_A);
        write_counter(&pod, CounterFile::CpuacctUsage, 1_000);
        write_counter(&pod.join(C1), CounterFile::CpuacctUsage, 900);
        let mut source = host.discover();
        assert_eq!(source.active.root, cpuacct);
        assert_eq!(source.active.counter, CounterFile::CpuacctUsage);
        source.sample();
        write_counter(&pod, CounterFile::CpuacctUsage, 3_000);
        write_counter(&pod.join(C1), CounterFile::CpuacctUsage, 2_800);
        let sample = source.sample();
        let a = find(&sample, UID_A);
        assert_eq!(a.cpu_time, CpuNanos(2_000));
        assert_eq!(container_time(a, C1), Some(1_900));
    }

    #[test]
    fn discover_hybrid_prefers_v1_when_both_have_pods() {
        let host = FakeHost::new(MOUNTINFO_HYBRID);
        let v1 = host.cgroup("cpu,cpuacct/kubepods");
        host.cgroup("unified/kubepods.slice");
        let source = host.discover();
        assert_eq!(source.active.root, v1.parent().unwrap());
        assert_eq!(source.active.counter, CounterFile::CpuacctUsage);
    }

    #[test]
    fn discover_hybrid_takes_v2_when_only_v2_has_pods() {
        let host = FakeHost::new(MOUNTINFO_HYBRID);
        host.cgroup("cpu,cpuacct/system.slice");
        // depth 2: kind-style nesting
        let v2 = host.cgroup("unified");
        host.cgroup("unified/kubelet.slice/kubelet-kubepods.slice");
        let source = host.discover();
        assert_eq!(source.active.root, v2);
        assert_eq!(source.active.counter, CounterFile::CpuStat);
        assert!(source.undecided.is_none());
    }

    #[test]
    fn discover_without_kubelet_rechecks_later() {
        let host = FakeHost::new(MOUNTINFO_HYBRID);
        let v1 = host.cgroup("cpu,cpuacct");
        let v2 = host.cgroup("unified");
        let mut source = host.discover();
        assert_eq!(source.active.root, v1, "hybrid without kubelet: v1 cpuacct");
        assert!(source.undecided.is_some());
        assert!(source.sample().pods.is_empty());

        // kubelet starts with the systemd driver, writing v2 only.
        let pod = pod_dir(&v2, Layout::Systemd, UID_A);
        write_counter(&pod, CounterFile::CpuStat, 5_000_000);
        let sample = source.sample();
        assert_eq!(source.active.root, v2);
        assert_eq!(source.active.counter, CounterFile::CpuStat);
        assert!(source.undecided.is_none());
        // Created after the baseline: its whole counter counts.
        assert_eq!(find(&sample, UID_A).cpu_time, CpuNanos(5_000_000));
    }

    #[test]
    fn discover_pure_v2_without_kubelet_and_self_fallback() {
        let tmp = TempDir::new().unwrap();
        let self_dir = tmp.path().join("proc").join("self");
        fs::create_dir_all(&self_dir).unwrap();
        fs::write(self_dir.join("mountinfo"), MOUNTINFO_V2).unwrap();
        let sysfs = tmp.path().join("sys");
        fs::create_dir_all(sysfs.join("fs").join("cgroup")).unwrap();
        let source = CgroupActivity::discover(&sysfs, &tmp.path().join("proc")).unwrap();
        assert_eq!(source.active.root, sysfs.join("fs").join("cgroup"));
        assert_eq!(source.active.counter, CounterFile::CpuStat);
        assert!(source.undecided.is_some());
    }

    #[test]
    fn discover_errors() {
        let tmp = TempDir::new().unwrap();
        let err = CgroupActivity::discover(tmp.path(), tmp.path()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::Mountinfo);
        assert!(err.to_string().contains("mountinfo"));

        let host = FakeHost::new("31 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n");
        let err = CgroupActivity::discover(&host.sysfs(), &host.procfs()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::NoCgroupMount);

        // v1 without cpuacct is no use either
        let host =
            FakeHost::new("31 26 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
        assert_eq!(
            CgroupActivity::discover(&host.sysfs(), &host.procfs())
                .unwrap_err()
                .kind(),
            IssueKind::NoCgroupMount
        );

        // listed but the host /sys is not where we were told
        let host = FakeHost::new(MOUNTINFO_V2);
        let err = CgroupActivity::discover(&host.sysfs(), &host.procfs()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::MountUnreachable);
        assert!(err.to_string().contains("host"));
    }
}
