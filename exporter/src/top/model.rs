//! Turns parsed samples into a `Reading`: nodes (zones, sources, idle/active), GPUs (`top::gpu`) and
//! consumers (pods, containers, processes; CPU and GPU apart) with the node-total rule applied, plus
//! `RateTracker`, which computes watts between two readings from the energy counters (resets
//! handled). No I/O.

use super::gpu::{GpuBuilder, GpuDevice, GpuUse, GPU_PARTS};
use crate::catalog::{
    self, counts_toward_node_total as counts_zone, Measure, Part, Resource, Scope,
};
use crate::remote::exposition::Sample;
use crate::remote::series::{clean, non_finite_series, or_if_empty};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("no kepler_* metrics in the response: is this a kepler-rs exporter? ({samples} other samples)")]
    NotAnExporter { samples: usize },
}

/// What kind of consumer a series describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Family {
    Pod,
    Container,
    Process,
}

/// One zone of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ZoneFigures {
    pub(crate) joules: f64,
    pub(crate) watts: f64,
    pub(crate) idle_watts: f64,
    pub(crate) active_watts: f64,
    pub(crate) system_watts: f64,
}

/// One node as its exporter reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Node {
    pub(crate) name: String,
    /// `rapl` or `estimate` (from `kepler_exporter_energy_source_info`).
    pub(crate) energy_source: String,
    /// `cgroup`, `ebpf` or `none` (from `kepler_exporter_cpu_source_info`).
    pub(crate) cpu_source: String,
    pub(crate) usage_ratio: Option<f64>,
    /// Unix time of the exporter's snapshot; the clock of the rates.
    pub(crate) tick_seconds: Option<f64>,
    pub(crate) zones: BTreeMap<String, ZoneFigures>,
    /// Watts of the node's CPU total: the rate between two readings where known, else the gauge.
    pub(crate) cpu_watts: f64,
    /// Watts of the node's GPUs together (0 without GPU series), rates where known.
    pub(crate) gpu_watts: f64,
}

impl Node {
    /// The node-total rule: `psys` alone where present, else `package + dram`. Zones overlap, so
    /// summing all of them would count core and uncore twice.
    pub(crate) fn counts_zone(&self, zone: &str) -> bool {
        counts_zone(self.zones.contains_key(catalog::PSYS_ZONE), zone)
    }

    fn sum(&self, field: impl Fn(&ZoneFigures) -> f64) -> f64 {
        self.zones
            .iter()
            .filter(|(zone, _)| self.counts_zone(zone))
            .map(|(_, figures)| field(figures))
            .sum()
    }

    /// CPU and GPU power together.
    pub(crate) fn total_watts(&self) -> f64 {
        self.cpu_watts + self.gpu_watts
    }

    /// CPU energy since the exporter started (the node-total rule).
    pub(crate) fn total_joules(&self) -> f64 {
        self.sum(|z| z.joules)
    }
    pub(crate) fn gauge_watts(&self) -> f64 {
        self.sum(|z| z.watts)
    }
    pub(crate) fn idle_watts(&self) -> f64 {
        self.sum(|z| z.idle_watts)
    }
    pub(crate) fn active_watts(&self) -> f64 {
        self.sum(|z| z.active_watts)
    }
    pub(crate) fn system_watts(&self) -> f64 {
        self.sum(|z| z.system_watts)
    }
}

/// A pod, container or process on one node: CPU summed over the node's counted zones, GPU over
/// its devices (and MIG instances).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Consumer {
    pub(crate) node: String,
    /// pod UID, container ID or PID.
    pub(crate) id: String,
    /// What to show: the pod or container name, else its UID/ID; the process's comm.
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) pod_id: String,
    /// The pod's name (or UID) for containers and processes.
    pub(crate) pod: String,
    pub(crate) hub_user: String,
    pub(crate) cpu_joules: f64,
    pub(crate) cpu_gauge_watts: f64,
    /// The rate between two readings where known, else the gauge.
    pub(crate) cpu_watts: f64,
    pub(crate) gpu_joules: f64,
    pub(crate) gpu_gauge_watts: f64,
    /// The rate between two readings where known, else the gauge.
    pub(crate) gpu_watts: f64,
}

/// Everything one fetch saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub(crate) nodes: BTreeMap<String, Node>,
    pub pods: Vec<Consumer>,
    pub containers: Vec<Consumer>,
    pub(crate) processes: Vec<Consumer>,
    /// Every GPU of every node, by node and index.
    pub(crate) gpus: Vec<GpuDevice>,
    /// Each pod's use of each GPU or MIG instance.
    pub(crate) gpu_uses: Vec<GpuUse>,
    /// True when the source exposed any GPU family of the catalog.
    pub(crate) has_gpu_series: bool,
    /// Series whose value was NaN or infinite, named (the figures they enter show "n/a"); after
    /// the first few, one line counts the rest.
    pub(crate) warnings: Vec<String>,
}

/// Series named in full in `Reading::warnings`.
const MAX_WARNINGS: usize = 10;

impl Reading {
    pub(crate) fn consumers(&self, family: Family) -> &[Consumer] {
        match family {
            Family::Pod => &self.pods,
            Family::Container => &self.containers,
            Family::Process => &self.processes,
        }
    }

    fn consumers_mut(&mut self, family: Family) -> &mut Vec<Consumer> {
        match family {
            Family::Pod => &mut self.pods,
            Family::Container => &mut self.containers,
            Family::Process => &mut self.processes,
        }
    }

    /// The node a series names, added on first sight; keyed by the printable name, as pods and
    /// GPUs name their node.
    fn node_mut(&mut self, label: &str) -> &mut Node {
        let name = clean(label);
        self.nodes.entry(name.clone()).or_insert_with(|| Node {
            name,
            ..Node::default()
        })
    }

    /// All nodes' CPU and GPU power.
    pub(crate) fn total_watts(&self) -> f64 {
        self.nodes.values().map(Node::total_watts).sum()
    }

    /// One node's CPU and GPU power.
    pub(crate) fn node_total_watts(&self, node: &str) -> f64 {
        self.nodes.get(node).map(Node::total_watts).unwrap_or(0.0)
    }

    /// The GPUs of one node.
    pub(crate) fn node_gpus<'r>(
        &'r self,
        node: &'r str,
    ) -> impl Iterator<Item = &'r GpuDevice> + 'r {
        self.gpus.iter().filter(move |g| g.node == node)
    }

    /// Each node's GPU power: the sum of its devices'.
    fn sum_gpu_watts(&mut self) {
        for n in self.nodes.values_mut() {
            n.gpu_watts = 0.0;
        }
        for g in &self.gpus {
            if let Some(n) = self.nodes.get_mut(&g.node) {
                n.gpu_watts += g.watts.total;
            }
        }
    }

    pub(crate) fn has_hub_users(&self) -> bool {
        self.pods.iter().any(|p| !p.hub_user.is_empty())
    }

    /// Build from samples; `NotAnExporter` when none of them is a `kepler_*` series.
    pub fn from_samples(samples: &[Sample<'_>]) -> Result<Reading, ModelError> {
        let mut reading = Reading::default();
        let mut kepler = 0usize;
        let mut non_finite = 0usize;
        // Pass 1: nodes, because the zones a node has decide which zones its consumers count.
        for s in samples {
            if !s.name.starts_with("kepler_") {
                continue;
            }
            kepler += 1;
            let Some(family) = catalog::find(&s.name) else {
                continue;
            };
            if !s.value.is_finite() {
                non_finite += 1;
                if reading.warnings.len() < MAX_WARNINGS {
                    let labels = s.labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
                    reading.warnings.push(format!(
                        "{}: the figures it enters show n/a",
                        non_finite_series(&s.name, labels, s.value)
                    ));
                }
            }
            if family.resource == Resource::Gpu {
                reading.has_gpu_series = true;
            }
            let node_name = s.label("node_name");
            if (family.scope, family.resource) == (Scope::NodeZone, Resource::Cpu) {
                let zone_field: fn(&mut ZoneFigures) -> &mut f64 = match family.measure {
                    Measure::Joules(Part::Total) => |z| &mut z.joules,
                    Measure::Watts(Part::Total) => |z| &mut z.watts,
                    Measure::Watts(Part::Idle) => |z| &mut z.idle_watts,
                    Measure::Watts(Part::Active) => |z| &mut z.active_watts,
                    Measure::Watts(Part::System) => |z| &mut z.system_watts,
                    _ => continue,
                };
                let n = reading.node_mut(node_name);
                let zone = n.zones.entry(s.label("zone").to_string()).or_default();
                *zone_field(zone) += s.value;
                if family == &catalog::NODE_CPU_JOULES && n.energy_source.is_empty() {
                    n.energy_source = clean(s.label("source"));
                }
                continue;
            }
            if family == &catalog::ENERGY_SOURCE_INFO && s.value > 0.0 {
                reading.node_mut(node_name).energy_source = clean(s.label("source"))
            } else if family == &catalog::CPU_SOURCE_INFO && s.value > 0.0 {
                reading.node_mut(node_name).cpu_source = clean(s.label("source"))
            } else if family == &catalog::NODE_CPU_USAGE_RATIO {
                reading.node_mut(node_name).usage_ratio = Some(s.value)
            } else if family == &catalog::LAST_TICK_TIMESTAMP_SECONDS
                && s.value > 0.0
                && s.value.is_finite()
            {
                // A clock, not a figure: one that is not a number is no clock.
                reading.node_mut(node_name).tick_seconds = Some(s.value)
            }
        }
        if kepler == 0 {
            return Err(ModelError::NotAnExporter {
                samples: samples.len(),
            });
        }
        if non_finite > reading.warnings.len() {
            let more = non_finite - reading.warnings.len();
            reading
                .warnings
                .push(format!("{more} more series were NaN or infinite"));
        }
        // Pass 2: consumers, keyed by (family, node, id).
        let psys: HashMap<String, bool> = reading
            .nodes
            .iter()
            .map(|(name, n)| (name.clone(), n.zones.contains_key(catalog::PSYS_ZONE)))
            .collect();
        let mut index: HashMap<(Family, &str, &str), usize> = HashMap::new();
        let mut info: HashMap<&str, (&str, &str, &str)> = HashMap::new();
        let mut gpus = GpuBuilder::default();
        let mut last_node: (&str, bool) = ("\u{0}", false);
        for s in samples {
            let Some(f) = catalog::find(&s.name) else {
                continue;
            };
            if f == &catalog::POD_INFO {
                info.insert(
                    s.label("pod_id"),
                    (
                        s.label("pod_name"),
                        s.label("pod_namespace"),
                        s.label("hub_user"),
                    ),
                );
                continue;
            }
            if f.resource == Resource::Gpu {
                gpus.add(f, s);
            } else if f.resource != Resource::Cpu {
                continue;
            }
            let family = match f.scope {
                Scope::Pod => Family::Pod,
                Scope::Container => Family::Container,
                Scope::Process => Family::Process,
                _ => continue,
            };
            let is_joules = match f.measure {
                Measure::Joules(_) => true,
                Measure::Watts(_) => false,
                _ => continue,
            };
            let is_gpu = f.resource == Resource::Gpu;
            let node = s.label("node_name");
            // Series come grouped by node: look its zones up only when the node changes.
            if last_node.0 != node {
                last_node = (node, psys.get(node).copied().unwrap_or(false));
            }
            // GPU series have no zone: every device counts (MIG instances are inside their device).
            if !is_gpu && !counts_zone(last_node.1, s.label("zone")) {
                continue;
            }
            let id = match family {
                Family::Pod => s.label("pod_id"),
                Family::Container => s.label("container_id"),
                Family::Process => s.label("pid"),
            };
            let list = reading.consumers_mut(family);
            let slot = *index.entry((family, node, id)).or_insert_with(|| {
                list.push(new_consumer(family, s));
                list.len() - 1
            });
            let consumer = &mut list[slot];
            let value = s.value;
            match (is_gpu, is_joules) {
                (false, true) => consumer.cpu_joules += value,
                (false, false) => consumer.cpu_gauge_watts += value,
                (true, true) => consumer.gpu_joules += value,
                (true, false) => consumer.gpu_gauge_watts += value,
            }
        }
        for c in reading.pods.iter_mut() {
            if let Some((name, namespace, user)) = info.get(c.pod_id.as_str()) {
                fill(&mut c.name, name, &c.pod_id);
                fill(&mut c.namespace, namespace, "");
                fill(&mut c.hub_user, user, "");
            }
        }
        let pod_names: HashMap<(&str, &str), &Consumer> = reading
            .pods
            .iter()
            .map(|p| ((p.node.as_str(), p.pod_id.as_str()), p))
            .collect();
        for c in reading.containers.iter_mut() {
            if let Some(pod) = pod_names.get(&(c.node.as_str(), c.pod_id.as_str())) {
                c.pod = pod.name.clone();
                c.namespace = pod.namespace.clone();
                c.hub_user = pod.hub_user.clone();
            }
        }
        for list in [
            &mut reading.pods,
            &mut reading.containers,
            &mut reading.processes,
        ] {
            for c in list.iter_mut() {
                c.cpu_watts = c.cpu_gauge_watts;
                c.gpu_watts = c.gpu_gauge_watts;
            }
        }
        for n in reading.nodes.values_mut() {
            n.cpu_watts = n.gauge_watts();
        }
        (reading.gpus, reading.gpu_uses) = gpus.finish();
        // A node known only from its GPU series still gets a header entry.
        for g in &reading.gpus {
            let name = || g.node.clone();
            reading.nodes.entry(name()).or_insert_with(|| Node {
                name: name(),
                ..Node::default()
            });
        }
        reading.sum_gpu_watts();
        Ok(reading)
    }
}

fn new_consumer(family: Family, s: &Sample<'_>) -> Consumer {
    let node = clean(s.label("node_name"));
    match family {
        Family::Pod => {
            let pod_id = clean(s.label("pod_id"));
            Consumer {
                node,
                name: clean(or_if_empty(s.label("pod_name"), &pod_id)),
                namespace: clean(s.label("pod_namespace")),
                hub_user: clean(s.label("hub_user")),
                id: pod_id.clone(),
                pod: String::new(),
                pod_id,
                ..Consumer::default()
            }
        }
        Family::Container => {
            let id = clean(s.label("container_id"));
            let pod_id = clean(s.label("pod_id"));
            Consumer {
                node,
                name: clean(or_if_empty(s.label("container_name"), short_id(&id))),
                pod: pod_id.clone(),
                pod_id,
                id,
                ..Consumer::default()
            }
        }
        Family::Process => Consumer {
            node,
            id: clean(s.label("pid")),
            name: clean(s.label("comm")),
            pod: short_id(s.label("container_id")).to_string(),
            ..Consumer::default()
        },
    }
}

fn fill(target: &mut String, value: &str, unless_equal_to: &str) {
    if !value.is_empty() && (target.is_empty() || target == unless_equal_to) {
        *target = clean(value);
    }
}

/// Container IDs are 64 hex digits; 12 are enough to tell them apart (as docker does).
fn short_id(id: &str) -> &str {
    if id.len() > 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

/// Computes watts between consecutive readings from the energy counters, using the exporter's
/// snapshot time (not the fetch time) as the clock, so a refresh that saw no new tick does not
/// read as 0 W. A counter that went down (exporter restart) falls back to the watts gauge.
#[derive(Debug, Default)]
pub(crate) struct RateTracker {
    previous: HashMap<Counter, Previous>,
}

/// One counter `top` turns into watts (a private key: the fields are named in each doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counter {
    /// A node's CPU total: (node).
    NodeCpu(String),
    /// A consumer's CPU or GPU energy: (family, resource, node, consumer id).
    Consumer(Family, Resource, String, String),
    /// One part of one GPU's energy: (part, node, device id).
    Gpu(Part, String, String),
    /// A pod's energy on one GPU or MIG instance: (node, device id, MIG instance, pod UID).
    GpuUse(String, String, String, String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Previous {
    joules: f64,
    seconds: f64,
    watts: f64,
}

/// The rate of one counter. `seconds` is the time of the new value.
fn rate(previous: Option<Previous>, joules: f64, seconds: f64, gauge: f64) -> Previous {
    let watts = match previous {
        Some(p) if seconds > p.seconds && joules >= p.joules => {
            (joules - p.joules) / (seconds - p.seconds)
        }
        // Same snapshot as last time: nothing new, keep the last rate.
        Some(p) if seconds == p.seconds && joules == p.joules => p.watts,
        // First sight, a reset (counter went down) or a clock that went back.
        _ => gauge,
    };
    Previous {
        joules,
        seconds,
        watts,
    }
}

/// The counters of one update: the old rates are read, the new ones kept for the next update.
struct Step<'t> {
    old: &'t HashMap<Counter, Previous>,
    new: HashMap<Counter, Previous>,
}

impl Step<'_> {
    fn watts(&mut self, counter: Counter, joules: f64, seconds: f64, gauge: f64) -> f64 {
        let p = rate(self.old.get(&counter).copied(), joules, seconds, gauge);
        self.new.insert(counter, p);
        p.watts
    }
}

impl RateTracker {
    /// Set `watts` on every node, GPU and consumer of `reading`. `fetched_seconds` is used where
    /// the exporter did not say when its snapshot was taken.
    pub(crate) fn update(&mut self, reading: &mut Reading, fetched_seconds: f64) {
        let mut step = Step {
            old: &self.previous,
            new: HashMap::with_capacity(self.previous.len()),
        };
        let mut clocks = HashMap::with_capacity(reading.nodes.len());
        for (name, node) in reading.nodes.iter_mut() {
            let seconds = node.tick_seconds.unwrap_or(fetched_seconds);
            clocks.insert(node.name.clone(), seconds);
            let counter = Counter::NodeCpu(name.clone());
            node.cpu_watts = step.watts(counter, node.total_joules(), seconds, node.gauge_watts());
        }
        let clock = |node: &str| clocks.get(node).copied().unwrap_or(fetched_seconds);
        for (family, list) in [
            (Family::Pod, &mut reading.pods),
            (Family::Container, &mut reading.containers),
            (Family::Process, &mut reading.processes),
        ] {
            for c in list.iter_mut() {
                let seconds = clock(&c.node);
                let counter =
                    |resource| Counter::Consumer(family, resource, c.node.clone(), c.id.clone());
                let cpu = counter(Resource::Cpu);
                c.cpu_watts = step.watts(cpu, c.cpu_joules, seconds, c.cpu_gauge_watts);
                if c.gpu_joules > 0.0 || c.gpu_gauge_watts > 0.0 {
                    let gpu = counter(Resource::Gpu);
                    c.gpu_watts = step.watts(gpu, c.gpu_joules, seconds, c.gpu_gauge_watts);
                }
            }
        }
        for g in reading.gpus.iter_mut() {
            let seconds = clock(&g.node);
            for part in GPU_PARTS {
                let counter = Counter::Gpu(part, g.node.clone(), g.id.clone());
                let (Some(&mut joules), Some(&mut gauge), Some(watts)) = (
                    g.joules.get_mut(part),
                    g.gauge_watts.get_mut(part),
                    g.watts.get_mut(part),
                ) else {
                    continue;
                };
                *watts = step.watts(counter, joules, seconds, gauge);
            }
        }
        for u in reading.gpu_uses.iter_mut() {
            let (node, device) = (u.node.clone(), u.device.clone());
            let counter = Counter::GpuUse(node, device, u.instance.clone(), u.pod_id.clone());
            u.watts = step.watts(counter, u.joules, clock(&u.node), u.gauge_watts);
        }
        self.previous = step.new;
        reading.sum_gpu_watts();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::remote::exposition::parse;

    pub(crate) const TWO_PODS: &str = include_str!("fixtures/exporter_two_pods.prom");
    pub(crate) const HUB_USERS: &str = include_str!("fixtures/hub_users.prom");
    pub(crate) const GPU_NODE: &str = include_str!("fixtures/gpu_node.prom");

    pub(crate) fn reading(text: &str) -> Reading {
        Reading::from_samples(&parse(text).unwrap()).unwrap()
    }

    #[test]
    fn a_node_name_with_a_control_character_is_one_printable_node_its_pods_find() {
        let r = reading(
            "kepler_node_cpu_watts{node_name=\"n\\n1\",zone=\"package\",source=\"rapl\"} 50\n\
             kepler_pod_cpu_watts{node_name=\"n\\n1\",zone=\"package\",pod_id=\"u1\"} 7\n",
        );
        assert_eq!(r.nodes.keys().collect::<Vec<_>>(), vec!["n?1"]);
        assert_eq!(r.nodes["n?1"].name, "n?1");
        assert_eq!(r.pods[0].node, "n?1");
        assert_eq!(r.node_total_watts("n?1"), 50.0);
    }

    #[test]
    fn node_total_is_package_plus_dram_not_all_zones() {
        let r = reading(
            "kepler_node_cpu_joules_total{node_name=\"n\",zone=\"package\",source=\"rapl\"} 100\n\
             kepler_node_cpu_joules_total{node_name=\"n\",zone=\"core\",source=\"rapl\"} 80\n\
             kepler_node_cpu_joules_total{node_name=\"n\",zone=\"dram\",source=\"rapl\"} 10\n\
             kepler_node_cpu_watts{node_name=\"n\",zone=\"package\",source=\"rapl\"} 50\n\
             kepler_node_cpu_watts{node_name=\"n\",zone=\"core\",source=\"rapl\"} 40\n\
             kepler_node_cpu_watts{node_name=\"n\",zone=\"dram\",source=\"rapl\"} 5\n\
             kepler_pod_cpu_watts{node_name=\"n\",zone=\"core\",pod_id=\"u1\"} 9\n\
             kepler_pod_cpu_watts{node_name=\"n\",zone=\"package\",pod_id=\"u1\"} 7\n",
        );
        let n = &r.nodes["n"];
        assert_eq!(n.total_joules(), 110.0);
        assert_eq!(n.total_watts(), 55.0);
        assert_eq!(n.energy_source, "rapl");
        assert_eq!(r.pods[0].cpu_watts, 7.0);
        assert_eq!(r.pods[0].name, "u1", "a pod without a name shows its UID");
    }

    #[test]
    fn psys_alone_where_present() {
        let r = reading(
            "kepler_node_cpu_watts{node_name=\"n\",zone=\"package\",source=\"rapl\"} 50\n\
             kepler_node_cpu_watts{node_name=\"n\",zone=\"dram\",source=\"rapl\"} 5\n\
             kepler_node_cpu_watts{node_name=\"n\",zone=\"psys\",source=\"rapl\"} 70\n\
             kepler_pod_cpu_watts{node_name=\"n\",zone=\"package\",pod_id=\"u1\"} 7\n\
             kepler_pod_cpu_watts{node_name=\"n\",zone=\"psys\",pod_id=\"u1\"} 8\n",
        );
        assert_eq!(r.nodes["n"].cpu_watts, 70.0);
        assert_eq!(r.pods[0].cpu_watts, 8.0);
    }

    #[test]
    fn real_exporter_output_is_consistent() {
        let r = reading(TWO_PODS);
        assert_eq!(r.nodes.len(), 1);
        let node = r.nodes.values().next().unwrap();
        assert!(node.cpu_watts > 0.0);
        assert!(node.tick_seconds.is_some());
        assert_eq!(node.cpu_source, "cgroup");
        assert_eq!(r.pods.len(), 2);
        assert!(r.containers.len() >= 2);
        // Σ pods + system = active (the exporter's identity, per interval).
        let pods: f64 = r.pods.iter().map(|p| p.cpu_watts).sum();
        let active = node.active_watts();
        assert!(
            (pods + node.system_watts() - active).abs() <= 1e-6 * active.max(1.0),
            "pods {pods} + system {} != active {active}",
            node.system_watts()
        );
        // Containers know their pod's display name.
        for c in &r.containers {
            assert!(r.pods.iter().any(|p| p.name == c.pod), "{c:?}");
        }
    }

    #[test]
    fn hub_users_come_from_labels_or_pod_info() {
        let r = reading(HUB_USERS);
        assert!(r.has_hub_users());
        let user = |id: &str| {
            r.pods
                .iter()
                .find(|p| p.pod_id == id)
                .map(|p| (p.name.as_str(), p.namespace.as_str(), p.hub_user.as_str()))
        };
        assert_eq!(user("uid-alice"), Some(("jupyter-alice", "jhub", "alice")));
        // Named only by kepler_pod_info.
        assert_eq!(user("uid-bob"), Some(("jupyter-bob", "jhub", "bob")));
        assert_eq!(user("uid-sys"), Some(("coredns-1", "kube-system", "")));
        assert!(!reading(TWO_PODS).has_hub_users());
    }

    #[test]
    fn non_exporter_text_is_refused() {
        let samples = parse("go_goroutines 7\nup 1\n").unwrap();
        assert_eq!(
            Reading::from_samples(&samples),
            Err(ModelError::NotAnExporter { samples: 2 })
        );
    }

    fn pod_reading(joules: f64, watts: f64, tick: f64) -> Reading {
        reading(&format!(
            "kepler_node_cpu_joules_total{{node_name=\"n\",zone=\"package\",source=\"rapl\"}} {}\n\
             kepler_node_cpu_watts{{node_name=\"n\",zone=\"package\",source=\"rapl\"}} 99\n\
             kepler_exporter_last_tick_timestamp_seconds{{node_name=\"n\"}} {tick}\n\
             kepler_pod_cpu_joules_total{{node_name=\"n\",zone=\"package\",pod_id=\"p\"}} {joules}\n\
             kepler_pod_cpu_watts{{node_name=\"n\",zone=\"package\",pod_id=\"p\"}} {watts}\n",
            joules * 10.0
        ))
    }

    #[test]
    fn rates_between_readings_use_the_exporters_clock_and_survive_resets() {
        let mut rates = RateTracker::default();
        let mut first = pod_reading(100.0, 4.0, 1000.0);
        rates.update(&mut first, 5000.0);
        assert_eq!(first.pods[0].cpu_watts, 4.0, "first sight: the gauge");
        assert_eq!(first.nodes["n"].cpu_watts, 99.0);

        let mut second = pod_reading(130.0, 4.0, 1003.0);
        rates.update(&mut second, 5001.0);
        assert_eq!(
            second.pods[0].cpu_watts, 10.0,
            "30 J over 3 s of exporter time"
        );
        assert_eq!(second.nodes["n"].cpu_watts, 100.0);

        // A refresh that found the same snapshot keeps the last rate (not 0 W).
        let mut same = pod_reading(130.0, 4.0, 1003.0);
        rates.update(&mut same, 5002.0);
        assert_eq!(same.pods[0].cpu_watts, 10.0);

        // The exporter restarted: counters went down; use its gauge, then rate again.
        let mut reset = pod_reading(2.0, 6.0, 1010.0);
        rates.update(&mut reset, 5010.0);
        assert_eq!(reset.pods[0].cpu_watts, 6.0);
        let mut after = pod_reading(14.0, 6.0, 1012.0);
        rates.update(&mut after, 5012.0);
        assert_eq!(after.pods[0].cpu_watts, 6.0);
        assert_eq!(after.nodes["n"].cpu_watts, 60.0);
    }

    fn gpu<'r>(r: &'r Reading, id: &str) -> &'r GpuDevice {
        r.gpus.iter().find(|g| g.id == id).unwrap()
    }

    #[test]
    fn gpus_their_pods_and_the_node_total() {
        let r = reading(GPU_NODE);
        assert!(r.has_gpu_series);
        let ids: Vec<&str> = r.gpus.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["GPU-aaaa", "GPU-bbbb", "GPU-cccc"]);
        let g0 = gpu(&r, "GPU-aaaa");
        assert_eq!((g0.index.as_str(), g0.name.as_str()), ("0", "NVIDIA H200"));
        assert_eq!(g0.method, "energy_counter");
        assert!(g0.has_device_series);
        assert_eq!(
            (g0.watts.total, g0.watts.idle, g0.watts.active),
            (300.0, 50.0, 250.0)
        );
        assert_eq!(g0.joules.idle, 5000.0);
        // No gauge for unattributed power: active minus the pods' gauges until there is a rate.
        assert_eq!(g0.watts.unattributed, 0.0);
        assert_eq!(gpu(&r, "GPU-cccc").watts.unattributed, 0.0);
        let n = &r.nodes["g1"];
        assert_eq!(n.cpu_watts, 50.0);
        assert_eq!(n.gpu_watts, 580.0);
        assert_eq!(n.total_watts(), 630.0);
        assert_eq!(r.total_watts(), 630.0);
        // CPU and GPU apart per pod; a pod seen only on a GPU is listed too.
        let pod = |id: &str| r.pods.iter().find(|p| p.pod_id == id).unwrap();
        assert_eq!(
            (pod("uid-alice").cpu_watts, pod("uid-alice").gpu_watts),
            (5.0, 187.5)
        );
        let alice = pod("uid-alice");
        assert_eq!(alice.cpu_watts + alice.gpu_watts, 192.5);
        assert_eq!(alice.cpu_joules + alice.gpu_joules, 19750.0);
        assert_eq!(
            (pod("uid-bob").cpu_watts, pod("uid-bob").gpu_watts),
            (0.0, 62.5)
        );
        assert_eq!(pod("uid-bob").name, "batch-bob");
        assert_eq!(pod("uid-carol").gpu_watts, 120.0);
        assert_eq!(r.pods.len(), 4);
        assert_eq!(r.containers[0].gpu_watts, 120.0);
        // Uses: per device and MIG instance, never the device and its instances twice.
        let on = |device: &str| -> f64 {
            r.gpu_uses
                .iter()
                .filter(|u| u.device == device)
                .map(|u| u.watts)
                .sum()
        };
        assert_eq!(on("GPU-aaaa"), 250.0);
        assert_eq!(on("GPU-bbbb"), 160.0);
        assert_eq!(on("GPU-cccc"), 0.0);
        let instances: Vec<&str> = r.gpu_uses.iter().map(|u| u.instance.as_str()).collect();
        assert_eq!(instances, ["", "", "MIG-big", "MIG-small"]);
    }

    #[test]
    fn a_cpu_only_exporter_has_no_gpus() {
        let r = reading(TWO_PODS);
        assert!(!r.has_gpu_series && r.gpus.is_empty() && r.gpu_uses.is_empty());
        let n = r.nodes.values().next().unwrap();
        assert_eq!(n.gpu_watts, 0.0);
        assert_eq!(n.total_watts(), n.cpu_watts);
        assert!(r
            .pods
            .iter()
            .all(|p| p.gpu_watts == 0.0 && p.gpu_joules == 0.0));
    }

    #[test]
    fn gpu_series_with_missing_or_unmatched_labels_are_kept_and_marked() {
        let r = reading(
            "kepler_node_gpu_watts{node_name=\"n\",gpu=\"0\",gpu_name=\"Old\"} 100\n\
             kepler_node_gpu_watts{node_name=\"n\",gpu_name=\"Nameless\"} 30\n\
             kepler_node_gpu_joules_total{node_name=\"n\",gpu=\"0\",gpu_uuid=\"\",gpu_name=\"Old\"} NaN\n\
             kepler_pod_gpu_watts{node_name=\"n\",pod_id=\"p1\",gpu=\"7\",gpu_uuid=\"GPU-ghost\",gpu_instance=\"MIG-ghost\"} 5\n\
             kepler_pod_gpu_watts{node_name=\"n\",pod_id=\"p2\",gpu_uuid=\"GPU-ghost\",gpu_instance=\"\"} 2\n\
             kepler_pod_gpu_joules_total{node_name=\"n\",pod_id=\"\",gpu=\"0\",gpu_instance=\"MIG-x\"} 9\n",
        );
        let ids: Vec<&str> = r.gpus.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["gpu 0", "GPU-ghost", "(no gpu_uuid)"]);
        let old = gpu(&r, "gpu 0");
        assert!(old.has_device_series && old.uuid.is_empty());
        assert_eq!(old.watts.total, 100.0);
        assert!(
            old.joules.total.is_nan(),
            "NaN stays NaN (shown as n/a), never a silent 0"
        );
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with("kepler_node_gpu_joules_total{node_name=\"n\",gpu=\"0\",gpu_uuid=\"\",gpu_name=\"Old\"} is NaN"),
            "{:?}",
            r.warnings
        );
        assert_eq!(old.display_name(), "0: Old");
        let ghost = gpu(&r, "GPU-ghost");
        assert!(!ghost.has_device_series);
        assert_eq!(ghost.index, "7");
        assert_eq!(ghost.display_name(), "7: GPU-ghost");
        assert_eq!(gpu(&r, "(no gpu_uuid)").display_name(), "?: Nameless");
        // Device power comes only from device series: a GPU only pods name adds nothing.
        assert_eq!(r.nodes["n"].gpu_watts, 130.0);
        assert_eq!(r.gpu_uses.len(), 3);
    }

    #[test]
    fn gpu_rates_come_from_the_counters() {
        let mut rates = RateTracker::default();
        let at = |tick: f64, device_j: f64, idle_j: f64, pod_j: f64| {
            reading(&format!(
                "kepler_exporter_last_tick_timestamp_seconds{{node_name=\"n\"}} {tick}\n\
                 kepler_node_gpu_joules_total{{node_name=\"n\",gpu=\"0\",gpu_uuid=\"G\"}} {device_j}\n\
                 kepler_node_gpu_idle_joules_total{{node_name=\"n\",gpu=\"0\",gpu_uuid=\"G\"}} {idle_j}\n\
                 kepler_node_gpu_watts{{node_name=\"n\",gpu=\"0\",gpu_uuid=\"G\"}} 1\n\
                 kepler_pod_gpu_joules_total{{node_name=\"n\",pod_id=\"p\",gpu=\"0\",gpu_uuid=\"G\",gpu_instance=\"\"}} {pod_j}\n"
            ))
        };
        let mut first = at(10.0, 1000.0, 100.0, 500.0);
        rates.update(&mut first, 0.0);
        assert_eq!(first.gpus[0].watts.total, 1.0, "first sight: the gauge");
        let mut second = at(12.0, 1600.0, 200.0, 900.0);
        rates.update(&mut second, 0.0);
        assert_eq!(second.gpus[0].watts.total, 300.0);
        assert_eq!(second.gpus[0].watts.idle, 50.0);
        assert_eq!(second.gpu_uses[0].watts, 200.0);
        assert_eq!(second.pods[0].gpu_watts, 200.0);
        assert_eq!(second.nodes["n"].gpu_watts, 300.0);
    }
}
