/* Metrics: the latency histogram, per-client counters, the recent-load
 * window and the stats readers (the exports are in metrics_export.c).
 *
 * Recording is relaxed atomic adds (see metrics.h).  Reading walks the
 * factory's clients without the registry lock: clients are only ever
 * added, at the head of the list, and freed with the factory, so a head
 * read under the lock leads to a list that no one changes. */
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "clock.h"
#include "coalesce.h"
#include "metrics.h"

#define NS_PER_SEC 1000000000LL
#define RELAXED __ATOMIC_RELAXED
#define LOAD(p) __atomic_load_n((p), RELAXED)
#define ADD(p, v) __atomic_fetch_add((p), (v), RELAXED)

/* Pool sizing headroom over what Little's law says is busy. */
#define HEADROOM 1.25

/* ------------------------------------------------------------------------ */
/* Histogram                                                                */
/* ------------------------------------------------------------------------ */

int sl_hist_bucket(int64_t ns)
{
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    int msb;

    if (v < (1u << SL_HIST_MIN_SHIFT))
        return (int)(v >> (SL_HIST_MIN_SHIFT - SL_HIST_SUB_BITS));
    msb = 63 - __builtin_clzll(v);
    if (msb >= SL_HIST_MAX_SHIFT)
        return SL_HIST_BUCKETS - 1;
    /* Group g >= 1 holds [2^msb, 2^(msb+1)) in SUB steps of 2^(msb-SUB_BITS). */
    return (msb - SL_HIST_MIN_SHIFT + 1) * SL_HIST_SUB +
           (int)(v >> (msb - SL_HIST_SUB_BITS)) - SL_HIST_SUB;
}

int64_t sl_hist_mid(int bucket)
{
    int group = bucket / SL_HIST_SUB, step = bucket % SL_HIST_SUB;
    int shift = SL_HIST_MIN_SHIFT - SL_HIST_SUB_BITS + (group > 0 ? group - 1 : 0);
    int64_t lo = (int64_t)(group > 0 ? SL_HIST_SUB + step : step) << shift;

    return lo + ((int64_t)1 << shift) / 2;
}

void sl_metrics_peak(int64_t *peak, int64_t now)
{
    int64_t old = LOAD(peak);

    while (now > old && !__atomic_compare_exchange_n(peak, &old, now, 1, RELAXED, RELAXED))
        ;
}

static inline void record_in(sl_hist *h, int bucket, int64_t ns)
{
    ADD(&h->counts[bucket], 1);
    ADD(&h->sum_ns, (uint64_t)ns);
    sl_metrics_peak(&h->max_ns, ns);
}

void sl_hist_record(sl_hist *h, sl_hist *also, int64_t ns)
{
    int bucket;

    if (ns < 0)
        ns = 0;
    bucket = sl_hist_bucket(ns);
    record_in(h, bucket, ns);
    if (also)
        record_in(also, bucket, ns);
}

uint64_t sl_hist_count(const sl_hist *h)
{
    uint64_t n = 0;
    int b;

    for (b = 0; b < SL_HIST_BUCKETS; b++)
        n += LOAD(&h->counts[b]);
    return n;
}

/* ceil(x) for 0 <= x < 2^63, without libm. */
static uint64_t ceil_u64(double x)
{
    uint64_t i = (uint64_t)x;

    return (double)i < x ? i + 1 : i;
}

static uint64_t rank_of(double q, uint64_t total)
{
    uint64_t r = ceil_u64(q * (double)total);

    return r < 1 ? 1 : r > total ? total : r;
}

void sl_hist_quantiles(const sl_hist *h, const double *q, int64_t *out, size_t n)
{
    uint64_t total = sl_hist_count(h), cum = 0;
    int64_t max = LOAD(&h->max_ns);
    size_t i = 0;
    int b;

    memset(out, 0, n * sizeof *out);
    if (total == 0)
        return;
    /* Counts only grow, so this pass reaches every rank the first set.
     * The top rank, and anything in the open-ended last bucket, is the
     * largest value itself. */
    for (b = 0; b < SL_HIST_BUCKETS && i < n; b++) {
        cum += LOAD(&h->counts[b]);
        for (; i < n && cum >= rank_of(q[i], total); i++) {
            int64_t mid = sl_hist_mid(b);
            int top = rank_of(q[i], total) == total || b == SL_HIST_BUCKETS - 1;
            out[i] = top || mid > max ? max : mid;
        }
    }
}

uint64_t sl_hist_cumulative(const sl_hist *h, const int64_t *le_ns, size_t n, uint64_t *cum)
{
    uint64_t total = 0;
    size_t i = 0;
    int b;

    for (b = 0; b < SL_HIST_BUCKETS; b++) {
        int64_t mid = sl_hist_mid(b);
        for (; i < n && mid > le_ns[i]; i++)
            cum[i] = total;
        total += LOAD(&h->counts[b]);
    }
    for (; i < n; i++)
        cum[i] = total;
    return total;
}

/* ------------------------------------------------------------------------ */
/* Recording                                                                */
/* ------------------------------------------------------------------------ */

/* The recent-load window.  The first call to finish in a new second copies
 * the client's exchange totals into that second's slot; the load over the
 * last N seconds is then the totals now less those of the oldest slot in
 * range.  A slot is written under a sequence check, without a lock: sec1
 * is cleared, the totals stored (release), then sec1 set (release).  A
 * reader loads sec1, the totals (acquire) and sec1 again, and uses the
 * slot only when both loads of sec1 agree.  A call that finishes while
 * the slot is being written may be counted in the second before: the
 * window is an estimate for sizing, not an account. */
static void window_tick(sl_metrics *m, int64_t now_ns)
{
    int64_t sec1 = now_ns / NS_PER_SEC + 1, seen = LOAD(&m->window_sec1);
    sl_window_slot *s;

    if (seen >= sec1 ||
        !__atomic_compare_exchange_n(&m->window_sec1, &seen, sec1, 0, RELAXED, RELAXED))
        return;
    s = &m->window[sec1 % SL_WINDOW_SLOTS];
    __atomic_store_n(&s->sec1, 0, RELAXED);
    __atomic_store_n(&s->exchanges, LOAD(&m->exchanges), __ATOMIC_RELEASE);
    __atomic_store_n(&s->hold_ns, LOAD(&m->hold_ns), __ATOMIC_RELEASE);
    __atomic_store_n(&s->sec1, sec1, __ATOMIC_RELEASE);
}

void sl_metrics_enter(sl_metrics *m)
{
    sl_metrics_peak(&m->peak_in_flight, ADD(&m->in_flight, 1) + 1);
}

void sl_metrics_leave(sl_metrics *m, sl_metrics_totals *t, const sl_call_record *r)
{
    int cls = r->status / 100, code = -r->code;
    int64_t ns = r->duration_ns > 0 ? r->duration_ns : 0;

    window_tick(m, r->end_ns);
    ADD(&m->in_flight, -1);
    if (r->code == 0)
        ADD(&m->status_class[cls >= 1 && cls <= 5 ? cls : 0], 1);
    else
        ADD(&m->errors[code > 0 && code < SLUICE_STATS_CODES ? code : 0], 1);
    if (r->exchanges) {
        ADD(&m->bytes_sent, r->sent);
        ADD(&m->bytes_received, r->received);
        ADD(&m->exchanges, r->exchanges);
        ADD(&m->hold_ns, (uint64_t)(r->hold_ns > 0 ? r->hold_ns : 0));
    }
    sl_hist_record(&m->latency, &t->latency, ns);
}

void sl_metrics_retry(sl_metrics *m)
{
    ADD(&m->retries, 1);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */

static int slot_read(const sl_window_slot *s, int64_t *sec, uint64_t *n, uint64_t *hold)
{
    int64_t sec1 = __atomic_load_n(&s->sec1, __ATOMIC_ACQUIRE);

    *n = __atomic_load_n(&s->exchanges, __ATOMIC_ACQUIRE);
    *hold = __atomic_load_n(&s->hold_ns, __ATOMIC_ACQUIRE);
    *sec = sec1 - 1;
    return sec1 != 0 && LOAD(&s->sec1) == sec1;
}

void sl_metrics_recent(const sl_metrics *m, int64_t now_ns, uint64_t *n, uint64_t *hold)
{
    int64_t now_sec = now_ns / NS_PER_SEC, first_sec = now_sec - (SL_WINDOW_SECONDS - 1);
    uint64_t n0 = 0, h0 = 0, sn, sh, tn, th;
    int64_t oldest = INT64_MAX, sec;
    int i;

    for (i = 0; i < SL_WINDOW_SLOTS; i++)
        if (slot_read(&m->window[i], &sec, &sn, &sh) && sec >= first_sec && sec <= now_sec &&
            sec < oldest) {
            oldest = sec;
            n0 = sn;
            h0 = sh;
        }
    if (oldest == INT64_MAX)
        return;   /* no call finished in the window */
    /* Read after the slot, so the totals are never behind it. */
    tn = LOAD(&m->exchanges);
    th = LOAD(&m->hold_ns);
    *n += tn > n0 ? tn - n0 : 0;
    *hold += th > h0 ? th - h0 : 0;
}

/* Little's law over the window: the pool keeps hold/span connections
 * busy, which is arrival rate times mean hold time. */
static void health_load(struct sluice_pool_health *h, uint64_t n, uint64_t hold_ns,
                        int64_t span_ns)
{
    double need;

    if (n == 0 || span_ns <= 0)
        return;
    h->arrival_rate = (double)n * NS_PER_SEC / (double)span_ns;
    h->mean_latency_us = (double)hold_ns / 1000.0 / (double)n;
    need = HEADROOM * (double)hold_ns / (double)span_ns;
    h->recommended_max_connections =
        need > 1e9 ? 1000000000 : need < 1 ? 1 : (int)ceil_u64(need);
}

sluice_client *sl_metrics_first_client(sluice_factory *f, int *count)
{
    sluice_client *c;

    pthread_mutex_lock(&f->lock);
    c = f->clients;
    if (count)
        *count = f->nclients;
    pthread_mutex_unlock(&f->lock);
    return c;
}

static void pool_health(sluice_factory *f, const struct sluice_pool_stats *pool,
                        struct sluice_pool_health *h)
{
    int64_t now = sl_now_ns();
    int64_t start = (now / NS_PER_SEC - (SL_WINDOW_SECONDS - 1)) * NS_PER_SEC;
    uint64_t n = 0, hold = 0;
    sluice_client *c;

    memset(h, 0, sizeof *h);
    h->max_connections = f->opts.max_connections;
    h->utilization = h->max_connections > 0 ? (double)pool->in_use / h->max_connections : -1;
    h->waiting = pool->waiting;
    h->overflow = pool->closed[SLUICE_CLOSE_OVERFLOW];
    for (c = sl_metrics_first_client(f, NULL); c; c = c->next)
        sl_metrics_recent(&c->metrics, now, &n, &hold);
    if (f->totals.created_ns > start)
        start = f->totals.created_ns;
    health_load(h, n, hold, now - start);
}

void sl_metrics_latency(const sl_hist *h, struct sluice_latency_stats *out)
{
    static const double q[] = {0.5, 0.9, 0.99, 0.999, 1.0};
    int64_t v[5];

    memset(out, 0, sizeof *out);
    sl_hist_quantiles(h, q, v, 5);
    out->count = sl_hist_count(h);
    out->sum_us = (double)LOAD(&h->sum_ns) / 1000.0;
    if (out->count == 0)
        return;
    out->mean_us = out->sum_us / (double)out->count;
    out->p50_us = (double)v[0] / 1000.0;
    out->p90_us = (double)v[1] / 1000.0;
    out->p99_us = (double)v[2] / 1000.0;
    out->p999_us = (double)v[3] / 1000.0;
    out->max_us = (double)LOAD(&h->max_ns) / 1000.0;
}

void sl_metrics_add_counts(const sl_metrics *m, struct sluice_client_stats *s)
{
    uint64_t v;
    int i;

    for (i = 0; i < 6; i++) {
        v = LOAD(&m->status_class[i]);
        s->status_class[i] += v;
        s->requests += v;
    }
    for (i = 0; i < SLUICE_STATS_CODES; i++) {
        v = LOAD(&m->errors[i]);
        s->errors_by_code[i] += v;
        s->errors += v;
        s->requests += v;
    }
    s->retries += LOAD(&m->retries);
    s->bytes_sent += LOAD(&m->bytes_sent);
    s->bytes_received += LOAD(&m->bytes_received);
    s->in_flight += (int)LOAD(&m->in_flight);
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                    */
/* ------------------------------------------------------------------------ */

static void tls_counts(sluice_factory *f, struct sluice_pool_stats *pool)
{
    sl_tls_ctx *tls = __atomic_load_n(&f->net.tls, __ATOMIC_ACQUIRE);

    if (tls)
        sl_tls_ctx_counts(tls, &pool->handshakes_full, &pool->handshakes_resumed);
}

int sluice_client_stats(sluice_client *c, struct sluice_client_stats *out)
{
    int64_t now = sl_now_ns();
    size_t i;

    if (!out)
        return SLUICE_EINVAL;
    memset(out, 0, sizeof *out);
    if (!c)
        return SLUICE_EINVAL;
    sl_metrics_add_counts(&c->metrics, out);
    out->peak_in_flight = (int)LOAD(&c->metrics.peak_in_flight);
    sl_metrics_latency(&c->metrics.latency, &out->latency);
    out->endpoints = (int)c->neps;
    out->concurrency_limit = c->opts.adaptive_concurrency ? sl_adaptive_limit(&c->adapt)
                                                          : c->opts.max_in_flight;
    out->limited = atomic_load_explicit(&c->limited, memory_order_relaxed);
    for (i = 0; i < c->neps; i++) {
        sl_breaker *b = c->eps[i].breaker;
        if (!b)
            continue;
        out->breakers_open += sl_breaker_state(b, now) != SLUICE_BREAKER_CLOSED;
        out->breaker_transitions += sl_breaker_transitions(b);
    }
    return 0;
}

static void copy_counts(struct sluice_factory_stats *out, const struct sluice_client_stats *s)
{
    out->requests = s->requests;
    out->errors = s->errors;
    out->retries = s->retries;
    memcpy(out->status_class, s->status_class, sizeof out->status_class);
    memcpy(out->errors_by_code, s->errors_by_code, sizeof out->errors_by_code);
    out->bytes_sent = s->bytes_sent;
    out->bytes_received = s->bytes_received;
}

void sluice_factory_stats(sluice_factory *f, struct sluice_factory_stats *out)
{
    struct sluice_client_stats sum;
    struct sl_coalesce_stats cs;
    sluice_client *c;
    size_t i;

    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!f)
        return;
    sl_pool_stats(f->pool, NULL, &out->pool);
    sl_h2_stats(f->h2, &out->pool);
    sl_pool_uses_spread(f->pool, &out->conn_requests_min, &out->conn_requests_median,
                        &out->conn_requests_max);
    tls_counts(f, &out->pool);
    memset(&sum, 0, sizeof sum);
    for (c = sl_metrics_first_client(f, &out->clients); c; c = c->next) {
        sl_metrics_add_counts(&c->metrics, &sum);
        for (i = 0; i < c->neps; i++)
            if (c->eps[i].breaker)
                out->breaker_transitions += sl_breaker_transitions(c->eps[i].breaker);
    }
    copy_counts(out, &sum);
    out->in_flight = (int)__atomic_load_n(&f->in_flight, RELAXED);
    out->peak_in_flight = (int)LOAD(&f->totals.peak_in_flight);
    sl_metrics_latency(&f->totals.latency, &out->latency);
    memset(&cs, 0, sizeof cs);
    sl_coalesce_stats(f->co, &cs);
    out->coalesce_flights = cs.flights;
    out->coalesce_followers = cs.followers + cs.cache_hits;
    out->coalesce_cache_hits = cs.cache_hits;
    out->coalesce_cache_entries = cs.cache_entries;
    out->coalesce_cache_bytes = cs.cache_bytes;
    out->coalesce_cache_evictions = cs.cache_evictions;
    sluice_limiter_stats(f->limiter, &out->limiter);
    out->limiter_shared = sluice_limiter_is_shared(f->limiter);
    pool_health(f, &out->pool, &out->health);
}
