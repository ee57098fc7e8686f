#!/usr/bin/env bash
# Step 4: the Kubernetes dashboard with a read-only login (ClusterRole "view", which excludes
# Secrets) instead of the cluster-admin binding of the original cluster.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

microk8s enable dashboard
# The addon leaves a token that never expires (and that AlwaysAllow made all-powerful). Logins use
# short-lived tokens of the read-only dashboard-viewer account instead.
$kubectl -n kube-system delete secret microk8s-dashboard-token --ignore-not-found
apply -f "$bootstrap_dir/manifests/dashboard-readonly.yaml"
# RBAC is on (00-addons.sh): the viewer can read workloads but no Secret.
if [ "$($kubectl auth can-i list secrets --as=system:serviceaccount:kube-system:dashboard-viewer -A)" != no ]; then
  echo "dashboard-viewer can list Secrets: is RBAC enabled (microk8s enable rbac)?" >&2
  exit 1
fi
echo "Log in with a short-lived token (microk8s dashboard-proxy no longer finds a permanent one):"
echo "  microk8s kubectl -n kube-system create token dashboard-viewer --duration=1h"
echo "  microk8s kubectl -n kube-system port-forward service/kubernetes-dashboard 10443:443"
