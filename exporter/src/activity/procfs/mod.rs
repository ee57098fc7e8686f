//! Readers of `<procfs>`, one per file: `node_cpu` (node busy/total CPU from `/proc/stat`),
//! `processes` (per-process CPU time, process metrics) and `pods` (pods from the same process walk,
//! `--cpu-source procfs`). Counters only: they never see energy, and processes vanishing mid-walk
//! are normal, not errors.

pub(crate) mod node_cpu;
pub(crate) mod pods;
mod processes;

use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::issue::{Input, IssueKind};
use crate::resource::process_owner::{process_gone, OwnerError};
use crate::units::CpuNanos;
pub(crate) use node_cpu::{logical_cpus, NodeCpuReader};
pub(crate) use processes::ProcessScanner;

const INPUT: Input = Input::Procfs;
/// USER_HZ on every mainstream Linux architecture; used when sysconf cannot tell.
const FALLBACK_CLOCK_TICKS: u64 = 100;

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot parse {path}: {reason}")]
    Parse { path: PathBuf, reason: &'static str },
    #[error(transparent)]
    Owner(#[from] OwnerError),
}

impl Error {
    /// Short fixed label for self-metrics.
    pub(crate) fn kind(&self) -> IssueKind {
        match self {
            Error::Read { source, .. } if process_gone(source) => IssueKind::Vanished,
            Error::Read { source, .. } => IssueKind::of_io(source),
            Error::Parse { .. } => IssueKind::Parse,
            Error::Owner(error) => error.kind(),
        }
    }
}

/// Nanoseconds per USER_HZ tick, from `sysconf(_SC_CLK_TCK)` once per process.
fn nanos_per_tick() -> u64 {
    static NANOS_PER_TICK: OnceLock<u64> = OnceLock::new();
    *NANOS_PER_TICK.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = u64::try_from(ticks)
            .ok()
            .filter(|&t| t > 0)
            .unwrap_or(FALLBACK_CLOCK_TICKS);
        1_000_000_000 / ticks
    })
}

pub(crate) fn ticks_to_nanos(ticks: u64) -> CpuNanos {
    CpuNanos(ticks.saturating_mul(nanos_per_tick()))
}
