/* Stress: 64 threads on one factory for SLUICE_STRESS_SECONDS (default 3)
 * mixing every part of the library at once: GETs and POSTs, coalesced
 * keys, Redis rate-limit decisions (allowed and denied), get-or-create
 * look-ups, a pool far smaller than the thread count whose connections
 * expire and retire all the time, a breaker that opens and closes on a
 * flaky endpoint, executor batches and futures.
 *
 * Every call is accounted for (a response or a definite error of a kind
 * its operation allows), every thread comes back within a bound, the
 * factory's counters add up, and no descriptor is left behind.  Run it
 * long under the sanitizers with e.g.
 *   make tsan SUITES=stress SLUICE_STRESS_SECONDS=20
 *   make asan SUITES=stress SLUICE_STRESS_SECONDS=20 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define MAX_THREADS 256
#define NSERVICES 8
#define NCODES 32
#define POOL_MAX 8

enum op {
    OP_GET, OP_POST, OP_COALESCED, OP_FLAKY, OP_LIMITED, OP_LOOKUP, OP_BATCH, OP_SUBMIT, NOPS
};

static const char *const op_names[NOPS] = {"GET", "POST", "coalesced", "flaky", "rate-limited",
                                           "look-up", "batch", "submit"};

/* Percent of the mix, in enum order. */
static const int op_weights[NOPS] = {25, 15, 15, 12, 10, 10, 5, 8};

typedef struct op_tally {
    atomic_long calls;          /* sluice_client_do calls (batch items each count) */
    atomic_long status[6];
    atomic_long code[NCODES];
    atomic_long bad;            /* undefined outcomes or wrong answers */
} op_tally;

static struct stress {
    sluice_factory *f;
    sluice_client *main_c, *flaky_c, *limited_c;
    sluice_executor *ex;
    sluice_client *_Atomic first[NSERVICES];   /* what each look-up key gave first */
    sluice_client_opts svc_opts;
    char prefix[64];
    char base[96];
    int64_t end_ms;
    op_tally t[NOPS];
} S;

static int env_int(const char *name, int def, int lo, int hi)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (!v || !*v)
        return def;
    n = strtol(v, &end, 10);
    return *end || n < lo || n > hi ? def : (int)n;
}

/* ---- accounting ------------------------------------------------------- */

static void bad(enum op op, const char *what, int rc, const sluice_error *err)
{
    atomic_fetch_add(&S.t[op].bad, 1);
    fprintf(stderr, "\n  %s: %s (rc %s, err.code %s, \"%.100s\")", op_names[op], what,
            sluice_err_name(rc), sluice_err_name(err ? err->code : 0), err ? err->msg : "");
}

/* Files one call's outcome (*rp is read after the call ran); returns the
 * status, or the error code. */
static int file(enum op op, int rc, sluice_response *const *rp, const sluice_error *err)
{
    const sluice_response *r = *rp;
    op_tally *t = &S.t[op];
    int st;

    atomic_fetch_add(&t->calls, 1);
    if (rc == 0 && r && (st = sluice_response_status(r)) >= 100 && st <= 599) {
        atomic_fetch_add(&t->status[st / 100], 1);
        return st;
    }
    if (rc < 0 && -rc < NCODES && !r && err->code == rc && err->msg[0]) {
        atomic_fetch_add(&t->code[-rc], 1);
        return rc;
    }
    bad(op, "neither a response nor a definite error", rc, err);
    return rc;
}

/* ---- operations ------------------------------------------------------- */

static void do_call(enum op op, sluice_client *c, const sluice_request *req, int want)
{
    sluice_response *r = NULL;
    sluice_error err;
    int got = file(op, sluice_client_do(c, req, &r, &err), &r, &err);

    if (want && got != want)
        bad(op, "unexpected outcome", got, &err);
    sluice_response_free(r);
}

static void op_get(unsigned *seed)
{
    static const char *const paths[] = {"/json", "/bytes/2000", "/chunked/5000", "/status/204"};
    static const int want[] = {200, 200, 200, 204};
    unsigned i = rand_r(seed) % 4;
    sluice_request req = {.path = paths[i], .flags = SLUICE_REQ_NO_COALESCE};

    do_call(OP_GET, S.main_c, &req, want[i]);
}

static void op_post(unsigned *seed)
{
    char body[600], want[48];
    size_t n = 1 + rand_r(seed) % (sizeof body - 1);
    sluice_request req = {.method = "POST", .path = "/echo", .body = body, .body_len = n};
    sluice_response *r = NULL;
    sluice_error err;
    const char *text;

    memset(body, 'p', n);
    snprintf(want, sizeof want, "\"body_len\":%zu", n);
    if (file(OP_POST, sluice_client_do(S.main_c, &req, &r, &err), &r, &err) != 200)
        bad(OP_POST, "POST /echo failed", err.code, &err);
    else if (!(text = sluice_response_body(r, NULL)) || !strstr(text, want))
        bad(OP_POST, "echo shows another body length", 0, NULL);
    sluice_response_free(r);
}

/* Four keys shared by all threads: most calls follow another's flight. */
static void op_coalesced(unsigned *seed)
{
    char path[48];
    sluice_request req = {.path = path};

    snprintf(path, sizeof path, "/delay/20?key=%u", rand_r(seed) % 4);
    do_call(OP_COALESCED, S.main_c, &req, 200);
}

/* A new key every 300 ms answers 500 five times, then 200: the breaker
 * opens, fails fast, probes and closes again, over and over. */
static void op_flaky(unsigned *seed)
{
    char path[160];
    sluice_request req = {.path = path};
    sluice_response *r = NULL;
    sluice_error err;
    int got;

    (void)seed;
    snprintf(path, sizeof path, "/flaky/%s-%lld?fail=5&status=500", S.prefix,
             (long long)(tu_now_ms() / 300));
    got = file(OP_FLAKY, sluice_client_do(S.flaky_c, &req, &r, &err), &r, &err);
    if (got != 200 && got != 500 && got != SLUICE_ECIRCUITOPEN)
        bad(OP_FLAKY, "unexpected outcome", got, &err);
    sluice_response_free(r);
}

/* 50/s with a burst of 10, failing fast: Redis allows some, denies most. */
static void op_limited(unsigned *seed)
{
    sluice_request req = {.path = "/json", .flags = SLUICE_REQ_NO_COALESCE};
    sluice_response *r = NULL;
    sluice_error err;
    int got;

    (void)seed;
    got = file(OP_LIMITED, sluice_client_do(S.limited_c, &req, &r, &err), &r, &err);
    if (got != 200 && got != SLUICE_ERATELIMITED)
        bad(OP_LIMITED, "unexpected outcome", got, &err);
    sluice_response_free(r);
}

/* Get-or-create from every thread: one client per key, always the same. */
static void op_lookup(unsigned *seed)
{
    unsigned i = rand_r(seed) % NSERVICES;
    char name[32];
    sluice_client *c, *expected = NULL;
    sluice_error err;

    snprintf(name, sizeof name, "stress-svc-%u", i);
    c = (rand_r(seed) % 2) ? sluice_factory_client(S.f, name, &S.svc_opts, &err)
                           : sluice_factory_client_lookup(S.f, name, NULL, &err);
    atomic_fetch_add(&S.t[OP_LOOKUP].calls, 1);
    if (!c) {
        /* A pure look-up may come before anyone created the client. */
        if (err.code != SLUICE_ENOTFOUND)
            bad(OP_LOOKUP, "look-up failed", err.code, &err);
        return;
    }
    if (!atomic_compare_exchange_strong(&S.first[i], &expected, c) && expected != c)
        bad(OP_LOOKUP, "two clients for one key", 0, NULL);
}

static void op_batch(unsigned *seed)
{
    static const char body[] = "batched";
    const sluice_request reqs[4] = {
        {.path = "/json"}, {.path = "/bytes/700", .flags = SLUICE_REQ_NO_COALESCE},
        {.method = "POST", .path = "/echo", .body = body, .body_len = sizeof body - 1},
        {.path = "/delay/5"}};
    sluice_response *outs[4];
    int codes[4], i, rc;

    (void)seed;
    rc = sluice_batch(S.ex, S.main_c, reqs, 4, 2, outs, codes);
    for (i = 0; i < 4; i++) {
        sluice_error err = {0};
        int got;
        err.code = codes[i];
        snprintf(err.msg, sizeof err.msg, "batch item %d", i);
        got = file(OP_BATCH, rc ? rc : codes[i], &outs[i], &err);
        if (got != 200)
            bad(OP_BATCH, "batch item failed", got, &err);
        sluice_response_free(outs[i]);
    }
}

static void op_submit(unsigned *seed)
{
    sluice_request req = {.path = "/bytes/100", .flags = SLUICE_REQ_NO_COALESCE};
    sluice_response *r = NULL;
    sluice_future *fu;
    sluice_error err;

    (void)seed;
    if (!(fu = sluice_submit(S.ex, S.main_c, &req, &err))) {
        atomic_fetch_add(&S.t[OP_SUBMIT].calls, 1);
        bad(OP_SUBMIT, "submit failed", err.code, &err);
        return;
    }
    if (file(OP_SUBMIT, sluice_future_wait(fu, -1, &r, &err), &r, &err) != 200)
        bad(OP_SUBMIT, "future failed", err.code, &err);
    sluice_response_free(r);
    sluice_future_free(fu);
}

static void (*const ops[NOPS])(unsigned *) = {op_get, op_post, op_coalesced, op_flaky,
                                              op_limited, op_lookup, op_batch, op_submit};

static enum op pick(unsigned *seed)
{
    int x = (int)(rand_r(seed) % 100), i;

    for (i = 0; i < NOPS; i++) {
        if (x < op_weights[i])
            return (enum op)i;
        x -= op_weights[i];
    }
    return OP_GET;
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;

    while (tu_now_ms() < S.end_ms)
        ops[pick(&seed)](&seed);
    return NULL;
}

/* ---- set-up ------------------------------------------------------------- */

static sluice_client *make_client(const char *service, void (*tune)(sluice_client_opts *))
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = S.base;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    /* Generous: 64 threads share 8 connections, under a sanitizer. */
    co.timeout_ms = 60000;
    co.read_timeout_ms = 30000;
    if (tune)
        tune(&co);
    c = sluice_factory_client(S.f, service, &co, &err);
    if (!c)
        fprintf(stderr, "\n  client %s: %s", service, err.msg);
    return c;
}

static void tune_main(sluice_client_opts *co)
{
    co->rate_limit.rate = 100000;     /* a Redis decision per attempt, never a denial */
    co->rate_limit.burst = 100000;
}

static void tune_flaky(sluice_client_opts *co)
{
    co->breaker.disabled = 0;
    co->breaker.failure_threshold = 3;
    co->breaker.recovery_timeout_ms = 50;
    co->breaker.half_open_probes = 1;
    co->disable_coalescing = 1;
}

static void tune_limited(sluice_client_opts *co)
{
    co->rate_limit.rate = 50;
    co->rate_limit.burst = 10;
    co->rate_limit.fail_fast = 1;
}

static int setup(void)
{
    sluice_factory_opts fo;
    sluice_error err;

    memset(&S, 0, sizeof S);
    snprintf(S.prefix, sizeof S.prefix, "stress-%d-%lld", (int)getpid(), (long long)time(NULL));
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_connections = POOL_MAX;      /* far fewer than the threads */
    fo.max_idle_per_host = 2;           /* the rest are closed on return */
    fo.keepalive_expiry_ms = 30;
    fo.max_lifetime_ms = 200;
    fo.pool_timeout_ms = 60000;
    fo.redis_url = tu_redis_url();
    fo.limiter_prefix = S.prefix;
    fo.limiter_fail_mode = SLUICE_FAIL_CLOSED;
    fo.redis_timeout_ms = 10000;
    if (!fo.redis_url || !tu_http_base())
        return -1;
    snprintf(S.base, sizeof S.base, "%s", tu_http_base());
    if (!(S.f = sluice_factory_new(&fo, &err))) {
        fprintf(stderr, "\n  factory: %s", err.msg);
        return -1;
    }
    S.main_c = make_client("stress-main", tune_main);
    S.flaky_c = make_client("stress-flaky", tune_flaky);
    S.limited_c = make_client("stress-limited", tune_limited);
    sluice_client_opts_init(&S.svc_opts);
    S.svc_opts.base_url = S.base;
    S.ex = sluice_executor_new(4, 256, &err);
    return S.main_c && S.flaky_c && S.limited_c && S.ex ? 0 : -1;
}

static void report(int threads, int seconds)
{
    long total = 0;
    int i, k;

    fprintf(stderr, "\n  %d threads for %d s:", threads, seconds);
    for (i = 0; i < NOPS; i++) {
        op_tally *t = &S.t[i];
        fprintf(stderr, "\n    %-12s %7ld calls:", op_names[i], atomic_load(&t->calls));
        for (k = 1; k < 6; k++)
            if (atomic_load(&t->status[k]))
                fprintf(stderr, " %ld %dxx", atomic_load(&t->status[k]), k);
        for (k = 1; k < NCODES; k++)
            if (atomic_load(&t->code[k]))
                fprintf(stderr, " %ld %s", atomic_load(&t->code[k]), sluice_err_name(-k));
        total += atomic_load(&t->calls);
    }
    fprintf(stderr, "\n    %ld calls in all\n", total);
}

/* Calls through sluice_client_do, and how many of them failed. */
static void client_calls(long *calls, long *errors)
{
    int i, k;

    *calls = *errors = 0;
    for (i = 0; i < NOPS; i++) {
        if (i == OP_LOOKUP)
            continue;
        *calls += atomic_load(&S.t[i].calls);
        for (k = 1; k < NCODES; k++)
            *errors += atomic_load(&S.t[i].code[k]);
    }
}

static void check_counters(void)
{
    struct sluice_factory_stats st;
    long calls, errors;
    int i;

    sluice_factory_stats(S.f, &st);
    client_calls(&calls, &errors);
    /* Every call is counted once, as a success or an error. */
    CU_ASSERT_EQUAL((long)st.requests, calls);
    CU_ASSERT_EQUAL((long)st.errors, errors);
    /* Each part was really exercised. */
    CU_ASSERT(st.coalesce_followers > 0);
    CU_ASSERT(st.breaker_transitions > 0);
    CU_ASSERT(st.limiter_shared == 1);
    CU_ASSERT(st.limiter.throttled > 0 && st.limiter.allowed > 0);
    CU_ASSERT(st.pool.peak_in_use <= POOL_MAX);
    CU_ASSERT(st.pool.closed[SLUICE_CLOSE_EXPIRED] + st.pool.closed[SLUICE_CLOSE_LIFETIME] +
              st.pool.closed[SLUICE_CLOSE_OVERFLOW] > 0);
    CU_ASSERT(atomic_load(&S.t[OP_FLAKY].code[-SLUICE_ECIRCUITOPEN]) > 0);
    for (i = 0; i < NOPS; i++) {
        CU_ASSERT(atomic_load(&S.t[i].calls) > 0);
        CU_ASSERT_EQUAL(atomic_load(&S.t[i].bad), 0);
    }
    fprintf(stderr, "  pool: %llu opened, %llu reused, peak %d in use, %llu expired, "
            "%llu retired, %llu overflow; %llu breaker transitions; %llu coalesced followers; "
            "limiter %llu allowed, %llu throttled in %llu round trips\n",
            (unsigned long long)st.pool.created, (unsigned long long)st.pool.reused,
            st.pool.peak_in_use, (unsigned long long)st.pool.closed[SLUICE_CLOSE_EXPIRED],
            (unsigned long long)st.pool.closed[SLUICE_CLOSE_LIFETIME],
            (unsigned long long)st.pool.closed[SLUICE_CLOSE_OVERFLOW],
            (unsigned long long)st.breaker_transitions,
            (unsigned long long)st.coalesce_followers, (unsigned long long)st.limiter.allowed,
            (unsigned long long)st.limiter.throttled, (unsigned long long)st.limiter.round_trips);
}

static void test_stress_mixed_64_threads(void)
{
    int threads = env_int("SLUICE_STRESS_THREADS", 64, 1, MAX_THREADS);
    int seconds = env_int("SLUICE_STRESS_SECONDS", 3, 1, 3600);
    int fds = tu_fd_count(), started = 0, stuck = 0, i;
    pthread_t th[MAX_THREADS];
    struct timespec bound;

    if (setup() != 0) {
        CU_FAIL("stress set-up failed");
        sluice_executor_free(S.ex);
        sluice_factory_free(S.f);
        return;
    }
    S.end_ms = tu_now_ms() + seconds * 1000;
    for (i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1)) == 0)
            started++;
    CU_ASSERT_EQUAL(started, threads);
    /* A call in flight at the end finishes within its own timeouts. */
    clock_gettime(CLOCK_REALTIME, &bound);
    bound.tv_sec += seconds + 90;
    for (i = 0; i < started; i++)
        stuck += pthread_timedjoin_np(th[i], NULL, &bound) != 0;
    report(threads, seconds);
    CU_ASSERT_EQUAL_FATAL(stuck, 0);
    check_counters();
    sluice_executor_free(S.ex);
    sluice_factory_free(S.f);
    CU_ASSERT_EQUAL(tu_fd_count(), fds);
}

static CU_TestInfo tests[] = {
    {"test_stress_mixed_64_threads", test_stress_mixed_64_threads},
    CU_TEST_INFO_NULL,
};

void suite_stress(void);
void suite_stress(void)
{
    tu_add_suite("stress", tests);
}
