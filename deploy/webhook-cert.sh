#!/usr/bin/env bash
# Creates a CA and a serving certificate for the sidecar injection webhook,
# stores them as the Secret legate-system/legate-webhook-tls, and puts the
# CA into the MutatingWebhookConfiguration's caBundle. Run it after
# `kubectl apply -k deploy/control-plane`, and again to rotate the
# certificate (then restart the control plane, which reads it at start).
# Needs openssl and kubectl. With --out DIR it only writes the files.
set -euo pipefail

namespace=legate-system
service=legate-control-plane
out=""
if [[ "${1:-}" == "--out" ]]; then
  out="${2:?--out needs a directory}"
fi
dir="${out:-$(mktemp -d)}"
mkdir -p "$dir"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=legate-webhook-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$service.$namespace.svc" -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\n' "$service" "$namespace" "$service" "$namespace" > "$dir/san.ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 365 -extfile "$dir/san.ext" -out "$dir/tls.crt" 2>/dev/null

if [[ -n "$out" ]]; then
  echo "wrote $dir/tls.crt, $dir/tls.key and $dir/ca.crt"
  exit 0
fi

kubectl -n "$namespace" create secret tls legate-webhook-tls \
  --cert="$dir/tls.crt" --key="$dir/tls.key" --dry-run=client -o yaml | kubectl apply -f -
ca_bundle="$(base64 < "$dir/ca.crt" | tr -d '\n')"
kubectl patch mutatingwebhookconfiguration legate-sidecar-injector --type=json -p "[
  {\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/caBundle\", \"value\": \"$ca_bundle\"},
  {\"op\": \"add\", \"path\": \"/webhooks/1/clientConfig/caBundle\", \"value\": \"$ca_bundle\"}
]"
rm -rf "$dir"
echo "webhook certificate installed; the CA is in the webhook configuration"
