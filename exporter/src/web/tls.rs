//! TLS settings -> a rustls `ServerConfig` (ring provider): certificate chain and key from PEM files,
//! optional client-certificate verification against a CA file, protocol versions. Loads files; holds
//! no state (`web::WebState` decides when to reload).

use crate::files::{read_small_file, FileError};
use crate::web::config::{ClientAuth, TlsSettings, TlsVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Certificates, keys and CA bundles are a few KiB; a limit keeps a wrong path from costing memory.
pub(crate) const MAX_PEM_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: no {what} found in PEM")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: not a PEM {what}: {message}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{path}: the CA certificate is unusable: {message}")]
    BadCa { path: PathBuf, message: String },
    #[error("{cert} and {key}: {message}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

impl TlsError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TlsError::File(e) => e.kind(),
            TlsError::Empty { .. } | TlsError::Pem { .. } => "pem",
            TlsError::BadCa { .. } => "ca",
            TlsError::Config { .. } => "cert_key",
        }
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_small_file(path, MAX_PEM_BYTES)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_small_file(path, MAX_PEM_BYTES)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_path_buf(),
            what: "private key",
        },
        e => TlsError::Pem {
            path: path.to_path_buf(),
            what: "private key",
            message: e.to_string(),
        },
    })
}

/// Build the server configuration. A key that does not belong to the certificate is an error here,
/// not at the first handshake.
pub(crate) fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (settings.min_version..=settings.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let config_error = |message: String| TlsError::Config {
        cert: settings.cert_file.clone(),
        key: settings.key_file.clone(),
        message,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match (settings.client_auth, &settings.client_ca_file) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca_file)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_file)? {
                roots.add(cert).map_err(|e| TlsError::BadCa {
                    path: ca_file.clone(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match mode {
                ClientAuth::VerifyClientCertIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| TlsError::BadCa {
                path: ca_file.clone(),
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = certificates(&settings.cert_file)?;
    let key = private_key(&settings.key_file)?;
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
