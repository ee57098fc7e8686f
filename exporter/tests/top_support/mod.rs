//! Helpers for the `top` and `report` integration tests: fake pods as real cgroup v1 directories
//! with busy processes held at a duty cycle (removed on drop), and a private tmux server to drive a
//! real terminal. (A real Prometheus is `common::prometheus`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Pods made of real cgroups (kubelet's cgroupfs layout) with busy processes; removed on drop.
pub struct FakePods {
    cpu: PathBuf,
    cpuacct: PathBuf,
    dirs: Vec<String>,
    procs: Vec<Child>,
    tag: u32,
}

impl FakePods {
    /// None when the host has no cgroup v1 cpu/cpuacct hierarchies.
    pub fn new() -> Option<FakePods> {
        let (cpu, cpuacct) = crate::common::v1_mounts()?;
        Some(FakePods {
            cpu,
            cpuacct,
            dirs: Vec::new(),
            procs: Vec::new(),
            tag: std::process::id(),
        })
    }

    /// A pod UID unique to this test process: `prefix` is 8 hex digits.
    pub fn uid(&self, prefix: &str) -> String {
        format!("{prefix}-7070-4000-8000-{:012x}", self.tag)
    }

    fn mkdir(&mut self, rel: &str) {
        for root in [&self.cpu, &self.cpuacct] {
            fs::create_dir_all(root.join(rel)).unwrap_or_else(|e| panic!("mkdir {rel}: {e}"));
        }
        if !self.dirs.iter().any(|d| d == rel) {
            self.dirs.push(rel.to_string());
        }
    }

    /// A besteffort pod with one busy container per duty (fraction of one CPU); the PIDs of its
    /// containers' processes, in order.
    pub fn pod(&mut self, uid: &str, duties: &[f64]) -> Vec<u32> {
        let mut pids = Vec::new();
        for d in ["kubepods", "kubepods/besteffort"] {
            self.mkdir(d);
        }
        let pod = format!("kubepods/besteffort/pod{uid}");
        self.mkdir(&pod);
        for (i, duty) in duties.iter().enumerate() {
            // 64 hex digits, unique per pod and test process, like a containerd ID.
            let container = format!("{pod}/{:08x}{}{:048x}", i + 1, &uid[..8], self.tag);
            self.mkdir(&container);
            let join = [self.cpu.join(&container), self.cpuacct.join(&container)];
            let child = crate::common::duty_cycled_loop(&join[0], 100_000, *duty, &join);
            pids.push(child.id());
            self.procs.push(child);
        }
        pids
    }
}

impl Drop for FakePods {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        // Killed processes leave their cgroup a moment later: retry our own directories briefly.
        // The shared parents (kubepods, besteffort) stay when another test's pods are in them.
        for rel in self.dirs.iter().rev() {
            let shared = rel == "kubepods" || rel == "kubepods/besteffort";
            for root in [&self.cpu, &self.cpuacct] {
                let path = root.join(rel);
                let deadline = Instant::now() + Duration::from_secs(2);
                while fs::remove_dir(&path).is_err()
                    && path.exists()
                    && !shared
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// A temporary --sysfs root whose cgroup mounts point at the host's (the exporter rebases the
/// mountinfo paths onto it) and which has no powercap: the estimate source.
pub fn sysfs_with_host_cgroups() -> tempfile::TempDir {
    let sys = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/sys/fs", sys.path().join("fs")).unwrap();
    sys
}

/// A private tmux server (its own socket) with one session; killed on drop.
pub struct Tmux {
    socket: String,
}

static NEXT_SOCKET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Tmux {
    pub fn installed() -> bool {
        Command::new("tmux").arg("-V").output().is_ok()
    }

    /// A session running `bash --norc` in a `width`x`height` window.
    pub fn start(width: u16, height: u16) -> Tmux {
        let tmux = Tmux {
            // One server per Tmux: tests of one binary run in parallel.
            socket: format!(
                "kepler-rs-test-{}-{}",
                std::process::id(),
                NEXT_SOCKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env PS1='$ ' TERM=xterm-256color bash --norc --noprofile",
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Type `text` literally, then Enter when `enter`.
    pub fn type_text(&self, text: &str, enter: bool) {
        assert!(self
            .run(&["send-keys", "-t", "t", "-l", text])
            .status
            .success());
        if enter {
            self.key("Enter");
        }
    }

    /// A key by tmux's name (`Enter`, `Escape`, `Tab`, `Down`, `q`).
    pub fn key(&self, key: &str) {
        assert!(self.run(&["send-keys", "-t", "t", key]).status.success());
    }

    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "t"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// A pane format variable, e.g. `alternate_on`.
    pub fn pane(&self, variable: &str) -> String {
        let out = self.run(&[
            "display-message",
            "-p",
            "-t",
            "t",
            &format!("#{{{variable}}}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn resize(&self, width: u16, height: u16) {
        let out = self.run(&[
            "resize-window",
            "-t",
            "t",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        assert!(out.status.success(), "tmux resize-window: {out:?}");
    }

    /// Wait until the screen satisfies `ok`; panics with the last screen after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < timeout,
                "waited {timeout:?} for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Tmux {
    /// Close every pane: what happens to a program when its terminal goes away.
    pub fn kill_server(&self) {
        let _ = self.run(&["kill-server"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.kill_server();
    }
}

/// Read a file the shell in tmux wrote, waiting for it to appear.
pub fn wait_file(path: &Path, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(start.elapsed() < timeout, "{} not written", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
