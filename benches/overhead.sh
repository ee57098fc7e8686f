#!/usr/bin/env bash
# End-to-end overhead of the kepler-rs exporter on this machine, with N fake pods in the real cgroup v1
# cpuacct hierarchy. Run as root from anywhere in the repository:   sudo benches/overhead.sh
#
# Phases: build; create N pod cgroups (1 container each); start the exporter (1 s interval); let it
# run QUIET seconds without scrapes (CPU per tick); then DURATION seconds scraping /metrics every 2 s
# (CPU per scrape, latency). Prints a markdown table. Everything created is removed on exit.
#
# Environment: N (pods, default 1000), PORT (default 28399), QUIET (default 10), DURATION (default 20),
# EXTRA_ARGS (flags for `kepler-rs run`, default --no-kube),
# SKIP_BUILD=1 (use the existing target/release/kepler-rs), CARGO (default: cargo),
# SAVE=<file> (keep the last exposition there).
set -euo pipefail

N=${N:-1000}
PORT=${PORT:-28399}
QUIET=${QUIET:-10}
DURATION=${DURATION:-20}
# No API server here; the CPU source is auto (eBPF as root) unless EXTRA_ARGS says otherwise.
EXTRA_ARGS=${EXTRA_ARGS:---no-kube}
CARGO=${CARGO:-cargo}
# Pod UIDs and container IDs start with these, so cleanup only ever touches what this script made.
UID_PREFIX="0be4c400-0000-4000-8000"
CID_PREFIX="0be4c4"

die() { echo "overhead.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (it creates cgroups)"
command -v curl >/dev/null || die "curl is required"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/kepler-rs"
WORK=$(mktemp -d /tmp/kepler-rs-overhead.XXXXXX)
LOG="$WORK/exporter.log"

# --- the cgroup v1 cpuacct hierarchy, from mountinfo (field 5 = mount point; after "-": fs, source, options).
CPUACCT=$(awk '{
    for (i = 1; i <= NF; i++) if ($i == "-") { fs = $(i + 1); opts = $(i + 3); break }
    if (fs == "cgroup" && opts ~ /(^|,)cpuacct(,|$)/) { print $5; exit }
}' /proc/self/mountinfo)
[[ -n "$CPUACCT" && -d "$CPUACCT" ]] || die "no cgroup v1 cpuacct hierarchy in /proc/self/mountinfo"
QOS="$CPUACCT/kubepods/besteffort"

PID=""
CREATED_KUBEPODS=0
CREATED_QOS=0
cleanup() {
    set +e
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID"
        wait "$PID" 2>/dev/null
    fi
    local pod cnt
    for pod in "$QOS"/pod"$UID_PREFIX"-*; do
        [[ -d "$pod" ]] || continue
        for cnt in "$pod"/"$CID_PREFIX"*; do
            [[ -d "$cnt" ]] && rmdir "$cnt"
        done
        rmdir "$pod"
    done
    [[ $CREATED_QOS -eq 1 ]] && rmdir "$QOS"
    [[ $CREATED_KUBEPODS -eq 1 ]] && rmdir "$CPUACCT/kubepods"
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# --- build
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$REPO" && "$CARGO" build --release -p kepler-rs >&2)
fi
[[ -x "$BIN" ]] || die "$BIN not found"

# --- cgroups: kubepods/besteffort/pod<uid>/<64 hex>
[[ -d "$CPUACCT/kubepods" ]] || { mkdir "$CPUACCT/kubepods"; CREATED_KUBEPODS=1; }
[[ -d "$QOS" ]] || { mkdir "$QOS"; CREATED_QOS=1; }
for ((i = 0; i < N; i++)); do
    pod=$(printf '%s/pod%s-%012x' "$QOS" "$UID_PREFIX" "$i")
    mkdir "$pod"
    mkdir "$pod/$(printf '%s%058x' "$CID_PREFIX" "$i")"
done
echo "created $N pod cgroups (1 container each) under $QOS" >&2

# --- helpers
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of $PID, in clock ticks (fields 14 and 15; comm may hold spaces)
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$PID/stat"
}
metric() { # value of the first sample of metric $1 in file $2
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { print $NF; exit }' "$2"
}
status_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$PID/status"; }
stats() { # min median max of numbers on stdin, scaled by $1, formatted with $2 decimals
    sort -g | awk -v s="$1" -v d="$2" '{ v[NR] = $1 * s }
        END { if (NR == 0) { print "n/a"; exit }
              printf "%.*f / %.*f / %.*f", d, v[1], d, v[int((NR + 1) / 2)], d, v[NR] }'
}
URL="http://127.0.0.1:$PORT/metrics"

# --- run
# shellcheck disable=SC2086 # EXTRA_ARGS is a list of flags
"$BIN" run --listen "127.0.0.1:$PORT" --interval 1s --node-name bench $EXTRA_ARGS >"$LOG" 2>&1 &
PID=$!
for ((i = 0; i < 100; i++)); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; die "exporter exited"; }
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$LOG" >&2; die "exporter not ready"; }
curl -sf "$URL" -o "$WORK/first.txt"
zones=$(grep -c '^kepler_node_cpu_joules_total{' "$WORK/first.txt" || true)
pods_ours=$(grep '^kepler_pod_cpu_joules_total{' "$WORK/first.txt" | grep -c "pod_id=\"$UID_PREFIX" || true)
pods_all=$(grep '^kepler_pod_cpu_joules_total{' "$WORK/first.txt" | grep -c 'zone="package"' || true)
pods_seen="$pods_ours of ours, $((pods_all - pods_ours)) others"
cpu_source=$(grep -o '^kepler_exporter_cpu_source_info{[^}]*source="[a-z]*"' "$WORK/first.txt" |
    sed 's/.*source="\([a-z]*\)"/\1/')
energy_source=$(grep -o '^kepler_exporter_energy_source_info{[^}]*source="[a-z]*"' "$WORK/first.txt" |
    sed 's/.*source="\([a-z]*\)"/\1/')
echo "exporter pid $PID ready: cpu source $cpu_source, energy source $energy_source, $zones zone(s), pods seen: $pods_seen" >&2

# Phase A: no scrapes. CPU per tick = exporter CPU / ticks.
cpu_a0=$(cpu_ticks)
sleep "$QUIET"
cpu_a1=$(cpu_ticks)
curl -sf "$URL" -o "$WORK/a.txt"
ticks_a=$(awk -v q="$QUIET" 'BEGIN { print q }') # 1 s interval: one tick per second

# Phase B: scrape every 2 s.
: >"$WORK/latency" ; : >"$WORK/tick"
cpu_b0=$(cpu_ticks)
ticks_b0=$(metric kepler_exporter_ticks_total "$WORK/a.txt")
scrapes=0
end=$((SECONDS + DURATION))
while ((SECONDS < end)); do
    curl -s -o "$WORK/scrape.txt" -w '%{time_total} %{size_download}\n' "$URL" >>"$WORK/latency"
    metric kepler_exporter_tick_duration_seconds "$WORK/scrape.txt" >>"$WORK/tick"
    scrapes=$((scrapes + 1))
    sleep 2
done
cpu_b1=$(cpu_ticks)
ticks_b1=$(metric kepler_exporter_ticks_total "$WORK/scrape.txt")
rss_kib=$(status_kib VmRSS)
hwm_kib=$(status_kib VmHWM)
series=$(grep -vc '^#' "$WORK/scrape.txt")
series_self=$(metric kepler_exporter_series "$WORK/scrape.txt")
bytes=$(wc -c <"$WORK/scrape.txt")
[[ -n "${SAVE:-}" ]] && cp "$WORK/scrape.txt" "$SAVE"
tick_avg=$(awk -v t="$(metric kepler_exporter_tick_seconds_total "$WORK/scrape.txt")" \
    -v n="$ticks_b1" 'BEGIN { printf "%.2f", 1000 * t / n }')

read -r cpu_tick_ms cpu_pct <<<"$(awk -v c0="$cpu_a0" -v c1="$cpu_a1" -v hz="$CLK_TCK" -v n="$ticks_a" -v q="$QUIET" \
    'BEGIN { s = (c1 - c0) / hz; printf "%.2f %.2f", 1000 * s / n, 100 * s / q }')"
read -r cpu_b_pct cpu_scrape_ms <<<"$(awk -v c0="$cpu_b0" -v c1="$cpu_b1" -v hz="$CLK_TCK" -v d="$DURATION" \
    -v t0="$ticks_b0" -v t1="$ticks_b1" -v per="$cpu_tick_ms" -v k="$scrapes" \
    'BEGIN { s = (c1 - c0) / hz; extra = 1000 * s - per * (t1 - t0); if (extra < 0) extra = 0
             printf "%.2f %.2f", 100 * s / d, extra / k }')"

cat <<EOF

## kepler-rs overhead: $N pods x 1 container, interval 1 s, $(nproc) CPUs, $(uname -r)

cpu source: \`$cpu_source\`, energy source: \`$energy_source\` ($zones zone(s)), pods seen by the exporter: $pods_seen

| measure | value |
|---|---|
| RSS now (VmRSS) | $((rss_kib / 1024)).$(((rss_kib % 1024) * 10 / 1024)) MiB ($rss_kib KiB) |
| RSS peak (VmHWM) | $((hwm_kib / 1024)).$(((hwm_kib % 1024) * 10 / 1024)) MiB ($hwm_kib KiB) |
| exporter CPU per tick, no scrapes (utime+stime / ticks, ${QUIET} s) | $cpu_tick_ms ms |
| exporter CPU, no scrapes | $cpu_pct % of one core |
| exporter CPU, scraped every 2 s (${DURATION} s) | $cpu_b_pct % of one core |
| extra CPU per scrape (estimated) | $cpu_scrape_ms ms |
| kepler_exporter_tick_duration_seconds, min / median / max ($scrapes samples) | $(stats 1000 2 <"$WORK/tick") ms |
| tick wall time, mean since start (tick_seconds_total / ticks) | $tick_avg ms |
| series in exposition (lines / kepler_exporter_series) | $series / $series_self |
| exposition size | $bytes bytes ($((bytes / 1024)) KiB) |
| /metrics latency (curl time_total), min / median / max | $(cut -d' ' -f1 "$WORK/latency" | stats 1000 2) ms |
EOF
