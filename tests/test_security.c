/* Security: request splitting refused before anything reaches the wire,
 * response smuggling shapes refused, header count and size caps, and
 * secrets kept out of every log line, error message, hook and metric.
 * (That two credentials never share a coalesced flight is
 * tests/test_coalescing.c test_coalescing_never_crosses_credentials.) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

static sluice_client *client_on(sluice_factory **f, const char *service, const char *base,
                                const sluice_header *h, size_t nh)
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    if (!*f && !(*f = sluice_factory_new(NULL, &err)))
        return NULL;
    sluice_client_opts_init(&co);
    co.base_url = base;
    co.headers = h;
    co.nheaders = nh;
    co.read_timeout_ms = 3000;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    c = sluice_factory_client(*f, service, &co, &err);
    if (!c)
        fprintf(stderr, "\n  client %s: %s", service, err.msg);
    return c;
}

/* ---- a listener that records everything that reaches it ----------------- */

#define MAX_CONNS 32

struct recorder {
    int lfd, port;
    atomic_int stop;
    atomic_int conns;
    atomic_long bytes;
    pthread_t th;
};

/* Each connection's bytes are counted; a complete head is answered 204. */
static void serve_readable(struct recorder *r, struct pollfd *p, char (*heads)[4096],
                           size_t *lens)
{
    static const char resp[] = "HTTP/1.1 204 No Content\r\n\r\n";
    ssize_t n = recv(p->fd, heads[0] + lens[0], sizeof heads[0] - 1 - lens[0], 0);

    if (n <= 0) {
        close(p->fd);
        p->fd = -1;
        return;
    }
    atomic_fetch_add(&r->bytes, n);
    lens[0] += (size_t)n;
    heads[0][lens[0]] = '\0';
    if (strstr(heads[0], "\r\n\r\n")) {
        tu_write_all(p->fd, resp, sizeof resp - 1);
        lens[0] = 0;
    } else if (lens[0] + 1 >= sizeof heads[0]) {
        lens[0] = 0;
    }
}

static void *recorder_main(void *arg)
{
    static char heads[MAX_CONNS + 1][4096];
    struct recorder *r = arg;
    struct pollfd p[MAX_CONNS + 1];
    size_t lens[MAX_CONNS + 1] = {0};
    int n = 1, i;

    p[0] = (struct pollfd){r->lfd, POLLIN, 0};
    while (!atomic_load(&r->stop)) {
        if (poll(p, (nfds_t)n, 20) <= 0)
            continue;
        for (i = 1; i < n; i++)
            if (p[i].fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                serve_readable(r, &p[i], &heads[i], &lens[i]);
        if ((p[0].revents & POLLIN) && n < MAX_CONNS + 1) {
            int fd = accept(r->lfd, NULL, NULL);
            if (fd >= 0) {
                atomic_fetch_add(&r->conns, 1);
                lens[n] = 0;
                p[n++] = (struct pollfd){fd, POLLIN, 0};
            }
        }
    }
    for (i = 0; i < n; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    return NULL;
}

static int recorder_start(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    if ((r->lfd = tu_listen(64, &r->port)) < 0)
        return -1;
    return pthread_create(&r->th, NULL, recorder_main, r);
}

static void recorder_stop(struct recorder *r)
{
    atomic_store(&r->stop, 1);
    pthread_join(r->th, NULL);   /* closes lfd with the rest */
}

/* ---- request splitting ----------------------------------------------------- */

struct injection {
    const char *what;       /* the part the error must name */
    sluice_request req;
};

static const sluice_header hv_crlf[] = {{"X-Ok", "a\r\nInjected: 1"}};
static const sluice_header hv_lf[] = {{"X-Ok", "a\nInjected: 1"}};
static const sluice_header hv_cr[] = {{"X-Ok", "a\rb"}};
static const sluice_header hv_ctl[] = {{"X-Ok", "a\x01"}};
static const sluice_header hv_del[] = {{"X-Ok", "a\x7f"}};
static const sluice_header hn_crlf[] = {{"X-A\r\nInjected", "1"}};
static const sluice_header hn_lf[] = {{"X-A\nB", "1"}};
static const sluice_header hn_cr[] = {{"X-A\r", "1"}};
static const sluice_header hn_colon[] = {{"X-A: b", "1"}};
static const sluice_header hn_space[] = {{"X A", "1"}};
static const sluice_header hn_empty[] = {{"", "1"}};
static const sluice_header h_cl[] = {{"Content-Length", "0"}};
static const sluice_header h_te[] = {{"transfer-encoding", "chunked"}};
static const sluice_header h_host[] = {{"Host", "a\r\nInjected: 1"}};

#define REQ(...) {__VA_ARGS__}

static const struct injection injections[] = {
    {"method", REQ(.method = "GET\r\nInjected: 1", .path = "/json")},
    {"method", REQ(.method = "GET\n", .path = "/json")},
    {"method", REQ(.method = "G\rET", .path = "/json")},
    {"method", REQ(.method = "GET /x HTTP/1.1\r\n\r\nGET", .path = "/json")},
    {"path", REQ(.path = "/json\r\nInjected: 1")},
    {"path", REQ(.path = "/json\nInjected: 1")},
    {"path", REQ(.path = "/json\rX")},
    {"path", REQ(.path = "/json HTTP/1.1\r\nX: y")},
    {"path", REQ(.path = "/json\tx")},
    {"path", REQ(.path = "/json?a=\r\n")},
    {"header", REQ(.path = "/json", .headers = hv_crlf, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hv_lf, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hv_cr, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hv_ctl, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hv_del, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hn_crlf, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hn_lf, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hn_cr, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hn_colon, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hn_space, .nheaders = 1)},
    {"header", REQ(.path = "/json", .headers = hn_empty, .nheaders = 1)},
    {"Content-Length", REQ(.path = "/json", .headers = h_cl, .nheaders = 1)},
    {"transfer-encoding", REQ(.path = "/json", .headers = h_te, .nheaders = 1)},
    {"Host", REQ(.path = "/json", .headers = h_host, .nheaders = 1)},
};

/* CR, LF, other control bytes and separators in the method, path, a header
 * name or value are refused with SLUICE_EINVAL naming the part, and
 * nothing reaches the server: no byte, not even a connection.  (NUL cannot
 * occur inside a C string argument: it ends it.) */
static void test_security_splitting_refused_before_sending(void)
{
    struct recorder r;
    sluice_factory *f = NULL;
    sluice_client *c;
    sluice_error err;
    char base[64];
    size_t i;

    CU_ASSERT_FATAL(recorder_start(&r) == 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", r.port);
    c = client_on(&f, "split", base, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < sizeof injections / sizeof injections[0]; i++) {
        sluice_response *out = NULL;
        int rc = sluice_client_do(c, &injections[i].req, &out, &err);
        if (rc != SLUICE_EINVAL || !strcasestr(err.msg, injections[i].what))
            fprintf(stderr, "\n  injection %zu: %s \"%s\"", i, sluice_err_name(rc), err.msg);
        CU_ASSERT_EQUAL(rc, SLUICE_EINVAL);
        CU_ASSERT_PTR_NULL(out);
        CU_ASSERT_PTR_NOT_NULL(strcasestr(err.msg, injections[i].what));
    }
    usleep(100 * 1000);
    CU_ASSERT_EQUAL(atomic_load(&r.bytes), 0);
    CU_ASSERT_EQUAL(atomic_load(&r.conns), 0);
    /* The recorder does see a valid request. */
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 204);
    CU_ASSERT(atomic_load(&r.bytes) > 0);
    sluice_factory_free(f);
    recorder_stop(&r);
}

static void tune_bad_user_agent(sluice_factory_opts *fo)
{
    fo->user_agent = "sluice\r\nInjected: 1";
}

/* Defaults set once are checked once: a client's own headers or the
 * factory's User-Agent with CR/LF are refused, and nothing is sent. */
static void test_security_splitting_in_defaults_refused(void)
{
    static const sluice_header bad[] = {{"Authorization", "Bearer x\r\nInjected: 1"}};
    sluice_factory_opts fo;
    struct recorder r;
    sluice_factory *f = NULL;
    sluice_client *c;
    sluice_error err;
    char base[64];

    CU_ASSERT_FATAL(recorder_start(&r) == 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", r.port);
    c = client_on(&f, "bad-defaults", base, bad, 1);
    if (c)   /* refused at creation, or at every call */
        CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), SLUICE_EINVAL);
    sluice_factory_free(f);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    tune_bad_user_agent(&fo);
    f = sluice_factory_new(&fo, &err);
    if (f) {
        c = client_on(&f, "bad-ua", base, NULL, 0);
        CU_ASSERT_PTR_NOT_NULL(c);
        if (c)
            CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), SLUICE_EINVAL);
        sluice_factory_free(f);
    } else {
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    }
    usleep(100 * 1000);
    CU_ASSERT_EQUAL(atomic_load(&r.bytes), 0);
    CU_ASSERT_EQUAL(atomic_load(&r.conns), 0);
    recorder_stop(&r);
}

/* Query names and values are data: CR, LF and NUL-free control bytes are
 * percent-encoded, so they arrive as text and never as a new line. */
static void test_security_query_is_encoded_not_split(void)
{
    static const sluice_header q[] = {{"a\r\nInjected: 1", "b\r\nInjected: 2"},
                                      {"c", "\n\r\x01 &="}};
    sluice_request req = {.path = "/echo", .query = q, .nquery = 2};
    sluice_factory *f = NULL;
    sluice_client *c = client_on(&f, "query", tu_http_base(), NULL, 0);
    sluice_response *r = NULL;
    sluice_error err;
    const char *body;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    body = sluice_response_body(r, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "a%0D%0AInjected%3A%201=b%0D%0AInjected%3A%202"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "c=%0A%0D%01%20%26%3D"));
    CU_ASSERT_PTR_NULL(strstr(body, "[\"Injected\""));
    sluice_response_free(r);
    sluice_factory_free(f);
}

/* ---- response smuggling ---------------------------------------------------- */

/* Shapes tests/test_client.c does not try; each is refused and its
 * connection is never used again. */
static void test_security_smuggling_shapes_refused(void)
{
    static const struct { const char *path; int code; } shapes[] = {
        {"/raw/list-cl", SLUICE_EPROTO},       {"/raw/plus-cl", SLUICE_EPROTO},
        {"/raw/chunk-overflow", SLUICE_EPROTO}, {"/raw/chunk-no-crlf", SLUICE_EPROTO},
        {"/raw/cr-header", SLUICE_EPROTO},      {"/raw/no-colon", SLUICE_EPROTO},
        {"/raw/bad-name", SLUICE_EPROTO},       {"/raw/short-status", SLUICE_EPROTO},
        {"/raw/bad-version", SLUICE_EPROTO},    {"/raw/not-http", SLUICE_EPROTO},
        /* Cut short: never a 200 with a partial body. */
        {"/raw/chunk-truncated", SLUICE_EIO},   {"/raw/short-body", SLUICE_EIO},
    };
    sluice_factory *f = NULL;
    sluice_client *c = client_on(&f, "smuggle", tu_http_base(), NULL, 0);
    struct sluice_factory_stats st;
    sluice_error err;
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int rc = tu_get_status(c, shapes[i].path, &err);
        if (rc != shapes[i].code)
            fprintf(stderr, "\n  %s gave %s (%s)", shapes[i].path, sluice_err_name(rc), err.msg);
        CU_ASSERT_EQUAL(rc, shapes[i].code);
    }
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.reused, 0);
    CU_ASSERT_EQUAL(st.pool.idle, 0);
    sluice_factory_free(f);
}

/* A server that answers one request with two responses, the second
 * already in flight with the first or arriving just after it. */
struct doubler {
    int lfd;
    int delay_ms;            /* between the two responses */
    atomic_int conns;
    atomic_int sent_both;    /* the second response is on the wire */
};

static void *doubler_main(void *arg)
{
    static const char two[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                              "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmuggl";
    static const char real[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal";
    struct doubler *d = arg;
    int i;

    for (i = 0; i < 2; i++) {
        struct pollfd p = {d->lfd, POLLIN, 0};
        char buf[4096];
        int fd;
        if (poll(&p, 1, 5000) != 1 || (fd = accept(d->lfd, NULL, NULL)) < 0)
            return NULL;
        atomic_fetch_add(&d->conns, 1);
        tu_read_response(fd, buf, sizeof buf, 2000);   /* the request head */
        if (i == 0) {
            tu_write_all(fd, two, 43);
            usleep((useconds_t)d->delay_ms * 1000);
            tu_write_all(fd, two + 43, sizeof two - 1 - 43);
            atomic_store(&d->sent_both, 1);
            /* Whatever comes next on this connection would be answered by
             * the smuggled response already sent; keep it open a while. */
            p.fd = fd;
            poll(&p, 1, 1000);
        } else {
            tu_write_all(fd, real, sizeof real - 1);
        }
        close(fd);
    }
    return NULL;
}

static int doubler_sent_both(void *d)
{
    return atomic_load(&((struct doubler *)d)->sent_both);
}

static void check_second_response_not_taken(int delay_ms)
{
    struct doubler d = {-1, delay_ms, 0, 0};
    sluice_factory *f = NULL;
    sluice_response *r = NULL;
    sluice_client *c;
    sluice_error err;
    char base[64];
    pthread_t th;
    int port;

    d.lfd = tu_listen(64, &port);
    CU_ASSERT_FATAL(d.lfd >= 0);
    CU_ASSERT_FATAL(pthread_create(&th, NULL, doubler_main, &d) == 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    c = client_on(&f, "double", base, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(sluice_get(c, "/first", &r, &err), 0);
    CU_ASSERT_STRING_EQUAL(r ? (const char *)sluice_response_body(r, NULL) : "", "hello");
    sluice_response_free(r);
    r = NULL;
    /* The smuggled response is sent (however late a loaded host makes
     * the server), then has a moment to land on the pooled connection. */
    CU_ASSERT(tu_wait_until(doubler_sent_both, &d, 10000));
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(sluice_get(c, "/second", &r, &err), 0);
    CU_ASSERT_STRING_EQUAL(r ? (const char *)sluice_response_body(r, NULL) : "", "real");
    sluice_response_free(r);
    CU_ASSERT_EQUAL(atomic_load(&d.conns), 2);
    sluice_factory_free(f);
    pthread_join(th, NULL);
    close(d.lfd);
}

/* Bytes after a complete response were never asked for: the connection
 * is dropped, so they can never answer the next request. */
static void test_security_unasked_response_never_answers_next(void)
{
    check_second_response_not_taken(0);
    check_second_response_not_taken(100);
}

/* ---- header caps ---------------------------------------------------------- */

static void test_security_header_count_and_size_caps(void)
{
    sluice_factory_opts fo;
    sluice_factory *f = NULL;
    sluice_client *c = client_on(&f, "caps", tu_http_base(), NULL, 0);
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    /* At most 100 header fields (the mock API adds a few of its own). */
    CU_ASSERT_EQUAL(tu_get_status(c, "/headers/90", &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(c, "/headers/101", &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(err.msg, "header"));
    CU_ASSERT_EQUAL(tu_get_status(c, "/headers/100000", &err), SLUICE_EPROTO);
    /* At most 64 KiB of head. */
    CU_ASSERT_EQUAL(tu_get_status(c, "/bigheader/60000", &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(c, "/bigheader/65536", &err), SLUICE_EPROTO);
    /* Far past it too: 16x the cap (more only costs a sanitized mock API
     * seconds of composing before the first byte, past the read timeout). */
    CU_ASSERT_EQUAL(tu_get_status(c, "/bigheader/1048576", &err), SLUICE_EPROTO);
    sluice_factory_free(f);
    /* The cap is the factory's max_header_bytes. */
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_header_bytes = 4096;
    f = sluice_factory_new(&fo, &err);
    c = client_on(&f, "caps-small", tu_http_base(), NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/bigheader/3000", &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(c, "/bigheader/4096", &err), SLUICE_EPROTO);
    sluice_factory_free(f);
}

/* ---- secrets never leak ------------------------------------------------------ */

#define TOKEN "tok-9f8e7d6c5b4a"
#define QSECRET "qs-1a2b3c4d"
#define REDIS_PASS "s3cret"
#define WRONG_PASS "wr0ng-pa55"
#define URL_PASS "urlpa55"

static const char *const secrets[] = {TOKEN, QSECRET, REDIS_PASS, WRONG_PASS, URL_PASS};

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static long seen_lines, seen_leaks;

static void check_text(const char *where, const char *text)
{
    size_t i;

    for (i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        if (strstr(text, secrets[i])) {
            pthread_mutex_lock(&seen_mu);
            seen_leaks++;
            pthread_mutex_unlock(&seen_mu);
            fprintf(stderr, "\n  %s carries a secret: %.300s", where, text);
        }
    }
}

static void log_sink(sluice_log_level level, const char *msg, void *ud)
{
    (void)level;
    (void)ud;
    pthread_mutex_lock(&seen_mu);
    seen_lines++;
    pthread_mutex_unlock(&seen_mu);
    check_text("a log line", msg);
}

static void hook_sink(const sluice_request_info *info, void *ud)
{
    (void)ud;
    check_text("a hook's url", info->url);
}

static void check_err(const sluice_error *err)
{
    check_text("an error message", err->msg);
}

/* A private redis that wants REDIS_PASS. */
static int redis_with_password(tu_server *s)
{
    static const char cmd[] = "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$6\r\n"
                              REDIS_PASS "\r\n";
    char reply[64];
    int fd;

    if (tu_redis_start(s, 0) != 0)
        return -1;
    fd = tu_connect(s->addr);
    if (fd < 0 || tu_write_all(fd, cmd, sizeof cmd - 1) != 0 ||
        tu_read_all(fd, reply, 6, 3000) != 5 || strcmp(reply, "+OK\r\n") != 0) {
        if (fd >= 0)
            close(fd);
        tu_server_stop(s);
        CU_FAIL("could not set a Redis password");
        return -1;
    }
    close(fd);
    return 0;
}

static sluice_factory *secret_factory(const char *redis_url, sluice_error *err)
{
    sluice_factory_opts fo;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.redis_url = redis_url;
    fo.limiter_fail_mode = SLUICE_FAIL_CLOSED;
    fo.redis_timeout_ms = 300;
    fo.on_request_start = hook_sink;
    fo.on_request_end = hook_sink;
    fo.on_request_error = hook_sink;
    return sluice_factory_new(&fo, err);
}

/* Requests with the secret in headers and query, answered, failed, retried
 * and redirected; every outcome's message checked. */
static void exercise(sluice_client *c)
{
    static const sluice_header h[] = {{"Authorization", "Bearer " TOKEN},
                                      {"Cookie", "session=" TOKEN}};
    static const sluice_header q[] = {{"api_key", QSECRET}};
    static const char *const paths[] = {"/json", "/status/500", "/status/429?retry_after=0",
                                        "/raw/cl-te", "/stall", "/reset", "/redirect/2",
                                        "/headers/200", "/bigheader/70000"};
    sluice_request req = {.headers = h, .nheaders = 2, .query = q, .nquery = 1,
                          .timeout_ms = 1500};
    size_t i;

    for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        sluice_response *r = NULL;
        sluice_error err = {0};
        req.path = paths[i];
        sluice_client_do(c, &req, &r, &err);
        check_err(&err);
        sluice_response_free(r);
    }
    /* Secrets inside a bad header are refused and not echoed. */
    {
        sluice_header bad[] = {{"Authorization", "Bearer " TOKEN "\r\nX: 1"}};
        sluice_response *r = NULL;
        sluice_error err = {0};
        req.path = "/json";
        req.headers = bad;
        req.nheaders = 1;
        CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EINVAL);
        check_err(&err);
    }
}

static int breaker_off;

static sluice_client *secret_client(sluice_factory *f, const char *service, const char *base)
{
    static const sluice_header h[] = {{"Authorization", "Bearer " TOKEN}};
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = base;
    co.headers = h;
    co.nheaders = 1;
    co.read_timeout_ms = 500;
    co.follow_redirects = 1;
    co.retry.max_retries = 1;
    co.retry.backoff_factor_ms = 1;
    co.rate_limit.rate = 1000;
    co.rate_limit.burst = 1000;
    co.breaker.disabled = breaker_off;
    c = sluice_factory_client(f, service, &co, &err);
    check_err(&err);
    return c;
}

/* Everything the library says, at debug level, while it handles an
 * Authorization header, a secret query value, a Redis password (right and
 * wrong) and a URL with credentials, through successes and failures:
 * no secret in any log line, error message, hook URL or metrics export. */
static void test_security_secrets_never_logged(void)
{
    char url[160], refused[64], *metrics;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err = {0};
    tu_server s;
    size_t n;

    TU_REQUIRE(tu_http_base());
    if (redis_with_password(&s) != 0)
        return;
    seen_lines = seen_leaks = 0;
    sluice_set_log(log_sink, SLUICE_LOG_DEBUG, NULL);
    /* The wrong password: the factory is refused, without it. */
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", WRONG_PASS, s.port);
    CU_ASSERT_PTR_NULL(secret_factory(url, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ELIMITER);
    check_err(&err);
    /* The right one, with traffic. */
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", REDIS_PASS, s.port);
    f = secret_factory(url, &err);
    check_err(&err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = secret_client(f, "secret", tu_http_base());
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    exercise(c);
    /* Credentials in a base URL are refused without being echoed. */
    CU_ASSERT_PTR_NULL(secret_client(f, "url-creds", "http://user:" URL_PASS "@127.0.0.1:1/"));
    /* A dead upstream and, later, a dead Redis. */
    {
        int port, fd = tu_listen(64, &port);
        CU_ASSERT_FATAL(fd >= 0);
        close(fd);   /* nothing listens there now */
        snprintf(refused, sizeof refused, "http://127.0.0.1:%d", port);
    }
    c = secret_client(f, "dead", refused);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    exercise(c);
    tu_server_stop(&s);
    breaker_off = 1;    /* so calls reach the limiter */
    c = secret_client(f, "secret-redis-down", tu_http_base());
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    exercise(c);
    breaker_off = 0;
    n = sluice_factory_metrics(f, SLUICE_METRICS_JSON, NULL, 0);
    metrics = malloc(n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(metrics);
    sluice_factory_metrics(f, SLUICE_METRICS_JSON, metrics, n + 1);
    check_text("the JSON metrics", metrics);
    free(metrics);
    n = sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, NULL, 0);
    metrics = malloc(n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(metrics);
    sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, metrics, n + 1);
    check_text("the Prometheus metrics", metrics);
    free(metrics);
    sluice_factory_free(f);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    fprintf(stderr, "\n  %ld log lines checked", seen_lines);
    CU_ASSERT(seen_lines > 0);
    CU_ASSERT_EQUAL(seen_leaks, 0);
}

/* The Host a redirect's target received, read from /echo's JSON into
 * out: 0, or -1 when it sent none. */
static int echoed_host(const sluice_response *r, char *out, size_t cap)
{
    const char *body = sluice_response_body(r, NULL), *p, *end;

    if (!body || !(p = strcasestr(body, "[\"host\",\"")))
        return -1;
    p += 9;
    if (!(end = strchr(p, '"')) || (size_t)(end - p) >= cap)
        return -1;
    snprintf(out, cap, "%.*s", (int)(end - p), p);
    return 0;
}

/* A caller's Host names the origin it was set for: a redirect to another
 * origin sends that origin its own Host (as curl does), a same-origin one
 * keeps the caller's.  Both the client's default headers and a request's
 * own are checked. */
static void test_security_redirect_leaves_host_behind(void)
{
    static const sluice_header dflt[] = {{"Host", "default.example.test"}};
    static const sluice_header own[] = {{"Host", "own.example.test"}};
    sluice_factory *f = NULL;
    sluice_client_opts co;
    sluice_client *c;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    char path[256], host[128];
    tu_server b;

    TU_REQUIRE(tu_http_base());
    if (!(f = sluice_factory_new(NULL, &err)))
        CU_FAIL_FATAL("factory");
    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    co.headers = dflt;
    co.nheaders = 1;
    co.read_timeout_ms = 3000;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    co.follow_redirects = 1;
    c = sluice_factory_client(f, "host-redir", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    /* Same origin: the caller's Host stays. */
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/redirect-to?url=/echo", &r, &err), 0);
    CU_ASSERT_EQUAL(echoed_host(r, host, sizeof host), 0);
    CU_ASSERT_STRING_EQUAL(host, "default.example.test");
    sluice_response_free(r);
    req.path = "/redirect-to?url=/echo";
    req.headers = own;
    req.nheaders = 1;
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    CU_ASSERT_EQUAL(echoed_host(r, host, sizeof host), 0);
    CU_ASSERT_STRING_EQUAL(host, "own.example.test");
    sluice_response_free(r);
    /* Another origin (a second mock API): it gets its own Host. */
    if (tu_mockapi_start(&b, NULL))
        goto out;
    snprintf(path, sizeof path, "/redirect-to?url=%s/echo&status=307", b.url);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_EQUAL(echoed_host(r, host, sizeof host), 0);
    CU_ASSERT_STRING_EQUAL(host, b.addr);
    CU_ASSERT_PTR_NULL(strstr(sluice_response_body(r, NULL), "example.test"));
    sluice_response_free(r);
    req.path = path;
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(c, &req, &r, &err), 0);
    CU_ASSERT_EQUAL(echoed_host(r, host, sizeof host), 0);
    CU_ASSERT_STRING_EQUAL(host, b.addr);
    CU_ASSERT_PTR_NULL(strstr(sluice_response_body(r, NULL), "example.test"));
    sluice_response_free(r);
    tu_server_stop(&b);
out:
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_security_splitting_refused_before_sending", test_security_splitting_refused_before_sending},
    {"test_security_splitting_in_defaults_refused", test_security_splitting_in_defaults_refused},
    {"test_security_query_is_encoded_not_split", test_security_query_is_encoded_not_split},
    {"test_security_smuggling_shapes_refused", test_security_smuggling_shapes_refused},
    {"test_security_unasked_response_never_answers_next",
     test_security_unasked_response_never_answers_next},
    {"test_security_header_count_and_size_caps", test_security_header_count_and_size_caps},
    {"test_security_secrets_never_logged", test_security_secrets_never_logged},
    {"test_security_redirect_leaves_host_behind", test_security_redirect_leaves_host_behind},
    CU_TEST_INFO_NULL,
};

void suite_security(void);
void suite_security(void)
{
    tu_add_suite("security", tests);
}
