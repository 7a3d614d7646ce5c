#!/bin/sh
# The certificate Jobs of components/self-managed-certs (read its
# kustomization.yaml for the whole story). POSIX sh + kubectl + base64.
#
# Input: $CERTS_DIR holds a fresh ca.crt, tls.crt, tls.key from
# `secret-santa certs`. $NAMESPACE, $SECRET and $WEBHOOK name what to
# write. $ROTATE=true replaces an existing certificate; otherwise an
# existing Secret is kept and only a missing caBundle is filled in.
#
# Never prints key material.
set -eu

: "${CERTS_DIR:?}" "${NAMESPACE:?}" "${SECRET:?}" "${WEBHOOK:?}"
ROTATE=${ROTATE:-false}

b64() { base64 | tr -d '\n'; }

# Sets caBundle (base64 PEM, $1) on every webhook of the configuration.
patch_ca_bundle() {
  count=$(kubectl get mutatingwebhookconfiguration "$WEBHOOK" -o 'jsonpath={range .webhooks[*]}x{end}' | wc -c)
  ops=""
  i=0
  while [ "$i" -lt "$count" ]; do
    ops="${ops:+$ops,}{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$1\"}"
    i=$((i + 1))
  done
  [ -n "$ops" ] || { echo "MutatingWebhookConfiguration $WEBHOOK has no webhooks" >&2; exit 1; }
  kubectl patch mutatingwebhookconfiguration "$WEBHOOK" --type=json -p "[$ops]" >/dev/null
  echo "caBundle of MutatingWebhookConfiguration $WEBHOOK set"
}

# Writes the Secret from $CERTS_DIR with `kubectl create` or `kubectl replace`
# (not `apply`, which would copy the key into an annotation).
store_secret() {
  kubectl -n "$NAMESPACE" create secret generic "$SECRET" --type=kubernetes.io/tls \
    --from-file=ca.crt="$CERTS_DIR/ca.crt" \
    --from-file=tls.crt="$CERTS_DIR/tls.crt" \
    --from-file=tls.key="$CERTS_DIR/tls.key" \
    --dry-run=client -o yaml | kubectl "$1" -f - >/dev/null
  echo "Secret $NAMESPACE/$SECRET: $1 done"
}

for f in ca.crt tls.crt tls.key; do
  [ -s "$CERTS_DIR/$f" ] || { echo "$CERTS_DIR/$f is missing" >&2; exit 1; }
done

exists=$(kubectl -n "$NAMESPACE" get secret "$SECRET" --ignore-not-found -o name)
if [ -z "$exists" ]; then
  # First install: trust the CA, then publish the certificate the pods wait for.
  patch_ca_bundle "$(b64 <"$CERTS_DIR/ca.crt")"
  store_secret create
  exit 0
fi

previous_ca=$(kubectl -n "$NAMESPACE" get secret "$SECRET" -o 'jsonpath={.data.ca\.crt}')
if [ -z "$previous_ca" ]; then
  echo "Secret $NAMESPACE/$SECRET exists but has no ca.crt (not made by this Job?); delete it or use another TLS setup" >&2
  exit 1
fi

if [ "$ROTATE" = true ]; then
  # Trust the new CA and the previous one while the pods still serve the
  # previous certificate, then replace it.
  patch_ca_bundle "$({ cat "$CERTS_DIR/ca.crt"; printf '%s' "$previous_ca" | base64 -d; } | b64)"
  store_secret replace
  exit 0
fi

current=$(kubectl get mutatingwebhookconfiguration "$WEBHOOK" -o 'jsonpath={.webhooks[0].clientConfig.caBundle}')
if [ -z "$current" ]; then
  patch_ca_bundle "$previous_ca"
else
  echo "Secret $NAMESPACE/$SECRET and caBundle present: nothing to do"
fi
