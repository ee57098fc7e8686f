"""Every dashboard panel query and every recording rule, run against a real Prometheus scraping a
real kepler-rs with fake pods (live_cluster.py). Also both of Kepler's own dashboards, copied unchanged
into upstream/kepler-dashboards/ (KEPLER_DASHBOARDS): its 0.7-era dashboard against the
--metrics-compat kepler-0.7 families, its current one against the native families.

The exporter gets its pod metadata from a fake Kubernetes API server (fake_kube_api.py) that lists the
fake pods, JupyterHub user servers among them, so the JupyterHub-user panels and the hub_user
recording rule are checked against real data: they must show exactly the fake hub users, with the
energy of exactly those users' pods. The exporter reads two GPUs from a fake libnvidia-ml
(live_cluster.FAKE_GPUS): the GPU panels must show exactly those devices, their scripted power, and
the users' GPU energy split as their processes' scripted SM shares.

NEEDS_LATER lists, per dashboard panel target, why it may have no data with today's test setup. Every
target not listed must return series. The test prints the listed targets that already return data
("NOW TESTABLE"): delete those entries.
"""
from __future__ import annotations

import json
from pathlib import Path
import re
import subprocess
import time

import pytest
import yaml

from conftest import ALERTS, DASHBOARDS, REPO, require_tool, skip_or_fail
from fake_kube_api import RESOURCE_VERSION
from live_cluster import DRAM_WATTS, GPU_IDLE_WATTS, NODE_NAME, PKG_WATTS, LiveCluster, get

# (dashboard uid, panel title, refId) -> why it may be empty today. Empty: every target has data (the
# GPU targets since live_cluster.py runs the exporter on the fake libnvidia-ml).
NEEDS_LATER: dict[tuple[str, str, str], str] = {}
# Recording rules that may be empty today.
RULES_NEED_LATER: dict[str, str] = {}

# Grafana's built-in variables, as a dashboard over the last minutes would expand them, for a viewer
# logged in as the hub user alice.smith@uni.edu.
ALICE = "alice.smith@uni.edu"
BUILTINS = {"__rate_interval": "1m", "__range": "5m", "__interval": "5s", "__user.login": ALICE}

def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {expr}")
        return values[name]

    return re.sub(r"\$\{([\w.]+)(?::\w+)?\}|\$(\w+)", repl, expr)


def resolve_variables(cluster: LiveCluster, dash: dict) -> dict[str, str]:
    values = dict(BUILTINS)
    for v in dash["templating"]["list"]:
        if v["type"] == "datasource":
            values[v["name"]] = "prometheus"
        elif v["type"] == "textbox":
            values[v["name"]] = v["query"]
        elif v["type"] == "query":
            if v.get("includeAll"):
                values[v["name"]] = v["allValue"]
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["definition"])
            assert m, v["definition"]
            options = cluster.label_values(m.group(2), substitute(m.group(1), values))
            values[v["name"]] = options[0] if options else ""
        else:
            raise AssertionError(f"unhandled variable type {v['type']}")
    return values


def dashboards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))]


def series(result: dict) -> list:
    assert result["status"] == "success", result
    return result["data"]["result"]


@pytest.mark.parametrize("dash", dashboards(), ids=lambda d: d["uid"])
def test_every_panel_query_runs_and_has_data(cluster, dash):
    values = resolve_variables(cluster, dash)
    failures, ran, became_testable = [], 0, []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            key = (dash["uid"], p["title"], t["refId"])
            expr = substitute(t["expr"], values)
            r = cluster.query(expr) if t.get("instant") else cluster.query_range(expr)
            ran += 1
            if r.get("status") != "success":
                failures.append(f"{key}: {r.get('errorType')}: {r.get('error')}\n    {expr}")
                continue
            has_data = bool(r["data"]["result"])
            if not has_data and key not in NEEDS_LATER:
                failures.append(f"{key}: no data\n    {expr}")
            if has_data and key in NEEDS_LATER:
                became_testable.append(key)
    for key in became_testable:
        print(f"NOW TESTABLE (remove from NEEDS_LATER): {key}")
    print(f"{dash['uid']}: {ran} queries, variables {values}")
    assert ran > 0
    assert not failures, "\n".join(failures)


def test_needs_later_entries_name_real_targets():
    targets = {(d["uid"], p["title"], t["refId"]) for d in dashboards() for p in d["panels"] for t in p.get("targets", [])}
    assert set(NEEDS_LATER) <= targets, set(NEEDS_LATER) - targets


def test_cluster_power_matches_the_simulated_rapl(cluster):
    (dash,) = [d for d in dashboards() if d["uid"] == "kepler-rs-cluster"]
    (p,) = [p for p in dash["panels"] if p["title"] == "Cluster CPU power"]
    expr = substitute(p["targets"][0]["expr"], {"node": NODE_NAME})
    (s,) = series(cluster.query(expr))
    watts = float(s["value"][1])
    assert abs(watts - (PKG_WATTS + DRAM_WATTS)) < 0.05 * (PKG_WATTS + DRAM_WATTS), f"{watts} W from {expr}"


def test_pod_power_panel_shows_every_fake_pod(cluster):
    (dash,) = [d for d in dashboards() if d["uid"] == "kepler-rs-pods"]
    (p,) = [p for p in dash["panels"] if p["title"] == "Power per pod"]
    expr = substitute(p["targets"][0]["expr"], {"node": ".*", "namespace": ".*", "pod": ".*"})
    by_pod = {s["metric"]["pod_id"]: float(s["value"][1]) for s in series(cluster.query(expr))}
    assert all(by_pod.get(uid, 0.0) > 0 for uid in cluster.pod_uids), by_pod
    # The pods' share cannot exceed the active power (idle is configured at 22 W of the 55 W). Their
    # ratio is not pinned here: on a loaded machine the CFS quotas are not reached (the energy split
    # itself is checked by the Rust end-to-end test against the cgroup counters).
    (active,) = series(cluster.query('sum(kepler_node_cpu_active_watts{zone=~"package|dram"})'))
    assert sum(by_pod.values()) <= float(active["value"][1]) * (1 + 1e-6), (by_pod, active)


def test_container_join_keeps_every_container(cluster):
    (dash,) = [d for d in dashboards() if d["uid"] == "kepler-rs-pods"]
    (p,) = [p for p in dash["panels"] if p["title"] == "Power per container"]
    expr = substitute(p["targets"][0]["expr"], {"node": ".*", "namespace": ".*", "pod": ".*"})
    got = {(s["metric"]["pod_id"], s["metric"].get("container_name")) for s in series(cluster.query(expr))}
    # Container names come from the pods' container statuses, matched to the cgroups by container ID.
    want = {(cluster.uid(pod), name) for pod in cluster.pods for name, _, _ in pod.containers}
    assert want <= got, want - got


def recording_rules() -> list[dict]:
    groups = yaml.safe_load((ALERTS / "kepler-rs.rules.yaml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "record" in r]


def test_recording_rules_evaluate_with_data(cluster):
    failures = []
    rules = recording_rules()
    assert rules
    for r in rules:
        for expr in (r["expr"], r["record"]):  # the expression, and the series Prometheus recorded
            res = cluster.query(expr)
            if res.get("status") != "success":
                failures.append(f"{r['record']}: {res.get('error')}")
            elif not res["data"]["result"] and r["record"] not in RULES_NEED_LATER:
                failures.append(f"{r['record']}: no data from {expr}")
    assert not failures, "\n".join(failures)
    (s,) = series(cluster.query(f'node_name:kepler_node_cpu_watts:total{{node_name="{NODE_NAME}"}}'))
    assert abs(float(s["value"][1]) - (PKG_WATTS + DRAM_WATTS)) < 0.05 * (PKG_WATTS + DRAM_WATTS)


def dashboard(uid: str) -> dict:
    (dash,) = [d for d in dashboards() if d["uid"] == uid]
    return dash


def target(dash: dict, title: str, ref: str = "A") -> str:
    (p,) = [p for p in dash["panels"] if p["title"] == title]
    (t,) = [t for t in p["targets"] if t["refId"] == ref]
    return t["expr"]


def by_user(result: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in series(result):
        user = s["metric"].get("hub_user", "")
        assert user not in out, result
        out[user] = float(s["value"][1])
    return out


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def pods_regex(uids: list[str]) -> str:
    return "|".join(uids)


def test_pod_metadata_comes_from_the_fake_api_server(cluster):
    (synced,) = series(cluster.query("kepler_exporter_pod_metadata_synced"))
    assert synced["value"][1] == "1", synced
    (pods,) = series(cluster.query("kepler_exporter_pod_metadata_pods"))
    assert pods["value"][1] == str(len(cluster.pods)), pods
    info = {s["metric"]["pod_id"]: s["metric"] for s in series(cluster.query("kepler_pod_info"))}
    for pod in cluster.pods:
        labels = info[cluster.uid(pod)]
        assert labels["pod_name"] == pod.name and labels["pod_namespace"] == pod.namespace, labels
        # The raw username from the annotation, not the escaped label; no hub labels on other pods.
        assert labels.get("hub_user") == pod.hub_user, labels
        assert labels.get("hub_server", "") == pod.hub_server, labels
    # Prometheus started after the exporter knew every pod's name: no pod series was ever unnamed.
    unnamed = f'kepler_pod_cpu_joules_total{{pod_id=~"{pods_regex(cluster.pod_uids)}", pod_name=""}}'
    assert not series(cluster.query(f"count(count_over_time({unnamed}[1h]))")), unnamed
    # The alert on a lost pod watch has nothing to fire on.
    (expr,) = [r["expr"] for g in yaml.safe_load((ALERTS / "kepler-rs.rules.yaml").read_text())["groups"]
               for r in g["rules"] if r.get("alert") == "KeplerRsPodMetadataOutOfSync"]
    assert not series(cluster.query(expr)), expr
    # The exporter asked the API server for this node's pods only, with its token: one list from the
    # watch cache, then watches with bookmarks from that list's resourceVersion.
    requests = cluster.api.seen()
    assert requests and all(r.authorized and r.method == "GET" and r.path == "/api/v1/pods"
                            and r.query.get("fieldSelector") == f"spec.nodeName={NODE_NAME}" for r in requests), requests
    lists = [r for r in requests if not r.is_watch]
    watches = [r for r in requests if r.is_watch]
    assert lists and all(r.query.get("resourceVersion") == "0" for r in lists), lists
    assert watches and all(r.query.get("allowWatchBookmarks") == "true"
                           and r.query.get("resourceVersion") == str(RESOURCE_VERSION) for r in watches), watches


def test_hub_user_variable_offers_exactly_the_hub_users(cluster):
    (var,) = [v for v in dashboard("kepler-rs-jupyterhub")["templating"]["list"] if v["name"] == "hub_user"]
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
    assert set(cluster.label_values(m.group(2), m.group(1))) == cluster.hub_users()


def test_per_user_panels_show_exactly_the_hub_users_with_their_pods_energy(cluster):
    dash = dashboard("kepler-rs-jupyterhub")
    values = resolve_variables(cluster, dash)
    users = cluster.hub_users()
    at = time.time() - 2  # every sample up to here is stored: both sides of a comparison see the same data

    def per_user_pods(template: str) -> dict[str, float]:
        """`template` (with {pods}) evaluated over each user's pods, selected by pod_id (the cgroup's)."""
        out = {}
        for user in users:
            (s,) = series(cluster.query(template.format(pods=pods_regex(cluster.uids_of_user(user))), at=at))
            out[user] = float(s["value"][1])
        return out

    def check(got: dict[str, float], want: dict[str, float], what: str):
        assert set(got) == users, (what, got)
        assert all(v > 0 for v in want.values()), (what, want)
        assert all(close(got[u], want[u]) for u in users), (what, got, want)

    # The counters themselves: a user's energy is the energy of that user's pods.
    cpu = 'kepler_pod_cpu_joules_total{{zone=~"package|dram", pod_id=~"{pods}"}}'
    joules = per_user_pods(f"sum({cpu})")
    check(by_user(cluster.query('sum by (hub_user) (kepler_pod_cpu_joules_total{zone=~"package|dram", hub_user!=""})', at=at)),
          joules, "kepler_pod_cpu_joules_total by hub_user")
    check(by_user(cluster.query('sum by (hub_user) (kepler_container_cpu_joules_total{zone=~"package|dram", hub_user!=""})', at=at)),
          joules, "kepler_container_cpu_joules_total by hub_user")
    # ... and every other pod's energy is outside any user's.
    (everyone,) = series(cluster.query('sum(kepler_pod_cpu_joules_total{zone=~"package|dram", pod_id=~"%s"})'
                                       % pods_regex(cluster.pod_uids), at=at))
    others = [cluster.uid(p) for p in cluster.pods if not p.hub_user]
    (rest,) = series(cluster.query(f"sum({cpu.format(pods=pods_regex(others))})", at=at))
    assert close(sum(joules.values()) + float(rest["value"][1]), float(everyone["value"][1]))
    servers = {(s["metric"]["hub_user"], s["metric"].get("hub_server", ""))
               for s in series(cluster.query('group by (hub_user, hub_server) (kepler_pod_cpu_joules_total{hub_user!=""})', at=at))}
    assert servers == {(p.hub_user, p.hub_server) for p in cluster.pods if p.hub_user}, servers

    # The panels.
    watts = per_user_pods('sum(kepler_pod_cpu_watts{{zone=~"package|dram", pod_id=~"{pods}"}})')
    check(by_user(cluster.query(substitute(target(dash, "Power per user (CPU)"), values), at=at)), watts, "Power per user (CPU)")
    kwh = per_user_pods(f'sum(increase({cpu}[{values["__range"]}])) / 3.6e6')
    for title in ["Energy today per user", "Energy this week per user", "Top users in range"]:
        check(by_user(cluster.query(substitute(target(dash, title), values), at=at)), kwh, title)
    grams = {u: v * float(values["carbon_intensity"]) for u, v in kwh.items()}
    check(by_user(cluster.query(substitute(target(dash, "CO2 today per user"), values), at=at)), grams, "CO2 today per user")
    want_servers = {u: float(sum(p.hub_user == u for p in cluster.pods)) for u in users}
    assert by_user(cluster.query(substitute(target(dash, "Servers per user"), values), at=at)) == want_servers


def test_hub_user_recording_rule_matches_the_users_pods(cluster):
    (rule,) = [r for r in recording_rules() if r["record"] == "hub_user:kepler_pod_cpu_watts:sum"]
    users = cluster.hub_users()
    at = time.time() - 2

    def pods_watts(user: str, at: float) -> float:
        (s,) = series(cluster.query('sum(kepler_pod_cpu_watts{zone=~"package|dram", pod_id=~"%s"})'
                                    % pods_regex(cluster.uids_of_user(user)), at=at))
        return float(s["value"][1])

    got = by_user(cluster.query(rule["expr"], at=at))
    assert set(got) == users, got
    assert all(close(got[u], pods_watts(u, at)) for u in users), got
    # The series Prometheus recorded: the same users, each value the users' pods' power at the
    # evaluation (a scrape stamped just before it may have been stored just after it, so any value
    # the pods had in the 3 s up to the evaluation is accepted).
    recorded = by_user(cluster.query(rule["record"], at=at))
    assert set(recorded) == users, recorded
    stamps = by_user(cluster.query(f'timestamp({rule["record"]})', at=at))
    for user in users:
        r = get(cluster.prom_port, "/api/v1/query_range", {
            "query": 'sum(kepler_pod_cpu_watts{zone=~"package|dram", pod_id=~"%s"})' % pods_regex(cluster.uids_of_user(user)),
            "start": f"{stamps[user] - 3:.3f}", "end": f"{stamps[user]:.3f}", "step": "0.1"})
        (s,) = series(r)
        assert any(close(recorded[user], float(v)) for _, v in s["values"]), (user, recorded[user], s["values"])


def test_input_errors_panel_shows_the_ebpf_fallback(cluster):
    # --sysfs is a fake tree without kernel/btf, so --cpu-source auto counts eBPF as unavailable
    # (no_btf) once and falls back to cgroup counters: the panel's one deterministic series.
    dash = dashboard("kepler-rs-node")
    expr = substitute(target(dash, "Input errors"), {"node": NODE_NAME, "__rate_interval": "1h"})
    got = {(s["metric"]["source"], s["metric"]["kind"]) for s in series(cluster.query(expr))}
    assert got == {("ebpf", "no_btf")}, got


def test_no_alert_fires_on_a_healthy_node(cluster):
    r = cluster.query('ALERTS{alertstate="firing"}')
    firing = [s["metric"]["alertname"] for s in series(r)]
    assert not firing, firing


# -- GPUs (the fake libnvidia-ml scripted by live_cluster.FAKE_GPUS) -------------------------------------

def panel_series(cluster: LiveCluster, dash: dict, title: str, values: dict, ref: str = "A") -> list:
    """The target's series as the panel runs it (an instant query, or a range over the last 20 s)."""
    (p,) = [p for p in dash["panels"] if p["title"] == title]
    (t,) = [t for t in p["targets"] if t["refId"] == ref]
    expr = substitute(t["expr"], values)
    return series(cluster.query(expr) if t.get("instant") else cluster.query_range(expr))


def gpu_window(cluster: LiveCluster, at: float) -> str:
    """A rate window over which every GPU series has been scraped (whole seconds, at least 10 s)."""
    r = cluster.query("min_over_time(timestamp(kepler_node_gpu_joules_total)[10m:1s])", at=at)
    oldest = min(float(s["value"][1]) for s in series(r))
    seconds = int(at - oldest) - 2
    assert seconds >= 10, f"only {at - oldest:.1f} s of GPU data"
    return f"{seconds}s"


def test_gpu_power_per_node_matches_the_scripted_wattage(cluster):
    at = time.time() - 2
    window = gpu_window(cluster, at)
    values = {"node": NODE_NAME, "gpu": ".*", "__rate_interval": window, "__range": window}
    want = sum(g.watts for g in cluster.gpus)
    for uid, title, ref in [("kepler-rs-cluster", "Cluster GPU power", "A"), ("kepler-rs-cluster", "GPU vs CPU power", "B"),
                            ("kepler-rs-gpu", "GPU vs CPU per node", "B")]:
        expr = substitute(target(dashboard(uid), title, ref), values)
        (s,) = series(cluster.query(expr, at=at))
        assert abs(float(s["value"][1]) - want) <= 0.02 * want, (title, s, want, expr)
    # Per device, the node dashboard and the GPU dashboard.
    for uid, title in [("kepler-rs-node", "GPU power"), ("kepler-rs-gpu", "Power per GPU")]:
        expr = substitute(target(dashboard(uid), title), values)
        got = {s["metric"]["gpu"]: float(s["value"][1]) for s in series(cluster.query(expr, at=at))}
        assert set(got) == {str(i) for i in range(len(cluster.gpus))}, (title, got)
        for i, gpu in enumerate(cluster.gpus):
            assert abs(got[str(i)] - gpu.watts) <= 0.02 * gpu.watts, (title, got, gpu)


def test_gpu_dashboard_shows_exactly_the_scripted_devices(cluster):
    dash = dashboard("kepler-rs-gpu")
    values = resolve_variables(cluster, dash)
    want = {(str(i), g.name) for i, g in enumerate(cluster.gpus)}
    (var,) = [v for v in dash["templating"]["list"] if v["name"] == "gpu"]
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
    assert set(cluster.label_values(m.group(2), substitute(m.group(1), {"node": ".*"}))) == {g.uuid for g in cluster.gpus}
    info = {(s["metric"]["gpu"], s["metric"]["gpu_uuid"], s["metric"]["gpu_name"])
            for s in series(cluster.query("kepler_node_gpu_info"))}
    assert info == {(str(i), g.uuid, g.name) for i, g in enumerate(cluster.gpus)}, info
    for title in ["Power per GPU", "GPU energy in range"]:
        got = [s["metric"] for s in panel_series(cluster, dash, title, values)]
        assert sorted((m["gpu"], m["gpu_name"]) for m in got) == sorted(want), (title, got)
        assert all(m["node_name"] == NODE_NAME for m in got), (title, got)
    # Each device's own panel, selected by its UUID (the $gpu variable).
    for i, gpu in enumerate(cluster.gpus):
        one = series(cluster.query(substitute(target(dash, "Power per GPU"), dict(values, gpu=gpu.uuid))))
        assert [(s["metric"]["gpu"], s["metric"]["gpu_name"]) for s in one] == [(str(i), gpu.name)], one
    # The per-pod panels: exactly the pods with a GPU process, with their names.
    want_pods = {(cluster.uid(cluster.pod(key)), cluster.pod(key).name) for g in cluster.gpus for key, _, _ in g.processes}
    for uid, title in [("kepler-rs-gpu", "GPU power per pod"), ("kepler-rs-pods", "GPU power per pod")]:
        d = dashboard(uid)
        vals = dict(resolve_variables(cluster, d), namespace=".*", pod=".*")
        got = {(s["metric"]["pod_id"], s["metric"]["pod_name"]) for s in series(cluster.query(substitute(target(d, title), vals)))}
        assert got == want_pods, (title, got)


def scripted_user_shares(cluster: LiveCluster) -> dict[str, float]:
    """Each hub user's share of the hub users' GPU energy: the SM shares of their processes, each
    GPU's active power split by SM % among its processes."""
    joules: dict[str, float] = {}
    for g in cluster.gpus:
        sm = sum(p for _, _, p in g.processes)
        for key, _, p in g.processes:
            user = cluster.pod(key).hub_user
            if user:
                joules[user] = joules.get(user, 0.0) + (g.watts - GPU_IDLE_WATTS) * p / sm
    total = sum(joules.values())
    return {u: j / total for u, j in joules.items()}


def check_user_split(got: dict[str, float], shares: dict[str, float], what: str):
    assert set(got) == set(shares), (what, got)
    total = sum(got.values())
    assert total > 0, (what, got)
    for user, share in shares.items():
        assert abs(got[user] / total - share) <= 0.05 * share, (what, user, got, shares)


def test_gpu_energy_per_user_splits_as_the_scripted_sm_shares(cluster):
    dash = dashboard("kepler-rs-jupyterhub")
    values = resolve_variables(cluster, dash)
    shares = scripted_user_shares(cluster)
    assert set(shares) == cluster.hub_users()
    at = time.time() - 2
    for title, ref in [("Power per user (GPU)", "A"), ("Energy today per user", "B"), ("Energy this week per user", "B"),
                       ("CO2 today per user", "B")]:
        check_user_split(by_user(cluster.query(substitute(target(dash, title, ref), values), at=at)), shares, title)
    # The users' GPU power is their pods' (the users' active power is GPU 0's, minus nothing else).
    window = gpu_window(cluster, at)
    got = by_user(cluster.query(substitute(target(dash, "Power per user (GPU)"), dict(values, __rate_interval=window)), at=at))
    want = sum(g.watts - GPU_IDLE_WATTS for g in cluster.gpus
               if all(cluster.pod(k).hub_user for k, _, _ in g.processes))
    assert abs(sum(got.values()) - want) <= 0.02 * want, (got, want)


def test_hub_user_gpu_recording_rule_has_the_users(cluster):
    shares = scripted_user_shares(cluster)
    (rule,) = [r for r in recording_rules() if r["record"] == "hub_user:kepler_pod_gpu_joules:rate5m"]
    at = time.time() - 2
    check_user_split(by_user(cluster.query(rule["expr"], at=at)), shares, rule["expr"])
    check_user_split(by_user(cluster.query(rule["record"], at=at)), shares, rule["record"])


# -- "My energy": the researcher's own dashboard, run as the viewer Grafana logged in ------------------

def resolve_with(cluster: LiveCluster, dash: dict, login: str) -> dict[str, str]:
    global BUILTINS
    saved = BUILTINS
    BUILTINS = dict(saved, **{"__user.login": login})
    try:
        return resolve_variables(cluster, dash)
    finally:
        BUILTINS = saved


def one_value(result: dict) -> float:
    (s,) = series(result)
    return float(s["value"][1])


def test_my_energy_shows_only_the_viewers_servers_and_the_per_user_panels_numbers(cluster):
    mine = dashboard("kepler-rs-my-energy")
    users_dash = dashboard("kepler-rs-jupyterhub")
    at = time.time() - 2
    for login in sorted(cluster.hub_users()):
        values = resolve_with(cluster, mine, login)
        assert values["hub_user"] == login, values
        # Only this user's servers, by name.
        want_servers = {p.hub_server for p in cluster.pods if p.hub_user == login}
        for title, ref in [("Power per server", "A"), ("Energy per server in range", "A"), ("My servers now", "A")]:
            expr = substitute(target(mine, title, ref), values)
            r = cluster.query(expr, at=at)
            got = {s["metric"].get("hub_server", "") for s in series(r)}
            assert got == want_servers, (login, title, got)
        # The same numbers as the admins' per-user panels, for this user (the test gives every panel the
        # same $__range; Grafana gives each its own period).
        per_user = dict(resolve_variables(cluster, users_dash), hub_user=login)
        for my_title, ref, their_title, their_ref in [
            ("My power now", "A", "Power per user (CPU)", "A"),
            ("My power now", "B", "Power per user (GPU)", "A"),
            ("My energy today", "A", "Energy today per user", "A"),
            ("My energy today", "B", "Energy today per user", "B"),
            ("My energy this week", "A", "Energy this week per user", "A"),
            ("My energy this week", "B", "Energy this week per user", "B"),
            ("My energy this month", "A", "Top users in range", "A"),
            ("My CO2 this month", "A", "CO2 today per user", "A"),
            ("My CO2 this month", "B", "CO2 today per user", "B"),
        ]:
            got = one_value(cluster.query(substitute(target(mine, my_title, ref), values), at=at))
            theirs = by_user(cluster.query(substitute(target(users_dash, their_title, their_ref), per_user), at=at))
            assert set(theirs) == {login}, (their_title, theirs)
            assert got > 0 and close(got, theirs[login]), (login, my_title, ref, got, theirs)
        # Per server adds up to the user's total.
        total = one_value(cluster.query(substitute(target(mine, "My energy today"), values), at=at))
        per_server = series(cluster.query(substitute(target(mine, "Energy per server in range"), values), at=at))
        assert close(sum(float(s["value"][1]) for s in per_server), total), (per_server, total)


def test_my_energy_matches_the_login_whatever_its_case_and_shows_nothing_to_strangers(cluster):
    mine = dashboard("kepler-rs-my-energy")
    # GitHub keeps a login's case, JupyterHub lower-cases it: the hidden variable still finds the user.
    assert resolve_with(cluster, mine, ALICE.upper())["hub_user"] == ALICE
    # A login that is no hub user: the variable is empty and every panel is empty (not the pods
    # without hub_user, which an empty hub_user="" would select).
    values = resolve_with(cluster, mine, "mallory")
    assert values["hub_user"] == "", values
    for p in mine["panels"]:
        for t in p.get("targets", []):
            expr = substitute(t["expr"], values)
            assert not series(cluster.query(expr)), (p["title"], expr)
    # The variable is hidden and takes no value from a URL that its query did not offer.
    (var,) = [v for v in mine["templating"]["list"] if v["name"] == "hub_user"]
    assert var["hide"] == 2 and var["allowCustomValue"] is False and "${__user.login}" in var["definition"]


# -- Kepler's own dashboards (sustainable-computing-io/kepler), as Grafana would run them ------------------

KEPLER_DASHBOARDS = Path(__file__).parent / "upstream" / "kepler-dashboards"
KEPLER_07 = "kepler-0.7.12-Kepler-Exporter.json"
KEPLER_LATEST = "kepler-latest-dashboard.json"
# Panels of Kepler's current dashboard that stay empty against kepler-rs, with why. Every other
# target must return data.
NO_VMS = "kepler-rs attributes energy to pods, containers and processes, not to VMs: no kepler_vm_* families"
KEPLER_LATEST_EMPTY = {
    "🏆 Top 10 Power Consuming VMs (W) per Zone": NO_VMS,
    "🔋 Total Power Consumption of VMs (W) per Zone": NO_VMS,
    "🖥️ VM Power Consumption (W) By Zone": NO_VMS,
}
# Kepler 0.7's families: none of them is served without --metrics-compat kepler-0.7.
KEPLER_07_FAMILIES = [f"kepler_{scope}_{c}_joules_total" for scope in ("node", "container")
                      for c in ("package", "core", "uncore", "dram", "other", "platform")] + \
    ["kepler_container_joules_total", "kepler_node_info"]


def kepler_dashboard(name: str) -> dict:
    path = KEPLER_DASHBOARDS / name
    if not path.exists():
        skip_or_fail(f"{path} is missing (copies of Kepler's dashboards, see upstream/README.md)")
    return json.loads(path.read_text())


def kepler_targets(dash: dict):
    """(panel, target) for every panel, rows' panels included."""
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))
    for p in walk(dash["panels"]):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield p, t


def grafana_regex(pattern: str) -> re.Pattern:
    """A Grafana variable regex (`/.../flags`, JavaScript named groups) as a Python pattern."""
    body = pattern.strip()
    if body.startswith("/"):
        body = body[1:body.rindex("/")]
    return re.compile(body.replace("(?<", "(?P<"))


def result_string(sample: dict) -> str:
    """One query_result() answer as Grafana writes it for the variable regex."""
    metric = dict(sample["metric"])
    name = metric.pop("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    value, at = sample["value"][1], int(float(sample["value"][0]) * 1000)
    return f"{name}{{{labels}}} {value} {at}"


def variable_options(cluster: LiveCluster, var: dict, values: dict) -> list[str]:
    """A query variable's options: its query run through the Prometheus API, as Grafana runs it."""
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    query = substitute(query, values)
    if m := re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", query, re.S):
        options = cluster.label_values(m.group(2), m.group(1))
    elif m := re.fullmatch(r"\s*query_result\((.+)\)\s*", query, re.S):
        options = [result_string(x) for x in series(cluster.query(m.group(1)))]
    else:
        raise AssertionError(f"unhandled variable query {query}")
    if not var.get("regex"):
        return options
    regex, picked = grafana_regex(var["regex"]), []
    for option in options:
        groups = [m.groupdict() for m in regex.finditer(option)]
        value = next((g["value"] for g in groups if g.get("value")), None)
        if value is not None:
            picked.append(value)
    return picked


def grafana_escape(value: str) -> str:
    """A multi-value option as Grafana writes it into a Prometheus regex inside a PromQL string:
    regex metacharacters get a backslash, itself escaped for the string."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value)


def resolve_kepler_variables(cluster: LiveCluster, dash: dict) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Grafana's substitution: every variable's query run in dependency order; `All` (the saved
    choice of these dashboards) becomes the variable's allValue, else a regex of every option; any
    other variable takes its first option, or "" when it has none."""
    values = dict(BUILTINS)
    pending = []
    for v in dash["templating"]["list"]:
        if v["type"] == "datasource":
            values[v["name"]] = "prometheus"
        elif v["type"] in ("textbox", "constant"):
            values[v["name"]] = v["query"]
        elif v["type"] == "query":
            pending.append(v)
        else:
            raise AssertionError(f"unhandled variable type {v['type']}")
    options: dict[str, list[str]] = {}
    while pending:
        ready = [v for v in pending
                 if set(re.findall(r"\$\{?(\w+)", json.dumps(v["query"]))) <= set(values)]
        assert ready, f"variables that depend on unknown ones: {[v['name'] for v in pending]}"
        for v in ready:
            opts = options[v["name"]] = variable_options(cluster, v, values)
            chose_all = v.get("includeAll") and v.get("current", {}).get("value") in ("$__all", ["$__all"])
            if chose_all:
                values[v["name"]] = v.get("allValue") or "(" + "|".join(grafana_escape(o) for o in opts) + ")"
            else:
                values[v["name"]] = opts[0] if opts else ""
            pending.remove(v)
    return values, options


def test_kepler_07_dashboard_every_query_has_data(cluster):
    dash = kepler_dashboard(KEPLER_07)
    # The 24h:1m subqueries need samples at two minute boundaries.
    cluster.wait_for_query("sum(increase(kepler_container_joules_total[24h:1m]))", timeout=200)
    values, options = resolve_kepler_variables(cluster, dash)
    assert options["namespace"] and options["pod"], options
    assert {p.name for p in cluster.pods} <= set(options["pod"]), options["pod"]
    ran, empty = 0, []
    for p, t in kepler_targets(dash):
        expr = substitute(t["expr"], values)
        r = cluster.query_range(expr)
        assert r.get("status") == "success", (p["title"], r)
        ran += 1
        if not r["data"]["result"]:
            empty.append(f"{p['title']} / {t.get('legendFormat')}: {expr}")
    assert ran == 16, ran
    assert not empty, "\n".join(empty)


def vector(cluster: LiveCluster, expr: str, labels: tuple[str, ...], at: float) -> dict[tuple, float]:
    return {tuple(s["metric"].get(l, "") for l in labels): float(s["value"][1]) for s in series(cluster.query(expr, at))}


def by_namespace(per_pod: dict[tuple, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (namespace, _), v in per_pod.items():
        out[namespace] = out.get(namespace, 0.0) + v
    return out


def assert_same(got: dict, want: dict, what: str):
    assert got.keys() == want.keys(), f"{what}: {sorted(got)} != {sorted(want)}"
    for k, v in want.items():
        assert close(got[k], v), f"{what} {k}: 0.7 {got[k]} != native {v}"


def test_kepler_07_values_equal_the_native_series_per_namespace_and_pod(cluster):
    """One evaluation time, so both sides come from the same scrapes: the 0.7 families per
    (namespace, pod), as the dashboard groups them, equal kepler-rs's own series within 1e-6, both
    as counters and as the dashboard's irate() power."""
    at = time.time() - 1
    keys = ("container_namespace", "pod_name")
    native_keys = ("pod_namespace", "pod_name")
    for component in ("package", "dram"):
        for wrap in ("{}", "irate({}[1m])"):
            legacy = vector(cluster, "sum by (container_namespace, pod_name) (" + wrap.format(
                f'kepler_container_{component}_joules_total{{pod_name!=""}}') + ")", keys, at)
            native = vector(cluster, "sum by (pod_namespace, pod_name) (" + wrap.format(
                f'kepler_pod_cpu_joules_total{{zone="{component}", pod_name!=""}}') + ")", native_keys, at)
            assert len(native) >= len(cluster.pods), native
            assert_same(legacy, native, f"{component} {wrap}")
            assert_same(by_namespace(legacy), by_namespace(native), f"{component} {wrap} per namespace")
    other = vector(cluster, 'sum(kepler_container_other_joules_total)', (), at)
    assert other == {(): 0.0}, f"no psys in the simulated powercap, so other is 0: {other}"
    # kepler_container_joules_total = package + dram + other + the containers' GPU energy.
    names = {k[0]: (k[1], k[2]) for k in vector(cluster, "kepler_pod_info", ("pod_id", "pod_namespace", "pod_name"), at)}
    want: dict[tuple, float] = {}
    # A pod without kepler_pod_info at this instant (gone, in its grace period) has no pod_name in
    # the 0.7 families either, so the pod_name!="" total leaves it out too.
    for (pod_id, zone), v in vector(cluster, 'kepler_pod_cpu_joules_total{zone=~"package|dram"}', ("pod_id", "zone"), at).items():
        if pod_id in names:
            want[names[pod_id]] = want.get(names[pod_id], 0.0) + v
    gpu = vector(cluster, "sum by (pod_id) (kepler_container_gpu_joules_total)", ("pod_id",), at)
    assert gpu, "the fake GPUs give some pods GPU energy"
    for (pod_id,), v in gpu.items():
        if pod_id in names:
            want[names[pod_id]] = want.get(names[pod_id], 0.0) + v
    total = vector(cluster, 'sum by (container_namespace, pod_name) (kepler_container_joules_total{pod_name!=""})', keys, at)
    assert_same(total, want, "kepler_container_joules_total")
    assert_same(by_namespace(total), by_namespace(want), "kepler_container_joules_total per namespace")


def test_kepler_latest_dashboard_every_query_has_data_but_the_vm_panels(cluster):
    dash = kepler_dashboard(KEPLER_LATEST)
    values, options = resolve_kepler_variables(cluster, dash)
    # $node is label_values(kepler_node_cpu_info, instance); $process needs --process-metrics.
    assert options["node"] and options["process"] and options["job"] == ["kepler-rs"], options
    titles, wrong = set(), []
    for p, t in kepler_targets(dash):
        titles.add(p["title"])
        expr = substitute(t["expr"], values)
        r = cluster.query(expr) if t.get("instant") else cluster.query_range(expr)
        assert r.get("status") == "success", (p["title"], r)
        has_data = bool(r["data"]["result"])
        if p["title"] in KEPLER_LATEST_EMPTY:
            if has_data:
                wrong.append(f"{p['title']}: data, but listed as empty ({KEPLER_LATEST_EMPTY[p['title']]})")
        elif not has_data:
            wrong.append(f"{p['title']}: no data\n    {expr}")
    assert set(KEPLER_LATEST_EMPTY) <= titles, set(KEPLER_LATEST_EMPTY) - titles
    assert len(titles) >= 20, titles
    assert not wrong, "\n".join(wrong)


def promtool_check(text: str) -> str:
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 and not (r.stdout + r.stderr).strip() else r.stdout + r.stderr


def test_kepler_07_families_only_with_the_flag_and_promtool_accepts_both(cluster):
    with_compat = cluster.exporter_metrics()
    without = cluster.plain_exposition()
    for family in ("kepler_container_package_joules_total", "kepler_node_package_joules_total",
                   "kepler_container_joules_total", "kepler_node_info"):
        assert f"\n{family}{{" in with_compat, family
    for family in KEPLER_07_FAMILIES:
        assert f"\n{family}{{" not in without, family
    assert 'mode="' not in without and "container_namespace=" not in without
    assert "kepler_container_gpu_joules_total{" in without and "kepler_node_cpu_info{" in without
    assert 'container_namespace="",pod_name="",mode="idle"' in with_compat
    for line in with_compat.splitlines():
        assert '="None"' not in line, line
    for name, text in (("--metrics-compat kepler-0.7", with_compat), ("default", without)):
        assert promtool_check(text) == "", f"{name}: {promtool_check(text)}"
