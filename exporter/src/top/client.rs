//! HTTP, read only: GET an exporter's `/metrics` or a Prometheus server's instant-query API
//! (hyper's HTTP/1 client on a small tokio runtime, bounded by a timeout and a body size limit).
//! `top` and `report` reach their sources only through here; nothing here touches sysfs.

use super::exposition::{self, ExpositionError, Sample};
use super::model::{ModelError, Reading};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;

/// Larger answers are refused: a 1,000-pod exposition is about 2 MiB.
pub const MAX_BODY_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: not an http:// URL ({reason})")]
    BadUrl { url: String, reason: String },
    #[error("cannot start the HTTP runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: HTTP error: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("{url}: the answer was cut off or too large: {reason}")]
    Body { url: String, reason: String },
    #[error("{url}: HTTP {status}{detail}")]
    Status {
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{url}: {source}")]
    Exposition {
        url: String,
        source: ExpositionError,
    },
    #[error("{url}: {source}")]
    NotAnExporter { url: String, source: ModelError },
    #[error("{url}: not a Prometheus API answer: {reason}")]
    NotPrometheus { url: String, reason: String },
    #[error("{url}: Prometheus refused the query ({kind}): {message}")]
    Query {
        url: String,
        kind: String,
        message: String,
    },
}

/// A GET client with its own single-threaded runtime; one per thread that fetches.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

/// A parsed base URL (`http://host:port[/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    authority: String,
    host: String,
    port: u16,
    path: String,
}

impl BaseUrl {
    /// `node:28282` and `http://node:28282/` are both fine; https is refused (no TLS here).
    pub fn parse(url: &str) -> Result<BaseUrl, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let full = if url.contains("://") {
            Cow::Borrowed(url)
        } else {
            Cow::Owned(format!("http://{url}"))
        };
        let uri: Uri = full
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad(
                "https is not supported; reach the server over http (e.g. kubectl port-forward)",
            )),
            _ => return Err(bad("the scheme must be http")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(BaseUrl {
            authority: format!("{host}:{port}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The URL of `path` under this base (`path` starts with `/`).
    pub fn join(&self, path_and_query: &str) -> String {
        format!("http://{}{}{}", self.authority, self.path, path_and_query)
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// What an answer said, with the body.
pub struct Answer {
    pub content_type: String,
    pub body: Bytes,
}

impl Client {
    pub fn new(timeout: Duration) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(Client { runtime, timeout })
    }

    /// GET `path_and_query` under `base`. Any status but 200 is an error carrying the body's start.
    pub fn get(&self, base: &BaseUrl, path_and_query: &str) -> Result<Answer, ClientError> {
        let url = base.join(path_and_query);
        let work = get(base, &url, path_and_query);
        self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| ClientError::Timeout {
                    url: url.clone(),
                    timeout: self.timeout,
                })?
        })
    }

    /// Fetch and parse an exporter's exposition.
    pub fn exporter_reading(&self, base: &BaseUrl) -> Result<Reading, ClientError> {
        let path = if base.path().is_empty() {
            "/metrics"
        } else {
            ""
        };
        let url = base.join(path);
        let answer = self.get(base, path)?;
        // An exposition must be UTF-8; stray bytes are shown as U+FFFD rather than refused.
        let text = String::from_utf8_lossy(&answer.body);
        let samples = exposition::parse(&text).map_err(|source| {
            // HTML, "ok", JSON...: say "not an exporter" rather than quote a syntax error.
            if answer.content_type.starts_with("text/html") || !text.contains("kepler_") {
                ClientError::NotAnExporter {
                    url: url.clone(),
                    source: ModelError::NotAnExporter { samples: 0 },
                }
            } else {
                ClientError::Exposition {
                    url: url.clone(),
                    source,
                }
            }
        })?;
        Reading::from_samples(&samples).map_err(|source| ClientError::NotAnExporter { url, source })
    }

    /// An instant query; `time` is Unix seconds (None: now).
    pub fn prometheus_query(
        &self,
        base: &BaseUrl,
        promql: &str,
        time: Option<f64>,
    ) -> Result<Vec<PromSample>, ClientError> {
        let mut path = format!("/api/v1/query?query={}", percent_encode(promql));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let url = base.join(&path);
        let not_prometheus = |reason: String| ClientError::NotPrometheus {
            url: url.clone(),
            reason,
        };
        let answer = match self.get(base, &path) {
            // Prometheus answers a bad query with 400 and a JSON error: report its message.
            Err(ClientError::Status { status, detail, .. })
                if status == StatusCode::BAD_REQUEST
                    || status == StatusCode::UNPROCESSABLE_ENTITY =>
            {
                Answer {
                    content_type: "application/json".into(),
                    body: Bytes::from(detail.trim_start_matches(": ").to_string()),
                }
            }
            other => other?,
        };
        let parsed: ApiAnswer =
            serde_json::from_slice(&answer.body).map_err(|e| not_prometheus(format!("{e}")))?;
        if parsed.status != "success" {
            return Err(ClientError::Query {
                url: url.clone(),
                kind: parsed.error_type.unwrap_or_default(),
                message: parsed.error.unwrap_or_default(),
            });
        }
        let data = parsed
            .data
            .ok_or_else(|| not_prometheus("no data".into()))?;
        if data.result_type != "vector" {
            return Err(not_prometheus(format!(
                "expected a vector, got {}",
                data.result_type
            )));
        }
        data.result
            .into_iter()
            .map(|r| {
                let value = r.value.1.parse::<f64>().map_err(|_| {
                    not_prometheus(format!("value {:?} is not a number", r.value.1))
                })?;
                Ok(PromSample {
                    labels: r.metric,
                    timestamp: r.value.0,
                    value,
                })
            })
            .collect()
    }

    /// The same reading as from an exporter, for every node Prometheus scraped: the latest sample
    /// of each kepler series.
    pub fn prometheus_reading(&self, base: &BaseUrl) -> Result<Reading, ClientError> {
        const SERIES: &str = "{__name__=~\"kepler_(node|pod|container|process)_cpu_.*|kepler_pod_info|kepler_exporter_(energy|cpu)_source_info|kepler_exporter_last_tick_timestamp_seconds\"}";
        let found = self.prometheus_query(base, SERIES, None)?;
        let samples: Vec<Sample<'_>> = found.iter().map(PromSample::as_sample).collect();
        Reading::from_samples(&samples).map_err(|source| ClientError::NotAnExporter {
            url: base.join("/api/v1/query"),
            source,
        })
    }
}

async fn get(base: &BaseUrl, url: &str, path_and_query: &str) -> Result<Answer, ClientError> {
    let stream = tokio::net::TcpStream::connect((base.host.as_str(), base.port))
        .await
        .map_err(|source| ClientError::Connect {
            authority: base.authority.clone(),
            source,
        })?;
    let http = |source| ClientError::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(http)?;
    let driver = tokio::spawn(connection);
    let request = Request::get(format!("{}{}", base.path, path_and_query))
        .header(HOST, base.authority.as_str())
        .header(
            ACCEPT,
            "text/plain;version=0.0.4;q=0.9, application/json;q=0.8, */*;q=0.1",
        )
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| ClientError::Body {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .to_bytes();
    driver.abort();
    if status != StatusCode::OK {
        let start = String::from_utf8_lossy(&body[..body.len().min(300)]);
        let start = super::model::clean(start.trim());
        return Err(ClientError::Status {
            url: url.to_string(),
            status,
            detail: if start.is_empty() {
                String::new()
            } else {
                format!(": {start}")
            },
        });
    }
    Ok(Answer { content_type, body })
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    pub labels: std::collections::BTreeMap<String, String>,
    pub timestamp: f64,
    pub value: f64,
}

impl PromSample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    fn as_sample(&self) -> Sample<'_> {
        Sample {
            name: Cow::Borrowed(self.label("__name__")),
            labels: self
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
            value: self.value,
        }
    }
}

#[derive(Deserialize)]
struct ApiAnswer {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Vec<ApiResult>,
}

#[derive(Deserialize)]
struct ApiResult {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("node1:28282").unwrap();
        assert_eq!(b.join("/metrics"), "http://node1:28282/metrics");
        let b = BaseUrl::parse("http://prom.example/prometheus/").unwrap();
        assert_eq!(
            b.join("/api/v1/query"),
            "http://prom.example:80/prometheus/api/v1/query"
        );
        let b = BaseUrl::parse("http://127.0.0.1:9/metrics").unwrap();
        assert_eq!(b.path(), "/metrics");
        for bad in ["https://x:1", "ftp://x", "http://", "http://a b"] {
            assert!(
                matches!(BaseUrl::parse(bad), Err(ClientError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // bound, then closed: nothing listens there
        let client = Client::new(Duration::from_secs(2)).unwrap();
        let base = BaseUrl::parse(&format!("127.0.0.1:{port}")).unwrap();
        let err = client.exporter_reading(&base).err().unwrap();
        let text = err.to_string();
        assert!(text.starts_with("cannot connect to 127.0.0.1:"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }

    #[test]
    fn promql_is_percent_encoded() {
        assert_eq!(
            percent_encode("sum by (a) (x{b=\"c\"})"),
            "sum%20by%20%28a%29%20%28x%7Bb%3D%22c%22%7D%29"
        );
    }
}
