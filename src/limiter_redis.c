/* The Redis backend: pooled hiredis connections that carry the GCRA
 * script (limiter_script.c), and the round trip that the batcher
 * (limiter_batch.c) makes for each batch of decisions.  URLs and opening
 * connections are redis_url.c and redis_conn.c; with Redis Sentinel the
 * master's address comes from redis_sentinel.c, and a connection to an
 * address since marked stale is closed instead of reused. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "limiter.h"
#include "limiter_batch.h"
#include "redis_conn.h"
#include "redis_sentinel.h"
#include "sock.h"
#include "sync.h"

_Static_assert(4 * SL_BATCH_MAX <= SL_REDIS_MAX_REPLY_ELEMENTS,
               "a batch's reply must fit the bound");
#define SOCKET_TIMEOUT_SLACK_MS 2 /* a set socket timeout this close is kept */

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

/* One pooled connection with the scratch space its round trips need (a
 * connection is used by one leader at a time, so the scratch is too). */
typedef struct rconn {
    redisContext *c;
    uint64_t gen;                /* the sentinel's generation it was made under */
    int timeout_ms;              /* the socket timeouts currently set */
    const char **argv;
    size_t *argvlen;
    size_t argcap;
    char numkeys[24];
    sluice_limit_result *res;    /* decoded results, one per decision */
    /* cluster mode: the batch sorted by slot, where each group starts,
     * and which groups still need sending */
    sl_batch_call **order;
    size_t *gstart;
    unsigned char *redo;
    size_t gcap;
} rconn;

struct sl_redis {
    sl_redis_url url;             /* with a sentinel: the master's credentials and db */
    sl_sentinel *sentinel;        /* NULL: url is the server */
    sl_redis_cfg cfg;
    sluice_pool *pool;
    sl_batcher *batcher;

    pthread_mutex_t mu;           /* guards sha */
    char sha[41];                 /* the script's SHA1 once loaded, else "" */

    _Atomic uint64_t round_trips, decisions, errors;
    _Atomic int64_t failed_at;    /* monotonic ns of the last failed connect or broken connection */
};

static int set_timeout(rconn *cn, int64_t deadline)
{
    int ms = sl_ms_left(deadline);

    if (ms <= 0)
        ms = 1;
    /* Keep the timeout set when it is a little shorter than what is left,
     * never when it is longer: the deadline is a bound. */
    if (cn->timeout_ms && cn->timeout_ms <= ms && ms - cn->timeout_ms <= SOCKET_TIMEOUT_SLACK_MS)
        return 0;
    if (redisSetTimeout(cn->c, sl_redis_tv_until(deadline)) != REDIS_OK)
        return -1;
    cn->timeout_ms = ms;
    return 0;
}

/* 0 when cn goes to an address the sentinel has since marked stale. */
static int conn_current(sl_redis *rd, const rconn *cn)
{
    return !rd->sentinel || cn->gen == sl_sentinel_gen(rd->sentinel);
}

/* The server cn goes to is no longer the master (or no longer there). */
static void conn_stale(sl_redis *rd, const rconn *cn)
{
    if (rd->sentinel)
        sl_sentinel_stale(rd->sentinel, cn->gen);
}

static void rconn_free(rconn *cn)
{
    if (!cn)
        return;
    if (cn->c)
        redisFree(cn->c);
    sl_free(cn->argv);
    sl_free(cn->argvlen);
    sl_free(cn->res);
    sl_free(cn->order);
    sl_free(cn->gstart);
    sl_free(cn->redo);
    sl_free(cn);
}

static int load_script(sl_redis *rd, rconn *cn, int *refused, sluice_error *err)
{
    const char *argv[] = {"SCRIPT", "LOAD", sl_redis_script};
    redisReply *r = NULL;
    int rc = sl_redis_setup_command(&rd->url, cn->c, 3, argv, "SCRIPT LOAD", &r, refused,
                                    err);

    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        freeReplyObject(r);
        return sl_err(err, SLUICE_ELIMITER, "redis %s: SCRIPT LOAD gave no SHA1", rd->url.where);
    }
    pthread_mutex_lock(&rd->mu);
    memcpy(rd->sha, r->str, 40);
    rd->sha[40] = '\0';
    pthread_mutex_unlock(&rd->mu);
    freeReplyObject(r);
    return 0;
}

/* Connects, authenticates, selects the db and, the first time, loads the
 * script, all before `deadline`.  *refused as for sl_redis_open. */
static int connect_redis(sl_redis *rd, int64_t deadline, rconn **out, int *refused,
                         sluice_error *err)
{
    rconn *cn = sl_calloc(1, sizeof *cn);
    int rc, have_sha;

    if (!cn)
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory", rd->url.where);
    rc = rd->sentinel
             ? sl_sentinel_open(rd->sentinel, &rd->url, deadline, &cn->c, &cn->gen, refused, err)
             : sl_redis_open(&rd->url, deadline, &cn->c, refused, err);
    if (rc == 0 && set_timeout(cn, deadline) != 0)
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts", rd->url.where);
    pthread_mutex_lock(&rd->mu);
    have_sha = rd->sha[0] != '\0';
    pthread_mutex_unlock(&rd->mu);
    if (rc == 0 && !have_sha)
        rc = load_script(rd, cn, refused, err);
    if (rc) {
        rconn_free(cn);
        return rc;
    }
    *out = cn;
    return 0;
}

/* The pool's create, given what is left of the caller's deadline.  A
 * refusal by Redis (AUTH, SELECT or SCRIPT LOAD answered with an error)
 * comes back as SLUICE_EINVAL: the settings are wrong and no retry helps,
 * unlike a network failure (SLUICE_ELIMITER).  get_conn tells them apart. */
static int pool_create(void *ctx, int timeout_ms, void **res, sluice_error *err)
{
    sl_redis *rd = ctx;
    int64_t deadline = sl_deadline_in_ms(timeout_ms < 0 ? rd->cfg.timeout_ms : timeout_ms);
    rconn *cn = NULL;
    int refused = 0;
    int rc = connect_redis(rd, deadline, &cn, &refused, err);

    *res = cn;
    if (rc == SLUICE_ELIMITER && refused)
        return SLUICE_EINVAL;
    return rc;
}

static void pool_destroy(void *ctx, void *res)
{
    (void)ctx;
    rconn_free(res);
}

/* The same test as for HTTP connections (sl_sock_idle_alive): readable
 * means the server closed it or sent something unasked.  A connection to
 * a stale master address is dropped here, so the first checkout after a
 * rediscovery closes every idle one (the pool calls this outside its
 * lock). */
static int pool_alive(void *ctx, void *res)
{
    rconn *cn = res;

    return conn_current(ctx, cn) && sl_sock_idle_alive(cn->c->fd);
}

static const sluice_pool_ops pool_ops = {
    .create_timed = pool_create, .destroy = pool_destroy, .alive = pool_alive};

/* Checks a connection out before `deadline`; err says why not. */
static int get_conn(sl_redis *rd, int64_t deadline, rconn **out, int *refused, sluice_error *err)
{
    sluice_error e;
    void *res = NULL;
    int rc, ms = sl_ms_left(deadline);

    rc = sluice_pool_get_err(rd->pool, ms > 0 ? ms : 1, &res, &e);
    if (refused)
        *refused = rc == SLUICE_EINVAL;
    if (rc == 0) {
        *out = res;
        return 0;
    }
    if (e.code == SLUICE_ELIMITER || e.code == SLUICE_ENOMEM)
        sl_err_copy(err, &e);
    else if (rc == SLUICE_EPOOLTIMEOUT)
        sl_err(err, SLUICE_ELIMITER, "redis %s: no connection free before the deadline",
               rd->url.where);
    else if (rc == SLUICE_ENOMEM)
        sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory checking out a connection",
               rd->url.where);
    else
        sl_err(err, SLUICE_ELIMITER, "redis %s: cannot connect (%s)", rd->url.where,
               sluice_strerror(rc));
    atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
    if (e.code == SLUICE_ELIMITER && rc != SLUICE_EINVAL)   /* a connect failed, not a wait */
        atomic_store_explicit(&rd->failed_at, sl_now_ns(), memory_order_relaxed);
    return rc == SLUICE_ENOMEM ? rc : SLUICE_ELIMITER;
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */
/* ------------------------------------------------------------------------ */

/* Makes room for a batch of n: argv, lengths and results. */
static int reserve_scratch(rconn *cn, size_t n)
{
    size_t argc = 3 + n * (1 + SL_REDIS_ARGS_PER_DECISION), cap;
    const char **argv;
    size_t *lens;
    sluice_limit_result *res;

    if (argc <= cn->argcap)
        return 0;
    cap = argc * 2;
    argv = sl_realloc(cn->argv, cap * sizeof *argv);
    if (!argv)
        return SLUICE_ENOMEM;
    cn->argv = argv;
    lens = sl_realloc(cn->argvlen, cap * sizeof *lens);
    if (!lens)
        return SLUICE_ENOMEM;
    cn->argvlen = lens;
    res = sl_realloc(cn->res, cap / (1 + SL_REDIS_ARGS_PER_DECISION) * sizeof *res);
    if (!res)
        return SLUICE_ENOMEM;
    cn->res = res;
    cn->argcap = cap;
    return 0;
}

static size_t fmt(char *buf, const char *format, ...) __attribute__((format(printf, 2, 3)));

static size_t fmt(char *buf, const char *format, ...)
{
    va_list ap;
    int n;

    va_start(ap, format);
    n = vsnprintf(buf, SL_BATCH_NUM_MAX, format, ap);
    va_end(ap);
    return n < 0 || n >= SL_BATCH_NUM_MAX ? 0 : (size_t)n;   /* cannot fail for these formats */
}

/* The caller's share of building the command: its numbers as text. */
static void format_args(sl_batch_call *w)
{
    const sl_lim_req *rq = w->rq;

    w->arglen[0] = fmt(w->args[0], "%.17g", sl_gcra_interval_us(&rq->lim));
    w->arglen[1] = fmt(w->args[1], "%d", rq->lim.burst);
    w->arglen[2] = fmt(w->args[2], "%d", rq->op == SL_LIM_PEEK ? 1 : rq->arg);
    w->arglen[3] = fmt(w->args[3], "%lld", (long long)rq->now_us);
}

/* EVALSHA sha n key1..keyn, then the fields of each decision. */
static int build_evalsha(rconn *cn, const char *sha, sl_batch_call *const *batch, size_t n)
{
    static const char *const ops[] = {"c", "p", "d"};
    const char **av;
    size_t *al, a = 0, i, j;

    if (reserve_scratch(cn, n))
        return SLUICE_ENOMEM;
    av = cn->argv;
    al = cn->argvlen;
    av[a] = "EVALSHA", al[a++] = 7;
    av[a] = sha, al[a++] = 40;
    av[a] = cn->numkeys, al[a++] = (size_t)snprintf(cn->numkeys, sizeof cn->numkeys, "%zu", n);
    for (i = 0; i < n; i++)
        av[a] = batch[i]->rq->key, al[a++] = batch[i]->rq->key_len;
    for (i = 0; i < n; i++) {
        av[a] = ops[batch[i]->rq->op], al[a++] = 1;
        for (j = 0; j < SL_REDIS_ARGS_PER_DECISION - 1; j++)
            av[a] = batch[i]->args[j], al[a++] = batch[i]->arglen[j];
    }
    return (int)a;
}

/* `errnum` is errno right after the failed hiredis call: on a socket
 * timeout (SO_RCVTIMEO / SO_SNDTIMEO) hiredis sets REDIS_ERR_IO and leaves
 * errno EAGAIN; its errstr is strerror's text, which the locale translates. */
static int io_error(sl_redis *rd, rconn *cn, int errnum, sluice_error *err)
{
    const redisContext *c = cn->c;

    if (c->err == REDIS_ERR_EOF) {
        conn_stale(rd, cn);   /* a failover closes its clients' connections */
        return sl_err(err, SLUICE_ELIMITER, "redis %s: connection closed by the server",
                      rd->url.where);
    }
    if (c->err == REDIS_ERR_IO && (errnum == EAGAIN || errnum == EWOULDBLOCK))
        return sl_err(err, SLUICE_ELIMITER, "redis %s: no reply within %d ms", rd->url.where,
                      cn->timeout_ms);
    return sl_err(err, SLUICE_ELIMITER, "redis %s: %s", rd->url.where, c->errstr);
}

/* A demoted master (a failover) refuses the script's writes. */
static int is_readonly(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str && r->len >= 8 &&
           memcmp(r->str, "READONLY", 8) == 0;
}

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str && r->len >= 8 &&
           memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Sends the batch's EVALSHA; its reply is read by recv_evalsha. */
static int send_evalsha(sl_redis *rd, rconn *cn, sl_batch_call *const *batch, size_t n, int64_t deadline,
                        sluice_error *err)
{
    char sha[41];
    int argc, rc;

    pthread_mutex_lock(&rd->mu);
    memcpy(sha, rd->sha, sizeof sha);
    pthread_mutex_unlock(&rd->mu);
    if (set_timeout(cn, deadline) != 0)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts",
                      rd->url.where);
    if (!sha[0]) {
        if ((rc = load_script(rd, cn, NULL, err)))
            return rc;
        return send_evalsha(rd, cn, batch, n, deadline, err);
    }
    argc = build_evalsha(cn, sha, batch, n);
    if (argc < 0 || redisAppendCommandArgv(cn->c, argc, cn->argv, cn->argvlen) != REDIS_OK)
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory for a batch of %zu",
                      rd->url.where, n);
    atomic_fetch_add_explicit(&rd->round_trips, 1, memory_order_relaxed);
    if (sl_redis_flush(cn->c) != 0)
        return io_error(rd, cn, errno, err);
    return 0;
}

/* Reads the reply to the EVALSHA just sent into cn->res.  After NOSCRIPT
 * (a SCRIPT FLUSH, a restarted or failed-over server) loads the script and
 * sends once more. */
static int recv_evalsha(sl_redis *rd, rconn *cn, sl_batch_call *const *batch, size_t n, int64_t deadline,
                        sluice_error *err)
{
    int attempt, rc;

    for (attempt = 0; attempt < 2; attempt++) {
        redisReply *reply = NULL;

        if (redisGetReply(cn->c, (void **)&reply) != REDIS_OK || !reply)
            return io_error(rd, cn, errno, err);
        if (attempt == 0 && is_noscript(reply)) {
            freeReplyObject(reply);
            if ((rc = load_script(rd, cn, NULL, err)) ||
                (rc = send_evalsha(rd, cn, batch, n, deadline, err)))
                return rc;
            continue;
        }
        if (is_readonly(reply))
            conn_stale(rd, cn);
        rc = sl_redis_decode_reply(reply, n, cn->res, rd->url.where, err);
        freeReplyObject(reply);
        return rc;
    }
    return sl_err(err, SLUICE_ELIMITER, "redis %s: the script is missing after SCRIPT LOAD",
                  rd->url.where);
}

/* ------------------------------------------------------------------------ */
/* Cluster mode: one EVALSHA per slot group, pipelined                      */
/* ------------------------------------------------------------------------ */

#define PENDING 2   /* a call's code while its group has no answer yet */

static int reserve_groups(rconn *cn, size_t n)
{
    sl_batch_call **order;
    size_t *gstart;
    unsigned char *redo;

    if (n <= cn->gcap)
        return 0;
    if (!(order = sl_realloc(cn->order, n * sizeof *order)))
        return SLUICE_ENOMEM;
    cn->order = order;
    if (!(gstart = sl_realloc(cn->gstart, (n + 1) * sizeof *gstart)))
        return SLUICE_ENOMEM;
    cn->gstart = gstart;
    if (!(redo = sl_realloc(cn->redo, n)))
        return SLUICE_ENOMEM;
    cn->redo = redo;
    cn->gcap = n;
    return 0;
}

static int alone(const sl_batch_call *c)
{
    return c->asking || c->single;
}

/* Sorts the batch by slot (stably: a key's decisions keep their order) and
 * cuts it into groups one EVALSHA may carry.  Returns the group count. */
static size_t group_calls(rconn *cn, sl_batch_call *const *calls, size_t n)
{
    size_t i, j, ng = 0;

    for (i = 0; i < n; i++) {
        sl_batch_call *c = calls[i];

        for (j = i; j > 0 && cn->order[j - 1]->slot > c->slot; j--)
            cn->order[j] = cn->order[j - 1];
        cn->order[j] = c;
    }
    for (i = 0; i < n; i++)
        if (i == 0 || cn->order[i]->slot != cn->order[i - 1]->slot || alone(cn->order[i]) ||
            alone(cn->order[i - 1]))
            cn->gstart[ng++] = i;
    cn->gstart[ng] = n;
    return ng;
}

static int append_group(sl_redis *rd, rconn *cn, const char *sha, size_t g)
{
    sl_batch_call *const *gc = cn->order + cn->gstart[g];
    size_t cnt = cn->gstart[g + 1] - cn->gstart[g];
    int argc;

    if (gc[0]->asking && redisAppendCommand(cn->c, "ASKING") != REDIS_OK)
        return SLUICE_ENOMEM;
    argc = build_evalsha(cn, sha, gc, cnt);
    if (argc < 0 || redisAppendCommandArgv(cn->c, argc, cn->argv, cn->argvlen) != REDIS_OK)
        return SLUICE_ENOMEM;
    return 0;
}

/* The answers Redis Cluster gives instead of running a command. */
static int is_cluster_error(const redisReply *r)
{
    static const char *const kinds[] = {"MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"};
    size_t i, k;

    if (r->type != REDIS_REPLY_ERROR || !r->str)
        return 0;
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        k = strlen(kinds[i]);
        if ((size_t)r->len >= k && memcmp(r->str, kinds[i], k) == 0)
            return 1;
    }
    return 0;
}

/* Reads group g's answer (after ASKING's) and settles its calls, or sets
 * *noscript to send the group again.  Nonzero only for an I/O error. */
static int recv_group(sl_redis *rd, rconn *cn, size_t g, unsigned char *noscript,
                      sluice_error *err)
{
    sl_batch_call *const *gc = cn->order + cn->gstart[g];
    size_t cnt = cn->gstart[g + 1] - cn->gstart[g], i;
    redisReply *reply = NULL;
    sluice_error ge;
    int rc;

    if (gc[0]->asking) {
        if (redisGetReply(cn->c, (void **)&reply) != REDIS_OK || !reply)
            return io_error(rd, cn, errno, err);
        freeReplyObject(reply);
        reply = NULL;
    }
    if (redisGetReply(cn->c, (void **)&reply) != REDIS_OK || !reply)
        return io_error(rd, cn, errno, err);
    if (is_noscript(reply)) {
        *noscript = 1;
        freeReplyObject(reply);
        return 0;
    }
    sl_err_clear(&ge);
    if (is_cluster_error(reply)) {
        ge.code = rc = SL_LIM_REDIRECT;
        sl_redis_reply_text(reply, ge.msg, sizeof ge.msg);
    } else {
        rc = sl_redis_decode_reply(reply, cnt, cn->res + cn->gstart[g], rd->url.where, &ge);
    }
    freeReplyObject(reply);
    for (i = 0; i < cnt; i++) {
        gc[i]->code = rc;
        if (rc)
            sl_err_copy(&gc[i]->e, &ge);
        else
            gc[i]->r = cn->res[cn->gstart[g] + i];
    }
    return 0;
}

static int current_sha(sl_redis *rd, rconn *cn, char sha[41], sluice_error *err)
{
    int rc;

    pthread_mutex_lock(&rd->mu);
    memcpy(sha, rd->sha, 41);
    pthread_mutex_unlock(&rd->mu);
    if (sha[0])
        return 0;
    if ((rc = load_script(rd, cn, NULL, err)))
        return rc;
    return current_sha(rd, cn, sha, err);
}

/* Sends every group's EVALSHA in one write and reads the answers; groups
 * answered NOSCRIPT go again, once, after SCRIPT LOAD.  Nonzero when the
 * connection failed (calls still PENDING then have no answer). */
static int cluster_exchange(sl_redis *rd, rconn *cn, sl_batch_call *const *calls, size_t n,
                            int64_t deadline, sluice_error *err)
{
    char sha[41];
    size_t g, ng;
    int pass, rc, again = 1;

    if (reserve_scratch(cn, n) || reserve_groups(cn, n))
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory for a batch of %zu",
                      rd->url.where, n);
    ng = group_calls(cn, calls, n);
    memset(cn->redo, 1, ng);
    if (set_timeout(cn, deadline) != 0)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts",
                      rd->url.where);
    for (pass = 0; pass < 2 && again; pass++) {
        if ((rc = pass ? load_script(rd, cn, NULL, err) : 0) ||
            (rc = current_sha(rd, cn, sha, err)))
            return rc;
        for (g = 0; g < ng; g++)
            if (cn->redo[g] && append_group(rd, cn, sha, g))
                return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory for a batch of %zu",
                              rd->url.where, n);
        atomic_fetch_add_explicit(&rd->round_trips, 1, memory_order_relaxed);
        if (sl_redis_flush(cn->c) != 0)
            return io_error(rd, cn, errno, err);
        again = 0;
        for (g = 0; g < ng; g++) {
            if (!cn->redo[g])
                continue;
            cn->redo[g] = 0;
            if ((rc = recv_group(rd, cn, g, &cn->redo[g], err)))
                return rc;
            again |= cn->redo[g];
        }
    }
    if (again)
        sl_err(err, SLUICE_ELIMITER, "redis %s: the script is missing after SCRIPT LOAD",
               rd->url.where);
    return 0;
}

/* sl_batch_ops.round_trip in cluster mode.  Calls a broken connection
 * left without an answer fail with it: never sent again, as the script
 * may have run. */
static int round_trip_cluster(sl_redis *rd, rconn **conn, sl_batch_call *const *calls, size_t n,
                              int64_t deadline, sluice_error *e)
{
    rconn *cn = *conn;
    int rc = 0, broken;
    size_t i;

    for (i = 0; i < n; i++)
        calls[i]->code = PENDING;
    sl_err_clear(e);
    if (!cn && (rc = get_conn(rd, deadline, &cn, NULL, e)) == 0)
        *conn = cn;
    if (rc == 0) {
        atomic_fetch_add_explicit(&rd->decisions, n, memory_order_relaxed);
        rc = cluster_exchange(rd, cn, calls, n, deadline, e);
    }
    for (i = 0; i < n; i++) {
        if (calls[i]->code != PENDING)
            continue;
        calls[i]->code = rc ? rc : (e->code ? e->code : SLUICE_ELIMITER);
        if (!e->code)
            sl_err(e, SLUICE_ELIMITER, "redis %s: no answer for a decision", rd->url.where);
        sl_err_copy(&calls[i]->e, e);
    }
    if (rc == SLUICE_ELIMITER)
        atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
    broken = rc == SLUICE_ELIMITER && (!cn || cn->c->err != 0);
    if (broken && cn)
        atomic_store_explicit(&rd->failed_at, sl_now_ns(), memory_order_relaxed);
    /* Out of memory half-way through a pipeline leaves commands in the
     * output buffer: that connection is not used again either. */
    if ((broken || rc == SLUICE_ENOMEM) && *conn) {
        sluice_pool_put(rd->pool, cn, 0);
        *conn = NULL;
    }
    return broken ? rc : 0;
}

/* ------------------------------------------------------------------------ */
/* The round trip the batcher makes                                         */
/* ------------------------------------------------------------------------ */

/* sl_batch_ops.round_trip: one EVALSHA for the batch on *conn, checking a
 * connection out first when the leader holds none. */
static int round_trip(void *ctx, void **conn, sl_batch_call *const *calls, size_t n,
                      int64_t deadline, sluice_error *e)
{
    sl_redis *rd = ctx;
    rconn *cn = *conn;
    int rc = 0, broken;
    size_t i;

    if (rd->cfg.cluster)
        return round_trip_cluster(rd, (rconn **)conn, calls, n, deadline, e);
    if (cn && !conn_current(rd, cn)) {
        /* Made before the master's address went stale. */
        sluice_pool_put(rd->pool, cn, 0);
        *conn = cn = NULL;
    }
    if (!cn && (rc = get_conn(rd, deadline, &cn, NULL, e)) == 0)
        *conn = cn;
    if (rc == 0) {
        atomic_fetch_add_explicit(&rd->decisions, n, memory_order_relaxed);
        rc = send_evalsha(rd, cn, calls, n, deadline, e);
        if (rc == 0)
            rc = recv_evalsha(rd, cn, calls, n, deadline, e);
        if (rc == SLUICE_ELIMITER)
            atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
    }
    for (i = 0; i < n; i++) {
        calls[i]->code = rc;
        if (rc)
            sl_err_copy(&calls[i]->e, e);
        else
            calls[i]->r = cn->res[i];
    }
    broken = rc == SLUICE_ELIMITER && (!cn || cn->c->err != 0 || !conn_current(rd, cn));
    if (broken && cn) {
        sluice_pool_put(rd->pool, cn, 0);
        *conn = NULL;
    }
    return broken ? rc : 0;
}

static void release(void *ctx, void *conn)
{
    sl_redis *rd = ctx;

    sluice_pool_put(rd->pool, conn, conn_current(rd, conn));
}

static const sl_batch_ops batch_ops = {.round_trip = round_trip, .release = release};

int sl_redis_decide(sl_redis *rd, const sl_lim_req *rq, sluice_limit_result *r,
                    sluice_error *err)
{
    sl_batch_call call;

    call.rq = rq;
    call.slot = 0;
    call.asking = call.single = 0;
    format_args(&call);
    sl_batcher_decide(rd->batcher, &call);
    if (call.code)
        sl_err_copy(err, &call.e);
    else
        *r = call.r;
    return call.code;
}

int sl_redis_decide_routed(sl_redis *rd, const sl_lim_req *rq, const sl_redis_route *rt,
                           sluice_limit_result *r, sluice_error *err)
{
    sl_batch_call call;

    call.rq = rq;
    call.slot = rt->slot;
    call.asking = rt->asking != 0;
    call.single = rt->single != 0;
    format_args(&call);
    sl_batcher_decide_by(rd->batcher, &call, rt->deadline);
    if (call.code)
        sl_err_copy(err, &call.e);
    else
        *r = call.r;
    return call.code;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

sl_redis *sl_redis_new(sl_redis_url *url, sl_sentinel *sentinel, const sl_redis_cfg *cfg,
                       int *reachable, sluice_error *err)
{
    sl_redis *rd = sl_calloc(1, sizeof *rd);
    sluice_pool_opts po = {0};
    sl_batch_cfg bc;
    rconn *cn = NULL;
    int refused = 0, rc;

    *reachable = 0;
    if (!rd) {
        sl_redis_url_free(url);
        sl_sentinel_free(sentinel);
        sl_err(err, SLUICE_ENOMEM, "redis: out of memory");
        return NULL;
    }
    rd->sentinel = sentinel;
    rd->url = *url;
    memset(url, 0, sizeof *url);
    rd->cfg = *cfg;
    po.max_size = cfg->pool_size;
    po.max_idle = cfg->pool_size;
    bc.timeout_ms = cfg->timeout_ms;
    bc.max_inflight = cfg->max_inflight;
    bc.where = rd->url.where;
    if (sl_mutex_init(&rd->mu, "redis", err) ||
        !(rd->pool = sluice_pool_new(&po, &pool_ops, rd, err)) ||
        !(rd->batcher = sl_batcher_new(&bc, &batch_ops, rd, err))) {
        sl_redis_free(rd);
        return NULL;
    }
    if (cfg->lazy) {
        *reachable = 1;
        return rd;
    }
    rc = get_conn(rd, sl_deadline_in_ms(cfg->create_timeout_ms), &cn, &refused, err);
    if (rc == 0) {
        sluice_pool_put(rd->pool, cn, 1);
        *reachable = 1;
        sl_err_clear(err);
    } else if (refused || rc == SLUICE_ENOMEM) {
        sl_redis_free(rd);
        return NULL;
    }
    return rd;
}

void sl_redis_free(sl_redis *rd)
{
    if (!rd)
        return;
    sluice_pool_free(rd->pool);
    sl_batcher_free(rd->batcher);
    sl_sentinel_free(rd->sentinel);
    pthread_mutex_destroy(&rd->mu);
    sl_redis_url_free(&rd->url);
    sl_free(rd);
}

uint64_t sl_redis_round_trips(sl_redis *rd)
{
    return atomic_load_explicit(&rd->round_trips, memory_order_relaxed);
}

uint64_t sl_redis_decisions(sl_redis *rd)
{
    return atomic_load_explicit(&rd->decisions, memory_order_relaxed);
}

uint64_t sl_redis_errors(sl_redis *rd)
{
    return atomic_load_explicit(&rd->errors, memory_order_relaxed) +
           sl_batcher_queue_timeouts(rd->batcher);
}

uint64_t sl_redis_rediscoveries(sl_redis *rd)
{
    return rd->sentinel ? sl_sentinel_rediscoveries(rd->sentinel) : 0;
}

int64_t sl_redis_failed_at(sl_redis *rd)
{
    return atomic_load_explicit(&rd->failed_at, memory_order_relaxed);
}

const char *sl_redis_where(const sl_redis *rd)
{
    return rd->url.where;
}
