//! The table a view shows: rows built from a `Reading` (per pod, namespace, JupyterHub user,
//! container or process, with CPU and GPU power apart; the GPU view's rows come from `gpu_rows`),
//! sorted by any column and filtered by a substring, rows listed under a parent kept under it.
//! Pure; shared by the live screen, `--once` text and JSON.

use super::model::{Consumer, Family, Reading};
use crate::remote::series::{figure, or_if_empty, percent};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the table lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    Pods,
    Namespaces,
    Users,
    Containers,
    Processes,
    Gpus,
}

impl View {
    pub(crate) const ALL: [View; 6] = [
        View::Pods,
        View::Namespaces,
        View::Users,
        View::Containers,
        View::Processes,
        View::Gpus,
    ];

    pub(crate) fn title(self) -> &'static str {
        match self {
            View::Pods => "Pods",
            View::Namespaces => "Namespaces",
            View::Users => "Users",
            View::Containers => "Containers",
            View::Processes => "Processes",
            View::Gpus => "GPUs",
        }
    }

    /// Header of the name and detail columns.
    pub(crate) fn headers(self) -> (&'static str, &'static str) {
        match self {
            View::Pods => ("POD", "NAMESPACE"),
            View::Namespaces => ("NAMESPACE", "PODS"),
            View::Users => ("HUB USER", "PODS"),
            View::Containers => ("CONTAINER", "POD"),
            View::Processes => ("COMM", "PID"),
            View::Gpus => ("GPU / POD", "DETAIL"),
        }
    }

    pub(crate) fn next(self) -> View {
        step(&View::ALL, self, 1)
    }

    pub(crate) fn previous(self) -> View {
        step(&View::ALL, self, View::ALL.len() - 1)
    }
}

/// The item `by` places after `current` in `all`, going round.
fn step<T: Copy + PartialEq>(all: &[T], current: T, by: usize) -> T {
    let i = all.iter().position(|x| *x == current).unwrap_or(0);
    all[(i + by) % all.len()]
}

/// A sortable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Column {
    /// The first column: POD, NAMESPACE, HUB USER, CONTAINER, COMM or GPU / POD
    Name,
    /// The second column: NAMESPACE, PODS, POD, PID or DETAIL
    Detail,
    /// NODE
    Node,
    /// WATTS: CPU and GPU power together
    Watts,
    /// CPU W (shown where the source has GPUs)
    CpuWatts,
    /// GPU W (shown where the source has GPUs)
    GpuWatts,
    /// ENERGY: joules since the exporter started
    #[value(name = "energy", alias = "joules")]
    Joules,
    /// SHARE: of the node's power (in the GPUs view, of the device's)
    Share,
}

impl Column {
    /// In screen order; keys 1 to 8 sort by them.
    pub(crate) const ALL: [Column; 8] = [
        Column::Name,
        Column::Detail,
        Column::Node,
        Column::Watts,
        Column::CpuWatts,
        Column::GpuWatts,
        Column::Joules,
        Column::Share,
    ];

    pub(crate) fn next(self) -> Column {
        step(&Column::ALL, self, 1)
    }

    /// Numbers sort largest first by default, text A to Z.
    pub(crate) fn descending_by_default(self) -> bool {
        !matches!(self, Column::Name | Column::Detail | Column::Node)
    }

    /// The column's heading in `view`.
    pub(crate) fn header(self, view: View) -> &'static str {
        match self {
            Column::Name => view.headers().0,
            Column::Detail => view.headers().1,
            Column::Node => "NODE",
            Column::Watts => "WATTS",
            Column::CpuWatts => "CPU W",
            Column::GpuWatts => "GPU W",
            Column::Joules => "ENERGY",
            Column::Share => "SHARE",
        }
    }
}

/// The columns a view shows: CPU and GPU watts apart where the source has GPU series (the GPU view's
/// rows are all GPU, so it has no split).
pub(crate) fn columns(reading: Option<&Reading>, view: View) -> Vec<Column> {
    let split = view != View::Gpus && reading.is_some_and(|r| r.has_gpu_series);
    Column::ALL
        .into_iter()
        .filter(|c| split || !matches!(c, Column::CpuWatts | Column::GpuWatts))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub(crate) column: Column,
    pub(crate) descending: bool,
}

impl Default for Sort {
    fn default() -> Sort {
        Sort {
            column: Column::Watts,
            descending: true,
        }
    }
}

/// What a row of the GPU view is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GpuRowKind {
    Device,
    /// A MIG instance: the pods on it, summed (NVML measures power per device only).
    MigInstance,
    Pod,
    /// The device's idle power.
    Idle,
    /// Active power no pod received.
    Unattributed,
}

/// Where a row of the GPU view sits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct GpuPlace {
    pub(crate) kind: GpuRowKind,
    pub(crate) gpu_uuid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) gpu_instance: String,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Row {
    /// Stable identity across refreshes (selection, sparkline history).
    #[serde(skip)]
    pub(crate) key: String,
    /// The key of the row this one is listed under (GPU view: a device's pods); sorting and
    /// filtering keep it under its parent.
    #[serde(skip)]
    pub(crate) parent: Option<String>,
    /// How deep under its parents (0 for a top-level row).
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) depth: u8,
    pub(crate) name: String,
    pub(crate) detail: String,
    pub(crate) node: String,
    /// CPU and GPU power together.
    pub(crate) watts: f64,
    pub(crate) cpu_watts: f64,
    pub(crate) gpu_watts: f64,
    /// CPU and GPU energy together.
    pub(crate) joules: f64,
    pub(crate) cpu_joules: f64,
    pub(crate) gpu_joules: f64,
    /// Of the node's total power (of the cluster's, for rows that span nodes), 0..1; in the GPU
    /// view, a device's of its node's power and anything under a device of the device's power.
    pub(crate) share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gpu: Option<GpuPlace>,
}

fn is_zero(depth: &u8) -> bool {
    *depth == 0
}

impl Row {
    /// The text of one cell (names indented by depth), unpadded.
    pub(crate) fn cell(&self, column: Column) -> String {
        match column {
            Column::Name => format!("{}{}", "  ".repeat(usize::from(self.depth)), self.name),
            Column::Detail => self.detail.clone(),
            Column::Node => self.node.clone(),
            Column::Watts => figure(self.watts, 2),
            Column::CpuWatts => figure(self.cpu_watts, 1),
            Column::GpuWatts => figure(self.gpu_watts, 1),
            Column::Joules => joules_text(self.joules),
            Column::Share => percent(self.share),
        }
    }

    fn value(&self, column: Column) -> f64 {
        match column {
            Column::Watts => self.watts,
            Column::CpuWatts => self.cpu_watts,
            Column::GpuWatts => self.gpu_watts,
            Column::Joules => self.joules,
            Column::Share => self.share,
            Column::Name | Column::Detail | Column::Node => 0.0,
        }
    }
}

/// Joules in the largest unit that keeps the number short; "n/a" when not a number.
pub(crate) fn joules_text(joules: f64) -> String {
    if !joules.is_finite() {
        return "n/a".to_string();
    }
    let units = [(1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ")];
    for (scale, unit) in units {
        if joules.abs() >= scale {
            return format!("{} {unit}", figure(joules / scale, 2));
        }
    }
    format!("{} J", figure(joules, 1))
}

/// Why a view has no rows, said on screen instead of an empty table.
pub(crate) fn empty_reason(reading: &Reading, view: View) -> Option<&'static str> {
    match view {
        View::Users if !reading.has_hub_users() => Some(
            "no JupyterHub user data: no pod series carries a hub_user label \
             (it comes with Kubernetes metadata)",
        ),
        View::Processes if reading.processes.is_empty() => {
            Some("no process series: process metrics are off (kepler-rs run --process-metrics)")
        }
        View::Gpus if reading.gpus.is_empty() => Some(
            "no GPU series from this source: no NVIDIA GPU or driver on the node(s), \
             or the exporter runs with --gpu off or predates GPU support",
        ),
        View::Pods | View::Namespaces if reading.pods.is_empty() => {
            Some("no pod series (no pods on this node?)")
        }
        View::Containers if reading.containers.is_empty() => Some("no container series"),
        _ => None,
    }
}

/// All rows of a view, unsorted and unfiltered.
pub(crate) fn rows(reading: &Reading, view: View) -> Vec<Row> {
    match view {
        View::Pods => consumer_rows(reading, Family::Pod, |c| c.namespace.clone()),
        View::Containers => consumer_rows(reading, Family::Container, |c| c.pod.clone()),
        View::Processes => consumer_rows(reading, Family::Process, |c| c.id.clone()),
        View::Namespaces => grouped(reading, |c| c.namespace.as_str(), "(no namespace)"),
        View::Users => {
            if reading.has_hub_users() {
                grouped(reading, |c| c.hub_user.as_str(), "(not a hub user)")
            } else {
                Vec::new()
            }
        }
        View::Gpus => super::gpu_rows::rows(reading),
    }
}

pub(super) fn share(watts: f64, total: f64) -> f64 {
    if total > 0.0 {
        watts / total
    } else {
        0.0
    }
}

/// The power and energy columns of a row: CPU and GPU apart and together.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Figures {
    pub(crate) cpu_watts: f64,
    pub(crate) gpu_watts: f64,
    pub(crate) cpu_joules: f64,
    pub(crate) gpu_joules: f64,
}

impl Figures {
    fn of(c: &Consumer) -> Figures {
        Figures {
            cpu_watts: c.cpu_watts,
            gpu_watts: c.gpu_watts,
            cpu_joules: c.cpu_joules,
            gpu_joules: c.gpu_joules,
        }
    }

    /// GPU power and energy only (GPU view).
    pub(crate) fn gpu(watts: f64, joules: f64) -> Figures {
        Figures {
            gpu_watts: watts,
            gpu_joules: joules,
            ..Figures::default()
        }
    }

    fn add(&mut self, other: Figures) {
        self.cpu_watts += other.cpu_watts;
        self.gpu_watts += other.gpu_watts;
        self.cpu_joules += other.cpu_joules;
        self.gpu_joules += other.gpu_joules;
    }

    pub(crate) fn watts(&self) -> f64 {
        self.cpu_watts + self.gpu_watts
    }

    /// A top-level row with these figures; `share` is of `total_watts`.
    pub(crate) fn row(
        self,
        key: String,
        name: String,
        detail: String,
        node: String,
        total: f64,
    ) -> Row {
        Row {
            key,
            parent: None,
            depth: 0,
            name,
            detail,
            node,
            watts: self.watts(),
            cpu_watts: self.cpu_watts,
            gpu_watts: self.gpu_watts,
            joules: self.cpu_joules + self.gpu_joules,
            cpu_joules: self.cpu_joules,
            gpu_joules: self.gpu_joules,
            share: share(self.watts(), total),
            gpu: None,
        }
    }
}

fn consumer_rows(
    reading: &Reading,
    family: Family,
    detail: impl Fn(&Consumer) -> String,
) -> Vec<Row> {
    reading
        .consumers(family)
        .iter()
        .map(|c| {
            Figures::of(c).row(
                format!("{}/{}", c.node, c.id),
                c.name.clone(),
                detail(c),
                c.node.clone(),
                reading.node_total_watts(&c.node),
            )
        })
        .collect()
}

/// Pods grouped by `group` (namespace, hub user), over all nodes.
fn grouped(reading: &Reading, group: impl Fn(&Consumer) -> &str, unnamed: &str) -> Vec<Row> {
    let mut groups: BTreeMap<&str, (Figures, usize, Vec<&str>)> = BTreeMap::new();
    for pod in &reading.pods {
        let g = groups.entry(group(pod)).or_default();
        g.0.add(Figures::of(pod));
        g.1 += 1;
        if !g.2.contains(&pod.node.as_str()) {
            g.2.push(&pod.node);
        }
    }
    let total = reading.total_watts();
    groups
        .into_iter()
        .map(|(name, (figures, pods, nodes))| {
            figures.row(
                name.to_string(),
                or_if_empty(name, unnamed).to_string(),
                pods.to_string(),
                match nodes.as_slice() {
                    [one] => one.to_string(),
                    many => format!("{} nodes", many.len()),
                },
                total,
            )
        })
        .collect()
}

fn matches(row: &Row, needle: &str) -> bool {
    [&row.name, &row.detail, &row.node]
        .iter()
        .any(|field| field.to_lowercase().contains(needle))
}

/// Keep the rows whose name, detail or node contains `filter` (case-insensitive). A row listed
/// under another stays when its parent matches, and a parent stays when one of its rows matches.
pub(crate) fn filter(rows: &mut Vec<Row>, filter: &str) {
    if filter.is_empty() {
        return;
    }
    let needle = filter.to_lowercase();
    let by_key: HashMap<&str, &Row> = rows.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut keep: HashSet<String> = HashSet::new();
    for row in rows.iter() {
        // The row and its chain of parents (bounded: keys are unique, but a bad chain must not loop).
        let mut chain = vec![row];
        while let Some(parent) = chain
            .last()
            .and_then(|r| r.parent.as_deref())
            .and_then(|key| by_key.get(key))
        {
            if chain.len() > by_key.len() {
                break;
            }
            chain.push(parent);
        }
        if matches(row, &needle) {
            keep.extend(chain.iter().map(|r| r.key.clone()));
        } else if chain.iter().any(|r| matches(r, &needle)) {
            keep.insert(row.key.clone());
        }
    }
    rows.retain(|r| keep.contains(&r.key));
}

/// Sort in place; ties are broken by name so the order is stable between refreshes. Rows listed
/// under another stay right after it, sorted among themselves.
pub(crate) fn sort(rows: &mut Vec<Row>, sort: Sort) {
    let compare = |a: &Row, b: &Row| {
        let primary = match sort.column {
            Column::Name => a.name.cmp(&b.name),
            Column::Detail => natural(&a.detail, &b.detail),
            Column::Node => a.node.cmp(&b.node),
            numeric => a.value(numeric).total_cmp(&b.value(numeric)),
        };
        let primary = if sort.descending {
            primary.reverse()
        } else {
            primary
        };
        primary.then_with(|| a.name.cmp(&b.name))
    };
    if rows.iter().all(|r| r.parent.is_none()) {
        rows.sort_by(compare);
        return;
    }
    // A tree: sort each row's children, then list every row followed by its children.
    let keys: HashSet<String> = rows.iter().map(|r| r.key.clone()).collect();
    let mut children: HashMap<Option<String>, Vec<Row>> = HashMap::new();
    for row in rows.drain(..) {
        // A row whose parent is not in the table (filtered out, or never there) is top-level.
        let parent = row.parent.clone().filter(|p| keys.contains(p));
        children.entry(parent).or_default().push(row);
    }
    for list in children.values_mut() {
        list.sort_by(compare);
    }
    fn list_under(
        parent: Option<String>,
        children: &mut HashMap<Option<String>, Vec<Row>>,
        out: &mut Vec<Row>,
    ) {
        for row in children.remove(&parent).unwrap_or_default() {
            let key = row.key.clone();
            out.push(row);
            list_under(Some(key), children, out);
        }
    }
    list_under(None, &mut children, rows);
    // Rows only reachable through a loop of parents (never built so, but never lost either).
    let mut rest: Vec<Row> = children.into_values().flatten().collect();
    rest.sort_by(compare);
    rows.extend(rest);
}

/// Numbers (pod counts, PIDs) compare as numbers, text as text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Rows of a view, filtered and sorted: what every output shows.
pub(crate) fn table(reading: &Reading, view: View, sort_by: Sort, filter_by: &str) -> Vec<Row> {
    let mut out = rows(reading, view);
    filter(&mut out, filter_by);
    sort(&mut out, sort_by);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{reading, GPU_NODE, HUB_USERS, TWO_PODS};

    fn names(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn sorts_by_every_column_both_ways() {
        let r = reading(HUB_USERS);
        let by_watts = table(&r, View::Pods, Sort::default(), "");
        assert_eq!(
            names(&by_watts),
            ["jupyter-alice", "jupyter-bob", "coredns-1"]
        );
        let ascending = table(
            &r,
            View::Pods,
            Sort {
                column: Column::Watts,
                descending: false,
            },
            "",
        );
        assert_eq!(
            names(&ascending),
            ["coredns-1", "jupyter-bob", "jupyter-alice"]
        );
        let by_name = table(
            &r,
            View::Pods,
            Sort {
                column: Column::Name,
                descending: false,
            },
            "",
        );
        assert_eq!(
            names(&by_name),
            ["coredns-1", "jupyter-alice", "jupyter-bob"]
        );
        let by_joules = table(
            &r,
            View::Pods,
            Sort {
                column: Column::Joules,
                descending: true,
            },
            "",
        );
        assert_eq!(
            names(&by_joules),
            ["jupyter-bob", "jupyter-alice", "coredns-1"]
        );
        for column in Column::ALL {
            for descending in [false, true] {
                let rows = table(&r, View::Pods, Sort { column, descending }, "");
                assert_eq!(rows.len(), 3, "{column:?}");
            }
        }
    }

    #[test]
    fn filter_matches_name_detail_or_node_case_insensitively() {
        let r = reading(HUB_USERS);
        assert_eq!(
            names(&table(&r, View::Pods, Sort::default(), "JUPYTER")),
            ["jupyter-alice", "jupyter-bob"]
        );
        assert_eq!(
            names(&table(&r, View::Pods, Sort::default(), "kube-sys")),
            ["coredns-1"]
        );
        assert!(table(&r, View::Pods, Sort::default(), "nothing-like-it").is_empty());
    }

    #[test]
    fn filter_keeps_a_matching_row_with_its_parents_and_the_rows_under_a_matching_parent() {
        // Named after the last part of the key, so only a parent's key names the parent.
        let row = |key: &str, parent: Option<&str>| {
            let name = key.rsplit('/').next().unwrap().to_string();
            Row {
                parent: parent.map(str::to_string),
                ..Figures::default().row(key.into(), name, String::new(), "node".into(), 0.0)
            }
        };
        let rows = vec![
            row("gpu0", None),
            row("gpu0/mig1", Some("gpu0")),
            row("gpu0/mig1/alice", Some("gpu0/mig1")),
            row("gpu0/bob", Some("gpu0")),
            row("gpu1", None),
            row("gpu1/carol", Some("gpu1")),
            // A loop of parents must not hang the filter.
            row("loop-a", Some("loop-b")),
            row("loop-b", Some("loop-a")),
        ];
        let kept = |text: &str| {
            let mut out = rows.clone();
            filter(&mut out, text);
            out.into_iter().map(|r| r.name).collect::<Vec<String>>()
        };
        assert_eq!(kept("alice"), ["gpu0", "mig1", "alice"]);
        assert_eq!(kept("MIG1"), ["gpu0", "mig1", "alice"]);
        assert_eq!(kept("gpu1"), ["gpu1", "carol"]);
        assert_eq!(kept("bob"), ["gpu0", "bob"]);
        assert_eq!(kept("loop-a"), ["loop-a", "loop-b"]);
        assert_eq!(kept("nobody"), Vec::<String>::new());
    }

    #[test]
    fn namespaces_and_users_group_pods_and_share_the_node() {
        let r = reading(HUB_USERS);
        let ns = table(&r, View::Namespaces, Sort::default(), "");
        assert_eq!(names(&ns), ["jhub", "kube-system"]);
        assert_eq!(ns[0].watts, 15.0);
        assert_eq!(ns[0].detail, "2");
        assert!((ns[0].share - 15.0 / 50.0).abs() < 1e-12);
        let users = table(&r, View::Users, Sort::default(), "");
        assert_eq!(names(&users), ["alice", "bob", "(not a hub user)"]);
        assert_eq!(users[0].watts, 10.0);
        assert_eq!(users[1].joules, 3000.0);
        assert_eq!(empty_reason(&r, View::Users), None);
    }

    #[test]
    fn views_without_data_say_why() {
        let r = reading(TWO_PODS);
        assert!(rows(&r, View::Users).is_empty());
        assert!(empty_reason(&r, View::Users)
            .unwrap()
            .contains("no JupyterHub user data"));
        assert!(empty_reason(&r, View::Processes)
            .unwrap()
            .contains("--process-metrics"));
        assert!(empty_reason(&r, View::Gpus)
            .unwrap()
            .contains("no GPU series from this source"));
        assert!(rows(&r, View::Gpus).is_empty());
        assert!(!columns(Some(&r), View::Pods).contains(&Column::GpuWatts));
        assert_eq!(empty_reason(&r, View::Pods), None);
        // Pods without Kubernetes metadata are shown by their UID, in "(no namespace)"; with no
        // pods at all the namespaces view says why it is empty.
        let ns = table(&r, View::Namespaces, Sort::default(), "");
        assert_eq!(names(&ns), ["(no namespace)"]);
        assert_eq!(empty_reason(&r, View::Namespaces), None);
        let no_pods = Reading::default();
        assert!(empty_reason(&no_pods, View::Namespaces)
            .unwrap()
            .contains("no pod series"));
        for pod in table(&r, View::Pods, Sort::default(), "") {
            assert_eq!(pod.name.len(), 36, "UID expected: {}", pod.name);
        }
    }

    #[test]
    fn views_cycle_both_ways() {
        for v in View::ALL {
            assert_eq!(v.next().previous(), v);
        }
        assert_eq!(View::Gpus.next(), View::Pods);
    }

    fn by(column: Column) -> Sort {
        Sort {
            column,
            descending: column.descending_by_default(),
        }
    }

    /// (indented name, watts, share in %) of each row.
    fn lines(rows: &[Row]) -> Vec<(String, f64, f64)> {
        rows.iter()
            .map(|r| {
                (
                    format!("{}{}", "  ".repeat(usize::from(r.depth)), r.name),
                    r.watts,
                    (r.share * 1000.0).round() / 10.0,
                )
            })
            .collect()
    }

    #[test]
    fn pods_users_and_namespaces_have_cpu_and_gpu_columns() {
        let r = reading(GPU_NODE);
        assert_eq!(
            columns(Some(&r), View::Pods),
            Column::ALL.to_vec(),
            "CPU W and GPU W next to each other"
        );
        assert!(!columns(Some(&r), View::Gpus).contains(&Column::CpuWatts));
        let pods = table(&r, View::Pods, Sort::default(), "");
        assert_eq!(
            names(&pods),
            ["jupyter-alice", "train-carol", "batch-bob", "infer-dave"]
        );
        assert_eq!(
            (pods[0].cpu_watts, pods[0].gpu_watts, pods[0].watts),
            (5.0, 187.5, 192.5)
        );
        assert!((pods[0].share - 192.5 / 630.0).abs() < 1e-12);
        assert_eq!(
            names(&table(&r, View::Pods, by(Column::CpuWatts), "")),
            ["train-carol", "jupyter-alice", "batch-bob", "infer-dave"]
        );
        assert_eq!(
            names(&table(&r, View::Pods, by(Column::GpuWatts), "")),
            ["jupyter-alice", "train-carol", "batch-bob", "infer-dave"]
        );
        let users = table(&r, View::Users, Sort::default(), "");
        assert_eq!(names(&users), ["(not a hub user)", "alice"]);
        assert_eq!((users[1].cpu_watts, users[1].gpu_watts), (5.0, 187.5));
        assert_eq!(users[0].gpu_watts, 222.5);
        let ns = table(&r, View::Namespaces, by(Column::GpuWatts), "");
        assert_eq!(names(&ns), ["ml", "jhub"]);
        assert_eq!(ns[0].gpu_joules, 22250.0);
        let containers = table(&r, View::Containers, Sort::default(), "");
        assert_eq!(containers[0].gpu_watts, 120.0);
    }

    #[test]
    fn gpu_view_lists_devices_with_their_pods_idle_and_mig_instances() {
        let r = reading(GPU_NODE);
        assert_eq!(empty_reason(&r, View::Gpus), None);
        let rows = table(&r, View::Gpus, Sort::default(), "");
        let expected: Vec<(String, f64, f64)> = [
            ("0: NVIDIA H200", 300.0, 47.6),
            ("  jupyter-alice", 187.5, 62.5),
            ("  batch-bob", 62.5, 20.8),
            ("  (idle)", 50.0, 16.7),
            ("  (unattributed)", 0.0, 0.0),
            ("1: NVIDIA H200", 200.0, 31.7),
            ("  MIG-big", 120.0, 60.0),
            ("    train-carol", 120.0, 60.0),
            ("  (idle)", 40.0, 20.0),
            ("  MIG-small", 40.0, 20.0),
            ("    infer-dave", 40.0, 20.0),
            ("  (unattributed)", 0.0, 0.0),
            ("2: NVIDIA H200", 80.0, 12.7),
            ("  (idle)", 80.0, 100.0),
            ("  (unattributed)", 0.0, 0.0),
        ]
        .iter()
        .map(|(n, w, s)| (n.to_string(), *w, *s))
        .collect();
        assert_eq!(lines(&rows), expected);
        assert_eq!(rows[0].detail, "2 pods");
        assert_eq!(rows[1].detail, "alice", "a hub user's pod shows its user");
        assert_eq!(rows[2].detail, "ml");
        assert_eq!(rows[5].detail, "2 MIG, 2 pods");
        assert_eq!(rows[12].detail, "no pods");
        assert_eq!(rows[6].gpu.as_ref().unwrap().kind, GpuRowKind::MigInstance);
        assert_eq!(rows[7].gpu.as_ref().unwrap().gpu_instance, "MIG-big");
        assert!(rows
            .iter()
            .all(|r| r.cpu_watts == 0.0 && r.gpu_watts == r.watts));
        // The children of a device add up to it.
        let under: f64 = rows[1..5].iter().map(|r| r.watts).sum();
        assert_eq!(under, rows[0].watts);

        // Sorted by name, A to Z, at every level; children stay under their device.
        let by_name = table(&r, View::Gpus, by(Column::Name), "");
        assert_eq!(
            names(&by_name)[..5],
            [
                "0: NVIDIA H200",
                "(idle)",
                "(unattributed)",
                "batch-bob",
                "jupyter-alice"
            ]
        );
        // A filter keeps a matching row's device (and MIG instance), and a matching device's rows.
        let carol = table(&r, View::Gpus, Sort::default(), "carol");
        assert_eq!(names(&carol), ["1: NVIDIA H200", "MIG-big", "train-carol"]);
        let alice = table(&r, View::Gpus, Sort::default(), "ALICE");
        assert_eq!(names(&alice), ["0: NVIDIA H200", "jupyter-alice"]);
        let idle_gpu = table(&r, View::Gpus, Sort::default(), "no pods");
        assert_eq!(
            names(&idle_gpu),
            ["2: NVIDIA H200", "(idle)", "(unattributed)"]
        );
        assert!(table(&r, View::Gpus, Sort::default(), "nothing-like-it").is_empty());
        for column in Column::ALL {
            for descending in [false, true] {
                let rows = table(&r, View::Gpus, Sort { column, descending }, "");
                assert_eq!(rows.len(), 15, "{column:?}");
                assert_eq!(rows[0].depth, 0, "{column:?}");
            }
        }
    }

    #[test]
    fn gpu_view_marks_bad_gpu_series() {
        let r = reading(
            "kepler_node_gpu_watts{node_name=\"n\",gpu=\"0\",gpu_name=\"Old\"} 100\n\
             kepler_pod_gpu_watts{node_name=\"n\",pod_id=\"p1\",gpu=\"7\",gpu_uuid=\"GPU-ghost\",gpu_instance=\"MIG-ghost\"} 5\n\
             kepler_pod_gpu_watts{node_name=\"n\",pod_id=\"\",gpu_uuid=\"GPU-ghost\",gpu_instance=\"\"} 2\n",
        );
        let rows = table(&r, View::Gpus, Sort::default(), "");
        let got: Vec<(String, &str)> = rows
            .iter()
            .map(|r| {
                (
                    format!("{}{}", "  ".repeat(usize::from(r.depth)), r.name),
                    r.detail.as_str(),
                )
            })
            .collect();
        let want: Vec<(String, &str)> = [
            ("0: Old", "no gpu_uuid, no pods"),
            ("  (idle)", ""),
            ("  (unattributed)", "not in a pod"),
            ("7: GPU-ghost", "no device series, 1 MIG, 2 pods"),
            ("  MIG-ghost", "MIG, 1 pod"),
            ("    p1", ""),
            ("  (no pod_id)", ""),
        ]
        .iter()
        .map(|(n, d)| (n.to_string(), *d))
        .collect();
        assert_eq!(got, want);
        // A device without its own series shows what its pods drew.
        assert_eq!(rows[3].watts, 7.0);
        assert!(
            (rows[3].share - 0.07).abs() < 1e-12,
            "of the node's known GPU power"
        );
    }
}
