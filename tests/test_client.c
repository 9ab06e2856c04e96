/* The request path end to end against sluice-mockapi: keep-alive reuse,
 * pool limits and expiry, framing, rejections, timeouts, and many threads. */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

static sluice_factory *factory_with(int max_conn, int expiry_ms, int lifetime_ms, int pool_timeout_ms)
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    if (max_conn)
        fo.max_connections = max_conn;
    if (expiry_ms)
        fo.keepalive_expiry_ms = expiry_ms;
    fo.max_lifetime_ms = lifetime_ms;
    if (pool_timeout_ms)
        fo.pool_timeout_ms = pool_timeout_ms;
    f = sluice_factory_new(&fo, &err);
    if (!f)
        fprintf(stderr, "factory: %s\n", err.msg);
    return f;
}

static sluice_client *client_for(sluice_factory *f, const char *service, const char *base)
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    if (!base)
        return NULL;
    sluice_client_opts_init(&co);
    co.base_url = base;
    co.read_timeout_ms = 3000;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    c = sluice_factory_client(f, service, &co, &err);
    if (!c)
        fprintf(stderr, "client: %s\n", err.msg);
    return c;
}

/* GET path and return the status, or the error code. */
static int get_status(sluice_client *c, const char *path, sluice_error *err)
{
    sluice_response *r = NULL;
    int rc = sluice_get(c, path, &r, err);

    if (rc == 0) {
        rc = sluice_response_status(r);
        sluice_response_free(r);
    }
    return rc;
}

static int pattern_ok(const unsigned char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (p[i] != (unsigned char)((i * 31 + 7) & 0xff))
            return 0;
    return 1;
}


static void test_client_sequential_reuse_one_connection(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "seq", tu_http_base());
    struct sluice_factory_stats st;
    sluice_error err;
    int i, ok = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 1000; i++)
        ok += get_status(c, "/json", &err) == 200;
    CU_ASSERT_EQUAL(ok, 1000);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 1);
    CU_ASSERT_EQUAL(st.pool.reused, 999);
    CU_ASSERT_EQUAL(st.requests, 1000);
    sluice_factory_free(f);
}

static void test_client_response_accessors(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "acc", tu_http_base());
    sluice_response *r = NULL;
    sluice_error err;
    size_t len;
    const char *body;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/json", &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_STRING_EQUAL(sluice_response_header(r, "content-TYPE"), "application/json");
    CU_ASSERT_PTR_NULL(sluice_response_header(r, "X-Not-There"));
    CU_ASSERT(sluice_response_header_count(r) >= 2);
    CU_ASSERT_PTR_NOT_NULL(sluice_response_header_at(r, 0));
    CU_ASSERT_PTR_NULL(sluice_response_header_at(r, 1000));
    body = sluice_response_body(r, &len);
    CU_ASSERT(len > 0 && body[0] == '{' && body[len] == '\0');
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 1);
    sluice_response_free(r);
    sluice_response_free(NULL);
    sluice_factory_free(f);
}

static void test_client_bodies_byte_exact(void)
{
    static const size_t sizes[] = {0, 1, 4095, 65537, 1 << 20, 16 << 20};
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "bytes", tu_http_base());
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const char *kinds[] = {"bytes", "chunked"};
        int k;
        for (k = 0; k < 2; k++) {
            char path[64];
            sluice_response *r = NULL;
            sluice_error err;
            size_t len;
            const void *body;

            snprintf(path, sizeof path, "/%s/%zu", kinds[k], sizes[i]);
            CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
            body = sluice_response_body(r, &len);
            CU_ASSERT_EQUAL(len, sizes[i]);
            CU_ASSERT(pattern_ok(body, len));
            sluice_response_free(r);
        }
    }
    sluice_factory_free(f);
}

static void test_client_post_echo_byte_exact(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "post", tu_http_base());
    sluice_header h[] = {{"Content-Type", "application/octet-stream"}};
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    unsigned char body[70000];
    size_t i, len;
    const void *got;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)(i * 7 + 3);
    req.method = "POST";
    req.path = "/echo?raw=1";
    req.headers = h;
    req.nheaders = 1;
    req.body = body;
    req.body_len = sizeof body;
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    got = sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, sizeof body);
    CU_ASSERT(len == sizeof body && memcmp(got, body, len) == 0);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void test_client_no_body_statuses(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "nobody", tu_http_base());
    sluice_request req = {0};
    sluice_response *r = NULL;
    struct sluice_factory_stats st;
    sluice_error err;
    size_t len;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    req.method = "HEAD";
    req.path = "/bytes/1000";
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_STRING_EQUAL(sluice_response_header(r, "Content-Length"), "1000");
    sluice_response_free(r);
    CU_ASSERT_EQUAL(get_status(c, "/status/204", &err), 204);
    CU_ASSERT_EQUAL(get_status(c, "/status/304", &err), 304);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    /* All on one connection: none of them had a body to misread. */
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 1);
    sluice_factory_free(f);
}

static void test_client_connection_close_not_reused(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "close", tu_http_base());
    struct sluice_factory_stats st;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/close", &err), 200);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 2);
    CU_ASSERT_EQUAL(st.pool.closed[SLUICE_CLOSE_BROKEN], 1);
    sluice_factory_free(f);
}

static void test_client_rejects_bad_responses(void)
{
    static const char *bad[] = {"/raw/cl-te", "/raw/dup-cl", "/raw/bad-chunk", "/raw/fold",
                                "/raw/te-gzip", "/raw/bad-status", "/raw/lf-only", "/raw/neg-cl",
                                "/raw/big-cl", "/raw/nul-header", "/raw/space-before-colon",
                                "/bigheader/70000"};
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "bad", tu_http_base());
    sluice_error err;
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = get_status(c, bad[i], &err);
        if (rc != SLUICE_EPROTO)
            fprintf(stderr, "\n  %s gave %d (%s)\n", bad[i], rc, err.msg);
        CU_ASSERT_EQUAL(rc, SLUICE_EPROTO);
        CU_ASSERT(strlen(err.msg) > 0);
    }
    /* Accepted odd shapes: equal duplicate lengths, interim 100, body to close. */
    CU_ASSERT_EQUAL(get_status(c, "/raw/same-cl", &err), 200);
    CU_ASSERT_EQUAL(get_status(c, "/raw/continue", &err), 200);
    CU_ASSERT_EQUAL(get_status(c, "/raw/no-length", &err), 200);
    CU_ASSERT_EQUAL(get_status(c, "/raw/http10", &err), 200);
    sluice_factory_free(f);
}

static void test_client_response_too_big(void)
{
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_response_bytes = 1000;
    f = sluice_factory_new(&fo, &err);
    c = client_for(f, "big", tu_http_base());
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/bytes/1000", &err), 200);
    CU_ASSERT_EQUAL(get_status(c, "/bytes/1001", &err), SLUICE_ETOOBIG);
    CU_ASSERT_EQUAL(get_status(c, "/chunked/5000", &err), SLUICE_ETOOBIG);
    sluice_factory_free(f);
}

static void test_client_rejects_bad_input(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "input", tu_http_base());
    sluice_client_opts co;
    sluice_header crlf[] = {{"X-Evil", "a\r\nInjected: 1"}};
    sluice_header badname[] = {{"X Evil", "a"}};
    sluice_header cl[] = {{"Content-Length", "5"}};
    sluice_request req = {0};
    sluice_response *r = (sluice_response *)&req;   /* must be reset to NULL */
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/json\r\nX: y", &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "path"));
    CU_ASSERT_EQUAL(get_status(c, "/js on", &err), SLUICE_EINVAL);
    req.path = "/json";
    req.headers = crlf;
    req.nheaders = 1;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(r);
    req.headers = badname;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EINVAL);
    req.headers = cl;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EINVAL);
    /* nheaders with a NULL array is a caller's bug, not "no headers". */
    req.headers = NULL;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "nheaders"));
    req.nheaders = 0;
    req.method = "GE T";
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_client_do(NULL, &req, &r, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_client_do(c, NULL, &r, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, NULL, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_get(NULL, "/", &r, NULL), SLUICE_EINVAL);
    /* Malformed base URLs are refused when the client is made. */
    sluice_client_opts_init(&co);
    co.base_url = "http://exa mple.com/";
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "bad-url", &co, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    co.base_url = "ftp://example.com/";
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "bad-scheme", &co, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    co.base_url = NULL;
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "no-url", &co, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    sluice_factory_free(f);
}

static void test_client_connect_refused(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    char base[64];
    sluice_client *c;
    sluice_error err;

    snprintf(base, sizeof base, "http://127.0.0.1:%d", tu_free_port());
    c = client_for(f, "refused", base);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), SLUICE_ECONNECT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "127.0.0.1"));
    sluice_factory_free(f);
}

/* The test's own DNS server answers NXDOMAIN: no system resolver asked. */
static void test_client_unresolvable_name(void)
{
    tu_dns *dns = tu_dns_start(TU_DNS_NXDOMAIN);
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;

    TU_REQUIRE(dns);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.dns_servers = tu_dns_servers(dns);
    f = sluice_factory_new(&fo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client_for(f, "nxdomain", "http://no-such-host.invalid/");
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), SLUICE_ERESOLVE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no-such-host.invalid"));
    CU_ASSERT_EQUAL(tu_dns_queries(dns, "no-such-host.invalid"), 1);
    sluice_factory_free(f);
    tu_dns_stop(dns);
}

static void test_client_stall_times_out(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client_opts co;
    sluice_client *c;
    sluice_error err;
    int64_t t0, took;

    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    CU_ASSERT_PTR_NOT_NULL_FATAL(co.base_url);
    co.read_timeout_ms = 300;
    co.retry.max_retries = SLUICE_OFF;
    c = sluice_factory_client(f, "stall", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(get_status(c, "/stall", &err), SLUICE_ETIMEDOUT);
    took = tu_now_ms() - t0;
    /* The timeout is the contract: never sooner; /stall would hold forever. */
    CU_ASSERT(took >= 290 && took <= 300 + 1000);
    /* The whole-call deadline also bounds a slow drip (5 s in all). */
    {
        sluice_request req = {0};
        sluice_response *r = NULL;
        req.path = "/drip?bytes=50&interval_ms=100";
        req.timeout_ms = 500;
        t0 = tu_now_ms();
        CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ETIMEDOUT);
        took = tu_now_ms() - t0;
        CU_ASSERT(took >= 490 && took <= 500 + 1000);
    }
    sluice_factory_free(f);
}

static void test_client_reset_not_reused(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "reset", tu_http_base());
    struct sluice_factory_stats st;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/reset", &err), SLUICE_EIO);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 2);
    CU_ASSERT_EQUAL(st.pool.reused, 0);
    sluice_factory_free(f);
}

static int idle_one_expired(void *f)
{
    struct sluice_factory_stats st;

    sluice_factory_stats(f, &st);
    return st.pool.closed[SLUICE_CLOSE_EXPIRED] >= 1;
}

static void test_client_idle_expiry_and_lifetime(void)
{
    sluice_factory *f = factory_with(0, 300, 0, 0);
    sluice_client *c = client_for(f, "expiry", tu_http_base());
    struct sluice_factory_stats st;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    /* Nothing else happens: housekeeping alone closes it. */
    CU_ASSERT(tu_wait_until(idle_one_expired, f, 10000));
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.open, 0);
    CU_ASSERT_EQUAL(st.pool.closed[SLUICE_CLOSE_EXPIRED], 1);
    sluice_factory_free(f);

    f = factory_with(0, 0, 300, 0);
    c = client_for(f, "lifetime", tu_http_base());
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    usleep(400 * 1000);   /* past the 300 ms lifetime: the time is the point */
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 2);
    CU_ASSERT_EQUAL(st.pool.closed[SLUICE_CLOSE_LIFETIME], 1);
    sluice_factory_free(f);
}

static void test_client_server_idle_close_is_survived(void)
{
    const char *args[] = {"--idle-timeout", "150", NULL};
    sluice_factory *f = factory_with(0, 60000, 0, 0);
    struct sluice_factory_stats st;
    sluice_client *c;
    sluice_error err;
    tu_server s;

    if (tu_mockapi_start(&s, args) != 0) {
        sluice_factory_free(f);
        return;
    }
    c = client_for(f, "server-idle", s.url);
    CU_ASSERT_PTR_NOT_NULL(c);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    /* The server closes its side after 150 ms idle. */
    CU_ASSERT(tu_wait_until(tu_mock_idle, s.addr, 10000));
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 2);
    CU_ASSERT_EQUAL(st.pool.closed[SLUICE_CLOSE_STALE] + st.pool.closed[SLUICE_CLOSE_BROKEN], 1);
    CU_ASSERT_EQUAL(st.errors, 0);
    sluice_factory_free(f);
    tu_server_stop(&s);
}

struct hammer {
    sluice_client *c;
    const char *path;
    int n;
    int ok;
    int first_error;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    sluice_error err;
    char path[128];
    int i;

    /* A query of its own per thread keeps identical requests from
     * coalescing: these tests are about the pool. */
    snprintf(path, sizeof path, "%s?t=%p", h->path, (void *)h);
    for (i = 0; i < h->n; i++) {
        int rc = get_status(h->c, path, &err);
        if (rc == 200)
            h->ok++;
        else if (!h->first_error)
            h->first_error = rc;
    }
    return NULL;
}

static int hammer(sluice_client *c, const char *path, int threads, int n)
{
    pthread_t t[64];
    struct hammer h[64];
    int i, ok = 0;

    for (i = 0; i < threads; i++) {
        h[i] = (struct hammer){c, path, n, 0, 0};
        pthread_create(&t[i], NULL, hammer_thread, &h[i]);
    }
    for (i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        ok += h[i].ok;
        if (h[i].first_error)
            fprintf(stderr, "\n  thread %d: first error %s\n", i, sluice_err_name(h[i].first_error));
    }
    return ok;
}

static void test_client_max_connections_holds(void)
{
    sluice_factory *f = factory_with(4, 0, 0, 10000);
    sluice_client *c = client_for(f, "limit", tu_http_base());
    struct sluice_factory_stats st;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(hammer(c, "/delay/5", 32, 10), 320);
    sluice_factory_stats(f, &st);
    CU_ASSERT(st.pool.peak_in_use <= 4);
    CU_ASSERT(st.pool.created <= 4);
    CU_ASSERT(st.pool.wait_us_total > 0);
    sluice_factory_free(f);
}

struct slow_arg {
    sluice_client *c;
    int rc;
};

static void *slow_get(void *arg)
{
    struct slow_arg *a = arg;
    sluice_error err;

    a->rc = get_status(a->c, "/delay/800", &err);
    return NULL;
}

static int one_in_use(void *f)
{
    struct sluice_factory_stats st;

    sluice_factory_stats(f, &st);
    return st.pool.in_use >= 1;
}

static void test_client_pool_timeout(void)
{
    sluice_factory *f = factory_with(1, 0, 0, 150);
    sluice_client *c = client_for(f, "pool-timeout", tu_http_base());
    struct sluice_factory_stats st;
    struct slow_arg a;
    pthread_t t;
    sluice_error err;
    int64_t t0, took;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    a.c = c;
    pthread_create(&t, NULL, slow_get, &a);
    CU_ASSERT_FATAL(tu_wait_until(one_in_use, f, 10000));
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), SLUICE_EPOOLTIMEOUT);
    took = tu_now_ms() - t0;
    /* pool_timeout_ms 150 is the contract; the slot stays held 800 ms. */
    CU_ASSERT(took >= 140 && took <= 150 + 600);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(a.rc, 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.timeouts, 1);
    sluice_factory_free(f);
}

static void test_client_many_threads_no_fd_growth(void)
{
    int baseline = tu_fd_count(), during, n = getenv("SLUICE_TEST_SHORT") ? 100 : 500;
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "many", tu_http_base());
    struct sluice_factory_stats st;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(hammer(c, "/json", 64, n), 64 * n);
    /* Open descriptors are the pool's connections and nothing else. */
    sluice_factory_stats(f, &st);
    during = tu_fd_count();
    CU_ASSERT_EQUAL(during - baseline, st.pool.open);
    CU_ASSERT(st.pool.open <= 20);   /* max_idle_per_host */
    sluice_factory_free(f);
    CU_ASSERT_EQUAL(tu_fd_count(), baseline);
}

struct lookup_arg {
    sluice_factory *f;
    sluice_client *got;
};

static void *lookup_thread(void *arg)
{
    struct lookup_arg *a = arg;
    sluice_client_opts co;
    sluice_error err;

    sluice_client_opts_init(&co);
    co.base_url = "http://127.0.0.1:1/";
    co.api_version = "v2";
    a->got = sluice_factory_client(a->f, "shared", &co, &err);
    return NULL;
}

static void test_client_factory_get_or_create(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    struct lookup_arg a[32];
    pthread_t t[32];
    sluice_client_opts co;
    sluice_error err;
    int i;

    for (i = 0; i < 32; i++) {
        a[i].f = f;
        pthread_create(&t[i], NULL, lookup_thread, &a[i]);
    }
    for (i = 0; i < 32; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a[0].got);
    for (i = 1; i < 32; i++)
        CU_ASSERT_PTR_EQUAL(a[i].got, a[0].got);
    CU_ASSERT_PTR_EQUAL(sluice_factory_client_lookup(f, "shared", "v2", &err), a[0].got);
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "shared", NULL, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ENOTFOUND);
    /* Another version is another client. */
    sluice_client_opts_init(&co);
    co.base_url = "http://127.0.0.1:1/";
    co.api_version = "v3";
    CU_ASSERT_PTR_NOT_NULL(sluice_factory_client(f, "shared", &co, &err));
    /* The same key with other options is refused, naming the service. */
    co.api_version = "v2";
    co.timeout_ms = 1234;
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "shared", &co, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EEXIST);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "shared"));
    sluice_factory_free(f);
    sluice_factory_free(NULL);
}

static void test_client_presets(void)
{
    static const int want[][3] = {{100, 20, 5000}, {200, 50, 30000}, {50, 10, 5000}, {100, 30, 120000}};
    sluice_factory_opts fo;
    int p;

    for (p = 0; p < 4; p++) {
        sluice_factory_opts_init(&fo, (sluice_preset)p);
        CU_ASSERT_EQUAL(fo.max_connections, want[p][0]);
        CU_ASSERT_EQUAL(fo.max_idle_per_host, want[p][1]);
        CU_ASSERT_EQUAL(fo.keepalive_expiry_ms, want[p][2]);
    }
}

static void test_client_warmup(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "warm", tu_http_base());
    struct sluice_factory_stats st;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(sluice_client_warmup(c, 5, &err), 5);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.idle, 5);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 5);
    CU_ASSERT_EQUAL(st.pool.reused, 1);
    sluice_factory_free(f);
}

/* connect_timeout_ms + pool_timeout_ms overflowed int in warmup (UBSan
 * stops on it); the sum is now 64-bit and the warmup simply works. */
static void test_client_warmup_int_max_timeouts(void)
{
    sluice_factory *f = factory_with(0, 0, 0, INT_MAX);
    sluice_client_opts co;
    sluice_client *c;
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    co.connect_timeout_ms = INT_MAX;
    co.timeout_ms = INT_MAX;
    co.read_timeout_ms = INT_MAX;
    c = sluice_factory_client(f, "int-max", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(sluice_client_warmup(c, 2, &err), 2);
    CU_ASSERT_EQUAL(get_status(c, "/json", &err), 200);
    sluice_factory_free(f);
}

/* A plain-socket read error names the peer, as TLS errors do. */
static void test_client_read_error_names_peer(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "peer", tu_http_base());
    char want[96];
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(want, sizeof want, "read from %s failed", tu_http_addr());
    CU_ASSERT_EQUAL(get_status(c, "/reset", &err), SLUICE_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
    if (!strstr(err.msg, want))
        fprintf(stderr, "\n  message: %s\n", err.msg);
    sluice_factory_free(f);
}

/* A timeout names the deadline that passed, its length and the peer: here
 * the call's 200 ms, not the 30 s per read. */
static void test_client_timeout_names_deadline_and_peer(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client_opts co;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    co.read_timeout_ms = 30000;
    co.retry.max_retries = 0;
    c = sluice_factory_client(f, "deadline", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    req.path = "/stall";
    req.timeout_ms = 200;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ETIMEDOUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, tu_http_addr()));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "timeout_ms 200 ms"));
    CU_ASSERT_PTR_NULL(strstr(err.msg, "30000"));
    CU_ASSERT_EQUAL(err.attempts, 1);
    if (!strstr(err.msg, "timeout_ms 200 ms"))
        fprintf(stderr, "\n  message: %s\n", err.msg);
    sluice_factory_free(f);
}

/* A URL passed as a path is refused before anything is sent. */
static void test_client_absolute_path_refused(void)
{
    static const char *const bad[] = {"http://x/y", "https://127.0.0.1/z?a=1", "//x/y", NULL};
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "abs", tu_http_base());
    sluice_response *r = NULL;
    sluice_error err;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; bad[i]; i++) {
        CU_ASSERT_EQUAL(sluice_get(c, bad[i], &r, &err), SLUICE_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "relative to base_url"));
        CU_ASSERT_EQUAL(err.attempts, 0);
    }
    /* A colon later in a path is a path. */
    CU_ASSERT_EQUAL(get_status(c, "/echo?u=http://x/", &err), 200);
    CU_ASSERT_EQUAL(get_status(c, "echo", &err), 200);
    sluice_factory_free(f);
}

/* A look-up without the api_version says which versions exist. */
static void test_client_lookup_lists_versions(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client_opts co;
    sluice_error err;

    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    co.api_version = "v1";
    CU_ASSERT_PTR_NOT_NULL_FATAL(sluice_factory_client(f, "svc", &co, &err));
    co.api_version = "v2";
    CU_ASSERT_PTR_NOT_NULL_FATAL(sluice_factory_client(f, "svc", &co, &err));
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "svc", NULL, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ENOTFOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'v1'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'v2'"));
    CU_ASSERT_PTR_NOT_NULL(sluice_factory_client_lookup(f, "svc", "v2", &err));
    /* A zeroed breaker is the defaults opts_init writes: the same client. */
    memset(&co.breaker, 0, sizeof co.breaker);
    CU_ASSERT_PTR_EQUAL(sluice_factory_client(f, "svc", &co, &err),
                        sluice_factory_client_lookup(f, "svc", "v2", NULL));
    CU_ASSERT_PTR_NULL(sluice_factory_client_lookup(f, "other", NULL, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ENOTFOUND);
    CU_ASSERT_PTR_NULL(strstr(err.msg, "exists"));
    sluice_factory_free(f);
}

/* sluice_response_body(r, NULL) is allowed: the length is not wanted. */
static void test_client_body_without_length(void)
{
    sluice_factory *f = factory_with(0, 0, 0, 0);
    sluice_client *c = client_for(f, "bodylen", tu_http_base());
    sluice_response *r = NULL;
    sluice_error err;
    size_t len = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/json", &r, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(sluice_response_body(r, NULL));
    CU_ASSERT_PTR_EQUAL(sluice_response_body(r, NULL), sluice_response_body(r, &len));
    CU_ASSERT(len > 0);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_client_timeout_names_deadline_and_peer", test_client_timeout_names_deadline_and_peer},
    {"test_client_absolute_path_refused", test_client_absolute_path_refused},
    {"test_client_lookup_lists_versions", test_client_lookup_lists_versions},
    {"test_client_body_without_length", test_client_body_without_length},
    {"test_client_sequential_reuse_one_connection", test_client_sequential_reuse_one_connection},
    {"test_client_response_accessors", test_client_response_accessors},
    {"test_client_bodies_byte_exact", test_client_bodies_byte_exact},
    {"test_client_post_echo_byte_exact", test_client_post_echo_byte_exact},
    {"test_client_no_body_statuses", test_client_no_body_statuses},
    {"test_client_connection_close_not_reused", test_client_connection_close_not_reused},
    {"test_client_rejects_bad_responses", test_client_rejects_bad_responses},
    {"test_client_response_too_big", test_client_response_too_big},
    {"test_client_rejects_bad_input", test_client_rejects_bad_input},
    {"test_client_connect_refused", test_client_connect_refused},
    {"test_client_unresolvable_name", test_client_unresolvable_name},
    {"test_client_stall_times_out", test_client_stall_times_out},
    {"test_client_reset_not_reused", test_client_reset_not_reused},
    {"test_client_idle_expiry_and_lifetime", test_client_idle_expiry_and_lifetime},
    {"test_client_server_idle_close_is_survived", test_client_server_idle_close_is_survived},
    {"test_client_max_connections_holds", test_client_max_connections_holds},
    {"test_client_pool_timeout", test_client_pool_timeout},
    {"test_client_many_threads_no_fd_growth", test_client_many_threads_no_fd_growth},
    {"test_client_factory_get_or_create", test_client_factory_get_or_create},
    {"test_client_presets", test_client_presets},
    {"test_client_warmup", test_client_warmup},
    {"test_client_warmup_int_max_timeouts", test_client_warmup_int_max_timeouts},
    {"test_client_read_error_names_peer", test_client_read_error_names_peer},
    CU_TEST_INFO_NULL,
};

void suite_client(void);
void suite_client(void)
{
    tu_add_suite("client", tests);
}
