//! The one mountinfo reader: the host's cgroup mounts from `<procfs>/1/mountinfo` (else
//! `<procfs>/self/mountinfo`), and their host mount points rebased onto the configured sysfs root.
//! Used by the cgroup and eBPF sources; it parses, it never walks a hierarchy.

use crate::files::read_small_text_io;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::{Error, Result};

/// Where the host mounts sysfs. mountinfo speaks in host paths; this prefix is swapped for the
/// configured sysfs root (e.g. `/host/sys`) before any mount point is used.
const HOST_SYSFS_MOUNT: &str = "/sys";

/// Super-options of a v1 cgroup mount that are flags, not controllers.
const FLAGS: &str = "rw ro noprefix clone_children xattr cpuset_v2_mode";

/// A cgroup hierarchy's version, with a v1 hierarchy's controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupVersion {
    V1 { controllers: Vec<String> },
    V2,
}

/// One cgroup mount from mountinfo. `mount_point` is as the mounting namespace sees it (host path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub(crate) mount_point: PathBuf,
    pub(crate) version: CgroupVersion,
}

impl CgroupMount {
    /// The mount point in this process's view: `/sys/<rest>` becomes `<sysfs_root>/<rest>`. Mount
    /// points elsewhere are used as they are.
    pub(crate) fn rebased(&self, sysfs_root: &Path) -> PathBuf {
        match self.mount_point.strip_prefix(HOST_SYSFS_MOUNT) {
            Ok(rest) => sysfs_root.join(rest),
            Err(_) => self.mount_point.clone(),
        }
    }
}

/// The cgroup mounts listed in one mountinfo file.
///
/// Rule for picking a hierarchy: among the mounts of the wanted kind, the one under the host's
/// `/sys` wins, because that is the prefix rebased onto `--sysfs`; a duplicate elsewhere (a bind
/// mount into a container's or a snap's tree) is taken only when there is no such mount, as it is
/// rarely reachable from the exporter's mount namespace. Within each group, mountinfo order decides.
/// Longest mountinfo read: a node with thousands of pod volumes lists a few MB of mounts.
const MAX_MOUNTINFO_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMounts {
    /// The mountinfo file read.
    pub(crate) path: PathBuf,
    pub(crate) mounts: Vec<CgroupMount>,
}

impl CgroupMounts {
    /// Reads the mountinfo of pid 1 (the host's, with `hostPID`), else this process's own.
    pub(crate) fn read(procfs_root: &Path) -> Result<CgroupMounts> {
        let init = procfs_root.join("1").join("mountinfo");
        let (path, content) = match read_small_text_io(&init, MAX_MOUNTINFO_BYTES) {
            Ok(content) => (init, content),
            Err(error) => {
                debug!(path = %init.display(), %error, "falling back to own mountinfo");
                let path = procfs_root.join("self").join("mountinfo");
                match read_small_text_io(&path, MAX_MOUNTINFO_BYTES) {
                    Ok(content) => (path, content),
                    Err(source) => return Err(Error::ReadMountinfo { path, source }),
                }
            }
        };
        let mounts = parse_mountinfo(&content);
        Ok(CgroupMounts { path, mounts })
    }

    /// The v1 hierarchy that has `controller` (e.g. `cpuacct`).
    pub(crate) fn v1_with(&self, controller: &str) -> Option<&CgroupMount> {
        self.pick(|m| match &m.version {
            CgroupVersion::V1 { controllers } => controllers.iter().any(|c| c == controller),
            CgroupVersion::V2 => false,
        })
    }

    /// The v2 (unified) hierarchy.
    pub(crate) fn v2(&self) -> Option<&CgroupMount> {
        self.pick(|m| m.version == CgroupVersion::V2)
    }

    fn pick(&self, wanted: impl Fn(&CgroupMount) -> bool) -> Option<&CgroupMount> {
        self.mounts
            .iter()
            .filter(|m| wanted(m))
            .min_by_key(|m| !m.mount_point.starts_with(HOST_SYSFS_MOUNT))
    }
}

/// Parses `/proc/<pid>/mountinfo`, keeping `cgroup` and `cgroup2` mounts. Malformed lines are skipped.
pub(crate) fn parse_mountinfo(content: &str) -> Vec<CgroupMount> {
    content.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // `id parent major:minor root mount_point options [optional...] - fstype source super_options`
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after_fields = after.split(' ');
    let fstype = after_fields.next()?;
    let super_options = after_fields.nth(1).unwrap_or(""); // after the source
    let version = match fstype {
        "cgroup2" => CgroupVersion::V2,
        "cgroup" => CgroupVersion::V1 {
            controllers: super_options
                .split(',')
                // Super-options that are not controllers: flags, and `name=`/`release_agent=` settings.
                .filter(|o| !o.is_empty() && !o.contains('=') && !FLAGS.split(' ').any(|f| f == *o))
                .map(str::to_owned)
                .collect(),
        },
        _ => return None,
    };
    // The kernel writes absolute mount points; anything else is not a mount to read under.
    if !mount_point.starts_with('/') {
        return None;
    }
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn rebase_mount_point(mount_point: &Path, sysfs_root: &Path) -> PathBuf {
        let version = CgroupVersion::V2;
        let mount_point = mount_point.to_path_buf();
        CgroupMount {
            mount_point,
            version,
        }
        .rebased(sysfs_root)
    }

    pub(in crate::activity::cgroup) const MOUNTINFO_V2: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
";

    pub(in crate::activity::cgroup) const MOUNTINFO_V1: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
30 26 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
31 26 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
";

    pub(in crate::activity::cgroup) const MOUNTINFO_HYBRID: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 26 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn a_mount_point_that_is_empty_or_relative_is_no_mount() {
        let text = "25 1 0:23 /  rw shared:9 - cgroup2 cgroup2 rw\n\
                    26 1 0:24 / sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(text), vec![]);
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
    fn the_mount_under_host_sys_wins_over_an_earlier_duplicate() {
        // A bind mount of the unified hierarchy listed first (a container's view kept by a runtime)
        // is not reachable from the exporter: the host's /sys mount is the one rebased onto --sysfs.
        let content = format!(
            "40 31 0:30 / /var/lib/snap/cgroup rw - cgroup2 cgroup2 rw\n\
             41 31 0:28 / /mnt/cpuacct rw - cgroup cgroup rw,cpuacct\n{MOUNTINFO_HYBRID}"
        );
        let mounts = CgroupMounts {
            path: "/proc/1/mountinfo".into(),
            mounts: parse_mountinfo(&content),
        };
        let sysfs = Path::new("/host/sys");
        assert_eq!(
            mounts.v2().map(|m| m.rebased(sysfs)),
            Some(PathBuf::from("/host/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            mounts.v1_with("cpuacct").map(|m| m.rebased(sysfs)),
            Some(PathBuf::from("/host/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(mounts.v1_with("memory"), None);
        // Without a mount under /sys, the duplicate is all there is.
        let only = CgroupMounts {
            path: "/proc/1/mountinfo".into(),
            mounts: parse_mountinfo("40 31 0:30 / /cgroup2 rw - cgroup2 cgroup2 rw\n"),
        };
        assert_eq!(
            only.v2().map(|m| m.rebased(sysfs)),
            Some(PathBuf::from("/cgroup2"))
        );
    }
}
