"""Static checks of dashboards/: generated, conventional, and free of hard-coded nodes."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import DASHBOARDS

EXPECTED_UIDS = {"kepler-rs-cluster", "kepler-rs-node", "kepler-rs-pods", "kepler-rs-jupyterhub", "kepler-rs-gpu",
                 "kepler-rs-my-energy"}


def load() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_json_is_what_the_generator_writes():
    sys.path.insert(0, str(DASHBOARDS))
    import generate

    rendered = generate.render()
    assert sorted(rendered) == sorted(load()), "dashboards/*.json and generate.py disagree on the file set"
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, f"dashboards/{name} is stale: run python3 dashboards/generate.py"


def test_uids_are_stable_and_unique():
    assert {d["uid"] for d in load().values()} == EXPECTED_UIDS


def test_datasource_is_a_variable_everywhere():
    for name, d in load().items():
        (ds,) = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus", name
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, p["title"])
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", (name, p["title"])


def test_every_panel_has_a_unit_and_a_description():
    for name, d in load().items():
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["fieldConfig"]["defaults"].get("unit"), (name, p["title"], "unit")
            assert len(p.get("description", "")) > 20, (name, p["title"], "description")
            assert p["targets"], (name, p["title"])


def test_no_hard_coded_node_names_and_no_summed_zones():
    for name, d in load().items():
        for p in d["panels"]:
            for t in p.get("targets", []):
                expr = t["expr"]
                for m in re.finditer(r'node_name\s*(=~|=|!=)\s*"([^"]*)"', expr):
                    assert m.group(2).startswith("$"), f"{name}/{p['title']}: node_name={m.group(2)!r}"
                # A CPU power/energy series aggregated without a zone filter would add overlapping zones.
                for m in re.finditer(r"kepler_(node|pod|container)_cpu_(\w+)\{([^}]*)\}", expr):
                    if m.group(2) in ("usage_ratio", "info"):
                        continue
                    if re.search(r"\b(sum|increase)\b", expr) and "zone" not in m.group(3):
                        raise AssertionError(f"{name}/{p['title']}: {m.group(0)} summed over all zones")


def test_generator_runs_clean(tmp_path):
    # The generator is plain Python with no dependency beyond the standard library.
    run = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(DASHBOARDS)!r}); import generate; generate.render()"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
