#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine (idempotent, quick
# when already done): kube-apiserver + etcd + kubectl + kustomize.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v openssl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

# kube-apiserver, etcd, kubectl, kustomize under /var/cache/secret-santa-kube/bin
bash .ci/install-kube.sh >/dev/null
