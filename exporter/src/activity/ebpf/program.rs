//! The loaded eBPF object: loads the embedded program with aya against the kernel's BTF, attaches
//! `tp_btf/sched_switch` and `tp_btf/sched_process_exit`, and drains its maps with batch
//! lookup-and-delete. It knows map layouts, not pods: resolution lives in `resolve`.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::{BtfTracePoint, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use kepler_ebpf_common::{
    names, CpuState, KernelOffsets, TaskKey, TaskTime, ANCESTOR_LEVELS, EXITED_ENTRIES,
    TASK_TIME_ENTRIES,
};

use super::batch::BatchBuffers;
use super::btf_ids;
use super::charge::{self, Charged};
use super::counters::{CounterKind, Counters};
use super::{Error, Result};

/// Entries moved per `bpf(2)` call. With the per-CPU values of every possible CPU in the buffer, this
/// bounds the buffer at `DRAIN_CHUNK * 64 B * CPUs` (8 MiB on a 128-CPU node).
const DRAIN_CHUNK: usize = 1024;

/// The `tp_btf` programs and the kernel typedef that names each one's tracepoint (`btf_trace_<name>`:
/// its id in the kernel's BTF is the program's attach id).
const TRACEPOINTS: [(&str, &str); 2] = [
    (names::SCHED_SWITCH, "btf_trace_sched_switch"),
    (names::SCHED_PROCESS_EXIT, "btf_trace_sched_process_exit"),
];

/// The kernel struct members the switch program reads (`(struct, member)`), in the order
/// [`kernel_offsets`] combines them.
pub(crate) const KERNEL_FIELDS: [(&str, &str); 9] = [
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "se"),
    ("sched_entity", "sum_exec_runtime"),
    ("sched_entity", "exec_start"),
    ("task_struct", "cgroups"),
    ("css_set", "dfl_cgrp"),
    ("cgroup", "kn"),
    ("kernfs_node", "id"),
];

/// What the program needs from the kernel's BTF at `btf_path`: the attach ids of `TRACEPOINTS`
/// and the offsets of the fields it reads. Public for the overhead benchmark, which loads other
/// builds of the program the same way.
pub fn kernel_btf(btf_path: &Path) -> Result<([u32; 2], KernelOffsets)> {
    if !btf_path.exists() {
        return Err(Error::NoBtf {
            path: btf_path.to_path_buf(),
        });
    }
    let (attach_ids, fields) = btf_ids::kernel_ids(
        btf_path,
        TRACEPOINTS.map(|(_, typedef)| typedef),
        KERNEL_FIELDS,
    )
    .map_err(Error::Btf)?;
    Ok((attach_ids, kernel_offsets(fields)))
}

/// The program's offsets from the members of `KERNEL_FIELDS`, in its order (`se`'s fields are
/// nested in `task_struct`).
fn kernel_offsets(
    [pid, tgid, se, sum_exec_runtime, exec_start, cgroups, dfl_cgrp, kn, id]: [u32; 9],
) -> KernelOffsets {
    KernelOffsets {
        task_pid: pid.into(),
        task_tgid: tgid.into(),
        task_sum_exec_runtime: u64::from(se) + u64::from(sum_exec_runtime),
        task_exec_start: u64::from(se) + u64::from(exec_start),
        task_cgroups: cgroups.into(),
        css_set_dfl_cgrp: dfl_cgrp.into(),
        cgroup_kn: kn.into(),
        kernfs_node_id: id.into(),
    }
}

/// One drained entry: a process in a cgroup, its time summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSlice {
    pub tgid: u32,
    pub cgroup_id: u64,
    pub(crate) ancestors: [u64; ANCESTOR_LEVELS],
    pub on_cpu_ns: u64,
    pub switches: u64,
    /// CPU cycles and instructions (0 unless the program's counters are live).
    pub cycles: u64,
    pub instructions: u64,
}

/// What one drain returned.
#[derive(Debug, Default)]
pub struct Drained {
    pub tasks: Vec<TaskSlice>,
    pub(crate) exited: HashSet<u32>,
    /// `bpf(2)` calls it took (both maps).
    pub(crate) syscalls: u32,
}

/// The loaded and attached program. Dropping it detaches and unloads everything.
pub struct LoadedProgram {
    /// Owns the programs and their links.
    _ebpf: Ebpf,
    task_time: Map,
    exited: Map,
    cpu_state: PerCpuArray<MapData, CpuState>,
    task_buffers: BatchBuffers,
    exited_buffers: BatchBuffers,
    cpus: usize,
    /// The perf events the program reads (kept open for as long as it runs), if any.
    counters: Option<Counters>,
}

impl std::fmt::Debug for LoadedProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProgram")
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

impl LoadedProgram {
    /// Loads `object` (an ELF built by ebpf/build.sh), with the tracepoints' type ids from the BTF at
    /// `btf_path` (`<sysfs>/kernel/btf/vmlinux`), and attaches both programs.
    pub fn load(object: &[u8], btf_path: &Path) -> Result<LoadedProgram> {
        Self::load_with_counters(object, btf_path, None)
    }

    /// `load`, with CPU-wide cycles/instructions counters for the program to read at every switch
    /// (installed before the programs attach, so no switch sees empty counter maps).
    pub fn load_with_counters(
        object: &[u8],
        btf_path: &Path,
        counters: Option<Counters>,
    ) -> Result<LoadedProgram> {
        // The kernel's BTF is needed only for the tracepoints' attach ids and the offsets of the
        // fields the program reads: the object has no BTF relocations. They are found by a walk of
        // the file in small chunks, and the loader is made without BTF (`EbpfLoader::new` would
        // parse the whole of /sys/kernel/btf/vmlinux, ~19 MiB for a 5.5 MiB file, for nothing).
        let (attach_ids, offsets) = kernel_btf(btf_path)?;
        let mut loader = EbpfLoader::without_btf();
        loader.override_global(names::KERNEL_OFFSETS, &offsets, true);
        let live: u32 = 1;
        if counters.is_some() {
            loader.override_global(names::COUNTERS_LIVE, &live, true);
        }
        let mut ebpf = loader.load(object).map_err(|e| Error::Load(Box::new(e)))?;
        drop(loader);
        if let Some(counters) = &counters {
            let fd = |name: &'static str| -> Result<std::os::fd::BorrowedFd<'_>> {
                match ebpf.map(name) {
                    Some(Map::PerfEventArray(data)) => Ok(data.fd().as_fd()),
                    _ => Err(Error::MissingInObject { name }),
                }
            };
            counters
                .install(fd(names::CYCLES)?, fd(names::INSTRUCTIONS)?)
                .map_err(Error::Counters)?;
        }
        for ((program, _), attach_id) in TRACEPOINTS.into_iter().zip(attach_ids) {
            let prog: &mut BtfTracePoint = program_mut(&mut ebpf, program)?;
            prog.load_with_btf_id(attach_id)
                .map_err(|e| program_error(program, e))?;
            prog.attach().map_err(|e| Error::Attach {
                program,
                source: Box::new(e),
            })?;
        }
        // Loaded, never attached: `charge_running` runs it on busy CPUs.
        let charge: &mut RawTracePoint = program_mut(&mut ebpf, names::CHARGE_RUNNING)?;
        charge
            .load()
            .map_err(|e| program_error(names::CHARGE_RUNNING, e))?;
        let task_time = take_map(&mut ebpf, names::TASK_TIME)?;
        let exited = take_map(&mut ebpf, names::EXITED)?;
        let cpu_state = take_map(&mut ebpf, names::CPU_STATE)?;
        // Layout checks: a key or value size that differs from the shared types fails here.
        PerCpuHashMap::<&MapData, TaskKey, TaskTime>::try_from(&task_time)
            .map_err(|e| map_error(names::TASK_TIME, e))?;
        aya::maps::HashMap::<&MapData, u32, u64>::try_from(&exited)
            .map_err(|e| map_error(names::EXITED, e))?;
        let cpu_state = PerCpuArray::<MapData, CpuState>::try_from(cpu_state)
            .map_err(|e| map_error(names::CPU_STATE, e))?;
        let cpus = aya::util::nr_cpus().map_err(|(path, source)| Error::Cpus { path, source })?;
        Ok(LoadedProgram {
            _ebpf: ebpf,
            task_time,
            exited,
            cpu_state,
            task_buffers: BatchBuffers::new(
                size_of::<TaskKey>(),
                size_of::<TaskTime>(),
                cpus,
                DRAIN_CHUNK.min(TASK_TIME_ENTRIES as usize),
            ),
            exited_buffers: BatchBuffers::new(4, 8, 1, EXITED_ENTRIES as usize),
            cpus,
            counters,
        })
    }

    /// The counters the program reads at every switch, if any.
    pub fn counters(&self) -> Option<CounterKind> {
        self.counters.as_ref().map(Counters::kind)
    }

    /// Charges the slice running on each busy CPU up to now (see `charge`), so that the next drain
    /// holds the time of tasks that have not been switched out since. Idle CPUs are not woken.
    pub fn charge_running(&mut self) -> Result<Charged> {
        let states = self
            .cpu_state
            .get(&0, 0)
            .map_err(|e| map_error(names::CPU_STATE, e))?;
        let states: Vec<CpuState> = states.iter().copied().collect();
        let cpus = charge::cpus_to_charge(&states);
        let program = names::CHARGE_RUNNING;
        let fd = self
            ._ebpf
            .program(program)
            .ok_or(Error::MissingInObject { name: program })?
            .fd()
            .map_err(|e| program_error(program, e))?
            .as_fd();
        charge::charge(fd, &cpus).map_err(|(cpu, source)| Error::Charge { cpu, source })
    }

    /// Moves everything out of the process and exit maps. A slice still running is not in them
    /// until its task is switched out: call `charge_running` first to have every drain hold the
    /// time of running tasks up to that moment.
    pub fn drain(&mut self, out: &mut Drained) -> Result<()> {
        out.tasks.clear();
        out.exited.clear();
        let cpus = self.cpus;
        let stride = self.task_buffers.value_stride() / cpus.max(1);
        let tasks = &mut out.tasks;
        let fd = map_data(&self.task_time)?.fd().as_fd();
        let calls = self
            .task_buffers
            .drain(fd, |key, values| {
                tasks.push(parse_task(key, values, cpus, stride));
            })
            .map_err(|source| Error::Drain {
                map: names::TASK_TIME,
                source,
            })?;
        let exited = &mut out.exited;
        let fd = map_data(&self.exited)?.fd().as_fd();
        let exit_calls = self
            .exited_buffers
            .drain(fd, |key, _| {
                exited.insert(u32_at(key, 0));
            })
            .map_err(|source| Error::Drain {
                map: names::EXITED,
                source,
            })?;
        out.syscalls = calls + exit_calls;
        Ok(())
    }

    /// The per-CPU counters, summed (`running_task`, `charged_exec_ns`, `on_idle` and `pending`
    /// are left empty: they only mean something per CPU, and the run caches are the program's,
    /// read only as a whole by `pending_ns`).
    pub fn cpu_state(&self) -> Result<CpuState> {
        let values = self
            .cpu_state
            .get(&0, 0)
            .map_err(|e| map_error(names::CPU_STATE, e))?;
        Ok(values
            .iter()
            .fold(CpuState::default(), |sum, cpu| CpuState {
                switches: sum.switches + cpu.switches,
                dropped: sum.dropped + cpu.dropped,
                dropped_ns: sum.dropped_ns + cpu.dropped_ns,
                exits_dropped: sum.exits_dropped + cpu.exits_dropped,
                cached: sum.cached + cpu.cached,
                charges: sum.charges + cpu.charges,
                counter_errors: sum.counter_errors + cpu.counter_errors,
                ..sum
            }))
    }
}

impl LoadedProgram {
    /// The kernel's own accounting of one program: (total run time, runs). Both stay 0 unless
    /// `aya::sys::enable_stats(Stats::RunTime)` (or `sysctl kernel.bpf_stats_enabled=1`) is on.
    pub fn run_stats(&self, program: &'static str) -> Result<(std::time::Duration, u64)> {
        let info = self
            ._ebpf
            .program(program)
            .ok_or(Error::MissingInObject { name: program })?
            .info()
            .map_err(|e| program_error(program, e))?;
        Ok((info.run_time(), info.run_count()))
    }

    /// Writes one entry into the process map as if the program had (benchmarks and tests: a drain
    /// of N live processes without N processes). `values` holds one value per possible CPU.
    pub fn seed(&mut self, key: TaskKey, values: Vec<TaskTime>) -> Result<()> {
        let mut map =
            PerCpuHashMap::<&mut MapData, TaskKey, TaskTime>::try_from(&mut self.task_time)
                .map_err(|e| map_error(names::TASK_TIME, e))?;
        let values = aya::maps::PerCpuValues::try_from(values).map_err(|e| Error::Drain {
            map: names::TASK_TIME,
            source: e,
        })?;
        map.insert(key, values, 0)
            .map_err(|e| map_error(names::TASK_TIME, e))
    }

    pub fn possible_cpus(&self) -> usize {
        self.cpus
    }
}

/// The program `name` of the object, as its type `P`.
fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::MissingInObject { name })?
        .try_into()
        .map_err(|e| program_error(name, e))
}

fn program_error(program: &'static str, source: aya::programs::ProgramError) -> Error {
    Error::Program {
        program,
        source: Box::new(source),
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map> {
    ebpf.take_map(name).ok_or(Error::MissingInObject { name })
}

fn map_data(map: &Map) -> Result<&MapData> {
    match map {
        Map::PerCpuHashMap(data) | Map::HashMap(data) => Ok(data),
        _ => Err(Error::MissingInObject {
            name: "hash map of the expected type",
        }),
    }
}

fn map_error(map: &'static str, source: aya::maps::MapError) -> Error {
    Error::Map {
        map,
        source: Box::new(source),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Parses one entry of `TASK_TIME` from the batch buffers: a `TaskKey`, and `cpus` values of
/// `TaskTime`, `stride` bytes apart. Times and switches are summed; ancestors are taken from whichever
/// CPU created its copy of the entry (the others hold zeros).
pub(crate) fn parse_task(key: &[u8], values: &[u8], cpus: usize, stride: usize) -> TaskSlice {
    let mut task = TaskSlice {
        tgid: u32_at(key, std::mem::offset_of!(TaskKey, tgid)),
        cgroup_id: u64_at(key, std::mem::offset_of!(TaskKey, cgroup_id)),
        ancestors: [0; ANCESTOR_LEVELS],
        on_cpu_ns: 0,
        switches: 0,
        cycles: 0,
        instructions: 0,
    };
    let ancestors_at = std::mem::offset_of!(TaskTime, ancestors);
    for cpu in 0..cpus {
        let base = cpu * stride;
        for (sum, at) in [
            (
                &mut task.on_cpu_ns,
                std::mem::offset_of!(TaskTime, on_cpu_ns),
            ),
            (&mut task.switches, std::mem::offset_of!(TaskTime, switches)),
            (&mut task.cycles, std::mem::offset_of!(TaskTime, cycles)),
            (
                &mut task.instructions,
                std::mem::offset_of!(TaskTime, instructions),
            ),
        ] {
            *sum = sum.saturating_add(u64_at(values, base + at));
        }
        if task.ancestors.iter().all(|a| *a == 0) {
            for (level, ancestor) in task.ancestors.iter_mut().enumerate() {
                *ancestor = u64_at(values, base + ancestors_at + level * 8);
            }
        }
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sums_cpus_and_keeps_the_creating_cpus_ancestors() {
        let mut key = Vec::new();
        key.extend_from_slice(&4242u32.to_ne_bytes());
        key.extend_from_slice(&0u32.to_ne_bytes());
        key.extend_from_slice(&77u64.to_ne_bytes());
        let stride = size_of::<TaskTime>();
        let mut values = vec![0u8; stride * 3];
        let mut put = |cpu: usize, field: usize, v: u64| {
            let at = cpu * stride + field;
            values[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        };
        put(0, 0, 1_000);
        put(0, 8, 2);
        put(0, 16, 3_000); // cycles
        put(2, 0, 500);
        put(2, 8, 1);
        put(2, 16, 1_500);
        put(2, 24, 7); // instructions
        put(2, 32, 11); // ancestors written by CPU 2 only
        put(2, 40, 22);
        let task = parse_task(&key, &values, 3, stride);
        assert_eq!(task.tgid, 4242);
        assert_eq!(task.cgroup_id, 77);
        assert_eq!(task.on_cpu_ns, 1_500);
        assert_eq!(task.switches, 3);
        assert_eq!((task.cycles, task.instructions), (4_500, 7));
        assert_eq!(&task.ancestors[..3], &[11, 22, 0]);
        // Short buffers read as zeros, never panic.
        let short = parse_task(&key[..3], &values[..5], 3, stride);
        assert_eq!((short.tgid, short.on_cpu_ns), (0, 0));
    }
}
