/* The batcher's adaptive window, against two transports that model the
 * two regimes: a server that serves one round trip at a time at a fixed
 * cost per call (Redis the bottleneck: fewer, larger batches must win),
 * and round trips that cost per decision and run in parallel (the client
 * side the bottleneck: more flights must win).  Real threads, real
 * futexes; the transports stand in for the network only. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "limiter_batch.h"
#include "testutil.h"

#define THREADS 8
#define RUN_MS 1500

typedef struct transport {
    int serial;                 /* 1: one round trip at a time (the server lock) */
    int64_t per_call_ns, per_decision_ns;
    pthread_mutex_t server;
    _Atomic uint64_t trips, decisions, late_trips, late_decisions;
    _Atomic int late;           /* counting the second half only */
} transport;

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int fake_round_trip(void *ctx, void **conn, sl_batch_call *const *calls, size_t n,
                           int64_t deadline, sluice_error *e)
{
    transport *t = ctx;
    size_t i;

    (void)deadline;
    (void)e;
    *conn = t;
    if (t->serial)
        pthread_mutex_lock(&t->server);
    sleep_ns(t->per_call_ns + t->per_decision_ns * (int64_t)n);
    if (t->serial)
        pthread_mutex_unlock(&t->server);
    atomic_fetch_add(&t->trips, 1);
    atomic_fetch_add(&t->decisions, n);
    if (atomic_load(&t->late)) {
        atomic_fetch_add(&t->late_trips, 1);
        atomic_fetch_add(&t->late_decisions, n);
    }
    for (i = 0; i < n; i++) {
        calls[i]->code = 0;
        memset(&calls[i]->r, 0, sizeof calls[i]->r);
        calls[i]->r.allowed = 1;
        calls[i]->r.retry_after_ms = -1;
    }
    return 0;
}

static void fake_release(void *ctx, void *conn)
{
    (void)ctx;
    (void)conn;
}

static const sl_batch_ops fake_ops = {.round_trip = fake_round_trip, .release = fake_release};

typedef struct runner {
    sl_batcher *b;
    int64_t stop_ns;
    long errors;
} runner;

static void *decide_loop(void *arg)
{
    runner *r = arg;
    sl_lim_req rq;

    memset(&rq, 0, sizeof rq);
    rq.key = "k";
    rq.key_len = 1;
    while (sl_now_ns() < r->stop_ns) {
        sl_batch_call call;

        memset(&call, 0, sizeof call);
        call.rq = &rq;
        sl_batcher_decide(r->b, &call);
        if (call.code || !call.r.allowed)
            r->errors++;
    }
    return NULL;
}

/* Runs THREADS callers for RUN_MS; the second half's round trips are
 * counted apart, once the window has had time to settle. */
static sl_batcher *run(transport *t, int max_inflight, long *errors)
{
    sl_batch_cfg cfg = {.timeout_ms = 5000, .max_inflight = max_inflight, .where = "test"};
    pthread_t th[THREADS];
    runner r[THREADS];
    sluice_error err;
    sl_batcher *b = sl_batcher_new(&cfg, &fake_ops, t, &err);
    int64_t t0 = sl_now_ns();
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    for (i = 0; i < THREADS; i++) {
        r[i].b = b;
        r[i].stop_ns = t0 + (int64_t)RUN_MS * 1000000;
        r[i].errors = 0;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, decide_loop, &r[i]), 0);
    }
    sleep_ns((int64_t)RUN_MS * 500000);
    atomic_store(&t->late, 1);
    *errors = 0;
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        *errors += r[i].errors;
    }
    return b;
}

static void test_batch_server_bound_settles_on_one_flight(void)
{
    transport t;
    sl_batcher *b;
    long errors;
    double batch;

    memset(&t, 0, sizeof t);
    t.serial = 1;
    t.per_call_ns = 1000000;   /* 1 ms a call, whatever it carries */
    pthread_mutex_init(&t.server, NULL);
    b = run(&t, 4, &errors);
    batch = (double)t.late_decisions / (double)(t.late_trips ? t.late_trips : 1);
    printf("\n    server-bound: window %d, %.1f decisions per round trip (second half)\n",
           sl_batcher_window(b), batch);
    CU_ASSERT_EQUAL(errors, 0);
    /* One flight, or one probe of two at the moment of reading. */
    CU_ASSERT(sl_batcher_window(b) <= 2);
    /* Flights of 4 (the rule before the window: another flight once 2
     * wait) split 8 callers into batches of about 2; one flight gathering
     * its callers carries 5-7 (4.4 seen under TSan on a loaded host). */
    CU_ASSERT(batch >= 3.5);
    sl_batcher_free(b);
    pthread_mutex_destroy(&t.server);
}

static void test_batch_client_bound_opens_the_window(void)
{
    transport t;
    sl_batcher *b;
    long errors;

    memset(&t, 0, sizeof t);
    t.serial = 0;
    t.per_decision_ns = 300000;   /* 0.3 ms a decision, flights in parallel */
    pthread_mutex_init(&t.server, NULL);
    b = run(&t, 4, &errors);
    printf("\n    client-bound: window %d, %.1f decisions per round trip", sl_batcher_window(b),
           (double)t.decisions / (double)(t.trips ? t.trips : 1));
    CU_ASSERT_EQUAL(errors, 0);
    CU_ASSERT(sl_batcher_window(b) >= 2);
    sl_batcher_free(b);
    pthread_mutex_destroy(&t.server);
}

/* A lone caller never waits for company: each decision is its own round
 * trip, sent at once. */
static void test_batch_lone_decision_goes_at_once(void)
{
    sl_batch_cfg cfg = {.timeout_ms = 5000, .max_inflight = 4, .where = "test"};
    transport t;
    sluice_error err;
    sl_batcher *b;
    sl_lim_req rq;
    int64_t t0, worst = 0;
    int i;

    memset(&t, 0, sizeof t);
    memset(&rq, 0, sizeof rq);
    pthread_mutex_init(&t.server, NULL);
    b = sl_batcher_new(&cfg, &fake_ops, &t, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    for (i = 0; i < 50; i++) {
        sl_batch_call call;

        memset(&call, 0, sizeof call);
        call.rq = &rq;
        t0 = sl_now_ns();
        sl_batcher_decide(b, &call);
        if (sl_now_ns() - t0 > worst)
            worst = sl_now_ns() - t0;
        CU_ASSERT_EQUAL(call.code, 0);
    }
    CU_ASSERT_EQUAL(atomic_load(&t.trips), 50);
    CU_ASSERT_EQUAL(atomic_load(&t.decisions), 50);
    printf("\n    lone decisions: slowest %.3f ms\n", (double)worst / 1e6);
    sl_batcher_free(b);
    pthread_mutex_destroy(&t.server);
}

static CU_TestInfo tests[] = {
    {"test_batch_server_bound_settles_on_one_flight", test_batch_server_bound_settles_on_one_flight},
    {"test_batch_client_bound_opens_the_window", test_batch_client_bound_opens_the_window},
    {"test_batch_lone_decision_goes_at_once", test_batch_lone_decision_goes_at_once},
    CU_TEST_INFO_NULL,
};

void suite_limiter_batch(void);
void suite_limiter_batch(void)
{
    tu_add_suite("limiter_batch", tests);
}
