/* What tools/sluice-bench.c and the peer programs in bench/ share: the
 * options they agree on, per-thread latency records, the summary they all
 * print (text, or one JSON line) and the live progress line.
 *
 * Header-only (static inline functions) because each program is built from one
 * source file.  These are measuring tools, not library code: they use
 * malloc directly and exit on out-of-memory. */
#ifndef SLUICE_BENCH_H
#define SLUICE_BENCH_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_THREADS 1024
#define BENCH_MAX_ERRKINDS 32

/* The options every load program understands. */
typedef struct bench_opts {
    const char *tool;         /* "sluice", "libcurl", ... (printed) */
    const char *url;          /* scheme://host:port, the positional argument */
    const char *path;         /* --path (default "/") */
    int threads;              /* -t */
    long requests;            /* -n, per thread (ignored with -d) */
    double seconds;           /* -d */
    int connections;          /* -c (default: threads) */
    int close;                /* --close: Connection: close on every request */
    int https;                /* --https */
    const char *ca;           /* --ca FILE */
    const char *latency_out;  /* --latency-out FILE */
    int json;                 /* --json */
    int distinct;             /* --distinct: a per-thread query, no two alike */
    long warmup;              /* --warmup N requests per thread, not measured */
    const char *proxy;        /* --proxy URL: an HTTP proxy (NULL: none) */
} bench_opts;

/* An error kind and its count ("SLUICE_EIO", "HTTP_503", ...). */
typedef struct bench_errkind {
    char name[48];
    uint64_t n;
} bench_errkind;

/* One worker's record.  `done` is read by the progress line while the
 * worker runs, so it is an atomic. */
typedef struct bench_thread {
    pthread_t tid;
    int index;
    uint32_t *lat_us;         /* one latency per measured request */
    size_t nlat, caplat;
    uint64_t done;            /* atomic: requests finished, measured ones */
    uint64_t ok;
    bench_errkind errs[BENCH_MAX_ERRKINDS];
    int nerrs;
    int64_t end_ns;           /* when this worker finished */
    void *user;               /* the program's per-thread state */
} bench_thread;

/* The run: what start/stop and the summary need. */
typedef struct bench_run {
    bench_opts *o;
    bench_thread *th;
    int nthreads;
    pthread_barrier_t start;
    int stop;                 /* atomic: set when -d seconds are over */
    int64_t start_ns;
    double cpu_s;             /* this process's user + system CPU during the run */
} bench_run;

/* User plus system CPU seconds this process has used so far. */
static inline double bench_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void bench_die(const char *what)
{
    fprintf(stderr, "bench: %s\n", what);
    exit(2);
}

static inline void bench_usage_common(FILE *f)
{
    fprintf(f,
            "  -t N               threads (default 8)\n"
            "  -n N               requests per thread (default 10000)\n"
            "  -d SECONDS         run for this long instead of -n\n"
            "  -c N               connections in the pool (default: threads)\n"
            "  --path P           request path (default /)\n"
            "  --close            send Connection: close (a new connection per request)\n"
            "  --https            use https:// for a URL given as host:port\n"
            "  --ca FILE          trust this CA bundle (PEM)\n"
            "  --distinct         give each thread its own query (?t=N) so no two\n"
            "                     concurrent requests are identical\n"
            "  --warmup N         N unmeasured requests per thread first\n"
            "  --latency-out FILE one latency in microseconds per line\n"
            "  --proxy URL        go through this HTTP proxy (https: a CONNECT tunnel)\n"
            "  --json             one machine-readable summary line\n");
}

static inline long bench_num(const char *s, const char *opt, long lo, long hi)
{
    char *end;
    long v;

    errno = 0;
    v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "bench: %s needs a number in [%ld, %ld]\n", opt, lo, hi);
        exit(2);
    }
    return v;
}

/* Parses the shared options.  `extra` sees an option the common parser does
 * not know: it returns how many arguments it used (1 or 2), or 0 when the
 * option is unknown to it too. */
static inline void bench_parse(int argc, char **argv, bench_opts *o,
                        int (*extra)(int argc, char **argv, int i), void (*usage)(void))
{
    int i;

    o->threads = 8;
    o->requests = 10000;
    o->path = "/";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used;

        if (strcmp(a, "-t") == 0)
            o->threads = (int)bench_num(v, a, 1, BENCH_MAX_THREADS), i++;
        else if (strcmp(a, "-n") == 0)
            o->requests = bench_num(v, a, 1, 1000000000L), i++;
        else if (strcmp(a, "-d") == 0) {
            char *end;
            o->seconds = v ? strtod(v, &end) : 0;
            if (!v || *end || o->seconds <= 0 || o->seconds > 86400)
                bench_die("-d needs a number of seconds");
            i++;
        } else if (strcmp(a, "-c") == 0)
            o->connections = (int)bench_num(v, a, 1, 100000), i++;
        else if (strcmp(a, "--path") == 0 && v)
            o->path = v, i++;
        else if (strcmp(a, "--close") == 0)
            o->close = 1;
        else if (strcmp(a, "--https") == 0)
            o->https = 1;
        else if (strcmp(a, "--ca") == 0 && v)
            o->ca = v, i++;
        else if (strcmp(a, "--latency-out") == 0 && v)
            o->latency_out = v, i++;
        else if (strcmp(a, "--json") == 0)
            o->json = 1;
        else if (strcmp(a, "--distinct") == 0)
            o->distinct = 1;
        else if (strcmp(a, "--proxy") == 0 && v)
            o->proxy = v, i++;
        else if (strcmp(a, "--warmup") == 0)
            o->warmup = bench_num(v, a, 0, 1000000000L), i++;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            usage(), exit(0);
        else if (extra && (used = extra(argc, argv, i)) > 0)
            i += used - 1;
        else if (a[0] != '-' && !o->url)
            o->url = a;
        else {
            fprintf(stderr, "bench: unknown or incomplete option '%s'\n", a);
            usage();
            exit(2);
        }
    }
    if (!o->url)
        usage(), exit(2);
    if (o->connections == 0)
        o->connections = o->threads;
}

/* The base URL with a scheme: "host:port" gets http:// or https://. */
static inline const char *bench_base_url(const bench_opts *o, char *buf, size_t cap)
{
    if (strstr(o->url, "://")) {
        if (o->https && strncmp(o->url, "https://", 8) != 0)
            bench_die("--https with a URL that is not https://");
        return o->url;
    }
    snprintf(buf, cap, "%s://%s", o->https ? "https" : "http", o->url);
    return buf;
}

/* The path one thread requests: with --distinct, "?t=N" (or "&t=N"). */
static inline void bench_thread_path(const bench_opts *o, int index, char *buf, size_t cap)
{
    if (o->distinct)
        snprintf(buf, cap, "%s%ct=%d", o->path, strchr(o->path, '?') ? '&' : '?', index);
    else
        snprintf(buf, cap, "%s", o->path);
}

static inline void bench_record(bench_thread *t, int64_t ns)
{
    if (t->nlat == t->caplat) {
        size_t cap = t->caplat ? t->caplat * 2 : 65536;
        uint32_t *p = realloc(t->lat_us, cap * sizeof *p);
        if (!p)
            bench_die("out of memory recording latencies");
        t->lat_us = p;
        t->caplat = cap;
    }
    t->lat_us[t->nlat++] = ns < 0 ? 0 : ns / 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(ns / 1000);
}

static inline void bench_error(bench_thread *t, const char *name)
{
    int i;

    for (i = 0; i < t->nerrs; i++)
        if (strcmp(t->errs[i].name, name) == 0) {
            t->errs[i].n++;
            return;
        }
    if (t->nerrs == BENCH_MAX_ERRKINDS)
        name = "other", i = BENCH_MAX_ERRKINDS - 1;
    else
        i = t->nerrs++;
    snprintf(t->errs[i].name, sizeof t->errs[i].name, "%s", name);
    t->errs[i].n++;
}

/* Whether a worker should go on after `n` measured requests. */
static inline int bench_more(const bench_run *r, long n)
{
    if (r->o->seconds > 0)
        return !__atomic_load_n(&r->stop, __ATOMIC_RELAXED);
    return n < r->o->requests;
}

static inline uint64_t bench_total_done(const bench_run *r)
{
    uint64_t sum = 0;
    int i;

    for (i = 0; i < r->nthreads; i++)
        sum += __atomic_load_n(&r->th[i].done, __ATOMIC_RELAXED);
    return sum;
}

/* Starts one thread per worker; each must call bench_wait_start() before
 * its measured loop.  Then shows a progress line on a terminal, ends a
 * timed run, and joins. */
static inline void bench_run_threads(bench_run *r, void *(*worker)(void *))
{
    int tty = isatty(STDOUT_FILENO), i;
    int64_t next = 0, stop_at;
    uint64_t last = 0;

    if (pthread_barrier_init(&r->start, NULL, (unsigned)r->nthreads + 1))
        bench_die("pthread_barrier_init failed");
    for (i = 0; i < r->nthreads; i++) {
        r->th[i].index = i;
        if (pthread_create(&r->th[i].tid, NULL, worker, &r->th[i]))
            bench_die("pthread_create failed");
    }
    pthread_barrier_wait(&r->start);
    r->start_ns = bench_now_ns();
    r->cpu_s = bench_cpu_s();
    stop_at = r->o->seconds > 0 ? r->start_ns + (int64_t)(r->o->seconds * 1e9) : INT64_MAX;
    next = r->start_ns + 1000000000;
    for (;;) {
        int64_t now = bench_now_ns();
        uint64_t done = bench_total_done(r);
        struct timespec nap = {0, 50 * 1000000};

        if (now >= stop_at)
            __atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
        if (r->o->seconds <= 0 && done >= (uint64_t)r->o->requests * (uint64_t)r->nthreads)
            break;
        if (r->o->seconds > 0 && now >= stop_at)
            break;
        if (tty && now >= next) {
            printf("\r  %5.1f s  %10" PRIu64 " requests  %9.0f req/s   ", (now - r->start_ns) / 1e9,
                   done, (double)(done - last));
            fflush(stdout);
            last = done;
            next += 1000000000;
        }
        nanosleep(&nap, NULL);
    }
    for (i = 0; i < r->nthreads; i++)
        pthread_join(r->th[i].tid, NULL);
    r->cpu_s = bench_cpu_s() - r->cpu_s;
    if (tty)
        printf("\r%60s\r", "");
    pthread_barrier_destroy(&r->start);
}

static inline void bench_wait_start(bench_run *r)
{
    pthread_barrier_wait(&r->start);
}

static inline int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

/* The latency at quantile q of a sorted array (nearest rank). */
static inline uint32_t bench_pct(const uint32_t *v, size_t n, double q)
{
    size_t rank;

    if (n == 0)
        return 0;
    rank = (size_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    return v[(rank > n ? n : rank) - 1];
}

/* The whole run's numbers. */
typedef struct bench_summary {
    uint64_t requests, ok, errors;
    double seconds, rps;
    double cpu_us;            /* client CPU (user + system) per request */
    uint32_t min, p50, p90, p99, max;
    bench_errkind errs[BENCH_MAX_ERRKINDS];
    int nerrs;
} bench_summary;

static inline void merge_errors(bench_summary *s, const bench_thread *t)
{
    int i, j;

    for (i = 0; i < t->nerrs; i++) {
        for (j = 0; j < s->nerrs && strcmp(s->errs[j].name, t->errs[i].name) != 0; j++)
            ;
        if (j == s->nerrs) {
            if (s->nerrs == BENCH_MAX_ERRKINDS)
                continue;
            s->errs[s->nerrs++] = t->errs[i];
        } else {
            s->errs[j].n += t->errs[i].n;
        }
    }
}

/* Merges the workers' records (sorted latencies in *all, caller frees). */
static inline void bench_summarise(const bench_run *r, bench_summary *s, uint32_t **all)
{
    int64_t end = r->start_ns;
    size_t n = 0, k = 0;
    int i;

    memset(s, 0, sizeof *s);
    for (i = 0; i < r->nthreads; i++) {
        n += r->th[i].nlat;
        if (r->th[i].end_ns > end)
            end = r->th[i].end_ns;
    }
    if (!(*all = malloc((n ? n : 1) * sizeof **all)))
        bench_die("out of memory");
    for (i = 0; i < r->nthreads; i++) {
        const bench_thread *t = &r->th[i];
        memcpy(*all + k, t->lat_us, t->nlat * sizeof **all);
        k += t->nlat;
        s->requests += t->done;
        s->ok += t->ok;
        merge_errors(s, t);
    }
    qsort(*all, n, sizeof **all, cmp_u32);
    s->errors = s->requests - s->ok;
    s->seconds = (end - r->start_ns) / 1e9;
    s->rps = s->seconds > 0 ? (double)s->requests / s->seconds : 0;
    s->cpu_us = s->requests ? r->cpu_s * 1e6 / (double)s->requests : 0;
    s->min = n ? (*all)[0] : 0;
    s->p50 = bench_pct(*all, n, 0.50);
    s->p90 = bench_pct(*all, n, 0.90);
    s->p99 = bench_pct(*all, n, 0.99);
    s->max = n ? (*all)[n - 1] : 0;
}

static inline void bench_write_latencies(const char *file, const uint32_t *v, size_t n)
{
    FILE *f = fopen(file, "w");
    size_t i;

    if (!f) {
        fprintf(stderr, "bench: cannot write %s: %s\n", file, strerror(errno));
        exit(2);
    }
    for (i = 0; i < n; i++)
        fprintf(f, "%" PRIu32 "\n", v[i]);
    if (fclose(f) != 0)
        bench_die("writing the latency file failed");
}

/* Prints the summary; `created`/`reused` are connections (-1 = unknown),
 * `extra` more JSON members ("\"k\":v,...") or NULL.  Text for people, or
 * with --json one line for scripts. */
static inline void bench_report(const bench_run *r, const char *mode, long long created,
                                long long reused, const char *extra)
{
    const bench_opts *o = r->o;
    bench_summary s;
    uint32_t *all;
    int i;

    bench_summarise(r, &s, &all);
    if (o->latency_out)
        bench_write_latencies(o->latency_out, all, (size_t)(s.ok + s.errors));
    free(all);
    if (o->json) {
        printf("{\"tool\":\"%s\",\"mode\":\"%s\",\"threads\":%d,\"connections\":%d,"
               "\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"seconds\":%.3f,\"rps\":%.1f,\"cpu_us\":%.2f,\"min_us\":%" PRIu32 ",\"p50_us\":%" PRIu32
               ",\"p90_us\":%" PRIu32 ",\"p99_us\":%" PRIu32 ",\"max_us\":%" PRIu32
               ",\"created\":%lld,\"reused\":%lld,%s%s\"errors_by\":{",
               o->tool, mode, o->threads, o->connections, s.requests, s.ok, s.errors, s.seconds,
               s.rps, s.cpu_us, s.min, s.p50, s.p90, s.p99, s.max, created, reused,
               extra ? extra : "", extra ? "," : "");
        for (i = 0; i < s.nerrs; i++)
            printf("%s\"%s\":%" PRIu64, i ? "," : "", s.errs[i].name, s.errs[i].n);
        printf("}}\n");
        return;
    }
    printf("%s (%s): %d threads, %d connections, GET %s%s\n", o->tool, mode, o->threads,
           o->connections, o->url, o->path);
    printf("  requests  %" PRIu64 " in %.2f s: %.0f req/s, %.1f us of client CPU each\n",
           s.requests, s.seconds, s.rps, s.cpu_us);
    printf("  latency   min %" PRIu32 "  p50 %" PRIu32 "  p90 %" PRIu32 "  p99 %" PRIu32
           "  max %" PRIu32 " us\n",
           s.min, s.p50, s.p90, s.p99, s.max);
    printf("  errors    %" PRIu64, s.errors);
    for (i = 0; i < s.nerrs; i++)
        printf("%s%s %" PRIu64, i ? ", " : " (", s.errs[i].name, s.errs[i].n);
    printf("%s\n", s.nerrs ? ")" : "");
    if (created >= 0)
        printf("  conns     created %lld, reused %lld\n", created, reused);
}

static inline void bench_free_threads(bench_run *r)
{
    int i;

    for (i = 0; i < r->nthreads; i++)
        free(r->th[i].lat_us);
    free(r->th);
}

static inline void bench_alloc_threads(bench_run *r, bench_opts *o)
{
    r->o = o;
    r->nthreads = o->threads;
    if (!(r->th = calloc((size_t)o->threads, sizeof *r->th)))
        bench_die("out of memory");
}

/* VmRSS of this process in KiB, from /proc/self/status. */
static inline long bench_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

#endif
