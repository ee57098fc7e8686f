//! A real Prometheus (Debian's package) scrapes the real exporter: the target is up, no sample is
//! rejected, and rate() over the exporter's counters matches the power it reports.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::prometheus::Prometheus;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn real_prometheus_scrapes_the_exporter() {
    const TEST: &str = "real_prometheus_scrapes_the_exporter";
    if !Prometheus::installed() {
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

    let prom = Prometheus::start(&[e.port]);

    // Wait for enough scrapes for rate() over 5 s.
    let start = Instant::now();
    loop {
        if prom.ready()
            && !prom
                .query("count_over_time(up{job=\"kepler-rs\"}[1m]) >= 7")
                .is_empty()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prometheus did not collect 7 scrapes in 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let up = prom.query("min_over_time(up{job=\"kepler-rs\"}[1m])");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "a scrape failed");
    let samples = prom.query("scrape_samples_scraped{job=\"kepler-rs\"}");
    assert!(samples[0].1 >= 20.0, "only {} samples", samples[0].1);

    let joules = prom.query("kepler_node_cpu_joules_total{zone=\"package\"}");
    assert_eq!(joules.len(), 1);
    assert_eq!(joules[0].0["source"], "estimate");
    assert_eq!(joules[0].0["node_name"], "prom-node");
    // rate() of the energy counter agrees with the average of the watts gauge.
    let rate = prom.query("rate(kepler_node_cpu_joules_total{zone=\"package\"}[5s])");
    let watts = prom.query("avg_over_time(kepler_node_cpu_watts{zone=\"package\"}[5s])");
    let (r, w) = (rate[0].1, watts[0].1);
    assert!(
        r > 0.0 && (r - w).abs() <= 0.15 * w,
        "rate {r} W vs watts gauge {w} W"
    );
    // No counter ever went down.
    let resets = prom.query("resets(kepler_node_cpu_joules_total[1m])");
    assert!(
        resets.iter().all(|(_, v)| *v == 0.0),
        "counter resets: {resets:?}"
    );
}
