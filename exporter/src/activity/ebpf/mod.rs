//! CPU activity from the eBPF program in `ebpf/`: per-process on-CPU time counted on every context
//! switch, drained once per tick, resolved to pods and containers (see `resolve`). It never falls
//! back by itself: `EbpfActivity::start` fails with a typed error and the caller picks another source.

mod batch;
pub mod btf_ids;
pub(crate) mod charge;
pub mod counters;
pub mod program;
pub mod resolve;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

use super::cgroup::{mounts::CgroupMounts, CgroupActivity};
use super::{ActivitySample, ActivitySource, PodActivity, PodTimes, SourceStats};
use crate::config::{CpuCountersChoice, HostRoots};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::units::{CpuNanos, PodUid};
use counters::{CounterKind, Counters};
use program::{Drained, LoadedProgram, TaskSlice};
use resolve::{Resolver, TaskCgroup};

const INPUT: Input = Input::Ebpf;

/// The compiled program (`ebpf/build.sh` rebuilds it; CI checks it is not stale).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../../../../ebpf/kepler.bpf.o");

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no kernel BTF at {path} (kernel built without CONFIG_DEBUG_INFO_BTF?)")]
    NoBtf { path: PathBuf },
    #[error("cannot find the tracepoints' attach ids and fields in the kernel's BTF: {0}")]
    Btf(#[source] btf_ids::BtfError),
    #[error("cannot load the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("{name} missing from the eBPF object")]
    MissingInObject { name: &'static str },
    #[error("cannot load eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("cannot attach eBPF program {program}: {source}")]
    Attach {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("cannot drain eBPF map {map}: {source}")]
    Drain {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot charge the running slice on CPU {cpu}: {source}")]
    Charge {
        cpu: u32,
        #[source]
        source: io::Error,
    },
    #[error("CPU counters: {0}")]
    Counters(#[source] counters::CounterError),
    #[error("cannot count possible CPUs from {path}: {source}")]
    Cpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Short fixed label for self-metrics and the fallback log line.
    pub(crate) fn kind(&self) -> IssueKind {
        if self.os_error() == Some(libc::EPERM) || self.os_error() == Some(libc::EACCES) {
            return IssueKind::PermissionDenied;
        }
        match self {
            Error::NoBtf { .. } => IssueKind::NoBtf,
            Error::Btf(e) => e.issue_kind(),
            Error::Load(_) => IssueKind::Load,
            Error::MissingInObject { .. } => IssueKind::Object,
            Error::Program { .. } => IssueKind::Verifier,
            Error::Attach { .. } => IssueKind::Attach,
            Error::Map { .. } => IssueKind::Map,
            Error::Drain { .. } => IssueKind::Drain,
            Error::Charge { .. } => IssueKind::Charge,
            Error::Cpus { .. } => IssueKind::Cpus,
            Error::Counters(_) => IssueKind::Counters,
        }
    }

    /// In words, why eBPF is not usable, for the one fallback log line.
    pub(crate) fn reason(&self) -> &'static str {
        match (self, self.kind()) {
            (_, IssueKind::PermissionDenied) => {
                "not permitted (needs CAP_BPF and CAP_PERFMON, or root)"
            }
            (_, IssueKind::NoBtf) => "the kernel has no BTF",
            (Error::Btf(btf_ids::BtfError::MissingMember { .. }), _) => {
                "the kernel's types lack a field the program reads"
            }
            (_, IssueKind::Verifier | IssueKind::Attach) => {
                "the kernel refused the program (kernel older than 5.5, or a verifier rejection)"
            }
            (Error::Btf(_), _) => "the kernel's BTF could not be read",
            _ => "the eBPF object could not be used",
        }
    }

    /// The errno anywhere in the source chain.
    fn os_error(&self) -> Option<i32> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = source {
            if let Some(code) = error
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
            {
                return Some(code);
            }
            source = error.source();
        }
        None
    }
}

/// Cumulative counters of the source, exported as `kepler_exporter_cpu_source_events_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EbpfCounters {
    pub(crate) switches: u64,
    pub(crate) dropped_slices: u64,
    pub(crate) dropped_ns: u64,
    pub(crate) dropped_exits: u64,
    /// Slices added through the program's per-CPU run cache (no hash lookup).
    pub(crate) cached_slices: u64,
    /// Cycles/instructions reads that failed in the program.
    pub(crate) counter_errors: u64,
    /// Slices still running at a drain, charged up to it (one per busy CPU and drain).
    pub(crate) running_charges: u64,
    pub(crate) drained_entries: u64,
    pub(crate) drain_syscalls: u64,
}

/// Pod activity from eBPF on-CPU time.
#[derive(Debug)]
pub(crate) struct EbpfActivity {
    program: LoadedProgram,
    resolver: Resolver,
    drained: Drained,
    counters: EbpfCounters,
    /// Which pods exist, busy or not: eBPF only sees pods that ran, and an idle pod must not be
    /// taken for an ended one (its series would end after the grace period and restart at 0).
    presence: Option<CgroupActivity>,
    /// Exits of the last drains: a process's final slices can reach the map a drain after its exit
    /// (they wait in the program's run cache), and must still count as exited (no /proc lookup of
    /// a pid that may belong to someone else by then).
    recent_exits: ExitMemory,
    /// Whether running slices are charged before each drain; off after the kernel refused to run
    /// the charge program on a CPU (before 5.10): slices are then charged at switch-out only.
    charging: bool,
    /// `<procfs>/sys/kernel/bpf_stats_enabled`: whether the kernel counts programs' run time.
    stats_switch: PathBuf,
    /// Each program's cumulative run time at the last drain while stats were on (else empty).
    run_ns: Vec<(&'static str, u64)>,
}

/// The programs whose run time `kepler_exporter_bpf_run_seconds_total` reports.
const TIMED_PROGRAMS: [&str; 3] = [
    kepler_ebpf_common::names::SCHED_SWITCH,
    kepler_ebpf_common::names::SCHED_PROCESS_EXIT,
    kepler_ebpf_common::names::CHARGE_RUNNING,
];

/// The kernel's internal "operation not supported" errno (`ENOTSUPP`), which `bpf(2)` can return.
const ENOTSUPP: i32 = 524;

/// Drains an exit is remembered for (beyond its own).
const EXIT_MEMORY_DRAINS: usize = 2;

/// The exits of the last `EXIT_MEMORY_DRAINS` drains.
#[derive(Debug, Default)]
struct ExitMemory(std::collections::VecDeque<std::collections::HashSet<u32>>);

impl ExitMemory {
    /// Adds the remembered exits to this drain's, then remembers this drain's own.
    fn extend(&mut self, exited: &mut std::collections::HashSet<u32>) {
        let fresh = exited.clone();
        for earlier in &self.0 {
            exited.extend(earlier.iter().copied());
        }
        self.0.push_back(fresh);
        if self.0.len() > EXIT_MEMORY_DRAINS {
            self.0.pop_front();
        }
    }
}

impl EbpfActivity {
    /// Loads and attaches the embedded program (with cycles/instructions counters where `counters`
    /// asks for them and the machine has them), and indexes the cgroup v2 hierarchy.
    pub(crate) fn start(roots: &HostRoots, counters: CpuCountersChoice) -> Result<EbpfActivity> {
        let btf = roots.sysfs.join("kernel").join("btf").join("vmlinux");
        let kind = match counters {
            CpuCountersChoice::Auto => Some(CounterKind::Hardware),
            CpuCountersChoice::Software => Some(CounterKind::Software),
            CpuCountersChoice::Off => None,
        };
        let (opened, why_not) = match kind.map(|k| Counters::open(k, &roots.sysfs)) {
            Some(Ok(c)) => (Some(c), None),
            Some(Err(e)) => (None, Some(e.to_string())),
            None => (None, Some("--cpu-counters off".to_string())),
        };
        let program = LoadedProgram::load_with_counters(OBJECT, &btf, opened)?;
        let resolver = Resolver::new(v2_root(roots), &roots.procfs);
        match (program.counters(), why_not) {
            (Some(kind), _) => tracing::info!(
                source = INPUT.as_str(),
                counters = ?kind.measures(),
                cgroups = resolver.known_cgroups(),
                "eBPF attached to sched_switch and sched_process_exit with CPU counters; pods are split by cycles"
            ),
            (None, why) => tracing::info!(
                source = INPUT.as_str(),
                counters = "cpu_time",
                reason = why.as_deref().unwrap_or(""),
                cgroups = resolver.known_cgroups(),
                "eBPF attached to sched_switch and sched_process_exit; no PMU counters are read, so pods are split by on-CPU time"
            ),
        }
        let presence = match CgroupActivity::discover(&roots.sysfs, &roots.procfs) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroup hierarchy to list pods: a pod idle for longer than the grace period loses its series");
                None
            }
        };
        Ok(EbpfActivity {
            program,
            resolver,
            drained: Drained::default(),
            counters: EbpfCounters::default(),
            presence,
            recent_exits: ExitMemory::default(),
            charging: true,
            stats_switch: roots.procfs.join("sys/kernel/bpf_stats_enabled"),
            run_ns: Vec::new(),
        })
    }

    /// One drain: moves the maps out of the kernel, resolves every entry, adds up pods.
    fn drain(&mut self) -> Result<(Vec<PodActivity>, Vec<SourceIssue>)> {
        let mut issues = Vec::new();
        if self.charging {
            if let Err(error) = self.program.charge_running() {
                if let Error::Charge { source, .. } = &error {
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
                    ) {
                        self.charging = false;
                    }
                }
                let then = if self.charging {
                    "for this drain"
                } else {
                    "from now on (the kernel cannot run a program on another CPU)"
                };
                issues.push(SourceIssue::new(
                    INPUT,
                    error.kind(),
                    format!("{error}; running slices are charged when they end, {then}"),
                ));
            }
        }
        self.program.drain(&mut self.drained)?;
        let state = self.program.cpu_state()?;
        let before = self.counters;
        self.counters.switches = state.switches;
        self.counters.dropped_slices = state.dropped;
        self.counters.dropped_ns = state.dropped_ns;
        self.counters.dropped_exits = state.exits_dropped;
        self.counters.cached_slices = state.cached;
        self.counters.counter_errors = state.counter_errors;
        self.counters.running_charges = state.charges;
        self.counters.drained_entries += self.drained.tasks.len() as u64;
        self.counters.drain_syscalls += u64::from(self.drained.syscalls);
        if state.dropped > before.dropped_slices {
            issues.push(SourceIssue::new(
                INPUT,
                IssueKind::MapFull,
                format!(
                    "{} context-switch slices ({} ms of CPU time) not recorded: the process map was full",
                    state.dropped - before.dropped_slices,
                    (state.dropped_ns - before.dropped_ns) / 1_000_000
                ),
            ));
        }
        if state.exits_dropped > before.dropped_exits {
            // Exits were missed, so a pid may have been reused: cached /proc answers are not safe.
            self.resolver.forget_processes();
            issues.push(SourceIssue::new(
                INPUT,
                IssueKind::ExitMapFull,
                "process exits not recorded: the exit map was full",
            ));
        }
        self.recent_exits.extend(&mut self.drained.exited);
        // A drain with failed or stalled counter reads has slices without cycles: split it by time.
        let counters_live = self.program.counters().is_some();
        let counters_ok = state.counter_errors == before.counter_errors;
        if counters_live && !counters_ok {
            issues.push(SourceIssue::new(
                INPUT,
                IssueKind::CounterError,
                format!(
                    "{} CPU counter reads failed or found the counter stopped: this interval is split by on-CPU time",
                    state.counter_errors - before.counter_errors
                ),
            ));
        }
        let by_cycles = counters_live && counters_ok;
        let pods = aggregate(&mut self.resolver, &self.drained, by_cycles);
        self.run_ns = self.program_run_ns();
        Ok((pods, issues))
    }

    /// Each program's run time by the kernel's accounting, while `kernel.bpf_stats_enabled` is 1
    /// (empty otherwise: the kernel then counts nothing, and a stale figure would read as current).
    fn program_run_ns(&self) -> Vec<(&'static str, u64)> {
        let enabled = crate::files::read_small_file(&self.stats_switch, 16)
            .is_ok_and(|v| v.first() == Some(&b'1'));
        if !enabled {
            return Vec::new();
        }
        TIMED_PROGRAMS
            .iter()
            .filter_map(|&name| {
                let (time, _runs) = self.program.run_stats(name).ok()?;
                Some((name, u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)))
            })
            .collect()
    }
}

/// Adds pods that exist but did not run this interval, with no time, keeping the order by UID.
pub(crate) fn add_idle_pods(pods: &mut Vec<PodActivity>, present: Vec<PodUid>) {
    let busy: std::collections::HashSet<PodUid> = pods.iter().map(|p| p.uid.clone()).collect();
    pods.extend(
        present
            .into_iter()
            .filter(|uid| !busy.contains(uid))
            .map(|uid| PodActivity {
                uid,
                cpu_time: CpuNanos::ZERO,
                containers: Vec::new(),
            }),
    );
    pods.sort_by(|a, b| a.uid.cmp(&b.uid));
}

/// Resolves every drained entry and sums time per pod and container. Entries of unknown consumers
/// go to no pod (the model gives their share to `system`). With `by_cycles` (the program's counters
/// are live) each entry weighs its share of the drain's cycles, expressed in nanoseconds of the
/// drain's on-CPU time, so the model's denominators stay in time while pods are split by cycles.
pub fn aggregate(resolver: &mut Resolver, drained: &Drained, by_cycles: bool) -> Vec<PodActivity> {
    // Sum per cgroup id first: a drain holds many processes per cgroup (5,000 entries are ~200
    // cgroups on a busy node), and on a cgroup v2 host with pods the owner depends on the cgroup id
    // and its ancestors alone, so each cgroup is resolved once.
    let mut by_cgroup: HashMap<u64, CgroupSum, BuildIdHasher> =
        HashMap::with_capacity_and_hasher(256, BuildIdHasher);
    let (mut total_ns, mut total_cycles) = (0u64, 0u64);
    for (index, task) in drained.tasks.iter().enumerate() {
        let sum = by_cgroup.entry(task.cgroup_id).or_insert(CgroupSum {
            first: index,
            ..CgroupSum::default()
        });
        sum.on_cpu_ns = sum.on_cpu_ns.saturating_add(task.on_cpu_ns);
        sum.cycles = sum.cycles.saturating_add(task.cycles);
        sum.entries += 1;
        total_ns = total_ns.saturating_add(task.on_cpu_ns);
        total_cycles = total_cycles.saturating_add(task.cycles);
    }
    let weigh = |on_cpu_ns: u64, cycles: u64| -> CpuNanos {
        if by_cycles && total_cycles > 0 {
            CpuNanos((u128::from(total_ns) * u128::from(cycles) / u128::from(total_cycles)) as u64)
        } else {
            CpuNanos(on_cpu_ns)
        }
    };
    let ids: Vec<u64> = by_cgroup.keys().copied().collect();
    resolver.begin_drain(&ids);
    let mut pods = PodTimes::default();
    if resolver.resolves_by_cgroup_id() {
        for sum in by_cgroup.values() {
            let task = task_cgroup(&drained.tasks[sum.first], drained);
            let owner = resolver.resolve_entries(&task, sum.entries);
            pods.add(owner, weigh(sum.on_cpu_ns, sum.cycles));
        }
    } else {
        // cgroup v1 or hybrid: the owner may come from each process's /proc/<pid>/cgroup.
        for task in &drained.tasks {
            let owner = resolver.resolve(&task_cgroup(task, drained));
            pods.add(owner, weigh(task.on_cpu_ns, task.cycles));
        }
    }
    resolver.end_drain(&drained.exited);
    pods.into_pods().collect()
}

/// One cgroup's entries in a drain.
#[derive(Debug, Default)]
struct CgroupSum {
    on_cpu_ns: u64,
    cycles: u64,
    entries: u64,
    /// Index of its first entry (for the ancestors and the process).
    first: usize,
}

/// Hasher for cgroup ids (kernfs ids, not attacker-chosen): a multiply by an odd constant, then a
/// rotation so that high input bits (the kernfs generation) reach the low bits that pick the bucket
/// (as rustc-hash does). SipHash per entry was a measurable part of a 5,000-process drain.
#[derive(Debug, Clone, Copy, Default)]
struct BuildIdHasher;

#[derive(Debug, Default)]
struct IdHasher(u64);

impl std::hash::BuildHasher for BuildIdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

fn task_cgroup(task: &TaskSlice, drained: &Drained) -> TaskCgroup {
    TaskCgroup {
        tgid: task.tgid,
        cgroup_id: task.cgroup_id,
        ancestors: task.ancestors.to_vec(),
        exited: drained.exited.contains(&task.tgid),
    }
}

/// The cgroup v2 mount, rebased under the sysfs root, by the cgroup source's mountinfo rule.
fn v2_root(roots: &HostRoots) -> Option<PathBuf> {
    let root = CgroupMounts::read(&roots.procfs)
        .ok()?
        .v2()?
        .rebased(&roots.sysfs);
    root.is_dir().then_some(root)
}

impl ActivitySource for EbpfActivity {
    fn name(&self) -> &'static str {
        INPUT.as_str()
    }

    fn sample(&mut self) -> ActivitySample {
        match self.drain() {
            Ok((mut pods, mut issues)) => {
                if let Some(presence) = &mut self.presence {
                    let (present, presence_issues) = presence.present_pods();
                    issues.extend(presence_issues);
                    add_idle_pods(&mut pods, present);
                }
                ActivitySample { pods, issues }
            }
            Err(error) => {
                tracing::debug!(error = %error, "eBPF drain failed");
                ActivitySample {
                    pods: Vec::new(),
                    issues: vec![SourceIssue::new(INPUT, error.kind(), error.to_string())],
                }
            }
        }
    }

    fn stats(&self) -> SourceStats {
        let c = self.counters;
        let r = self.resolver.stats();
        let mut measures = vec!["cpu_time"];
        if let Some(kind) = self.program.counters() {
            measures.extend(kind.measures());
        }
        SourceStats {
            counters: measures,
            events: vec![
                ("sched_switch", c.switches),
                ("cached_slice", c.cached_slices),
                ("running_charge", c.running_charges),
                ("counter_error", c.counter_errors),
                ("dropped_slice", c.dropped_slices),
                ("dropped_exit", c.dropped_exits),
                ("drained_entry", c.drained_entries),
                ("drain_syscall", c.drain_syscalls),
                ("cgroup_walk", r.walks),
                ("proc_lookup", r.proc_reads),
                ("unresolved_entry", r.unresolved),
            ],
            bpf_run_ns: self.run_ns.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::ContainerActivity;
    use crate::units::ContainerId;
    use std::collections::HashSet;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    const UID: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";
    const C1: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
    const C2: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    fn slice(tgid: u32, cgroup_id: u64, ancestors: [u64; 6], ns: u64) -> TaskSlice {
        TaskSlice {
            tgid,
            cgroup_id,
            ancestors,
            on_cpu_ns: ns,
            switches: 1,
            cycles: 0,
            instructions: 0,
        }
    }

    /// A cgroup v2 tree: `kubepods/pod<UID>/{C1,C2}` and `system.slice`; returns (tmp, root, pod).
    fn pod_tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::TempDir::new().unwrap();
        let root = tmp.path().join("cgroup");
        let pod = root.join(format!("kubepods/pod{UID}"));
        fs::create_dir_all(pod.join(C1)).unwrap();
        fs::create_dir_all(pod.join(C2)).unwrap();
        fs::create_dir_all(root.join("system.slice")).unwrap();
        (tmp, root, pod)
    }

    #[test]
    fn exits_count_for_two_more_drains_then_are_forgotten() {
        let mut memory = ExitMemory::default();
        let mut drain = |own: &[u32]| {
            let mut exited: HashSet<u32> = own.iter().copied().collect();
            memory.extend(&mut exited);
            let mut v: Vec<u32> = exited.into_iter().collect();
            v.sort_unstable();
            v
        };
        assert_eq!(drain(&[5]), vec![5]);
        assert_eq!(drain(&[7]), vec![5, 7]);
        assert_eq!(drain(&[]), vec![5, 7]);
        assert_eq!(drain(&[]), vec![7]);
        assert_eq!(drain(&[]), Vec::<u32>::new());
    }

    #[test]
    fn live_counters_split_by_cycles_in_units_of_the_drains_time() {
        let (tmp, root, pod) = pod_tree();
        let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
        let (c1, c2, system) = (
            ino(&pod.join(C1)),
            ino(&pod.join(C2)),
            ino(&root.join("system.slice")),
        );
        let with_cycles = |mut t: TaskSlice, cycles: u64| {
            t.cycles = cycles;
            t
        };
        let drained = Drained {
            tasks: vec![
                with_cycles(slice(1, c1, [0; 6], 500), 3_000),
                with_cycles(slice(2, c2, [0; 6], 500), 1_000),
                with_cycles(slice(3, system, [0; 6], 1_000), 4_000),
            ],
            exited: HashSet::new(),
            syscalls: 1,
        };
        let container = |pods: &[PodActivity], id: &str| {
            pods[0]
                .containers
                .iter()
                .find(|c| c.id.as_str() == id)
                .unwrap()
                .cpu_time
        };
        let mut resolver = Resolver::new(Some(root), tmp.path());
        // By time: 500 each.
        let pods = aggregate(&mut resolver, &drained, false);
        assert_eq!(
            (container(&pods, C1), container(&pods, C2)),
            (CpuNanos(500), CpuNanos(500))
        );
        // By cycles: 2,000 ns of drain time split 3,000 : 1,000 : 4,000 of 8,000 cycles.
        let pods = aggregate(&mut resolver, &drained, true);
        assert_eq!(container(&pods, C1), CpuNanos(750));
        assert_eq!(container(&pods, C2), CpuNanos(250));
        assert_eq!(
            pods[0].cpu_time,
            CpuNanos(1_000),
            "system keeps its half of the cycles"
        );
        // No cycles at all (counters live but nothing counted): falls back to time.
        let no_cycles = Drained {
            tasks: drained
                .tasks
                .iter()
                .map(|t| with_cycles(t.clone(), 0))
                .collect(),
            ..Drained::default()
        };
        let pods = aggregate(&mut resolver, &no_cycles, true);
        assert_eq!(container(&pods, C1), CpuNanos(500));
    }

    #[test]
    fn idle_pods_are_reported_with_no_time_and_busy_ones_keep_theirs() {
        let uid = |s: &str| PodUid::parse(s).unwrap();
        let mut pods = vec![PodActivity {
            uid: uid(UID),
            cpu_time: CpuNanos(7),
            containers: Vec::new(),
        }];
        let idle = "00000000-1111-2222-3333-444444444444";
        add_idle_pods(&mut pods, vec![uid(UID), uid(idle)]);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].uid, uid(idle));
        assert_eq!(pods[0].cpu_time, CpuNanos::ZERO);
        assert_eq!(pods[1].cpu_time, CpuNanos(7));
    }

    #[test]
    fn pods_include_time_of_removed_containers_and_unknown_goes_nowhere() {
        let (tmp, root, pod) = pod_tree();
        let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
        let (kubepods, pod_id, c1, c2) = (
            ino(&root.join("kubepods")),
            ino(&pod),
            ino(&pod.join(C1)),
            ino(&pod.join(C2)),
        );
        let system = ino(&root.join("system.slice"));
        fs::remove_dir(pod.join(C2)).unwrap(); // exited before the drain
        let mut resolver = Resolver::new(Some(root), tmp.path());
        let drained = Drained {
            tasks: vec![
                slice(1, c1, [kubepods, pod_id, c1, 0, 0, 0], 700),
                slice(2, c1, [kubepods, pod_id, c1, 0, 0, 0], 300),
                slice(3, c2, [kubepods, pod_id, c2, 0, 0, 0], 250),
                slice(4, system, [system, 0, 0, 0, 0, 0], 5_000),
                slice(5, u64::MAX, [u64::MAX, 0, 0, 0, 0, 0], 9_000),
                slice(6, u64::MAX, [u64::MAX, 0, 0, 0, 0, 0], 1_000),
            ],
            exited: HashSet::from([3]),
            syscalls: 1,
        };
        let pods = aggregate(&mut resolver, &drained, false);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].uid.as_str(), UID);
        assert_eq!(
            pods[0].cpu_time,
            CpuNanos(1_250),
            "includes the removed container"
        );
        assert_eq!(
            pods[0].containers,
            vec![ContainerActivity {
                id: ContainerId::parse(C1).unwrap(),
                cpu_time: CpuNanos(1_000),
                runtime: None,
            }]
        );
        // Resolved once per cgroup, counted per entry: both unknown-cgroup entries are unresolved.
        assert_eq!(resolver.stats().unresolved, 2);
        assert_eq!(
            resolver.stats().walks,
            2,
            "one at start, one for the unknown id"
        );
    }

    #[test]
    fn error_kinds_name_the_cause() {
        let no_btf = Error::NoBtf {
            path: "/sys/kernel/btf/vmlinux".into(),
        };
        assert_eq!(no_btf.kind(), IssueKind::NoBtf);
        assert!(no_btf.to_string().contains("/sys/kernel/btf/vmlinux"));
        let eperm = Error::Drain {
            map: "TASK_TIME",
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(eperm.kind(), IssueKind::PermissionDenied);
        assert!(eperm.reason().contains("CAP_BPF"));
        let other = Error::Drain {
            map: "TASK_TIME",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(other.kind(), IssueKind::Drain);
    }

    #[test]
    fn embedded_object_is_an_ebpf_elf() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(OBJECT[4], 2, "64-bit");
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247, "EM_BPF");
    }
}
