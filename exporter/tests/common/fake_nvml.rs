//! The fake `libnvidia-ml.so.1` (tests/fake_nvml/fake_nvml.c), built for one test with
//! scripts/fake-nvml.sh, and the script file that sets its devices, counters and processes (rewritten
//! mid-run; the library re-reads it on every call). The environment it returns makes a real
//! `kepler-rs run --gpu nvml` load it.

use super::skip;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The fake library, built for one test, and its script.
pub struct FakeNvml {
    dir: tempfile::TempDir,
    lib: PathBuf,
}

impl FakeNvml {
    /// Build the library with scripts/fake-nvml.sh, or skip (failing under
    /// `KEPLER_RS_REQUIRE_PRIVILEGED=1`) where there is no C compiler.
    pub fn build(test: &str) -> Option<FakeNvml> {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fake-nvml.sh");
        let lib = dir.path().join("lib");
        let out = match Command::new(&script).arg(&lib).output() {
            Ok(out) => out,
            Err(e) => panic!("{}: {e}", script.display()),
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if Command::new(std::env::var("CC").unwrap_or_else(|_| "gcc".into()))
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_err()
            {
                skip(
                    test,
                    "no C compiler (gcc) to build the fake libnvidia-ml.so.1",
                );
                return None;
            }
            panic!("scripts/fake-nvml.sh failed:\n{err}");
        }
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            lib.to_str().unwrap()
        );
        assert!(lib.join("libnvidia-ml.so.1").exists());
        Some(FakeNvml { dir, lib })
    }

    pub fn script(&self) -> PathBuf {
        self.dir.path().join("script")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// Replace the script atomically (the library re-reads it on every call).
    pub fn set(&self, text: &str) {
        let tmp = self.dir.path().join("script.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.script()).unwrap();
    }

    /// The environment of an exporter that loads this library (ahead of any real one), follows the
    /// script and logs its calls.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let library_path = match std::env::var("LD_LIBRARY_PATH") {
            Ok(old) if !old.is_empty() => format!("{}:{old}", self.lib.display()),
            _ => self.lib.display().to_string(),
        };
        vec![
            ("LD_LIBRARY_PATH", library_path),
            ("FAKE_NVML_SCRIPT", self.script().display().to_string()),
            ("FAKE_NVML_LOG", self.log().display().to_string()),
        ]
    }
}
