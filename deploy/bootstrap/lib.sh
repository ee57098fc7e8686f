# shellcheck shell=bash
# Sourced by the numbered scripts: pinned versions, the MicroK8s clients, and the two ways objects
# reach the API server (server-side apply, and Secrets from files without trailing newlines).
bootstrap_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.sh
source "$bootstrap_dir/versions.sh"
kubectl="microk8s kubectl"
helm="microk8s helm3"

# Server-side apply: no kubectl.kubernetes.io/last-applied-configuration annotation, which would
# otherwise hold a second copy of every Secret's data.
apply() {
  $kubectl apply --server-side --field-manager=kepler-rs-bootstrap "$@"
}

# secret_from_files NAMESPACE NAME KEY=FILE...: a generic Secret whose values are the files'
# contents with trailing newlines removed ("secret\n" is not the GitHub client secret, nor the
# Grafana password), applied server-side. Values never appear on a command line.
secret_from_files() (
  ns="$1" name="$2"
  shift 2
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  args=()
  for pair in "$@"; do
    key="${pair%%=*}" file="${pair#*=}"
    # $(cat) drops every trailing newline; printf adds none.
    (umask 077 && printf '%s' "$(cat "$file")" >"$dir/$key")
    args+=("--from-file=$key=$dir/$key")
  done
  $kubectl -n "$ns" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml | apply -f -
)

# import_image IMAGE CONTEXT [CONTAINERFILE [BUILD-ARG...]]: build with podman (each BUILD-ARG is
# KEY=VALUE) and import into the containerd of every MicroK8s node (`microk8s images import`
# reaches all nodes of the cluster).
import_image() {
  local image="$1" context="$2" containerfile="${3:-$2/Containerfile}"
  shift $(($# < 3 ? $# : 3))
  local build_args=()
  for pair in "$@"; do build_args+=(--build-arg "$pair"); done
  command -v podman >/dev/null || { echo "install podman on this node first (apt-get install podman)" >&2; exit 1; }
  podman build "${build_args[@]}" -f "$containerfile" -t "$image" "$context"
  # docker-archive keeps the full name (localhost/...:tag) that containerd then serves to kubelet.
  podman save --format docker-archive "$image" | microk8s images import
}
