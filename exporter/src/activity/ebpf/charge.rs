//! Charges the slices still running at a drain: runs the program's never-attached
//! `kepler_charge_running` on each CPU that runs a task whose slice started at least
//! `CHARGE_AFTER_NS` ago (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_RUN_ON_CPU`, kernel ≥ 5.10). Idle
//! CPUs are never interrupted. It decides which CPUs from the per-CPU state; it does not drain.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use kepler_ebpf_common::{CpuState, PENDING_FLUSH_NS};

use super::batch::sys_bpf;

/// `enum bpf_cmd` value of `BPF_PROG_TEST_RUN` (stable kernel ABI).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_RUN_ON_CPU`: run on `cpu` (an interrupt there) instead of the calling CPU.
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// A CPU whose running slice started less than this long ago is left alone: what stays uncharged
/// at a drain is below this per CPU (plus the run cache's windows, each under `PENDING_FLUSH_NS`),
/// and a CPU that switches often costs no interrupt.
pub(crate) const CHARGE_AFTER_NS: u64 = PENDING_FLUSH_NS;

/// `union bpf_attr`'s `test` member (`BPF_PROG_TEST_RUN`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The CPUs (indexes of `states`, one per possible CPU) whose running slice should be charged at
/// `now_ns` (`CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`): a switch was seen there, the CPU
/// does not run its idle task, and the slice started at least `CHARGE_AFTER_NS` ago.
pub(crate) fn cpus_to_charge(states: &[CpuState], now_ns: u64) -> Vec<u32> {
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.last_switch_ns != 0
                && s.on_idle == 0
                && now_ns.saturating_sub(s.last_switch_ns) >= CHARGE_AFTER_NS
        })
        .filter_map(|(cpu, _)| u32::try_from(cpu).ok())
        .collect()
}

/// What charging the CPUs did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Charged {
    /// CPUs whose running slice was charged.
    pub cpus: u32,
    /// CPUs that were offline (a possible CPU with stale state): skipped.
    pub(crate) offline: u32,
}

/// Runs the charge program `program` on each CPU of `cpus`. An offline CPU is skipped; any other
/// failure stops and is returned with the CPU (the time stays with the next switch-out there).
pub(crate) fn charge(program: BorrowedFd<'_>, cpus: &[u32]) -> Result<Charged, (u32, io::Error)> {
    let prog_fd = u32::try_from(program.as_raw_fd()).unwrap_or(u32::MAX);
    let mut charged = Charged::default();
    for &cpu in cpus {
        let mut attr = TestRunAttr {
            prog_fd,
            flags: BPF_F_TEST_RUN_ON_CPU,
            cpu,
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.test` with no data or context buffers.
        match unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) } {
            Ok(_) => charged.cpus += 1,
            Err(error) if error.raw_os_error() == Some(libc::ENXIO) => charged.offline += 1,
            Err(error) => return Err((cpu, error)),
        }
    }
    Ok(charged)
}

/// `CLOCK_MONOTONIC` in nanoseconds (what `bpf_ktime_get_ns` reads).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last_switch_ns: u64, on_idle: u64) -> CpuState {
        CpuState {
            last_switch_ns,
            on_idle,
            ..CpuState::default()
        }
    }

    #[test]
    fn only_busy_cpus_with_an_old_slice_are_charged() {
        let now = 10_000_000_000;
        let states = [
            state(now - 500_000_000, 0),     // a long slice: charged
            state(now - 500_000_000, 1),     // idle for 0.5 s: never woken
            state(now - 200_000, 0),         // switched 0.2 ms ago: left alone
            state(0, 0),                     // no switch seen yet (or not a CPU)
            state(now - CHARGE_AFTER_NS, 0), // exactly the threshold: charged
            state(now + 5_000, 0),           // a switch after `now` was read: left alone
        ];
        assert_eq!(cpus_to_charge(&states, now), vec![0, 4]);
    }

    #[test]
    fn attr_is_the_kernels_test_member() {
        assert_eq!(std::mem::size_of::<TestRunAttr>(), 80);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
        assert_eq!(std::mem::offset_of!(TestRunAttr, cpu), 68);
    }

    #[test]
    fn a_bad_fd_is_an_error_with_its_cpu() {
        use std::os::fd::AsFd;
        let file = std::fs::File::open("/dev/null").unwrap();
        let result = charge(file.as_fd(), &[1]);
        assert!(matches!(result, Err((1, _))), "{result:?}");
        assert!(matches!(charge(file.as_fd(), &[]), Ok(c) if c == Charged::default()));
    }
}
