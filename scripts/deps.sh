#!/usr/bin/env bash
# Installs what roomproxy's tests and benchmarks need on a fresh Debian
# machine: redis-server, redis-cli and redis-benchmark (the upstream stand-in),
# twemproxy (benchmark comparison) and Prometheus with promtool.
# Safe to run again: it installs only what is missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
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
