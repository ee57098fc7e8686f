#!/usr/bin/env bash
# GPU check on a machine with an NVIDIA GPU and driver (nvidia-smi and libnvidia-ml.so.1 present).
#
#   scripts/gpu-check.sh [path/to/kepler-rs]
#
# Builds kepler-rs (release) unless a binary is given, runs it with --gpu nvml, runs a GPU load for
# LOAD_SECONDS (a PyTorch matmul loop where python3 has torch, otherwise gpu-burn if installed), and
# checks that:
#   1. the device's joules rise at a rate within TOLERANCE of nvidia-smi's power.draw averaged over
#      the same window (both sampled every second);
#   2. the per-device identity total = idle + active holds and active = Σ pods + unattributed +
#      terminated_pods (within 1e-6 relative);
#   3. the load's PID received most (> MIN_SHARE) of the device's active energy over the window.
#      Run as root, the script starts the load inside a kubelet-shaped cgroup (a fake pod, POD_ID set
#      for you) so the PID -> cgroup -> pod mapping is exercised exactly as on a node; on a Kubernetes
#      node you can instead run the load in a real pod and pass its UID as POD_ID. Without root and
#      without POD_ID the load is a host process: the script then checks that NVML sees its PID and
#      that its energy lands in unattributed (not lost).
# Prints every measured number and a PASS/FAIL line per check; exit 0 only if all pass.
# Needs: bash, awk, nvidia-smi, curl (or python3); cargo to build. Root only for the fake-pod cgroup.
# FAKE_POD=0 runs the load as a host process even as root (checks the unattributed path).
# KEEP_DIR=dir copies the exporter log, the load log, nvidia-smi samples and the last scrape there.
set -euo pipefail

LOAD_SECONDS=${LOAD_SECONDS:-30}
TOLERANCE=${TOLERANCE:-0.10}      # |exporter W - nvidia-smi W| / nvidia-smi W
MIN_SHARE=${MIN_SHARE:-0.80}      # share of active energy the load must get (POD_ID mode)
GPU_INDEX=${GPU_INDEX:-0}
PORT=${PORT:-28299}
INTERVAL=${INTERVAL:-1s}
POD_ID=${POD_ID:-}

cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found: not an NVIDIA machine"; exit 2; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${fake_cg:-}" ]; then rmdir "$fake_cg" "$(dirname "$fake_cg")" 2>/dev/null || true; fi
  if [ -n "${KEEP_DIR:-}" ]; then mkdir -p "$KEEP_DIR" && cp "$work"/* "$KEEP_DIR"/ 2>/dev/null || true; fi
  echo "logs kept in $work${KEEP_DIR:+ and $KEEP_DIR}"
}
trap cleanup EXIT

say() { printf '%s\n' "gpu-check: $*"; }
fail=0
check() { # name, condition (0/1), detail
  if [ "$2" = 1 ]; then say "PASS $1: $3"; else say "FAIL $1: $3"; fail=1; fi
}

nvidia-smi --query-gpu=index,uuid,name,driver_version,power.draw,power.limit --format=csv,noheader | sed 's/^/gpu-check: device: /'

bin=${1:-}
if [ -z "$bin" ]; then
  say "building kepler-rs (release)"
  cargo build --release -p kepler-rs
  bin=target/release/kepler-rs
fi
"$bin" --version

uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$GPU_INDEX" | tr -d ' ')
fetch() { # GET a URL, body on stdout; curl where present, else python3
  if command -v curl >/dev/null; then curl -sf "$1"
  else python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null; fi
}
scrape() { fetch "http://127.0.0.1:$PORT/metrics"; }
# value of a series: metric name, then a label filter regex
value() { awk -v m="$1" -v f="$2" '$0 !~ /^#/ && index($0, m"{") == 1 && $0 ~ f { s += $NF } END { printf "%.6f\n", s+0 }'; }

# Outside Kubernetes (no in-cluster service, no KUBECONFIG) pods carry pod_id only: say so with --no-kube.
kube_args=${KUBE_ARGS-$([ -n "${KUBERNETES_SERVICE_HOST:-}${KUBECONFIG:-}" ] || echo --no-kube)}
# shellcheck disable=SC2086
"$bin" run --gpu nvml $kube_args --listen "127.0.0.1:$PORT" --interval "$INTERVAL" --log-level "info,kepler_rs::gpu=debug" \
  >"$work/exporter.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do
  fetch "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
fetch "http://127.0.0.1:$PORT/readyz" >/dev/null || { say "exporter not ready"; cat "$work/exporter.log"; exit 1; }
grep -i -E 'GPU found|NVML|gpu' "$work/exporter.log" | sed 's/^/gpu-check: log: /' || true

# As root outside Kubernetes, run the load inside a kubelet-shaped cgroup (a fake pod) so that the
# exporter maps its PID to a pod exactly as on a node; otherwise the load is a host process.
fake_cg=
if [ -z "$POD_ID" ] && [ "$(id -u)" = 0 ] && [ "${FAKE_POD:-1}" = 1 ]; then
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cg_root=/sys/fs/cgroup
  elif [ -d /sys/fs/cgroup/unified ]; then cg_root=/sys/fs/cgroup/unified
  else cg_root=/sys/fs/cgroup/cpuacct; fi
  POD_ID=6a1c0de0-0000-4000-8000-00000000c0de
  cid=$(printf 'c0de%.0s' $(seq 1 16))
  fake_cg="$cg_root/kubepods/burstable/pod$POD_ID/$cid"
  if mkdir -p "$fake_cg" 2>/dev/null && [ -e "$fake_cg/cgroup.procs" ]; then
    say "load runs in fake pod cgroup $fake_cg (pod_id $POD_ID)"
  else
    say "cannot create a cgroup under $cg_root (read-only or sandboxed cgroupfs): the load runs as a host process"
    fake_cg=; POD_ID=
  fi
fi
in_cgroup() { # run "$@" inside $fake_cg when set
  if [ -n "$fake_cg" ]; then echo "$BASHPID" >"$fake_cg/cgroup.procs"; fi
  exec "$@"
}

# The load.
load_pid=
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  cat >"$work/load.py" <<PY
import time, torch
d = torch.device("cuda:$GPU_INDEX")
a = torch.randn(8192, 8192, device=d); b = torch.randn(8192, 8192, device=d)
end = time.time() + ${WARMUP:-8} + $LOAD_SECONDS + 10
while time.time() < end:
    for _ in range(20): c = a @ b
    torch.cuda.synchronize(d)
PY
  (export CUDA_DEVICE_ORDER=PCI_BUS_ID; in_cgroup python3 "$work/load.py") >"$work/load.log" 2>&1 &
  load_pid=$!
elif command -v gpu_burn >/dev/null; then
  (export CUDA_VISIBLE_DEVICES=$GPU_INDEX; in_cgroup gpu_burn $((${WARMUP:-8} + LOAD_SECONDS + 10))) >"$work/load.log" 2>&1 &
  load_pid=$!
else
  say "no load available: install python3 with torch (CUDA), or gpu_burn"; exit 2
fi
pids+=("$load_pid")
say "load PID $load_pid; warming up ${WARMUP:-8} s"
sleep "${WARMUP:-8}"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader -i "$GPU_INDEX" | sed 's/^/gpu-check: compute app: /' || true

# Window: exporter counters at start and end; nvidia-smi power sampled every second in between.
m0=$(scrape); t0=$(date +%s.%N)
nvidia-smi --query-gpu=power.draw --format=csv,noheader,nounits -i "$GPU_INDEX" -lms 1000 >"$work/smi.csv" &
smi=$!; pids+=("$smi")
sleep "$LOAD_SECONDS"
kill "$smi" 2>/dev/null || true
m1=$(scrape); t1=$(date +%s.%N)
echo "$m1" >"$work/metrics-end.txt"

sel="gpu=\"$GPU_INDEX\""
j0=$(echo "$m0" | value kepler_node_gpu_joules_total "$sel")
j1=$(echo "$m1" | value kepler_node_gpu_joules_total "$sel")
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
exporter_w=$(awk -v a="$j0" -v b="$j1" -v s="$secs" 'BEGIN { printf "%.2f", (b - a) / s }')
smi_w=$(awk '{ s += $1; n++ } END { if (n) printf "%.2f", s / n; else print "nan" }' "$work/smi.csv")
smi_n=$(wc -l <"$work/smi.csv")
rel=$(awk -v e="$exporter_w" -v n="$smi_w" 'BEGIN { d = e - n; if (d < 0) d = -d; printf "%.4f", (n > 0 ? d / n : 1) }')
say "window ${secs}s: exporter ${exporter_w} W (Δ $(awk -v a="$j0" -v b="$j1" 'BEGIN{print b-a}') J), nvidia-smi power.draw mean ${smi_w} W over ${smi_n} samples, relative difference ${rel}"
check "power_matches_nvidia_smi" "$(awk -v r="$rel" -v t="$TOLERANCE" 'BEGIN { print (r <= t) ? 1 : 0 }')" "rel diff $rel <= $TOLERANCE"
say "method: $(echo "$m1" | grep '^kepler_node_gpu_info{' | grep "$sel" | sed 's/.*method="\([^"]*\)".*/\1/')"

total=$(echo "$m1" | value kepler_node_gpu_joules_total "$sel")
idle=$(echo "$m1" | value kepler_node_gpu_idle_joules_total "$sel")
active=$(echo "$m1" | value kepler_node_gpu_active_joules_total "$sel")
unattr=$(echo "$m1" | value kepler_node_gpu_unattributed_joules_total "$sel")
term=$(echo "$m1" | value kepler_node_gpu_terminated_pods_joules_total "$sel")
pods=$(echo "$m1" | value kepler_pod_gpu_joules_total "$sel")
say "cumulative: total $total J, idle $idle J, active $active J, pods $pods J, unattributed $unattr J, terminated pods $term J"
check "identity_total" "$(awk -v t="$total" -v i="$idle" -v a="$active" 'BEGIN { d = t - i - a; if (d < 0) d = -d; print (d <= 1e-6 * (t > 1 ? t : 1)) ? 1 : 0 }')" "total = idle + active"
check "identity_active" "$(awk -v a="$active" -v p="$pods" -v u="$unattr" -v x="$term" 'BEGIN { d = a - p - u - x; if (d < 0) d = -d; print (d <= 1e-6 * (a > 1 ? a : 1)) ? 1 : 0 }')" "active = pods + unattributed + terminated"

a0=$(echo "$m0" | value kepler_node_gpu_active_joules_total "$sel")
if [ -n "$POD_ID" ]; then
  p0=$(echo "$m0" | value kepler_pod_gpu_joules_total "pod_id=\"$POD_ID\".*$sel")
  p1=$(echo "$m1" | value kepler_pod_gpu_joules_total "pod_id=\"$POD_ID\".*$sel")
  share=$(awk -v p0="$p0" -v p1="$p1" -v a0="$a0" -v a1="$active" 'BEGIN { d = a1 - a0; printf "%.4f", (d > 0 ? (p1 - p0) / d : 0) }')
  check "load_pod_share" "$(awk -v s="$share" -v m="$MIN_SHARE" 'BEGIN { print (s >= m) ? 1 : 0 }')" "pod $POD_ID got $share of the active energy (>= $MIN_SHARE)"
else
  # Outside Kubernetes no pod exists: the load's PID is seen by NVML and its energy is unattributed.
  # Check that NVML reported the load's PID and that the active energy went to unattributed, not lost.
  seen=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader -i "$GPU_INDEX" | tr -d ' ' | grep -cx "$load_pid" || true)
  check "load_pid_visible_to_nvml" "$([ "$seen" -ge 1 ] && echo 1 || echo 0)" "PID $load_pid in nvidia-smi --query-compute-apps"
  u0=$(echo "$m0" | value kepler_node_gpu_unattributed_joules_total "$sel")
  share=$(awk -v u0="$u0" -v u1="$unattr" -v a0="$a0" -v a1="$active" 'BEGIN { d = a1 - a0; printf "%.4f", (d > 0 ? (u1 - u0) / d : 0) }')
  say "active energy in the window: $(awk -v a0="$a0" -v a1="$active" 'BEGIN{print a1-a0}') J; unattributed share $share (the load is a host process here)"
  say "to check pod attribution, run the load in a pod on a Kubernetes GPU node and set POD_ID=<pod uid>"
fi
say "idle estimate: $(echo "$m1" | value kepler_node_gpu_idle_watts "$sel") W; set --gpu-idle-watts for a fixed value"
grep -E '^kepler_(node|pod|container)_gpu|^kepler_exporter_(gpu|tick_duration)|^kepler_exporter_source' "$work/metrics-end.txt" | grep -v '^#' | sed 's/^/gpu-check: series: /' || true
grep -E 'WARN|ERROR' "$work/exporter.log" | sed 's/^/gpu-check: log: /' || true
if [ "$fail" = 0 ]; then say "ALL PASS"; else say "SOME CHECKS FAILED"; fi
exit "$fail"
