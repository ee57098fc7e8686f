//! The GPU energy model for one interval: pure functions, no I/O, no clock, no state.
//!
//! Per device: `total = idle + active` and `active = Σ pod shares + unattributed`. Active energy is
//! split by each process's share of SM utilisation (a device used by one process gives it all); where
//! the device cannot sample utilisation, or every sample is 0, its processes share evenly. Under MIG
//! each busy instance gets a share proportional to its size, split evenly inside it (NVML has neither
//! per-instance power nor per-process utilisation in MIG mode). A process NVML reports but whose
//! cgroup cannot be read (another PID namespace) goes to the pod the device is assigned to when the
//! kubelet assigned it to exactly one pod; a device with no process but such an assignment gives
//! that pod its active energy.

use super::device::ProcessUse;
use crate::resource::cgroup_path::CgroupOwner;
use crate::units::{ContainerId, Joules, Pid, PodUid};
use std::collections::{BTreeMap, HashMap};

/// Who receives a consumer's share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum GpuOwner {
    Container {
        pod: PodUid,
        container: ContainerId,
    },
    /// A pod, without a known container (pod-level cgroup, or a kubelet device assignment).
    Pod(PodUid),
    /// Host processes, plain containers, processes nobody can place.
    Unattributed,
}

/// One weighted claim on a device's active energy.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuConsumer {
    pub(crate) owner: GpuOwner,
    /// MIG instance, where MIG is on.
    pub(crate) instance: Option<usize>,
    /// Relative weight; the weights of a device need not sum to 1.
    pub(crate) weight: f64,
}

/// What the kubelet assigned a device (or its MIG instances) to: `Some` only for exactly one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub(crate) whole: Option<PodUid>,
    /// By MIG instance position; missing entries mean unassigned.
    pub(crate) instances: Vec<Option<PodUid>>,
}

impl Assignment {
    fn of(&self, instance: Option<usize>) -> Option<&PodUid> {
        match instance {
            None => self.whole.as_ref(),
            Some(i) => self
                .instances
                .get(i)
                .and_then(Option::as_ref)
                .or(self.whole.as_ref()),
        }
    }
}

/// Turn one device's processes into weighted consumers.
///
/// `owners` holds the cgroup owner of every PID whose `/proc/<pid>/cgroup` could be read; a PID missing
/// from it is unknown to this host's procfs. `instance_sizes` are the MIG instances' relative sizes
/// (empty without MIG).
pub fn consumers(
    processes: &[ProcessUse],
    owners: &HashMap<Pid, CgroupOwner>,
    instance_sizes: &[f64],
    assignment: &Assignment,
) -> Vec<GpuConsumer> {
    // Group processes by MIG instance (a single group `None` without MIG).
    let mut groups: BTreeMap<Option<usize>, Vec<&ProcessUse>> = BTreeMap::new();
    for p in processes {
        let instance = p.instance.filter(|i| *i < instance_sizes.len());
        groups.entry(instance).or_default().push(p);
    }
    if instance_sizes.is_empty() {
        // A device with no process but an exclusive assignment: the pod gets its active energy.
        if groups.is_empty() && assignment.whole.is_some() {
            groups.insert(None, Vec::new());
        }
    } else {
        for (i, pod) in assignment.instances.iter().enumerate() {
            if pod.is_some() && i < instance_sizes.len() {
                groups.entry(Some(i)).or_default();
            }
        }
    }
    let size = |instance: Option<usize>| match instance {
        Some(i) => instance_sizes
            .get(i)
            .copied()
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0),
        None => 1.0,
    };
    let total_size: f64 = groups.keys().map(|i| size(*i)).sum();
    let mut out = Vec::new();
    for (instance, procs) in &groups {
        let group_share = size(*instance) / total_size;
        let assigned = assignment.of(*instance);
        if procs.is_empty() {
            let owner = assigned.map_or(GpuOwner::Unattributed, |p| GpuOwner::Pod(p.clone()));
            out.push(GpuConsumer {
                owner,
                instance: *instance,
                weight: group_share,
            });
            continue;
        }
        let util_sum: f64 = procs
            .iter()
            .filter_map(|p| p.sm_util)
            .filter(|u| u.is_finite() && *u > 0.0)
            .sum();
        for p in procs {
            let fraction = if util_sum > 0.0 {
                p.sm_util
                    .filter(|u| u.is_finite() && *u > 0.0)
                    .unwrap_or(0.0)
                    / util_sum
            } else {
                1.0 / procs.len() as f64
            };
            if fraction <= 0.0 {
                continue;
            }
            let owner = match owners.get(&p.pid) {
                Some(CgroupOwner::Container { pod, container, .. }) => GpuOwner::Container {
                    pod: pod.clone(),
                    container: container.clone(),
                },
                Some(CgroupOwner::PodLevel { pod }) => GpuOwner::Pod(pod.clone()),
                Some(CgroupOwner::OtherContainer { .. } | CgroupOwner::System) => {
                    GpuOwner::Unattributed
                }
                None => assigned.map_or(GpuOwner::Unattributed, |pod| GpuOwner::Pod(pod.clone())),
            };
            out.push(GpuConsumer {
                owner,
                instance: *instance,
                weight: group_share * fraction,
            });
        }
    }
    out
}

/// One device's energy and consumers for the interval; `idle` is clamped into `[0, total]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInput {
    /// Stable device slot, carried through to the output.
    pub slot: usize,
    pub total: Joules,
    pub idle: Joules,
    pub consumers: Vec<GpuConsumer>,
}

/// One device's energy split for the interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DeviceSplit {
    pub(crate) slot: usize,
    pub(crate) total: Joules,
    pub(crate) idle: Joules,
    pub(crate) active: Joules,
    /// Active energy not given to any pod.
    pub(crate) unattributed: Joules,
}

/// A pod's (or one of its containers') energy on one device or MIG instance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GpuShare {
    pub(crate) slot: usize,
    pub(crate) instance: Option<usize>,
    pub(crate) pod: PodUid,
    /// `None`: the pod-level part (no container known).
    pub(crate) container: Option<ContainerId>,
    pub(crate) joules: Joules,
}

/// The result of attributing one interval over every device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuInterval {
    pub(crate) devices: Vec<DeviceSplit>,
    /// Merged by (slot, instance, pod, container), sorted by that key.
    pub(crate) shares: Vec<GpuShare>,
}

/// Split every device's active energy over its consumers.
pub fn attribute_gpu(devices: &[DeviceInput]) -> GpuInterval {
    let mut out = GpuInterval::default();
    type Key = (usize, Option<usize>, PodUid, Option<ContainerId>);
    let mut merged: BTreeMap<Key, f64> = BTreeMap::new();
    for d in devices {
        let usable = |w: f64| w.is_finite() && w > 0.0;
        let total = if usable(d.total.0) { d.total.0 } else { 0.0 };
        let idle = if d.idle.0.is_finite() {
            d.idle.0.clamp(0.0, total)
        } else {
            0.0
        };
        let active = total - idle;
        // Weights are scaled by the largest first, so that huge weights neither overflow the sum
        // nor the product with the energy.
        let largest = d
            .consumers
            .iter()
            .map(|c| c.weight)
            .filter(|w| usable(*w))
            .fold(0.0, f64::max);
        let weight_sum: f64 = d
            .consumers
            .iter()
            .map(|c| c.weight)
            .filter(|w| usable(*w))
            .map(|w| w / largest)
            .sum();
        let mut to_pods = 0.0;
        if weight_sum > 0.0 {
            for c in &d.consumers {
                if !usable(c.weight) {
                    continue;
                }
                let (pod, container) = match &c.owner {
                    GpuOwner::Container { pod, container } => (pod, Some(container)),
                    GpuOwner::Pod(pod) => (pod, None),
                    GpuOwner::Unattributed => continue,
                };
                let joules = active * (c.weight / largest / weight_sum);
                to_pods += joules;
                *merged
                    .entry((d.slot, c.instance, pod.clone(), container.cloned()))
                    .or_insert(0.0) += joules;
            }
        }
        out.devices.push(DeviceSplit {
            slot: d.slot,
            total: Joules(total),
            idle: Joules(idle),
            active: Joules(active),
            unattributed: Joules((active - to_pods).max(0.0)),
        });
    }
    out.shares = merged
        .into_iter()
        .map(|((slot, instance, pod, container), j)| GpuShare {
            slot,
            instance,
            pod,
            container,
            joules: Joules(j),
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uid(n: u32) -> PodUid {
        PodUid::parse(&format!("{n:08x}-0000-0000-0000-000000000000")).unwrap()
    }
    fn cid(n: u32) -> ContainerId {
        ContainerId::parse(&format!("{n:064x}")).unwrap()
    }
    fn in_container(pid: u32, pod: u32) -> (Pid, CgroupOwner) {
        (
            Pid(pid),
            CgroupOwner::Container {
                pod: uid(pod),
                container: cid(pod * 100),
                runtime: None,
            },
        )
    }
    fn proc_use(pid: u32, util: Option<f64>, instance: Option<usize>) -> ProcessUse {
        ProcessUse {
            pid: Pid(pid),
            sm_util: util,
            instance,
        }
    }
    fn device(total: f64, idle: f64, consumers: Vec<GpuConsumer>) -> DeviceInput {
        DeviceInput {
            slot: 0,
            total: Joules(total),
            idle: Joules(idle),
            consumers,
        }
    }
    fn pod_joules(out: &GpuInterval, pod: u32) -> f64 {
        out.shares
            .iter()
            .filter(|s| s.pod == uid(pod))
            .map(|s| s.joules.0)
            .sum()
    }

    #[test]
    fn active_energy_is_split_by_sm_utilisation_share() {
        let owners: HashMap<_, _> = [in_container(10, 1), in_container(20, 2)].into();
        let procs = [
            proc_use(10, Some(300.0), None),
            proc_use(20, Some(100.0), None),
        ];
        let c = consumers(&procs, &owners, &[], &Assignment::default());
        let out = attribute_gpu(&[device(500.0, 100.0, c)]);
        assert_eq!(out.devices[0].active, Joules(400.0));
        assert!((pod_joules(&out, 1) - 300.0).abs() < 1e-9);
        assert!((pod_joules(&out, 2) - 100.0).abs() < 1e-9);
        assert!(out.devices[0].unattributed.0.abs() < 1e-9);
        assert_eq!(out.shares[0].container, Some(cid(100)));
    }

    /// Found by the GPU property test: a weight near `f64::MAX` overflowed `active × weight`, so a
    /// pod received infinite joules.
    #[test]
    fn huge_weights_split_finitely_and_keep_the_identity() {
        let consumer = |pod: u32, weight: f64| GpuConsumer {
            owner: GpuOwner::Pod(uid(pod)),
            instance: None,
            weight,
        };
        let out = attribute_gpu(&[device(
            500.0,
            100.0,
            vec![consumer(1, 1e308), consumer(2, 1e308), consumer(3, 1.0)],
        )]);
        assert!((pod_joules(&out, 1) - 200.0).abs() < 1e-9);
        assert!((pod_joules(&out, 2) - 200.0).abs() < 1e-9);
        assert!(out.shares.iter().all(|s| s.joules.0.is_finite()));
        assert!(out.devices[0].unattributed.0.abs() < 1e-9);
    }

    #[test]
    fn a_device_used_by_one_process_gives_it_all_active_energy() {
        let owners: HashMap<_, _> = [in_container(10, 1)].into();
        for util in [Some(3.0), Some(0.0), None] {
            let c = consumers(
                &[proc_use(10, util, None)],
                &owners,
                &[],
                &Assignment::default(),
            );
            let out = attribute_gpu(&[device(250.0, 50.0, c)]);
            assert!((pod_joules(&out, 1) - 200.0).abs() < 1e-9, "{util:?}");
        }
    }

    #[test]
    fn without_utilisation_processes_share_evenly_and_host_processes_stay_unattributed() {
        let owners: HashMap<_, _> = [in_container(10, 1), (Pid(30), CgroupOwner::System)].into();
        let procs = [proc_use(10, None, None), proc_use(30, None, None)];
        let c = consumers(&procs, &owners, &[], &Assignment::default());
        let out = attribute_gpu(&[device(100.0, 20.0, c)]);
        assert!((pod_joules(&out, 1) - 40.0).abs() < 1e-9);
        assert!((out.devices[0].unattributed.0 - 40.0).abs() < 1e-9);
    }

    #[test]
    fn idle_processes_get_nothing_while_another_computes() {
        // A notebook holding a CUDA context but idle, beside a training job.
        let owners: HashMap<_, _> = [in_container(10, 1), in_container(20, 2)].into();
        let procs = [
            proc_use(10, Some(0.0), None),
            proc_use(20, Some(95.0), None),
        ];
        let c = consumers(&procs, &owners, &[], &Assignment::default());
        let out = attribute_gpu(&[device(300.0, 60.0, c)]);
        assert_eq!(pod_joules(&out, 1), 0.0);
        assert!((pod_joules(&out, 2) - 240.0).abs() < 1e-9);
    }

    #[test]
    fn exclusive_assignment_gives_the_pod_energy_without_visible_processes() {
        let assignment = Assignment {
            whole: Some(uid(7)),
            instances: vec![],
        };
        // No process at all.
        let c = consumers(&[], &HashMap::new(), &[], &assignment);
        let out = attribute_gpu(&[device(300.0, 100.0, c)]);
        assert!((pod_joules(&out, 7) - 200.0).abs() < 1e-9);
        assert_eq!(out.shares[0].container, None);
        // A process in another PID namespace (no /proc entry here) goes to the assigned pod too,
        // while a host process stays unattributed.
        let owners: HashMap<_, _> = [(Pid(30), CgroupOwner::System)].into();
        let procs = [
            proc_use(99, Some(50.0), None),
            proc_use(30, Some(50.0), None),
        ];
        let c = consumers(&procs, &owners, &[], &assignment);
        let out = attribute_gpu(&[device(300.0, 100.0, c)]);
        assert!((pod_joules(&out, 7) - 100.0).abs() < 1e-9);
        assert!((out.devices[0].unattributed.0 - 100.0).abs() < 1e-9);
        // Without the assignment, nothing goes to pods.
        let c = consumers(&[], &HashMap::new(), &[], &Assignment::default());
        let out = attribute_gpu(&[device(300.0, 100.0, c)]);
        assert!(out.shares.is_empty());
        assert_eq!(out.devices[0].unattributed, Joules(200.0));
    }

    #[test]
    fn mig_instances_share_by_size_and_processes_evenly_inside() {
        // Two busy instances: 3g (20 GB) and 1g (5 GB); an idle 3g instance gets nothing.
        let owners: HashMap<_, _> = [
            in_container(10, 1),
            in_container(11, 1),
            in_container(20, 2),
        ]
        .into();
        let procs = [
            proc_use(10, None, Some(0)),
            proc_use(11, None, Some(0)),
            proc_use(20, None, Some(1)),
        ];
        let c = consumers(&procs, &owners, &[20.0, 5.0, 20.0], &Assignment::default());
        let out = attribute_gpu(&[device(600.0, 100.0, c)]);
        assert!((pod_joules(&out, 1) - 400.0).abs() < 1e-9);
        assert!((pod_joules(&out, 2) - 100.0).abs() < 1e-9);
        assert!(out.shares.iter().all(|s| s.instance.is_some()));
        // Pod 1's two processes in one container merge into one share.
        assert_eq!(out.shares.iter().filter(|s| s.pod == uid(1)).count(), 1);
    }

    #[test]
    fn mig_instance_assigned_to_a_pod_counts_as_busy() {
        let assignment = Assignment {
            whole: None,
            instances: vec![None, Some(uid(5))],
        };
        let owners: HashMap<_, _> = [in_container(10, 1)].into();
        let c = consumers(
            &[proc_use(10, None, Some(0))],
            &owners,
            &[10.0, 10.0],
            &assignment,
        );
        let out = attribute_gpu(&[device(300.0, 100.0, c)]);
        assert!((pod_joules(&out, 1) - 100.0).abs() < 1e-9);
        assert!((pod_joules(&out, 5) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn garbage_energy_is_zero_and_idle_is_clamped() {
        let out = attribute_gpu(&[
            device(f64::NAN, 1.0, vec![]),
            DeviceInput {
                slot: 1,
                total: Joules(10.0),
                idle: Joules(50.0),
                consumers: vec![],
            },
        ]);
        assert_eq!(out.devices[0].total, Joules(0.0));
        assert_eq!(out.devices[1].idle, Joules(10.0));
        assert_eq!(out.devices[1].active, Joules(0.0));
    }

    fn rel_close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    proptest! {
        #[test]
        fn conservation_per_device(
            devices in proptest::collection::vec(
                (0.0f64..5e4, 0.0f64..1e4,
                 proptest::collection::vec((0u32..40, proptest::option::of(0.0f64..400.0), 0u8..4, proptest::option::of(0usize..3)), 0..12),
                 proptest::collection::vec(0.0f64..40.0, 0..3),
                 proptest::option::of(0u32..5)),
                1..8),
        ) {
            let mut inputs = Vec::new();
            for (slot, (total, idle, procs, sizes, assigned)) in devices.iter().enumerate() {
                // pid % 4: 0,1 in a container of pod pid%5, 2 pod-level, 3 host; pids >= 36 unknown.
                let mut owners = HashMap::new();
                let mut uses = Vec::new();
                for (pid, util, _, instance) in procs {
                    let owner = match pid % 4 {
                        0 | 1 => CgroupOwner::Container { pod: uid(pid % 5), container: cid(*pid), runtime: None },
                        2 => CgroupOwner::PodLevel { pod: uid(pid % 5) },
                        _ => CgroupOwner::System,
                    };
                    if *pid < 36 {
                        owners.insert(Pid(*pid), owner);
                    }
                    uses.push(ProcessUse { pid: Pid(*pid), sm_util: *util, instance: *instance });
                }
                uses.sort_by_key(|u| u.pid);
                uses.dedup_by_key(|u| u.pid);
                let assignment = Assignment { whole: assigned.map(uid), instances: vec![assigned.map(uid); sizes.len()] };
                let c = consumers(&uses, &owners, sizes, &assignment);
                for x in &c {
                    prop_assert!(x.weight.is_finite() && x.weight >= 0.0);
                }
                inputs.push(DeviceInput { slot, total: Joules(*total), idle: Joules(*idle), consumers: c });
            }
            let out = attribute_gpu(&inputs);
            prop_assert_eq!(out.devices.len(), inputs.len());
            for d in &out.devices {
                prop_assert!(d.idle.0 >= 0.0 && d.active.0 >= 0.0 && d.unattributed.0 >= 0.0);
                prop_assert!(rel_close(d.total.0, d.idle.0 + d.active.0));
                let pods: f64 = out.shares.iter().filter(|s| s.slot == d.slot).map(|s| s.joules.0).sum();
                prop_assert!(out.shares.iter().all(|s| s.joules.0 >= 0.0));
                prop_assert!(pods <= d.active.0 * (1.0 + 1e-12) + 1e-12);
                prop_assert!((d.active.0 - pods - d.unattributed.0).abs() <= 1e-9 * d.active.0.max(1e-12));
            }
        }
    }
}
