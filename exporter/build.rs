//! Cargo build script: the source revision for `kepler_build_info{revision}`. An explicit
//! `KEPLER_RS_GIT_REVISION` wins (the container build, which has no `.git`); otherwise
//! `git rev-parse` of the checkout; where neither is known the library reports "unknown".

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

fn main() {
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
