//! `kepler-rs report` and `top --once` (the real binary) against a small local HTTP server that
//! answers with hostile or huge data (the Prometheus query API, an exposition): what reaches the
//! terminal or a spreadsheet is safe (no control characters, no formulas, messages cut), NaN and
//! infinities print as "n/a" with a warning naming the series, and 100,000 series stream through
//! `report` in bounded memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

/// One canned answer: the status line and the body.
#[derive(Clone)]
struct Canned {
    status: &'static str,
    body: Arc<Vec<u8>>,
}

/// Serves `/api/v1/query`: `answer` picks the answer from the decoded PromQL. Keep-alive, one
/// thread per connection; lives until the test process ends.
fn serve(answer: impl Fn(&str) -> Canned + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || connection(stream, &*answer));
        }
    });
    port
}

fn connection(stream: TcpStream, answer: &dyn Fn(&str) -> Canned) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let target = request_line.split(' ').nth(1).unwrap_or("");
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let promql: String = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let canned = answer(&promql);
        let head = format!(
            "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            canned.status,
            canned.body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&canned.body).is_err() {
            return;
        }
    }
}

fn ok(body: String) -> Canned {
    Canned {
        status: "200 OK",
        body: Arc::new(body.into_bytes()),
    }
}

fn vector(series: &[String]) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        series.join(",")
    )
}

fn series(labels: &[(&str, &str)], value: &str) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::json!(k), serde_json::json!(v)))
        .collect();
    format!(
        r#"{{"metric":{{{}}},"value":[1700000000,"{value}"]}}"#,
        labels.join(",")
    )
}

fn report(port: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .arg("report")
        .args(["--prometheus", &format!("http://127.0.0.1:{port}")])
        .args(["--from", "1699996400", "--to", "1700000000"])
        .args(args)
        .output()
        .unwrap()
}

fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

/// `report` against a server that answers every query with `status` and `body`: it fails with
/// exit code 1 and one short line free of control characters, returned.
fn failed_report(status: &'static str, body: Vec<u8>) -> String {
    let body = Arc::new(body);
    let port = serve(move |_| Canned {
        status,
        body: body.clone(),
    });
    let out = report(port, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !has_control(&stderr),
        "control characters reached the terminal: {stderr:?}"
    );
    assert!(stderr.contains('…'), "{stderr}");
    assert!(stderr.len() < 1_000, "{} bytes on stderr", stderr.len());
    stderr
}

#[test]
fn hostile_error_messages_are_cleaned_and_cut() {
    let message = format!("\u{1b}]0;owned\u{7}\u{1b}[2J{}", "A".repeat(100_000));
    let error =
        serde_json::json!({"status": "error", "errorType": "bad_data\u{1b}[31m", "error": message});
    let stderr = failed_report("400 Bad Request", error.to_string().into_bytes());
    assert!(
        stderr.contains("refused the query (bad_data?[31m): ?]0;owned??[2JAAA"),
        "{stderr}"
    );
    // Not JSON at all (a proxy's page) with escapes in it: the same rule.
    let page = format!("<html>\u{1b}[5m{}</html>", "B".repeat(50_000));
    let stderr = failed_report("502 Bad Gateway", page.into_bytes());
    assert!(
        stderr.contains("HTTP 502 Bad Gateway: <html>?[5mBBB"),
        "{stderr}"
    );
}

/// A node `a` (package 7.2 MJ = 2 kWh), a pod whose user is a spreadsheet formula with an escape
/// sequence, and a pod whose energy is NaN; GPU energy +Inf on node `g`.
fn hostile_data(promql: &str) -> Canned {
    fn pod<'a>(id: &'a str, user: &'a str) -> [(&'a str, &'a str); 6] {
        [
            ("node_name", "a"),
            ("zone", "package"),
            ("pod_id", id),
            ("pod_name", "jupyter"),
            ("pod_namespace", "jhub"),
            ("hub_user", user),
        ]
    }
    let answer = if promql.contains("kepler_node_cpu_joules_total") {
        vec![series(
            &[("node_name", "a"), ("zone", "package")],
            "7200000",
        )]
    } else if promql.contains("kepler_pod_cpu_joules_total") {
        vec![
            series(
                &pod("u1", "=HYPERLINK(\"http://evil/\",\"x\")\u{1b}[31m"),
                "1800000",
            ),
            series(&pod("u2", "-2+3"), "NaN"),
            series(&pod("u3", "carol"), "-0"),
        ]
    } else if promql.contains("kepler_node_gpu_joules_total") {
        vec![series(&[("node_name", "g"), ("gpu_uuid", "GPU-1")], "+Inf")]
    } else {
        vec![]
    };
    ok(vector(&answer))
}

#[test]
fn nan_inf_formulas_and_escapes_print_safely() {
    let port = serve(hostile_data);
    for format in ["table", "csv", "markdown", "json"] {
        let out = report(port, &["--by", "user,pod", "--format", format]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format}: {stderr}");
        assert!(!has_control(&stdout), "{format}: {stdout:?}");
        assert!(!has_control(&stderr), "{format}: {stderr:?}");
        // The warnings name both series.
        assert!(
            stderr.contains("warning: increase of kepler_pod_cpu_joules_total{")
                && stderr.contains("pod_id=\"u2\"")
                && stderr.contains("is NaN"),
            "{format}: {stderr}"
        );
        assert!(
            stderr.contains(
                "kepler_node_gpu_joules_total{gpu_uuid=\"GPU-1\",node_name=\"g\"} is inf"
            ),
            "{format}: {stderr}"
        );
        // JSON carries the warnings too, which name the values; its numbers are checked below.
        let lower = if format == "json" {
            String::new()
        } else {
            stdout.to_lowercase()
        };
        for bad in ["inf kwh", "nan%", "inf%", "-0.0", "nan ", " inf"] {
            assert!(!lower.contains(bad), "{format} printed {bad:?}: {stdout}");
        }
        match format {
            "csv" => {
                // The formula is neutralised and quoted; no cell starts a formula.
                assert!(
                    stdout
                        .contains("user,\"'=HYPERLINK(\"\"http://evil/\"\",\"\"x\"\")?[31m\",0.5"),
                    "{stdout}"
                );
                assert!(stdout.contains("user,\"'-2+3\",n/a,n/a,n/a,"), "{stdout}");
                assert!(stdout.contains("user,carol,0.000000000,"), "{stdout}");
                for row in stdout.lines() {
                    let mut cells = row.split(',');
                    let name = cells.nth(1).unwrap();
                    assert!(!name.starts_with(['=', '+', '-', '@']), "{row}");
                }
            }
            "json" => {
                let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                assert!(json["node"]["gpu_kwh"].is_null(), "{json}");
                assert_eq!(json["warnings"].as_array().unwrap().len(), 2, "{json}");
            }
            _ => {
                let nan_line = stdout.lines().find(|l| l.contains("-2+3")).unwrap();
                assert!(nan_line.contains("n/a"), "{stdout}");
                assert!(stdout.contains("GPU n/a"), "{stdout}");
            }
        }
    }
}

#[test]
fn no_namespaces_and_no_pods_are_said_plainly() {
    let port = serve(|promql| {
        if promql.contains("kepler_node_cpu_joules_total") {
            ok(vector(&[series(
                &[("node_name", "a"), ("zone", "package")],
                "3600000",
            )]))
        } else {
            ok(vector(&[]))
        }
    });
    let out = report(port, &["--by", "namespace", "--format", "markdown"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        stdout.contains("_No pod energy in this period._"),
        "{stdout}"
    );
    assert!(!stdout.contains("|---"), "{stdout}");
    let port = serve(|promql| {
        if promql.contains("kepler_pod_cpu_joules_total") {
            ok(vector(&[series(
                &[("node_name", "a"), ("zone", "package"), ("pod_id", "u1")],
                "3600000",
            )]))
        } else {
            ok(vector(&[]))
        }
    });
    let out = report(port, &["--by", "namespace"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("(no namespace data in this period: no pod_namespace label")
            && stdout.contains("(no namespace)  "),
        "{stdout}"
    );
}

/// 100,000 series (50,000 pods on 100 nodes, two zones each) in one answer of about 25 MB.
fn big_answer() -> Vec<u8> {
    let mut body = String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for i in 0..100_000u32 {
        let pod = i / 2;
        let zone = if i % 2 == 0 { "package" } else { "dram" };
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"metric":{{"hub_user":"user-{pod:05}","node_name":"node-{:03}","pod_id":"{pod:08x}-1d2f-4e5a-8b6c-7d8e9f0a1b33","pod_name":"jupyter-user-{pod:05}","pod_namespace":"ns-{:02}","zone":"{zone}"}},"value":[1700000000.000,"{}.5"]}}"#,
            pod % 100,
            pod % 50,
            1000 + i
        ));
    }
    body.push_str("]}}");
    body.into_bytes()
}

/// Peak RSS in KiB of the child `pid`, waited for with wait4, and its exit status.
fn wait_peak_rss(pid: u32) -> (i64, i32) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet waited for; the pointers are to live locals.
    let got = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(
        got,
        pid as i32,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    (usage.ru_maxrss, status)
}

#[test]
fn a_hundred_thousand_series_stream_in_bounded_memory() {
    let big = Arc::new(big_answer());
    let size = big.len();
    let port = serve(move |promql| {
        if promql.contains("kepler_pod_cpu_joules_total") {
            Canned {
                status: "200 OK",
                body: big.clone(),
            }
        } else if promql.contains("kepler_node_cpu_joules_total") {
            ok(vector(&[series(
                &[("node_name", "node-000"), ("zone", "package")],
                "1e12",
            )]))
        } else {
            ok(vector(&[]))
        }
    });
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("report.csv");
    // Waited for with wait4 below, which also gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .arg("report")
        .args(["--prometheus", &format!("http://127.0.0.1:{port}")])
        .args(["--from", "1699996400", "--to", "1700000000"])
        .args([
            "--by",
            "user,namespace,pod",
            "--format",
            "csv",
            "--timeout",
            "300s",
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let (peak_kib, status) = wait_peak_rss(pid);
    let stderr = reader.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{stderr}"
    );
    let csv = std::fs::read_to_string(&out_path).unwrap();
    let users = csv.lines().filter(|l| l.starts_with("user,")).count();
    let pods = csv.lines().filter(|l| l.starts_with("pod,")).count();
    assert_eq!((users, pods), (50_000, 50_000));
    let peak_mib = peak_kib as f64 / 1024.0;
    println!(
        "report over 100,000 series ({:.1} MB answer): peak RSS {peak_mib:.1} MiB",
        size as f64 / 1e6
    );
    assert!(peak_mib < 100.0, "peak RSS {peak_mib:.1} MiB");
}

#[test]
fn top_once_shows_n_a_and_no_escapes_from_a_hostile_exporter() {
    let labels = "node_name=\"n\u{1b}[31m\",zone=\"package\"";
    let pod = "node_name=\"n\u{1b}[31m\",zone=\"package\",pod_id=\"p1\",pod_name=\"evil\u{1b}]0;x\u{7}\",pod_namespace=\"ns\"";
    let exposition = format!(
        "kepler_node_cpu_joules_total{{{labels},source=\"rapl\"}} NaN\n\
         kepler_node_cpu_watts{{{labels}}} +Inf\n\
         kepler_pod_cpu_joules_total{{{pod}}} 5\n\
         kepler_pod_cpu_watts{{{pod}}} NaN\n"
    );
    let body = Arc::new(exposition.into_bytes());
    let port = serve(move |_| Canned {
        status: "200 OK",
        body: body.clone(),
    });
    let url = format!("http://127.0.0.1:{port}");
    for output in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
            .args([
                "top", "--once", "--url", &url, "--view", "pods", "--output", output,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{output}: {stderr}");
        assert!(!has_control(&stdout), "{output}: {stdout:?}");
        assert!(!has_control(&stderr), "{output}: {stderr:?}");
        assert!(
            stderr.contains(
                "warning: kepler_pod_cpu_watts{node_name=\"n?[31m\",zone=\"package\",pod_id=\"p1\""
            ) && stderr.contains("is NaN"),
            "{output}: {stderr}"
        );
        assert!(
            stderr.contains("kepler_node_cpu_watts{") && stderr.contains("is inf"),
            "{stderr}"
        );
        if output == "text" {
            let row = stdout
                .lines()
                .find(|l| l.contains("evil"))
                .unwrap_or_else(|| panic!("{stdout}"));
            assert!(row.contains("evil?]0;x?"), "{stdout}");
            assert!(row.contains("n/a"), "{stdout}");
            assert!(stdout.contains("CPU n/a W"), "{stdout}");
            let lower = stdout.to_lowercase();
            for bad in ["nan", "inf"] {
                assert!(!lower.contains(bad), "printed {bad:?}: {stdout}");
            }
        } else {
            let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert!(json["rows"][0]["watts"].is_null(), "{json}");
            assert_eq!(json["warnings"].as_array().unwrap().len(), 3, "{json}");
        }
    }
}
