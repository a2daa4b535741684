#!/usr/bin/env bash
# Generates the credentials of the Secret `kvstore-secrets` with openssl
# alone (no kubectl, no cfssl): a CA, a server certificate signed by it, and
# three random tokens. See docs/SECURITY.md.
#
#   k8s/gen-secrets.sh | kubectl apply -f -       # first deploy (after
#                                                 # k8s/namespace.yaml)
#   k8s/gen-secrets.sh --out DIR                  # the six files into DIR
#   k8s/gen-secrets.sh --out DIR --manifest       # both
#
# Options:
#   --out DIR      write client-token, admin-token, readonly-token, ca.crt,
#                  tls.crt, tls.key into DIR (created, mode 700; existing
#                  files are never overwritten)
#   --manifest     print the Secret as YAML on stdout (the default without
#                  --out), like `kubectl create secret generic --dry-run=client
#                  -o yaml`
#   --keep-ca DIR  also write the new CA's ca.crt and ca.key into DIR, to
#                  sign later server certificates with --ca. Keep it off the
#                  cluster: the Secret holds only ca.crt.
#   --ca DIR       sign with the CA in DIR (ca.crt, ca.key) instead of making
#                  a new one: certificate rotation (docs/SECURITY.md)
#
# Environment:
#   NAMESPACE       namespace of the deployment (default kvstore): the
#                   certificate's names and the Secret's namespace
#   CLUSTER_DOMAIN  cluster DNS domain (default cluster.local)
#   PODS            StatefulSet replicas given short names
#                   kvstore-N.kvstore-headless (default 3); the full names
#                   *.kvstore-headless.NAMESPACE.svc.CLUSTER_DOMAIN cover
#                   any number
#   EXTRA_SANS      more subject alternative names, comma-separated, each
#                   DNS:name or IP:address (e.g. "IP:10.0.0.5,DNS:kv.example.com")
#   DAYS            server certificate validity (default 365)
#   CA_DAYS         new CA validity (default 3650)
#
# The server certificate names every way a client reaches a pod:
#   *.kvstore-headless.NS.svc.CLUSTER_DOMAIN, *.kvstore-headless.NS.svc,
#   *.kvstore-headless.NS, kvstore-N.kvstore-headless (N < PODS),
#   kvstore-headless.NS.svc.CLUSTER_DOMAIN, kvstore-headless.NS.svc,
#   kvstore-headless.NS, kvstore-headless (the Service's own name, which
#   resolves to every pod: the backup CronJob finds the pods through it),
#   kvstore-master.NS.svc.CLUSTER_DOMAIN, kvstore-master.NS.svc,
#   kvstore-master.NS, kvstore-master, the same four of kvstore-read (the
#   Service of every ready pod, for reads), localhost, 127.0.0.1, ::1
# (127.0.0.1: `kubectl exec kvstore-N -- kvstore ...` and port-forward).
# Keys are ECDSA P-256 in PKCS#8; tokens are 32 random bytes in hex.
set -euo pipefail
umask 077

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "gen-secrets: $*" >&2
  exit 1
}

out="" manifest=0 keep_ca="" use_ca=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    --manifest) manifest=1; shift ;;
    --keep-ca) [ $# -ge 2 ] || usage; keep_ca="$2"; shift 2 ;;
    --ca) [ $# -ge 2 ] || usage; use_ca="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "gen-secrets: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$out" ] || manifest=1
[ -z "$keep_ca" ] || [ -z "$use_ca" ] || die "--keep-ca and --ca exclude each other"

NAMESPACE="${NAMESPACE:-kvstore}"
CLUSTER_DOMAIN="${CLUSTER_DOMAIN:-cluster.local}"
PODS="${PODS:-3}"
EXTRA_SANS="${EXTRA_SANS:-}"
DAYS="${DAYS:-365}"
CA_DAYS="${CA_DAYS:-3650}"
SECRET_NAME=kvstore-secrets
STS=kvstore
HEADLESS=kvstore-headless
MASTER_SVC=kvstore-master
READ_SVC=kvstore-read

command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
[[ "$NAMESPACE" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
  || die "NAMESPACE=$NAMESPACE is not a Kubernetes namespace name"
[[ "$CLUSTER_DOMAIN" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] \
  || die "CLUSTER_DOMAIN=$CLUSTER_DOMAIN is not a DNS domain"
for n in PODS DAYS CA_DAYS; do
  [[ "${!n}" =~ ^[1-9][0-9]{0,4}$ ]] || die "$n=${!n} is not a positive number"
done
extra=()
if [ -n "$EXTRA_SANS" ]; then
  IFS=, read -r -a extra <<<"$EXTRA_SANS"
  for san in "${extra[@]}"; do
    [[ "$san" =~ ^(DNS:[A-Za-z0-9*]([-A-Za-z0-9.]*[A-Za-z0-9])?|IP:[0-9A-Fa-f:.]+)$ ]] \
      || die "EXTRA_SANS entry '$san' is not DNS:name or IP:address"
  done
fi
if [ -n "$use_ca" ]; then
  [ -r "$use_ca/ca.crt" ] && [ -r "$use_ca/ca.key" ] || die "--ca $use_ca: needs ca.crt and ca.key"
fi
files=(client-token admin-token readonly-token ca.crt tls.crt tls.key)
if [ -n "$out" ]; then
  for f in "${files[@]}"; do
    [ ! -e "$out/$f" ] || die "$out/$f exists; not overwriting it"
  done
fi
if [ -n "$keep_ca" ]; then
  for f in ca.crt ca.key; do
    [ ! -e "$keep_ca/$f" ] || die "$keep_ca/$f exists; not overwriting it"
  done
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Subject alternative names of the server certificate.
svc="$NAMESPACE.svc"
sans=(
  "DNS:*.$HEADLESS.$svc.$CLUSTER_DOMAIN" "DNS:*.$HEADLESS.$svc" "DNS:*.$HEADLESS.$NAMESPACE"
  "DNS:$HEADLESS.$svc.$CLUSTER_DOMAIN" "DNS:$HEADLESS.$svc" "DNS:$HEADLESS.$NAMESPACE" "DNS:$HEADLESS"
  "DNS:$MASTER_SVC.$svc.$CLUSTER_DOMAIN" "DNS:$MASTER_SVC.$svc" "DNS:$MASTER_SVC.$NAMESPACE" "DNS:$MASTER_SVC"
  "DNS:$READ_SVC.$svc.$CLUSTER_DOMAIN" "DNS:$READ_SVC.$svc" "DNS:$READ_SVC.$NAMESPACE" "DNS:$READ_SVC"
)
# A wildcard needs two labels after it, so the short pod names are listed.
for ((n = 0; n < PODS; n++)); do sans+=("DNS:$STS-$n.$HEADLESS"); done
sans+=("DNS:localhost" "IP:127.0.0.1" "IP:::1" ${extra[@]+"${extra[@]}"})
san_line="$(IFS=,; echo "${sans[*]}")"

cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $san_line
EOF

quiet() {
  local log="$work/openssl.log"
  "$@" >"$log" 2>&1 || { cat "$log" >&2; die "failed: $*"; }
}
genkey() { quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

if [ -n "$use_ca" ]; then
  cp "$use_ca/ca.crt" "$work/ca.crt"
  cp "$use_ca/ca.key" "$work/ca.key"
else
  genkey "$work/ca.key"
  quiet openssl req -config "$work/openssl.cnf" -new -x509 -sha256 -days "$CA_DAYS" \
    -key "$work/ca.key" -subj "/O=kvstore/CN=kvstore CA $NAMESPACE $(date -u +%Y%m%d%H%M%S)" \
    -extensions ca_ext -out "$work/ca.crt"
fi
genkey "$work/tls.key"
quiet openssl req -config "$work/openssl.cnf" -new -sha256 -key "$work/tls.key" \
  -subj "/O=kvstore/CN=$MASTER_SVC.$svc.$CLUSTER_DOMAIN" -out "$work/tls.csr"
quiet openssl x509 -req -sha256 -days "$DAYS" -in "$work/tls.csr" \
  -CA "$work/ca.crt" -CAkey "$work/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
  -extfile "$work/openssl.cnf" -extensions server_ext -out "$work/tls.crt"
quiet openssl verify -CAfile "$work/ca.crt" "$work/tls.crt"
for t in client-token admin-token readonly-token; do
  openssl rand -hex 32 >"$work/$t"
done

if [ -n "$out" ]; then
  mkdir -p "$out"
  for f in "${files[@]}"; do cp "$work/$f" "$out/$f"; done
  echo "gen-secrets: wrote ${files[*]} into $out" >&2
fi
if [ -n "$keep_ca" ]; then
  mkdir -p "$keep_ca"
  cp "$work/ca.crt" "$work/ca.key" "$keep_ca/"
  echo "gen-secrets: CA certificate and key in $keep_ca (keep ca.key off the cluster)" >&2
elif [ -z "$use_ca" ]; then
  echo "gen-secrets: the CA key was not kept (--keep-ca DIR keeps it for signing later certificates)" >&2
fi
if [ "$manifest" = 1 ]; then
  echo "# Generated by k8s/gen-secrets.sh $(date -u +%Y-%m-%dT%H:%M:%SZ). Do not commit it."
  echo "# The server certificate is valid for $DAYS days; rotation: docs/SECURITY.md."
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $SECRET_NAME
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: kvstore
type: Opaque
data:
EOF
  for f in "${files[@]}"; do
    echo "  $f: $(openssl base64 -A <"$work/$f")"
  done
fi
