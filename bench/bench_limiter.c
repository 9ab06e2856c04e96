/* Limiter throughput: decisions per second from 8 threads (or `threads`)
 *   1. plain: each thread its own hiredis connection, one EVALSHA round
 *      trip per decision (the same GCRA script, one decision per call);
 *   2. sluice_limiter_check against the same Redis (batched round trips);
 *   3. the in-process limiter.
 * CPU per decision is printed as client + redis-server microseconds.
 * During 2 and 3 it also checks the exact GCRA bound on every key:
 * admitted <= burst + rate * span.
 *
 *   bench_limiter [redis_url] [seconds per phase, default 1] [keys] [threads]
 *
 * `keys` (default 16) is how many keys the threads spread over: 1 is one
 * hot endpoint, the common case for a fleet calling one API.
 * With a redis+cluster:// URL the keys carry no hash tag, so they spread
 * over the shards; the plain loop then keeps a connection to every
 * primary and sends each decision to the one that owns its key's slot,
 * and Redis CPU is summed over the primaries.
 * Without a URL (or $SLUICE_REDIS_URL) it starts a private redis-server on
 * a free 127.0.0.1 port.  Exit status 1 when a bound is broken or a phase
 * fails; the 3x target is reported, not enforced (it is a benchmark). */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "limiter.h"
#include "redis_cluster.h"
#include "redis_conn.h"
#include "sluice.h"

#define MAX_THREADS 64
#define MAX_KEYS 64
#define ROUNDS 5

static int nkeys = 16;
static int nthreads = 8;

/* A Redis Cluster's primaries (cluster mode), else the one server. */
#define MAX_NODES 16
static sl_slot_map *cmap;          /* NULL: one server */
static char node_url[MAX_NODES][SL_CLUSTER_HOST_MAX + 32];
static size_t nnodes;

static const sluice_limit bench_limit = {20000, 1000, 100};

typedef struct worker {
    const char *url;         /* plain phase: where to connect */
    const char *sha;
    sluice_limiter *l;       /* limiter phases */
    int64_t stop_ns;
    unsigned seed;
    long decisions, errors;
    long allowed[MAX_KEYS];
} worker;

static const char *key_name(int k, char *buf, size_t cap)
{
    snprintf(buf, cap, cmap ? "k%d" : "{bench}:k%d", k);
    return buf;
}

/* --- phase 1: one EVALSHA per decision --------------------------------- */

static void *plain_worker(void *arg)
{
    worker *w = arg;
    redisContext *conns[MAX_NODES] = {NULL}, *c;
    char key[64], prefixed[96], interval[32], burst[16];
    size_t i, n = cmap ? nnodes : 1;

    for (i = 0; i < n; i++)
        if (!(conns[i] = sl_redis_connect_url(cmap ? node_url[i] : w->url, 2000, NULL))) {
            w->errors++;
            goto out;
        }
    snprintf(interval, sizeof interval, "%.17g", sl_gcra_interval_us(&bench_limit));
    snprintf(burst, sizeof burst, "%d", bench_limit.burst);
    while (sl_now_ns() < w->stop_ns) {
        const char *argv[9];
        redisReply *r;

        snprintf(prefixed, sizeof prefixed, "plain:%s",
                 key_name((int)(rand_r(&w->seed) % (unsigned)nkeys), key, sizeof key));
        c = cmap ? conns[cmap->owner[sl_cluster_keyslot(prefixed, strlen(prefixed))]] : conns[0];
        argv[0] = "EVALSHA", argv[1] = w->sha, argv[2] = "1", argv[3] = prefixed;
        argv[4] = "c", argv[5] = interval, argv[6] = burst, argv[7] = "1", argv[8] = "-1";
        r = redisCommandArgv(c, 9, argv, NULL);
        if (!r || r->type != REDIS_REPLY_ARRAY)
            w->errors++;
        else
            w->decisions++;
        if (r)
            freeReplyObject(r);
        if (!r)
            break;
    }
out:
    for (i = 0; i < n; i++)
        if (conns[i])
            redisFree(conns[i]);
    return NULL;
}

/* --- phases 2 and 3: the limiter ---------------------------------------- */

static void *limiter_worker(void *arg)
{
    worker *w = arg;
    char key[64];

    while (sl_now_ns() < w->stop_ns) {
        sluice_limit_result r;
        int k = (int)(rand_r(&w->seed) % (unsigned)nkeys);

        if (sluice_limiter_check(w->l, key_name(k, key, sizeof key), &bench_limit, 1, &r) != 0) {
            w->errors++;
            continue;
        }
        w->decisions++;
        if (r.allowed)
            w->allowed[k]++;
    }
    return NULL;
}

typedef struct phase_result {
    double per_sec;
    long decisions, errors;
    int bound_ok;
    double client_cpu_us, redis_cpu_us;   /* per decision */
} phase_result;


/* CPU seconds this process has used. */
static double own_cpu(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds one Redis server has used (INFO cpu), or 0. */
static double server_cpu(const char *url)
{
    redisContext *c = sl_redis_connect_url(url, 2000, NULL);
    redisReply *r = c ? redisCommand(c, "INFO cpu") : NULL;
    double v = 0;
    const char *p;

    if (r && r->type == REDIS_REPLY_STRING) {
        if ((p = strstr(r->str, "used_cpu_sys:")))
            v += strtod(p + 13, NULL);
        if ((p = strstr(r->str, "used_cpu_user:")))
            v += strtod(p + 14, NULL);
    }
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return v;
}

/* ... summed over the server or the cluster's primaries. */
static double redis_cpu(void)
{
    double v = 0;
    size_t i;

    for (i = 0; i < nnodes; i++)
        v += server_cpu(node_url[i]);
    return v;
}

static phase_result run_phase(void *(*fn)(void *), const char *url, const char *sha,
                              sluice_limiter *l, double seconds)
{
    worker w[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    phase_result res = {0, 0, 0, 1, 0, 0};
    long allowed[MAX_KEYS] = {0};
    double cpu0 = own_cpu(), rcpu0 = redis_cpu();
    int64_t t0 = sl_now_ns(), t1;
    int i, k;

    for (i = 0; i < nthreads; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].url = url;
        w[i].sha = sha;
        w[i].l = l;
        w[i].seed = (unsigned)i * 2654435761u + 1;
        w[i].stop_ns = t0 + (int64_t)(seconds * 1e9);
        pthread_create(&th[i], NULL, fn, &w[i]);
    }
    for (i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        res.decisions += w[i].decisions;
        res.errors += w[i].errors;
        for (k = 0; k < nkeys; k++)
            allowed[k] += w[i].allowed[k];
    }
    t1 = sl_now_ns();
    res.per_sec = (double)res.decisions / ((double)(t1 - t0) / 1e9);
    if (res.decisions) {
        res.client_cpu_us = (own_cpu() - cpu0) * 1e6 / (double)res.decisions;
        res.redis_cpu_us = (l && !sluice_limiter_is_shared(l) ? 0 : redis_cpu() - rcpu0) * 1e6 /
                           (double)res.decisions;
    }
    if (l) {
        double bound = bench_limit.burst +
                       bench_limit.rate * ((double)(t1 - t0) / 1e9) / (bench_limit.period_ms / 1000.0);
        for (k = 0; k < nkeys; k++)
            if (allowed[k] > (long)bound + 1) {
                fprintf(stderr, "  key %d admitted %ld > bound %.1f\n", k, allowed[k], bound);
                res.bound_ok = 0;
            }
        if (!res.bound_ok)
            printf("    exact bound (<= %.0f per key, burst + rate * span): BROKEN\n", bound);
    }
    return res;
}

/* --- a private redis-server when none is given -------------------------- */

static int free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static pid_t start_redis(char *url, size_t cap)
{
    int port = free_port(), i;
    char portbuf[16];
    pid_t pid;

    snprintf(portbuf, sizeof portbuf, "%d", port);
    snprintf(url, cap, "redis://127.0.0.1:%d", port);
    pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        execlp("redis-server", "redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 300; i++) {
        redisContext *c = sl_redis_connect_url(url, 2000, NULL);
        if (c) {
            redisFree(c);
            return pid;
        }
        usleep(10000);
    }
    kill(pid, SIGTERM);
    return -1;
}

/* Cluster mode: the primaries from CLUSTER SLOTS of the first seed into
 * cmap and node_url[]. */
static int cluster_nodes(const char *url)
{
    sl_redis_url *seeds;
    redisContext *c;
    redisReply *r;
    sluice_error err;
    size_t n, i;
    int rc = -1;

    if (sl_redis_cluster_url_parse(url, &seeds, &n, &err)) {
        fprintf(stderr, "bench_limiter: %s\n", err.msg);
        return -1;
    }
    if (!(cmap = calloc(1, sizeof *cmap)) || sl_redis_open(&seeds[0], sl_deadline_in_ms(2000), &c,
                                                          NULL, &err) != 0) {
        sl_redis_cluster_url_free(seeds, n);
        return -1;
    }
    r = redisCommand(c, "CLUSTER SLOTS");
    if (r && sl_cluster_parse_slots(r, seeds[0].host, cmap, &err) == 0 && cmap->nnodes > 0 &&
        cmap->nnodes <= MAX_NODES) {
        nnodes = cmap->nnodes;
        for (i = 0; i < nnodes; i++)
            snprintf(node_url[i], sizeof node_url[i], "redis://%s:%d", cmap->nodes[i].host,
                     cmap->nodes[i].port);
        rc = 0;
    } else {
        fprintf(stderr, "bench_limiter: no usable CLUSTER SLOTS from %s\n", seeds[0].where);
    }
    for (i = 0; i < SL_CLUSTER_SLOTS; i++)
        if (rc == 0 && cmap->owner[i] >= nnodes)
            rc = -1;   /* a slot nobody serves: the cluster is not ready */
    if (r)
        freeReplyObject(r);
    redisFree(c);
    sl_redis_cluster_url_free(seeds, n);
    return rc;
}

static int load_script(const char *url, char *sha)
{
    redisContext *c = sl_redis_connect_url(url, 2000, NULL);
    redisReply *r;
    int ok;

    if (!c)
        return -1;
    r = redisCommand(c, "SCRIPT LOAD %s", sl_redis_script);
    ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok)
        memcpy(sha, r->str, 41);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Plain and batched phases alternate, so that a machine whose load
 * changes (a shared one) weighs on both alike; each ratio compares two
 * neighbouring phases, and the medians are reported. */
static int compare(const char *url, const char *sha, double seconds)
{
    double plain[ROUNDS], shared[ROUNDS], ratio[ROUNDS], cpu_p[ROUNDS], cpu_s[ROUNDS];
    double rcpu_p[ROUNDS], rcpu_s[ROUNDS];
    struct sluice_limiter_stats st;
    sluice_limiter_opts o;
    sluice_limiter *l;
    sluice_error err;
    int i, bad = 0;

    sluice_limiter_opts_init(&o);
    o.prefix = "bench";
    o.fail_mode = SLUICE_FAIL_CLOSED;
    o.redis_timeout_ms = 1000;
    l = sluice_limiter_new(url, &o, &err);
    if (!l) {
        fprintf(stderr, "bench_limiter: %s\n", err.msg);
        return 1;
    }
    for (i = 0; i < ROUNDS; i++) {
        phase_result p = run_phase(plain_worker, url, sha, NULL, seconds);
        phase_result b = run_phase(limiter_worker, NULL, NULL, l, seconds);

        bad |= p.errors || b.errors || !b.bound_ok;
        plain[i] = p.per_sec;
        shared[i] = b.per_sec;
        ratio[i] = b.per_sec / (p.per_sec > 0 ? p.per_sec : 1);
        cpu_p[i] = p.client_cpu_us + p.redis_cpu_us;
        cpu_s[i] = b.client_cpu_us + b.redis_cpu_us;
        rcpu_p[i] = p.redis_cpu_us;
        rcpu_s[i] = b.redis_cpu_us;
        printf("  round %d: plain %8.0f/s (%.1f+%.1f us CPU each), batched %8.0f/s (%.1f+%.1f "
               "us CPU each): %.2fx\n",
               i + 1, p.per_sec, p.client_cpu_us, p.redis_cpu_us, b.per_sec, b.client_cpu_us,
               b.redis_cpu_us, ratio[i]);
    }
    sluice_limiter_stats(l, &st);
    sluice_limiter_free(l);
    printf("  plain EVALSHA per decision, %d connections: %10.0f decisions/s (median)\n",
           nthreads, median(plain, ROUNDS));
    printf("  sluice_limiter_check (Redis, batched):     %10.0f decisions/s (median), "
           "%.1f decisions per round trip\n",
           median(shared, ROUNDS),
           st.round_trips ? (double)st.decisions / (double)st.round_trips : 0.0);
    printf("  CPU (client + redis) per decision: plain %.1f us, batched %.1f us: %.2fx less\n",
           median(cpu_p, ROUNDS), median(cpu_s, ROUNDS),
           median(cpu_p, ROUNDS) / median(cpu_s, ROUNDS));
    printf("  Redis CPU per decision (INFO cpu): plain %.1f us, batched %.1f us\n",
           median(rcpu_p, ROUNDS), median(rcpu_s, ROUNDS));
    {
        double r = median(ratio, ROUNDS);
        printf("  batched / plain decisions/s: %.2fx (target >= 3x): %s\n", r,
               r >= 3 ? "met" : "NOT met");
    }
    return bad;
}

int main(int argc, char **argv)
{
    char url_buf[128], sha[41];
    const char *url = argc > 1 && argv[1][0] ? argv[1] : getenv("SLUICE_REDIS_URL");
    double seconds = argc > 2 ? strtod(argv[2], NULL) : 1.0;
    pid_t redis_pid = 0;
    phase_result local;
    sluice_limiter *l;
    sluice_error err;
    int status = 0;

    signal(SIGPIPE, SIG_IGN);
    if (seconds <= 0)
        seconds = 1.0;
    if (argc > 3)
        nkeys = (int)strtol(argv[3], NULL, 10);
    if (nkeys < 1 || nkeys > MAX_KEYS)
        nkeys = 16;
    if (argc > 4)
        nthreads = (int)strtol(argv[4], NULL, 10);
    if (nthreads < 1 || nthreads > MAX_THREADS)
        nthreads = 8;
    if (!url || !*url) {
        redis_pid = start_redis(url_buf, sizeof url_buf);
        if (redis_pid < 0) {
            fprintf(stderr, "bench_limiter: could not start redis-server\n");
            return 1;
        }
        url = url_buf;
    }
    if (strncmp(url, "redis+cluster://", 16) == 0) {
        if (cluster_nodes(url) != 0) {
            status = 1;
            goto out;
        }
    } else {
        snprintf(node_url[0], sizeof node_url[0], "%s", url);
        nnodes = 1;
    }
    for (size_t i = 0; i < nnodes; i++)
        if (load_script(node_url[i], sha) != 0) {
            fprintf(stderr, "bench_limiter: cannot load the script into %s\n", node_url[i]);
            status = 1;
            goto out;
        }
    printf("limiter: %d threads, %d keys, %.0f per %d ms burst %d, %d rounds of %.1f s%s\n",
           nthreads, nkeys, bench_limit.rate, bench_limit.period_ms, bench_limit.burst, ROUNDS,
           seconds, cmap ? ", Redis Cluster" : "");
    status = compare(url, sha, seconds);

    l = sluice_limiter_new("", NULL, &err);
    if (!l) {
        fprintf(stderr, "bench_limiter: %s\n", err.msg);
        status = 1;
        goto out;
    }
    local = run_phase(limiter_worker, NULL, NULL, l, seconds);
    printf("  sluice_limiter_check (in-process):         %10.0f decisions/s\n", local.per_sec);
    sluice_limiter_free(l);
    if (!local.bound_ok || local.errors)
        status = 1;
out:
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
    }
    free(cmap);
    return status;
}
