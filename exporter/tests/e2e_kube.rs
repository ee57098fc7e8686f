//! End to end with Kubernetes, as root: real cgroups for two pods (a JupyterHub user server and the
//! hub), the local HTTPS API server serving their recorded pod objects, and two real exporters over
//! the same cgroups and simulated RAPL, one with `--kubeconfig` and one with `--no-kube`. Names and
//! users must appear, and the pods' power must be the same with and without the API.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod fake_api;

use common::cgroups::*;
use common::*;
use fake_api::FakeApi;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE: &str = "e2e-node";

/// The recorded pod named `name`, moved onto this node with the test's UID and container ID.
fn recorded_pod(name: &str, uid: &str, runtime: &str, container_id: &str) -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube/pods-node-a.json");
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut pod = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no pod {name} in the fixture"))
        .clone();
    pod["metadata"]["uid"] = json!(uid);
    pod["spec"]["nodeName"] = json!(NODE);
    pod["status"]["containerStatuses"][0]["containerID"] =
        json!(format!("{runtime}://{container_id}"));
    pod
}

fn pod_joules(s1: &[(Key, f64)], s2: &[(Key, f64)], uid: &str) -> f64 {
    let j = |s: &[(Key, f64)]| {
        sum(
            s,
            "kepler_pod_cpu_joules_total",
            &[("pod_id", uid), ("zone", "package")],
        )
    };
    j(s2) - j(s1)
}

fn ticks(s: &[(Key, f64)]) -> f64 {
    sum(s, "kepler_exporter_ticks_total", &[])
}

/// The snapshot of tick `n`, scraped while it is the latest.
fn at_tick(e: &Exporter, n: f64) -> (String, Vec<(Key, f64)>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = e.get("/metrics");
        let s = parse(&text);
        match ticks(&s) {
            t if t == n => return (text, s),
            t if t > n => panic!("missed tick {n}: at {t}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no tick {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Both exporters' snapshots of the same tick number (their tick grids start within moments).
fn both_at(a: &Exporter, b: &Exporter, n: f64) -> [(String, Vec<(Key, f64)>); 2] {
    std::thread::scope(|scope| {
        let first = scope.spawn(|| at_tick(a, n));
        let second = at_tick(b, n);
        [first.join().unwrap(), second]
    })
}

/// The labels of the one series of `name` for `pod_id` in zone package.
fn labels_of(
    s: &[(Key, f64)],
    name: &str,
    label: &str,
    value: &str,
) -> std::collections::BTreeMap<String, String> {
    let matching: Vec<_> = s
        .iter()
        .filter(|(k, _)| {
            k.name == name
                && k.labels.get(label).map(String::as_str) == Some(value)
                && k.labels.get("zone").is_none_or(|z| z == "package")
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{name} for {label}={value}: {matching:?}"
    );
    matching[0].0.labels.clone()
}

#[test]
fn pod_names_and_jupyterhub_users_end_to_end() {
    const TEST: &str = "pod_names_and_jupyterhub_users_end_to_end";
    let Some(mut cluster) = Cluster::open(TEST) else {
        return;
    };
    let tag = std::process::id();
    let uid_user = format!("a11ce000-0000-4000-8000-{tag:012x}");
    let uid_hub = format!("0b0b0000-0000-4000-8000-{tag:012x}");
    let cid_notebook = format!("{:08x}{tag:056x}", 0x0a11ce);
    let cid_hub = format!("{:08x}{tag:056x}", 0x0b0b);
    let pod_user = format!("kubepods/burstable/pod{uid_user}");
    let pod_hub = format!("kubepods/besteffort/pod{uid_hub}");
    let (c_user, c_hub) = (
        format!("{pod_user}/{cid_notebook}"),
        format!("{pod_hub}/{cid_hub}"),
    );
    for d in [
        "kubepods",
        "kubepods/burstable",
        "kubepods/besteffort",
        &pod_user,
        &pod_hub,
        &c_user,
        &c_hub,
    ] {
        cluster.mkdir(d);
    }
    cluster.busy(&c_user, 0.50);
    cluster.busy(&c_hub, 0.20);

    let api = FakeApi::start(NODE);
    api.load_list(&json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5000"},
        "items": [
            recorded_pod("jupyter-alice-smith-uni-edu---6c5a1f3e", &uid_user, "containerd", &cid_notebook),
            recorded_pod("hub-7d9c8b6f5-x2x7q", &uid_hub, "docker", &cid_hub),
        ]
    }));

    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path().join("sys");
    std::fs::create_dir_all(&sys).unwrap();
    std::os::unix::fs::symlink("/sys/fs", sys.join("fs")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let updater = start_powercap(&sys, stop.clone());
    let kubeconfig = api.kubeconfig();
    let common_args = [
        "--sysfs",
        sys.to_str().unwrap(),
        "--interval",
        "1s",
        "--node-name",
        NODE,
        "--idle-watts",
        "package=20,dram=2",
        "--log-level",
        "info",
    ];
    let mut with_api = Exporter::start(
        &[
            &common_args[..],
            &[
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--jupyterhub-namespace",
                "sai",
            ],
        ]
        .concat(),
    );
    let mut without = Exporter::start(&[&common_args[..], &["--no-kube"]].concat());
    with_api.wait_ready(Duration::from_secs(20));
    without.wait_ready(Duration::from_secs(20));

    // Names arrive from the watch, asynchronously to the ticks.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = with_api.get("/metrics");
        let s = parse(&text);
        // Only this test's pods: other tests on the host may have pods in the same hierarchy.
        let named = |uid: &str| {
            s.iter().any(|(k, _)| {
                k.name == "kepler_pod_cpu_joules_total"
                    && k.labels.get("pod_id").map(String::as_str) == Some(uid)
                    && k.labels.get("pod_name").is_some_and(|n| !n.is_empty())
            })
        };
        if sum(&s, "kepler_exporter_pod_metadata_synced", &[]) == 1.0
            && named(&uid_user)
            && named(&uid_hub)
        {
            break;
        }
        if Instant::now() > deadline {
            with_api.terminate(Duration::from_secs(5));
            let pods: Vec<&str> = text.lines().filter(|l| l.contains("pod_")).collect();
            panic!(
                "pod names never appeared:\n{}\nrequests: {:?}\nexporter log:\n{}",
                pods.join("\n"),
                api.requests(),
                with_api.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500)); // let the quotas settle

    let start = {
        let (_, k) = with_api.get("/metrics");
        let (_, n) = without.get("/metrics");
        ticks(&parse(&k)).max(ticks(&parse(&n))) + 2.0
    };
    let [(_, k1), (_, n1)] = both_at(&with_api, &without, start);
    let [(text_k2, k2), (text_n2, n2)] = both_at(&with_api, &without, start + 6.0);

    // The user server: names, namespace, container name and the raw JupyterHub username.
    let user = labels_of(&k2, "kepler_pod_cpu_joules_total", "pod_id", &uid_user);
    assert_eq!(user["pod_name"], "jupyter-alice-smith-uni-edu---6c5a1f3e");
    assert_eq!(user["pod_namespace"], "sai");
    assert_eq!(user["hub_user"], "alice.smith@uni.edu");
    assert_eq!(user["hub_server"], "", "the default server");
    let notebook = labels_of(
        &k2,
        "kepler_container_cpu_joules_total",
        "container_id",
        &cid_notebook,
    );
    assert_eq!(notebook["container_name"], "notebook");
    assert_eq!(notebook["pod_id"], uid_user);
    assert_eq!(notebook["hub_user"], "alice.smith@uni.edu");
    let info = labels_of(&k2, "kepler_pod_info", "pod_id", &uid_user);
    assert_eq!(info["hub_user"], "alice.smith@uni.edu");
    assert_eq!(info["pod_namespace"], "sai");

    // The hub is not a user server: names, and no hub_user label at all.
    let hub = labels_of(&k2, "kepler_pod_cpu_joules_total", "pod_id", &uid_hub);
    assert_eq!(hub["pod_name"], "hub-7d9c8b6f5-x2x7q");
    assert!(
        !hub.contains_key("hub_user") && !hub.contains_key("hub_server"),
        "{hub:?}"
    );
    let hub_c = labels_of(
        &k2,
        "kepler_container_cpu_joules_total",
        "container_id",
        &cid_hub,
    );
    assert_eq!(hub_c["container_name"], "hub");
    assert!(!hub_c.contains_key("hub_user"));

    // Without the API: pod_id only, no metadata self-metrics.
    let bare = labels_of(&n2, "kepler_pod_cpu_joules_total", "pod_id", &uid_user);
    assert_eq!(bare["pod_name"], "");
    assert!(!bare.contains_key("hub_user"));
    assert!(!text_n2.contains("kepler_exporter_pod_metadata_synced"));
    assert!(!text_n2.contains("kepler_pod_info"));

    // The same joules with and without the API, over the same ticks. The two tick grids are offset by
    // the difference in start-up time; the windows differ by that much at each end.
    let stamp = |s: &[(Key, f64)]| sum(s, "kepler_exporter_last_tick_timestamp_seconds", &[]);
    let window = stamp(&k2) - stamp(&k1);
    let offset = (stamp(&k1) - stamp(&n1))
        .abs()
        .max((stamp(&k2) - stamp(&n2)).abs());
    let tolerance = 0.03 + 2.0 * offset / window;
    for uid in [&uid_user, &uid_hub] {
        let (jk, jn) = (pod_joules(&k1, &k2, uid), pod_joules(&n1, &n2, uid));
        eprintln!("{uid}: {jk:.3} J with the API, {jn:.3} J without (grids {offset:.3} s apart)");
        assert!(jk > 0.0 && jn > 0.0, "{uid}: {jk} J vs {jn} J");
        assert!(
            rel_close(jk, jn, tolerance),
            "{uid}: {jk:.3} J with the API vs {jn:.3} J without over ticks {start}..{} (grids {offset:.3} s apart)",
            start + 6.0
        );
    }
    assert_conservation(&k2);
    assert_conservation(&n2);
    assert_promtool_clean(TEST, &text_k2);
    assert_eq!(sum(&k2, "kepler_exporter_pod_metadata_pods", &[]), 2.0);

    for r in api.requests() {
        assert_eq!(
            r.query.get("fieldSelector").map(String::as_str),
            Some("spec.nodeName=e2e-node"),
            "{r:?}"
        );
    }
    for e in [&mut with_api, &mut without] {
        let status = e
            .terminate(Duration::from_secs(10))
            .expect("exporter did not stop on SIGTERM");
        assert!(status.success(), "exit status {status}");
    }
    stop.store(true, Ordering::Relaxed);
    updater.join().unwrap();
}
