/* HTTP/2 against a real peer: a private nginx (tests/nginx-h2.sh) with
 * h2 over TLS (ALPN) and h2c, so the wire format is checked against an
 * implementation other than the one the mock API and the client share. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);

    if (!v)
        CU_FAIL("the interop nginx is not running: run through tests/run.sh (make interop)");
    return v;
}

static sluice_factory *factory(sluice_http2_mode mode)
{
    static char ca[320];
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;
    const char *dir = getenv("SLUICE_TEST_CERTS");

    if (!dir)
        return NULL;
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = ca;
    fo.http2 = mode;
    if (!(f = sluice_factory_new(&fo, &err)))
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

static sluice_client *client(sluice_factory *f, const char *base)
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = base;
    co.retry.max_retries = SLUICE_OFF;
    co.disable_coalescing = 1;
    co.timeout_ms = 20000;
    if (!(c = sluice_factory_client(f, "nginx", &co, &err)))
        fprintf(stderr, "\n  client: %s\n", err.msg);
    return c;
}

static int h2_open(sluice_factory *f)
{
    struct sluice_factory_stats st;

    sluice_factory_stats(f, &st);
    return st.pool.h2_open;
}

/* GET, HEAD, 404, a 1 MiB file byte for byte, a gzip body decoded, and an
 * upload, all on one connection. */
static void exercise(sluice_client *c)
{
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    const unsigned char *b;
    char *up;
    size_t len = 0, i, bad = 0;

    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/json", &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_EQUAL(sluice_response_http_version(r), 20);
    CU_ASSERT_STRING_EQUAL(sluice_response_body(r, NULL), "{\"ok\":true,\"name\":\"sluice\"}");
    sluice_response_free(r);

    req.method = "HEAD";
    req.path = "/pattern";
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, 0);
    sluice_response_free(r);

    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/missing", &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 404);
    sluice_response_free(r);

    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/pattern", &r, &err), 0);
    b = sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, 1 << 20);
    for (i = 0; i < len; i++)
        bad += b[i] != i % 251;
    CU_ASSERT_EQUAL(bad, 0);
    sluice_response_free(r);

    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/items.json", &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_decoded(r), 1);
    b = sluice_response_body(r, &len);
    CU_ASSERT(len > 50000);
    CU_ASSERT_EQUAL(memcmp(b, "[{\"id\":1,", 9), 0);
    sluice_response_free(r);

    up = malloc(3 << 20);
    TU_REQUIRE(up);
    memset(up, 'u', 3 << 20);
    memset(&req, 0, sizeof req);
    req.method = "POST";
    req.path = "/upload";
    req.body = up;
    req.body_len = 3 << 20;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), 0);
    if (r)
        CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    sluice_response_free(r);
    free(up);
}

/* The whole exercise over one connection to the nginx named by `var`. */
static void exercise_server(const char *var, sluice_http2_mode mode)
{
    const char *url = env(var);
    sluice_factory *f;
    sluice_client *c;

    TU_REQUIRE(url);
    TU_REQUIRE(f = factory(mode));
    TU_REQUIRE(c = client(f, url));
    exercise(c);
    CU_ASSERT_EQUAL(h2_open(f), 1);
    sluice_factory_free(f);
}

static void test_h2_interop_tls(void)
{
    exercise_server("SLUICE_TEST_NGINX_H2", SLUICE_HTTP2_AUTO);
}

static void test_h2_interop_h2c(void)
{
    exercise_server("SLUICE_TEST_NGINX_H2C", SLUICE_HTTP2_PRIOR_KNOWLEDGE);
}

typedef struct sharer {
    pthread_t t;
    sluice_client *c;
    int bad;
} sharer;

static void *share(void *arg)
{
    sharer *s = arg;
    int i;

    for (i = 0; i < 100; i++) {
        sluice_response *r = NULL;
        sluice_error err;
        if (sluice_get(s->c, "/json", &r, &err) != 0 || sluice_response_status(r) != 200 ||
            sluice_response_http_version(r) != 20 ||
            strcmp(sluice_response_body(r, NULL), "{\"ok\":true,\"name\":\"sluice\"}") != 0)
            s->bad++;
        sluice_response_free(r);
    }
    return NULL;
}

/* 64 threads, one TLS connection (nginx allows 128 streams). */
static void test_h2_interop_threads_share_one_connection(void)
{
    const char *url = env("SLUICE_TEST_NGINX_H2");
    struct sluice_factory_stats st;
    sharer s[64];
    sluice_factory *f;
    sluice_client *c;
    int i;

    TU_REQUIRE(url);
    TU_REQUIRE(f = factory(SLUICE_HTTP2_AUTO));
    TU_REQUIRE(c = client(f, url));
    for (i = 0; i < 64; i++) {
        s[i] = (sharer){.c = c};
        pthread_create(&s[i].t, NULL, share, &s[i]);
    }
    for (i = 0; i < 64; i++) {
        pthread_join(s[i].t, NULL);
        CU_ASSERT_EQUAL(s[i].bad, 0);
    }
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.h2_open, 1);
    CU_ASSERT_EQUAL(st.pool.handshakes_full, 1);
    CU_ASSERT_EQUAL(st.pool.created, 0);
    CU_ASSERT(st.pool.h2_streams_peak > 1);
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_h2_interop_tls", test_h2_interop_tls},
    {"test_h2_interop_h2c", test_h2_interop_h2c},
    {"test_h2_interop_threads_share_one_connection", test_h2_interop_threads_share_one_connection},
    CU_TEST_INFO_NULL,
};

void suite_h2_interop(void);
void suite_h2_interop(void)
{
    tu_add_suite("h2_interop", tests);
}
