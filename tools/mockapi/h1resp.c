/* Decodes the HTTP/1.1 responses the mock API's handlers write, so the same
 * handlers can answer HTTP/2 streams (h2.c).  The input comes from our own
 * handlers, so the decoder is strict where that is cheap and otherwise
 * trusting; whatever it cannot decode (the deliberately malformed /raw/
 * responses, mostly) makes the stream end in RST_STREAM. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "h2.h"

#define MAX_HEAD     (40u << 20)     /* /bigheader/N goes up to 16 MiB */
#define MAX_LINE     8192u

/* Fields that mean something only to an HTTP/1.1 connection. */
static int hop_by_hop(const char *name, size_t len)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade", "te"};
    size_t i;

    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return 1;
    return 0;
}

static void keep_field(mock_h1resp *d, const char *name, size_t nlen, const char *value, size_t vlen)
{
    size_t i;

    for (i = 0; i < nlen; i++) {
        char ch = (char)tolower((unsigned char)name[i]);
        mock_buf_add(&d->fields, &ch, 1);
    }
    mock_buf_add(&d->fields, "", 1);
    mock_buf_add(&d->fields, value, vlen);
    mock_buf_add(&d->fields, "", 1);
    d->nfields++;
}

/* One "Name: value" line of the final head.  Sets *chunked and *length
 * (-1 when absent).  0 or -1. */
static int head_field(mock_h1resp *d, const char *p, size_t n, int *chunked, long long *length)
{
    const char *colon = memchr(p, ':', n), *v;
    size_t nlen, vlen;
    unsigned long long cl = 0;
    size_t i;

    if (!colon || colon == p || memchr(p, '\0', n) || memchr(p, '\r', n))
        return -1;
    nlen = (size_t)(colon - p);
    v = colon + 1;
    vlen = n - nlen - 1;
    while (vlen && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
        if (vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
            return -1;
        *chunked = 1;
    }
    if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
        if (vlen == 0 || vlen > 18)
            return -1;
        for (i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -1;
            cl = cl * 10 + (unsigned)(v[i] - '0');
        }
        if (*length >= 0 && (unsigned long long)*length != cl)
            return -1;
        if (*length >= 0)
            return 0;          /* a repeated, equal Content-Length is sent once */
        *length = (long long)cl;
    }
    if (!hop_by_hop(p, nlen))
        keep_field(d, p, nlen, v, vlen);
    return 0;
}

/* Parses the complete head in d->head (blank line included) and picks the
 * body's framing.  0 or -1. */
static int parse_head(mock_h1resp *d)
{
    const char *p = d->head.data, *end = p + d->head.len - 2, *eol;
    long long length = -1;
    int chunked = 0, status;

    if (d->head.len < 14 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
        !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) || !isdigit((unsigned char)p[11]))
        return -1;
    status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (status < 100)
        return -1;
    if (status < 200) {
        /* An interim head: HTTP/2 could carry it, but nothing here needs it. */
        d->head.len = 0;
        return 0;
    }
    p = strstr(p, "\r\n") + 2;
    for (; p < end; p = eol + 2) {
        eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (head_field(d, p, (size_t)(eol - p), &chunked, &length) != 0)
            return -1;
    }
    if (chunked && length >= 0)
        return -1;
    d->status = status;
    if (d->head_only || status == 204 || status == 304)
        d->state = MOCK_H1_DONE;
    else if (chunked)
        d->state = MOCK_H1_CHUNK_SIZE;
    else if (length > 0)
        d->state = MOCK_H1_BODY, d->left = (uint64_t)length;
    else if (length == 0)
        d->state = MOCK_H1_DONE;
    else
        d->state = MOCK_H1_UNTIL_END;
    return d->fields.failed ? -1 : 0;
}

/* Takes head bytes; returns how many of p[0..n) belonged to the head, or
 * -1.  The head is complete when d->state has moved on. */
static long take_head(mock_h1resp *d, const char *p, size_t n)
{
    size_t old = d->head.len, from = old > 3 ? old - 3 : 0;
    const char *blank;

    mock_buf_add(&d->head, p, n);
    if (d->head.failed || d->head.len > MAX_HEAD)
        return -1;
    blank = memmem(d->head.data + from, d->head.len - from, "\r\n\r\n", 4);
    if (!blank)
        return (long)n;
    d->head.len = (size_t)(blank - d->head.data) + 4;
    n = d->head.len - old;
    if (parse_head(d) != 0)
        return -1;
    if (d->state != MOCK_H1_HEAD)
        mock_buf_free(&d->head);
    return (long)n;
}

/* Takes bytes of a line into d->line; returns how many, and sets *done
 * once the line (CRLF included) is whole.  -1 when it grows too long. */
static long take_line(mock_h1resp *d, const char *p, size_t n, int *done)
{
    const char *lf = memchr(p, '\n', n);
    size_t k = lf ? (size_t)(lf - p) + 1 : n;

    mock_buf_add(&d->line, p, k);
    if (d->line.failed || d->line.len > MAX_LINE)
        return -1;
    *done = lf != NULL;
    return (long)k;
}

/* Acts on the whole line in d->line. 0 or -1. */
static int line_done(mock_h1resp *d)
{
    const char *s = d->line.data;
    size_t len = d->line.len, i;
    uint64_t size = 0;

    if (len < 2 || s[len - 2] != '\r')
        return -1;
    d->line.len = 0;
    if (d->state == MOCK_H1_CHUNK_END) {
        d->state = len == 2 ? MOCK_H1_CHUNK_SIZE : MOCK_H1_BAD;
    } else if (d->state == MOCK_H1_TRAILER) {
        if (len == 2)
            d->state = MOCK_H1_DONE;
    } else {
        for (i = 0; i < len - 2 && isxdigit((unsigned char)s[i]); i++) {
            if (size >> 59)
                return -1;
            size = size * 16 + (uint64_t)(isdigit((unsigned char)s[i]) ? s[i] - '0' : (s[i] | 0x20) - 'a' + 10);
        }
        if (i == 0 || (i < len - 2 && s[i] != ';'))
            return -1;
        d->left = size;
        d->state = size ? MOCK_H1_CHUNK_DATA : MOCK_H1_TRAILER;
    }
    return d->state == MOCK_H1_BAD ? -1 : 0;
}

int mock_h1resp_feed(mock_h1resp *d, const char *p, size_t n, mock_buf *body)
{
    while (n && d->state != MOCK_H1_BAD) {
        long k;
        int whole = 0;
        switch (d->state) {
        case MOCK_H1_HEAD:
            k = take_head(d, p, n);
            break;
        case MOCK_H1_BODY:
        case MOCK_H1_CHUNK_DATA:
            k = (long)(n < d->left ? n : d->left);
            mock_buf_add(body, p, (size_t)k);
            if ((d->left -= (uint64_t)k) == 0)
                d->state = d->state == MOCK_H1_BODY ? MOCK_H1_DONE : MOCK_H1_CHUNK_END;
            break;
        case MOCK_H1_UNTIL_END:
            mock_buf_add(body, p, n);
            k = (long)n;
            break;
        case MOCK_H1_DONE:
            return 0;              /* bytes past the response: nobody asked for them */
        default:
            if ((k = take_line(d, p, n, &whole)) >= 0 && whole && line_done(d) != 0)
                k = -1;
        }
        if (k < 0 || body->failed) {
            d->state = MOCK_H1_BAD;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return d->state == MOCK_H1_BAD ? -1 : 0;
}

int mock_h1resp_finish(mock_h1resp *d)
{
    if (d->state == MOCK_H1_UNTIL_END)
        d->state = MOCK_H1_DONE;
    return d->state == MOCK_H1_DONE;
}

void mock_h1resp_free(mock_h1resp *d)
{
    mock_buf_free(&d->head);
    mock_buf_free(&d->fields);
    mock_buf_free(&d->line);
}
