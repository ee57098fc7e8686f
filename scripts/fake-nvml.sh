#!/usr/bin/env bash
# Build the fake NVML library (exporter/tests/fake_nvml/fake_nvml.c) as OUTDIR/libnvidia-ml.so.1 and
# print OUTDIR. Run the exporter against it with:
#   LD_LIBRARY_PATH=OUTDIR FAKE_NVML_SCRIPT=script.txt kepler-rs run --gpu nvml ...
# The script format is described at the top of fake_nvml.c and in docs/gpu.md ("Testing without a GPU").
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
src="$(cd "$(dirname "$0")/.." && pwd)/exporter/tests/fake_nvml/fake_nvml.c"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
"${CC:-gcc}" -shared -fPIC -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE \
  -o "$out/libnvidia-ml.so.1" "$src" -lpthread
echo "$out"
