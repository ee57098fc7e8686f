//! The HTTP load tool (`web_load`) in its short form against the real exporter: 200 reconnecting
//! slowloris connections and 50 keep-alive scrapers for 3 s on loopback. Every normal scrape during
//! the attack is answered and no scraper sees an error. Figures (RSS, latency) belong to the full run
//! in benches/README.md, not to this test.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn web_load_short_form_answers_every_scrape() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let exporter = target.join("debug/kepler-rs");
    assert!(
        exporter.is_file(),
        "{} is missing: build it first (cargo build -p kepler-rs; `cargo test --workspace` does)",
        exporter.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_web_load"))
        .arg("--short")
        .arg("--bin")
        .arg(&exporter)
        .output()
        .expect("run web_load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "web_load failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| 10/10 answered"), "{stdout}");
    assert!(stdout.contains(" 0 errors,"), "{stdout}");
    println!("{stdout}");
}
