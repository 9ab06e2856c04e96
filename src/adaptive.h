/* The adaptive concurrency limit: how many calls a client lets in flight to
 * its upstream, moved by measured latency (Gradient2-style; README,
 * "Sizing").
 *
 * This module only computes the limit.  Calls over it wait in the client's
 * bulkhead queue (a sl_waitq, waitq.h), the one queue the client has,
 * which reads the limit through sl_adaptive_limit().
 *
 * Contract:
 *  - sl_adaptive_sample takes no lock: a call's sample is a few relaxed
 *    atomic adds, and the call that closes a window computes the new limit
 *    while holding the state's `updating` flag (the others go on).  A
 *    sample that races the window's close may count in the next window:
 *    the estimate is statistical.  It does no I/O and never logs.
 *  - sl_adaptive_limit reads an atomic.
 *  - The limit stays within [min, max] (max 0 = no upper bound).
 */
#ifndef SL_ADAPTIVE_H
#define SL_ADAPTIVE_H

#include <stdatomic.h>
#include <stdint.h>

/* Latency tolerated over the baseline before the limit shrinks. */
#define SL_ADAPTIVE_TOLERANCE 1.5
/* The limit a client starts with (within its bounds): low, so that the
 * baseline is learned near the upstream's unloaded latency. */
#define SL_ADAPTIVE_INITIAL 4
/* A window closes after this many samples (or the limit, when larger)... */
#define SL_ADAPTIVE_WINDOW_SAMPLES 16
/* ...once it has lasted this long, or after SL_ADAPTIVE_WINDOW_MAX_NS
 * whatever its samples. */
#define SL_ADAPTIVE_WINDOW_MIN_NS (10 * 1000000LL)
#define SL_ADAPTIVE_WINDOW_MAX_NS (1000 * 1000000LL)

typedef struct sl_adaptive {
    int min, max;             /* bounds; max 0 = none */
    _Atomic int cur;          /* the limit in force */
    /* the window being measured */
    _Atomic int64_t win_start;
    _Atomic uint64_t win_n, win_sum;   /* samples; their RTTs summed, ns */
    _Atomic int win_peak;     /* most calls in flight seen */
    /* Held (1) by the call closing a window: the fields below are its. */
    _Atomic int updating;
    double limit;             /* the estimate; the limit is its floor, bounded */
    double short_rtt, long_rtt;   /* the last window's mean; the baseline (0 = none yet) */
    int logged;               /* the limit last logged, to log moves past 2x */
} sl_adaptive;

void sl_adaptive_init(sl_adaptive *a, int min, int max, int64_t now);

/* The limit in force now.  Lock-free. */
static inline int sl_adaptive_limit(sl_adaptive *a)
{
    return atomic_load_explicit(&a->cur, memory_order_relaxed);
}

/* Calls faster than this are sampled one in SL_ADAPTIVE_ONE_IN (each
 * sample then counts for that many), so that against a fast upstream the
 * limit costs a few instructions a call; slower ones are all sampled. */
#define SL_ADAPTIVE_FAST_NS (1000 * 1000LL)
#define SL_ADAPTIVE_ONE_IN 8

/* Records `weight` calls of time in flight `rtt_ns` each, with `in_flight`
 * calls (itself included) in flight when it finished.  Lock-free.  Returns
 * 0 when the limit stayed, 1 when it moved, 2 when it moved by more than
 * 2x since it was last logged (*from and *to say from and to what), for
 * the caller to log. */
int sl_adaptive_sample(sl_adaptive *a, int64_t rtt_ns, int weight, int in_flight, int64_t now,
                       int *from, int *to);

/* One finished call, sampled as SL_ADAPTIVE_FAST_NS says; as
 * sl_adaptive_sample. */
static inline int sl_adaptive_note(sl_adaptive *a, int64_t rtt_ns, int in_flight, int64_t now,
                                   int *from, int *to)
{
    static _Thread_local unsigned tick;

    if (rtt_ns >= SL_ADAPTIVE_FAST_NS)
        return sl_adaptive_sample(a, rtt_ns, 1, in_flight, now, from, to);
    if (++tick % SL_ADAPTIVE_ONE_IN)
        return 0;
    return sl_adaptive_sample(a, rtt_ns, SL_ADAPTIVE_ONE_IN, in_flight, now, from, to);
}

#endif
