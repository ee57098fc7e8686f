//! GPU energy attributed to pods. `GpuMonitor` runs inside the monitor's tick: it samples every device
//! (`device`, over the `driver::GpuDriver` trait that NVML sits behind), finds each process's pod from
//! its cgroup and the kubelet's device assignments (`podresources`), splits the energy with the pure
//! model (`attribution`) and keeps cumulative counters (`ledger`). It never serves HTTP.

pub mod attribution;
pub mod device;
pub mod driver;
pub mod grpc;
pub mod ledger;
pub mod nvml;
pub mod podresources;
pub mod scripted;

use crate::config::GpuChoice;
use crate::resource::cgroup_path::{parse_proc_cgroup, CgroupOwner};
use crate::resource::pods::PodMetadata;
use crate::units::{io_error_kind, Joules, Pid, PodUid, SourceIssue, Watts};
use attribution::{attribute_gpu, consumers, Assignment, DeviceInput};
use device::DeviceSampler;
use ledger::{GpuLedger, GpuSnapshot};
use podresources::{exclusive_devices, DeviceAssignments, NoAssignments, NoPodUids, PodUidByName};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Open the GPU driver chosen by `--gpu`. `Ok(None)`: GPU support off (chosen, or `auto` without a
/// driver or without devices; logged at info). `Err`: `--gpu nvml` and NVML is not usable, with the
/// one-line reason.
pub fn open(choice: GpuChoice) -> Result<Option<DeviceSampler>, String> {
    if choice == GpuChoice::Off {
        tracing::info!("GPU support off (--gpu off)");
        return Ok(None);
    }
    let sampler = nvml::NvmlDriver::open().and_then(|d| DeviceSampler::discover(Box::new(d)));
    match (sampler, choice) {
        (Ok(s), _) if s.devices().next().is_some() => {
            for d in s.devices() {
                tracing::info!(gpu = d.index, uuid = %d.uuid, name = %d.name, mig_instances = d.mig.len(), "GPU found");
            }
            Ok(Some(s))
        }
        (Ok(_), GpuChoice::Nvml) => Err("--gpu nvml: NVML loaded but reports no GPU".to_string()),
        (Err(e), GpuChoice::Nvml) => Err(format!("--gpu nvml: {e}")),
        (Ok(_), _) => {
            tracing::info!("NVML loaded but reports no GPU: no GPU series");
            Ok(None)
        }
        (Err(e), _) => {
            tracing::info!(reason = %e, "no NVIDIA GPU support (libnvidia-ml.so.1 not usable): no GPU series");
            Ok(None)
        }
    }
}

/// GPU measurement and bookkeeping, driven by the monitor once per tick.
pub struct GpuMonitor {
    sampler: DeviceSampler,
    procfs: PathBuf,
    assignments: Box<dyn DeviceAssignments>,
    pod_uids: Arc<dyn PodUidByName>,
    idle_watts: Option<Watts>,
    /// Lowest average power seen per slot: an upper bound of idle that only goes down.
    learned_idle_watts: Vec<Option<f64>>,
    ledger: GpuLedger,
    up: bool,
}

impl GpuMonitor {
    /// `procfs` is the host's /proc (to read `/proc/<pid>/cgroup`); `idle_watts` a configured idle
    /// power per device (otherwise learned as the lowest power seen).
    pub fn new(
        sampler: DeviceSampler,
        procfs: PathBuf,
        grace: Duration,
        idle_watts: Option<Watts>,
    ) -> GpuMonitor {
        GpuMonitor {
            sampler,
            procfs,
            assignments: Box::new(NoAssignments),
            pod_uids: Arc::new(NoPodUids),
            idle_watts,
            learned_idle_watts: Vec::new(),
            ledger: GpuLedger::new(grace),
            up: true,
        }
    }

    /// Use the kubelet's device assignments, with pod UIDs by name from `pod_uids`.
    pub fn with_assignments(
        mut self,
        assignments: Box<dyn DeviceAssignments>,
        pod_uids: Arc<dyn PodUidByName>,
    ) -> GpuMonitor {
        self.assignments = assignments;
        self.pod_uids = pod_uids;
        self
    }

    /// Whether every device was read in the last tick.
    pub fn up(&self) -> bool {
        self.up
    }

    /// One tick. `elapsed` is `None` on the first tick (baselines only); `now` is monotonic time since
    /// start, for the grace period. Issues are appended to `issues`.
    pub fn tick(
        &mut self,
        elapsed: Option<Duration>,
        now: Duration,
        issues: &mut Vec<SourceIssue>,
    ) {
        let sample = self.sampler.sample(elapsed.unwrap_or(Duration::ZERO));
        self.up = sample.issues.iter().all(|i| i.kind == "counter_reset")
            && sample.devices.len() == self.sampler.devices().count();
        issues.extend(sample.issues);
        for (slot, d) in self.sampler.devices().enumerate() {
            let method = self.sampler.method(slot).map_or("", |m| m.as_str());
            self.ledger
                .describe(slot, d.index, &d.uuid, &d.name, method);
        }
        let Some(elapsed) = elapsed else { return };
        let secs = elapsed.as_secs_f64();

        let owners = self.owners(
            sample
                .devices
                .iter()
                .flat_map(|d| d.processes.iter().map(|p| p.pid)),
            issues,
        );
        let assignments = self.assignments(issues);
        let mut inputs = Vec::with_capacity(sample.devices.len());
        for reading in &sample.devices {
            let (Some(total), Some(info)) = (reading.energy, self.sampler.device(reading.slot))
            else {
                continue;
            };
            let idle = idle_energy(
                self.idle_watts,
                &mut self.learned_idle_watts,
                reading.slot,
                total,
                secs,
            );
            let assignment = Assignment {
                whole: assignments
                    .get(&info.uuid)
                    .or_else(|| assignments.get(&info.index.to_string()))
                    .cloned(),
                instances: info
                    .mig
                    .iter()
                    .map(|m| assignments.get(&m.uuid).cloned())
                    .collect(),
            };
            let sizes: Vec<f64> = info.mig.iter().map(|m| m.memory_bytes as f64).collect();
            inputs.push(DeviceInput {
                slot: reading.slot,
                total,
                idle,
                consumers: consumers(&reading.processes, &owners, &sizes, &assignment),
            });
        }
        let interval = attribute_gpu(&inputs);
        self.ledger.apply(&interval, secs, now);
    }

    /// The GPU part of the snapshot, with pod names from `meta`.
    pub fn snapshot(&self, meta: &dyn PodMetadata) -> GpuSnapshot {
        self.ledger.series(meta, |slot, instance| {
            self.sampler
                .device(slot)
                .and_then(|d| d.mig.get(instance))
                .map(|m| m.uuid.clone())
        })
    }

    /// Cgroup owners of the PIDs NVML reported. A PID without a /proc entry here (another PID namespace,
    /// or gone) is left out: the model treats it as unknown.
    fn owners(
        &self,
        pids: impl Iterator<Item = Pid>,
        issues: &mut Vec<SourceIssue>,
    ) -> HashMap<Pid, CgroupOwner> {
        let mut owners = HashMap::new();
        for pid in pids {
            if owners.contains_key(&pid) {
                continue;
            }
            let path = self.procfs.join(pid.0.to_string()).join("cgroup");
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    owners.insert(pid, parse_proc_cgroup(&text));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => issues.push(SourceIssue::new(
                    "gpu",
                    io_error_kind(&e),
                    format!("{}: {e}", path.display()),
                )),
            }
        }
        owners
    }

    /// Device ID -> the one pod holding it, from the kubelet (empty where unavailable).
    fn assignments(&mut self, issues: &mut Vec<SourceIssue>) -> BTreeMap<String, PodUid> {
        match self.assignments.list() {
            Ok(Some(list)) => exclusive_devices(&list)
                .into_iter()
                .filter_map(|(id, pod)| self.pod_uids.uid(&pod).map(|uid| (id, uid)))
                .collect(),
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                issues.push(SourceIssue::new("podresources", e.kind(), e.to_string()));
                BTreeMap::new()
            }
        }
    }
}

/// Idle energy of one device for an interval: the configured idle power, or the lowest average power
/// seen on that device (an upper bound of idle that only goes down). Clamped later by the model.
fn idle_energy(
    configured: Option<Watts>,
    learned: &mut Vec<Option<f64>>,
    slot: usize,
    total: Joules,
    secs: f64,
) -> Joules {
    if let Some(w) = configured {
        return w.over_seconds(secs);
    }
    if learned.len() <= slot {
        learned.resize(slot + 1, None);
    }
    if secs <= 0.0 || !total.0.is_finite() {
        return Joules::ZERO;
    }
    let watts = total.0 / secs;
    let lowest = learned[slot].map_or(watts, |w| w.min(watts));
    learned[slot] = Some(lowest);
    Watts(lowest).over_seconds(secs)
}
