#!/usr/bin/env bash
# Step 0: MicroK8s addons. Run on the first node after `snap install microk8s --classic`.
set -euo pipefail
: "${METALLB_RANGE:?source env.sh first}"

# NFS client on every node (the nfs addon's volumes are mounted by the kubelet).
dpkg -s nfs-common >/dev/null 2>&1 || { echo "install nfs-common on every node first (apt-get install nfs-common)" >&2; exit 1; }

microk8s status --wait-ready
microk8s enable dns
microk8s enable helm3
microk8s enable "metallb:${METALLB_RANGE}"
microk8s enable ingress
# NVIDIA GPU operator (namespace gpu-operator-resources); installs the "nvidia" RuntimeClass.
microk8s enable gpu
microk8s enable community
# NFS Ganesha provisioner: StorageClass "nfs" (not the default), used for JupyterHub user storage so
# that users are not pinned to one node (the original cluster's hostPath problem).
microk8s enable nfs
microk8s kubectl get storageclass nfs
