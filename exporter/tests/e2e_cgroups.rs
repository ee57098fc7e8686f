//! End to end, as root: real kubelet-like cgroups (cgroupfs layout, two pods), real busy processes held
//! at known duty cycles by CFS quotas, a simulated powercap tree whose counters wrap every few seconds,
//! and the real `kepler-rs` binary scraped over HTTP. It runs on cgroup v2 (the pods only in the
//! cgroup2 hierarchy, the exporter shown only that mount), on v1 and on a hybrid host where the host has
//! those hierarchies, with `--cpu-source cgroup` and with `--cpu-source ebpf`, against the same
//! tolerances.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::cgroups::*;
use common::*;
use std::process::Command;
use std::time::Duration;

/// The variants share the CPU and their duty cycles: run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn cgroup_v2_simulated_rapl_end_to_end() {
    end_to_end(
        "cgroup_v2_simulated_rapl_end_to_end",
        Mode::Modern,
        "cgroup",
        1,
    );
}

#[test]
fn cgroup_v2_simulated_rapl_end_to_end_ebpf() {
    end_to_end(
        "cgroup_v2_simulated_rapl_end_to_end_ebpf",
        Mode::Modern,
        "ebpf",
        2,
    );
}

#[test]
fn cgroup_hybrid_simulated_rapl_end_to_end() {
    end_to_end(
        "cgroup_hybrid_simulated_rapl_end_to_end",
        Mode::Hybrid,
        "cgroup",
        3,
    );
}

#[test]
fn cgroup_hybrid_simulated_rapl_end_to_end_ebpf() {
    end_to_end(
        "cgroup_hybrid_simulated_rapl_end_to_end_ebpf",
        Mode::Hybrid,
        "ebpf",
        4,
    );
}

/// eBPF on a v1-only host places processes through /proc/<pid>/cgroup, which the v1 view of /proc
/// (mountinfo without cgroup2) does not hold: the cgroup source only.
#[test]
fn cgroup_v1_simulated_rapl_end_to_end() {
    end_to_end(
        "cgroup_v1_simulated_rapl_end_to_end",
        Mode::Legacy,
        "cgroup",
        5,
    );
}

/// The whole scenario on `mode`'s hierarchies with `--cpu-source <cpu_source>`; `variant` keeps the
/// cgroup names apart.
fn end_to_end(test: &'static str, mode: Mode, cpu_source: &str, variant: u32) {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(mut cluster) = Cluster::open_mode(test, mode) else {
        return;
    };
    let tag = std::process::id() * 8 + variant;
    let uid_a = format!("aaaaaaaa-0000-4000-8000-{tag:012x}");
    let uid_b = format!("bbbbbbbb-0000-4000-8000-{tag:012x}");
    let cid = |n: u32| format!("{n:08x}{tag:056x}");
    let pod_a = format!("kubepods/burstable/pod{uid_a}");
    let pod_b = format!("kubepods/besteffort/pod{uid_b}");
    let (a1, b1, b2, b3) = (
        format!("{pod_a}/{}", cid(0xa1)),
        format!("{pod_b}/{}", cid(0xb1)),
        format!("{pod_b}/{}", cid(0xb2)),
        format!("{pod_b}/{}", cid(0xb3)),
    );

    for d in [
        "kubepods",
        "kubepods/burstable",
        "kubepods/besteffort",
        &pod_a,
        &pod_b,
        &a1,
        &b1,
        &b2,
    ] {
        cluster.mkdir(d);
    }
    // The quotas are what the test checks: a large CFS weight lets the busy loops reach them even
    // when the machine is shared with other heavy work (the demand stays at 0.8 of one CPU).
    for d in ["kubepods", "kubepods/burstable", "kubepods/besteffort"] {
        cluster.heavy_weight(d);
    }
    cluster.busy(&a1, 0.60);
    cluster.busy(&b1, 0.10);
    cluster.busy(&b2, 0.10);

    let host = SimulatedHost::new(&cluster);
    let mut e = Exporter::start(
        &[
            &host.args()[..],
            &[
                "--interval",
                "1s",
                "--node-name",
                "e2e-node",
                "--grace-period",
                "2s",
                // The simulated power does not follow the load, so learning idle as the lowest power
                // seen would call almost all of it idle: configure idle as an operator would.
                "--idle-watts",
                "package=20,dram=2",
                "--cpu-source",
                cpu_source,
            ],
        ]
        .concat(),
    );
    e.wait_ready(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500)); // let the quotas settle

    // Phase 1: steady state.
    let (_, s1) = scrape_after_tick(&e);
    let (ua1, ub1, busy1) = (
        cluster.usage_ns(&pod_a),
        cluster.usage_ns(&pod_b),
        node_busy_ns(),
    );
    std::thread::sleep(Duration::from_secs(6));
    let (text2, s2) = scrape_after_tick(&e);
    let (ua2, ub2, busy2) = (
        cluster.usage_ns(&pod_a),
        cluster.usage_ns(&pod_b),
        node_busy_ns(),
    );

    assert_eq!(
        label_values(&s2, "kepler_exporter_cpu_source_info", "source"),
        vec![cpu_source]
    );
    assert_eq!(
        label_values(&s2, "kepler_node_cpu_joules_total", "source"),
        vec!["rapl"]
    );
    assert_eq!(
        label_values(&s2, "kepler_node_cpu_joules_total", "node_name"),
        vec!["e2e-node"]
    );
    let ts = |s: &[(Key, f64)]| sum(s, "kepler_exporter_last_tick_timestamp_seconds", &[]);
    let dt = ts(&s2) - ts(&s1);
    for (zone, watts) in [("package", PKG_WATTS), ("dram", DRAM_WATTS)] {
        let z = [("zone", zone)];
        let joules = sum(&s2, "kepler_node_cpu_joules_total", &z)
            - sum(&s1, "kepler_node_cpu_joules_total", &z);
        let truth = watts * dt;
        assert!(
            rel_close(joules, truth, 0.02),
            "{zone}: exporter {joules:.3} J vs true {truth:.3} J over {dt:.3} s (counters wrapped)"
        );
        // One simulated socket: its series is the zone's.
        let socket = [("zone", zone), ("socket", "0")];
        assert!(
            rel_close(
                sum(&s2, "kepler_node_cpu_socket_joules_total", &socket),
                sum(&s2, "kepler_node_cpu_joules_total", &z),
                1e-9
            ),
            "{zone}: socket 0 series differs from the zone's"
        );
    }
    let pod_j = |s: &[(Key, f64)], uid: &str| {
        sum(
            s,
            "kepler_pod_cpu_joules_total",
            &[("pod_id", uid), ("zone", "package")],
        )
    };
    let ea = pod_j(&s2, &uid_a) - pod_j(&s1, &uid_a);
    let eb = pod_j(&s2, &uid_b) - pod_j(&s1, &uid_b);
    let steady_b_over_a = eb / ea;
    let cpu_ratio = (ua2 - ua1) / (ub2 - ub1);
    assert!(ea > 0.0 && eb > 0.0, "pods got no energy: a={ea} b={eb}");
    let active = sum(
        &s2,
        "kepler_node_cpu_active_joules_total",
        &[("zone", "package")],
    ) - sum(
        &s1,
        "kepler_node_cpu_active_joules_total",
        &[("zone", "package")],
    );
    assert!(
        rel_close(active, (PKG_WATTS - 20.0) * dt, 0.02),
        "active {active} J over {dt} s"
    );
    // The pods' share of active energy is their share of the node's busy CPU time (/proc/stat).
    let pods_share = (ea + eb) / active;
    let cpu_share = ((ua2 - ua1) + (ub2 - ub1)) / (busy2 - busy1);
    assert!(
        rel_close(pods_share, cpu_share, 0.10),
        "pods got {pods_share:.3} of active energy, but used {cpu_share:.3} of busy CPU time"
    );
    assert!(
        rel_close(ea / eb, cpu_ratio, 0.05),
        "energy ratio {:.4} vs cgroup CPU-time ratio {cpu_ratio:.4}",
        ea / eb
    );
    assert!(
        rel_close(cpu_ratio, 3.0, 0.25),
        "duty cycles not as configured: ratio {cpu_ratio}"
    );
    assert_conservation(&s1);
    assert_conservation(&s2);
    assert_promtool_clean(test, &text2);

    // Phase 2: a container that is created, burns CPU and is removed between two ticks is never seen by
    // the exporter's walk, yet its CPU time is in the pod's own counter and must be attributed.
    let (_, s3) = scrape_after_tick(&e);
    let (ua3, ub3) = (cluster.usage_ns(&pod_a), cluster.usage_ns(&pod_b));
    cluster.mkdir(&b3);
    // The shell moves itself into the container's cgroups before exec, so the busy loop starts there.
    let join: String = cluster
        .roots()
        .iter()
        .map(|root| format!("echo $$ > {}/cgroup.procs && ", root.join(&b3).display()))
        .collect();
    let script = format!("{join}exec timeout 0.4 sh -c 'while :; do :; done'");
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert_eq!(status.code(), Some(124), "burst did not run to its timeout");
    let burst_ns = cluster.usage_ns(&b3);
    cluster.rmdir(&b3);
    let (_, s4) = scrape_after_tick(&e);
    let (ua4, ub4) = (cluster.usage_ns(&pod_a), cluster.usage_ns(&pod_b));
    assert!(burst_ns > 0.1e9, "burst used only {burst_ns} ns");
    assert!(ub4 - ub3 >= burst_ns, "pod B's counter lacks the burst");
    let ea = pod_j(&s4, &uid_a) - pod_j(&s3, &uid_a);
    let eb = pod_j(&s4, &uid_b) - pod_j(&s3, &uid_b);
    let cpu_ratio = (ub4 - ub3) / (ua4 - ua3);
    assert!(
        rel_close(eb / ea, cpu_ratio, 0.05),
        "interval with a short-lived container: energy B/A {:.4} vs CPU B/A {cpu_ratio:.4} (burst {:.0} ms, steady B/A {steady_b_over_a:.3})",
        eb / ea,
        burst_ns / 1e6
    );
    assert_conservation(&s4);

    // Phase 3: pod B ends; its series stay for the grace period, then its joules move to terminated.
    let b_final = pod_j(&s4, &uid_b);
    for p in cluster.procs.drain(1..).collect::<Vec<_>>() {
        let mut p = p;
        let _ = p.kill();
        let _ = p.wait();
    }
    for d in [&b1, &b2, &pod_b] {
        cluster.rmdir(d);
    }
    std::thread::sleep(Duration::from_secs(5));
    let (_, s5) = scrape_after_tick(&e);
    assert!(
        !label_values(&s5, "kepler_pod_cpu_joules_total", "pod_id").contains(&uid_b),
        "pod B still exported after grace"
    );
    assert!(label_values(&s5, "kepler_pod_cpu_joules_total", "pod_id").contains(&uid_a));
    let terminated = sum(
        &s5,
        "kepler_node_cpu_terminated_pods_joules_total",
        &[("zone", "package")],
    );
    assert!(
        terminated >= b_final * (1.0 - 1e-9),
        "terminated {terminated} < pod B's last {b_final}"
    );
    assert_conservation(&s5);
    let errors = sum(
        &s5,
        "kepler_exporter_source_errors_total",
        &[("source", "rapl")],
    );
    assert_eq!(errors, 0.0, "RAPL errors during the run");

    // Graceful shutdown.
    let status = e
        .terminate(Duration::from_secs(10))
        .expect("exporter did not stop on SIGTERM");
    assert!(status.success(), "exit status {status}");
    let log = e.stderr();
    let chosen = log
        .lines()
        .find(|l| l.contains("cgroup activity source"))
        .unwrap_or_else(|| panic!("no cgroup hierarchy in the log:\n{log}"));
    assert!(
        chosen.contains(mode.counter_file()),
        "{mode:?}: expected {} to be read: {chosen}",
        mode.counter_file()
    );
    drop(host);
}
