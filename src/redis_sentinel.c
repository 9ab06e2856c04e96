/* Redis Sentinel discovery: asking the sentinels for the master's address,
 * checking it with ROLE, keeping it until it is marked stale (contract in
 * redis_sentinel.h). */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "alloc.h"
#include "ascii.h"
#include "clock.h"
#include "error.h"
#include "log.h"
#include "redis_sentinel.h"
#include "sync.h"

#define HOST_MAX 256
/* The watcher asks the sentinels this often whether the master moved, and
 * gives one question this long. */
#define WATCH_PERIOD_MS 1000
#define WATCH_TIMEOUT_MS 500

struct sl_sentinel {
    sl_redis_url *sentinels;      /* immutable after sl_sentinel_new */
    size_t n;
    char *master;

    pthread_mutex_t mu;           /* guards the fields below (gen written under it) */
    pthread_cond_t done;          /* a discovery ended */
    int known;                    /* host and port are the master's, not stale */
    char host[HOST_MAX];
    int port;
    _Atomic uint64_t gen;
    int discovering;              /* one thread is asking the sentinels */
    uint64_t rounds;              /* discoveries ended */
    sluice_error why;             /* why the last one failed */
    _Atomic uint64_t rediscoveries;

    pthread_cond_t wake;          /* the watcher's sleep; signalled to stop it */
    pthread_t watcher;
    pid_t owner;                  /* the process the watcher runs in */
    int watching;
    _Atomic int stopping;         /* written under mu, read by the watcher without it */
};

static void *watch_main(void *arg);

sl_sentinel *sl_sentinel_new(sl_redis_sentinel_url *u, sluice_error *err)
{
    sl_sentinel *s = sl_calloc(1, sizeof *s);

    if (!s) {
        sl_err(err, SLUICE_ENOMEM, "redis sentinel: out of memory");
        return NULL;
    }
    if (sl_mutex_init(&s->mu, "redis sentinel", err) ||
        sl_cond_init(&s->done, "redis sentinel", err) ||
        sl_cond_init(&s->wake, "redis sentinel", err)) {
        sl_sentinel_free(s);
        return NULL;
    }
    s->sentinels = u->sentinels;
    s->n = u->n;
    s->master = u->master;
    u->sentinels = NULL;
    u->n = 0;
    u->master = NULL;
    if (pthread_create(&s->watcher, NULL, watch_main, s) != 0) {
        sl_err(err, SLUICE_ENOMEM, "redis sentinel: cannot start the watcher thread");
        sl_sentinel_free(s);
        return NULL;
    }
    s->watching = 1;
    s->owner = getpid();
    return s;
}

void sl_sentinel_free(sl_sentinel *s)
{
    if (!s)
        return;
    /* A fork() child has no watcher to stop (threads are not copied). */
    if (s->watching && s->owner == getpid()) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->watcher, NULL);
    }
    sl_redis_cluster_url_free(s->sentinels, s->n);
    sl_free(s->master);
    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    sl_free(s);
}

uint64_t sl_sentinel_gen(sl_sentinel *s)
{
    return atomic_load_explicit(&s->gen, memory_order_acquire);
}

uint64_t sl_sentinel_rediscoveries(sl_sentinel *s)
{
    return atomic_load_explicit(&s->rediscoveries, memory_order_relaxed);
}

void sl_sentinel_stale(sl_sentinel *s, uint64_t gen)
{
    int marked = 0;
    char where[HOST_MAX + 8];

    pthread_mutex_lock(&s->mu);
    if (s->known && atomic_load_explicit(&s->gen, memory_order_relaxed) == gen) {
        s->known = 0;
        atomic_store_explicit(&s->gen, gen + 1, memory_order_release);
        atomic_fetch_add_explicit(&s->rediscoveries, 1, memory_order_relaxed);
        snprintf(where, sizeof where, "%s:%d", s->host, s->port);
        marked = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (marked)
        SL_INFO("redis master '%s' at %s is stale: asking the sentinels again", s->master, where);
}

/* 0 when c's ROLE is master; SLUICE_ELIMITER naming `u` and what it is. */
static int check_role(const sl_redis_url *u, redisContext *c, const char *master,
                      sluice_error *err)
{
    const char *argv[] = {"ROLE"};
    redisReply *r = NULL, *role;
    char text[32];
    int rc = sl_redis_setup_command(u, c, 1, argv, "ROLE", &r, NULL, err);

    if (rc)
        return rc;
    role = r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0] : NULL;
    if (role && role->type == REDIS_REPLY_STRING && role->len == 6 &&
        memcmp(role->str, "master", 6) == 0) {
        freeReplyObject(r);
        return 0;
    }
    sl_redis_reply_text(role, text, sizeof text);
    freeReplyObject(r);
    return sl_err(err, SLUICE_ELIMITER, "redis %s, named for master '%s', is %s%s, not the master",
                  u->where, master, text[0] ? "a " : "", text[0] ? text : "of no known role");
}

/* Connects to host:port with auth's credentials and db, and checks ROLE. */
static int connect_master(sl_sentinel *s, const sl_redis_url *auth, const char *host, int port,
                          int64_t deadline, redisContext **out, int *refused, sluice_error *err)
{
    sl_redis_url m;
    redisContext *c = NULL;
    int rc = sl_redis_url_at(auth, host, port, &m, err);

    if (rc == SLUICE_EINVAL)
        return sl_err(err, SLUICE_ELIMITER, "redis master '%s': a sentinel named a bad address",
                      s->master);
    if (rc)
        return rc;
    rc = sl_redis_open(&m, deadline, &c, refused, err);
    if (rc == 0 && (rc = check_role(&m, c, s->master, err)) != 0)
        redisFree(c);
    sl_redis_url_free(&m);
    if (rc == 0)
        *out = c;
    return rc;
}

/* The master's address as sentinel i tells it, before `deadline`. */
static int ask_sentinel(sl_sentinel *s, size_t i, int64_t deadline, char *host, int *port,
                        sluice_error *err)
{
    const sl_redis_url *u = &s->sentinels[i];
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", s->master};
    redisContext *c = NULL;
    redisReply *r = NULL;
    long p = -1;
    int rc = sl_redis_open(u, deadline, &c, NULL, err);

    if (rc == 0)
        rc = sl_redis_setup_command(u, c, 3, argv, "SENTINEL get-master-addr-by-name", &r, NULL,
                                    err);
    if (c)
        redisFree(c);
    if (rc)
        return rc;
    if (r->type == REDIS_REPLY_NIL || (r->type == REDIS_REPLY_ARRAY && r->elements == 0)) {
        rc = sl_err(err, SLUICE_ELIMITER, "sentinel %s does not know master '%s'", u->where,
                    s->master);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING || r->element[0]->len == 0 ||
               r->element[0]->len >= HOST_MAX ||
               (p = sl_ascii_decimal(r->element[1]->str, r->element[1]->len, 1, 65535)) < 0) {
        rc = sl_err(err, SLUICE_ELIMITER,
                    "sentinel %s gave no address for master '%s' (a malformed reply)", u->where,
                    s->master);
    } else {
        memcpy(host, r->element[0]->str, r->element[0]->len);
        host[r->element[0]->len] = '\0';
        *port = (int)p;
    }
    freeReplyObject(r);
    return rc;
}

/* Asks each sentinel in turn and connects to the first address that is a
 * master.  Sentinel i (of the n - i left) gets that share of the time
 * left for its answer, so one that never answers does not take the time
 * of those after it; the connection to the master it names gets all the
 * time left.  Lock not held. */
static int discover(sl_sentinel *s, const sl_redis_url *auth, int64_t deadline, redisContext **out,
                    char *host, int *port, int *refused, sluice_error *err)
{
    sluice_error last;
    size_t i;
    int rc;

    sl_err_clear(&last);
    for (i = 0; i < s->n && sl_ms_left(deadline) > 0; i++) {
        int64_t now = sl_now_ns();
        int64_t share = now + (deadline - now) / (int64_t)(s->n - i);

        if ((rc = ask_sentinel(s, i, share, host, port, &last)) == SLUICE_ENOMEM)
            break;
        if (rc)
            continue;
        rc = connect_master(s, auth, host, *port, deadline, out, refused, &last);
        if (rc == 0)
            return 0;
        if (rc == SLUICE_ENOMEM || (refused && *refused)) {
            sl_err_copy(err, &last);
            return rc;
        }
    }
    if (last.code == SLUICE_ENOMEM) {
        sl_err_copy(err, &last);
        return SLUICE_ENOMEM;
    }
    return sl_err(err, SLUICE_ELIMITER, "redis master '%s': no usable address from %zu sentinel%s: %s",
                  s->master, s->n, s->n == 1 ? "" : "s",
                  last.code ? last.msg : "the deadline passed before one answered");
}

/* Runs one discovery (this thread set s->discovering) and publishes its
 * outcome to the threads waiting for it. */
static int discover_and_publish(sl_sentinel *s, const sl_redis_url *auth, int64_t deadline,
                                redisContext **out, int *refused, sluice_error *err)
{
    char host[HOST_MAX], before[HOST_MAX + 24] = "";   /* " (was host:port)" */
    sluice_error e;
    int port = 0, changed = 0;
    int rc = discover(s, auth, deadline, out, host, &port, refused, &e);

    pthread_mutex_lock(&s->mu);
    s->discovering = 0;
    s->rounds++;
    if (rc == 0) {
        changed = strcmp(s->host, host) != 0 || s->port != port;
        if (s->host[0])
            snprintf(before, sizeof before, " (was %s:%d)", s->host, s->port);
        memcpy(s->host, host, strlen(host) + 1);
        s->port = port;
        s->known = 1;
        sl_err_clear(&s->why);
    } else {
        s->why = e;
    }
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->mu);
    if (rc == 0 && changed)
        SL_INFO("redis master '%s' is at %s:%d%s", s->master, host, port, before);
    if (rc)
        sl_err_copy(err, &e);
    return rc;
}

int sl_sentinel_open(sl_sentinel *s, const sl_redis_url *auth, int64_t deadline,
                     redisContext **out, uint64_t *gen, int *refused, sluice_error *err)
{
    char host[HOST_MAX];
    int port, rc;
    uint64_t g;

    *out = NULL;
    if (refused)
        *refused = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        struct timespec ts;
        uint64_t round;

        if (s->known) {
            memcpy(host, s->host, sizeof host);
            port = s->port;
            g = atomic_load_explicit(&s->gen, memory_order_relaxed);
            pthread_mutex_unlock(&s->mu);
            rc = connect_master(s, auth, host, port, deadline, out, refused, err);
            if (rc == SLUICE_ELIMITER && !(refused && *refused))
                sl_sentinel_stale(s, g);
            *gen = g;
            return rc;
        }
        if (!s->discovering)
            break;
        /* Another thread is asking: wait for its answer, not past ours. */
        round = s->rounds;
        ts = sl_deadline_timespec(deadline);
        while (s->discovering && s->rounds == round)
            if (pthread_cond_timedwait(&s->done, &s->mu, &ts) == ETIMEDOUT) {
                pthread_mutex_unlock(&s->mu);
                return sl_err(err, SLUICE_ELIMITER,
                              "redis master '%s': the sentinels did not answer before the "
                              "deadline", s->master);
            }
        if (!s->known && s->why.code) {
            /* The discovery waited for failed: its reason is ours. */
            sluice_error why = s->why;
            pthread_mutex_unlock(&s->mu);
            sl_err_copy(err, &why);
            return why.code ? why.code : SLUICE_ELIMITER;
        }
    }
    s->discovering = 1;
    g = atomic_load_explicit(&s->gen, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    *gen = g;
    return discover_and_publish(s, auth, deadline, out, refused, err);
}

/* --- the watcher ---------------------------------------------------------------
 *
 * A master demoted by a failover may keep accepting writes until the
 * sentinels reconfigure it, seconds after they named its successor (and a
 * network partition may never tell its clients).  So once a second a
 * thread of the sentinel's own asks the sentinels, in turn until one
 * answers, where the master is; an answer other than the known address
 * marks it stale.  It never connects to the master and never holds the
 * mutex while it talks. */

static void check_moved(sl_sentinel *s, const char *host, int port, uint64_t gen)
{
    char now_host[HOST_MAX];
    int now_port = 0;
    size_t i;

    for (i = 0; i < s->n && !atomic_load(&s->stopping); i++) {
        sluice_error e;

        if (ask_sentinel(s, i, sl_deadline_in_ms(WATCH_TIMEOUT_MS), now_host, &now_port, &e) != 0)
            continue;
        if (strcmp(now_host, host) != 0 || now_port != port) {
            SL_INFO("redis master '%s': sentinel %s names %s:%d, not %s:%d", s->master,
                    s->sentinels[i].where, now_host, now_port, host, port);
            sl_sentinel_stale(s, gen);
        }
        return;
    }
}

static void *watch_main(void *arg)
{
    sl_sentinel *s = arg;
    char host[HOST_MAX];
    int port;
    uint64_t gen;

    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec ts = sl_deadline_timespec(sl_deadline_in_ms(WATCH_PERIOD_MS));

        while (!s->stopping && pthread_cond_timedwait(&s->wake, &s->mu, &ts) != ETIMEDOUT)
            ;
        if (s->stopping || !s->known)
            continue;   /* nothing known: the next connection asks anyway */
        memcpy(host, s->host, sizeof host);
        port = s->port;
        gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
        pthread_mutex_unlock(&s->mu);
        check_moved(s, host, port, gen);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
