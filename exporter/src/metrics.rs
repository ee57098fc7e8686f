//! Snapshot -> Prometheus text exposition (format 0.0.4, which promtool accepts). Encodes only what
//! the snapshot holds: no measuring, no I/O, no global registry (one is built per encode).
//! Metric names and labels follow Kepler's so its dashboards keep working; see docs/metrics.md.
//! `kepler07` adds Kepler 0.7's families, computed from the same snapshot, where asked.

mod kepler07;

use crate::catalog::{self, Family, Kind};
use crate::config::MetricsCompat;
use crate::cpuinfo::CpuInfo;
use crate::resource::pods::HubServer;
use crate::snapshot::{ProcessSeries, Snapshot};
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

pub(crate) use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Build facts for `kepler_exporter_build_info` / `kepler_build_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub(crate) version: &'static str,
    pub(crate) revision: &'static str,
    pub(crate) branch: &'static str,
    /// The target architecture (`x86_64`, `aarch64`).
    pub(crate) arch: &'static str,
    /// The compiler that built it (`rust1.83.0`), in Kepler's `goversion` label.
    pub(crate) rust_version: &'static str,
}

impl BuildInfo {
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            revision: option_env!("KEPLER_RS_GIT_REVISION").unwrap_or("unknown"),
            branch: option_env!("KEPLER_RS_GIT_BRANCH").unwrap_or("unknown"),
            arch: std::env::consts::ARCH,
            rust_version: option_env!("KEPLER_RS_RUST_VERSION").unwrap_or("unknown"),
        }
    }
}

/// What every exposition holds besides the snapshot: facts fixed at start, and which families to
/// serve.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    pub build: BuildInfo,
    /// The node's logical CPUs (`kepler_node_cpu_info`); empty where /proc/cpuinfo was unusable.
    pub cpus: Arc<[CpuInfo]>,
    pub compat: MetricsCompat,
}

impl From<BuildInfo> for Exposition {
    /// No CPU facts, no compatibility families.
    fn from(build: BuildInfo) -> Exposition {
        Exposition {
            build,
            cpus: Arc::new([]),
            compat: MetricsCompat::Off,
        }
    }
}

/// Encode one snapshot. One call always sees one snapshot, so the identities hold within a scrape.
pub fn encode(snapshot: Arc<Snapshot>, exposition: &Exposition) -> Result<String, std::fmt::Error> {
    // About 220 bytes a series: size the buffer once instead of regrowing it (2.5 MB at 1,000 pods).
    let zones = snapshot.zones.len().max(1);
    let consumers: usize = snapshot
        .pods
        .iter()
        .map(|p| 1 + p.containers.len())
        .sum::<usize>()
        + snapshot.processes.len();
    // Kepler 0.7: one series per container and zone family, plus the other, GPU and total families.
    let compat = match exposition.compat {
        MetricsCompat::Off => 0,
        MetricsCompat::Kepler07 => (zones + 3) * consumers,
    };
    let capacity = 220 * (2 * zones * consumers + compat + exposition.cpus.len() + 64);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snapshot,
        exposition: exposition.clone(),
    }));
    let mut out = String::with_capacity(capacity);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Arc<Snapshot>,
    exposition: Exposition,
}

/// Writes families and counts the series written.
struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
    series: Cell<u64>,
}

impl Families<'_> {
    fn family<L: EncodeLabelSet>(
        &mut self,
        family: &Family,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return Ok(());
        }
        let kind = match family.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        };
        let mut metric =
            self.encoder
                .encode_descriptor(family.descriptor_name(), family.help, None, kind)?;
        for (labels, value) in samples {
            let value = if value.is_finite() { value } else { 0.0 };
            let m = metric.encode_family(&labels)?;
            match family.kind {
                Kind::Counter => ConstCounter::new(value.max(0.0)).encode(m)?,
                Kind::Gauge => ConstGauge::new(value).encode(m)?,
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

        // Node zones.
        type NodeField = fn(&crate::snapshot::NodeZone) -> f64;
        let node_families: [(&Family, NodeField); 9] = [
            (&catalog::NODE_CPU_JOULES, |n| n.total_joules.0),
            (&catalog::NODE_CPU_ACTIVE_JOULES, |n| n.active_joules.0),
            (&catalog::NODE_CPU_IDLE_JOULES, |n| n.idle_joules.0),
            (&catalog::NODE_CPU_SYSTEM_JOULES, |n| n.system_joules.0),
            (&catalog::NODE_CPU_TERMINATED_PODS_JOULES, |n| {
                n.terminated_pods_joules.0
            }),
            (&catalog::NODE_CPU_WATTS, |n| n.total_watts.0),
            (&catalog::NODE_CPU_ACTIVE_WATTS, |n| n.active_watts.0),
            (&catalog::NODE_CPU_IDLE_WATTS, |n| n.idle_watts.0),
            (&catalog::NODE_CPU_SYSTEM_WATTS, |n| n.system_watts.0),
        ];
        // Before the first complete interval there is nothing measured: no energy series at all.
        let zones = if s.is_ready() {
            s.zones.as_slice()
        } else {
            &[]
        };
        for (family, field) in node_families {
            f.family(
                family,
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
        let socket_families: [(&Family, SocketField); 2] = [
            (&catalog::NODE_CPU_SOCKET_JOULES, |z| z.joules.0),
            (&catalog::NODE_CPU_SOCKET_WATTS, |z| z.watts.0),
        ];
        for (family, field) in socket_families {
            let series = sockets.iter().zip(&socket_labels).map(|(z, socket)| {
                let labels = [
                    ("node_name", node),
                    ("zone", z.zone.as_str()),
                    ("socket", socket.as_str()),
                    ("source", source),
                ];
                (labels, field(z))
            });
            f.family(family, series)?;
        }
        if s.is_ready() {
            f.family(
                &catalog::NODE_CPU_USAGE_RATIO,
                [([("node_name", node)], s.cpu_usage_ratio)],
            )?;
        }
        f.family(
            &catalog::NODE_CPU_INFO,
            self.exposition.cpus.iter().map(|c| {
                let labels = [
                    ("node_name", node),
                    ("processor", c.processor.as_str()),
                    ("vendor_id", c.vendor_id.as_str()),
                    ("model_name", c.model_name.as_str()),
                    ("physical_id", c.physical_id.as_str()),
                    ("core_id", c.core_id.as_str()),
                ];
                (labels, 1.0)
            }),
        )?;

        // Pods. Labels borrow from the snapshot: no allocation per series (1,000 pods make 12,000).
        for (family, watts) in [
            (&catalog::POD_CPU_JOULES, false),
            (&catalog::POD_CPU_WATTS, true),
        ] {
            f.family(
                family,
                s.pods.iter().flat_map(|p| {
                    s.zones.iter().enumerate().map(move |(i, z)| {
                        let v = if watts { p.watts[i].0 } else { p.joules[i].0 };
                        let labels = [
                            ("node_name", node),
                            ("pod_id", p.uid.as_str()),
                            ("pod_name", p.name.as_deref().unwrap_or("")),
                            ("pod_namespace", p.namespace.as_deref().unwrap_or("")),
                            ("state", state(p.ended)),
                            ("zone", z.as_str()),
                        ];
                        (HubLabels(labels, p.hub.as_ref()), v)
                    })
                }),
            )?;
        }

        // Containers.
        for (family, watts) in [
            (&catalog::CONTAINER_CPU_JOULES, false),
            (&catalog::CONTAINER_CPU_WATTS, true),
        ] {
            f.family(
                family,
                s.pods.iter().flat_map(|p| {
                    p.containers.iter().flat_map(move |c| {
                        s.zones.iter().enumerate().map(move |(i, z)| {
                            let v = if watts { c.watts[i].0 } else { c.joules[i].0 };
                            let labels = [
                                ("node_name", node),
                                ("container_id", c.id.as_str()),
                                ("container_name", c.name.as_deref().unwrap_or("")),
                                ("runtime", c.runtime.map_or("", |r| r.as_str())),
                                ("state", state(p.ended)),
                                ("pod_id", p.uid.as_str()),
                                ("zone", z.as_str()),
                            ];
                            (HubLabels(labels, p.hub.as_ref()), v)
                        })
                    })
                }),
            )?;
        }

        f.family(
            &catalog::CONTAINER_CPU_SECONDS,
            s.pods.iter().flat_map(|p| {
                p.containers.iter().map(move |c| {
                    let labels = [
                        ("node_name", node),
                        ("container_id", c.id.as_str()),
                        ("container_name", c.name.as_deref().unwrap_or("")),
                        ("runtime", c.runtime.map_or("", |r| r.as_str())),
                        ("pod_id", p.uid.as_str()),
                    ];
                    (HubLabels(labels, p.hub.as_ref()), c.cpu_seconds)
                })
            }),
        )?;

        // Pod names for joins: one series per pod whose metadata is known.
        f.family(
            &catalog::POD_INFO,
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

        // Processes (only when enabled: the list is empty otherwise). `type` is `container` for a
        // process in a container, else `regular`.
        let pids: Vec<String> = s.processes.iter().map(|p| p.pid.to_string()).collect();
        for (family, watts) in [
            (&catalog::PROCESS_CPU_JOULES, false),
            (&catalog::PROCESS_CPU_WATTS, true),
        ] {
            f.family(
                family,
                s.processes.iter().zip(&pids).flat_map(|(p, pid)| {
                    let [n, id, comm, exe, kind, st, container] = process_labels(node, p, pid);
                    s.zones.iter().enumerate().map(move |(i, z)| {
                        let v = if watts { p.watts[i].0 } else { p.joules[i].0 };
                        let labels = [n, id, comm, exe, kind, st, container, ("zone", z.as_str())];
                        (labels, v)
                    })
                }),
            )?;
        }
        f.family(
            &catalog::PROCESS_CPU_SECONDS,
            s.processes.iter().zip(&pids).map(|(p, pid)| {
                let [n, id, comm, exe, kind, _, container] = process_labels(node, p, pid);
                ([n, id, comm, exe, kind, container], p.cpu_seconds)
            }),
        )?;

        // GPUs (only when GPU support is on and the first interval is complete).
        let compat = self.exposition.compat;
        if s.is_ready() {
            gpu_families(&mut f, s, node, compat)?;
        }
        if s.is_ready() && compat == MetricsCompat::Kepler07 {
            kepler07::families(&mut f, s, &self.exposition.cpus)?;
        }

        // Self-metrics.
        let b = &self.exposition.build;
        let build = [
            ("node_name", node),
            ("version", b.version),
            ("revision", b.revision),
        ];
        f.family(&catalog::EXPORTER_BUILD_INFO, [(build, 1.0)])?;
        let kepler_build = [
            build[0],
            build[1],
            build[2],
            ("branch", b.branch),
            ("arch", b.arch),
            ("goversion", b.rust_version),
        ];
        f.family(&catalog::BUILD_INFO, [(kepler_build, 1.0)])?;
        f.family(
            &catalog::ENERGY_SOURCE_INFO,
            [([("node_name", node), ("source", source)], 1.0)],
        )?;
        f.family(
            &catalog::CPU_SOURCE_INFO,
            [(
                [
                    ("node_name", node),
                    ("source", s.cpu_source),
                    ("reason", s.cpu_source_reason.as_str()),
                ],
                1.0,
            )],
        )?;
        let cpu_source = [("node_name", node), ("source", s.cpu_source)];
        f.family(
            &catalog::CPU_SOURCE_MEASURE_INFO,
            s.health
                .cpu_source_stats
                .counters
                .iter()
                .map(|c| ([cpu_source[0], cpu_source[1], ("measure", *c)], 1.0)),
        )?;
        f.family(
            &catalog::CPU_SOURCE_EVENTS,
            s.health
                .cpu_source_stats
                .events
                .iter()
                .map(|(e, n)| ([cpu_source[0], cpu_source[1], ("event", *e)], *n as f64)),
        )?;
        f.family(
            &catalog::BPF_RUN_SECONDS,
            s.health
                .cpu_source_stats
                .bpf_run_ns
                .iter()
                .map(|(p, ns)| ([("node_name", node), ("program", *p)], *ns as f64 / 1e9)),
        )?;
        f.family(
            &catalog::SOURCE_UP,
            s.health.sources.iter().map(|h| {
                (
                    [("node_name", node), ("source", h.source)],
                    if h.up { 1.0 } else { 0.0 },
                )
            }),
        )?;
        f.family(
            &catalog::SOURCE_ERRORS,
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
                &catalog::POD_METADATA_SYNCED,
                [(node_only, if sync.synced { 1.0 } else { 0.0 })],
            )?;
            f.family(&catalog::POD_METADATA_PODS, [(node_only, sync.pods as f64)])?;
            f.family(
                &catalog::POD_METADATA_ERRORS,
                sync.errors
                    .iter()
                    .map(|(kind, n)| ([("node_name", node), ("kind", *kind)], *n as f64)),
            )?;
        }
        f.family(&catalog::TICKS, [(node_only, s.health.ticks as f64)])?;
        f.family(
            &catalog::TICK_SECONDS,
            [(node_only, s.health.tick_seconds_total)],
        )?;
        f.family(
            &catalog::CPU_EXCESS_SECONDS,
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
            &catalog::TICK_DURATION_SECONDS,
            [(node_only, s.health.last_tick_seconds)],
        )?;
        f.family(
            &catalog::LAST_TICK_TIMESTAMP_SECONDS,
            [(node_only, s.health.taken_at_unix_seconds)],
        )?;
        let count = f.series.get() + 1;
        f.family(&catalog::SERIES, [(node_only, count as f64)])?;
        Ok(())
    }
}

/// A process series' labels before `zone`.
fn process_labels<'a>(
    node: &'a str,
    p: &'a ProcessSeries,
    pid: &'a str,
) -> [(&'static str, &'a str); 7] {
    let (container, kind) = match &p.container {
        Some(c) => (c.as_str(), "container"),
        None => ("", "regular"),
    };
    [
        ("node_name", node),
        ("pid", pid),
        ("comm", p.comm.as_str()),
        ("exe", &p.exe),
        ("type", kind),
        ("state", state(p.ended)),
        ("container_id", container),
    ]
}

/// Kepler's `state` label: `terminated` while an ended consumer's series stay for the grace period.
fn state(ended: bool) -> &'static str {
    if ended {
        "terminated"
    } else {
        "running"
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

/// `kepler_node_gpu_*`, `kepler_pod_gpu_*`, `kepler_container_gpu_*` (see docs/metrics.md).
fn gpu_families(
    f: &mut Families<'_>,
    s: &Snapshot,
    node: &str,
    compat: MetricsCompat,
) -> Result<(), std::fmt::Error> {
    use crate::gpu::ledger::{GpuDeviceSeries, GpuPodSeries, GpuSnapshot};
    let gpu = &s.gpu;
    let indices: Vec<String> = gpu.devices.iter().map(|d| d.index.to_string()).collect();
    let devices = || gpu.devices.iter().zip(&indices);
    fn device_labels<'a>(
        node: &'a str,
        (d, index): (&'a GpuDeviceSeries, &'a String),
    ) -> [(&'static str, &'a str); 4] {
        [
            ("node_name", node),
            ("gpu", index.as_str()),
            ("gpu_uuid", d.uuid.as_str()),
            ("gpu_name", d.name.as_str()),
        ]
    }
    // `gpu`, `gpu_uuid` and `gpu_instance` of a pod's share, after its other labels.
    fn gpu_labels<'a>(
        gpu: &'a GpuSnapshot,
        indices: &'a [String],
        p: &'a GpuPodSeries,
    ) -> [(&'static str, &'a str); 3] {
        let d = gpu.devices.get(p.device);
        [
            ("gpu", indices.get(p.device).map_or("", String::as_str)),
            ("gpu_uuid", d.map_or("", |d| d.uuid.as_str())),
            ("gpu_instance", p.instance.as_deref().unwrap_or("")),
        ]
    }
    type DeviceField = fn(&GpuDeviceSeries) -> f64;
    let device_families: [(&Family, DeviceField); 8] = [
        (&catalog::NODE_GPU_JOULES, |d| d.total_joules.0),
        (&catalog::NODE_GPU_IDLE_JOULES, |d| d.idle_joules.0),
        (&catalog::NODE_GPU_ACTIVE_JOULES, |d| d.active_joules.0),
        (&catalog::NODE_GPU_UNATTRIBUTED_JOULES, |d| {
            d.unattributed_joules.0
        }),
        (&catalog::NODE_GPU_TERMINATED_PODS_JOULES, |d| {
            d.terminated_pods_joules.0
        }),
        (&catalog::NODE_GPU_WATTS, |d| d.watts.0),
        (&catalog::NODE_GPU_IDLE_WATTS, |d| d.idle_watts.0),
        (&catalog::NODE_GPU_ACTIVE_WATTS, |d| d.active_watts.0),
    ];
    for (family, field) in device_families {
        f.family(
            family,
            devices().map(|d| (device_labels(node, d), field(d.0))),
        )?;
    }
    f.family(
        &catalog::NODE_GPU_INFO,
        devices().map(|d| {
            let [n, g, u, name] = device_labels(node, d);
            ([n, g, u, name, ("method", d.0.method)], 1.0)
        }),
    )?;
    for (family, watts) in [
        (&catalog::POD_GPU_JOULES, false),
        (&catalog::POD_GPU_WATTS, true),
    ] {
        f.family(
            family,
            gpu.pods.iter().map(|p| {
                let labels = [
                    ("node_name", node),
                    ("pod_id", p.uid.as_str()),
                    ("pod_name", p.name.as_deref().unwrap_or("")),
                    ("pod_namespace", p.namespace.as_deref().unwrap_or("")),
                ];
                let labels = (
                    HubLabels(labels, p.hub.as_ref()),
                    gpu_labels(gpu, &indices, p),
                );
                (labels, if watts { p.watts.0 } else { p.joules.0 })
            }),
        )?;
    }
    for (family, watts) in [
        (&catalog::CONTAINER_GPU_JOULES, false),
        (&catalog::CONTAINER_GPU_WATTS, true),
    ] {
        // Kepler 0.7's container GPU family has this name: its labels join the series.
        let kepler07 = compat == MetricsCompat::Kepler07 && !watts;
        f.family(
            family,
            gpu.pods.iter().flat_map(|p| {
                let kepler07 = kepler07.then(|| {
                    [
                        ("container_namespace", p.namespace.as_deref().unwrap_or("")),
                        ("pod_name", p.name.as_deref().unwrap_or("")),
                        ("mode", "dynamic"),
                    ]
                });
                let gpu_of = gpu_labels(gpu, &indices, p);
                p.containers.iter().map(move |c| {
                    let labels = [
                        ("node_name", node),
                        ("container_id", c.id.as_str()),
                        ("container_name", c.name.as_deref().unwrap_or("")),
                        ("pod_id", p.uid.as_str()),
                    ];
                    let extra: Vec<_> = kepler07.into_iter().flatten().collect();
                    let labels = (HubLabels(labels, p.hub.as_ref()), (gpu_of, extra));
                    (labels, if watts { c.watts.0 } else { c.joules.0 })
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
    use crate::units::{ContainerId, Joules, Pid, PodUid, Watts, ZoneKind};

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::empty(
            "node-1".into(),
            EnergySourceKind::Rapl,
            "cgroup",
            crate::activity::SourceReason::Flag,
        );
        s.health.intervals = 1;
        s.health.ticks = 2;
        s.zones = vec![ZoneKind::Package, ZoneKind::Dram];
        s.node = vec![
            NodeZone {
                total_joules: Joules(10.0),
                idle_joules: Joules(4.0),
                active_joules: Joules(6.0),
                system_joules: Joules(1.0),
                ..Default::default()
            },
            NodeZone {
                total_joules: Joules(f64::NAN),
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
            joules: vec![Joules(5.0), Joules(0.0)],
            watts: vec![Watts(1.0), Watts(0.0)],
            containers: vec![ContainerSeries {
                id: ContainerId::parse(&"ab".repeat(32)).unwrap(),
                name: None,
                runtime: Some(crate::resource::cgroup_path::ContainerRuntime::Containerd),
                cpu_seconds: 2.5,
                joules: vec![Joules(5.0), Joules(-1.0)],
                watts: vec![Watts(1.0), Watts(0.0)],
            }],
        }];
        s.pods.push(PodSeries {
            uid: PodUid::parse("7f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11").unwrap(),
            name: None,
            namespace: None,
            hub: None,
            ended: false,
            joules: vec![Joules(1.0), Joules(0.0)],
            watts: vec![Watts(1.0), Watts(0.0)],
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
            exe: "/usr/bin/we ird".into(),
            container: None,
            ended: false,
            cpu_seconds: 1.5,
            joules: vec![Joules(1.0), Joules(0.0)],
            watts: vec![Watts(0.5), Watts(0.0)],
        }];
        s.gpu = gpu_snapshot();
        s.sockets = vec![
            SocketZone {
                zone: ZoneKind::Package,
                socket: 0,
                joules: Joules(4.0),
                watts: Watts(2.0),
            },
            SocketZone {
                zone: ZoneKind::Package,
                socket: 1,
                joules: Joules(6.0),
                watts: Watts(3.0),
            },
        ];
        s
    }

    /// CPU facts and the Kepler 0.7 families on.
    fn full_exposition() -> Exposition {
        Exposition {
            build: BuildInfo::current(),
            cpus: crate::cpuinfo::parse(
                "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon \"8480+\"\nphysical id\t: 0\ncore id\t: 0\n",
            )
            .into(),
            compat: MetricsCompat::Kepler07,
        }
    }

    /// Every family the encoder serves is in the catalog, with its type and labels: a family added
    /// to the encoder without a catalog entry (and so without a docs row) fails here.
    #[test]
    fn every_encoded_family_is_in_the_catalog_with_its_type_and_labels() {
        let mut s = snapshot();
        s.health.cpu_source_stats.counters = vec!["cpu_time"];
        s.health.cpu_source_stats.events = vec![("sched_switch", 3)];
        s.health.cpu_source_stats.bpf_run_ns = vec![("kepler_sched_switch", 1_500_000_000)];
        s.health.sources = vec![crate::snapshot::SourceHealth {
            source: "rapl",
            up: true,
        }];
        s.health.issues.insert(
            (crate::issue::Input::Rapl, crate::issue::IssueKind::Parse),
            1,
        );
        let exposition = full_exposition();
        let text = encode(Arc::new(s), &exposition).unwrap();
        // Every zone's 0.7 family: a snapshot over all five zones.
        let all_zones = encode(Arc::new(kepler07::tests::ledger_snapshot()), &exposition).unwrap();
        let text = format!("{text}{all_zones}");
        let samples = crate::remote::exposition::parse(&text).unwrap();
        let mut served = std::collections::BTreeSet::new();
        for sample in &samples {
            let family = catalog::find(&sample.name)
                .unwrap_or_else(|| panic!("{} is served but not in the catalog", sample.name));
            served.insert(family.name);
            let names: Vec<&str> = sample.labels.iter().map(|(k, _)| k.as_ref()).collect();
            let required: Vec<&str> = family.labels.to_vec();
            let mut without_optional: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !family.optional_labels.contains(n))
                .collect();
            without_optional.sort_unstable();
            let mut required_sorted = required.clone();
            required_sorted.sort_unstable();
            assert_eq!(without_optional, required_sorted, "{}: labels", sample.name);
        }
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            let family = catalog::ALL
                .iter()
                .find(|f| f.name == name || f.descriptor_name() == name)
                .unwrap_or_else(|| panic!("{name} is served but not in the catalog"));
            assert_eq!(family.kind.as_str(), kind, "{name}");
        }
        // The snapshot above reaches every family of the exposition (the server adds its own).
        let missing: Vec<&str> = catalog::ALL
            .iter()
            .filter(|f| f.scope != catalog::Scope::Server && !served.contains(f.name))
            .map(|f| f.name)
            .collect();
        assert!(missing.is_empty(), "not exercised: {missing:?}");
    }

    #[test]
    fn socket_series_only_where_rapl_has_sockets() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
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
        let text = encode(Arc::new(s), &BuildInfo::current().into()).unwrap();
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
                total_joules: Joules(900.0),
                idle_joules: Joules(300.0),
                active_joules: Joules(600.0),
                unattributed_joules: Joules(100.0),
                watts: Watts(300.0),
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
                joules: Joules(500.0),
                watts: Watts(150.0),
                containers: vec![GpuContainerSeries {
                    id: ContainerId::parse(&"cd".repeat(32)).unwrap(),
                    name: Some("notebook".into()),
                    joules: Joules(450.0),
                    watts: Watts(140.0),
                }],
            }],
        }
    }

    #[test]
    fn gpu_series_carry_device_pod_and_user_labels() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
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
        let text = encode(Arc::new(s), &BuildInfo::current().into()).unwrap();
        assert!(!text.contains("_gpu_"), "{text}");
    }

    #[test]
    fn hostile_label_values_are_escaped() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
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
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
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
        let text = encode(Arc::new(s), &BuildInfo::current().into()).unwrap();
        assert!(!text.contains("pod_metadata"));
    }

    #[test]
    fn counters_are_never_negative_or_nan() {
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
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
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
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
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
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
            "kepler_container_cpu_seconds_total{",
            "kepler_process_cpu_seconds_total{",
            "kepler_build_info{",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }

    #[test]
    fn current_kepler_labels_state_runtime_cpu_info_and_build() {
        let mut s = snapshot();
        s.pods[1].ended = true;
        let text = encode(Arc::new(s), &full_exposition()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let has = |prefix: &str, parts: &[&str]| {
            lines
                .iter()
                .any(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
        };
        assert!(has(
            "kepler_pod_cpu_joules_total{",
            &["6f1c9a4e-", r#"state="running""#]
        ));
        assert!(has(
            "kepler_pod_cpu_watts{",
            &["7f1c9a4e-", r#"state="terminated""#]
        ));
        assert!(has(
            "kepler_container_cpu_joules_total{",
            &[r#"runtime="containerd",state="running""#]
        ));
        assert!(has(
            "kepler_container_cpu_seconds_total{",
            &[r#"runtime="containerd""#, "} 2.5"]
        ));
        assert!(has(
            "kepler_process_cpu_joules_total{",
            &[
                r#"pid="42""#,
                r#"exe="/usr/bin/we ird",type="regular",state="running",container_id="""#
            ]
        ));
        assert!(has(
            "kepler_process_cpu_seconds_total{",
            &[r#"type="regular""#, "} 1.5"]
        ));
        assert!(has(
            "kepler_node_cpu_info{",
            &[r#"processor="0",vendor_id="GenuineIntel",model_name="Xeon \"8480+\"""#]
        ));
        let build = BuildInfo::current();
        assert!(build.rust_version.starts_with("rust1."), "{build:?}");
        assert!(has(
            "kepler_build_info{",
            &[&format!(
                r#"arch="{}",goversion="{}""#,
                build.arch, build.rust_version
            )]
        ));
        // No CPU facts: no family, and the scrape still works.
        let text = encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap();
        assert!(!text.contains("kepler_node_cpu_info"));
    }

    #[test]
    fn promtool_accepts_the_output() {
        promtool_accepts(&encode(Arc::new(snapshot()), &BuildInfo::current().into()).unwrap());
        let mut compat = encode(Arc::new(snapshot()), &full_exposition()).unwrap();
        assert!(compat.contains("kepler_container_package_joules_total{"));
        assert!(compat.contains("kepler_node_cpu_info{"));
        // The GPU container series carry the 0.7 labels too (one family, one name).
        assert!(compat.contains(r#"gpu_instance="MIG-1c2d",container_namespace="jhub",pod_name="jupyter-alice",mode="dynamic"} 450"#), "{compat}");
        promtool_accepts(&compat);
        compat = encode(
            Arc::new(kepler07::tests::ledger_snapshot()),
            &full_exposition(),
        )
        .unwrap();
        promtool_accepts(&compat);
    }

    fn promtool_accepts(text: &str) {
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
