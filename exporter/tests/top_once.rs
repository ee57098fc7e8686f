//! `kepler-rs top --once` against a real exporter measuring fake pods (real cgroups, as root):
//! text and JSON agree with the exporter; bad sources give one clear line and an exit code.
//! (Its own binary so its pods do not run beside the tmux test's.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod top_support;

use common::*;
use std::time::Duration;
use top_support::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn top_once_prints_text_and_json_and_fails_clearly() {
    const TEST: &str = "top_once_prints_text_and_json_and_fails_clearly";
    if !privileged(TEST, "creates cgroups for fake pods") {
        return;
    }
    let Some(mut pods) = FakePods::new() else {
        skip(TEST, "needs cgroup v1 cpu and cpuacct hierarchies");
        return;
    };
    let (busy, idle) = (pods.uid("dddd0004"), pods.uid("eeee0005"));
    pods.pod(&busy, &[0.40]);
    pods.pod(&idle, &[0.02]);
    let sys = sysfs_with_host_cgroups();
    let mut exporter = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "500ms",
        "--node-name",
        "once-node",
    ]);
    exporter.wait_ready(WAIT);
    std::thread::sleep(Duration::from_millis(1500)); // a few intervals of steady load
    let url = format!("http://127.0.0.1:{}", exporter.port);
    let top = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
            .arg("top")
            .args(args)
            .output()
            .unwrap()
    };

    let out = top(&["--once", "--url", &url, "--output", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let row = |uid: &str| rows.iter().find(|r| r["name"] == uid).cloned();
    let (b, i) = (row(&busy).expect("busy pod"), row(&idle).expect("idle pod"));
    assert!(
        b["watts"].as_f64().unwrap() > 3.0 * i["watts"].as_f64().unwrap(),
        "busy {b} vs idle {i}"
    );
    assert_eq!(v["nodes"][0]["name"], "once-node");
    assert_eq!(v["nodes"][0]["energy_source"], "estimate");
    // The JSON agrees with the exporter's own series (the gauge, summed over counted zones).
    let (_, text) = exporter.get("/metrics");
    let samples = parse(&text);
    let node_watts = sum(&samples, "kepler_node_cpu_watts", &[("zone", "package")]);
    let json_watts = v["nodes"][0]["total_watts"].as_f64().unwrap();
    assert!(
        (node_watts - json_watts).abs() <= 0.5 * node_watts,
        "json {json_watts} W vs exporter {node_watts} W"
    );

    let out = top(&["--once", "--url", &url, "--filter", "dddd0004"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("once-node "), "{stdout}");
    assert!(
        stdout.contains(&busy) && !stdout.contains(&idle),
        "{stdout}"
    );

    let out = top(&["--once", "--url", &url, "--view", "users"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no JupyterHub user data"));

    // Bad sources: one clear line on stderr, exit 1 (2 for a bad flag), never a panic.
    let closed = format!("127.0.0.1:{}", free_port());
    let not_exporter = format!("{url}/healthz");
    for (args, code, message) in [
        (
            vec!["--url", closed.as_str()],
            1,
            "cannot connect to 127.0.0.1:",
        ),
        (vec!["--url", &not_exporter], 1, "no kepler_* metrics"),
        (
            vec!["--url", "ftp://example.com"],
            2,
            "not an http:// or https:// URL",
        ),
        (vec!["--url", &format!("{url}/nowhere")], 1, "HTTP 404"),
        (vec!["--prometheus", &url], 1, "HTTP 404"),
        (vec!["--refresh", "1ms", "--url", &url], 2, "--refresh"),
    ] {
        let mut full = vec!["--once"];
        full.extend(args.iter());
        let out = top(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{full:?}: {stderr}");
        assert!(
            stderr.starts_with("kepler-rs top: error: ") && stderr.contains(message),
            "{full:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Without a terminal, the live view says to use --once.
    let out = top(&["--url", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--once"));
}
