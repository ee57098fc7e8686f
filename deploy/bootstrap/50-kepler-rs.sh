#!/usr/bin/env bash
# Step 5: kepler-rs on every node, scraped by kube-prometheus-stack, with its alerts and dashboards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
helm="microk8s helm3"
$helm upgrade --install kepler-rs "$here/../helm/kepler-rs" --namespace kepler-rs --create-namespace \
  -f "$here/values/kepler-rs.yaml" --wait
microk8s kubectl -n kepler-rs rollout status daemonset/kepler-rs
