#!/usr/bin/env bash
# The game-room workload of cmd/roomload, in one run:
#   direct     against redis-server itself
#   roomproxy  through this repository's proxy in front of that redis-server
# with the same roomload flags, then a side-by-side summary: upstream commands
# per client command, write and read latency, stale reads and lost final
# states.
#
# Usage: bash bench/roomload.sh [roomload flags]
#   e.g. bash bench/roomload.sh -rooms 200 -writes 20 -duration 30s
# See bench/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash bench/roomload.sh [roomload flags]

Runs roomload (go run ./cmd/roomload -h lists its flags) against a fresh
redis-server directly, then through roomproxy in front of it, with the same
flags, and prints both side by side. The script sets -addr, -upstream, -json
and -mongo itself.

environment:
  MONGO_URL, MONGO_DB  roomproxy's room store (also checked by roomload with
                       -mongo); without MONGO_URL roomproxy uses its embedded
                       store in a temp dir
  ROOMPROXY_BIN=PATH   use this roomproxy binary instead of building
                       ./cmd/roomproxy from the work tree
  KEEP_LOGS=1          keep the temp dir with logs and JSON reports (it is
                       always kept when the script fails)
  Other roomproxy variables (DEBOUNCE_WINDOW_MS, ...) pass through to it.
EOF
}

die() {
  echo "roomload.sh: error: $*" >&2
  exit 1
}
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

ARGS=()
for a in "$@"; do
  case "$a" in
    -h | --help | -help) usage; exit 0 ;;
    -addr | -addr=* | --addr | --addr=* | -upstream | -upstream=* | --upstream | --upstream=* | \
      -json | -json=* | --json | --json=* | -mongo | -mongo=* | --mongo | --mongo=* | \
      -mongo-db | -mongo-db=* | --mongo-db | --mongo-db=*)
      die "$a is set by the script (see --help)" ;;
  esac
  ARGS+=("$a")
done
if [ -n "${ROOMPROXY_BIN:-}" ] && [[ "$ROOMPROXY_BIN" != /* ]]; then ROOMPROXY_BIN="$PWD/$ROOMPROXY_BIN"; fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLI_TIMEOUT=10 # seconds, per redis-cli call

# ---------------------------------------------------------------- processes
SCRIPT=roomload.sh
KEPT="logs and JSON reports"
# shellcheck source=bench/lib.sh
source bench/lib.sh

# run_load NAME ARGS...: runs roomload with the workload flags, its JSON
# report in $TMP/NAME.json (progress and flag errors on stderr); a failed
# check (exit 1) still has a report, anything else stops the script.
run_load() {
  local name=$1 rc=0
  shift
  log "roomload $name: $* ${ARGS[*]}"
  bench/.bin/roomload -json "$@" "${ARGS[@]}" >"$TMP/$name.json" &
  FG_PID=$!
  wait "$FG_PID" || rc=$?
  FG_PID=""
  case $rc in
    0) ;;
    1) log "roomload $name: checks FAILED (see the summary)"; LOAD_FAILED=1 ;;
    *) die "roomload $name exited with status $rc (see above)" ;;
  esac
}

# --------------------------------------------------------------- preparation
for c in python3 redis-server redis-cli timeout go; do
  command -v "$c" >/dev/null || die "$c is needed"
done
mkdir -p bench/.bin
log "building roomload"
go build -o bench/.bin/roomload ./cmd/roomload || die "building roomload failed"
if [ -n "${ROOMPROXY_BIN:-}" ]; then
  [ -x "$ROOMPROXY_BIN" ] || die "ROOMPROXY_BIN=$ROOMPROXY_BIN is not an executable file"
  RP_BIN=$ROOMPROXY_BIN
  RP_DESC="roomproxy binary $RP_BIN"
else
  log "building roomproxy"
  go build -o bench/.bin/roomproxy ./cmd/roomproxy || die "building roomproxy failed"
  RP_BIN=bench/.bin/roomproxy
  RP_DESC="roomproxy $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- 2>/dev/null || echo '+uncommitted changes')"
fi

REDIS_PORT=$(free_port)
redis-server --save '' --appendonly no --bind 127.0.0.1 --port "$REDIS_PORT" \
  --daemonize no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_ready redis-server "$REDIS_PID" "$TMP/redis.log" '^PONG$' cli -p "$REDIS_PORT" PING
log "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"

# ------------------------------------------------------------------ running
LOAD_FAILED=0
run_load direct -addr "redis://127.0.0.1:$REDIS_PORT"

# roomproxy starts only now, so nothing of it is in the direct run's counts.
PROXY_PORT=$(free_port)
MONGO_ARGS=()
STORE_DESC="embedded store in a temp dir"
if [ -n "${MONGO_URL:-}" ]; then
  MONGO_ARGS=(-mongo "$MONGO_URL" -mongo-db "${MONGO_DB:-roomproxy}")
  STORE_DESC="MongoDB (MONGO_URL), database ${MONGO_DB:-roomproxy}"
fi
REDIS_URL="redis://127.0.0.1:$REDIS_PORT" PROXY_ADDR="127.0.0.1:$PROXY_PORT" \
  ROOM_STORE_PATH="$TMP/rooms.db" LOG_FORMAT=text \
  "$RP_BIN" -metrics-addr= >"$TMP/roomproxy.log" 2>&1 &
RP_PID=$!
PIDS+=("$RP_PID")
wait_ready roomproxy "$RP_PID" "$TMP/roomproxy.log" '^PONG$' cli -p "$PROXY_PORT" PING
log "roomproxy pid $RP_PID on 127.0.0.1:$PROXY_PORT, room store: $STORE_DESC"

run_load roomproxy -addr "redis://127.0.0.1:$PROXY_PORT" -upstream "redis://127.0.0.1:$REDIS_PORT" "${MONGO_ARGS[@]}"
kill -0 "$RP_PID" 2>/dev/null || {
  tail -n 20 "$TMP/roomproxy.log" >&2 || true
  die "roomproxy exited during the run"
}

# ------------------------------------------------------------------ summary
echo
python3 - "$TMP/direct.json" "$TMP/roomproxy.json" <<'EOF'
import json, sys
d, p = (json.load(open(f)) for f in sys.argv[1:3])
print(f"## roomload: direct vs roomproxy")
print()
print(f"{d['rooms']} rooms x {d['writes_per_room_per_s']:g} writes/s, {d['reads_per_room_per_s']:g} reads/s per room "
      f"over {d['readers']} readers, {d['players']} players; load {d['duration_s']:.1f}s (direct), {p['duration_s']:.1f}s (roomproxy).")
print()
def lost(r):
    f = r["final"]
    return (f["lost_endpoint"] + f["lost_upstream"] + f["players_lost"] + f["completed_lost"]
            + f["mongo_completed_lost"])
rows = [
    ("client commands/s", lambda r: f"{r['client']['per_s']:.0f}"),
    ("client commands", lambda r: str(r["client"]["total"])),
    ("upstream commands (commandstats)", lambda r: str(r["upstream_commands"]["total"])),
    ("upstream commands sent (MONITOR; billed per request)", lambda r: str(r["upstream_commands"]["sent_total"])),
    ("  of which writes (not reads)", lambda r: str(r["upstream_commands"]["sent_writes"])),
    ("commands run inside scripts (not sent)", lambda r: str(r["upstream_commands"]["in_scripts"])),
    ("bytes received by the upstream (INFO stats)", lambda r: str(r["upstream_commands"].get("bytes_in", "n/a"))),
    ("sent per client command", lambda r: f"{r['ratio']['sent']:.3f}"),
    ("sent writes per client SET+HSET", lambda r: f"{r['ratio']['sent_writes']:.3f}"),
    ("upstream per client command (commandstats, with scripts' inner calls)", lambda r: f"{r['ratio']['overall']:.3f}"),
    ("state write p50 / p99 ms", lambda r: f"{r['latency_ms']['state_writes']['p50']:.3f} / {r['latency_ms']['state_writes']['p99']:.3f}"),
    ("lifecycle write p50 / p99 ms", lambda r: f"{r['latency_ms']['lifecycle_writes']['p50']:.3f} / {r['latency_ms']['lifecycle_writes']['p99']:.3f}"),
    ("read p50 / p99 ms", lambda r: f"{r['latency_ms']['reads']['p50']:.3f} / {r['latency_ms']['reads']['p99']:.3f}"),
    ("reads checked", lambda r: str(r["reads"]["checked"])),
    ("stale reads (nil, unparsable)", lambda r: f"{r['reads']['stale']} ({r['reads']['nil']}, {r['reads']['unparsable']})"),
    ("lost final states", lambda r: str(lost(r))),
    ("errors", lambda r: str(sum(r["errors"].values()))),
    ("result", lambda r: "OK" if r["ok"] else "FAIL"),
]
print("| | direct | roomproxy |")
print("|---|---:|---:|")
for name, f in rows:
    print(f"| {name} | {f(d)} | {f(p)} |")
print()
top = sorted(p["upstream_commands"]["sent"].items(), key=lambda kv: -kv[1])
print("roomproxy's upstream commands sent: " + (", ".join(f"{k} {v}" for k, v in top) or "none") + ".")
if p["final"]["mongo_checked"]:
    f = p["final"]
    print(f"MongoDB: {f['mongo_completed_lost']} of {f['completed']} completed rooms lost; "
          f"{f['mongo_active_current']} of {f['active']} active rooms current there (snapshots lag; report only).")
if p["client"]["room_flush"]:
    print(f"ROOM.FLUSH sent to {p['client']['room_flush']} rooms before the checks.")
for name, r in (("direct", d), ("roomproxy", p)):
    if not r["ok"]:
        print(f"{name} FAILED: " + "; ".join(r["failures"]))
        for e in r["final"].get("examples") or []:
            print(f"  {e}")
    if r["errors"]:
        print(f"{name} errors: " + "; ".join(f"{v}x {k}" for k, v in sorted(r["errors"].items(), key=lambda kv: -kv[1])))
EOF
echo
echo "Machine: $(date -u), nproc $(nproc), redis-server $(redis-server --version | awk '{print $3}' | sed 's/^v=//'), $RP_DESC."
if [ "$LOAD_FAILED" -ne 0 ]; then
  die "a roomload run failed its checks (see the summary)"
fi
