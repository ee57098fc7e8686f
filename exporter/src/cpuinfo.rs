//! `<procfs>/cpuinfo` -> the node's logical CPUs for `kepler_node_cpu_info`, read once at start.
//! A missing or unusual file (some ARM and VM kernels) yields no CPUs and one log line: the family
//! is then absent, and no scrape ever fails because of it.

use std::path::{Path, PathBuf};

/// One logical CPU as `/proc/cpuinfo` names it (empty where the kernel does not say).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    pub(crate) processor: String,
    pub(crate) vendor_id: String,
    pub(crate) model_name: String,
    pub(crate) physical_id: String,
    pub(crate) core_id: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no block names a processor with a vendor_id or model name")]
    Unusual { path: PathBuf },
}

/// Most bytes read: a 512-CPU host writes about 800 KiB.
const MAX_BYTES: usize = 4 << 20;

/// Reads and parses `<procfs>/cpuinfo`: a regular file of at most `MAX_BYTES`, read with the one
/// bounded helper (a FIFO or a device in its place is refused, never waited on).
pub(crate) fn read(procfs: &Path) -> Result<Vec<CpuInfo>, Error> {
    let path = procfs.join("cpuinfo");
    let text =
        crate::files::read_small_text_io(&path, MAX_BYTES).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
    let cpus = parse(&text);
    if cpus.is_empty() {
        return Err(Error::Unusual { path });
    }
    Ok(cpus)
}

/// The CPUs of `/proc/cpuinfo`, or none where it holds none in the x86 form; logs why once.
pub fn discover(procfs: &Path) -> Vec<CpuInfo> {
    match read(procfs) {
        Ok(cpus) => cpus,
        Err(error) => {
            tracing::warn!(%error, "kepler_node_cpu_info is not exported");
            Vec::new()
        }
    }
}

/// Parses the blank-line separated blocks of `key : value` lines. A block counts when it has a
/// `processor` number and a `vendor_id` or `model name`: ARM kernels list processors with other keys
/// only, and a summary block (s390, some ARM) has no `processor` number.
pub(crate) fn parse(text: &str) -> Vec<CpuInfo> {
    let mut cpus = Vec::new();
    for block in text.split("\n\n") {
        let mut cpu = CpuInfo::default();
        for line in block.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().to_string();
            match key.trim() {
                "processor" => cpu.processor = value,
                "vendor_id" => cpu.vendor_id = value,
                "model name" => cpu.model_name = value,
                "physical id" => cpu.physical_id = value,
                "core id" => cpu.core_id = value,
                _ => {}
            }
        }
        let numbered = !cpu.processor.is_empty() && cpu.processor.parse::<u32>().is_ok();
        if numbered && !(cpu.vendor_id.is_empty() && cpu.model_name.is_empty()) {
            cpus.push(cpu);
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu vme : odd\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nphysical id\t: 1\ncore id\t\t: 3\n\n";

    #[test]
    fn x86_blocks_become_cpus() {
        let cpus = parse(X86);
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            cpus[1],
            CpuInfo {
                processor: "1".into(),
                vendor_id: "GenuineIntel".into(),
                model_name: "Intel(R) Xeon(R) Platinum 8480+".into(),
                physical_id: "1".into(),
                core_id: "3".into(),
            }
        );
    }

    #[test]
    fn arm_and_garbage_give_no_cpus() {
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n\nHardware\t: BCM2835\n";
        assert!(parse(arm).is_empty());
        assert!(parse("").is_empty());
        assert!(parse("\u{0}\u{ff}: :\n\n:::\nprocessor: x\nvendor_id: v\n").is_empty());
    }

    #[test]
    fn a_missing_or_unusual_file_is_an_error_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");
        assert!(err.to_string().contains("cpuinfo"), "{err}");
        assert!(discover(dir.path()).is_empty());
        std::fs::write(dir.path().join("cpuinfo"), "processor : 0\nFeatures : fp\n").unwrap();
        assert!(matches!(read(dir.path()), Err(Error::Unusual { .. })));
        std::fs::write(dir.path().join("cpuinfo"), X86).unwrap();
        assert_eq!(discover(dir.path()).len(), 2);
    }
}
