#!/usr/bin/env bash
# Step 1: kube-prometheus-stack in namespace "monitoring" (Prometheus, Alertmanager, Grafana).
set -euo pipefail
: "${GRAFANA_ADMIN_PASSWORD_FILE:?source env.sh first}"
here="$(cd "$(dirname "$0")" && pwd)"
kubectl="microk8s kubectl"
helm="microk8s helm3"

$kubectl create namespace monitoring --dry-run=client -o yaml | $kubectl apply -f -
# The admin password is read from a file into a Secret; it never appears in values or on a command line.
$kubectl -n monitoring create secret generic grafana-admin \
  --from-literal=admin-user=admin --from-file=admin-password="$GRAFANA_ADMIN_PASSWORD_FILE" \
  --dry-run=client -o yaml | $kubectl apply -f -

$helm repo add prometheus-community https://prometheus-community.github.io/helm-charts
$helm repo update prometheus-community
$helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --namespace monitoring -f "$here/values/kube-prometheus-stack.yaml" --wait
