//! CPU-wide hardware counters (cycles, instructions) for the eBPF program: one `perf_event_open`
//! per online CPU and event, handed to the program's `PERF_EVENT_ARRAY` maps. Where the machine has
//! no PMU (most VMs) opening fails with a typed reason and the program counts on-CPU time alone.
//! Software `cpu-clock` events can stand in for both counters (`--cpu-counters software`), so the
//! whole path is testable on machines without a PMU.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Which events to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    /// `PERF_COUNT_HW_CPU_CYCLES` and `PERF_COUNT_HW_INSTRUCTIONS`.
    Hardware,
    /// `PERF_COUNT_SW_CPU_CLOCK` for both (nanoseconds, not cycles): a stand-in for tests.
    Software,
}

impl CounterKind {
    /// The value of `kepler_exporter_cpu_source_measure_info{measure}` for (cycles, instructions).
    pub(crate) fn measures(self) -> [&'static str; 2] {
        match self {
            CounterKind::Hardware => ["cpu_cycles", "cpu_instructions"],
            CounterKind::Software => ["cpu_clock_standin_cycles", "cpu_clock_standin_instructions"],
        }
    }
}

/// Why the counters are not available.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error(
        "no hardware performance counters on this machine (perf_event_open on CPU {cpu}: {source})"
    )]
    NoPmu {
        cpu: u32,
        #[source]
        source: io::Error,
    },
    #[error("perf_event_open on CPU {cpu} not permitted (needs CAP_PERFMON): {source}")]
    NotPermitted {
        cpu: u32,
        #[source]
        source: io::Error,
    },
    #[error("perf_event_open on CPU {cpu}: {source}")]
    Open {
        cpu: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the online CPUs from {path}: {source}")]
    Cpus {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot put the counter of CPU {cpu} into eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        cpu: u32,
        #[source]
        source: io::Error,
    },
}

/// Open counters: `(cpu, cycles fd, instructions fd)` for every online CPU. Dropping closes them.
#[derive(Debug)]
pub struct Counters {
    kind: CounterKind,
    per_cpu: Vec<(u32, OwnedFd, OwnedFd)>,
}

impl Counters {
    /// Opens both events on every CPU listed in `<sysfs>/devices/system/cpu/online`; all or nothing.
    pub fn open(kind: CounterKind, sysfs: &Path) -> Result<Counters, CounterError> {
        let path = sysfs.join("devices/system/cpu/online");
        let text = crate::files::read_small_text_io(&path, crate::files::MAX_ATTRIBUTE_BYTES)
            .map_err(|source| CounterError::Cpus {
                path: path.display().to_string(),
                source,
            })?;
        let cpus = parse_cpu_list(&text).ok_or_else(|| CounterError::Cpus {
            path: path.display().to_string(),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("bad CPU list {text:?}")),
        })?;
        let (event_type, cycles, instructions) = match kind {
            CounterKind::Hardware => (
                PERF_TYPE_HARDWARE,
                PERF_COUNT_HW_CPU_CYCLES,
                PERF_COUNT_HW_INSTRUCTIONS,
            ),
            CounterKind::Software => (
                PERF_TYPE_SOFTWARE,
                PERF_COUNT_SW_CPU_CLOCK,
                PERF_COUNT_SW_CPU_CLOCK,
            ),
        };
        let mut per_cpu = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let c = open_event(event_type, cycles, cpu)?;
            let i = open_event(event_type, instructions, cpu)?;
            per_cpu.push((cpu, c, i));
        }
        Ok(Counters { kind, per_cpu })
    }

    pub fn kind(&self) -> CounterKind {
        self.kind
    }

    pub fn cpus(&self) -> usize {
        self.per_cpu.len()
    }

    /// Puts every CPU's counters into the program's two `PERF_EVENT_ARRAY` maps (key: CPU index).
    pub(crate) fn install(
        &self,
        cycles_map: BorrowedFd<'_>,
        instructions_map: BorrowedFd<'_>,
    ) -> Result<(), CounterError> {
        for (cpu, cycles, instructions) in &self.per_cpu {
            for (map, name, fd) in [
                (cycles_map, "CYCLES", cycles),
                (instructions_map, "INSTRUCTIONS", instructions),
            ] {
                update_fd_array(map, *cpu, fd).map_err(|source| CounterError::Map {
                    map: name,
                    cpu: *cpu,
                    source,
                })?;
            }
        }
        Ok(())
    }
}

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_ATTR_FLAG_PINNED: u64 = 1 << 2;
/// `enum bpf_cmd` value of `BPF_MAP_UPDATE_ELEM`.
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes); the kernel zero-extends it.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit field: disabled, inherit, pinned, exclusive, exclude_user, ... Only `pinned` is set:
    /// enabled, counting user and kernel, never multiplexed off the PMU (a pinned event that cannot
    /// stay on it stops running, which the program counts as an error).
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

fn open_event(kind: u32, config: u64, cpu: u32) -> Result<OwnedFd, CounterError> {
    let attr = PerfEventAttr {
        kind,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        flags: PERF_ATTR_FLAG_PINNED,
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it declares and outlives the call;
    // pid -1 with a CPU opens a CPU-wide counter; group_fd -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::addr_of!(attr),
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) => {
                CounterError::NoPmu { cpu, source }
            }
            Some(libc::EACCES) | Some(libc::EPERM) => CounterError::NotPermitted { cpu, source },
            _ => CounterError::Open { cpu, source },
        });
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `struct bpf_attr` for element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn update_fd_array(map: BorrowedFd<'_>, index: u32, event: &OwnedFd) -> io::Result<()> {
    let fd = u32::try_from(event.as_raw_fd()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).map_err(|_| io::ErrorKind::InvalidInput)?,
        _pad: 0,
        key: std::ptr::addr_of!(index) as u64,
        value: std::ptr::addr_of!(fd) as u64,
        flags: 0,
    };
    // SAFETY: a valid bpf_attr for BPF_MAP_UPDATE_ELEM whose key and value point to u32 locals that
    // outlive the call (a PERF_EVENT_ARRAY has 4-byte keys and values).
    unsafe { super::batch::sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_garbage_does_not() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        for bad in ["", "\n", "a-b", "3-1", "1,,x", "0-99999999"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn attr_has_the_v5_size() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 112);
    }

    #[test]
    fn a_missing_cpu_list_is_a_typed_error() {
        let tmp = tempfile::TempDir::new().unwrap();
        let err = Counters::open(CounterKind::Software, tmp.path()).unwrap_err();
        assert!(matches!(err, CounterError::Cpus { .. }), "{err}");
    }
}
