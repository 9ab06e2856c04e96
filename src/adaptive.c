/* The adaptive concurrency limit (adaptive.h), after Netflix's Gradient2.
 *
 * Calls are measured in windows (at least SL_ADAPTIVE_WINDOW_SAMPLES calls,
 * or the limit when larger, over at least 10 ms).  A window's mean time in
 * flight is the short-run RTT; the baseline (long-run RTT) is an average
 * that follows the short one down quickly (a quarter of the way per
 * window) and up slowly (over 30 s; over 1 s while the limit sits at its
 * floor, where a slower upstream can only be a new normal).  Then
 *
 *     gradient  = clamp(TOLERANCE * baseline / short, 0.5, 1)
 *     target    = limit * gradient + sqrt(limit)       (a queue allowance)
 *     limit     = 0.8 * limit + 0.2 * target           (smoothing)
 *
 * so the limit grows by about sqrt(limit) a window while latency stays
 * within the tolerance, and shrinks (by at most half a window, smoothed)
 * when calls queue up at the upstream.  A window in which fewer than half
 * the limit were ever in flight does not grow it: a client that is not
 * using its limit has not shown the upstream can take more. */
#include <math.h>
#include <string.h>

#include "adaptive.h"

#define DOWN_WEIGHT 0.25
#define UP_TAU_NS 30e9
#define UP_TAU_FLOOR_NS 1e9
#define SMOOTHING 0.2

static double bounded(const sl_adaptive *a, double x)
{
    if (x < a->min)
        x = a->min;
    if (a->max > 0 && x > a->max)
        x = a->max;
    return x;
}

void sl_adaptive_init(sl_adaptive *a, int min, int max, int64_t now)
{
    memset(a, 0, sizeof *a);
    a->min = min < 1 ? 1 : min;
    a->max = max > 0 && max < a->min ? a->min : max;
    a->limit = bounded(a, SL_ADAPTIVE_INITIAL);
    atomic_store_explicit(&a->cur, (int)a->limit, memory_order_relaxed);
    a->logged = (int)a->limit;
    atomic_store_explicit(&a->win_start, now, memory_order_relaxed);
}

static void baseline(sl_adaptive *a, double rtt, int64_t dt)
{
    double w;

    if (a->long_rtt <= 0) {
        a->long_rtt = rtt;
        return;
    }
    if (rtt < a->long_rtt) {
        a->long_rtt += (rtt - a->long_rtt) * DOWN_WEIGHT;
        return;
    }
    w = (double)dt / ((int)a->limit <= a->min ? UP_TAU_FLOOR_NS : UP_TAU_NS);
    a->long_rtt += (rtt - a->long_rtt) * (w < 1 ? w : 1);
}

/* A new limit from a window's mean RTT.  `updating` held. */
static void update(sl_adaptive *a, double rtt, int peak, int64_t dt)
{
    double g, target;

    baseline(a, rtt, dt);
    a->short_rtt = rtt;
    g = rtt > 0 ? SL_ADAPTIVE_TOLERANCE * a->long_rtt / rtt : 1;
    g = g < 0.5 ? 0.5 : g > 1 ? 1 : g;
    target = a->limit * g + sqrt(a->limit);
    if (target > a->limit && peak * 2 < a->limit)
        target = a->limit;
    a->limit = bounded(a, a->limit * (1 - SMOOTHING) + target * SMOOTHING);
    atomic_store_explicit(&a->cur, (int)a->limit, memory_order_relaxed);
}

#define RELAXED memory_order_relaxed

int sl_adaptive_sample(sl_adaptive *a, int64_t rtt_ns, int weight, int in_flight, int64_t now,
                       int *from, int *to)
{
    uint64_t n = atomic_fetch_add_explicit(&a->win_n, (uint64_t)weight, RELAXED) + (uint64_t)weight;
    uint64_t sum;
    int64_t dt = now - atomic_load_explicit(&a->win_start, RELAXED);
    int cur = atomic_load_explicit(&a->cur, RELAXED), peak;
    uint64_t want = cur > SL_ADAPTIVE_WINDOW_SAMPLES ? (uint64_t)cur : SL_ADAPTIVE_WINDOW_SAMPLES;
    int expect = 0, moved = 0;

    atomic_fetch_add_explicit(&a->win_sum, (uint64_t)(rtt_ns > 0 ? rtt_ns : 0) * (uint64_t)weight,
                              RELAXED);
    peak = atomic_load_explicit(&a->win_peak, RELAXED);
    while (in_flight > peak &&
           !atomic_compare_exchange_weak_explicit(&a->win_peak, &peak, in_flight, RELAXED, RELAXED))
        ;
    if (dt < SL_ADAPTIVE_WINDOW_MAX_NS && (n < want || dt < SL_ADAPTIVE_WINDOW_MIN_NS))
        return 0;
    if (!atomic_compare_exchange_strong_explicit(&a->updating, &expect, 1, memory_order_acquire,
                                                 RELAXED))
        return 0;    /* another call is closing the window */
    n = atomic_exchange_explicit(&a->win_n, 0, RELAXED);
    sum = atomic_exchange_explicit(&a->win_sum, 0, RELAXED);
    peak = atomic_exchange_explicit(&a->win_peak, 0, RELAXED);
    dt = now - atomic_exchange_explicit(&a->win_start, now, RELAXED);
    if (n > 0) {
        update(a, (double)sum / (double)n, peak, dt);
        moved = (int)a->limit != cur;
        cur = (int)a->limit;
        if (cur >= 2 * a->logged || 2 * cur <= a->logged) {
            *from = a->logged;
            *to = a->logged = cur;
            moved = 2;
        }
    }
    atomic_store_explicit(&a->updating, 0, memory_order_release);
    return moved;
}
