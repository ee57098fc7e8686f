//! The real `kepler-rs run --gpu nvml` binary, its real NVML path (`gpu::nvml` through nvml-wrapper),
//! against a fake `libnvidia-ml.so.1` (tests/fake_nvml/fake_nvml.c, built here with
//! scripts/fake-nvml.sh and found through LD_LIBRARY_PATH) whose devices, counters, processes and
//! failures follow a script file the test rewrites mid-run. It proves the exporter's side of the NVML
//! boundary (symbols, struct layouts, error mapping, counters, attribution), not the real driver's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::cgroups::*;
use common::fake_nvml::FakeNvml;
use common::*;
use std::fs;
use std::process::Command;
use std::time::Duration;

const UUID0: &str = "GPU-11111111-2222-4333-8444-555555555555";
const UUID1: &str = "GPU-66666666-7777-4888-9999-aaaaaaaaaaaa";
const NAME0: &str = "NVIDIA Fake H100 80GB HBM3";
const NAME1: &str = "NVIDIA Fake T4";
/// Above the largest pid_max (2^22): never a process on this host, so never a pod.
const FOREIGN_PID: u32 = 4_194_400;
const IDLE_W: f64 = 50.0;

/// The pod tests share the kubepods cgroups they create and remove: one at a time.
static CGROUPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl FakeNvml {
    /// `kepler-rs run --gpu nvml` against this library, ticking every 500 ms, with a configured GPU
    /// idle of `IDLE_W`.
    fn start(&self, args: &[&str]) -> Exporter {
        let idle = IDLE_W.to_string();
        let mut all = vec!["--gpu-idle-watts", idle.as_str()];
        all.extend_from_slice(args);
        self.start_learning(&all)
    }

    /// `kepler-rs run --gpu nvml` against this library, ticking every 500 ms; GPU idle is learned
    /// unless `args` configures it.
    fn start_learning(&self, args: &[&str]) -> Exporter {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut all = vec![
            "--gpu",
            "nvml",
            "--energy-source",
            "estimate",
            "--no-kube",
            "--interval",
            "500ms",
        ];
        all.extend_from_slice(args);
        let mut e = Exporter::start_env(&env, &all);
        e.wait_ready(Duration::from_secs(20));
        e
    }

    /// How often `function` answered `rc`, from the call log.
    fn calls(&self, function: &str, rc: i32) -> usize {
        let want = format!("{function} {rc}");
        fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == want)
            .count()
    }
}

fn device(s: &[(Key, f64)], metric: &str, uuid: &str) -> f64 {
    sum(s, metric, &[("gpu_uuid", uuid)])
}

fn tick_ts(s: &[(Key, f64)]) -> f64 {
    sum(s, "kepler_exporter_last_tick_timestamp_seconds", &[])
}

fn gpu_errors(s: &[(Key, f64)], kind: &str) -> f64 {
    sum(
        s,
        "kepler_exporter_source_errors_total",
        &[("source", "gpu"), ("kind", kind)],
    )
}

/// Per device: total = idle + active and active = pods + unattributed + terminated, and each pod's
/// containers sum to the pod.
fn assert_gpu_identities(s: &[(Key, f64)]) {
    let uuids = label_values(s, "kepler_node_gpu_joules_total", "gpu_uuid");
    assert!(!uuids.is_empty(), "no GPU series");
    for uuid in &uuids {
        let m = |name: &str| device(s, name, uuid);
        let total = m("kepler_node_gpu_joules_total");
        let idle = m("kepler_node_gpu_idle_joules_total");
        let active = m("kepler_node_gpu_active_joules_total");
        let unattributed = m("kepler_node_gpu_unattributed_joules_total");
        let terminated = m("kepler_node_gpu_terminated_pods_joules_total");
        let pods = m("kepler_pod_gpu_joules_total");
        assert!(
            rel_close(total, idle + active, 1e-9),
            "{uuid}: total {total} != idle {idle} + active {active}"
        );
        assert!(
            rel_close(active, pods + unattributed + terminated, 1e-9),
            "{uuid}: active {active} != pods {pods} + unattributed {unattributed} + terminated {terminated}"
        );
        for pod in label_values(s, "kepler_pod_gpu_joules_total", "pod_id") {
            let f = [("gpu_uuid", uuid.as_str()), ("pod_id", pod.as_str())];
            let p = sum(s, "kepler_pod_gpu_joules_total", &f);
            let c = sum(s, "kepler_container_gpu_joules_total", &f);
            assert!(
                rel_close(p, c, 1e-9),
                "{uuid} pod {pod}: {p} != containers {c}"
            );
        }
    }
}

/// Rate of `metric` of device `uuid` between two scrapes, by the exporter's own tick timestamps.
fn watts(a: &[(Key, f64)], b: &[(Key, f64)], metric: &str, uuid: &str) -> f64 {
    (device(b, metric, uuid) - device(a, metric, uuid)) / (tick_ts(b) - tick_ts(a))
}

fn two_devices(device1_extra: &str) -> String {
    format!(
        "# device 0: energy counter at 300 W, one process of another PID namespace\n\
         device {UUID0}\nname {NAME0}\nwatts 300\nprocess {FOREIGN_PID} 60\n\
         # device 1: no energy counter (pre-Volta): the exporter integrates its 70 W power reading\n\
         device {UUID1}\nname {NAME1}\nwatts 70\nenergy not_supported\n{device1_extra}"
    )
}

#[test]
fn fake_nvml_devices_counters_power_fallback_and_a_failing_device() {
    let test = "fake_nvml_devices_counters_power_fallback_and_a_failing_device";
    let Some(fake) = FakeNvml::build(test) else {
        return;
    };
    fake.set(&two_devices(""));
    let e = fake.start(&[]);

    let (_, s1) = scrape_after_tick(&e);
    std::thread::sleep(Duration::from_secs(4));
    let (text2, s2) = scrape_after_tick(&e);

    // Identity: index, UUID and product name from NVML, and how each device is measured.
    for (index, uuid, name, method) in [
        ("0", UUID0, NAME0, "energy_counter"),
        ("1", UUID1, NAME1, "power_integral"),
    ] {
        let labels = [("gpu", index), ("gpu_uuid", uuid), ("gpu_name", name)];
        assert_eq!(
            sum(
                &s2,
                "kepler_node_gpu_info",
                &[&labels[..], &[("method", method)]].concat()
            ),
            1.0,
            "{uuid}: no kepler_node_gpu_info{{method=\"{method}\"}}:\n{text2}"
        );
        for metric in [
            "kepler_node_gpu_joules_total",
            "kepler_node_gpu_idle_joules_total",
            "kepler_node_gpu_active_joules_total",
            "kepler_node_gpu_watts",
        ] {
            assert!(
                s2.iter().any(|(k, _)| k.name == metric
                    && labels
                        .iter()
                        .all(|(l, v)| k.labels.get(*l).map(String::as_str) == Some(*v))),
                "{metric} for {uuid} missing:\n{text2}"
            );
        }
    }
    // The counters move at the scripted power, measured over the exporter's own tick timestamps.
    for (uuid, truth) in [(UUID0, 300.0), (UUID1, 70.0)] {
        let w = watts(&s1, &s2, "kepler_node_gpu_joules_total", uuid);
        assert!(
            rel_close(w, truth, 0.02),
            "{uuid}: {w:.2} W, scripted {truth} W"
        );
        let idle = watts(&s1, &s2, "kepler_node_gpu_idle_joules_total", uuid);
        assert!(rel_close(idle, IDLE_W, 0.02), "{uuid}: idle {idle:.2} W");
        let gauge = device(&s2, "kepler_node_gpu_watts", uuid);
        assert!(rel_close(gauge, truth, 0.05), "{uuid}: gauge {gauge} W");
    }
    // Device 0's only process is in no pod this host can see: its active energy is unattributed.
    let active = device(&s2, "kepler_node_gpu_active_joules_total", UUID0);
    assert!(active > 0.0);
    assert!(rel_close(
        device(&s2, "kepler_node_gpu_unattributed_joules_total", UUID0),
        active,
        1e-9
    ));
    assert!(!text2.contains("kepler_pod_gpu_joules_total{"), "{text2}");
    assert_gpu_identities(&s1);
    assert_gpu_identities(&s2);
    assert_eq!(
        sum(&s2, "kepler_exporter_source_up", &[("source", "gpu")]),
        1.0
    );
    assert_eq!(
        sum(
            &s2,
            "kepler_exporter_source_errors_total",
            &[("source", "gpu")]
        ),
        0.0,
        "{text2}"
    );
    assert_promtool_clean(test, &text2);

    // Device 1 starts failing: counted, skipped, and device 0 keeps reporting.
    fake.set(&two_devices("fail unknown\n"));
    std::thread::sleep(Duration::from_secs(1));
    let (_, s3) = scrape_after_tick(&e);
    std::thread::sleep(Duration::from_secs(2));
    let (text4, s4) = scrape_after_tick(&e);
    assert!(
        gpu_errors(&s4, "unknown") > gpu_errors(&s3, "unknown"),
        "{text4}"
    );
    assert_eq!(
        sum(&s4, "kepler_exporter_source_up", &[("source", "gpu")]),
        0.0
    );
    let w0 = watts(&s3, &s4, "kepler_node_gpu_joules_total", UUID0);
    assert!(
        rel_close(w0, 300.0, 0.02),
        "device 0 while device 1 fails: {w0:.2} W"
    );
    assert_eq!(
        device(&s4, "kepler_node_gpu_joules_total", UUID1),
        device(&s3, "kepler_node_gpu_joules_total", UUID1),
        "a failing device's counter does not move"
    );
    assert_gpu_identities(&s4);
    assert_promtool_clean(test, &text4);

    // It recovers: the energy of the failed ticks arrives with its next reading (the power is
    // integrated over the whole gap) and idle covers the gap too.
    fake.set(&two_devices(""));
    std::thread::sleep(Duration::from_secs(1));
    let (text5, s5) = scrape_after_tick(&e);
    let w1 = watts(&s2, &s5, "kepler_node_gpu_joules_total", UUID1);
    assert!(
        rel_close(w1, 70.0, 0.02),
        "device 1 across its failure: {w1:.2} W"
    );
    let idle1 = watts(&s2, &s5, "kepler_node_gpu_idle_joules_total", UUID1);
    assert!(
        rel_close(idle1, IDLE_W, 0.02),
        "device 1 idle across its failure: {idle1:.2} W"
    );
    assert_eq!(
        sum(&s5, "kepler_exporter_source_up", &[("source", "gpu")]),
        1.0
    );
    assert_eq!(
        sum(
            &s5,
            "kepler_exporter_source_errors_total",
            &[("source", "gpu"), ("kind", "counter_anomaly")]
        ),
        0.0,
        "{text5}"
    );
    assert_gpu_identities(&s5);
    // The MIG query ran on the real path (MIG off here) and no call met an uninitialised library.
    assert!(fake.calls("nvmlDeviceGetMigMode", 0) >= 2);
    assert_eq!(fake.calls("nvmlDeviceGetTotalEnergyConsumption", 1), 0);
}

#[test]
fn fake_nvml_driver_restart_reinitialises_and_rebaselines() {
    let test = "fake_nvml_driver_restart_reinitialises_and_rebaselines";
    let Some(fake) = FakeNvml::build(test) else {
        return;
    };
    let one = |extra: &str| format!("{extra}device {UUID0}\nname {NAME0}\nwatts 200\n");
    fake.set(&one(""));
    let e = fake.start(&[]);
    let (_, s1) = scrape_after_tick(&e);

    // The driver goes away: every device is lost and nvmlInit fails until it is back.
    fake.set(&format!(
        "init driver_not_loaded\ndevice {UUID0}\nname {NAME0}\nwatts 200\nfail gpu_lost\n"
    ));
    std::thread::sleep(Duration::from_secs(2));
    let (text2, s2) = scrape_after_tick(&e);
    assert!(gpu_errors(&s2, "gpu_lost") > 0.0, "{text2}");
    assert!(gpu_errors(&s2, "driver") > 0.0, "{text2}");
    assert_eq!(
        sum(&s2, "kepler_exporter_source_up", &[("source", "gpu")]),
        0.0
    );

    // The library initialises again while the GPU still answers "lost": NVML is re-initialised (the
    // old handle shut down) and every device re-enumerated, for as long as the device fails.
    fake.set(&format!(
        "device {UUID0}\nname {NAME0}\nwatts 200\nfail gpu_lost\n"
    ));
    std::thread::sleep(Duration::from_secs(1));
    assert!(fake.calls("nvmlInit_v2", 0) >= 2, "NVML not re-initialised");
    assert!(
        fake.calls("nvmlShutdown", 0) >= 1,
        "old NVML handle not shut down"
    );

    // Back, with its energy counter restarted from 0 (epoch 2): re-baselined.
    fake.set(&one("epoch 2\n"));
    std::thread::sleep(Duration::from_secs(2));
    let (_, s3) = scrape_after_tick(&e);
    std::thread::sleep(Duration::from_secs(3));
    let (text4, s4) = scrape_after_tick(&e);
    assert!(gpu_errors(&s4, "counter_reset") >= 1.0, "{text4}");
    assert_eq!(
        sum(&s4, "kepler_exporter_source_up", &[("source", "gpu")]),
        1.0
    );
    let w = watts(&s3, &s4, "kepler_node_gpu_joules_total", UUID0);
    assert!(rel_close(w, 200.0, 0.02), "after the restart: {w:.2} W");
    // Same series (matched by UUID), still counting up from before the restart.
    assert_eq!(
        label_values(&s4, "kepler_node_gpu_joules_total", "gpu_uuid"),
        [UUID0]
    );
    assert!(
        device(&s4, "kepler_node_gpu_joules_total", UUID0)
            > device(&s1, "kepler_node_gpu_joules_total", UUID0)
    );
    assert_gpu_identities(&s4);
    // nvmlInit: the start, failed tries while down, one success after; the old handle was shut down.
    assert!(fake.calls("nvmlInit_v2", 0) >= 2);
    assert!(fake.calls("nvmlInit_v2", 9) >= 1);
    assert!(fake.calls("nvmlShutdown", 0) >= 1);
    assert_eq!(fake.calls("nvmlShutdown", 1), 0, "shutdown without init");
}

/// Two kubelet-shaped pods with one container each, each holding a real (sleeping) process.
/// The serial lock of the pod tests, the fake library and a cgroup tree to make pods in; `None`
/// (after a SKIP line) where either cannot be had.
fn with_pods(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, FakeNvml, Cluster)> {
    let serial = CGROUPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fake = FakeNvml::build(test)?;
    let cluster = Cluster::open(test)?;
    Some((serial, fake, cluster))
}

struct Pods {
    uid_a: String,
    uid_b: String,
    cid_a: String,
    pid_a: u32,
    pid_b: u32,
}

fn two_pods(cluster: &mut Cluster, variant: u32) -> Pods {
    let tag = std::process::id() * 4 + variant;
    let uid_a = format!("aaaaaaaa-0000-4000-8000-{tag:012x}");
    let uid_b = format!("bbbbbbbb-0000-4000-8000-{tag:012x}");
    let cid = |n: u32| format!("{n:08x}{tag:056x}");
    let pod_a = format!("kubepods/burstable/pod{uid_a}");
    let pod_b = format!("kubepods/besteffort/pod{uid_b}");
    let (ca, cb) = (
        format!("{pod_a}/{}", cid(0xa1)),
        format!("{pod_b}/{}", cid(0xb1)),
    );
    for d in [
        "kubepods",
        "kubepods/burstable",
        "kubepods/besteffort",
        &pod_a,
        &pod_b,
        &ca,
        &cb,
    ] {
        cluster.mkdir(d);
    }
    let mut sleeper = |rel: &str| {
        let child = Command::new("sleep").arg("600").spawn().unwrap();
        let pid = child.id();
        cluster.attach(rel, pid);
        cluster.procs.push(child);
        pid
    };
    let (pid_a, pid_b) = (sleeper(&ca), sleeper(&cb));
    Pods {
        uid_a,
        uid_b,
        cid_a: cid(0xa1),
        pid_a,
        pid_b,
    }
}

#[test]
fn fake_nvml_gpu_energy_follows_processes_into_their_pods() {
    let test = "fake_nvml_gpu_energy_follows_processes_into_their_pods";
    let Some((_serial, fake, mut cluster)) = with_pods(test) else {
        return;
    };
    let Pods {
        uid_a,
        uid_b,
        cid_a,
        pid_a,
        pid_b,
    } = two_pods(&mut cluster, 1);
    let script = |procs: &str| format!("device {UUID0}\nname {NAME0}\nwatts 300\n{procs}");

    // Phase 1: pod A's process is the GPU's only process: pod A gets all of its active energy.
    fake.set(&script(&format!("process {pid_a} 80\n")));
    let e = fake.start(&["--grace-period", "1s"]);
    let (_, s1) = scrape_after_tick(&e);
    std::thread::sleep(Duration::from_secs(3));
    let (text2, s2) = scrape_after_tick(&e);
    let pod = |s: &[(Key, f64)], uid: &str| {
        sum(
            s,
            "kepler_pod_gpu_joules_total",
            &[("pod_id", uid), ("gpu_uuid", UUID0)],
        )
    };
    let active = |s: &[(Key, f64)]| device(s, "kepler_node_gpu_active_joules_total", UUID0);
    let (da, dactive) = (
        pod(&s2, &uid_a) - pod(&s1, &uid_a),
        active(&s2) - active(&s1),
    );
    assert!(dactive > 0.0, "{text2}");
    assert!(
        rel_close(da, dactive, 1e-9),
        "pod A got {da} J of {dactive} J active"
    );
    assert!(
        rel_close(
            dactive / (tick_ts(&s2) - tick_ts(&s1)),
            300.0 - IDLE_W,
            0.02
        ),
        "active power"
    );
    let labels = [
        ("pod_id", uid_a.as_str()),
        ("gpu", "0"),
        ("gpu_uuid", UUID0),
        ("gpu_instance", ""),
    ];
    assert!(
        sum(&s2, "kepler_pod_gpu_joules_total", &labels) > 0.0,
        "{text2}"
    );
    assert_eq!(
        label_values(&s2, "kepler_container_gpu_joules_total", "container_id"),
        [cid_a.as_str()]
    );
    assert_gpu_identities(&s2);
    assert_promtool_clean(test, &text2);

    // Phase 2: both pods compute, at 75 % and 25 % SM utilisation: a 3:1 split, nothing unattributed.
    fake.set(&script(&format!(
        "process {pid_a} 75\nprocess {pid_b} 25\n"
    )));
    std::thread::sleep(Duration::from_secs(1));
    let (_, s3) = scrape_after_tick(&e);
    std::thread::sleep(Duration::from_secs(4));
    let (text4, s4) = scrape_after_tick(&e);
    let (da, db) = (
        pod(&s4, &uid_a) - pod(&s3, &uid_a),
        pod(&s4, &uid_b) - pod(&s3, &uid_b),
    );
    assert!(db > 0.0, "pod B got nothing:\n{text4}");
    assert!(
        rel_close(da / db, 3.0, 0.05),
        "split {:.4}, want 3",
        da / db
    );
    assert!(rel_close(da + db, active(&s4) - active(&s3), 1e-9));
    let unattributed =
        |s: &[(Key, f64)]| device(s, "kepler_node_gpu_unattributed_joules_total", UUID0);
    assert!(unattributed(&s4) - unattributed(&s3) < 1e-9);
    assert_gpu_identities(&s4);
    assert_promtool_clean(test, &text4);

    // Phase 3: pod B's process ends. After the grace period its joules move to terminated_pods.
    fake.set(&script(&format!("process {pid_a} 75\n")));
    std::thread::sleep(Duration::from_secs(3));
    let (text5, s5) = scrape_after_tick(&e);
    assert_eq!(pod(&s5, &uid_b), 0.0, "pod B still exported:\n{text5}");
    let terminated = device(&s5, "kepler_node_gpu_terminated_pods_joules_total", UUID0);
    assert!(
        terminated >= pod(&s4, &uid_b),
        "terminated {terminated} < pod B's {}",
        pod(&s4, &uid_b)
    );
    assert_gpu_identities(&s5);
    assert_promtool_clean(test, &text5);
}

#[test]
fn fake_nvml_mig_instances_share_by_size_and_label_pods() {
    let test = "fake_nvml_mig_instances_share_by_size_and_label_pods";
    let Some((_serial, fake, mut cluster)) = with_pods(test) else {
        return;
    };
    let p = two_pods(&mut cluster, 2);
    // MIG on: a 10 GiB and a 30 GiB instance, pod B's process in the first, pod A's in the second.
    fake.set(&format!(
        "device {UUID0}\nname {NAME0}\nwatts 250\n\
         mig MIG-small 10240\nmig MIG-large 30720\n\
         process {} 0 mig=0\nprocess {} 0 mig=1\n",
        p.pid_b, p.pid_a
    ));
    let e = fake.start(&[]);
    let (_, s1) = scrape_after_tick(&e);
    std::thread::sleep(Duration::from_secs(3));
    let (text2, s2) = scrape_after_tick(&e);
    let pod = |s: &[(Key, f64)], uid: &str, instance: &str| {
        sum(
            s,
            "kepler_pod_gpu_joules_total",
            &[("pod_id", uid), ("gpu_instance", instance)],
        )
    };
    let da = pod(&s2, &p.uid_a, "MIG-large") - pod(&s1, &p.uid_a, "MIG-large");
    let db = pod(&s2, &p.uid_b, "MIG-small") - pod(&s1, &p.uid_b, "MIG-small");
    let active = device(&s2, "kepler_node_gpu_active_joules_total", UUID0)
        - device(&s1, "kepler_node_gpu_active_joules_total", UUID0);
    assert!(db > 0.0, "pod B got nothing in MIG-small:\n{text2}");
    assert!(
        rel_close(da / db, 3.0, 1e-6),
        "split {:.6}, want 3 (30 GiB : 10 GiB)",
        da / db
    );
    assert!(rel_close(da + db, active, 1e-9));
    assert_gpu_identities(&s2);
    assert_promtool_clean(test, &text2);
    // The MIG queries ran on the real path: memory info with nvml-wrapper's struct version accepted,
    // and running processes asked per MIG device handle; utilisation is never asked in MIG mode.
    assert!(fake.calls("nvmlDeviceGetMigDeviceHandleByIndex", 0) >= 2);
    assert!(fake.calls("nvmlDeviceGetMemoryInfo_v2", 0) >= 2);
    assert_eq!(fake.calls("nvmlDeviceGetMemoryInfo_v2", 25), 0);
    assert_eq!(fake.calls("nvmlDeviceGetProcessUtilization", 0), 0);
    assert_eq!(fake.calls("nvmlDeviceGetProcessUtilization", 3), 0);
}

/// A deterministic pseudo-random sequence in [0, 1) (xorshift), so the simulated loads repeat.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The simulated GPU of the idle tests: power = `GPU_IDLE_W` + `GPU_SLOPE_W` × utilisation.
const GPU_IDLE_W: f64 = 80.0;
const GPU_SLOPE_W: f64 = 400.0;

/// Runs one exporter with a learned GPU idle over 60 s of a simulated load, changing utilisation
/// (and power, times `factor`) every second; returns the learned idle from
/// `kepler_node_gpu_idle_watts`.
fn learned_gpu_idle(
    fake: &FakeNvml,
    mut usage: impl FnMut(usize) -> f64,
    mut factor: impl FnMut(usize) -> f64,
) -> f64 {
    let set = |u: f64, f: f64| {
        let watts = (GPU_IDLE_W + GPU_SLOPE_W * u) * f;
        fake.set(&format!(
            "device {UUID0}\nname {NAME0}\nwatts {watts}\ngpu_util {}\n",
            u * 100.0
        ));
    };
    set(usage(0), 1.0);
    let e = fake.start_learning(&[]);
    for t in 1..=60 {
        std::thread::sleep(Duration::from_secs(1));
        set(usage(t), factor(t));
    }
    // The last second is a normal one (a dip's idle is clamped to its energy).
    set(0.5, 1.0);
    std::thread::sleep(Duration::from_millis(1100));
    let (text, s) = scrape_after_tick(&e);
    assert_gpu_identities(&s);
    let w = device(&s, "kepler_node_gpu_idle_watts", UUID0);
    assert!(w > 0.0, "{text}");
    w
}

/// Learned GPU idle on a simulated busy GPU, through the real NVML path: within 5 % of the truth
/// after 60 s, with a quiet phase, never below 30 % utilisation, and with single-interval power
/// spikes and dips of ±50 %. (The three run at once, each with its own fake library.)
#[test]
fn fake_nvml_learned_idle_holds_on_a_busy_gpu() {
    let test = "fake_nvml_learned_idle_holds_on_a_busy_gpu";
    let fakes: Vec<FakeNvml> = (0..3).filter_map(|_| FakeNvml::build(test)).collect();
    if fakes.len() < 3 {
        return;
    }
    let results: Vec<(&str, f64)> = std::thread::scope(|scope| {
        let quiet = scope.spawn(|| {
            let mut rng = Rng(31);
            let w = learned_gpu_idle(
                &fakes[0],
                |t| if t < 20 { 0.0 } else { 0.2 + 0.7 * rng.next() },
                |_| 1.0,
            );
            ("quiet phase", w)
        });
        let busy = scope.spawn(|| {
            let mut rng = Rng(32);
            let w = learned_gpu_idle(&fakes[1], |_| 0.3 + 0.7 * rng.next(), |_| 1.0);
            ("never below 30 %", w)
        });
        let spiky = scope.spawn(|| {
            let (mut rng, mut coin) = (Rng(33), Rng(34));
            let w = learned_gpu_idle(
                &fakes[2],
                |_| rng.next(),
                |t| match (t % 7, coin.next() < 0.5) {
                    (2, true) => 1.5,
                    (2, false) => 0.5,
                    _ => 1.0,
                },
            );
            ("spikes and dips", w)
        });
        [quiet, busy, spiky]
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    for (case, w) in results {
        assert!(
            ((w - GPU_IDLE_W) / GPU_IDLE_W).abs() <= 0.05,
            "{case}: learned GPU idle {w} W, simulated {GPU_IDLE_W} W"
        );
    }
}

/// `kepler-rs report` over a real Prometheus that scraped an exporter with a fake GPU: per pod, the
/// GPU and CPU kWh equal the exporter's own counters over the window within 2 %; with
/// `--include-idle` the lines add up to the node's energy (CPU + GPU) within 2 %; CSV, JSON and
/// Markdown parse.
#[test]
fn report_bills_gpu_energy_from_prometheus() {
    let test = "report_bills_gpu_energy_from_prometheus";
    if !common::prometheus::Prometheus::installed() {
        skip(
            test,
            "prometheus not installed (apt-get install prometheus)",
        );
        return;
    }
    let Some((_serial, fake, mut cluster)) = with_pods(test) else {
        return;
    };
    let Pods {
        uid_a,
        uid_b,
        pid_a,
        pid_b,
        ..
    } = two_pods(&mut cluster, 3);
    fake.set(&format!(
        "device {UUID0}\nname {NAME0}\nwatts 300\ngpu_util 80\nprocess {pid_a} 75\nprocess {pid_b} 25\n"
    ));
    let e = fake.start(&["--grace-period", "600s"]);
    let prom = common::prometheus::Prometheus::start(&[e.port]);
    std::thread::sleep(Duration::from_secs(5));
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let (from, (_, s1)) = (unix_now(), scrape_after_tick(&e));
    // Long enough that a scrape interval at either end of the window stays under 2 %.
    std::thread::sleep(Duration::from_secs(45));
    let (to, (_, s2)) = (unix_now(), scrape_after_tick(&e));
    std::thread::sleep(Duration::from_secs(2)); // the scrape at `to` is in
    let report = |args: &[&str]| common::prometheus::report(&prom, from, to, args);
    let delta =
        |name: &str, filter: &[(&str, &str)]| sum(&s2, name, filter) - sum(&s1, name, filter);
    let csv = report(&["--by", "pod", "--format", "csv"]);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row = |csv: &str, grouping: &str, name: &str| -> Vec<f64> {
        let line = csv
            .lines()
            .find(|l| l.starts_with(&format!("{grouping},{name},")))
            .unwrap_or_else(|| panic!("no {grouping} {name} in:\n{csv}"));
        let fields: Vec<&str> = line.split(',').collect();
        ["cpu_kwh", "gpu_kwh", "kwh"]
            .iter()
            .map(|c| fields[column(c)].parse::<f64>().unwrap() * 3.6e6)
            .collect()
    };
    for uid in [&uid_a, &uid_b] {
        let gpu_truth = delta("kepler_pod_gpu_joules_total", &[("pod_id", uid)]);
        let cpu_truth = delta(
            "kepler_pod_cpu_joules_total",
            &[("pod_id", uid), ("zone", "package")],
        );
        let got = row(&csv, "pod", uid);
        assert!(gpu_truth > 100.0, "pod {uid}: only {gpu_truth} GPU J");
        assert!(
            rel_close(got[1], gpu_truth, 0.02),
            "pod {uid}: GPU {} J vs exporter {gpu_truth} J",
            got[1]
        );
        assert!(
            (got[0] - cpu_truth).abs() <= 0.02 * cpu_truth.max(1.0),
            "pod {uid}: CPU {} J vs exporter {cpu_truth} J",
            got[0]
        );
        assert!(rel_close(got[2], got[0] + got[1], 1e-6));
    }
    // Pod A has three times pod B's SM share, so it ranks first.
    let pods: Vec<&str> = csv
        .lines()
        .filter(|l| l.starts_with("pod,"))
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(pods.first(), Some(&uid_a.as_str()), "{csv}");
    let node_gpu = delta("kepler_node_gpu_joules_total", &[]);
    let node_cpu = delta("kepler_node_cpu_joules_total", &[("zone", "package")]);
    let node = row(&csv, "nodes", "(all nodes)");
    assert!(
        rel_close(node[1], node_gpu, 0.02),
        "{} vs {node_gpu}",
        node[1]
    );
    assert!(
        rel_close(node[0], node_cpu, 0.02),
        "{} vs {node_cpu}",
        node[0]
    );

    // --include-idle: every joule of the node is billed to someone.
    let csv = report(&["--by", "pod", "--format", "csv", "--include-idle"]);
    let mut billed = [0.0; 3];
    for line in csv.lines().filter(|l| l.starts_with("pod,")) {
        let name = line.split(',').nth(1).unwrap();
        for (b, v) in billed.iter_mut().zip(row(&csv, "pod", name)) {
            *b += v;
        }
    }
    let node = row(&csv, "nodes", "(all nodes)");
    for (i, what) in ["CPU", "GPU", "total"].iter().enumerate() {
        assert!(
            rel_close(billed[i], node[i], 0.02),
            "{what}: lines {} J vs node {} J\n{csv}",
            billed[i],
            node[i]
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&report(&["--by", "pod", "--format", "json"])).unwrap();
    assert!(json["node"]["gpu_kwh"].as_f64().unwrap() > 0.0, "{json}");
    assert_eq!(json["groupings"][0]["lines"][0]["name"], uid_a.as_str());
    let md = report(&[
        "--by",
        "pod",
        "--format",
        "markdown",
        "--carbon-intensity",
        "400",
    ]);
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert!(rows.len() >= 4, "{md}");
    for r in rows {
        assert_eq!(r.matches('|').count(), 7, "{r}");
    }
    let table = report(&["--by", "pod"]);
    assert!(table.contains("estimated, not measured"), "{table}");
    assert!(table.contains("GPU kWh"), "{table}");
}
