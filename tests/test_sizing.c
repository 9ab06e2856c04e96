/* Sizing pools to their load: the warm minimum (min_idle_per_host for the
 * factory, min_idle and sluice_pool_prefill for the generic pool) and
 * per-resource usage (sluice_pool_usage, requests per connection). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* ---- the generic pool ------------------------------------------------------ */

struct res_ctx {
    sluice_pool *_Atomic pool;   /* set once made; create looks at its stats */
    _Atomic int creates, destroys, fail;
    _Atomic int off_caller;      /* creates on another thread than the test's */
    pthread_t caller;
    int seq;
};

static int res_create(void *ctx, void **res, sluice_error *err)
{
    struct res_ctx *c = ctx;
    sluice_pool *p = atomic_load(&c->pool);
    int *r;

    atomic_fetch_add(&c->creates, 1);
    if (!pthread_equal(pthread_self(), c->caller))
        atomic_fetch_add(&c->off_caller, 1);
    if (p) {
        /* Takes the pool lock: a create run under it would deadlock here. */
        struct sluice_pool_stats s;
        sluice_pool_stats(p, &s);
    }
    if (atomic_load(&c->fail)) {
        if (err) {
            err->code = SLUICE_ECONNECT;
            snprintf(err->msg, sizeof err->msg, "test resource refused");
        }
        return SLUICE_ECONNECT;
    }
    r = malloc(sizeof *r);
    if (!r)
        return SLUICE_ENOMEM;
    *r = __atomic_add_fetch(&c->seq, 1, __ATOMIC_RELAXED);
    *res = r;
    return 0;
}

static void res_destroy(void *ctx, void *res)
{
    struct res_ctx *c = ctx;

    atomic_fetch_add(&c->destroys, 1);
    free(res);
}

static const sluice_pool_ops res_ops = {res_create, res_destroy, NULL, NULL};

static sluice_pool *res_pool(struct res_ctx *c, int max, int min_idle)
{
    sluice_pool_opts o;
    sluice_error err;
    sluice_pool *p;

    memset(c, 0, sizeof *c);
    c->caller = pthread_self();
    memset(&o, 0, sizeof o);
    o.max_size = max;
    o.min_idle = min_idle;
    p = sluice_pool_new(&o, &res_ops, c, &err);
    if (!p)
        fprintf(stderr, "\n  pool: %s\n", err.msg);
    atomic_store(&c->pool, p);
    return p;
}

static void test_pool_prefill_within_max_size(void)
{
    struct res_ctx c;
    sluice_pool *p = res_pool(&c, 4, 0);
    struct sluice_pool_stats s;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(sluice_pool_prefill(p, 3, &err), 3);
    sluice_pool_stats(p, &s);
    CU_ASSERT_EQUAL(s.idle, 3);
    CU_ASSERT_EQUAL(s.created, 3);
    CU_ASSERT_EQUAL(sluice_pool_prefill(p, 3, &err), 1);     /* room for one more */
    CU_ASSERT_EQUAL(sluice_pool_prefill(p, 3, &err), 0);
    CU_ASSERT_EQUAL(sluice_pool_prefill(p, -1, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_pool_prefill(NULL, 1, &err), SLUICE_EINVAL);
    sluice_pool_stats(p, &s);
    CU_ASSERT_EQUAL(s.idle, 4);
    sluice_pool_free(p);
    CU_ASSERT_EQUAL(c.destroys, 4);
    /* A failing create: its error, nothing made. */
    p = res_pool(&c, 4, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    atomic_store(&c.fail, 1);
    CU_ASSERT_EQUAL(sluice_pool_prefill(p, 2, &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.code, SLUICE_ECONNECT);
    sluice_pool_stats(p, &s);
    CU_ASSERT_EQUAL(s.open, 0);
    sluice_pool_free(p);
}

struct idle_want {
    sluice_pool *p;
    int idle, open;
};

static int pool_idle_is(void *arg)
{
    struct idle_want *w = arg;
    struct sluice_pool_stats s;

    sluice_pool_stats(w->p, &s);
    return s.idle == w->idle && (w->open < 0 || s.open == w->open);
}

/* min_idle fills the pool from the start and again after checkouts, on
 * the housekeeping thread, within max_size, and not under the pool lock
 * (create reads the pool's stats). */
static void test_pool_min_idle_refills(void)
{
    struct res_ctx c;
    sluice_pool *p = res_pool(&c, 4, 2);
    struct idle_want w = {p, 2, 2};
    void *a = NULL, *b = NULL, *x = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_FATAL(tu_wait_until(pool_idle_is, &w, 10000));
    CU_ASSERT_EQUAL(c.off_caller, 2);
    CU_ASSERT_EQUAL(sluice_pool_get(p, 1000, &a), 0);
    CU_ASSERT_EQUAL(sluice_pool_get(p, 1000, &b), 0);
    w.open = 4;                         /* two out, two warm again */
    CU_ASSERT(tu_wait_until(pool_idle_is, &w, 10000));
    CU_ASSERT_EQUAL(sluice_pool_get(p, 1000, &x), 0);
    usleep(300 * 1000);                 /* three passes: no room past max_size */
    w.idle = 1;
    CU_ASSERT(pool_idle_is(&w));
    CU_ASSERT_EQUAL(c.creates, 4);
    CU_ASSERT_EQUAL(c.off_caller, 4);   /* no caller ever created one */
    sluice_pool_put(p, a, 1);
    sluice_pool_put(p, b, 1);
    sluice_pool_put(p, x, 1);
    sluice_pool_free(p);
    CU_ASSERT_EQUAL(c.destroys, 4);
    /* min_idle past max_idle cannot be kept. */
    {
        sluice_pool_opts o;
        sluice_error err;
        memset(&o, 0, sizeof o);
        o.max_size = 2;
        o.min_idle = 3;
        CU_ASSERT_PTR_NULL(sluice_pool_new(&o, &res_ops, &c, &err));
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    }
}

static _Atomic int refill_warnings;

static void count_refill_warnings(sluice_log_level level, const char *msg, void *ud)
{
    if (level == SLUICE_LOG_WARN && strstr(msg, "keeping"))
        atomic_fetch_add(&refill_warnings, 1);
}

/* A create that keeps failing is retried 100, 200, 400, 800 ms apart (not
 * every 100 ms), and logs one warning. */
static void test_pool_refill_failure_backs_off(void)
{
    struct res_ctx c;
    sluice_pool *p;
    int n;

    atomic_store(&refill_warnings, 0);
    sluice_set_log(count_refill_warnings, SLUICE_LOG_WARN, NULL);
    memset(&c, 0, sizeof c);
    p = res_pool(&c, 4, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    atomic_store(&c.fail, 1);
    usleep(1600 * 1000);
    n = atomic_load(&c.creates);
    fprintf(stderr, "\n  %d refill attempts in 1.6 s\n", n);
    CU_ASSERT(n >= 2);
    CU_ASSERT(n <= 6);                  /* 16 without the backoff */
    CU_ASSERT_EQUAL(atomic_load(&refill_warnings), 1);
    atomic_store(&c.fail, 0);           /* the next try (<= 1.6 s) works */
    {
        struct idle_want w = {p, 1, 1};
        CU_ASSERT(tu_wait_until(pool_idle_is, &w, 10000));
    }
    sluice_pool_free(p);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
}

/* Per-resource usage: checkouts match what the test checked out of each,
 * in_use marks the one held, and ages are consistent. */
static void test_pool_usage_matches_checkouts(void)
{
    struct res_ctx c;
    sluice_pool *p = res_pool(&c, 3, 0);
    struct sluice_pool_usage u[8];
    void *r[3];
    uint64_t mine[4] = {0};
    size_t n, i;
    int round, k;

    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL(sluice_pool_usage(p, u, 8), 0);
    for (round = 0; round < 5; round++) {
        int take = 1 + round % 3;
        for (k = 0; k < take; k++) {
            CU_ASSERT_EQUAL_FATAL(sluice_pool_get(p, 1000, &r[k]), 0);
            mine[*(int *)r[k]]++;
        }
        for (k = 0; k < take; k++)
            sluice_pool_put(p, r[k], 1);
    }
    CU_ASSERT_EQUAL_FATAL(sluice_pool_get(p, 1000, &r[0]), 0);
    mine[*(int *)r[0]]++;
    n = sluice_pool_usage(p, u, 8);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_EQUAL(sluice_pool_usage(p, u, 1), 3);      /* the count, past cap */
    CU_ASSERT_EQUAL(sluice_pool_usage(p, NULL, 0), 3);
    n = sluice_pool_usage(p, u, 8);
    for (i = 0; i < n && i < 8; i++) {
        int id = *(const int *)u[i].res;
        CU_ASSERT_EQUAL(u[i].checkouts, mine[id]);
        CU_ASSERT_EQUAL(u[i].in_use, u[i].res == r[0]);
        CU_ASSERT(u[i].age_ms >= u[i].idle_ms);
        if (i > 0)
            CU_ASSERT(u[i].age_ms <= u[i - 1].age_ms);   /* oldest first */
    }
    sluice_pool_put(p, r[0], 1);
    sluice_pool_free(p);
}

/* ---- the factory's warm minimum ------------------------------------------- */

static _Atomic int hook_connects;
static sluice_factory *_Atomic hook_factory;

static void count_connects(const sluice_pool_event *ev, void *ud)
{
    sluice_factory *f = atomic_load(&hook_factory);

    if (ev->type != SLUICE_POOL_CONNECT)
        return;
    atomic_fetch_add(&hook_connects, 1);
    if (f) {
        struct sluice_factory_stats s;
        sluice_factory_stats(f, &s);    /* takes the pool lock: never held here */
    }
}

static sluice_factory *warm_factory(int min_idle, int per_host, int expiry_ms)
{
    sluice_factory_opts o;
    sluice_error err;
    sluice_factory *f;

    sluice_factory_opts_init(&o, SLUICE_PRESET_DEFAULT);
    o.min_idle_per_host = min_idle;
    o.max_connections_per_host = per_host;
    o.keepalive_expiry_ms = expiry_ms;
    f = sluice_factory_new(&o, &err);
    if (!f)
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

struct warm {
    sluice_factory *f;
    int idle;
    int reason;          /* a close reason to have seen at least `closed` of, or -1 */
    uint64_t closed;
};

static int warm_reached(void *arg)
{
    struct warm *w = arg;
    struct sluice_factory_stats s;

    sluice_factory_stats(w->f, &s);
    return s.pool.idle == w->idle && (w->reason < 0 || s.pool.closed[w->reason] >= w->closed);
}

/* Warm after one call, and again after keepalive expiry closed them. */
static void test_warm_minimum_after_expiry(void)
{
    sluice_factory *f = warm_factory(3, 0, 300);
    sluice_client *c;
    struct warm w;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = tu_client(&f, "warm", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    w.f = f;
    w.idle = 3;
    w.reason = -1;
    CU_ASSERT(tu_wait_until(warm_reached, &w, 10000));
    w.reason = SLUICE_CLOSE_EXPIRED;
    w.closed = 3;
    CU_ASSERT(tu_wait_until(warm_reached, &w, 10000));
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    sluice_factory_free(f);
}

/* The server closes idle connections after 300 ms: the housekeeping
 * thread finds them closed and reconnects. */
static void test_warm_minimum_after_server_closes(void)
{
    const char *args[] = {"--idle-timeout", "300", NULL};
    tu_server srv;
    sluice_factory_opts o;
    sluice_factory *f;
    sluice_client *c;
    struct warm w;
    sluice_error err;

    if (tu_mockapi_start(&srv, args) != 0)
        return;
    sluice_factory_opts_init(&o, SLUICE_PRESET_DEFAULT);
    o.min_idle_per_host = 2;
    o.keepalive_expiry_ms = 60000;
    o.on_pool_event = count_connects;
    atomic_store(&hook_connects, 0);
    f = sluice_factory_new(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    atomic_store(&hook_factory, f);
    c = tu_client(&f, "warmclose", srv.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    w.f = f;
    w.idle = 2;
    w.reason = SLUICE_CLOSE_STALE;
    w.closed = 2;
    CU_ASSERT(tu_wait_until(warm_reached, &w, 15000));
    CU_ASSERT(atomic_load(&hook_connects) >= 4);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    atomic_store(&hook_factory, NULL);
    sluice_factory_free(f);
    tu_server_stop(&srv);
}

/* Within max_connections_per_host: never more open than it allows. */
static void test_warm_minimum_within_limits(void)
{
    sluice_factory *f = warm_factory(4, 2, 60000);
    sluice_client *c;
    struct sluice_factory_stats s;
    struct warm w;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = tu_client(&f, "warmlimit", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    w.f = f;
    w.idle = 2;
    w.reason = -1;
    CU_ASSERT(tu_wait_until(warm_reached, &w, 10000));
    usleep(300 * 1000);
    sluice_factory_stats(f, &s);
    CU_ASSERT_EQUAL(s.pool.open, 2);
    CU_ASSERT_EQUAL(s.pool.created, 2);
    sluice_factory_free(f);
}

/* Requests per connection: one connection that served 10, and with a warm
 * minimum of 2 another that served none. */
static void test_factory_requests_per_connection(void)
{
    sluice_factory *f = warm_factory(0, 0, 60000);
    sluice_client *c;
    struct sluice_factory_stats s;
    struct warm w;
    sluice_error err;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = tu_client(&f, "perconn", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    sluice_factory_stats(f, &s);
    CU_ASSERT_EQUAL(s.conn_requests_max, 0);
    for (i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &s);
    CU_ASSERT_EQUAL(s.conn_requests_min, 10);
    CU_ASSERT_EQUAL(s.conn_requests_median, 10);
    CU_ASSERT_EQUAL(s.conn_requests_max, 10);
    sluice_factory_free(f);

    f = warm_factory(2, 0, 60000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = tu_client(&f, "perconn2", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    w.f = f;
    w.idle = 2;
    w.reason = -1;
    CU_ASSERT(tu_wait_until(warm_reached, &w, 10000));
    sluice_factory_stats(f, &s);
    CU_ASSERT_EQUAL(s.conn_requests_min, 0);
    CU_ASSERT_EQUAL(s.conn_requests_max, 5);
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_pool_prefill_within_max_size", test_pool_prefill_within_max_size},
    {"test_pool_min_idle_refills", test_pool_min_idle_refills},
    {"test_pool_refill_failure_backs_off", test_pool_refill_failure_backs_off},
    {"test_pool_usage_matches_checkouts", test_pool_usage_matches_checkouts},
    {"test_warm_minimum_after_expiry", test_warm_minimum_after_expiry},
    {"test_warm_minimum_after_server_closes", test_warm_minimum_after_server_closes},
    {"test_warm_minimum_within_limits", test_warm_minimum_within_limits},
    {"test_factory_requests_per_connection", test_factory_requests_per_connection},
    CU_TEST_INFO_NULL,
};

void suite_sizing(void);
void suite_sizing(void)
{
    tu_add_suite("sizing", tests);
}
