/* Allocation-failure injection over the whole request path: every
 * operation runs with allocation 1 failing, then allocation 2, ... (once,
 * then again with every later allocation failing too) until it completes
 * without reaching the failing allocation.  Each run must end in success
 * or SLUICE_ENOMEM (or an error listed for that operation), never crash,
 * and leave no allocation and no file descriptor behind.
 *
 * Slow (thousands of requests), so the suite registers itself only with
 * SLUICE_TORTURE=1: `make torture` runs it under ASan/LSan. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define MAX_RUNS 20000          /* no operation here needs more allocations */
#define PATTERN(i) ((unsigned char)(((i) * 31 + 7) & 0xff))

/* One operation: builds what it needs, runs, frees everything.  Returns 0
 * when it ran to completion with the expected results, else the code. */
typedef int (*op_fn)(void *ctx, sluice_error *err);

typedef struct tally {
    long runs, ok, enomem, other;
} tally;

static int pattern_ok(const sluice_response *r, size_t want)
{
    size_t len, i;
    const unsigned char *p = sluice_response_body(r, &len);

    if (len != want)
        return 0;
    for (i = 0; i < len; i++)
        if (p[i] != PATTERN(i))
            return 0;
    return 1;
}

/* A completed call whose answer is wrong is a bug, not an allocation
 * failure: it is reported as SLUICE_EPROTO so the loop flags it. */
static int expect_status(int rc, sluice_response **rp, int status, sluice_error *err)
{
    const sluice_response *r = *rp;

    if (rc == 0 && sluice_response_status(r) != status) {
        snprintf(err->msg, sizeof err->msg, "status %d, wanted %d", sluice_response_status(r),
                 status);
        rc = err->code = SLUICE_EPROTO;
    }
    return rc;
}

static int code_allowed(int rc, const int *also)
{
    if (rc == 0 || rc == SLUICE_ENOMEM)
        return 1;
    for (; also && *also; also++)
        if (rc == *also)
            return 1;
    return 0;
}

/* The loop itself.  `also` lists codes other than ENOMEM that a failed
 * allocation may fairly cause in this operation (0-terminated). */
static void torture(const char *name, op_fn op, void *ctx, int sticky, const int *also)
{
    sluice_error err;
    tally t = {0};
    long n, attempted = 0, live;
    int fds, rc, done = 0;

    /* Warm up with the plain allocator: process-wide state (wolfSSL, the
     * TLS thread-exit key, the log level) exists before counting starts. */
    memset(&err, 0, sizeof err);
    rc = op(ctx, &err);
    if (rc != 0)
        fprintf(stderr, "\n  %s: warm-up failed: %s (%s)\n", name, sluice_err_name(rc), err.msg);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    fds = tu_fd_count();
    for (n = 1; !done && n <= MAX_RUNS; n++) {
        memset(&err, 0, sizeof err);
        tu_alloc_install(n, sticky);
        rc = op(ctx, &err);
        attempted = tu_alloc_count();
        live = tu_alloc_outstanding();
        tu_alloc_uninstall();
        t.runs++;
        done = rc == 0 && attempted < n;
        t.ok += rc == 0;
        t.enomem += rc == SLUICE_ENOMEM;
        t.other += rc != 0 && rc != SLUICE_ENOMEM;
        if (!code_allowed(rc, also) || (rc && (err.code != rc || !err.msg[0])) || live != 0 ||
            tu_fd_count() != fds) {
            fprintf(stderr, "\n  %s (sticky %d) failing allocation %ld: %s \"%s\" (err.code %s), "
                    "%ld allocations live, %d fds (baseline %d)\n",
                    name, sticky, n, sluice_err_name(rc), err.msg, sluice_err_name(err.code),
                    live, tu_fd_count(), fds);
            CU_FAIL("allocation failure mishandled");
            return;
        }
    }
    CU_ASSERT(done);
    fprintf(stderr, "\n  %s (sticky %d): %ld runs, %ld allocations when it completes; "
            "%ld ok, %ld ENOMEM, %ld other", name, sticky, t.runs, attempted, t.ok, t.enomem,
            t.other);
}

static void torture_both(const char *name, op_fn op, void *ctx, const int *also)
{
    torture(name, op, ctx, 0, also);
    torture(name, op, ctx, 1, also);
}

/* ---- building blocks -------------------------------------------------- */

struct target {
    const char *base;           /* the upstream */
    const char *ca_file;        /* for HTTPS */
    const char *redis_url;      /* a shared limiter when set */
};

static sluice_factory *make_factory(const struct target *t, sluice_error *err)
{
    sluice_factory_opts fo;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = t->ca_file;
    fo.redis_url = t->redis_url;
    fo.limiter_prefix = "sluice-torture";
    fo.limiter_fail_mode = SLUICE_FAIL_CLOSED;
    fo.redis_timeout_ms = 2000;
    return sluice_factory_new(&fo, err);
}

/* A client with one attempt per call; rate-limited when the target has a
 * Redis limiter. */
static sluice_client *make_client(sluice_factory *f, const struct target *t, sluice_error *err)
{
    sluice_header h[] = {{"X-Torture", "1"}};
    sluice_client_opts co;

    sluice_client_opts_init(&co);
    co.base_url = t->base;
    co.headers = h;
    co.nheaders = 1;
    co.read_timeout_ms = 5000;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    if (t->redis_url) {
        co.rate_limit.rate = 100000;
        co.rate_limit.burst = 100000;
    }
    return sluice_factory_client(f, "torture", &co, err);
}

/* Factory and client, or the failure's code with err set. */
static int setup(const struct target *t, sluice_factory **f, sluice_client **c, sluice_error *err)
{
    *c = NULL;
    if (!(*f = make_factory(t, err)))
        return err->code;
    if (!(*c = make_client(*f, t, err))) {
        sluice_factory_free(*f);
        *f = NULL;
        return err->code;
    }
    return 0;
}

static int get_json(sluice_client *c, sluice_error *err)
{
    sluice_response *r = NULL;
    int rc = sluice_get(c, "/json", &r, err);

    rc = expect_status(rc, &r, 200, err);

    sluice_response_free(r);
    return rc;
}

/* POST with a query, a header and a body; the answer is chunked. */
static int post_chunked(sluice_client *c, size_t n, sluice_error *err)
{
    static char body[3000];
    sluice_header q[] = {{"a", "1 2"}, {"b", "x&y"}}, h[] = {{"Content-Type", "text/plain"}};
    sluice_request req = {0};
    sluice_response *r = NULL;
    char path[32];
    int rc;

    memset(body, 'b', sizeof body);
    snprintf(path, sizeof path, "/chunked/%zu", n);
    req.method = "POST";
    req.path = path;
    req.query = q;
    req.nquery = 2;
    req.headers = h;
    req.nheaders = 1;
    req.body = body;
    req.body_len = sizeof body;
    rc = sluice_client_do(c, &req, &r, err);
    rc = expect_status(rc, &r, 200, err);
    if (rc == 0 && !pattern_ok(r, n)) {
        snprintf(err->msg, sizeof err->msg, "chunked body differs");
        rc = err->code = SLUICE_EPROTO;
    }
    sluice_response_free(r);
    return rc;
}

/* ---- operations ----------------------------------------------------- */

static int op_factory_client(void *ctx, sluice_error *err)
{
    const struct target *t = ctx;
    sluice_factory *f;
    sluice_client *c;
    int rc = setup(t, &f, &c, err);

    if (rc)
        return rc;
    /* The same key again, and a look-up, give the same client. */
    if (make_client(f, t, err) != c || sluice_factory_client(f, "torture", NULL, err) != c)
        rc = err->code ? err->code : SLUICE_EPROTO;
    sluice_factory_free(f);
    return rc;
}

static int op_get(void *ctx, sluice_error *err)
{
    sluice_factory *f;
    sluice_client *c;
    int rc = setup(ctx, &f, &c, err);

    if (rc == 0)
        rc = get_json(c, err);
    sluice_factory_free(f);
    return rc;
}

static int op_post_chunked(void *ctx, sluice_error *err)
{
    sluice_factory *f;
    sluice_client *c;
    int rc = setup(ctx, &f, &c, err);

    if (rc == 0)
        rc = post_chunked(c, 70000, err);
    sluice_factory_free(f);
    return rc;
}

static int get_path(sluice_client *c, const char *path, sluice_error *err)
{
    sluice_response *r = NULL;
    int rc = sluice_get(c, path, &r, err);

    rc = expect_status(rc, &r, 200, err);
    sluice_response_free(r);
    return rc;
}

/* A fresh connection (full handshake), a reused one, then one the server
 * closes and a new connection that resumes the session. */
static int op_https(void *ctx, sluice_error *err)
{
    sluice_factory *f;
    sluice_client *c;
    int rc = setup(ctx, &f, &c, err);

    if (rc == 0 && (rc = get_json(c, err)) == 0 && (rc = post_chunked(c, 5000, err)) == 0 &&
        (rc = get_path(c, "/close", err)) == 0)
        rc = get_json(c, err);
    sluice_factory_free(f);
    return rc;
}

/* Warm-up, the micro-cache, stats and both metrics exports (which cannot
 * report a failure, so only crashes and leaks count there). */
static int op_misc(void *ctx, sluice_error *err)
{
    const struct target *t = ctx;
    struct sluice_factory_stats st;
    sluice_client_opts co;
    sluice_factory *f;
    sluice_client *c;
    char *buf;
    size_t n;
    int rc, i;

    if (!(f = make_factory(t, err)))
        return err->code;
    sluice_client_opts_init(&co);
    co.base_url = t->base;
    co.coalesce_window_ms = 60000;
    co.retry.max_retries = SLUICE_OFF;
    if (!(c = sluice_factory_client(f, "torture-misc", &co, err))) {
        sluice_factory_free(f);
        return err->code;
    }
    rc = sluice_client_warmup(c, 2, err);
    rc = rc < 0 ? rc : 0;
    for (i = 0; rc == 0 && i < 2; i++)
        rc = get_path(c, "/count/torture-misc", err);
    sluice_factory_stats(f, &st);
    for (i = 0; i < 2; i++) {
        n = sluice_factory_metrics(f, i ? SLUICE_METRICS_JSON : SLUICE_METRICS_PROMETHEUS, NULL, 0);
        if ((buf = malloc(n + 1))) {
            sluice_factory_metrics(f, i ? SLUICE_METRICS_JSON : SLUICE_METRICS_PROMETHEUS, buf,
                                   n + 1);
            free(buf);
        }
    }
    sluice_factory_free(f);
    return rc;
}

/* Concurrent identical GETs: one flight, the others follow it. */
#define FOLLOWERS 3

struct co_call {
    sluice_client *c;
    int rc;
    sluice_error err;
};

static void *co_main(void *arg)
{
    struct co_call *k = arg;
    sluice_response *r = NULL;

    k->rc = sluice_get(k->c, "/delay/100?torture=coalesce", &r, &k->err);
    k->rc = expect_status(k->rc, &r, 200, &k->err);
    sluice_response_free(r);
    return NULL;
}

static int op_coalesced(void *ctx, sluice_error *err)
{
    struct co_call k[FOLLOWERS + 1];
    pthread_t th[FOLLOWERS + 1];
    sluice_factory *f;
    sluice_client *c;
    int rc = setup(ctx, &f, &c, err), i, started = 0;

    if (rc)
        return rc;
    for (i = 0; i <= FOLLOWERS; i++) {
        memset(&k[i], 0, sizeof k[i]);
        k[i].c = c;
        if (pthread_create(&th[i], NULL, co_main, &k[i]) != 0)
            break;
        started++;
    }
    for (i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        if (k[i].rc && !rc) {
            rc = k[i].rc;
            *err = k[i].err;
        }
    }
    sluice_factory_free(f);
    return started == FOLLOWERS + 1 ? rc : SLUICE_EPROTO;
}

/* One request through sluice_submit and its future. */
static int submit_one(sluice_executor *ex, sluice_client *c, sluice_error *err)
{
    sluice_request req = {.path = "/bytes/300"};
    sluice_response *r = NULL;
    sluice_future *fu = sluice_submit(ex, c, &req, err);
    int rc;

    if (!fu)
        return err->code;
    rc = sluice_future_wait(fu, -1, &r, err);
    rc = expect_status(rc, &r, 200, err);
    sluice_response_free(r);
    sluice_future_free(fu);
    return rc;
}

static int op_batch(void *ctx, sluice_error *err)
{
    static const char body[] = "batch body";
    sluice_request reqs[4] = {{.path = "/json"},
                              {.method = "POST", .path = "/echo", .body = body,
                               .body_len = sizeof body - 1},
                              {.path = "/chunked/9000"},
                              {.path = "/bytes/100"}};
    sluice_response *outs[4];
    int codes[4], rc, i;
    sluice_executor *ex;
    sluice_factory *f;
    sluice_client *c;

    if ((rc = setup(ctx, &f, &c, err)))
        return rc;
    if (!(ex = sluice_executor_new(2, 8, err))) {
        sluice_factory_free(f);
        return err->code;
    }
    if ((rc = submit_one(ex, c, err))) {
        sluice_executor_free(ex);
        sluice_factory_free(f);
        return rc;
    }
    rc = sluice_batch(ex, c, reqs, 4, 2, outs, codes);
    for (i = 0; i < 4; i++) {
        if (rc == 0 && codes[i]) {
            rc = codes[i];
            snprintf(err->msg, sizeof err->msg, "batch item %d: %s", i, sluice_strerror(rc));
        } else if (rc == 0 && sluice_response_status(outs[i]) != 200) {
            rc = SLUICE_EPROTO;
            snprintf(err->msg, sizeof err->msg, "batch item %d: status %d", i,
                     sluice_response_status(outs[i]));
        }
        sluice_response_free(outs[i]);
    }
    err->code = rc;
    if (rc && !err->msg[0])
        snprintf(err->msg, sizeof err->msg, "batch: %s", sluice_strerror(rc));
    sluice_executor_free(ex);
    sluice_factory_free(f);
    return rc;
}

/* Retries, the breaker and redirects: a key that fails once, then a
 * chain of redirects, on a client with all three on. */
static int op_resilience(void *ctx, sluice_error *err)
{
    static unsigned run;
    const struct target *t = ctx;
    sluice_client_opts co;
    sluice_response *r = NULL;
    sluice_factory *f;
    sluice_client *c;
    char path[64];
    int rc;

    if (!(f = make_factory(t, err)))
        return err->code;
    sluice_client_opts_init(&co);
    co.base_url = t->base;
    co.retry.max_retries = 2;
    co.retry.backoff_factor_ms = 1;
    co.follow_redirects = 1;
    if (!(c = sluice_factory_client(f, "torture-resilience", &co, err))) {
        sluice_factory_free(f);
        return err->code;
    }
    /* A fresh key each run, so the first attempt fails every time. */
    snprintf(path, sizeof path, "/flaky/torture-%u-%u?fail=1", (unsigned)getpid(), run++);
    rc = sluice_get(c, path, &r, err);
    if ((rc = expect_status(rc, &r, 200, err)) == 0 && sluice_response_attempts(r) != 2) {
        snprintf(err->msg, sizeof err->msg, "%d attempts, wanted 2", sluice_response_attempts(r));
        rc = err->code = SLUICE_EPROTO;
    }
    sluice_response_free(r);
    r = NULL;
    if (rc == 0) {
        rc = sluice_get(c, "/redirect/2", &r, err);
        rc = expect_status(rc, &r, 200, err);
        sluice_response_free(r);
    }
    sluice_factory_free(f);
    return rc;
}

/* ---- tests ------------------------------------------------------------ */

static void test_torture_factory_and_client(void)
{
    struct target t = {tu_http_base(), NULL, NULL};

    TU_REQUIRE(t.base);
    torture_both("factory+client", op_factory_client, &t, NULL);
}

static void test_torture_get(void)
{
    struct target t = {tu_http_base(), NULL, NULL};

    TU_REQUIRE(t.base);
    torture_both("GET", op_get, &t, NULL);
}

static void test_torture_post_chunked_response(void)
{
    struct target t = {tu_http_base(), NULL, NULL};

    TU_REQUIRE(t.base);
    torture_both("POST, chunked answer", op_post_chunked, &t, NULL);
}

static void test_torture_https(void)
{
    const char *dir = getenv("SLUICE_TEST_CERTS");
    char crt[320], key[320], ca[320], base[64];
    const char *args[] = {"--tls-cert", crt, "--tls-key", key, NULL};
    struct target t = {base, ca, NULL};
    tu_server s;

    if (!dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run through tests/run.sh");
        return;
    }
    snprintf(crt, sizeof crt, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    if (tu_mockapi_start(&s, args) != 0)
        return;
    snprintf(base, sizeof base, "https://localhost:%d", s.port);
    torture_both("HTTPS", op_https, &t, NULL);
    tu_server_stop(&s);
}

static void test_torture_redis_limiter(void)
{
    struct target t = {tu_http_base(), NULL, tu_redis_url()};

    TU_REQUIRE(t.base && t.redis_url);
    torture_both("Redis limiter", op_get, &t, NULL);
}

static void test_torture_coalesced(void)
{
    struct target t = {tu_http_base(), NULL, NULL};

    TU_REQUIRE(t.base);
    torture_both("coalesced", op_coalesced, &t, NULL);
}

static void test_torture_executor_batch(void)
{
    struct target t = {tu_http_base(), NULL, NULL};

    TU_REQUIRE(t.base);
    torture_both("executor batch", op_batch, &t, NULL);
}

static void test_torture_retry_breaker_redirect(void)
{
    struct target t = {tu_http_base(), NULL, NULL};

    TU_REQUIRE(t.base);
    torture_both("retry, breaker, redirect", op_resilience, &t, NULL);
}

static void test_torture_warmup_cache_metrics(void)
{
    struct target t = {tu_http_base(), NULL, NULL};

    TU_REQUIRE(t.base);
    torture_both("warm-up, micro-cache, metrics", op_misc, &t, NULL);
}

static CU_TestInfo tests[] = {
    {"test_torture_factory_and_client", test_torture_factory_and_client},
    {"test_torture_get", test_torture_get},
    {"test_torture_post_chunked_response", test_torture_post_chunked_response},
    {"test_torture_https", test_torture_https},
    {"test_torture_redis_limiter", test_torture_redis_limiter},
    {"test_torture_coalesced", test_torture_coalesced},
    {"test_torture_executor_batch", test_torture_executor_batch},
    {"test_torture_retry_breaker_redirect", test_torture_retry_breaker_redirect},
    {"test_torture_warmup_cache_metrics", test_torture_warmup_cache_metrics},
    CU_TEST_INFO_NULL,
};

void suite_torture(void);
void suite_torture(void)
{
    const char *on = getenv("SLUICE_TORTURE");

    /* Minutes under ASan: only `make torture` asks for it. */
    if (on && strcmp(on, "1") == 0)
        tu_add_suite("torture", tests);
}
