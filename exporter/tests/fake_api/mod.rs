//! A local HTTPS server that speaks enough of the Kubernetes list/watch protocol for pods to drive the
//! real kube client: list, watch with replay from a resourceVersion, bookmarks, 410 Gone, connections
//! cut in the middle of an event, and outages. TLS uses a CA made at test time (rcgen) that the
//! kubeconfig it writes trusts; the client verifies the server as it would a real API server.
//! It refuses any pod request without the node's field selector, so a cluster-wide list fails tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

#[path = "../test_tls/mod.rs"]
mod test_tls;
use test_tls::{TestCa, TlsServer};

pub const TOKEN: &str = "kepler-rs-test-token";

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub authorization: Option<String>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }
    pub fn is_list(&self) -> bool {
        self.path == "/api/v1/pods" && !self.is_watch()
    }
}

enum WatchMsg {
    Event(String),
    /// End the response cleanly (after a 410 event, as the API server does).
    End,
    /// Write half of an event, then drop the connection.
    Cut,
}

struct State {
    pods: BTreeMap<String, Value>,
    rv: u64,
    /// Events by resourceVersion, replayed to a watch that resumes from an older version.
    history: Vec<(u64, String)>,
    /// A watch from a version older than this gets 410 Gone.
    oldest_rv: u64,
    watches: Vec<mpsc::UnboundedSender<WatchMsg>>,
    down: bool,
    requests: Vec<Request>,
}

struct Shared {
    node: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running server; stops when dropped.
pub struct FakeApi {
    pub port: u16,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    /// Dropped last: the watches are cut first.
    server: TlsServer,
}

impl FakeApi {
    /// Serve pods of `node` on 127.0.0.1 with a fresh CA; writes `kubeconfig` in a temp dir.
    pub fn start(node: &str) -> FakeApi {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("kepler-rs test CA");
        ca.write_ca(&dir.path().join("ca.crt"));
        let shared = Arc::new(Shared {
            node: node.to_string(),
            state: Mutex::new(State {
                pods: BTreeMap::new(),
                rv: 1,
                history: Vec::new(),
                oldest_rv: 1,
                watches: Vec::new(),
                down: false,
                requests: Vec::new(),
            }),
        });
        let (admit, serve) = (shared.clone(), shared.clone());
        let server = TlsServer::start(
            ca.server_config(),
            // Down: the client sees the connection close, as with an unreachable server.
            move || !admit.lock().down,
            move |tls| serve_connection(tls, serve.clone()),
        );
        let port = server.port;
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: exporter\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: exporter\ncurrent-context: fake\n",
                ca = dir.path().join("ca.crt").display()
            ),
        )
        .unwrap();
        FakeApi {
            port,
            dir,
            shared,
            server,
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Replace the pods with the items of a recorded `PodList`; its resourceVersion becomes current.
    pub fn load_list(&self, list: &Value) {
        let mut s = self.shared.lock();
        s.pods.clear();
        for pod in list["items"].as_array().expect("items") {
            s.pods.insert(uid_of(pod), pod.clone());
        }
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        s.rv = rv;
        s.oldest_rv = rv;
        s.history.clear();
    }

    /// Send one recorded watch event (`{"type": ..., "object": ...}`) to open watches, updating the
    /// pods and keeping it for replay.
    pub fn send(&self, event: &Value) {
        let mut s = self.shared.lock();
        let kind = event["type"].as_str().expect("type").to_string();
        let mut object = event["object"].clone();
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > s.rv)
            .unwrap_or(s.rv + 1);
        s.rv = rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        match kind.as_str() {
            "ADDED" | "MODIFIED" => {
                s.pods.insert(uid_of(&object), object.clone());
            }
            "DELETED" => {
                s.pods.remove(&uid_of(&object));
            }
            _ => {}
        }
        let line = json!({ "type": kind, "object": object }).to_string();
        s.history.push((rv, line.clone()));
        s.watches
            .retain(|w| w.send(WatchMsg::Event(line.clone())).is_ok());
    }

    /// Add or update a pod (ADDED or MODIFIED).
    pub fn apply(&self, pod: Value) {
        let kind = if self.shared.lock().pods.contains_key(&uid_of(&pod)) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.send(&json!({ "type": kind, "object": pod }));
    }

    /// A bookmark with a new resourceVersion to open watches; returns that version.
    pub fn bookmark(&self) -> u64 {
        let mut s = self.shared.lock();
        s.rv += 1;
        let line = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"resourceVersion": s.rv.to_string(), "annotations": {}}}})
        .to_string();
        s.watches
            .retain(|w| w.send(WatchMsg::Event(line.clone())).is_ok());
        s.rv
    }

    /// Compact the history: open watches get a 410 Gone event and end, and any watch that resumes
    /// from an older version is refused with 410, so the client must list again.
    pub fn expire_history(&self) {
        let mut s = self.shared.lock();
        s.rv += 1;
        s.oldest_rv = s.rv;
        s.history.clear();
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version"}})
        .to_string();
        for w in s.watches.drain(..) {
            let _ = w.send(WatchMsg::Event(gone.clone()));
            let _ = w.send(WatchMsg::End);
        }
    }

    /// Cut every open watch in the middle of an event.
    pub fn cut_watches(&self) {
        for w in self.shared.lock().watches.drain(..) {
            let _ = w.send(WatchMsg::Cut);
        }
    }

    /// An outage: open watches are cut and new connections closed at once, until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
        if down {
            self.cut_watches();
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// Open watch connections.
    pub fn open_watches(&self) -> usize {
        let mut s = self.shared.lock();
        s.watches.retain(|w| !w.is_closed());
        s.watches.len()
    }

    /// Wait until `cond` holds for the requests seen (panics after `timeout`).
    pub fn wait_requests(&self, timeout: Duration, what: &str, cond: impl Fn(&[Request]) -> bool) {
        let start = Instant::now();
        while !cond(&self.requests()) {
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.cut_watches();
    }
}

fn uid_of(pod: &Value) -> String {
    pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_target(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_string(), query)
}

fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
    .to_string()
}

async fn write_response<W: AsyncWriteExt + Unpin>(w: &mut W, code: u16, body: &str) -> bool {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await.is_ok()
        && w.write_all(body.as_bytes()).await.is_ok()
        && w.flush().await.is_ok()
}

async fn write_chunk<W: AsyncWriteExt + Unpin>(w: &mut W, line: &str) -> bool {
    let data = format!("{line}\n");
    let chunk = format!("{:x}\r\n{data}\r\n", data.len());
    w.write_all(chunk.as_bytes()).await.is_ok() && w.flush().await.is_ok()
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut authorization = None;
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if r.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "authorization" => authorization = Some(v.trim().to_string()),
                    "content-length" => content_length = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length];
            if r.read_exact(&mut body).await.is_err() {
                return;
            }
        }
        let (path, query) = parse_target(&target);
        let request = Request {
            path: path.clone(),
            query: query.clone(),
            authorization: authorization.clone(),
        };
        shared.lock().requests.push(request.clone());

        if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            if !write_response(&mut w, 401, &status(401, "Unauthorized", "Unauthorized")).await {
                return;
            }
            continue;
        }
        if method != "GET" || path != "/api/v1/pods" {
            if !write_response(&mut w, 404, &status(404, "NotFound", "not served here")).await {
                return;
            }
            continue;
        }
        let selector = format!("spec.nodeName={}", shared.node);
        if query.get("fieldSelector") != Some(&selector) {
            let msg = "the fake API server only serves this node's pods (fieldSelector)";
            if !write_response(&mut w, 400, &status(400, "BadRequest", msg)).await {
                return;
            }
            continue;
        }
        let keep_alive = if request.is_watch() {
            serve_watch(&mut w, &shared, &query).await
        } else {
            let body = {
                let s = shared.lock();
                json!({"apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": s.rv.to_string()},
                    "items": s.pods.values().collect::<Vec<_>>()})
                .to_string()
            };
            write_response(&mut w, 200, &body).await
        };
        if !keep_alive {
            return;
        }
    }
}

/// Stream a watch; returns whether the connection may be reused.
async fn serve_watch<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    shared: &Shared,
    query: &BTreeMap<String, String>,
) -> bool {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let opened = {
        let mut s = shared.lock();
        if from < s.oldest_rv {
            None
        } else {
            let replay: Vec<String> = s
                .history
                .iter()
                .filter(|(rv, _)| *rv > from)
                .map(|(_, line)| line.clone())
                .collect();
            let (tx, rx) = mpsc::unbounded_channel();
            s.watches.push(tx);
            Some((replay, rx))
        }
    };
    let Some((replay, mut rx)) = opened else {
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
            "message": format!("too old resource version: {from}")}})
        .to_string();
        return w.write_all(head.as_bytes()).await.is_ok()
            && write_chunk(w, &gone).await
            && w.write_all(b"0\r\n\r\n").await.is_ok()
            && w.flush().await.is_ok();
    };
    if w.write_all(head.as_bytes()).await.is_err() || w.flush().await.is_err() {
        return false;
    }
    for line in replay {
        if !write_chunk(w, &line).await {
            return false;
        }
    }
    loop {
        match rx.recv().await {
            Some(WatchMsg::Event(line)) => {
                if !write_chunk(w, &line).await {
                    return false;
                }
            }
            Some(WatchMsg::End) => {
                return w.write_all(b"0\r\n\r\n").await.is_ok() && w.flush().await.is_ok();
            }
            Some(WatchMsg::Cut) | None => {
                // Half an event: the chunk announces more bytes than ever arrive.
                let partial = r#"{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"#;
                let _ = w
                    .write_all(format!("{:x}\r\n{partial}", partial.len() * 2).as_bytes())
                    .await;
                let _ = w.flush().await;
                let _ = w.shutdown().await;
                return false;
            }
        }
    }
}
