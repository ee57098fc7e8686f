"""The container image: its Rust base and the workspace's rust-version keep up with the lockfile, and
(where podman runs) the exporter starts in an image built like deploy/Containerfile's final stage,
under the chart's security context, and answers /metrics from inside its network namespace."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, render_chart, skip_or_fail

CONTAINERFILE = REPO / "deploy" / "Containerfile"


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def lockfile_rust_version() -> tuple[tuple[int, ...], str]:
    """The largest rust_version (MSRV) of any package in Cargo.lock's dependency graph."""
    cargo = shutil.which("cargo")
    if cargo is None:
        skip_or_fail("cargo not installed")
    run = subprocess.run([cargo, "metadata", "--format-version", "1", "--locked"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    metadata = json.loads(run.stdout)
    in_graph = {node["id"] for node in metadata["resolve"]["nodes"]}
    versions = [(version_tuple(p["rust_version"]), f"{p['name']} {p['version']}")
                for p in metadata["packages"] if p["id"] in in_graph and p.get("rust_version")]
    assert len(versions) > 20, "cargo metadata lists too few packages with a rust_version"
    return max(versions)


def test_rust_image_and_rust_version_are_at_least_the_lockfiles_minimum():
    needed, package = lockfile_rust_version()
    workspace = re.search(r'^rust-version\s*=\s*"([\d.]+)"', (REPO / "Cargo.toml").read_text(), re.M)
    assert workspace, "Cargo.toml: [workspace.package] rust-version"
    declared = version_tuple(workspace.group(1))
    assert declared >= needed[:len(declared)], f"rust-version {workspace.group(1)} < {needed} needed by {package}"
    builder = re.search(r"^FROM\s+\S*/rust:([\d.]+)-\S+ AS build$", CONTAINERFILE.read_text(), re.M)
    assert builder, "deploy/Containerfile: the build stage's Rust image"
    image = version_tuple(builder.group(1))
    assert image >= needed[:len(image)], f"Containerfile's rust:{builder.group(1)} < {needed} needed by {package}"
    assert image >= declared, "the image must build what rust-version promises"


def test_containerfile_is_multistage_non_root_and_locked():
    text = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) == 2 and "distroless/cc-debian12" in stages[1]
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert "ENTRYPOINT" in text and "--locked" in text


def test_build_stage_copies_every_directory_the_workspace_builds_from():
    """Members, the path dependencies of the exporter, and the patched crates of [patch.crates-io]
    (third_party/aya): a directory left out of the build stage breaks the image build, which no
    offline test runs."""
    cargo_toml = (REPO / "Cargo.toml").read_text()
    members = re.search(r"^members\s*=\s*\[([^\]]*)\]", cargo_toml, re.M)
    assert members, "Cargo.toml: [workspace] members"
    paths = re.findall(r'"([^"]+)"', members.group(1))
    paths += re.findall(r'path\s*=\s*"([^"]+)"', cargo_toml)
    exporter_toml = (REPO / "exporter" / "Cargo.toml").read_text()
    paths += [str(Path("exporter", p)) for p in re.findall(r'path\s*=\s*"([^"]+)"', exporter_toml)]
    needed = {Path(os.path.normpath(p)).parts[0] for p in paths}
    assert {"exporter", "benches", "ebpf", "third_party"} <= needed, needed
    copied = set(re.findall(r"^COPY\s+(?!--from)(\S+)\s", CONTAINERFILE.read_text(), re.M))
    assert needed <= copied, f"deploy/Containerfile does not COPY {sorted(needed - copied)}"


def test_dockerignore_keeps_build_output_out_of_the_context():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target/" in ignored and "**/target/" in ignored  # ebpf/program/target alone is hundreds of MB


# --- the image runs, where a container engine runs (deploy/README.md, "Image") ------------------

def podman(*args: str, timeout: int = 120, check: bool = True) -> subprocess.CompletedProcess:
    # runc, not crun: crun refuses the hybrid cgroup v1/v2 layout of the CI VMs. Rootful storage.
    run = subprocess.run(["podman", "--runtime", shutil.which("runc") or "runc", *args],
                         capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, f"podman {' '.join(args)}: {run.stderr}"
    return run


def shared_libraries(binary: Path) -> list[Path]:
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"(/\S+\.so[.\d]*)", ldd)
    assert libs, ldd
    return [Path(p) for p in dict.fromkeys(libs)]


def final_stage(containerfile: Path) -> list[str]:
    """The runtime instructions of the last stage (USER, EXPOSE, ENTRYPOINT, CMD)."""
    last = containerfile.read_text().split("\nFROM ")[-1]
    return [ln for ln in last.splitlines() if re.match(r"(USER|EXPOSE|ENTRYPOINT|CMD|HEALTHCHECK)\b", ln)]


@pytest.fixture(scope="module")
def standin_image(tmp_path_factory):
    """deploy/Containerfile's final stage on an offline stand-in for distroless/cc-debian12: the same
    Debian 12 glibc and libgcc (the host's, which is Debian 12), copied from the host at their paths."""
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("runc"):
        skip_or_fail("needs root, podman and runc (apt-get install podman runc)")
    binary = Path(os.environ.get("KEPLER_RS_BIN", REPO / "target" / "debug" / "kepler-rs"))
    if not binary.exists():
        skip_or_fail(f"{binary} not built (cargo build)")
    context = tmp_path_factory.mktemp("image")
    lines = ["FROM scratch"]
    for lib in shared_libraries(binary):
        real = lib.resolve()
        target = context / "root" / lib.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real, target)
    shutil.copy(binary, context / "kepler-rs")
    lines += ["COPY root/ /", "COPY kepler-rs /usr/local/bin/kepler-rs", *final_stage(CONTAINERFILE)]
    (context / "Containerfile").write_text("\n".join(lines) + "\n")
    tag = f"localhost/kepler-rs-test:{uuid.uuid4().hex[:12]}"
    podman("build", "--quiet", "-f", str(context / "Containerfile"), "-t", tag, str(context), timeout=300)
    yield tag
    podman("rmi", "-f", tag, check=False)


def chart_container(values: dict) -> dict:
    (ds,) = [o for o in render_chart(values) if o["kind"] == "DaemonSet"]
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return container


def test_image_runs_under_the_charts_security_context_and_answers_metrics(standin_image):
    values = {"exporter": {"cpuSource": "cgroup"}, "kubernetes": {"metadata": False}}
    container = chart_container(values)
    sc = container["securityContext"]
    assert sc["runAsUser"] == 0 and sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"]
    env = [f"--env={e['name']}={e['value']}" for e in container["env"] if "value" in e] + ["--env=NODE_NAME=ci"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    name = f"kepler-rs-test-{uuid.uuid4().hex[:8]}"
    podman("run", "--detach", "--name", name,
           # The chart's pod: hostPID, uid 0, every capability dropped, no privilege escalation,
           # read-only root filesystem, host /proc and /sys read-only. No network but loopback.
           "--pid=host", f"--user={sc['runAsUser']}:{sc['runAsGroup']}", "--cap-drop=ALL",
           "--security-opt=no-new-privileges", "--read-only", "--network=none",
           f"--volume=/proc:{mounts['proc']}:ro", f"--volume=/sys:{mounts['sys']}:ro",
           # The VM may not raise rlimits (no CAP_SYS_RESOURCE): stay below the current ones.
           "--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096",
           *env, standin_image, *container["args"])
    try:
        time.sleep(0.5)
        pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        if pid == "0":  # exited at start: say why
            logs = podman("logs", name, check=False)
            pytest.fail(f"the exporter exited at start with the chart's arguments {container['args']}:\n"
                        f"{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        status = Path(f"/proc/{pid}/status").read_text()
        assert re.search(r"^CapEff:\s*0+$", status, re.M), "the exporter holds a capability"
        assert re.search(r"^NoNewPrivs:\s*1$", status, re.M)
        port = int(container["ports"][0]["containerPort"])
        fetch = ("import urllib.request,sys;"
                 f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=3).read().decode())")
        deadline, body, last = time.monotonic() + 30, "", ""
        while time.monotonic() < deadline:
            # From inside the container's network namespace (it has no shell or curl of its own).
            run = subprocess.run(["nsenter", "-t", pid, "-n", "python3", "-c", fetch],
                                 capture_output=True, text=True, timeout=10)
            if run.returncode == 0:
                body = run.stdout
                break
            last = run.stderr.strip().splitlines()[-1:] if run.stderr else ""
            if podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
                break
            time.sleep(0.5)
        logs = podman("logs", name, check=False)
        assert body, f"/metrics did not answer: {last}\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}"
        assert "kepler_exporter_energy_source_info" in body, body[:2000]
    finally:
        podman("rm", "--force", "--time=2", name, check=False)


def test_every_flag_the_chart_passes_is_one_the_exporter_knows():
    """The chart is rendered with every value set; each --flag in its arguments must be in `run --help`."""
    from test_chart import EVERYTHING

    binary = Path(os.environ.get("KEPLER_RS_BIN", REPO / "target" / "debug" / "kepler-rs"))
    if not binary.exists():
        skip_or_fail(f"{binary} not built (cargo build)")
    known = set(re.findall(r"(--[a-z][a-z0-9.-]*)", subprocess.run([str(binary), "run", "--help"], capture_output=True,
                                                                     text=True, timeout=30, check=True).stdout))
    passed = set()
    for values in (EVERYTHING, {"exporter": {"cpuSource": "cgroup"}, "kubernetes": {"metadata": False}}):
        for o in render_chart(values):
            if o["kind"] == "DaemonSet":
                for arg in o["spec"]["template"]["spec"]["containers"][0]["args"][1:]:
                    passed.add(arg.split("=", 1)[0])
    assert passed - known == set(), f"flags the exporter does not know: {passed - known}"
    assert len(passed) >= 15
