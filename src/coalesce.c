/* The in-flight table (singleflight): concurrent calls with the same key
 * share one run of the leader's function and its result.  See coalesce.h
 * for the locking and ownership contract. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "coalesce.h"
#include "error.h"
#include "log.h"

#define NSTRIPES 16              /* power of two; top hash bits pick one */
#define INITIAL_BUCKETS 8        /* per stripe; power of two */

typedef struct flight {
    struct flight *next;         /* bucket chain or sweep list; stripe lock */
    uint64_t hash;
    atomic_int refs;             /* leader, followers, window (coalesce.h) */
    int done;                    /* result published; stripe lock */
    int cached;                  /* serving as a window entry; stripe lock */
    int64_t expires;             /* end of the window (monotonic ns) */
    pthread_t leader;
    pthread_cond_t cv;           /* broadcast on done, with the stripe lock */
    int code;                    /* written once before done, then read-only */
    void *value;
    sluice_flight_release_fn release;
    size_t keylen;
    unsigned char key[];
} flight;

typedef struct stripe {
    pthread_mutex_t mu;
    flight **buckets;
    size_t nbuckets;
    size_t count;                /* flights linked in this stripe */
    size_t cached;               /* of which window entries */
    size_t inserts;              /* since the last sweep */
} stripe;

struct sluice_coalescer {
    sluice_flight_release_fn release;
    uint64_t seed;
    pthread_condattr_t cattr;    /* CLOCK_MONOTONIC for the flights' cvs */
    stripe stripes[NSTRIPES];
    atomic_uint_fast64_t flights, followers, cache_hits, timeouts, waiting;
};

/* ---- hashing ------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

/* Eight bytes at a time; seeded so callers cannot aim keys at one bucket. */
static uint64_t hash_key(uint64_t seed, const unsigned char *p, size_t n)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ull);
    uint64_t w;

    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ mix64(w)) * 0x9e3779b97f4a7c15ull;
    }
    w = 0;
    if (n)
        memcpy(&w, p, n);
    return mix64(h ^ mix64(w ^ n));
}

static stripe *stripe_of(sluice_coalescer *co, uint64_t h)
{
    return &co->stripes[h >> 60 & (NSTRIPES - 1)];
}

/* ---- flights ------------------------------------------------------------ */

static flight *flight_new(sluice_coalescer *co, uint64_t h, const void *key, size_t keylen)
{
    flight *f;

    if (keylen > SIZE_MAX - sizeof *f)
        return NULL;
    f = sl_malloc(sizeof *f + keylen);
    if (!f)
        return NULL;
    if (pthread_cond_init(&f->cv, &co->cattr) != 0) {
        sl_free(f);
        return NULL;
    }
    f->next = NULL;
    f->hash = h;
    atomic_init(&f->refs, 1);
    f->done = 0;
    f->cached = 0;
    f->expires = 0;
    f->leader = pthread_self();
    f->code = 0;
    f->value = NULL;
    f->release = co->release;
    f->keylen = keylen;
    if (keylen)
        memcpy(f->key, key, keylen);
    return f;
}

/* Drops one reference; the last one releases the value.  Never called with
 * a stripe lock held (release() is the user's code). */
static void flight_unref(flight *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (f->value && f->release)
        f->release(f->value);
    pthread_cond_destroy(&f->cv);
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

/* Unlinks *pp (a window entry) and pushes it on *dead for an unref after
 * the lock is dropped. */
static void unlink_cached(stripe *s, flight **pp, flight **dead)
{
    flight *f = *pp;

    *pp = f->next;
    f->next = *dead;
    *dead = f;
    s->count--;
    s->cached--;
}

/* The live flight for the key, or NULL.  An expired window entry met on the
 * way is unlinked onto *dead. */
static flight *find(stripe *s, uint64_t h, const void *key, size_t keylen, int64_t now,
                    flight **dead)
{
    flight **pp = bucket_of(s, h);

    for (; *pp; pp = &(*pp)->next) {
        flight *f = *pp;
        if (f->hash != h || f->keylen != keylen || (keylen && memcmp(f->key, key, keylen) != 0))
            continue;
        if (f->cached && now >= f->expires) {
            unlink_cached(s, pp, dead);
            return NULL;
        }
        return f;
    }
    return NULL;
}

/* Unlinks every expired window entry onto *dead.  Runs once per nbuckets
 * inserts, so its cost per insert stays constant. */
static void sweep(stripe *s, int64_t now, flight **dead)
{
    size_t i;

    s->inserts = 0;
    for (i = 0; i < s->nbuckets && s->cached; i++) {
        flight **pp = &s->buckets[i];
        while (*pp) {
            if ((*pp)->cached && now >= (*pp)->expires)
                unlink_cached(s, pp, dead);
            else
                pp = &(*pp)->next;
        }
    }
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
            f->next = b[f->hash & (n - 1)];
            b[f->hash & (n - 1)] = f;
            f = next;
        }
    }
    sl_free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static void insert(stripe *s, flight *f, int64_t now, flight **dead)
{
    flight **b = bucket_of(s, f->hash);

    f->next = *b;
    *b = f;
    s->count++;
    if (s->cached && ++s->inserts >= s->nbuckets)
        sweep(s, now, dead);
    maybe_grow(s);
}

static void unlink_flight(stripe *s, flight *f)
{
    flight **pp = bucket_of(s, f->hash);

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

/* Runs fn, then publishes its result: into the window when it qualifies,
 * else out of the table.  Waiters are woken either way. */
static int lead(stripe *s, flight *f, int window_ms,
                sl_cacheable_fn cacheable, sluice_flight_fn fn, void *arg,
                sluice_flight_result *out)
{
    void *value = NULL;
    int code = fn(arg, &value), keep;

    keep = window_ms > 0 && (cacheable ? cacheable(code, value) : code == 0);
    pthread_mutex_lock(&s->mu);
    f->code = code;
    f->value = value;
    f->done = 1;
    if (keep) {
        f->cached = 1;
        f->expires = sl_now_ns() + (int64_t)window_ms * 1000000;
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
        s->cached++;
    } else {
        unlink_flight(s, f);
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&s->mu);
    return fill(out, f, 0);
}

/* Waits for the leader with the stripe lock held; returns with it
 * released.  A follower that times out drops its reference and leaves the
 * leader alone. */
static int follow(sluice_coalescer *co, stripe *s, flight *f, int64_t deadline,
                  sluice_flight_result *out)
{
    struct timespec ts = sl_deadline_timespec(deadline);

    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&co->waiting, 1, memory_order_relaxed);
    while (!f->done) {
        if (deadline == SL_NO_DEADLINE)
            pthread_cond_wait(&f->cv, &s->mu);
        else if (pthread_cond_timedwait(&f->cv, &s->mu, &ts) == ETIMEDOUT)
            break;
    }
    atomic_fetch_sub_explicit(&co->waiting, 1, memory_order_relaxed);
    if (f->done) {
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add_explicit(&co->followers, 1, memory_order_relaxed);
        return fill(out, f, 1);
    }
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add_explicit(&co->timeouts, 1, memory_order_relaxed);
    flight_unref(f);
    out->code = SLUICE_ETIMEDOUT;
    return SLUICE_ETIMEDOUT;
}

/* A finished flight still in the table is a window entry. */
static int serve_cached(sluice_coalescer *co, stripe *s, flight *f, sluice_flight_result *out)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add_explicit(&co->cache_hits, 1, memory_order_relaxed);
    return fill(out, f, 1);
}

/* ---- entry points ------------------------------------------------------- */

int sl_coalesce(sluice_coalescer *co, const void *key, size_t keylen, int64_t deadline,
                int window_ms, sl_cacheable_fn cacheable, sluice_flight_fn fn, void *arg,
                sluice_flight_result *out)
{
    flight *f, *dead = NULL;
    int64_t now = 0;
    uint64_t h;
    stripe *s;

    if (!out)
        return SLUICE_EINVAL;
    memset(out, 0, sizeof *out);
    if (!co || !fn || (!key && keylen))
        return out->code = SLUICE_EINVAL;
    h = hash_key(co->seed, key, keylen);
    s = stripe_of(co, h);
    pthread_mutex_lock(&s->mu);
    if (s->cached)
        now = sl_now_ns();
    f = find(s, h, key, keylen, now, &dead);
    if (f && f->done) {
        serve_cached(co, s, f, out);
    } else if (f && pthread_equal(f->leader, pthread_self())) {
        pthread_mutex_unlock(&s->mu);
        SL_WARN("coalesce: a flight asked for the key it is leading (%zu key bytes)", keylen);
        out->code = SLUICE_EINVAL;
    } else if (f) {
        follow(co, s, f, deadline, out);
    } else if (!(f = flight_new(co, h, key, keylen))) {
        pthread_mutex_unlock(&s->mu);
        out->code = SLUICE_ENOMEM;
    } else {
        insert(s, f, now, &dead);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add_explicit(&co->flights, 1, memory_order_relaxed);
        unref_list(dead);
        dead = NULL;
        lead(s, f, window_ms, cacheable, fn, arg, out);
    }
    unref_list(dead);
    return out->code;
}

void sl_coalesce_stats(sluice_coalescer *co, struct sl_coalesce_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!co)
        return;
    out->flights = atomic_load_explicit(&co->flights, memory_order_relaxed);
    out->followers = atomic_load_explicit(&co->followers, memory_order_relaxed);
    out->cache_hits = atomic_load_explicit(&co->cache_hits, memory_order_relaxed);
    out->timeouts = atomic_load_explicit(&co->timeouts, memory_order_relaxed);
    out->waiting = atomic_load_explicit(&co->waiting, memory_order_relaxed);
}

int sluice_coalesce(sluice_coalescer *co, const void *key, size_t keylen, int timeout_ms,
                    sluice_flight_fn fn, void *arg, sluice_flight_result *out)
{
    return sl_coalesce(co, key, keylen, sl_deadline_in_ms(timeout_ms), 0, NULL, fn, arg, out);
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
        pthread_mutex_destroy(&co->stripes[i].mu);
        sl_free(co->stripes[i].buckets);
    }
}

static int init_stripes(sluice_coalescer *co)
{
    int i;

    for (i = 0; i < NSTRIPES; i++) {
        stripe *s = &co->stripes[i];
        s->buckets = sl_calloc(INITIAL_BUCKETS, sizeof *s->buckets);
        if (!s->buckets || pthread_mutex_init(&s->mu, NULL) != 0) {
            sl_free(s->buckets);
            free_stripes(co, i);
            return -1;
        }
        s->nbuckets = INITIAL_BUCKETS;
    }
    return 0;
}

sluice_coalescer *sluice_coalescer_new(sluice_flight_release_fn release, sluice_error *err)
{
    sluice_coalescer *co = sl_calloc(1, sizeof *co);

    if (!co) {
        sl_err(err, SLUICE_ENOMEM, "coalescer: out of memory for the table");
        return NULL;
    }
    if (pthread_condattr_init(&co->cattr) != 0 ||
        pthread_condattr_setclock(&co->cattr, CLOCK_MONOTONIC) != 0) {
        sl_free(co);
        sl_err(err, SLUICE_ENOMEM, "coalescer: cannot set up a monotonic condition variable");
        return NULL;
    }
    if (init_stripes(co) != 0) {
        pthread_condattr_destroy(&co->cattr);
        sl_free(co);
        sl_err(err, SLUICE_ENOMEM, "coalescer: out of memory for the table's buckets");
        return NULL;
    }
    co->release = release;
    co->seed = sl_rand64();
    return co;
}

/* Drops the window entries of one stripe.  A flight still in progress
 * here breaks the documented contract; it is left to its holders. */
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
        pthread_mutex_lock(&co->stripes[i].mu);
        drain_stripe(&co->stripes[i], &dead);
        pthread_mutex_unlock(&co->stripes[i].mu);
    }
    unref_list(dead);
    free_stripes(co, NSTRIPES);
    pthread_condattr_destroy(&co->cattr);
    sl_free(co);
}
