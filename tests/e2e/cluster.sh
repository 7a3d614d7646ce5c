#!/usr/bin/env bash
# A throw-away Kubernetes control plane (etcd + kube-apiserver, no
# controller-manager, no scheduler, no kubelet) on 127.0.0.1 for e2e tests.
#
#   tests/e2e/cluster.sh start DIR   start it, wait until ready, print env
#   tests/e2e/cluster.sh stop DIR    stop it (idempotent; leaves DIR's files)
#   tests/e2e/cluster.sh env DIR     print the env of a started cluster
#
# Binaries come from $KUBE_BIN_DIR, else
# ${SECRET_SANTA_KUBE_DIR:-/var/cache/secret-santa-kube}/bin, as installed by
# .ci/install-kube.sh (kube-apiserver, etcd, kubectl).
#
# Files written in DIR:
#   kubeconfig           admin kubeconfig (client cert, O=system:masters)
#   cluster.env          KEY=VALUE lines (shell-sourceable), also printed on
#                        stdout by `start` and `env`:
#                          KUBECONFIG, KUBE_APISERVER_URL, KUBE_CA_FILE,
#                          KUBE_WEBHOOK_CERT_FILE, KUBE_WEBHOOK_KEY_FILE,
#                          ETCD_URL, KUBECTL, KUBE_BIN_DIR
#   pki/ca.crt ca.key    cluster CA (signs everything below)
#   pki/apiserver.{crt,key}   serving cert: 127.0.0.1, localhost, 10.0.0.1, kubernetes*
#   pki/admin.{crt,key}       client cert CN=admin, O=system:masters
#   pki/webhook.{crt,key}     spare serving cert for a webhook on 127.0.0.1 /
#                             localhost (use pki/ca.crt as the caBundle)
#   pki/sa.{key,pub}          service-account token signing key pair
#   etcd-data/           etcd data dir (wiped by every `start`)
#   etcd.log kube-apiserver.log
#   etcd.pid kube-apiserver.pid
#
# Everything listens on 127.0.0.1 only, on free ports picked at start, so
# several clusters (one per DIR) can run side by side.
set -euo pipefail

usage() { echo "usage: $0 start|stop|env DIR" >&2; exit 2; }
log() { printf '[cluster] %s\n' "$*" >&2; }

[[ $# -eq 2 ]] || usage
cmd=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)

KUBE_BIN_DIR=${KUBE_BIN_DIR:-${SECRET_SANTA_KUBE_DIR:-/var/cache/secret-santa-kube}/bin}
KUBECTL="$KUBE_BIN_DIR/kubectl"
PKI="$DIR/pki"

# --- process helpers ------------------------------------------------------
# pid_alive NAME: the pid in DIR/NAME.pid is running and is still NAME.
pid_alive() {
  local f="$DIR/$1.pid" pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  local cmdline
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$1"* ]] || return 1
  # a zombie counts as gone
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

stop_one() {
  local name=$1 pid i
  if pid_alive "$name"; then
    pid=$(<"$DIR/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      pid_alive "$name" || break
      sleep 0.1
    done
    if pid_alive "$name"; then
      log "$name ($pid) ignored SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pid_alive "$name" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$DIR/$name.pid"
}

do_stop() {
  stop_one kube-apiserver
  stop_one etcd
}

# --- free loopback ports --------------------------------------------------
# Prints N distinct ports that nothing listens on right now.
free_ports() {
  local n=$1
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$n" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
  else
    local ports=() p
    while ((${#ports[@]} < n)); do
      p=$((20000 + RANDOM % 40000))
      [[ " ${ports[*]} " == *" $p "* ]] && continue
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        ports+=("$p")
      fi
    done
    echo "${ports[*]}"
  fi
}

# --- certificates ---------------------------------------------------------
# sign NAME SUBJECT EXTENSIONS
sign() {
  local name=$1 subj=$2 ext=$3
  openssl req -new -nodes -newkey rsa:2048 -keyout "$PKI/$name.key" \
    -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  [[ -f $PKI/admin.crt ]] && return 0
  mkdir -p "$PKI"
  openssl req -x509 -new -nodes -newkey rsa:2048 -keyout "$PKI/ca.key" \
    -out "$PKI/ca.crt" -days 3650 -sha256 -subj "/CN=secret-santa-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  local server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth'
  sign apiserver "/CN=kube-apiserver" "$server_ext
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign webhook "/CN=secret-santa-webhook" "$server_ext
subjectAltName=IP:127.0.0.1,DNS:localhost"
  sign admin "/O=system:masters/CN=admin" 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

write_env() { # apiserver_port etcd_port
  cat >"$DIR/cluster.env" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBE_APISERVER_URL=https://127.0.0.1:$1
KUBE_CA_FILE=$PKI/ca.crt
KUBE_WEBHOOK_CERT_FILE=$PKI/webhook.crt
KUBE_WEBHOOK_KEY_FILE=$PKI/webhook.key
ETCD_URL=http://127.0.0.1:$2
KUBECTL=$KUBECTL
KUBE_BIN_DIR=$KUBE_BIN_DIR
EOF
}

write_kubeconfig() { # apiserver_port
  local kc="$DIR/kubeconfig"
  rm -f "$kc"
  "$KUBECTL" config --kubeconfig "$kc" set-cluster e2e \
    --server "https://127.0.0.1:$1" --certificate-authority "$PKI/ca.crt" \
    --embed-certs=true >/dev/null
  "$KUBECTL" config --kubeconfig "$kc" set-credentials admin \
    --client-certificate "$PKI/admin.crt" --client-key "$PKI/admin.key" \
    --embed-certs=true >/dev/null
  "$KUBECTL" config --kubeconfig "$kc" set-context e2e --cluster e2e \
    --user admin --namespace default >/dev/null
  "$KUBECTL" config --kubeconfig "$kc" use-context e2e >/dev/null
  chmod 600 "$kc"
}

# Start a daemon detached from our stdio (so a caller capturing our output
# does not wait for it) and from our session (so it outlives us).
spawn() { # NAME ARGS...
  local name=$1 pidfile="$DIR/$1.pid" i
  shift
  rm -f "$pidfile"
  # The child writes its own pid, then execs the daemon (same pid), so the pid
  # file is right whether or not setsid had to fork. No proxy for anything:
  # webhooks and etcd are on loopback.
  # shellcheck disable=SC2016 # expanded by the child bash
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" \
    env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
    -u all_proxy -u ALL_PROXY NO_PROXY='*' "$@" \
    </dev/null >"$DIR/$name.log" 2>&1 &
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.05
  done
  fail_start "$name did not start"
}

fail_start() {
  log "ERROR: $*"
  local f
  for f in etcd kube-apiserver; do
    if [[ -f $DIR/$f.log ]]; then
      log "--- last lines of $DIR/$f.log"
      tail -n 25 "$DIR/$f.log" >&2
    fi
  done
  do_stop
  exit 1
}

do_start() {
  local b
  for b in kube-apiserver etcd kubectl; do
    [[ -x $KUBE_BIN_DIR/$b ]] || {
      log "missing $KUBE_BIN_DIR/$b: run .ci/install-kube.sh (or set KUBE_BIN_DIR)"
      exit 1
    }
  done
  command -v openssl >/dev/null || { log "openssl is required"; exit 1; }
  if pid_alive etcd || pid_alive kube-apiserver; then
    log "a cluster is already running in $DIR; stop it first"
    exit 1
  fi

  make_pki
  local ports etcd_port peer_port api_port
  read -r etcd_port peer_port api_port < <(free_ports 3)

  # Every start is a new, empty cluster (PKI is kept and reused).
  rm -rf "$DIR/etcd-data"
  mkdir -p "$DIR/etcd-data"
  chmod 700 "$DIR/etcd-data"
  spawn etcd "$KUBE_BIN_DIR/etcd" \
    --name e2e \
    --data-dir "$DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --log-level warn

  # Wait for etcd's client port (the apiserver retries anyway, but a dead
  # etcd is better reported as such).
  local i
  for ((i = 0; i < 100; i++)); do
    pid_alive etcd || fail_start "etcd exited"
    (exec 3<>"/dev/tcp/127.0.0.1/$etcd_port") 2>/dev/null && break
    sleep 0.1
  done

  spawn kube-apiserver "$KUBE_BIN_DIR/kube-apiserver" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --insecure-port=0 \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --cert-dir="$PKI" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=RBAC \
    --enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false \
    --v=1

  write_kubeconfig "$api_port"
  write_env "$api_port" "$etcd_port"

  # Ready = /readyz ok and the `default` namespace exists (the apiserver's
  # bootstrap controller creates it shortly after start).
  local deadline=$((SECONDS + ${KUBE_START_TIMEOUT:-90})) out
  while :; do
    pid_alive etcd || fail_start "etcd exited"
    pid_alive kube-apiserver || fail_start "kube-apiserver exited"
    out=$("$KUBECTL" --kubeconfig "$DIR/kubeconfig" --request-timeout=5s \
      get --raw /readyz 2>/dev/null || true)
    if [[ $out == ok ]] &&
      "$KUBECTL" --kubeconfig "$DIR/kubeconfig" --request-timeout=5s \
        get namespace default >/dev/null 2>&1; then
      break
    fi
    ((SECONDS < deadline)) || fail_start "kube-apiserver not ready after ${KUBE_START_TIMEOUT:-90}s"
    sleep 0.5
  done
  log "ready: https://127.0.0.1:$api_port (etcd 127.0.0.1:$etcd_port), kubeconfig $DIR/kubeconfig"
  cat "$DIR/cluster.env"
}

case $cmd in
  start) do_start ;;
  stop) do_stop ;;
  env)
    [[ -f $DIR/cluster.env ]] || { log "no cluster in $DIR"; exit 1; }
    cat "$DIR/cluster.env"
    ;;
  *) usage ;;
esac
