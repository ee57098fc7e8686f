//! The flags every remote reader shares (`--ca-file`, basic auth, `--bearer-token-file`), turned
//! once into `ClientOptions`: a rustls configuration (system roots plus the CA file) and the
//! `Authorization` header. Reads the files named by flags; never a password from the command line.

use base64::Engine as _;
use http::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The environment variable that holds the basic-auth password when no file is given.
pub(crate) const PASSWORD_ENV: &str = "KEPLER_RS_BASIC_AUTH_PASSWORD";

/// How to reach a server that wants TLS or credentials (flattened into `top` and `report`).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RemoteArgs {
    /// PEM file of CA certificates trusted for https://, in addition to the system roots
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// User for HTTP basic auth; the password comes from --basic-auth-password-file or from
    /// the environment variable KEPLER_RS_BASIC_AUTH_PASSWORD
    #[arg(long, value_name = "USER", conflicts_with = "bearer_token_file")]
    pub(crate) basic_auth_user: Option<String>,
    /// File that holds the basic-auth password (surrounding whitespace is ignored)
    #[arg(long, value_name = "FILE", requires = "basic_auth_user")]
    pub(crate) basic_auth_password_file: Option<PathBuf>,
    /// File that holds a bearer token, sent as `Authorization: Bearer ...`
    #[arg(long, value_name = "FILE")]
    pub(crate) bearer_token_file: Option<PathBuf>,
}

/// Flags or files that cannot work: reported before any request, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{url}: not an http:// or https:// URL ({reason})")]
    BadUrl { url: String, reason: String },
    #[error("--ca-file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--ca-file {}: no PEM certificate in it", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("--ca-file {}: not a usable CA certificate: {source}", path.display())]
    CaCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("--{flag} {}: {source}", path.display())]
    CredentialFile {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--{flag} {}: {reason}", path.display())]
    BadCredential {
        flag: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("{PASSWORD_ENV}: {reason}")]
    BadPasswordEnv { reason: &'static str },
    #[error(
        "--basic-auth-user needs a password: give --basic-auth-password-file FILE or set {PASSWORD_ENV}"
    )]
    NoPassword,
    #[error("--basic-auth-user: a user name cannot contain ':' or control characters")]
    BadUser,
}

impl SetupError {
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SetupError::BadUrl { .. } => "bad_url",
            SetupError::CaFile { .. }
            | SetupError::CaFileEmpty { .. }
            | SetupError::CaCertificate { .. } => "ca_file",
            SetupError::Tls(_) => "tls",
            SetupError::CredentialFile { .. }
            | SetupError::BadCredential { .. }
            | SetupError::BadPasswordEnv { .. }
            | SetupError::NoPassword
            | SetupError::BadUser => "credentials",
        }
    }
}

/// What a `Client` needs, validated: cheap to clone into the thread that fetches.
#[derive(Debug, Clone)]
pub(crate) struct ClientOptions {
    /// The limit of one request, from connect to the last byte of the body.
    pub(crate) timeout: Duration,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The `Authorization` header (marked sensitive: never shown by `Debug`).
    pub(crate) authorization: Option<HeaderValue>,
}

impl RemoteArgs {
    /// Read the CA file and the credentials; `password_env` is the value of
    /// `KEPLER_RS_BASIC_AUTH_PASSWORD` (passed in so tests need no process environment).
    pub(crate) fn resolve(
        &self,
        timeout: Duration,
        password_env: Option<String>,
    ) -> Result<ClientOptions, SetupError> {
        Ok(ClientOptions {
            timeout,
            tls: Arc::new(tls_config(self.ca_file.as_deref())?),
            authorization: self.authorization(password_env)?,
        })
    }

    fn authorization(
        &self,
        password_env: Option<String>,
    ) -> Result<Option<HeaderValue>, SetupError> {
        let mut value = if let Some(user) = &self.basic_auth_user {
            if user.contains(':') || user.chars().any(char::is_control) {
                return Err(SetupError::BadUser);
            }
            let password = match (&self.basic_auth_password_file, password_env) {
                (Some(path), _) => read_secret("basic-auth-password-file", path)?,
                (None, Some(p)) if p.is_empty() => {
                    return Err(SetupError::BadPasswordEnv { reason: "empty" })
                }
                (None, Some(p)) => p,
                (None, None) => return Err(SetupError::NoPassword),
            };
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| SetupError::BadUser)?
        } else if let Some(path) = &self.bearer_token_file {
            let token = read_secret("bearer-token-file", path)?;
            HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                SetupError::BadCredential {
                    flag: "bearer-token-file",
                    path: path.clone(),
                    reason: "the token holds characters a header cannot carry",
                }
            })?
        } else {
            return Ok(None);
        };
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// The value of `KEPLER_RS_BASIC_AUTH_PASSWORD`, if set.
pub(crate) fn password_env() -> Result<Option<String>, SetupError> {
    match std::env::var(PASSWORD_ENV) {
        Ok(p) => Ok(Some(p)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(SetupError::BadPasswordEnv {
            reason: "not valid UTF-8",
        }),
    }
}

/// Longest password or token file read.
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A password or token file: UTF-8, surrounding whitespace (the final newline) ignored, not empty.
fn read_secret(flag: &'static str, path: &Path) -> Result<String, SetupError> {
    let bad = |reason| SetupError::BadCredential {
        flag,
        path: path.to_path_buf(),
        reason,
    };
    // A secret is short; a FIFO or a device is refused rather than read without end.
    let bytes = crate::files::read_small_file(path, MAX_SECRET_BYTES)
        .map_err(|e| e.into_io())
        .map_err(|source| SetupError::CredentialFile {
            flag,
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not valid UTF-8"))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(bad("the file is empty"));
    }
    Ok(secret.to_string())
}

/// TLS 1.2 and 1.3 on ring, verifying against the system roots (rustls-native-certs:
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` or the distribution's bundle) plus every certificate of
/// `ca_file`. There is deliberately no way to turn verification off.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth())
}

/// The system roots plus every certificate of `ca_file`.
fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system bundles leave fewer roots; a handshake that then fails says to use --ca-file.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let mut added = 0;
        let unreadable = |source| SetupError::CaFile {
            path: path.to_path_buf(),
            source,
        };
        for cert in CertificateDer::pem_file_iter(path).map_err(unreadable)? {
            let cert = cert.map_err(unreadable)?;
            roots
                .add(cert)
                .map_err(|source| SetupError::CaCertificate {
                    path: path.to_path_buf(),
                    source,
                })?;
            added += 1;
        }
        if added == 0 {
            return Err(SetupError::CaFileEmpty {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(user: Option<&str>, password_file: Option<&Path>, token: Option<&Path>) -> RemoteArgs {
        RemoteArgs {
            ca_file: None,
            basic_auth_user: user.map(String::from),
            basic_auth_password_file: password_file.map(Path::to_path_buf),
            bearer_token_file: token.map(Path::to_path_buf),
        }
    }

    fn header(options: &ClientOptions) -> &str {
        options.authorization.as_ref().unwrap().to_str().unwrap()
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn basic_auth_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        // base64("alice:s3cret"): the final newline of the file is not part of the password.
        let o = args(Some("alice"), Some(&file), None)
            .resolve(T, None)
            .unwrap();
        assert_eq!(header(&o), "Basic YWxpY2U6czNjcmV0");
        assert!(o.authorization.as_ref().unwrap().is_sensitive());
        assert!(!format!("{o:?}").contains("YWxpY2U6czNjcmV0"));
        // The file wins over the environment.
        let o = args(Some("alice"), Some(&file), None)
            .resolve(T, Some("other".into()))
            .unwrap();
        assert_eq!(header(&o), "Basic YWxpY2U6czNjcmV0");
        let o = args(Some("alice"), None, None)
            .resolve(T, Some("s3cret".into()))
            .unwrap();
        assert_eq!(header(&o), "Basic YWxpY2U6czNjcmV0");
    }

    #[test]
    fn bearer_token_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  abc.def-ghi\n").unwrap();
        let o = args(None, None, Some(&file)).resolve(T, None).unwrap();
        assert_eq!(header(&o), "Bearer abc.def-ghi");
        let o = args(None, None, None)
            .resolve(T, Some("ignored".into()))
            .unwrap();
        assert!(o.authorization.is_none());
    }

    #[test]
    fn missing_or_bad_credentials_are_setup_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let nowhere = dir.path().join("nowhere");
        let with_newline = dir.path().join("two-lines");
        std::fs::write(&with_newline, "a\nb").unwrap();
        for (a, env, expect) in [
            (args(Some("alice"), None, None), None, "needs a password"),
            (args(Some("alice"), None, None), Some(""), "empty"),
            (
                args(Some("al:ice"), None, None),
                Some("x"),
                "cannot contain ':'",
            ),
            (
                args(Some("alice"), Some(&empty), None),
                None,
                "the file is empty",
            ),
            (args(Some("alice"), Some(&nowhere), None), None, "nowhere"),
            (
                args(None, None, Some(&nowhere)),
                None,
                "--bearer-token-file",
            ),
            (
                args(None, None, Some(&with_newline)),
                None,
                "header cannot carry",
            ),
        ] {
            let err = a.resolve(T, env.map(String::from)).unwrap_err();
            assert_eq!(err.kind(), "credentials", "{err}");
            assert!(err.to_string().contains(expect), "{err}");
        }
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let bad_pem = dir.path().join("bad.pem");
        std::fs::write(
            &bad_pem,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for path in [dir.path().join("missing.pem"), not_pem, bad_pem] {
            let a = RemoteArgs {
                ca_file: Some(path.clone()),
                ..RemoteArgs::default()
            };
            let err = a.resolve(T, None).unwrap_err();
            assert_eq!(err.kind(), "ca_file", "{err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("--ca-file {}: ", path.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn ca_file_certificates_are_added_to_the_roots() {
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        let system = root_store(None).unwrap().len();
        assert_eq!(root_store(Some(&path)).unwrap().len(), system + 1);
        // The same CA twice (a bundle that repeats it) is still fine.
        std::fs::write(&path, format!("{}{}", cert.pem(), cert.pem())).unwrap();
        assert!(root_store(Some(&path)).unwrap().len() > system);
    }
}
