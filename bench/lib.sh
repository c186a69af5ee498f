# Shared by bench/run.sh, bench/ab.sh and bench/roomload.sh (sourced, not
# run): a temp dir, background processes stopped on exit (SIGTERM, then
# SIGKILL after 5 s), free loopback ports, redis-cli with a timeout,
# wait_ready for a server to answer (it calls the script's die), and
# start_latencyproxy.
#
# Before sourcing, set SCRIPT (the script's name, for messages), KEPT (what
# the temp dir holds, for the message when it is kept) and CLI_TIMEOUT.
# Append background pids to PIDS; set FG_PID while a foreground load
# (redis-benchmark, roomload) runs so that an interrupt stops it first.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/roomproxy-${SCRIPT%.sh}.XXXXXX")
PIDS=()
FG_PID=""
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  if [ -n "$FG_PID" ]; then
    kill -TERM "$FG_PID" 2>/dev/null || true
    wait "$FG_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$SCRIPT: pid $pid did not stop on SIGTERM within 5s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if { [ "$rc" -ne 0 ] || [ -n "${KEEP_LOGS:-}" ]; } && [ -n "$(ls -A "$TMP")" ]; then
    echo "$SCRIPT: $KEPT kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

cli() { timeout "$CLI_TIMEOUT" redis-cli -h 127.0.0.1 "$@"; }

# wait_ready NAME PID LOG EXPECT CMD...: waits up to 15 s until CMD prints a
# line matching the regex EXPECT, and fails with the log's tail if NAME exits
# or never answers.
wait_ready() {
  local name=$1 pid=$2 logf=$3 expect=$4 out i
  shift 4
  for i in $(seq 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "---- last lines of $name's output ($logf) ----" >&2
      tail -n 20 "$logf" >&2 2>/dev/null || true
      die "$name exited during startup (see above)"
    fi
    if out=$("$@" 2>&1) && grep -Eq "$expect" <<<"$out"; then
      return 0
    fi
    sleep 0.1
  done
  echo "---- last lines of $name's output ($logf) ----" >&2
  tail -n 20 "$logf" >&2 2>/dev/null || true
  echo "---- last answer to '$*': ----" >&2
  echo "${out:-}" >&2
  die "$name did not become ready within 15 s"
}

# start_latencyproxy BIN REDIS_PORT MS: starts bench/latencyproxy (built at
# BIN) in front of redis-server on REDIS_PORT, adding MS of round trip, with
# SERVER_CPU's placement; sets LAT_PID and LAT_PORT.
start_latencyproxy() {
  local bin=$1 redis_port=$2 ms=$3 addr i
  "${SERVER_CPU[@]}" "$bin" -listen 127.0.0.1:0 -upstream "127.0.0.1:$redis_port" \
    -latency-ms "$ms" >"$TMP/latencyproxy.out" 2>"$TMP/latencyproxy.log" &
  LAT_PID=$!
  PIDS+=("$LAT_PID")
  for i in $(seq 100); do
    [ -s "$TMP/latencyproxy.out" ] && break
    kill -0 "$LAT_PID" 2>/dev/null || break
    sleep 0.1
  done
  addr=$(head -n 1 "$TMP/latencyproxy.out" 2>/dev/null || true)
  [[ "$addr" =~ ^127\.0\.0\.1:[0-9]+$ ]] || {
    tail -n 20 "$TMP/latencyproxy.log" >&2 || true
    die "latencyproxy did not start (it printed '$addr')"
  }
  LAT_PORT=${addr##*:}
  wait_ready latencyproxy "$LAT_PID" "$TMP/latencyproxy.log" '^PONG$' cli -p "$LAT_PORT" PING
}
