//! The tick loop: reads every source on the exporter's own interval, runs the energy model, updates
//! the ledger and publishes one immutable `Snapshot` per tick. Owns all counter state and the clock;
//! a scrape never reaches this module.

use crate::activity::procfs::{NodeCpuReader, ProcessScanner};
use crate::activity::{ActivitySource, NodeCpu, ProcessActivity};
use crate::attribution::{attribute, ActivityInput, ZoneInput};
use crate::idle::IdleEstimator;
use crate::ledger::Ledger;
use crate::resource::pods::PodMetadata;
use crate::snapshot::{ExporterHealth, Snapshot, SourceHealth};
use crate::source::{EnergySource, IntervalContext};
use crate::units::SourceIssue;
use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Everything the tick loop reads from.
pub struct Inputs {
    pub energy: Box<dyn EnergySource>,
    pub activity: Box<dyn ActivitySource>,
    pub node_cpu: NodeCpuReader,
    /// Per-process scanning; `None` unless process metrics are on.
    pub processes: Option<ProcessScanner>,
    pub pod_metadata: Arc<dyn PodMetadata>,
}

pub struct Monitor {
    inputs: Inputs,
    node_name: String,
    idle: IdleEstimator,
    ledger: Ledger,
    health: ExporterHealth,
    started: Instant,
    last_sample: Option<Instant>,
    /// (source, kind) pairs already logged at warn level: later ones go to debug.
    warned: HashSet<(&'static str, &'static str)>,
    /// Inputs found unusable at start (e.g. RAPL permission denied): reported as down on every tick.
    unavailable: Vec<&'static str>,
}

impl Monitor {
    pub fn new(
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
        }
    }

    /// Record an input that could not be used at start: counted once in the errors self-metric (and
    /// logged by the caller), and reported as down (`kepler_exporter_source_up 0`) from then on.
    pub fn note_unavailable(&mut self, issue: SourceIssue) {
        self.warned.insert((issue.source, issue.kind));
        *self
            .health
            .issues
            .entry((issue.source, issue.kind))
            .or_insert(0) += 1;
        if !self.unavailable.contains(&issue.source) {
            self.unavailable.push(issue.source);
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
    pub fn tick(&mut self, now: Instant) -> Snapshot {
        let tick_started = Instant::now();
        let elapsed = self.last_sample.map(|t| now.saturating_duration_since(t));
        let mut issues: Vec<SourceIssue> = Vec::new();

        // Read CPU counters and energy counters as close together as possible.
        let node_cpu = match self.inputs.node_cpu.sample() {
            Ok(n) => n,
            Err(e) => {
                issues.push(SourceIssue::new("procfs", e.kind(), e.to_string()));
                None
            }
        };
        let activity = self.inputs.activity.sample();
        issues.extend(activity.issues.iter().cloned());
        let processes: Vec<ProcessActivity> = match &mut self.inputs.processes {
            Some(scanner) => {
                let (p, i) = scanner.sample();
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
        let energy = self.inputs.energy.sample(&ctx);
        issues.extend(energy.issues.iter().cloned());

        let energy_up = !energy
            .issues
            .iter()
            .any(|i| i.source == self.inputs.energy.kind().as_str());
        let activity_up = !activity.issues.iter().any(|i| i.kind != "vanished");
        self.health.sources = vec![
            SourceHealth {
                source: self.inputs.energy.kind().as_str(),
                up: energy_up,
            },
            SourceHealth {
                source: self.inputs.activity.name(),
                up: activity_up,
            },
            SourceHealth {
                source: "procfs",
                up: node_cpu.is_some() || elapsed.is_none(),
            },
        ];
        for source in &self.unavailable {
            self.health.sources.push(SourceHealth { source, up: false });
        }

        if let Some(elapsed) = elapsed {
            let secs = elapsed.as_secs_f64();
            let zones: Vec<ZoneInput> = energy
                .zones
                .iter()
                .map(|z| ZoneInput {
                    zone: z.zone,
                    total: z.energy,
                    idle: self
                        .idle
                        .idle_energy(z.zone, z.energy, z.idle_hint, usage, secs),
                })
                .collect();
            let interval = attribute(
                &zones,
                ActivityInput {
                    node,
                    pods: &activity.pods,
                    processes: &processes,
                },
            );
            self.ledger
                .apply(&interval, secs, now.saturating_duration_since(self.started));
            self.health.intervals += 1;
        }
        self.last_sample = Some(now);
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
        Snapshot {
            node_name: self.node_name.clone(),
            energy_source: self.inputs.energy.kind(),
            cpu_source: self.inputs.activity.name(),
            zones: self.ledger.zones().to_vec(),
            node: self.ledger.node().to_vec(),
            cpu_usage_ratio: usage,
            pods,
            processes,
            health: self.health.clone(),
        }
    }

    fn record(&mut self, issues: Vec<SourceIssue>) {
        for issue in issues {
            *self
                .health
                .issues
                .entry((issue.source, issue.kind))
                .or_insert(0) += 1;
            if self.warned.insert((issue.source, issue.kind)) {
                tracing::warn!(
                    source = issue.source,
                    kind = issue.kind,
                    "{} (further {}/{} issues are logged at debug level)",
                    issue.detail,
                    issue.source,
                    issue.kind
                );
            } else {
                tracing::debug!(source = issue.source, kind = issue.kind, "{}", issue.detail);
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
