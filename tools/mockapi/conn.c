/* One thread per connection: optional TLS handshake, then read, parse and
 * answer requests until the client or a rule ends the connection.  The
 * thread owns its mock_conn and socket outright; the only shared state it
 * touches is mock_state (atomics and self-locking tables). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mockapi.h"

#define IO_TIMEOUT_MS   60000     /* a request that stops arriving midway */
#define LINGER_MS       2000      /* waiting for the peer's FIN after ours */
#define FIRST_BUF       16384
/* The largest request buffer: a full head plus a maximal body in chunks
 * with generous framing overhead. */
#define MAX_BUF         ((size_t)MOCK_MAX_HEAD + 2 * (size_t)MOCK_MAX_BODY)
#define THREAD_STACK    (2u << 20)

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *mock_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 418: return "I'm a teapot";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

static int status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

int mock_conn_write(mock_conn *c, const void *p, size_t n)
{
    const char *s = p;

    if (c->broken || c->gone)
        return -1;
    if (c->sink) {
        if (mock_h2_write(c->sink, p, n) != 0)
            c->broken = 1;
        return c->broken ? -1 : 0;
    }
    if (c->ssl) {
        if (mock_tls_write(c->ssl, p, n) != 0)
            c->broken = 1;
        return c->broken ? -1 : 0;
    }
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            c->broken = 1;
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static void format_head(mock_buf *b, const mock_conn *c, int status, const char *ctype,
                        const char *extra, long long length)
{
    mock_buf_printf(b, "HTTP/1.1 %d %s\r\n", status, mock_reason(status));
    if (ctype)
        mock_buf_printf(b, "Content-Type: %s\r\n", ctype);
    if (length >= 0 && status_has_body(status))
        mock_buf_printf(b, "Content-Length: %lld\r\n", length);
    if (extra)
        mock_buf_puts(b, extra);
    if (c->last && status >= 200)
        mock_buf_puts(b, "Connection: close\r\n");
    else if (c->keep_alive_10)
        mock_buf_puts(b, "Connection: keep-alive\r\n");
    mock_buf_puts(b, "\r\n");
}

int mock_write_head(mock_conn *c, int status, const char *ctype, const char *extra, long long length)
{
    mock_buf b = MOCK_BUF_INIT;
    int r = -1;

    format_head(&b, c, status, ctype, extra, length);
    if (!b.failed)
        r = mock_conn_write(c, b.data, b.len);
    else
        c->broken = 1;
    mock_buf_free(&b);
    return r;
}

int mock_respond(mock_conn *c, int status, const char *ctype, const char *extra,
                 const void *body, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;
    int r = -1;

    if (!status_has_body(status))
        len = 0;
    format_head(&b, c, status, ctype, extra, (long long)len);
    /* Head and a small body leave in one write, as most servers do. */
    if (!c->head_only && len <= 65536)
        mock_buf_add(&b, body, len);
    if (b.failed)
        c->broken = 1;
    else if ((r = mock_conn_write(c, b.data, b.len)) == 0 && !c->head_only && len > 65536)
        r = mock_conn_write(c, body, len);
    mock_buf_free(&b);
    return r;
}

void mock_conn_reset(mock_conn *c)
{
    struct linger lg = {1, 0};

    if (c->gone)
        return;
    if (c->sink) {
        mock_h2_reset(c->sink);
        c->gone = 1;
        return;
    }
    if (c->ssl) {
        mock_tls_free(c->ssl, 0);
        c->ssl = NULL;
    }
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
    c->fd = -1;
    c->gone = 1;
}

void mock_conn_hold(mock_conn *c, int max_ms)
{
    int64_t end = now_ms() + max_ms;
    char scratch[4096];

    if (c->sink) {
        mock_h2_hold(c->sink, max_ms);
        return;
    }
    while (!c->gone) {
        struct pollfd p = {c->fd, POLLIN, 0};
        int64_t left = end - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return;
        if (recv(c->fd, scratch, sizeof scratch, 0) <= 0)
            return;
    }
}

/* Waits up to timeout_ms (-1 = forever) for input.  1 ready, 0 timeout. */
static int wait_readable(mock_conn *c, int timeout_ms)
{
    struct pollfd p = {c->fd, POLLIN, 0};
    int r;

    if (c->ssl && mock_tls_pending(c->ssl) > 0)
        return 1;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r != 0;
}

/* Reads more request bytes.  Returns > 0, 0 when the peer closed, -1 on
 * error, -2 on timeout, -3 when the request outgrew MAX_BUF. */
static long fill(mock_conn *c, int timeout_ms)
{
    long n;

    if (c->in_len == c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap * 2 : FIRST_BUF;
        char *p;
        if (c->in_cap >= MAX_BUF)
            return -3;
        if (cap > MAX_BUF)
            cap = MAX_BUF;
        if (!(p = realloc(c->in, cap)))
            return -1;
        c->in = p;
        c->in_cap = cap;
    }
    if (!wait_readable(c, timeout_ms))
        return -2;
    if (c->ssl)
        return mock_tls_read(c->ssl, c->in + c->in_len, c->in_cap - c->in_len);
    do
        n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    while (n < 0 && errno == EINTR);
    return n;
}

static void reject(mock_conn *c, const char *why)
{
    mock_buf b = MOCK_BUF_INIT;

    atomic_fetch_add(&mock_state.bad_requests, 1);
    mock_log(c->cfg, "400 Bad Request: %s", why);
    c->last = 1;
    c->head_only = 0;
    c->keep_alive_10 = 0;
    mock_buf_puts(&b, "{\"error\":\"bad request\",\"reason\":");
    mock_buf_json_str(&b, why, strlen(why));
    mock_buf_puts(&b, "}");
    if (!b.failed)
        mock_respond(c, 400, "application/json", NULL, b.data, b.len);
    mock_buf_free(&b);
}

/* Sets up the per-response state from the request just parsed. */
static void begin_response(mock_conn *c, const mock_request *req)
{
    c->served++;
    c->last = !req->keep_alive || (c->cfg->max_requests && c->served >= (unsigned)c->cfg->max_requests);
    c->head_only = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    c->keep_alive_10 = req->minor == 0 && !c->last;
}

/* Between requests a connection may idle for --idle-timeout (forever
 * without it); once a request has begun, each read gets IO_TIMEOUT_MS. */
static int read_timeout(const mock_conn *c)
{
    if (c->in_len)
        return IO_TIMEOUT_MS;
    return c->cfg->idle_timeout_ms ? c->cfg->idle_timeout_ms : -1;
}

static void serve(mock_conn *c)
{
    mock_request req;
    int continued = 0;

    for (;;) {
        long r = mock_request_parse(c->in, c->in_len, &req), n;
        if (r == MOCK_REQ_BAD) {
            reject(c, req.error);
            return;
        }
        if (r > 0) {
            begin_response(c, &req);
            mock_handle(c, &req);
            if (c->last || c->broken || c->gone)
                return;
            memmove(c->in, c->in + r, c->in_len - (size_t)r);
            c->in_len -= (size_t)r;
            continued = 0;
            continue;
        }
        if (req.head_len && req.expect_continue && req.minor == 1 && !continued) {
            continued = 1;
            if (mock_conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
                return;
        }
        n = fill(c, read_timeout(c));
        if (n == -3)
            reject(c, "request too large");
        if (n <= 0)
            return;
        c->in_len += (size_t)n;
    }
}

/* Our FIN first, then read until the peer's (bounded), so a response is
 * never destroyed by a RST over unread request bytes. */
void mock_conn_close(mock_conn *c)
{
    int64_t end = now_ms() + LINGER_MS;
    char scratch[4096];

    if (c->gone)
        return;
    if (c->ssl)
        mock_tls_free(c->ssl, !c->broken);
    c->ssl = NULL;
    shutdown(c->fd, SHUT_WR);
    for (;;) {
        struct pollfd p = {c->fd, POLLIN, 0};
        int64_t left = end - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0 || recv(c->fd, scratch, sizeof scratch, 0) <= 0)
            break;
    }
    close(c->fd);
    c->fd = -1;
    c->gone = 1;
}

static void finish(mock_conn *c)
{
    mock_conn_close(c);
    atomic_fetch_sub(&mock_state.connections_open, 1);
    free(c->in);
    free(c);
}

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

/* With --h2 on a plain listener: reads until the first bytes either are
 * the HTTP/2 client preface (1) or cannot be (0); -1 when the connection
 * ended first.  What was read stays in c->in for either protocol. */
static int sniff_preface(mock_conn *c)
{
    size_t want = sizeof H2_PREFACE - 1;

    while (c->in_len < want && memcmp(c->in ? c->in : "", H2_PREFACE, c->in_len) == 0) {
        long n = fill(c, read_timeout(c));
        if (n <= 0)
            return -1;
        c->in_len += (size_t)n;
    }
    return c->in_len >= want && memcmp(c->in, H2_PREFACE, want) == 0;
}

static void *conn_main(void *arg)
{
    mock_conn *c = arg;
    int h2 = 0;

    if (c->cfg->tls_cert && !(c->ssl = mock_tls_accept(c->fd, c->cfg)))
        c->broken = 1;
    else if (c->cfg->h2 && (h2 = c->ssl ? mock_tls_is_h2(c->ssl) : sniff_preface(c)) > 0)
        mock_h2_serve(c);
    else if (h2 == 0)
        serve(c);
    finish(c);
    return NULL;
}

int mock_conn_spawn(int fd, const mock_config *cfg)
{
    mock_conn *c = calloc(1, sizeof *c);
    pthread_attr_t attr;
    pthread_t tid;
    int one = 1, err = -1;

    atomic_fetch_add(&mock_state.connections_accepted, 1);
    if (!c) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->cfg = cfg;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    atomic_fetch_add(&mock_state.connections_open, 1);
    if (pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, THREAD_STACK);
        err = pthread_create(&tid, &attr, conn_main, c);
        pthread_attr_destroy(&attr);
    }
    if (err != 0) {
        mock_log(cfg, "cannot start a connection thread: %s", strerror(err > 0 ? err : ENOMEM));
        close(fd);
        atomic_fetch_sub(&mock_state.connections_open, 1);
        free(c);
        return -1;
    }
    return 0;
}
