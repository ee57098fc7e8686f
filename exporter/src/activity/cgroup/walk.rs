//! One walk of kubelet's subtree of a cgroup hierarchy: pod and container directories found by
//! `resource::cgroup_path`'s naming rules, each counter's delta since the last walk, and the state
//! carried to the next one. It descends only below kubepods/kubelet directories.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::counter::CounterFile;
use super::open_files::{OpenFiles, Tracked};
use super::Error;
use crate::activity::{ContainerActivity, PodActivity};
use crate::issue::SourceIssue;
use crate::resource::cgroup_path::{container_dir, pod_dir_uid};
use crate::units::{CpuNanos, PodUid};

/// How deep below the hierarchy root pod directories are looked for.
const MAX_WALK_DEPTH: usize = 8;

/// State of one sample's walk.
pub(super) struct Walk<'a> {
    /// None: presence only (pod directories are listed, no counter is read).
    pub(super) counter: Option<CounterFile>,
    /// Last sample's state; entries move to `next` as the walk visits them.
    pub(super) previous: &'a mut HashMap<PathBuf, Tracked>,
    pub(super) next: HashMap<PathBuf, Tracked>,
    pub(super) pods: Vec<PodActivity>,
    pub(super) issues: Vec<SourceIssue>,
    /// Counter files held now (in `previous` and `next`).
    pub(super) files: OpenFiles,
    pub(super) buf: &'a mut Vec<u8>,
}

impl Walk<'_> {
    /// Descends from `dir`: everywhere below a kubepods/kubelet directory, only into such directories
    /// above it.
    pub(super) fn visit(&mut self, dir: &Path, depth: usize, below_kubelet: bool) {
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
            let Some((id, runtime)) = container_dir(&name) else {
                continue;
            };
            if let Some(cpu_time) = self.read_delta(&path) {
                containers.push(ContainerActivity {
                    id,
                    cpu_time,
                    runtime,
                });
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
                    self.keep_previous_under(dir); // EMFILE, EACCES
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
            match entry {
                Ok(entry) if entry.file_type().is_ok_and(|t| t.is_dir()) => {
                    dirs.push((entry.file_name().to_string_lossy().into(), entry.path()));
                }
                Ok(_) => {}
                Err(source) => self.issue(Error::ReadDir {
                    path: dir.to_path_buf(),
                    source,
                }),
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
        let (read, file, recreated) = self.files.read(kept, &path, self.buf);
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

    /// A directory still there but unreadable now keeps the baselines below it, so the next good
    /// walk does not count their whole counters again.
    fn keep_previous_under(&mut self, dir: &Path) {
        let (under, elsewhere) = std::mem::take(self.previous)
            .into_iter()
            .partition(|(path, _)| path.starts_with(dir));
        *self.previous = elsewhere;
        self.next.extend::<HashMap<_, _>>(under);
    }

    fn issue(&mut self, error: Error) {
        debug!(error = %error, "cgroup read skipped");
        self.issues.push(error.into_issue());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    const C1: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

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
            files: OpenFiles {
                open: 0,
                max_open: 10,
            },
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
}
