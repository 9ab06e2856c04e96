/* Request coalescing through the client: one upstream call for many
 * identical concurrent requests, and never across different ones. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

struct caller {
    pthread_barrier_t *start;   /* when set, callers leave it together */
    sluice_client *c;
    sluice_request req;
    sluice_header hdr[1];
    int rc;
    int status;
    int coalesced;
    char body[256];
    size_t len;
};

static void *call_thread(void *arg)
{
    struct caller *k = arg;
    sluice_response *r = NULL;
    sluice_error err;

    if (k->start)
        pthread_barrier_wait(k->start);
    k->rc = sluice_client_do(k->c, &k->req, &r, &err);
    if (k->rc == 0) {
        const char *b = sluice_response_body(r, &k->len);
        k->status = sluice_response_status(r);
        k->coalesced = sluice_response_coalesced(r);
        memcpy(k->body, b, k->len < sizeof k->body ? k->len : sizeof k->body - 1);
    }
    sluice_response_free(r);
    return NULL;
}

/* Runs n callers at once; setup(i, caller) shapes each request. */
static void run_callers(struct caller *k, int n, sluice_client *c,
                        void (*setup)(int i, struct caller *k), const char *path)
{
    pthread_t t[64];
    int i;

    for (i = 0; i < n; i++) {
        memset(&k[i], 0, sizeof k[i]);
        k[i].c = c;
        k[i].req.path = path;
        if (setup)
            setup(i, &k[i]);
        pthread_create(&t[i], NULL, call_thread, &k[i]);
    }
    for (i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static pthread_barrier_t start64;

static void together_setup(int i, struct caller *k)
{
    (void)i;
    k->start = &start64;   /* thread creation is slow under sanitizers */
}

static void test_coalescing_one_upstream_call_for_64(void)
{
    static struct caller k[64];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "co64", tu_http_base(), NULL);
    long before, after;
    int i, followers = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    before = tu_hits(tu_http_addr(), "/delay/200");
    pthread_barrier_init(&start64, NULL, 64);
    run_callers(k, 64, c, together_setup, "/delay/200");
    pthread_barrier_destroy(&start64);
    after = tu_hits(tu_http_addr(), "/delay/200");
    CU_ASSERT_EQUAL(after - before, 1);
    for (i = 0; i < 64; i++) {
        CU_ASSERT_EQUAL(k[i].rc, 0);
        CU_ASSERT_EQUAL(k[i].status, 200);
        CU_ASSERT_EQUAL(k[i].len, k[0].len);
        CU_ASSERT(memcmp(k[i].body, k[0].body, k[0].len) == 0);
        followers += k[i].coalesced;
    }
    CU_ASSERT_EQUAL(followers, 63);
    sluice_factory_free(f);
}

static pthread_barrier_t start16;

static void auth_setup(int i, struct caller *k)
{
    k->start = &start16;   /* all inside one 200 ms flight, even under TSan */
    k->hdr[0].name = "Authorization";
    k->hdr[0].value = i % 2 ? "Bearer alice" : "Bearer bob";
    k->req.headers = k->hdr;
    k->req.nheaders = 1;
}

static void test_coalescing_never_crosses_credentials(void)
{
    static struct caller k[16];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "coauth", tu_http_base(), NULL);
    char path[64], hits[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/auth%d?delay=200", (int)getpid());
    snprintf(hits, sizeof hits, "/count/auth%d", (int)getpid());
    pthread_barrier_init(&start16, NULL, 16);
    run_callers(k, 16, c, auth_setup, path);
    pthread_barrier_destroy(&start16);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 2);
    sluice_factory_free(f);
}

static void test_coalescing_query_order_does_not_matter(void)
{
    static struct caller k[16];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "coq", tu_http_base(), NULL);
    pthread_t t[16];
    char p1[96], p2[96], hits[64];
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(p1, sizeof p1, "/count/q%d?delay=200&a=1&b=2", (int)getpid());
    snprintf(p2, sizeof p2, "/count/q%d?b=2&a=1&delay=200", (int)getpid());
    snprintf(hits, sizeof hits, "/count/q%d", (int)getpid());
    for (i = 0; i < 16; i++) {
        memset(&k[i], 0, sizeof k[i]);
        k[i].c = c;
        k[i].req.path = i % 2 ? p1 : p2;
        pthread_create(&t[i], NULL, call_thread, &k[i]);
    }
    for (i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(k[i].status, 200);
    }
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 1);
    sluice_factory_free(f);
}

static void post_setup(int i, struct caller *k)
{
    (void)i;
    k->req.method = "POST";
    k->req.body = "same";
    k->req.body_len = 4;
}

static void post_opt_in_setup(int i, struct caller *k)
{
    post_setup(i, k);
    k->req.flags = SLUICE_REQ_COALESCE;
}

static void test_coalescing_post_only_when_asked(void)
{
    static struct caller k[8];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "copost", tu_http_base(), NULL);
    char path[64], hits[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/post%d?delay=200", (int)getpid());
    snprintf(hits, sizeof hits, "/count/post%d", (int)getpid());
    run_callers(k, 8, c, post_setup, path);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 8);
    run_callers(k, 8, c, post_opt_in_setup, path);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 9);
    sluice_factory_free(f);
}

/* Two bodies of one length, each sent by half the callers. */
static void two_bodies_setup(int i, struct caller *k)
{
    post_opt_in_setup(i, k);
    k->req.body = i % 2 ? "body-a\0x" : "body-a\0y";
    k->req.body_len = 8;
}

static void test_coalescing_bodies_never_mix(void)
{
    static struct caller k[8];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "cobody", tu_http_base(), NULL);
    char path[64], hits[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/body%d?delay=200", (int)getpid());
    snprintf(hits, sizeof hits, "/count/body%d", (int)getpid());
    run_callers(k, 8, c, two_bodies_setup, path);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 2);
    sluice_factory_free(f);
}

static void tune_slow_refused(sluice_client_opts *co)
{
    co->retry.max_retries = 2;
    co->retry.backoff_factor_ms = 150;
    co->retry.jitter = SLUICE_JITTER_NONE;
}

static void test_coalescing_leader_error_reaches_all(void)
{
    static struct caller k[16];
    sluice_factory *f = NULL;
    sluice_client *c, *c503;
    tu_server s;
    char base[96], path[64], hits[64];
    int i;

    /* A port nobody listens on: the leader retries for ~450 ms, then
     * everyone gets its connect error. */
    if (tu_mockapi_start(&s, NULL))
        return;
    snprintf(base, sizeof base, "%s", s.url);
    tu_server_stop(&s);
    c = tu_client(&f, "corefused", base, tune_slow_refused);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    run_callers(k, 16, c, NULL, "/json");
    for (i = 0; i < 16; i++)
        CU_ASSERT_EQUAL(k[i].rc, SLUICE_ECONNECT);
    /* A 503 the retries could not get past is a response for everyone. */
    c503 = tu_client(&f, "co503", tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c503);
    snprintf(path, sizeof path, "/count/e%d?delay=200&status=503", (int)getpid());
    snprintf(hits, sizeof hits, "/count/e%d", (int)getpid());
    run_callers(k, 16, c503, NULL, path);
    for (i = 0; i < 16; i++)
        CU_ASSERT_EQUAL(k[i].status, 503);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 1);
    sluice_factory_free(f);
}

static char dl_hits[64];

static void short_deadline_setup(int i, struct caller *k)
{
    int64_t end = tu_now_ms() + 3000;

    /* Caller 1 arrives once the leader's request reached the upstream (so
     * it cannot be the leader itself) and waits only 50 ms. */
    if (i == 1) {
        while (tu_hits(tu_http_addr(), dl_hits) < 1 && tu_now_ms() < end)
            usleep(2000);
        k->req.timeout_ms = 50;
    }
}

static void test_coalescing_waiter_deadline_alone(void)
{
    static struct caller k[8];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "codl", tu_http_base(), NULL);
    char path[64];
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/dl%d?delay=300", (int)getpid());
    snprintf(dl_hits, sizeof dl_hits, "/count/dl%d", (int)getpid());
    run_callers(k, 8, c, short_deadline_setup, path);
    CU_ASSERT_EQUAL(k[1].rc, SLUICE_ETIMEDOUT);
    for (i = 0; i < 8; i++) {
        if (i == 1)
            continue;
        if (k[i].status != 200)
            fprintf(stderr, "\n  caller %d: rc %s status %d\n", i, sluice_err_name(k[i].rc), k[i].status);
        CU_ASSERT_EQUAL(k[i].status, 200);
    }
    sluice_factory_free(f);
}

static void tune_window(sluice_client_opts *co)
{
    co->coalesce_window_ms = 400;
}

static void test_coalescing_window_and_no_store(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "cowin", tu_http_base(), tune_window);
    sluice_response *r = NULL;
    sluice_error err;
    char path[64], hits[64], ns[96], nshits[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    snprintf(path, sizeof path, "/count/win%d", (int)getpid());
    snprintf(hits, sizeof hits, "/count/win%d", (int)getpid());
    CU_ASSERT_EQUAL(tu_get_status(c, path, &err), 200);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, path, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_coalesced(r), 1);
    CU_ASSERT_STRING_EQUAL(sluice_response_body(r, NULL), "1");
    sluice_response_free(r);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 1);
    usleep(500 * 1000);
    CU_ASSERT_EQUAL(tu_get_status(c, path, &err), 200);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 2);
    /* Cache-Control: no-store keeps a response out of the window. */
    snprintf(ns, sizeof ns, "/count/ns%d?cache_control=no-store", (int)getpid());
    snprintf(nshits, sizeof nshits, "/count/ns%d", (int)getpid());
    CU_ASSERT_EQUAL(tu_get_status(c, ns, &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(c, ns, &err), 200);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), nshits), 2);
    sluice_factory_free(f);
}

static void tune_off(sluice_client_opts *co)
{
    co->disable_coalescing = 1;
}

static void no_coalesce_setup(int i, struct caller *k)
{
    (void)i;
    k->req.flags = SLUICE_REQ_NO_COALESCE;
}

static void test_coalescing_can_be_turned_off(void)
{
    static struct caller k[8];
    sluice_factory *f = NULL;
    sluice_client *off = tu_client(&f, "cooff", tu_http_base(), tune_off);
    sluice_client *on = tu_client(&f, "coon", tu_http_base(), NULL);
    char path[64], hits[64];

    CU_ASSERT_PTR_NOT_NULL_FATAL(off);
    CU_ASSERT_PTR_NOT_NULL_FATAL(on);
    snprintf(path, sizeof path, "/count/off%d?delay=200", (int)getpid());
    snprintf(hits, sizeof hits, "/count/off%d", (int)getpid());
    run_callers(k, 8, off, NULL, path);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 8);
    run_callers(k, 8, on, no_coalesce_setup, path);
    CU_ASSERT_EQUAL(tu_hits(tu_http_addr(), hits), 16);
    sluice_factory_free(f);
}

struct mixer {
    sluice_client *c;
    unsigned seed;
    int errors;
};

static void *mix_thread(void *arg)
{
    struct mixer *m = arg;
    sluice_error err;
    char path[64];
    int i;

    for (i = 0; i < 40; i++) {
        snprintf(path, sizeof path, "/delay/%u", rand_r(&m->seed) % 8);
        if (tu_get_status(m->c, path, &err) != 200)
            m->errors++;
    }
    return NULL;
}

static void test_coalescing_random_keys_many_threads(void)
{
    struct mixer m[32];
    pthread_t t[32];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "comix", tu_http_base(), NULL);
    struct sluice_factory_stats st;
    int i, errors = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 32; i++) {
        m[i] = (struct mixer){c, (unsigned)i + 1, 0};
        pthread_create(&t[i], NULL, mix_thread, &m[i]);
    }
    for (i = 0; i < 32; i++) {
        pthread_join(t[i], NULL);
        errors += m[i].errors;
    }
    CU_ASSERT_EQUAL(errors, 0);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.requests, 32 * 40);
    CU_ASSERT_EQUAL(st.coalesce_flights + st.coalesce_followers, 32 * 40);
    sluice_factory_free(f);
}

/* A coalesced POST answered 303: the leader turns into a GET without a
 * body while later callers with the same POST compare their key with its
 * own.  The key is frozen at call start, so they keep meeting it (under
 * TSan: with no race on the leader's method, body and length). */
struct redirector {
    sluice_client *c;
    const char *path;
    int ok, shared;
};

static void *redirect_thread(void *arg)
{
    struct redirector *r = arg;
    sluice_request req = {0};
    int i;

    req.method = "POST";
    req.path = r->path;
    req.body = "form=1";
    req.body_len = 6;
    req.flags = SLUICE_REQ_COALESCE;
    for (i = 0; i < 25; i++) {
        sluice_response *resp = NULL;
        sluice_error err;
        if (sluice_client_do(r->c, &req, &resp, &err) == 0 && sluice_response_status(resp) == 200)
            r->ok++;
        if (resp && sluice_response_coalesced(resp))
            r->shared++;
        sluice_response_free(resp);
    }
    return NULL;
}

static void follow_on(sluice_client_opts *co)
{
    co->follow_redirects = 1;
}

static void test_coalescing_redirected_post_keeps_its_key(void)
{
    struct redirector r[8];
    pthread_t t[8];
    sluice_factory *f = NULL;
    sluice_client *c = tu_client(&f, "co303", tu_http_base(), follow_on);
    struct sluice_factory_stats st;
    int i, ok = 0, shared = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 8; i++) {
        r[i] = (struct redirector){c, "/redirect-to?url=/delay/20&status=303", 0, 0};
        pthread_create(&t[i], NULL, redirect_thread, &r[i]);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += r[i].ok;
        shared += r[i].shared;
    }
    CU_ASSERT_EQUAL(ok, 8 * 25);
    CU_ASSERT(shared > 0);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.coalesce_flights + st.coalesce_followers, 8 * 25);
    sluice_factory_free(f);
}

/* Every GET distinct with a 100 ms window: the micro-cache holds at most
 * coalesce_cache_max_bytes, and the allocations alive after 10,000 calls
 * are those alive after 2,000, within what that bound holds (each entry:
 * its flight, key copy and response, a few allocations of at least 64
 * bytes). */
#define SOAK_THREADS 4
#define SOAK_CALLS 2500
#define SOAK_CACHE_BYTES ((size_t)64 << 10)

struct soaker {
    sluice_client *c;
    int id, errors;
    pthread_barrier_t *half;
};

static void *soak_thread(void *arg)
{
    struct soaker *s = arg;
    sluice_error err;
    char path[64];
    int i;

    for (i = 0; i < SOAK_CALLS; i++) {
        if (i == SOAK_CALLS / 5 || i == SOAK_CALLS - 1)
            pthread_barrier_wait(s->half);
        snprintf(path, sizeof path, "/json?t=%d&i=%d", s->id, i);
        if (tu_get_status(s->c, path, &err) != 200)
            s->errors++;
    }
    return NULL;
}

static void window_100(sluice_client_opts *co)
{
    co->coalesce_window_ms = 100;
}

static void test_coalescing_window_memory_stays_flat(void)
{
    static pthread_barrier_t half;
    struct soaker s[SOAK_THREADS];
    pthread_t t[SOAK_THREADS];
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_client *c;
    struct sluice_factory_stats st;
    long early, late, bound = 8 * (long)(SOAK_CACHE_BYTES / 64) + 256;
    int i, errors = 0;

    tu_alloc_install(0, 0);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.coalesce_cache_max_bytes = SOAK_CACHE_BYTES;
    f = sluice_factory_new(&fo, NULL);
    c = tu_client(&f, "cosoak", tu_http_base(), window_100);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    pthread_barrier_init(&half, NULL, SOAK_THREADS + 1);
    for (i = 0; i < SOAK_THREADS; i++) {
        s[i] = (struct soaker){c, i, 0, &half};
        pthread_create(&t[i], NULL, soak_thread, &s[i]);
    }
    pthread_barrier_wait(&half);
    early = tu_alloc_outstanding();
    pthread_barrier_wait(&half);
    late = tu_alloc_outstanding();
    sluice_factory_stats(f, &st);
    for (i = 0; i < SOAK_THREADS; i++) {
        pthread_join(t[i], NULL);
        errors += s[i].errors;
    }
    CU_ASSERT_EQUAL(errors, 0);
    CU_ASSERT(st.coalesce_cache_bytes <= SOAK_CACHE_BYTES);
    CU_ASSERT(st.coalesce_cache_entries > 0);
    CU_ASSERT(late - early <= bound);
    if (late - early > bound)
        fprintf(stderr, "\n  %ld allocations more alive after %d calls than after %d\n",
                late - early, SOAK_THREADS * SOAK_CALLS, SOAK_THREADS * SOAK_CALLS / 5);
    sluice_factory_free(f);
    tu_alloc_uninstall();
    pthread_barrier_destroy(&half);
}

static CU_TestInfo tests[] = {
    {"test_coalescing_one_upstream_call_for_64", test_coalescing_one_upstream_call_for_64},
    {"test_coalescing_never_crosses_credentials", test_coalescing_never_crosses_credentials},
    {"test_coalescing_query_order_does_not_matter", test_coalescing_query_order_does_not_matter},
    {"test_coalescing_post_only_when_asked", test_coalescing_post_only_when_asked},
    {"test_coalescing_bodies_never_mix", test_coalescing_bodies_never_mix},
    {"test_coalescing_leader_error_reaches_all", test_coalescing_leader_error_reaches_all},
    {"test_coalescing_waiter_deadline_alone", test_coalescing_waiter_deadline_alone},
    {"test_coalescing_window_and_no_store", test_coalescing_window_and_no_store},
    {"test_coalescing_can_be_turned_off", test_coalescing_can_be_turned_off},
    {"test_coalescing_random_keys_many_threads", test_coalescing_random_keys_many_threads},
    {"test_coalescing_redirected_post_keeps_its_key",
     test_coalescing_redirected_post_keeps_its_key},
    {"test_coalescing_window_memory_stays_flat", test_coalescing_window_memory_stays_flat},
    CU_TEST_INFO_NULL,
};

void suite_coalescing(void);
void suite_coalescing(void)
{
    tu_add_suite("coalescing", tests);
}
