//! `kepler-rs top` in a real terminal: tmux runs the real binary against a real exporter that
//! measures fake pods (real cgroups, as root). The test types keys (sort, filter, switch view,
//! quit), reads the screen with capture-pane, and checks the terminal is restored after `q` and
//! after SIGTERM, that a 20x5 terminal gets a message, and that an exporter restart is survived.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod top_support;

use common::*;
use std::time::Duration;
use top_support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Table rows (lines with the node column) that name one of `names`, in screen order.
fn order<'a>(screen: &str, names: &[&'a str]) -> Vec<&'a str> {
    screen
        .lines()
        .filter(|line| line.contains("tmux-node") && !line.contains(" W  ["))
        .filter_map(|line| names.iter().find(|n| line.contains(**n)).copied())
        .collect()
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
    // Heavy, medium and light pods: the watts order is known.
    let (heavy, medium, light) = (
        pods.uid("aaaa0001"),
        pods.uid("bbbb0002"),
        pods.uid("cccc0003"),
    );
    pods.pod(&heavy, &[0.30, 0.30]);
    pods.pod(&medium, &[0.20]);
    pods.pod(&light, &[0.03]);
    let sys = sysfs_with_host_cgroups();
    let args = [
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "500ms",
        "--node-name",
        "tmux-node",
    ];
    let mut exporter = Exporter::start(&args);
    exporter.wait_ready(WAIT);
    let port = exporter.port;

    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(120, 32);
    let bin = env!("CARGO_BIN_EXE_kepler-rs");
    tmux.type_text(
        &format!("{bin} top --url http://127.0.0.1:{port} --refresh 500ms; echo top-exit=$?"),
        true,
    );
    let names = [heavy.as_str(), medium.as_str(), light.as_str()];
    // Sorted by watts, largest first (the default); rows show the UID (no Kubernetes names).
    let screen = tmux.wait_for("three pods by watts", WAIT, |s| {
        order(s, &names) == names && s.contains("WATTS▼")
    });
    assert!(screen.contains("tmux-node"), "{screen}");
    assert!(screen.contains("energy:estimate"), "{screen}");
    assert!(screen.contains("cpu:cgroup"), "{screen}");
    assert_eq!(tmux.pane("alternate_on"), "1");

    // Sort by name (key 1): A to Z; again: Z to A.
    tmux.key("1");
    tmux.wait_for("sorted by name", WAIT, |s| {
        order(s, &names) == [heavy.as_str(), medium.as_str(), light.as_str()] && s.contains("POD▲")
    });
    tmux.key("1");
    tmux.wait_for("sorted by name, reversed", WAIT, |s| {
        order(s, &names) == [light.as_str(), medium.as_str(), heavy.as_str()] && s.contains("POD▼")
    });

    // Filter: only the medium pod's row stays.
    tmux.type_text("/bbbb0002", false);
    tmux.key("Enter");
    let screen = tmux.wait_for("filtered to one pod", WAIT, |s| {
        order(s, &names) == [medium.as_str()] && s.contains("filter \"bbbb0002\"")
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
        let rows = s
            .lines()
            .filter(|l| l.contains("tmux-node") && !l.contains(" W  ["));
        s.contains("Containers (4 rows)") && rows.count() == 4
    });
    tmux.key("p");
    tmux.key("?");
    tmux.wait_for("help", WAIT, |s| s.contains("sort by the next column"));
    tmux.key("Escape");

    // A tiny terminal gets a message, and the full screen comes back.
    tmux.resize(20, 5);
    tmux.wait_for("too-small message", WAIT, |s| s.contains("terminal too"));
    tmux.resize(120, 32);
    tmux.wait_for("full screen again", WAIT, |s| order(s, &names).len() == 3);

    // The exporter goes away: the error is shown, the last rows stay; it comes back: rows again.
    drop(exporter);
    tmux.wait_for("connection error", WAIT, |s| {
        s.contains("cannot connect to 127.0.0.1") && order(s, &names).len() == 3
    });
    let mut restarted = Exporter::start_on(port, &args);
    restarted.wait_ready(WAIT);
    tmux.wait_for("recovered", WAIT, |s| {
        s.lines().any(|l| l.trim() == "ok") && order(s, &names).len() == 3
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
