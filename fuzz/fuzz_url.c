/* libFuzzer target: URL parse, resolve and encode.
 *
 * Input: "base\0reference".  A parsed URL must hold no forbidden byte, and
 * writing it out and parsing it again must give the same URL.  Encoding
 * must produce only unreserved bytes and %XX that decode to the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "url.h"

static void check_clean(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            abort();
}

/* Invariants of a parsed URL, then a round trip through its text. */
static void check_url(const sl_url *u)
{
    sl_buf b = SL_BUF_INIT;
    sl_url again;

    if (u->path[0] != '/' || u->port < 1 || u->port > 65535 || !u->host[0])
        abort();
    check_clean(u->host);
    check_clean(u->path);
    check_clean(u->origin);
    check_clean(u->host_header);
    if (u->query)
        check_clean(u->query);
    sl_buf_printf(&b, "%s://%s%s%s%s", u->tls ? "https" : "http", u->host_header, u->path,
                  u->query ? "?" : "", u->query ? u->query : "");
    if (b.failed)
        abort();
    if (sl_url_parse(b.data, &again, NULL) != 0)
        abort();
    if (strcmp(again.host, u->host) || strcmp(again.path, u->path) || again.port != u->port ||
        strcmp(again.origin, u->origin) || strcmp(again.host_header, u->host_header) ||
        (!again.query != !u->query) || (u->query && strcmp(again.query, u->query)))
        abort();
    sl_url_free(&again);
    sl_buf_free(&b);
}

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void check_encode(const char *s)
{
    sl_buf b = SL_BUF_INIT;
    size_t i, j = 0;

    if (sl_url_encode(&b, s) != 0)
        abort();
    for (i = 0; i < b.len; i++, j++) {
        char c = b.data[i];
        if (c == '%') {
            /* data is NUL-terminated: a hex digit at i + 1 means i + 2 exists. */
            int hi = hexv(b.data[i + 1]), lo = hi < 0 ? -1 : hexv(b.data[i + 2]);
            if (hi < 0 || lo < 0 || (char)(hi * 16 + lo) != s[j])
                abort();
            i += 2;
        } else if (c != s[j] || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                  (c >= '0' && c <= '9') || strchr("-._~", c))) {
            abort();
        }
    }
    if (s[j] != '\0')
        abort();
    sl_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 2);
    const char *ref;
    sl_url base, out;
    int have_base;

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = s[size + 1] = '\0';
    ref = s + strlen(s) + 1;
    if (ref > s + size)
        ref = s + size;
    have_base = sl_url_parse(s, &base, NULL) == 0;
    if (have_base)
        check_url(&base);
    else if (sl_url_parse("http://a/b/c/d;p?q", &base, NULL) != 0)
        abort();
    if (sl_url_resolve(&base, ref, &out, NULL) == 0) {
        check_url(&out);
        sl_url_free(&out);
    } else if (out.mem_ || out.host) {
        abort();
    }
    check_encode(s);
    check_encode(ref);
    sl_url_free(&base);
    free(s);
    return 0;
}
