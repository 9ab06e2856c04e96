#!/bin/sh
# A private Redis Cluster for the cluster suites: 3 primaries and 3
# replicas on free 127.0.0.1 ports, each redis-server stopping by itself
# after an hour should nobody stop it.
#   tests/cluster.sh start DIR   prints the seed list "127.0.0.1:P1,..."
#   tests/cluster.sh stop DIR    stops every node started in DIR
# tests/run.sh starts it only when a cluster suite runs, and stops it on
# any exit.  It is ready once every node says cluster_state:ok and every
# replica has synced (so a killed primary can fail over).  cluster.pids
# may hold more pids than nodes: a test that restarts a node appends its.
set -eu

cmd=${1:-} dir=${2:-}
[ -n "$dir" ] || { echo "usage: tests/cluster.sh start|stop DIR" >&2; exit 2; }

stop() {
    [ -f "$dir/cluster.pids" ] || return 0
    pids=$(cat "$dir/cluster.pids")
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.02; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -f "$dir/cluster.pids"
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: tests/cluster.sh start|stop DIR" >&2; exit 2 ;;
esac

mkdir -p "$dir"
# Six consecutive ports whose cluster bus ports (+10000) exist too.
for _ in 1 2 3 4 5; do
    base=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 25000 ))
    : >"$dir/cluster.pids"
    addrs=""
    for i in 0 1 2 3 4 5; do
        p=$((base + i))
        mkdir -p "$dir/node-$p"
        rm -f "$dir/node-$p/nodes.conf"
        timeout 3600 redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$dir/node-$p" --cluster-enabled yes --cluster-node-timeout 1000 \
            --repl-diskless-sync-delay 0 \
            --cluster-config-file nodes.conf --daemonize no >"$dir/node-$p/log" 2>&1 &
        echo $! >>"$dir/cluster.pids"
        addrs="$addrs 127.0.0.1:$p"
    done
    up=1
    for a in $addrs; do
        i=0
        until redis-cli -p "${a##*:}" ping >/dev/null 2>&1; do
            i=$((i + 1)); [ $i -lt 150 ] || { up=0; break; }; sleep 0.02
        done
    done
    # shellcheck disable=SC2086
    if [ $up = 1 ] && redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes \
        >"$dir/create.log" 2>&1; then
        ok=0
        i=0
        while [ $i -lt 300 ]; do
            ok=1
            for a in $addrs; do
                redis-cli -p "${a##*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
                # A replica that has not synced yet could not take over
                # (a test kills a primary).
                info=$(redis-cli -p "${a##*:}" info replication 2>/dev/null | tr -d '\r')
                case $info in
                *role:slave*) echo "$info" | grep -q '^master_link_status:up' || ok=0 ;;
                esac
            done
            [ $ok = 1 ] && break
            i=$((i + 1)); sleep 0.05
        done
        if [ $ok = 1 ]; then
            echo "$addrs" | sed 's/^ //; s/ /,/g'
            exit 0
        fi
    fi
    stop
done
echo "tests/cluster.sh: no cluster reached cluster_state:ok; last attempt:" >&2
cat "$dir/create.log" >&2 2>/dev/null || true
exit 1
