//! The table a view shows: rows built from a `Reading` (per pod, namespace, JupyterHub user,
//! container or process), sorted by any column and filtered by a substring. Pure; shared by the
//! live screen, `--once` text and JSON.

use super::model::{Consumer, Family, Reading};
use serde::Serialize;
use std::collections::BTreeMap;

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
    pub const ALL: [View; 6] = [
        View::Pods,
        View::Namespaces,
        View::Users,
        View::Containers,
        View::Processes,
        View::Gpus,
    ];

    pub fn title(self) -> &'static str {
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
    pub fn headers(self) -> (&'static str, &'static str) {
        match self {
            View::Pods => ("POD", "NAMESPACE"),
            View::Namespaces => ("NAMESPACE", "PODS"),
            View::Users => ("HUB USER", "PODS"),
            View::Containers => ("CONTAINER", "POD"),
            View::Processes => ("COMM", "PID"),
            View::Gpus => ("GPU", "NODE"),
        }
    }

    pub fn next(self) -> View {
        let i = View::ALL.iter().position(|v| *v == self).unwrap_or(0);
        View::ALL[(i + 1) % View::ALL.len()]
    }

    pub fn previous(self) -> View {
        let i = View::ALL.iter().position(|v| *v == self).unwrap_or(0);
        View::ALL[(i + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// A sortable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Column {
    Name,
    Detail,
    Node,
    Watts,
    Joules,
    Share,
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Name,
        Column::Detail,
        Column::Node,
        Column::Watts,
        Column::Joules,
        Column::Share,
    ];

    pub fn next(self) -> Column {
        let i = Column::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Column::ALL[(i + 1) % Column::ALL.len()]
    }

    /// Numbers sort largest first by default, text A to Z.
    pub fn descending_by_default(self) -> bool {
        matches!(self, Column::Watts | Column::Joules | Column::Share)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Sort {
        Sort {
            column: Column::Watts,
            descending: true,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Stable identity across refreshes (selection, sparkline history).
    #[serde(skip)]
    pub key: String,
    pub name: String,
    pub detail: String,
    pub node: String,
    pub watts: f64,
    pub joules: f64,
    /// Of the node's total power (of the cluster's, for rows that span nodes), 0..1.
    pub share: f64,
}

/// Why a view has no rows, said on screen instead of an empty table.
pub fn empty_reason(reading: &Reading, view: View) -> Option<&'static str> {
    match view {
        View::Users if !reading.has_hub_users() => Some(
            "no JupyterHub user data: no pod series carries a hub_user label \
             (it comes with Kubernetes metadata)",
        ),
        View::Processes if reading.processes.is_empty() => {
            Some("no process series: process metrics are off (kepler-rs run --process-metrics)")
        }
        View::Gpus => Some(if reading.has_gpu_series {
            "GPU series present, but this version of top cannot show them yet"
        } else {
            "no GPU metrics from this source"
        }),
        View::Pods if reading.pods.is_empty() => Some("no pod series (no pods on this node?)"),
        View::Containers if reading.containers.is_empty() => Some("no container series"),
        _ => None,
    }
}

/// All rows of a view, unsorted and unfiltered.
pub fn rows(reading: &Reading, view: View) -> Vec<Row> {
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
        View::Gpus => Vec::new(),
    }
}

fn share(watts: f64, total: f64) -> f64 {
    if total > 0.0 {
        watts / total
    } else {
        0.0
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
        .map(|c| Row {
            key: format!("{}/{}", c.node, c.id),
            name: c.name.clone(),
            detail: detail(c),
            node: c.node.clone(),
            watts: c.watts,
            joules: c.joules,
            share: share(c.watts, reading.node_total_watts(&c.node)),
        })
        .collect()
}

/// Pods grouped by `group` (namespace, hub user), over all nodes.
fn grouped(reading: &Reading, group: impl Fn(&Consumer) -> &str, unnamed: &str) -> Vec<Row> {
    let mut groups: BTreeMap<&str, (f64, f64, usize, Vec<&str>)> = BTreeMap::new();
    for pod in &reading.pods {
        let g = groups.entry(group(pod)).or_default();
        g.0 += pod.watts;
        g.1 += pod.joules;
        g.2 += 1;
        if !g.3.contains(&pod.node.as_str()) {
            g.3.push(&pod.node);
        }
    }
    let total = reading.total_watts();
    groups
        .into_iter()
        .map(|(name, (watts, joules, pods, nodes))| Row {
            key: name.to_string(),
            name: if name.is_empty() { unnamed } else { name }.to_string(),
            detail: pods.to_string(),
            node: match nodes.as_slice() {
                [one] => one.to_string(),
                many => format!("{} nodes", many.len()),
            },
            watts,
            joules,
            share: share(watts, total),
        })
        .collect()
}

/// Keep the rows whose name, detail or node contains `filter` (case-insensitive).
pub fn filter(rows: &mut Vec<Row>, filter: &str) {
    if filter.is_empty() {
        return;
    }
    let needle = filter.to_lowercase();
    rows.retain(|r| {
        [&r.name, &r.detail, &r.node]
            .iter()
            .any(|field| field.to_lowercase().contains(&needle))
    });
}

/// Sort in place; ties are broken by name so the order is stable between refreshes.
pub fn sort(rows: &mut [Row], sort: Sort) {
    rows.sort_by(|a, b| {
        let primary = match sort.column {
            Column::Name => a.name.cmp(&b.name),
            Column::Detail => natural(&a.detail, &b.detail),
            Column::Node => a.node.cmp(&b.node),
            Column::Watts => a.watts.total_cmp(&b.watts),
            Column::Joules => a.joules.total_cmp(&b.joules),
            Column::Share => a.share.total_cmp(&b.share),
        };
        let primary = if sort.descending {
            primary.reverse()
        } else {
            primary
        };
        primary.then_with(|| a.name.cmp(&b.name))
    });
}

/// Numbers (pod counts, PIDs) compare as numbers, text as text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Rows of a view, filtered and sorted: what every output shows.
pub fn table(reading: &Reading, view: View, sort_by: Sort, filter_by: &str) -> Vec<Row> {
    let mut out = rows(reading, view);
    filter(&mut out, filter_by);
    sort(&mut out, sort_by);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{reading, HUB_USERS, TWO_PODS};

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
        assert!(empty_reason(&r, View::Gpus).is_some());
        assert_eq!(empty_reason(&r, View::Pods), None);
        // Pods without Kubernetes metadata are shown by their UID, in "(no namespace)".
        let ns = table(&r, View::Namespaces, Sort::default(), "");
        assert_eq!(names(&ns), ["(no namespace)"]);
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
}
