//! GPU support as a user meets it on a machine without an NVIDIA driver: `--gpu auto` (the default)
//! says so once and exports no GPU series, `--gpu nvml` is a one-line error with exit code 2.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// True when this machine has an NVIDIA driver (then these no-driver tests do not apply).
fn nvml_present() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
        "/usr/lib64/libnvidia-ml.so.1",
        "/usr/lib/libnvidia-ml.so.1",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

#[test]
fn gpu_nvml_without_a_driver_is_one_line_and_exit_2() {
    if nvml_present() {
        report_skip(
            "gpu_nvml_without_a_driver_is_one_line_and_exit_2",
            "this machine has libnvidia-ml",
        );
        return;
    }
    for (args, env) in [
        (vec!["run", "--gpu", "nvml", "--log-level", "off"], vec![]),
        (
            vec!["run", "--log-level", "off"],
            vec![("KEPLER_RS_GPU", "nvml")],
        ),
        (vec!["run", "--gpu", "cuda", "--log-level", "off"], vec![]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .envs(env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("--gpu"), "{args:?}: {stderr}");
    }
}

#[test]
fn gpu_auto_without_a_driver_says_so_once_and_exports_no_gpu_series() {
    if nvml_present() {
        report_skip(
            "gpu_auto_without_a_driver_says_so_once_and_exports_no_gpu_series",
            "this machine has libnvidia-ml",
        );
        return;
    }
    let mut e = Exporter::start(&["--interval", "200ms", "--energy-source", "estimate"]);
    e.wait_ready(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let (status, text) = e.get("/metrics");
    assert_eq!(status, 200);
    assert!(!text.contains("_gpu_"), "GPU series without a GPU:\n{text}");
    assert!(text.contains("kepler_node_cpu_joules_total"));
    let s = parse(&text);
    assert!(label_values(&s, "kepler_exporter_source_up", "source")
        .iter()
        .all(|src| src != "gpu"));
    assert!(e.terminate(Duration::from_secs(10)).is_some());
    let stderr = e.stderr();
    let gpu_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("GPU") || l.contains("NVML"))
        .collect();
    assert_eq!(gpu_lines.len(), 1, "{stderr}");
    assert!(gpu_lines[0].contains("INFO"), "{}", gpu_lines[0]);
}
