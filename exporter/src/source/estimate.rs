//! The node energy estimate used where there is no RAPL: linear in CPU utilisation, per logical CPU.
//! Owns only the model's arithmetic; it reads no files (the caller supplies the CPU count and usage)
//! and never pretends to be a measurement (its `source` label is "estimate").

use super::{EnergySample, EnergySource, EnergySourceKind, IntervalContext, ZoneEnergy};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::units::{Joules, Readable, ZoneKind};

/// Power coefficients per logical CPU (vCPU).
///
/// The default is Cloud Carbon Footprint's SPECpower-derived coefficients, averaged across the CPU
/// architectures of the major cloud providers: 0.74 W per vCPU at idle and 3.5 W per vCPU at full load
/// (per architecture they range, for example, from 0.64 W to 4.05 W for Skylake).
/// See <https://www.cloudcarbonfootprint.org/docs/methodology/#energy-estimate-watt-hours>.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EstimateModel {
    pub(crate) idle_watts_per_cpu: f64,
    pub(crate) max_watts_per_cpu: f64,
}

impl Default for EstimateModel {
    fn default() -> EstimateModel {
        EstimateModel {
            idle_watts_per_cpu: 0.74,
            max_watts_per_cpu: 3.5,
        }
    }
}

/// The most watts one logical CPU can draw: far above any server CPU (a 500 W package has more than
/// 64 of them), low enough that a typo (`1e308`) cannot overflow the node's energy counters.
pub(crate) const MAX_WATTS_PER_CPU: f64 = 1000.0;

/// Which coefficient of the estimate model is wrong, and how.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ModelError {
    #[error("{} watts per CPU is out of range (0 to {MAX_WATTS_PER_CPU})", Readable(*.0))]
    Idle(f64),
    #[error("{} watts per CPU is out of range (more than 0, at most {MAX_WATTS_PER_CPU})", Readable(*.0))]
    Max(f64),
    #[error("max watts per CPU ({max}) must be >= idle watts per CPU ({idle})")]
    Inverted { idle: f64, max: f64 },
}

impl EstimateModel {
    /// Idle within [0, [`MAX_WATTS_PER_CPU`]], max within (0, [`MAX_WATTS_PER_CPU`]], `max >= idle`.
    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let (idle, max) = (self.idle_watts_per_cpu, self.max_watts_per_cpu);
        if !(0.0..=MAX_WATTS_PER_CPU).contains(&idle) {
            return Err(ModelError::Idle(idle));
        }
        if !(max > 0.0 && max <= MAX_WATTS_PER_CPU) {
            return Err(ModelError::Max(max));
        }
        if max < idle {
            return Err(ModelError::Inverted { idle, max });
        }
        Ok(())
    }
}

/// Estimated node energy: `P = n × (idle + (max − idle) × usage)` over each interval.
///
/// It reports a single zone, [`ZoneKind::Package`]: the estimate stands in for the package zone so
/// that Kepler dashboards selecting `zone="package"` keep working; the `source="estimate"` label says
/// what it really is. Its idle share is known exactly and given as `idle_hint`.
#[derive(Debug, Clone)]
pub(crate) struct Estimate {
    model: EstimateModel,
    logical_cpus: u32,
}

impl Estimate {
    /// `model` should have passed [`EstimateModel::validate`]; an invalid one is replaced by the
    /// default (logged). A CPU count of 0 is treated as 1 (logged) rather than reporting 0 W.
    pub(crate) fn new(model: EstimateModel, logical_cpus: u32) -> Estimate {
        let model = match model.validate() {
            Ok(()) => model,
            Err(reason) => {
                tracing::warn!(%reason, "invalid estimate model, using the default coefficients");
                EstimateModel::default()
            }
        };
        let logical_cpus = if logical_cpus == 0 {
            tracing::warn!("logical CPU count is 0, estimating for 1 CPU");
            1
        } else {
            logical_cpus
        };
        Estimate {
            model,
            logical_cpus,
        }
    }

    #[cfg(test)]
    pub(crate) fn model(&self) -> EstimateModel {
        self.model
    }

    #[cfg(test)]
    pub(crate) fn logical_cpus(&self) -> u32 {
        self.logical_cpus
    }
}

impl EnergySource for Estimate {
    fn kind(&self) -> EnergySourceKind {
        EnergySourceKind::Estimate
    }

    fn zones(&self) -> &[ZoneKind] {
        &[ZoneKind::Package]
    }

    /// The model's own maximum: every CPU at its maximum.
    fn plausible_watts(&self) -> f64 {
        f64::from(self.logical_cpus.max(1)) * self.model.max_watts_per_cpu
    }

    fn sample(&mut self, ctx: &IntervalContext) -> EnergySample {
        let mut issues = Vec::new();
        let usage = if ctx.cpu_usage_ratio.is_nan() {
            issues.push(SourceIssue::new(
                Input::Estimate,
                IssueKind::BadInput,
                "CPU usage ratio is NaN, estimating at idle",
            ));
            0.0
        } else {
            ctx.cpu_usage_ratio.clamp(0.0, 1.0)
        };
        let cpus = f64::from(self.logical_cpus);
        let secs = ctx.elapsed.as_secs_f64();
        let idle = self.model.idle_watts_per_cpu;
        let span = self.model.max_watts_per_cpu - idle;
        let watts = cpus * (idle + span * usage);
        EnergySample {
            zones: vec![ZoneEnergy {
                zone: ZoneKind::Package,
                energy: Joules(watts * secs),
                idle_hint: Some(Joules(cpus * idle * secs)),
            }],
            sockets: Vec::new(),
            issues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ctx(secs: f64, usage: f64) -> IntervalContext {
        IntervalContext {
            elapsed: Duration::from_secs_f64(secs),
            cpu_usage_ratio: usage,
        }
    }

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn default_model_is_ccf_average() {
        let m = EstimateModel::default();
        assert_eq!(m.idle_watts_per_cpu, 0.74);
        assert_eq!(m.max_watts_per_cpu, 3.5);
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_negative_nan_and_inverted() {
        let bad = [
            (-0.1, 3.5),
            (0.74, -1.0),
            (f64::NAN, 3.5),
            (0.74, f64::INFINITY),
            (4.0, 3.5),
            (0.74, 1e308),
            (0.74, 0.0),
            (1001.0, 1001.0),
        ];
        for (idle, max) in bad {
            let m = EstimateModel {
                idle_watts_per_cpu: idle,
                max_watts_per_cpu: max,
            };
            assert!(m.validate().is_err(), "{idle} {max} should be invalid");
        }
        let equal = EstimateModel {
            idle_watts_per_cpu: 2.0,
            max_watts_per_cpu: 2.0,
        };
        assert_eq!(equal.validate(), Ok(()));
    }

    #[test]
    fn idle_node_uses_idle_power() {
        let mut e = Estimate::new(EstimateModel::default(), 4);
        let s = e.sample(&ctx(10.0, 0.0));
        assert_eq!(s.zones.len(), 1);
        let z = &s.zones[0];
        assert_eq!(z.zone, ZoneKind::Package);
        // 4 × 0.74 W × 10 s
        assert!(approx(z.energy.0, 29.6), "{}", z.energy.0);
        assert!(approx(z.idle_hint.unwrap().0, 29.6));
        assert!(s.issues.is_empty());
    }

    #[test]
    fn half_busy_node_interpolates_linearly() {
        let mut e = Estimate::new(EstimateModel::default(), 8);
        let s = e.sample(&ctx(5.0, 0.5));
        let z = &s.zones[0];
        // 8 × (0.74 + 2.76 × 0.5) = 8 × 2.12 = 16.96 W; × 5 s = 84.8 J
        assert!(approx(z.energy.0, 84.8), "{}", z.energy.0);
        // idle: 8 × 0.74 × 5 = 29.6 J
        assert!(approx(z.idle_hint.unwrap().0, 29.6));
    }

    #[test]
    fn usage_is_clamped_to_unit_range() {
        let mut e = Estimate::new(EstimateModel::default(), 2);
        let over = e.sample(&ctx(1.0, 1.7));
        // 2 × 3.5 × 1
        assert!(approx(over.zones[0].energy.0, 7.0));
        let under = e.sample(&ctx(1.0, -0.3));
        // 2 × 0.74 × 1
        assert!(approx(under.zones[0].energy.0, 1.48));
        assert!(over.issues.is_empty() && under.issues.is_empty());
    }

    #[test]
    fn nan_usage_counts_as_idle_and_reports_issue() {
        let mut e = Estimate::new(EstimateModel::default(), 2);
        let s = e.sample(&ctx(3.0, f64::NAN));
        assert!(approx(s.zones[0].energy.0, 2.0 * 0.74 * 3.0));
        assert_eq!(s.issues.len(), 1);
        assert_eq!(s.issues[0].input, Input::Estimate);
        assert_eq!(s.issues[0].kind, IssueKind::BadInput);
    }

    #[test]
    fn custom_model_and_zero_elapsed() {
        let model = EstimateModel {
            idle_watts_per_cpu: 1.0,
            max_watts_per_cpu: 5.0,
        };
        let mut e = Estimate::new(model, 16);
        let s = e.sample(&ctx(2.0, 0.25));
        // 16 × (1 + 4 × 0.25) × 2 = 64 J
        assert!(approx(s.zones[0].energy.0, 64.0));
        let zero = e.sample(&ctx(0.0, 1.0));
        assert_eq!(zero.zones[0].energy, Joules(0.0));
        assert_eq!(zero.zones[0].idle_hint, Some(Joules(0.0)));
    }

    #[test]
    fn invalid_model_and_zero_cpus_fall_back() {
        let bad = EstimateModel {
            idle_watts_per_cpu: 5.0,
            max_watts_per_cpu: 1.0,
        };
        let mut e = Estimate::new(bad, 0);
        assert_eq!(e.model(), EstimateModel::default());
        assert_eq!(e.logical_cpus(), 1);
        let s = e.sample(&ctx(1.0, 1.0));
        assert!(approx(s.zones[0].energy.0, 3.5));
        assert_eq!(e.zones(), &[ZoneKind::Package]);
        assert_eq!(e.kind(), EnergySourceKind::Estimate);
    }
}
