#!/bin/sh
# Installs the Debian packages sluice needs, only those missing.
#   tools/install-deps.sh           build, tests and demo
#   tools/install-deps.sh --bench   also the benchmark peers
#   tools/install-deps.sh --fuzz    also clang's fuzzing runtime
#   --check                         only report; exit 1 if something is missing
#   --quiet                         say nothing when all is installed
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -eu

pkgs="build-essential pkg-config libwolfssl-dev libhiredis-dev libc-ares-dev zlib1g-dev libbrotli-dev libnghttp2-dev libcunit1-dev redis-server openssl prometheus groff-base tinyproxy nginx-light"
check_only=0 quiet=0
for arg in "$@"; do
    case "$arg" in
    --bench) pkgs="$pkgs libcurl4-openssl-dev wrk valgrind gnuplot-nox nghttp2-client" ;;
    --fuzz) pkgs="$pkgs clang libclang-rt-14-dev libhttp-parser-dev" ;;
    --check) check_only=1 ;;
    --quiet) quiet=1 ;;
    *) echo "usage: $0 [--bench] [--fuzz] [--check] [--quiet]" >&2; exit 2 ;;
    esac
done

missing=""
for p in $pkgs; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing="$missing $p"
done

if [ -z "$missing" ]; then
    [ "$quiet" = 1 ] || echo "install-deps: all packages present"
    exit 0
fi
echo "install-deps: missing:$missing"
[ "$check_only" = 0 ] || exit 1

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root:" >&2
    echo "  apt-get update && apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The tests start their own redis-server (and the benchmarks their own
# nginx) on 127.0.0.1; prometheus is wanted only for promtool.  Keep the
# packages' system services from starting, which on a systemd host would
# listen on every interface, by the standard policy-rc.d refusal.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d &&
        guard=/usr/sbin/policy-rc.d
fi
trap '[ -z "$guard" ] || rm -f "$guard"' EXIT
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
