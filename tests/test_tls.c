/* TLS client: handshakes, verification failures named by cause and host,
 * session resumption for TLS 1.2 and 1.3, deadlines, mutual TLS, and a
 * context shared by many threads.  The peer is the project's mock API
 * serving HTTPS through wolfSSL; `openssl s_server` stands in where a
 * second implementation adds something (ALPN, TLS 1.2 session IDs
 * without tickets). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "tls.h"
#include "testutil.h"

#define REQUEST "GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
#define MOCK_RESPONSE                                                                  \
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 54\r\n"     \
    "Connection: close\r\n\r\n{\"ok\":true,\"service\":\"sluice-mockapi\",\"items\":[1,2,3]}"
#define S_SERVER_BODY "{\"hello\":\"world\"}\n"
#define S_SERVER_RESPONSE "HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\n" S_SERVER_BODY

/* ---- certificates (tests/gen-certs.sh, run by tests/run.sh) ------------- */

static const char *cert_path(const char *name)
{
    static _Thread_local char path[4][256];
    static _Thread_local int next;
    const char *dir = getenv("SLUICE_TEST_CERTS");
    char *p = path[next++ % 4];

    if (!dir || !*dir) {
        CU_FAIL_FATAL("SLUICE_TEST_CERTS is not set: run the suite through tests/run.sh");
        return "";
    }
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    return p;
}

/* ---- peers ---------------------------------------------------------------- */

typedef struct peer {
    tu_server mock;         /* sluice-mockapi, or */
    pid_t pid;              /* openssl s_server */
    int port;
    const char *response;   /* the answer to REQUEST, byte for byte */
} peer;

/* Starts the mock API serving HTTPS with certname.pem / certname.key. */
static int mock_start(peer *p, const char *certname, const char *const *extra)
{
    char cert[256], key[256];
    const char *args[16] = {"--quiet", "--tls-cert", cert, "--tls-key", key};
    int n = 5;

    memset(p, 0, sizeof *p);
    snprintf(cert, sizeof cert, "%s.pem", cert_path(certname));
    snprintf(key, sizeof key, "%s.key", cert_path(certname));
    while (extra && *extra && n < 15)
        args[n++] = *extra++;
    args[n] = NULL;
    if (tu_mockapi_start(&p->mock, args) < 0)
        return -1;
    p->port = p->mock.port;
    p->response = MOCK_RESPONSE;
    return 0;
}

static char docroot[64];   /* what s_server -WWW serves */

static void remove_docroot(void)
{
    char path[96];

    snprintf(path, sizeof path, "%s/json", docroot);
    unlink(path);
    rmdir(docroot);
}

static int make_docroot(void)
{
    char path[96];
    FILE *f;

    if (docroot[0])
        return 0;
    snprintf(docroot, sizeof docroot, "/tmp/sluice-tls-XXXXXX");
    if (!mkdtemp(docroot)) {
        docroot[0] = '\0';
        return -1;
    }
    atexit(remove_docroot);
    snprintf(path, sizeof path, "%s/json", docroot);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(S_SERVER_BODY, f);
    return fclose(f);
}


static void peer_stop(peer *p)
{
    int status;

    tu_server_stop(&p->mock);
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &status, 0);
    p->pid = 0;
}

static int wait_listening(peer *p, int timeout_ms)
{
    char addr[32];
    int64_t end = tu_now_ms() + timeout_ms;
    int status;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", p->port);
    while (tu_now_ms() < end) {
        int fd = tu_connect(addr);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            return -1;
        }
        usleep(10000);
    }
    return -1;
}

static void exec_s_server(int port, const char *cert, const char *key, const char *const *extra)
{
    char accept_arg[32];
    const char *argv[32];
    int n = 0, fd;

    snprintf(accept_arg, sizeof accept_arg, "127.0.0.1:%d", port);
    argv[n++] = "openssl";
    argv[n++] = "s_server";
    argv[n++] = "-accept";
    argv[n++] = accept_arg;
    argv[n++] = "-cert";
    argv[n++] = cert;
    argv[n++] = "-key";
    argv[n++] = key;
    argv[n++] = "-WWW";
    argv[n++] = "-quiet";
    while (extra && *extra && n < 31)
        argv[n++] = *extra++;
    argv[n] = NULL;
    fd = open("/dev/null", O_RDWR);
    if (fd < 0 || chdir(docroot) != 0)
        _exit(126);
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

/* Starts `openssl s_server -WWW` on a free loopback port with the server
 * certificate and extra arguments. */
static int s_server_start(peer *p, const char *const *extra)
{
    char cert[256], key[256];
    int attempt;

    memset(p, 0, sizeof *p);
    snprintf(cert, sizeof cert, "%s", cert_path("server.pem"));
    snprintf(key, sizeof key, "%s", cert_path("server.key"));
    if (make_docroot() < 0) {
        CU_FAIL("cannot make a document root for openssl s_server");
        return -1;
    }
    p->response = S_SERVER_RESPONSE;
    for (attempt = 0; attempt < 5; attempt++) {
        p->port = tu_free_port();
        p->pid = fork();
        if (p->pid == 0)
            exec_s_server(p->port, cert, key, extra);
        if (p->pid > 0 && wait_listening(p, 5000) == 0)
            return 0;
        peer_stop(p);
    }
    CU_FAIL("could not start openssl s_server");
    return -1;
}

/* ---- client helpers ------------------------------------------------------- */

static int connect_nonblocking(int port)
{
    char addr[32];
    int fd;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    fd = tu_connect(addr);
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static sl_tls_ctx *ctx_with(const char *ca, int min_version, sluice_error *err)
{
    sluice_factory_opts o;

    memset(&o, 0, sizeof o);
    o.ca_file = ca;
    o.tls_min_version = min_version;
    return sl_tls_ctx_new(&o, err);
}

static sl_tls_ctx *ctx_trusting_ca(void)
{
    sluice_error err;
    sl_tls_ctx *t = ctx_with(cert_path("ca.pem"), 0, &err);

    if (!t)
        fprintf(stderr, "\n  ctx: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    return t;
}

/* Reads until close into buf; the length, or a negative SLUICE_E*. */
static ssize_t read_to_close(sl_tls *s, char *buf, size_t cap, sluice_error *err)
{
    int64_t deadline = sl_deadline_in_ms(10000);
    size_t len = 0;

    for (;;) {
        ssize_t n = sl_tls_read(s, buf + len, cap - 1 - len, deadline, err);
        if (n < 0)
            return n;
        len += (size_t)n;
        if (n == 0 || len + 1 >= cap)
            break;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Handshake as `host`, GET /json, read to close.  The response length,
 * or a negative SLUICE_E* with err set. */
static ssize_t https_get(sl_tls_ctx *t, int port, const char *host, char *buf, size_t cap,
                         int *resumed, sluice_error *err)
{
    char origin[96];
    sl_tls *s = NULL;
    ssize_t rc;
    int fd = connect_nonblocking(port);

    if (fd < 0) {
        err->code = SLUICE_ECONNECT;
        snprintf(err->msg, sizeof err->msg, "cannot connect to 127.0.0.1:%d", port);
        return SLUICE_ECONNECT;
    }
    snprintf(origin, sizeof origin, "https://%s:%d", host, port);
    rc = sl_tls_connect(t, fd, host, origin, 0, sl_deadline_in_ms(10000), &s, resumed, err);
    if (rc == 0)
        rc = sl_tls_write(s, REQUEST, strlen(REQUEST), sl_deadline_in_ms(10000), err);
    if (rc == 0)
        rc = read_to_close(s, buf, cap, err);
    sl_tls_free(s);
    close(fd);
    return rc;
}

/* GET /json through the peer succeeds with its exact response; returns
 * whether the session was resumed. */
static int expect_ok(sl_tls_ctx *t, const peer *p, const char *host)
{
    char buf[4096];
    sluice_error err = {0};
    int resumed = -1;
    ssize_t n = https_get(t, p->port, host, buf, sizeof buf, &resumed, &err);

    if (n < 0)
        fprintf(stderr, "\n  unexpected failure: %s\n", err.msg);
    CU_ASSERT_EQUAL(n, (ssize_t)strlen(p->response));
    if (n > 0)
        CU_ASSERT_STRING_EQUAL(buf, p->response);
    return resumed;
}

/* The request fails with `code`, and the message names every word given. */
static void expect_refused(sl_tls_ctx *t, int port, const char *host, int code,
                           const char *word1, const char *word2)
{
    char buf[4096];
    sluice_error err = {0};
    ssize_t n = https_get(t, port, host, buf, sizeof buf, NULL, &err);

    CU_ASSERT_EQUAL(n, code);
    CU_ASSERT_EQUAL(err.code, code);
    if (word1 && !strstr(err.msg, word1))
        fprintf(stderr, "\n  message lacks \"%s\": %s\n", word1, err.msg);
    CU_ASSERT_PTR_NOT_NULL(word1 ? strstr(err.msg, word1) : err.msg);
    CU_ASSERT_PTR_NOT_NULL(word2 ? strstr(err.msg, word2) : err.msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, host));
}

/* ---- tests: handshakes and resumption ------------------------------------ */

/* GET twice: the first connection does a full handshake, the second
 * resumes the session the first one left in the cache. */
static void check_get_and_resume(peer *p)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    uint64_t full, resumed;

    CU_ASSERT_EQUAL(expect_ok(t, p, "localhost"), 0);
    CU_ASSERT_EQUAL(expect_ok(t, p, "localhost"), 1);
    sl_tls_ctx_counts(t, &full, &resumed);
    CU_ASSERT_EQUAL(full, 1);
    CU_ASSERT_EQUAL(resumed, 1);
    sl_tls_ctx_free(t);
    peer_stop(p);
}

/* TLS 1.3 tickets arrive after the handshake, while the client reads. */
static void test_tls_get_and_resume_tls13(void)
{
    const char *args[] = {"--tls-min-version", "13", NULL};
    peer p;

    if (mock_start(&p, "server", args) == 0)
        check_get_and_resume(&p);
}

static void test_tls_get_and_resume_tls12_ticket(void)
{
    const char *args[] = {"--tls-max-version", "12", NULL};
    peer p;

    if (mock_start(&p, "server", args) == 0)
        check_get_and_resume(&p);
}

/* A TLS 1.2 server without tickets resumes by session ID. */
static void test_tls_get_and_resume_tls12_session_id(void)
{
    const char *args[] = {"-tls1_2", "-no_ticket", NULL};
    peer p;

    if (s_server_start(&p, args) == 0)
        check_get_and_resume(&p);
}

/* Sessions are cached per origin: another origin gets a full handshake. */
static void test_tls_resume_is_per_origin(void)
{
    sl_tls_ctx *t;
    uint64_t full, resumed;
    peer p;

    if (mock_start(&p, "server", NULL) < 0)
        return;
    t = ctx_trusting_ca();
    CU_ASSERT_EQUAL(expect_ok(t, &p, "localhost"), 0);
    CU_ASSERT_EQUAL(expect_ok(t, &p, "127.0.0.1"), 0);
    sl_tls_ctx_counts(t, &full, &resumed);
    CU_ASSERT_EQUAL(full, 2);
    CU_ASSERT_EQUAL(resumed, 0);
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

static char debug_line[512];

static void capture_debug(sluice_log_level level, const char *msg, void *ud)
{
    (void)ud;
    if (level == SLUICE_LOG_DEBUG && strstr(msg, "TLS"))
        snprintf(debug_line, sizeof debug_line, "%s", msg);
}

/* The handshake offers ALPN http/1.1; a server without ALPN is fine too. */
static void check_alpn(const char *server_protos, const char *expect)
{
    const char *args[] = {server_protos ? "-alpn" : NULL, server_protos, NULL};
    sl_tls_ctx *t;
    peer p;

    if (s_server_start(&p, args) < 0)
        return;
    t = ctx_trusting_ca();
    debug_line[0] = '\0';
    sluice_set_log(capture_debug, SLUICE_LOG_DEBUG, NULL);
    expect_ok(t, &p, "localhost");
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    if (!strstr(debug_line, expect))
        fprintf(stderr, "\n  log: %s\n", debug_line);
    CU_ASSERT_PTR_NOT_NULL(strstr(debug_line, expect));
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

static void test_tls_alpn_http11(void)
{
    check_alpn("h2,http/1.1", "ALPN http/1.1");
}

static void test_tls_alpn_server_without_alpn(void)
{
    check_alpn(NULL, "ALPN none");
}

/* A server that waits for a request: reads time out at the deadline, and
 * decrypted bytes not yet read show as pending. */
static void test_tls_read_deadline_and_pending(void)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    sluice_error err;
    sl_tls *s = NULL;
    char buf[8];
    int64_t start;
    int fd;
    peer p;

    if (mock_start(&p, "server", NULL) < 0)
        goto out;
    fd = connect_nonblocking(p.port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(sl_tls_connect(t, fd, "localhost", NULL, 0, sl_deadline_in_ms(10000), &s,
                                         NULL, &err), 0);
    start = tu_now_ms();
    CU_ASSERT_EQUAL(sl_tls_read(s, buf, sizeof buf, sl_deadline_in_ms(200), &err),
                    SLUICE_ETIMEDOUT);
    /* The deadline is the contract: never sooner, late only by a loaded host. */
    CU_ASSERT(tu_now_ms() - start >= 195 && tu_now_ms() - start <= 200 + 1000);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "TLS read from localhost timed out"));
    CU_ASSERT_EQUAL(sl_tls_write(s, REQUEST, strlen(REQUEST), sl_deadline_in_ms(5000), &err), 0);
    CU_ASSERT_EQUAL(sl_tls_read(s, buf, 4, sl_deadline_in_ms(5000), &err), 4);
    CU_ASSERT(memcmp(buf, "HTTP", 4) == 0);
    CU_ASSERT(sl_tls_pending(s) > 0);
    sl_tls_free(s);
    close(fd);
    peer_stop(&p);
out:
    sl_tls_ctx_free(t);
}

/* Every allocation of ours failing in turn gives ENOMEM and leaks nothing. */
static void test_tls_out_of_memory(void)
{
    sluice_factory_opts o;
    sluice_error err;
    sl_tls_ctx *t = NULL;
    sl_tls *s = NULL;
    long n;
    int rc = -1, fd;
    peer p;

    memset(&o, 0, sizeof o);
    o.ca_file = cert_path("ca.pem");
    for (n = 1; !t; n++) {
        tu_alloc_install(n, 0);
        t = sl_tls_ctx_new(&o, &err);
        if (!t)
            CU_ASSERT_EQUAL(err.code, SLUICE_ENOMEM);
        tu_alloc_uninstall();
    }
    if (mock_start(&p, "server", NULL) < 0)
        goto out;
    for (n = 1; rc != 0 && n < 50; n++) {
        fd = connect_nonblocking(p.port);
        tu_alloc_install(n, 0);
        rc = sl_tls_connect(t, fd, "localhost", "https://localhost:1", 0, sl_deadline_in_ms(10000),
                            &s, NULL, &err);
        if (rc != 0)
            CU_ASSERT_EQUAL(rc, SLUICE_ENOMEM);
        sl_tls_free(s);
        s = NULL;
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        tu_alloc_uninstall();
        close(fd);
    }
    CU_ASSERT_EQUAL(rc, 0);
    peer_stop(&p);
out:
    sl_tls_ctx_free(t);
}

/* Handshake only, under a made-up origin; 1 if resumed, 0 if not, -1 on
 * failure. */
static int handshake_as(sl_tls_ctx *t, int port, int origin_no)
{
    char origin[64];
    sluice_error err;
    sl_tls *s = NULL;
    int resumed = -1, fd = connect_nonblocking(port);

    snprintf(origin, sizeof origin, "https://localhost:%d/%d", port, origin_no);
    if (fd < 0 || sl_tls_connect(t, fd, "localhost", origin, 0, sl_deadline_in_ms(10000), &s,
                                 &resumed, &err) != 0)
        resumed = -1;
    sl_tls_free(s);
    if (fd >= 0)
        close(fd);
    return resumed;
}

/* The cache holds 256 origins and evicts the least recently used. */
static void test_tls_session_cache_lru(void)
{
    const char *args[] = {"--tls-max-version", "12", NULL};   /* sessions ready at the handshake */
    sl_tls_ctx *t;
    int i, fresh = 0;
    peer p;

    if (mock_start(&p, "server", args) < 0)
        return;
    t = ctx_trusting_ca();
    for (i = 0; i < 256; i++)
        fresh += handshake_as(t, p.port, i) == 0;
    CU_ASSERT_EQUAL(fresh, 256);
    CU_ASSERT_EQUAL(handshake_as(t, p.port, 0), 1);     /* 0 is now the newest */
    CU_ASSERT_EQUAL(handshake_as(t, p.port, 256), 0);   /* evicts 1, the oldest */
    CU_ASSERT_EQUAL(handshake_as(t, p.port, 0), 1);
    CU_ASSERT_EQUAL(handshake_as(t, p.port, 2), 1);
    CU_ASSERT_EQUAL(handshake_as(t, p.port, 1), 0);
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

/* ---- tests: verification ---------------------------------------------------- */

static void check_refused_cert(const char *certname, const char *host, const char *word)
{
    sl_tls_ctx *t;
    peer p;

    if (mock_start(&p, certname, NULL) < 0)
        return;
    t = ctx_trusting_ca();
    expect_refused(t, p.port, host, SLUICE_ETLS, word, "handshake");
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

static void test_tls_verify_unknown_ca(void)
{
    check_refused_cert("unknownca", "localhost", "unknown CA");
}

static void test_tls_verify_expired(void)
{
    check_refused_cert("expired", "localhost", "expired");
}

static void test_tls_verify_wrong_host(void)
{
    check_refused_cert("wronghost", "localhost", "host name");
}

static void test_tls_verify_self_signed(void)
{
    check_refused_cert("selfsigned", "localhost", "certificate");
}

static char warned[512];

static void capture_warning(sluice_log_level level, const char *msg, void *ud)
{
    (void)ud;
    if (level == SLUICE_LOG_WARN)
        snprintf(warned, sizeof warned, "%s", msg);
}

static void test_tls_insecure_accepts_self_signed_and_warns(void)
{
    sluice_factory_opts o;
    sluice_error err;
    sl_tls_ctx *t;
    peer p;

    if (mock_start(&p, "selfsigned", NULL) < 0)
        return;
    memset(&o, 0, sizeof o);
    o.tls_insecure_skip_verify = 1;
    warned[0] = '\0';
    sluice_set_log(capture_warning, SLUICE_LOG_WARN, NULL);
    t = sl_tls_ctx_new(&o, &err);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(warned, "verification disabled"));
    CU_ASSERT_PTR_NOT_NULL(strstr(warned, "insecure"));
    expect_ok(t, &p, "localhost");
    expect_ok(t, &p, "wrong.example");
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

static void test_tls_ip_literal_verified_against_ip_san(void)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    peer good, bad;

    if (mock_start(&good, "server", NULL) < 0)
        goto out;
    expect_ok(t, &good, "127.0.0.1");
    peer_stop(&good);
    /* Valid chain and a DNS SAN, but no IP SAN for 127.0.0.1. */
    if (mock_start(&bad, "wronghost", NULL) < 0)
        goto out;
    expect_refused(t, bad.port, "127.0.0.1", SLUICE_ETLS, "IP address", NULL);
    peer_stop(&bad);
out:
    sl_tls_ctx_free(t);
}

/* Without a SAN the subject CN names the host (and only that host). */
static void test_tls_cn_only_certificate(void)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    peer p;

    if (mock_start(&p, "cnonly", NULL) < 0)
        goto out;
    expect_ok(t, &p, "localhost");
    expect_refused(t, p.port, "other.example", SLUICE_ETLS, "host name", NULL);
    peer_stop(&p);
out:
    sl_tls_ctx_free(t);
}

/* ---- tests: mutual TLS and versions ---------------------------------------- */

static void check_mutual(const char *version_flag, const char *version)
{
    const char *args[] = {version_flag, version, "--client-ca", NULL, NULL};
    sluice_factory_opts o;
    sluice_error err;
    sl_tls_ctx *anon, *with_cert;
    peer p;

    args[3] = cert_path("ca.pem");
    if (mock_start(&p, "server", args) < 0)
        return;
    anon = ctx_trusting_ca();
    /* In TLS 1.3 the client learns of the refusal only when it reads. */
    expect_refused(anon, p.port, "localhost", SLUICE_ETLS, "client certificate", NULL);
    memset(&o, 0, sizeof o);
    o.ca_file = cert_path("ca.pem");
    o.client_cert_file = cert_path("client.pem");
    o.client_key_file = cert_path("client.key");
    with_cert = sl_tls_ctx_new(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(with_cert);
    expect_ok(with_cert, &p, "localhost");
    sl_tls_ctx_free(anon);
    sl_tls_ctx_free(with_cert);
    peer_stop(&p);
}

static void test_tls_mutual_requires_client_cert_tls13(void)
{
    check_mutual("--tls-min-version", "13");
}

static void test_tls_mutual_requires_client_cert_tls12(void)
{
    check_mutual("--tls-max-version", "12");
}

static void test_tls_version_mismatch(void)
{
    const char *args[] = {"--tls-max-version", "12", NULL};
    sluice_error err;
    sl_tls_ctx *t;
    peer p;

    if (mock_start(&p, "server", args) < 0)
        return;
    t = ctx_with(cert_path("ca.pem"), 13, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    expect_refused(t, p.port, "localhost", SLUICE_ETLS, "version", "handshake");
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

/* ---- tests: bad peers ------------------------------------------------------- */

/* Never answering: the kernel completes the TCP handshake, nobody reads. */
static void test_tls_handshake_deadline(void)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    sluice_error err;
    sl_tls *s = NULL;
    int port, lfd = tu_listen(64, &port), fd;
    int64_t start, elapsed;

    CU_ASSERT_FATAL(lfd >= 0);
    fd = connect_nonblocking(port);
    CU_ASSERT_FATAL(fd >= 0);
    start = tu_now_ms();
    CU_ASSERT_EQUAL(sl_tls_connect(t, fd, "localhost", "https://localhost:1", 0,
                                   sl_deadline_in_ms(300), &s, NULL, &err), SLUICE_ETIMEDOUT);
    elapsed = tu_now_ms() - start;
    if (elapsed < 295 || elapsed > 300 + 1000)
        fprintf(stderr, "\n  handshake gave up after %lld ms, deadline 300 ms\n", (long long)elapsed);
    CU_ASSERT(elapsed >= 295);
    CU_ASSERT(elapsed <= 300 + 1000);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "TLS handshake with localhost:1 timed out"));
    close(fd);
    close(lfd);
    sl_tls_ctx_free(t);
}

struct rude_peer {
    int lfd;
    int reset;      /* RST instead of FIN */
};

/* Accepts one connection, waits for the ClientHello, then hangs up. */
static void *rude_peer_main(void *arg)
{
    struct rude_peer *r = arg;
    int fd = accept(r->lfd, NULL, NULL);
    struct pollfd p = {fd, POLLIN, 0};
    char buf[512];

    if (fd < 0)
        return NULL;
    if (poll(&p, 1, 5000) == 1 && recv(fd, buf, sizeof buf, 0) < 0)
        fprintf(stderr, "rude peer: %s\n", strerror(errno));
    if (r->reset) {
        struct linger l = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(fd);
    return NULL;
}

static void check_peer_hangs_up(int reset, const char *word)
{
    struct rude_peer r = {-1, reset};
    sl_tls_ctx *t = ctx_trusting_ca();
    sluice_error err;
    sl_tls *s = NULL;
    pthread_t th;
    int port, fd;

    r.lfd = tu_listen(64, &port);
    CU_ASSERT_FATAL(r.lfd >= 0);
    CU_ASSERT_FATAL(pthread_create(&th, NULL, rude_peer_main, &r) == 0);
    fd = connect_nonblocking(port);
    CU_ASSERT_FATAL(fd >= 0);
    /* EIO, not ETIMEDOUT at the 30 s deadline: the hang-up itself ended it. */
    CU_ASSERT_EQUAL(sl_tls_connect(t, fd, "localhost", NULL, 0, sl_deadline_in_ms(30000), &s, NULL,
                                   &err), SLUICE_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, word));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "localhost"));
    pthread_join(th, NULL);
    close(fd);
    close(r.lfd);
    sl_tls_ctx_free(t);
}

static void test_tls_peer_closes_mid_handshake(void)
{
    check_peer_hangs_up(0, "closed");
}

static void test_tls_peer_resets_mid_handshake(void)
{
    check_peer_hangs_up(1, "reset");
}

/* ---- tests: threads and configuration -------------------------------------- */

#define THREADS 32

struct shared_run {
    sl_tls_ctx *t;
    const peer *p;
    int ok;
    char msg[256];
};

/* Two requests: each thread resumes the cached session and stores the
 * tickets it receives while the others do the same. */
static void *two_requests(void *arg)
{
    struct shared_run *r = arg;
    char buf[4096];
    sluice_error err = {0};
    int i;

    r->ok = 0;
    for (i = 0; i < 2; i++) {
        ssize_t n = https_get(r->t, r->p->port, "localhost", buf, sizeof buf, NULL, &err);
        r->ok += n == (ssize_t)strlen(r->p->response) && strcmp(buf, r->p->response) == 0;
    }
    snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    return NULL;
}

/* Heap in use (0 under a sanitizer's allocator). */
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

/* Every thread handshakes on one context; and wolfSSL's per-thread state
 * (an ECC cache of megabytes) does not outlive the threads. */
static void test_tls_shared_ctx_many_threads(void)
{
    struct shared_run runs[THREADS];
    pthread_t th[THREADS];
    sl_tls_ctx *t = ctx_trusting_ca();
    uint64_t full, resumed;
    size_t heap_before;
    int i, ok = 0;
    peer p;

    if (mock_start(&p, "server", NULL) < 0)
        goto out;
    expect_ok(t, &p, "localhost");   /* caches a session to share */
    heap_before = heap_in_use();
    for (i = 0; i < THREADS; i++) {
        runs[i].t = t;
        runs[i].p = &p;
        runs[i].ok = 0;
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, two_requests, &runs[i]) == 0);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += runs[i].ok;
        if (!runs[i].ok)
            fprintf(stderr, "\n  thread %d: %s\n", i, runs[i].msg);
    }
    CU_ASSERT_EQUAL(ok, 2 * THREADS);
    CU_ASSERT(heap_in_use() < heap_before + 8 * 1024 * 1024);
    sl_tls_ctx_counts(t, &full, &resumed);
    CU_ASSERT_EQUAL(full, 1);
    CU_ASSERT_EQUAL(resumed, 2 * THREADS);
    peer_stop(&p);
out:
    sl_tls_ctx_free(t);
}

static void test_tls_ctx_missing_files(void)
{
    sluice_factory_opts o;
    sluice_error err;

    CU_ASSERT_PTR_NULL(ctx_with("/nonexistent/sluice-ca.pem", 0, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ETLS);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/nonexistent/sluice-ca.pem"));
    memset(&o, 0, sizeof o);
    o.client_cert_file = cert_path("client.pem");
    o.client_key_file = "/nonexistent/client.key";
    CU_ASSERT_PTR_NULL(sl_tls_ctx_new(&o, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ETLS);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/nonexistent/client.key"));
    /* A file that exists but holds no certificate. */
    CU_ASSERT_PTR_NULL(ctx_with(cert_path("server.key"), 0, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ETLS);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "server.key"));
    CU_ASSERT_PTR_NULL(ctx_with(NULL, 11, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
}

static void test_tls_connect_bad_arguments(void)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    char longhost[300];
    sluice_error err;
    sl_tls *s = (sl_tls *)&err;

    memset(longhost, 'a', sizeof longhost - 1);
    longhost[sizeof longhost - 1] = '\0';
    CU_ASSERT_EQUAL(sl_tls_connect(t, -1, "localhost", NULL, 0, SL_NO_DEADLINE, &s, NULL, &err),
                    SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(sl_tls_connect(t, 0, "", NULL, 0, SL_NO_DEADLINE, &s, NULL, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_tls_connect(NULL, 0, "localhost", NULL, 0, SL_NO_DEADLINE, &s, NULL, &err),
                    SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_tls_connect(t, 0, longhost, NULL, 0, SL_NO_DEADLINE, &s, NULL, &err),
                    SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_tls_read(NULL, longhost, 1, SL_NO_DEADLINE, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_tls_write(NULL, "x", 1, SL_NO_DEADLINE, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_tls_pending(NULL), 0);
    sl_tls_free(NULL);
    sl_tls_ctx_free(NULL);
    sl_tls_ctx_free(t);
}

static CU_TestInfo tests[] = {
    {"test_tls_get_and_resume_tls13", test_tls_get_and_resume_tls13},
    {"test_tls_get_and_resume_tls12_ticket", test_tls_get_and_resume_tls12_ticket},
    {"test_tls_get_and_resume_tls12_session_id", test_tls_get_and_resume_tls12_session_id},
    {"test_tls_resume_is_per_origin", test_tls_resume_is_per_origin},
    {"test_tls_session_cache_lru", test_tls_session_cache_lru},
    {"test_tls_alpn_http11", test_tls_alpn_http11},
    {"test_tls_alpn_server_without_alpn", test_tls_alpn_server_without_alpn},
    {"test_tls_read_deadline_and_pending", test_tls_read_deadline_and_pending},
    {"test_tls_out_of_memory", test_tls_out_of_memory},
    {"test_tls_verify_unknown_ca", test_tls_verify_unknown_ca},
    {"test_tls_verify_expired", test_tls_verify_expired},
    {"test_tls_verify_wrong_host", test_tls_verify_wrong_host},
    {"test_tls_verify_self_signed", test_tls_verify_self_signed},
    {"test_tls_insecure_accepts_self_signed_and_warns",
     test_tls_insecure_accepts_self_signed_and_warns},
    {"test_tls_ip_literal_verified_against_ip_san", test_tls_ip_literal_verified_against_ip_san},
    {"test_tls_cn_only_certificate", test_tls_cn_only_certificate},
    {"test_tls_mutual_requires_client_cert_tls13", test_tls_mutual_requires_client_cert_tls13},
    {"test_tls_mutual_requires_client_cert_tls12", test_tls_mutual_requires_client_cert_tls12},
    {"test_tls_version_mismatch", test_tls_version_mismatch},
    {"test_tls_handshake_deadline", test_tls_handshake_deadline},
    {"test_tls_peer_closes_mid_handshake", test_tls_peer_closes_mid_handshake},
    {"test_tls_peer_resets_mid_handshake", test_tls_peer_resets_mid_handshake},
    {"test_tls_shared_ctx_many_threads", test_tls_shared_ctx_many_threads},
    {"test_tls_ctx_missing_files", test_tls_ctx_missing_files},
    {"test_tls_connect_bad_arguments", test_tls_connect_bad_arguments},
    CU_TEST_INFO_NULL,
};

void suite_tls(void);
void suite_tls(void)
{
    tu_add_suite("tls", tests);
}
