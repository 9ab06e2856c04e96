/* HTTPS through the client: verified by default, keep-alive and resumed
 * sessions in the shared pool, mutual TLS, failures named, many threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static char certs[256];

static const char *cert(const char *name)
{
    static _Thread_local char path[8][320];   /* a few may be in use at once */
    static _Thread_local int slot;
    const char *dir = getenv("SLUICE_TEST_CERTS");

    if (!dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run through tests/run.sh (make check)");
        return NULL;
    }
    snprintf(certs, sizeof certs, "%s", dir);
    slot = (slot + 1) % 8;
    snprintf(path[slot], sizeof path[slot], "%s/%s", dir, name);
    return path[slot];
}

/* Starts an HTTPS mock API with the given certificate name; extra args
 * follow. */
static int start_tls(tu_server *s, const char *name, const char *extra1, const char *extra2)
{
    char crt[320], key[320];
    const char *args[8];
    int n = 0;

    if (!cert("ca.pem"))
        return -1;
    snprintf(crt, sizeof crt, "%s/%s.pem", certs, name);
    snprintf(key, sizeof key, "%s/%s.key", certs, name);
    args[n++] = "--tls-cert";
    args[n++] = crt;
    args[n++] = "--tls-key";
    args[n++] = key;
    if (extra1) {
        args[n++] = extra1;
        args[n++] = extra2;
    }
    args[n] = NULL;
    if (tu_mockapi_start(s, args))
        return -1;
    snprintf(s->url, sizeof s->url, "https://localhost:%d", s->port);
    return 0;
}

static sluice_factory *tls_factory(int with_client_cert, int insecure)
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = cert("ca.pem");
    if (with_client_cert) {
        fo.client_cert_file = cert("client.pem");
        fo.client_key_file = cert("client.key");
    }
    if (insecure) {
        fo.ca_file = NULL;
        fo.tls_insecure_skip_verify = 1;
    }
    f = sluice_factory_new(&fo, &err);
    if (!f)
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

static void test_https_get_post_keepalive(void)
{
    sluice_factory *f = tls_factory(0, 0);
    struct sluice_factory_stats st;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_client *c;
    sluice_error err;
    unsigned char body[50000];
    const unsigned char *got;
    size_t i, len;
    tu_server s;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    if (start_tls(&s, "server", NULL, NULL)) {
        sluice_factory_free(f);
        return;
    }
    c = tu_client(&f, "https", s.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/bytes/100000", &r, &err), 0);
    got = sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, 100000);
    for (i = 0; i < len; i++)
        if (got[i] != (unsigned char)((i * 31 + 7) & 0xff))
            break;
    CU_ASSERT_EQUAL(i, len);
    sluice_response_free(r);
    for (i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)(i * 13);
    req.method = "POST";
    req.path = "/echo?raw=1";
    req.body = body;
    req.body_len = sizeof body;
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    got = sluice_response_body(r, &len);
    CU_ASSERT(len == sizeof body && memcmp(got, body, len) == 0);
    sluice_response_free(r);
    for (i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 1);
    CU_ASSERT_EQUAL(st.pool.handshakes_full, 1);
    sluice_factory_free(f);
    tu_server_stop(&s);
}

/* The debug line of each attempt says whether its TLS connection resumed. */
static int full_lines, resumed_lines;

static void count_handshakes(sluice_log_level level, const char *msg, void *ud)
{
    (void)level;
    (void)ud;
    if (strstr(msg, "resume: GET ") && strstr(msg, "new connection, TLS full handshake"))
        full_lines++;
    if (strstr(msg, "resume: GET ") && strstr(msg, "new connection, TLS resumed"))
        resumed_lines++;
}

static void test_https_reconnect_resumes(void)
{
    sluice_factory *f = tls_factory(0, 0);
    struct sluice_factory_stats st;
    sluice_client *c;
    sluice_error err;
    tu_server s;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    if (start_tls(&s, "server", NULL, NULL)) {
        sluice_factory_free(f);
        return;
    }
    c = tu_client(&f, "resume", s.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    /* /close makes every request need a new connection. */
    full_lines = resumed_lines = 0;
    sluice_set_log(count_handshakes, SLUICE_LOG_DEBUG, NULL);
    for (i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_get_status(c, "/close", &err), 200);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    CU_ASSERT_EQUAL(full_lines, 1);
    CU_ASSERT_EQUAL(resumed_lines, 4);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 5);
    CU_ASSERT_EQUAL(st.pool.handshakes_full, 1);
    CU_ASSERT_EQUAL(st.pool.handshakes_resumed, 4);
    sluice_factory_free(f);
    tu_server_stop(&s);
}

static void expect_refused(const char *certname, const char *base_host, const char *why)
{
    sluice_factory *f = tls_factory(0, 0);
    sluice_client *c;
    sluice_error err;
    char url[128];
    tu_server s;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    if (start_tls(&s, certname, NULL, NULL)) {
        sluice_factory_free(f);
        return;
    }
    snprintf(url, sizeof url, "https://%s:%d", base_host, s.port);
    c = tu_client(&f, certname, url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), SLUICE_ETLS);
    if (!strcasestr(err.msg, why) || !strstr(err.msg, base_host))
        fprintf(stderr, "\n  %s: message '%s' lacks '%s' or the host\n", certname, err.msg, why);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(err.msg, why));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, base_host));
    sluice_factory_free(f);
    tu_server_stop(&s);
}

static void test_https_failures_named(void)
{
    expect_refused("unknownca", "localhost", "unknown CA");
    expect_refused("expired", "localhost", "expired");
    expect_refused("wronghost", "localhost", "name");
    expect_refused("selfsigned", "localhost", "self-signed");
}

static void test_https_insecure_reaches_self_signed(void)
{
    sluice_factory *f = tls_factory(0, 1);
    sluice_client *c;
    sluice_error err;
    tu_server s;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    if (start_tls(&s, "selfsigned", NULL, NULL)) {
        sluice_factory_free(f);
        return;
    }
    c = tu_client(&f, "insecure", s.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    sluice_factory_free(f);
    tu_server_stop(&s);
}

static void test_https_mutual_tls(void)
{
    sluice_factory *without = tls_factory(0, 0), *with = tls_factory(1, 0);
    sluice_client *c1, *c2;
    sluice_error err;
    tu_server s;

    CU_ASSERT_PTR_NOT_NULL_FATAL(without);
    CU_ASSERT_PTR_NOT_NULL_FATAL(with);
    if (start_tls(&s, "server", "--client-ca", cert("ca.pem")) == 0) {
        c1 = tu_client(&without, "mtls", s.url, NULL);
        c2 = tu_client(&with, "mtls", s.url, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c2);
        CU_ASSERT(tu_get_status(c1, "/json", &err) < 0);
        CU_ASSERT_EQUAL(tu_get_status(c2, "/json", &err), 200);
        tu_server_stop(&s);
    }
    sluice_factory_free(without);
    sluice_factory_free(with);
}

static void test_https_missing_ca_file_named(void)
{
    sluice_factory_opts fo;
    sluice_error err;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = "/nonexistent/ca.pem";
    CU_ASSERT_PTR_NULL(sluice_factory_new(&fo, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ETLS);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/nonexistent/ca.pem"));
}

struct tls_hammer {
    sluice_client *c;
    int ok;
};

static void *tls_thread(void *arg)
{
    struct tls_hammer *h = arg;
    sluice_error err;
    char path[64];
    int i;

    snprintf(path, sizeof path, "/json?t=%p", (void *)h);
    for (i = 0; i < 20; i++)
        h->ok += tu_get_status(h->c, path, &err) == 200;
    return NULL;
}

static void test_https_32_threads(void)
{
    sluice_factory *f = tls_factory(0, 0);
    struct tls_hammer h[32];
    pthread_t t[32];
    sluice_client *c;
    tu_server s;
    int i, ok = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    if (start_tls(&s, "server", NULL, NULL)) {
        sluice_factory_free(f);
        return;
    }
    c = tu_client(&f, "tls32", s.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 32; i++) {
        h[i] = (struct tls_hammer){c, 0};
        pthread_create(&t[i], NULL, tls_thread, &h[i]);
    }
    for (i = 0; i < 32; i++) {
        pthread_join(t[i], NULL);
        ok += h[i].ok;
    }
    CU_ASSERT_EQUAL(ok, 32 * 20);
    sluice_factory_free(f);
    tu_server_stop(&s);
}

static CU_TestInfo tests[] = {
    {"test_https_get_post_keepalive", test_https_get_post_keepalive},
    {"test_https_reconnect_resumes", test_https_reconnect_resumes},
    {"test_https_failures_named", test_https_failures_named},
    {"test_https_insecure_reaches_self_signed", test_https_insecure_reaches_self_signed},
    {"test_https_mutual_tls", test_https_mutual_tls},
    {"test_https_missing_ca_file_named", test_https_missing_ca_file_named},
    {"test_https_32_threads", test_https_32_threads},
    CU_TEST_INFO_NULL,
};

void suite_https(void);
void suite_https(void)
{
    tu_add_suite("https", tests);
}
