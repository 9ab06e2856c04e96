/* Rate limiting through the client: per attempt, by the coalescing leader
 * only; waiting or failing fast; an upstream's 429/503 Retry-After held as
 * a cooldown; one limit shared by factories through Redis. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static double rl_rate;
static int rl_burst, rl_fail_fast, rl_scope;

static void tune_rl(sluice_client_opts *co)
{
    co->rate_limit.rate = rl_rate;
    co->rate_limit.period_ms = 1000;
    co->rate_limit.burst = rl_burst;
    co->rate_limit.fail_fast = rl_fail_fast;
    co->rate_limit.scope = rl_scope;
}

static void set_rl(double rate, int burst, int fail_fast, int scope)
{
    rl_rate = rate;
    rl_burst = burst;
    rl_fail_fast = fail_fast;
    rl_scope = scope;
}

static sluice_factory *redis_factory(void)
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;
    const char *url = tu_redis_url();

    if (!url)
        return NULL;
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.redis_url = url;
    fo.limiter_prefix = "sluice-test";
    fo.limiter_fail_mode = SLUICE_FAIL_CLOSED;
    f = sluice_factory_new(&fo, &err);
    if (!f)
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

struct caller {
    sluice_client *c;
    const char *path;
    int status;
    pthread_barrier_t *start;
};

static void *caller(void *arg)
{
    struct caller *k = arg;
    sluice_error err;

    pthread_barrier_wait(k->start);   /* all at once, also under sanitizers */

    k->status = tu_get_status(k->c, k->path, &err);
    return NULL;
}

static void test_ratelimit_leader_only_takes_tokens(void)
{
    sluice_factory *f = NULL;
    struct sluice_factory_stats st;
    struct caller k[16];
    pthread_t t[16];
    pthread_barrier_t start;
    sluice_client *c;
    int i;

    set_rl(1000, 100, 0, SLUICE_LIMIT_PER_SERVICE);
    c = tu_client(&f, "rl-leader", tu_http_base(), tune_rl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    pthread_barrier_init(&start, NULL, 16);
    for (i = 0; i < 16; i++) {
        k[i] = (struct caller){c, "/delay/300?rl=leader", 0, &start};
        pthread_create(&t[i], NULL, caller, &k[i]);
    }
    for (i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(k[i].status, 200);
    }
    pthread_barrier_destroy(&start);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.limiter.allowed, 1);
    CU_ASSERT_EQUAL(st.limiter.decisions, 1);
    sluice_factory_free(f);
}

static void test_ratelimit_waits_or_fails_fast(void)
{
    sluice_factory *f = NULL;
    sluice_client *wait, *fast;
    struct sluice_factory_stats st;
    sluice_error err;
    int64_t t0, took;
    int i;

    set_rl(10, 1, 0, SLUICE_LIMIT_PER_SERVICE);
    wait = tu_client(&f, "rl-wait", tu_http_base(), tune_rl);
    set_rl(10, 1, 1, SLUICE_LIMIT_PER_SERVICE);
    fast = tu_client(&f, "rl-fast", tu_http_base(), tune_rl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(wait);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fast);
    /* 10 per second, burst 1: three calls need two emission intervals. */
    t0 = tu_now_ms();
    for (i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_get_status(wait, "/json?i=1", &err), 200);
    took = tu_now_ms() - t0;
    /* The rate is the contract: never faster, slower only by a loaded host. */
    CU_ASSERT(took >= 190 && took <= 200 + 1000);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.limiter.waits, 2);
    CU_ASSERT_EQUAL(tu_get_status(fast, "/json?i=2", &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(fast, "/json?i=3", &err), SLUICE_ERATELIMITED);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "rl-fast"));
    sluice_factory_free(f);
}

static void test_ratelimit_deadline_bounds_the_wait(void)
{
    sluice_factory *f = NULL;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_client *c;
    sluice_error err;
    int64_t t0, took;

    set_rl(1, 1, 0, SLUICE_LIMIT_PER_SERVICE);
    c = tu_client(&f, "rl-deadline", tu_http_base(), tune_rl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json?d=1", &err), 200);
    req.path = "/json?d=2";
    req.timeout_ms = 150;
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ERATELIMITED);
    took = tu_now_ms() - t0;
    /* At the deadline, or sooner when the wait cannot fit; the token
     * would come after 1 s, and 5x the deadline stays short of it. */
    CU_ASSERT(took <= 5 * 150);
    sluice_factory_free(f);
}

static void test_ratelimit_per_endpoint_scope(void)
{
    sluice_factory *f = NULL;
    sluice_client *c;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;

    set_rl(1, 1, 1, SLUICE_LIMIT_PER_ENDPOINT);
    c = tu_client(&f, "rl-endpoint", tu_http_base(), tune_rl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json?e=1", &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json?e=2", &err), SLUICE_ERATELIMITED);
    CU_ASSERT_EQUAL(tu_get_status(c, "/bytes/1", &err), 200);
    /* rate_key names the endpoint when the path does not. */
    req.path = "/bytes/2";
    req.rate_key = "json-family";
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), 0);
    sluice_response_free(r);
    req.path = "/bytes/3";
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ERATELIMITED);
    sluice_factory_free(f);
}

/* One GET through the client: true once the limiter lets it by. */
static int cooldown_over(void *c)
{
    sluice_error err;

    return tu_get_status(c, "/json?c=2", &err) == 200;
}

static void test_ratelimit_retry_after_becomes_cooldown(void)
{
    sluice_factory *f = NULL;
    sluice_client *c;
    sluice_error err;
    int64_t t0;

    set_rl(100, 10, 1, SLUICE_LIMIT_PER_SERVICE);
    c = tu_client(&f, "rl-cooldown", tu_http_base(), tune_rl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/status/429?retry_after=1", &err), 429);
    t0 = tu_now_ms();
    /* The whole service is held off for the second the upstream asked,
     * and not longer than a loaded host makes it. */
    CU_ASSERT_EQUAL(tu_get_status(c, "/json?c=1", &err), SLUICE_ERATELIMITED);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "retry in"));
    CU_ASSERT(tu_wait_until(cooldown_over, c, 1000 + 4000));
    CU_ASSERT(tu_now_ms() - t0 >= 900);
    sluice_factory_free(f);
}

static void test_ratelimit_shared_through_redis(void)
{
    sluice_factory *a = redis_factory(), *b = redis_factory();
    struct sluice_factory_stats st;
    sluice_client *ca, *cb;
    char service[64];
    sluice_error err;
    int i, ok = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    sluice_factory_stats(a, &st);
    CU_ASSERT_EQUAL(st.limiter_shared, 1);
    /* Two factories stand for two instances of a program. */
    snprintf(service, sizeof service, "rl-shared-%d", (int)getpid());
    set_rl(1, 5, 1, SLUICE_LIMIT_PER_SERVICE);
    ca = tu_client(&a, service, tu_http_base(), tune_rl);
    cb = tu_client(&b, service, tu_http_base(), tune_rl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    for (i = 0; i < 6; i++) {
        char path[32];
        snprintf(path, sizeof path, "/json?s=%d", i);
        ok += tu_get_status(i % 2 ? ca : cb, path, &err) == 200;
    }
    CU_ASSERT_EQUAL(ok, 5);   /* one burst for both */
    /* A cooldown from one instance holds the other off. */
    snprintf(service, sizeof service, "rl-cool-%d", (int)getpid());
    set_rl(100, 10, 1, SLUICE_LIMIT_PER_SERVICE);
    ca = tu_client(&a, service, tu_http_base(), tune_rl);
    cb = tu_client(&b, service, tu_http_base(), tune_rl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    CU_ASSERT_EQUAL(tu_get_status(ca, "/status/503?retry_after=2", &err), 503);
    CU_ASSERT_EQUAL(tu_get_status(cb, "/json?x=1", &err), SLUICE_ERATELIMITED);
    sluice_factory_free(a);
    sluice_factory_free(b);
}

static CU_TestInfo tests[] = {
    {"test_ratelimit_leader_only_takes_tokens", test_ratelimit_leader_only_takes_tokens},
    {"test_ratelimit_waits_or_fails_fast", test_ratelimit_waits_or_fails_fast},
    {"test_ratelimit_deadline_bounds_the_wait", test_ratelimit_deadline_bounds_the_wait},
    {"test_ratelimit_per_endpoint_scope", test_ratelimit_per_endpoint_scope},
    {"test_ratelimit_retry_after_becomes_cooldown", test_ratelimit_retry_after_becomes_cooldown},
    {"test_ratelimit_shared_through_redis", test_ratelimit_shared_through_redis},
    CU_TEST_INFO_NULL,
};

void suite_ratelimit(void);
void suite_ratelimit(void)
{
    tu_add_suite("ratelimit", tests);
}
