#!/usr/bin/env bash
# Tollgate on a local kind cluster, in one command.
#
#   k8s/kind.sh up     create the cluster (k8s/kind.yaml), build the image, load it,
#                      install the chart, wait for the rollout, run the tutorial smoke test
#   k8s/kind.sh down   delete the cluster
#
# Needs docker. kind and helm are used from PATH when installed, otherwise the
# versions pinned in tools/kind and tools/helm are run with `go tool`.
# Settings: KIND_CLUSTER (tollgate), TOLLGATE_NAMESPACE (tollgate),
# TOLLGATE_RELEASE (tollgate).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER:-tollgate}
namespace=${TOLLGATE_NAMESPACE:-tollgate}
release=${TOLLGATE_RELEASE:-tollgate}
context="kind-$cluster"

step() { printf '==> %s\n' "$*"; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }

# tool NAME: the command that runs NAME, from PATH or pinned in tools/NAME.
tool() {
  if command -v "$1" >/dev/null 2>&1; then
    echo "$1"
  elif command -v go >/dev/null 2>&1; then
    echo "go tool -modfile=tools/$1/go.mod $1"
  else
    die "$1 not found: install $1 ($2), or Go 1.26+ to run the version pinned in tools/$1"
  fi
}

need_docker() {
  command -v docker >/dev/null 2>&1 ||
    die "docker not found: kind runs Kubernetes in Docker containers; install Docker Engine or Docker Desktop"
  docker info >/dev/null 2>&1 ||
    die "docker is installed but its daemon does not answer: start Docker (and check you may use its socket)"
}

up() {
  need_docker
  command -v curl >/dev/null 2>&1 || die "curl not found: the smoke test needs it (apt-get install curl)"
  local kind helm
  kind=$(tool kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
  helm=$(tool helm "https://helm.sh/docs/intro/install/")

  if $kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    step "kind cluster $cluster exists; reusing it"
  else
    step "creating kind cluster $cluster from k8s/kind.yaml (gateway NodePort 30080 -> localhost:8080)"
    $kind create cluster --name "$cluster" --config k8s/kind.yaml --wait 120s
  fi

  local version commit tag
  version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
  commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  # A new tag for every build, so that `helm upgrade` rolls the pods.
  tag="dev-$(date +%s)"
  step "building image tollgate:$tag (version $version)"
  docker build -t "tollgate:$tag" --build-arg VERSION="$version" --build-arg COMMIT="$commit" .

  step "loading tollgate:$tag into the kind node"
  $kind load docker-image "tollgate:$tag" --name "$cluster"

  if command -v kubectl >/dev/null 2>&1; then
    step "creating namespace $namespace with the restricted Pod Security Standard enforced"
    kubectl --context "$context" create namespace "$namespace" --dry-run=client -o yaml |
      kubectl --context "$context" apply -f - >/dev/null
    kubectl --context "$context" label --overwrite namespace "$namespace" \
      pod-security.kubernetes.io/enforce=restricted >/dev/null
  fi

  step "installing chart charts/tollgate as release $release in namespace $namespace (waits for readiness)"
  $helm upgrade --install "$release" charts/tollgate \
    --kube-context "$context" --namespace "$namespace" --create-namespace \
    --values charts/tollgate/values-kind.yaml --set image.tag="$tag" \
    --wait --timeout 5m

  if command -v kubectl >/dev/null 2>&1; then
    step "waiting for the rollout of every Deployment"
    kubectl --context "$context" --namespace "$namespace" rollout status deployment \
      --selector "app.kubernetes.io/instance=$release" --timeout 180s
  else
    step "kubectl not found: skipping rollout status (helm --wait already waited for the pods)"
  fi

  step "smoke test: the tutorial flow through Envoy at http://localhost:8080"
  local tries=0
  until curl -fsS -o /dev/null --max-time 2 http://localhost:8080/.well-known/jwks.json; do
    tries=$((tries + 1))
    [ "$tries" -lt 30 ] || die "the gateway does not answer on localhost:8080"
    sleep 2
  done
  BASE_URL=http://localhost:8080 sh charts/tollgate/files/tutorial.sh

  step "done: Tollgate answers on http://localhost:8080; the chart's notes above show how to read the admin password"
}

down() {
  need_docker
  local kind
  kind=$(tool kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
  step "deleting kind cluster $cluster"
  $kind delete cluster --name "$cluster"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
