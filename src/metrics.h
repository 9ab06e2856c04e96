/* Request metrics: a log-linear latency histogram, per-client counters and
 * a short window of recent load for sizing the pool.  metrics.c also holds
 * the readers: sluice_client_stats, sluice_factory_stats and the exports.
 *
 * Contract:
 *  - Recording takes no lock, allocates nothing and makes no system call:
 *    each figure is a relaxed atomic add, so any number of threads record
 *    into one sl_metrics or sl_hist at once.  The structures are embedded
 *    in their owner and start zeroed (calloc); they need no init or free.
 *  - Readers load each counter atomically and allocate nothing.  A read
 *    taken while calls finish sees every counter at some moment during
 *    the read, not all at one instant: a call's status may be counted in
 *    a read that does not yet hold its latency.
 *  - A client records only into its own sl_metrics; the factory's request
 *    counters are sums over its clients, taken when read.  The factory
 *    keeps its own latency histogram and peak in flight (sl_metrics_totals)
 *    because neither can be summed from the clients' cheaply: merging
 *    histograms would cost every read a pass per client, recording twice
 *    costs a call two more relaxed adds.
 */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

/* ---- histogram ----------------------------------------------------------- */

/* Nanoseconds in buckets of 64 linear steps per power of two: a bucket is
 * at most 1/64 of its lower bound wide, so its midpoint is within 0.8% of
 * any value in it.  Below 1024 ns the steps are 16 ns (0.8% at 1 us).
 * Values of 2^38 ns (about 275 s) and more count in the last bucket. */
#define SL_HIST_SUB_BITS 6
#define SL_HIST_SUB (1 << SL_HIST_SUB_BITS)
#define SL_HIST_MIN_SHIFT 10
#define SL_HIST_MAX_SHIFT 38
#define SL_HIST_BUCKETS (SL_HIST_SUB * (SL_HIST_MAX_SHIFT - SL_HIST_MIN_SHIFT + 1))

typedef struct sl_hist {
    uint64_t sum_ns;                    /* atomic */
    int64_t max_ns;                     /* atomic; raised by a CAS, rarely */
    uint64_t counts[SL_HIST_BUCKETS];   /* atomics */
} sl_hist;

/* Records one value (a negative one as 0) in h, and in `also` when it is
 * not NULL (a call's latency goes to its client's and the factory's): the
 * bucket is found once for both. */
void sl_hist_record(sl_hist *h, sl_hist *also, int64_t ns);

/* Bucket geometry: the bucket of a value, and a bucket's midpoint, the
 * value every reading reports for what the bucket holds. */
int sl_hist_bucket(int64_t ns);
int64_t sl_hist_mid(int bucket);

/* The number of values recorded. */
uint64_t sl_hist_count(const sl_hist *h);

/* The q-quantiles (0 < q[i] <= 1, ascending) into out[i], in ns: the
 * midpoint of the bucket that holds the ceil(q * count)-th smallest value,
 * capped at the largest value recorded; 0 when empty.  Two passes over the
 * buckets.  Values recorded during the read may or may not count. */
void sl_hist_quantiles(const sl_hist *h, const double *q, int64_t *out, size_t n);

/* One pass: cum[i] = the values whose bucket midpoint is <= le_ns[i]
 * (le_ns ascending); returns the total, which no cum[i] exceeds.  What a
 * Prometheus histogram needs: cumulative, and consistent with its count. */
uint64_t sl_hist_cumulative(const sl_hist *h, const int64_t *le_ns, size_t n, uint64_t *cum);

/* ---- per-client metrics ---------------------------------------------- */

/* Seconds of recent load kept; the window reads the last 10 of them. */
#define SL_WINDOW_SLOTS 16
#define SL_WINDOW_SECONDS 10

/* The client's totals as they stood when the first call of second `sec`
 * finished (sec1 = sec + 1; 0 = empty).  See window_tick in metrics.c. */
typedef struct sl_window_slot {
    int64_t sec1;
    uint64_t exchanges, hold_ns;
} sl_window_slot;

typedef struct sl_metrics {
    /* Written by every call; kept together so that they share lines. */
    int64_t in_flight, peak_in_flight;
    uint64_t status_class[6];           /* [1..5] = 1xx..5xx */
    uint64_t errors[SLUICE_STATS_CODES];   /* by -code; others at [0] */
    uint64_t retries;
    uint64_t bytes_sent, bytes_received;
    uint64_t exchanges;                 /* upstream request/response exchanges */
    uint64_t hold_ns;                   /* time they held a connection */
    int64_t window_sec1;                /* the latest second seen, + 1 */
    sl_window_slot window[SL_WINDOW_SLOTS];
    sl_hist latency;                    /* whole calls */
} sl_metrics;

/* The factory's own figures. */
typedef struct sl_metrics_totals {
    int64_t created_ns;                 /* set when the factory is made */
    int64_t peak_in_flight;
    sl_hist latency;
} sl_metrics_totals;

/* What one call did.  The request path fills the exchange figures as its
 * attempts go, and the rest when the call returns. */
typedef struct sl_call_record {
    int code;                /* 0 or SLUICE_E* */
    int status;              /* the HTTP status when code == 0 */
    int64_t duration_ns;     /* the whole call */
    int64_t end_ns;          /* when it returned (monotonic) */
    uint64_t sent, received; /* HTTP bytes (before TLS) over all its exchanges */
    uint64_t exchanges;
    int64_t hold_ns;         /* time its exchanges held a connection */
} sl_call_record;

/* A call starts: in flight + 1, and the peak raised. */
void sl_metrics_enter(sl_metrics *m);
/* A call returns: in flight - 1; its status class or error code, bytes,
 * exchanges and latency into m; its latency into t. */
void sl_metrics_leave(sl_metrics *m, sl_metrics_totals *t, const sl_call_record *r);
/* A policy retry. */
void sl_metrics_retry(sl_metrics *m);
/* Raises *peak to `now` if lower. */
void sl_metrics_peak(int64_t *peak, int64_t now);

/* The exchanges of calls that finished in the window, the seconds
 * now - SL_WINDOW_SECONDS + 1 .. now (the last one so far), and the time
 * they held connections: added into *n and *hold_ns.  Approximate at the
 * edges (see window_tick in metrics.c). */
/* The registry's head and count (count may be NULL): a list no one
 * changes, walked without the registry lock (see metrics.c). */
sluice_client *sl_metrics_first_client(sluice_factory *f, int *count);
/* A histogram's count, sum and quantiles in microseconds. */
void sl_metrics_latency(const sl_hist *h, struct sluice_latency_stats *out);
/* Adds m's counters into *s (not the peak, the latency or the breakers). */
void sl_metrics_add_counts(const sl_metrics *m, struct sluice_client_stats *s);

void sl_metrics_recent(const sl_metrics *m, int64_t now_ns, uint64_t *n, uint64_t *hold_ns);

#endif
