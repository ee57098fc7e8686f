//! Who a drained (process, cgroup v2 id) entry belongs to. Three sources, in order: the cgroup v2
//! id -> owner cache (a bounded walk of the v2 hierarchy, refreshed when an unknown id shows up), the
//! entry's ancestor ids (a container cgroup removed before the drain still has a live pod cgroup), and
//! `/proc/<tgid>/cgroup` where kubelet's pods are not in the v2 hierarchy (v1 and hybrid hosts).
//! Anything it cannot tell resolves to `System`: it never guesses a pod.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::resource::cgroup_path::{classify, CgroupOwner};
use crate::resource::process_owner::owner_of;
use crate::units::Pid;

/// Most cgroup directories the v2 walk records; a walk stops there.
pub(crate) const MAX_CGROUPS: usize = 65_536;
/// Deepest directory level the walk descends to.
const MAX_DEPTH: usize = 32;
/// Most cached `/proc/<tgid>/cgroup` answers.
const MAX_PROC_CACHE: usize = 65_536;

/// One drained entry as the resolver needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskCgroup {
    pub(crate) tgid: u32,
    pub(crate) cgroup_id: u64,
    /// Cgroup v2 ids of the ancestors at levels 1, 2, ... (0 above the cgroup's own level).
    pub(crate) ancestors: Vec<u64>,
    /// The process's leader exited since the last drain: its pid may already be reused, so
    /// `/proc/<tgid>` is not asked about it.
    pub(crate) exited: bool,
}

/// Counters of the resolver's own work, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ResolverStats {
    pub(crate) walks: u64,
    pub(crate) proc_reads: u64,
    /// Entries that could not be tied to anything and went to `System`.
    pub(crate) unresolved: u64,
}

#[derive(Debug)]
pub struct Resolver {
    /// The cgroup v2 mount as this process sees it; None on a v1-only host.
    v2_root: Option<PathBuf>,
    procfs: PathBuf,
    by_id: HashMap<u64, CgroupOwner>,
    /// Ids still unknown after the latest walk: they do not trigger another one.
    unknown: HashSet<u64>,
    /// The v2 hierarchy holds kubelet's pods: it is authoritative and `/proc` is not read.
    v2_has_pods: bool,
    /// `(tgid, cgroup id)` -> owner from `/proc/<tgid>/cgroup`, with the drain it was last used in.
    procs: HashMap<(u32, u64), (CgroupOwner, u64)>,
    drain: u64,
    stats: ResolverStats,
}

impl Resolver {
    /// Walks the v2 hierarchy once. `procfs` is the host's /proc.
    pub fn new(v2_root: Option<PathBuf>, procfs: &Path) -> Resolver {
        let mut resolver = Resolver {
            v2_root,
            procfs: procfs.to_path_buf(),
            by_id: HashMap::new(),
            unknown: HashSet::new(),
            v2_has_pods: false,
            procs: HashMap::new(),
            drain: 0,
            stats: ResolverStats::default(),
        };
        resolver.walk();
        resolver
    }

    pub(crate) fn stats(&self) -> ResolverStats {
        self.stats
    }

    /// Known cgroup v2 ids (for tests and benchmarks).
    pub(crate) fn known_cgroups(&self) -> usize {
        self.by_id.len()
    }

    /// Starts a drain: walks the v2 hierarchy again if one of `ids` (leaf ids of this drain's
    /// entries) is neither known nor already known to be missing; ids still unknown after that are
    /// remembered, so a removed cgroup costs one walk, not one per tick.
    pub(crate) fn begin_drain(&mut self, ids: &[u64]) {
        self.drain += 1;
        let refresh = ids
            .iter()
            .any(|id| !self.by_id.contains_key(id) && !self.unknown.contains(id));
        if refresh {
            self.walk();
            for id in ids {
                if !self.by_id.contains_key(id) && self.unknown.len() < MAX_CGROUPS {
                    self.unknown.insert(*id);
                }
            }
        }
    }

    /// Ends a drain: forgets `/proc` answers not used in it (the process did not run, or exited).
    pub(crate) fn end_drain(&mut self, exited: &HashSet<u32>) {
        let drain = self.drain;
        self.procs
            .retain(|(tgid, _), (_, seen)| *seen == drain && !exited.contains(tgid));
    }

    /// Forgets every `/proc` answer (when exits may have been missed, so pids may have been reused).
    pub(crate) fn forget_processes(&mut self) {
        self.procs.clear();
    }

    /// The owner of one entry.
    pub(crate) fn resolve(&mut self, task: &TaskCgroup) -> CgroupOwner {
        self.resolve_entries(task, 1)
    }

    /// True when owners come from the cgroup v2 tree alone (a v2 host with pods), so every process
    /// of one cgroup id resolves alike and a drain may resolve each cgroup once.
    pub(crate) fn resolves_by_cgroup_id(&self) -> bool {
        self.v2_has_pods
    }

    /// `resolve` for `entries` drained entries that share `task`'s cgroup (they count as that many
    /// unresolved entries when it cannot be placed).
    pub(crate) fn resolve_entries(&mut self, task: &TaskCgroup, entries: u64) -> CgroupOwner {
        let v2 = self.resolve_v2(task);
        if v2.pod().is_some() || self.v2_has_pods {
            if v2 == CgroupOwner::System && !self.by_id.contains_key(&task.cgroup_id) {
                self.stats.unresolved += entries;
            }
            return v2;
        }
        if let Some((owner, seen)) = self.procs.get_mut(&(task.tgid, task.cgroup_id)) {
            *seen = self.drain;
            return owner.clone();
        }
        if task.exited {
            self.stats.unresolved += u64::from(v2 == CgroupOwner::System);
            return v2;
        }
        self.stats.proc_reads += 1;
        match owner_of(&self.procfs, Pid(task.tgid)) {
            Ok(owner) => {
                if self.procs.len() < MAX_PROC_CACHE {
                    self.procs
                        .insert((task.tgid, task.cgroup_id), (owner.clone(), self.drain));
                }
                owner
            }
            // Gone (or unreadable): what the v2 hierarchy says, which is never a wrong pod.
            Err(_) => {
                self.stats.unresolved += u64::from(v2 == CgroupOwner::System);
                v2
            }
        }
    }

    fn resolve_v2(&self, task: &TaskCgroup) -> CgroupOwner {
        if let Some(owner) = self.by_id.get(&task.cgroup_id) {
            return owner.clone();
        }
        // The cgroup is gone: the deepest ancestor still known tells the pod (its container is lost).
        task.ancestors
            .iter()
            .rev()
            .filter(|id| **id != 0 && **id != task.cgroup_id)
            .find_map(|id| self.by_id.get(id))
            .map(|owner| match owner {
                CgroupOwner::Container { .. } | CgroupOwner::PodLevel { .. } => owner.clone(),
                CgroupOwner::OtherContainer { .. } | CgroupOwner::System => CgroupOwner::System,
            })
            .unwrap_or(CgroupOwner::System)
    }

    /// Rebuilds the id -> owner cache from the v2 hierarchy (bounded by MAX_CGROUPS and MAX_DEPTH).
    fn walk(&mut self) {
        self.stats.walks += 1;
        let Some(root) = self.v2_root.clone() else {
            return;
        };
        let mut by_id = HashMap::with_capacity(self.by_id.len().max(64));
        let mut has_pods = false;
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if by_id.len() >= MAX_CGROUPS {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue; // removed while walking
            };
            let relative = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            let owner = classify(&format!("/{}", relative.to_string_lossy()));
            has_pods |= owner.pod().is_some();
            by_id.insert(meta.ino(), owner);
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        self.by_id = by_id;
        self.v2_has_pods = has_pods;
        self.unknown.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{ContainerId, PodUid};
    use tempfile::TempDir;

    const UID: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";
    const CID: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
    const CID2: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    fn container() -> CgroupOwner {
        CgroupOwner::Container {
            pod: PodUid::parse(UID).unwrap(),
            container: ContainerId::parse(CID).unwrap(),
            runtime: None,
        }
    }

    fn task(tgid: u32, cgroup_id: u64, ancestors: &[u64]) -> TaskCgroup {
        TaskCgroup {
            tgid,
            cgroup_id,
            ancestors: ancestors.to_vec(),
            exited: false,
        }
    }

    /// A v2 tree with one pod and container, and an empty procfs.
    fn v2_tree() -> (TempDir, PathBuf, PathBuf) {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("cgroup");
        let pod = root.join(format!("kubepods/burstable/pod{UID}"));
        fs::create_dir_all(pod.join(CID)).unwrap();
        fs::create_dir_all(root.join("system.slice/sshd.service")).unwrap();
        fs::create_dir_all(tmp.path().join("proc")).unwrap();
        (tmp, root, pod)
    }

    #[test]
    fn v2_ids_resolve_to_pods_containers_and_system() {
        let (tmp, root, pod) = v2_tree();
        let mut r = Resolver::new(Some(root.clone()), &tmp.path().join("proc"));
        let c = ino(&pod.join(CID));
        r.begin_drain(&[c]);
        assert_eq!(r.resolve(&task(10, c, &[])), container());
        assert_eq!(
            r.resolve(&task(11, ino(&pod), &[])),
            CgroupOwner::PodLevel {
                pod: PodUid::parse(UID).unwrap()
            }
        );
        let sshd = ino(&root.join("system.slice/sshd.service"));
        assert_eq!(r.resolve(&task(12, sshd, &[])), CgroupOwner::System);
        assert_eq!(r.resolve(&task(13, ino(&root), &[])), CgroupOwner::System);
        assert_eq!(r.stats().walks, 1, "known ids do not walk again");
        assert_eq!(
            r.stats().proc_reads,
            0,
            "v2 holds the pods: /proc is not read"
        );
    }

    #[test]
    fn new_cgroup_triggers_one_walk_and_missing_ids_do_not_repeat_it() {
        let (tmp, root, pod) = v2_tree();
        let mut r = Resolver::new(Some(root), &tmp.path().join("proc"));
        let new = pod.join(CID2);
        fs::create_dir(&new).unwrap();
        let id = ino(&new);
        r.begin_drain(&[id]);
        assert_eq!(r.stats().walks, 2);
        assert_eq!(
            r.resolve(&task(1, id, &[])).container(),
            ContainerId::parse(CID2).as_ref()
        );
        // An id that is nowhere (a cgroup removed before the drain): one walk, then remembered.
        let ghost = u64::MAX - 7;
        r.begin_drain(&[ghost]);
        r.begin_drain(&[ghost]);
        assert_eq!(r.stats().walks, 3);
        assert_eq!(r.resolve(&task(2, ghost, &[])), CgroupOwner::System);
        assert_eq!(r.stats().unresolved, 1);
    }

    #[test]
    fn removed_container_cgroup_falls_back_to_its_pod_ancestor() {
        let (tmp, root, pod) = v2_tree();
        let gone = pod.join(CID2);
        fs::create_dir(&gone).unwrap();
        let gone_id = ino(&gone);
        let ancestors = [
            ino(&root.join("kubepods")),
            ino(&root.join("kubepods/burstable")),
            ino(&pod),
            gone_id,
            0,
            0,
        ];
        fs::remove_dir(&gone).unwrap();
        let mut r = Resolver::new(Some(root.clone()), &tmp.path().join("proc"));
        r.begin_drain(&[gone_id]);
        assert_eq!(
            r.resolve(&task(5, gone_id, &ancestors)),
            CgroupOwner::PodLevel {
                pod: PodUid::parse(UID).unwrap()
            }
        );
        // Below a system cgroup, a removed leaf is system, never a pod.
        let svc = ino(&root.join("system.slice"));
        assert_eq!(
            r.resolve(&task(6, u64::MAX, &[svc, u64::MAX])),
            CgroupOwner::System
        );
    }

    #[test]
    fn hybrid_host_reads_proc_once_per_process_and_never_for_exited_ones() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("unified");
        fs::create_dir_all(root.join("user.slice")).unwrap();
        let proc = tmp.path().join("proc");
        let write_proc = |pid: u32, path: &str| {
            fs::create_dir_all(proc.join(pid.to_string())).unwrap();
            fs::write(
                proc.join(pid.to_string()).join("cgroup"),
                format!("4:cpu,cpuacct:{path}\n1:name=systemd:/user.slice\n0::/user.slice\n"),
            )
            .unwrap();
        };
        write_proc(100, &format!("/kubepods/burstable/pod{UID}/{CID}"));
        write_proc(200, "/user.slice");
        let user = ino(&root.join("user.slice"));
        let mut r = Resolver::new(Some(root), &proc);
        for _ in 0..3 {
            r.begin_drain(&[user]);
            assert_eq!(r.resolve(&task(100, user, &[user])), container());
            assert_eq!(r.resolve(&task(200, user, &[user])), CgroupOwner::System);
            r.end_drain(&HashSet::new());
        }
        assert_eq!(r.stats().proc_reads, 2, "cached per (tgid, cgroup)");

        // Pid 100 exits and is reused by a process outside the pod: the cache is dropped, and an
        // exited entry without a cached answer is not looked up (its pid may be someone else now).
        r.begin_drain(&[user]);
        assert_eq!(r.resolve(&task(100, user, &[user])), container());
        r.end_drain(&HashSet::from([100]));
        write_proc(100, "/user.slice");
        r.begin_drain(&[user]);
        let mut exited = task(100, user, &[user]);
        exited.exited = true;
        assert_eq!(r.resolve(&exited), CgroupOwner::System);
        assert_eq!(r.resolve(&task(100, user, &[user])), CgroupOwner::System);
        // A process gone before the drain is system.
        assert_eq!(r.resolve(&task(300, user, &[user])), CgroupOwner::System);
    }

    #[test]
    fn no_v2_hierarchy_and_garbage_proc_files() {
        let tmp = TempDir::new().unwrap();
        let proc = tmp.path().join("proc");
        fs::create_dir_all(proc.join("7")).unwrap();
        fs::write(proc.join("7/cgroup"), "\u{0}garbage:::\n\n::").unwrap();
        let mut r = Resolver::new(None, &proc);
        r.begin_drain(&[1]);
        assert_eq!(r.resolve(&task(7, 1, &[])), CgroupOwner::System);
        assert_eq!(r.known_cgroups(), 0);
        // A v2 root that does not exist is an empty cache, not a panic.
        let mut r = Resolver::new(Some(tmp.path().join("nope")), &proc);
        r.begin_drain(&[1]);
        assert_eq!(r.resolve(&task(8, 1, &[])), CgroupOwner::System);
    }
}
