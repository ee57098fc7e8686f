#!/usr/bin/env bash
# Rebuilds ebpf/kepler.bpf.o from ebpf/program (Rust, aya-ebpf) — the one command after editing the
# program or ebpf/common. Needs: nightly with rust-src, bpf-linker built against LLVM 22
# (see ebpf/README.md). `ebpf/build.sh --check` builds into a temporary file and fails if the
# committed object differs (CI).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/kepler.bpf.o"
check=0
if [ "${1:-}" = "--check" ]; then check=1; fi

export PATH="/usr/lib/llvm-22/bin:$PATH"
# Reproducible output: no absolute paths of this checkout or of the cargo home in the object.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export RUSTFLAGS="--remap-path-prefix=$here=/kepler-rs/ebpf --remap-path-prefix=$cargo_home=/cargo"
export CARGO_TARGET_DIR="$here/program/target"
cd "$here/program"
cargo +nightly build --release --locked --target bpfel-unknown-none -Z build-std=core >&2
built="$CARGO_TARGET_DIR/bpfel-unknown-none/release/kepler-ebpf"

if [ "$check" = 1 ]; then
  if cmp -s "$built" "$out"; then
    echo "ebpf/kepler.bpf.o is up to date ($(sha256sum < "$out" | cut -c1-16))"
    exit 0
  fi
  echo "ebpf/kepler.bpf.o is STALE: rebuilt $(sha256sum < "$built" | cut -c1-16), committed $(sha256sum < "$out" | cut -c1-16)" >&2
  echo "run ebpf/build.sh and commit ebpf/kepler.bpf.o" >&2
  exit 1
fi
cp "$built" "$out"
echo "wrote ebpf/kepler.bpf.o ($(wc -c < "$out") bytes, sha256 $(sha256sum < "$out" | cut -c1-16))"
