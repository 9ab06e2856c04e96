/* TLS client: handshakes, verification failures named by cause and host,
 * session resumption for TLS 1.2 and 1.3, deadlines, mutual TLS, and a
 * context shared by many threads.  The peer is `openssl s_server -WWW`
 * on 127.0.0.1 serving a file from the certificate directory. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "tls.h"
#include "testutil.h"

#define JSON_BODY "{\"hello\":\"world\"}\n"
#define JSON_RESPONSE "HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\n" JSON_BODY
#define REQUEST "GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

/* ---- certificates --------------------------------------------------------- */

/* Same file names as tests/gen-certs.sh: CA, other CA, server (localhost +
 * 127.0.0.1), expired, wrong host, client (clientAuth), self-signed,
 * unknown CA, CN only. */
static const char gen_script[] =
    "set -e; cd \"$1\"\n"
    "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1.key; }\n"
    "ca() { key $1; openssl req -x509 -new -key $1.key -subj \"/CN=$2\" -days 3650 -out $1.pem"
    " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign; }\n"
    "csr() { key $1; openssl req -new -key $1.key -subj \"/CN=$2\" -out $1.csr;"
    " printf '%s\\n' basicConstraints=CA:FALSE \"$3\" > $1.ext; }\n"
    "leaf() { csr $1 \"$3\" \"$4\"; openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key"
    " -CAcreateserial -days 3650 -extfile $1.ext -out $1.pem; }\n"
    "ca ca 'sluice test CA'; ca otherca 'sluice other CA'\n"
    "leaf server ca localhost subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    "leaf wronghost ca wrong.example subjectAltName=DNS:wrong.example\n"
    "leaf cnonly ca localhost keyUsage=digitalSignature\n"
    "leaf unknownca otherca localhost subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    "leaf client ca 'sluice client' extendedKeyUsage=clientAuth\n"
    "key selfsigned; openssl req -x509 -new -key selfsigned.key -subj /CN=localhost -days 3650"
    " -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -out selfsigned.pem\n"
    /* x509 -req cannot backdate; the ca command can. */
    "csr expired localhost subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    "printf '%s\\n' '[ca]' default_ca=d '[d]' database=index.txt new_certs_dir=. serial=serial"
    " default_md=sha256 policy=p '[p]' commonName=supplied > ca.cnf\n"
    ": > index.txt; echo 1000 > serial\n"
    "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem"
    " -startdate 20200101000000Z -enddate 20210101000000Z -extfile expired.ext -notext\n"
    "rm -f *.csr *.ext *.srl ca.cnf index.txt* serial* 1000.pem\n";

static char own_dir[64];
static const char *certs_dir;

static void remove_own_dir(void)
{
    char cmd[128];

    if (own_dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", own_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", own_dir);
    }
}

static int generate_certs(void)
{
    char script[96], cmd[512];
    FILE *f;

    snprintf(own_dir, sizeof own_dir, "/tmp/sluice-tls-XXXXXX");
    if (!mkdtemp(own_dir))
        return -1;
    atexit(remove_own_dir);
    snprintf(script, sizeof script, "%s/gen.sh", own_dir);
    f = fopen(script, "w");
    if (!f)
        return -1;
    fputs(gen_script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sh '%s' '%s' >'%s/gen.log' 2>&1 || { cat '%s/gen.log' >&2; exit 1; }",
             script, own_dir, own_dir, own_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The directory with the certificates and a "json" file to serve. */
static const char *certs(void)
{
    const char *env = getenv("SLUICE_TEST_CERTS");
    char path[256];
    FILE *f;

    static int failed;

    if (certs_dir)
        return certs_dir;
    if (failed) {
        CU_FAIL_FATAL("no test certificates (generation failed earlier)");
        return NULL;
    }
    if (env && *env) {
        certs_dir = env;
    } else if (generate_certs() == 0) {
        certs_dir = own_dir;
    } else {
        failed = 1;
        CU_FAIL_FATAL("could not generate test certificates with openssl");
        return NULL;
    }
    snprintf(path, sizeof path, "%s/json", certs_dir);
    f = fopen(path, "w");
    if (f) {
        fputs(JSON_BODY, f);
        fclose(f);
    }
    return certs_dir;
}

static const char *cert_path(const char *name)
{
    static _Thread_local char path[4][256];
    static _Thread_local int next;
    char *p = path[next++ % 4];

    snprintf(p, sizeof path[0], "%s/%s", certs(), name);
    return p;
}

/* ---- peers ---------------------------------------------------------------- */

typedef struct peer {
    pid_t pid;
    int port;
} peer;

static int free_port(void)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void peer_stop(peer *p)
{
    int status;

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
    if (fd < 0 || chdir(certs()) != 0)
        _exit(126);
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

/* Starts `openssl s_server -WWW` on a free loopback port with the named
 * certificate (cert.pem / cert.key) and extra arguments. */
static int peer_start(peer *p, const char *certname, const char *const *extra)
{
    char cert[256], key[256];
    int attempt;

    snprintf(cert, sizeof cert, "%s/%s.pem", certs(), certname);
    snprintf(key, sizeof key, "%s/%s.key", certs(), certname);
    for (attempt = 0; attempt < 5; attempt++) {
        p->port = free_port();
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
        if (n == 0 || len + (size_t)n + 1 >= cap)
            break;
        len += (size_t)n;
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

    if (fd < 0)
        return SLUICE_ECONNECT;
    snprintf(origin, sizeof origin, "https://%s:%d", host, port);
    rc = sl_tls_connect(t, fd, host, origin, sl_deadline_in_ms(10000), &s, resumed, err);
    if (rc == 0)
        rc = sl_tls_write(s, REQUEST, strlen(REQUEST), sl_deadline_in_ms(10000), err);
    if (rc == 0)
        rc = read_to_close(s, buf, cap, err);
    sl_tls_free(s);
    close(fd);
    return rc;
}

static void expect_ok(sl_tls_ctx *t, int port, const char *host)
{
    char buf[4096];
    sluice_error err = {0};
    ssize_t n = https_get(t, port, host, buf, sizeof buf, NULL, &err);

    if (n < 0)
        fprintf(stderr, "\n  unexpected failure: %s\n", err.msg);
    CU_ASSERT_EQUAL(n, (ssize_t)strlen(JSON_RESPONSE));
    if (n > 0)
        CU_ASSERT_STRING_EQUAL(buf, JSON_RESPONSE);
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

static void check_get_and_resume(const char *version_flag, const char *extra_flag)
{
    const char *args[] = {version_flag, extra_flag, NULL};
    sl_tls_ctx *t;
    uint64_t full, resumed;
    int r1 = -1, r2 = -1;
    char buf[4096];
    sluice_error err;
    peer p;

    if (peer_start(&p, "server", args) < 0)
        return;
    t = ctx_trusting_ca();
    CU_ASSERT_EQUAL(https_get(t, p.port, "localhost", buf, sizeof buf, &r1, &err),
                    (ssize_t)strlen(JSON_RESPONSE));
    CU_ASSERT_STRING_EQUAL(buf, JSON_RESPONSE);
    CU_ASSERT_EQUAL(https_get(t, p.port, "localhost", buf, sizeof buf, &r2, &err),
                    (ssize_t)strlen(JSON_RESPONSE));
    CU_ASSERT_STRING_EQUAL(buf, JSON_RESPONSE);
    sl_tls_ctx_counts(t, &full, &resumed);
    CU_ASSERT_EQUAL(r1, 0);
    CU_ASSERT_EQUAL(r2, 1);
    CU_ASSERT_EQUAL(full, 1);
    CU_ASSERT_EQUAL(resumed, 1);
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

static void test_tls_get_and_resume_tls13(void)
{
    check_get_and_resume("-tls1_3", NULL);
}

static void test_tls_get_and_resume_tls12_ticket(void)
{
    check_get_and_resume("-tls1_2", NULL);
}

static void test_tls_get_and_resume_tls12_session_id(void)
{
    check_get_and_resume("-tls1_2", "-no_ticket");
}

/* Sessions are cached per origin: another origin gets a full handshake. */
static void test_tls_resume_is_per_origin(void)
{
    sl_tls_ctx *t;
    uint64_t full, resumed;
    char buf[4096];
    sluice_error err;
    int r = -1;
    peer p;

    if (peer_start(&p, "server", NULL) < 0)
        return;
    t = ctx_trusting_ca();
    CU_ASSERT(https_get(t, p.port, "localhost", buf, sizeof buf, &r, &err) > 0);
    CU_ASSERT(https_get(t, p.port, "127.0.0.1", buf, sizeof buf, &r, &err) > 0);
    CU_ASSERT_EQUAL(r, 0);
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

    if (peer_start(&p, "server", args) < 0)
        return;
    t = ctx_trusting_ca();
    debug_line[0] = '\0';
    sluice_set_log(capture_debug, SLUICE_LOG_DEBUG, NULL);
    expect_ok(t, p.port, "localhost");
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

    if (peer_start(&p, "server", NULL) < 0)
        goto out;
    fd = connect_nonblocking(p.port);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(sl_tls_connect(t, fd, "localhost", NULL, sl_deadline_in_ms(10000), &s,
                                         NULL, &err), 0);
    start = tu_now_ms();
    CU_ASSERT_EQUAL(sl_tls_read(s, buf, sizeof buf, sl_deadline_in_ms(200), &err),
                    SLUICE_ETIMEDOUT);
    CU_ASSERT(tu_now_ms() - start >= 195 && tu_now_ms() - start <= 300);
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
    if (peer_start(&p, "server", NULL) < 0)
        goto out;
    for (n = 1; rc != 0 && n < 50; n++) {
        fd = connect_nonblocking(p.port);
        tu_alloc_install(n, 0);
        rc = sl_tls_connect(t, fd, "localhost", "https://localhost:1", sl_deadline_in_ms(10000),
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

/* ---- tests: verification ---------------------------------------------------- */

static void check_refused_cert(const char *certname, const char *host, const char *word)
{
    sl_tls_ctx *t;
    peer p;

    if (peer_start(&p, certname, NULL) < 0)
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

    if (peer_start(&p, "selfsigned", NULL) < 0)
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
    expect_ok(t, p.port, "localhost");
    expect_ok(t, p.port, "wrong.example");
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

static void test_tls_ip_literal_verified_against_ip_san(void)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    peer good, bad;

    if (peer_start(&good, "server", NULL) < 0)
        goto out;
    expect_ok(t, good.port, "127.0.0.1");
    peer_stop(&good);
    /* Valid chain and a DNS SAN, but no IP SAN for 127.0.0.1. */
    if (peer_start(&bad, "wronghost", NULL) < 0)
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

    if (peer_start(&p, "cnonly", NULL) < 0)
        goto out;
    expect_ok(t, p.port, "localhost");
    expect_refused(t, p.port, "other.example", SLUICE_ETLS, "host name", NULL);
    peer_stop(&p);
out:
    sl_tls_ctx_free(t);
}

/* ---- tests: mutual TLS and versions ---------------------------------------- */

static void test_tls_mutual_requires_client_cert(void)
{
    const char *args[] = {"-Verify", "1", "-verify_return_error", "-CAfile", NULL, NULL};
    sluice_factory_opts o;
    sluice_error err;
    sl_tls_ctx *anon, *with_cert;
    peer p;

    args[4] = cert_path("ca.pem");
    if (peer_start(&p, "server", args) < 0)
        return;
    anon = ctx_trusting_ca();
    /* In TLS 1.3 the client learns of the refusal only when it reads. */
    expect_refused(anon, p.port, "localhost", SLUICE_ETLS, "certificate", "alert");
    memset(&o, 0, sizeof o);
    o.ca_file = cert_path("ca.pem");
    o.client_cert_file = cert_path("client.pem");
    o.client_key_file = cert_path("client.key");
    with_cert = sl_tls_ctx_new(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(with_cert);
    expect_ok(with_cert, p.port, "localhost");
    sl_tls_ctx_free(anon);
    sl_tls_ctx_free(with_cert);
    peer_stop(&p);
}

static void test_tls_version_mismatch(void)
{
    const char *args[] = {"-tls1_2", NULL};
    sluice_error err;
    sl_tls_ctx *t;
    peer p;

    if (peer_start(&p, "server", args) < 0)
        return;
    t = ctx_with(cert_path("ca.pem"), 13, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    expect_refused(t, p.port, "localhost", SLUICE_ETLS, "version", "handshake");
    sl_tls_ctx_free(t);
    peer_stop(&p);
}

/* ---- tests: bad peers ------------------------------------------------------- */

/* A loopback listener the test drives by hand. */
static int listen_loopback(int *port)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Never answering: the kernel completes the TCP handshake, nobody reads. */
static void test_tls_handshake_deadline(void)
{
    sl_tls_ctx *t = ctx_trusting_ca();
    sluice_error err;
    sl_tls *s = NULL;
    int port, lfd = listen_loopback(&port), fd;
    int64_t start;

    CU_ASSERT_FATAL(lfd >= 0);
    fd = connect_nonblocking(port);
    CU_ASSERT_FATAL(fd >= 0);
    start = tu_now_ms();
    CU_ASSERT_EQUAL(sl_tls_connect(t, fd, "localhost", "https://localhost:1",
                                   sl_deadline_in_ms(300), &s, NULL, &err), SLUICE_ETIMEDOUT);
    CU_ASSERT(tu_now_ms() - start >= 295);
    CU_ASSERT(tu_now_ms() - start <= 400);
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
    int64_t start;

    r.lfd = listen_loopback(&port);
    CU_ASSERT_FATAL(r.lfd >= 0);
    CU_ASSERT_FATAL(pthread_create(&th, NULL, rude_peer_main, &r) == 0);
    fd = connect_nonblocking(port);
    CU_ASSERT_FATAL(fd >= 0);
    start = tu_now_ms();
    CU_ASSERT_EQUAL(sl_tls_connect(t, fd, "localhost", NULL, sl_deadline_in_ms(5000), &s, NULL,
                                   &err), SLUICE_EIO);
    CU_ASSERT(tu_now_ms() - start < 3000);
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
    int port;
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
        ssize_t n = https_get(r->t, r->port, "localhost", buf, sizeof buf, NULL, &err);
        r->ok += n == (ssize_t)strlen(JSON_RESPONSE) && strcmp(buf, JSON_RESPONSE) == 0;
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

    if (peer_start(&p, "server", NULL) < 0)
        goto out;
    expect_ok(t, p.port, "localhost");   /* caches a session to share */
    heap_before = heap_in_use();
    for (i = 0; i < THREADS; i++) {
        runs[i].t = t;
        runs[i].port = p.port;
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
    CU_ASSERT_PTR_NULL(ctx_with(cert_path("json"), 0, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ETLS);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "json"));
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
    CU_ASSERT_EQUAL(sl_tls_connect(t, -1, "localhost", NULL, SL_NO_DEADLINE, &s, NULL, &err),
                    SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(sl_tls_connect(t, 0, "", NULL, SL_NO_DEADLINE, &s, NULL, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_tls_connect(NULL, 0, "localhost", NULL, SL_NO_DEADLINE, &s, NULL, &err),
                    SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_tls_connect(t, 0, longhost, NULL, SL_NO_DEADLINE, &s, NULL, &err),
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
    {"test_tls_mutual_requires_client_cert", test_tls_mutual_requires_client_cert},
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
