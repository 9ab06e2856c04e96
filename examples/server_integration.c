/* server_integration: a small multithreaded HTTP/1.1 gateway that calls an
 * upstream service through ONE shared sluice client.
 *
 *   GET /proxy/<path>  ->  GET <UPSTREAM_URL>/<path>; answered with the
 *                          upstream's status, content type and body
 *   GET /metrics       ->  the factory's metrics (Prometheus text) plus the
 *                          gateway's own counter
 *   GET /healthz       ->  200 "ok" (503 "draining" once shutdown began)
 *
 * Threads: a fixed set of handler threads accept from one shared listening
 * socket and serve one connection at a time (keep-alive), so at most
 * `threads` connections are served at once and the rest wait in the
 * kernel's backlog.  Every handler calls the upstream through the same
 * client: one connection pool, one DNS cache, one coalescer for all of them.
 *
 * Shutdown: SIGTERM or SIGINT stops accepting, lets every request in
 * flight finish (its response says Connection: close), joins the handler
 * threads, frees the factory and exits 0.
 *
 * usage: server_integration UPSTREAM_URL [port] [threads]
 *   port 0 (the default) picks a free one; either way the program prints
 *   "listening on 127.0.0.1:PORT" once it accepts connections.
 *   e.g. server_integration http://127.0.0.1:8080 9000 16
 */
#define _GNU_SOURCE  /* Linux: accept4, pipe2, SOCK_CLOEXEC, MSG_NOSIGNAL */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sluice.h>

#define MAX_THREADS 256
#define MAX_HEAD 8192              /* request line + headers; larger gets 431 */
#define IDLE_TIMEOUT_MS 5000       /* keep-alive connection with no new request */
#define HEAD_TIMEOUT_MS 10000      /* to receive a whole request head once begun */
#define SEND_TIMEOUT_S 10
#define UPSTREAM_TIMEOUT_MS 10000  /* whole upstream call, retries included */

struct server {
    int listen_fd;
    int wake[2];                   /* readable once shutdown began (self-pipe) */
    atomic_int stopping;
    atomic_ulong served;           /* responses written */
    sluice_factory *factory;
    sluice_client *upstream;
};

/* One parsed request.  `target` points into the connection's buffer. */
struct request {
    char method[16];
    const char *target;
    size_t target_len;
    int keep_alive;
};

struct conn {
    struct server *srv;
    int fd;
    char buf[MAX_HEAD + 1];
    size_t len;                    /* bytes held, possibly a pipelined next request */
};

/* ------------------------------------------------------------------------ */
/* Writing responses                                                        */
/* ------------------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

/* Writes every byte of the vector, in one system call when it fits: a head
 * and a body sent apart would meet Nagle's algorithm and delayed ACKs. */
static int send_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

/* Sends one response; `extra` is more header lines, each ending in CRLF.
 * 204 and 304 carry neither a body nor a length.  Once shutdown began, the
 * response closes the connection, however long it took to make. */
static int respond(struct conn *c, int status, const char *ctype, const void *body, size_t len,
                   int keep_alive, const char *extra)
{
    char head[512];
    struct iovec iov[2];
    int n, nobody = status == 204 || status == 304;

    keep_alive = keep_alive && !atomic_load(&c->srv->stopping);

    if (nobody)
        n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nConnection: %s\r\n%s\r\n", status,
                     reason(status), keep_alive ? "keep-alive" : "close", extra);
    else
        n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: %s\r\n%s\r\n",
                     status, reason(status), ctype, len, keep_alive ? "keep-alive" : "close", extra);
    if (n < 0 || (size_t)n >= sizeof head)
        return -1;
    iov[0] = (struct iovec){head, (size_t)n};
    iov[1] = (struct iovec){(void *)body, nobody ? 0 : len};
    atomic_fetch_add(&c->srv->served, 1);
    return send_iov(c->fd, iov, 2);
}

static int respond_text(struct conn *c, int status, const char *text, int keep_alive)
{
    return respond(c, status, "text/plain; charset=utf-8", text, strlen(text), keep_alive, "");
}

/* ------------------------------------------------------------------------ */
/* Reading and parsing requests                                             */
/* ------------------------------------------------------------------------ */

/* What read_head() found besides a whole head. */
enum { HEAD_CLOSE = 0, HEAD_TOO_BIG = -1, HEAD_BAD = -2 };

static long elapsed_ms(const struct timespec *since)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - since->tv_sec) * 1000 + (t.tv_nsec - since->tv_nsec) / 1000000;
}

/* Waits until the connection is readable.  While no byte of a request has
 * arrived, shutdown also ends the wait: an idle keep-alive connection is
 * not a request in flight. */
static int wait_readable(struct conn *c, int timeout_ms)
{
    struct pollfd p[2] = {{c->fd, POLLIN, 0}, {c->srv->wake[0], POLLIN, 0}};
    int idle = c->len == 0, n;

    if (timeout_ms <= 0)
        return -1;
    do
        n = poll(p, idle ? 2 : 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    return n > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 0 : -1;
}

/* Reads until the buffer holds a whole request head.  Returns its length
 * (through the blank line), HEAD_CLOSE when the connection should just be
 * closed (peer closed, timeout, shutdown while idle), HEAD_TOO_BIG or
 * HEAD_BAD (a NUL byte). */
static long read_head(struct conn *c)
{
    struct timespec begun;

    clock_gettime(CLOCK_MONOTONIC, &begun);
    for (;;) {
        char *end;
        ssize_t n;

        c->buf[c->len] = '\0';
        if ((end = strstr(c->buf, "\r\n\r\n")))
            return end + 4 - c->buf;
        if (c->len >= MAX_HEAD)
            return HEAD_TOO_BIG;
        if (wait_readable(c, c->len ? (int)(HEAD_TIMEOUT_MS - elapsed_ms(&begun))
                                    : IDLE_TIMEOUT_MS) != 0)
            return HEAD_CLOSE;
        n = recv(c->fd, c->buf + c->len, MAX_HEAD - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return HEAD_CLOSE;
        if (memchr(c->buf + c->len, '\0', (size_t)n))
            return HEAD_BAD;
        if (c->len == 0)   /* a request begins: its head has HEAD_TIMEOUT_MS */
            clock_gettime(CLOCK_MONOTONIC, &begun);
        c->len += (size_t)n;
    }
}

static int is_tchar(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* "0" (with optional trailing blanks): the only Content-Length taken. */
static int zero_length(const char *v, const char *eol)
{
    const char *p = v;

    while (p < eol && *p == '0')
        p++;
    if (p == v)
        return 0;
    while (p < eol && (*p == ' ' || *p == '\t'))
        p++;
    return p == eol;
}

/* 1 if the comma-separated list in [v, eol) holds `token`, any case. */
static int list_has(const char *v, const char *eol, const char *token)
{
    size_t n = strlen(token);

    while (v < eol) {
        const char *comma = memchr(v, ',', (size_t)(eol - v)), *end = comma ? comma : eol;
        const char *last = end;

        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (last > v && (last[-1] == ' ' || last[-1] == '\t'))
            last--;
        if ((size_t)(last - v) == n && strncasecmp(v, token, n) == 0)
            return 1;
        v = comma ? comma + 1 : eol;
    }
    return 0;
}

/* Header `name: value` lines between `p` and `end`.  Sets keep-alive from
 * Connection and refuses bodies: this gateway only serves GET. */
static int parse_headers(const char *p, const char *end, struct request *rq)
{
    while (p < end) {
        const char *eol = strstr(p, "\r\n"), *colon = memchr(p, ':', (size_t)(eol - p)), *v;
        size_t nlen;

        if (!colon || colon == p)
            return -1;
        for (v = p; v < colon; v++)
            if (!is_tchar((unsigned char)*v))
                return -1;
        nlen = (size_t)(colon - p);
        for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
            ;
        if (nlen == 10 && strncasecmp(p, "Connection", 10) == 0) {
            if (list_has(v, eol, "close"))
                rq->keep_alive = 0;
            else if (list_has(v, eol, "keep-alive"))
                rq->keep_alive = 1;
        } else if ((nlen == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) ||
                   (nlen == 14 && strncasecmp(p, "Content-Length", 14) == 0 &&
                    !zero_length(v, eol))) {
            return -1;
        }
        p = eol + 2;
    }
    return 0;
}

/* "METHOD SP /target SP HTTP/1.x CRLF headers CRLF": 0, or -1 for 400. */
static int parse_request(char *head, size_t head_len, struct request *rq)
{
    char *line_end = strstr(head, "\r\n"), *sp1, *sp2, *p;
    size_t mlen;

    memset(rq, 0, sizeof *rq);
    *line_end = '\0';
    if (!(sp1 = strchr(head, ' ')) || !(sp2 = strchr(sp1 + 1, ' ')))
        return -1;
    mlen = (size_t)(sp1 - head);
    if (mlen == 0 || mlen >= sizeof rq->method)
        return -1;
    for (p = head; p < sp1; p++)
        if (!is_tchar((unsigned char)*p))
            return -1;
    memcpy(rq->method, head, mlen);
    rq->target = sp1 + 1;
    rq->target_len = (size_t)(sp2 - rq->target);
    if (rq->target_len == 0 || rq->target[0] != '/')
        return -1;
    for (p = sp1 + 1; p < sp2; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            return -1;
    if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
        rq->keep_alive = 1;
    else if (strcmp(sp2 + 1, "HTTP/1.0") != 0)
        return -1;
    *sp2 = '\0';   /* the target becomes a string */
    return parse_headers(line_end + 2, head + head_len - 2, rq);
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                 */
/* ------------------------------------------------------------------------ */

/* An upstream failure as a gateway status: the deadline passed (504), a
 * policy said no (503), or the upstream could not be reached or spoke
 * nonsense (502). */
static int gateway_status(int code)
{
    switch (code) {
    case SLUICE_EINVAL: return 400;
    case SLUICE_ETIMEDOUT: return 504;
    case SLUICE_ERATELIMITED:
    case SLUICE_ECIRCUITOPEN:
    case SLUICE_EQUEUEFULL:
    case SLUICE_EPOOLTIMEOUT:
    case SLUICE_ECLOSED: return 503;
    default: return 502;
    }
}

/* GET /proxy/<path>: the upstream's answer, whatever its status. */
static int handle_proxy(struct conn *c, const char *path, int keep_alive)
{
    sluice_request req = {.path = path, .timeout_ms = UPSTREAM_TIMEOUT_MS};
    sluice_response *r = NULL;
    sluice_error err;
    const char *ctype;
    const void *body;
    size_t len;
    int rc;

    if (sluice_client_do(c->srv->upstream, &req, &r, &err) != 0) {
        char msg[320];
        snprintf(msg, sizeof msg, "upstream: %s: %s\n", sluice_err_name(err.code), err.msg);
        return respond_text(c, gateway_status(err.code), msg, keep_alive);
    }
    body = sluice_response_body(r, &len);
    ctype = sluice_response_header(r, "content-type");
    rc = respond(c, sluice_response_status(r), ctype ? ctype : "application/octet-stream", body,
                 len, keep_alive, "");
    sluice_response_free(r);
    return rc;
}

/* The library's metrics, then the gateway's own: a program adds its
 * counters to the same scrape. */
static int handle_metrics(struct conn *c, int keep_alive)
{
    size_t cap = 16384, need;
    char *buf = NULL, *grown;
    int n, rc;

    for (;;) {
        if (!(grown = realloc(buf, cap))) {
            free(buf);
            return respond_text(c, 500, "out of memory\n", 0);
        }
        buf = grown;
        need = sluice_factory_metrics(c->srv->factory, SLUICE_METRICS_PROMETHEUS, buf, cap);
        if (need + 256 < cap)
            break;
        cap = need + 4096;   /* the metrics grew between the two calls: try again */
    }
    n = snprintf(buf + need, cap - need,
                 "# HELP gateway_responses_total Responses written by this gateway.\n"
                 "# TYPE gateway_responses_total counter\ngateway_responses_total %lu\n",
                 atomic_load(&c->srv->served));
    rc = respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf,
                 need + (n > 0 ? (size_t)n : 0), keep_alive, "");
    free(buf);
    return rc;
}

static int dispatch(struct conn *c, const struct request *rq, int keep_alive)
{
    const char *t = rq->target;

    if (strcmp(rq->method, "GET") != 0) {
        const char *msg = "only GET is served here\n";
        return respond(c, 405, "text/plain; charset=utf-8", msg, strlen(msg), keep_alive,
                       "Allow: GET\r\n");
    }
    if (strcmp(t, "/healthz") == 0)
        return atomic_load(&c->srv->stopping) ? respond_text(c, 503, "draining\n", 0)
                                              : respond_text(c, 200, "ok\n", keep_alive);
    if (strcmp(t, "/metrics") == 0)
        return handle_metrics(c, keep_alive);
    if (strncmp(t, "/proxy/", 7) == 0)
        return handle_proxy(c, t + 6, keep_alive);   /* keeps the slash: "/json" */
    return respond_text(c, 404, "no such route: try /proxy/<path>, /metrics, /healthz\n",
                        keep_alive);
}

/* After an error answer, the client may still be sending: closing with
 * unread input would reset the connection and could destroy the answer
 * before the client reads it.  So: end our side, then discard what
 * arrives for a moment (bounded in time and bytes). */
static void drain_and_close_soon(struct conn *c)
{
    char sink[4096];
    size_t total = 0;
    struct pollfd p = {c->fd, POLLIN, 0};

    shutdown(c->fd, SHUT_WR);
    while (total < 1u << 20 && poll(&p, 1, 500) > 0) {
        ssize_t n = recv(c->fd, sink, sizeof sink, 0);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
}

/* Serves requests on one connection until either side ends it. */
static void serve_connection(struct conn *c)
{
    for (;;) {
        struct request rq;
        long head = read_head(c);

        if (head == HEAD_CLOSE)
            return;
        if (head == HEAD_TOO_BIG) {
            respond_text(c, 431, "request head too large\n", 0);
            drain_and_close_soon(c);
            return;
        }
        if (head == HEAD_BAD || parse_request(c->buf, (size_t)head, &rq) != 0) {
            respond_text(c, 400, "malformed request\n", 0);
            drain_and_close_soon(c);
            return;
        }
        /* Once shutdown began, this response is the connection's last. */
        if (dispatch(c, &rq, rq.keep_alive) != 0 || !rq.keep_alive ||
            atomic_load(&c->srv->stopping))
            return;
        /* Keep what the client already sent of its next request. */
        c->len -= (size_t)head;
        memmove(c->buf, c->buf + head, c->len);
    }
}

/* ------------------------------------------------------------------------ */
/* Accepting and threads                                                    */
/* ------------------------------------------------------------------------ */

/* The next connection, or -1 once shutdown began.  The listening socket is
 * non-blocking: every handler is woken by a new connection, one wins. */
static int accept_next(struct server *s)
{
    struct pollfd p[2] = {{s->listen_fd, POLLIN, 0}, {s->wake[0], POLLIN, 0}};

    for (;;) {
        int fd;

        p[0].revents = p[1].revents = 0;
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return -1;
        if (p[1].revents & POLLIN)
            return -1;
        if (!(p[0].revents & POLLIN))
            continue;
        fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno == EMFILE || errno == ENFILE) {
            fprintf(stderr, "server_integration: accept: %s; backing off\n", strerror(errno));
            nanosleep(&(struct timespec){0, 50000000}, NULL);
        }
        /* EAGAIN: another handler took it; ECONNABORTED: the client left. */
    }
}

static void *handler_main(void *arg)
{
    struct server *s = arg;
    struct timeval tv = {SEND_TIMEOUT_S, 0};
    struct conn *c = malloc(sizeof *c);
    int fd;

    if (!c) {
        fprintf(stderr, "server_integration: out of memory for a handler\n");
        return NULL;
    }
    while ((fd = accept_next(s)) >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        c->srv = s;
        c->fd = fd;
        c->len = 0;
        serve_connection(c);
        close(fd);
    }
    free(c);
    return NULL;
}

static int listen_loopback(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof sa;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        fprintf(stderr, "server_integration: listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return fd;
}

/* One factory and one client for the whole process, sized so that every
 * handler can have an upstream connection of its own. */
static int make_upstream(struct server *s, const char *url, int threads)
{
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_error err;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_HIGH_THROUGHPUT);
    fo.max_connections_per_host = threads;
    fo.max_idle_per_host = threads;
    if (!(s->factory = sluice_factory_new(&fo, &err))) {
        fprintf(stderr, "server_integration: factory: %s\n", err.msg);
        return -1;
    }
    sluice_client_opts_init(&co);
    co.base_url = url;
    co.timeout_ms = UPSTREAM_TIMEOUT_MS;
    /* Defaults kept: GETs are retried (3 times, jittered backoff) and
     * identical concurrent GETs share one upstream call. */
    if (!(s->upstream = sluice_factory_client(s->factory, "upstream", &co, &err))) {
        fprintf(stderr, "server_integration: upstream %s: %s\n", url, err.msg);
        return -1;
    }
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* Signals are taken synchronously by the main thread (sigwait), so no
 * code runs in a signal handler and handlers never see EINTR from them. */
static int wait_for_shutdown_signal(const sigset_t *set)
{
    int sig = 0;

    while (sigwait(set, &sig) != 0)
        ;
    return sig;
}

int main(int argc, char **argv)
{
    static struct server s = {.listen_fd = -1, .wake = {-1, -1}};
    pthread_t tids[MAX_THREADS];
    int port = 0, nthreads = 16, started = 0, rc = 1, i;
    sigset_t set;

    if (argc < 2 || argc > 4 || (argc > 2 && parse_int(argv[2], 0, 65535, &port) != 0) ||
        (argc > 3 && parse_int(argv[3], 1, MAX_THREADS, &nthreads) != 0)) {
        fprintf(stderr, "usage: server_integration UPSTREAM_URL [port (0 = pick)] [threads 1-%d]\n",
                MAX_THREADS);
        return 2;
    }
    /* Block the shutdown signals before any thread exists so that every
     * thread inherits the mask and only sigwait() receives them. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* A client that leaves early must not kill the server: every write
     * here uses MSG_NOSIGNAL, and this covers any other. */
    signal(SIGPIPE, SIG_IGN);

    if (make_upstream(&s, argv[1], nthreads) != 0 || pipe2(s.wake, O_CLOEXEC) != 0 ||
        (s.listen_fd = listen_loopback(port)) < 0)
        goto out;
    for (started = 0; started < nthreads; started++)
        if (pthread_create(&tids[started], NULL, handler_main, &s) != 0) {
            fprintf(stderr, "server_integration: could not start handler %d\n", started);
            break;
        }
    if (started == nthreads) {
        int sig = wait_for_shutdown_signal(&set);
        fprintf(stderr, "server_integration: %s: finishing requests in flight\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
        rc = 0;
    }
    /* Stop accepting: the wake pipe turns readable for every handler at
     * once (it is never read), and handlers mid-request finish first. */
    atomic_store(&s.stopping, 1);
    if (write(s.wake[1], "x", 1) != 1)
        rc = 1;
    for (i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (rc == 0)
        fprintf(stderr, "server_integration: shut down cleanly after %lu responses\n",
                atomic_load(&s.served));
out:
    if (s.listen_fd >= 0)
        close(s.listen_fd);
    for (i = 0; i < 2; i++)
        if (s.wake[i] >= 0)
            close(s.wake[i]);
    sluice_factory_free(s.factory);
    return rc;
}
