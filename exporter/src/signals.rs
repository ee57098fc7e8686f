//! What `kepler-rs run` does on a signal, apart from serving: SIGHUP reloads the web configuration
//! (and says when `--config` changed, which needs a restart), and the stop after SIGTERM waits for
//! the tick loop only so long, naming the input a stuck read holds. Installs no handler itself
//! (`main` does, with tokio).

use crate::files::{stamp, FileStamp};
use crate::monitor::InFlight;
use crate::web::{WebError, WebState};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How the tick loop ended at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopStop {
    /// It stopped between reads.
    Clean,
    /// It did not stop within the grace period: `input` had been read for `stuck_for` (`None`:
    /// it was between reads, yet did not stop).
    Stuck {
        input: Option<&'static str>,
        stuck_for: Duration,
    },
}

/// Waits until `stopped` says the loop ended (its sender is dropped when the thread ends), at most
/// `grace` (`--stop-timeout`: a read stuck in the kernel never returns).
pub fn wait_for_loop(stopped: &Receiver<()>, in_flight: &InFlight, grace: Duration) -> LoopStop {
    match stopped.recv_timeout(grace) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => LoopStop::Clean,
        Err(RecvTimeoutError::Timeout) => {
            let current = in_flight.current();
            LoopStop::Stuck {
                input: current.map(|(input, _)| input),
                stuck_for: current.map_or(Duration::ZERO, |(_, since)| since),
            }
        }
    }
}

/// The `--config` file and what it was at start: settings in it take effect only at a restart.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    at_start: Option<FileStamp>,
}

impl ConfigFile {
    pub fn new(path: Option<PathBuf>) -> ConfigFile {
        let at_start = path.as_deref().and_then(stamp);
        ConfigFile { path, at_start }
    }

    /// The file, when it changed (or went) since start.
    fn changed(&self) -> Option<&PathBuf> {
        self.path
            .as_ref()
            .filter(|path| stamp(path) != self.at_start)
    }
}

/// What one SIGHUP did.
#[derive(Debug)]
pub struct Hangup {
    /// `Ok(true)`: the web configuration was reloaded; `Ok(false)`: there is none.
    pub(crate) web: Result<bool, WebError>,
    /// The `--config` file, when it changed since start (not reloaded: needs a restart).
    pub(crate) config_changed: Option<PathBuf>,
}

/// One SIGHUP: reload the web configuration and every file it names, changed or not, and look at
/// the `--config` file. Blocking (file reads, key checks): run it off the event loop.
pub fn on_hangup(web: &WebState, config: &ConfigFile) -> Hangup {
    Hangup {
        web: web.reload_now(),
        config_changed: config.changed().cloned(),
    }
}

/// Logs what a SIGHUP did.
pub fn log_hangup(hangup: &Hangup) {
    if let Some(path) = &hangup.config_changed {
        tracing::warn!(config = %path.display(), "SIGHUP: the --config file changed since start; its settings take effect only after a restart");
    }
    match &hangup.web {
        Ok(true) => tracing::info!("SIGHUP: web config and certificates reloaded"),
        Ok(false) => {
            tracing::info!("SIGHUP: no --web.config.file to reload; nothing else is reloaded")
        }
        Err(e) => {
            tracing::error!(kind = e.kind(), error = %e, "SIGHUP: web config reload failed; the previous one stays in force")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_loop_that_ends_is_clean_and_one_that_does_not_is_stuck() {
        let in_flight = InFlight::default();
        let (done, stopped) = std::sync::mpsc::channel::<()>();
        drop(done);
        assert_eq!(
            wait_for_loop(&stopped, &in_flight, Duration::from_secs(5)),
            LoopStop::Clean
        );
        let (_held, never) = std::sync::mpsc::channel::<()>();
        assert_eq!(
            wait_for_loop(&never, &in_flight, Duration::from_millis(20)),
            LoopStop::Stuck {
                input: None,
                stuck_for: Duration::ZERO
            }
        );
    }

    #[test]
    fn hangup_reloads_the_web_config_and_names_a_changed_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let web_path = dir.path().join("web.yaml");
        std::fs::write(
            &web_path,
            "http_server_config:\n  headers:\n    X-Frame-Options: DENY\n",
        )
        .unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, "interval: 3s\n").unwrap();
        let web = WebState::load(&web_path).unwrap();
        let config = ConfigFile::new(Some(config_path.clone()));

        let unchanged = on_hangup(&web, &config);
        assert!(matches!(unchanged.web, Ok(true)));
        assert_eq!(unchanged.config_changed, None);

        std::fs::write(
            &web_path,
            "http_server_config:\n  headers:\n    X-Frame-Options: SAMEORIGIN\n",
        )
        .unwrap();
        std::fs::write(&config_path, "interval: 5s\n").unwrap();
        let changed = on_hangup(&web, &config);
        assert!(matches!(changed.web, Ok(true)));
        assert_eq!(changed.config_changed, Some(config_path));
        let headers = &web.current().headers;
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].1, "SAMEORIGIN");
        assert_eq!(web.reloads_ok.load(Ordering::Relaxed), 2);

        // A broken file keeps the configuration in force.
        std::fs::write(&web_path, "nonsense: [").unwrap();
        assert!(on_hangup(&web, &config).web.is_err());
        assert_eq!(web.current().headers[0].1, "SAMEORIGIN");
        assert_eq!(web.reloads_failed.load(Ordering::Relaxed), 1);

        // Without a web configuration or a config file there is nothing to reload.
        let none = on_hangup(&WebState::plain(), &ConfigFile::new(None));
        assert!(matches!(none.web, Ok(false)));
        assert_eq!(none.config_changed, None);
    }
}
