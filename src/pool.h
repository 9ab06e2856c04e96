/* The keyed resource pool behind sluice_pool and the HTTP connection pool.
 *
 * Contract:
 *  - One mutex guards the pool's tables; waiters queue in a sl_waitq
 *    (waitq.h) and sleep on their own futex words.
 *  - Order: waiters are served in arrival order, with bounded barging
 *    (cfg.barge_ns, default SL_WAITQ_BOUND_NS = 20 ms): while the oldest
 *    waiter has waited less than the bound, a put leaves the resource idle
 *    for the next checkout (most often the putter's own next one); once
 *    it has waited the bound, puts hand resources to waiters, oldest
 *    first, and no newcomer takes one.  A checkout waits at most the bound
 *    plus its turn among the waiters past it, and at most about
 *    SL_WAITQ_POLL_NS (1 ms) beside a resource left idle; the deadline is
 *    exact.
 *  - ops->create, ops->destroy, ops->alive and ops->event are never called
 *    with the pool lock held (connect, close and TLS happen outside it).
 *  - Limits: max_total over all keys, max_per_key for one key; a checkout at
 *    a limit waits until the deadline, then SLUICE_EPOOLTIMEOUT.
 *  - Idle resources are reused most-recently-used first; ops->alive is
 *    asked before reuse and a dead one is destroyed (reason STALE).
 *  - fork(): in the child the pool works on resources of its own.  The ones
 *    made before the fork go to ops->destroy as SL_CLOSE_INHERITED (counted
 *    as SLUICE_CLOSE_STALE) and are never reused there; the housekeeping
 *    thread is started again.  No thread of the parent may be inside a
 *    pool call at the fork (the pool's own sweeper is taken care of).
 *  - A housekeeping thread (when cfg.housekeeping) closes idle resources
 *    past idle_timeout_ms within one second, also when no call comes.
 *  - Warm minimum (cfg.min_idle_per_key): every SL_POOL_REFILL_NS the
 *    housekeeping thread asks ops->alive about the idle resources (taking
 *    them off the idle lists meanwhile, never under the lock) and, for
 *    every key that has been checked out (or prefilled), creates what is
 *    missing for min_idle_per_key idle, within max_per_key and max_total:
 *    the slots are reserved under the lock, the creates run outside it.  A
 *    key whose refill fails waits 100 ms, doubling up to 30 s, before the
 *    next try, and the first failure of a run logs one warning.  Refilled
 *    resources make SLUICE_POOL_CONNECT events on that thread.
 *  - A key with no resource and no waiter is kept (with its statistics)
 *    only among the SL_POOL_UNUSED_KEYS most recently used such keys; an
 *    older one is freed and its counters stay in the pool's totals.  So the
 *    key table is bounded by the keys in use plus SL_POOL_UNUSED_KEYS.
 */
#ifndef SL_POOL_H
#define SL_POOL_H

#include <stdint.h>

#include "sluice.h"

typedef struct sl_pool sl_pool;

/* A checked-out resource.  The user reads `res`, `created_ns`, `uses` and
 * `reused`; the rest belongs to the pool. */
typedef struct sl_pool_item {
    void *res;
    int64_t created_ns;   /* when it was created (monotonic) */
    uint64_t uses;        /* checkouts so far, this one included */
    int reused;           /* this checkout took an idle resource */
    int64_t wait_ns;      /* this checkout waited this long for capacity */
} sl_pool_item;

/* The reason ops->destroy is given for a resource a fork() child holds
 * from its parent: release it without any I/O (close the fd, free the
 * memory), for the parent still uses what is under it. */
#define SL_CLOSE_INHERITED ((sluice_close_reason)SLUICE_CLOSE_REASONS_)

typedef struct sl_pool_ops {
    /* Creates a resource for `key`; `arg` is what sl_pool_get was given. */
    int (*create)(void *ctx, const char *key, void *arg, int64_t deadline, void **res,
                  sluice_error *err);
    void (*destroy)(void *ctx, void *res, sluice_close_reason why);
    /* Optional: 1 when an idle resource may be reused. */
    int (*alive)(void *ctx, void *res);
    /* Optional: told of connect/checkout/checkin/close. */
    void (*event)(void *ctx, const sluice_pool_event *ev);
} sl_pool_ops;

typedef struct sl_pool_cfg {
    int max_total;          /* 0 = unlimited */
    int max_per_key;        /* 0 = max_total */
    int max_idle_per_key;   /* 0 = unlimited, < 0 = none; idle beyond it is destroyed */
    int idle_timeout_ms;    /* 0 = never */
    int max_lifetime_ms;    /* 0 = never */
    int housekeeping;       /* 1 = run the sweeper thread */
    int64_t barge_ns;       /* the barging bound: 0 = SL_WAITQ_BOUND_NS, < 0 = none */
    int min_idle_per_key;   /* kept idle by the housekeeping thread (needs housekeeping); 0 = none */
    int refill_timeout_ms;  /* a refill's create gets this long (0 = 5000) */
    /* Optional, for min_idle_per_key: a copy of a checkout's `arg` that
     * lives until arg_drop, for the housekeeping thread's creates (called
     * with the ops' ctx).  Without arg_keep, refills pass a NULL arg.
     * arg_drop may run with the pool lock held: it must only free memory. */
    void *(*arg_keep)(void *ctx, const void *arg);
    void (*arg_drop)(void *ctx, void *kept);
} sl_pool_cfg;

#define SL_POOL_FRESH 0x1   /* never reuse: create a new resource */

/* Unused keys kept with their statistics; see the contract above. */
#define SL_POOL_UNUSED_KEYS 64

/* How often the warm minimum is checked and refilled. */
#define SL_POOL_REFILL_NS (100 * 1000000LL)

sl_pool *sl_pool_new(const sl_pool_cfg *cfg, const sl_pool_ops *ops, void *ctx, sluice_error *err);

/* Checks out a resource for `key` (copied if the key is new).  Returns 0
 * with *out set, SLUICE_EPOOLTIMEOUT when no capacity came by `deadline`,
 * SLUICE_ECLOSED after sl_pool_close, or create's error. */
int sl_pool_get(sl_pool *p, const char *key, void *arg, unsigned flags, int64_t deadline,
                sl_pool_item **out, sluice_error *err);

/* Returns a checked-out item.  reusable = 0 destroys it (reason BROKEN);
 * otherwise it becomes idle unless it is past its lifetime or past
 * max_idle_per_key.  Hands capacity to the first waiter once the queue is
 * due (see Order above).  Never blocks on I/O under the lock. */
void sl_pool_put(sl_pool *p, sl_pool_item *it, int reusable);

/* Closes idle resources past their idle timeout or lifetime now. */
void sl_pool_sweep(sl_pool *p);

/* Creates up to n resources for `key` (made known to the pool, for
 * min_idle_per_key, when n is 0) and leaves them idle, within the limits
 * and without waiting for capacity.  Returns how many it made, or the
 * first create's error when it made none. */
int sl_pool_prefill(sl_pool *p, const char *key, void *arg, int n, int64_t deadline,
                    sluice_error *err);

/* Fills out[0..cap) with the usage of the resources that exist for `key`
 * (all keys when NULL), oldest first, and returns how many there are. */
size_t sl_pool_usage(sl_pool *p, const char *key, struct sluice_pool_usage *out, size_t cap);

/* Checkouts per open resource over all keys: the least, the median
 * (within 25% past 7) and the most; zeros when none is open. */
void sl_pool_uses_spread(sl_pool *p, uint64_t *min, uint64_t *median, uint64_t *max);

/* Stats for one key, or for all keys when key is NULL. */
void sl_pool_stats(sl_pool *p, const char *key, struct sluice_pool_stats *out);

/* Per-key stats callback (for metrics): called for each key with a snapshot,
 * outside the lock. */
void sl_pool_foreach_key(sl_pool *p,
                         void (*fn)(void *ud, const char *key, const struct sluice_pool_stats *s),
                         void *ud);

/* How many keys the pool holds now (in use or kept unused). */
size_t sl_pool_keys(sl_pool *p);

/* Stops new checkouts (SLUICE_ECLOSED, waiters too), stops the sweeper,
 * destroys idle resources.  Items still checked out are destroyed when
 * they are put back. */
void sl_pool_close(sl_pool *p);
/* Closes, then frees; every item must have been put back. */
void sl_pool_free(sl_pool *p);

#endif
