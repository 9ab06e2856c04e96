/* The example programs, each run in a short mode against the shared mock
 * API (and Redis), judged by exit status and what they print; and the
 * executor driving real requests through a client. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define OUT_CAP 32768

/* A started example: its pid and the read end of its stdout + stderr. */
typedef struct proc {
    pid_t pid;
    pid_t last_pid;         /* the pid, kept after the process was reaped */
    int out;
    char buf[OUT_CAP];
    size_t len;
} proc;

/* Starts $SLUICE_TEST_BUILD/examples/<name> with `args` (NULL-terminated).
 * 0, or -1 after failing the test with the reason. */
static int proc_start(proc *p, const char *name, const char *const *args)
{
    const char *build = getenv("SLUICE_TEST_BUILD");
    char path[512];
    const char *argv[16];
    int fds[2], n = 0;

    memset(p, 0, sizeof *p);
    p->out = -1;
    if (!build || !*build) {
        CU_FAIL("SLUICE_TEST_BUILD is not set: run the suite through tests/run.sh (make check)");
        return -1;
    }
    snprintf(path, sizeof path, "%s/examples/%s", build, name);
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "\n  %s is not built (make examples)\n", path);
        CU_FAIL("example binary missing");
        return -1;
    }
    argv[n++] = path;
    while (args && *args && n < 15)
        argv[n++] = *args++;
    argv[n] = NULL;
    if (pipe2(fds, O_CLOEXEC) != 0) {
        CU_FAIL("pipe");
        return -1;
    }
    p->pid = p->last_pid = fork();
    if (p->pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        signal(SIGPIPE, SIG_DFL);   /* the runner ignores it; examples get the default */
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    if (p->pid < 0) {
        close(fds[0]);
        CU_FAIL("fork");
        return -1;
    }
    p->out = fds[0];
    return 0;
}

/* Reads what output is there, waiting up to the deadline for some.  1 when
 * bytes arrived, 0 at end of file, a full buffer or the deadline. */
static int proc_read_some(proc *p, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {p->out, POLLIN, 0};
        int left = (int)(deadline - tu_now_ms());
        ssize_t n;

        if (p->out < 0 || p->len + 1 >= sizeof p->buf || left <= 0 || poll(&pfd, 1, left) <= 0)
            return 0;
        n = read(p->out, p->buf + p->len, sizeof p->buf - 1 - p->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(p->out);
            p->out = -1;
            return 0;
        }
        p->len += (size_t)n;
        p->buf[p->len] = '\0';
        return 1;
    }
}

/* Reads until end of file or the deadline. */
static void proc_read_all(proc *p, int64_t deadline)
{
    while (proc_read_some(p, deadline))
        ;
}

/* Reads until a whole line holding `label` has arrived: the text after
 * the label, or NULL at end of file or the deadline. */
static const char *proc_line(proc *p, const char *label, int64_t deadline)
{
    const char *at;

    while (!(at = strstr(p->buf, label)) || !strchr(at, '\n'))
        if (!proc_read_some(p, deadline))
            return NULL;
    return at + strlen(label);
}

/* Waits for the process to exit by the deadline; kills and reaps it
 * otherwise.  Its exit status (0-255), or -1 when killed or signalled. */
static int proc_wait(proc *p, int64_t deadline)
{
    int status = 0;
    pid_t got = 0;

    while (p->pid > 0 && (got = waitpid(p->pid, &status, WNOHANG)) == 0 && tu_now_ms() < deadline)
        usleep(5000);
    if (p->pid > 0 && got == 0) {
        fprintf(stderr, "\n  example pid %d still running at its deadline: killed\n", (int)p->pid);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        status = -1;
    }
    p->pid = 0;
    if (p->out >= 0)
        close(p->out);
    p->out = -1;
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* Runs an example to completion within timeout_ms: its exit status (or
 * -1), with its whole output in p->buf. */
static int run_example_quietly(proc *p, const char *name, const char *const *args, int timeout_ms)
{
    int64_t deadline = tu_now_ms() + timeout_ms;

    if (proc_start(p, name, args) != 0)
        return -1;
    proc_read_all(p, deadline);
    return proc_wait(p, deadline);
}

/* The same, printing the output of a run that did not exit 0. */
static int run_example(proc *p, const char *name, const char *const *args, int timeout_ms)
{
    int rc = run_example_quietly(p, name, args, timeout_ms);

    if (rc != 0)
        fprintf(stderr, "\n  %s exited %d; its output:\n%s\n", name, rc, p->buf);
    return rc;
}

/* A run expected to fail: exit status 1, printing the output otherwise. */
static int run_example_failing(proc *p, const char *name, const char *const *args, int timeout_ms)
{
    int rc = run_example_quietly(p, name, args, timeout_ms);

    if (rc != 1)
        fprintf(stderr, "\n  %s exited %d, not 1; its output:\n%s\n", name, rc, p->buf);
    return rc;
}

/* The number after `label` in the output, or -1. */
static long number_after(const char *out, const char *label)
{
    const char *at = strstr(out, label);

    return at ? strtol(at + strlen(label), NULL, 10) : -1;
}

/* The number just before `label` in the output, or -1. */
static long number_before(const char *out, const char *label)
{
    const char *at = strstr(out, label);

    if (!at)
        return -1;
    while (at > out && isdigit((unsigned char)at[-1]))
        at--;
    return isdigit((unsigned char)*at) ? strtol(at, NULL, 10) : -1;
}

/* ------------------------------------------------------------------------ */
/* worker_threads, coalescing, shared_ratelimit                             */
/* ------------------------------------------------------------------------ */

static void test_examples_worker_threads_reports(void)
{
    static proc p;
    const char *base = tu_http_base();
    const char *args[] = {base, "4", "1", NULL};

    TU_REQUIRE(base);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "worker_threads", args, 30000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "calls/s"));
    CU_ASSERT(number_before(p.buf, " calls in ") > 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "latency   p50"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "upstream flights"));
}

static void test_examples_coalescing_one_upstream_call(void)
{
    static proc p;
    const char *base = tu_http_base();
    char path[96];
    const char *args[] = {base, "64", path, NULL};

    TU_REQUIRE(base);
    /* A counter of its own, with the 300 ms delay that holds the flight
     * open while the 64 callers arrive. */
    snprintf(path, sizeof path, "/count/examples-coalescing-%d?delay=300", (int)getpid());
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "coalescing", args, 30000), 0);
    CU_ASSERT_EQUAL(number_after(p.buf, "requests made:"), 64);
    CU_ASSERT_EQUAL(number_after(p.buf, "upstream calls:"), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "63 of them by another caller's flight"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, " t63 "));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "latency summary:"));
}

#define RL_BURST 10
#define RL_RATE 100
#define RL_SECONDS 2
/* Processes start within milliseconds of each other; allow for that. */
#define RL_SLACK 5

static void test_examples_shared_ratelimit_fleet_within_limit(void)
{
    static proc p;
    const char *base = tu_http_base(), *redis = tu_redis_url();
    const char *args[] = {base, "2", "2", "2", redis, NULL};
    long total, upstream, bound = RL_BURST + RL_RATE * RL_SECONDS;

    TU_REQUIRE(base && redis);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "shared_ratelimit", args, 60000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "limiter: Redis at redis://127.0.0.1:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "process 2 (pid"));
    total = number_after(p.buf, "total admitted:");
    upstream = number_after(p.buf, "upstream received:");
    CU_ASSERT(total > 0);
    CU_ASSERT(total <= bound + RL_SLACK);
    /* The upstream saw what was admitted (a call cut by the end of the
     * run may have reached it without being counted as admitted). */
    CU_ASSERT(upstream >= total && upstream <= bound + RL_SLACK);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "within its one shared limit"));
    CU_ASSERT_PTR_NULL(strstr(p.buf, "unreachable"));
    if (total > bound + RL_SLACK || total <= 0 || !strstr(p.buf, "within its one shared limit"))
        fprintf(stderr, "\n  admitted %ld, bound %ld:\n%s\n", total, bound, p.buf);
}

/* The same fleet with "-" (no Redis): each process has its own limit, so
 * together they pass what one shared limit allows. */
static void test_examples_shared_ratelimit_local_limits_add_up(void)
{
    static proc p;
    const char *base = tu_http_base();
    const char *args[] = {base, "2", "2", "2", "-", NULL};
    long total, bound = RL_BURST + RL_RATE * RL_SECONDS;

    TU_REQUIRE(base);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "shared_ratelimit", args, 60000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "limiter: in-process"));
    total = number_after(p.buf, "total admitted:");
    CU_ASSERT(total > bound + RL_SLACK);
    CU_ASSERT(total <= 2 * (bound + RL_SLACK));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "each process used the whole limit"));
    if (total <= bound + RL_SLACK || total > 2 * (bound + RL_SLACK))
        fprintf(stderr, "\n  admitted %ld, one process's bound %ld:\n%s\n", total, bound, p.buf);
}

/* ------------------------------------------------------------------------ */
/* server_integration                                                       */
/* ------------------------------------------------------------------------ */

/* Starts the gateway on a port it picks and reads which one: 0, or -1. */
static int gateway_start(proc *p, char *addr, size_t cap)
{
    const char *base = tu_http_base();
    const char *args[] = {base, "0", "4", NULL};
    const char *at;
    long port;

    if (!base || proc_start(p, "server_integration", args) != 0)
        return -1;
    if (!(at = proc_line(p, "listening on 127.0.0.1:", tu_now_ms() + 10000)) ||
        (port = strtol(at, NULL, 10)) <= 0 || port > 65535) {
        fprintf(stderr, "\n  server_integration did not say where it listens:\n%s\n", p->buf);
        kill(p->pid, SIGKILL);
        proc_wait(p, tu_now_ms());
        CU_FAIL("server_integration did not start");
        return -1;
    }
    snprintf(addr, cap, "127.0.0.1:%ld", port);
    return 0;
}

/* SIGTERM, then its exit status within `ms` (-1 if it had to be killed). */
static int gateway_stop(proc *p, int ms)
{
    int64_t deadline = tu_now_ms() + ms;

    kill(p->pid, SIGTERM);
    proc_read_all(p, deadline);
    return proc_wait(p, deadline);
}

static int get_status(const char *addr, const char *target, char *buf, size_t cap)
{
    char req[512];

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", target);
    return tu_roundtrip(addr, req, buf, cap, 10000) < 0 ? -1 : tu_status(buf);
}

static void test_examples_server_integration_routes(void)
{
    static proc p;
    static char buf[65536], direct[4096];
    const char *mock = tu_http_addr();
    char addr[64];
    ssize_t n;

    TU_REQUIRE(mock);
    if (gateway_start(&p, addr, sizeof addr) != 0)
        return;
    /* Proxied: the upstream's status and exactly its body. */
    CU_ASSERT_EQUAL(get_status(mock, "/json", direct, sizeof direct), 200);
    CU_ASSERT_EQUAL(get_status(addr, "/proxy/json", buf, sizeof buf), 200);
    CU_ASSERT_PTR_NOT_NULL(tu_body(direct));
    CU_ASSERT_PTR_NOT_NULL(tu_body(buf));
    if (tu_body(direct) && tu_body(buf))
        CU_ASSERT_STRING_EQUAL(tu_body(buf), tu_body(direct));
    CU_ASSERT_EQUAL(get_status(addr, "/proxy/status/503?x=1", buf, sizeof buf), 503);
    /* Its own routes. */
    CU_ASSERT_EQUAL(get_status(addr, "/metrics", buf, sizeof buf), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "sluice_"));
    /* The library's counters saw the two proxied calls. */
    CU_ASSERT(number_after(buf, "sluice_requests_total{service=\"upstream\",class=\"2xx\"}") >= 1);
    CU_ASSERT(number_after(buf, "sluice_requests_total{service=\"upstream\",class=\"5xx\"}") >= 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "gateway_responses_total"));
    CU_ASSERT_EQUAL(get_status(addr, "/healthz", buf, sizeof buf), 200);
    CU_ASSERT_EQUAL(get_status(addr, "/nowhere", buf, sizeof buf), 404);
    /* Malformed input is refused, not served. */
    CU_ASSERT(tu_roundtrip(addr, "GARBAGE\r\n\r\n", buf, sizeof buf, 5000) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 400);
    CU_ASSERT(tu_roundtrip(addr, "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", buf,
                           sizeof buf, 5000) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 400);
    CU_ASSERT(tu_roundtrip(addr, "POST /proxy/json HTTP/1.1\r\nHost: gw\r\n\r\n", buf, sizeof buf,
                           5000) > 0);
    CU_ASSERT_EQUAL(tu_status(buf), 405);
    {
        /* A head past the gateway's 8 KiB: refused, and the answer is
         * read before the connection closes. */
        static char big[12000];
        int k = snprintf(big, sizeof big, "GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ");
        memset(big + k, 'a', 10000);
        memcpy(big + k + 10000, "\r\n\r\n", 5);
        CU_ASSERT(tu_roundtrip(addr, big, buf, sizeof buf, 5000) > 0);
        CU_ASSERT_EQUAL(tu_status(buf), 431);
    }
    /* Two pipelined requests on one keep-alive connection, both answered. */
    {
        int fd = tu_connect(addr);
        const char *two = "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
                          "GET /proxy/json HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL(tu_write_all(fd, two, strlen(two)), 0);
        n = tu_read_all(fd, buf, sizeof buf, 10000);
        close(fd);
        CU_ASSERT(n > 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, "HTTP/1.1 200 OK\r\n"));
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\n\r\nok\n"));
        CU_ASSERT_PTR_NOT_NULL(tu_body(direct) ? strstr(buf, tu_body(direct)) : NULL);
    }
    CU_ASSERT_EQUAL(gateway_stop(&p, 5000), 0);
}

/* SIGTERM while a slow request is in flight: the request still gets its
 * 200, then the gateway exits 0 within 2 s and listens no more. */
static void test_examples_server_integration_graceful_shutdown(void)
{
    static proc p;
    static char buf[8192];
    const char *mock = tu_http_addr();
    const char *req = "GET /proxy/delay/300 HTTP/1.1\r\nHost: gw\r\n\r\n";
    char addr[64];
    long before;
    int64_t until;
    int fd, rc;

    TU_REQUIRE(mock);
    if (gateway_start(&p, addr, sizeof addr) != 0)
        return;
    before = tu_hits(mock, "/delay/300");
    fd = tu_connect(addr);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(tu_write_all(fd, req, strlen(req)), 0);
    /* In flight once the upstream has it. */
    until = tu_now_ms() + 5000;
    while (tu_hits(mock, "/delay/300") <= before && tu_now_ms() < until)
        usleep(2000);
    CU_ASSERT(tu_hits(mock, "/delay/300") > before);
    rc = gateway_stop(&p, 2000);
    CU_ASSERT(tu_read_response(fd, buf, sizeof buf, 3000) > 0);
    close(fd);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(tu_status(buf), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"delay_ms\":300"));
    CU_ASSERT_PTR_NOT_NULL(strcasestr(buf, "\r\nConnection: close\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "shut down cleanly"));
    CU_ASSERT_EQUAL(tu_connect(addr), -1);
}

/* ------------------------------------------------------------------------ */
/* The executor with real requests                                          */
/* ------------------------------------------------------------------------ */

static int body_has(const sluice_response *r, const char *s)
{
    return r && strstr(sluice_response_body(r, NULL), s) != NULL;
}

/* A loopback port bound but not listening: every connect is refused and
 * no other program can take the port meanwhile.  The socket, or -1. */
static int refused_port(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* refused_port, as an http:// URL in `url`. */
static int refused_url(char *url, size_t cap)
{
    int port = 0, fd = refused_port(&port);

    if (fd >= 0)
        snprintf(url, cap, "http://127.0.0.1:%d", port);
    return fd;
}

static void test_examples_batch_real_requests_in_order(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "ex-batch", tu_http_base(), NULL), *dead;
    sluice_executor *ex;
    sluice_response *outs[4];
    int codes[4], i, port = 0, hold;
    char url[64];
    /* The slowest first: results follow the input, not completion. */
    sluice_request reqs[4] = {{.path = "/delay/50"}, {.path = "/json"}, {.path = "/status/500"},
                              {.path = "/bad\r\nX-Injected: 1"}};

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    ex = sluice_executor_new(4, 16, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    CU_ASSERT_EQUAL(sluice_batch(ex, c, reqs, 4, 4, outs, codes), 0);
    for (i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(codes[i], 0);
    CU_ASSERT_EQUAL(sluice_response_status(outs[0]), 200);
    CU_ASSERT(body_has(outs[0], "\"delay_ms\":50"));
    CU_ASSERT_EQUAL(sluice_response_status(outs[1]), 200);
    CU_ASSERT(body_has(outs[1], "\"ok\":true"));
    CU_ASSERT_EQUAL(sluice_response_status(outs[2]), 500);
    CU_ASSERT_EQUAL(codes[3], SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(outs[3]);
    for (i = 0; i < 4; i++)
        sluice_response_free(outs[i]);

    /* A client whose upstream refuses: the item's code says so. */
    hold = refused_port(&port);
    CU_ASSERT_FATAL(hold >= 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    dead = tu_client(&f, "ex-batch-refused", url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dead);
    CU_ASSERT_EQUAL(sluice_batch(ex, dead, reqs + 1, 1, 1, outs, codes), 0);
    CU_ASSERT_EQUAL(codes[0], SLUICE_ECONNECT);
    CU_ASSERT_PTR_NULL(outs[0]);
    close(hold);
    sluice_executor_free(ex);
    sluice_factory_free(f);
}

static void test_examples_future_wait_timeout_then_result(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "ex-future", tu_http_base(), NULL);
    sluice_request quick = {.path = "/json"}, slow = {.path = "/delay/500"};
    sluice_executor *ex;
    sluice_future *fu;
    sluice_response *r = NULL;
    sluice_error err;
    int64_t t0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    ex = sluice_executor_new(2, 8, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    fu = sluice_submit(ex, c, &quick, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fu);
    CU_ASSERT_EQUAL(sluice_future_wait(fu, 10000, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT(body_has(r, "\"ok\":true"));
    sluice_response_free(r);
    sluice_future_free(fu);

    /* Too short a wait: ETIMEDOUT, no response, and the work goes on... */
    fu = sluice_submit(ex, c, &slow, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fu);
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_future_wait(fu, 50, &r, &err), SLUICE_ETIMEDOUT);
    CU_ASSERT(tu_now_ms() - t0 >= 45);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(err.code, SLUICE_ETIMEDOUT);
    /* ...so a second wait gets its result. */
    CU_ASSERT_EQUAL(sluice_future_wait(fu, 10000, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT(body_has(r, "\"delay_ms\":500"));
    sluice_response_free(r);
    sluice_future_free(fu);
    sluice_executor_free(ex);
    sluice_factory_free(f);
}

/* ------------------------------------------------------------------------ */
/* The short examples, one concept each                                     */
/* ------------------------------------------------------------------------ */

static void test_examples_get_prints_body(void)
{
    static proc p;
    const char *base = tu_http_base();
    const char *args[] = {base, "/json", NULL}, *notfound[] = {base, "/status/404", NULL};
    char url[64];
    const char *dead[] = {url, "/json", NULL};
    int hold;

    TU_REQUIRE(base);
    CU_ASSERT_EQUAL(run_example(&p, "get", args, 20000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "status 200"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "{\"ok\":true,"));
    /* A status other than 2xx is a response, but the program says no. */
    CU_ASSERT_EQUAL(run_example_failing(&p, "get", notfound, 20000), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "status 404"));
    /* A failure exits non-zero with the sluice_error message. */
    hold = refused_url(url, sizeof url);
    CU_ASSERT_FATAL(hold >= 0);
    CU_ASSERT_EQUAL(run_example_failing(&p, "get", dead, 20000), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "get: SLUICE_ECONNECT: "));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, url + strlen("http://")));   /* names host:port */
    close(hold);
}

/* What a user sees with SLUICE_LOG set (in any case) and no callback: a
 * debug line on stderr for each attempt, the query's values left out. */
static void test_examples_sluice_log_debug_env(void)
{
    static proc p;
    const char *base = tu_http_base();
    char path[96];
    const char *args[] = {base, path, NULL};
    const char *s;
    int attempts = 0;

    TU_REQUIRE(base);
    snprintf(path, sizeof path, "/flaky/logenv%d?fail=1&token=SECRET123", (int)getpid());
    setenv("SLUICE_LOG", "Debug", 1);
    CU_ASSERT_EQUAL(run_example(&p, "get", args, 20000), 0);
    unsetenv("SLUICE_LOG");
    for (s = p.buf; (s = strstr(s, "sluice debug: ")) != NULL; s++)
        attempts += strstr(s, " attempt ") != NULL && strstr(s, " attempt ") < strchr(s, '\n');
    CU_ASSERT(attempts >= 2);                    /* the 503, then the 200 */
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "status 200"));
    CU_ASSERT_PTR_NULL(strstr(p.buf, "SECRET123"));
}

static void test_examples_post_json_echoed(void)
{
    static proc p;
    const char *base = tu_http_base();
    const char *args[] = {base, "/echo", "{\"id\":42}", NULL};

    TU_REQUIRE(base);
    CU_ASSERT_EQUAL(run_example(&p, "post_json", args, 20000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "\"method\":\"POST\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "[\"Content-Type\",\"application/json\"]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "\"body\":\"{\\\"id\\\":42}\""));
}

/* An HTTPS mock API with the test certificates; extra args may ask for a
 * client certificate.  0, or -1 (the test failed). */
static int start_https(tu_server *s, const char *client_ca)
{
    const char *dir = getenv("SLUICE_TEST_CERTS");
    static char crt[320], key[320];
    const char *args[] = {"--tls-cert", crt, "--tls-key", key, client_ca ? "--client-ca" : NULL,
                          client_ca, NULL};

    if (!dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run through tests/run.sh (make check)");
        return -1;
    }
    snprintf(crt, sizeof crt, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    if (tu_mockapi_start(s, args) != 0) {
        CU_FAIL("HTTPS mock API did not start");
        return -1;
    }
    snprintf(s->url, sizeof s->url, "https://localhost:%d", s->port);
    return 0;
}

static void test_examples_https_ca_and_mtls(void)
{
    static proc p;
    const char *dir = getenv("SLUICE_TEST_CERTS");
    char ca[320], other[320], cert[320], key[320];
    tu_server plain, mutual;

    TU_REQUIRE(dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(other, sizeof other, "%s/otherca.pem", dir);
    snprintf(cert, sizeof cert, "%s/client.pem", dir);
    snprintf(key, sizeof key, "%s/client.key", dir);
    if (start_https(&plain, NULL) != 0)
        return;
    if (start_https(&mutual, ca) != 0) {
        tu_server_stop(&plain);
        return;
    }
    {
        const char *ok[] = {plain.url, ca, "/json", NULL};
        const char *untrusted[] = {plain.url, other, "/json", NULL};
        const char *mtls[] = {mutual.url, ca, cert, key, "/json", NULL};
        const char *no_cert[] = {mutual.url, ca, "/json", NULL};

        CU_ASSERT_EQUAL(run_example(&p, "https_ca", ok, 20000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "status 200 over verified TLS"));
        CU_ASSERT_EQUAL(run_example_failing(&p, "https_ca", untrusted, 20000), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "https_ca: SLUICE_ETLS: "));
        CU_ASSERT_EQUAL(run_example(&p, "https_mtls", mtls, 20000), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "status 200 with a client certificate"));
        /* The server that wants a certificate refuses a client without. */
        CU_ASSERT_EQUAL(run_example_failing(&p, "https_ca", no_cert, 20000), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "SLUICE_ETLS"));
    }
    tu_server_stop(&mutual);
    tu_server_stop(&plain);
}

static void test_examples_retry_breaker_attempts_and_opening(void)
{
    static proc p;
    const char *base = tu_http_base(), *mock = tu_http_addr();
    const char *args[] = {base, NULL};
    char path[96];

    TU_REQUIRE(base && mock);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "retry_breaker", args, 30000), 0);
    /* Three attempts on the flaky path, each logged by the hooks, and the
     * mock API saw exactly those three. */
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "  attempt 1: status 503"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "  attempt 2: status 503"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "  attempt 3: status 200"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "-> status 200 after 3 attempts"));
    snprintf(path, sizeof path, "/flaky/retry-example-%ld", (long)p.last_pid);
    CU_ASSERT_EQUAL(tu_hits(mock, path), 3);
    /* Then the breaker opened and a call failed without an attempt. */
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, ": closed -> open"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "-> SLUICE_ECIRCUITOPEN: "));
}

static void test_examples_redis_limiter_paces_calls(void)
{
    static proc p;
    const char *base = tu_http_base(), *redis = tu_redis_url();
    const char *args[] = {base, redis, "6", NULL};
    char dead[64];
    const char *unreachable[] = {base, dead, "2", NULL};
    int hold, port = 0;

    TU_REQUIRE(base && redis);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "redis_limiter", args, 30000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "call 6 admitted"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "limiter shared through Redis"));
    /* A burst of 2 admits two at once; the other four waited their turn. */
    CU_ASSERT_EQUAL(number_after(p.buf, "Redis: "), 6);
    CU_ASSERT(number_before(p.buf, " waits") >= 4);
    /* Fail mode closed: an unreachable Redis is an error, named. */
    hold = refused_port(&port);
    CU_ASSERT_FATAL(hold >= 0);
    snprintf(dead, sizeof dead, "redis://127.0.0.1:%d", port);
    CU_ASSERT_EQUAL(run_example_failing(&p, "redis_limiter", unreachable, 30000), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "redis_limiter: SLUICE_ELIMITER: "));
    close(hold);
}

static void test_examples_batch_in_input_order(void)
{
    static proc p;
    const char *base = tu_http_base();
    const char *args[] = {base, NULL};
    const char *a, *b, *c;

    TU_REQUIRE(base);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "batch", args, 30000), 0);
    a = strstr(p.buf, "/delay/200   status 200");
    b = strstr(p.buf, "/json        status 200");
    c = strstr(p.buf, "/status/404  status 404");
    CU_ASSERT(a && b && c && a < b && b < c);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "0 of 6 requests failed"));
}

static void test_examples_stats_prints_and_serves_metrics(void)
{
    static proc p;
    static char buf[262144];
    const char *base = tu_http_base();
    const char *args[] = {base, NULL}, *serve[] = {base, "0", NULL};
    const char *at;
    char addr[64];
    long port;

    TU_REQUIRE(base);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "stats", args, 30000), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "requests 4: 2xx 3, 4xx 1, errors 0"));
    CU_ASSERT_EQUAL(number_after(p.buf, "sluice_requests_total{service=\"catalog\",class=\"2xx\"} "), 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "# TYPE sluice_request_duration_seconds histogram"));

    /* Served: one scrape gets the same text over HTTP, then it exits 0. */
    if (proc_start(&p, "stats", serve) != 0)
        return;
    at = proc_line(&p, "serving metrics on 127.0.0.1:", tu_now_ms() + 20000);
    port = at ? strtol(at, NULL, 10) : -1;
    CU_ASSERT(port > 0 && port < 65536);
    if (port > 0) {
        snprintf(addr, sizeof addr, "127.0.0.1:%ld", port);
        CU_ASSERT(tu_roundtrip(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf,
                               10000) > 0);
        CU_ASSERT_EQUAL(tu_status(buf), 200);
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, "text/plain; version=0.0.4"));
        CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\nsluice_clients 1\n"));
    }
    proc_read_all(&p, tu_now_ms() + 10000);
    CU_ASSERT_EQUAL(proc_wait(&p, tu_now_ms() + 10000), 0);
}

/* session_pool: 3 sessions for 5 borrowers a round, each round served in
 * full, sessions past their TTL replaced, the usage of the live ones. */
static void test_examples_session_pool_rounds(void)
{
    static proc p;
    const char *base = tu_http_base();
    const char *args[] = {base, "3", "5", "3", "1000", "1000", "100", NULL};
    const char *at;
    long used = 0, lines = 0;
    int round;

    TU_REQUIRE(base);
    CU_ASSERT_EQUAL_FATAL(run_example(&p, "session_pool", args, 30000), 0);
    for (round = 1; round <= 3; round++) {
        char want[48];
        snprintf(want, sizeof want, "round %d: ok=5 failed=0 elapsed=", round);
        CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, want));
    }
    for (at = strstr(p.buf, ": used "); at; at = strstr(at + 1, ": used ")) {
        used += strtol(at + 7, NULL, 10);
        lines++;
    }
    CU_ASSERT_EQUAL(lines, 3);
    CU_ASSERT_EQUAL(used, 5);                           /* the last round's, on fresh sessions */
    CU_ASSERT(number_after(p.buf, "created=") >= 6);    /* made again after expiry */
    CU_ASSERT(number_after(p.buf, "expired=") >= 3);
    CU_ASSERT(number_after(p.buf, "waited=") >= 2);     /* 5 borrowers, 3 sessions */
}

static CU_TestInfo tests[] = {
    {"worker_threads reports calls/s", test_examples_worker_threads_reports},
    {"coalescing: 64 threads, one upstream call", test_examples_coalescing_one_upstream_call},
    {"shared_ratelimit: fleet within one Redis limit",
     test_examples_shared_ratelimit_fleet_within_limit},
    {"shared_ratelimit: local limits add up", test_examples_shared_ratelimit_local_limits_add_up},
    {"server_integration: proxy, metrics, health, bad input",
     test_examples_server_integration_routes},
    {"server_integration: graceful shutdown", test_examples_server_integration_graceful_shutdown},
    {"batch over a real client: order and per-item errors",
     test_examples_batch_real_requests_in_order},
    {"future: timeout, then the result", test_examples_future_wait_timeout_then_result},
    {"get: body, a 404, a refused connect", test_examples_get_prints_body},
    {"SLUICE_LOG=Debug: a line per attempt, no query values", test_examples_sluice_log_debug_env},
    {"post_json: the body arrives as sent", test_examples_post_json_echoed},
    {"https_ca and https_mtls: verified, refused", test_examples_https_ca_and_mtls},
    {"retry_breaker: three attempts, then the breaker opens",
     test_examples_retry_breaker_attempts_and_opening},
    {"redis_limiter: calls paced through Redis", test_examples_redis_limiter_paces_calls},
    {"batch: results in input order", test_examples_batch_in_input_order},
    {"stats: printed and served metrics", test_examples_stats_prints_and_serves_metrics},
    {"session_pool: rounds served, expired sessions replaced", test_examples_session_pool_rounds},
    CU_TEST_INFO_NULL,
};

void suite_examples(void);
void suite_examples(void)
{
    tu_add_suite("examples", tests);
}
