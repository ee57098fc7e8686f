#!/usr/bin/env bash
# Step 5: kepler-rs on every node, scraped by kube-prometheus-stack, with its alerts and dashboards.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
repo="$(cd "$bootstrap_dir/../.." && pwd)"

# Nothing publishes the image: build it from this checkout (deploy/Containerfile) and import it into
# every node's containerd. The chart then runs it with pullPolicy Never.
# The commit becomes kepler_build_info{revision} (the build context has no .git).
revision="$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
import_image "$KEPLER_RS_IMAGE" "$repo" "$repo/deploy/Containerfile" "KEPLER_RS_GIT_REVISION=$revision"

$helm upgrade --install kepler-rs "$repo/deploy/helm/kepler-rs" --namespace kepler-rs \
  -f "$bootstrap_dir/values/kepler-rs.yaml" \
  --set "image.repository=${KEPLER_RS_IMAGE%:*}" --set "image.tag=${KEPLER_RS_IMAGE##*:}" --wait
$kubectl -n kepler-rs rollout status daemonset/kepler-rs
if $kubectl -n kepler-rs get daemonset kepler-rs-gpu >/dev/null 2>&1; then
  $kubectl -n kepler-rs rollout status daemonset/kepler-rs-gpu
fi
