/* sluice-mockapi over raw sockets: every path answers as documented, bad
 * requests get 400, connections follow the keep-alive rules, TLS works
 * (wolfSSL as the client), and the process starts and stops as promised. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "testutil.h"

#define BIG (1u << 20)

static unsigned pattern_byte(size_t i)
{
    return (unsigned)((i * 31 + 7) & 0xff);
}

/* A key no earlier run or test has used. */
static const char *unique(const char *stem)
{
    static char key[96];
    static unsigned seq;

    snprintf(key, sizeof key, "%s-%ld-%ld-%u", stem, (long)getpid(), (long)time(NULL), ++seq);
    return key;
}

static int send_str(int fd, const char *s)
{
    return tu_write_all(fd, s, strlen(s));
}

/* wolfSSL stays initialised for the whole run: other suites share it. */
static void tls_init_once(void)
{
    static int done;

    if (!done)
        done = wolfSSL_Init() == WOLFSSL_SUCCESS;
}

/* One request on a new connection to the shared instance. */
static ssize_t roundtrip(const char *req, char *buf, size_t cap)
{
    const char *addr = tu_http_addr();

    buf[0] = '\0';
    return addr ? tu_roundtrip(addr, req, buf, cap, 5000) : -1;
}

/* The body of the response in buf, "" when there is none. */
static const char *body_text(const char *buf)
{
    const char *b = tu_body(buf);

    return b ? b : "";
}

static ssize_t get(const char *target, char *buf, size_t cap)
{
    char req[1024];

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target);
    return roundtrip(req, buf, cap);
}

/* The value of header `name` in the head of response `resp`, or NULL. */
static const char *header(const char *resp, const char *name, char *out, size_t cap)
{
    const char *eoh = strstr(resp, "\r\n\r\n"), *p = resp;
    size_t n = strlen(name);

    while (eoh && (p = strstr(p, "\r\n")) && p < eoh) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(e - v), v);
            return out;
        }
    }
    return NULL;
}

/* Whether header `name` of the response in resp is exactly `want`. */
static int header_is(const char *resp, const char *name, const char *want)
{
    char v[256];
    const char *got = header(resp, name, v, sizeof v);

    if (got && strcmp(got, want) == 0)
        return 1;
    fprintf(stderr, "\n  %s: got \"%s\", want \"%s\"\n", name, got ? got : "(absent)", want);
    return 0;
}

/* Reads until the peer closes.  Returns 1 on EOF, 0 on timeout, -1 on an
 * error (errno kept); *len gets the bytes read. */
static int read_to_close(int fd, char *buf, size_t cap, int timeout_ms, size_t *len)
{
    int64_t end = tu_now_ms() + timeout_ms;

    *len = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = end - tu_now_ms();
        ssize_t n;
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return 0;
        n = recv(fd, buf + *len, cap - 1 - *len, 0);
        if (n < 0)
            return -1;
        if (n == 0) {
            buf[*len] = '\0';
            return 1;
        }
        *len += (size_t)n;
        buf[*len] = '\0';
        if (*len + 1 >= cap)
            return 0;
    }
}

/* Decodes a chunked body; returns its length or -1.  Copies the trailer
 * section into trailers. */
static long dechunk(const char *p, const char *end, unsigned char *out, size_t cap,
                    char *trailers, size_t tcap)
{
    size_t total = 0;

    for (;;) {
        char *e;
        unsigned long size = strtoul(p, &e, 16);
        const char *crlf = strstr(p, "\r\n");
        if (e == p || !crlf || crlf >= end)
            return -1;
        p = crlf + 2;
        if (size == 0)
            break;
        if (total + size > cap || p + size + 2 > end || memcmp(p + size, "\r\n", 2) != 0)
            return -1;
        memcpy(out + total, p, size);
        total += size;
        p += size + 2;
    }
    snprintf(trailers, tcap, "%.*s", (int)(end - p), p);
    return (long)total;
}

/* --- paths ------------------------------------------------------------- */

static void test_json_fixed_body(void)
{
    char buf[4096];

    CU_ASSERT_FATAL(get("/json", buf, sizeof buf) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT(header_is(buf, "Content-Type", "application/json"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body_text(buf), "\"ok\":true"));
}

static void test_bytes_pattern_exact(void)
{
    char *buf = malloc(BIG);
    const unsigned char *body;
    ssize_t n;
    size_t i, bad = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    n = get("/bytes/300000", buf, BIG);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT(header_is(buf, "Content-Length", "300000"));
    body = (const unsigned char *)tu_body(buf);
    CU_ASSERT_FATAL(body && n - (body - (unsigned char *)buf) == 300000);
    for (i = 0; i < 300000; i++)
        bad += body[i] != pattern_byte(i);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(get("/bytes/0", buf, BIG) > 0 && tu_status(buf) == 200 && *body_text(buf) == '\0');
    CU_ASSERT(get("/bytes/12x", buf, BIG) > 0 && tu_status(buf) == 400);
    free(buf);
}

static void test_chunked_decodes_to_pattern(void)
{
    char *buf = malloc(BIG), trailers[128];
    unsigned char *out = malloc(BIG);
    const char *body;
    size_t len, i, bad = 0;
    int fd;
    long n;

    CU_ASSERT_FATAL(buf && out);
    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /chunked/70000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    CU_ASSERT_EQUAL(read_to_close(fd, buf, BIG, 5000, &len), 1);
    close(fd);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(buf, "\r\nTransfer-Encoding: chunked\r\n"));
    CU_ASSERT_PTR_NULL(strcasestr(buf, "\r\nContent-Length:"));
    body = tu_body(buf);
    CU_ASSERT_FATAL(body != NULL);
    CU_ASSERT(strncmp(body, "1\r\n", 3) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\r\n7;"));           /* an extension */
    n = dechunk(body, buf + len, out, BIG, trailers, sizeof trailers);
    CU_ASSERT_EQUAL_FATAL(n, 70000);
    for (i = 0; i < 70000; i++)
        bad += out[i] != pattern_byte(i);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_STRING_EQUAL(trailers, "X-Trailer: done\r\n\r\n");
    free(buf);
    free(out);
}

static void test_hits_counts_per_path(void)
{
    char buf[4096], path[128], target[160];

    snprintf(path, sizeof path, "/%s", unique("hits"));
    get(path, buf, sizeof buf);
    snprintf(target, sizeof target, "%s?ignored=1", path);
    get(target, buf, sizeof buf);
    CU_ASSERT_EQUAL(tu_status(buf), 404);
    snprintf(target, sizeof target, "/hits%s", path);
    CU_ASSERT(get(target, buf, sizeof buf) > 0 && tu_status(buf) == 200);
    CU_ASSERT_STRING_EQUAL(body_text(buf), "2");
    /* Asking again does not count the asking. */
    CU_ASSERT(get(target, buf, sizeof buf) > 0);
    CU_ASSERT_STRING_EQUAL(body_text(buf), "2");
}

static void test_count_increments(void)
{
    char buf[4096], target[160];
    const char *key = unique("count");

    snprintf(target, sizeof target, "/count/%s", key);
    CU_ASSERT(get(target, buf, sizeof buf) > 0 && strcmp(body_text(buf), "1") == 0);
    CU_ASSERT(get(target, buf, sizeof buf) > 0 && strcmp(body_text(buf), "2") == 0);
    snprintf(target, sizeof target, "/count/%s?status=201&delay=10", key);
    CU_ASSERT(get(target, buf, sizeof buf) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 201);
    CU_ASSERT_STRING_EQUAL(body_text(buf), "3");
}

static void test_flaky_fails_then_succeeds(void)
{
    char buf[4096], target[160];

    snprintf(target, sizeof target, "/flaky/%s?fail=2&retry_after=1", unique("flaky"));
    CU_ASSERT(get(target, buf, sizeof buf) > 0 && tu_status(buf) == 503);
    CU_ASSERT(header_is(buf, "Retry-After", "1"));
    CU_ASSERT(get(target, buf, sizeof buf) > 0 && tu_status(buf) == 503);
    CU_ASSERT(get(target, buf, sizeof buf) > 0 && tu_status(buf) == 200);
    CU_ASSERT_STRING_EQUAL(body_text(buf), "3");
    snprintf(target, sizeof target, "/flaky/%s?fail=1&status=429", unique("flaky"));
    CU_ASSERT(get(target, buf, sizeof buf) > 0 && tu_status(buf) == 429);
}

static void test_status_retry_after(void)
{
    char buf[4096], v[64];
    struct tm tm = {0};
    time_t when;

    CU_ASSERT(get("/status/429?retry_after=7", buf, sizeof buf) > 0 && tu_status(buf) == 429);
    CU_ASSERT(header_is(buf, "Retry-After", "7"));
    CU_ASSERT(get("/status/503?retry_after_date=60", buf, sizeof buf) > 0 && tu_status(buf) == 503);
    CU_ASSERT_FATAL(header(buf, "Retry-After", v, sizeof v) != NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm));
    when = timegm(&tm);
    CU_ASSERT(when >= time(NULL) + 50 && when <= time(NULL) + 61);
    CU_ASSERT(get("/status/204", buf, sizeof buf) > 0 && tu_status(buf) == 204);
    CU_ASSERT_PTR_NULL(header(buf, "Content-Length", v, sizeof v));
    CU_ASSERT(get("/status/418", buf, sizeof buf) > 0 && tu_status(buf) == 418);
    CU_ASSERT_STRING_EQUAL(body_text(buf), "{\"status\":418}");
    CU_ASSERT(get("/status/99", buf, sizeof buf) > 0 && tu_status(buf) == 400);
}

static void test_echo_reports_request(void)
{
    static const char req[] = "POST /echo?a=1&b=%20 HTTP/1.1\r\nHost: h\r\nX-First: one\r\n"
                              "x-second:  two  \r\nContent-Length: 7\r\n\r\nq\"\\\n\xc3\xa9\xff";
    char buf[8192];

    CU_ASSERT_FATAL(roundtrip(req, buf, sizeof buf) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"method\":\"POST\",\"target\":\"/echo?a=1&b=%20\","
                                       "\"path\":\"/echo\",\"query\":\"a=1&b=%20\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"headers\":[[\"Host\",\"h\"],[\"X-First\",\"one\"],"
                                       "[\"x-second\",\"two\"],[\"Content-Length\",\"7\"]]"));
    /* UTF-8 passes through; a stray byte is escaped so the JSON stays valid. */
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"body_len\":7,\"body\":\"q\\\"\\\\\\n\xc3\xa9\\u00ff\"}"));
}

static void test_echo_raw_is_byte_exact(void)
{
    static const char body[] = "\x00\x01\xfe\xffhello\r\n";
    char req[256], buf[4096];
    int n = snprintf(req, sizeof req, "PUT /echo?raw=1 HTTP/1.1\r\nHost: h\r\nContent-Type: x/y\r\n"
                                      "Content-Length: %zu\r\n\r\n", sizeof body - 1);
    int fd;
    ssize_t got;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    memcpy(req + n, body, sizeof body - 1);
    tu_write_all(fd, req, (size_t)n + sizeof body - 1);
    got = tu_read_response(fd, buf, sizeof buf, 5000);
    close(fd);
    CU_ASSERT_EQUAL_FATAL(tu_status(buf), 200);
    CU_ASSERT(header_is(buf, "Content-Type", "x/y"));
    CU_ASSERT_FATAL(tu_body(buf) != NULL);
    CU_ASSERT_EQUAL(got - (tu_body(buf) - buf), (ssize_t)sizeof body - 1);
    CU_ASSERT(memcmp(tu_body(buf), body, sizeof body - 1) == 0);
}

static void test_echo_decodes_chunked_request(void)
{
    static const char req[] = "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    char buf[4096];

    CU_ASSERT_FATAL(roundtrip(req, buf, sizeof buf) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"body_len\":13,\"body\":\"abc0123456789\""));
}

static void test_expect_continue_answered(void)
{
    char buf[4096];
    int fd;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    CU_ASSERT(tu_read_response(fd, buf, sizeof buf, 5000) > 0);
    CU_ASSERT_STRING_EQUAL(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    send_str(fd, "hello");
    CU_ASSERT(tu_read_response(fd, buf, sizeof buf, 5000) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"body\":\"hello\""));
    close(fd);
}

static void test_redirect_location(void)
{
    char buf[4096];

    CU_ASSERT(get("/redirect/3", buf, sizeof buf) > 0 && tu_status(buf) == 302);
    CU_ASSERT(header_is(buf, "Location", "/redirect/2"));
    CU_ASSERT(get("/redirect/0", buf, sizeof buf) > 0 && tu_status(buf) == 200);
    CU_ASSERT(get("/redirect-to?url=http%3A%2F%2F127.0.0.1%3A1%2Fx%3Fy%3D1&status=307", buf, sizeof buf) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 307);
    CU_ASSERT(header_is(buf, "Location", "http://127.0.0.1:1/x?y=1"));
    CU_ASSERT(get("/redirect-to?url=a%0d%0aX:%201", buf, sizeof buf) > 0 && tu_status(buf) == 400);
}

static void test_headers_many_and_big(void)
{
    char *buf = malloc(BIG);

    CU_ASSERT_FATAL(buf != NULL);
    CU_ASSERT(get("/headers/150", buf, BIG) > 0 && tu_status(buf) == 200);
    CU_ASSERT(header_is(buf, "X-H-1", "v1"));
    CU_ASSERT(header_is(buf, "X-H-150", "v150"));
    CU_ASSERT(get("/bigheader/100000", buf, BIG) > 0 && tu_status(buf) == 200);
    CU_ASSERT(strstr(buf, "\r\n\r\n") - buf > 100000);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\nX-Big: abcdefghijklmnopqrstuvwxyzabc"));
    free(buf);
}

static void test_stall_sends_partial_head_then_nothing(void)
{
    char buf[256];
    size_t len;
    int fd;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /stall HTTP/1.1\r\nHost: h\r\n\r\n");
    /* Neither more bytes nor a close within 1.5 s. */
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 1500, &len), 0);
    CU_ASSERT_STRING_EQUAL(buf, "HTTP/1.1 200 OK\r\nContent-");
    close(fd);
}

static void test_reset_aborts_mid_body(void)
{
    char *buf = malloc(BIG);
    size_t len;
    int fd;

    CU_ASSERT_FATAL(buf != NULL);
    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /reset HTTP/1.1\r\nHost: h\r\n\r\n");
    CU_ASSERT_EQUAL(read_to_close(fd, buf, BIG, 5000, &len), -1);
    CU_ASSERT_EQUAL(errno, ECONNRESET);
    CU_ASSERT(len < 1000000);
    close(fd);
    free(buf);
}

static void test_close_closes_after_response(void)
{
    char buf[4096];
    size_t len;
    int fd;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /close HTTP/1.1\r\nHost: h\r\n\r\n");
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT(header_is(buf, "Connection", "close"));
    close(fd);
}

static void test_keepalive_serves_sequential_and_pipelined(void)
{
    static const char one[] = "GET /json HTTP/1.1\r\nHost: h\r\n\r\n";
    char buf[8192], *p;
    size_t len;
    int fd, i, responses = 0;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    for (i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(tu_write_all(fd, one, sizeof one - 1), 0);
        CU_ASSERT(tu_read_response(fd, buf, sizeof buf, 5000) > 0 && tu_status(buf) == 200);
    }
    /* Three requests in one write, the last asking to close. */
    snprintf(buf, sizeof buf, "%s%sGET /json HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", one, one);
    tu_write_all(fd, buf, strlen(buf));
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    for (p = buf; (p = strstr(p, "HTTP/1.1 200 OK")); p++)
        responses++;
    CU_ASSERT_EQUAL(responses, 3);
    close(fd);
}

static void test_http10_closes_unless_keepalive(void)
{
    char buf[4096];
    size_t len;
    int fd;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /json HTTP/1.0\r\n\r\n");
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    close(fd);
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CU_ASSERT(tu_read_response(fd, buf, sizeof buf, 5000) > 0);
    CU_ASSERT(header_is(buf, "Connection", "keep-alive"));
    send_str(fd, "GET /json HTTP/1.0\r\n\r\n");
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    close(fd);
}

static void test_head_has_headers_without_body(void)
{
    char buf[4096];
    int fd;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "HEAD /bytes/1000 HTTP/1.1\r\nHost: h\r\n\r\nGET /json HTTP/1.1\r\nHost: h\r\n\r\n");
    /* The HEAD answer carries Content-Length: 1000 and no body, so the next
     * response starts right after its blank line. */
    CU_ASSERT(tu_read_all(fd, buf, sizeof buf, 1000) > 0);
    CU_ASSERT(header_is(buf, "Content-Length", "1000"));
    CU_ASSERT(strncmp(body_text(buf), "HTTP/1.1 200 OK\r\n", 17) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "{\"ok\":true"));
    close(fd);
}

static void test_drip_paces_body(void)
{
    char buf[4096];
    int64_t start = tu_now_ms();
    const unsigned char *b;

    CU_ASSERT(get("/drip?bytes=5&interval_ms=100", buf, sizeof buf) > 0);
    CU_ASSERT(tu_now_ms() - start >= 450);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    b = (const unsigned char *)body_text(buf);
    CU_ASSERT(strlen((const char *)b) >= 5 && b[0] == pattern_byte(0) && b[4] == pattern_byte(4));
}

static void test_raw_responses_verbatim(void)
{
    static const char dup[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    static const char nul[] = "HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\n";
    char buf[4096];
    size_t len;
    int fd;

    TU_REQUIRE(tu_http_addr());
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /raw/dup-cl HTTP/1.1\r\nHost: h\r\n\r\n");
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    CU_ASSERT(len == sizeof dup - 1 && memcmp(buf, dup, len) == 0);
    close(fd);
    fd = tu_connect(tu_http_addr());
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /raw/nul-header HTTP/1.1\r\nHost: h\r\n\r\n");
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    CU_ASSERT(len > sizeof nul && memcmp(buf, nul, sizeof nul - 1) == 0);
    close(fd);
    CU_ASSERT(get("/raw/no-such", buf, sizeof buf) > 0 && tu_status(buf) == 404);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "cl-te"));
}

static void test_unknown_path_404_json(void)
{
    char buf[4096];

    CU_ASSERT(get("/no/such/path", buf, sizeof buf) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 404);
    CU_ASSERT_STRING_EQUAL(body_text(buf), "{\"error\":\"not found\",\"detail\":\"/no/such/path\"}");
}

/* --- malformed requests ---------------------------------------------------- */

static void expect_400(const char *req, size_t len)
{
    char buf[4096];
    size_t got;
    int fd = tu_connect(tu_http_addr());

    CU_ASSERT_FATAL(fd >= 0);
    tu_write_all(fd, req, len);
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &got), 1);
    if (tu_status(buf) != 400)
        fprintf(stderr, "\n  not refused: %.60s\n", req);
    CU_ASSERT_EQUAL(tu_status(buf), 400);
    close(fd);
}

static void test_malformed_requests_get_400(void)
{
    static const struct { const char *text; size_t len; } shapes[] = {
#define S(t) {t, sizeof t - 1}
        S("GARBAGE\r\n\r\n"),
        S("GET /json\r\n\r\n"),
        S("GET /js on HTTP/1.1\r\nHost: h\r\n\r\n"),
        S("GET /json HTTP/2.0\r\nHost: h\r\n\r\n"),
        S("GET /json HTTP/1.1\nHost: h\n\n"),
        S("GET /json HTTP/1.1\r\n\r\n"),
        S("GET /json HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n"),
        S("GET /json HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello"),
        S("GET /json HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"),
        S("GET /json HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"),
        S("GET /json HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"),
        S("GET /json HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n"),
        S("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n"),
        S("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        S("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999999\r\n\r\n"),
        S("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        S("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
        S("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        S("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"),
#undef S
    };
    char *big = malloc(70000), *many = malloc(8192);
    size_t i, n;

    TU_REQUIRE(tu_http_addr());
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        expect_400(shapes[i].text, shapes[i].len);
    /* A head over 64 KiB, and 101 header fields. */
    CU_ASSERT_FATAL(big && many);
    n = (size_t)snprintf(big, 70000, "GET /json HTTP/1.1\r\nHost: h\r\nX-Long: ");
    memset(big + n, 'a', 70000 - n);
    expect_400(big, 70000);
    n = (size_t)snprintf(many, 8192, "GET /json HTTP/1.1\r\nHost: h\r\n");
    for (i = 0; i < 100; i++)
        n += (size_t)snprintf(many + n, 8192 - n, "X-%zu: v\r\n", i);
    n += (size_t)snprintf(many + n, 8192 - n, "\r\n");
    expect_400(many, n);
    free(big);
    free(many);
}

/* --- connection rules (private instances) ------------------------------------ */

static void test_idle_timeout_closes_idle_connection(void)
{
    static const char *const args[] = {"--idle-timeout", "300", "--quiet", NULL};
    tu_server s;
    char buf[4096];
    size_t len;
    int64_t start;
    int fd;

    if (tu_mockapi_start(&s, args) != 0)
        return;
    fd = tu_connect(s.addr);
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /json HTTP/1.1\r\nHost: h\r\n\r\n");
    CU_ASSERT(tu_read_response(fd, buf, sizeof buf, 5000) > 0 && tu_status(buf) == 200);
    start = tu_now_ms();
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    CU_ASSERT(tu_now_ms() - start >= 250);
    CU_ASSERT_EQUAL(len, 0);
    close(fd);
    tu_server_stop(&s);
}

static void test_max_requests_closes_after_n(void)
{
    static const char *const args[] = {"--max-requests", "3", "--quiet", NULL};
    static const char req[] = "GET /json HTTP/1.1\r\nHost: h\r\n\r\n";
    tu_server s;
    char buf[4096], v[32];
    size_t len;
    int fd, i;

    if (tu_mockapi_start(&s, args) != 0)
        return;
    fd = tu_connect(s.addr);
    CU_ASSERT_FATAL(fd >= 0);
    for (i = 0; i < 2; i++) {
        tu_write_all(fd, req, sizeof req - 1);
        CU_ASSERT(tu_read_response(fd, buf, sizeof buf, 5000) > 0 && tu_status(buf) == 200);
        CU_ASSERT_PTR_NULL(header(buf, "Connection", v, sizeof v));
    }
    tu_write_all(fd, req, sizeof req - 1);
    CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof buf, 5000, &len), 1);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT(header_is(buf, "Connection", "close"));
    close(fd);
    tu_server_stop(&s);
}

/* The number after "key": in the JSON text, or -1. */
static long json_number(const char *json, const char *key)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(json, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static void test_stats_count_and_reset(void)
{
    static const char *const args[] = {"--quiet", NULL};
    tu_server s;
    char buf[4096];

    if (tu_mockapi_start(&s, args) != 0)
        return;
    tu_roundtrip(s.addr, "GET /json HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof buf, 5000);
    tu_roundtrip(s.addr, "GET /json HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof buf, 5000);
    tu_roundtrip(s.addr, "GET /stats HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof buf, 5000);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"requests\":3,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"/json\":2"));
    /* Earlier connections may still be closing: at least this one is open. */
    CU_ASSERT(json_number(buf, "connections_open") >= 1);
    tu_roundtrip(s.addr, "GET /reset-stats HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof buf, 5000);
    CU_ASSERT_EQUAL(tu_status(buf), 405);
    tu_roundtrip(s.addr, "POST /reset-stats HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", buf, sizeof buf, 5000);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    tu_roundtrip(s.addr, "GET /stats HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof buf, 5000);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"requests\":1,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"hits\":{\"/stats\":1}"));
    tu_server_stop(&s);
}

#define NCONC 120

/* NCONC connections each wait 300 ms server-side; all must be answered,
 * together, well before they could be one after another. */
static void test_concurrent_connections_all_served(void)
{
    static const char req[] = "GET /delay/300 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    struct pollfd p[NCONC];
    char head[NCONC][16];
    size_t got[NCONC] = {0};
    int i, left, ok = 0;
    int64_t start, end;

    TU_REQUIRE(tu_http_addr());
    for (i = 0; i < NCONC; i++) {
        p[i].fd = tu_connect(tu_http_addr());
        p[i].events = POLLIN;
        CU_ASSERT_FATAL(p[i].fd >= 0);
    }
    start = tu_now_ms();
    for (i = 0; i < NCONC; i++)
        tu_write_all(p[i].fd, req, sizeof req - 1);
    for (left = NCONC, end = start + 20000; left > 0 && tu_now_ms() < end;) {
        if (poll(p, NCONC, 1000) < 0)
            break;
        for (i = 0; i < NCONC; i++) {
            char scratch[4096];
            ssize_t n;
            if (p[i].fd < 0 || !p[i].revents)
                continue;
            n = recv(p[i].fd, scratch, sizeof scratch, 0);
            if (n > 0 && got[i] < sizeof head[i]) {
                size_t k = (size_t)n < sizeof head[i] - got[i] ? (size_t)n : sizeof head[i] - got[i];
                memcpy(head[i] + got[i], scratch, k);
            }
            if (n > 0)
                got[i] += (size_t)n;
            if (n <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                left--;
            }
        }
    }
    for (i = 0; i < NCONC; i++) {
        ok += got[i] >= 12 && memcmp(head[i], "HTTP/1.1 200", 12) == 0;
        if (p[i].fd >= 0)
            close(p[i].fd);
    }
    CU_ASSERT_EQUAL(ok, NCONC);
    CU_ASSERT(tu_now_ms() - start < NCONC * 300 / 4);
}

/* --- process life ------------------------------------------------------------- */

static void test_sigterm_exits_promptly(void)
{
    static const char *const args[] = {"--quiet", NULL};
    tu_server s;
    int fd, status = -1;
    int64_t start;
    pid_t r = 0;

    if (tu_mockapi_start(&s, args) != 0)
        return;
    /* A connection in the middle of a long request must not hold it up. */
    fd = tu_connect(s.addr);
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /delay/10000 HTTP/1.1\r\nHost: h\r\n\r\n");
    start = tu_now_ms();
    kill(s.pid, SIGTERM);
    while (tu_now_ms() - start < 3000 && (r = waitpid(s.pid, &status, WNOHANG)) == 0)
        poll(NULL, 0, 5);
    CU_ASSERT_EQUAL(r, s.pid);
    CU_ASSERT(tu_now_ms() - start < 2000);   /* prompt, with room for sanitizer builds */
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (r == s.pid)
        s.pid = 0;
    close(fd);
    tu_server_stop(&s);
}

static void test_startup_announces_port(void)
{
    const char *bin = getenv("SLUICE_TEST_MOCKAPI");
    char dir[] = "/tmp/sluice-mockapi-test.XXXXXX", path[128], line[128] = "", addr[64], buf[4096];
    int out[2], port = -1, file_port = -2, status;
    FILE *f;
    pid_t pid;

    if (!bin) {
        CU_FAIL("SLUICE_TEST_MOCKAPI is not set: run the suite through tests/run.sh (make check)");
        return;
    }
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL && pipe(out) == 0);
    snprintf(path, sizeof path, "%s/port", dir);
    pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        execl(bin, bin, "--port-file", path, "--exit-after", "30", "--quiet", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    f = fdopen(out[0], "r");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT(fgets(line, sizeof line, f) != NULL);
    CU_ASSERT_EQUAL(sscanf(line, "listening on 127.0.0.1:%d", &port), 1);
    fclose(f);
    f = fopen(path, "r");
    CU_ASSERT(f && fscanf(f, "%d", &file_port) == 1);
    if (f)
        fclose(f);
    CU_ASSERT_EQUAL(file_port, port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    CU_ASSERT(tu_roundtrip(addr, "GET /json HTTP/1.1\r\nHost: h\r\n\r\n", buf, sizeof buf, 5000) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    unlink(path);
    rmdir(dir);
}

/* --- TLS (wolfSSL as the client) ------------------------------------------------ */

typedef struct tls_result {
    int status;               /* HTTP status, or -1 when the handshake failed */
    int reused;
    char version[16];
} tls_result;

static const char *cert_path(const char *name, char *buf, size_t cap)
{
    const char *dir = getenv("SLUICE_TEST_CERTS");

    if (!dir || !*dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run the suite through tests/run.sh (make check)");
        return NULL;
    }
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

static WOLFSSL_METHOD *client_method(int version)
{
    if (version == 12)
        return wolfTLSv1_2_client_method();
    if (version == 13)
        return wolfTLSv1_3_client_method();
    return wolfSSLv23_client_method();
}

typedef struct tls_client {
    WOLFSSL_CTX *ctx;
    WOLFSSL *ssl;
    int fd;
} tls_client;

static void tls_close(tls_client *t)
{
    if (t->ssl)
        wolfSSL_free(t->ssl);
    if (t->fd >= 0)
        close(t->fd);
    if (t->ctx)
        wolfSSL_CTX_free(t->ctx);
    memset(t, 0, sizeof *t);
    t->fd = -1;
}

/* Connects and handshakes (version 12, 13 or 0 for either) trusting
 * ca.pem, optionally presenting client.pem and resuming `session`.
 * Returns 0, or -1 with *t closed. */
static int tls_open(tls_client *t, const char *addr, int client_cert, int version, WOLFSSL_SESSION *session)
{
    char ca[512], crt[512], key[512];
    struct timeval tv = {15, 0};   /* handshakes of sanitizer builds on a busy machine */

    memset(t, 0, sizeof *t);
    t->fd = -1;
    if (!(t->ctx = wolfSSL_CTX_new(client_method(version))) || !cert_path("ca.pem", ca, sizeof ca) ||
        wolfSSL_CTX_load_verify_locations(t->ctx, ca, NULL) != WOLFSSL_SUCCESS)
        goto fail;
    if (client_cert && (!cert_path("client.pem", crt, sizeof crt) || !cert_path("client.key", key, sizeof key) ||
                        wolfSSL_CTX_use_certificate_file(t->ctx, crt, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS ||
                        wolfSSL_CTX_use_PrivateKey_file(t->ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS))
        goto fail;
    if ((t->fd = tu_connect(addr)) < 0 || !(t->ssl = wolfSSL_new(t->ctx)) ||
        wolfSSL_set_fd(t->ssl, t->fd) != WOLFSSL_SUCCESS)
        goto fail;
    setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    wolfSSL_check_domain_name(t->ssl, "localhost");
    if (session)
        wolfSSL_set_session(t->ssl, session);
    if (wolfSSL_connect(t->ssl) == WOLFSSL_SUCCESS)
        return 0;
fail:
    tls_close(t);
    return -1;
}

/* Reads until the server closes; returns the length read. */
static int tls_read_all(tls_client *t, char *buf, int cap)
{
    int len = 0, n;

    while (len < cap - 1 && (n = wolfSSL_read(t->ssl, buf + len, cap - 1 - len)) > 0)
        len += n;
    buf[len] = '\0';
    return len;
}

/* GET /json over TLS; *session (when given) is resumed and replaced. */
static void tls_get(const char *addr, int client_cert, int version, WOLFSSL_SESSION **session,
                    tls_result *res)
{
    static const char req[] = "GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    char buf[4096];
    tls_client t;

    res->status = -1;
    res->reused = 0;
    res->version[0] = '\0';
    if (tls_open(&t, addr, client_cert, version, session ? *session : NULL) != 0)
        return;
    if (wolfSSL_write(t.ssl, req, sizeof req - 1) == (int)sizeof req - 1) {
        tls_read_all(&t, buf, sizeof buf);
        res->status = tu_status(buf);
        res->reused = wolfSSL_session_reused(t.ssl);
        snprintf(res->version, sizeof res->version, "%s", wolfSSL_get_version(t.ssl));
        if (session) {
            if (*session)
                wolfSSL_SESSION_free(*session);
            *session = wolfSSL_get1_session(t.ssl);
        }
    }
    tls_close(&t);
}

static int start_tls(tu_server *s, const char *extra1, const char *extra2)
{
    char crt[512], key[512], ca[512];
    const char *args[12];
    int n = 0;

    if (!cert_path("server.pem", crt, sizeof crt) || !cert_path("server.key", key, sizeof key) ||
        !cert_path("ca.pem", ca, sizeof ca))
        return -1;
    args[n++] = "--quiet";
    args[n++] = "--tls-cert";
    args[n++] = crt;
    args[n++] = "--tls-key";
    args[n++] = key;
    if (extra1) {
        args[n++] = extra1;
        args[n++] = strcmp(extra1, "--client-ca") == 0 ? ca : extra2;
    }
    args[n] = NULL;
    return tu_mockapi_start(s, args);
}

static void test_tls_handshake_json_and_resumption(void)
{
    WOLFSSL_SESSION *sess = NULL;
    tls_result r;
    tu_server s;
    char buf[256];
    size_t len;
    int fd;

    tls_init_once();
    if (start_tls(&s, NULL, NULL) != 0)
        return;
    /* Plain HTTP at a TLS port fails that connection only. */
    fd = tu_connect(s.addr);
    CU_ASSERT_FATAL(fd >= 0);
    send_str(fd, "GET /json HTTP/1.1\r\nHost: h\r\n\r\n");
    CU_ASSERT(read_to_close(fd, buf, sizeof buf, 5000, &len) != 0);
    close(fd);
    tls_get(s.addr, 0, 0, &sess, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.version, "TLSv1.3");
    CU_ASSERT_EQUAL(r.reused, 0);
    tls_get(s.addr, 0, 0, &sess, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(r.reused, 1);
    wolfSSL_SESSION_free(sess);
    tu_server_stop(&s);
}

/* Two requests in two TLS records in one TCP segment: the second record
 * waits inside wolfSSL, not in the socket, and must still be answered. */
static void test_tls_pipelined_records_answered(void)
{
    static const char one[] = "GET /json HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const char two[] = "GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    char buf[8192], *p;
    int on = 1, off = 0, responses = 0;
    tls_client t;
    tu_server s;

    tls_init_once();
    if (start_tls(&s, NULL, NULL) != 0)
        return;
    CU_ASSERT_FATAL(tls_open(&t, s.addr, 0, 0, NULL) == 0);
    setsockopt(t.fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    CU_ASSERT(wolfSSL_write(t.ssl, one, sizeof one - 1) == (int)sizeof one - 1);
    CU_ASSERT(wolfSSL_write(t.ssl, two, sizeof two - 1) == (int)sizeof two - 1);
    setsockopt(t.fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
    tls_read_all(&t, buf, sizeof buf);
    for (p = buf; (p = strstr(p, "HTTP/1.1 200 OK")); p++)
        responses++;
    CU_ASSERT_EQUAL(responses, 2);
    tls_close(&t);
    tu_server_stop(&s);
}

static void test_tls_max_version_12_caps_and_resumes(void)
{
    WOLFSSL_SESSION *sess = NULL;
    tls_result r;
    tu_server s;

    tls_init_once();
    if (start_tls(&s, "--tls-max-version", "12") != 0)
        return;
    tls_get(s.addr, 0, 0, &sess, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.version, "TLSv1.2");
    tls_get(s.addr, 0, 0, &sess, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(r.reused, 1);
    /* A client that insists on TLS 1.3 cannot agree with it. */
    tls_get(s.addr, 0, 13, NULL, &r);
    CU_ASSERT_EQUAL(r.status, -1);
    wolfSSL_SESSION_free(sess);
    tu_server_stop(&s);
}

static void test_tls_client_ca_requires_certificate(void)
{
    tls_result r;
    tu_server s;

    tls_init_once();
    if (start_tls(&s, "--client-ca", NULL) != 0)
        return;
    tls_get(s.addr, 0, 0, NULL, &r);
    CU_ASSERT_EQUAL(r.status, -1);
    tls_get(s.addr, 1, 0, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    tu_server_stop(&s);
}

/* Every route in handlers.c's table (read from the source, next to the
 * build directory) appears in --help, which exits 0. */
static void test_help_lists_every_route(void)
{
    const char *bin = getenv("SLUICE_TEST_MOCKAPI"), *build = getenv("SLUICE_TEST_BUILD");
    static char help[16384], line[512];
    char cmd[600], src[600], want[128];
    size_t len = 0, n;
    int in_table = 0, routes = 0;
    FILE *p, *f;

    if (!bin || !build) {
        CU_FAIL("SLUICE_TEST_MOCKAPI/SLUICE_TEST_BUILD unset: run through tests/run.sh (make check)");
        return;
    }
    snprintf(cmd, sizeof cmd, "'%s' --help", bin);
    p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    while (len + 1 < sizeof help && (n = fread(help + len, 1, sizeof help - 1 - len, p)) > 0)
        len += n;
    help[len] = '\0';
    CU_ASSERT_EQUAL(pclose(p), 0);
    snprintf(src, sizeof src, "%s/../tools/mockapi/handlers.c", build);
    f = fopen(src, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    while (fgets(line, sizeof line, f)) {
        const char *q, *end;
        if (strstr(line, "} routes[] = {"))
            in_table = 1;
        else if (in_table && strncmp(line, "};", 2) == 0)
            break;
        else if (in_table && (q = strstr(line, "{\"/")) && (end = strchr(q + 2, '"'))) {
            /* "/count/" is listed as "/count/KEY": look for the name up to
             * its last character. */
            snprintf(want, sizeof want, "  %.*s", (int)(end - q - 2), q + 2);
            if (!strstr(help, want))
                fprintf(stderr, "\n  --help does not list %s\n", want + 2);
            CU_ASSERT_PTR_NOT_NULL(strstr(help, want));
            routes++;
        }
    }
    fclose(f);
    CU_ASSERT(routes >= 20);
    CU_ASSERT_PTR_NOT_NULL(strstr(help, "?fail=N"));
    CU_ASSERT_PTR_NOT_NULL(strstr(help, "raw names: "));
}

static CU_TestInfo tests[] = {
    {"test_json_fixed_body", test_json_fixed_body},
    {"test_bytes_pattern_exact", test_bytes_pattern_exact},
    {"test_chunked_decodes_to_pattern", test_chunked_decodes_to_pattern},
    {"test_hits_counts_per_path", test_hits_counts_per_path},
    {"test_count_increments", test_count_increments},
    {"test_flaky_fails_then_succeeds", test_flaky_fails_then_succeeds},
    {"test_status_retry_after", test_status_retry_after},
    {"test_echo_reports_request", test_echo_reports_request},
    {"test_echo_raw_is_byte_exact", test_echo_raw_is_byte_exact},
    {"test_echo_decodes_chunked_request", test_echo_decodes_chunked_request},
    {"test_expect_continue_answered", test_expect_continue_answered},
    {"test_redirect_location", test_redirect_location},
    {"test_headers_many_and_big", test_headers_many_and_big},
    {"test_stall_sends_partial_head_then_nothing", test_stall_sends_partial_head_then_nothing},
    {"test_reset_aborts_mid_body", test_reset_aborts_mid_body},
    {"test_close_closes_after_response", test_close_closes_after_response},
    {"test_keepalive_serves_sequential_and_pipelined", test_keepalive_serves_sequential_and_pipelined},
    {"test_http10_closes_unless_keepalive", test_http10_closes_unless_keepalive},
    {"test_head_has_headers_without_body", test_head_has_headers_without_body},
    {"test_drip_paces_body", test_drip_paces_body},
    {"test_raw_responses_verbatim", test_raw_responses_verbatim},
    {"test_unknown_path_404_json", test_unknown_path_404_json},
    {"test_malformed_requests_get_400", test_malformed_requests_get_400},
    {"test_idle_timeout_closes_idle_connection", test_idle_timeout_closes_idle_connection},
    {"test_max_requests_closes_after_n", test_max_requests_closes_after_n},
    {"test_stats_count_and_reset", test_stats_count_and_reset},
    {"test_concurrent_connections_all_served", test_concurrent_connections_all_served},
    {"test_sigterm_exits_promptly", test_sigterm_exits_promptly},
    {"test_startup_announces_port", test_startup_announces_port},
    {"test_help_lists_every_route", test_help_lists_every_route},
    {"test_tls_handshake_json_and_resumption", test_tls_handshake_json_and_resumption},
    {"test_tls_pipelined_records_answered", test_tls_pipelined_records_answered},
    {"test_tls_max_version_12_caps_and_resumes", test_tls_max_version_12_caps_and_resumes},
    {"test_tls_client_ca_requires_certificate", test_tls_client_ca_requires_certificate},
    CU_TEST_INFO_NULL,
};

void suite_mockapi(void);
void suite_mockapi(void)
{
    tu_add_suite("mockapi", tests);
}
