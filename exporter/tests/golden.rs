//! Golden exposition over committed fixture trees, without root (node_exporter's end-to-end test).
//! Each scenario under `tests/fixtures/<scenario>/` holds a `sys/` and `proc/` tree (powercap zones,
//! a cgroup v2 kubepods tree, `/proc/stat` and `/proc/1/mountinfo`) and `expected.prom`: the metric
//! names, label sets and types the real binary serves over that tree, values removed. Values are
//! checked by the energy model's identities instead. `KEPLER_RS_UPDATE_GOLDEN=1` rewrites the
//! expected files from what the binary serves.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::cgroups::{assert_conservation, rel_close, scrape_after_tick};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Labels whose values change with every build: kept as names, values replaced.
const VOLATILE_LABELS: [&str; 5] = ["version", "revision", "branch", "arch", "goversion"];

/// Energy added to each powercap zone per advance (package, dram).
const PACKAGE_UJ_PER_STEP: u64 = 20_000_000;
const DRAM_UJ_PER_STEP: u64 = 2_000_000;
/// Each step adds, per logical CPU, this many USER_HZ ticks of user, system and idle time.
const STAT_STEP: [u64; 3] = [40, 10, 10];

#[test]
fn golden_cgroup_v2_systemd() {
    golden("cgroup_v2_systemd");
}

#[test]
fn golden_cgroup_v2_cgroupfs() {
    golden("cgroup_v2_cgroupfs");
}

/// The same tree with Kepler 0.7's families on (`expected-kepler-0.7.prom`); the 0.7 identities hold
/// on every scrape, and the exposition without the flag has none of those families.
#[test]
fn golden_cgroup_v2_systemd_kepler07() {
    golden_with(
        "cgroup_v2_systemd",
        &["--metrics-compat", "kepler-0.7"],
        "expected-kepler-0.7.prom",
    );
}

fn fixture_dir(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(scenario)
}

/// Runs the binary over a copy of the scenario's tree, advances its counters between ticks, checks the
/// identities on every scrape and diffs the last exposition's names and labels with `expected.prom`.
fn golden(scenario: &str) {
    golden_with(scenario, &[], "expected.prom");
}

fn golden_with(scenario: &str, extra_args: &[&str], expected_file: &str) {
    let kepler07 = !extra_args.is_empty();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(scenario);
    copy_tree(&fixture_dir(scenario), &root);
    let mut host = FixtureHost::open(&root);

    let args = fixture_args(
        &root,
        "500ms",
        "golden-node",
        &["--idle-watts", "package=5,dram=0.5"],
    );
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra_args);
    let mut e = Exporter::start(&args);
    e.wait_ready(Duration::from_secs(20));

    let mut last = String::new();
    for _ in 0..3 {
        // Right after a tick, so that no read of the next tick sees half an advance.
        host.advance();
        let (text, samples) = scrape_after_tick(&e);
        assert_conservation(&samples);
        if kepler07 {
            common::cgroups::assert_kepler07_conservation(&samples);
        } else {
            assert!(!text.contains("mode=\""), "0.7 families without the flag");
        }
        host.assert_split(&samples);
        last = text;
    }
    assert_promtool_clean(&format!("golden_{scenario}"), &last);

    let actual = normalise(&last);
    let expected_path = fixture_dir(scenario).join(expected_file);
    if std::env::var("KEPLER_RS_UPDATE_GOLDEN").as_deref() == Ok("1") {
        fs::write(&expected_path, &actual).unwrap();
        eprintln!("updated {}", expected_path.display());
        return;
    }
    let expected = fs::read_to_string(&expected_path).unwrap_or_else(|err| {
        panic!(
            "{}: {err} (KEPLER_RS_UPDATE_GOLDEN=1 writes it)",
            expected_path.display()
        )
    });
    let differences = diff(&expected, &actual);
    assert!(
        differences.is_empty(),
        "{scenario}: the exposition differs from {} (- expected, + served; \
         KEPLER_RS_UPDATE_GOLDEN=1 rewrites it if the change is intended):\n{}",
        expected_path.display(),
        differences.join("\n")
    );
}

/// Copies a directory tree (`to` must not exist yet: `cp -R` then creates it as the copy).
fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-R")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -R {} {}",
        from.display(),
        to.display()
    );
}

/// A cgroup directory of the fixture with `cpu.stat`, and the CPU time one advance adds to it.
struct Cgroup {
    rel: PathBuf,
    usage_usec: u64,
    step_usec: u64,
}

/// The temporary copy of a scenario, whose counters the test advances. Every counter is rewritten in
/// place at a fixed width: the exporter keeps the files open and re-reads them from offset 0.
struct FixtureHost {
    root: PathBuf,
    /// `energy_uj` files and the energy one advance adds.
    zones: Vec<(PathBuf, u64, u64)>,
    cgroups: Vec<Cgroup>,
    /// `/proc/stat` per logical CPU: user, system, idle ticks.
    cpus: Vec<[u64; 3]>,
    steps: u64,
}

impl FixtureHost {
    fn open(root: &Path) -> FixtureHost {
        let powercap = root.join("sys/class/powercap");
        let mut zones = Vec::new();
        for entry in fs::read_dir(&powercap).unwrap() {
            let dir = entry.unwrap().path();
            let Ok(name) = fs::read_to_string(dir.join("name")) else {
                continue;
            };
            let step = if name.trim() == "dram" {
                DRAM_UJ_PER_STEP
            } else {
                PACKAGE_UJ_PER_STEP
            };
            let energy: u64 = read_trimmed(&dir.join("energy_uj")).parse().unwrap();
            zones.push((dir.join("energy_uj"), energy, step));
        }
        assert!(!zones.is_empty(), "{}: no zones", powercap.display());

        let cgroup_root = root.join("sys/fs/cgroup");
        let mut rels = Vec::new();
        cgroup_dirs(&cgroup_root, Path::new(""), &mut rels);
        rels.sort();
        // Leaves get 25, 50, 75 or 100 ms of CPU per advance; a parent gets the sum of its children.
        let mut cgroups: Vec<Cgroup> = rels
            .iter()
            .map(|rel| Cgroup {
                rel: rel.clone(),
                usage_usec: usage_usec(&read_trimmed(&cgroup_root.join(rel).join("cpu.stat"))),
                step_usec: 0,
            })
            .collect();
        let leaves: Vec<usize> = (0..cgroups.len())
            .filter(|&i| {
                !rels
                    .iter()
                    .any(|other| other != &rels[i] && other.starts_with(&rels[i]))
            })
            .collect();
        for (n, &leaf) in leaves.iter().enumerate() {
            let step = 25_000 * (n as u64 % 4 + 1);
            let leaf_rel = cgroups[leaf].rel.clone();
            for cgroup in &mut cgroups {
                if leaf_rel.starts_with(&cgroup.rel) {
                    cgroup.step_usec += step;
                }
            }
        }

        let stat = read_trimmed(&root.join("proc/stat"));
        let cpus = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .map(|l| {
                let f: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .map(|v| v.parse().unwrap())
                    .collect();
                [f[0], f[2], f[3]]
            })
            .collect();
        let host = FixtureHost {
            root: root.to_path_buf(),
            zones,
            cgroups,
            cpus,
            steps: 0,
        };
        host.write();
        host
    }

    /// Adds one step to every counter.
    fn advance(&mut self) {
        for (_, energy, step) in &mut self.zones {
            *energy += *step;
        }
        for cgroup in &mut self.cgroups {
            cgroup.usage_usec += cgroup.step_usec;
        }
        for cpu in &mut self.cpus {
            for (value, step) in cpu.iter_mut().zip(STAT_STEP) {
                *value += step;
            }
        }
        self.steps += 1;
        self.write();
    }

    fn write(&self) {
        for (path, energy, _) in &self.zones {
            write_in_place(path, &format!("{energy:020}\n"));
        }
        for cgroup in &self.cgroups {
            let usage = cgroup.usage_usec;
            let user = usage / 4 * 3;
            write_in_place(
                &self
                    .root
                    .join("sys/fs/cgroup")
                    .join(&cgroup.rel)
                    .join("cpu.stat"),
                &format!(
                    "usage_usec {usage:020}\nuser_usec {user:020}\nsystem_usec {:020}\n",
                    usage - user
                ),
            );
        }
        let line = |name: &str, [user, system, idle]: [u64; 3]| {
            format!("{name} {user:020} 0 {system:020} {idle:020} 0 0 0 0 0 0\n")
        };
        let total = self.cpus.iter().fold([0; 3], |acc, cpu| {
            [acc[0] + cpu[0], acc[1] + cpu[1], acc[2] + cpu[2]]
        });
        let mut stat = line("cpu ", total);
        for (n, cpu) in self.cpus.iter().enumerate() {
            stat.push_str(&line(&format!("cpu{n}"), *cpu));
        }
        stat.push_str("ctxt 9000000\nbtime 1700000000\nprocesses 42000\n");
        write_in_place(&self.root.join("proc/stat"), &stat);
    }

    /// CPU time one advance adds to the one cgroup whose directory name, without `.slice` or
    /// `.scope`, ends with one of `suffixes` (CRI-O's `crio-conmon-<id>` monitor scopes excluded).
    fn step_of(&self, suffixes: &[String]) -> u64 {
        let matching: Vec<&Cgroup> = self
            .cgroups
            .iter()
            .filter(|c| {
                let name = c.rel.file_name().unwrap().to_string_lossy();
                let name = name.trim_end_matches(".slice").trim_end_matches(".scope");
                !name.contains("conmon-") && suffixes.iter().any(|s| name.ends_with(s.as_str()))
            })
            .collect();
        assert_eq!(matching.len(), 1, "one cgroup ending in {suffixes:?}");
        matching[0].step_usec
    }

    /// A pod's step: its directory ends with `pod<uid>` (cgroupfs) or `pod<uid_with_underscores>`
    /// (systemd).
    fn pod_step(&self, uid: &str) -> u64 {
        self.step_of(&[format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))])
    }

    /// A container's step: its directory ends with its ID, whatever the runtime prefix.
    fn container_step(&self, id: &str) -> u64 {
        self.step_of(&[id.to_string()])
    }

    /// Every interval since the first advance split active energy the same way, so cumulative pod
    /// joules are in the ratio of the pods' cgroup CPU time per advance, and a pod's containers in
    /// the ratio of theirs.
    fn assert_split(&self, samples: &[(Key, f64)]) {
        let pods = label_values(samples, "kepler_pod_cpu_joules_total", "pod_id");
        assert!(pods.len() >= 2, "pods: {pods:?}");
        for zone in label_values(samples, "kepler_node_cpu_joules_total", "zone") {
            let pod_joules = |uid: &str| {
                sum(
                    samples,
                    "kepler_pod_cpu_joules_total",
                    &[("zone", &zone), ("pod_id", uid)],
                )
            };
            let (first, first_step) = (&pods[0], self.pod_step(&pods[0]) as f64);
            assert!(pod_joules(first) > 0.0, "{zone}: pod {first} got nothing");
            for pod in &pods[1..] {
                let energy_ratio = pod_joules(pod) / pod_joules(first);
                let cpu_ratio = self.pod_step(pod) as f64 / first_step;
                assert!(
                    rel_close(energy_ratio, cpu_ratio, 1e-6),
                    "{zone}: pod {pod} / {first}: energy {energy_ratio} vs CPU {cpu_ratio}"
                );
                let containers: Vec<String> = samples
                    .iter()
                    .filter(|(k, _)| {
                        k.name == "kepler_container_cpu_joules_total"
                            && k.labels.get("pod_id") == Some(pod)
                            && k.labels.get("zone") == Some(&zone)
                    })
                    .filter_map(|(k, _)| k.labels.get("container_id").cloned())
                    .collect();
                assert!(
                    !containers.is_empty(),
                    "{zone}: pod {pod} has no containers"
                );
                let container_joules = |id: &str| {
                    sum(
                        samples,
                        "kepler_container_cpu_joules_total",
                        &[("zone", &zone), ("container_id", id)],
                    )
                };
                for pair in containers.windows(2) {
                    let energy_ratio = container_joules(&pair[1]) / container_joules(&pair[0]);
                    let cpu_ratio =
                        self.container_step(&pair[1]) as f64 / self.container_step(&pair[0]) as f64;
                    assert!(
                        rel_close(energy_ratio, cpu_ratio, 1e-6),
                        "{zone}: containers {pair:?}: energy {energy_ratio} vs CPU {cpu_ratio}"
                    );
                }
            }
            // System gets the node's busy time outside pods: not nothing.
            let system = sum(
                samples,
                "kepler_node_cpu_system_joules_total",
                &[("zone", &zone)],
            );
            assert!(system > 0.0, "{zone}: system got nothing");
            // Sockets add up to the zone.
            let sockets = sum(
                samples,
                "kepler_node_cpu_socket_joules_total",
                &[("zone", &zone)],
            );
            let total = sum(samples, "kepler_node_cpu_joules_total", &[("zone", &zone)]);
            assert!(
                rel_close(sockets, total, 1e-9),
                "{zone}: sockets {sockets} != zone {total}"
            );
        }
        // Every zone's energy since the exporter's first read is what the test added.
        let added_uj: u64 = self
            .zones
            .iter()
            .map(|(_, _, step)| step * self.steps)
            .sum();
        let served = sum(samples, "kepler_node_cpu_joules_total", &[]);
        assert!(
            rel_close(served, added_uj as f64 / 1e6, 1e-9),
            "all zones: served {served} J, the fixture advanced {added_uj} uJ"
        );
    }
}

fn cgroup_dirs(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let dir = root.join(rel);
    if dir.join("cpu.stat").is_file() && !rel.as_os_str().is_empty() {
        out.push(rel.to_path_buf());
    }
    for entry in fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            cgroup_dirs(root, &rel.join(entry.file_name()), out);
        }
    }
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn usage_usec(cpu_stat: &str) -> u64 {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Overwrites a file from offset 0 without truncating it first, so that a reader never sees it empty.
/// Every write of one file has the same length.
fn write_in_place(path: &Path, content: &str) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(content.as_bytes(), 0).unwrap();
    file.set_len(content.len() as u64).unwrap();
}

/// The exposition reduced to what must not change without intent: for each family its `# TYPE` line,
/// then its samples' names and label sets, sorted, without values.
fn normalise(exposition: &str) -> String {
    let mut types = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((family, kind)) = rest.split_once(' ') {
                types.insert(family.to_string(), kind.to_string());
            }
        }
    }
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, _) in parse(exposition) {
        // The longest family name the sample's name starts with (`x_total` belongs to `x`).
        let family = types
            .keys()
            .filter(|f| key.name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .cloned()
            .unwrap_or_else(|| key.name.clone());
        let labels: Vec<String> = key
            .labels
            .iter()
            .map(|(name, value)| {
                let value = if VOLATILE_LABELS.contains(&name.as_str()) {
                    "*".to_string()
                } else {
                    value
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                };
                format!("{name}=\"{value}\"")
            })
            .collect();
        let sample = if labels.is_empty() {
            key.name.clone()
        } else {
            format!("{}{{{}}}", key.name, labels.join(","))
        };
        families.entry(family).or_default().insert(sample);
    }
    let mut out = String::new();
    for (family, samples) in &families {
        if let Some(kind) = types.get(family) {
            out.push_str(&format!("# TYPE {family} {kind}\n"));
        }
        for sample in samples {
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// Lines of `expected` missing from `actual` ("- ") and lines of `actual` not expected ("+ ").
fn diff(expected: &str, actual: &str) -> Vec<String> {
    let expected: BTreeSet<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
    let actual: BTreeSet<&str> = actual.lines().filter(|l| !l.is_empty()).collect();
    let missing = expected.difference(&actual).map(|l| format!("- {l}"));
    let unexpected = actual.difference(&expected).map(|l| format!("+ {l}"));
    missing.chain(unexpected).collect()
}

const SAMPLE_EXPOSITION: &str = "\
# HELP kepler_pod_cpu_joules Active energy attributed to the pod.
# TYPE kepler_pod_cpu_joules counter
kepler_pod_cpu_joules_total{node_name=\"n\",pod_id=\"6f1c9a4e\",zone=\"package\"} 12.5
kepler_pod_cpu_joules_total{node_name=\"n\",pod_id=\"6f1c9a4e\",zone=\"dram\"} 1.25
# HELP kepler_exporter_build_info Build.
# TYPE kepler_exporter_build_info gauge
kepler_exporter_build_info{revision=\"abc\",version=\"0.1.0\"} 1
";

#[test]
fn golden_diff_fails_on_a_renamed_label_or_metric_and_ignores_values() {
    let expected = normalise(SAMPLE_EXPOSITION);
    assert!(expected.contains(
        "kepler_pod_cpu_joules_total{node_name=\"n\",pod_id=\"6f1c9a4e\",zone=\"dram\"}\n"
    ));
    assert!(expected.contains("# TYPE kepler_pod_cpu_joules counter\n"));
    assert_eq!(
        diff(&expected, &normalise(SAMPLE_EXPOSITION)),
        Vec::<String>::new()
    );

    let renamed_label = SAMPLE_EXPOSITION.replace("pod_id=", "pod_uid=");
    let differences = diff(&expected, &normalise(&renamed_label));
    assert_eq!(differences.len(), 4, "{differences:?}");
    assert!(differences
        .iter()
        .any(|l| l.starts_with("- ") && l.contains("pod_id=")));
    assert!(differences
        .iter()
        .any(|l| l.starts_with("+ ") && l.contains("pod_uid=")));

    let renamed_metric = SAMPLE_EXPOSITION.replace("kepler_pod_cpu_joules", "kepler_pod_joules");
    assert!(!diff(&expected, &normalise(&renamed_metric)).is_empty());

    let retyped = SAMPLE_EXPOSITION.replace("joules counter", "joules gauge");
    assert_eq!(
        diff(&expected, &normalise(&retyped)),
        vec![
            "- # TYPE kepler_pod_cpu_joules counter".to_string(),
            "+ # TYPE kepler_pod_cpu_joules gauge".to_string()
        ]
    );

    // Values, and the build's version and revision, are not compared.
    let other_values = SAMPLE_EXPOSITION
        .replace("} 12.5", "} 99")
        .replace("version=\"0.1.0\"", "version=\"0.2.0\"")
        .replace("revision=\"abc\"", "revision=\"def\"");
    assert!(diff(&expected, &normalise(&other_values)).is_empty());
}

#[test]
fn committed_expectations_fail_on_a_renamed_label() {
    for scenario in ["cgroup_v2_systemd", "cgroup_v2_cgroupfs"] {
        let path = fixture_dir(scenario).join("expected.prom");
        let expected = fs::read_to_string(&path).unwrap();
        assert!(expected.contains("zone=\"package\""), "{}", path.display());
        let renamed = expected.replace("zone=", "zone_name=");
        assert!(
            !diff(&expected, &renamed).is_empty(),
            "{scenario}: a renamed label went unnoticed"
        );
    }
}
