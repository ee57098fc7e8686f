//! What the short forms of the bench tools share: the debug exporter they drive, and honest skips.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Run a bench tool (`tool`: its built binary) in its `--short` form against the debug exporter,
/// which must be built already (`cargo test --workspace` builds it).
pub fn run_short(tool: &str) -> Output {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let exporter = target.join("debug/kepler-rs");
    assert!(
        exporter.is_file(),
        "{} is missing: build it first (cargo build -p kepler-rs; `cargo test --workspace` does)",
        exporter.display()
    );
    Command::new(tool)
        .arg("--short")
        .arg("--bin")
        .arg(&exporter)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

/// Print why a test skips (and log it to `KEPLER_RS_SKIP_LOG`), or fail where skips are forbidden
/// (`KEPLER_RS_REQUIRE_PRIVILEGED=1`).
#[allow(dead_code)] // not every test skips
pub fn skip(test: &str, why: &str) {
    if std::env::var("KEPLER_RS_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: cannot skip under KEPLER_RS_REQUIRE_PRIVILEGED=1: {why}");
    }
    let line = format!("SKIP {test}: {why}");
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(path) = std::env::var_os("KEPLER_RS_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
