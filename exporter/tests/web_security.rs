//! `--web.config.file` for real: a real Prometheus scrapes over TLS with basic auth, wrong passwords
//! get 401, a required client certificate is enforced in the handshake, a certificate rotated on
//! disk is served without a restart, bad web configs exit 2 with one line, hostile clients are
//! answered or dropped, and slow clients cannot crowd out a scrape. promtool accepts every web
//! config these tests serve with.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod test_tls;

use base64::Engine;
use common::prometheus::Prometheus;
use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA made at test time and what it signed.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

struct Leaf {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca = test_tls::self_signed_ca(name);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    fn leaf(&self, names: &[&str], client: bool) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Write the server's certificate and key as `tls.crt`/`tls.key`, replacing them atomically
    /// (as a Kubernetes Secret volume does).
    fn install_server(&self, leaf: &Leaf) {
        for (name, text) in [("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)] {
            let tmp = self.path(&format!("{name}.new"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(name)).unwrap();
        }
    }
}

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, [42u8; 16])
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

/// `promtool check web-config` (Debian's prometheus package) must accept what the exporter serves.
fn assert_promtool_accepts(test: &str, web_config: &Path) {
    match Command::new("promtool")
        .args(["check", "web-config"])
        .arg(web_config)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool rejects {}: {}{}",
            web_config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => skip(test, "promtool not installed (apt-get install prometheus)"),
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
    server_cert: Option<CertificateDer<'static>>,
}

/// One HTTPS GET with rustls: trusts only `ca`, optionally presents a client certificate and
/// basic-auth credentials.
fn https_get(
    port: u16,
    ca: &CertificateDer<'static>,
    client: Option<&Leaf>,
    path: &str,
    basic: Option<(&str, &str)>,
) -> Result<Reply, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert.clone()], leaf.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = basic
        .map(|(u, p)| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
        .unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .map(|c| c.into_owned());
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {text:?}"))?;
    Ok(Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
        server_cert,
    })
}

/// The values of an instant query.
fn values(prom: &Prometheus, promql: &str) -> Vec<f64> {
    prom.query(promql).into_iter().map(|(_, v)| v).collect()
}

/// Every exporter here: no Kubernetes, no GPU, pods from /proc, a short interval.
const BASE_ARGS: [&str; 7] = [
    "--no-kube",
    "--gpu",
    "off",
    "--cpu-source",
    "procfs",
    "--interval",
    "500ms",
];

/// An exporter serving with `web.yml` in the PKI's directory.
fn exporter_with(pki: &Pki, web_yml: &str, extra: &[&str]) -> Exporter {
    let path = pki.path("web.yml");
    std::fs::write(&path, web_yml).unwrap();
    let mut args = BASE_ARGS.to_vec();
    args.extend(["--web.config.file", path.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Exporter::start(&args)
}

fn wait_https_ready(e: &mut Exporter, ca: &CertificateDer<'static>, client: Option<&Leaf>) {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = e.child.try_wait() {
            panic!("exporter exited with {status}:\n{}", e.stderr());
        }
        if matches!(https_get(e.port, ca, client, "/readyz", None), Ok(r) if r.status == 200) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not ready over https"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_prometheus_scrapes_over_tls_with_basic_auth() {
    const TEST: &str = "real_prometheus_scrapes_over_tls_with_basic_auth";
    let pki = Pki::new("kepler-rs test CA");
    pki.install_server(&pki.leaf(&["127.0.0.1", "localhost"], false));
    let web = format!(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS12\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  prometheus: '{}'\n",
        bcrypt_hash("correct horse")
    );
    let mut e = exporter_with(&pki, &web, &[]);
    assert_promtool_accepts(TEST, &pki.path("web.yml"));
    let ca = pki.ca_der();
    wait_https_ready(&mut e, &ca, None);

    // Probes need no credentials and reveal nothing.
    let health = https_get(e.port, &ca, None, "/healthz", None).unwrap();
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    // No credentials, a wrong password, an unknown user: 401 with a Basic challenge, no metrics.
    for creds in [
        None,
        Some(("prometheus", "wrong")),
        Some(("root", "correct horse")),
    ] {
        let r = https_get(e.port, &ca, None, "/metrics", creds).unwrap();
        assert_eq!(r.status, 401, "{creds:?}");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{}",
            r.head
        );
        assert!(!r.body.contains("kepler_"), "{creds:?} leaked metrics");
    }
    let ok = https_get(
        e.port,
        &ca,
        None,
        "/metrics",
        Some(("prometheus", "correct horse")),
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    let head = ok.head.to_ascii_lowercase();
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    assert!(ok.body.contains("kepler_node_cpu_joules_total"));
    assert_promtool_clean(TEST, &ok.body);
    let failures = common::parse(&ok.body);
    assert_eq!(
        sum(&failures, "kepler_exporter_http_auth_failures_total", &[]),
        3.0
    );
    // Plain HTTP on the TLS port gets no answer.
    assert!(try_http(e.port, "GET", "/metrics", "").is_err());

    // A real Prometheus: https, tls_config with our CA, basic_auth with a password file.
    if !Prometheus::installed() {
        skip(
            TEST,
            "prometheus not installed (apt-get install prometheus)",
        );
        return;
    }
    std::fs::write(pki.path("password"), "correct horse").unwrap();
    let prom = Prometheus::start_with(&format!(
        "  - job_name: kepler-rs\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n      server_name: localhost\n    basic_auth:\n      username: prometheus\n      password_file: {pw}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n  - job_name: wrong-password\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: prometheus\n      password: nope\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        ca = pki.path("ca.crt").display(),
        pw = pki.path("password").display(),
        port = e.port
    ));
    let start = Instant::now();
    loop {
        if prom.ready()
            && values(&prom, "count_over_time(up{job=\"kepler-rs\"}[1m])")
                .first()
                .is_some_and(|n| *n >= 4.0)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus did not scrape 4 times"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        values(&prom, "min_over_time(up{job=\"kepler-rs\"}[1m])"),
        vec![1.0],
        "a TLS + basic-auth scrape failed"
    );
    assert_eq!(
        values(&prom, "max_over_time(up{job=\"wrong-password\"}[1m])"),
        vec![0.0],
        "a wrong password scraped"
    );
    assert_eq!(
        values(
            &prom,
            "count(kepler_node_cpu_joules_total{job=\"kepler-rs\"}) > 0"
        ),
        vec![1.0]
    );
}

#[test]
fn client_certificates_are_required_and_verified() {
    const TEST: &str = "client_certificates_are_required_and_verified";
    let pki = Pki::new("kepler-rs server CA");
    pki.install_server(&pki.leaf(&["127.0.0.1"], false));
    let clients = Pki::new("kepler-rs client CA");
    std::fs::copy(clients.path("ca.crt"), pki.path("client-ca.crt")).unwrap();
    let web = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n  min_version: TLS13\n";
    let mut e = exporter_with(&pki, web, &[]);
    assert_promtool_accepts(TEST, &pki.path("web.yml"));
    let ca = pki.ca_der();
    let prometheus = clients.leaf(&["prometheus"], true);
    wait_https_ready(&mut e, &ca, Some(&prometheus));

    let ok = https_get(e.port, &ca, Some(&prometheus), "/metrics", None).unwrap();
    assert_eq!(ok.status, 200);
    // No client certificate, or one from another CA (here: the server's own CA): the handshake fails.
    let none = https_get(e.port, &ca, None, "/metrics", None);
    assert!(
        none.is_err(),
        "served without a client certificate: {:?}",
        none.map(|r| r.status)
    );
    let stranger = pki.leaf(&["mallory"], true);
    let wrong = https_get(e.port, &ca, Some(&stranger), "/metrics", None);
    assert!(
        wrong.is_err(),
        "served an unknown client CA: {:?}",
        wrong.map(|r| r.status)
    );
    let after = https_get(e.port, &ca, Some(&prometheus), "/metrics", None).unwrap();
    let failures = sum(
        &common::parse(&after.body),
        "kepler_exporter_http_tls_handshake_failures_total",
        &[],
    );
    assert!(failures >= 2.0, "handshake failures counted: {failures}");
}

#[test]
fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    const TEST: &str = "a_certificate_rotated_on_disk_is_served_without_a_restart";
    let pki = Pki::new("kepler-rs rotating CA");
    let first = pki.leaf(&["127.0.0.1"], false);
    pki.install_server(&first);
    let web = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n";
    let mut e = exporter_with(&pki, web, &[]);
    assert_promtool_accepts(TEST, &pki.path("web.yml"));
    let ca = pki.ca_der();
    wait_https_ready(&mut e, &ca, None);
    let served = |e: &Exporter| {
        https_get(e.port, &ca, None, "/healthz", None)
            .unwrap()
            .server_cert
    };
    assert_eq!(served(&e), Some(first.cert.clone()));

    // A broken pair (new certificate, old key) is refused and the old one stays in force.
    std::fs::write(
        pki.path("tls.crt"),
        pki.leaf(&["127.0.0.1"], false).cert_pem,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        served(&e),
        Some(first.cert.clone()),
        "a mismatched pair was loaded"
    );

    let second = pki.leaf(&["127.0.0.1"], false);
    pki.install_server(&second);
    let start = Instant::now();
    while served(&e) != Some(second.cert.clone()) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "rotated certificate not served"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let metrics = https_get(e.port, &ca, None, "/metrics", None).unwrap().body;
    let samples = common::parse(&metrics);
    assert!(
        sum(
            &samples,
            "kepler_exporter_web_config_reloads_total",
            &[("result", "success")]
        ) >= 1.0
    );
    assert!(
        sum(
            &samples,
            "kepler_exporter_web_config_reloads_total",
            &[("result", "failure")]
        ) >= 1.0
    );
    assert!(
        e.child.try_wait().unwrap().is_none(),
        "{TEST}: the exporter restarted or died"
    );
}

#[test]
fn bad_web_configs_exit_2_with_one_line() {
    let pki = Pki::new("kepler-rs bad-config CA");
    pki.install_server(&pki.leaf(&["127.0.0.1"], false));
    let other = pki.leaf(&["127.0.0.1"], false);
    std::fs::write(pki.path("other.key"), &other.key_pem).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  verify: false\n".into(), "unknown field `verify`"),
        ("missing cert file", "tls_server_config:\n  cert_file: missing.crt\n  key_file: tls.key\n".into(), "missing.crt"),
        ("key of another certificate", "tls_server_config:\n  cert_file: tls.crt\n  key_file: other.key\n".into(), "other.key"),
        ("plaintext password", "basic_auth_users:\n  prometheus: hunter2\n".into(), "plaintext passwords are not accepted"),
        ("wrong cost", "basic_auth_users:\n  prometheus: '$2y$03$ZxBmh8Xm2wYj4GKpTJIbUOFfSrMJ1BOFUQW5whm0p9H6Ea/KnpLFq'\n".into(), "outside 4 to 31"),
        ("not yaml", "tls_server_config: [\n".into(), "web.yml"),
    ];
    for (what, text, want) in cases {
        let path = pki.path("web.yml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
            .arg("run")
            .args(BASE_ARGS)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--web.config.file")
            .arg(&path)
            .env("KEPLER_RS_LOG_LEVEL", "off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{what}: not one line: {stderr}"
        );
        assert!(
            stderr.contains("--web.config.file") && stderr.contains(want),
            "{what}: {stderr}"
        );
    }
}

/// Read whatever comes back within the timeout; `None` when the connection was closed silently.
fn raw_exchange(port: u16, bytes: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).to_string())
}

fn status_of(reply: &Option<String>) -> Option<u16> {
    reply.as_ref()?.split(' ').nth(1)?.parse().ok()
}

/// A ready exporter on plain HTTP, without Kubernetes or GPUs.
fn plain_exporter(extra: &[&str]) -> Exporter {
    let mut args = BASE_ARGS.to_vec();
    args.extend_from_slice(extra);
    let mut e = Exporter::start(&args);
    e.wait_ready(Duration::from_secs(20));
    e
}

#[test]
fn hostile_clients_are_answered_or_dropped() {
    let mut e = plain_exporter(&[]);
    let port = e.port;
    // A 100 KB header: 431, never a 100 KB buffer per connection.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    assert_eq!(status_of(&raw_exchange(port, big.as_bytes())), Some(431));
    // A header flood: 500 small headers.
    let flood: String = (0..500).map(|i| format!("X-{i}: v\r\n")).collect();
    let flood = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{flood}\r\n");
    assert!(matches!(
        status_of(&raw_exchange(port, flood.as_bytes())),
        Some(431) | None
    ));
    // Pipelined garbage after a good request: the good one is answered, the garbage gets 400.
    let piped = raw_exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01garbage\r\n\r\n",
    )
    .unwrap();
    assert!(piped.starts_with("HTTP/1.1 200"), "{piped}");
    assert!(piped.contains("HTTP/1.1 400"), "{piped}");
    // HTTP/2 prior knowledge, and a TLS ClientHello, on the HTTP/1 port.
    let h2 = raw_exchange(
        port,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
    );
    assert!(matches!(status_of(&h2), Some(400..=505) | None), "{h2:?}");
    let hello = raw_exchange(
        port,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbagegarbagegarbage",
    );
    assert!(matches!(status_of(&hello), Some(400) | None), "{hello:?}");
    // Clients that close in the middle of a response, many times.
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 16];
        let _ = s.read(&mut first);
        drop(s);
    }
    // Still measuring and serving, and nothing panicked.
    let (status, body) = e.get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("kepler_node_cpu_joules_total"));
    let ticks = sum(&common::parse(&body), "kepler_exporter_ticks_total", &[]);
    std::thread::sleep(Duration::from_millis(1200));
    let later = sum(
        &common::parse(&e.get("/metrics").1),
        "kepler_exporter_ticks_total",
        &[],
    );
    assert!(later > ticks, "the tick loop stalled: {ticks} -> {later}");
    assert!(e.child.try_wait().unwrap().is_none());
    let stderr = {
        let _ = e.terminate(Duration::from_secs(10));
        e.stderr()
    };
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn slow_clients_cannot_crowd_out_a_scrape() {
    // Header timeout far beyond the client's patience: the slow clients stay for the whole test.
    let e = plain_exporter(&[
        "--web.max-connections",
        "16",
        "--web.header-read-timeout",
        "60s",
    ]);
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", e.port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", e.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .expect("the scrape was answered");
    let took = started.elapsed();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let samples = common::parse(reply.split_once("\r\n\r\n").unwrap().1);
    let open = sum(&samples, "kepler_exporter_http_connections", &[]);
    let waiting = sum(&samples, "kepler_exporter_http_connections_waiting", &[]);
    // The slow clients wait without a slot (the waiting room holds 256 for 16 slots); the scrape
    // alone is served.
    assert!(open <= 16.0, "{open} connections open with a limit of 16");
    assert!(open >= 1.0, "the scrape itself holds a slot");
    assert_eq!(waiting, 200.0, "every slow client waits, none holds a slot");
    assert!(took < Duration::from_secs(1), "the scrape took {took:?}");
    drop(slow);
}

#[test]
fn a_full_waiting_room_answers_503_not_a_reset() {
    // 16 slots, so a waiting room of 256: fill it with clients that sent nothing. They are spared
    // for 1 s from their accept, so the newcomer is refused only if the exporter accepted all 257
    // within that second. A loaded machine may accept more slowly; then the oldest silent client
    // is evicted (counted) and the newcomer let in, which is also right, and the attempt is
    // repeated on a fresh exporter.
    for attempt in 1..=3 {
        let e = plain_exporter(&["--web.max-connections", "16"]);
        let silent: Vec<TcpStream> = (0..256)
            .map(|_| TcpStream::connect(("127.0.0.1", e.port)).unwrap())
            .collect();
        let mut s = TcpStream::connect(("127.0.0.1", e.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        if reply.starts_with("HTTP/1.1 503") {
            assert!(reply.contains("Retry-After: 1"), "{reply}");
            // A second later the silent ones may make room: a scrape is answered again.
            assert!(
                closed_a_second_later(&e, "overloaded") >= 1.0,
                "the refusal was not counted"
            );
            drop(silent);
            return;
        }
        assert!(reply.is_empty(), "neither a 503 nor silence: {reply}");
        drop((silent, s));
        assert!(
            closed_a_second_later(&e, "evicted") >= 1.0,
            "attempt {attempt}: the newcomer got no 503, yet no silent client was evicted for it"
        );
        eprintln!("attempt {attempt}: accepting took over the 1 s grace (an eviction); again");
    }
    panic!("three attempts, and the exporter never accepted 257 connections within 1 s");
}

/// Connections closed for `reason`, scraped after the silent clients' 1 s grace has passed.
fn closed_a_second_later(e: &Exporter, reason: &str) -> f64 {
    std::thread::sleep(Duration::from_millis(1200));
    let (status, body) = e.get("/metrics");
    assert_eq!(status, 200);
    sum(
        &common::parse(&body),
        "kepler_exporter_http_connections_closed_total",
        &[("reason", reason)],
    )
}
