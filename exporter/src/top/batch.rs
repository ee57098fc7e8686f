//! `kepler-rs top --once`: one reading printed as a plain-text table or as JSON, for scripts and
//! `watch`. Formatting only; the rows come from `table`, the same as on the live screen.

use super::model::Reading;
use super::table::{Row, View};
use super::view::{joules_text, node_summary};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
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
struct JsonNode<'a> {
    name: &'a str,
    energy_source: &'a str,
    cpu_source: &'a str,
    total_watts: f64,
    idle_watts: f64,
    active_watts: f64,
    system_watts: f64,
    total_joules: f64,
    zones: BTreeMap<&'a str, JsonZone>,
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
}

pub fn json(
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
            total_watts: n.total_watts,
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
        })
        .collect();
    serde_json::to_string_pretty(&JsonTable {
        source,
        view,
        nodes,
        note,
        rows,
    })
}

/// Aligned plain text: a node line, then the table.
pub fn text(view: View, reading: &Reading, rows: &[Row], note: Option<&str>) -> String {
    let (name, detail) = view.headers();
    let mut lines: Vec<[String; 6]> = vec![[
        name.to_string(),
        detail.to_string(),
        "NODE".into(),
        "WATTS".into(),
        "ENERGY".into(),
        "SHARE".into(),
    ]];
    for r in rows {
        lines.push([
            r.name.clone(),
            r.detail.clone(),
            r.node.clone(),
            format!("{:.2}", r.watts),
            joules_text(r.joules),
            format!("{:.1}%", r.share * 100.0),
        ]);
    }
    let mut widths = [0usize; 6];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("{}\n", node_summary(reading));
    if let Some(note) = note {
        out.push_str(note);
        out.push('\n');
        return out;
    }
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i >= 3 {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
            text.push_str("  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{reading, HUB_USERS};
    use crate::top::table::{table, Sort};

    #[test]
    fn text_table_is_aligned_and_sorted() {
        let r = reading(HUB_USERS);
        let rows = table(&r, View::Pods, Sort::default(), "");
        let out = text(View::Pods, &r, &rows, None);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("n1  50.0 W"), "{out}");
        assert!(lines[1].starts_with("POD "), "{out}");
        assert!(lines[2].starts_with("jupyter-alice  jhub"), "{out}");
        assert!(lines[2].ends_with("20.0%"), "{out}");
        assert_eq!(lines.len(), 5);
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
}
