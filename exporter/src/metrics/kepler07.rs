//! Kepler 0.7's families (`--metrics-compat kepler-0.7`), computed from the same snapshot at encode
//! time, so that 0.7-era dashboards and recording rules keep working. No state, no I/O.
//!
//! Each zone splits by `mode`: `dynamic` is the active energy, `idle` the idle energy. Containers
//! carry only `mode="dynamic"` energy: idle power is drawn by no workload, so the node's whole idle
//! energy goes to the `system_processes` series under `mode="idle"`, with host daemons and the kernel
//! under `mode="dynamic"`, and pods removed after the grace period under `terminated_pods`. So per
//! family and mode, Σ container series = the node series, and per pod the 0.7 series equal
//! `kepler_container_cpu_joules_total`.

use super::Families;
use crate::catalog::{self, Family};
use crate::cpuinfo::CpuInfo;
use crate::snapshot::Snapshot;
use crate::source::EnergySourceKind;
use crate::units::{Joules, ZoneKind};
use std::collections::BTreeMap;

pub(super) const DYNAMIC: &str = "dynamic";
const IDLE: &str = "idle";

/// The pseudo-container of everything outside pods (and of all idle energy).
pub(crate) const SYSTEM_PROCESSES: &str = "system_processes";
/// The pseudo-container of pods whose series were removed after the grace period.
pub(crate) const TERMINATED_PODS: &str = "terminated_pods";

/// The node and container families of one zone.
fn zone_families(zone: ZoneKind) -> (&'static Family, &'static Family) {
    use catalog::*;
    match zone {
        ZoneKind::Package => (
            &KEPLER07_NODE_PACKAGE_JOULES,
            &KEPLER07_CONTAINER_PACKAGE_JOULES,
        ),
        ZoneKind::Core => (&KEPLER07_NODE_CORE_JOULES, &KEPLER07_CONTAINER_CORE_JOULES),
        ZoneKind::Uncore => (
            &KEPLER07_NODE_UNCORE_JOULES,
            &KEPLER07_CONTAINER_UNCORE_JOULES,
        ),
        ZoneKind::Dram => (&KEPLER07_NODE_DRAM_JOULES, &KEPLER07_CONTAINER_DRAM_JOULES),
        ZoneKind::Psys => (
            &KEPLER07_NODE_PLATFORM_JOULES,
            &KEPLER07_CONTAINER_PLATFORM_JOULES,
        ),
    }
}

/// One series of the container families: its labels and its joules per snapshot zone.
struct Row<'a> {
    container_id: &'a str,
    container_name: &'a str,
    namespace: &'a str,
    pod_name: &'a str,
    mode: &'static str,
    joules: Vec<f64>,
    /// Attributed GPU energy of the container, summed over devices.
    gpu: f64,
}

/// Where the zones the 0.7 `other` and total figures need sit in `Snapshot::zones`.
struct Zones {
    package: Option<usize>,
    dram: Option<usize>,
    psys: Option<usize>,
}

impl Zones {
    fn of(zones: &[ZoneKind]) -> Zones {
        let at = |kind| zones.iter().position(|z| *z == kind);
        Zones {
            package: at(ZoneKind::Package),
            dram: at(ZoneKind::Dram),
            psys: at(ZoneKind::Psys),
        }
    }

    fn get(joules: &[f64], at: Option<usize>) -> f64 {
        at.and_then(|i| joules.get(i)).copied().unwrap_or(0.0)
    }

    /// 0.7's `other`: platform energy outside package and dram (psys − package − dram, at least 0);
    /// 0 without psys.
    fn other(&self, joules: &[f64]) -> f64 {
        match self.psys {
            Some(_) => (Zones::get(joules, self.psys)
                - Zones::get(joules, self.package)
                - Zones::get(joules, self.dram))
            .max(0.0),
            None => 0.0,
        }
    }

    /// 0.7's `kepler_container_joules_total`: package + dram + other (+ GPU).
    fn total(&self, joules: &[f64], gpu: f64) -> f64 {
        Zones::get(joules, self.package) + Zones::get(joules, self.dram) + self.other(joules) + gpu
    }
}

/// The container series of one snapshot: containers of pods (a pod without container series once,
/// with its UID as `container_id`), GPU-only containers, `system_processes` (dynamic and idle) and
/// `terminated_pods`. Label values are empty where a name is unknown, never "None".
fn rows(s: &Snapshot) -> Vec<Row<'_>> {
    let mut gpu: BTreeMap<&str, (f64, &str, &str)> = BTreeMap::new();
    for p in &s.gpu.pods {
        for c in &p.containers {
            let entry = gpu.entry(c.id.as_str()).or_insert((
                0.0,
                p.namespace.as_deref().unwrap_or(""),
                p.name.as_deref().unwrap_or(""),
            ));
            entry.0 += c.joules.0;
        }
    }
    let values = |joules: &[Joules]| joules.iter().map(|j| j.0).collect::<Vec<f64>>();
    let mut rows = Vec::with_capacity(s.pods.len() * 2 + 3);
    for p in &s.pods {
        let namespace = p.namespace.as_deref().unwrap_or("");
        let pod_name = p.name.as_deref().unwrap_or("");
        if p.containers.is_empty() {
            rows.push(Row {
                container_id: p.uid.as_str(),
                container_name: "",
                namespace,
                pod_name,
                mode: DYNAMIC,
                joules: values(&p.joules),
                gpu: 0.0,
            });
        }
        for c in &p.containers {
            rows.push(Row {
                container_id: c.id.as_str(),
                container_name: c.name.as_deref().unwrap_or(""),
                namespace,
                pod_name,
                mode: DYNAMIC,
                joules: values(&c.joules),
                gpu: gpu.remove(c.id.as_str()).map_or(0.0, |(j, _, _)| j),
            });
        }
    }
    let zones = s.zones.len();
    for (id, (joules, namespace, pod_name)) in gpu {
        rows.push(Row {
            container_id: id,
            container_name: "",
            namespace,
            pod_name,
            mode: DYNAMIC,
            joules: vec![0.0; zones],
            gpu: joules,
        });
    }
    let node = |field: fn(&crate::snapshot::NodeZone) -> Joules| {
        s.node.iter().map(|n| field(n).0).collect::<Vec<f64>>()
    };
    for (container_id, mode, joules) in [
        (SYSTEM_PROCESSES, DYNAMIC, node(|n| n.system_joules)),
        (SYSTEM_PROCESSES, IDLE, node(|n| n.idle_joules)),
        (TERMINATED_PODS, DYNAMIC, node(|n| n.terminated_pods_joules)),
    ] {
        rows.push(Row {
            container_id,
            container_name: container_id,
            namespace: "",
            pod_name: "",
            mode,
            joules,
            gpu: 0.0,
        });
    }
    rows
}

fn row_labels<'a>(node: &'a str, r: &'a Row<'a>) -> [(&'static str, &'a str); 6] {
    [
        ("node_name", node),
        ("container_id", r.container_id),
        ("container_name", r.container_name),
        ("container_namespace", r.namespace),
        ("pod_name", r.pod_name),
        ("mode", r.mode),
    ]
}

/// Every 0.7 family of one snapshot, in catalog order within the node and container groups.
pub(super) fn families(
    f: &mut Families<'_>,
    s: &Snapshot,
    cpus: &[CpuInfo],
) -> Result<(), std::fmt::Error> {
    let node = s.node_name.as_str();
    let source = s.energy_source.as_str();
    let zones = Zones::of(&s.zones);
    let modes =
        |n: &crate::snapshot::NodeZone| [(DYNAMIC, n.active_joules.0), (IDLE, n.idle_joules.0)];

    // Node: one series per zone and mode (package empty: the split is per zone, not per socket).
    let node_labels = |mode| {
        [
            ("node_name", node),
            ("package", ""),
            ("mode", mode),
            ("source", source),
        ]
    };
    for (zone, n) in s.zones.iter().zip(&s.node) {
        let (family, _) = zone_families(*zone);
        f.family(
            family,
            modes(n).map(|(mode, joules)| (node_labels(mode), joules)),
        )?;
    }
    let by_mode = |mode_of: fn(&crate::snapshot::NodeZone) -> f64| {
        s.node.iter().map(mode_of).collect::<Vec<f64>>()
    };
    let (dynamic, idle) = (by_mode(|n| n.active_joules.0), by_mode(|n| n.idle_joules.0));
    f.family(
        &catalog::KEPLER07_NODE_OTHER_JOULES,
        [
            (node_labels(DYNAMIC), zones.other(&dynamic)),
            (node_labels(IDLE), zones.other(&idle)),
        ],
    )?;
    let (components, platform) = match s.energy_source {
        EnergySourceKind::Rapl => ("rapl-sysfs", zones.psys.map_or("", |_| "rapl-sysfs")),
        EnergySourceKind::Estimate => ("estimator", ""),
    };
    let architecture = cpus.first().map_or("", |c| c.model_name.as_str());
    f.family(
        &catalog::KEPLER07_NODE_INFO,
        [(
            [
                ("node_name", node),
                ("cpu_architecture", architecture),
                ("components_power_source", components),
                ("platform_power_source", platform),
            ],
            1.0,
        )],
    )?;

    // Containers.
    let rows = rows(s);
    let labels = |r| row_labels(node, r);
    for (i, zone) in s.zones.iter().enumerate() {
        let (_, family) = zone_families(*zone);
        f.family(
            family,
            rows.iter()
                .map(|r| (labels(r), r.joules.get(i).copied().unwrap_or(0.0))),
        )?;
    }
    f.family(
        &catalog::KEPLER07_CONTAINER_OTHER_JOULES,
        rows.iter().map(|r| (labels(r), zones.other(&r.joules))),
    )?;
    f.family(
        &catalog::KEPLER07_CONTAINER_JOULES,
        rows.iter()
            .map(|r| (labels(r), zones.total(&r.joules, r.gpu))),
    )?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::activity::{ContainerActivity, NodeCpu, PodActivity};
    use crate::attribution::{attribute, ActivityInput, ZoneInput};
    use crate::config::MetricsCompat;
    use crate::ledger::Ledger;
    use crate::metrics::{encode, BuildInfo, Exposition};
    use crate::resource::pods::NoPodMetadata;
    use crate::units::{ContainerId, CpuNanos, PodUid};
    use std::sync::Arc;
    use std::time::Duration;

    fn uid(n: u32) -> PodUid {
        PodUid::parse(&format!("{n:08x}-0000-0000-0000-000000000000")).unwrap()
    }

    /// A snapshot built through the real attribution and ledger over every zone (psys above
    /// package + dram, as on real platforms): pods come and go, one ends and expires into
    /// `terminated_pods`, one has no container cgroup, and one pod's names are unknown.
    pub(in crate::metrics) fn ledger_snapshot() -> Snapshot {
        let zones = ZoneKind::ALL.to_vec();
        let mut ledger = Ledger::new(zones.clone(), Duration::from_secs(2));
        for tick in 1..=8u32 {
            let pods: Vec<PodActivity> = (0..5u32)
                .filter(|p| *p != 4 || tick <= 2)
                .map(|p| PodActivity {
                    uid: uid(p),
                    cpu_time: CpuNanos(u64::from(100 + 37 * p + 11 * tick)),
                    containers: (0..p.min(2))
                        .map(|c| ContainerActivity {
                            id: ContainerId::parse(&format!("{:064x}", p * 10 + c)).unwrap(),
                            cpu_time: CpuNanos(u64::from(40 + 13 * c + tick)),
                            runtime: None,
                        })
                        .collect(),
                })
                .collect();
            let input: Vec<ZoneInput> = zones
                .iter()
                .map(|z| {
                    let total = match z {
                        ZoneKind::Package => 50.0,
                        ZoneKind::Core => 30.0,
                        ZoneKind::Uncore => 5.0,
                        ZoneKind::Dram => 8.0,
                        ZoneKind::Psys => 90.0,
                    } + f64::from(tick);
                    ZoneInput {
                        zone: *z,
                        total: Joules(total),
                        idle: Joules(total * 0.3),
                    }
                })
                .collect();
            let interval = attribute(
                &input,
                ActivityInput {
                    node: NodeCpu {
                        busy: CpuNanos(2_000),
                        total: CpuNanos(8_000),
                    },
                    pods: &pods,
                    processes: &[],
                },
            );
            ledger.apply(&interval, 1.0, Duration::from_secs(u64::from(tick)));
        }
        let mut s = Snapshot::empty(
            "node-1".into(),
            EnergySourceKind::Rapl,
            "cgroup",
            crate::activity::SourceReason::Flag,
        );
        s.health.intervals = 8;
        s.zones = zones;
        s.node = ledger.node().to_vec();
        (s.pods, s.processes) = ledger.series(&NoPodMetadata);
        for (i, p) in s.pods.iter_mut().enumerate().skip(1) {
            p.name = Some(format!("pod-{i}"));
            p.namespace = Some(if i % 2 == 0 { "ns-a" } else { "ns-b" }.into());
        }
        s
    }

    fn compat() -> Exposition {
        Exposition {
            compat: MetricsCompat::Kepler07,
            ..Exposition::from(BuildInfo::current())
        }
    }

    /// Per family and mode, Σ container series = the node series, within 1e-9 relative; and the
    /// container families add up to `kepler_container_joules_total`.
    #[test]
    fn container_sums_equal_the_node_per_family_and_mode() {
        let s = ledger_snapshot();
        assert!(
            s.node.iter().any(|n| n.terminated_pods_joules.0 > 0.0),
            "an expired pod"
        );
        let text = encode(Arc::new(s), &compat()).unwrap();
        let samples = crate::remote::exposition::parse(&text).unwrap();
        let mut node: BTreeMap<(String, String), f64> = BTreeMap::new();
        let mut containers: BTreeMap<(String, String), f64> = BTreeMap::new();
        for x in &samples {
            let Some(component) = x
                .name
                .strip_suffix("_joules_total")
                .and_then(|n| n.rsplit_once('_'))
                .map(|(_, c)| c.to_string())
            else {
                continue;
            };
            let key = (component, x.label("mode").to_string());
            if x.name.starts_with("kepler_node_") && !x.label("mode").is_empty() {
                *node.entry(key).or_default() += x.value;
            } else if x.name.starts_with("kepler_container_") && !x.label("mode").is_empty() {
                *containers.entry(key).or_default() += x.value;
            }
        }
        let components = ["package", "core", "uncore", "dram", "other", "platform"];
        for c in components {
            for mode in [DYNAMIC, IDLE] {
                let key = (c.to_string(), mode.to_string());
                let (n, sum) = (node[&key], containers[&key]);
                assert!(n > 0.0, "{key:?}");
                assert!(
                    (n - sum).abs() <= 1e-9 * n,
                    "{key:?}: node {n}, containers {sum}"
                );
            }
        }
        for mode in [DYNAMIC, IDLE] {
            let total = containers[&("container".to_string(), mode.to_string())];
            let parts: f64 = ["package", "dram", "other"]
                .iter()
                .map(|c| containers[&(c.to_string(), mode.to_string())])
                .sum();
            assert!(
                (total - parts).abs() <= 1e-9 * total,
                "{mode}: {total} vs {parts}"
            );
        }
    }

    /// Per pod, the 0.7 package series equal the pod's own `kepler_pod_cpu_joules_total`.
    #[test]
    fn per_pod_values_equal_the_native_series() {
        let text = encode(Arc::new(ledger_snapshot()), &compat()).unwrap();
        let samples = crate::remote::exposition::parse(&text).unwrap();
        let mut native: BTreeMap<String, f64> = BTreeMap::new();
        let mut legacy: BTreeMap<String, f64> = BTreeMap::new();
        for x in &samples {
            if x.name == "kepler_pod_cpu_joules_total" && x.label("zone") == "package" {
                *native.entry(x.label("pod_name").to_string()).or_default() += x.value;
            }
            if x.name == "kepler_container_package_joules_total"
                && !x.label("container_id").starts_with(SYSTEM_PROCESSES)
                && x.label("container_id") != TERMINATED_PODS
            {
                *legacy.entry(x.label("pod_name").to_string()).or_default() += x.value;
            }
        }
        assert!(native.len() >= 4, "{native:?}");
        assert_eq!(
            native.keys().collect::<Vec<_>>(),
            legacy.keys().collect::<Vec<_>>()
        );
        for (pod, n) in &native {
            assert!(
                (n - legacy[pod]).abs() <= 1e-9 * n.max(1.0),
                "{pod}: {n} vs {}",
                legacy[pod]
            );
        }
    }

    /// Pods without names, host energy and terminated pods get empty labels, never "None"; every
    /// series of a family has a distinct label set.
    #[test]
    fn labels_are_empty_never_none_and_series_are_unique() {
        let text = encode(Arc::new(ledger_snapshot()), &compat()).unwrap();
        let samples = crate::remote::exposition::parse(&text).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut empty_namespace = 0;
        for x in samples
            .iter()
            .filter(|x| catalog::find(&x.name).is_some_and(|f| f.scope.is_kepler07()))
        {
            for (k, v) in &x.labels {
                assert!(!v.eq_ignore_ascii_case("none"), "{}: {k}={v}", x.name);
            }
            empty_namespace += usize::from(x.label("container_namespace").is_empty());
            assert!(
                seen.insert(format!("{}{:?}", x.name, x.labels)),
                "{} twice",
                x.name
            );
        }
        assert!(empty_namespace > 0);
        assert!(text.contains(r#"container_id="system_processes",container_name="system_processes",container_namespace="",pod_name="",mode="idle""#), "{text}");
    }

    #[test]
    fn compat_off_serves_no_kepler07_series() {
        let text = encode(
            Arc::new(ledger_snapshot()),
            &Exposition::from(BuildInfo::current()),
        )
        .unwrap();
        for x in crate::remote::exposition::parse(&text).unwrap() {
            let family = catalog::find(&x.name).unwrap();
            assert!(!family.scope.is_kepler07(), "{}", x.name);
            assert!(x.label("mode").is_empty(), "{}", x.name);
        }
        let on = encode(Arc::new(ledger_snapshot()), &compat()).unwrap();
        assert!(on.contains("kepler_container_joules_total{"));
        assert!(on.contains("kepler_node_platform_joules_total{"));
    }
}
