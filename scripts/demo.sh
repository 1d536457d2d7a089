#!/usr/bin/env bash
# Install what is missing, build, and run the hub with the example services
# (auth-service calling jwt-service, a caller, services that log) and the
# live log page. Ctrl-C stops everything.
#   PORT=7400 (default)   HOST=127.0.0.1 (default)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh run
meson setup build --buildtype=debugoptimized >/dev/null 2>&1 || true
ninja -C build

host=${HOST:-127.0.0.1}
port=${PORT:-7400}
hub="ws://$host:$port/ws"
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

build/tools/microstream-hub --listen "$host:$port" &
pids+=($!)
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
  sleep 0.1
done
build/examples/jwt_service --hub "$hub" & pids+=($!)
build/examples/auth_service --hub "$hub" & pids+=($!)
build/examples/caller --hub "$hub" & pids+=($!)

cat <<MSG

  microstream is running.
    live log page:  http://$host:$port/
    services:       http://$host:$port/api/services
    metrics:        http://$host:$port/metrics
    call a service: build/tools/ms-req --hub $hub auth-service authenticate '{"user":"alice","password":"secret"}'

  Ctrl-C stops everything.

MSG
wait
