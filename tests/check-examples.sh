#!/bin/sh
# Builds every examples/*.c the way a user of the installed library would:
# `make install` into a private prefix, then
#   cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags sluice) ex.c $(pkg-config --libs sluice)
# with no project defines and no private headers, linked against the shared
# library through an rpath (a non-system prefix needs one), and once more
# statically through Libs.private.
#   BUILD=build tests/check-examples.sh     (EX_LDFLAGS: extra link flags,
#                                            e.g. -fsanitize=... for asan builds)
set -eu

BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
CC=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-examples.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

prefix="$tmp/prefix"
make -s --no-print-directory -C "$top" install BUILD="$BUILD" PREFIX="$prefix" DESTDIR= LIBDIR="$prefix/lib" INCDIR="$prefix/include" MANDIR="$prefix/share/man" >"$tmp/install.log" 2>&1 || {
    echo "check-examples: make install PREFIX=$prefix failed:" >&2; cat "$tmp/install.log" >&2; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cflags=$(pkg-config --cflags sluice)
libs=$(pkg-config --libs sluice)
static_libs=$(pkg-config --static --libs sluice)

failed=0 n=0
for src in "$top"/examples/*.c; do
    name=$(basename "$src" .c)
    n=$((n + 1))
    # shellcheck disable=SC2086
    if ! $CC -std=c11 -Wall -Wextra -Werror $cflags -o "$tmp/$name" "$src" $libs \
            -Wl,-rpath,"$prefix/lib" ${EX_LDFLAGS:-} >"$tmp/$name.log" 2>&1 ||
       ! $CC -std=c11 -Wall -Wextra -Werror $cflags -o "$tmp/$name-static" "$src" \
            "$prefix/lib/libsluice.a" $static_libs ${EX_LDFLAGS:-} >>"$tmp/$name.log" 2>&1; then
        echo "check-examples: examples/$name.c does not build against the installed library:" >&2
        sed 's/^/    /' "$tmp/$name.log" >&2
        failed=$((failed + 1))
    fi
done
[ "$n" -gt 0 ] || { echo "check-examples: no examples found" >&2; exit 1; }
if [ "$failed" -gt 0 ]; then
    echo "check-examples: $failed of $n examples failed (cc -std=c11 -Wall -Wextra -Werror, pkg-config sluice)" >&2
    exit 1
fi
echo "check-examples: all $n examples build with -std=c11 -Wall -Wextra -Werror against the installed library"
