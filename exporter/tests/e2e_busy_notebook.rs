//! Regression, as root: a notebook kernel's long computation (a CPU-bound process pinned to one CPU,
//! rarely switched out) in a kubelet-like pod. eBPF mode used to charge a slice only when it ended,
//! so intervals gave the running pod 0 J and the next one more than its time, which the cap at node
//! busy time clipped: a fifth of its energy went to `system`. Run for both CPU sources with the
//! real binary, simulated RAPL and tick-aligned scrapes: the pod's share of active energy must be
//! its share of busy CPU (within 3 %), no interval may give the running pod 0 J, and its watts per
//! unit of CPU share must stay within 10 % from one interval to the next. Then two such pods on two
//! CPUs, one of which stops mid-window.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::cgroups::*;
use common::*;
use std::fs;
use std::time::{Duration, Instant};

/// The variants share the CPUs: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Scraped intervals per window (at the 1 s tick).
const WINDOW: usize = 30;

#[test]
fn busy_notebook_is_charged_every_interval_cgroup() {
    notebook(
        "busy_notebook_is_charged_every_interval_cgroup",
        "cgroup",
        1,
    );
}

#[test]
fn busy_notebook_is_charged_every_interval_ebpf() {
    notebook("busy_notebook_is_charged_every_interval_ebpf", "ebpf", 2);
}

#[test]
fn two_busy_notebooks_one_stopping_cgroup() {
    two_notebooks("two_busy_notebooks_one_stopping_cgroup", "cgroup", 3);
}

#[test]
fn two_busy_notebooks_one_stopping_ebpf() {
    two_notebooks("two_busy_notebooks_one_stopping_ebpf", "ebpf", 4);
}

/// One scrape right after a tick, with the test's own readings of the pods' cgroups and the node.
#[derive(Clone)]
struct Reading {
    ticks: f64,
    active_j: f64,
    pod_j: Vec<f64>,
    pod_watts: Vec<f64>,
    pod_cpu_ns: Vec<f64>,
    busy_ns: f64,
    carried_s: f64,
    clipped_s: f64,
    /// How long after the tick's snapshot the test read the cgroups (seconds).
    delay_s: f64,
    /// Time the hypervisor stole from this machine's CPUs (`/proc/stat`), in nanoseconds.
    steal_ns: f64,
}

/// One interval between two readings.
#[derive(Debug)]
struct Interval {
    active_j: f64,
    pod_j: Vec<f64>,
    pod_watts: Vec<f64>,
    pod_cpu_ns: Vec<f64>,
    busy_ns: f64,
    /// Whether the test read the cgroups within `ALIGNED_S` of both ticks, so that its reference
    /// covers the same interval as the exporter's (on a loaded machine a read can come late), and
    /// the hypervisor stole less than `STEADY_STEAL_NS` meanwhile: eBPF counts the time between
    /// switches, stolen time included, cgroup counters and /proc/stat do not (docs/ebpf.md).
    steady: bool,
}

/// Stolen time above which an interval is not compared alone (one 10 ms tick of /proc/stat).
const STEADY_STEAL_NS: f64 = 10e6;

/// Largest delay between a tick and the test's own reading for the interval to be compared alone.
const ALIGNED_S: f64 = 0.03;

struct Node {
    cluster: Cluster,
    pods: Vec<(String, String)>, // (uid, pod cgroup)
    exporter: Exporter,
    _host: SimulatedHost,
}

/// `pods` pods, each with one container running a pinned busy loop on the CPU given, and the
/// exporter with `--cpu-source cpu_source` over simulated RAPL.
fn start(test: &str, cpu_source: &str, variant: u32, cpus: &[usize]) -> Option<Node> {
    let mut cluster = Cluster::open(test)?;
    let tag = std::process::id() * 8 + variant;
    // The systemd cgroup driver's layout: its own tree, so that the CFS weights below are not
    // shared with other tests' `kubepods`.
    let qos = "kubepods.slice/kubepods-burstable.slice";
    cluster.mkdir("kubepods.slice");
    cluster.mkdir(qos);
    // A large CFS weight keeps a loop's CPU quiet on a machine shared with other work, as long as
    // a CPU is left for the rest (the exporter among them).
    if cpus.len() < online_cpus() {
        cluster.heavy_weight("kubepods.slice");
        cluster.heavy_weight(qos);
    }
    let mut pods = Vec::new();
    for (i, cpu) in cpus.iter().enumerate() {
        let uid = format!("0b0e{i:04x}-0000-4000-8000-{tag:012x}");
        let pod = format!(
            "{qos}/kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        );
        let container = format!("{pod}/cri-containerd-{:08x}{tag:056x}.scope", 0xc0 + i);
        cluster.mkdir(&pod);
        cluster.mkdir(&container);
        cluster.busy_pinned(&container, *cpu);
        pods.push((uid, pod));
    }
    let host = SimulatedHost::new(&cluster);
    let mut exporter = Exporter::start(
        &[
            &host.args()[..],
            &[
                "--interval",
                "1s",
                "--no-kube",
                "--idle-watts",
                "package=20,dram=2",
                "--cpu-source",
                cpu_source,
            ],
        ]
        .concat(),
    );
    exporter.wait_ready(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    Some(Node {
        cluster,
        pods,
        exporter,
        _host: host,
    })
}

impl Node {
    /// Waits for the next tick (sleeping most of the interval, so the test's own CPU use stays low)
    /// and reads everything at once.
    fn read_after_tick(&self, last_ticks: f64) -> Reading {
        let deadline = Instant::now() + Duration::from_secs(10);
        std::thread::sleep(Duration::from_millis(850));
        loop {
            let (status, text) = self.exporter.get("/metrics");
            assert_eq!(status, 200);
            let s = parse(&text);
            let ticks = sum(&s, "kepler_exporter_ticks_total", &[]);
            if ticks > last_ticks {
                let busy_ns = node_busy_ns();
                let read_at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64();
                let delay_s = read_at - sum(&s, "kepler_exporter_last_tick_timestamp_seconds", &[]);
                let pod_cpu_ns = self
                    .pods
                    .iter()
                    .map(|(_, pod)| self.cluster.usage_ns(pod))
                    .collect();
                let package =
                    |name: &str, uid: &str| sum(&s, name, &[("zone", "package"), ("pod_id", uid)]);
                return Reading {
                    ticks,
                    active_j: sum(
                        &s,
                        "kepler_node_cpu_active_joules_total",
                        &[("zone", "package")],
                    ),
                    pod_j: self
                        .pods
                        .iter()
                        .map(|(uid, _)| package("kepler_pod_cpu_joules_total", uid))
                        .collect(),
                    pod_watts: self
                        .pods
                        .iter()
                        .map(|(uid, _)| package("kepler_pod_cpu_watts", uid))
                        .collect(),
                    pod_cpu_ns,
                    busy_ns,
                    carried_s: sum(
                        &s,
                        "kepler_exporter_cpu_excess_seconds_total",
                        &[("outcome", "carried")],
                    ),
                    clipped_s: sum(
                        &s,
                        "kepler_exporter_cpu_excess_seconds_total",
                        &[("outcome", "clipped")],
                    ),
                    delay_s,
                    steal_ns: node_steal_ns(),
                };
            }
            assert!(Instant::now() < deadline, "no tick within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A reading right after a tick (within `ALIGNED_S`), to start a window: the window's
    /// reference then covers the exporter's intervals.
    fn start(&self) -> Reading {
        let mut r = self.read_after_tick(0.0);
        for _ in 0..10 {
            r = self.read_after_tick(r.ticks);
            if r.delay_s < ALIGNED_S {
                break;
            }
        }
        r
    }

    /// Adds `n` one-tick intervals after `previous` (a scrape that saw two ticks gives no interval
    /// of its own; the window's sums still cover it) and returns the last reading.
    fn extend(&self, mut previous: Reading, n: usize, intervals: &mut Vec<Interval>) -> Reading {
        let (wanted, mut readings) = (intervals.len() + n, 0);
        // The window ends on a reading within `ALIGNED_S` of its tick, like it starts.
        while intervals.len() < wanted || (previous.delay_s >= ALIGNED_S && readings < 3 * n) {
            let r = self.read_after_tick(previous.ticks);
            readings += 1;
            assert!(readings < 3 * n, "too many missed ticks");
            if r.ticks == previous.ticks + 1.0 {
                intervals.push(Interval {
                    active_j: r.active_j - previous.active_j,
                    pod_j: diff(&r.pod_j, &previous.pod_j),
                    pod_watts: r.pod_watts.clone(),
                    pod_cpu_ns: diff(&r.pod_cpu_ns, &previous.pod_cpu_ns),
                    busy_ns: r.busy_ns - previous.busy_ns,
                    steady: r.delay_s < ALIGNED_S
                        && previous.delay_s < ALIGNED_S
                        && r.steal_ns - previous.steal_ns <= STEADY_STEAL_NS,
                });
            }
            previous = r;
        }
        previous
    }
}

/// Time stolen from all CPUs (`/proc/stat`'s `cpu` line, 8th value), in nanoseconds.
fn node_steal_ns() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let ticks: f64 = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(8)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks * 1e9 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// The checks of one pod over a window: its share of active energy against its share of busy CPU
/// time, no interval at 0 J while it ran, and (over the first `steady` intervals, where its load
/// is steady) its energy per unit of CPU share steady from one interval to the next.
fn check_pod(
    label: &str,
    pod: usize,
    intervals: &[Interval],
    steady: usize,
    start: &Reading,
    end: &Reading,
) {
    // Over the window: share of active energy vs share of busy CPU time.
    let energy_share = (end.pod_j[pod] - start.pod_j[pod]) / (end.active_j - start.active_j);
    // Its share of busy CPU per interval, weighted by each interval's active energy: the simulated
    // node draws constant power, so once a pod stops, each busy nanosecond of the other carries more
    // energy (the plain window share only matches while the load is steady).
    let weighted: f64 = intervals
        .iter()
        .filter(|i| i.busy_ns > 0.0)
        .map(|i| i.active_j * i.pod_cpu_ns[pod] / i.busy_ns)
        .sum();
    let weight: f64 = intervals
        .iter()
        .filter(|i| i.busy_ns > 0.0)
        .map(|i| i.active_j)
        .sum();
    let cpu_share = if weight > 0.0 {
        weighted / weight
    } else {
        (end.pod_cpu_ns[pod] - start.pod_cpu_ns[pod]) / (end.busy_ns - start.busy_ns)
    };
    // Per interval: its energy per unit of CPU share (1 when the interval's split is right).
    let ratios: Vec<f64> = intervals[..steady]
        .iter()
        .filter(|i| i.steady)
        .map(|i| (i.pod_j[pod] / i.active_j) / (i.pod_cpu_ns[pod] / i.busy_ns))
        .collect();
    let watts: Vec<f64> = intervals[..steady]
        .iter()
        .map(|i| i.pod_watts[pod])
        .collect();
    let zero = intervals
        .iter()
        .filter(|i| i.pod_cpu_ns[pod] > 0.1e9 && i.pod_j[pod] <= 0.0)
        .count();
    let steps: Vec<f64> = ratios
        .windows(2)
        .map(|w| (w[1] - w[0]).abs() / w[0].max(1e-9))
        .collect();
    let max_step = steps.iter().copied().fold(0.0, f64::max);
    let (w_min, w_max) = (
        watts.iter().copied().fold(f64::INFINITY, f64::min),
        watts.iter().copied().fold(0.0, f64::max),
    );
    eprintln!(
        "{label} pod {pod}: energy share {energy_share:.4}, busy-CPU share {cpu_share:.4} \
         (ratio {:.4}); {} intervals, {zero} at 0 J; energy/CPU share per interval {:.3}..{:.3}, \
         largest step {:.1} % ({} aligned and without steal); watts {w_min:.2}..{w_max:.2}; excess carried {:.3} s, clipped {:.3} s",
        energy_share / cpu_share,
        intervals.len(),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
        max_step * 100.0,
        ratios.len(),
        end.carried_s - start.carried_s,
        end.clipped_s - start.clipped_s,
    );
    assert!(
        cpu_share > 0.05,
        "{label} pod {pod}: the loop barely ran ({cpu_share})"
    );
    assert!(
        rel_close(energy_share, cpu_share, 0.03),
        "{label} pod {pod}: share of active energy {energy_share:.4} vs share of busy CPU {cpu_share:.4}"
    );
    assert_eq!(
        zero, 0,
        "{label} pod {pod}: intervals with 0 J while it ran"
    );
    if ratios.len() < 5 {
        // A hypervisor stealing time in most intervals (or a machine too loaded to read them in
        // time) leaves nothing steady to compare. The share and zero-interval checks above ran;
        // only this part is skipped, and said so in the summary (no host setting can avoid steal).
        report_skip(
            label,
            &format!(
                "per-interval check of pod {pod}: only {} of {steady} intervals read within {ALIGNED_S} s of their ticks with no time stolen",
                ratios.len()
            ),
        );
        return;
    }
    assert!(
        max_step < 0.10,
        "{label} pod {pod}: energy per CPU share jumps {:.1} % between intervals: {ratios:.3?}",
        max_step * 100.0
    );
}

fn notebook(test: &str, cpu_source: &str, variant: u32) {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cpu = online_cpus() - 1;
    let Some(node) = start(test, cpu_source, variant, &[cpu]) else {
        return;
    };
    let start = node.start();
    let mut intervals = Vec::new();
    let end = node.extend(start.clone(), WINDOW, &mut intervals);
    check_pod(cpu_source, 0, &intervals, WINDOW, &start, &end);
}

fn two_notebooks(test: &str, cpu_source: &str, variant: u32) {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if online_cpus() < 2 {
        skip(test, "needs two CPUs");
        return;
    }
    let Some(mut node) = start(test, cpu_source, variant, &[0, 1]) else {
        return;
    };
    let start = node.start();
    let mut intervals = Vec::new();
    let middle = node.extend(start.clone(), WINDOW, &mut intervals);
    let steady = intervals.len();
    // Pod 1's loop stops mid-window: over the whole window both pods keep their shares, and pod 1
    // gets nothing once the interval in which it stopped is over.
    let mut loop1 = node.cluster.procs.remove(1);
    loop1.kill().unwrap();
    loop1.wait().unwrap();
    let stopped = node.read_after_tick(middle.ticks);
    let mut after = Vec::new();
    let end = node.extend(stopped.clone(), WINDOW / 2, &mut after);
    let mut all = intervals;
    all.extend(after);
    let label = format!("{cpu_source}, two pods, pod 1 stopping mid-window");
    check_pod(&label, 0, &all, steady, &start, &end);
    check_pod(&label, 1, &all, steady, &start, &end);
    let late = end.pod_j[1] - stopped.pod_j[1];
    eprintln!("{label}: pod 1 after its loop stopped: {late:.4} J");
    assert!(
        late <= 0.01 * (end.active_j - stopped.active_j),
        "pod 1 got {late} J after its loop stopped"
    );
}
