#!/usr/bin/env bash
# Step 0: MicroK8s addons. Run on the first node after
# `snap install microk8s --classic --channel=1.33/stable` (versions.sh) and joining the others.
set -euo pipefail
: "${METALLB_RANGE:?source env.sh first}"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# NFS client on every node (the nfs addon's volumes are mounted by the kubelet); git to check the
# community addons' commit.
for pkg in nfs-common git; do
  dpkg -s "$pkg" >/dev/null 2>&1 || { echo "install $pkg first (apt-get install $pkg; nfs-common on every node)" >&2; exit 1; }
done
channel="$(snap list microk8s | awk 'NR == 2 { print $4 }')"
if [ "$channel" != "$MICROK8S_CHANNEL" ]; then
  echo "MicroK8s tracks $channel, versions.sh pins $MICROK8S_CHANNEL (snap refresh microk8s --channel=$MICROK8S_CHANNEL)" >&2
  exit 1
fi

microk8s status --wait-ready
# RBAC first: until it is on, the API server runs --authorization-mode=AlwaysAllow and every
# ServiceAccount token (the hub's, the ingress controller's, Grafana's) is effectively cluster-admin.
microk8s enable rbac
microk8s enable dns
microk8s enable helm3
microk8s enable "metallb:${METALLB_RANGE}"
microk8s enable ingress
# NVIDIA GPU operator (namespace gpu-operator-resources): the "nvidia" RuntimeClass, and the node
# label nvidia.com/gpu.present=true on GPU nodes that kepler-rs's GPU DaemonSet selects.
microk8s enable gpu
# A StorageClass for the hub database (microk8s-hostpath: a directory on one node's disk, which
# SQLite needs; NFS is for user homes). Without one the hub's PVC stays Pending.
microk8s enable hostpath-storage
microk8s enable community
community_commit="$(git -C /var/snap/microk8s/common/addons/community rev-parse HEAD)"
if [ "$community_commit" != "$MICROK8S_COMMUNITY_ADDONS_COMMIT" ]; then
  echo "community addons at $community_commit, versions.sh pins $MICROK8S_COMMUNITY_ADDONS_COMMIT: review the" >&2
  echo "difference, then bump the pin (README.md, Versions)" >&2
  exit 1
fi
# NFS Ganesha provisioner: StorageClass "nfs" (not the default), used for JupyterHub user storage so
# that users are not pinned to one node (the original cluster's hostPath problem).
microk8s enable nfs
$kubectl get storageclass nfs microk8s-hostpath

# Namespaces with their Pod Security Admission levels (manifests/namespaces.yaml).
apply -f "$bootstrap_dir/manifests/namespaces.yaml"
