#!/bin/sh
# Runs the CUnit suite against a private sluice-mockapi and redis-server on
# free loopback ports, and stops both on any exit.
#   tests/run.sh [SUITE ...]      (BUILD selects the build directory)
set -eu

BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
runner="$top/$BUILD/tests/sluice-tests"
mockapi="$top/$BUILD/sluice-mockapi"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-check.XXXXXX")
mock_pid="" redis_pid="" cluster_dir="" sentinel_dir="" nginx_dir=""

cleanup() {
    [ -z "$cluster_dir" ] || "$top/tests/cluster.sh" stop "$cluster_dir" || true
    [ -z "$sentinel_dir" ] || "$top/tests/sentinel.sh" stop "$sentinel_dir" || true
    [ -z "$nginx_dir" ] || "$top/tests/nginx-h2.sh" stop "$nginx_dir" || true
    [ -z "$mock_pid" ] || kill "$mock_pid" 2>/dev/null || true
    [ -z "$redis_pid" ] || kill "$redis_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "run.sh: $*" >&2; exit 1; }

[ -x "$runner" ] || fail "$runner is not built (make check builds it)"
[ -x "$mockapi" ] || fail "$mockapi is not built"
command -v redis-server >/dev/null || fail "redis-server is not installed (tools/install-deps.sh)"

# The mock API picks its own port and writes it down; it also exits by
# itself after an hour in case this script is killed hard.
"$mockapi" --port-file "$tmp/http.port" --exit-after 3600 >"$tmp/mockapi.log" 2>&1 &
mock_pid=$!
i=0
while [ ! -s "$tmp/http.port" ]; do
    i=$((i + 1)); [ $i -lt 300 ] || fail "sluice-mockapi did not start: $(cat "$tmp/mockapi.log")"
    sleep 0.01
done
http_port=$(cat "$tmp/http.port")

# redis-server has no "pick a port"; try random high ports until one binds.
for attempt in 1 2 3 4 5 6 7 8; do
    redis_port=$(( 20000 + ($(od -An -N2 -tu2 /dev/urandom) % 30000) ))
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    i=0
    while [ $i -lt 200 ]; do
        if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then break 2; fi
        kill -0 "$redis_pid" 2>/dev/null || break
        i=$((i + 1)); sleep 0.02
    done
    kill "$redis_pid" 2>/dev/null || true
    redis_pid=""
done
[ -n "$redis_pid" ] || fail "redis-server did not start: $(cat "$tmp/redis.log")"

# Factories read proxy variables as curl does; the suites talk to loopback
# servers directly (test_proxy_conn sets its own).
unset http_proxy https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
export SLUICE_TEST_HTTP="127.0.0.1:$http_port"
export SLUICE_TEST_REDIS="redis://127.0.0.1:$redis_port"
export SLUICE_TEST_MOCKAPI="$mockapi"
export SLUICE_TEST_REDIS_SERVER=$(command -v redis-server)
export SLUICE_TEST_TMP="$tmp"
export SLUICE_TEST_BUILD="$top/$BUILD"
if [ -x "$top/tests/gen-certs.sh" ]; then
    "$top/tests/gen-certs.sh" "$tmp/certs" >"$tmp/certs.log" 2>&1 ||
        fail "test certificates could not be made: $(cat "$tmp/certs.log")"
    export SLUICE_TEST_CERTS="$tmp/certs"
fi
echo "run.sh: mock API on $SLUICE_TEST_HTTP, redis on $SLUICE_TEST_REDIS"

# runs SUITE: whether this run includes SUITE (every suite when none is named).
suites=" $* "
runs() { [ "$suites" = "  " ] || case $suites in *" $1 "*) true ;; *) false ;; esac; }

# The cluster suite gets a private 3-primary, 3-replica Redis Cluster, started
# only when it runs (a few seconds).
if runs redis_cluster; then
    cluster_dir="$tmp/cluster"
    SLUICE_TEST_CLUSTER=$("$top/tests/cluster.sh" start "$cluster_dir") ||
        fail "the test Redis Cluster did not start"
    export SLUICE_TEST_CLUSTER
    echo "run.sh: redis cluster on $SLUICE_TEST_CLUSTER"
fi

# The sentinel suite gets a private primary, replica and three sentinels,
# started only when it runs (several seconds: the sentinels must find each
# other).
if runs sentinel; then
    sentinel_dir="$tmp/sentinel"
    SLUICE_TEST_SENTINEL=$("$top/tests/sentinel.sh" start "$sentinel_dir") ||
        fail "the test Redis Sentinel deployment did not start"
    export SLUICE_TEST_SENTINEL
    echo "run.sh: redis sentinel on $SLUICE_TEST_SENTINEL"
fi

# The HTTP/2 interop suite gets a private nginx (TLS with ALPN h2, and h2c).
if runs h2_interop; then
    nginx_dir="$tmp/nginx-h2"
    urls=$("$top/tests/nginx-h2.sh" start "$nginx_dir" "$SLUICE_TEST_CERTS") ||
        fail "the test nginx did not start"
    export SLUICE_TEST_NGINX_H2="${urls% *}" SLUICE_TEST_NGINX_H2C="${urls#* }"
    echo "run.sh: nginx (HTTP/2) on $urls"
fi

# A hard cap so a hung test can never hold CI.
timeout --foreground -k 10 ${SLUICE_TEST_TIMEOUT:-900} "$runner" "$@"
