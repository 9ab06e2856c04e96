/* bench_adaptive: load through one sluice client with the adaptive
 * concurrency limit on or off, for the sizing rows of bench/run.sh (n:
 * overload against the mock API's /capacity; o: its cost against a healthy
 * nginx).
 *
 *   bench_adaptive [options] [--adaptive] [--timeout MS] URL
 *
 * Options as sluice-bench's (bench/bench.h).  Only 2xx answers count as
 * ok, and only their latencies are recorded, so p99 is that of successful
 * calls; goodput is ok / seconds.  The JSON line adds the client's final
 * concurrency limit and how many calls it held back. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "sluice.h"

static bench_opts opts = {.tool = "sluice"};
static bench_run run;
static int adaptive;           /* --adaptive */
static int timeout_ms;         /* --timeout MS: each call's deadline (0 = the client's) */
static sluice_client *client;

static void usage(void)
{
    fprintf(stderr, "usage: bench_adaptive [options] URL\n");
    bench_usage_common(stderr);
    fprintf(stderr,
            "  --adaptive         adaptive_concurrency on (off by default)\n"
            "  --timeout MS       each call's deadline (default: the client's, 60 s)\n");
}

static int extra_opt(int argc, char **argv, int i)
{
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--adaptive") == 0)
        return adaptive = 1, 1;
    if (strcmp(a, "--timeout") == 0)
        return timeout_ms = (int)bench_num(v, a, 1, 3600000), 2;
    return 0;
}

static sluice_factory *make_client(void)
{
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_factory *f;
    sluice_error e;
    char buf[512];

    sluice_factory_opts_init(&fo, SLUICE_PRESET_HIGH_THROUGHPUT);
    fo.max_connections = opts.connections;
    fo.max_connections_per_host = opts.connections;
    fo.max_idle_per_host = opts.connections;
    fo.pool_timeout_ms = 60000;
    if (!(f = sluice_factory_new(&fo, &e))) {
        fprintf(stderr, "bench_adaptive: factory: %s\n", e.msg);
        exit(1);
    }
    sluice_client_opts_init(&co);
    co.base_url = bench_base_url(&opts, buf, sizeof buf);
    co.disable_coalescing = 1;
    co.retry.max_retries = 0;
    co.breaker.disabled = 1;
    co.adaptive_concurrency = adaptive;
    if (!(client = sluice_factory_client(f, "bench", &co, &e))) {
        fprintf(stderr, "bench_adaptive: client: %s\n", e.msg);
        exit(1);
    }
    return f;
}

/* One GET; counts it on `t` (NULL = not counted) and records the latency
 * of a 2xx answer. */
static __attribute__((noinline)) void one_get(bench_thread *t, const char *path)
{
    sluice_request req = {0};
    sluice_response *resp;
    sluice_error e;
    int64_t t0 = bench_now_ns();
    int rc, status;
    char name[32];

    req.path = path;
    req.timeout_ms = timeout_ms;
    rc = sluice_client_do(client, &req, &resp, &e);
    status = rc ? rc : sluice_response_status(resp);
    sluice_response_free(resp);
    if (!t)
        return;
    if (rc) {
        bench_error(t, sluice_err_name(rc));
    } else if (status / 100 != 2) {
        snprintf(name, sizeof name, "HTTP_%d", status);
        bench_error(t, name);
    } else {
        t->ok++;
        bench_record(t, bench_now_ns() - t0);
    }
}

static void *worker(void *arg)
{
    bench_thread *t = arg;
    char path[1024];
    long i;

    bench_thread_path(&opts, t->index, path, sizeof path);
    for (i = 0; i < opts.warmup; i++)
        one_get(NULL, path);
    bench_wait_start(&run);
    for (i = 0; bench_more(&run, i); i++) {
        one_get(t, path);
        __atomic_store_n(&t->done, t->done + 1, __ATOMIC_RELAXED);
    }
    t->end_ns = bench_now_ns();
    return NULL;
}

int main(int argc, char **argv)
{
    struct sluice_factory_stats st;
    struct sluice_client_stats cs;
    sluice_factory *f;
    char extra[160];

    bench_parse(argc, argv, &opts, extra_opt, usage);
    f = make_client();
    bench_alloc_threads(&run, &opts);
    bench_run_threads(&run, worker);
    sluice_factory_stats(f, &st);
    sluice_client_stats(client, &cs);
    snprintf(extra, sizeof extra, "\"adaptive\":%d,\"limit\":%d,\"limited\":%" PRIu64, adaptive,
             cs.concurrency_limit, cs.limited);
    bench_report(&run, adaptive ? "adaptive" : "static", (long long)st.pool.created,
                 (long long)st.pool.reused, extra);
    bench_free_threads(&run);
    sluice_factory_free(f);
    return 0;
}
