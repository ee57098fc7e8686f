//! A real Prometheus (Debian's package) for the tests: scrape configs in, instant queries out;
//! killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn installed() -> bool {
        Command::new("prometheus").arg("--version").output().is_ok()
    }

    /// Scrape `targets` (plain HTTP, job `kepler-rs`) every second.
    pub fn start(targets: &[u16]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        Prometheus::start_with(&format!(
            "  - job_name: kepler-rs\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ))
    }

    /// Scrape and evaluate every second with these `scrape_configs` entries (YAML list items).
    pub fn start_with(scrape_configs: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap();
        let port = super::free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus { child, port, dir }
    }

    /// A directory that lives as long as this Prometheus (for password files, CAs, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ready(&self) -> bool {
        super::try_http(self.port, "GET", "/-/ready", "")
            .map(|(s, _)| s == 200)
            .unwrap_or(false)
    }

    /// An instant query: each result's labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (status, body) = super::http(
            self.port,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
            "",
        );
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
}

/// `kepler-rs report` against `prometheus` over the window `from`..`to` (Unix seconds), with `args`;
/// its standard output, after asserting it succeeded.
pub fn report(prometheus: &Prometheus, from: f64, to: f64, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kepler-rs"))
        .arg("report")
        .args(["--prometheus", &prometheus.url()])
        .args(["--from", &format!("{from:.3}"), "--to", &format!("{to:.3}")])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
