#!/usr/bin/env bash
# Side-by-side redis-benchmark throughput of three targets in one run:
#   direct     redis-server itself
#   twemproxy  nutcracker in front of that redis-server
#   roomproxy  this repository's proxy in front of that redis-server
# With --latency MS, a latency proxy (bench/latencyproxy) adds MS of round-trip
# time in front of redis-server, and all three targets go through it ("direct"
# is then the latency proxy itself), which is closer to a remote Redis.
#
# Usage: bash bench/run.sh [--rounds N] [--requests N] [--clients N]
#                          [--latency MS] [--pin] [--out FILE]
# See bench/README.md for what the columns mean.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash bench/run.sh [options]

  --rounds N     rounds; the target order rotates every round (default 15,
                 about 5 minutes; 5 with --latency)
  --requests N   requests per redis-benchmark run and test
                 (default 200000; 20000 with --latency)
  --clients N    redis-benchmark connections (-c, default 50)
  --latency MS   put a proxy adding MS ms of round-trip time in front of
                 redis-server; all three targets go through it (default: off)
  --pin          pin redis-benchmark to CPU 0 and the servers (redis-server,
                 the proxies, the latency proxy) to CPU 1, for every target
                 alike; by default the kernel places all of them, which on
                 two cores moves a proxy's result by up to 2x (bench/README.md)
  --out FILE     also write the markdown report to FILE
  -h, --help     this help

environment:
  ROOMPROXY_BIN=PATH  benchmark this roomproxy binary instead of building
                      ./cmd/roomproxy from the work tree
  KEEP_LOGS=1         keep the temp dir with logs and raw CSVs (it is always
                      kept when the script fails)
EOF
}

die() {
  echo "run.sh: error: $*" >&2
  exit 1
}
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

ROUNDS=""
REQUESTS=""
CLIENTS=50
LATENCY=""
OUT=""
PIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) [ $# -ge 2 ] || die "--rounds needs a value"; ROUNDS=$2; shift 2 ;;
    --requests) [ $# -ge 2 ] || die "--requests needs a value"; REQUESTS=$2; shift 2 ;;
    --clients) [ $# -ge 2 ] || die "--clients needs a value"; CLIENTS=$2; shift 2 ;;
    --latency) [ $# -ge 2 ] || die "--latency needs a value"; LATENCY=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; OUT=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
if [ -z "$REQUESTS" ]; then
  if [ -n "$LATENCY" ]; then REQUESTS=20000; else REQUESTS=200000; fi
fi
# Local rounds are short and their ratios spread widely (one round's -P 16
# ratio to twemproxy has a standard deviation of about 0.2), so the default
# takes enough of them for a median to mean something; latency rounds are
# long and agree closely.
if [ -z "$ROUNDS" ]; then
  if [ -n "$LATENCY" ]; then ROUNDS=5; else ROUNDS=15; fi
fi
is_uint "$ROUNDS" && [ "$ROUNDS" -ge 1 ] || die "--rounds must be a whole number >= 1, got '$ROUNDS'"
is_uint "$REQUESTS" && [ "$REQUESTS" -ge 1 ] || die "--requests must be a whole number >= 1, got '$REQUESTS'"
is_uint "$CLIENTS" && [ "$CLIENTS" -ge 1 ] || die "--clients must be a whole number >= 1, got '$CLIENTS'"
if [ -n "$LATENCY" ]; then
  is_uint "$LATENCY" && [ "$LATENCY" -ge 1 ] || die "--latency must be a whole number of ms >= 1, got '$LATENCY'"
fi
if [ -n "$PIN" ]; then
  [ "$(nproc)" -ge 2 ] || die "--pin needs at least 2 CPUs"
  command -v taskset >/dev/null || die "--pin needs taskset (util-linux)"
fi
# Command prefixes placing the servers and the client (--pin).
SERVER_CPU=() CLIENT_CPU=()
if [ -n "$PIN" ]; then SERVER_CPU=(taskset -c 1) CLIENT_CPU=(taskset -c 0); fi
ROUNDS=$((10#$ROUNDS)) REQUESTS=$((10#$REQUESTS)) CLIENTS=$((10#$CLIENTS))
if [ -n "$LATENCY" ]; then LATENCY=$((10#$LATENCY)); fi
# --out is relative to where the script was started, not the repo root.
if [ -n "$OUT" ] && [[ "$OUT" != /* ]]; then OUT="$PWD/$OUT"; fi
if [ -n "${ROOMPROXY_BIN:-}" ] && [[ "$ROOMPROXY_BIN" != /* ]]; then ROOMPROXY_BIN="$PWD/$ROOMPROXY_BIN"; fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEPTHS=(1 16)
TARGETS=(direct twemproxy roomproxy)
BENCH_TIMEOUT=300 # seconds, per redis-benchmark run
CLI_TIMEOUT=10    # seconds, per redis-cli call

# ---------------------------------------------------------------- processes
SCRIPT=run.sh
KEPT="logs and raw results"
# shellcheck source=bench/lib.sh
source bench/lib.sh

# --------------------------------------------------------------- preparation
command -v python3 >/dev/null || die "python3 is needed (free ports, report)"
if [ -z "${ROOMPROXY_BIN:-}" ] || [ -n "$LATENCY" ]; then
  command -v go >/dev/null || die "go is needed to build roomproxy and bench/latencyproxy"
fi
bash scripts/deps.sh --bench
for c in redis-server redis-cli redis-benchmark nutcracker timeout; do
  command -v "$c" >/dev/null || die "$c is not installed (scripts/deps.sh --bench should have installed it)"
done

mkdir -p bench/.bin
if [ -n "${ROOMPROXY_BIN:-}" ]; then
  # A prebuilt binary, e.g. of another commit, instead of building this tree.
  [ -x "$ROOMPROXY_BIN" ] || die "ROOMPROXY_BIN=$ROOMPROXY_BIN is not an executable file"
  RP_BIN=$ROOMPROXY_BIN
  RP_DESC="roomproxy binary $RP_BIN"
  log "using roomproxy binary $RP_BIN (ROOMPROXY_BIN)"
else
  log "building roomproxy"
  go build -o bench/.bin/roomproxy ./cmd/roomproxy || die "building roomproxy (go build -o bench/.bin/roomproxy ./cmd/roomproxy) failed"
  RP_BIN=bench/.bin/roomproxy
  RP_DESC="roomproxy $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- 2>/dev/null || echo '+uncommitted changes')"
fi
if [ -n "$LATENCY" ]; then
  log "building latencyproxy"
  go build -o bench/.bin/latencyproxy ./bench/latencyproxy || die "building bench/latencyproxy failed"
fi

# redis-server
REDIS_PORT=$(free_port)
"${SERVER_CPU[@]}" redis-server --save '' --appendonly no --bind 127.0.0.1 --port "$REDIS_PORT" \
  --daemonize no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_ready redis-server "$REDIS_PID" "$TMP/redis.log" '^PONG$' cli -p "$REDIS_PORT" PING
log "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"

# What the proxies (and "direct") connect to: redis-server, or the latency proxy.
UP_PORT=$REDIS_PORT
if [ -n "$LATENCY" ]; then
  start_latencyproxy bench/.bin/latencyproxy "$REDIS_PORT" "$LATENCY"
  UP_PORT=$LAT_PORT
  log "latencyproxy pid $LAT_PID on 127.0.0.1:$UP_PORT (+${LATENCY} ms round trip) -> redis-server"
fi

# twemproxy
TW_PORT=$(free_port)
cat >"$TMP/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$TW_PORT
  redis: true
  hash: fnv1a_64
  distribution: ketama
  server_connections: 1
  auto_eject_hosts: false
  timeout: 5000
  servers:
    - 127.0.0.1:$UP_PORT:1
EOF
TW_STATS_PORT=$(free_port)
"${SERVER_CPU[@]}" nutcracker -c "$TMP/nutcracker.yml" -o "$TMP/nutcracker.log" -p "$TMP/nutcracker.pid" \
  -s "$TW_STATS_PORT" -a 127.0.0.1 >>"$TMP/nutcracker.log" 2>&1 &
TW_PID=$!
PIDS+=("$TW_PID")
# GET goes through twemproxy (PING is answered by twemproxy itself); an
# unknown key answers an empty line, an unreachable server an error.
wait_ready twemproxy "$TW_PID" "$TMP/nutcracker.log" '^$' cli -p "$TW_PORT" GET roomproxy-bench:ready
log "twemproxy (nutcracker) pid $TW_PID on 127.0.0.1:$TW_PORT"

# roomproxy
RP_PORT=$(free_port)
ROOM_STORE_PATH="$TMP/rooms.db" "${SERVER_CPU[@]}" "$RP_BIN" -proxy-addr "127.0.0.1:$RP_PORT" -metrics-addr "" \
  -redis-url "redis://127.0.0.1:$UP_PORT" -log-level warn -shutdown-timeout 3s \
  >"$TMP/roomproxy.log" 2>&1 &
RP_PID=$!
PIDS+=("$RP_PID")
wait_ready roomproxy "$RP_PID" "$TMP/roomproxy.log" '^$' cli -p "$RP_PORT" GET roomproxy-bench:ready
log "roomproxy pid $RP_PID on 127.0.0.1:$RP_PORT"

declare -A PORT=([direct]=$UP_PORT [twemproxy]=$TW_PORT [roomproxy]=$RP_PORT)
declare -A PID=([direct]=$REDIS_PID [twemproxy]=$TW_PID [roomproxy]=$RP_PID)
if [ -n "$LATENCY" ]; then PID[direct]=$LAT_PID; fi

# ----------------------------------------------------------------- sampling
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: utime+stime of PID in clock ticks.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat") || die "cannot read /proc/$1/stat"
  # Fields after "(comm) " start at field 3 (state); utime and stime are 14 and 15.
  stat=${stat##*) }
  awk '{print $12 + $13}' <<<"$stat"
}

# cmdstat NAME: calls of redis-server's command NAME so far (0 if none yet).
cmdstat() {
  local info
  info=$(cli -p "$REDIS_PORT" INFO commandstats) || die "INFO commandstats on redis-server failed"
  awk -F'[:=,]' -v c="cmdstat_$1" '$1 == c {print $3; found=1} END {if (!found) print 0}' <<<"${info//$'\r'/}"
}

# info_field PORT SECTION FIELD
info_field() {
  local info
  info=$(cli -p "$1" INFO "$2") || die "INFO $2 on port $1 failed"
  awk -F: -v f="$3" '$1 == f {print $2}' <<<"${info//$'\r'/}"
}

# redis_clients: clients connected to redis-server, not counting this query's own.
redis_clients() {
  local n
  n=$(cli -p "$REDIS_PORT" CLIENT LIST | wc -l) || die "CLIENT LIST on redis-server failed"
  echo $((n - 1))
}

# conns_of PID PORT: established TCP connections that process PID has open
# to 127.0.0.1:PORT (from /proc, so it tells one proxy's upstream
# connections from the other's).
conns_of() {
  python3 - "$1" "$2" <<'EOF'
import os, sys
pid, port = sys.argv[1], int(sys.argv[2])
inodes = set()
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        t = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if t.startswith("socket:["):
        inodes.add(t[8:-1])
n = 0
for tab in ("tcp", "tcp6"):
    try:
        lines = open(f"/proc/{pid}/net/{tab}").read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
            n += 1
print(n)
EOF
}

# ------------------------------------------------------------------ running
RESULTS=$TMP/results.tsv # round depth target test rps p50 p99 sent reached
: >"$RESULTS"
CONNS=$TMP/conns.tsv # target round what value
: >"$CONNS"
PATHCPU=$TMP/pathcpu.tsv # see bench_one
: >"$PATHCPU"
ERRLOG=$TMP/bench-errors.txt
: >"$ERRLOG"
FAILED=0
CONFIG_WARNINGS=0
declare -A CPU=([twemproxy]=0 [roomproxy]=0 [direct]=0)
RP_FORWARDED=0
TW_SENT=0

check_alive() {
  local name pid logf
  for name in redis-server "${TARGETS[@]}"; do
    case $name in
      redis-server) pid=$REDIS_PID logf=$TMP/redis.log ;;
      direct) [ -n "$LATENCY" ] || continue; name=latencyproxy pid=$LAT_PID logf=$TMP/latencyproxy.log ;;
      twemproxy) pid=$TW_PID logf=$TMP/nutcracker.log ;;
      roomproxy) pid=$RP_PID logf=$TMP/roomproxy.log ;;
    esac
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "---- last lines of $name's output ($logf) ----" >&2
      tail -n 20 "$logf" >&2 2>/dev/null || true
      die "$name (pid $pid) is no longer running"
    fi
  done
}

# path_sample: KIDS, the CPU ticks of this shell's waited-for children
# (redis-benchmark, once waited for), and IDLE, the machine's idle and iowait
# ticks over all CPUs. Builtins only: no fork between the two samples of a run.
path_sample() {
  local stat f
  read -r stat </proc/$$/stat
  stat=${stat##*) }
  read -ra f <<<"$stat"
  KIDS=$((f[13] + f[14])) # cutime and cstime, fields 16 and 17
  read -ra f </proc/stat
  IDLE=$((f[4] + f[5]))
}

# bench_one ROUND DEPTH TARGET
bench_one() {
  local round=$1 depth=$2 target=$3 port=${PORT[$3]} pid=${PID[$3]}
  local set0 get0 set1 get1 cpu0 cpu1 rcpu0 rcpu1 up0=0 up1=0 rc=0 csv err line test rps p50 p99 reached sent
  # redis-benchmark sends whole pipelines: -n rounded up to a multiple of -P.
  sent=$(((REQUESTS + depth - 1) / depth * depth))
  csv=$TMP/bench-$round-$depth-$target.csv
  err=$TMP/bench-$round-$depth-$target.err
  check_alive
  set0=$(cmdstat set)
  get0=$(cmdstat get)
  cpu0=$(cpu_ticks "$pid")
  if [ "$target" = roomproxy ]; then up0=$(info_field "$port" upstream upstream_commands); fi
  rcpu0=$(cpu_ticks "$REDIS_PID")
  # Last before the run, without forking (a fork's CPU would count as the client's).
  path_sample
  local t0=$EPOCHREALTIME kids0=$KIDS idle0=$IDLE

  # In the background and waited for, so that Ctrl-C or SIGTERM stops the
  # script at once (bash runs traps only between foreground commands).
  timeout "$BENCH_TIMEOUT" "${CLIENT_CPU[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" \
    -n "$REQUESTS" -P "$depth" -t set,get --csv -r 100000 >"$csv" 2>"$err" &
  FG_PID=$!
  wait "$FG_PID" || rc=$?
  FG_PID=""
  path_sample
  local t1=$EPOCHREALTIME kids1=$KIDS idle1=$IDLE
  if [ "$rc" -eq 124 ]; then echo "(killed by timeout after ${BENCH_TIMEOUT}s)" >>"$err"; fi

  cpu1=$(cpu_ticks "$pid")
  rcpu1=$(cpu_ticks "$REDIS_PID")
  # round depth target client proxy redis idle (clock ticks) wall-seconds commands
  echo -e "$round\t$depth\t$target\t$((kids1 - kids0))\t$((cpu1 - cpu0))\t$((rcpu1 - rcpu0))\t$((idle1 - idle0))\t$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')\t$((2 * sent))" >>"$PATHCPU"
  set1=$(cmdstat set)
  get1=$(cmdstat get)
  CPU[$target]=$((CPU[$target] + cpu1 - cpu0))
  if [ "$target" = roomproxy ]; then
    up1=$(info_field "$port" upstream upstream_commands)
    RP_FORWARDED=$((RP_FORWARDED + up1 - up0))
    echo -e "roomproxy\t$round\tupstream_connections\t$(info_field "$port" upstream upstream_connections)" >>"$CONNS"
  elif [ "$target" = twemproxy ]; then
    TW_SENT=$((TW_SENT + 2 * sent))
    # twemproxy is idle now: count its connections to its server, and all of
    # redis-server's clients (these include roomproxy's upstream connections).
    echo -e "twemproxy\t$round\tconns\t$(conns_of "$TW_PID" "$UP_PORT")" >>"$CONNS"
    echo -e "twemproxy\t$round\tredis_clients\t$(redis_clients)" >>"$CONNS"
  fi
  if [ "$target" = roomproxy ]; then
    echo -e "roomproxy\t$round\tconns\t$(conns_of "$RP_PID" "$UP_PORT")" >>"$CONNS"
  fi

  # Anything redis-benchmark said besides its CSV is worth showing, except
  # the warning that twemproxy does not support CONFIG (which it uses only
  # to print the server's save/appendonly settings).
  if grep -qx 'WARNING: Could not fetch server CONFIG' "$err"; then
    CONFIG_WARNINGS=$((CONFIG_WARNINGS + 1))
    sed -i '/^WARNING: Could not fetch server CONFIG$/d' "$err"
  fi
  if [ -s "$err" ] || [ "$rc" -ne 0 ]; then
    {
      echo "== round $round, -P $depth, $target: redis-benchmark exit $rc; stderr:"
      head -c 2000 "$err" | tr '\r' '\n' | grep -v '^[[:space:]]*$' | head -n 15 || true
    } >>"$ERRLOG"
  fi

  local got=0 summary=""
  while IFS= read -r line; do
    line=${line//\"/}
    IFS=, read -r test rps _ _ p50 _ p99 _ <<<"$line"
    case "$test" in
      SET) reached=$((set1 - set0)) ;;
      GET) reached=$((get1 - get0)) ;;
      *) continue ;;
    esac
    echo -e "$round\t$depth\t$target\t$test\t$rps\t$p50\t$p99\t$sent\t$reached" >>"$RESULTS"
    got=$((got + 1))
    summary+=" $test ${rps} rps"
  done <"$csv"
  if [ "$rc" -ne 0 ] || [ "$got" -ne 2 ]; then
    FAILED=$((FAILED + 1))
    for test in SET GET; do
      awk -F'\t' -v r="$round" -v d="$depth" -v t="$target" -v x="$test" \
        '$1 == r && $2 == d && $3 == t && $4 == x {f = 1} END {exit !f}' "$RESULTS" ||
        echo -e "$round\t$depth\t$target\t$test\tFAIL\t\t\t$sent\t0" >>"$RESULTS"
    done
    log "round $round -P $depth $target: FAILED (redis-benchmark exit $rc, $got of 2 tests reported)"
  else
    log "round $round -P $depth $target:$summary; reached redis: SET $((set1 - set0)) GET $((get1 - get0)) of $sent each"
  fi
}

log "rounds $ROUNDS, requests $REQUESTS per test and run, clients $CLIENTS, pipeline ${DEPTHS[*]}${LATENCY:+, latency ${LATENCY} ms}"
for ((round = 1; round <= ROUNDS; round++)); do
  order=()
  for ((i = 0; i < ${#TARGETS[@]}; i++)); do
    order+=("${TARGETS[$(((i + round - 1) % ${#TARGETS[@]}))]}")
  done
  for depth in "${DEPTHS[@]}"; do
    for target in "${order[@]}"; do
      bench_one "$round" "$depth" "$target"
    done
  done
done
check_alive

# ------------------------------------------------------------------ report
REPORT=$TMP/report.md
{
  if [ -n "$LATENCY" ]; then
    mode="latency mode: every target goes through a proxy adding ${LATENCY} ms of round-trip time in front of redis-server; \"direct\" is that latency proxy"
  else
    mode="local mode: redis-server on loopback, no added latency"
  fi
  if [ -n "$PIN" ]; then
    mode="$mode; pinned: redis-benchmark on CPU 0, redis-server and the proxies on CPU 1"
  else
    mode="$mode; CPU placement left to the kernel"
  fi
  # What bench/pool.sh may pool: only runs with the same key.
  POOL_KEY="$([ -n "$LATENCY" ] && echo "latency $LATENCY ms" || echo local), $([ -n "$PIN" ] && echo pinned || echo unpinned), -c $CLIENTS, -n $REQUESTS"
  echo "## redis-benchmark: direct vs twemproxy vs roomproxy"
  echo
  echo "$mode. redis-benchmark -c $CLIENTS -n $REQUESTS -t set,get -r 100000 -P 1 and -P 16, $ROUNDS round(s), target order rotating each round; medians over rounds."
  echo
  python3 bench/report.py "$RESULTS" "$LATENCY"
  echo
  python3 - "$PATHCPU" "$CLK_TCK" "$LATENCY" "$(nproc)" <<'EOF'
import sys, statistics
from collections import defaultdict
hz, latency, ncpu = int(sys.argv[2]), sys.argv[3] != "", int(sys.argv[4])
per = defaultdict(lambda: defaultdict(list))  # (depth, target) -> column -> per-round values
for l in open(sys.argv[1]):
    rnd, depth, target, kids, proxy, redis, idle, wall, cmds = l.rstrip("\n").split("\t")
    cmds, wall = int(cmds), float(wall)
    us = lambda ticks: int(ticks) / hz / cmds * 1e6
    d = per[(int(depth), target)]
    d["client"].append(us(kids))
    # Locally, direct's "proxy" is redis-server itself; with --latency it is the latency proxy.
    d["proxy"].append(None if target == "direct" and not latency else us(proxy))
    d["redis"].append(us(redis))
    d["idle"].append(100 * int(idle) / hz / (ncpu * wall) if wall > 0 else None)
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)
print("Where the CPU went, per command (medians over rounds, SET and GET runs together): CPU time of redis-benchmark "
      "(the client), of the proxy under test and of redis-server, in µs; \"whole path\" is their sum. "
      f"Machine idle is the share of the {ncpu} CPUs' time during the run that no process used."
      + (" With --latency, direct's proxy column is the latency proxy, whose CPU the other rows do not count." if latency else ""))
print()
print("| pipeline | target | client µs | proxy µs | redis-server µs | whole path µs | machine idle |")
print("|---:|---|---:|---:|---:|---:|---:|")
for depth in (1, 16):
    for target in ("direct", "twemproxy", "roomproxy"):
        d = per.get((depth, target))
        if not d:
            continue
        whole = med([c + (p or 0) + r for c, p, r in zip(d["client"], d["proxy"], d["redis"])])
        print(f"| {depth} | {target} | {fmt(med(d['client']), '.2f')} | {fmt(med(d['proxy']), '.2f')} | "
              f"{fmt(med(d['redis']), '.2f')} | {fmt(whole, '.2f')} | {fmt(med(d['idle']), '.0f')} % |")
EOF
  echo
  python3 - "$CONNS" "$LATENCY" <<'EOF'
import sys
from collections import defaultdict
vals = defaultdict(list)
for l in open(sys.argv[1]):
    t, rnd, what, v = l.rstrip("\n").split("\t")
    if v != "":
        vals[(t, what)].append(int(v))
def span(xs):
    if not xs:
        return "n/a"
    lo, hi = min(xs), max(xs)
    return str(lo) if lo == hi else f"{lo}-{hi}"
to = "the latency proxy" if sys.argv[2] else "redis-server"
print(f"Upstream connections after load: roomproxy {span(vals[('roomproxy', 'upstream_connections')])} "
      f"(INFO upstream upstream_connections; its TCP connections to {to}: {span(vals[('roomproxy', 'conns')])}), "
      f"twemproxy {span(vals[('twemproxy', 'conns')])} (its TCP connections to {to}, idle after load), direct n/a. "
      f"redis-server clients while twemproxy idle after load (CLIENT LIST minus our own, "
      f"includes roomproxy's): {span(vals[('twemproxy', 'redis_clients')])}.")
EOF
  echo
  for t in roomproxy twemproxy; do
    if [ "$t" = roomproxy ]; then cmds=$RP_FORWARDED; what="forwarded commands (upstream_commands delta)"; else cmds=$TW_SENT; what="commands (requests sent to it)"; fi
    ms=$(python3 -c "import sys; t,h,c=map(int,sys.argv[1:]); print('n/a' if c == 0 else f'{t*1000/h/c*100000:.1f}')" "${CPU[$t]}" "$CLK_TCK" "$cmds")
    echo "$t CPU per 100k forwarded commands: $ms ms ($((CPU[$t] * 1000 / CLK_TCK)) ms CPU for $cmds $what)"
    echo
  done
  echo "Machine: $(date -u), nproc $(nproc), CPU $(grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*:[[:space:]]*//'), redis-server $(redis-server --version | awk '{print $3}' | sed 's/^v=//'), $(nutcracker --version 2>&1 | head -n 1 | sed 's/^This is //'), $RP_DESC."
  if [ "$CONFIG_WARNINGS" -gt 0 ]; then
    echo
    echo "($CONFIG_WARNINGS run(s) printed \"WARNING: Could not fetch server CONFIG\": expected through twemproxy, which does not support CONFIG; redis-benchmark only uses it to show the server's save/appendonly settings.)"
  fi
  if [ -s "$ERRLOG" ]; then
    echo
    echo "redis-benchmark said more than its CSV:"
    echo
    echo '```'
    cat "$ERRLOG"
    echo '```'
  fi
  echo
  echo "Per-round results, the input of bench/pool.sh (round, pipeline, target, test, rps, p50 ms, p99 ms, commands sent, commands that reached redis):"
  echo
  echo '```tsv'" rounds: $POOL_KEY"
  cat "$RESULTS"
  echo '```'
} >"$REPORT"

echo
cat "$REPORT"
if [ -n "$OUT" ]; then
  mkdir -p "$(dirname "$OUT")"
  cp "$REPORT" "$OUT"
  log "report written to $OUT"
fi
if [ "$FAILED" -gt 0 ]; then
  die "$FAILED redis-benchmark run(s) failed (see the table and the redis-benchmark output above)"
fi
