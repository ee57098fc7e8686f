//! Node energy sources: RAPL through powercap sysfs, or a utilisation-based estimate where there is no RAPL.
//! A source discovers its zones once, then reports per-interval energy deltas per zone kind.
//! Sources never attribute energy; that is `attribution`'s job.

pub(crate) mod estimate;
pub(crate) mod plausible;
pub(crate) mod rapl;

use crate::issue::{Input, SourceIssue};
use crate::units::{Joules, ZoneKind};
use std::time::Duration;

crate::issue::labelled! {
    /// Which kind of measurement produced the node's energy: the `source` label of node energy series.
    pub enum EnergySourceKind {
        Rapl => "rapl",
        Estimate => "estimate",
    }
}

impl From<EnergySourceKind> for Input {
    fn from(kind: EnergySourceKind) -> Input {
        match kind {
            EnergySourceKind::Rapl => Input::Rapl,
            EnergySourceKind::Estimate => Input::Estimate,
        }
    }
}

/// What a source may use to produce one interval's energy (the estimate needs utilisation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntervalContext {
    /// Monotonic time since the previous sample.
    pub(crate) elapsed: Duration,
    /// Node CPU busy time / capacity over the interval, in [0, 1].
    pub(crate) cpu_usage_ratio: f64,
}

/// Energy of one zone kind (summed over sockets) over one interval.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ZoneEnergy {
    pub(crate) zone: ZoneKind,
    pub(crate) energy: Joules,
    /// Idle energy of this interval when the source knows it (the estimate does); RAPL leaves it to
    /// the idle estimator.
    pub(crate) idle_hint: Option<Joules>,
}

/// Energy of one zone of one socket over one interval (RAPL only; the estimate has no sockets).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SocketEnergy {
    pub(crate) zone: ZoneKind,
    /// The powercap zone's socket index (`intel-rapl:<socket>[:<subzone>]`).
    pub(crate) socket: u32,
    pub(crate) energy: Joules,
}

/// One interval's readings. `zones` holds only zones with a valid delta this interval (a zone that
/// failed to read, or whose first reading only set the baseline, is absent, and its energy shows up in
/// the next good interval). `issues` are counted by the monitor.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnergySample {
    pub(crate) zones: Vec<ZoneEnergy>,
    /// The same energy per socket (its sum per zone kind is `zones`), where the source knows it.
    pub(crate) sockets: Vec<SocketEnergy>,
    pub(crate) issues: Vec<SourceIssue>,
}

/// A node energy source. Implementations own their open files and counter state.
pub(crate) trait EnergySource: Send {
    fn kind(&self) -> EnergySourceKind;
    /// The zone kinds this source reports, fixed at discovery, in a stable order.
    fn zones(&self) -> &[ZoneKind];
    /// Read every zone and return the deltas since the previous call.
    fn sample(&mut self, ctx: &IntervalContext) -> EnergySample;
    /// The most power one zone of this node can draw (all sockets): above it an interval's energy
    /// is refused ([`plausible::admit`]). One socket at RAPL's bound unless the source knows better.
    fn plausible_watts(&self) -> f64 {
        rapl::DEFAULT_MAX_ZONE_WATTS
    }
}
