//! HTTP GET, read only, over http:// or https:// (hyper-util's pooled client with hyper-rustls on
//! a small single-threaded tokio runtime), bounded by a timeout and a body size limit, with the
//! configured `Authorization` header. Redirects are errors, never followed. Knows no metric names.

use super::endpoint::BaseUrl;
use super::options::ClientOptions;
use super::series::{clean, clean_message};
use bytes::{Buf, Bytes};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as StdError;
use std::io::{self, Read};
use std::time::Duration;

/// Larger answers are refused: a 1,000-pod exposition is about 2 MiB.
pub(crate) const MAX_BODY_BYTES: u64 = 64 << 20;

/// Larger streamed answers are refused. A streamed answer is decoded as it arrives and never held
/// whole, so this only stops an endless body; 100,000 series of a Prometheus query are about 25 MB.
pub(crate) const MAX_STREAMED_BYTES: u64 = 1 << 30;

/// The start of an unexpected answer that is read to explain it.
const STATUS_BODY_BYTES: u64 = 64 << 10;

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot start the HTTP runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{url}: cannot build the request: {source}")]
    Request { url: String, source: http::Error },
    #[error("cannot connect to {authority}: {detail}")]
    Connect {
        authority: String,
        /// The innermost cause (e.g. "Connection refused (os error 111)").
        detail: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("TLS handshake with {authority} failed: {source}{}", tls_hint(source))]
    Tls {
        authority: String,
        source: rustls::Error,
    },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: HTTP error: {detail}")]
    Http {
        url: String,
        detail: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: the answer was cut off or too large: {reason}")]
    Body { url: String, reason: String },
    #[error("{url}: HTTP {status} redirects to {location}; redirects are not followed, give the final URL")]
    Redirect {
        url: String,
        status: StatusCode,
        location: String,
    },
    #[error("{url}: HTTP {status}{detail}{}", status_hint(*status))]
    Status {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: not a Prometheus API answer: {reason}")]
    NotPrometheus { url: String, reason: String },
    #[error("{url}: Prometheus refused the query ({kind}): {message}")]
    Query {
        url: String,
        kind: String,
        message: String,
    },
}

impl ClientError {
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ClientError::Runtime(_) => "runtime",
            ClientError::Request { .. } => "request",
            ClientError::Connect { .. } => "connect",
            ClientError::Tls { .. } => "tls",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Http { .. } => "http",
            ClientError::Body { .. } => "body",
            ClientError::Redirect { .. } => "redirect",
            ClientError::Status { .. } => "status",
            ClientError::NotPrometheus { .. } => "not_prometheus",
            ClientError::Query { .. } => "query",
        }
    }
}

fn tls_hint(error: &rustls::Error) -> &'static str {
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            " (the server's certificate is not signed by a CA in the system roots; add its CA with --ca-file)"
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            ..
        }) => " (the certificate does not name the host of the URL)",
        _ => "",
    }
}

fn status_hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => {
            " (the server wants credentials: check --basic-auth-user and its password, or --bearer-token-file)"
        }
        StatusCode::FORBIDDEN => " (the credentials were accepted but do not allow this)",
        _ => "",
    }
}

/// What an answer said, with the body.
pub(crate) struct Answer {
    pub(crate) url: String,
    pub(crate) content_type: String,
    pub(crate) body: Vec<u8>,
}

type Https = HttpsConnector<HttpConnector>;

/// A GET client with its own single-threaded runtime and connection pool; one per thread that
/// fetches (`top` refreshes reuse the connection and its TLS session).
pub(crate) struct Client {
    runtime: tokio::runtime::Runtime,
    http: hyper_util::client::legacy::Client<Https, Empty<Bytes>>,
    timeout: Duration,
    authorization: Option<HeaderValue>,
}

impl Client {
    pub(crate) fn new(options: &ClientOptions) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*options.tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Client {
            runtime,
            http,
            timeout: options.timeout,
            authorization: options.authorization.clone(),
        })
    }

    /// GET `path` plus an encoded `query` under `base`, the body read whole (at most
    /// `MAX_BODY_BYTES`). Any status but 200 is an error carrying the start of the body; a
    /// redirect is an error naming its target.
    pub(crate) fn get(
        &self,
        base: &BaseUrl,
        path: &str,
        query: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let read = |content_type: &str, url: &str, body: &mut dyn Read| {
            let mut bytes = Vec::new();
            // A failed read is the body's failure, which `get_streamed` reports.
            let _ = body.read_to_end(&mut bytes);
            Ok(Answer {
                url: url.to_string(),
                content_type: content_type.to_string(),
                body: bytes,
            })
        };
        self.get_streamed(base, path, query, &[], MAX_BODY_BYTES, read)
    }

    /// Send the request and wait for the answer's head; a redirect is an error.
    async fn open(
        &self,
        base: &BaseUrl,
        uri: Uri,
        url: &str,
    ) -> Result<(StatusCode, String, Incoming), ClientError> {
        let mut request = Request::get(uri).header(
            ACCEPT,
            "text/plain;version=0.0.4;q=0.9, application/json;q=0.8, */*;q=0.1",
        );
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let request =
            request
                .body(Empty::<Bytes>::new())
                .map_err(|source| ClientError::Request {
                    url: url.to_string(),
                    source,
                })?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| classify(base, url, e))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let content_type = header(CONTENT_TYPE);
        if status.is_redirection() {
            return Err(ClientError::Redirect {
                location: clean(&header(LOCATION)),
                url: url.to_string(),
                status,
            });
        }
        Ok((status, content_type, response.into_body()))
    }

    /// GET whose body is handed to `read` as it arrives, never held whole: for answers too large
    /// to keep (a Prometheus query over 100,000 series). The status must be 200 or one of
    /// `also_read`; any other is an error carrying the start of the body. `read` gets the content
    /// type, the URL and the body. The timeout covers the whole answer; a stalled body, or one of
    /// more than `max_bytes`, is an error.
    pub(crate) fn get_streamed<T>(
        &self,
        base: &BaseUrl,
        path: &str,
        query: Option<&str>,
        also_read: &[StatusCode],
        max_bytes: u64,
        read: impl FnOnce(&str, &str, &mut dyn Read) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let (url, uri) = request_target(base, path, query)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timeout = || ClientError::Timeout {
            url: url.clone(),
            timeout: self.timeout,
        };
        let (status, content_type, body) = self.runtime.block_on(async {
            tokio::time::timeout_at(deadline, self.open(base, uri, &url))
                .await
                .map_err(|_| timeout())?
        })?;
        let mut reader = BodyReader {
            runtime: &self.runtime,
            body,
            chunk: Bytes::new(),
            deadline,
            read: 0,
            max_bytes,
            failure: None,
        };
        if status != StatusCode::OK && !also_read.contains(&status) {
            // The start of the body explains the status; a failed read keeps what came.
            let mut start = Vec::new();
            let _ = (&mut reader)
                .take(STATUS_BODY_BYTES)
                .read_to_end(&mut start);
            let start = clean_message(String::from_utf8_lossy(&start).trim());
            let detail = if start.is_empty() {
                start
            } else {
                format!(": {start}")
            };
            return Err(ClientError::Status {
                url,
                status,
                detail,
            });
        }
        let result = read(
            &content_type,
            &url,
            &mut io::BufReader::with_capacity(64 << 10, &mut reader),
        );
        // A failed read of the body explains a decoding error better than the decoder does.
        match reader.failure.take() {
            Some(BodyFailure::Timeout) => Err(timeout()),
            Some(BodyFailure::TooLarge) => Err(ClientError::Body {
                url,
                reason: format!("more than {max_bytes} bytes"),
            }),
            Some(BodyFailure::Http(reason)) => Err(ClientError::Body { url, reason }),
            None => result,
        }
    }
}

/// The URL shown in messages and the URI requested, for `path` plus an encoded `query`.
fn request_target(
    base: &BaseUrl,
    path: &str,
    query: Option<&str>,
) -> Result<(String, Uri), ClientError> {
    let url = match query {
        Some(q) => base.join(&format!("{path}?{q}")),
        None => base.join(path),
    };
    match base.uri(path, query) {
        Ok(uri) => Ok((url, uri)),
        Err(source) => Err(ClientError::Request { url, source }),
    }
}

/// Why a streamed body stopped early.
enum BodyFailure {
    Timeout,
    TooLarge,
    Http(String),
}

/// A response body read as `std::io::Read`, one chunk at a time on the client's runtime, until
/// the request's deadline.
struct BodyReader<'c> {
    runtime: &'c tokio::runtime::Runtime,
    body: Incoming,
    chunk: Bytes,
    deadline: tokio::time::Instant,
    read: u64,
    max_bytes: u64,
    failure: Option<BodyFailure>,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.failure.is_some() {
                return Err(io::Error::other("the answer's body failed"));
            }
            let (body, deadline) = (&mut self.body, self.deadline);
            let frame = self
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline, body.frame()).await });
            match frame {
                Err(_) => self.failure = Some(BodyFailure::Timeout),
                Ok(None) => return Ok(0),
                Ok(Some(Err(e))) => {
                    self.failure = Some(BodyFailure::Http(clean_message(&e.to_string())))
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.read += data.len() as u64;
                        if self.read > self.max_bytes {
                            self.failure = Some(BodyFailure::TooLarge);
                        } else {
                            self.chunk = data;
                        }
                    }
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// The causes of `error`, itself first.
fn causes<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// A rustls error anywhere in the chain. tokio-rustls wraps it in an `io::Error`, which
/// hyper-rustls wraps in another; `io::Error::source()` skips the wrapped error, so look inside.
fn tls_cause(error: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    causes(error).find_map(|e| {
        let mut current: &(dyn StdError + 'static) = e;
        loop {
            if let Some(tls) = current.downcast_ref::<rustls::Error>() {
                return Some(tls.clone());
            }
            let inner = current.downcast_ref::<std::io::Error>()?.get_ref()?;
            current = inner;
        }
    })
}

/// Name a failed request by what failed: TLS, the connection, or HTTP itself.
fn classify(base: &BaseUrl, url: &str, error: hyper_util::client::legacy::Error) -> ClientError {
    if let Some(source) = tls_cause(&error) {
        return ClientError::Tls {
            authority: base.host_port(),
            source,
        };
    }
    // The top-level message ("client error (Connect)") says little; the innermost cause says why.
    let detail = causes(&error)
        .last()
        .map(|cause| clean_message(&cause.to_string()))
        .unwrap_or_default();
    if error.is_connect() {
        ClientError::Connect {
            authority: base.host_port(),
            detail,
            source: error,
        }
    } else {
        ClientError::Http {
            url: url.to_string(),
            detail,
            source: error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::options::RemoteArgs;

    fn client() -> Client {
        let options = RemoteArgs::default()
            .resolve(Duration::from_secs(2), None)
            .unwrap();
        Client::new(&options).unwrap()
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port() // bound, then closed: nothing listens there
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        let base = BaseUrl::parse(&format!("127.0.0.1:{}", closed_port())).unwrap();
        let err = client().get(&base, "/metrics", None).err().unwrap();
        let text = err.to_string();
        assert_eq!(err.kind(), "connect", "{text}");
        assert!(text.starts_with("cannot connect to 127.0.0.1:"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }

    /// One canned HTTP answer on a loopback port; the request it got comes back on join.
    fn serve_once(answer: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (port, handle)
    }

    #[test]
    fn redirects_are_reported_not_followed() {
        let (port, server) = serve_once(
            "HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/\r\nContent-Length: 0\r\n\r\n",
        );
        let base = BaseUrl::parse(&format!("127.0.0.1:{port}")).unwrap();
        let err = client().get(&base, "/metrics", None).err().unwrap();
        assert_eq!(err.kind(), "redirect");
        let text = err.to_string();
        assert!(
            text.contains("302 Found redirects to http://elsewhere.example/"),
            "{text}"
        );
        server.join().unwrap();
    }

    #[test]
    fn the_authorization_header_is_sent_and_401_is_explained() {
        let (port, server) =
            serve_once("HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\n\r\nUnauthorized\n");
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let options = RemoteArgs {
            bearer_token_file: Some(token),
            ..RemoteArgs::default()
        }
        .resolve(Duration::from_secs(2), None)
        .unwrap();
        let base = BaseUrl::parse(&format!("127.0.0.1:{port}")).unwrap();
        let err = Client::new(&options)
            .unwrap()
            .get(&base, "/api/v1/query", Some("query=up"))
            .err()
            .unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /api/v1/query?query=up HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer t0ken\r\n"),
            "{request}"
        );
        let text = err.to_string();
        assert!(
            text.contains("HTTP 401 Unauthorized: Unauthorized"),
            "{text}"
        );
        assert!(text.contains("--bearer-token-file"), "{text}");
    }
}
