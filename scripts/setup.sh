#!/usr/bin/env bash
# Installs what Ballast's tests, benchmarks and compile step need on a fresh
# machine that has only Node/npm: Deno 2.9.6 (from npm) and the Debian
# packages for real NBD clients, etcd, filesystems, Prometheus (promtool) and zsh.
#
# Idempotent and quiet: it does nothing and prints nothing when everything is
# already there; it prints one line per thing it installs, and the captured
# output of a step that fails. Works as root without sudo (CI runs as root);
# uses sudo only when not root and sudo exists.
set -euo pipefail

DENO_VERSION="2.9.6"
DEB_PACKAGES=(
  libnbd-bin python3-libnbd qemu-utils fio nbdkit nbd-client
  etcd-server etcd-client fuse3 e2fsprogs iproute2 util-linux prometheus zsh
)

SUDO=()
if [[ "$(id -u)" != "0" ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    echo "setup.sh: not root and no sudo: cannot install packages" >&2
    exit 1
  fi
fi

# Runs a command quietly; on failure prints its output and the command, then exits.
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    echo "$out" >&2
    echo "setup.sh: failed: $*" >&2
    exit 1
  fi
}

# --- Deno -------------------------------------------------------------------
current_deno=""
if command -v deno >/dev/null 2>&1; then
  current_deno="$(deno --version 2>/dev/null | head -n1 | awk '{print $2}')" || true
fi
if [[ "$current_deno" != "$DENO_VERSION" ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: deno $DENO_VERSION is missing and npm is not installed" >&2
    exit 1
  fi
  quiet "${SUDO[@]}" npm install -g --no-audit --no-fund "deno@$DENO_VERSION"
  hash -r
  installed="$(deno --version 2>/dev/null | head -n1 | awk '{print $2}')" || true
  if [[ "$installed" != "$DENO_VERSION" ]]; then
    echo "setup.sh: installed deno@$DENO_VERSION with npm but 'deno --version' says '$installed'" \
      "(is $(npm prefix -g)/bin first on PATH?)" >&2
    exit 1
  fi
  echo "setup.sh: installed deno $DENO_VERSION (was: ${current_deno:-none})"
fi

# --- Debian packages ----------------------------------------------------------
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]} > 0)); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: missing packages ${missing[*]} and no apt-get to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  quiet "${SUDO[@]}" apt-get update -q
  quiet "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  echo "setup.sh: installed Debian packages: ${missing[*]}"
fi
