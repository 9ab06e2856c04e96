/* The in-flight table behind sluice_coalescer, with the extras the HTTP
 * path needs: a deadline, a micro-cache window and a cacheability test.
 *
 * Contract:
 *  - A key is the caller's bytes; they are copied into the flight, hashed
 *    with a per-coalescer random seed and compared in full.
 *  - The table is split into stripes, each one mutex over its own hash
 *    buckets.  The leader takes its stripe lock once to insert and once to
 *    publish; fn() and release() never run with any coalescer lock held,
 *    so fn() may use the same coalescer for another key.  A caller that
 *    asks for the key its own thread is leading gets SLUICE_EINVAL rather
 *    than waiting for itself.
 *  - A flight is refcounted: the leader, each follower and (while it is in
 *    the window) the table each hold one reference.  References are taken
 *    under the stripe lock and dropped with an atomic; the last drop calls
 *    release(value) once (when value is not NULL) and frees the flight.
 *  - The result is the code fn() returned and the value it left in *value,
 *    error or not: every waiter sees the same pair.  Whoever gets a result
 *    calls sluice_flight_result_release() once, whatever the code.
 *  - Results without a flight (SLUICE_EINVAL, SLUICE_ENOMEM, a follower's
 *    SLUICE_ETIMEDOUT) carry value NULL and need no release (it is a
 *    harmless no-op).
 *  - A result may be released after the coalescer was freed: a flight
 *    keeps its own copy of the release function.
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

/* Like sluice_coalesce, with an absolute deadline for followers and a
 * window: a result for which cacheable() says yes serves same-key callers
 * for window_ms after it finished (0 = no window).  cacheable NULL means
 * "code == 0".  The leader ignores `deadline`: fn() keeps its own time.
 * A window hit is reported as shared (out->shared = 1) and counted in
 * cache_hits, not in followers.  Expired window entries are dropped when
 * a lookup meets them and by a sweep that runs on inserts, so the table
 * only holds flights in progress and entries still inside their window.
 * Thread-safe. */
int sl_coalesce(sluice_coalescer *co, const void *key, size_t keylen, int64_t deadline,
                int window_ms, sl_cacheable_fn cacheable, sluice_flight_fn fn, void *arg,
                sluice_flight_result *out);
/* A snapshot of the counters (each read atomically).  Thread-safe. */
void sl_coalesce_stats(sluice_coalescer *co, struct sl_coalesce_stats *out);

#endif
