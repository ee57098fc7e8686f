#!/usr/bin/env python3
"""Renders deploy/manifests/*.yaml from the Helm chart, for clusters without Helm.

Run `python3 deploy/manifests/render.py`: it needs helm-python-sdk and PyYAML, and where this Python lacks
them it re-runs itself in .venv-deploy (which scripts/test.sh creates), or says how to create that.
deploy/tests/test_chart.py fails when the committed files differ from what this writes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "helm" / "kepler-rs"
NAMESPACE = "kepler-rs"
MONITORING = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
# variant: (values, what the header says, which files it writes)
VARIANTS = {
    "": (MONITORING, "default values", {"kepler-rs.yaml", "monitoring.yaml", "dashboards.yaml"}),
    # The same with --web.config.file: the admin's Secrets kepler-rs-web-config (web-config.yml),
    # kepler-rs-tls (tls.crt, tls.key, ca.crt) and kepler-rs-scrape (username, password); deploy/README.md.
    "-https": ({**MONITORING, "webConfig": {"enabled": True}}, "webConfig.enabled=true",
               {"kepler-rs.yaml", "monitoring.yaml"}),
}
# hostPID and read-only hostPath /proc, /sys: Pod Security "privileged" (deploy/README.md, Security).
NAMESPACE_OBJECT = {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "privileged",
                                                               "pod-security.kubernetes.io/warn": "baseline"}}}
HEADER = (
    "# Generated from deploy/helm/kepler-rs (release kepler-rs, namespace kepler-rs, {values})\n"
    "# by deploy/manifests/render.py. Do not edit: change the chart and re-run the script.\n"
)
APPLY_ORDER = ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "NetworkPolicy",
               "DaemonSet", "ServiceMonitor", "PrometheusRule", "ConfigMap"]
FILES = {
    # file: (kinds, description)
    "kepler-rs.yaml": ({"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "NetworkPolicy",
                        "DaemonSet"},
                       "The exporter: kubectl apply -f {file}"),
    "monitoring.yaml": ({"ServiceMonitor", "PrometheusRule"},
                        "For the Prometheus operator (kube-prometheus-stack release 'kube-prometheus-stack')"),
    "dashboards.yaml": ({"ConfigMap"}, "Grafana dashboards for the Grafana sidecar (label grafana_dashboard: \"1\")"),
}


def render() -> dict[str, str]:
    import helm_python as helm
    import yaml

    chart = helm.Chart.load(str(CHART))
    out = {}
    for suffix, (values, described, files) in VARIANTS.items():
        rendered = chart.render(values, name="kepler-rs", namespace=NAMESPACE, is_install=True)
        objects = [NAMESPACE_OBJECT]
        for path in sorted(rendered):
            if not path.endswith("NOTES.txt"):
                objects.extend(d for d in yaml.safe_load_all(rendered[path]) if d)
        for name in sorted(files):
            kinds, what = FILES[name]
            file = name.replace(".yaml", f"{suffix}.yaml")
            docs = sorted((o for o in objects if o["kind"] in kinds), key=lambda o: APPLY_ORDER.index(o["kind"]))
            body = "---\n".join(yaml.safe_dump(o, sort_keys=False, width=120) for o in docs)
            out[file] = f"{HEADER.format(values=described)}# {what.format(file=file)}\n---\n{body}"
        placed = {k for name in files for k in FILES[name][0]}
        missing = {o["kind"] for o in objects if o["kind"] != "ConfigMap"} - placed
        assert not missing, f"no manifest file for {missing}"
    return out


VENV_PYTHON = HERE.parents[1] / ".venv-deploy" / "bin" / "python"


def ensure_tools() -> None:
    """Re-runs this script with .venv-deploy's Python when this one lacks the chart renderer."""
    try:
        import helm_python  # noqa: F401
        import yaml  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
            os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])
        sys.exit("deploy/manifests/render.py: needs helm-python-sdk and PyYAML: run scripts/test.sh once (it creates "
                 ".venv-deploy), or python3 -m venv .venv-deploy && .venv-deploy/bin/pip install -r deploy/tests/requirements.txt")


def main() -> int:
    ensure_tools()
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote deploy/manifests/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
