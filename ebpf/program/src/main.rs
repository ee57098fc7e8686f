//! kepler-rs eBPF program: on every `sched_switch`, the nanoseconds since the previous switch on this
//! CPU go to the task being switched out (`current` in this tracepoint), keyed by its process (tgid)
//! and cgroup v2 id, in a per-CPU hash that userspace drains once per tick. No sampling, no struct
//! access, no locks; a full map is counted, never silent. Built by `ebpf/build.sh`.
#![no_std]
#![no_main]

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_ktime_get_ns,
};
use aya_ebpf::macros::{btf_tracepoint, map};
use aya_ebpf::maps::{HashMap, PerCpuArray, PerCpuHashMap};
use aya_ebpf::programs::BtfTracePointContext;
use kepler_ebpf_common::{
    CpuState, TaskKey, TaskTime, ANCESTOR_LEVELS, EXITED_ENTRIES, TASK_TIME_ENTRIES,
};

#[map(name = "TASK_TIME")]
static TASK_TIME: PerCpuHashMap<TaskKey, TaskTime> =
    PerCpuHashMap::with_max_entries(TASK_TIME_ENTRIES, 0);

#[map(name = "CPU_STATE")]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "EXITED")]
static EXITED: HashMap<u32, u64> = HashMap::with_max_entries(EXITED_ENTRIES, 0);

#[btf_tracepoint(function = "sched_switch")]
pub fn kepler_sched_switch(_ctx: BtfTracePointContext) -> i32 {
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU slot, and tracing programs do not nest on one CPU for this tracepoint.
    let state = unsafe { &mut *state };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let last = state.last_switch_ns;
    state.last_switch_ns = now;
    state.switches += 1;
    if last == 0 || now <= last {
        return 0; // first switch seen on this CPU: the slice's start is unknown
    }
    let slice_ns = now - last;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == 0 {
        return 0; // the idle task
    }
    let key = TaskKey {
        tgid,
        _pad: 0,
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    if add(&key, slice_ns) {
        return 0;
    }
    let mut value = TaskTime {
        on_cpu_ns: slice_ns,
        switches: 1,
        ancestors: [0; ANCESTOR_LEVELS],
    };
    let mut level = 0;
    while level < ANCESTOR_LEVELS {
        // SAFETY: helper without preconditions; returns 0 above the cgroup's own level.
        value.ancestors[level] = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32 + 1) };
        level += 1;
    }
    if TASK_TIME.insert(&key, &value, BPF_NOEXIST.into()).is_ok() {
        return 0;
    }
    // Another CPU may have created the entry in between (EEXIST); otherwise the map is full.
    if !add(&key, slice_ns) {
        state.dropped += 1;
        state.dropped_ns += slice_ns;
    }
    0
}

/// Adds a slice to an existing entry; false when there is none.
#[inline(always)]
fn add(key: &TaskKey, slice_ns: u64) -> bool {
    match TASK_TIME.get_ptr_mut(key) {
        Some(time) => {
            // SAFETY: this CPU's value of a live entry.
            unsafe {
                (*time).on_cpu_ns += slice_ns;
                (*time).switches += 1;
            }
            true
        }
        None => false,
    }
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn kepler_sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 != tgid {
        return 0; // a thread, not the process
    }
    if let Some(exits) = EXITED.get_ptr_mut(&tgid) {
        // SAFETY: a live entry; a lost increment under a race only matters as "exited at least once".
        unsafe { *exits += 1 };
        return 0;
    }
    if EXITED.insert(&tgid, &1, 0).is_err() {
        if let Some(state) = CPU_STATE.get_ptr_mut(0) {
            // SAFETY: this CPU's slot.
            unsafe { (*state).exits_dropped += 1 };
        }
    }
    0
}

/// Does nothing. Only the overhead benchmark attaches it (alone) to measure what any sched_switch
/// program costs on a machine: the floor under `kepler_sched_switch`. The exporter never loads it.
#[btf_tracepoint(function = "sched_switch")]
pub fn kepler_sched_switch_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
