#!/usr/bin/env bash
# Step 3: jupyterhub-ssh in "sai", reached on port 2222 through the NGINX ingress's TCP forward.
# TLS verification stays on: the ssh server talks to https://$HUB_HOST, and if that certificate is
# signed by a private CA, the CA bundle is mounted (SSL_CERT_FILE) instead of disabling verification.
set -euo pipefail
: "${HUB_HOST:?source env.sh first}" "${SSH_HOST_KEY_FILE:?}"
here="$(cd "$(dirname "$0")" && pwd)"
kubectl="microk8s kubectl"
helm="microk8s helm3"

$helm repo add jupyterhub-ssh https://yuvipanda.github.io/jupyterhub-ssh/
$helm repo update jupyterhub-ssh
$helm upgrade --install jupyterhub-ssh jupyterhub-ssh/jupyterhub-ssh --namespace sai \
  -f "$here/values/jupyterhub-ssh.yaml" \
  --set "hubUrl=https://$HUB_HOST" --set-file "hostKey=$SSH_HOST_KEY_FILE" --wait

if [ -n "${HUB_CA_BUNDLE:-}" ]; then
  $kubectl -n sai create configmap jupyterhub-ca --from-file=ca.crt="$HUB_CA_BUNDLE" \
    --dry-run=client -o yaml | $kubectl apply -f -
  # The chart has no extraVolumes value: patch the Deployment (re-run after each helm upgrade).
  $kubectl -n sai patch deployment jupyterhub-ssh --type=strategic -p "$(cat "$here/manifests/jupyterhub-ssh-ca-patch.yaml")"
fi

# TCP forward 2222 -> sai/jupyterhub-ssh:22 on the MicroK8s NGINX ingress (MicroK8s <= 1.34).
$kubectl apply -f "$here/manifests/ingress-tcp-ssh.yaml"
$kubectl -n ingress patch daemonset nginx-ingress-microk8s-controller --type=json \
  -p "$(cat "$here/manifests/ingress-hostport-2222.json")" || true   # already present on re-runs
# jupyterhub-ssh's NetworkPolicy only admits labelled pods: admit the ingress namespace explicitly.
$kubectl apply -f "$here/manifests/ssh-allow-ingress-netpol.yaml"
