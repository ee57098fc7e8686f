"""The MicroK8s bootstrap: yamllint clean, manifests valid, values carry what the cluster needs,
and none of the original cluster's mistakes (inline secrets, TLS verification off, cluster-admin)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from conftest import BOOTSTRAP, REPO, load_yaml

VALUES = BOOTSTRAP / "values"


def test_yamllint_clean():
    run = subprocess.run([sys.executable, "-m", "yamllint", "-c", str(REPO / "deploy" / ".yamllint.yaml"), "--strict", "."],
                         cwd=REPO / "deploy", capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("script", sorted(BOOTSTRAP.glob("*.sh")), ids=lambda p: p.name)
def test_scripts_parse_and_stop_on_errors(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "set -euo pipefail" in script.read_text()


def test_bootstrap_manifests_validate():
    import kubernetes_validate

    docs = [d for p in sorted((BOOTSTRAP / "manifests").glob("*.yaml")) if "patch" not in p.name
            for d in yaml.safe_load_all(p.read_text()) if d]
    assert len(docs) >= 4
    for d in docs:
        kubernetes_validate.validate(d, "1.31.0", strict=True)


def all_bootstrap_text() -> str:
    return "\n".join(p.read_text() for p in sorted(BOOTSTRAP.rglob("*")) if p.is_file())


def test_tls_verification_is_never_disabled():
    text = all_bootstrap_text() + (REPO / "deploy" / "helm" / "kepler-rs" / "values.yaml").read_text()
    for bad in [r"verify_ssl\s*[:=]\s*false", r"verify\s*=\s*False", r"insecure[-_]?skip[-_]?verify\s*[:=]\s*true",
                r"--insecure\b", r"--kubelet-insecure-tls", r"ssl_verify\s*[:=]\s*(false|0)", r"PYTHONHTTPSVERIFY\s*[:=]\s*\"?0"]:
        assert not re.search(bad, text, re.I), bad


def test_no_cluster_admin_and_no_inline_secrets():
    text = all_bootstrap_text()
    assert not re.search(r"name:\s*cluster-admin|--clusterrole[= ]cluster-admin", text)
    for p in VALUES.glob("*.yaml"):
        for m in re.finditer(r"^[ \t-]*(\w*(secret|password|token|key)\w*):[ \t]*(\S+)", p.read_text(), re.I | re.M):
            key, value = m.group(1), m.group(3)
            # Only references to Secrets (names and keys) may appear, never a value.
            assert key in {"existingSecret", "passwordKey", "userKey", "key"} or value in ("|", ">"), (p.name, key)
    assert "kind: Secret" not in text


def test_kube_prometheus_stack_selects_kepler_rs():
    kps = load_yaml(VALUES / "kube-prometheus-stack.yaml")
    kepler = load_yaml(VALUES / "kepler-rs.yaml")
    spec = kps["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] and spec["ruleSelectorNilUsesHelmValues"]
    # 10-monitoring.sh installs release "kube-prometheus-stack": that is the label it selects.
    assert "upgrade --install kube-prometheus-stack" in (BOOTSTRAP / "10-monitoring.sh").read_text()
    assert kepler["serviceMonitor"]["additionalLabels"]["release"] == "kube-prometheus-stack"
    assert kepler["prometheusRule"]["additionalLabels"]["release"] == "kube-prometheus-stack"
    side = kps["grafana"]["sidecar"]["dashboards"]
    assert (side["label"], side["labelValue"], side["searchNamespace"]) == ("grafana_dashboard", "1", "ALL")


def test_jupyterhub_values():
    z2jh = load_yaml(VALUES / "jupyterhub.yaml")
    assert z2jh["hub"]["config"]["JupyterHub"]["authenticator_class"] == "github"
    assert "client_secret" not in z2jh["hub"]["config"]["GitHubOAuthenticator"]
    env = z2jh["hub"]["extraEnv"]
    assert env["OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "jupyterhub-github-oauth"
    slugs = {p["slug"]: p for p in z2jh["singleuser"]["profileList"]}
    assert set(slugs) == {"cpu", "gpu"}
    assert slugs["gpu"]["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert z2jh["singleuser"]["storage"]["dynamic"]["storageClass"] == "nfs"
    assert z2jh["cull"]["enabled"] is False
    assert z2jh["proxy"]["https"] == {"enabled": True, "type": "secret", "secret": {"name": "jupyterhub-tls"}}


def test_ssh_forward_and_kepler_rs_paths():
    tcp = load_yaml(BOOTSTRAP / "manifests" / "ingress-tcp-ssh.yaml")
    assert tcp["data"] == {"2222": "sai/jupyterhub-ssh:22"}
    assert "https://$HUB_HOST" in (BOOTSTRAP / "30-jupyterhub-ssh.sh").read_text()
    kepler = load_yaml(VALUES / "kepler-rs.yaml")
    assert kepler["gpu"]["podResources"]["hostPath"] == "/var/snap/microk8s/common/var/lib/kubelet/pod-resources"


def test_containerfile_is_multistage_and_non_root():
    text = (REPO / "deploy" / "Containerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) == 2 and "distroless" in stages[1]
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert "ENTRYPOINT" in text and "--locked" in text
