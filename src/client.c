/* Clients and the request path.
 *
 * One call goes one way:
 *   validate, build the target -> bulkhead -> coalescer (followers wait)
 *   -> leader: for each attempt: endpoint + breaker -> rate limiter
 *      -> pool checkout -> write, read -> pool checkin -> classify
 *      -> backoff (never past the deadline) -> redirects
 *   -> response to the caller and every follower.
 * No lock of the factory, pool or coalescer is held across any of it. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "alloc.h"
#include "client.h"
#include "clock.h"
#include "coalesce.h"
#include "conn.h"
#include "error.h"
#include "http1.h"
#include "limiter.h"
#include "log.h"
#include "response.h"
#include "sync.h"

#define DEFAULT_READ_TIMEOUT_MS 30000
#define DEFAULT_WRITE_TIMEOUT_MS 30000
#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_MAX_REDIRECTS 10

void sluice_client_opts_init(sluice_client_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->read_timeout_ms = DEFAULT_READ_TIMEOUT_MS;
    o->write_timeout_ms = DEFAULT_WRITE_TIMEOUT_MS;
    o->timeout_ms = DEFAULT_TIMEOUT_MS;
    o->max_redirects = DEFAULT_MAX_REDIRECTS;
    o->rate_limit.period_ms = 1000;
    /* The real values, so a program that prints its defaults sees them. */
    sl_retry_opts_defaults(&o->retry);
    sl_breaker_opts_defaults(&o->breaker);
}

/* ------------------------------------------------------------------------ */
/* Client creation                                                          */
/* ------------------------------------------------------------------------ */

/* max(1, rate) as an int.  Runs before check_rate_limit, so a rate past
 * INT_MAX (or infinite) must not reach the cast: it becomes INT_MAX here
 * and the validation then refuses the rate itself. */
static int default_burst(double rate)
{
    if (rate < 1)
        return 1;
    return rate < (double)INT_MAX ? (int)rate : INT_MAX;
}

static void normalise(sluice_client_opts *o, const sluice_factory *f)
{
    if (o->connect_timeout_ms <= 0)
        o->connect_timeout_ms = f->opts.connect_timeout_ms;
    if (o->read_timeout_ms <= 0)
        o->read_timeout_ms = DEFAULT_READ_TIMEOUT_MS;
    if (o->write_timeout_ms <= 0)
        o->write_timeout_ms = DEFAULT_WRITE_TIMEOUT_MS;
    if (o->timeout_ms <= 0)
        o->timeout_ms = DEFAULT_TIMEOUT_MS;
    if (o->max_redirects == 0)
        o->max_redirects = DEFAULT_MAX_REDIRECTS;
    if (o->max_redirects < 0)
        o->max_redirects = 0;
    if (o->rate_limit.period_ms <= 0)
        o->rate_limit.period_ms = 1000;
    if (o->rate_limit.rate > 0 && o->rate_limit.burst <= 0)
        o->rate_limit.burst = default_burst(o->rate_limit.rate);
    if (o->coalesce_window_ms < 0)
        o->coalesce_window_ms = 0;
    if (o->min_in_flight == 0)
        o->min_in_flight = 1;
    if (o->http2 == 0)
        o->http2 = (int)f->opts.http2;
    else if (o->http2 == SLUICE_HTTP2_ALPN)
        o->http2 = SLUICE_HTTP2_AUTO;
}

/* Every option that changes behaviour, written out, so two option sets
 * can be compared for sluice_factory_client's EEXIST. */
static int fingerprint(sluice_client *c, const sluice_client_opts *o, sl_buf *b)
{
    sluice_breaker_opts eff, *br = &eff;
    const sluice_client_rate_limit *rl = &o->rate_limit;
    size_t i;

    /* opts_init's explicit defaults and a zeroed struct's are one client. */
    sl_breaker_opts_effective(&o->breaker, &eff);
    for (i = 0; i < c->neps; i++)
        sl_buf_printf(b, "ep=%s%s\n", c->eps[i].url.origin, c->eps[i].url.path);
    for (i = 0; i < c->nheaders; i++)
        sl_buf_printf(b, "h=%s: %s\n", c->headers[i].name, c->headers[i].value);
    sl_buf_printf(b, "fo=%d t=%d/%d/%d/%d mif=%d redir=%d/%d/%d co=%d/%d\n", o->failover,
                  o->connect_timeout_ms, o->read_timeout_ms, o->write_timeout_ms, o->timeout_ms,
                  o->max_in_flight, o->follow_redirects, o->max_redirects,
                  o->allow_https_to_http, o->disable_coalescing, o->coalesce_window_ms);
    if (c->unix_path)
        sl_buf_printf(b, "unix=%s\n", c->unix_path);
    sl_buf_printf(b, "dec=%d\n", o->decompress == SLUICE_OFF ? 0 : 1);
    sl_buf_printf(b, "ad=%d/%d h2=%d\n", o->adaptive_concurrency, o->min_in_flight, o->http2);
    sl_buf_printf(b, "rl=%.17g/%d/%d/%d/%d\n", rl->rate, rl->period_ms, rl->burst, rl->scope,
                  rl->fail_fast);
    sl_buf_printf(b, "br=%d/%d/%d/%d/%d/%d/%d/%p/%p\n", br->disabled, br->failure_threshold,
                  br->failure_rate_pct, br->window_size, br->min_calls, br->recovery_timeout_ms,
                  br->half_open_probes, (void *)(uintptr_t)br->on_state_change, br->hook_ud);
    sl_buf_printf(b, "rt=%d/%lld/%lld/%d/%lld", c->retry.max_retries,
                  (long long)c->retry.backoff_factor_ns, (long long)c->retry.backoff_max_ns,
                  c->retry.jitter, (long long)c->retry.retry_after_max_ns);
    for (i = 0; i < c->retry.nstatuses; i++)
        sl_buf_printf(b, ",%d", c->retry.statuses[i]);
    for (i = 0; c->retry.methods && c->retry.methods[i]; i++)
        sl_buf_printf(b, ",%s", c->retry.methods[i]);
    sl_buf_printf(b, " bud=%d/%d/%d\n", c->retry.budget_ratio_pct, c->retry.budget_window_ms,
                  c->retry.budget_min_per_sec);
    return b->failed ? SLUICE_ENOMEM : 0;
}

static int add_endpoint(sluice_client *c, const char *url, sluice_error *err)
{
    sl_endpoint *ep = &c->eps[c->neps];
    int rc = sl_url_parse(url, &ep->url, err);

    if (rc)
        return rc;
    c->neps++;
    if (!c->opts.breaker.disabled) {
        ep->breaker = sl_breaker_new(&c->opts.breaker, c->service, ep->url.origin, err);
        if (!ep->breaker)
            return err ? err->code : SLUICE_ENOMEM;
    }
    return 0;
}

static int copy_endpoints(sluice_client *c, const sluice_client_opts *o, sluice_error *err)
{
    size_t n = 1, i;
    int rc;

    if (!o->base_url)
        return sl_err(err, SLUICE_EINVAL, "client '%s': base_url is required", c->service);
    while (o->fallback_urls && o->fallback_urls[n - 1])
        n++;
    if (!(c->eps = sl_calloc(n, sizeof *c->eps)))
        return sl_err(err, SLUICE_ENOMEM, "out of memory creating client '%s'", c->service);
    if ((rc = add_endpoint(c, o->base_url, err)))
        return rc;
    for (i = 1; i < n; i++)
        if ((rc = add_endpoint(c, o->fallback_urls[i - 1], err)))
            return rc;
    /* Request paths are joined onto the base path. */
    c->base_path_len = strlen(c->eps[0].url.path);
    while (c->base_path_len > 0 && c->eps[0].url.path[c->base_path_len - 1] == '/')
        c->base_path_len--;
    c->base_path = sl_strndup(c->eps[0].url.path, c->base_path_len);
    return c->base_path ? 0 : sl_err(err, SLUICE_ENOMEM, "out of memory");
}

static int copy_headers(sluice_client *c, const sluice_client_opts *o, sluice_error *err)
{
    size_t i;

    if (o->nheaders == 0)
        return 0;
    if (!o->headers)
        return sl_err(err, SLUICE_EINVAL, "client '%s': nheaders without headers", c->service);
    if (!(c->headers = sl_calloc(o->nheaders, sizeof *c->headers)))
        return sl_err(err, SLUICE_ENOMEM, "out of memory copying headers");
    for (i = 0; i < o->nheaders; i++) {
        const sluice_header *h = &o->headers[i];
        if (!h->name || !h->value)
            return sl_err(err, SLUICE_EINVAL, "client '%s': header %zu has a NULL name or value",
                          c->service, i);
        c->headers[i].name = sl_strdup(h->name);
        c->headers[i].value = sl_strdup(h->value);
        c->nheaders = i + 1;
        if (!c->headers[i].name || !c->headers[i].value)
            return sl_err(err, SLUICE_ENOMEM, "out of memory copying headers");
    }
    return 0;
}

/* A limit the limiter would refuse on every call is refused here, once,
 * with the limiter's reason. */
static int check_rate_limit(const sluice_client *c, sluice_error *err)
{
    const sluice_client_rate_limit *rl = &c->opts.rate_limit;
    sluice_limit lim = {rl->rate, rl->period_ms, rl->burst};
    sluice_error e;
    int rc;

    if (rl->rate <= 0)
        return 0;   /* no limit, as on the request path */
    if ((rc = sl_gcra_validate(&lim, 1, &e)))
        return sl_err(err, rc, "client '%s': %s", c->service, e.msg);
    return 0;
}

/* Default headers go out with every call: one that could split a request
 * is refused once, here. */
static int check_headers(const sluice_client *c, sluice_error *err)
{
    sluice_error e;
    int rc;

    if ((rc = sl_http1_check_request(NULL, c->headers, c->nheaders, &e)))
        return sl_err(err, rc, "client '%s': %s", c->service, e.msg);
    return 0;
}

static int build_key_prefix(sluice_client *c, sluice_error *err);   /* Coalescing, below */

/* The socket path is checked here so a path too long for a sockaddr_un
 * fails at creation, not on every call. */
static int copy_unix_path(sluice_client *c, const sluice_client_opts *o, sluice_error *err)
{
    struct sockaddr_un sa;

    c->opts.unix_socket_path = NULL;
    if (!o->unix_socket_path)
        return 0;
    if (!*o->unix_socket_path || strlen(o->unix_socket_path) >= sizeof sa.sun_path)
        return sl_err(err, SLUICE_EINVAL,
                      "client '%s': unix_socket_path must be 1 to %zu bytes long", c->service,
                      sizeof sa.sun_path - 1);
    if (!(c->unix_path = sl_strdup(o->unix_socket_path)))
        return sl_err(err, SLUICE_ENOMEM, "out of memory creating client '%s'", c->service);
    return 0;
}

static int check_in_flight(const sluice_client *c, sluice_error *err)
{
    if (c->opts.min_in_flight < 0)
        return sl_err(err, SLUICE_EINVAL, "client '%s': min_in_flight %d is negative",
                      c->service, c->opts.min_in_flight);
    if ((unsigned)c->opts.http2 > SLUICE_HTTP2_ALPN)
        return sl_err(err, SLUICE_EINVAL, "client '%s': http2 %d is not a sluice_http2_mode",
                      c->service, c->opts.http2);
    return 0;
}

sluice_client *sl_client_new(sluice_factory *f, const char *service, const sluice_client_opts *o,
                             sluice_error *err)
{
    sluice_client *c = sl_calloc(1, sizeof *c);
    sl_buf fp = SL_BUF_INIT;
    int rc;

    if (!c) {
        sl_err(err, SLUICE_ENOMEM, "out of memory creating client '%s'", service);
        return NULL;
    }
    c->f = f;
    c->opts = *o;
    normalise(&c->opts, f);
    c->opts.base_url = NULL;   /* owned copies live in eps/headers */
    c->opts.fallback_urls = NULL;
    c->opts.headers = NULL;
    c->opts.retry.retry_statuses = NULL;
    c->opts.retry.retry_methods = NULL;
    c->service = sl_strdup(service);
    c->api_version = sl_strdup(o->api_version);
    if (!c->service || (o->api_version && !c->api_version)) {
        rc = sl_err(err, SLUICE_ENOMEM, "out of memory creating client '%s'", service);
        goto fail;
    }
    sl_waitq_init(&c->bulk_q, SL_WAITQ_BOUND_NS);
    sl_adaptive_init(&c->adapt, c->opts.min_in_flight, c->opts.max_in_flight, sl_now_ns());
    if ((rc = check_in_flight(c, err)) || (rc = sl_mutex_init(&c->bulk_lock, c->service, err)) ||
        (rc = check_rate_limit(c, err)) || (rc = copy_endpoints(c, o, err)) ||
        (rc = copy_headers(c, o, err)) || (rc = check_headers(c, err)) ||
        (rc = copy_unix_path(c, o, err)) ||
        (rc = build_key_prefix(c, err)) ||
        (rc = sl_retry_policy_init(&c->retry, &o->retry, err)))
        goto fail;
    c->budget = sl_retry_budget_new(c->retry.budget_ratio_pct, c->retry.budget_window_ms,
                                    c->retry.budget_min_per_sec);
    if ((!c->budget && c->retry.budget_ratio_pct != SLUICE_OFF) ||
        (rc = fingerprint(c, &c->opts, &fp))) {
        rc = sl_err(err, SLUICE_ENOMEM, "out of memory creating client '%s'", service);
        goto fail;
    }
    c->fingerprint = sl_buf_detach(&fp, NULL);
    if (c->fingerprint)
        return c;
    rc = sl_err(err, SLUICE_ENOMEM, "out of memory creating client '%s'", service);
fail:
    sl_buf_free(&fp);
    sl_client_free(c);
    return NULL;
}

void sl_client_free(sluice_client *c)
{
    size_t i;

    if (!c)
        return;
    for (i = 0; i < c->neps; i++) {
        sl_url_free(&c->eps[i].url);
        sl_breaker_free(c->eps[i].breaker);
    }
    sl_free(c->eps);
    for (i = 0; i < c->nheaders; i++) {
        sl_free((char *)c->headers[i].name);
        sl_free((char *)c->headers[i].value);
    }
    sl_free(c->headers);
    sl_retry_policy_free(&c->retry);
    sl_retry_budget_free(c->budget);
    sl_free(c->base_path);
    sl_free(c->unix_path);
    sl_http_key_prefix_free(&c->key_prefix);
    sl_free(c->fingerprint);
    sl_free(c->service);
    sl_free(c->api_version);
    pthread_mutex_destroy(&c->bulk_lock);
    sl_free(c);
}

/* ------------------------------------------------------------------------ */
/* One call's state                                                         */
/* ------------------------------------------------------------------------ */

typedef struct call {
    sluice_client *c;
    sluice_factory *f;
    const sluice_request *req;
    const char *method;
    const void *body;
    size_t body_len;
    int is_get, is_head;
    int retry_method;         /* the policy allows retrying this method */
    int strip_credentials;    /* a redirect left the origin: no credentials, no caller Host */
    int64_t deadline;
    sl_buf rel;               /* path (without the base path) and query */
    size_t rel_path_len;      /* of rel as built, up to the '?' */
    sl_buf target;            /* the request-target of the current attempt */
    size_t ep;                /* endpoint in use */
    int attempts;             /* attempts that went to the network */
    int timeout_ms;           /* the call's own deadline, for messages */
    int phase;                /* PHASE_*: what the attempt was doing */
    int reused;
    int resumed;              /* a new TLS connection resumed a session */
    int follower;             /* another caller's flight served this one */
    size_t sent;              /* bytes the last attempt wrote */
    int64_t started;          /* when the call began */
    int64_t gate_t0;          /* holds an adaptive place (gate_t0 > 0) since then */
    sl_call_record rec;       /* for the metrics */
    sluice_error *err;
    /* streamed and encoded bodies */
    int decode;               /* the library asked for codings and removes them */
    size_t delivered;         /* body bytes handed to on_body, all attempts */
    int streamed_up;          /* the body comes from body_read (a redirect may drop it) */
    int pulled;               /* body_read was called: resending needs body_rewind */
    size_t att_received;      /* the last attempt's bytes read, for its hook */
    int version;              /* the last response's: 10, 11 or 20 */
    int h2;                   /* the attempt went over HTTP/2 */
} call;

enum { PHASE_CONNECT, PHASE_WRITE, PHASE_READ };

/* "http://x/y" or "//x/y" given as a path: the caller meant a URL, which
 * sluice would send as a path on the client's own host. */
static int is_absolute_url(const char *path)
{
    const char *p = path;

    if (p[0] == '/' && p[1] == '/')
        return 1;
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        return 0;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '+' || *p == '-' || *p == '.')
        p++;
    return p[0] == ':' && p[1] == '/' && p[2] == '/';
}

/* Joins the request path (and its query, and req->query encoded) into
 * k->rel.  Bytes that could split a request are refused here. */
static int build_rel(call *k)
{
    const sluice_request *r = k->req;
    const char *path = r->path && *r->path ? r->path : "/";
    const char *q = strchr(path, '?');
    size_t len = strlen(path), i;
    int has_query = q != NULL, rc;

    if ((rc = sl_url_check_bytes(path, len, "path", k->err)))
        return rc;
    if (is_absolute_url(path))
        return sl_err(k->err, SLUICE_EINVAL,
                      "client '%s': request path \"%.*s%s\" is a URL; paths are relative to "
                      "base_url (%s)", k->c->service, (int)(q ? (size_t)(q - path) : len), path,
                      q ? "?..." : "", k->c->eps[0].url.origin);
    if (path[0] != '/')
        sl_buf_append(&k->rel, "/", 1);
    k->rel_path_len = k->rel.len + (size_t)((q ? q : path + len) - path);
    sl_buf_append(&k->rel, path, len);
    if (r->nquery && !r->query)
        return sl_err(k->err, SLUICE_EINVAL, "nquery without query");
    for (i = 0; i < r->nquery; i++) {
        if (!r->query[i].name)
            return sl_err(k->err, SLUICE_EINVAL, "query parameter %zu has no name", i);
        sl_buf_append(&k->rel, has_query ? "&" : "?", 1);
        has_query = 1;
        sl_url_encode(&k->rel, r->query[i].name);
        sl_buf_append(&k->rel, "=", 1);
        sl_url_encode(&k->rel, r->query[i].value ? r->query[i].value : "");
    }
    return k->rel.failed ? sl_err(k->err, SLUICE_ENOMEM, "out of memory building the path") : 0;
}

static int method_is(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

/* A caller that names Accept-Encoding itself gets the body as sent. */
static int has_accept_encoding(const sluice_client *c, const sluice_request *req)
{
    size_t i;

    for (i = 0; i < c->nheaders; i++)
        if (strcasecmp(c->headers[i].name, "Accept-Encoding") == 0)
            return 1;
    for (i = 0; req->headers && i < req->nheaders; i++)
        if (req->headers[i].name && strcasecmp(req->headers[i].name, "Accept-Encoding") == 0)
            return 1;
    return 0;
}

static int call_init(call *k, sluice_client *c, const sluice_request *req, sluice_error *err)
{
    int rc;

    memset(k, 0, sizeof *k);
    k->c = c;
    k->f = c->f;
    k->req = req;
    k->err = err;
    k->started = sl_now_ns();
    k->method = req->method && *req->method ? req->method : "GET";
    k->body = req->body;
    k->body_len = req->body_len;
    k->streamed_up = req->body_read != NULL;
    k->decode = c->opts.decompress != SLUICE_OFF && !has_accept_encoding(c, req);
    if (k->streamed_up && req->body)
        return sl_err(err, SLUICE_EINVAL, "a request with both body and body_read");
    if (k->body_len && !k->body && !k->streamed_up)
        return sl_err(err, SLUICE_EINVAL, "body_len %zu without a body", k->body_len);
    if (req->nheaders && !req->headers)
        return sl_err(err, SLUICE_EINVAL, "nheaders %zu without headers", req->nheaders);
    k->is_get = method_is(k->method, "GET");
    k->is_head = !k->is_get && method_is(k->method, "HEAD");
    k->retry_method = sl_retry_method_allowed(&c->retry, k->method, req->flags);
    /* One clock read for both; the client's timeout_ms is always > 0. */
    k->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : c->opts.timeout_ms;
    k->deadline = k->started + (int64_t)k->timeout_ms * 1000000;
    if (c->opts.failover == SLUICE_FAILOVER_ROUND_ROBIN && c->neps > 1)
        k->ep = __atomic_fetch_add(&c->rr, 1, __ATOMIC_RELAXED) % c->neps;
    /* Refused before any token, probe or connection is spent on it. */
    if ((rc = sl_http1_check_request(k->method, req->headers, req->nheaders, err)))
        return rc;
    return build_rel(k);
}

static void call_done(call *k)
{
    sl_buf_free(&k->rel);
    sl_buf_free(&k->target);
}

/* ------------------------------------------------------------------------ */
/* Hooks                                                                    */
/* ------------------------------------------------------------------------ */

/* The attempt's URL for hooks and logs: origin, path and the query's
 * names; its values are left out, as they may carry secrets. */
static void redacted_url(const call *k, const sl_url *u, char *url, size_t cap)
{
    const char *q;
    int n;

    q = k->target.len ? memchr(k->target.data, '?', k->target.len) : NULL;
    n = snprintf(url, cap, "%s%.*s", u->origin,
                 (int)(q ? (size_t)(q - k->target.data) : k->target.len),
                 k->target.len ? k->target.data : "");
    if (q && n > 0 && (size_t)n < cap - 1) {
        const char *p;
        size_t len = (size_t)n;
        for (p = q; *p && len < cap - 1; p++) {
            if (*p == '=') {
                url[len++] = '=';
                while (p[1] && p[1] != '&')
                    p++;
            } else {
                url[len++] = *p;
            }
        }
        url[len] = '\0';
    }
}

static void hook(call *k, sluice_request_hook fn, const sl_url *u, int status, int code,
                 int64_t started)
{
    sluice_request_info info = {0};
    char url[512];

    if (!fn)
        return;
    redacted_url(k, u, url, sizeof url);
    info.service = k->c->service;
    info.method = k->method;
    info.url = url;
    info.attempt = k->attempts;
    info.status = status;
    info.error = code;
    info.duration_us = started ? (sl_now_ns() - started) / 1000 : 0;
    info.reused = k->reused;
    info.coalesced = k->follower;
    info.http_version = status ? k->version : 0;
    if (started) {
        info.bytes_sent = k->sent;
        info.bytes_received = k->att_received;
    }
    fn(&info, k->f->opts.hook_ud);
}

/* ------------------------------------------------------------------------ */
/* One attempt on one connection                                            */
/* ------------------------------------------------------------------------ */

/* Headers that belong to the origin the caller named: its credentials, and
 * a Host of the caller's own (which would otherwise override the new
 * origin's, as curl also refuses to do).  Origin and Referer are left as
 * they are: sluice never writes them, and a caller's Origin names the
 * caller's site, not the server's. */
static int is_origin_bound(const char *name)
{
    return strcasecmp(name, "Authorization") == 0 || strcasecmp(name, "Cookie") == 0 ||
           strcasecmp(name, "Proxy-Authorization") == 0 || strcasecmp(name, "Host") == 0;
}

/* After a cross-origin redirect the credentials and a caller's Host stay
 * behind: the client's and the request's headers are copied without them,
 * and the Host written is the new origin's. */
static int strip(const sluice_header *in, size_t n, sluice_header **out, size_t *nout)
{
    size_t i, m = 0;

    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    if (!(*out = sl_calloc(n, sizeof **out)))
        return SLUICE_ENOMEM;
    for (i = 0; i < n; i++)
        if (in[i].name && !is_origin_bound(in[i].name))
            (*out)[m++] = in[i];
    *nout = m;
    return 0;
}

/* The request as both protocols write it; with credentials stripped
 * (after a redirect off the origin) *h1 and *h2 are the lists to free. */
static int fill_req(call *k, const sl_url *u, const sl_proxy *http_proxy, sl_http_req *hr,
                    sluice_header **h1, sluice_header **h2)
{
    const sluice_request *r = k->req;

    memset(hr, 0, sizeof *hr);
    *h1 = *h2 = NULL;
    hr->method = k->method;
    hr->target = k->target.data;
    hr->host = u->host_header;
    hr->user_agent = k->f->opts.user_agent ? k->f->opts.user_agent : "sluice/" SLUICE_VERSION_STRING;
    hr->headers1 = k->c->headers;
    hr->nheaders1 = k->c->nheaders;
    hr->headers2 = r->headers;
    hr->nheaders2 = r->headers ? r->nheaders : 0;
    hr->body_len = k->body_len;
    hr->send_length = k->body_len > 0 || method_is(k->method, "POST") ||
                     method_is(k->method, "PUT") || method_is(k->method, "PATCH");
    if (http_proxy) {
        hr->absolute = u->origin;
        hr->proxy_auth = http_proxy->auth;
    }
    hr->chunked = k->streamed_up && k->body_len == SLUICE_BODY_CHUNKED;
    hr->accept_encoding = k->decode ? "gzip, deflate, br" : NULL;
    if (k->strip_credentials) {
        if (strip(hr->headers1, hr->nheaders1, h1, &hr->nheaders1) ||
            strip(hr->headers2, hr->nheaders2, h2, &hr->nheaders2)) {
            sl_free(*h1);
            return sl_err(k->err, SLUICE_ENOMEM, "out of memory");
        }
        hr->headers1 = *h1;
        hr->headers2 = *h2;
    }
    return 0;
}

static int write_head(call *k, sl_conn *conn, const sl_url *u)
{
    sluice_header *h1, *h2;
    sl_http_req hr;
    int rc;

    if ((rc = fill_req(k, u, conn->http_proxy, &hr, &h1, &h2)))
        return rc;
    sl_buf_reset(&conn->wbuf);
    rc = sl_http1_write_head(&conn->wbuf, &hr, k->err);
    sl_free(h1);
    sl_free(h2);
    return rc;
}

/* A body pulled from body_read goes again only through body_rewind. */
static int resendable(const call *k)
{
    return !k->pulled || k->req->body_rewind;
}

/* Starts a streamed body over: body_rewind once body_read was called. */
static int rewind_body(call *k)
{
    const sluice_request *r = k->req;
    int rc;

    if (k->pulled && !r->body_rewind)
        return sl_err(k->err, SLUICE_ECANCELED,
                      "the streamed body cannot be sent again without body_rewind");
    if (k->pulled && (rc = r->body_rewind(r->body_ud)) != 0)
        return sl_err(k->err, SLUICE_ECANCELED, "body_rewind returned %d", rc);
    return 0;
}

/* The next piece of a streamed body, `total` bytes sent so far: *n bytes
 * into buf (0 at the end of a chunked one). */
static int pull(call *k, char *buf, size_t cap, size_t total, long *n)
{
    const sluice_request *r = k->req;
    int chunked = k->body_len == SLUICE_BODY_CHUNKED;
    size_t want = chunked || k->body_len - total > cap ? cap : k->body_len - total;

    k->pulled = 1;
    *n = want ? r->body_read(buf, want, r->body_ud) : 0;
    if (*n < 0)
        return sl_err(k->err, SLUICE_ECANCELED, "body_read returned %ld", *n);
    if ((size_t)*n > want)
        return sl_err(k->err, SLUICE_EINVAL, "body_read returned %ld for %zu bytes of room", *n,
                      want);
    if (*n == 0 && !chunked && total < k->body_len)
        return sl_err(k->err, SLUICE_EINVAL, "body_read ended after %zu of body_len %zu bytes",
                      total, k->body_len);
    if (sl_now_ns() >= k->deadline)
        return sl_err(k->err, SLUICE_ETIMEDOUT, "sending the request body");
    return 0;
}

/* 1 once the streamed body is all out. */
static int pulled_all(const call *k, long n, size_t total)
{
    return n == 0 || (k->body_len != SLUICE_BODY_CHUNKED && total == k->body_len);
}

/* The head, then the body pulled from body_read, in pieces of up to
 * 64 KiB (chunks of that size when chunked).  A body already read from
 * starts over through body_rewind; the retry rules make sure there is
 * one. */
static int send_streamed(call *k, sl_conn *conn, size_t *sent)
{
    int chunked = k->body_len == SLUICE_BODY_CHUNKED, rc;
    size_t total = 0, cap = 64 * 1024, part = 0;
    struct iovec iov[3];
    char hex[24], *buf;

    if ((rc = rewind_body(k)))
        return rc;
    iov[0] = (struct iovec){conn->wbuf.data, conn->wbuf.len};
    if ((rc = sl_conn_writev(conn, iov, 1, k->deadline, &part, k->err)))
        return *sent += part, rc;
    *sent += part;
    if (!(buf = sl_malloc(cap)))
        return sl_err(k->err, SLUICE_ENOMEM, "out of memory sending a request body");
    for (;;) {
        int niov = 0;
        long n;
        if ((rc = pull(k, buf, cap, total, &n)))
            break;
        if (chunked) {
            int hl = snprintf(hex, sizeof hex, "%lx\r\n", (unsigned long)n);
            iov[niov++] = (struct iovec){hex, (size_t)hl};
        }
        if (n > 0)
            iov[niov++] = (struct iovec){buf, (size_t)n};
        if (chunked)
            iov[niov++] = (struct iovec){"\r\n", 2};
        part = 0;
        rc = niov ? sl_conn_writev(conn, iov, niov, k->deadline, &part, k->err) : 0;
        *sent += part;
        total += (size_t)n;
        if (rc || pulled_all(k, n, total))
            break;
    }
    sl_free(buf);
    return rc;
}

/* The response, by either protocol (HTTP/2 hands it over as HTTP/1.1). */
static int read_response(call *k, const sl_http_io *io, sl_buf *rbuf, sl_http_resp *http)
{
    sl_http_limits lim = {k->f->opts.max_header_bytes, 100, k->f->opts.max_response_bytes};
    sl_http_sink sink = {k->decode, k->req->on_body, k->req->body_ud,
                         k->c->opts.follow_redirects, 0};
    int rc;

    k->phase = PHASE_READ;
    if (!sink.decode && !sink.on_body)
        return sl_http1_read_response(io, rbuf, k->is_head, &lim, k->deadline, http, k->err);
    rc = sl_http1_read_response_to(io, rbuf, k->is_head, &lim, &sink, k->deadline, http, k->err);
    k->delivered += sink.delivered;
    return rc;
}

static int exchange(call *k, sl_conn *conn, const sl_url *u, sl_http_resp *http, size_t *sent)
{
    sl_http_io io = {sl_conn_read, conn};
    struct iovec iov[2];
    int rc, n = 1;

    conn->read_timeout_ns = (int64_t)k->c->opts.read_timeout_ms * 1000000;
    conn->write_timeout_ns = (int64_t)k->c->opts.write_timeout_ms * 1000000;
    k->phase = PHASE_WRITE;
    if ((rc = write_head(k, conn, u)))
        return rc;
    if (k->streamed_up) {
        rc = send_streamed(k, conn, sent);
    } else {
        iov[0].iov_base = conn->wbuf.data;
        iov[0].iov_len = conn->wbuf.len;
        if (k->body_len) {
            iov[1].iov_base = (void *)k->body;
            iov[1].iov_len = k->body_len;
            n = 2;
        }
        rc = sl_conn_writev(conn, iov, n, k->deadline, sent, k->err);
    }
    if (rc)
        return rc;
    return read_response(k, &io, &conn->rbuf, http);
}

/* A streamed body into an HTTP/2 stream: DATA frames as nghttp2 takes it. */
static int push_streamed(call *k, sl_h2_stream *st)
{
    size_t total = 0, cap = 64 * 1024;
    char *buf = sl_malloc(cap);
    int rc;

    if (!buf)
        return sl_err(k->err, SLUICE_ENOMEM, "out of memory sending a request body");
    for (;;) {
        long n;
        int last;
        if ((rc = pull(k, buf, cap, total, &n)))
            break;
        total += (size_t)n;
        last = pulled_all(k, n, total);
        if ((rc = sl_h2_stream_push(st, buf, (size_t)n, last, k->deadline, k->err)) || last)
            break;
    }
    sl_free(buf);
    return rc;
}

/* One exchange on an HTTP/2 stream of connection `c`.  SL_H2_AGAIN when
 * the request may go to another connection as it is (the server refused
 * it unprocessed, or the connection drains). */
static int exchange_h2(call *k, sl_h2_conn *c, const sl_url *u, sl_http_resp *http, size_t *sent)
{
    sl_buf rbuf = SL_BUF_INIT;
    sluice_header *h1, *h2;
    sl_h2_stream st;
    sl_http_io io = {sl_h2_read, &st};
    sl_http_req hr;
    int rc, refused;

    k->phase = PHASE_WRITE;
    if ((rc = fill_req(k, u, NULL, &hr, &h1, &h2)))
        return rc;
    if (k->streamed_up && (rc = rewind_body(k))) {
        sl_free(h1);
        sl_free(h2);
        return rc;
    }
    rc = sl_h2_stream_open(&st, c, &hr, u->tls ? "https" : "http", k->body, k->body_len,
                           k->streamed_up, (int64_t)k->c->opts.read_timeout_ms * 1000000, k->err);
    sl_free(h1);
    sl_free(h2);
    if (rc)
        return rc;
    if (k->streamed_up)
        rc = push_streamed(k, &st);
    if (rc == 0)
        rc = read_response(k, &io, &rbuf, http);
    sl_buf_free(&rbuf);
    refused = sl_h2_stream_end(&st, rc == 0, k->deadline);
    *sent = st.sent;    /* the I/O thread is done with the stream */
    if (refused && rc && resendable(k)) {
        sl_http_resp_free(http);
        return SL_H2_AGAIN;
    }
    return rc;
}


/* A reused connection the server had already closed fails before any
 * response byte; that is the pool's staleness, not the upstream's answer,
 * so the request goes once more on a fresh connection when that is safe. */
static int stale(int rc, const sl_pool_item *it, const sl_http_resp *http, size_t sent, call *k)
{
    return rc == SLUICE_EIO && it->reused && http->wire_bytes == 0 &&
           (sent == 0 || k->retry_method) && resendable(k);
}

/* Counts one exchange's bytes and the time it held its connection: from
 * t0, when it asked the pool, less any wait for capacity.  Returns now. */
static int64_t tally(call *k, int64_t wait_ns, size_t sent, size_t received, int64_t t0)
{
    int64_t now = sl_now_ns();

    k->rec.sent += sent;
    k->rec.received += received;
    k->att_received = received;
    k->sent = sent;
    k->rec.exchanges++;
    k->rec.hold_ns += now - t0 - wait_ns;
    return now;
}

/* A timeout's message says which deadline passed and how long it was:
 * the call's own, or the per-read, per-write or connect one. */
static void explain_timeout(call *k)
{
    const sluice_client_opts *o = &k->c->opts;

    if (sl_now_ns() >= k->deadline)
        sl_err_append(k->err, " (the call's deadline, timeout_ms %d ms, passed)", k->timeout_ms);
    else if (k->phase == PHASE_READ)
        sl_err_append(k->err, " (read_timeout_ms %d ms)", o->read_timeout_ms);
    else if (k->phase == PHASE_WRITE)
        sl_err_append(k->err, " (write_timeout_ms %d ms)", o->write_timeout_ms);
    else
        sl_err_append(k->err, " (connect_timeout_ms %d ms)",
                      o->connect_timeout_ms > 0 ? o->connect_timeout_ms
                                                : k->f->opts.connect_timeout_ms);
}

/* An error from the body or parser names no peer; the caller must know
 * which host it was. */
static void name_peer(call *k, const sl_url *u)
{
    if (k->err && !strstr(k->err->msg, u->host))
        sl_err_append(k->err, " (%s)", u->origin);
}

/* The route for the debug line: the proxy (its origin, never its
 * credentials) or the Unix socket; "" when direct. */
static void route_note(const call *k, const sl_url *u, char *buf, size_t cap)
{
    const sl_proxy *p = sl_proxy_for(&k->f->net.proxy, u);

    if (k->c->unix_path)
        snprintf(buf, cap, " via unix:%s", k->c->unix_path);
    else if (p)
        snprintf(buf, cap, " via proxy %s", p->origin);
    else
        buf[0] = '\0';
}

/* One debug line per attempt, CURLOPT_VERBOSE made concise.  Only called
 * when debug logging is on. */
static void log_attempt(call *k, const sl_url *u, int rc, const sluice_response *r,
                        int64_t started)
{
    char url[512], via[SL_CONN_KEY_MAX];
    int64_t us = (sl_now_ns() - started) / 1000;
    const char *conn = k->h2 ? (k->reused ? "HTTP/2 stream on a shared connection"
                                          : "HTTP/2 stream on a new connection")
                       : k->reused ? "reused connection"
                       : !u->tls  ? "new connection"
                       : k->resumed ? "new connection, TLS resumed"
                                    : "new connection, TLS full handshake";

    redacted_url(k, u, url, sizeof url);
    route_note(k, u, via, sizeof via);
    if (rc == 0)
        sl_log(SLUICE_LOG_DEBUG, "%s: %s %s%s attempt %d: %s, %d, %zu bytes, %lld.%03lld ms",
               k->c->service, k->method, url, via, k->attempts, conn, r->d->http.status,
               r->d->http.body_len, (long long)(us / 1000), (long long)(us % 1000));
    else
        sl_log(SLUICE_LOG_DEBUG, "%s: %s %s%s attempt %d: %s, %s (%s), %lld.%03lld ms",
               k->c->service, k->method, url, via, k->attempts,
               k->phase == PHASE_CONNECT ? "no connection" : conn, sluice_err_name(rc),
               k->err ? k->err->msg : sluice_strerror(rc), (long long)(us / 1000),
               (long long)(us % 1000));
}

/* Whether this request may go over HTTP/2: 0 no, 1 by ALPN (https), 2 by
 * prior knowledge (h2c). */
static int h2_route(const sluice_client *c, const sl_url *u, const sl_conn_target *t)
{
    int mode = c->opts.http2;

    if (mode == SLUICE_HTTP2_OFF)
        return 0;
    if (u->tls)
        return 1;
    return mode == SLUICE_HTTP2_PRIOR_KNOWLEDGE && !t->proxy ? 2 : 0;
}

/* A request the server refused unprocessed goes again at once twice, then
 * after 1, 2, 4 ... ms (at most 64), until the call's deadline: a server
 * that sends GOAWAY every few streams to many callers refuses the same
 * request several times, one that refuses everything must not be sent a
 * stream per microsecond. */
static int64_t h2_move_wait_ns(int moves)
{
    return moves <= 2 ? 0 : (int64_t)1000000 << (moves - 3 < 6 ? moves - 3 : 6);
}

/* The HTTP/2 side of an attempt: 1 when it went over a stream (*rc its
 * outcome), 0 when the origin speaks HTTP/1.1 (t->adopt may then hold the
 * connection that found it out). */
static int attempt_h2(call *k, const sl_url *u, const char *key, sl_conn_target *t, int prior,
                      int64_t pool_deadline, sl_http_resp *http, int64_t *t0, int *rc)
{
    int moves = 0;
    sl_h2_lease l;
    size_t sent;

    for (;;) {
        int64_t wait;
        memset(http, 0, sizeof *http);
        sent = 0;
        k->phase = PHASE_CONNECT;
        if ((*rc = sl_h2_acquire(k->f->h2, key, t, prior, pool_deadline, &l, k->err)))
            return 1;
        if (!l.conn) {
            t->adopt = l.h1;
            k->reused = 0;
            return 0;
        }
        k->h2 = 1;
        k->reused = !l.fresh;
        k->resumed = l.resumed;
        *rc = exchange_h2(k, l.conn, u, http, &sent);
        sl_h2_release(k->f->h2, &l);
        *t0 = tally(k, l.wait_ns, sent, http->wire_bytes, *t0);
        if (*rc != SL_H2_AGAIN)
            return 1;
        wait = h2_move_wait_ns(++moves);
        if (sl_now_ns() + wait >= k->deadline) {
            *rc = sl_err(k->err, SLUICE_ETIMEDOUT, "%s refused the HTTP/2 stream %d times "
                         "before the call's deadline", u->origin, moves);
            return 1;
        }
        SL_DEBUG("%s: HTTP/2 stream refused or connection draining, sending it again",
                 u->origin);
        if (wait)
            sl_sleep_until(sl_now_ns() + wait);
    }
}

static int attempt(call *k, const sl_url *u, sluice_response **out)
{
    char keybuf[SL_CONN_KEY_MAX];
    sl_conn_target t;
    const char *key = sl_conn_route(&k->f->net, u, k->c->unix_path,
                                    k->c->opts.connect_timeout_ms, &t, keybuf);
    int64_t pool_deadline =
        sl_deadline_min(k->deadline, sl_deadline_in_ms(k->f->opts.pool_timeout_ms));
    unsigned flags = 0;
    int64_t started = sl_now_ns(), t0 = started;
    int h2 = h2_route(k->c, u, &t);
    sl_http_resp http;
    sl_pool_item *it;
    size_t sent;
    int rc, reuse;

    k->h2 = 0;
    if (h2 && attempt_h2(k, u, key, &t, h2 == 2, pool_deadline, &http, &t0, &rc))
        goto done;
    for (;;) {
        memset(&http, 0, sizeof http);
        sent = k->sent = 0;
        k->phase = PHASE_CONNECT;
        k->reused = 0;
        rc = sl_pool_get(k->f->pool, key, &t, flags, pool_deadline, &it, k->err);
        if (t.adopt) {      /* the pool did not need the probe's connection */
            sl_conn_close(t.adopt);
            t.adopt = NULL;
        }
        if (rc)
            break;
        k->reused = it->reused;
        k->resumed = ((sl_conn *)it->res)->resumed;
        rc = exchange(k, it->res, u, &http, &sent);
        t0 = tally(k, it->wait_ns, sent, http.wire_bytes, t0);
        reuse = rc == 0 && http.keep_alive;
        if (rc == 0 || !stale(rc, it, &http, sent, k) || (flags & SL_POOL_FRESH)) {
            sl_pool_put(k->f->pool, it, reuse);
            break;
        }
        sl_pool_put(k->f->pool, it, 0);
        sl_http_resp_free(&http);
        SL_DEBUG("%s: stale pooled connection, retrying on a fresh one", u->origin);
        flags = SL_POOL_FRESH;
    }
done:
    if (rc == 0) {
        http.version = k->h2 ? 20 : 10 + http.minor_version;
        k->version = http.version;
    }
    if (rc == 0 && !(*out = sl_response_new(&http)))
        rc = sl_err(k->err, SLUICE_ENOMEM, "out of memory");
    if (rc) {
        sl_http_resp_free(&http);
        if (rc == SLUICE_ETIMEDOUT)
            explain_timeout(k);
        else if (rc == SLUICE_EIO || rc == SLUICE_EPROTO)
            name_peer(k, u);
        if (sl_log_enabled(SLUICE_LOG_DEBUG))
            log_attempt(k, u, rc, NULL, started);
        hook(k, k->f->opts.on_request_error, u, 0, rc, started);
        return rc;
    }
    (*out)->reused = k->reused;
    if (k->err)
        k->err->http_status = (*out)->d->http.status;
    if (sl_log_enabled(SLUICE_LOG_DEBUG))
        log_attempt(k, u, 0, *out, started);
    hook(k, k->f->opts.on_request_end, u, (*out)->d->http.status, 0, started);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Endpoints, breaker, limiter                                              */
/* ------------------------------------------------------------------------ */

/* Picks the endpoint for this attempt: the current one if its breaker
 * allows, else the next ones in turn.  *probe tells the breaker's answer. */
/* The breaker's answer when it is not a plain yes: a probe or a refusal. */
static void log_breaker(const sluice_client *c, const sl_endpoint *ep, int rc,
                        const sluice_error *err)
{
    if (rc == 0)
        SL_DEBUG("%s: breaker for %s is half-open: this attempt is a probe", c->service,
                 ep->url.origin);
    else
        SL_DEBUG("%s: breaker refused %s: %s", c->service, ep->url.origin,
                 err ? err->msg : "open");
}

static int pick_endpoint(call *k, int *probe, sluice_error *err)
{
    sluice_client *c = k->c;
    int64_t now = sl_now_ns();
    size_t i;
    int rc = 0;

    for (i = 0; i < c->neps; i++) {
        size_t e = (k->ep + i) % c->neps;
        if (!c->eps[e].breaker)
            rc = 0, *probe = 0;
        else
            rc = sl_breaker_allow(c->eps[e].breaker, now, probe, err);
        if (__builtin_expect(rc == 0 && !*probe, 1)) {
            k->ep = e;
            return 0;
        }
        log_breaker(c, &c->eps[e], rc, err);
        if (rc == 0) {
            k->ep = e;
            return 0;
        }
    }
    return rc;
}

static void record(call *k, const sl_endpoint *ep, int probe, int rc, int status)
{
    int failure = rc < 0 ? rc != SLUICE_EINVAL && rc != SLUICE_ENOMEM && rc != SLUICE_ECANCELED
                         : status >= 500;

    if (ep->breaker)
        sl_breaker_record(ep->breaker, probe, failure, sl_now_ns());
}

static int rate_key(call *k, sl_buf *key)
{
    const sluice_client_rate_limit *rl = &k->c->opts.rate_limit;
    const char *path;
    size_t len;

    sl_buf_printf(key, "{%s}:", k->c->service);
    if (rl->scope == SLUICE_LIMIT_PER_ENDPOINT) {
        if (k->req->rate_key) {
            sl_buf_puts(key, k->req->rate_key);
        } else {
            path = k->rel.data;
            len = strcspn(path, "?");
            sl_buf_append(key, path, len);
        }
    } else {
        sl_buf_puts(key, "*");
    }
    return key->failed ? SLUICE_ENOMEM : 0;
}

static int rate_limit(call *k, sluice_error *err)
{
    const sluice_client_rate_limit *rl = &k->c->opts.rate_limit;
    sluice_limit lim = {rl->rate, rl->period_ms, rl->burst};
    sluice_limit_result res;
    sl_buf key = SL_BUF_INIT;
    int64_t t0;
    int rc;

    if (rl->rate <= 0)
        return 0;
    if (rate_key(k, &key)) {
        sl_buf_free(&key);
        return sl_err(err, SLUICE_ENOMEM, "out of memory");
    }
    /* The limiter's own message names the Redis server and cause. */
    t0 = sl_now_ns();
    rc = sl_limiter_acquire(k->f->limiter, key.data, &lim, 1,
                            rl->fail_fast ? t0 : k->deadline, &res, err);
    SL_DEBUG("%s: rate limiter '%s': %s after %lld ms", k->c->service, key.data,
             rc == 0 ? "allowed" : sluice_err_name(rc), (long long)((sl_now_ns() - t0) / 1000000));
    if (rc == SLUICE_ERATELIMITED)
        sl_err(err, rc, "rate limit for '%s' reached; retry in %ld ms", key.data,
               res.retry_after_ms);
    sl_buf_free(&key);
    return rc;
}

/* An upstream that says "slow down" holds off every instance sharing the
 * key, not just this caller. */
static void cooldown(call *k, int64_t ms)
{
    const sluice_client_rate_limit *rl = &k->c->opts.rate_limit;
    sluice_limit lim = {rl->rate, rl->period_ms, rl->burst};
    sl_buf key = SL_BUF_INIT;

    if (rl->rate <= 0 || ms <= 0)
        return;
    if (rate_key(k, &key) == 0)
        sluice_limiter_cooldown(k->f->limiter, key.data, &lim, ms > INT32_MAX ? INT32_MAX : (int)ms);
    sl_buf_free(&key);
}

/* ------------------------------------------------------------------------ */
/* Retries                                                                  */
/* ------------------------------------------------------------------------ */

static int set_target(call *k, const sl_url *u, int fixed)
{
    sl_buf_reset(&k->target);
    if (fixed) {
        sl_buf_puts(&k->target, u->path);
        if (u->query) {
            sl_buf_append(&k->target, "?", 1);
            sl_buf_puts(&k->target, u->query);
        }
    } else {
        size_t blen = strlen(u->path);
        while (blen > 0 && u->path[blen - 1] == '/')
            blen--;
        sl_buf_append(&k->target, u->path, blen);
        sl_buf_append(&k->target, k->rel.data, k->rel.len);
    }
    return k->target.failed ? sl_err(k->err, SLUICE_ENOMEM, "out of memory") : 0;
}

/* The response's Retry-After in ns, capped by the policy; -1 if none
 * applies. */
static int64_t retry_after_ns(call *k, const sluice_response *resp)
{
    const char *ra;
    int64_t ms;

    if (!resp || k->c->retry.retry_after_max_ns <= 0 ||
        !sl_retry_after_applies(resp->d->http.status) ||
        !(ra = sluice_response_header(resp, "Retry-After")))
        return -1;
    if ((ms = sl_retry_after_parse_ms(ra, sl_wall_ms())) < 0)
        return -1;
    return ms * 1000000 > k->c->retry.retry_after_max_ns ? k->c->retry.retry_after_max_ns
                                                          : ms * 1000000;
}

/* How long to wait before retry number n after `resp` (may be NULL):
 * Retry-After wins over the backoff. */
static int64_t retry_wait_ns(call *k, const sluice_response *resp, int n)
{
    int64_t ra = retry_after_ns(k, resp);

    return ra >= 0 ? ra : sl_retry_backoff_ns(&k->c->retry, n);
}

static int transport_retryable(int rc)
{
    /* TLS failures are certificates and versions: retrying will not help. */
    return rc == SLUICE_ECONNECT || rc == SLUICE_EIO || rc == SLUICE_ETIMEDOUT ||
           rc == SLUICE_EPOOLTIMEOUT || rc == SLUICE_ERESOLVE;
}

/* Decides whether outcome (rc, resp) of retry number n may be retried:
 * returns the wait in ns, or -1 to stop here with *why saying so. */
static int64_t should_retry(call *k, int rc, sluice_response *resp, size_t n, const char **why)
{
    sluice_client *c = k->c;
    int64_t wait;

    *why = NULL;
    if (k->req->flags & SLUICE_REQ_NO_RETRY)
        return *why = "the request says SLUICE_REQ_NO_RETRY", -1;
    if (k->delivered)
        return *why = "body bytes were already handed to on_body", -1;
    if (!resendable(k))
        return *why = "the streamed body cannot be sent again without body_rewind", -1;
    if (rc == 0 && !sl_retry_status_retryable(&c->retry, resp->d->http.status))
        return *why = "status not retryable", -1;
    if (rc == 0 && !k->retry_method)
        return *why = "method not retryable", -1;
    if (rc < 0 && !transport_retryable(rc))
        return *why = "error not retryable", -1;
    if (rc < 0 && !k->retry_method && k->sent > 0)
        return *why = "the request may have reached the server", -1;
    if ((int)n >= c->retry.max_retries)
        return *why = "max_retries reached", -1;
    /* A connect failure moves to the next endpoint at once. */
    if (rc == SLUICE_ECONNECT && c->neps > 1) {
        k->ep = (k->ep + 1) % c->neps;
        wait = 0;
    } else {
        wait = retry_wait_ns(k, resp, (int)n + 1);
    }
    if (sl_now_ns() + wait >= k->deadline)
        return *why = "the backoff would pass the call's deadline", -1;
    if (!sl_retry_budget_spend(c->budget, sl_now_ns()))
        return *why = "the retry budget is spent", -1;
    return wait;
}

static void log_retry(const call *k, int rc, const sluice_response *resp, int64_t wait,
                      const char *why)
{
    char what[32];

    if (rc == 0)
        snprintf(what, sizeof what, "status %d", resp->d->http.status);
    else
        snprintf(what, sizeof what, "%s", sluice_err_name(rc));
    if (wait >= 0)
        sl_log(SLUICE_LOG_DEBUG, "%s: retry %d of %d after %s, backing off %lld ms",
               k->c->service, k->attempts, k->c->retry.max_retries, what,
               (long long)(wait / 1000000));
    else if (rc < 0 || sl_retry_status_retryable(&k->c->retry, resp->d->http.status))
        sl_log(SLUICE_LOG_DEBUG, "%s: no retry after %s: %s", k->c->service, what, why);
}

/* A retry that the breaker or the limiter refused: the call keeps its
 * last real outcome (error or response), and its message says what
 * stopped the retries. */
static void retry_refused(call *k, int rc, const sluice_error *why)
{
    const char *who = why->code == SLUICE_ECIRCUITOPEN ? "the circuit breaker opened"
                                                       : "the rate limiter refused it";

    SL_DEBUG("%s: no retry, %s: %s", k->c->service, who, why->msg);
    if (rc < 0)
        sl_err_append(k->err, "; no retry, %s: %s", who, why->msg);
}

/* The attempts against the client's endpoints, or a fixed URL after a
 * redirect.  Returns 0 with the last response, or the last error.  Only
 * the first attempt's refusal by the breaker or limiter is the call's
 * result: after an attempt, the call returns what that attempt got. */
static int with_retries(call *k, const sl_url *fixed, sluice_response **out)
{
    sluice_response *resp = NULL;
    sluice_error refused;
    size_t n;
    int rc = 0, prc;

    sl_retry_budget_note_request(k->c->budget, sl_now_ns());
    for (n = 0;; n++) {
        sluice_error *perr = n == 0 ? k->err : &refused;
        const sl_endpoint *ep = NULL;
        const sl_url *u = fixed;
        const char *why;
        int probe = 0;
        int64_t wait;

        if (!fixed) {
            if ((prc = pick_endpoint(k, &probe, perr)))
                goto refused;
            ep = &k->c->eps[k->ep];
            u = &ep->url;
        }
        if ((prc = set_target(k, u, fixed != NULL)) || (prc = rate_limit(k, perr))) {
            if (ep && ep->breaker)
                sl_breaker_release(ep->breaker, probe);
            goto refused;
        }
        if (resp) {
            sluice_response_free(resp);
            resp = NULL;
        }
        k->attempts++;
        hook(k, k->f->opts.on_request_start, u, 0, 0, 0);
        rc = attempt(k, u, &resp);
        if (ep)
            record(k, ep, probe, rc, rc ? 0 : resp->d->http.status);
        if (rc == 0 && (resp->d->http.status == 429 || resp->d->http.status == 503))
            cooldown(k, retry_after_ns(k, resp) / 1000000);
        wait = should_retry(k, rc, resp, n, &why);
        if (sl_log_enabled(SLUICE_LOG_DEBUG))
            log_retry(k, rc, resp, wait, why);
        if (wait < 0)
            break;
        sl_metrics_retry(&k->c->metrics);
        if (wait > 0)
            sl_sleep_until(sl_now_ns() + wait);
        continue;
refused:
        if (n == 0 || prc == SLUICE_ENOMEM) {
            sluice_response_free(resp);
            return prc;
        }
        refused.code = prc;
        retry_refused(k, rc, &refused);
        break;
    }
    if (rc == 0)
        *out = resp;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Redirects                                                                */
/* ------------------------------------------------------------------------ */

static int is_redirect(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* A hop that sends the body again (307, 308, or a 301/302 to a method
 * other than POST) needs a body it can send again: a streamed body
 * without body_rewind stops there, the redirect being the answer. */
static int can_follow(const call *k, int status)
{
    int drops = status == 303 || ((status == 301 || status == 302) && method_is(k->method, "POST"));

    return drops || !k->streamed_up || resendable(k);
}

/* Works out the next hop from a redirect response into *next. */
static int next_hop(call *k, const sl_url *cur, const sluice_response *resp, sl_url *next)
{
    const char *loc = sluice_response_header(resp, "Location");
    int status = resp->d->http.status, rc;

    if (!loc)
        return sl_err(k->err, SLUICE_EREDIRECT, "%d redirect from %s without a Location", status,
                      cur->origin);
    if ((rc = sl_url_resolve(cur, loc, next, k->err)))
        return rc;
    if (cur->tls && !next->tls && !k->c->opts.allow_https_to_http) {
        rc = sl_err(k->err, SLUICE_EREDIRECT, "redirect from %s to %s refused: https to http",
                    cur->origin, next->origin);
        sl_url_free(next);
        return rc;
    }
    if (status == 303 || ((status == 301 || status == 302) && method_is(k->method, "POST"))) {
        if (!k->is_head)
            k->method = "GET";
        k->body = NULL;
        k->body_len = 0;
        k->streamed_up = 0;
    }
    if (strcmp(cur->origin, next->origin) != 0)
        k->strip_credentials = 1;
    return 0;
}

/* The absolute URL the last attempt went to (origin and target). */
static int current_url(call *k, sl_url *out)
{
    sl_buf abs = SL_BUF_INIT;
    int rc;

    sl_buf_puts(&abs, k->c->eps[k->ep].url.origin);
    sl_buf_append(&abs, k->target.data, k->target.len);
    rc = abs.failed ? sl_err(k->err, SLUICE_ENOMEM, "out of memory")
                    : sl_url_parse(abs.data, out, k->err);
    sl_buf_free(&abs);
    return rc;
}

/* The call: attempts with retries, then redirects when they are on. */
static int run(call *k, sluice_response **out)
{
    sl_url cur, next;
    int have_cur = 0, nhop, rc;

    for (nhop = 0;; nhop++) {
        sluice_response *resp = NULL;

        rc = with_retries(k, have_cur ? &cur : NULL, &resp);
        if (rc || !k->c->opts.follow_redirects || !is_redirect(resp->d->http.status) ||
            !can_follow(k, resp->d->http.status)) {
            *out = resp;
            break;
        }
        if (nhop >= k->c->opts.max_redirects)
            rc = sl_err(k->err, SLUICE_EREDIRECT, "more than %d redirects",
                        k->c->opts.max_redirects);
        else if (!have_cur && (rc = current_url(k, &cur)) == 0)
            have_cur = 1;
        if (rc == 0)
            rc = next_hop(k, &cur, resp, &next);
        sluice_response_free(resp);
        if (rc)
            break;
        sl_url_free(&cur);
        cur = next;
    }
    if (have_cur)
        sl_url_free(&cur);
    if (*out)
        (*out)->attempts = k->attempts;     /* before a flight shares it */
    if (k->err)
        k->err->attempts = k->attempts;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Coalescing                                                               */
/* ------------------------------------------------------------------------ */

static int run_gated(call *k, sluice_response **out);   /* the adaptive limit, below */

static int coalescible(const call *k)
{
    unsigned fl = k->req->flags;

    if (k->c->opts.disable_coalescing || (fl & SLUICE_REQ_NO_COALESCE))
        return 0;
    /* A streamed body belongs to one caller, in either direction. */
    if (k->req->on_body || k->streamed_up)
        return 0;
    return (fl & SLUICE_REQ_COALESCE) || k->is_get || k->is_head;
}

static int build_key_prefix(sluice_client *c, sluice_error *err)
{
    return sl_http_key_prefix_init(&c->key_prefix, c->f->co, c->eps[0].url.origin, c->base_path,
                                   c->base_path_len, c->headers, c->nheaders, c->service, err);
}

/* The call's key as it stands at its start: its own copies of what the
 * redirect code changes later (method, body), pointers to what nothing
 * changes (http_coalesce.h). */
static void freeze_key(const call *k, sl_http_key *key)
{
    *key = (sl_http_key){&k->c->key_prefix, k->method, k->is_get, k->rel.data, k->rel.len,
                         k->rel_path_len, k->req->headers, k->req->headers ? k->req->nheaders : 0,
                         k->body, k->body_len};
}

/* A caller served by another's flight or the micro-cache made no attempt:
 * it gets one end or error hook of its own (see sluice.h). */
static void follower_hook(call *k, int rc, int status)
{
    const sl_url *u = &k->c->eps[0].url;
    sluice_request_hook fn = rc ? k->f->opts.on_request_error : k->f->opts.on_request_end;

    if (!fn)
        return;
    k->follower = 1;
    set_target(k, u, 0);
    hook(k, fn, u, status, rc, k->started);
}

/* A coalescible call: it leads a flight and runs, or another's flight or
 * the micro-cache serves it. */
static int run_coalesced(call *k, sluice_response **out)
{
    sl_flight_opts o = {k->deadline, k->c->opts.coalesce_window_ms, NULL};
    sl_http_key key;
    sl_flight_lead lead;
    sluice_flight_result fr;
    sluice_error own_err;
    int rc;

    freeze_key(k, &key);
    if (sl_http_flight_begin(k->f->co, &key, &o, &lead, &fr)) {
        if (!k->err) {              /* followers get the message */
            sl_err_clear(&own_err);
            k->err = &own_err;
        }
        rc = run_gated(k, out);
        sl_http_flight_end(k->f->co, &lead, rc, *out, k->err,
                           o.window_ms > 0 && rc == 0 && sl_response_cacheable(*out), o.window_ms);
        return rc;
    }
    if (fr.shared || fr.code == SLUICE_ETIMEDOUT)
        follower_hook(k, fr.code, sl_http_flight_status(&fr));
    return sl_http_flight_take(&fr, out, k->err);
}

/* ------------------------------------------------------------------------ */
/* The public entry points                                                  */
/* ------------------------------------------------------------------------ */

/* The bulkhead: at most max_in_flight calls at once per client, waiting
 * in the pool's kind of queue (waitq.h): in arrival order, a returning
 * thread barging only while nobody has waited the bound.  With
 * adaptive_concurrency the bound is the adaptive limit (adaptive.h) and
 * only a flight's leader takes a place, around its upstream work, so that
 * a coalesced follower holds none; else max_in_flight, around the whole
 * call.
 *
 * While nobody is queued a place is taken and given back with atomics
 * alone; bulk_lock guards the queue.  A call that queues counts itself in
 * bulk_waiting before it looks for a place, and a call that leaves gives
 * its place back before it looks at bulk_waiting (both sequentially
 * consistent), so one of the two always sees the other: a freed place is
 * never missed by a waiter. */
static int gate_limit(sluice_client *c)
{
    return c->opts.adaptive_concurrency ? sl_adaptive_limit(&c->adapt) : c->opts.max_in_flight;
}

/* The gate applies here: around the whole call (leader 0) or around a
 * leader's upstream work (leader 1). */
static int gated(const sluice_client *c, int leader)
{
    return c->opts.adaptive_concurrency ? leader : !leader && c->opts.max_in_flight > 0;
}

/* A place if one is free now; 1 when taken. */
static int take_place(sluice_client *c)
{
    int used = atomic_load(&c->bulk_used), limit = gate_limit(c);

    while (used < limit)
        if (atomic_compare_exchange_weak(&c->bulk_used, &used, used + 1))
            return 1;
    return 0;
}

/* Hands free places to waiters, oldest first.  bulk_lock held. */
static void bulkhead_dispatch(sluice_client *c)
{
    while (c->bulk_q.head && take_place(c)) {
        atomic_fetch_sub(&c->bulk_waiting, 1);
        sl_waitq_finish(&c->bulk_q, c->bulk_q.head, 1);
    }
}

/* Queues the call for a place; bulk_lock held on entry, released on return. */
static int bulkhead_wait(sluice_client *c, int64_t deadline)
{
    sl_waiter w;
    int due_seen = 0;

    sl_waitq_push(&c->bulk_q, &w, sl_now_ns());
    atomic_fetch_add(&c->bulk_waiting, 1);
    bulkhead_dispatch(c);
    for (;;) {
        int done = sl_waiter_done(&w), why;
        if (!done)
            sl_waiter_prepare(&c->bulk_q, &w);
        pthread_mutex_unlock(&c->bulk_lock);
        if (done || (why = sl_waiter_sleep(&c->bulk_q, &w, deadline, &due_seen)) == SL_WAKE_DONE)
            return 0;
        pthread_mutex_lock(&c->bulk_lock);
        if (sl_waiter_done(&w))
            continue;
        if (sl_now_ns() >= deadline) {
            sl_waitq_remove(&c->bulk_q, &w);
            atomic_fetch_sub(&c->bulk_waiting, 1);
            if (atomic_load(&c->bulk_used) < gate_limit(c))
                sl_waitq_watch(&c->bulk_q);
            pthread_mutex_unlock(&c->bulk_lock);
            return SLUICE_EQUEUEFULL;
        }
        if (why == SL_WAKE_DUE || why == SL_WAKE_POLL)
            bulkhead_dispatch(c);
    }
}

/* Takes a place, waiting for one up to the call's deadline; *waited says
 * whether it had to.  Only where gated(). */
static int bulkhead_enter(call *k, int leader, int *waited)
{
    sluice_client *c = k->c;
    int rc;

    *waited = 0;
    if (atomic_load(&c->bulk_waiting) == 0 && take_place(c))
        return 0;
    pthread_mutex_lock(&c->bulk_lock);
    if ((!c->bulk_q.head || !sl_waitq_due(&c->bulk_q, sl_now_ns())) && take_place(c)) {
        pthread_mutex_unlock(&c->bulk_lock);
        return 0;
    }
    *waited = 1;
    atomic_fetch_add_explicit(&c->limited, 1, memory_order_relaxed);
    if ((rc = bulkhead_wait(c, k->deadline)) != 0)
        sl_err(k->err, rc, "client '%s': %d calls in flight (%s limit), none finished before "
               "the deadline", c->service, gate_limit(c), leader ? "adaptive" : "max_in_flight");
    return rc;
}

/* Gives the place back at `now` (0: read the clock if need be).  Only
 * where gated().  A leader's call that went upstream (and made one
 * attempt: retries' backoff says nothing of the upstream's queue) is a
 * sample for the adaptive limit, `rtt_ns` long. */
static void bulkhead_leave(call *k, int leader, int64_t rtt_ns, int64_t now)
{
    sluice_client *c = k->c;
    int used, moved = 0, from = 0, to = 0;

    used = atomic_fetch_sub(&c->bulk_used, 1);
    if (leader && k->attempts == 1)
        moved = sl_adaptive_note(&c->adapt, rtt_ns, used, now, &from, &to);
    if (atomic_load(&c->bulk_waiting) > 0) {
        pthread_mutex_lock(&c->bulk_lock);
        if (c->bulk_q.head && (moved || sl_waitq_due(&c->bulk_q, now ? now : sl_now_ns())))
            bulkhead_dispatch(c);
        else
            sl_waitq_watch(&c->bulk_q);
        pthread_mutex_unlock(&c->bulk_lock);
    }
    if (moved == 2)
        SL_INFO("%s: adaptive concurrency limit %d -> %d", c->service, from, to);
}

/* A leader's upstream work under the adaptive limit (run() itself when
 * the limit is off).  The place is given back once the call is counted
 * (sluice_client_do), so the time in flight ends at the metrics' clock
 * read; it starts at the call's start when a place was free at once, else
 * when one was given. */
static int run_gated(call *k, sluice_response **out)
{
    int rc, waited;

    if (!gated(k->c, 1))
        return run(k, out);
    if ((rc = bulkhead_enter(k, 1, &waited)) != 0)
        return rc;
    k->gate_t0 = waited ? sl_now_ns() : k->started;
    return run(k, out);
}

/* The call's outcome into the metrics; its exchanges were tallied as its
 * attempts went. */
static void count(call *k, int rc, const sluice_response *r)
{
    k->rec.code = rc;
    k->rec.status = r ? r->d->http.status : 0;
    k->rec.end_ns = sl_now_ns();
    k->rec.duration_ns = k->rec.end_ns - k->started;
    sl_metrics_leave(&k->c->metrics, &k->f->totals, &k->rec);
}

int sluice_client_do(sluice_client *c, const sluice_request *req, sluice_response **out,
                     sluice_error *err)
{
    call k;
    int rc, waited;

    sl_err_clear(err);
    if (out)
        *out = NULL;
    if (!c || !req || !out)
        return sl_err(err, SLUICE_EINVAL, "sluice_client_do: NULL %s",
                      !c ? "client" : !req ? "request" : "out");
    if ((rc = sl_factory_enter(c->f, err)))
        return rc;
    sl_metrics_enter(&c->metrics);
    rc = call_init(&k, c, req, err);
    if (rc == 0 && (!gated(c, 0) || (rc = bulkhead_enter(&k, 0, &waited)) == 0)) {
        rc = coalescible(&k) ? run_coalesced(&k, out) : run_gated(&k, out);
        if (gated(c, 0))
            bulkhead_leave(&k, 0, 0, 0);
    }
    if (err)
        err->code = rc;
    count(&k, rc, *out);
    if (k.gate_t0)
        bulkhead_leave(&k, 1, k.rec.end_ns - k.gate_t0, k.rec.end_ns);
    call_done(&k);
    sl_factory_leave(c->f);
    return rc;
}

int sluice_get(sluice_client *c, const char *path, sluice_response **out, sluice_error *err)
{
    sluice_request req = {0};

    req.path = path;
    return sluice_client_do(c, &req, out, err);
}

/* A connect may wait for a pool slot first.  Two int options can sum past
 * INT_MAX, so the sum is taken in 64 bits; either negative means none. */
static int64_t warmup_deadline(const sluice_client *c)
{
    int64_t connect = c->opts.connect_timeout_ms, wait = c->f->opts.pool_timeout_ms;

    if (connect < 0 || wait < 0)
        return SL_NO_DEADLINE;
    return sl_now_ns() + (connect + wait) * 1000000;
}

int sluice_client_warmup(sluice_client *c, int n, sluice_error *err)
{
    const sl_url *u;
    sl_conn_target t;
    char keybuf[SL_CONN_KEY_MAX];
    const char *key;
    sl_pool_item **items;
    sl_h2_lease l;
    int i, opened = 0, rc = 0, h2;
    int64_t deadline;

    sl_err_clear(err);
    if (!c || n < 0)
        return sl_err(err, SLUICE_EINVAL, "sluice_client_warmup: %s", c ? "negative count" : "NULL client");
    if (n == 0)
        return 0;
    if ((rc = sl_factory_enter(c->f, err)))
        return rc;
    u = &c->eps[0].url;
    key = sl_conn_route(&c->f->net, u, c->unix_path, c->opts.connect_timeout_ms, &t, keybuf);
    deadline = warmup_deadline(c);
    if ((h2 = h2_route(c, u, &t)) != 0) {
        /* An h2 origin's one shared connection is all it needs. */
        if ((rc = sl_h2_acquire(c->f->h2, key, &t, h2 == 2, deadline, &l, err)) || l.conn) {
            sl_h2_release(c->f->h2, &l);
            sl_factory_leave(c->f);
            return rc ? rc : 1;
        }
        t.adopt = l.h1;
    }
    if (!(items = sl_calloc((size_t)n, sizeof *items))) {
        sl_conn_close(t.adopt);
        sl_factory_leave(c->f);
        return sl_err(err, SLUICE_ENOMEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        rc = sl_pool_get(c->f->pool, key, &t, SL_POOL_FRESH, deadline, &items[i], err);
        if (rc)
            break;
        opened++;
    }
    for (i = 0; i < opened; i++)
        sl_pool_put(c->f->pool, items[i], 1);
    sl_conn_close(t.adopt);     /* the pool had no room for the probe's */
    sl_free(items);
    sl_factory_leave(c->f);
    return opened > 0 || rc == 0 ? opened : rc;
}
