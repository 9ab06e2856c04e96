/* Metrics exports: the Prometheus text format and JSON, written from one
 * view of the factory's stats into a caller's buffer.
 *
 * Like the stats readers (metrics.c), this walks the factory's clients
 * without the registry lock: clients are only ever added, at the head of
 * the list, and freed with the factory. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "clock.h"
#include "coalesce.h"
#include "limiter.h"
#include "metrics.h"

#define RELAXED __ATOMIC_RELAXED
#define LOAD(p) __atomic_load_n((p), RELAXED)

static uint64_t load_u64(const void *base, size_t off)
{
    return LOAD((const uint64_t *)((const char *)base + off));
}
/* ------------------------------------------------------------------------ */
/* Bounded output and escaping                                              */
/* ------------------------------------------------------------------------ */

/* Writes what fits in buf (always NUL-terminated when cap > 0) and counts
 * the whole length, like snprintf. */
typedef struct out {
    char *buf;
    size_t cap, len;
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->len + 1 < o->cap) {
        size_t room = o->cap - 1 - o->len, k = n < room ? n : room;
        memcpy(o->buf + o->len, s, k);
        o->buf[o->len + k] = '\0';
    }
    o->len += n;
}

static void puts_(out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putf(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(out *o, const char *fmt, ...)
{
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* The length of the well-formed UTF-8 sequence (RFC 3629) at s, or 0. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n, i;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (left < n)
        return 0;
    for (i = 1; i < n; i++, lo = 0x80, hi = 0xBF)
        if (s[i] < lo || s[i] > hi)
            return 0;
    return n;
}

enum { PROM, JSON };

#define REPLACEMENT "\xEF\xBF\xBD"   /* U+FFFD */

/* One ASCII character that needs care.  Prometheus label values escape
 * only backslash, quote and newline; other control characters have no
 * escape there and become U+FFFD. */
static void put_special(out *o, unsigned char ch, int fmt)
{
    if (ch == '"' || ch == '\\')
        putf(o, "\\%c", ch);
    else if (ch == '\n')
        puts_(o, "\\n");
    else if (fmt == JSON)
        putf(o, "\\u%04x", ch);
    else
        puts_(o, REPLACEMENT);
}

/* A string as a label value or JSON string body: UTF-8 kept, escapes
 * applied, and a byte that is not well-formed UTF-8 replaced by U+FFFD,
 * so a hostile service name cannot break the document. */
static void put_str(out *o, const char *s, int fmt)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t left = strlen((const char *)p), n;

    for (; left; p += n, left -= n) {
        n = utf8_len(p, left);
        if (n == 0) {
            puts_(o, REPLACEMENT);
            n = 1;
        } else if (n == 1 && (*p < 0x20 || *p == '"' || *p == '\\' || (fmt == PROM && *p == 0x7f))) {
            put_special(o, *p, fmt);
        } else {
            put(o, (const char *)p, n);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Shared export tables                                                     */
/* ------------------------------------------------------------------------ */

/* The Prometheus histogram's bucket bounds, from the fine histogram. */
static const struct {
    int64_t ns;
    const char *label;
} le_bounds[] = {
    {100000, "0.0001"},       {250000, "0.00025"},      {500000, "0.0005"},
    {1000000, "0.001"},       {2500000, "0.0025"},      {5000000, "0.005"},
    {10000000, "0.01"},       {25000000, "0.025"},      {50000000, "0.05"},
    {100000000, "0.1"},       {250000000, "0.25"},      {500000000, "0.5"},
    {1000000000, "1"},        {2500000000LL, "2.5"},    {5000000000LL, "5"},
    {10000000000LL, "10"},    {30000000000LL, "30"},    {60000000000LL, "60"},
};
#define NLE (sizeof le_bounds / sizeof le_bounds[0])

static uint64_t cumulative(const sl_hist *h, uint64_t *cum)
{
    int64_t le[NLE];
    size_t i;

    for (i = 0; i < NLE; i++)
        le[i] = le_bounds[i].ns;
    return sl_hist_cumulative(h, le, NLE, cum);
}

static const char *const close_reasons[SLUICE_CLOSE_REASONS_] = {
    "expired", "lifetime", "overflow", "broken", "stale", "shutdown",
};

static const char *const breaker_states[] = {"closed", "open", "half_open"};

/* Known error codes: 1 .. NCODES - 1. */
#define NCODES (-SLUICE_ERRNO_MAX_ < SLUICE_STATS_CODES ? -SLUICE_ERRNO_MAX_ : SLUICE_STATS_CODES)

/* An endpoint repeated in a client's list is reported once. */
static int endpoint_repeated(const sluice_client *c, size_t i)
{
    size_t j;

    for (j = 0; j < i; j++)
        if (strcmp(c->eps[j].url.origin, c->eps[i].url.origin) == 0 &&
            strcmp(c->eps[j].url.path, c->eps[i].url.path) == 0)
            return 1;
    return 0;
}

/* Everything the factory-wide part of an export shows, read once. */
typedef struct view {
    struct sluice_factory_stats st;
    struct sl_coalesce_stats co;
    uint64_t followers;           /* flights' followers alone, without cache hits */
    double mean_hold_s;
    double decisions_per_round_trip;
} view;

static void read_view(sluice_factory *f, view *v)
{
    memset(v, 0, sizeof *v);
    sluice_factory_stats(f, &v->st);
    sl_coalesce_stats(f->co, &v->co);
    v->followers = v->co.followers;
    v->mean_hold_s = v->st.health.mean_latency_us / 1e6;
    if (v->st.limiter.round_trips)
        v->decisions_per_round_trip =
            (double)v->st.limiter.decisions / (double)v->st.limiter.round_trips;
}

enum { K_U64, K_INT, K_DBL, K_RATIO };

#define VOFF(field) offsetof(view, field)

/* The factory-wide figures with one value and no labels. */
static const struct scalar {
    const char *name, *type, *help;
    size_t off;
    int kind;
} factory_scalars[] = {
    {"sluice_clients", "gauge", "Clients the factory holds.", VOFF(st.clients), K_INT},
    {"sluice_factory_in_flight", "gauge",
     "Calls in flight through any client of the factory (warm-ups included).",
     VOFF(st.in_flight), K_INT},
    {"sluice_factory_in_flight_peak", "gauge", "Most calls in flight at once in the factory.",
     VOFF(st.peak_in_flight), K_INT},
    {"sluice_pool_max_connections", "gauge",
     "The pool's limit on open connections, all origins (0 = unlimited).",
     VOFF(st.health.max_connections), K_INT},
    {"sluice_pool_utilization_ratio", "gauge",
     "Connections in use over max_connections (absent when unlimited).",
     VOFF(st.health.utilization), K_RATIO},
    {"sluice_pool_arrival_rate", "gauge",
     "Upstream exchanges per second over the last 10 seconds.", VOFF(st.health.arrival_rate),
     K_DBL},
    {"sluice_pool_mean_hold_seconds", "gauge",
     "Mean time an exchange held a connection over the last 10 seconds.", VOFF(mean_hold_s),
     K_DBL},
    {"sluice_pool_recommended_max_connections", "gauge",
     "ceil(1.25 x arrival rate x mean hold time), Little's law with headroom (0 = no traffic).",
     VOFF(st.health.recommended_max_connections), K_INT},
    {"sluice_pool_h2_open", "gauge", "HTTP/2 connections open.", VOFF(st.pool.h2_open), K_INT},
    {"sluice_pool_h2_streams", "gauge", "HTTP/2 streams open now.", VOFF(st.pool.h2_streams),
     K_INT},
    {"sluice_pool_h2_streams_peak", "gauge", "Most HTTP/2 streams open at once.",
     VOFF(st.pool.h2_streams_peak), K_INT},
    {"sluice_pool_h2_goaways_total", "counter", "GOAWAY frames received on HTTP/2 connections.",
     VOFF(st.pool.h2_goaways), K_U64},
    {"sluice_pool_h2_refused_streams_total", "counter",
     "HTTP/2 streams the server refused (REFUSED_STREAM), sent again elsewhere when possible.",
     VOFF(st.pool.h2_refused), K_U64},
    {"sluice_limiter_shared", "gauge", "1 when the rate limiter is shared through Redis.",
     VOFF(st.limiter_shared), K_INT},
    {"sluice_limiter_allowed_total", "counter", "Rate limiter decisions that allowed.",
     VOFF(st.limiter.allowed), K_U64},
    {"sluice_limiter_throttled_total", "counter", "Rate limiter decisions that denied.",
     VOFF(st.limiter.throttled), K_U64},
    {"sluice_limiter_waits_total", "counter", "Acquires that slept before being allowed.",
     VOFF(st.limiter.waits), K_U64},
    {"sluice_limiter_fallbacks_total", "counter",
     "Decisions made by the fail mode because Redis was unreachable.",
     VOFF(st.limiter.fallbacks), K_U64},
    {"sluice_limiter_redis_errors_total", "counter", "Redis errors the limiter met.",
     VOFF(st.limiter.redis_errors), K_U64},
    {"sluice_limiter_round_trips_total", "counter", "Round trips to Redis.",
     VOFF(st.limiter.round_trips), K_U64},
    {"sluice_limiter_decisions_total", "counter", "Decisions sent to Redis.",
     VOFF(st.limiter.decisions), K_U64},
    {"sluice_limiter_decisions_per_round_trip", "gauge",
     "Decisions batched into one Redis round trip, on average.",
     VOFF(decisions_per_round_trip), K_DBL},
    {"sluice_limiter_sentinel_rediscoveries_total", "counter",
     "Times the Redis master's address went stale and the sentinels were asked again.",
     VOFF(st.limiter.sentinel_rediscoveries), K_U64},
    {"sluice_limiter_cluster_nodes", "gauge",
     "Redis Cluster primaries in the limiter's slot map (0: not a cluster).",
     VOFF(st.limiter.cluster_nodes), K_U64},
    {"sluice_limiter_cluster_moved_total", "counter", "Redis Cluster MOVED redirects followed.",
     VOFF(st.limiter.cluster_moved), K_U64},
    {"sluice_limiter_cluster_ask_total", "counter", "Redis Cluster ASK redirects followed.",
     VOFF(st.limiter.cluster_ask), K_U64},
    {"sluice_limiter_cluster_tryagain_total", "counter",
     "Redis Cluster TRYAGAIN answers sent again.", VOFF(st.limiter.cluster_tryagain), K_U64},
    {"sluice_limiter_cluster_refreshes_total", "counter",
     "Redis Cluster slot maps fetched (CLUSTER SLOTS).", VOFF(st.limiter.cluster_refreshes),
     K_U64},
    {"sluice_limiter_cluster_node_fallbacks_total", "counter",
     "Decisions the fail mode made because their cluster node failed or the cluster was down.",
     VOFF(st.limiter.cluster_node_fallbacks), K_U64},
    {"sluice_coalesce_flights_total", "counter", "Coalesced calls that went upstream (leaders).",
     VOFF(co.flights), K_U64},
    {"sluice_coalesce_followers_total", "counter", "Calls that waited for another's flight.",
     VOFF(followers), K_U64},
    {"sluice_coalesce_cache_hits_total", "counter", "Calls served by the micro-cache.",
     VOFF(co.cache_hits), K_U64},
    {"sluice_coalesce_saved_total", "counter",
     "Upstream calls saved: followers plus micro-cache hits.", VOFF(st.coalesce_followers),
     K_U64},
    {"sluice_coalesce_timeouts_total", "counter", "Followers that gave up at their deadline.",
     VOFF(co.timeouts), K_U64},
    {"sluice_coalesce_waiting", "gauge", "Followers waiting now.", VOFF(co.waiting), K_U64},
    {"sluice_coalesce_cache_entries", "gauge", "Micro-cache entries held now.",
     VOFF(co.cache_entries), K_U64},
    {"sluice_coalesce_cache_bytes", "gauge",
     "Memory the micro-cache holds, responses included (about).", VOFF(co.cache_bytes), K_U64},
    {"sluice_coalesce_cache_evictions_total", "counter",
     "Micro-cache entries dropped before expiry for coalesce_cache_max_bytes.",
     VOFF(co.cache_evictions), K_U64},
};

/* A view figure as a number (JSON and Prometheus read numbers alike). */
static void put_scalar(out *o, const view *v, const struct scalar *s)
{
    const char *p = (const char *)v + s->off;

    if (s->kind == K_U64)
        putf(o, "%llu", (unsigned long long)*(const uint64_t *)p);
    else if (s->kind == K_INT)
        putf(o, "%d", *(const int *)p);
    else
        putf(o, "%.9g", *(const double *)p);
}

/* The per-client figures held in one sl_metrics field. */
static const struct scalar client_scalars[] = {
    {"sluice_retries_total", "counter", "Policy retries: attempts after a call's first.",
     offsetof(sl_metrics, retries), K_U64},
    {"sluice_sent_bytes_total", "counter", "HTTP bytes written upstream (before TLS).",
     offsetof(sl_metrics, bytes_sent), K_U64},
    {"sluice_received_bytes_total", "counter", "HTTP bytes read from upstream (before TLS).",
     offsetof(sl_metrics, bytes_received), K_U64},
    {"sluice_in_flight", "gauge", "Calls inside sluice_client_do now.",
     offsetof(sl_metrics, in_flight), K_U64},
    {"sluice_in_flight_peak", "gauge", "Most calls inside sluice_client_do at once.",
     offsetof(sl_metrics, peak_in_flight), K_U64},
};
#define NSCALARS(t) (sizeof t / sizeof t[0])

/* ------------------------------------------------------------------------ */
/* Prometheus text format                                                   */
/* ------------------------------------------------------------------------ */

static void family(out *o, const char *name, const char *type, const char *help)
{
    putf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Opens a client's sample: `name{service="..."[,api_version="..."]`; the
 * caller adds labels and closes. */
static void client_sample(out *o, const char *name, const sluice_client *c)
{
    puts_(o, name);
    puts_(o, "{service=\"");
    put_str(o, c->service, PROM);
    if (c->api_version) {
        puts_(o, "\",api_version=\"");
        put_str(o, c->api_version, PROM);
    }
    puts_(o, "\"");
}

static void prom_client_scalars(out *o, sluice_client *head)
{
    const sluice_client *c;
    size_t i;

    for (i = 0; i < NSCALARS(client_scalars); i++) {
        const struct scalar *s = &client_scalars[i];
        family(o, s->name, s->type, s->help);
        for (c = head; c; c = c->next) {
            client_sample(o, s->name, c);
            putf(o, "} %llu\n", (unsigned long long)load_u64(&c->metrics, s->off));
        }
    }
}

static void prom_outcomes(out *o, sluice_client *head)
{
    const sluice_client *c;
    int i;

    family(o, "sluice_requests_total", "counter",
           "Calls answered with an HTTP status, by status class.");
    for (c = head; c; c = c->next)
        for (i = 1; i <= 5; i++) {
            client_sample(o, "sluice_requests_total", c);
            putf(o, ",class=\"%dxx\"} %llu\n", i,
                 (unsigned long long)LOAD(&c->metrics.status_class[i]));
        }
    family(o, "sluice_errors_total", "counter",
           "Calls that failed, by SLUICE_E* code (SLUICE_EUNKNOWN: a code past the table).");
    for (c = head; c; c = c->next)
        for (i = 0; i < NCODES; i++) {
            uint64_t v = LOAD(&c->metrics.errors[i]);
            if (i == 0 && v == 0)
                continue;
            client_sample(o, "sluice_errors_total", c);
            putf(o, ",code=\"%s\"} %llu\n", sluice_err_name(-i), (unsigned long long)v);
        }
}

static void prom_latency(out *o, sluice_client *head)
{
    static const char *const name = "sluice_request_duration_seconds";
    const sluice_client *c;
    uint64_t cum[NLE], total;
    size_t i;

    family(o, name, "histogram", "Whole-call latency of sluice_client_do.");
    for (c = head; c; c = c->next) {
        total = cumulative(&c->metrics.latency, cum);
        for (i = 0; i < NLE; i++) {
            client_sample(o, "sluice_request_duration_seconds_bucket", c);
            putf(o, ",le=\"%s\"} %llu\n", le_bounds[i].label, (unsigned long long)cum[i]);
        }
        client_sample(o, "sluice_request_duration_seconds_bucket", c);
        putf(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)total);
        client_sample(o, "sluice_request_duration_seconds_sum", c);
        putf(o, "} %.9f\n", (double)LOAD(&c->metrics.latency.sum_ns) / 1e9);
        client_sample(o, "sluice_request_duration_seconds_count", c);
        putf(o, "} %llu\n", (unsigned long long)total);
    }
}

static void endpoint_sample(out *o, const char *name, const sluice_client *c, size_t i)
{
    client_sample(o, name, c);
    puts_(o, ",endpoint=\"");
    put_str(o, c->eps[i].url.origin, PROM);
    put_str(o, c->eps[i].url.path, PROM);
    puts_(o, "\"");
}

static void prom_breakers(out *o, sluice_client *head)
{
    const sluice_client *c;
    int64_t now = sl_now_ns();
    size_t i;
    int s, state;

    family(o, "sluice_breaker_state", "gauge",
           "1 for the circuit breaker's current state, per endpoint.");
    for (c = head; c; c = c->next)
        for (i = 0; i < c->neps; i++) {
            if (!c->eps[i].breaker || endpoint_repeated(c, i))
                continue;
            state = (int)sl_breaker_state(c->eps[i].breaker, now);
            for (s = 0; s < 3; s++) {
                endpoint_sample(o, "sluice_breaker_state", c, i);
                putf(o, ",state=\"%s\"} %d\n", breaker_states[s], s == state);
            }
        }
    family(o, "sluice_breaker_transitions_total", "counter",
           "Circuit breaker state changes, per endpoint.");
    for (c = head; c; c = c->next)
        for (i = 0; i < c->neps; i++) {
            if (!c->eps[i].breaker || endpoint_repeated(c, i))
                continue;
            endpoint_sample(o, "sluice_breaker_transitions_total", c, i);
            putf(o, "} %llu\n", (unsigned long long)sl_breaker_transitions(c->eps[i].breaker));
        }
}

/* Per-origin pool figures: one family per pass over the pool's keys, as
 * the format wants a family's samples together. */
enum {
    PF_CONNECTIONS, PF_WAITING, PF_PEAK, PF_CREATED, PF_REUSED, PF_TIMEOUTS, PF_CLOSED,
    PF_WAIT, PF_WAIT_Q, PF_COUNT
};

static const struct {
    const char *name, *type, *help;
} pool_families[PF_COUNT] = {
    [PF_CONNECTIONS] = {"sluice_pool_connections", "gauge", "Open connections, by state."},
    [PF_WAITING] = {"sluice_pool_waiting", "gauge", "Checkouts waiting for capacity."},
    [PF_PEAK] = {"sluice_pool_peak_in_use", "gauge", "Most connections in use at once."},
    [PF_CREATED] = {"sluice_pool_created_total", "counter", "Connections opened."},
    [PF_REUSED] = {"sluice_pool_reused_total", "counter",
                   "Checkouts that reused an idle connection."},
    [PF_TIMEOUTS] = {"sluice_pool_timeouts_total", "counter",
                     "Checkouts that gave up waiting for capacity."},
    [PF_CLOSED] = {"sluice_pool_closed_total", "counter", "Connections closed, by reason."},
    [PF_WAIT] = {"sluice_pool_wait_seconds_total", "counter",
                 "Time checkouts spent waiting for capacity."},
    [PF_WAIT_Q] = {"sluice_pool_checkout_wait_seconds", "summary",
                   "Wait of checkouts that queued (granted or timed out): median, 99th "
                   "percentile, longest (quantile 1)."},
};

typedef struct pool_pass {
    out *o;
    int family;
} pool_pass;

static void origin_sample(out *o, const char *name, const char *origin)
{
    puts_(o, name);
    puts_(o, "{origin=\"");
    put_str(o, origin, PROM);
    puts_(o, "\"");
}

static void prom_origin(void *ud, const char *origin, const struct sluice_pool_stats *s)
{
    pool_pass *pp = ud;
    const char *name = pool_families[pp->family].name;
    uint64_t v = 0;
    int i;

    switch (pp->family) {
    case PF_CONNECTIONS:
        origin_sample(pp->o, name, origin);
        putf(pp->o, ",state=\"idle\"} %d\n", s->idle);
        origin_sample(pp->o, name, origin);
        putf(pp->o, ",state=\"in_use\"} %d\n", s->in_use);
        return;
    case PF_CLOSED:
        for (i = 0; i < SLUICE_CLOSE_REASONS_; i++) {
            origin_sample(pp->o, name, origin);
            putf(pp->o, ",reason=\"%s\"} %llu\n", close_reasons[i],
                 (unsigned long long)s->closed[i]);
        }
        return;
    case PF_WAIT:
        origin_sample(pp->o, name, origin);
        putf(pp->o, "} %.6f\n", (double)s->wait_us_total / 1e6);
        return;
    case PF_WAIT_Q:
        origin_sample(pp->o, name, origin);
        putf(pp->o, ",quantile=\"0.5\"} %.6f\n", (double)s->wait_p50_us / 1e6);
        origin_sample(pp->o, name, origin);
        putf(pp->o, ",quantile=\"0.99\"} %.6f\n", (double)s->wait_p99_us / 1e6);
        origin_sample(pp->o, name, origin);
        putf(pp->o, ",quantile=\"1\"} %.6f\n", (double)s->wait_max_us / 1e6);
        puts_(pp->o, name);
        puts_(pp->o, "_sum");
        origin_sample(pp->o, "", origin);
        putf(pp->o, "} %.6f\n", (double)s->wait_us_total / 1e6);
        puts_(pp->o, name);
        puts_(pp->o, "_count");
        origin_sample(pp->o, "", origin);
        putf(pp->o, "} %llu\n", (unsigned long long)s->waited);
        return;
    case PF_WAITING: v = (uint64_t)s->waiting; break;
    case PF_PEAK: v = (uint64_t)s->peak_in_use; break;
    case PF_CREATED: v = s->created; break;
    case PF_REUSED: v = s->reused; break;
    case PF_TIMEOUTS: v = s->timeouts; break;
    }
    origin_sample(pp->o, name, origin);
    putf(pp->o, "} %llu\n", (unsigned long long)v);
}

static void prom_pool(out *o, sluice_factory *f, const view *v)
{
    pool_pass pp = {o, 0};

    for (pp.family = 0; pp.family < PF_COUNT; pp.family++) {
        family(o, pool_families[pp.family].name, pool_families[pp.family].type,
               pool_families[pp.family].help);
        sl_pool_foreach_key(f->pool, prom_origin, &pp);
    }
    family(o, "sluice_tls_handshakes_total", "counter", "TLS handshakes, full or resumed.");
    putf(o, "sluice_tls_handshakes_total{kind=\"full\"} %llu\n",
         (unsigned long long)v->st.pool.handshakes_full);
    putf(o, "sluice_tls_handshakes_total{kind=\"resumed\"} %llu\n",
         (unsigned long long)v->st.pool.handshakes_resumed);
}

static void prom_factory_scalars(out *o, const view *v)
{
    size_t i;

    for (i = 0; i < NSCALARS(factory_scalars); i++) {
        const struct scalar *s = &factory_scalars[i];
        family(o, s->name, s->type, s->help);
        if (s->kind == K_RATIO && *(const double *)((const char *)v + s->off) < 0)
            continue;
        putf(o, "%s ", s->name);
        put_scalar(o, v, s);
        puts_(o, "\n");
    }
}

static const struct node_family {
    const char *name, *type, *help;
    size_t off;
} node_families[] = {
    {"sluice_limiter_node_primary", "gauge",
     "1 when the limiter's Redis Cluster slot map names the node for a slot.",
     offsetof(struct sluice_limiter_node_stats, primary)},
    {"sluice_limiter_node_round_trips_total", "counter",
     "Round trips (pipelines of EVALSHAs) to one Redis Cluster node.",
     offsetof(struct sluice_limiter_node_stats, round_trips)},
    {"sluice_limiter_node_decisions_total", "counter",
     "Decisions sent to one Redis Cluster node.",
     offsetof(struct sluice_limiter_node_stats, decisions)},
    {"sluice_limiter_node_redis_errors_total", "counter",
     "Failed connects, round trips and queue timeouts of one Redis Cluster node.",
     offsetof(struct sluice_limiter_node_stats, redis_errors)},
    {"sluice_limiter_node_fallbacks_total", "counter",
     "Decisions the fail mode made because one Redis Cluster node failed.",
     offsetof(struct sluice_limiter_node_stats, fallbacks)},
};

static unsigned long long node_value(const struct sluice_limiter_node_stats *ns, size_t off)
{
    const char *p = (const char *)ns + off;

    if (off == offsetof(struct sluice_limiter_node_stats, primary))
        return (unsigned long long)*(const int *)p;
    return (unsigned long long)*(const uint64_t *)p;
}

/* Per node of a Redis Cluster limiter; nothing otherwise. */
static void prom_limiter_nodes(out *o, sluice_factory *f)
{
    struct sluice_limiter_node_stats ns;
    size_t i, k;

    if (!sl_limiter_cluster_node(f->limiter, 0, &ns))
        return;
    for (k = 0; k < sizeof node_families / sizeof node_families[0]; k++) {
        family(o, node_families[k].name, node_families[k].type, node_families[k].help);
        for (i = 0; sl_limiter_cluster_node(f->limiter, i, &ns); i++) {
            putf(o, "%s{node=\"", node_families[k].name);
            put_str(o, ns.addr, PROM);
            putf(o, "\"} %llu\n", node_value(&ns, node_families[k].off));
        }
    }
}

/* The concurrency limit (adaptive or max_in_flight, 0 = none) and the
 * calls it held back, per client. */
static int concurrency_limit(sluice_client *c)
{
    return c->opts.adaptive_concurrency ? sl_adaptive_limit(&c->adapt) : c->opts.max_in_flight;
}

static void prom_concurrency(out *o, sluice_client *head)
{
    sluice_client *c;

    family(o, "sluice_concurrency_limit", "gauge",
           "Calls allowed in flight now: the adaptive limit, else max_in_flight (0 = none).");
    for (c = head; c; c = c->next) {
        client_sample(o, "sluice_concurrency_limit", c);
        putf(o, "} %d\n", concurrency_limit(c));
    }
    family(o, "sluice_limited_total", "counter",
           "Calls that waited for a place under the concurrency limit or were refused one.");
    for (c = head; c; c = c->next) {
        client_sample(o, "sluice_limited_total", c);
        putf(o, "} %llu\n",
             (unsigned long long)atomic_load_explicit(&c->limited, memory_order_relaxed));
    }
}

static void prometheus(out *o, sluice_factory *f, const view *v)
{
    sluice_client *head = sl_metrics_first_client(f, NULL);

    prom_outcomes(o, head);
    prom_client_scalars(o, head);
    prom_concurrency(o, head);
    prom_latency(o, head);
    prom_breakers(o, head);
    prom_factory_scalars(o, v);
    prom_limiter_nodes(o, f);
    prom_pool(o, f, v);
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */
/* ------------------------------------------------------------------------ */

/* `"key":`, after a comma unless it is the object's first member (*n
 * counts the members written). */
static void jkey(out *o, int *n, const char *key)
{
    putf(o, "%s\"%s\":", (*n)++ ? "," : "", key);
}

static void jstr(out *o, int *n, const char *key, const char *s)
{
    jkey(o, n, key);
    if (!s) {
        puts_(o, "null");
        return;
    }
    puts_(o, "\"");
    put_str(o, s, JSON);
    puts_(o, "\"");
}

static void ju64(out *o, int *n, const char *key, uint64_t v)
{
    jkey(o, n, key);
    putf(o, "%llu", (unsigned long long)v);
}

static void jdbl(out *o, int *n, const char *key, double v)
{
    jkey(o, n, key);
    putf(o, "%.9g", v);
}

static void json_counts(out *o, int *n, const struct sluice_client_stats *s)
{
    int i, m = 0;

    ju64(o, n, "requests", s->requests);
    jkey(o, n, "status");
    puts_(o, "{");
    for (i = 1; i <= 5; i++)
        putf(o, "%s\"%dxx\":%llu", i > 1 ? "," : "", i, (unsigned long long)s->status_class[i]);
    puts_(o, "}");
    ju64(o, n, "errors", s->errors);
    jkey(o, n, "errors_by_code");
    puts_(o, "{");
    for (i = 0; i < NCODES; i++)
        if (i > 0 || s->errors_by_code[0])
            ju64(o, &m, sluice_err_name(-i), s->errors_by_code[i]);
    puts_(o, "}");
    ju64(o, n, "retries", s->retries);
    ju64(o, n, "bytes_sent", s->bytes_sent);
    ju64(o, n, "bytes_received", s->bytes_received);
    ju64(o, n, "in_flight", (uint64_t)s->in_flight);
    ju64(o, n, "in_flight_peak", (uint64_t)s->peak_in_flight);
}

static void json_latency(out *o, int *n, const sl_hist *h)
{
    struct sluice_latency_stats l;
    uint64_t cum[NLE], total;
    size_t i;
    int m = 0;

    sl_metrics_latency(h, &l);
    total = cumulative(h, cum);
    jkey(o, n, "latency");
    puts_(o, "{");
    ju64(o, &m, "count", l.count);
    jdbl(o, &m, "sum_seconds", l.sum_us / 1e6);
    jdbl(o, &m, "mean_us", l.mean_us);
    jdbl(o, &m, "p50_us", l.p50_us);
    jdbl(o, &m, "p90_us", l.p90_us);
    jdbl(o, &m, "p99_us", l.p99_us);
    jdbl(o, &m, "p999_us", l.p999_us);
    jdbl(o, &m, "max_us", l.max_us);
    jkey(o, &m, "buckets");
    puts_(o, "{");
    for (i = 0; i < NLE; i++)
        putf(o, "\"%s\":%llu,", le_bounds[i].label, (unsigned long long)cum[i]);
    putf(o, "\"+Inf\":%llu}}", (unsigned long long)total);
}

static void json_breakers(out *o, int *n, const sluice_client *c)
{
    int64_t now = sl_now_ns();
    size_t i;
    int first = 1;

    jkey(o, n, "breakers");
    puts_(o, "[");
    for (i = 0; i < c->neps; i++) {
        sl_breaker *b = c->eps[i].breaker;
        int m = 0;
        if (!b || endpoint_repeated(c, i))
            continue;
        puts_(o, first ? "{" : ",{");
        first = 0;
        jkey(o, &m, "endpoint");
        puts_(o, "\"");
        put_str(o, c->eps[i].url.origin, JSON);
        put_str(o, c->eps[i].url.path, JSON);
        puts_(o, "\"");
        jstr(o, &m, "state", breaker_states[sl_breaker_state(b, now)]);
        ju64(o, &m, "transitions", sl_breaker_transitions(b));
        puts_(o, "}");
    }
    puts_(o, "]");
}

static void json_client(out *o, sluice_client *c)
{
    struct sluice_client_stats s;
    int n = 0;

    memset(&s, 0, sizeof s);
    sl_metrics_add_counts(&c->metrics, &s);
    s.peak_in_flight = (int)LOAD(&c->metrics.peak_in_flight);
    puts_(o, "{");
    jstr(o, &n, "service", c->service);
    jstr(o, &n, "api_version", c->api_version);
    json_counts(o, &n, &s);
    ju64(o, &n, "concurrency_limit", (uint64_t)concurrency_limit(c));
    ju64(o, &n, "limited", atomic_load_explicit(&c->limited, memory_order_relaxed));
    json_latency(o, &n, &c->metrics.latency);
    json_breakers(o, &n, c);
    puts_(o, "}");
}

/* The figures of a struct sluice_pool_stats, members of an open object. */
static void json_pool_stats(out *o, int *n, const struct sluice_pool_stats *s)
{
    int i, m = 0;

    ju64(o, n, "open", (uint64_t)s->open);
    ju64(o, n, "idle", (uint64_t)s->idle);
    ju64(o, n, "in_use", (uint64_t)s->in_use);
    ju64(o, n, "waiting", (uint64_t)s->waiting);
    ju64(o, n, "peak_in_use", (uint64_t)s->peak_in_use);
    ju64(o, n, "created", s->created);
    ju64(o, n, "reused", s->reused);
    ju64(o, n, "timeouts", s->timeouts);
    jdbl(o, n, "wait_seconds_total", (double)s->wait_us_total / 1e6);
    ju64(o, n, "waited", s->waited);
    jdbl(o, n, "wait_p50_seconds", (double)s->wait_p50_us / 1e6);
    jdbl(o, n, "wait_p99_seconds", (double)s->wait_p99_us / 1e6);
    jdbl(o, n, "wait_max_seconds", (double)s->wait_max_us / 1e6);
    jkey(o, n, "closed");
    puts_(o, "{");
    for (i = 0; i < SLUICE_CLOSE_REASONS_; i++)
        ju64(o, &m, close_reasons[i], s->closed[i]);
    puts_(o, "}");
}

typedef struct origin_pass {
    out *o;
    int n;
} origin_pass;

static void json_origin(void *ud, const char *origin, const struct sluice_pool_stats *s)
{
    origin_pass *op = ud;
    int m = 0;

    puts_(op->o, op->n++ ? ",{" : "{");
    jstr(op->o, &m, "origin", origin);
    json_pool_stats(op->o, &m, s);
    puts_(op->o, "}");
}

/* The view's scalars named `prefix`..., keyed by the rest of the name
 * without "_total": the same figures under the same names as in the
 * Prometheus text.  A ratio below 0 (no limit) is null. */
static void json_scalars(out *o, int *n, const view *v, const char *prefix)
{
    size_t i, plen = strlen(prefix);
    char key[64];

    for (i = 0; i < NSCALARS(factory_scalars); i++) {
        const struct scalar *s = &factory_scalars[i];
        const char *rest;
        size_t len;
        /* Only a name that starts with the prefix is long enough to skip it. */
        if (strncmp(s->name, prefix, plen) != 0)
            continue;
        rest = s->name + plen;
        len = strlen(rest);
        if (len > 6 && strcmp(rest + len - 6, "_total") == 0)
            len -= 6;
        snprintf(key, sizeof key, "%.*s", (int)len, rest);
        jkey(o, n, key);
        if (s->kind == K_RATIO && *(const double *)((const char *)v + s->off) < 0)
            puts_(o, "null");
        else
            put_scalar(o, v, s);
    }
}

static void json_pool(out *o, int *n, sluice_factory *f, const view *v)
{
    origin_pass op = {o, 0};
    int m = 0;

    jkey(o, n, "pool");
    puts_(o, "{");
    json_scalars(o, &m, v, "sluice_pool_");
    ju64(o, &m, "overflow", v->st.health.overflow);
    json_pool_stats(o, &m, &v->st.pool);
    ju64(o, &m, "tls_handshakes_full", v->st.pool.handshakes_full);
    ju64(o, &m, "tls_handshakes_resumed", v->st.pool.handshakes_resumed);
    jkey(o, &m, "origins");
    puts_(o, "[");
    sl_pool_foreach_key(f->pool, json_origin, &op);
    puts_(o, "]}");
}

/* "nodes": [{"node": "host:port", "primary": 1, "round_trips": ...}, ...]
 * on a Redis Cluster; nothing otherwise. */
static void json_limiter_nodes(out *o, int *n, sluice_factory *f)
{
    struct sluice_limiter_node_stats ns;
    size_t i, k;

    if (!sl_limiter_cluster_node(f->limiter, 0, &ns))
        return;
    jkey(o, n, "nodes");
    puts_(o, "[");
    for (i = 0; sl_limiter_cluster_node(f->limiter, i, &ns); i++) {
        int m = 0;

        puts_(o, i ? ",{" : "{");
        jstr(o, &m, "node", ns.addr);
        for (k = 0; k < sizeof node_families / sizeof node_families[0]; k++) {
            /* the Prometheus name less "sluice_limiter_node_" and "_total" */
            const char *name = node_families[k].name + strlen("sluice_limiter_node_");
            size_t len = strlen(name);

            if (len > 6 && strcmp(name + len - 6, "_total") == 0)
                len -= 6;
            putf(o, ",\"%.*s\":%llu", (int)len, name, node_value(&ns, node_families[k].off));
        }
        puts_(o, "}");
    }
    puts_(o, "]");
}

static void json(out *o, sluice_factory *f, const view *v)
{
    struct sluice_client_stats sum;
    sluice_client *c, *head = sl_metrics_first_client(f, NULL);
    int n = 0, m = 0;

    memset(&sum, 0, sizeof sum);
    for (c = head; c; c = c->next)
        sl_metrics_add_counts(&c->metrics, &sum);
    sum.in_flight = v->st.in_flight;
    sum.peak_in_flight = v->st.peak_in_flight;
    puts_(o, "{");
    jstr(o, &n, "version", SLUICE_VERSION_STRING);
    jkey(o, &n, "factory");
    puts_(o, "{");
    ju64(o, &m, "clients", (uint64_t)v->st.clients);
    json_counts(o, &m, &sum);
    json_latency(o, &m, &f->totals.latency);
    puts_(o, "}");
    jkey(o, &n, "clients");
    puts_(o, "[");
    for (c = head; c; c = c->next) {
        if (c != head)
            puts_(o, ",");
        json_client(o, c);
    }
    puts_(o, "]");
    json_pool(o, &n, f, v);
    m = 0;
    jkey(o, &n, "limiter");
    puts_(o, "{");
    json_scalars(o, &m, v, "sluice_limiter_");
    json_limiter_nodes(o, &m, f);
    puts_(o, "}");
    m = 0;
    jkey(o, &n, "coalescer");
    puts_(o, "{");
    json_scalars(o, &m, v, "sluice_coalesce_");
    puts_(o, "}}\n");
}

/* ------------------------------------------------------------------------ */
/* Export                                                                   */
/* ------------------------------------------------------------------------ */

size_t sluice_factory_metrics(sluice_factory *f, int format, char *buf, size_t cap)
{
    out o = {buf, buf ? cap : 0, 0};
    view v;

    if (o.cap > 0)
        buf[0] = '\0';
    if (!f || (format != SLUICE_METRICS_PROMETHEUS && format != SLUICE_METRICS_JSON))
        return 0;
    read_view(f, &v);
    if (format == SLUICE_METRICS_PROMETHEUS)
        prometheus(&o, f, &v);
    else
        json(&o, f, &v);
    return o.len;
}
