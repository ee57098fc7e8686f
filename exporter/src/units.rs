//! Typed units and identifiers shared by every module: energy, CPU time, pods, containers, zones.
//! Pure data: no I/O, no clock. Counter arithmetic (wrap handling) lives here so every reader shares it.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// Energy in joules. Floating point because attribution splits energy into fractions.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Joules(pub f64);

impl Joules {
    pub(crate) const ZERO: Joules = Joules(0.0);
    /// Average power over `secs` seconds; zero when the interval is empty.
    pub(crate) fn per_seconds(self, secs: f64) -> Watts {
        if secs > 0.0 {
            Watts(self.0 / secs)
        } else {
            Watts(0.0)
        }
    }
}

impl Add for Joules {
    type Output = Joules;
    fn add(self, rhs: Joules) -> Joules {
        Joules(self.0 + rhs.0)
    }
}
impl AddAssign for Joules {
    fn add_assign(&mut self, rhs: Joules) {
        self.0 += rhs.0;
    }
}
impl Sub for Joules {
    type Output = Joules;
    fn sub(self, rhs: Joules) -> Joules {
        Joules(self.0 - rhs.0)
    }
}
impl std::iter::Sum for Joules {
    fn sum<I: Iterator<Item = Joules>>(iter: I) -> Joules {
        Joules(iter.map(|j| j.0).sum())
    }
}

/// Power in watts.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub(crate) struct Watts(pub(crate) f64);

impl Watts {
    pub(crate) fn over_seconds(self, secs: f64) -> Joules {
        Joules(self.0 * secs.max(0.0))
    }
}

impl AddAssign for Watts {
    fn add_assign(&mut self, rhs: Watts) {
        self.0 += rhs.0;
    }
}
impl std::iter::Sum for Watts {
    fn sum<I: Iterator<Item = Watts>>(iter: I) -> Watts {
        Watts(iter.map(|w| w.0).sum())
    }
}

/// A bare number compares with a typed figure (tests and thresholds read naturally: `joules == 30.0`).
macro_rules! compares_with_f64 {
    ($($t:ty),*) => {$(
        impl PartialEq<f64> for $t {
            fn eq(&self, other: &f64) -> bool {
                self.0 == *other
            }
        }
        impl PartialOrd<f64> for $t {
            fn partial_cmp(&self, other: &f64) -> Option<std::cmp::Ordering> {
                self.0.partial_cmp(other)
            }
        }
    )*};
}
compares_with_f64!(Joules, Watts);

/// Energy in microjoules, as RAPL's `energy_uj` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct MicroJoules(pub(crate) u64);

impl MicroJoules {
    pub(crate) fn to_joules(self) -> Joules {
        Joules(self.0 as f64 / 1e6)
    }
}

/// CPU time in nanoseconds (cgroup v1 `cpuacct.usage`, eBPF); v2's `usage_usec` is converted on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct CpuNanos(pub u64);

impl CpuNanos {
    pub(crate) const ZERO: CpuNanos = CpuNanos(0);
    pub(crate) fn from_micros(us: u64) -> CpuNanos {
        CpuNanos(us.saturating_mul(1_000))
    }
    pub(crate) fn as_f64(self) -> f64 {
        self.0 as f64
    }
    pub(crate) fn saturating_sub(self, rhs: CpuNanos) -> CpuNanos {
        CpuNanos(self.0.saturating_sub(rhs.0))
    }
}

impl Add for CpuNanos {
    type Output = CpuNanos;
    fn add(self, rhs: CpuNanos) -> CpuNanos {
        CpuNanos(self.0.saturating_add(rhs.0))
    }
}
impl AddAssign for CpuNanos {
    fn add_assign(&mut self, rhs: CpuNanos) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}
impl std::iter::Sum for CpuNanos {
    fn sum<I: Iterator<Item = CpuNanos>>(iter: I) -> CpuNanos {
        iter.fold(CpuNanos::ZERO, |a, b| a + b)
    }
}

/// A process id (the thread-group id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(pub u32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A pod UID in its canonical Kubernetes form: lowercase, with dashes
/// (`6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11`). The systemd driver's underscore form is converted on parse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodUid(String);

impl PodUid {
    /// Accepts the dash or underscore form of a UUID; returns None for anything else.
    pub fn parse(raw: &str) -> Option<PodUid> {
        if raw.len() != 36 {
            return None;
        }
        let mut out = String::with_capacity(36);
        for (i, c) in raw.chars().enumerate() {
            let dash_pos = matches!(i, 8 | 13 | 18 | 23);
            match c {
                '-' | '_' if dash_pos => out.push('-'),
                c if !dash_pos && c.is_ascii_hexdigit() => out.push(c.to_ascii_lowercase()),
                _ => return None,
            }
        }
        Some(PodUid(out))
    }
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container ID as the runtime reports it (64 lowercase hex characters for containerd, CRI-O, Docker).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    /// Accepts exactly 64 hex digits; returns None for anything else.
    pub fn parse(raw: &str) -> Option<ContainerId> {
        if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(ContainerId(raw.to_ascii_lowercase()))
        } else {
            None
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A RAPL zone kind, without its socket index. Zones overlap: core and uncore are inside package,
/// psys covers the whole platform. Never sum all zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneKind {
    Package,
    Core,
    Uncore,
    Dram,
    Psys,
}

impl ZoneKind {
    pub(crate) const ALL: [ZoneKind; 5] = [
        ZoneKind::Package,
        ZoneKind::Core,
        ZoneKind::Uncore,
        ZoneKind::Dram,
        ZoneKind::Psys,
    ];

    /// The `zone` label value, as Kepler spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ZoneKind::Package => "package",
            ZoneKind::Core => "core",
            ZoneKind::Uncore => "uncore",
            ZoneKind::Dram => "dram",
            ZoneKind::Psys => "psys",
        }
    }

    /// Parses a powercap zone `name` (`package-0`, `core`, `dram`, `psys`, ...), dropping a socket suffix.
    pub(crate) fn from_powercap_name(name: &str) -> Option<ZoneKind> {
        let base = match name.rsplit_once('-') {
            Some((base, idx)) if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => name,
        };
        ZoneKind::ALL
            .into_iter()
            .find(|k| k.as_str() == base.trim())
    }
}

impl fmt::Display for ZoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The difference between two readings of a wrapping hardware counter (after Alumet's design).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CounterDiff {
    /// No previous reading: this one only sets the baseline.
    FirstTime,
    /// current >= previous.
    Difference(u64),
    /// The counter wrapped at `max` once: (max - previous) + current.
    CorrectedDifference(u64),
}

impl CounterDiff {
    /// Difference of a counter that counts from 0 to `max` inclusive and then wraps to 0.
    /// `max == 0` (unknown range) treats a decrease as a reset: only `current` is counted.
    pub(crate) fn compute(previous: Option<u64>, current: u64, max: u64) -> CounterDiff {
        match previous {
            None => CounterDiff::FirstTime,
            Some(prev) if current >= prev => CounterDiff::Difference(current - prev),
            Some(prev) if max > 0 && prev <= max => {
                CounterDiff::CorrectedDifference((max - prev).saturating_add(current))
            }
            Some(_) => CounterDiff::CorrectedDifference(current),
        }
    }

    pub(crate) fn value(self) -> Option<u64> {
        match self {
            CounterDiff::FirstTime => None,
            CounterDiff::Difference(d) | CounterDiff::CorrectedDifference(d) => Some(d),
        }
    }
}

/// A number for a message: plain where short (`3.5`, `1000`), in exponent form where plain would
/// be long (`1e308`, `2.5e-7`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readable(pub(crate) f64);

impl fmt::Display for Readable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_finite() && v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
            write!(f, "{v:e}")
        } else {
            write!(f, "{v}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uid_accepts_both_forms_and_normalises() {
        let a = PodUid::parse("6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11").unwrap();
        let b = PodUid::parse("6F1C9A4E_2b9d_4b7e_9a51_0c3f0e2d7a11").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11");
        assert!(PodUid::parse("6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a1").is_none());
        assert!(PodUid::parse("6f1c9a4e-2b9d-4b7e-9a51x0c3f0e2d7a11").is_none());
        assert!(PodUid::parse("zf1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11").is_none());
    }

    #[test]
    fn container_id_requires_64_hex() {
        assert!(ContainerId::parse(&"a".repeat(64)).is_some());
        assert!(ContainerId::parse(&"a".repeat(63)).is_none());
        assert!(ContainerId::parse(&"g".repeat(64)).is_none());
    }

    #[test]
    fn zone_names_drop_socket_index() {
        assert_eq!(
            ZoneKind::from_powercap_name("package-0"),
            Some(ZoneKind::Package)
        );
        assert_eq!(
            ZoneKind::from_powercap_name("package-12"),
            Some(ZoneKind::Package)
        );
        assert_eq!(ZoneKind::from_powercap_name("dram"), Some(ZoneKind::Dram));
        assert_eq!(ZoneKind::from_powercap_name("psys\n"), Some(ZoneKind::Psys));
        assert_eq!(ZoneKind::from_powercap_name("gpu"), None);
    }

    #[test]
    fn counter_diff_handles_wrap_and_reset() {
        assert_eq!(CounterDiff::compute(None, 5, 100), CounterDiff::FirstTime);
        assert_eq!(
            CounterDiff::compute(Some(5), 9, 100),
            CounterDiff::Difference(4)
        );
        assert_eq!(
            CounterDiff::compute(Some(90), 10, 100),
            CounterDiff::CorrectedDifference(20)
        );
        // previous beyond the advertised range: cannot trust it, count only what is certain.
        assert_eq!(
            CounterDiff::compute(Some(500), 10, 100),
            CounterDiff::CorrectedDifference(10)
        );
        assert_eq!(
            CounterDiff::compute(Some(5), 3, 0),
            CounterDiff::CorrectedDifference(3)
        );
    }
}
