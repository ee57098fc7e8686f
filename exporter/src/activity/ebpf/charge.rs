//! Charges the slices still running at a drain: runs the program's never-attached
//! `kepler_charge_running` on each CPU that runs a task (`BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_RUN_ON_CPU`, kernel ≥ 5.10). Idle CPUs are never interrupted. It decides which CPUs
//! from the per-CPU state; it does not drain.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use kepler_ebpf_common::CpuState;

use super::batch::sys_bpf;

/// `enum bpf_cmd` value of `BPF_PROG_TEST_RUN` (stable kernel ABI).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_RUN_ON_CPU`: run on `cpu` (an interrupt there) instead of the calling CPU.
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

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

/// The CPUs (indexes of `states`, one per possible CPU) whose running slice should be charged: a
/// switch was seen there and the CPU does not run its idle task.
pub(crate) fn cpus_to_charge(states: &[CpuState]) -> Vec<u32> {
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.running_task != 0 && s.on_idle == 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(running_task: u64, on_idle: u64) -> CpuState {
        CpuState {
            running_task,
            on_idle,
            ..CpuState::default()
        }
    }

    #[test]
    fn only_cpus_running_a_task_are_charged() {
        let states = [
            state(0xffff_8880_0000_1000, 0), // runs a task: charged
            state(0xffff_8880_0000_2000, 1), // runs its idle task: never woken
            state(0, 0),                     // no switch seen yet (or not a CPU)
            state(0xffff_8880_0000_3000, 0), // runs a task: charged
        ];
        assert_eq!(cpus_to_charge(&states), vec![0, 3]);
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
