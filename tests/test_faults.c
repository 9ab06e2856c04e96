/* The fault matrix: an upstream, a network or a Redis that misbehaves while
 * several threads call through one factory.  Beyond each fault's own
 * outcome (which tests/test_client.c, test_tls.c and test_limiter.c check
 * one call at a time), every test here asserts the same three things:
 *   - every call ended in a response or a definite error (counted: a
 *     response with rc 0, or rc < 0 with *out NULL, err.code == rc and a
 *     message);
 *   - every thread came back (joined within a bound);
 *   - the process holds as many file descriptors as before. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define THREADS 8
#define JOIN_BOUND_MS 30000     /* a thread not back by then is blocked */
#define NCODES 32

/* ---- counting outcomes -------------------------------------------------- */

typedef struct tally {
    atomic_long calls;
    atomic_long status[6];          /* responses by status class */
    atomic_long code[NCODES];       /* errors by -code */
    atomic_long undefined;          /* neither a response nor a clean error */
    atomic_long max_ms;             /* the slowest call */
} tally;

static long errors_of(tally *t, int code)
{
    return atomic_load(&t->code[-code < NCODES ? -code : 0]);
}

static long responses(tally *t, int cls)
{
    return atomic_load(&t->status[cls]);
}

/* Runs one call and files its outcome. */
static int tally_call(tally *t, sluice_client *c, const sluice_request *req)
{
    sluice_response *r = (sluice_response *)t;   /* must come back NULL on error */
    sluice_error err;
    int64_t t0 = tu_now_ms(), took;
    long prev;
    int rc;

    memset(&err, 0x5a, sizeof err);
    rc = sluice_client_do(c, req, &r, &err);
    took = tu_now_ms() - t0;
    atomic_fetch_add(&t->calls, 1);
    prev = atomic_load(&t->max_ms);
    while (took > prev && !atomic_compare_exchange_weak(&t->max_ms, &prev, took))
        ;
    if (rc == 0 && r && err.code == 0 && sluice_response_status(r) / 100 >= 1 &&
        sluice_response_status(r) / 100 <= 5) {
        atomic_fetch_add(&t->status[sluice_response_status(r) / 100], 1);
        rc = sluice_response_status(r);
        sluice_response_free(r);
        return rc;
    }
    if (rc < 0 && -rc < NCODES && !r && err.code == rc && err.msg[0] &&
        memchr(err.msg, '\0', sizeof err.msg)) {
        atomic_fetch_add(&t->code[-rc], 1);
        return rc;
    }
    fprintf(stderr, "\n  undefined outcome: rc %d, out %p, err.code %d", rc, (void *)r, err.code);
    atomic_fetch_add(&t->undefined, 1);
    return rc;
}

static void tally_print(const char *name, tally *t)
{
    int i;

    fprintf(stderr, "\n  %s: %ld calls,", name, atomic_load(&t->calls));
    for (i = 1; i < 6; i++)
        if (atomic_load(&t->status[i]))
            fprintf(stderr, " %ld %dxx,", atomic_load(&t->status[i]), i);
    for (i = 1; i < NCODES; i++)
        if (atomic_load(&t->code[i]))
            fprintf(stderr, " %ld %s,", atomic_load(&t->code[i]), sluice_err_name(-i));
    fprintf(stderr, " slowest %ld ms", atomic_load(&t->max_ms));
}

/* ---- threads with a bound ------------------------------------------------ */

/* Joins n threads, each within what is left of `bound_ms`; returns how many
 * did not come back. */
static int join_bounded(pthread_t *th, int n, int bound_ms)
{
    struct timespec ts;
    int i, stuck = 0;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += bound_ms / 1000;
    ts.tv_nsec += (long)(bound_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    for (i = 0; i < n; i++)
        if (pthread_timedjoin_np(th[i], NULL, &ts) != 0)
            stuck++;
    if (stuck)
        fprintf(stderr, "\n  %d thread(s) still blocked after %d ms", stuck, bound_ms);
    return stuck;
}

/* Many threads running the same request `iters` times each (or until
 * `stop`), with a random pause of up to pause_ms between calls. */
typedef struct load {
    sluice_client *c;
    sluice_request req;
    int iters;                   /* 0: until stop */
    int min_pause_ms, pause_ms;
    atomic_int stop;
    atomic_uint seed;
    tally t;
} load;

static void *load_main(void *arg)
{
    load *l = arg;
    unsigned seed = atomic_fetch_add(&l->seed, 7919);
    int i;

    for (i = 0; l->iters ? i < l->iters : !atomic_load(&l->stop); i++) {
        tally_call(&l->t, l->c, &l->req);
        if (l->pause_ms)
            usleep((useconds_t)(l->min_pause_ms +
                                (int)(rand_r(&seed) % (unsigned)(l->pause_ms - l->min_pause_ms + 1))) *
                   1000);
    }
    return NULL;
}

/* Starts n threads on `l`; returns how many started. */
static int load_start(load *l, pthread_t *th, int n)
{
    int i;

    for (i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, load_main, l) != 0)
            break;
    CU_ASSERT_EQUAL(i, n);
    return i;
}

/* Runs n threads to the end; CU-fails on a blocked thread or an undefined
 * outcome.  Returns 0 when every thread came back. */
static int load_run(const char *name, load *l, int n)
{
    pthread_t th[64];
    int started = load_start(l, th, n), stuck = join_bounded(th, started, JOIN_BOUND_MS);

    tally_print(name, &l->t);
    CU_ASSERT_EQUAL(stuck, 0);
    CU_ASSERT_EQUAL(atomic_load(&l->t.undefined), 0);
    if (l->iters)
        CU_ASSERT(atomic_load(&l->t.calls) >= (long)started * l->iters);
    return stuck;
}

/* ---- factories and clients ---------------------------------------------- */

static sluice_factory *factory(void (*tune)(sluice_factory_opts *))
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    if (tune)
        tune(&fo);
    f = sluice_factory_new(&fo, &err);
    if (!f)
        fprintf(stderr, "\n  factory: %s", err.msg);
    return f;
}

/* A client with one attempt per call and no breaker unless tuned. */
static sluice_client *client(sluice_factory *f, const char *service, const char *base,
                             void (*tune)(sluice_client_opts *))
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    if (!f || !base)
        return NULL;
    sluice_client_opts_init(&co);
    co.base_url = base;
    co.read_timeout_ms = 5000;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    if (tune)
        tune(&co);
    c = sluice_factory_client(f, service, &co, &err);
    if (!c)
        fprintf(stderr, "\n  client %s: %s", service, err.msg);
    return c;
}

/* Frees the factory and checks the descriptors are back at `fds`. */
static void free_and_count(sluice_factory *f, int fds)
{
    sluice_factory_free(f);
    if (tu_fd_count() != fds)
        fprintf(stderr, "\n  %d descriptors open, %d before", tu_fd_count(), fds);
    CU_ASSERT_EQUAL(tu_fd_count(), fds);
}

/* ---- the upstream misbehaves -------------------------------------------- */

static void tune_long_keepalive(sluice_factory_opts *fo)
{
    fo->keepalive_expiry_ms = 60000;
}

/* The server drops keep-alive connections idle for 100 ms while callers
 * pause 80-250 ms between calls: pooled connections are often closed by
 * the server just before or while they are reused, and every call still
 * gets its response (GET is replayed on a fresh connection, without any
 * retry policy). */
static void test_faults_server_closes_idle_keepalive(void)
{
    const char *args[] = {"--idle-timeout", "100", NULL};
    struct sluice_factory_stats st;
    sluice_factory *f;
    tu_server s;
    load l = {0};
    int fds, i;

    if (tu_mockapi_start(&s, args) != 0)
        return;
    fds = tu_fd_count();
    f = factory(tune_long_keepalive);
    l.c = client(f, "idle-close", s.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    l.req.path = "/json";
    l.req.flags = SLUICE_REQ_NO_COALESCE;
    l.iters = 10;
    l.min_pause_ms = 80;
    l.pause_ms = 250;
    load_run("server closes idle", &l, THREADS);
    CU_ASSERT_EQUAL(responses(&l.t, 2), THREADS * 10);
    /* Rounds with every pooled connection closed by the server for idling. */
    for (i = 0; i < 3; i++) {
        CU_ASSERT(tu_wait_until(tu_mock_idle, s.addr, 10000));
        l.iters = 1;
        l.pause_ms = 0;
        load_run("after an idle pause", &l, THREADS);
    }
    CU_ASSERT_EQUAL(responses(&l.t, 2), THREADS * 13);
    sluice_factory_stats(f, &st);
    fprintf(stderr, "; %llu connections, %llu reused, %llu found closed, %llu broken",
            (unsigned long long)st.pool.created, (unsigned long long)st.pool.reused,
            (unsigned long long)st.pool.closed[SLUICE_CLOSE_STALE],
            (unsigned long long)st.pool.closed[SLUICE_CLOSE_BROKEN]);
    CU_ASSERT(st.pool.closed[SLUICE_CLOSE_STALE] + st.pool.closed[SLUICE_CLOSE_BROKEN] >= 1);
    free_and_count(f, fds);
    tu_server_stop(&s);
}

/* /reset aborts with a RST after 1000 of 1000000 promised bytes: each such
 * call fails SLUICE_EIO, the connection is never pooled, and the calls in
 * between succeed. */
static void test_faults_reset_mid_body(void)
{
    load bad = {0}, good = {0};
    sluice_factory *f;
    pthread_t th[2 * THREADS];
    int fds = tu_fd_count(), n;

    f = factory(NULL);
    bad.c = good.c = client(f, "reset", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bad.c);
    bad.req.path = "/reset";
    good.req.path = "/json";
    bad.iters = good.iters = 5;
    n = load_start(&bad, th, THREADS);
    n += load_start(&good, th + n, THREADS);
    CU_ASSERT_EQUAL(join_bounded(th, n, JOIN_BOUND_MS), 0);
    tally_print("RST mid-body", &bad.t);
    CU_ASSERT_EQUAL(errors_of(&bad.t, SLUICE_EIO), THREADS * 5);
    CU_ASSERT_EQUAL(responses(&good.t, 2), THREADS * 5);
    CU_ASSERT_EQUAL(atomic_load(&bad.t.undefined) + atomic_load(&good.t.undefined), 0);
    free_and_count(f, fds);
}

static void tune_read_300(sluice_client_opts *co)
{
    co->read_timeout_ms = 300;
}

/* /stall sends half a head and goes silent: the read timeout ends each
 * call with SLUICE_ETIMEDOUT, for every thread at once. */
static void test_faults_partial_headers_then_silence(void)
{
    sluice_factory *f;
    load l = {0};
    int fds = tu_fd_count();

    f = factory(NULL);
    l.c = client(f, "stall", tu_http_base(), tune_read_300);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    l.req.path = "/stall";
    l.iters = 2;
    load_run("partial headers", &l, THREADS);
    CU_ASSERT_EQUAL(errors_of(&l.t, SLUICE_ETIMEDOUT), THREADS * 2);
    CU_ASSERT(atomic_load(&l.t.max_ms) < 3000);
    free_and_count(f, fds);
}

/* One byte per 100 ms: every read succeeds in time, the whole-call
 * deadline (500 ms) ends it. */
static void test_faults_drip_past_deadline(void)
{
    sluice_factory *f;
    load l = {0};
    int fds = tu_fd_count();

    f = factory(NULL);
    l.c = client(f, "drip", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    l.req.path = "/drip?bytes=50&interval_ms=100";
    l.req.timeout_ms = 500;
    l.iters = 1;
    load_run("drip", &l, THREADS);
    CU_ASSERT_EQUAL(errors_of(&l.t, SLUICE_ETIMEDOUT), THREADS);
    CU_ASSERT(atomic_load(&l.t.max_ms) >= 490 && atomic_load(&l.t.max_ms) < 3000);
    free_and_count(f, fds);
}

/* ---- the network misbehaves ------------------------------------------------ */

static void tune_retry_fast(sluice_client_opts *co)
{
    co->retry.max_retries = 2;
    co->retry.backoff_factor_ms = 1;
}

/* Nothing listens: SLUICE_ECONNECT after the retries, and no socket of any
 * attempt stays open. */
static void test_faults_connect_refused(void)
{
    char base[64];
    sluice_factory *f;
    load l = {0};
    int fds = tu_fd_count();

    snprintf(base, sizeof base, "http://127.0.0.1:%d", tu_free_port());
    f = factory(NULL);
    l.c = client(f, "refused", base, tune_retry_fast);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    l.req.path = "/json";
    l.iters = 5;
    load_run("connect refused", &l, THREADS);
    CU_ASSERT_EQUAL(errors_of(&l.t, SLUICE_ECONNECT), THREADS * 5);
    free_and_count(f, fds);
}

/* Connects to a listen(fd, 0) socket nobody accepts on until one stays
 * pending: its accept queue is full and new SYNs are dropped.  Returns
 * the number of sockets put in fillers. */
static int fill_backlog(int port, int *fillers, int max)
{
    struct sockaddr_in sa = {0};
    int n = 0;

    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    while (n < max) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct pollfd p = {fd, POLLOUT, 0};
        if (fd < 0)
            break;
        fillers[n++] = fd;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            continue;
        if (errno != EINPROGRESS || poll(&p, 1, 200) == 0)
            break;   /* this SYN went unanswered: the queue is full */
    }
    return n;
}

static void tune_connect_300(sluice_client_opts *co)
{
    co->connect_timeout_ms = 300;
}

static void test_faults_backlog_full_connect_timeout(void)
{
    int fillers[64], nfill, lfd, port, i, fds = tu_fd_count();
    char base[64];
    sluice_factory *f;
    load l = {0};

    lfd = tu_listen(0, &port);
    CU_ASSERT_FATAL(lfd >= 0);
    nfill = fill_backlog(port, fillers, 64);
    CU_ASSERT(nfill < 64);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    f = factory(NULL);
    l.c = client(f, "backlog", base, tune_connect_300);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    l.req.path = "/json";
    l.iters = 2;
    load_run("backlog full", &l, 4);
    CU_ASSERT_EQUAL(errors_of(&l.t, SLUICE_ETIMEDOUT), 4 * 2);
    CU_ASSERT(atomic_load(&l.t.max_ms) >= 290 && atomic_load(&l.t.max_ms) < 2000);
    sluice_factory_free(f);
    for (i = 0; i < nfill; i++)
        close(fillers[i]);
    close(lfd);
    CU_ASSERT_EQUAL(tu_fd_count(), fds);
}

/* A name in the reserved .invalid domain never resolves: the test's own
 * DNS server says NXDOMAIN, so no system resolver is asked. */
static const char *dns_servers_g;

static void tune_dns(sluice_factory_opts *fo)
{
    fo->dns_servers = dns_servers_g;
}

static void test_faults_name_cannot_resolve(void)
{
    tu_dns *dns = tu_dns_start(TU_DNS_NXDOMAIN);
    sluice_factory *f;
    load l = {0};
    int fds;

    TU_REQUIRE(dns);
    dns_servers_g = tu_dns_servers(dns);
    fds = tu_fd_count();
    f = factory(tune_dns);
    l.c = client(f, "nxdomain", "http://x.invalid:8080/", tune_retry_fast);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    l.req.path = "/json";
    l.iters = 3;
    load_run("x.invalid", &l, THREADS);
    CU_ASSERT_EQUAL(errors_of(&l.t, SLUICE_ERESOLVE), THREADS * 3);
    free_and_count(f, fds);
    tu_dns_stop(dns);
}

/* ---- Redis misbehaves ------------------------------------------------------ */

static const char *redis_url_g;
static sluice_fail_mode fail_mode_g;
static int redis_timeout_g;

static void tune_redis(sluice_factory_opts *fo)
{
    fo->redis_url = redis_url_g;
    fo->limiter_prefix = "sluice-faults";
    fo->limiter_fail_mode = fail_mode_g;
    fo->redis_timeout_ms = redis_timeout_g;
}

static void tune_rate_limited(sluice_client_opts *co)
{
    co->rate_limit.rate = 100000;
    co->rate_limit.burst = 100000;
}

static sluice_factory *redis_factory(const char *url, sluice_fail_mode mode, int timeout_ms)
{
    redis_url_g = url;
    fail_mode_g = mode;
    redis_timeout_g = timeout_ms;
    return factory(tune_redis);
}

/* Waits (bounded) until a call through `c` succeeds; returns the ms it
 * took, or -1. */
static long until_ok(sluice_client *c, int bound_ms)
{
    int64_t t0 = tu_now_ms();
    sluice_error err;

    while (tu_now_ms() - t0 < bound_ms) {
        if (tu_get_status(c, "/json", &err) == 200)
            return (long)(tu_now_ms() - t0);
        usleep(10000);
    }
    return -1;
}

/* The three loads of the test below, and the figures its phases wait on. */
struct outage {
    load *closed, *open, *local;
    sluice_factory *fl;
    long calls[3];      /* each load's calls when the phase began */
};

static void outage_mark(struct outage *o)
{
    o->calls[0] = atomic_load(&o->closed->t.calls);
    o->calls[1] = atomic_load(&o->open->t.calls);
    o->calls[2] = atomic_load(&o->local->t.calls);
}

/* True once every load has made a few calls since the phase began. */
static int outage_loads_moved(void *arg)
{
    struct outage *o = arg;

    return atomic_load(&o->closed->t.calls) >= o->calls[0] + 4 &&
           atomic_load(&o->open->t.calls) >= o->calls[1] + 4 &&
           atomic_load(&o->local->t.calls) >= o->calls[2] + 4;
}

/* True once Redis's absence shows: a fail-closed call refused and a
 * fail-local decision taken locally, while every load went on. */
static int outage_seen(void *arg)
{
    struct outage *o = arg;
    struct sluice_factory_stats st;

    sluice_factory_stats(o->fl, &st);
    return errors_of(&o->closed->t, SLUICE_ELIMITER) > 0 && st.limiter.fallbacks > 0 &&
           outage_loads_moved(o);
}

/* Redis is killed and started again on its port while threads call through
 * a fail-closed, a fail-open and a fail-local factory: closed ones get
 * SLUICE_ELIMITER (promptly) or a response, open and local ones always a
 * response (the local share of this limit is never reached), and shared
 * decisions resume by themselves. */
static void test_faults_redis_killed_and_restarted(void)
{
    sluice_factory *fc, *fo, *fl;
    load closed = {0}, open = {0}, local = {0};
    struct outage o = {&closed, &open, &local, NULL, {0}};
    pthread_t th[12];
    tu_server s;
    int n, port, fds;

    if (tu_redis_start(&s, 0) != 0)
        return;
    port = s.port;
    fds = tu_fd_count();
    fc = redis_factory(s.url, SLUICE_FAIL_CLOSED, 200);
    fo = redis_factory(s.url, SLUICE_FAIL_OPEN, 200);
    fl = redis_factory(s.url, SLUICE_FAIL_LOCAL, 200);
    closed.c = client(fc, "redis-closed", tu_http_base(), tune_rate_limited);
    open.c = client(fo, "redis-open", tu_http_base(), tune_rate_limited);
    local.c = client(fl, "redis-local", tu_http_base(), tune_rate_limited);
    CU_ASSERT_PTR_NOT_NULL_FATAL(closed.c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(open.c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(local.c);
    closed.req.path = open.req.path = local.req.path = "/json";
    closed.pause_ms = open.pause_ms = local.pause_ms = 10;
    n = load_start(&closed, th, 4);
    n += load_start(&open, th + n, 4);
    n += load_start(&local, th + n, 4);
    o.fl = fl;
    outage_mark(&o);
    CU_ASSERT(tu_wait_until(outage_loads_moved, &o, 10000));
    tu_server_stop(&s);
    outage_mark(&o);
    CU_ASSERT(tu_wait_until(outage_seen, &o, 10000));
    if (tu_redis_start(&s, port) == 0) {
        CU_ASSERT(until_ok(closed.c, 3000) >= 0);
        outage_mark(&o);
        CU_ASSERT(tu_wait_until(outage_loads_moved, &o, 10000));
    }
    atomic_store(&closed.stop, 1);
    atomic_store(&open.stop, 1);
    atomic_store(&local.stop, 1);
    CU_ASSERT_EQUAL(join_bounded(th, n, JOIN_BOUND_MS), 0);
    tally_print("fail closed", &closed.t);
    tally_print("fail open", &open.t);
    tally_print("fail local", &local.t);
    CU_ASSERT_EQUAL(responses(&local.t, 2), atomic_load(&local.t.calls));
    CU_ASSERT_EQUAL(atomic_load(&local.t.undefined), 0);
    {
        struct sluice_factory_stats st;
        sluice_factory_stats(fl, &st);
        CU_ASSERT(st.limiter.fallbacks > 0);    /* decided locally while Redis was gone */
    }
    CU_ASSERT(responses(&closed.t, 2) > 0);
    CU_ASSERT(errors_of(&closed.t, SLUICE_ELIMITER) > 0);
    CU_ASSERT_EQUAL(responses(&closed.t, 2) + errors_of(&closed.t, SLUICE_ELIMITER),
                    atomic_load(&closed.t.calls));
    CU_ASSERT_EQUAL(responses(&open.t, 2), atomic_load(&open.t.calls));
    CU_ASSERT(atomic_load(&closed.t.max_ms) < 2000);
    CU_ASSERT_EQUAL(atomic_load(&closed.t.undefined) + atomic_load(&open.t.undefined), 0);
    sluice_factory_free(fo);
    sluice_factory_free(fl);
    free_and_count(fc, fds);
    tu_server_stop(&s);
}

/* A private redis-server with DEBUG enabled (off by default since 7.0). */
static int redis_start_debug(tu_server *s)
{
    const char *bin = getenv("SLUICE_TEST_REDIS_SERVER");
    const char *tmp = getenv("SLUICE_TEST_TMP");
    char portbuf[16];
    int i;

    memset(s, 0, sizeof *s);
    if (!bin || !tmp) {
        CU_FAIL("SLUICE_TEST_REDIS_SERVER / SLUICE_TEST_TMP unset: run through tests/run.sh");
        return -1;
    }
    s->port = tu_free_port();
    snprintf(portbuf, sizeof portbuf, "%d", s->port);
    s->pid = fork();
    if (s->pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "--port", portbuf, "--bind", "127.0.0.1", "--save", "", "--appendonly",
              "no", "--dir", tmp, "--enable-debug-command", "yes", (char *)NULL);
        _exit(127);
    }
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
    snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
    for (i = 0; i < 500; i++) {
        int fd = tu_connect(s->addr);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        usleep(10000);
    }
    tu_server_stop(s);
    CU_FAIL("could not start a private redis-server");
    return -1;
}

struct sleeper {
    const char *addr;
    atomic_int asleep;
    char reply[64];
};

/* DEBUG SLEEP 2.5 holds the whole server for 2.5 s. */
static void *redis_sleep_main(void *arg)
{
    static const char cmd[] = "*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n2.5\r\n";
    struct sleeper *z = arg;
    int fd = tu_connect(z->addr);

    if (fd >= 0 && tu_write_all(fd, cmd, sizeof cmd - 1) == 0) {
        atomic_store(&z->asleep, 1);
        tu_read_all(fd, z->reply, 6, 5000);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int sleeper_sent(void *z)
{
    return atomic_load(&((struct sleeper *)z)->asleep);
}

/* True when Redis at addr leaves a PING of a new connection unanswered
 * for 250 ms (an idle one answers in well under that, even loaded): it is
 * inside DEBUG SLEEP. */
static int redis_busy(void *addr)
{
    char buf[16];
    int fd = tu_connect(addr), busy;

    if (fd < 0)
        return 0;
    busy = tu_write_all(fd, "PING\r\n", 6) == 0 && tu_read_all(fd, buf, sizeof buf, 250) == 0;
    close(fd);
    return busy;
}

/* Redis answers, but 2.5 s late: each decision still ends within the
 * 100 ms Redis timeout (fail closed: SLUICE_ELIMITER), and once Redis
 * answers again decisions come from it again. */
static void test_faults_redis_answers_slowly(void)
{
    struct sleeper z = {0};
    sluice_factory *f;
    pthread_t sleeper;
    load l = {0};
    tu_server s;
    int fds;

    if (redis_start_debug(&s) != 0)
        return;
    fds = tu_fd_count();
    f = redis_factory(s.url, SLUICE_FAIL_CLOSED, 100);
    l.c = client(f, "redis-slow", tu_http_base(), tune_rate_limited);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    CU_ASSERT_EQUAL(until_ok(l.c, 3000) >= 0, 1);
    z.addr = s.addr;
    CU_ASSERT_FATAL(pthread_create(&sleeper, NULL, redis_sleep_main, &z) == 0);
    CU_ASSERT(tu_wait_until(sleeper_sent, &z, 10000));
    CU_ASSERT(tu_wait_until(redis_busy, s.addr, 10000));
    l.req.path = "/json";
    l.iters = 3;
    load_run("redis slow", &l, 4);
    CU_ASSERT_EQUAL(errors_of(&l.t, SLUICE_ELIMITER), 4 * 3);
    CU_ASSERT(atomic_load(&l.t.max_ms) < 1000);
    pthread_join(sleeper, NULL);
    CU_ASSERT_STRING_EQUAL(z.reply, "+OK\r\n");
    CU_ASSERT(until_ok(l.c, 3000) >= 0);
    free_and_count(f, fds);
    tu_server_stop(&s);
}

/* sluice_limiter_new with a Redis URL, each allocation failing in turn:
 * NULL with err.code SLUICE_ENOMEM, never another code (a pool failure was
 * once reported as SLUICE_ELIMITER while ENOMEM was returned). */
static void test_faults_redis_limiter_oom_says_enomem(void)
{
    const char *url = tu_redis_url();
    sluice_limiter_opts o;
    int fds = tu_fd_count(), done = 0;
    long n;

    TU_REQUIRE(url);
    sluice_limiter_opts_init(&o);
    o.fail_mode = SLUICE_FAIL_CLOSED;
    o.redis_timeout_ms = 2000;
    for (n = 1; !done && n < 500; n++) {
        sluice_error err = {0};
        sluice_limiter *l;
        tu_alloc_install(n, 0);
        l = sluice_limiter_new(url, &o, &err);
        done = l && tu_alloc_count() < n;
        if (!l && err.code != SLUICE_ENOMEM)
            fprintf(stderr, "\n  allocation %ld: %s (%s)", n, sluice_err_name(err.code), err.msg);
        CU_ASSERT(l || err.code == SLUICE_ENOMEM);
        sluice_limiter_free(l);
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        tu_alloc_uninstall();
    }
    CU_ASSERT(done);
    CU_ASSERT_EQUAL(tu_fd_count(), fds);
}

/* A rate limit the limiter cannot apply is refused when the client is
 * made, with the reason, instead of failing every call later. */
static void test_faults_invalid_rate_limit_refused_at_creation(void)
{
    static const struct { double rate; int period_ms, burst; const char *why; } bad[] = {
        {1e7, 1000, 1, "microsecond"},
        {1, 1000, 2000000000, "115 days"},
        {NAN, 1000, 1, "finite"},
        /* Burst 0 takes the default, max(1, rate): a rate past INT_MAX
         * once reached an (int) cast before validation (UBSan, make asan). */
        {1e300, 1000, 0, "microsecond"},
        {4.0 * 2147483647, 1000, 0, "microsecond"},
        {INFINITY, 1000, 0, "finite"},
        {NAN, 1000, 0, "finite"},
    };
    sluice_factory *f = factory(NULL);
    sluice_client_opts co;
    sluice_error err;
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sluice_client_opts_init(&co);
        co.base_url = tu_http_base();
        co.rate_limit.rate = bad[i].rate;
        co.rate_limit.period_ms = bad[i].period_ms;
        co.rate_limit.burst = bad[i].burst;
        CU_ASSERT_PTR_NULL(sluice_factory_client(f, "bad-limit", &co, &err));
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bad-limit"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, bad[i].why));
    }
    /* No limit (0, or negative as on the request path) is not an error. */
    co.rate_limit.rate = -1;
    CU_ASSERT_PTR_NOT_NULL(sluice_factory_client(f, "no-limit", &co, &err));
    sluice_factory_free(f);
}

/* ---- TLS peer vanishes ------------------------------------------------------- */

struct rude {
    int lfd;
    atomic_int stop;
    atomic_int accepted;
};

/* Accepts, reads the ClientHello, then hangs up: FIN and RST in turn. */
static void *rude_main(void *arg)
{
    struct rude *r = arg;

    while (!atomic_load(&r->stop)) {
        struct pollfd p = {r->lfd, POLLIN, 0};
        char buf[2048];
        int fd, n;
        if (poll(&p, 1, 50) != 1)
            continue;
        if ((fd = accept(r->lfd, NULL, NULL)) < 0)
            continue;
        n = atomic_fetch_add(&r->accepted, 1);
        p.fd = fd;
        if (poll(&p, 1, 5000) == 1)
            (void)recv(fd, buf, sizeof buf, 0);
        if (n % 2) {
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(fd);
    }
    return NULL;
}

static const char *ca_g;

/* HTTP/1.1 only: under ALPN the calls that arrive while an origin's first
 * dial is under way share that dial's outcome (test_h2.c), and this test
 * counts one handshake per call. */
static void tune_ca(sluice_factory_opts *fo)
{
    fo->ca_file = ca_g;
    fo->http2 = SLUICE_HTTP2_OFF;
}

static void test_faults_tls_peer_vanishes_mid_handshake(void)
{
    const char *dir = getenv("SLUICE_TEST_CERTS");
    struct rude r = {0};
    char ca[320], base[64];
    sluice_factory *f;
    pthread_t th;
    load l = {0};
    int port, fds = tu_fd_count();

    if (!dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run through tests/run.sh");
        return;
    }
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    ca_g = ca;
    r.lfd = tu_listen(64, &port);
    CU_ASSERT_FATAL(r.lfd >= 0);
    CU_ASSERT_FATAL(pthread_create(&th, NULL, rude_main, &r) == 0);
    snprintf(base, sizeof base, "https://localhost:%d", port);
    f = factory(tune_ca);
    l.c = client(f, "tls-rude", base, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l.c);
    l.req.path = "/json";
    l.req.flags = SLUICE_REQ_NO_COALESCE;
    l.iters = 4;
    load_run("TLS peer vanishes", &l, 4);
    /* A handshake cut short is an I/O failure, named as such. */
    CU_ASSERT_EQUAL(errors_of(&l.t, SLUICE_EIO), 4 * 4);
    if (atomic_load(&r.accepted) != 4 * 4)
        fprintf(stderr, "\n  %d connections accepted", atomic_load(&r.accepted));
    CU_ASSERT_EQUAL(atomic_load(&r.accepted), 4 * 4);
    sluice_factory_free(f);
    atomic_store(&r.stop, 1);
    pthread_join(th, NULL);
    close(r.lfd);
    CU_ASSERT_EQUAL(tu_fd_count(), fds);
}

/* ---- the factory freed while calls are in flight ---------------------------- */

struct in_flight {
    sluice_client *c;
    const char *path;
    int status;
    int64_t ended_ms;
};

static void *in_flight_main(void *arg)
{
    struct in_flight *k = arg;
    sluice_request req = {.path = k->path, .flags = SLUICE_REQ_NO_COALESCE};
    sluice_response *r = NULL;
    sluice_error err;

    k->status = sluice_client_do(k->c, &req, &r, &err);
    if (k->status == 0)
        k->status = sluice_response_status(r);
    sluice_response_free(r);
    k->ended_ms = tu_now_ms();
    return NULL;
}

struct freer {
    sluice_factory *f;
    atomic_int began;
    int64_t ended_ms;
};

static void *freer_main(void *arg)
{
    struct freer *fr = arg;

    atomic_store(&fr->began, 1);
    sluice_factory_free(fr->f);
    fr->ended_ms = tu_now_ms();
    return NULL;
}

static atomic_int started_g;

static void count_start(const sluice_request_info *info, void *ud)
{
    (void)info;
    (void)ud;
    atomic_fetch_add(&started_g, 1);
}

static void tune_count_starts(sluice_factory_opts *fo)
{
    fo->on_request_start = count_start;
}

#define IN_FLIGHT 16

static int all_started(void *n)
{
    return atomic_load(&started_g) >= *(int *)n;
}

/* Starts IN_FLIGHT calls to path and waits until each has begun its
 * attempt.  Returns how many threads started. */
static int start_in_flight(struct in_flight *k, pthread_t *th, sluice_client *c, const char *path)
{
    int i, n = 0;

    atomic_store(&started_g, 0);
    for (i = 0; i < IN_FLIGHT; i++) {
        k[i] = (struct in_flight){c, path, 0, 0};
        if (pthread_create(&th[i], NULL, in_flight_main, &k[i]) == 0)
            n++;
    }
    tu_wait_until(all_started, &n, 10000);
    CU_ASSERT_EQUAL(atomic_load(&started_g), IN_FLIGHT);
    return n;
}

/* 16 threads are mid-call on /delay/200 when sluice_factory_free starts on
 * another thread: it returns only after every one of them has its 200. */
static void test_faults_factory_free_waits_for_calls(void)
{
    struct in_flight k[IN_FLIGHT];
    struct freer fr = {0};
    pthread_t th[IN_FLIGHT], fth;
    int i, n, fds = tu_fd_count();
    int64_t last = 0;

    fr.f = factory(tune_count_starts);
    CU_ASSERT_PTR_NOT_NULL_FATAL(client(fr.f, "free-wait", tu_http_base(), NULL));
    n = start_in_flight(k, th, sluice_factory_client(fr.f, "free-wait", NULL, NULL),
                        "/delay/200");
    CU_ASSERT_FATAL(pthread_create(&fth, NULL, freer_main, &fr) == 0);
    CU_ASSERT_EQUAL(join_bounded(th, n, JOIN_BOUND_MS), 0);
    CU_ASSERT_EQUAL(join_bounded(&fth, 1, JOIN_BOUND_MS), 0);
    for (i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(k[i].status, 200);
        if (k[i].ended_ms > last)
            last = k[i].ended_ms;
    }
    CU_ASSERT(fr.ended_ms >= last);
    CU_ASSERT_EQUAL(tu_fd_count(), fds);
}

/* An upstream that reads each request and answers only when released, so
 * calls stay in flight exactly as long as the test wants. */
struct holder {
    int lfd;
    int want;
    int fds[IN_FLIGHT];
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int released;
};

static void read_head(int fd)
{
    char buf[4096];
    size_t len = 0;

    while (len + 1 < sizeof buf) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t r;
        if (poll(&p, 1, 5000) != 1 || (r = recv(fd, buf + len, sizeof buf - 1 - len, 0)) <= 0)
            return;
        len += (size_t)r;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return;
    }
}

static void *holder_main(void *arg)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct holder *h = arg;
    int i;

    while (h->n < h->want) {
        struct pollfd p = {h->lfd, POLLIN, 0};
        int fd;
        if (poll(&p, 1, 10000) != 1 || (fd = accept(h->lfd, NULL, NULL)) < 0)
            break;
        read_head(fd);
        h->fds[h->n++] = fd;
    }
    pthread_mutex_lock(&h->mu);
    while (!h->released)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    for (i = 0; i < h->n; i++) {
        tu_write_all(h->fds[i], resp, sizeof resp - 1);
        close(h->fds[i]);
    }
    return NULL;
}

static void release(struct holder *h)
{
    pthread_mutex_lock(&h->mu);
    h->released = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* While sluice_factory_free waits for 16 held calls, every new call through
 * the factory fails SLUICE_ECLOSED at once and sends nothing: no 17th
 * connection ever reaches the upstream. */
static void test_faults_factory_free_refuses_new_calls(void)
{
    struct holder h = {.want = IN_FLIGHT, .mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER};
    struct in_flight k[IN_FLIGHT];
    struct freer fr = {0};
    sluice_request probe = {.path = "/json", .body_len = 1};   /* invalid: no body */
    sluice_client_opts co;
    sluice_response *r = NULL;
    pthread_t th[IN_FLIGHT], fth, hth;
    sluice_client *c;
    sluice_error err;
    char base[64];
    int i, n, port, fds = tu_fd_count();
    int64_t t0;

    h.lfd = tu_listen(64, &port);
    CU_ASSERT_FATAL(h.lfd >= 0);
    CU_ASSERT_FATAL(pthread_create(&hth, NULL, holder_main, &h) == 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    fr.f = factory(tune_count_starts);
    c = client(fr.f, "free-refuse", base, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    n = start_in_flight(k, th, c, "/held");
    CU_ASSERT_FATAL(pthread_create(&fth, NULL, freer_main, &fr) == 0);
    /* An invalid request enters the factory and is refused without I/O:
     * EINVAL until the free has begun, ECLOSED from then on. */
    t0 = tu_now_ms();
    while (sluice_client_do(c, &probe, &r, &err) != SLUICE_ECLOSED && tu_now_ms() - t0 < 10000)
        usleep(1000);
    CU_ASSERT_EQUAL(err.code, SLUICE_ECLOSED);
    CU_ASSERT_EQUAL(sluice_get(c, "/late", &r, &err), SLUICE_ECLOSED);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(sluice_client_warmup(c, 2, &err), SLUICE_ECLOSED);
    sluice_client_opts_init(&co);
    co.base_url = base;
    CU_ASSERT_PTR_NULL(sluice_factory_client(fr.f, "late-client", &co, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ECLOSED);
    CU_ASSERT_PTR_NULL(sluice_factory_client(fr.f, "free-refuse", NULL, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_ECLOSED);
    /* The free is still waiting for the held calls. */
    usleep(100 * 1000);
    CU_ASSERT_EQUAL(fr.ended_ms, 0);
    release(&h);
    CU_ASSERT_EQUAL(join_bounded(th, n, JOIN_BOUND_MS), 0);
    CU_ASSERT_EQUAL(join_bounded(&fth, 1, JOIN_BOUND_MS), 0);
    CU_ASSERT_EQUAL(join_bounded(&hth, 1, JOIN_BOUND_MS), 0);
    for (i = 0; i < n; i++)
        CU_ASSERT_EQUAL(k[i].status, 200);
    CU_ASSERT_EQUAL(h.n, IN_FLIGHT);
    /* Nothing else ever connected. */
    {
        struct pollfd p = {h.lfd, POLLIN, 0};
        CU_ASSERT_EQUAL(poll(&p, 1, 0), 0);
    }
    close(h.lfd);
    CU_ASSERT_EQUAL(tu_fd_count(), fds);
}

static CU_TestInfo tests[] = {
    {"test_faults_server_closes_idle_keepalive", test_faults_server_closes_idle_keepalive},
    {"test_faults_reset_mid_body", test_faults_reset_mid_body},
    {"test_faults_partial_headers_then_silence", test_faults_partial_headers_then_silence},
    {"test_faults_drip_past_deadline", test_faults_drip_past_deadline},
    {"test_faults_connect_refused", test_faults_connect_refused},
    {"test_faults_backlog_full_connect_timeout", test_faults_backlog_full_connect_timeout},
    {"test_faults_name_cannot_resolve", test_faults_name_cannot_resolve},
    {"test_faults_redis_killed_and_restarted", test_faults_redis_killed_and_restarted},
    {"test_faults_redis_answers_slowly", test_faults_redis_answers_slowly},
    {"test_faults_redis_limiter_oom_says_enomem", test_faults_redis_limiter_oom_says_enomem},
    {"test_faults_invalid_rate_limit_refused_at_creation",
     test_faults_invalid_rate_limit_refused_at_creation},
    {"test_faults_tls_peer_vanishes_mid_handshake", test_faults_tls_peer_vanishes_mid_handshake},
    {"test_faults_factory_free_waits_for_calls", test_faults_factory_free_waits_for_calls},
    {"test_faults_factory_free_refuses_new_calls", test_faults_factory_free_refuses_new_calls},
    CU_TEST_INFO_NULL,
};

void suite_faults(void);
void suite_faults(void)
{
    tu_add_suite("faults", tests);
}
