//! GPU energy attributed to pods. `GpuMonitor` runs inside the monitor's tick: it samples every device
//! (`device`, over the `driver::GpuDriver` trait that NVML sits behind), finds each process's pod from
//! its cgroup and the kubelet's device assignments (`podresources`), splits the energy with the pure
//! model (`attribution`) and keeps cumulative counters (`ledger`). It never serves HTTP.

pub mod attribution;
pub mod device;
pub mod driver;
pub(crate) mod grpc;
pub(crate) mod ledger;
pub(crate) mod nvml;
pub(crate) mod podresources;
#[cfg(any(test, feature = "test-doubles"))]
pub mod scripted;

use crate::config::GpuChoice;
use crate::idle::{IdleEstimator, Scope};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::resource::cgroup_path::CgroupOwner;
use crate::resource::pods::PodMetadata;
use crate::resource::process_owner::owner_of;
use crate::source::plausible;
use crate::units::{Joules, Pid, PodUid};
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
pub(crate) fn open(choice: GpuChoice) -> Result<Option<DeviceSampler>, String> {
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

/// GPU measurement and bookkeeping, driven by the monitor once per tick: an input like RAPL
/// (`read`), then its part of the monitor's model step (`apply`).
pub struct GpuMonitor {
    sampler: DeviceSampler,
    procfs: PathBuf,
    assignments: Box<dyn DeviceAssignments>,
    pod_uids: Arc<dyn PodUidByName>,
    ledger: GpuLedger,
    up: bool,
}

/// One device's reading, ready for the model: its energy, the span it covers, its utilisation (for
/// the idle estimator) and its consumers.
#[derive(Debug, Clone)]
pub(crate) struct GpuDeviceRead {
    pub(crate) slot: usize,
    pub(crate) total: Joules,
    pub(crate) seconds: f64,
    pub(crate) utilization: Option<f64>,
    pub(crate) consumers: Vec<attribution::GpuConsumer>,
}

/// What `GpuMonitor::read` returns: the devices read this tick (none on the baseline tick) and the
/// issues met, like the other inputs' samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct GpuRead {
    pub(crate) devices: Vec<GpuDeviceRead>,
    pub(crate) issues: Vec<SourceIssue>,
}

impl GpuMonitor {
    /// `procfs` is the host's /proc (to read `/proc/<pid>/cgroup`); `grace` the ended pods' grace
    /// period. Idle power comes from the monitor's estimator (`--gpu-idle-watts`, or learned).
    pub fn new(sampler: DeviceSampler, procfs: PathBuf, grace: Duration) -> GpuMonitor {
        GpuMonitor {
            sampler,
            procfs,
            assignments: Box::new(NoAssignments),
            pod_uids: Arc::new(NoPodUids),
            ledger: GpuLedger::new(grace),
            up: true,
        }
    }

    /// Use the kubelet's device assignments, with pod UIDs by name from `pod_uids`.
    pub(crate) fn with_assignments(
        mut self,
        assignments: Box<dyn DeviceAssignments>,
        pod_uids: Arc<dyn PodUidByName>,
    ) -> GpuMonitor {
        self.assignments = assignments;
        self.pod_uids = pod_uids;
        self
    }

    /// Whether every device was read in the last tick.
    pub(crate) fn up(&self) -> bool {
        self.up
    }

    /// Read every device: energy, utilisation and who used it. `elapsed` is `None` on the first tick
    /// (baselines only: no devices in the result).
    pub(crate) fn read(&mut self, elapsed: Option<Duration>) -> GpuRead {
        let sample = self.sampler.sample(elapsed.unwrap_or(Duration::ZERO));
        self.up = sample
            .issues
            .iter()
            .all(|i| i.kind == IssueKind::CounterReset)
            && sample.devices.len() == self.sampler.devices().count();
        let mut read = GpuRead {
            devices: Vec::new(),
            issues: sample.issues,
        };
        for (slot, d) in self.sampler.devices().enumerate() {
            let method = self.sampler.method(slot).map_or("", |m| m.as_str());
            self.ledger
                .describe(slot, d.index, &d.uuid, &d.name, method);
        }
        if elapsed.is_none() {
            return read;
        }
        let (owners, owner_issues) = self.owners(
            sample
                .devices
                .iter()
                .flat_map(|d| d.processes.iter().map(|p| p.pid)),
        );
        read.issues.extend(owner_issues);
        let assignments = self.assignments().unwrap_or_else(|issue| {
            read.issues.push(issue);
            BTreeMap::new()
        });
        for reading in &sample.devices {
            let (Some(total), Some(info)) = (reading.energy, self.sampler.device(reading.slot))
            else {
                continue;
            };
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
            read.devices.push(GpuDeviceRead {
                slot: reading.slot,
                total,
                seconds: reading.seconds,
                utilization: reading.utilization,
                consumers: consumers(&reading.processes, &owners, &sizes, &assignment),
            });
        }
        let refused = admit(&mut read.devices);
        self.up &= refused.is_empty();
        read.issues.extend(refused);
        read
    }

    /// The GPU part of the monitor's model step for an interval of `secs` ending at `now`: each
    /// device's idle from `idle` (the estimator every scope shares), the split, the ledger.
    pub(crate) fn apply(
        &mut self,
        devices: Vec<GpuDeviceRead>,
        idle: &mut IdleEstimator,
        secs: f64,
        now: Duration,
    ) {
        let inputs: Vec<DeviceInput> = devices
            .into_iter()
            .map(|d| DeviceInput {
                slot: d.slot,
                total: d.total,
                // The reading may span more than this tick (the device failed before): so does idle.
                idle: idle.idle_energy(Scope::Gpu(d.slot), d.total, None, d.utilization, d.seconds),
                consumers: d.consumers,
            })
            .collect();
        self.ledger.apply(&attribute_gpu(&inputs), secs, now);
    }

    /// `read` then `apply`, for callers without other inputs (tests, benches). Returns the issues.
    #[must_use]
    pub fn tick(
        &mut self,
        elapsed: Option<Duration>,
        now: Duration,
        idle: &mut IdleEstimator,
    ) -> Vec<SourceIssue> {
        let read = self.read(elapsed);
        if let Some(elapsed) = elapsed {
            self.apply(read.devices, idle, elapsed.as_secs_f64(), now);
        }
        read.issues
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
    ) -> (HashMap<Pid, CgroupOwner>, Vec<SourceIssue>) {
        let mut owners = HashMap::new();
        let mut issues = Vec::new();
        for pid in pids {
            if owners.contains_key(&pid) {
                continue;
            }
            match owner_of(&self.procfs, pid) {
                Ok(owner) => {
                    owners.insert(pid, owner);
                }
                Err(e) if e.kind() == IssueKind::Vanished => {}
                Err(e) => issues.push(SourceIssue::new(Input::Gpu, e.kind(), e.to_string())),
            }
        }
        (owners, issues)
    }

    /// Device ID -> the one pod holding it, from the kubelet (empty where unavailable).
    fn assignments(&mut self) -> Result<BTreeMap<String, PodUid>, SourceIssue> {
        if !self.pod_uids.available() {
            return Ok(BTreeMap::new());
        }
        let list = self
            .assignments
            .list()
            .map_err(|e| SourceIssue::new(Input::PodResources, e.kind(), e.to_string()))?;
        Ok(exclusive_devices(&list.unwrap_or_default())
            .into_iter()
            .filter_map(|(id, pod)| self.pod_uids.uid(&pod).map(|uid| (id, uid)))
            .collect())
    }
}

/// The longest span one device reading may cover (a device failing for a whole year): beyond it the
/// span, and so the energy bound, is not a measurement.
pub(crate) const MAX_READING_SPAN_SECS: f64 = 366.0 * 86_400.0;

/// The gate between the devices and the model, as `source::plausible::admit` is for RAPL: removes
/// every reading whose energy is non-finite or negative, or whose span is not a number, negative or
/// longer than [`MAX_READING_SPAN_SECS`] ([`IssueKind::BadInput`]), or above [`device::MAX_PLAUSIBLE_WATTS`] over its span
/// ([`IssueKind::CounterAnomaly`]; the energy counter's own check already re-baselines, this one also
/// covers the power integral), and returns one issue per refused device. A refused device has no
/// energy this interval, as a failed read does. A utilisation that is not a finite number is dropped
/// (the idle estimator then goes by power alone).
pub(crate) fn admit(devices: &mut Vec<GpuDeviceRead>) -> Vec<SourceIssue> {
    let mut issues = Vec::new();
    devices.retain_mut(|d| {
        if d.seconds > MAX_READING_SPAN_SECS {
            issues.push(SourceIssue::new(
                Input::Gpu,
                IssueKind::BadInput,
                format!(
                    "GPU slot {}: a reading spanning {} s (more than {MAX_READING_SPAN_SECS} s) is not a reading; \
                     interval refused for this device",
                    d.slot, d.seconds
                ),
            ));
            return false;
        }
        if let Some(refused) = plausible::refusal(d.total.0, d.seconds, device::MAX_PLAUSIBLE_WATTS)
        {
            issues.push(refused.into_issue(Input::Gpu, &format!("GPU slot {}", d.slot), "device"));
            return false;
        }
        if d.utilization.is_some_and(|u| !u.is_finite()) {
            d.utilization = None;
        }
        true
    });
    issues
}

#[cfg(test)]
mod tests {
    use super::driver::{RunningProcess, UtilSample};
    use super::podresources::{DeviceAssignment, PodRef, PodResourcesError};
    use super::scripted::{ScriptHandle, ScriptedDevice};
    use super::*;
    use crate::gpu::ledger::tests::assert_identities as check_identities;
    use crate::resource::pods::NoPodMetadata;

    const POD_A: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";
    const POD_B: &str = "0000000b-2b9d-4b7e-9a51-0c3f0e2d7a11";

    fn uid(raw: &str) -> PodUid {
        PodUid::parse(raw).unwrap()
    }

    /// A procfs with `/proc/<pid>/cgroup` of a container of `pod` (container ID = pid repeated).
    fn procfs(pids: &[(u32, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, pod) in pids {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            let line = match pod {
                Some(pod) => format!("0::/kubepods/burstable/pod{pod}/{:064x}\n", pid),
                None => "0::/system.slice/nvidia-persistenced.service\n".to_string(),
            };
            std::fs::write(d.join("cgroup"), line).unwrap();
        }
        dir
    }

    /// A GPU monitor with the idle estimator the exporter's monitor would lend it.
    struct Harness {
        gpu: GpuMonitor,
        idle: IdleEstimator,
    }

    impl Harness {
        fn tick(&mut self, elapsed: Option<Duration>, now: Duration) -> Vec<SourceIssue> {
            self.gpu.tick(elapsed, now, &mut self.idle)
        }
        fn snapshot(&self, meta: &dyn PodMetadata) -> GpuSnapshot {
            self.gpu.snapshot(meta)
        }
        fn up(&self) -> bool {
            self.gpu.up()
        }
        fn with_assignments(
            self,
            assignments: Box<dyn DeviceAssignments>,
            pod_uids: Arc<dyn PodUidByName>,
        ) -> Harness {
            Harness {
                gpu: self.gpu.with_assignments(assignments, pod_uids),
                idle: self.idle,
            }
        }
    }

    fn monitor(script: &ScriptHandle, procfs: &std::path::Path, idle: Option<f64>) -> Harness {
        let sampler = DeviceSampler::discover(Box::new(script.driver())).unwrap();
        Harness {
            gpu: GpuMonitor::new(sampler, procfs.to_path_buf(), Duration::from_secs(10)),
            idle: IdleEstimator::new(BTreeMap::new(), idle.map(crate::units::Watts)),
        }
    }

    fn running(pids: &[u32]) -> Vec<RunningProcess> {
        pids.iter()
            .map(|p| RunningProcess {
                pid: Pid(*p),
                mig_instance: None,
            })
            .collect()
    }

    fn util(t_us: u64, samples: &[(u32, u32)]) -> Option<Vec<UtilSample>> {
        Some(
            samples
                .iter()
                .map(|(pid, sm)| UtilSample {
                    pid: Pid(*pid),
                    timestamp_us: t_us,
                    sm_util: *sm,
                })
                .collect(),
        )
    }

    fn pod_joules(s: &GpuSnapshot, pod: &str, device: usize) -> f64 {
        s.pods
            .iter()
            .filter(|p| p.uid == uid(pod) && p.device == device)
            .map(|p| p.joules.0)
            .sum()
    }

    #[test]
    fn scripted_devices_conserve_energy_and_split_it_by_utilisation() {
        let proc_dir = procfs(&[(10, Some(POD_A)), (20, Some(POD_B))]);
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.energy_mj = Some(1_000);
        d0.running = running(&[10, 20]);
        let mut d1 = ScriptedDevice::new(1, "GPU-1");
        d1.energy_mj = Some(5_000);
        let script = ScriptHandle::new(vec![d0, d1]);
        let mut m = monitor(&script, proc_dir.path(), Some(50.0));
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        {
            let mut s = script.lock();
            s.devices[0].energy_mj = Some(301_000);
            s.devices[0].util = util(1_000, &[(10, 75), (20, 25)]);
            s.devices[1].energy_mj = Some(105_000);
        }
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        assert!(issues.is_empty(), "{issues:?}");
        assert!(m.up());
        let s = m.snapshot(&NoPodMetadata);
        assert_eq!(s.devices.len(), 2);
        assert_eq!(s.devices[0].total_joules, 300.0);
        assert_eq!(s.devices[0].idle_joules, 50.0);
        assert_eq!(s.devices[0].watts, 300.0);
        assert_eq!(s.devices[0].method, "energy_counter");
        assert!((pod_joules(&s, POD_A, 0) - 187.5).abs() < 1e-9);
        assert!((pod_joules(&s, POD_B, 0) - 62.5).abs() < 1e-9);
        // The container series carries the container from the process's cgroup.
        let a = s.pods.iter().find(|p| p.uid == uid(POD_A)).unwrap();
        assert_eq!(a.containers.len(), 1);
        assert_eq!(a.containers[0].id.as_str(), format!("{:064x}", 10));
        assert!((a.containers[0].joules.0 - 187.5).abs() < 1e-9);
        // Device 1 had no process: all active energy is unattributed.
        assert_eq!(s.devices[1].total_joules, 100.0);
        assert_eq!(s.devices[1].unattributed_joules, 50.0);
        check_identities(&s);

        // Pod B's process exits; pod A now computes alone. Its old samples are not counted twice.
        {
            let mut s = script.lock();
            s.devices[0].energy_mj = Some(501_000);
            s.devices[0].running = running(&[10]);
            let mut samples = util(1_000, &[(10, 75), (20, 25)]).unwrap();
            samples.extend(util(2_000, &[(10, 90)]).unwrap());
            s.devices[0].util = Some(samples);
            s.devices[1].energy_mj = Some(205_000);
        }
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(2)));
        let s = m.snapshot(&NoPodMetadata);
        assert!((pod_joules(&s, POD_A, 0) - (187.5 + 150.0)).abs() < 1e-9);
        let b = s.pods.iter().find(|p| p.uid == uid(POD_B)).unwrap();
        assert!(b.ended);
        assert_eq!(b.watts, 0.0);
        assert!((b.joules.0 - 62.5).abs() < 1e-9);
        check_identities(&s);

        // After the grace period pod B's joules move to terminated_pods.
        {
            let mut s = script.lock();
            s.devices[0].energy_mj = Some(601_000);
            s.devices[1].energy_mj = Some(305_000);
        }
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(20)));
        let s = m.snapshot(&NoPodMetadata);
        assert!(s.pods.iter().all(|p| p.uid != uid(POD_B)));
        assert!((s.devices[0].terminated_pods_joules.0 - 62.5).abs() < 1e-9);
        check_identities(&s);
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn host_processes_and_unknown_pids_stay_unattributed() {
        // PID 30 is a host daemon; PID 40 has no /proc entry here (another PID namespace).
        let proc_dir = procfs(&[(10, Some(POD_A)), (30, None)]);
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.running = running(&[10, 30, 40]);
        d0.util = None; // cannot sample: even split
        let script = ScriptHandle::new(vec![d0]);
        let mut m = monitor(&script, proc_dir.path(), Some(0.0));
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        script.lock().devices[0].energy_mj = Some(90_000);
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        let s = m.snapshot(&NoPodMetadata);
        assert!((pod_joules(&s, POD_A, 0) - 30.0).abs() < 1e-9);
        assert!((s.devices[0].unattributed_joules.0 - 60.0).abs() < 1e-9);
        check_identities(&s);
    }

    #[test]
    fn failing_device_is_skipped_counted_and_its_energy_arrives_with_the_next_reading() {
        let proc_dir = procfs(&[]);
        let script = ScriptHandle::new(vec![
            ScriptedDevice::new(0, "GPU-0"),
            ScriptedDevice::new(1, "GPU-1"),
        ]);
        let mut m = monitor(&script, proc_dir.path(), None);
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        {
            let mut s = script.lock();
            s.devices[0].energy_mj = Some(100_000);
            s.devices[1].energy_mj = Some(100_000);
            s.devices[1].fail = Some(IssueKind::Unknown);
        }
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        assert!(!m.up());
        assert_eq!(issues.len(), 1);
        assert_eq!(
            (issues[0].input, issues[0].kind),
            (Input::Gpu, IssueKind::Unknown)
        );
        let s = m.snapshot(&NoPodMetadata);
        assert_eq!(s.devices[0].total_joules, 100.0);
        assert_eq!(s.devices[1].total_joules, 0.0);
        assert_eq!(
            script.lock().reinit_calls,
            0,
            "one device failing is no driver restart"
        );
        {
            let mut s = script.lock();
            s.devices[0].energy_mj = Some(200_000);
            s.devices[1].energy_mj = Some(200_000);
            s.devices[1].fail = None;
        }
        issues.clear();
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(2)));
        assert!(issues.is_empty() && m.up());
        let s = m.snapshot(&NoPodMetadata);
        assert_eq!(
            s.devices[1].total_joules, 200.0,
            "no joule lost across the failure"
        );
        check_identities(&s);
    }

    /// Regression: the catch-up reading after a long failure spans every missed tick. It used to be
    /// judged against one tick (a false `counter_anomaly` that threw the energy away once the missed
    /// time × power passed 5 kW·tick), integrated power over one tick only, and got one tick of idle.
    #[test]
    fn a_device_failing_for_many_ticks_loses_no_energy_and_gets_idle_for_the_whole_gap() {
        let proc_dir = procfs(&[]);
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.energy_mj = Some(1_000);
        let mut d1 = ScriptedDevice::new(1, "GPU-1");
        d1.energy_mj = None; // power integral
        d1.power_mw = 100_000;
        let script = ScriptHandle::new(vec![d0, d1]);
        let mut m = monitor(&script, proc_dir.path(), Some(50.0));
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        {
            let mut s = script.lock();
            s.devices[0].fail = Some(IssueKind::Unknown);
            s.devices[1].fail = Some(IssueKind::Unknown);
        }
        // 20 one-second ticks of failure (both devices: `Unknown` is no driver failure, no reinit).
        for t in 1..=20 {
            issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(t)));
        }
        assert_eq!(issues.len(), 40, "{issues:?}");
        issues.clear();
        {
            let mut s = script.lock();
            s.devices[0].fail = None;
            s.devices[1].fail = None;
            // 21 s at 300 W: 6.3 kJ, more than 5 kW over one tick.
            s.devices[0].energy_mj = Some(1_000 + 6_300_000);
        }
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(21)));
        assert!(issues.is_empty(), "{issues:?}");
        let s = m.snapshot(&NoPodMetadata);
        assert!((s.devices[0].total_joules.0 - 6_300.0).abs() < 1e-9);
        assert!((s.devices[0].idle_joules.0 - 50.0 * 21.0).abs() < 1e-9);
        // Constant 100 W over the 21 s since the baseline.
        assert!((s.devices[1].total_joules.0 - 2_100.0).abs() < 1e-9);
        assert!((s.devices[1].idle_joules.0 - 50.0 * 21.0).abs() < 1e-9);
        check_identities(&s);
    }

    #[test]
    fn a_driver_restart_is_survived() {
        let proc_dir = procfs(&[]);
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.energy_mj = Some(1_000_000);
        let script = ScriptHandle::new(vec![d0]);
        let mut m = monitor(&script, proc_dir.path(), None);
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        script.lock().devices[0].energy_mj = Some(1_100_000);
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        // The driver goes away: every device is lost and NVML cannot be re-initialised yet.
        {
            let mut s = script.lock();
            s.devices[0].fail = Some(IssueKind::GpuLost);
            s.driver_down = true;
        }
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(2)));
        let kinds: Vec<IssueKind> = issues.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [IssueKind::GpuLost, IssueKind::Driver]);
        assert_eq!(script.lock().reinit_calls, 1);
        // The driver is back with its counter restarted from 0.
        {
            let mut s = script.lock();
            s.devices[0].fail = None;
            s.driver_down = false;
            s.devices[0].energy_mj = Some(5_000);
        }
        issues.clear();
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(3)));
        assert_eq!(
            issues.iter().map(|i| i.kind).collect::<Vec<_>>(),
            [IssueKind::CounterReset]
        );
        script.lock().devices[0].energy_mj = Some(55_000);
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(4)));
        let s = m.snapshot(&NoPodMetadata);
        assert_eq!(s.devices[0].total_joules, 150.0);
        assert_eq!(s.devices[0].watts, 50.0);
        check_identities(&s);
    }

    #[test]
    fn without_an_energy_counter_power_is_integrated() {
        let proc_dir = procfs(&[]);
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.energy_mj = None;
        d0.power_mw = 100_000;
        let script = ScriptHandle::new(vec![d0]);
        let mut m = monitor(&script, proc_dir.path(), None);
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        script.lock().devices[0].power_mw = 300_000;
        issues.extend(m.tick(Some(Duration::from_secs(2)), Duration::from_secs(2)));
        assert!(issues.is_empty(), "{issues:?}");
        let s = m.snapshot(&NoPodMetadata);
        assert_eq!(s.devices[0].method, "power_integral");
        // Trapezoid: (100 W + 300 W) / 2 × 2 s.
        assert!((s.devices[0].total_joules.0 - 400.0).abs() < 1e-9);
        // Before a full learning window, idle is the average so far (200 W): all idle so far.
        assert!((s.devices[0].idle_joules.0 - 400.0).abs() < 1e-9);
    }

    #[test]
    fn a_counter_that_jumped_is_held_then_measured_from_the_jump() {
        let proc_dir = procfs(&[]);
        let script = ScriptHandle::new(vec![ScriptedDevice::new(0, "GPU-0")]);
        let mut m = monitor(&script, proc_dir.path(), None);
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        script.lock().devices[0].energy_mj = Some(60_000_000); // 60 kJ in 1 s
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        assert_eq!(issues[0].kind, IssueKind::CounterAnomaly);
        assert!(issues[0].detail.contains("held"), "{}", issues[0].detail);
        // Implausible again from the last good reading: measured from the refused one.
        script.lock().devices[0].energy_mj = Some(60_250_000);
        let second = m.tick(Some(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(second.len(), 1);
        assert!(second[0].detail.contains("lost"), "{}", second[0].detail);
        assert_eq!(m.snapshot(&NoPodMetadata).devices[0].total_joules, 250.0);
    }

    #[test]
    fn a_misread_gpu_counter_loses_no_joule() {
        let proc_dir = procfs(&[]);
        let script = ScriptHandle::new(vec![ScriptedDevice::new(0, "GPU-0")]);
        let mut m = monitor(&script, proc_dir.path(), None);
        m.tick(None, Duration::ZERO);
        let start = script.lock().devices[0].energy_mj.unwrap_or(0);
        script.lock().devices[0].energy_mj = Some(start + 60_000_000); // a garbage reading
        let held = m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].kind, IssueKind::CounterAnomaly);
        // True again: 600 J over the 2 s since the last good reading, all of it counted.
        script.lock().devices[0].energy_mj = Some(start + 600_000);
        let next = m.tick(Some(Duration::from_secs(1)), Duration::from_secs(2));
        assert!(next.is_empty(), "{next:?}");
        assert_eq!(m.snapshot(&NoPodMetadata).devices[0].total_joules, 600.0);
    }

    struct OnePod(Vec<DeviceAssignment>);
    impl DeviceAssignments for OnePod {
        fn list(&mut self) -> Result<Option<Vec<DeviceAssignment>>, PodResourcesError> {
            Ok(Some(self.0.clone()))
        }
    }
    struct Uids;
    impl PodUidByName for Uids {
        fn uid(&self, pod: &PodRef) -> Option<PodUid> {
            (pod.name == "jupyter-alice").then(|| uid(POD_A))
        }
    }
    struct Broken;
    impl DeviceAssignments for Broken {
        fn list(&mut self) -> Result<Option<Vec<DeviceAssignment>>, PodResourcesError> {
            Err(PodResourcesError::Rpc {
                detail: "unavailable".into(),
            })
        }
    }

    #[test]
    fn a_gpu_assigned_to_one_pod_gives_it_the_active_energy_without_visible_processes() {
        let proc_dir = procfs(&[]);
        let script = ScriptHandle::new(vec![
            ScriptedDevice::new(0, "GPU-0"),
            ScriptedDevice::new(1, "GPU-1"),
        ]);
        let assignment = |id: &str, name: &str| DeviceAssignment {
            resource: "nvidia.com/gpu".into(),
            device_id: id.into(),
            pod: PodRef {
                namespace: "jhub".into(),
                name: name.into(),
            },
            container: "notebook".into(),
        };
        let mut m = monitor(&script, proc_dir.path(), Some(10.0)).with_assignments(
            Box::new(OnePod(vec![
                assignment("GPU-0", "jupyter-alice"),
                // Unknown pod name: cannot be used.
                assignment("GPU-1", "jupyter-bob"),
            ])),
            Arc::new(Uids),
        );
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        {
            let mut s = script.lock();
            s.devices[0].energy_mj = Some(110_000);
            s.devices[1].energy_mj = Some(110_000);
        }
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        let s = m.snapshot(&NoPodMetadata);
        assert!((pod_joules(&s, POD_A, 0) - 100.0).abs() < 1e-9);
        assert_eq!(pod_joules(&s, POD_A, 1), 0.0);
        assert_eq!(s.devices[1].unattributed_joules, 100.0);
        check_identities(&s);

        // A failing kubelet is counted, and measuring goes on.
        let mut m = monitor(&script, proc_dir.path(), None)
            .with_assignments(Box::new(Broken), Arc::new(Uids));
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        assert_eq!(
            issues.iter().map(|i| (i.input, i.kind)).collect::<Vec<_>>(),
            [(Input::PodResources, IssueKind::Rpc)]
        );

        // Without a way to turn names into UIDs the kubelet is not asked at all.
        let mut m = monitor(&script, proc_dir.path(), None)
            .with_assignments(Box::new(Broken), Arc::new(NoPodUids));
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn mig_instances_carry_their_uuid() {
        use super::driver::MigInstance;
        let proc_dir = procfs(&[(10, Some(POD_A)), (20, Some(POD_B))]);
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.info.mig = vec![
            MigInstance {
                uuid: "MIG-a".into(),
                memory_bytes: 30,
            },
            MigInstance {
                uuid: "MIG-b".into(),
                memory_bytes: 10,
            },
        ];
        d0.running = vec![
            RunningProcess {
                pid: Pid(10),
                mig_instance: Some(0),
            },
            RunningProcess {
                pid: Pid(20),
                mig_instance: Some(1),
            },
        ];
        let script = ScriptHandle::new(vec![d0]);
        let mut m = monitor(&script, proc_dir.path(), Some(0.0));
        let mut issues = Vec::new();
        issues.extend(m.tick(None, Duration::ZERO));
        script.lock().devices[0].energy_mj = Some(400_000);
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        let s = m.snapshot(&NoPodMetadata);
        let a = s.pods.iter().find(|p| p.uid == uid(POD_A)).unwrap();
        assert_eq!(a.instance.as_deref(), Some("MIG-a"));
        assert!((a.joules.0 - 300.0).abs() < 1e-9);
        assert!((pod_joules(&s, POD_B, 0) - 100.0).abs() < 1e-9);
        check_identities(&s);
    }

    #[test]
    fn the_gate_refuses_non_finite_and_implausible_readings_and_counts_them() {
        let read = |slot, total: f64, seconds, utilization| GpuDeviceRead {
            slot,
            total: Joules(total),
            seconds,
            utilization,
            consumers: Vec::new(),
        };
        let mut devices = vec![
            read(0, 300.0, 1.0, Some(f64::NAN)),
            read(1, f64::NAN, 1.0, None),
            read(2, -1.0, 1.0, None),
            read(3, 1e308, 1.0, None),
            read(4, 300.0, f64::NAN, None),
            // 9 kJ over 2 s is 4.5 kW: admitted; a short span is judged over 1 s.
            read(5, 9_000.0, 2.0, Some(0.5)),
            read(6, 4_000.0, 0.01, None),
            read(7, 1.0, f64::INFINITY, None),
        ];
        let issues = admit(&mut devices);
        let kinds: Vec<IssueKind> = issues.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                IssueKind::BadInput,
                IssueKind::BadInput,
                IssueKind::CounterAnomaly,
                IssueKind::BadInput,
                IssueKind::BadInput
            ]
        );
        assert!(issues.iter().all(|i| i.input == Input::Gpu));
        assert!(issues[2].detail.contains("GPU slot 3"), "{:?}", issues[2]);
        let slots: Vec<usize> = devices.iter().map(|d| d.slot).collect();
        assert_eq!(slots, [0, 5, 6]);
        assert_eq!(devices[0].utilization, None);
        assert_eq!(devices[1].utilization, Some(0.5));
    }

    /// A device without an energy counter whose power reading is absurd (NVML's u32 milliwatts
    /// reach 4.3 MW): the power integral passes the same bound as the counter.
    #[test]
    fn an_absurd_power_reading_is_refused_not_integrated() {
        let proc_dir = procfs(&[]);
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.energy_mj = None;
        d0.power_mw = 300_000;
        let script = ScriptHandle::new(vec![d0]);
        let mut m = monitor(&script, proc_dir.path(), None);
        let mut issues = m.tick(None, Duration::ZERO);
        issues.extend(m.tick(Some(Duration::from_secs(1)), Duration::from_secs(1)));
        assert!(issues.is_empty(), "{issues:?}");
        script.lock().devices[0].power_mw = u32::MAX;
        let issues = m.tick(Some(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].kind, IssueKind::CounterAnomaly);
        assert!(!m.up());
        let s = m.snapshot(&NoPodMetadata);
        assert_eq!(s.devices[0].total_joules, 300.0);
        check_identities(&s);
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..6_000.0,
            1 => proptest::num::f64::ANY,
            1 => Just(1e308),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(-1.0),
            1 => Just(0.0),
        ]
    }

    fn any_owner() -> impl Strategy<Value = attribution::GpuOwner> {
        (0u32..4).prop_map(|n| match n {
            0 => attribution::GpuOwner::Unattributed,
            1 => attribution::GpuOwner::Pod(uid(POD_B)),
            n => attribution::GpuOwner::Container {
                pod: uid(POD_A),
                container: crate::units::ContainerId::parse(&format!("{n:064x}")).unwrap(),
            },
        })
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the devices report (energy, span, utilisation, consumer weights; finite or not),
        /// the gate and the GPU model step publish finite values that keep the GPU identities, and
        /// every refused reading is counted.
        #[test]
        fn the_gpu_model_publishes_finite_values_that_keep_its_identities(
            intervals in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        (
                            0usize..2,
                            any_f64(),
                            any_f64(),
                            proptest::option::of(any_f64()),
                            proptest::collection::vec((any_owner(), any_f64()), 0..4),
                        ),
                        0..3,
                    ),
                    1u64..20_000,
                ),
                1..25,
            )
        ) {
            let proc_dir = procfs(&[]);
            let script = ScriptHandle::new(vec![
                ScriptedDevice::new(0, "GPU-0"),
                ScriptedDevice::new(1, "GPU-1"),
            ]);
            let mut m = monitor(&script, proc_dir.path(), None);
            let _ = m.tick(None, Duration::ZERO);
            let mut previous = m.snapshot(&NoPodMetadata);
            let mut now = Duration::ZERO;
            for (readings, millis) in &intervals {
                now += Duration::from_millis(*millis);
                let mut devices: Vec<GpuDeviceRead> = readings
                    .iter()
                    .map(|(slot, total, seconds, utilization, consumers)| GpuDeviceRead {
                        slot: *slot,
                        total: Joules(*total),
                        seconds: *seconds,
                        utilization: *utilization,
                        consumers: consumers
                            .iter()
                            .map(|(owner, weight)| attribution::GpuConsumer {
                                owner: owner.clone(),
                                instance: None,
                                weight: *weight,
                            })
                            .collect(),
                    })
                    .collect();
                let expected = devices
                    .iter()
                    .filter(|d| {
                        d.seconds > MAX_READING_SPAN_SECS
                            || plausible::refusal(d.total.0, d.seconds, device::MAX_PLAUSIBLE_WATTS)
                                .is_some()
                    })
                    .count();
                let issues = admit(&mut devices);
                prop_assert_eq!(issues.len(), expected);
                prop_assert!(devices.iter().all(|d| d.utilization.is_none_or(f64::is_finite)));
                m.gpu.apply(devices, &mut m.idle, *millis as f64 / 1000.0, now);
                let s = m.snapshot(&NoPodMetadata);
                if let Err(e) = crate::gpu::ledger::tests::check_published(&s, Some(&previous)) {
                    prop_assert!(false, "{}", e);
                }
                previous = s;
            }
        }
    }

    /// No CPU energy at all: only the GPU path of the monitor is exercised.
    struct NoCpuEnergy;
    impl crate::source::EnergySource for NoCpuEnergy {
        fn kind(&self) -> crate::source::EnergySourceKind {
            crate::source::EnergySourceKind::Estimate
        }
        fn zones(&self) -> &[crate::units::ZoneKind] {
            &[]
        }
        fn sample(&mut self, _ctx: &crate::source::IntervalContext) -> crate::source::EnergySample {
            crate::source::EnergySample::default()
        }
    }
    struct NoActivity;
    impl crate::activity::ActivitySource for NoActivity {
        fn name(&self) -> &'static str {
            "none"
        }
        fn sample(&mut self) -> crate::activity::ActivitySample {
            crate::activity::ActivitySample::default()
        }
    }

    #[test]
    fn the_monitor_ticks_the_gpu_and_publishes_it_with_its_health() {
        use crate::monitor::{Inputs, Monitor};
        let proc_dir = procfs(&[(10, Some(POD_A))]);
        std::fs::write(proc_dir.path().join("stat"), "cpu  1 0 1 8 0 0 0 0 0 0\n").unwrap();
        let mut d0 = ScriptedDevice::new(0, "GPU-0");
        d0.running = running(&[10]);
        let script = ScriptHandle::new(vec![d0]);
        let inputs = Inputs {
            energy: Box::new(NoCpuEnergy),
            activity: Box::new(NoActivity),
            node_cpu: crate::activity::procfs::NodeCpuReader::new(proc_dir.path()),
            processes: None,
            pod_metadata: Arc::new(NoPodMetadata),
        };
        let t0 = std::time::Instant::now();
        let mut m = Monitor::new(
            inputs,
            "n".into(),
            crate::idle::IdleEstimator::new(BTreeMap::new(), Some(crate::units::Watts(20.0))),
            Duration::from_secs(60),
            t0,
        )
        .with_gpu(monitor(&script, proc_dir.path(), None).gpu);
        let s = m.tick(t0);
        assert_eq!(s.gpu.devices.len(), 1);
        assert_eq!(s.gpu.devices[0].total_joules, 0.0);
        script.lock().devices[0].energy_mj = Some(220_000);
        let s = m.tick(t0 + Duration::from_secs(2));
        assert_eq!(s.gpu.devices[0].total_joules, 220.0);
        assert!((pod_joules(&s.gpu, POD_A, 0) - 180.0).abs() < 1e-9);
        let gpu = s.health.sources.iter().find(|h| h.source == "gpu").unwrap();
        assert!(gpu.up);
        script.lock().devices[0].fail = Some(IssueKind::Unknown);
        let s = m.tick(t0 + Duration::from_secs(4));
        assert!(
            !s.health
                .sources
                .iter()
                .find(|h| h.source == "gpu")
                .unwrap()
                .up
        );
        assert_eq!(
            s.health.issues.get(&(Input::Gpu, IssueKind::Unknown)),
            Some(&1)
        );
    }
}
