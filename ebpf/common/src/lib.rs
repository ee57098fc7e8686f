//! Types shared by the kepler-rs eBPF program (`ebpf/program`) and its userspace loader
//! (`exporter/src/activity/ebpf`). Every map key and value is `#[repr(C)]` with explicit padding, so
//! both sides agree on the layout; the loader checks sizes against the object's BTF when it loads.
//! No logic lives here.
#![no_std]

/// Names of the maps and programs in the object, as the loader looks them up.
pub mod names {
    /// `PERCPU_HASH<TaskKey, TaskTime>`: on-CPU time per (process, cgroup) since the last drain.
    pub const TASK_TIME: &str = "TASK_TIME";
    /// `PERCPU_ARRAY<CpuState>` with one slot: per-CPU switch clock and counters.
    pub const CPU_STATE: &str = "CPU_STATE";
    /// `HASH<u32 tgid, u64 exits>`: processes whose leader exited since the last drain.
    pub const EXITED: &str = "EXITED";
    /// `tp_btf/sched_switch` program.
    pub const SCHED_SWITCH: &str = "kepler_sched_switch";
    /// `raw_tp` program never attached: userspace runs it on a busy CPU (`BPF_PROG_TEST_RUN` with
    /// `BPF_F_TEST_RUN_ON_CPU`) to charge the slice running there up to that moment.
    pub const CHARGE_RUNNING: &str = "kepler_charge_running";
    /// `tp_btf/sched_switch` program that does nothing (benchmarks: the per-switch floor).
    pub const SCHED_SWITCH_FLOOR: &str = "kepler_sched_switch_floor";
    /// `tp_btf/sched_process_exit` program.
    pub const SCHED_PROCESS_EXIT: &str = "kepler_sched_process_exit";
    /// `PERF_EVENT_ARRAY` indexed by CPU: CPU-wide cycles counters opened by userspace.
    pub const CYCLES: &str = "CYCLES";
    /// `PERF_EVENT_ARRAY` indexed by CPU: CPU-wide instructions counters opened by userspace.
    pub const INSTRUCTIONS: &str = "INSTRUCTIONS";
    /// `.rodata` `u32` set at load time: 1 when both counter arrays hold an event for every CPU.
    pub const COUNTERS_LIVE: &str = "COUNTERS_LIVE";
    /// `.rodata` [`KernelOffsets`](super::KernelOffsets) set at load time from the kernel's BTF.
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
}

/// Byte offsets of the kernel fields the switch program reads through the tracepoint's typed task
/// pointers (`tp_btf` loads, no helper call), found by the loader in the running kernel's BTF and
/// set in `.rodata` before the program is verified: the verifier sees them as constants and checks
/// every load against the kernel's types. All 0 (the value in the object) means not set, and then
/// the switch program records nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// `task_struct.pid` (0 for a CPU's idle task).
    pub task_pid: u64,
    /// `task_struct.tgid`.
    pub task_tgid: u64,
    /// `task_struct.se.sum_exec_runtime`: the task's run time as the scheduler counts it (ns).
    pub task_sum_exec_runtime: u64,
    /// `task_struct.se.exec_start`: the CPU's task clock at the task's last accounting update (ns).
    pub task_exec_start: u64,
    /// `task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u64,
    /// `css_set.dfl_cgrp` (`struct cgroup *`, the cgroup v2 cgroup).
    pub css_set_dfl_cgrp: u64,
    /// `cgroup.kn` (`struct kernfs_node *`).
    pub cgroup_kn: u64,
    /// `kernfs_node.id`: the cgroup id (the inode number of its directory).
    pub kernfs_node_id: u64,
}

impl KernelOffsets {
    /// Not set: what the object holds until the loader writes the kernel's offsets.
    pub const UNSET: KernelOffsets = KernelOffsets {
        task_pid: 0,
        task_tgid: 0,
        task_sum_exec_runtime: 0,
        task_exec_start: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
    };
}

/// Capacity of `TASK_TIME` (entries, each with one value per possible CPU). A node with more
/// (process, cgroup) pairs running within one tick drops the excess, counted in `CpuState::dropped`.
pub const TASK_TIME_ENTRIES: u32 = 16_384;
/// Capacity of `EXITED`.
pub const EXITED_ENTRIES: u32 = 8_192;
/// Cgroup v2 ancestor levels recorded when an entry is created (levels 1..=ANCESTOR_LEVELS).
/// Kubelet's pod cgroups sit at level 2 or 3 (deeper on nested nodes such as kind).
pub const ANCESTOR_LEVELS: usize = 6;

/// Key of `TASK_TIME`: a process (thread-group id) in a cgroup v2 cgroup. A process that moves to
/// another cgroup gets a second entry, so time before the move stays with the old cgroup.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TaskKey {
    pub tgid: u32,
    pub _pad: u32,
    /// `bpf_get_current_cgroup_id()`: the inode number of the cgroup v2 directory.
    pub cgroup_id: u64,
}

/// Value of `TASK_TIME` (per CPU).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskTime {
    /// Nanoseconds on this CPU since the entry was created (the last drain).
    pub on_cpu_ns: u64,
    /// Times the process was switched out on this CPU.
    pub switches: u64,
    /// CPU cycles and instructions during those slices (0 unless the counters are live).
    pub cycles: u64,
    pub instructions: u64,
    /// Cgroup v2 ids of the ancestors at levels 1..=ANCESTOR_LEVELS (0 where the cgroup is shallower),
    /// written when the entry is created: they let userspace find the pod of a container cgroup that
    /// was removed before the drain.
    pub ancestors: [u64; ANCESTOR_LEVELS],
}

/// Slots of the per-CPU run cache (a power of two: the slot of a process is `tgid % PENDING_SLOTS`).
pub const PENDING_SLOTS: usize = 32;
/// A slot's time is moved into `TASK_TIME` at the first switch of its process (or at the sweep of
/// the slot) once its first slice started this long ago, at once for a slice this long, and whenever
/// another process needs the slot. This bounds how much on-CPU time waits in the cache.
pub const PENDING_FLUSH_NS: u64 = 1_000_000;

/// One slot of the per-CPU run cache: the on-CPU time of one process on this CPU not yet added to
/// `TASK_TIME`. Consecutive slices of the same few processes on a CPU (a thread pool, a process
/// alternating with idle, two processes ping-ponging) add here without a hash lookup.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pending {
    pub tgid: u32,
    pub _pad: u32,
    /// The process's cgroup v2 id when the slot was filled.
    pub cgroup_id: u64,
    /// Nanoseconds pending (0: the slot is empty).
    pub on_cpu_ns: u64,
    pub switches: u64,
    pub cycles: u64,
    pub instructions: u64,
    /// The CPU's task clock (`se.exec_start` of the process) at the end of the slot's first slice:
    /// when its window started.
    pub since_ns: u64,
    /// Cgroup v2 ancestors of the process at levels 1..=ANCESTOR_LEVELS, captured when the slot was
    /// filled (the process was `current` then; at flush time it may not be).
    pub ancestors: [u64; ANCESTOR_LEVELS],
}

/// Per-CPU state and counters (`CPU_STATE[0]`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuState {
    /// The task this CPU switched to last (its `task_struct` address; 0 before the first switch):
    /// compared with the next switch's outgoing task, never dereferenced.
    pub running_task: u64,
    /// `se.sum_exec_runtime` of `running_task` up to which its run time has been charged: its value
    /// when the task was switched in, moved on by each charge of the running slice.
    pub charged_exec_ns: u64,
    /// Context switches seen (every one: the program does not sample).
    pub switches: u64,
    /// Slices that could not be recorded because `TASK_TIME` was full.
    pub dropped: u64,
    /// Their nanoseconds.
    pub dropped_ns: u64,
    /// Exits that could not be recorded because `EXITED` was full.
    pub exits_dropped: u64,
    /// Slices added to the run cache without a `TASK_TIME` lookup (hits that did not flush).
    pub cached: u64,
    /// 1 while this CPU runs its idle task (the last switch's next task has pid 0): there is no
    /// running slice to charge, and userspace does not interrupt (wake) the CPU.
    pub on_idle: u64,
    /// Times `CHARGE_RUNNING` ran on this CPU and charged its running slice up to then.
    pub charges: u64,
    /// Cycles and instructions counters of this CPU at the last switch (counters live only), and
    /// the time each counter had been running then (a counter that stopped running, e.g. not
    /// scheduled on the PMU, reads as an error).
    pub last_cycles: u64,
    pub last_instructions: u64,
    pub last_cycles_running: u64,
    pub last_instructions_running: u64,
    /// Counter reads that failed or found the counter not running (the slice then gets no cycles or
    /// instructions; userspace splits that drain by time).
    pub counter_errors: u64,
    /// Cgroup id whose ancestors `memo_ancestors` holds (0: none yet): filling a slot for a process
    /// of the same cgroup as the last one copies them instead of asking the kernel again.
    pub memo_cgroup_id: u64,
    pub memo_ancestors: [u64; ANCESTOR_LEVELS],
    /// The run cache.
    pub pending: [Pending; PENDING_SLOTS],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: #[repr(C)], integer fields only, explicit padding, any bit pattern valid.
    unsafe impl aya::Pod for super::TaskKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TaskTime {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Pending {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<TaskKey>(), 16);
        assert_eq!(size_of::<TaskTime>(), 32 + 8 * ANCESTOR_LEVELS);
        assert_eq!(size_of::<Pending>(), 56 + 8 * ANCESTOR_LEVELS);
        assert_eq!(
            size_of::<CpuState>(),
            120 + 8 * ANCESTOR_LEVELS + PENDING_SLOTS * size_of::<Pending>()
        );
        assert!(PENDING_SLOTS.is_power_of_two());
        assert_eq!(align_of::<TaskTime>(), 8);
        assert_eq!(size_of::<KernelOffsets>(), 64);
    }
}
