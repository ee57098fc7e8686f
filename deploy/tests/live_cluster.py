"""A real kepler-rs and a real Prometheus on this machine, for the dashboard and rule tests.

As root: kubelet-like cgroups (cgroup v1 cpu + cpuacct, cgroupfs layout) with four fake pods whose
busy loops are held at known duty cycles by CFS quotas, a fake Kubernetes API server
(fake_kube_api.py, HTTPS with a CA made at test time) that lists those pods with their names,
JupyterHub labels and container IDs, a simulated powercap tree (package 50 W, dram 5 W), a fake
libnvidia-ml.so.1 (scripts/fake-nvml.sh, exporter/tests/fake_nvml/fake_nvml.c) scripted with two GPUs
whose processes are the fake pods' busy loops (FAKE_GPUS), the kepler-rs binary built by cargo (run
with --kubeconfig, --gpu nvml and --metrics-compat kepler-0.7), and Debian's prometheus scraping it every second with
deploy/alerts/kepler-rs.rules.yaml loaded. Everything is removed on exit.

The pods (FAKE_PODS): three JupyterHub user servers, for two users (alice with her default server and
a named server "analysis", bob with his default server), and one ordinary pod with two containers.
The GPUs (FAKE_GPUS): GPU 0 shared by alice's default server (75 % SM) and bob's (25 %), GPU 1 used by
the ordinary pod's app container alone.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import ALERTS, REPO, skip_or_fail
from fake_kube_api import FakeKubeApi

PKG_WATTS, DRAM_WATTS = 50.0, 5.0
NODE_NAME = "dashboards-node"
HUB_NAMESPACE = "jhub"
GPU_IDLE_WATTS = 40.0  # --gpu-idle-watts: each GPU's active power is its scripted watts minus this


@dataclass(frozen=True)
class FakePod:
    """A pod as the kubelet (cgroups) and the API server (a Pod object) both show it."""
    key: str  # the test's name for it; also the first 8 hex digits of its UID
    name: str
    namespace: str
    qos: str  # burstable | besteffort: its cgroup's parent
    containers: tuple[tuple[str, int, float], ...]  # (name, container-ID tag, CFS duty cycle)
    hub_user: str | None = None  # raw JupyterHub username (the annotation); None: not a user server
    hub_user_label: str = ""  # the escaped label kubespawner sets beside it
    hub_server: str = ""  # named server; "" for the default server
    labels: dict = field(default_factory=dict)


# Keys are hex so that they can start the pod UIDs; duty cycles add up to 0.6 of one CPU.
FAKE_PODS = (
    FakePod("a11ce000", "jupyter-alice-smith-uni-edu---6c5a1f3e", HUB_NAMESPACE, "burstable",
            (("notebook", 0xa1, 0.30),), hub_user="alice.smith@uni.edu", hub_user_label="alice-smith-uni-edu---6c5a1f3e"),
    FakePod("a11ce5e1", "jupyter-alice-smith-uni-edu---6c5a1f3e--analysis", HUB_NAMESPACE, "burstable",
            (("notebook", 0xa2, 0.05),), hub_user="alice.smith@uni.edu", hub_user_label="alice-smith-uni-edu---6c5a1f3e",
            hub_server="analysis"),
    FakePod("b0b00000", "jupyter-bob", HUB_NAMESPACE, "burstable", (("notebook", 0xb1, 0.10),),
            hub_user="bob", hub_user_label="bob"),
    # Not a user server: its series must carry pod_name but no hub_user/hub_server.
    FakePod("eeeeeeee", "web-5d8f7c9b4-x2x7k", "web", "besteffort",
            (("app", 0xe1, 0.10), ("log-shipper", 0xe2, 0.05)), labels={"app": "web", "pod-template-hash": "5d8f7c9b4"}),
)


@dataclass(frozen=True)
class FakeGpu:
    """A device of the fake NVML; its NVML index is its position in FAKE_GPUS."""
    uuid: str
    name: str
    watts: float  # the energy counter's constant power
    processes: tuple[tuple[str, str, int], ...]  # (pod key, container name, SM %): that container's busy loop


FAKE_GPUS = (
    FakeGpu("GPU-0a11ce0b-0b00-4000-8000-000000000000", "NVIDIA Fake A100-SXM4-80GB", 300.0,
            (("a11ce000", "notebook", 75), ("b0b00000", "notebook", 25))),
    FakeGpu("GPU-eeeeeeee-0001-4000-8000-000000000001", "NVIDIA Fake T4", 70.0, (("eeeeeeee", "app", 40),)),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def v1_mounts() -> tuple[Path, Path] | None:
    cpu = cpuacct = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields = post.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        opts = fields[2].split(",")
        mount = Path(pre.split()[4])
        if "cpuacct" in opts:
            cpuacct = mount
        if "cpu" in opts:
            cpu = mount
    return (cpu, cpuacct) if cpu and cpuacct else None


def exporter_binary() -> Path:
    explicit = os.environ.get("KEPLER_RS_BIN")
    if explicit:
        return Path(explicit)
    subprocess.run(["cargo", "build", "-q", "-p", "kepler-rs", "--bin", "kepler-rs"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "kepler-rs"


def get(port: int, path: str, params: dict | list | None = None, timeout: float = 10) -> dict:
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # Prometheus answers 400/422 with a JSON error body
        return json.loads(e.read())


class Powercap(threading.Thread):
    """Advances energy_uj of a simulated package and dram zone at constant power, wrapping."""

    def __init__(self, sysfs: Path):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        base = sysfs / "class" / "powercap"
        pkg = base / "intel-rapl:0"
        dram = pkg / "intel-rapl:0:0"
        self.zones = []
        for d, name, watts, rng in ((pkg, "package-0", PKG_WATTS, 150_000_000), (dram, "dram", DRAM_WATTS, 10_000_000)):
            d.mkdir(parents=True)
            (d / "name").write_text(name + "\n")
            (d / "max_energy_range_uj").write_text(f"{rng}\n")
            (d / "energy_uj").write_text(f"{0:020}\n")
            self.zones.append((os.open(d / "energy_uj", os.O_WRONLY), watts, rng))
        os.symlink(dram, base / "intel-rapl:0:0")

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            t = time.monotonic() - t0
            for fd, watts, rng in self.zones:
                os.pwrite(fd, f"{int(watts * t * 1e6) % rng:020}\n".encode(), 0)
            time.sleep(0.005)


class LiveCluster:
    """Context manager: fake pods in real cgroups, kepler-rs, Prometheus."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="kepler-rs-dashboards-"))
        self.powercap: Powercap | None = None
        self.api: FakeKubeApi | None = None
        self.tag = os.getpid()
        self.pods = FAKE_PODS
        # Unique per run, distinct from the Rust end-to-end test's aaaaaaaa/bbbbbbbb pods.
        self.pod_uids = [self.uid(p) for p in self.pods]
        self.gpus = FAKE_GPUS
        self.pids: dict[tuple[str, str], int] = {}  # (pod key, container name) -> its busy loop's pid

    def uid(self, pod: FakePod) -> str:
        return f"{pod.key}-0000-4000-8000-{self.tag:012x}"

    def container_id(self, tag: int) -> str:
        return f"{tag:08x}{self.tag:056x}"

    def uids_of_user(self, hub_user: str) -> list[str]:
        return [self.uid(p) for p in self.pods if p.hub_user == hub_user]

    def hub_users(self) -> set[str]:
        return {p.hub_user for p in self.pods if p.hub_user}

    def pod(self, key: str) -> FakePod:
        (pod,) = [p for p in self.pods if p.key == key]
        return pod

    def gpu_pod_uids(self) -> set[str]:
        """The pods with a process on some fake GPU."""
        return {self.uid(self.pod(key)) for gpu in self.gpus for key, _, _ in gpu.processes}

    def gpu_script(self) -> str:
        """The fake NVML's script (format: the comment at the top of fake_nvml.c)."""
        lines = []
        for gpu in self.gpus:
            lines += [f"device {gpu.uuid}", f"name {gpu.name}", f"watts {gpu.watts:g}"]
            lines += [f"process {self.pids[key, container]} {sm}" for key, container, sm in gpu.processes]
        return "\n".join(lines) + "\n"

    def pod_object(self, pod: FakePod) -> dict:
        """The Pod as the API server returns it (what kubespawner and the kubelet would have set)."""
        labels = dict(pod.labels)
        annotations = {}
        if pod.hub_user is not None:
            labels.update({"app": "jupyterhub", "component": "singleuser-server", "release": "jupyterhub",
                           "heritage": "jupyterhub", "hub.jupyter.org/username": pod.hub_user_label,
                           "hub.jupyter.org/servername": pod.hub_server})
            annotations = {"hub.jupyter.org/username": pod.hub_user, "hub.jupyter.org/servername": pod.hub_server}
        started = "2025-03-10T09:14:20Z"
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": self.uid(pod),
                         "resourceVersion": "4000", "creationTimestamp": "2025-03-10T09:14:02Z",
                         "labels": labels, "annotations": annotations},
            "spec": {"nodeName": NODE_NAME,
                     "containers": [{"name": n, "image": "registry.example/fake:1"} for n, _, _ in pod.containers]},
            "status": {
                "phase": "Running", "qosClass": pod.qos.capitalize(), "startTime": started,
                "containerStatuses": [
                    {"name": n, "ready": True, "restartCount": 0, "started": True,
                     "image": "registry.example/fake:1", "imageID": "registry.example/fake@sha256:" + "0" * 64,
                     "containerID": f"containerd://{self.container_id(tag)}",
                     "state": {"running": {"startedAt": started}}}
                    for n, tag, _ in pod.containers],
            },
        }

    # -- cgroups ---------------------------------------------------------------------------------
    def mkdir(self, rel: str):
        for root in self.roots:
            (root / rel).mkdir(exist_ok=True)
        self.dirs.append(rel)

    def busy(self, rel: str, duty: float) -> int:
        """Start a busy loop in cgroup `rel` held at `duty` of one CPU; returns its pid (the same pid
        before and after the exec, so it is the pid in the cgroup)."""
        (self.cpu / rel / "cpu.cfs_period_us").write_text("100000")
        (self.cpu / rel / "cpu.cfs_quota_us").write_text(str(int(duty * 100_000)))
        script = " && ".join(f"echo $$ > {root / rel / 'cgroup.procs'}" for root in self.roots)
        p = subprocess.Popen(["sh", "-c", f"{script} && exec sh -c 'while :; do :; done'"])
        self.procs.append(p)
        return p.pid

    def make_pods(self):
        for d in ["kubepods", "kubepods/burstable", "kubepods/besteffort"]:
            self.mkdir(d)
        for pod in self.pods:
            pod_dir = f"kubepods/{pod.qos}/pod{self.uid(pod)}"
            self.mkdir(pod_dir)
            for name, tag, duty in pod.containers:
                self.mkdir(f"{pod_dir}/{self.container_id(tag)}")
                self.pids[pod.key, name] = self.busy(f"{pod_dir}/{self.container_id(tag)}", duty)
        # The GPU maps a process to its pod through /proc/<pid>/cgroup: wait until every loop is in.
        deadline = time.monotonic() + 10
        for (key, name), pid in self.pids.items():
            tag = next(t for n, t, _ in self.pod(key).containers if n == name)
            while self.container_id(tag) not in Path(f"/proc/{pid}/cgroup").read_text():
                if time.monotonic() > deadline:
                    raise AssertionError(f"pid {pid} never joined its cgroup")
                time.sleep(0.05)

    def build_fake_nvml(self) -> str:
        """scripts/fake-nvml.sh: the directory holding the fake libnvidia-ml.so.1."""
        if shutil.which(os.environ.get("CC", "gcc")) is None:
            skip_or_fail("no C compiler (gcc) to build the fake libnvidia-ml.so.1")
        out = subprocess.run([str(REPO / "scripts" / "fake-nvml.sh"), str(self.tmp / "nvml")],
                             capture_output=True, text=True)
        assert out.returncode == 0, f"scripts/fake-nvml.sh failed:\n{out.stderr}"
        lib = out.stdout.strip()
        assert (Path(lib) / "libnvidia-ml.so.1").exists(), lib
        return lib

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "LiveCluster":
        if os.geteuid() != 0:
            skip_or_fail("needs root (creates cgroups and moves processes into them)")
        mounts = v1_mounts()
        if mounts is None:
            skip_or_fail("needs cgroup v1 cpu and cpuacct hierarchies (hybrid host)")
        for tool in ("prometheus", "cargo"):
            if shutil.which(tool) is None:
                skip_or_fail(f"{tool} not installed")
        self.cpu, self.cpuacct = mounts
        self.roots = [self.cpu, self.cpuacct] if self.cpu != self.cpuacct else [self.cpu]
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self):
        binary = exporter_binary()
        nvml_dir = self.build_fake_nvml()
        self.make_pods()
        gpu_script = self.tmp / "fake-nvml-script.txt"
        gpu_script.write_text(self.gpu_script())
        env = dict(os.environ, FAKE_NVML_SCRIPT=str(gpu_script),
                   LD_LIBRARY_PATH=":".join(filter(None, [nvml_dir, os.environ.get("LD_LIBRARY_PATH")])))
        sysfs = self.tmp / "sys"
        sysfs.mkdir()
        # mountinfo lists the cgroup mounts under /sys/fs: the exporter rebases them onto --sysfs.
        os.symlink("/sys/fs", sysfs / "fs")
        self.powercap = Powercap(sysfs)
        self.powercap.start()
        self.api = FakeKubeApi(self.tmp / "kube", NODE_NAME, [self.pod_object(p) for p in self.pods])
        self.exporter_port = free_port()
        self.exporter_env = env
        self.exporter_command = lambda port, compat: [
            str(binary), "run", "--listen", f"127.0.0.1:{port}", "--sysfs", str(sysfs),
            "--interval", "1s", "--node-name", NODE_NAME, "--grace-period", "60s", "--process-metrics",
            "--idle-watts", "package=20,dram=2", "--kubeconfig", str(self.api.kubeconfig), "--jupyterhub-namespace", HUB_NAMESPACE,
            # GPUs from the fake NVML; no kubelet, so processes are placed by their cgroups alone.
            "--gpu", "nvml", "--gpu-idle-watts", f"{GPU_IDLE_WATTS:g}",
            "--pod-resources-socket", str(self.tmp / "no-kubelet" / "kubelet.sock"),
            # Kepler 0.7's families too, for its dashboard (test_dashboards_live.py).
        ] + (["--metrics-compat", "kepler-0.7"] if compat else [])
        self.procs.append(subprocess.Popen(
            self.exporter_command(self.exporter_port, True),
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "exporter.log", "w"), env=env))
        # Prometheus starts once the exporter serves every pod with its names, so that no pod series
        # without pod_name/hub_user is ever stored (the per-user sums are compared with per-pod sums).
        self.wait_for_pod_names()
        self.prom_port = free_port()
        config = self.tmp / "prometheus.yml"
        shutil.copy(ALERTS / "kepler-rs.rules.yaml", self.tmp / "kepler-rs.rules.yaml")
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files: [kepler-rs.rules.yaml]\n"
            "scrape_configs:\n  - job_name: kepler-rs\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.exporter_port}']\n")
        self.procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={self.tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "prometheus.log", "w")))

    def exporter_metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.exporter_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def plain_exposition(self, timeout: float = 60) -> str:
        """/metrics of a second kepler-rs over the same node, pods and GPUs without --metrics-compat
        (not scraped), once it serves every fake pod's energy."""
        port = free_port()
        exporter = subprocess.Popen(self.exporter_command(port, False), stdout=subprocess.DEVNULL,
                                    stderr=open(self.tmp / "plain-exporter.log", "w"), env=self.exporter_env)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                        text = r.read().decode()
                    if all(f'pod_id="{uid}"' in text for uid in self.pod_uids) and "kepler_node_gpu_joules_total{" in text:
                        return text
                except OSError:
                    pass
                time.sleep(0.3)
            raise AssertionError("the exporter without --metrics-compat never served every pod:\n"
                                 + (self.tmp / "plain-exporter.log").read_text()[-3000:])
        finally:
            exporter.kill()
            exporter.wait()

    def wait_for_query(self, expr: str, timeout: float):
        """Until the instant query `expr` returns data (a subquery with a 1m step needs samples at two
        minute boundaries, up to about 2 minutes after Prometheus started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.query(expr)
            if r.get("status") == "success" and r["data"]["result"]:
                return
            time.sleep(2)
        raise AssertionError(f"no data for {expr} after {timeout} s")

    def wait_for_pod_names(self, timeout: float = 60):
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            exporter = self.procs[-1]
            if exporter.poll() is not None:
                raise AssertionError(f"kepler-rs exited with {exporter.returncode}:\n"
                                     + (self.tmp / "exporter.log").read_text()[-3000:])
            try:
                text = self.exporter_metrics()
            except OSError:
                text = ""
            info = [line for line in text.splitlines() if line.startswith("kepler_pod_info{")]
            if all(any(f'pod_id="{uid}"' in line and 'pod_name="' in line for line in info) for uid in self.pod_uids):
                return
            time.sleep(0.2)
        raise AssertionError("kepler-rs never named the fake pods (kepler_pod_info); fake API requests: "
                             f"{self.api.seen() if self.api else None}\n"
                             + (self.tmp / "exporter.log").read_text()[-3000:] + "\n"
                             + "\n".join(l for l in text.splitlines() if "pod_metadata" in l))

    def wait_for_data(self, seconds: float = 20, timeout: float = 120):
        """Until every fake pod, and every fake pod with a GPU process on each of its GPUs, has been
        scraped for `seconds`."""
        deadline = time.monotonic() + timeout
        first = None
        while time.monotonic() < deadline:
            for p in self.procs[-2:]:
                if p.poll() is not None:
                    logs = "".join(f.read_text()[-2000:] for f in self.tmp.glob("*.log"))
                    raise AssertionError(f"{p.args[0]} exited with {p.returncode}:\n{logs}")
            try:
                r = self.query('count(kepler_pod_cpu_watts{zone="package", pod_id=~"' + "|".join(self.pod_uids) + '"})')
                seen = r["status"] == "success" and r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= len(self.pod_uids)
                g = self.query('count(kepler_pod_gpu_joules_total{pod_id=~"' + "|".join(self.gpu_pod_uids()) + '"})')
                want = sum(len(gpu.processes) for gpu in self.gpus)
                seen = seen and g["status"] == "success" and g["data"]["result"] and float(g["data"]["result"][0]["value"][1]) >= want
            except OSError:
                seen = False
            if seen and first is None:
                first = time.monotonic()
            if first is not None and time.monotonic() - first >= seconds:
                return
            time.sleep(0.5)
        raise AssertionError("Prometheus never saw every fake pod (and its GPU series)")

    def query(self, expr: str, at: float | None = None) -> dict:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return get(self.prom_port, "/api/v1/query", params)

    def query_range(self, expr: str, seconds: int = 20, step: str = "2s") -> dict:
        now = time.time()
        return get(self.prom_port, "/api/v1/query_range",
                   {"query": expr, "start": f"{now - seconds:.3f}", "end": f"{now:.3f}", "step": step})

    def label_values(self, label: str, selector: str) -> list[str]:
        r = get(self.prom_port, f"/api/v1/label/{label}/values", [("match[]", selector)])
        assert r["status"] == "success", r
        return [v for v in r["data"] if v]

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            p.kill()
            p.wait()
        self.procs.clear()
        if self.api:
            self.api.stop()
            self.api = None
        if self.powercap:
            self.powercap.stop.set()
            self.powercap.join()
        for rel in reversed(self.dirs):
            for root in self.roots:
                try:
                    (root / rel).rmdir()
                except OSError:
                    pass  # shared parents (kubepods) may hold another test's pods
        shutil.rmtree(self.tmp, ignore_errors=True)
