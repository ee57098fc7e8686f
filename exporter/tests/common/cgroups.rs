//! Real cgroups for end-to-end tests (as root): kubelet-like pod and container cgroups on cgroup v2, v1
//! or both (hybrid), busy processes held at duty cycles by CFS quotas, the host as the exporter should
//! see it in each mode, a simulated powercap tree whose counters wrap, and the scrape helpers and
//! conservation checks the e2e tests share.

use super::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PKG_WATTS: f64 = 50.0;
pub const DRAM_WATTS: f64 = 5.0;
pub const PKG_RANGE_UJ: u64 = 150_000_000; // wraps every 3 s at 50 W
pub const DRAM_RANGE_UJ: u64 = 10_000_000; // wraps every 2 s at 5 W

/// Where the test's pods live and which cgroup mounts the exporter is shown (the three host kinds of
/// vector's cgroups source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// cgroup v1: pods in the v1 `cpu` and `cpuacct` hierarchies; the exporter sees no cgroup2 mount.
    Legacy,
    /// The host as it is on a hybrid node: pods in v1 `cpu`/`cpuacct` and in the cgroup2 hierarchy
    /// (runc joins both); the exporter reads the host's own mountinfo.
    Hybrid,
    /// cgroup v2 (current distributions, MicroK8s): pods in the cgroup2 hierarchy; the exporter sees
    /// only the cgroup2 mount.
    Modern,
}

impl Mode {
    /// The counter file the exporter should read in this mode.
    pub fn counter_file(self) -> &'static str {
        match self {
            Mode::Legacy | Mode::Hybrid => "cpuacct.usage",
            Mode::Modern => "cpu.stat",
        }
    }
}

/// Where CFS quotas and weights are written.
#[derive(Debug, Clone)]
enum Quota {
    /// v1 `cpu` hierarchy: `cpu.cfs_quota_us`, `cpu.shares`.
    V1(PathBuf),
    /// The cgroup2 hierarchy with its `cpu` controller: `cpu.max`, `cpu.weight`.
    V2(PathBuf),
}

/// Cgroups and processes made by the test, removed on drop (also when an assertion fails).
pub struct Cluster {
    pub mode: Mode,
    /// The hierarchy whose counters the test reads (v1 `cpuacct`, or cgroup2).
    usage_root: PathBuf,
    quota: Quota,
    /// Every hierarchy a container joins.
    roots: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>, // relative, creation order
    pub procs: Vec<Child>,
}

impl Cluster {
    /// The host's own layout: hybrid where it has v1 `cpu` and `cpuacct` and a cgroup2 mount, v1
    /// where it has no cgroup2 mount, else cgroup v2.
    pub fn open(test: &str) -> Option<Cluster> {
        let mode = match (v1_mounts().is_some(), v2_mount().is_some()) {
            (true, true) => Mode::Hybrid,
            (true, false) => Mode::Legacy,
            (false, _) => Mode::Modern,
        };
        Cluster::open_mode(test, mode)
    }

    /// The hierarchies for `mode`, or `None` after printing why it skips (failing instead under
    /// `KEPLER_RS_REQUIRE_PRIVILEGED=1`): it needs root, the mode's hierarchies, and a `cpu` controller
    /// to hold duty cycles (v2's, or on a hybrid host v1's).
    pub fn open_mode(test: &str, mode: Mode) -> Option<Cluster> {
        if !privileged(test, "creates cgroups and moves processes into them") {
            return None;
        }
        let v1 = v1_mounts();
        let v2 = v2_mount();
        let cluster = match (mode, v1, v2) {
            (Mode::Legacy, Some((cpu, cpuacct)), _) => Cluster::new(
                mode,
                cpuacct.clone(),
                Quota::V1(cpu.clone()),
                vec![cpu, cpuacct],
            ),
            (Mode::Hybrid, Some((cpu, cpuacct)), Some(unified)) => Cluster::new(
                mode,
                cpuacct.clone(),
                Quota::V1(cpu.clone()),
                vec![cpu, cpuacct, unified],
            ),
            (Mode::Modern, v1, Some(unified)) => {
                let quota = if v2_offers_cpu(&unified) {
                    Quota::V2(unified.clone())
                } else if let Some((cpu, _)) = v1 {
                    // A hybrid host binds the cpu controller to v1: the quota is held there, in a
                    // hierarchy the exporter is not shown.
                    Quota::V1(cpu)
                } else {
                    skip(test, "no cpu controller (v1 or v2) to hold duty cycles");
                    return None;
                };
                let mut roots = vec![unified.clone()];
                if let Quota::V1(cpu) = &quota {
                    roots.push(cpu.clone());
                }
                Cluster::new(mode, unified, quota, roots)
            }
            (Mode::Legacy, None, _) | (Mode::Hybrid, None, _) => {
                skip(test, "needs cgroup v1 cpu and cpuacct hierarchies");
                return None;
            }
            (Mode::Hybrid, Some(_), None) | (Mode::Modern, _, None) => {
                skip(test, "needs a cgroup2 mount");
                return None;
            }
        };
        Some(cluster)
    }

    fn new(mode: Mode, usage_root: PathBuf, quota: Quota, roots: Vec<PathBuf>) -> Cluster {
        Cluster {
            mode,
            usage_root,
            quota,
            roots,
            dirs: Vec::new(),
            procs: Vec::new(),
        }
    }

    /// Every hierarchy a container joins.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots.clone()
    }

    /// A `--procfs` root showing the exporter this mode's host: `stat` is the host's, and
    /// `1/mountinfo` lists only the mode's cgroup mounts. `None` in hybrid mode: the host's /proc.
    /// Processes are not there: only for CPU sources that place them by cgroup (cgroup; eBPF on v2).
    pub fn procfs_view(&self, dir: &Path) -> Option<PathBuf> {
        let keep_fs = match self.mode {
            Mode::Hybrid => return None,
            Mode::Legacy => "cgroup",
            Mode::Modern => "cgroup2",
        };
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let lines: String = info
            .lines()
            .filter(|line| {
                let fs_type = line
                    .split_once(" - ")
                    .and_then(|(_, post)| post.split(' ').next());
                !matches!(fs_type, Some("cgroup" | "cgroup2")) || fs_type == Some(keep_fs)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        fs::create_dir_all(dir.join("1")).unwrap();
        fs::write(dir.join("1/mountinfo"), lines).unwrap();
        std::os::unix::fs::symlink("/proc/stat", dir.join("stat")).unwrap();
        Some(dir.to_path_buf())
    }

    /// A large CFS weight for `rel`, so its busy loops reach their quotas on a shared machine.
    pub fn heavy_weight(&self, rel: &str) {
        let _ = match &self.quota {
            Quota::V1(cpu) => fs::write(cpu.join(rel).join("cpu.shares"), "262144"),
            Quota::V2(root) => {
                enable_cpu_controller(root, rel);
                fs::write(root.join(rel).join("cpu.weight"), "10000")
            }
        };
    }

    pub fn mkdir(&mut self, rel: &str) {
        for root in &self.roots {
            fs::create_dir_all(root.join(rel)).unwrap_or_else(|e| panic!("mkdir {rel}: {e}"));
        }
        self.dirs.push(PathBuf::from(rel));
    }

    /// A busy loop in `rel`, limited to `duty` of one CPU by a CFS quota (10 ms period).
    pub fn busy(&mut self, rel: &str, duty: f64) {
        let join: Vec<PathBuf> = self.roots.iter().map(|root| root.join(rel)).collect();
        let child = match &self.quota {
            Quota::V1(cpu) => duty_cycled_loop(&cpu.join(rel), 10_000, duty, &join),
            Quota::V2(root) => {
                enable_cpu_controller(root, rel);
                let quota = (duty * 10_000.0) as u64;
                fs::write(root.join(rel).join("cpu.max"), format!("{quota} 10000")).unwrap();
                busy_loop_in(&join)
            }
        };
        self.procs.push(child);
    }

    /// An unlimited busy loop in `rel` (no CFS quota), pinned to `cpu`: a notebook kernel's long
    /// computation. Returns its pid.
    pub fn busy_pinned(&mut self, rel: &str, cpu: usize) -> u32 {
        if let Quota::V1(root) = &self.quota {
            fs::write(root.join(rel).join("cpu.cfs_quota_us"), "-1").unwrap();
        }
        let join: Vec<PathBuf> = self.roots.iter().map(|root| root.join(rel)).collect();
        let child = busy_loop_in(&join);
        let pid = child.id();
        pin_to_cpu(pid, cpu);
        self.procs.push(child);
        pid
    }

    pub fn attach(&self, rel: &str, pid: u32) {
        for root in &self.roots {
            fs::write(root.join(rel).join("cgroup.procs"), pid.to_string()).unwrap();
        }
    }

    /// CPU time of `rel` and its descendants, in nanoseconds.
    pub fn usage_ns(&self, rel: &str) -> f64 {
        let dir = self.usage_root.join(rel);
        match self.mode {
            Mode::Legacy | Mode::Hybrid => read_number(&dir.join("cpuacct.usage")),
            Mode::Modern => {
                let stat = fs::read_to_string(dir.join("cpu.stat")).unwrap();
                let usec: f64 = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .unwrap_or_else(|| panic!("{}: no usage_usec", dir.display()))
                    .trim()
                    .parse()
                    .unwrap();
                usec * 1e3
            }
        }
    }

    /// Removes `rel` in every hierarchy, waiting briefly for killed processes to leave it.
    pub fn rmdir(&mut self, rel: &str) {
        for root in &self.roots {
            remove_cgroup(&root.join(rel));
        }
        self.dirs.retain(|d| d != Path::new(rel));
    }

    pub fn kill_all(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        self.procs.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        for rel in self.dirs.clone().iter().rev() {
            for root in &self.roots {
                remove_cgroup(&root.join(rel));
            }
        }
    }
}

/// Whether the cgroup2 root offers the `cpu` controller (pure v2 hosts; not hybrid ones).
fn v2_offers_cpu(root: &Path) -> bool {
    fs::read_to_string(root.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|name| name == "cpu"))
}

/// Enables the v2 `cpu` controller for `rel`: `+cpu` in the subtree_control of the root and of each
/// ancestor of `rel` (none of them holds processes).
fn enable_cpu_controller(root: &Path, rel: &str) {
    let mut dir = root.to_path_buf();
    let parents: Vec<_> = Path::new(rel).components().collect();
    for component in
        std::iter::once(None).chain(parents[..parents.len().saturating_sub(1)].iter().map(Some))
    {
        if let Some(c) = component {
            dir.push(c);
        }
        let control = dir.join("cgroup.subtree_control");
        fs::write(&control, "+cpu").unwrap_or_else(|e| panic!("{}: +cpu: {e}", control.display()));
    }
}

fn read_number(path: &Path) -> f64 {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Removes a cgroup directory; killed processes leave it a moment later, so retry for up to 2 s.
fn remove_cgroup(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while fs::remove_dir(path).is_err() && path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The host as the exporter sees it in the end-to-end tests: a `--sysfs` root with the host's cgroup
/// mounts and BTF and a simulated powercap tree (advanced by a thread until drop), and a `--procfs`
/// root showing the cluster's mode.
pub struct SimulatedHost {
    pub sys: PathBuf,
    pub procfs: PathBuf,
    stop: Arc<AtomicBool>,
    updater: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl SimulatedHost {
    pub fn new(cluster: &Cluster) -> SimulatedHost {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        fs::create_dir_all(&sys).unwrap();
        // The cgroup mounts in mountinfo are under /sys/fs: the exporter rebases them onto --sysfs.
        std::os::unix::fs::symlink("/sys/fs", sys.join("fs")).unwrap();
        // The kernel's BTF (/sys/kernel/btf/vmlinux), which the eBPF source loads against.
        std::os::unix::fs::symlink("/sys/kernel", sys.join("kernel")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let updater = start_powercap(&sys, stop.clone());
        let procfs = cluster
            .procfs_view(&dir.path().join("proc"))
            .unwrap_or_else(|| "/proc".into());
        SimulatedHost {
            sys,
            procfs,
            stop,
            updater: Some(updater),
            _dir: dir,
        }
    }

    /// `--sysfs` and `--procfs` for the exporter.
    pub fn args(&self) -> [&str; 4] {
        [
            "--sysfs",
            self.sys.to_str().unwrap(),
            "--procfs",
            self.procfs.to_str().unwrap(),
        ]
    }
}

impl Drop for SimulatedHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(updater) = self.updater.take() {
            let _ = updater.join();
        }
    }
}

/// Advances a simulated powercap tree at constant power, wrapping at max_energy_range_uj.
pub fn start_powercap(sys: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let pkg = sys.join("class/powercap/intel-rapl:0");
    let dram = sys.join("class/powercap/intel-rapl:0/intel-rapl:0:0");
    write_zone(&pkg, "package-0", 0, PKG_RANGE_UJ);
    write_zone(&dram, "dram", 0, DRAM_RANGE_UJ);
    let sub = sys.join("class/powercap/intel-rapl:0:0");
    std::os::unix::fs::symlink(&dram, sub).unwrap();
    let files = [
        (
            fs::OpenOptions::new()
                .write(true)
                .open(pkg.join("energy_uj"))
                .unwrap(),
            PKG_WATTS,
            PKG_RANGE_UJ,
        ),
        (
            fs::OpenOptions::new()
                .write(true)
                .open(dram.join("energy_uj"))
                .unwrap(),
            DRAM_WATTS,
            DRAM_RANGE_UJ,
        ),
    ];
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let t = t0.elapsed().as_secs_f64();
            for (file, watts, range) in &files {
                let uj = (watts * t * 1e6) as u64 % range;
                // Fixed width, written in place: the exporter keeps the file open and preads it.
                file.write_at(format!("{uj:020}\n").as_bytes(), 0).unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Node busy CPU time (user+nice+system+irq+softirq), as the exporter counts it.
pub fn node_busy_ns() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[0] + f[1] + f[2] + f[5] + f[6]) * 1e9 / hz
}

/// Scrape right after a tick so the test's own cgroup reads line up with the exporter's.
pub fn scrape_after_tick(e: &Exporter) -> (String, Vec<(Key, f64)>) {
    let ticks = |s: &[(Key, f64)]| sum(s, "kepler_exporter_ticks_total", &[]);
    let (_, first) = e.get("/metrics");
    let start = ticks(&parse(&first));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = e.get("/metrics");
        assert_eq!(status, 200);
        let samples = parse(&text);
        if ticks(&samples) > start {
            return (text, samples);
        }
        assert!(Instant::now() < deadline, "no tick within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-12)
}

/// Kepler 0.7's families (`--metrics-compat kepler-0.7`), within one scrape: per component and mode,
/// Σ container series = the node series, and the dynamic package energy of the containers of pods
/// is the native containers' energy.
#[allow(dead_code)] // not every test binary that includes this module serves the 0.7 families
pub fn assert_kepler07_conservation(s: &[(Key, f64)]) {
    for component in ["package", "dram", "other"] {
        for mode in ["dynamic", "idle"] {
            let m = [("mode", mode)];
            let node = sum(s, &format!("kepler_node_{component}_joules_total"), &m);
            let containers = sum(s, &format!("kepler_container_{component}_joules_total"), &m);
            assert!(
                rel_close(node, containers, 1e-9),
                "{component} {mode}: node {node} != containers {containers}"
            );
        }
    }
    let idle = sum(
        s,
        "kepler_node_cpu_idle_joules_total",
        &[("zone", "package")],
    );
    assert!(idle > 0.0);
    assert!(rel_close(
        idle,
        sum(s, "kepler_node_package_joules_total", &[("mode", "idle")]),
        1e-9
    ));
}

/// The conservation identities, within one scrape.
pub fn assert_conservation(s: &[(Key, f64)]) {
    for zone in ["package", "dram"] {
        let z = [("zone", zone)];
        let total = sum(s, "kepler_node_cpu_joules_total", &z);
        let idle = sum(s, "kepler_node_cpu_idle_joules_total", &z);
        let active = sum(s, "kepler_node_cpu_active_joules_total", &z);
        let system = sum(s, "kepler_node_cpu_system_joules_total", &z);
        let terminated = sum(s, "kepler_node_cpu_terminated_pods_joules_total", &z);
        let pods = sum(s, "kepler_pod_cpu_joules_total", &z);
        assert!(total > 0.0, "{zone}: no energy");
        assert!(
            rel_close(total, idle + active, 1e-9),
            "{zone}: total {total} != idle {idle} + active {active}"
        );
        assert!(
            rel_close(active, pods + system + terminated, 1e-9),
            "{zone}: active {active} != pods {pods} + system {system} + terminated {terminated}"
        );
        for pod in label_values(s, "kepler_pod_cpu_joules_total", "pod_id") {
            let p = sum(
                s,
                "kepler_pod_cpu_joules_total",
                &[("zone", zone), ("pod_id", &pod)],
            );
            let c = sum(
                s,
                "kepler_container_cpu_joules_total",
                &[("zone", zone), ("pod_id", &pod)],
            );
            assert!(
                rel_close(p, c, 1e-9),
                "{zone} pod {pod}: {p} != containers {c}"
            );
        }
    }
}
