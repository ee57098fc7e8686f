//! The idle-power estimator: decides how much of a zone's interval energy is idle. Pure state machine:
//! no I/O, no clock (elapsed time is an input). Order of preference: the source's own idle figure (the
//! estimate knows it), a configured idle power, then the lowest power seen at low utilisation.

use crate::units::{Joules, Watts, ZoneKind};
use std::collections::BTreeMap;

/// Default utilisation at or below which an interval's power is taken as an idle sample.
pub const DEFAULT_LEARN_MAX_USAGE: f64 = 0.10;

#[derive(Debug, Clone, Default)]
struct Learned {
    /// Lowest power seen with utilisation <= learn_max_usage.
    low_usage_min: Option<f64>,
    /// Lowest power seen at any utilisation: an upper bound of idle, used until a low-usage sample.
    any_min: Option<f64>,
}

/// How the idle part of a zone's energy is decided for each interval.
///
/// The learned estimate is the lowest power seen at low utilisation (an idle node's power); until the
/// node has been seen that quiet, the lowest power seen at all. It only ever goes down, so it is stable
/// and never collapses to 0 at high load (Kepler's `idle = ΔE × (1 − usage)` does). It is clamped to
/// the interval's energy, so active energy is never negative.
#[derive(Debug, Clone)]
pub struct IdleEstimator {
    configured: BTreeMap<ZoneKind, Watts>,
    learn_max_usage: f64,
    learned: BTreeMap<ZoneKind, Learned>,
}

impl IdleEstimator {
    pub fn new(configured: BTreeMap<ZoneKind, Watts>, learn_max_usage: f64) -> IdleEstimator {
        IdleEstimator {
            configured,
            learn_max_usage: learn_max_usage.clamp(0.0, 1.0),
            learned: BTreeMap::new(),
        }
    }

    /// The idle energy of `zone` for an interval of `elapsed_secs` in which it used `total` joules at
    /// node CPU utilisation `usage`. `hint` is the source's own idle energy, when it has one.
    pub fn idle_energy(
        &mut self,
        zone: ZoneKind,
        total: Joules,
        hint: Option<Joules>,
        usage: f64,
        elapsed_secs: f64,
    ) -> Joules {
        if !total.0.is_finite() {
            return Joules::ZERO;
        }
        let total_j = total.0.max(0.0);
        if let Some(h) = hint.filter(|h| h.0.is_finite()) {
            return Joules(h.0.clamp(0.0, total_j));
        }
        if let Some(w) = self.configured.get(&zone) {
            return Joules(w.over_seconds(elapsed_secs).0.clamp(0.0, total_j));
        }
        if elapsed_secs <= 0.0 {
            return Joules(total_j);
        }
        let power = total_j / elapsed_secs;
        let learned = self.learned.entry(zone).or_default();
        learned.any_min = Some(learned.any_min.map_or(power, |m| m.min(power)));
        if usage.is_finite() && usage <= self.learn_max_usage {
            learned.low_usage_min = Some(learned.low_usage_min.map_or(power, |m| m.min(power)));
        }
        let idle_watts = learned.low_usage_min.or(learned.any_min).unwrap_or(power);
        Joules((idle_watts * elapsed_secs).clamp(0.0, total_j))
    }

    /// Current idle power per zone (learned or configured), for logs and `top`.
    pub fn idle_watts(&self, zone: ZoneKind) -> Option<Watts> {
        self.configured.get(&zone).copied().or_else(|| {
            self.learned
                .get(&zone)
                .and_then(|l| l.low_usage_min.or(l.any_min))
                .map(Watts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_hint_wins_and_is_clamped() {
        let mut e = IdleEstimator::new(BTreeMap::new(), 0.1);
        let idle = e.idle_energy(ZoneKind::Package, Joules(10.0), Some(Joules(3.0)), 0.5, 1.0);
        assert_eq!(idle, Joules(3.0));
        let idle = e.idle_energy(
            ZoneKind::Package,
            Joules(10.0),
            Some(Joules(30.0)),
            0.5,
            1.0,
        );
        assert_eq!(idle, Joules(10.0));
    }

    #[test]
    fn configured_watts_times_elapsed() {
        let mut cfg = BTreeMap::new();
        cfg.insert(ZoneKind::Package, Watts(20.0));
        let mut e = IdleEstimator::new(cfg, 0.1);
        assert_eq!(
            e.idle_energy(ZoneKind::Package, Joules(300.0), None, 0.9, 3.0),
            Joules(60.0)
        );
        // Never more than the interval's energy.
        assert_eq!(
            e.idle_energy(ZoneKind::Package, Joules(30.0), None, 0.9, 3.0),
            Joules(30.0)
        );
    }

    #[test]
    fn learned_idle_does_not_collapse_at_high_load() {
        let mut e = IdleEstimator::new(BTreeMap::new(), 0.1);
        // A quiet interval at 25 W teaches the idle power.
        e.idle_energy(ZoneKind::Package, Joules(25.0), None, 0.05, 1.0);
        // Then a long period at full load, 100 W: idle stays 25 W.
        for _ in 0..100 {
            let idle = e.idle_energy(ZoneKind::Package, Joules(100.0), None, 1.0, 1.0);
            assert_eq!(idle, Joules(25.0));
        }
        assert_eq!(e.idle_watts(ZoneKind::Package), Some(Watts(25.0)));
    }

    #[test]
    fn before_a_quiet_interval_the_lowest_power_seen_bounds_idle() {
        let mut e = IdleEstimator::new(BTreeMap::new(), 0.1);
        assert_eq!(
            e.idle_energy(ZoneKind::Dram, Joules(80.0), None, 0.9, 1.0),
            Joules(80.0)
        );
        assert_eq!(
            e.idle_energy(ZoneKind::Dram, Joules(60.0), None, 0.5, 1.0),
            Joules(60.0)
        );
        assert_eq!(
            e.idle_energy(ZoneKind::Dram, Joules(90.0), None, 0.9, 1.0),
            Joules(60.0)
        );
        // A low-usage sample replaces the bound even if it is higher than a busy one's power would be.
        assert_eq!(
            e.idle_energy(ZoneKind::Dram, Joules(40.0), None, 0.02, 1.0),
            Joules(40.0)
        );
        assert_eq!(
            e.idle_energy(ZoneKind::Dram, Joules(90.0), None, 0.9, 1.0),
            Joules(40.0)
        );
    }

    #[test]
    fn zones_learn_independently_and_garbage_is_safe() {
        let mut e = IdleEstimator::new(BTreeMap::new(), 0.1);
        e.idle_energy(ZoneKind::Package, Joules(10.0), None, 0.0, 1.0);
        e.idle_energy(ZoneKind::Dram, Joules(2.0), None, 0.0, 1.0);
        assert_eq!(e.idle_watts(ZoneKind::Package), Some(Watts(10.0)));
        assert_eq!(e.idle_watts(ZoneKind::Dram), Some(Watts(2.0)));
        assert_eq!(
            e.idle_energy(ZoneKind::Core, Joules(f64::NAN), None, f64::NAN, 1.0),
            Joules(0.0)
        );
        assert_eq!(
            e.idle_energy(ZoneKind::Core, Joules(5.0), None, 0.0, 0.0),
            Joules(5.0)
        );
    }
}
