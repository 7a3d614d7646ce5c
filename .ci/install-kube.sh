#!/usr/bin/env bash
# Install a real kube-apiserver, etcd, kubectl and kustomize for the e2e tests,
# using nothing but Debian's package archive.
#
#   kube-apiserver  built from Debian bookworm's `kubernetes` source package
#                   (v1.20.2) with bookworm's Go 1.19 (~7 minutes on 2 cores)
#   etcd            unpacked from Debian trixie's `etcd-server` .deb
#   kubectl         unpacked from Debian trixie's `kubectl` .deb
#   kustomize       unpacked from Debian trixie's `kustomize` .deb
#
# Binaries are cached outside the git clone in
#   ${SECRET_SANTA_KUBE_DIR:-/var/cache/secret-santa-kube}/bin
# and when they are all present and answer `--version`, the script returns at
# once. The last line printed on stdout is the bin directory (everything else
# goes to stderr), so callers can do:  KUBE_BIN=$(.ci/install-kube.sh | tail -n1)
#
# The system's apt configuration is not changed: the bookworm deb-src and the
# trixie binary index live in a private apt state under $KUBE_DIR/apt. Only
# the build tools (golang-go, ...) are installed from the system's own sources.
#
# Environment:
#   SECRET_SANTA_KUBE_DIR      cache dir (default /var/cache/secret-santa-kube)
#   SECRET_SANTA_DEBIAN_MIRROR Debian mirror URI (default: taken from the
#                              machine's apt sources, else deb.debian.org)
#   SECRET_SANTA_KUBE_KEEP_BUILD=1  keep the 2 GB build tree after a build
set -euo pipefail

KUBE_DIR=${SECRET_SANTA_KUBE_DIR:-/var/cache/secret-santa-kube}
BIN="$KUBE_DIR/bin"
APT_DIR="$KUBE_DIR/apt"
BUILD_DIR="$KUBE_DIR/build"

log() { printf '[install-kube] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- is a cached binary usable? -------------------------------------------
bin_ok() {
  local name=$1 path="$BIN/$1"
  [[ -x $path ]] || return 1
  case $name in
    kubectl)   "$path" version --client >/dev/null 2>&1 ;;
    kustomize) "$path" version >/dev/null 2>&1 ;;
    *)         "$path" --version >/dev/null 2>&1 ;;
  esac
}

all_ok() {
  local b
  for b in kube-apiserver etcd kubectl kustomize; do
    bin_ok "$b" || return 1
  done
}

print_versions() {
  {
    echo "kube-apiserver: $("$BIN/kube-apiserver" --version 2>&1)"
    echo "etcd: $("$BIN/etcd" --version 2>&1 | head -n1)"
    echo "kubectl: $("$BIN/kubectl" version --client 2>&1 | head -n1)"
    echo "kustomize: $("$BIN/kustomize" version 2>&1)"
    cat "$BIN"/.*.source 2>/dev/null || true
  } >&2
}

if all_ok; then
  log "cached binaries in $BIN are usable"
  echo "$BIN"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (needs apt-get install)"

mkdir -p "$BIN"

# One install at a time (parallel CI jobs / test binaries on the same box).
exec 9>"$KUBE_DIR/.lock"
flock 9
if all_ok; then
  log "another run installed the binaries meanwhile"
  echo "$BIN"
  exit 0
fi

# --- tools from the system's own apt sources ------------------------------
# Build tools for the apiserver; openssl and python3 are used by
# tests/e2e/cluster.sh (certs, free ports).
SYS_PKGS=(ca-certificates dpkg-dev xz-utils make rsync jq openssl python3
          golang-go golang-github-modern-go-reflect2-dev)
missing=()
for p in "${SYS_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A failing third-party source should not stop us: only install's result counts.
  apt-get update -qq >"$KUBE_DIR/apt-install.log" 2>&1 \
    || log "apt-get update reported errors (see $KUBE_DIR/apt-install.log); trying the install anyway"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$KUBE_DIR/apt-install.log" 2>&1 \
    || { tail -n 30 "$KUBE_DIR/apt-install.log" >&2; die "apt-get install failed"; }
fi

# --- private apt state: bookworm deb-src + trixie binaries ----------------
# Take the Debian mirror (and its signing keyring) from the machine's own
# sources, deb822 (*.sources) first, then one-line format.
detect_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f ]] || continue
    # Print "URI SIGNED-BY" of the first stanza that serves suite bookworm.
    awk '
      function flush() {
        if (uris != "" && suites ~ /(^|[ \t])bookworm([ \t]|$)/ && !done) {
          split(uris, u, /[ \t]+/); print u[1], signed; done = 1
        }
        uris = ""; suites = ""; signed = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^URIs:/      { sub(/^URIs:[ \t]*/, "");      uris = $0 }
      /^Suites:/    { sub(/^Suites:[ \t]*/, "");    suites = $0 }
      /^Signed-By:/ { sub(/^Signed-By:[ \t]*/, ""); signed = $0 }
      END { flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -e $f ]] || continue
    # deb [opts] URI bookworm main ...
    sed -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }'
  done
}

mirror=${SECRET_SANTA_DEBIAN_MIRROR:-}
keyring=""
if [[ -z $mirror ]]; then
  read -r mirror keyring < <(detect_mirror | head -n1) || true
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
# Signed-By may be inline key material rather than a path: only keep a path.
if [[ -z $keyring || ! -f $keyring ]]; then
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
fi
signed_by=""
[[ -f $keyring ]] && signed_by="[signed-by=$keyring] "
log "Debian mirror: $mirror"

mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
cat >"$APT_DIR/sources.list" <<EOF
deb-src ${signed_by}$mirror bookworm main
deb ${signed_by}$mirror trixie main
EOF
APT_OPTS=(
  -o "Dir::Etc::sourcelist=$APT_DIR/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::Cache=$APT_DIR/cache"
  -o "APT::Get::List-Cleanup=0"
  -o "APT::Sandbox::User=root"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
)
log "apt-get update (private state in $APT_DIR)"
apt-get "${APT_OPTS[@]}" -qq update >&2

install_bin() { # src name
  install -m 0755 "$1" "$BIN/.$2.tmp"
  mv -f "$BIN/.$2.tmp" "$BIN/$2"
}

# --- etcd, kubectl, kustomize from trixie .debs ---------------------------
for pair in etcd-server:etcd kubectl:kubectl kustomize:kustomize; do
  pkg=${pair%%:*} name=${pair##*:}
  bin_ok "$name" && continue
  tmp=$(mktemp -d "$KUBE_DIR/deb.XXXXXX")
  log "apt-get download $pkg/trixie"
  (cd "$tmp" && apt-get "${APT_OPTS[@]}" -qq download "$pkg/trixie" >&2)
  deb=$(ls "$tmp"/*.deb)
  log "unpacking $(basename "$deb")"
  dpkg-deb -x "$deb" "$tmp/root"
  install_bin "$tmp/root/usr/bin/$name" "$name"
  echo "$name from Debian trixie $pkg $(dpkg-deb -f "$deb" Version)" >"$BIN/.$name.source"
  rm -rf "$tmp"
  bin_ok "$name" || die "$name from $pkg does not run"
done

# --- kube-apiserver from bookworm's kubernetes source ---------------------
if ! bin_ok kube-apiserver; then
  rm -rf "$BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  log "apt-get source kubernetes/bookworm"
  (cd "$BUILD_DIR" && apt-get "${APT_OPTS[@]}" -qq source kubernetes/bookworm >&2)
  src=$(find "$BUILD_DIR" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [[ -n $src && -f $src/Makefile ]] || die "kubernetes source not unpacked in $BUILD_DIR"

  # Vendored reflect2 v1.0.1 breaks with Go >= 1.18; Debian's 1.0.2 works.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -rL /usr/share/gocode/src/github.com/modern-go/reflect2 \
    "$src/vendor/github.com/modern-go/reflect2"

  # Upstream version (the part after "really" in Debian's version, if any).
  up=$(basename "$src"); up=${up#kubernetes-}; up=${up##*really}
  log "building kube-apiserver v$up with $(go version) (takes ~7 min on 2 cores)"
  start=$(date +%s)
  (
    cd "$src"
    export GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS='' GOTOOLCHAIN=local
    export HOME="$BUILD_DIR/home"
    # There is no .git; don't let hack/lib/version.sh find an enclosing repo.
    export GIT_CEILING_DIRECTORIES="$BUILD_DIR"
    export KUBE_GIT_VERSION="v$up" KUBE_GIT_TREE_STATE=clean
    # (Only a fallback: the orig tarball carries its own archive version info.)
    KUBE_GIT_MAJOR=${up%%.*}
    KUBE_GIT_MINOR=$(cut -d. -f2 <<<"$up")
    export KUBE_GIT_MAJOR KUBE_GIT_MINOR
    mkdir -p "$HOME"
    nice -n 10 make WHAT=cmd/kube-apiserver >"$BUILD_DIR/build.log" 2>&1 \
      || { tail -n 50 "$BUILD_DIR/build.log" >&2; exit 1; }
  ) || die "kube-apiserver build failed (log: $BUILD_DIR/build.log)"
  log "kube-apiserver built in $(($(date +%s) - start))s"
  install_bin "$src/_output/bin/kube-apiserver" kube-apiserver
  echo "kube-apiserver built from Debian source $(basename "$(ls "$BUILD_DIR"/*.dsc)" .dsc) with $(go version)" \
    >"$BIN/.kube-apiserver.source"
  bin_ok kube-apiserver || die "built kube-apiserver does not run"
  if [[ ${SECRET_SANTA_KUBE_KEEP_BUILD:-0} != 1 ]]; then
    rm -rf "$BUILD_DIR"
  fi
fi

all_ok || die "some binaries in $BIN are still unusable"
print_versions
echo "$BIN"
