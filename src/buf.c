/* Growable byte buffer. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "sluice.h"

int sl_buf_reserve(sl_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (b->failed)
        return SLUICE_ENOMEM;
    if (extra > (size_t)-1 / 2 - b->len)
        goto fail;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    p = sl_realloc(b->data, cap);
    if (!p)
        goto fail;
    b->data = p;
    b->cap = cap;
    return 0;
fail:
    b->failed = 1;
    return SLUICE_ENOMEM;
}

int sl_buf_append(sl_buf *b, const void *p, size_t n)
{
    if (sl_buf_reserve(b, n))
        return SLUICE_ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int sl_buf_puts(sl_buf *b, const char *s)
{
    return sl_buf_append(b, s, strlen(s));
}

int sl_buf_vprintf(sl_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;

    if (sl_buf_reserve(b, 64))
        return SLUICE_ENOMEM;
    va_copy(ap2, ap);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return SLUICE_EINVAL;
    if ((size_t)n >= b->cap - b->len) {
        if (sl_buf_reserve(b, (size_t)n))
            return SLUICE_ENOMEM;
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    }
    b->len += (size_t)n;
    return 0;
}

int sl_buf_printf(sl_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sl_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void sl_buf_consume(sl_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->cap)
        b->data[b->len] = '\0';
}

void sl_buf_reset(sl_buf *b)
{
    b->len = 0;
    b->failed = 0;
    if (b->cap)
        b->data[0] = '\0';
}

void sl_buf_free(sl_buf *b)
{
    sl_free(b->data);
    *b = (sl_buf)SL_BUF_INIT;
}

char *sl_buf_detach(sl_buf *b, size_t *len)
{
    char *p;

    if (!b->data && sl_buf_reserve(b, 0))
        return NULL;
    b->data[b->len] = '\0';   /* a buffer never written to is not yet terminated */
    p = b->data;
    if (len)
        *len = b->len;
    *b = (sl_buf)SL_BUF_INIT;
    return p;
}
