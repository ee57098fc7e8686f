#!/usr/bin/env bash
# Step 1: kube-prometheus-stack in namespace "monitoring" (Prometheus, Alertmanager, Grafana with
# GitHub login through the ingress, with TLS).
set -euo pipefail
: "${GRAFANA_ADMIN_PASSWORD_FILE:?source env.sh first}" "${GRAFANA_HOST:?}" "${GRAFANA_TLS_CERT:?}" "${GRAFANA_TLS_KEY:?}"
: "${GRAFANA_GITHUB_CLIENT_ID_FILE:?}" "${GRAFANA_GITHUB_CLIENT_SECRET_FILE:?}" "${GITHUB_ORG:?}"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# The admin password is read from a file into a Secret; it never appears in values or on a command line.
secret_from_files monitoring grafana-admin admin-user=<(printf admin) admin-password="$GRAFANA_ADMIN_PASSWORD_FILE"
# GitHub login: the OAuth credentials in a Secret, read as GF_AUTH_GITHUB_CLIENT_ID/_SECRET.
secret_from_files monitoring grafana-github-oauth \
  client_id="$GRAFANA_GITHUB_CLIENT_ID_FILE" client_secret="$GRAFANA_GITHUB_CLIENT_SECRET_FILE"
$kubectl -n monitoring create secret tls grafana-tls --cert="$GRAFANA_TLS_CERT" --key="$GRAFANA_TLS_KEY" \
  --dry-run=client -o yaml | apply -f -

$helm repo add prometheus-community https://prometheus-community.github.io/helm-charts
$helm repo update prometheus-community
$helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --version "$KUBE_PROMETHEUS_STACK_VERSION" --namespace monitoring \
  -f "$bootstrap_dir/values/kube-prometheus-stack.yaml" \
  --set "grafana.ingress.hosts[0]=$GRAFANA_HOST" \
  --set "grafana.ingress.tls[0].secretName=grafana-tls" --set "grafana.ingress.tls[0].hosts[0]=$GRAFANA_HOST" \
  --set "grafana.env.GF_SERVER_ROOT_URL=https://$GRAFANA_HOST/" \
  --set "grafana.env.GF_AUTH_GITHUB_ALLOWED_ORGANIZATIONS=$GITHUB_ORG" --wait
# Prometheus and Alertmanager answer only Grafana, the ingress and each other.
apply -f "$bootstrap_dir/manifests/monitoring-netpol.yaml"
