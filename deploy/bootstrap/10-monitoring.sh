#!/usr/bin/env bash
# Step 1: kube-prometheus-stack in namespace "monitoring" (Prometheus, Alertmanager, Grafana).
set -euo pipefail
: "${GRAFANA_ADMIN_PASSWORD_FILE:?source env.sh first}"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# The admin password is read from a file into a Secret; it never appears in values or on a command line.
secret_from_files monitoring grafana-admin admin-user=<(printf admin) admin-password="$GRAFANA_ADMIN_PASSWORD_FILE"

$helm repo add prometheus-community https://prometheus-community.github.io/helm-charts
$helm repo update prometheus-community
$helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --version "$KUBE_PROMETHEUS_STACK_VERSION" --namespace monitoring \
  -f "$bootstrap_dir/values/kube-prometheus-stack.yaml" --wait
# Prometheus and Alertmanager answer only Grafana, the ingress and each other.
apply -f "$bootstrap_dir/manifests/monitoring-netpol.yaml"
