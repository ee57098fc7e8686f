#!/usr/bin/env bash
# Step 2: JupyterHub (Zero to JupyterHub) in namespace "sai", GitHub login, TLS from jupyterhub-tls.
set -euo pipefail
: "${HUB_HOST:?source env.sh first}" "${HUB_TLS_CERT:?}" "${HUB_TLS_KEY:?}"
: "${GITHUB_CLIENT_ID_FILE:?}" "${GITHUB_CLIENT_SECRET_FILE:?}" "${GITHUB_ORG:?}"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

$kubectl -n sai create secret tls jupyterhub-tls --cert="$HUB_TLS_CERT" --key="$HUB_TLS_KEY" \
  --dry-run=client -o yaml | apply -f -
# OAuth credentials stay in a Secret; the hub reads them as OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET.
secret_from_files sai jupyterhub-github-oauth \
  client_id="$GITHUB_CLIENT_ID_FILE" client_secret="$GITHUB_CLIENT_SECRET_FILE"

$helm repo add jupyterhub https://hub.jupyter.org/helm-chart/
$helm repo update jupyterhub
$helm upgrade --install jupyterhub jupyterhub/jupyterhub --version "$JUPYTERHUB_VERSION" --namespace sai \
  -f "$bootstrap_dir/values/jupyterhub.yaml" \
  --set "proxy.https.hosts[0]=$HUB_HOST" \
  --set "hub.config.GitHubOAuthenticator.oauth_callback_url=https://$HUB_HOST/hub/oauth_callback" \
  --set "hub.config.GitHubOAuthenticator.allowed_organizations[0]=$GITHUB_ORG" \
  --wait --timeout 15m
