//! The bookkeeping every ledger shares (CPU zones and GPU devices alike): cumulative energy per
//! consumer (a pod, with its containers) across intervals, the grace period of a consumer that was not
//! seen, and the hand-over of an expired consumer's joules to its scope's `terminated_pods` counter, so
//! no joule leaves the identities. Pure: no I/O; time is a monotonic `Duration` passed in.
//!
//! One rule for power: a consumer (or container) not seen in an interval reads 0 W; so does a scope
//! without a reading. Energy that arrives late arrives with the next good reading.

use crate::units::ContainerId;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Cumulative joules and the last interval's watts of one consumer, in every scope it uses: a
/// vector indexed like the ledger's zones (CPU), or one figure (a GPU device or MIG instance).
pub(crate) trait Energy: Clone {
    /// The consumer drew nothing this interval (so far): every power figure to 0.
    fn clear_power(&mut self);
}

/// One consumer: its energy, its containers' energy, and whether it was seen this interval.
#[derive(Debug, Clone)]
pub struct Consumer<E> {
    pub(crate) energy: E,
    pub(crate) containers: HashMap<ContainerId, E>,
    /// Not seen in the last interval; its series stay (0 W) for the grace period.
    pub(crate) ended: bool,
    last_seen: Duration,
}

/// Every consumer of one ledger, by key (`PodUid` for CPU, (device, instance, pod) for GPU).
#[derive(Debug, Clone)]
pub(crate) struct Consumers<K, E> {
    map: HashMap<K, Consumer<E>>,
    grace: Duration,
}

impl<K: Hash + Eq + Clone, E: Energy> Consumers<K, E> {
    pub(crate) fn new(grace: Duration) -> Consumers<K, E> {
        Consumers {
            map: HashMap::new(),
            grace,
        }
    }

    /// Start an interval: every consumer is ended, at 0 W, until it is seen again.
    pub(crate) fn begin(&mut self) {
        for c in self.map.values_mut() {
            c.ended = true;
            c.energy.clear_power();
            for e in c.containers.values_mut() {
                e.clear_power();
            }
        }
    }

    /// A consumer seen in this interval (created with `new` energy the first time).
    pub(crate) fn seen(
        &mut self,
        key: &K,
        now: Duration,
        new: impl FnOnce() -> E,
    ) -> &mut Consumer<E> {
        let c = self.map.entry(key.clone()).or_insert_with(|| Consumer {
            energy: new(),
            containers: HashMap::new(),
            ended: false,
            last_seen: now,
        });
        c.ended = false;
        c.last_seen = now;
        c
    }

    /// End an interval: every ended consumer whose grace period has passed is removed and handed to
    /// `expired`, which moves its joules into its scope's terminated counter.
    pub(crate) fn end(&mut self, now: Duration, mut expired: impl FnMut(&K, Consumer<E>)) {
        let grace = self.grace;
        let gone: Vec<K> = self
            .map
            .iter()
            .filter(|(_, c)| c.ended && now.saturating_sub(c.last_seen) > grace)
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for key in gone {
            if let Some(c) = self.map.remove(&key) {
                expired(&key, c);
            }
        }
        crate::heap::release_room(&mut self.map);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &Consumer<E>)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq)]
    struct E(f64, f64);
    impl Energy for E {
        fn clear_power(&mut self) {
            self.1 = 0.0;
        }
    }

    #[test]
    fn an_unseen_consumer_reads_0_w_and_expires_after_the_grace_period_with_its_joules() {
        let mut c: Consumers<u32, E> = Consumers::new(Duration::from_secs(10));
        c.begin();
        let a = c.seen(&1, Duration::ZERO, E::default);
        a.energy = E(5.0, 5.0);
        a.containers
            .insert(ContainerId::parse(&"a".repeat(64)).unwrap(), E(5.0, 5.0));
        c.end(Duration::ZERO, |_, _| panic!("nothing expires yet"));
        // Not seen for 10 s: ended, 0 W, still there.
        c.begin();
        c.end(Duration::from_secs(10), |_, _| {
            panic!("within the grace period")
        });
        let (_, a) = c.iter().next().unwrap();
        assert!(a.ended);
        assert_eq!(a.energy, E(5.0, 0.0));
        assert!(a.containers.values().all(|e| e.1 == 0.0));
        // Seen again within the grace period: it continues.
        c.begin();
        assert_eq!(
            c.seen(&1, Duration::from_secs(11), E::default).energy.0,
            5.0
        );
        c.end(Duration::from_secs(11), |_, _| panic!("seen"));
        // Then gone for longer than the grace period: handed over once, with its joules.
        let mut handed = Vec::new();
        c.begin();
        c.end(Duration::from_secs(22), |k, gone| {
            handed.push((*k, gone.energy.0))
        });
        assert_eq!(handed, [(1, 5.0)]);
        assert_eq!(c.iter().count(), 0);
    }
}
