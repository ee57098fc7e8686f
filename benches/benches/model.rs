//! The energy model without file I/O: `attribution::attribute` alone at 100 / 1,000 / 10,000
//! containers, and one whole tick for 1,000 containers (idle estimate, attribution, ledger, series,
//! snapshot) with its parts measured separately.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kepler_rs::attribution::{attribute, ActivityInput};
use kepler_rs::resource::pods::NoPodMetadata;
use kepler_rs_benches::{node_cpu, pods_with_containers, zone_inputs, TickModel, XorShift};
use std::hint::black_box;
use std::time::Duration;

fn bench_attribute(c: &mut Criterion) {
    let mut group = c.benchmark_group("attribute");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for containers in [100usize, 1_000, 10_000] {
        let pods = pods_with_containers(containers, 42);
        let node = node_cpu(&pods);
        let zones = zone_inputs(&mut XorShift::new(7));
        group.throughput(Throughput::Elements(containers as u64));
        group.bench_with_input(
            BenchmarkId::new("containers", containers),
            &pods,
            |b, pods| {
                b.iter(|| {
                    attribute(
                        black_box(&zones),
                        ActivityInput {
                            node,
                            pods: black_box(pods),
                            processes: &[],
                        },
                    )
                })
            },
        );
    }
    group.finish();
}

fn bench_tick(c: &mut Criterion) {
    const CONTAINERS: usize = 1_000;
    let pods = pods_with_containers(CONTAINERS, 42);
    let node = node_cpu(&pods);
    eprintln!(
        "tick fixture: {} pods, {} containers, 2 zones",
        pods.len(),
        CONTAINERS
    );

    let mut group = c.benchmark_group("tick_1000_containers");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    // Steady state: the ledger already knows every pod, as on a node after its first tick.
    let mut model = TickModel::new(1);
    model.tick(&pods, node);
    group.bench_function("whole_tick_excl_io", |b| {
        b.iter(|| model.tick(black_box(&pods), node))
    });

    // The parts, to see where the time goes.
    let interval = attribute(
        &zone_inputs(&mut XorShift::new(3)),
        ActivityInput {
            node,
            pods: &pods,
            processes: &[],
        },
    );
    let mut now = model.now;
    group.bench_function("ledger_apply", |b| {
        b.iter(|| {
            now += Duration::from_secs(1);
            model.ledger.apply(black_box(&interval), 1.0, now)
        })
    });
    group.bench_function("ledger_series", |b| {
        b.iter(|| model.ledger.series(black_box(&NoPodMetadata)))
    });
    group.finish();
}

/// The idle estimator of one scope with a full window of intervals of varying utilisation: one call
/// per tick, a refit (repeated median over the window) every tenth; 13 scopes is a node with 5 RAPL
/// zones and 8 GPUs.
fn bench_idle(c: &mut Criterion) {
    use kepler_rs::idle::{IdleEstimator, Scope};
    use kepler_rs::units::{Joules, ZoneKind};
    let mut group = c.benchmark_group("idle");
    let mut estimator = IdleEstimator::default();
    let scope = Scope::Cpu(ZoneKind::Package);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..120 {
        let u = next();
        estimator.idle_energy(scope, Joules(40.0 + 120.0 * u), None, Some(u), 1.0);
    }
    group.bench_function("one_scope_per_tick", |b| {
        b.iter(|| {
            let u = next();
            estimator.idle_energy(scope, Joules(40.0 + 120.0 * u), None, Some(u), 1.0)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_attribute, bench_tick, bench_idle);
criterion_main!(benches);
