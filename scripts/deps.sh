#!/usr/bin/env bash
# Installs what roomproxy's tests and benchmarks need on a fresh Debian
# machine: redis-server, redis-cli and redis-benchmark (the upstream stand-in),
# Prometheus and promtool (the metrics test scrapes with a real Prometheus),
# iproute2 (the image smoke test's network namespace),
# twemproxy (benchmark comparison, with --bench), and builds FerretDB (the
# MongoDB-wire server for the room store tests) from the Go module proxy.
# Safe to run again: it installs only what is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v promtool >/dev/null || need+=(prometheus)
command -v ip >/dev/null || need+=(iproute2) # scripts/image-smoke.sh's network namespace
if [ "${1:-}" = "--bench" ]; then
  command -v nutcracker >/dev/null || need+=(nutcracker)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts a redis-server on 6379 after installing it; the tests start
# their own on free ports and do not need it.

# FerretDB v1 through the small wrapper module in .ci/ferretdb (its own
# go.mod keeps FerretDB's dependencies out of roomproxy's). The first build
# takes a few minutes; later runs reuse the binary.
if [ "${1:-}" != "--bench" ] && [ ! -x "$root/.ci/ferretdb/bin/ferretdb" ]; then
  echo "deps: building FerretDB (first time: a few minutes)"
  (cd "$root/.ci/ferretdb" && go build -o bin/ferretdb .)
fi
