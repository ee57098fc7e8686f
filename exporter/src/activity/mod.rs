//! CPU activity per consumer per interval: who used the CPU, as deltas since the previous tick.
//! Implementations: `ebpf` (per-process on-CPU time from the kernel; `auto` takes it only for process
//! metrics or CPU counters), `cgroup` (cgroup v1/v2 counters, `auto`'s choice otherwise), `procfs` (node totals, per-process time, and `procfs::pods`: pods from a /proc
//! walk, the last resort). They read counters only; they never see energy.

pub mod cgroup;
pub mod ebpf;
pub(crate) mod procfs;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::issue::{labelled, SourceIssue};
use crate::resource::cgroup_path::{CgroupOwner, ContainerRuntime};
use crate::units::{ContainerId, CpuNanos, Pid, PodUid};

labelled! {
    /// Why the CPU-activity source in use was chosen: the `reason` label of
    /// `kepler_exporter_cpu_source_info`, and of the start-up log line.
    pub enum SourceReason {
        /// Named by `--cpu-source`.
        Flag => "flag",
        /// `auto`, with process metrics on: eBPF sees every process, short-lived ones included.
        ProcessMetrics => "process_metrics",
        /// `auto`, with CPU counters live (a PMU, or `--cpu-counters software`): pods split by cycles.
        CpuCounters => "cpu_counters",
        /// `auto`, with nothing that needs eBPF: cgroup counters, which cost the kernel nothing extra.
        Cheapest => "cheapest",
        /// `auto` wanted eBPF and it could not load: cgroup counters instead.
        EbpfUnavailable => "ebpf_unavailable",
        /// `auto` found no usable cgroup hierarchy: the /proc walk, the last resort.
        CgroupUnavailable => "cgroup_unavailable",
    }
}

/// CPU time of one container over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerActivity {
    pub id: ContainerId,
    pub cpu_time: CpuNanos,
    /// Where the container's cgroup name shows it.
    pub runtime: Option<ContainerRuntime>,
}

/// CPU time of one pod over one interval. `cpu_time` is the pod cgroup's own counter, which also holds
/// the time of containers that exited during the interval; `containers` split it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodActivity {
    pub uid: PodUid,
    pub cpu_time: CpuNanos,
    pub containers: Vec<ContainerActivity>,
}

/// CPU time summed per pod and container from per-process (or per-cgroup) times and their owners:
/// how the sources that see processes (eBPF, the /proc walk) build their `PodActivity`.
#[derive(Debug, Default)]
pub(crate) struct PodTimes(BTreeMap<PodUid, (CpuNanos, ContainerTimes)>);

type ContainerTimes = BTreeMap<ContainerId, (CpuNanos, Option<ContainerRuntime>)>;

impl PodTimes {
    /// Adds `time` to its owner's pod and container; anything outside a pod counts toward none.
    pub(crate) fn add(&mut self, owner: CgroupOwner, time: CpuNanos) {
        match owner {
            CgroupOwner::Container {
                pod,
                container,
                runtime,
            } => {
                let entry = self.0.entry(pod).or_default();
                entry.0 += time;
                let container = entry
                    .1
                    .entry(container)
                    .or_insert((CpuNanos::ZERO, runtime));
                container.0 += time;
                container.1 = container.1.or(runtime);
            }
            CgroupOwner::PodLevel { pod } => self.0.entry(pod).or_default().0 += time,
            CgroupOwner::OtherContainer { .. } | CgroupOwner::System => {}
        }
    }

    /// The pods in UID order, containers in ID order.
    pub(crate) fn into_pods(self) -> impl Iterator<Item = PodActivity> {
        self.0
            .into_iter()
            .map(|(uid, (cpu_time, containers))| PodActivity {
                uid,
                cpu_time,
                containers: containers
                    .into_iter()
                    .map(|(id, (cpu_time, runtime))| ContainerActivity {
                        id,
                        cpu_time,
                        runtime,
                    })
                    .collect(),
            })
    }
}

/// Per-pod activity for one interval. A consumer seen for the first time after the first scan gets its
/// whole counter (it was created during the interval), so short-lived containers are not lost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivitySample {
    pub pods: Vec<PodActivity>,
    pub issues: Vec<SourceIssue>,
}

/// A per-interval CPU-activity reader for pods and containers.
pub trait ActivitySource: Send {
    /// `cgroup`, `ebpf`, ...: the value of `kepler_exporter_cpu_source_info{source}`.
    fn name(&self) -> &'static str;
    fn sample(&mut self) -> ActivitySample;
    /// What the source measures and its own cumulative event counts, for self-metrics.
    fn stats(&self) -> SourceStats {
        SourceStats {
            counters: vec!["cpu_time"],
            events: Vec::new(),
            bpf_run_ns: Vec::new(),
        }
    }
}

/// Self-observation of an activity source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceStats {
    /// What consumers are split by: `cpu_time`, plus `cycles`/`instructions` where a PMU is read.
    pub(crate) counters: Vec<&'static str>,
    /// Cumulative `(event, count)` pairs, e.g. `("sched_switch", n)`, `("dropped_slice", n)`.
    pub(crate) events: Vec<(&'static str, u64)>,
    /// Cumulative in-kernel run time of each eBPF program, `(program, ns)`, by the kernel's own
    /// accounting: only while `kernel.bpf_stats_enabled` is 1 (empty otherwise, and for other sources).
    pub(crate) bpf_run_ns: Vec<(&'static str, u64)>,
}

/// Node-wide CPU time over one interval, from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeCpu {
    /// Busy time summed over all CPUs (user+nice+system+irq+softirq; steal and idle excluded).
    pub busy: CpuNanos,
    /// Capacity: elapsed time x logical CPUs as the kernel counted it (all states summed).
    pub total: CpuNanos,
}

impl NodeCpu {
    pub fn usage_ratio(&self) -> f64 {
        if self.total.0 == 0 {
            0.0
        } else {
            (self.busy.as_f64() / self.total.as_f64()).clamp(0.0, 1.0)
        }
    }
}

/// CPU time of one process over one interval (process metrics, off by default).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessActivity {
    pub(crate) pid: Pid,
    pub(crate) comm: String,
    /// The executable's path (`/proc/<pid>/exe`, read once per process); empty where it cannot be
    /// read (kernel threads, no permission).
    pub(crate) exe: Arc<str>,
    pub(crate) container: Option<ContainerId>,
    pub(crate) cpu_time: CpuNanos,
}
