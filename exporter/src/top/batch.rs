//! `kepler-rs top --once`: one reading printed as a plain-text table or as JSON, for scripts and
//! `watch`. Formatting only; the rows come from `table`, the same as on the live screen.

use super::gpu::GpuDevice;
use super::model::Reading;
use super::table::{self, Column, Row, View};
use super::view::node_summary;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Serialize)]
struct JsonZone {
    joules: f64,
    watts: f64,
    counted_in_total: bool,
}

#[derive(Serialize)]
struct JsonGpu<'a> {
    index: &'a str,
    gpu_uuid: &'a str,
    name: &'a str,
    method: &'a str,
    /// False when only pod series named this device.
    has_device_series: bool,
    watts: f64,
    idle_watts: f64,
    active_watts: f64,
    unattributed_watts: f64,
    joules: f64,
}

impl<'a> JsonGpu<'a> {
    fn of(g: &'a GpuDevice) -> JsonGpu<'a> {
        JsonGpu {
            index: &g.index,
            gpu_uuid: &g.uuid,
            name: &g.name,
            method: &g.method,
            has_device_series: g.has_device_series,
            watts: g.watts.total,
            idle_watts: g.watts.idle,
            active_watts: g.watts.active,
            unattributed_watts: g.watts.unattributed,
            joules: g.joules.total,
        }
    }
}

#[derive(Serialize)]
struct JsonNode<'a> {
    name: &'a str,
    energy_source: &'a str,
    cpu_source: &'a str,
    /// CPU and GPU power together.
    total_watts: f64,
    cpu_watts: f64,
    gpu_watts: f64,
    /// CPU idle, active and system power (the zones of the node total).
    idle_watts: f64,
    active_watts: f64,
    system_watts: f64,
    /// CPU energy since the exporter started (the node-total rule).
    total_joules: f64,
    zones: BTreeMap<&'a str, JsonZone>,
    gpus: Vec<JsonGpu<'a>>,
}

#[derive(Serialize)]
struct JsonTable<'a> {
    source: &'a str,
    view: View,
    nodes: Vec<JsonNode<'a>>,
    /// Why there are no rows, when the view has no data.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    rows: &'a [Row],
    /// Series whose value was NaN or infinite (their figures are `null`).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

pub(crate) fn json(
    source: &str,
    view: View,
    reading: &Reading,
    rows: &[Row],
    note: Option<&str>,
) -> Result<String, serde_json::Error> {
    let nodes = reading
        .nodes
        .values()
        .map(|n| JsonNode {
            name: &n.name,
            energy_source: &n.energy_source,
            cpu_source: &n.cpu_source,
            total_watts: n.total_watts(),
            cpu_watts: n.cpu_watts,
            gpu_watts: n.gpu_watts,
            idle_watts: n.idle_watts(),
            active_watts: n.active_watts(),
            system_watts: n.system_watts(),
            total_joules: n.total_joules(),
            zones: n
                .zones
                .iter()
                .map(|(zone, f)| {
                    (
                        zone.as_str(),
                        JsonZone {
                            joules: f.joules,
                            watts: f.watts,
                            counted_in_total: n.counts_zone(zone),
                        },
                    )
                })
                .collect(),
            gpus: reading.node_gpus(&n.name).map(JsonGpu::of).collect(),
        })
        .collect();
    serde_json::to_string_pretty(&JsonTable {
        source,
        view,
        nodes,
        note,
        rows,
        warnings: &reading.warnings,
    })
}

/// Aligned plain text: the header lines, then the table (rows under a parent indented).
pub(crate) fn text(view: View, reading: &Reading, rows: &[Row], note: Option<&str>) -> String {
    let columns = table::columns(Some(reading), view);
    let mut lines: Vec<Vec<String>> =
        vec![columns.iter().map(|c| c.header(view).to_string()).collect()];
    for r in rows {
        lines.push(columns.iter().map(|c| r.cell(*c)).collect());
    }
    let mut widths = vec![0usize; columns.len()];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out: String = node_summary(reading)
        .into_iter()
        .map(|l| l + "\n")
        .collect();
    if let Some(note) = note {
        out.push_str(note);
        out.push('\n');
        return out;
    }
    for line in &lines {
        // Text left-aligned, numbers right-aligned; `fmt` pads by characters, as `widths` counts.
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .zip(&columns)
            .map(|((cell, &width), column)| match column {
                Column::Name | Column::Detail | Column::Node => format!("{cell:<width$}"),
                _ => format!("{cell:>width$}"),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{reading, GPU_NODE, HUB_USERS, TWO_PODS};
    use crate::top::table::{table, Sort};

    #[test]
    fn text_table_is_aligned_and_sorted() {
        let r = reading(HUB_USERS);
        let rows = table(&r, View::Pods, Sort::default(), "");
        let out = text(View::Pods, &r, &rows, None);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("n1  CPU 50.0 W  GPU none  total 50.0 W"),
            "{out}"
        );
        assert!(lines[3].starts_with("POD "), "{out}");
        assert!(
            !lines[3].contains("GPU W"),
            "no GPU columns without GPU series: {out}"
        );
        assert!(lines[4].starts_with("jupyter-alice  jhub"), "{out}");
        assert!(lines[4].ends_with("20.0%"), "{out}");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn json_has_nodes_rows_and_notes() {
        let r = reading(HUB_USERS);
        let rows = table(&r, View::Users, Sort::default(), "");
        let out = json("http://n1:28282/metrics", View::Users, &r, &rows, None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["view"], "users");
        assert_eq!(v["nodes"][0]["total_watts"], 50.0);
        assert_eq!(v["nodes"][0]["zones"]["core"]["counted_in_total"], false);
        assert_eq!(v["rows"][0]["name"], "alice");
        assert_eq!(v["rows"][0]["watts"], 10.0);
        assert!(v.get("note").is_none());
    }

    #[test]
    fn json_and_text_carry_the_gpu_columns_and_devices() {
        let r = reading(GPU_NODE);
        let rows = table(&r, View::Pods, Sort::default(), "");
        let v: serde_json::Value =
            serde_json::from_str(&json("x", View::Pods, &r, &rows, None).unwrap()).unwrap();
        let node = &v["nodes"][0];
        assert_eq!(
            (&node["cpu_watts"], &node["gpu_watts"], &node["total_watts"]),
            (&50.0.into(), &580.0.into(), &630.0.into())
        );
        assert_eq!(node["gpus"].as_array().unwrap().len(), 3);
        assert_eq!(node["gpus"][0]["gpu_uuid"], "GPU-aaaa");
        assert_eq!(node["gpus"][0]["idle_watts"], 50.0);
        assert_eq!(node["gpus"][2]["method"], "power_integral");
        let alice = &v["rows"][0];
        assert_eq!(alice["name"], "jupyter-alice");
        assert_eq!(
            (&alice["cpu_watts"], &alice["gpu_watts"], &alice["watts"]),
            (&5.0.into(), &187.5.into(), &192.5.into())
        );
        assert_eq!(alice["gpu_joules"], 18750.0);
        assert!(alice.get("gpu").is_none() && alice.get("depth").is_none());

        let rows = table(&r, View::Gpus, Sort::default(), "");
        let v: serde_json::Value =
            serde_json::from_str(&json("x", View::Gpus, &r, &rows, None).unwrap()).unwrap();
        let rows_json = v["rows"].as_array().unwrap();
        assert_eq!(rows_json.len(), 15);
        assert_eq!(rows_json[0]["gpu"]["kind"], "device");
        assert_eq!(rows_json[1]["gpu"]["kind"], "pod");
        assert_eq!(rows_json[1]["depth"], 1);
        assert_eq!(rows_json[7]["gpu"]["gpu_instance"], "MIG-big");
        assert_eq!(rows_json[7]["depth"], 2);

        let out = text(
            View::Pods,
            &r,
            &table(&r, View::Pods, Sort::default(), ""),
            None,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[3].contains("WATTS  CPU W  GPU W    ENERGY"), "{out}");
        assert!(
            lines[4].starts_with("jupyter-alice")
                && lines[4].contains("192.50    5.0  187.5  19.75 kJ"),
            "{out}"
        );
        let out = text(View::Gpus, &r, &rows, None);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[3].starts_with("GPU / POD "), "{out}");
        assert!(!lines[3].contains("CPU W"), "{out}");
        assert!(lines[4].starts_with("0: NVIDIA H200 "), "{out}");
        assert!(lines[5].starts_with("  jupyter-alice "), "{out}");
        assert!(lines[11].starts_with("    train-carol "), "{out}");
    }

    #[test]
    fn a_cpu_only_source_says_it_has_no_gpus() {
        let r = reading(TWO_PODS);
        let note = crate::top::table::empty_reason(&r, View::Gpus);
        let v: serde_json::Value =
            serde_json::from_str(&json("x", View::Gpus, &r, &[], note).unwrap()).unwrap();
        assert!(v["note"].as_str().unwrap().contains("no GPU series"), "{v}");
        assert_eq!(v["nodes"][0]["gpus"].as_array().unwrap().len(), 0);
        assert_eq!(v["nodes"][0]["gpu_watts"], 0.0);
    }
}
