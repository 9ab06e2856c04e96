#!/bin/sh
# A private Redis Sentinel deployment for the sentinel suite: one primary,
# one replica and three sentinels monitoring them as master "sluice-test",
# all on free 127.0.0.1 ports, each process stopping by itself after an
# hour should nobody stop it.
#   tests/sentinel.sh start DIR   prints "redis+sentinel://127.0.0.1:S1,.../sluice-test"
#   tests/sentinel.sh stop DIR    stops every process started in DIR
# tests/run.sh starts it only when the sentinel suite runs (or all do), and
# stops it on any exit.
set -eu

cmd=${1:-} dir=${2:-}
name=sluice-test
[ -n "$dir" ] || { echo "usage: tests/sentinel.sh start|stop DIR" >&2; exit 2; }

stop() {
    [ -f "$dir/sentinel.pids" ] || return 0
    pids=$(cat "$dir/sentinel.pids")
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.02; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -f "$dir/sentinel.pids"
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: tests/sentinel.sh start|stop DIR" >&2; exit 2 ;;
esac

# Stops what this script started when it fails half-way.
trap 'rc=$?; [ $rc = 0 ] || stop; exit $rc' EXIT
trap 'exit 130' INT TERM

# Polls `$@` up to $tries times, 50 ms apart.
wait_for() {
    tries=$1; shift
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt "$tries" ] || return 1; sleep 0.05
    done
}

pong() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

replica_linked() {
    redis-cli -h 127.0.0.1 -p "$1" info replication 2>/dev/null | grep -q '^master_link_status:up'
}

# Every sentinel knows the replica and the two other sentinels.
sentinels_agree() {
    for s in $sentinel_ports; do
        info=$(redis-cli -h 127.0.0.1 -p "$s" sentinel master "$name" 2>/dev/null) || return 1
        printf '%s\n' "$info" | grep -A1 -x 'num-other-sentinels' | tail -1 | grep -qx 2 || return 1
        printf '%s\n' "$info" | grep -A1 -x 'num-slaves' | tail -1 | grep -qx 1 || return 1
    done
}

# redis-server has no "pick a port": five random ones, tried again on a clash.
start_server() {   # start_server PORT ARGS...
    p=$1; shift
    mkdir -p "$dir/$p"
    timeout 3600 redis-server "$@" >"$dir/$p/log" 2>&1 &
    echo $! >>"$dir/sentinel.pids"
}

mkdir -p "$dir"
for _ in 1 2 3 4 5; do
    base=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 25000 ))
    primary=$base replica=$((base + 1))
    sentinel_ports="$((base + 2)) $((base + 3)) $((base + 4))"
    : >"$dir/sentinel.pids"
    rm -rf "$dir/$primary" "$dir/$replica"
    start_server "$primary" --port "$primary" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir/$primary" --daemonize no
    start_server "$replica" --port "$replica" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir/$replica" --daemonize no --replicaof 127.0.0.1 "$primary"
    if wait_for 150 pong "$primary" && wait_for 150 pong "$replica" &&
        wait_for 200 replica_linked "$replica"; then
        for s in $sentinel_ports; do
            rm -rf "${dir:?}/$s"
            mkdir -p "$dir/$s"
            # Sentinels rewrite their configuration file: each has its own.
            cat >"$dir/$s/sentinel.conf" <<EOF
port $s
bind 127.0.0.1
daemonize no
dir $dir/$s
sentinel announce-ip 127.0.0.1
sentinel monitor $name 127.0.0.1 $primary 2
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 3000
sentinel parallel-syncs $name 1
EOF
            start_server "$s" "$dir/$s/sentinel.conf" --sentinel
        done
        up=1
        for s in $sentinel_ports; do wait_for 150 pong "$s" || up=0; done
        if [ $up = 1 ] && wait_for 600 sentinels_agree; then
            url=redis+sentinel://
            sep=
            for s in $sentinel_ports; do url="$url${sep}127.0.0.1:$s"; sep=,; done
            echo "$url/$name"
            exit 0
        fi
    fi
    stop
done
echo "tests/sentinel.sh: the sentinels never agreed on master $name; last logs:" >&2
tail -n 5 "$dir"/*/log >&2 2>/dev/null || true
exit 1
