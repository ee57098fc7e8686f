"""What the docs name exists: every flag that docs/ and README.md give kepler-rs is in its --help,
every metric they (and the chart's comments) name is in a real exposition, every chart value they
name is in values.yaml, and every repository file or link they name is in the tree.

Other tools' flags (cargo, kubectl, setpriv, ...) and names the docs mention as *not* exported are
listed below with the reason; anything else unknown fails."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from conftest import CHART, REPO
from live_cluster import exporter_binary

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Chart values are documented in the deploy READMEs too.
VALUE_DOCS = [*DOCS, REPO / "deploy" / "README.md", REPO / "deploy" / "bootstrap" / "README.md",
              REPO / "dashboards" / "README.md"]
# Links and repository paths: every README and doc page.
LINK_DOCS = [*VALUE_DOCS, REPO / "benches" / "README.md", REPO / "ebpf" / "README.md"]

# Flags of other commands that the docs show, by command.
OTHER_TOOLS_FLAGS = {
    "cargo": {"--path", "--release", "--test", "--workspace"},
    "git": {"--short"},
    "helm": {"--install", "--set"},
    "kubectl": {"--as"},
    "kube-apiserver": {"--authorization-mode"},
    "nvidia-smi": {"--query-gpu"},
    "setpriv": {"--ambient-caps", "--bounding-set", "--clear-groups", "--inh-caps", "--regid", "--reuid"},
}
# Families the live exposition lacks because their condition does not hold there; each must still be
# a name the encoder writes (exporter/src).
CONDITIONAL = {
    "kepler_exporter_cpu_source_events_total": "only with a source that counts events (eBPF)",
    "kepler_exporter_bpf_run_seconds_total": "only with eBPF and kernel.bpf_stats_enabled=1",
    "kepler_exporter_pod_metadata_errors_total": "only after a pod-watch error",
    "kepler_exporter_web_config_reloads_total": "only with --web.config.file",
    # The live cluster's simulated powercap has package and dram only.
    "kepler_node_core_joules_total": "only where RAPL has a core zone (--metrics-compat kepler-0.7)",
    "kepler_node_uncore_joules_total": "only where RAPL has an uncore zone (--metrics-compat kepler-0.7)",
    "kepler_node_platform_joules_total": "only where RAPL has psys (--metrics-compat kepler-0.7)",
    "kepler_container_core_joules_total": "only where RAPL has a core zone (--metrics-compat kepler-0.7)",
    "kepler_container_uncore_joules_total": "only where RAPL has an uncore zone (--metrics-compat kepler-0.7)",
    "kepler_container_platform_joules_total": "only where RAPL has psys (--metrics-compat kepler-0.7)",
}
# Kepler's families that docs/migrating-from-kepler.md names as having no kepler-rs equivalent
# (full names, and prefixes written as `kepler_vm_*`).
KEPLER_ONLY = {
    "kepler_vm_cpu_joules_total", "kepler_vm_cpu_watts", "kepler_vm",
    "kepler_container_cpu_cycles_total", "kepler_container_cpu_instructions_total",
    "kepler_container_cache_miss_total", "kepler_container_bpf", "kepler_container_task_clock",
    "kepler_node_energy_stat", "kepler_node_accelerator",
}
# Not metric names: the library crate, and the eBPF programs.
NOT_METRICS = {"kepler_rs", "kepler_charge_running", "kepler_sched_switch", "kepler_sched_process_exit",
               "kepler_sched_switch_floor"}
# Chart values the docs name on purpose although values.yaml has no such key.
ABSENT_VALUES = {"securityContext.capabilities": "deploy/README.md: the chart refuses it"}
# Paths in other repositories that the docs cite.
EXTERNAL_PATHS = {
    "compose/default/grafana/dashboards/latest/dashboard.json": "Kepler's repository",
    "grafana-dashboards/Kepler-Exporter.json": "Kepler's repository (0.7 era)",
}
FILE_SUFFIXES = (".rs", ".md", ".py", ".sh", ".yaml", ".yml", ".json", ".toml", ".txt", ".o", ".c", ".tpl")


def text(path: Path) -> str:
    return path.read_text()


def chart_comments() -> str:
    """The comments of the chart's values.yaml, Chart.yaml and templates."""
    lines = []
    for p in [CHART / "values.yaml", CHART / "Chart.yaml", *sorted((CHART / "templates").iterdir())]:
        for line in p.read_text().splitlines():
            if p.suffix == ".yaml" and (m := re.search(r"(?:^|\s)#\s?(.*)$", line)):
                lines.append(m.group(1))
            lines.extend(re.findall(r"\{\{-?\s*/\*(.*?)\*/\s*-?\}\}", line))
    return "\n".join(lines)


def help_flags() -> set[str]:
    out = ""
    for sub in ("run", "top", "report"):
        run = subprocess.run([str(exporter_binary()), sub, "--help"], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        out += run.stdout
    return set(re.findall(r"--[a-z][a-z0-9.-]*[a-z0-9]", out))


def named_flags(doc: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9.-]*[a-z0-9]", doc))


def test_every_flag_in_the_docs_is_in_kepler_rs_help():
    known = help_flags() | set().union(*OTHER_TOOLS_FLAGS.values())
    assert {"--idle-watts", "--prometheus", "--since", "--web.config.file"} <= known
    missing = {(str(p.relative_to(REPO)), f) for p in DOCS for f in named_flags(text(p)) if f not in known}
    missing |= {("chart comments", f) for f in named_flags(chart_comments()) if f not in known}
    assert not missing, sorted(missing)


def test_the_flag_check_catches_a_made_up_flag():
    assert "--idle-wats" in named_flags("set `--idle-wats package=20`") - help_flags()


def named_metrics(doc: str) -> tuple[set[str], set[str]]:
    """Full metric names, and prefixes written as `kepler_pod_gpu_*` or `kepler_exporter_http_*`."""
    names, prefixes = set(), set()
    for m in re.finditer(r"(?<![\w:])(kepler_[a-z0-9_]*[a-z0-9])(_?\*)?", doc):
        (prefixes if m.group(2) else names).add(m.group(1))
    return names - NOT_METRICS - KEPLER_ONLY, prefixes - KEPLER_ONLY


def exposed_families(exposition: str) -> set[str]:
    families = set(re.findall(r"^# TYPE (\S+)", exposition, re.M))
    samples = set(re.findall(r"^([a-zA-Z_:][\w:]*)", exposition, re.M))
    return families | samples


def test_every_metric_in_the_docs_and_the_chart_is_exported(cluster):
    exposed = exposed_families(cluster.exporter_metrics())
    assert "kepler_node_gpu_joules_total" in exposed and "kepler_pod_info" in exposed
    missing = set()
    for name, doc in [*((str(p.relative_to(REPO)), text(p)) for p in DOCS), ("chart comments", chart_comments())]:
        names, prefixes = named_metrics(doc)
        missing |= {(name, n) for n in names if n not in exposed and n not in CONDITIONAL}
        missing |= {(name, p + "_*") for p in prefixes if not any(e.startswith(p) for e in exposed)}
    assert not missing, sorted(missing)
    source = "\n".join(p.read_text() for p in sorted((REPO / "exporter" / "src").rglob("*.rs")))
    for family in CONDITIONAL:
        assert f'"{family.removesuffix("_total")}' in source, family


def values_has(values: dict, path: list[str]) -> bool:
    node = values
    for seg in path:
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif node == {}:
            return True  # a free-form map (annotations, nodeSelector, ...)
        else:
            return False
    return True


def named_values(doc: str, top_level: set[str], backticked: bool = True) -> set[str]:
    pattern = (r"`([a-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+)(?:=[^`]*)?`" if backticked
               else r"(?<![\w.$/-])([a-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+)(?![\w/.-])")
    return {m.group(1) for m in re.finditer(pattern, doc)
            if m.group(1).split(".")[0] in top_level and not m.group(1).endswith(FILE_SUFFIXES)}


def test_every_chart_value_in_the_docs_and_the_chart_comments_exists():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    top = set(values)
    found = {(str(p.relative_to(REPO)), v) for p in VALUE_DOCS for v in named_values(text(p), top)}
    found |= {("chart comments", v) for v in named_values(chart_comments(), top, backticked=False)}
    assert len(found) >= 10, found
    missing = {(where, v) for where, v in found if v not in ABSENT_VALUES and not values_has(values, v.split("."))}
    assert not missing, sorted(missing)
    assert not named_values("`kubernetes.jupyterhubNamespace`", top) - {"kubernetes.jupyterhubNamespace"}
    assert not values_has(values, ["kubernetes", "jupyterhubNamespace"]), "the check must catch a typo"


def named_paths(doc: str) -> set[str]:
    """Repository paths in backticks (with a file suffix, or starting at a top-level folder) and links."""
    top = {p.name for p in REPO.iterdir()}
    paths = {m.group(1) for m in re.finditer(r"\]\(([^)#\s]+)", doc) if not m.group(1).startswith(("http", "mailto:"))}
    for m in re.finditer(r"`(\.{0,2}/?[\w.-]+(?:/[\w.-]+)+/?)`", doc):
        tok = m.group(1)
        if tok.startswith("/"):
            continue  # host paths
        if tok.split("/")[0] in top or tok.rstrip("/").endswith(FILE_SUFFIXES):
            paths.add(tok)
    return paths


def test_every_file_and_link_in_the_docs_exists():
    missing = []
    for p in LINK_DOCS:
        for path in named_paths(text(p)):
            if path.startswith("target/") or path in EXTERNAL_PATHS:
                continue  # build output, other repositories
            if not ((p.parent / path).exists() or (REPO / path).exists()):
                missing.append((str(p.relative_to(REPO)), path))
    for path in named_paths(chart_comments()):
        if not ((CHART / path).exists() or (REPO / path).exists()):
            missing.append(("chart comments", path))
    assert not missing, sorted(missing)
    assert named_paths("see `docs/nothing.md`") == {"docs/nothing.md"}
