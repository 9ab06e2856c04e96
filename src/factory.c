/* The factory: one pool, TLS context, DNS cache, limiter and in-flight
 * table shared by every client, and the registry of clients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "client.h"
#include "clock.h"
#include "conn.h"
#include "error.h"
#include "http1.h"
#include "coalesce.h"
#include "log.h"
#include "sync.h"

void sluice_factory_opts_init(sluice_factory_opts *o, sluice_preset p)
{
    static const int presets[][3] = {
        /* max_connections, max_idle_per_host, keepalive_expiry_ms */
        [SLUICE_PRESET_DEFAULT] = {100, 20, 5000},
        [SLUICE_PRESET_HIGH_THROUGHPUT] = {200, 50, 30000},
        [SLUICE_PRESET_SERVERLESS] = {50, 10, 5000},
        [SLUICE_PRESET_BACKGROUND_WORKER] = {100, 30, 120000},
    };

    if (!o)
        return;
    if ((unsigned)p > SLUICE_PRESET_BACKGROUND_WORKER)
        p = SLUICE_PRESET_DEFAULT;
    memset(o, 0, sizeof *o);
    o->max_connections = presets[p][0];
    o->max_idle_per_host = presets[p][1];
    o->keepalive_expiry_ms = presets[p][2];
    o->pool_timeout_ms = 5000;
    o->connect_timeout_ms = 5000;
    o->dns_ttl_ms = 60000;
    o->max_response_bytes = (size_t)64 << 20;
    o->max_header_bytes = (size_t)64 << 10;
    o->tls_min_version = 12;
    o->redis_timeout_ms = 50;
    o->limiter_fail_mode = SLUICE_FAIL_LOCAL;
    o->expected_instances = 1;
    o->coalesce_cache_max_bytes = (size_t)8 << 20;
    o->h2_stream_window = 1 << 20;
    o->h2_ping_interval_ms = 30000;
    o->h2_ping_timeout_ms = 15000;
}

/* Zero fields take the defaults, so a memset struct works too. */
static void normalise(sluice_factory_opts *o)
{
    sluice_factory_opts d;

    sluice_factory_opts_init(&d, SLUICE_PRESET_DEFAULT);
#define DEFAULT(field) if (o->field == 0) o->field = d.field
    DEFAULT(max_connections);
    DEFAULT(max_idle_per_host);
    DEFAULT(keepalive_expiry_ms);
    DEFAULT(pool_timeout_ms);
    DEFAULT(connect_timeout_ms);
    DEFAULT(dns_ttl_ms);
    DEFAULT(max_response_bytes);
    DEFAULT(max_header_bytes);
    DEFAULT(tls_min_version);
    DEFAULT(redis_timeout_ms);
    DEFAULT(expected_instances);
    DEFAULT(h2_stream_window);
    DEFAULT(h2_ping_interval_ms);
    DEFAULT(h2_ping_timeout_ms);
#undef DEFAULT
    if (o->max_connections < 0)
        o->max_connections = 0;   /* SLUICE_OFF: unlimited */
    if (o->max_idle_per_host < 0)
        o->max_idle_per_host = 0;
    if (o->min_idle_per_host < 0)
        o->min_idle_per_host = 0;
    if (o->h2_ping_interval_ms < 0)
        o->h2_ping_interval_ms = 0;   /* SLUICE_OFF: never */
}

static int check_http2(const sluice_factory_opts *o, sluice_error *err)
{
    if ((unsigned)o->http2 > SLUICE_HTTP2_PRIOR_KNOWLEDGE)
        return sl_err(err, SLUICE_EINVAL, "http2 mode %d is not a sluice_http2_mode of a factory",
                      (int)o->http2);
    if (o->h2_max_streams < 0 || o->h2_ping_timeout_ms < 0 || o->h2_stream_window < 0)
        return sl_err(err, SLUICE_EINVAL, "a negative h2_max_streams, h2_stream_window or "
                      "h2_ping_timeout_ms");
    return 0;
}

static int make_h2(sluice_factory *f, sluice_error *err)
{
    const sluice_factory_opts *o = &f->opts;
    sl_h2_cfg hc = {0};

    hc.max_per_origin = o->max_connections_per_host ? o->max_connections_per_host
                                                    : o->max_connections;
    hc.max_streams = o->h2_max_streams;
    hc.stream_window = o->h2_stream_window;
    hc.ping_interval_ms = o->h2_ping_interval_ms;
    hc.ping_timeout_ms = o->h2_ping_timeout_ms;
    hc.idle_timeout_ms = o->keepalive_expiry_ms;
    hc.max_header_bytes = o->max_header_bytes;
    return (f->h2 = sl_h2_pool_new(&hc, &f->net, err)) ? 0 : SLUICE_ENOMEM;
}

/* --- factory ----------------------------------------------------------- */

static int copy_strings(sluice_factory *f, sluice_error *err)
{
    const char **fields[] = {&f->opts.user_agent,   &f->opts.ca_file,
                             &f->opts.ca_path,      &f->opts.client_cert_file,
                             &f->opts.client_key_file, &f->opts.redis_url,
                             &f->opts.limiter_prefix, &f->opts.dns_servers};
    size_t i;

    _Static_assert(sizeof fields / sizeof fields[0] <= sizeof f->strs / sizeof f->strs[0],
                   "sluice_factory.strs has a slot for every option string");

    for (i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (!*fields[i])
            continue;
        f->strs[i] = sl_strdup(*fields[i]);
        if (!f->strs[i])
            return sl_err(err, SLUICE_ENOMEM, "out of memory copying factory options");
        *fields[i] = f->strs[i];
    }
    return 0;
}

/* The User-Agent goes out with every request: one that could split a
 * request is refused here, once. */
static int check_user_agent(sluice_factory *f, sluice_error *err)
{
    sluice_header ua = {"User-Agent", f->opts.user_agent};

    return f->opts.user_agent ? sl_http1_check_request(NULL, &ua, 1, err) : 0;
}

static int make_limiter(sluice_factory *f, sluice_error *err)
{
    sluice_limiter_opts lo;

    sluice_limiter_opts_init(&lo);
    lo.prefix = f->opts.limiter_prefix;
    lo.redis_timeout_ms = f->opts.redis_timeout_ms;
    lo.fail_mode = f->opts.limiter_fail_mode;
    lo.expected_instances = f->opts.expected_instances;
    f->limiter = sluice_limiter_new(f->opts.redis_url, &lo, err);
    return f->limiter ? 0 : (err ? err->code : SLUICE_ELIMITER);
}

/* The warm minimum's refills connect from the pool's housekeeping thread,
 * with a copy of the first checkout's target (its strings in the same
 * block). */
static void *target_keep(void *ctx, const void *arg)
{
    const sl_conn_target *t = arg;
    size_t hl = strlen(t->host) + 1, ol = strlen(t->origin) + 1;
    size_t ul = t->unix_path ? strlen(t->unix_path) + 1 : 0;
    sl_conn_target *k = sl_malloc(sizeof *k + hl + ol + ul);
    char *p;

    (void)ctx;
    if (!k)
        return NULL;
    *k = *t;      /* the proxy belongs to the factory, which outlives the pool */
    k->adopt = NULL;
    k->offer_h2 = 0;  /* the warm minimum keeps HTTP/1.1 connections */
    p = (char *)(k + 1);
    k->host = memcpy(p, t->host, hl);
    k->origin = memcpy(p + hl, t->origin, ol);
    if (ul)
        k->unix_path = memcpy(p + hl + ol, t->unix_path, ul);
    return k;
}

static void target_drop(void *ctx, void *kept)
{
    (void)ctx;
    sl_free(kept);
}

sluice_factory *sluice_factory_new(const sluice_factory_opts *o, sluice_error *err)
{
    sluice_factory *f = sl_calloc(1, sizeof *f);
    sl_pool_cfg pc = {0};

    sl_err_clear(err);
    if (!f) {
        sl_err(err, SLUICE_ENOMEM, "out of memory creating a factory");
        return NULL;
    }
    if (o)
        f->opts = *o;
    else
        sluice_factory_opts_init(&f->opts, SLUICE_PRESET_DEFAULT);
    normalise(&f->opts);
    f->net.opts = &f->opts;
    f->totals.created_ns = sl_now_ns();
    if (sl_mutex_init(&f->lock, "factory registry", err) ||
        sl_mutex_init(&f->net.tls_lock, "factory TLS context", err) ||
        sl_cond_init(&f->idle, "factory shutdown", err) || copy_strings(f, err) ||
        check_user_agent(f, err) || check_http2(&f->opts, err))
        goto fail;
    f->net.sock.tcp_keepalive = f->opts.tcp_keepalive;
    f->net.sock.keepidle_s = f->opts.tcp_keepidle_s;
    f->net.sock.keepintvl_s = f->opts.tcp_keepintvl_s;
    f->net.sock.keepcnt = f->opts.tcp_keepcnt;

    pc.max_total = f->opts.max_connections;
    pc.max_per_key = f->opts.max_connections_per_host;
    pc.max_idle_per_key = f->opts.max_idle_per_host;
    pc.idle_timeout_ms = f->opts.keepalive_expiry_ms;
    pc.max_lifetime_ms = f->opts.max_lifetime_ms;
    pc.housekeeping = 1;
    /* The proxy configuration is parsed (the environment read) once; the
     * caller's string is not kept. */
    if (sl_proxy_conf_init(&f->net.proxy, f->opts.proxy_url, err))
        goto fail;
    f->opts.proxy_url = NULL;
    pc.min_idle_per_key = f->opts.min_idle_per_host;
    pc.refill_timeout_ms = f->opts.connect_timeout_ms;
    pc.arg_keep = target_keep;
    pc.arg_drop = target_drop;
    if (!(f->net.dns = sl_dns_new(f->opts.dns_ttl_ms, f->opts.dns_servers, err)))
        goto fail;
    if (!(f->pool = sl_pool_new(&pc, &sl_conn_pool_ops, &f->net, err)) || make_h2(f, err))
        goto fail;
    /* Named CA or client files are checked now, so a typo fails here. */
    if ((f->opts.ca_file || f->opts.ca_path || f->opts.client_cert_file ||
         f->opts.tls_insecure_skip_verify) && !sl_conn_env_tls(&f->net, err))
        goto fail;
    if (make_limiter(f, err))
        goto fail;
    if (!(f->co = sl_http_coalescer_new(f->opts.coalesce_cache_max_bytes, err)))
        goto fail;
    return f;
fail:
    sluice_factory_free(f);
    return NULL;
}

int sl_factory_enter(sluice_factory *f, sluice_error *err)
{
    long n = __atomic_add_fetch(&f->in_flight, 1, __ATOMIC_SEQ_CST);

    sl_metrics_peak(&f->totals.peak_in_flight, n);
    if (__atomic_load_n(&f->closed, __ATOMIC_SEQ_CST)) {
        sl_factory_leave(f);
        return sl_err(err, SLUICE_ECLOSED, "the factory is being freed");
    }
    return 0;
}

void sl_factory_leave(sluice_factory *f)
{
    if (__atomic_sub_fetch(&f->in_flight, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&f->closed, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&f->lock);
        pthread_cond_broadcast(&f->idle);
        pthread_mutex_unlock(&f->lock);
    }
}

void sluice_factory_free(sluice_factory *f)
{
    sluice_client *c, *next;
    size_t i;

    if (!f)
        return;
    __atomic_store_n(&f->closed, 1, __ATOMIC_SEQ_CST);
    /* HTTP/2 streams in flight end now (SLUICE_ECLOSED); their callers
     * return, as the ones on HTTP/1.1 connections do when their exchange
     * ends. */
    sl_h2_pool_close(f->h2);
    pthread_mutex_lock(&f->lock);
    while (__atomic_load_n(&f->in_flight, __ATOMIC_SEQ_CST) > 0)
        pthread_cond_wait(&f->idle, &f->lock);
    c = f->clients;
    f->clients = NULL;
    pthread_mutex_unlock(&f->lock);
    for (; c; c = next) {
        next = c->next;
        sl_client_free(c);
    }
    sl_h2_pool_free(f->h2);
    sl_pool_free(f->pool);
    sluice_coalescer_free(f->co);
    sluice_limiter_free(f->limiter);
    sl_tls_ctx_free(f->net.tls);
    sl_dns_free(f->net.dns);
    sl_proxy_conf_free(&f->net.proxy);
    for (i = 0; i < sizeof f->strs / sizeof f->strs[0]; i++)
        sl_free(f->strs[i]);
    pthread_cond_destroy(&f->idle);
    pthread_mutex_destroy(&f->net.tls_lock);
    pthread_mutex_destroy(&f->lock);
    sl_free(f);
}

/* --- the registry ---------------------------------------------------- */

static sluice_client *find(sluice_factory *f, const char *service, const char *version)
{
    sluice_client *c;

    for (c = f->clients; c; c = c->next)
        if (strcmp(c->service, service) == 0 &&
            strcmp(c->api_version ? c->api_version : "", version ? version : "") == 0)
            return c;
    return NULL;
}

static sluice_client *existing(sluice_client *c, const sluice_client *want, const char *service,
                               sluice_error *err)
{
    if (!want || strcmp(c->fingerprint, want->fingerprint) == 0)
        return c;
    sl_err(err, SLUICE_EEXIST, "client for service '%s' exists already with different options",
           service);
    return NULL;
}

/* The api_versions the service has clients for, quoted and comma
 * separated into buf ("" if none; NULL versions read "(none)").  Called
 * with f->lock held; writes only to buf. */
static void versions_of(sluice_factory *f, const char *service, char *buf, size_t cap)
{
    const sluice_client *c;
    size_t len = 0;

    buf[0] = '\0';
    for (c = f->clients; c && len < cap; c = c->next) {
        if (strcmp(c->service, service) != 0)
            continue;
        len += (size_t)snprintf(buf + len, cap - len, c->api_version ? "%s'%s'" : "%s%s",
                                len ? ", " : "", c->api_version ? c->api_version : "(none)");
    }
}

sluice_client *sluice_factory_client_lookup(sluice_factory *f, const char *service,
                                            const char *api_version, sluice_error *err)
{
    char versions[160];
    sluice_client *c;

    sl_err_clear(err);
    if (!f || !service) {
        sl_err(err, SLUICE_EINVAL, "sluice_factory_client_lookup: NULL %s", f ? "service" : "factory");
        return NULL;
    }
    if (sl_factory_enter(f, err))
        return NULL;
    pthread_mutex_lock(&f->lock);
    c = find(f, service, api_version);
    if (!c && err)
        versions_of(f, service, versions, sizeof versions);
    pthread_mutex_unlock(&f->lock);
    sl_factory_leave(f);
    if (!c)
        sl_err(err, SLUICE_ENOTFOUND, "no client for service '%s' %s%s%s%s", service,
               api_version ? "with api_version " : "without an api_version",
               api_version ? api_version : "",
               versions[0] ? "; it exists with api_version " : "", versions);
    return c;
}

sluice_client *sluice_factory_client(sluice_factory *f, const char *service,
                                     const sluice_client_opts *o, sluice_error *err)
{
    sluice_client *c, *fresh;

    if (!o)
        return sluice_factory_client_lookup(f, service, NULL, err);
    sl_err_clear(err);
    if (!f || !service || !*service) {
        sl_err(err, SLUICE_EINVAL, "sluice_factory_client: %s", !f ? "NULL factory" : "empty service name");
        return NULL;
    }
    /* Counted as a call, so a concurrent sluice_factory_free either waits
     * for the insert or makes this fail: never a client added to a
     * registry already torn down. */
    if (sl_factory_enter(f, err))
        return NULL;
    /* Build outside the lock (parsing, copying, no I/O), insert under it. */
    if (!(fresh = sl_client_new(f, service, o, err))) {
        sl_factory_leave(f);
        return NULL;
    }
    pthread_mutex_lock(&f->lock);
    c = find(f, service, o->api_version);
    if (!c) {
        fresh->next = f->clients;
        f->clients = fresh;
        f->nclients++;
        pthread_mutex_unlock(&f->lock);
        sl_factory_leave(f);
        return fresh;
    }
    c = existing(c, fresh, service, err);
    pthread_mutex_unlock(&f->lock);
    sl_client_free(fresh);
    sl_factory_leave(f);
    return c;
}
