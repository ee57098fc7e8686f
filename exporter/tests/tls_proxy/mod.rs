//! A small HTTPS reverse proxy in front of a real server on loopback (an exporter, Prometheus):
//! TLS with a CA made at test time, and basic or bearer auth checked the way an ingress does
//! (401 with `WWW-Authenticate`, nothing forwarded). `/moved...` answers a redirect.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

#[path = "../test_tls/mod.rs"]
mod test_tls;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use test_tls::{TestCa, TlsServer};

/// What the proxy wants in `Authorization`.
#[derive(Debug, Clone)]
pub enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

impl Auth {
    fn header(&self) -> String {
        use base64::Engine as _;
        match self {
            Auth::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Auth::Bearer(token) => format!("Bearer {token}"),
        }
    }
}

#[derive(Default)]
struct Counts {
    forwarded: AtomicUsize,
    refused: AtomicUsize,
}

/// The proxy; stopped on drop.
pub struct TlsProxy {
    pub port: u16,
    dir: tempfile::TempDir,
    counts: Arc<Counts>,
    server: TlsServer,
}

impl TlsProxy {
    /// Serve https://127.0.0.1:PORT, forwarding authorized requests to http://127.0.0.1:`upstream`.
    pub fn start(upstream: u16, auth: Auth) -> TlsProxy {
        let dir = tempfile::tempdir().unwrap();
        // One CA per proxy, each with its own name: another proxy's CA is an unknown issuer.
        let ca = TestCa::new(&format!("kepler-rs test proxy CA {}", dir.path().display()));
        ca.write_ca(&dir.path().join("ca.pem"));
        let counts = Arc::new(Counts::default());
        let (expected, shared) = (Arc::new(auth.header()), counts.clone());
        let server = TlsServer::start(
            ca.server_config(),
            || true,
            move |tls| {
                let (expected, counts) = (expected.clone(), shared.clone());
                async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, upstream, expected.clone(), counts.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            },
        );
        TlsProxy {
            port: server.port,
            dir,
            counts,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The PEM of the CA that signed the proxy's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Requests passed on to the upstream server.
    pub fn forwarded(&self) -> usize {
        self.counts.forwarded.load(Ordering::SeqCst)
    }

    /// Requests answered 401.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    upstream: u16,
    expected: Arc<String>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let authorized = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        counts.refused.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"test\"")
            .body(Full::new(Bytes::from_static(b"Unauthorized\n")))
            .unwrap());
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if path.starts_with("/moved") {
        return Ok(Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/elsewhere")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    counts.forwarded.fetch_add(1, Ordering::SeqCst);
    Ok(forward(upstream, &path).await.unwrap_or_else(|e| {
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Full::new(Bytes::from(format!("proxy: {e}\n"))))
            .unwrap()
    }))
}

/// GET `path` from the upstream server over plain HTTP/1.1.
async fn forward(
    upstream: u16,
    path: &str,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{upstream}"))
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut answer = Response::builder().status(parts.status);
    if let Some(content_type) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        answer = answer.header(hyper::header::CONTENT_TYPE, content_type);
    }
    Ok(answer.body(Full::new(body))?)
}

/// Write `text` to a file in `dir` and return its path (password and token files).
pub fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
