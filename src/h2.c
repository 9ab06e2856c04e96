/* The origin table: which protocol each origin speaks, its HTTP/2
 * connections, the stream slots leased on them and the callers waiting
 * for one (see h2.h). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "h2_conn.h"
#include "log.h"
#include "sync.h"
#include "waitq.h"

/* Origins that hold nothing (no connection, no waiter) kept beyond those
 * that do; older ones are forgotten and probed again when next used. */
#define SPARE_ORIGINS 64

enum { PROTO_UNKNOWN, PROTO_H1, PROTO_H2 };

/* How a waiter was finished. */
enum { W_SLOT = 1, W_H1, W_AGAIN, W_FAILED, W_CLOSED };

struct sl_h2_origin {
    sl_h2_origin *next;
    char *key;
    int proto;
    int dialing;                /* a dial is under way (one at a time) */
    sl_h2_conn *conns;
    int live;                   /* connections not yet finished */
    sl_waitq wq;
    uint64_t used;              /* the table's clock when last acquired */
};

typedef struct waiter {
    sl_waiter sw;
    sl_h2_conn *conn;           /* W_SLOT: the slot's connection */
    sluice_error why;           /* W_FAILED: the dial's error */
} waiter;

struct sl_h2_pool {
    pthread_mutex_t lock;
    sl_h2_pool *fork_prev, *fork_next;   /* every table (forks_lock) */
    unsigned forks;                      /* fork_count when its connections were made */
    sl_h2_cfg cfg;
    sl_conn_env *env;
    sl_h2_origin *origins;
    int norigins;
    uint64_t clock;
    int closed;
    sl_h2_counts counts;
};

/* ---- fork() -----------------------------------------------------------------
 *
 * The I/O threads stay in the parent.  Every table is on a process-wide
 * list; a pthread_atfork prepare handler takes each table's lock, so no
 * I/O thread holds one across the fork, and the child counts the fork.  A
 * table that finds itself in a child forgets its connections without a
 * word to the server (the parent still uses them) and dials its own. */

static pthread_mutex_t forks_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t forks_once = PTHREAD_ONCE_INIT;
static sl_h2_pool *forks_head;
static unsigned fork_count;         /* atomic: forks this process descends from */

static void fork_prepare(void)
{
    sl_h2_pool *p;

    pthread_mutex_lock(&forks_lock);
    for (p = forks_head; p; p = p->fork_next)
        pthread_mutex_lock(&p->lock);
}

static void fork_parent(void)
{
    sl_h2_pool *p;

    for (p = forks_head; p; p = p->fork_next)
        pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&forks_lock);
}

static void fork_child(void)
{
    __atomic_add_fetch(&fork_count, 1, __ATOMIC_RELAXED);
    fork_parent();
}

static void watch_forks(void)
{
    if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0)
        SL_WARN("HTTP/2: cannot watch fork(); do not use a factory in a child");
}

/* Lock held: in a fork child, the parent's connections and waiters are
 * not ours. */
static void settle_fork(sl_h2_pool *p)
{
    unsigned now = __atomic_load_n(&fork_count, __ATOMIC_RELAXED);
    sl_h2_origin *o;
    sl_h2_conn *c, *next;

    if (p->forks == now)
        return;
    p->forks = now;
    for (o = p->origins; o; o = o->next) {
        for (c = o->conns; c; c = next) {
            next = c->next;
            sl_h2_conn_forget(c);
        }
        o->conns = NULL;
        o->live = o->dialing = 0;
        sl_waitq_init(&o->wq, 0);
    }
    memset(&p->counts, 0, sizeof p->counts);
}

sl_h2_pool *sl_h2_pool_new(const sl_h2_cfg *cfg, sl_conn_env *env, sluice_error *err)
{
    sl_h2_pool *p = sl_calloc(1, sizeof *p);

    if (!p) {
        sl_err(err, SLUICE_ENOMEM, "out of memory for the HTTP/2 table");
        return NULL;
    }
    p->cfg = *cfg;
    p->env = env;
    if (sl_mutex_init(&p->lock, "HTTP/2 origin table", err)) {
        sl_free(p);
        return NULL;
    }
    pthread_once(&forks_once, watch_forks);
    pthread_mutex_lock(&forks_lock);
    p->forks = __atomic_load_n(&fork_count, __ATOMIC_RELAXED);
    p->fork_next = forks_head;
    if (forks_head)
        forks_head->fork_prev = p;
    forks_head = p;
    pthread_mutex_unlock(&forks_lock);
    return p;
}

/* ---- slots ------------------------------------------------------------------ */

static int usable(const sl_h2_conn *c)
{
    return !atomic_load(&c->draining) && c->reserved < atomic_load(&c->limit);
}

/* The first connection with a free slot, taken; NULL when none has one. */
static sl_h2_conn *take_slot(sl_h2_origin *o)
{
    sl_h2_conn *c;

    for (c = o->conns; c; c = c->next)
        if (usable(c)) {
            c->reserved++;
            return c;
        }
    return NULL;
}

/* Another connection may be dialled: none is, and every open one is full. */
static int may_dial(const sl_h2_pool *p, const sl_h2_origin *o)
{
    return !o->dialing && (o->proto == PROTO_UNKNOWN || p->cfg.max_per_origin <= 0 ||
                           o->live < p->cfg.max_per_origin);
}

/* Lock held: hands what can be handed to the waiters, oldest first. */
static void dispatch(sl_h2_pool *p, sl_h2_origin *o)
{
    waiter *w;

    while ((w = (waiter *)o->wq.head) != NULL) {
        if (p->closed) {
            sl_waitq_finish(&o->wq, &w->sw, W_CLOSED);
        } else if (o->proto == PROTO_H1) {
            sl_waitq_finish(&o->wq, &w->sw, W_H1);
        } else if ((w->conn = take_slot(o)) != NULL) {
            sl_waitq_finish(&o->wq, &w->sw, W_SLOT);
        } else if (may_dial(p, o)) {
            sl_waitq_finish(&o->wq, &w->sw, W_AGAIN);   /* it dials */
            return;
        } else {
            return;
        }
    }
}

/* Lock held: unlinks connections whose I/O thread has exited and that
 * nobody leases; the caller joins them (sl_h2_conn_free) after unlocking.
 * (One whose thread is still telling the table it finished stays: its
 * origin must outlive that call.) */
static sl_h2_conn *unlink_finished(sl_h2_origin *o, sl_h2_conn *done)
{
    sl_h2_conn **pp = &o->conns, *c;

    while ((c = *pp) != NULL) {
        if (atomic_load(&c->exited) && c->reserved == 0 && !c->reaped) {
            *pp = c->next;
            c->reaped = 1;
            c->next = done;
            done = c;
        } else {
            pp = &c->next;
        }
    }
    return done;
}

static void free_list(sl_h2_conn *c)
{
    sl_h2_conn *next;

    for (; c; c = next) {
        next = c->next;
        sl_h2_conn_free(c);
    }
}

void sl_h2_pool_notify(sl_h2_pool *p, sl_h2_origin *o)
{
    sl_h2_conn *c;

    pthread_mutex_lock(&p->lock);
    o->live = 0;
    for (c = o->conns; c; c = c->next)
        o->live += !atomic_load(&c->finished);
    dispatch(p, o);
    pthread_mutex_unlock(&p->lock);
}

/* ---- origins ------------------------------------------------------------------ */

static int holds_nothing(const sl_h2_origin *o)
{
    return !o->conns && !o->dialing && !o->wq.head;
}

/* Lock held: forgets the least recently used origin that holds nothing
 * once there are more than SPARE_ORIGINS such. */
static void forget_spare(sl_h2_pool *p)
{
    sl_h2_origin **pp, **victim = NULL, *o;
    int spare = 0;

    for (pp = &p->origins; *pp; pp = &(*pp)->next)
        if (holds_nothing(*pp)) {
            spare++;
            if (!victim || (*pp)->used < (*victim)->used)
                victim = pp;
        }
    if (spare <= SPARE_ORIGINS || !victim)
        return;
    o = *victim;
    *victim = o->next;
    p->norigins--;
    sl_free(o->key);
    sl_free(o);
}

static sl_h2_origin *origin(sl_h2_pool *p, const char *key, sluice_error *err)
{
    sl_h2_origin *o;

    for (o = p->origins; o; o = o->next)
        if (strcmp(o->key, key) == 0)
            return o;
    if (!(o = sl_calloc(1, sizeof *o)) || !(o->key = sl_strdup(key))) {
        sl_free(o);
        sl_err(err, SLUICE_ENOMEM, "out of memory for an HTTP/2 origin");
        return NULL;
    }
    sl_waitq_init(&o->wq, 0);      /* strict arrival order */
    o->used = ++p->clock;
    o->next = p->origins;
    p->origins = o;
    p->norigins++;
    forget_spare(p);
    return o;
}

/* ---- dialling ------------------------------------------------------------------- */

/* Connects (without any lock) and says which protocol the origin speaks. */
static int dial(sl_h2_pool *p, const sl_conn_target *t, int prior, int64_t deadline,
                sl_conn **out, sluice_error *err)
{
    sl_conn_env *e = p->env;
    sl_conn_target dt = *t;
    int ms = t->connect_timeout_ms > 0 ? t->connect_timeout_ms : e->opts->connect_timeout_ms;
    sl_tls_ctx *tls = NULL;
    int rc;

    dt.offer_h2 = t->tls;
    dt.adopt = NULL;
    if (t->tls && !(tls = sl_conn_env_tls(e, err)))
        return err ? err->code : SLUICE_ETLS;
    rc = sl_conn_open(&dt, e->dns, tls, &e->sock, sl_deadline_min(deadline, sl_deadline_in_ms(ms)),
                      out, err);
    if (rc == 0 && prior && !t->tls)
        (*out)->h2 = 1;
    if (rc == 0)
        SL_DEBUG("%s: %s", t->origin, (*out)->h2 ? (t->tls ? "ALPN chose h2" : "h2c by prior knowledge")
                                                 : "ALPN chose http/1.1");
    return rc;
}

/* Lock held: `c` serves the origin, which speaks h2. */
static void link_conn(sl_h2_origin *o, sl_h2_conn *c)
{
    o->proto = PROTO_H2;
    c->next = o->conns;
    o->conns = c;
    o->live++;
}

/* Lock held on entry and on return: dials for the origin, and when it
 * speaks h2 leases the first slot of the new connection to the caller. */
static int dial_locked(sl_h2_pool *p, sl_h2_origin *o, const sl_conn_target *t, int prior,
                       int64_t deadline, sl_h2_lease *l, sluice_error *err)
{
    sl_conn *net = NULL;
    sl_h2_conn *c = NULL;
    waiter *w;
    int rc;

    o->dialing = 1;
    pthread_mutex_unlock(&p->lock);
    rc = dial(p, t, prior, deadline, &net, err);
    if (rc == 0 && net->h2 && !(c = sl_h2_conn_start(p, o, net, &p->cfg, &p->counts, err)))
        rc = err ? err->code : SLUICE_ENOMEM;
    pthread_mutex_lock(&p->lock);
    o->dialing = 0;
    if (rc) {
        /* The callers that waited for this dial share its outcome. */
        while ((w = (waiter *)o->wq.head) != NULL) {
            if (err)
                w->why = *err;
            else
                sl_err(&w->why, rc, "connecting to %s failed", t->origin);
            sl_waitq_finish(&o->wq, &w->sw, W_FAILED);
        }
        return rc;
    }
    l->fresh = 1;
    l->resumed = net->resumed;
    if (!c) {
        o->proto = PROTO_H1;
        l->h1 = net;
    } else {
        link_conn(o, c);
        c->reserved = 1;
        l->conn = c;
    }
    dispatch(p, o);
    return 0;
}

int sl_h2_pool_adopt(sl_h2_pool *p, const char *key, int fd, sluice_error *err)
{
    sl_conn *net = sl_calloc(1, sizeof *net);
    sl_h2_origin *o;
    sl_h2_conn *c;

    if (!net) {
        close(fd);
        return sl_err(err, SLUICE_ENOMEM, "out of memory for an HTTP/2 connection");
    }
    net->fd = fd;
    net->h2 = 1;
    snprintf(net->peer, sizeof net->peer, "%s", key);
    pthread_mutex_lock(&p->lock);
    o = origin(p, key, err);
    pthread_mutex_unlock(&p->lock);
    if (!o) {
        sl_conn_close(net);
        return SLUICE_ENOMEM;
    }
    if (!(c = sl_h2_conn_start(p, o, net, &p->cfg, &p->counts, err)))
        return err ? err->code : SLUICE_ENOMEM;
    pthread_mutex_lock(&p->lock);
    link_conn(o, c);
    dispatch(p, o);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* ---- leasing --------------------------------------------------------------------- */

/* Lock held on entry, released on return. */
static int wait_turn(sl_h2_pool *p, sl_h2_origin *o, int64_t deadline, sl_h2_lease *l,
                     int *again, sluice_error *err)
{
    waiter w;
    int due_seen = 0, why;
    int64_t t0 = sl_now_ns();

    memset(&w, 0, sizeof w);
    sl_waitq_push(&o->wq, &w.sw, t0);
    for (;;) {
        int done = sl_waiter_done(&w.sw);
        if (!done)
            sl_waiter_prepare(&o->wq, &w.sw);
        pthread_mutex_unlock(&p->lock);
        if (done || (why = sl_waiter_sleep(&o->wq, &w.sw, deadline, &due_seen)) == SL_WAKE_DONE)
            break;
        pthread_mutex_lock(&p->lock);
        if (sl_waiter_done(&w.sw))
            continue;
        if (why == SL_WAKE_DEADLINE) {
            sl_waitq_remove(&o->wq, &w.sw);
            dispatch(p, o);     /* the head's turn may have been ours */
            pthread_mutex_unlock(&p->lock);
            return sl_err(err, SLUICE_EPOOLTIMEOUT,
                          o->proto == PROTO_H2
                              ? "no HTTP/2 stream slot for %s before the deadline (%d connections "
                                "open, each at its stream limit)"
                              : "%s: the connection that tells its protocol was not ready before "
                                "the deadline (%d open)",
                          o->key, o->live);
        }
    }
    l->wait_ns += sl_now_ns() - t0;
    switch (w.sw.state) {
    case W_SLOT:
        l->conn = w.conn;
        return 0;
    case W_H1:
        return 0;
    case W_AGAIN:
        *again = 1;
        return 0;
    case W_FAILED:
        if (err)
            *err = w.why;
        return w.why.code ? w.why.code : SLUICE_ECONNECT;
    default:
        return sl_err(err, SLUICE_ECLOSED, "the factory is being freed");
    }
}

int sl_h2_acquire(sl_h2_pool *p, const char *key, const sl_conn_target *t, int prior,
                  int64_t deadline, sl_h2_lease *l, sluice_error *err)
{
    sl_h2_conn *done = NULL;
    sl_h2_origin *o;
    int rc = 0, again;

    memset(l, 0, sizeof *l);
    pthread_mutex_lock(&p->lock);
    settle_fork(p);
    if (!(o = origin(p, key, err))) {
        pthread_mutex_unlock(&p->lock);
        return SLUICE_ENOMEM;
    }
    o->used = ++p->clock;
    for (;;) {
        again = 0;
        if (p->closed) {
            rc = sl_err(err, SLUICE_ECLOSED, "the factory is being freed");
            break;
        }
        done = unlink_finished(o, done);
        if (o->proto == PROTO_H1)
            break;
        /* Newcomers queue behind waiters: first come, first served. */
        if (!o->wq.head && (l->conn = take_slot(o)) != NULL)
            break;
        if (!o->wq.head && may_dial(p, o)) {
            rc = dial_locked(p, o, t, prior, deadline, l, err);
            break;
        }
        if (sl_now_ns() >= deadline) {
            rc = sl_err(err, SLUICE_EPOOLTIMEOUT, "no HTTP/2 stream slot for %s before the "
                        "deadline", o->key);
            break;
        }
        rc = wait_turn(p, o, deadline, l, &again, err);
        if (rc || !again) {
            free_list(done);
            return rc;
        }
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    free_list(done);
    return rc;
}

void sl_h2_release(sl_h2_pool *p, sl_h2_lease *l)
{
    sl_h2_conn *c = l->conn, *done = NULL;

    if (!c)
        return;
    l->conn = NULL;
    pthread_mutex_lock(&p->lock);
    c->reserved--;
    if (atomic_load(&c->exited))
        done = unlink_finished(c->origin, NULL);
    dispatch(p, c->origin);
    pthread_mutex_unlock(&p->lock);
    free_list(done);
}

/* ---- closing and stats ------------------------------------------------------------- */

void sl_h2_pool_close(sl_h2_pool *p)
{
    sl_h2_origin *o;
    sl_h2_conn *c;

    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    settle_fork(p);
    p->closed = 1;
    for (o = p->origins; o; o = o->next) {
        dispatch(p, o);
        for (c = o->conns; c; c = c->next)
            sl_h2_conn_shut(c);
    }
    pthread_mutex_unlock(&p->lock);
}

void sl_h2_pool_free(sl_h2_pool *p)
{
    sl_h2_origin *o, *next;
    sl_h2_conn *c, *all = NULL;

    if (!p)
        return;
    sl_h2_pool_close(p);
    pthread_mutex_lock(&forks_lock);
    *(p->fork_prev ? &p->fork_prev->fork_next : &forks_head) = p->fork_next;
    if (p->fork_next)
        p->fork_next->fork_prev = p->fork_prev;
    pthread_mutex_unlock(&forks_lock);
    /* Off the lists first: an I/O thread on its way out still looks at its
     * origin's list (sl_h2_pool_notify) while others are joined. */
    pthread_mutex_lock(&p->lock);
    for (o = p->origins; o; o = o->next) {
        while ((c = o->conns) != NULL) {
            o->conns = c->next;
            c->next = all;
            all = c;
        }
    }
    pthread_mutex_unlock(&p->lock);
    free_list(all);
    for (o = p->origins; o; o = next) {
        next = o->next;
        sl_free(o->key);
        sl_free(o);
    }
    pthread_mutex_destroy(&p->lock);
    sl_free(p);
}

void sl_h2_pool_set_first_stream_id(sl_h2_pool *p, int id)
{
    pthread_mutex_lock(&p->lock);
    p->cfg.first_stream_id = id;
    pthread_mutex_unlock(&p->lock);
}

void sl_h2_stats(sl_h2_pool *p, struct sluice_pool_stats *out)
{
    if (!p)
        return;
    out->h2_open = atomic_load_explicit(&p->counts.open, memory_order_relaxed);
    out->h2_streams = atomic_load_explicit(&p->counts.streams, memory_order_relaxed);
    out->h2_streams_peak = atomic_load_explicit(&p->counts.streams_peak, memory_order_relaxed);
    out->h2_goaways = atomic_load_explicit(&p->counts.goaways, memory_order_relaxed);
    out->h2_refused = atomic_load_explicit(&p->counts.refused, memory_order_relaxed);
}
