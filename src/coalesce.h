/* The in-flight table behind sluice_coalescer, with the extras the HTTP
 * path needs: a deadline, a micro-cache window and a cacheability test.
 *
 * Contract:
 *  - A key is bytes, hashed with a per-coalescer random seed and
 *    compared in full when two hashes meet.  A caller may instead give the
 *    hash and a structured key with its own equal() and copy()
 *    (sl_flight_key), so a call never writes its key out and a comparison
 *    under the stripe lock neither allocates nor copies.  A flight in
 *    progress points at its leader's key (the leader is between
 *    sl_flight_begin() and sl_flight_end() all that time); one that
 *    enters the window keeps a copy, made before the lock is taken.
 *  - The table is split into stripes, each one lock (futex.h) over its
 *    own hash buckets.  The leader takes its stripe lock once to insert
 *    and once to publish; followers sleep on the flight's done word, and
 *    the leader wakes them only when some joined.  fn() and
 *    release() never run with any coalescer lock held, so fn() may use
 *    the same coalescer for another key.  A caller that asks for the key
 *    its own thread is leading gets SLUICE_EINVAL rather than waiting for
 *    itself.
 *  - A flight is refcounted: the leader, each follower and (while it is in
 *    the window) the table each hold one reference.  References are taken
 *    under the stripe lock and dropped with an atomic; the last drop calls
 *    release(value) once (when value is not NULL) and frees the flight.
 *    A flight keeps its own copy of release(), so a result may be released
 *    after the coalescer was freed.
 *  - The result is the code fn() returned and the value it left in *value,
 *    error or not: every waiter sees the same pair.  Whoever gets a result
 *    calls sluice_flight_result_release() once, whatever the code.
 *  - Results without a flight (SLUICE_EINVAL, SLUICE_ENOMEM, a follower's
 *    SLUICE_ETIMEDOUT) need no release (it is a harmless no-op).
 *  - With sl_flight_begin()/sl_flight_end() the common case, a call that
 *    meets no identical one, allocates and copies nothing: the leader
 *    keeps its own result and its flight goes back to the stripe as a
 *    spare for the next one.
 */
#ifndef SL_COALESCE_H
#define SL_COALESCE_H

#include <stdint.h>
#include <string.h>

#include "hash.h"
#include "sluice.h"

/* 1 when a finished value may serve later callers for the window. */
typedef int (*sl_cacheable_fn)(int code, void *value);

/* Named like the function that fills it (as struct sluice_pool_stats):
 * use `struct sl_coalesce_stats`. */
struct sl_coalesce_stats {
    uint64_t flights;       /* leader calls */
    uint64_t followers;     /* callers served by another's flight */
    uint64_t cache_hits;    /* callers served by the window */
    uint64_t timeouts;      /* followers that gave up */
    uint64_t waiting;       /* followers waiting right now (a gauge) */
    uint64_t cache_entries; /* window entries held now (a gauge) */
    uint64_t cache_bytes;   /* their memory, as counted for the bound (a gauge) */
    uint64_t cache_evictions;   /* entries dropped before their time for the bound */
};

#define SL_COALESCE_DEFAULT_MAX_BYTES ((size_t)8 << 20)

/* Like sluice_coalescer_new, with value_size bytes of room in every
 * flight for a value that sl_flight_end()'s share() writes there, and the
 * window's bound: max_bytes (0: SL_COALESCE_DEFAULT_MAX_BYTES) for all
 * its entries, a sixteenth of it for each stripe's.  An entry counts its
 * flight, its key's copy and what share() reports; one past a stripe's
 * share is not kept, and keeping one evicts the stripe's oldest while the
 * stripe is past its share. */
sluice_coalescer *sl_coalescer_new(sluice_flight_release_fn release, size_t value_size,
                                   size_t max_bytes, sluice_error *err);

typedef struct sl_flight_opts {
    int64_t deadline;           /* a follower gives up then (SL_NO_DEADLINE: never);
                                   the leader ignores it: fn() keeps its own time */
    int window_ms;              /* a result cacheable() accepts serves same-key
                                   callers this long after it finished; 0: none */
    sl_cacheable_fn cacheable;  /* NULL means "code == 0" */
} sl_flight_opts;

/* Like sluice_coalesce, with the options above.
 *
 * A window hit is reported as shared (out->shared = 1) and counted in
 * cache_hits, not in followers.  Expired window entries are freed when a
 * lookup meets them, and from the old end of their stripe's age list by
 * every call that inserts into the stripe; the bytes they hold never pass
 * the bound given to sl_coalescer_new().
 * Thread-safe. */
int sl_coalesce(sluice_coalescer *co, const void *key, size_t keylen, const sl_flight_opts *o,
                sluice_flight_fn fn, void *arg, sluice_flight_result *out);

/* A structured key's functions.  Keys of different ops never match. */
typedef struct sl_flight_key_ops {
    /* 1 when the keys a and b (two ctx of keys with these ops, whose hashes
     * met) are equal.  Called under a stripe lock: it must neither
     * allocate, nor copy a key, nor block. */
    int (*equal)(const void *a, const void *b);
    /* A copy of ctx that stands alone, in one block sl_free() releases,
     * with its size in *size; NULL when out of memory (the result is then
     * served once, not kept).  Called by the leader with no lock held,
     * before its flight enters the window. */
    void *(*copy)(const void *ctx, size_t *size);
} sl_flight_key_ops;

/* A key for sl_coalesce_key().  Equal keys must have equal hashes. */
typedef struct sl_flight_key {
    uint64_t hash;
    const void *bytes;          /* the key, when ops is NULL */
    size_t len;
    /* Or a structured key: ctx must stay unchanged while its caller is
     * inside sl_coalesce_key() or between sl_flight_begin() and
     * sl_flight_end(), since followers read it under the stripe lock. */
    const sl_flight_key_ops *ops;
    const void *ctx;
} sl_flight_key;

/* The random seed keys are hashed from (sl_hash_bytes). */
uint64_t sl_coalesce_seed(const sluice_coalescer *co);

/* Like sl_coalesce, for a key given as sl_flight_key. */
int sl_coalesce_key(sluice_coalescer *co, const sl_flight_key *key, const sl_flight_opts *o,
                    sluice_flight_fn fn, void *arg, sluice_flight_result *out);

/* The leader's side of sl_coalesce_key(), for a caller that runs its own
 * work between two calls instead of through fn(), and keeps its own result:
 *
 *     if (sl_flight_begin(co, &key, &o, &lead, &out)) {
 *         ... the work ...
 *         sl_flight_end(co, &lead, code, keep, o.window_ms, share, ctx);
 *     } else {
 *         ... out is a follower's result, a window hit or an error ...
 *     }
 *
 * sl_flight_begin() returns 1 when the caller leads (and must call
 * sl_flight_end()), else 0 with *out filled as sl_coalesce_key() fills it.
 *
 * sl_flight_end() publishes the result, code and value; keep asks for the
 * window (window_ms > 0).  With share, the value is written only when
 * someone shares it (a follower joined, or it enters the window): share()
 * writes it, under the stripe lock, into value_size bytes of the flight,
 * which release() frees with the flight, and sl_flight_end() returns 1.
 * When nobody does, the flight goes back to its stripe for the next call,
 * share() is not called and it returns 0: the common case allocates and
 * copies nothing.  With out, the leader gets a result as sl_coalesce_key()
 * gives it (and the flight is always kept for it). */
typedef struct sl_flight_lead {
    void *flight_;
    void *stripe_;
} sl_flight_lead;

/* Returns the bytes the value holds beyond the flight (what it keeps
 * alive), counted against the window's bound. */
typedef size_t (*sl_flight_share_fn)(void *ctx, void *value);

int sl_flight_begin(sluice_coalescer *co, const sl_flight_key *key, const sl_flight_opts *o,
                    sl_flight_lead *lead, sluice_flight_result *out);
int sl_flight_end(sluice_coalescer *co, sl_flight_lead *lead, int code, void *value, int keep,
                  int window_ms, sl_flight_share_fn share, void *ctx, sluice_flight_result *out);

/* A snapshot of the counters (each read atomically).  Thread-safe. */
void sl_coalesce_stats(sluice_coalescer *co, struct sl_coalesce_stats *out);

#endif
