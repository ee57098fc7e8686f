//! The catalog of every metric family kepler-rs serves: name, help, type, labels, and what the
//! value is (scope, resource, measure), from which the identity it belongs to follows. The encoder,
//! the server's own lines, `top`, `report` and the docs test read it; no other file spells a name.
//! Pure data and lookups: no I/O.

crate::issue::labelled! {
    /// Prometheus metric type.
    pub(crate) enum Kind {
        Counter => "counter",
        Gauge => "gauge",
    }
}

/// What one series of the family describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// One CPU energy zone of the node (`zone`).
    NodeZone,
    /// One zone on one CPU socket (`zone`, `socket`).
    Socket,
    /// The node as a whole (`kepler_node_cpu_usage_ratio`).
    Node,
    /// One GPU (`gpu`, `gpu_uuid`); MIG instances are inside it.
    GpuDevice,
    Pod,
    Container,
    Process,
    /// The exporter's self-observation (measured on the tick).
    Exporter,
    /// The HTTP server's own counters (appended by the server, outside `kepler_exporter_series`).
    Server,
    /// Kepler 0.7's node families (`--metrics-compat kepler-0.7`): one zone, split by `mode`.
    Kepler07Node,
    /// Kepler 0.7's container families (`--metrics-compat kepler-0.7`), split by `mode`.
    Kepler07Container,
}

impl Scope {
    /// A family served only with `--metrics-compat kepler-0.7`, which kepler-rs's own clients skip.
    pub(crate) fn is_kepler07(self) -> bool {
        matches!(self, Scope::Kepler07Node | Scope::Kepler07Container)
    }
}

/// Which hardware the energy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Resource {
    Cpu,
    Gpu,
    /// Not energy: names, self-metrics.
    None,
}

/// Which part of a scope's energy a series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    /// All of it: `total = idle + active`.
    Total,
    Idle,
    Active,
    /// Active energy of everything outside pods (CPU: host daemons, kernel).
    System,
    /// Active energy no pod received (GPU: host processes, unplaceable PIDs).
    Unattributed,
    /// Active energy of pods removed after the grace period.
    TerminatedPods,
    /// Active energy attributed to one consumer (pod, container, process).
    Attributed,
}

/// What the value measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Measure {
    /// Cumulative joules.
    Joules(Part),
    /// Average watts over the last interval.
    Watts(Part),
    /// 0 to 1.
    Ratio,
    /// Value 1; the labels are the information.
    Info,
    /// Anything else (counts, seconds, up/down).
    Other,
}

/// The conservation rule a joules family takes part in (docs/metrics.md, "Identities").
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identity {
    /// Per node zone: `total = idle + active`, `active = Σ pods + system + terminated_pods`.
    CpuZone,
    /// Per pod and zone: `pod = Σ containers`.
    CpuPod,
    /// Per GPU: `total = idle + active`, `active = Σ pods + unattributed + terminated_pods`.
    Gpu,
    /// Per pod and GPU (or MIG instance): `pod ≥ Σ containers`.
    GpuPod,
    /// Per zone, Σ sockets = the node zone.
    Socket,
    /// Per Kepler 0.7 family and `mode`: Σ containers = the node family.
    Kepler07,
}

/// One family: everything a reader needs to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Family {
    /// The sample name as exposed (counters end in `_total`).
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    /// Labels every series carries, in exposition order.
    pub(crate) labels: &'static [&'static str],
    /// Labels only some series carry (`hub_user`/`hub_server` on JupyterHub user servers).
    pub(crate) optional_labels: &'static [&'static str],
    pub(crate) scope: Scope,
    pub(crate) resource: Resource,
    pub(crate) measure: Measure,
}

impl Family {
    /// The name without `_total`, as the text encoder wants it for counters.
    pub(crate) fn descriptor_name(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            Kind::Gauge => self.name,
        }
    }

    #[cfg(test)]
    /// The identity a joules family takes part in, if any.
    pub(crate) fn identity(&self) -> Option<Identity> {
        let Measure::Joules(part) = self.measure else {
            return None;
        };
        match (self.scope, self.resource, part) {
            (Scope::NodeZone, Resource::Cpu, _) => Some(Identity::CpuZone),
            (Scope::Pod | Scope::Container, Resource::Cpu, _) => Some(Identity::CpuPod),
            (Scope::Socket, _, _) => Some(Identity::Socket),
            (Scope::GpuDevice, Resource::Gpu, _) => Some(Identity::Gpu),
            (Scope::Kepler07Node | Scope::Kepler07Container, _, _) => Some(Identity::Kepler07),
            (Scope::Pod | Scope::Container, Resource::Gpu, _) => Some(Identity::GpuPod),
            // Processes are informational: a /proc walk misses short-lived processes.
            _ => None,
        }
    }
}

/// The node-total rule for one CPU zone, given whether the node has `psys`: psys alone when there
/// is one, else package + dram. Zones overlap (core and uncore are inside package), so summing all
/// of them would count energy twice. The one place this rule is written.
pub(crate) fn counts_toward_node_total(has_psys: bool, zone: &str) -> bool {
    if has_psys {
        zone == PSYS_ZONE
    } else {
        NODE_TOTAL_ZONES.contains(&zone)
    }
}

/// The zones whose sum is the node's CPU energy where there is no psys.
pub(crate) const NODE_TOTAL_ZONES: [&str; 2] = ["package", "dram"];
/// The platform zone: where present, it alone is the node's energy.
pub(crate) const PSYS_ZONE: &str = "psys";

const NODE_ZONE_LABELS: &[&str] = &["node_name", "zone", "source"];
const SOCKET_LABELS: &[&str] = &["node_name", "zone", "socket", "source"];
const POD_CPU_LABELS: &[&str] = &[
    "node_name",
    "pod_id",
    "pod_name",
    "pod_namespace",
    "state",
    "zone",
];
const CONTAINER_CPU_LABELS: &[&str] = &[
    "node_name",
    "container_id",
    "container_name",
    "runtime",
    "state",
    "pod_id",
    "zone",
];
const CONTAINER_SECONDS_LABELS: &[&str] = &[
    "node_name",
    "container_id",
    "container_name",
    "runtime",
    "pod_id",
];
const PROCESS_SECONDS_LABELS: &[&str] =
    &["node_name", "pid", "comm", "exe", "type", "container_id"];
const CPU_INFO_LABELS: &[&str] = &[
    "node_name",
    "processor",
    "vendor_id",
    "model_name",
    "physical_id",
    "core_id",
];
const KEPLER07_NODE_LABELS: &[&str] = &["node_name", "package", "mode", "source"];
const KEPLER07_NODE_INFO_LABELS: &[&str] = &[
    "node_name",
    "cpu_architecture",
    "components_power_source",
    "platform_power_source",
];
const KEPLER07_CONTAINER_LABELS: &[&str] = &[
    "node_name",
    "container_id",
    "container_name",
    "container_namespace",
    "pod_name",
    "mode",
];
const POD_INFO_LABELS: &[&str] = &["node_name", "pod_id", "pod_name", "pod_namespace"];
const PROCESS_LABELS: &[&str] = &[
    "node_name",
    "pid",
    "comm",
    "exe",
    "type",
    "state",
    "container_id",
    "zone",
];
const GPU_LABELS: &[&str] = &["node_name", "gpu", "gpu_uuid", "gpu_name"];
const GPU_INFO_LABELS: &[&str] = &["node_name", "gpu", "gpu_uuid", "gpu_name", "method"];
const POD_GPU_LABELS: &[&str] = &[
    "node_name",
    "pod_id",
    "pod_name",
    "pod_namespace",
    "gpu",
    "gpu_uuid",
    "gpu_instance",
];
const CONTAINER_GPU_LABELS: &[&str] = &[
    "node_name",
    "container_id",
    "container_name",
    "pod_id",
    "gpu",
    "gpu_uuid",
    "gpu_instance",
];
const NODE_ONLY: &[&str] = &["node_name"];
const BUILD_LABELS: &[&str] = &["node_name", "version", "revision"];
const KEPLER_BUILD_LABELS: &[&str] = &[
    "node_name",
    "version",
    "revision",
    "branch",
    "arch",
    "goversion",
];
const SOURCE_LABELS: &[&str] = &["node_name", "source"];

/// Declares each family as a `pub const` and lists them all in `ALL`, in exposition order.
macro_rules! catalog {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $kind:ident, $labels:expr, $optional:ident,
        $scope:ident, $resource:ident, $measure:expr, $help:literal;)*) => {
        $(
            $(#[$doc])*
            pub(crate) const $id: Family = Family {
                name: $name,
                help: $help,
                kind: Kind::$kind,
                labels: $labels,
                optional_labels: $optional,
                scope: Scope::$scope,
                resource: Resource::$resource,
                measure: {
                    #[allow(unused_imports)]
                    use {Measure::*, Part::*};
                    $measure
                },
            };
        )*
        /// Every family, in the order the exposition serves them.
        pub(crate) const ALL: &[Family] = &[$($id),*];
    };
}

/// Labels only on JupyterHub user servers' series.
const HUB: &[&str] = &["hub_user", "hub_server"];
/// Hub labels, and the Kepler 0.7 container labels the container GPU series carry with
/// `--metrics-compat kepler-0.7` (the 0.7 family of the same name is this one).
const HUB_AND_KEPLER07: &[&str] = &[
    "hub_user",
    "hub_server",
    "container_namespace",
    "pod_name",
    "mode",
];
const NONE: &[&str] = &[];

catalog! {
    // Node CPU zones.
    NODE_CPU_JOULES = "kepler_node_cpu_joules_total", Counter, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Joules(Total),
        "Energy of the zone, in joules (zones overlap: core and uncore are inside package; never sum zones).";
    NODE_CPU_ACTIVE_JOULES = "kepler_node_cpu_active_joules_total", Counter, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Joules(Active),
        "Active (non-idle) energy of the zone, in joules.";
    NODE_CPU_IDLE_JOULES = "kepler_node_cpu_idle_joules_total", Counter, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Joules(Idle),
        "Idle energy of the zone, in joules.";
    NODE_CPU_SYSTEM_JOULES = "kepler_node_cpu_system_joules_total", Counter, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Joules(System),
        "Active energy of everything outside pods (host daemons, kernel), in joules.";
    NODE_CPU_TERMINATED_PODS_JOULES = "kepler_node_cpu_terminated_pods_joules_total", Counter, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Joules(TerminatedPods),
        "Active energy of pods whose series were removed after the grace period, in joules.";
    NODE_CPU_WATTS = "kepler_node_cpu_watts", Gauge, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Watts(Total),
        "Power of the zone over the last interval, in watts.";
    NODE_CPU_ACTIVE_WATTS = "kepler_node_cpu_active_watts", Gauge, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Watts(Active),
        "Active power of the zone over the last interval, in watts.";
    NODE_CPU_IDLE_WATTS = "kepler_node_cpu_idle_watts", Gauge, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Watts(Idle),
        "Idle power of the zone over the last interval, in watts.";
    NODE_CPU_SYSTEM_WATTS = "kepler_node_cpu_system_watts", Gauge, NODE_ZONE_LABELS, NONE, NodeZone, Cpu, Watts(System),
        "Active power of everything outside pods over the last interval, in watts.";
    NODE_CPU_SOCKET_JOULES = "kepler_node_cpu_socket_joules_total", Counter, SOCKET_LABELS, NONE, Socket, Cpu, Joules(Total),
        "Energy of the zone on one CPU socket (RAPL package index), in joules; summed over sockets it is kepler_node_cpu_joules_total.";
    NODE_CPU_SOCKET_WATTS = "kepler_node_cpu_socket_watts", Gauge, SOCKET_LABELS, NONE, Socket, Cpu, Watts(Total),
        "Power of the zone on one CPU socket over the last interval, in watts.";
    NODE_CPU_USAGE_RATIO = "kepler_node_cpu_usage_ratio", Gauge, NODE_ONLY, NONE, Node, Cpu, Ratio,
        "Node CPU utilisation over the last interval, 0 to 1.";
    NODE_CPU_INFO = "kepler_node_cpu_info", Gauge, CPU_INFO_LABELS, NONE, Node, None, Info,
        "One logical CPU of the node as /proc/cpuinfo describes it; value 1.";
    // Pods, containers, processes (CPU).
    POD_CPU_JOULES = "kepler_pod_cpu_joules_total", Counter, POD_CPU_LABELS, HUB, Pod, Cpu, Joules(Attributed),
        "Active CPU energy attributed to the pod, in joules.";
    POD_CPU_WATTS = "kepler_pod_cpu_watts", Gauge, POD_CPU_LABELS, HUB, Pod, Cpu, Watts(Attributed),
        "Active CPU power attributed to the pod over the last interval, in watts.";
    CONTAINER_CPU_JOULES = "kepler_container_cpu_joules_total", Counter, CONTAINER_CPU_LABELS, HUB, Container, Cpu, Joules(Attributed),
        "Active CPU energy attributed to the container, in joules.";
    CONTAINER_CPU_WATTS = "kepler_container_cpu_watts", Gauge, CONTAINER_CPU_LABELS, HUB, Container, Cpu, Watts(Attributed),
        "Active CPU power attributed to the container over the last interval, in watts.";
    CONTAINER_CPU_SECONDS = "kepler_container_cpu_seconds_total", Counter, CONTAINER_SECONDS_LABELS, HUB, Container, None, Other,
        "CPU time of the container that its energy was split by, in seconds.";
    POD_INFO = "kepler_pod_info", Gauge, POD_INFO_LABELS, HUB, Pod, None, Info,
        "Names of a pod with energy series (value 1), for joins on pod_id; hub_user and hub_server only for JupyterHub user servers.";
    PROCESS_CPU_JOULES = "kepler_process_cpu_joules_total", Counter, PROCESS_LABELS, NONE, Process, Cpu, Joules(Attributed),
        "Active CPU energy of the process by its own CPU time, in joules.";
    PROCESS_CPU_WATTS = "kepler_process_cpu_watts", Gauge, PROCESS_LABELS, NONE, Process, Cpu, Watts(Attributed),
        "Active CPU power of the process over the last interval, in watts.";
    PROCESS_CPU_SECONDS = "kepler_process_cpu_seconds_total", Counter, PROCESS_SECONDS_LABELS, NONE, Process, None, Other,
        "User and system CPU time of the process while it was watched, in seconds.";
    // GPUs.
    NODE_GPU_JOULES = "kepler_node_gpu_joules_total", Counter, GPU_LABELS, NONE, GpuDevice, Gpu, Joules(Total),
        "Energy of the GPU, in joules.";
    NODE_GPU_IDLE_JOULES = "kepler_node_gpu_idle_joules_total", Counter, GPU_LABELS, NONE, GpuDevice, Gpu, Joules(Idle),
        "Idle energy of the GPU, in joules.";
    NODE_GPU_ACTIVE_JOULES = "kepler_node_gpu_active_joules_total", Counter, GPU_LABELS, NONE, GpuDevice, Gpu, Joules(Active),
        "Active (non-idle) energy of the GPU, in joules.";
    NODE_GPU_UNATTRIBUTED_JOULES = "kepler_node_gpu_unattributed_joules_total", Counter, GPU_LABELS, NONE, GpuDevice, Gpu, Joules(Unattributed),
        "Active GPU energy no pod received (host processes, unplaceable or no processes), in joules.";
    NODE_GPU_TERMINATED_PODS_JOULES = "kepler_node_gpu_terminated_pods_joules_total", Counter, GPU_LABELS, NONE, GpuDevice, Gpu, Joules(TerminatedPods),
        "Active GPU energy of pods whose series were removed after the grace period, in joules.";
    NODE_GPU_WATTS = "kepler_node_gpu_watts", Gauge, GPU_LABELS, NONE, GpuDevice, Gpu, Watts(Total),
        "Power of the GPU over the last interval, in watts.";
    NODE_GPU_IDLE_WATTS = "kepler_node_gpu_idle_watts", Gauge, GPU_LABELS, NONE, GpuDevice, Gpu, Watts(Idle),
        "Idle power of the GPU over the last interval, in watts.";
    NODE_GPU_ACTIVE_WATTS = "kepler_node_gpu_active_watts", Gauge, GPU_LABELS, NONE, GpuDevice, Gpu, Watts(Active),
        "Active power of the GPU over the last interval, in watts.";
    NODE_GPU_INFO = "kepler_node_gpu_info", Gauge, GPU_INFO_LABELS, NONE, GpuDevice, Gpu, Info,
        "GPU identity and how its energy is measured (energy_counter or power_integral); value 1.";
    POD_GPU_JOULES = "kepler_pod_gpu_joules_total", Counter, POD_GPU_LABELS, HUB, Pod, Gpu, Joules(Attributed),
        "Active GPU energy attributed to the pod on this GPU (or MIG instance), in joules.";
    POD_GPU_WATTS = "kepler_pod_gpu_watts", Gauge, POD_GPU_LABELS, HUB, Pod, Gpu, Watts(Attributed),
        "Active GPU power attributed to the pod over the last interval, in watts.";
    CONTAINER_GPU_JOULES = "kepler_container_gpu_joules_total", Counter, CONTAINER_GPU_LABELS, HUB_AND_KEPLER07, Container, Gpu, Joules(Attributed),
        "Active GPU energy attributed to the container on this GPU (or MIG instance), in joules.";
    CONTAINER_GPU_WATTS = "kepler_container_gpu_watts", Gauge, CONTAINER_GPU_LABELS, HUB, Container, Gpu, Watts(Attributed),
        "Active GPU power attributed to the container over the last interval, in watts.";
    // Exporter self-metrics.
    EXPORTER_BUILD_INFO = "kepler_exporter_build_info", Gauge, BUILD_LABELS, NONE, Exporter, None, Info,
        "Build of the running exporter; value 1.";
    BUILD_INFO = "kepler_build_info", Gauge, KEPLER_BUILD_LABELS, NONE, Exporter, None, Info,
        "Build of the running exporter with Kepler's labels (goversion holds the Rust version); value 1.";
    ENERGY_SOURCE_INFO = "kepler_exporter_energy_source_info", Gauge, SOURCE_LABELS, NONE, Exporter, None, Info,
        "Node energy source in use: rapl (measured) or estimate (modelled from CPU utilisation); value 1.";
    CPU_SOURCE_INFO = "kepler_exporter_cpu_source_info", Gauge, &["node_name", "source", "reason"], NONE, Exporter, None, Info,
        "CPU-activity source used to split energy between pods, and why it was chosen (reason: flag, process_metrics, cpu_counters, cheapest, ebpf_unavailable, cgroup_unavailable); value 1.";
    CPU_SOURCE_MEASURE_INFO = "kepler_exporter_cpu_source_measure_info", Gauge, &["node_name", "source", "measure"], NONE, Exporter, None, Info,
        "What the CPU-activity source splits energy by: cpu_time, or cycles/instructions where a PMU is read; value 1.";
    CPU_SOURCE_EVENTS = "kepler_exporter_cpu_source_events_total", Counter, &["node_name", "source", "event"], NONE, Exporter, None, Other,
        "Events counted by the CPU-activity source (eBPF: context switches seen, slices dropped because a map was full, drain calls).";
    BPF_RUN_SECONDS = "kepler_exporter_bpf_run_seconds_total", Counter, &["node_name", "program"], NONE, Exporter, None, Other,
        "Time the kernel spent running each of the exporter's eBPF programs since they were loaded (run_time_ns), in seconds; only while kernel.bpf_stats_enabled=1 (the kernel counts nothing otherwise, and the family is absent).";
    SOURCE_UP = "kepler_exporter_source_up", Gauge, SOURCE_LABELS, NONE, Exporter, None, Other,
        "1 when the input could be read in the last tick, 0 when it could not (see the logs).";
    SOURCE_ERRORS = "kepler_exporter_source_errors_total", Counter, &["node_name", "source", "kind"], NONE, Exporter, None, Other,
        "Skipped reads and rejected measurements by input and kind.";
    POD_METADATA_SYNCED = "kepler_exporter_pod_metadata_synced", Gauge, NODE_ONLY, NONE, Exporter, None, Other,
        "1 when the Kubernetes pod cache holds a complete list of this node's pods and its watch is not failing; 0 otherwise (pods then keep their last known names, or pod_id only).";
    POD_METADATA_PODS = "kepler_exporter_pod_metadata_pods", Gauge, NODE_ONLY, NONE, Exporter, None, Other,
        "Pods in the Kubernetes pod cache (deleted pods within their retention included).";
    POD_METADATA_ERRORS = "kepler_exporter_pod_metadata_errors_total", Counter, &["node_name", "kind"], NONE, Exporter, None, Other,
        "Kubernetes list/watch errors and skipped pod objects, by kind.";
    TICKS = "kepler_exporter_ticks_total", Counter, NODE_ONLY, NONE, Exporter, None, Other,
        "Measurement ticks completed.";
    TICK_SECONDS = "kepler_exporter_tick_seconds_total", Counter, NODE_ONLY, NONE, Exporter, None, Other,
        "Wall time spent measuring and attributing, summed over ticks, in seconds.";
    CPU_EXCESS_SECONDS = "kepler_exporter_cpu_excess_seconds_total", Counter, &["node_name", "outcome"], NONE, Exporter, None, Other,
        "Pods' CPU time above the node's busy time in an interval, in seconds: carried into the next interval (outcome=carried), or dropped beyond the bound (one interval's busy time, at least 1 % of its CPU capacity) or owed to a pod that is gone (outcome=clipped).";
    TICK_DURATION_SECONDS = "kepler_exporter_tick_duration_seconds", Gauge, NODE_ONLY, NONE, Exporter, None, Other,
        "Wall time of the last tick, in seconds.";
    LAST_TICK_TIMESTAMP_SECONDS = "kepler_exporter_last_tick_timestamp_seconds", Gauge, NODE_ONLY, NONE, Exporter, None, Other,
        "Unix time at which the served snapshot was taken.";
    SERIES = "kepler_exporter_series", Gauge, NODE_ONLY, NONE, Exporter, None, Other,
        "Series in this exposition, this one included.";
    // Kepler 0.7 families, only with --metrics-compat kepler-0.7 (docs/metrics.md).
    KEPLER07_NODE_PACKAGE_JOULES = "kepler_node_package_joules_total", Counter, KEPLER07_NODE_LABELS, NONE, Kepler07Node, Cpu, Joules(Total),
        "Kepler 0.7: energy of the package zone by mode (dynamic or idle), in joules.";
    KEPLER07_NODE_CORE_JOULES = "kepler_node_core_joules_total", Counter, KEPLER07_NODE_LABELS, NONE, Kepler07Node, Cpu, Joules(Total),
        "Kepler 0.7: energy of the core zone by mode, in joules.";
    KEPLER07_NODE_UNCORE_JOULES = "kepler_node_uncore_joules_total", Counter, KEPLER07_NODE_LABELS, NONE, Kepler07Node, Cpu, Joules(Total),
        "Kepler 0.7: energy of the uncore zone by mode, in joules.";
    KEPLER07_NODE_DRAM_JOULES = "kepler_node_dram_joules_total", Counter, KEPLER07_NODE_LABELS, NONE, Kepler07Node, Cpu, Joules(Total),
        "Kepler 0.7: energy of the dram zone by mode, in joules.";
    KEPLER07_NODE_OTHER_JOULES = "kepler_node_other_joules_total", Counter, KEPLER07_NODE_LABELS, NONE, Kepler07Node, Cpu, Joules(Total),
        "Kepler 0.7: platform energy outside package and dram (psys - package - dram, at least 0; 0 without psys), by mode, in joules.";
    KEPLER07_NODE_PLATFORM_JOULES = "kepler_node_platform_joules_total", Counter, KEPLER07_NODE_LABELS, NONE, Kepler07Node, Cpu, Joules(Total),
        "Kepler 0.7: energy of the psys zone by mode (only where psys exists), in joules.";
    KEPLER07_NODE_INFO = "kepler_node_info", Gauge, KEPLER07_NODE_INFO_LABELS, NONE, Kepler07Node, None, Info,
        "Kepler 0.7: the node's CPU model and energy sources; value 1.";
    KEPLER07_CONTAINER_PACKAGE_JOULES = "kepler_container_package_joules_total", Counter, KEPLER07_CONTAINER_LABELS, NONE, Kepler07Container, Cpu, Joules(Attributed),
        "Kepler 0.7: package energy of the container by mode, in joules.";
    KEPLER07_CONTAINER_CORE_JOULES = "kepler_container_core_joules_total", Counter, KEPLER07_CONTAINER_LABELS, NONE, Kepler07Container, Cpu, Joules(Attributed),
        "Kepler 0.7: core energy of the container by mode, in joules.";
    KEPLER07_CONTAINER_UNCORE_JOULES = "kepler_container_uncore_joules_total", Counter, KEPLER07_CONTAINER_LABELS, NONE, Kepler07Container, Cpu, Joules(Attributed),
        "Kepler 0.7: uncore energy of the container by mode, in joules.";
    KEPLER07_CONTAINER_DRAM_JOULES = "kepler_container_dram_joules_total", Counter, KEPLER07_CONTAINER_LABELS, NONE, Kepler07Container, Cpu, Joules(Attributed),
        "Kepler 0.7: dram energy of the container by mode, in joules.";
    KEPLER07_CONTAINER_OTHER_JOULES = "kepler_container_other_joules_total", Counter, KEPLER07_CONTAINER_LABELS, NONE, Kepler07Container, Cpu, Joules(Attributed),
        "Kepler 0.7: platform energy of the container outside package and dram (0 without psys), by mode, in joules.";
    KEPLER07_CONTAINER_PLATFORM_JOULES = "kepler_container_platform_joules_total", Counter, KEPLER07_CONTAINER_LABELS, NONE, Kepler07Container, Cpu, Joules(Attributed),
        "Kepler 0.7: psys energy of the container by mode (only where psys exists), in joules.";
    KEPLER07_CONTAINER_JOULES = "kepler_container_joules_total", Counter, KEPLER07_CONTAINER_LABELS, NONE, Kepler07Container, Cpu, Joules(Total),
        "Kepler 0.7: package + dram + other + GPU energy of the container by mode, in joules.";
    // The HTTP server's own families.
    HTTP_CONNECTIONS = "kepler_exporter_http_connections", Gauge, &[], NONE, Server, None, Other,
        "Connections holding a slot of the metrics server (at most --web.max-connections).";
    HTTP_CONNECTIONS_WAITING = "kepler_exporter_http_connections_waiting", Gauge, &[], NONE, Server, None, Other,
        "Accepted connections without a slot: their first request head is not complete yet, or it is and they wait for a slot.";
    HTTP_CONNECTIONS_ACCEPTED = "kepler_exporter_http_connections_accepted_total", Counter, &[], NONE, Server, None, Other,
        "Connections the metrics server accepted.";
    HTTP_CONNECTIONS_CLOSED = "kepler_exporter_http_connections_closed_total", Counter, &["reason"], NONE, Server, None, Other,
        "Connections the server closed itself: evicted at the connection limit, past a timeout, or answered 503 when overloaded.";
    HTTP_ACCEPT_ERRORS = "kepler_exporter_http_accept_errors_total", Counter, &[], NONE, Server, None, Other,
        "Failed accepts (e.g. out of file descriptors); the server backs off and keeps measuring.";
    HTTP_TLS_HANDSHAKE_FAILURES = "kepler_exporter_http_tls_handshake_failures_total", Counter, &[], NONE, Server, None, Other,
        "TLS handshakes that failed (no or untrusted client certificate, not TLS, timeouts).";
    HTTP_AUTH_FAILURES = "kepler_exporter_http_auth_failures_total", Counter, &[], NONE, Server, None, Other,
        "Requests answered 401: no, malformed or wrong basic-auth credentials.";
    WEB_CONFIG_RELOADS = "kepler_exporter_web_config_reloads_total", Counter, &["result"], NONE, Server, None, Other,
        "Reloads of --web.config.file after it or a file it names changed.";
}

/// The family of an exposed sample name (`kepler_node_cpu_joules_total`, not the descriptor name).
pub(crate) fn find(name: &str) -> Option<&'static Family> {
    ALL.iter().find(|f| f.name == name)
}

/// The families a reader wants, as a PromQL `__name__` regex alternation (`a|b|c`).
pub(crate) fn name_regex(families: &[&Family]) -> String {
    families
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn node_total_rule() {
        assert!(counts_toward_node_total(false, "package"));
        assert!(counts_toward_node_total(false, "dram"));
        assert!(!counts_toward_node_total(false, "core"));
        assert!(!counts_toward_node_total(false, "psys"));
        assert!(counts_toward_node_total(true, "psys"));
        assert!(!counts_toward_node_total(true, "package"));
    }

    #[test]
    fn names_are_unique_and_follow_conventions() {
        let mut seen = BTreeSet::new();
        for f in ALL {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("kepler_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
            match f.measure {
                Measure::Joules(_) => assert!(f.name.ends_with("_joules_total"), "{}", f.name),
                Measure::Watts(_) => assert!(f.name.ends_with("_watts"), "{}", f.name),
                Measure::Info => assert!(f.name.ends_with("_info"), "{}", f.name),
                Measure::Ratio => assert!(f.name.ends_with("_ratio"), "{}", f.name),
                Measure::Other => {}
            }
            assert!(!f.help.is_empty() && !f.help.contains('\n'), "{}", f.name);
            if f.scope != Scope::Server {
                assert_eq!(f.labels.first(), Some(&"node_name"), "{}", f.name);
            }
            assert_eq!(find(f.name), Some(f));
        }
        assert_eq!(find("kepler_nothing"), None);
    }

    #[test]
    fn joules_families_name_their_identity() {
        let identity = |f: &Family| f.identity();
        assert_eq!(identity(&NODE_CPU_SYSTEM_JOULES), Some(Identity::CpuZone));
        assert_eq!(identity(&CONTAINER_CPU_JOULES), Some(Identity::CpuPod));
        assert_eq!(identity(&NODE_GPU_UNATTRIBUTED_JOULES), Some(Identity::Gpu));
        assert_eq!(identity(&POD_GPU_JOULES), Some(Identity::GpuPod));
        assert_eq!(identity(&PROCESS_CPU_JOULES), None);
        assert_eq!(identity(&NODE_GPU_WATTS), None);
    }

    /// Metric names and types of the tables in docs/metrics.md: the first cell's backticked names
    /// (several per row allowed) and the second cell's type.
    fn documented() -> BTreeMap<String, String> {
        let text = include_str!("../../docs/metrics.md");
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("| `kepler_")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (names, kind) = (cells[1], cells[2]);
            let kind = kind.split_whitespace().next().unwrap_or("").to_string();
            for name in names.split('`').skip(1).step_by(2) {
                assert!(
                    out.insert(name.to_string(), kind.clone()).is_none(),
                    "{name} documented twice"
                );
            }
        }
        out
    }

    #[test]
    fn docs_and_catalog_list_the_same_families() {
        let docs = documented();
        let catalog: BTreeMap<String, String> = ALL
            .iter()
            .map(|f| (f.name.to_string(), f.kind.as_str().to_string()))
            .collect();
        let only_docs: Vec<_> = docs.keys().filter(|n| !catalog.contains_key(*n)).collect();
        let only_catalog: Vec<_> = catalog.keys().filter(|n| !docs.contains_key(*n)).collect();
        assert!(
            only_docs.is_empty() && only_catalog.is_empty(),
            "docs/metrics.md only: {only_docs:?}; catalog only: {only_catalog:?}"
        );
        assert_eq!(
            docs, catalog,
            "types differ between docs/metrics.md and the catalog"
        );
    }
}
