//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): every parser of outside
//! input, fed raw bytes. Each checks what must hold whatever the input (no panic, nothing unsafe
//! to print) and asserts it; it adds no behaviour and is not part of the exporter's API.

use crate::activity::cgroup::mounts::parse_mountinfo;
use crate::activity::cgroup::CounterFile;
use crate::activity::ebpf::btf_ids;
use crate::activity::procfs::node_cpu::parse_proc_stat_cpu;
use crate::remote::{exposition, prometheus};
use crate::report::{Aggregator, Format, Grouping, Query};
use crate::resource::{cgroup_path, jupyterhub::HubUserPolicy, record};
use crate::source::rapl;
use std::path::Path;

/// Text as a reader would see it: these files are read as UTF-8, and bytes that are not become
/// U+FFFD.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Cgroup paths, as in `/proc/<pid>/cgroup`, a single path, or a directory name.
pub fn cgroup_paths(data: &[u8]) {
    let text = text(data);
    let _ = cgroup_path::parse_proc_cgroup(&text);
    for line in text.lines() {
        let _ = cgroup_path::classify(line);
        if let Some(uid) = cgroup_path::pod_dir_uid(line) {
            assert!(!uid.as_str().is_empty());
        }
        let _ = cgroup_path::container_dir(line);
    }
}

/// `/proc/<pid>/mountinfo`: the cgroup mounts, rebased onto a `--sysfs` root.
pub fn mountinfo(data: &[u8]) {
    for mount in parse_mountinfo(&text(data)) {
        let rebased = mount.rebased(Path::new("/host/sys"));
        assert!(!rebased.as_os_str().is_empty());
    }
}

/// The aggregate line of `/proc/stat`.
pub fn proc_stat(data: &[u8]) {
    if let Ok(ticks) = parse_proc_stat_cpu(&text(data)) {
        assert!(ticks.busy() <= ticks.total());
    }
}

/// Cgroup CPU counters (v1 `cpuacct.usage`, v2 `cpu.stat`) and powercap values (`energy_uj`,
/// `max_energy_range_uj`) and zone directory names.
pub fn counters(data: &[u8]) {
    let text = text(data);
    let _ = CounterFile::CpuacctUsage.parse(&text);
    let _ = CounterFile::CpuStat.parse(&text);
    let _ = rapl::parse_uj(data);
    let _ = rapl::ZoneId::parse(&text);
}

/// The text exposition `top` reads, then `top`'s model over what parsed.
pub fn exposition(data: &[u8]) {
    let text = text(data);
    if let Ok(samples) = exposition::parse(&text) {
        assert!(samples.len() <= text.lines().count());
        if let Ok(reading) = crate::top::model::Reading::from_samples(&samples) {
            let names = reading
                .nodes
                .keys()
                .chain(reading.pods.iter().map(|p| &p.name));
            for name in names {
                assert!(!name.chars().any(char::is_control), "{name:?}");
            }
        }
    }
}

/// A Prometheus API answer, decoded as `report` streams it and fed to every report query; each
/// format is rendered and must hold no control character but newlines.
pub fn prometheus_answer(data: &[u8]) {
    let mut samples = Vec::new();
    let _ = prometheus::decode(&mut &data[..], "http://fuzz/api/v1/query", &mut |s| {
        samples.push(s)
    });
    let queries = [
        Query::Nodes,
        Query::NodeIdle,
        Query::Pods,
        Query::PodInfo,
        Query::Gpus,
        Query::GpuIdle,
        Query::PodGpus,
        Query::Estimated,
    ];
    let mut aggregator = Aggregator::default();
    for (i, s) in samples.iter().enumerate() {
        aggregator.add(queries[i % queries.len()], s);
    }
    let by = [Grouping::User, Grouping::Namespace, Grouping::Pod];
    let report = aggregator.finish(0.0, 3600.0, &by, data.first().is_some_and(|b| b & 1 == 1));
    for format in [Format::Table, Format::Csv, Format::Markdown, Format::Json] {
        let out = report.render(format, "http://fuzz", Some(400.0));
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{format:?} printed a control character: {out:?}"
        );
    }
    for warning in report.warnings() {
        assert!(!warning.chars().any(char::is_control), "{warning:?}");
    }
}

/// The `--config` YAML file's syntax and fields.
/// Also holds the depth pre-scan to its promise: a text it lets through at a limit parses no deeper.
pub fn config_yaml(data: &[u8]) {
    let text = text(data);
    let _ = serde_yaml_ng::from_str::<crate::config::RunArgs>(&text);
    for limit in [1, 2, 4, 8] {
        if crate::yaml_depth::check_depth(&text, limit).is_ok() {
            if let Ok(value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
                let depth = crate::yaml_depth::parsed_depth(&value);
                assert!(
                    depth <= limit,
                    "the scan let {depth} levels through at {limit}"
                );
            }
        }
    }
}

/// The `--web.config.file` YAML file, validated as at start (file names resolved, not read).
pub fn web_config(data: &[u8]) {
    let path = Path::new("/nonexistent/web.yml");
    let _ = crate::web::config::parse(&text(data), path, Path::new("/nonexistent"));
}

/// A pod as the API server sends it (JSON), turned into the record the pod cache keeps.
pub fn pod_record(data: &[u8]) {
    let Ok(pod) = serde_json::from_slice::<k8s_openapi::api::core::v1::Pod>(data) else {
        return;
    };
    let policy = HubUserPolicy::raw_in(&["jhub"]);
    let _ = record::pod_record(&pod, "node-a", &policy);
    let _ = record::pod_record(&pod, "node-a", &HubUserPolicy::default());
}

/// A kernel BTF blob (`/sys/kernel/btf/vmlinux`): the typedef ids of the tracepoints and the offsets
/// of struct members. A typedef has one name, so two different names never get the same id, and no
/// id is 0 (`void`); a member found is byte-aligned, so its offset fits a struct of 2^29 bytes.
pub fn btf_typedefs(data: &[u8]) {
    let names = [
        "btf_trace_sched_switch",
        "btf_trace_sched_process_exit",
        "a",
    ];
    let members = [("task_struct", "pid"), ("a", "b"), ("task_struct", "se")];
    if let Ok((found, offsets)) = btf_ids::find(data, names, members) {
        let ids: Vec<u32> = found.into_iter().flatten().collect();
        assert!(ids.iter().all(|id| *id > 0), "{ids:?}");
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        assert!(
            offsets.into_iter().flatten().all(|o| o < 1 << 29),
            "{offsets:?}"
        );
    }
}
