#!/usr/bin/env bash
# Two roomproxy builds side by side: throughput and the proxy's own CPU per
# command under redis-benchmark, in one run, against one redis-server, with
# direct Redis and twemproxy as references. Rounds are interleaved and the
# order rotates, so a slow phase of this shared machine hits every target.
#
# Usage: bash bench/ab.sh [--rounds N] [--requests N] [--pipeline P] [--latency MS] [--pin] A B
#   A, B: git revisions (built in temporary worktrees) or roomproxy binaries
#   e.g. bash bench/ab.sh c2e34bc HEAD
# See bench/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash bench/ab.sh [options] A B

A and B are git revisions of this repository (each is built in a temporary
worktree) or paths to roomproxy binaries.

  --rounds N     rounds; the target order rotates every round (default 6)
  --requests N   requests per redis-benchmark run and test (default 500000
                 with -P 16, 100000 with -P 1; with --latency 40000 and 20000)
  --pipeline P   redis-benchmark -P (default 16)
  --latency MS   put bench/latencyproxy (MS of round trip) in front of
                 redis-server; "direct" is then the latency proxy
  --clients N    redis-benchmark connections (-c, default 50)
  --pin          redis-benchmark on CPU 0, everything else on CPU 1
  -h, --help     this help

environment:
  KEEP_LOGS=1    keep the temp dir with logs and raw results
EOF
}

die() {
  echo "ab.sh: error: $*" >&2
  exit 1
}
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

ROUNDS=6
REQUESTS=""
PIPELINE=16
CLIENTS=50
PIN=""
LATENCY=""
REVS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) [ $# -ge 2 ] || die "--rounds needs a value"; ROUNDS=$2; shift 2 ;;
    --requests) [ $# -ge 2 ] || die "--requests needs a value"; REQUESTS=$2; shift 2 ;;
    --pipeline) [ $# -ge 2 ] || die "--pipeline needs a value"; PIPELINE=$2; shift 2 ;;
    --clients) [ $# -ge 2 ] || die "--clients needs a value"; CLIENTS=$2; shift 2 ;;
    --latency) [ $# -ge 2 ] || die "--latency needs a value"; LATENCY=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) REVS+=("$1"); shift ;;
  esac
done
[ ${#REVS[@]} -eq 2 ] || die "want two builds, A and B (see --help)"
for v in "$ROUNDS" "$PIPELINE" "$CLIENTS" ${LATENCY:+"$LATENCY"}; do is_uint "$v" && [ "$v" -gt 0 ] || die "not a positive integer: $v"; done
if [ -z "$REQUESTS" ]; then
  if [ -n "$LATENCY" ]; then
    if [ "$PIPELINE" -gt 1 ]; then REQUESTS=40000; else REQUESTS=20000; fi
  elif [ "$PIPELINE" -gt 1 ]; then REQUESTS=500000; else REQUESTS=100000; fi
fi
is_uint "$REQUESTS" && [ "$REQUESTS" -gt 0 ] || die "--requests: not a positive integer: $REQUESTS"
for i in 0 1; do
  if [ -f "${REVS[$i]}" ] && [[ "${REVS[$i]}" != /* ]]; then REVS[i]="$PWD/${REVS[$i]}"; fi
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/deps.sh --bench >&2 || die "scripts/deps.sh --bench failed"
for tool in redis-server redis-cli redis-benchmark nutcracker python3 go git; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [ -n "$PIN" ]; then
  [ "$(nproc)" -ge 2 ] || die "--pin needs at least 2 CPUs"
  CLIENT_CPU=(taskset -c 0)
  SERVER_CPU=(taskset -c 1)
else
  CLIENT_CPU=()
  SERVER_CPU=()
fi

CLI_TIMEOUT=10
SCRIPT=ab.sh
KEPT="logs and raw results"
# shellcheck source=bench/lib.sh
. bench/lib.sh

# ------------------------------------------------------------------ builds
declare -A BIN NAME
for i in 0 1; do
  label=$([ $i -eq 0 ] && echo A || echo B)
  rev=${REVS[$i]}
  if [ -f "$rev" ] && [ -x "$rev" ]; then
    BIN[$label]=$rev
    NAME[$label]=$(basename "$rev")
    continue
  fi
  commit=$(git rev-parse --verify --quiet "$rev^{commit}") || die "$rev is neither a binary nor a git revision"
  wt="$TMP/src-$label"
  git worktree add --quiet --detach "$wt" "$commit" >&2 || die "git worktree add $rev failed"
  log "building $label = $rev ($(git rev-parse --short "$commit"))"
  (cd "$wt" && go build -o "$TMP/roomproxy-$label" ./cmd/roomproxy) || die "build of $rev failed"
  git worktree remove --force "$wt"
  BIN[$label]=$TMP/roomproxy-$label
  NAME[$label]="$rev ($(git rev-parse --short "$commit"))"
done

if [ -n "$LATENCY" ]; then
  log "building latencyproxy"
  go build -o "$TMP/latencyproxy" ./bench/latencyproxy || die "building bench/latencyproxy failed"
fi

# --------------------------------------------------------------- processes
UP_PORT=$(free_port)
"${SERVER_CPU[@]}" redis-server --port "$UP_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$TMP" >"$TMP/redis.log" 2>&1 &
PIDS+=("$!")
declare -A PORT PID
PORT[direct]=$UP_PORT
PID[direct]=$!
wait_ready redis-server "${PID[direct]}" "$TMP/redis.log" '^PONG$' cli -p "$UP_PORT" PING
if [ -n "$LATENCY" ]; then
  # Everything, "direct" included, goes through the latency proxy.
  start_latencyproxy "$TMP/latencyproxy" "$UP_PORT" "$LATENCY"
  UP_PORT=$LAT_PORT
  PORT[direct]=$LAT_PORT
  PID[direct]=$LAT_PID
fi

PORT[twemproxy]=$(free_port)
cat >"$TMP/nutcracker.yml" <<EOF
pool:
  listen: 127.0.0.1:${PORT[twemproxy]}
  redis: true
  server_connections: 1
  servers:
    - 127.0.0.1:$UP_PORT:1
EOF
"${SERVER_CPU[@]}" nutcracker -c "$TMP/nutcracker.yml" -o "$TMP/nutcracker.log" -s "$(free_port)" -a 127.0.0.1 \
  >>"$TMP/nutcracker.log" 2>&1 &
PIDS+=("$!")
PID[twemproxy]=$!

for label in A B; do
  PORT[$label]=$(free_port)
  ROOM_STORE_PATH="$TMP/rooms-$label.db" "${SERVER_CPU[@]}" "${BIN[$label]}" -proxy-addr "127.0.0.1:${PORT[$label]}" \
    -metrics-addr "" -redis-url "redis://127.0.0.1:$UP_PORT" -log-level warn >"$TMP/roomproxy-$label.log" 2>&1 &
  PIDS+=("$!")
  PID[$label]=$!
done
# GET goes through to redis-server; a missing key prints an empty line.
wait_ready twemproxy "${PID[twemproxy]}" "$TMP/nutcracker.log" '^$' cli -p "${PORT[twemproxy]}" GET ab:ready
for t in A B; do
  wait_ready "roomproxy $t" "${PID[$t]}" "$TMP/roomproxy-$t.log" '^$' cli -p "${PORT[$t]}" GET ab:ready
done

# ------------------------------------------------------------------- rounds
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TARGETS=(direct twemproxy A B)
RESULTS=$TMP/results.tsv
: >"$RESULTS"
for r in $(seq "$ROUNDS"); do
  rot=$(((r - 1) % ${#TARGETS[@]}))
  order=("${TARGETS[@]:$rot}" "${TARGETS[@]:0:$rot}")
  for t in "${order[@]}"; do
    c0=$(ticks "${PID[$t]}")
    csv=$("${CLIENT_CPU[@]}" timeout 300 redis-benchmark -h 127.0.0.1 -p "${PORT[$t]}" -c "$CLIENTS" -n "$REQUESTS" \
      -P "$PIPELINE" -t set,get -r 100000 --csv 2>/dev/null) || die "redis-benchmark against $t failed"
    c1=$(ticks "${PID[$t]}")
    set_rps=$(echo "$csv" | awk -F'"' '$2 == "SET" {print $4}')
    get_rps=$(echo "$csv" | awk -F'"' '$2 == "GET" {print $4}')
    [ -n "$set_rps" ] && [ -n "$get_rps" ] || die "no result from redis-benchmark against $t"
    printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$set_rps" "$get_rps" "$((c1 - c0))" >>"$RESULTS"
    log "round $r $t: SET $set_rps GET $get_rps rps"
  done
done

# ------------------------------------------------------------------- report
echo "## roomproxy A vs B: redis-benchmark -c $CLIENTS -n $REQUESTS -P $PIPELINE -t set,get, $ROUNDS rounds$([ -n "$LATENCY" ] && echo ", +$LATENCY ms round trip")$([ -n "$PIN" ] && echo ', pinned')"
echo
echo "A = ${NAME[A]}, B = ${NAME[B]}"
echo
CLK_TCK=$(getconf CLK_TCK) REQUESTS=$REQUESTS python3 - "$RESULTS" <<'EOF'
import os, sys, statistics
from collections import defaultdict
runs = defaultdict(dict)   # target -> round -> (set, get, ticks)
for line in open(sys.argv[1]):
    r, t, s, g, c = line.split("\t")
    runs[t][r] = (float(s), float(g), int(c))
tck, n = int(os.environ["CLK_TCK"]), int(os.environ["REQUESTS"])
med = statistics.median
def ratios(t, base, i):
    return [runs[t][r][i] / runs[base][r][i] for r in runs[t] if r in runs[base]]
def ratio(t, base, i):
    return med(ratios(t, base, i))
print("| target | SET rps | GET rps | SET / direct | GET / direct | SET / twemproxy | GET / twemproxy | CPU µs per command |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for t in ("direct", "twemproxy", "A", "B"):
    rs = runs[t].values()
    cpu = sum(c for _, _, c in rs) / tck / (2 * n * len(runs[t])) * 1e6
    tw = "n/a | n/a" if t == "direct" else f"{ratio(t, 'twemproxy', 0):.2f} | {ratio(t, 'twemproxy', 1):.2f}"
    print(f"| {t} | {med(s for s, _, _ in rs):.0f} | {med(g for _, g, _ in rs):.0f} | "
          f"{ratio(t, 'direct', 0):.2f} | {ratio(t, 'direct', 1):.2f} | {tw} | {cpu:.2f} |")
print()
spread = lambda i: f"{min(ratios('B', 'A', i)):.2f} to {max(ratios('B', 'A', i)):.2f}"
print(f"B / A per round (median): SET {ratio('B', 'A', 0):.3f}, GET {ratio('B', 'A', 1):.3f} "
      f"(range over rounds: SET {spread(0)}, GET {spread(1)})")
EOF
echo
echo "CPU: user+system time of the process under test during its own runs (clock ticks of 1/$(getconf CLK_TCK) s) over the commands it was sent; for direct that is redis-server's own CPU$([ -n "$LATENCY" ] && echo " (with --latency, the latency proxy's)"). Machine: $(date -u), nproc $(nproc)."
