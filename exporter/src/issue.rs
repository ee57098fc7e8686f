//! What went wrong in an input, as types: `Input` (which reader), `IssueKind` (what kind of failure)
//! and `SourceIssue` (one occurrence, with its detail for the log). Code decides by matching these
//! enums; `as_str()` gives the `source` and `kind` labels of `kepler_exporter_source_errors_total`.

use std::cmp::Ordering;
use std::fmt;

/// An input of the exporter: the `source` label of `kepler_exporter_source_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// cgroup CPU counters (`activity::cgroup`).
    Cgroup,
    /// The eBPF CPU-activity source (`activity::ebpf`).
    Ebpf,
    /// The utilisation-based energy estimate (`source::estimate`).
    Estimate,
    /// GPU energy and processes (`gpu`).
    Gpu,
    /// The kubelet's device assignments (`gpu::podresources`).
    PodResources,
    /// `/proc`: node CPU time, processes, pods from a process walk.
    Procfs,
    /// RAPL energy counters (`source::rapl`).
    Rapl,
}

impl Input {
    pub const fn as_str(self) -> &'static str {
        match self {
            Input::Cgroup => "cgroup",
            Input::Ebpf => "ebpf",
            Input::Estimate => "estimate",
            Input::Gpu => "gpu",
            Input::PodResources => "podresources",
            Input::Procfs => "procfs",
            Input::Rapl => "rapl",
        }
    }
}

/// The kind of a skipped read or degraded measurement: the `kind` label of
/// `kepler_exporter_source_errors_total`. Never error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueKind {
    /// The eBPF program could not be attached.
    Attach,
    /// A value handed to the input made no sense (a NaN utilisation).
    BadInput,
    /// The number of possible CPUs could not be read.
    Cpus,
    /// The kubelet's pod-resources socket could not be reached.
    Connect,
    /// The slice running on a CPU could not be charged at a drain.
    Charge,
    /// A counter delta above the plausible power bound; the input re-baselined.
    CounterAnomaly,
    /// CPU performance-counter reads failed during an eBPF drain.
    CounterError,
    /// A counter went back (driver reloaded); the input re-baselined.
    CounterReset,
    /// The CPU performance counters could not be opened.
    Counters,
    /// An eBPF map could not be drained.
    Drain,
    /// The GPU driver is not loaded or does not answer.
    Driver,
    /// The eBPF exit map was full: process exits were missed.
    ExitMapFull,
    /// The GPU fell off the bus or needs a reset.
    GpuLost,
    /// Any other I/O error.
    Io,
    /// The eBPF object could not be loaded.
    Load,
    /// An eBPF map could not be used.
    Map,
    /// The eBPF process map was full: context-switch slices were dropped.
    MapFull,
    /// The cgroup mount listed in mountinfo is not reachable under the sysfs root.
    MountUnreachable,
    /// mountinfo could not be read.
    Mountinfo,
    /// The kernel has no BTF.
    NoBtf,
    /// No cgroup v2 or v1 cpuacct mount.
    NoCgroupMount,
    /// A file, directory or device that should be there is not.
    NotFound,
    /// The device or driver does not support the call.
    NotSupported,
    /// Something is missing from the embedded eBPF object.
    Object,
    /// Content that could not be parsed.
    Parse,
    /// EACCES or EPERM.
    PermissionDenied,
    /// The kubelet's pod-resources call failed.
    Rpc,
    /// A call timed out.
    Timeout,
    /// NVML could not be loaded or initialised.
    Unavailable,
    /// A failure the driver does not classify.
    Unknown,
    /// A cgroup or process went away while it was read: normal churn.
    Vanished,
    /// The kernel's verifier refused the eBPF program.
    Verifier,
    /// A RAPL zone's file went away.
    ZoneVanished,
}

impl IssueKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            IssueKind::Attach => "attach",
            IssueKind::BadInput => "bad_input",
            IssueKind::Connect => "connect",
            IssueKind::Charge => "charge",
            IssueKind::CounterAnomaly => "counter_anomaly",
            IssueKind::CounterError => "counter_error",
            IssueKind::CounterReset => "counter_reset",
            IssueKind::Counters => "counters",
            IssueKind::Cpus => "cpus",
            IssueKind::Drain => "drain",
            IssueKind::Driver => "driver",
            IssueKind::ExitMapFull => "exit_map_full",
            IssueKind::GpuLost => "gpu_lost",
            IssueKind::Io => "io",
            IssueKind::Load => "load",
            IssueKind::Map => "map",
            IssueKind::MapFull => "map_full",
            IssueKind::MountUnreachable => "mount_unreachable",
            IssueKind::Mountinfo => "mountinfo",
            IssueKind::NoBtf => "no_btf",
            IssueKind::NoCgroupMount => "no_cgroup_mount",
            IssueKind::NotFound => "not_found",
            IssueKind::NotSupported => "not_supported",
            IssueKind::Object => "object",
            IssueKind::Parse => "parse",
            IssueKind::PermissionDenied => "permission_denied",
            IssueKind::Rpc => "rpc",
            IssueKind::Timeout => "timeout",
            IssueKind::Unavailable => "unavailable",
            IssueKind::Unknown => "unknown",
            IssueKind::Vanished => "vanished",
            IssueKind::Verifier => "verifier",
            IssueKind::ZoneVanished => "zone_vanished",
        }
    }

    /// The kind of an `io::Error`.
    pub fn of_io(err: &std::io::Error) -> IssueKind {
        match err.kind() {
            std::io::ErrorKind::NotFound => IssueKind::NotFound,
            std::io::ErrorKind::PermissionDenied => IssueKind::PermissionDenied,
            std::io::ErrorKind::InvalidData => IssueKind::Parse,
            _ => IssueKind::Io,
        }
    }
}

/// Both enums sort by their label, so the self-metric's series keep the order of their label values.
macro_rules! ordered_by_label {
    ($($t:ty),*) => {$(
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

ordered_by_label!(Input, IssueKind);

/// A skipped read or a degraded measurement, counted in `kepler_exporter_source_errors_total{source,kind}`.
/// `detail` goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIssue {
    pub input: Input,
    pub kind: IssueKind,
    pub detail: String,
}

impl SourceIssue {
    pub fn new(input: Input, kind: IssueKind, detail: impl Into<String>) -> SourceIssue {
        SourceIssue {
            input,
            kind,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every input, in label order.
    const INPUTS: [Input; 7] = [
        Input::Cgroup,
        Input::Ebpf,
        Input::Estimate,
        Input::Gpu,
        Input::PodResources,
        Input::Procfs,
        Input::Rapl,
    ];

    /// Every kind, in label order.
    const KINDS: [IssueKind; 32] = [
        IssueKind::Attach,
        IssueKind::BadInput,
        IssueKind::Connect,
        IssueKind::CounterAnomaly,
        IssueKind::CounterError,
        IssueKind::CounterReset,
        IssueKind::Counters,
        IssueKind::Cpus,
        IssueKind::Drain,
        IssueKind::Driver,
        IssueKind::ExitMapFull,
        IssueKind::GpuLost,
        IssueKind::Io,
        IssueKind::Load,
        IssueKind::Map,
        IssueKind::MapFull,
        IssueKind::MountUnreachable,
        IssueKind::Mountinfo,
        IssueKind::NoBtf,
        IssueKind::NoCgroupMount,
        IssueKind::NotFound,
        IssueKind::NotSupported,
        IssueKind::Object,
        IssueKind::Parse,
        IssueKind::PermissionDenied,
        IssueKind::Rpc,
        IssueKind::Timeout,
        IssueKind::Unavailable,
        IssueKind::Unknown,
        IssueKind::Vanished,
        IssueKind::Verifier,
        IssueKind::ZoneVanished,
    ];

    #[test]
    fn labels_are_unique_lowercase_and_in_label_order() {
        let inputs: Vec<&str> = INPUTS.iter().map(|i| i.as_str()).collect();
        let kinds: Vec<&str> = KINDS.iter().map(|k| k.as_str()).collect();
        for labels in [&inputs, &kinds] {
            let unique: BTreeSet<&str> = labels.iter().copied().collect();
            assert_eq!(unique.len(), labels.len(), "duplicate label in {labels:?}");
            assert!(
                unique.iter().copied().eq(labels.iter().copied()),
                "not in label order: {labels:?}"
            );
            assert!(labels
                .iter()
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        }
        assert!(INPUTS.windows(2).all(|w| w[0] < w[1]));
        assert!(KINDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn labels_are_the_published_ones() {
        // Dashboards and alerts select on these values: a rename breaks them.
        assert_eq!(
            INPUTS.map(Input::as_str),
            [
                "cgroup",
                "ebpf",
                "estimate",
                "gpu",
                "podresources",
                "procfs",
                "rapl"
            ]
        );
        let kinds = KINDS.map(IssueKind::as_str).join(" ");
        assert_eq!(
            kinds,
            "attach bad_input connect counter_anomaly counter_error counter_reset counters cpus drain \
             driver exit_map_full gpu_lost io load map map_full mount_unreachable mountinfo no_btf \
             no_cgroup_mount not_found not_supported object parse permission_denied rpc timeout \
             unavailable unknown vanished verifier zone_vanished"
        );
        assert_eq!(IssueKind::Vanished.to_string(), "vanished");
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let kind = |k| IssueKind::of_io(&std::io::Error::from(k));
        assert_eq!(kind(std::io::ErrorKind::NotFound), IssueKind::NotFound);
        assert_eq!(
            kind(std::io::ErrorKind::PermissionDenied),
            IssueKind::PermissionDenied
        );
        assert_eq!(kind(std::io::ErrorKind::InvalidData), IssueKind::Parse);
        assert_eq!(kind(std::io::ErrorKind::BrokenPipe), IssueKind::Io);
    }
}
