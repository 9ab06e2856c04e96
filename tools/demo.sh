#!/bin/sh
# make demo: start the mock API (and a private redis-server when one is
# installed), run the worker-threads demo against it, stop both.
set -eu
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-demo.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

"$top/$BUILD/sluice-mockapi" --port-file "$tmp/port" --exit-after 600 --quiet >/dev/null 2>&1 &
pids="$!"
i=0
while [ ! -s "$tmp/port" ]; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "demo: mock API did not start" >&2; exit 1; }
    sleep 0.01
done
base="http://127.0.0.1:$(cat "$tmp/port")"

# A port another program holds makes redis-server exit: try a few.
if [ -z "${SLUICE_REDIS_URL:-}" ] && command -v redis-server >/dev/null; then
    for attempt in 1 2 3 4 5; do
        port=$(( 20000 + ($(od -An -N2 -tu2 /dev/urandom) % 30000) ))
        timeout 600 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
            --daemonize no >"$tmp/redis.log" 2>&1 &
        rpid=$!
        pids="$pids $rpid"
        i=0
        while ! redis-cli -p "$port" ping >/dev/null 2>&1; do
            kill -0 "$rpid" 2>/dev/null || break
            i=$((i + 1)); [ $i -lt 200 ] || break
            sleep 0.02
        done
        if redis-cli -p "$port" ping >/dev/null 2>&1; then
            export SLUICE_REDIS_URL="redis://127.0.0.1:$port"
            break
        fi
    done
fi

"$top/$BUILD/examples/worker_threads" "$base" "${DEMO_THREADS:-8}" "${DEMO_SECONDS:-5}"
