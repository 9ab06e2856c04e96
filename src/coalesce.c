/* The in-flight table (singleflight): concurrent calls with the same key
 * share one run of the leader's function and its result.  See coalesce.h
 * for the locking and ownership contract. */
#include <limits.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "coalesce.h"
#include "error.h"
#include "futex.h"
#include "log.h"

#define NSTRIPES 16              /* power of two; top hash bits pick one */
#define INITIAL_BUCKETS 8        /* per stripe; power of two */

typedef struct flight {
    struct flight *next;         /* bucket chain or sweep list; stripe lock */
    sluice_flight_release_fn release;   /* a copy: results may outlive the table */
    atomic_int refs;             /* leader, followers, window (coalesce.h) */
    _Atomic uint32_t done;       /* result published (set under the stripe lock);
                                    followers sleep on it */
    int cached;                  /* serving as a window entry; stripe lock */
    struct flight *older, *newer;   /* the window's age list; stripe lock */
    size_t bytes;                /* a window entry's memory, for the bound */
    int waiters;                 /* followers that joined; stripe lock */
    int64_t expires;             /* end of the window (monotonic ns) */
    pthread_t leader;
    sl_flight_key key;           /* the leader's, or own_key's bytes in the window */
    unsigned char *own_key;
    int code;                    /* written once before done, then read-only */
    void *value;
} flight;

/* Where a flight's shared value begins (value_size bytes; coalesce.h). */
#define VALUE_OFFSET \
    ((sizeof(flight) + alignof(max_align_t) - 1) / alignof(max_align_t) * alignof(max_align_t))

typedef struct stripe {
    sl_lock lock;
    flight **buckets;
    size_t nbuckets;
    size_t count;                /* flights linked in this stripe */
    size_t cached;               /* of which window entries */
    size_t cached_bytes;         /* their memory, at most max_bytes / NSTRIPES */
    flight *oldest, *newest;     /* window entries by the time they entered */
    uint64_t evictions;          /* entries dropped for the bound (a statistic) */
    uint64_t flights;            /* leaders so far (a statistic) */
    flight *spare;               /* a finished flight kept for the next one */
} stripe;

struct sluice_coalescer {
    sluice_flight_release_fn release;
    size_t value_size;
    size_t stripe_max_bytes;     /* the window's bound, a sixteenth each */
    uint64_t seed;
    stripe stripes[NSTRIPES];
    atomic_uint_fast64_t followers, cache_hits, timeouts, waiting;
};

static stripe *stripe_of(sluice_coalescer *co, uint64_t h)
{
    return &co->stripes[h >> 60 & (NSTRIPES - 1)];
}

/* ---- flights ------------------------------------------------------------ */

static void *value_of(flight *f)
{
    return (char *)f + VALUE_OFFSET;
}

/* A flight for the key, led by this thread: the stripe's spare when there
 * is one.  The key stays the caller's until the flight enters the window.
 * Stripe lock held. */
static flight *flight_new(sluice_coalescer *co, stripe *s, const sl_flight_key *key)
{
    flight *f = s->spare;

    if (f)
        s->spare = NULL;
    else if (!(f = sl_malloc(VALUE_OFFSET + co->value_size)))
        return NULL;
    f->next = NULL;
    f->release = co->release;
    atomic_init(&f->refs, 1);
    atomic_store_explicit(&f->done, 0, memory_order_relaxed);
    f->cached = 0;           /* older, newer, bytes: set as it enters the window */
    f->waiters = 0;
    f->expires = 0;
    f->leader = pthread_self();
    f->key = *key;
    f->own_key = NULL;
    f->code = 0;
    f->value = NULL;
    return f;
}

/* Drops one reference; the last one releases the value and frees the
 * flight.  Never called with a stripe lock held (release() is the user's
 * code).  Touches nothing of the coalescer, which may be gone. */
static void flight_unref(flight *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (f->value && f->release)
        f->release(f->value);
    sl_free(f->own_key);
    sl_free(f);
}

/* Drops the references of a list of flights unlinked from the table. */
static void unref_list(flight *f)
{
    while (f) {
        flight *next = f->next;
        flight_unref(f);
        f = next;
    }
}

/* ---- the table (stripe lock held) ---------------------------------------- */

static flight **bucket_of(stripe *s, uint64_t h)
{
    return &s->buckets[h & (s->nbuckets - 1)];
}

/* Unlinks *pp (a window entry) from its bucket and the age list, and
 * pushes it on *dead for an unref after the lock is dropped. */
static void unlink_cached(stripe *s, flight **pp, flight **dead)
{
    flight *f = *pp;

    *pp = f->next;
    if (f->older)
        f->older->newer = f->newer;
    else
        s->oldest = f->newer;
    if (f->newer)
        f->newer->older = f->older;
    else
        s->newest = f->older;
    f->next = *dead;
    *dead = f;
    s->count--;
    s->cached--;
    s->cached_bytes -= f->bytes;
}

/* Unlinks the oldest window entry onto *dead. */
static void drop_oldest(stripe *s, flight **dead)
{
    flight **pp = bucket_of(s, s->oldest->key.hash);

    while (*pp != s->oldest)
        pp = &(*pp)->next;
    unlink_cached(s, pp, dead);
}

/* Frees what the window no longer serves: expired entries at the old end
 * (one window length is shared by a client's calls, so they mostly expire
 * in the order they entered; a shorter one behind a longer one waits for
 * it), then the oldest while the stripe is past its bound. */
static void expire(sluice_coalescer *co, stripe *s, int64_t now, flight **dead)
{
    while (s->oldest && now >= s->oldest->expires)
        drop_oldest(s, dead);
    while (s->oldest && s->cached_bytes > co->stripe_max_bytes) {
        drop_oldest(s, dead);
        s->evictions++;
    }
}

/* Two keys whose hashes met: equal when their bytes are, or when their
 * equal() says so.  Neither allocates nor copies (coalesce.h). */
static int keys_equal(const sl_flight_key *a, const sl_flight_key *b)
{
    if (a->ops != b->ops)
        return 0;
    if (a->ops)
        return a->ops->equal(a->ctx, b->ctx);
    return a->len == b->len && (!a->len || memcmp(a->bytes, b->bytes, a->len) == 0);
}

/* The live flight for the key, or NULL.  An expired window entry met on the
 * way is unlinked onto *dead. */
static flight *find(stripe *s, const sl_flight_key *key, int64_t now, flight **dead)
{
    flight **pp = bucket_of(s, key->hash);

    for (; *pp; pp = &(*pp)->next) {
        flight *f = *pp;
        if (f->key.hash != key->hash || !keys_equal(&f->key, key))
            continue;
        if (f->cached && now >= f->expires) {
            unlink_cached(s, pp, dead);
            return NULL;
        }
        return f;
    }
    return NULL;
}

/* Doubles the buckets when chains grow past one flight on average.  Out of
 * memory keeps the old size: slower chains, nothing lost. */
static void maybe_grow(stripe *s)
{
    size_t n = s->nbuckets * 2, i;
    flight **b;

    if (s->count <= s->nbuckets || n > SIZE_MAX / sizeof *b)
        return;
    b = sl_calloc(n, sizeof *b);
    if (!b)
        return;
    for (i = 0; i < s->nbuckets; i++) {
        flight *f = s->buckets[i];
        while (f) {
            flight *next = f->next;
            f->next = b[f->key.hash & (n - 1)];
            b[f->key.hash & (n - 1)] = f;
            f = next;
        }
    }
    sl_free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static void insert(sluice_coalescer *co, stripe *s, flight *f, int64_t now, flight **dead)
{
    flight **b = bucket_of(s, f->key.hash);

    f->next = *b;
    *b = f;
    s->count++;
    if (s->oldest)
        expire(co, s, now, dead);
    maybe_grow(s);
}

/* Makes f the newest window entry, of `bytes` in all. */
static void enter_window(stripe *s, flight *f, size_t bytes, int64_t expires)
{
    f->cached = 1;
    f->expires = expires;
    f->bytes = bytes;
    f->older = s->newest;
    f->newer = NULL;
    if (s->newest)
        s->newest->newer = f;
    else
        s->oldest = f;
    s->newest = f;
    s->cached++;
    s->cached_bytes += bytes;
}

static void unlink_flight(stripe *s, flight *f)
{
    flight **pp = bucket_of(s, f->key.hash);

    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    f->next = NULL;
    s->count--;
}

/* ---- the three kinds of caller ------------------------------------------ */

static int fill(sluice_flight_result *out, flight *f, int shared)
{
    out->code = f->code;
    out->value = f->value;
    out->shared = shared;
    out->internal_ = f;
    return f->code;
}

/* A copy of the key standing alone, for a window entry that outlives its
 * leader's call: *own holds it (NULL for an empty key of bytes), *size
 * counts its bytes.  0, or -1 when out of memory.  Reads the key only:
 * joiners read it too.  No lock held. */
static int key_copy(const sl_flight_key *k, sl_flight_key *copy, unsigned char **own,
                    size_t *size)
{
    *copy = *k;
    *own = NULL;
    *size = 0;
    if (k->ops) {
        if (!(*own = k->ops->copy(k->ctx, size)))
            return -1;
        copy->ctx = *own;
    } else if (k->len) {
        if (!(*own = sl_malloc(k->len)))
            return -1;
        memcpy(*own, k->bytes, k->len);
        copy->bytes = *own;
        *size = k->len;
    }
    return 0;
}

/* What a result entering the window needs, made before the stripe lock
 * is taken: the key's own copy, the entry's bytes and the time. */
typedef struct entry_prep {
    sl_flight_key key;
    unsigned char *own;
    size_t bytes;
    int64_t now;
} entry_prep;

/* 0, or -1 when out of memory (the result is then served once, not kept). */
static int prepare_entry(sluice_coalescer *co, const flight *f, entry_prep *e)
{
    if (key_copy(&f->key, &e->key, &e->own, &e->bytes) != 0)
        return -1;
    e->now = sl_now_ns();
    e->bytes += VALUE_OFFSET + co->value_size;
    return 0;
}

/* Makes f a window entry when it fits the bound (1), else 0.  Stripe lock
 * held. */
static int keep_entry(sluice_coalescer *co, stripe *s, flight *f, entry_prep *e, int window_ms,
                      flight **dead)
{
    if (e->bytes > co->stripe_max_bytes)
        return 0;
    f->key = e->key;
    f->own_key = e->own;
    e->own = NULL;
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    enter_window(s, f, e->bytes, e->now + (int64_t)window_ms * 1000000);
    expire(co, s, e->now, dead);
    return 1;
}

/* Publishes a leader's result: into the window when keep (with its own
 * copy of the key: the caller's goes when the leader returns), else out of
 * the table, and wakes the followers.  A flight nobody else holds goes back
 * to the stripe as its spare. */
int sl_flight_end(sluice_coalescer *co, sl_flight_lead *lead, int code, void *value, int keep,
                  int window_ms, sl_flight_share_fn share, void *ctx, sluice_flight_result *out)
{
    stripe *s = lead->stripe_;
    flight *f = lead->flight_, *dead = NULL;
    entry_prep e = {.own = NULL};
    int shared, wake;

    keep = keep && window_ms > 0 && prepare_entry(co, f, &e) == 0;
    sl_lock_acquire(&s->lock);
    /* Followers take references under this lock, so a flight only its
     * leader holds cannot be reached by anyone once it leaves the table. */
    /* Acquire: a follower that timed out is done with f before its drop. */
    shared = keep || out || atomic_load_explicit(&f->refs, memory_order_acquire) > 1;
    if (shared && share && co->value_size) {
        e.bytes += share(ctx, value_of(f));
        value = value_of(f);
    }
    f->code = code;
    f->value = shared ? value : NULL;
    atomic_store_explicit(&f->done, 1, memory_order_release);
    if (!keep || !keep_entry(co, s, f, &e, window_ms, &dead))
        unlink_flight(s, f);
    wake = shared && f->waiters;
    if (!shared && !s->spare) {
        s->spare = f;
        f = NULL;
    }
    sl_lock_release(&s->lock);
    if (e.own)
        sl_free(e.own);     /* a copy the bound left out */
    if (dead)
        unref_list(dead);
    if (!shared) {
        if (f)
            sl_free(f);
        return 0;
    }
    if (wake)               /* the leader's reference keeps f alive */
        sl_futex_wake(&f->done, INT_MAX);
    if (out)
        fill(out, f, 0);    /* the leader's reference goes to its result */
    else
        flight_unref(f);
    return 1;
}

/* Waits for the leader; called with the stripe lock held, returns with it
 * released.  Sleeps on the flight's done word, outside the lock.  A
 * follower that times out drops its reference and leaves the leader
 * alone. */
static int follow(sluice_coalescer *co, stripe *s, flight *f, int64_t deadline,
                  sluice_flight_result *out)
{
    int timed_out = 0;

    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    f->waiters++;
    sl_lock_release(&s->lock);
    atomic_fetch_add_explicit(&co->waiting, 1, memory_order_relaxed);
    while (!atomic_load_explicit(&f->done, memory_order_acquire) && !timed_out)
        timed_out = sl_futex_wait(&f->done, 0, deadline);
    atomic_fetch_sub_explicit(&co->waiting, 1, memory_order_relaxed);
    if (atomic_load_explicit(&f->done, memory_order_acquire)) {
        atomic_fetch_add_explicit(&co->followers, 1, memory_order_relaxed);
        return fill(out, f, 1);
    }
    atomic_fetch_add_explicit(&co->timeouts, 1, memory_order_relaxed);
    flight_unref(f);
    out->code = SLUICE_ETIMEDOUT;
    return SLUICE_ETIMEDOUT;
}

/* A finished flight still in the table is a window entry. */
static int serve_cached(sluice_coalescer *co, stripe *s, flight *f, sluice_flight_result *out)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    sl_lock_release(&s->lock);
    atomic_fetch_add_explicit(&co->cache_hits, 1, memory_order_relaxed);
    return fill(out, f, 1);
}

/* ---- entry points ------------------------------------------------------- */

uint64_t sl_coalesce_seed(const sluice_coalescer *co)
{
    return co->seed;
}

int sl_flight_begin(sluice_coalescer *co, const sl_flight_key *key, const sl_flight_opts *o,
                    sl_flight_lead *lead, sluice_flight_result *out)
{
    flight *f, *dead = NULL;
    int64_t now = 0;
    stripe *s;
    int leads = 0;

    if (!out)
        return 0;
    *out = (sluice_flight_result){0};
    if (!co || !key || !o || !lead || (!key->ops && !key->bytes && key->len)) {
        out->code = SLUICE_EINVAL;
        return 0;
    }
    s = stripe_of(co, key->hash);
    sl_lock_acquire(&s->lock);
    if (s->oldest)
        now = sl_now_ns();
    f = find(s, key, now, &dead);
    if (f && atomic_load_explicit(&f->done, memory_order_relaxed)) {
        serve_cached(co, s, f, out);
    } else if (f && pthread_equal(f->leader, pthread_self())) {
        sl_lock_release(&s->lock);
        SL_WARN("coalesce: a flight asked for the key it is leading");
        out->code = SLUICE_EINVAL;
    } else if (f) {
        follow(co, s, f, o->deadline, out);
    } else if (!(f = flight_new(co, s, key))) {
        sl_lock_release(&s->lock);
        out->code = SLUICE_ENOMEM;
    } else {
        insert(co, s, f, now, &dead);
        s->flights++;
        sl_lock_release(&s->lock);
        *lead = (sl_flight_lead){f, s};
        leads = 1;
    }
    unref_list(dead);
    return leads;
}

int sl_coalesce_key(sluice_coalescer *co, const sl_flight_key *key, const sl_flight_opts *o,
                    sluice_flight_fn fn, void *arg, sluice_flight_result *out)
{
    sl_flight_lead lead;
    void *value = NULL;
    int code, keep;

    if (out && !fn) {
        *out = (sluice_flight_result){SLUICE_EINVAL, NULL, 0, NULL};
        return SLUICE_EINVAL;
    }
    if (!sl_flight_begin(co, key, o, &lead, out))
        return out ? out->code : SLUICE_EINVAL;
    code = fn(arg, &value);
    keep = o->window_ms > 0 && (o->cacheable ? o->cacheable(code, value) : code == 0);
    sl_flight_end(co, &lead, code, value, keep, o->window_ms, NULL, NULL, out);
    return code;
}

void sl_coalesce_stats(sluice_coalescer *co, struct sl_coalesce_stats *out)
{
    int i;

    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!co)
        return;
    for (i = 0; i < NSTRIPES; i++) {
        sl_lock_acquire(&co->stripes[i].lock);
        out->flights += co->stripes[i].flights;
        out->cache_entries += co->stripes[i].cached;
        out->cache_bytes += co->stripes[i].cached_bytes;
        out->cache_evictions += co->stripes[i].evictions;
        sl_lock_release(&co->stripes[i].lock);
    }
    out->followers = atomic_load_explicit(&co->followers, memory_order_relaxed);
    out->cache_hits = atomic_load_explicit(&co->cache_hits, memory_order_relaxed);
    out->timeouts = atomic_load_explicit(&co->timeouts, memory_order_relaxed);
    out->waiting = atomic_load_explicit(&co->waiting, memory_order_relaxed);
}

int sl_coalesce(sluice_coalescer *co, const void *key, size_t keylen, const sl_flight_opts *o,
                sluice_flight_fn fn, void *arg, sluice_flight_result *out)
{
    sl_flight_key k = {0, key, keylen, NULL, NULL};

    if (co && (key || !keylen))
        k.hash = sl_hash_bytes(co->seed, key, keylen);
    return sl_coalesce_key(co, &k, o, fn, arg, out);
}

int sluice_coalesce(sluice_coalescer *co, const void *key, size_t keylen, int timeout_ms,
                    sluice_flight_fn fn, void *arg, sluice_flight_result *out)
{
    sl_flight_opts o = {sl_deadline_in_ms(timeout_ms), 0, NULL};

    return sl_coalesce(co, key, keylen, &o, fn, arg, out);
}

void sluice_flight_result_release(sluice_flight_result *r)
{
    flight *f;

    if (!r)
        return;
    f = r->internal_;
    r->internal_ = NULL;
    r->value = NULL;
    if (f)
        flight_unref(f);
}

/* ---- life cycle --------------------------------------------------------- */

static void free_stripes(sluice_coalescer *co, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        stripe *s = &co->stripes[i];
        sl_free(s->spare);
        sl_free(s->buckets);
    }
}

static int init_stripes(sluice_coalescer *co)
{
    int i;

    for (i = 0; i < NSTRIPES; i++) {
        stripe *s = &co->stripes[i];
        s->buckets = sl_calloc(INITIAL_BUCKETS, sizeof *s->buckets);
        if (!s->buckets) {
            free_stripes(co, i);
            return -1;
        }
        sl_lock_init(&s->lock);
        s->nbuckets = INITIAL_BUCKETS;
    }
    return 0;
}

sluice_coalescer *sl_coalescer_new(sluice_flight_release_fn release, size_t value_size,
                                   size_t max_bytes, sluice_error *err)
{
    sluice_coalescer *co;

    if (value_size > SIZE_MAX / 2) {
        sl_err(err, SLUICE_EINVAL, "coalescer: value size %zu is too large", value_size);
        return NULL;
    }
    if (!(co = sl_calloc(1, sizeof *co))) {
        sl_err(err, SLUICE_ENOMEM, "coalescer: out of memory for the table");
        return NULL;
    }
    if (init_stripes(co) != 0) {
        sl_free(co);
        sl_err(err, SLUICE_ENOMEM, "coalescer: out of memory for the table's buckets");
        return NULL;
    }
    co->release = release;
    co->value_size = value_size;
    co->stripe_max_bytes = (max_bytes ? max_bytes : SL_COALESCE_DEFAULT_MAX_BYTES) / NSTRIPES;
    co->seed = sl_rand64();
    return co;
}

sluice_coalescer *sluice_coalescer_new(sluice_flight_release_fn release, sluice_error *err)
{
    return sl_coalescer_new(release, 0, 0, err);
}

/* Drops the window entries of one stripe.  A flight still in progress
 * here breaks the documented contract. */
static void drain_stripe(stripe *s, flight **dead)
{
    size_t i;

    for (i = 0; i < s->nbuckets; i++) {
        flight **pp = &s->buckets[i];
        while (*pp) {
            if ((*pp)->cached) {
                unlink_cached(s, pp, dead);
            } else {
                SL_ERROR("coalescer freed with a flight in progress");
                pp = &(*pp)->next;
            }
        }
    }
}

void sluice_coalescer_free(sluice_coalescer *co)
{
    flight *dead = NULL;
    int i;

    if (!co)
        return;
    for (i = 0; i < NSTRIPES; i++) {
        sl_lock_acquire(&co->stripes[i].lock);
        drain_stripe(&co->stripes[i], &dead);
        sl_lock_release(&co->stripes[i].lock);
    }
    unref_list(dead);
    free_stripes(co, NSTRIPES);
    sl_free(co);
}
