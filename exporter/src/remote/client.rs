//! HTTP GET, read only, over http:// or https:// (hyper-util's pooled client with hyper-rustls on
//! a small single-threaded tokio runtime), bounded by a timeout and a body size limit, with the
//! configured `Authorization` header. Redirects are errors, never followed. Knows no metric names.

use super::endpoint::BaseUrl;
use super::options::ClientOptions;
use super::series::clean;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as StdError;
use std::time::Duration;

/// Larger answers are refused: a 1,000-pod exposition is about 2 MiB.
pub const MAX_BODY_BYTES: usize = 64 << 20;

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
    pub fn kind(&self) -> &'static str {
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
pub struct Answer {
    pub url: String,
    pub content_type: String,
    pub body: Bytes,
}

type Https = HttpsConnector<HttpConnector>;

/// A GET client with its own single-threaded runtime and connection pool; one per thread that
/// fetches (`top` refreshes reuse the connection and its TLS session).
pub struct Client {
    runtime: tokio::runtime::Runtime,
    http: hyper_util::client::legacy::Client<Https, Empty<Bytes>>,
    timeout: Duration,
    authorization: Option<HeaderValue>,
}

impl Client {
    pub fn new(options: &ClientOptions) -> Result<Client, ClientError> {
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

    /// GET `path` plus an encoded `query` under `base`. Any status but 200 is an error carrying
    /// the start of the body; a redirect is an error naming its target.
    pub fn get(
        &self,
        base: &BaseUrl,
        path: &str,
        query: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let url = match query {
            Some(q) => base.join(&format!("{path}?{q}")),
            None => base.join(path),
        };
        let uri = base
            .uri(path, query)
            .map_err(|source| ClientError::Request {
                url: url.clone(),
                source,
            })?;
        let work = self.send(base, uri, url.clone());
        self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| ClientError::Timeout {
                    url,
                    timeout: self.timeout,
                })?
        })
    }

    async fn send(&self, base: &BaseUrl, uri: Uri, url: String) -> Result<Answer, ClientError> {
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
                    url: url.clone(),
                    source,
                })?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| classify(base, &url, e))?;
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
                url,
                status,
            });
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Body {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        if status != StatusCode::OK {
            let start = String::from_utf8_lossy(&body[..body.len().min(300)]);
            let start = clean(start.trim());
            return Err(ClientError::Status {
                url,
                status,
                detail: if start.is_empty() {
                    String::new()
                } else {
                    format!(": {start}")
                },
            });
        }
        Ok(Answer {
            url,
            content_type,
            body,
        })
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
        .map(ToString::to_string)
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
