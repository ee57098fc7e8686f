//! Flags, environment and YAML file -> one validated `Config`. Precedence: flag, then environment
//! (`KEPLER_RS_*`), then file (`--config`), then default. Each option of `kepler-rs run` is declared
//! once, in `RunArgs`; `RunArgs::resolve` is the one place that validates. The only module that knows
//! the host paths `/sys` and `/proc`; everything below receives its roots from `HostRoots`.

use crate::files::read_small_file;
use crate::resource::jupyterhub::{HubUserKey, HubUserLabel, HubUserPolicy};
use crate::source::estimate::{EstimateModel, ModelError};
use crate::units::{Readable, Watts, ZoneKind};
use crate::web::conns::Limits;
use crate::yaml_depth::{check_depth, MAX_YAML_DEPTH};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:28282";
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(120);
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest `--grace-period`: a day keeps an ended pod's series far longer than any query needs.
pub(crate) const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Most idle watts of one RAPL zone (all sockets): the RAPL plausibility bound of one socket's zone
/// ([`crate::source::rapl::DEFAULT_MAX_ZONE_WATTS`]) times two sockets.
pub(crate) const MAX_ZONE_IDLE_WATTS: f64 = 10_000.0;
/// Most idle watts of one GPU (the largest accelerators draw about 1.2 kW at full load).
pub(crate) const MAX_GPU_IDLE_WATTS: f64 = 2_000.0;
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// How long the stop after SIGTERM/SIGINT waits for the measurement loop by default.
pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The range of `--stop-timeout`: long enough for one read of a slow input, short enough to fit the
/// longest termination grace an operator would give a DaemonSet pod.
pub(crate) const STOP_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(600);
/// The kubelet's PodResources socket on a stock kubelet (MicroK8s:
/// `/var/snap/microk8s/common/var/lib/kubelet/pod-resources/kubelet.sock`).
pub(crate) const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// Where the host's sysfs and procfs are mounted (`/host/sys`, `/host/proc` in the DaemonSet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    pub(crate) sysfs: PathBuf,
    pub procfs: PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        HostRoots {
            sysfs: PathBuf::from("/sys"),
            procfs: PathBuf::from("/proc"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Which node energy source to use. `auto`: RAPL where it can be read, otherwise the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EnergySourceChoice {
    #[default]
    Auto,
    Rapl,
    Estimate,
}

/// Which CPU-activity source to use for pods. `auto`: eBPF where it loads, otherwise cgroup counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CpuSourceChoice {
    /// eBPF only where process metrics or live CPU counters need it, else cgroup counters, /proc last.
    #[default]
    Auto,
    /// Per-process on-CPU time from the eBPF program (needs CAP_BPF + CAP_PERFMON); fails if unusable.
    Ebpf,
    Cgroup,
    /// A /proc walk per tick: misses processes that live shorter than a tick; the last resort.
    Procfs,
}

/// Hardware counters for the eBPF source. `auto`: CPU cycles and instructions where the machine has
/// a PMU (pods are then split by cycles), on-CPU time otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CpuCountersChoice {
    #[default]
    Auto,
    /// On-CPU time only, even where a PMU exists.
    Off,
    /// Software `cpu-clock` events stand in for cycles and instructions: exercises the counter path on
    /// machines without a PMU (tests). The split is then by on-CPU time measured a second way.
    Software,
}

/// Where pod names come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PodMetadataSource {
    /// The pod's service account (in a cluster).
    #[default]
    InCluster,
    /// A kubeconfig file (runs outside a cluster).
    Kubeconfig(PathBuf),
    /// No Kubernetes: pods carry `pod_id` only.
    Off,
}

/// GPU support. `auto`: NVML where `libnvidia-ml.so.1` loads and reports a GPU, otherwise off;
/// `nvml`: required (exit 2 when NVML is unusable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GpuChoice {
    #[default]
    Auto,
    Off,
    Nvml,
}

/// `--metrics-compat`: extra families for dashboards written for an older Kepler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
pub enum MetricsCompat {
    /// kepler-rs's own families only (Kepler's current names).
    #[default]
    #[serde(rename = "off")]
    Off,
    /// Also Kepler 0.7's `kepler_{node,container}_<component>_joules_total{mode}` families.
    #[value(name = "kepler-0.7")]
    #[serde(rename = "kepler-0.7")]
    Kepler07,
}

/// `--hub-user-label`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HubUserLabelChoice {
    #[default]
    Raw,
    Hash,
    Off,
}

/// `--idle-watts` before validation: `zone=watts,...` on the command line and in the environment,
/// a table (`idle_watts: {package: 20}`) in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IdleWattsSpec {
    List(String),
    Table(BTreeMap<String, f64>),
}

impl From<&str> for IdleWattsSpec {
    fn from(list: &str) -> Self {
        IdleWattsSpec::List(list.to_string())
    }
}

/// The file holds `idle_watts` as a table only.
fn idle_watts_table<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<IdleWattsSpec>, D::Error> {
    Ok(Option::<BTreeMap<String, f64>>::deserialize(deserializer)?.map(IdleWattsSpec::Table))
}

/// A list in the file, where `~` (null) means none.
fn list_or_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The options of `kepler-rs run`, each declared once: its long flag, its `KEPLER_RS_<NAME>`
/// variable, and its key in the `--config` file (the flag with underscores). Flags and environment
/// fill one `RunArgs`, the file another; `resolve` lays the first over the second and validates.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunArgs {
    /// Address to serve /metrics on [default: 0.0.0.0:28282]
    #[arg(long, env = "KEPLER_RS_LISTEN")]
    pub(crate) listen: Option<String>,
    /// Measurement interval, e.g. 3s, 500ms [default: 3s]
    #[arg(long, env = "KEPLER_RS_INTERVAL")]
    pub(crate) interval: Option<String>,
    /// Root of the host's sysfs [default: /sys]
    #[arg(long, env = "KEPLER_RS_SYSFS")]
    pub(crate) sysfs: Option<PathBuf>,
    /// Root of the host's procfs [default: /proc]
    #[arg(long, env = "KEPLER_RS_PROCFS")]
    pub(crate) procfs: Option<PathBuf>,
    /// Node name for the node_name label [default: $NODE_NAME, else the hostname]
    #[arg(long, env = "KEPLER_RS_NODE_NAME")]
    pub(crate) node_name: Option<String>,
    /// YAML configuration file (keys as the long flags, with underscores)
    #[arg(long, env = "KEPLER_RS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log format [default: human]
    #[arg(long, env = "KEPLER_RS_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// Log filter, e.g. info, debug, kepler_rs=debug [default: info]
    #[arg(long, env = "KEPLER_RS_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Node energy source [default: auto]
    #[arg(long, env = "KEPLER_RS_ENERGY_SOURCE", value_enum)]
    pub(crate) energy_source: Option<EnergySourceChoice>,
    /// CPU-activity source for pods [default: auto]
    #[arg(long, env = "KEPLER_RS_CPU_SOURCE", value_enum)]
    pub(crate) cpu_source: Option<CpuSourceChoice>,
    /// eBPF source: CPU cycles/instructions counters where a PMU exists [default: auto]
    #[arg(long, env = "KEPLER_RS_CPU_COUNTERS", value_enum)]
    pub(crate) cpu_counters: Option<CpuCountersChoice>,
    /// Export per-process series (kepler_process_*); off by default (cardinality)
    #[arg(long, env = "KEPLER_RS_PROCESS_METRICS", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) process_metrics: Option<bool>,
    /// Also serve an older Kepler's metric families: off, kepler-0.7 [default: off]
    #[arg(long, env = "KEPLER_RS_METRICS_COMPAT", value_enum)]
    pub(crate) metrics_compat: Option<MetricsCompat>,
    /// How long series of ended pods, containers and processes stay [default: 120s]
    #[arg(long, env = "KEPLER_RS_GRACE_PERIOD")]
    pub(crate) grace_period: Option<String>,
    /// After SIGTERM/SIGINT, how long to wait for the measurement loop before exiting without it
    /// (exit code 1, naming the stuck input) [default: 5s]
    #[arg(long, env = "KEPLER_RS_STOP_TIMEOUT")]
    pub(crate) stop_timeout: Option<String>,
    /// Fixed idle power per RAPL zone instead of learning it, e.g. package=20,dram=3 (ignored, with
    /// a warning, by the estimate: see --estimate-idle-watts-per-cpu)
    #[arg(long, env = "KEPLER_RS_IDLE_WATTS")]
    #[serde(deserialize_with = "idle_watts_table")]
    pub(crate) idle_watts: Option<IdleWattsSpec>,
    /// Estimate model: idle watts per logical CPU [default: 0.74]
    #[arg(long, env = "KEPLER_RS_ESTIMATE_IDLE_WATTS_PER_CPU")]
    pub(crate) estimate_idle_watts_per_cpu: Option<f64>,
    /// Estimate model: watts per logical CPU at 100% utilisation [default: 3.5]
    #[arg(long, env = "KEPLER_RS_ESTIMATE_MAX_WATTS_PER_CPU")]
    pub(crate) estimate_max_watts_per_cpu: Option<f64>,
    /// Kubeconfig for pod names when running outside a cluster [default: in-cluster service account]
    #[arg(long, env = "KEPLER_RS_KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Run without Kubernetes: pods carry pod_id only
    #[arg(long, env = "KEPLER_RS_NO_KUBE", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) no_kube: Option<bool>,
    /// GPU energy through NVML: auto, off, nvml [default: auto]
    #[arg(long, env = "KEPLER_RS_GPU", value_enum)]
    pub(crate) gpu: Option<GpuChoice>,
    /// Fixed idle power of each GPU in watts, instead of the lowest power seen
    #[arg(long, env = "KEPLER_RS_GPU_IDLE_WATTS")]
    pub(crate) gpu_idle_watts: Option<f64>,
    /// Kubelet PodResources socket, for GPU assignments [default: /var/lib/kubelet/pod-resources/kubelet.sock]
    #[arg(long, env = "KEPLER_RS_POD_RESOURCES_SOCKET")]
    pub(crate) pod_resources_socket: Option<PathBuf>,
    /// Web configuration (exporter-toolkit format): TLS, basic auth, response headers
    #[arg(long = "web.config.file", env = "KEPLER_RS_WEB_CONFIG_FILE")]
    pub(crate) web_config_file: Option<PathBuf>,
    /// Most open HTTP connections; at the limit, slow or idle ones make room [default: 64]
    #[arg(long = "web.max-connections", env = "KEPLER_RS_WEB_MAX_CONNECTIONS")]
    pub(crate) web_max_connections: Option<usize>,
    /// Time for a request head to arrive (TLS handshake included) [default: 10s]
    #[arg(
        long = "web.header-read-timeout",
        env = "KEPLER_RS_WEB_HEADER_READ_TIMEOUT"
    )]
    pub(crate) web_header_read_timeout: Option<String>,
    /// Keep-alive connections idle longer than this are closed [default: 120s]
    #[arg(long = "web.idle-timeout", env = "KEPLER_RS_WEB_IDLE_TIMEOUT")]
    pub(crate) web_idle_timeout: Option<String>,
    /// Largest request head in bytes (larger: 431) [default: 16384]
    #[arg(long = "web.max-header-bytes", env = "KEPLER_RS_WEB_MAX_HEADER_BYTES")]
    pub(crate) web_max_header_bytes: Option<usize>,
    /// Namespace of JupyterHub user servers; only pods there get hub_user (repeatable, or comma-separated)
    #[arg(long, env = "KEPLER_RS_JUPYTERHUB_NAMESPACE", value_delimiter = ',')]
    #[serde(deserialize_with = "list_or_null")]
    pub(crate) jupyterhub_namespace: Vec<String>,
    /// hub_user label: raw user name, keyed hash, or off [default: raw]
    #[arg(long, env = "KEPLER_RS_HUB_USER_LABEL", value_enum)]
    pub(crate) hub_user_label: Option<HubUserLabelChoice>,
    /// Key file for --hub-user-label hash (at least 16 bytes; keep it in a Secret)
    #[arg(long, env = "KEPLER_RS_HUB_USER_HASH_KEY_FILE")]
    pub(crate) hub_user_hash_key_file: Option<PathBuf>,
}

/// The validated configuration passed down to every component.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub interval: Duration,
    pub roots: HostRoots,
    pub node_name: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub(crate) energy_source: EnergySourceChoice,
    pub(crate) cpu_source: CpuSourceChoice,
    pub(crate) cpu_counters: CpuCountersChoice,
    pub(crate) process_metrics: bool,
    pub metrics_compat: MetricsCompat,
    pub grace_period: Duration,
    /// `--stop-timeout`: the stop's wait for the measurement loop.
    pub stop_timeout: Duration,
    pub(crate) idle_watts: BTreeMap<ZoneKind, Watts>,
    pub(crate) estimate: EstimateModel,
    pub pod_metadata: PodMetadataSource,
    pub(crate) gpu: GpuChoice,
    pub(crate) gpu_idle_watts: Option<Watts>,
    pub(crate) pod_resources_socket: PathBuf,
    /// `--web.config.file`: loaded and validated by `web::WebState::load` at start.
    pub web_config_file: Option<PathBuf>,
    pub web_limits: Limits,
    pub hub_users: HubUserPolicy,
}

/// A bad value: names the flag and says what is wrong. `main` prints it and exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) flag: &'static str,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

impl RunArgs {
    /// Every option set here, and the others from `lower` (flags and environment over the file).
    fn or(self, lower: RunArgs) -> RunArgs {
        macro_rules! over {
            ($($option:ident),* $(,)?) => {
                RunArgs {
                    $($option: self.$option.or(lower.$option),)*
                    jupyterhub_namespace: if self.jupyterhub_namespace.is_empty() {
                        lower.jupyterhub_namespace
                    } else {
                        self.jupyterhub_namespace
                    },
                }
            };
        }
        over! {
            listen, interval, sysfs, procfs, node_name, config, log_format, log_level,
            energy_source, cpu_source, cpu_counters, process_metrics, metrics_compat, grace_period,
            stop_timeout, idle_watts,
            estimate_idle_watts_per_cpu, estimate_max_watts_per_cpu, kubeconfig, no_kube, gpu,
            gpu_idle_watts, pod_resources_socket, web_config_file, web_max_connections,
            web_header_read_timeout, web_idle_timeout, web_max_header_bytes, hub_user_label,
            hub_user_hash_key_file
        }
    }

    /// Lay flags/env over the file (if any), fill in defaults, and validate everything.
    /// `env_node_name` is `$NODE_NAME`; `hostname` the fallback.
    pub fn resolve(
        self,
        env_node_name: Option<String>,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => RunArgs::default(),
        };
        let args = self.or(file);
        let web_limits = web_limits(&args)?;
        let hub_users = hub_user_policy(&args)?;

        let listen_raw = args.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_raw.parse().map_err(|e| {
            err(
                "--listen",
                format!("{listen_raw:?} is not an address like 0.0.0.0:28282 ({e})"),
            )
        })?;

        let interval = match &args.interval {
            Some(raw) => parse_duration("--interval", raw)?,
            None => DEFAULT_INTERVAL,
        };
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            return Err(err(
                "--interval",
                format!(
                    "{} is out of range ({} to {})",
                    humantime::format_duration(interval),
                    humantime::format_duration(MIN_INTERVAL),
                    humantime::format_duration(MAX_INTERVAL)
                ),
            ));
        }
        let grace_period = duration_in(
            "--grace-period",
            args.grace_period.as_ref(),
            DEFAULT_GRACE,
            Duration::ZERO..=MAX_GRACE,
        )?;
        let stop_timeout = duration_in(
            "--stop-timeout",
            args.stop_timeout.as_ref(),
            DEFAULT_STOP_TIMEOUT,
            STOP_TIMEOUT_RANGE,
        )?;

        let defaults = HostRoots::default();
        let sysfs = args.sysfs.unwrap_or(defaults.sysfs);
        let procfs = args.procfs.unwrap_or(defaults.procfs);
        check_dir("--sysfs", &sysfs)?;
        check_dir("--procfs", &procfs)?;

        let node_name = args
            .node_name
            .or(env_node_name.filter(|n| !n.trim().is_empty()))
            .or_else(hostname)
            .ok_or_else(|| {
                err(
                    "--node-name",
                    "not set, $NODE_NAME is empty and the hostname is unknown",
                )
            })?;
        let node_name = node_name.trim().to_string();
        if node_name.is_empty()
            || node_name.len() > 253
            || node_name.chars().any(|c| c.is_control())
        {
            return Err(err(
                "--node-name",
                format!("{node_name:?} is not a valid node name"),
            ));
        }

        let idle_watts = match args.idle_watts {
            Some(IdleWattsSpec::List(raw)) => parse_idle_watts(&raw)?,
            Some(IdleWattsSpec::Table(map)) => idle_watts_from_map(map.into_iter())?,
            None => BTreeMap::new(),
        };

        let mut estimate = EstimateModel::default();
        if let Some(v) = args.estimate_idle_watts_per_cpu {
            estimate.idle_watts_per_cpu = v;
        }
        if let Some(v) = args.estimate_max_watts_per_cpu {
            estimate.max_watts_per_cpu = v;
        }
        estimate.validate().map_err(|e| {
            let flag = match e {
                ModelError::Idle(_) => "--estimate-idle-watts-per-cpu",
                ModelError::Max(_) | ModelError::Inverted { .. } => "--estimate-max-watts-per-cpu",
            };
            err(flag, e.to_string())
        })?;

        let gpu_idle_watts = match args.gpu_idle_watts {
            Some(w) if !(0.0..=MAX_GPU_IDLE_WATTS).contains(&w) => {
                return Err(err(
                    "--gpu-idle-watts",
                    format!(
                        "{} W is out of range (0 to {MAX_GPU_IDLE_WATTS} W)",
                        Readable(w)
                    ),
                ))
            }
            w => w.map(Watts),
        };

        let log_level = args.log_level.unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(err(
                "--log-level",
                format!("{log_level:?} is not a valid filter (e.g. info, debug)"),
            ));
        }

        let pod_metadata = match (args.no_kube.unwrap_or(false), args.kubeconfig) {
            (true, Some(_)) => {
                return Err(err("--no-kube", "cannot be combined with --kubeconfig"));
            }
            (true, None) => PodMetadataSource::Off,
            (false, Some(path)) if path.is_file() => PodMetadataSource::Kubeconfig(path),
            (false, Some(path)) => {
                return Err(err(
                    "--kubeconfig",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            (false, None) => PodMetadataSource::InCluster,
        };

        Ok(Config {
            listen,
            interval,
            roots: HostRoots { sysfs, procfs },
            node_name,
            log_format: args.log_format.unwrap_or_default(),
            log_level,
            energy_source: args.energy_source.unwrap_or_default(),
            cpu_source: args.cpu_source.unwrap_or_default(),
            cpu_counters: args.cpu_counters.unwrap_or_default(),
            process_metrics: args.process_metrics.unwrap_or(false),
            metrics_compat: args.metrics_compat.unwrap_or_default(),
            grace_period,
            stop_timeout,
            idle_watts,
            estimate,
            pod_metadata,
            gpu: args.gpu.unwrap_or_default(),
            gpu_idle_watts,
            pod_resources_socket: args
                .pod_resources_socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_POD_RESOURCES_SOCKET)),
            web_config_file: args.web_config_file,
            web_limits,
            hub_users,
        })
    }
}

/// hyper refuses head buffers under 8 KiB; above 1 MiB a header is an attack, not a scrape.
const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 8192..=(1 << 20);

fn web_limits(args: &RunArgs) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    if let Some(n) = args.web_max_connections {
        if !(1..=65_536).contains(&n) {
            return Err(err(
                "--web.max-connections",
                format!("{n} is out of range (1 to 65536)"),
            ));
        }
        limits.max_connections = n;
        limits.max_waiting = Limits::waiting_room_for(n);
    }
    let range = || Duration::from_millis(100)..=Duration::from_secs(3600);
    limits.header_read_timeout = duration_in(
        "--web.header-read-timeout",
        args.web_header_read_timeout.as_ref(),
        limits.header_read_timeout,
        range(),
    )?;
    limits.idle_timeout = duration_in(
        "--web.idle-timeout",
        args.web_idle_timeout.as_ref(),
        limits.idle_timeout,
        range(),
    )?;
    if let Some(n) = args.web_max_header_bytes {
        if !MAX_HEADER_BYTES_RANGE.contains(&n) {
            return Err(err(
                "--web.max-header-bytes",
                format!("{n} is out of range (8192 to 1048576)"),
            ));
        }
        limits.max_header_bytes = n;
    }
    Ok(limits)
}

/// A key file is a few dozen bytes; more is a wrong path.
const MAX_KEY_FILE_BYTES: usize = 4096;

fn hub_user_policy(args: &RunArgs) -> Result<HubUserPolicy, ConfigError> {
    let mut set = std::collections::BTreeSet::new();
    for ns in args
        .jupyterhub_namespace
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        let valid = ns.len() <= 63
            && ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !valid {
            return Err(err(
                "--jupyterhub-namespace",
                format!("{ns:?} is not a Kubernetes namespace name"),
            ));
        }
        set.insert(ns.to_string());
    }
    let label = match (
        args.hub_user_label.unwrap_or_default(),
        &args.hub_user_hash_key_file,
    ) {
        (HubUserLabelChoice::Raw, None) => HubUserLabel::Raw,
        (HubUserLabelChoice::Off, None) => HubUserLabel::Off,
        (HubUserLabelChoice::Hash, None) => {
            return Err(err(
                "--hub-user-label",
                "hash needs --hub-user-hash-key-file (an unkeyed hash of a login is reversed by trying logins)",
            ))
        }
        (HubUserLabelChoice::Hash, Some(path)) => {
            let bytes = read_small_file(path, MAX_KEY_FILE_BYTES)
                .map_err(|e| err("--hub-user-hash-key-file", e.to_string()))?;
            let trimmed = bytes.trim_ascii().to_vec();
            HubUserLabel::Hashed(HubUserKey::new(trimmed).ok_or_else(|| {
                err(
                    "--hub-user-hash-key-file",
                    format!(
                        "{}: the key must have at least {} bytes",
                        path.display(),
                        HubUserKey::MIN_BYTES
                    ),
                )
            })?)
        }
        (_, Some(_)) => {
            return Err(err(
                "--hub-user-hash-key-file",
                "only used with --hub-user-label hash",
            ))
        }
    };
    Ok(HubUserPolicy {
        namespaces: set,
        label,
    })
}

/// A configuration file is a few KiB; a limit keeps a wrong path (a device, a log) from costing memory.
const MAX_CONFIG_FILE_BYTES: usize = 1 << 20;

/// The `--config` file: the same options as the flags, keyed with underscores.
fn load_file(path: &Path) -> Result<RunArgs, ConfigError> {
    let bytes =
        read_small_file(path, MAX_CONFIG_FILE_BYTES).map_err(|e| err("--config", e.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| err("--config", format!("{}: not valid UTF-8", path.display())))?;
    if text.trim().is_empty() {
        return Ok(RunArgs::default());
    }
    check_depth(&text, MAX_YAML_DEPTH)
        .map_err(|e| err("--config", format!("{}: {e}", path.display())))?;
    serde_yaml_ng::from_str(&text).map_err(|e| err("--config", format!("{}: {e}", path.display())))
}

fn check_dir(flag: &'static str, dir: &Path) -> Result<(), ConfigError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(err(flag, format!("{} is not a directory", dir.display())))
    }
}

fn parse_duration(flag: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(raw.trim()).map_err(|e| {
        err(
            flag,
            format!("{raw:?} is not a duration like 3s or 500ms ({e})"),
        )
    })
}

/// `raw` as a duration (`default` where unset), refused outside `range`.
fn duration_in(
    flag: &'static str,
    raw: Option<&String>,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let duration = parse_duration(flag, raw)?;
    if range.contains(&duration) {
        return Ok(duration);
    }
    let (lo, hi) = range.into_inner();
    let (lo, hi) = (
        humantime::format_duration(lo),
        humantime::format_duration(hi),
    );
    Err(err(flag, format!("{raw:?} is out of range ({lo} to {hi})")))
}

fn parse_idle_watts(raw: &str) -> Result<BTreeMap<ZoneKind, Watts>, ConfigError> {
    let mut pairs = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (zone, watts) = part.split_once('=').ok_or_else(|| {
            err(
                "--idle-watts",
                format!("{part:?} is not zone=watts (e.g. package=20)"),
            )
        })?;
        let watts: f64 = watts.trim().parse().map_err(|_| {
            err(
                "--idle-watts",
                format!("{watts:?} is not a number of watts"),
            )
        })?;
        pairs.push((zone.trim().to_string(), watts));
    }
    idle_watts_from_map(pairs.into_iter())
}

fn idle_watts_from_map(
    pairs: impl Iterator<Item = (String, f64)>,
) -> Result<BTreeMap<ZoneKind, Watts>, ConfigError> {
    let mut out = BTreeMap::new();
    for (zone, watts) in pairs {
        let kind = ZoneKind::ALL
            .into_iter()
            .find(|k| k.as_str() == zone)
            .ok_or_else(|| {
                err(
                    "--idle-watts",
                    format!("unknown zone {zone:?} (package, core, uncore, dram, psys)"),
                )
            })?;
        if !(0.0..=MAX_ZONE_IDLE_WATTS).contains(&watts) {
            return Err(err(
                "--idle-watts",
                format!(
                    "{zone}={} W is out of range (0 to {MAX_ZONE_IDLE_WATTS} W)",
                    Readable(watts)
                ),
            ));
        }
        out.insert(kind, Watts(watts));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn resolve(args: RunArgs) -> Result<Config, ConfigError> {
        args.resolve(None, || Some("host-a".to_string()))
    }

    #[test]
    fn defaults() {
        let c = resolve(RunArgs::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:28282".parse().unwrap());
        assert_eq!(c.interval, Duration::from_secs(3));
        assert_eq!(c.roots, HostRoots::default());
        assert_eq!(c.node_name, "host-a");
        assert!(!c.process_metrics);
        assert_eq!(c.grace_period, DEFAULT_GRACE);
        assert_eq!(c.stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert_eq!(c.pod_metadata, PodMetadataSource::InCluster);
    }

    #[test]
    fn kubeconfig_and_no_kube() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "no_kube: true").unwrap();
        let c = resolve(RunArgs {
            config: Some(f.path().into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.pod_metadata, PodMetadataSource::Off);
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        let c = resolve(RunArgs {
            kubeconfig: Some(kubeconfig.path().into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.pod_metadata,
            PodMetadataSource::Kubeconfig(kubeconfig.path().into())
        );
    }

    #[test]
    fn node_name_env_beats_hostname_and_flag_beats_env() {
        let c = RunArgs::default()
            .resolve(Some("node-7".into()), || Some("h".into()))
            .unwrap();
        assert_eq!(c.node_name, "node-7");
        let args = RunArgs {
            node_name: Some("flag".into()),
            ..RunArgs::default()
        };
        assert_eq!(
            args.resolve(Some("node-7".into()), || None)
                .unwrap()
                .node_name,
            "flag"
        );
    }

    #[test]
    fn metrics_compat_is_off_by_default_and_read_from_flag_and_file() {
        assert_eq!(
            resolve(RunArgs::default()).unwrap().metrics_compat,
            MetricsCompat::Off
        );
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "metrics_compat: kepler-0.7").unwrap();
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            ..RunArgs::default()
        };
        assert_eq!(
            resolve(args).unwrap().metrics_compat,
            MetricsCompat::Kepler07
        );
        let flag = <RunArgs as clap::FromArgMatches>::from_arg_matches(
            &<RunArgs as clap::Args>::augment_args(clap::Command::new("run"))
                .try_get_matches_from(["run", "--metrics-compat", "kepler-0.7"])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(flag.metrics_compat, Some(MetricsCompat::Kepler07));
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "interval: 5s\nlisten: 127.0.0.1:9000\nidle_watts:\n  package: 12.5\nprocess_metrics: true").unwrap();
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            interval: Some("1s".into()),
            ..RunArgs::default()
        };
        let c = resolve(args).unwrap();
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.idle_watts.get(&ZoneKind::Package), Some(&Watts(12.5)));
        assert!(c.process_metrics);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: Vec<(RunArgs, &str)> = vec![
            (
                RunArgs {
                    interval: Some("fast".into()),
                    ..Default::default()
                },
                "--interval",
            ),
            (
                RunArgs {
                    interval: Some("1ms".into()),
                    ..Default::default()
                },
                "--interval",
            ),
            (
                RunArgs {
                    listen: Some("nowhere".into()),
                    ..Default::default()
                },
                "--listen",
            ),
            (
                RunArgs {
                    sysfs: Some("/nonexistent/sys".into()),
                    ..Default::default()
                },
                "--sysfs",
            ),
            (
                RunArgs {
                    idle_watts: Some("gpu=3".into()),
                    ..Default::default()
                },
                "--idle-watts",
            ),
            (
                RunArgs {
                    idle_watts: Some("package=-1".into()),
                    ..Default::default()
                },
                "--idle-watts",
            ),
            (
                RunArgs {
                    idle_watts: Some("package".into()),
                    ..Default::default()
                },
                "--idle-watts",
            ),
            (
                RunArgs {
                    estimate_max_watts_per_cpu: Some(0.1),
                    ..Default::default()
                },
                "--estimate-max-watts-per-cpu",
            ),
            (
                RunArgs {
                    node_name: Some("a\nb".into()),
                    ..Default::default()
                },
                "--node-name",
            ),
            (
                RunArgs {
                    grace_period: Some("-3s".into()),
                    ..Default::default()
                },
                "--grace-period",
            ),
            (
                RunArgs {
                    config: Some("/nonexistent.yaml".into()),
                    ..Default::default()
                },
                "--config",
            ),
            (
                RunArgs {
                    kubeconfig: Some("/nonexistent/kubeconfig".into()),
                    ..Default::default()
                },
                "--kubeconfig",
            ),
            (
                RunArgs {
                    kubeconfig: Some("/".into()),
                    no_kube: Some(true),
                    ..Default::default()
                },
                "--no-kube",
            ),
            (
                RunArgs {
                    gpu_idle_watts: Some(-5.0),
                    ..Default::default()
                },
                "--gpu-idle-watts",
            ),
        ];
        for (args, flag) in cases {
            let e = resolve(args).unwrap_err();
            assert_eq!(e.flag, flag, "{e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn gpu_flags_default_and_follow_flag_over_file() {
        let c = resolve(RunArgs::default()).unwrap();
        assert_eq!(c.gpu, GpuChoice::Auto);
        assert_eq!(c.gpu_idle_watts, None);
        assert_eq!(
            c.pod_resources_socket,
            PathBuf::from(DEFAULT_POD_RESOURCES_SOCKET)
        );
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "gpu: off\ngpu_idle_watts: 35\npod_resources_socket: /run/pr.sock"
        )
        .unwrap();
        let c = resolve(RunArgs {
            config: Some(f.path().into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.gpu, GpuChoice::Off);
        assert_eq!(c.gpu_idle_watts, Some(Watts(35.0)));
        assert_eq!(c.pod_resources_socket, PathBuf::from("/run/pr.sock"));
        let c = resolve(RunArgs {
            config: Some(f.path().into()),
            gpu: Some(GpuChoice::Nvml),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.gpu, GpuChoice::Nvml);
    }

    fn file(yaml: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "{yaml}").unwrap();
        f
    }

    #[test]
    fn a_yaml_nesting_bomb_is_refused_before_parsing() {
        // 100,000 levels in 200 KB: the YAML parser would take seconds (quadratic in depth).
        let f = file(&format!(
            "interval: {}{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ));
        let started = std::time::Instant::now();
        let e = resolve(RunArgs {
            config: Some(f.path().into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.flag, "--config");
        assert!(
            e.message.contains("nested deeper than 64 levels (line 1)"),
            "{e}"
        );
        // A sanity bound only (the pre-scan is linear; benches own speed).
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_config_that_is_a_fifo_a_device_or_too_large_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        crate::files::mkfifo(&fifo);
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, format!("# {}\n", "x".repeat(1 << 20))).unwrap();
        for (path, expected) in [
            (&fifo, "is a FIFO, not a regular file"),
            (&zero, "is a character device, not a regular file"),
            (&big, "is larger than 1048576 bytes"),
        ] {
            let e = resolve(RunArgs {
                config: Some(path.clone()),
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(e.flag, "--config");
            assert!(e.message.contains(expected), "{e}");
        }
    }

    #[test]
    fn flag_only_and_flag_shaped_values_are_not_file_keys() {
        for yaml in [
            "config: /etc/other.yaml",
            "idle_watts: package=3",
            "jupyterhub_namespace: jhub",
        ] {
            let f = file(yaml);
            let e = resolve(RunArgs {
                config: Some(f.path().into()),
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(e.flag, "--config", "{yaml}: {e}");
        }
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let f = file(
            "jupyterhub_namespace: [jhub, lab]\nhub_user_label: off\ncpu_source: procfs\n\
             web_max_connections: 8\nweb_idle_timeout: 5s\nstop_timeout: 20s\nidle_watts:\n  dram: 2",
        );
        let c = resolve(RunArgs {
            config: Some(f.path().into()),
            idle_watts: Some("package=20,dram=3".into()),
            web_max_connections: Some(9),
            ..Default::default()
        })
        .unwrap();
        let namespaces: Vec<&str> = c.hub_users.namespaces.iter().map(String::as_str).collect();
        assert_eq!(namespaces, ["jhub", "lab"]);
        assert_eq!(c.hub_users.label, HubUserLabel::Off);
        assert_eq!(c.cpu_source, CpuSourceChoice::Procfs);
        assert_eq!(c.web_limits.max_connections, 9);
        assert_eq!(c.web_limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.stop_timeout, Duration::from_secs(20));
        // A flag replaces the file's whole table, not zone by zone.
        assert_eq!(
            c.idle_watts,
            BTreeMap::from([
                (ZoneKind::Package, Watts(20.0)),
                (ZoneKind::Dram, Watts(3.0))
            ])
        );
        let c = resolve(RunArgs {
            config: Some(f.path().into()),
            jupyterhub_namespace: vec!["other".into()],
            ..Default::default()
        })
        .unwrap();
        let namespaces: Vec<&str> = c.hub_users.namespaces.iter().map(String::as_str).collect();
        assert_eq!(namespaces, ["other"]);
        assert_eq!(c.idle_watts, BTreeMap::from([(ZoneKind::Dram, Watts(2.0))]));
        let c = resolve(RunArgs {
            config: Some(file("jupyterhub_namespace: ~").path().into()),
            ..Default::default()
        });
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn unknown_and_mistyped_file_keys_are_errors() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "intervall: 5s").unwrap();
        let e = resolve(RunArgs {
            config: Some(f.path().into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.flag, "--config");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "process_metrics: [1, 2]").unwrap();
        let e = resolve(RunArgs {
            config: Some(f.path().into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.flag, "--config");
    }
}
