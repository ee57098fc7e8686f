//! `metrics::encode` over production-shaped snapshots (built through the ledger) with 100 and
//! 1,000 pods of 2 containers each and 2 zones, with and without `--metrics-compat kepler-0.7`.
//! Throughput is the exposition size in bytes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kepler_rs::config::MetricsCompat;
use kepler_rs::metrics::{encode, BuildInfo, Exposition};
use kepler_rs_benches::production_snapshot;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (compat, name) in [
        (MetricsCompat::Off, "pods"),
        (MetricsCompat::Kepler07, "pods_kepler07"),
    ] {
        let exposition = Exposition {
            compat,
            ..Exposition::from(BuildInfo::current())
        };
        for pods in [100usize, 1_000] {
            let snapshot = Arc::new(production_snapshot(pods, 2));
            let text = encode(snapshot.clone(), &exposition).expect("encodes");
            let series = text.lines().filter(|l| !l.starts_with('#')).count();
            eprintln!(
                "encode fixture ({name}): {pods} pods x 2 containers x 2 zones -> {} bytes, {series} series",
                text.len()
            );
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, pods), &snapshot, |b, snapshot| {
                b.iter(|| encode(black_box(snapshot.clone()), &exposition).expect("encodes"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
