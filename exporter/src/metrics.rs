//! Snapshot -> Prometheus text exposition (format 0.0.4, which promtool accepts). Encodes only what
//! the snapshot holds: no measuring, no I/O, no global registry (one is built per encode).
//! Metric names and labels follow Kepler's so its dashboards keep working; see docs/metrics.md.

use crate::resource::pods::HubServer;
use crate::snapshot::Snapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::cell::Cell;
use std::sync::Arc;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Build facts for `kepler_exporter_build_info` / `kepler_build_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    pub revision: &'static str,
}

impl BuildInfo {
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            revision: option_env!("KEPLER_RS_GIT_REVISION").unwrap_or("unknown"),
        }
    }
}

/// Encode one snapshot. One call always sees one snapshot, so the identities hold within a scrape.
pub fn encode(snapshot: Arc<Snapshot>, build: &BuildInfo) -> Result<String, std::fmt::Error> {
    // About 220 bytes a series: size the buffer once instead of regrowing it (2.5 MB at 1,000 pods).
    let zones = snapshot.zones.len().max(1);
    let consumers: usize = snapshot
        .pods
        .iter()
        .map(|p| 1 + p.containers.len())
        .sum::<usize>()
        + snapshot.processes.len();
    let capacity = 220 * (2 * zones * consumers + 64);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snapshot,
        build: build.clone(),
    }));
    let mut out = String::with_capacity(capacity);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Arc<Snapshot>,
    build: BuildInfo,
}

/// Writes families and counts the series written.
struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
    series: Cell<u64>,
}

impl Families<'_> {
    fn family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return Ok(());
        }
        let mut metric = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, value) in samples {
            let value = if value.is_finite() { value } else { 0.0 };
            let m = metric.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value.max(0.0)).encode(m)?,
                _ => ConstGauge::new(value).encode(m)?,
            }
            self.series.set(self.series.get() + 1);
        }
        Ok(())
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.snapshot;
        let node = s.node_name.as_str();
        let source = s.energy_source.as_str();
        let mut f = Families {
            encoder,
            series: Cell::new(0),
        };
        use MetricType::{Counter, Gauge};

        // Node zones.
        type NodeField = fn(&crate::snapshot::NodeZone) -> f64;
        let node_families: [(&str, &str, MetricType, NodeField); 9] = [
            ("kepler_node_cpu_joules", "Energy of the zone, in joules (zones overlap: core and uncore are inside package; never sum zones).", Counter, |n| n.total_joules),
            ("kepler_node_cpu_active_joules", "Active (non-idle) energy of the zone, in joules.", Counter, |n| n.active_joules),
            ("kepler_node_cpu_idle_joules", "Idle energy of the zone, in joules.", Counter, |n| n.idle_joules),
            ("kepler_node_cpu_system_joules", "Active energy of everything outside pods (host daemons, kernel), in joules.", Counter, |n| n.system_joules),
            ("kepler_node_cpu_terminated_pods_joules", "Active energy of pods whose series were removed after the grace period, in joules.", Counter, |n| n.terminated_pods_joules),
            ("kepler_node_cpu_watts", "Power of the zone over the last interval, in watts.", Gauge, |n| n.total_watts),
            ("kepler_node_cpu_active_watts", "Active power of the zone over the last interval, in watts.", Gauge, |n| n.active_watts),
            ("kepler_node_cpu_idle_watts", "Idle power of the zone over the last interval, in watts.", Gauge, |n| n.idle_watts),
            ("kepler_node_cpu_system_watts", "Active power of everything outside pods over the last interval, in watts.", Gauge, |n| n.system_watts),
        ];
        // Before the first complete interval there is nothing measured: no energy series at all.
        let zones = if s.is_ready() {
            s.zones.as_slice()
        } else {
            &[]
        };
        for (name, help, kind, field) in node_families {
            f.family(
                name,
                help,
                kind,
                zones.iter().zip(&s.node).map(|(z, n)| {
                    (
                        [
                            ("node_name", node),
                            ("zone", z.as_str()),
                            ("source", source),
                        ],
                        field(n),
                    )
                }),
            )?;
        }
        // Per socket (RAPL only): the zone's energy on each socket; Σ over sockets = the node series.
        let sockets = if s.is_ready() {
            s.sockets.as_slice()
        } else {
            &[]
        };
        let socket_labels: Vec<String> = sockets.iter().map(|z| z.socket.to_string()).collect();
        type SocketField = fn(&crate::snapshot::SocketZone) -> f64;
        let socket_families: [(&str, &str, MetricType, SocketField); 2] = [
            ("kepler_node_cpu_socket_joules", "Energy of the zone on one CPU socket (RAPL package index), in joules; summed over sockets it is kepler_node_cpu_joules_total.", Counter, |z| z.joules),
            ("kepler_node_cpu_socket_watts", "Power of the zone on one CPU socket over the last interval, in watts.", Gauge, |z| z.watts),
        ];
        for (name, help, kind, field) in socket_families {
            let series = sockets.iter().zip(&socket_labels).map(|(z, socket)| {
                let labels = [
                    ("node_name", node),
                    ("zone", z.zone.as_str()),
                    ("socket", socket.as_str()),
                    ("source", source),
                ];
                (labels, field(z))
            });
            f.family(name, help, kind, series)?;
        }
        if s.is_ready() {
            f.family(
                "kepler_node_cpu_usage_ratio",
                "Node CPU utilisation over the last interval, 0 to 1.",
                Gauge,
                [([("node_name", node)], s.cpu_usage_ratio)],
            )?;
        }

        // Pods. Labels borrow from the snapshot: no allocation per series (1,000 pods make 12,000).
        for (name, help, kind, watts) in [
            (
                "kepler_pod_cpu_joules",
                "Active CPU energy attributed to the pod, in joules.",
                Counter,
                false,
            ),
            (
                "kepler_pod_cpu_watts",
                "Active CPU power attributed to the pod over the last interval, in watts.",
                Gauge,
                true,
            ),
        ] {
            f.family(
                name,
                help,
                kind,
                s.pods.iter().flat_map(|p| {
                    s.zones.iter().enumerate().map(move |(i, z)| {
                        let v = if watts { p.watts[i] } else { p.joules[i] };
                        let labels = [
                            ("node_name", node),
                            ("pod_id", p.uid.as_str()),
                            ("pod_name", p.name.as_deref().unwrap_or("")),
                            ("pod_namespace", p.namespace.as_deref().unwrap_or("")),
                            ("zone", z.as_str()),
                        ];
                        (HubLabels(labels, p.hub.as_ref()), v)
                    })
                }),
            )?;
        }

        // Containers.
        for (name, help, kind, watts) in [
            (
                "kepler_container_cpu_joules",
                "Active CPU energy attributed to the container, in joules.",
                Counter,
                false,
            ),
            (
                "kepler_container_cpu_watts",
                "Active CPU power attributed to the container over the last interval, in watts.",
                Gauge,
                true,
            ),
        ] {
            f.family(
                name,
                help,
                kind,
                s.pods.iter().flat_map(|p| {
                    p.containers.iter().flat_map(move |c| {
                        s.zones.iter().enumerate().map(move |(i, z)| {
                            let v = if watts { c.watts[i] } else { c.joules[i] };
                            let labels = [
                                ("node_name", node),
                                ("container_id", c.id.as_str()),
                                ("container_name", c.name.as_deref().unwrap_or("")),
                                ("pod_id", p.uid.as_str()),
                                ("zone", z.as_str()),
                            ];
                            (HubLabels(labels, p.hub.as_ref()), v)
                        })
                    })
                }),
            )?;
        }

        // Pod names for joins: one series per pod whose metadata is known.
        f.family(
            "kepler_pod_info",
            "Names of a pod with energy series (value 1), for joins on pod_id; hub_user and hub_server only for JupyterHub user servers.",
            Gauge,
            s.pods.iter().filter(|p| p.name.is_some()).map(|p| {
                let labels = [
                    ("node_name", node),
                    ("pod_id", p.uid.as_str()),
                    ("pod_name", p.name.as_deref().unwrap_or("")),
                    ("pod_namespace", p.namespace.as_deref().unwrap_or("")),
                ];
                (HubLabels(labels, p.hub.as_ref()), 1.0)
            }),
        )?;

        // Processes (only when enabled: the list is empty otherwise).
        for (name, help, kind, watts) in [
            (
                "kepler_process_cpu_joules",
                "Active CPU energy of the process by its own CPU time, in joules.",
                Counter,
                false,
            ),
            (
                "kepler_process_cpu_watts",
                "Active CPU power of the process over the last interval, in watts.",
                Gauge,
                true,
            ),
        ] {
            f.family(
                name,
                help,
                kind,
                s.processes.iter().flat_map(|p| {
                    s.zones.iter().enumerate().map(move |(i, z)| {
                        let v = if watts { p.watts[i] } else { p.joules[i] };
                        (
                            [
                                ("node_name", node.to_string()),
                                ("pid", p.pid.to_string()),
                                ("comm", p.comm.clone()),
                                (
                                    "container_id",
                                    p.container
                                        .as_ref()
                                        .map(|c| c.to_string())
                                        .unwrap_or_default(),
                                ),
                                ("zone", z.as_str().to_string()),
                            ],
                            v,
                        )
                    })
                }),
            )?;
        }

        // GPUs (only when GPU support is on and the first interval is complete).
        if s.is_ready() {
            gpu_families(&mut f, s, node)?;
        }

        // Self-metrics.
        let build = [
            ("node_name", node),
            ("version", self.build.version),
            ("revision", self.build.revision),
        ];
        f.family(
            "kepler_exporter_build_info",
            "Build of the running exporter; value 1.",
            Gauge,
            [(build, 1.0)],
        )?;
        f.family(
            "kepler_build_info",
            "Build of the running exporter (Kepler-compatible name); value 1.",
            Gauge,
            [(build, 1.0)],
        )?;
        f.family(
            "kepler_exporter_energy_source_info",
            "Node energy source in use: rapl (measured) or estimate (modelled from CPU utilisation); value 1.",
            Gauge,
            [([("node_name", node), ("source", source)], 1.0)],
        )?;
        f.family(
            "kepler_exporter_cpu_source_info",
            "CPU-activity source used to split energy between pods; value 1.",
            Gauge,
            [([("node_name", node), ("source", s.cpu_source)], 1.0)],
        )?;
        let cpu_source = [("node_name", node), ("source", s.cpu_source)];
        f.family(
            "kepler_exporter_cpu_source_measure_info",
            "What the CPU-activity source splits energy by: cpu_time, or cycles/instructions where a PMU is read; value 1.",
            Gauge,
            s.health
                .cpu_source_stats
                .counters
                .iter()
                .map(|c| ([cpu_source[0], cpu_source[1], ("measure", *c)], 1.0)),
        )?;
        f.family(
            "kepler_exporter_cpu_source_events",
            "Events counted by the CPU-activity source (eBPF: context switches seen, slices dropped because a map was full, drain calls).",
            Counter,
            s.health
                .cpu_source_stats
                .events
                .iter()
                .map(|(e, n)| ([cpu_source[0], cpu_source[1], ("event", *e)], *n as f64)),
        )?;
        f.family(
            "kepler_exporter_source_up",
            "1 when the input could be read in the last tick, 0 when it could not (see the logs).",
            Gauge,
            s.health.sources.iter().map(|h| {
                (
                    [("node_name", node), ("source", h.source)],
                    if h.up { 1.0 } else { 0.0 },
                )
            }),
        )?;
        f.family(
            "kepler_exporter_source_errors",
            "Skipped reads and rejected measurements by input and kind.",
            Counter,
            s.health.issues.iter().map(|((input, kind), n)| {
                (
                    [
                        ("node_name", node),
                        ("source", input.as_str()),
                        ("kind", kind.as_str()),
                    ],
                    *n as f64,
                )
            }),
        )?;
        let node_only = [("node_name", node)];
        if let Some(sync) = &s.health.pod_metadata {
            f.family(
                "kepler_exporter_pod_metadata_synced",
                "1 when the Kubernetes pod cache holds a complete list of this node's pods and its watch is not failing; 0 otherwise (pods then keep their last known names, or pod_id only).",
                Gauge,
                [(node_only, if sync.synced { 1.0 } else { 0.0 })],
            )?;
            f.family(
                "kepler_exporter_pod_metadata_pods",
                "Pods in the Kubernetes pod cache (deleted pods within their retention included).",
                Gauge,
                [(node_only, sync.pods as f64)],
            )?;
            f.family(
                "kepler_exporter_pod_metadata_errors",
                "Kubernetes list/watch errors and skipped pod objects, by kind.",
                Counter,
                sync.errors
                    .iter()
                    .map(|(kind, n)| ([("node_name", node), ("kind", *kind)], *n as f64)),
            )?;
        }
        f.family(
            "kepler_exporter_ticks",
            "Measurement ticks completed.",
            Counter,
            [(node_only, s.health.ticks as f64)],
        )?;
        f.family(
            "kepler_exporter_tick_seconds",
            "Wall time spent measuring and attributing, summed over ticks, in seconds.",
            Counter,
            [(node_only, s.health.tick_seconds_total)],
        )?;
        f.family(
            "kepler_exporter_cpu_excess_seconds",
            "Pods' CPU time above the node's busy time in an interval, in seconds: carried into the next interval (outcome=carried), or dropped beyond the bound (one interval's busy time, at least 1 % of its CPU capacity) or owed to a pod that is gone (outcome=clipped).",
            Counter,
            [
                (
                    [("node_name", node), ("outcome", "carried")],
                    s.health.cpu_time_carried_seconds,
                ),
                (
                    [("node_name", node), ("outcome", "clipped")],
                    s.health.cpu_time_clipped_seconds,
                ),
            ],
        )?;
        f.family(
            "kepler_exporter_tick_duration_seconds",
            "Wall time of the last tick, in seconds.",
            Gauge,
            [(node_only, s.health.last_tick_seconds)],
        )?;
        f.family(
            "kepler_exporter_last_tick_timestamp_seconds",
            "Unix time at which the served snapshot was taken.",
            Gauge,
            [(node_only, s.health.taken_at_unix_seconds)],
        )?;
        let count = f.series.get() + 1;
        f.family(
            "kepler_exporter_series",
            "Series in this exposition, this one included.",
            Gauge,
            [(node_only, count as f64)],
        )?;
        Ok(())
    }
}

/// Labels of a pod or container series, plus `hub_user` and `hub_server` for JupyterHub user
/// servers (nothing for other pods). Borrows everything: encoding allocates no label strings.
struct HubLabels<'a, const N: usize>([(&'static str, &'a str); N], Option<&'a HubServer>);

impl<const N: usize> EncodeLabelSet for HubLabels<'_, N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)?;
        if let Some(hub) = self.1 {
            [
                ("hub_user", hub.user.as_str()),
                ("hub_server", hub.server.as_str()),
            ]
            .encode(encoder)?;
        }
        Ok(())
    }
}

/// `hub_user` and `hub_server` for JupyterHub user servers; nothing for other pods.
fn hub_labels(labels: &mut Vec<(&'static str, String)>, hub: Option<&HubServer>) {
    if let Some(hub) = hub {
        labels.push(("hub_user", hub.user.clone()));
        labels.push(("hub_server", hub.server.clone()));
    }
}

/// `kepler_node_gpu_*`, `kepler_pod_gpu_*`, `kepler_container_gpu_*` (see docs/metrics.md).
fn gpu_families(f: &mut Families<'_>, s: &Snapshot, node: &str) -> Result<(), std::fmt::Error> {
    use crate::gpu::ledger::{GpuDeviceSeries, GpuPodSeries};
    use MetricType::{Counter, Gauge};
    let gpu = &s.gpu;
    let device_labels = |d: &GpuDeviceSeries| {
        [
            ("node_name", node.to_string()),
            ("gpu", d.index.to_string()),
            ("gpu_uuid", d.uuid.clone()),
            ("gpu_name", d.name.clone()),
        ]
    };
    type DeviceField = fn(&GpuDeviceSeries) -> f64;
    let device_families: [(&str, &str, MetricType, DeviceField); 8] = [
        ("kepler_node_gpu_joules", "Energy of the GPU, in joules.", Counter, |d| d.total_joules),
        ("kepler_node_gpu_idle_joules", "Idle energy of the GPU, in joules.", Counter, |d| d.idle_joules),
        ("kepler_node_gpu_active_joules", "Active (non-idle) energy of the GPU, in joules.", Counter, |d| d.active_joules),
        ("kepler_node_gpu_unattributed_joules", "Active GPU energy no pod received (host processes, unplaceable or no processes), in joules.", Counter, |d| d.unattributed_joules),
        ("kepler_node_gpu_terminated_pods_joules", "Active GPU energy of pods whose series were removed after the grace period, in joules.", Counter, |d| d.terminated_pods_joules),
        ("kepler_node_gpu_watts", "Power of the GPU over the last interval, in watts.", Gauge, |d| d.watts),
        ("kepler_node_gpu_idle_watts", "Idle power of the GPU over the last interval, in watts.", Gauge, |d| d.idle_watts),
        ("kepler_node_gpu_active_watts", "Active power of the GPU over the last interval, in watts.", Gauge, |d| d.active_watts),
    ];
    for (name, help, kind, field) in device_families {
        f.family(
            name,
            help,
            kind,
            gpu.devices.iter().map(|d| (device_labels(d), field(d))),
        )?;
    }
    f.family(
        "kepler_node_gpu_info",
        "GPU identity and how its energy is measured (energy_counter or power_integral); value 1.",
        Gauge,
        gpu.devices.iter().map(|d| {
            let [n, g, u, name] = device_labels(d);
            ([n, g, u, name, ("method", d.method.to_string())], 1.0)
        }),
    )?;
    let device_of = |p: &GpuPodSeries| gpu.devices.get(p.device);
    let gpu_labels = |p: &GpuPodSeries| {
        let d = device_of(p);
        [
            ("gpu", d.map(|d| d.index.to_string()).unwrap_or_default()),
            ("gpu_uuid", d.map(|d| d.uuid.clone()).unwrap_or_default()),
            ("gpu_instance", p.instance.clone().unwrap_or_default()),
        ]
    };
    for (name, help, kind, watts) in [
        (
            "kepler_pod_gpu_joules",
            "Active GPU energy attributed to the pod on this GPU (or MIG instance), in joules.",
            Counter,
            false,
        ),
        (
            "kepler_pod_gpu_watts",
            "Active GPU power attributed to the pod over the last interval, in watts.",
            Gauge,
            true,
        ),
    ] {
        f.family(
            name,
            help,
            kind,
            gpu.pods.iter().map(|p| {
                let [g, u, i] = gpu_labels(p);
                let mut labels = vec![
                    ("node_name", node.to_string()),
                    ("pod_id", p.uid.to_string()),
                    ("pod_name", p.name.clone().unwrap_or_default()),
                    ("pod_namespace", p.namespace.clone().unwrap_or_default()),
                ];
                hub_labels(&mut labels, p.hub.as_ref());
                labels.extend([g, u, i]);
                (labels, if watts { p.watts } else { p.joules })
            }),
        )?;
    }
    for (name, help, kind, watts) in [
        ("kepler_container_gpu_joules", "Active GPU energy attributed to the container on this GPU (or MIG instance), in joules.", Counter, false),
        ("kepler_container_gpu_watts", "Active GPU power attributed to the container over the last interval, in watts.", Gauge, true),
    ] {
        f.family(
            name,
            help,
            kind,
            gpu.pods.iter().flat_map(|p| {
                p.containers.iter().map(move |c| {
                    let [g, u, i] = gpu_labels(p);
                    let mut labels = vec![
                        ("node_name", node.to_string()),
                        ("container_id", c.id.to_string()),
                        ("container_name", c.name.clone().unwrap_or_default()),
                        ("pod_id", p.uid.to_string()),
                    ];
                    hub_labels(&mut labels, p.hub.as_ref());
                    labels.extend([g, u, i]);
                    (labels, if watts { c.watts } else { c.joules })
                })
            }),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::pods::{HubServer, MetadataSync};
    use crate::snapshot::{ContainerSeries, NodeZone, PodSeries, ProcessSeries, SocketZone};
    use crate::source::EnergySourceKind;
    use crate::units::{ContainerId, Pid, PodUid, ZoneKind};

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::empty("node-1".into(), EnergySourceKind::Rapl, "cgroup");
        s.health.intervals = 1;
        s.health.ticks = 2;
        s.zones = vec![ZoneKind::Package, ZoneKind::Dram];
        s.node = vec![
            NodeZone {
                total_joules: 10.0,
                idle_joules: 4.0,
                active_joules: 6.0,
                system_joules: 1.0,
                ..Default::default()
            },
            NodeZone {
                total_joules: f64::NAN,
                ..Default::default()
            },
        ];
        s.pods = vec![PodSeries {
            uid: PodUid::parse("6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11").unwrap(),
            name: Some("evil\"pod\\name\nwith-newline-ü".into()),
            namespace: Some("ns".into()),
            hub: Some(HubServer {
                user: "Zoë \"o'neil\"\nx".into(),
                server: "gpu".into(),
            }),
            ended: false,
            joules: vec![5.0, 0.0],
            watts: vec![1.0, 0.0],
            containers: vec![ContainerSeries {
                id: ContainerId::parse(&"ab".repeat(32)).unwrap(),
                name: None,
                joules: vec![5.0, -1.0],
                watts: vec![1.0, 0.0],
            }],
        }];
        s.pods.push(PodSeries {
            uid: PodUid::parse("7f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11").unwrap(),
            name: None,
            namespace: None,
            hub: None,
            ended: false,
            joules: vec![1.0, 0.0],
            watts: vec![1.0, 0.0],
            containers: vec![],
        });
        s.health.pod_metadata = Some(MetadataSync {
            synced: false,
            pods: 3,
            errors: [("gone", 2), ("watch_failed", 1)].into_iter().collect(),
        });
        s.processes = vec![ProcessSeries {
            pid: Pid(42),
            comm: "we\"ird\\comm".into(),
            container: None,
            joules: vec![1.0, 0.0],
            watts: vec![0.5, 0.0],
        }];
        s.gpu = gpu_snapshot();
        s.sockets = vec![
            SocketZone {
                zone: ZoneKind::Package,
                socket: 0,
                joules: 4.0,
                watts: 2.0,
            },
            SocketZone {
                zone: ZoneKind::Package,
                socket: 1,
                joules: 6.0,
                watts: 3.0,
            },
        ];
        s
    }

    #[test]
    fn socket_series_only_where_rapl_has_sockets() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        for expected in [
            r#"kepler_node_cpu_socket_joules_total{node_name="node-1",zone="package",socket="0",source="rapl"} 4.0"#,
            r#"kepler_node_cpu_socket_joules_total{node_name="node-1",zone="package",socket="1",source="rapl"} 6.0"#,
            r#"kepler_node_cpu_socket_watts{node_name="node-1",zone="package",socket="1",source="rapl"} 3.0"#,
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "missing {expected}:\n{text}"
            );
        }
        let mut s = snapshot();
        s.sockets.clear();
        let text = encode(Arc::new(s), &BuildInfo::current()).unwrap();
        assert!(
            !text.contains("socket"),
            "no socket families without sockets"
        );
    }

    fn gpu_snapshot() -> crate::gpu::ledger::GpuSnapshot {
        use crate::gpu::ledger::{GpuContainerSeries, GpuDeviceSeries, GpuPodSeries, GpuSnapshot};
        GpuSnapshot {
            devices: vec![GpuDeviceSeries {
                index: 0,
                uuid: "GPU-8f6d".into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                method: "energy_counter",
                total_joules: 900.0,
                idle_joules: 300.0,
                active_joules: 600.0,
                unattributed_joules: 100.0,
                watts: 300.0,
                ..Default::default()
            }],
            pods: vec![GpuPodSeries {
                device: 0,
                instance: Some("MIG-1c2d".into()),
                uid: PodUid::parse("6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11").unwrap(),
                name: Some("jupyter-alice".into()),
                namespace: Some("jhub".into()),
                hub: Some(HubServer {
                    user: "Zoë \"o'neil\"\nx".into(),
                    server: "gpu".into(),
                }),
                ended: false,
                joules: 500.0,
                watts: 150.0,
                containers: vec![GpuContainerSeries {
                    id: ContainerId::parse(&"cd".repeat(32)).unwrap(),
                    name: Some("notebook".into()),
                    joules: 450.0,
                    watts: 140.0,
                }],
            }],
        }
    }

    #[test]
    fn gpu_series_carry_device_pod_and_user_labels() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        assert!(text.contains(
            r#"kepler_node_gpu_joules_total{node_name="node-1",gpu="0",gpu_uuid="GPU-8f6d",gpu_name="NVIDIA H100 80GB HBM3"} 900"#
        ), "{text}");
        assert!(text
            .contains(r#"kepler_node_gpu_unattributed_joules_total{node_name="node-1",gpu="0""#));
        assert!(text.contains(r#"method="energy_counter"} 1"#));
        assert!(text.contains(
            r#"kepler_pod_gpu_joules_total{node_name="node-1",pod_id="6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11",pod_name="jupyter-alice",pod_namespace="jhub",hub_user="Zoë \"o'neil\"\nx",hub_server="gpu",gpu="0",gpu_uuid="GPU-8f6d",gpu_instance="MIG-1c2d"} 500"#
        ), "{text}");
        assert!(text.contains(r#"container_name="notebook",pod_id="6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11",hub_user="Zoë \"o'neil\"\nx",hub_server="gpu",gpu="0",gpu_uuid="GPU-8f6d",gpu_instance="MIG-1c2d"} 450"#), "{text}");
        assert!(text.contains("kepler_container_gpu_watts{"));
        // Before the first interval: no GPU series.
        let mut s = snapshot();
        s.health.intervals = 0;
        let text = encode(Arc::new(s), &BuildInfo::current()).unwrap();
        assert!(!text.contains("_gpu_"), "{text}");
    }

    #[test]
    fn hostile_label_values_are_escaped() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        assert!(
            text.contains(r#"pod_name="evil\"pod\\name\nwith-newline-ü""#),
            "{text}"
        );
        assert!(text.contains(r#"comm="we\"ird\\comm""#), "{text}");
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("kepler_"),
                "stray line: {line:?}"
            );
        }
    }

    #[test]
    fn hub_labels_only_on_user_servers_and_pod_info_only_for_named_pods() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        let user = r#"hub_user="Zoë \"o'neil\"\nx",hub_server="gpu""#;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let named = line.contains("6f1c9a4e-");
            let pod_line = line.starts_with("kepler_pod_") || line.starts_with("kepler_container_");
            if pod_line && named {
                assert!(line.contains(user), "{line}");
            } else {
                assert!(!line.contains("hub_"), "{line}");
            }
        }
        let info: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kepler_pod_info{"))
            .collect();
        assert_eq!(info.len(), 1, "only the pod with known names: {info:?}");
        assert!(info[0].contains(r#"pod_namespace="ns""#), "{}", info[0]);
        assert_eq!(info[0].rsplit_once(' ').unwrap().1.parse::<f64>(), Ok(1.0));
        for expected in [
            r#"kepler_exporter_pod_metadata_synced{node_name="node-1"} 0"#,
            r#"kepler_exporter_pod_metadata_pods{node_name="node-1"} 3"#,
            r#"kepler_exporter_pod_metadata_errors_total{node_name="node-1",kind="gone"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(expected)),
                "missing {expected}:\n{text}"
            );
        }
        // Without Kubernetes there are no pod-metadata self-metrics.
        let mut s = snapshot();
        s.health.pod_metadata = None;
        let text = encode(Arc::new(s), &BuildInfo::current()).unwrap();
        assert!(!text.contains("pod_metadata"));
    }

    #[test]
    fn counters_are_never_negative_or_nan() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
            assert!(value.is_finite(), "{line}");
            if line.contains("_total{") {
                assert!(value >= 0.0, "{line}");
            }
        }
        assert!(text.contains(
            r#"kepler_node_cpu_joules_total{node_name="node-1",zone="dram",source="rapl"} 0"#
        ));
    }

    #[test]
    fn every_series_carries_node_name_and_the_series_count_is_right() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.iter().all(|l| l.contains("node_name=\"node-1\"")));
        let count_line = samples
            .iter()
            .find(|l| l.starts_with("kepler_exporter_series"))
            .unwrap();
        let count: f64 = count_line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert_eq!(count as usize, samples.len());
    }

    #[test]
    fn kepler_compatible_names_are_present() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        for name in [
            "kepler_node_cpu_joules_total{",
            "kepler_node_cpu_active_joules_total{",
            "kepler_node_cpu_idle_joules_total{",
            "kepler_node_cpu_watts{",
            "kepler_node_cpu_usage_ratio{",
            "kepler_pod_cpu_joules_total{",
            "kepler_pod_cpu_watts{",
            "kepler_container_cpu_joules_total{",
            "kepler_container_cpu_watts{",
            "kepler_process_cpu_joules_total{",
            "kepler_node_cpu_system_joules_total{",
            "kepler_build_info{",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }

    #[test]
    fn promtool_accepts_the_output() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current()).unwrap();
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            assert_ne!(
                std::env::var("KEPLER_RS_REQUIRE_PRIVILEGED").as_deref(),
                Ok("1"),
                "promtool is required in CI"
            );
            eprintln!("SKIP promtool_accepts_the_output: promtool not installed");
            return;
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && msg.trim().is_empty(),
            "promtool: {msg}"
        );
    }
}
