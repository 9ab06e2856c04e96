/* session_pool: a pool of long-lived sessions, borrowed and returned.
 *
 * N sessions are made ahead of time (POST /sessions on the mock API gives
 * an id that lives ttl_ms).  Each round, M borrowers (M > N, so some wait)
 * take a session, make a request that carries its id, hold it for work_ms
 * and give it back.  A session past its TTL fails the pool's alive check:
 * the pool destroys it and a new one is made (on the pool's housekeeping
 * thread, which keeps N ready).  At the end: each live session's usage and
 * the pool's statistics.
 *
 * usage: session_pool BASE_URL [sessions] [borrowers] [rounds] [interval_ms]
 *                     [ttl_ms] [work_ms]
 *   defaults: 3 sessions, 5 borrowers, 3 rounds 1000 ms apart, TTL 1000 ms,
 *   100 ms of work
 */
#define _POSIX_C_SOURCE 200809L  /* clock_gettime, nanosleep */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice.h>

#define MAX_BORROWERS 256

typedef struct session {
    char id[32];
    long long expires_ms;      /* by our clock: the server's TTL from creation */
} session;

static sluice_client *api;
static sluice_pool *pool;
static int ttl_ms = 1000, work_ms = 100;
static atomic_int ok, failed;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* The pool's create: POST /sessions, and keep the id it returns. */
static int session_create(void *ctx, void **res, sluice_error *err)
{
    char path[64];
    sluice_request req = {0};
    sluice_response *r = NULL;
    session *s;
    const char *body, *id;
    long long t0 = now_ms();
    int rc;

    (void)ctx;
    snprintf(path, sizeof path, "/sessions?ttl_ms=%d", ttl_ms);
    req.method = "POST";
    req.path = path;
    if ((rc = sluice_client_do(api, &req, &r, err)) != 0)
        return rc;
    body = sluice_response_body(r, NULL);
    id = strstr(body, "\"session\":\"");
    if (sluice_response_status(r) != 201 || !id || !(s = calloc(1, sizeof *s))) {
        sluice_response_free(r);
        return SLUICE_EPROTO;
    }
    sscanf(id + 11, "%31[^\"]", s->id);
    s->expires_ms = t0 + ttl_ms;
    sluice_response_free(r);
    *res = s;
    return 0;
}

static void session_destroy(void *ctx, void *res)
{
    (void)ctx;
    free(res);
}

/* Alive while its TTL has 50 ms left (time for one request). */
static int session_alive(void *ctx, void *res)
{
    const session *s = res;

    (void)ctx;
    return now_ms() + 50 < s->expires_ms;
}

/* One borrower: a session, a request that carries its id, some work. */
static void *borrower(void *arg)
{
    char path[64];
    sluice_response *r = NULL;
    sluice_error err;
    session *s;
    int good;

    (void)arg;
    if (sluice_pool_get_err(pool, 10000, (void **)&s, &err) != 0) {
        fprintf(stderr, "borrow: %s\n", err.msg);
        atomic_fetch_add(&failed, 1);
        return NULL;
    }
    snprintf(path, sizeof path, "/sessions/%s", s->id);
    good = sluice_get(api, path, &r, &err) == 0 && sluice_response_status(r) == 200;
    sluice_response_free(r);
    sleep_ms(work_ms);
    sluice_pool_put(pool, s, good);      /* a refused session is not reused */
    atomic_fetch_add(good ? &ok : &failed, 1);
    return NULL;
}

static int arg_or(int argc, char **argv, int i, int def)
{
    return argc > i ? atoi(argv[i]) : def;
}

int main(int argc, char **argv)
{
    static const sluice_pool_ops ops = {session_create, session_destroy, session_alive, NULL};
    int nsessions = arg_or(argc, argv, 2, 3), nborrowers = arg_or(argc, argv, 3, 5);
    int rounds = arg_or(argc, argv, 4, 3), interval_ms = arg_or(argc, argv, 5, 1000);
    struct sluice_pool_usage use[64];
    struct sluice_pool_stats st;
    sluice_client_opts co;
    sluice_pool_opts po;
    sluice_factory *f;
    sluice_error err;
    pthread_t t[MAX_BORROWERS];
    size_t n, i;
    int round, k, made;

    ttl_ms = arg_or(argc, argv, 6, 1000);
    work_ms = arg_or(argc, argv, 7, 100);
    if (argc < 2 || nsessions < 1 || nborrowers < 1 || nborrowers > MAX_BORROWERS ||
        rounds < 1 || interval_ms < 0 || ttl_ms < 100 || work_ms < 0) {
        fprintf(stderr, "usage: %s BASE_URL [sessions] [borrowers<=%d] [rounds] [interval_ms] "
                "[ttl_ms>=100] [work_ms]\n", argv[0], MAX_BORROWERS);
        return 2;
    }
    if (!(f = sluice_factory_new(NULL, &err))) {
        fprintf(stderr, "factory: %s\n", err.msg);
        return 1;
    }
    sluice_client_opts_init(&co);
    co.base_url = argv[1];
    co.disable_coalescing = 1;
    if (!(api = sluice_factory_client(f, "sessions", &co, &err))) {
        fprintf(stderr, "client: %s\n", err.msg);
        sluice_factory_free(f);
        return 1;
    }
    memset(&po, 0, sizeof po);
    po.max_size = nsessions;
    po.min_idle = nsessions;             /* kept ready: expired ones are replaced */
    if (!(pool = sluice_pool_new(&po, &ops, NULL, &err))) {
        fprintf(stderr, "pool: %s\n", err.msg);
        sluice_factory_free(f);
        return 1;
    }
    made = sluice_pool_prefill(pool, nsessions, &err);    /* initialize() */
    if (made < 0)
        fprintf(stderr, "prefill: %s\n", err.msg);
    printf("session_pool: %d sessions (TTL %d ms), %d rounds of %d borrowers %d ms apart\n",
           nsessions, ttl_ms, rounds, nborrowers, interval_ms);
    for (round = 1; round <= rounds; round++) {
        long long t0 = now_ms();
        atomic_store(&ok, 0);
        atomic_store(&failed, 0);
        for (k = 0; k < nborrowers; k++)
            pthread_create(&t[k], NULL, borrower, NULL);
        for (k = 0; k < nborrowers; k++)
            pthread_join(t[k], NULL);
        printf("round %d: ok=%d failed=%d elapsed=%lld ms\n", round, atomic_load(&ok),
               atomic_load(&failed), now_ms() - t0);
        if (round < rounds)
            sleep_ms(interval_ms);
    }
    n = sluice_pool_usage(pool, use, sizeof use / sizeof use[0]);
    printf("sessions:\n");
    for (i = 0; i < n && i < sizeof use / sizeof use[0]; i++)
        printf("  %s: used %llu times, age %lld ms, idle %lld ms\n",
               ((const session *)use[i].res)->id, (unsigned long long)use[i].checkouts,
               (long long)use[i].age_ms, (long long)use[i].idle_ms);
    sluice_pool_stats(pool, &st);
    printf("pool: open=%d idle=%d in_use=%d created=%llu reused=%llu expired=%llu waited=%llu "
           "wait_max=%llu us\n", st.open, st.idle, st.in_use, (unsigned long long)st.created,
           (unsigned long long)st.reused, (unsigned long long)st.closed[SLUICE_CLOSE_STALE],
           (unsigned long long)st.waited, (unsigned long long)st.wait_max_us);
    sluice_pool_free(pool);
    sluice_factory_free(f);
    return 0;
}
