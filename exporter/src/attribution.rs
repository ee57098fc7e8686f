//! The energy model for one interval: a pure function from zone energy, idle energy and CPU activity
//! to per-pod, per-container and system energy. No I/O, no clock, no state.
//!
//! Per zone: `total = idle + active`, `active = Σ pods + system`, and for each pod
//! `pod = Σ containers` (when it has at least one container). Active energy is split by each
//! consumer's share of node busy CPU time; `system` is the residual, so the identities hold exactly
//! up to floating-point rounding.

pub(crate) mod carry;

use crate::activity::{NodeCpu, PodActivity, ProcessActivity};
use crate::resource::cgroup_path::ContainerRuntime;
use crate::units::{ContainerId, CpuNanos, Joules, Pid, PodUid, ZoneKind};

/// One zone's energy over the interval, with its idle part already decided by the idle estimator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneInput {
    pub zone: ZoneKind,
    pub total: Joules,
    /// Idle energy; clamped into `[0, total]` by `attribute`.
    pub idle: Joules,
}

/// Energy of one zone split into its parts for one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ZoneSplit {
    pub(crate) zone: ZoneKind,
    pub(crate) total: Joules,
    pub(crate) idle: Joules,
    pub(crate) active: Joules,
    /// Active energy of everything outside pods: host daemons, kernel threads, unattributed time.
    pub(crate) system: Joules,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerEnergy {
    pub(crate) id: ContainerId,
    /// The CPU time the split used, and the runtime the activity source saw.
    pub(crate) cpu_time: CpuNanos,
    pub(crate) runtime: Option<ContainerRuntime>,
    /// Indexed like `IntervalEnergy::zones`.
    pub(crate) joules: Vec<Joules>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PodEnergy {
    pub(crate) uid: PodUid,
    /// Indexed like `IntervalEnergy::zones`.
    pub(crate) joules: Vec<Joules>,
    pub(crate) containers: Vec<ContainerEnergy>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProcessEnergy {
    pub(crate) pid: Pid,
    pub(crate) comm: String,
    pub(crate) exe: std::sync::Arc<str>,
    pub(crate) container: Option<ContainerId>,
    /// The process's CPU time over the interval.
    pub(crate) cpu_time: CpuNanos,
    pub(crate) joules: Vec<Joules>,
}

/// The result of attributing one interval.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IntervalEnergy {
    pub(crate) zones: Vec<ZoneSplit>,
    pub(crate) pods: Vec<PodEnergy>,
    /// Informational: a process's share of active energy by its own CPU time. Processes are not part
    /// of the conservation identities (a /proc walk misses short-lived processes).
    pub(crate) processes: Vec<ProcessEnergy>,
}

/// The activity of one interval as the model sees it.
#[derive(Debug, Clone, Copy)]
pub struct ActivityInput<'a> {
    pub node: NodeCpu,
    pub pods: &'a [PodActivity],
    pub processes: &'a [ProcessActivity],
}

/// Split each zone's active energy over pods and system by CPU-time share.
///
/// The denominator is `max(node busy time, Σ pod time)`: node busy time comes from /proc/stat and
/// pods from cgroup counters or eBPF, which can disagree; pods never get more than all active
/// energy. The caller fits pods within the busy time first (`carry::Carry::fit`), so that an excess
/// is carried into the next interval rather than lost here.
pub fn attribute(zones: &[ZoneInput], activity: ActivityInput<'_>) -> IntervalEnergy {
    // A pod with no container cgroup (all exited) cannot split its time; it is left to `system`
    // so that `pod = Σ containers` always holds.
    let pod_time: f64 = activity
        .pods
        .iter()
        .filter(|p| !p.containers.is_empty())
        .map(|p| p.cpu_time.as_f64())
        .sum();
    let denominator = activity.node.busy.as_f64().max(pod_time);

    let splits: Vec<ZoneSplit> = zones.iter().map(split_idle).collect();

    // Each pod's fraction of active energy, identical for every zone.
    let pod_fraction = |t: CpuNanos| {
        if denominator > 0.0 {
            t.as_f64() / denominator
        } else {
            0.0
        }
    };

    let mut pods = Vec::with_capacity(activity.pods.len());
    let mut pods_sum = vec![0.0f64; splits.len()];
    for pod in activity.pods {
        let fraction = if pod.containers.is_empty() {
            0.0
        } else {
            pod_fraction(pod.cpu_time)
        };
        let joules: Vec<Joules> = splits
            .iter()
            .map(|z| Joules(z.active.0 * fraction))
            .collect();
        for (sum, j) in pods_sum.iter_mut().zip(&joules) {
            *sum += j.0;
        }
        let containers = split_over_containers(pod, &joules);
        pods.push(PodEnergy {
            uid: pod.uid.clone(),
            joules,
            containers,
        });
    }

    let zones: Vec<ZoneSplit> = splits
        .into_iter()
        .zip(&pods_sum)
        .map(|(mut z, pods_total)| {
            // Residual, so active = Σ pods + system holds to rounding; never negative.
            z.system = Joules((z.active.0 - pods_total).max(0.0));
            z
        })
        .collect();

    let processes = activity
        .processes
        .iter()
        .map(|p| {
            let fraction = pod_fraction(p.cpu_time).min(1.0);
            ProcessEnergy {
                pid: p.pid,
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                container: p.container.clone(),
                cpu_time: p.cpu_time,
                joules: zones
                    .iter()
                    .map(|z| Joules(z.active.0 * fraction))
                    .collect(),
            }
        })
        .collect();

    IntervalEnergy {
        zones,
        pods,
        processes,
    }
}

fn split_idle(z: &ZoneInput) -> ZoneSplit {
    let total = if z.total.0.is_finite() && z.total.0 > 0.0 {
        z.total.0
    } else {
        0.0
    };
    let idle = if z.idle.0.is_finite() {
        z.idle.0.clamp(0.0, total)
    } else {
        0.0
    };
    ZoneSplit {
        zone: z.zone,
        total: Joules(total),
        idle: Joules(idle),
        active: Joules(total - idle),
        system: Joules::ZERO,
    }
}

/// Split a pod's energy over its containers by their CPU-time share; the last container takes the
/// residual so that Σ containers = pod exactly. Containers with no time this interval share evenly
/// when no container has any (the pod's own counter can hold time of an exited container).
fn split_over_containers(pod: &PodActivity, pod_joules: &[Joules]) -> Vec<ContainerEnergy> {
    let n = pod.containers.len();
    if n == 0 {
        return Vec::new();
    }
    let container_time: f64 = pod.containers.iter().map(|c| c.cpu_time.as_f64()).sum();
    let share = |t: CpuNanos| {
        if container_time > 0.0 {
            t.as_f64() / container_time
        } else {
            1.0 / n as f64
        }
    };
    let mut assigned = vec![0.0f64; pod_joules.len()];
    pod.containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let joules = if i + 1 == n {
                pod_joules
                    .iter()
                    .zip(&assigned)
                    .map(|(p, a)| Joules((p.0 - a).max(0.0)))
                    .collect()
            } else {
                let s = share(c.cpu_time);
                pod_joules
                    .iter()
                    .zip(assigned.iter_mut())
                    .map(|(p, a)| {
                        let j = p.0 * s;
                        *a += j;
                        Joules(j)
                    })
                    .collect()
            };
            ContainerEnergy {
                id: c.id.clone(),
                cpu_time: c.cpu_time,
                runtime: c.runtime,
                joules,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::ContainerActivity;
    use proptest::prelude::*;

    pub(super) fn uid(n: u32) -> PodUid {
        PodUid::parse(&format!("{n:08x}-0000-0000-0000-000000000000")).unwrap()
    }
    pub(super) fn cid(n: u32) -> ContainerId {
        ContainerId::parse(&format!("{n:064x}")).unwrap()
    }
    pub(super) fn pod(n: u32, pod_ns: u64, containers: &[u64]) -> PodActivity {
        PodActivity {
            uid: uid(n),
            cpu_time: CpuNanos(pod_ns),
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, t)| ContainerActivity {
                    id: cid(n * 100 + i as u32),
                    cpu_time: CpuNanos(*t),
                    runtime: None,
                })
                .collect(),
        }
    }
    pub(super) fn node(busy: u64) -> NodeCpu {
        NodeCpu {
            busy: CpuNanos(busy),
            total: CpuNanos(busy * 4),
        }
    }

    #[test]
    fn splits_active_energy_by_cpu_time_share() {
        let zones = [ZoneInput {
            zone: ZoneKind::Package,
            total: Joules(100.0),
            idle: Joules(40.0),
        }];
        let pods = [pod(1, 600, &[600]), pod(2, 200, &[150, 50])];
        let out = attribute(
            &zones,
            ActivityInput {
                node: node(1000),
                pods: &pods,
                processes: &[],
            },
        );
        let z = out.zones[0];
        assert_eq!(z.active, Joules(60.0));
        assert!((out.pods[0].joules[0].0 - 36.0).abs() < 1e-12);
        assert!((out.pods[1].joules[0].0 - 12.0).abs() < 1e-12);
        assert!((out.pods[1].containers[0].joules[0].0 - 9.0).abs() < 1e-12);
        assert!((out.pods[1].containers[1].joules[0].0 - 3.0).abs() < 1e-12);
        assert!((z.system.0 - 12.0).abs() < 1e-12);
    }

    #[test]
    fn idle_larger_than_total_is_clamped_never_negative_active() {
        let zones = [ZoneInput {
            zone: ZoneKind::Dram,
            total: Joules(5.0),
            idle: Joules(9.0),
        }];
        let out = attribute(
            &zones,
            ActivityInput {
                node: node(10),
                pods: &[pod(1, 10, &[10])],
                processes: &[],
            },
        );
        assert_eq!(out.zones[0].idle, Joules(5.0));
        assert_eq!(out.zones[0].active, Joules(0.0));
        assert_eq!(out.pods[0].joules[0], Joules(0.0));
    }

    #[test]
    fn pods_exceeding_node_busy_time_never_get_more_than_active() {
        // cgroup counters and /proc/stat disagree: pods claim more than node busy time.
        let zones = [ZoneInput {
            zone: ZoneKind::Package,
            total: Joules(10.0),
            idle: Joules(0.0),
        }];
        let pods = [pod(1, 300, &[300]), pod(2, 100, &[100])];
        let out = attribute(
            &zones,
            ActivityInput {
                node: node(200),
                pods: &pods,
                processes: &[],
            },
        );
        let sum: f64 = out.pods.iter().map(|p| p.joules[0].0).sum();
        assert!((sum - 10.0).abs() < 1e-12);
        assert!(out.zones[0].system.0.abs() < 1e-12);
        assert!((out.pods[0].joules[0].0 / out.pods[1].joules[0].0 - 3.0).abs() < 1e-9);
    }

    #[test]
    fn no_activity_gives_all_active_energy_to_system() {
        let zones = [ZoneInput {
            zone: ZoneKind::Package,
            total: Joules(10.0),
            idle: Joules(4.0),
        }];
        let out = attribute(
            &zones,
            ActivityInput {
                node: node(0),
                pods: &[pod(1, 0, &[0, 0])],
                processes: &[],
            },
        );
        assert_eq!(out.zones[0].system, Joules(6.0));
        assert_eq!(out.pods[0].joules[0], Joules(0.0));
        assert_eq!(out.pods[0].containers.len(), 2);
    }

    #[test]
    fn pod_time_without_container_time_is_shared_evenly() {
        // The only container exited during the interval: its time is in the pod counter only.
        let zones = [ZoneInput {
            zone: ZoneKind::Package,
            total: Joules(8.0),
            idle: Joules(0.0),
        }];
        let out = attribute(
            &zones,
            ActivityInput {
                node: node(100),
                pods: &[pod(1, 100, &[0, 0])],
                processes: &[],
            },
        );
        assert_eq!(out.pods[0].joules[0], Joules(8.0));
        assert_eq!(out.pods[0].containers[0].joules[0], Joules(4.0));
        assert_eq!(out.pods[0].containers[1].joules[0], Joules(4.0));
    }

    #[test]
    fn garbage_energy_is_zero_not_nan() {
        let zones = [ZoneInput {
            zone: ZoneKind::Package,
            total: Joules(f64::NAN),
            idle: Joules(f64::INFINITY),
        }];
        let out = attribute(
            &zones,
            ActivityInput {
                node: node(1),
                pods: &[],
                processes: &[],
            },
        );
        assert_eq!(out.zones[0].total, Joules(0.0));
        assert_eq!(out.zones[0].idle, Joules(0.0));
    }

    fn rel_close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    proptest! {
        #[test]
        fn conservation_holds_for_random_inputs(
            totals in proptest::collection::vec((0.0f64..1e6, 0.0f64..2e6), 1..5),
            pods in proptest::collection::vec(
                (0u64..10_000_000_000, proptest::collection::vec(0u64..10_000_000_000, 0..6)),
                0..40),
            busy in 0u64..100_000_000_000,
        ) {
            let zones: Vec<ZoneInput> = totals.iter().enumerate().map(|(i, (t, idle))| ZoneInput {
                zone: ZoneKind::ALL[i % 5], total: Joules(*t), idle: Joules(*idle),
            }).collect();
            let pods: Vec<PodActivity> = pods.iter().enumerate()
                .map(|(i, (t, cs))| pod(i as u32, *t, cs)).collect();
            let out = attribute(&zones, ActivityInput { node: node(busy), pods: &pods, processes: &[] });
            for (zi, z) in out.zones.iter().enumerate() {
                prop_assert!(z.idle.0 >= 0.0 && z.active.0 >= 0.0 && z.system.0 >= 0.0);
                prop_assert!(rel_close(z.total.0, z.idle.0 + z.active.0));
                let pods_sum: f64 = out.pods.iter().map(|p| p.joules[zi].0).sum();
                prop_assert!(pods_sum <= z.active.0 * (1.0 + 1e-12) + 1e-12);
                prop_assert!((z.active.0 - (pods_sum + z.system.0)).abs() <= 1e-9 * z.active.0.max(1e-12));
                for p in &out.pods {
                    prop_assert!(p.joules[zi].0 >= 0.0);
                    if !p.containers.is_empty() {
                        let cs: f64 = p.containers.iter().map(|c| c.joules[zi].0).sum();
                        prop_assert!((cs - p.joules[zi].0).abs() <= 1e-9 * p.joules[zi].0.max(1e-12));
                        prop_assert!(p.containers.iter().all(|c| c.joules[zi].0 >= 0.0));
                    }
                }
            }
        }
    }
}
