/* coalescing: many threads ask for the same slow resource at the same
 * moment through one client.  The coalescer sends one upstream request and
 * hands every caller the same (shared, immutable) response.
 *
 * The program counts the upstream calls where they land: the mock API's
 * /hits/<path> counter, read before and after with a plain GET.
 *
 * usage: coalescing BASE_URL [threads] [path]
 *   threads 1-1024 (default 64), path default /delay/200
 *   e.g. coalescing http://127.0.0.1:8080 64 '/count/demo?delay=300'
 */
#define _POSIX_C_SOURCE 200809L  /* pthread barriers, clock_gettime */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice.h>

#define MAX_THREADS 1024

struct caller {
    pthread_t tid;
    int rc;                 /* 0 or a SLUICE_E* code */
    int status;
    int coalesced;          /* served by another caller's flight */
    double ms;              /* this caller's latency */
};

static sluice_client *client;
static const char *path;
static pthread_barrier_t start_line;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Every caller waits at the barrier, so the requests really are
 * concurrent: that is when coalescing applies. */
static void *call(void *arg)
{
    struct caller *k = arg;
    sluice_response *r = NULL;
    sluice_error err;
    double t0;

    pthread_barrier_wait(&start_line);
    t0 = now_ms();
    k->rc = sluice_get(client, path, &r, &err);
    k->ms = now_ms() - t0;
    if (k->rc == 0) {
        k->status = sluice_response_status(r);
        k->coalesced = sluice_response_coalesced(r);
    } else {
        fprintf(stderr, "coalescing: %s: %s\n", sluice_err_name(err.code), err.msg);
    }
    sluice_response_free(r);
    return NULL;
}

/* How many requests for `p` (its query left out) reached the mock API:
 * GET /hits/<path>, or -1. */
static long upstream_hits(sluice_client *stats, const char *p)
{
    char hits[1024];
    sluice_response *r = NULL;
    sluice_error err;
    long n = -1;
    int len = (int)strcspn(p, "?");

    if (snprintf(hits, sizeof hits, "/hits%.*s", len, p) >= (int)sizeof hits)
        return -1;
    if (sluice_get(stats, hits, &r, &err) != 0)
        fprintf(stderr, "coalescing: reading %s: %s\n", hits, err.msg);
    else if (sluice_response_status(r) == 200)
        n = strtol(sluice_response_body(r, NULL), NULL, 10);
    sluice_response_free(r);
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Each caller's latency, eight to a line, then the spread. */
static void print_latencies(const struct caller *k, int n)
{
    double *sorted = malloc(sizeof *sorted * (size_t)n);
    int i;

    printf("latency per thread (ms):\n");
    for (i = 0; i < n; i++)
        printf("%s t%02d %6.1f%s", i % 8 ? "" : " ", i, k[i].ms,
               i % 8 == 7 || i == n - 1 ? "\n" : "");
    if (!sorted)
        return;
    for (i = 0; i < n; i++)
        sorted[i] = k[i].ms;
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    printf("latency summary: min %.1f ms, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", sorted[0],
           sorted[n / 2], sorted[(n * 99) / 100], sorted[n - 1]);
    free(sorted);
}

static sluice_client *make_client(sluice_factory *f, const char *name, const char *base,
                                  int coalesce)
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = base;
    co.disable_coalescing = !coalesce;
    c = sluice_factory_client(f, name, &co, &err);
    if (!c)
        fprintf(stderr, "coalescing: client %s for %s: %s\n", name, base, err.msg);
    return c;
}

int main(int argc, char **argv)
{
    static struct caller k[MAX_THREADS];
    int nthreads = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 64;
    int i, ok = 0, followers = 0, rc = 1;
    sluice_client *stats;
    sluice_factory *f;
    sluice_error err;
    long before, after;

    path = argc > 3 ? argv[3] : "/delay/200";
    if (argc < 2 || argc > 4 || nthreads < 1 || nthreads > MAX_THREADS || path[0] != '/') {
        fprintf(stderr, "usage: coalescing BASE_URL [threads 1-%d] [/path]\n", MAX_THREADS);
        return 2;
    }
    if (!(f = sluice_factory_new(NULL, &err))) {
        fprintf(stderr, "coalescing: %s\n", err.msg);
        return 1;
    }
    client = make_client(f, "slow-resource", argv[1], 1);   /* GETs coalesce by default */
    stats = make_client(f, "mockapi-stats", argv[1], 0);
    if (!client || !stats || (before = upstream_hits(stats, path)) < 0)
        goto out;

    printf("%d threads GET %s at the same moment through one client\n", nthreads, path);
    pthread_barrier_init(&start_line, NULL, (unsigned)nthreads);
    for (i = 0; i < nthreads; i++)
        if (pthread_create(&k[i].tid, NULL, call, &k[i]) != 0) {
            fprintf(stderr, "coalescing: could not start thread %d\n", i);
            exit(1);   /* the others wait at the barrier for ever */
        }
    for (i = 0; i < nthreads; i++) {
        pthread_join(k[i].tid, NULL);
        ok += k[i].rc == 0;
        followers += k[i].coalesced;
    }
    pthread_barrier_destroy(&start_line);
    if ((after = upstream_hits(stats, path)) < 0)
        goto out;

    printf("requests made:   %d (%d answered, %d of them by another caller's flight)\n",
           nthreads, ok, followers);
    printf("upstream calls:  %ld (the upstream's hit counter went from %ld to %ld)\n",
           after - before, before, after);
    print_latencies(k, nthreads);
    rc = ok == nthreads ? 0 : 1;
out:
    sluice_factory_free(f);
    return rc;
}
