/* Metrics: the histogram's accuracy, counters against the traffic that made
 * them, hooks per attempt, pool events against the pool's stats, pool
 * health, and both exports (promtool for Prometheus, a strict parser for
 * JSON), also while many threads record. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "metrics.h"
#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */


static sluice_factory *new_factory(sluice_factory_opts *fo)
{
    sluice_error err;
    sluice_factory *f = sluice_factory_new(fo, &err);

    if (!f)
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

/* The whole export in a fresh buffer (caller frees), sized by a first
 * call; NULL on failure.  *len gets the length. */
static char *export(sluice_factory *f, int format, size_t *len)
{
    size_t need = sluice_factory_metrics(f, format, NULL, 0), got;
    char *buf;

    for (;;) {
        if (need == 0 || !(buf = malloc(need + 1)))
            return NULL;
        got = sluice_factory_metrics(f, format, buf, need + 1);
        if (got <= need)
            break;
        free(buf);   /* counters grew between the calls */
        need = got;
    }
    if (len)
        *len = got;
    return buf;
}

static void tune_no_coalesce(sluice_client_opts *o)
{
    o->disable_coalescing = 1;
}

static int contains(const char *text, const char *needle)
{
    return text && strstr(text, needle) != NULL;
}

/* Uniform in [0, 1) from a fixed-seed xorshift, so runs are repeatable. */
static double unit_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* ------------------------------------------------------------------------ */
/* Histogram                                                                */
/* ------------------------------------------------------------------------ */

static void test_hist_buckets_cover_range_within_one_percent(void)
{
    double v;
    int b, prev = -1, bad = 0;

    /* Every value from 1 us to 100 s is reported within 0.8%. */
    for (v = 1000; v <= 100e9; v *= 1.0037) {
        int64_t ns = (int64_t)v, mid = sl_hist_mid(sl_hist_bucket(ns));
        if (fabs((double)(mid - ns)) / (double)ns > 0.008)
            bad++;
        if (sl_hist_bucket(ns) < prev)
            bad++;
        prev = sl_hist_bucket(ns);
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* Each bucket's midpoint lies in that bucket, so readings are stable. */
    for (b = 0; b < SL_HIST_BUCKETS - 1; b++)
        if (sl_hist_bucket(sl_hist_mid(b)) != b)
            bad++;
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(sl_hist_bucket(-5), 0);
    CU_ASSERT_EQUAL(sl_hist_bucket(INT64_MAX), SL_HIST_BUCKETS - 1);
}

/* Records n values and checks p50..p999 against the exact sorted
 * quantiles (the ceil(q*n)-th smallest value). */
static void check_quantiles(int64_t *vals, size_t n)
{
    static const double q[] = {0.5, 0.9, 0.99, 0.999};
    sl_hist *h = calloc(1, sizeof *h);
    int64_t got[4];
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    for (i = 0; i < n; i++)
        sl_hist_record(h, NULL, vals[i]);
    qsort(vals, n, sizeof *vals, cmp_i64);
    sl_hist_quantiles(h, q, got, 4);
    for (i = 0; i < 4; i++) {
        int64_t exact = vals[(size_t)ceil(q[i] * (double)n) - 1];
        double rel = fabs((double)(got[i] - exact)) / (double)exact;
        if (rel > 0.01)
            fprintf(stderr, "\n  q=%g exact=%lld got=%lld (%.3f%%)\n", q[i], (long long)exact,
                    (long long)got[i], rel * 100);
        CU_ASSERT(rel <= 0.01);
    }
    CU_ASSERT_EQUAL(sl_hist_count(h), n);
    free(h);
}

static void test_hist_quantiles_uniform(void)
{
    size_t n = 200000, i;
    int64_t *v = malloc(n * sizeof *v);
    uint64_t seed = 0x9E3779B97F4A7C15ull;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    for (i = 0; i < n; i++)   /* 1 us .. 100 ms */
        v[i] = 1000 + (int64_t)(unit_random(&seed) * 99999000.0);
    check_quantiles(v, n);
    free(v);
}

static void test_hist_quantiles_exponential(void)
{
    size_t n = 200000, i;
    int64_t *v = malloc(n * sizeof *v);
    uint64_t seed = 12345;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    for (i = 0; i < n; i++)   /* mean 2 ms above a 50 us floor: a long tail */
        v[i] = 50000 + (int64_t)(-log(1.0 - unit_random(&seed)) * 2e6);
    check_quantiles(v, n);
    free(v);
}

static void test_hist_quantiles_constant(void)
{
    size_t n = 1000, i;
    int64_t v[1000];
    sl_hist *h = calloc(1, sizeof *h);
    double q = 1.0;
    int64_t top;

    for (i = 0; i < n; i++)
        v[i] = 1234567;
    check_quantiles(v, n);
    /* The maximum caps every reading: p100 is exact. */
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    for (i = 0; i < n; i++)
        sl_hist_record(h, NULL, 1234567);
    sl_hist_quantiles(h, &q, &top, 1);
    CU_ASSERT_EQUAL(top, 1234567);
    free(h);
}

static void test_hist_empty_and_extremes(void)
{
    static const double q[] = {0.5, 1.0};
    static const int64_t le[] = {1000000, 1000000000};
    sl_hist *h = calloc(1, sizeof *h);
    int64_t got[2];
    uint64_t cum[2];

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    sl_hist_quantiles(h, q, got, 2);
    CU_ASSERT_EQUAL(got[0], 0);
    CU_ASSERT_EQUAL(sl_hist_cumulative(h, le, 2, cum), 0);
    sl_hist_record(h, NULL, -7);                  /* counts as 0 */
    sl_hist_record(h, NULL, 500 * 1000000000LL);  /* past the top bucket */
    sl_hist_quantiles(h, q, got, 2);
    CU_ASSERT(got[0] < 100);
    CU_ASSERT_EQUAL(got[1], 500 * 1000000000LL);  /* the max, exact */
    CU_ASSERT_EQUAL(sl_hist_cumulative(h, le, 2, cum), 2);
    CU_ASSERT_EQUAL(cum[0], 1);
    CU_ASSERT_EQUAL(cum[1], 1);
    free(h);
}

/* Calls every 100 ms of synthetic time, each one exchange holding its
 * connection 50 ms: the window holds the last ten seconds of them. */
static void test_metrics_window_counts_recent_seconds(void)
{
    const int64_t s = 1000000000LL;
    sl_metrics *m = calloc(1, sizeof *m);
    sl_metrics_totals *t = calloc(1, sizeof *t);
    sl_call_record r = {0, 200, 1000000, 0, 100, 200, 1, 50000000};
    uint64_t n = 0, hold = 0;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    sl_metrics_recent(m, 100 * s, &n, &hold);
    CU_ASSERT_EQUAL(n, 0);
    for (i = 0; i < 300; i++) {   /* 100.0 s .. 129.9 s */
        r.end_ns = 100 * s + i * (s / 10);
        sl_metrics_enter(m);
        sl_metrics_leave(m, t, &r);
    }
    /* At 129.95 s the window is seconds 120..129: 100 calls. */
    sl_metrics_recent(m, 129 * s + s / 2, &n, &hold);
    CU_ASSERT_EQUAL(n, 100);
    CU_ASSERT_EQUAL(hold, 100 * 50000000ULL);
    /* Later seconds drop the oldest; after ten idle seconds nothing. */
    n = hold = 0;
    sl_metrics_recent(m, 134 * s, &n, &hold);
    CU_ASSERT_EQUAL(n, 50);
    n = hold = 0;
    sl_metrics_recent(m, 140 * s, &n, &hold);
    CU_ASSERT_EQUAL(n, 0);
    /* The ring wraps: traffic 40 s later reads alone. */
    for (i = 0; i < 5; i++) {
        r.end_ns = 170 * s + i;
        sl_metrics_enter(m);
        sl_metrics_leave(m, t, &r);
    }
    sl_metrics_recent(m, 171 * s, &n, &hold);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_EQUAL(m->bytes_sent, 305 * 100);
    CU_ASSERT_EQUAL(m->in_flight, 0);
    CU_ASSERT_EQUAL(m->peak_in_flight, 1);
    CU_ASSERT_EQUAL(sl_hist_count(&t->latency), 305);
    free(m);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Counters against the traffic                                             */
/* ------------------------------------------------------------------------ */

static void tune_stall(sluice_client_opts *o)
{
    o->read_timeout_ms = 300;
}

static void test_metrics_status_classes_and_error_codes(void)
{
    static const char *const paths[] = {"/status/101", "/json", "/status/204", "/status/302",
                                        "/status/404", "/status/500"};
    static const int statuses[] = {101, 200, 204, 302, 404, 500};
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "classes", tu_http_base(), NULL);
    sluice_client *slow = tu_client(&f, "stall", tu_http_base(), tune_stall);
    sluice_client *refused;
    struct sluice_client_stats cs;
    struct sluice_factory_stats fs;
    char base[64], *text;
    sluice_error err;
    unsigned k, n = 3;   /* unsigned: compared with the uint64_t counters */
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(slow);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", tu_free_port());
    refused = tu_client(&f, "refused", base, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(refused);
    for (k = 0; k < n; k++)
        for (i = 0; i < 6; i++)
            CU_ASSERT_EQUAL(tu_get_status(c, paths[i], &err), statuses[i]);
    for (k = 0; k < 2; k++) {
        CU_ASSERT_EQUAL(tu_get_status(refused, "/json", &err), SLUICE_ECONNECT);
        CU_ASSERT_EQUAL(tu_get_status(slow, "/stall", &err), SLUICE_ETIMEDOUT);
    }
    CU_ASSERT_EQUAL(sluice_client_stats(c, &cs), 0);
    CU_ASSERT_EQUAL(cs.requests, 6 * n);
    CU_ASSERT_EQUAL(cs.errors, 0);
    CU_ASSERT_EQUAL(cs.status_class[1], n);
    CU_ASSERT_EQUAL(cs.status_class[2], 2 * n);
    CU_ASSERT_EQUAL(cs.status_class[3], n);
    CU_ASSERT_EQUAL(cs.status_class[4], n);
    CU_ASSERT_EQUAL(cs.status_class[5], n);
    CU_ASSERT_EQUAL(cs.latency.count, 6 * n);
    CU_ASSERT(cs.latency.p50_us > 0 && cs.latency.p50_us <= cs.latency.p99_us);
    CU_ASSERT(cs.latency.p99_us <= cs.latency.max_us);
    CU_ASSERT_EQUAL(cs.in_flight, 0);
    CU_ASSERT_EQUAL(cs.peak_in_flight, 1);
    CU_ASSERT_EQUAL(sluice_client_stats(refused, &cs), 0);
    CU_ASSERT_EQUAL(cs.errors, 2);
    CU_ASSERT_EQUAL(cs.errors_by_code[-SLUICE_ECONNECT], 2);
    CU_ASSERT_EQUAL(cs.bytes_sent, 0);
    CU_ASSERT_EQUAL(sluice_client_stats(slow, &cs), 0);
    CU_ASSERT_EQUAL(cs.errors_by_code[-SLUICE_ETIMEDOUT], 2);
    CU_ASSERT(cs.latency.p50_us >= 250000);   /* the read timeout */
    sluice_factory_stats(f, &fs);
    CU_ASSERT_EQUAL(fs.clients, 3);
    CU_ASSERT_EQUAL(fs.requests, 6 * n + 4);
    CU_ASSERT_EQUAL(fs.errors, 4);
    CU_ASSERT_EQUAL(fs.errors_by_code[-SLUICE_ECONNECT], 2);
    CU_ASSERT_EQUAL(fs.errors_by_code[-SLUICE_ETIMEDOUT], 2);
    CU_ASSERT_EQUAL(fs.status_class[2], 2 * n);
    CU_ASSERT_EQUAL(fs.latency.count, 6 * n + 4);
    CU_ASSERT_EQUAL(fs.in_flight, 0);
    text = export(f, SLUICE_METRICS_PROMETHEUS, NULL);
    CU_ASSERT(contains(text, "sluice_requests_total{service=\"classes\",class=\"1xx\"} 3\n"));
    CU_ASSERT(contains(text, "sluice_requests_total{service=\"classes\",class=\"5xx\"} 3\n"));
    CU_ASSERT(contains(text, "sluice_errors_total{service=\"refused\",code=\"SLUICE_ECONNECT\"} 2\n"));
    CU_ASSERT(contains(text, "sluice_errors_total{service=\"stall\",code=\"SLUICE_ETIMEDOUT\"} 2\n"));
    CU_ASSERT(contains(text, "sluice_request_duration_seconds_count{service=\"classes\"} 18\n"));
    free(text);
    sluice_factory_free(f);
}

static void post(sluice_client *c, size_t n, sluice_error *err)
{
    sluice_request req = {0};
    sluice_response *r = NULL;
    char *body = malloc(n);
    size_t len = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memset(body, 'x', n);
    req.method = "POST";
    req.path = "/echo?raw=1";
    req.body = body;
    req.body_len = n;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, err), 0);
    sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, n);
    sluice_response_free(r);
    free(body);
}

static void test_metrics_bytes_sent_and_received(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "bytes", tu_http_base(), NULL);
    struct sluice_client_stats a, b;
    struct sluice_factory_stats fs;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    post(c, 10000, &err);
    sluice_client_stats(c, &a);
    CU_ASSERT(a.bytes_sent >= 10000 && a.bytes_sent < 10000 + 512);
    CU_ASSERT(a.bytes_received >= 10000 && a.bytes_received < 10000 + 512);
    /* Same head sizes (five-digit lengths), so the difference is exact. */
    post(c, 20000, &err);
    sluice_client_stats(c, &b);
    CU_ASSERT_EQUAL(b.bytes_sent - a.bytes_sent, a.bytes_sent + 10000);
    CU_ASSERT_EQUAL(b.bytes_received - a.bytes_received, a.bytes_received + 10000);
    sluice_factory_stats(f, &fs);
    CU_ASSERT_EQUAL(fs.bytes_sent, b.bytes_sent);
    CU_ASSERT_EQUAL(fs.bytes_received, b.bytes_received);
    sluice_factory_free(f);
}

/* ------------------------------------------------------------------------ */
/* Hooks                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct hook_log {
    sluice_factory *f;
    pthread_t caller;          /* 0 checks no thread */
    int check_thread;
    int start, end, error;     /* atomics */
    int coalesced_end, coalesced_error, attempt0;
    int wrong_thread;
    unsigned attempts_started; /* bitmask of info->attempt in start hooks */
    int last_error;
    int pool[4];
    int closed[SLUICE_CLOSE_REASONS_];
    int reenter;               /* call back into the library from the hook */
} hook_log;

static void note(hook_log *h, const sluice_request_info *info)
{
    struct sluice_factory_stats st;

    if (h->check_thread && !pthread_equal(pthread_self(), h->caller))
        __atomic_add_fetch(&h->wrong_thread, 1, __ATOMIC_RELAXED);
    if (info->coalesced)
        __atomic_add_fetch(info->error ? &h->coalesced_error : &h->coalesced_end, 1,
                           __ATOMIC_RELAXED);
    if (info->attempt == 0)
        __atomic_add_fetch(&h->attempt0, 1, __ATOMIC_RELAXED);
    /* A hook runs with no library lock held: calling back must not hang. */
    if (h->reenter)
        sluice_factory_stats(h->f, &st);
}

static void on_start(const sluice_request_info *info, void *ud)
{
    hook_log *h = ud;

    __atomic_add_fetch(&h->start, 1, __ATOMIC_RELAXED);
    if (info->attempt > 0 && info->attempt < 32)
        __atomic_fetch_or(&h->attempts_started, 1u << info->attempt, __ATOMIC_RELAXED);
    note(h, info);
}

static void on_end(const sluice_request_info *info, void *ud)
{
    hook_log *h = ud;

    __atomic_add_fetch(&h->end, 1, __ATOMIC_RELAXED);
    note(h, info);
}

static void on_error(const sluice_request_info *info, void *ud)
{
    hook_log *h = ud;

    __atomic_add_fetch(&h->error, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->last_error, info->error, __ATOMIC_RELAXED);
    note(h, info);
}

static void on_pool(const sluice_pool_event *ev, void *ud)
{
    hook_log *h = ud;

    __atomic_add_fetch(&h->pool[ev->type], 1, __ATOMIC_RELAXED);
    if (ev->type == SLUICE_POOL_CLOSE && ev->reason >= 0 && ev->reason < SLUICE_CLOSE_REASONS_)
        __atomic_add_fetch(&h->closed[ev->reason], 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&h->reenter, __ATOMIC_RELAXED)) {
        struct sluice_factory_stats st;
        sluice_factory_stats(h->f, &st);
    }
}

static sluice_factory *hooked_factory(hook_log *h)
{
    sluice_factory_opts fo;

    memset(h, 0, sizeof *h);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.on_request_start = on_start;
    fo.on_request_end = on_end;
    fo.on_request_error = on_error;
    fo.on_pool_event = on_pool;
    fo.hook_ud = h;
    h->f = new_factory(&fo);
    h->caller = pthread_self();
    h->check_thread = 1;
    h->reenter = 1;
    return h->f;
}

static void tune_three_attempts(sluice_client_opts *o)
{
    o->retry.max_retries = 2;
    o->retry.backoff_factor_ms = 1;
}

static void test_hooks_once_per_attempt(void)
{
    hook_log h;
    sluice_factory *f = hooked_factory(&h);
    sluice_client *c, *refused;
    struct sluice_client_stats cs;
    sluice_response *r = NULL;
    sluice_error err;
    char path[64], base[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = tu_client(&f, "flaky", tu_http_base(), tune_three_attempts);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", tu_free_port());
    refused = tu_client(&f, "refused", base, tune_three_attempts);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(refused);
    /* Two 503s, then 200: three attempts, each answered. */
    snprintf(path, sizeof path, "/flaky/hooks%d?fail=2", (int)getpid());
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 3);
    sluice_response_free(r);
    CU_ASSERT_EQUAL(h.start, 3);
    CU_ASSERT_EQUAL(h.end, 3);
    CU_ASSERT_EQUAL(h.error, 0);
    CU_ASSERT_EQUAL(h.attempts_started, (1u << 1) | (1u << 2) | (1u << 3));
    sluice_client_stats(c, &cs);
    CU_ASSERT_EQUAL(cs.retries, 2);
    CU_ASSERT_EQUAL(cs.requests, 1);
    CU_ASSERT_EQUAL(cs.status_class[2], 1);
    /* Three refused connects: three starts, three errors, no end. */
    CU_ASSERT_EQUAL(tu_get_status(refused, "/json", &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(h.start, 6);
    CU_ASSERT_EQUAL(h.end, 3);
    CU_ASSERT_EQUAL(h.error, 3);
    CU_ASSERT_EQUAL(h.last_error, SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(h.wrong_thread, 0);
    CU_ASSERT_EQUAL(h.attempt0, 0);
    CU_ASSERT_EQUAL(h.coalesced_end + h.coalesced_error, 0);
    sluice_client_stats(refused, &cs);
    CU_ASSERT_EQUAL(cs.retries, 2);
    CU_ASSERT_EQUAL(cs.errors_by_code[-SLUICE_ECONNECT], 1);
    h.reenter = 0;
    sluice_factory_free(f);
}

typedef struct follower_arg {
    sluice_client *c;
    const char *path;
    pthread_barrier_t *go;
    int status;
} follower_arg;

static void *coalesced_get(void *p)
{
    follower_arg *a = p;
    sluice_error err;

    pthread_barrier_wait(a->go);
    a->status = tu_get_status(a->c, a->path, &err);
    return NULL;
}

static void test_hooks_coalesced_followers_get_one_end(void)
{
    enum { N = 8 };
    hook_log h;
    sluice_factory *f = hooked_factory(&h);
    sluice_client *c;
    follower_arg args[N];
    pthread_t th[N];
    pthread_barrier_t go;
    char path[64], hits[64];
    long upstream;
    int i, ok = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    h.check_thread = 0;   /* hooks run on the callers' own threads here */
    c = tu_client(&f, "coalesce", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/hk%d?delay=400", (int)getpid());
    snprintf(hits, sizeof hits, "/count/hk%d", (int)getpid());
    pthread_barrier_init(&go, NULL, N);
    for (i = 0; i < N; i++) {
        args[i] = (follower_arg){c, path, &go, 0};
        pthread_create(&th[i], NULL, coalesced_get, &args[i]);
    }
    for (i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].status == 200;
    }
    pthread_barrier_destroy(&go);
    upstream = tu_hits(tu_http_addr(), hits);
    CU_ASSERT_EQUAL(ok, N);
    CU_ASSERT(upstream >= 1 && upstream < N);
    /* One start and one end per flight; one end per follower. */
    CU_ASSERT_EQUAL(h.start, upstream);
    CU_ASSERT_EQUAL(h.end, N);
    CU_ASSERT_EQUAL(h.error, 0);
    CU_ASSERT_EQUAL(h.coalesced_end, N - upstream);
    CU_ASSERT_EQUAL(h.attempt0, N - upstream);
    h.reenter = 0;
    sluice_factory_free(f);
}

/* A follower that gives up gets one error hook (coalesced, ETIMEDOUT);
 * the leader's flight goes on and ends with its own hooks. */
static void test_hooks_follower_timeout_gets_error(void)
{
    hook_log h;
    sluice_factory *f = hooked_factory(&h);
    sluice_client *c;
    sluice_request req = {0};
    sluice_response *r = NULL;
    follower_arg a;
    pthread_t th;
    pthread_barrier_t go;
    char path[64];
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    h.check_thread = 0;
    c = tu_client(&f, "slow-leader", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/to%d?delay=1200", (int)getpid());
    pthread_barrier_init(&go, NULL, 2);
    a = (follower_arg){c, path, &go, 0};
    pthread_create(&th, NULL, coalesced_get, &a);
    pthread_barrier_wait(&go);
    /* Once the leader's attempt is under way, the same request with a
     * shorter deadline follows its flight and gives up. */
    while (__atomic_load_n(&h.start, __ATOMIC_ACQUIRE) == 0)
        usleep(1000);
    req.path = path;
    req.timeout_ms = 300;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ETIMEDOUT);
    CU_ASSERT_EQUAL(h.coalesced_error, 1);
    CU_ASSERT_EQUAL(h.last_error, SLUICE_ETIMEDOUT);
    CU_ASSERT_EQUAL(h.attempt0, 1);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&go);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT_EQUAL(h.start, 1);
    CU_ASSERT_EQUAL(h.end, 1);
    CU_ASSERT_EQUAL(h.error, 1);
    h.reenter = 0;
    sluice_factory_free(f);
}

/* Whatever allocation fails, every start hook gets its one end or error,
 * and every call is counted once. */
static void test_hooks_balanced_under_allocation_failures(void)
{
    hook_log h;
    sluice_factory *f = hooked_factory(&h);
    sluice_client *c;
    struct sluice_client_stats cs;
    sluice_error err;
    long n, calls = 0;
    int rc, unbalanced = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    h.reenter = 0;   /* the hook's own stats call would meet the failures */
    c = tu_client(&f, "oom", tu_http_base(), tune_no_coalesce);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (n = 1; n < 500; n++) {
        tu_alloc_install(n, 0);
        rc = tu_get_status(c, "/json", &err);
        tu_alloc_uninstall();
        calls++;
        unbalanced += h.start != h.end + h.error;
        if (rc == 200 && tu_alloc_count() < n)
            break;   /* nothing failed: every allocation has had its turn */
    }
    CU_ASSERT(n < 500);
    CU_ASSERT_EQUAL(unbalanced, 0);
    sluice_client_stats(c, &cs);
    CU_ASSERT_EQUAL(cs.requests, (uint64_t)calls);
    CU_ASSERT(cs.errors_by_code[-SLUICE_ENOMEM] >= 1);
    CU_ASSERT_EQUAL(cs.requests, cs.errors + cs.status_class[2]);
    CU_ASSERT_EQUAL(cs.in_flight, 0);
    sluice_factory_free(f);
}

/* ------------------------------------------------------------------------ */
/* Pool events                                                              */
/* ------------------------------------------------------------------------ */

typedef struct get_arg {
    sluice_client *c;
    const char *path;
    int n;
    int ok;
    pthread_barrier_t *go;    /* NULL: start at once */
} get_arg;

static void *get_loop(void *p)
{
    get_arg *a = p;
    sluice_error err;
    int i;

    if (a->go)
        pthread_barrier_wait(a->go);
    for (i = 0; i < a->n; i++)
        a->ok += tu_get_status(a->c, a->path, &err) == 200;
    return NULL;
}

static void test_pool_events_match_pool_stats(void)
{
    hook_log h;
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_client *c;
    struct sluice_factory_stats st;
    get_arg args[4];
    pthread_t th[4];
    pthread_barrier_t go;
    sluice_error err;
    int i, open_before;

    memset(&h, 0, sizeof h);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_idle_per_host = 1;
    fo.on_pool_event = on_pool;
    fo.hook_ud = &h;
    f = h.f = new_factory(&fo);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    h.reenter = 1;
    c = tu_client(&f, "events", tu_http_base(), tune_no_coalesce);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(c, "/close", &err), 200);   /* closed: BROKEN */
    /* Four at once, then back: past max_idle_per_host they close (OVERFLOW). */
    pthread_barrier_init(&go, NULL, 4);
    for (i = 0; i < 4; i++) {
        args[i] = (get_arg){c, "/delay/300", 1, 0, &go};
        pthread_create(&th[i], NULL, get_loop, &args[i]);
    }
    for (i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    sluice_factory_stats(f, &st);
    CU_ASSERT(st.pool.created >= 2);
    CU_ASSERT(st.pool.closed[SLUICE_CLOSE_BROKEN] >= 1);
    CU_ASSERT(st.pool.closed[SLUICE_CLOSE_OVERFLOW] >= 1);
    CU_ASSERT_EQUAL(st.health.overflow, st.pool.closed[SLUICE_CLOSE_OVERFLOW]);
    CU_ASSERT_EQUAL((uint64_t)h.pool[SLUICE_POOL_CONNECT], st.pool.created);
    CU_ASSERT_EQUAL((uint64_t)h.pool[SLUICE_POOL_CHECKOUT], st.pool.created + st.pool.reused);
    CU_ASSERT_EQUAL(h.pool[SLUICE_POOL_CHECKIN], h.pool[SLUICE_POOL_CHECKOUT]);
    for (i = 0; i < SLUICE_CLOSE_REASONS_; i++)
        CU_ASSERT_EQUAL((uint64_t)h.closed[i], st.pool.closed[i]);
    open_before = st.pool.open;
    CU_ASSERT(open_before >= 1);
    __atomic_store_n(&h.reenter, 0, __ATOMIC_RELAXED);
    sluice_factory_free(f);
    /* Freeing closes what was idle, each with its event. */
    CU_ASSERT_EQUAL(h.closed[SLUICE_CLOSE_SHUTDOWN], open_before);
}

/* ------------------------------------------------------------------------ */
/* Pool health                                                              */
/* ------------------------------------------------------------------------ */

static void test_pool_health_littles_law(void)
{
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_client *c;
    struct sluice_factory_stats st;
    get_arg args[4];
    pthread_t th[4];
    pthread_barrier_t go;
    double busy;
    int i;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_connections = 10;
    f = new_factory(&fo);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = tu_client(&f, "health", tu_http_base(), tune_no_coalesce);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.health.recommended_max_connections, 0);   /* no traffic yet */
    CU_ASSERT_EQUAL(st.health.max_connections, 10);
    /* Four callers back to back on a 100 ms upstream keep four busy. */
    pthread_barrier_init(&go, NULL, 4);
    for (i = 0; i < 4; i++) {
        args[i] = (get_arg){c, "/delay/100", 10, 0, &go};
        pthread_create(&th[i], NULL, get_loop, &args[i]);
    }
    for (i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    sluice_factory_stats(f, &st);
    busy = st.health.arrival_rate * st.health.mean_latency_us / 1e6;
    CU_ASSERT(st.health.mean_latency_us >= 100000 && st.health.mean_latency_us < 400000);
    CU_ASSERT(st.health.arrival_rate > 0);
    CU_ASSERT(busy > 2.5 && busy <= 4.05);
    CU_ASSERT_EQUAL(st.health.recommended_max_connections, (int)ceil(1.25 * busy - 1e-9));
    CU_ASSERT(st.health.utilization == 0);   /* nothing in use now */
    CU_ASSERT_EQUAL(st.health.waiting, 0);
    CU_ASSERT(st.peak_in_flight >= 2 && st.peak_in_flight <= 4);
    sluice_factory_free(f);

    /* No limit: utilization has no meaning and says so. */
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_connections = SLUICE_OFF;
    f = new_factory(&fo);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sluice_factory_stats(f, &st);
    CU_ASSERT(st.health.utilization == -1);
    CU_ASSERT_EQUAL(st.health.max_connections, 0);
    sluice_factory_free(f);
}

/* ------------------------------------------------------------------------ */
/* Exports                                                                  */
/* ------------------------------------------------------------------------ */

/* Runs `promtool check metrics` on text; its exit status, or -1. */
static int promtool_check(const char *text, size_t len)
{
    FILE *p;
    int st;

    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        CU_FAIL("promtool is not installed (Debian package prometheus; tools/install-deps.sh)");
        return -1;
    }
    p = popen("promtool check metrics", "w");
    if (!p)
        return -1;
    fwrite(text, 1, len, p);
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void tune_breaker(sluice_client_opts *o)
{
    static const char *const fallbacks[] = {"http://127.0.0.1:1/v2", NULL};

    o->breaker.disabled = 0;
    o->fallback_urls = fallbacks;
    o->api_version = "v\"2\"";
}

static void tune_rate_limited(sluice_client_opts *o)
{
    o->rate_limit.rate = 1000;
}

/* A factory with traffic of every kind and hostile names. */
static sluice_factory *busy_factory(void)
{
    sluice_factory *f = NULL;
    sluice_client *a = tu_client(&f, "svc-a", tu_http_base(), tune_rate_limited);
    sluice_client *b = tu_client(&f, "we\"ird\\svc\nline\x01\xff\xc3\xa9", tu_http_base(), NULL);
    sluice_client *br = tu_client(&f, "svc-breaker", tu_http_base(), tune_breaker);
    sluice_error err;
    int i;

    if (!a || !b || !br)
        return f;
    for (i = 0; i < 5; i++) {
        tu_get_status(a, "/json", &err);
        tu_get_status(b, "/status/404", &err);
        tu_get_status(br, "/status/503", &err);
    }
    return f;
}

static void test_metrics_prometheus_passes_promtool(void)
{
    sluice_factory *f = busy_factory();
    size_t len = 0;
    char *text;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    text = export(f, SLUICE_METRICS_PROMETHEUS, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_EQUAL(strlen(text), len);
    CU_ASSERT_EQUAL(promtool_check(text, len), 0);
    CU_ASSERT(contains(text, "# TYPE sluice_request_duration_seconds histogram\n"));
    CU_ASSERT(contains(text, "sluice_request_duration_seconds_bucket{service=\"svc-a\",le=\"+Inf\"} 5\n"));
    CU_ASSERT(contains(text, "service=\"we\\\"ird\\\\svc\\nline\xEF\xBF\xBD\xEF\xBF\xBD\xc3\xa9\""));
    CU_ASSERT(contains(text, "sluice_breaker_state{service=\"svc-breaker\",api_version=\"v\\\"2\\\"\","));
    CU_ASSERT(contains(text, "sluice_pool_created_total{origin=\"http://127.0.0.1:"));
    CU_ASSERT(contains(text, "sluice_pool_recommended_max_connections "));
    CU_ASSERT(contains(text, "sluice_limiter_allowed_total 5\n"));
    CU_ASSERT(contains(text, "sluice_limiter_decisions_total 5\n"));
    CU_ASSERT(contains(text, "sluice_coalesce_saved_total "));
    free(text);
    sluice_factory_free(f);
    /* An empty factory is a valid exposition too. */
    f = new_factory(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    text = export(f, SLUICE_METRICS_PROMETHEUS, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_EQUAL(promtool_check(text, len), 0);
    free(text);
    sluice_factory_free(f);
}

/* A strict JSON parser (RFC 8259): 1 if the whole text is one value. */
typedef struct jp {
    const unsigned char *p, *end;
    int depth;
} jp;

static int j_value(jp *j);

static void j_ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int j_lit(jp *j, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int j_digits(jp *j)
{
    const unsigned char *s = j->p;

    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static int j_number(jp *j)
{
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (!(j->p < j->end && *j->p >= '1' && *j->p <= '9') || !j_digits(j))
        return 0;
    if (j->p < j->end && *j->p == '.' && (j->p++, !j_digits(j)))
        return 0;
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!j_digits(j))
            return 0;
    }
    return 1;
}

/* A well-formed UTF-8 sequence at p (its length), or 0. */
static int j_utf8(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = *p, lo = 0x80, hi = 0xBF;
    int n, i;

    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (end - p < n)
        return 0;
    for (i = 1; i < n; i++, lo = 0x80, hi = 0xBF)
        if (p[i] < lo || p[i] > hi)
            return 0;
    return n;
}

static int j_string(jp *j)
{
    int i, n;

    if (j->p >= j->end || *j->p++ != '"')
        return 0;
    while (j->p < j->end && *j->p != '"') {
        if (*j->p < 0x20)
            return 0;
        if (*j->p == '\\') {
            if (++j->p >= j->end)
                return 0;
            if (*j->p == 'u') {
                for (i = 1; i <= 4; i++)
                    if (j->p + i >= j->end || !strchr("0123456789abcdefABCDEF", j->p[i]))
                        return 0;
                j->p += 5;
            } else if (*j->p && strchr("\"\\/bfnrt", *j->p)) {
                j->p++;
            } else {
                return 0;
            }
        } else if (*j->p >= 0x80) {
            if (!(n = j_utf8(j->p, j->end)))
                return 0;
            j->p += n;
        } else {
            j->p++;
        }
    }
    return j->p < j->end && *j->p++ == '"';
}

/* Members or elements up to `close`; objects want "key": before each. */
static int j_items(jp *j, int object, unsigned char close)
{
    j_ws(j);
    if (j->p < j->end && *j->p == close)
        return j->p++, 1;
    for (;;) {
        j_ws(j);
        if (object) {
            if (!j_string(j))
                return 0;
            j_ws(j);
            if (j->p >= j->end || *j->p++ != ':')
                return 0;
        }
        if (!j_value(j))
            return 0;
        j_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return j->p < j->end && *j->p++ == close;
    }
}

static int j_value(jp *j)
{
    int ok;

    j_ws(j);
    if (j->p >= j->end || ++j->depth > 64)
        return 0;
    if (*j->p == '{' || *j->p == '[') {
        int object = *j->p++ == '{';
        ok = j_items(j, object, object ? '}' : ']');
    } else if (*j->p == '"') {
        ok = j_string(j);
    } else if (*j->p == 't' || *j->p == 'f' || *j->p == 'n') {
        ok = j_lit(j, "true") || j_lit(j, "false") || j_lit(j, "null");
    } else {
        ok = j_number(j);
    }
    j->depth--;
    return ok;
}

static int json_valid(const char *text, size_t len)
{
    jp j = {(const unsigned char *)text, (const unsigned char *)text + len, 0};

    if (!j_value(&j))
        return 0;
    j_ws(&j);
    return j.p == j.end;
}

static void test_metrics_json_validator_is_strict(void)
{
    static const char *const bad[] = {"{\"a\":1,}", "[1 2]", "{\"a\" 1}", "01", "1.", "\"\x01\"",
                                      "\"\\x\"", "\"\xff\"", "{\"a\":nul}", "[1]x", "-", ""};
    size_t i;

    static const char good[] = "{\"a\":[1,-2.5e3,true,null,\"\\u00e9\xc3\xa9\"],\"b\":{}}";

    CU_ASSERT(json_valid(good, strlen(good)));
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT(!json_valid(bad[i], strlen(bad[i])));
}

static void test_metrics_json_parses(void)
{
    sluice_factory *f = busy_factory();
    size_t len = 0;
    char *text;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    text = export(f, SLUICE_METRICS_JSON, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT(json_valid(text, len));
    CU_ASSERT(contains(text, "\"service\":\"we\\\"ird\\\\svc\\nline\\u0001\xEF\xBF\xBD\xc3\xa9\""));
    CU_ASSERT(contains(text, "\"factory\":{\"clients\":3,\"requests\":15,"));
    CU_ASSERT(contains(text, "\"state\":\"closed\""));
    CU_ASSERT(contains(text, "\"recommended_max_connections\":"));
    CU_ASSERT(contains(text, "\"decisions_per_round_trip\":"));
    CU_ASSERT(contains(text, "\"+Inf\":5}"));
    free(text);
    sluice_factory_free(f);
}

static void test_metrics_export_bounds_and_no_allocation(void)
{
    sluice_factory *f = busy_factory();
    struct sluice_factory_stats st;
    char *full, small[64];
    size_t len = 0, n;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    full = export(f, SLUICE_METRICS_JSON, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(full);
    /* A short buffer: the length needed, a NUL-terminated prefix.  (The
     * recent-load figures move with the clock, so lengths may differ by a
     * few digits between calls.) */
    memset(small, 'Z', sizeof small);
    n = sluice_factory_metrics(f, SLUICE_METRICS_JSON, small, sizeof small);
    CU_ASSERT(n + 40 > len && n < len + 40);
    CU_ASSERT_EQUAL(small[sizeof small - 1], '\0');
    CU_ASSERT(strncmp(small, full, sizeof small - 1) == 0);
    CU_ASSERT(sluice_factory_metrics(f, SLUICE_METRICS_JSON, small, 1) > 1000);
    CU_ASSERT_EQUAL(small[0], '\0');
    /* Exports and stats work with every allocation failing. */
    tu_alloc_install(1, 1);
    CU_ASSERT(sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, NULL, 0) > 1000);
    n = sluice_factory_metrics(f, SLUICE_METRICS_JSON, NULL, 0);
    CU_ASSERT(n + 40 > len && n < len + 40);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.requests, 15);
    CU_ASSERT_EQUAL(tu_alloc_count(), 0);
    tu_alloc_uninstall();
    /* Bad arguments. */
    CU_ASSERT_EQUAL(sluice_factory_metrics(NULL, SLUICE_METRICS_JSON, small, sizeof small), 0);
    CU_ASSERT_EQUAL(small[0], '\0');
    CU_ASSERT_EQUAL(sluice_factory_metrics(f, 7, small, sizeof small), 0);
    CU_ASSERT_EQUAL(sluice_client_stats(NULL, NULL), SLUICE_EINVAL);
    free(full);
    sluice_factory_free(f);
}

/* ------------------------------------------------------------------------ */
/* Concurrency                                                              */
/* ------------------------------------------------------------------------ */

typedef struct exporter {
    sluice_factory *f;
    int stop;        /* atomic */
    int rounds, bad;
} exporter;

static void *export_loop(void *p)
{
    exporter *e = p;
    size_t cap = 1 << 20, len;
    char *buf = malloc(cap);

    while (buf && !__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE)) {
        struct sluice_factory_stats st;
        len = sluice_factory_metrics(e->f, SLUICE_METRICS_JSON, buf, cap);
        e->bad += len >= cap || !json_valid(buf, len);
        sluice_factory_metrics(e->f, SLUICE_METRICS_PROMETHEUS, buf, cap);
        sluice_factory_stats(e->f, &st);
        e->rounds++;
    }
    free(buf);
    return NULL;
}

static void test_metrics_record_while_exporting(void)
{
    enum { THREADS = 16, EACH = 40 };
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "many", tu_http_base(), tune_no_coalesce);
    struct sluice_client_stats cs;
    get_arg args[THREADS];
    pthread_t th[THREADS], ex;
    exporter e;
    int i, ok = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memset(&e, 0, sizeof e);
    e.f = f;
    pthread_create(&ex, NULL, export_loop, &e);
    for (i = 0; i < THREADS; i++) {
        args[i] = (get_arg){c, "/json", EACH, 0, NULL};
        pthread_create(&th[i], NULL, get_loop, &args[i]);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].ok;
    }
    __atomic_store_n(&e.stop, 1, __ATOMIC_RELEASE);
    pthread_join(ex, NULL);
    CU_ASSERT_EQUAL(ok, THREADS * EACH);
    CU_ASSERT(e.rounds > 0);
    CU_ASSERT_EQUAL(e.bad, 0);
    sluice_client_stats(c, &cs);
    CU_ASSERT_EQUAL(cs.requests, THREADS * EACH);
    CU_ASSERT_EQUAL(cs.status_class[2], THREADS * EACH);
    CU_ASSERT_EQUAL(cs.latency.count, THREADS * EACH);
    CU_ASSERT_EQUAL(cs.in_flight, 0);
    CU_ASSERT(cs.peak_in_flight >= 1 && cs.peak_in_flight <= THREADS);
    sluice_factory_free(f);
}

/* Direct recording from many threads loses nothing. */
typedef struct rec_arg {
    sl_hist *h;
    int n;
} rec_arg;

static void *record_loop(void *p)
{
    rec_arg *a = p;
    int i;

    for (i = 0; i < a->n; i++)
        sl_hist_record(a->h, NULL, 1000 + i);
    return NULL;
}

static void test_hist_concurrent_recording_exact_count(void)
{
    enum { THREADS = 16, EACH = 20000 };
    sl_hist *h = calloc(1, sizeof *h);
    rec_arg a = {h, EACH};
    pthread_t th[THREADS];
    uint64_t want_sum = 0;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    for (i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, record_loop, &a);
    for (i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (i = 0; i < EACH; i++)
        want_sum += (uint64_t)(1000 + i) * THREADS;
    CU_ASSERT_EQUAL(sl_hist_count(h), THREADS * EACH);
    CU_ASSERT_EQUAL(h->sum_ns, want_sum);
    CU_ASSERT_EQUAL(h->max_ns, 1000 + EACH - 1);
    free(h);
}

static CU_TestInfo tests[] = {
    {"test_hist_buckets_cover_range_within_one_percent",
     test_hist_buckets_cover_range_within_one_percent},
    {"test_hist_quantiles_uniform", test_hist_quantiles_uniform},
    {"test_hist_quantiles_exponential", test_hist_quantiles_exponential},
    {"test_hist_quantiles_constant", test_hist_quantiles_constant},
    {"test_hist_empty_and_extremes", test_hist_empty_and_extremes},
    {"test_hist_concurrent_recording_exact_count", test_hist_concurrent_recording_exact_count},
    {"test_metrics_window_counts_recent_seconds", test_metrics_window_counts_recent_seconds},
    {"test_metrics_status_classes_and_error_codes", test_metrics_status_classes_and_error_codes},
    {"test_metrics_bytes_sent_and_received", test_metrics_bytes_sent_and_received},
    {"test_hooks_once_per_attempt", test_hooks_once_per_attempt},
    {"test_hooks_coalesced_followers_get_one_end", test_hooks_coalesced_followers_get_one_end},
    {"test_hooks_follower_timeout_gets_error", test_hooks_follower_timeout_gets_error},
    {"test_hooks_balanced_under_allocation_failures",
     test_hooks_balanced_under_allocation_failures},
    {"test_pool_events_match_pool_stats", test_pool_events_match_pool_stats},
    {"test_pool_health_littles_law", test_pool_health_littles_law},
    {"test_metrics_prometheus_passes_promtool", test_metrics_prometheus_passes_promtool},
    {"test_metrics_json_validator_is_strict", test_metrics_json_validator_is_strict},
    {"test_metrics_json_parses", test_metrics_json_parses},
    {"test_metrics_export_bounds_and_no_allocation", test_metrics_export_bounds_and_no_allocation},
    {"test_metrics_record_while_exporting", test_metrics_record_while_exporting},
    CU_TEST_INFO_NULL,
};

void suite_metrics(void);
void suite_metrics(void)
{
    tu_add_suite("metrics", tests);
}
