/* libFuzzer target: sl_http1_read_response over arbitrary bytes.
 *
 * Input: byte 0 = flags (bit 0 the request was HEAD, bits 1-3 small
 * limits), byte 1 = n, then n split sizes (0 = all that fits), then the
 * bytes the server sends.  The same bytes are also read in one piece: the
 * outcome must not depend on how the bytes were split.  Up to four
 * responses are read back to back, as on a keep-alive connection. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "error.h"
#include "http1.h"

typedef struct feed {
    const uint8_t *data;
    size_t len, pos;
    const uint8_t *splits;
    size_t nsplits, next;
} feed;

static ssize_t feed_read(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err)
{
    feed *f = ctx;
    size_t n = f->len - f->pos;

    (void)deadline;
    (void)err;
    if (f->nsplits) {
        size_t s = f->splits[f->next++ % f->nsplits];
        if (s && n > s)
            n = s;
    }
    if (n > cap)
        n = cap;
    memcpy(buf, f->data + f->pos, n);
    f->pos += n;
    return (ssize_t)n;
}

typedef struct outcome {
    int rc[4];
    sl_http_resp r[4];
    int n;
} outcome;

/* Names are tokens; values hold no control byte but HTAB and no OWS at
 * either end. */
static void check_resp(const sl_http_resp *r)
{
    size_t i;

    if (!r->body || r->body[r->body_len] != '\0' || r->status < 100 || r->status > 599)
        abort();
    for (i = 0; i < r->nheaders; i++) {
        const unsigned char *n = (const unsigned char *)r->headers[i].name;
        const unsigned char *v = (const unsigned char *)r->headers[i].value;
        size_t vl = strlen((const char *)v);
        if (!*n)
            abort();
        for (; *n; n++)
            if (*n <= 0x20 || *n >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", *n))
                abort();
        if (vl && (v[0] == ' ' || v[0] == '\t' || v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            abort();
        for (; *v; v++)
            if ((*v < 0x20 && *v != '\t') || *v == 0x7f)
                abort();
    }
}

static void run(const uint8_t *wire, size_t len, const uint8_t *splits, size_t nsplits,
                int head, const sl_http_limits *lim, outcome *o)
{
    feed f = {wire, len, 0, splits, nsplits, 0};
    sl_http_io io = {feed_read, &f};
    sl_buf rbuf = SL_BUF_INIT;
    size_t total = 0;

    memset(o, 0, sizeof *o);
    for (o->n = 0; o->n < 4; o->n++) {
        sl_http_resp *r = &o->r[o->n];
        int rc = sl_http1_read_response(&io, &rbuf, head, lim, SL_NO_DEADLINE, r, NULL);
        o->rc[o->n] = rc;
        if (rc) {
            if (r->mem_ || r->body || r->headers)
                abort();
            o->n++;
            break;
        }
        check_resp(r);
        total += r->wire_bytes;
        if (total + rbuf.len != f.pos)     /* every byte read is accounted for */
            abort();
        if (!r->keep_alive) {
            o->n++;
            break;
        }
    }
    sl_buf_free(&rbuf);
}

static void compare(const outcome *a, const outcome *b)
{
    int i;

    if (a->n != b->n)
        abort();
    for (i = 0; i < a->n; i++) {
        const sl_http_resp *x = &a->r[i], *y = &b->r[i];
        size_t j;
        if (a->rc[i] != b->rc[i]) {
            /* A chunked body past the limit that also has a framing error
             * later may be reported as either, depending on when the
             * limit check ran. */
            int pair = (a->rc[i] == SLUICE_ETOOBIG && b->rc[i] == SLUICE_EPROTO) ||
                       (a->rc[i] == SLUICE_EPROTO && b->rc[i] == SLUICE_ETOOBIG);
            if (!pair)
                abort();
            continue;
        }
        if (a->rc[i])
            continue;
        if (x->status != y->status || x->keep_alive != y->keep_alive ||
            x->body_len != y->body_len || memcmp(x->body, y->body, x->body_len) != 0 ||
            x->nheaders != y->nheaders || x->wire_bytes != y->wire_bytes)
            abort();
        for (j = 0; j < x->nheaders; j++)
            if (strcmp(x->headers[j].name, y->headers[j].name) ||
                strcmp(x->headers[j].value, y->headers[j].value))
                abort();
    }
}

static void release(outcome *o)
{
    int i;

    for (i = 0; i < o->n; i++)
        sl_http_resp_free(&o->r[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static outcome whole, split;
    sl_http_limits lim = {0, 0, 0};
    size_t nsplits;
    int head;

    if (size < 2)
        return 0;
    head = data[0] & 1;
    if (data[0] & 2)
        lim.max_header_bytes = 256;
    if (data[0] & 4)
        lim.max_headers = 4;
    if (data[0] & 8)
        lim.max_body_bytes = 64;
    nsplits = data[1] & 15;
    if (size < 2 + nsplits)
        return 0;
    run(data + 2 + nsplits, size - 2 - nsplits, NULL, 0, head, &lim, &whole);
    run(data + 2 + nsplits, size - 2 - nsplits, data + 2, nsplits, head, &lim, &split);
    compare(&whole, &split);
    release(&whole);
    release(&split);
    return 0;
}
