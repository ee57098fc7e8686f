//! Cumulative CPU energy across intervals: adds each interval's attribution into per-zone node,
//! per-pod, per-container and per-process counters (the consumer bookkeeping and grace period are
//! `consumers`, shared with the GPU ledger), and builds the CPU part of snapshots. Pure: no I/O; time
//! is a monotonic `Duration` passed in.
//!
//! A pod removed after its grace period moves its joules into the node's `terminated_pods` counter, so
//! `active = Σ live pods + terminated pods + system` holds in every snapshot and no joule is lost.
//! Ended containers of a live pod are kept until the pod goes, so `pod = Σ containers` holds too.

use crate::attribution::IntervalEnergy;
use crate::consumers::{Consumers, Energy};
use crate::resource::cgroup_path::ContainerRuntime;
use crate::resource::pods::PodMetadata;
use crate::snapshot::{ContainerSeries, NodeZone, PodSeries, ProcessSeries};
use crate::units::{ContainerId, CpuNanos, Joules, Pid, PodUid, Watts, ZoneKind};
use std::time::Duration;

/// Joules and watts per zone, indexed like the ledger's zones, with the CPU time the splits used
/// (containers and processes) and a container's runtime.
#[derive(Debug, Clone)]
struct Counters {
    joules: Vec<Joules>,
    watts: Vec<Watts>,
    cpu_seconds: f64,
    runtime: Option<ContainerRuntime>,
}

impl Counters {
    fn new(zones: usize) -> Counters {
        Counters {
            joules: vec![Joules::ZERO; zones],
            watts: vec![Watts::default(); zones],
            cpu_seconds: 0.0,
            runtime: None,
        }
    }

    fn add_cpu_time(&mut self, time: CpuNanos) {
        self.cpu_seconds += time.0 as f64 / 1e9;
    }

    /// Adds an interval's joules (in the interval's zone order, mapped by `index`).
    fn add(&mut self, joules: &[Joules], index: &[Option<usize>], elapsed_secs: f64) {
        for (j, idx) in joules.iter().zip(index) {
            if let Some(i) = *idx {
                self.joules[i] += *j;
                self.watts[i] = j.per_seconds(elapsed_secs);
            }
        }
    }
}

impl Energy for Counters {
    fn clear_power(&mut self) {
        self.watts.fill(Watts::default());
    }
}

/// A process's energy with what names it (process metrics are informational: an expired process's
/// joules are not kept).
#[derive(Debug, Clone)]
struct ProcessAcc {
    comm: String,
    exe: std::sync::Arc<str>,
    container: Option<ContainerId>,
    energy: Counters,
}

impl Energy for ProcessAcc {
    fn clear_power(&mut self) {
        self.energy.clear_power();
    }
}

/// Cumulative counters of one node. Zones are fixed at construction.
#[derive(Debug, Clone)]
pub struct Ledger {
    zones: Vec<ZoneKind>,
    node: Vec<NodeZone>,
    pods: Consumers<PodUid, Counters>,
    processes: Consumers<Pid, ProcessAcc>,
}

impl Ledger {
    pub fn new(zones: Vec<ZoneKind>, grace: Duration) -> Ledger {
        let node = vec![NodeZone::default(); zones.len()];
        Ledger {
            zones,
            node,
            pods: Consumers::new(grace),
            processes: Consumers::new(grace),
        }
    }

    pub fn zones(&self) -> &[ZoneKind] {
        &self.zones
    }

    /// Add one interval. `elapsed_secs` converts joules to watts; `now` is monotonic time used for
    /// the grace period. Zones absent from `interval` (failed this tick) read 0 W; their energy
    /// arrives with the next good reading.
    pub fn apply(&mut self, interval: &IntervalEnergy, elapsed_secs: f64, now: Duration) {
        let n = self.zones.len();
        let per_sec = |j: Joules| j.per_seconds(elapsed_secs);
        // Map the interval's zone order onto ours.
        let index: Vec<Option<usize>> = interval
            .zones
            .iter()
            .map(|z| self.zones.iter().position(|k| *k == z.zone))
            .collect();

        for node in &mut self.node {
            (node.total_watts, node.idle_watts) = (Watts::default(), Watts::default());
            (node.active_watts, node.system_watts) = (Watts::default(), Watts::default());
        }
        for (split, idx) in interval.zones.iter().zip(&index) {
            let Some(i) = *idx else { continue };
            let node = &mut self.node[i];
            node.total_joules += split.total;
            node.idle_joules += split.idle;
            node.active_joules += split.active;
            node.system_joules += split.system;
            node.total_watts = per_sec(split.total);
            node.idle_watts = per_sec(split.idle);
            node.active_watts = per_sec(split.active);
            node.system_watts = per_sec(split.system);
        }

        self.pods.begin();
        for pod in &interval.pods {
            let acc = self.pods.seen(&pod.uid, now, || Counters::new(n));
            acc.energy.add(&pod.joules, &index, elapsed_secs);
            for c in &pod.containers {
                let container = acc
                    .containers
                    .entry(c.id.clone())
                    .or_insert_with(|| Counters::new(n));
                container.add(&c.joules, &index, elapsed_secs);
                container.add_cpu_time(c.cpu_time);
                container.runtime = container.runtime.or(c.runtime);
            }
        }
        // An expired pod's joules stay in the node, as terminated pods' energy.
        let node = &mut self.node;
        self.pods.end(now, |_, gone| {
            for (zone, j) in node.iter_mut().zip(&gone.energy.joules) {
                zone.terminated_pods_joules += *j;
            }
        });

        self.processes.begin();
        for p in &interval.processes {
            let acc = self.processes.seen(&p.pid, now, || ProcessAcc {
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                container: p.container.clone(),
                energy: Counters::new(n),
            });
            acc.energy.energy.add(&p.joules, &index, elapsed_secs);
            acc.energy.energy.add_cpu_time(p.cpu_time);
        }
        self.processes.end(now, |_, _| {});
    }

    pub fn node(&self) -> &[NodeZone] {
        &self.node
    }

    /// Pod, container and process series, sorted, with names from `meta` where known.
    pub fn series(&self, meta: &dyn PodMetadata) -> (Vec<PodSeries>, Vec<ProcessSeries>) {
        let mut pods: Vec<PodSeries> = self
            .pods
            .iter()
            .map(|(uid, acc)| {
                let pod_meta = meta.pod(uid);
                let mut containers: Vec<ContainerSeries> = acc
                    .containers
                    .iter()
                    .map(|(id, c)| ContainerSeries {
                        id: id.clone(),
                        name: meta.container_name(uid, id),
                        runtime: c.runtime,
                        cpu_seconds: c.cpu_seconds,
                        joules: c.joules.clone(),
                        watts: c.watts.clone(),
                    })
                    .collect();
                containers.sort_by(|a, b| a.id.cmp(&b.id));
                PodSeries {
                    uid: uid.clone(),
                    name: pod_meta.as_ref().map(|m| m.name.clone()),
                    hub: pod_meta.as_ref().and_then(|m| m.hub.clone()),
                    namespace: pod_meta.map(|m| m.namespace),
                    ended: acc.ended,
                    joules: acc.energy.joules.clone(),
                    watts: acc.energy.watts.clone(),
                    containers,
                }
            })
            .collect();
        pods.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut processes: Vec<ProcessSeries> = self
            .processes
            .iter()
            .map(|(pid, acc)| ProcessSeries {
                pid: *pid,
                comm: acc.energy.comm.clone(),
                exe: acc.energy.exe.clone(),
                container: acc.energy.container.clone(),
                ended: acc.ended,
                cpu_seconds: acc.energy.energy.cpu_seconds,
                joules: acc.energy.energy.joules.clone(),
                watts: acc.energy.energy.watts.clone(),
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        (pods, processes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{ContainerActivity, NodeCpu, PodActivity};
    use crate::attribution::{attribute, ActivityInput, ZoneInput};
    use crate::resource::pods::NoPodMetadata;
    use crate::units::{CpuNanos, Joules};
    use proptest::prelude::*;

    fn uid(n: u32) -> PodUid {
        PodUid::parse(&format!("{n:08x}-0000-0000-0000-000000000000")).unwrap()
    }
    fn cid(n: u32) -> ContainerId {
        ContainerId::parse(&format!("{n:064x}")).unwrap()
    }

    fn interval(total: f64, pods: &[(u32, u64, &[u64])]) -> IntervalEnergy {
        let pods: Vec<PodActivity> = pods
            .iter()
            .map(|(n, t, cs)| PodActivity {
                uid: uid(*n),
                cpu_time: CpuNanos(*t),
                containers: cs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ContainerActivity {
                        id: cid(n * 100 + i as u32),
                        cpu_time: CpuNanos(*t),
                        runtime: None,
                    })
                    .collect(),
            })
            .collect();
        attribute(
            &[ZoneInput {
                zone: ZoneKind::Package,
                total: Joules(total),
                idle: Joules(total * 0.25),
            }],
            ActivityInput {
                node: NodeCpu {
                    busy: CpuNanos(1000),
                    total: CpuNanos(4000),
                },
                pods: &pods,
                processes: &[],
            },
        )
    }

    /// A zone whose read failed this tick is absent from the interval: counters stay, power reads
    /// 0 W for the node and its pods alike (the energy arrives with the next good reading).
    #[test]
    fn a_failed_zone_keeps_its_counters_and_reads_zero_watts() {
        let mut l = Ledger::new(vec![ZoneKind::Package], Duration::from_secs(10));
        l.apply(
            &interval(40.0, &[(1, 500, &[500])]),
            1.0,
            Duration::from_secs(1),
        );
        let (pods, _) = l.series(&NoPodMetadata);
        assert!(l.node()[0].total_watts > 0.0 && pods[0].watts[0] > 0.0);
        let mut failed = interval(0.0, &[(1, 500, &[500])]);
        failed.zones.clear();
        for p in &mut failed.pods {
            p.joules.clear();
            p.containers.iter_mut().for_each(|c| c.joules.clear());
        }
        l.apply(&failed, 1.0, Duration::from_secs(2));
        let (pods, _) = l.series(&NoPodMetadata);
        assert_eq!(l.node()[0].total_joules, 40.0);
        assert_eq!(l.node()[0].total_watts, 0.0);
        assert!(pods[0].joules[0] > 0.0);
        assert_eq!(pods[0].watts[0], 0.0);
        check_identities(&l);
    }

    fn check_identities(l: &Ledger) {
        let (pods, _) = l.series(&NoPodMetadata);
        for (zi, node) in l.node().iter().enumerate() {
            let pods_sum: f64 = pods.iter().map(|p| p.joules[zi].0).sum();
            let rhs = pods_sum + node.terminated_pods_joules.0 + node.system_joules.0;
            assert!((node.active_joules.0 - rhs).abs() <= 1e-9 * node.active_joules.0.max(1e-12));
            assert!(
                (node.total_joules.0 - node.idle_joules.0 - node.active_joules.0).abs()
                    <= 1e-9 * node.total_joules.0.max(1e-12)
            );
            for p in &pods {
                let cs: f64 = p.containers.iter().map(|c| c.joules[zi].0).sum();
                assert!((cs - p.joules[zi].0).abs() <= 1e-9 * p.joules[zi].0.max(1e-12));
            }
        }
    }

    #[test]
    fn ended_pod_keeps_series_for_grace_then_moves_to_terminated() {
        let mut l = Ledger::new(vec![ZoneKind::Package], Duration::from_secs(10));
        l.apply(
            &interval(100.0, &[(1, 500, &[500]), (2, 500, &[500])]),
            1.0,
            Duration::from_secs(1),
        );
        let (pods, _) = l.series(&NoPodMetadata);
        assert_eq!(pods.len(), 2);
        assert!((pods[0].joules[0].0 - 37.5).abs() < 1e-9);
        // Pod 2 ends.
        l.apply(
            &interval(100.0, &[(1, 500, &[500])]),
            1.0,
            Duration::from_secs(2),
        );
        let (pods, _) = l.series(&NoPodMetadata);
        assert_eq!(pods.len(), 2);
        assert!(pods[1].ended);
        assert_eq!(pods[1].watts[0], 0.0);
        assert!(
            (pods[1].joules[0].0 - 37.5).abs() < 1e-9,
            "counter must not move backwards"
        );
        check_identities(&l);
        // Last seen at t=1: still within the 10 s grace at t=11, gone at t=12.
        l.apply(
            &interval(100.0, &[(1, 500, &[500])]),
            1.0,
            Duration::from_secs(11),
        );
        assert_eq!(l.series(&NoPodMetadata).0.len(), 2);
        l.apply(
            &interval(100.0, &[(1, 500, &[500])]),
            1.0,
            Duration::from_secs(12),
        );
        let (pods, _) = l.series(&NoPodMetadata);
        assert_eq!(pods.len(), 1);
        assert!((l.node()[0].terminated_pods_joules.0 - 37.5).abs() < 1e-9);
        check_identities(&l);
    }

    #[test]
    fn pod_that_comes_back_within_grace_continues_its_counter() {
        let mut l = Ledger::new(vec![ZoneKind::Package], Duration::from_secs(10));
        l.apply(
            &interval(40.0, &[(1, 1000, &[1000])]),
            1.0,
            Duration::from_secs(1),
        );
        l.apply(&interval(40.0, &[]), 1.0, Duration::from_secs(2));
        l.apply(
            &interval(40.0, &[(1, 1000, &[1000])]),
            1.0,
            Duration::from_secs(3),
        );
        let (pods, _) = l.series(&NoPodMetadata);
        assert!(!pods[0].ended);
        assert!((pods[0].joules[0].0 - 60.0).abs() < 1e-9);
        assert!((pods[0].watts[0].0 - 30.0).abs() < 1e-9);
    }

    #[test]
    fn ended_container_of_live_pod_is_kept() {
        let mut l = Ledger::new(vec![ZoneKind::Package], Duration::from_secs(1));
        l.apply(
            &interval(40.0, &[(1, 1000, &[500, 500])]),
            1.0,
            Duration::from_secs(1),
        );
        l.apply(
            &interval(40.0, &[(1, 1000, &[1000])]),
            1.0,
            Duration::from_secs(10),
        );
        let (pods, _) = l.series(&NoPodMetadata);
        assert_eq!(pods[0].containers.len(), 2);
        check_identities(&l);
    }

    proptest! {
        #[test]
        fn identities_hold_in_every_snapshot(
            steps in proptest::collection::vec(
                (0.0f64..500.0, proptest::collection::vec((0u32..8, 0u64..1000, proptest::collection::vec(0u64..1000, 0..3)), 0..6)),
                1..30)
        ) {
            let mut l = Ledger::new(vec![ZoneKind::Package], Duration::from_secs(3));
            for (t, (total, pods)) in steps.iter().enumerate() {
                let mut pods: Vec<(u32, u64, Vec<u64>)> = pods.iter().map(|(n, t, cs)| (*n, *t, cs.clone())).collect();
                pods.sort_by_key(|p| p.0);
                pods.dedup_by_key(|p| p.0);
                let refs: Vec<(u32, u64, &[u64])> = pods.iter().map(|(n, t, cs)| (*n, *t, cs.as_slice())).collect();
                l.apply(&interval(*total, &refs), 1.0, Duration::from_secs(t as u64));
                check_identities(&l);
            }
        }
    }
}
