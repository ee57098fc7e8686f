//! Every PromQL block of docs/queries.md parses: the queries are written into a rule file (Grafana
//! variables replaced by values) and checked with `promtool check rules`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn queries_in_the_docs_parse() {
    const TEST: &str = "queries_in_the_docs_parse";
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/queries.md")).unwrap();
    let mut queries = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in doc.lines() {
        let trimmed = line.trim();
        if !in_block {
            in_block = trimmed == "```promql";
            continue;
        }
        // A query ends at a blank line or at the end of the block.
        if trimmed.is_empty() || trimmed == "```" {
            if !current.trim().is_empty() {
                queries.push(std::mem::take(&mut current));
            }
            in_block = trimmed != "```";
        } else if !trimmed.starts_with('#') {
            current.push_str(line);
            current.push('\n');
        }
    }
    assert!(queries.len() >= 12, "found only {} queries", queries.len());
    let mut rules = String::from("groups:\n  - name: docs\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q
            .replace("$__range", "1d")
            .replace("$carbon_intensity", "250")
            .replace("$user", "alice");
        rules.push_str(&format!(
            "      - record: docs:query_{i}\n        expr: |\n"
        ));
        for l in q.lines() {
            rules.push_str(&format!("          {l}\n"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            common::skip(TEST, "promtool not installed (apt-get install prometheus)");
            return;
        }
    };
    assert!(
        out.status.success(),
        "promtool rejected a query of docs/queries.md:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
