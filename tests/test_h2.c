/* HTTP/2: threads sharing one connection per origin, against the mock
 * API's h2 (TLS with ALPN, and h2c by prior knowledge) and its scripted
 * misbehaviour. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "h2.h"
#include "client.h"
#include "testutil.h"

static const char *cert(const char *name)
{
    static _Thread_local char path[4][320];
    static _Thread_local int slot;
    const char *dir = getenv("SLUICE_TEST_CERTS");

    if (!dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run through tests/run.sh (make check)");
        return NULL;
    }
    slot = (slot + 1) % 4;
    snprintf(path[slot], sizeof path[slot], "%s/%s", dir, name);
    return path[slot];
}

/* A private mock API speaking h2: over TLS (ALPN) or as h2c; `extra` is
 * NULL-terminated, up to 6 arguments. */
static int start_h2(tu_server *s, int tls, const char *const *extra)
{
    const char *args[16];
    char crt[320], key[320];
    int n = 0;

    args[n++] = "--h2";
    if (tls) {
        if (!cert("server.pem"))
            return -1;
        snprintf(crt, sizeof crt, "%s", cert("server.pem"));
        snprintf(key, sizeof key, "%s", cert("server.key"));
        args[n++] = "--tls-cert";
        args[n++] = crt;
        args[n++] = "--tls-key";
        args[n++] = key;
    }
    while (extra && *extra && n < 15)
        args[n++] = *extra++;
    args[n] = NULL;
    if (tu_mockapi_start(s, args))
        return -1;
    if (tls)
        snprintf(s->url, sizeof s->url, "https://localhost:%d", s->port);
    return 0;
}

static sluice_factory *factory(void (*tune)(sluice_factory_opts *))
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = cert("ca.pem");
    if (tune)
        tune(&fo);
    if (!(f = sluice_factory_new(&fo, &err)))
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

static void prior_knowledge(sluice_factory_opts *o)
{
    o->http2 = SLUICE_HTTP2_PRIOR_KNOWLEDGE;
}

static sluice_client *client(sluice_factory *f, const char *base, int timeout_ms)
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = base;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    co.disable_coalescing = 1;
    if (timeout_ms)
        co.timeout_ms = timeout_ms;
    if (!(c = sluice_factory_client(f, "h2", &co, &err)))
        fprintf(stderr, "\n  client: %s\n", err.msg);
    return c;
}

/* A private h2 mock API (start_h2's tls and args), a factory (tuned by
 * `tune`, may be NULL) and a client of it (timeout_ms 0: the default). */
typedef struct fixture {
    tu_server s;
    sluice_factory *f;
    sluice_client *c;
} fixture;

static int setup(fixture *x, int tls, const char *const *args, void (*tune)(sluice_factory_opts *),
                 int timeout_ms)
{
    memset(x, 0, sizeof *x);
    if (start_h2(&x->s, tls, args))
        return -1;
    if (!(x->f = factory(tune)) || !(x->c = client(x->f, x->s.url, timeout_ms))) {
        sluice_factory_free(x->f);
        tu_server_stop(&x->s);
        CU_FAIL("no factory or client for the mock API");
        return -1;
    }
    return 0;
}

static void teardown(fixture *x)
{
    sluice_factory_free(x->f);
    tu_server_stop(&x->s);
}

static struct sluice_pool_stats pool_stats(sluice_factory *f)
{
    struct sluice_factory_stats st;

    sluice_factory_stats(f, &st);
    return st.pool;
}

/* A number in the mock API's /stats, asked through `c` (over its own h2
 * connection, for tu_mock_stat speaks plain HTTP/1.1), or -1. */
static long mock_stat(sluice_client *c, const char *field)
{
    sluice_response *r = NULL;
    sluice_error err;
    char key[64];
    const char *p;
    long v = -1;

    snprintf(key, sizeof key, "\"%s\":", field);
    if (sluice_get(c, "/stats", &r, &err) == 0 && (p = strstr(sluice_response_body(r, NULL), key)))
        v = strtol(p + strlen(key), NULL, 10);
    sluice_response_free(r);
    return v;
}

/* The mock API's hit counter for path, asked through `c`. */
static long hits_of(sluice_client *c, const char *path)
{
    sluice_response *r = NULL;
    sluice_error err;
    char p[128];
    long v = -1;

    snprintf(p, sizeof p, "/hits%s", path);
    if (sluice_get(c, p, &r, &err) == 0 && sluice_response_status(r) == 200)
        v = strtol(sluice_response_body(r, NULL), NULL, 10);
    sluice_response_free(r);
    return v;
}

/* GETs path: the HTTP version of the answer (negative: the error). */
static int version_of(sluice_client *c, const char *path)
{
    sluice_response *r = NULL;
    sluice_error err;
    int rc = sluice_get(c, path, &r, &err);

    if (rc == 0 && sluice_response_status(r) == 200)
        rc = sluice_response_http_version(r);
    else if (rc == 0)
        rc = -1000 - sluice_response_status(r);
    else
        fprintf(stderr, "\n  GET %s: %s\n", path, err.msg);
    sluice_response_free(r);
    return rc;
}

/* ---- choosing the protocol ---------------------------------------------- */

static void test_h2_alpn_chooses_h2(void)
{
    tu_server plain;
    sluice_factory *f;
    sluice_client *c;
    fixture x;

    if (setup(&x, 1, NULL, NULL, 0))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(pool_stats(f).h2_open, 1);
    CU_ASSERT_EQUAL(pool_stats(f).created, 0);     /* no HTTP/1.1 connection */
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    teardown(&x);

    /* A server that does not offer h2 gets HTTP/1.1 on the probe's connection. */
    {
        char crt[320], key[320];
        const char *args[] = {"--tls-cert", crt, "--tls-key", key, NULL};
        snprintf(crt, sizeof crt, "%s", cert("server.pem"));
        snprintf(key, sizeof key, "%s", cert("server.key"));
        if (tu_mockapi_start(&plain, args))
            return;
    }
    snprintf(plain.url, sizeof plain.url, "https://localhost:%d", plain.port);
    TU_REQUIRE(f = factory(NULL));
    TU_REQUIRE(c = client(f, plain.url, 0));
    CU_ASSERT_EQUAL(version_of(c, "/json"), 11);
    CU_ASSERT_EQUAL(version_of(c, "/json"), 11);
    CU_ASSERT_EQUAL(pool_stats(f).h2_open, 0);
    CU_ASSERT_EQUAL(pool_stats(f).created, 1);     /* the probe's, adopted and reused */
    CU_ASSERT_EQUAL(pool_stats(f).reused, 1);
    sluice_factory_free(f);
    tu_server_stop(&plain);
}

static void http2_off(sluice_factory_opts *o)
{
    o->http2 = SLUICE_HTTP2_OFF;
}

static void test_h2_off_and_client_override(void)
{
    sluice_client_opts co;
    sluice_factory *f;
    sluice_client *c, *c2;
    sluice_error err;
    fixture x;

    if (setup(&x, 1, NULL, http2_off, 0))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 11);
    CU_ASSERT_EQUAL(pool_stats(f).h2_open, 0);
    /* A client may ask for ALPN whatever its factory says. */
    sluice_client_opts_init(&co);
    co.base_url = x.s.url;
    co.http2 = SLUICE_HTTP2_ALPN;
    TU_REQUIRE(c2 = sluice_factory_client(f, "h2-alpn", &co, &err));
    CU_ASSERT_EQUAL(version_of(c2, "/json"), 20);
    /* Nonsense modes are refused where they are given. */
    co.http2 = 9;
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "h2-bad", &co, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    sluice_factory_free(f);
    {
        sluice_factory_opts fo;
        sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
        fo.http2 = (sluice_http2_mode)7;
        CU_ASSERT_PTR_NULL(sluice_factory_new(&fo, &err));
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "http2"));
    }
    tu_server_stop(&x.s);
}

static void test_h2c_prior_knowledge(void)
{
    sluice_factory *f;
    sluice_client *c;
    fixture x;

    if (start_h2(&x.s, 0, NULL))
        return;
    /* By default plain http stays HTTP/1.1 (no Upgrade dance)... */
    TU_REQUIRE(f = x.f = factory(NULL));
    TU_REQUIRE(c = client(f, x.s.url, 0));
    CU_ASSERT_EQUAL(version_of(c, "/json"), 11);
    sluice_factory_free(f);
    /* ... and with prior knowledge it is h2c from the first byte. */
    TU_REQUIRE(f = x.f = factory(prior_knowledge));
    TU_REQUIRE(c = client(f, x.s.url, 0));
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(version_of(c, "/count/h2c"), 20);
    CU_ASSERT_EQUAL(pool_stats(f).h2_open, 1);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    teardown(&x);
}

/* ---- sharing ------------------------------------------------------------------ */

typedef struct worker {
    pthread_t t;
    sluice_client *c;
    int id, n, bad, errors;
    const char *path;           /* NULL: /echo with a token of its own */
    int expect;                 /* wanted error code (0: a 200) */
    int64_t done_ms;
} worker;

/* Each answer must carry this thread's own token: bodies never cross
 * streams. */
static void *sharer(void *arg)
{
    worker *w = arg;
    char path[96], token[48];
    int i;

    for (i = 0; i < w->n; i++) {
        sluice_response *r = NULL;
        sluice_error err;
        const char *body;
        snprintf(token, sizeof token, "t%d-i%d-x", w->id, i);
        snprintf(path, sizeof path, "/echo?token=%s", token);
        if (sluice_get(w->c, w->path ? w->path : path, &r, &err) != 0) {
            w->errors++;
            continue;
        }
        body = sluice_response_body(r, NULL);
        if (sluice_response_status(r) != 200 || sluice_response_http_version(r) != 20 ||
            (!w->path && !strstr(body, token)))
            w->bad++;
        sluice_response_free(r);
    }
    w->done_ms = tu_now_ms();
    return NULL;
}

static int run_workers(worker *w, int n)
{
    int i, bad = 0;

    for (i = 0; i < n; i++)
        pthread_create(&w[i].t, NULL, sharer, &w[i]);
    for (i = 0; i < n; i++) {
        pthread_join(w[i].t, NULL);
        bad += w[i].bad + w[i].errors;
    }
    return bad;
}

static void test_h2_hundred_threads_one_connection(void)
{
    enum { THREADS = 100, EACH = 200 };
    worker *w = calloc(THREADS, sizeof *w);
    struct sluice_pool_stats ps;
    sluice_factory *f;
    sluice_client *c;
    fixture x;
    long streams;
    int i;

    TU_REQUIRE(w);
    if (setup(&x, 1, NULL, NULL, 30000)) {
        free(w);
        return;
    }
    f = x.f;
    c = x.c;
    for (i = 0; i < THREADS; i++)
        w[i] = (worker){.c = c, .id = i, .n = EACH};
    CU_ASSERT_EQUAL(run_workers(w, THREADS), 0);
    ps = pool_stats(f);
    CU_ASSERT_EQUAL(ps.h2_open, 1);
    CU_ASSERT_EQUAL(ps.created, 0);
    CU_ASSERT(ps.h2_streams_peak > 1);
    CU_ASSERT_EQUAL(ps.h2_streams, 0);
    /* One TLS connection at the server, one full handshake at the client. */
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    /* every call, and the /stats asks (counted when they begin or end) */
    streams = mock_stat(c, "h2_streams");
    CU_ASSERT(streams >= THREADS * EACH + 1 && streams <= THREADS * EACH + 2);
    CU_ASSERT_EQUAL(ps.handshakes_full, 1);
    teardown(&x);
    free(w);
}

/* ---- stream limits ------------------------------------------------------------ */

static void one_connection(sluice_factory_opts *o)
{
    o->max_connections_per_host = 1;
}

static void test_h2_stream_slots_queue(void)
{
    enum { THREADS = 50 };
    const char *args[] = {"--h2-max-streams", "4", NULL};
    worker w[THREADS];
    struct sluice_pool_stats ps;
    sluice_factory *f;
    sluice_client *c;
    fixture x;
    int i;

    if (setup(&x, 1, args, one_connection, 30000))
        return;
    f = x.f;
    c = x.c;
    memset(w, 0, sizeof w);
    for (i = 0; i < THREADS; i++)
        w[i] = (worker){.c = c, .id = i, .n = 4, .path = "/delay/5"};
    CU_ASSERT_EQUAL(run_workers(w, THREADS), 0);
    ps = pool_stats(f);
    CU_ASSERT_EQUAL(ps.h2_streams_peak, 4);     /* the server's limit, never more */
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    teardown(&x);
}

static void *slow_get(void *arg)
{
    worker *w = arg;
    sluice_response *r = NULL;
    sluice_error err;

    if (sluice_get(w->c, w->path, &r, &err) != 0)
        w->errors++;
    else if (sluice_response_status(r) != 200)
        w->bad++;
    sluice_response_free(r);
    return NULL;
}

static void test_h2_queued_past_deadline(void)
{
    const char *args[] = {"--h2-max-streams", "2", NULL};
    worker w[2];
    sluice_factory *f;
    sluice_client *c;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    fixture x;
    int64_t t0;
    int i;

    if (setup(&x, 1, args, one_connection, 10000))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);    /* the server's SETTINGS are known */
    memset(w, 0, sizeof w);
    for (i = 0; i < 2; i++) {
        w[i] = (worker){.c = c, .path = "/delay/1500"};
        pthread_create(&w[i].t, NULL, slow_get, &w[i]);
    }
    while (pool_stats(f).h2_streams < 2)
        usleep(1000);
    req.path = "/json";
    req.timeout_ms = 200;
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EPOOLTIMEOUT);
    CU_ASSERT(tu_now_ms() - t0 < 1400);    /* not after a slot came free */
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "stream"));
    for (i = 0; i < 2; i++) {
        pthread_join(w[i].t, NULL);
        CU_ASSERT_EQUAL(w[i].errors + w[i].bad, 0);
    }
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    teardown(&x);
}

/* A server slow to send its SETTINGS: the first call waits for it, the
 * others for the stream limit it brings, none is refused or fails. */
static void test_h2_settings_delayed(void)
{
    const char *args[] = {"--h2-settings-delay", "300", "--h2-max-streams", "3", NULL};
    worker w[12];
    sluice_factory *f;
    sluice_client *c;
    fixture x;
    int i;

    if (setup(&x, 1, args, one_connection, 10000))
        return;
    f = x.f;
    c = x.c;
    memset(w, 0, sizeof w);
    for (i = 0; i < 12; i++)
        w[i] = (worker){.c = c, .id = i, .n = 5};
    CU_ASSERT_EQUAL(run_workers(w, 12), 0);
    CU_ASSERT_EQUAL(pool_stats(f).h2_refused, 0);
    CU_ASSERT(pool_stats(f).h2_streams_peak <= 3);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    teardown(&x);
}

/* ---- refusals and draining ------------------------------------------------------- */

static void test_h2_refused_stream_sent_again(void)
{
    const char *args[] = {"--h2-refuse", "2", NULL};
    sluice_factory *f;
    sluice_client *c;
    sluice_response *r = NULL;
    sluice_error err;
    fixture x;
    int i;

    if (start_h2(&x.s, 1, args))
        return;
    TU_REQUIRE(f = x.f = factory(NULL));
    TU_REQUIRE(c = client(f, x.s.url, 0));    /* max_retries off: a retry would fail */
    for (i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/count/refused", &r, &err), 0);
        CU_ASSERT_EQUAL(sluice_response_status(r), 200);
        CU_ASSERT_EQUAL(sluice_response_attempts(r), 1);
        sluice_response_free(r);
    }
    CU_ASSERT(pool_stats(f).h2_refused >= 1);
    CU_ASSERT_EQUAL(hits_of(c, "/count/refused"), 4);   /* the refused one never ran */
    teardown(&x);
}

static void test_h2_goaway_every_ten_streams(void)
{
    enum { THREADS = 50 };
    const char *args[] = {"--h2-goaway-after", "10", NULL};
    worker w[THREADS];
    sluice_factory *f;
    sluice_client *c;
    fixture x;
    int i;

    if (setup(&x, 1, args, NULL, 30000))
        return;
    f = x.f;
    c = x.c;
    memset(w, 0, sizeof w);
    for (i = 0; i < THREADS; i++)
        w[i] = (worker){.c = c, .id = i, .n = 10};
    CU_ASSERT_EQUAL(run_workers(w, THREADS), 0);    /* zero failed calls */
    CU_ASSERT(pool_stats(f).h2_goaways >= THREADS * 10 / 10 - 1);
    CU_ASSERT(mock_stat(c, "h2_connections") >= THREADS * 10 / 10);
    teardown(&x);
}

static void test_h2_idle_goaway(void)
{
    sluice_factory *f;
    sluice_client *c;
    fixture x;

    if (setup(&x, 1, NULL, NULL, 0))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/h2/goaway"), 20);
    /* The connection drains and goes; the next call opens another. */
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(pool_stats(f).h2_goaways, 1);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 2);
    teardown(&x);
}

static void test_h2_stream_ids_run_out(void)
{
    sluice_factory *f;
    sluice_client *c;
    fixture x;
    int i;

    if (start_h2(&x.s, 1, NULL))
        return;
    TU_REQUIRE(f = x.f = factory(NULL));
    /* Two ids left on every connection: 2^31-3 and 2^31-1. */
    sl_h2_pool_set_first_stream_id(f->h2, 2147483645);
    TU_REQUIRE(c = client(f, x.s.url, 0));
    for (i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 3);
    teardown(&x);
}

/* ---- cancel, liveness ------------------------------------------------------------ */

static void test_h2_timeout_cancels_one_stream(void)
{
    worker w[4];
    sluice_factory *f;
    sluice_client *c;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    fixture x;
    int i;

    if (setup(&x, 1, NULL, NULL, 10000))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    memset(w, 0, sizeof w);
    for (i = 0; i < 4; i++) {
        w[i] = (worker){.c = c, .id = i, .n = 50};
        pthread_create(&w[i].t, NULL, sharer, &w[i]);
    }
    req.path = "/drip?bytes=100&interval_ms=50";
    req.timeout_ms = 300;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ETIMEDOUT);
    for (i = 0; i < 4; i++) {
        pthread_join(w[i].t, NULL);
        CU_ASSERT_EQUAL(w[i].errors + w[i].bad, 0);
    }
    /* The same connection goes on; the drip's late DATA is dropped. */
    usleep(200 * 1000);
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    CU_ASSERT_EQUAL(pool_stats(f).h2_streams, 0);
    teardown(&x);
}

static void quick_ping(sluice_factory_opts *o)
{
    o->h2_ping_interval_ms = 200;
    o->h2_ping_timeout_ms = 300;
}

static void test_h2_ping_timeout_with_peer_stopped(void)
{
    sluice_factory *f;
    sluice_client *c;
    sluice_response *r = NULL;
    sluice_error err;
    fixture x;
    int64_t t0;

    if (setup(&x, 1, NULL, quick_ping, 20000))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    tu_server_pause(&x.s, 1);
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_get(c, "/json", &r, &err), SLUICE_EIO);
    CU_ASSERT(tu_now_ms() - t0 < 10000);      /* the PING's, not the call's 20 s */
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "PING"));
    tu_server_pause(&x.s, 0);
    CU_ASSERT_EQUAL(pool_stats(f).h2_streams, 0);
    teardown(&x);
}

/* ---- bodies ------------------------------------------------------------------------ */

static void test_h2_upload_10mib_echoed(void)
{
    enum { SIZE = 10 << 20 };
    unsigned char want[WC_SHA256_DIGEST_SIZE], got[WC_SHA256_DIGEST_SIZE];
    unsigned char *body = malloc(SIZE);
    sluice_header ct = {"Content-Type", "application/octet-stream"};
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    sluice_client *c;
    worker w[2];
    const void *p;
    size_t len = 0, i;
    fixture x;

    TU_REQUIRE(body);
    for (i = 0; i < SIZE; i++)
        body[i] = (unsigned char)(i * 2654435761u >> 24);
    CU_ASSERT_EQUAL(wc_Sha256Hash(body, SIZE, want), 0);
    if (setup(&x, 1, NULL, NULL, 30000)) {
        free(body);
        return;
    }
    c = x.c;
    memset(w, 0, sizeof w);
    for (i = 0; i < 2; i++) {
        w[i] = (worker){.c = c, .id = (int)i, .n = 100};
        pthread_create(&w[i].t, NULL, sharer, &w[i]);
    }
    req.method = "POST";
    req.path = "/echo?raw=1";
    req.body = body;
    req.body_len = SIZE;
    req.headers = &ct;
    req.nheaders = 1;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), 0);
    if (r) {
        p = sluice_response_body(r, &len);
        CU_ASSERT_EQUAL(len, SIZE);
        CU_ASSERT_EQUAL(sluice_response_http_version(r), 20);
        CU_ASSERT_EQUAL(wc_Sha256Hash(p, (word32)len, got), 0);
        CU_ASSERT_EQUAL(memcmp(want, got, sizeof want), 0);
        sluice_response_free(r);
    }
    for (i = 0; i < 2; i++) {
        pthread_join(w[i].t, NULL);
        CU_ASSERT_EQUAL(w[i].errors + w[i].bad, 0);
    }
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    teardown(&x);
    free(body);
}

typedef struct slow_sink {
    size_t got;
    int calls;
    int64_t last_ms;
} slow_sink;

static int slow_body(const void *chunk, size_t len, void *ud)
{
    slow_sink *s = ud;

    (void)chunk;
    s->got += len;
    s->calls++;
    usleep(20 * 1000);
    s->last_ms = tu_now_ms();
    return 0;
}

static void test_h2_slow_reader_stalls_only_its_stream(void)
{
    slow_sink sink = {0};
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    sluice_client *c;
    worker w[2];
    fixture x;
    int i;

    if (setup(&x, 1, NULL, NULL, 30000))
        return;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    memset(w, 0, sizeof w);
    for (i = 0; i < 2; i++)
        w[i] = (worker){.c = c, .id = i, .n = 200};
    /* 4 MiB read 64 KiB at a time, 20 ms a piece: over a second; the
     * stream's window (1 MiB) holds the server back meanwhile. */
    req.path = "/bytes/4194304";
    req.on_body = slow_body;
    req.body_ud = &sink;
    for (i = 0; i < 2; i++)
        pthread_create(&w[i].t, NULL, sharer, &w[i]);
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), 0);
    CU_ASSERT_EQUAL(sink.got, 4194304);
    for (i = 0; i < 2; i++) {
        pthread_join(w[i].t, NULL);
        CU_ASSERT_EQUAL(w[i].errors + w[i].bad, 0);
        /* The other streams finished while the slow one was still read. */
        CU_ASSERT(w[i].done_ms < sink.last_ms);
    }
    sluice_response_free(r);
    teardown(&x);
}

/* ---- protocol errors, teardown, mixed origins ---------------------------------------- */

static void small_headers(sluice_factory_opts *o)
{
    o->max_header_bytes = 65536;
}

static void test_h2_protocol_errors_are_definite(void)
{
    sluice_client *c;
    sluice_response *r = NULL;
    sluice_error err;
    fixture x;

    if (setup(&x, 1, NULL, small_headers, 5000))
        return;
    c = x.c;
    /* A header block past max_header_bytes (3000 fields, about 150 KiB as
     * RFC 9113 counts) resets its stream only. */
    CU_ASSERT_EQUAL(sluice_get(c, "/headers/3000", &r, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_header_bytes"));
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
    /* A 1 MiB block takes more CONTINUATION frames than nghttp2 accepts
     * (a flood guard): the connection goes, the call still gets EPROTO
     * and the next call a new connection. */
    CU_ASSERT_EQUAL(sluice_get(c, "/h2/bigheader", &r, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_header_bytes"));
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 2);
    /* A malformed frame fails the connection's calls with EPROTO. */
    CU_ASSERT_EQUAL(sluice_get(c, "/h2/bad-frame", &r, &err), SLUICE_EPROTO);
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);     /* on a new connection */
    /* DATA on a stream already closed: the call had its answer, and the
     * connection goes on (nghttp2 answers it with RST_STREAM). */
    CU_ASSERT_EQUAL(version_of(c, "/h2/data-after-close"), 20);
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 3);
    teardown(&x);
}

static void *closed_get(void *arg)
{
    worker *w = arg;
    sluice_response *r = NULL;
    sluice_error err;
    int rc = sluice_get(w->c, "/delay/5000", &r, &err);

    if (rc != w->expect)
        w->bad++;
    sluice_response_free(r);
    w->done_ms = tu_now_ms();
    return NULL;
}

static void test_h2_free_with_streams_in_flight(void)
{
    enum { THREADS = 8 };
    worker w[THREADS];
    sluice_factory *f;
    sluice_client *c;
    fixture x;
    int64_t t0;
    int i;

    if (setup(&x, 1, NULL, NULL, 20000))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    memset(w, 0, sizeof w);
    for (i = 0; i < THREADS; i++) {
        w[i] = (worker){.c = c, .expect = SLUICE_ECLOSED};
        pthread_create(&w[i].t, NULL, closed_get, &w[i]);
    }
    while (pool_stats(f).h2_streams < THREADS)
        usleep(1000);
    t0 = tu_now_ms();
    sluice_factory_free(f);
    CU_ASSERT(tu_now_ms() - t0 < 4000);     /* not after the 5 s answers */
    for (i = 0; i < THREADS; i++) {
        pthread_join(w[i].t, NULL);
        CU_ASSERT_EQUAL(w[i].bad, 0);
    }
    tu_server_stop(&x.s);
}

static void test_h2_and_h1_origins_side_by_side(void)
{
    worker w[8];
    sluice_client_opts co;
    sluice_factory *f;
    sluice_client *c2, *c1;
    sluice_error err;
    fixture x;
    int i;

    if (start_h2(&x.s, 1, NULL))
        return;
    TU_REQUIRE(f = x.f = factory(NULL));
    TU_REQUIRE(c2 = client(f, x.s.url, 10000));
    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    TU_REQUIRE(co.base_url);
    co.disable_coalescing = 1;
    TU_REQUIRE(c1 = sluice_factory_client(f, "h1", &co, &err));
    memset(w, 0, sizeof w);
    for (i = 0; i < 8; i++)
        w[i] = (worker){.c = i % 2 ? c1 : c2, .id = i, .n = 50};
    for (i = 0; i < 8; i++)
        pthread_create(&w[i].t, NULL, sharer, &w[i]);
    for (i = 0; i < 8; i++) {
        pthread_join(w[i].t, NULL);
        /* sharer wants HTTP/2: the h1 origin's answers count as "bad" */
        CU_ASSERT_EQUAL(w[i].errors, 0);
        CU_ASSERT_EQUAL(w[i].bad, i % 2 ? 50 : 0);
    }
    CU_ASSERT_EQUAL(version_of(c1, "/json"), 11);
    CU_ASSERT_EQUAL(pool_stats(f).h2_open, 1);
    CU_ASSERT(pool_stats(f).created >= 1);
    teardown(&x);
}

/* Everything above the pool works on h2 as on h1. */
typedef struct seen {
    int ends, h2, bad;
} seen;

static void on_end(const sluice_request_info *info, void *ud)
{
    seen *s = ud;

    __atomic_add_fetch(&s->ends, 1, __ATOMIC_RELAXED);
    if (info->http_version == 20)
        __atomic_add_fetch(&s->h2, 1, __ATOMIC_RELAXED);
}

static seen hook_seen;

static void with_hooks(sluice_factory_opts *o)
{
    o->on_request_end = on_end;
    o->hook_ud = &hook_seen;
}

typedef struct upload {
    size_t off, len;
} upload;

static long pull_body(void *buf, size_t cap, void *ud)
{
    upload *u = ud;
    size_t n = u->len - u->off < cap ? u->len - u->off : cap;
    size_t i;

    for (i = 0; i < n; i++)
        ((unsigned char *)buf)[i] = (unsigned char)((u->off + i) % 253);
    u->off += n;
    return (long)n;
}

static int rewind_body(void *ud)
{
    ((upload *)ud)->off = 0;
    return 0;
}

static void test_h2_above_the_pool(void)
{
    sluice_client_opts co;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    sluice_factory *f;
    sluice_client *c;
    upload up = {0, 1 << 20};
    const unsigned char *b;
    size_t len = 0, i, bad = 0;
    fixture x;

    if (start_h2(&x.s, 1, NULL))
        return;
    memset(&hook_seen, 0, sizeof hook_seen);
    TU_REQUIRE(f = x.f = factory(with_hooks));
    sluice_client_opts_init(&co);
    co.base_url = x.s.url;
    co.follow_redirects = 1;
    co.retry.max_retries = 2;
    co.retry.backoff_factor_ms = 1;
    TU_REQUIRE(c = sluice_factory_client(f, "h2-all", &co, &err));
    /* a redirect chain, hop by hop on streams */
    CU_ASSERT_EQUAL(version_of(c, "/redirect/3"), 20);
    /* a retried 503 */
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/flaky/h2?fail=1", &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 2);
    sluice_response_free(r);
    /* a gzip body decoded */
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/gzip/100000", &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_decoded(r), 1);
    sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, 100000);
    sluice_response_free(r);
    /* a streamed, chunked upload echoed back */
    req.method = "POST";
    req.path = "/echo?raw=1";
    req.body_read = pull_body;
    req.body_rewind = rewind_body;
    req.body_ud = &up;
    req.body_len = SLUICE_BODY_CHUNKED;
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    b = sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, 1 << 20);
    for (i = 0; i < len; i++)
        bad += b[i] != i % 253;
    CU_ASSERT_EQUAL(bad, 0);
    sluice_response_free(r);
    /* every attempt's hook saw HTTP/2: 4 hops, 2 attempts, 1, 1 */
    CU_ASSERT_EQUAL(hook_seen.ends, 8);
    CU_ASSERT_EQUAL(hook_seen.h2, 8);
    CU_ASSERT_EQUAL(pool_stats(f).h2_open, 1);
    teardown(&x);
}

/* fork(): the child dials its own connection, the parent's goes on. */
static void test_h2_fork_child_dials_its_own(void)
{
    sluice_client *c;
    fixture x;
    pid_t pid;
    int status = -1;

    if (setup(&x, 1, NULL, NULL, 5000))
        return;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    pid = fork();
    if (pid == 0) {
        int ok = 1;
#ifndef __SANITIZE_THREAD__
        /* ThreadSanitizer cannot start a thread in the child of a threaded
         * process (test_fork.c says more): the child's half runs in make
         * check and make asan. */
        ok = version_of(c, "/json") == 20 && version_of(c, "/json") == 20 &&
             pool_stats(x.f).h2_open == 1;
        sluice_factory_free(x.f);
#endif
        _exit(ok ? 0 : 1);
    }
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
#ifdef __SANITIZE_THREAD__
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 1);
#else
    CU_ASSERT_EQUAL(mock_stat(c, "h2_connections"), 2);
#endif
    teardown(&x);
}

/* Stats reach the exports under their documented names. */
static void test_h2_stats_exported(void)
{
    sluice_factory *f;
    sluice_client *c;
    static char text[1 << 20];
    fixture x;

    if (setup(&x, 1, NULL, NULL, 0))
        return;
    f = x.f;
    c = x.c;
    CU_ASSERT_EQUAL(version_of(c, "/json"), 20);
    CU_ASSERT(sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, text, sizeof text) < sizeof text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "sluice_pool_h2_open 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "sluice_pool_h2_streams_peak 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "sluice_pool_h2_goaways_total 0\n"));
    CU_ASSERT(sluice_factory_metrics(f, SLUICE_METRICS_JSON, text, sizeof text) < sizeof text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"h2_open\":1"));
    teardown(&x);
}

static CU_TestInfo tests[] = {
    {"test_h2_alpn_chooses_h2", test_h2_alpn_chooses_h2},
    {"test_h2_off_and_client_override", test_h2_off_and_client_override},
    {"test_h2c_prior_knowledge", test_h2c_prior_knowledge},
    {"test_h2_hundred_threads_one_connection", test_h2_hundred_threads_one_connection},
    {"test_h2_stream_slots_queue", test_h2_stream_slots_queue},
    {"test_h2_queued_past_deadline", test_h2_queued_past_deadline},
    {"test_h2_settings_delayed", test_h2_settings_delayed},
    {"test_h2_refused_stream_sent_again", test_h2_refused_stream_sent_again},
    {"test_h2_goaway_every_ten_streams", test_h2_goaway_every_ten_streams},
    {"test_h2_idle_goaway", test_h2_idle_goaway},
    {"test_h2_stream_ids_run_out", test_h2_stream_ids_run_out},
    {"test_h2_timeout_cancels_one_stream", test_h2_timeout_cancels_one_stream},
    {"test_h2_ping_timeout_with_peer_stopped", test_h2_ping_timeout_with_peer_stopped},
    {"test_h2_upload_10mib_echoed", test_h2_upload_10mib_echoed},
    {"test_h2_slow_reader_stalls_only_its_stream", test_h2_slow_reader_stalls_only_its_stream},
    {"test_h2_protocol_errors_are_definite", test_h2_protocol_errors_are_definite},
    {"test_h2_free_with_streams_in_flight", test_h2_free_with_streams_in_flight},
    {"test_h2_and_h1_origins_side_by_side", test_h2_and_h1_origins_side_by_side},
    {"test_h2_above_the_pool", test_h2_above_the_pool},
    {"test_h2_fork_child_dials_its_own", test_h2_fork_child_dials_its_own},
    {"test_h2_stats_exported", test_h2_stats_exported},
    CU_TEST_INFO_NULL,
};

void suite_h2(void);
void suite_h2(void)
{
    tu_add_suite("h2", tests);
}
