/* Circuit breaker: the opening rules, fail-fast, half-open probes, hooks
 * (order, no lock held, re-entry), concurrency and allocation failure.
 * Time is driven by hand: no test sleeps. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "breaker.h"
#include "testutil.h"

#define MS 1000000LL
#define SEC 1000000000LL
#define T0 (1000 * SEC)

static sluice_breaker_opts opts(int threshold, int rate_pct, int window, int min_calls)
{
    sluice_breaker_opts o;

    memset(&o, 0, sizeof o);
    o.failure_threshold = threshold;
    o.failure_rate_pct = rate_pct;
    o.window_size = window;
    o.min_calls = min_calls;
    return o;
}

static sl_breaker *new_ok(const sluice_breaker_opts *o)
{
    sluice_error err = {0};
    sl_breaker *b = sl_breaker_new(o, "billing", "/v1/charge", &err);

    if (!b)
        fprintf(stderr, "\n  sl_breaker_new: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    return b;
}

static void record_n(sl_breaker *b, int n, int failure, int64_t now)
{
    while (n-- > 0)
        sl_breaker_record(b, 0, failure, now);
}

/* Allows a call and says whether it was allowed (and as a probe). */
static int allowed(sl_breaker *b, int64_t now, int *probe)
{
    sluice_error err = {0};
    int p = -1, rc = sl_breaker_allow(b, now, &p, &err);

    if (probe)
        *probe = p;
    CU_ASSERT(rc == 0 || (rc == SLUICE_ECIRCUITOPEN && err.code == rc && p == 0));
    return rc == 0;
}

/* Opens a breaker that opens on one failure, at `now`. */
static void trip(sl_breaker *b, int64_t now)
{
    sl_breaker_record(b, 0, 1, now);
    CU_ASSERT_EQUAL_FATAL(sl_breaker_state(b, now), SLUICE_BREAKER_OPEN);
}

/* --- opening rules -------------------------------------------------------- */

static void test_breaker_opens_at_threshold(void)
{
    sluice_breaker_opts o = opts(5, SLUICE_OFF, 0, 0);
    sl_breaker *b = new_ok(&o);

    record_n(b, 4, 1, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    record_n(b, 1, 0, T0);          /* a success breaks the run */
    record_n(b, 4, 1, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    CU_ASSERT_TRUE(allowed(b, T0, NULL));
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 0);
    record_n(b, 1, 1, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_OPEN);
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 1);
    CU_ASSERT_FALSE(allowed(b, T0, NULL));
    sl_breaker_free(b);
}

/* The caller records a 4xx as failure = 0: it breaks a run of 5xx and
 * dilutes the rate, so a client's own bad requests never open it. */
static void test_breaker_client_errors_count_as_success(void)
{
    sl_breaker *b = new_ok(NULL);   /* 5 in a row, or 50% of >= 20 */
    int round;

    /* 16 of 48 failed, never 5 in a row: closed.  Counted as failures,
     * the 404s would have opened it at once. */
    for (round = 0; round < 4; round++) {
        record_n(b, 4, 1, T0);      /* 5xx */
        record_n(b, 8, 0, T0);      /* 404 */
    }
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    record_n(b, 5, 1, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_OPEN);
    sl_breaker_free(b);
}

static void test_breaker_rate_rule_needs_min_calls(void)
{
    sluice_breaker_opts o = opts(SLUICE_OFF, 50, 100, 20);
    sl_breaker *b = new_ok(&o);
    int i;

    /* f s f s ...: 10 of 19 failed (53%) but fewer than min_calls. */
    for (i = 0; i < 19; i++)
        sl_breaker_record(b, 0, i % 2 == 0, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    /* The 20th call, a success, makes 10 of 20: exactly 50%. */
    sl_breaker_record(b, 0, 0, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_OPEN);
    sl_breaker_free(b);
}

static void test_breaker_rate_rule_window_slides(void)
{
    sluice_breaker_opts o = opts(SLUICE_OFF, 50, 100, 20);
    sl_breaker *b = new_ok(&o);
    int i;

    /* f s s ... for 300 calls: 33% never opens. */
    for (i = 0; i < 300; i++)
        sl_breaker_record(b, 0, i % 3 == 0, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    /* The last 100 hold 33 failures; each new failure pushes out the
     * oldest call, so the 25th makes 50 of 100 (worked out by hand). */
    record_n(b, 24, 1, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    record_n(b, 1, 1, T0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_OPEN);
    sl_breaker_free(b);
}

/* --- open, half-open ------------------------------------------------------ */

static void test_breaker_fails_fast_while_open(void)
{
    sluice_breaker_opts o = opts(1, 0, 0, 0);
    sl_breaker *b = new_ok(&o);
    sluice_error err = {0};
    int probe = -1;

    trip(b, T0);
    CU_ASSERT_EQUAL(sl_breaker_allow(b, T0 + MS, &probe, &err), SLUICE_ECIRCUITOPEN);
    CU_ASSERT_EQUAL(err.code, SLUICE_ECIRCUITOPEN);
    CU_ASSERT_EQUAL(probe, 0);
    CU_ASSERT_STRING_EQUAL(err.msg, "circuit open for billing /v1/charge; retry in 29999 ms");
    CU_ASSERT_EQUAL(sl_breaker_allow(b, T0 + 30 * SEC - 1, &probe, &err), SLUICE_ECIRCUITOPEN);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "retry in 1 ms"));
    /* Late outcomes of calls allowed before it opened change nothing. */
    record_n(b, 10, 0, T0 + 2 * MS);
    record_n(b, 10, 1, T0 + 2 * MS);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0 + 30 * SEC - 1), SLUICE_BREAKER_OPEN);
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 1);
    /* The recovery timeout is measured from the opening. */
    CU_ASSERT_EQUAL(sl_breaker_allow(b, T0 + 30 * SEC, &probe, &err), 0);
    CU_ASSERT_EQUAL(probe, 1);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0 + 30 * SEC), SLUICE_BREAKER_HALF_OPEN);
    sl_breaker_free(b);
}

#define PROBE_THREADS 16

typedef struct race {
    sl_breaker *b;
    int64_t now;
    pthread_barrier_t start;
    _Atomic int probes, refused, other;
} race;

static void *race_allow(void *arg)
{
    race *r = arg;
    sluice_error err = {0};
    int probe = 0, rc;

    pthread_barrier_wait(&r->start);
    rc = sl_breaker_allow(r->b, r->now, &probe, &err);
    if (rc == 0 && probe == 1)
        atomic_fetch_add(&r->probes, 1);
    else if (rc == SLUICE_ECIRCUITOPEN && strstr(err.msg, "half-open for billing /v1/charge"))
        atomic_fetch_add(&r->refused, 1);
    else
        atomic_fetch_add(&r->other, 1);
    return NULL;
}

static void test_breaker_half_open_admits_exactly_probes(void)
{
    sluice_breaker_opts o = opts(1, 0, 0, 0);   /* 3 probes */
    pthread_t t[PROBE_THREADS];
    race r;
    int i;

    memset(&r, 0, sizeof r);
    r.b = new_ok(&o);
    r.now = T0 + 30 * SEC;
    trip(r.b, T0);
    pthread_barrier_init(&r.start, NULL, PROBE_THREADS);
    for (i = 0; i < PROBE_THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, race_allow, &r), 0);
    for (i = 0; i < PROBE_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&r.start);
    CU_ASSERT_EQUAL(atomic_load(&r.probes), 3);
    CU_ASSERT_EQUAL(atomic_load(&r.refused), PROBE_THREADS - 3);
    CU_ASSERT_EQUAL(atomic_load(&r.other), 0);

    /* A succeeded probe keeps its slot: two successes, still probing. */
    sl_breaker_record(r.b, 1, 0, r.now);
    sl_breaker_record(r.b, 1, 0, r.now);
    CU_ASSERT_EQUAL(sl_breaker_state(r.b, r.now), SLUICE_BREAKER_HALF_OPEN);
    CU_ASSERT_FALSE(allowed(r.b, r.now, NULL));
    sl_breaker_record(r.b, 1, 0, r.now);
    CU_ASSERT_EQUAL(sl_breaker_state(r.b, r.now), SLUICE_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(sl_breaker_transitions(r.b), 3);
    /* Closed again, with fresh counters: it takes a new failure to open. */
    CU_ASSERT_TRUE(allowed(r.b, r.now, &i));
    CU_ASSERT_EQUAL(i, 0);
    trip(r.b, r.now);
    sl_breaker_free(r.b);
}

static void test_breaker_reopens_on_probe_failure(void)
{
    sluice_breaker_opts o = opts(1, 0, 0, 0);
    sl_breaker *b = new_ok(&o);
    int64_t t1 = T0 + 30 * SEC, t2 = t1 + 5 * MS;
    int probe;

    trip(b, T0);
    CU_ASSERT_TRUE(allowed(b, t1, &probe));
    CU_ASSERT_EQUAL(probe, 1);
    CU_ASSERT_TRUE(allowed(b, t1, &probe));
    sl_breaker_record(b, 1, 0, t2);
    sl_breaker_record(b, 1, 1, t2);
    CU_ASSERT_EQUAL(sl_breaker_state(b, t2), SLUICE_BREAKER_OPEN);
    /* The timer restarted at the probe failure. */
    CU_ASSERT_FALSE(allowed(b, t2 + 30 * SEC - 1, NULL));
    CU_ASSERT_TRUE(allowed(b, t2 + 30 * SEC, &probe));
    CU_ASSERT_EQUAL(probe, 1);
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 4);
    sl_breaker_free(b);
}

static void test_breaker_release_returns_slot(void)
{
    sluice_breaker_opts o = opts(1, 0, 0, 0);
    sl_breaker *b = new_ok(&o);
    int64_t t1 = T0 + 30 * SEC;
    int probe, i;

    trip(b, T0);
    for (i = 0; i < 3; i++)
        CU_ASSERT_TRUE(allowed(b, t1, NULL));
    CU_ASSERT_FALSE(allowed(b, t1, NULL));
    sl_breaker_release(b, 0);       /* not a probe: gives nothing back */
    CU_ASSERT_FALSE(allowed(b, t1, NULL));
    sl_breaker_release(b, 1);
    CU_ASSERT_TRUE(allowed(b, t1, &probe));
    CU_ASSERT_EQUAL(probe, 1);
    CU_ASSERT_FALSE(allowed(b, t1, NULL));
    /* Three successes still close it: released slots are not outcomes. */
    for (i = 0; i < 3; i++)
        sl_breaker_record(b, 1, 0, t1);
    CU_ASSERT_EQUAL(sl_breaker_state(b, t1), SLUICE_BREAKER_CLOSED);
    sl_breaker_free(b);
}

/* --- hooks ------------------------------------------------------------------ */

#define MAX_HOOKS 64

typedef struct hook_log {
    sl_breaker *b;
    int64_t now;
    int n, depth, max_depth, reenter;
    sluice_breaker_state from[MAX_HOOKS], to[MAX_HOOKS], seen[MAX_HOOKS];
    int names_ok;
} hook_log;

/* Calls back into the breaker: with its lock held this would deadlock. */
static void log_hook(const char *service, const char *endpoint, sluice_breaker_state from,
                     sluice_breaker_state to, void *ud)
{
    hook_log *h = ud;
    int i = h->n;

    h->depth++;
    h->max_depth = h->depth > h->max_depth ? h->depth : h->max_depth;
    h->names_ok += strcmp(service, "billing") == 0 && strcmp(endpoint, "/v1/charge") == 0;
    if (i < MAX_HOOKS) {
        h->from[i] = from;
        h->to[i] = to;
        h->seen[i] = sl_breaker_state(h->b, h->now);
    }
    h->n++;
    /* Optionally fail the probe from inside the hook: a transition made
     * while this hook runs. */
    if (h->reenter && to == SLUICE_BREAKER_HALF_OPEN) {
        int probe = 0;
        h->reenter = 0;
        if (sl_breaker_allow(h->b, h->now, &probe, NULL) == 0)
            sl_breaker_record(h->b, probe, 1, h->now);
    }
    h->depth--;
}

static sl_breaker *hooked(hook_log *h)
{
    sluice_breaker_opts o = opts(1, 0, 0, 0);
    sl_breaker *b;

    memset(h, 0, sizeof *h);
    o.on_state_change = log_hook;
    o.hook_ud = h;
    b = new_ok(&o);
    h->b = b;
    return b;
}

static void test_breaker_hook_each_transition_in_order(void)
{
    static const sluice_breaker_state want[][2] = {
        {SLUICE_BREAKER_CLOSED, SLUICE_BREAKER_OPEN},
        {SLUICE_BREAKER_OPEN, SLUICE_BREAKER_HALF_OPEN},
        {SLUICE_BREAKER_HALF_OPEN, SLUICE_BREAKER_OPEN},
        {SLUICE_BREAKER_OPEN, SLUICE_BREAKER_HALF_OPEN},
        {SLUICE_BREAKER_HALF_OPEN, SLUICE_BREAKER_CLOSED},
    };
    hook_log h;
    sl_breaker *b = hooked(&h);
    int probe, i;

    h.now = T0;
    sl_breaker_record(b, 0, 1, h.now);
    CU_ASSERT_EQUAL(h.n, 1);        /* delivered before record returned */
    h.now += 30 * SEC;
    CU_ASSERT_TRUE(allowed(b, h.now, &probe));
    sl_breaker_record(b, probe, 1, h.now);
    h.now += 30 * SEC;
    for (i = 0; i < 3; i++)
        CU_ASSERT_TRUE(allowed(b, h.now, NULL));
    for (i = 0; i < 3; i++)
        sl_breaker_record(b, 1, 0, h.now);
    CU_ASSERT_EQUAL_FATAL(h.n, 5);
    for (i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(h.from[i], want[i][0]);
        CU_ASSERT_EQUAL(h.to[i], want[i][1]);
        CU_ASSERT_EQUAL(h.seen[i], want[i][1]);     /* the hook sees the new state */
    }
    CU_ASSERT_EQUAL(h.names_ok, 5);
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 5);
    sl_breaker_free(b);
}

/* A hook that itself makes a transition: no deadlock, no nesting, and the
 * inner transition's hook comes after the outer one's. */
static void test_breaker_hook_reentrant_transition(void)
{
    hook_log h;
    sl_breaker *b = hooked(&h);

    h.now = T0;
    trip(b, h.now);
    h.reenter = 1;
    h.now += 30 * SEC;
    CU_ASSERT_EQUAL(sl_breaker_state(b, h.now), SLUICE_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL_FATAL(h.n, 3);
    CU_ASSERT_EQUAL(h.max_depth, 1);
    CU_ASSERT_EQUAL(h.to[1], SLUICE_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(h.from[2], SLUICE_BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(h.to[2], SLUICE_BREAKER_OPEN);
    CU_ASSERT_EQUAL(sl_breaker_state(b, h.now), SLUICE_BREAKER_OPEN);
    sl_breaker_free(b);
}

/* Threads driving transitions on one breaker: every hook's `from` is the
 * previous hook's `to`.  The hook keeps its log without a lock of its own,
 * so ThreadSanitizer also checks that the calls never overlap. */
#define CHAIN_THREADS 8
#define CHAIN_ITERS 3000

typedef struct chain {
    sl_breaker *b;
    _Atomic int64_t clock;
    long hooks, breaks;
    sluice_breaker_state last;
    pthread_barrier_t start;
} chain;

static void chain_hook(const char *service, const char *endpoint, sluice_breaker_state from,
                       sluice_breaker_state to, void *ud)
{
    chain *c = ud;

    c->breaks += from != c->last;
    c->last = to;
    c->hooks++;
}

static void *chain_thread(void *arg)
{
    chain *c = arg;
    uint64_t x = (uint64_t)(uintptr_t)&x;
    int i, probe;

    pthread_barrier_wait(&c->start);
    for (i = 0; i < CHAIN_ITERS; i++) {
        int64_t now = atomic_fetch_add(&c->clock, MS);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (sl_breaker_allow(c->b, now, &probe, NULL) == 0)
            sl_breaker_record(c->b, probe, (x & 3) == 0, now);
    }
    return NULL;
}

static void test_breaker_hooks_ordered_across_threads(void)
{
    sluice_breaker_opts o = opts(2, 0, 0, 0);
    pthread_t t[CHAIN_THREADS];
    chain c;
    int i;

    memset(&c, 0, sizeof c);
    atomic_init(&c.clock, T0);
    o.recovery_timeout_ms = 5;
    o.half_open_probes = 2;
    o.on_state_change = chain_hook;
    o.hook_ud = &c;
    c.b = new_ok(&o);
    pthread_barrier_init(&c.start, NULL, CHAIN_THREADS);
    for (i = 0; i < CHAIN_THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, chain_thread, &c), 0);
    for (i = 0; i < CHAIN_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&c.start);
    /* Every transition's hook ran by the time the calls returned. */
    CU_ASSERT(c.hooks > 10);
    CU_ASSERT_EQUAL(c.hooks, (long)sl_breaker_transitions(c.b));
    CU_ASSERT_EQUAL(c.breaks, 0);
    sl_breaker_free(c.b);
}

/* A hook that blocks holds up no other caller; transitions made meanwhile
 * queue up (past the queue's first size) and follow in order. */
typedef struct slow {
    sl_breaker *b;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, release;
    int n;
    sluice_breaker_state from[MAX_HOOKS], to[MAX_HOOKS];
} slow;

static void slow_hook(const char *service, const char *endpoint, sluice_breaker_state from,
                      sluice_breaker_state to, void *ud)
{
    slow *s = ud;

    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_HOOKS) {
        s->from[s->n] = from;
        s->to[s->n] = to;
    }
    s->n++;
    s->entered = 1;
    pthread_cond_broadcast(&s->cv);
    while (!s->release)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static void *slow_trip(void *arg)
{
    slow *s = arg;

    sl_breaker_record(s->b, 0, 1, T0);  /* CLOSED -> OPEN; runs the hook */
    return NULL;
}

/* Makes 2 * rounds transitions (OPEN -> HALF_OPEN -> OPEN ...) from T0. */
static void flap(sl_breaker *b, int rounds)
{
    int64_t now = T0;
    int probe, i;

    for (i = 0; i < rounds; i++) {
        now += SEC;
        CU_ASSERT_EQUAL(sl_breaker_allow(b, now, &probe, NULL), 0);
        sl_breaker_record(b, probe, 1, now);
    }
}

static void run_slow_hook(slow *s, int fail_allocs)
{
    sluice_breaker_opts o = opts(1, 0, 0, 0);
    pthread_t t;

    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    o.recovery_timeout_ms = 1000;
    o.on_state_change = slow_hook;
    o.hook_ud = s;
    s->b = new_ok(&o);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, slow_trip, s), 0);
    pthread_mutex_lock(&s->mu);
    while (!s->entered)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    /* The first hook is blocked; these calls must not wait for it. */
    if (fail_allocs)
        tu_alloc_install(1, 1);
    flap(s->b, 5);
    if (fail_allocs)
        tu_alloc_uninstall();
    CU_ASSERT_EQUAL(sl_breaker_transitions(s->b), 11);
    pthread_mutex_lock(&s->mu);
    s->release = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(t, NULL);
    sl_breaker_free(s->b);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static void test_breaker_hook_queue_while_blocked(void)
{
    slow s;
    int i;

    run_slow_hook(&s, 0);
    CU_ASSERT_EQUAL_FATAL(s.n, 11);
    CU_ASSERT_EQUAL(s.from[0], SLUICE_BREAKER_CLOSED);
    for (i = 1; i < 11; i++) {
        CU_ASSERT_EQUAL(s.from[i], s.to[i - 1]);
        CU_ASSERT_EQUAL(s.to[i], i % 2 ? SLUICE_BREAKER_HALF_OPEN : SLUICE_BREAKER_OPEN);
    }
}

/* Out of memory to grow the queue: those hook calls are skipped, the
 * transitions still happen and are counted, the rest keep their order. */
static void test_breaker_hook_queue_enomem(void)
{
    slow s;
    int i;

    run_slow_hook(&s, 1);
    CU_ASSERT_EQUAL_FATAL(s.n, 5);      /* the running one + the 4 queued */
    for (i = 1; i < 5; i++)
        CU_ASSERT_EQUAL(s.from[i], s.to[i - 1]);
}

/* --- concurrency ------------------------------------------------------------ */

#define REC_THREADS 32
#define REC_CALLS 1000

typedef struct recorders {
    sl_breaker *b;
    pthread_barrier_t start;
    int all_fail;
} recorders;

static void *record_thread(void *arg)
{
    recorders *r = arg;
    int i;

    pthread_barrier_wait(&r->start);
    for (i = 0; i < REC_CALLS; i++) {
        sl_breaker_allow(r->b, T0, NULL, NULL);
        sl_breaker_record(r->b, 0, r->all_fail || i % 2 == 0, T0);
    }
    return NULL;
}

static void run_recorders(sl_breaker *b, int all_fail)
{
    pthread_t t[REC_THREADS];
    recorders r;
    int i;

    r.b = b;
    r.all_fail = all_fail;
    pthread_barrier_init(&r.start, NULL, REC_THREADS);
    for (i = 0; i < REC_THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, record_thread, &r), 0);
    for (i = 0; i < REC_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&r.start);
}

/* Counts are exact under contention: the rule is set so that it holds only
 * when every one of the 32000 outcomes was counted. */
static void test_breaker_concurrent_records_consistent(void)
{
    const int total = REC_THREADS * REC_CALLS;
    sluice_breaker_opts o = opts(SLUICE_OFF, 50, total, total);
    sl_breaker *b = new_ok(&o);

    run_recorders(b, 0);    /* half fail: 50% exactly at the last call */
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_OPEN);
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 1);
    sl_breaker_free(b);

    o = opts(total, SLUICE_OFF, 0, 0);
    b = new_ok(&o);
    run_recorders(b, 1);    /* the total-th consecutive failure opens it */
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_OPEN);
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 1);
    sl_breaker_free(b);

    o = opts(total + 1, SLUICE_OFF, 0, 0);
    b = new_ok(&o);
    run_recorders(b, 1);    /* one short: stays closed */
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    sl_breaker_free(b);
}

/* --- options, disabled, allocation ----------------------------------------- */

static void test_breaker_disabled_and_null(void)
{
    sluice_breaker_opts o = opts(1, 0, 0, 0);
    sl_breaker *b;
    int probe = -1;

    o.disabled = 1;
    b = new_ok(&o);
    record_n(b, 100, 1, T0);
    CU_ASSERT_EQUAL(sl_breaker_allow(b, T0, &probe, NULL), 0);
    CU_ASSERT_EQUAL(probe, 0);
    CU_ASSERT_EQUAL(sl_breaker_state(b, T0), SLUICE_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(sl_breaker_transitions(b), 0);
    sl_breaker_release(b, 1);
    sl_breaker_free(b);

    probe = -1;
    CU_ASSERT_EQUAL(sl_breaker_allow(NULL, T0, &probe, NULL), 0);
    CU_ASSERT_EQUAL(probe, 0);
    sl_breaker_record(NULL, 0, 1, T0);
    sl_breaker_release(NULL, 1);
    CU_ASSERT_EQUAL(sl_breaker_state(NULL, T0), SLUICE_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(sl_breaker_transitions(NULL), 0);
    sl_breaker_free(NULL);
}

static void test_breaker_opts_invalid(void)
{
    static const struct {
        sluice_breaker_opts o;
        const char *field;
    } table[] = {
        {{.failure_rate_pct = 101}, "failure_rate_pct"},
        {{.failure_threshold = -3}, "failure_threshold"},
        {{.window_size = SLUICE_OFF}, "window_size"},
        {{.window_size = 1 << 21}, "window_size"},
        {{.min_calls = -9}, "min_calls"},
        {{.recovery_timeout_ms = -1}, "recovery_timeout_ms"},
        {{.half_open_probes = SLUICE_OFF}, "half_open_probes"},
    };
    size_t i;

    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        sluice_error err = {0};
        CU_ASSERT_PTR_NULL(sl_breaker_new(&table[i].o, "s", "e", &err));
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, table[i].field));
    }
}

static void test_breaker_new_enomem(void)
{
    sluice_breaker_opts o = opts(0, 0, 0, 0);
    sluice_error err;
    sl_breaker *b = NULL;
    long at;

    for (at = 1; !b && at < 100; at++) {
        memset(&err, 0, sizeof err);
        tu_alloc_install(at, 0);
        b = sl_breaker_new(&o, "billing", "/v1/charge", &err);
        if (!b) {
            CU_ASSERT_EQUAL(err.code, SLUICE_ENOMEM);
            CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "billing"));
            CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        }
        sl_breaker_free(b);
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        tu_alloc_uninstall();
    }
    CU_ASSERT_PTR_NOT_NULL(b);
    CU_ASSERT(at > 5);      /* struct, two names, ring, queue each failed */
}

static CU_TestInfo tests[] = {
    {"test_breaker_opens_at_threshold", test_breaker_opens_at_threshold},
    {"test_breaker_client_errors_count_as_success", test_breaker_client_errors_count_as_success},
    {"test_breaker_rate_rule_needs_min_calls", test_breaker_rate_rule_needs_min_calls},
    {"test_breaker_rate_rule_window_slides", test_breaker_rate_rule_window_slides},
    {"test_breaker_fails_fast_while_open", test_breaker_fails_fast_while_open},
    {"test_breaker_half_open_admits_exactly_probes", test_breaker_half_open_admits_exactly_probes},
    {"test_breaker_reopens_on_probe_failure", test_breaker_reopens_on_probe_failure},
    {"test_breaker_release_returns_slot", test_breaker_release_returns_slot},
    {"test_breaker_hook_each_transition_in_order", test_breaker_hook_each_transition_in_order},
    {"test_breaker_hook_reentrant_transition", test_breaker_hook_reentrant_transition},
    {"test_breaker_hooks_ordered_across_threads", test_breaker_hooks_ordered_across_threads},
    {"test_breaker_hook_queue_while_blocked", test_breaker_hook_queue_while_blocked},
    {"test_breaker_hook_queue_enomem", test_breaker_hook_queue_enomem},
    {"test_breaker_concurrent_records_consistent", test_breaker_concurrent_records_consistent},
    {"test_breaker_disabled_and_null", test_breaker_disabled_and_null},
    {"test_breaker_opts_invalid", test_breaker_opts_invalid},
    {"test_breaker_new_enomem", test_breaker_new_enomem},
    CU_TEST_INFO_NULL,
};

void suite_breaker(void);
void suite_breaker(void)
{
    tu_add_suite("breaker", tests);
}
