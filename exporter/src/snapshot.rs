//! The immutable result of one tick: every value a scrape or `top` shows. Built by the ledger and the
//! monitor, published as `Arc<Snapshot>`, never mutated after publication. Counters are cumulative
//! since the exporter started; watts are the last interval's average.

use crate::issue::{Input, IssueKind};
use crate::resource::pods::{HubServer, MetadataSync};
use crate::source::EnergySourceKind;
use crate::units::{ContainerId, Pid, PodUid, ZoneKind};
use std::collections::BTreeMap;

/// Cumulative energy of one zone on the node, with the identities
/// `total = idle + active` and `active = Σ pods (live + terminated) + system`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeZone {
    pub total_joules: f64,
    pub idle_joules: f64,
    pub active_joules: f64,
    pub system_joules: f64,
    /// Energy of pods whose series were removed after the grace period.
    pub terminated_pods_joules: f64,
    pub total_watts: f64,
    pub idle_watts: f64,
    pub active_watts: f64,
    pub system_watts: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSeries {
    pub id: ContainerId,
    pub name: Option<String>,
    /// Indexed like `Snapshot::zones`.
    pub joules: Vec<f64>,
    pub watts: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodSeries {
    pub uid: PodUid,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// JupyterHub user server: `hub_user`/`hub_server` labels; `None` for every other pod.
    pub hub: Option<HubServer>,
    /// The pod's cgroup is gone; its series stay for the grace period.
    pub ended: bool,
    /// Indexed like `Snapshot::zones`.
    pub joules: Vec<f64>,
    pub watts: Vec<f64>,
    pub containers: Vec<ContainerSeries>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSeries {
    pub pid: Pid,
    pub comm: String,
    pub container: Option<ContainerId>,
    pub joules: Vec<f64>,
    pub watts: Vec<f64>,
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
    pub zone: ZoneKind,
    pub socket: u32,
    pub joules: f64,
    pub watts: f64,
}

/// Everything one scrape encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub node_name: String,
    pub energy_source: EnergySourceKind,
    pub cpu_source: &'static str,
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
    pub gpu: crate::gpu::ledger::GpuSnapshot,
    pub health: ExporterHealth,
}

impl Snapshot {
    /// The snapshot served before the first interval completes: no energy series yet.
    pub fn empty(
        node_name: String,
        energy_source: EnergySourceKind,
        cpu_source: &'static str,
    ) -> Snapshot {
        Snapshot {
            node_name,
            energy_source,
            cpu_source,
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

    /// Ready once the first complete interval has been measured.
    pub fn is_ready(&self) -> bool {
        self.health.intervals > 0
    }

    /// Node total joules: package + dram, or psys alone where present (zones overlap).
    pub fn node_total_joules(&self) -> f64 {
        let has_psys = self.zones.contains(&ZoneKind::Psys);
        self.zones
            .iter()
            .zip(&self.node)
            .filter(|(z, _)| z.counts_toward_node_total(has_psys))
            .map(|(_, n)| n.total_joules)
            .sum()
    }

    /// Node total power over the last interval, by the same rule.
    pub fn node_total_watts(&self) -> f64 {
        let has_psys = self.zones.contains(&ZoneKind::Psys);
        self.zones
            .iter()
            .zip(&self.node)
            .filter(|(z, _)| z.counts_toward_node_total(has_psys))
            .map(|(_, n)| n.total_watts)
            .sum()
    }
}
