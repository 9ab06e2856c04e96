/* The HTTP coalescing key and the shared flight value: see
 * http_coalesce.h.  The coalescer (coalesce.c) knows neither; the request
 * path (client.c) knows only this file's functions. */
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "http_coalesce.h"
#include "response.h"

/* ---- the key ------------------------------------------------------------ */

/* Copies n bytes to *dst and moves it on: sizes are counted before
 * anything is written, so no copy checks for room. */
static void put(char **dst, const void *p, size_t n)
{
    memcpy(*dst, p, n);
    *dst += n;
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* Headers as name NUL value NUL pairs, then one more NUL. */
static size_t headers_size(const sluice_header *h, size_t n)
{
    size_t i, size = 1;

    for (i = 0; i < n; i++)
        size += strlen(or_empty(h[i].name)) + strlen(or_empty(h[i].value)) + 2;
    return size;
}

static void put_headers(char **dst, const sluice_header *h, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        put(dst, or_empty(h[i].name), strlen(or_empty(h[i].name)) + 1);
        put(dst, or_empty(h[i].value), strlen(or_empty(h[i].value)) + 1);
    }
    put(dst, "", 1);
}

int sl_http_key_prefix_init(sl_http_key_prefix *p, const sluice_coalescer *co, const char *origin,
                            const char *base_path, size_t base_path_len,
                            const sluice_header *headers, size_t nheaders, const char *service,
                            sluice_error *err)
{
    size_t size = strlen(origin) + base_path_len + 1 + headers_size(headers, nheaders);
    char *dst;

    if (!(p->bytes = sl_malloc(size)))
        return sl_err(err, SLUICE_ENOMEM, "out of memory creating client '%s'", service);
    dst = p->bytes;
    put(&dst, origin, strlen(origin));
    put(&dst, base_path, base_path_len);
    put(&dst, "", 1);
    put_headers(&dst, headers, nheaders);
    p->len = size;
    p->hash = sl_hash_bytes(sl_coalesce_seed(co), p->bytes, size);
    p->hash_get = sl_hash_bytes(p->hash, "GET", 4);
    return 0;
}

void sl_http_key_prefix_free(sl_http_key_prefix *p)
{
    sl_free(p->bytes);
    p->bytes = NULL;
}

/* The coalescing key: the client's prefix, the method, the path, the
 * query (its parameters in any order), every request header, and the body
 * (compared in full, so two bodies never share a flight).
 *
 * A call that meets no twin, the common case, only hashes it (key_hash).
 * When two hashes meet, key_equal compares the parts in place, under the
 * stripe lock, allocating and copying nothing; key_copy makes the one
 * block a window entry keeps, before the lock is taken. */

/* Whether the query b (blen bytes) holds a parameter equal to x (n bytes)
 * that *used does not mark yet; marks it.  Parameters are what '&'
 * separates, empty ones too, as key_hash counts them. */
static int take_param(const char *b, size_t blen, const char *x, size_t n, uint64_t *used)
{
    const char *p = b, *end = b + blen, *amp;
    unsigned i;

    for (i = 0; i < 64; i++, p = amp + 1) {
        amp = memchr(p, '&', (size_t)(end - p));
        if (!(*used >> i & 1) && (size_t)((amp ? amp : end) - p) == n && memcmp(p, x, n) == 0) {
            *used |= (uint64_t)1 << i;
            return 1;
        }
        if (!amp)
            break;
    }
    return 0;
}

/* Two queries (without their '?') with the same parameters in any order.
 * Twins mostly send them alike, so bytes first.  Equal lengths and every
 * parameter of a matched by its own one of b make the same multiset.  Past
 * 64 parameters a different order is not matched: no sharing, never a
 * wrong one. */
static int query_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    const char *p = a, *end = a + alen, *amp;
    uint64_t used = 0;

    if (alen != blen)
        return 0;
    if (memcmp(a, b, alen) == 0)
        return 1;
    for (;; p = amp + 1) {
        amp = memchr(p, '&', (size_t)(end - p));
        if (!take_param(b, blen, p, (size_t)((amp ? amp : end) - p), &used))
            return 0;
        if (!amp)
            return 1;
    }
}

static int rel_equal(const sl_http_key *a, const sl_http_key *b)
{
    size_t aq = a->rel_len - a->rel_path_len, bq = b->rel_len - b->rel_path_len;

    if (a->rel_path_len != b->rel_path_len || memcmp(a->rel, b->rel, a->rel_path_len) != 0)
        return 0;
    if (!aq || !bq)         /* no '?' on either side */
        return aq == bq;
    return query_equal(a->rel + a->rel_path_len + 1, aq - 1, b->rel + b->rel_path_len + 1, bq - 1);
}

static int headers_equal(const sl_http_key *a, const sl_http_key *b)
{
    size_t i;

    if (a->nheaders != b->nheaders)
        return 0;
    for (i = 0; i < a->nheaders; i++)
        if (strcmp(or_empty(a->headers[i].name), or_empty(b->headers[i].name)) != 0 ||
            strcmp(or_empty(a->headers[i].value), or_empty(b->headers[i].value)) != 0)
            return 0;
    return 1;
}

static int key_equal(const void *x, const void *y)
{
    const sl_http_key *a = x, *b = y;

    return (a->prefix == b->prefix ||
            (a->prefix->len == b->prefix->len &&
             memcmp(a->prefix->bytes, b->prefix->bytes, a->prefix->len) == 0)) &&
           strcmp(a->method, b->method) == 0 && a->body_len == b->body_len &&
           (!a->body_len || memcmp(a->body, b->body, a->body_len) == 0) && rel_equal(a, b) &&
           headers_equal(a, b);
}

/* The key in one block: the struct, its header array, then the bytes it
 * points at.  The prefix stays the client's (http_coalesce.h). */
static void *key_copy(const void *ctx, size_t *size)
{
    const sl_http_key *k = ctx;
    size_t method_len = strlen(k->method) + 1, n = sizeof *k + k->nheaders * sizeof *k->headers;
    sluice_header *h;
    sl_http_key *c;
    char *dst;
    size_t i;

    /* A body_len the caller got wrong must not wrap the sum into a short
     * block: a key that cannot be sized is not kept (as out of memory). */
    if (__builtin_add_overflow(n, method_len + k->rel_len + 1, &n) ||
        __builtin_add_overflow(n, k->body_len, &n) ||
        __builtin_add_overflow(n, headers_size(k->headers, k->nheaders), &n) ||
        !(c = sl_malloc(n)))
        return NULL;
    *size = n;
    *c = *k;
    h = (sluice_header *)(c + 1);
    dst = (char *)(h + k->nheaders);
    c->method = dst;
    put(&dst, k->method, method_len);
    c->rel = dst;
    put(&dst, k->rel, k->rel_len);
    put(&dst, "", 1);
    for (i = 0; i < k->nheaders; i++) {
        h[i].name = dst;
        put(&dst, or_empty(k->headers[i].name), strlen(or_empty(k->headers[i].name)) + 1);
        h[i].value = dst;
        put(&dst, or_empty(k->headers[i].value), strlen(or_empty(k->headers[i].value)) + 1);
    }
    c->headers = k->nheaders ? h : NULL;
    c->body = k->body_len ? dst : NULL;
    if (k->body_len)
        put(&dst, k->body, k->body_len);
    return c;
}

static const sl_flight_key_ops key_ops = {key_equal, key_copy};

/* A hash of the parts key_equal compares: equal keys hash equal.  A query of
 * one parameter is hashed with the path as it stands; the parameters of a
 * longer one are hashed one by one and summed, so their order does not
 * count, as in key_equal. */
static uint64_t key_hash(const sl_http_key *k)
{
    const char *q = k->rel + k->rel_path_len, *end = k->rel + k->rel_len, *amp;
    uint64_t h, params = 0;
    size_t i;

    h = k->is_get ? k->prefix->hash_get
                  : sl_hash_bytes(k->prefix->hash, k->method, strlen(k->method) + 1);
    if (q == end || !(amp = memchr(q, '&', (size_t)(end - q)))) {
        h = sl_hash_bytes(h, k->rel, k->rel_len);
    } else {
        h = sl_hash_bytes(h, k->rel, k->rel_path_len);
        for (q++; q <= end; q = amp + 1) {
            if (!(amp = memchr(q, '&', (size_t)(end - q))))
                amp = end;
            params += sl_hash_bytes(k->prefix->hash, q, (size_t)(amp - q));
        }
        h = sl_hash_bytes(h ^ params, "&", 1);
    }
    for (i = 0; i < k->nheaders; i++) {
        const char *name = or_empty(k->headers[i].name);
        const char *value = or_empty(k->headers[i].value);
        h = sl_hash_bytes(h, name, strlen(name) + 1);
        h = sl_hash_bytes(h, value, strlen(value) + 1);
    }
    if (k->body_len)
        h = sl_hash_bytes(h, k->body, k->body_len);
    return h;
}

/* ---- the flight's value ------------------------------------------------- */

/* What a shared flight hands its other callers: a reference of its own on
 * the leader's response, and the leader's error.  Written into the flight
 * only when someone shares it (sl_flight_end). */
typedef struct flight_value {
    sluice_response *resp;
    sluice_error err;
} flight_value;

static void flight_value_release(void *v)
{
    flight_value *fv = v;

    sluice_response_free(fv->resp);
}

sluice_coalescer *sl_http_coalescer_new(size_t max_bytes, sluice_error *err)
{
    return sl_coalescer_new(flight_value_release, sizeof(flight_value), max_bytes, err);
}

/* The leader's result, for share_result. */
typedef struct lead_result {
    int rc;
    sluice_response *resp;
    const sluice_error *err;
} lead_result;

/* About what a response holds: its data, header array and storage (no
 * less than the bytes read) and its body. */
static size_t response_bytes(const sluice_response *r)
{
    const sl_http_resp *h = &r->d->http;
    size_t wire = h->wire_bytes > h->body_len ? h->wire_bytes : h->body_len + 1;

    return sizeof *r->d + h->nheaders * sizeof *h->headers + wire;
}

static size_t share_result(void *ctx, void *value)
{
    const lead_result *lr = ctx;
    flight_value *fv = value;

    fv->resp = lr->resp ? sl_response_ref(lr->resp) : NULL;
    if (lr->rc && lr->err)
        sl_err_copy(&fv->err, lr->err);
    else
        sl_err_clear(&fv->err);
    fv->err.code = lr->rc;
    return lr->resp ? response_bytes(lr->resp) : 0;
}

int sl_http_flight_begin(sluice_coalescer *co, const sl_http_key *key, const sl_flight_opts *o,
                         sl_flight_lead *lead, sluice_flight_result *out)
{
    sl_flight_key fk = {key_hash(key), NULL, 0, &key_ops, key};

    return sl_flight_begin(co, &fk, o, lead, out);
}

void sl_http_flight_end(sluice_coalescer *co, sl_flight_lead *lead, int rc,
                        sluice_response *resp, const sluice_error *err, int keep, int window_ms)
{
    lead_result lr = {rc, resp, err};

    sl_flight_end(co, lead, rc, NULL, keep, window_ms, share_result, &lr, NULL);
}

int sl_http_flight_status(const sluice_flight_result *r)
{
    const flight_value *fv = r->value;

    return fv && fv->resp ? fv->resp->d->http.status : 0;
}

int sl_http_flight_take(sluice_flight_result *r, sluice_response **out, sluice_error *err)
{
    flight_value *fv = r->value;
    int rc = r->code;

    if (rc == 0 && fv && fv->resp) {
        if (!(*out = sl_response_share(fv->resp, 1)))
            rc = sl_err(err, SLUICE_ENOMEM, "out of memory sharing a coalesced response");
    } else if (fv) {
        sl_err_copy(err, &fv->err);
    } else if (rc == SLUICE_ETIMEDOUT) {
        sl_err(err, rc, "timed out waiting for an identical request in flight");
    } else if (rc) {
        sl_err(err, rc, "%s", sluice_strerror(rc));
    }
    sluice_flight_result_release(r);
    return rc;
}
