//! What went wrong in an input, as types: `Input` (which reader), `IssueKind` (what kind of failure)
//! and `SourceIssue` (one occurrence, with its detail for the log). Code decides by matching these
//! enums; `as_str()` gives the `source` and `kind` labels of `kepler_exporter_source_errors_total`.

/// An enum whose every variant has a label: `as_str()`, and `Ord`/`Display` by that label (so the
/// self-metric's series keep the order of their label values).
macro_rules! labelled {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            pub(crate) const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> ::std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<::std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use labelled;

labelled! {
    /// An input of the exporter: the `source` label of `kepler_exporter_source_errors_total`.
    pub enum Input {
        /// cgroup CPU counters (`activity::cgroup`).
        Cgroup => "cgroup",
        /// The eBPF CPU-activity source (`activity::ebpf`).
        Ebpf => "ebpf",
        /// The utilisation-based energy estimate (`source::estimate`).
        Estimate => "estimate",
        /// GPU energy and processes (`gpu`).
        Gpu => "gpu",
        /// The kubelet's device assignments (`gpu::podresources`).
        PodResources => "podresources",
        /// `/proc`: node CPU time, processes, pods from a process walk.
        Procfs => "procfs",
        /// RAPL energy counters (`source::rapl`).
        Rapl => "rapl",
    }
}

labelled! {
    /// The kind of a skipped read or degraded measurement: the `kind` label of
    /// `kepler_exporter_source_errors_total`. Never error text.
    pub enum IssueKind {
        /// The eBPF program could not be attached.
        Attach => "attach",
        /// A value handed to the input made no sense (a NaN utilisation).
        BadInput => "bad_input",
        /// The number of possible CPUs could not be read.
        Cpus => "cpus",
        /// The kubelet's pod-resources socket could not be reached.
        Connect => "connect",
        /// The slice running on a CPU could not be charged at a drain.
        Charge => "charge",
        /// A counter delta above the plausible power bound; the input re-baselined.
        CounterAnomaly => "counter_anomaly",
        /// CPU performance-counter reads failed during an eBPF drain.
        CounterError => "counter_error",
        /// A counter went back (driver reloaded); the input re-baselined.
        CounterReset => "counter_reset",
        /// The CPU performance counters could not be opened.
        Counters => "counters",
        /// An eBPF map could not be drained.
        Drain => "drain",
        /// The GPU driver is not loaded or does not answer.
        Driver => "driver",
        /// The eBPF exit map was full: process exits were missed.
        ExitMapFull => "exit_map_full",
        /// The GPU fell off the bus or needs a reset.
        GpuLost => "gpu_lost",
        /// Any other I/O error.
        Io => "io",
        /// The eBPF object could not be loaded.
        Load => "load",
        /// An eBPF map could not be used.
        Map => "map",
        /// The eBPF process map was full: context-switch slices were dropped.
        MapFull => "map_full",
        /// The cgroup mount listed in mountinfo is not reachable under the sysfs root.
        MountUnreachable => "mount_unreachable",
        /// mountinfo could not be read.
        Mountinfo => "mountinfo",
        /// The kernel has no BTF.
        NoBtf => "no_btf",
        /// No cgroup v2 or v1 cpuacct mount.
        NoCgroupMount => "no_cgroup_mount",
        /// A file, directory or device that should be there is not.
        NotFound => "not_found",
        /// A path that must be a regular file (a sysfs, cgroupfs or procfs attribute, a config file) is
        /// a FIFO, a device, a socket or a directory; it is never read.
        NotRegular => "not_regular",
        /// The device or driver does not support the call.
        NotSupported => "not_supported",
        /// Something is missing from the embedded eBPF object.
        Object => "object",
        /// Content that could not be parsed.
        Parse => "parse",
        /// EACCES or EPERM.
        PermissionDenied => "permission_denied",
        /// The kubelet's pod-resources call failed.
        Rpc => "rpc",
        /// A file longer than its reader's limit; it is not used.
        TooLarge => "too_large",
        /// A call timed out.
        Timeout => "timeout",
        /// NVML could not be loaded or initialised.
        Unavailable => "unavailable",
        /// A failure the driver does not classify.
        Unknown => "unknown",
        /// A cgroup or process went away while it was read: normal churn.
        Vanished => "vanished",
        /// The kernel's verifier refused the eBPF program.
        Verifier => "verifier",
        /// A RAPL zone's file went away.
        ZoneVanished => "zone_vanished",
    }
}

impl IssueKind {
    /// The kind of an `io::Error`.
    pub(crate) fn of_io(err: &std::io::Error) -> IssueKind {
        if let Some(file) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::files::FileError>())
        {
            return file.issue_kind();
        }
        match err.kind() {
            std::io::ErrorKind::FileTooLarge => IssueKind::TooLarge,
            std::io::ErrorKind::NotFound => IssueKind::NotFound,
            std::io::ErrorKind::PermissionDenied => IssueKind::PermissionDenied,
            std::io::ErrorKind::InvalidData => IssueKind::Parse,
            _ => IssueKind::Io,
        }
    }
}

/// A skipped read or a degraded measurement, counted in `kepler_exporter_source_errors_total{source,kind}`.
/// `detail` goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIssue {
    pub(crate) input: Input,
    pub(crate) kind: IssueKind,
    pub(crate) detail: String,
}

impl SourceIssue {
    pub(crate) fn new(input: Input, kind: IssueKind, detail: impl Into<String>) -> SourceIssue {
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
    const KINDS: [IssueKind; 34] = [
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
        IssueKind::NotRegular,
        IssueKind::NotSupported,
        IssueKind::Object,
        IssueKind::Parse,
        IssueKind::PermissionDenied,
        IssueKind::Rpc,
        IssueKind::Timeout,
        IssueKind::TooLarge,
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
             no_cgroup_mount not_found not_regular not_supported object parse permission_denied rpc \
             timeout too_large unavailable unknown vanished verifier zone_vanished"
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
