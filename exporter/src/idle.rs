//! The idle-power estimator for every scope (CPU zones and GPU devices): decides how much of a scope's
//! interval energy is idle. Pure state machine: no I/O, no clock (elapsed time is an input).
//!
//! Order of preference: the source's own idle figure (the estimate knows it), a configured idle power
//! (`--idle-watts`, `--gpu-idle-watts`), then the learned one. Learned idle is the power at zero
//! utilisation: a robust line (Siegel's repeated median: per interval the median of its pairwise
//! slopes, the median of those, then the median intercept) through the (utilisation, power) pairs of the recent intervals, extrapolated to zero. It needs
//! neither a quiet node nor a quiet moment, only some spread of utilisation; single outliers move
//! neither median; and as old intervals leave the window it follows a changed idle (a BIOS power
//! setting). Until the window holds enough spread, and whenever the fit is implausible (power falling
//! with load), the last good fit stands; before any fit, the lowest power averaged over
//! `SHORT_WINDOW_SECS` within the window (an upper bound of idle). Idle never collapses towards 0 at
//! high load (Kepler's `idle = ΔE × (1 − usage)` does): a steady load adds no spread, so it changes
//! nothing. Every figure is clamped to the interval's energy, so active energy is never negative.

use crate::units::{Joules, Watts, ZoneKind};
use std::collections::{BTreeMap, VecDeque};

/// A scope of the energy model whose idle power is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A CPU energy zone of the node (all sockets together).
    Cpu(ZoneKind),
    /// A GPU device, by its sampler slot (a swapped GPU gets a new slot, so it learns afresh).
    Gpu(usize),
}

/// Intervals older than this leave the fit's window.
pub(crate) const WINDOW_SECS: f64 = 300.0;
/// At most this many intervals in the window (3 minutes at the default 3 s tick; 3,540 slopes per fit).
pub(crate) const MAX_SAMPLES: usize = 60;
/// The line is refitted every this many intervals (between fits the last one stands).
const REFIT_EVERY: u32 = 10;
/// Two intervals whose utilisations differ by less than this give no slope (too noisy).
const MIN_PAIR_SPREAD: f64 = 0.05;
/// A fit needs at least this many slopes.
const MIN_PAIRS: usize = 20;
/// Before the first fit, idle is the lowest power averaged over this long (one interval's power is
/// noisy, and the lowest of many noisy readings is biased low: an H200's lowest 1 s reading at rest was
/// 10 % under its real idle).
pub(crate) const SHORT_WINDOW_SECS: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Utilisation in [0, 1]; `None` where it could not be read (the interval then never enters a fit).
    usage: Option<f64>,
    watts: f64,
    secs: f64,
}

/// What one scope has learned.
#[derive(Debug, Clone, Default)]
struct Learner {
    samples: VecDeque<Sample>,
    span_secs: f64,
    fitted: Option<f64>,
    since_fit: u32,
}

impl Learner {
    fn observe(&mut self, sample: Sample, scratch: &mut Scratch) {
        self.samples.push_back(sample);
        self.span_secs += sample.secs;
        while self.samples.len() > MAX_SAMPLES
            || (self.samples.len() > 1 && self.span_secs > WINDOW_SECS)
        {
            if let Some(old) = self.samples.pop_front() {
                self.span_secs -= old.secs;
            }
        }
        self.since_fit += 1;
        if self.fitted.is_none() || self.since_fit >= REFIT_EVERY {
            if let Some(w) = fit(&self.samples, scratch) {
                self.fitted = Some(w);
                self.since_fit = 0;
            }
        }
    }

    fn watts(&self) -> Option<f64> {
        self.fitted.or_else(|| lowest_short_average(&self.samples))
    }
}

/// Repeated-median (Siegel) intercept at zero utilisation, or `None` without enough spread or with
/// a falling line. For each interval, the median of its slopes to every other interval far enough
/// away in utilisation; the line's slope is the median of those, its intercept the median of
/// `power − slope × utilisation`. Up to half the intervals can be outliers without moving it.
fn fit(samples: &VecDeque<Sample>, scratch: &mut Scratch) -> Option<f64> {
    scratch.medians.clear();
    let mut pairs = 0usize;
    for a in samples {
        let Some(ua) = a.usage else { continue };
        scratch.slopes.clear();
        for b in samples {
            let Some(ub) = b.usage else { continue };
            let du = ub - ua;
            if du.abs() >= MIN_PAIR_SPREAD {
                scratch.slopes.push((b.watts - a.watts) / du);
            }
        }
        pairs += scratch.slopes.len();
        if let Some(m) = median(&mut scratch.slopes) {
            scratch.medians.push(m);
        }
    }
    // Every pair was counted from both ends.
    if pairs / 2 < MIN_PAIRS {
        return None;
    }
    let slope = median(&mut scratch.medians)?;
    if slope < 0.0 {
        return None;
    }
    scratch.slopes.clear();
    scratch.slopes.extend(
        samples
            .iter()
            .filter_map(|s| s.usage.map(|u| s.watts - slope * u)),
    );
    median(&mut scratch.slopes).map(|w| w.max(0.0))
}

/// Buffers the fit reuses from one call to the next (no allocation per tick once warm).
#[derive(Debug, Clone, Default)]
struct Scratch {
    slopes: Vec<f64>,
    medians: Vec<f64>,
}

/// Median of finite values (reorders `values`).
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let len = values.len();
    let mid = len / 2;
    let (low, m, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *m;
    if len % 2 == 1 {
        return Some(upper);
    }
    let lower = low.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lower + upper) / 2.0)
}

/// The lowest power averaged over `SHORT_WINDOW_SECS` within the window; with less than that in the
/// window, the average of all of it.
fn lowest_short_average(samples: &VecDeque<Sample>) -> Option<f64> {
    let (mut joules, mut secs) = (0.0, 0.0);
    let mut lowest: Option<f64> = None;
    let mut start = 0;
    for s in samples {
        joules += s.watts * s.secs;
        secs += s.secs;
        // Drop the oldest while what remains still spans a full short window.
        while let Some(old) = samples.get(start) {
            if secs - old.secs < SHORT_WINDOW_SECS || start + 1 >= samples.len() {
                break;
            }
            joules -= old.watts * old.secs;
            secs -= old.secs;
            start += 1;
        }
        if secs >= SHORT_WINDOW_SECS {
            let w = joules / secs;
            lowest = Some(lowest.map_or(w, |l: f64| l.min(w)));
        }
    }
    lowest.or_else(|| {
        let (j, s) = samples
            .iter()
            .fold((0.0, 0.0), |(j, t), x| (j + x.watts * x.secs, t + x.secs));
        (s > 0.0).then(|| j / s)
    })
}

/// How the idle part of each scope's energy is decided, interval by interval.
#[derive(Debug, Clone, Default)]
pub struct IdleEstimator {
    configured_cpu: BTreeMap<ZoneKind, Watts>,
    configured_gpu: Option<Watts>,
    learned: BTreeMap<Scope, Learner>,
    scratch: Scratch,
}

impl IdleEstimator {
    /// `cpu`: configured idle power per CPU zone; `gpu`: configured idle power of every GPU device.
    pub(crate) fn new(cpu: BTreeMap<ZoneKind, Watts>, gpu: Option<Watts>) -> IdleEstimator {
        IdleEstimator {
            configured_cpu: cpu,
            configured_gpu: gpu,
            ..IdleEstimator::default()
        }
    }

    fn configured(&self, scope: Scope) -> Option<Watts> {
        match scope {
            Scope::Cpu(zone) => self.configured_cpu.get(&zone).copied(),
            Scope::Gpu(_) => self.configured_gpu,
        }
    }

    /// The idle energy of `scope` for an interval of `elapsed_secs` in which it used `total` joules at
    /// utilisation `usage` (0..=1; `None` where unknown). `hint` is the source's own idle energy,
    /// when it has one.
    pub fn idle_energy(
        &mut self,
        scope: Scope,
        total: Joules,
        hint: Option<Joules>,
        usage: Option<f64>,
        elapsed_secs: f64,
    ) -> Joules {
        if !total.0.is_finite() || !elapsed_secs.is_finite() {
            return Joules::ZERO;
        }
        let total_j = total.0.max(0.0);
        if let Some(h) = hint.filter(|h| h.0.is_finite()) {
            return Joules(h.0.clamp(0.0, total_j));
        }
        if let Some(w) = self.configured(scope) {
            return Joules(w.over_seconds(elapsed_secs).0.clamp(0.0, total_j));
        }
        if elapsed_secs <= 0.0 {
            return Joules(total_j);
        }
        let sample = Sample {
            usage: usage.filter(|u| u.is_finite()).map(|u| u.clamp(0.0, 1.0)),
            watts: total_j / elapsed_secs,
            secs: elapsed_secs,
        };
        let learner = self.learned.entry(scope).or_default();
        learner.observe(sample, &mut self.scratch);
        let idle_watts = learner.watts().unwrap_or(sample.watts);
        Joules((idle_watts * elapsed_secs).clamp(0.0, total_j))
    }

    #[cfg(test)]
    /// Current idle power of a scope (configured or learned), for logs and tests.
    pub(crate) fn idle_watts(&self, scope: Scope) -> Option<Watts> {
        self.configured(scope)
            .or_else(|| self.learned.get(&scope).and_then(Learner::watts).map(Watts))
    }

    #[cfg(test)]
    /// Whether a scope's learned idle comes from a fit (not the before-the-fit upper bound).
    pub(crate) fn is_fitted(&self, scope: Scope) -> bool {
        self.learned.get(&scope).is_some_and(|l| l.fitted.is_some())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const PKG: Scope = Scope::Cpu(ZoneKind::Package);

    #[test]
    fn source_hint_wins_and_is_clamped() {
        let mut e = IdleEstimator::default();
        let idle = e.idle_energy(PKG, Joules(10.0), Some(Joules(3.0)), Some(0.5), 1.0);
        assert_eq!(idle, Joules(3.0));
        let idle = e.idle_energy(PKG, Joules(10.0), Some(Joules(30.0)), Some(0.5), 1.0);
        assert_eq!(idle, Joules(10.0));
    }

    #[test]
    fn configured_watts_times_elapsed_for_cpu_and_gpu() {
        let mut cfg = BTreeMap::new();
        cfg.insert(ZoneKind::Package, Watts(20.0));
        let mut e = IdleEstimator::new(cfg, Some(Watts(50.0)));
        assert_eq!(
            e.idle_energy(PKG, Joules(300.0), None, Some(0.9), 3.0),
            Joules(60.0)
        );
        // Never more than the interval's energy.
        assert_eq!(
            e.idle_energy(PKG, Joules(30.0), None, Some(0.9), 3.0),
            Joules(30.0)
        );
        assert_eq!(
            e.idle_energy(Scope::Gpu(3), Joules(400.0), None, None, 2.0),
            Joules(100.0)
        );
        assert_eq!(e.idle_watts(Scope::Gpu(0)), Some(Watts(50.0)));
        // A zone without a configured figure learns.
        assert_eq!(
            e.idle_energy(Scope::Cpu(ZoneKind::Dram), Joules(7.0), None, None, 1.0),
            Joules(7.0)
        );
    }

    /// A deterministic pseudo-random sequence in [0, 1) (xorshift), so tests are reproducible.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }
        pub(crate) fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Feeds `secs` 1 s intervals of a node whose power is `idle + slope × usage`, with usage from
    /// `usage(t)` and each interval's power multiplied by `factor(t)`; returns the learned idle.
    fn learn(
        e: &mut IdleEstimator,
        scope: Scope,
        idle: f64,
        slope: f64,
        secs: usize,
        mut usage: impl FnMut(usize) -> f64,
        mut factor: impl FnMut(usize) -> f64,
    ) -> f64 {
        for t in 0..secs {
            let u = usage(t);
            let watts = (idle + slope * u) * factor(t);
            let got = e.idle_energy(scope, Joules(watts), None, Some(u), 1.0);
            assert!(got.0 >= 0.0 && got.0 <= watts + 1e-9);
        }
        e.idle_watts(scope).map(|w| w.0).unwrap_or(f64::NAN)
    }

    fn within(learned: f64, truth: f64, tolerance: f64) -> bool {
        ((learned - truth) / truth).abs() <= tolerance
    }

    /// The three loads the learned idle must handle within 5 % after 60 s, on a node whose power
    /// is `idle + slope × usage`: (usage at second t, power factor at second t).
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Load {
        /// 20 s at 1 %, then 20–90 %.
        QuietPhase,
        /// 30–100 %, never quieter.
        NeverBelow30,
        /// 0–100 %, with every seventh second's power 1.5× or 0.5× (never the 60th).
        SpikesAndDips,
    }

    impl Load {
        pub(crate) const ALL: [Load; 3] =
            [Load::QuietPhase, Load::NeverBelow30, Load::SpikesAndDips];

        /// Usage and power factor for each second, reproducible per load.
        pub(crate) fn script(self, secs: usize) -> Vec<(f64, f64)> {
            let (mut rng, mut coin) = (Rng::new(7 + self as u64), Rng::new(17));
            (0..secs)
                .map(|t| match self {
                    Load::QuietPhase if t < 20 => (0.01, 1.0),
                    Load::QuietPhase => (0.2 + 0.7 * rng.next(), 1.0),
                    Load::NeverBelow30 => (0.3 + 0.7 * rng.next(), 1.0),
                    Load::SpikesAndDips => {
                        let spike = if coin.next() < 0.5 { 1.5 } else { 0.5 };
                        (rng.next(), if t % 7 == 2 { spike } else { 1.0 })
                    }
                })
                .collect()
        }
    }

    #[test]
    fn every_load_learns_idle_within_5_percent_in_60_s() {
        for load in Load::ALL {
            let script = load.script(60);
            let mut e = IdleEstimator::default();
            let learned = learn(
                &mut e,
                PKG,
                40.0,
                120.0,
                60,
                |t| script[t].0,
                |t| script[t].1,
            );
            assert!(within(learned, 40.0, 0.05), "{load:?}: learned {learned} W");
            assert!(e.is_fitted(PKG), "{load:?}");
        }
        // The old rule (lowest power seen) said at least 40 + 120 × 0.3 = 76 W on a node never
        // below 30 %.
    }

    #[test]
    fn one_deep_dip_no_longer_lowers_idle_for_good() {
        let mut rng = Rng::new(9);
        let mut e = IdleEstimator::default();
        let learned = learn(
            &mut e,
            PKG,
            40.0,
            120.0,
            200,
            |_| rng.next(),
            |t| if t == 0 { 0.1 } else { 1.0 },
        );
        assert!(within(learned, 40.0, 0.05), "learned {learned} W");
    }

    #[test]
    fn a_steady_high_load_keeps_the_fitted_idle_instead_of_collapsing() {
        let mut rng = Rng::new(13);
        let mut e = IdleEstimator::default();
        learn(&mut e, PKG, 40.0, 120.0, 60, |_| rng.next(), |_| 1.0);
        // Hours at 100 %: no spread, no new fit; idle stays.
        let learned = learn(&mut e, PKG, 40.0, 120.0, 3600, |_| 1.0, |_| 1.0);
        assert!(within(learned, 40.0, 0.01), "learned {learned} W");
    }

    #[test]
    fn a_changed_idle_is_followed_within_the_window() {
        let mut rng = Rng::new(17);
        let mut e = IdleEstimator::default();
        learn(&mut e, PKG, 40.0, 120.0, 120, |_| rng.next(), |_| 1.0);
        // A BIOS power setting lowers idle to 25 W.
        let learned = learn(&mut e, PKG, 25.0, 120.0, 120, |_| rng.next(), |_| 1.0);
        assert!(within(learned, 25.0, 0.05), "learned {learned} W");
    }

    #[test]
    fn before_a_fit_idle_is_the_lowest_short_window_average() {
        let mut e = IdleEstimator::default();
        // Constant usage: no spread, so no fit. The average so far bounds idle...
        let first = e.idle_energy(PKG, Joules(80.0), None, Some(0.5), 1.0);
        assert_eq!(first, Joules(80.0));
        e.idle_energy(PKG, Joules(60.0), None, Some(0.5), 1.0);
        assert_eq!(e.idle_watts(PKG), Some(Watts(70.0)));
        // ...then the lowest 10 s average: one low 1 s reading among ten moves it by a tenth only.
        let mut e = IdleEstimator::default();
        for _ in 0..20 {
            e.idle_energy(PKG, Joules(100.0), None, Some(0.5), 1.0);
        }
        e.idle_energy(PKG, Joules(50.0), None, Some(0.5), 1.0);
        let w = e.idle_watts(PKG).unwrap().0;
        assert!((w - 95.0).abs() < 1e-9, "{w}");
        assert!(!e.is_fitted(PKG));
    }

    /// An H200 at rest (~80 W) read through an energy counter that advances in steps: 1 s intervals
    /// saw 72 or 88 J alternately, and the lowest single interval said 72 W.
    #[test]
    fn h200_counter_steps_do_not_bias_idle_low() {
        let mut e = IdleEstimator::default();
        let gpu = Scope::Gpu(0);
        for i in 0..30 {
            let joules = if i % 2 == 0 { 72.0 } else { 88.0 };
            e.idle_energy(gpu, Joules(joules), None, Some(0.0), 1.0);
        }
        let w = e.idle_watts(gpu).unwrap().0;
        assert!((w - 80.0).abs() < 1.0, "learned {w} W");
    }

    #[test]
    fn scopes_learn_independently_and_garbage_is_safe() {
        let mut e = IdleEstimator::default();
        e.idle_energy(PKG, Joules(10.0), None, Some(0.0), 1.0);
        e.idle_energy(Scope::Gpu(0), Joules(80.0), None, Some(0.0), 1.0);
        assert_eq!(e.idle_watts(PKG), Some(Watts(10.0)));
        assert_eq!(e.idle_watts(Scope::Gpu(0)), Some(Watts(80.0)));
        assert_eq!(e.idle_watts(Scope::Gpu(1)), None);
        let core = Scope::Cpu(ZoneKind::Core);
        assert_eq!(
            e.idle_energy(core, Joules(f64::NAN), None, Some(f64::NAN), 1.0),
            Joules(0.0)
        );
        assert_eq!(
            e.idle_energy(core, Joules(5.0), None, Some(0.0), 0.0),
            Joules(5.0)
        );
        assert_eq!(
            e.idle_energy(core, Joules(5.0), None, Some(f64::INFINITY), 1.0),
            Joules(5.0)
        );
    }

    #[test]
    fn median_of_odd_and_even_sets() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    proptest! {
        // Each case refits a window of up to 60 intervals many times: a few dozen cases suffice.
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Idle is never negative nor more than the interval's energy, whatever the input.
        #[test]
        fn idle_stays_within_the_interval(
            intervals in proptest::collection::vec((-1e3f64..1e4, -0.5f64..1.5, 0.0f64..5.0), 1..300)
        ) {
            let mut e = IdleEstimator::default();
            for (j, u, s) in intervals {
                let idle = e.idle_energy(PKG, Joules(j), None, Some(u), s);
                prop_assert!(idle.0 >= 0.0 && idle.0 <= j.max(0.0));
            }
        }

        /// On a noiseless linear node with enough spread, the fit is exact.
        #[test]
        fn a_linear_node_is_fitted_exactly(
            idle in 1.0f64..500.0, slope in 0.0f64..1000.0, seed in 1u64..1000
        ) {
            let mut rng = Rng::new(seed);
            let mut e = IdleEstimator::default();
            let learned = learn(&mut e, PKG, idle, slope, 60, |_| rng.next(), |_| 1.0);
            prop_assert!((learned - idle).abs() <= 1e-6 * (idle + slope), "{} vs {}", learned, idle);
        }
    }
}
