# shellcheck shell=bash
# Every version the bootstrap installs, pinned exactly, in one place. README.md ("Versions") says
# how to bump them; deploy/tests/test_bootstrap.py fails on a range, "latest", or a missing pin.

# MicroK8s: `snap install microk8s --classic --channel=$MICROK8S_CHANNEL` (00-addons.sh checks it).
# 1.33 is the last line whose `ingress` addon is NGINX with the TCP forward of step 3.
MICROK8S_CHANNEL="1.33/stable"
# The community addons (nfs) are a git clone of a branch that moves: this is the reviewed commit
# of branch 1.33 of github.com/canonical/microk8s-community-addons.
MICROK8S_COMMUNITY_ADDONS_COMMIT="20859eb5df4d022fbba67472fbdb4a51ed2b8893"

# Helm charts (helm upgrade --install --version).
KUBE_PROMETHEUS_STACK_VERSION="88.5.3"
JUPYTERHUB_VERSION="4.4.0"
# The jupyterhub-ssh repository publishes only pre-release versions: name one exactly.
JUPYTERHUB_SSH_VERSION="0.0.1-0.dev.git.142.h402a3d6"

# Images built by the bootstrap from pinned sources and imported into every node's containerd
# (no registry serves them; the charts use them with pullPolicy Never).
KEPLER_RS_IMAGE="localhost/kepler-rs:0.1.0"
JUPYTERHUB_SSH_IMAGE="localhost/jupyterhub-ssh:0.1.0-a054eda"
