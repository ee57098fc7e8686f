#!/usr/bin/env bash
# Step 3: jupyterhub-ssh in "sai", reached on port 2222 through the NGINX ingress's TCP forward.
# TLS verification stays on: the ssh server talks to https://$HUB_HOST, and if that certificate is
# signed by a private CA, the CA bundle is mounted (SSL_CERT_FILE) instead of disabling verification.
set -euo pipefail
: "${HUB_HOST:?source env.sh first}" "${SSH_HOST_KEY_FILE:?}"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# The only published image is from 2021 (Python 3.8, an asyncssh with Terrapin): build a current one.
import_image "$JUPYTERHUB_SSH_IMAGE" "$bootstrap_dir/images/jupyterhub-ssh"

$helm repo add jupyterhub-ssh https://yuvipanda.github.io/jupyterhub-ssh/
$helm repo update jupyterhub-ssh
$helm upgrade --install jupyterhub-ssh jupyterhub-ssh/jupyterhub-ssh --version "$JUPYTERHUB_SSH_VERSION" \
  --namespace sai -f "$bootstrap_dir/values/jupyterhub-ssh.yaml" \
  --set "ssh.image.repository=${JUPYTERHUB_SSH_IMAGE%:*}" --set "ssh.image.tag=${JUPYTERHUB_SSH_IMAGE##*:}" \
  --set "hubUrl=https://$HUB_HOST" --set-file "hostKey=$SSH_HOST_KEY_FILE" --wait

if [ -n "${HUB_CA_BUNDLE:-}" ]; then
  $kubectl -n sai create configmap jupyterhub-ca --from-file=ca.crt="$HUB_CA_BUNDLE" \
    --dry-run=client -o yaml | apply -f -
  # The chart has no extraVolumes value: patch the Deployment (re-run after each helm upgrade).
  $kubectl -n sai patch deployment jupyterhub-ssh --type=strategic -p "$(cat "$bootstrap_dir/manifests/jupyterhub-ssh-ca-patch.yaml")"
fi

# TCP forward 2222 -> sai/jupyterhub-ssh:22 on the MicroK8s NGINX ingress (MicroK8s <= 1.34).
apply -f "$bootstrap_dir/manifests/ingress-tcp-ssh.yaml"
# hostPort 2222 on the controller, unless a previous run added it (a failed patch stops the script).
ports="$($kubectl -n ingress get daemonset nginx-ingress-microk8s-controller \
  -o jsonpath='{.spec.template.spec.containers[0].ports[*].containerPort}')"
if ! grep -qw 2222 <<<"$ports"; then
  $kubectl -n ingress patch daemonset nginx-ingress-microk8s-controller --type=json \
    -p "$(cat "$bootstrap_dir/manifests/ingress-hostport-2222.json")"
fi
# jupyterhub-ssh's NetworkPolicy only admits labelled pods: admit the ingress namespace explicitly.
apply -f "$bootstrap_dir/manifests/ssh-allow-ingress-netpol.yaml"
