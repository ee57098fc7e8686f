#!/usr/bin/env bash
# Step 4: the Kubernetes dashboard with a read-only login (ClusterRole "view", which excludes
# Secrets) instead of the cluster-admin binding of the original cluster.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kubectl="microk8s kubectl"
microk8s enable dashboard
$kubectl apply -f "$here/manifests/dashboard-readonly.yaml"
echo "Log in with a short-lived token:"
echo "  microk8s kubectl -n kube-system create token dashboard-viewer --duration=8h"
