/* libFuzzer target: sl_retry_after_parse_ms on arbitrary bytes.  Beyond
 * "no crash, no UB", it checks what every caller relies on: the result is
 * -1 or within [0, 2^31 s]; delta-seconds do not depend on the clock; a
 * later clock never means a longer wait (but for RFC 850 dates); added
 * surrounding blanks change nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "retry.h"

#define CAP_MS 2147483648000LL

static const int64_t nows[] = {
    784111767000LL,     /* 1994-11-06T08:49:27Z */
    1700000000000LL,    /* 2023-11-14T22:13:20Z */
    0,
    -1,
    INT64_MIN,
    INT64_MAX,
};

static void check(const char *s, int64_t now)
{
    int64_t v = sl_retry_after_parse_ms(s, now), later;

    if (v != -1 && (v < 0 || v > CAP_MS))
        abort();
    /* RFC 850's century follows the clock's year, so across New Year a
     * later clock may move its date 100 years ahead: not monotonic. */
    if (v == -1 || now > INT64_MAX - 1000 || strchr(s, '-'))
        return;
    later = sl_retry_after_parse_ms(s, now + 1000);
    if (later < 0 || later > v)
        abort();
    if (s[0] >= '0' && s[0] <= '9' && later != v)
        abort();
}

static void check_padded(const char *s, size_t n)
{
    char *p = malloc(n + 5);
    int64_t a, b;

    if (!p)
        return;
    memcpy(p, " \t", 2);
    memcpy(p + 2, s, n);
    memcpy(p + 2 + n, "\t ", 3);
    a = sl_retry_after_parse_ms(s, nows[0]);
    b = sl_retry_after_parse_ms(p, nows[0]);
    /* Padding may only rescue a value that was already padded (or empty). */
    if (a != -1 && a != b)
        abort();
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    size_t i;

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    for (i = 0; i < sizeof nows / sizeof nows[0]; i++)
        check(s, nows[i]);
    check_padded(s, strlen(s));
    free(s);
    return 0;
}
