#!/usr/bin/env bash
# The whole cost of each CPU source: the exporter's own CPU and the in-kernel time of its eBPF
# programs, at three context-switch rates. Run as root from anywhere in the repository:
#   sudo benches/cpu_sources.sh
#
# For each load (quiet; one pair of processes ping-ponging a byte through pipes with a sleep per
# round trip, tens of thousands of switches a second; several pairs without sleep, hundreds of
# thousands) and each source (ebpf, cgroup, procfs), it starts the exporter (1 s interval, no pods
# of its own: the host's cgroups), waits WARMUP seconds, then over SECONDS seconds measures
#   - switches per second: the node's `ctxt` delta from /proc/stat;
#   - exporter CPU: on-CPU nanoseconds of all its threads (/proc/<pid>/task/*/schedstat), per second;
#   - kernel program CPU: the run_time_ns of the exporter's BPF programs, from /proc/<pid>/fdinfo of
#     its program fds (the kernel's own accounting: `kernel.bpf_stats_enabled` is set to 1 for the
#     run and restored after; it adds two clock reads per program run), per second, cross-checked
#     against the exporter's kepler_exporter_bpf_run_seconds_total;
#   - their sum, the CPU the source costs the node.
# Prints a markdown table. Environment: SECONDS_PER_CELL (default 10), WARMUP (default 3),
# LOADS (default "quiet:0:0 30k:1:40 300k:2:0", name:pairs:sleep_us), SOURCES (default
# "ebpf cgroup procfs"), PORT (default 28398), SKIP_BUILD=1 (use the existing release binary).
set -euo pipefail

SECS=${SECONDS_PER_CELL:-10}
WARMUP=${WARMUP:-3}
LOADS=${LOADS:-"quiet:0:0 30k:1:40 300k:2:0"}
SOURCES=${SOURCES:-"ebpf cgroup procfs"}
PORT=${PORT:-28398}

die() { echo "cpu_sources.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (eBPF and BPF run-time stats)"
command -v gcc >/dev/null || die "gcc is required (the ping-pong load)"
command -v curl >/dev/null || die "curl is required"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/kepler-rs"
WORK=$(mktemp -d /tmp/kepler-rs-cpu-sources.XXXXXX)
STATS_BEFORE=$(cat /proc/sys/kernel/bpf_stats_enabled)
PID=""
LOAD=""
cleanup() {
    set +e
    [[ -n "$LOAD" ]] && kill -TERM -- -"$LOAD" 2>/dev/null && wait "$LOAD" 2>/dev/null
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    echo "$STATS_BEFORE" >/proc/sys/kernel/bpf_stats_enabled
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$REPO" && cargo build --release -p kepler-rs >&2)
fi
[[ -x "$BIN" ]] || die "$BIN not found"
gcc -O2 -o "$WORK/pingpong" "$REPO/benches/load/pingpong.c"
echo 1 >/proc/sys/kernel/bpf_stats_enabled

ctxt() { awk '$1 == "ctxt" { print $2 }' /proc/stat; }
cpu_ns() { cat /proc/"$PID"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
now_ns() { date +%s%N; }
# Sum of run_time_ns over the exporter's BPF program fds (fdinfo of a program fd has prog_type).
prog_ns() {
    local sum=0 f v
    for f in /proc/"$PID"/fdinfo/*; do
        v=$(awk '$1 == "prog_type:" { p = 1 } $1 == "run_time_ns:" { r = $2 } END { if (p) print r + 0 }' "$f" 2>/dev/null)
        [[ -n "$v" ]] && sum=$((sum + v))
    done
    echo "$sum"
}
metric_ns() { # kepler_exporter_bpf_run_seconds_total in ns: "all sched_switch charge"
    curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 ~ /^kepler_exporter_bpf_run_seconds_total/ {
        s += $NF; if ($1 ~ /kepler_sched_switch/) w += $NF; if ($1 ~ /kepler_charge_running/) c += $NF }
        END { printf "%.0f %.0f %.0f", s * 1e9, w * 1e9, c * 1e9 }'
}

echo "| load | source | switches/s | exporter CPU ms/s | BPF programs ms/s (fdinfo) | **sum ms/s** | BPF ns per switch | metric ms/s: all / sched_switch / charge |"
echo "|---|---|---|---|---|---|---|---|"
for load in $LOADS; do
    IFS=: read -r name pairs gap <<<"$load"
    for source in $SOURCES; do
        if [[ "$pairs" -gt 0 ]]; then
            "$WORK/pingpong" "$pairs" "$gap" $((WARMUP + SECS + 10)) &
            LOAD=$!
        fi
        "$BIN" run --listen "127.0.0.1:$PORT" --interval 1s --node-name bench --no-kube \
            --cpu-source "$source" >"$WORK/log" 2>&1 &
        PID=$!
        for ((i = 0; i < 100; i++)); do
            curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
            kill -0 "$PID" 2>/dev/null || { cat "$WORK/log" >&2; die "exporter exited"; }
            sleep 0.1
        done
        sleep "$WARMUP"
        t0=$(now_ns); c0=$(ctxt); u0=$(cpu_ns); p0=$(prog_ns); read -r m0 w0 q0 <<<"$(metric_ns)"
        sleep "$SECS"
        t1=$(now_ns); c1=$(ctxt); u1=$(cpu_ns); p1=$(prog_ns); read -r m1 w1 q1 <<<"$(metric_ns)"
        awk -v n="$name" -v s="$source" -v t="$(((t1 - t0)))" -v c="$((c1 - c0))" -v u="$((u1 - u0))" \
            -v p="$((p1 - p0))" -v m="$((m1 - m0))" -v w="$((w1 - w0))" -v q="$((q1 - q0))" 'BEGIN {
            secs = t / 1e9; ex = u / 1e6 / secs; bpf = p / 1e6 / secs
            per = (c > 0 && p > 0) ? sprintf("%.0f", p / c) : "-"
            printf "| %s | %s | %.0f | %.2f | %.2f | **%.2f** | %s | %.2f / %.2f / %.2f |\n", n, s, c / secs, ex, bpf,
                ex + bpf, per, m / 1e6 / secs, w / 1e6 / secs, q / 1e6 / secs }'
        kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
        if [[ -n "$LOAD" ]]; then
            kill -TERM -- -"$LOAD" 2>/dev/null || true # the load's process group: it and its pairs
            wait "$LOAD" 2>/dev/null || true
            LOAD=""
        fi
        sleep 1
    done
done
