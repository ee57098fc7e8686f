//! `kepler-rs report`: energy per JupyterHub user, namespace or pod over a period, from
//! Prometheus (`increase()` of the exporters' counters, so restarts are handled), in kWh and
//! optionally CO₂, as a table, CSV or Markdown. Queries here; aggregation is a pure function.

use crate::catalog::counts_toward_node_total as counts_zone;
use crate::remote::series::clean;
use crate::remote::{
    BaseUrl, Client, ClientError, ClientOptions, PromSample, RemoteArgs, SetupError,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const JOULES_PER_KWH: f64 = 3.6e6;

/// Flags of `kepler-rs report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The Prometheus server that scrapes the exporters
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// The period: this long until --to (default 7d unless --from is given)
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "from")]
    pub since: Option<Duration>,
    /// Start of the period: RFC 3339 (2024-05-01T00:00:00Z, 2024-05-01) or Unix seconds
    #[arg(long)]
    pub from: Option<String>,
    /// End of the period (default: now)
    #[arg(long)]
    pub to: Option<String>,
    /// Groupings to report, in order
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "user,namespace"
    )]
    pub by: Vec<Grouping>,
    /// Grams of CO₂ per kWh of the electricity, to add emissions
    #[arg(long, value_name = "G_PER_KWH")]
    pub carbon_intensity: Option<f64>,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Give up on a query after this long
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Grouping {
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
pub enum Format {
    Table,
    Csv,
    Markdown,
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
pub struct ReportConfig {
    pub prometheus: BaseUrl,
    pub from: f64,
    pub to: f64,
    pub by: Vec<Grouping>,
    pub carbon_g_per_kwh: Option<f64>,
    pub format: Format,
    /// Timeout, TLS roots and credentials of every query.
    pub client: ClientOptions,
}

/// RFC 3339 (a bare date means midnight UTC) or Unix seconds.
pub fn parse_time(text: &str) -> Result<f64, String> {
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
    pub fn resolve(
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
            client: self.remote.resolve(self.timeout, password_env)?,
        })
    }
}

/// What the Prometheus queries returned.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `sum by (node_name, zone) (increase(kepler_node_cpu_joules_total[...]))`
    pub nodes: Vec<PromSample>,
    /// `sum by (node_name, zone, pod_id, pod_name, pod_namespace, hub_user) (increase(kepler_pod_cpu_joules_total[...]))`
    pub pods: Vec<PromSample>,
    /// `max by (pod_id, pod_name, pod_namespace, hub_user) (max_over_time(kepler_pod_info[...]))`
    pub pod_info: Vec<PromSample>,
}

impl Inputs {
    pub fn query(client: &Client, config: &ReportConfig) -> Result<Inputs, ClientError> {
        let range = format!("{}s", (config.to - config.from).round().max(1.0) as u64);
        let at = Some(config.to);
        let base = &config.prometheus;
        Ok(Inputs {
            nodes: client.prometheus_query(
                base,
                &format!("sum by (node_name, zone) (increase(kepler_node_cpu_joules_total[{range}]))"),
                at,
            )?,
            pods: client.prometheus_query(
                base,
                &format!("sum by (node_name, zone, pod_id, pod_name, pod_namespace, hub_user) (increase(kepler_pod_cpu_joules_total[{range}]))"),
                at,
            )?,
            pod_info: client.prometheus_query(
                base,
                &format!("max by (pod_id, pod_name, pod_namespace, hub_user) (max_over_time(kepler_pod_info[{range}]))"),
                at,
            )?,
        })
    }
}

/// One line of a grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub joules: f64,
}

/// The aggregated report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub from: f64,
    pub to: f64,
    pub nodes: usize,
    /// All nodes' energy by the node-total rule (package + dram, or psys).
    pub node_joules: f64,
    pub pod_joules: f64,
    /// Per grouping: lines sorted by energy, largest first; or why there are none.
    pub groups: Vec<(Grouping, Result<Vec<Line>, &'static str>)>,
}

const NO_USERS: &str = "no JupyterHub user data in this period: no hub_user label on kepler_pod_cpu_joules_total or kepler_pod_info (it comes with Kubernetes metadata)";

/// Sum the queried energy into the requested groupings. Zones follow the node-total rule per node.
pub fn aggregate(inputs: &Inputs, from: f64, to: f64, by: &[Grouping]) -> Report {
    let mut psys: HashMap<&str, bool> = HashMap::new();
    for s in &inputs.nodes {
        *psys.entry(s.label("node_name")).or_default() |= s.label("zone") == "psys";
    }
    let node_joules = inputs
        .nodes
        .iter()
        .filter(|s| counts_zone(psys[s.label("node_name")], s.label("zone")))
        .map(|s| finite(s.value))
        .sum();
    let info: HashMap<&str, &PromSample> = inputs
        .pod_info
        .iter()
        .map(|s| (s.label("pod_id"), s))
        .collect();
    // Per pod: (name, namespace, user) -> joules.
    let mut pods: BTreeMap<&str, (String, String, String, f64)> = BTreeMap::new();
    for s in &inputs.pods {
        let has_psys = psys.get(s.label("node_name")).copied().unwrap_or(false);
        if !counts_zone(has_psys, s.label("zone")) {
            continue;
        }
        let id = s.label("pod_id");
        let known = info.get(id);
        let pick = |label: &str| -> String {
            let own = s.label(label);
            if own.is_empty() {
                known.map(|i| i.label(label)).unwrap_or("").to_string()
            } else {
                own.to_string()
            }
        };
        let entry = pods
            .entry(id)
            .or_insert_with(|| (String::new(), String::new(), String::new(), 0.0));
        for (slot, label) in [
            (&mut entry.0, "pod_name"),
            (&mut entry.1, "pod_namespace"),
            (&mut entry.2, "hub_user"),
        ] {
            if slot.is_empty() {
                *slot = pick(label);
            }
        }
        entry.3 += finite(s.value);
    }
    let pod_joules = pods.values().map(|p| p.3).sum();
    let has_users = pods.values().any(|p| !p.2.is_empty());
    let groups = by
        .iter()
        .map(|&grouping| {
            if grouping == Grouping::User && !has_users {
                return (grouping, Err(NO_USERS));
            }
            let mut sums: BTreeMap<String, f64> = BTreeMap::new();
            for (id, (name, namespace, user, joules)) in &pods {
                let key = match grouping {
                    Grouping::User => or(user, "(not a hub user)"),
                    Grouping::Namespace => or(namespace, "(no namespace)"),
                    Grouping::Pod => {
                        let name = if name.is_empty() { id } else { name.as_str() };
                        if namespace.is_empty() {
                            name.to_string()
                        } else {
                            format!("{namespace}/{name}")
                        }
                    }
                };
                *sums.entry(clean(&key)).or_default() += joules;
            }
            let mut lines: Vec<Line> = sums
                .into_iter()
                .map(|(name, joules)| Line { name, joules })
                .collect();
            lines.sort_by(|a, b| {
                b.joules
                    .total_cmp(&a.joules)
                    .then_with(|| a.name.cmp(&b.name))
            });
            (grouping, Ok(lines))
        })
        .collect();
    Report {
        from,
        to,
        nodes: psys.len(),
        node_joules,
        pod_joules,
        groups,
    }
}

fn or(value: &str, unnamed: &str) -> String {
    if value.is_empty() {
        unnamed.to_string()
    } else {
        value.to_string()
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

fn time_text(seconds: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn kwh(joules: f64) -> f64 {
    joules / JOULES_PER_KWH
}

fn share(joules: f64, total: f64) -> f64 {
    if total > 0.0 {
        joules / total
    } else {
        0.0
    }
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

    pub fn render(&self, format: Format, source: &str, carbon: Option<f64>) -> String {
        match format {
            Format::Table => self.table(source, carbon),
            Format::Csv => self.csv(carbon),
            Format::Markdown => self.markdown(source, carbon),
        }
    }

    fn table(&self, source: &str, carbon: Option<f64>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "kepler-rs energy report, {}", self.period());
        let _ = writeln!(out, "source: {source}");
        let _ = writeln!(
            out,
            "nodes: {}, energy {:.6} kWh; pods {:.6} kWh ({:.1}%), the rest is idle and system",
            self.nodes,
            kwh(self.node_joules),
            kwh(self.pod_joules),
            share(self.pod_joules, self.node_joules) * 100.0
        );
        if let Some(g) = carbon {
            let _ = writeln!(out, "carbon intensity: {g} g CO2/kWh");
        }
        for (grouping, lines) in &self.groups {
            let _ = writeln!(out, "\nBy {}:", grouping.title());
            let lines = match lines {
                Ok(lines) if lines.is_empty() => {
                    let _ = writeln!(out, "  (no pod energy in this period)");
                    continue;
                }
                Ok(lines) => lines,
                Err(why) => {
                    let _ = writeln!(out, "  {why}");
                    continue;
                }
            };
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
                "  {:<width$}  {:>14}  {:>6}{co2_head}",
                grouping.csv_name().to_uppercase(),
                "kWh",
                "SHARE"
            );
            for line in lines {
                let pad = width.saturating_sub(line.name.chars().count());
                let _ = write!(
                    out,
                    "  {}{}  {:>14.6}  {:>5.1}%",
                    line.name,
                    " ".repeat(pad),
                    kwh(line.joules),
                    share(line.joules, self.node_joules) * 100.0
                );
                if let Some(kg) = Self::co2_kg(line.joules, carbon) {
                    let _ = write!(out, "  {kg:>11.6}");
                }
                out.push('\n');
            }
        }
        out
    }

    fn csv(&self, carbon: Option<f64>) -> String {
        let mut out =
            String::from("grouping,name,kwh,joules,share_of_node_energy,co2_kg,from,to\n");
        let (from, to) = (time_text(self.from), time_text(self.to));
        let mut row = |grouping: &str, name: &str, joules: f64| {
            let co2 = Self::co2_kg(joules, carbon)
                .map(|kg| format!("{kg:.9}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{grouping},{},{:.9},{joules:.3},{:.6},{co2},{from},{to}",
                csv_field(name),
                kwh(joules),
                share(joules, self.node_joules)
            );
        };
        row("nodes", "(all nodes)", self.node_joules);
        row("pods", "(all pods)", self.pod_joules);
        for (grouping, lines) in &self.groups {
            for line in lines.as_deref().unwrap_or(&[]) {
                row(grouping.csv_name(), &line.name, line.joules);
            }
        }
        out
    }

    fn markdown(&self, source: &str, carbon: Option<f64>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Energy report, {}\n", self.period());
        let _ = writeln!(
            out,
            "Source: `{}`. {} node(s) used **{:.3} kWh**; pods {:.3} kWh ({:.1}%).",
            source.replace('`', "'"),
            self.nodes,
            kwh(self.node_joules),
            kwh(self.pod_joules),
            share(self.pod_joules, self.node_joules) * 100.0
        );
        if let Some(g) = carbon {
            let _ = writeln!(out, "Carbon intensity: {g} g CO₂/kWh.");
        }
        for (grouping, lines) in &self.groups {
            let _ = writeln!(out, "\n### By {}\n", grouping.title());
            match lines {
                Err(why) => {
                    let _ = writeln!(out, "{why}");
                }
                Ok(lines) => {
                    let co2 = if carbon.is_some() {
                        " CO₂ (kg) |"
                    } else {
                        ""
                    };
                    let co2_rule = if carbon.is_some() { "---:|" } else { "" };
                    let _ = writeln!(out, "| {} | kWh | share |{co2}", grouping.title());
                    let _ = writeln!(out, "|---|---:|---:|{co2_rule}");
                    for line in lines {
                        let _ = write!(
                            out,
                            "| {} | {:.6} | {:.1}% |",
                            line.name.replace('|', "\\|"),
                            kwh(line.joules),
                            share(line.joules, self.node_joules) * 100.0
                        );
                        if let Some(kg) = Self::co2_kg(line.joules, carbon) {
                            let _ = write!(out, " {kg:.6} |");
                        }
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Entry point of `kepler-rs report`.
pub fn run(args: ReportArgs) -> Result<(), ReportError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let config = args.resolve(now, crate::remote::options::password_env()?)?;
    let client = Client::new(&config.client)?;
    let inputs = Inputs::query(&client, &config)?;
    let report = aggregate(&inputs, config.from, config.to, &config.by);
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
        }
    }

    fn lines(report: &Report, g: Grouping) -> Vec<(String, f64)> {
        let (_, lines) = report.groups.iter().find(|(x, _)| *x == g).unwrap();
        lines
            .as_ref()
            .unwrap()
            .iter()
            .map(|l| (l.name.clone(), (kwh(l.joules) * 1e6).round() / 1e6))
            .collect()
    }

    #[test]
    fn per_user_energy_follows_the_node_total_rule() {
        let by = [Grouping::User, Grouping::Namespace, Grouping::Pod];
        let report = aggregate(&hub_inputs(), 0.0, 86_400.0, &by);
        assert_eq!(report.nodes, 2);
        // a: package + dram = 10; b: psys alone = 10.
        assert!((kwh(report.node_joules) - 20.0).abs() < 1e-9);
        assert!((kwh(report.pod_joules) - 4.75).abs() < 1e-9);
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
        let report = aggregate(&inputs, 0.0, 1.0, &[Grouping::User, Grouping::Namespace]);
        assert_eq!(report.groups[0].1, Err(NO_USERS));
        let text = report.render(Format::Table, "http://p:9090", None);
        assert!(text.contains("no JupyterHub user data"), "{text}");
        // Unnamed pods fall in "(no namespace)" and are listed by UID.
        let report = aggregate(&inputs, 0.0, 1.0, &[Grouping::Pod, Grouping::Namespace]);
        assert!(lines(&report, Grouping::Pod).contains(&("u3".to_string(), 2.0)));
        assert!(lines(&report, Grouping::Namespace).contains(&("(no namespace)".to_string(), 2.0)));
    }

    #[test]
    fn formats_with_carbon() {
        let report = aggregate(&hub_inputs(), 0.0, 7.0 * 86_400.0, &[Grouping::User]);
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
        assert!(md.contains("| alice | 2.500000 | 12.5% |"), "{md}");
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
