//! TLS servers for tests: a certificate authority made at test time (rcgen) with a server
//! certificate it signs for 127.0.0.1 and localhost (its PEM goes where a client's trust setting,
//! kubeconfig or --ca-file, can name it), and an accept loop on a thread of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;

/// A fresh self-signed CA named `name` that can sign leaf certificates.
pub fn self_signed_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

impl TestCa {
    /// A fresh CA named `name` and a leaf certificate for 127.0.0.1 and localhost.
    pub fn new(name: &str) -> TestCa {
        let ca = self_signed_ca(name);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        TestCa {
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
        }
    }

    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, &self.ca_pem).unwrap();
    }

    /// TLS 1.2/1.3 on ring, serving the leaf certificate, no client certificates.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![self.leaf.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(self.leaf_key.clone().into()),
        )
        .unwrap();
        Arc::new(tls)
    }
}

/// A TLS server on 127.0.0.1 (a free port), on its own thread and runtime; stops on drop.
pub struct TlsServer {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsServer {
    /// Each TCP connection that `admit` lets in (false: closed at once, as an unreachable server
    /// looks) gets a handshake with `config`, then `serve` on a task of its own.
    pub fn start<F>(
        config: Arc<rustls::ServerConfig>,
        admit: impl Fn() -> bool + Send + 'static,
        serve: impl Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> F
            + Send
            + Sync
            + 'static,
    ) -> TlsServer
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let serve = Arc::new(serve);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            if !admit() {
                                drop(tcp);
                                continue;
                            }
                            let (acceptor, serve) = (acceptor.clone(), serve.clone());
                            tokio::spawn(async move {
                                // A client that refuses the certificate ends at the handshake.
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    serve(tls).await;
                                }
                            });
                        }
                    }
                }
            });
        });
        TlsServer {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
