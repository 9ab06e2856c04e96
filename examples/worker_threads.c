/* worker_threads: the program `make demo` runs.
 *
 * One factory, three services with different settings, N worker threads
 * calling them for a few seconds, then a report of what the library did:
 *   catalog    rate limited (shared through Redis when SLUICE_REDIS_URL is set)
 *   pricing    a hot, slow path that many workers ask at once: coalesced
 *   inventory  a flaky upstream: retries with backoff behind a circuit breaker
 *
 * usage: worker_threads BASE_URL [threads] [seconds]
 *   e.g. worker_threads http://127.0.0.1:8080 8 5
 */
#define _POSIX_C_SOURCE 200809L  /* clock_gettime, nanosleep, isatty */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sluice.h>

#define MAX_THREADS 64
#define MAX_SAMPLES 200000

struct worker {
    pthread_t tid;
    int id;
    long *lat_us;      /* this thread's latencies */
    long n;
    long errors;
};

static sluice_client *catalog, *pricing, *inventory;
static atomic_int stop;
static atomic_long done_total;

static long now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

/* One unit of a worker's job: a random service, like a real handler would. */
static int one_call(struct worker *w, unsigned *seed)
{
    char path[64];
    sluice_client *c;
    sluice_response *r = NULL;
    sluice_error err;
    int pick = (int)(rand_r(seed) % 10), rc;

    if (pick < 4) {
        c = catalog;
        snprintf(path, sizeof path, "/json");
    } else if (pick < 8) {
        c = pricing;
        snprintf(path, sizeof path, "/delay/20");
    } else {
        c = inventory;
        /* One key in five fails once, then works: the retry absorbs it. */
        if (rand_r(seed) % 5 == 0)
            snprintf(path, sizeof path, "/flaky/w%d-%u?fail=1", w->id, rand_r(seed));
        else
            snprintf(path, sizeof path, "/json?w=%d", w->id);
    }
    rc = sluice_get(c, path, &r, &err);
    if (rc == 0 && sluice_response_status(r) >= 500)
        rc = -1;
    sluice_response_free(r);
    return rc;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    unsigned seed = (unsigned)(w->id * 7919 + 1);

    while (!atomic_load(&stop)) {
        long t0 = now_us();
        if (one_call(w, &seed) != 0)
            w->errors++;
        if (w->n < MAX_SAMPLES)
            w->lat_us[w->n++] = now_us() - t0;
        atomic_fetch_add(&done_total, 1);
    }
    return NULL;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;

    return (x > y) - (x < y);
}

static sluice_client *make_client(sluice_factory *f, const char *name, const char *base,
                                  void (*tune)(sluice_client_opts *))
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = base;
    tune(&co);
    c = sluice_factory_client(f, name, &co, &err);
    if (!c) {
        fprintf(stderr, "worker_threads: client %s: %s\n", name, err.msg);
        exit(1);
    }
    return c;
}

static void tune_catalog(sluice_client_opts *co)
{
    co->rate_limit.rate = 500;         /* 500 requests per second for the fleet */
    co->rate_limit.period_ms = 1000;
    co->rate_limit.burst = 50;
}

static void tune_pricing(sluice_client_opts *co)
{
    (void)co;   /* GETs coalesce by default */
}

static void tune_inventory(sluice_client_opts *co)
{
    co->retry.max_retries = 3;
    co->retry.backoff_factor_ms = 5;
    co->breaker.failure_threshold = 10;
    co->breaker.recovery_timeout_ms = 500;
}

static void report(struct worker *w, int nthreads, double secs, sluice_factory *f)
{
    struct sluice_factory_stats st;
    long total = 0, errors = 0, k = 0, *all;
    int i;

    for (i = 0; i < nthreads; i++) {
        total += w[i].n;
        errors += w[i].errors;
    }
    all = malloc(sizeof *all * (size_t)(total ? total : 1));
    if (!all) {
        fprintf(stderr, "worker_threads: out of memory\n");
        exit(1);
    }
    for (i = 0; i < nthreads; i++) {
        memcpy(all + k, w[i].lat_us, sizeof *all * (size_t)w[i].n);
        k += w[i].n;
    }
    qsort(all, (size_t)total, sizeof *all, cmp_long);
    sluice_factory_stats(f, &st);
    printf("\n%ld calls in %.1f s: %.0f calls/s, %ld errors\n", total, secs, total / secs, errors);
    if (total)
        printf("latency   p50 %.2f ms   p90 %.2f ms   p99 %.2f ms   max %.2f ms\n",
               all[total / 2] / 1000.0, all[total * 9 / 10] / 1000.0,
               all[total * 99 / 100] / 1000.0, all[total - 1] / 1000.0);
    printf("pool      %llu connections created, %llu reuses, peak %d in use\n",
           (unsigned long long)st.pool.created, (unsigned long long)st.pool.reused,
           st.pool.peak_in_use);
    printf("limiter   %s: %llu allowed, %llu throttled, %llu waits\n",
           st.limiter_shared ? "Redis (shared by every instance)" : "in-process",
           (unsigned long long)st.limiter.allowed, (unsigned long long)st.limiter.throttled,
           (unsigned long long)st.limiter.waits);
    printf("coalescer %llu upstream flights, %llu calls saved\n",
           (unsigned long long)st.coalesce_flights, (unsigned long long)st.coalesce_followers);
    printf("retries   %llu   breaker transitions %llu\n", (unsigned long long)st.retries,
           (unsigned long long)st.breaker_transitions);
    free(all);
}

/* A whole-string number, or `bad` when it is not one. */
static double number(const char *s, double bad)
{
    char *end;
    double v = strtod(s, &end);

    return end == s || *end ? bad : v;
}

int main(int argc, char **argv)
{
    struct worker w[MAX_THREADS];
    const char *base = argc > 1 ? argv[1] : getenv("SLUICE_DEMO_URL");
    int nthreads = argc > 2 ? (int)number(argv[2], -1) : 8;
    double secs = argc > 3 ? number(argv[3], -1) : 5;
    int tty = isatty(1), started, i;
    sluice_factory *f;
    sluice_error err;
    long t0;

    if (!base || nthreads < 1 || nthreads > MAX_THREADS || secs <= 0) {
        fprintf(stderr, "usage: worker_threads BASE_URL [threads 1-%d] [seconds]\n", MAX_THREADS);
        return 2;
    }
    if (!(f = sluice_factory_new(NULL, &err))) {
        fprintf(stderr, "worker_threads: %s\n", err.msg);
        return 1;
    }
    catalog = make_client(f, "catalog", base, tune_catalog);
    pricing = make_client(f, "pricing", base, tune_pricing);
    inventory = make_client(f, "inventory", base, tune_inventory);
    {
        struct sluice_factory_stats st;
        sluice_factory_stats(f, &st);
        printf("sluice %s: %d workers for %.0f s against %s; limiter %s\n",
               sluice_version_string(), nthreads, secs, base,
               st.limiter_shared ? "shared through Redis ($SLUICE_REDIS_URL)" : "in-process");
    }
    t0 = now_us();
    for (started = 0; started < nthreads; started++) {
        w[started] = (struct worker){0};
        w[started].id = started;
        w[started].lat_us = malloc(sizeof(long) * MAX_SAMPLES);
        if (!w[started].lat_us || pthread_create(&w[started].tid, NULL, work, &w[started]) != 0) {
            fprintf(stderr, "worker_threads: could not start worker %d\n", started);
            free(w[started].lat_us);
            break;
        }
    }
    nthreads = started;
    while (now_us() - t0 < (long)(secs * 1e6)) {
        nanosleep(tty ? &(struct timespec){0, 200000000} : &(struct timespec){1, 0}, NULL);
        if (tty) {
            printf("\r  %6.1f s  %8ld calls  %8.0f calls/s", (now_us() - t0) / 1e6,
                   atomic_load(&done_total), atomic_load(&done_total) / ((now_us() - t0) / 1e6));
            fflush(stdout);
        }
    }
    atomic_store(&stop, 1);
    for (i = 0; i < nthreads; i++)
        pthread_join(w[i].tid, NULL);
    report(w, nthreads, (now_us() - t0) / 1e6, f);
    for (i = 0; i < nthreads; i++)
        free(w[i].lat_us);
    sluice_factory_free(f);
    return 0;
}
