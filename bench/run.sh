#!/bin/sh
# The performance report: sluice and its peers side by side, in one run,
# on this machine, over loopback only.  `make bench` runs it.
#
# It starts nginx (from bench/nginx.conf.in), a private redis-server and
# the mock API on free 127.0.0.1 ports, runs each scenario for sluice and
# its peer with the order alternating between rounds, prints one table and
# writes it with the raw numbers to bench/results.md (and the latency CDF
# to bench/latency.png when gnuplot is installed).  Everything it starts
# stops when it exits, and each server also stops by itself after
# BENCH_SERVER_LIFE seconds should this script be killed hard.
#
#   BUILD=build bench/run.sh
#   BENCH_SECONDS  length of one timed run (default 2)
#   BENCH_ROUNDS   rounds per timed scenario (default 5); medians reported
#   BENCH_COAL_ROUNDS  rounds of 1 s for the coalescer-cost pair (default 60)
#   BENCH_PIN      1 (default): servers on CPU 0, load generators on CPU 1
#   BENCH_OUT      the report (default bench/results.md; "-" = none)
#   BENCH_ONLY     the scenarios to run, by letter (e.g. "a i"; default all)
#   BENCH_OVERLOAD_SECONDS  one timed run of row n (default 6)
#   BENCH_H2_SECONDS  one timed run of rows s-u, HTTP/2 (default 1)
set -eu

BUILD=${BUILD:-build}
S=${BENCH_SECONDS:-2}
R=${BENCH_ROUNDS:-5}
top=$(cd "$(dirname "$0")/.." && pwd)
out=${BENCH_OUT:-$top/bench/results.md}
life=${BENCH_SERVER_LIFE:-900}
bin="$top/$BUILD"
sb="$bin/sluice-bench"
bc="$bin/bench/bench_curl"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
nginx_pid="" redis_pid="" mock_pid=""
tp_pid="" cluster_dir=""

cleanup() {
    [ -z "${cg_made:-}" ] || limiter_throttle off
    [ -z "$cluster_dir" ] || "$top/tests/cluster.sh" stop "$cluster_dir" || true
    for p in $nginx_pid $redis_pid $mock_pid $tp_pid; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
fail() { say "bench/run.sh: $*"; exit 1; }

# --- programs -------------------------------------------------------------

[ -x "$sb" ] || fail "$sb is not built (make bench builds it)"
[ -x "$bin/sluice-mockapi" ] || fail "$bin/sluice-mockapi is not built"
for p in nginx redis-server wrk valgrind; do
    command -v $p >/dev/null || fail "$p is not installed (tools/install-deps.sh --bench)"
done
# The peer programs: every bench/NAME.c, built with the Makefile's rule.
peers=""
for f in "$top"/bench/*.c; do
    [ -e "$f" ] && peers="$peers $BUILD/bench/$(basename "$f" .c)"
done
# shellcheck disable=SC2086
(cd "$top" && ${MAKE:-make} --no-print-directory BUILD="$BUILD" $peers >"$tmp/make.log" 2>&1) ||
    fail "building the peers failed: $(tail -20 "$tmp/make.log")"

# 1000 idle connections (scenario g) need more descriptors than the default.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 2200 ] ||
    say "bench/run.sh: ulimit -n is $(ulimit -n): the idle-connection rows may fall short"

# --- servers --------------------------------------------------------------

# With two cores or more, the servers run on CPU 0 and the clients on CPU 1,
# so a client's own cost sets its pace instead of the scheduler's split of
# two cores between client, server and whatever else the machine runs.
srv_pin="" cli_pin="" workers=2
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    srv_pin="taskset -c 0" cli_pin="taskset -c 1" workers=1
fi
pin=$cli_pin

rand_port() { echo $(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 30000 )); }

# Waits until a GET through sluice-bench answers 200 (n tries of 50 ms).
wait_http() {
    i=0
    while [ $i -lt "$2" ]; do
        "$sb" -t 1 -n 1 --json $3 "$1" 2>/dev/null | grep -q '"ok":1,' && return 0
        i=$((i + 1)); sleep 0.05
    done
    return 1
}

"$top/tests/gen-certs.sh" "$tmp/certs" >"$tmp/certs.log" 2>&1 ||
    fail "test certificates could not be made: $(cat "$tmp/certs.log")"
ca="$tmp/certs/ca.pem"

# Scenarios p and q: files for nginx (a sparse 100 MiB file, and about
# 100 KB of JSON with its gzip -6 form beside it for gzip_static).
mkdir -p "$tmp/www/files"
chmod 711 "$tmp"    # nginx's worker (nobody, when run as root) reads them
chmod 755 "$tmp/www" "$tmp/www/files"
truncate -s 100M "$tmp/www/files/100m.bin"
awk 'BEGIN { printf "["; for (i = 0; i < 1600; i++)
    printf "%s{\"id\":%d,\"name\":\"item-%d\",\"price\":%d.%02d,\"tags\":[\"a%d\",\"b%d\"]}",
        i ? "," : "", i, i, i * 7 % 1000, i % 100, i % 13, i % 7; printf "]\n" }' \
    >"$tmp/www/files/data.json"
gzip -6 -k "$tmp/www/files/data.json"

for attempt in 1 2 3 4 5 6 7 8; do
    port=$(rand_port); tls_port=$((port + 1)) h2_port=$((port + 2)) h2c_port=$((port + 3))
    sed -e "s|@TMP@|$tmp|g; s|@PORT@|$port|g; s|@TLS_PORT@|$tls_port|g; s|@CERTS@|$tmp/certs|g" \
        -e "s|@H2_PORT@|$h2_port|g; s|@H2C_PORT@|$h2c_port|g" \
        -e "s|@WORKERS@|$workers|g" "$top/bench/nginx.conf.in" >"$tmp/nginx.conf"
    $srv_pin timeout "$life" nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" \
        >"$tmp/nginx.out" 2>&1 &
    nginx_pid=$!
    if wait_http "127.0.0.1:$port" 60 "" && wait_http "127.0.0.1:$tls_port" 20 "--https --ca $ca" &&
        wait_http "127.0.0.1:$h2_port" 20 "--https --ca $ca" &&
        wait_http "127.0.0.1:$h2c_port" 20 "--http2 prior"; then
        break
    fi
    kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=""
done
[ -n "$nginx_pid" ] || fail "nginx did not start: $(cat "$tmp/nginx-error.log" "$tmp/nginx.out" 2>/dev/null)"
http="127.0.0.1:$port"
https="127.0.0.1:$tls_port"
h2s="127.0.0.1:$h2_port"
h2c="127.0.0.1:$h2c_port"

for attempt in 1 2 3 4 5 6 7 8; do
    redis_port=$(rand_port)
    $srv_pin timeout "$life" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    i=0
    while [ $i -lt 100 ]; do
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break 2
        kill -0 "$redis_pid" 2>/dev/null || break
        i=$((i + 1)); sleep 0.05
    done
    kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
done
[ -n "$redis_pid" ] || fail "redis-server did not start: $(cat "$tmp/redis.log")"

$srv_pin "$bin/sluice-mockapi" --port-file "$tmp/mock.port" --exit-after "$life" --quiet \
    >"$tmp/mockapi.log" 2>&1 &
mock_pid=$!
i=0
while [ ! -s "$tmp/mock.port" ]; do
    i=$((i + 1)); [ $i -lt 200 ] || fail "sluice-mockapi did not start: $(cat "$tmp/mockapi.log")"
    sleep 0.02
done
mock="127.0.0.1:$(cat "$tmp/mock.port")"

load0=$(cut -d' ' -f1 /proc/loadavg)
say "bench: nginx on $http and $https (HTTP/2: $h2s, h2c $h2c), redis on 127.0.0.1:$redis_port, mock API on $mock"
say "bench: $R rounds of $S s per timed scenario, load average $load0"

# --- helpers --------------------------------------------------------------

# want LETTER: whether BENCH_ONLY asks for the scenario.
want() { [ -z "${BENCH_ONLY:-}" ] || case " $BENCH_ONLY " in *" $1 "*) true ;; *) false ;; esac; }
ka_round=""

# jget KEY: the value of a flat JSON member on stdin.
jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | head -1; }
# calc EXPR: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%s\", ($1) }" </dev/null; }
fmt0() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
# fx EXPR [DIGITS]: a ratio, "1.23x".
fx() { awk "BEGIN { printf \"%.${2:-2}fx\", $1 }" </dev/null; }
# med: the median of the numbers on stdin, one a line.
med() {
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2];
                                      else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# vals FILE KEY: "round value" for every JSON line of FILE, by round.
vals() { sed -n "s/^{\"round\":\([0-9]*\),.*\"$2\":\([^,}]*\).*/\1 \2/p" "$1" | sort -k1,1; }
# medv NAME WHO KEY: the median of KEY over the rounds of pair NAME.
medv() { vals "$tmp/$1.$2" "$3" | cut -d' ' -f2 | med; }
# ratio NAME KEY: the median over rounds of sluice's KEY / the peer's KEY in
# the same round (run back to back, so they saw the same machine).
ratio() {
    vals "$tmp/$1.sluice" "$2" >"$tmp/v.s"
    vals "$tmp/$1.peer" "$2" >"$tmp/v.p"
    join "$tmp/v.s" "$tmp/v.p" | awk '$3 > 0 { print $2 / $3 }' | med
}

table="$tmp/table.md"
details="$tmp/details.md"
: >"$table"
: >"$details"
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@" >>"$table"; }
detail() { printf '%s\n' "$*" >>"$details"; }
yesno() { if [ "$(calc "($1) ? 1 : 0")" = 1 ]; then echo yes; else echo no; fi; }

# pair NAME "SLUICE ARGS" "PEER PROGRAM AND ARGS": R rounds, order
# alternating, each run under $pin; lines in $tmp/NAME.sluice and
# $tmp/NAME.peer, latencies of round r in $tmp/NAME.TOOL.r.lat.
pair() {
    name=$1 sargs=$2 pargs=$3
    : >"$tmp/$name.sluice"; : >"$tmp/$name.peer"
    r=1
    while [ $r -le "$R" ]; do
        if [ $((r % 2)) = 1 ]; then order="sluice peer"; else order="peer sluice"; fi
        for who in $order; do
            if [ $who = sluice ]; then
                # shellcheck disable=SC2086
                $pin "$sb" $sargs -d "$S" --json --latency-out "$tmp/$name.sluice.$r.lat" |
                    sed "s/^{/{\"round\":$r,/" >>"$tmp/$name.sluice"
            else
                # shellcheck disable=SC2086
                $pin $pargs -d "$S" --json --latency-out "$tmp/$name.peer.$r.lat" |
                    sed "s/^{/{\"round\":$r,/" >>"$tmp/$name.peer"
            fi
        done
        r=$((r + 1))
    done
    detail "### $name"
    detail '```'
    cat "$tmp/$name.sluice" "$tmp/$name.peer" >>"$details"
    detail '```'
}

# rps_row LABEL NAME TARGET MIN_RATIO: median rps of each side, the median
# per-round ratio, and whether it reaches MIN_RATIO.
rps_row() {
    rr=$(ratio "$2" rps)
    row "$1" "$(fmt0 "$(medv "$2" sluice rps)") req/s" "$(fmt0 "$(medv "$2" peer rps)") req/s" \
        "$(fx "$rr")" "$3" "$(yesno "$rr >= $4")"
}

# instr PROGRAM ARGS...: instructions per request inside one_get (callgrind,
# 1 thread; 1200 minus 200 requests over 1000, so start-up and the first
# connection cancel out).
instr() {
    instr_in 'one_get*' "$@"
}

# Instructions per GET spent inside the functions FN matches (a callgrind
# --toggle-collect pattern; "" = the whole process, every thread), by the
# same difference of two runs.
instr_in() {
    fn=$1; shift
    prog=$1; shift
    for n in 200 1200; do
        valgrind --tool=callgrind ${fn:+--toggle-collect="$fn"} \
            --callgrind-out-file="$tmp/cg.$n.out" "$prog" -t 1 -n $n "$@" >/dev/null 2>"$tmp/cg.$n.log" ||
            fail "callgrind run failed: $(tail -5 "$tmp/cg.$n.log")"
        eval "cg$n=\$(sed -n 's/.*Collected : *//p' \"\$tmp/cg.\$n.log\")"
    done
    # shellcheck disable=SC2154
    echo $(( (cg1200 - cg200) / 1000 ))
}

# --- a. keep-alive GET, 8 threads ------------------------------------------

if want a; then
say "bench: a. keep-alive GET, 8 threads"
pair ka "-t 8 -c 8 $http" "$bc -t 8 -c 8 $http"
rps_row "a. keep-alive GET, 8 threads: throughput (sluice one shared pool; libcurl a handle per thread)" \
    ka ">= 1.25x" 1.25
rr=$(ratio ka p99_us)
row "a. keep-alive GET, 8 threads: p99 latency (same runs)" "$(medv ka sluice p99_us) us" \
    "$(medv ka peer p99_us) us" "$(fx "$rr")" "sluice <= libcurl" "$(yesno "$rr <= 1")"
row "a. keep-alive GET, 8 threads: client CPU per GET, user + system (same runs)" \
    "$(medv ka sluice cpu_us) us" "$(medv ka peer cpu_us) us" "$(fx "$(ratio ka cpu_us)")" "(reported)" "-"
# The round whose ratio is the median gives the latency CDF.
vals "$tmp/ka.sluice" rps >"$tmp/v.s"; vals "$tmp/ka.peer" rps >"$tmp/v.p"
ka_round=$(join "$tmp/v.s" "$tmp/v.p" | awk '$3 > 0 { print $2 / $3, $1 }' | sort -g |
           awk -v n="$R" 'NR == int((n + 1) / 2) { print $2 }')
wrk_threads=2
[ -z "$cli_pin" ] || wrk_threads=1
: >"$tmp/wrk"
r=1
while [ $r -le "$R" ]; do
    w=$($pin wrk -t $wrk_threads -c 8 -d "${S}s" "http://$http/" 2>&1 | sed -n 's/^Requests\/sec: *//p')
    detail "wrk round $r: ${w:-failed} req/s"
    [ -z "$w" ] || echo "$w" >>"$tmp/wrk"
    r=$((r + 1))
done
wrk_med=$(med <"$tmp/wrk")
row "a. wrk, $wrk_threads thread(s) x 8 connections (the ceiling for plain keep-alive)" "-" \
    "$(fmt0 "$wrk_med") req/s" "$(fx "$(medv ka sluice rps) / ($wrk_med + 0.001)")" \
    "(ceiling; ratio: sluice / wrk)" "-"

if [ -n "$cli_pin" ]; then
    pin=""
    pair ka_free "-t 8 -c 8 $http" "$bc -t 8 -c 8 $http"
    pin=$cli_pin
    rps_row "a. the same with the clients not pinned: client, server and other work share both cores" \
        ka_free "(reported)" 1.25
    sed -i '$ s/| \(yes\|no\) |$/| - |/' "$table"
fi
fi

# --- b. 32 threads sharing 8 connections ------------------------------------

if want b; then
say "bench: b. 32 threads sharing 8 connections"
pair share "-t 32 -c 8 $http" "$bc --share -t 32 -c 8 $http"
rps_row "b. 32 threads sharing 8 connections (libcurl: share interface, CURLOPT_MAXCONNECTS 8)" \
    share "> 1x (sluice faster)" 1.0000001
row "b. connections opened per run (median)" "$(medv share sluice created)" \
    "$(medv share peer created)" "-" "(reported)" "-"
fi

# --- c. instructions per keep-alive GET --------------------------------------

if want c; then
say "bench: c. instructions per keep-alive GET (callgrind)"
ci_s=$(instr "$sb" "$http")
ci_p=$(instr "$bc" "$http")
row "c. instructions per keep-alive GET (callgrind, 1 thread, coalescing off)" "$ci_s" "$ci_p" \
    "1/$(fx "$ci_p / $ci_s" 1 | tr -d x)" "<= 10,000 and <= 1/6 of libcurl" \
    "$(yesno "$ci_s <= 10000 && $ci_s * 6 <= $ci_p")"
fi

# --- d. HTTPS -----------------------------------------------------------------

if want d; then
say "bench: d. HTTPS keep-alive and churn"
pair tls "-t 8 -c 8 --https --ca $ca $https" "$bc -t 8 -c 8 --https --ca $ca $https"
rps_row "d. HTTPS keep-alive GET, 8 threads" tls ">= 1.1x" 1.1
pair churn "-t 8 -c 8 --close --https --ca $ca $https" "$bc -t 8 -c 8 --close --https --ca $ca $https"
rps_row "d. HTTPS churn: Connection: close, a new TLS connection per GET, 8 threads" churn ">= 1.0x" 1.0
row "d. sluice TLS handshakes per churn run (median): full / resumed" \
    "$(medv churn sluice tls_full) / $(medv churn sluice tls_resumed)" "-" "-" "(reported)" "-"
fi

# --- e. limiter -----------------------------------------------------------------

if want e; then
say "bench: e. limiter decisions per second"

# The Redis-bound regime: redis-server held to 25% of one core by a cgroup
# v1 cpu group (2.5 ms per 10 ms period), the position one Redis is in when
# a whole fleet shares it.  limiter_throttle on|off; cleanup() removes it.
cg_root=/sys/fs/cgroup/cpu
cg="$cg_root/sluice-redis-$$"
cg_made=""
redis_server_pid() { redis-cli -p "$redis_port" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p'; }
limiter_throttle() {
    if [ "$1" = on ]; then
        [ -d "$cg_root" ] || { echo "no cgroup v1 cpu controller at $cg_root"; return 1; }
        mkdir "$cg" 2>/dev/null || { echo "cannot create $cg (needs root)"; return 1; }
        cg_made=1
        echo 10000 >"$cg/cpu.cfs_period_us" && echo 2500 >"$cg/cpu.cfs_quota_us" &&
            redis_server_pid >"$cg/cgroup.procs" || { echo "cannot throttle redis-server in $cg"; return 1; }
    elif [ -n "$cg_made" ]; then
        redis_server_pid >"$cg_root/cgroup.procs" 2>/dev/null || true
        rmdir "$cg" 2>/dev/null || true
        cg_made=""
    fi
    return 0
}

# limiter_row LABEL THREADS TARGET [URL]: one bench_limiter run, one row
# (TARGET "reported": a ratio reported, no target).
limiter_row() {
    # shellcheck disable=SC2086
    if $pin "$bin/bench/bench_limiter" "${4:-redis://127.0.0.1:$redis_port}" "$S" 16 "$2" \
        >"$tmp/limiter.out" 2>&1; then
        lim_rc=0
    else
        lim_rc=$?
    fi
    detail "### limiter, $1, $2 threads (bench_limiter, exit status $lim_rc)"
    detail '```'
    cat "$tmp/limiter.out" >>"$details"
    detail '```'
    plain=$(sed -n 's/.*plain EVALSHA[^:]*: *\([0-9.]*\) decisions.*/\1/p' "$tmp/limiter.out" | head -1)
    batched=$(sed -n 's/.*(Redis, batched): *\([0-9.]*\) decisions.*/\1/p' "$tmp/limiter.out" | head -1)
    rcpu_p=$(sed -n 's/.*Redis CPU per decision[^:]*: plain \([0-9.]*\) us.*/\1/p' "$tmp/limiter.out" | head -1)
    rcpu_b=$(sed -n 's/.*Redis CPU per decision[^:]*: .*batched \([0-9.]*\) us.*/\1/p' "$tmp/limiter.out" | head -1)
    if [ -n "$plain" ] && [ -n "$batched" ]; then
        lr=$(calc "$batched / $plain")
        if [ "$3" = reported ]; then
            lt="(reported)" lm=$([ "$lim_rc" = 0 ] && echo - || echo no)
        else
            lt=">= ${3}x" lm=$(yesno "$lr >= $3 && $lim_rc == 0")
        fi
        row "e. limiter decisions/s, $2 threads, $1 (sluice batched vs one EVALSHA per decision; Redis CPU per decision)" \
            "$(fmt0 "$batched")/s, ${rcpu_b} us" "$(fmt0 "$plain")/s, ${rcpu_p} us" \
            "$(printf '%.2fx' "$lr")" "$lt" "$lm"
    else
        row "e. limiter decisions/s, $2 threads, $1" "failed (see below)" "-" "-" "-" "no"
    fi
}

if [ -x "$bin/bench/bench_limiter" ]; then
    for t in 8 32; do limiter_row "one Redis" "$t" 1.25; done
    if limiter_throttle on >"$tmp/throttle.why"; then
        for t in 8 32; do limiter_row "Redis held to 25% of a core" "$t" 3; done
    else
        row "e. limiter decisions/s, Redis held to 25% of a core" "skipped: $(cat "$tmp/throttle.why")" \
            "-" "-" ">= 3x" "-"
    fi
    limiter_throttle off
    # Redis Cluster: 3 primaries (and 3 replicas) of tests/cluster.sh, keys
    # on every shard; the plain loop sends each decision to its key's owner.
    cluster_dir="$tmp/cluster"
    if seeds=$("$top/tests/cluster.sh" start "$cluster_dir" 2>"$tmp/cluster.err"); then
        limiter_row "Redis Cluster of 3 primaries" 8 reported "redis+cluster://$seeds"
    else
        row "e. limiter decisions/s, Redis Cluster" "skipped: $(tail -1 "$tmp/cluster.err")" \
            "-" "-" "(reported)" "-"
    fi
    "$top/tests/cluster.sh" stop "$cluster_dir" || true
    cluster_dir=""
else
    row "e. limiter decisions/s" "not built" "-" "-" ">= 3x" "-"
fi
fi

# --- f. coalescing burst ----------------------------------------------------------

if want f; then
say "bench: f. 64 identical GETs to a 50 ms upstream"
: >"$tmp/burst"
r=1
while [ $r -le "$R" ]; do
    $pin "$sb" --burst 64 --path /delay/50 --hits-path /hits/delay/50 --json "$mock" >>"$tmp/burst" ||
        say "bench: burst round $r had errors"
    r=$((r + 1))
done
detail "### coalescing burst"
detail '```'
cat "$tmp/burst" >>"$details"
detail '```'
calls=$(sed -n 's/.*"upstream_calls":\([^,}]*\).*/\1/p' "$tmp/burst" | sort -u | tr '\n' ' ' | sed 's/ $//')
slow=$(sed -n 's/.*"slowest_us":\([^,}]*\).*/\1/p' "$tmp/burst" | med)
row "f. coalescing: 64 concurrent identical GETs, 50 ms upstream: upstream calls (every round)" \
    "$calls" "-" "-" "exactly 1" "$(yesno "\"$calls\" == \"1\"")"
row "f. coalescing: the slowest of the 64 callers (median)" "$(calc "$slow / 1000") ms" "-" \
    "$(fx "$slow / 50000") of 50 ms" "<= 60 ms (1.2x)" "$(yesno "$slow <= 60000")"
fi

# --- g. memory per idle connection ----------------------------------------------

if want g; then
say "bench: g. memory per idle pooled connection"
for kind in plain tls; do
    if [ $kind = plain ]; then args="$http"; else args="--https --ca $ca $https"; fi
    # shellcheck disable=SC2086
    if "$sb" --idle 1000 --json $args >"$tmp/idle.$kind" 2>"$tmp/idle.$kind.err"; then
        b=$(jget bytes_per_conn <"$tmp/idle.$kind")
        row "g. memory per idle pooled connection, $kind (RSS with 1000 idle minus none, / 1000)" \
            "$(awk -v b="$b" 'BEGIN { printf "%.1f", b / 1024 }') KiB" "-" "-" "(reported)" "-"
    else
        row "g. memory per idle pooled connection, $kind" "failed: $(head -c 120 "$tmp/idle.$kind.err" "$tmp/idle.$kind" | tr '\n|' '  ')" \
            "-" "-" "(reported)" "-"
    fi
    detail "idle $kind: $(cat "$tmp/idle.$kind")"
done
fi

# --- h. coalescer and metrics overhead --------------------------------------------

if want h; then
say "bench: h. coalescer overhead"
# A 2% difference is inside one run's noise on a shared machine, so this
# pair takes more, shorter rounds than the others (BENCH_COAL_ROUNDS).
R_all=$R S_all=$S
R=${BENCH_COAL_ROUNDS:-60} S=1
pair coal "-t 8 -c 8 --distinct --coalesce $http" "$sb -t 8 -c 8 --distinct $http"
R=$R_all S=$S_all
rr=$(ratio coal rps)
row "h. coalescer cost: keep-alive rps, coalescing on vs off, no two requests alike" \
    "$(fmt0 "$(medv coal sluice rps)") req/s on" "$(fmt0 "$(medv coal peer rps)") req/s off" \
    "$(fx "$rr" 3)" "cost <= 2% (>= 0.98x)" "$(yesno "$rr >= 0.98")"
co_on=$(instr "$sb" --distinct --coalesce "$http")
co_off=$(instr "$sb" --distinct "$http")
row "h. coalescer cost: instructions per GET, coalescing on vs off" "$co_on" "$co_off" \
    "$(fx "$co_on / $co_off")" "(reported)" "-"
# Recording is relaxed atomic adds in sl_metrics_* (and two clock reads
# the call makes anyway); its share of a GET's instructions bounds its
# share of the client's CPU per request.
[ -n "${ci_s:-}" ] || ci_s=$(instr "$sb" "$http")
mi=$(instr_in 'sl_metrics_*' "$sb" "$http")
row "h. metrics: instructions per GET inside the recording (sl_metrics_*), of the whole GET" \
    "$mi" "$ci_s" "$(awk -v a="$mi" -v b="$ci_s" 'BEGIN { printf "%.1f%%", 100 * a / b }')" \
    "cost <= 2%" "$(yesno "$mi <= 0.02 * $ci_s")"
fi

# --- i. many threads on few connections ---------------------------------------

# The pool's hand-off: a round runs the oversubscribed case and the one
# with a thread per connection back to back, so the ratio is of one
# machine state.  The checkout waits are those of the oversubscribed runs
# (queued checkouts only; the rest found a connection at once).
if want i; then
say "bench: i. many threads on few connections"
# oversub NAME THREADS CONNECTIONS TARGET (pair sets `name`, so ours is `on`)
oversub() {
    on=$1 t=$2 c=$3 target=$4
    pair "$on" "-t $t -c $c $http" "$sb -t $c -c $c $http"
    rr=$(ratio "$on" rps)
    row "i. $t threads on $c connections vs $c on $c (sluice both)" \
        "$(fmt0 "$(medv "$on" sluice rps)") req/s" "$(fmt0 "$(medv "$on" peer rps)") req/s" \
        "$(fx "$rr")" ">= ${target}x" "$(yesno "$rr >= $target")"
    p50=$(medv "$on" sluice wait_p50_us) p99=$(medv "$on" sluice wait_p99_us)
    wmax=$(medv "$on" sluice wait_max_us)
    row "i. $t on $c: checkout wait of queued checkouts, p50 / p99 / max (median over rounds)" \
        "$p50 / $p99 / $wmax us" "-" "p99 $(fx "$p99 / ($p50 + 0.001)" 1), max $(fx "$wmax / ($p50 + 0.001)" 1)" \
        "p99 <= 5x p50, max <= 20x" "$(yesno "$p99 <= 5 * $p50 && $wmax <= 20 * $p50")"
    pair "${on}_curl" "-t $t -c $c $http" "$bc --share -t $t -c $c $http"
    rps_row "i. $t threads on $c connections (libcurl: share interface, CURLOPT_MAXCONNECTS $c)" \
        "${on}_curl" "(reported)" 1
    sed -i '$ s/| \(yes\|no\) |$/| - |/' "$table"
}
oversub over8 64 8 0.85
oversub over32 256 32 0.8
fi

# --- r. through an HTTP proxy ---------------------------------------------------

# tinyproxy on loopback (listening, connecting out and serving clients on
# 127.0.0.1 only), CONNECT allowed to nginx's TLS port alone.  Through a
# CONNECT tunnel both clients keep their connections; tinyproxy 1.11 closes
# a plain-http client connection after each response, so the plain row is
# a new connection per GET for both.
if want r; then
say "bench: r. keep-alive GETs through tinyproxy"
command -v tinyproxy >/dev/null || fail "tinyproxy is not installed (tools/install-deps.sh)"
for attempt in 1 2 3 4 5 6 7 8; do
    tp_port=$(rand_port)
    printf 'Port %s\nListen 127.0.0.1\nBind 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 256\nConnectPort %s\nLogLevel Critical\n' \
        "$tp_port" "$tls_port" >"$tmp/tinyproxy.conf"
    $srv_pin timeout "$life" tinyproxy -d -c "$tmp/tinyproxy.conf" >"$tmp/tinyproxy.log" 2>&1 &
    tp_pid=$!
    wait_http "$http" 40 "--proxy http://127.0.0.1:$tp_port" && break
    kill "$tp_pid" 2>/dev/null || true; wait "$tp_pid" 2>/dev/null || true
    tp_pid=""
done
[ -n "$tp_pid" ] || fail "tinyproxy did not start: $(cat "$tmp/tinyproxy.log")"
proxy="--proxy http://127.0.0.1:$tp_port"
pair proxy_tls "-t 8 -c 8 --https --ca $ca $proxy $https" "$bc -t 8 -c 8 --https --ca $ca $proxy $https"
rps_row "r. HTTPS keep-alive GET through tinyproxy (CONNECT tunnels reused), 8 threads" \
    proxy_tls "(reported)" 1
sed -i '$ s/| \(yes\|no\) |$/| - |/' "$table"
row "r. tunnels opened per run (median)" "$(medv proxy_tls sluice created)" \
    "$(medv proxy_tls peer created)" "-" "(reported)" "-"
pair proxy_http "-t 8 -c 8 $proxy $http" "$bc -t 8 -c 8 $proxy $http"
rps_row "r. plain GET through tinyproxy (it closes each connection after the response), 8 threads" \
    proxy_http "(reported)" 1
sed -i '$ s/| \(yes\|no\) |$/| - |/' "$table"
kill "$tp_pid" 2>/dev/null || true; wait "$tp_pid" 2>/dev/null || true
tp_pid=""
fi

# --- p. a 100 MiB download streamed to a callback ------------------------------------
# One thread, one connection: sluice hands the body to on_body, libcurl to
# a write callback; both count and drop it.  MB/s from requests per second.
if want p; then
say "bench: p. 100 MiB streamed download"
pair stream "-t 1 -c 1 --stream --path /files/100m.bin $http" \
    "$bc -t 1 -c 1 --stream --path /files/100m.bin $http"
# MB/s of body bytes that arrived (errors bring none), per round.
for who in sluice peer; do
    sed -n 's/^{"round":\([0-9]*\),.*"seconds":\([^,]*\),.*"body_bytes":\([0-9]*\).*/\1 \3 \2/p' \
        "$tmp/stream.$who" | awk '{ printf "{\"round\":%s,\"mbs\":%.1f}\n", $1, $2 / $3 / 1e6 }' \
        >"$tmp/mbs.$who"
done
mbs() { medv mbs "$1" mbs; }
rr=$(ratio mbs mbs)
row "p. 100 MiB from nginx streamed to a callback, 1 thread: MB/s" "$(fmt0 "$(mbs sluice)") MB/s" \
    "$(fmt0 "$(mbs peer)") MB/s" "$(fx "$rr")" ">= 1.0x" "$(yesno "$rr >= 1.0")"
rss=$(medv stream sluice maxrss_kib)
row "p. peak RSS of that run (whole process)" "$(calc "$rss / 1024") MiB" \
    "$(calc "$(medv stream peer maxrss_kib) / 1024") MiB" "-" "<= 32 MiB" "$(yesno "$rss <= 32768")"
fi

# --- q. gzip JSON, decoded, keep-alive, 8 threads ------------------------------------
if want q; then
say "bench: q. gzip JSON, 8 threads"
pair gz "-t 8 -c 8 --gzip --path /files/data.json $http" \
    "$bc -t 8 -c 8 --gzip --path /files/data.json $http"
rps_row "q. ~100 KB JSON served gzip (~$(( $(wc -c <"$tmp/www/files/data.json.gz") / 1024 )) KiB on the wire), decoded, keep-alive, 8 threads" \
    gz ">= 1.0x" 1.0
fi

# --- n, o. the adaptive concurrency limit ------------------------------------------

ba="$bin/bench/bench_adaptive"
# gput NAME WHO: "round goodput" (2xx answers per second) for every round.
gput() {
    sed -n 's/^{"round":\([0-9]*\),.*"ok":\([0-9]*\),.*"seconds":\([0-9.]*\),.*/\1 \2 \3/p' \
        "$tmp/$1.$2" | awk '{ printf "%s %.1f\n", $1, ($3 > 0 ? $2 / $3 : 0) }' | sort -k1,1
}

# Overload: a server of capacity 8 (the mock API's /capacity: 10 ms, growing
# with the square of the overload), 64 threads, 2 s deadlines.  Without the
# limit all 64 calls sit in the server at once (640 ms each); with it the
# client keeps about what the server can take and the rest wait at home.
if want n; then
say "bench: n. overload against /capacity, adaptive concurrency on vs off"
S_all=$S sb_all=$sb
S=${BENCH_OVERLOAD_SECONDS:-6} sb=$ba
cap_path="/capacity?cap=8&ms=10"
pair cap "-t 64 -c 64 --adaptive --timeout 2000 --path $cap_path $mock" \
    "$ba -t 64 -c 64 --timeout 2000 --path $cap_path $mock"
S=$S_all sb=$sb_all
gput cap sluice >"$tmp/g.on"; gput cap peer >"$tmp/g.off"
g_on=$(cut -d' ' -f2 "$tmp/g.on" | med) g_off=$(cut -d' ' -f2 "$tmp/g.off" | med)
g_rr=$(join "$tmp/g.on" "$tmp/g.off" | awk '$3 > 0 { print $2 / $3 }' | med)
row "n. overload, /capacity cap 8 x 10 ms, 64 threads, 2 s deadlines: goodput (2xx/s), adaptive on vs off" \
    "$(fmt0 "$g_on") 2xx/s" "$(fmt0 "$g_off") 2xx/s" "$(fx "$g_rr")" ">= 4x" "$(yesno "$g_rr >= 4")"
p_on=$(medv cap sluice p99_us) p_off=$(medv cap peer p99_us)
row "n. overload: p99 of successful calls (median over rounds)" "$(calc "$p_on / 1000") ms" \
    "$(calc "$p_off / 1000") ms" "-" "< 2 s with the limit" "$(yesno "$p_on < 2000000")"
row "n. overload: errors per run (median), and the limit at the end" \
    "$(fmt0 "$(medv cap sluice errors)"), limit $(medv cap sluice limit)" \
    "$(fmt0 "$(medv cap peer errors)")" "-" "(reported)" "-"
fi

# What the limit costs when the upstream is healthy: nginx, 8 threads.
if want o; then
say "bench: o. healthy upstream, adaptive concurrency on vs off"
sb_all=$sb sb=$ba
pair heal "-t 8 -c 8 --adaptive $http" "$ba -t 8 -c 8 $http"
sb=$sb_all
rr=$(ratio heal rps)
row "o. healthy nginx, 8 threads: throughput, adaptive on vs off" \
    "$(fmt0 "$(medv heal sluice rps)") req/s on (limit $(medv heal sluice limit))" \
    "$(fmt0 "$(medv heal peer rps)") req/s off" "$(fx "$rr" 3)" "cost <= 5% (>= 0.95x)" \
    "$(yesno "$rr >= 0.95")"
ad_on=$(instr "$ba" --adaptive "$http")
ad_off=$(instr "$ba" "$http")
row "o. healthy nginx: instructions per GET, adaptive on vs off" "$ad_on" "$ad_off" \
    "$(fx "$ad_on / $ad_off" 3)" "cost <= 2% (<= 1.02x)" "$(yesno "$ad_on <= 1.02 * $ad_off")"
fi

# --- s, t, u, v. HTTP/2 ------------------------------------------------------------

# nginx's HTTP/2 servers: $h2s (TLS; ALPN h2, or http/1.1 for a client that
# offers only that) and $h2c (h2 by prior knowledge).  64 threads share one
# sluice client, so its requests are streams on one connection; the h1
# side of row u is sluice's HTTP/1.1 pool of 64 connections to the same
# TLS server.  --warmup 1 makes every connection before the clock starts.
# Three pairs of R rounds at 2 s would take a minute on their own, so
# these runs are 1 s (BENCH_H2_SECONDS): the four rows take about 45 s.

# conns NAME WHO: the connections each run opened, every distinct value.
conns() {
    sed -n 's/.*"conns":\([0-9]*\).*/\1/p' "$tmp/$1.$2" | sort -un | tr '\n' ' ' | sed 's/ $//'
}

# h2_row LABEL NAME TARGET MIN_RATIO: rps_row with the connections of
# every round beside each side's throughput.
h2_row() {
    rr=$(ratio "$2" rps)
    row "$1" "$(fmt0 "$(medv "$2" sluice rps)") req/s, conns $(conns "$2" sluice)" \
        "$(fmt0 "$(medv "$2" peer rps)") req/s, conns $(conns "$2" peer)" \
        "$(fx "$rr")" "$3" "$(yesno "$rr >= $4")"
}

h2_tls="-t 64 -c 64 --warmup 1 --https --ca $ca"
S_all=$S
S=${BENCH_H2_SECONDS:-1}
S_h2=$S
if want s || want t || want u; then say "bench: rows s-u: $R rounds of $S s"; fi

if want s; then
say "bench: s. HTTP/2 over TLS, 64 threads on one connection, against libcurl's multi handle"
pair h2curl "$h2_tls $h2s" "$bc --h2-multi 64 --warmup 1 --https --ca $ca $h2s"
h2_row "s. HTTP/2 over TLS, 64 threads sharing one connection (libcurl: one thread, a multi handle, 64 multiplexed transfers, CURL_HTTP_VERSION_2TLS)" \
    h2curl ">= 2x" 2
fi

if want t; then
say "bench: t. h2c, 64 threads on one connection, against h2load"
command -v h2load >/dev/null || fail "h2load is not installed (tools/install-deps.sh --bench)"
# h2load speaks for itself: a wrapper gives it the options and the JSON
# line of the other load programs.
cat >"$tmp/h2load-json" <<'EOF'
#!/bin/sh
# h2load-json [h2load options] URL -d SECONDS [--json] [--latency-out F]
args="" d=2
while [ $# -gt 0 ]; do
    case $1 in
    -d) d=$2; shift ;;
    --json) ;;
    --latency-out) shift ;;
    *) args="$args $1" ;;
    esac
    shift
done
# shellcheck disable=SC2086
out=$(h2load -D "$(awk -v d="$d" 'BEGIN { printf "%d", d * 1000 }')ms" $args 2>&1) || {
    printf '%s\n' "$out" >&2; exit 1; }
printf '%s\n' "$out" | awk '
    /^finished in/ { sub(/s,$/, "", $3); secs = $3; rps = $4 }
    /^requests:/ { total = $2; ok = $8; bad = $10 }
    END { printf "{\"tool\":\"h2load\",\"mode\":\"h2c\",\"requests\":%d,\"ok\":%d,\"errors\":%d,\"seconds\":%s,\"rps\":%s,\"conns\":1}\n",
                 total, ok, bad, secs, rps }'
EOF
chmod +x "$tmp/h2load-json"
pair h2load "-t 64 -c 64 --warmup 1 --http2 prior $h2c" "$tmp/h2load-json -c 1 -m 64 -t 1 http://$h2c/"
h2_row "t. h2c by prior knowledge, 64 threads sharing one connection (h2load -c 1 -m 64 -t 1: 64 streams in flight on one connection)" \
    h2load ">= 0.4x" 0.4
fi

if want u; then
say "bench: u. HTTP/2 on one connection against HTTP/1.1 on 64, sluice both"
pair h2h1 "$h2_tls $h2s" "$sb $h2_tls --http2 off $h2s"
h2_row "u. sluice over TLS, 64 threads: HTTP/2 on one connection vs its HTTP/1.1 pool of 64 connections" \
    h2h1 ">= 1.0x" 1.0
row "u. client CPU per request, user + system (same runs): HTTP/2 vs HTTP/1.1" \
    "$(medv h2h1 sluice cpu_us) us" "$(medv h2h1 peer cpu_us) us" "$(fx "$(ratio h2h1 cpu_us)")" \
    "(reported)" "-"
fi
S=$S_all

# The I/O thread of an HTTP/2 connection does a share of each request's
# work, outside the caller's one_get, so the whole process is counted too.
if want v; then
say "bench: v. instructions per request, HTTP/2 against HTTP/1.1 (callgrind)"
vi_h2=$(instr_in "" "$sb" --http2 prior "$h2c")
vi_h1=$(instr_in "" "$sb" "$http")
row "v. instructions per request, whole process, every thread (callgrind, 1 thread, coalescing off): h2c by prior knowledge vs HTTP/1.1, plain" \
    "$vi_h2" "$vi_h1" "$(fx "$vi_h2 / $vi_h1")" "(reported)" "-"
vo_h2=$(instr "$sb" --http2 prior "$h2c")
vo_h1=$(instr "$sb" "$http")
row "v. the same inside one_get, the calling thread only" "$vo_h2" "$vo_h1" "$(fx "$vo_h2 / $vo_h1")" \
    "(reported)" "-"
fi

# --- the report -----------------------------------------------------------------------

load1=$(cut -d' ' -f1 /proc/loadavg)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
machine="machine: $cpu; $(nproc) cores; Linux $(uname -r); load average $load0 at start, $load1 at end"
now=$(date -u '+%Y-%m-%d %H:%M UTC')

if command -v gnuplot >/dev/null && [ -s "$tmp/ka.sluice.$ka_round.lat" ]; then
    for who in sluice peer; do
        f="$tmp/ka.$who.$ka_round.lat"
        # Sorted already; keep about 2000 points of the CDF.
        awk -v n="$(wc -l <"$f")" 'BEGIN { step = n > 2000 ? int(n / 2000) : 1 }
             NR % step == 0 || NR == n { print $1, NR / n }' "$f" >"$tmp/cdf.$who"
    done
    gnuplot -e "sluice='$tmp/cdf.sluice'; peer='$tmp/cdf.peer'; out='$top/bench/latency.png'" \
        "$top/bench/plot.gp" 2>"$tmp/gnuplot.log" || say "bench: gnuplot failed: $(cat "$tmp/gnuplot.log")"
fi

{
    echo "# sluice performance report"
    echo
    echo "Generated by bench/run.sh (what \`make bench\` runs) on $now."
    echo
    echo "$machine"
    echo
    echo "Method: nginx 1.22 ($workers worker(s), keep-alive, a fixed 27-byte JSON body), a"
    echo "private redis-server and the mock API, all on 127.0.0.1."
    if [ -n "$cli_pin" ]; then
        echo "The servers run on CPU 0 and every load generator on CPU 1 (taskset), so a"
        echo "client's own cost per request sets its pace; one row repeats scenario a with"
        echo "the client free to use both cores, where the server's share of the CPU rules."
    else
        echo "Client and servers share the machine's cores (not pinned)."
    fi
    echo "Each timed scenario ran $R rounds of $S s; a round runs sluice and its peer back"
    echo "to back, alternating which goes first.  The table shows each side's median over"
    echo "the rounds and the median of the per-round ratios (the two runs of a round saw"
    echo "the same machine: it is shared, and other work on it moves every number); every"
    echo "round is listed below."
    if want s || want t || want u; then
        echo "The HTTP/2 rows s-u ran rounds of $S_h2 s (BENCH_H2_SECONDS)."
    fi
    echo "Instruction counts come from callgrind inside the request call, (1200 - 200"
    echo "requests) / 1000, so start-up and the first connection cancel out."
    if [ "$(calc "$load0 > $(nproc) || $load1 > $(nproc)")" = 1 ]; then
        echo
        echo "**This run shared the machine with other work** (load average $load0 at the"
        echo "start, $load1 at the end, on $(nproc) cores): the timed rows moved from round"
        echo "to round (see below).  The instruction counts and the client CPU per request"
        echo "are the steadier measures."
    fi
    echo
    echo "| scenario | sluice | peer | ratio | target | met? |"
    echo "| --- | --- | --- | --- | --- | --- |"
    cat "$table"
    echo
    echo "Latency CDF of scenario a: bench/latency.png."
    echo
    echo "## Every round"
    echo
    cat "$details"
} >"$tmp/results.md"

echo
echo "$machine"
echo
echo "| scenario | sluice | peer | ratio | target | met? |"
echo "| --- | --- | --- | --- | --- | --- |"
cat "$table"
if [ "$out" != - ]; then
    cp "$tmp/results.md" "$out"
    echo
    echo "bench: report written to ${out#"$top"/}"
fi
