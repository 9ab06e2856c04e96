/* bench_curl: the libcurl peer of sluice-bench, same options and output.
 *
 * Default: one easy handle per thread, reused for every request (libcurl's
 * best pattern: each handle keeps its own connection cache).
 * --share: every handle uses one share object holding the connection cache
 * (CURL_LOCK_DATA_CONNECT), plus DNS and TLS sessions, with pthread mutexes
 * as lock callbacks: libcurl's only way to give threads one pool.  -c caps
 * the shared cache with CURLOPT_MAXCONNECTS; libcurl has no way to make a
 * thread wait for a connection of that cache, so under load it opens more
 * and closes what does not fit (the created/reused counts show it).
 * --h2-multi N: libcurl's best pattern for HTTP/2: ONE thread drives a
 * multi handle with CURLPIPE_MULTIPLEX, N transfers in flight on one
 * connection (CURLMOPT_MAX_HOST_CONNECTIONS 1, CURLOPT_PIPEWAIT), each
 * easy handle added again as soon as its transfer completes.  HTTP/2 over
 * TLS only (CURL_HTTP_VERSION_2TLS): libcurl 7.88 does not reuse an h2c
 * prior-knowledge connection.  -t and -c are 1; -n counts transfers. */
#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static bench_opts opts = {.tool = "libcurl"};
static bench_run run;
static int share_mode;
static int stream;            /* --stream: the write callback drops the bytes */
static int gzip_;             /* --gzip: CURLOPT_ACCEPT_ENCODING "" (decoded) */
static int h2_multi;          /* --h2-multi N: transfers in flight on one multi handle */
static uint64_t body_bytes;   /* atomic: body bytes the measured requests got */
static CURLSH *share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
static char base[512];

static void usage(void)
{
    fprintf(stderr, "usage: bench_curl [options] URL   (URL: http[s]://host:port or host:port)\n");
    bench_usage_common(stderr);
    fprintf(stderr, "  --share            one shared connection cache (CURLSH) for all threads\n"
                    "  --stream           the write callback counts and drops the body\n"
                    "  --gzip             CURLOPT_ACCEPT_ENCODING \"\": ask for codings, decode\n"
                    "  --h2-multi N       one thread, one multi handle, N HTTP/2 transfers in\n"
                    "                     flight multiplexed on one TLS connection\n");
}

static int extra_opt(int argc, char **argv, int i)
{
    if (strcmp(argv[i], "--h2-multi") == 0)
        return h2_multi = (int)bench_num(i + 1 < argc ? argv[i + 1] : NULL, argv[i], 1, 1000), 2;
    if (strcmp(argv[i], "--share") == 0)
        return share_mode = 1, 1;
    if (strcmp(argv[i], "--stream") == 0)
        return stream = 1, 1;
    if (strcmp(argv[i], "--gzip") == 0)
        return gzip_ = 1, 1;
    return 0;
}

static void lock_cb(CURL *h, curl_lock_data d, curl_lock_access a, void *ud)
{
    (void)h, (void)a, (void)ud;
    pthread_mutex_lock(&share_locks[d]);
}

static void unlock_cb(CURL *h, curl_lock_data d, void *ud)
{
    (void)h, (void)ud;
    pthread_mutex_unlock(&share_locks[d]);
}

static void make_share(void)
{
    int i;

    for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&share_locks[i], NULL);
    if (!(share = curl_share_init()))
        bench_die("curl_share_init failed");
    curl_share_setopt(share, CURLSHOPT_LOCKFUNC, lock_cb);
    curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, unlock_cb);
    if (curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK)
        bench_die("this libcurl cannot share its connection cache");
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
}

/* The body goes into a buffer, as sluice hands the caller its body. */
typedef struct body {
    char *data;
    size_t len, cap;
} body;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    body *b = ud;
    size_t len = size * n;

    if (stream) {
        b->len += len;
        return len;
    }
    if (b->len + len > b->cap) {
        size_t cap = (b->len + len) * 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return len;
}

typedef struct worker_state {
    CURL *h;
    body b;
    struct curl_slist *hdrs;
    long connects;           /* new connections this thread's requests made */
    int64_t t0;              /* --h2-multi: when this handle's transfer was added */
} worker_state;

static void setup_handle(worker_state *w, const char *url)
{
    if (!(w->h = curl_easy_init()))
        bench_die("curl_easy_init failed");
    curl_easy_setopt(w->h, CURLOPT_URL, url);
    curl_easy_setopt(w->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w->h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(w->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(w->h, CURLOPT_WRITEDATA, &w->b);
    curl_easy_setopt(w->h, CURLOPT_TIMEOUT_MS, 60000L);
    if (gzip_)
        curl_easy_setopt(w->h, CURLOPT_ACCEPT_ENCODING, "");
    if (opts.ca)
        curl_easy_setopt(w->h, CURLOPT_CAINFO, opts.ca);
    curl_easy_setopt(w->h, CURLOPT_PROXY, opts.proxy ? opts.proxy : "");
    if (opts.close) {
        w->hdrs = curl_slist_append(NULL, "Connection: close");
        curl_easy_setopt(w->h, CURLOPT_HTTPHEADER, w->hdrs);
    }
    if (share) {
        curl_easy_setopt(w->h, CURLOPT_SHARE, share);
        curl_easy_setopt(w->h, CURLOPT_MAXCONNECTS, (long)opts.connections);
    }
}

/* One request; counted on `t` unless NULL. */
static __attribute__((noinline)) void one_get(worker_state *w, bench_thread *t)
{
    long status = 0, connects = 0;
    CURLcode rc;
    char name[48];

    w->b.len = 0;
    rc = curl_easy_perform(w->h);
    curl_easy_getinfo(w->h, CURLINFO_NUM_CONNECTS, &connects);
    w->connects += connects;
    if (!t)
        return;
    if (rc != CURLE_OK) {
        snprintf(name, sizeof name, "CURLE_%d", (int)rc);
        bench_error(t, name);
        return;
    }
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        snprintf(name, sizeof name, "HTTP_%ld", status);
        bench_error(t, name);
        return;
    }
    __atomic_add_fetch(&body_bytes, w->b.len, __ATOMIC_RELAXED);
    t->ok++;
}

static void *worker(void *arg)
{
    bench_thread *t = arg;
    worker_state *w = t->user;
    char path[1024], url[1600];
    long i;

    bench_thread_path(&opts, t->index, path, sizeof path);
    snprintf(url, sizeof url, "%s%s", base, path);
    setup_handle(w, url);
    for (i = 0; i < opts.warmup; i++)
        one_get(w, NULL);
    bench_wait_start(&run);
    for (i = 0; bench_more(&run, i); i++) {
        int64_t t0 = bench_now_ns();
        one_get(w, t);
        bench_record(t, bench_now_ns() - t0);
        __atomic_store_n(&t->done, t->done + 1, __ATOMIC_RELAXED);
    }
    t->end_ns = bench_now_ns();
    return NULL;
}

/* --- --h2-multi: one thread, N multiplexed transfers -------------------- */

static CURLM *multi;

/* Adds handle `w` again (a fresh transfer on the same easy handle). */
static void multi_start(worker_state *w)
{
    w->b.len = 0;
    w->t0 = bench_now_ns();
    if (curl_multi_add_handle(multi, w->h) != CURLM_OK)
        bench_die("curl_multi_add_handle failed");
}

/* Counts one finished transfer on `t` (NULL = warm-up, not counted). */
static void multi_done(worker_state *w, CURLcode rc, bench_thread *t)
{
    long status = 0, connects = 0;
    char name[48];

    curl_easy_getinfo(w->h, CURLINFO_NUM_CONNECTS, &connects);
    w->connects += connects;
    if (!t)
        return;
    bench_record(t, bench_now_ns() - w->t0);
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) {
        snprintf(name, sizeof name, "CURLE_%d", (int)rc);
        bench_error(t, name);
    } else if (status != 200) {
        snprintf(name, sizeof name, "HTTP_%ld", status);
        bench_error(t, name);
    } else {
        __atomic_add_fetch(&body_bytes, w->b.len, __ATOMIC_RELAXED);
        t->ok++;
    }
    __atomic_store_n(&t->done, t->done + 1, __ATOMIC_RELAXED);
}

/* Runs transfers until `more` says stop (measured on `t`) or, for the
 * warm-up (t NULL), until `count` have finished; then lets every transfer
 * still in flight finish, counted the same way. */
static void multi_loop(worker_state *ws, bench_thread *t, long count)
{
    long started = 0, finished = 0;
    int i, running = 1, in_flight = 0;

    for (i = 0; i < h2_multi && (t ? bench_more(&run, started) : started < count); i++)
        multi_start(&ws[i]), started++, in_flight++;
    while (in_flight > 0) {
        CURLMsg *m;
        int left;

        if (curl_multi_perform(multi, &running) != CURLM_OK)
            bench_die("curl_multi_perform failed");
        while ((m = curl_multi_info_read(multi, &left))) {
            worker_state *w;

            if (m->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&w);
            curl_multi_remove_handle(multi, w->h);
            multi_done(w, m->data.result, t);
            finished++, in_flight--;
            if (t ? bench_more(&run, started) : started < count)
                multi_start(w), started++, in_flight++;
        }
        if (in_flight > 0 && curl_multi_poll(multi, NULL, 0, 100, NULL) != CURLM_OK)
            bench_die("curl_multi_poll failed");
    }
}

static void *multi_worker(void *arg)
{
    bench_thread *t = arg;
    worker_state *ws = t->user;
    char path[1024], url[1600];
    int i;

    bench_thread_path(&opts, t->index, path, sizeof path);
    snprintf(url, sizeof url, "%s%s", base, path);
    if (!(multi = curl_multi_init()))
        bench_die("curl_multi_init failed");
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
    curl_multi_setopt(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)h2_multi);
    for (i = 0; i < h2_multi; i++) {
        setup_handle(&ws[i], url);
        curl_easy_setopt(ws[i].h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(ws[i].h, CURLOPT_PIPEWAIT, 1L);
        curl_easy_setopt(ws[i].h, CURLOPT_PRIVATE, (char *)&ws[i]);
    }
    /* The connection (one TLS handshake) is made before the clock starts,
     * as sluice-bench's --warmup makes its connections. */
    multi_loop(ws, NULL, opts.warmup > 0 ? opts.warmup * h2_multi : h2_multi);
    bench_wait_start(&run);
    multi_loop(ws, t, 0);
    t->end_ns = bench_now_ns();
    return NULL;
}

static int run_h2_multi(void)
{
    worker_state *ws;
    long long created = 0, total;
    char mode[64], extra[96];
    struct rusage ru;
    int i;

    opts.threads = opts.connections = 1;
    bench_alloc_threads(&run, &opts);
    if (!(ws = calloc((size_t)h2_multi, sizeof *ws)))
        bench_die("out of memory");
    run.th[0].user = ws;
    bench_run_threads(&run, multi_worker);
    for (i = 0; i < h2_multi; i++)
        created += ws[i].connects;
    total = (long long)run.th[0].done;
    snprintf(mode, sizeof mode, "h2-multi,%d-in-flight", h2_multi);
    getrusage(RUSAGE_SELF, &ru);
    snprintf(extra, sizeof extra, "\"body_bytes\":%" PRIu64 ",\"maxrss_kib\":%ld,\"conns\":%lld",
             body_bytes, ru.ru_maxrss, created);
    bench_report(&run, mode, created, total - created, extra);
    for (i = 0; i < h2_multi; i++) {
        curl_easy_cleanup(ws[i].h);
        curl_slist_free_all(ws[i].hdrs);
        free(ws[i].b.data);
    }
    curl_multi_cleanup(multi);
    free(ws);
    bench_free_threads(&run);
    curl_global_cleanup();
    return 0;
}

int main(int argc, char **argv)
{
    worker_state *ws;
    long long created = 0, total = 0;
    char mode[64], tmp[512], extra[96];
    struct rusage ru;
    int i;

    bench_parse(argc, argv, &opts, extra_opt, usage);
    snprintf(base, sizeof base, "%s", bench_base_url(&opts, tmp, sizeof tmp));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        bench_die("curl_global_init failed");
    if (h2_multi)
        return run_h2_multi();
    if (share_mode)
        make_share();
    bench_alloc_threads(&run, &opts);
    if (!(ws = calloc((size_t)opts.threads, sizeof *ws)))
        bench_die("out of memory");
    for (i = 0; i < opts.threads; i++)
        run.th[i].user = &ws[i];
    bench_run_threads(&run, worker);
    for (i = 0; i < opts.threads; i++) {
        created += ws[i].connects;
        total += (long long)run.th[i].done + opts.warmup;
    }
    snprintf(mode, sizeof mode, "%s%s%s%s", opts.close ? "close" : "keep-alive",
             share_mode ? ",share" : ",handle-per-thread", opts.distinct ? ",distinct" : "",
             stream ? ",stream" : "");
    getrusage(RUSAGE_SELF, &ru);
    snprintf(extra, sizeof extra, "\"body_bytes\":%" PRIu64 ",\"maxrss_kib\":%ld", body_bytes,
             ru.ru_maxrss);
    bench_report(&run, mode, created, total - created, extra);
    for (i = 0; i < opts.threads; i++) {
        curl_easy_cleanup(ws[i].h);
        curl_slist_free_all(ws[i].hdrs);
        free(ws[i].b.data);
    }
    free(ws);
    if (share)
        curl_share_cleanup(share);
    bench_free_threads(&run);
    curl_global_cleanup();
    return 0;
}
