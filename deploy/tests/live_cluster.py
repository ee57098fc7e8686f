"""A real kepler-rs and a real Prometheus on this machine, for the dashboard and rule tests.

As root: kubelet-like cgroups (cgroup v1 cpu + cpuacct, cgroupfs layout) with two fake pods whose
busy loops are held at known duty cycles by CFS quotas, a simulated powercap tree (package 50 W,
dram 5 W), the kepler-rs binary built by cargo, and Debian's prometheus scraping it every second
with deploy/alerts/kepler-rs.rules.yaml loaded. Everything is removed on exit.
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
from pathlib import Path

from conftest import ALERTS, REPO, skip_or_fail

PKG_WATTS, DRAM_WATTS = 50.0, 5.0
NODE_NAME = "dashboards-node"


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
        tag = os.getpid()
        # Unique per run, distinct from the Rust end-to-end test's aaaaaaaa/bbbbbbbb pods.
        self.pod_uids = [f"dddddddd-0000-4000-8000-{tag:012x}", f"eeeeeeee-0000-4000-8000-{tag:012x}"]

    # -- cgroups ---------------------------------------------------------------------------------
    def mkdir(self, rel: str):
        for root in self.roots:
            (root / rel).mkdir(exist_ok=True)
        self.dirs.append(rel)

    def busy(self, rel: str, duty: float):
        (self.cpu / rel / "cpu.cfs_period_us").write_text("100000")
        (self.cpu / rel / "cpu.cfs_quota_us").write_text(str(int(duty * 100_000)))
        script = " && ".join(f"echo $$ > {root / rel / 'cgroup.procs'}" for root in self.roots)
        p = subprocess.Popen(["sh", "-c", f"{script} && exec sh -c 'while :; do :; done'"])
        self.procs.append(p)

    def make_pods(self):
        uid_a, uid_b = self.pod_uids
        tag = os.getpid()
        cid = lambda n: f"{n:08x}{tag:056x}"
        pod_a, pod_b = f"kubepods/burstable/pod{uid_a}", f"kubepods/besteffort/pod{uid_b}"
        for d in ["kubepods", "kubepods/burstable", "kubepods/besteffort", pod_a, pod_b,
                  f"{pod_a}/{cid(0xd1)}", f"{pod_b}/{cid(0xe1)}", f"{pod_b}/{cid(0xe2)}"]:
            self.mkdir(d)
        self.busy(f"{pod_a}/{cid(0xd1)}", 0.40)
        self.busy(f"{pod_b}/{cid(0xe1)}", 0.10)
        self.busy(f"{pod_b}/{cid(0xe2)}", 0.10)

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
        self.make_pods()
        sysfs = self.tmp / "sys"
        sysfs.mkdir()
        # mountinfo lists the cgroup mounts under /sys/fs: the exporter rebases them onto --sysfs.
        os.symlink("/sys/fs", sysfs / "fs")
        self.powercap = Powercap(sysfs)
        self.powercap.start()
        self.exporter_port = free_port()
        self.procs.append(subprocess.Popen(
            [str(binary), "run", "--listen", f"127.0.0.1:{self.exporter_port}", "--sysfs", str(sysfs),
             "--interval", "1s", "--node-name", NODE_NAME, "--grace-period", "60s", "--process-metrics",
             "--idle-watts", "package=20,dram=2"],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "exporter.log", "w")))
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

    def wait_for_data(self, seconds: float = 20, timeout: float = 120):
        """Until both fake pods have been scraped for `seconds`."""
        deadline = time.monotonic() + timeout
        first = None
        while time.monotonic() < deadline:
            for p in self.procs[-2:]:
                if p.poll() is not None:
                    logs = "".join(f.read_text()[-2000:] for f in self.tmp.glob("*.log"))
                    raise AssertionError(f"{p.args[0]} exited with {p.returncode}:\n{logs}")
            try:
                r = self.query('count(kepler_pod_cpu_watts{zone="package", pod_id=~"' + "|".join(self.pod_uids) + '"})')
                seen = r["status"] == "success" and r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 2
            except OSError:
                seen = False
            if seen and first is None:
                first = time.monotonic()
            if first is not None and time.monotonic() - first >= seconds:
                return
            time.sleep(0.5)
        raise AssertionError("Prometheus never saw both fake pods")

    def query(self, expr: str) -> dict:
        return get(self.prom_port, "/api/v1/query", {"query": expr})

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
