//! The gate between an energy source and the model: one interval's zone and socket energies are
//! admitted only when finite, non-negative and within the source's plausible power. Pure: no I/O,
//! no clock; it never changes an admitted value.

use super::EnergySample;
use crate::issue::{Input, IssueKind, SourceIssue};

/// Removes from `sample` every zone and socket reading that is non-finite or negative
/// ([`IssueKind::BadInput`]) or above `max_watts` over `secs` (at least one second, as RAPL's own
/// bound; [`IssueKind::CounterAnomaly`]), and returns one issue per refused reading. A refused zone
/// reads as no energy this interval, as a failed read does; an idle hint that is not finite is
/// dropped (the idle estimator decides instead).
pub(crate) fn admit(
    sample: &mut EnergySample,
    input: Input,
    secs: f64,
    max_watts: f64,
) -> Vec<SourceIssue> {
    let mut issues = Vec::new();
    let mut check = |what: String, joules: f64| -> bool {
        match refusal(joules, secs, max_watts) {
            None => true,
            Some(issue) => {
                issues.push(issue.into_issue(input, &what, "zone"));
                false
            }
        }
    };
    sample
        .zones
        .retain(|z| check(format!("zone {}", z.zone), z.energy.0));
    sample
        .sockets
        .retain(|s| check(format!("zone {} socket {}", s.zone, s.socket), s.energy.0));
    // A socket reading of a refused zone would count energy the node total does not have.
    let zones: Vec<_> = sample.zones.iter().map(|z| z.zone).collect();
    sample.sockets.retain(|s| zones.contains(&s.zone));
    for zone in &mut sample.zones {
        if zone.idle_hint.is_some_and(|h| !h.0.is_finite()) {
            zone.idle_hint = None;
        }
    }
    issues
}

/// Why one energy reading of `joules` over `secs` is refused, if it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Refusal {
    pub kind: IssueKind,
    joules: f64,
    secs: f64,
    max_watts: f64,
}

impl Refusal {
    /// The counted issue for `what` (a zone, a device); `scope` names what loses the interval.
    pub fn into_issue(self, input: Input, what: &str, scope: &str) -> SourceIssue {
        let Refusal {
            kind,
            joules,
            secs,
            max_watts,
        } = self;
        SourceIssue::new(
            input,
            kind,
            format!(
                "{what}: {joules} J over {secs:.3} s is not a plausible energy (at most {max_watts} W); \
                 interval refused for this {scope}"
            ),
        )
    }
}

/// The one rule every energy reading passes before the model: `joules` must be finite and
/// non-negative over a finite, non-negative span ([`IssueKind::BadInput`]), and at most `max_watts`
/// over `secs`, judged over at least one second ([`IssueKind::CounterAnomaly`]).
pub(crate) fn refusal(joules: f64, secs: f64, max_watts: f64) -> Option<Refusal> {
    let kind = if !joules.is_finite() || joules < 0.0 || secs.is_nan() || secs < 0.0 {
        IssueKind::BadInput
    } else if joules > max_watts * if secs.is_finite() { secs.max(1.0) } else { 1.0 } {
        IssueKind::CounterAnomaly
    } else {
        return None;
    };
    Some(Refusal {
        kind,
        joules,
        secs,
        max_watts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SocketEnergy, ZoneEnergy};
    use crate::units::{Joules, ZoneKind};

    fn zone(zone: ZoneKind, joules: f64) -> ZoneEnergy {
        ZoneEnergy {
            zone,
            energy: Joules(joules),
            idle_hint: Some(Joules(f64::NAN)),
        }
    }

    #[test]
    fn only_finite_plausible_readings_pass() {
        let mut sample = EnergySample {
            zones: vec![
                zone(ZoneKind::Package, 300.0),
                zone(ZoneKind::Core, f64::NAN),
                zone(ZoneKind::Uncore, -1.0),
                zone(ZoneKind::Dram, 1e308),
                zone(ZoneKind::Psys, f64::INFINITY),
            ],
            sockets: vec![
                SocketEnergy {
                    zone: ZoneKind::Package,
                    socket: 0,
                    energy: Joules(300.0),
                },
                SocketEnergy {
                    zone: ZoneKind::Dram,
                    socket: 0,
                    energy: Joules(1.0),
                },
            ],
            issues: Vec::new(),
        };
        let issues = admit(&mut sample, Input::Estimate, 2.0, 5000.0);
        let kinds: Vec<IssueKind> = issues.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                IssueKind::BadInput,
                IssueKind::BadInput,
                IssueKind::CounterAnomaly,
                IssueKind::BadInput
            ]
        );
        assert!(issues.iter().all(|i| i.input == Input::Estimate));
        assert!(
            issues[2].detail.contains("at most 5000 W"),
            "{:?}",
            issues[2]
        );
        assert_eq!(sample.zones.len(), 1);
        assert_eq!(sample.zones[0].energy, Joules(300.0));
        assert_eq!(sample.zones[0].idle_hint, None);
        // The dram socket reading goes with its refused zone.
        assert_eq!(sample.sockets.len(), 1);
        assert_eq!(sample.sockets[0].zone, ZoneKind::Package);
        // 10 kJ in 2 s is 5 kW: at the bound, admitted; a short interval is judged over 1 s.
        let mut edge = EnergySample {
            zones: vec![zone(ZoneKind::Package, 10_000.0)],
            ..EnergySample::default()
        };
        assert!(admit(&mut edge, Input::Rapl, 2.0, 5000.0).is_empty());
        let mut short = EnergySample {
            zones: vec![zone(ZoneKind::Package, 5000.0)],
            ..EnergySample::default()
        };
        assert!(admit(&mut short, Input::Rapl, 0.1, 5000.0).is_empty());
    }
}
