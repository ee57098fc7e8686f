//! The pod index with 500 pods and 2,000 containers (4 per pod): applying watch events (one pod, and a
//! whole re-list) and the lookups a tick makes (pod by UID, container name by pod and container ID).

use criterion::{criterion_group, criterion_main, Criterion};
use kepler_rs::resource::index::PodIndex;
use kepler_rs::resource::pods::{HubServer, PodMeta};
use kepler_rs::resource::record::PodRecord;
use kepler_rs::units::{ContainerId, PodUid};
use std::hint::black_box;
use std::time::Instant;

const PODS: u32 = 500;
const CONTAINERS_PER_POD: u32 = 4;

fn uid(n: u32) -> PodUid {
    PodUid::parse(&format!("{n:08x}-7b8d-4e0f-9a1b-2c3d4e5f6a7b")).expect("valid uid")
}

fn cid(pod: u32, i: u32) -> ContainerId {
    ContainerId::parse(&format!("{pod:08x}{i:056x}")).expect("valid container id")
}

fn record(n: u32) -> PodRecord {
    PodRecord {
        uid: uid(n),
        meta: PodMeta {
            name: format!("jupyter-user-{n:04}---6c5a1f3e"),
            namespace: "sai".to_string(),
            hub: Some(HubServer {
                user: format!("user.{n:04}@uni.edu"),
                server: String::new(),
            }),
        },
        containers: (0..CONTAINERS_PER_POD)
            .map(|i| (cid(n, i), format!("container-{i}")))
            .collect(),
    }
}

fn full_index() -> PodIndex {
    let mut index = PodIndex::new();
    index.replace_all((0..PODS).map(record).collect(), Instant::now());
    index
}

fn bench(c: &mut Criterion) {
    let records: Vec<PodRecord> = (0..PODS).map(record).collect();
    c.bench_function("pod_index/relist_500_pods_2000_containers", |b| {
        b.iter_batched(
            || records.clone(),
            |listed| {
                let mut index = PodIndex::new();
                index.replace_all(listed, Instant::now());
                index
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut index = full_index();
    let update = record(250);
    c.bench_function("pod_index/apply_one_pod_update", |b| {
        b.iter_batched(
            || update.clone(),
            |r| index.apply(r),
            criterion::BatchSize::SmallInput,
        )
    });
    let index = full_index();
    let uids: Vec<PodUid> = (0..PODS).map(uid).collect();
    c.bench_function("pod_index/lookup_pod_by_uid_x500", |b| {
        b.iter(|| {
            for u in &uids {
                black_box(index.pod(u));
            }
        })
    });
    let containers: Vec<(PodUid, ContainerId)> = (0..PODS)
        .flat_map(|n| (0..CONTAINERS_PER_POD).map(move |i| (uid(n), cid(n, i))))
        .collect();
    c.bench_function("pod_index/lookup_container_name_x2000", |b| {
        b.iter(|| {
            for (u, c) in &containers {
                black_box(index.container_name(u, c));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
