#!/bin/sh
# Every public function in include/sluice.h (each SLUICE_API declaration)
# has a page man/man3/<name>.3, and every page lints clean under
# `groff -man -ww -z` (no output at all).
#   tests/check-man.sh [--lint-only | --coverage-only]
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
header="$top/include/sluice.h"
mandir="$top/man/man3"
what=${1:-all}
status=0

if [ "$what" != --lint-only ]; then
    names=$(sed -n 's/^SLUICE_API[^(]*[^A-Za-z0-9_]\(sluice_[A-Za-z0-9_]*\)(.*/\1/p' "$header" | sort -u)
    [ -n "$names" ] || { echo "check-man: no SLUICE_API functions found in $header" >&2; exit 1; }
    missing="" n=0
    for name in $names; do
        n=$((n + 1))
        [ -f "$mandir/$name.3" ] || missing="$missing $name"
    done
    if [ -n "$missing" ]; then
        echo "check-man: public functions in include/sluice.h without a man page:" >&2
        for name in $missing; do echo "    $name  (add it to a page's NAME and SYNOPSIS, and man/man3/$name.3)" >&2; done
        status=1
    else
        echo "check-man: all $n public functions have a page in man/man3"
    fi
fi

if [ "$what" != --coverage-only ]; then
    command -v groff >/dev/null || { echo "check-man: groff is not installed (tools/install-deps.sh)" >&2; exit 1; }
    bad=0 n=0
    for page in "$mandir"/*.3; do
        n=$((n + 1))
        # .so links are read from man/ as man(1) would.
        out=$(cd "$top/man" && groff -man -ww -z "$page" 2>&1) || true
        if [ -n "$out" ]; then
            echo "check-man: ${page#$top/}:" >&2
            printf '%s\n' "$out" | sed 's/^/    /' >&2
            bad=$((bad + 1))
        fi
    done
    if [ "$bad" -gt 0 ]; then
        echo "check-man: $bad of $n pages have groff warnings" >&2
        status=1
    else
        echo "check-man: all $n pages lint clean (groff -man -ww -z)"
    fi
fi
exit $status
