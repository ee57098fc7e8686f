//! `CgroupActivity::sample` over a TempDir tree of 1,000 pods x 2 containers in the cgroupfs layout
//! (`kubepods/burstable/pod<uid>/<64hex>/cpu.stat`). Includes file I/O (on the TempDir's filesystem,
//! not kernfs); `raw_io_only` reads the same directories and files without parsing or state, so the
//! difference is the walk's own cost; `preopened_pread_only` re-reads counter files kept open, the
//! floor for a walker that does not re-open files by path every tick.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kepler_rs::activity::cgroup::{CgroupActivity, CounterFile};
use kepler_rs::activity::ActivitySource;
use kepler_rs_benches::{container_id, pod_uid, XorShift};
use std::fs;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

const PODS: u64 = 1_000;
const CONTAINERS_PER_POD: u64 = 2;

fn write_cpu_stat(dir: &Path, usec: u64) {
    fs::create_dir_all(dir).expect("create cgroup dir");
    fs::write(
        dir.join("cpu.stat"),
        format!(
            "usage_usec {usec}\nuser_usec {}\nsystem_usec {}\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
            usec / 2,
            usec - usec / 2
        ),
    )
    .expect("write cpu.stat");
}

fn build_tree() -> TempDir {
    let root = TempDir::new().expect("tempdir");
    let mut rng = XorShift::new(9);
    let burstable = root.path().join("kubepods").join("burstable");
    for n in 0..PODS {
        let pod_dir = burstable.join(format!("pod{}", pod_uid(n)));
        let mut pod_usec = 0;
        for i in 0..CONTAINERS_PER_POD {
            let usec = rng.range(1_000, 10_000_000_000);
            pod_usec += usec;
            write_cpu_stat(&pod_dir.join(container_id(n, i).as_str()), usec);
        }
        write_cpu_stat(&pod_dir, pod_usec + 1_000);
    }
    root
}

/// The I/O floor: the same syscalls as the walk (list kubepods, the QoS class and each pod; read
/// each pod's and container's counter) with no parsing, no path bookkeeping and no delta state.
fn raw_io(root: &Path) -> usize {
    let mut bytes = 0;
    for qos in subdirs(&root.join("kubepods")) {
        for pod in subdirs(&qos) {
            for container in subdirs(&pod) {
                bytes += read_len(&container.join("cpu.stat"));
            }
            bytes += read_len(&pod.join("cpu.stat"));
        }
    }
    bytes
}

/// Every counter file of the tree, opened once (what a walker that keeps files open would hold).
fn open_counters(root: &Path) -> Vec<fs::File> {
    let mut files = Vec::new();
    for qos in subdirs(&root.join("kubepods")) {
        for pod in subdirs(&qos) {
            for container in subdirs(&pod) {
                files.extend(fs::File::open(container.join("cpu.stat")));
            }
            files.extend(fs::File::open(pod.join("cpu.stat")));
        }
    }
    files
}

/// Re-reads already-open counter files with `pread` at offset 0: no path lookup, no open/close.
fn pread_all(files: &[fs::File], buf: &mut [u8]) -> usize {
    files.iter().map(|f| f.read_at(buf, 0).unwrap_or(0)).sum()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn read_len(path: &Path) -> usize {
    fs::read_to_string(path).map(|s| s.len()).unwrap_or(0)
}

fn bench_walk(c: &mut Criterion) {
    let tree = build_tree();
    // As the exporter does at start: counter files of every cgroup may stay open.
    let fd_limit = kepler_rs::activity::cgroup::raise_open_file_limit();
    assert!(
        fd_limit > 4_000,
        "RLIMIT_NOFILE {fd_limit}: too low to keep 3,000 files open"
    );
    let mut source = CgroupActivity::with_root(tree.path().to_path_buf(), CounterFile::CpuStat);
    source.sample(); // baseline
    let check = source.sample();
    assert_eq!(check.pods.len() as u64, PODS);
    assert!(check.issues.is_empty(), "{:?}", check.issues);
    // The same walk reading every counter by path (open + read + close), as before.
    let mut by_path = CgroupActivity::with_root(tree.path().to_path_buf(), CounterFile::CpuStat);
    by_path.set_open_file_budget(0);
    by_path.sample();

    let mut group = c.benchmark_group("cgroup_walk_1000_pods_2_containers");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(PODS * (1 + CONTAINERS_PER_POD)));
    group.bench_function("sample", |b| b.iter(|| source.sample()));
    group.bench_function("sample_reopening_by_path", |b| b.iter(|| by_path.sample()));
    group.bench_function("raw_io_only", |b| b.iter(|| raw_io(black_box(tree.path()))));
    // Lower bound for a walker that keeps counter files open between ticks (needs ~3,000 fds here).
    let files = open_counters(tree.path());
    assert_eq!(files.len() as u64, PODS * (1 + CONTAINERS_PER_POD));
    let mut buf = [0u8; 512];
    group.bench_function("preopened_pread_only", |b| {
        b.iter(|| pread_all(black_box(&files), &mut buf))
    });
    group.finish();
}

criterion_group!(benches, bench_walk);
criterion_main!(benches);
