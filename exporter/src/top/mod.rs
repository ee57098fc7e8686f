//! `kepler-rs top`: a live terminal view of who draws power, read over HTTP from one node's
//! exporter or from Prometheus for the whole cluster; `--once` prints one table (text or JSON).
//! It never touches sysfs. This file validates the flags and runs the event loop.

pub mod app;
pub(crate) mod batch;
pub(crate) mod gpu;
pub(crate) mod gpu_rows;
pub mod model;
pub(crate) mod source;
pub mod table;
pub(crate) mod terminal;
pub mod view;

use crate::remote::{
    unix_now, BaseUrl, Client, ClientError, ClientOptions, RemoteArgs, SetupError,
};
use app::App;
use batch::Output;
use model::Reading;
use ratatui::crossterm::event::{self, Event};
pub(crate) use source::{FetchError, Source};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;
use table::{Column, Sort, View};

/// Flags of `kepler-rs top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The node exporter to read (its /metrics)
    #[arg(
        long,
        default_value = "http://127.0.0.1:28282",
        conflicts_with = "prometheus"
    )]
    pub(crate) url: String,
    /// Read the whole cluster from this Prometheus server instead
    #[arg(long, value_name = "URL")]
    pub(crate) prometheus: Option<String>,
    /// Time between refreshes
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) refresh: Duration,
    /// Give up on a request after this long (then retry at the next refresh)
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Print the table once and exit (for scripts and `watch`)
    #[arg(long, alias = "batch")]
    pub(crate) once: bool,
    /// Output of --once
    #[arg(long, value_enum, default_value = "text", requires = "once")]
    pub(crate) output: Output,
    /// The view to start with
    #[arg(long, value_enum, default_value = "pods")]
    pub(crate) view: View,
    /// The column to sort by, named after its heading (numbers largest first)
    #[arg(long, value_enum, default_value = "watts")]
    pub(crate) sort: Column,
    /// Reverse the sort
    #[arg(long)]
    pub(crate) reverse: bool,
    /// Show only rows whose name, detail or node contains this text
    #[arg(long, default_value = "")]
    pub(crate) filter: String,
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("--{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Terminal(#[from] terminal::TerminalError),
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot start the fetch thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl TopError {
    /// Exit code: 2 for a bad flag, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TopError::Flag { .. } | TopError::Setup(_) => 2,
            _ => 1,
        }
    }
}

/// Validated flags.
#[derive(Debug, Clone)]
pub(crate) struct TopConfig {
    pub(crate) source: Source,
    pub(crate) refresh: Duration,
    /// Timeout, TLS roots and credentials of every request.
    pub(crate) client: ClientOptions,
    pub(crate) once: Option<Output>,
    pub(crate) view: View,
    pub(crate) sort: Sort,
    pub(crate) filter: String,
}

impl TopArgs {
    pub(crate) fn resolve(self) -> Result<TopConfig, TopError> {
        let source = match &self.prometheus {
            Some(url) => Source::Prometheus(BaseUrl::parse(url)?),
            None => Source::Exporter(BaseUrl::parse(&self.url)?),
        };
        let flag = |flag, message: &str| {
            let message = message.to_string();
            Err(TopError::Flag { flag, message })
        };
        if self.refresh < Duration::from_millis(100) {
            return flag("refresh", "must be at least 100ms");
        }
        if self.timeout.is_zero() {
            return flag("timeout", "must be more than 0");
        }
        let client = self
            .remote
            .resolve(self.timeout, crate::remote::options::password_env()?)?;
        let descending = self.sort.descending_by_default() != self.reverse;
        Ok(TopConfig {
            source,
            refresh: self.refresh,
            client,
            once: self.once.then_some(self.output),
            view: self.view,
            sort: Sort {
                column: self.sort,
                descending,
            },
            filter: self.filter,
        })
    }
}

/// Entry point of `kepler-rs top`.
pub fn run(args: TopArgs) -> Result<(), TopError> {
    let config = args.resolve()?;
    match config.once {
        Some(output) => once(&config, output),
        None => live(&config),
    }
}

fn once(config: &TopConfig, output: Output) -> Result<(), TopError> {
    let client = Client::new(&config.client)?;
    let reading = config.source.fetch(&client)?;
    let rows = table::table(&reading, config.view, config.sort, &config.filter);
    let note = table::empty_reason(&reading, config.view);
    for warning in &reading.warnings {
        eprintln!("warning: {warning}");
    }
    let text = match output {
        Output::Text => batch::text(config.view, &reading, &rows, note),
        Output::Json => {
            batch::json(
                &config.source.describe(),
                config.view,
                &reading,
                &rows,
                note,
            )? + "\n"
        }
    };
    print!("{text}");
    Ok(())
}

/// The fetch loop, on its own thread so a slow server never freezes the keys. It stops when the
/// screen hangs up (either channel closes).
fn fetch_loop(
    source: Source,
    options: ClientOptions,
    refresh: Duration,
    readings: mpsc::Sender<Result<Reading, String>>,
    wake: mpsc::Receiver<()>,
) {
    let client = match Client::new(&options) {
        Ok(c) => c,
        Err(e) => {
            let _ = readings.send(Err(e.to_string()));
            return;
        }
    };
    loop {
        let result = source.fetch(&client).map_err(|e| e.to_string());
        if readings.send(result).is_err() {
            return;
        }
        match wake.recv_timeout(refresh) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

fn live(config: &TopConfig) -> Result<(), TopError> {
    let stop = terminal::stop_flag()?;
    let mut guard = terminal::TerminalGuard::enter()?;
    let (reading_tx, readings) = mpsc::channel();
    let (wake, wake_rx) = mpsc::channel();
    let (source, options, refresh) = (config.source.clone(), config.client.clone(), config.refresh);
    std::thread::Builder::new()
        .name("top-fetch".into())
        .spawn(move || fetch_loop(source, options, refresh, reading_tx, wake_rx))
        .map_err(TopError::Thread)?;
    let mut app = App::new(
        config.source.describe(),
        config.refresh.as_secs_f64(),
        config.view,
        config.sort,
        config.filter.clone(),
    );
    let mut dirty = true;
    while !app.quit && !stop.load(Ordering::Relaxed) {
        if dirty {
            guard.terminal.draw(|frame| view::draw(frame, &app))?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(key) => {
                    app.on_key(key);
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        while let Ok(result) = readings.try_recv() {
            app.on_reading(result, unix_now());
            dirty = true;
        }
    }
    drop(wake); // the fetch thread ends at its next wake-up; it holds no terminal state
    drop(guard);
    Ok(())
}
