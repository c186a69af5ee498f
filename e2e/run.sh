#!/usr/bin/env bash
# End-to-end tests: real Node.js Redis clients (ioredis 5/6, node-redis 5,
# socket.io + @socket.io/redis-adapter) against a freshly built roomproxy that
# forwards to a throwaway redis-server. Everything listens on 127.0.0.1 only.
#
#   bash e2e/run.sh            # run every test
#   bash e2e/run.sh ioredis5   # only tests whose name contains "ioredis5"
#
# Prints the runner's results and ends with "N passed, N failed"; exits with the
# runner's status (1 if any test failed).
#
# ROOMPROXY_BIN=/path/to/roomproxy skips the build and tests that binary.
# E2E_SECURE=1 runs roomproxy with a TLS listener (a throwaway CA from
# tools/gencert) and a users file (PROXY_ACL_FILE), and the clients connect
# with rediss://USER:PASSWORD@localhost; pass the filter "secure" then, the
# tests written for that setup.
# E2E_VERBOSE=1 also prints errors raised after a test gave up.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$E2E_DIR/.." && pwd)"
BIN="${ROOMPROXY_BIN:-$E2E_DIR/.bin/roomproxy}"

free_port() {
	python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

for tool in node npm redis-server redis-cli python3; do
	command -v "$tool" >/dev/null 2>&1 || { echo "e2e: '$tool' not found on PATH" >&2; exit 2; }
done

REDIS_PID=""
PROXY_PID=""
LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/roomproxy-e2e.XXXXXX")"
cleanup() {
	local pid
	for pid in "$PROXY_PID" "$REDIS_PID"; do
		if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$LOG_DIR"
}
trap cleanup EXIT

wait_ping() { # port pid name logfile [redis-cli options]
	local i
	for i in $(seq 1 100); do
		if [[ "$(redis-cli -h 127.0.0.1 -p "$1" "${@:5}" PING 2>/dev/null || true)" == "PONG" ]]; then
			return 0
		fi
		if ! kill -0 "$2" 2>/dev/null; then
			echo "e2e: $3 exited during startup; its log:" >&2
			cat "$4" >&2 || true
			return 1
		fi
		sleep 0.1
	done
	echo "e2e: $3 did not answer PING on 127.0.0.1:$1 within 10s; its log:" >&2
	cat "$4" >&2 || true
	return 1
}

if [[ -z "${ROOMPROXY_BIN:-}" ]]; then
	command -v go >/dev/null 2>&1 || { echo "e2e: 'go' not found on PATH" >&2; exit 2; }
	echo "e2e: building roomproxy" >&2
	mkdir -p "$E2E_DIR/.bin"
	(cd "$REPO_DIR" && go build -o "$BIN" ./cmd/roomproxy)
else
	echo "e2e: testing $BIN (ROOMPROXY_BIN)" >&2
fi

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
	>"$LOG_DIR/redis.log" 2>&1 &
REDIS_PID=$!
wait_ping "$REDIS_PORT" "$REDIS_PID" redis-server "$LOG_DIR/redis.log"

PROXY_PORT="$(free_port)"
SECURE_ENV=()
CLI_OPTS=()
PROXY_URL="redis://127.0.0.1:$PROXY_PORT"
if [[ -n "${E2E_SECURE:-}" ]]; then
	(cd "$REPO_DIR" && go run ./tools/gencert "$LOG_DIR")
	cat >"$LOG_DIR/users.acl" <<-'ACL'
		# e2e/run.sh, E2E_SECURE=1
		user default on >e2e-admin allkeys allchannels +@all
		user game on >e2e-game ~e2e:* ~room:* &e2e:* +@read +@write +@pubsub +@connection +@transaction +@scripting -@dangerous +info
	ACL
	SECURE_ENV=(PROXY_TLS_CERT="$LOG_DIR/tls.crt" PROXY_TLS_KEY="$LOG_DIR/tls.key" PROXY_ACL_FILE="$LOG_DIR/users.acl")
	CLI_OPTS=(--tls --cacert "$LOG_DIR/ca.crt" --user default --pass e2e-admin --no-auth-warning)
	PROXY_URL="rediss://game:e2e-game@localhost:$PROXY_PORT"
	export E2E_CA="$LOG_DIR/ca.crt"
fi
env "${SECURE_ENV[@]}" ROOM_STORE_PATH="${ROOM_STORE_PATH:-$LOG_DIR/rooms.db}" "$BIN" -proxy-addr "127.0.0.1:$PROXY_PORT" -metrics-addr "" \
	-redis-url "redis://127.0.0.1:$REDIS_PORT" -log-level warn \
	>"$LOG_DIR/proxy.log" 2>&1 &
PROXY_PID=$!
wait_ping "$PROXY_PORT" "$PROXY_PID" roomproxy "$LOG_DIR/proxy.log" "${CLI_OPTS[@]}"
echo "e2e: redis-server on 127.0.0.1:$REDIS_PORT, roomproxy on 127.0.0.1:$PROXY_PORT" >&2

if [[ ! -d "$E2E_DIR/node_modules" ]]; then
	echo "e2e: npm ci" >&2
	(cd "$E2E_DIR" && npm ci --no-audit --no-fund)
fi

status=0
(
	cd "$E2E_DIR"
	ROOMPROXY_URL="$PROXY_URL" \
	REDIS_DIRECT_URL="redis://127.0.0.1:$REDIS_PORT" \
	node run.mjs "$@"
) || status=$?

if [[ -s "$LOG_DIR/proxy.log" ]]; then
	echo "e2e: roomproxy log (warn and above):" >&2
	tail -n 50 "$LOG_DIR/proxy.log" >&2
fi
exit "$status"
