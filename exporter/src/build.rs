//! Source selection: a validated `Config` -> the `Monitor` and what it reads (RAPL or the estimate;
//! eBPF, cgroup or /proc activity; GPUs; pod metadata), with the fallbacks and the start-up notes of
//! inputs found unusable. It reaches the hardware only through `Probes`, so tests cover every choice.
//! It serves nothing and starts no thread or runtime: `main` does.

use crate::activity::cgroup::CgroupActivity;
use crate::activity::ebpf::counters::{CounterError, CounterKind, Counters};
use crate::activity::ebpf::{self, EbpfActivity};
use crate::activity::procfs::pods::ProcfsPods;
use crate::activity::procfs::{logical_cpus, NodeCpuReader, ProcessScanner};
use crate::activity::{ActivitySample, ActivitySource, SourceReason};
use crate::config::{
    Config, CpuCountersChoice, CpuSourceChoice, EnergySourceChoice, GpuChoice, HostRoots,
    PodMetadataSource,
};
use crate::gpu::device::DeviceSampler;
use crate::gpu::{self, GpuMonitor};
use crate::idle::IdleEstimator;
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::monitor::{Inputs, Monitor};
use crate::resource::kube::PodCache;
use crate::resource::pods::{NoPodMetadata, PodMetadata};
use crate::source::estimate::Estimate;
use crate::source::rapl::{self, Rapl};
use crate::source::EnergySource;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A started eBPF activity source, or why it cannot run.
pub(crate) type EbpfProbe = Result<Box<dyn ActivitySource>, ebpf::Error>;

/// How `build` finds the hardware: each probe opens one kind of input or says why it cannot.
#[derive(Clone, Copy)]
pub struct Probes {
    /// Powercap zones under a sysfs root.
    pub(crate) rapl: fn(&Path) -> Result<Rapl, rapl::Error>,
    /// The eBPF activity source (loaded and attached).
    pub(crate) ebpf: fn(&HostRoots, CpuCountersChoice) -> EbpfProbe,
    /// Whether hardware CPU counters (cycles, instructions) open on every CPU under a sysfs root:
    /// `--cpu-source auto` loads eBPF for them. Opened and closed again; nothing is loaded.
    pub(crate) pmu: fn(&Path) -> Result<(), CounterError>,
    /// The GPU driver chosen by `--gpu` (see `gpu::open`).
    pub(crate) gpu: fn(GpuChoice) -> Result<Option<DeviceSampler>, String>,
}

impl Probes {
    /// The real host: powercap, the embedded eBPF program, NVML.
    pub fn host() -> Probes {
        Probes {
            rapl: rapl::discover,
            ebpf: start_ebpf,
            pmu: |sysfs| Counters::open(CounterKind::Hardware, sysfs).map(drop),
            gpu: gpu::open,
        }
    }
}

fn start_ebpf(roots: &HostRoots, counters: CpuCountersChoice) -> EbpfProbe {
    let activity = EbpfActivity::start(roots, counters)?;
    // Loading parsed the kernel's BTF (megabytes, now freed): give that memory back
    // to the system instead of keeping it in the allocator's free lists.
    // SAFETY: malloc_trim only releases free heap pages; no pointer is invalidated.
    unsafe { libc::malloc_trim(0) };
    Ok(Box::new(activity))
}

/// An input that was asked for by name and cannot be used: `main` prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `--energy-source rapl` without readable RAPL.
    #[error("--energy-source rapl: {0}")]
    Rapl(rapl::Error),
    /// `--cpu-source ebpf` and the program does not load.
    #[error("--cpu-source ebpf: {reason}: {0}", reason = .0.reason())]
    Ebpf(ebpf::Error),
    /// `--gpu nvml` and NVML is not usable (the text names the flag).
    #[error("{0}")]
    Gpu(String),
}

/// What `main` starts: the monitor with its inputs, and the pod cache its watcher fills.
pub struct Built {
    pub monitor: Monitor,
    /// Where pod names come from, when pod metadata is on: `main` starts its watcher.
    pub pod_cache: Option<Arc<PodCache>>,
    /// Inputs found unusable at start (already noted in the monitor, which reports them as down).
    #[cfg(test)]
    pub(crate) unavailable: Vec<SourceIssue>,
    /// GPUs measured (0: GPU support off or no GPU).
    #[cfg(test)]
    pub(crate) gpu_devices: usize,
}

/// Chooses every input from `config` and builds the monitor over them.
pub fn build(config: &Config, probes: &Probes) -> Result<Built, BuildError> {
    let mut unavailable = Vec::new();
    let energy = energy_source(config, probes, &mut unavailable)?;
    let (activity, reason) = activity_source(config, probes, &mut unavailable)?;
    let pod_cache = (config.pod_metadata != PodMetadataSource::Off)
        .then(|| Arc::new(PodCache::with_hub_users(config.hub_users.clone())));
    let pod_metadata: Arc<dyn PodMetadata> = match &pod_cache {
        Some(cache) => cache.clone(),
        None => Arc::new(NoPodMetadata),
    };
    let inputs = Inputs {
        energy,
        activity,
        node_cpu: NodeCpuReader::new(&config.roots.procfs),
        processes: config
            .process_metrics
            .then(|| ProcessScanner::new(&config.roots.procfs)),
        pod_metadata,
    };
    let idle = IdleEstimator::new(config.idle_watts.clone(), config.gpu_idle_watts);
    let mut monitor = Monitor::new(
        inputs,
        config.node_name.clone(),
        idle,
        config.grace_period,
        Instant::now(),
    )
    .with_cpu_source_reason(reason);
    for issue in &unavailable {
        monitor.note_unavailable(issue.clone());
    }
    let gpu = (probes.gpu)(config.gpu).map_err(BuildError::Gpu)?;
    #[cfg(test)]
    let gpu_devices = gpu.as_ref().map_or(0, |sampler| sampler.devices().count());
    if let Some(sampler) = gpu {
        let gpu = GpuMonitor::new(sampler, config.roots.procfs.clone(), config.grace_period)
            .with_assignments(
                Box::new(gpu::grpc::PodResourcesSocket::new(
                    config.pod_resources_socket.clone(),
                )),
                match &pod_cache {
                    Some(cache) => cache.clone(),
                    None => Arc::new(gpu::podresources::NoPodUids),
                },
            );
        monitor = monitor.with_gpu(gpu);
    }
    Ok(Built {
        monitor,
        pod_cache,
        #[cfg(test)]
        unavailable,
        #[cfg(test)]
        gpu_devices,
    })
}

/// An activity source that sees no pods (no cgroup hierarchy found): all activity is `system`.
struct NoPods;
impl ActivitySource for NoPods {
    fn name(&self) -> &'static str {
        "none"
    }
    fn sample(&mut self) -> ActivitySample {
        ActivitySample::default()
    }
}

/// The energy source: RAPL where it can be read, otherwise the estimate (unless forced).
fn energy_source(
    config: &Config,
    probes: &Probes,
    unavailable: &mut Vec<SourceIssue>,
) -> Result<Box<dyn EnergySource>, BuildError> {
    let cpus = logical_cpus(&config.roots.procfs).unwrap_or_else(|| {
        tracing::warn!(
            "cannot count logical CPUs in {}/stat; assuming 1",
            config.roots.procfs.display()
        );
        1
    });
    let estimate = || -> Box<dyn EnergySource> {
        if !config.idle_watts.is_empty() {
            // The estimate's idle is its own model's, exactly: a configured idle would contradict it.
            tracing::warn!(
                "--idle-watts does not apply to the estimate (its idle is --estimate-idle-watts-per-cpu × CPUs); ignored"
            );
        }
        Box::new(Estimate::new(config.estimate, cpus))
    };
    if config.energy_source == EnergySourceChoice::Estimate {
        tracing::info!(
            source = "estimate",
            cpus,
            "energy source: estimate from CPU utilisation (chosen by --energy-source)"
        );
        return Ok(estimate());
    }
    match (probes.rapl)(&config.roots.sysfs) {
        Ok(r) => {
            let zones: Vec<&str> = r.zones().iter().map(|z| z.as_str()).collect();
            tracing::info!(source = "rapl", sockets = r.socket_count(), zones = ?zones, "energy source: RAPL (powercap)");
            Ok(Box::new(r))
        }
        Err(e) if config.energy_source == EnergySourceChoice::Rapl => Err(BuildError::Rapl(e)),
        Err(e) => {
            if e.kind() == IssueKind::PermissionDenied {
                tracing::error!(error = %e, "RAPL is present but unreadable; serving ESTIMATES instead (source=\"estimate\")");
                unavailable.push(SourceIssue::new(Input::Rapl, e.kind(), e.to_string()));
            } else {
                tracing::info!(reason = %e, "no RAPL on this machine");
            }
            tracing::info!(
                source = "estimate",
                cpus,
                idle_watts_per_cpu = config.estimate.idle_watts_per_cpu,
                max_watts_per_cpu = config.estimate.max_watts_per_cpu,
                "energy source: estimate from CPU utilisation, labelled on every node series"
            );
            Ok(estimate())
        }
    }
}

/// Why `--cpu-source auto` wants eBPF, if it does: per-process figures, or live CPU counters (a
/// PMU where `--cpu-counters auto`, the software stand-in where asked for). Otherwise cgroup
/// counters lose nothing and cost the kernel nothing per context switch.
fn ebpf_needed(config: &Config, probes: &Probes) -> Result<SourceReason, String> {
    if config.process_metrics {
        return Ok(SourceReason::ProcessMetrics);
    }
    match config.cpu_counters {
        CpuCountersChoice::Off => Err("process metrics and CPU counters are off".into()),
        CpuCountersChoice::Software => Ok(SourceReason::CpuCounters),
        CpuCountersChoice::Auto => match (probes.pmu)(&config.roots.sysfs) {
            Ok(()) => Ok(SourceReason::CpuCounters),
            Err(e) => Err(format!("process metrics are off and {e}")),
        },
    }
}

/// The CPU-activity source and why: the one `--cpu-source` names, or for `auto` the cheapest that
/// loses nothing (eBPF only where `ebpf_needed`, then cgroup counters, the /proc walk last).
fn activity_source(
    config: &Config,
    probes: &Probes,
    unavailable: &mut Vec<SourceIssue>,
) -> Result<(Box<dyn ActivitySource>, SourceReason), BuildError> {
    let procfs = || -> Box<dyn ActivitySource> { Box::new(ProcfsPods::new(&config.roots.procfs)) };
    let mut reason = SourceReason::Flag;
    let mut cheapest_because = None;
    match config.cpu_source {
        CpuSourceChoice::Procfs => {
            tracing::info!(
                source = "procfs",
                reason = reason.as_str(),
                "CPU activity: /proc walk, chosen by --cpu-source (misses processes shorter than a tick)"
            );
            return Ok((procfs(), reason));
        }
        CpuSourceChoice::Ebpf => {
            let source =
                (probes.ebpf)(&config.roots, config.cpu_counters).map_err(BuildError::Ebpf)?;
            tracing::info!(
                source = "ebpf",
                reason = reason.as_str(),
                "CPU activity: eBPF, chosen by --cpu-source"
            );
            return Ok((source, reason));
        }
        CpuSourceChoice::Cgroup => {}
        CpuSourceChoice::Auto => match ebpf_needed(config, probes) {
            Ok(why) => match (probes.ebpf)(&config.roots, config.cpu_counters) {
                Ok(source) => {
                    tracing::info!(
                        source = "ebpf",
                        reason = why.as_str(),
                        "CPU activity: eBPF (--cpu-source auto: {})",
                        match why {
                            SourceReason::ProcessMetrics => "process metrics are on",
                            _ => "CPU counters are live",
                        }
                    );
                    return Ok((source, why));
                }
                Err(e) => {
                    tracing::warn!(reason = e.kind().as_str(), error = %e,
                        "eBPF unavailable ({}); CPU activity from cgroup counters instead", e.reason());
                    unavailable.push(SourceIssue::new(Input::Ebpf, e.kind(), e.to_string()));
                    reason = SourceReason::EbpfUnavailable;
                }
            },
            Err(why_not) => {
                reason = SourceReason::Cheapest;
                cheapest_because = Some(why_not);
            }
        },
    }
    match CgroupActivity::discover(&config.roots.sysfs, &config.roots.procfs) {
        Ok(a) => {
            match &cheapest_because {
                Some(why) => {
                    tracing::info!(source = "cgroup", reason = reason.as_str(), root = %a.root().display(),
                    "CPU activity: cgroup counters (--cpu-source auto: {why}, so eBPF would cost every context switch and add nothing)")
                }
                None => {
                    tracing::info!(source = "cgroup", reason = reason.as_str(), root = %a.root().display(), "CPU activity: cgroup counters")
                }
            }
            Ok((Box::new(a), reason))
        }
        Err(e) if config.cpu_source == CpuSourceChoice::Auto => {
            tracing::warn!(error = %e, "no cgroup hierarchy usable; CPU activity from a /proc walk instead (misses processes shorter than a tick)");
            unavailable.push(SourceIssue::new(Input::Cgroup, e.kind(), e.to_string()));
            Ok((procfs(), SourceReason::CgroupUnavailable))
        }
        Err(e) => {
            tracing::error!(error = %e, "no cgroup hierarchy usable: all activity counts as system, no pod series");
            unavailable.push(SourceIssue::new(Input::Cgroup, e.kind(), e.to_string()));
            Ok((Box::new(NoPods), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunArgs;
    use crate::gpu::scripted::{ScriptHandle, ScriptedDevice};
    use crate::source::EnergySourceKind;
    use std::fs;
    use std::io;
    use std::path::PathBuf;
    use tempfile::TempDir;

    /// A host under a temp dir: empty `sys/` and `proc/` unless a test fills them.
    struct Host {
        _tmp: TempDir,
        sysfs: PathBuf,
        procfs: PathBuf,
    }

    impl Host {
        fn empty() -> Host {
            let tmp = TempDir::new().unwrap();
            let sysfs = tmp.path().join("sys");
            let procfs = tmp.path().join("proc");
            fs::create_dir_all(&sysfs).unwrap();
            fs::create_dir_all(&procfs).unwrap();
            Host {
                _tmp: tmp,
                sysfs,
                procfs,
            }
        }

        /// A pure cgroup v2 host: the unified hierarchy mounted at /sys/fs/cgroup.
        fn with_cgroup_v2() -> Host {
            let host = Host::empty();
            fs::create_dir_all(host.sysfs.join("fs/cgroup")).unwrap();
            fs::create_dir_all(host.procfs.join("1")).unwrap();
            fs::write(
                host.procfs.join("1/mountinfo"),
                "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
            )
            .unwrap();
            host
        }

        fn config(&self, tune: impl FnOnce(&mut RunArgs)) -> Config {
            let mut args = RunArgs {
                sysfs: Some(self.sysfs.clone()),
                procfs: Some(self.procfs.clone()),
                no_kube: Some(true),
                ..RunArgs::default()
            };
            tune(&mut args);
            args.resolve(None, || Some("node-a".into())).unwrap()
        }
    }

    fn one_socket_powercap() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/powercap/one_socket")
    }

    /// Probes of a host without eBPF (no BTF) and without GPUs; RAPL read for real.
    fn probes() -> Probes {
        Probes {
            rapl: rapl::discover,
            ebpf: |roots, _| {
                Err(ebpf::Error::NoBtf {
                    path: roots.sysfs.join("kernel/btf/vmlinux"),
                })
            },
            pmu: |_| {
                Err(CounterError::NoPmu {
                    cpu: 0,
                    source: io::Error::from_raw_os_error(libc::ENOENT),
                })
            },
            gpu: |_| Ok(None),
        }
    }

    fn with_process_metrics(args: &mut RunArgs) {
        args.process_metrics = Some(true);
    }

    fn reason(built: &Built) -> SourceReason {
        built.monitor.cpu_source_reason()
    }

    fn rapl_permission_denied(sysfs: &Path) -> Result<Rapl, rapl::Error> {
        Err(rapl::Error::PermissionDenied {
            path: sysfs.join("class/powercap/intel-rapl:0/energy_uj"),
        })
    }

    fn unavailable(built: &Built) -> Vec<(&'static str, &'static str)> {
        built
            .unavailable
            .iter()
            .map(|i| (i.input.as_str(), i.kind.as_str()))
            .collect()
    }

    fn build_err(config: &Config, probes: &Probes) -> BuildError {
        match build(config, probes) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    /// An activity source standing in for a loaded eBPF program.
    struct LoadedEbpf;
    impl ActivitySource for LoadedEbpf {
        fn name(&self) -> &'static str {
            "ebpf"
        }
        fn sample(&mut self) -> ActivitySample {
            ActivitySample::default()
        }
    }

    #[test]
    fn rapl_present_is_the_energy_source() {
        let host = Host::empty();
        let mut config = host.config(|_| {});
        config.roots.sysfs = one_socket_powercap();
        let built = build(&config, &probes()).unwrap();
        assert_eq!(built.monitor.energy_kind(), EnergySourceKind::Rapl);
        assert!(!unavailable(&built).iter().any(|(s, _)| *s == "rapl"));
    }

    #[test]
    fn no_rapl_falls_back_to_the_estimate_without_a_note() {
        let host = Host::with_cgroup_v2();
        let built = build(&host.config(with_process_metrics), &probes()).unwrap();
        assert_eq!(built.monitor.energy_kind(), EnergySourceKind::Estimate);
        assert_eq!(unavailable(&built), [("ebpf", "no_btf")]);
    }

    #[test]
    fn rapl_permission_denied_serves_the_estimate_and_reports_rapl_down() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            rapl: rapl_permission_denied,
            ..probes()
        };
        let config = host.config(|a| a.cpu_source = Some(CpuSourceChoice::Cgroup));
        let mut built = build(&config, &probes).unwrap();
        assert_eq!(built.monitor.energy_kind(), EnergySourceKind::Estimate);
        assert_eq!(unavailable(&built), [("rapl", "permission_denied")]);
        // The monitor reports it on every tick: counted once, and down.
        let health = built.monitor.tick(Instant::now()).health;
        assert_eq!(
            health
                .issues
                .get(&(Input::Rapl, IssueKind::PermissionDenied)),
            Some(&1)
        );
        let rapl: Vec<bool> = health
            .sources
            .iter()
            .filter(|s| s.source == "rapl")
            .map(|s| s.up)
            .collect();
        assert_eq!(rapl, [false]);
    }

    #[test]
    fn energy_source_rapl_is_required_when_chosen() {
        let host = Host::with_cgroup_v2();
        let config = host.config(|a| a.energy_source = Some(EnergySourceChoice::Rapl));
        let e = build_err(&config, &probes());
        assert!(
            matches!(e, BuildError::Rapl(rapl::Error::NotFound { .. })),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("--energy-source rapl: "), "{e}");
        let probes = Probes {
            rapl: rapl_permission_denied,
            ..probes()
        };
        let e = build_err(&config, &probes);
        assert!(matches!(
            e,
            BuildError::Rapl(rapl::Error::PermissionDenied { .. })
        ));
    }

    #[test]
    fn energy_source_estimate_never_probes_rapl() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            rapl: |_| panic!("RAPL probed although --energy-source estimate"),
            ..probes()
        };
        let config = host.config(|a| a.energy_source = Some(EnergySourceChoice::Estimate));
        let built = build(&config, &probes).unwrap();
        assert_eq!(built.monitor.energy_kind(), EnergySourceKind::Estimate);
    }

    #[test]
    fn cpu_source_auto_takes_ebpf_with_process_metrics_where_it_loads() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            ebpf: |_, _| Ok(Box::new(LoadedEbpf)),
            ..probes()
        };
        let built = build(&host.config(with_process_metrics), &probes).unwrap();
        assert_eq!(built.monitor.cpu_source(), "ebpf");
        assert_eq!(reason(&built), SourceReason::ProcessMetrics);
        assert!(built.unavailable.is_empty(), "{:?}", built.unavailable);
    }

    #[test]
    fn cpu_source_auto_takes_cgroup_without_pmu_and_process_metrics_and_never_loads_ebpf() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            ebpf: |_, _| panic!("eBPF loaded although nothing needs it"),
            ..probes()
        };
        let built = build(&host.config(|_| {}), &probes).unwrap();
        assert_eq!(built.monitor.cpu_source(), "cgroup");
        assert_eq!(reason(&built), SourceReason::Cheapest);
        assert!(built.unavailable.is_empty(), "{:?}", built.unavailable);
        // --cpu-counters off: the PMU is not even probed.
        let probes = Probes {
            pmu: |_| panic!("PMU probed although --cpu-counters off"),
            ..probes
        };
        let config = host.config(|a| a.cpu_counters = Some(CpuCountersChoice::Off));
        let built = build(&config, &probes).unwrap();
        assert_eq!(
            (built.monitor.cpu_source(), reason(&built)),
            ("cgroup", SourceReason::Cheapest)
        );
    }

    #[test]
    fn cpu_source_auto_takes_ebpf_where_cpu_counters_are_live() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            ebpf: |_, _| Ok(Box::new(LoadedEbpf)),
            pmu: |_| Ok(()),
            ..probes()
        };
        let built = build(&host.config(|_| {}), &probes).unwrap();
        assert_eq!(
            (built.monitor.cpu_source(), reason(&built)),
            ("ebpf", SourceReason::CpuCounters)
        );
        // The software stand-in is asked for by name: no PMU needed.
        let probes = Probes {
            pmu: |_| panic!("PMU probed although --cpu-counters software"),
            ..probes
        };
        let config = host.config(|a| a.cpu_counters = Some(CpuCountersChoice::Software));
        let built = build(&config, &probes).unwrap();
        assert_eq!(
            (built.monitor.cpu_source(), reason(&built)),
            ("ebpf", SourceReason::CpuCounters)
        );
    }

    #[test]
    fn cpu_source_auto_falls_back_to_cgroup_and_notes_ebpf() {
        let host = Host::with_cgroup_v2();
        let built = build(&host.config(with_process_metrics), &probes()).unwrap();
        assert_eq!(built.monitor.cpu_source(), "cgroup");
        assert_eq!(reason(&built), SourceReason::EbpfUnavailable);
        assert_eq!(unavailable(&built), [("ebpf", "no_btf")]);
        let probes = Probes {
            ebpf: |_, _| {
                Err(ebpf::Error::Cpus {
                    path: "/sys/devices/system/cpu/possible",
                    source: io::Error::from_raw_os_error(libc::EPERM),
                })
            },
            ..probes()
        };
        let built = build(&host.config(with_process_metrics), &probes).unwrap();
        assert_eq!(built.monitor.cpu_source(), "cgroup");
        assert_eq!(unavailable(&built), [("ebpf", "permission_denied")]);
    }

    #[test]
    fn cpu_source_cgroup_without_cgroups_gives_every_joule_to_system() {
        let host = Host::empty();
        let config = host.config(|a| a.cpu_source = Some(CpuSourceChoice::Cgroup));
        let built = build(&config, &probes()).unwrap();
        assert_eq!(built.monitor.cpu_source(), "none");
        let sources: Vec<&str> = unavailable(&built).iter().map(|(s, _)| *s).collect();
        assert_eq!(sources, ["cgroup"]);
    }

    #[test]
    fn cpu_source_auto_without_ebpf_and_cgroups_walks_proc() {
        let host = Host::empty();
        let built = build(&host.config(with_process_metrics), &probes()).unwrap();
        assert_eq!(
            (built.monitor.cpu_source(), reason(&built)),
            ("procfs", SourceReason::CgroupUnavailable)
        );
        let sources: Vec<&str> = unavailable(&built).iter().map(|(s, _)| *s).collect();
        assert_eq!(sources, ["ebpf", "cgroup"]);
    }

    #[test]
    fn cpu_source_ebpf_is_required_when_chosen() {
        let host = Host::with_cgroup_v2();
        let config = host.config(|a| a.cpu_source = Some(CpuSourceChoice::Ebpf));
        let e = build_err(&config, &probes());
        assert!(matches!(e, BuildError::Ebpf(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("--cpu-source ebpf: the kernel has no BTF: no kernel BTF at "),
            "{e}"
        );
    }

    #[test]
    fn cpu_source_cgroup_and_procfs_never_probe_ebpf() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            ebpf: |_, _| panic!("eBPF probed although a source was chosen"),
            ..probes()
        };
        for (choice, name) in [
            (CpuSourceChoice::Cgroup, "cgroup"),
            (CpuSourceChoice::Procfs, "procfs"),
        ] {
            let config = host.config(|a| a.cpu_source = Some(choice));
            let built = build(&config, &probes).unwrap();
            assert_eq!(built.monitor.cpu_source(), name);
            assert!(built.unavailable.is_empty(), "{:?}", built.unavailable);
        }
    }

    #[test]
    fn gpus_join_the_monitor_when_the_driver_reports_them() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            gpu: |_| {
                let script = ScriptHandle::new(vec![
                    ScriptedDevice::new(0, "GPU-0"),
                    ScriptedDevice::new(1, "GPU-1"),
                ]);
                DeviceSampler::discover(Box::new(script.driver()))
                    .map(Some)
                    .map_err(|e| e.to_string())
            },
            ..probes()
        };
        let built = build(&host.config(|_| {}), &probes).unwrap();
        assert_eq!(built.gpu_devices, 2);
        let built = build(&host.config(|_| {}), &self::probes()).unwrap();
        assert_eq!(built.gpu_devices, 0);
    }

    #[test]
    fn a_required_gpu_driver_that_fails_is_an_error() {
        let host = Host::with_cgroup_v2();
        let probes = Probes {
            gpu: |_| Err("--gpu nvml: libnvidia-ml.so.1: not found".to_string()),
            ..probes()
        };
        let e = build_err(&host.config(|_| {}), &probes);
        assert_eq!(e.to_string(), "--gpu nvml: libnvidia-ml.so.1: not found");
    }

    #[test]
    fn pod_metadata_off_has_no_pod_cache() {
        let host = Host::with_cgroup_v2();
        let built = build(&host.config(|_| {}), &probes()).unwrap();
        assert!(built.pod_cache.is_none());
        let config = host.config(|a| a.no_kube = None);
        assert_eq!(config.pod_metadata, PodMetadataSource::InCluster);
        let built = build(&config, &probes()).unwrap();
        assert!(built.pod_cache.is_some());
    }
}
