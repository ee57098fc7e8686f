//! The real binary against a hostile host and a careless operator: FIFOs and /dev/zero in the host
//! trees never stop the ticks, a read stuck in the kernel does not hold the exit after SIGTERM,
//! settings out of range and a YAML nesting bomb are refused at start (exit 2), and SIGHUP reloads
//! the web configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use base64::Engine;
use common::fake_nvml::FakeNvml;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Replace `path` (a file) with a FIFO or a symlink to /dev/zero.
fn swap_for_fifo(path: &Path) {
    fs::remove_file(path).unwrap();
    mkfifo(path);
}

fn swap_for_dev_zero(path: &Path) {
    fs::remove_file(path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", path).unwrap();
}

/// Copy of a committed fixture scenario (its `sys` and `proc` trees).
fn fixture_copy(scenario: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(scenario);
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(scenario);
    let status = Command::new("cp")
        .arg("-R")
        .arg(&from)
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    (tmp, root)
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn errors(samples: &[(Key, f64)], source: &str, kind: &str) -> f64 {
    sum(
        samples,
        "kepler_exporter_source_errors_total",
        &[("source", source), ("kind", kind)],
    )
}

#[test]
fn fifos_and_dev_zero_in_the_host_trees_are_counted_and_never_stop_the_ticks() {
    let (_tmp, root) = fixture_copy("cgroup_v2_cgroupfs");
    let sys = root.join("sys");
    let powercap = sys.join("class/powercap");
    // Socket 1's package zone names itself through /dev/zero, its dram reads a FIFO.
    swap_for_dev_zero(&powercap.join("intel-rapl:1/name"));
    swap_for_fifo(&powercap.join("intel-rapl:1:0/energy_uj"));
    // Socket 0's package range is /dev/zero.
    swap_for_dev_zero(&powercap.join("intel-rapl:0/max_energy_range_uj"));
    // One container's counter is a FIFO, another's /dev/zero.
    let kubepods = sys.join("fs/cgroup/kubepods");
    let container = |pod: &str, id: &str| kubepods.join(pod).join(id.repeat(32)).join("cpu.stat");
    swap_for_fifo(&container("pod47a8b9c0-d1e2-4f3a-8b4c-5d6e7f8a9b66", "f1"));
    swap_for_dev_zero(&container(
        "besteffort/pod8f9e0d1c-2b3a-4c5d-8e7f-6a5b4c3d2e55",
        "e1",
    ));

    let args = fixture_args(&root, "200ms", "hostile", &[]);
    let mut e = Exporter::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    e.wait_ready(Duration::from_secs(20));
    let ticks = |text: &str| sum(&parse(text), "kepler_exporter_ticks_total", &[]);
    let (status, first) = e.get("/metrics");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(2));
    let (_, later) = e.get("/metrics");
    let samples = parse(&later);
    // About 10 ticks in 2 s: the loop never blocked on a FIFO.
    assert!(
        ticks(&later) >= ticks(&first) + 5.0,
        "ticks {} -> {}",
        ticks(&first),
        ticks(&later)
    );
    // Both refused counters, every tick.
    let refused = errors(&samples, "cgroup", "not_regular");
    assert!(refused >= 2.0 * 5.0, "cgroup not_regular: {refused}");
    assert_eq!(e.get("/healthz").0, 200);
    // Reading /dev/zero to its end would take all memory; a bounded read keeps RSS small.
    let rss = rss_kib(e.child.id());
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
    let status = e
        .terminate(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    let log = e.stderr();
    assert!(log.contains("is a FIFO, not a regular file"), "{log}");
    assert!(
        log.contains("is a character device, not a regular file"),
        "{log}"
    );
}

#[test]
fn a_read_stuck_in_the_kernel_does_not_hold_the_exit_after_sigterm() {
    let test = "a_read_stuck_in_the_kernel_does_not_hold_the_exit_after_sigterm";
    let Some(fake) = FakeNvml::build(test) else {
        return;
    };
    fake.set("device GPU-00000000-0000-0000-0000-000000000001\nwatts 100\n");
    let env = fake.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut e = Exporter::start_env(
        &env,
        &[
            "--gpu",
            "nvml",
            "--energy-source",
            "estimate",
            "--cpu-source",
            "procfs",
            "--no-kube",
            "--interval",
            "200ms",
            "--stop-timeout",
            "2s",
        ],
    );
    e.wait_ready(Duration::from_secs(20));
    // The fake driver re-reads its script on every call with a blocking open: a FIFO without a
    // writer holds the next NVML call, and so the tick, in the kernel.
    let fifo = fake.script().with_extension("fifo");
    mkfifo(&fifo);
    fs::rename(&fifo, fake.script()).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let status = e.terminate(Duration::from_secs(15));
    let took = asked.elapsed();
    let status = status.expect("the exporter did not exit within 15 s of SIGTERM");
    // `--stop-timeout 2s` for the loop, then the exit.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    assert!(took >= Duration::from_secs(2), "exit took {took:?}");
    assert_eq!(status.code(), Some(1), "{status}");
    let log = e.stderr();
    assert!(log.contains("a read of gpu is stuck"), "{log}");
    // Unblock the FIFO's opener (the process is gone; nothing waits any more).
    let _ = fs::remove_file(fake.script());
}

/// `kepler-rs run ARGS` that must fail at start: its exit code and stderr.
fn run_fails(args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kepler-rs"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEPLER_RS_") {
            command.env_remove(name);
        }
    }
    let out = command
        .arg("run")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn settings_out_of_range_exit_2_naming_the_limit() {
    for (args, expected) in [
        (
            vec!["--estimate-max-watts-per-cpu", "1e308"],
            "--estimate-max-watts-per-cpu: 1e308 watts per CPU is out of range (more than 0, at most 1000)",
        ),
        (
            vec!["--estimate-idle-watts-per-cpu", "NaN"],
            "--estimate-idle-watts-per-cpu: NaN watts per CPU is out of range (0 to 1000)",
        ),
        (
            vec!["--gpu-idle-watts", "inf"],
            "--gpu-idle-watts: inf W is out of range (0 to 2000 W)",
        ),
        (
            vec!["--idle-watts", "package=1e9"],
            "--idle-watts: package=1e9 W is out of range (0 to 10000 W)",
        ),
        (
            vec!["--grace-period", "400d"],
            "--grace-period: \"400d\" is out of range (0s to 1day)",
        ),
        (
            vec!["--stop-timeout", "0s"],
            "--stop-timeout: \"0s\" is out of range (100ms to 10m)",
        ),
        (
            vec!["--stop-timeout", "11m"],
            "--stop-timeout: \"11m\" is out of range (100ms to 10m)",
        ),
    ] {
        let (code, stderr) = run_fails(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_yaml_nesting_bomb_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.yaml");
    // 100,000 levels in 200 KB.
    fs::write(
        &bomb,
        format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let (code, stderr) = run_fails(&["--config", bomb.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--config: ") && stderr.contains("nested deeper than 64 levels (line 1)"),
        "{stderr}"
    );
    let web = dir.path().join("web.yaml");
    fs::write(
        &web,
        format!("basic_auth_users: {}\n", "{a: ".repeat(100_000)),
    )
    .unwrap();
    let (code, stderr) = run_fails(&["--web.config.file", web.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nested deeper than 64 levels"), "{stderr}");
}

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, [7u8; 16])
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

fn status_with(port: u16, user: &str, password: &str) -> u16 {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    http(
        port,
        "GET",
        "/metrics",
        &format!("Authorization: Basic {auth}\r\n"),
    )
    .0
}

/// Rewrite `path` in place (same inode and length) and put its modification time back: a change
/// that only SIGHUP, not the file watcher, can notice.
fn rewrite_unnoticed(path: &Path, text: &str) {
    let before = fs::metadata(path).unwrap();
    assert_eq!(before.len(), text.len() as u64);
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .unwrap();
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
}

#[test]
fn sighup_reloads_the_web_config_and_names_a_config_change_that_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yaml");
    let config = dir.path().join("config.yaml");
    let web_text =
        |password: &str| format!("basic_auth_users:\n  prom: '{}'\n", bcrypt_hash(password));
    fs::write(&web, web_text("old-secret")).unwrap();
    fs::write(&config, "interval: 200ms\n").unwrap();
    let mut e = Exporter::start(&[
        "--config",
        config.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
        "--energy-source",
        "estimate",
        "--cpu-source",
        "procfs",
        "--no-kube",
        "--gpu",
        "off",
    ]);
    e.wait_ready(Duration::from_secs(20));
    assert_eq!(status_with(e.port, "prom", "old-secret"), 200);
    assert_eq!(status_with(e.port, "prom", "new-secret"), 401);

    rewrite_unnoticed(&web, &web_text("new-secret"));
    fs::write(&config, "interval: 300ms\n").unwrap();
    // The watcher looks every 2 s and sees nothing: the old password still works.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(status_with(e.port, "prom", "old-secret"), 200);

    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(e.child.id() as i32, libc::SIGHUP) };
    let started = Instant::now();
    while status_with(e.port, "prom", "new-secret") != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload the web config"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status_with(e.port, "prom", "old-secret"), 401);
    // Still serving after a second SIGHUP (it never ends the process).
    // SAFETY: as above.
    unsafe { libc::kill(e.child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_with(e.port, "prom", "new-secret"), 200);

    let status = e.terminate(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
    let log = e.stderr();
    assert_eq!(
        log.matches("SIGHUP: web config and certificates reloaded")
            .count(),
        2,
        "{log}"
    );
    assert!(
        log.contains(
            "the --config file changed since start; its settings take effect only after a restart"
        ),
        "{log}"
    );
}
