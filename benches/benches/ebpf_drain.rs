//! Userspace cost of one eBPF tick with 5,000 live processes: batch lookup-and-delete of the
//! per-CPU process map, resolution of every entry (cgroup v2 id cache, steady state) and the sum per
//! pod and container. The map is seeded from userspace before each iteration (not timed), so the
//! bench needs no 5,000 real processes. Needs root (it loads the program); skips otherwise.

use criterion::{criterion_group, criterion_main, Criterion};
use kepler_ebpf_common::{TaskKey, TaskTime, ANCESTOR_LEVELS};
use kepler_rs::activity::ebpf::program::{Drained, LoadedProgram};
use kepler_rs::activity::ebpf::resolve::Resolver;
use kepler_rs::activity::ebpf::{aggregate, OBJECT};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const PROCESSES: u32 = 5_000;
const PODS: usize = 100;

fn drain_5000(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP ebpf_drain: needs root to load the eBPF program");
        return;
    }
    let mut program = match LoadedProgram::load(OBJECT, Path::new("/sys/kernel/btf/vmlinux")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIP ebpf_drain: {e}");
            return;
        }
    };
    // A v2 tree of 100 pods x 2 containers plus a system slice.
    let tmp = tempfile::TempDir::new().unwrap();
    let root = tmp.path().join("cgroup");
    let mut leaves = Vec::new();
    for p in 0..PODS {
        let pod = root.join(format!(
            "kubepods/besteffort/pod{p:08x}-0000-4000-8000-000000000000"
        ));
        for c in 0..2 {
            let dir = pod.join(format!("{:064x}", p * 2 + c + 1));
            std::fs::create_dir_all(&dir).unwrap();
            let ino = |d: &Path| std::fs::metadata(d).unwrap().ino();
            let mut ancestors = [0u64; ANCESTOR_LEVELS];
            ancestors[0] = ino(&root.join("kubepods"));
            ancestors[1] = ino(&root.join("kubepods/besteffort"));
            ancestors[2] = ino(&pod);
            ancestors[3] = ino(&dir);
            leaves.push((ino(&dir), ancestors));
        }
    }
    std::fs::create_dir_all(root.join("system.slice")).unwrap();
    let system = std::fs::metadata(root.join("system.slice")).unwrap().ino();
    leaves.push((system, [system, 0, 0, 0, 0, 0]));
    let mut resolver = Resolver::new(Some(root), tmp.path());
    let cpus = program.possible_cpus();
    let mut drained = Drained::default();

    let mut seed = |program: &mut LoadedProgram| {
        program.drain(&mut drained).unwrap(); // what the live program added meanwhile
        for i in 0..PROCESSES {
            let (cgroup_id, ancestors) = leaves[i as usize % leaves.len()];
            let mut values = vec![TaskTime::default(); cpus];
            values[i as usize % cpus] = TaskTime {
                on_cpu_ns: 1_000_000,
                switches: 10,
                cycles: 0,
                instructions: 0,
                ancestors,
            };
            let key = TaskKey {
                tgid: 1_000_000 + i,
                _pad: 0,
                cgroup_id,
            };
            program.seed(key, values).unwrap();
        }
    };
    let mut out = Drained::default();
    let mut group = c.benchmark_group("ebpf");
    group.sample_size(20);
    group.bench_function("drain_resolve_aggregate_5000_processes", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                seed(&mut program);
                let started = Instant::now();
                program.drain(&mut out).unwrap();
                let pods = aggregate(&mut resolver, &out, false);
                timed += started.elapsed();
                assert!(out.tasks.len() >= PROCESSES as usize);
                assert_eq!(pods.len(), PODS);
            }
            timed
        })
    });
    group.bench_function("drain_only_5000_processes", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                seed(&mut program);
                let started = Instant::now();
                program.drain(&mut out).unwrap();
                timed += started.elapsed();
            }
            timed
        })
    });
    group.finish();
}

criterion_group!(benches, drain_5000);
criterion_main!(benches);
