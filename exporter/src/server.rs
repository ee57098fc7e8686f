//! HTTP on hyper 1.x: `/metrics` (encodes the latest snapshot, cached per snapshot), `/healthz`,
//! `/readyz` and `/`. Never measures: it only reads what the monitor published.
//! Unknown paths get 404, methods other than GET/HEAD 405, request bodies 413.

use crate::metrics::{self, BuildInfo};
use crate::snapshot::Snapshot;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the handlers share: the latest snapshot and the encoding of the last snapshot scraped.
pub struct ServerState {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    build: BuildInfo,
    /// Ticks older than this make /healthz fail (the monitor is stuck or dead).
    stale_after: Duration,
    cache: Mutex<Option<(Arc<Snapshot>, Bytes)>>,
}

impl ServerState {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        build: BuildInfo,
        interval: Duration,
    ) -> ServerState {
        ServerState {
            snapshots,
            build,
            stale_after: (interval * 10).max(Duration::from_secs(30)),
            cache: Mutex::new(None),
        }
    }

    fn exposition(&self) -> Result<Bytes, std::fmt::Error> {
        let snapshot = self.snapshots.borrow().clone();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, text)) = cache.as_ref() {
            if Arc::ptr_eq(cached, &snapshot) {
                return Ok(text.clone());
            }
        }
        let text = Bytes::from(metrics::encode(snapshot.clone(), &self.build)?);
        *cache = Some((snapshot, text.clone()));
        Ok(text)
    }

    fn healthy(&self) -> bool {
        let snapshot = self.snapshots.borrow();
        if snapshot.health.ticks == 0 {
            return true; // starting
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        // A wall clock that jumps backwards makes the age negative: that is not staleness.
        now - snapshot.health.taken_at_unix_seconds < self.stale_after.as_secs_f64()
    }
}

const INDEX_HTML: &str = "<!doctype html><html><head><title>kepler-rs</title></head><body>\
<h1>kepler-rs</h1><p>Energy of this node's pods, containers and processes.</p><ul>\
<li><a href=\"metrics\">/metrics</a> Prometheus metrics</li>\
<li><a href=\"healthz\">/healthz</a> liveness</li>\
<li><a href=\"readyz\">/readyz</a> readiness (after the first complete interval)</li>\
</ul></body></html>\n";

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn has_body(req: &Request<Incoming>) -> bool {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    declared || req.headers().contains_key(TRANSFER_ENCODING) || req.body().size_hint().lower() > 0
}

/// Route one request. Public so tests can drive it without sockets.
pub fn respond(state: &ServerState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/" | "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if has_body(req) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted\n",
        );
    }
    let mut response = match path {
        "/metrics" => match state.exposition() {
            Ok(body) => {
                let mut r = Response::new(Full::new(body));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                r
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
        },
        "/healthz" if state.healthy() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "measurement loop is stale\n",
        ),
        "/readyz" if state.snapshots.borrow().is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first complete interval\n",
        ),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(INDEX_HTML.as_bytes())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
    };
    if req.method() == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

/// Serve until `shutdown` resolves, then stop accepting and give open connections up to 5 s.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&state, &req)) }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(Duration::from_secs(5)) => tracing::warn!("connections still open after 5 s; closing"),
    }
}
