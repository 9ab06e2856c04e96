/* Redis Sentinel for the rate limiter: redis+sentinel:// URLs; decisions
 * that land on the master the sentinels name (tests/sentinel.sh: one
 * primary, one replica, three sentinels); a sentinel naming a replica
 * passed over; a failover followed; an unknown master and unreachable
 * sentinels as Redis failures in bounded time; rediscovery after a
 * -READONLY reply, a dead master and a slow sentinel (a sentinel of the
 * test's own, whose answer it sets); the rediscovery count in the metrics
 * exports. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "clock.h"
#include "limiter.h"
#include "redis_conn.h"
#include "testutil.h"

#define MASTER "sluice-test"
#define SECRET "s3cr3t-SENTINEL"
/* How late a call may return past its bound on a loaded 2-core host under
 * a sanitizer; a bound not applied at all still shows. */
#define SLACK_MS 700

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */
/* ------------------------------------------------------------------------ */

static int64_t ms_since(int64_t t0)
{
    return (sl_now_ns() - t0) / 1000000;
}

static uint64_t rediscoveries(sluice_limiter *l)
{
    struct sluice_limiter_stats st;

    sluice_limiter_stats(l, &st);
    return st.sentinel_rediscoveries;
}

/* $SLUICE_TEST_SENTINEL, or NULL after failing the test. */
static const char *sentinel_url(void)
{
    const char *u = getenv("SLUICE_TEST_SENTINEL");

    if (!u || !*u) {
        CU_FAIL("SLUICE_TEST_SENTINEL is not set (tests/run.sh starts tests/sentinel.sh)");
        return NULL;
    }
    return u;
}

/* The test deployment's URL with `first` put before its sentinels and the
 * master named `master` (static buffer). */
static const char *sentinel_url_with(const char *first, const char *master)
{
    static char buf[512];
    const char *u = sentinel_url(), *list, *slash;

    if (!u)
        return NULL;
    list = u + strlen("redis+sentinel://");
    slash = strchr(list, '/');
    snprintf(buf, sizeof buf, "redis+sentinel://%s%s%.*s/%s", first ? first : "",
             first ? "," : "", (int)(slash - list), list, master);
    return buf;
}

/* A command on a fresh connection to host:port; the reply or NULL. */
static redisReply *run_at(int port, const char *fmt, const char *arg)
{
    char url[64];
    redisContext *c;
    redisReply *r;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    if (!(c = sl_redis_connect_url(url, 2000, NULL)))
        return NULL;
    r = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
    redisFree(c);
    return r;
}

static int key_exists(int port, const char *key)
{
    redisReply *r = run_at(port, "EXISTS %s", key);
    int yes = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;

    if (r)
        freeReplyObject(r);
    return yes;
}

/* "master", "slave", or "" when the server does not answer. */
static const char *role_of(int port, char *buf, size_t cap)
{
    redisReply *r = run_at(port, "ROLE", NULL);

    buf[0] = '\0';
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_STRING)
        snprintf(buf, cap, "%s", r->element[0]->str);
    if (r)
        freeReplyObject(r);
    return buf;
}

/* The port of the master the test deployment's first sentinel names. */
static int sentinel_master_port(void)
{
    sl_redis_sentinel_url su;
    redisReply *r;
    int port = -1;

    if (!sentinel_url() || sl_redis_sentinel_url_parse(sentinel_url(), &su, NULL) != 0)
        return -1;
    r = run_at(su.sentinels[0].port, "SENTINEL get-master-addr-by-name %s", MASTER);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        port = atoi(r->element[1]->str);
    if (r)
        freeReplyObject(r);
    sl_redis_sentinel_url_free(&su);
    return port;
}

/* The port of the master's first replica (its ROLE), or -1. */
static int replica_port(int master)
{
    redisReply *r = run_at(master, "ROLE", NULL);
    int port = -1;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[2]->type == REDIS_REPLY_ARRAY && r->element[2]->elements > 0 &&
        r->element[2]->element[0]->elements >= 2)
        port = atoi(r->element[2]->element[0]->element[1]->str);
    if (r)
        freeReplyObject(r);
    return port;
}

/* A check whose duration is checked against bound_ms (+ slack). */
static int timed_check(sluice_limiter *l, const char *key, sluice_limit_result *r,
                       sluice_error *e, int bound_ms, int *slow)
{
    sluice_limit lim = {1000, 1000, 100};
    int64_t t0 = sl_now_ns();
    int rc = sl_limiter_check(l, key, &lim, 1, r, e);

    if (ms_since(t0) > bound_ms + SLACK_MS)
        (*slow)++;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* A sentinel of the test's own                                             */
/* ------------------------------------------------------------------------ */

/* Answers every SENTINEL get-master-addr-by-name with 127.0.0.1 and the
 * port the test set (0: the master is unknown), after delay_ms, one
 * connection at a time. */
typedef struct fake_sentinel {
    int fd, port;
    char addr[32];
    pthread_t th;
    _Atomic int stop, answer, queries, delay_ms;
} fake_sentinel;

/* Reads one 3-argument command (7 CRLF-ended lines). */
static int read_command(int fd)
{
    char buf[512];
    size_t len = 0;
    int lines = 0;

    while (lines < 7 && len < sizeof buf) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;

        if (poll(&p, 1, 1000) <= 0 || (k = read(fd, buf + len, sizeof buf - len)) <= 0)
            return -1;
        for (ssize_t i = 0; i < k; i++)
            lines += buf[len + (size_t)i] == '\n';
        len += (size_t)k;
    }
    return lines == 7 ? 0 : -1;
}

static void *fake_main(void *arg)
{
    fake_sentinel *f = arg;

    while (!atomic_load(&f->stop)) {
        struct pollfd p = {f->fd, POLLIN, 0};
        char reply[96], port[16];
        int c;

        if (poll(&p, 1, 20) <= 0 || (c = accept(f->fd, NULL, NULL)) < 0)
            continue;
        if (read_command(c) == 0) {
            atomic_fetch_add(&f->queries, 1);
            usleep((useconds_t)atomic_load(&f->delay_ms) * 1000);
            snprintf(port, sizeof port, "%d", atomic_load(&f->answer));
            if (strcmp(port, "0") != 0)
                snprintf(reply, sizeof reply, "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n",
                         strlen(port), port);
            else
                snprintf(reply, sizeof reply, "*-1\r\n");
            tu_write_all(c, reply, strlen(reply));
        }
        close(c);
    }
    return NULL;
}

static int fake_start(fake_sentinel *f, int answer)
{
    memset(f, 0, sizeof *f);
    f->fd = tu_listen(16, &f->port);
    CU_ASSERT_FATAL(f->fd >= 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", f->port);
    atomic_store(&f->answer, answer);
    CU_ASSERT_FATAL(pthread_create(&f->th, NULL, fake_main, f) == 0);
    return 0;
}

static void fake_stop(fake_sentinel *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->th, NULL);
    close(f->fd);
}

/* ------------------------------------------------------------------------ */
/* URLs                                                                     */
/* ------------------------------------------------------------------------ */

static void test_sentinel_url_parses(void)
{
    sl_redis_sentinel_url u;
    sluice_error e;
    size_t i;

    CU_ASSERT_EQUAL_FATAL(sl_redis_sentinel_url_parse(
                              "redis+sentinel://127.0.0.1:26380,[::1],sentinel-3:5000/my.master_1/3",
                              &u, &e),
                          0);
    CU_ASSERT_EQUAL_FATAL(u.n, 3);
    CU_ASSERT_STRING_EQUAL(u.sentinels[0].host, "127.0.0.1");
    CU_ASSERT_EQUAL(u.sentinels[0].port, 26380);
    CU_ASSERT_STRING_EQUAL(u.sentinels[1].host, "::1");
    CU_ASSERT_EQUAL(u.sentinels[1].port, 26379);   /* the sentinel default */
    CU_ASSERT_STRING_EQUAL(u.sentinels[1].where, "[::1]:26379");
    CU_ASSERT_STRING_EQUAL(u.sentinels[2].host, "sentinel-3");
    CU_ASSERT_EQUAL(u.sentinels[2].port, 5000);
    CU_ASSERT_STRING_EQUAL(u.master, "my.master_1");
    CU_ASSERT_EQUAL(u.auth.db, 3);
    CU_ASSERT_PTR_NULL(u.auth.host);
    CU_ASSERT_PTR_NULL(u.auth.password);
    CU_ASSERT_STRING_EQUAL(u.auth.where, "master 'my.master_1'");
    sl_redis_sentinel_url_free(&u);

    /* The credentials are the master's; the sentinels get none. */
    CU_ASSERT_EQUAL_FATAL(sl_redis_sentinel_url_parse("REDIS+SENTINEL://app:" SECRET "%40x@h1,h2:7/m/",
                                                      &u, &e),
                          0);
    CU_ASSERT_STRING_EQUAL(u.auth.user, "app");
    CU_ASSERT_STRING_EQUAL(u.auth.password, SECRET "@x");
    CU_ASSERT_EQUAL(u.auth.db, 0);
    CU_ASSERT_STRING_EQUAL(u.auth.display, "redis+sentinel://app:***@h1:26379,h2:7/m");
    for (i = 0; i < u.n; i++) {
        CU_ASSERT_PTR_NULL(u.sentinels[i].password);
        CU_ASSERT_PTR_NULL(u.sentinels[i].user);
    }
    sl_redis_sentinel_url_free(&u);
    sl_redis_sentinel_url_free(&u);   /* twice is harmless: it was zeroed */
}

static void test_sentinel_url_errors_name_the_part(void)
{
    static const struct {
        const char *url, *part;
    } bad[] = {
        {"redis+sentinel://h:1", "master name"},
        {"redis+sentinel://h:1/", "master name"},
        {"redis+sentinel://h:1//0", "master name"},
        {"redis+sentinel://:" SECRET "@h:1", "master name"},
        {"redis+sentinel://h:1/m!x", "master name"},
        {"redis+sentinel://h:1/m%20x", "master name"},
        {"redis+sentinel://h:1/m/x", "db"},
        {"redis+sentinel://h:1/m/-1", "db"},
        {"redis+sentinel://h:1/m/99999999999", "db"},
        {"redis+sentinel://:" SECRET "@h:1/m/1/2", "db"},
        {"redis+sentinel://h:1/m?db=1", "query or fragment"},
        {"redis+sentinel://h:1/m#f", "query or fragment"},
        {"redis+sentinel://h:1?x/m", "query or fragment"},
        {"redis+sentinel://h:1,,h:2/m", "host"},
        {"redis+sentinel://,h:1/m", "host"},
        {"redis+sentinel:///m", "host"},
        {"redis+sentinel://h h/m", "host"},
        {"redis+sentinel://h:0/m", "port"},
        {"redis+sentinel://h:1,h:99999/m", "port"},
        {"redis+sentinel://h:x/m", "port"},
        {"redis+sentinel://" SECRET "@h:1/m", "userinfo"},
        {"redis+sentinel://:@h:1/m", "password"},
        {"redis://h:1/m", "scheme"},
    };
    sl_redis_sentinel_url u;
    sluice_limiter *l;
    sluice_error e;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = sl_redis_sentinel_url_parse(bad[i].url, &u, &e);

        CU_ASSERT_EQUAL(rc, SLUICE_EINVAL);
        CU_ASSERT_PTR_NULL(u.sentinels);
        CU_ASSERT_PTR_NULL(u.master);
        if (rc != SLUICE_EINVAL || !strstr(e.msg, bad[i].part))
            fprintf(stderr, "\n  %s: rc %d, \"%s\" (wanted \"%s\")", bad[i].url, rc, e.msg,
                    bad[i].part);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, bad[i].part));
        CU_ASSERT_PTR_NULL(strstr(e.msg, SECRET));
    }
    CU_ASSERT_EQUAL(sl_redis_sentinel_url_parse(NULL, &u, &e), SLUICE_EINVAL);
    /* The limiter refuses them at creation, never connecting. */
    l = tu_limiter("redis+sentinel://:" SECRET "@127.0.0.1:1/m/x", "p", SLUICE_FAIL_CLOSED, 50, &e);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(e.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(strstr(e.msg, SECRET));
    sluice_limiter_free(l);
    /* An unknown scheme: the message lists the sentinel one too. */
    l = tu_limiter("memcache://127.0.0.1:1", "p", SLUICE_FAIL_CLOSED, 50, &e);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(e.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "redis+sentinel://"));
}

/* The seed-list parser the cluster URL shares still gives it the same. */
static void test_sentinel_cluster_url_unchanged(void)
{
    sl_redis_url *seeds = NULL;
    sluice_error e;
    size_t n = 0;

    CU_ASSERT_EQUAL_FATAL(
        sl_redis_cluster_url_parse("redis+cluster://u:pw@h1,h2:7001/0", &seeds, &n, &e), 0);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(seeds[0].port, 6379);   /* not the sentinel default */
    CU_ASSERT_EQUAL(seeds[1].port, 7001);
    CU_ASSERT_STRING_EQUAL(seeds[1].password, "pw");
    sl_redis_cluster_url_free(seeds, n);
    CU_ASSERT_EQUAL(sl_redis_cluster_url_parse("redis+cluster://h:1/m", &seeds, &n, &e),
                    SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(seeds);
}

/* ------------------------------------------------------------------------ */
/* The test deployment                                                      */
/* ------------------------------------------------------------------------ */

/* A decision writes its GCRA key on the master the sentinels name. */
static void test_sentinel_decisions_on_the_master(void)
{
    const char *url = sentinel_url();
    char prefix[64], key[128];
    sluice_limit lim = {1, 60000, 5};
    struct sluice_limiter_stats st;
    sluice_limit_result r;
    sluice_limiter *l;
    sluice_error e;
    int master;

    TU_REQUIRE(url);
    tu_fresh_prefix(prefix, sizeof prefix, "st");
    l = tu_limiter(url, prefix, SLUICE_FAIL_CLOSED, 500, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_TRUE(sluice_limiter_is_shared(l));
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{s}:k", &lim, 1, &r, &e), 0);
    CU_ASSERT_EQUAL(r.remaining, 4);
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{s}:k", &lim, 2, &r, &e), 0);
    CU_ASSERT_EQUAL(r.remaining, 2);
    master = sentinel_master_port();
    CU_ASSERT_FATAL(master > 0);
    snprintf(key, sizeof key, "%s:{s}:k", prefix);
    CU_ASSERT_TRUE(key_exists(master, key));
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    CU_ASSERT_EQUAL(st.redis_errors, 0);
    CU_ASSERT(st.round_trips >= 2);
    CU_ASSERT_EQUAL(rediscoveries(l), 0);
    sluice_limiter_free(l);
}

/* A sentinel whose view is stale names the replica: that address is not
 * used, the next sentinel's is.  Alone, it gives SLUICE_ELIMITER. */
static void test_sentinel_stale_replica_address_skipped(void)
{
    fake_sentinel f;
    char prefix[64], key[128], want[64];
    sluice_limit lim = {1, 60000, 5};
    struct sluice_limiter_stats st;
    sluice_limit_result r;
    sluice_limiter *l;
    sluice_error e;
    char only[96];
    int master = sentinel_master_port(), replica;

    CU_ASSERT_FATAL(master > 0);
    replica = replica_port(master);
    CU_ASSERT_FATAL(replica > 0);
    fake_start(&f, replica);
    tu_fresh_prefix(prefix, sizeof prefix, "st");
    l = tu_limiter(sentinel_url_with(f.addr, MASTER), prefix, SLUICE_FAIL_CLOSED, 500, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{r}:k", &lim, 1, &r, &e), 0);
    CU_ASSERT_EQUAL(r.remaining, 4);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    CU_ASSERT(atomic_load(&f.queries) >= 1);   /* it was asked, and passed over */
    snprintf(key, sizeof key, "%s:{r}:k", prefix);
    CU_ASSERT_TRUE(key_exists(master, key));
    sluice_limiter_free(l);

    /* Only the stale sentinel: no usable address. */
    snprintf(want, sizeof want, "127.0.0.1:%d", replica);
    snprintf(only, sizeof only, "redis+sentinel://%s/%s", f.addr, MASTER);
    l = tu_limiter(only, prefix, SLUICE_FAIL_CLOSED, 500, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{r}:k", &lim, 1, &r, &e), SLUICE_ELIMITER);
    CU_ASSERT_EQUAL(r.allowed, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'" MASTER "'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "not the master"));
    sluice_limiter_free(l);
    fake_stop(&f);
}

/* A master the sentinels do not know is a Redis failure: the fail mode
 * answers, and the message names the master. */
static void test_sentinel_unknown_master_fail_mode(void)
{
    const char *url = sentinel_url_with(NULL, "no-such-master");
    struct sluice_limiter_stats st;
    sluice_limit_result r;
    sluice_limiter *closed_l, *open_l;
    sluice_error e;
    int i, slow = 0;

    TU_REQUIRE(url);
    closed_l = tu_limiter(url, "um", SLUICE_FAIL_CLOSED, 200, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(closed_l);
    open_l = tu_limiter(url, "um", SLUICE_FAIL_OPEN, 200, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(open_l);
    for (i = 0; i < 10; i++) {
        CU_ASSERT_EQUAL(timed_check(closed_l, "{u}:k", &r, &e, 200, &slow), SLUICE_ELIMITER);
        CU_ASSERT_EQUAL(r.allowed, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'no-such-master'"));
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "does not know"));
        CU_ASSERT_EQUAL(timed_check(open_l, "{u}:k", &r, &e, 200, &slow), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
        CU_ASSERT_EQUAL(r.remaining, -1);
    }
    CU_ASSERT_EQUAL(slow, 0);
    sluice_limiter_stats(open_l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, 10);
    CU_ASSERT_EQUAL(st.round_trips, 0);
    sluice_limiter_free(closed_l);
    sluice_limiter_free(open_l);
}

/* No sentinel answers (refused, and one that accepts but never replies):
 * creation and every decision end within their bounds. */
static void test_sentinel_none_reachable_bounded(void)
{
    char url[256];
    int p1 = tu_free_port(), p2 = tu_free_port(), silent_port, silent, i, slow = 0;
    sluice_limit_result r;
    sluice_limiter *l;
    sluice_error e;
    int64_t t0;

    snprintf(url, sizeof url, "redis+sentinel://:" SECRET "@127.0.0.1:%d,127.0.0.1:%d/%s", p1, p2,
             MASTER);
    t0 = sl_now_ns();
    l = tu_limiter(url, "nr", SLUICE_FAIL_CLOSED, 100, &e);
    CU_ASSERT(ms_since(t0) <= 1000 + SLACK_MS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 20; i++) {
        CU_ASSERT_EQUAL(timed_check(l, "{n}:k", &r, &e, 100, &slow), SLUICE_ELIMITER);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'" MASTER "'"));
        CU_ASSERT_PTR_NULL(strstr(e.msg, SECRET));
    }
    CU_ASSERT_EQUAL(slow, 0);
    sluice_limiter_free(l);

    /* A sentinel that accepts and never answers: the deadline bounds it. */
    silent = tu_listen(16, &silent_port);
    CU_ASSERT_FATAL(silent >= 0);
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d/%s", silent_port, MASTER);
    t0 = sl_now_ns();
    l = tu_limiter(url, "nr", SLUICE_FAIL_CLOSED, 100, &e);
    CU_ASSERT(ms_since(t0) <= 1000 + SLACK_MS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 20; i++) {
        CU_ASSERT_EQUAL(timed_check(l, "{n}:k", &r, &e, 100, &slow), SLUICE_ELIMITER);
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'" MASTER "'"));
        usleep(20000);   /* past a probe or two */
    }
    CU_ASSERT_EQUAL(slow, 0);
    sluice_limiter_free(l);
    close(silent);
}

/* ------------------------------------------------------------------------ */
/* Rediscovery against servers of the test's own                           */
/* ------------------------------------------------------------------------ */

typedef struct hammer {
    sluice_limiter *l;
    _Atomic int *stop;
    int bound_ms;         /* the limiter's redis_timeout_ms */
    int other, slow;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    sluice_limit lim = {100000, 1000, 100000};
    sluice_limit_result r;
    sluice_error e;

    while (!atomic_load(h->stop)) {
        int64_t t0 = sl_now_ns();
        int rc = sl_limiter_check(h->l, "{h}:k", &lim, 1, &r, &e);
        if (rc != 0 && rc != SLUICE_ELIMITER)
            h->other++;
        if (ms_since(t0) > h->bound_ms + SLACK_MS)
            h->slow++;
        usleep(1000);
    }
    return NULL;
}

/* Checks fresh keys until one lands on `port` (a redis-server the test
 * controls), for up to max_ms; 1 when one did. */
static int follows(sluice_limiter *l, const char *prefix, int port, int max_ms)
{
    sluice_limit lim = {1, 60000, 5};
    sluice_limit_result r;
    sluice_error e;
    char key[64], full[128];
    int64_t t0 = sl_now_ns();
    int n = 0;

    while (ms_since(t0) < max_ms) {
        snprintf(key, sizeof key, "{f}:%d-%d", port, n++);
        snprintf(full, sizeof full, "%s:%s", prefix, key);
        if (sl_limiter_check(l, key, &lim, 1, &r, &e) == 0 && key_exists(port, full))
            return 1;
        usleep(10000);
    }
    return 0;
}

/* For tu_wait_until: the limiter has marked its master stale that often. */
typedef struct stale_count {
    sluice_limiter *l;
    uint64_t want;
} stale_count;

static int rediscovered(void *arg)
{
    stale_count *c = arg;

    return rediscoveries(c->l) >= c->want;
}

/* The master turned replica answers -READONLY: the address goes stale
 * (while the sentinel still names it, so nothing else could have told),
 * and once the sentinel names the new master decisions go there; eight
 * threads deciding meanwhile make few discoveries, one at a time.  Then
 * the new master dies: the closed and refused connections do the same.
 * The factory's metrics count both. */
static void test_sentinel_readonly_and_dead_master_rediscover(void)
{
    tu_server a, b;
    fake_sentinel f;
    sluice_factory_opts fo;
    sluice_factory *fac;
    sluice_limiter *l;
    stale_count sc;
    _Atomic int stop = 0;
    hammer h[8];
    pthread_t th[8];
    redisReply *rep;
    char url[128], arg[64], *text;
    int i, q0;
    size_t len;

    if (tu_redis_start(&a, 0) != 0)
        return;
    if (tu_redis_start(&b, 0) != 0) {
        tu_server_stop(&a);
        return;
    }
    fake_start(&f, a.port);
    snprintf(url, sizeof url, "redis+sentinel://%s/%s", f.addr, MASTER);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.redis_url = url;
    fo.limiter_prefix = "ro";
    fo.redis_timeout_ms = 200;
    fo.limiter_fail_mode = SLUICE_FAIL_CLOSED;
    fac = sluice_factory_new(&fo, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fac);
    l = fac->limiter;
    CU_ASSERT_TRUE(follows(l, "ro", a.port, 2000));
    CU_ASSERT_EQUAL(rediscoveries(l), 0);

    for (i = 0; i < 8; i++) {
        h[i] = (hammer){l, &stop, 200, 0, 0};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, hammer_main, &h[i]) == 0);
    }
    usleep(50000);
    /* a becomes b's replica; the sentinel still names a. */
    snprintf(arg, sizeof arg, "%d", b.port);
    rep = run_at(a.port, "REPLICAOF 127.0.0.1 %s", arg);
    CU_ASSERT(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep)
        freeReplyObject(rep);
    sc = (stale_count){l, 1};
    CU_ASSERT_TRUE(tu_wait_until(rediscovered, &sc, 5000));
    /* The sentinel names a replica for a while: discoveries fail, one at
     * a time, at the fail mode's probe pace, not one per decision. */
    q0 = atomic_load(&f.queries);
    usleep(300000);
    CU_ASSERT(atomic_load(&f.queries) - q0 <= 6);
    atomic_store(&f.answer, b.port);
    CU_ASSERT_TRUE(follows(l, "ro", b.port, 5000));
    atomic_store(&stop, 1);
    for (i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(h[i].other, 0);
        CU_ASSERT_EQUAL(h[i].slow, 0);
    }
    CU_ASSERT_EQUAL(rediscoveries(l), 1);

    /* b dies while the sentinel still names it; then it names a. */
    rep = run_at(a.port, "REPLICAOF NO ONE", NULL);
    CU_ASSERT(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep)
        freeReplyObject(rep);
    tu_server_stop(&b);
    sc.want = 2;
    for (i = 0; i < 500 && !rediscovered(&sc); i++) {
        sluice_limit lim = {1, 60000, 5};
        sluice_limit_result r;
        sluice_error e;
        CU_ASSERT_EQUAL(sl_limiter_check(l, "{d}:k", &lim, 1, &r, &e), SLUICE_ELIMITER);
        usleep(10000);
    }
    CU_ASSERT_EQUAL(rediscoveries(l), 2);
    atomic_store(&f.answer, a.port);
    CU_ASSERT_TRUE(follows(l, "ro", a.port, 5000));
    CU_ASSERT_EQUAL(rediscoveries(l), 2);

    len = sluice_factory_metrics(fac, SLUICE_METRICS_PROMETHEUS, NULL, 0);
    text = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    sluice_factory_metrics(fac, SLUICE_METRICS_PROMETHEUS, text, len + 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE sluice_limiter_sentinel_rediscoveries_total counter\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nsluice_limiter_sentinel_rediscoveries_total 2\n"));
    free(text);
    len = sluice_factory_metrics(fac, SLUICE_METRICS_JSON, NULL, 0);
    text = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    sluice_factory_metrics(fac, SLUICE_METRICS_JSON, text, len + 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"sentinel_rediscoveries\":2"));
    free(text);

    sluice_factory_free(fac);
    fake_stop(&f);
    tu_server_stop(&a);
}

/* The sentinels name a new master but answer slowly: the watcher marks
 * the address stale, one thread asks while the others wait for it, and no
 * decision waits past its deadline; once answers are quick, decisions go
 * to the new master. */
static void test_sentinel_slow_rediscovery_bounded(void)
{
    tu_server a, b;
    fake_sentinel f;
    sluice_limiter *l;
    _Atomic int stop = 0;
    hammer h[8];
    pthread_t th[8];
    char url[128];
    int i;

    if (tu_redis_start(&a, 0) != 0)
        return;
    if (tu_redis_start(&b, 0) != 0) {
        tu_server_stop(&a);
        return;
    }
    fake_start(&f, a.port);
    snprintf(url, sizeof url, "redis+sentinel://%s/%s", f.addr, MASTER);
    l = tu_limiter(url, "sl", SLUICE_FAIL_CLOSED, 100, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_TRUE(follows(l, "sl", a.port, 2000));
    for (i = 0; i < 8; i++) {
        h[i] = (hammer){l, &stop, 100, 0, 0};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, hammer_main, &h[i]) == 0);
    }
    /* 300 ms per answer: longer than a decision may wait, shorter than
     * the watcher's question. */
    atomic_store(&f.delay_ms, 300);
    atomic_store(&f.answer, b.port);
    usleep(2500000);
    CU_ASSERT(rediscoveries(l) >= 1);
    atomic_store(&f.delay_ms, 0);
    CU_ASSERT_TRUE(follows(l, "sl", b.port, 5000));
    atomic_store(&stop, 1);
    for (i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(h[i].other, 0);
        CU_ASSERT_EQUAL(h[i].slow, 0);
    }
    sluice_limiter_free(l);
    fake_stop(&f);
    tu_server_stop(&a);
    tu_server_stop(&b);
}

/* SENTINEL FAILOVER: within a few seconds decisions come from the new
 * master, the fail mode answers only in the window, and the old master
 * is a replica.  Last in the suite: it changes the deployment. */
static void test_sentinel_failover_followed(void)
{
    const char *url = sentinel_url();
    char prefix[64], role[16];
    sl_redis_sentinel_url su;
    struct sluice_limiter_stats st;
    sluice_limit lim = {1, 60000, 5};
    sluice_limit_result r;
    sluice_limiter *l;
    sluice_error e;
    redisReply *rep;
    uint64_t fallbacks;
    int old_master, new_master, i, n = 0, followed = 0;
    int64_t t0;

    TU_REQUIRE(url);
    CU_ASSERT_EQUAL_FATAL(sl_redis_sentinel_url_parse(url, &su, NULL), 0);
    old_master = sentinel_master_port();
    CU_ASSERT_FATAL(old_master > 0);
    new_master = replica_port(old_master);
    CU_ASSERT_FATAL(new_master > 0);
    tu_fresh_prefix(prefix, sizeof prefix, "st");
    l = tu_limiter(url, prefix, SLUICE_FAIL_CLOSED, 200, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sl_limiter_check(l, "{fo}:warm", &lim, 1, &r, &e), 0);

    rep = run_at(su.sentinels[1].port, "SENTINEL FAILOVER %s", MASTER);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
    if (rep->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "\n  SENTINEL FAILOVER: %s\n", rep->str);
    CU_ASSERT_EQUAL(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);

    /* Decide on fresh keys until one is written on the new master, asked
     * only once it says it is the master (so the key did not reach it by
     * replication from the old one). */
    t0 = sl_now_ns();
    while (!followed && ms_since(t0) < 20000) {
        char key[64], full[160];
        int promoted = strcmp(role_of(new_master, role, sizeof role), "master") == 0;

        snprintf(key, sizeof key, "{fo}:%d", n++);
        snprintf(full, sizeof full, "%s:%s", prefix, key);
        if (sl_limiter_check(l, key, &lim, 1, &r, &e) == 0 && promoted &&
            key_exists(new_master, full))
            followed = 1;
        else
            usleep(10000);
    }
    CU_ASSERT_TRUE_FATAL(followed);
    /* The sentinels switch within a second or two; the watcher notices
     * within a second more. */
    CU_ASSERT(ms_since(t0) <= 6000 + SLACK_MS);
    if (ms_since(t0) > 3000)
        fprintf(stderr, "[followed in %lld ms] ", (long long)ms_since(t0));
    sluice_limiter_stats(l, &st);
    fallbacks = st.fallbacks;
    CU_ASSERT(fallbacks <= (uint64_t)n);

    /* The old master is reconfigured as a replica; once it is, the
     * limiter still decides on the new one and the fail mode is over. */
    t0 = sl_now_ns();
    while (ms_since(t0) < 15000 && strcmp(role_of(old_master, role, sizeof role), "slave") != 0)
        usleep(50000);
    CU_ASSERT_STRING_EQUAL(role, "slave");
    CU_ASSERT_EQUAL(sentinel_master_port(), new_master);
    /* Connections to the old master the reconfiguration closed may still
     * be met once; after that, every decision comes from the new master. */
    for (i = 0; i < 100 && sl_limiter_check(l, "{fo}:settle", &lim, 1, &r, &e) != 0; i++)
        usleep(20000);
    sluice_limiter_stats(l, &st);
    fallbacks = st.fallbacks;
    for (i = 0; i < 30; i++) {
        char key[64], full[160];

        snprintf(key, sizeof key, "{fo}:after-%d", i);
        snprintf(full, sizeof full, "%s:%s", prefix, key);
        CU_ASSERT_EQUAL(sl_limiter_check(l, key, &lim, 1, &r, &e), 0);
        CU_ASSERT_EQUAL(r.remaining, 4);
        CU_ASSERT_TRUE(key_exists(new_master, full));
        usleep(5000);
    }
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, fallbacks);
    CU_ASSERT(rediscoveries(l) >= 1);
    sluice_limiter_free(l);
    sl_redis_sentinel_url_free(&su);
}

static CU_TestInfo tests[] = {
    {"test_sentinel_url_parses", test_sentinel_url_parses},
    {"test_sentinel_url_errors_name_the_part", test_sentinel_url_errors_name_the_part},
    {"test_sentinel_cluster_url_unchanged", test_sentinel_cluster_url_unchanged},
    {"test_sentinel_decisions_on_the_master", test_sentinel_decisions_on_the_master},
    {"test_sentinel_stale_replica_address_skipped", test_sentinel_stale_replica_address_skipped},
    {"test_sentinel_unknown_master_fail_mode", test_sentinel_unknown_master_fail_mode},
    {"test_sentinel_none_reachable_bounded", test_sentinel_none_reachable_bounded},
    {"test_sentinel_readonly_and_dead_master_rediscover",
     test_sentinel_readonly_and_dead_master_rediscover},
    {"test_sentinel_slow_rediscovery_bounded", test_sentinel_slow_rediscovery_bounded},
    {"test_sentinel_failover_followed", test_sentinel_failover_followed},
    CU_TEST_INFO_NULL,
};

void suite_sentinel(void);
void suite_sentinel(void)
{
    tu_add_suite("sentinel", tests);
}
