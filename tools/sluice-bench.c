/* sluice-bench: load through ONE factory and client (one shared pool) from
 * N threads, and two focused measurements the performance report needs.
 *
 *   sluice-bench [options] URL                    N threads x M requests (or -d s)
 *   sluice-bench --burst 64 --path /delay/50 URL  64 identical GETs at once
 *   sluice-bench --idle 1000 URL                  memory per idle pooled connection
 *
 * --http2 auto|off|prior picks the factory's HTTP/2 mode; the summary then
 * names the protocol the responses came by and the connections opened of
 * each kind (h2_open, HTTP/2; created, HTTP/1.1).
 *
 * Coalescing is off unless --coalesce: identical concurrent GETs would
 * otherwise be folded into one upstream call, which is not what a load
 * test measures.  The output format is the one bench/bench.h prints for
 * every peer too. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/bench.h"
#include "sluice.h"

static bench_opts opts = {.tool = "sluice"};
static bench_run run;
static int coalesce;          /* --coalesce */
static int burst;             /* --burst N */
static int idle;              /* --idle N */
static const char *hits_path; /* --hits-path P */
static int stream;            /* --stream: the body to an on_body callback */
static int http2 = SLUICE_HTTP2_AUTO; /* --http2 auto|off|prior */
static int versions_seen;     /* atomic: 1 = an HTTP/1.x response, 2 = an HTTP/2 one */
static uint64_t body_bytes;   /* atomic: body bytes the measured requests got */
static sluice_client *client;
static sluice_request base_req;

static void usage(void)
{
    fprintf(stderr, "usage: sluice-bench [options] URL   (URL: http[s]://host:port or host:port)\n");
    bench_usage_common(stderr);
    fprintf(stderr,
            "  --coalesce         fold identical concurrent GETs (off by default)\n"
            "  --no-coalesce      the default, stated\n"
            "  --burst N          N threads send one identical GET at the same moment\n"
            "                     (coalescing on); prints the slowest one's wall time\n"
            "  --hits-path P      with --burst: GET P before and after and print the\n"
            "                     difference of the numbers it returns (upstream calls)\n"
            "  --idle N           open N idle pooled connections; print RSS per connection\n"
            "  --stream           hand each body to an on_body callback, never held whole\n"
            "  --gzip             the default (Accept-Encoding: gzip, deflate, decoded), stated\n"
            "  --http2 MODE       auto (the default: h2 or http/1.1 by ALPN on https),\n"
            "                     off (HTTP/1.1 only) or prior (h2c on http://)\n");
}

static int extra_opt(int argc, char **argv, int i)
{
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--coalesce") == 0)
        return coalesce = 1, 1;
    if (strcmp(a, "--no-coalesce") == 0)
        return coalesce = 0, 1;
    if (strcmp(a, "--burst") == 0)
        return burst = (int)bench_num(v, a, 1, BENCH_MAX_THREADS), 2;
    if (strcmp(a, "--idle") == 0)
        return idle = (int)bench_num(v, a, 1, 100000), 2;
    if (strcmp(a, "--hits-path") == 0 && v)
        return hits_path = v, 2;
    if (strcmp(a, "--stream") == 0)
        return stream = 1, 1;
    if (strcmp(a, "--gzip") == 0)
        return 1;
    if (strcmp(a, "--http2") == 0 && v) {
        if (strcmp(v, "auto") == 0)
            http2 = SLUICE_HTTP2_AUTO;
        else if (strcmp(v, "off") == 0)
            http2 = SLUICE_HTTP2_OFF;
        else if (strcmp(v, "prior") == 0)
            http2 = SLUICE_HTTP2_PRIOR_KNOWLEDGE;
        else
            bench_die("--http2 takes auto, off or prior");
        return 2;
    }
    return 0;
}

static void fail(const char *what, const sluice_error *e)
{
    fprintf(stderr, "sluice-bench: %s: %s: %s\n", what, sluice_err_name(e->code), e->msg);
    exit(1);
}

/* One factory whose pool holds `conns` connections, one client. */
static sluice_factory *make_client(int conns, int keep_ms)
{
    static const sluice_header close_hdr[] = {{"Connection", "close"}};
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_factory *f;
    sluice_error e;
    char buf[512];

    sluice_factory_opts_init(&fo, SLUICE_PRESET_HIGH_THROUGHPUT);
    fo.max_connections = conns;
    fo.max_connections_per_host = conns;
    fo.max_idle_per_host = conns;
    if (keep_ms > 0)
        fo.keepalive_expiry_ms = keep_ms;
    fo.ca_file = opts.ca;
    fo.proxy_url = opts.proxy ? opts.proxy : "";
    fo.http2 = http2;
    if (stream)
        fo.max_response_bytes = (size_t)1 << 40;
    if (!(f = sluice_factory_new(&fo, &e)))
        fail("factory", &e);
    sluice_client_opts_init(&co);
    co.base_url = bench_base_url(&opts, buf, sizeof buf);
    co.disable_coalescing = !coalesce;
    if (!(client = sluice_factory_client(f, "bench", &co, &e)))
        fail("client", &e);
    if (opts.close) {
        base_req.headers = close_hdr;
        base_req.nheaders = 1;
    }
    return f;
}

/* --stream: the bytes are counted and dropped, as a download to a file or
 * a socket would hand them on. */
static int count_body(const void *chunk, size_t len, void *ud)
{
    (void)chunk;
    *(size_t *)ud += len;
    return 0;
}

/* One GET; counts it on `t` (NULL = not counted).  Returns the status or a
 * negative code. */
static __attribute__((noinline)) int one_get(bench_thread *t, const char *path)
{
    sluice_request req = base_req;
    sluice_response *resp;
    sluice_error e;
    size_t got = 0;
    int rc, status;
    char name[32];

    req.path = path;
    if (stream) {
        req.on_body = count_body;
        req.body_ud = &got;
    }
    rc = sluice_client_do(client, &req, &resp, &e);
    status = rc ? rc : sluice_response_status(resp);
    if (rc == 0 && !stream)
        sluice_response_body(resp, &got);
    if (rc == 0) {
        int seen = sluice_response_http_version(resp) >= 20 ? 2 : 1;
        if (!(__atomic_load_n(&versions_seen, __ATOMIC_RELAXED) & seen))
            __atomic_or_fetch(&versions_seen, seen, __ATOMIC_RELAXED);
    }
    if (t)
        __atomic_add_fetch(&body_bytes, got, __ATOMIC_RELAXED);
    sluice_response_free(resp);
    if (!t)
        return status;
    if (rc) {
        bench_error(t, sluice_err_name(rc));
    } else if (status != 200) {
        snprintf(name, sizeof name, "HTTP_%d", status);
        bench_error(t, name);
    } else {
        t->ok++;
    }
    return status;
}

static void *load_worker(void *arg)
{
    bench_thread *t = arg;
    char path[1024];
    long i;

    bench_thread_path(&opts, t->index, path, sizeof path);
    for (i = 0; i < opts.warmup; i++)
        one_get(NULL, path);
    bench_wait_start(&run);
    for (i = 0; bench_more(&run, i); i++) {
        int64_t t0 = bench_now_ns();
        one_get(t, path);
        bench_record(t, bench_now_ns() - t0);
        __atomic_store_n(&t->done, t->done + 1, __ATOMIC_RELAXED);
    }
    t->end_ns = bench_now_ns();
    return NULL;
}

static int run_load(void)
{
    sluice_factory *f = make_client(opts.connections, 0);
    struct sluice_factory_stats st;
    static const char *const version_names[] = {"none", "1.1", "2", "1.1+2"};
    static const char *const http2_names[] = {"", ",http2-off", ",http2-prior"};
    char mode[80], extra[512];
    struct rusage ru;

    bench_alloc_threads(&run, &opts);
    bench_run_threads(&run, load_worker);
    sluice_factory_stats(f, &st);
    snprintf(mode, sizeof mode, "%s%s%s%s%s", opts.close ? "close" : "keep-alive",
             http2_names[http2], coalesce ? ",coalesce" : "", opts.distinct ? ",distinct" : "",
             stream ? ",stream" : "");
    snprintf(extra, sizeof extra,
             "\"tls_full\":%" PRIu64 ",\"tls_resumed\":%" PRIu64 ",\"waited\":%" PRIu64
             ",\"wait_p50_us\":%" PRIu64 ",\"wait_p99_us\":%" PRIu64 ",\"wait_max_us\":%" PRIu64,
             st.pool.handshakes_full, st.pool.handshakes_resumed, st.pool.waited,
             st.pool.wait_p50_us, st.pool.wait_p99_us, st.pool.wait_max_us);
    getrusage(RUSAGE_SELF, &ru);
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
             ",\"body_bytes\":%" PRIu64 ",\"maxrss_kib\":%ld", body_bytes, ru.ru_maxrss);
    /* HTTP/2 connections stay open until keepalive_expiry_ms of idleness,
     * so at the end of a run h2_open is the number the run opened. */
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
             ",\"http\":\"%s\",\"h2_open\":%d,\"h2_streams_peak\":%d,\"h2_goaways\":%" PRIu64
             ",\"h2_refused\":%" PRIu64 ",\"conns\":%" PRIu64,
             version_names[versions_seen & 3], st.pool.h2_open, st.pool.h2_streams_peak,
             st.pool.h2_goaways, st.pool.h2_refused, st.pool.created + (uint64_t)st.pool.h2_open);
    bench_report(&run, mode, (long long)st.pool.created, (long long)st.pool.reused, extra);
    if (!opts.json && st.pool.handshakes_full + st.pool.handshakes_resumed > 0)
        printf("  tls       full handshakes %" PRIu64 ", resumed %" PRIu64 "\n",
               st.pool.handshakes_full, st.pool.handshakes_resumed);
    if (!opts.json)
        printf("  http      %s; h2 connections open %d (streams at most %d), HTTP/1.1 created %" PRIu64
               "\n", version_names[versions_seen & 3], st.pool.h2_open, st.pool.h2_streams_peak,
               st.pool.created);
    bench_free_threads(&run);
    sluice_factory_free(f);
    return 0;
}

/* --- --burst: identical GETs at one moment, coalescing on ------------- */

static long fetch_number(const char *path)
{
    sluice_request req = {0};
    sluice_response *resp;
    sluice_error e;
    long n = -1;

    req.path = path;
    req.flags = SLUICE_REQ_NO_COALESCE;
    if (sluice_client_do(client, &req, &resp, &e) != 0)
        fail(path, &e);
    if (sluice_response_status(resp) == 200)
        n = strtol(sluice_response_body(resp, NULL), NULL, 10);
    sluice_response_free(resp);
    return n;
}

static void *burst_worker(void *arg)
{
    bench_thread *t = arg;

    bench_wait_start(&run);
    one_get(t, opts.path);
    t->end_ns = bench_now_ns();
    bench_record(t, t->end_ns - run.start_ns);
    __atomic_store_n(&t->done, 1, __ATOMIC_RELAXED);
    return NULL;
}

static int run_burst(void)
{
    sluice_factory *f;
    long before = -1, after = -1;
    struct sluice_factory_stats st;
    bench_summary s;
    uint32_t *all;

    coalesce = 1;
    f = make_client(opts.connections, 0);
    opts.threads = burst;
    opts.requests = 1;
    opts.seconds = 0;
    if (hits_path)
        before = fetch_number(hits_path);
    bench_alloc_threads(&run, &opts);
    bench_run_threads(&run, burst_worker);
    if (hits_path)
        after = fetch_number(hits_path);
    sluice_factory_stats(f, &st);
    bench_summarise(&run, &s, &all);
    free(all);
    if (opts.json)
        printf("{\"tool\":\"sluice\",\"mode\":\"burst\",\"callers\":%d,\"ok\":%" PRIu64
               ",\"errors\":%" PRIu64 ",\"slowest_us\":%" PRIu32 ",\"fastest_us\":%" PRIu32
               ",\"upstream_calls\":%ld,\"flights\":%" PRIu64 ",\"followers\":%" PRIu64 "}\n",
               burst, s.ok, s.errors, s.max, s.min, hits_path ? after - before : -1L,
               st.coalesce_flights, st.coalesce_followers);
    else
        printf("sluice (burst): %d identical GET %s%s at once\n"
               "  ok %" PRIu64 ", errors %" PRIu64 "; all done after %.1f ms (first %.1f ms)\n"
               "  upstream calls %ld; flights %" PRIu64 ", followers %" PRIu64 "\n",
               burst, opts.url, opts.path, s.ok, s.errors, s.max / 1000.0, s.min / 1000.0,
               hits_path ? after - before : -1L, st.coalesce_flights, st.coalesce_followers);
    bench_free_threads(&run);
    sluice_factory_free(f);
    return s.errors ? 1 : 0;
}

/* --- --idle: memory per idle pooled connection ------------------------ */

static int run_idle(void)
{
    static const sluice_header close_hdr[] = {{"Connection", "close"}};
    sluice_factory *f = make_client(idle + 8, 600000);
    sluice_request req = {0};
    struct sluice_factory_stats st;
    sluice_response *resp;
    sluice_error e;
    long rss0, rss1;
    int n;

    /* One request on a connection that is then closed loads everything a
     * connection needs once (TLS context, CA store, DNS cache entry), so
     * the difference below is the connections alone. */
    req.path = opts.path;
    req.headers = close_hdr;
    req.nheaders = 1;
    if (sluice_client_do(client, &req, &resp, &e) != 0)
        fail("first request", &e);
    sluice_response_free(resp);
    rss0 = bench_rss_kib();
    if ((n = sluice_client_warmup(client, idle, &e)) < 0)
        fail("warmup", &e);
    rss1 = bench_rss_kib();
    sluice_factory_stats(f, &st);
    if (opts.json)
        printf("{\"tool\":\"sluice\",\"mode\":\"idle\",\"asked\":%d,\"opened\":%d,\"idle\":%d,"
               "\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,\"bytes_per_conn\":%.0f}\n",
               idle, n, st.pool.idle, rss0, rss1, n > 0 ? (rss1 - rss0) * 1024.0 / n : 0);
    else
        printf("sluice (idle): %d idle connections to %s (asked %d, pool idle %d)\n"
               "  RSS %ld KiB -> %ld KiB: %.1f KiB per connection\n",
               n, opts.url, idle, st.pool.idle, rss0, rss1, n > 0 ? (double)(rss1 - rss0) / n : 0);
    sluice_factory_free(f);
    return n == idle ? 0 : 1;
}

int main(int argc, char **argv)
{
    bench_parse(argc, argv, &opts, extra_opt, usage);
    if (burst)
        return run_burst();
    if (idle)
        return run_idle();
    return run_load();
}
