/* Output buffers, JSON strings and logging for the mock API. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mockapi.h"

void mock_log(const mock_config *cfg, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (cfg && cfg->quiet)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line so concurrent threads never interleave inside it. */
    fprintf(stderr, "sluice-mockapi: %s\n", line);
}

/* Makes room for n more bytes and the terminating NUL. */
static int reserve(mock_buf *b, size_t n)
{
    size_t cap;
    char *p;

    if (b->failed)
        return -1;
    if (b->data && b->cap - b->len > n)
        return 0;
    if (n > ((size_t)-1) / 2 - b->len) {
        b->failed = 1;
        return -1;
    }
    cap = b->cap ? b->cap : 256;
    while (cap - b->len < n + 1)
        cap *= 2;
    if (!(p = realloc(b->data, cap))) {
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void mock_buf_add(mock_buf *b, const void *p, size_t n)
{
    if (reserve(b, n) != 0)
        return;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void mock_buf_puts(mock_buf *b, const char *s)
{
    mock_buf_add(b, s, strlen(s));
}

void mock_buf_printf(mock_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if (reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence at p (2 to 4), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len, i;
    unsigned char lo = 0x80, hi = 0xbf;

    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4;
    else
        return 0;
    /* The second byte's range excludes overlong forms and surrogates. */
    if (p[0] == 0xe0)
        lo = 0xa0;
    else if (p[0] == 0xed)
        hi = 0x9f;
    else if (p[0] == 0xf0)
        lo = 0x90;
    else if (p[0] == 0xf4)
        hi = 0x8f;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

void mock_buf_json_str(mock_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i, k;

    mock_buf_add(b, "\"", 1);
    for (i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            char esc[2] = {'\\', (char)p[i]};
            mock_buf_add(b, esc, 2);
        } else if (p[i] == '\n') {
            mock_buf_add(b, "\\n", 2);
        } else if (p[i] == '\r') {
            mock_buf_add(b, "\\r", 2);
        } else if (p[i] == '\t') {
            mock_buf_add(b, "\\t", 2);
        } else if (p[i] < 0x20) {
            mock_buf_printf(b, "\\u%04x", p[i]);
        } else if (p[i] < 0x80) {
            mock_buf_add(b, p + i, 1);
        } else if ((k = utf8_len(p + i, n - i)) != 0) {
            mock_buf_add(b, p + i, k);
            i += k - 1;
        } else {
            mock_buf_printf(b, "\\u%04x", p[i]);
        }
    }
    mock_buf_add(b, "\"", 1);
}

void mock_buf_free(mock_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}
