//! The web layer's policy, apart from routing (`server`): the exporter-toolkit web configuration
//! (TLS, basic auth, headers), its reload when a file changes, and the bounds on what a client may
//! cost. Never measures anything.

pub(crate) mod auth;
pub(crate) mod config;
pub(crate) mod conns;
pub(crate) mod tls;

use crate::files::{stamp, FileStamp};
use auth::Authenticator;
use config::{WebConfig, WebConfigError};
use http::header::{HeaderName, HeaderValue};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tls::TlsError;
use tokio_rustls::TlsAcceptor;

/// Why the web configuration cannot be used (start: exit 2; reload: the old one stays).
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("--web.config.file: {0}")]
    Config(#[from] WebConfigError),
    #[error("--web.config.file: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "--web.config.file: {path}: a reload cannot switch TLS {change}; restart the exporter"
    )]
    TlsSwitch { path: PathBuf, change: &'static str },
}

impl WebError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            WebError::Config(e) => e.kind(),
            WebError::Tls(e) => e.kind(),
            WebError::TlsSwitch { .. } => "tls_switch",
        }
    }
}

/// One loaded web configuration, ready to serve with.
pub struct ActiveWeb {
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<Arc<Authenticator>>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl ActiveWeb {
    /// No web configuration: plain HTTP, no authentication.
    pub(crate) fn plain() -> ActiveWeb {
        ActiveWeb {
            tls: None,
            auth: None,
            headers: Vec::new(),
        }
    }

    fn build(config: WebConfig) -> Result<ActiveWeb, WebError> {
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        let tls = tls.map(TlsAcceptor::from);
        // No users, no Authenticator: its decoy hash costs a bcrypt round.
        let auth = (!config.users.is_empty()).then(|| Arc::new(Authenticator::new(config.users)));
        Ok(ActiveWeb {
            tls,
            auth,
            headers: config.headers,
        })
    }
}

/// The web configuration in force, and where it came from. Reloads swap it whole.
pub struct WebState {
    path: Option<PathBuf>,
    active: Mutex<Arc<ActiveWeb>>,
    stamps: Mutex<Vec<(PathBuf, Option<FileStamp>)>>,
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
}

fn files_with_stamps(config: &WebConfig, path: &Path) -> Vec<(PathBuf, Option<FileStamp>)> {
    config
        .files(path)
        .into_iter()
        .map(|f| {
            let s = stamp(&f);
            (f, s)
        })
        .collect()
}

impl WebState {
    /// Without `--web.config.file`: plain HTTP.
    pub fn plain() -> WebState {
        WebState {
            path: None,
            active: Mutex::new(Arc::new(ActiveWeb::plain())),
            stamps: Mutex::new(Vec::new()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    /// Load `--web.config.file` and everything it names; any problem is an error (exit 2 at start).
    pub fn load(path: &Path) -> Result<WebState, WebError> {
        let config = config::load(path)?;
        let stamps = files_with_stamps(&config, path);
        let active = ActiveWeb::build(config)?;
        Ok(WebState {
            path: Some(path.to_path_buf()),
            active: Mutex::new(Arc::new(active)),
            stamps: Mutex::new(stamps),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    pub fn current(&self) -> Arc<ActiveWeb> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn is_file_based(&self) -> bool {
        self.path.is_some()
    }

    /// Re-read the configuration when it or a file it names changed (cert-manager renews the
    /// certificate in place). `Ok(false)`: nothing changed. On an error the previous configuration
    /// stays in force, and the same broken files are not retried until they change again.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, WebError> {
        if self.path.is_none() {
            return Ok(false);
        }
        let changed = {
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            let mut changed = false;
            for (file, seen) in stamps.iter_mut() {
                let now = stamp(file);
                if now != *seen {
                    *seen = now;
                    changed = true;
                }
            }
            changed
        };
        if !changed {
            return Ok(false);
        }
        self.reload_now()
    }

    /// Re-read the configuration and every file it names now, changed or not (SIGHUP). `Ok(false)`:
    /// there is no web configuration file. On an error the previous configuration stays in force.
    pub(crate) fn reload_now(&self) -> Result<bool, WebError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let result = self.reload(path);
        match &result {
            Ok(_) => self.reloads_ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.reloads_failed.fetch_add(1, Ordering::Relaxed),
        };
        result.map(|()| true)
    }

    fn reload(&self, path: &Path) -> Result<(), WebError> {
        let config = config::load(path)?;
        let stamps = files_with_stamps(&config, path);
        let was_tls = self.current().tls.is_some();
        if was_tls != config.tls.is_some() {
            *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
            return Err(WebError::TlsSwitch {
                path: path.to_path_buf(),
                change: if was_tls { "off" } else { "on" },
            });
        }
        let active = ActiveWeb::build(config);
        // New files are watched even when they are broken, so fixing them triggers the next reload.
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(active?);
        Ok(())
    }
}
