/* Retries, Retry-After, the deadline, the retry budget, the circuit
 * breaker, failover, redirects and the bulkhead, through the client
 * against sluice-mockapi. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* Attempt start and end times, recorded by the request hooks. */
static int64_t starts[16], ends[16];
static int nstarts;
static pthread_mutex_t starts_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_start(const sluice_request_info *info, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&starts_lock);
    if (nstarts < 16 && info->attempt == nstarts + 1)
        starts[nstarts++] = tu_now_ms();
    pthread_mutex_unlock(&starts_lock);
}

static void on_end(const sluice_request_info *info, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&starts_lock);
    if (info->attempt >= 1 && info->attempt <= 16)
        ends[info->attempt - 1] = tu_now_ms();
    pthread_mutex_unlock(&starts_lock);
}

static sluice_factory *hooked_factory(void)
{
    sluice_factory_opts fo;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.on_request_start = on_start;
    fo.on_request_end = on_end;
    nstarts = 0;
    return sluice_factory_new(&fo, NULL);
}

static void tune_retry(sluice_client_opts *co)
{
    co->retry.max_retries = 3;
    co->retry.backoff_factor_ms = 100;
}

static void test_retry_flaky_third_attempt_within_jitter(void)
{
    sluice_factory *f = hooked_factory();
    sluice_client *c = tu_client(&f, "flaky", tu_http_base(), tune_retry);
    sluice_response *r = NULL;
    sluice_error err;
    char path[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/flaky/k%d?fail=2", (int)getpid());
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 3);
    CU_ASSERT_EQUAL_FATAL(nstarts, 3);
    /* Full jitter: retry n sleeps in [0, 100 ms * 2^(n-1)] (test_retry
     * checks the draw itself).  Here: the client sleeps between an
     * attempt's end and the next start, and not for some other backoff
     * (no jitter, seconds for ms, the 10 s cap); 3x for a loaded host. */
    CU_ASSERT(starts[1] >= ends[0] && starts[1] - ends[0] <= 3 * 100);
    CU_ASSERT(starts[2] >= ends[1] && starts[2] - ends[1] <= 3 * 200);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void tune_one_retry(sluice_client_opts *co)
{
    co->retry.max_retries = 1;
    co->retry.backoff_factor_ms = 1;
}

static void tune_one_retry_capped(sluice_client_opts *co)
{
    tune_one_retry(co);
    co->retry.retry_after_max_ms = 200;
}

static void test_retry_after_seconds_date_and_cap(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "ra", tu_http_base(), tune_one_retry);
    sluice_client *capped = tu_client(&f, "ra-capped", tu_http_base(), tune_one_retry_capped);
    sluice_error err;
    int64_t t0, took;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(capped);
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(tu_get_status(c, "/status/503?retry_after=1", &err), 503);
    took = tu_now_ms() - t0;
    /* The wait is the contract: never shorter; longer by a loaded host. */
    CU_ASSERT(took >= 990 && took <= 1000 + 1000);
    /* An HTTP-date two seconds ahead: second resolution, so 1-2 s. */
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(tu_get_status(c, "/status/429?retry_after_date=2", &err), 429);
    took = tu_now_ms() - t0;
    CU_ASSERT(took >= 900 && took <= 2000 + 1000);
    /* retry_after_max_ms caps what the server asks for (5 s). */
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(tu_get_status(capped, "/status/503?retry_after=5", &err), 503);
    took = tu_now_ms() - t0;
    CU_ASSERT(took >= 190 && took <= 200 + 1000);
    sluice_factory_free(f);
}

static int post_count(sluice_client *c, const char *path, unsigned flags)
{
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    int rc;

    req.method = "POST";
    req.path = path;
    req.body = "x";
    req.body_len = 1;
    req.flags = flags;
    rc = sluice_client_do(c, &req, &r, &err);
    if (rc == 0)
        rc = sluice_response_status(r);
    sluice_response_free(r);
    return rc;
}

static void tune_fast_retry(sluice_client_opts *co)
{
    co->retry.max_retries = 2;
    co->retry.backoff_factor_ms = 1;
}

static void test_retry_post_only_when_idempotent(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "post", tu_http_base(), tune_fast_retry);
    char p1[64], p2[64], h1[64], h2[64];
    int id = (int)getpid();

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(p1, sizeof p1, "/count/post-a%d?status=503", id);
    snprintf(p2, sizeof p2, "/count/post-b%d?status=503", id);
    snprintf(h1, sizeof h1, "/count/post-a%d", id);
    snprintf(h2, sizeof h2, "/count/post-b%d", id);
    CU_ASSERT_EQUAL(post_count(c, p1, 0), 503);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), h1), 1);
    CU_ASSERT_EQUAL(post_count(c, p2, SLUICE_REQ_IDEMPOTENT), 503);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), h2), 3);
    sluice_factory_free(f);
}

static void tune_slow_backoff(sluice_client_opts *co)
{
    co->retry.max_retries = 10;
    co->retry.backoff_factor_ms = 150;
    co->retry.jitter = SLUICE_JITTER_NONE;
}

static void test_retry_deadline_holds(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "deadline", tu_http_base(), tune_slow_backoff);
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    int64_t t0, took;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    req.path = "/status/503";
    req.timeout_ms = 600;
    t0 = tu_now_ms();
    /* 150 + 300 ms of backoff fit, 600 more would not: the last response
     * comes back when the next sleep would cross the deadline. */
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    took = tu_now_ms() - t0;
    CU_ASSERT_EQUAL(sluice_response_status(r), 503);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 3);
    CU_ASSERT(took <= 600 + 1000);   /* the next backoff alone is 600 ms */
    sluice_response_free(r);
    /* A slow upstream: the deadline cuts the attempt itself, neither
     * sooner nor after the 5 s the upstream would take. */
    req.path = "/delay/5000";
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ETIMEDOUT);
    took = tu_now_ms() - t0;
    CU_ASSERT(took >= 590 && took <= 600 + 1000);
    sluice_factory_free(f);
}

struct storm {
    sluice_client *c;
    const char *path;
};

static void *storm_thread(void *arg)
{
    struct storm *s = arg;
    sluice_error err;
    int i;

    for (i = 0; i < 5; i++)
        tu_get_status(s->c, s->path, &err);
    return NULL;
}

static void tune_budget(sluice_client_opts *co)
{
    co->retry.max_retries = 3;
    co->retry.backoff_factor_ms = 1;
    co->disable_coalescing = 1;   /* every caller is its own request here */
}

static void test_retry_budget_stops_storm(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "storm", tu_http_base(), tune_budget);
    struct storm s;
    pthread_t t[100];
    char path[64], hits[64];
    int64_t t0, secs;
    long upstream;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/storm%d?status=503", (int)getpid());
    snprintf(hits, sizeof hits, "/count/storm%d", (int)getpid());
    s.c = c;
    s.path = path;
    t0 = tu_now_ms();
    for (i = 0; i < 100; i++)
        pthread_create(&t[i], NULL, storm_thread, &s);
    for (i = 0; i < 100; i++)
        pthread_join(t[i], NULL);
    secs = (tu_now_ms() - t0) / 1000 + 1;
    upstream = tu_hits(tu_http_addr(), hits);
    /* 500 requests; without a budget 2000 upstream calls.  With it: 500 +
     * 20% of them + the floor of 10 per second over the 10 s window (the
     * floor is always there, so it can be spent at once). */
    CU_ASSERT(upstream >= 500 + 100);
    CU_ASSERT(upstream <= 500 + 100 + 10 * (secs > 10 ? secs : 10) + 10);
    if (upstream > 720)
        fprintf(stderr, "\n  %ld upstream calls in %lld s\n", upstream, (long long)secs);
    sluice_factory_free(f);
}

static void tune_breaker(sluice_client_opts *co)
{
    co->breaker.disabled = 0;
    co->breaker.failure_threshold = 3;
    co->breaker.recovery_timeout_ms = 300;
    co->breaker.half_open_probes = 2;
}

/* One GET of /json through the client: true once the breaker lets it by. */
static int breaker_lets_by(void *c)
{
    sluice_error err;

    return tu_get_status(c, "/json", &err) != SLUICE_ECIRCUITOPEN;
}

static void test_breaker_opens_fails_fast_and_recovers(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "breaker", tu_http_base(), tune_breaker);
    struct sluice_factory_stats st;
    char path[64], hits[64];
    sluice_error err;
    int64_t t0;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/brk%d?status=500", (int)getpid());
    snprintf(hits, sizeof hits, "/count/brk%d", (int)getpid());
    for (i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, path, &err), 500);
    t0 = tu_now_ms();
    for (i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, path, &err), SLUICE_ECIRCUITOPEN);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 3);   /* fast: no network */
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "breaker"));
    /* It stays open for the recovery timeout (300 ms), then lets the first
     * probe by: that one answers 200, and the second closes it. */
    CU_ASSERT_FATAL(tu_wait_until(breaker_lets_by, c, 10000));
    CU_ASSERT(tu_now_ms() - t0 >= 250);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    for (i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.breaker_transitions, 3);   /* open, half-open, closed */
    sluice_factory_free(f);
}

static char fallback_url[96];

static void tune_failover(sluice_client_opts *co)
{
    static const char *fb[2];

    fb[0] = fallback_url;
    fb[1] = NULL;
    co->fallback_urls = fb;
    co->retry.max_retries = 2;
    co->retry.backoff_factor_ms = 1;
    co->breaker.disabled = 0;
    co->breaker.failure_threshold = 2;
    co->breaker.recovery_timeout_ms = 300;
    co->breaker.half_open_probes = 1;
}

static long requests_seen(const tu_server *s)
{
    return tu_hits(s->addr, "/json");
}

struct primary {
    sluice_client *c;
    tu_server *s;
    int failed;         /* calls that did not come back 200 */
};

/* One call through the client: true once the primary has seen it. */
static int primary_serves(void *arg)
{
    struct primary *p = arg;
    sluice_error err;

    p->failed += tu_get_status(p->c, "/json", &err) != 200;
    return requests_seen(p->s) >= 1;
}

static void test_failover_and_back(void)
{
    sluice_factory *f = NULL;
    tu_server a, b;
    sluice_client *c;
    sluice_error err;
    struct primary back;
    int i, port;

    if (tu_mockapi_start(&a, NULL) || tu_mockapi_start(&b, NULL))
        return;
    snprintf(fallback_url, sizeof fallback_url, "%s", b.url);
    c = tu_client(&f, "failover", a.url, tune_failover);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    CU_ASSERT_EQUAL(requests_seen(&a), 1);
    port = a.port;
    tu_server_stop(&a);
    for (i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    CU_ASSERT_EQUAL(requests_seen(&b), 4);
    /* The primary comes back; after its breaker's recovery a probe finds it. */
    if (tu_mockapi_start_port(&a, port, NULL) == 0) {
        back = (struct primary){c, &a, 0};
        CU_ASSERT(tu_wait_until(primary_serves, &back, 10000));
        CU_ASSERT_EQUAL(back.failed, 0);   /* the fallback served meanwhile */
        for (i = 0; i < 2; i++)
            CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
        CU_ASSERT_EQUAL(requests_seen(&a), 3);   /* closed again: all stay home */
        tu_server_stop(&a);
    }
    tu_server_stop(&b);
    sluice_factory_free(f);
}

static void tune_redirects(sluice_client_opts *co)
{
    static const sluice_header auth[] = {{"Authorization", "Bearer secret-token"}};

    co->follow_redirects = 1;
    co->headers = auth;
    co->nheaders = 1;
}

static void test_redirect_drops_credentials_across_origins(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "redir", tu_http_base(), tune_redirects);
    sluice_response *r = NULL;
    sluice_error err;
    char path[256];
    const char *body;
    tu_server b;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    /* Same origin: the credential goes along. */
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/redirect-to?url=/echo", &r, &err), 0);
    body = sluice_response_body(r, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "secret-token"));
    sluice_response_free(r);
    CU_ASSERT_EQUAL(tu_get_status(c, "/redirect/3", &err), 200);
    if (tu_mockapi_start(&b, NULL))
        goto out;
    snprintf(path, sizeof path, "/redirect-to?url=%s/echo&status=307", b.url);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    body = sluice_response_body(r, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"/echo\""));
    CU_ASSERT_PTR_NULL(strstr(body, "secret-token"));
    CU_ASSERT_PTR_NULL(strcasestr(body, "authorization"));
    sluice_response_free(r);
    tu_server_stop(&b);
    /* Too many hops. */
    CU_ASSERT_EQUAL(tu_get_status(c, "/redirect/20", &err), SLUICE_EREDIRECT);
out:
    sluice_factory_free(f);
}

static void test_redirect_off_by_default_and_https_to_http_refused(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "noredir", tu_http_base(), NULL);
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/redirect/1", &err), 302);
    sluice_factory_free(f);
}

static void tune_bulkhead(sluice_client_opts *co)
{
    co->max_in_flight = 2;
    co->disable_coalescing = 1;
}

struct slow {
    sluice_client *c;
    int rc;
};

static void *slow_thread(void *arg)
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

static void test_bulkhead_limits_in_flight(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "bulkhead", tu_http_base(), tune_bulkhead);
    struct slow s[2];
    pthread_t t[2];
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 2; i++) {
        s[i].c = c;
        pthread_create(&t[i], NULL, slow_thread, &s[i]);
    }
    CU_ASSERT_FATAL(tu_wait_until(two_in_use, f, 10000));
    req.path = "/json";
    req.timeout_ms = 100;    /* both slots are held for 800 ms */
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EQUEUEFULL);
    req.timeout_ms = 10000;  /* this one waits for a slot and gets it */
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), 0);
    sluice_response_free(r);
    for (i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(s[i].rc, 200);
    }
    sluice_factory_free(f);
}

#define BH_THREADS 16

struct bh_share {
    sluice_client *c;
    _Atomic int stop, errors;
    _Atomic long done[BH_THREADS];
    _Atomic int next;
};

static void *bh_share_main(void *arg)
{
    struct bh_share *b = arg;
    int me = atomic_fetch_add(&b->next, 1);
    sluice_error err;

    while (!atomic_load(&b->stop)) {
        if (tu_get_status(b->c, "/json", &err) == 200)
            atomic_fetch_add(&b->done[me], 1);
        else
            atomic_fetch_add(&b->errors, 1);
    }
    return NULL;
}

/* The bulkhead queues like the pool (arrival order, bounded barging): 16
 * threads through max_in_flight 2 for 2 s each get a share within a factor
 * of 4 of the mean, and none fails for want of a place. */
static void test_bulkhead_shares_are_fair(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "bulkfair", tu_http_base(), tune_bulkhead);
    static struct bh_share b;
    pthread_t t[BH_THREADS];
    long total = 0, lo = -1, hi = 0;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memset(&b, 0, sizeof b);
    b.c = c;
    for (i = 0; i < BH_THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, bh_share_main, &b), 0);
    usleep(2000 * 1000);
    atomic_store(&b.stop, 1);
    for (i = 0; i < BH_THREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < BH_THREADS; i++) {
        long d = atomic_load(&b.done[i]);
        total += d;
        lo = lo < 0 || d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    CU_ASSERT_EQUAL(atomic_load(&b.errors), 0);
    CU_ASSERT(total > 0);
    CU_ASSERT(lo * 4 * BH_THREADS >= total);
    CU_ASSERT(hi <= 4 * total / BH_THREADS + 1);
    if (lo * 4 * BH_THREADS < total)
        fprintf(stderr, "bulkhead shares: total %ld, least %ld, most %ld\n", total, lo, hi);
    sluice_factory_free(f);
}

/* A client with every default but the base URL, in a factory of its own
 * (so its breaker is fresh). */
static sluice_client *default_client(sluice_factory **f, const char *base)
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    *f = sluice_factory_new(NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*f);
    sluice_client_opts_init(&co);
    co.base_url = base;
    c = sluice_factory_client(*f, "defaults", &co, &err);
    if (!c)
        fprintf(stderr, "\n  client: %s\n", err.msg);
    return c;
}

/* With default options, call 2 to a closed port opens the breaker with
 * its own first attempt: it still returns what that attempt got (the
 * refused connect), and says the breaker opened; only call 3, which made
 * no attempt, gets SLUICE_ECIRCUITOPEN. */
static void test_breaker_keeps_the_real_error(void)
{
    sluice_factory *f = NULL;
    sluice_response *r = NULL;
    sluice_error err;
    char base[64];
    sluice_client *c;

    snprintf(base, sizeof base, "http://127.0.0.1:%d", tu_free_port());
    c = default_client(&f, base);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(sluice_get(c, "/a", &r, &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.attempts, 4);           /* 1 + the default 3 retries */
    CU_ASSERT_EQUAL(sluice_get(c, "/a", &r, &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.code, SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.attempts, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "127.0.0.1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "breaker"));
    if (!strstr(err.msg, "breaker"))
        fprintf(stderr, "\n  message: %s\n", err.msg);
    CU_ASSERT_EQUAL(sluice_get(c, "/a", &r, &err), SLUICE_ECIRCUITOPEN);
    CU_ASSERT_EQUAL(err.attempts, 0);
    CU_ASSERT_PTR_NULL(r);
    sluice_factory_free(f);
}

/* An RST in the middle of a 200's body is an I/O error, whatever the
 * breaker does with it, and the message names the peer. */
static void test_breaker_reset_mid_body_is_eio(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = default_client(&f, tu_http_base());
    sluice_response *r = NULL;
    sluice_error err;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(sluice_get(c, "/reset", &r, &err), SLUICE_EIO);
        CU_ASSERT_EQUAL(err.code, SLUICE_EIO);
        CU_ASSERT(err.attempts >= 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, tu_http_addr()));
    }
    sluice_factory_free(f);
}

/* max_retries = 0 means no retry: one attempt, as the mock API counts. */
static void test_retry_zero_means_one_attempt(void)
{
    sluice_factory *f = NULL;
    sluice_client_opts co;
    sluice_response *r = NULL;
    sluice_error err;
    sluice_client *c;
    char path[96], key[64];

    f = sluice_factory_new(NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sluice_client_opts_init(&co);
    CU_ASSERT_EQUAL(co.retry.max_retries, 3);   /* the real default, visible */
    CU_ASSERT_EQUAL(co.retry.backoff_factor_ms, 100);
    CU_ASSERT_EQUAL(co.breaker.failure_threshold, 5);
    CU_ASSERT_EQUAL(co.breaker.recovery_timeout_ms, 30000);
    co.base_url = tu_http_base();
    co.retry.max_retries = 0;
    c = sluice_factory_client(f, "zero", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(key, sizeof key, "/flaky/zero%d", (int)getpid());
    snprintf(path, sizeof path, "%s?fail=5", key);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 503);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 1);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), key), 1);
    sluice_response_free(r);
    sluice_factory_free(f);
}

/* A zeroed options struct (not from opts_init): no retries either. */
static void test_retry_zeroed_opts_make_one_attempt(void)
{
    sluice_factory *f = sluice_factory_new(NULL, NULL);
    sluice_client_opts co;
    sluice_response *r = NULL;
    sluice_error err;
    sluice_client *c;
    char path[96], key[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    memset(&co, 0, sizeof co);
    co.base_url = tu_http_base();
    c = sluice_factory_client(f, "zeroed", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(key, sizeof key, "/flaky/zeroed%d", (int)getpid());
    snprintf(path, sizeof path, "%s?fail=5", key);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 1);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), key), 1);
    sluice_response_free(r);
    sluice_factory_free(f);
}

/* err.attempts counts what the server saw. */
static void test_retry_attempts_in_error_match_hits(void)
{
    sluice_factory *f = sluice_factory_new(NULL, NULL);
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;
    char key[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    co.read_timeout_ms = 200;
    co.retry.max_retries = 2;
    co.retry.backoff_factor_ms = 1;
    co.breaker.disabled = 1;
    c = sluice_factory_client(f, "attempts2", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(key, sizeof key, "/delay/%d", 1000 + (int)getpid() % 1000);
    CU_ASSERT_EQUAL(tu_get_status(c, key, &err), SLUICE_ETIMEDOUT);
    CU_ASSERT_EQUAL(err.attempts, 3);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), key), err.attempts);
    /* The per-read timeout passed, not the call's: the message says so. */
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "read_timeout_ms 200 ms"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, tu_http_addr()));
    if (!strstr(err.msg, "read_timeout_ms 200 ms"))
        fprintf(stderr, "\n  message: %s\n", err.msg);
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_breaker_keeps_the_real_error", test_breaker_keeps_the_real_error},
    {"test_breaker_reset_mid_body_is_eio", test_breaker_reset_mid_body_is_eio},
    {"test_retry_zero_means_one_attempt", test_retry_zero_means_one_attempt},
    {"test_retry_zeroed_opts_make_one_attempt", test_retry_zeroed_opts_make_one_attempt},
    {"test_retry_attempts_in_error_match_hits", test_retry_attempts_in_error_match_hits},
    {"test_retry_flaky_third_attempt_within_jitter", test_retry_flaky_third_attempt_within_jitter},
    {"test_retry_after_seconds_date_and_cap", test_retry_after_seconds_date_and_cap},
    {"test_retry_post_only_when_idempotent", test_retry_post_only_when_idempotent},
    {"test_retry_deadline_holds", test_retry_deadline_holds},
    {"test_retry_budget_stops_storm", test_retry_budget_stops_storm},
    {"test_breaker_opens_fails_fast_and_recovers", test_breaker_opens_fails_fast_and_recovers},
    {"test_failover_and_back", test_failover_and_back},
    {"test_redirect_drops_credentials_across_origins", test_redirect_drops_credentials_across_origins},
    {"test_redirect_off_by_default_and_https_to_http_refused", test_redirect_off_by_default_and_https_to_http_refused},
    {"test_bulkhead_limits_in_flight", test_bulkhead_limits_in_flight},
    {"test_bulkhead_shares_are_fair", test_bulkhead_shares_are_fair},
    CU_TEST_INFO_NULL,
};

void suite_resilience(void);
void suite_resilience(void)
{
    tu_add_suite("resilience", tests);
}
