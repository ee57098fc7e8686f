//! The one pid -> cgroup -> pod resolver: `<procfs>/<pid>/cgroup` read once and classified by
//! `cgroup_path`'s rules (pod, container, other container, system). A process gone before the read
//! is `IssueKind::Vanished`; each caller decides whether that is worth reporting. No caching here.

use crate::files::{read_small_text_io, MAX_ATTRIBUTE_BYTES};
use std::io;
use std::path::{Path, PathBuf};

use super::cgroup_path::{parse_proc_cgroup, CgroupOwner};
use crate::issue::IssueKind;
use crate::units::Pid;

/// A `/proc/<pid>/cgroup` that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub(crate) struct OwnerError {
    pub(crate) path: PathBuf,
    pub(crate) source: io::Error,
}

impl OwnerError {
    /// `Vanished` when the process exited before or during the read, else the I/O error's kind.
    pub(crate) fn kind(&self) -> IssueKind {
        if process_gone(&self.source) {
            IssueKind::Vanished
        } else {
            IssueKind::of_io(&self.source)
        }
    }
}

/// A process that exited between listing and reading shows up as ENOENT or ESRCH.
pub(crate) fn process_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// The cgroup owner of process `pid` under `procfs` (the host's /proc).
pub(crate) fn owner_of(procfs: &Path, pid: Pid) -> Result<CgroupOwner, OwnerError> {
    let path = procfs.join(pid.0.to_string()).join("cgroup");
    match read_small_text_io(&path, MAX_ATTRIBUTE_BYTES) {
        Ok(content) => Ok(parse_proc_cgroup(&content)),
        Err(source) => Err(OwnerError { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{ContainerId, PodUid};
    use std::fs;
    use tempfile::TempDir;

    const UID: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";
    const CID: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

    #[test]
    fn owners_from_a_fake_procfs_and_a_vanished_process() {
        let tmp = TempDir::new().unwrap();
        let proc = tmp.path();
        let write = |pid: u32, content: &str| {
            fs::create_dir_all(proc.join(pid.to_string())).unwrap();
            fs::write(proc.join(pid.to_string()).join("cgroup"), content).unwrap();
        };
        // Hybrid: the cpuacct line names the container, the v2 line a host slice.
        write(
            10,
            &format!("4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n0::/user.slice\n"),
        );
        write(11, "0::/system.slice/sshd.service\n");
        write(12, "\u{0}garbage");
        assert_eq!(
            owner_of(proc, Pid(10)).unwrap(),
            CgroupOwner::Container {
                pod: PodUid::parse(UID).unwrap(),
                container: ContainerId::parse(CID).unwrap(),
                runtime: None,
            }
        );
        assert_eq!(owner_of(proc, Pid(11)).unwrap(), CgroupOwner::System);
        assert_eq!(owner_of(proc, Pid(12)).unwrap(), CgroupOwner::System);

        let gone = owner_of(proc, Pid(13)).unwrap_err();
        assert_eq!(gone.kind(), IssueKind::Vanished);
        assert!(gone.to_string().contains("13/cgroup"), "{gone}");
        assert!(process_gone(&io::Error::from_raw_os_error(libc::ESRCH)));

        // Present but unreadable (a directory where the file should be) is not "vanished".
        fs::create_dir_all(proc.join("14").join("cgroup")).unwrap();
        let unreadable = owner_of(proc, Pid(14)).unwrap_err();
        assert_ne!(unreadable.kind(), IssueKind::Vanished);
    }
}
