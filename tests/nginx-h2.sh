#!/bin/bash
# A private nginx speaking HTTP/2 for the interop suite (h2_interop): TLS
# with ALPN h2 on one free 127.0.0.1 port and h2c (prior knowledge) on
# another, stopping by itself after an hour should nobody stop it.
#   tests/nginx-h2.sh start DIR CERTS   prints "https://localhost:P http://127.0.0.1:Q"
#   tests/nginx-h2.sh stop DIR
# CERTS is tests/gen-certs.sh's directory (server.pem for "localhost").
set -eu

cmd=${1:-} dir=${2:-} certs=${3:-}
[ -n "$dir" ] || { echo "usage: tests/nginx-h2.sh start DIR CERTS | stop DIR" >&2; exit 2; }

stop() {
    [ -f "$dir/nginx.pid" ] || return 0
    p=$(cat "$dir/nginx.pid")
    kill "$p" 2>/dev/null || true
    i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.02; done
    kill -9 "$p" 2>/dev/null || true
    rm -f "$dir/nginx.pid"
}

case $cmd in
stop) stop; exit 0 ;;
start) [ -n "$certs" ] || { echo "tests/nginx-h2.sh: start needs CERTS" >&2; exit 2; } ;;
*) echo "usage: tests/nginx-h2.sh start DIR CERTS | stop DIR" >&2; exit 2 ;;
esac
command -v nginx >/dev/null || { echo "tests/nginx-h2.sh: nginx is not installed" >&2; exit 1; }

mkdir -p "$dir/www"
# 1 MiB of a known pattern (byte i is i mod 251) and a JSON file to gzip.
perl -e 'print map { chr($_ % 251) } 0 .. (1 << 20) - 1' >"$dir/www/pattern"
perl -e 'print "[", join(",", map { "{\"id\":$_,\"name\":\"item $_\"}" } 1 .. 2000), "]"' \
    >"$dir/www/items.json"

for _ in 1 2 3 4 5; do
    tls=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 25000 ))
    plain=$((tls + 1))
    sed -e "s|@USER@|$(id -un) $(id -gn)|" -e "s|@DIR@|$dir|g" -e "s|@CERTS@|$certs|g" -e "s|@TLS_PORT@|$tls|g" \
        -e "s|@PORT@|$plain|g" "$(dirname "$0")/nginx-h2.conf.in" >"$dir/nginx.conf"
    timeout 3600 nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/nginx.out" 2>&1 &
    i=0
    while [ $i -lt 100 ]; do
        if [ -s "$dir/nginx.pid" ] && (echo >"/dev/tcp/127.0.0.1/$plain") 2>/dev/null; then
            echo "https://localhost:$tls http://127.0.0.1:$plain"
            exit 0
        fi
        kill -0 $! 2>/dev/null || break
        i=$((i + 1)); sleep 0.05
    done
    stop
done
echo "tests/nginx-h2.sh: nginx did not start: $(cat "$dir/error.log" "$dir/nginx.out" 2>/dev/null)" >&2
exit 1
