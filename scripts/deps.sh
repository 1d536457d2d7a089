#!/usr/bin/env bash
# Install what microstream needs on Debian 12, skipping what is present.
#   scripts/deps.sh run    build + run the hub and examples
#   scripts/deps.sh test   everything the test suite uses as well
set -euo pipefail
mode=${1:-test}
cd "$(dirname "$0")/.."

pkgs=(gcc libc6-dev pkg-config meson ninja-build python3 libuv1-dev libev-dev libevent-dev
      libwslay-dev nettle-dev libmsgpack-dev libjansson-dev libcjson-dev libsqlite3-dev
      libhiredis-dev libc-ares-dev libgnutls28-dev ca-certificates)
if [ "$mode" = test ]; then
  pkgs+=(clang libclang-rt-14-dev python3-websockets python3-msgpack
         nodejs npm chromium curl prometheus
         redis-server gnutls-bin openssl)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A node that is already on PATH (not from Debian) is good enough.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}")
  missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$mode" = test ] && [ -f package-lock.json ]; then
  # Reinstall only when the lock file changed since the last install.
  stamp=node_modules/.lock-stamp
  if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json "$stamp"
  fi
fi
