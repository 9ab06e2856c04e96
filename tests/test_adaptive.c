/* The adaptive concurrency limit (adaptive_concurrency), against the mock
 * API's /capacity: a server of capacity `cap` whose latency grows with the
 * square of its overload. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define MAX_THREADS 64

struct load {
    sluice_client *c;
    const char *_Atomic path;
    _Atomic int stop;
    _Atomic long ok, failed, queuefull;
    _Atomic long max_seen;          /* most in flight the server reported */
    int timeout_ms;
};

static void note_in_flight(struct load *l, const sluice_response *r)
{
    const char *body = sluice_response_body(r, NULL), *p = strstr(body, "\"in_flight\":");
    long n, m;

    if (!p)
        return;
    n = strtol(p + 12, NULL, 10);
    m = atomic_load(&l->max_seen);
    while (n > m && !atomic_compare_exchange_weak(&l->max_seen, &m, n))
        ;
}

static void *load_main(void *arg)
{
    struct load *l = arg;

    while (!atomic_load(&l->stop)) {
        sluice_request req = {0};
        sluice_response *r = NULL;
        sluice_error err;
        int rc;

        req.path = atomic_load(&l->path);
        req.timeout_ms = l->timeout_ms;
        rc = sluice_client_do(l->c, &req, &r, &err);
        if (rc == 0 && sluice_response_status(r) == 200) {
            atomic_fetch_add(&l->ok, 1);
            note_in_flight(l, r);
        } else {
            atomic_fetch_add(&l->failed, 1);
            if (rc == SLUICE_EQUEUEFULL)
                atomic_fetch_add(&l->queuefull, 1);
        }
        sluice_response_free(r);
    }
    return NULL;
}

static void load_start(struct load *l, pthread_t *t, int n)
{
    int i;

    for (i = 0; i < n; i++)
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, load_main, l) == 0);
}

static void load_stop(struct load *l, pthread_t *t, int n)
{
    int i;

    atomic_store(&l->stop, 1);
    for (i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static int limit_of(sluice_client *c)
{
    struct sluice_client_stats s;

    sluice_client_stats(c, &s);
    return s.concurrency_limit;
}

/* Samples the limit every 20 ms for `ms`: its least and largest values. */
static void watch_limit(sluice_client *c, int ms, int *lo, int *hi)
{
    int64_t end = tu_now_ms() + ms;

    *lo = 1 << 30;
    *hi = 0;
    while (tu_now_ms() < end) {
        int v = limit_of(c);
        *lo = v < *lo ? v : *lo;
        *hi = v > *hi ? v : *hi;
        usleep(20000);
    }
}

static int min_in = 1, max_in = 0;

static void tune_adaptive(sluice_client_opts *co)
{
    co->adaptive_concurrency = 1;
    co->min_in_flight = min_in;
    co->max_in_flight = max_in;
    co->disable_coalescing = 1;
    co->read_timeout_ms = 10000;
}

static sluice_client *adaptive_client(sluice_factory **f, const char *name, int lo, int hi)
{
    min_in = lo;
    max_in = hi;
    return tu_client(f, name, tu_http_base(), tune_adaptive);
}

static _Atomic int limit_lines;

static void count_limit_lines(sluice_log_level level, const char *msg, void *ud)
{
    if (level == SLUICE_LOG_INFO && strstr(msg, "settle: adaptive concurrency limit "))
        atomic_fetch_add(&limit_lines, 1);
}

/* 64 threads against a server of capacity 8: the limit settles within 2x
 * of it, and the server never sees all 64 at once.  The limit's move from
 * its start (4) past twice that is logged at info level. */
static void test_adaptive_settles_near_capacity(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = adaptive_client(&f, "settle", 1, 0);
    static struct load l;
    pthread_t t[MAX_THREADS];
    struct sluice_client_stats s;
    int lo, hi;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memset(&l, 0, sizeof l);
    l.c = c;
    l.path = "/capacity?cap=8&ms=10";
    l.timeout_ms = 5000;
    atomic_store(&limit_lines, 0);
    sluice_set_log(count_limit_lines, SLUICE_LOG_INFO, NULL);
    load_start(&l, t, MAX_THREADS);
    usleep(2500 * 1000);             /* settling */
    watch_limit(c, 1500, &lo, &hi);
    load_stop(&l, t, MAX_THREADS);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    CU_ASSERT(atomic_load(&limit_lines) >= 1);
    sluice_client_stats(c, &s);
    fprintf(stderr, "\n  limit over the last 1.5 s: %d..%d, ok %ld, failed %ld, server peak %ld, "
            "limited %llu\n", lo, hi, (long)l.ok, (long)l.failed, (long)l.max_seen,
            (unsigned long long)s.limited);
    CU_ASSERT(lo >= 4);
    CU_ASSERT(hi <= 16);
    CU_ASSERT(l.max_seen < 40);
    CU_ASSERT(s.limited > 0);
    CU_ASSERT(l.ok > 0);
    sluice_factory_free(f);
}

struct slow {
    sluice_client *c;
    int rc;
};

static void *slow_main(void *arg)
{
    struct slow *s = arg;
    sluice_error err;

    s->rc = tu_get_status(s->c, "/delay/800", &err);
    return NULL;
}

static int two_in_use(void *f)
{
    struct sluice_factory_stats st;

    sluice_factory_stats(f, &st);
    return st.pool.in_use >= 2;
}

/* At the limit (2) a call waits, holding no connection, and fails at its
 * deadline with SLUICE_EQUEUEFULL; one with time enough gets a place. */
static void test_adaptive_over_limit_waits_then_equeuefull(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = adaptive_client(&f, "overlimit", 2, 2);
    struct sluice_factory_stats fs;
    struct sluice_client_stats s;
    struct slow sl[2];
    pthread_t t[2];
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    int64_t t0;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(limit_of(c), 2);
    for (i = 0; i < 2; i++) {
        sl[i].c = c;
        pthread_create(&t[i], NULL, slow_main, &sl[i]);
    }
    CU_ASSERT_FATAL(tu_wait_until(two_in_use, f, 10000));
    req.path = "/json";
    req.timeout_ms = 150;
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EQUEUEFULL);
    CU_ASSERT(tu_now_ms() - t0 >= 140);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "adaptive"));
    sluice_factory_stats(f, &fs);
    CU_ASSERT_EQUAL(fs.pool.in_use, 2);      /* the waiter held none */
    req.timeout_ms = 10000;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), 0);
    sluice_response_free(r);
    for (i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(sl[i].rc, 200);
    }
    sluice_client_stats(c, &s);
    CU_ASSERT_EQUAL(s.limited, 2);
    sluice_factory_free(f);
}

struct grow {
    sluice_client *c;
    int above;
};

static int grew(void *arg)
{
    struct grow *g = arg;

    return limit_of(g->c) >= g->above;
}

/* Overloaded (capacity 2) the limit comes down; once the server has room
 * again (capacity 1000) it grows back past twice that. */
static void test_adaptive_grows_back_when_latency_recovers(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = adaptive_client(&f, "growback", 1, 0);
    static struct load l;
    pthread_t t[32];
    struct grow g;
    int lo, hi;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memset(&l, 0, sizeof l);
    l.c = c;
    l.path = "/capacity?cap=2&ms=10";
    l.timeout_ms = 5000;
    load_start(&l, t, 32);
    usleep(2000 * 1000);
    watch_limit(c, 500, &lo, &hi);
    fprintf(stderr, "\n  overloaded: limit %d..%d\n", lo, hi);
    CU_ASSERT(hi <= 8);
    l.path = "/capacity?cap=1000&ms=10";
    g.c = c;
    g.above = 2 * hi > 16 ? 2 * hi : 16;
    CU_ASSERT(tu_wait_until(grew, &g, 15000));
    fprintf(stderr, "  recovered: limit %d\n", limit_of(c));
    load_stop(&l, t, 32);
    sluice_factory_free(f);
}

/* min_in_flight and max_in_flight bound the limit, overloaded and not;
 * the server never sees more than max_in_flight. */
static void test_adaptive_bounded_by_min_and_max(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = adaptive_client(&f, "bounds", 6, 10);
    static struct load l;
    pthread_t t[32];
    int lo, hi;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memset(&l, 0, sizeof l);
    l.c = c;
    l.path = "/capacity?cap=1&ms=5";
    l.timeout_ms = 5000;
    load_start(&l, t, 32);
    watch_limit(c, 2000, &lo, &hi);
    CU_ASSERT(lo >= 6);
    CU_ASSERT(hi <= 10);
    CU_ASSERT_EQUAL(lo, 6);             /* overloaded: down to the floor */
    l.path = "/capacity?cap=1000&ms=5";
    watch_limit(c, 2000, &lo, &hi);
    load_stop(&l, t, 32);
    fprintf(stderr, "\n  healthy: limit %d..%d, server peak %ld\n", lo, hi, (long)l.max_seen);
    CU_ASSERT(lo >= 6);
    CU_ASSERT(hi <= 10);
    CU_ASSERT_EQUAL(hi, 10);            /* healthy: up to the ceiling */
    CU_ASSERT(l.max_seen <= 10);
    sluice_factory_free(f);
}

static void tune_coalescing(sluice_client_opts *co)
{
    tune_adaptive(co);
    co->disable_coalescing = 0;
}

/* With a limit of 1, 32 identical calls to a 300 ms upstream all succeed
 * well before 32 x 300 ms: followers wait on the leader, not for a place. */
static void test_adaptive_coalesced_follower_takes_no_slot(void)
{
    sluice_factory *f = NULL;
    sluice_client *c;
    static struct load l;
    pthread_t t[32];
    struct sluice_client_stats s;
    int64_t t0;

    min_in = max_in = 1;
    c = tu_client(&f, "adcoalesce", tu_http_base(), tune_coalescing);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memset(&l, 0, sizeof l);
    l.c = c;
    l.path = "/capacity?cap=1000&ms=300";
    l.timeout_ms = 3000;
    t0 = tu_now_ms();
    load_start(&l, t, 32);
    usleep(1000 * 1000);
    load_stop(&l, t, 32);
    sluice_client_stats(c, &s);
    fprintf(stderr, "\n  ok %ld, failed %ld in %lld ms, limited %llu\n", (long)l.ok,
            (long)l.failed, (long long)(tu_now_ms() - t0), (unsigned long long)s.limited);
    CU_ASSERT(l.ok >= 32);
    CU_ASSERT_EQUAL(l.failed, 0);
    /* Were followers to take places, 31 of 32 would wait every round;
     * only a new flight's leader may wait, briefly, for the last one's. */
    CU_ASSERT(s.limited < 16);
    sluice_factory_free(f);
}

static void tune_retry_breaker(sluice_client_opts *co)
{
    tune_adaptive(co);
    co->retry.max_retries = 3;
    co->retry.backoff_factor_ms = 1;
    co->breaker.disabled = 0;
    co->breaker.failure_threshold = 3;
    co->breaker.recovery_timeout_ms = 60000;
}

/* Retries run inside the caller's place, and a breaker's refusal gives
 * its place back: with a limit of 1, neither makes a later call wait. */
static void test_adaptive_composes_with_retries_and_breaker(void)
{
    sluice_factory *f = NULL;
    sluice_client *c;
    struct sluice_client_stats s;
    sluice_response *r = NULL;
    sluice_error err;
    char path[64];
    int i;

    min_in = max_in = 1;
    c = tu_client(&f, "adretry", tu_http_base(), tune_retry_breaker);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/flaky/adaptive-%lld?fail=2", (long long)tu_now_ms());
    CU_ASSERT_EQUAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 3);
    sluice_response_free(r);
    /* 500s: the retries open the breaker, later calls are refused at once. */
    CU_ASSERT_EQUAL(tu_get_status(c, "/status/500", &err), 500);
    for (i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/status/500", &err), SLUICE_ECIRCUITOPEN);
    sluice_client_stats(c, &s);
    CU_ASSERT_EQUAL(s.limited, 0);
    CU_ASSERT_EQUAL(s.concurrency_limit, 1);
    sluice_factory_free(f);
}

static void tune_negative_min(sluice_client_opts *co)
{
    co->adaptive_concurrency = 1;
    co->min_in_flight = -3;
}

static void test_adaptive_negative_min_is_einval(void)
{
    sluice_factory *f = sluice_factory_new(NULL, NULL);
    sluice_client_opts co;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sluice_client_opts_init(&co);
    co.base_url = "http://127.0.0.1:1";
    tune_negative_min(&co);
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "neg", &co, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "min_in_flight"));
    sluice_factory_free(f);
}

/* The limit is in both exports; the static bulkhead reports its bound. */
static void test_adaptive_limit_exported(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = adaptive_client(&f, "exported", 3, 9);
    static char buf[1 << 16];

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, buf, sizeof buf);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "sluice_concurrency_limit{service=\"exported\"} 4\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "sluice_limited_total{service=\"exported\"} 0\n"));
    sluice_factory_metrics(f, SLUICE_METRICS_JSON, buf, sizeof buf);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"concurrency_limit\":4,\"limited\":0"));
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_adaptive_settles_near_capacity", test_adaptive_settles_near_capacity},
    {"test_adaptive_over_limit_waits_then_equeuefull", test_adaptive_over_limit_waits_then_equeuefull},
    {"test_adaptive_grows_back_when_latency_recovers", test_adaptive_grows_back_when_latency_recovers},
    {"test_adaptive_bounded_by_min_and_max", test_adaptive_bounded_by_min_and_max},
    {"test_adaptive_coalesced_follower_takes_no_slot", test_adaptive_coalesced_follower_takes_no_slot},
    {"test_adaptive_composes_with_retries_and_breaker", test_adaptive_composes_with_retries_and_breaker},
    {"test_adaptive_negative_min_is_einval", test_adaptive_negative_min_is_einval},
    {"test_adaptive_limit_exported", test_adaptive_limit_exported},
    CU_TEST_INFO_NULL,
};

void suite_adaptive(void);
void suite_adaptive(void)
{
    tu_add_suite("adaptive", tests);
}
