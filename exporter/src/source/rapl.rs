//! RAPL energy through powercap sysfs (`<sysfs>/class/powercap/intel-rapl*`): discovers the zones once,
//! keeps each `energy_uj` open and re-reads it with pread, and turns wrapping counters into per-kind
//! deltas summed over sockets. It must not attribute energy, re-open healthy files, or assume "/sys".

use super::{
    EnergySample, EnergySource, EnergySourceKind, IntervalContext, SocketEnergy, ZoneEnergy,
};
use crate::files::{open_regular, read_small_file, read_small_text, FileError};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::units::{CounterDiff, MicroJoules, ZoneKind};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const INPUT: Input = Input::Rapl;

/// Default plausibility bound for one zone of one socket: far above any real package, low enough to
/// catch a counter that jumped (firmware reset, a bogus wrap).
pub(crate) const DEFAULT_MAX_ZONE_WATTS: f64 = 5000.0;

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Why RAPL could not be used on this node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No powercap directory, or no RAPL zone in it.
    #[error("no usable RAPL powercap zones under {}", path.display())]
    NotFound { path: PathBuf },
    /// Every zone's `energy_uj` refused to be read.
    #[error(
        "permission denied reading {}: energy_uj is root-only since Linux 5.10 (CVE-2020-8694); \
         the exporter needs root or CAP_DAC_READ_SEARCH",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    /// The powercap directory could not be listed, or no zone could be read for another I/O reason.
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// No zone could be read because every `energy_uj` held garbage.
    #[error("parsing {}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    /// An `energy_uj` could not be opened: not a regular file, or an I/O error.
    #[error("{0}")]
    File(FileError),
}

impl Error {
    /// Short kind for self-metric labels.
    pub(crate) fn kind(&self) -> IssueKind {
        match self {
            Error::NotFound { .. } => IssueKind::NotFound,
            Error::PermissionDenied { .. } => IssueKind::PermissionDenied,
            Error::Io { .. } => IssueKind::Io,
            Error::Parse { .. } => IssueKind::Parse,
            Error::File(e) => e.issue_kind(),
        }
    }

    /// The file or directory the error is about.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        match self {
            Error::NotFound { path }
            | Error::PermissionDenied { path }
            | Error::Io { path, .. }
            | Error::Parse { path, .. } => path,
            Error::File(e) => e.path(),
        }
    }
}

/// Opens an `energy_uj` file; a seam so tests can simulate EACCES even when they run as root.
type Opener = fn(&Path) -> Result<File, FileError>;

/// Longest zone `name` read ("package-0", "dram", "psys"; longer is not a zone we know).
const MAX_NAME_BYTES: usize = 64;
/// Longest `max_energy_range_uj` read (a u64 in decimal with a newline fits).
const MAX_RANGE_BYTES: usize = 32;

/// RAPL through powercap: one open `energy_uj` per (zone kind, socket).
#[derive(Debug)]
pub(crate) struct Rapl {
    zones: Vec<Zone>,
    kinds: Vec<ZoneKind>,
    max_zone_watts: f64,
    open: Opener,
}

/// Discovers the RAPL zones under `<sysfs_root>/class/powercap` and checks that they can be read.
pub(crate) fn discover(sysfs_root: &Path) -> Result<Rapl> {
    // `energy_uj` must be a regular file (a sysfs attribute): a FIFO or a device is refused unread.
    discover_with(sysfs_root, open_regular)
}

impl Rapl {
    #[cfg(test)]
    /// Sets the plausibility bound per socket zone (default [`DEFAULT_MAX_ZONE_WATTS`]).
    pub(crate) fn with_max_zone_watts(mut self, watts: f64) -> Rapl {
        self.set_max_zone_watts(watts);
        self
    }

    #[cfg(test)]
    /// Sets the plausibility bound per socket zone; a non-finite or non-positive value is ignored
    /// (logged).
    pub(crate) fn set_max_zone_watts(&mut self, watts: f64) {
        if watts.is_finite() && watts > 0.0 {
            self.max_zone_watts = watts;
        } else {
            tracing::warn!(
                watts,
                kept = self.max_zone_watts,
                "ignoring invalid RAPL max zone watts"
            );
        }
    }

    #[cfg(test)]
    pub(crate) fn max_zone_watts(&self) -> f64 {
        self.max_zone_watts
    }

    /// Number of CPU sockets seen: distinct sockets of package zones (of any non-psys zone when there
    /// is no package zone).
    pub(crate) fn socket_count(&self) -> usize {
        let sockets_of = |pred: &dyn Fn(ZoneKind) -> bool| {
            self.zones
                .iter()
                .filter(|z| pred(z.kind))
                .map(|z| z.socket)
                .collect::<BTreeSet<_>>()
                .len()
        };
        match sockets_of(&|k| k == ZoneKind::Package) {
            0 => sockets_of(&|k| k != ZoneKind::Psys),
            n => n,
        }
    }
}

impl EnergySource for Rapl {
    fn kind(&self) -> EnergySourceKind {
        EnergySourceKind::Rapl
    }

    /// The per-socket plausibility bound times the sockets seen.
    fn plausible_watts(&self) -> f64 {
        self.max_zone_watts * self.socket_count().max(1) as f64
    }

    fn zones(&self) -> &[ZoneKind] {
        &self.kinds
    }

    fn sample(&mut self, ctx: &IntervalContext) -> EnergySample {
        // Microjoules per (kind, socket) with a valid delta this interval; zone totals derive from it.
        let mut per_socket: Vec<(ZoneKind, u32, u64)> = Vec::new();
        let mut issues = Vec::new();
        for zone in &mut self.zones {
            zone.since_baseline = zone.since_baseline.saturating_add(ctx.elapsed);
            if let Some(refused) = &mut zone.refused {
                refused.since = refused.since.saturating_add(ctx.elapsed);
            }
            let (delta, issue) = match zone.read(self.open) {
                Ok(current) => zone.advance(current, self.max_zone_watts),
                Err(issue) => (None, Some(issue)),
            };
            if let Some(delta_uj) = delta {
                match per_socket
                    .iter_mut()
                    .find(|(kind, socket, _)| *kind == zone.kind && *socket == zone.socket)
                {
                    Some((_, _, uj)) => *uj = uj.saturating_add(delta_uj),
                    None => per_socket.push((zone.kind, zone.socket, delta_uj)),
                }
            }
            if let Some(issue) = issue {
                tracing::debug!(kind = %issue.kind, detail = %issue.detail, "RAPL zone skipped");
                issues.push(issue);
            }
        }
        let zones = self
            .kinds
            .iter()
            .filter_map(|kind| {
                let mut of_kind = per_socket.iter().filter(|(k, _, _)| k == kind).peekable();
                of_kind.peek()?;
                let uj = of_kind.fold(0u64, |sum, (_, _, uj)| sum.saturating_add(*uj));
                Some(ZoneEnergy {
                    zone: *kind,
                    energy: MicroJoules(uj).to_joules(),
                    idle_hint: None,
                })
            })
            .collect();
        let sockets = per_socket
            .into_iter()
            .map(|(zone, socket, uj)| SocketEnergy {
                zone,
                socket,
                energy: MicroJoules(uj).to_joules(),
            })
            .collect();
        EnergySample {
            zones,
            sockets,
            issues,
        }
    }
}

/// One powercap zone of one socket, with its open counter file and counter state.
#[derive(Debug)]
struct Zone {
    kind: ZoneKind,
    socket: u32,
    energy_path: PathBuf,
    /// None after the zone vanished (ENOENT/ENODEV); re-opened at most once per sample.
    file: Option<File>,
    /// 0 when unknown; `CounterDiff` then treats a decrease as a reset.
    max_energy_range_uj: u64,
    previous_uj: Option<u64>,
    /// Time since `previous_uj` was read; grows across failed reads so the plausibility bound covers
    /// the whole span whose energy the next good delta carries.
    since_baseline: Duration,
    /// The last reading, when it was refused as implausible: held for one sample.
    refused: Option<Refused>,
}

/// A reading refused as implausible, and the time since it was read.
#[derive(Debug, Clone, Copy)]
struct Refused {
    uj: u64,
    since: Duration,
}

impl Zone {
    fn read(&mut self, open: Opener) -> Result<u64, SourceIssue> {
        let file = match self.file.take() {
            Some(file) => file,
            None => match open(&self.energy_path) {
                Ok(file) => {
                    tracing::info!(path = %self.energy_path.display(), "RAPL zone is back");
                    file
                }
                Err(err) => return Err(open_issue(&err)),
            },
        };
        match read_counter(&file) {
            Ok(uj) => {
                self.file = Some(file);
                Ok(uj)
            }
            Err(ReadError::Io(err)) if is_vanished(&err) => {
                tracing::warn!(path = %self.energy_path.display(), error = %err, "RAPL zone vanished");
                Err(self.read_issue(ReadError::Io(err)))
            }
            Err(err) => {
                self.file = Some(file);
                Err(self.read_issue(err))
            }
        }
    }

    /// Takes a good reading: the delta since the baseline (None for the first), and an issue when a
    /// reading is refused. A delta above the plausible power is refused, and the baseline is kept
    /// for one more sample, as after a failed read: if the next reading is plausible from it, the
    /// refused one was a misread and the next delta carries the whole span (no joule lost). If not,
    /// the counter did jump: the next delta is measured from the refused reading, and only the
    /// refused interval's energy is unknown.
    fn advance(&mut self, current_uj: u64, max_watts: f64) -> (Option<u64>, Option<SourceIssue>) {
        let range = self.max_energy_range_uj;
        let plausible = |delta_uj: u64, span: Duration| {
            delta_uj as f64 <= max_watts * span.as_secs_f64().max(1.0) * 1e6
        };
        let diff = CounterDiff::compute(self.previous_uj, current_uj, range);
        let span = self.since_baseline;
        let refused = self.refused.take();
        let delta = match diff.value() {
            Some(delta_uj) if !plausible(delta_uj, span) => delta_uj,
            other => {
                self.rebase(current_uj);
                return (other, None);
            }
        };
        let anomaly = |what: &str| {
            SourceIssue::new(
                INPUT,
                IssueKind::CounterAnomaly,
                format!(
                    "{}: {:?} of {} uJ over {:.3} s exceeds {} W; {what}",
                    self.energy_path.display(),
                    diff,
                    delta,
                    span.as_secs_f64(),
                    max_watts
                ),
            )
        };
        let Some(refused) = refused else {
            self.refused = Some(Refused {
                uj: current_uj,
                since: Duration::ZERO,
            });
            let issue = anomaly("held: the next reading is measured from the last good one");
            return (None, Some(issue));
        };
        let issue = anomaly("twice: re-based at the refused reading, whose interval is lost");
        self.rebase(current_uj);
        let from_refused = CounterDiff::compute(Some(refused.uj), current_uj, range).value();
        (
            from_refused.filter(|delta_uj| plausible(*delta_uj, refused.since)),
            Some(issue),
        )
    }

    fn rebase(&mut self, current_uj: u64) {
        self.previous_uj = Some(current_uj);
        self.since_baseline = Duration::ZERO;
    }

    fn read_issue(&self, err: ReadError) -> SourceIssue {
        let path = self.energy_path.display();
        match err {
            ReadError::Io(err) => {
                let kind = if is_vanished(&err) {
                    IssueKind::ZoneVanished
                } else {
                    IssueKind::of_io(&err)
                };
                SourceIssue::new(INPUT, kind, format!("{path}: {err}"))
            }
            ReadError::Parse(detail) => {
                SourceIssue::new(INPUT, IssueKind::Parse, format!("{path}: {detail}"))
            }
        }
    }
}

#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    Parse(String),
}

/// A zone's `energy_uj` could not be re-opened: gone, or no longer a regular file.
fn open_issue(err: &FileError) -> SourceIssue {
    let kind = match err.io_error() {
        Some(io) if is_vanished(io) => IssueKind::ZoneVanished,
        _ => err.issue_kind(),
    };
    SourceIssue::new(INPUT, kind, err.to_string())
}

/// pread at offset 0, then a link-count check: sysfs reports a removed attribute as ENODEV, while an
/// ordinary filesystem (a fixture tree) keeps serving an unlinked file, so nlink 0 reads as ENOENT.
fn read_counter(file: &File) -> Result<u64, ReadError> {
    let mut buf = [0u8; 32];
    let len = file.read_at(&mut buf, 0).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if meta.nlink() == 0 {
        return Err(ReadError::Io(io::Error::from_raw_os_error(libc::ENOENT)));
    }
    if len == buf.len() {
        return Err(ReadError::Parse("counter longer than 31 bytes".into()));
    }
    parse_uj(&buf[..len]).map_err(ReadError::Parse)
}

pub(crate) fn parse_uj(raw: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_string())?;
    let text = text.trim();
    text.parse::<u64>()
        .map_err(|err| format!("{text:?} is not a counter: {err}"))
}

fn is_vanished(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
        || err.kind() == io::ErrorKind::NotFound
}

/// A powercap directory name: `intel-rapl:N`, `intel-rapl:N:M`, `intel-rapl-mmio:N[:M]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ZoneId {
    mmio: bool,
    socket: u32,
    subzone: Option<u32>,
}

impl ZoneId {
    pub(crate) fn parse(dir_name: &str) -> Option<ZoneId> {
        let (mmio, rest) = if let Some(rest) = dir_name.strip_prefix("intel-rapl-mmio:") {
            (true, rest)
        } else {
            (false, dir_name.strip_prefix("intel-rapl:")?)
        };
        let mut parts = rest.split(':');
        let socket = parts.next()?.parse().ok()?;
        let subzone = parts.next().map(str::parse).transpose().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(ZoneId {
            mmio,
            socket,
            subzone,
        })
    }
}

/// A zone directory whose name was understood, before its counter was tried.
struct Candidate {
    id: ZoneId,
    kind: ZoneKind,
    dir: PathBuf,
}

fn discover_with(sysfs_root: &Path, open: Opener) -> Result<Rapl> {
    let powercap = sysfs_root.join("class").join("powercap");
    let mut candidates = list_candidates(&powercap)?;
    // MSR zones first, so an mmio zone is kept only where the MSR interface lacks its kind+socket.
    candidates.sort_by_key(|c| c.id);

    let mut seen = BTreeSet::new();
    let mut zones = Vec::new();
    let mut denied: Option<PathBuf> = None;
    let mut first_failure: Option<Error> = None;
    let mut readable = 0usize;
    for cand in candidates {
        if !seen.insert((cand.kind, cand.id.socket)) {
            tracing::debug!(dir = %cand.dir.display(), zone = %cand.kind, socket = cand.id.socket,
                "skipping RAPL zone already exposed by another interface");
            continue;
        }
        let energy_path = cand.dir.join("energy_uj");
        let file = match open(&energy_path) {
            Ok(file) => file,
            Err(err) if err.issue_kind() == IssueKind::PermissionDenied => {
                tracing::debug!(path = %energy_path.display(), "RAPL energy_uj not readable");
                denied.get_or_insert(energy_path);
                continue;
            }
            Err(err) if err.io_error().is_some_and(is_vanished) => {
                tracing::debug!(dir = %cand.dir.display(), "RAPL zone has no energy_uj, skipped");
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot open RAPL energy_uj");
                first_failure.get_or_insert(Error::File(err));
                continue;
            }
        };
        // Try one read; a zone that fails for another reason than permission is kept (it may recover
        // and its failures are counted every tick), but discovery fails if no zone reads at all.
        match read_counter(&file) {
            Ok(_) => readable += 1,
            Err(ReadError::Io(err)) if err.kind() == io::ErrorKind::PermissionDenied => {
                tracing::debug!(path = %energy_path.display(), "RAPL energy_uj not readable");
                denied.get_or_insert(energy_path);
                continue;
            }
            Err(ReadError::Io(err)) => {
                tracing::warn!(path = %energy_path.display(), error = %err, "cannot read RAPL energy_uj");
                first_failure.get_or_insert(Error::Io {
                    path: energy_path.clone(),
                    source: err,
                });
            }
            Err(ReadError::Parse(detail)) => {
                tracing::warn!(path = %energy_path.display(), %detail, "garbage in RAPL energy_uj");
                first_failure.get_or_insert(Error::Parse {
                    path: energy_path.clone(),
                    detail,
                });
            }
        }
        zones.push(Zone {
            kind: cand.kind,
            socket: cand.id.socket,
            max_energy_range_uj: read_max_range(&cand.dir),
            energy_path,
            file: Some(file),
            previous_uj: None,
            since_baseline: Duration::ZERO,
            refused: None,
        });
    }

    if readable == 0 {
        return Err(match (first_failure, denied) {
            (Some(failure), _) => failure,
            (None, Some(path)) => Error::PermissionDenied { path },
            (None, None) => Error::NotFound { path: powercap },
        });
    }
    if let Some(path) = &denied {
        tracing::warn!(path = %path.display(), "some RAPL zones are not readable and are left out");
    }

    zones.sort_by_key(|z| (z.kind, z.socket));
    let kinds: Vec<ZoneKind> = zones
        .iter()
        .map(|z| z.kind)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    tracing::info!(
        powercap = %powercap.display(),
        zones = ?zones.iter().map(|z| (z.kind.as_str(), z.socket)).collect::<Vec<_>>(),
        "discovered RAPL zones"
    );
    Ok(Rapl {
        zones,
        kinds,
        max_zone_watts: DEFAULT_MAX_ZONE_WATTS,
        open,
    })
}

/// Lists the zone directories of `powercap` whose directory name and `name` file are understood.
fn list_candidates(powercap: &Path) -> Result<Vec<Candidate>> {
    let path = powercap.to_path_buf();
    let entries = fs::read_dir(powercap).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound { path },
        _ => Error::Io { path, source },
    })?;
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(dir = %powercap.display(), error = %err, "cannot list powercap entry");
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(id) = file_name.to_str().and_then(ZoneId::parse) else {
            continue;
        };
        let dir = entry.path();
        // In sysfs the entries are symlinks to directories: follow them.
        if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
            tracing::debug!(path = %dir.display(), "powercap entry is not a directory, skipped");
            continue;
        }
        let name_path = dir.join("name");
        let name = match read_small_text(&name_path, MAX_NAME_BYTES) {
            Ok(name) => name,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read RAPL zone name, skipped");
                continue;
            }
        };
        let Some(kind) = ZoneKind::from_powercap_name(name.trim()) else {
            tracing::debug!(dir = %dir.display(), name = name.trim(), "unknown RAPL zone name, skipped");
            continue;
        };
        candidates.push(Candidate { id, kind, dir });
    }
    Ok(candidates)
}

/// `max_energy_range_uj`, or 0 (unknown) when it is missing or garbage.
fn read_max_range(zone_dir: &Path) -> u64 {
    let path = zone_dir.join("max_energy_range_uj");
    let parsed = read_small_file(&path, MAX_RANGE_BYTES)
        .map_err(|err| err.to_string())
        .and_then(|raw| parse_uj(&raw));
    parsed.unwrap_or_else(|detail| {
        tracing::warn!(path = %path.display(), %detail,
            "unusable RAPL max_energy_range_uj; treating the counter range as unknown");
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::mkfifo;
    use crate::units::Joules;
    use std::path::PathBuf;
    use tempfile::TempDir;

    fn fixture(scenario: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/powercap")
            .join(scenario)
    }

    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    /// A writable copy of a fixture; returns (guard, sysfs root).
    fn scratch(scenario: &str) -> (TempDir, PathBuf) {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("sys");
        copy_tree(&fixture(scenario), &root);
        (tmp, root)
    }

    fn zone_dir(root: &Path, dir: &str) -> PathBuf {
        root.join("class/powercap").join(dir)
    }

    /// Rewrites a counter in place, as the kernel would (same inode, so open handles see it).
    fn set_uj(root: &Path, dir: &str, uj: u64) {
        fs::write(zone_dir(root, dir).join("energy_uj"), format!("{uj}\n")).unwrap();
    }

    fn ctx(secs: u64) -> IntervalContext {
        IntervalContext {
            elapsed: Duration::from_secs(secs),
            cpu_usage_ratio: 0.5,
        }
    }

    fn energy(sample: &EnergySample, kind: ZoneKind) -> Option<f64> {
        sample
            .zones
            .iter()
            .find(|z| z.zone == kind)
            .map(|z| z.energy.0)
    }

    fn approx(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    fn kinds_of(issues: &[SourceIssue]) -> Vec<IssueKind> {
        issues.iter().map(|i| i.kind).collect()
    }

    #[test]
    fn one_socket_discovers_all_four_kinds() {
        let rapl = discover(&fixture("one_socket")).unwrap();
        assert_eq!(
            rapl.zones(),
            &[
                ZoneKind::Package,
                ZoneKind::Core,
                ZoneKind::Uncore,
                ZoneKind::Dram
            ]
        );
        assert_eq!(rapl.socket_count(), 1);
        assert_eq!(rapl.kind(), EnergySourceKind::Rapl);
        assert_eq!(rapl.max_zone_watts(), DEFAULT_MAX_ZONE_WATTS);
        let pkg = rapl
            .zones
            .iter()
            .find(|z| z.kind == ZoneKind::Package)
            .unwrap();
        assert_eq!(pkg.max_energy_range_uj, 262_143_328_850);
    }

    #[test]
    fn first_sample_only_sets_baseline_then_deltas_are_exact() {
        let (_tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap();
        let first = rapl.sample(&ctx(1));
        assert!(first.zones.is_empty());
        assert!(first.issues.is_empty());

        set_uj(&root, "intel-rapl:0", 1_000_000 + 12_500_000);
        set_uj(&root, "intel-rapl:0:0", 400_000 + 8_000_000);
        set_uj(&root, "intel-rapl:0:2", 300_000 + 2_250_000);
        let second = rapl.sample(&ctx(1));
        assert!(second.issues.is_empty(), "{:?}", second.issues);
        assert!(approx(energy(&second, ZoneKind::Package), 12.5));
        assert!(approx(energy(&second, ZoneKind::Core), 8.0));
        assert!(approx(energy(&second, ZoneKind::Uncore), 0.0));
        assert!(approx(energy(&second, ZoneKind::Dram), 2.25));
        assert!(second.zones.iter().all(|z| z.idle_hint.is_none()));
    }

    #[test]
    fn two_sockets_are_summed_per_kind() {
        let (_tmp, root) = scratch("two_sockets");
        let mut rapl = discover(&root).unwrap();
        assert_eq!(rapl.zones(), &[ZoneKind::Package, ZoneKind::Dram]);
        assert_eq!(rapl.socket_count(), 2);
        rapl.sample(&ctx(1));

        set_uj(&root, "intel-rapl:0", 50_000_000 + 30_000_000);
        set_uj(&root, "intel-rapl:1", 70_000_000 + 45_500_000);
        set_uj(&root, "intel-rapl:0:0", 5_000_000 + 1_000_000);
        set_uj(&root, "intel-rapl:1:0", 6_000_000 + 2_000_001);
        let s = rapl.sample(&ctx(1));
        assert!(s.issues.is_empty(), "{:?}", s.issues);
        assert!(approx(energy(&s, ZoneKind::Package), 75.5));
        assert!(approx(energy(&s, ZoneKind::Dram), 3.000001));
        // The same energy per socket.
        let socket = |zone, socket| {
            s.sockets
                .iter()
                .find(|e| e.zone == zone && e.socket == socket)
                .map(|e| e.energy.0)
        };
        assert_eq!(s.sockets.len(), 4);
        assert!(approx(socket(ZoneKind::Package, 0), 30.0));
        assert!(approx(socket(ZoneKind::Package, 1), 45.5));
        assert!(approx(socket(ZoneKind::Dram, 0), 1.0));
        assert!(approx(socket(ZoneKind::Dram, 1), 2.000001));
    }

    #[test]
    fn psys_is_its_own_kind_and_unknown_names_are_skipped() {
        let rapl = discover(&fixture("psys")).unwrap();
        // the fixture's "gpu" subzone is unknown and skipped.
        assert_eq!(
            rapl.zones(),
            &[
                ZoneKind::Package,
                ZoneKind::Core,
                ZoneKind::Uncore,
                ZoneKind::Psys
            ]
        );
        assert_eq!(rapl.zones.len(), 4);
        // psys sits at intel-rapl:1 on a one-socket laptop: it is not a second socket.
        assert_eq!(rapl.socket_count(), 1);
    }

    #[test]
    fn mmio_duplicates_are_ignored_but_missing_kinds_are_kept() {
        let (_tmp, root) = scratch("mmio_duplicates");
        let mut rapl = discover(&root).unwrap();
        assert_eq!(
            rapl.zones(),
            &[ZoneKind::Package, ZoneKind::Core, ZoneKind::Dram]
        );
        assert_eq!(rapl.zones.len(), 3);
        let pkg = rapl
            .zones
            .iter()
            .find(|z| z.kind == ZoneKind::Package)
            .unwrap();
        assert!(pkg.energy_path.to_string_lossy().contains("intel-rapl:0/"));
        let dram = rapl
            .zones
            .iter()
            .find(|z| z.kind == ZoneKind::Dram)
            .unwrap();
        assert!(dram
            .energy_path
            .to_string_lossy()
            .contains("intel-rapl-mmio:0:0"));

        rapl.sample(&ctx(1));
        set_uj(&root, "intel-rapl:0", 10_000_000 + 4_000_000);
        // the mmio package counter moves too; counting it would double the package energy.
        set_uj(&root, "intel-rapl-mmio:0", 10_000_000 + 4_000_000);
        set_uj(&root, "intel-rapl-mmio:0:0", 3_000_000 + 500_000);
        let s = rapl.sample(&ctx(1));
        assert!(approx(energy(&s, ZoneKind::Package), 4.0));
        assert!(approx(energy(&s, ZoneKind::Dram), 0.5));
    }

    #[test]
    fn garbage_counter_is_a_parse_issue_and_other_zones_report() {
        let (_tmp, root) = scratch("garbage_energy");
        let mut rapl = discover(&root).unwrap();
        // "intel-rapl:0:1" has a garbage name and is skipped; dram's counter is garbage but kept.
        assert_eq!(
            rapl.zones(),
            &[ZoneKind::Package, ZoneKind::Core, ZoneKind::Dram]
        );
        // garbage max_energy_range_uj is treated as unknown.
        let core = rapl
            .zones
            .iter()
            .find(|z| z.kind == ZoneKind::Core)
            .unwrap();
        assert_eq!(core.max_energy_range_uj, 0);

        let first = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&first.issues), vec![IssueKind::Parse]);
        assert_eq!(first.issues[0].input, Input::Rapl);
        set_uj(&root, "intel-rapl:0", 2_000_000 + 7_000_000);
        let s = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&s.issues), vec![IssueKind::Parse]);
        assert!(approx(energy(&s, ZoneKind::Package), 7.0));
        assert!(energy(&s, ZoneKind::Dram).is_none());

        // the counter becomes readable: the first good read is a baseline, then deltas flow.
        set_uj(&root, "intel-rapl:0:2", 100);
        assert!(energy(&rapl.sample(&ctx(1)), ZoneKind::Dram).is_none());
        set_uj(&root, "intel-rapl:0:2", 1_000_100);
        assert!(approx(energy(&rapl.sample(&ctx(1)), ZoneKind::Dram), 1.0));
    }

    #[test]
    fn wrap_across_max_energy_range_counts_exact_joules() {
        let (_tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap();
        let max = 262_143_328_850u64;
        set_uj(&root, "intel-rapl:0", max - 3_000_000);
        rapl.sample(&ctx(1));
        set_uj(&root, "intel-rapl:0", 2_000_000);
        let s = rapl.sample(&ctx(1));
        assert!(s.issues.is_empty(), "{:?}", s.issues);
        // (max - prev) + current = 3 J + 2 J
        assert!(approx(energy(&s, ZoneKind::Package), 5.0));
    }

    #[test]
    fn failed_read_keeps_previous_reading_so_no_joule_is_lost() {
        let (_tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap();
        rapl.sample(&ctx(1));
        set_uj(&root, "intel-rapl:0", 1_000_000 + 3_000_000);
        let dram = zone_dir(&root, "intel-rapl:0:2").join("energy_uj");
        fs::write(&dram, "garbage\n").unwrap();
        let bad = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&bad.issues), vec![IssueKind::Parse]);
        assert!(energy(&bad, ZoneKind::Dram).is_none());
        fs::write(&dram, format!("{}\n", 300_000 + 2_500_000)).unwrap();
        let good = rapl.sample(&ctx(1));
        assert!(good.issues.is_empty());
        assert!(approx(energy(&good, ZoneKind::Dram), 2.5));
    }

    /// A FIFO or /dev/zero in place of a zone's files must never be read: a FIFO blocks the reader
    /// for good and /dev/zero never ends.
    #[test]
    fn fifos_and_devices_in_the_powercap_tree_are_refused_unread() {
        let (_tmp, root) = scratch("two_sockets");
        // Socket 1's package: its name is /dev/zero, so the zone is skipped at discovery.
        let pkg1 = zone_dir(&root, "intel-rapl:1");
        fs::remove_file(pkg1.join("name")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", pkg1.join("name")).unwrap();
        // Socket 1's dram: its name is a FIFO (skipped too).
        let dram1 = zone_dir(&root, "intel-rapl:1:0");
        fs::remove_file(dram1.join("name")).unwrap();
        mkfifo(&dram1.join("name"));
        // Socket 0's dram: its range is /dev/zero (unknown range, the zone still works).
        let dram0 = zone_dir(&root, "intel-rapl:0:0");
        fs::remove_file(dram0.join("max_energy_range_uj")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dram0.join("max_energy_range_uj")).unwrap();
        let mut rapl = discover(&root).unwrap();
        assert_eq!(rapl.zones(), &[ZoneKind::Package, ZoneKind::Dram]);
        assert_eq!(rapl.socket_count(), 1);
        rapl.sample(&ctx(1));
        // Socket 0's package energy_uj becomes a FIFO: counted as not_regular, never read.
        let pkg0 = zone_dir(&root, "intel-rapl:0");
        fs::remove_file(pkg0.join("energy_uj")).unwrap();
        mkfifo(&pkg0.join("energy_uj"));
        // The open file still reads the unlinked counter as vanished; the re-open meets the FIFO.
        let gone = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&gone.issues), vec![IssueKind::ZoneVanished]);
        let refused = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&refused.issues), vec![IssueKind::NotRegular]);
        assert!(
            refused.issues[0]
                .detail
                .contains("is a FIFO, not a regular file"),
            "{:?}",
            refused.issues
        );
        // A FIFO as the only energy_uj at discovery is an error, not a hang.
        let (_tmp2, root2) = scratch("one_socket");
        for zone in [
            "intel-rapl:0",
            "intel-rapl:0:0",
            "intel-rapl:0:1",
            "intel-rapl:0:2",
        ] {
            let dir = zone_dir(&root2, zone);
            if dir.join("energy_uj").exists() {
                fs::remove_file(dir.join("energy_uj")).unwrap();
                mkfifo(&dir.join("energy_uj"));
            }
        }
        let err = discover(&root2).unwrap_err();
        assert_eq!(err.kind(), IssueKind::NotRegular);
    }

    #[test]
    fn vanished_zone_is_counted_and_recovers() {
        let (tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap();
        rapl.sample(&ctx(1));
        let dram_dir = zone_dir(&root, "intel-rapl:0:2");
        let parked = tmp.path().join("parked-dram");
        copy_tree(&dram_dir, &parked);
        fs::remove_dir_all(&dram_dir).unwrap();

        set_uj(&root, "intel-rapl:0", 1_000_000 + 6_000_000);
        let gone = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&gone.issues), vec![IssueKind::ZoneVanished]);
        assert!(approx(energy(&gone, ZoneKind::Package), 6.0));
        assert!(energy(&gone, ZoneKind::Dram).is_none());
        assert_eq!(
            rapl.zones(),
            &[
                ZoneKind::Package,
                ZoneKind::Core,
                ZoneKind::Uncore,
                ZoneKind::Dram
            ]
        );

        // still gone: one re-open attempt, one issue.
        let still = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&still.issues), vec![IssueKind::ZoneVanished]);

        // back, with the counter having advanced 4 J since the last good reading (300000).
        copy_tree(&parked, &dram_dir);
        set_uj(&root, "intel-rapl:0:2", 300_000 + 4_000_000);
        let back = rapl.sample(&ctx(1));
        assert!(back.issues.is_empty(), "{:?}", back.issues);
        assert!(approx(energy(&back, ZoneKind::Dram), 4.0));
        // and it stays open: the next tick reads through the re-opened handle.
        set_uj(&root, "intel-rapl:0:2", 300_000 + 5_000_000);
        assert!(approx(energy(&rapl.sample(&ctx(1)), ZoneKind::Dram), 1.0));
    }

    #[test]
    fn a_counter_that_jumped_is_refused_then_measured_from_the_jump() {
        let (_tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap().with_max_zone_watts(1000.0);
        assert_eq!(rapl.max_zone_watts(), 1000.0);
        rapl.sample(&ctx(2));
        // 5000 J in 2 s = 2500 W > 1000 W: an anomaly, held.
        set_uj(&root, "intel-rapl:0", 1_000_000 + 5_000_000_000);
        set_uj(&root, "intel-rapl:0:0", 400_000 + 1_000_000);
        let s = rapl.sample(&ctx(2));
        assert_eq!(kinds_of(&s.issues), vec![IssueKind::CounterAnomaly]);
        assert!(
            s.issues[0].detail.contains("held"),
            "{}",
            s.issues[0].detail
        );
        assert!(energy(&s, ZoneKind::Package).is_none());
        assert!(approx(energy(&s, ZoneKind::Core), 1.0));
        // Still implausible from the last good reading: the counter did jump. The delta since the
        // refused reading is taken, and the refused interval is reported lost.
        set_uj(
            &root,
            "intel-rapl:0",
            1_000_000 + 5_000_000_000 + 20_000_000,
        );
        let next = rapl.sample(&ctx(2));
        assert_eq!(kinds_of(&next.issues), vec![IssueKind::CounterAnomaly]);
        assert!(
            next.issues[0].detail.contains("lost"),
            "{}",
            next.issues[0].detail
        );
        assert!(approx(energy(&next, ZoneKind::Package), 20.0));
        // And from there on, as usual.
        set_uj(
            &root,
            "intel-rapl:0",
            1_000_000 + 5_000_000_000 + 50_000_000,
        );
        let after = rapl.sample(&ctx(2));
        assert!(after.issues.is_empty(), "{:?}", after.issues);
        assert!(approx(energy(&after, ZoneKind::Package), 30.0));
    }

    #[test]
    fn a_misread_counter_loses_no_joule() {
        let (_tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap().with_max_zone_watts(1000.0);
        rapl.sample(&ctx(2));
        // One garbage reading, far above (then, on another run, below: a false wrap).
        for garbage in [1_000_000 + 9_000_000_000, 5] {
            set_uj(&root, "intel-rapl:0", garbage);
            let s = rapl.sample(&ctx(2));
            assert_eq!(kinds_of(&s.issues), vec![IssueKind::CounterAnomaly]);
            assert!(energy(&s, ZoneKind::Package).is_none());
            // The counter reads true again, 30 J on from the last good reading over the 4 s: all of
            // it is carried into this interval.
            set_uj(&root, "intel-rapl:0", 1_000_000 + 30_000_000);
            let next = rapl.sample(&ctx(2));
            assert!(next.issues.is_empty(), "{:?}", next.issues);
            assert!(approx(energy(&next, ZoneKind::Package), 30.0));
            set_uj(&root, "intel-rapl:0", 1_000_000);
            rapl = discover(&root).unwrap().with_max_zone_watts(1000.0);
            rapl.sample(&ctx(2));
        }
    }

    #[test]
    fn anomaly_bound_uses_at_least_one_second() {
        let (_tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap();
        rapl.sample(&ctx(0));
        // 4000 J over a zero-length interval: below 5000 W × 1 s, accepted.
        set_uj(&root, "intel-rapl:0", 1_000_000 + 4_000_000_000);
        let s = rapl.sample(&ctx(0));
        assert!(s.issues.is_empty());
        assert!(approx(energy(&s, ZoneKind::Package), 4000.0));
        // 6000 J: above the bound.
        set_uj(&root, "intel-rapl:0", 1_000_000 + 10_000_000_000);
        let s = rapl.sample(&ctx(0));
        assert_eq!(kinds_of(&s.issues), vec![IssueKind::CounterAnomaly]);
    }

    #[test]
    fn invalid_max_zone_watts_is_ignored() {
        let rapl = discover(&fixture("one_socket"))
            .unwrap()
            .with_max_zone_watts(f64::NAN)
            .with_max_zone_watts(-3.0);
        assert_eq!(rapl.max_zone_watts(), DEFAULT_MAX_ZONE_WATTS);
    }

    #[test]
    fn counter_swapped_for_a_directory_is_not_regular() {
        let (_tmp, root) = scratch("one_socket");
        let mut rapl = discover(&root).unwrap();
        rapl.sample(&ctx(1));
        // Swap dram's energy_uj for a directory: the held handle now points at an unlinked file
        // (vanished); the re-open then finds a directory, which is never read.
        let dram = zone_dir(&root, "intel-rapl:0:2").join("energy_uj");
        fs::remove_file(&dram).unwrap();
        fs::create_dir(&dram).unwrap();
        let s1 = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&s1.issues), vec![IssueKind::ZoneVanished]);
        let s2 = rapl.sample(&ctx(1));
        assert_eq!(kinds_of(&s2.issues), vec![IssueKind::NotRegular]);
        assert_eq!(s2.zones.len(), 3);
    }

    #[test]
    fn energy_uj_directory_at_discovery_fails_as_not_regular_when_nothing_reads() {
        let tmp = TempDir::new().unwrap();
        let dir = zone_dir(tmp.path(), "intel-rapl:0");
        fs::create_dir_all(dir.join("energy_uj")).unwrap();
        fs::write(dir.join("name"), "package-0\n").unwrap();
        fs::write(dir.join("max_energy_range_uj"), "262143328850\n").unwrap();
        let err = discover(tmp.path()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::NotRegular);
        assert_eq!(err.path(), dir.join("energy_uj"));
    }

    #[test]
    fn all_garbage_counters_fail_discovery_with_parse() {
        let tmp = TempDir::new().unwrap();
        let dir = zone_dir(tmp.path(), "intel-rapl:0");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("name"), "package-0\n").unwrap();
        fs::write(dir.join("energy_uj"), "\u{1}\u{2}\n").unwrap();
        let err = discover(tmp.path()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::Parse);
    }

    #[test]
    fn missing_powercap_or_no_zones_is_not_found() {
        let tmp = TempDir::new().unwrap();
        let err = discover(tmp.path()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::NotFound);
        assert_eq!(err.path(), tmp.path().join("class/powercap"));

        // a powercap dir holding only the control type, a regular file and an unknown zone.
        let powercap = tmp.path().join("class/powercap");
        fs::create_dir_all(powercap.join("intel-rapl")).unwrap();
        fs::write(powercap.join("intel-rapl:3"), "not a dir").unwrap();
        let unknown = powercap.join("intel-rapl:0");
        fs::create_dir_all(&unknown).unwrap();
        fs::write(unknown.join("name"), "mystery-0\n").unwrap();
        fs::write(unknown.join("energy_uj"), "5\n").unwrap();
        let err = discover(tmp.path()).unwrap_err();
        assert_eq!(err.kind(), IssueKind::NotFound);
    }

    #[test]
    fn symlinked_zones_are_followed_like_real_sysfs() {
        let tmp = TempDir::new().unwrap();
        let real = tmp
            .path()
            .join("devices/virtual/powercap/intel-rapl/intel-rapl:0");
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join("name"), "package-0\n").unwrap();
        fs::write(real.join("energy_uj"), "10\n").unwrap();
        fs::write(real.join("max_energy_range_uj"), "100\n").unwrap();
        let powercap = tmp.path().join("class/powercap");
        fs::create_dir_all(&powercap).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/virtual/powercap/intel-rapl/intel-rapl:0",
            powercap.join("intel-rapl:0"),
        )
        .unwrap();
        let mut rapl = discover(tmp.path()).unwrap();
        assert_eq!(rapl.zones(), &[ZoneKind::Package]);
        rapl.sample(&ctx(1));
        fs::write(real.join("energy_uj"), "5\n").unwrap();
        // wrapped at 100: (100 - 10) + 5 = 95 uJ
        assert_eq!(
            rapl.sample(&ctx(1)).zones[0].energy,
            MicroJoules(95).to_joules()
        );
        assert_eq!(MicroJoules(95).to_joules(), Joules(0.000095));
    }

    fn deny(path: &Path) -> Result<File, FileError> {
        Err(FileError::Open {
            path: path.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        })
    }

    #[test]
    fn every_zone_denied_is_permission_denied() {
        let err = discover_with(&fixture("two_sockets"), deny).unwrap_err();
        assert_eq!(err.kind(), IssueKind::PermissionDenied);
        assert!(
            err.path().ends_with("energy_uj"),
            "{}",
            err.path().display()
        );
    }

    #[test]
    fn permission_denied_for_real_when_not_root() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("skipping: running as root, chmod 000 does not deny root; see every_zone_denied_is_permission_denied");
            return;
        }
        let (_tmp, root) = scratch("one_socket");
        for dir in [
            "intel-rapl:0",
            "intel-rapl:0:0",
            "intel-rapl:0:1",
            "intel-rapl:0:2",
        ] {
            let path = zone_dir(&root, dir).join("energy_uj");
            let mut perms = fs::metadata(&path).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o000);
            fs::set_permissions(&path, perms).unwrap();
        }
        let err = discover(&root).unwrap_err();
        assert_eq!(err.kind(), IssueKind::PermissionDenied);
    }

    #[test]
    fn permission_denied_display_explains_the_fix() {
        let err = Error::PermissionDenied {
            path: PathBuf::from("/host/sys/class/powercap/intel-rapl:0/energy_uj"),
        };
        let text = err.to_string();
        assert!(text.contains("/host/sys/class/powercap/intel-rapl:0/energy_uj"));
        assert!(text.contains("root-only"));
        assert!(text.contains("5.10"));
        assert!(text.contains("CVE-2020-8694"));
        assert!(text.contains("CAP_DAC_READ_SEARCH"));
    }

    #[test]
    fn zone_ids_parse_msr_mmio_and_subzones() {
        assert_eq!(
            ZoneId::parse("intel-rapl:1:2"),
            Some(ZoneId {
                mmio: false,
                socket: 1,
                subzone: Some(2)
            })
        );
        assert_eq!(
            ZoneId::parse("intel-rapl-mmio:0"),
            Some(ZoneId {
                mmio: true,
                socket: 0,
                subzone: None
            })
        );
        assert_eq!(ZoneId::parse("intel-rapl"), None);
        assert_eq!(ZoneId::parse("intel-rapl:x"), None);
        assert_eq!(ZoneId::parse("intel-rapl:0:1:2"), None);
        assert_eq!(ZoneId::parse("dtpm"), None);
    }
}
