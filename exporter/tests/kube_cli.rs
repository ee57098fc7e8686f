//! The binary with Kubernetes options, without privileges: readiness never waits for the API server,
//! metadata catches up when it comes, and a bad `--kubeconfig` is a one-line usage error (exit 2).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod fake_api;

use common::*;
use fake_api::FakeApi;
use std::process::Command;
use std::time::{Duration, Instant};

/// A sysfs root without powercap (estimate mode; cgroup mounts still resolve through /sys/fs).
fn sysfs_without_rapl() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/sys/fs", tmp.path().join("fs")).unwrap();
    tmp
}

fn metadata_metrics(e: &Exporter) -> (f64, f64) {
    let (_, text) = e.get("/metrics");
    let s = parse(&text);
    (
        sum(&s, "kepler_exporter_pod_metadata_synced", &[]),
        sum(
            &s,
            "kepler_exporter_pod_metadata_errors_total",
            &[("kind", "list_failed")],
        ),
    )
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unreachable_api_server_does_not_hold_readiness() {
    let api = FakeApi::start("kube-cli-node");
    api.set_down(true);
    let sys = sysfs_without_rapl();
    let mut e = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "200ms",
        "--node-name",
        "kube-cli-node",
        "--kubeconfig",
        api.kubeconfig().to_str().unwrap(),
        "--log-level",
        "info",
    ]);
    e.wait_ready(Duration::from_secs(20));
    wait_for("a failed list", || metadata_metrics(&e).1 >= 1.0);
    assert_eq!(metadata_metrics(&e).0, 0.0);
    assert_eq!(e.get("/readyz").0, 200);
    api.set_down(false);
    wait_for("synced", || metadata_metrics(&e).0 == 1.0);
    let status = e
        .terminate(Duration::from_secs(10))
        .expect("no exit after SIGTERM");
    assert!(status.success());
}

#[test]
fn without_cluster_configuration_the_exporter_runs_and_says_so() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        skip(
            "without_cluster_configuration_the_exporter_runs_and_says_so",
            "running inside a Kubernetes pod",
        );
        return;
    }
    let sys = sysfs_without_rapl();
    let mut e = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "200ms",
        "--log-level",
        "info",
    ]);
    e.wait_ready(Duration::from_secs(20));
    let (_, text) = e.get("/metrics");
    let s = parse(&text);
    assert_eq!(sum(&s, "kepler_exporter_pod_metadata_synced", &[]), 0.0);
    assert_eq!(
        sum(
            &s,
            "kepler_exporter_pod_metadata_errors_total",
            &[("kind", "incluster_config")]
        ),
        1.0
    );
    e.terminate(Duration::from_secs(10))
        .expect("no exit after SIGTERM");
    let log = e.stderr();
    assert!(
        log.contains("--kubeconfig") && log.contains("--no-kube"),
        "{log}"
    );
}

#[test]
fn bad_kubeconfig_is_a_one_line_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("kubeconfig");
    std::fs::write(&garbage, "clusters: [this is: not\n  a kubeconfig").unwrap();
    for (args, flag) in [
        (
            vec!["run", "--kubeconfig", garbage.to_str().unwrap()],
            "--kubeconfig",
        ),
        (
            vec!["run", "--kubeconfig", "/nonexistent/kubeconfig"],
            "--kubeconfig",
        ),
        (
            vec![
                "run",
                "--no-kube",
                "--kubeconfig",
                garbage.to_str().unwrap(),
            ],
            "--no-kube",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("kepler-rs: error: ") && last.contains(flag),
            "{args:?}: {stderr}"
        );
    }
}
