//! Per-pod and per-container CPU time from cgroup counters (v1 `cpuacct.usage`, v2 `cpu.stat`):
//! mount discovery from mountinfo, a bounded walk of kubelet's subtree, deltas per cgroup.
//! It reads counters only: it never walks /proc, never sees energy, and never panics on odd trees.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::{ActivitySample, ActivitySource, ContainerActivity, PodActivity};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::resource::cgroup_path::{container_dir_id, pod_dir_uid};
use crate::units::{CpuNanos, PodUid};

const INPUT: Input = Input::Cgroup;
/// How deep below the hierarchy root pod directories are looked for.
const MAX_WALK_DEPTH: usize = 8;
/// How deep below the hierarchy root a `kubepods` directory counts as "kubelet is here".
const KUBEPODS_PROBE_DEPTH: usize = 2;
/// Where the host mounts sysfs. mountinfo speaks in host paths; this prefix is swapped for the
/// configured sysfs root (e.g. `/host/sys`) before any mount point is used.
const HOST_SYSFS_MOUNT: &str = "/sys";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    pub fn kind(&self) -> IssueKind {
        match self {
            Error::ReadMountinfo { .. } => IssueKind::Mountinfo,
            Error::NoCgroupMount { .. } => IssueKind::NoCgroupMount,
            Error::MountUnreachable { .. } => IssueKind::MountUnreachable,
            Error::ReadCounter { source, .. } | Error::ReadDir { source, .. } => {
                if source.kind() == io::ErrorKind::NotFound {
                    IssueKind::Vanished
                } else {
                    IssueKind::of_io(source)
                }
            }
            Error::ParseCounter { .. } => IssueKind::Parse,
        }
    }

    fn into_issue(self) -> SourceIssue {
        SourceIssue::new(INPUT, self.kind(), self.to_string())
    }
}

/// A cgroup hierarchy's version, with a v1 hierarchy's controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupVersion {
    V1 { controllers: Vec<String> },
    V2,
}

/// One cgroup mount from mountinfo. `mount_point` is as the mounting namespace sees it (host path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    pub version: CgroupVersion,
}

impl CgroupMount {
    fn has_controller(&self, name: &str) -> bool {
        match &self.version {
            CgroupVersion::V1 { controllers } => controllers.iter().any(|c| c == name),
            CgroupVersion::V2 => false,
        }
    }
}

/// Super-options of a v1 cgroup mount that are not controllers.
const NON_CONTROLLER_OPTIONS: [&str; 6] = [
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
];

/// Parses `/proc/<pid>/mountinfo`, keeping `cgroup` and `cgroup2` mounts. Malformed lines are skipped.
pub fn parse_mountinfo(content: &str) -> Vec<CgroupMount> {
    content.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // `id parent major:minor root mount_point options [optional...] - fstype source super_options`
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after_fields = after.split(' ');
    let fstype = after_fields.next()?;
    let _source = after_fields.next();
    let super_options = after_fields.next().unwrap_or("");
    let version = match fstype {
        "cgroup2" => CgroupVersion::V2,
        "cgroup" => CgroupVersion::V1 {
            controllers: super_options
                .split(',')
                .filter(|o| {
                    !o.is_empty() && !o.contains('=') && !NON_CONTROLLER_OPTIONS.contains(o)
                })
                .map(str::to_owned)
                .collect(),
        },
        _ => return None,
    };
    Some(CgroupMount {
        mount_point: PathBuf::from(decode_octal_escapes(mount_point)),
        version,
    })
}

/// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash). Anything else is kept as is.
fn decode_octal_escapes(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'\\', Some(digits)) = (bytes[i], bytes.get(i + 1..i + 4)) {
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps a host mount point into this process's view: `/sys/<rest>` becomes `<sysfs_root>/<rest>`.
/// Mount points elsewhere are used as they are.
pub fn rebase_mount_point(mount_point: &Path, sysfs_root: &Path) -> PathBuf {
    match mount_point.strip_prefix(HOST_SYSFS_MOUNT) {
        Ok(rest) => sysfs_root.join(rest),
        Err(_) => mount_point.to_path_buf(),
    }
}

/// Which counter file a hierarchy has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterFile {
    /// cgroup v1 `cpuacct.usage`: nanoseconds.
    CpuacctUsage,
    /// cgroup v2 `cpu.stat`, line `usage_usec`: microseconds.
    CpuStat,
}

impl CounterFile {
    pub fn file_name(self) -> &'static str {
        match self {
            CounterFile::CpuacctUsage => "cpuacct.usage",
            CounterFile::CpuStat => "cpu.stat",
        }
    }

    /// Parses the counter file's content into CPU time.
    pub fn parse(self, content: &str) -> Result<CpuNanos, &'static str> {
        match self {
            CounterFile::CpuacctUsage => {
                let text = content.trim();
                if text.is_empty() {
                    return Err("empty file");
                }
                text.parse::<u64>()
                    .map(CpuNanos)
                    .map_err(|_| "not a number")
            }
            CounterFile::CpuStat => {
                let value = content
                    .lines()
                    .find_map(|line| line.strip_prefix("usage_usec "))
                    .ok_or("no usage_usec line")?;
                value
                    .trim()
                    .parse::<u64>()
                    .map(CpuNanos::from_micros)
                    .map_err(|_| "usage_usec is not a number")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    root: PathBuf,
    counter: CounterFile,
}

impl Hierarchy {
    fn has_kubepods(&self) -> bool {
        has_kubepods_dir(&self.root, KUBEPODS_PROBE_DEPTH)
    }
}

fn has_kubepods_dir(dir: &Path, depth_left: usize) -> bool {
    if depth_left == 0 {
        return false;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name().to_string_lossy().contains("kubepods") {
            return true;
        }
        subdirs.push(entry.path());
    }
    subdirs
        .iter()
        .any(|sub| has_kubepods_dir(sub, depth_left - 1))
}

/// Picks among the candidate hierarchies (v1 cpuacct and/or v2). Returns the index and whether the
/// choice is final (a `kubepods` directory was found).
fn choose(candidates: &[Hierarchy]) -> Option<(usize, bool)> {
    let v1 = candidates
        .iter()
        .position(|h| h.counter == CounterFile::CpuacctUsage);
    let v2 = candidates
        .iter()
        .position(|h| h.counter == CounterFile::CpuStat);
    // On hybrid hosts kubelet's cgroupfs driver writes v1, so v1 wins when both have pods.
    if let Some(i) = v1.filter(|&i| candidates[i].has_kubepods()) {
        return Some((i, true));
    }
    if let Some(i) = v2.filter(|&i| candidates[i].has_kubepods()) {
        return Some((i, true));
    }
    // No kubelet yet: a pure v2 host takes v2, anything with v1 cpuacct takes v1.
    v1.or(v2).map(|i| (i, false))
}

/// CPU activity per pod and container from the cgroup filesystem.
#[derive(Debug)]
pub struct CgroupActivity {
    active: Hierarchy,
    /// Hierarchies to re-check while no kubepods directory has been found (kubelet may start later).
    candidates: Vec<Hierarchy>,
    settled: bool,
    /// Last counter per cgroup directory, with its counter file kept open.
    previous: HashMap<PathBuf, Tracked>,
    baseline_taken: bool,
    /// Counter files this source may keep open (the process's fd limit minus a reserve).
    max_open: usize,
    /// Reusable read buffer.
    buf: Vec<u8>,
}

/// A cgroup's last counter value and, while fds allow, its counter file kept open: re-reading an
/// open file (`pread` at offset 0; kernfs regenerates the content) costs a fraction of a path
/// lookup + open + read + close.
#[derive(Debug)]
struct Tracked {
    value: CpuNanos,
    file: Option<fs::File>,
}

/// Fds left for everything else (sockets, NVML, eBPF maps, the kube client) when keeping counter
/// files open.
const FD_RESERVE: u64 = 256;

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

/// How many counter files may stay open under the process's `RLIMIT_NOFILE`.
fn max_open_counters() -> usize {
    open_file_limit().map_or(0, |limit| {
        usize::try_from(limit.rlim_cur.saturating_sub(FD_RESERVE).min(1 << 20)).unwrap_or(0)
    })
}

/// Discovers the cgroup hierarchy that holds kubelet's pods. See [`CgroupActivity::discover`].
pub fn discover(sysfs_root: &Path, procfs_root: &Path) -> Result<CgroupActivity> {
    CgroupActivity::discover(sysfs_root, procfs_root)
}

impl CgroupActivity {
    /// Reads `<procfs_root>/1/mountinfo` (else `<procfs_root>/self/mountinfo`), rebases host mount
    /// points under `sysfs_root`, and picks the v1 cpuacct or v2 hierarchy that holds kubelet's pods.
    pub fn discover(sysfs_root: &Path, procfs_root: &Path) -> Result<CgroupActivity> {
        let (mountinfo_path, content) = read_mountinfo(procfs_root)?;
        let mounts = parse_mountinfo(&content);
        let mut candidates = Vec::new();
        let mut unreachable = None;
        for (counter, pick) in [
            (
                CounterFile::CpuacctUsage,
                pick_mount(&mounts, |m| m.has_controller("cpuacct")),
            ),
            (
                CounterFile::CpuStat,
                pick_mount(&mounts, |m| m.version == CgroupVersion::V2),
            ),
        ] {
            let Some(mount) = pick else { continue };
            let root = rebase_mount_point(&mount.mount_point, sysfs_root);
            if root.is_dir() {
                candidates.push(Hierarchy { root, counter });
            } else {
                warn!(mount_point = %mount.mount_point.display(), path = %root.display(),
                      "cgroup mount listed in mountinfo is not reachable");
                unreachable.get_or_insert((mount.mount_point.clone(), root));
            }
        }
        let Some((index, settled)) = choose(&candidates) else {
            return Err(match unreachable {
                Some((mount_point, path)) => Error::MountUnreachable { mount_point, path },
                None => Error::NoCgroupMount {
                    path: mountinfo_path,
                },
            });
        };
        let active = candidates[index].clone();
        info!(root = %active.root.display(), counter = active.counter.file_name(), kubepods_found = settled,
              "cgroup activity source");
        Ok(CgroupActivity {
            active,
            candidates: if settled { Vec::new() } else { candidates },
            settled,
            previous: HashMap::new(),
            max_open: max_open_counters(),
            buf: Vec::with_capacity(4096),
            baseline_taken: false,
        })
    }

    /// A source over a known hierarchy root, without discovery (tests, explicit configuration).
    pub fn with_root(root: PathBuf, counter: CounterFile) -> CgroupActivity {
        CgroupActivity {
            active: Hierarchy { root, counter },
            candidates: Vec::new(),
            settled: true,
            previous: HashMap::new(),
            max_open: max_open_counters(),
            buf: Vec::with_capacity(4096),
            baseline_taken: false,
        }
    }

    /// The pods whose cgroup directories exist now, without reading any counter (a few readdirs:
    /// the walk stops at pod directories). Sources that only see busy consumers (eBPF) use it so an
    /// idle pod is not taken for an ended one.
    pub fn present_pods(&mut self) -> (Vec<PodUid>, Vec<SourceIssue>) {
        if !self.settled {
            self.recheck_hierarchy();
        }
        let mut none = HashMap::new();
        let mut buf = Vec::new();
        let mut walk = Walk {
            counter: None,
            previous: &mut none,
            next: HashMap::new(),
            pods: Vec::new(),
            issues: Vec::new(),
            open: 0,
            max_open: 0,
            buf: &mut buf,
        };
        walk.visit(&self.active.root, 0, false);
        let mut uids: Vec<PodUid> = walk.pods.into_iter().map(|p| p.uid).collect();
        uids.sort();
        uids.dedup();
        (uids, walk.issues)
    }

    /// How many counter files may stay open (default: the fd limit minus a reserve); 0 reads every
    /// counter by path, as before files were kept open (benchmarks compare the two).
    pub fn set_open_file_budget(&mut self, max_open: usize) {
        self.max_open = max_open;
    }

    /// The hierarchy root being walked.
    pub fn root(&self) -> &Path {
        &self.active.root
    }

    pub fn counter_file(&self) -> CounterFile {
        self.active.counter
    }

    fn recheck_hierarchy(&mut self) {
        let Some((index, settled)) = choose(&self.candidates) else {
            return;
        };
        let chosen = &self.candidates[index];
        if *chosen != self.active {
            info!(root = %chosen.root.display(), counter = chosen.counter.file_name(),
                  "kubepods found: switching cgroup hierarchy");
            self.active = chosen.clone();
        }
        if settled {
            self.settled = true;
            self.candidates.clear();
        }
    }
}

fn pick_mount(
    mounts: &[CgroupMount],
    wanted: impl Fn(&CgroupMount) -> bool,
) -> Option<&CgroupMount> {
    // Prefer the mount under the host's /sys; a duplicate elsewhere (bind mounts) is a fallback.
    mounts
        .iter()
        .filter(|m| wanted(m))
        .min_by_key(|m| !m.mount_point.starts_with(HOST_SYSFS_MOUNT))
}

fn read_mountinfo(procfs_root: &Path) -> Result<(PathBuf, String)> {
    let init_path = procfs_root.join("1").join("mountinfo");
    match fs::read_to_string(&init_path) {
        Ok(content) => Ok((init_path, content)),
        Err(init_err) => {
            let self_path = procfs_root.join("self").join("mountinfo");
            debug!(path = %init_path.display(), error = %init_err, "falling back to own mountinfo");
            fs::read_to_string(&self_path)
                .map(|content| (self_path.clone(), content))
                .map_err(|source| Error::ReadMountinfo {
                    path: self_path,
                    source,
                })
        }
    }
}

/// State of one sample's walk.
struct Walk<'a> {
    /// None: presence only (pod directories are listed, no counter is read).
    counter: Option<CounterFile>,
    /// Last sample's state; entries move to `next` as the walk visits them.
    previous: &'a mut HashMap<PathBuf, Tracked>,
    next: HashMap<PathBuf, Tracked>,
    pods: Vec<PodActivity>,
    issues: Vec<SourceIssue>,
    /// Counter files held now (in `previous` and `next`), and how many may be.
    open: usize,
    max_open: usize,
    buf: &'a mut Vec<u8>,
}

impl Walk<'_> {
    /// Descends from `dir`: everywhere below a kubepods/kubelet directory, only into such directories
    /// above it.
    fn visit(&mut self, dir: &Path, depth: usize, below_kubelet: bool) {
        let Some(children) = self.list_dirs(dir) else {
            return;
        };
        for (name, path) in children {
            if let Some(uid) = pod_dir_uid(&name) {
                if below_kubelet {
                    self.visit_pod(uid, &path);
                }
                continue;
            }
            let kubelet_name = name.contains("kubepods") || name.contains("kubelet");
            if (below_kubelet || kubelet_name) && depth + 1 < MAX_WALK_DEPTH {
                self.visit(&path, depth + 1, true);
            }
        }
    }

    fn visit_pod(&mut self, uid: PodUid, pod_dir: &Path) {
        if self.counter.is_none() {
            self.pods.push(PodActivity {
                uid,
                cpu_time: CpuNanos::ZERO,
                containers: Vec::new(),
            });
            return;
        }
        let Some(children) = self.list_dirs(pod_dir) else {
            return;
        };
        // Containers first, then the pod: the pod counter, read last, covers what its containers had.
        let mut containers = Vec::new();
        for (name, path) in children {
            let Some(id) = container_dir_id(&name) else {
                continue;
            };
            if let Some(cpu_time) = self.read_delta(&path) {
                containers.push(ContainerActivity { id, cpu_time });
            }
        }
        containers.sort_by(|a, b| a.id.cmp(&b.id));
        let containers_total: CpuNanos = containers.iter().map(|c| c.cpu_time).sum();
        let cpu_time = match self.read_delta(pod_dir) {
            // Reads are not atomic: never report a pod below the sum of its containers.
            Some(pod_time) => pod_time.max(containers_total),
            None if pod_dir.exists() => containers_total,
            None => return,
        };
        self.pods.push(PodActivity {
            uid,
            cpu_time,
            containers,
        });
    }

    /// Child directories of `dir` as (name, path); None (with an issue) when `dir` cannot be listed.
    fn list_dirs(&mut self, dir: &Path) -> Option<Vec<(String, PathBuf)>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(source) => {
                if source.kind() != io::ErrorKind::NotFound {
                    // Still there but unreadable now (EMFILE, EACCES): keep the baselines below it,
                    // or the next good walk would count every counter under it again from zero.
                    self.keep_previous_under(dir);
                }
                self.issue(Error::ReadDir {
                    path: dir.to_path_buf(),
                    source,
                });
                return None;
            }
        };
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(source) => {
                    self.issue(Error::ReadDir {
                        path: dir.to_path_buf(),
                        source,
                    });
                    continue;
                }
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ));
            }
        }
        Some(dirs)
    }

    /// Reads the counter of the cgroup at `dir` and returns its delta since the previous sample:
    /// the whole counter for a cgroup not seen before or one whose counter went backwards (recreated).
    fn read_delta(&mut self, dir: &Path) -> Option<CpuNanos> {
        let counter = self.counter?;
        let path = dir.join(counter.file_name());
        let tracked = self.previous.remove(dir);
        let mut before = tracked.as_ref().map(|t| t.value);
        let kept = tracked.and_then(|t| t.file);
        let had_file = kept.is_some();
        let (read, file, recreated) =
            read_counter(kept, &path, self.buf, self.open < self.max_open);
        // `open` counts every counter file held now (kept from last tick or opened this one).
        self.open = self.open - usize::from(had_file) + usize::from(file.is_some());
        if recreated {
            before = None; // a new cgroup at the old path: its whole counter is new
        }
        let current = match read {
            Ok(()) => match std::str::from_utf8(self.buf)
                .map_err(|_| "not UTF-8")
                .and_then(|content| counter.parse(content))
            {
                Ok(value) => value,
                Err(reason) => {
                    self.issue(Error::ParseCounter { path, reason });
                    self.keep(dir, before, file);
                    return None;
                }
            },
            Err(source) => {
                let vanished = source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENODEV);
                self.issue(Error::ReadCounter { path, source });
                if !vanished {
                    self.keep(dir, before, None);
                }
                return None;
            }
        };
        let delta = match before {
            Some(before) if current >= before => current.saturating_sub(before),
            _ => current,
        };
        self.keep(dir, Some(current), file);
        Some(delta)
    }

    /// Carries a cgroup's state into the next sample.
    fn keep(&mut self, dir: &Path, value: Option<CpuNanos>, file: Option<fs::File>) {
        let Some(value) = value else {
            return;
        };
        self.next.insert(dir.to_path_buf(), Tracked { value, file });
    }

    /// A transient read failure keeps the old baseline, so the next good read is not counted twice.
    fn keep_previous(&mut self, dir: &Path) {
        if let Some(tracked) = self.previous.remove(dir) {
            self.keep(dir, Some(tracked.value), tracked.file);
        }
    }

    fn keep_previous_under(&mut self, dir: &Path) {
        let under: Vec<PathBuf> = self
            .previous
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in under {
            self.keep_previous(&path);
        }
    }

    fn issue(&mut self, error: Error) {
        debug!(error = %error, "cgroup read skipped");
        self.issues.push(error.into_issue());
    }
}

/// Reads a counter file into `buf`: through `kept` (its open file, re-read from offset 0) when there
/// is one and it still works, else by path. Returns the read's result, the file to keep for next
/// time (the one used, or the newly opened one when `may_keep`: fds allow), and whether a kept file
/// had failed while the path opened again (the cgroup was removed and recreated at the same path).
fn read_counter(
    kept: Option<fs::File>,
    path: &Path,
    buf: &mut Vec<u8>,
    may_keep: bool,
) -> (io::Result<()>, Option<fs::File>, bool) {
    let had_kept = kept.is_some();
    if let Some(file) = kept {
        if read_whole_at_zero(&file, buf).is_ok() {
            return (Ok(()), Some(file), false);
        }
        // The cgroup was removed (ENODEV), perhaps recreated at the same path: try the path.
    }
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return (Err(e), None, false),
    };
    let read = read_whole_at_zero(&file, buf);
    let keep = read.is_ok() && may_keep;
    let recreated = had_kept && read.is_ok();
    (read, keep.then_some(file), recreated)
}

/// `pread`s a small file from offset 0 to its end into `buf` (kernfs files regenerate on a read at
/// offset 0).
fn read_whole_at_zero(file: &fs::File, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "counter file over 1 MiB",
            ));
        }
    }
}

impl ActivitySource for CgroupActivity {
    fn name(&self) -> &'static str {
        INPUT.as_str()
    }

    fn sample(&mut self) -> ActivitySample {
        if !self.settled {
            self.recheck_hierarchy();
        }
        let mut previous = std::mem::take(&mut self.previous);
        let open = previous.values().filter(|t| t.file.is_some()).count();
        let mut walk = Walk {
            counter: Some(self.active.counter),
            next: HashMap::with_capacity(previous.len()),
            previous: &mut previous,
            pods: Vec::new(),
            issues: Vec::new(),
            open,
            max_open: self.max_open,
            buf: &mut self.buf,
        };
        walk.visit(&self.active.root, 0, false);
        let Walk {
            next,
            mut pods,
            issues,
            ..
        } = walk;
        // Cgroups not seen this time are gone: their state (and open file) goes with them.
        self.previous = next;
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
    use crate::units::ContainerId;
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

        // v2 garbage: cpu.stat without usage_usec, and a non-numeric value.
        assert_eq!(
            CounterFile::CpuStat.parse("user_usec 5\n"),
            Err("no usage_usec line")
        );
        assert!(CounterFile::CpuStat.parse("usage_usec x\n").is_err());
        assert!(CounterFile::CpuStat.parse("").is_err());
        assert_eq!(
            CounterFile::CpuStat.parse("usage_usec 12\n"),
            Ok(CpuNanos(12_000))
        );
        assert!(CounterFile::CpuacctUsage.parse("-1").is_err());
        assert!(CounterFile::CpuacctUsage
            .parse("18446744073709551616")
            .is_err());
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
    fn unlistable_dir_keeps_the_baselines_below_it() {
        // Regression: a pod directory that still exists but fails to list (EMFILE, EACCES) must keep
        // its children's baselines, or the next good walk reports their whole counters again.
        // Root cannot provoke EACCES, so a file stands in for the directory (ENOTDIR).
        let tmp = TempDir::new().unwrap();
        let pod = tmp.path().join("podx");
        fs::write(&pod, "not a directory").unwrap();
        let tracked = |ns| Tracked {
            value: CpuNanos(ns),
            file: None,
        };
        let mut previous = HashMap::new();
        previous.insert(pod.join(C1), tracked(1_000));
        previous.insert(pod.clone(), tracked(1_500));
        previous.insert(tmp.path().join("other"), tracked(7));
        let mut buf = Vec::new();
        let mut walk = Walk {
            counter: Some(CounterFile::CpuacctUsage),
            previous: &mut previous,
            next: HashMap::new(),
            pods: Vec::new(),
            issues: Vec::new(),
            open: 0,
            max_open: 10,
            buf: &mut buf,
        };
        assert!(walk.list_dirs(&pod).is_none());
        assert_eq!(walk.issues.len(), 1);
        let value = |walk: &Walk, p: &Path| walk.next.get(p).map(|t| t.value);
        assert_eq!(value(&walk, &pod.join(C1)), Some(CpuNanos(1_000)));
        assert_eq!(value(&walk, &pod), Some(CpuNanos(1_500)));
        assert!(!walk.next.contains_key(&tmp.path().join("other")));
        // A directory that is gone takes its baselines with it.
        assert!(walk.list_dirs(&tmp.path().join("gone")).is_none());
        assert_eq!(walk.next.len(), 2);
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

    const MOUNTINFO_V2: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
";

    const MOUNTINFO_V1: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
30 26 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
31 26 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
";

    const MOUNTINFO_HYBRID: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 26 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
";

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
            discover(&self.sysfs(), &self.procfs()).unwrap()
        }
    }

    #[test]
    fn parse_mountinfo_forms() {
        let mounts = parse_mountinfo(MOUNTINFO_HYBRID);
        assert_eq!(
            mounts,
            vec![
                CgroupMount {
                    mount_point: "/sys/fs/cgroup/unified".into(),
                    version: CgroupVersion::V2
                },
                CgroupMount {
                    mount_point: "/sys/fs/cgroup/systemd".into(),
                    version: CgroupVersion::V1 {
                        controllers: vec![]
                    }
                },
                CgroupMount {
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    version: CgroupVersion::V1 {
                        controllers: vec!["cpu".into(), "cpuacct".into()]
                    }
                },
            ]
        );
        let escaped =
            "30 26 0:28 / /sys/fs/my\\040cgroup\\011x\\134y\\09z rw - cgroup cgroup rw,cpuacct\n";
        assert_eq!(
            parse_mountinfo(escaped)[0].mount_point,
            PathBuf::from("/sys/fs/my cgroup\tx\\y\\09z")
        );
        // garbage lines are skipped
        assert!(parse_mountinfo("").is_empty());
        assert!(parse_mountinfo("garbage\n1 2 3\n - cgroup2\n\u{1F600} - cgroup\\\n").is_empty());
        assert!(parse_mountinfo("1 2 3 4\n").is_empty());
        assert_eq!(decode_octal_escapes("a\\"), "a\\");
        assert_eq!(decode_octal_escapes("a\\04"), "a\\04");
        assert_eq!(decode_octal_escapes("\\777"), "\\777");
    }

    #[test]
    fn rebase_under_sysfs_root() {
        let root = Path::new("/host/sys");
        assert_eq!(
            rebase_mount_point(Path::new("/sys/fs/cgroup"), root),
            PathBuf::from("/host/sys/fs/cgroup")
        );
        assert_eq!(
            rebase_mount_point(Path::new("/sys/fs/cgroup/cpu,cpuacct"), root),
            PathBuf::from("/host/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            rebase_mount_point(Path::new("/sysfoo/x"), root),
            PathBuf::from("/sysfoo/x")
        );
        assert_eq!(
            rebase_mount_point(Path::new("/cgroup"), root),
            PathBuf::from("/cgroup")
        );
        assert_eq!(
            rebase_mount_point(Path::new("/sys/fs/cgroup"), Path::new("/sys")),
            PathBuf::from("/sys/fs/cgroup")
        );
    }

    #[test]
    fn discover_pure_v2() {
        let host = FakeHost::new(MOUNTINFO_V2);
        let root = host.cgroup("");
        host.cgroup("kubepods.slice");
        let source = host.discover();
        assert_eq!(source.root(), root);
        assert_eq!(source.counter_file(), CounterFile::CpuStat);
        assert!(source.settled);
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
        assert_eq!(source.root(), cpuacct);
        assert_eq!(source.counter_file(), CounterFile::CpuacctUsage);
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
        assert_eq!(source.root(), v1.parent().unwrap());
        assert_eq!(source.counter_file(), CounterFile::CpuacctUsage);
    }

    #[test]
    fn discover_hybrid_takes_v2_when_only_v2_has_pods() {
        let host = FakeHost::new(MOUNTINFO_HYBRID);
        host.cgroup("cpu,cpuacct/system.slice");
        // depth 2: kind-style nesting
        let v2 = host.cgroup("unified");
        host.cgroup("unified/kubelet.slice/kubelet-kubepods.slice");
        let source = host.discover();
        assert_eq!(source.root(), v2);
        assert_eq!(source.counter_file(), CounterFile::CpuStat);
        assert!(source.settled);
    }

    #[test]
    fn discover_without_kubelet_rechecks_later() {
        let host = FakeHost::new(MOUNTINFO_HYBRID);
        let v1 = host.cgroup("cpu,cpuacct");
        let v2 = host.cgroup("unified");
        let mut source = host.discover();
        assert_eq!(source.root(), v1, "hybrid without kubelet: v1 cpuacct");
        assert!(!source.settled);
        assert!(source.sample().pods.is_empty());

        // kubelet starts with the systemd driver, writing v2 only.
        let pod = pod_dir(&v2, Layout::Systemd, UID_A);
        write_counter(&pod, CounterFile::CpuStat, 5_000_000);
        let sample = source.sample();
        assert_eq!(source.root(), v2);
        assert_eq!(source.counter_file(), CounterFile::CpuStat);
        assert!(source.settled);
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
        let source = discover(&sysfs, &tmp.path().join("proc")).unwrap();
        assert_eq!(source.root(), sysfs.join("fs").join("cgroup"));
        assert_eq!(source.counter_file(), CounterFile::CpuStat);
        assert!(!source.settled);
    }

    #[test]
    fn discover_errors() {
        let tmp = TempDir::new().unwrap();
        let err = discover(tmp.path(), tmp.path()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::Mountinfo);
        assert!(err.to_string().contains("mountinfo"));

        let host = FakeHost::new("31 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n");
        let err = discover(&host.sysfs(), &host.procfs()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::NoCgroupMount);

        // v1 without cpuacct is no use either
        let host =
            FakeHost::new("31 26 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
        assert_eq!(
            discover(&host.sysfs(), &host.procfs()).unwrap_err().kind(),
            IssueKind::NoCgroupMount
        );

        // listed but the host /sys is not where we were told
        let host = FakeHost::new(MOUNTINFO_V2);
        let err = discover(&host.sysfs(), &host.procfs()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::MountUnreachable);
        assert!(err.to_string().contains("host"));
    }
}
