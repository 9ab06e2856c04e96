/* Name resolution against a DNS server of the tests' own (testutil.c):
 * answers, record TTLs and their cap, a server that never answers and the
 * caller's deadline, negative caching of SERVFAIL and NXDOMAIN, one query
 * for concurrent callers, /etc/hosts, the cache's bound, dns_servers
 * validation, and a client that reaches the mock API by a name only that
 * server knows.  No query goes to the system's resolver. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dns.h"
#include "testutil.h"

/* A resolver pointed at d, with dns_ttl_ms = ttl_ms. */
static sl_dns *dns_for(tu_dns *d, int ttl_ms)
{
    sluice_error err;
    sl_dns *r = sl_dns_new(ttl_ms, tu_dns_servers(d), &err);

    if (!r)
        fprintf(stderr, "\n  sl_dns_new: %s\n", err.msg);
    return r;
}

/* Resolves host:80 within timeout_ms: the code, and the first IPv4
 * address (network order) in *v4 when there is one. */
static int resolve(sl_dns *r, const char *host, int timeout_ms, uint32_t *v4, sluice_error *err)
{
    sl_addrs *a = NULL;
    int rc = sl_dns_resolve(r, host, 80, sl_deadline_in_ms(timeout_ms), &a, err);
    size_t i;

    if (rc == 0 && v4) {
        *v4 = 0;
        for (i = 0; i < a->n; i++)
            if (a->a[i].sa.ss_family == AF_INET) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->a[i].sa;
                if (ntohs(sin->sin_port) == 80)
                    *v4 = sin->sin_addr.s_addr;
                break;
            }
    }
    sl_addrs_release(a);
    return rc;
}

static uint32_t ip(const char *s)
{
    struct in_addr a;

    inet_pton(AF_INET, s, &a);
    return a.s_addr;
}

static void test_dns_resolves_a_name(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_ANSWER);
    sluice_error err;
    uint32_t v4 = 0;
    sl_dns *r;

    TU_REQUIRE(d);
    tu_dns_add(d, "api.test", "127.0.0.2", 300);
    r = dns_for(d, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(resolve(r, "api.test", 5000, &v4, &err), 0);
    CU_ASSERT_EQUAL(v4, ip("127.0.0.2"));
    CU_ASSERT_EQUAL(resolve(r, "API.test", 5000, &v4, &err), 0);   /* a name, any case */
    CU_ASSERT_EQUAL(resolve(r, "api.test", 5000, &v4, &err), 0);   /* cached */
    CU_ASSERT_EQUAL(tu_dns_queries(d, "api.test"), 2);
    sl_dns_free(r);
    tu_dns_stop(d);
}

/* Waits past a TTL: the time is the contract here. */
static void test_dns_short_ttl_expires(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_ANSWER);
    sluice_error err;
    sl_dns *r;

    TU_REQUIRE(d);
    tu_dns_add(d, "short.test", "127.0.0.3", 1);
    r = dns_for(d, 60000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(resolve(r, "short.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(resolve(r, "short.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(tu_dns_queries(d, "short.test"), 1);
    usleep(1200 * 1000);
    CU_ASSERT_EQUAL(resolve(r, "short.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(tu_dns_queries(d, "short.test"), 2);
    sl_dns_free(r);
    tu_dns_stop(d);
}

static void test_dns_long_ttl_capped_by_dns_ttl_ms(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_ANSWER);
    sluice_error err;
    sl_dns *r;

    TU_REQUIRE(d);
    tu_dns_add(d, "long.test", "127.0.0.4", 86400);
    r = dns_for(d, 300);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(resolve(r, "long.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(resolve(r, "long.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(tu_dns_queries(d, "long.test"), 1);
    usleep(500 * 1000);
    CU_ASSERT_EQUAL(resolve(r, "long.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(tu_dns_queries(d, "long.test"), 2);
    sl_dns_free(r);
    tu_dns_stop(d);
}

static void test_dns_zero_ttl_not_kept(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_ANSWER);
    sluice_error err;
    sl_dns *r;

    TU_REQUIRE(d);
    tu_dns_add(d, "zero.test", "127.0.0.5", 0);
    r = dns_for(d, 60000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(resolve(r, "zero.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(resolve(r, "zero.test", 5000, NULL, &err), 0);
    CU_ASSERT_EQUAL(tu_dns_queries(d, "zero.test"), 2);
    sl_dns_free(r);
    tu_dns_stop(d);
}

/* c-ares would retry for 5 s per try, 4 tries; the call's deadline ends
 * it.  The bound is generous: the deadline is the contract. */
static void test_dns_silent_server_ends_at_the_deadline(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_SILENT);
    sluice_error err;
    int64_t t0;
    sl_dns *r;
    int rc;

    TU_REQUIRE(d);
    r = dns_for(d, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    t0 = tu_now_ms();
    rc = resolve(r, "silent.test", 300, NULL, &err);
    CU_ASSERT_EQUAL(rc, SLUICE_ETIMEDOUT);
    CU_ASSERT_EQUAL(err.code, SLUICE_ETIMEDOUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "silent.test"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "deadline"));
    CU_ASSERT(tu_now_ms() - t0 >= 250);
    CU_ASSERT(tu_now_ms() - t0 < 4000);
    CU_ASSERT(tu_dns_queries(d, "silent.test") >= 1);   /* it did ask */
    /* A deadline that passed is not the name's fault: not cached. */
    tu_dns_add(d, "silent.test", "127.0.0.6", 60);
    tu_dns_set_mode(d, TU_DNS_ANSWER);
    CU_ASSERT_EQUAL(resolve(r, "silent.test", 5000, NULL, &err), 0);
    sl_dns_free(r);
    tu_dns_stop(d);
}

static void negative_cached(tu_dns_mode mode, const char *name, const char *why)
{
    tu_dns *d = tu_dns_start(mode);
    sluice_error err;
    sl_dns *r;
    long n;

    TU_REQUIRE(d);
    tu_dns_add(d, name, "127.0.0.7", 300);   /* known, yet the mode answers for it */
    r = dns_for(d, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(resolve(r, name, 5000, NULL, &err), SLUICE_ERESOLVE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, name));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, why));
    n = tu_dns_queries(d, name);
    CU_ASSERT(n >= 1);
    tu_dns_set_mode(d, TU_DNS_ANSWER);
    memset(&err, 0, sizeof err);
    CU_ASSERT_EQUAL(resolve(r, name, 5000, NULL, &err), SLUICE_ERESOLVE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, why));
    CU_ASSERT_EQUAL(tu_dns_queries(d, name), n);
    sl_dns_free(r);
    tu_dns_stop(d);
}

static void test_dns_servfail_cached_negatively(void)
{
    negative_cached(TU_DNS_SERVFAIL, "servfail.test", "SERVFAIL");
}

static void test_dns_nxdomain_cached_negatively(void)
{
    negative_cached(TU_DNS_NXDOMAIN, "nx.test", "NXDOMAIN");
}

#define THREADS 8

struct racer {
    sl_dns *r;
    pthread_barrier_t *go;
    atomic_int *ok;
};

static void *race(void *arg)
{
    struct racer *t = arg;
    sluice_error err;
    uint32_t v4 = 0;

    pthread_barrier_wait(t->go);
    if (resolve(t->r, "shared.test", 10000, &v4, &err) == 0 && v4 == ip("127.0.0.8"))
        atomic_fetch_add(t->ok, 1);
    return NULL;
}

/* TTL 0 keeps nothing in the cache, and the server holds its answer back
 * while every thread asks: only sharing the query makes it one. */
static void test_dns_concurrent_lookups_share_one_query(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_ANSWER);
    pthread_t th[THREADS];
    pthread_barrier_t go;
    atomic_int ok = 0;
    struct racer t;
    sl_dns *r;
    int i;

    TU_REQUIRE(d);
    tu_dns_add(d, "shared.test", "127.0.0.8", 0);
    tu_dns_set_delay(d, 500);
    r = dns_for(d, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    pthread_barrier_init(&go, NULL, THREADS);
    t = (struct racer){r, &go, &ok};
    for (i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, race, &t);
    for (i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    CU_ASSERT_EQUAL(atomic_load(&ok), THREADS);
    CU_ASSERT_EQUAL(tu_dns_queries(d, "shared.test"), 1);
    sl_dns_free(r);
    tu_dns_stop(d);
}

struct short_leader {
    sl_dns *r;
    int rc;
};

static void *lead_briefly(void *arg)
{
    struct short_leader *l = arg;
    sluice_error err;

    l->rc = resolve(l->r, "slow.test", 200, NULL, &err);
    return NULL;
}

/* A follower is bound by its own deadline, not the leader's: when the
 * leader gives up, a follower with time left asks again. */
static void test_dns_follower_outlives_a_hasty_leader(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_ANSWER);
    struct short_leader l = {NULL, 1};
    sluice_error err;
    uint32_t v4 = 0;
    pthread_t th;
    int64_t end;
    sl_dns *r;

    TU_REQUIRE(d);
    tu_dns_add(d, "slow.test", "127.0.0.9", 60);
    tu_dns_set_delay(d, 600);
    r = dns_for(d, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    l.r = r;
    pthread_create(&th, NULL, lead_briefly, &l);
    end = tu_now_ms() + 5000;
    while (tu_dns_queries(d, "slow.test") < 1 && tu_now_ms() < end)
        usleep(1000);
    CU_ASSERT_EQUAL(resolve(r, "slow.test", 10000, &v4, &err), 0);
    CU_ASSERT_EQUAL(v4, ip("127.0.0.9"));
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(l.rc, SLUICE_ETIMEDOUT);
    sl_dns_free(r);
    tu_dns_stop(d);
}

/* /etc/hosts answers before any server is asked. */
static void test_dns_localhost_from_hosts_file(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_NXDOMAIN);
    sluice_error err;
    uint32_t v4 = 0;
    sl_dns *r;

    TU_REQUIRE(d);
    r = dns_for(d, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(resolve(r, "localhost", 5000, &v4, &err), 0);
    CU_ASSERT_EQUAL(v4, ip("127.0.0.1"));
    CU_ASSERT_EQUAL(resolve(r, "127.0.0.1", 5000, &v4, &err), 0);   /* numeric: no lookup */
    CU_ASSERT_EQUAL(tu_dns_queries(d, NULL), 0);
    sl_dns_free(r);
    tu_dns_stop(d);
}

/* More names than the cache holds: the newest stays, the oldest went. */
static void test_dns_cache_is_bounded(void)
{
    tu_dns *d = tu_dns_start(TU_DNS_NXDOMAIN);
    sluice_error err;
    char name[64];
    sl_dns *r;
    long n;
    int i;

    TU_REQUIRE(d);
    r = dns_for(d, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    for (i = 0; i < SL_DNS_MAX_ENTRIES + 50; i++) {
        snprintf(name, sizeof name, "n%d.test", i);
        CU_ASSERT_EQUAL(resolve(r, name, 5000, NULL, &err), SLUICE_ERESOLVE);
    }
    n = tu_dns_queries(d, NULL);
    CU_ASSERT_EQUAL(resolve(r, name, 5000, NULL, &err), SLUICE_ERESOLVE);
    CU_ASSERT_EQUAL(tu_dns_queries(d, NULL), n);          /* the newest is kept */
    CU_ASSERT_EQUAL(resolve(r, "n0.test", 5000, NULL, &err), SLUICE_ERESOLVE);
    CU_ASSERT(tu_dns_queries(d, NULL) > n);               /* the oldest was evicted */
    sl_dns_free(r);
    tu_dns_stop(d);
}

static void test_dns_malformed_servers_refused(void)
{
    static const char *const bad[] = {"not-an-address", "127.0.0.1:99999", "", "127.0.0.1,,",
                                      "127.0.0.1:", "[::1]x"};
    sluice_factory_opts fo;
    sluice_error err;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
        fo.dns_servers = bad[i];
        CU_ASSERT_PTR_NULL(sluice_factory_new(&fo, &err));
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "dns_servers"));
    }
    fo.dns_servers = "127.0.0.1:5353,[::1]:53";
    sluice_factory_free(sluice_factory_new(&fo, &err));
    CU_ASSERT_EQUAL(err.code, 0);
}

/* A client whose base URL names a host only the test server knows. */
static void test_dns_client_reaches_a_name_only_its_servers_know(void)
{
    const char *http = tu_http_addr(), *colon;
    tu_dns *d = tu_dns_start(TU_DNS_ANSWER);
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;
    char base[96];

    TU_REQUIRE(http);
    TU_REQUIRE(d);
    colon = strrchr(http, ':');
    snprintf(base, sizeof base, "http://api.test:%s", colon + 1);
    tu_dns_add(d, "api.test", "127.0.0.1", 300);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.dns_servers = tu_dns_servers(d);
    f = sluice_factory_new(&fo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sluice_client_opts_init(&co);
    co.base_url = base;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    c = sluice_factory_client(f, "dns-e2e", &co, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    CU_ASSERT_EQUAL(tu_dns_queries(d, "api.test"), 1);
    sluice_factory_free(f);
    tu_dns_stop(d);
}

static CU_TestInfo tests[] = {
    {"test_dns_resolves_a_name", test_dns_resolves_a_name},
    {"test_dns_short_ttl_expires", test_dns_short_ttl_expires},
    {"test_dns_long_ttl_capped_by_dns_ttl_ms", test_dns_long_ttl_capped_by_dns_ttl_ms},
    {"test_dns_zero_ttl_not_kept", test_dns_zero_ttl_not_kept},
    {"test_dns_silent_server_ends_at_the_deadline", test_dns_silent_server_ends_at_the_deadline},
    {"test_dns_servfail_cached_negatively", test_dns_servfail_cached_negatively},
    {"test_dns_nxdomain_cached_negatively", test_dns_nxdomain_cached_negatively},
    {"test_dns_concurrent_lookups_share_one_query", test_dns_concurrent_lookups_share_one_query},
    {"test_dns_follower_outlives_a_hasty_leader", test_dns_follower_outlives_a_hasty_leader},
    {"test_dns_localhost_from_hosts_file", test_dns_localhost_from_hosts_file},
    {"test_dns_cache_is_bounded", test_dns_cache_is_bounded},
    {"test_dns_malformed_servers_refused", test_dns_malformed_servers_refused},
    {"test_dns_client_reaches_a_name_only_its_servers_know",
     test_dns_client_reaches_a_name_only_its_servers_know},
    CU_TEST_INFO_NULL,
};

void suite_dns(void);
void suite_dns(void)
{
    tu_add_suite("dns", tests);
}
