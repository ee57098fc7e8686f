//! The host's cgroup layout as an explicit `Mode` (v1 only, v2 only, or hybrid) and which of its
//! hierarchies holds kubelet's pods. It looks for `kubepods` directory names near each root; it never
//! reads a counter.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::counter::CounterFile;
use super::mounts::{CgroupMount, CgroupMounts};
use super::{Error, Result};

/// How deep below the hierarchy root a `kubepods` directory counts as "kubelet is here".
const KUBEPODS_PROBE_DEPTH: usize = 2;

/// A hierarchy to walk: its root in this process's view and its counter file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hierarchy {
    pub(super) root: PathBuf,
    pub(super) counter: CounterFile,
}

impl Hierarchy {
    fn has_kubepods(&self) -> bool {
        has_kubepods_dir(&self.root, KUBEPODS_PROBE_DEPTH)
    }
}

/// The cgroup hierarchies mountinfo lists that are reachable under the sysfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// cgroup v1 only: a hierarchy with the `cpuacct` controller.
    Legacy(Hierarchy),
    /// cgroup v2 only (the default of current distributions).
    Modern(Hierarchy),
    /// Both (systemd's hybrid layout): kubelet puts its pods in one, depending on its cgroup driver.
    Hybrid { v1: Hierarchy, v2: Hierarchy },
}

impl Mode {
    /// The mode of the host whose mounts are `mounts`, with roots rebased under `sysfs_root`.
    pub(super) fn of(mounts: &CgroupMounts, sysfs_root: &Path) -> Result<Mode> {
        let mut unreachable = None;
        let mut reachable = |mount: Option<&CgroupMount>, counter| {
            let mount = mount?;
            let root = mount.rebased(sysfs_root);
            if root.is_dir() {
                return Some(Hierarchy { root, counter });
            }
            warn!(mount_point = %mount.mount_point.display(), path = %root.display(),
                  "cgroup mount listed in mountinfo is not reachable");
            unreachable.get_or_insert((mount.mount_point.clone(), root));
            None
        };
        let v1 = reachable(mounts.v1_with("cpuacct"), CounterFile::CpuacctUsage);
        let v2 = reachable(mounts.v2(), CounterFile::CpuStat);
        match (v1, v2) {
            (Some(v1), Some(v2)) => Ok(Mode::Hybrid { v1, v2 }),
            (Some(v1), None) => Ok(Mode::Legacy(v1)),
            (None, Some(v2)) => Ok(Mode::Modern(v2)),
            (None, None) => Err(match unreachable {
                Some((mount_point, path)) => Error::MountUnreachable { mount_point, path },
                None => Error::NoCgroupMount {
                    path: mounts.path.clone(),
                },
            }),
        }
    }

    /// The hierarchy to walk, and whether kubelet's pods were found in it (the choice is then final).
    /// On hybrid hosts kubelet's cgroupfs driver writes v1, so v1 wins when both have pods; with no
    /// kubelet yet, v1 is read until pods show up in v2.
    pub(super) fn choose(&self) -> (&Hierarchy, bool) {
        match self {
            Mode::Legacy(only) | Mode::Modern(only) => (only, only.has_kubepods()),
            Mode::Hybrid { v1, .. } if v1.has_kubepods() => (v1, true),
            Mode::Hybrid { v2, .. } if v2.has_kubepods() => (v2, true),
            Mode::Hybrid { v1, .. } => (v1, false),
        }
    }
}

/// Whether a directory whose name holds `kubepods` is at most `depth_left` levels below `dir`.
fn has_kubepods_dir(dir: &Path, depth_left: usize) -> bool {
    let Some(Ok(entries)) = (depth_left > 0).then(|| fs::read_dir(dir)) else {
        return false;
    };
    let subdirs: Vec<PathBuf> = (entries.flatten())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    let named = |d: &PathBuf| {
        d.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("kubepods"))
    };
    subdirs.iter().any(named)
        || subdirs
            .iter()
            .any(|sub| has_kubepods_dir(sub, depth_left - 1))
}
