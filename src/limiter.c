/* The public rate limiter: argument checks, keys, dispatch to the
 * in-process table or Redis, the fail modes with their reconnect backoff,
 * acquire's wait loop and the counters. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "limiter.h"
#include "limiter_cluster.h"
#include "log.h"
#include "redis_sentinel.h"
#include "sync.h"

#define DEFAULT_PREFIX "sluice"
#define DEFAULT_TIMEOUT_MS 50
#define DEFAULT_POOL_SIZE 4
/* The first connection may take longer than one decision may: creation is
 * not on a request's path, and a slow first connect should not hide a
 * wrong password. */
#define CREATE_TIMEOUT_MS 1000
/* After a failure Redis is retried by one call after 100 ms, then 200,
 * 400 ... at most every second, so a restarted server is used again within
 * about a second while an absent one costs one connect attempt per second. */
#define BACKOFF_MIN_NS 100000000LL
#define BACKOFF_MAX_NS 1000000000LL
/* Jitter added to acquire's sleeps so waiters do not wake in lockstep. */
#define ACQUIRE_JITTER_MS 6

struct sluice_limiter {
    char prefix[SL_LIMITER_MAX_PREFIX + 1];
    size_t prefix_len;
    sluice_fail_mode fail_mode;
    int expected_instances;
    sl_local *local;        /* the limiter (in-process), or the FAIL_LOCAL fallback */
    sl_redis *redis;        /* one Redis server, or NULL */
    sl_cluster *cluster;    /* a Redis Cluster, or NULL */

    /* Redis health.  `down` is read without the lock on every call. */
    _Atomic int down;
    pthread_mutex_t health_mu;  /* guards the fields below */
    int probing;            /* one call is trying Redis again */
    int64_t retry_at;       /* monotonic ns: when the next probe may go */
    int64_t backoff;        /* ns */
    sluice_error why;       /* the failure that made it down */

    /* decisions: the in-process limiter's own; Redis counts its own. */
    _Atomic uint64_t allowed, throttled, waits, fallbacks, decisions;
};

static const char *mode_name(sluice_fail_mode m)
{
    return m == SLUICE_FAIL_OPEN ? "OPEN" : m == SLUICE_FAIL_CLOSED ? "CLOSED" : "LOCAL";
}

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Redis health                                                             */
/* ------------------------------------------------------------------------ */

/* 1 when this call should ask Redis (*probe: it is the one retrying after
 * a failure), 0 when it goes straight to the fail mode. */
static int redis_usable(sluice_limiter *l, int *probe)
{
    int use = 0;

    *probe = 0;
    if (!atomic_load_explicit(&l->down, memory_order_acquire))
        return 1;
    pthread_mutex_lock(&l->health_mu);
    if (!atomic_load_explicit(&l->down, memory_order_relaxed)) {
        use = 1;
    } else if (!l->probing && sl_now_ns() >= l->retry_at) {
        l->probing = 1;
        *probe = use = 1;
    }
    pthread_mutex_unlock(&l->health_mu);
    return use;
}

static void redis_ok(sluice_limiter *l, int probe)
{
    int changed = 0;

    if (!probe && !atomic_load_explicit(&l->down, memory_order_relaxed))
        return;
    pthread_mutex_lock(&l->health_mu);
    if (atomic_load_explicit(&l->down, memory_order_relaxed)) {
        atomic_store_explicit(&l->down, 0, memory_order_release);
        changed = 1;
    }
    if (probe)
        l->probing = 0;
    pthread_mutex_unlock(&l->health_mu);
    if (changed)
        SL_INFO("redis %s reachable again", sl_redis_where(l->redis));
}

/* Lock held. */
static void schedule_probe(sluice_limiter *l, const sluice_error *e)
{
    l->retry_at = sl_now_ns() + l->backoff;
    sl_err_copy(&l->why, e);
}

/* Records a Redis failure: the first one turns the limiter to its fail mode
 * (logged once), a failed probe doubles the wait before the next. */
static void redis_failed(sluice_limiter *l, int probe, const sluice_error *e)
{
    int changed = 0;

    pthread_mutex_lock(&l->health_mu);
    if (!atomic_load_explicit(&l->down, memory_order_relaxed)) {
        l->backoff = BACKOFF_MIN_NS;
        schedule_probe(l, e);
        atomic_store_explicit(&l->down, 1, memory_order_release);
        changed = 1;
    } else if (probe) {
        l->backoff = l->backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : l->backoff * 2;
        schedule_probe(l, e);
    }
    if (probe)
        l->probing = 0;
    pthread_mutex_unlock(&l->health_mu);
    if (changed)
        SL_WARN("redis %s unreachable, failing %s: %s", sl_redis_where(l->redis),
                mode_name(l->fail_mode), e->msg);
}

static void probe_done(sluice_limiter *l, int probe)
{
    if (!probe)
        return;
    pthread_mutex_lock(&l->health_mu);
    l->probing = 0;
    pthread_mutex_unlock(&l->health_mu);
}

/* ------------------------------------------------------------------------ */
/* Decisions                                                                */
/* ------------------------------------------------------------------------ */

/* This instance's share of a limit while Redis is away. */
static sluice_limit local_share(const sluice_limiter *l, const sl_lim_req *rq)
{
    sluice_limit s = rq->lim;
    int n = l->expected_instances, need = rq->op == SL_LIM_CHECK ? rq->arg : 1;

    s.rate = s.rate / n;
    s.burst = (int)(((long)s.burst + n - 1) / n);
    if (s.burst < need)
        s.burst = need;
    return s;
}

static int fail_mode(sluice_limiter *l, const sl_lim_req *rq, sluice_limit_result *r,
                     const sluice_error *why, sluice_error *err)
{
    sl_lim_req lq;

    count(&l->fallbacks);
    switch (l->fail_mode) {
    case SLUICE_FAIL_OPEN:
        /* remaining -1: not known, nothing was counted. */
        *r = (sluice_limit_result){1, -1, -1, 0};
        return 0;
    case SLUICE_FAIL_CLOSED:
        *r = (sluice_limit_result){0, 0, -1, 0};
        sl_err_copy(err, why);
        if (err)
            err->code = SLUICE_ELIMITER;
        return SLUICE_ELIMITER;
    case SLUICE_FAIL_LOCAL:
    default:
        lq = *rq;
        lq.lim = local_share(l, rq);
        return sl_local_decide(l->local, &lq, r, err);
    }
}

static int decide_redis(sluice_limiter *l, const sl_lim_req *rq, sluice_limit_result *r,
                        sluice_error *err)
{
    sluice_error e;
    int probe, rc;

    if (redis_usable(l, &probe)) {
        rc = sl_redis_decide(l->redis, rq, r, &e);
        if (rc == 0) {
            redis_ok(l, probe);
            return 0;
        }
        if (rc != SLUICE_ELIMITER) {
            probe_done(l, probe);
            sl_err_copy(err, &e);
            return rc;
        }
        redis_failed(l, probe, &e);
    } else {
        pthread_mutex_lock(&l->health_mu);
        e = l->why;
        pthread_mutex_unlock(&l->health_mu);
    }
    return fail_mode(l, rq, r, &e, err);
}

/* A cluster fails per node: a decision whose node cannot decide goes to the
 * fail mode alone, and the next one for that node tries it again (the
 * cluster skips a node that failed in the last 100 ms). */
static int decide_cluster(sluice_limiter *l, const sl_lim_req *rq, sluice_limit_result *r,
                          sluice_error *err)
{
    sluice_error e;
    int rc = sl_cluster_decide(l->cluster, rq, r, &e);

    if (rc == SLUICE_ELIMITER)
        return fail_mode(l, rq, r, &e, err);
    if (rc)
        sl_err_copy(err, &e);
    return rc;
}

static int decide(sluice_limiter *l, const sl_lim_req *rq, sluice_limit_result *r,
                  sluice_error *err)
{
    int rc;

    if (l->cluster) {
        rc = decide_cluster(l, rq, r, err);
    } else if (l->redis) {
        rc = decide_redis(l, rq, r, err);
    } else {
        rc = sl_local_decide(l->local, rq, r, err);
        count(&l->decisions);
    }
    if (rc == 0 && rq->op == SL_LIM_CHECK)
        count(r->allowed ? &l->allowed : &l->throttled);
    return rc;
}

/* "<prefix>:<key>" into `inline_buf` when it fits, else into a new
 * allocation (*heap, freed by the caller). */
static char *full_key(const sluice_limiter *l, const char *key, size_t klen, char *inline_buf,
                      size_t cap, char **heap)
{
    size_t need = l->prefix_len + 1 + klen + 1;
    char *p = inline_buf;

    *heap = NULL;
    if (need > cap && !(p = *heap = sl_malloc(need)))
        return NULL;
    memcpy(p, l->prefix, l->prefix_len);
    p[l->prefix_len] = ':';
    memcpy(p + l->prefix_len + 1, key, klen + 1);
    return p;
}

int sl_limiter_decide_at(sluice_limiter *l, sl_lim_op op, const char *key,
                         const sluice_limit *lim, int arg, int64_t now_us,
                         sluice_limit_result *r, sluice_error *err)
{
    char buf[SL_LIMITER_MAX_PREFIX + 1 + SL_LIMITER_KEY_INLINE + 1], *heap, *full;
    size_t klen;
    sl_lim_req rq;
    int rc;

    sl_err_clear(err);
    if (!l)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: the limiter is NULL");
    if (!key)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: the key is NULL");
    if (!r)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: the result pointer is NULL");
    klen = strlen(key);
    if (klen == 0 || klen > SL_LIMITER_MAX_KEY)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: the key must be 1..%d bytes (got %zu)",
                      SL_LIMITER_MAX_KEY, klen);
    if (op == SL_LIM_COOLDOWN && arg < 0)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: cooldown of %d ms on key %.100s", arg,
                      key);
    if ((rc = sl_gcra_validate(lim, op == SL_LIM_CHECK ? arg : 1, err)))
        return rc;
    if (op == SL_LIM_COOLDOWN && arg == 0) {
        /* Nothing to hold off; a cooldown of 0 must not empty the bucket. */
        *r = (sluice_limit_result){1, -1, -1, 0};
        return 0;
    }
    if (!(full = full_key(l, key, klen, buf, sizeof buf, &heap)))
        return sl_err(err, SLUICE_ENOMEM, "rate limiter: out of memory for a %zu-byte key", klen);
    rq = (sl_lim_req){op, full, l->prefix_len + 1 + klen, *lim, arg, now_us};
    rc = decide(l, &rq, r, err);
    sl_free(heap);
    return rc;
}

int sl_limiter_check(sluice_limiter *l, const char *key, const sluice_limit *lim, int cost,
                     sluice_limit_result *r, sluice_error *err)
{
    return sl_limiter_decide_at(l, SL_LIM_CHECK, key, lim, cost, SL_LIM_NOW, r, err);
}

int sl_limiter_peek(sluice_limiter *l, const char *key, const sluice_limit *lim,
                    sluice_limit_result *r, sluice_error *err)
{
    return sl_limiter_decide_at(l, SL_LIM_PEEK, key, lim, 1, SL_LIM_NOW, r, err);
}

int sl_limiter_cooldown(sluice_limiter *l, const char *key, const sluice_limit *lim, int ms,
                        sluice_limit_result *r, sluice_error *err)
{
    sluice_limit_result tmp;

    return sl_limiter_decide_at(l, SL_LIM_COOLDOWN, key, lim, ms, SL_LIM_NOW, r ? r : &tmp, err);
}

/* Checks, and while denied sleeps until the key allows it (plus jitter),
 * never past the deadline.  When the wait the limiter announces already
 * ends past the deadline, gives up at once rather than sleep in vain:
 * the key's TAT only ever moves forward, so it could not succeed. */
int sl_limiter_acquire(sluice_limiter *l, const char *key, const sluice_limit *lim, int cost,
                       int64_t deadline, sluice_limit_result *r, sluice_error *err)
{
    sluice_limit_result tmp;
    int rc;

    if (!r)
        r = &tmp;
    for (;;) {
        int64_t now, wake;

        rc = sl_limiter_check(l, key, lim, cost, r, err);
        if (rc || r->allowed)
            return rc;
        now = sl_now_ns();
        wake = now + (int64_t)r->retry_after_ms * 1000000;
        if (deadline != SL_NO_DEADLINE && wake > deadline)
            return sl_err(err, SLUICE_ERATELIMITED,
                          "rate limited on key %.100s: allowed again in %ld ms, after the "
                          "deadline", key, r->retry_after_ms);
        wake += (int64_t)sl_rand_below(ACQUIRE_JITTER_MS) * 1000000;
        count(&l->waits);
        sl_sleep_until(sl_deadline_min(wake, deadline));
    }
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */
/* ------------------------------------------------------------------------ */

void sluice_limiter_opts_init(sluice_limiter_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->prefix = DEFAULT_PREFIX;
    o->redis_timeout_ms = DEFAULT_TIMEOUT_MS;
    o->fail_mode = SLUICE_FAIL_LOCAL;
    o->expected_instances = 1;
    o->pool_size = DEFAULT_POOL_SIZE;
}

/* Fills `out` from `o` (NULL: defaults), zero fields taking defaults. */
static int normalise(const sluice_limiter_opts *o, sluice_limiter_opts *out, sluice_error *err)
{
    sluice_limiter_opts d;

    sluice_limiter_opts_init(&d);
    *out = o ? *o : d;
    if (!out->prefix)
        out->prefix = DEFAULT_PREFIX;
    if (!out->redis_timeout_ms)
        out->redis_timeout_ms = DEFAULT_TIMEOUT_MS;
    if (!out->expected_instances)
        out->expected_instances = 1;
    if (!out->pool_size)
        out->pool_size = DEFAULT_POOL_SIZE;
    if (!*out->prefix || strlen(out->prefix) > SL_LIMITER_MAX_PREFIX)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: the prefix must be 1..%d bytes",
                      SL_LIMITER_MAX_PREFIX);
    if (out->redis_timeout_ms < 0)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: redis_timeout_ms must be > 0 (got %d)",
                      out->redis_timeout_ms);
    if (out->fail_mode != SLUICE_FAIL_OPEN && out->fail_mode != SLUICE_FAIL_CLOSED &&
        out->fail_mode != SLUICE_FAIL_LOCAL)
        return sl_err(err, SLUICE_EINVAL, "rate limiter: unknown fail_mode %d",
                      (int)out->fail_mode);
    if (out->expected_instances < 0 || out->pool_size < 0)
        return sl_err(err, SLUICE_EINVAL,
                      "rate limiter: expected_instances and pool_size must be > 0");
    return 0;
}

static void redis_cfg(const sluice_limiter_opts *o, sl_redis_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->timeout_ms = o->redis_timeout_ms;
    cfg->pool_size = o->pool_size;
    cfg->max_inflight = o->pool_size;
    cfg->create_timeout_ms =
        o->redis_timeout_ms > CREATE_TIMEOUT_MS ? o->redis_timeout_ms : CREATE_TIMEOUT_MS;
}

#define CLUSTER_SCHEME "redis+cluster://"

/* A cluster's keys must keep the hash tag the caller's key carries: a
 * brace in the prefix would become the tag of every key. */
static int attach_cluster(sluice_limiter *l, const char *url, const sluice_limiter_opts *o,
                          sluice_error *err)
{
    sl_redis_url *seeds;
    sl_redis_cfg cfg;
    sluice_error e;
    size_t n;
    int reachable, rc;

    if (strpbrk(o->prefix, "{}"))
        return sl_err(err, SLUICE_EINVAL, "rate limiter: a Redis Cluster prefix may not contain "
                      "'{' or '}' (got \"%s\"): keys take their hash tag from the caller's key",
                      o->prefix);
    if ((rc = sl_redis_cluster_url_parse(url, &seeds, &n, err)))
        return rc;
    redis_cfg(o, &cfg);
    sl_err_clear(&e);
    l->cluster = sl_cluster_new(&seeds, n, &cfg, &reachable, &e);
    if (!l->cluster) {
        sl_err_copy(err, &e);
        return e.code ? e.code : SLUICE_ENOMEM;
    }
    if (!reachable)
        SL_WARN("redis cluster %s: no seed reachable, failing %s until one is: %s",
                sl_cluster_where(l->cluster), mode_name(l->fail_mode), e.msg);
    return 0;
}

/* The server's URL into *u, or for redis+sentinel:// the master's
 * credentials and db into *u and the sentinels into *sentinel. */
static int parse_redis_url(const char *url, sl_redis_url *u, sl_sentinel **sentinel,
                           sluice_error *err)
{
    sl_redis_sentinel_url su;
    int rc;

    *sentinel = NULL;
    if (strncasecmp(url, "redis+sentinel://", 17) != 0)
        return sl_redis_url_parse(url, u, err);
    if ((rc = sl_redis_sentinel_url_parse(url, &su, err)))
        return rc;
    *sentinel = sl_sentinel_new(&su, err);
    if (*sentinel) {
        *u = su.auth;
        memset(&su.auth, 0, sizeof su.auth);
    }
    sl_redis_sentinel_url_free(&su);
    return *sentinel ? 0 : SLUICE_ENOMEM;
}

static int attach_redis(sluice_limiter *l, const char *url, const sluice_limiter_opts *o,
                        sluice_error *err)
{
    sl_redis_url u;
    sl_sentinel *sentinel;
    sl_redis_cfg cfg;
    sluice_error e;
    int reachable, rc;

    if (strncasecmp(url, CLUSTER_SCHEME, strlen(CLUSTER_SCHEME)) == 0)
        return attach_cluster(l, url, o, err);
    if ((rc = parse_redis_url(url, &u, &sentinel, err)))
        return rc;
    redis_cfg(o, &cfg);
    sl_err_clear(&e);
    l->redis = sl_redis_new(&u, sentinel, &cfg, &reachable, &e);
    if (!l->redis) {
        sl_err_copy(err, &e);
        return e.code ? e.code : SLUICE_ENOMEM;
    }
    if (!reachable)
        redis_failed(l, 0, &e);
    return 0;
}

sluice_limiter *sluice_limiter_new(const char *redis_url, const sluice_limiter_opts *o,
                                   sluice_error *err)
{
    sluice_limiter_opts opts;
    sluice_limiter *l;
    /* The environment is read here, at creation, never on a decision path. */
    const char *url = redis_url ? redis_url : getenv("SLUICE_REDIS_URL");
    int rc;

    sl_err_clear(err);
    if (normalise(o, &opts, err))
        return NULL;
    l = sl_calloc(1, sizeof *l);
    if (!l) {
        sl_err(err, SLUICE_ENOMEM, "rate limiter: out of memory");
        return NULL;
    }
    l->prefix_len = strlen(opts.prefix);
    memcpy(l->prefix, opts.prefix, l->prefix_len + 1);
    l->fail_mode = opts.fail_mode;
    l->expected_instances = opts.expected_instances;
    rc = sl_mutex_init(&l->health_mu, "rate limiter health", err);
    if (rc == 0 && url && *url)
        rc = attach_redis(l, url, &opts, err);
    if (rc == 0 && ((!l->redis && !l->cluster) || l->fail_mode == SLUICE_FAIL_LOCAL)) {
        l->local = sl_local_new(err);
        if (!l->local)
            rc = SLUICE_ENOMEM;
    }
    if (rc) {
        sluice_limiter_free(l);
        return NULL;
    }
    return l;
}

void sluice_limiter_free(sluice_limiter *l)
{
    if (!l)
        return;
    sl_redis_free(l->redis);
    sl_cluster_free(l->cluster);
    sl_local_free(l->local);
    pthread_mutex_destroy(&l->health_mu);
    sl_free(l);
}

int sluice_limiter_check(sluice_limiter *l, const char *key, const sluice_limit *lim, int cost,
                         sluice_limit_result *r)
{
    return sl_limiter_check(l, key, lim, cost, r, NULL);
}

int sluice_limiter_peek(sluice_limiter *l, const char *key, const sluice_limit *lim,
                        sluice_limit_result *r)
{
    return sl_limiter_peek(l, key, lim, r, NULL);
}

int sluice_limiter_acquire(sluice_limiter *l, const char *key, const sluice_limit *lim, int cost,
                           int timeout_ms, sluice_limit_result *r)
{
    return sl_limiter_acquire(l, key, lim, cost, sl_deadline_in_ms(timeout_ms), r, NULL);
}

int sluice_limiter_cooldown(sluice_limiter *l, const char *key, const sluice_limit *lim, int ms)
{
    return sl_limiter_cooldown(l, key, lim, ms, NULL, NULL);
}

void sluice_limiter_stats(sluice_limiter *l, struct sluice_limiter_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!l)
        return;
    out->allowed = atomic_load_explicit(&l->allowed, memory_order_relaxed);
    out->throttled = atomic_load_explicit(&l->throttled, memory_order_relaxed);
    out->waits = atomic_load_explicit(&l->waits, memory_order_relaxed);
    out->fallbacks = atomic_load_explicit(&l->fallbacks, memory_order_relaxed);
    out->decisions = atomic_load_explicit(&l->decisions, memory_order_relaxed);
    if (l->redis) {
        out->redis_errors = sl_redis_errors(l->redis);
        out->round_trips = sl_redis_round_trips(l->redis);
        out->decisions = sl_redis_decisions(l->redis);
        out->sentinel_rediscoveries = sl_redis_rediscoveries(l->redis);
    }
    if (l->cluster) {
        sl_cluster_stats cs;

        sl_cluster_get_stats(l->cluster, &cs);
        out->redis_errors = cs.errors;
        out->round_trips = cs.round_trips;
        out->decisions = cs.decisions;
        out->cluster_nodes = cs.nodes;
        out->cluster_moved = cs.moved;
        out->cluster_ask = cs.ask;
        out->cluster_tryagain = cs.tryagain;
        out->cluster_refreshes = cs.refreshes;
        out->cluster_node_fallbacks = cs.node_fallbacks;
    }
}

size_t sluice_limiter_cluster_nodes(sluice_limiter *l, struct sluice_limiter_node_stats *out,
                                    size_t cap)
{
    if (!l || !l->cluster)
        return 0;
    return sl_cluster_node_stats(l->cluster, out, out ? cap : 0);
}

int sl_limiter_cluster_node(sluice_limiter *l, size_t i, struct sluice_limiter_node_stats *out)
{
    return l && l->cluster ? sl_cluster_node_at(l->cluster, i, out) : 0;
}

int sluice_limiter_is_shared(const sluice_limiter *l)
{
    return l && (l->redis != NULL || l->cluster != NULL);
}

sl_local *sl_limiter_local(sluice_limiter *l)
{
    return l ? l->local : NULL;
}
