//! `kepler-rs top` in a real terminal: tmux runs the real binary against a real exporter that
//! measures fake pods (real cgroups, as root) and a GPU of the fake `libnvidia-ml.so.1` that two of
//! them share. In an 80x24 terminal the test types keys (sort, filter, switch view, quit), reads the
//! screen with capture-pane (the GPU view's watts and per-pod shares against the script), checks
//! `--once --output json`, that the terminal is restored after `q` and after SIGTERM, that a 20x5
//! terminal gets a message, and that an exporter restart is survived.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod top_support;

use common::fake_nvml::FakeNvml;
use common::*;
use std::time::Duration;
use top_support::*;

const WAIT: Duration = Duration::from_secs(20);
const GPU_UUID: &str = "GPU-11111111-2222-4333-8444-555555555555";
const GPU_NAME: &str = "NVIDIA Fake H100 80GB HBM3";
const GPU_WATTS: f64 = 300.0;
const GPU_IDLE_WATTS: f64 = 50.0;

/// The table's lines: after its heading (the line with WATTS), before the footer.
fn table_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !l.contains("WATTS"))
        .skip(1)
        .take_while(|l| !l.starts_with("q quit") && !l.starts_with("filter"))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Table rows that name one of `names` (pod UID prefixes: an 80-column screen cuts UIDs), in
/// screen order.
fn order<'a>(screen: &str, names: &[&'a str]) -> Vec<&'a str> {
    table_lines(screen)
        .into_iter()
        .filter_map(|line| names.iter().find(|n| line.contains(**n)).copied())
        .collect()
}

/// The numbers at the end of a GPU view row: (watts, share in %). The row ends
/// `WATTS ENERGY UNIT SHARE%`.
fn watts_and_share(line: &str) -> Option<(f64, f64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [.., watts, _energy, _unit, share] = words.as_slice() else {
        return None;
    };
    Some((watts.parse().ok()?, share.strip_suffix('%')?.parse().ok()?))
}

/// The GPU view row whose name starts with `name` (after its indent).
fn gpu_row(screen: &str, name: &str) -> Option<(f64, f64)> {
    table_lines(screen)
        .into_iter()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(watts_and_share)
}

fn close(value: f64, truth: f64, tolerance: f64) -> bool {
    (value - truth).abs() <= tolerance * truth.abs()
}

/// The terminal settings the shell sees: `icanon` and `echo` are back after raw mode.
fn assert_restored(tmux: &Tmux, dir: &std::path::Path, name: &str) {
    let file = dir.join(name);
    tmux.type_text(&format!("stty -a > {}", file.display()), true);
    let stty = wait_file(&file, WAIT);
    assert!(
        stty.contains(" icanon") && stty.contains(" echo") && !stty.contains("-icanon"),
        "terminal left in raw mode ({name}):\n{stty}"
    );
    assert_eq!(
        tmux.pane("alternate_on"),
        "0",
        "still on the alternate screen"
    );
}

#[test]
fn top_in_tmux_against_a_real_exporter() {
    const TEST: &str = "top_in_tmux_against_a_real_exporter";
    if !privileged(TEST, "creates cgroups for fake pods") {
        return;
    }
    if !Tmux::installed() {
        skip(TEST, "tmux not installed (apt-get install tmux)");
        return;
    }
    let Some(mut pods) = FakePods::new() else {
        skip(TEST, "needs cgroup v1 cpu and cpuacct hierarchies");
        return;
    };
    let Some(fake) = FakeNvml::build(TEST) else {
        return;
    };
    // Heavy, medium and light pods: the watts order is known.
    let (heavy, medium, light) = (
        pods.uid("aaaa0001"),
        pods.uid("bbbb0002"),
        pods.uid("cccc0003"),
    );
    let heavy_pids = pods.pod(&heavy, &[0.30, 0.30]);
    let medium_pids = pods.pod(&medium, &[0.20]);
    pods.pod(&light, &[0.03]);
    // One GPU: the heavy pod's first process at 75 % SM, the medium pod's at 25 %; the light pod
    // has none.
    fake.set(&format!(
        "device {GPU_UUID}\nname {GPU_NAME}\nwatts {GPU_WATTS}\ngpu_util 80\n\
         process {} 75\nprocess {} 25\n",
        heavy_pids[0], medium_pids[0]
    ));
    let sys = sysfs_with_host_cgroups();
    let idle = GPU_IDLE_WATTS.to_string();
    let args = [
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "500ms",
        "--node-name",
        "tmux-node",
        "--gpu",
        "nvml",
        "--gpu-idle-watts",
        idle.as_str(),
    ];
    let env = fake.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let start = |port| {
        let mut e = Exporter::start_full(&[], port, &env, &args);
        e.wait_ready(WAIT);
        e
    };
    let exporter = start(free_port());
    let port = exporter.port;

    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(80, 24);
    let bin = env!("CARGO_BIN_EXE_kepler-rs");
    tmux.type_text(
        &format!("{bin} top --url http://127.0.0.1:{port} --refresh 500ms; echo top-exit=$?"),
        true,
    );
    let prefix = |uid: &str| uid[..8].to_string();
    let (h, m, l) = (prefix(&heavy), prefix(&medium), prefix(&light));
    let names = [h.as_str(), m.as_str(), l.as_str()];
    // Sorted by watts (CPU + GPU), largest first (the default); rows show the UID (no Kubernetes
    // names); CPU W and GPU W have their own columns.
    let screen = tmux.wait_for("three pods by watts", WAIT, |s| {
        order(s, &names) == names && s.contains("WATTS▼") && s.contains("GPU W")
    });
    // The header, whole at 80 columns: CPU and GPU power, each labelled.
    let header = screen.lines().nth(1).unwrap();
    assert!(header.starts_with("tmux-node  CPU "), "{screen}");
    let gpu_watts: f64 = header
        .split("GPU ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no GPU power in the header:\n{screen}"));
    assert!(close(gpu_watts, GPU_WATTS, 0.05), "{screen}");
    assert!(screen.contains("energy:estimate"), "{screen}");
    assert!(screen.contains("cpu:cgroup"), "{screen}");
    for view in [
        "Pods",
        "Namespaces",
        "Users",
        "Containers",
        "Processes",
        "GPUs",
    ] {
        assert!(screen.lines().next().unwrap().contains(view), "{screen}");
    }
    assert_eq!(tmux.pane("alternate_on"), "1");

    // Sort by name (key 1): A to Z; again: Z to A.
    tmux.key("1");
    tmux.wait_for("sorted by name", WAIT, |s| {
        order(s, &names) == [h.as_str(), m.as_str(), l.as_str()] && s.contains("POD▲")
    });
    tmux.key("1");
    tmux.wait_for("sorted by name, reversed", WAIT, |s| {
        order(s, &names) == [l.as_str(), m.as_str(), h.as_str()] && s.contains("POD▼")
    });
    // Sort by GPU watts (key 6): the light pod, with no GPU, last.
    tmux.key("6");
    tmux.wait_for("sorted by GPU watts", WAIT, |s| {
        order(s, &names) == [h.as_str(), m.as_str(), l.as_str()] && s.contains("GPU W▼")
    });

    // Filter: only the medium pod's row stays.
    tmux.type_text("/bbbb0002", false);
    tmux.key("Enter");
    let screen = tmux.wait_for("filtered to one pod", WAIT, |s| {
        order(s, &names) == [m.as_str()] && s.contains("filter \"bbbb0002\"")
    });
    assert!(screen.contains("Pods (1 rows)"), "{screen}");
    tmux.key("Escape");
    tmux.wait_for("filter cleared", WAIT, |s| order(s, &names).len() == 3);

    // Views: namespaces (pods without metadata), users (no hub_user data), containers.
    tmux.key("n");
    tmux.wait_for("namespaces view", WAIT, |s| {
        s.contains("(no namespace)") && s.contains("NAMESPACE")
    });
    tmux.key("u");
    tmux.wait_for("users view", WAIT, |s| {
        s.contains("no JupyterHub user data")
    });
    tmux.key("c");
    tmux.wait_for("containers view", WAIT, |s| {
        // Only this test's containers count: other tests on the host may have pods too.
        s.contains("Containers (") && order(s, &names).len() == 4
    });

    // The GPU view: the device at its scripted power, its idle power, and the two pods on it split
    // as the script's SM utilisation (75 : 25), read from the screen.
    tmux.key("g");
    let device = format!("0: {}", &GPU_NAME[..12]);
    let screen = tmux.wait_for("GPU view at the scripted power and split", WAIT, |s| {
        let (Some((watts, _)), Some((idle, _)), Some((_, a)), Some((_, b))) = (
            gpu_row(s, &device),
            gpu_row(s, "(idle)"),
            gpu_row(s, &h),
            gpu_row(s, &m),
        ) else {
            return false;
        };
        close(watts, GPU_WATTS, 0.02)
            && close(idle, GPU_IDLE_WATTS, 0.02)
            && close(a / (a + b), 0.75, 0.05)
    });
    let rows = table_lines(&screen);
    assert!(rows[0].starts_with(&device), "the device first:\n{screen}");
    assert!(rows[0].contains("2 pods"), "{screen}");
    assert!(
        rows[1..].iter().all(|r| r.starts_with("  ")),
        "its rows under it:\n{screen}"
    );
    assert!(!screen.contains(&l), "the light pod has no GPU:\n{screen}");
    assert!(screen.contains("GPUs (5 rows)"), "{screen}");
    // A filter on one pod keeps its device.
    tmux.type_text("/aaaa0001", false);
    tmux.key("Enter");
    tmux.wait_for("GPU view filtered to the heavy pod", WAIT, |s| {
        let rows = table_lines(s);
        rows.len() == 2 && rows[0].starts_with(&device) && rows[1].contains(&h)
    });
    tmux.key("Escape");
    tmux.wait_for("GPU filter cleared", WAIT, |s| s.contains("GPUs (5 rows)"));

    tmux.key("p");
    tmux.key("?");
    tmux.wait_for("help", WAIT, |s| s.contains("sort by the next column"));
    tmux.key("Escape");

    // A tiny terminal gets a message, and the full screen comes back.
    tmux.resize(20, 5);
    tmux.wait_for("too-small message", WAIT, |s| s.contains("terminal too"));
    tmux.resize(80, 24);
    tmux.wait_for("full screen again", WAIT, |s| order(s, &names).len() == 3);

    // --once --output json: the same columns, CPU and GPU apart.
    let once = |view: &str| -> serde_json::Value {
        let out = std::process::Command::new(bin)
            .args(["top", "--once", "--output", "json", "--view", view])
            .args(["--url", &format!("http://127.0.0.1:{port}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let json = once("pods");
    let row = |uid: &str| {
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == uid)
            .cloned()
            .unwrap_or_else(|| panic!("no {uid} in {json}"))
    };
    let (a, b, c) = (row(&heavy), row(&medium), row(&light));
    let gpu = |r: &serde_json::Value| r["gpu_watts"].as_f64().unwrap();
    assert!(close(gpu(&a) / (gpu(&a) + gpu(&b)), 0.75, 0.05), "{a}\n{b}");
    assert_eq!(gpu(&c), 0.0, "{c}");
    for r in [&a, &b, &c] {
        let sum = r["cpu_watts"].as_f64().unwrap() + gpu(r);
        assert!(close(r["watts"].as_f64().unwrap(), sum, 1e-9), "{r}");
    }
    let node = &json["nodes"][0];
    assert!(
        close(node["gpu_watts"].as_f64().unwrap(), GPU_WATTS, 0.05),
        "{node}"
    );
    assert_eq!(node["gpus"][0]["gpu_uuid"], GPU_UUID);
    let json = once("gpus");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows[0]["gpu"]["kind"], "device", "{json}");
    assert!(
        close(rows[0]["watts"].as_f64().unwrap(), GPU_WATTS, 0.05),
        "{json}"
    );
    assert_eq!(
        rows.len(),
        5,
        "device, idle, two pods, unattributed: {json}"
    );

    // The exporter goes away: the error is shown, the last rows stay; it comes back: rows again.
    drop(exporter);
    tmux.wait_for("connection error", WAIT, |s| {
        s.contains("cannot connect to 127.0.0.1") && order(s, &names).len() == 3
    });
    let _restarted = start(port);
    tmux.wait_for("recovered", WAIT, |s| {
        s.lines().any(|l| l.starts_with("ok  ")) && order(s, &names).len() == 3
    });

    // q quits and gives the terminal back.
    tmux.key("q");
    tmux.wait_for("top exited", WAIT, |s| s.contains("top-exit=0"));
    assert_restored(&tmux, dir.path(), "after-q");

    // SIGTERM also gives the terminal back.
    let pidfile = dir.path().join("pid");
    tmux.type_text(
        &format!(
            "sh -c 'echo $$ > {}; exec {bin} top --url http://127.0.0.1:{port}'; echo top-exit=$?",
            pidfile.display()
        ),
        true,
    );
    let pid: i32 = wait_file(&pidfile, WAIT).trim().parse().unwrap();
    tmux.wait_for("second top", WAIT, |s| order(s, &names).len() == 3);
    // SAFETY: kill with a pid this test started and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tmux.wait_for("top exited on SIGTERM", WAIT, |s| {
        s.matches("top-exit=0").count() == 2
    });
    assert_restored(&tmux, dir.path(), "after-sigterm");
}

#[test]
fn top_exits_when_its_terminal_goes_away() {
    // Regression: with SIGHUP caught, crossterm spun on the dead tty (40% CPU, forever) and the
    // process outlived its terminal. The terminal is gone, so there is nothing to restore: exit.
    const TEST: &str = "top_exits_when_its_terminal_goes_away";
    if !Tmux::installed() {
        skip(TEST, "tmux not installed (apt-get install tmux)");
        return;
    }
    let sys = sysfs_with_host_cgroups();
    let mut exporter = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "500ms",
    ]);
    exporter.wait_ready(WAIT);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let tmux = Tmux::start(100, 30);
    let bin = env!("CARGO_BIN_EXE_kepler-rs");
    tmux.type_text(
        &format!(
            "sh -c 'echo $$ > {}; exec {bin} top --url http://127.0.0.1:{} --refresh 200ms'",
            pidfile.display(),
            exporter.port
        ),
        true,
    );
    let pid: i32 = wait_file(&pidfile, WAIT).trim().parse().unwrap();
    tmux.wait_for("top running", WAIT, |s| s.contains("kepler-rs top"));
    tmux.kill_server();
    let start = std::time::Instant::now();
    // SAFETY: signal 0 only checks that the pid exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        if start.elapsed() > Duration::from_secs(5) {
            // SAFETY: clean up the process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("top still running 5 s after its terminal went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
