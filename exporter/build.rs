//! Cargo build script: the source revision and branch for `kepler_build_info{revision,branch}`, and
//! the compiler's version for its `goversion` label. An explicit `KEPLER_RS_GIT_REVISION` (and
//! `KEPLER_RS_GIT_BRANCH`) wins (the container build, which has no `.git`); otherwise `git` of the
//! checkout; where neither is known the library reports "unknown".

use std::path::Path;
use std::process::Command;

const VAR: &str = "KEPLER_RS_GIT_REVISION";

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// `rustc 1.83.0 (90b35a623 2024-11-26)` -> `rust1.83.0`, as Kepler writes `go1.21.5`.
fn rust_version() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    Some(format!("rust{version}"))
}

fn main() {
    if let Some(version) = rust_version() {
        println!("cargo:rustc-env=KEPLER_RS_RUST_VERSION={version}");
    }
    println!("cargo:rerun-if-env-changed=KEPLER_RS_GIT_BRANCH");
    let branch = std::env::var("KEPLER_RS_GIT_BRANCH")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]));
    if let Some(branch) = branch {
        println!("cargo:rustc-env=KEPLER_RS_GIT_BRANCH={}", branch.trim());
    }
    println!("cargo:rerun-if-env-changed={VAR}");
    if let Some(given) = std::env::var(VAR).ok().filter(|v| !v.trim().is_empty()) {
        println!("cargo:rustc-env={VAR}={}", given.trim());
        return;
    }
    let Some(revision) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    // Rebuild when HEAD moves: the HEAD file, the branch it names, and packed refs.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env={VAR}={revision}");
}
