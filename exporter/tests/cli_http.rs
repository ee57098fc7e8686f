//! The binary as a user meets it, without privileges: estimate mode where there is no RAPL, the HTTP
//! surface, and bad flags (one line naming the flag, exit code 2).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// A sysfs root without powercap (cgroup mounts still resolve through the real /sys/fs).
fn sysfs_without_rapl() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/sys/fs", tmp.path().join("fs")).unwrap();
    tmp
}

#[test]
fn without_rapl_serves_clearly_labelled_estimates() {
    let sys = sysfs_without_rapl();
    let mut e = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "200ms",
        "--node-name",
        "est",
        // Ignored by the estimate, which says so at start (idle below stays the model's).
        "--idle-watts",
        "package=20",
    ]);
    e.wait_ready(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(700));
    let (status, text) = e.get("/metrics");
    assert_eq!(status, 200);
    let s = parse(&text);
    assert_eq!(
        label_values(&s, "kepler_node_cpu_joules_total", "source"),
        vec!["estimate"]
    );
    assert_eq!(
        label_values(&s, "kepler_node_cpu_joules_total", "zone"),
        vec!["package"]
    );
    assert_eq!(
        sum(
            &s,
            "kepler_exporter_energy_source_info",
            &[("source", "estimate")]
        ),
        1.0
    );
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as f64;
    // Default model: 0.74 W idle .. 3.5 W busy per logical CPU.
    let watts = sum(&s, "kepler_node_cpu_watts", &[]);
    assert!(
        watts >= 0.74 * cpus - 1e-9 && watts <= 3.5 * cpus + 1e-9,
        "{watts} W for {cpus} CPUs"
    );
    let idle = sum(&s, "kepler_node_cpu_idle_watts", &[]);
    assert!((idle - 0.74 * cpus).abs() < 1e-6, "idle {idle} W");
    assert!(sum(&s, "kepler_node_cpu_joules_total", &[]) > 0.0);
    let usage = sum(&s, "kepler_node_cpu_usage_ratio", &[]);
    assert!((0.0..=1.0).contains(&usage));
    assert_promtool_clean("without_rapl_serves_clearly_labelled_estimates", &text);

    let status = e
        .terminate(Duration::from_secs(10))
        .expect("no exit after SIGTERM");
    assert!(status.success());
    let log = e.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("energy source: estimate"))
        .unwrap_or_else(|| panic!("log does not say which source: {log}"));
    assert_eq!(line.matches("source=\"estimate\"").count(), 1, "{line}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("--idle-watts") && l.contains("ignored")),
        "no warning that --idle-watts is ignored: {log}"
    );
}

#[test]
fn bare_command_says_a_subcommand_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("subcommand is missing") && stderr.contains("run, top or report"),
        "{stderr}"
    );
}

#[test]
fn http_surface() {
    let sys = sysfs_without_rapl();
    let mut e = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "200ms",
    ]);
    e.wait_ready(Duration::from_secs(20));
    let p = e.port;
    assert_eq!(http(p, "GET", "/healthz", "").0, 200);
    assert_eq!(http(p, "GET", "/readyz", "").0, 200);
    let (status, body) = http(p, "GET", "/", "");
    assert_eq!(status, 200);
    assert!(body.contains("/metrics"));
    assert_eq!(http(p, "GET", "/nope", "").0, 404);
    assert_eq!(http(p, "GET", "/metrics/extra", "").0, 404);
    assert_eq!(http(p, "POST", "/metrics", "Content-Length: 0\r\n").0, 405);
    assert_eq!(http(p, "DELETE", "/", "").0, 405);
    assert_eq!(
        http(p, "GET", "/metrics", "Content-Length: 5\r\n\r\nhello").0,
        413
    );
    let (status, body) = http(p, "HEAD", "/metrics", "");
    assert_eq!(status, 200);
    assert!(body.is_empty());
    // Two scrapes without a tick in between see the same snapshot.
    let (_, a) = http(p, "GET", "/metrics?x=1", "");
    assert!(a.contains("kepler_node_cpu_joules_total"));
    // The build's revision is the checkout's commit (or the one given at build time), "unknown"
    // only where neither is known.
    let head = std::env::var("KEPLER_RS_GIT_REVISION").ok().or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    let revisions = label_values(&parse(&a), "kepler_build_info", "revision");
    assert_eq!(
        revisions,
        vec![head.unwrap_or_else(|| "unknown".into())],
        "{a}"
    );
}

#[test]
fn readiness_waits_for_the_first_interval() {
    let sys = sysfs_without_rapl();
    let e = Exporter::start(&["--sysfs", sys.path().to_str().unwrap(), "--interval", "5s"]);
    // Poll until the server answers; the first complete interval is 5 s away.
    let start = std::time::Instant::now();
    let status = loop {
        if let Ok((s, _)) = try_http(e.port, "GET", "/readyz", "") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 503);
    assert_eq!(e.get("/healthz").0, 200);
    let (_, text) = e.get("/metrics");
    assert!(
        !text.contains("kepler_node_cpu_joules_total"),
        "energy before the first interval:\n{text}"
    );
    assert!(text.contains("kepler_exporter_build_info"));
}

fn run_expecting_usage_error(args: &[&str], env: &[(&str, &str)], flag: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(
        stderr.contains(flag),
        "{args:?}: does not name {flag}: {stderr}"
    );
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    run_expecting_usage_error(&["run", "--interval", "fast"], &[], "--interval");
    run_expecting_usage_error(&["run", "--interval", "0s"], &[], "--interval");
    run_expecting_usage_error(&["run", "--listen", "nowhere"], &[], "--listen");
    run_expecting_usage_error(&["run", "--sysfs", "/nonexistent/sys"], &[], "--sysfs");
    run_expecting_usage_error(&["run", "--energy-source", "magic"], &[], "--energy-source");
    run_expecting_usage_error(&["run", "--bogus"], &[], "--bogus");
    run_expecting_usage_error(&["run", "--idle-watts", "gpu=3"], &[], "--idle-watts");
    run_expecting_usage_error(&["run"], &[("KEPLER_RS_INTERVAL", "soon")], "--interval");
    let sys = sysfs_without_rapl();
    run_expecting_usage_error(
        &[
            "run",
            "--energy-source",
            "rapl",
            "--sysfs",
            sys.path().to_str().unwrap(),
            "--log-level",
            "off",
        ],
        &[],
        "--energy-source",
    );
}

#[test]
fn port_in_use_is_a_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let sys = sysfs_without_rapl();
    let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .args(["run", "--listen", &addr, "--no-kube"])
        .args(["--sysfs", sys.path().to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Said once, and before any input is loaded (no energy or CPU source chosen yet).
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_lowercase().contains("in use"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("kepler-rs: error: --listen") && errors[0].contains(&addr),
        "{stderr}"
    );
    assert!(!stderr.contains("energy source"), "{stderr}");
}

#[test]
fn process_metrics_only_when_enabled() {
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let pid = busy.id().to_string();
    let sys = sysfs_without_rapl();
    let root = sys.path().to_str().unwrap();
    let mut on = Exporter::start(&["--sysfs", root, "--interval", "300ms", "--process-metrics"]);
    let mut off = Exporter::start(&["--sysfs", root, "--interval", "300ms"]);
    on.wait_ready(Duration::from_secs(20));
    off.wait_ready(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1000));
    let s = parse(&on.get("/metrics").1);
    let mine = sum(
        &s,
        "kepler_process_cpu_joules_total",
        &[("pid", &pid), ("comm", "sh"), ("container_id", "")],
    );
    let watts = sum(&s, "kepler_process_cpu_watts", &[("pid", &pid)]);
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(mine > 0.0, "busy process has no energy");
    assert!(watts > 0.0, "busy process has no power");
    // The busy loop is the biggest consumer; it cannot have more than the node's active energy.
    let active = sum(&s, "kepler_node_cpu_active_joules_total", &[]);
    assert!(
        mine <= active * (1.0 + 1e-9),
        "process {mine} J > node active {active} J"
    );
    let s = parse(&off.get("/metrics").1);
    assert!(
        s.iter()
            .all(|(k, _)| !k.name.starts_with("kepler_process_")),
        "process series while disabled"
    );
}
