#!/usr/bin/env bash
# The container image, as near as this machine can run it without a Docker
# engine: builds roomproxy with the Dockerfile's own build command, lays out a
# root file system like gcr.io/distroless/static-debian12:nonroot (passwd and
# group with nonroot 65532, /home/nonroot owned by it, /tmp, the CA bundle, no
# shell), and starts the binary chrooted there as the Dockerfile's USER, in
# its WORKDIR, with its ENV, inside a network namespace of its own (so the
# image's 0.0.0.0 addresses reach nothing but that namespace's loopback).
# Checks: without PROXY_PASSWORD it refuses to start; with one, the
# zero-configuration default serves (AUTH, a room write and read, /readyz),
# writes its embedded store into the working directory, and exits 0 on SIGTERM.
#
# What it cannot check: the base image's real contents and the image build
# itself (no Docker engine here). Needs root (chroot, network namespaces);
# without root it says so and exits 0.
#
#   bash scripts/image-smoke.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$(id -u)" -ne 0 ]; then
  echo "image-smoke: skipped (needs root for chroot and a network namespace)"
  exit 0
fi
for tool in unshare ip redis-cli readelf; do
  command -v "$tool" >/dev/null || { echo "image-smoke: '$tool' not found" >&2; exit 2; }
done

dockerfile="$root/Dockerfile"
# The final stage: everything after the last FROM.
final="$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$dockerfile")"
build="$(grep -E '^RUN .*go build' "$dockerfile" | sed 's/^RUN //')"
user="$(printf '%s' "$final" | awk '$1=="USER"{print $2}' | tail -n1)"
workdir="$(printf '%s' "$final" | awk '$1=="WORKDIR"{print $2}' | tail -n1)"
envs="$(printf '%s' "$final" | awk '$1=="ENV"{$1=""; print}')"
entry="$(printf '%s' "$final" | sed -n 's/^ENTRYPOINT \["\([^"]*\)"\]$/\1/p')"
[ -n "$build" ] && [ -n "$user" ] && [ -n "$entry" ] || { echo "image-smoke: could not read the Dockerfile" >&2; exit 2; }
[ "$user" = "nonroot:nonroot" ] || { echo "image-smoke: USER $user: this script knows only nonroot:nonroot" >&2; exit 2; }
# Without a WORKDIR of its own the image keeps its base's: distroless's
# nonroot images set /home/nonroot (GoogleContainerTools/distroless#718).
workdir="${workdir:-/home/nonroot}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/roomproxy-image.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
rootfs="$tmp/rootfs"

build="${build//\/out\//$tmp/}"
echo "image-smoke: $build"
(cd "$root" && eval "$build")
if readelf -l "$tmp/roomproxy" | grep -q INTERP; then
  echo "image-smoke: FAIL: the binary is dynamically linked; distroless/static has no libc" >&2
  exit 1
fi

mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
chown 65532:65532 "$rootfs/home/nonroot"
chmod 700 "$rootfs/home/nonroot"
chmod 1777 "$rootfs/tmp"
cp "$tmp/roomproxy" "$rootfs$entry"

# The inside of the namespaces: the checks, in one script that is the
# process namespace's init, so that every process it started ends with it.
cat >"$tmp/inside.sh" <<'EOF'
set -euo pipefail
ip link set lo up
rootfs="$1" workdir="$2" entry="$3"; shift 3
run() { # env assignments...: the image's process, with only that environment
  exec ${WRAP:-} env -i "$@" unshare --root="$rootfs" --wd="$workdir" --setuid 65532 --setgid 65532 "$entry"
}
# 1. The image's ENV alone listens on 0.0.0.0 without a password: refused.
if out="$(WRAP="timeout 20"; eval "run $IMAGE_ENV" 2>&1 </dev/null)"; then
  echo "image-smoke: FAIL: started on 0.0.0.0 without PROXY_PASSWORD" >&2; exit 1
fi
grep -q PROXY_PASSWORD <<<"$out" || { echo "image-smoke: FAIL: refusal does not name PROXY_PASSWORD: $out" >&2; exit 1; }
echo "image-smoke: ok: no PROXY_PASSWORD, refused: $(tail -n1 <<<"$out" | cut -c1-160)"

# 2. With a password: the zero-configuration default serves.
eval "run $IMAGE_ENV PROXY_PASSWORD=smoke-secret" >"$LOG" 2>&1 &
pid=$!
port="${PROXY_PORT:-6380}"
cli() { redis-cli -p "$port" -a smoke-secret --no-auth-warning "$@"; }
for i in $(seq 1 100); do
  [ "$(cli PING 2>/dev/null)" = PONG ] && break
  kill -0 "$pid" 2>/dev/null || { echo "image-smoke: FAIL: exited; its log:" >&2; cat "$LOG" >&2; exit 1; }
  [ "$i" -lt 100 ] || { echo "image-smoke: FAIL: no PONG on port $port within 10 s; log:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
[ "$(redis-cli -p "$port" PING 2>&1)" != PONG ] || { echo "image-smoke: FAIL: PING without AUTH answered" >&2; exit 1; }
[ "$(cli SET room:smoke '{"status":"active"}')" = OK ] || { echo "image-smoke: FAIL: room write" >&2; cat "$LOG" >&2; exit 1; }
[ "$(cli GET room:smoke)" = '{"status":"active"}' ] || { echo "image-smoke: FAIL: room read" >&2; exit 1; }
ttl="$(cli TTL room:smoke)"
[ "$ttl" -gt 3500 ] || { echo "image-smoke: FAIL: room TTL $ttl" >&2; exit 1; }
exec 3<>/dev/tcp/127.0.0.1/"${METRICS_PORT:-9380}"
printf 'GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n' >&3
status="$(head -n1 <&3)"
exec 3<&-
grep -q ' 200 ' <<<"$status" || { echo "image-smoke: FAIL: /readyz: $status" >&2; exit 1; }
echo "image-smoke: ok: AUTH, room write and read (TTL $ttl s), /readyz $status"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || { echo "image-smoke: FAIL: exit $rc after SIGTERM; log:" >&2; cat "$LOG" >&2; exit 1; }
echo "image-smoke: ok: exit 0 after SIGTERM"
EOF

# The image's ENV, and where its ports are (the defaults unless ENV moves them).
proxy_port="$(sed -n 's/.*PROXY_ADDR=[^ ]*:\([0-9]*\).*/\1/p' <<<"$envs")"
metrics_port="$(sed -n 's/.*METRICS_ADDR=[^ ]*:\([0-9]*\).*/\1/p' <<<"$envs")"
IMAGE_ENV="$envs" LOG="$tmp/proxy.log" PROXY_PORT="${proxy_port:-6380}" METRICS_PORT="${metrics_port:-9380}" \
  timeout 120 unshare --net --pid --fork --kill-child bash "$tmp/inside.sh" "$rootfs" "$workdir" "$entry"

store="$(find "$rootfs" -name '*.db' -newer "$rootfs$entry" | sed "s|^$rootfs||")"
[ -n "$store" ] || { echo "image-smoke: FAIL: no embedded store file written" >&2; exit 1; }
case "$store" in
  "$workdir"/*) ;;
  *) echo "image-smoke: FAIL: store at $store, outside WORKDIR $workdir" >&2; exit 1 ;;
esac
echo "image-smoke: ok: embedded store at $store"
echo "image-smoke: passed"
