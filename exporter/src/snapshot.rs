//! The immutable result of one tick: every value a scrape or `top` shows. Built by the ledger and the
//! monitor, published as `Arc<Snapshot>`, never mutated after publication. Counters are cumulative
//! since the exporter started; watts are the last interval's average.

use crate::issue::{Input, IssueKind};
use crate::resource::cgroup_path::ContainerRuntime;
use crate::resource::pods::{HubServer, MetadataSync};
use crate::source::EnergySourceKind;
use crate::units::{ContainerId, Joules, Pid, PodUid, Watts, ZoneKind};
use std::collections::BTreeMap;

/// Cumulative energy of one zone on the node, with the identities
/// `total = idle + active` and `active = Σ pods (live + terminated) + system`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeZone {
    pub(crate) total_joules: Joules,
    pub(crate) idle_joules: Joules,
    pub(crate) active_joules: Joules,
    pub(crate) system_joules: Joules,
    /// Energy of pods whose series were removed after the grace period.
    pub(crate) terminated_pods_joules: Joules,
    pub(crate) total_watts: Watts,
    pub(crate) idle_watts: Watts,
    pub(crate) active_watts: Watts,
    pub(crate) system_watts: Watts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSeries {
    pub(crate) id: ContainerId,
    pub(crate) name: Option<String>,
    /// From the container's cgroup name, where it shows the runtime.
    pub(crate) runtime: Option<ContainerRuntime>,
    /// Cumulative CPU time its energy was split by, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Indexed like `Snapshot::zones`.
    pub(crate) joules: Vec<Joules>,
    pub(crate) watts: Vec<Watts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodSeries {
    pub(crate) uid: PodUid,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    /// JupyterHub user server: `hub_user`/`hub_server` labels; `None` for every other pod.
    pub(crate) hub: Option<HubServer>,
    /// The pod's cgroup is gone; its series stay for the grace period.
    pub(crate) ended: bool,
    /// Indexed like `Snapshot::zones`.
    pub joules: Vec<Joules>,
    pub(crate) watts: Vec<Watts>,
    pub containers: Vec<ContainerSeries>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSeries {
    pub(crate) pid: Pid,
    pub(crate) comm: String,
    /// The executable's path; empty where it could not be read.
    pub(crate) exe: std::sync::Arc<str>,
    pub(crate) container: Option<ContainerId>,
    /// Not seen in the last walk; its series stay for the grace period.
    pub(crate) ended: bool,
    /// Cumulative CPU time while watched, in seconds.
    pub(crate) cpu_seconds: f64,
    pub(crate) joules: Vec<Joules>,
    pub(crate) watts: Vec<Watts>,
}

/// Health of one input (energy or CPU-activity source), for `kepler_exporter_source_up`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceHealth {
    pub source: &'static str,
    pub up: bool,
}

/// Exporter self-observation carried by each snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExporterHealth {
    pub ticks: u64,
    /// Completed intervals (ticks after the baseline).
    pub intervals: u64,
    pub last_tick_seconds: f64,
    pub tick_seconds_total: f64,
    /// Pods' CPU time above the node's busy time in an interval, carried into the next one, and
    /// dropped (beyond the bound of one interval's busy time, or owed to a pod gone), in seconds.
    pub cpu_time_carried_seconds: f64,
    pub cpu_time_clipped_seconds: f64,
    /// Skipped reads and degraded measurements by (source, kind), cumulative.
    pub issues: BTreeMap<(Input, IssueKind), u64>,
    pub sources: Vec<SourceHealth>,
    /// The CPU-activity source's own counters (`kepler_exporter_cpu_source_*`).
    pub cpu_source_stats: crate::activity::SourceStats,
    /// Wall-clock time of the tick that built the snapshot (for staleness alerts only).
    pub taken_at_unix_seconds: f64,
    /// Kubernetes pod metadata sync; `None` without Kubernetes (`--no-kube`).
    pub pod_metadata: Option<MetadataSync>,
}

/// One zone of one socket (RAPL only): cumulative joules and the last interval's watts.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketZone {
    pub(crate) zone: ZoneKind,
    pub(crate) socket: u32,
    pub(crate) joules: Joules,
    pub(crate) watts: Watts,
}

/// Cumulative energy of one device (or the whole GPU where MIG is on).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuDeviceSeries {
    /// NVML index, the `gpu` label.
    pub(crate) index: u32,
    pub(crate) uuid: String,
    pub(crate) name: String,
    /// `energy_counter` or `power_integral`, empty before the first reading.
    pub(crate) method: &'static str,
    pub(crate) total_joules: Joules,
    pub(crate) idle_joules: Joules,
    pub active_joules: Joules,
    /// Active energy no pod received (host processes, unplaceable processes, no process at all).
    pub(crate) unattributed_joules: Joules,
    /// Energy of pods whose series were removed after the grace period.
    pub(crate) terminated_pods_joules: Joules,
    pub(crate) watts: Watts,
    pub(crate) idle_watts: Watts,
    pub(crate) active_watts: Watts,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GpuContainerSeries {
    pub(crate) id: ContainerId,
    pub(crate) name: Option<String>,
    pub(crate) joules: Joules,
    pub(crate) watts: Watts,
}

/// A pod's energy on one device (or MIG instance). `joules ≥ Σ containers`: the rest is pod-level
/// (a pod cgroup's own process, or a kubelet assignment with no visible process).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPodSeries {
    /// Position in `GpuSnapshot::devices`.
    pub(crate) device: usize,
    /// MIG device UUID, where MIG is on.
    pub(crate) instance: Option<String>,
    pub(crate) uid: PodUid,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    /// JupyterHub user and server, for user servers only.
    pub(crate) hub: Option<HubServer>,
    pub(crate) ended: bool,
    pub joules: Joules,
    pub(crate) watts: Watts,
    pub(crate) containers: Vec<GpuContainerSeries>,
}

/// The GPU part of a snapshot; empty when GPU support is off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuSnapshot {
    pub devices: Vec<GpuDeviceSeries>,
    /// Sorted by (device, instance, pod UID); containers by ID.
    pub pods: Vec<GpuPodSeries>,
}

/// Everything one scrape encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub node_name: String,
    pub energy_source: EnergySourceKind,
    pub cpu_source: &'static str,
    /// Why `cpu_source` was chosen.
    pub cpu_source_reason: crate::activity::SourceReason,
    /// Zones in a stable order; per-zone vectors below are indexed like this.
    pub zones: Vec<ZoneKind>,
    pub node: Vec<NodeZone>,
    /// Per socket (sorted by zone, then socket); empty for the estimate.
    pub sockets: Vec<SocketZone>,
    pub cpu_usage_ratio: f64,
    /// Sorted by UID; containers sorted by ID.
    pub pods: Vec<PodSeries>,
    pub processes: Vec<ProcessSeries>,
    /// GPU devices and pods' GPU energy; empty when GPU support is off.
    pub gpu: GpuSnapshot,
    pub health: ExporterHealth,
}

impl Snapshot {
    /// The snapshot served before the first interval completes: no energy series yet.
    pub fn empty(
        node_name: String,
        energy_source: EnergySourceKind,
        cpu_source: &'static str,
        cpu_source_reason: crate::activity::SourceReason,
    ) -> Snapshot {
        Snapshot {
            node_name,
            energy_source,
            cpu_source,
            cpu_source_reason,
            zones: Vec::new(),
            node: Vec::new(),
            sockets: Vec::new(),
            cpu_usage_ratio: 0.0,
            pods: Vec::new(),
            processes: Vec::new(),
            gpu: Default::default(),
            health: ExporterHealth::default(),
        }
    }

    /// Pods, containers and processes with series in this snapshot (what its size grows with).
    pub(crate) fn consumers(&self) -> usize {
        self.pods.len()
            + self.pods.iter().map(|p| p.containers.len()).sum::<usize>()
            + self.processes.len()
    }

    /// Ready once the first complete interval has been measured.
    pub(crate) fn is_ready(&self) -> bool {
        self.health.intervals > 0
    }
}
