#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder (one JSON file per dashboard).

The JSON files are committed; deploy/tests/test_dashboards.py fails when they differ from what this
script writes, so edit the panels here and run `python3 dashboards/generate.py`.
Conventions: the datasource is the variable ${datasource}; uids are fixed; every panel has a unit and
a description; node names only come from the $node variable; zones are never summed across the
overlapping ones (node total = package + dram, or psys alone where present).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
CPU_ZONES = 'zone=~"package|dram"'


def node_watts(sel: str) -> str:
    """Per-node CPU power: package + dram, or psys alone where the platform has it."""
    return (
        f'(sum by (node_name) (kepler_node_cpu_watts{{{CPU_ZONES}, {sel}}})'
        f' unless on (node_name) kepler_node_cpu_watts{{zone="psys", {sel}}})'
        f' or sum by (node_name) (kepler_node_cpu_watts{{zone="psys", {sel}}})'
    )


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "editorMode": "code", "expr": expr, "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant, "refId": ref}
    if fmt != "time_series":
        t["format"] = fmt
    return t


def panel(title: str, kind: str, unit: str, description: str, targets: list[dict], w: int = 12, h: int = 8,
          stack: bool = False, time_from: str | None = None, decimals: int | None = None) -> dict:
    defaults: dict = {"unit": unit, "color": {"mode": "palette-classic"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 5,
                              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                              "showPoints": "never"}
    p = {"type": kind, "title": title, "description": description, "datasource": DS,
         "fieldConfig": {"defaults": defaults, "overrides": []}, "targets": targets,
         "gridPos": {"w": w, "h": h}}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
    elif kind == "bargauge":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True}
    elif kind == "table":
        p["options"] = {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]}
        p["transformations"] = [{"id": "labelsToFields", "options": {"mode": "columns"}},
                                {"id": "organize", "options": {"excludeByName": {"Time": True}}}]
    if time_from:
        p["timeFrom"] = time_from
    return p


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


def var_datasource() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}


def var_query(name: str, label: str, query: str, include_all: bool = True, multi: bool = True) -> dict:
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "definition": query, "query": {"query": query, "refId": f"{name}-values", "qryType": 1},
         "refresh": 2, "sort": 1, "includeAll": include_all, "multi": multi, "hide": 0,
         "current": {}, "options": [], "regex": ""}
    if include_all:
        v["allValue"] = ".*"
    return v


def var_textbox(name: str, label: str, default: str, description: str) -> dict:
    return {"name": name, "label": label, "type": "textbox", "query": default, "hide": 0,
            "description": description, "current": {"text": default, "value": default},
            "options": [{"selected": True, "text": default, "value": default}]}


def layout(panels: list[dict]) -> list[dict]:
    """Flow layout on Grafana's 24-column grid; ids in order."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x, row_h = x + w, max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list[dict],
              time_from: str = "now-6h") -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["kepler-rs", "energy"],
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "30s",
        "time": {"from": time_from, "to": "now"}, "timezone": "browser", "fiscalYearStartMonth": 0,
        "links": [{"title": "kepler-rs dashboards", "type": "dashboards", "tags": ["kepler-rs"], "asDropdown": True}],
        "annotations": {"list": []},
        "templating": {"list": [var_datasource(), *variables]},
        "panels": layout(panels),
    }


NODE_VAR = var_query("node", "Node", "label_values(kepler_node_cpu_joules_total, node_name)")
NODE = 'node_name=~"$node"'
POD_SEL = f'{NODE}, pod_namespace=~"$namespace", pod_name=~"$pod"'


def cluster() -> dict:
    kwh_ns = f'sum by (pod_namespace) (increase(kepler_pod_cpu_joules_total{{{CPU_ZONES}, {NODE}}}[$__range])) / 3.6e6'
    panels = [
        panel("Cluster CPU power", "stat", "watt",
              "CPU power of the selected nodes now: package + dram per node (psys alone where present), summed.",
              [target(f"sum({node_watts(NODE)})", "CPU")], w=6, h=5),
        panel("Cluster GPU power", "stat", "watt",
              "Power of all GPUs on the selected nodes, from their energy counters. Empty until the GPU source is enabled (--gpu).",
              [target(f"sum(rate(kepler_node_gpu_joules_total{{{NODE}}}[$__rate_interval]))", "GPU")], w=6, h=5),
        panel("Energy in range", "stat", "kwatth",
              "CPU energy (package + dram) of the selected nodes over the dashboard's time range.",
              [target(f"sum(increase(kepler_node_cpu_joules_total{{{CPU_ZONES}, {NODE}}}[$__range])) / 3.6e6", "kWh")],
              w=6, h=5, decimals=3),
        panel("Nodes measured / estimated", "stat", "short",
              "Exporters by energy source: rapl is measured; estimate means no readable RAPL and power is modelled from CPU utilisation.",
              [target(f"count by (source) (kepler_exporter_energy_source_info{{{NODE}}})", "{{source}}")], w=6, h=5),
        panel("Power per node", "timeseries", "watt",
              "CPU power per node (package + dram, or psys). Zones overlap, so they are never all summed.",
              [target(node_watts(NODE), "{{node_name}}")], stack=True),
        panel("GPU vs CPU power", "timeseries", "watt",
              "Cluster CPU power against GPU power. The GPU series is empty until the GPU source is enabled.",
              [target(f"sum({node_watts(NODE)})", "CPU", "A"),
               target(f"sum(rate(kepler_node_gpu_joules_total{{{NODE}}}[$__rate_interval]))", "GPU", "B")], stack=True),
        panel("Power per namespace", "timeseries", "watt",
              "CPU power attributed to pods, by namespace (package + dram). Without pod metadata all pods fall under an empty namespace.",
              [target(f"sum by (pod_namespace) (kepler_pod_cpu_watts{{{CPU_ZONES}, {NODE}}})", "{{pod_namespace}}")], stack=True),
        panel("Idle, system and pods", "timeseries", "watt",
              "Where the cluster's CPU power goes: idle (baseline), active outside pods (system), active in pods.",
              [target(f"sum(kepler_node_cpu_idle_watts{{{CPU_ZONES}, {NODE}}})", "idle", "A"),
               target(f"sum(kepler_node_cpu_system_watts{{{CPU_ZONES}, {NODE}}})", "system", "B"),
               target(f"sum(kepler_pod_cpu_watts{{{CPU_ZONES}, {NODE}}})", "pods", "C")], stack=True),
        panel("Energy per namespace in range", "bargauge", "kwatth",
              "CPU energy per namespace over the dashboard's time range (package + dram).",
              [target(f"sort_desc({kwh_ns})", "{{pod_namespace}}", instant=True)], w=12, decimals=3),
        panel("Exporters up", "stat", "short",
              "kepler-rs targets Prometheus scrapes successfully, out of all kepler-rs targets.",
              [target('sum(up{job=~".*kepler-rs.*"})', "up", "A"),
               target('count(up{job=~".*kepler-rs.*"})', "targets", "B")], w=12),
    ]
    return dashboard("kepler-rs-cluster", "kepler-rs / Cluster overview",
                     "Power and energy of the cluster: per node, per namespace, CPU against GPU.",
                     panels, [NODE_VAR])


def node() -> dict:
    n = 'node_name="$node"'
    panels = [
        row("Power"),
        panel("Power by zone", "timeseries", "watt",
              "Every RAPL zone of the node. Zones overlap (core and uncore are inside package; psys covers the platform): do not add them up.",
              [target(f"kepler_node_cpu_watts{{{n}}}", "{{zone}} ({{source}})")]),
        panel("Power by socket", "timeseries", "watt",
              "Package and DRAM power of each CPU socket (RAPL only: empty on the estimate). A socket far above the others is where the load runs.",
              [target(f"kepler_node_cpu_socket_watts{{{CPU_ZONES}, {n}}}", "socket {{socket}} {{zone}}")]),
        panel("Idle vs active", "timeseries", "watt",
              "Idle (the node's baseline) and active power, package + dram.",
              [target(f"sum(kepler_node_cpu_idle_watts{{{CPU_ZONES}, {n}}})", "idle", "A"),
               target(f"sum(kepler_node_cpu_active_watts{{{CPU_ZONES}, {n}}})", "active", "B")], stack=True),
        panel("System vs pods", "timeseries", "watt",
              "Active power split into pods and everything outside pods (host daemons, kernel), package + dram.",
              [target(f"sum(kepler_pod_cpu_watts{{{CPU_ZONES}, {n}}})", "pods", "A"),
               target(f"sum(kepler_node_cpu_system_watts{{{CPU_ZONES}, {n}}})", "system", "B")], stack=True),
        panel("CPU utilisation", "timeseries", "percentunit",
              "Node CPU utilisation from /proc/stat over the last measurement interval.",
              [target(f"kepler_node_cpu_usage_ratio{{{n}}}", "busy")]),
        panel("Top pods on this node", "bargauge", "watt",
              "The ten pods with the highest CPU power on this node now (package + dram).",
              [target(f"topk(10, sum by (pod_namespace, pod_name, pod_id) (kepler_pod_cpu_watts{{{CPU_ZONES}, {n}}}))",
                      "{{pod_namespace}}/{{pod_name}} {{pod_id}}", instant=True)]),
        panel("GPU power", "timeseries", "watt",
              "Power of each GPU of this node. Empty until the GPU source is enabled (--gpu).",
              [target(f"sum by (gpu, gpu_name) (rate(kepler_node_gpu_joules_total{{{n}}}[$__rate_interval]))", "GPU {{gpu}} {{gpu_name}}")]),
        row("Exporter health"),
        panel("Energy source", "stat", "none",
              "rapl: measured by the CPU's energy counters; estimate: no readable RAPL, modelled from CPU utilisation.",
              [target(f"kepler_exporter_energy_source_info{{{n}}}", "{{source}}")], w=6, h=5),
        panel("CPU attribution source", "stat", "none",
              "How CPU time is split between pods: cgroup counters or eBPF; none means no usable cgroup hierarchy.",
              [target(f"kepler_exporter_cpu_source_info{{{n}}}", "{{source}}")], w=6, h=5),
        panel("Snapshot age", "stat", "s",
              "Seconds since the served measurement was taken; it should stay below two intervals.",
              [target(f"time() - kepler_exporter_last_tick_timestamp_seconds{{{n}}}", "age")], w=6, h=5, decimals=1),
        panel("Series exported", "stat", "short",
              "Number of series in one scrape of this exporter (cardinality).",
              [target(f"kepler_exporter_series{{{n}}}", "series")], w=6, h=5),
        panel("Inputs up", "timeseries", "short",
              "1 when an input (rapl, estimate, procfs, cgroup, ebpf, ...) was read in the last tick, 0 when it failed.",
              [target(f"kepler_exporter_source_up{{{n}}}", "{{source}}")], w=8),
        panel("Input errors", "timeseries", "ops",
              "Skipped reads and rejected values per second, by input and kind. Empty while nothing fails.",
              [target(f"sum by (source, kind) (rate(kepler_exporter_source_errors_total{{{n}}}[$__rate_interval]))", "{{source}} {{kind}}")], w=8),
        panel("Tick duration", "timeseries", "s",
              "Wall time of one measurement tick (reading counters, attributing, publishing).",
              [target(f"kepler_exporter_tick_duration_seconds{{{n}}}", "tick")], w=8),
    ]
    return dashboard("kepler-rs-node", "kepler-rs / Node detail",
                     "One node: RAPL zones, idle and active power, system against pods, and the exporter's health.",
                     panels, [var_query("node", "Node", "label_values(kepler_node_cpu_joules_total, node_name)",
                                        include_all=False, multi=False)])


def pods() -> dict:
    kwh_pod = (f'sum by (pod_namespace, pod_name, pod_id) (increase(kepler_pod_cpu_joules_total{{{CPU_ZONES}, {POD_SEL}}}[$__range]))'
               ' / 3.6e6')
    container_w = (f'sum by (pod_id, container_name, container_id) (kepler_container_cpu_watts{{{CPU_ZONES}, {NODE}}})'
                   f' * on (pod_id) group_left (pod_namespace, pod_name)'
                   f' group by (pod_id, pod_namespace, pod_name) (kepler_pod_cpu_watts{{zone="package", {POD_SEL}}})')
    panels = [
        panel("Power per namespace", "timeseries", "watt",
              "CPU power of the pods of each namespace (package + dram).",
              [target(f'sum by (pod_namespace) (kepler_pod_cpu_watts{{{CPU_ZONES}, {POD_SEL}}})', "{{pod_namespace}}")], stack=True),
        panel("Power per pod", "timeseries", "watt",
              "CPU power of each selected pod (package + dram). A pod that ended shows 0 W for the grace period, then disappears.",
              [target(f'sum by (pod_namespace, pod_name, pod_id) (kepler_pod_cpu_watts{{{CPU_ZONES}, {POD_SEL}}})',
                      "{{pod_namespace}}/{{pod_name}} {{pod_id}}")], stack=True),
        panel("Power per container", "timeseries", "watt",
              "CPU power of each container of the selected pods (package + dram); a pod's containers add up to the pod.",
              [target(container_w, "{{pod_name}}/{{container_name}} {{container_id}}")], stack=True),
        panel("GPU power per pod", "timeseries", "watt",
              "GPU power attributed to each selected pod. Empty until the GPU source is enabled.",
              [target(f'sum by (pod_namespace, pod_name, pod_id) (rate(kepler_pod_gpu_joules_total{{{POD_SEL}}}[$__rate_interval]))',
                      "{{pod_namespace}}/{{pod_name}}")]),
        panel("Energy per pod in range", "table", "kwatth",
              "CPU energy of each selected pod over the dashboard's time range, largest first.",
              [target(f"sort_desc({kwh_pod})", "", instant=True, fmt="table")], w=12, decimals=4),
        panel("Energy per namespace in range", "bargauge", "kwatth",
              "CPU energy of each namespace over the dashboard's time range.",
              [target(f'sort_desc(sum by (pod_namespace) (increase(kepler_pod_cpu_joules_total{{{CPU_ZONES}, {POD_SEL}}}[$__range])) / 3.6e6)',
                      "{{pod_namespace}}", instant=True)], w=12, decimals=4),
    ]
    return dashboard("kepler-rs-pods", "kepler-rs / Namespaces and pods",
                     "Power and energy per namespace, pod and container.",
                     panels, [NODE_VAR,
                              var_query("namespace", "Namespace", "label_values(kepler_pod_cpu_joules_total, pod_namespace)"),
                              var_query("pod", "Pod", 'label_values(kepler_pod_cpu_joules_total{pod_namespace=~"$namespace"}, pod_name)')])


def jupyterhub() -> dict:
    u = 'hub_user!="", hub_user=~"$hub_user"'
    cpu_kwh = f'sum by (hub_user) (increase(kepler_pod_cpu_joules_total{{{CPU_ZONES}, {u}}}[$__range])) / 3.6e6'
    gpu_kwh = f'sum by (hub_user) (increase(kepler_pod_gpu_joules_total{{{u}}}[$__range])) / 3.6e6'
    needs = " Needs pod metadata (hub_user from the hub.jupyter.org/username annotation)."
    panels = [
        panel("Power per user (CPU)", "timeseries", "watt",
              "CPU power of each JupyterHub user's servers (package + dram)." + needs,
              [target(f"sum by (hub_user) (kepler_pod_cpu_watts{{{CPU_ZONES}, {u}}})", "{{hub_user}}")], stack=True),
        panel("Power per user (GPU)", "timeseries", "watt",
              "GPU power of each user's servers." + needs + " Also needs the GPU source.",
              [target(f"sum by (hub_user) (rate(kepler_pod_gpu_joules_total{{{u}}}[$__rate_interval]))", "{{hub_user}}")], stack=True),
        panel("Energy today per user", "bargauge", "kwatth",
              "CPU and GPU energy of each user since midnight (dashboard time zone)." + needs,
              [target(cpu_kwh, "{{hub_user}} CPU", "A", instant=True),
               target(gpu_kwh, "{{hub_user}} GPU", "B", instant=True)], w=8, time_from="now/d", decimals=3),
        panel("Energy this week per user", "bargauge", "kwatth",
              "CPU and GPU energy of each user since the start of the week." + needs,
              [target(cpu_kwh, "{{hub_user}} CPU", "A", instant=True),
               target(gpu_kwh, "{{hub_user}} GPU", "B", instant=True)], w=8, time_from="now/w", decimals=3),
        panel("CO2 today per user", "bargauge", "massg",
              "Emissions since midnight: (CPU + GPU) energy in kWh × the carbon-intensity variable (g CO2 per kWh; "
              "set it to your grid's figure)." + needs,
              [target(f"({cpu_kwh}) * $carbon_intensity", "{{hub_user}} CPU", "A", instant=True),
               target(f"({gpu_kwh}) * $carbon_intensity", "{{hub_user}} GPU", "B", instant=True)],
              w=8, time_from="now/d", decimals=1),
        panel("Top users in range", "table", "kwatth",
              "The ten users with the most CPU energy over the dashboard's time range." + needs,
              [target(f"topk(10, {cpu_kwh})", "", instant=True, fmt="table")], w=12, decimals=4),
        panel("Servers per user", "stat", "short",
              "Running servers (pods) of each user, from kepler_pod_info." + needs,
              [target(f'count by (hub_user) (kepler_pod_info{{{u}}})', "{{hub_user}}", instant=True)], w=12),
    ]
    return dashboard("kepler-rs-jupyterhub", "kepler-rs / JupyterHub users",
                     "Power, energy and CO2 per JupyterHub user (hub_user), with a carbon-intensity variable.",
                     panels, [var_query("hub_user", "User", 'label_values(kepler_pod_cpu_joules_total{hub_user!=""}, hub_user)'),
                              var_textbox("carbon_intensity", "Carbon intensity (gCO2/kWh)", "400",
                                          "Grams of CO2 per kWh of the electricity used; 400 is a rough world average.")],
                     time_from="now-24h")


# The hub user whose figures "My energy" shows: the hub_user values matching the Grafana login. JupyterHub
# lower-cases GitHub logins, Grafana keeps GitHub's case, so the match ignores case. Where hub usernames
# are not the Grafana logins (another authenticator), change this matcher and regenerate, e.g.
# '(?i)${__user.login}@uni\\.edu' when the hub names users by e-mail and Grafana by GitHub login
# (dashboards/README.md, "My energy").
MY_LOGIN_MATCH = "(?i)${__user.login}"


def my_energy() -> dict:
    me = 'hub_user!="", hub_user="$hub_user"'
    cpu_j = f"kepler_pod_cpu_joules_total{{{CPU_ZONES}, {me}}}"
    gpu_j = f"kepler_pod_gpu_joules_total{{{me}}}"
    cpu_kwh = f"sum(increase({cpu_j}[$__range])) / 3.6e6"
    gpu_kwh = f"sum(increase({gpu_j}[$__range])) / 3.6e6"
    active = (" Active energy of your servers' pods only: the node's idle power is not billed to anyone, and"
              " what runs outside your pods (system daemons, other users) is not yours.")

    def kwh(title: str, since: str, time_from: str) -> dict:
        return panel(title, "stat", "kwatth", f"Energy of your servers since {since}, CPU and GPU apart." + active,
                     [target(cpu_kwh, "CPU", "A", instant=True), target(gpu_kwh, "GPU", "B", instant=True)],
                     w=6, h=5, time_from=time_from, decimals=3)

    panels = [
        panel("My power now", "stat", "watt",
              "Power of all your running servers now, CPU (package + dram) and GPU apart." + active,
              [target(f"sum(kepler_pod_cpu_watts{{{CPU_ZONES}, {me}}})", "CPU", "A", instant=True),
               target(f"sum(rate({gpu_j}[$__rate_interval]))", "GPU", "B", instant=True)], w=6, h=5),
        kwh("My energy today", "midnight", "now/d"),
        kwh("My energy this week", "the start of the week", "now/w"),
        kwh("My energy this month", "the start of the month", "now/M"),
        panel("My CO2 this month", "stat", "massg",
              "Emissions of your servers' energy since the start of the month: (CPU + GPU) kWh × the carbon-intensity "
              "variable (g CO2 per kWh of your grid; set it at the top)." + active,
              [target(f"({cpu_kwh}) * $carbon_intensity", "CPU", "A", instant=True),
               target(f"({gpu_kwh}) * $carbon_intensity", "GPU", "B", instant=True)], w=6, h=5, time_from="now/M", decimals=1),
        panel("My servers now", "stat", "short",
              "Your running servers (the default one is named \"\"), from kepler_pod_info.",
              [target(f"count by (hub_server) (kepler_pod_info{{{me}}})", "{{hub_server}}", instant=True)], w=6, h=5),
        panel("Power per server", "timeseries", "watt",
              "CPU (package + dram) and GPU power of each of your servers (hub_server; the default server's name is empty)." + active,
              [target(f"sum by (hub_server) (kepler_pod_cpu_watts{{{CPU_ZONES}, {me}}})", "{{hub_server}} CPU", "A"),
               target(f"sum by (hub_server) (rate({gpu_j}[$__rate_interval]))", "{{hub_server}} GPU", "B")], stack=True),
        panel("Energy per server in range", "bargauge", "kwatth",
              "CPU and GPU energy of each of your servers over the dashboard's time range." + active,
              [target(f"sum by (hub_server) (increase({cpu_j}[$__range])) / 3.6e6", "{{hub_server}} CPU", "A", instant=True),
               target(f"sum by (hub_server) (increase({gpu_j}[$__range])) / 3.6e6", "{{hub_server}} GPU", "B", instant=True)],
              decimals=4),
    ]
    user = var_query("hub_user", "Hub user", f'label_values(kepler_pod_cpu_joules_total{{hub_user=~"{MY_LOGIN_MATCH}"}}, hub_user)',
                     include_all=False, multi=False)
    # Hidden, and no value but the one the login matches.
    user["hide"] = 2
    user["allowCustomValue"] = False
    return dashboard("kepler-rs-my-energy", "kepler-rs / My energy",
                     "Your own JupyterHub servers: power now, energy today, this week and this month, CPU and GPU apart, "
                     "per server, and CO2. Shows the hub user your Grafana login matches.",
                     panels, [user, var_textbox("carbon_intensity", "Carbon intensity (gCO2/kWh)", "400",
                                                "Grams of CO2 per kWh of the electricity used; 400 is a rough world average.")],
                     time_from="now/M")


def gpu() -> dict:
    g = f'{NODE}, gpu_uuid=~"$gpu"'
    needs = " Needs the GPU source (--gpu auto|nvml)."
    panels = [
        panel("Power per GPU", "timeseries", "watt",
              "Power of each GPU, from its energy counter." + needs,
              [target(f"sum by (node_name, gpu, gpu_name) (rate(kepler_node_gpu_joules_total{{{g}}}[$__rate_interval]))",
                      "{{node_name}} GPU {{gpu}} {{gpu_name}}")], stack=True),
        panel("GPU power per pod", "timeseries", "watt",
              "GPU power attributed to pods through the kubelet PodResources API." + needs,
              [target(f"sum by (pod_namespace, pod_name, pod_id) (rate(kepler_pod_gpu_joules_total{{{NODE}}}[$__rate_interval]))",
                      "{{pod_namespace}}/{{pod_name}}")], stack=True),
        panel("GPU energy in range", "bargauge", "kwatth",
              "Energy of each GPU over the dashboard's time range." + needs,
              [target(f"sum by (node_name, gpu, gpu_name) (increase(kepler_node_gpu_joules_total{{{g}}}[$__range])) / 3.6e6",
                      "{{node_name}} GPU {{gpu}}", instant=True)], w=12, decimals=3),
        panel("GPU vs CPU per node", "timeseries", "watt",
              "CPU power (package + dram) and GPU power of each node." + needs,
              [target(node_watts(NODE), "{{node_name}} CPU", "A"),
               target(f"sum by (node_name) (rate(kepler_node_gpu_joules_total{{{NODE}}}[$__rate_interval]))", "{{node_name}} GPU", "B")],
              w=12),
    ]
    return dashboard("kepler-rs-gpu", "kepler-rs / GPUs", "Power and energy per GPU and per pod using GPUs.",
                     panels, [NODE_VAR, var_query("gpu", "GPU (uuid)", 'label_values(kepler_node_gpu_joules_total{node_name=~"$node"}, gpu_uuid)')])


DASHBOARDS = {"cluster-overview": cluster, "node-detail": node, "namespaces-pods": pods,
              "jupyterhub-users": jupyterhub, "gpu": gpu, "my-energy": my_energy}


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(make(), indent=2, ensure_ascii=False) + "\n" for name, make in DASHBOARDS.items()}


def main() -> int:
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
