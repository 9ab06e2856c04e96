/* Circuit breaker: consecutive-failure and failure-rate rules, a timed open
 * state, half-open probes, and state-change hooks delivered in order with
 * no lock held. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "breaker.h"
#include "error.h"
#include "log.h"

#define NS_PER_MS 1000000LL
/* The rate window is a ring of bits; this bounds its memory (128 KiB). */
#define MAX_WINDOW (1 << 20)

/* The options with defaults applied.  A rule that is off holds 0; with
 * `disabled` every other field is 0. */
typedef struct bopts {
    int disabled;
    int threshold;          /* consecutive failures; 0 = rule off */
    int rate_pct;           /* 0 = rule off (window and min_calls are 0 then) */
    int window;
    int min_calls;
    int recovery_ms;
    int probes;
    sluice_breaker_hook hook;
    void *hook_ud;
} bopts;

typedef struct transition {
    unsigned char from, to;
} transition;

struct sl_breaker {
    pthread_mutex_t mu;
    bopts o;                /* immutable after new */
    char *service, *endpoint;

    /* Written under mu; read without it by the CLOSED fast path of allow. */
    _Atomic int state;
    _Atomic uint64_t transitions;

    /* Guarded by mu. */
    int64_t opened_at;
    int consecutive;
    uint64_t *ring;         /* bit i set: call i of the window failed */
    int ring_pos, ring_count, ring_failures;
    int probes_out;         /* probes allowed and not yet recorded or released */
    int probes_ok;          /* probes that succeeded in this half-open spell */

    /* Transitions waiting for their hook, oldest first; guarded by mu.
     * `delivering` is set while one thread is running hooks. */
    transition *q;
    size_t qhead, qlen, qcap;
    unsigned lost;          /* transitions whose hook was lost to ENOMEM */
    int delivering;
};

static const char *const state_names[] = {"closed", "open", "half-open"};

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

#define DEFAULT_THRESHOLD 5
#define DEFAULT_RATE_PCT 50
#define DEFAULT_WINDOW 100
#define DEFAULT_MIN_CALLS 20
#define DEFAULT_RECOVERY_MS 30000
#define DEFAULT_PROBES 3

void sl_breaker_opts_defaults(sluice_breaker_opts *o)
{
    memset(o, 0, sizeof *o);
    o->failure_threshold = DEFAULT_THRESHOLD;
    o->failure_rate_pct = DEFAULT_RATE_PCT;
    o->window_size = DEFAULT_WINDOW;
    o->min_calls = DEFAULT_MIN_CALLS;
    o->recovery_timeout_ms = DEFAULT_RECOVERY_MS;
    o->half_open_probes = DEFAULT_PROBES;
}

void sl_breaker_opts_effective(const sluice_breaker_opts *in, sluice_breaker_opts *out)
{
    sluice_breaker_opts d;

    sl_breaker_opts_defaults(&d);
    *out = *in;
    if (!out->failure_threshold)
        out->failure_threshold = d.failure_threshold;
    if (!out->failure_rate_pct)
        out->failure_rate_pct = d.failure_rate_pct;
    if (!out->window_size)
        out->window_size = d.window_size;
    if (!out->min_calls)
        out->min_calls = d.min_calls;
    if (!out->recovery_timeout_ms)
        out->recovery_timeout_ms = d.recovery_timeout_ms;
    if (!out->half_open_probes)
        out->half_open_probes = d.half_open_probes;
}

/* 0 takes `def`, SLUICE_OFF gives `off` (-2: SLUICE_OFF is invalid). */
static int norm_field(int v, int def, int off, const char *name, int *out, sluice_error *err)
{
    if (v == 0)
        *out = def;
    else if (v == SLUICE_OFF && off != -2)
        *out = off;
    else if (v < 0)
        return sl_err(err, SLUICE_EINVAL, "breaker option %s is negative (%d)", name, v);
    else
        *out = v;
    return 0;
}

static int normalise(const sluice_breaker_opts *in, bopts *o, sluice_error *err)
{
    static const sluice_breaker_opts defaults;

    memset(o, 0, sizeof *o);
    if (!in)
        in = &defaults;
    if (in->disabled) {
        o->disabled = 1;
        return 0;
    }
    if (norm_field(in->failure_threshold, DEFAULT_THRESHOLD, 0, "failure_threshold",
                   &o->threshold, err) ||
        norm_field(in->failure_rate_pct, DEFAULT_RATE_PCT, 0, "failure_rate_pct", &o->rate_pct,
                   err) ||
        norm_field(in->window_size, DEFAULT_WINDOW, -2, "window_size", &o->window, err) ||
        norm_field(in->min_calls, DEFAULT_MIN_CALLS, 1, "min_calls", &o->min_calls, err) ||
        norm_field(in->recovery_timeout_ms, DEFAULT_RECOVERY_MS, -2, "recovery_timeout_ms",
                   &o->recovery_ms, err) ||
        norm_field(in->half_open_probes, DEFAULT_PROBES, -2, "half_open_probes", &o->probes,
                   err))
        return SLUICE_EINVAL;
    if (o->rate_pct > 100)
        return sl_err(err, SLUICE_EINVAL, "breaker option failure_rate_pct %d is above 100",
                      o->rate_pct);
    if (o->window > MAX_WINDOW)
        return sl_err(err, SLUICE_EINVAL, "breaker option window_size %d is above %d", o->window,
                      MAX_WINDOW);
    if (o->rate_pct == 0)
        o->window = o->min_calls = 0;
    else if (o->min_calls > o->window)
        o->min_calls = o->window;   /* else the rate rule could never fire */
    o->hook = in->on_state_change;
    o->hook_ud = in->hook_ud;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

static void free_parts(sl_breaker *b)
{
    sl_free(b->service);
    sl_free(b->endpoint);
    sl_free(b->ring);
    sl_free(b->q);
    sl_free(b);
}

sl_breaker *sl_breaker_new(const sluice_breaker_opts *o, const char *service,
                           const char *endpoint, sluice_error *err)
{
    sl_breaker *b;
    bopts n;

    if (normalise(o, &n, err) != 0)
        return NULL;
    b = sl_calloc(1, sizeof *b);
    if (!b) {
        sl_err(err, SLUICE_ENOMEM, "out of memory creating the breaker for %s %s",
               service ? service : "", endpoint ? endpoint : "");
        return NULL;
    }
    b->o = n;
    b->qcap = 4;
    b->service = sl_strdup(service ? service : "");
    b->endpoint = sl_strdup(endpoint ? endpoint : "");
    b->q = sl_calloc(b->qcap, sizeof *b->q);
    if (n.window)
        b->ring = sl_calloc(((size_t)n.window + 63) / 64, sizeof *b->ring);
    if (!b->service || !b->endpoint || !b->q || (n.window && !b->ring) ||
        pthread_mutex_init(&b->mu, NULL) != 0) {
        sl_err(err, SLUICE_ENOMEM, "out of memory creating the breaker for %s %s",
               service ? service : "", endpoint ? endpoint : "");
        free_parts(b);
        return NULL;
    }
    atomic_init(&b->state, SLUICE_BREAKER_CLOSED);
    atomic_init(&b->transitions, 0);
    return b;
}

void sl_breaker_free(sl_breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free_parts(b);
}

/* ------------------------------------------------------------------------ */
/* State changes (mu held) and their hooks (mu not held)                    */
/* ------------------------------------------------------------------------ */

/* Queues a transition for its hook.  Growth failure loses that one call
 * (logged by the deliverer, outside the lock), never the order of the
 * others. */
static void enqueue(sl_breaker *b, int from, int to)
{
    if (b->qlen == b->qcap) {
        size_t i, cap = b->qcap * 2;
        transition *q = sl_malloc(cap * sizeof *q);
        if (!q) {
            b->lost++;
            return;
        }
        for (i = 0; i < b->qlen; i++)
            q[i] = b->q[(b->qhead + i) % b->qcap];
        sl_free(b->q);
        b->q = q;
        b->qcap = cap;
        b->qhead = 0;
    }
    b->q[(b->qhead + b->qlen) % b->qcap] = (transition){(unsigned char)from, (unsigned char)to};
    b->qlen++;
}

static void reset_window(sl_breaker *b)
{
    if (b->ring)
        memset(b->ring, 0, ((size_t)b->o.window + 63) / 64 * sizeof *b->ring);
    b->ring_pos = b->ring_count = b->ring_failures = 0;
    b->consecutive = 0;
}

static void set_state(sl_breaker *b, sluice_breaker_state to, int64_t now_ns)
{
    int from = atomic_load_explicit(&b->state, memory_order_relaxed);

    atomic_store_explicit(&b->state, (int)to, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->transitions, 1, memory_order_relaxed);
    b->probes_out = b->probes_ok = 0;
    if (to == SLUICE_BREAKER_OPEN)
        b->opened_at = now_ns;
    else if (to == SLUICE_BREAKER_CLOSED)
        reset_window(b);
    enqueue(b, from, (int)to);
}

/* OPEN becomes HALF_OPEN once the recovery timeout has passed. */
static void check_recovery(sl_breaker *b, int64_t now_ns)
{
    if (atomic_load_explicit(&b->state, memory_order_relaxed) == SLUICE_BREAKER_OPEN &&
        now_ns - b->opened_at >= (int64_t)b->o.recovery_ms * NS_PER_MS)
        set_state(b, SLUICE_BREAKER_HALF_OPEN, now_ns);
}

/* Unlocks mu; then, unless another thread is already at it, runs the
 * hooks of every queued transition in order, taking mu only to dequeue. */
static void unlock_and_deliver(sl_breaker *b)
{
    transition t;
    unsigned lost;

    if ((b->qlen == 0 && b->lost == 0) || b->delivering) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->delivering = 1;
    for (;;) {
        if (b->lost) {
            lost = b->lost;
            b->lost = 0;
            pthread_mutex_unlock(&b->mu);
            SL_WARN("circuit for %s %s: out of memory, %u state-change hook call(s) skipped",
                    b->service, b->endpoint, lost);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        if (b->qlen == 0) {
            b->delivering = 0;
            pthread_mutex_unlock(&b->mu);
            return;
        }
        t = b->q[b->qhead];
        b->qhead = (b->qhead + 1) % b->qcap;
        b->qlen--;
        pthread_mutex_unlock(&b->mu);
        SL_INFO("circuit for %s %s: %s -> %s", b->service, b->endpoint, state_names[t.from],
                state_names[t.to]);
        if (b->o.hook)
            b->o.hook(b->service, b->endpoint, (sluice_breaker_state)t.from,
                      (sluice_breaker_state)t.to, b->o.hook_ud);
        pthread_mutex_lock(&b->mu);
    }
}

/* ------------------------------------------------------------------------ */
/* Calls                                                                    */
/* ------------------------------------------------------------------------ */

/* What allow decided, for the message written after unlocking. */
typedef struct verdict {
    int state;
    int64_t wait_ns;
} verdict;

static int open_error(const sl_breaker *b, const verdict *v, sluice_error *err)
{
    if (v->state == SLUICE_BREAKER_HALF_OPEN)
        return sl_err(err, SLUICE_ECIRCUITOPEN,
                      "circuit half-open for %s %s; all %d probes in flight, retry later",
                      b->service, b->endpoint, b->o.probes);
    return sl_err(err, SLUICE_ECIRCUITOPEN, "circuit open for %s %s; retry in %lld ms",
                  b->service, b->endpoint, (long long)((v->wait_ns + NS_PER_MS - 1) / NS_PER_MS));
}

int sl_breaker_allow(sl_breaker *b, int64_t now_ns, int *probe, sluice_error *err)
{
    verdict v = {SLUICE_BREAKER_CLOSED, 0};
    int allowed = 0, is_probe = 0;

    if (probe)
        *probe = 0;
    /* The hot path: a closed (or disabled) breaker costs one atomic load. */
    if (!b || b->o.disabled ||
        atomic_load_explicit(&b->state, memory_order_relaxed) == SLUICE_BREAKER_CLOSED)
        return 0;
    pthread_mutex_lock(&b->mu);
    check_recovery(b, now_ns);
    v.state = atomic_load_explicit(&b->state, memory_order_relaxed);
    if (v.state == SLUICE_BREAKER_CLOSED) {
        allowed = 1;
    } else if (v.state == SLUICE_BREAKER_HALF_OPEN) {
        /* A slot is held by a probe in flight or one that succeeded. */
        allowed = is_probe = b->probes_out + b->probes_ok < b->o.probes;
        b->probes_out += is_probe;
    } else {
        v.wait_ns = b->opened_at + (int64_t)b->o.recovery_ms * NS_PER_MS - now_ns;
    }
    unlock_and_deliver(b);
    if (!allowed)
        return open_error(b, &v, err);
    if (probe)
        *probe = is_probe;
    return 0;
}

/* Adds one outcome to the ring of the last `window` calls. */
static void ring_push(sl_breaker *b, int failure)
{
    uint64_t *word, bit;

    if (!b->ring)
        return;
    word = &b->ring[b->ring_pos / 64];
    bit = 1ull << (b->ring_pos % 64);
    if (b->ring_count == b->o.window)
        b->ring_failures -= (*word & bit) != 0;
    else
        b->ring_count++;
    if (failure) {
        *word |= bit;
        b->ring_failures++;
    } else {
        *word &= ~bit;
    }
    if (++b->ring_pos == b->o.window)
        b->ring_pos = 0;
}

static int should_open(const sl_breaker *b)
{
    if (b->o.threshold && b->consecutive >= b->o.threshold)
        return 1;
    return b->o.rate_pct && b->ring_count >= b->o.min_calls &&
           (int64_t)b->ring_failures * 100 >= (int64_t)b->o.rate_pct * b->ring_count;
}

static void record_closed(sl_breaker *b, int failure, int64_t now_ns)
{
    ring_push(b, failure);
    b->consecutive = failure ? b->consecutive + 1 : 0;
    /* A success can still open: it may be the call that reaches min_calls. */
    if (should_open(b))
        set_state(b, SLUICE_BREAKER_OPEN, now_ns);
}

static void record_probe(sl_breaker *b, int failure, int64_t now_ns)
{
    if (b->probes_out > 0)
        b->probes_out--;
    if (failure)
        set_state(b, SLUICE_BREAKER_OPEN, now_ns);
    else if (++b->probes_ok >= b->o.probes)
        set_state(b, SLUICE_BREAKER_CLOSED, now_ns);
}

void sl_breaker_record(sl_breaker *b, int probe, int failure, int64_t now_ns)
{
    int state;

    if (!b || b->o.disabled)
        return;
    pthread_mutex_lock(&b->mu);
    state = atomic_load_explicit(&b->state, memory_order_relaxed);
    /* Outcomes of calls allowed before the circuit opened, arriving while
     * it is open or probing, say nothing about the upstream now. */
    if (state == SLUICE_BREAKER_CLOSED)
        record_closed(b, failure, now_ns);
    else if (state == SLUICE_BREAKER_HALF_OPEN && probe)
        record_probe(b, failure, now_ns);
    unlock_and_deliver(b);
}

void sl_breaker_release(sl_breaker *b, int probe)
{
    if (!b || b->o.disabled || !probe)
        return;
    pthread_mutex_lock(&b->mu);
    if (atomic_load_explicit(&b->state, memory_order_relaxed) == SLUICE_BREAKER_HALF_OPEN &&
        b->probes_out > 0)
        b->probes_out--;
    pthread_mutex_unlock(&b->mu);
}

sluice_breaker_state sl_breaker_state(sl_breaker *b, int64_t now_ns)
{
    int state;

    if (!b || b->o.disabled)
        return SLUICE_BREAKER_CLOSED;
    pthread_mutex_lock(&b->mu);
    check_recovery(b, now_ns);
    state = atomic_load_explicit(&b->state, memory_order_relaxed);
    unlock_and_deliver(b);
    return (sluice_breaker_state)state;
}

uint64_t sl_breaker_transitions(sl_breaker *b)
{
    return b ? atomic_load_explicit(&b->transitions, memory_order_relaxed) : 0;
}
