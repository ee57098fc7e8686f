//! `kepler-rs top --once` and `kepler-rs report` reaching their sources the way a real cluster
//! serves them: HTTPS with a private CA (refused without --ca-file), basic auth (password from a
//! file or the environment; a wrong one is a clear 401) and bearer tokens. A TLS proxy made in the
//! test stands in front of a real exporter and a real Prometheus (Debian's package).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod tls_proxy;
mod top_support;

use common::prometheus::Prometheus;
use common::*;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tls_proxy::{secret_file, Auth, TlsProxy};

const PASSWORD: &str = "correct horse: battery";
const TOKEN: &str = "kepler-rs.test-token_42";

fn kepler(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .args(args)
        .env_remove("KEPLER_RS_BASIC_AUTH_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Exit 1 (2 with `code`), one line on stderr that names `what`.
#[track_caller]
fn assert_fails(out: &Output, command: &str, code: i32, what: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        err.starts_with(&format!("kepler-rs {command}: error: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    for w in what {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

/// The node name in `top --once --output json`.
fn json_node(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nodes"][0]["name"].as_str().unwrap_or("").to_string()
}

fn estimate_exporter(node: &str) -> (Exporter, tempfile::TempDir) {
    let sys = top_support::sysfs_with_host_cgroups();
    let mut e = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "500ms",
        "--node-name",
        node,
    ]);
    e.wait_ready(Duration::from_secs(20));
    (e, sys)
}

/// A basic-auth proxy and a bearer-token proxy in front of `upstream`, each with its own CA.
fn proxies(upstream: u16) -> (TlsProxy, TlsProxy) {
    let basic = Auth::Basic {
        user: "kepler".into(),
        password: PASSWORD.into(),
    };
    (
        TlsProxy::start(upstream, basic),
        TlsProxy::start(upstream, Auth::Bearer(TOKEN.into())),
    )
}

#[test]
fn top_once_over_https_with_basic_auth_and_a_bearer_token() {
    let (exporter, _sys) = estimate_exporter("https-node");
    let (basic, bearer) = proxies(exporter.port);
    let dir = tempfile::tempdir().unwrap();
    let files = [
        secret_file(dir.path(), "password", &format!("{PASSWORD}\n")),
        secret_file(dir.path(), "wrong", "not the password\n"),
        secret_file(dir.path(), "token", &format!("{TOKEN}\n")),
        secret_file(dir.path(), "wrong-token", "nope\n"),
        basic.ca_file(),
        bearer.ca_file(),
    ];
    let [password, wrong, token, wrong_token, basic_ca, bearer_ca] =
        files.each_ref().map(|p| p.to_str().unwrap());
    let (basic_url, bearer_url) = (basic.url(), bearer.url());
    let top = |url: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["top", "--once", "--output", "json", "--url", url];
        args.extend_from_slice(extra);
        kepler(&args, env)
    };
    let user = |ca, file| {
        [
            "--ca-file",
            ca,
            "--basic-auth-user",
            "kepler",
            "--basic-auth-password-file",
            file,
        ]
    };

    // The right password, from a file or from the environment: the exporter's own reading.
    let out = top(&basic_url, &user(basic_ca, password), &[]);
    assert_eq!(json_node(&out), "https-node");
    let out = top(
        &basic_url,
        &["--ca-file", basic_ca, "--basic-auth-user", "kepler"],
        &[("KEPLER_RS_BASIC_AUTH_PASSWORD", PASSWORD)],
    );
    assert_eq!(json_node(&out), "https-node");
    assert_eq!((basic.forwarded(), basic.refused()), (2, 0));

    // A wrong password and no credentials: 401, said plainly; nothing reached the exporter.
    let out = top(&basic_url, &user(basic_ca, wrong), &[]);
    assert_fails(
        &out,
        "top",
        1,
        &["HTTP 401 Unauthorized", "--basic-auth-user"],
    );
    let out = top(&basic_url, &["--ca-file", basic_ca], &[]);
    assert_fails(&out, "top", 1, &["HTTP 401"]);
    assert_eq!((basic.forwarded(), basic.refused()), (2, 2));

    // A certificate from a CA the client does not know is refused before any credentials are
    // sent, with the system roots alone or with another CA added.
    let no_ca = &user(basic_ca, password)[2..];
    for extra in [no_ca, &user(bearer_ca, password)] {
        let out = top(&basic_url, extra, &[]);
        assert_fails(
            &out,
            "top",
            1,
            &[
                &format!("TLS handshake with 127.0.0.1:{} failed", basic.port),
                "UnknownIssuer",
                "--ca-file",
            ],
        );
    }
    assert_eq!((basic.forwarded(), basic.refused()), (2, 2));

    // Bearer tokens.
    let bearer_with = |file| ["--ca-file", bearer_ca, "--bearer-token-file", file];
    let out = top(&bearer_url, &bearer_with(token), &[]);
    assert_eq!(json_node(&out), "https-node");
    let out = top(&bearer_url, &bearer_with(wrong_token), &[]);
    assert_fails(&out, "top", 1, &["HTTP 401", "--bearer-token-file"]);
    assert_eq!((bearer.forwarded(), bearer.refused()), (1, 1));

    // A redirect is reported, not followed (credentials never travel to another place).
    let out = top(&format!("{bearer_url}/moved"), &bearer_with(token), &[]);
    assert_fails(&out, "top", 1, &["302 Found redirects to /elsewhere"]);

    // Setup errors are exit 2: no password, a missing file, a password on the command line.
    let out = top(&basic_url, &["--basic-auth-user", "kepler"], &[]);
    assert_fails(&out, "top", 2, &["KEPLER_RS_BASIC_AUTH_PASSWORD"]);
    let missing = dir.path().join("missing");
    let out = top(
        &basic_url,
        &["--bearer-token-file", missing.to_str().unwrap()],
        &[],
    );
    assert_fails(&out, "top", 2, &["--bearer-token-file", "missing"]);
    let out = top(&basic_url, &["--ca-file", missing.to_str().unwrap()], &[]);
    assert_fails(&out, "top", 2, &["--ca-file"]);
    let out = top(
        &basic_url,
        &[
            "--basic-auth-user",
            "kepler",
            "--basic-auth-password",
            PASSWORD,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains(PASSWORD), "{}", stderr(&out));
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `kepler-rs report --format csv` over the window [from, to].
fn report_csv(url: &str, window: &[String; 2], extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "report",
        "--prometheus",
        url,
        "--from",
        &window[0],
        "--to",
        &window[1],
        "--format",
        "csv",
    ];
    args.extend_from_slice(extra);
    kepler(&args, env)
}

#[test]
fn report_and_top_read_prometheus_over_https_with_auth() {
    const TEST: &str = "report_and_top_read_prometheus_over_https_with_auth";
    if !Prometheus::installed() {
        skip(
            TEST,
            "prometheus not installed (apt-get install prometheus)",
        );
        return;
    }
    let (exporter, _sys) = estimate_exporter("prom-https-node");
    let prom = Prometheus::start(&[exporter.port]);
    let (basic, bearer) = proxies(prom.port);
    let dir = tempfile::tempdir().unwrap();
    let password = secret_file(dir.path(), "password", PASSWORD);
    let token = secret_file(dir.path(), "token", TOKEN);
    let (basic_ca, bearer_ca) = (basic.ca_file(), bearer.ca_file());
    let (basic_ca, bearer_ca) = (basic_ca.to_str().unwrap(), bearer_ca.to_str().unwrap());
    let (password, token) = (password.to_str().unwrap(), token.to_str().unwrap());

    // Wait for Prometheus to hold some node energy: the plain-HTTP report says > 0 kWh.
    let from = unix_now();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (direct, window) = loop {
        std::thread::sleep(Duration::from_secs(2));
        // The window ends a little in the past, so every sample in it has been ingested.
        let to = unix_now() - 2.0;
        let window = [format!("{from:.3}"), format!("{to:.3}")];
        let out = report_csv(&prom.url(), &window, &[], &[]);
        let csv = stdout(&out);
        let node_kwh: f64 = csv
            .lines()
            .find(|l| l.starts_with("nodes,"))
            .and_then(|l| l.split(',').nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if out.status.success() && node_kwh > 0.0 && to - from > 5.0 {
            break (csv, window);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus has no node energy: {csv}{}",
            stderr(&out)
        );
    };
    let report =
        |url: &str, extra: &[&str], env: &[(&str, &str)]| report_csv(url, &window, extra, env);

    // Over HTTPS with either kind of credentials: the same report, to the byte.
    let basic_url = basic.url();
    let basic_args = [
        "--ca-file",
        basic_ca,
        "--basic-auth-user",
        "kepler",
        "--basic-auth-password-file",
        password,
    ];
    let out = report(&basic.url(), &basic_args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), direct);
    let out = report(
        &bearer.url(),
        &["--ca-file", bearer_ca, "--bearer-token-file", token],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), direct);
    let out = report(
        &basic.url(),
        &["--ca-file", basic_ca, "--basic-auth-user", "kepler"],
        &[("KEPLER_RS_BASIC_AUTH_PASSWORD", PASSWORD)],
    );
    assert_eq!(stdout(&out), direct, "{}", stderr(&out));

    // Wrong password, unknown CA.
    let out = report(
        &basic.url(),
        &["--ca-file", basic_ca, "--basic-auth-user", "kepler"],
        &[("KEPLER_RS_BASIC_AUTH_PASSWORD", "wrong")],
    );
    assert_fails(
        &out,
        "report",
        1,
        &["HTTP 401 Unauthorized", "--basic-auth-user"],
    );
    let out = report(&basic.url(), &basic_args[2..], &[]);
    assert_fails(
        &out,
        "report",
        1,
        &["TLS handshake", "UnknownIssuer", "--ca-file"],
    );

    // top --prometheus through the same proxy: the exporter's node, read from Prometheus.
    let mut args = vec![
        "top",
        "--once",
        "--output",
        "json",
        "--prometheus",
        &basic_url,
    ];
    args.extend_from_slice(&basic_args);
    let out = kepler(&args, &[]);
    assert_eq!(json_node(&out), "prom-https-node");
}
