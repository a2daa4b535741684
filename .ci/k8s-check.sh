#!/usr/bin/env bash
# `make k8s-check`: the deployment files are valid and clean.
#  1. every manifest in k8s/ validates offline against the Kubernetes schemas;
#  2. `kubectl kustomize k8s/` renders (the real kubectl from PyPI), the
#     rendered objects validate, and routing follows the elected master
#     (the master Service selects the role label the master sets; RBAC,
#     service account token and egress as the nodes need them);
#  3. checkov (kubernetes, dockerfile) reports nothing beyond the skips in
#     .checkov.yaml, and each skip is explained in k8s/README.md;
#  4. hadolint passes on the Dockerfile;
#  5. k8s/gen-secrets.sh passes shellcheck, its Secret validates and has the
#     keys the manifests use, its certificate verifies for the pods' names,
#     and no high-entropy secret is committed under k8s/ (checkov secrets);
#  6. k8s/monitoring/ renders; its ConfigMap validates; its PrometheusRule
#     passes `promtool check rules`; its ServiceMonitor (no CRD schema is
#     available offline) is checked field by field and against the
#     Services it must select (.ci/k8s_render_check.py --monitoring).
# The tools come from PyPI, in the virtualenv .venv/ that `make deps`
# (scripts/setup.sh) fills; a missing one fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
for tool in python kubectl kubernetes-validate checkov hadolint shellcheck; do
  [ -x "$BIN/$tool" ] || { echo "k8s-check: $BIN/$tool not found: run \`make deps\`" >&2; exit 1; }
done
KUBE_VERSION=1.30.0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "k8s-check: schema validation (Kubernetes $KUBE_VERSION)"
manifests=()
for f in k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] && continue
  manifests+=("$f")
done
[ "${#manifests[@]}" -ge 11 ] || { echo "k8s-check: expected at least 11 manifests, found ${#manifests[@]}" >&2; exit 1; }
"$BIN/kubernetes-validate" --strict -k "$KUBE_VERSION" "${manifests[@]}"

echo "k8s-check: kubectl kustomize k8s/"
"$BIN/kubectl" kustomize k8s/ > "$tmp/rendered.yaml"
"$BIN/kubernetes-validate" --strict -k "$KUBE_VERSION" "$tmp/rendered.yaml"
"$BIN/python" .ci/k8s_render_check.py "$tmp/rendered.yaml"

echo "k8s-check: k8s/monitoring/ (Prometheus operator objects, applied apart)"
command -v promtool >/dev/null || { echo "k8s-check: promtool not found: run \`make deps\`" >&2; exit 1; }
"$BIN/kubectl" kustomize k8s/monitoring/ > "$tmp/monitoring.yaml"
"$BIN/python" .ci/k8s_render_check.py --monitoring "$tmp/monitoring.yaml" "$tmp/rendered.yaml" \
  "$tmp/monitoring-core.yaml" "$tmp/rules.yaml"
"$BIN/kubernetes-validate" --strict -k "$KUBE_VERSION" "$tmp/monitoring-core.yaml"
promtool check rules "$tmp/rules.yaml"

echo "k8s-check: checkov"
"$BIN/python" .ci/k8s_render_check.py --skips-documented .checkov.yaml k8s/README.md
BC_SKIP_MAPPING=TRUE "$BIN/checkov" --skip-download --config-file .checkov.yaml -d k8s --framework kubernetes --quiet --compact
BC_SKIP_MAPPING=TRUE "$BIN/checkov" --skip-download --config-file .checkov.yaml -f Dockerfile --framework dockerfile --quiet --compact

echo "k8s-check: hadolint"
"$BIN/hadolint" Dockerfile
echo "k8s-check: k8s/gen-secrets.sh"
"$BIN/shellcheck" k8s/gen-secrets.sh
command -v openssl >/dev/null || { echo "k8s-check: openssl not found" >&2; exit 1; }
k8s/gen-secrets.sh --keep-ca "$tmp/ca" > "$tmp/secret.yaml"
"$BIN/kubernetes-validate" --strict -k "$KUBE_VERSION" "$tmp/secret.yaml"
"$BIN/python" .ci/k8s_render_check.py --secret "$tmp/secret.yaml" k8s/secret.example.yaml "$tmp/rendered.yaml"
# Certificate rotation: a new server certificate from the kept CA.
NAMESPACE=other k8s/gen-secrets.sh --ca "$tmp/ca" --out "$tmp/files"
for name in kvstore-2.kvstore-headless.other.svc.cluster.local kvstore-0.kvstore-headless \
  kvstore-headless.other.svc.cluster.local kvstore-headless \
  kvstore-master.other.svc.cluster.local kvstore-master \
  kvstore-read.other.svc.cluster.local kvstore-read localhost; do
  openssl verify -CAfile "$tmp/ca/ca.crt" -verify_hostname "$name" "$tmp/files/tls.crt" >/dev/null
done
openssl verify -CAfile "$tmp/ca/ca.crt" -verify_ip 127.0.0.1 "$tmp/files/tls.crt" >/dev/null
if openssl verify -CAfile "$tmp/ca/ca.crt" -verify_hostname kvstore-0.kvstore-headless.kvstore.svc.cluster.local \
  "$tmp/files/tls.crt" >/dev/null 2>&1; then
  echo "k8s-check: a certificate for namespace other covers namespace kvstore" >&2; exit 1
fi
BC_SKIP_MAPPING=TRUE "$BIN/checkov" --skip-download --config-file .checkov.yaml -d k8s --framework secrets --quiet --compact

echo "k8s-check: all passed"
