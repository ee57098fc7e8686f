//! Cumulative GPU counters across intervals, and the GPU part of the snapshot. Pure: no I/O, time is
//! a monotonic `Duration` passed in. Same rules as the CPU `ledger`: an ended pod keeps its series
//! (power 0) for the grace period, then its joules move into the device's `terminated_pods` counter,
//! so `active = Σ pods + terminated_pods + unattributed` holds per device in every snapshot.
//!
//! The consumer bookkeeping (grace period, terminated pods, power of unseen consumers) is `consumers`,
//! shared with the CPU ledger; only the shape differs: CPU pods carry a dense vector per zone, GPU
//! consumers are sparse (device, MIG instance, pod) keys with one figure each.

use super::attribution::GpuInterval;
use crate::consumers::{Consumers, Energy};
use crate::resource::pods::PodMetadata;
pub(crate) use crate::snapshot::{GpuContainerSeries, GpuDeviceSeries, GpuPodSeries, GpuSnapshot};
use crate::units::{Joules, PodUid, Watts};
use std::time::Duration;

/// Joules and watts of a pod (or container) on one device or MIG instance.
#[derive(Debug, Clone, Default)]
struct Share {
    joules: Joules,
    watts: Watts,
}

impl Share {
    /// Adds a share of this interval (a pod may get several: per container, and pod-level).
    fn add(&mut self, joules: Joules, elapsed_secs: f64) {
        self.joules += joules;
        self.watts += joules.per_seconds(elapsed_secs);
    }
}

impl Energy for Share {
    fn clear_power(&mut self) {
        self.watts = Watts::default();
    }
}

type PodKey = (usize, Option<usize>, PodUid);

/// Cumulative GPU counters of one node; devices by stable slot.
#[derive(Debug, Clone)]
pub(crate) struct GpuLedger {
    devices: Vec<GpuDeviceSeries>,
    pods: Consumers<PodKey, Share>,
}

impl GpuLedger {
    pub(crate) fn new(grace: Duration) -> GpuLedger {
        GpuLedger {
            devices: Vec::new(),
            pods: Consumers::new(grace),
        }
    }

    /// Make sure slot `slot` exists, with its identity.
    pub(crate) fn describe(
        &mut self,
        slot: usize,
        index: u32,
        uuid: &str,
        name: &str,
        method: &'static str,
    ) {
        if self.devices.len() <= slot {
            self.devices.resize_with(slot + 1, GpuDeviceSeries::default);
        }
        let d = &mut self.devices[slot];
        d.index = index;
        if d.uuid != uuid {
            d.uuid = uuid.to_string();
        }
        if d.name != name {
            d.name = name.to_string();
        }
        d.method = method;
    }

    /// Add one interval. Devices absent from `interval` (failed this tick) keep their counters and
    /// show 0 W until their next good reading brings the energy in.
    pub(crate) fn apply(&mut self, interval: &GpuInterval, elapsed_secs: f64, now: Duration) {
        let per_sec = |j: Joules| j.per_seconds(elapsed_secs);
        for d in &mut self.devices {
            (d.watts, d.idle_watts, d.active_watts) = Default::default();
        }
        for split in &interval.devices {
            if self.devices.len() <= split.slot {
                self.devices
                    .resize_with(split.slot + 1, GpuDeviceSeries::default);
            }
            let d = &mut self.devices[split.slot];
            d.total_joules += split.total;
            d.idle_joules += split.idle;
            d.active_joules += split.active;
            d.unattributed_joules += split.unattributed;
            d.watts = per_sec(split.total);
            d.idle_watts = per_sec(split.idle);
            d.active_watts = per_sec(split.active);
        }

        self.pods.begin();
        for share in &interval.shares {
            let key = (share.slot, share.instance, share.pod.clone());
            let acc = self.pods.seen(&key, now, Share::default);
            acc.energy.add(share.joules, elapsed_secs);
            if let Some(c) = &share.container {
                acc.containers
                    .entry(c.clone())
                    .or_default()
                    .add(share.joules, elapsed_secs);
            }
        }
        // An expired pod's joules stay in its device, as terminated pods' energy.
        let devices = &mut self.devices;
        self.pods.end(now, |(slot, _, _), gone| {
            if let Some(d) = devices.get_mut(*slot) {
                d.terminated_pods_joules += gone.energy.joules;
            }
        });
    }

    /// The GPU snapshot, with names from `meta` and MIG UUIDs from `instance_uuid(slot, instance)`.
    pub(crate) fn series(
        &self,
        meta: &dyn PodMetadata,
        instance_uuid: impl Fn(usize, usize) -> Option<String>,
    ) -> GpuSnapshot {
        let mut pods: Vec<GpuPodSeries> = self
            .pods
            .iter()
            .map(|((slot, instance, uid), acc)| {
                let pod_meta = meta.pod(uid);
                let mut containers: Vec<GpuContainerSeries> = acc
                    .containers
                    .iter()
                    .map(|(id, e)| GpuContainerSeries {
                        id: id.clone(),
                        name: meta.container_name(uid, id),
                        joules: e.joules,
                        watts: e.watts,
                    })
                    .collect();
                containers.sort_by(|a, b| a.id.cmp(&b.id));
                GpuPodSeries {
                    device: *slot,
                    instance: instance.and_then(|i| instance_uuid(*slot, i)),
                    uid: uid.clone(),
                    hub: pod_meta.as_ref().and_then(|m| m.hub.clone()),
                    name: pod_meta.as_ref().map(|m| m.name.clone()),
                    namespace: pod_meta.map(|m| m.namespace),
                    ended: acc.ended,
                    joules: acc.energy.joules,
                    watts: acc.energy.watts,
                    containers,
                }
            })
            .collect();
        pods.sort_by(|a, b| (a.device, &a.instance, &a.uid).cmp(&(b.device, &b.instance, &b.uid)));
        GpuSnapshot {
            devices: self.devices.clone(),
            pods,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gpu::attribution::{attribute_gpu, DeviceInput, GpuConsumer, GpuOwner};
    use crate::resource::pods::NoPodMetadata;
    use crate::units::ContainerId;
    use crate::units::Joules;
    use proptest::prelude::*;

    fn uid(n: u32) -> PodUid {
        PodUid::parse(&format!("{n:08x}-0000-0000-0000-000000000000")).unwrap()
    }
    fn cid(n: u32) -> ContainerId {
        ContainerId::parse(&format!("{n:064x}")).unwrap()
    }

    /// One device (slot 0): 100 J, 20 J idle, pods by weight (pod n, container n or pod-level when n is odd).
    fn interval(slot: usize, total: f64, pods: &[(u32, f64)]) -> GpuInterval {
        let consumers = pods
            .iter()
            .map(|(n, w)| GpuConsumer {
                owner: if n % 2 == 0 {
                    GpuOwner::Container {
                        pod: uid(*n),
                        container: cid(*n),
                    }
                } else {
                    GpuOwner::Pod(uid(*n))
                },
                instance: None,
                weight: *w,
            })
            .collect();
        attribute_gpu(&[DeviceInput {
            slot,
            total: Joules(total),
            idle: Joules(total * 0.2),
            consumers,
        }])
    }

    fn check_identities(l: &GpuLedger) {
        assert_identities(&l.series(&NoPodMetadata, |_, _| None));
    }

    /// Per device: `total = idle + active`, `active = Σ pods + unattributed + terminated_pods`;
    /// per pod: `Σ containers ≤ pod`.
    pub(crate) fn assert_identities(s: &GpuSnapshot) {
        if let Err(e) = check_published(s, None) {
            panic!("{e}");
        }
    }

    /// Every published GPU figure finite, joules non-negative and (against `previous`) never going
    /// back, and the identities of `assert_identities`.
    pub(crate) fn check_published(
        s: &GpuSnapshot,
        previous: Option<&GpuSnapshot>,
    ) -> Result<(), String> {
        for (slot, d) in s.devices.iter().enumerate() {
            let joules = [
                d.total_joules.0,
                d.idle_joules.0,
                d.active_joules.0,
                d.unattributed_joules.0,
                d.terminated_pods_joules.0,
            ];
            if joules.iter().any(|j| !j.is_finite() || *j < 0.0) {
                return Err(format!("device {slot} joules: {d:?}"));
            }
            if [d.watts.0, d.idle_watts.0, d.active_watts.0]
                .iter()
                .any(|w| !w.is_finite() || *w < 0.0)
            {
                return Err(format!("device {slot} watts: {d:?}"));
            }
            let pods: f64 = s
                .pods
                .iter()
                .filter(|p| p.device == slot)
                .map(|p| p.joules.0)
                .sum();
            let tol = 1e-9 * d.total_joules.0.max(1.0);
            if (d.total_joules.0 - d.idle_joules.0 - d.active_joules.0).abs() > tol {
                return Err(format!("total != idle + active: {d:?}"));
            }
            if (d.active_joules.0 - pods - d.terminated_pods_joules.0 - d.unattributed_joules.0)
                .abs()
                > tol
            {
                return Err(format!(
                    "active != pods + unattributed + terminated: {d:?} pods {pods}"
                ));
            }
            if let Some(before) = previous.and_then(|p| p.devices.get(slot)) {
                let pairs = [
                    (before.total_joules, d.total_joules),
                    (before.idle_joules, d.idle_joules),
                    (before.active_joules, d.active_joules),
                    (before.unattributed_joules, d.unattributed_joules),
                    (before.terminated_pods_joules, d.terminated_pods_joules),
                ];
                if pairs.iter().any(|(b, a)| a.0 < b.0) {
                    return Err(format!(
                        "device {slot} counter went back: {before:?} -> {d:?}"
                    ));
                }
            }
        }
        for p in &s.pods {
            if !p.joules.0.is_finite() || p.joules.0 < 0.0 || !p.watts.0.is_finite() {
                return Err(format!("pod not finite: {p:?}"));
            }
            if p.containers
                .iter()
                .any(|c| !c.joules.0.is_finite() || c.joules.0 < 0.0 || !c.watts.0.is_finite())
            {
                return Err(format!("container not finite: {p:?}"));
            }
            let cs: f64 = p.containers.iter().map(|c| c.joules.0).sum();
            if cs > p.joules.0 * (1.0 + 1e-12) + 1e-12 {
                return Err(format!("pod < containers: {p:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn ended_pod_keeps_its_series_for_the_grace_period_then_moves_to_terminated() {
        let mut l = GpuLedger::new(Duration::from_secs(10));
        l.describe(0, 0, "GPU-a", "H100", "energy_counter");
        l.apply(
            &interval(0, 100.0, &[(2, 1.0), (4, 1.0)]),
            1.0,
            Duration::from_secs(1),
        );
        l.apply(
            &interval(0, 100.0, &[(2, 1.0)]),
            1.0,
            Duration::from_secs(2),
        );
        let s = l.series(&NoPodMetadata, |_, _| None);
        assert_eq!(s.pods.len(), 2);
        let ended = s.pods.iter().find(|p| p.uid == uid(4)).unwrap();
        assert!(ended.ended);
        assert_eq!(ended.watts, 0.0);
        assert!((ended.joules.0 - 40.0).abs() < 1e-9);
        assert!((s.pods[0].joules.0 - 120.0).abs() < 1e-9);
        assert!((s.pods[0].watts.0 - 80.0).abs() < 1e-9);
        assert_eq!(s.devices[0].uuid, "GPU-a");
        check_identities(&l);
        l.apply(
            &interval(0, 100.0, &[(2, 1.0)]),
            1.0,
            Duration::from_secs(12),
        );
        let s = l.series(&NoPodMetadata, |_, _| None);
        assert_eq!(s.pods.len(), 1);
        assert!((s.devices[0].terminated_pods_joules.0 - 40.0).abs() < 1e-9);
        check_identities(&l);
    }

    #[test]
    fn failed_device_keeps_counters_and_reads_zero_watts() {
        let mut l = GpuLedger::new(Duration::from_secs(10));
        l.apply(&interval(1, 50.0, &[(2, 1.0)]), 1.0, Duration::from_secs(1));
        l.apply(&GpuInterval::default(), 1.0, Duration::from_secs(2));
        let s = l.series(&NoPodMetadata, |_, _| None);
        assert_eq!(s.devices.len(), 2);
        assert_eq!(s.devices[1].total_joules, 50.0);
        assert_eq!(s.devices[1].watts, 0.0);
    }

    proptest! {
        #[test]
        fn identities_hold_in_every_snapshot(
            steps in proptest::collection::vec(
                (0usize..3, 0.0f64..800.0, proptest::collection::vec((0u32..6, 0.0f64..5.0), 0..5)),
                1..30)
        ) {
            let mut l = GpuLedger::new(Duration::from_secs(3));
            for (t, (slot, total, pods)) in steps.iter().enumerate() {
                let mut pods = pods.clone();
                pods.sort_by_key(|p| p.0);
                pods.dedup_by_key(|p| p.0);
                l.apply(&interval(*slot, *total, &pods), 1.0, Duration::from_secs(t as u64));
                check_identities(&l);
            }
        }
    }
}
