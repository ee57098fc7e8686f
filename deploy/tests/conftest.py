"""Shared helpers for the deploy/ and dashboards/ tests: paths, chart rendering, privileged skips."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kepler-rs"
DASHBOARDS = REPO / "dashboards"
ALERTS = REPO / "deploy" / "alerts"
BOOTSTRAP = REPO / "deploy" / "bootstrap"
MANIFESTS = REPO / "deploy" / "manifests"
MICROK8S_VALUES = BOOTSTRAP / "values" / "kepler-rs.yaml"

# The only capabilities a kepler-rs container may hold (deploy/README.md, "Security"), and only with
# the eBPF CPU source; the cgroup source holds none.
DOCUMENTED_CAPABILITIES = {"BPF", "PERFMON"}
# Never, under any value set: the open_by_handle_at escape, the near-root capability, privileged mode.
FORBIDDEN_CAPABILITIES = {"DAC_READ_SEARCH", "DAC_OVERRIDE", "SYS_ADMIN", "ALL"}


def skip_or_fail(why: str) -> None:
    """Skip with a reason, or fail when KEPLER_RS_REQUIRE_PRIVILEGED=1 (CI) forbids skipping. A skip is
    also appended to the file KEPLER_RS_SKIP_LOG names (scripts/test.sh lists them at the end)."""
    if os.environ.get("KEPLER_RS_REQUIRE_PRIVILEGED") == "1":
        pytest.fail(f"cannot skip under KEPLER_RS_REQUIRE_PRIVILEGED=1: {why}")
    log = os.environ.get("KEPLER_RS_SKIP_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "deploy/tests").split(" ")[0]
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"SKIP {test}: {why}\n")
    pytest.skip(why)


@pytest.fixture(scope="session")
def cluster():
    """One live cluster (live_cluster.py: kepler-rs on fake pods, GPUs and API server, scraped by a real
    Prometheus) for every test that needs one, with 20 s of data."""
    from live_cluster import LiveCluster

    with LiveCluster() as c:
        c.wait_for_data(seconds=20)
        yield c


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} not installed (apt-get install prometheus)")
    return path


def render_chart(values: dict | None = None, namespace: str = "kepler-rs", name: str = "kepler-rs") -> list[dict]:
    """Render the chart offline with the Helm SDK; returns the objects (NOTES.txt excluded)."""
    import helm_python as helm

    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values or {})
    rendered = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    objects: list[dict] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(d for d in yaml.safe_load_all(rendered[path]) if d)
    return objects


def render_notes(values: dict | None = None) -> str:
    import helm_python as helm

    rendered = helm.Chart.load(str(CHART)).render(values or {}, name="kepler-rs", namespace="kepler-rs", is_install=True)
    return next(v for k, v in rendered.items() if k.endswith("NOTES.txt"))


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())
