//! Deterministic fixtures shared by the criterion benches: a tiny xorshift generator and builders of
//! pod activity, zone energy and production-shaped snapshots. No I/O here; the benches own their
//! timing and their temporary trees.

use kepler_rs::activity::{ContainerActivity, NodeCpu, PodActivity};
use kepler_rs::attribution::{attribute, ActivityInput, ZoneInput};
use kepler_rs::idle::{IdleEstimator, Scope};
use kepler_rs::ledger::Ledger;
use kepler_rs::resource::cgroup_path::ContainerRuntime;
use kepler_rs::resource::pods::NoPodMetadata;
use kepler_rs::snapshot::{ExporterHealth, Snapshot, SourceHealth};
use kepler_rs::source::EnergySourceKind;
use kepler_rs::units::{ContainerId, CpuNanos, Joules, PodUid, ZoneKind};
use std::time::Duration;

/// The zones of a typical single-socket server without psys.
pub const ZONES: [ZoneKind; 2] = [ZoneKind::Package, ZoneKind::Dram];

/// Logical CPUs of the simulated node (sets node capacity, not the bench's threads).
pub const NODE_CPUS: u64 = 32;

/// Interval length of the simulated tick.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// xorshift64*: deterministic, dependency-free, good enough to shape fixtures.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A pod UID in canonical form, unique per `n`.
pub fn pod_uid(n: u64) -> PodUid {
    let raw = format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        n as u32,
        (n >> 32) as u16,
        n % 0x1000,
        (n * 7) % 0x1000,
        n.wrapping_mul(0x9e37_79b9) & 0xffff_ffff_ffff
    );
    PodUid::parse(&raw).expect("valid uid")
}

/// A 64-hex container ID, unique per `(pod, index)`.
pub fn container_id(pod: u64, index: u64) -> ContainerId {
    let raw = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        pod.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        index,
        pod,
        pod ^ 0xdead_beef
    );
    ContainerId::parse(&raw).expect("valid container id")
}

/// CPU time of one container over a 1 s interval: most containers are nearly idle (0-5 ms),
/// some are moderately busy (5-100 ms), a few burn one or more cores (100-1,500 ms).
pub fn container_cpu_time(rng: &mut XorShift) -> CpuNanos {
    let p = rng.unit();
    let ms = if p < 0.70 {
        rng.range(0, 5_000)
    } else if p < 0.95 {
        rng.range(5_000, 100_000)
    } else {
        rng.range(100_000, 1_500_000)
    };
    CpuNanos(ms * 1_000) // microseconds -> nanoseconds
}

/// Pods with 1-3 containers each, `containers` containers in total.
pub fn pods_with_containers(containers: usize, seed: u64) -> Vec<PodActivity> {
    let mut rng = XorShift::new(seed);
    let mut pods = Vec::new();
    let mut left = containers;
    let mut n = 0u64;
    while left > 0 {
        let count = (rng.range(1, 4) as usize).min(left);
        pods.push(pod(&mut rng, n, count));
        left -= count;
        n += 1;
    }
    pods
}

/// `pods` pods with exactly `per_pod` containers each.
pub fn pods_uniform(pods: usize, per_pod: usize, seed: u64) -> Vec<PodActivity> {
    let mut rng = XorShift::new(seed);
    (0..pods as u64)
        .map(|n| pod(&mut rng, n, per_pod))
        .collect()
}

fn pod(rng: &mut XorShift, n: u64, containers: usize) -> PodActivity {
    let containers: Vec<ContainerActivity> = (0..containers as u64)
        .map(|i| ContainerActivity {
            id: container_id(n, i),
            cpu_time: container_cpu_time(rng),
            runtime: Some(ContainerRuntime::Containerd),
        })
        .collect();
    let containers_time: CpuNanos = containers.iter().map(|c| c.cpu_time).sum();
    // The pod counter holds a little more (pause container, exited containers).
    let cpu_time = containers_time + CpuNanos(rng.range(0, 200_000));
    let mut pod = PodActivity {
        uid: pod_uid(n),
        cpu_time,
        containers,
    };
    pod.containers.sort_by(|a, b| a.id.cmp(&b.id));
    pod
}

/// Node CPU for an interval in which `pods` ran, plus system time (host daemons, kernel).
pub fn node_cpu(pods: &[PodActivity]) -> NodeCpu {
    let pods_time: CpuNanos = pods.iter().map(|p| p.cpu_time).sum();
    let capacity = NODE_CPUS * INTERVAL.as_nanos() as u64;
    NodeCpu {
        busy: CpuNanos((pods_time.0 + capacity / 20).min(capacity)),
        total: CpuNanos(capacity),
    }
}

/// Interval energy of the two zones, without idle (the estimator decides it).
pub fn zone_energy(rng: &mut XorShift) -> [(ZoneKind, Joules); 2] {
    [
        (ZoneKind::Package, Joules(80.0 + 60.0 * rng.unit())),
        (ZoneKind::Dram, Joules(8.0 + 4.0 * rng.unit())),
    ]
}

/// Fixed idle power per zone (as `--idle-watts` would configure).
pub fn zone_inputs(rng: &mut XorShift) -> Vec<ZoneInput> {
    zone_energy(rng)
        .into_iter()
        .map(|(zone, total)| ZoneInput {
            zone,
            total,
            idle: Joules(total.0 * 0.4),
        })
        .collect()
}

/// The model state a tick carries between intervals.
pub struct TickModel {
    pub idle: IdleEstimator,
    pub ledger: Ledger,
    pub health: ExporterHealth,
    pub now: Duration,
    rng: XorShift,
}

impl TickModel {
    pub fn new(seed: u64) -> TickModel {
        TickModel {
            idle: IdleEstimator::default(),
            ledger: Ledger::new(ZONES.to_vec(), Duration::from_secs(120)),
            health: ExporterHealth {
                sources: vec![
                    SourceHealth {
                        source: "estimate",
                        up: true,
                    },
                    SourceHealth {
                        source: "cgroup",
                        up: true,
                    },
                    SourceHealth {
                        source: "procfs",
                        up: true,
                    },
                ],
                ..ExporterHealth::default()
            },
            now: Duration::ZERO,
            rng: XorShift::new(seed),
        }
    }

    /// One tick after its inputs were read, as `Monitor::tick` does it: idle estimate, attribution,
    /// ledger, series, snapshot.
    pub fn tick(&mut self, pods: &[PodActivity], node: NodeCpu) -> Snapshot {
        self.now += INTERVAL;
        let secs = INTERVAL.as_secs_f64();
        let usage = node.usage_ratio();
        let zones: Vec<ZoneInput> = zone_energy(&mut self.rng)
            .into_iter()
            .map(|(zone, total)| ZoneInput {
                zone,
                total,
                idle: self
                    .idle
                    .idle_energy(Scope::Cpu(zone), total, None, Some(usage), secs),
            })
            .collect();
        let interval = attribute(
            &zones,
            ActivityInput {
                node,
                pods,
                processes: &[],
            },
        );
        self.ledger.apply(&interval, secs, self.now);
        self.health.intervals += 1;
        self.health.ticks += 1;
        self.health.last_tick_seconds = 0.000_5;
        self.health.tick_seconds_total += 0.000_5;
        self.health.taken_at_unix_seconds = 1.7e9 + self.now.as_secs_f64();
        let (pods, processes) = self.ledger.series(&NoPodMetadata);
        Snapshot {
            node_name: "bench-node-0".to_string(),
            energy_source: EnergySourceKind::Estimate,
            cpu_source: "cgroup",
            cpu_source_reason: kepler_rs::activity::SourceReason::Flag,
            zones: self.ledger.zones().to_vec(),
            node: self.ledger.node().to_vec(),
            sockets: Vec::new(),
            cpu_usage_ratio: usage,
            pods,
            processes,
            gpu: Default::default(),
            health: self.health.clone(),
        }
    }
}

/// A snapshot built through the real ledger path: `pods` pods with `per_pod` containers, after a
/// few intervals with varying activity.
pub fn production_snapshot(pods: usize, per_pod: usize) -> Snapshot {
    let mut model = TickModel::new(0x5eed);
    let mut snapshot = None;
    for step in 0..4u64 {
        let activity = pods_uniform(pods, per_pod, 0xabc + step);
        let node = node_cpu(&activity);
        snapshot = Some(model.tick(&activity, node));
    }
    snapshot.expect("at least one interval")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_have_the_requested_shape() {
        let pods = pods_with_containers(1_000, 1);
        let containers: usize = pods.iter().map(|p| p.containers.len()).sum();
        assert_eq!(containers, 1_000);
        assert!(pods.iter().all(|p| (1..=3).contains(&p.containers.len())));
        let uids: std::collections::BTreeSet<_> = pods.iter().map(|p| p.uid.clone()).collect();
        assert_eq!(uids.len(), pods.len(), "pod uids must be unique");

        let snapshot = production_snapshot(100, 2);
        assert_eq!(snapshot.pods.len(), 100);
        assert!(snapshot.pods.iter().all(|p| p.containers.len() == 2));
        assert_eq!(snapshot.health.intervals, 4);
        assert!(snapshot.pods.iter().any(|p| p.joules[0] > 0.0));
    }
}
