"""checkov (offline, --skip-download) scans every rendered value set of the chart, the bootstrap's own
manifests and both Containerfiles. It may report only the by-design exceptions below, each where its
condition holds; a finding outside them, or an exception that no longer fires, fails."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BOOTSTRAP, REPO, render_chart
from test_chart import VALUE_SETS, values_for


def _get(values: dict, dotted: str, default):
    node = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


# check id -> (why it is by design, the value sets where it applies). deploy/README.md, "Security",
# lists the same exceptions.
EXCEPTIONS = {
    "CKV_K8S_17": ("hostPID: the exporter reads every process's cgroup and CPU time", lambda v: True),
    "CKV_K8S_23": ("uid 0: Kubernetes grants added capabilities only to uid 0, and uid 0 owns the root-only "
                   "RAPL and /proc files, so no DAC capability is needed", lambda v: True),
    "CKV_K8S_40": ("uid 0 (the same reason as CKV_K8S_23)", lambda v: True),
    "CKV_K8S_25": ("CAP_BPF and CAP_PERFMON, only where the values may load the eBPF CPU source",
                   lambda v: _get(v, "exporter.cpuSource", "auto") == "ebpf"
                   or (_get(v, "exporter.cpuSource", "auto") == "auto"
                       and (_get(v, "exporter.processMetrics", False)
                            or _get(v, "exporter.cpuCounters", "auto") != "off"))),
    "CKV_K8S_38": ("the service account token, only when the exporter watches pods (kubernetes.metadata)",
                   lambda v: _get(v, "kubernetes.metadata", True)),
    "CKV_K8S_43": ("image by tag, only while image.digest is empty: the bootstrap imports a locally built "
                   "image, which no registry serves", lambda v: not _get(v, "image.digest", "")),
    "CKV_K8S_15": ("pull policy IfNotPresent, only without a digest (the same reason as CKV_K8S_43)",
                   lambda v: not _get(v, "image.digest", "")),
}

# Resources from the bootstrap's own manifests and the Containerfiles: no exception at all.
CANARY = {  # must be reported: proves the scanner ran its Kubernetes checks
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "canary", "namespace": "default"},
    "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
}


@pytest.fixture(scope="module")
def findings(tmp_path_factory) -> dict[str, list[tuple[str, str]]]:
    checkov = Path(sys.executable).with_name("checkov")
    if not checkov.exists():
        pytest.fail("checkov is not installed in the test venv (deploy/tests/requirements.txt)")
    root = tmp_path_factory.mktemp("checkov")
    for name in VALUE_SETS:
        objects = [o for o in render_chart(values_for(name)) if o["kind"] != "ConfigMap"]  # dashboards: JSON only
        (root / f"chart-{name}.yaml").write_text(yaml.safe_dump_all(objects))
    for path in sorted((BOOTSTRAP / "manifests").glob("*.yaml")):
        if "patch" not in path.name:
            shutil.copy(path, root / f"bootstrap-{path.name}")
    (root / "canary.yaml").write_text(yaml.safe_dump(CANARY))
    for name, path in {"kepler-rs": REPO / "deploy" / "Containerfile",
                       "jupyterhub-ssh": BOOTSTRAP / "images" / "jupyterhub-ssh" / "Containerfile"}.items():
        (root / f"image-{name}").mkdir()
        shutil.copy(path, root / f"image-{name}" / "Dockerfile")  # checkov finds Dockerfiles by name
    run = subprocess.run([str(checkov), "-d", str(root), "--framework", "kubernetes", "dockerfile", "--skip-download",
                          "--quiet", "--compact", "-o", "json"], capture_output=True, text=True, timeout=600)
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    scanned = {r["check_type"]: r["summary"]["resource_count"] for r in reports}
    assert scanned.get("dockerfile") == 2 and scanned.get("kubernetes", 0) > 20, scanned
    out: dict[str, list[tuple[str, str]]] = {}
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
        for f in report["results"]["failed_checks"]:
            out.setdefault(Path(f["file_path"]).parent.name if "image-" in f["file_path"] else Path(f["file_path"]).stem,
                           []).append((f["check_id"], f["resource"]))
    return out


def test_the_scanner_reports_a_privileged_pod(findings):
    assert ("CKV_K8S_16", "Pod.default.canary") in findings["canary"], findings.get("canary")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_chart_reports_only_documented_exceptions(findings, name):
    values = values_for(name)
    unexpected = [(check, resource) for check, resource in findings.get(f"chart-{name}", [])
                  if not (check in EXCEPTIONS and EXCEPTIONS[check][1](values))]
    assert not unexpected, f"{name}: checkov findings outside the documented exceptions: {unexpected}"


def test_every_exception_is_still_needed(findings):
    fired = {check for name in VALUE_SETS for check, _ in findings.get(f"chart-{name}", [])}
    assert fired == set(EXCEPTIONS), f"exceptions that no longer fire: {set(EXCEPTIONS) - fired}"


def test_bootstrap_manifests_and_containerfiles_are_clean(findings):
    dirty = {k: v for k, v in findings.items() if k.startswith(("bootstrap-", "image-"))}
    assert not dirty, dirty
