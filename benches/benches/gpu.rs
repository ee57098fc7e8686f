//! GPU tick with 8 scripted devices and 64 GPU processes (8 per device, in 32 pods): the pure model
//! alone (`consumers` + `attribute_gpu`), and the whole `GpuMonitor::tick` + snapshot, which adds the
//! scripted driver calls and reading 64 `/proc/<pid>/cgroup` files from a temporary procfs.

use criterion::{criterion_group, criterion_main, Criterion};
use kepler_rs::gpu::attribution::{attribute_gpu, consumers, Assignment, DeviceInput};
use kepler_rs::gpu::device::{DeviceSampler, ProcessUse};
use kepler_rs::gpu::driver::{RunningProcess, UtilSample};
use kepler_rs::gpu::scripted::{ScriptHandle, ScriptedDevice};
use kepler_rs::gpu::GpuMonitor;
use kepler_rs::idle::IdleEstimator;
use kepler_rs::resource::cgroup_path::parse_proc_cgroup;
use kepler_rs::resource::pods::NoPodMetadata;
use kepler_rs::units::{Joules, Pid};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

const DEVICES: u32 = 8;
const PER_DEVICE: u32 = 8;

fn pid(device: u32, i: u32) -> u32 {
    1000 + device * PER_DEVICE + i
}

/// Two processes per pod: 32 pods over 8 devices.
fn cgroup_line(pid: u32) -> String {
    let pod = (pid - 1000) / 2;
    format!("0::/kubepods/burstable/pod{pod:08x}-0000-4000-8000-000000000000/{pid:064x}\n")
}

fn procfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in 0..DEVICES {
        for i in 0..PER_DEVICE {
            let p = pid(d, i);
            let path = dir.path().join(p.to_string());
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("cgroup"), cgroup_line(p)).unwrap();
        }
    }
    dir
}

fn bench_model(c: &mut Criterion) {
    let owners: HashMap<Pid, _> = (0..DEVICES)
        .flat_map(|d| (0..PER_DEVICE).map(move |i| pid(d, i)))
        .map(|p| (Pid(p), parse_proc_cgroup(&cgroup_line(p))))
        .collect();
    let uses: Vec<Vec<ProcessUse>> = (0..DEVICES)
        .map(|d| {
            (0..PER_DEVICE)
                .map(|i| ProcessUse {
                    pid: Pid(pid(d, i)),
                    sm_util: Some(f64::from(10 + i * 7)),
                    instance: None,
                })
                .collect()
        })
        .collect();
    let none = Assignment::default();
    let mut group = c.benchmark_group("gpu_model");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("8_devices_64_processes", |b| {
        b.iter(|| {
            let inputs: Vec<DeviceInput> = uses
                .iter()
                .enumerate()
                .map(|(slot, procs)| DeviceInput {
                    slot,
                    total: Joules(900.0),
                    idle: Joules(180.0),
                    consumers: consumers(black_box(procs), &owners, &[], &none),
                })
                .collect();
            attribute_gpu(black_box(&inputs))
        })
    });
    group.finish();
}

fn bench_tick(c: &mut Criterion) {
    let proc_dir = procfs();
    let devices = (0..DEVICES)
        .map(|d| {
            let mut dev = ScriptedDevice::new(d, &format!("GPU-{d:08x}"));
            dev.running = (0..PER_DEVICE)
                .map(|i| RunningProcess {
                    pid: Pid(pid(d, i)),
                    mig_instance: None,
                })
                .collect();
            dev
        })
        .collect();
    let script = ScriptHandle::new(devices);
    let sampler = DeviceSampler::discover(Box::new(script.driver())).unwrap();
    let mut gpu = GpuMonitor::new(
        sampler,
        proc_dir.path().to_path_buf(),
        Duration::from_secs(120),
    );
    let mut idle = IdleEstimator::default();
    let mut issues = gpu.tick(None, Duration::ZERO, &mut idle);
    let mut step: u64 = 0;
    // Advance the script as a real second would: 300 J per device, one utilisation sample per process.
    let advance = |step: u64| {
        let mut s = script.lock();
        for d in s.devices.iter_mut() {
            d.energy_mj = Some(step * 300_000);
            let index = d.info.index;
            d.util = Some(
                (0..PER_DEVICE)
                    .map(|i| UtilSample {
                        pid: Pid(pid(index, i)),
                        timestamp_us: step * 1_000_000,
                        sm_util: 10 + i * 7,
                    })
                    .collect(),
            );
        }
    };
    let mut group = c.benchmark_group("gpu_tick");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("8_devices_64_processes", |b| {
        b.iter(|| {
            step += 1;
            advance(step);
            issues = gpu.tick(
                Some(Duration::from_secs(1)),
                Duration::from_secs(step),
                &mut idle,
            );
            black_box(gpu.snapshot(&NoPodMetadata))
        })
    });
    group.finish();
    assert!(issues.is_empty(), "{issues:?}");
    let s = gpu.snapshot(&NoPodMetadata);
    assert_eq!(s.devices.len(), DEVICES as usize);
    assert_eq!(s.pods.len(), 32);
    let pods: f64 = s.pods.iter().map(|p| p.joules.0).sum();
    let active: f64 = s.devices.iter().map(|d| d.active_joules.0).sum();
    assert!((pods - active).abs() <= 1e-9 * active.max(1.0));
}

criterion_group!(benches, bench_model, bench_tick);
criterion_main!(benches);
