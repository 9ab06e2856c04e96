/* GCRA arithmetic and the in-process table of theoretical arrival times. */
#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "hash.h"
#include "limiter.h"
#include "sync.h"

#define NSHARDS 64
#define SHARD_BITS 6
#define INITIAL_BUCKETS 16
#define MIN_SWEEP_AT 64

/* --- GCRA ---------------------------------------------------------------- */

int sl_gcra_validate(const sluice_limit *lim, int cost, sluice_error *err)
{
    double t;

    if (!lim)
        return sl_err(err, SLUICE_EINVAL, "rate limit: the limit is NULL");
    if (!(lim->rate > 0) || !isfinite(lim->rate))
        return sl_err(err, SLUICE_EINVAL, "rate limit: rate must be a finite number > 0 (got %g)",
                      lim->rate);
    if (lim->period_ms <= 0)
        return sl_err(err, SLUICE_EINVAL, "rate limit: period_ms must be > 0 (got %d)",
                      lim->period_ms);
    if (lim->burst <= 0)
        return sl_err(err, SLUICE_EINVAL, "rate limit: burst must be > 0 (got %d)", lim->burst);
    if (cost <= 0)
        return sl_err(err, SLUICE_EINVAL, "rate limit: cost must be > 0 (got %d)", cost);
    if (cost > lim->burst)
        return sl_err(err, SLUICE_EINVAL,
                      "rate limit: cost %d exceeds burst %d, so it could never be allowed", cost,
                      lim->burst);
    t = sl_gcra_interval_us(lim);
    if (t < SL_GCRA_MIN_T_US)
        return sl_err(err, SLUICE_EINVAL,
                      "rate limit: %g per %d ms is more than one per microsecond", lim->rate,
                      lim->period_ms);
    if (t * (double)lim->burst > SL_GCRA_MAX_SPAN_US)
        return sl_err(err, SLUICE_EINVAL,
                      "rate limit: burst %d at %g per %d ms spans more than 115 days", lim->burst,
                      lim->rate, lim->period_ms);
    return 0;
}

/* floor and ceil for |x| < 2^63 (every value here is below 2^53), done
 * here so the library needs no libm; the same results as Lua's math.floor
 * and math.ceil in the script. */
static double floor_d(double x)
{
    double i = (double)(int64_t)x;

    return i > x ? i - 1 : i;
}

static double ceil_d(double x)
{
    double i = (double)(int64_t)x;

    return i < x ? i + 1 : i;
}

/* Rounded up, so that waiting this long is always enough. */
static long ceil_ms(double us)
{
    double v = ceil_d((us - SL_GCRA_TOL_US) / 1000.0);

    return v > 0 ? (long)v : 0;
}

/* A check of `cost` against `tat` (already at least now).  Returns the TAT
 * the check would store, or a negative value when denied. */
static double admit(double t, double boff, double tat, double now, int cost,
                    sluice_limit_result *r)
{
    double new_tat = tat + t * (double)cost;
    double diff = now - (new_tat - boff);

    if (diff < -SL_GCRA_TOL_US) {
        r->allowed = 0;
        r->remaining = 0;
        r->retry_after_ms = ceil_ms(-diff);
        r->reset_after_ms = ceil_ms(tat - now);
        return -1;
    }
    r->allowed = 1;
    r->remaining = (long)floor_d((diff + SL_GCRA_TOL_US) / t);
    r->retry_after_ms = -1;
    r->reset_after_ms = ceil_ms(new_tat - now);
    return new_tat;
}

double sl_gcra_interval_us(const sluice_limit *lim)
{
    return (double)lim->period_ms * 1000.0 / lim->rate;
}

int sl_gcra_eval(const sl_lim_req *rq, double now, double *tatp, sluice_limit_result *r)
{
    double t = sl_gcra_interval_us(&rq->lim);
    double boff = t * (double)rq->lim.burst;
    double tat = *tatp, new_tat;

    if (tat < now)
        tat = now;
    switch (rq->op) {
    case SL_LIM_CHECK:
        new_tat = admit(t, boff, tat, now, rq->arg, r);
        if (new_tat < 0)
            return 0;
        *tatp = new_tat;
        return 1;
    case SL_LIM_PEEK:
        admit(t, boff, tat, now, 1, r);
        return 0;
    case SL_LIM_COOLDOWN:
    default: {
        /* Denied until exactly now + ms, then one per T from empty. */
        double want = now + (double)rq->arg * 1000.0 + t * (double)(rq->lim.burst - 1);
        int changed = want > tat;

        if (changed)
            tat = want;
        admit(t, boff, tat, now, 1, r);
        if (changed)
            *tatp = tat;
        return changed;
    }
    }
}

/* --- the table ------------------------------------------------------------ */

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    double tat;            /* microseconds, monotonic clock; <= now = expired */
    size_t key_len;
    char key[];
} entry;

typedef struct shard {
    pthread_mutex_t mu;
    entry **buckets;       /* nbuckets chains, nbuckets a power of two */
    size_t nbuckets;
    size_t count;
    size_t sweep_at;       /* sweep every chain when count reaches this */
} shard;

struct sl_local {
    shard shards[NSHARDS];
    uint64_t seed;   /* of the key hash (hash.h): top bits pick the shard */
};



sl_local *sl_local_new(sluice_error *err)
{
    sl_local *t = sl_calloc(1, sizeof *t);
    int i;

    if (!t)
        goto nomem;
    t->seed = sl_rand64();
    for (i = 0; i < NSHARDS; i++) {
        shard *s = &t->shards[i];
        s->buckets = sl_calloc(INITIAL_BUCKETS, sizeof *s->buckets);
        if (!s->buckets)
            goto nomem;
        s->nbuckets = INITIAL_BUCKETS;
        s->sweep_at = MIN_SWEEP_AT;
        if (sl_mutex_init(&s->mu, "rate limiter: in-process table", err)) {
            sl_local_free(t);
            return NULL;
        }
    }
    return t;
nomem:
    sl_local_free(t);
    sl_err(err, SLUICE_ENOMEM, "rate limiter: out of memory for the in-process table");
    return NULL;
}

void sl_local_free(sl_local *t)
{
    int i;
    size_t b;

    if (!t)
        return;
    for (i = 0; i < NSHARDS; i++) {
        shard *s = &t->shards[i];
        if (!s->buckets)
            continue;
        for (b = 0; b < s->nbuckets; b++) {
            entry *e = s->buckets[b], *next;
            for (; e; e = next) {
                next = e->next;
                sl_free(e);
            }
        }
        sl_free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    sl_free(t);
}

/* Drops the expired entries of one chain.  Shard lock held. */
static void sweep_chain(shard *s, entry **link, double now)
{
    while (*link) {
        entry *e = *link;
        if (e->tat <= now) {
            *link = e->next;
            sl_free(e);
            s->count--;
        } else {
            link = &e->next;
        }
    }
}

/* Doubles the bucket array; on ENOMEM keeps the old one (chains get
 * longer, nothing breaks).  Shard lock held. */
static void grow(shard *s)
{
    size_t n = s->nbuckets * 2, b;
    entry **nb = sl_calloc(n, sizeof *nb);

    if (!nb)
        return;
    for (b = 0; b < s->nbuckets; b++) {
        entry *e = s->buckets[b], *next;
        for (; e; e = next) {
            next = e->next;
            e->next = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
        }
    }
    sl_free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
}

/* After an insert: sweep when the shard doubled since the last sweep, and
 * grow when chains average more than two entries.  Shard lock held. */
static void maintain(shard *s, double now)
{
    size_t b;

    if (s->count < s->sweep_at)
        return;
    for (b = 0; b < s->nbuckets; b++)
        sweep_chain(s, &s->buckets[b], now);
    s->sweep_at = s->count * 2 > MIN_SWEEP_AT ? s->count * 2 : MIN_SWEEP_AT;
    if (s->count > s->nbuckets * 2)
        grow(s);
}

static entry *find(entry *e, uint64_t h, const char *key, size_t len)
{
    for (; e; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

static int insert(shard *s, uint64_t h, const sl_lim_req *rq, double tat, double now)
{
    entry *e = sl_malloc(sizeof *e + rq->key_len);
    entry **head;

    if (!e)
        return SLUICE_ENOMEM;
    e->hash = h;
    e->tat = tat;
    e->key_len = rq->key_len;
    memcpy(e->key, rq->key, rq->key_len);
    head = &s->buckets[h & (s->nbuckets - 1)];
    sweep_chain(s, head, now);
    e->next = *head;
    *head = e;
    s->count++;
    maintain(s, now);
    return 0;
}

int sl_local_decide(sl_local *t, const sl_lim_req *rq, sluice_limit_result *r, sluice_error *err)
{
    uint64_t h = sl_hash_bytes(t->seed, rq->key, rq->key_len);
    shard *s = &t->shards[h >> (64 - SHARD_BITS)];
    double now = (double)(rq->now_us == SL_LIM_NOW ? sl_now_ns() / 1000 : rq->now_us);
    double tat = -1;
    entry *e;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    e = find(s->buckets[h & (s->nbuckets - 1)], h, rq->key, rq->key_len);
    if (e)
        tat = e->tat;
    if (sl_gcra_eval(rq, now, &tat, r)) {
        if (e)
            e->tat = tat;
        else
            rc = insert(s, h, rq, tat, now);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        /* Deny rather than admit what could not be recorded. */
        r->allowed = 0;
        r->remaining = 0;
        r->retry_after_ms = 0;
        return sl_err(err, rc, "rate limiter: out of memory storing key %.*s",
                      (int)(rq->key_len > 128 ? 128 : rq->key_len), rq->key);
    }
    return 0;
}

size_t sl_local_entries(sl_local *t)
{
    size_t n = 0;
    int i;

    for (i = 0; i < NSHARDS; i++) {
        pthread_mutex_lock(&t->shards[i].mu);
        n += t->shards[i].count;
        pthread_mutex_unlock(&t->shards[i].mu);
    }
    return n;
}
