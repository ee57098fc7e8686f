"""The rules file passes promtool's checks and unit tests (one case per alert), and every alert has
a severity, a summary and a description."""
from __future__ import annotations

import subprocess

import yaml

from conftest import ALERTS, require_tool

RULES = ALERTS / "kepler-rs.rules.yaml"
TESTS = ALERTS / "kepler-rs.rules.test.yaml"


def test_promtool_check_rules():
    run = subprocess.run([require_tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_unit_tests():
    run = subprocess.run([require_tool("promtool"), "test", "rules", str(TESTS)], capture_output=True, text=True, cwd=ALERTS)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_unit_test_and_annotations():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    tested = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert set(alerts) == tested, f"alerts without a firing test case: {set(alerts) - tested}"
    for name, r in alerts.items():
        assert r["labels"]["severity"] in ("info", "warning", "critical"), name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
    recorded = {r["record"] for r in rules if "record" in r}
    checked = {t["expr"] for tc in tests for t in tc.get("promql_expr_test", [])}
    assert recorded - checked <= {"pod_namespace:kepler_pod_cpu_joules:rate5m"}, recorded - checked


def test_the_documented_alerts_exist():
    names = {r.get("alert") for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    for required in ["KeplerRsExporterDown", "KeplerRsRaplUnavailable", "KeplerRsRaplPermissionDenied",
                     "KeplerRsEbpfFallback", "KeplerRsPodMetadataOutOfSync", "KeplerRsEnergyCounterAnomaly"]:
        assert required in names
