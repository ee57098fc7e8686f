"""The Helm chart renders, validates against the Kubernetes and prometheus-operator schemas, and
grants nothing beyond the documented least privilege."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import (CHART, DOCUMENTED_CAPABILITIES, FORBIDDEN_CAPABILITIES, MANIFESTS, MICROK8S_VALUES, REPO,
                      load_yaml, render_chart, render_notes)

# recursiveReadOnly (host mounts read-only all the way down) needs Kubernetes >= 1.30: Chart.yaml's kubeVersion.
KUBE_VERSIONS = ["1.30.0", "1.33.0"]
ALL_ON = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
WEB_CONFIG = {"webConfig": {"enabled": True}, "serviceMonitor": {"enabled": True}}

# Every key of values.yaml set (test_every_value_is_exercised keeps this complete).
EVERYTHING = {
    "image": {"repository": "registry.example.org/kepler-rs", "tag": "0.1.0-rc1", "pullPolicy": "Always",
              "digest": "sha256:" + "ab" * 32},
    "imagePullSecrets": [{"name": "pull"}],
    "nameOverride": "power", "fullnameOverride": "power-exporter",
    "exporter": {"port": 9102, "interval": "5s", "gracePeriod": "60s", "energySource": "rapl", "cpuSource": "ebpf",
                 "cpuCounters": "off", "processMetrics": True, "metricsCompat": "kepler-0.7", "idleWatts": "package=20,dram=3", "logFormat": "text",
                 "logLevel": "debug", "maxConnections": 32, "extraArgs": ["--log-level=info"],
                 "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}]},
    "kubernetes": {"metadata": True, "jupyterhubNamespaces": ["sai", "hub-test"], "hubUserLabel": "hash",
                   "hubUserHashKey": {"secretName": "hub-user-hash", "key": "key"}},
    "gpu": {"mode": "nvml", "podResources": {"hostPath": "/var/snap/microk8s/common/var/lib/kubelet/pod-resources"},
            "runtimeClassName": "nvidia", "nodeLabel": {"key": "example.org/gpu", "value": "yes"}},
    "host": {"procfs": "/proc", "sysfs": "/sys", "recursiveReadOnly": "Enabled"},
    "webConfig": {"enabled": True, "secretName": "web", "fileName": "web.yml", "tls": True, "tlsSecretName": "cert",
                  "basicAuth": True},
    "networkPolicy": {"enabled": True,
                      "prometheus": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                                     "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
                      "extraFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vm"}},
                                     "podSelector": {"matchLabels": {"app": "vmagent"}}}]},
    "serviceAccount": {"create": True, "name": "power", "annotations": {"example.org/owner": "ops"}, "automountToken": True},
    "rbac": {"create": True},
    "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "privileged": False,
                        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    "resources": {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    "priorityClassName": "system-node-critical",
    "podAnnotations": {"example.org/a": "b"}, "podLabels": {"team": "ops"},
    "nodeSelector": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {}},
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "initialDelaySeconds": 10, "periodSeconds": 20,
                      "timeoutSeconds": 5, "failureThreshold": 3},
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "initialDelaySeconds": 5, "periodSeconds": 10,
                       "timeoutSeconds": 5},
    "service": {"type": "ClusterIP", "port": 9102, "annotations": {"example.org/s": "t"}},
    "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "prom"}, "namespace": "monitoring",
                       "interval": "30s", "scrapeTimeout": "20s",
                       "relabelings": [{"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                        "targetLabel": "node"}],
                       "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "go_.*"}],
                       "tlsConfig": {"serverName": "power.example.org"},
                       "basicAuth": {"secretName": "scrape", "usernameKey": "user", "passwordKey": "pass"}},
    "prometheusRule": {"enabled": True, "additionalLabels": {"release": "prom"}, "namespace": "monitoring"},
    "dashboards": {"enabled": True, "namespace": "monitoring", "label": "grafana_dashboard", "labelValue": "1",
                   "annotations": {"grafana_folder": "power"}},
}

VALUE_SETS = {
    "default": {},
    "all-on": ALL_ON,
    "microk8s-gpu": None,  # deploy/bootstrap/values/kepler-rs.yaml: a mixed cluster, GPU and CPU nodes
    "cgroup-only-no-kube": {"exporter": {"cpuSource": "cgroup"}, "kubernetes": {"metadata": False}, "dashboards": {"enabled": False}},
    "web-config": WEB_CONFIG,
    "everything": EVERYTHING,
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

    for values in (None, ALL_ON, load_yaml(MICROK8S_VALUES), WEB_CONFIG, EVERYTHING):
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
    objects = [o for values in (ALL_ON, load_yaml(MICROK8S_VALUES), WEB_CONFIG, EVERYTHING)
               for o in render_chart(values) if o["kind"] == kind]
    assert len(objects) == (4 if kind == "ServiceMonitor" else 3), f"expected one {kind} per value set"
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
        assert not added & FORBIDDEN_CAPABILITIES, f"{where} adds {added & FORBIDDEN_CAPABILITIES}"
        assert added <= DOCUMENTED_CAPABILITIES, f"{where} adds {added - DOCUMENTED_CAPABILITIES}"
        assert not spec.get("hostNetwork") and not spec.get("hostIPC"), where
        seccomp = (sc.get("seccompProfile") or spec.get("securityContext", {}).get("seccompProfile") or {}).get("type")
        assert seccomp == "RuntimeDefault", f"{where}: seccomp {seccomp}"
        for port in c.get("ports", []):
            assert "hostPort" not in port, where
        for m in c.get("volumeMounts", []):
            assert m.get("readOnly") is True, f"{where}: {m['name']} mounted read-write"
    assert seen == (2 if name in ("microk8s-gpu", "everything") else 1)


def test_host_mounts_are_recursively_read_only(rendered):
    """cgroupfs, tracefs, bpffs, debugfs and efivarfs are submounts of /sys: a read-only bind of /sys
    alone leaves them writable. Kubernetes requires mountPropagation None with recursiveReadOnly."""
    name, objects = rendered
    host_mounts = 0
    for o, spec, c in containers(objects):
        host_volumes = {v["name"] for v in spec["volumes"] if "hostPath" in v}
        for m in c["volumeMounts"]:
            if m["name"] in host_volumes:
                host_mounts += 1
                where = f"{name}: {o['metadata']['name']} mount {m['name']}"
                assert m.get("readOnly") is True, where
                assert m.get("recursiveReadOnly") in ("IfPossible", "Enabled"), where
                assert m.get("mountPropagation") == "None", where
        assert host_volumes <= {"proc", "sys", "pod-resources"}, f"{name}: unexpected hostPath {host_volumes}"
    assert host_mounts >= 2


@pytest.mark.parametrize("bad, refusal", [
    ({"securityContext": {"privileged": True}}, "privileged cannot be true"),
    ({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "capabilities is computed"),
    ({"securityContext": {"capabilities": {"add": ["DAC_READ_SEARCH"]}}}, "capabilities is computed"),
    ({"host": {"recursiveReadOnly": "Disabled"}}, "must be IfPossible or Enabled"),
    ({"kubernetes": {"hubUserLabel": "hash"}}, "hubUserHashKey.secretName is required"),
], ids=["privileged", "sys-admin", "dac-read-search", "rro-disabled", "hash-without-key"])
def test_values_that_would_weaken_the_pod_are_refused(bad, refusal):
    with pytest.raises(Exception, match=refusal):
        render_chart(bad)


def test_capabilities_follow_the_cpu_source():
    def added(values):
        (c,) = [c for _, _, c in containers(render_chart(values))]
        return c["securityContext"]["capabilities"].get("add", [])

    assert set(added({})) == DOCUMENTED_CAPABILITIES  # auto loads eBPF where it finds a PMU
    assert set(added({"exporter": {"cpuSource": "ebpf"}})) == DOCUMENTED_CAPABILITIES
    assert set(added({"exporter": {"cpuSource": "ebpf", "cpuCounters": "off"}})) == DOCUMENTED_CAPABILITIES
    assert added({"exporter": {"cpuSource": "cgroup"}}) == []  # uid 0 owns what it reads: no capability
    # auto loads eBPF only for process metrics or CPU counters: with neither it never needs them.
    assert added({"exporter": {"cpuCounters": "off"}}) == []
    assert set(added({"exporter": {"cpuCounters": "off", "processMetrics": True}})) == DOCUMENTED_CAPABILITIES
    assert set(added({"exporter": {"cpuCounters": "software"}})) == DOCUMENTED_CAPABILITIES


def test_daemonset_shape(rendered):
    name, objects = rendered
    if name == "everything":
        return  # names, ports and paths are all overridden there; test_everything_renders_what_was_asked
    daemonsets = [o for o in objects if o["kind"] == "DaemonSet"]
    for ds in daemonsets:
        spec = ds["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert spec["hostPID"] is True
        assert {"operator": "Exists"} in spec["tolerations"]
        assert spec["nodeSelector"]["kubernetes.io/os"] == "linux"
        args = c["args"]
        assert args[0] == "run" and "--sysfs=/host/sys" in args and "--procfs=/host/proc" in args
        assert "--listen=0.0.0.0:28282" in args and "--web.max-connections=64" in args
        # Kepler 0.7 families only when asked (exporter.metricsCompat), never by default.
        assert not [a for a in args if a.startswith("--metrics-compat")], args
        env = {e["name"]: e for e in c["env"]}
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["proc"] == "/host/proc" and mounts["sys"] == "/host/sys"
        hostpaths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
        assert hostpaths["proc"] == "/proc" and hostpaths["sys"] == "/sys"
        res = c["resources"]
        assert res["requests"]["memory"] and res["limits"]["memory"], "memory must be requested and limited"
        if name == "cgroup-only-no-kube":
            assert not [a for a in args if a.startswith(("--jupyterhub-namespace", "--hub-user"))]
        else:
            assert "--jupyterhub-namespace=sai" in args and "--hub-user-label=raw" in args
        if spec.get("runtimeClassName"):
            assert name == "microk8s-gpu"
            assert hostpaths["pod-resources"] == "/var/snap/microk8s/common/var/lib/kubelet/pod-resources"
            assert mounts["pod-resources"] == "/var/lib/kubelet/pod-resources"
            assert env["KEPLER_RS_GPU"]["value"] == "auto"
            assert spec["runtimeClassName"] == "nvidia"
            # Without these the NVIDIA runtime injects no NVML and the GPU series silently vanish.
            assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
            assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
        else:
            assert "pod-resources" not in hostpaths and "NVIDIA_VISIBLE_DEVICES" not in env
    assert len(daemonsets) == (2 if name == "microk8s-gpu" else 1)


def test_mixed_cluster_gets_the_gpu_runtime_only_on_gpu_nodes():
    """A RuntimeClass that a node lacks keeps the pod from starting there: with gpu.runtimeClassName the
    GPU DaemonSet runs only on nodes the GPU operator labels, the other one everywhere else."""
    daemonsets = {o["metadata"]["name"]: o for o in render_chart(load_yaml(MICROK8S_VALUES)) if o["kind"] == "DaemonSet"}
    assert set(daemonsets) == {"kepler-rs", "kepler-rs-gpu"}
    gpu, cpu = daemonsets["kepler-rs-gpu"]["spec"], daemonsets["kepler-rs"]["spec"]
    assert gpu["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert gpu["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert "runtimeClassName" not in cpu["template"]["spec"]
    (term,) = cpu["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}]
    cpu_env = {e["name"]: e.get("value") for e in cpu["template"]["spec"]["containers"][0]["env"]}
    assert cpu_env["KEPLER_RS_GPU"] == "off"
    # Distinct selectors, so neither DaemonSet adopts the other's pods; the Service selects both.
    assert gpu["selector"] != cpu["selector"]
    (svc,) = [o for o in render_chart(load_yaml(MICROK8S_VALUES)) if o["kind"] == "Service"]
    for ds in (gpu, cpu):
        assert svc["spec"]["selector"].items() <= ds["template"]["metadata"]["labels"].items()


def test_rbac_is_list_and_watch_on_pods_only_and_never_cluster_admin(rendered):
    name, objects = rendered
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    for b in bindings:
        assert b["roleRef"]["name"] != "cluster-admin", f"{name}: {b['metadata']['name']} binds cluster-admin"
    for r in roles:
        for rule in r["rules"]:
            assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}, rule
    if name == "cgroup-only-no-kube":
        assert not roles and not bindings
        (ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
        assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    else:
        assert len(roles) == 1 and len(bindings) == 1


def test_network_policy_admits_only_prometheus_to_the_metrics_port(rendered):
    name, objects = rendered
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    (svc,) = [o for o in objects if o["kind"] == "Service"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == svc["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    prometheus = rule["from"][0]
    if name == "everything":
        assert prometheus["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "observability"}
        assert len(rule["from"]) == 2
    else:
        # kube-prometheus-stack in "monitoring": its Prometheus pods' namespace and label.
        assert prometheus == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
        assert len(rule["from"]) == 1
    # Both selectors in one peer: Prometheus pods in that namespace, not "that namespace or Prometheus".
    assert {"namespaceSelector", "podSelector"} <= prometheus.keys()
    assert not [o for o in render_chart({"networkPolicy": {"enabled": False}}) if o["kind"] == "NetworkPolicy"]


def test_web_config_turns_on_https_scrapes_and_probes():
    objects = render_chart(WEB_CONFIG)
    (ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert "--web.config.file=/etc/kepler-rs/web/web-config.yml" in c["args"]
    # Probes stay unauthenticated GETs, over HTTPS (kubelet does not verify a probe's certificate).
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
    (web,) = [v for v in spec["volumes"] if v["name"] == "web-config"]
    assert [s["secret"]["name"] for s in web["projected"]["sources"]] == ["kepler-rs-web-config", "kepler-rs-tls"]
    assert {"name": "web-config", "mountPath": "/etc/kepler-rs/web", "readOnly": True} in c["volumeMounts"]
    (sm,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"ca": {"secret": {"name": "kepler-rs-tls", "key": "ca.crt"}},
                                     "serverName": "kepler-rs.kepler-rs.svc"}
    assert endpoint["basicAuth"] == {"username": {"name": "kepler-rs-scrape", "key": "username"},
                                     "password": {"name": "kepler-rs-scrape", "key": "password"}}
    assert not [o for o in objects if o["kind"] == "Secret"], "the chart must not create Secrets"
    # Without the web config: plain HTTP, no credentials anywhere.
    (plain,) = [o for o in render_chart(ALL_ON) if o["kind"] == "ServiceMonitor"]
    assert plain["spec"]["endpoints"][0]["scheme"] == "http"
    assert not {"tlsConfig", "basicAuth"} & plain["spec"]["endpoints"][0].keys()
    # Basic auth without TLS (e.g. behind a mesh): no tlsConfig, and mTLS-only configs send no password.
    (sm,) = [o for o in render_chart({"webConfig": {"enabled": True, "tls": False}, "serviceMonitor": {"enabled": True}})
             if o["kind"] == "ServiceMonitor"]
    assert sm["spec"]["endpoints"][0]["scheme"] == "http" and "tlsConfig" not in sm["spec"]["endpoints"][0]
    (sm,) = [o for o in render_chart({"webConfig": {"enabled": True, "basicAuth": False}, "serviceMonitor": {"enabled": True}})
             if o["kind"] == "ServiceMonitor"]
    assert "basicAuth" not in sm["spec"]["endpoints"][0]


def test_tls_verification_is_never_disabled_in_any_rendering(rendered):
    name, objects = rendered
    text = yaml.safe_dump_all(objects)
    assert not re.search(r"insecureSkipVerify:\s*true", text, re.I), name


def leaf_paths(node, prefix=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaf_paths(value, prefix + (key,))
    else:
        yield prefix


def test_every_value_is_exercised():
    """The "everything" value set sets every key of values.yaml, so that each template branch renders."""
    defaults = load_yaml(CHART / "values.yaml")
    missing = []
    for path in leaf_paths(defaults):
        node = EVERYTHING
        for key in path:
            if not isinstance(node, dict) or key not in node:
                missing.append(".".join(path))
                break
            node = node[key]
    assert not missing, f"add to EVERYTHING in test_chart.py: {missing}"


def test_everything_renders_what_was_asked():
    objects = render_chart(EVERYTHING)
    daemonsets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "DaemonSet"}
    assert set(daemonsets) == {"power-exporter", "power-exporter-gpu"}
    gpu = daemonsets["power-exporter-gpu"]["spec"]["template"]["spec"]
    (c,) = gpu["containers"]
    assert c["image"] == "registry.example.org/kepler-rs:0.1.0-rc1@sha256:" + "ab" * 32
    args = c["args"]
    for arg in ("--jupyterhub-namespace=sai", "--jupyterhub-namespace=hub-test", "--hub-user-label=hash",
                "--hub-user-hash-key-file=/etc/kepler-rs/hub-user-hash/key", "--web.config.file=/etc/kepler-rs/web/web.yml",
                "--web.max-connections=32", "--process-metrics", "--metrics-compat=kepler-0.7",
                "--idle-watts=package=20,dram=3"):
        assert arg in args, arg
    assert gpu["nodeSelector"] == {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "example.org/gpu": "yes"}
    assert {m["name"]: m["recursiveReadOnly"] for m in c["volumeMounts"] if "recursiveReadOnly" in m} == \
        {"proc": "Enabled", "sys": "Enabled", "pod-resources": "Enabled"}
    (sm,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["tlsConfig"] == {"ca": {"secret": {"name": "cert", "key": "ca.crt"}}, "serverName": "power.example.org"}
    assert endpoint["basicAuth"]["password"] == {"name": "scrape", "key": "pass"}


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
    https = render_notes({"webConfig": {"enabled": True}})
    assert "--cacert ca.crt" in https and "https://kepler-rs.kepler-rs.svc:28282/metrics" in https
    assert not re.search(r"curl\b[^\n]*\s(-k|--insecure)\b", https)


def test_plain_manifests_are_in_sync_with_the_chart():
    sys.path.insert(0, str(MANIFESTS))
    import render as manifests  # deploy/manifests/render.py

    for name, text in manifests.render().items():
        committed = (MANIFESTS / name).read_text()
        assert committed == text, f"deploy/manifests/{name} is stale: run python3 deploy/manifests/render.py"
    # Without Helm too, the web config variant scrapes over verified TLS with basic auth.
    (sm,) = [o for o in yaml.safe_load_all((MANIFESTS / "monitoring-https.yaml").read_text()) if o and o["kind"] == "ServiceMonitor"]
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["ca"] and endpoint["basicAuth"]["password"]
    assert "insecureSkipVerify" not in endpoint["tlsConfig"]
