//! Whether the exporter gives memory and file descriptors back and stays quick on a huge node,
//! measured on the real binary with real cgroups (as root) on loopback:
//! 1. connection cycles: open N connections at once (nothing sent), hold them, close them; C times;
//! 2. a huge node: P pods (one container each) as cgroup v2 directories, scraped; then removed;
//! 3. a bigger node, B pods without containers, created and removed (memory after they are gone);
//! 4. a churn soak: pods created and removed continuously for S seconds, scraped every second.
//!
//! Prints RSS (`VmRSS`) before, peak and after each phase, open fds, and scrape latency. Cgroups live
//! under a temporary parent cgroup (`<cgroup2>/kepler-rs-reliability-<pid>`), shown to the exporter as
//! its cgroup2 mount through a `--sysfs`/`--procfs` view, so other cgroups on the host are untouched.
//!
//! Usage (root): `cargo run --release -p kepler-rs-benches --bin reliability -- --bin
//! target/release/kepler-rs [--connections 3000] [--cycles 6] [--pods 10000] [--big-pods 50000]
//! [--soak-seconds 60] [--short] [--env NAME=VALUE]...`. `--short` (CI): 500 connections × 2, 1,000
//! pods, no big node, a 5 s soak. A phase given 0 (`--cycles 0`, `--pods 0`, `--big-pods 0`,
//! `--soak-seconds 0`) is left out. `--env` sets a variable of the exporter's environment (an
//! allocator by `LD_PRELOAD`, its tuning). Exits 1 when a check fails (a scrape over 1 s at the huge node, RSS not back within
//! 10 MiB, fds not back), 2 on a usage error, 3 when it cannot run here (not root, no cgroup2).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    bin: PathBuf,
    connections: usize,
    cycles: usize,
    pods: usize,
    big_pods: usize,
    soak_seconds: u64,
    /// Extra environment of the exporter.
    env: Vec<(String, String)>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        bin: PathBuf::from("target/release/kepler-rs"),
        connections: 3000,
        cycles: 6,
        pods: 10_000,
        big_pods: 50_000,
        soak_seconds: 60,
        env: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--bin" => o.bin = PathBuf::from(value()?),
            "--connections" => o.connections = number(value()?)?,
            "--cycles" => o.cycles = number(value()?)?,
            "--pods" => o.pods = number(value()?)?,
            "--big-pods" => o.big_pods = number(value()?)?,
            "--soak-seconds" => o.soak_seconds = number(value()?)? as u64,
            "--env" => {
                let pair = value()?;
                let (name, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--env {pair}: not NAME=VALUE"))?;
                o.env.push((name.to_string(), v.to_string()));
            }
            "--short" => {
                o.connections = 500;
                o.cycles = 2;
                o.pods = 1000;
                o.big_pods = 0;
                o.soak_seconds = 5;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

/// The cgroup2 mount point, from this process's mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split(' ').next() != Some("cgroup2") {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

/// The temporary parent cgroup and the host view the exporter is given; removed on drop.
struct Node {
    mount: PathBuf,
    parent: PathBuf,
    view: tempfile::TempDir,
    pods: Vec<PathBuf>,
    next_pod: u64,
}

impl Node {
    fn new() -> Result<Node, String> {
        let mount = cgroup2_mount().ok_or("no cgroup2 mount")?;
        let parent = mount.join(format!("kepler-rs-reliability-{}", std::process::id()));
        fs::create_dir(&parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        for d in ["kubepods", "kubepods/burstable"] {
            fs::create_dir(parent.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let view = tempfile::tempdir().map_err(|e| e.to_string())?;
        // --sysfs: the cgroup2 mount point (a host path under /sys) leads to the parent cgroup.
        let rel = mount
            .strip_prefix("/sys")
            .map_err(|_| "cgroup2 is not under /sys")?;
        let shown = view.path().join("sys").join(rel);
        fs::create_dir_all(shown.parent().ok_or("cgroup2 mount at /sys")?)
            .map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(&parent, &shown).map_err(|e| e.to_string())?;
        // --procfs: the host's /proc/stat, and a mountinfo listing only the cgroup2 mount.
        let proc = view.path().join("proc");
        fs::create_dir_all(proc.join("1")).map_err(|e| e.to_string())?;
        let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let kept: String = info
            .lines()
            .filter(|l| {
                let fs_type = l.split_once(" - ").and_then(|(_, p)| p.split(' ').next());
                !matches!(fs_type, Some("cgroup" | "cgroup2")) || fs_type == Some("cgroup2")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(proc.join("1/mountinfo"), kept).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink("/proc/stat", proc.join("stat")).map_err(|e| e.to_string())?;
        Ok(Node {
            mount,
            parent,
            view,
            pods: Vec::new(),
            next_pod: 0,
        })
    }

    fn sysfs(&self) -> PathBuf {
        self.view.path().join("sys")
    }

    fn procfs(&self) -> PathBuf {
        self.view.path().join("proc")
    }

    /// `n` pods, each with `containers` container cgroups.
    fn add_pods(&mut self, n: usize, containers: usize) {
        for _ in 0..n {
            let id = self.next_pod;
            self.next_pod += 1;
            let pod = self.parent.join(format!(
                "kubepods/burstable/pod{:08x}-0000-4000-8000-{:012x}",
                std::process::id(),
                id
            ));
            if fs::create_dir(&pod).is_err() {
                continue;
            }
            for c in 0..containers {
                let _ = fs::create_dir(pod.join(format!("{c:08x}{id:056x}")));
            }
            self.pods.push(pod);
        }
    }

    /// Remove the `n` oldest pods (all with `usize::MAX`).
    fn remove_pods(&mut self, n: usize) {
        let n = n.min(self.pods.len());
        for pod in self.pods.drain(..n) {
            remove_tree(&pod);
        }
    }
}

/// Remove a cgroup directory and the cgroups below it (cgroupfs removes only empty directories).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for Node {
    fn drop(&mut self) {
        self.remove_pods(usize::MAX);
        remove_tree(&self.parent);
        let _ = &self.mount;
    }
}

struct Exporter {
    child: Child,
    port: u16,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporter {
    fn status_kib(&self, key: &str) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// User + system CPU seconds the exporter has used (`/proc/<pid>/stat`, at 100 ticks a second).
    fn cpu_seconds(&self) -> f64 {
        fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1;
                let fields: Vec<&str> = after.split_whitespace().collect();
                let utime: f64 = fields.get(11)?.parse().ok()?;
                let stime: f64 = fields.get(12)?.parse().ok()?;
                Some((utime + stime) / 100.0)
            })
            .unwrap_or(0.0)
    }

    /// Ticks so far (`kepler_exporter_ticks_total`), 0 when the scrape fails.
    fn ticks(&self) -> f64 {
        self.scrape()
            .map(|(b, _)| self.sample(&b, "kepler_exporter_ticks_total"))
            .unwrap_or(0.0)
    }

    /// CPU milliseconds per tick over the next `ticks` ticks (the scrapes that count them included).
    fn cpu_ms_per_tick(&self, ticks: f64) -> f64 {
        let (cpu, first) = (self.cpu_seconds(), self.ticks());
        let _ = self.wait_ticks(ticks, Duration::from_secs(120));
        let (cpu_after, last) = (self.cpu_seconds(), self.ticks());
        if last > first {
            (cpu_after - cpu) * 1e3 / (last - first)
        } else {
            f64::NAN
        }
    }

    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// One scrape on a new connection: status, body and time to the last byte.
    fn scrape(&self) -> Result<(String, Duration), String> {
        let start = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).map_err(|e| e.to_string())?;
        let took = start.elapsed();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        if !reply.starts_with("HTTP/1.1 200") {
            return Err(reply.chars().take(120).collect());
        }
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Ok((body.to_string(), took))
    }

    fn sample(&self, body: &str, name: &str) -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter(|l| l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Wait until the exporter has done `ticks` more ticks (or `timeout`).
    fn wait_ticks(&self, ticks: f64, timeout: Duration) -> Result<(), String> {
        let now = |e: &Exporter| {
            e.scrape()
                .map(|(b, _)| e.sample(&b, "kepler_exporter_ticks_total"))
        };
        let start = Instant::now();
        let first = loop {
            match now(self) {
                Ok(t) => break t,
                Err(_) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => return Err(format!("no answer: {e}")),
            }
        };
        while start.elapsed() < timeout {
            if now(self).unwrap_or(0.0) >= first + ticks {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("not {ticks} ticks in {timeout:?}"))
    }
}

fn start(o: &Options, node: &Node) -> Result<Exporter, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let child = Command::new(&o.bin)
        .args(["run", "--no-kube", "--gpu", "off", "--cpu-source", "cgroup"])
        .args(["--energy-source", "estimate", "--interval", "1s"])
        .args(["--grace-period", "2s"])
        .arg("--sysfs")
        .arg(node.sysfs())
        .arg("--procfs")
        .arg(node.procfs())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("KEPLER_RS_LOG_LEVEL", "warn")
        .envs(o.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", o.bin.display()))?;
    let e = Exporter { child, port };
    e.wait_ticks(2.0, Duration::from_secs(30))?;
    Ok(e)
}

/// What one phase measured.
struct Row {
    phase: String,
    before: f64,
    peak: f64,
    after: f64,
    fds: (usize, usize, usize),
    scrape: String,
}

impl Row {
    /// One line of the table (printed as each phase ends, so a run cut short still shows what it
    /// measured).
    fn print(&self) {
        println!(
            "| {} | {:.1} / {:.1} / {:.1} ({:+.1}) | {} / {} / {} | {} |",
            self.phase,
            self.before,
            self.peak,
            self.after,
            self.after - self.before,
            self.fds.0,
            self.fds.1,
            self.fds.2,
            self.scrape
        );
    }
}

/// Settle: give the exporter `secs` to drop what ended (grace period, reaper, trims) and take RSS.
fn settle(e: &Exporter, secs: u64) -> f64 {
    std::thread::sleep(Duration::from_secs(secs));
    e.rss_mib()
}

fn connection_cycles(o: &Options, e: &Exporter, failures: &mut Vec<String>) -> Row {
    let before = e.rss_mib();
    let fds_before = e.fds();
    let (mut peak, mut fds_peak) = (before, fds_before);
    for _ in 0..o.cycles {
        let held: Vec<TcpStream> = (0..o.connections)
            .filter_map(|_| TcpStream::connect(("127.0.0.1", e.port)).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(e.rss_mib());
        fds_peak = fds_peak.max(e.fds());
        drop(held);
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = settle(e, 3);
    let fds_after = e.fds();
    let scrape = match e.scrape() {
        Ok((_, took)) => format!(
            "answered after the cycles in {:.1} ms",
            took.as_secs_f64() * 1e3
        ),
        Err(err) => {
            failures.push(format!("scrape after the connection cycles: {err}"));
            "failed".into()
        }
    };
    if after - before > 10.0 {
        failures.push(format!(
            "connection cycles: RSS {before:.1} -> {after:.1} MiB"
        ));
    }
    if fds_after > fds_before + 4 {
        failures.push(format!(
            "connection cycles: fds {fds_before} -> {fds_after}"
        ));
    }
    Row {
        phase: format!(
            "{} × {} connections opened, held 0.5 s, closed",
            o.cycles, o.connections
        ),
        before,
        peak,
        after,
        fds: (fds_before, fds_peak, fds_after),
        scrape,
    }
}

/// A node of `pods` pods (`containers` each): scraped 5 times after two ticks, then removed.
fn huge_node(
    e: &Exporter,
    node: &mut Node,
    pods: usize,
    containers: usize,
    check_latency: bool,
    failures: &mut Vec<String>,
) -> Row {
    let before = e.rss_mib();
    let fds_before = e.fds();
    let made = Instant::now();
    node.add_pods(pods, containers);
    let made = made.elapsed();
    let _ = e.wait_ticks(2.0, Duration::from_secs(120));
    let cpu_per_tick = e.cpu_ms_per_tick(5.0);
    let mut peak = e.rss_mib();
    let mut fds_peak = e.fds();
    let mut slowest = Duration::ZERO;
    let mut first = None;
    let mut series = 0.0;
    let mut bytes = 0;
    for _ in 0..5 {
        match e.scrape() {
            Ok((body, took)) => {
                slowest = slowest.max(took);
                first.get_or_insert(took);
                series = e.sample(&body, "kepler_exporter_series");
                bytes = body.len();
            }
            Err(err) => failures.push(format!("scrape at {pods} pods: {err}")),
        }
        peak = peak.max(e.rss_mib());
        fds_peak = fds_peak.max(e.fds());
        std::thread::sleep(Duration::from_millis(300));
    }
    node.remove_pods(usize::MAX);
    // Grace period 2 s, then the series go; a few ticks to drop and trim.
    let _ = e.wait_ticks(5.0, Duration::from_secs(60));
    let after = settle(e, 2);
    let fds_after = e.fds();
    if check_latency && slowest > Duration::from_secs(1) {
        failures.push(format!("{pods} pods: slowest scrape {slowest:?}"));
    }
    if check_latency && peak > 100.0 {
        failures.push(format!("{pods} pods: peak RSS {peak:.1} MiB"));
    }
    if after - before > 10.0 {
        failures.push(format!(
            "{pods} pods gone: RSS {before:.1} -> {after:.1} MiB"
        ));
    }
    Row {
        phase: format!(
            "{pods} pods × {containers} containers (cgroups made in {:.1} s), then removed",
            made.as_secs_f64()
        ),
        before,
        peak,
        after,
        fds: (fds_before, fds_peak, fds_after),
        scrape: format!(
            "{series} series, {:.1} MB; first / slowest of 5 scrapes {:.0} / {:.0} ms; {cpu_per_tick:.1} ms CPU per tick",
            bytes as f64 / 1e6,
            first.unwrap_or_default().as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3
        ),
    }
}

/// Pods created and removed continuously (each lives about 5 s), scraped every second.
fn churn(o: &Options, e: &Exporter, node: &mut Node, failures: &mut Vec<String>) -> Row {
    let before = e.rss_mib();
    let fds_before = e.fds();
    let (mut peak, mut fds_peak) = (before, fds_before);
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut created = 0;
    let mut last_scrape = Instant::now();
    while start.elapsed() < Duration::from_secs(o.soak_seconds) {
        node.add_pods(10, 1);
        created += 10;
        if node.pods.len() > 100 {
            node.remove_pods(node.pods.len() - 100);
        }
        if last_scrape.elapsed() >= Duration::from_secs(1) {
            last_scrape = Instant::now();
            match e.scrape() {
                Ok((_, took)) => latencies.push(took),
                Err(err) => failures.push(format!("scrape during churn: {err}")),
            }
            peak = peak.max(e.rss_mib());
            fds_peak = fds_peak.max(e.fds());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    node.remove_pods(usize::MAX);
    let _ = e.wait_ticks(5.0, Duration::from_secs(60));
    let after = settle(e, 2);
    let fds_after = e.fds();
    latencies.sort();
    let at = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p) as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    if after - before > 10.0 {
        failures.push(format!("churn: RSS {before:.1} -> {after:.1} MiB"));
    }
    if fds_after > fds_before + 4 {
        failures.push(format!("churn: fds {fds_before} -> {fds_after}"));
    }
    Row {
        phase: format!(
            "churn soak {} s: {created} pods made and removed (about 100 alive)",
            o.soak_seconds
        ),
        before,
        peak,
        after,
        fds: (fds_before, fds_peak, fds_after),
        scrape: format!(
            "{} scrapes, p50 / max {:.1} / {:.1} ms",
            latencies.len(),
            at(0.5),
            at(1.0)
        ),
    }
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("reliability: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("reliability: needs root (creates cgroups)");
        std::process::exit(3);
    }
    let mut node = match Node::new() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("reliability: cannot make the cgroup tree: {e}");
            std::process::exit(3);
        }
    };
    let e = match start(&o, &node) {
        Ok(e) => e,
        Err(err) => {
            eprintln!("reliability: {err}");
            std::process::exit(1);
        }
    };
    let mut failures = Vec::new();
    let rss_start = e.rss_mib();
    println!("idle node: {:.2} ms CPU per tick", e.cpu_ms_per_tick(5.0));
    println!("| phase | RSS before / peak / after (MiB) | fds before / peak / after | scrapes |");
    println!("|---|---|---|---|");
    if o.cycles > 0 {
        connection_cycles(&o, &e, &mut failures).print();
    }
    if o.pods > 0 {
        huge_node(&e, &mut node, o.pods, 1, true, &mut failures).print();
    }
    if o.big_pods > 0 {
        huge_node(&e, &mut node, o.big_pods, 0, false, &mut failures).print();
    }
    if o.soak_seconds > 0 {
        churn(&o, &e, &mut node, &mut failures).print();
    }
    println!(
        "\nexporter RSS at start {rss_start:.1} MiB, at the end {:.1} MiB; peak (VmHWM) {:.1} MiB",
        e.rss_mib(),
        e.status_kib("VmHWM:") as f64 / 1024.0
    );
    drop(e);
    drop(node);
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("reliability: {f}");
        }
        std::process::exit(1);
    }
}
