//! Real cgroups for end-to-end tests (as root): kubelet-like pod and container cgroups in the v1
//! `cpu`/`cpuacct` hierarchies, busy processes held at duty cycles by CFS quotas, a simulated powercap
//! tree whose counters wrap, and the scrape helpers and conservation checks the e2e tests share.

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

/// Cgroups and processes made by the test, removed on drop (also when an assertion fails).
pub struct Cluster {
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    /// The v2 hierarchy of a hybrid host: runc creates and joins the container's cgroup there too
    /// (the eBPF source resolves processes by their v2 cgroup id).
    pub unified: Option<PathBuf>,
    pub dirs: Vec<PathBuf>, // relative, creation order
    pub procs: Vec<Child>,
}

impl Cluster {
    /// The v1 hierarchies for test `test`, or `None` after printing why it skips (failing instead
    /// under `KEPLER_RS_REQUIRE_PRIVILEGED=1`): it needs root and cgroup v1 `cpu` and `cpuacct`.
    pub fn open(test: &str) -> Option<Cluster> {
        if !privileged(test, "creates cgroups and moves processes into them") {
            return None;
        }
        let Some((cpu, cpuacct)) = v1_mounts() else {
            skip(
                test,
                "needs cgroup v1 cpu and cpuacct hierarchies (hybrid host)",
            );
            return None;
        };
        Some(Cluster {
            cpu,
            cpuacct,
            unified: v2_mount(),
            dirs: Vec::new(),
            procs: Vec::new(),
        })
    }

    /// Every hierarchy a container joins: v1 cpu and cpuacct, and v2 where mounted.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots = vec![self.cpu.clone(), self.cpuacct.clone()];
        roots.extend(self.unified.clone());
        roots
    }

    /// A large CFS weight for `rel`, so its busy loops reach their quotas on a shared machine.
    pub fn heavy_weight(&self, rel: &str) {
        let _ = fs::write(self.cpu.join(rel).join("cpu.shares"), "262144");
    }

    pub fn mkdir(&mut self, rel: &str) {
        for root in &self.roots() {
            fs::create_dir_all(root.join(rel)).unwrap_or_else(|e| panic!("mkdir {rel}: {e}"));
        }
        self.dirs.push(PathBuf::from(rel));
    }

    /// A busy loop in `rel`, limited to `duty` of one CPU by a CFS quota. The 10 ms period keeps each
    /// run short: switch-based accounting (eBPF) attributes a slice when it ends, so a slice running
    /// across a tick lands in the next interval, and with a 100 ms period such a slice could be
    /// 60 ms, several % of an interval's share.
    pub fn busy(&mut self, rel: &str, duty: f64) {
        let join: Vec<PathBuf> = self.roots().iter().map(|root| root.join(rel)).collect();
        let child = duty_cycled_loop(&self.cpu.join(rel), 10_000, duty, &join);
        self.procs.push(child);
    }

    pub fn attach(&self, rel: &str, pid: u32) {
        for root in &self.roots() {
            fs::write(root.join(rel).join("cgroup.procs"), pid.to_string()).unwrap();
        }
    }

    pub fn usage_ns(&self, rel: &str) -> f64 {
        fs::read_to_string(self.cpuacct.join(rel).join("cpuacct.usage"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn rmdir(&mut self, rel: &str) {
        for root in &self.roots() {
            let _ = fs::remove_dir(root.join(rel));
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
            for root in &self.roots() {
                let _ = fs::remove_dir(root.join(rel));
            }
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
