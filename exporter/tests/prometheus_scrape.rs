//! A real Prometheus (Debian's package) scrapes the real exporter: the target is up, no sample is
//! rejected, and rate() over the exporter's counters matches the power it reports.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prometheus(Child);
impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(port: u16, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http(port, "GET", &format!("/api/v1/query?query={encoded}"), "");
    assert_eq!(status, 200, "{promql}: {body}");
    // The body may be chunked; take the JSON object.
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    let v: serde_json::Value = serde_json::from_str(&body[start..=end]).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"].clone(),
                r["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn real_prometheus_scrapes_the_exporter() {
    const TEST: &str = "real_prometheus_scrapes_the_exporter";
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        skip(
            TEST,
            "prometheus not installed (apt-get install prometheus)",
        );
        return;
    }
    let sys = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/sys/fs", sys.path().join("fs")).unwrap();
    let mut e = Exporter::start(&[
        "--sysfs",
        sys.path().to_str().unwrap(),
        "--interval",
        "500ms",
        "--node-name",
        "prom-node",
    ]);
    e.wait_ready(Duration::from_secs(20));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: kepler-rs\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            e.port
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Wait for enough scrapes for rate() over 5 s.
    let start = Instant::now();
    loop {
        let ok = try_http(prom_port, "GET", "/-/ready", "")
            .map(|(s, _)| s == 200)
            .unwrap_or(false);
        if ok && !query(prom_port, "count_over_time(up{job=\"kepler-rs\"}[1m]) >= 7").is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prometheus did not collect 7 scrapes in 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let up = query(prom_port, "min_over_time(up{job=\"kepler-rs\"}[1m])");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "a scrape failed");
    let samples = query(prom_port, "scrape_samples_scraped{job=\"kepler-rs\"}");
    assert!(samples[0].1 >= 20.0, "only {} samples", samples[0].1);

    let joules = query(prom_port, "kepler_node_cpu_joules_total{zone=\"package\"}");
    assert_eq!(joules.len(), 1);
    assert_eq!(joules[0].0["source"], "estimate");
    assert_eq!(joules[0].0["node_name"], "prom-node");
    // rate() of the energy counter agrees with the average of the watts gauge.
    let rate = query(
        prom_port,
        "rate(kepler_node_cpu_joules_total{zone=\"package\"}[5s])",
    );
    let watts = query(
        prom_port,
        "avg_over_time(kepler_node_cpu_watts{zone=\"package\"}[5s])",
    );
    let (r, w) = (rate[0].1, watts[0].1);
    assert!(
        r > 0.0 && (r - w).abs() <= 0.15 * w,
        "rate {r} W vs watts gauge {w} W"
    );
    // No counter ever went down.
    let resets = query(prom_port, "resets(kepler_node_cpu_joules_total[1m])");
    assert!(
        resets.iter().all(|(_, v)| *v == 0.0),
        "counter resets: {resets:?}"
    );
}
