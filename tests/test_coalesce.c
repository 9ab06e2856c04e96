/* The coalescer: one run per key for concurrent callers, the leader's result
 * (value or error) shared by all, deadlines for followers, the micro-cache
 * window, and exactly one release per flight. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "alloc.h"
#include "coalesce.h"
#include "http_coalesce.h"
#include "testutil.h"

#define MAGIC 0x5eed5eedu

/* A value the flight functions hand out; released by count_release. */
typedef struct tvalue {
    unsigned magic;
    int key;
} tvalue;

static atomic_int releases;
static atomic_int calls;
/* CUnit is not thread-safe: other threads count failed checks here and the
 * test's own thread asserts the count. */
static atomic_int bad;
#define T_CHECK(cond) do { if (!(cond)) atomic_fetch_add(&bad, 1); } while (0)

static void count_release(void *v)
{
    tvalue *t = v;

    T_CHECK(t->magic == MAGIC);
    t->magic = 0;
    free(t);
    atomic_fetch_add(&releases, 1);
}

static tvalue *tvalue_new(int key)
{
    tvalue *t = malloc(sizeof *t);

    t->magic = MAGIC;
    t->key = key;
    return t;
}

static void reset_counts(void)
{
    atomic_store(&releases, 0);
    atomic_store(&calls, 0);
    atomic_store(&bad, 0);
}

/* Polls the coalescer's waiting gauge: how many followers are blocked. */
static int await_waiting(sluice_coalescer *co, uint64_t n, int timeout_ms)
{
    int64_t end = tu_now_ms() + timeout_ms;
    struct sl_coalesce_stats st;

    for (;;) {
        sl_coalesce_stats(co, &st);
        if (st.waiting >= n)
            return 0;
        if (tu_now_ms() > end)
            return -1;
        usleep(1000);
    }
}

/* ---- 64 callers, one call ---------------------------------------------- */

#define NTHREADS 64

typedef struct crowd {
    sluice_coalescer *co;
    const char *key;
    int timeout_ms;
    int code;               /* what the fn returns */
    int set_value;          /* the fn sets a value even on error */
    int await_followers;    /* the fn waits until this many follow */
    pthread_barrier_t start;
    sluice_flight_result res[NTHREADS];
    int ret[NTHREADS];
} crowd;

typedef struct slot {
    crowd *c;
    int i;
} slot;

static int crowd_fn(void *arg, void **value)
{
    crowd *c = arg;

    atomic_fetch_add(&calls, 1);
    T_CHECK(await_waiting(c->co, (uint64_t)c->await_followers, 30000) == 0);
    usleep(200 * 1000);
    if (c->code == 0 || c->set_value)
        *value = tvalue_new(0);
    return c->code;
}

static void *crowd_thread(void *arg)
{
    slot *s = arg;
    crowd *c = s->c;

    pthread_barrier_wait(&c->start);
    s->c->ret[s->i] = sluice_coalesce(c->co, c->key, strlen(c->key), c->timeout_ms, crowd_fn, c,
                                      &c->res[s->i]);
    return NULL;
}

/* Runs n threads on one key and checks that all got the same result. */
static void run_crowd(crowd *c, int n)
{
    pthread_t th[NTHREADS];
    slot slots[NTHREADS];
    int i, leaders = 0;

    pthread_barrier_init(&c->start, NULL, (unsigned)n);
    for (i = 0; i < n; i++) {
        slots[i] = (slot){c, i};
        pthread_create(&th[i], NULL, crowd_thread, &slots[i]);
    }
    for (i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&c->start);
    for (i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(c->ret[i], c->code);
        CU_ASSERT_EQUAL(c->res[i].code, c->code);
        CU_ASSERT_PTR_EQUAL(c->res[i].value, c->res[0].value);
        leaders += c->res[i].shared == 0;
    }
    CU_ASSERT_EQUAL(leaders, 1);
    CU_ASSERT_EQUAL(atomic_load(&bad), 0);
}

static void release_all(crowd *c, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(atomic_load(&releases), 0);
        sluice_flight_result_release(&c->res[i]);
    }
}

static void test_coalesce_one_call_for_64_threads(void)
{
    static crowd c;
    struct sl_coalesce_stats st;

    reset_counts();
    memset(&c, 0, sizeof c);
    c.co = sluice_coalescer_new(count_release, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c.co);
    c.key = "GET http://127.0.0.1/x";
    c.timeout_ms = -1;
    c.await_followers = NTHREADS - 1;
    run_crowd(&c, NTHREADS);
    CU_ASSERT_EQUAL(atomic_load(&calls), 1);
    CU_ASSERT_PTR_NOT_NULL(c.res[0].value);
    sl_coalesce_stats(c.co, &st);
    CU_ASSERT_EQUAL(st.flights, 1);
    CU_ASSERT_EQUAL(st.followers, NTHREADS - 1);
    CU_ASSERT_EQUAL(st.timeouts, 0);
    CU_ASSERT_EQUAL(st.waiting, 0);
    release_all(&c, NTHREADS);
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
    sluice_coalescer_free(c.co);
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
}

static void test_coalesce_leader_error_reaches_all(void)
{
    static crowd c;

    reset_counts();
    memset(&c, 0, sizeof c);
    c.co = sluice_coalescer_new(count_release, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c.co);
    c.key = "failing";
    c.timeout_ms = -1;
    c.code = SLUICE_EIO;
    c.await_followers = 15;
    run_crowd(&c, 16);
    CU_ASSERT_EQUAL(atomic_load(&calls), 1);
    CU_ASSERT_PTR_NULL(c.res[0].value);
    release_all(&c, 16);
    CU_ASSERT_EQUAL(atomic_load(&releases), 0);

    /* An error with a value: every waiter sees both, released once. */
    reset_counts();
    memset(c.res, 0, sizeof c.res);
    c.set_value = 1;
    c.code = SLUICE_EPROTO;
    run_crowd(&c, 16);
    CU_ASSERT_EQUAL(atomic_load(&calls), 1);
    CU_ASSERT_PTR_NOT_NULL(c.res[0].value);
    release_all(&c, 16);
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
    sluice_coalescer_free(c.co);
}

/* ---- distinct keys ------------------------------------------------------ */

#define NKEYS 6

typedef struct distinct {
    sluice_coalescer *co;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;
} distinct;

typedef struct dslot {
    distinct *d;
    int i;
    sluice_flight_result res;
} dslot;

/* Keys that differ only in length, a last byte, or past an embedded NUL. */
static const char dkeys[NKEYS][8] = {"a", "ab", "abc", "abd", {'x', 0, 'y'}, {'x', 0, 'z'}};
static const size_t dlens[NKEYS] = {1, 2, 3, 3, 3, 3};

static int distinct_fn(void *arg, void **value)
{
    dslot *s = arg;
    distinct *d = s->d;
    struct timespec end;

    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 20;
    atomic_fetch_add(&calls, 1);
    /* Every key leads at once: with a wrongly shared flight the count
     * never completes. */
    pthread_mutex_lock(&d->mu);
    d->started++;
    pthread_cond_broadcast(&d->cv);
    while (d->started < NKEYS)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &end) != 0)
            break;
    pthread_mutex_unlock(&d->mu);
    *value = tvalue_new(s->i);
    return 0;
}

static void *distinct_thread(void *arg)
{
    dslot *s = arg;

    sluice_coalesce(s->d->co, dkeys[s->i], dlens[s->i], -1, distinct_fn, s, &s->res);
    return NULL;
}

static void test_coalesce_distinct_keys_never_share(void)
{
    distinct d = {0};
    dslot slots[NKEYS];
    pthread_t th[NKEYS];
    int i;

    reset_counts();
    d.co = sluice_coalescer_new(count_release, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d.co);
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    for (i = 0; i < NKEYS; i++) {
        slots[i] = (dslot){&d, i, {0}};
        pthread_create(&th[i], NULL, distinct_thread, &slots[i]);
    }
    for (i = 0; i < NKEYS; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(d.started, NKEYS);
    CU_ASSERT_EQUAL(atomic_load(&calls), NKEYS);
    for (i = 0; i < NKEYS; i++) {
        tvalue *t = slots[i].res.value;
        CU_ASSERT_EQUAL(slots[i].res.shared, 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_EQUAL(t->key, i);
        sluice_flight_result_release(&slots[i].res);
    }
    CU_ASSERT_EQUAL(atomic_load(&releases), NKEYS);
    sluice_coalescer_free(d.co);
    pthread_mutex_destroy(&d.mu);
    pthread_cond_destroy(&d.cv);
}

/* ---- deadlines ---------------------------------------------------------- */

typedef struct gate {
    sluice_coalescer *co;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
} gate;

static int gated_fn(void *arg, void **value)
{
    gate *g = arg;

    atomic_fetch_add(&calls, 1);
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    *value = tvalue_new(7);
    return 0;
}

typedef struct gslot {
    gate *g;
    int timeout_ms;
    int ret;
    int64_t took_ms;
    sluice_flight_result res;
} gslot;

static void *gated_thread(void *arg)
{
    gslot *s = arg;
    int64_t t0 = tu_now_ms();

    s->ret = sluice_coalesce(s->g->co, "k", 1, s->timeout_ms, gated_fn, s->g, &s->res);
    s->took_ms = tu_now_ms() - t0;
    return NULL;
}

static void gate_set(gate *g, int open)
{
    pthread_mutex_lock(&g->mu);
    g->open = open;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void test_coalesce_follower_deadline(void)
{
    gate g = {0};
    gslot s[4] = {{&g, -1, 0, 0, {0}}, {&g, -1, 0, 0, {0}}, {&g, -1, 0, 0, {0}}, {&g, 50, 0, 0, {0}}};
    pthread_t th[4];
    struct sl_coalesce_stats st;
    int i;

    reset_counts();
    g.co = sluice_coalescer_new(count_release, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g.co);
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_create(&th[0], NULL, gated_thread, &s[0]);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    for (i = 1; i < 4; i++)
        pthread_create(&th[i], NULL, gated_thread, &s[i]);
    /* The 50 ms follower gives up while the leader is still blocked. */
    pthread_join(th[3], NULL);
    CU_ASSERT_EQUAL(s[3].ret, SLUICE_ETIMEDOUT);
    CU_ASSERT_EQUAL(s[3].res.code, SLUICE_ETIMEDOUT);
    CU_ASSERT_PTR_NULL(s[3].res.value);
    CU_ASSERT(s[3].took_ms >= 45);
    sluice_flight_result_release(&s[3].res);
    CU_ASSERT_EQUAL(await_waiting(g.co, 2, 20000), 0);
    gate_set(&g, 1);
    for (i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(s[i].ret, 0);
        CU_ASSERT_PTR_EQUAL(s[i].res.value, s[0].res.value);
        CU_ASSERT_EQUAL(s[i].res.shared, i != 0);
    }
    CU_ASSERT_EQUAL(atomic_load(&calls), 1);
    sl_coalesce_stats(g.co, &st);
    CU_ASSERT_EQUAL(st.timeouts, 1);
    CU_ASSERT_EQUAL(st.followers, 2);
    for (i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(atomic_load(&releases), 0);
        sluice_flight_result_release(&s[i].res);
    }
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
    sluice_coalescer_free(g.co);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
}

/* ---- re-entrancy -------------------------------------------------------- */

static sluice_coalescer *reentrant_co;

static int inner_fn(void *arg, void **value)
{
    atomic_fetch_add(&calls, 1);
    *value = tvalue_new(2);
    return 0;
}

static int outer_fn(void *arg, void **value)
{
    sluice_flight_result in, same;
    int rc;

    atomic_fetch_add(&calls, 1);
    rc = sluice_coalesce(reentrant_co, "inner", 5, 1000, inner_fn, NULL, &in);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(((tvalue *)in.value)->key, 2);
    /* Its own key would wait for itself: refused at once. */
    CU_ASSERT_EQUAL(sluice_coalesce(reentrant_co, "outer", 5, -1, inner_fn, NULL, &same),
                    SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(same.value);
    sluice_flight_result_release(&same);
    sluice_flight_result_release(&in);
    *value = tvalue_new(1);
    return rc;
}

static void test_coalesce_reentrant_other_key(void)
{
    sluice_flight_result r;

    reset_counts();
    reentrant_co = sluice_coalescer_new(count_release, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reentrant_co);
    CU_ASSERT_EQUAL(sluice_coalesce(reentrant_co, "outer", 5, -1, outer_fn, NULL, &r), 0);
    CU_ASSERT_EQUAL(((tvalue *)r.value)->key, 1);
    CU_ASSERT_EQUAL(atomic_load(&calls), 2);
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
    sluice_flight_result_release(&r);
    CU_ASSERT_EQUAL(atomic_load(&releases), 2);
    sluice_coalescer_free(reentrant_co);
}

/* ---- the window --------------------------------------------------------- */

static int plain_fn(void *arg, void **value)
{
    atomic_fetch_add(&calls, 1);
    *value = tvalue_new(arg ? *(int *)arg : 0);
    return arg ? 0 : SLUICE_EIO;
}

static int never_cacheable(int code, void *value)
{
    return 0;
}

static int one = 1;

/* One call on `key` with a window; returns 1 when served from the window. */
static int windowed(sluice_coalescer *co, const char *key, int window_ms, sl_cacheable_fn c,
                    int *arg, tvalue **seen)
{
    sl_flight_opts o = {SL_NO_DEADLINE, window_ms, c};
    sluice_flight_result r;
    int shared;

    sl_coalesce(co, key, strlen(key), &o, plain_fn, arg, &r);
    shared = r.shared;
    if (seen)
        *seen = r.value;
    sluice_flight_result_release(&r);
    return shared;
}

static void test_coalesce_window_serves_until_expiry(void)
{
    sluice_coalescer *co = sluice_coalescer_new(count_release, NULL);
    struct sl_coalesce_stats st;
    tvalue *first, *again;
    int64_t t0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    reset_counts();
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(windowed(co, "w", 1500, NULL, &one, &first), 0);
    CU_ASSERT_EQUAL(windowed(co, "w", 1500, NULL, &one, &again), 1);
    CU_ASSERT_EQUAL(windowed(co, "w", 1500, NULL, &one, NULL), 1);
    CU_ASSERT(tu_now_ms() - t0 < 1500);    /* else the hits prove nothing */
    CU_ASSERT_PTR_EQUAL(first, again);
    CU_ASSERT_EQUAL(atomic_load(&calls), 1);
    CU_ASSERT_EQUAL(atomic_load(&releases), 0);   /* the window holds it */
    sl_coalesce_stats(co, &st);
    CU_ASSERT_EQUAL(st.cache_hits, 2);
    CU_ASSERT_EQUAL(st.flights, 1);
    usleep(1600 * 1000);
    /* Expired: a new flight, and the old value is released on the way. */
    CU_ASSERT_EQUAL(windowed(co, "w", 1500, NULL, &one, NULL), 0);
    CU_ASSERT_EQUAL(atomic_load(&calls), 2);
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
    /* Freeing the coalescer releases what the window still holds. */
    sluice_coalescer_free(co);
    CU_ASSERT_EQUAL(atomic_load(&releases), 2);
}

static void test_coalesce_window_needs_cacheable(void)
{
    sluice_coalescer *co = sluice_coalescer_new(count_release, NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    reset_counts();
    CU_ASSERT_EQUAL(windowed(co, "n", 60000, never_cacheable, &one, NULL), 0);
    CU_ASSERT_EQUAL(windowed(co, "n", 60000, never_cacheable, &one, NULL), 0);
    CU_ASSERT_EQUAL(atomic_load(&releases), 2);
    /* The default test caches successes only. */
    CU_ASSERT_EQUAL(windowed(co, "e", 60000, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(windowed(co, "e", 60000, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(atomic_load(&calls), 4);
    CU_ASSERT_EQUAL(atomic_load(&releases), 4);
    /* No window, no caching. */
    CU_ASSERT_EQUAL(windowed(co, "z", 0, NULL, &one, NULL), 0);
    CU_ASSERT_EQUAL(windowed(co, "z", 0, NULL, &one, NULL), 0);
    CU_ASSERT_EQUAL(atomic_load(&releases), 6);
    sluice_coalescer_free(co);
    CU_ASSERT_EQUAL(atomic_load(&releases), 6);
}

static void test_coalesce_window_expired_entries_swept(void)
{
    sluice_coalescer *co = sluice_coalescer_new(count_release, NULL);
    char key[32];
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    reset_counts();
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "old-%d", i);
        windowed(co, key, 20, NULL, &one, NULL);
    }
    usleep(100 * 1000);
    /* Other keys only: the old entries go by the sweep, not by lookups. */
    for (i = 0; i < 4000; i++) {
        snprintf(key, sizeof key, "new-%d", i);
        windowed(co, key, 0, NULL, &one, NULL);
    }
    CU_ASSERT_EQUAL(atomic_load(&releases), 4500);
    sluice_coalescer_free(co);
    CU_ASSERT_EQUAL(atomic_load(&releases), 4500);
}

/* ---- a leader that runs its own work (sl_flight_begin/_end) ------------ */

static atomic_int shares;

/* Writes the shared value into the flight (value_size bytes). */
static size_t share_42(void *ctx, void *value)
{
    tvalue *t = value;

    (void)ctx;
    t->magic = MAGIC;
    t->key = 42;
    atomic_fetch_add(&shares, 1);
    return 0;
}

/* Releases what a shared value holds; the bytes are the flight's. */
static void value_release(void *v)
{
    tvalue *t = v;

    T_CHECK(t->magic == MAGIC);
    t->magic = 0;
    atomic_fetch_add(&releases, 1);
}

typedef struct lead_call {
    sluice_coalescer *co;
    int wait_for_follower;      /* end only once a follower waits */
    int begun, shared;
} lead_call;

static void *lead_thread(void *arg)
{
    lead_call *lc = arg;
    sl_flight_key key = {7, "k", 1, NULL, NULL};
    sl_flight_opts o = {SL_NO_DEADLINE, 0, NULL};
    sl_flight_lead lead;
    sluice_flight_result r;

    lc->begun = sl_flight_begin(lc->co, &key, &o, &lead, &r);
    if (!lc->begun)
        return NULL;
    atomic_fetch_add(&calls, 1);
    if (lc->wait_for_follower)
        T_CHECK(await_waiting(lc->co, 1, 10000) == 0);
    lc->shared = sl_flight_end(lc->co, &lead, 0, NULL, 0, 0, share_42, NULL, NULL);
    return NULL;
}

static void test_coalesce_lead_alone_and_shared(void)
{
    sluice_coalescer *co = sl_coalescer_new(value_release, sizeof(tvalue), 0, NULL);
    sl_flight_key key = {7, "k", 1, NULL, NULL};
    sl_flight_opts o = {SL_NO_DEADLINE, 0, NULL};
    lead_call a = {.co = co};
    sl_flight_lead lead;
    sluice_flight_result r;
    pthread_t t;
    tvalue *v;
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    reset_counts();
    atomic_store(&shares, 0);
    /* Alone, twice (the second takes the first's flight back): nothing is
     * shared, written or released. */
    for (i = 0; i < 2; i++) {
        lead_thread(&a);
        CU_ASSERT_EQUAL(a.begun, 1);
        CU_ASSERT_EQUAL(a.shared, 0);
    }
    CU_ASSERT_EQUAL(atomic_load(&shares), 0);
    CU_ASSERT_EQUAL(atomic_load(&releases), 0);

    /* With a follower: share() writes the value once, the follower gets it,
     * and it is released once, when the follower lets go. */
    a = (lead_call){.co = co, .wait_for_follower = 1};
    pthread_create(&t, NULL, lead_thread, &a);
    while (atomic_load(&calls) < 3)
        usleep(1000);
    CU_ASSERT_EQUAL(sl_flight_begin(co, &key, &o, &lead, &r), 0);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(a.shared, 1);
    CU_ASSERT_EQUAL(atomic_load(&shares), 1);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(r.shared, 1);
    v = r.value;
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->key, 42);
    CU_ASSERT_EQUAL(atomic_load(&releases), 0);
    sluice_flight_result_release(&r);
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);

    /* Bad input is refused before anything is registered. */
    CU_ASSERT_EQUAL(sl_flight_begin(co, NULL, &o, &lead, &r), 0);
    CU_ASSERT_EQUAL(r.code, SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_flight_begin(co, &key, &o, NULL, &r), 0);
    CU_ASSERT_EQUAL(r.code, SLUICE_EINVAL);
    sluice_coalescer_free(co);
    CU_ASSERT_EQUAL(atomic_load(&bad), 0);
}

/* ---- structured keys (sl_flight_key with ops) --------------------------- */

/* A structured key: text, compared and copied by its ops. */
static int text_equal(const void *a, const void *b)
{
    return strcmp(a, b) == 0;
}

static void *text_copy(const void *ctx, size_t *size)
{
    *size = strlen(ctx) + 1;
    return sl_memdup(ctx, *size);
}

static const sl_flight_key_ops text_ops = {text_equal, text_copy};

typedef struct lazy_call {
    sluice_coalescer *co;
    const char *text;
    int delay_ms;
    sluice_flight_result r;
    int rc;
} lazy_call;

static int lazy_fn(void *arg, void **value)
{
    lazy_call *lc = arg;

    atomic_fetch_add(&calls, 1);
    usleep((useconds_t)lc->delay_ms * 1000);
    *value = tvalue_new(0);
    return 0;
}

/* Every key hashes to 42, so only their bytes tell them apart. */
static void *lazy_thread(void *arg)
{
    lazy_call *lc = arg;
    sl_flight_key key = {42, NULL, 0, &text_ops, lc->text};
    sl_flight_opts o = {SL_NO_DEADLINE, 0, NULL};

    lc->rc = sl_coalesce_key(lc->co, &key, &o, lazy_fn, lc, &lc->r);
    return NULL;
}

/* A leader takes 300 ms on `first`; `second` asks while it runs.  Returns
 * how many calls ran. */
static int lazy_pair(sluice_coalescer *co, const char *first, const char *second)
{
    lazy_call a = {.co = co, .text = first, .delay_ms = 300}, b = {.co = co, .text = second};
    pthread_t t;
    int before = atomic_load(&calls);

    pthread_create(&t, NULL, lazy_thread, &a);
    while (atomic_load(&calls) == before)
        usleep(1000);
    lazy_thread(&b);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(a.rc, 0);
    CU_ASSERT_EQUAL(b.rc, 0);
    CU_ASSERT_EQUAL(b.r.shared, b.r.value == a.r.value);
    sluice_flight_result_release(&a.r);
    sluice_flight_result_release(&b.r);
    return atomic_load(&calls) - before;
}

static void test_coalesce_structured_keys(void)
{
    sluice_coalescer *co = sluice_coalescer_new(count_release, NULL);
    char longer[2000];

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    reset_counts();
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    CU_ASSERT_EQUAL(lazy_pair(co, "GET /a", "GET /a"), 1);      /* equal: one call */
    CU_ASSERT_EQUAL(lazy_pair(co, "GET /a", "GET /b"), 2);      /* same hash, other bytes */
    CU_ASSERT_EQUAL(lazy_pair(co, "GET /a", "GET /a "), 2);     /* a prefix is not equal */
    CU_ASSERT_EQUAL(lazy_pair(co, longer, longer), 1);          /* a long one */
    CU_ASSERT_EQUAL(lazy_pair(co, "GET /a", "GET /A"), 2);
    sluice_coalescer_free(co);
    CU_ASSERT_EQUAL(atomic_load(&releases), 8);
    CU_ASSERT_EQUAL(atomic_load(&bad), 0);
}

/* ---- HTTP keys: a follower's join allocates nothing ---------------------- */

typedef struct http_join {
    sluice_coalescer *co;
    const sl_http_key *key;
    sluice_flight_result r;
    int led;
} http_join;

static void *http_join_thread(void *arg)
{
    http_join *j = arg;
    sl_flight_opts o = {SL_NO_DEADLINE, 0, NULL};
    sl_flight_lead lead;

    j->led = sl_http_flight_begin(j->co, j->key, &o, &lead, &j->r);
    return NULL;
}

/* A POST with a 1 KiB header and a 4 KiB body, its query in another order
 * from a second caller: the follower compares it with the leader's under
 * the stripe lock, and nothing is written out or copied for that. */
static void test_coalesce_http_join_allocates_nothing(void)
{
    sluice_coalescer *co = sl_http_coalescer_new(0, NULL);
    static char body_a[4096], body_b[4096], value[1024];
    sluice_header hdr_a[1] = {{"X-Long", value}}, hdr_b[1] = {{"X-Long", value}};
    sl_flight_opts o = {SL_NO_DEADLINE, 0, NULL};
    struct sl_coalesce_stats st;
    sl_http_key_prefix prefix;
    sl_http_key a, b;
    sl_flight_lead lead;
    sluice_flight_result r;
    http_join j = {0};
    pthread_t t;
    long allocs;

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    memset(body_a, 'b', sizeof body_a);
    memset(body_b, 'b', sizeof body_b);
    memset(value, 'v', sizeof value - 1);
    CU_ASSERT_EQUAL_FATAL(sl_http_key_prefix_init(&prefix, co, "http://127.0.0.1:1", "", 0, NULL, 0,
                                                  "t", NULL), 0);
    a = (sl_http_key){&prefix, "POST", 0, "/p?x=1&y=2", 10, 2, hdr_a, 1, body_a, sizeof body_a};
    b = (sl_http_key){&prefix, "POST", 0, "/p?y=2&x=1", 10, 2, hdr_b, 1, body_b, sizeof body_b};
    CU_ASSERT_EQUAL_FATAL(sl_http_flight_begin(co, &a, &o, &lead, &r), 1);
    tu_alloc_install(0, 0);
    j = (http_join){co, &b, {0}, -1};
    pthread_create(&t, NULL, http_join_thread, &j);
    do {
        usleep(1000);
        sl_coalesce_stats(co, &st);
    } while (st.waiting == 0);
    allocs = tu_alloc_count();
    tu_alloc_uninstall();
    sl_http_flight_end(co, &lead, 0, NULL, NULL, 0, 0);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(allocs, 0);
    CU_ASSERT_EQUAL(j.led, 0);
    CU_ASSERT_EQUAL(j.r.code, 0);
    CU_ASSERT_EQUAL(j.r.shared, 1);
    sluice_flight_result_release(&j.r);
    sl_http_key_prefix_free(&prefix);
    sluice_coalescer_free(co);
}

/* ---- the window's memory: expiry frees, a byte bound caps ---------------- */

static int null_fn(void *arg, void **value)
{
    (void)arg;
    *value = NULL;
    return 0;
}

/* One call on a key of `n` bytes with a window; 1 when the cache served it. */
static int windowed_key(sluice_coalescer *co, uint64_t hash, const char *key, size_t n,
                        int window_ms)
{
    sl_flight_key k = {hash, key, n, NULL, NULL};
    sl_flight_opts o = {SL_NO_DEADLINE, window_ms, NULL};
    sluice_flight_result r;
    struct sl_coalesce_stats before, after;

    sl_coalesce_stats(co, &before);
    sl_coalesce_key(co, &k, &o, null_fn, NULL, &r);
    sluice_flight_result_release(&r);
    sl_coalesce_stats(co, &after);
    return after.cache_hits > before.cache_hits;
}

#define SOAK_KEYS 1000000
#define SOAK_MAX_BYTES ((size_t)1 << 20)

/* A million distinct keys, each kept 100 ms, against a 1 MiB bound: the
 * allocations alive never pass what 1 MiB of the smallest entries (a
 * flight of at least 64 bytes and its key's copy, two allocations) could
 * be, and once the window has passed, new calls free the old entries. */
static void test_coalesce_window_soak_stays_flat(void)
{
    sluice_coalescer *co;
    struct sl_coalesce_stats st;
    long base, live, peak = 0, bound = (long)(2 * (SOAK_MAX_BYTES / 64)) + 64;
    uint64_t peak_bytes = 0;
    char key[32];
    int i, n;

    tu_alloc_install(0, 0);
    co = sl_coalescer_new(NULL, 0, SOAK_MAX_BYTES, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    base = tu_alloc_outstanding();
    for (i = 0; i < SOAK_KEYS; i++) {
        sl_flight_opts o = {SL_NO_DEADLINE, 100, NULL};
        sluice_flight_result r;
        n = snprintf(key, sizeof key, "/n/%d", i);
        sl_coalesce(co, key, (size_t)n, &o, null_fn, NULL, &r);
        sluice_flight_result_release(&r);
        if (i % 4096 == 0) {
            live = tu_alloc_outstanding() - base;
            peak = live > peak ? live : peak;
            sl_coalesce_stats(co, &st);
            peak_bytes = st.cache_bytes > peak_bytes ? st.cache_bytes : peak_bytes;
        }
    }
    CU_ASSERT(peak <= bound);
    CU_ASSERT(peak_bytes <= SOAK_MAX_BYTES);
    usleep(150 * 1000);
    for (i = 0; i < 1000; i++) {
        sl_flight_opts o = {SL_NO_DEADLINE, 100, NULL};
        sluice_flight_result r;
        n = snprintf(key, sizeof key, "/after/%d", i);
        sl_coalesce(co, key, (size_t)n, &o, null_fn, NULL, &r);
        sluice_flight_result_release(&r);
    }
    sl_coalesce_stats(co, &st);
    live = tu_alloc_outstanding() - base;
    CU_ASSERT(st.cache_entries <= 1000);
    CU_ASSERT(live <= 2 * 1000 + 64);
    sluice_coalescer_free(co);
    CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
    tu_alloc_uninstall();
    if (peak > bound || live > 2 * 1000 + 64)
        fprintf(stderr, "\n  window soak: peak %ld allocations alive (bound %ld), %ld after\n",
                peak, bound, live);
}

/* Keys of one stripe (the top bits of their hash pick it), each kept a
 * minute, against a bound of four such entries a stripe: the fifth and
 * later evict the oldest first. */
static void test_coalesce_window_bound_evicts_oldest(void)
{
    sluice_coalescer *co = sl_coalescer_new(NULL, 0, 0, NULL);
    struct sl_coalesce_stats st;
    size_t entry;
    char key[16];
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    windowed_key(co, 1, "key-00", 6, 60000);
    sl_coalesce_stats(co, &st);
    entry = st.cache_bytes;
    CU_ASSERT_FATAL(entry > 6);
    sluice_coalescer_free(co);

    co = sl_coalescer_new(NULL, 0, 16 * 4 * entry, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    for (i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "key-%02d", i);
        CU_ASSERT_EQUAL(windowed_key(co, (uint64_t)i + 1, key, 6, 60000), 0);
    }
    sl_coalesce_stats(co, &st);
    CU_ASSERT_EQUAL(st.cache_entries, 4);
    CU_ASSERT_EQUAL(st.cache_bytes, 4 * entry);
    CU_ASSERT_EQUAL(st.cache_evictions, 6);
    for (i = 9; i >= 6; i--) {         /* the newest four are served */
        snprintf(key, sizeof key, "key-%02d", i);
        CU_ASSERT_EQUAL(windowed_key(co, (uint64_t)i + 1, key, 6, 60000), 1);
    }
    CU_ASSERT_EQUAL(windowed_key(co, 6, "key-05", 6, 60000), 0);   /* evicted */
    CU_ASSERT_EQUAL(windowed_key(co, 7, "key-06", 6, 60000), 0);   /* now the oldest */
    CU_ASSERT_EQUAL(windowed_key(co, 10, "key-09", 6, 60000), 1);
    sluice_coalescer_free(co);
}

/* ---- results that outlive the coalescer, bad input ----------------------- */

static void test_coalesce_result_outlives_coalescer(void)
{
    sluice_coalescer *co = sluice_coalescer_new(count_release, NULL);
    sluice_flight_result r;

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    reset_counts();
    CU_ASSERT_EQUAL(sluice_coalesce(co, "", 0, -1, plain_fn, &one, &r), 0);
    sluice_coalescer_free(co);
    CU_ASSERT_EQUAL(atomic_load(&releases), 0);
    sluice_flight_result_release(&r);
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
    sluice_flight_result_release(&r);   /* twice is harmless */
    CU_ASSERT_EQUAL(atomic_load(&releases), 1);
}

static void test_coalesce_bad_input(void)
{
    sluice_coalescer *co = sluice_coalescer_new(NULL, NULL);
    sluice_flight_result r;

    CU_ASSERT_PTR_NOT_NULL_FATAL(co);
    CU_ASSERT_EQUAL(sluice_coalesce(NULL, "k", 1, -1, plain_fn, &one, &r), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(r.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(r.value);
    CU_ASSERT_EQUAL(sluice_coalesce(co, "k", 1, -1, NULL, &one, &r), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_coalesce(co, NULL, 3, -1, plain_fn, &one, &r), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_coalesce(co, "k", 1, -1, plain_fn, &one, NULL), SLUICE_EINVAL);
    sluice_flight_result_release(&r);
    sluice_flight_result_release(NULL);
    sluice_coalescer_free(NULL);
    /* Without a release function the caller keeps the values. */
    CU_ASSERT_EQUAL(sluice_coalesce(co, "k", 1, -1, plain_fn, &one, &r), 0);
    free(r.value);
    sluice_flight_result_release(&r);
    sluice_coalescer_free(co);
}

/* ---- stress ------------------------------------------------------------- */

#define STRESS_THREADS 32
#define STRESS_KEYS 8

static atomic_int stress_made;
static atomic_int stress_stop;
static sluice_coalescer *stress_co;

static int stress_fn(void *arg, void **value)
{
    int key = *(int *)arg;

    if (sl_rand_below(4) == 0)
        usleep((useconds_t)sl_rand_below(2000));
    if (sl_rand_below(8) == 0)
        return SLUICE_EIO;
    atomic_fetch_add(&stress_made, 1);
    *value = tvalue_new(key);
    return 0;
}

static void *stress_thread(void *arg)
{
    long served = 0;

    while (!atomic_load(&stress_stop)) {
        int key = (int)sl_rand_below(STRESS_KEYS);
        int timeout = sl_rand_below(4) == 0 ? (int)sl_rand_below(2) : -1;
        int window = sl_rand_below(2) ? 0 : 3;
        sl_flight_opts o = {sl_deadline_in_ms(timeout), window, NULL};
        char k[16];
        sluice_flight_result r;
        int rc;

        snprintf(k, sizeof k, "key-%d", key);
        rc = sl_coalesce(stress_co, k, strlen(k), &o, stress_fn, &key, &r);
        if (rc == 0) {
            tvalue *t = r.value;
            if (t->magic != MAGIC || t->key != key)
                atomic_fetch_add(&bad, 1);
        } else {
            T_CHECK(rc == SLUICE_EIO || rc == SLUICE_ETIMEDOUT);
            T_CHECK(r.value == NULL);
        }
        sluice_flight_result_release(&r);
        served++;
    }
    return (void *)served;
}

static void test_coalesce_stress_random_keys(void)
{
    pthread_t th[STRESS_THREADS];
    struct sl_coalesce_stats st;
    long served = 0;
    int i;

    reset_counts();
    atomic_store(&stress_made, 0);
    atomic_store(&stress_stop, 0);
    stress_co = sluice_coalescer_new(count_release, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stress_co);
    for (i = 0; i < STRESS_THREADS; i++)
        pthread_create(&th[i], NULL, stress_thread, NULL);
    usleep(2500 * 1000);
    atomic_store(&stress_stop, 1);
    for (i = 0; i < STRESS_THREADS; i++) {
        void *n;
        pthread_join(th[i], &n);
        served += (long)n;
    }
    sl_coalesce_stats(stress_co, &st);
    sluice_coalescer_free(stress_co);
    CU_ASSERT_EQUAL(atomic_load(&releases), atomic_load(&stress_made));
    CU_ASSERT_EQUAL((long)(st.flights + st.followers + st.cache_hits + st.timeouts), served);
    CU_ASSERT(st.followers + st.cache_hits > 0);
    CU_ASSERT_EQUAL(st.waiting, 0);
    CU_ASSERT_EQUAL(atomic_load(&bad), 0);
}

/* ---- allocation failure ------------------------------------------------- */

static void test_coalesce_alloc_failure_loop(void)
{
    long n;
    int done = 0;

    for (n = 1; !done && n < 100; n++) {
        sluice_error err = {0};
        sluice_coalescer *co;
        sluice_flight_result r;
        int rc = -1, rc2 = -1;

        reset_counts();
        tu_alloc_install(n, 0);
        co = sluice_coalescer_new(count_release, &err);
        if (co) {
            rc = sluice_coalesce(co, "a", 1, -1, plain_fn, &one, &r);
            sluice_flight_result_release(&r);
            sl_flight_opts o = {SL_NO_DEADLINE, 1000, NULL};

            rc2 = sl_coalesce(co, "b", 1, &o, plain_fn, &one, &r);
            sluice_flight_result_release(&r);
            CU_ASSERT(rc == 0 || rc == SLUICE_ENOMEM);
            CU_ASSERT(rc2 == 0 || rc2 == SLUICE_ENOMEM);
            sluice_coalescer_free(co);
            done = rc == 0 && rc2 == 0 && tu_alloc_count() < n;
        } else {
            CU_ASSERT_EQUAL(err.code, SLUICE_ENOMEM);
        }
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        /* Every value made was released. */
        CU_ASSERT_EQUAL(atomic_load(&releases), atomic_load(&calls));
        tu_alloc_uninstall();
    }
    CU_ASSERT(done);
}

static CU_TestInfo tests[] = {
    {"test_coalesce_one_call_for_64_threads", test_coalesce_one_call_for_64_threads},
    {"test_coalesce_leader_error_reaches_all", test_coalesce_leader_error_reaches_all},
    {"test_coalesce_distinct_keys_never_share", test_coalesce_distinct_keys_never_share},
    {"test_coalesce_follower_deadline", test_coalesce_follower_deadline},
    {"test_coalesce_reentrant_other_key", test_coalesce_reentrant_other_key},
    {"test_coalesce_window_serves_until_expiry", test_coalesce_window_serves_until_expiry},
    {"test_coalesce_window_needs_cacheable", test_coalesce_window_needs_cacheable},
    {"test_coalesce_window_expired_entries_swept", test_coalesce_window_expired_entries_swept},
    {"test_coalesce_lead_alone_and_shared", test_coalesce_lead_alone_and_shared},
    {"test_coalesce_structured_keys", test_coalesce_structured_keys},
    {"test_coalesce_http_join_allocates_nothing", test_coalesce_http_join_allocates_nothing},
    {"test_coalesce_window_soak_stays_flat", test_coalesce_window_soak_stays_flat},
    {"test_coalesce_window_bound_evicts_oldest", test_coalesce_window_bound_evicts_oldest},
    {"test_coalesce_result_outlives_coalescer", test_coalesce_result_outlives_coalescer},
    {"test_coalesce_bad_input", test_coalesce_bad_input},
    {"test_coalesce_stress_random_keys", test_coalesce_stress_random_keys},
    {"test_coalesce_alloc_failure_loop", test_coalesce_alloc_failure_loop},
    CU_TEST_INFO_NULL,
};

void suite_coalesce(void);
void suite_coalesce(void)
{
    tu_add_suite("coalesce", tests);
}
