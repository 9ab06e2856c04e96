/* The keyed resource pool: one mutex over the key table, the idle lists and
 * the waiter queue; create, destroy, alive and event always run outside it.
 *
 * Accounting.  Each key's `slots` counts the resources that hold capacity:
 * idle ones, checked-out ones, ones being created and ones being destroyed.
 * A slot is released only after its resource is destroyed, so max_total and
 * max_per_key bound the resources that really exist at any instant.  When a
 * checkout needs capacity that an idle resource holds (max_total reached,
 * or a SL_POOL_FRESH checkout at its key's limit), the least recently used
 * such idle resource is taken off the idle lists and its slot passes to the
 * checkout, which destroys it (reason OVERFLOW) before creating its own.
 *
 * Fairness.  Waiters queue in arrival order.  Whenever capacity appears
 * (a released slot, or a put once the oldest waiter has waited the
 * barging bound), dispatch() walks the queue from its head and grants
 * each waiter that can now be served, under the lock and before anyone
 * else can look; so past the bound a later caller never takes what an
 * earlier waiter could have used, while a waiter held back only by its
 * own key's limit does not hold up waiters for other keys.  Within the
 * bound a put leaves the resource idle for whoever checks out next (the
 * putter, most often), which spares a wake-up and a sleep per request;
 * a waiter whose bound passes wakes and takes what was left idle.
 *
 * Keys.  An entry holds a key's resources, waiters and statistics.  One
 * with no slot and no waiter is unused; the unused ones sit on a list, the
 * oldest unused first, and past SL_POOL_UNUSED_KEYS the oldest is freed
 * (its counters go to the pool's totals), so calls to ever new origins
 * cannot grow the table without bound while the origins a process keeps
 * talking to keep their statistics.  A pin keeps an entry that is read
 * outside the lock (an evicted victim's, the one sl_pool_foreach_key is
 * at) from being freed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "hash.h"
#include "log.h"
#include "pool.h"
#include "waitq.h"

/* Only uint64_t fields: add_counters sums them as an array. */
typedef struct counters {
    uint64_t created, reused, timeouts, wait_us_total;
    uint64_t closed[SLUICE_CLOSE_REASONS_];
} counters;

typedef struct item item;

typedef struct entry {
    char *key;
    uint64_t hash;
    struct entry *next, *prev; /* every entry, newest first */
    struct entry *unewer, *uolder; /* the unused list, when on it */
    int unused;                /* on the unused list */
    int pins;                  /* readers outside the lock: not to be freed */
    item *top, *bottom;        /* idle stack: top = most recently used */
    int slots;                 /* capacity held: see the file comment */
    int idle, in_use, waiting, peak_in_use;
    counters c;
    sl_wait_hist waits;        /* checkouts that queued: time to a grant or timeout */
    /* the warm minimum (min_idle_per_key) */
    void *kept;                /* ops->arg_keep's copy of a checkout's arg */
    int refilling;             /* slots reserved by a refill, not yet idle */
    int probing;               /* idle ones off the lists for ops->alive (stats count them idle) */
    int refill_fails;          /* failed refills in a row */
    int64_t refill_at;         /* no refill before this (backoff) */
    unsigned refill_pass;      /* the housekeeping pass that last tried it */
} entry;

struct item {
    sl_pool_item pub;          /* first: the user's pointer converts back */
    entry *ent;
    int64_t idle_since;
    int is_idle;               /* on the idle lists */
    int reason;                /* why it is being destroyed */
    item *up, *down;           /* entry's idle stack (up = newer) */
    item *newer, *older;       /* pool-wide idle list */
    item *next;                /* a list of items to destroy */
    unsigned gen;              /* the pool's generation it was made in */
    item *anewer, *aolder;     /* every live item, for sl_pool_usage */
    int probing;               /* off the idle lists for ops->alive (housekeeping) */
};

/* What a checkout was granted: an idle resource to reuse, or (it == NULL) a
 * slot to create in, with perhaps an evicted idle resource to destroy first
 * (its slot is the one granted). */
typedef struct grant {
    item *it;
    item *victim;
} grant;

enum { W_WAITING, W_GRANTED, W_CLOSED, W_TIMEDOUT };

typedef struct waiter {
    sl_waiter sw;              /* first: the queue's node converts back */
    entry *ent;
    unsigned flags;
    grant g;
    int64_t wait_ns;           /* set with the grant */
} waiter;

struct sl_pool {
    pthread_mutex_t lock;
    pthread_condattr_t cattr;      /* CLOCK_MONOTONIC, for every cond here */
    sl_pool_cfg cfg;
    int per_key;                   /* effective max_per_key, 0 = none */
    sl_pool_ops ops;
    void *ctx;
    uint64_t seed;                 /* of the key hash (hash.h) */

    /* Guarded by lock. */
    entry **tab;                   /* open addressing, never more than half full */
    size_t tab_cap, nkeys;
    entry *entries;
    entry *last;                   /* the entry entry_get() found last */
    entry *unused_new, *unused_old;  /* entries with no slot and no waiter */
    size_t nunused;
    counters retired;              /* the counters of freed entries */
    sl_wait_hist retired_waits;
    item *idle_new, *idle_old;     /* pool-wide idle list, for LRU eviction */
    item *all_new, *all_old;       /* every live item (idle, in use, probed) */
    unsigned pass;                 /* housekeeping passes, for entry->refill_pass */
    sl_waitq wq;                   /* checkouts waiting, oldest first */
    int slots, idle, in_use, waiting, peak_in_use;
    int closed;

    pthread_cond_t sweep_cond;
    pthread_t sweeper;
    int sweeper_running;           /* guarded by lock; who clears it joins */

    /* fork(): gen grows in each child; adopted is the generation whose
     * leftovers were dropped.  Guarded by lock (the child handler runs
     * alone). */
    unsigned gen, adopted;
    int restart_sweeper;           /* the child has none, and should */
    struct sl_pool *fork_prev, *fork_next;    /* guarded by forks_lock */
};

/* ---- keys ---------------------------------------------------------------- */

static uint64_t hash_key(const sl_pool *p, const char *s)
{
    return sl_hash_bytes(p->seed, s, strlen(s));
}

static entry *entry_find(const sl_pool *p, const char *key, uint64_t h)
{
    size_t mask = p->tab_cap - 1, i = (size_t)h & mask;

    for (; p->tab[i]; i = (i + 1) & mask)
        if (p->tab[i]->hash == h && strcmp(p->tab[i]->key, key) == 0)
            return p->tab[i];
    return NULL;
}

static void table_put(entry **tab, size_t cap, entry *e)
{
    size_t i = (size_t)e->hash & (cap - 1);

    while (tab[i])
        i = (i + 1) & (cap - 1);
    tab[i] = e;
}

static int table_grow(sl_pool *p)
{
    size_t cap = p->tab_cap * 2, i;
    entry **tab = sl_calloc(cap, sizeof *tab);

    if (!tab)
        return SLUICE_ENOMEM;
    for (i = 0; i < p->tab_cap; i++)
        if (p->tab[i])
            table_put(tab, cap, p->tab[i]);
    sl_free(p->tab);
    p->tab = tab;
    p->tab_cap = cap;
    return 0;
}

/* Finds or adds the entry for `key`.  Lock held.  Most programs talk to one
 * origin at a time, so the last entry is tried before hashing. */
static entry *entry_get(sl_pool *p, const char *key, sluice_error *err)
{
    uint64_t h;
    entry *e = p->last;

    if (e && strcmp(e->key, key) == 0)
        return e;
    h = hash_key(p, key);
    e = entry_find(p, key, h);
    if (e)
        return p->last = e;
    if ((p->nkeys + 1) * 2 > p->tab_cap && table_grow(p) != 0)
        goto nomem;
    e = sl_calloc(1, sizeof *e);
    if (!e || !(e->key = sl_strdup(key))) {
        sl_free(e);
        goto nomem;
    }
    e->hash = h;
    e->next = p->entries;
    if (p->entries)
        p->entries->prev = e;
    p->entries = e;
    table_put(p->tab, p->tab_cap, e);
    p->nkeys++;
    return p->last = e;
nomem:
    sl_err(err, SLUICE_ENOMEM, "no memory for pool key '%s'", key);
    return NULL;
}

/* Deletes `e` from the table, shifting later members of its probe run back
 * so that no tombstones build up. */
static void table_del(sl_pool *p, const entry *e)
{
    size_t mask = p->tab_cap - 1, i = (size_t)e->hash & mask, j;

    while (p->tab[i] != e)
        i = (i + 1) & mask;
    for (j = i;;) {
        size_t k;
        j = (j + 1) & mask;
        if (!p->tab[j])
            break;
        k = (size_t)p->tab[j]->hash & mask;
        /* Stays put when its home lies cyclically in (i, j]. */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        p->tab[i] = p->tab[j];
        i = j;
    }
    p->tab[i] = NULL;
}

/* counters holds nothing but uint64_t, so it adds up field by field. */
static void add_counters(counters *to, const counters *c)
{
    uint64_t *t = (uint64_t *)to;
    const uint64_t *f = (const uint64_t *)c;
    size_t i;

    for (i = 0; i < sizeof *to / sizeof *t; i++)
        t[i] += f[i];
}

static void unused_unlink(sl_pool *p, entry *e)
{
    *(e->unewer ? &e->unewer->uolder : &p->unused_new) = e->uolder;
    *(e->uolder ? &e->uolder->unewer : &p->unused_old) = e->unewer;
    e->unewer = e->uolder = NULL;
    e->unused = 0;
    p->nunused--;
}

/* Frees an unused, unpinned entry; its counters stay in the totals. */
static void entry_free(sl_pool *p, entry *e)
{
    unused_unlink(p, e);
    table_del(p, e);
    *(e->prev ? &e->prev->next : &p->entries) = e->next;
    if (e->next)
        e->next->prev = e->prev;
    if (p->last == e)
        p->last = NULL;
    add_counters(&p->retired, &e->c);
    sl_wait_hist_merge(&p->retired_waits, &e->waits);
    if (e->kept)
        p->cfg.arg_drop(p->ctx, e->kept);
    p->nkeys--;
    sl_free(e->key);
    sl_free(e);
}

/* A checkout is about to use `e`: off the unused list.  Lock held. */
static void entry_busy(sl_pool *p, entry *e)
{
    if (e->unused)
        unused_unlink(p, e);
}

/* Called wherever `e` may have lost its last slot or waiter, once the
 * caller is done with it: lists it as unused and frees the oldest unused
 * entries past SL_POOL_UNUSED_KEYS.  `e` may be gone after.  Lock held. */
static void entry_settle(sl_pool *p, entry *e)
{
    entry *u, *newer;

    if (!e->unused && !e->slots && !e->waiting) {
        e->uolder = p->unused_new;
        e->unewer = NULL;
        *(p->unused_new ? &p->unused_new->unewer : &p->unused_old) = e;
        p->unused_new = e;
        e->unused = 1;
        p->nunused++;
    }
    for (u = p->unused_old; u && p->nunused > SL_POOL_UNUSED_KEYS; u = newer) {
        newer = u->unewer;
        if (!u->pins)
            entry_free(p, u);
    }
}

static void entry_unpin(sl_pool *p, entry *e)
{
    e->pins--;
    entry_settle(p, e);
}

/* ---- idle lists ------------------------------------------------------------ */

static void idle_push(sl_pool *p, item *it)
{
    entry *e = it->ent;

    it->up = NULL;
    it->down = e->top;
    if (e->top)
        e->top->up = it;
    else
        e->bottom = it;
    e->top = it;
    it->older = p->idle_new;
    it->newer = NULL;
    if (p->idle_new)
        p->idle_new->newer = it;
    else
        p->idle_old = it;
    p->idle_new = it;
    it->is_idle = 1;
    e->idle++;
    p->idle++;
}

/* Like idle_push, but as the least recently used: for a resource that has
 * been idle longer than every other (one the housekeeping thread probed). */
static void idle_append(sl_pool *p, item *it)
{
    entry *e = it->ent;

    it->down = NULL;
    it->up = e->bottom;
    *(e->bottom ? &e->bottom->down : &e->top) = it;
    e->bottom = it;
    it->newer = p->idle_old;
    it->older = NULL;
    *(p->idle_old ? &p->idle_old->older : &p->idle_new) = it;
    p->idle_old = it;
    it->is_idle = 1;
    e->idle++;
    p->idle++;
}

static void idle_remove(sl_pool *p, item *it)
{
    entry *e = it->ent;

    *(it->up ? &it->up->down : &e->top) = it->down;
    *(it->down ? &it->down->up : &e->bottom) = it->up;
    *(it->newer ? &it->newer->older : &p->idle_new) = it->older;
    *(it->older ? &it->older->newer : &p->idle_old) = it->newer;
    it->up = it->down = it->newer = it->older = NULL;
    it->is_idle = 0;
    e->idle--;
    p->idle--;
}

/* The list of every live item (lock held). */
static void all_link(sl_pool *p, item *it)
{
    it->aolder = p->all_new;
    it->anewer = NULL;
    *(p->all_new ? &p->all_new->anewer : &p->all_old) = it;
    p->all_new = it;
}

static void all_unlink(sl_pool *p, item *it)
{
    *(it->anewer ? &it->anewer->aolder : &p->all_new) = it->aolder;
    *(it->aolder ? &it->aolder->anewer : &p->all_old) = it->anewer;
    it->anewer = it->aolder = NULL;
}

/* ---- capacity and grants (lock held) ------------------------------------- */

static void mark_in_use(sl_pool *p, entry *e)
{
    if (++e->in_use > e->peak_in_use)
        e->peak_in_use = e->in_use;
    if (++p->in_use > p->peak_in_use)
        p->peak_in_use = p->in_use;
}

static void take_idle(sl_pool *p, item *it, grant *g)
{
    idle_remove(p, it);
    mark_in_use(p, it->ent);
    it->ent->c.reused++;
    it->pub.uses++;
    g->it = it;
    g->victim = NULL;
}

/* Takes `victim` off the idle lists and passes its slot to `e`. */
static void evict_for(sl_pool *p, entry *e, item *victim, grant *g)
{
    idle_remove(p, victim);
    victim->ent->pins++;      /* read while destroying it, outside the lock */
    victim->ent->slots--;
    victim->ent->c.closed[SLUICE_CLOSE_OVERFLOW]++;
    victim->reason = SLUICE_CLOSE_OVERFLOW;
    e->slots++;
    g->it = NULL;
    g->victim = victim;
}

/* Grants `e` an idle resource or a slot if one is to be had now; 0 when
 * granted, -1 when the caller must wait. */
static int serve(sl_pool *p, entry *e, unsigned flags, grant *g)
{
    int key_room = !p->per_key || e->slots < p->per_key;
    int total_room = !p->cfg.max_total || p->slots < p->cfg.max_total;

    if (!(flags & SL_POOL_FRESH) && e->top) {
        take_idle(p, e->top, g);
        return 0;
    }
    if (key_room && total_room) {
        e->slots++;
        p->slots++;
        g->it = g->victim = NULL;
        return 0;
    }
    /* At max_total: close the pool's least recently used idle resource. */
    if (key_room && p->idle_old) {
        evict_for(p, e, p->idle_old, g);
        return 0;
    }
    /* A fresh checkout at its key's limit: make room from the key's own idle. */
    if ((flags & SL_POOL_FRESH) && e->bottom) {
        evict_for(p, e, e->bottom, g);
        return 0;
    }
    return -1;
}

static void enqueue(sl_pool *p, waiter *w, int64_t now)
{
    sl_waitq_push(&p->wq, &w->sw, now);
    w->ent->waiting++;
    p->waiting++;
}

/* Off the queue without a grant (timed out).  Lock held. */
static void dequeue(sl_pool *p, waiter *w)
{
    sl_waitq_remove(&p->wq, &w->sw);
    w->ent->waiting--;
    p->waiting--;
}

/* Off the queue with `state`, woken. */
static void finish(sl_pool *p, waiter *w, int state)
{
    w->ent->waiting--;
    p->waiting--;
    sl_waitq_finish(&p->wq, &w->sw, state);
}

/* A newcomer may take free capacity at once unless the oldest waiter has
 * waited the bound (waitq.h: bounded barging).  Lock held. */
static int may_barge(const sl_pool *p)
{
    return !p->wq.head || !sl_waitq_due(&p->wq, sl_now_ns());
}

/* Grants waiters in arrival order whatever can now be granted.  A waiter
 * that cannot be served leaves later ones of its key (that take any idle
 * resource) unserved too, so the walk skips them cheaply: with hundreds of
 * threads queued on one origin a checkin costs the same as with few. */
static void dispatch(sl_pool *p)
{
    waiter *w = (waiter *)p->wq.head, *next;
    const entry *stuck = NULL;
    int64_t now = 0;

    for (; w; w = next) {
        next = (waiter *)w->sw.next;
        if (p->cfg.max_total && p->slots >= p->cfg.max_total && !p->idle)
            return;     /* nothing left that anyone could take */
        if (w->ent == stuck && !(w->flags & SL_POOL_FRESH))
            continue;
        if (serve(p, w->ent, w->flags, &w->g) != 0) {
            if (!(w->flags & SL_POOL_FRESH))
                stuck = w->ent;
            continue;
        }
        if (!now)
            now = sl_now_ns();
        w->wait_ns = now - w->sw.since;
        w->ent->c.wait_us_total += (uint64_t)(w->wait_ns / 1000);
        sl_wait_hist_add(&w->ent->waits, (uint64_t)(w->wait_ns / 1000));
        finish(p, w, W_GRANTED);
    }
    if (p->idle)
        sl_waitq_watch(&p->wq);
}

/* A resource became idle at `now`: a waiter that has waited the bound gets
 * it at once, else the queue is watched so that the one that comes due is
 * served (waitq.h: bounded barging).  Lock held. */
static void offer(sl_pool *p, int64_t now)
{
    if (!p->wq.head)
        return;
    if (sl_waitq_due(&p->wq, now))
        dispatch(p);
    else
        sl_waitq_watch(&p->wq);
}

/* Gives back `e`'s slots; `e` may be gone after. */
static void release_slots(sl_pool *p, entry *e, int n)
{
    e->slots -= n;
    p->slots -= n;
    dispatch(p);
    entry_settle(p, e);
}

/* ---- calls out (never with the lock held) ---------------------------------- */

static void emit(sl_pool *p, sluice_pool_event_type type, const entry *e, int reason,
                 int64_t wait_ns)
{
    sluice_pool_event ev;

    if (!p->ops.event)
        return;
    ev.type = type;
    ev.origin = e->key;
    ev.reason = reason;
    ev.wait_us = wait_ns / 1000;
    p->ops.event(p->ctx, &ev);
}

static void destroy_res(sl_pool *p, item *it)
{
    /* p->gen changes only in a fork child, before any other thread runs. */
    p->ops.destroy(p->ctx, it->pub.res,
                   it->gen != p->gen ? SL_CLOSE_INHERITED : (sluice_close_reason)it->reason);
    emit(p, SLUICE_POOL_CLOSE, it->ent, it->reason, 0);
}

/* Destroys a list of items, then gives their slots back. */
static void destroy_list(sl_pool *p, item *list)
{
    item *it, *next;

    if (!list)
        return;
    for (it = list; it; it = it->next)
        destroy_res(p, it);
    pthread_mutex_lock(&p->lock);
    for (it = list; it; it = it->next) {
        all_unlink(p, it);
        release_slots(p, it->ent, 1);
    }
    pthread_mutex_unlock(&p->lock);
    for (it = list; it; it = next) {
        next = it->next;
        sl_free(it);
    }
}

static void destroy_one(sl_pool *p, item *it)
{
    it->next = NULL;
    destroy_list(p, it);
}

/* Why an idle resource must not be used any more, or -1. */
static int expiry_reason(const sl_pool *p, const item *it, int64_t now)
{
    if (p->cfg.max_lifetime_ms &&
        now - it->pub.created_ns >= (int64_t)p->cfg.max_lifetime_ms * 1000000)
        return SLUICE_CLOSE_LIFETIME;
    if (p->cfg.idle_timeout_ms &&
        now - it->idle_since >= (int64_t)p->cfg.idle_timeout_ms * 1000000)
        return SLUICE_CLOSE_EXPIRED;
    return -1;
}

/* Checks a just-granted idle resource outside the lock; -1 when usable. */
static int check_reuse(sl_pool *p, const item *it)
{
    int reason = -1;

    if (p->cfg.max_lifetime_ms || p->cfg.idle_timeout_ms)
        reason = expiry_reason(p, it, sl_now_ns());
    if (reason < 0 && p->ops.alive && !p->ops.alive(p->ctx, it->pub.res))
        reason = SLUICE_CLOSE_STALE;
    return reason;
}

/* ---- fork() -----------------------------------------------------------------
 *
 * Every pool is on a process-wide list.  A pthread_atfork prepare handler
 * takes each pool's lock (so the sweeper never holds one across the fork),
 * the parent handler gives them back, and the child handler gives them back
 * too, after marking each pool: a new generation, no waiters (their threads
 * are not there), a fresh sweeper condition variable and no sweeper to
 * join.  The resources a pool holds from before are the parent's; in the
 * child, the first checkout takes them off the idle lists and hands them to
 * ops->destroy as SL_CLOSE_INHERITED (release, write nothing), and starts a
 * new sweeper.  A resource checked out before the fork and put back in the
 * child goes the same way, as does any the child closes or sweeps.  The
 * check is one comparison under the lock a checkout takes anyway. */

static void *sweeper_main(void *arg);

static pthread_mutex_t forks_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t forks_once = PTHREAD_ONCE_INIT;
static int forks_watched;
static sl_pool *forks_head;        /* every pool, guarded by forks_lock */

/* So that no thread of ours (a sweeper, a caller between two statements)
 * holds a pool lock across fork(). */
static void fork_prepare(void)
{
    sl_pool *p;

    pthread_mutex_lock(&forks_lock);
    for (p = forks_head; p; p = p->fork_next)
        pthread_mutex_lock(&p->lock);
}

static void fork_parent(void)
{
    sl_pool *p;

    for (p = forks_head; p; p = p->fork_next)
        pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&forks_lock);
}

/* Alone in the child: the waiters' threads and the sweeper stayed in the
 * parent, so nobody is to be signalled or joined; the sweeper may have
 * been waiting on sweep_cond, which is made anew. */
static void fork_child(void)
{
    sl_pool *p;
    entry *e;

    for (p = forks_head; p; p = p->fork_next) {
        p->gen++;
        sl_waitq_init(&p->wq, p->wq.bound_ns);
        p->waiting = 0;
        for (e = p->entries; e; e = e->next)
            e->waiting = 0;
        pthread_cond_init(&p->sweep_cond, &p->cattr);
        p->restart_sweeper = p->sweeper_running;
        p->sweeper_running = 0;
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&forks_lock);
}

static void fork_install(void)
{
    forks_watched = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
}

static int fork_register(sl_pool *p, sluice_error *err)
{
    pthread_once(&forks_once, fork_install);
    if (!forks_watched)
        return sl_err(err, SLUICE_ENOMEM, "cannot register the pool's fork() handlers");
    pthread_mutex_lock(&forks_lock);
    p->fork_next = forks_head;
    if (forks_head)
        forks_head->fork_prev = p;
    forks_head = p;
    pthread_mutex_unlock(&forks_lock);
    return 0;
}

static void fork_unregister(sl_pool *p)
{
    pthread_mutex_lock(&forks_lock);
    *(p->fork_prev ? &p->fork_prev->fork_next : &forks_head) = p->fork_next;
    if (p->fork_next)
        p->fork_next->fork_prev = p->fork_prev;
    pthread_mutex_unlock(&forks_lock);
}

/* The first checkout in a fork child: the parent's idle resources leave
 * the lists and the sweeper starts again.  Lock held; the caller hands the
 * list to destroy_list() outside it (they go as SL_CLOSE_INHERITED). */
static item *adopt(sl_pool *p)
{
    item *it, *list = NULL;

    p->adopted = p->gen;
    while ((it = p->idle_new)) {
        idle_remove(p, it);
        it->reason = SLUICE_CLOSE_STALE;
        it->ent->c.closed[SLUICE_CLOSE_STALE]++;
        it->next = list;
        list = it;
    }
    if (p->restart_sweeper && !p->closed) {
        p->restart_sweeper = 0;
        p->sweeper_running = pthread_create(&p->sweeper, NULL, sweeper_main, p) == 0;
        if (!p->sweeper_running)
            SL_WARN("pool: cannot restart the housekeeping thread after fork()");
    }
    return list;
}

/* ---- checkout ------------------------------------------------------------- */

static const char *limit_str(int limit, char *buf, size_t cap)
{
    if (!limit)
        return "unlimited";
    snprintf(buf, cap, "%d", limit);
    return buf;
}

static int pool_timeout(sl_pool *p, entry *e, sluice_error *err)
{
    char kl[16], tl[16];

    e->c.timeouts++;
    return sl_err(err, SLUICE_EPOOLTIMEOUT,
                  "no pooled resource for '%s' before the deadline (%d open for the key, "
                  "max_per_key %s; %d in all, max_total %s)",
                  e->key, e->slots, limit_str(p->per_key, kl, sizeof kl), p->slots,
                  limit_str(p->cfg.max_total, tl, sizeof tl));
}

/* Queues the caller and sleeps until granted, closed or past the deadline.
 * Lock held on entry, released on return.  A granted waiter does not take
 * the lock again: the grant is in its node. */
static int wait_turn(sl_pool *p, entry *e, unsigned flags, int64_t deadline, grant *g,
                     int64_t *wait_ns, sluice_error *err)
{
    waiter w;
    int64_t t0 = sl_now_ns();
    int due_seen = 0, rc = 0;

    memset(&w, 0, sizeof w);
    w.ent = e;
    w.flags = flags;
    if (deadline <= t0)
        goto timedout;
    enqueue(p, &w, t0);
    /* Here with free capacity only when the queue was due: take it in turn. */
    dispatch(p);
    for (;;) {
        int done = sl_waiter_done(&w.sw), why;
        if (!done)
            sl_waiter_prepare(&p->wq, &w.sw);
        pthread_mutex_unlock(&p->lock);
        if (done || (why = sl_waiter_sleep(&p->wq, &w.sw, deadline, &due_seen)) == SL_WAKE_DONE)
            break;
        pthread_mutex_lock(&p->lock);
        if (sl_waiter_done(&w.sw))
            continue;
        if (sl_now_ns() >= deadline) {
            dequeue(p, &w);
            w.wait_ns = sl_now_ns() - t0;
            e->c.wait_us_total += (uint64_t)(w.wait_ns / 1000);
            sl_wait_hist_add(&e->waits, (uint64_t)(w.wait_ns / 1000));
            if (p->idle)
                sl_waitq_watch(&p->wq);
            goto timedout;
        }
        if (why == SL_WAKE_DUE || why == SL_WAKE_POLL)
            dispatch(p);     /* what barging left free is the queue's now */
    }
    *wait_ns = w.wait_ns;
    if (w.sw.state == W_GRANTED) {
        *g = w.g;
        return 0;
    }
    pthread_mutex_lock(&p->lock);
    rc = sl_err(err, SLUICE_ECLOSED, "pool closed while waiting for '%s'", e->key);
    entry_settle(p, e);
    pthread_mutex_unlock(&p->lock);
    return rc;
timedout:
    rc = pool_timeout(p, e, err);
    entry_settle(p, e);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* After a granted idle resource was found unusable and destroyed: reuse the
 * next idle one (giving the dead one's slot back) or keep the slot to create
 * in.  Lock held. */
static int after_reject(sl_pool *p, entry *e, unsigned flags, const item *dead, grant *g,
                        sluice_error *err)
{
    e->in_use--;
    p->in_use--;
    e->c.reused--;
    e->c.closed[dead->reason]++;
    all_unlink(p, (item *)dead);
    g->it = g->victim = NULL;
    if (p->closed) {
        sl_err(err, SLUICE_ECLOSED, "pool closed while checking out '%s'", e->key);
        release_slots(p, e, 1);
        return SLUICE_ECLOSED;
    }
    if (!(flags & SL_POOL_FRESH) && e->top) {
        take_idle(p, e->top, g);
        release_slots(p, e, 1);
    }
    return 0;
}

/* Creates a resource in a granted slot. */
static int create_in_slot(sl_pool *p, entry *e, void *arg, int64_t deadline, int64_t wait_ns,
                          sl_pool_item **out, sluice_error *err)
{
    item *it = sl_calloc(1, sizeof *it);
    int rc;

    sl_err_clear(err);
    if (!it)
        rc = sl_err(err, SLUICE_ENOMEM, "no memory for a pooled resource for '%s'", e->key);
    else if ((rc = p->ops.create(p->ctx, e->key, arg, deadline, &it->pub.res, err)) != 0) {
        if (rc > 0)
            rc = SLUICE_EIO;
        if (err && err->code == 0)
            sl_err(err, rc, "creating a pooled resource for '%s' failed", e->key);
    }
    if (rc == 0) {
        it->ent = e;
        it->pub.created_ns = sl_now_ns();
        it->pub.uses = 1;
        it->pub.wait_ns = wait_ns;
    }
    pthread_mutex_lock(&p->lock);
    if (rc != 0)
        release_slots(p, e, 1);
    else {
        mark_in_use(p, e);
        e->c.created++;
        it->gen = p->gen;
        all_link(p, it);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc != 0) {
        sl_free(it);
        return rc;
    }
    emit(p, SLUICE_POOL_CONNECT, e, -1, 0);
    emit(p, SLUICE_POOL_CHECKOUT, e, -1, wait_ns);
    *out = &it->pub;
    return 0;
}

/* Turns a grant into a checked-out item: destroys an evicted victim, checks
 * an idle resource before reuse, or creates. */
static int checkout(sl_pool *p, entry *e, void *arg, unsigned flags, int64_t deadline, grant g,
                    int64_t wait_ns, sl_pool_item **out, sluice_error *err)
{
    for (;;) {
        item *it = g.it;
        int rc;

        if (g.victim) {
            /* Its slot is already ours: destroy before creating. */
            destroy_res(p, g.victim);
            pthread_mutex_lock(&p->lock);
            all_unlink(p, g.victim);
            entry_unpin(p, g.victim->ent);
            pthread_mutex_unlock(&p->lock);
            sl_free(g.victim);
            g.victim = NULL;
        }
        if (!it)
            return create_in_slot(p, e, arg, deadline, wait_ns, out, err);
        it->reason = check_reuse(p, it);
        if (it->reason < 0) {
            it->pub.reused = 1;
            it->pub.wait_ns = wait_ns;
            emit(p, SLUICE_POOL_CHECKOUT, e, -1, wait_ns);
            *out = &it->pub;
            return 0;
        }
        destroy_res(p, it);
        pthread_mutex_lock(&p->lock);
        rc = after_reject(p, e, flags, it, &g, err);
        pthread_mutex_unlock(&p->lock);
        sl_free(it);
        if (rc != 0)
            return rc;
    }
}

/* The first checkout of a key keeps a copy of its arg for refills. */
static void keep_arg(sl_pool *p, entry *e, const void *arg)
{
    void *kept = p->cfg.arg_keep(p->ctx, arg);

    pthread_mutex_lock(&p->lock);
    if (!e->kept) {
        e->kept = kept;
        kept = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (kept)
        p->cfg.arg_drop(p->ctx, kept);
}

int sl_pool_get(sl_pool *p, const char *key, void *arg, unsigned flags, int64_t deadline,
                sl_pool_item **out, sluice_error *err)
{
    entry *e = NULL;
    grant g = {NULL, NULL};
    item *inherited = NULL;
    int64_t wait_ns = 0;
    int rc = 0, keep = 0;

    if (out)
        *out = NULL;
    if (!p || !key || !out)
        return sl_err(err, SLUICE_EINVAL, "pool checkout needs a pool, a key and an out pointer");
    pthread_mutex_lock(&p->lock);
    if (p->adopted != p->gen) {
        /* Gone before serve() looks, so their slots count for this call. */
        inherited = adopt(p);
        pthread_mutex_unlock(&p->lock);
        destroy_list(p, inherited);
        pthread_mutex_lock(&p->lock);
    }
    if (p->closed)
        rc = sl_err(err, SLUICE_ECLOSED, "pool is closed (checkout for '%s')", key);
    else if (!(e = entry_get(p, key, err)))
        rc = SLUICE_ENOMEM;
    else {
        entry_busy(p, e);
        keep = p->cfg.min_idle_per_key && p->cfg.arg_keep && arg && !e->kept;
        if (!may_barge(p) || serve(p, e, flags, &g) != 0) {
            rc = wait_turn(p, e, flags, deadline, &g, &wait_ns, err);   /* unlocks */
            goto waited;
        }
    }
    pthread_mutex_unlock(&p->lock);
waited:
    if (rc != 0)
        return rc;
    if (keep)
        keep_arg(p, e, arg);     /* e holds our slot: it stays */
    return checkout(p, e, arg, flags, deadline, g, wait_ns, out, err);
}

/* ---- checkin -------------------------------------------------------------- */

/* Why a returned item is closed rather than kept idle, or -1.  Lock held. */
static int put_reason(const sl_pool *p, const item *it, int reusable, int64_t now)
{
    if (p->closed)
        return SLUICE_CLOSE_SHUTDOWN;
    if (it->gen != p->gen)
        return SLUICE_CLOSE_STALE;     /* the parent's, checked out across fork() */
    if (!reusable)
        return SLUICE_CLOSE_BROKEN;
    if (p->cfg.max_lifetime_ms &&
        now - it->pub.created_ns >= (int64_t)p->cfg.max_lifetime_ms * 1000000)
        return SLUICE_CLOSE_LIFETIME;
    return -1;
}

void sl_pool_put(sl_pool *p, sl_pool_item *pub, int reusable)
{
    item *it = (item *)pub;
    entry *e;
    int64_t now;
    int reason;

    if (!p || !pub)
        return;
    e = it->ent;
    emit(p, SLUICE_POOL_CHECKIN, e, -1, 0);
    now = sl_now_ns();
    pthread_mutex_lock(&p->lock);
    e->in_use--;
    p->in_use--;
    reason = put_reason(p, it, reusable, now);
    if (reason < 0) {
        /* Idle first, so that dispatch() can hand it to the first waiter
         * that can use it; once granted it is no longer ours to touch.
         * While no waiter has waited the bound it stays idle for the next
         * caller, most often this thread coming back (waitq.h). */
        it->idle_since = now;
        idle_push(p, it);
        offer(p, now);
        if (it->is_idle && p->cfg.max_idle_per_key && e->idle > p->cfg.max_idle_per_key) {
            idle_remove(p, it);
            reason = SLUICE_CLOSE_OVERFLOW;
        }
    }
    if (reason >= 0) {
        it->reason = reason;
        e->c.closed[reason]++;
    }
    pthread_mutex_unlock(&p->lock);
    if (reason >= 0)
        destroy_one(p, it);
}

/* ---- housekeeping ---------------------------------------------------------- */

/* Takes idle resources past their idle timeout or lifetime off the idle
 * lists.  Lock held. */
static item *collect_expired(sl_pool *p, int64_t now)
{
    item *it, *older, *list = NULL;

    for (it = p->idle_new; it; it = older) {
        int reason = expiry_reason(p, it, now);
        older = it->older;
        if (reason < 0)
            continue;
        idle_remove(p, it);
        it->reason = reason;
        it->ent->c.closed[reason]++;
        it->next = list;
        list = it;
    }
    return list;
}

void sl_pool_sweep(sl_pool *p)
{
    item *list;

    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    list = collect_expired(p, sl_now_ns());
    pthread_mutex_unlock(&p->lock);
    destroy_list(p, list);
}

/* ---- the warm minimum ------------------------------------------------------ */

/* Creates n resources for `e` in slots reserved for them (e->refilling
 * counts them) and leaves them idle.  Lock not held.  Returns how many it
 * made; a failed create gives back the slots left and stops there. */
static int fill(sl_pool *p, entry *e, void *arg, int n, int64_t deadline, sluice_error *err)
{
    int made = 0;

    for (; made < n; made++) {
        item *it = sl_calloc(1, sizeof *it);
        int rc = it ? p->ops.create(p->ctx, e->key, arg, deadline, &it->pub.res, err)
                    : sl_err(err, SLUICE_ENOMEM, "no memory for a pooled resource for '%s'",
                             e->key);
        int64_t now = sl_now_ns();

        pthread_mutex_lock(&p->lock);
        if (rc != 0) {
            e->refilling -= n - made;
            release_slots(p, e, n - made);
            pthread_mutex_unlock(&p->lock);
            sl_free(it);
            return made;
        }
        it->ent = e;
        it->gen = p->gen;
        it->pub.created_ns = it->idle_since = now;
        e->c.created++;
        e->refilling--;
        all_link(p, it);
        if (p->closed) {
            /* Closed meanwhile: nobody would ever destroy it. */
            it->reason = SLUICE_CLOSE_SHUTDOWN;
            e->c.closed[SLUICE_CLOSE_SHUTDOWN]++;
            e->refilling -= n - made - 1;
            release_slots(p, e, n - made - 1);
            pthread_mutex_unlock(&p->lock);
            emit(p, SLUICE_POOL_CONNECT, e, -1, 0);
            destroy_one(p, it);
            return made;
        }
        idle_push(p, it);
        offer(p, now);
        pthread_mutex_unlock(&p->lock);
        emit(p, SLUICE_POOL_CONNECT, e, -1, 0);
    }
    return made;
}

/* Slots `e` may take now for `want` more resources.  Lock held. */
static int room_for(const sl_pool *p, const entry *e, int want)
{
    if (p->per_key && p->per_key - e->slots < want)
        want = p->per_key - e->slots;
    if (p->cfg.max_total && p->cfg.max_total - p->slots < want)
        want = p->cfg.max_total - p->slots;
    return want;
}

/* Reserves room for up to n resources of `e`; the count.  Lock held. */
static int reserve(sl_pool *p, entry *e, int n)
{
    n = room_for(p, e, n);
    if (n <= 0)
        return 0;
    entry_busy(p, e);
    e->slots += n;
    p->slots += n;
    e->refilling += n;
    return n;
}

int sl_pool_prefill(sl_pool *p, const char *key, void *arg, int n, int64_t deadline,
                    sluice_error *err)
{
    entry *e = NULL;
    int rc = 0, made;

    if (!p || !key || n < 0)
        return sl_err(err, SLUICE_EINVAL, "pool prefill needs a pool, a key and a count >= 0");
    pthread_mutex_lock(&p->lock);
    if (p->closed)
        rc = sl_err(err, SLUICE_ECLOSED, "pool is closed (prefill for '%s')", key);
    else if (!(e = entry_get(p, key, err)))
        rc = SLUICE_ENOMEM;
    else if ((n = reserve(p, e, n)) == 0)
        entry_settle(p, e);
    pthread_mutex_unlock(&p->lock);
    if (rc != 0 || n == 0)
        return rc;
    sl_err_clear(err);
    made = fill(p, e, arg, n, deadline, err);
    if (made == 0 && (!err || err->code == 0))
        return SLUICE_EIO;
    return made ? made : err->code;
}

/* How many resources `e` lacks for the warm minimum and may get now. */
static int refill_need(const sl_pool *p, const entry *e, int64_t now)
{
    if (e->refill_pass == p->pass || now < e->refill_at || (p->cfg.arg_keep && !e->kept))
        return 0;
    return p->cfg.min_idle_per_key - e->idle - e->refilling;
}

/* Tops every key up to the warm minimum, one key at a time, creating
 * outside the lock.  Lock held on entry and on return. */
static void refill(sl_pool *p)
{
    entry *e;

    p->pass++;
    for (e = p->entries; e && !p->closed;) {
        int n = refill_need(p, e, sl_now_ns()), made, failed;
        sluice_error err;

        if (n <= 0 || (n = reserve(p, e, n)) == 0) {
            e = e->next;
            continue;
        }
        e->refill_pass = p->pass;
        e->pins++;
        pthread_mutex_unlock(&p->lock);
        sl_err_clear(&err);
        made = fill(p, e, e->kept, n, sl_deadline_in_ms(p->cfg.refill_timeout_ms ? p->cfg.refill_timeout_ms : 5000), &err);
        pthread_mutex_lock(&p->lock);
        failed = made < n;
        if (!failed)
            e->refill_fails = 0;
        else if (e->refill_fails++ < 9)    /* 100 ms doubling, up to 30 s */
            e->refill_at = sl_now_ns() + (100 * 1000000LL << (e->refill_fails - 1));
        else
            e->refill_at = sl_now_ns() + 30000 * 1000000LL;
        if (failed && e->refill_fails == 1) {
            pthread_mutex_unlock(&p->lock);
            SL_WARN("pool: keeping %d idle for '%s' failed: %s; retrying with backoff",
                    p->cfg.min_idle_per_key, e->key, err.msg[0] ? err.msg : "create failed");
            pthread_mutex_lock(&p->lock);
        }
        entry_unpin(p, e);
        e = p->entries;     /* the list may have changed; tried keys are skipped */
    }
}

/* Takes the resources idle for a refill period or more off the idle
 * lists to ask ops->alive about them outside the lock (ones used since
 * are left alone: they stay in use for checkouts); the usable ones go
 * back as the least recently used, the others are destroyed (STALE).
 * Lock held on entry and on return. */
static void probe_idle(sl_pool *p)
{
    item *it, *newer, *list = NULL, *dead = NULL, *next;
    int64_t now = sl_now_ns();

    for (it = p->idle_old; it; it = newer) {
        newer = it->newer;
        if (now - it->idle_since < SL_POOL_REFILL_NS)
            continue;
        idle_remove(p, it);
        it->probing = 1;
        it->ent->probing++;
        it->next = list;
        list = it;          /* newest first */
    }
    if (!list)
        return;
    pthread_mutex_unlock(&p->lock);
    for (it = list; it; it = it->next)
        it->reason = p->ops.alive(p->ctx, it->pub.res) ? -1 : SLUICE_CLOSE_STALE;
    pthread_mutex_lock(&p->lock);
    for (it = list; it; it = next) {
        next = it->next;
        it->probing = 0;
        it->ent->probing--;
        if (it->reason < 0 && !p->closed) {
            idle_append(p, it);     /* newest first: the oldest ends at the bottom */
            continue;
        }
        if (it->reason < 0)
            it->reason = SLUICE_CLOSE_SHUTDOWN;
        it->ent->c.closed[it->reason]++;
        it->next = dead;
        dead = it;
    }
    if (p->idle && p->wq.head)
        sl_waitq_watch(&p->wq);
    if (dead) {
        pthread_mutex_unlock(&p->lock);
        destroy_list(p, dead);
        pthread_mutex_lock(&p->lock);
    }
}

/* How often the sweeper looks: a quarter of the shortest expiry, between
 * 250 ms and 1 s, so an idle resource goes within idle_timeout + 1 s; with
 * a warm minimum, every SL_POOL_REFILL_NS. */
static int64_t sweep_period_ns(const sl_pool_cfg *c)
{
    int ms = c->idle_timeout_ms;

    if (c->min_idle_per_key)
        return SL_POOL_REFILL_NS;
    if (c->max_lifetime_ms && (!ms || c->max_lifetime_ms < ms))
        ms = c->max_lifetime_ms;
    ms /= 4;
    ms = ms < 250 ? 250 : ms > 1000 ? 1000 : ms;
    return (int64_t)ms * 1000000;
}

static void *sweeper_main(void *arg)
{
    sl_pool *p = arg;
    int64_t period = sweep_period_ns(&p->cfg);

    pthread_mutex_lock(&p->lock);
    while (!p->closed) {
        struct timespec ts = sl_deadline_timespec(sl_now_ns() + period);
        item *list;
        pthread_cond_timedwait(&p->sweep_cond, &p->lock, &ts);
        if (p->closed)
            break;
        list = collect_expired(p, sl_now_ns());
        if (list) {
            pthread_mutex_unlock(&p->lock);
            destroy_list(p, list);
            pthread_mutex_lock(&p->lock);
        }
        if (p->cfg.min_idle_per_key && !p->closed) {
            if (p->ops.alive)
                probe_idle(p);
            refill(p);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------ */

static int check_cfg(const sl_pool_cfg *c, const sl_pool_ops *ops, sluice_error *err)
{
    if (!ops || !ops->create || !ops->destroy)
        return sl_err(err, SLUICE_EINVAL, "pool ops need create and destroy");
    if (c->max_total < 0 || c->max_per_key < 0 || c->idle_timeout_ms < 0 ||
        c->max_lifetime_ms < 0 || c->min_idle_per_key < 0 || c->refill_timeout_ms < 0)
        return sl_err(err, SLUICE_EINVAL,
                      "pool limits must not be negative (max_total %d, max_per_key %d, "
                      "idle_timeout_ms %d, max_lifetime_ms %d)",
                      c->max_total, c->max_per_key, c->idle_timeout_ms, c->max_lifetime_ms);
    return 0;
}

static int init_sync(sl_pool *p, sluice_error *err)
{
    if (pthread_condattr_init(&p->cattr) != 0)
        return sl_err(err, SLUICE_ENOMEM, "cannot make pool condition attributes");
    if (pthread_condattr_setclock(&p->cattr, CLOCK_MONOTONIC) != 0 ||
        pthread_mutex_init(&p->lock, NULL) != 0) {
        pthread_condattr_destroy(&p->cattr);
        return sl_err(err, SLUICE_ENOMEM, "cannot make the pool lock");
    }
    if (pthread_cond_init(&p->sweep_cond, &p->cattr) != 0) {
        pthread_mutex_destroy(&p->lock);
        pthread_condattr_destroy(&p->cattr);
        return sl_err(err, SLUICE_ENOMEM, "cannot make the pool sweeper's condition variable");
    }
    return 0;
}

static void fini_sync(sl_pool *p)
{
    pthread_cond_destroy(&p->sweep_cond);
    pthread_mutex_destroy(&p->lock);
    pthread_condattr_destroy(&p->cattr);
}

static int start_sweeper(sl_pool *p, sluice_error *err)
{
    /* Nothing ever expires without a timeout or a lifetime. */
    if (!p->cfg.housekeeping ||
        (!p->cfg.idle_timeout_ms && !p->cfg.max_lifetime_ms && !p->cfg.min_idle_per_key))
        return 0;
    if (pthread_create(&p->sweeper, NULL, sweeper_main, p) != 0)
        return sl_err(err, SLUICE_ENOMEM, "cannot start the pool housekeeping thread");
    p->sweeper_running = 1;
    return 0;
}

sl_pool *sl_pool_new(const sl_pool_cfg *cfg, const sl_pool_ops *ops, void *ctx, sluice_error *err)
{
    static const sl_pool_cfg defaults;
    sl_pool *p;

    if (!cfg)
        cfg = &defaults;
    if (check_cfg(cfg, ops, err) != 0)
        return NULL;
    p = sl_calloc(1, sizeof *p);
    if (!p || !(p->tab = sl_calloc(16, sizeof *p->tab))) {
        sl_free(p);
        sl_err(err, SLUICE_ENOMEM, "no memory for a pool");
        return NULL;
    }
    p->tab_cap = 16;
    p->seed = sl_rand64();
    p->cfg = *cfg;
    p->per_key = cfg->max_per_key ? cfg->max_per_key : cfg->max_total;
    /* Never more kept warm than may stay idle. */
    if (cfg->max_idle_per_key < 0)
        p->cfg.min_idle_per_key = 0;
    else if (cfg->max_idle_per_key && p->cfg.min_idle_per_key > cfg->max_idle_per_key)
        p->cfg.min_idle_per_key = cfg->max_idle_per_key;
    sl_waitq_init(&p->wq, cfg->barge_ns == 0 ? SL_WAITQ_BOUND_NS : cfg->barge_ns);
    p->ops = *ops;
    p->ctx = ctx;
    if (init_sync(p, err) != 0) {
        sl_free(p->tab);
        sl_free(p);
        return NULL;
    }
    if (start_sweeper(p, err) != 0) {
        fini_sync(p);
        sl_free(p->tab);
        sl_free(p);
        return NULL;
    }
    if (fork_register(p, err) != 0) {
        sl_pool_close(p);
        fini_sync(p);
        sl_free(p->tab);
        sl_free(p);
        return NULL;
    }
    return p;
}

/* Wakes every waiter with SLUICE_ECLOSED and takes every idle resource off
 * the lists.  Lock held. */
static item *shut_down(sl_pool *p)
{
    item *list = NULL, *it;

    p->closed = 1;
    while (p->wq.head)
        finish(p, (waiter *)p->wq.head, W_CLOSED);
    while ((it = p->idle_new)) {
        idle_remove(p, it);
        it->reason = SLUICE_CLOSE_SHUTDOWN;
        it->ent->c.closed[SLUICE_CLOSE_SHUTDOWN]++;
        it->next = list;
        list = it;
    }
    pthread_cond_broadcast(&p->sweep_cond);
    return list;
}

void sl_pool_close(sl_pool *p)
{
    item *list;
    int join;

    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    list = shut_down(p);
    join = p->sweeper_running;
    p->sweeper_running = 0;
    pthread_mutex_unlock(&p->lock);
    if (join) {
        /* A destroy callback closing its own pool runs on the sweeper. */
        if (pthread_equal(pthread_self(), p->sweeper))
            pthread_detach(p->sweeper);
        else
            pthread_join(p->sweeper, NULL);
    }
    destroy_list(p, list);
}

void sl_pool_free(sl_pool *p)
{
    entry *e, *next;
    int out;

    if (!p)
        return;
    sl_pool_close(p);
    pthread_mutex_lock(&p->lock);
    out = p->slots;
    pthread_mutex_unlock(&p->lock);
    if (out)
        SL_WARN("pool freed with %d resources still checked out or being created", out);
    fork_unregister(p);
    for (e = p->entries; e; e = next) {
        next = e->next;
        if (e->kept)
            p->cfg.arg_drop(p->ctx, e->kept);
        sl_free(e->key);
        sl_free(e);
    }
    fini_sync(p);
    sl_free(p->tab);
    sl_free(p);
}

/* ---- statistics ----------------------------------------------------------- */

static void add_counts(const counters *c, struct sluice_pool_stats *s)
{
    int i;

    s->created += c->created;
    s->reused += c->reused;
    s->timeouts += c->timeouts;
    s->wait_us_total += c->wait_us_total;
    for (i = 0; i < SLUICE_CLOSE_REASONS_; i++)
        s->closed[i] += c->closed[i];
}

static void add_stats(const entry *e, struct sluice_pool_stats *s)
{
    s->open += e->idle + e->probing + e->in_use;
    s->idle += e->idle + e->probing;
    s->in_use += e->in_use;
    s->waiting += e->waiting;
    add_counts(&e->c, s);
}

/* The wait histogram's summary into the stats. */
static void put_waits(const sl_wait_hist *h, struct sluice_pool_stats *s)
{
    s->waited = atomic_load_explicit(&h->n, memory_order_relaxed);
    s->wait_p50_us = sl_wait_hist_quantile(h, 0.5);
    s->wait_p99_us = sl_wait_hist_quantile(h, 0.99);
    s->wait_max_us = atomic_load_explicit(&h->max_us, memory_order_relaxed);
}

void sl_pool_stats(sl_pool *p, const char *key, struct sluice_pool_stats *out)
{
    const entry *e;
    sl_wait_hist hist, *h = &hist;   /* 1.2 KiB; exports must not allocate */

    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p)
        return;
    memset(h, 0, sizeof *h);
    pthread_mutex_lock(&p->lock);
    if (key) {
        e = entry_find(p, key, hash_key(p, key));
        if (e) {
            add_stats(e, out);
            sl_wait_hist_merge(h, &e->waits);
            out->peak_in_use = e->peak_in_use;
        }
    } else {
        for (e = p->entries; e; e = e->next) {
            add_stats(e, out);
            sl_wait_hist_merge(h, &e->waits);
        }
        add_counts(&p->retired, out);
        sl_wait_hist_merge(h, &p->retired_waits);
        out->peak_in_use = p->peak_in_use;
    }
    pthread_mutex_unlock(&p->lock);
    put_waits(h, out);
}

void sl_pool_foreach_key(sl_pool *p,
                         void (*fn)(void *ud, const char *key, const struct sluice_pool_stats *s),
                         void *ud)
{
    entry *e, *next;

    if (!p || !fn)
        return;
    /* One entry at a time, pinned across the unlocked callback so that it
     * and its place in the list (where `next` is read) stay; new entries go
     * to the front, behind the walk. */
    pthread_mutex_lock(&p->lock);
    if ((e = p->entries))
        e->pins++;
    while (e) {
        struct sluice_pool_stats s;
        memset(&s, 0, sizeof s);
        add_stats(e, &s);
        s.peak_in_use = e->peak_in_use;
        put_waits(&e->waits, &s);
        pthread_mutex_unlock(&p->lock);
        fn(ud, e->key, &s);
        pthread_mutex_lock(&p->lock);
        /* The next one is pinned before this one lets go: unpinning may
         * free the oldest unused entries, and `next` may be one. */
        if ((next = e->next))
            next->pins++;
        entry_unpin(p, e);
        e = next;
    }
    pthread_mutex_unlock(&p->lock);
}

size_t sl_pool_keys(sl_pool *p)
{
    size_t n;

    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    n = p->nkeys;
    pthread_mutex_unlock(&p->lock);
    return n;
}

size_t sl_pool_usage(sl_pool *p, const char *key, struct sluice_pool_usage *out, size_t cap)
{
    const item *it;
    int64_t now = sl_now_ns();
    size_t n = 0;

    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    for (it = p->all_old; it; it = it->anewer) {
        struct sluice_pool_usage *u = n < cap ? &out[n] : NULL;
        if (key && strcmp(it->ent->key, key) != 0)
            continue;
        n++;
        if (!u)
            continue;
        u->res = it->pub.res;
        u->checkouts = it->pub.uses;
        u->age_ms = (now - it->pub.created_ns) / 1000000;
        /* Off the idle lists and not idle: checked out (or being probed). */
        u->in_use = !it->is_idle && !it->probing;
        u->idle_ms = u->in_use ? 0 : (now - it->idle_since) / 1000000;
    }
    pthread_mutex_unlock(&p->lock);
    return n;
}

void sl_pool_uses_spread(sl_pool *p, uint64_t *min, uint64_t *median, uint64_t *max)
{
    sl_wait_hist hist, *h = &hist;    /* on the stack: stats must not allocate */
    const item *it;
    uint64_t lo = UINT64_MAX, hi = 0;

    *min = *median = *max = 0;
    if (!p)
        return;
    memset(h, 0, sizeof *h);
    pthread_mutex_lock(&p->lock);
    for (it = p->all_old; it; it = it->anewer) {
        uint64_t u = it->pub.uses;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        sl_wait_hist_add(h, u);
    }
    pthread_mutex_unlock(&p->lock);
    if (hi == 0 && lo == UINT64_MAX)
        return;
    *min = lo;
    *max = hi;
    *median = sl_wait_hist_quantile(h, 0.5);
    if (*median < lo)
        *median = lo;
}
