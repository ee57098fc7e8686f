//! The cap on pods' CPU time without loss: when pods report more time in an interval than the node
//! was busy (clock skew between sources, time stolen by a hypervisor that a source counts and /proc/stat
//! does not, a slice straddling a tick), the excess is carried into the next interval instead of
//! clipped, up to one interval of the node's busy time (at least 1 % of the interval's CPU
//! capacity: /proc/stat samples busy time in scheduler ticks, so a nearly idle node can read 0).
//! Pure: the caller keeps the `Carry`.

use std::collections::BTreeMap;

use crate::activity::{NodeCpu, PodActivity};
use crate::units::{ContainerId, CpuNanos, PodUid};

/// The least that may be owed, as a fraction of the interval's CPU capacity (elapsed time × CPUs).
pub(crate) const MIN_BOUND: f64 = 0.01;

/// CPU time owed to pods from earlier intervals, per pod and container.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Carry {
    pods: BTreeMap<PodUid, Owed>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Owed {
    pod: f64,
    containers: BTreeMap<ContainerId, f64>,
}

/// One interval's pods, fitted within the node's busy time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fitted {
    /// The pods with what was owed to them added, scaled down where they exceed the busy time.
    pub(crate) pods: Vec<PodActivity>,
    /// Pod time above the busy time, moved into the next interval.
    pub(crate) carried: CpuNanos,
    /// Pod time dropped: above the bound, or owed to a pod that is no longer reported.
    pub(crate) clipped: CpuNanos,
}

impl Carry {
    #[cfg(test)]
    /// Pod time owed from earlier intervals, in all.
    pub(crate) fn owed(&self) -> CpuNanos {
        CpuNanos(self.pods.values().map(|o| o.pod).sum::<f64>().round() as u64)
    }

    /// Adds what is owed to this interval's `pods`. When their time then exceeds the node's busy
    /// time, every pod and container is scaled by the same factor to fit, and the rest is owed to
    /// it in the next interval; what is owed in all is bounded by this interval's busy time (at
    /// least `MIN_BOUND` of its capacity), the excess beyond it is clipped. Pods without containers are left as they are (the model gives
    /// their share to system). An unknown node (a failed /proc/stat read: no capacity) caps nothing.
    pub(crate) fn fit(&mut self, pods: &[PodActivity], node: NodeCpu) -> Fitted {
        let mut owed = std::mem::take(&mut self.pods);
        let mut demand: Vec<(PodActivity, bool)> = pods
            .iter()
            .map(|p| {
                let mut p = p.clone();
                let split = !p.containers.is_empty();
                if let Some(o) = owed.remove(&p.uid).filter(|_| split) {
                    p.cpu_time = add(p.cpu_time, o.pod);
                    for c in &mut p.containers {
                        c.cpu_time =
                            add(c.cpu_time, o.containers.get(&c.id).copied().unwrap_or(0.0));
                    }
                }
                (p, split)
            })
            .collect();
        // Owed to pods no longer reported, or that cannot be split any more: nobody to give it to.
        let mut clipped: f64 = owed.values().map(|o| o.pod).sum();
        let total: f64 = demand
            .iter()
            .filter(|(_, split)| *split)
            .map(|(p, _)| p.cpu_time.as_f64())
            .sum();
        let busy = node.busy.as_f64();
        if node.total.0 == 0 || total <= busy || total <= 0.0 {
            return Fitted {
                pods: demand.into_iter().map(|(p, _)| p).collect(),
                carried: CpuNanos::ZERO,
                clipped: CpuNanos(clipped.round() as u64),
            };
        }
        let fit = busy / total;
        let excess = total - busy;
        let bound = busy.max(node.total.as_f64() * MIN_BOUND);
        let keep = if excess > 0.0 {
            (bound / excess).min(1.0)
        } else {
            1.0
        };
        clipped += excess * (1.0 - keep);
        for (p, split) in &mut demand {
            if !*split {
                continue;
            }
            let mut o = Owed {
                pod: p.cpu_time.as_f64() * (1.0 - fit) * keep,
                containers: BTreeMap::new(),
            };
            p.cpu_time = scale(p.cpu_time, fit);
            for c in &mut p.containers {
                o.containers
                    .insert(c.id.clone(), c.cpu_time.as_f64() * (1.0 - fit) * keep);
                c.cpu_time = scale(c.cpu_time, fit);
            }
            self.pods.insert(p.uid.clone(), o);
        }
        Fitted {
            pods: demand.into_iter().map(|(p, _)| p).collect(),
            carried: CpuNanos((excess * keep).round() as u64),
            clipped: CpuNanos(clipped.round() as u64),
        }
    }
}

fn add(t: CpuNanos, owed: f64) -> CpuNanos {
    CpuNanos((t.as_f64() + owed).round().max(0.0) as u64)
}

fn scale(t: CpuNanos, factor: f64) -> CpuNanos {
    CpuNanos((t.as_f64() * factor).floor().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::attribution::tests::{node, uid};

    /// Pod `n` with one container per entry of `containers`; the pod's time is their sum.
    fn pod(n: u32, containers: &[u64]) -> PodActivity {
        crate::attribution::tests::pod(n, containers.iter().sum(), containers)
    }
    fn times(f: &Fitted) -> Vec<u64> {
        f.pods.iter().map(|p| p.cpu_time.0).collect()
    }

    #[test]
    fn pods_within_busy_time_pass_unchanged() {
        let mut carry = Carry::default();
        let pods = [pod(1, &[600]), pod(2, &[100, 200])];
        let f = carry.fit(&pods, node(1_000));
        assert_eq!(f.pods, pods);
        assert_eq!((f.carried, f.clipped), (CpuNanos::ZERO, CpuNanos::ZERO));
        assert_eq!(carry.owed(), CpuNanos::ZERO);
    }

    #[test]
    fn a_late_slice_is_carried_into_the_next_interval_not_lost() {
        // A slice straddling a tick: 2 s of the pod's time arrive in an interval that was 1 s busy.
        let mut carry = Carry::default();
        let f = carry.fit(&[pod(1, &[2_000])], node(1_000));
        assert_eq!(times(&f), vec![1_000]);
        assert_eq!(f.carried, CpuNanos(1_000));
        assert_eq!(f.clipped, CpuNanos::ZERO);
        // Next interval: the node was busier than the pod reported; the owed second fits.
        let f = carry.fit(&[pod(1, &[500])], node(1_600));
        assert_eq!(times(&f), vec![1_500]);
        assert_eq!(carry.owed(), CpuNanos::ZERO);
        assert_eq!(f.pods[0].containers[0].cpu_time, CpuNanos(1_500));
    }

    #[test]
    fn what_is_owed_is_bounded_by_one_interval_of_busy_time() {
        let mut carry = Carry::default();
        let f = carry.fit(&[pod(1, &[3_000])], node(1_000));
        assert_eq!(times(&f), vec![1_000]);
        assert_eq!(f.carried, CpuNanos(1_000));
        assert_eq!(f.clipped, CpuNanos(1_000));
        assert_eq!(carry.owed(), CpuNanos(1_000));
    }

    #[test]
    fn a_node_read_as_idle_still_owes_up_to_a_hundredth_of_its_capacity() {
        // /proc/stat counted no busy tick in the interval, yet the pod ran 3 ms.
        let mut carry = Carry::default();
        let idle = NodeCpu {
            busy: CpuNanos::ZERO,
            total: CpuNanos(2_000_000_000),
        };
        let f = carry.fit(&[pod(1, &[3_000_000])], idle);
        assert_eq!(times(&f), vec![0]);
        assert_eq!(
            (f.carried, f.clipped),
            (CpuNanos(3_000_000), CpuNanos::ZERO)
        );
        let f = carry.fit(&[pod(1, &[1_000_000])], node(8_000_000));
        assert_eq!(times(&f), vec![4_000_000]);
    }

    #[test]
    fn pods_and_containers_scale_alike_and_owe_in_proportion() {
        let mut carry = Carry::default();
        let f = carry.fit(&[pod(1, &[300, 100]), pod(2, &[400])], node(400));
        assert_eq!(times(&f), vec![200, 200]);
        let c: Vec<u64> = f.pods[0].containers.iter().map(|c| c.cpu_time.0).collect();
        assert_eq!(c, vec![150, 50]);
        assert_eq!(f.carried, CpuNanos(400));
        // Next interval, room for everything: each gets its own share back.
        let f = carry.fit(&[pod(1, &[0, 0]), pod(2, &[0])], node(1_000));
        assert_eq!(times(&f), vec![200, 200]);
        let c: Vec<u64> = f.pods[0].containers.iter().map(|c| c.cpu_time.0).collect();
        assert_eq!(c, vec![150, 50]);
    }

    #[test]
    fn owed_to_a_pod_that_is_gone_is_clipped() {
        let mut carry = Carry::default();
        carry.fit(&[pod(1, &[2_000])], node(1_000));
        let f = carry.fit(&[pod(2, &[100])], node(1_000));
        assert_eq!(times(&f), vec![100]);
        assert_eq!(f.clipped, CpuNanos(1_000));
        assert_eq!(carry.owed(), CpuNanos::ZERO);
    }

    #[test]
    fn an_unknown_node_caps_nothing_and_pods_without_containers_are_left_alone() {
        let mut carry = Carry::default();
        let unknown = NodeCpu::default();
        let f = carry.fit(&[pod(1, &[2_000])], unknown);
        assert_eq!(times(&f), vec![2_000]);
        assert_eq!(f.carried, CpuNanos::ZERO);
        let bare = PodActivity {
            uid: uid(3),
            cpu_time: CpuNanos(5_000),
            containers: Vec::new(),
        };
        let f = carry.fit(&[bare.clone(), pod(1, &[500])], node(1_000));
        assert_eq!(f.pods[0], bare);
        assert_eq!(times(&f), vec![5_000, 500]);
    }

    proptest! {
        /// Over any sequence of intervals, every nanosecond pods reported is granted in some
        /// interval, still owed, or counted as clipped; no interval grants more than it was busy.
        #[test]
        fn pod_time_is_granted_owed_or_clipped(
            intervals in proptest::collection::vec(
                (0u64..4_000_000_000, proptest::collection::vec(0u64..2_000_000_000, 1..4)),
                1..30),
        ) {
            let mut carry = Carry::default();
            let (mut reported, mut granted, mut clipped) = (0f64, 0f64, 0f64);
            for (busy, times) in &intervals {
                let pods: Vec<PodActivity> = times
                    .iter()
                    .enumerate()
                    .map(|(i, t)| pod(i as u32, &[*t]))
                    .collect();
                reported += times.iter().sum::<u64>() as f64;
                let f = carry.fit(&pods, node(*busy));
                let g: f64 = f.pods.iter().map(|p| p.cpu_time.as_f64()).sum();
                prop_assert!(g <= *busy as f64 + 1.0);
                let bound = (*busy as f64).max(node(*busy).total.as_f64() * MIN_BOUND);
                prop_assert!(carry.owed().as_f64() <= bound + 1.0);
                for p in &f.pods {
                    let c: u64 = p.containers.iter().map(|c| c.cpu_time.0).sum();
                    prop_assert_eq!(c, p.cpu_time.0);
                }
                granted += g;
                clipped += f.clipped.as_f64();
            }
            let balance = granted + carry.owed().as_f64() + clipped;
            // Rounding: at most a few nanoseconds per pod and interval.
            prop_assert!((balance - reported).abs() <= 4.0 * intervals.len() as f64 * 4.0,
                "reported {} vs granted {} + owed {} + clipped {}", reported, granted, carry.owed().0, clipped);
        }
    }
}
