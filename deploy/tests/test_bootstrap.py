"""The MicroK8s bootstrap: yamllint clean, manifests valid, values carry what the cluster needs,
and none of the original cluster's mistakes (inline secrets, TLS verification off, cluster-admin),
nor those a security review found: RBAC first, no permanent dashboard token, exact pins,
Grafana confined to its namespace, PSA labels, newline-free secrets applied server-side."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
import sys

import pytest
import yaml

from conftest import BOOTSTRAP, REPO, load_yaml

VALUES = BOOTSTRAP / "values"
UPSTREAM = Path(__file__).resolve().parent / "upstream"
SCRIPTS = sorted(BOOTSTRAP.glob("[0-9]*.sh"))
SOURCED = [BOOTSTRAP / "lib.sh", BOOTSTRAP / "versions.sh"]


def test_yamllint_clean():
    run = subprocess.run([sys.executable, "-m", "yamllint", "-c", str(REPO / "deploy" / ".yamllint.yaml"), "--strict", "."],
                         cwd=REPO / "deploy", capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("script", sorted(BOOTSTRAP.glob("*.sh")), ids=lambda p: p.name)
def test_scripts_parse_and_stop_on_errors(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    if script in SOURCED:
        assert not text.startswith("#!"), f"{script.name} is sourced, not run"
    else:
        assert "set -euo pipefail" in text and 'source "$(dirname "$0")/lib.sh"' in text, script.name
        # A failure that matters must stop the script, not be swallowed.
        assert not re.search(r"\|\|\s*(true|:)\b", text), f"{script.name}: '|| true' hides a failure"


def test_bootstrap_manifests_validate():
    import kubernetes_validate

    docs = [d for p in sorted((BOOTSTRAP / "manifests").glob("*.yaml")) if "patch" not in p.name
            for d in yaml.safe_load_all(p.read_text()) if d]
    assert len(docs) >= 4
    for d in docs:
        kubernetes_validate.validate(d, "1.31.0", strict=True)


def all_bootstrap_text() -> str:
    return "\n".join(p.read_text() for p in sorted(BOOTSTRAP.rglob("*")) if p.is_file())


TLS_OFF = [r"verify_ssl\s*[:=]\s*false", r"verify\s*=\s*False", r"insecure[-_]?skip[-_]?verify\s*[:=]\s*true",
           r"--insecure\b", r"--kubelet-insecure-tls", r"ssl_verify\s*[:=]\s*(false|0)", r"PYTHONHTTPSVERIFY\s*[:=]\s*\"?0",
           r"\bcurl\b[^\n]*\s-k\b", r"--no-check-certificate", r"NODE_TLS_REJECT_UNAUTHORIZED\s*=\s*\"?0",
           r"--tls-verify[= ]false", r"\binsecure\s*=\s*true", r"GIT_SSL_NO_VERIFY", r"sslVerify\s*=?\s*false",
           r"--trusted-host\b"]


def test_tls_verification_is_never_disabled():
    chart = REPO / "deploy" / "helm" / "kepler-rs"
    text = "\n".join([all_bootstrap_text(), (chart / "values.yaml").read_text(),
                      *(p.read_text() for p in sorted((chart / "templates").iterdir())),
                      (REPO / "deploy" / "Containerfile").read_text(), (REPO / "deploy" / "README.md").read_text(),
                      *(p.read_text() for p in sorted((REPO / "deploy" / "manifests").glob("*.yaml")))])
    for bad in TLS_OFF:
        assert not re.search(bad, text, re.I), bad


@pytest.mark.parametrize("bad", ["curl -k https://hub", "wget --no-check-certificate x", "NODE_TLS_REJECT_UNAUTHORIZED=0",
                                 "requests.get(u, verify=False)", "podman push --tls-verify=false x",
                                 "insecureSkipVerify: true"])
def test_the_tls_check_catches_each_spelling(bad):
    assert any(re.search(p, bad, re.I) for p in TLS_OFF), bad


def test_no_cluster_admin_and_no_inline_secrets():
    text = all_bootstrap_text()
    assert not re.search(r"name:\s*cluster-admin|--clusterrole[= ]cluster-admin|system:masters", text)
    for p in sorted((BOOTSTRAP / "manifests").glob("*.yaml")):
        for d in yaml.safe_load_all(p.read_text()):
            for rule in (d or {}).get("rules", []):
                for field in ("verbs", "resources", "apiGroups"):
                    assert "*" not in rule.get(field, []), (p.name, rule)
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
    assert (side["label"], side["labelValue"], side["searchNamespace"]) == ("grafana_dashboard", "1", "monitoring")
    assert kepler["dashboards"]["namespace"] == "monitoring"


def test_grafana_cannot_read_secrets_outside_its_namespace():
    """With the sidecar searching ALL namespaces the grafana chart binds a ClusterRole on Secrets."""
    kps = load_yaml(VALUES / "kube-prometheus-stack.yaml")
    assert kps["grafana"]["rbac"]["namespaced"] is True
    assert not re.search(r"searchNamespace:\s*ALL", all_bootstrap_text())


def test_grafana_logs_researchers_in_with_github_as_viewers_through_the_ingress():
    grafana = load_yaml(VALUES / "kube-prometheus-stack.yaml")["grafana"]
    ini = grafana["grafana.ini"]
    github = ini["auth.github"]
    assert github["enabled"] is True and "read:org" in github["scopes"]
    # Every GitHub user is a Viewer; Viewers get no Explore and no query editor.
    assert github["role_attribute_path"] == "'Viewer'" and github["allow_assign_grafana_admin"] is False
    assert ini["users"] == {"allow_sign_up": False, "auto_assign_org_role": "Viewer", "viewers_can_edit": False}
    assert ini["auth.anonymous"]["enabled"] is False
    # Credentials only from a Secret made from files; the same organisation as the hub.
    for var, key in (("GF_AUTH_GITHUB_CLIENT_ID", "client_id"), ("GF_AUTH_GITHUB_CLIENT_SECRET", "client_secret")):
        assert grafana["envValueFrom"][var] == {"secretKeyRef": {"name": "grafana-github-oauth", "key": key}}
    script = (BOOTSTRAP / "10-monitoring.sh").read_text()
    assert "secret_from_files monitoring grafana-github-oauth" in script
    assert '--set "grafana.env.GF_AUTH_GITHUB_ALLOWED_ORGANIZATIONS=$GITHUB_ORG"' in script
    assert 'allowed_organizations[0]=$GITHUB_ORG' in (BOOTSTRAP / "20-jupyterhub.sh").read_text()
    # The ingress with TLS from Secret grafana-tls, for GRAFANA_HOST.
    assert grafana["ingress"]["enabled"] is True and grafana["ingress"]["ingressClassName"] == "public"
    for setting in ('grafana.ingress.hosts[0]=$GRAFANA_HOST', 'grafana.ingress.tls[0].secretName=grafana-tls',
                    'grafana.ingress.tls[0].hosts[0]=$GRAFANA_HOST', 'grafana.env.GF_SERVER_ROOT_URL=https://$GRAFANA_HOST/'):
        assert f'--set "{setting}"' in script, setting
    assert "create secret tls grafana-tls" in script
    env = (BOOTSTRAP / "env.example").read_text()
    for var in ("GRAFANA_HOST", "GRAFANA_TLS_CERT", "GRAFANA_TLS_KEY", "GRAFANA_GITHUB_CLIENT_ID_FILE",
                "GRAFANA_GITHUB_CLIENT_SECRET_FILE"):
        assert f"export {var}=" in env, var


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
    # The hub database needs a StorageClass (there is no default one), enabled in step 0.
    assert z2jh["hub"]["db"]["pvc"]["storageClassName"] == "microk8s-hostpath"
    assert "microk8s enable hostpath-storage" in (BOOTSTRAP / "00-addons.sh").read_text()
    # The privileged iptables init container is useless on-premises and refused by baseline PSA.
    assert z2jh["singleuser"]["cloudMetadata"]["blockWithIptables"] is False


def deep_merge(base, override):
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: deep_merge(base[k], v) if k in base else v for k, v in override.items()}}
    return override


def test_jupyterhub_values_validate_against_the_pinned_charts_schema():
    """Helm validates the chart's defaults merged with the user's values against values.schema.yaml:
    the same here, with the schema and defaults of chart 4.4.0 (the version versions.sh pins)."""
    import jsonschema

    assert 'JUPYTERHUB_VERSION="4.4.0"' in (BOOTSTRAP / "versions.sh").read_text()
    schema = load_yaml(UPSTREAM / "jupyterhub-chart-4.4.0-values.schema.yaml")
    defaults = load_yaml(UPSTREAM / "jupyterhub-chart-4.4.0-values.yaml")
    ours = load_yaml(VALUES / "jupyterhub.yaml")
    # What 20-jupyterhub.sh adds with --set.
    ours = deep_merge(ours, {"proxy": {"https": {"hosts": ["jupyter.example.org"]}},
                             "hub": {"config": {"GitHubOAuthenticator": {
                                 "oauth_callback_url": "https://jupyter.example.org/hub/oauth_callback",
                                 "allowed_organizations": ["my-research-group"]}}}})
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(deep_merge(defaults, ours))]
    assert not errors, errors
    typo = deep_merge(deep_merge(defaults, ours), {"singleuser": {"cloudMetadata": {"blockWithIptable": False}}})
    assert list(validator.iter_errors(typo)), "the schema must reject an unknown key"


def test_ssh_forward_and_kepler_rs_paths():
    tcp = load_yaml(BOOTSTRAP / "manifests" / "ingress-tcp-ssh.yaml")
    assert tcp["data"] == {"2222": "sai/jupyterhub-ssh:22"}
    assert "https://$HUB_HOST" in (BOOTSTRAP / "30-jupyterhub-ssh.sh").read_text()
    kepler = load_yaml(VALUES / "kepler-rs.yaml")
    assert kepler["gpu"]["podResources"]["hostPath"] == "/var/snap/microk8s/common/var/lib/kubelet/pod-resources"
    assert kepler["kubernetes"]["jupyterhubNamespaces"] == ["sai"]


def script_text() -> str:
    return "\n".join(p.read_text() for p in SCRIPTS)


def test_rbac_is_enabled_before_anything_else():
    """Until `microk8s enable rbac` the API server authorizes everything: every token is cluster-admin."""
    enables = re.findall(r"^microk8s enable (\S+)", script_text(), re.M)
    assert enables[0] == "rbac", enables
    assert SCRIPTS[0].name == "00-addons.sh"


def test_the_permanent_dashboard_token_is_deleted_and_logins_are_short_lived():
    text = (BOOTSTRAP / "40-dashboard.sh").read_text()
    enable = text.index("microk8s enable dashboard")
    delete = text.index("delete secret microk8s-dashboard-token")
    assert enable < delete
    assert "create token dashboard-viewer --duration=" in text
    assert "auth can-i list secrets --as=system:serviceaccount:kube-system:dashboard-viewer" in text
    binding = [d for d in yaml.safe_load_all((BOOTSTRAP / "manifests" / "dashboard-readonly.yaml").read_text())
               if d["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in binding] == ["view"]


EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$")


def versions() -> dict[str, str]:
    return dict(re.findall(r'^([A-Z_]+)="([^"]*)"', (BOOTSTRAP / "versions.sh").read_text(), re.M))


def test_every_chart_is_pinned_to_an_exact_version():
    pins = versions()
    text = script_text().replace("$helm", "helm").replace("\\\n", " ")  # join continued lines
    installs = re.findall(r"helm upgrade --install (\S+) (\S+)([^\n]*)", text)
    assert len(installs) == 4, installs
    for release, chart, rest in installs:
        if chart.startswith('"$repo/'):
            continue  # this repository's chart
        version = re.search(r'--version "\$([A-Z_]+)"', rest)
        assert version, f"{release}: no --version"
        assert EXACT_VERSION.match(pins[version.group(1)]), (release, pins[version.group(1)])
    for name, value in pins.items():
        assert value and not re.search(r"latest|\*|[\^~<>]|\bx\b", value), (name, value)


def test_our_images_are_pinned_by_digest_or_built_here():
    """Images we choose: pulled ones by tag@sha256, built ones from pinned sources, never pulled."""
    digest = re.compile(r"^[^\s@]+:[^\s@]+@sha256:[0-9a-f]{64}$")
    text = "\n".join(p.read_text() for p in sorted((BOOTSTRAP / "values").glob("*.yaml")))
    images = re.findall(r"^\s*image:\s*(\S+)\s*$", text, re.M)
    assert len(images) == 2, images  # the two notebook profiles
    for image in images:
        assert digest.match(image), image
    for values, image_var in (("kepler-rs.yaml", "KEPLER_RS_IMAGE"), ("jupyterhub-ssh.yaml", "JUPYTERHUB_SSH_IMAGE")):
        doc = load_yaml(VALUES / values)
        image = doc["image"] if "image" in doc else doc["ssh"]["image"]
        assert image == {"pullPolicy": "Never"}, values
        assert versions()[image_var].startswith("localhost/"), image_var
    assert 'import_image "$KEPLER_RS_IMAGE"' in (BOOTSTRAP / "50-kepler-rs.sh").read_text()
    assert 'import_image "$JUPYTERHUB_SSH_IMAGE"' in (BOOTSTRAP / "30-jupyterhub-ssh.sh").read_text()
    assert "microk8s images import" in (BOOTSTRAP / "lib.sh").read_text()
    for containerfile in (REPO / "deploy" / "Containerfile", BOOTSTRAP / "images" / "jupyterhub-ssh" / "Containerfile"):
        froms = re.findall(r"^FROM\s+(\S+)", containerfile.read_text(), re.M)
        assert froms and all(digest.match(f) for f in froms), (containerfile, froms)
    assert not re.search(r":latest\b", all_bootstrap_text())


def test_jupyterhub_ssh_image_is_current_and_hash_pinned():
    folder = BOOTSTRAP / "images" / "jupyterhub-ssh"
    text = (folder / "Containerfile").read_text()
    commit = re.search(r"JUPYTERHUB_SSH_COMMIT=([0-9a-f]{40})$", text, re.M)
    assert commit and 'test "$(git -C /src rev-parse HEAD)" = "$JUPYTERHUB_SSH_COMMIT"' in text
    assert versions()["JUPYTERHUB_SSH_IMAGE"].endswith(commit.group(1)[:7])
    assert "--require-hashes" in text and re.search(r"python:3\.1[2-9]", text)
    assert re.search(r"^USER [1-9]\d*:", text, re.M), "the chart sets runAsNonRoot: a numeric user"
    reqs = (folder / "requirements.txt").read_text().replace("\\\n", " ")
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)(?:\s+--hash=sha256:[0-9a-f]{64})+$", reqs, re.M)
    lines = [ln for ln in reqs.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(pins) == len(lines), "every requirement pinned with == and a hash"
    versions_by_name = {name.lower(): tuple(int(x) for x in v.split(".")[:3]) for name, v in pins}
    assert versions_by_name["asyncssh"] >= (2, 14, 2), "CVE-2023-48795 (Terrapin), CVE-2023-46445/46446"
    assert versions_by_name["websockets"] < (14,), "jupyterhub-ssh uses the legacy websockets.connect(extra_headers=)"


def test_namespaces_carry_pod_security_labels():
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all((BOOTSTRAP / "manifests" / "namespaces.yaml").read_text())}
    enforce = {name: d["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] for name, d in docs.items()}
    assert enforce == {"sai": "baseline", "monitoring": "privileged", "kepler-rs": "privileged"}
    text = (BOOTSTRAP / "manifests" / "namespaces.yaml").read_text()
    assert re.search(r"kepler-rs needs hostPID[^\n]*hostPath", text), "say why kepler-rs is privileged"
    # Namespaces come from this file only, never created on the fly without labels.
    assert not re.search(r"create namespace|--create-namespace", script_text())
    assert 'apply -f "$bootstrap_dir/manifests/namespaces.yaml"' in (BOOTSTRAP / "00-addons.sh").read_text()


def test_secrets_have_no_trailing_newline_and_are_applied_server_side():
    lib = (BOOTSTRAP / "lib.sh").read_text()
    assert "apply --server-side" in lib
    assert 'printf \'%s\' "$(cat "$file")"' in lib, "secret files must lose their trailing newlines"
    for script in SCRIPTS:
        text = script.read_text()
        # Every Secret from files goes through secret_from_files; every apply is the server-side one.
        assert "create secret generic" not in text, script.name
        assert not re.search(r"--from-file\S*(secret|password|key)", text, re.I), script.name
        assert not re.search(r"kubectl\s+apply|\$kubectl apply", text), f"{script.name}: use apply (server-side)"
        for line in text.splitlines():
            if "create secret" in line:
                assert "--dry-run=client -o yaml | apply -f -" in line + text[text.index(line) + len(line):][:80], line


def test_monitoring_network_policy_admits_only_grafana_ingress_and_each_other():
    (policy,) = yaml.safe_load_all((BOOTSTRAP / "manifests" / "monitoring-netpol.yaml").read_text())
    assert policy["metadata"]["namespace"] == "monitoring"
    (target,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert set(target["values"]) == {"prometheus", "alertmanager"}
    (rule,) = policy["spec"]["ingress"]
    peers = rule["from"]
    (pods,) = peers[0]["podSelector"]["matchExpressions"]
    assert set(pods["values"]) == {"grafana", "prometheus", "alertmanager"} and "namespaceSelector" not in peers[0]
    assert peers[1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    assert 'apply -f "$bootstrap_dir/manifests/monitoring-netpol.yaml"' in (BOOTSTRAP / "10-monitoring.sh").read_text()


def test_readme_lists_versions_and_firewall_rules():
    readme = (BOOTSTRAP / "README.md").read_text()
    for name, value in versions().items():
        assert value in readme, f"README.md, Versions: {name}={value}"
    firewall = readme[readme.index("## Firewall"):]
    for port in ("16443", "10250", "25000", "19001", "9100", "2222", "443", "80", "22"):
        assert re.search(rf"ufw [^\n]*\b{port}\b", firewall), f"no ufw rule for port {port}"
