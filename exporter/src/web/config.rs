//! The web configuration file (`--web.config.file`), in Prometheus exporter-toolkit's format: parse
//! and validate it into a `WebConfig`. Reads the file and nothing else; TLS material is loaded by
//! `web::tls`, passwords are checked by `web::auth`.

use crate::files::{read_small_file, FileError};
use crate::yaml_depth::{check_depth, MAX_YAML_DEPTH};
use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A web configuration is a few hundred bytes; anything near this is not one.
pub(crate) const MAX_WEB_CONFIG_BYTES: usize = 1 << 20;

/// Why a web configuration cannot be used. Each message is one line naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl WebConfigError {
    /// Short, stable name for self-metric labels.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            WebConfigError::File(e) => e.kind(),
            WebConfigError::NotUtf8 { .. } | WebConfigError::Syntax { .. } => "syntax",
            WebConfigError::Invalid { .. } => "invalid",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// TLS protocol versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    Tls12,
    Tls13,
}

/// How client certificates are handled. exporter-toolkit's `RequestClientCert` and
/// `RequireAnyClientCert` accept a certificate without verifying it; kepler-rs never disables
/// verification, so those two are refused with an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    NoClientCert,
    /// Verify a certificate when the client sends one; allow clients without one.
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// Validated TLS settings: paths are absolute or relative to the web config's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) client_auth: ClientAuth,
    pub(crate) client_ca_file: Option<PathBuf>,
    pub(crate) min_version: TlsVersion,
    pub(crate) max_version: TlsVersion,
}

/// A bcrypt hash as exporter-toolkit accepts it (`$2a$`, `$2b$`, `$2x$` or `$2y$`, cost 4-31).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BcryptHash {
    text: String,
    cost: u32,
}

impl BcryptHash {
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The work factor (log2 of the rounds).
    pub(crate) fn cost(&self) -> u32 {
        self.cost
    }

    /// Check the shape of a hash without hashing anything: `$2y$10$` + 53 characters of bcrypt's base64.
    pub(crate) fn parse(raw: &str) -> Result<BcryptHash, String> {
        let raw = raw.trim();
        let Some(rest) = raw.strip_prefix("$2") else {
            return Err(
                "is not a bcrypt hash (it must start with $2y$, $2b$ or $2a$; make one with \
                 `htpasswd -nBC 10 USER`); plaintext passwords are not accepted"
                    .into(),
            );
        };
        let mut parts = rest.splitn(3, '$');
        let variant = parts.next().unwrap_or_default();
        let cost = parts.next().unwrap_or_default();
        let salt_and_hash = parts.next().unwrap_or_default();
        if !matches!(variant, "a" | "b" | "x" | "y") {
            return Err(format!("has an unknown bcrypt variant $2{variant}$"));
        }
        let cost: u32 = match (cost.len(), cost.parse()) {
            (2, Ok(c)) => c,
            _ => return Err(format!("has a malformed bcrypt cost {cost:?}")),
        };
        if !(4..=31).contains(&cost) {
            return Err(format!("has bcrypt cost {cost}, outside 4 to 31"));
        }
        let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
        if salt_and_hash.len() != 53 || !salt_and_hash.chars().all(alphabet) {
            return Err(
                "is a truncated or malformed bcrypt hash (53 characters after the cost)".into(),
            );
        }
        Ok(BcryptHash {
            text: raw.to_string(),
            cost,
        })
    }
}

impl std::fmt::Debug for BcryptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BcryptHash(..)")
    }
}

/// The validated web configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebConfig {
    /// `None`: plain HTTP (exporter-toolkit's rule when neither cert_file nor key_file is set).
    pub(crate) tls: Option<TlsSettings>,
    /// Basic-auth users; empty: no authentication.
    pub(crate) users: BTreeMap<String, BcryptHash>,
    /// Extra response headers (`http_server_config.headers`).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebConfig {
    /// Every file this configuration depends on, for change detection (the config itself first).
    pub(crate) fn files(&self, config_path: &Path) -> Vec<PathBuf> {
        let mut files = vec![config_path.to_path_buf()];
        if let Some(tls) = &self.tls {
            files.push(tls.cert_file.clone());
            files.push(tls.key_file.clone());
            files.extend(tls.client_ca_file.clone());
        }
        files
    }
}

/// Headers exporter-toolkit lets a web config set, and the values it allows (`None`: any).
const ALLOWED_HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// Read and validate the web configuration at `path`.
pub(crate) fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let bytes = read_small_file(path, MAX_WEB_CONFIG_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| WebConfigError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, dir)
}

/// Validate the text of a web configuration; relative file names are resolved against `dir`.
pub(crate) fn parse(text: &str, path: &Path, dir: &Path) -> Result<WebConfig, WebConfigError> {
    let raw: RawWebConfig = if text.trim().is_empty() {
        RawWebConfig::default()
    } else {
        check_depth(text, MAX_YAML_DEPTH).map_err(|e| WebConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        serde_yaml_ng::from_str(text).map_err(|e| WebConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().replace('\n', " "),
        })?
    };
    let invalid = |key: &'static str, message: String| WebConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        message,
    };
    let tls = match raw.tls_server_config {
        Some(t) => tls_settings(t, dir).map_err(|(key, m)| invalid(key, m))?,
        None => None,
    };
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
            return Err(invalid(
                "basic_auth_users",
                format!("{user:?} is not a valid user name (empty, ':' or control characters)"),
            ));
        }
        let hash = BcryptHash::parse(&hash)
            .map_err(|m| invalid("basic_auth_users", format!("the password of {user:?} {m}")))?;
        users.insert(user, hash);
    }
    let mut headers = Vec::new();
    if let Some(http) = raw.http_server_config {
        let _ = http.http2; // HTTP/2 is not served; the key is accepted as exporter-toolkit accepts it.
        for (name, value) in http.headers.unwrap_or_default() {
            headers
                .push(header(&name, &value).map_err(|m| invalid("http_server_config.headers", m))?);
        }
    }
    Ok(WebConfig {
        tls,
        users,
        headers,
    })
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((canonical, allowed)) = ALLOWED_HEADERS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    else {
        let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "header {name:?} cannot be configured (allowed: {})",
            names.join(", ")
        ));
    };
    if let Some(allowed) = allowed {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
            return Err(format!(
                "{canonical}: {value:?} is not allowed (one of: {})",
                allowed.join(", ")
            ));
        }
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("{canonical}: {value:?} is not a valid header value"))?;
    let name = HeaderName::from_bytes(canonical.as_bytes())
        .map_err(|_| format!("{canonical}: not a valid header name"))?;
    Ok((name, value))
}

/// A TLS settings error: the key and what is wrong with it.
type TlsError = (&'static str, String);

fn refuse<T>(key: &'static str, message: impl Into<String>) -> Result<T, TlsError> {
    Err((key, message.into()))
}

/// `raw` as a TLS version; `default` where unset or empty.
fn tls_version(
    key: &'static str,
    raw: Option<&str>,
    default: TlsVersion,
) -> Result<TlsVersion, TlsError> {
    match raw.unwrap_or_default() {
        "" => Ok(default),
        "TLS12" => Ok(TlsVersion::Tls12),
        "TLS13" => Ok(TlsVersion::Tls13),
        raw @ ("TLS10" | "TLS11") => refuse(
            key,
            format!("{raw} is not supported: kepler-rs speaks TLS 1.2 and 1.3 only"),
        ),
        other => refuse(key, format!("{other:?} is not one of TLS12, TLS13")),
    }
}

fn tls_settings(t: RawTls, dir: &Path) -> Result<Option<TlsSettings>, TlsError> {
    let resolve = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let (cert_file, key_file) = match (nonempty(t.cert_file), nonempty(t.key_file)) {
        // exporter-toolkit serves plain HTTP then; anything else set here would be ignored.
        (None, None) if t.client_ca_file.is_some() || t.client_auth_type.is_some() => {
            let message = "client certificate settings without cert_file and key_file";
            return refuse("tls_server_config", message);
        }
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return refuse("tls_server_config.key_file", "missing (cert_file is set)")
        }
        (None, Some(_)) => {
            return refuse("tls_server_config.cert_file", "missing (key_file is set)")
        }
        (Some(c), Some(k)) => (resolve(c), resolve(k)),
    };
    for (key, list) in [
        ("tls_server_config.cipher_suites", t.cipher_suites),
        ("tls_server_config.curve_preferences", t.curve_preferences),
        (
            "tls_server_config.client_allowed_sans",
            t.client_allowed_sans,
        ),
    ] {
        if list.is_some_and(|v| !v.is_empty()) {
            return refuse(
                key,
                "is not supported by kepler-rs (rustls offers only modern suites and curves); remove it",
            );
        }
    }
    let _ = t.prefer_server_cipher_suites; // rustls always prefers the server's order.
    let client_ca_file = nonempty(t.client_ca_file).map(resolve);
    let auth_key = "tls_server_config.client_auth_type";
    let client_auth = match t.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "" | "NoClientCert" => ClientAuth::NoClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        mode @ ("RequestClientCert" | "RequireAnyClientCert") => {
            return refuse(
                auth_key,
                format!(
                    "{mode} accepts client certificates without verifying them, which kepler-rs \
                     never does; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
                ),
            )
        }
        other => {
            return refuse(
                auth_key,
                format!(
                    "{other:?} is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            )
        }
    };
    let ca_key = "tls_server_config.client_ca_file";
    match (client_auth, &client_ca_file) {
        (ClientAuth::NoClientCert, Some(_)) => {
            let message =
                "set, but client_auth_type is NoClientCert (set it to RequireAndVerifyClientCert)";
            return refuse(ca_key, message);
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            let message = "missing: client certificates cannot be verified without a CA";
            return refuse(ca_key, message);
        }
        _ => {}
    }
    let min_key = "tls_server_config.min_version";
    let min_version = tls_version(min_key, t.min_version.as_deref(), TlsVersion::Tls12)?;
    let max_key = "tls_server_config.max_version";
    let max_version = tls_version(max_key, t.max_version.as_deref(), TlsVersion::Tls13)?;
    if max_version < min_version {
        return refuse(max_key, "is below min_version");
    }
    Ok(Some(TlsSettings {
        cert_file,
        key_file,
        client_auth,
        client_ca_file,
        min_version,
        max_version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -nbBC 10 prometheus secret`
    pub(crate) const HASH: &str = "$2y$10$ZxBmh8Xm2wYj4GKpTJIbUOFfSrMJ1BOFUQW5whm0p9H6Ea/KnpLFq";

    fn check(text: &str) -> Result<WebConfig, String> {
        parse(text, Path::new("/etc/web.yml"), Path::new("/etc/kepler")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_config_is_validated_and_relative_paths_resolve() {
        let c = check(&format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: /abs/tls.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n  prefer_server_cipher_suites: true\nhttp_server_config:\n  http2: false\n  headers:\n    x-frame-options: deny\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  prometheus: '{HASH}'\n"
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/kepler/tls.crt"));
        assert_eq!(tls.key_file, Path::new("/abs/tls.key"));
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(Path::new("/etc/kepler/ca.crt"))
        );
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(c.users["prometheus"].as_str(), HASH);
        assert_eq!(c.headers.len(), 2);
        assert_eq!(
            c.headers
                .iter()
                .find(|(n, _)| n == "x-frame-options")
                .unwrap()
                .1,
            "deny"
        );
    }

    #[test]
    fn empty_file_and_auth_only_serve_plain_http() {
        let c = check("").unwrap();
        assert!(c.tls.is_none() && c.users.is_empty() && c.headers.is_empty());
        let c = check(&format!("basic_auth_users:\n  a: {HASH}\n")).unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.users.len(), 1);
    }

    #[test]
    fn bad_configs_get_one_line_errors_naming_the_key() {
        let cases: &[(&str, &str)] = &[
            ("tls_server_config:\n  cert_fil: a\n", "unknown field `cert_fil`"),
            ("tls_srver_config: {}\n", "unknown field `tls_srver_config`"),
            ("basic_auth_users:\n  alice: hunter2\n", "plaintext passwords are not accepted"),
            ("basic_auth_users:\n  alice: '$2y$03$ZxBmh8Xm2wYj4GKpTJIbUOFfSrMJ1BOFUQW5whm0p9H6Ea/KnpLFq'\n", "cost 3, outside 4 to 31"),
            ("basic_auth_users:\n  alice: '$2y$99$ZxBmh8Xm2wYj4GKpTJIbUOFfSrMJ1BOFUQW5whm0p9H6Ea/KnpLFq'\n", "cost 99"),
            ("basic_auth_users:\n  alice: '$2y$10$short'\n", "truncated or malformed"),
            ("basic_auth_users:\n  alice: '$2q$10$ZxBmh8Xm2wYj4GKpTJIbUOFfSrMJ1BOFUQW5whm0p9H6Ea/KnpLFq'\n", "unknown bcrypt variant"),
            ("tls_server_config:\n  cert_file: a\n", "key_file: missing"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n", "TLS 1.2 and 1.3 only"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n", "without verifying"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file: missing"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n", "client_auth_type is NoClientCert"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "not supported"),
            ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n", "below min_version"),
            ("http_server_config:\n  headers:\n    Set-Cookie: a\n", "cannot be configured"),
            ("http_server_config:\n  headers:\n    X-Frame-Options: allow-from x\n", "is not allowed"),
            ("[1, 2", "/etc/web.yml"),
        ];
        for (text, want) in cases {
            let e = check(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{text:?}: not one line: {e}");
        }
    }
}
