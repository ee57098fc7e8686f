//! HTTP on hyper 1.x: `/metrics` (encodes the latest snapshot, cached per snapshot), `/healthz`,
//! `/readyz` and `/`, over plain TCP or TLS, with basic auth when the web config asks for it
//! (`web`). Never measures: it only reads what the monitor published. Unknown paths get 404, methods
//! other than GET/HEAD 405, request bodies 413, missing or wrong credentials 401 (probes excepted).

use crate::catalog::{self, Family};
use crate::heap;
use crate::metrics::{self, Exposition};
use crate::snapshot::Snapshot;
use crate::web::auth::{parse_basic, AuthOutcome, Authenticator};
use crate::web::conns::{CloseReason, Conn, Limits, Phase, Registry, Tracked, Waiting};
use crate::web::WebState;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
    WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// bcrypt rounds at once: a flood of wrong passwords costs at most this many cores.
const CONCURRENT_BCRYPT: usize = 2;
/// How often timeouts are enforced and the web config's files are checked for changes.
const REAP_EVERY: Duration = Duration::from_millis(250);
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Connections the kernel queues for `accept`, capped by `net.core.somaxconn`. tokio's `bind`
/// asks for 128, which a burst of scrapers overflows while the loop is busy: the kernel then drops
/// their SYNs and each client waits a full second to retransmit.
const LISTEN_BACKLOG: u32 = 1024;

/// What the handlers share: the latest snapshot and the encoding of the last snapshot scraped,
/// the web configuration in force and the connection registry.
pub struct ServerState {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    exposition: Exposition,
    /// Ticks older than this make /healthz fail (the monitor is stuck or dead).
    stale_after: Duration,
    cache: Mutex<Option<(Arc<Snapshot>, Bytes)>>,
    web: Arc<WebState>,
    registry: Arc<Registry>,
    bcrypt: Semaphore,
}

impl ServerState {
    /// Plain HTTP without authentication, default limits.
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        exposition: impl Into<Exposition>,
        interval: Duration,
    ) -> ServerState {
        ServerState {
            snapshots,
            exposition: exposition.into(),
            stale_after: (interval * 10).max(Duration::from_secs(30)),
            cache: Mutex::new(None),
            web: Arc::new(WebState::plain()),
            registry: Registry::new(Limits::default(), Instant::now()),
            bcrypt: Semaphore::new(CONCURRENT_BCRYPT),
        }
    }

    /// Serve with this web configuration (TLS, users, headers) and these bounds.
    pub fn with_web(mut self, web: Arc<WebState>, limits: Limits) -> ServerState {
        self.web = web;
        self.registry = Registry::new(limits, Instant::now());
        self
    }

    fn exposition(&self) -> Result<Bytes, std::fmt::Error> {
        let snapshot = self.snapshots.borrow().clone();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, text)) = cache.as_ref() {
            if Arc::ptr_eq(cached, &snapshot) {
                return Ok(text.clone());
            }
        }
        let text = Bytes::from(metrics::encode(snapshot.clone(), &self.exposition)?);
        *cache = Some((snapshot, text.clone()));
        Ok(text)
    }

    /// Forget the cached exposition if a newer snapshot was published (it holds its snapshot).
    fn drop_stale_exposition(&self) {
        let latest = self.snapshots.borrow().clone();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache
            .as_ref()
            .is_some_and(|(cached, _)| !Arc::ptr_eq(cached, &latest))
        {
            *cache = None;
        }
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

fn response(
    status: StatusCode,
    body: ScrapeBody,
    content_type: &'static str,
) -> Response<ScrapeBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let value = HeaderValue::from_static(content_type);
    r.headers_mut().insert(CONTENT_TYPE, value);
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<ScrapeBody> {
    let body = ScrapeBody::from_static(body);
    response(status, body, "text/plain; charset=utf-8")
}

/// One more of a server counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
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

/// The listening socket for `addr`, with a backlog of `LISTEN_BACKLOG`.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Route one request. Public so tests can drive it without sockets.
pub(crate) fn respond(state: &ServerState, req: &Request<Incoming>) -> Response<ScrapeBody> {
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
                let body = ScrapeBody::new([body, state.server_metrics()]);
                response(StatusCode::OK, body, metrics::CONTENT_TYPE)
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
            let body = ScrapeBody::from_static(INDEX_HTML);
            response(StatusCode::OK, body, "text/html; charset=utf-8")
        }
    };
    if req.method() == Method::HEAD {
        *response.body_mut() = ScrapeBody::new([]);
    }
    response
}

/// A response body of one or more shared chunks (the cached exposition is never copied). When the
/// connection is known, dropping the body (hyper does once it is written) marks it idle again.
pub(crate) struct ScrapeBody {
    chunks: VecDeque<Bytes>,
    conn: Option<Arc<Conn>>,
}

impl ScrapeBody {
    pub(crate) fn new(chunks: impl IntoIterator<Item = Bytes>) -> ScrapeBody {
        ScrapeBody {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            conn: None,
        }
    }

    fn from_static(text: &'static str) -> ScrapeBody {
        ScrapeBody::new([Bytes::from_static(text.as_bytes())])
    }

    fn tracking(mut self, conn: Arc<Conn>) -> ScrapeBody {
        self.conn = Some(conn);
        self
    }
}

impl Drop for ScrapeBody {
    fn drop(&mut self) {
        if let Some(conn) = &self.conn {
            conn.set_phase(Phase::Idle, Instant::now());
        }
    }
}

impl Body for ScrapeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

impl ServerState {
    /// The server's own families, appended to every exposition (a few lines, encoded per scrape).
    fn server_metrics(&self) -> Bytes {
        let stats = &self.registry.stats;
        let mut out = String::with_capacity(1024);
        let mut family = |f: &Family, samples: Vec<(String, u64)>| {
            let (name, help, kind) = (f.name, f.help, f.kind.as_str());
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let unlabelled = |value: u64| vec![(String::new(), value)];
        let load = |counter: &AtomicU64| unlabelled(counter.load(Ordering::Relaxed));
        let open = self.registry.open() as u64;
        family(&catalog::HTTP_CONNECTIONS, unlabelled(open));
        let waiting = self.registry.waiting() as u64;
        family(&catalog::HTTP_CONNECTIONS_WAITING, unlabelled(waiting));
        family(&catalog::HTTP_CONNECTIONS_ACCEPTED, load(&stats.accepted));
        let closed = CloseReason::ALL
            .iter()
            .map(|r| (format!("{{reason=\"{}\"}}", r.as_str()), stats.closed(*r)));
        family(&catalog::HTTP_CONNECTIONS_CLOSED, closed.collect());
        family(&catalog::HTTP_ACCEPT_ERRORS, load(&stats.accept_errors));
        let tls_failures = load(&stats.tls_handshake_failures);
        family(&catalog::HTTP_TLS_HANDSHAKE_FAILURES, tls_failures);
        family(&catalog::HTTP_AUTH_FAILURES, load(&stats.auth_failures));
        if self.web.is_file_based() {
            let reloads = [
                ("success", &self.web.reloads_ok),
                ("failure", &self.web.reloads_failed),
            ]
            .map(|(result, n)| {
                (
                    format!("{{result=\"{result}\"}}"),
                    n.load(Ordering::Relaxed),
                )
            });
            family(&catalog::WEB_CONFIG_RELOADS, reloads.into());
        }
        Bytes::from(out)
    }
}

fn unauthorized() -> Response<ScrapeBody> {
    let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"kepler-rs\", charset=\"UTF-8\""),
    );
    r
}

/// Whether the request carries credentials of a configured user. A cached success costs a hash;
/// anything else costs one bcrypt round on the blocking pool, at most `CONCURRENT_BCRYPT` at once.
async fn authorized(
    state: &ServerState,
    auth: &Arc<Authenticator>,
    req: &Request<Incoming>,
) -> bool {
    let credentials = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| parse_basic(v.as_bytes()));
    if let Some(c) = &credentials {
        if auth.cached(c) == Some(AuthOutcome::Allowed) {
            return true;
        }
    }
    let Ok(_permit) = state.bcrypt.acquire().await else {
        return false;
    };
    let auth = auth.clone();
    let verdict = tokio::task::spawn_blocking(move || auth.verify(credentials.as_ref())).await;
    matches!(verdict, Ok(AuthOutcome::Allowed))
}

/// Authenticate (except the probes), route, add the configured headers.
pub(crate) async fn handle(state: &ServerState, req: Request<Incoming>) -> Response<ScrapeBody> {
    let web = state.web.current();
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    let mut response = match &web.auth {
        Some(auth) if !probe && !authorized(state, auth, &req).await => {
            bump(&state.registry.stats.auth_failures);
            unauthorized()
        }
        _ => respond(state, &req),
    };
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// Whether `head` holds a complete first request: a plain HTTP request head up to its blank line,
/// or a whole TLS record (the ClientHello). Bytes that are neither, and a head of `max` bytes, count
/// as complete too: the HTTP engine or TLS answers them (400, 431, a failed handshake). `searched`
/// is how much of `head` an earlier call already looked at.
fn first_request_complete(head: &[u8], searched: usize, tls: bool, max: usize) -> bool {
    if head.len() >= max {
        return true;
    }
    if tls {
        return match head {
            [0x16, _, _, hi, lo, ..] => {
                head.len() >= 5 + usize::from(u16::from_be_bytes([*hi, *lo]))
            }
            [0x16, ..] => false,
            _ => true,
        };
    }
    let from = searched.saturating_sub(3);
    head[from..].windows(4).any(|w| w == b"\r\n\r\n")
        || head[from..].windows(2).any(|w| w == b"\n\n")
}

/// Read a waiting connection's first request (see `first_request_complete`). `None`: the client
/// closed or failed first.
async fn first_request(
    stream: &tokio::net::TcpStream,
    conn: &Conn,
    tls: bool,
    max: usize,
) -> Option<Bytes> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if stream.readable().await.is_err() {
            return None;
        }
        let want = chunk.len().min(max.saturating_sub(head.len()).max(1));
        match stream.try_read(&mut chunk[..want]) {
            Ok(0) => return None,
            Ok(n) => {
                let searched = head.len();
                head.extend_from_slice(&chunk[..n]);
                conn.received();
                if first_request_complete(&head, searched, tls, max) {
                    return Some(Bytes::from(head));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
    }
}

const OVERLOADED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 24\r\n\r\nbusy; retry in a second\n";

/// Answer 503 on a connection that gets no slot (plain HTTP only: a TLS client cannot read it
/// before a handshake), giving the client at most a second to take it, then close.
async fn refuse(stream: tokio::net::TcpStream, tls: bool) {
    if tls {
        return;
    }
    let write = async {
        let mut sent = 0;
        while sent < OVERLOADED.len() {
            stream.writable().await?;
            match stream.try_write(&OVERLOADED[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Serve one accepted connection: in the waiting room until its first request head is complete,
/// then, once it holds a slot, through the HTTP engine until it ends, the registry closes it or the
/// server shuts down. Slow clients thus never hold a slot, and a complete request is never closed
/// to make room; one that finds no slot within the header-read timeout is answered 503.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    mut waiting: Waiting,
    state: Arc<ServerState>,
    http: hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let conn = waiting.conn.clone();
    let tls = state.web.current().tls.clone();
    let max_head = state.registry.limits().max_header_bytes;
    let head = tokio::select! {
        head = first_request(&stream, &conn, tls.is_some(), max_head) => match head {
            Some(head) => head,
            None => return,
        },
        _ = conn.killed() => return, // sent away from a full waiting room, or header timeout
    };
    waiting.queued(Instant::now());
    let slot = loop {
        match waiting.take_slot(Instant::now()) {
            Ok(slot) => break slot,
            Err(w) => waiting = w,
        }
        tokio::select! {
            // Woken when a slot is freed or a connection goes idle; a connection dribbling a later
            // request becomes evictable with time alone, so look again now and then.
            _ = state.registry.freed(REAP_EVERY) => {}
            _ = conn.killed() => {
                // No slot within the header-read timeout (counted by the registry).
                refuse(stream, tls.is_some()).await;
                return;
            }
        }
    };
    let stream = Tracked::new(head, stream, conn.clone());
    let registry = state.registry.clone();
    let service = {
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let conn = conn.clone();
            async move {
                conn.set_phase(Phase::Busy, Instant::now());
                let response = handle(&state, req).await;
                Ok::<_, std::convert::Infallible>(response.map(|b| b.tracking(conn)))
            }
        })
    };
    let served = async {
        match tls {
            None => watcher
                .watch(http.serve_connection(TokioIo::new(stream), service))
                .await
                .map_err(|e| e.to_string()),
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls_stream) => watcher
                    .watch(http.serve_connection(TokioIo::new(tls_stream), service))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => {
                    bump(&registry.stats.tls_handshake_failures);
                    Err(format!("TLS handshake: {e}"))
                }
            },
        }
    };
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = conn.killed() => tracing::debug!(%peer, "connection closed by the server (limit or timeout)"),
    }
    drop(slot);
}

/// Enforce timeouts and reload the web config when its files change, until the server stops.
async fn housekeeping(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_reload_check = Instant::now();
    let mut shrink = heap::ShrinkWatch::default();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let (_, crowd_left) = state.registry.reap(now);
        if crowd_left {
            // Many connections came and went: give their buffers back to the system.
            heap::trim();
        }
        if shrink.shrank(state.snapshots.borrow().consumers()) {
            // Many pods went: their snapshot, kept by the exposition cache, goes too, then the heap.
            state.drop_stale_exposition();
            heap::trim();
        }
        if now.duration_since(last_reload_check) >= RELOAD_EVERY {
            last_reload_check = now;
            let web = state.web.clone();
            match tokio::task::spawn_blocking(move || web.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!("web config reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(kind = e.kind(), error = %e, "web config reload failed; the previous one stays in force")
                }
                Err(e) => tracing::error!(error = %e, "web config reload task failed"),
            }
        }
    }
}

/// Serve until `shutdown` resolves, then stop accepting and give open connections up to 5 s.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let limits = *state.registry.limits();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes)
        .max_headers(64)
        .header_read_timeout(None); // the registry enforces it, TLS handshake included
    let housekeeper = tokio::spawn(housekeeping(state.clone()));
    tokio::pin!(shutdown);
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                if backoff.take().is_some() {
                    tracing::info!("accepting connections again");
                }
                a
            }
            Err(e) => {
                bump(&state.registry.stats.accept_errors);
                let delay = match backoff {
                    None => {
                        tracing::warn!(error = %e, "accept failed; backing off (logged once until it recovers; measurement goes on)");
                        Duration::from_millis(10)
                    }
                    Some(d) => (d * 2).min(Duration::from_secs(1)),
                };
                backoff = Some(delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = &mut shutdown => break,
                }
            }
        };
        let tls = state.web.current().tls.is_some();
        let _ = stream.set_nodelay(true);
        let Some(waiting) = state.registry.arrive(Instant::now()) else {
            // The waiting room is full of complete requests and fresh connections: say so.
            state.registry.overloaded();
            tokio::spawn(refuse(stream, tls));
            continue;
        };
        waiting
            .conn
            .set_fd(std::os::fd::AsRawFd::as_raw_fd(&stream));
        tokio::spawn(connection(
            stream,
            peer,
            waiting,
            state.clone(),
            http.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    housekeeper.abort();
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(Duration::from_secs(5)) => tracing::warn!("connections still open after 5 s; closing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_request_is_complete_at_its_blank_line_or_its_whole_tls_record() {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(first_request_complete(head, 0, false, 16384));
        assert!(!first_request_complete(
            &head[..head.len() - 1],
            0,
            false,
            16384
        ));
        // The blank line split across reads is still found.
        assert!(first_request_complete(head, head.len() - 2, false, 16384));
        assert!(first_request_complete(
            b"GET / HTTP/1.0\n\n",
            0,
            false,
            16384
        ));
        // Too long without an end: complete, so that the engine answers 431.
        assert!(first_request_complete(&[b'a'; 64], 0, false, 64));
        // TLS: a handshake record of 3 bytes is complete after 5 + 3 bytes.
        let record = [0x16, 3, 1, 0, 3, 1, 2, 3];
        assert!(!first_request_complete(&record[..4], 0, true, 16384));
        assert!(!first_request_complete(&record[..7], 0, true, 16384));
        assert!(first_request_complete(&record, 0, true, 16384));
        // Not TLS on the TLS port: handed over at once (the handshake fails and is counted).
        assert!(first_request_complete(b"GET", 0, true, 16384));
    }

    #[test]
    fn the_503_answer_is_well_formed() {
        let text = std::str::from_utf8(OVERLOADED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
    }
}
