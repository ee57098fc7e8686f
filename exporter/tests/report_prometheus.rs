//! `kepler-rs report` against a real Prometheus (Debian's package) that scraped a real exporter
//! measuring fake pods (real cgroups, as root): the kWh per pod and per namespace equal the
//! exporter's own joules over the same window within 2%. Per-user grouping is unit-tested with
//! fixtures (no hub_user labels exist before Kubernetes metadata); here it must say so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod top_support;

use common::prometheus::Prometheus;
use common::*;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use top_support::*;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The exporter's counters now, and the time they were read.
fn counters(e: &Exporter) -> (f64, Vec<(Key, f64)>) {
    let t = unix_now();
    let (status, text) = e.get("/metrics");
    assert_eq!(status, 200);
    (t, parse(&text))
}

fn csv_kwh(csv: &str, grouping: &str, name: &str) -> f64 {
    let line = csv
        .lines()
        .find(|l| l.starts_with(&format!("{grouping},{name},")))
        .unwrap_or_else(|| panic!("no {grouping} {name} in:\n{csv}"));
    line.split(',').nth(2).unwrap().parse().unwrap()
}

#[test]
fn report_matches_the_exporters_joules() {
    const TEST: &str = "report_matches_the_exporters_joules";
    if !privileged(TEST, "creates cgroups for fake pods") {
        return;
    }
    if !Prometheus::installed() {
        skip(
            TEST,
            "prometheus not installed (apt-get install prometheus)",
        );
        return;
    }
    let Some(mut pods) = FakePods::new() else {
        skip(TEST, "needs cgroup v1 cpu and cpuacct hierarchies");
        return;
    };
    let (a, b) = (pods.uid("abab0006"), pods.uid("cdcd0007"));
    pods.pod(&a, &[0.30]);
    pods.pod(&b, &[0.10]);
    let sys = sysfs_with_host_cgroups();
    let mut e = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "1s",
        "--node-name",
        "report-node",
    ]);
    e.wait_ready(Duration::from_secs(20));
    let prom = Prometheus::start(&[e.port]);

    // Let Prometheus collect a few scrapes before the window opens.
    std::thread::sleep(Duration::from_secs(5));
    let (from, s1) = counters(&e);
    std::thread::sleep(Duration::from_secs(30));
    let (to, s2) = counters(&e);
    std::thread::sleep(Duration::from_secs(2)); // the scrape at `to` is in

    let report = |args: &[&str]| common::prometheus::report(&prom, from, to, args);
    let csv = report(&["--by", "pod,namespace", "--format", "csv"]);
    let joules = |s: &[(Key, f64)], name: &str, filter: &[(&str, &str)]| sum(s, name, filter);
    for uid in [&a, &b] {
        let f = [("pod_id", uid.as_str()), ("zone", "package")];
        let truth = joules(&s2, "kepler_pod_cpu_joules_total", &f)
            - joules(&s1, "kepler_pod_cpu_joules_total", &f);
        let got = csv_kwh(&csv, "pod", uid) * 3.6e6;
        assert!(truth > 1.0, "pod {uid}: only {truth} J in the window");
        assert!(
            (got - truth).abs() <= 0.02 * truth,
            "pod {uid}: report {got:.3} J vs exporter {truth:.3} J"
        );
    }
    // Every pod here has no namespace: the namespace line is the sum of all pods.
    let pods_truth = joules(&s2, "kepler_pod_cpu_joules_total", &[("zone", "package")])
        - joules(&s1, "kepler_pod_cpu_joules_total", &[("zone", "package")]);
    let ns = csv_kwh(&csv, "namespace", "(no namespace)") * 3.6e6;
    assert!(
        (ns - pods_truth).abs() <= 0.02 * pods_truth,
        "namespace {ns:.3} J vs exporter {pods_truth:.3} J"
    );
    let node_truth = joules(&s2, "kepler_node_cpu_joules_total", &[("zone", "package")])
        - joules(&s1, "kepler_node_cpu_joules_total", &[("zone", "package")]);
    let node = csv_kwh(&csv, "nodes", "(all nodes)") * 3.6e6;
    assert!(
        (node - node_truth).abs() <= 0.02 * node_truth,
        "node {node:.3} J vs exporter {node_truth:.3} J"
    );

    // Table and Markdown; users: no hub_user data yet, said plainly. CO2 = kWh x intensity.
    let table = report(&["--carbon-intensity", "400"]);
    assert!(table.contains("no JupyterHub user data"), "{table}");
    assert!(table.contains("(no namespace)"), "{table}");
    assert!(table.contains("carbon intensity: 400 g CO2/kWh"), "{table}");
    let md = report(&["--by", "namespace", "--format", "markdown"]);
    assert!(md.contains("| (no namespace) |"), "{md}");

    // A Prometheus URL that is not one: a clear error, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .args([
            "report",
            "--prometheus",
            &format!("http://127.0.0.1:{}", e.port),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("kepler-rs report: error: "), "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
}
