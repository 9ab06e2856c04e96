/* The HTTP coalescing key and the shared flight value: see
 * http_coalesce.h.  The coalescer (coalesce.c) knows neither; the request
 * path (client.c) knows only this file's functions. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "http_coalesce.h"
#include "response.h"

/* ---- the key ------------------------------------------------------------ */

static int cmp_param(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    size_t lx = strcspn(*x, "&"), ly = strcspn(*y, "&");
    int r = memcmp(*x, *y, lx < ly ? lx : ly);

    return r ? r : (lx > ly) - (lx < ly);
}

/* Copies n bytes to *dst and moves it on: the key's size is known before
 * it is written (see key_size), so no copy checks for room. */
static void put(char **dst, const void *p, size_t n)
{
    memcpy(*dst, p, n);
    *dst += n;
}

/* The query's parameters in sorted order, each followed by '&', so
 * a=1&b=2 and b=2&a=1 match: len + 1 bytes. */
static int put_sorted_query(char **dst, const char *q, size_t len)
{
    const char *stack[32], **params = stack, *p;
    size_t n = 1, i;

    if (!memchr(q, '&', len)) {
        put(dst, q, len);
        put(dst, "&", 1);
        return 0;
    }
    for (p = q; *p; p++)
        n += *p == '&';
    if (n > 32 && !(params = sl_calloc(n, sizeof *params)))
        return SLUICE_ENOMEM;
    for (i = 0, p = q; i < n; i++) {
        params[i] = p;
        p += strcspn(p, "&");
        if (*p)
            p++;
    }
    qsort(params, n, sizeof *params, cmp_param);
    for (i = 0; i < n; i++) {
        put(dst, params[i], strcspn(params[i], "&"));
        put(dst, "&", 1);
    }
    if (params != stack)
        sl_free(params);
    return 0;
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
 * sorted query, every request header, and the body's length and bytes
 * (compared in full, so two bodies never share a flight).  Each part ends
 * where no byte of it can appear, so two different requests never write
 * the same key.
 *
 * A call that meets no twin, the common case, never writes it: it gives
 * the coalescer a hash of the same parts (key_hash) and key_write, which
 * writes the key only when two hashes meet or the result enters the
 * window (coalesce.h, sl_flight_key). */
static size_t key_size(const sl_http_key *k, size_t method_len)
{
    /* rel is path[?query]: path NUL [sorted query '&'] NUL. */
    return k->prefix->len + method_len + k->rel_len + 2 +
           (k->nheaders ? headers_size(k->headers, k->nheaders) : 1) + sizeof(uint64_t) +
           k->body_len;
}

static size_t key_write(const void *ctx, void *buf, size_t cap)
{
    const sl_http_key *k = ctx;
    const char *q = k->rel + k->rel_path_len;
    size_t method_len = strlen(k->method) + 1;
    size_t size = key_size(k, method_len);
    uint64_t body_len = k->body_len;
    char *dst = buf;

    if (size > cap)
        return size;
    put(&dst, k->prefix->bytes, k->prefix->len);
    put(&dst, k->method, method_len);
    put(&dst, k->rel, k->rel_path_len);
    put(&dst, "", 1);
    if (*q == '?' && put_sorted_query(&dst, q + 1, k->rel_len - k->rel_path_len - 1))
        return SIZE_MAX;
    put(&dst, "", 1);
    put_headers(&dst, k->headers, k->nheaders);
    put(&dst, &body_len, sizeof body_len);
    if (k->body_len)
        put(&dst, k->body, k->body_len);
    return size;
}

/* A hash of the parts key_write writes: equal keys hash equal.  A query of
 * one parameter is hashed with the path as it stands; the parameters of a
 * longer one are hashed one by one and summed, so their order does not
 * count, as in the sorted key. */
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

sluice_coalescer *sl_http_coalescer_new(sluice_error *err)
{
    return sl_coalescer_new(flight_value_release, sizeof(flight_value), err);
}

/* The leader's result, for share_result. */
typedef struct lead_result {
    int rc;
    sluice_response *resp;
    const sluice_error *err;
} lead_result;

static void share_result(void *ctx, void *value)
{
    const lead_result *lr = ctx;
    flight_value *fv = value;

    fv->resp = lr->resp ? sl_response_ref(lr->resp) : NULL;
    if (lr->rc && lr->err)
        sl_err_copy(&fv->err, lr->err);
    else
        sl_err_clear(&fv->err);
    fv->err.code = lr->rc;
}

int sl_http_flight_begin(sluice_coalescer *co, const sl_http_key *key, const sl_flight_opts *o,
                         sl_flight_lead *lead, sluice_flight_result *out)
{
    sl_flight_key fk = {key_hash(key), NULL, 0, key_write, key};

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
