//! The tick loop: reads every input on the exporter's own interval (CPU time, energy, GPUs, as close
//! together as it can), then runs one model step (idle for every scope from one estimator, the CPU and
//! GPU splits, the ledgers) and publishes one immutable `Snapshot` per tick. Owns all counter state and the clock;
//! a scrape never reaches this module.

use crate::activity::procfs::{NodeCpuReader, ProcessScanner};
use crate::activity::{ActivitySource, NodeCpu, ProcessActivity, SourceReason};
use crate::attribution::carry::Carry;
use crate::attribution::{attribute, ActivityInput, ZoneInput};
use crate::gpu::GpuMonitor;
use crate::idle::{IdleEstimator, Scope};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::ledger::Ledger;
use crate::resource::pods::PodMetadata;
use crate::snapshot::{ExporterHealth, Snapshot, SocketZone, SourceHealth};
use crate::source::plausible::admit;
use crate::source::{EnergySource, IntervalContext, SocketEnergy};
use crate::units::{Joules, Watts};
use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Which input the tick loop is reading now, and since when. Shared with `main`, which names it when
/// the loop does not stop in time at shutdown (a read stuck in the kernel: a hung filesystem, a
/// driver that does not answer).
#[derive(Debug, Default)]
pub struct InFlight(Mutex<Option<(&'static str, Instant)>>);

impl InFlight {
    fn set(&self, current: Option<(&'static str, Instant)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = current;
    }

    /// The input being read and for how long; `None` between reads.
    pub(crate) fn current(&self) -> Option<(&'static str, Duration)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(input, since)| (input, since.elapsed()))
    }

    /// Runs `read` with `input` marked as in flight.
    fn read<T>(&self, input: &'static str, read: impl FnOnce() -> T) -> T {
        self.set(Some((input, Instant::now())));
        let out = read();
        self.set(None);
        out
    }
}

/// Everything the tick loop reads from.
pub(crate) struct Inputs {
    pub(crate) energy: Box<dyn EnergySource>,
    pub(crate) activity: Box<dyn ActivitySource>,
    pub(crate) node_cpu: NodeCpuReader,
    /// Per-process scanning; `None` unless process metrics are on.
    pub(crate) processes: Option<ProcessScanner>,
    pub(crate) pod_metadata: Arc<dyn PodMetadata>,
}

pub struct Monitor {
    inputs: Inputs,
    node_name: String,
    idle: IdleEstimator,
    ledger: Ledger,
    health: ExporterHealth,
    started: Instant,
    last_sample: Option<Instant>,
    /// (input, kind) pairs already logged at warn level: later ones go to debug.
    warned: HashSet<(Input, IssueKind)>,
    /// Inputs found unusable at start (e.g. RAPL permission denied): reported as down on every tick.
    unavailable: Vec<Input>,
    /// GPU measurement, when GPU support is on.
    gpu: Option<GpuMonitor>,
    /// Cumulative energy per (zone, socket), sorted.
    sockets: Vec<SocketZone>,
    /// Pods' CPU time above the node's busy time, owed to them in the next interval.
    carry: Carry,
    /// Why `inputs.activity` was chosen.
    cpu_source_reason: SourceReason,
    /// The input being read now.
    in_flight: Arc<InFlight>,
}

impl Monitor {
    pub(crate) fn new(
        inputs: Inputs,
        node_name: String,
        idle: IdleEstimator,
        grace: Duration,
        now: Instant,
    ) -> Monitor {
        let zones = inputs.energy.zones().to_vec();
        Monitor {
            inputs,
            node_name,
            idle,
            ledger: Ledger::new(zones, grace),
            health: ExporterHealth::default(),
            started: now,
            last_sample: None,
            warned: HashSet::new(),
            unavailable: Vec::new(),
            gpu: None,
            sockets: Vec::new(),
            carry: Carry::default(),
            cpu_source_reason: SourceReason::Flag,
            in_flight: Arc::default(),
        }
    }

    /// Says why the CPU-activity source was chosen (`SourceReason::Flag` unless set).
    pub(crate) fn with_cpu_source_reason(mut self, reason: SourceReason) -> Monitor {
        self.cpu_source_reason = reason;
        self
    }

    pub fn cpu_source_reason(&self) -> SourceReason {
        self.cpu_source_reason
    }

    /// Which input the tick loop is reading now (shared: it stays valid after the monitor moves to
    /// its thread).
    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    /// Measure GPUs too, on the same tick.
    pub(crate) fn with_gpu(mut self, gpu: GpuMonitor) -> Monitor {
        self.gpu = Some(gpu);
        self
    }

    /// Record an input that could not be used at start: counted once in the errors self-metric (and
    /// logged by the caller), and reported as down (`kepler_exporter_source_up 0`) from then on.
    pub(crate) fn note_unavailable(&mut self, issue: SourceIssue) {
        self.warned.insert((issue.input, issue.kind));
        self.count(&issue);
        if !self.unavailable.contains(&issue.input) {
            self.unavailable.push(issue.input);
        }
    }

    pub fn energy_kind(&self) -> crate::source::EnergySourceKind {
        self.inputs.energy.kind()
    }

    pub fn cpu_source(&self) -> &'static str {
        self.inputs.activity.name()
    }

    /// One tick at monotonic time `now`: sample everything, attribute the interval, return the snapshot.
    /// The first tick only sets baselines (the snapshot is not ready).
    pub(crate) fn tick(&mut self, now: Instant) -> Snapshot {
        let tick_started = Instant::now();
        let elapsed = self.last_sample.map(|t| now.saturating_duration_since(t));
        let mut issues: Vec<SourceIssue> = Vec::new();

        // Read CPU counters and energy counters as close together as possible.
        let in_flight = self.in_flight.clone();
        let node_cpu = match in_flight.read("procfs /proc/stat", || self.inputs.node_cpu.sample()) {
            Ok(n) => n,
            Err(e) => {
                issues.push(SourceIssue::new(Input::Procfs, e.kind(), e.to_string()));
                None
            }
        };
        let activity = in_flight.read(self.inputs.activity.name(), || {
            self.inputs.activity.sample()
        });
        issues.extend(activity.issues.iter().cloned());
        let processes: Vec<ProcessActivity> = match &mut self.inputs.processes {
            Some(scanner) => {
                let (p, i) = in_flight.read("procfs processes", || scanner.sample());
                issues.extend(i);
                p
            }
            None => Vec::new(),
        };
        let node = node_cpu.unwrap_or(NodeCpu::default());
        let usage = node.usage_ratio();
        let ctx = IntervalContext {
            elapsed: elapsed.unwrap_or(Duration::ZERO),
            cpu_usage_ratio: usage,
        };
        let mut energy = in_flight.read(self.inputs.energy.kind().as_str(), || {
            self.inputs.energy.sample(&ctx)
        });
        let energy_input = Input::from(self.inputs.energy.kind());
        if let Some(elapsed) = elapsed {
            let refused = admit(
                &mut energy,
                energy_input,
                elapsed.as_secs_f64(),
                self.inputs.energy.plausible_watts(),
            );
            energy.issues.extend(refused);
        }
        issues.extend(energy.issues.iter().cloned());
        let gpu_devices = self.gpu.as_mut().map(|gpu| {
            let read = in_flight.read(Input::Gpu.as_str(), || gpu.read(elapsed));
            issues.extend(read.issues);
            read.devices
        });

        let energy_up = !energy.issues.iter().any(|i| i.input == energy_input);
        let activity_up = !activity
            .issues
            .iter()
            .any(|i| i.kind != IssueKind::Vanished);
        // One series per input name: the procfs CPU source and /proc/stat are both `procfs`, and
        // an input is up only when every part of it is.
        let mut sources = Vec::new();
        add_health(&mut sources, self.inputs.energy.kind().as_str(), energy_up);
        add_health(&mut sources, self.inputs.activity.name(), activity_up);
        add_health(
            &mut sources,
            Input::Procfs.as_str(),
            node_cpu.is_some() || elapsed.is_none(),
        );
        if let Some(gpu) = &self.gpu {
            add_health(&mut sources, Input::Gpu.as_str(), gpu.up());
        }
        for input in &self.unavailable {
            add_health(&mut sources, input.as_str(), false);
        }
        self.health.sources = sources;

        if let Some(elapsed) = elapsed {
            let secs = elapsed.as_secs_f64();
            self.add_sockets(&energy.sockets, secs);
            let zones: Vec<ZoneInput> = energy
                .zones
                .iter()
                .map(|z| ZoneInput {
                    zone: z.zone,
                    total: z.energy,
                    idle: self.idle.idle_energy(
                        Scope::Cpu(z.zone),
                        z.energy,
                        z.idle_hint,
                        node_cpu.as_ref().map(|_| usage),
                        secs,
                    ),
                })
                .collect();
            let fitted = self.carry.fit(&activity.pods, node);
            self.health.cpu_time_carried_seconds += fitted.carried.as_f64() / 1e9;
            self.health.cpu_time_clipped_seconds += fitted.clipped.as_f64() / 1e9;
            let interval = attribute(
                &zones,
                ActivityInput {
                    node,
                    pods: &fitted.pods,
                    processes: &processes,
                },
            );
            let since_start = now.saturating_duration_since(self.started);
            self.ledger.apply(&interval, secs, since_start);
            if let (Some(gpu), Some(devices)) = (&mut self.gpu, gpu_devices) {
                gpu.apply(devices, &mut self.idle, secs, since_start);
            }
            self.health.intervals += 1;
        }
        self.last_sample = Some(now);
        self.health.cpu_source_stats = self.inputs.activity.stats();
        self.record(issues);

        self.health.ticks += 1;
        let tick_secs = tick_started.elapsed().as_secs_f64();
        self.health.last_tick_seconds = tick_secs;
        self.health.tick_seconds_total += tick_secs;
        self.health.taken_at_unix_seconds = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);

        let (pods, processes) = self.ledger.series(self.inputs.pod_metadata.as_ref());
        self.health.pod_metadata = self.inputs.pod_metadata.sync_status();
        Snapshot {
            node_name: self.node_name.clone(),
            energy_source: self.inputs.energy.kind(),
            cpu_source: self.inputs.activity.name(),
            cpu_source_reason: self.cpu_source_reason,
            zones: self.ledger.zones().to_vec(),
            node: self.ledger.node().to_vec(),
            sockets: self.sockets.clone(),
            cpu_usage_ratio: usage,
            pods,
            processes,
            gpu: self
                .gpu
                .as_ref()
                .map(|g| g.snapshot(self.inputs.pod_metadata.as_ref()))
                .unwrap_or_default(),
            health: self.health.clone(),
        }
    }

    /// Adds one interval's per-socket energy; a socket without a reading this interval shows 0 W
    /// (its energy arrives with its next good reading).
    fn add_sockets(&mut self, sockets: &[SocketEnergy], secs: f64) {
        for known in &mut self.sockets {
            known.watts = Watts::default();
        }
        for reading in sockets {
            let key = (reading.zone, reading.socket);
            let found = self
                .sockets
                .binary_search_by(|s| (s.zone, s.socket).cmp(&key));
            let index = found.unwrap_or_else(|i| {
                let (zone, socket) = key;
                let (joules, watts) = (Joules::ZERO, Watts::default());
                let new = SocketZone {
                    zone,
                    socket,
                    joules,
                    watts,
                };
                self.sockets.insert(i, new);
                i
            });
            let socket = &mut self.sockets[index];
            socket.joules += reading.energy;
            socket.watts = reading.energy.per_seconds(secs);
        }
    }

    /// One more issue of its input and kind, for `kepler_exporter_source_errors_total`.
    fn count(&mut self, issue: &SourceIssue) {
        *self
            .health
            .issues
            .entry((issue.input, issue.kind))
            .or_insert(0) += 1;
    }

    fn record(&mut self, issues: Vec<SourceIssue>) {
        for issue in issues {
            self.count(&issue);
            let (source, kind) = (issue.input.as_str(), issue.kind.as_str());
            if self.warned.insert((issue.input, issue.kind)) {
                tracing::warn!(
                    source,
                    kind,
                    "{} (further {source}/{kind} issues are logged at debug level)",
                    issue.detail
                );
            } else {
                tracing::debug!(source, kind, "{}", issue.detail);
            }
        }
    }
}

/// Run ticks every `interval` until `shutdown` receives a message or is dropped, publishing each
/// snapshot. Ticks are scheduled on a fixed grid; an overrun skips to the next slot.
pub fn run(
    mut monitor: Monitor,
    interval: Duration,
    publish: watch::Sender<Arc<Snapshot>>,
    shutdown: Receiver<()>,
) {
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        let snapshot = monitor.tick(now);
        publish.send_replace(Arc::new(snapshot));
        next += interval;
        let after = Instant::now();
        if next <= after {
            tracing::warn!(interval = ?interval, "tick overran its interval; skipping to the next slot");
            while next <= after {
                next += interval;
            }
        }
        match shutdown.recv_timeout(next - after) {
            Err(RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    tracing::debug!("monitor stopped");
}

/// Adds `source` to the health list, or, when it is there already, marks it down unless both are up.
fn add_health(sources: &mut Vec<SourceHealth>, source: &'static str, up: bool) {
    match sources.iter_mut().find(|h| h.source == source) {
        Some(existing) => existing.up &= up,
        None => sources.push(SourceHealth { source, up }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{ActivitySample, ContainerActivity, PodActivity};
    use crate::resource::pods::NoPodMetadata;
    use crate::source::{rapl, EnergySample, EnergySourceKind, ZoneEnergy};
    use crate::units::{ContainerId, CpuNanos, Joules, PodUid, ZoneKind};
    use std::collections::BTreeMap;

    /// 30 J per sample on package, with an issue every third sample.
    struct ScriptedEnergy(u32);
    impl EnergySource for ScriptedEnergy {
        fn kind(&self) -> EnergySourceKind {
            EnergySourceKind::Rapl
        }
        fn zones(&self) -> &[ZoneKind] {
            &[ZoneKind::Package]
        }
        fn sample(&mut self, _ctx: &IntervalContext) -> EnergySample {
            self.0 += 1;
            let mut s = EnergySample::default();
            if self.0 > 1 {
                s.zones.push(ZoneEnergy {
                    zone: ZoneKind::Package,
                    energy: Joules(30.0),
                    idle_hint: None,
                });
            }
            if self.0.is_multiple_of(3) {
                s.issues.push(SourceIssue::new(
                    Input::Rapl,
                    IssueKind::Parse,
                    "garbage in energy_uj",
                ));
            }
            s
        }
    }

    struct ScriptedPods;
    impl ActivitySource for ScriptedPods {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn sample(&mut self) -> ActivitySample {
            ActivitySample {
                pods: vec![PodActivity {
                    uid: PodUid::parse("00000001-0000-0000-0000-000000000000").unwrap(),
                    cpu_time: CpuNanos(500_000_000),
                    containers: vec![ContainerActivity {
                        id: ContainerId::parse(&"1".repeat(64)).unwrap(),
                        cpu_time: CpuNanos(500_000_000),
                        runtime: None,
                    }],
                }],
                issues: vec![],
            }
        }
    }

    #[test]
    fn first_tick_is_a_baseline_then_intervals_conserve_and_issues_are_counted() {
        let procfs = tempfile::tempdir().unwrap();
        let stat = procfs.path().join("stat");
        std::fs::write(
            &stat,
            "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\n",
        )
        .unwrap();
        let inputs = Inputs {
            energy: Box::new(ScriptedEnergy(0)),
            activity: Box::new(ScriptedPods),
            node_cpu: NodeCpuReader::new(procfs.path()),
            processes: None,
            pod_metadata: Arc::new(NoPodMetadata),
        };
        let mut cfg = BTreeMap::new();
        cfg.insert(ZoneKind::Package, crate::units::Watts(5.0));
        let t0 = Instant::now();
        let mut m = Monitor::new(
            inputs,
            "n".into(),
            IdleEstimator::new(cfg, None),
            Duration::from_secs(60),
            t0,
        );
        let s = m.tick(t0);
        assert!(!s.is_ready());
        assert_eq!(s.health.ticks, 1);
        // 1 s later: 1 s of busy time out of 2 s of capacity (100 ticks per second assumed by the
        // kernel's USER_HZ on Linux).
        std::fs::write(
            &stat,
            "cpu  150 0 150 900 0 0 0 0 0 0\ncpu0 150 0 150 900 0 0 0 0 0 0\n",
        )
        .unwrap();
        let s = m.tick(t0 + Duration::from_secs(1));
        assert!(s.is_ready());
        let n = &s.node[0];
        assert_eq!(n.total_joules, 30.0);
        assert_eq!(n.idle_joules, 5.0);
        assert_eq!(n.active_joules, 25.0);
        // The pod used 0.5 s of 1 s busy time: half of active.
        assert!((s.pods[0].joules[0].0 - 12.5).abs() < 1e-9);
        assert!((n.system_joules.0 - 12.5).abs() < 1e-9);
        assert!((s.cpu_usage_ratio - 0.5).abs() < 1e-9);
        std::fs::write(&stat, "cpu  200 0 200 1000 0 0 0 0 0 0\n").unwrap();
        let s = m.tick(t0 + Duration::from_secs(2));
        assert_eq!(
            s.health.issues.get(&(Input::Rapl, IssueKind::Parse)),
            Some(&1)
        );
        assert!(
            !s.health
                .sources
                .iter()
                .find(|h| h.source == "rapl")
                .unwrap()
                .up
        );
        assert_eq!(s.node[0].total_joules, 60.0);
    }

    /// A monitor over `ScriptedEnergy`, `activity` and the /proc/stat of `procfs`, idle learned.
    fn scripted_monitor(
        procfs: &std::path::Path,
        activity: Box<dyn ActivitySource>,
    ) -> (Monitor, Instant) {
        let idle = IdleEstimator::new(BTreeMap::new(), None);
        monitor_over(Box::new(ScriptedEnergy(0)), activity, procfs, idle)
    }

    /// A monitor over `energy`, `activity` and the /proc/stat of `procfs`, 60 s grace.
    fn monitor_over(
        energy: Box<dyn EnergySource>,
        activity: Box<dyn ActivitySource>,
        procfs: &std::path::Path,
        idle: IdleEstimator,
    ) -> (Monitor, Instant) {
        let inputs = Inputs {
            energy,
            activity,
            node_cpu: NodeCpuReader::new(procfs),
            processes: None,
            pod_metadata: Arc::new(NoPodMetadata),
        };
        let t0 = Instant::now();
        let monitor = Monitor::new(inputs, "n".into(), idle, Duration::from_secs(60), t0);
        (monitor, t0)
    }

    #[test]
    fn unreadable_proc_stat_is_counted_not_fatal() {
        let procfs = tempfile::tempdir().unwrap();
        let (mut m, t0) = scripted_monitor(procfs.path(), Box::new(ScriptedPods));
        m.tick(t0);
        let s = m.tick(t0 + Duration::from_secs(1));
        assert!(s
            .health
            .issues
            .keys()
            .any(|(input, _)| *input == Input::Procfs));
        // Energy is still accounted; with no busy time known the pods' share is by their own time.
        assert_eq!(s.node[0].total_joules, 30.0);
        let pods: f64 = s.pods.iter().map(|p| p.joules[0].0).sum();
        assert!((s.node[0].active_joules.0 - pods - s.node[0].system_joules.0).abs() < 1e-9);
    }

    /// `--cpu-source procfs` used to serve `kepler_exporter_source_up{source="procfs"}` twice (the
    /// CPU source and /proc/stat), a duplicate series Prometheus rejects once the values differ.
    #[test]
    fn procfs_cpu_source_serves_one_source_up_series() {
        let procfs = tempfile::tempdir().unwrap();
        let stat = procfs.path().join("stat");
        std::fs::write(&stat, "cpu  100 0 100 800 0 0 0 0 0 0\n").unwrap();
        let activity = crate::activity::procfs::pods::ProcfsPods::new(procfs.path());
        let (mut m, t0) = scripted_monitor(procfs.path(), Box::new(activity));
        let procfs_health = |s: &Snapshot| -> Vec<bool> {
            s.health
                .sources
                .iter()
                .filter(|h| h.source == Input::Procfs.as_str())
                .map(|h| h.up)
                .collect()
        };
        m.tick(t0);
        std::fs::write(&stat, "cpu  150 0 150 900 0 0 0 0 0 0\n").unwrap();
        let s = m.tick(t0 + Duration::from_secs(1));
        assert_eq!(procfs_health(&s), vec![true]);
        let mut names: Vec<&str> = s.health.sources.iter().map(|h| h.source).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            s.health.sources.len(),
            "{:?}",
            s.health.sources
        );
        // /proc/stat unreadable: the one procfs series says down.
        std::fs::write(&stat, "garbage\n").unwrap();
        let s = m.tick(t0 + Duration::from_secs(2));
        assert_eq!(procfs_health(&s), vec![false]);
    }

    /// The simulated node of the idle tests: one RAPL package behind a real powercap tree whose power
    /// is `idle + slope × utilisation` (times `factor(t)`, for spikes and dips), and a /proc/stat whose
    /// 4 CPUs are busy at `usage(t)`. Ticks 1 s apart for `secs`; returns the package's idle watts.
    fn simulated_node_idle(
        idle: f64,
        slope: f64,
        secs: usize,
        mut usage: impl FnMut(usize) -> f64,
        mut factor: impl FnMut(usize) -> f64,
    ) -> f64 {
        let sys = tempfile::tempdir().unwrap();
        let zone = sys.path().join("class/powercap/intel-rapl:0");
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("name"), "package-0\n").unwrap();
        std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
        std::fs::write(zone.join("energy_uj"), "0\n").unwrap();
        let procfs = tempfile::tempdir().unwrap();
        let stat = procfs.path().join("stat");
        let (mut busy, mut quiet, mut uj) = (0u64, 0u64, 0u64);
        let write_stat = |busy: u64, quiet: u64| {
            let mut text = format!("cpu  {busy} 0 0 {quiet} 0 0 0 0 0 0\n");
            for cpu in 0..4 {
                text += &format!("cpu{cpu} {} 0 0 {} 0 0 0 0 0 0\n", busy / 4, quiet / 4);
            }
            std::fs::write(&stat, text).unwrap();
        };
        write_stat(busy, quiet);
        let (mut m, t0) = monitor_over(
            Box::new(crate::source::rapl::discover(sys.path()).unwrap()),
            Box::new(ScriptedPods),
            procfs.path(),
            IdleEstimator::default(),
        );
        m.tick(t0);
        let mut last = None;
        for t in 0..secs {
            // 4 CPUs × 100 ticks per second.
            let u = usage(t);
            let busy_ticks = (u * 400.0).round() as u64;
            busy += busy_ticks;
            quiet += 400 - busy_ticks;
            write_stat(busy, quiet);
            uj += ((idle + slope * u) * factor(t) * 1e6) as u64;
            std::fs::write(zone.join("energy_uj"), format!("{uj}\n")).unwrap();
            let s = m.tick(t0 + Duration::from_secs(t as u64 + 1));
            for n in &s.node {
                assert!((n.total_joules.0 - n.idle_joules.0 - n.active_joules.0).abs() < 1e-6);
            }
            last = Some(s);
        }
        let s = last.unwrap();
        let package = s
            .zones
            .iter()
            .position(|z| *z == ZoneKind::Package)
            .unwrap();
        s.node[package].idle_watts.0
    }

    #[test]
    fn simulated_node_idle_is_learned_within_5_percent_in_60_s() {
        use crate::idle::tests::Load;
        for load in Load::ALL {
            let script = load.script(60);
            let w = simulated_node_idle(40.0, 120.0, 60, |t| script[t].0, |t| script[t].1);
            assert!(((w - 40.0) / 40.0).abs() <= 0.05, "{load:?}: {w} W");
        }
    }

    /// Replays one scripted interval per sample: (package J, dram J, idle hint J).
    struct ReplayEnergy(std::collections::VecDeque<(f64, f64, Option<f64>)>, bool);
    impl EnergySource for ReplayEnergy {
        fn kind(&self) -> EnergySourceKind {
            EnergySourceKind::Rapl
        }
        fn zones(&self) -> &[ZoneKind] {
            &[ZoneKind::Package, ZoneKind::Dram]
        }
        fn sample(&mut self, _ctx: &IntervalContext) -> EnergySample {
            let mut s = EnergySample::default();
            if !std::mem::replace(&mut self.1, true) {
                return s; // the baseline
            }
            let Some((package, dram, hint)) = self.0.pop_front() else {
                return s;
            };
            for (zone, joules) in [(ZoneKind::Package, package), (ZoneKind::Dram, dram)] {
                s.zones.push(ZoneEnergy {
                    zone,
                    energy: Joules(joules),
                    idle_hint: hint.map(Joules),
                });
            }
            s
        }
    }

    /// Replays one scripted set of pods per sample: (pod number, pod ns, container ns).
    struct ReplayPods(std::collections::VecDeque<Vec<(u8, u64, Vec<u64>)>>);
    impl ActivitySource for ReplayPods {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn sample(&mut self) -> ActivitySample {
            let pods = self.0.pop_front().unwrap_or_default();
            let mut seen = std::collections::BTreeSet::new();
            ActivitySample {
                pods: pods
                    .into_iter()
                    .filter(|(n, _, _)| seen.insert(*n))
                    .map(|(n, t, cs)| PodActivity {
                        uid: PodUid::parse(&format!("{n:08x}-0000-0000-0000-000000000000"))
                            .unwrap(),
                        cpu_time: CpuNanos(t),
                        containers: cs
                            .iter()
                            .enumerate()
                            .map(|(i, t)| ContainerActivity {
                                id: ContainerId::parse(&format!(
                                    "{:064x}",
                                    u32::from(n) * 100 + i as u32
                                ))
                                .unwrap(),
                                cpu_time: CpuNanos(*t),
                                runtime: None,
                            })
                            .collect(),
                    })
                    .collect(),
                issues: vec![],
            }
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-9)
    }

    /// Every published number finite (joules non-negative, never going back), and the identities:
    /// total = idle + active, active = Σ pods + terminated + system, pod = Σ containers.
    fn check_published(s: &Snapshot, previous: Option<&Snapshot>) -> Result<(), String> {
        for (zi, n) in s.node.iter().enumerate() {
            let values = [
                n.total_joules.0,
                n.idle_joules.0,
                n.active_joules.0,
                n.system_joules.0,
                n.terminated_pods_joules.0,
            ];
            if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!("zone {zi}: {n:?}"));
            }
            let watts = [
                n.total_watts.0,
                n.idle_watts.0,
                n.active_watts.0,
                n.system_watts.0,
            ];
            if watts.iter().any(|v| !v.is_finite()) {
                return Err(format!("zone {zi} watts: {n:?}"));
            }
            if !close(n.total_joules.0, n.idle_joules.0 + n.active_joules.0) {
                return Err(format!("total != idle + active: {n:?}"));
            }
            let pods: f64 = s.pods.iter().map(|p| p.joules[zi].0).sum();
            if !close(
                n.active_joules.0,
                pods + n.terminated_pods_joules.0 + n.system_joules.0,
            ) {
                return Err(format!(
                    "active != pods + terminated + system: {n:?}, pods {pods}"
                ));
            }
            for p in &s.pods {
                let (j, w) = (p.joules[zi].0, p.watts[zi].0);
                if !j.is_finite() || j < 0.0 || !w.is_finite() {
                    return Err(format!("pod {:?}", p.uid));
                }
                let cs: f64 = p.containers.iter().map(|c| c.joules[zi].0).sum();
                if !p.containers.is_empty() && !close(cs, j) {
                    return Err(format!("pod != containers: {j} vs {cs}"));
                }
                if p.containers
                    .iter()
                    .any(|c| !c.joules[zi].0.is_finite() || !c.watts[zi].0.is_finite())
                {
                    return Err("container not finite".into());
                }
            }
            if let Some(before) = previous.and_then(|p| p.node.get(zi)) {
                if n.total_joules.0 < before.total_joules.0 {
                    return Err("node total went back".into());
                }
            }
        }
        for socket in &s.sockets {
            if !socket.joules.0.is_finite() || !socket.watts.0.is_finite() {
                return Err(format!("socket {socket:?}"));
            }
        }
        if !s.cpu_usage_ratio.is_finite() {
            return Err("usage ratio".into());
        }
        Ok(())
    }

    fn any_joules() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..5_000.0,
            1 => proptest::num::f64::ANY,
            1 => Just(1e308),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(-1.0),
            1 => 5_000.0f64..1e7,
        ]
    }

    /// One interval of the scripted GPUs: the counter device's step in millijoules (`None`: the
    /// counter goes back to 0, a driver reload), the power-only device's milliwatts, the device
    /// utilisation (percent, possibly above 100) and two processes' SM utilisation samples.
    type GpuStep = (Option<u64>, u32, Option<u32>, (u32, u32), u8);

    fn any_gpu_step() -> impl Strategy<Value = GpuStep> {
        (
            prop_oneof![
                4 => (0u64..3_000_000).prop_map(Some),
                1 => any::<u64>().prop_map(Some),
                1 => Just(None),
            ],
            prop_oneof![3 => 0u32..700_000, 1 => any::<u32>()],
            proptest::option::of(any::<u32>()),
            (any::<u32>(), any::<u32>()),
            0u8..4,
        )
    }

    /// Two scripted GPUs under the model step: slot 0 reads NVML's energy counter, slot 1 has none
    /// (power integrated). Processes 10 and 20 are containers of two pods, 30 a host process.
    struct ScriptedGpuNode {
        script: crate::gpu::scripted::ScriptHandle,
        counter_mj: std::cell::Cell<u64>,
        /// The counter device as its sampler sees it: the last good reading, the seconds since it,
        /// and whether an implausible reading is held.
        baseline_mj: std::cell::Cell<u64>,
        span_secs: std::cell::Cell<f64>,
        held: std::cell::Cell<bool>,
        /// The power-only device's last reading (the baseline tick reads the script's 0 mW).
        power_w: std::cell::Cell<f64>,
        util_us: std::cell::Cell<u64>,
    }

    impl ScriptedGpuNode {
        fn new(procfs: &std::path::Path) -> ScriptedGpuNode {
            use crate::gpu::scripted::{ScriptHandle, ScriptedDevice};
            for (pid, cgroup) in [
                (
                    10,
                    format!(
                        "0::/kubepods/pod{}/{:064x}\n",
                        "00000010-0000-0000-0000-000000000000", 10
                    ),
                ),
                (
                    20,
                    format!(
                        "0::/kubepods/pod{}/{:064x}\n",
                        "00000020-0000-0000-0000-000000000000", 20
                    ),
                ),
                (30, "0::/system.slice/host.service\n".to_string()),
            ] {
                let dir = procfs.join(pid.to_string());
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("cgroup"), cgroup).unwrap();
            }
            let mut power_only = ScriptedDevice::new(1, "GPU-1");
            power_only.energy_mj = None;
            ScriptedGpuNode {
                script: ScriptHandle::new(vec![ScriptedDevice::new(0, "GPU-0"), power_only]),
                counter_mj: std::cell::Cell::new(0),
                baseline_mj: std::cell::Cell::new(0),
                span_secs: std::cell::Cell::new(0.0),
                held: std::cell::Cell::new(false),
                power_w: std::cell::Cell::new(0.0),
                util_us: std::cell::Cell::new(0),
            }
        }

        fn monitor(&self, procfs: &std::path::Path) -> crate::gpu::GpuMonitor {
            let sampler =
                crate::gpu::device::DeviceSampler::discover(Box::new(self.script.driver()))
                    .unwrap();
            crate::gpu::GpuMonitor::new(sampler, procfs.to_path_buf(), Duration::from_secs(3))
        }

        /// Script the next interval of `secs`; returns how many readings the model must refuse.
        fn step(&self, step: &GpuStep, secs: f64) -> u64 {
            use crate::gpu::device::MAX_PLAUSIBLE_WATTS;
            use crate::gpu::driver::{RunningProcess, UtilSample};
            use crate::units::Pid;
            let (counter_step, power_mw, gpu_util, (sm_a, sm_b), running) = *step;
            let mut refused = 0;
            let before = self.counter_mj.get();
            let after = counter_step.map_or(0, |d| before.saturating_add(d));
            // An implausible delta from the last good reading is held once (the baseline stays),
            // then, if implausible again, re-based at the newest reading; a step back is a reset.
            let span = self.span_secs.get() + secs;
            let baseline = self.baseline_mj.get();
            let mut rebase = true;
            if after >= baseline {
                let joules = (after - baseline) as f64 / 1000.0;
                if span > 0.0 && joules / span > MAX_PLAUSIBLE_WATTS {
                    refused += 1;
                    rebase = self.held.get();
                }
            }
            self.held.set(!rebase);
            if rebase {
                self.baseline_mj.set(after);
                self.span_secs.set(0.0);
            } else {
                self.span_secs.set(span);
            }
            self.counter_mj.set(after);
            let watts = f64::from(power_mw) / 1000.0;
            let previous = self.power_w.replace(watts);
            if (previous + watts) / 2.0 * secs > MAX_PLAUSIBLE_WATTS * secs.max(1.0) {
                refused += 1;
            }
            let t = self.util_us.get() + 1_000;
            self.util_us.set(t);
            let pids: Vec<u32> = [10, 20, 30]
                .into_iter()
                .take(usize::from(running))
                .collect();
            let mut script = self.script.lock();
            for d in &mut script.devices {
                d.gpu_util = gpu_util;
                d.power_mw = power_mw;
                d.running = pids
                    .iter()
                    .map(|p| RunningProcess {
                        pid: Pid(*p),
                        mig_instance: None,
                    })
                    .collect();
                d.util = Some(
                    [(10, sm_a), (20, sm_b)]
                        .into_iter()
                        .map(|(p, sm)| UtilSample {
                            pid: Pid(p),
                            timestamp_us: t,
                            sm_util: sm,
                        })
                        .collect(),
                );
            }
            script.devices[0].energy_mj = Some(after);
            refused
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever a source reports, finite or not, the model publishes finite values that keep its
        /// identities, and every refused reading is counted.
        #[test]
        fn the_model_publishes_finite_values_that_keep_its_identities(
            intervals in proptest::collection::vec(
                (
                    (any_joules(), any_joules(), proptest::option::of(any_joules())),
                    1u64..20_000,
                    0u64..400,
                    proptest::collection::vec(
                        (0u8..6, 0u64..3_000_000_000, proptest::collection::vec(0u64..2_000_000_000, 0..3)),
                        0..5,
                    ),
                    any_gpu_step(),
                ),
                1..25,
            )
        ) {
            let procfs = tempfile::tempdir().unwrap();
            let stat = procfs.path().join("stat");
            let write_stat = |busy: u64, idle: u64| {
                std::fs::write(&stat, format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n")).unwrap();
            };
            write_stat(0, 0);
            let gpu = ScriptedGpuNode::new(procfs.path());
            let (m, t0) = monitor_over(
                Box::new(ReplayEnergy(intervals.iter().map(|i| i.0).collect(), false)),
                Box::new(ReplayPods(
                    std::iter::once(Vec::new()).chain(intervals.iter().map(|i| i.3.clone())).collect(),
                )),
                procfs.path(),
                IdleEstimator::new(BTreeMap::new(), None),
            );
            let mut m = m.with_gpu(gpu.monitor(procfs.path()));
            let mut previous = m.tick(t0);
            let (mut now, mut busy, mut idle) = (t0, 0u64, 0u64);
            let (mut refused_bad, mut refused_high, mut gpu_refused) = (0u64, 0u64, 0u64);
            for ((package, dram, _), millis, busy_ticks, _, gpu_step) in &intervals {
                now += Duration::from_millis(*millis);
                busy += busy_ticks;
                idle += 400 - busy_ticks;
                write_stat(busy, idle);
                let gpu_refused_now = gpu.step(gpu_step, Duration::from_millis(*millis).as_secs_f64());
                gpu_refused += gpu_refused_now;
                let bound = rapl::DEFAULT_MAX_ZONE_WATTS * (*millis as f64 / 1000.0).max(1.0);
                for joules in [*package, *dram] {
                    if !joules.is_finite() || joules < 0.0 {
                        refused_bad += 1;
                    } else if joules > bound {
                        refused_high += 1;
                    }
                }
                let s = m.tick(now);
                prop_assert!(s.is_ready());
                if let Err(e) = check_published(&s, Some(&previous)) {
                    prop_assert!(false, "{}", e);
                }
                let count = |kind| s.health.issues.get(&(Input::Rapl, kind)).copied().unwrap_or(0);
                prop_assert_eq!(count(IssueKind::BadInput), refused_bad);
                prop_assert_eq!(count(IssueKind::CounterAnomaly), refused_high);
                if let Err(e) = crate::gpu::ledger::tests::check_published(&s.gpu, Some(&previous.gpu)) {
                    prop_assert!(false, "GPU: {}", e);
                }
                let gpu_issues = |kind| s.health.issues.get(&(Input::Gpu, kind)).copied().unwrap_or(0);
                prop_assert_eq!(gpu_issues(IssueKind::CounterAnomaly), gpu_refused);
                prop_assert_eq!(gpu_issues(IssueKind::BadInput), 0);
                let gpu_up = s.health.sources.iter().find(|h| h.source == Input::Gpu.as_str()).map(|h| h.up);
                prop_assert_eq!(gpu_up, Some(gpu_refused_now == 0));
                previous = s;
            }
        }
    }

    /// Waits for a message before every reading: a read stuck in the kernel, on demand.
    struct StuckEnergy(std::sync::mpsc::Receiver<()>);
    impl EnergySource for StuckEnergy {
        fn kind(&self) -> EnergySourceKind {
            EnergySourceKind::Rapl
        }
        fn zones(&self) -> &[ZoneKind] {
            &[ZoneKind::Package]
        }
        fn sample(&mut self, _ctx: &IntervalContext) -> EnergySample {
            let _ = self.0.recv();
            EnergySample::default()
        }
    }

    #[test]
    fn the_input_being_read_is_named_while_it_is_stuck() {
        let procfs = tempfile::tempdir().unwrap();
        std::fs::write(procfs.path().join("stat"), "cpu  1 0 1 8 0 0 0 0 0 0\n").unwrap();
        let (release, stuck) = std::sync::mpsc::channel();
        let (mut m, t0) = monitor_over(
            Box::new(StuckEnergy(stuck)),
            Box::new(ScriptedPods),
            procfs.path(),
            IdleEstimator::default(),
        );
        let in_flight = m.in_flight();
        assert_eq!(in_flight.current(), None);
        let ticking = std::thread::spawn(move || {
            m.tick(t0);
        });
        let started = Instant::now();
        let seen = loop {
            if let Some(current) = in_flight.current() {
                if current.0 == "rapl" || started.elapsed() > Duration::from_secs(10) {
                    break current;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(seen.0, "rapl");
        std::thread::sleep(Duration::from_millis(50));
        assert!(in_flight.current().unwrap().1 >= Duration::from_millis(50));
        release.send(()).unwrap();
        ticking.join().unwrap();
        assert_eq!(in_flight.current(), None);
    }
}
