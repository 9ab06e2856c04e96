/* The in-flight table behind sluice_coalescer, with the extras the HTTP
 * path needs: a deadline, a micro-cache window and a cacheability test.
 *
 * Contract:
 *  - A key is the caller's bytes, hashed with a per-coalescer random seed
 *    and compared in full.  A flight in progress points at its leader's
 *    bytes (the leader is inside sl_coalesce() all that time); one that
 *    enters the window keeps a copy.
 *  - The table is split into stripes, each one lock (futex.h) over its
 *    own hash buckets.  The leader takes its stripe lock once to insert
 *    and once to publish; followers sleep on the flight's done word, and
 *    the leader wakes them only when some went to sleep.  fn() and
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
 *    SLUICE_ETIMEDOUT, a leader alone with a slot) need no release (it is
 *    a harmless no-op).
 *  - The common case, a call that meets no identical one, allocates
 *    nothing when the caller gives a slot: the leader's value stays in the
 *    slot and its flight goes back to the stripe as a spare for the next
 *    one.
 */
#ifndef SL_COALESCE_H
#define SL_COALESCE_H

#include <stdint.h>

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
};

/* Like sluice_coalescer_new, for callers whose value is a struct of
 * value_size bytes that they give each call as a slot (sl_flight_opts). */
sluice_coalescer *sl_coalescer_new(sluice_flight_release_fn release, size_t value_size,
                                   sluice_error *err);

typedef struct sl_flight_opts {
    int64_t deadline;           /* a follower gives up then (SL_NO_DEADLINE: never);
                                   the leader ignores it: fn() keeps its own time */
    int window_ms;              /* a result cacheable() accepts serves same-key
                                   callers this long after it finished; 0: none */
    sl_cacheable_fn cacheable;  /* NULL means "code == 0" */
    void *slot;                 /* value_size bytes of the caller's, given iff the
                                   coalescer has a value_size */
} sl_flight_opts;

/* Like sluice_coalesce, with the options above.
 *
 * With a slot, fn() finds *value pointing at it and fills it (the pointer
 * is not its to change).  A leader whose flight nobody joined and that
 * does not enter the window gets out->value == slot and no flight
 * (out->internal_ NULL): the value is the caller's alone, release() is
 * not called for it, and the flight is kept for the stripe's next call.
 * Otherwise the slot's bytes move into the flight, out->value points at
 * them there, and release() frees what they hold with the flight: the
 * caller must treat its slot as moved.
 *
 * A window hit is reported as shared (out->shared = 1) and counted in
 * cache_hits, not in followers.  Expired window entries are dropped when
 * a lookup meets them and by a sweep that runs on inserts, so the table
 * only holds flights in progress and entries still inside their window.
 * Thread-safe. */
int sl_coalesce(sluice_coalescer *co, const void *key, size_t keylen, const sl_flight_opts *o,
                sluice_flight_fn fn, void *arg, sluice_flight_result *out);

/* A snapshot of the counters (each read atomically).  Thread-safe. */
void sl_coalesce_stats(sluice_coalescer *co, struct sl_coalesce_stats *out);

#endif
