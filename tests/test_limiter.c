/* The rate limiter: GCRA reference cases on both backends, the exact bound
 * across processes, acquire, cooldown, fail modes against a killed, paused
 * and restarted redis-server, NOSCRIPT, credentials, batching, unix
 * sockets, threads, allocation failure. */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "limiter.h"
#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* How late a call may return past its deadline: a sanitizer build on a
 * loaded 2-core host can be that late.  Whether a call waited for a token
 * it should not have is told by its code (allowed vs ERATELIMITED), not by
 * the clock. */
#define SLACK_MS 1000
/* How late a decision against a dead or stalled Redis may come past the
 * Redis timeout (100 ms): 5x that in all, so a timeout not applied still
 * shows. */
#define TROUBLE_SLACK_MS 400

static int64_t ms_since(int64_t start_ns)
{
    return (sl_now_ns() - start_ns) / 1000000;
}

/* Runs one command on the server; returns its integer, or -1. */
static long long redis_do(const char *url, const char *cmd, const char *arg)
{
    redisContext *c = sl_redis_connect_url(url, 2000, NULL);
    redisReply *r;
    long long v = -1;

    if (!c)
        return -1;
    r = arg ? redisCommand(c, "%s %s", cmd, arg) : redisCommand(c, cmd);
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r && r->type == REDIS_REPLY_STATUS)
        v = 0;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return v;
}


/* Starts a private redis-server with extra arguments: on a free loopback
 * port, or (unix_path set) on that unix socket only.  Waits until it
 * answers (a NOAUTH answer counts).  0, or -1 after failing the test. */
static int redis_start_args(tu_server *s, const char *unix_path, const char *const *extra)
{
    const char *bin = getenv("SLUICE_TEST_REDIS_SERVER");
    const char *tmp = getenv("SLUICE_TEST_TMP");
    char portbuf[16], url[160];
    const char *argv[32];
    int n = 0, i;

    memset(s, 0, sizeof *s);
    if (!bin || !tmp) {
        CU_FAIL("SLUICE_TEST_REDIS_SERVER / SLUICE_TEST_TMP unset: run through tests/run.sh");
        return -1;
    }
    s->port = unix_path ? 0 : tu_free_port();
    snprintf(portbuf, sizeof portbuf, "%d", s->port);
    argv[n++] = bin;
    argv[n++] = "--port";
    argv[n++] = portbuf;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = tmp;
    if (unix_path) {
        argv[n++] = "--unixsocket";
        argv[n++] = unix_path;
    }
    while (extra && *extra && n < 30)
        argv[n++] = *extra++;
    argv[n] = NULL;
    s->pid = fork();
    if (s->pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    if (unix_path)
        snprintf(url, sizeof url, "unix://%s", unix_path);
    else
        snprintf(url, sizeof url, "redis://127.0.0.1:%d", s->port);
    if (strlen(url) >= sizeof s->url) {
        tu_server_stop(s);
        CU_FAIL("the private redis URL is too long");
        return -1;
    }
    memcpy(s->url, url, strlen(url) + 1);
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
    for (i = 0; i < 500; i++) {
        redisContext *c = sl_redis_connect_url(url, 2000, NULL);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            int up = r != NULL;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (up)
                return 0;
        }
        usleep(10000);
    }
    tu_server_stop(s);
    CU_FAIL("could not start a private redis-server");
    return -1;
}

/* Log lines captured while a test runs. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];
static size_t log_len;
static int log_warns, log_infos;

static void log_cb(sluice_log_level level, const char *msg, void *ud)
{
    size_t n = strlen(msg);

    (void)ud;
    pthread_mutex_lock(&log_mu);
    if (log_len + n + 2 < sizeof log_text) {
        memcpy(log_text + log_len, msg, n);
        log_len += n;
        log_text[log_len++] = '\n';
        log_text[log_len] = '\0';
    }
    if (level == SLUICE_LOG_WARN)
        log_warns++;
    if (level == SLUICE_LOG_INFO)
        log_infos++;
    pthread_mutex_unlock(&log_mu);
}

static void log_capture(int on)
{
    pthread_mutex_lock(&log_mu);
    log_len = 0;
    log_text[0] = '\0';
    log_warns = log_infos = 0;
    pthread_mutex_unlock(&log_mu);
    sluice_set_log(on ? log_cb : NULL, SLUICE_LOG_INFO, NULL);
}

/* ------------------------------------------------------------------------ */
/* reference cases                                                          */
/* ------------------------------------------------------------------------ */

typedef struct step {
    char op;            /* 'c' check, 'p' peek, 'd' cooldown */
    int arg;            /* cost or ms */
    long t_ms;          /* the clock, from the scenario's start */
    int allowed;
    long remaining, retry_after_ms, reset_after_ms;
} step;

typedef struct scenario {
    const char *name;
    sluice_limit lim;
    step steps[16];
} scenario;

/* Worked out by hand from the formulas in src/limiter.h.  Periods are long
 * (T = 10 s and more) so that no Redis key expires in real time while a
 * scenario runs on a fixed clock. */
static const scenario scenarios[] = {
    {"burst then rate", {10, 100000, 5}, {
        {'c', 1, 0, 1, 4, -1, 10000},
        {'c', 1, 0, 1, 3, -1, 20000},
        {'c', 3, 0, 1, 0, -1, 50000},
        {'c', 1, 0, 0, 0, 10000, 50000},
        {'c', 1, 5000, 0, 0, 5000, 45000},
        {'c', 1, 10000, 1, 0, -1, 50000},
        {'p', 1, 10000, 0, 0, 10000, 50000},
        {'p', 1, 100000, 1, 4, -1, 10000},
        {'c', 5, 100000, 1, 0, -1, 50000},
        {'c', 5, 100000, 0, 0, 50000, 50000},
        {'c', 2, 125000, 1, 0, -1, 45000},
        {0}}},
    {"cost above what is left", {1, 10000, 3}, {
        {'c', 2, 0, 1, 1, -1, 20000},
        {'c', 2, 0, 0, 0, 10000, 20000},
        {'c', 2, 10000, 1, 0, -1, 30000},
        {'c', 1, 10000, 0, 0, 10000, 30000},
        {0}}},
    {"fractional interval", {3, 100000, 1}, {
        {'c', 1, 0, 1, 0, -1, 33334},
        {'c', 1, 0, 0, 0, 33334, 33334},
        {'c', 1, 33333, 0, 0, 1, 1},
        {'c', 1, 33334, 1, 0, -1, 33334},
        {'c', 1, 100000, 1, 0, -1, 33334},
        {0}}},
    {"cooldown", {10, 100000, 5}, {
        {'c', 1, 0, 1, 4, -1, 10000},
        {'d', 100000, 0, 0, 0, 100000, 140000},
        {'c', 1, 50000, 0, 0, 50000, 90000},
        {'c', 1, 99999, 0, 0, 1, 40001},
        {'c', 1, 100000, 1, 0, -1, 50000},
        {'c', 1, 100000, 0, 0, 10000, 50000},
        {'c', 1, 110000, 1, 0, -1, 50000},
        {'d', 1000, 110000, 0, 0, 10000, 50000},
        {'d', 0, 110000, 1, -1, -1, 0},
        {0}}},
    {"cooldown on a fresh key", {1, 10000, 1}, {
        {'d', 30000, 0, 0, 0, 30000, 30000},
        {'c', 1, 29999, 0, 0, 1, 1},
        {'c', 1, 30000, 1, 0, -1, 10000},
        {0}}},
};

static sl_lim_op op_of(char c)
{
    return c == 'c' ? SL_LIM_CHECK : c == 'p' ? SL_LIM_PEEK : SL_LIM_COOLDOWN;
}

#define BASE_US 1000000000LL

static void run_scenarios(sluice_limiter *l, const char *backend)
{
    size_t i, j;

    for (i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        const scenario *sc = &scenarios[i];
        char key[64];

        snprintf(key, sizeof key, "{ref}:case%zu", i);
        for (j = 0; sc->steps[j].op; j++) {
            const step *st = &sc->steps[j];
            sluice_limit_result r = {-9, -9, -9, -9};
            sluice_error e;
            int rc = sl_limiter_decide_at(l, op_of(st->op), key, &sc->lim, st->arg,
                                          BASE_US + st->t_ms * 1000, &r, &e);
            int ok = rc == 0 && r.allowed == st->allowed && r.remaining == st->remaining &&
                     r.retry_after_ms == st->retry_after_ms &&
                     r.reset_after_ms == st->reset_after_ms;
            if (!ok)
                fprintf(stderr,
                        "\n  %s: \"%s\" step %zu: rc %d got {%d,%ld,%ld,%ld} want {%d,%ld,%ld,%ld} %s",
                        backend, sc->name, j, rc, r.allowed, r.remaining, r.retry_after_ms,
                        r.reset_after_ms, st->allowed, st->remaining, st->retry_after_ms,
                        st->reset_after_ms, rc ? e.msg : "");
            CU_ASSERT(ok);
        }
    }
}

static void test_gcra_reference_table_local(void)
{
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_FALSE(sluice_limiter_is_shared(l));
    run_scenarios(l, "local");
    sluice_limiter_free(l);
}

static void test_gcra_reference_table_redis(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l;
    sluice_error e;

    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_TRUE(sluice_limiter_is_shared(l));
    run_scenarios(l, "redis");
    sluice_limiter_free(l);
}

/* Random sequences on random limits: both backends give the same numbers
 * for the same clock, decision by decision. */
static void test_gcra_backends_agree_randomized(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *loc, *red;
    int64_t now = BASE_US;
    int i, mismatches = 0;
    unsigned seed = 12345;

    TU_REQUIRE(url);
    loc = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);
    red = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(red);
    for (i = 0; i < 600; i++) {
        static const sluice_limit lims[] = {{7, 100000, 4}, {3, 100000, 1}, {0.5, 20000, 3},
                                            {11, 200000, 11}};
        int k = rand_r(&seed) % 4, roll = rand_r(&seed) % 10;
        const sluice_limit *lim = &lims[k];
        sl_lim_op op = roll < 7 ? SL_LIM_CHECK : roll < 9 ? SL_LIM_PEEK : SL_LIM_COOLDOWN;
        int arg = op == SL_LIM_COOLDOWN ? 1000 + rand_r(&seed) % 59000
                                        : 1 + rand_r(&seed) % lim->burst;
        char key[32];
        sluice_limit_result a, b;
        int ra, rb;

        now += (int64_t)(rand_r(&seed) % 9000) * 1000 + rand_r(&seed) % 1000;
        snprintf(key, sizeof key, "{rnd}:%d", k);
        ra = sl_limiter_decide_at(loc, op, key, lim, arg, now, &a, NULL);
        rb = sl_limiter_decide_at(red, op, key, lim, arg, now, &b, NULL);
        if (ra || rb || a.allowed != b.allowed || a.remaining != b.remaining ||
            a.retry_after_ms != b.retry_after_ms || a.reset_after_ms != b.reset_after_ms) {
            if (mismatches++ < 5)
                fprintf(stderr, "\n  step %d: local %d {%d,%ld,%ld,%ld} redis %d {%d,%ld,%ld,%ld}",
                        i, ra, a.allowed, a.remaining, a.retry_after_ms, a.reset_after_ms, rb,
                        b.allowed, b.remaining, b.retry_after_ms, b.reset_after_ms);
        }
    }
    CU_ASSERT_EQUAL(mismatches, 0);
    sluice_limiter_free(loc);
    sluice_limiter_free(red);
}

/* A fixed window lets 2x its limit through around a boundary; GCRA does
 * not: a burst spent just before "the second" leaves nothing after it. */
static void run_window_edge(sluice_limiter *l)
{
    sluice_limit lim = {10, 100000, 10};
    sluice_limit_result r;
    int i, before = 0, after = 0;

    for (i = 0; i < 12; i++)
        if (sl_limiter_decide_at(l, SL_LIM_CHECK, "{edge}:k", &lim, 1, BASE_US + 99999000LL, &r,
                                 NULL) == 0 && r.allowed)
            before++;
    for (i = 0; i < 12; i++)
        if (sl_limiter_decide_at(l, SL_LIM_CHECK, "{edge}:k", &lim, 1, BASE_US + 100001000LL, &r,
                                 NULL) == 0 && r.allowed)
            after++;
    CU_ASSERT_EQUAL(before, 10);
    CU_ASSERT_EQUAL(after, 0);
    CU_ASSERT_EQUAL(r.retry_after_ms, 9998);
}

static void test_gcra_no_double_burst_at_window_edge(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_window_edge(l);
    sluice_limiter_free(l);
    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_window_edge(l);
    sluice_limiter_free(l);
}

static void run_peek(sluice_limiter *l)
{
    sluice_limit lim = {1, 60000, 3};
    sluice_limit_result r;
    int i;

    for (i = 0; i < 10; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_peek(l, "{peek}:k", &lim, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
        CU_ASSERT_EQUAL(r.remaining, 2);
    }
    for (i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, "{peek}:k", &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
        CU_ASSERT_EQUAL(r.remaining, 2 - i);
    }
    CU_ASSERT_EQUAL(sluice_limiter_peek(l, "{peek}:k", &lim, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
    CU_ASSERT(r.retry_after_ms > 59000 && r.retry_after_ms <= 60000);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{peek}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
}

/* A key longer than the stack buffer (a long URL path) works the same. */
static void run_long_key(sluice_limiter *l)
{
    static char key[SL_LIMITER_KEY_INLINE * 4];
    sluice_limit lim = {1, 60000, 2};
    sluice_limit_result r;

    memset(key, 'p', sizeof key - 1);
    key[0] = '{', key[2] = '}';
    CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 1);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 0);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
}

static void test_long_key_both_backends(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_long_key(l);
    sluice_limiter_free(l);
    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_long_key(l);
    sluice_limiter_free(l);
}

static void test_peek_consumes_nothing(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_peek(l);
    sluice_limiter_free(l);
    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_peek(l);
    sluice_limiter_free(l);
}

/* ------------------------------------------------------------------------ */
/* arguments                                                                */
/* ------------------------------------------------------------------------ */

static void expect_einval(int rc, const sluice_error *e, const char *word)
{
    CU_ASSERT_EQUAL(rc, SLUICE_EINVAL);
    CU_ASSERT_EQUAL(e->code, SLUICE_EINVAL);
    if (word && !strstr(e->msg, word)) {
        fprintf(stderr, "\n  message \"%s\" does not name \"%s\"", e->msg, word);
        CU_FAIL("message does not name the bad argument");
    }
}

static void test_check_invalid_arguments(void)
{
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);
    sluice_limit ok = {10, 1000, 5}, bad;
    sluice_limit_result r;
    sluice_error e;
    char longkey[SL_LIMITER_MAX_KEY + 2];
    int64_t t0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    expect_einval(sl_limiter_check(l, "k", &ok, 6, &r, &e), &e, "burst");
    expect_einval(sl_limiter_check(l, "k", &ok, 0, &r, &e), &e, "cost");
    expect_einval(sl_limiter_check(l, "k", &ok, -1, &r, &e), &e, "cost");
    bad = ok, bad.rate = 0;
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "rate");
    bad = ok, bad.rate = -3;
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "rate");
    bad = ok, bad.rate = NAN;
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "rate");
    bad = ok, bad.rate = INFINITY;
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "rate");
    bad = ok, bad.rate = 1e7;    /* one per 0.1 us */
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "microsecond");
    bad = ok, bad.period_ms = 0;
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "period");
    bad = ok, bad.burst = 0;
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "burst");
    bad = ok, bad.rate = 1e-9;
    expect_einval(sl_limiter_check(l, "k", &bad, 1, &r, &e), &e, "days");
    expect_einval(sl_limiter_check(l, NULL, &ok, 1, &r, &e), &e, "key");
    expect_einval(sl_limiter_check(l, "", &ok, 1, &r, &e), &e, "key");
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    expect_einval(sl_limiter_check(l, longkey, &ok, 1, &r, &e), &e, "key");
    expect_einval(sl_limiter_check(l, "k", NULL, 1, &r, &e), &e, "limit");
    expect_einval(sl_limiter_check(NULL, "k", &ok, 1, &r, &e), &e, "limiter");
    expect_einval(sl_limiter_check(l, "k", &ok, 1, NULL, &e), &e, "result");
    expect_einval(sl_limiter_cooldown(l, "k", &ok, -5, NULL, &e), &e, "cooldown");
    CU_ASSERT_EQUAL(sluice_limiter_cooldown(l, "k", NULL, 100), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_limiter_peek(l, NULL, &ok, &r), SLUICE_EINVAL);
    /* A cost above the burst could never pass: acquire refuses at once
     * instead of waiting forever. */
    t0 = sl_now_ns();
    CU_ASSERT_EQUAL(sluice_limiter_acquire(l, "k", &ok, 6, -1, &r), SLUICE_EINVAL);
    CU_ASSERT(ms_since(t0) < SLACK_MS);
    sluice_limiter_free(l);
    sluice_limiter_free(NULL);
}

static void test_new_invalid_options(void)
{
    sluice_limiter_opts o;
    sluice_error e;

    sluice_limiter_opts_init(&o);
    o.fail_mode = (sluice_fail_mode)7;
    CU_ASSERT_PTR_NULL(sluice_limiter_new("", &o, &e));
    expect_einval(e.code, &e, "fail_mode");
    sluice_limiter_opts_init(&o);
    o.redis_timeout_ms = -5;
    CU_ASSERT_PTR_NULL(sluice_limiter_new("", &o, &e));
    expect_einval(e.code, &e, "redis_timeout_ms");
    sluice_limiter_opts_init(&o);
    o.prefix = "";
    CU_ASSERT_PTR_NULL(sluice_limiter_new("", &o, &e));
    expect_einval(e.code, &e, "prefix");
    CU_ASSERT_PTR_NULL(sluice_limiter_new("http://127.0.0.1:1", NULL, &e));
    expect_einval(e.code, &e, "scheme");
}

/* ------------------------------------------------------------------------ */
/* the exact bound across processes                                         */
/* ------------------------------------------------------------------------ */

#define BOUND_PROCS 4
#define BOUND_THREADS 8
#define BOUND_SECONDS 3
#define BOUND_MS (BOUND_SECONDS * 1000 + 100)

/* What one process reports: counts, its first and last decision, and for
 * each millisecond of the run whether any of its decisions completed then
 * (so the parent can tell a machine that starved every process, during
 * which nothing can be admitted, from a limiter that under-admits). */
typedef struct bound_report {
    long allowed, errors, decisions;
    int64_t first_ns, last_ns;
    char first_error[160];
    unsigned char active[BOUND_MS];
} bound_report;

typedef struct bound_thread {
    sluice_limiter *l;
    const sluice_limit *lim;
    int64_t start_ns, stop_ns;
    _Atomic unsigned char *active;
    long allowed, errors, decisions;
    int64_t first_ns, last_ns;
    char first_error[160];
} bound_thread;

static void *bound_worker(void *arg)
{
    bound_thread *t = arg;
    int64_t now = sl_now_ns();

    t->first_ns = now;
    while (now < t->stop_ns) {
        sluice_limit_result r;
        sluice_error e;
        int rc = sl_limiter_check(t->l, "{bound}:k", t->lim, 1, &r, &e);
        int64_t ms;

        if (rc && !t->errors)
            snprintf(t->first_error, sizeof t->first_error, "%.150s", e.msg);
        now = sl_now_ns();
        ms = (now - t->start_ns) / 1000000;
        if (ms >= 0 && ms < BOUND_MS)
            atomic_store_explicit(&t->active[ms], 1, memory_order_relaxed);
        t->decisions++;
        if (rc)
            t->errors++;
        else if (r.allowed)
            t->allowed++;
    }
    t->last_ns = now;
    return NULL;
}

/* One instance of the program: its own limiter, eight threads. */
static void bound_child(const char *url, const char *prefix, const sluice_limit *lim,
                        int64_t start_ns, int fd)
{
    static _Atomic unsigned char active[BOUND_MS];
    static bound_report sum;
    bound_thread t[BOUND_THREADS];
    pthread_t th[BOUND_THREADS];
    /* CLOSED so that any Redis failure shows as an error rather than as
     * local admissions; a long timeout so that a machine that stalls this
     * process does not count as one. */
    sluice_limiter *l = tu_limiter(url, prefix, SLUICE_FAIL_CLOSED, 10000, NULL);
    int i;

    if (!l)
        _exit(2);
    sum.first_ns = INT64_MAX;
    for (i = 0; i < BOUND_THREADS; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].l = l;
        t[i].lim = lim;
        t[i].start_ns = start_ns;
        t[i].stop_ns = start_ns + (int64_t)BOUND_SECONDS * 1000000000;
        t[i].active = active;
        pthread_create(&th[i], NULL, bound_worker, &t[i]);
    }
    for (i = 0; i < BOUND_THREADS; i++) {
        pthread_join(th[i], NULL);
        sum.allowed += t[i].allowed;
        if (t[i].errors && !sum.errors)
            memcpy(sum.first_error, t[i].first_error, sizeof sum.first_error);
        sum.errors += t[i].errors;
        sum.decisions += t[i].decisions;
        sum.first_ns = sl_deadline_min(sum.first_ns, t[i].first_ns);
        sum.last_ns = t[i].last_ns > sum.last_ns ? t[i].last_ns : sum.last_ns;
    }
    for (i = 0; i < BOUND_MS; i++)
        sum.active[i] = atomic_load(&active[i]);
    sluice_limiter_free(l);
    _exit(write(fd, &sum, sizeof sum) == sizeof sum ? 0 : 3);
}

/* Milliseconds of [from, to) inside runs of 3 ms or more in which no
 * process completed a decision: the machine gave none of them a CPU. */
static long starved_ms(const unsigned char *active, long from, long to)
{
    long starved = 0, run = 0, i;

    for (i = from < 0 ? 0 : from; i < to && i < BOUND_MS; i++) {
        if (active[i] && run >= 50)
            fprintf(stderr, "\n  nothing completed from %ld to %ld ms", i - run, i);
        run = active[i] ? 0 : run + 1;
        if (run == 3)
            starved += 3;
        else if (run > 3)
            starved++;
    }
    return starved;
}

/* Four processes of eight threads hammer one key through Redis for three
 * seconds (3000 admissions at 1000/s: the 5% margin is 150 admissions,
 * far above the edge effects of process start-up).  Together they admit
 * at most burst + rate * (first to last decision), and at least 95% of
 * burst + rate * the time all four were running, less any time in which
 * none of them completed anything (a starved machine, not the limiter). */
static void test_bound_four_processes_shared_redis(void)
{
    const char *url = tu_redis_url();
    sluice_limit lim = {1000, 1000, 50};
    static bound_report all, r;
    int fds[2], i, k, status;
    pid_t pids[BOUND_PROCS];
    char prefix[64];
    int64_t start_ns, all_in = 0, all_out = INT64_MAX;
    double span_s, both_s, bound, floor;
    long starved;

    TU_REQUIRE(url);
    tu_fresh_prefix(prefix, sizeof prefix, "t");
    memset(&all, 0, sizeof all);
    all.first_ns = INT64_MAX;
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    start_ns = sl_now_ns();
    for (i = 0; i < BOUND_PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            close(fds[0]);
            bound_child(url, prefix, &lim, start_ns, fds[1]);
        }
    }
    close(fds[1]);
    for (i = 0; i < BOUND_PROCS; i++) {
        size_t got = 0;
        while (got < sizeof r) {
            ssize_t n = read(fds[0], (char *)&r + got, sizeof r - got);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        CU_ASSERT_EQUAL(got, sizeof r);
        all.allowed += r.allowed;
        if (r.errors)
            fprintf(stderr, "\n  a process failed %ld decisions, first: %s", r.errors,
                    r.first_error);
        all.errors += r.errors;
        all.decisions += r.decisions;
        all.first_ns = sl_deadline_min(all.first_ns, r.first_ns);
        all.last_ns = r.last_ns > all.last_ns ? r.last_ns : all.last_ns;
        all_in = r.first_ns > all_in ? r.first_ns : all_in;
        all_out = sl_deadline_min(all_out, r.last_ns);
        for (k = 0; k < BOUND_MS; k++)
            all.active[k] |= r.active[k];
    }
    close(fds[0]);
    for (i = 0; i < BOUND_PROCS; i++) {
        CU_ASSERT_EQUAL(waitpid(pids[i], &status, 0), pids[i]);
        CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    span_s = (double)(all.last_ns - all.first_ns) / 1e9;
    both_s = (double)(all_out - all_in) / 1e9;
    starved = starved_ms(all.active, (long)((all_in - start_ns) / 1000000),
                         (long)((all_out - start_ns) / 1000000));
    bound = lim.burst + lim.rate * span_s;
    floor = 0.95 * (lim.burst + lim.rate * (both_s - starved / 1000.0));
    fprintf(stderr,
            "\n  4 procs: %ld decisions, %ld admitted in %.3f s (bound %.1f); all four ran "
            "%.3f s, %ld ms starved (floor %.1f); %ld errors ",
            all.decisions, all.allowed, span_s, bound, both_s, starved, floor, all.errors);
    CU_ASSERT_EQUAL(all.errors, 0);
    CU_ASSERT(all.allowed <= (long)(bound + 1));
    CU_ASSERT(all.allowed >= (long)floor);
    CU_ASSERT(both_s - starved / 1000.0 > 1.5);    /* else the run says little */
}

/* ------------------------------------------------------------------------ */
/* acquire and cooldown                                                     */
/* ------------------------------------------------------------------------ */

static void run_acquire(sluice_limiter *l)
{
    sluice_limit tenth = {10, 1000, 1}, slow = {1, 1000, 1};
    struct sluice_limiter_stats st;
    sluice_limit_result r;
    sluice_error e;
    int64_t t0, el;

    /* Allowed again after 100 ms: acquire sleeps that long and succeeds. */
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{acq}:a", &tenth, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    t0 = sl_now_ns();
    CU_ASSERT_EQUAL(sluice_limiter_acquire(l, "{acq}:a", &tenth, 1, 1000, &r), 0);
    el = ms_since(t0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    CU_ASSERT(el >= 95 && el < 100 + SLACK_MS);
    /* timeout_ms < 0 waits as long as it takes. */
    t0 = sl_now_ns();
    CU_ASSERT_EQUAL(sluice_limiter_acquire(l, "{acq}:a", &tenth, 1, -1, &r), 0);
    CU_ASSERT(ms_since(t0) >= 90);
    sluice_limiter_stats(l, &st);
    CU_ASSERT(st.waits >= 2);

    /* Allowed again after a second, deadline in 200 ms: ERATELIMITED by
     * the deadline (at once, since it could not succeed). */
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{acq}:b", &slow, 1, &r), 0);
    t0 = sl_now_ns();
    CU_ASSERT_EQUAL(sl_limiter_acquire(l, "{acq}:b", &slow, 1, sl_deadline_in_ms(200), &r, &e),
                    SLUICE_ERATELIMITED);
    CU_ASSERT(ms_since(t0) <= 200 + SLACK_MS);
    CU_ASSERT_EQUAL(r.allowed, 0);
    CU_ASSERT(r.retry_after_ms > 200 && r.retry_after_ms <= 1000);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "{acq}:b"));
    /* timeout 0: one check. */
    t0 = sl_now_ns();
    CU_ASSERT_EQUAL(sluice_limiter_acquire(l, "{acq}:b", &slow, 1, 0, &r), SLUICE_ERATELIMITED);
    CU_ASSERT(ms_since(t0) <= SLACK_MS);
}

static void test_acquire_waits_and_gives_up_at_deadline(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_acquire(l);
    sluice_limiter_free(l);
    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    run_acquire(l);
    sluice_limiter_free(l);
}

typedef struct contender {
    sluice_limiter *l;
    const sluice_limit *lim;
    int64_t deadline;
    int ok, limited, other;
    int64_t late_ms;     /* worst return past the deadline */
} contender;

static void *contend(void *arg)
{
    contender *c = arg;

    for (;;) {
        sluice_limit_result r;
        int rc = sl_limiter_acquire(c->l, "{acq}:c", c->lim, 1, c->deadline, &r, NULL);
        int64_t late = (sl_now_ns() - c->deadline) / 1000000;
        if (late > c->late_ms)
            c->late_ms = late;
        if (rc == 0)
            c->ok++;
        else if (rc == SLUICE_ERATELIMITED)
            c->limited++;
        else
            c->other++;
        if (rc)
            return NULL;
    }
}

/* Four threads acquire from a key that admits 20 per second until a shared
 * deadline: together they get what the rate allows, and every one of them
 * returns ERATELIMITED by the deadline (+20 ms), even those who slept and
 * lost the race. */
static void test_acquire_contended_deadline(void)
{
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);
    sluice_limit lim = {20, 1000, 1};
    contender c[4];
    pthread_t th[4];
    int i, ok = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 4; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].l = l;
        c[i].lim = &lim;
        c[i].deadline = sl_deadline_in_ms(500);
        c[i].late_ms = -1000;
        pthread_create(&th[i], NULL, contend, &c[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += c[i].ok;
        CU_ASSERT_EQUAL(c[i].limited, 1);
        CU_ASSERT_EQUAL(c[i].other, 0);
        CU_ASSERT(c[i].late_ms <= SLACK_MS);
    }
    /* 1 at once + 20/s over 0.5 s = 11. */
    CU_ASSERT(ok >= 6 && ok <= 11);
    sluice_limiter_free(l);
}

/* A 429's cooldown pushed through one instance holds off another instance
 * of the program, with retry_after_ms saying until when. */
static void test_cooldown_holds_off_other_instance(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *a, *b;
    sluice_limit lim = {10, 1000, 10};    /* T = 100 ms */
    sluice_limit_result r;
    int64_t t0, el;

    TU_REQUIRE(url);
    tu_fresh_prefix(prefix, sizeof prefix, "t");
    a = tu_limiter(url, prefix, SLUICE_FAIL_CLOSED, 2000, NULL);
    b = tu_limiter(url, prefix, SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(sluice_limiter_check(b, "{svc}:/items", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    t0 = sl_now_ns();
    CU_ASSERT_EQUAL(sluice_limiter_cooldown(a, "{svc}:/items", &lim, 400), 0);
    CU_ASSERT_EQUAL(sluice_limiter_check(b, "{svc}:/items", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
    CU_ASSERT(r.retry_after_ms <= 400 && r.retry_after_ms >= 400 - ms_since(t0) - 1);
    CU_ASSERT_EQUAL(sluice_limiter_peek(b, "{svc}:/items", &lim, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
    /* Another key of the same service is not held off. */
    CU_ASSERT_EQUAL(sluice_limiter_check(b, "{svc}:/other", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    /* Waiting what it said is enough; then the bucket refills from empty
     * (one request per 100 ms), not all at once. */
    CU_ASSERT_EQUAL(sluice_limiter_check(b, "{svc}:/items", &lim, 1, &r), 0);
    usleep((useconds_t)r.retry_after_ms * 1000);
    CU_ASSERT_EQUAL(sluice_limiter_check(b, "{svc}:/items", &lim, 1, &r), 0);
    el = ms_since(t0);
    CU_ASSERT(el >= 400);
    CU_ASSERT_EQUAL(r.allowed, 1);
    CU_ASSERT(r.remaining <= (el - 400) / 100);
    sluice_limiter_free(a);
    sluice_limiter_free(b);
}

static void test_two_instances_share_quota(void)
{
    const char *url = tu_redis_url();
    char prefix[64], other[64];
    sluice_limiter *a, *b, *c;
    sluice_limit lim = {1, 60000, 5};
    sluice_limit_result r;
    int i, got_a = 0, got_b = 0, got_c = 0;

    TU_REQUIRE(url);
    tu_fresh_prefix(prefix, sizeof prefix, "t");
    a = tu_limiter(url, prefix, SLUICE_FAIL_CLOSED, 2000, NULL);
    b = tu_limiter(url, prefix, SLUICE_FAIL_CLOSED, 2000, NULL);
    c = tu_limiter(url, tu_fresh_prefix(other, sizeof other, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 3; i++)
        got_a += sluice_limiter_check(a, "{s}:e", &lim, 1, &r) == 0 && r.allowed;
    for (i = 0; i < 5; i++)
        got_b += sluice_limiter_check(b, "{s}:e", &lim, 1, &r) == 0 && r.allowed;
    for (i = 0; i < 5; i++)
        got_c += sluice_limiter_check(c, "{s}:e", &lim, 1, &r) == 0 && r.allowed;
    CU_ASSERT_EQUAL(got_a, 3);
    CU_ASSERT_EQUAL(got_b, 2);
    CU_ASSERT_EQUAL(got_c, 5);    /* another prefix is another quota */
    sluice_limiter_free(a);
    sluice_limiter_free(b);
    sluice_limiter_free(c);
}

/* The stored key is "<prefix>:{<service>}:<endpoint>", a hash tag ready
 * for Redis Cluster. */
static void test_key_layout_hash_tag(void)
{
    const char *url = tu_redis_url();
    char prefix[64], key[128];
    sluice_limiter *l;
    sluice_limit lim = {1, 60000, 5};
    sluice_limit_result r;

    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{billing}:/v1/charges", &lim, 1, &r), 0);
    snprintf(key, sizeof key, "%s:{billing}:/v1/charges", prefix);
    CU_ASSERT_EQUAL(redis_do(url, "EXISTS", key), 1);
    /* It expires when the bucket is full again: one T, 60 s, from now. */
    {
        long long ttl = redis_do(url, "PTTL", key);
        CU_ASSERT(ttl > 50000 && ttl <= 60000);
    }
    sluice_limiter_free(l);
}

/* ------------------------------------------------------------------------ */
/* Redis trouble                                                            */
/* ------------------------------------------------------------------------ */

#define TROUBLE_TIMEOUT_MS 100

/* One decision, timed: its return code; *slow set when it took longer than
 * the Redis timeout plus slack. */
static int timed_check(sluice_limiter *l, const char *key, const sluice_limit *lim,
                       sluice_limit_result *r, sluice_error *e, int *slow)
{
    int64_t t0 = sl_now_ns();
    int rc = sl_limiter_check(l, key, lim, 1, r, e);
    int64_t el = ms_since(t0);

    if (el > TROUBLE_TIMEOUT_MS + TROUBLE_SLACK_MS) {
        fprintf(stderr, "\n  a decision took %lld ms", (long long)el);
        *slow = 1;
    }
    return rc;
}

static void test_redis_killed_fail_modes(void)
{
    tu_server s;
    sluice_limiter *open_l, *closed_l, *local_l;
    sluice_limiter_opts o;
    sluice_limit lim = {1, 60000, 8};
    sluice_limit_result r;
    struct sluice_limiter_stats st;
    sluice_error e;
    char where[64];
    int i, slow = 0, local_allowed = 0;

    if (tu_redis_start(&s, 0) != 0)
        return;
    snprintf(where, sizeof where, "127.0.0.1:%d", s.port);
    log_capture(1);
    open_l = tu_limiter(s.url, "km", SLUICE_FAIL_OPEN, TROUBLE_TIMEOUT_MS, NULL);
    closed_l = tu_limiter(s.url, "km", SLUICE_FAIL_CLOSED, TROUBLE_TIMEOUT_MS, NULL);
    sluice_limiter_opts_init(&o);
    o.prefix = "km";
    o.redis_timeout_ms = TROUBLE_TIMEOUT_MS;
    o.fail_mode = SLUICE_FAIL_LOCAL;
    o.expected_instances = 4;
    local_l = sluice_limiter_new(s.url, &o, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(open_l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(closed_l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(local_l);
    /* Healthy: all three share one quota of 8 in Redis. */
    CU_ASSERT_EQUAL(sluice_limiter_check(open_l, "{k}:1", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 7);
    CU_ASSERT_EQUAL(sluice_limiter_check(closed_l, "{k}:1", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 6);
    CU_ASSERT_EQUAL(sluice_limiter_check(local_l, "{k}:1", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 5);

    tu_server_stop(&s);
    for (i = 0; i < 20; i++) {
        CU_ASSERT_EQUAL(timed_check(open_l, "{k}:1", &lim, &r, &e, &slow), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
        CU_ASSERT_EQUAL(r.remaining, -1);
        CU_ASSERT_EQUAL(timed_check(closed_l, "{k}:1", &lim, &r, &e, &slow), SLUICE_ELIMITER);
        CU_ASSERT_EQUAL(r.allowed, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, where));
        CU_ASSERT_EQUAL(timed_check(local_l, "{k}:1", &lim, &r, &e, &slow), 0);
        local_allowed += r.allowed;
    }
    CU_ASSERT_EQUAL(slow, 0);
    /* The local share: burst 8 over 4 instances is 2. */
    CU_ASSERT_EQUAL(local_allowed, 2);
    CU_ASSERT_EQUAL(sluice_limiter_acquire(closed_l, "{k}:1", &lim, 1, 1000, &r),
                    SLUICE_ELIMITER);
    sluice_limiter_stats(local_l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, 20);
    CU_ASSERT(st.redis_errors >= 1);
    CU_ASSERT_EQUAL(st.allowed, 3);
    CU_ASSERT_EQUAL(st.throttled, 18);
    /* One warning per limiter, not one per call. */
    pthread_mutex_lock(&log_mu);
    CU_ASSERT_EQUAL(log_warns, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(log_text, "unreachable, failing OPEN"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log_text, "unreachable, failing CLOSED"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log_text, "unreachable, failing LOCAL"));
    pthread_mutex_unlock(&log_mu);
    log_capture(0);
    sluice_limiter_free(open_l);
    sluice_limiter_free(closed_l);
    sluice_limiter_free(local_l);
}

typedef struct pause_thread {
    sluice_limiter *l;
    int slow, limiter_errors, other;
} pause_thread;

static void *pause_worker(void *arg)
{
    pause_thread *p = arg;
    sluice_limit lim = {1000, 1000, 100};
    int i;

    for (i = 0; i < 10; i++) {
        sluice_limit_result r;
        sluice_error e;
        int rc = timed_check(p->l, "{p}:k", &lim, &r, &e, &p->slow);
        if (rc == SLUICE_ELIMITER)
            p->limiter_errors++;
        else if (rc)
            p->other++;
    }
    return NULL;
}

/* A stopped server still accepts connections and never answers: every
 * decision still returns within the Redis timeout, then Redis is used
 * again once it answers. */
static void test_redis_paused_decisions_bounded(void)
{
    tu_server s;
    sluice_limiter *l;
    sluice_limit lim = {1000, 1000, 100};
    sluice_limit_result r;
    pause_thread p[8];
    pthread_t th[8];
    int i, slow = 0, errors = 0, rc = -1;
    int64_t t0;

    if (tu_redis_start(&s, 0) != 0)
        return;
    l = tu_limiter(s.url, "pz", SLUICE_FAIL_CLOSED, TROUBLE_TIMEOUT_MS, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{p}:k", &lim, 1, &r), 0);
    tu_server_pause(&s, 1);
    for (i = 0; i < 8; i++) {
        memset(&p[i], 0, sizeof p[i]);
        p[i].l = l;
        pthread_create(&th[i], NULL, pause_worker, &p[i]);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        slow += p[i].slow;
        errors += p[i].limiter_errors;
        CU_ASSERT_EQUAL(p[i].other, 0);
    }
    CU_ASSERT_EQUAL(slow, 0);
    CU_ASSERT_EQUAL(errors, 80);
    tu_server_pause(&s, 0);
    /* Back within the reconnect backoff (at most a second). */
    t0 = sl_now_ns();
    while (ms_since(t0) < 3000 && (rc = sluice_limiter_check(l, "{p}:k", &lim, 1, &r)) != 0)
        usleep(10000);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(ms_since(t0) <= 1000 + SLACK_MS);
    sluice_limiter_free(l);
    tu_server_stop(&s);
}

/* A stopped server never answers: the decision is classified as a
 * timeout from errno (EAGAIN after SO_RCVTIMEO), not from the text of
 * strerror, which the locale translates. */
static void test_redis_paused_is_a_timeout(void)
{
    tu_server s;
    sluice_limiter *l;
    sluice_limit lim = {1000, 1000, 100};
    sluice_limit_result r;
    sluice_error e;
    char want[64];

    if (tu_redis_start(&s, 0) != 0)
        return;
    l = tu_limiter(s.url, "pt", SLUICE_FAIL_CLOSED, TROUBLE_TIMEOUT_MS, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{t}:k", &lim, 1, &r, &e), 0);
    tu_server_pause(&s, 1);
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{t}:k", &lim, 1, &r, &e), SLUICE_ELIMITER);
    snprintf(want, sizeof want, "127.0.0.1:%d: no reply within", s.port);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, want));
    if (!strstr(e.msg, want))
        fprintf(stderr, "\n  message: %s\n", e.msg);
    tu_server_pause(&s, 0);
    sluice_limiter_free(l);
    tu_server_stop(&s);
}

/* Killed and started again on the same port: shared decisions resume
 * within a second, with no help from the caller. */
static void test_redis_restart_resumes(void)
{
    tu_server s;
    sluice_limiter *l;
    sluice_limit lim = {1000, 1000, 100};
    sluice_limit_result r;
    int port, rc = -1, i;
    int64_t t0;

    if (tu_redis_start(&s, 0) != 0)
        return;
    port = s.port;
    l = tu_limiter(s.url, "rs", SLUICE_FAIL_CLOSED, TROUBLE_TIMEOUT_MS, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{r}:k", &lim, 1, &r), 0);
    tu_server_stop(&s);
    /* Fail for a while, long enough for the backoff to grow. */
    for (i = 0; i < 30; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, "{r}:k", &lim, 1, &r), SLUICE_ELIMITER);
        usleep(10000);
    }
    if (tu_redis_start(&s, port) != 0) {
        sluice_limiter_free(l);
        return;
    }
    t0 = sl_now_ns();
    while (ms_since(t0) < 3000 && (rc = sluice_limiter_check(l, "{r}:k", &lim, 1, &r)) != 0)
        usleep(5000);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(ms_since(t0) <= 1000 + SLACK_MS);
    sluice_limiter_free(l);
    tu_server_stop(&s);
}

/* After SCRIPT FLUSH the next EVALSHA meets NOSCRIPT; the limiter loads the
 * script again and the decision still comes from Redis. */
static void test_script_flush_noscript_recovers(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l;
    sluice_limit lim = {1, 60000, 3};
    sluice_limit_result r;
    struct sluice_limiter_stats a, b;

    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{f}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(redis_do(url, "SCRIPT FLUSH", NULL), 0);
    sluice_limiter_stats(l, &a);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{f}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    CU_ASSERT_EQUAL(r.remaining, 1);
    sluice_limiter_stats(l, &b);
    CU_ASSERT_EQUAL(b.round_trips - a.round_trips, 2);   /* NOSCRIPT, then the retry */
    CU_ASSERT_EQUAL(b.redis_errors, a.redis_errors);
    CU_ASSERT_EQUAL(b.fallbacks, 0);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{f}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 0);
    sluice_limiter_free(l);
}

/* ------------------------------------------------------------------------ */
/* credentials and addresses                                                */
/* ------------------------------------------------------------------------ */

#define SECRET "s3cr3t-Pw"

static void assert_no_secret(const char *text, const char *secret)
{
    if (strstr(text, secret)) {
        fprintf(stderr, "\n  \"%s\" carries the password", text);
        CU_FAIL("a message carries the password");
    }
}

static void test_auth_wrong_password_clear_error(void)
{
    static const char *const extra[] = {"--requirepass", SECRET, NULL};
    tu_server s;
    char url[160], where[64];
    sluice_limiter *l;
    sluice_limit lim = {1, 60000, 3};
    sluice_limit_result r;
    sluice_error e;

    if (redis_start_args(&s, NULL, extra) != 0)
        return;
    snprintf(where, sizeof where, "127.0.0.1:%d", s.port);
    log_capture(1);
    /* Wrong password: refused at creation, clearly, without the secret. */
    snprintf(url, sizeof url, "redis://:wrong-%s@127.0.0.1:%d", SECRET, s.port);
    l = tu_limiter(url, "au", SLUICE_FAIL_CLOSED, 1000, &e);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(e.code, SLUICE_ELIMITER);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "AUTH failed for redis://:***@"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, where));
    assert_no_secret(e.msg, SECRET);
    /* No password where one is required: NOAUTH, also at creation. */
    l = tu_limiter(s.url, "au", SLUICE_FAIL_CLOSED, 1000, &e);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(e.code, SLUICE_ELIMITER);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "NOAUTH"));
    /* The right one, plain and in the Redis 6 user:password form. */
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", SECRET, s.port);
    l = tu_limiter(url, "au", SLUICE_FAIL_CLOSED, 1000, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{a}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 2);
    sluice_limiter_free(l);
    snprintf(url, sizeof url, "redis://default:%s@127.0.0.1:%d/3", SECRET, s.port);
    l = tu_limiter(url, "au", SLUICE_FAIL_CLOSED, 1000, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{a}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 2);    /* db 3: another key space */
    /* A decision failing later names the server, never the secret. */
    tu_server_stop(&s);
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{a}:k", &lim, 1, &r, &e), SLUICE_ELIMITER);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, where));
    assert_no_secret(e.msg, SECRET);
    sluice_limiter_free(l);
    pthread_mutex_lock(&log_mu);
    assert_no_secret(log_text, SECRET);
    pthread_mutex_unlock(&log_mu);
    log_capture(0);
}

/* Nothing listens: creation succeeds (the fail mode applies), CLOSED
 * decisions fail at once with the address, and nobody pays a connect
 * attempt per call. */
static void test_unreachable_host_clear_error(void)
{
    char url[128], where[64];
    int port = tu_free_port(), i, slow = 0;
    sluice_limiter *l;
    sluice_limit lim = {1, 1000, 1};
    sluice_limit_result r;
    struct sluice_limiter_stats st;
    sluice_error e;

    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", SECRET, port);
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    log_capture(1);
    l = tu_limiter(url, "un", SLUICE_FAIL_CLOSED, TROUBLE_TIMEOUT_MS, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_TRUE(sluice_limiter_is_shared(l));
    for (i = 0; i < 50; i++) {
        CU_ASSERT_EQUAL(timed_check(l, "{u}:k", &lim, &r, &e, &slow), SLUICE_ELIMITER);
        CU_ASSERT_EQUAL(e.code, SLUICE_ELIMITER);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, where));
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "connect"));
        assert_no_secret(e.msg, SECRET);
    }
    CU_ASSERT_EQUAL(slow, 0);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, 50);
    CU_ASSERT(st.redis_errors <= 3);  /* the creation attempt and a probe or two */
    pthread_mutex_lock(&log_mu);
    CU_ASSERT_EQUAL(log_warns, 1);
    assert_no_secret(log_text, SECRET);
    pthread_mutex_unlock(&log_mu);
    log_capture(0);
    sluice_limiter_free(l);
}

static void test_unix_socket_url(void)
{
    const char *tmp = getenv("SLUICE_TEST_TMP");
    char path[256], url[300], key[64];
    tu_server s;
    sluice_limiter *l;
    sluice_limit lim = {1, 60000, 3};
    sluice_limit_result r;
    redisContext *c;
    redisReply *rep;

    TU_REQUIRE(tmp);
    snprintf(path, sizeof path, "%s/limiter-%d.sock", tmp, (int)getpid());
    if (redis_start_args(&s, path, NULL) != 0)
        return;
    snprintf(url, sizeof url, "unix://%s?db=2", path);
    l = tu_limiter(url, "ux", SLUICE_FAIL_CLOSED, 1000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{x}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 2);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{x}:k", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.remaining, 1);
    c = sl_redis_connect_url(url, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(key, sizeof key, "ux:{x}:k");
    rep = redisCommand(c, "EXISTS %s", key);
    CU_ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    sluice_limiter_free(l);
    tu_server_stop(&s);
}

static void test_url_parsing(void)
{
    static const char *const bad[] = {
        "http://127.0.0.1", "redis://", "redis://:@h", "redis://h:0", "redis://h:65536",
        "redis://h:12a", "redis://h:", "redis://h/x", "redis://h/1?x=1", "redis://h#f",
        "redis://ho st", "redis://h\r\n", "redis://SECRETX@h", "redis://[::1",
        "redis://[::1]x", "redis://[zz]", "unix://relative", "unix:///p?db=x", "unix:///p?x=1",
        "rediss://h", "redis://:p%zzSECRETX@h", "redis://:SECRETX%00@h", "redis://h!x",
        "redis://h/99999999999", "unix://", NULL};
    sl_redis_url u;
    sluice_error e;
    int i;

    for (i = 0; bad[i]; i++) {
        int rc = sl_redis_url_parse(bad[i], &u, &e);
        if (rc != SLUICE_EINVAL)
            fprintf(stderr, "\n  \"%s\" was accepted", bad[i]);
        CU_ASSERT_EQUAL(rc, SLUICE_EINVAL);
        CU_ASSERT(strstr(e.msg, "redis URL") != NULL);
        assert_no_secret(e.msg, "SECRETX");
        CU_ASSERT_PTR_NULL(u.host);
    }
    CU_ASSERT_EQUAL(sl_redis_url_parse(NULL, &u, &e), SLUICE_EINVAL);

    CU_ASSERT_EQUAL_FATAL(sl_redis_url_parse("redis://127.0.0.1", &u, &e), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "127.0.0.1");
    CU_ASSERT_EQUAL(u.port, 6379);
    CU_ASSERT_EQUAL(u.db, 0);
    CU_ASSERT_PTR_NULL(u.password);
    CU_ASSERT_STRING_EQUAL(u.display, "redis://127.0.0.1:6379");
    sl_redis_url_free(&u);

    CU_ASSERT_EQUAL_FATAL(sl_redis_url_parse("REDIS://:p%40ss%3Aw@cache-1.local:7000/5", &u, &e), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "cache-1.local");
    CU_ASSERT_EQUAL(u.port, 7000);
    CU_ASSERT_EQUAL(u.db, 5);
    CU_ASSERT_PTR_NULL(u.user);
    CU_ASSERT_STRING_EQUAL(u.password, "p@ss:w");
    CU_ASSERT_STRING_EQUAL(u.display, "redis://:***@cache-1.local:7000/5");
    CU_ASSERT_STRING_EQUAL(u.where, "cache-1.local:7000");
    sl_redis_url_free(&u);

    CU_ASSERT_EQUAL_FATAL(sl_redis_url_parse("redis://app:pw@[::1]:6380/", &u, &e), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "::1");
    CU_ASSERT_STRING_EQUAL(u.user, "app");
    CU_ASSERT_STRING_EQUAL(u.password, "pw");
    CU_ASSERT_STRING_EQUAL(u.display, "redis://app:***@[::1]:6380");
    sl_redis_url_free(&u);

    CU_ASSERT_EQUAL_FATAL(sl_redis_url_parse("unix://:pw@/run/redis.sock?db=4", &u, &e), 0);
    CU_ASSERT_PTR_NULL(u.host);
    CU_ASSERT_STRING_EQUAL(u.path, "/run/redis.sock");
    CU_ASSERT_EQUAL(u.db, 4);
    CU_ASSERT_STRING_EQUAL(u.display, "unix://:***@/run/redis.sock?db=4");
    sl_redis_url_free(&u);
}

/* SLUICE_REDIS_URL picks Redis when the URL argument is NULL. */
static void test_env_url_selects_backend(void)
{
    const char *url = tu_redis_url();
    const char *saved = getenv("SLUICE_REDIS_URL");
    char *copy = saved ? strdup(saved) : NULL;
    sluice_limiter *l;
    sluice_error e;

    TU_REQUIRE(url);
    setenv("SLUICE_REDIS_URL", url, 1);
    l = sluice_limiter_new(NULL, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL(l);
    CU_ASSERT_TRUE(sluice_limiter_is_shared(l));
    sluice_limiter_free(l);
    /* "" asks for the in-process limiter whatever the environment says. */
    l = sluice_limiter_new("", NULL, &e);
    CU_ASSERT_PTR_NOT_NULL(l);
    CU_ASSERT_FALSE(sluice_limiter_is_shared(l));
    sluice_limiter_free(l);
    setenv("SLUICE_REDIS_URL", "redis://bad host", 1);
    CU_ASSERT_PTR_NULL(sluice_limiter_new(NULL, NULL, &e));
    CU_ASSERT_EQUAL(e.code, SLUICE_EINVAL);
    unsetenv("SLUICE_REDIS_URL");
    l = sluice_limiter_new(NULL, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL(l);
    CU_ASSERT_FALSE(sluice_limiter_is_shared(l));
    sluice_limiter_free(l);
    if (copy) {
        setenv("SLUICE_REDIS_URL", copy, 1);
        free(copy);
    }
}

/* ------------------------------------------------------------------------ */
/* batching and threads                                                     */
/* ------------------------------------------------------------------------ */

typedef struct hammer {
    sluice_limiter *l;
    int n, random_keys, errors, ops;
    unsigned seed;
} hammer;

static void *hammer_run(void *arg)
{
    hammer *h = arg;
    sluice_limit lims[] = {{50, 1000, 10}, {5, 100, 2}, {1000, 1000, 100}};
    int i;

    for (i = 0; i < h->n; i++) {
        char key[32];
        int k = h->random_keys ? (int)(rand_r(&h->seed) % 200) : 0;
        int what = h->random_keys ? (int)(rand_r(&h->seed) % 10) : 0;
        const sluice_limit *lim = &lims[k % 3];
        sluice_limit_result r;
        int rc;

        snprintf(key, sizeof key, "{h%d}:k%d", k % 7, k);
        if (what < 6)
            rc = sluice_limiter_check(h->l, key, lim, 1, &r);
        else if (what < 8)
            rc = sluice_limiter_peek(h->l, key, lim, &r);
        else if (what < 9)
            rc = sluice_limiter_cooldown(h->l, key, lim, 5);
        else
            rc = sluice_limiter_acquire(h->l, key, lim, 1, 0, &r) == SLUICE_ERATELIMITED ? 0 : 0;
        h->ops++;
        if (rc)
            h->errors++;
    }
    return NULL;
}

/* Runs `threads` hammers of n decisions; returns the errors seen. */
static int hammer_threads(sluice_limiter *l, int threads, int n, int random_keys)
{
    hammer h[32];
    pthread_t th[32];
    int i, errors = 0;

    for (i = 0; i < threads; i++) {
        memset(&h[i], 0, sizeof h[i]);
        h[i].l = l;
        h[i].n = n;
        h[i].random_keys = random_keys;
        h[i].seed = (unsigned)i * 7919u + 1;
        pthread_create(&th[i], NULL, hammer_run, &h[i]);
    }
    for (i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        errors += h[i].errors;
    }
    return errors;
}

/* Eight threads at once share round trips: fewer EVALSHAs than decisions. */
static void test_batching_shares_round_trips(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l;
    struct sluice_limiter_stats st;

    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(hammer_threads(l, 8, 2000, 0), 0);
    sluice_limiter_stats(l, &st);
    fprintf(stderr, "\n  %llu decisions in %llu round trips ", (unsigned long long)st.decisions,
            (unsigned long long)st.round_trips);
    CU_ASSERT_EQUAL(st.decisions, 8 * 2000);
    CU_ASSERT_EQUAL(st.allowed + st.throttled, 8 * 2000);
    /* One round trip per decision is what no batching gives; how many a
     * round trip carries beyond that depends on the load (1.5 to 2 on an
     * idle machine, less beside other work), so the bound asks only that
     * a tenth of the decisions shared a round trip. */
    CU_ASSERT(st.round_trips > 0 && st.decisions > st.round_trips * 11 / 10);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    sluice_limiter_free(l);
}

/* 32 threads, random keys, every operation: no error, and (under TSan) no
 * report, on both backends. */
static void test_threads_random_keys(void)
{
    const char *url = tu_redis_url();
    char prefix[64];
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);
    struct sluice_limiter_stats st;

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(hammer_threads(l, 32, 2000, 1), 0);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.decisions, 32 * 2000);
    sluice_limiter_free(l);
    TU_REQUIRE(url);
    l = tu_limiter(url, tu_fresh_prefix(prefix, sizeof prefix, "t"), SLUICE_FAIL_CLOSED, 2000, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(hammer_threads(l, 32, 300, 1), 0);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.decisions, 32 * 300);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    sluice_limiter_free(l);
}

/* ------------------------------------------------------------------------ */
/* the in-process table                                                     */
/* ------------------------------------------------------------------------ */

/* Keys whose bucket is full again are dropped: 10000 keys used at two
 * times far apart do not all stay. */
static void test_local_stale_entries_evicted(void)
{
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);
    sluice_limit lim = {1000, 1000, 1};   /* full again 1 ms after a use */
    sluice_limit_result r;
    char key[32];
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "old-%d", i);
        CU_ASSERT_EQUAL(sl_limiter_decide_at(l, SL_LIM_CHECK, key, &lim, 1, BASE_US, &r, NULL), 0);
    }
    CU_ASSERT_EQUAL(sl_local_entries(sl_limiter_local(l)), 5000);
    for (i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "new-%d", i);
        CU_ASSERT_EQUAL(sl_limiter_decide_at(l, SL_LIM_CHECK, key, &lim, 1, BASE_US + 10000000,
                                             &r, NULL), 0);
    }
    fprintf(stderr, "\n  %zu entries left of 10000 ", sl_local_entries(sl_limiter_local(l)));
    CU_ASSERT(sl_local_entries(sl_limiter_local(l)) <= 6500);
    /* A dropped key starts again with a full burst. */
    CU_ASSERT_EQUAL(sl_limiter_decide_at(l, SL_LIM_CHECK, "old-1", &lim, 1, BASE_US + 10000000,
                                         &r, NULL), 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    sluice_limiter_free(l);
}

/* 100,000 distinct keys, each full again 1 ms after its use, used 10 us
 * apart: only the keys of the last millisecond matter, and the table stays
 * within the sweep's bound (each of the 64 shards sweeps when it doubles,
 * from 64 entries) however many keys came before. */
static void test_local_many_keys_stay_bounded(void)
{
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);
    sluice_limit lim = {1000, 1000, 1};
    sluice_limit_result r;
    size_t n, most = 0;
    char key[32];
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "{svc}:/item/%d", i);
        CU_ASSERT_EQUAL(sl_limiter_decide_at(l, SL_LIM_CHECK, key, &lim, 1,
                                             BASE_US + (int64_t)i * 10, &r, NULL), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
        if (i % 1000 == 999 && (n = sl_local_entries(sl_limiter_local(l))) > most)
            most = n;
    }
    fprintf(stderr, "\n  at most %zu entries for 100000 keys ", most);
    CU_ASSERT(most <= 64 * 64 + 4 * 100);   /* 100 keys live at a time */
    sluice_limiter_free(l);
}

static void test_local_stats_count(void)
{
    sluice_limiter *l = tu_limiter("", NULL, SLUICE_FAIL_CLOSED, 0, NULL);
    sluice_limit lim = {1, 60000, 2};
    sluice_limit_result r;
    struct sluice_limiter_stats st;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(sluice_limiter_check(l, "s", &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(sluice_limiter_peek(l, "s", &lim, &r), 0);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.allowed, 2);
    CU_ASSERT_EQUAL(st.throttled, 3);
    CU_ASSERT_EQUAL(st.decisions, 6);
    CU_ASSERT_EQUAL(st.round_trips, 0);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    sluice_limiter_stats(NULL, &st);
    CU_ASSERT_EQUAL(st.decisions, 0);
    sluice_limiter_free(l);
}

/* Every allocation of new and check fails in turn: ENOMEM, never a crash
 * or a leak, and a key that could not be stored is not admitted. */
static void test_local_alloc_failure_loop(void)
{
    sluice_limit lim = {1, 60000, 2};
    long n;
    int done = 0;

    for (n = 1; !done && n < 2000; n++) {
        sluice_limiter *l;
        sluice_error e;
        int i, ok = 1;
        char stored[150] = {0};

        tu_alloc_install(n, 0);
        l = sluice_limiter_new("", NULL, &e);
        if (!l) {
            CU_ASSERT_EQUAL(e.code, SLUICE_ENOMEM);
        } else {
            for (i = 0; i < 300; i++) {
                sluice_limit_result r;
                char key[32];
                int rc;
                snprintf(key, sizeof key, "k%d", i % 150);
                rc = sl_limiter_check(l, key, &lim, 1, &r, &e);
                CU_ASSERT(rc == 0 || rc == SLUICE_ENOMEM);
                if (rc == SLUICE_ENOMEM) {
                    CU_ASSERT_EQUAL(r.allowed, 0);
                    ok = 0;
                } else {
                    /* A key used before and stored has one left, not two. */
                    CU_ASSERT_EQUAL(r.remaining, stored[i % 150] ? 0 : 1);
                    stored[i % 150] = 1;
                }
            }
            sluice_limiter_free(l);
            done = ok && tu_alloc_count() < n;
        }
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        tu_alloc_uninstall();
    }
    CU_ASSERT_TRUE(done);
}

/* ------------------------------------------------------------------------ */
/* the reply decoder                                                        */
/* ------------------------------------------------------------------------ */

static redisReply *int_reply(long long v)
{
    redisReply *r = calloc(1, sizeof *r);

    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply *array_reply(size_t n, const long long *v)
{
    redisReply *r = calloc(1, sizeof *r);
    size_t i;

    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof *r->element);
    for (i = 0; i < n; i++)
        r->element[i] = int_reply(v[i]);
    return r;
}

static void free_reply(redisReply *r)
{
    size_t i;

    for (i = 0; r->element && i < r->elements; i++)
        if (r->element[i])
            free_reply(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

static int decode(redisReply *r, size_t n, sluice_limit_result *out, sluice_error *e)
{
    int rc = sl_redis_decode_reply(r, n, out, "127.0.0.1:1", e);

    free_reply(r);
    return rc;
}

static void test_reply_decoder_rejects_malformed(void)
{
    static const long long good[] = {1, 4, -1, 100, 0, 0, 250, 500};
    static const long long bad_allowed[] = {2, 4, -1, 100};
    static const long long bad_retry[] = {0, 0, -1, 100};
    static const long long bad_retry2[] = {1, 0, 5, 100};
    static const long long bad_rem[] = {1, -1, -1, 100};
    static const long long bad_reset[] = {0, 0, 3, -7};
    sluice_limit_result out[2];
    sluice_error e;
    redisReply *r;

    CU_ASSERT_EQUAL(decode(array_reply(8, good), 2, out, &e), 0);
    CU_ASSERT_EQUAL(out[0].allowed, 1);
    CU_ASSERT_EQUAL(out[0].remaining, 4);
    CU_ASSERT_EQUAL(out[1].retry_after_ms, 250);
    CU_ASSERT_EQUAL(out[1].reset_after_ms, 500);
    CU_ASSERT_EQUAL(decode(array_reply(8, good), 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "8 elements for 1"));
    CU_ASSERT_EQUAL(decode(array_reply(4, bad_allowed), 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_EQUAL(decode(array_reply(4, bad_retry), 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_EQUAL(decode(array_reply(4, bad_retry2), 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_EQUAL(decode(array_reply(4, bad_rem), 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_EQUAL(decode(array_reply(4, bad_reset), 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_EQUAL(sl_redis_decode_reply(NULL, 1, out, NULL, &e), SLUICE_ELIMITER);
    /* A string where an integer belongs. */
    r = array_reply(4, good);
    r->element[2]->type = REDIS_REPLY_STRING;
    r->element[2]->str = strdup("-1");
    r->element[2]->len = 2;
    CU_ASSERT_EQUAL(decode(r, 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "not an integer"));
    /* A NULL element. */
    r = array_reply(4, good);
    free(r->element[1]);
    r->element[1] = NULL;
    CU_ASSERT_EQUAL(decode(r, 1, out, &e), SLUICE_ELIMITER);
    /* An error reply: its text, control bytes replaced. */
    r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_ERROR;
    r->str = strdup("ERR boom\r\nx");
    r->len = strlen(r->str);
    CU_ASSERT_EQUAL(decode(r, 1, out, &e), SLUICE_ELIMITER);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "ERR boom??x"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "127.0.0.1:1"));
    /* Not an array. */
    CU_ASSERT_EQUAL(decode(int_reply(1), 1, out, &e), SLUICE_ELIMITER);
}

/* ---- a hostile server's array counts ------------------------------------ */

/* Feeds bytes to a reader bounded as the library's are: its reply code. */
static int read_bounded(const char *bytes, size_t n, redisReply **reply)
{
    redisReader *r = redisReaderCreate();
    void *out = NULL;
    int rc;

    *reply = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(sl_redis_bound_reader(r), 0);
    rc = redisReaderFeed(r, bytes, n);
    if (rc == REDIS_OK)
        rc = redisReaderGetReply(r, &out);
    redisReaderFree(r);
    *reply = out;
    return rc;
}

/* "*n\r\n" and n integer replies. */
static char *int_array(int n, size_t *len)
{
    char *text = malloc(32 + (size_t)n * 8), *p = text;
    int i;

    p += sprintf(p, "*%d\r\n", n);
    for (i = 0; i < n; i++)
        p += sprintf(p, ":%d\r\n", i % 10);
    *len = (size_t)(p - text);
    return text;
}

static void test_reader_bounds_array_counts(void)
{
    redisReply *reply;
    size_t len;
    char *text;

    /* The count alone would have hiredis allocate 3.2 GB. */
    CU_ASSERT_EQUAL(read_bounded("*400000004\r\n", 12, &reply), REDIS_ERR);
    CU_ASSERT_PTR_NULL(reply);
    text = int_array(SL_REDIS_MAX_REPLY_ELEMENTS, &len);
    CU_ASSERT_EQUAL(read_bounded(text, len, &reply), REDIS_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    CU_ASSERT_EQUAL(reply->elements, SL_REDIS_MAX_REPLY_ELEMENTS);
    freeReplyObject(reply);
    free(text);
    text = int_array(SL_REDIS_MAX_REPLY_ELEMENTS + 1, &len);
    CU_ASSERT_EQUAL(read_bounded(text, len, &reply), REDIS_ERR);
    CU_ASSERT_PTR_NULL(reply);
    free(text);
    CU_ASSERT_EQUAL(sl_redis_bound_reader(NULL), -1);
}

/* A "Redis" that answers every command with an array count of 400 million
 * and nothing after it. */
typedef struct hostile {
    int lfd;
    atomic_int stop;
} hostile;

static void *hostile_thread(void *arg)
{
    static const char reply[] = "*400000004\r\n";
    hostile *h = arg;
    int fds[8], nfd = 0, i;

    while (!atomic_load(&h->stop)) {
        struct pollfd p[9];
        char buf[4096];

        p[0] = (struct pollfd){h->lfd, POLLIN, 0};
        for (i = 0; i < nfd; i++)
            p[i + 1] = (struct pollfd){fds[i], POLLIN, 0};
        if (poll(p, (nfds_t)nfd + 1, 50) <= 0)
            continue;
        if ((p[0].revents & POLLIN) && nfd < 8 && (fds[nfd] = accept(h->lfd, NULL, NULL)) >= 0)
            nfd++;
        for (i = 0; i < nfd; i++) {
            if (!(p[i + 1].revents & (POLLIN | POLLHUP)))
                continue;
            if (read(fds[i], buf, sizeof buf) <= 0) {
                close(fds[i]);
                fds[i--] = fds[--nfd];
                continue;
            }
            if (tu_write_all(fds[i], reply, sizeof reply - 1) != 0) {
                close(fds[i]);
                fds[i--] = fds[--nfd];
            }
        }
    }
    for (i = 0; i < nfd; i++)
        close(fds[i]);
    return NULL;
}

static void test_hostile_array_count_refused_at_once(void)
{
    hostile h = {.lfd = -1};
    sluice_limit lim = {1, 1000, 1};
    sluice_limit_result r;
    sluice_limiter *l;
    redisContext *c;
    redisReply *reply;
    sluice_error e;
    pthread_t t;
    char url[64];
    int port;
    int64_t t0;

    h.lfd = tu_listen(8, &port);
    CU_ASSERT_FATAL(h.lfd >= 0);
    pthread_create(&t, NULL, hostile_thread, &h);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    /* A connection the library opened refuses the count at once, before
     * allocating for it, rather than waiting out its 3 s timeout for
     * elements that never come. */
    c = sl_redis_connect_url(url, 3000, &e);
    CU_ASSERT_PTR_NOT_NULL(c);
    if (c) {
        t0 = sl_now_ns();
        reply = redisCommand(c, "PING");
        CU_ASSERT_PTR_NULL(reply);
        CU_ASSERT_EQUAL(c->err, REDIS_ERR_OOM);
        CU_ASSERT(ms_since(t0) < 1500);
        if (reply)
            freeReplyObject(reply);
        redisFree(c);
    }
    /* The limiter over it: a clear SLUICE_ELIMITER naming the server. */
    log_capture(1);
    l = tu_limiter(url, "ho", SLUICE_FAIL_CLOSED, 3000, &e);
    CU_ASSERT_PTR_NOT_NULL(l);
    if (l) {
        CU_ASSERT_EQUAL(sl_limiter_check(l, "{h}:k", &lim, 1, &r, &e), SLUICE_ELIMITER);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "127.0.0.1"));
        sluice_limiter_free(l);
    }
    log_capture(0);
    atomic_store(&h.stop, 1);
    pthread_join(t, NULL);
    close(h.lfd);
}

/* A Redis that accepts nothing (a listener nobody accepts on): the pool's
 * create is handed each caller's own deadline.  Creation waits out its
 * longer first-connect deadline, not redis_timeout_ms; each decision after
 * gives up within redis_timeout_ms, with an error naming the server. */
static void test_redis_blackhole_connect_bounded_by_deadline(void)
{
    sluice_limit lim = {1, 1000, 1};
    sluice_limit_result r;
    sluice_limiter *l;
    sluice_error e;
    char url[64], where[64];
    int64_t t0, took;
    int port, lfd, i;

    lfd = tu_listen(8, &port);
    CU_ASSERT_FATAL(lfd >= 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    log_capture(1);
    t0 = sl_now_ns();
    l = tu_limiter(url, "bh", SLUICE_FAIL_CLOSED, 200, &e);
    took = ms_since(t0);
    CU_ASSERT_PTR_NOT_NULL(l);
    /* The first connect's deadline is 1 s (CREATE_TIMEOUT_MS). */
    CU_ASSERT(took >= 950);
    CU_ASSERT(took < 1000 + 1500);
    for (i = 0; l && i < 3; i++) {
        t0 = sl_now_ns();
        CU_ASSERT_EQUAL(sl_limiter_check(l, "{b}:k", &lim, 1, &r, &e), SLUICE_ELIMITER);
        took = ms_since(t0);
        CU_ASSERT(took < 200 + 500);
        CU_ASSERT_EQUAL(e.code, SLUICE_ELIMITER);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, where));
        CU_ASSERT_EQUAL(r.allowed, 0);
    }
    sluice_limiter_free(l);
    log_capture(0);
    close(lfd);
}

/* sl_redis_connect_url: a malformed URL and a closed port each give NULL
 * with a code and a message, within the timeout. */
static void test_connect_url_errors(void)
{
    char url[64];
    sluice_error err = {0};
    int64_t t0 = sl_now_ns();

    CU_ASSERT_PTR_NULL(sl_redis_connect_url("redis://host:99999", 500, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "port"));
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", tu_free_port());
    memset(&err, 0, sizeof err);
    CU_ASSERT_PTR_NULL(sl_redis_connect_url(url, 500, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ELIMITER);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cannot connect"));
    CU_ASSERT(ms_since(t0) < 500 + SLACK_MS);
}

static CU_TestInfo tests[] = {
    {"test_gcra_reference_table_local", test_gcra_reference_table_local},
    {"test_gcra_reference_table_redis", test_gcra_reference_table_redis},
    {"test_gcra_backends_agree_randomized", test_gcra_backends_agree_randomized},
    {"test_gcra_no_double_burst_at_window_edge", test_gcra_no_double_burst_at_window_edge},
    {"test_peek_consumes_nothing", test_peek_consumes_nothing},
    {"test_long_key_both_backends", test_long_key_both_backends},
    {"test_check_invalid_arguments", test_check_invalid_arguments},
    {"test_new_invalid_options", test_new_invalid_options},
    {"test_bound_four_processes_shared_redis", test_bound_four_processes_shared_redis},
    {"test_acquire_waits_and_gives_up_at_deadline", test_acquire_waits_and_gives_up_at_deadline},
    {"test_acquire_contended_deadline", test_acquire_contended_deadline},
    {"test_cooldown_holds_off_other_instance", test_cooldown_holds_off_other_instance},
    {"test_two_instances_share_quota", test_two_instances_share_quota},
    {"test_key_layout_hash_tag", test_key_layout_hash_tag},
    {"test_redis_killed_fail_modes", test_redis_killed_fail_modes},
    {"test_redis_paused_decisions_bounded", test_redis_paused_decisions_bounded},
    {"test_redis_paused_is_a_timeout", test_redis_paused_is_a_timeout},
    {"test_redis_restart_resumes", test_redis_restart_resumes},
    {"test_script_flush_noscript_recovers", test_script_flush_noscript_recovers},
    {"test_auth_wrong_password_clear_error", test_auth_wrong_password_clear_error},
    {"test_unreachable_host_clear_error", test_unreachable_host_clear_error},
    {"test_unix_socket_url", test_unix_socket_url},
    {"test_url_parsing", test_url_parsing},
    {"test_env_url_selects_backend", test_env_url_selects_backend},
    {"test_batching_shares_round_trips", test_batching_shares_round_trips},
    {"test_threads_random_keys", test_threads_random_keys},
    {"test_local_stale_entries_evicted", test_local_stale_entries_evicted},
    {"test_local_stats_count", test_local_stats_count},
    {"test_local_alloc_failure_loop", test_local_alloc_failure_loop},
    {"test_connect_url_errors", test_connect_url_errors},
    {"test_reply_decoder_rejects_malformed", test_reply_decoder_rejects_malformed},
    {"test_reader_bounds_array_counts", test_reader_bounds_array_counts},
    {"test_hostile_array_count_refused_at_once", test_hostile_array_count_refused_at_once},
    {"test_local_many_keys_stay_bounded", test_local_many_keys_stay_bounded},
    {"test_redis_blackhole_connect_bounded_by_deadline",
     test_redis_blackhole_connect_bounded_by_deadline},
    CU_TEST_INFO_NULL,
};

void suite_limiter(void);
void suite_limiter(void)
{
    tu_add_suite("limiter", tests);
}
