//! kepler-rs eBPF program: on every `sched_switch`, the run time of the slice that ends (what the
//! scheduler added to the outgoing task's `se.sum_exec_runtime` since it was switched in) goes to
//! that task, keyed by its process (tgid) and cgroup v2 id, in a per-CPU hash that userspace drains
//! once per tick. The task's fields are read through the tracepoint's typed pointers at offsets the
//! loader found in the kernel's BTF (`KERNEL_OFFSETS`), so the hot path calls no helper. A small per-CPU run
//! cache in front of the hash (`CpuState::pending`, one slot per `tgid % PENDING_SLOTS`) absorbs
//! consecutive slices of the same processes, so most switches cost no hash lookup; a slot is moved
//! into the hash when another process needs it or once its first slice is `PENDING_FLUSH_NS` old.
//! Before each drain userspace runs `kepler_charge_running` on every busy CPU, which charges the
//! slice still running there, so a task that is rarely switched out is counted in every drain.
//! No sampling, no locks; a full map is counted, never silent. Built by `ebpf/build.sh`.
#![no_std]
#![no_main]

use aya_ebpf::bindings::{bpf_perf_event_value, BPF_F_CURRENT_CPU, BPF_NOEXIST};
use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task,
    bpf_perf_event_read_value, bpf_probe_read_kernel,
};
use aya_ebpf::macros::{btf_tracepoint, map, raw_tracepoint};
use aya_ebpf::maps::{HashMap, PerCpuArray, PerCpuHashMap, PerfEventArray};
use aya_ebpf::programs::{BtfTracePointContext, RawTracePointContext};
use kepler_ebpf_common::{
    CpuState, KernelOffsets, Pending, TaskKey, TaskTime, ANCESTOR_LEVELS, EXITED_ENTRIES,
    PENDING_FLUSH_NS, PENDING_SLOTS, TASK_TIME_ENTRIES,
};

/// Slices at least this long check the process's cgroup on a cache hit (four dependent loads, a
/// measurable part of a short slice's cost).
const CHECK_CGROUP_NS: u64 = 100_000;

#[map(name = "TASK_TIME")]
static TASK_TIME: PerCpuHashMap<TaskKey, TaskTime> =
    PerCpuHashMap::with_max_entries(TASK_TIME_ENTRIES, 0);

#[map(name = "CPU_STATE")]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "EXITED")]
static EXITED: HashMap<u32, u64> = HashMap::with_max_entries(EXITED_ENTRIES, 0);

/// CPU-wide cycles and instructions counters, one per CPU, opened and inserted by userspace where
/// the machine has a PMU. Read only when `COUNTERS_LIVE` is 1.
#[map(name = "CYCLES")]
static CYCLES: PerfEventArray<u32> = PerfEventArray::new(0);
#[map(name = "INSTRUCTIONS")]
static INSTRUCTIONS: PerfEventArray<u32> = PerfEventArray::new(0);

/// Set by the loader (`.rodata`): 1 when both counter arrays are filled. The verifier sees the
/// frozen value and removes the counter reads entirely when it is 0.
#[unsafe(no_mangle)]
static COUNTERS_LIVE: u32 = 0;

/// Set by the loader (`.rodata`) from the kernel's BTF; frozen, so the verifier knows every offset
/// and checks each load against the kernel's types.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::UNSET;

/// The field of type `T` at the `.rodata` offset `offset` of the kernel object at `base`. `base` must
/// be a typed (BTF) pointer the verifier knows: it rejects a load that is not a field of its type.
#[inline(always)]
fn field<T: Copy>(base: *const u8, offset: &'static u64) -> T {
    // SAFETY: `offset` is a .rodata constant; the load is checked by the verifier against the
    // kernel's type of `base` and, as a load through a BTF pointer, cannot fault.
    unsafe {
        let offset = core::ptr::read_volatile(offset) as usize;
        core::ptr::read_volatile(base.wrapping_add(offset) as *const T)
    }
}

/// The cgroup v2 id of `task` (a typed pointer): `task->cgroups->dfl_cgrp->kn->id`, what
/// `bpf_get_current_cgroup_id` returns for the current task.
#[inline(always)]
fn task_cgroup_id(task: *const u8) -> u64 {
    let css_set: *const u8 = field(task, &KERNEL_OFFSETS.task_cgroups);
    let cgroup: *const u8 = field(css_set, &KERNEL_OFFSETS.css_set_dfl_cgrp);
    let kn: *const u8 = field(cgroup, &KERNEL_OFFSETS.cgroup_kn);
    field(kn, &KERNEL_OFFSETS.kernfs_node_id)
}

#[btf_tracepoint(function = "sched_switch")]
pub fn kepler_sched_switch(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: reading a .rodata constant (0 until the loader sets the offsets).
    if unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS.task_sum_exec_runtime) } == 0 {
        return 0;
    }
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU slot; this tracepoint runs with interrupts off, so neither it nor the
    // charge program (run in an interrupt on this CPU) can interleave with it.
    let state = unsafe { &mut *state };
    // Arguments 1 and 2 of sched_switch: `prev` (switched out, still `current`) and `next`.
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // The scheduler has just brought prev's run time and its clock up to date.
    let prev_exec: u64 = field(prev, &KERNEL_OFFSETS.task_sum_exec_runtime);
    let now: u64 = field(prev, &KERNEL_OFFSETS.task_exec_start);
    let charged = state.charged_exec_ns;
    let running = state.running_task;
    state.running_task = next as u64;
    state.charged_exec_ns = field(next, &KERNEL_OFFSETS.task_sum_exec_runtime);
    let next_pid: u32 = field(next, &KERNEL_OFFSETS.task_pid);
    state.on_idle = u64::from(next_pid == 0);
    state.switches += 1;
    let (cycles, instructions) = counter_deltas(state);
    // Sweep one slot per switch, round robin over all of them (idle and first switches included),
    // so time of a process that stopped running on this CPU waits at most PENDING_SLOTS switches
    // after it is due.
    let sweep = state.switches as usize & (PENDING_SLOTS - 1);
    if let Some(other) = state.pending.get_mut(sweep) {
        if other.on_cpu_ns != 0 && now.wrapping_sub(other.since_ns) >= PENDING_FLUSH_NS {
            flush(other, &mut state.dropped, &mut state.dropped_ns);
        }
    }
    if running != prev as u64 || prev_exec < charged {
        return 0; // first switch seen on this CPU: the slice's start is unknown
    }
    let tgid: u32 = field(prev, &KERNEL_OFFSETS.task_tgid);
    if tgid == 0 {
        return 0; // the idle task
    }
    record(
        state,
        tgid,
        prev_exec - charged,
        now,
        || task_cgroup_id(prev),
        cycles,
        instructions,
        1,
    );
    0
}

/// Never attached. Userspace runs it on each CPU that runs a task (not idle), just before each
/// drain (`BPF_PROG_TEST_RUN` on that CPU: an interrupt there, or this CPU with preemption off), so
/// that `current` is the running task. It charges the slice so far (the task's run time up to the
/// scheduler's last update of it, at most a scheduler tick ago), as if the task had been switched
/// out, then moves every slot of the run cache into `TASK_TIME`. The charged-until mark is
/// `charged_exec_ns`: this program and the switch program both run on the CPU they account with
/// interrupts off, one after the other, so each nanosecond of the task's run time is charged
/// exactly once.
#[raw_tracepoint(tracepoint = "kepler_charge_running")]
pub fn kepler_charge_running(_ctx: RawTracePointContext) -> i32 {
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU slot; see above for why nothing else runs on it meanwhile.
    let state = unsafe { &mut *state };
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let exec = read_kernel(task, &KERNEL_OFFSETS.task_sum_exec_runtime);
    let now = read_kernel(task, &KERNEL_OFFSETS.task_exec_start);
    let charged = state.charged_exec_ns;
    if state.running_task == task && exec > charged {
        state.charged_exec_ns = exec;
        state.charges += 1;
        let (cycles, instructions) = counter_deltas(state);
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if tgid != 0 {
            record(
                state,
                tgid,
                exec - charged,
                now,
                // SAFETY: helper without preconditions.
                || unsafe { bpf_get_current_cgroup_id() },
                cycles,
                instructions,
                0,
            );
        }
    }
    let mut index = 0;
    while index < PENDING_SLOTS {
        if let Some(slot) = state.pending.get_mut(index) {
            if slot.on_cpu_ns != 0 {
                flush(slot, &mut state.dropped, &mut state.dropped_ns);
            }
        }
        index += 1;
    }
    0
}

/// The `u64` at the `.rodata` offset `offset` of the kernel object at address `base` (an untyped
/// address: the charge program's `current`), or 0 when it cannot be read.
#[inline(always)]
fn read_kernel(base: u64, offset: &'static u64) -> u64 {
    let mut value: u64 = 0;
    // SAFETY: reading a .rodata constant; the helper checks the kernel address and writes 8 bytes
    // into `value`.
    unsafe {
        let offset = core::ptr::read_volatile(offset);
        if bpf_probe_read_kernel(
            &mut value as *mut u64 as *mut c_void,
            8,
            base.wrapping_add(offset) as *const c_void,
        ) != 0
        {
            return 0;
        }
    }
    value
}

/// Cycles and instructions of this CPU since the last switch or charge ((0, 0) unless the
/// counters are live).
#[inline(always)]
fn counter_deltas(state: &mut CpuState) -> (u64, u64) {
    // SAFETY: reading a .rodata constant.
    if unsafe { core::ptr::read_volatile(&COUNTERS_LIVE) } == 1 {
        (
            counter_delta(
                &CYCLES,
                &mut state.last_cycles,
                &mut state.last_cycles_running,
                &mut state.counter_errors,
            ),
            counter_delta(
                &INSTRUCTIONS,
                &mut state.last_instructions,
                &mut state.last_instructions_running,
                &mut state.counter_errors,
            ),
        )
    } else {
        (0, 0)
    }
}

/// Gives a slice of `slice_ns` of process `tgid` (`current`), ending at `now` on the CPU's task
/// clock, to its run-cache slot, counted as `switched` switches (1 at a switch, 0 for a charge of a
/// slice still running). `cgroup_id` reads the process's cgroup id, only when it is needed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record(
    state: &mut CpuState,
    tgid: u32,
    slice_ns: u64,
    now: u64,
    cgroup_id: impl Fn() -> u64,
    cycles: u64,
    instructions: u64,
    switched: u64,
) {
    let index = tgid as usize & (PENDING_SLOTS - 1);
    let Some(slot) = state.pending.get_mut(index) else {
        return;
    };
    if slot.on_cpu_ns != 0 && slot.tgid == tgid {
        // A hit while the slot's window is fresh. A short slice is taken to be in the slot's cgroup
        // (a process that moved keeps its old cgroup for at most the rest of the window); a long
        // one is checked, the four loads' cost being small against it.
        if now.wrapping_sub(slot.since_ns) < PENDING_FLUSH_NS
            && (slice_ns < CHECK_CGROUP_NS || cgroup_id() == slot.cgroup_id)
        {
            slot.on_cpu_ns += slice_ns;
            slot.switches += switched;
            slot.cycles += cycles;
            slot.instructions += instructions;
            state.cached += switched;
            return;
        }
        // The window is over (or the process is in another cgroup now, or this is a reused pid):
        // the slot's time goes to the map and this slice starts a new window.
    }
    if slot.on_cpu_ns != 0 {
        flush(slot, &mut state.dropped, &mut state.dropped_ns);
    }
    fill(
        slot,
        tgid,
        cgroup_id(),
        slice_ns,
        now,
        &mut state.memo_cgroup_id,
        &mut state.memo_ancestors,
    );
    slot.switches = switched;
    slot.cycles = cycles;
    slot.instructions = instructions;
    if slice_ns >= PENDING_FLUSH_NS {
        // A long slice goes to the map at once: the cache only holds the last millisecond or so.
        flush(slot, &mut state.dropped, &mut state.dropped_ns);
    }
}

/// How far this CPU's counter in `array` moved since the last switch: 0 on the first read, when it
/// went backwards, and (counted in `errors`) when the read failed or the counter was not running
/// since the last switch (the next good read then also covers the gap).
#[inline(always)]
fn counter_delta(
    array: &PerfEventArray<u32>,
    last: &mut u64,
    last_running: &mut u64,
    errors: &mut u64,
) -> u64 {
    let mut value = bpf_perf_event_value {
        counter: 0,
        enabled: 0,
        running: 0,
    };
    // SAFETY: `array` is a PERF_EVENT_ARRAY map definition (PerfEventArray is a transparent
    // wrapper of it) and `value` is a writable bpf_perf_event_value of the size given.
    let rc = unsafe {
        bpf_perf_event_read_value(
            array as *const PerfEventArray<u32> as *mut c_void,
            BPF_F_CURRENT_CPU,
            &mut value,
            core::mem::size_of::<bpf_perf_event_value>() as u32,
        )
    };
    if rc != 0 {
        *errors += 1;
        return 0;
    }
    let previous = *last;
    let previous_running = *last_running;
    *last = value.counter;
    *last_running = value.running;
    if previous != 0 && value.running <= previous_running {
        *errors += 1;
        return 0;
    }
    if previous == 0 || value.counter < previous {
        0
    } else {
        value.counter - previous
    }
}

/// Starts a slot for `current` (the task being switched out). Its cgroup's ancestors come from the
/// per-CPU memo when the cgroup is the memo's, else from the kernel (stopping at the cgroup's own
/// level), and then become the memo.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill(
    slot: &mut Pending,
    tgid: u32,
    cgroup_id: u64,
    slice_ns: u64,
    window_start: u64,
    memo_cgroup_id: &mut u64,
    memo_ancestors: &mut [u64; ANCESTOR_LEVELS],
) {
    slot.tgid = tgid;
    slot.cgroup_id = cgroup_id;
    slot.on_cpu_ns = slice_ns;
    slot.switches = 1;
    slot.since_ns = window_start;
    if cgroup_id != *memo_cgroup_id {
        let mut level = 0;
        while level < ANCESTOR_LEVELS {
            // SAFETY: helper without preconditions; returns 0 above the cgroup's own level.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32 + 1) };
            memo_ancestors[level] = id;
            level += 1;
            if id == 0 || id == cgroup_id {
                break;
            }
        }
        while level < ANCESTOR_LEVELS {
            memo_ancestors[level] = 0;
            level += 1;
        }
        *memo_cgroup_id = cgroup_id;
    }
    slot.ancestors = *memo_ancestors;
}

/// Moves a slot's time into `TASK_TIME` and empties it; a full map counts it as dropped.
#[inline(always)]
fn flush(slot: &mut Pending, dropped: &mut u64, dropped_ns: &mut u64) {
    let key = TaskKey {
        tgid: slot.tgid,
        _pad: 0,
        cgroup_id: slot.cgroup_id,
    };
    let value = TaskTime {
        on_cpu_ns: slot.on_cpu_ns,
        switches: slot.switches,
        cycles: slot.cycles,
        instructions: slot.instructions,
        ancestors: slot.ancestors,
    };
    slot.on_cpu_ns = 0;
    slot.switches = 0;
    if add(&key, &value) {
        return;
    }
    if TASK_TIME.insert(&key, &value, BPF_NOEXIST.into()).is_ok() {
        return;
    }
    // Another CPU may have created the entry in between (EEXIST); otherwise the map is full.
    if !add(&key, &value) {
        *dropped += value.switches;
        *dropped_ns += value.on_cpu_ns;
    }
}

/// Adds a flushed slot to an existing entry; false when there is none.
#[inline(always)]
fn add(key: &TaskKey, value: &TaskTime) -> bool {
    match TASK_TIME.get_ptr_mut(key) {
        Some(time) => {
            // SAFETY: this CPU's value of a live entry.
            unsafe {
                (*time).on_cpu_ns += value.on_cpu_ns;
                (*time).switches += value.switches;
                (*time).cycles += value.cycles;
                (*time).instructions += value.instructions;
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
