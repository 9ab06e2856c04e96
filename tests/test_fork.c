/* fork(): a child uses its parent's factory on connections of its own, the
 * parent's pooled plain and TLS connections come through untouched, the
 * child frees the factory without waiting for threads it does not have,
 * and children draw random numbers (jitter) of their own.
 *
 * A child reports by its exit status: 0, or the number of the check that
 * failed.  It runs under alarm() so that a hang kills it, and the parent
 * waits for it a bounded time. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "testutil.h"

#define CHILD_ALARM_S 20

/* ThreadSanitizer kills a child of a threaded process that starts a
 * thread (its own state may be inconsistent there); starting threads in the
 * child is what the pool does, and what this suite checks.  Read only by a
 * -fsanitize=thread build. */
const char *__tsan_default_options(void) __attribute__((visibility("default")));
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#define CALLS 3

/* The child's exit status: 0..255 when it exited, 1000 + signal when a
 * signal (SIGALRM: it hung) ended it, -1 when it could not be started or
 * did not end in time (it is killed then). */
static int wait_child(pid_t pid)
{
    int64_t give_up = tu_now_ms() + (CHILD_ALARM_S + 10) * 1000;
    int status;
    pid_t r;

    if (pid < 0)
        return -1;
    for (;;) {
        r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (tu_now_ms() > give_up) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 1000 + WTERMSIG(status) : -1;
}

/* Runs fn(arg) in a child that exits with its result. */
static pid_t spawn(int (*fn)(void *), void *arg)
{
    pid_t pid;

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        alarm(CHILD_ALARM_S);
        _exit(fn(arg));
    }
    return pid;
}

static int start_tls(tu_server *s)
{
    const char *dir = getenv("SLUICE_TEST_CERTS");
    char crt[320], key[320];
    const char *args[5];

    if (!dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run through tests/run.sh (make check)");
        return -1;
    }
    snprintf(crt, sizeof crt, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    args[0] = "--tls-cert";
    args[1] = crt;
    args[2] = "--tls-key";
    args[3] = key;
    args[4] = NULL;
    if (tu_mockapi_start(s, args))
        return -1;
    snprintf(s->url, sizeof s->url, "https://localhost:%d", s->port);
    return 0;
}

static sluice_factory *fork_factory(void)
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;
    char ca[320];
    const char *dir = getenv("SLUICE_TEST_CERTS");

    if (!dir)
        return NULL;
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = ca;
    fo.keepalive_expiry_ms = 60000;   /* nothing expires while the test runs */
    f = sluice_factory_new(&fo, &err);
    if (!f)
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

typedef struct fork_env {
    sluice_factory *f;
    sluice_client *tls, *plain;
    struct sluice_factory_stats before;   /* the pool as the parent left it */
} fork_env;

/* CALLS GETs on each client: 0, or how many failed. */
static int calls(const fork_env *e)
{
    sluice_error err;
    int i, bad = 0;

    for (i = 0; i < CALLS; i++) {
        bad += tu_get_status(e->tls, "/json", &err) != 200;
        bad += tu_get_status(e->plain, "/json", &err) != 200;
    }
    return bad;
}

/* In the child: new connections for both origins, none of the parent's
 * reused, the parent's two dropped, and the factory freed. */
static int child_calls(void *arg)
{
    fork_env *e = arg;
    struct sluice_factory_stats st;

#ifdef __SANITIZE_THREAD__
    /* ThreadSanitizer cannot start a thread in the child of a threaded
     * process (a new thread may get the id of one that stayed in the
     * parent), and the pool starts its sweeper there: this half runs in
     * make check and make asan; here the parent's half does. */
    return 0;
#endif
    if (calls(e))
        return 1;
    sluice_factory_stats(e->f, &st);
    if (st.pool.created - e->before.pool.created != 2)
        return 2;
    if (st.pool.reused - e->before.pool.reused != 2 * (CALLS - 1))
        return 3;
    if (st.pool.closed[SLUICE_CLOSE_STALE] - e->before.pool.closed[SLUICE_CLOSE_STALE] != 2)
        return 4;
    if (st.pool.handshakes_full + st.pool.handshakes_resumed -
            e->before.pool.handshakes_full - e->before.pool.handshakes_resumed != 1)
        return 5;
    sluice_factory_free(e->f);
    return 0;
}

static void test_fork_child_uses_its_own_connections(void)
{
    fork_env e = {0};
    struct sluice_factory_stats st;
    tu_server s;
    int status;

    TU_REQUIRE(tu_http_base());
    e.f = fork_factory();
    CU_ASSERT_PTR_NOT_NULL_FATAL(e.f);
    if (start_tls(&s)) {
        sluice_factory_free(e.f);
        return;
    }
    e.tls = tu_client(&e.f, "fork-tls", s.url, NULL);
    e.plain = tu_client(&e.f, "fork-plain", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e.tls);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e.plain);
    CU_ASSERT_EQUAL(calls(&e), 0);
    sluice_factory_stats(e.f, &e.before);
    CU_ASSERT_EQUAL(e.before.pool.created, 2);
    CU_ASSERT_EQUAL(e.before.pool.idle, 2);

#ifdef __SANITIZE_THREAD__
    fprintf(stderr, "\n  (ThreadSanitizer: the child's half is left to make check and make asan)");
#endif
    status = wait_child(spawn(child_calls, &e));
    CU_ASSERT_EQUAL(status, 0);
    if (status)
        fprintf(stderr, "\n  child: status %d (1000 + n: signal n)", status);

    /* The parent's connections are still good: reused, none made anew
     * (a TLS stream the child had written on would fail or be closed). */
    CU_ASSERT_EQUAL(calls(&e), 0);
    sluice_factory_stats(e.f, &st);
    CU_ASSERT_EQUAL(st.pool.created, e.before.pool.created);
    CU_ASSERT_EQUAL(st.pool.reused, e.before.pool.reused + 2 * CALLS);
    CU_ASSERT_EQUAL(st.pool.closed[SLUICE_CLOSE_STALE], 0);
    CU_ASSERT_EQUAL(st.pool.handshakes_full + st.pool.handshakes_resumed, 1);
    sluice_factory_free(e.f);
    tu_server_stop(&s);
}

/* A factory the child never calls through: freeing it must not wait for
 * the parent's housekeeping thread. */
static int child_frees(void *arg)
{
    sluice_factory_free(arg);
    return 0;
}

static void test_fork_child_frees_an_unused_factory(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "fork-free", tu_http_base(), NULL);
    sluice_error err;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    CU_ASSERT_EQUAL(wait_child(spawn(child_frees, f)), 0);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    sluice_factory_free(f);
}

static void count_task(void *arg)
{
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
}

/* The workers stay in the parent: in the child the executor refuses work
 * and frees without joining them. */
static int child_executor(void *arg)
{
    sluice_executor *ex = arg;
    sluice_error err;
    int n = 0;

    if (sluice_executor_run(ex, count_task, &n, 0, &err) != NULL)
        return 1;
    if (err.code != SLUICE_ECLOSED || !strstr(err.msg, "fork"))
        return 2;
    sluice_executor_free(ex);
    return 0;
}

static void test_fork_executor_stays_with_the_parent(void)
{
    sluice_executor *ex = sluice_executor_new(2, 8, NULL);
    sluice_future *fu;
    int n = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    fu = sluice_executor_run(ex, count_task, &n, -1, NULL);
    CU_ASSERT_EQUAL(sluice_future_wait(fu, 10000, NULL, NULL), 0);
    sluice_future_free(fu);
    CU_ASSERT_EQUAL(wait_child(spawn(child_executor, ex)), 0);
    fu = sluice_executor_run(ex, count_task, &n, -1, NULL);
    CU_ASSERT_EQUAL(sluice_future_wait(fu, 10000, NULL, NULL), 0);
    sluice_future_free(fu);
    CU_ASSERT_EQUAL(n, 2);
    sluice_executor_free(ex);
}

/* Redis's count of connections it has accepted (INFO stats), over a
 * connection of its own (counted too); -1 on failure. */
static long redis_connections(void)
{
    const char *url = tu_redis_url(), *p;
    char addr[64], buf[8192];
    long n = -1;
    int fd;

    if (!url || strncmp(url, "redis://", 8) != 0)
        return -1;
    snprintf(addr, sizeof addr, "%s", url + 8);
    if ((fd = tu_connect(addr)) < 0)
        return -1;
    if (tu_write_all(fd, "INFO stats\r\nQUIT\r\n", 18) == 0 &&
        tu_read_all(fd, buf, sizeof buf, 3000) > 0 &&
        (p = strstr(buf, "total_connections_received:")))
        n = strtol(p + 27, NULL, 10);
    close(fd);
    return n;
}

static const sluice_limit generous = {1000000, 1000, 1000000};

static int check_once(sluice_limiter *l)
{
    sluice_limit_result r;

    return sluice_limiter_check(l, "fork", &generous, 1, &r) == 0 && r.allowed ? 0 : 1;
}

/* In the child: decisions on a Redis connection of its own. */
static int child_limits(void *arg)
{
    long before = redis_connections(), after;
    int i;

    for (i = 0; i < CALLS; i++)
        if (check_once(arg))
            return 1;
    after = redis_connections();
    if (before < 0 || after - before - 1 != 1)   /* less its own INFO connection */
        return 2;
    sluice_limiter_free(arg);
    return 0;
}

static void test_fork_child_limits_on_its_own_redis_connection(void)
{
    sluice_limiter_opts lo;
    sluice_limiter *l;
    sluice_error err;
    long before, after;
    int i;

    TU_REQUIRE(tu_redis_url());
    sluice_limiter_opts_init(&lo);
    lo.fail_mode = SLUICE_FAIL_CLOSED;   /* a broken connection shows */
    lo.redis_timeout_ms = 3000;
    lo.pool_size = 1;
    l = sluice_limiter_new(tu_redis_url(), &lo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < CALLS; i++)
        CU_ASSERT_EQUAL(check_once(l), 0);
    CU_ASSERT_EQUAL(wait_child(spawn(child_limits, l)), 0);
    /* The parent's connection is still its own, and still in step. */
    before = redis_connections();
    for (i = 0; i < CALLS; i++)
        CU_ASSERT_EQUAL(check_once(l), 0);
    after = redis_connections();
    CU_ASSERT(before >= 0);
    CU_ASSERT_EQUAL(after - before - 1, 0);
    sluice_limiter_free(l);
}

static int pipe_fd = -1;

static int child_draws(void *arg)
{
    uint64_t v = sl_rand64();

    (void)arg;
    return write(pipe_fd, &v, sizeof v) == (ssize_t)sizeof v ? 0 : 1;
}

/* Prefork workers must not jitter in step: each child seeds its own. */
static void test_fork_children_draw_their_own_random(void)
{
    uint64_t v[2] = {0, 0};
    int fds[2], i;

    (void)sl_rand64();     /* the forking thread's state is set */
    CU_ASSERT_FATAL(pipe(fds) == 0);
    pipe_fd = fds[1];
    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(wait_child(spawn(child_draws, NULL)), 0);
        CU_ASSERT_EQUAL(read(fds[0], &v[i], sizeof v[i]), (ssize_t)sizeof v[i]);
    }
    close(fds[0]);
    close(fds[1]);
    CU_ASSERT(v[0] != v[1]);
}

static CU_TestInfo tests[] = {
    {"test_fork_child_uses_its_own_connections", test_fork_child_uses_its_own_connections},
    {"test_fork_child_frees_an_unused_factory", test_fork_child_frees_an_unused_factory},
    {"test_fork_child_limits_on_its_own_redis_connection",
     test_fork_child_limits_on_its_own_redis_connection},
    {"test_fork_executor_stays_with_the_parent", test_fork_executor_stays_with_the_parent},
    {"test_fork_children_draw_their_own_random", test_fork_children_draw_their_own_random},
    CU_TEST_INFO_NULL,
};

void suite_fork(void);
void suite_fork(void)
{
    tu_add_suite("fork", tests);
}
