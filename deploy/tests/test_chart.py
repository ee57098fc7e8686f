"""The Helm chart renders, validates against the Kubernetes and prometheus-operator schemas, and
grants nothing beyond the documented least privilege."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import CHART, DOCUMENTED_CAPABILITIES, MANIFESTS, MICROK8S_VALUES, REPO, load_yaml, render_chart, render_notes

KUBE_VERSIONS = ["1.25.0", "1.31.0"]
ALL_ON = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}

VALUE_SETS = {
    "default": {},
    "all-on": ALL_ON,
    "microk8s-gpu": None,  # deploy/bootstrap/values/kepler-rs.yaml
    "cgroup-only-no-kube": {"exporter": {"cpuSource": "cgroup"}, "kubernetes": {"metadata": False}, "dashboards": {"enabled": False}},
}


def values_for(name: str) -> dict:
    return load_yaml(MICROK8S_VALUES) if VALUE_SETS[name] is None else VALUE_SETS[name]


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render_chart(values_for(request.param))


def containers(objects: list[dict]):
    for o in objects:
        spec = o.get("spec", {}).get("template", {}).get("spec")
        if spec:
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                yield o, spec, c


def test_helm_lint_strict_is_clean():
    import helm_python as helm

    for values in (None, ALL_ON, load_yaml(MICROK8S_VALUES)):
        report = helm.lint(str(CHART), values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


def test_every_object_validates_against_kubernetes_schemas(rendered):
    import kubernetes_validate

    name, objects = rendered
    core = [o for o in objects if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert any(o["kind"] == "DaemonSet" for o in core), name
    for version in KUBE_VERSIONS:
        for o in core:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {o['kind']}/{o['metadata']['name']} invalid for Kubernetes {version}: {e.message} at {list(e.path)}")


def ecma_case_insensitive(pattern: str) -> str:
    """Go's inline (?i) has no ECMA-262 equivalent (the regex dialect of JSON schema): spell each
    letter outside escapes and classes as [xX]. Enough for the CRDs' simple enum-like patterns."""
    out, in_class, escaped = [], False, False
    for ch in pattern.replace("(?i)", ""):
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch in "[]":
            in_class = ch == "["
            out.append(ch)
        elif ch.isascii() and ch.isalpha() and not in_class:
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(ch)
    return "".join(out)


def crd_schema(kind: str) -> dict:
    """JSON schema of a prometheus-operator CRD (v0.80 models generated from the CRDs), with unknown
    fields rejected as `kubectl apply --validate=strict` does."""
    from cloudcoil.models.prometheus_operator import v1

    schema = getattr(v1, kind).model_json_schema(by_alias=True)

    def close(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            if isinstance(node.get("pattern"), str) and "(?i)" in node["pattern"]:
                node["pattern"] = ecma_case_insensitive(node["pattern"])
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)

    close(schema)
    # metadata is Kubernetes' ObjectMeta; labels/annotations stay open maps.
    return schema


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_monitoring_objects_validate_against_crd_schemas(kind, tmp_path):
    objects = [o for o in render_chart(ALL_ON) + render_chart(load_yaml(MICROK8S_VALUES)) if o["kind"] == kind]
    assert len(objects) == 2, f"expected one {kind} per value set"
    schema = tmp_path / f"{kind}.json"
    schema.write_text(json.dumps(crd_schema(kind)))
    docs = tmp_path / f"{kind}.yaml"
    docs.write_text(yaml.safe_dump_all(objects))
    for i, o in enumerate(objects):
        one = tmp_path / f"{kind}-{i}.yaml"
        one.write_text(yaml.safe_dump(o))
        run = subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(one)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    # The schema is strict enough to reject a misspelt field.
    bad = dict(objects[0], spec=dict(objects[0]["spec"], endpoint=[]))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    run = subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(tmp_path / "bad.yaml")],
                         capture_output=True, text=True)
    assert run.returncode != 0, "CRD schema accepted an unknown field"


def test_no_privileged_container_and_only_documented_capabilities(rendered):
    name, objects = rendered
    seen = 0
    for o, spec, c in containers(objects):
        seen += 1
        sc = c.get("securityContext", {})
        where = f"{name}: {o['kind']}/{o['metadata']['name']} container {c['name']}"
        assert sc.get("privileged") is not True, f"{where} is privileged"
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        caps = sc.get("capabilities", {})
        assert caps.get("drop") == ["ALL"], f"{where} does not drop ALL capabilities"
        added = set(caps.get("add", []))
        assert added <= DOCUMENTED_CAPABILITIES, f"{where} adds {added - DOCUMENTED_CAPABILITIES}"
        assert not spec.get("hostNetwork") and not spec.get("hostIPC"), where
        seccomp = (sc.get("seccompProfile") or spec.get("securityContext", {}).get("seccompProfile") or {}).get("type")
        assert seccomp == "RuntimeDefault", f"{where}: seccomp {seccomp}"
        for port in c.get("ports", []):
            assert "hostPort" not in port, where
        for m in c.get("volumeMounts", []):
            assert m.get("readOnly") is True, f"{where}: {m['name']} mounted read-write"
    assert seen == 1


def test_capabilities_follow_the_cpu_source():
    def added(values):
        (c,) = [c for _, _, c in containers(render_chart(values))]
        return c["securityContext"]["capabilities"]["add"]

    assert set(added({})) == DOCUMENTED_CAPABILITIES  # auto may load eBPF
    assert set(added({"exporter": {"cpuSource": "ebpf"}})) == DOCUMENTED_CAPABILITIES
    assert added({"exporter": {"cpuSource": "cgroup"}}) == ["DAC_READ_SEARCH"]


def test_daemonset_shape(rendered):
    name, objects = rendered
    (ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert spec["hostPID"] is True
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    args = c["args"]
    assert args[0] == "run" and "--sysfs=/host/sys" in args and "--procfs=/host/proc" in args
    assert "--listen=0.0.0.0:28282" in args
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["proc"] == "/host/proc" and mounts["sys"] == "/host/sys"
    hostpaths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    assert hostpaths["proc"] == "/proc" and hostpaths["sys"] == "/sys"
    res = c["resources"]
    assert res["requests"]["memory"] and res["limits"]["memory"], "memory must be requested and limited"
    if name == "microk8s-gpu":
        assert hostpaths["pod-resources"] == "/var/snap/microk8s/common/var/lib/kubelet/pod-resources"
        assert mounts["pod-resources"] == "/var/lib/kubelet/pod-resources"
        assert env["KEPLER_RS_GPU"]["value"] == "auto"
        assert spec["runtimeClassName"] == "nvidia"
    else:
        assert "pod-resources" not in hostpaths


def test_rbac_is_read_only_pods_and_never_cluster_admin(rendered):
    name, objects = rendered
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    for b in bindings:
        assert b["roleRef"]["name"] != "cluster-admin", f"{name}: {b['metadata']['name']} binds cluster-admin"
    for r in roles:
        for rule in r["rules"]:
            assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}, rule
    if name == "cgroup-only-no-kube":
        assert not roles and not bindings
        (ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
        assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    else:
        assert len(roles) == 1 and len(bindings) == 1


def test_service_and_monitoring_objects():
    objects = render_chart(ALL_ON)
    (svc,) = [o for o in objects if o["kind"] == "Service"]
    assert svc["spec"]["ports"][0]["name"] == "metrics"
    (sm,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    plain = load_yaml(REPO / "deploy" / "alerts" / "kepler-rs.rules.yaml")
    assert rule["spec"] == plain, "PrometheusRule differs from deploy/alerts/kepler-rs.rules.yaml"
    assert not [o for o in objects if o["kind"] == "Secret"], "the chart must not create Secrets"


def test_dashboards_ship_as_grafana_configmaps():
    objects = render_chart({})
    cms = [o for o in objects if o["kind"] == "ConfigMap"]
    files = sorted(p.name for p in (REPO / "dashboards").glob("*.json"))
    assert sorted(k for cm in cms for k in cm["data"]) == files
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (text,) = cm["data"].values()
        assert json.loads(text)["uid"].startswith("kepler-rs-")


def test_notes_say_how_to_reach_it():
    notes = render_notes({})
    assert "port-forward" in notes and "/metrics" in notes and "kepler_exporter_energy_source_info" in notes


def test_plain_manifests_are_in_sync_with_the_chart():
    sys.path.insert(0, str(MANIFESTS))
    import render as manifests  # deploy/manifests/render.py

    for name, text in manifests.render().items():
        committed = (MANIFESTS / name).read_text()
        assert committed == text, f"deploy/manifests/{name} is stale: run python3 deploy/manifests/render.py"
