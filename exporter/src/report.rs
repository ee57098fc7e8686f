//! `kepler-rs report`: energy per JupyterHub user, namespace or pod over a period, from
//! Prometheus (`increase()` of the exporters' counters, so restarts are handled), in kWh and
//! optionally CO₂, as a table, CSV or Markdown. Queries here; aggregation is a pure function.

use crate::catalog::counts_toward_node_total as counts_zone;
use crate::catalog::{self, Family};
use crate::remote::series::{clean, figure, non_finite_series, or_if_empty, percent};
use crate::remote::{
    unix_now, BaseUrl, Client, ClientError, ClientOptions, PromSample, RemoteArgs, SetupError,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

pub(crate) const JOULES_PER_KWH: f64 = 3.6e6;

/// Flags of `kepler-rs report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The Prometheus server that scrapes the exporters
    #[arg(long, value_name = "URL")]
    pub(crate) prometheus: String,
    /// The period: this long until --to (default 7d unless --from is given)
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "from")]
    pub(crate) since: Option<Duration>,
    /// Start of the period: RFC 3339 (2024-05-01T00:00:00Z, 2024-05-01) or Unix seconds
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// End of the period (default: now)
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Groupings to report, in order
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "user,namespace"
    )]
    pub(crate) by: Vec<Grouping>,
    /// Grams of CO₂ per kWh of the electricity, to add emissions
    #[arg(long, value_name = "G_PER_KWH")]
    pub(crate) carbon_intensity: Option<f64>,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// Also bill idle energy: each node's idle CPU and GPU energy split by each consumer's share
    /// of that node's active energy; "(outside pods)" gets what no pod was billed
    #[arg(long)]
    pub(crate) include_idle: bool,
    /// Give up on a query after this long
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub(crate) enum Grouping {
    User,
    Namespace,
    Pod,
}

impl Grouping {
    fn title(self) -> &'static str {
        match self {
            Grouping::User => "JupyterHub user",
            Grouping::Namespace => "namespace",
            Grouping::Pod => "pod",
        }
    }
    fn csv_name(self) -> &'static str {
        match self {
            Grouping::User => "user",
            Grouping::Namespace => "namespace",
            Grouping::Pod => "pod",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Markdown,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("--{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ReportError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ReportError::Flag { .. } | ReportError::Setup(_) => 2,
            _ => 1,
        }
    }
}

/// Validated flags.
#[derive(Debug, Clone)]
pub(crate) struct ReportConfig {
    pub(crate) prometheus: BaseUrl,
    pub(crate) from: f64,
    pub(crate) to: f64,
    pub(crate) by: Vec<Grouping>,
    pub(crate) carbon_g_per_kwh: Option<f64>,
    pub(crate) format: Format,
    pub(crate) include_idle: bool,
    /// Timeout, TLS roots and credentials of every query.
    pub(crate) client: ClientOptions,
}

/// RFC 3339 (a bare date means midnight UTC) or Unix seconds.
pub(crate) fn parse_time(text: &str) -> Result<f64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return if seconds.is_finite() && seconds >= 0.0 {
            Ok(seconds)
        } else {
            Err(format!("{text:?} is not a time"))
        };
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|e| {
            format!("{text:?}: {e} (use 2024-05-01T00:00:00Z, 2024-05-01 or Unix seconds)")
        })
        .and_then(|t| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .map_err(|_| format!("{text:?} is before 1970"))
        })
}

impl ReportArgs {
    /// `password_env`: the value of `KEPLER_RS_BASIC_AUTH_PASSWORD`, if set.
    pub(crate) fn resolve(
        self,
        now: f64,
        password_env: Option<String>,
    ) -> Result<ReportConfig, ReportError> {
        let flag = |flag, message: String| ReportError::Flag { flag, message };
        let to = match &self.to {
            Some(t) => parse_time(t).map_err(|m| flag("to", m))?,
            None => now,
        };
        let from = match (&self.from, self.since) {
            (Some(f), _) => parse_time(f).map_err(|m| flag("from", m))?,
            (None, Some(since)) => to - since.as_secs_f64(),
            (None, None) => to - 7.0 * 86_400.0,
        };
        if to - from < 1.0 {
            return Err(flag(
                "from",
                "the period must end at least 1 s after it starts".into(),
            ));
        }
        if let Some(g) = self.carbon_intensity {
            if !g.is_finite() || g < 0.0 {
                return Err(flag(
                    "carbon-intensity",
                    format!("{g} is not a g/kWh figure"),
                ));
            }
        }
        let mut by = self.by.clone();
        by.dedup();
        Ok(ReportConfig {
            prometheus: BaseUrl::parse(&self.prometheus)?,
            from,
            to,
            by,
            carbon_g_per_kwh: self.carbon_intensity,
            format: self.format,
            include_idle: self.include_idle,
            client: self.remote.resolve(self.timeout, password_env)?,
        })
    }
}

/// The report's queries, each an `increase()` over the period (or a `max_over_time`), at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// CPU energy per node and zone.
    Nodes,
    /// CPU idle energy per node and zone.
    NodeIdle,
    /// CPU energy per pod, node and zone, with the pod's names.
    Pods,
    /// Names of every pod seen in the period (`kepler_pod_info`).
    PodInfo,
    /// GPU energy per node and device (devices only: MIG instances are inside their device).
    Gpus,
    /// GPU idle energy per node and device.
    GpuIdle,
    /// GPU energy per pod and node, summed over the devices and MIG instances it ran on.
    PodGpus,
    /// Nodes whose CPU energy was estimated (no RAPL) at some point in the period.
    Estimated,
}

impl Query {
    /// The catalog family the query reads, to name a series in a warning.
    pub(crate) fn family(self) -> &'static Family {
        match self {
            Query::Nodes => &catalog::NODE_CPU_JOULES,
            Query::NodeIdle => &catalog::NODE_CPU_IDLE_JOULES,
            Query::Pods => &catalog::POD_CPU_JOULES,
            Query::PodInfo => &catalog::POD_INFO,
            Query::Gpus => &catalog::NODE_GPU_JOULES,
            Query::GpuIdle => &catalog::NODE_GPU_IDLE_JOULES,
            Query::PodGpus => &catalog::POD_GPU_JOULES,
            Query::Estimated => &catalog::ENERGY_SOURCE_INFO,
        }
    }
}

/// Labels that name a pod in the report's queries.
const POD_LABELS: &str = "pod_id, pod_name, pod_namespace, hub_user";

/// The PromQL of each query, for a period of `range` (a PromQL duration) ending at the query time.
pub(crate) fn queries(range: &str) -> [(Query, String); 8] {
    let increase = |query: Query, by: &str| {
        let name = query.family().name;
        (query, format!("sum by ({by}) (increase({name}[{range}]))"))
    };
    let latest = |query: Query, by: &str, selector: &str| {
        let name = query.family().name;
        (
            query,
            format!("max by ({by}) (max_over_time({name}{selector}[{range}]))"),
        )
    };
    [
        increase(Query::Nodes, "node_name, zone"),
        increase(Query::NodeIdle, "node_name, zone"),
        increase(Query::Pods, &format!("node_name, zone, {POD_LABELS}")),
        latest(Query::PodInfo, POD_LABELS, ""),
        increase(Query::Gpus, "node_name, gpu_uuid"),
        increase(Query::GpuIdle, "node_name, gpu_uuid"),
        increase(Query::PodGpus, &format!("node_name, {POD_LABELS}")),
        latest(Query::Estimated, "node_name", "{source=\"estimate\"}"),
    ]
}

/// Run every query and sum the answers as they stream in: no answer is ever held whole, so the
/// memory follows the number of pods and nodes, not the size of the answers.
pub(crate) fn query(client: &Client, config: &ReportConfig) -> Result<Aggregator, ClientError> {
    let range = format!("{}s", (config.to - config.from).round().max(1.0) as u64);
    let at = Some(config.to);
    let mut aggregator = Aggregator::default();
    for (query, promql) in queries(&range) {
        client.prometheus_query_each(&config.prometheus, &promql, at, &mut |sample| {
            aggregator.add(query, &sample)
        })?;
    }
    Ok(aggregator)
}

/// Energy split by where it was drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Energy {
    pub(crate) cpu_joules: f64,
    pub(crate) gpu_joules: f64,
}

impl Energy {
    pub(crate) fn total(&self) -> f64 {
        self.cpu_joules + self.gpu_joules
    }
    fn add(&mut self, other: Energy) {
        self.cpu_joules += other.cpu_joules;
        self.gpu_joules += other.gpu_joules;
    }
    /// `self - other`, each part at least 0 (NaN stays NaN).
    fn less(self, other: Energy) -> Energy {
        Energy {
            cpu_joules: non_negative(self.cpu_joules - other.cpu_joules),
            gpu_joules: non_negative(self.gpu_joules - other.gpu_joules),
        }
    }
}

/// One line of a grouping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) energy: Energy,
}

/// The aggregated report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) from: f64,
    pub(crate) to: f64,
    pub(crate) nodes: usize,
    /// All nodes' energy: CPU by the node-total rule (package + dram, or psys), GPU per device.
    pub(crate) node: Energy,
    /// Idle part of `node` (by the same rules).
    pub(crate) node_idle: Energy,
    /// What the pods were billed (with `include_idle`, their share of idle too).
    pub(crate) pods: Energy,
    /// Idle energy billed to consumers by their share of active energy on each node.
    pub(crate) include_idle: bool,
    /// Nodes whose CPU energy was estimated (no RAPL) in the period.
    pub(crate) estimated_nodes: Vec<String>,
    /// Per grouping: lines sorted by total energy, largest first; or why there are none.
    pub(crate) groups: Vec<(Grouping, Result<Vec<Line>, &'static str>)>,
    /// Series whose value was NaN or infinite, named (the figures they enter show "n/a").
    pub(crate) warnings: Vec<String>,
    /// There are pods but none has a namespace: the namespace grouping says so above its one line.
    pub(crate) no_namespaces: bool,
}

const NO_USERS: &str = "no JupyterHub user data in this period: no hub_user label on kepler_pod_cpu_joules_total or kepler_pod_info (it comes with Kubernetes metadata)";

const NO_NAMESPACES: &str = "no namespace data in this period: no pod_namespace label on kepler_pod_cpu_joules_total or kepler_pod_info (it comes with Kubernetes metadata), so every pod is under (no namespace)";

const NO_POD_ENERGY: &str = "no pod energy in this period";

/// The consumer that holds, with `--include-idle`, everything no pod was billed: host daemons and
/// the kernel, pods ended before the period's last grace period, GPU work no pod could be tied to,
/// and idle energy of nodes where nothing was active.
pub(crate) const OUTSIDE_PODS: &str = "(outside pods)";

/// Series named in full in the warnings; the rest are counted.
const MAX_WARNINGS: usize = 10;

/// CPU joules summed under both readings of the node-total rule, because whether a node has a
/// psys zone may be learnt only after its other zones (answers stream in any order).
#[derive(Debug, Default, Clone, Copy)]
struct ZoneSums {
    with_psys: f64,
    without_psys: f64,
}

impl ZoneSums {
    fn add(&mut self, zone: &str, joules: f64) {
        if counts_zone(true, zone) {
            self.with_psys += joules;
        }
        if counts_zone(false, zone) {
            self.without_psys += joules;
        }
    }
    fn counted(&self, has_psys: bool) -> f64 {
        if has_psys {
            self.with_psys
        } else {
            self.without_psys
        }
    }
}

/// One node's energy as it arrives.
#[derive(Debug, Default)]
struct NodeSums {
    has_psys: bool,
    cpu: ZoneSums,
    cpu_idle: ZoneSums,
    gpu: f64,
    gpu_idle: f64,
}

impl NodeSums {
    /// The node's energy by the node-total rule.
    fn total(&self) -> Energy {
        Energy {
            cpu_joules: self.cpu.counted(self.has_psys),
            gpu_joules: self.gpu,
        }
    }
    /// The idle part of `total`.
    fn idle(&self) -> Energy {
        Energy {
            cpu_joules: self.cpu_idle.counted(self.has_psys),
            gpu_joules: self.gpu_idle,
        }
    }
}

/// A pod's names: the first non-empty value seen for each.
#[derive(Debug, Default, Clone)]
struct PodNames {
    name: String,
    namespace: String,
    user: String,
}

impl PodNames {
    /// Fill the names still empty from `known` (name, namespace, user).
    fn fill(&mut self, known: [&str; 3]) {
        let slots = [&mut self.name, &mut self.namespace, &mut self.user];
        for (slot, value) in slots.into_iter().zip(known) {
            if slot.is_empty() {
                slot.push_str(value);
            }
        }
    }
}

/// A sample's pod names (name, namespace, user).
fn pod_names(s: &PromSample) -> [&str; 3] {
    [
        s.label("pod_name"),
        s.label("pod_namespace"),
        s.label("hub_user"),
    ]
}

/// A pod's energy on one node as it arrives.
#[derive(Debug, Default)]
struct PodSums {
    names: PodNames,
    cpu: ZoneSums,
    gpu: f64,
}

/// Sums the answers of the report's queries as their samples arrive, in any order, then builds
/// the report. Holds one entry per node and per (node, pod), never the samples.
#[derive(Debug, Default)]
pub(crate) struct Aggregator {
    nodes: BTreeMap<String, NodeSums>,
    /// Per (node, pod UID).
    pods: BTreeMap<(String, String), PodSums>,
    /// Names by pod UID, from `kepler_pod_info`.
    info: HashMap<String, PodNames>,
    estimated: BTreeSet<String>,
    warnings: Vec<String>,
    non_finite: usize,
}

impl Aggregator {
    /// Add one sample of `query`'s answer.
    pub(crate) fn add(&mut self, query: Query, s: &PromSample) {
        let joules = match query {
            Query::PodInfo => {
                let names = self.info.entry(s.label("pod_id").to_string()).or_default();
                names.fill(pod_names(s));
                return;
            }
            Query::Estimated => {
                if s.value > 0.0 {
                    self.estimated.insert(clean(s.label("node_name")));
                }
                return;
            }
            _ => self.joules(query, s),
        };
        let node = s.label("node_name").to_string();
        let zone = s.label("zone");
        match query {
            Query::Nodes | Query::NodeIdle => {
                let n = self.nodes.entry(node).or_default();
                n.has_psys |= zone == catalog::PSYS_ZONE;
                let sums = if query == Query::Nodes {
                    &mut n.cpu
                } else {
                    &mut n.cpu_idle
                };
                sums.add(zone, joules);
            }
            Query::Gpus => self.nodes.entry(node).or_default().gpu += joules,
            Query::GpuIdle => self.nodes.entry(node).or_default().gpu_idle += joules,
            Query::Pods | Query::PodGpus => {
                let pod_id = s.label("pod_id").to_string();
                let pod = self.pods.entry((node, pod_id)).or_default();
                pod.names.fill(pod_names(s));
                if query == Query::Pods {
                    pod.cpu.add(zone, joules);
                } else {
                    pod.gpu += joules;
                }
            }
            Query::PodInfo | Query::Estimated => {}
        }
    }

    /// A sample's joules: an increase is never negative (a tiny negative from rounding is 0);
    /// NaN and infinities are kept, so every figure they enter shows "n/a", and are named in a
    /// warning.
    fn joules(&mut self, query: Query, s: &PromSample) -> f64 {
        if s.value.is_finite() {
            return s.value.max(0.0);
        }
        self.non_finite += 1;
        if self.warnings.len() < MAX_WARNINGS {
            let labels = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            self.warnings.push(format!(
                "increase of {}: the figures it enters show n/a",
                non_finite_series(query.family().name, labels, s.value)
            ));
        }
        s.value
    }

    /// The report: CPU zones follow the node-total rule per node; GPU energy is per device, never
    /// per MIG instance, so nothing is counted twice. With `include_idle`, each node's idle energy
    /// is split by each consumer's share of that node's active energy (CPU and GPU separately),
    /// and `(outside pods)` gets what no pod was billed, so the lines add up to the nodes' energy.
    pub(crate) fn finish(self, from: f64, to: f64, by: &[Grouping], include_idle: bool) -> Report {
        let Aggregator {
            nodes,
            pods: pod_sums,
            info,
            estimated,
            mut warnings,
            non_finite,
        } = self;
        if non_finite > warnings.len() {
            warnings.push(format!(
                "{} more series were NaN or infinite",
                non_finite - warnings.len()
            ));
        }
        let mut pods: Vec<(PodNames, Energy)> = Vec::with_capacity(pod_sums.len());
        for ((node, id), pod) in &pod_sums {
            let node = nodes.get(node);
            let mut names = pod.names.clone();
            if let Some(known) = info.get(id) {
                names.fill([&known.name, &known.namespace, &known.user]);
            }
            if names.name.is_empty() {
                names.name.clone_from(id);
            }
            let mut energy = Energy {
                cpu_joules: pod.cpu.counted(node.is_some_and(|n| n.has_psys)),
                gpu_joules: pod.gpu,
            };
            // Bill each pod its share of its node's idle energy.
            if let Some(n) = node.filter(|_| include_idle) {
                let (idle, active) = (n.idle(), n.total().less(n.idle()));
                energy.cpu_joules += idle.cpu_joules * share(energy.cpu_joules, active.cpu_joules);
                energy.gpu_joules += idle.gpu_joules * share(energy.gpu_joules, active.gpu_joules);
            }
            pods.push((names, energy));
        }
        let mut node = Energy::default();
        let mut node_idle = Energy::default();
        for n in nodes.values() {
            node.add(n.total());
            node_idle.add(n.idle());
        }
        let mut billed = Energy::default();
        for (_, energy) in &pods {
            billed.add(*energy);
        }
        let outside = node.less(billed);
        let has_users = pods.iter().any(|(p, _)| !p.user.is_empty());
        let has_namespaces = pods.iter().any(|(p, _)| !p.namespace.is_empty());
        let groups = by
            .iter()
            .map(|&grouping| {
                if grouping == Grouping::User && !has_users {
                    return (grouping, Err(NO_USERS));
                }
                let mut sums: BTreeMap<String, Energy> = BTreeMap::new();
                for (pod, energy) in &pods {
                    let key = match grouping {
                        Grouping::User => or_if_empty(&pod.user, "(not a hub user)").to_string(),
                        Grouping::Namespace => {
                            or_if_empty(&pod.namespace, "(no namespace)").to_string()
                        }
                        Grouping::Pod if pod.namespace.is_empty() => pod.name.clone(),
                        Grouping::Pod => format!("{}/{}", pod.namespace, pod.name),
                    };
                    sums.entry(clean(&key)).or_default().add(*energy);
                }
                // A NaN outside the pods is shown (as n/a), not dropped.
                if include_idle && (outside.total() > 0.0 || outside.total().is_nan()) {
                    sums.entry(OUTSIDE_PODS.to_string())
                        .or_default()
                        .add(outside);
                }
                let mut lines: Vec<Line> = sums
                    .into_iter()
                    .map(|(name, energy)| Line { name, energy })
                    .collect();
                // Largest first; lines whose figure is n/a last.
                lines.sort_by(|a, b| {
                    let (x, y) = (a.energy.total(), b.energy.total());
                    y.is_finite()
                        .cmp(&x.is_finite())
                        .then_with(|| y.total_cmp(&x))
                        .then_with(|| a.name.cmp(&b.name))
                });
                (grouping, Ok(lines))
            })
            .collect();
        Report {
            from,
            to,
            nodes: nodes.len(),
            node,
            node_idle,
            pods: billed,
            include_idle,
            estimated_nodes: estimated.into_iter().collect(),
            groups,
            warnings,
            no_namespaces: !pods.is_empty() && !has_namespaces,
        }
    }
}

/// `x` below 0 is 0; NaN stays NaN (`f64::max` would turn it into 0, a silent zero).
fn non_negative(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else {
        x.max(0.0)
    }
}

fn time_text(seconds: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn kwh(joules: f64) -> f64 {
    joules / JOULES_PER_KWH
}

/// `joules` of `total`; NaN when either is not a number (never a silent 0).
fn share(joules: f64, total: f64) -> f64 {
    if !joules.is_finite() || !total.is_finite() {
        f64::NAN
    } else if total > 0.0 {
        joules / total
    } else {
        0.0
    }
}

/// A figure for JSON: NaN and infinities become `null` (JSON has no such numbers), -0 becomes 0.
fn json_figure(value: f64) -> Option<f64> {
    // -0 + 0 is +0.
    value.is_finite().then_some(value + 0.0)
}

/// A line as the JSON output writes it (`null` for a figure that is NaN or infinite).
#[derive(Serialize)]
struct JsonLine<'a> {
    name: &'a str,
    cpu_kwh: Option<f64>,
    gpu_kwh: Option<f64>,
    kwh: Option<f64>,
    share_of_node_energy: Option<f64>,
    co2_kg: Option<f64>,
}

#[derive(Serialize)]
struct JsonGrouping<'a> {
    grouping: &'static str,
    lines: Vec<JsonLine<'a>>,
    note: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    from: String,
    to: String,
    source: &'a str,
    nodes: usize,
    estimated_nodes: &'a [String],
    idle_included: bool,
    carbon_g_per_kwh: Option<f64>,
    node: JsonLine<'a>,
    node_idle: JsonLine<'a>,
    pods: JsonLine<'a>,
    not_included: Vec<String>,
    warnings: &'a [String],
    groupings: Vec<JsonGrouping<'a>>,
}

impl Report {
    fn period(&self) -> String {
        let length = Duration::from_secs((self.to - self.from).round().max(0.0) as u64);
        format!(
            "{} to {} ({})",
            time_text(self.from),
            time_text(self.to),
            humantime::format_duration(length)
        )
    }

    fn co2_kg(joules: f64, carbon: Option<f64>) -> Option<f64> {
        carbon.map(|g| kwh(joules) * g / 1000.0)
    }

    fn share_of_nodes(&self, energy: Energy) -> f64 {
        share(energy.total(), self.node.total())
    }

    /// A line's CPU, GPU and total kWh and its share of the nodes' energy, as printed.
    fn line_figures(&self, energy: Energy) -> [String; 4] {
        [
            figure(kwh(energy.cpu_joules), 6),
            figure(kwh(energy.gpu_joules), 6),
            figure(kwh(energy.total()), 6),
            percent(self.share_of_nodes(energy)),
        ]
    }

    /// What the lines leave out, and which figures are modelled rather than measured.
    fn notes(&self) -> Vec<String> {
        let idle_cpu = figure(kwh(self.node_idle.cpu_joules), 6);
        let idle_gpu = figure(kwh(self.node_idle.gpu_joules), 6);
        let mut notes = vec![if self.include_idle {
            format!(
                "idle energy ({idle_cpu} kWh CPU, {idle_gpu} kWh GPU) is billed by each consumer's share of active energy on its node; {OUTSIDE_PODS} holds host daemons, ended pods and GPU work no pod could be tied to"
            )
        } else {
            format!(
                "not billed to anyone: idle energy ({idle_cpu} kWh CPU, {idle_gpu} kWh GPU; the node's standing cost, which --include-idle splits by share of active energy) and active energy outside pods (host daemons, ended pods, unattributed GPU work)"
            )
        }];
        if !self.estimated_nodes.is_empty() {
            notes.push(format!(
                "estimated, not measured (no RAPL: CPU energy modelled from utilisation): {}",
                self.estimated_nodes.join(", ")
            ));
        }
        notes
    }

    /// The series that were NaN or infinite, one line each; `report` prints them on stderr.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub(crate) fn render(&self, format: Format, source: &str, carbon: Option<f64>) -> String {
        match format {
            Format::Table => self.table(source, carbon),
            Format::Csv => self.csv(carbon),
            Format::Markdown => self.markdown(source, carbon),
            Format::Json => self.json(source, carbon),
        }
    }

    /// What a grouping's reader must know about its lines.
    fn grouping_note(&self, grouping: Grouping) -> Option<&'static str> {
        (grouping == Grouping::Namespace && self.no_namespaces).then_some(NO_NAMESPACES)
    }

    /// A grouping's lines, or why there are none.
    fn lines_or_why<'a>(
        lines: &'a Result<Vec<Line>, &'static str>,
    ) -> Result<&'a [Line], &'static str> {
        match lines {
            Ok(lines) if lines.is_empty() => Err(NO_POD_ENERGY),
            Ok(lines) => Ok(lines),
            Err(why) => Err(why),
        }
    }

    fn table(&self, source: &str, carbon: Option<f64>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "kepler-rs energy report, {}", self.period());
        let _ = writeln!(out, "source: {source}");
        let _ = writeln!(
            out,
            "nodes: {}, energy {} kWh (CPU {}, GPU {}); pods {} kWh ({})",
            self.nodes,
            figure(kwh(self.node.total()), 6),
            figure(kwh(self.node.cpu_joules), 6),
            figure(kwh(self.node.gpu_joules), 6),
            figure(kwh(self.pods.total()), 6),
            percent(self.share_of_nodes(self.pods))
        );
        for note in self.notes() {
            let _ = writeln!(out, "note: {note}");
        }
        if let Some(g) = carbon {
            let _ = writeln!(out, "carbon intensity: {g} g CO2/kWh");
        }
        for (grouping, lines) in &self.groups {
            let _ = writeln!(out, "\nBy {}:", grouping.title());
            let lines = match Self::lines_or_why(lines) {
                Ok(lines) => lines,
                Err(why) => {
                    let _ = writeln!(out, "  ({why})");
                    continue;
                }
            };
            if let Some(why) = self.grouping_note(*grouping) {
                let _ = writeln!(out, "  ({why})");
            }
            let width = lines
                .iter()
                .map(|l| l.name.chars().count())
                .max()
                .unwrap_or(0)
                .max(grouping.csv_name().len());
            let co2_head = if carbon.is_some() {
                "       CO2 kg"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {:>14}  {:>14}  {:>14}  {:>6}{co2_head}",
                grouping.csv_name().to_uppercase(),
                "CPU kWh",
                "GPU kWh",
                "kWh",
                "SHARE"
            );
            for line in lines {
                let pad = width.saturating_sub(line.name.chars().count());
                let [cpu, gpu, total, share] = self.line_figures(line.energy);
                let _ = write!(
                    out,
                    "  {}{}  {cpu:>14}  {gpu:>14}  {total:>14}  {share:>6}",
                    line.name,
                    " ".repeat(pad),
                );
                if let Some(kg) = Self::co2_kg(line.energy.total(), carbon) {
                    let _ = write!(out, "  {:>11}", figure(kg, 6));
                }
                out.push('\n');
            }
        }
        out
    }

    /// Columns up to `to` are those of earlier versions (scripts index them); the split follows.
    /// A figure that is NaN or infinite is `n/a`.
    fn csv(&self, carbon: Option<f64>) -> String {
        let mut out = String::from(
            "grouping,name,kwh,joules,share_of_node_energy,co2_kg,from,to,cpu_kwh,gpu_kwh,idle_included\n",
        );
        let (from, to) = (time_text(self.from), time_text(self.to));
        let mut row = |grouping: &str, name: &str, energy: Energy| {
            let joules = energy.total();
            let co2 = Self::co2_kg(joules, carbon)
                .map(|kg| figure(kg, 9))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{grouping},{},{},{},{},{co2},{from},{to},{},{},{}",
                csv_field(name),
                figure(kwh(joules), 9),
                figure(joules, 3),
                figure(self.share_of_nodes(energy), 6),
                figure(kwh(energy.cpu_joules), 9),
                figure(kwh(energy.gpu_joules), 9),
                self.include_idle
            );
        };
        row("nodes", "(all nodes)", self.node);
        row("nodes", "(idle)", self.node_idle);
        row("pods", "(all pods)", self.pods);
        for (grouping, lines) in &self.groups {
            for line in lines.as_deref().unwrap_or(&[]) {
                row(grouping.csv_name(), &line.name, line.energy);
            }
        }
        out
    }

    fn markdown(&self, source: &str, carbon: Option<f64>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Energy report, {}\n", self.period());
        let _ = writeln!(
            out,
            "Source: `{}`. {} node(s) used **{} kWh** (CPU {}, GPU {}); pods {} kWh ({}).",
            source.replace('`', "'"),
            self.nodes,
            figure(kwh(self.node.total()), 3),
            figure(kwh(self.node.cpu_joules), 3),
            figure(kwh(self.node.gpu_joules), 3),
            figure(kwh(self.pods.total()), 3),
            percent(self.share_of_nodes(self.pods))
        );
        for note in self.notes() {
            let _ = writeln!(out, "\n_Note: {}._", markdown_text(&note));
        }
        if let Some(g) = carbon {
            let _ = writeln!(out, "\nCarbon intensity: {g} g CO₂/kWh.");
        }
        for (grouping, lines) in &self.groups {
            let _ = writeln!(out, "\n### By {}\n", grouping.title());
            let lines = match Self::lines_or_why(lines) {
                Ok(lines) => lines,
                Err(why) => {
                    let _ = writeln!(out, "_{}._", markdown_text(&capitalised(why)));
                    continue;
                }
            };
            if let Some(why) = self.grouping_note(*grouping) {
                let _ = writeln!(out, "_{}._\n", markdown_text(&capitalised(why)));
            }
            let co2 = if carbon.is_some() {
                " CO₂ (kg) |"
            } else {
                ""
            };
            let co2_rule = if carbon.is_some() { "---:|" } else { "" };
            let _ = writeln!(
                out,
                "| {} | CPU kWh | GPU kWh | kWh | share |{co2}",
                grouping.title()
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|{co2_rule}");
            for line in lines {
                let [cpu, gpu, total, share] = self.line_figures(line.energy);
                let _ = write!(
                    out,
                    "| {} | {cpu} | {gpu} | {total} | {share} |",
                    markdown_text(&line.name),
                );
                if let Some(kg) = Self::co2_kg(line.energy.total(), carbon) {
                    let _ = write!(out, " {} |", figure(kg, 6));
                }
                out.push('\n');
            }
        }
        out
    }

    fn json(&self, source: &str, carbon: Option<f64>) -> String {
        let line = |name: &'static str, energy: Energy| JsonLine {
            name,
            cpu_kwh: json_figure(kwh(energy.cpu_joules)),
            gpu_kwh: json_figure(kwh(energy.gpu_joules)),
            kwh: json_figure(kwh(energy.total())),
            share_of_node_energy: json_figure(self.share_of_nodes(energy)),
            co2_kg: Self::co2_kg(energy.total(), carbon).and_then(json_figure),
        };
        let report = JsonReport {
            from: time_text(self.from),
            to: time_text(self.to),
            source,
            nodes: self.nodes,
            estimated_nodes: &self.estimated_nodes,
            idle_included: self.include_idle,
            carbon_g_per_kwh: carbon,
            node: line("(all nodes)", self.node),
            node_idle: line("(idle)", self.node_idle),
            pods: line("(all pods)", self.pods),
            not_included: self.notes(),
            warnings: &self.warnings,
            groupings: self
                .groups
                .iter()
                .map(|(grouping, lines)| JsonGrouping {
                    grouping: grouping.csv_name(),
                    note: Self::lines_or_why(lines)
                        .err()
                        .or(self.grouping_note(*grouping)),
                    lines: lines
                        .as_deref()
                        .unwrap_or(&[])
                        .iter()
                        .map(|l| JsonLine {
                            name: &l.name,
                            ..line("", l.energy)
                        })
                        .collect(),
                })
                .collect(),
        };
        // Plain strings and finite numbers only: serialising cannot fail.
        let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
        text.push('\n');
        text
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Text for a Markdown cell or line: no table breaks, no HTML, no emphasis or links.
fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A CSV cell (RFC 4180 quoting). A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage
/// return would be run as a formula by spreadsheets (OWASP's CSV injection): it gets a leading `'`
/// and is quoted.
fn csv_field(text: &str) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula {
        format!("\"'{}\"", text.replace('"', "\"\""))
    } else if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Entry point of `kepler-rs report`.
pub fn run(args: ReportArgs) -> Result<(), ReportError> {
    let config = args.resolve(unix_now(), crate::remote::options::password_env()?)?;
    let client = Client::new(&config.client)?;
    let report =
        query(&client, &config)?.finish(config.from, config.to, &config.by, config.include_idle);
    for warning in report.warnings() {
        eprintln!("warning: {warning}");
    }
    print!(
        "{}",
        report.render(
            config.format,
            &config.prometheus.join(""),
            config.carbon_g_per_kwh
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query's answer, for tests that build the samples by hand.
    #[derive(Debug, Default, Clone)]
    struct Inputs {
        nodes: Vec<PromSample>,
        node_idle: Vec<PromSample>,
        pods: Vec<PromSample>,
        pod_info: Vec<PromSample>,
        gpus: Vec<PromSample>,
        gpu_idle: Vec<PromSample>,
        pod_gpus: Vec<PromSample>,
        estimated: Vec<PromSample>,
    }

    /// The report of `inputs`, fed to the aggregator in the order `report` queries them.
    fn aggregate(
        inputs: &Inputs,
        from: f64,
        to: f64,
        by: &[Grouping],
        include_idle: bool,
    ) -> Report {
        aggregate_in(inputs, from, to, by, include_idle, false)
    }

    fn aggregate_in(
        inputs: &Inputs,
        from: f64,
        to: f64,
        by: &[Grouping],
        include_idle: bool,
        reversed: bool,
    ) -> Report {
        let mut parts = vec![
            (Query::Nodes, &inputs.nodes),
            (Query::NodeIdle, &inputs.node_idle),
            (Query::Pods, &inputs.pods),
            (Query::PodInfo, &inputs.pod_info),
            (Query::Gpus, &inputs.gpus),
            (Query::GpuIdle, &inputs.gpu_idle),
            (Query::PodGpus, &inputs.pod_gpus),
            (Query::Estimated, &inputs.estimated),
        ];
        let mut aggregator = Aggregator::default();
        if reversed {
            parts.reverse();
        }
        for (query, samples) in parts {
            let mut samples: Vec<&PromSample> = samples.iter().collect();
            if reversed {
                samples.reverse();
            }
            for s in samples {
                aggregator.add(query, s);
            }
        }
        aggregator.finish(from, to, by, include_idle)
    }

    #[test]
    fn the_order_of_answers_does_not_matter() {
        let by = [Grouping::User, Grouping::Namespace, Grouping::Pod];
        for idle in [false, true] {
            let forward = aggregate_in(&gpu_inputs(), 0.0, 1.0, &by, idle, false);
            let backward = aggregate_in(&gpu_inputs(), 0.0, 1.0, &by, idle, true);
            assert_eq!(forward.node, backward.node);
            assert_eq!(forward.nodes, backward.nodes);
            for ((_, a), (_, b)) in forward.groups.iter().zip(&backward.groups) {
                let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    assert_eq!(x.name, y.name);
                    assert!((x.energy.total() - y.energy.total()).abs() <= 1e-9 * x.energy.total());
                }
            }
        }
    }

    #[test]
    fn nan_and_infinity_show_as_n_a_with_a_warning_naming_the_series() {
        let mut inputs = hub_inputs();
        inputs.pods.push(sample(
            &[
                ("node_name", "a"),
                ("zone", "package"),
                ("pod_id", "u9"),
                ("pod_name", "jupyter-nan"),
                ("pod_namespace", "jhub"),
                ("hub_user", "nan\u{1b}[31m"),
            ],
            f64::NAN,
        ));
        inputs.gpus = vec![sample(
            &[("node_name", "g"), ("gpu_uuid", "GPU-9")],
            f64::INFINITY,
        )];
        let by = [Grouping::User, Grouping::Pod];
        let report = aggregate(&inputs, 0.0, 86_400.0, &by, true);
        let warnings = report.warnings().join("\n");
        assert!(
            warnings.contains("kepler_pod_cpu_joules_total{")
                && warnings.contains("pod_id=\"u9\"")
                && warnings.contains("is NaN"),
            "{warnings}"
        );
        assert!(
            warnings.contains("gpu_uuid=\"GPU-9\"") && warnings.contains("is inf"),
            "{warnings}"
        );
        assert!(!warnings.contains('\u{1b}'), "{warnings:?}");
        for format in [Format::Table, Format::Csv, Format::Markdown] {
            let text = report.render(format, "http://p", Some(400.0));
            let lower = text.to_lowercase();
            assert!(text.contains("n/a"), "{format:?}: {text}");
            assert!(
                !lower.contains("nan") || lower.contains("jupyter-nan") || lower.contains("nan?"),
                "{format:?}: {text}"
            );
            for bad in ["inf kwh", "nan%", "inf%", " inf ", "-0.000"] {
                assert!(!lower.contains(bad), "{format:?} has {bad:?}: {text}");
            }
        }
        let json: serde_json::Value =
            serde_json::from_str(&report.render(Format::Json, "", None)).unwrap();
        assert!(json["node"]["gpu_kwh"].is_null(), "{json}");
        assert!(
            json["warnings"][0].as_str().unwrap().contains("u9"),
            "{json}"
        );
        // The pod's own line is n/a; bob's, untouched by the NaN on node a's share, is not.
        let table = report.render(Format::Table, "", None);
        let nan_line = table.lines().find(|l| l.contains("jupyter-nan")).unwrap();
        assert!(nan_line.contains("n/a"), "{table}");
        // With more than the warnings shown, the rest are counted.
        let mut many = Inputs::default();
        for i in 0..25 {
            let id = format!("p{i}");
            many.pods.push(sample(
                &[("pod_id", id.as_str()), ("zone", "package")],
                f64::NAN,
            ));
        }
        let report = aggregate(&many, 0.0, 1.0, &[Grouping::Pod], false);
        assert_eq!(report.warnings().len(), MAX_WARNINGS + 1);
        assert!(report.warnings()[MAX_WARNINGS].starts_with("15 more series"));
    }

    #[test]
    fn figures_never_print_negative_zero() {
        assert_eq!(json_figure(-0.0).map(f64::to_bits), Some(0.0f64.to_bits()));
        let inputs = Inputs {
            nodes: vec![sample(&[("node_name", "a"), ("zone", "package")], -0.0)],
            pods: vec![sample(
                &[
                    ("node_name", "a"),
                    ("zone", "package"),
                    ("pod_id", "u"),
                    ("pod_namespace", "n"),
                ],
                -1e-9,
            )],
            ..Inputs::default()
        };
        let report = aggregate(&inputs, 0.0, 1.0, &[Grouping::Namespace], true);
        for format in [Format::Table, Format::Csv, Format::Markdown, Format::Json] {
            let text = report.render(format, "", None);
            assert!(!text.contains("-0."), "{format:?}: {text}");
        }
    }

    #[test]
    fn empty_groupings_say_why_in_every_format() {
        let report = aggregate(
            &Inputs {
                nodes: vec![sample(&[("node_name", "a"), ("zone", "package")], 5.0)],
                ..Inputs::default()
            },
            0.0,
            1.0,
            &[Grouping::Pod],
            false,
        );
        let md = report.render(Format::Markdown, "", None);
        assert!(md.contains("_No pod energy in this period._"), "{md}");
        assert!(!md.contains("|---"), "{md}");
        let table = report.render(Format::Table, "", None);
        assert!(table.contains("(no pod energy in this period)"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&report.render(Format::Json, "", None)).unwrap();
        assert_eq!(json["groupings"][0]["note"], NO_POD_ENERGY);
        // Pods without any namespace: the namespace grouping says so plainly.
        let inputs = Inputs {
            pods: vec![sample(
                &[("node_name", "a"), ("zone", "package"), ("pod_id", "u1")],
                5.0,
            )],
            ..Inputs::default()
        };
        let report = aggregate(
            &inputs,
            0.0,
            1.0,
            &[Grouping::Namespace, Grouping::Pod],
            false,
        );
        assert!(report.no_namespaces);
        assert_eq!(lines(&report, Grouping::Namespace)[0].0, "(no namespace)");
        let md = report.render(Format::Markdown, "", None);
        assert!(md.contains("_No namespace data in this period"), "{md}");
        assert!(md.contains("| (no namespace) |"), "{md}");
        let table = report.render(Format::Table, "", None);
        assert!(
            table.contains("no namespace data in this period"),
            "{table}"
        );
        assert!(lines(&report, Grouping::Pod)[0].0 == "u1");
    }

    #[test]
    fn csv_cells_that_spreadsheets_would_run_are_neutralised() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        for formula in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx", "=1"] {
            let cell = csv_field(formula);
            assert!(cell.starts_with("\"'"), "{formula:?} -> {cell:?}");
            assert!(cell.ends_with('"'), "{formula:?} -> {cell:?}");
        }
        assert_eq!(csv_field("(all nodes)"), "(all nodes)");
        assert_eq!(csv_field("a=b"), "a=b");
        let mut inputs = hub_inputs();
        for p in &mut inputs.pods {
            if p.label("hub_user") == "alice" {
                p.labels
                    .insert("hub_user".into(), "=HYPERLINK(\"http://evil\")".into());
            }
        }
        let csv =
            aggregate(&inputs, 0.0, 1.0, &[Grouping::User], false).render(Format::Csv, "", None);
        assert!(
            csv.contains("user,\"'=HYPERLINK(\"\"http://evil\"\")\",2.5"),
            "{csv}"
        );
        assert!(
            !csv.lines()
                .any(|l| l.split(',').any(|cell| cell.starts_with('='))),
            "{csv}"
        );
    }

    fn sample(labels: &[(&str, &str)], value: f64) -> PromSample {
        PromSample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timestamp: 0.0,
            value,
        }
    }

    /// Two nodes (one with psys), alice on both, bob named only by kepler_pod_info.
    fn hub_inputs() -> Inputs {
        let pod = |node, zone, id, name, ns, user, kwh: f64| {
            sample(
                &[
                    ("node_name", node),
                    ("zone", zone),
                    ("pod_id", id),
                    ("pod_name", name),
                    ("pod_namespace", ns),
                    ("hub_user", user),
                ],
                kwh * JOULES_PER_KWH,
            )
        };
        Inputs {
            nodes: vec![
                sample(
                    &[("node_name", "a"), ("zone", "package")],
                    8.0 * JOULES_PER_KWH,
                ),
                sample(
                    &[("node_name", "a"), ("zone", "core")],
                    6.0 * JOULES_PER_KWH,
                ),
                sample(
                    &[("node_name", "a"), ("zone", "dram")],
                    2.0 * JOULES_PER_KWH,
                ),
                sample(
                    &[("node_name", "b"), ("zone", "package")],
                    5.0 * JOULES_PER_KWH,
                ),
                sample(
                    &[("node_name", "b"), ("zone", "psys")],
                    10.0 * JOULES_PER_KWH,
                ),
            ],
            pods: vec![
                pod("a", "package", "u1", "jupyter-alice", "jhub", "alice", 1.0),
                pod("a", "dram", "u1", "jupyter-alice", "jhub", "alice", 0.5),
                pod("a", "core", "u1", "jupyter-alice", "jhub", "alice", 0.9),
                pod(
                    "b",
                    "package",
                    "u2",
                    "jupyter-alice--gpu",
                    "jhub",
                    "alice",
                    0.7,
                ),
                pod(
                    "b",
                    "psys",
                    "u2",
                    "jupyter-alice--gpu",
                    "jhub",
                    "alice",
                    1.0,
                ),
                pod("a", "package", "u3", "", "", "", 2.0),
                pod("b", "psys", "u4", "coredns", "kube-system", "", 0.25),
            ],
            pod_info: vec![sample(
                &[
                    ("pod_id", "u3"),
                    ("pod_name", "jupyter-bob"),
                    ("pod_namespace", "jhub"),
                    ("hub_user", "bob"),
                ],
                1.0,
            )],
            ..Inputs::default()
        }
    }

    /// `hub_inputs` plus a GPU node `g`: carol trained there (a MIG instance and a whole GPU),
    /// idle energy on both kinds of node, and a GPU with no pods on it.
    fn gpu_inputs() -> Inputs {
        let mut inputs = hub_inputs();
        let j = |kwh: f64| kwh * JOULES_PER_KWH;
        inputs.node_idle = vec![
            sample(&[("node_name", "a"), ("zone", "package")], j(3.0)),
            sample(&[("node_name", "a"), ("zone", "core")], j(2.5)),
            sample(&[("node_name", "a"), ("zone", "dram")], j(1.0)),
            sample(&[("node_name", "b"), ("zone", "psys")], j(4.0)),
            sample(&[("node_name", "g"), ("zone", "package")], j(0.5)),
        ];
        inputs
            .nodes
            .push(sample(&[("node_name", "g"), ("zone", "package")], j(1.0)));
        inputs.gpus = vec![
            sample(&[("node_name", "g"), ("gpu_uuid", "GPU-1")], j(10.0)),
            sample(&[("node_name", "g"), ("gpu_uuid", "GPU-2")], j(6.0)),
            // No pods on this one: all of it stays outside pods.
            sample(&[("node_name", "g"), ("gpu_uuid", "GPU-3")], j(1.0)),
        ];
        inputs.gpu_idle = vec![
            sample(&[("node_name", "g"), ("gpu_uuid", "GPU-1")], j(2.0)),
            sample(&[("node_name", "g"), ("gpu_uuid", "GPU-2")], j(2.0)),
            sample(&[("node_name", "g"), ("gpu_uuid", "GPU-3")], j(1.0)),
        ];
        let carol = |kwh: f64| {
            sample(
                &[
                    ("node_name", "g"),
                    ("pod_id", "u5"),
                    ("pod_name", "jupyter-carol"),
                    ("pod_namespace", "jhub"),
                    ("hub_user", "carol"),
                ],
                j(kwh),
            )
        };
        // The query sums a pod over its devices and MIG instances: one sample per pod and node.
        inputs.pod_gpus = vec![carol(11.0)];
        inputs.pods.push(sample(
            &[
                ("node_name", "g"),
                ("zone", "package"),
                ("pod_id", "u5"),
                ("pod_name", "jupyter-carol"),
                ("pod_namespace", "jhub"),
                ("hub_user", "carol"),
            ],
            j(0.25),
        ));
        inputs.estimated = vec![sample(&[("node_name", "b")], 1.0)];
        inputs
    }

    #[test]
    fn gpu_energy_counts_and_a_gpu_user_ranks_by_total() {
        let report = aggregate(&gpu_inputs(), 0.0, 86_400.0, &[Grouping::User], false);
        let users = lines(&report, Grouping::User);
        assert_eq!(users[0], ("carol".to_string(), 11.25), "{users:?}");
        let (_, Ok(lines)) = &report.groups[0] else {
            panic!()
        };
        assert!((kwh(lines[0].energy.gpu_joules) - 11.0).abs() < 1e-9);
        assert!((kwh(lines[0].energy.cpu_joules) - 0.25).abs() < 1e-9);
        // GPU energy of the node counts each device once (17 kWh), CPU by the zone rule (21).
        assert!((kwh(report.node.gpu_joules) - 17.0).abs() < 1e-9);
        assert!((kwh(report.node.cpu_joules) - 21.0).abs() < 1e-9);
        assert_eq!(report.estimated_nodes, ["b"]);
        let table = report.render(Format::Table, "http://p:9090", None);
        assert!(table.contains("estimated, not measured"), "{table}");
        assert!(
            table.contains("not billed to anyone: idle energy"),
            "{table}"
        );
        assert!(!table.contains(OUTSIDE_PODS), "{table}");
    }

    #[test]
    fn include_idle_bills_every_joule_of_every_node() {
        let by = [Grouping::User, Grouping::Namespace, Grouping::Pod];
        let report = aggregate(&gpu_inputs(), 0.0, 86_400.0, &by, true);
        for (grouping, lines) in &report.groups {
            let lines = lines.as_ref().unwrap();
            let mut sum = Energy::default();
            for l in lines {
                sum.add(l.energy);
            }
            for (got, want) in [
                (sum.cpu_joules, report.node.cpu_joules),
                (sum.gpu_joules, report.node.gpu_joules),
            ] {
                assert!(
                    (got - want).abs() <= 1e-9 * want,
                    "{grouping:?}: {got} != {want}"
                );
            }
        }
        // Node g: GPU idle 5 kWh over 12 kWh active, carol has 11 of them.
        let users = lines(&report, Grouping::User);
        let carol = users.iter().find(|(n, _)| n == "carol").unwrap().1;
        let want = 11.0 + 5.0 * 11.0 / 12.0 + 0.25 + 0.5 * 0.25 / 0.5;
        assert!((carol - want).abs() < 1e-6, "{carol} vs {want}");
        // Node a: CPU idle 4 kWh (package + dram) over 6 active; alice has 1.5 there.
        let alice = users.iter().find(|(n, _)| n == "alice").unwrap().1;
        let want_a = 1.5 + 4.0 * 1.5 / 6.0 + 1.0 + 4.0 * 1.0 / 6.0;
        assert!((alice - want_a).abs() < 1e-6, "{alice} vs {want_a}");
        assert!(users.iter().any(|(n, _)| n == OUTSIDE_PODS), "{users:?}");
        let text = report.render(Format::Table, "", None);
        assert!(
            text.contains("idle energy (") && text.contains("is billed"),
            "{text}"
        );
    }

    #[test]
    fn cpu_only_prometheus_and_gpus_without_pods_never_panic() {
        // An older exporter: no GPU series, no idle series.
        let report = aggregate(&hub_inputs(), 0.0, 1.0, &[Grouping::User], true);
        assert_eq!(report.node.gpu_joules, 0.0);
        // GPUs but no pods at all, NaN and negative values.
        let mut inputs = Inputs {
            gpus: vec![sample(&[("node_name", "g")], 5.0)],
            gpu_idle: vec![sample(&[("node_name", "g")], f64::NAN)],
            pod_gpus: vec![sample(&[("pod_id", "x")], -3.0)],
            ..Inputs::default()
        };
        let report = aggregate(&inputs, 0.0, 1.0, &[Grouping::User, Grouping::Pod], true);
        assert_eq!(report.nodes, 1);
        assert_eq!(report.groups[0].1, Err(NO_USERS));
        for format in [Format::Table, Format::Csv, Format::Markdown, Format::Json] {
            assert!(!report.render(format, "", Some(1.0)).is_empty());
        }
        inputs.gpus.clear();
        let report = aggregate(&inputs, 0.0, 1.0, &[Grouping::Pod], false);
        assert_eq!(report.node.total(), 0.0);
    }

    #[test]
    fn csv_json_and_markdown_parse() {
        let report = aggregate(
            &gpu_inputs(),
            0.0,
            86_400.0,
            &[Grouping::User, Grouping::Pod],
            true,
        );
        let csv = report.render(Format::Csv, "", Some(400.0));
        let mut rows = csv.lines();
        let header: Vec<&str> = rows.next().unwrap().split(',').collect();
        assert_eq!(&header[..3], ["grouping", "name", "kwh"]);
        for row in rows {
            let fields: Vec<&str> = row.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{row}");
            let total: f64 = fields[2].parse().unwrap();
            let cpu: f64 = fields[8].parse().unwrap();
            let gpu: f64 = fields[9].parse().unwrap();
            assert!((cpu + gpu - total).abs() < 1e-6, "{row}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&report.render(Format::Json, "http://p", Some(400.0))).unwrap();
        assert_eq!(json["idle_included"], true);
        assert_eq!(json["estimated_nodes"][0], "b");
        let users = &json["groupings"][0]["lines"];
        assert_eq!(users[0]["name"], "carol");
        assert!(users[0]["gpu_kwh"].as_f64().unwrap() > 11.0);
        let md = report.render(Format::Markdown, "http://p", None);
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert!(table.len() > 4);
        for row in table {
            assert_eq!(row.matches('|').count(), 6, "{row}");
        }
    }

    #[test]
    fn queries_name_catalog_families() {
        for (_, promql) in queries("3600s") {
            assert!(
                catalog::ALL.iter().any(|f| promql.contains(f.name)),
                "{promql}"
            );
            assert!(promql.contains("[3600s]"), "{promql}");
        }
    }

    fn lines(report: &Report, g: Grouping) -> Vec<(String, f64)> {
        let (_, lines) = report.groups.iter().find(|(x, _)| *x == g).unwrap();
        lines
            .as_ref()
            .unwrap()
            .iter()
            .map(|l| (l.name.clone(), (kwh(l.energy.total()) * 1e6).round() / 1e6))
            .collect()
    }

    #[test]
    fn per_user_energy_follows_the_node_total_rule() {
        let by = [Grouping::User, Grouping::Namespace, Grouping::Pod];
        let report = aggregate(&hub_inputs(), 0.0, 86_400.0, &by, false);
        assert_eq!(report.nodes, 2);
        // a: package + dram = 10; b: psys alone = 10.
        assert!((kwh(report.node.total()) - 20.0).abs() < 1e-9);
        assert!((kwh(report.pods.total()) - 4.75).abs() < 1e-9);
        assert_eq!(
            lines(&report, Grouping::User),
            [
                ("alice".to_string(), 2.5),
                ("bob".to_string(), 2.0),
                ("(not a hub user)".to_string(), 0.25)
            ]
        );
        assert_eq!(
            lines(&report, Grouping::Namespace),
            [("jhub".to_string(), 4.5), ("kube-system".to_string(), 0.25)]
        );
        assert_eq!(
            lines(&report, Grouping::Pod)[0],
            ("jhub/jupyter-bob".to_string(), 2.0)
        );
    }

    #[test]
    fn without_hub_users_the_user_grouping_says_so() {
        let mut inputs = hub_inputs();
        inputs.pod_info.clear();
        for p in &mut inputs.pods {
            p.labels.remove("hub_user");
        }
        let report = aggregate(
            &inputs,
            0.0,
            1.0,
            &[Grouping::User, Grouping::Namespace],
            false,
        );
        assert_eq!(report.groups[0].1, Err(NO_USERS));
        let text = report.render(Format::Table, "http://p:9090", None);
        assert!(text.contains("no JupyterHub user data"), "{text}");
        // Unnamed pods fall in "(no namespace)" and are listed by UID.
        let report = aggregate(
            &inputs,
            0.0,
            1.0,
            &[Grouping::Pod, Grouping::Namespace],
            false,
        );
        assert!(lines(&report, Grouping::Pod).contains(&("u3".to_string(), 2.0)));
        assert!(lines(&report, Grouping::Namespace).contains(&("(no namespace)".to_string(), 2.0)));
    }

    #[test]
    fn formats_with_carbon() {
        let report = aggregate(&hub_inputs(), 0.0, 7.0 * 86_400.0, &[Grouping::User], false);
        let table = report.render(Format::Table, "http://p:9090", Some(400.0));
        assert!(
            table.contains("1970-01-01T00:00:00Z to 1970-01-08T00:00:00Z (7days)"),
            "{table}"
        );
        assert!(table.contains("alice"), "{table}");
        // 2.5 kWh at 400 g/kWh = 1 kg.
        assert!(table.contains("1.000000"), "{table}");
        let csv = report.render(Format::Csv, "", Some(400.0));
        let alice = csv.lines().find(|l| l.starts_with("user,alice,")).unwrap();
        let fields: Vec<&str> = alice.split(',').collect();
        assert_eq!(fields[2], "2.500000000");
        assert_eq!(fields[5], "1.000000000");
        let md = report.render(Format::Markdown, "http://p:9090", None);
        assert!(
            md.contains("| alice | 2.500000 | 0.000000 | 2.500000 | 12.5% |"),
            "{md}"
        );
    }

    #[test]
    fn csv_quotes_odd_names() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn times_and_periods() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000.0));
        assert_eq!(parse_time("2024-05-01"), Ok(1_714_521_600.0));
        assert_eq!(parse_time("2024-05-01T00:00:10Z"), Ok(1_714_521_610.0));
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
        let args = |since: Option<&str>, from: Option<&str>, to: Option<&str>| ReportArgs {
            prometheus: "http://p:9090".into(),
            since: since.map(|s| humantime::parse_duration(s).unwrap()),
            from: from.map(String::from),
            to: to.map(String::from),
            by: vec![Grouping::User],
            carbon_intensity: None,
            format: Format::Table,
            include_idle: false,
            timeout: Duration::from_secs(1),
            remote: RemoteArgs::default(),
        };
        let c = args(None, None, None)
            .resolve(1000.0 * 86_400.0, None)
            .unwrap();
        assert_eq!(c.to - c.from, 7.0 * 86_400.0);
        let c = args(Some("1h"), None, Some("7200"))
            .resolve(0.0, None)
            .unwrap();
        assert_eq!((c.from, c.to), (3600.0, 7200.0));
        let err = args(None, Some("7200"), Some("7200"))
            .resolve(0.0, None)
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with("--from:"), "{err}");
    }
}
