//! The `kepler-rs` binary: subcommands, logging setup, then `build` (the library's source selection)
//! -> monitor thread -> server, signals and exit codes. It chooses no input itself.

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use kepler_rs::build::{build, Built, Probes};
use kepler_rs::config::{Config, LogFormat, PodMetadataSource, RunArgs};
use kepler_rs::metrics::{BuildInfo, Exposition};
use kepler_rs::monitor;
use kepler_rs::resource::kube::{self as pod_watch, PodCache, WatchTuning};
use kepler_rs::server::{self, ServerState};
use kepler_rs::signals::{self, ConfigFile, LoopStop};
use kepler_rs::snapshot::Snapshot;
use kepler_rs::web::WebState;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "kepler-rs",
    version,
    about = "Energy of a Kubernetes node's pods, containers and processes, for Prometheus"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure this node and serve Prometheus metrics
    Run(Box<RunArgs>),
    /// Live terminal view of power per pod, namespace, user, container (or --once)
    Top(kepler_rs::top::TopArgs),
    /// Energy per JupyterHub user, namespace or pod over a period, from Prometheus
    Report(kepler_rs::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            eprintln!(
                "kepler-rs: error: a subcommand is missing: run, top or report (see kepler-rs --help)"
            );
            return ExitCode::from(2);
        }
        Err(e) if e.use_stderr() => {
            // One line naming what is wrong, not clap's usage block.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("kepler-rs: error: {first} (see kepler-rs --help)");
            return ExitCode::from(2);
        }
        Err(e) => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Command::Run(args) => run(*args).unwrap_or_else(|(code, e)| fail("kepler-rs", code, &e)),
        Command::Top(args) => kepler_rs::top::run(args)
            .map_err(|e| (e.exit_code(), e.to_string()))
            .map_or_else(
                |(c, e)| fail("kepler-rs top", c, &e),
                |()| ExitCode::SUCCESS,
            ),
        Command::Report(args) => kepler_rs::report::run(args)
            .map_err(|e| (e.exit_code(), e.to_string()))
            .map_or_else(
                |(c, e)| fail("kepler-rs report", c, &e),
                |()| ExitCode::SUCCESS,
            ),
    }
}

/// One line on stderr (for `run`, not also a log line), then the exit code (2: bad flag, or an
/// input chosen by flag that cannot be used; 1: could not do it).
fn fail(command: &str, code: u8, message: &str) -> ExitCode {
    eprintln!("{command}: error: {message}");
    ExitCode::from(code)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log_level);
    // Colours only on a terminal: `kubectl logs`, journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Why `run` could not start: the exit code and one line.
type StartError = (u8, String);

fn run(args: RunArgs) -> Result<ExitCode, StartError> {
    let config_file = args.config.clone();
    let config = args
        .resolve(std::env::var("NODE_NAME").ok(), hostname)
        .map_err(|e| (2, e.to_string()))?;
    init_logging(&config);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), node = %config.node_name, listen = %config.listen, interval = ?config.interval, "starting kepler-rs");

    // A bad web config is a usage error, before anything is measured or bound.
    let web = match &config.web_config_file {
        Some(path) => WebState::load(path).map_err(|e| (2, e.to_string()))?,
        None => WebState::plain(),
    };
    let web = Arc::new(web);
    log_web(&web, &config);
    log_hub_users(&config);
    // One fd per cgroup counter file kept open (activity::cgroup): take the hard limit.
    let fd_limit = kepler_rs::activity::cgroup::raise_open_file_limit();
    tracing::debug!(fd_limit, "open file limit");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, format!("cannot start the runtime: {e}")))?;
    // From here SIGHUP reloads (queued until the runtime runs) instead of killing the process.
    let hangup = {
        let _context = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    };
    match hangup {
        Ok(hangup) => {
            let watched = ConfigFile::new(config_file);
            runtime.spawn(reload_on_hangup(hangup, web.clone(), watched));
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP; it will end the process"),
    }
    // Bind before loading any input: a busy port fails at once, before eBPF or NVML are loaded.
    let listener = runtime
        .block_on(server::bind(config.listen))
        .map_err(|e| (2, format!("--listen {}: {e}", config.listen)))?;
    let Built {
        monitor, pod_cache, ..
    } = build(&config, &Probes::host()).map_err(|e| (2, e.to_string()))?;
    if let Some(cache) = &pod_cache {
        start_pod_watch(&runtime, &config, cache)?;
    }
    let exposition = Exposition {
        build: BuildInfo::current(),
        cpus: kepler_rs::cpuinfo::discover(&config.roots.procfs).into(),
        compat: config.metrics_compat,
    };
    let empty = Snapshot::empty(
        config.node_name.clone(),
        monitor.energy_kind(),
        monitor.cpu_source(),
        monitor.cpu_source_reason(),
    );
    let (publish, snapshots) = tokio::sync::watch::channel(Arc::new(empty));
    let (stop_monitor, stop_rx) = std::sync::mpsc::channel::<()>();
    let (stopped_tx, stopped) = std::sync::mpsc::channel::<()>();
    let interval = config.interval;
    let stop_timeout = config.stop_timeout;
    let in_flight = monitor.in_flight();
    let monitor_thread = std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            monitor::run(monitor, interval, publish, stop_rx);
            drop(stopped_tx);
        })
        .map_err(|e| (1, format!("cannot start the monitor thread: {e}")))?;
    let state = Arc::new(
        ServerState::new(snapshots, exposition, config.interval).with_web(web, config.web_limits),
    );
    tracing::info!(listen = %config.listen, "serving /metrics");
    runtime.block_on(server::serve(listener, state, shutdown_signal()));
    let _ = stop_monitor.send(());
    // The thread ends between reads; a read stuck in the kernel would hold it (and the exit) forever.
    Ok(
        match signals::wait_for_loop(&stopped, &in_flight, stop_timeout) {
            LoopStop::Clean => {
                let _ = monitor_thread.join();
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            LoopStop::Stuck { input, stuck_for } => {
                let input = input.unwrap_or("no input");
                tracing::error!(
                    input,
                    stuck_seconds = stuck_for.as_secs_f64(),
                    stop_timeout = ?stop_timeout,
                    "the measurement loop did not stop in time: a read of {input} is stuck; exiting without it"
                );
                ExitCode::from(1)
            }
        },
    )
}

/// On every SIGHUP: reload the web configuration and its certificates, off the event loop.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    web: Arc<WebState>,
    config: ConfigFile,
) {
    while hangup.recv().await.is_some() {
        let (web, config) = (web.clone(), config.clone());
        match tokio::task::spawn_blocking(move || signals::on_hangup(&web, &config)).await {
            Ok(hangup) => signals::log_hangup(&hangup),
            Err(e) => tracing::error!(error = %e, "SIGHUP: web config reload task failed"),
        }
    }
}

/// One line on what the metrics endpoint requires of a client.
fn log_web(web: &WebState, config: &Config) {
    let active = web.current();
    let scheme = if active.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let auth = if active.auth.is_some() {
        "basic"
    } else {
        "none"
    };
    tracing::info!(
        scheme,
        auth,
        web_config = config
            .web_config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into()),
        max_connections = config.web_limits.max_connections,
        "metrics endpoint security"
    );
    if active.tls.is_none() && active.auth.is_none() {
        tracing::warn!("/metrics is plain HTTP without authentication: anyone who reaches the port reads it (set --web.config.file, see docs/security.md)");
    }
}

/// One line on which pods may name a JupyterHub user, and how.
fn log_hub_users(config: &Config) {
    use kepler_rs::resource::jupyterhub::HubUserLabel;
    let policy = &config.hub_users;
    let label = match policy.label {
        HubUserLabel::Raw => "raw",
        HubUserLabel::Hashed(_) => "hash",
        HubUserLabel::Off => "off",
    };
    if policy.namespaces.is_empty() || policy.label == HubUserLabel::Off {
        tracing::info!(
            label,
            "hub_user labels: none (set --jupyterhub-namespace to the hub's namespace)"
        );
    } else {
        let namespaces: Vec<&str> = policy.namespaces.iter().map(String::as_str).collect();
        tracing::info!(label, namespaces = %namespaces.join(","), "hub_user labels from JupyterHub user servers in these namespaces");
    }
}

/// Start the node-scoped pod watcher on the runtime. A bad `--kubeconfig` is a usage error (exit 2);
/// no in-cluster configuration is logged and counted, and the exporter runs on with `pod_id` only.
fn start_pod_watch(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    cache: &Arc<PodCache>,
) -> Result<(), StartError> {
    let kubeconfig = match &config.pod_metadata {
        PodMetadataSource::Kubeconfig(path) => Some(path.as_path()),
        _ => None,
    };
    match runtime.block_on(pod_watch::connect(kubeconfig, cache)) {
        Ok(client) => {
            // Names of deleted pods outlive the ledger's grace period for their ended series.
            let tuning = WatchTuning {
                deleted_retention: config.grace_period + Duration::from_secs(300),
                ..WatchTuning::default()
            };
            tracing::info!(node = %config.node_name, "pod metadata: watching this node's pods (spec.nodeName)");
            runtime.spawn(pod_watch::watch_pods(
                client,
                config.node_name.clone(),
                cache.clone(),
                tuning,
            ));
            Ok(())
        }
        Err(e) if kubeconfig.is_some() => Err((
            2,
            format!("--kubeconfig: {}", e.to_string().replace('\n', " ")),
        )),
        Err(e) => {
            tracing::error!(error = %e, "no pod metadata: pods carry pod_id only (outside a cluster pass --kubeconfig FILE, or --no-kube)");
            cache.note_error(e.kind());
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the exporter");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
