/* Checked pthread set-up: when a mutex or condition variable cannot be
 * initialised, creation fails with a clear error and leaks nothing (the
 * ASan build checks the leaks).  Each init fails in turn, 1, 2, ... until
 * creation gets through, as the allocation-failure tests do. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"
#include "testutil.h"

/* Runs `make` with init 1, 2, ... failing; returns how many failed.  Every
 * failure must be SLUICE_ENOMEM naming what could not be initialised. */
#define FAIL_EACH_INIT(obj, make, release, failures)                                   \
    do {                                                                               \
        int n_;                                                                        \
        for (n_ = 1; n_ < 100; n_++) {                                                 \
            sl_sync_fail_nth(n_);                                                      \
            obj = make;                                                                \
            sl_sync_fail_nth(0);                                                       \
            if (obj)                                                                   \
                break;                                                                 \
            (failures)++;                                                              \
            CU_ASSERT_EQUAL(err.code, SLUICE_ENOMEM);                                  \
            CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "could not be initialised"));       \
        }                                                                              \
        CU_ASSERT_PTR_NOT_NULL(obj);                                                   \
        release;                                                                       \
    } while (0)

static void test_sync_factory_new_fails_cleanly(void)
{
    const char *certs = getenv("SLUICE_TEST_CERTS");
    char ca[320];
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_error err;
    int failures = 0, with_tls = 0;

    FAIL_EACH_INIT(f, sluice_factory_new(NULL, &err), sluice_factory_free(f), failures);
    /* The registry lock, the TLS lock, the shutdown condition, the
     * limiter's health lock and its in-process shards at least. */
    CU_ASSERT(failures >= 5);
    /* A CA file makes the TLS context (and its session-cache lock) now. */
    TU_REQUIRE(certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = ca;
    FAIL_EACH_INIT(f, sluice_factory_new(&fo, &err), sluice_factory_free(f), with_tls);
    CU_ASSERT_EQUAL(with_tls, failures + 1);
}

static void test_sync_client_creation_fails_cleanly(void)
{
    sluice_factory *f = sluice_factory_new(NULL, NULL);
    sluice_client_opts co;
    sluice_client *c;
    sluice_error err;
    int failures = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sluice_client_opts_init(&co);
    co.base_url = tu_http_base();
    sl_sync_fail_nth(1);
    c = sluice_factory_client(f, "svc-a", &co, &err);
    sl_sync_fail_nth(0);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "svc-a: mutex could not be initialised"));
    FAIL_EACH_INIT(c, sluice_factory_client(f, "svc-b", &co, &err), (void)0, failures);
    CU_ASSERT(failures >= 1);   /* the bulkhead's lock (its waiter queue cannot fail) */
    sluice_factory_free(f);
}

static void test_sync_limiter_creation_fails_cleanly(void)
{
    const char *url = tu_redis_url();
    sluice_limiter *l;
    sluice_error err;
    int failures = 0;

    TU_REQUIRE(url);
    FAIL_EACH_INIT(l, sluice_limiter_new("", NULL, &err), sluice_limiter_free(l), failures);
    CU_ASSERT(failures >= 2);   /* the health lock and the shards */
    failures = 0;
    FAIL_EACH_INIT(l, sluice_limiter_new(url, NULL, &err), sluice_limiter_free(l), failures);
    CU_ASSERT(failures >= 2);   /* the health lock and the Redis lock */
}

static void test_sync_message_names_the_object(void)
{
    sluice_factory *f;
    sluice_error err;

    sl_sync_fail_nth(1);
    f = sluice_factory_new(NULL, &err);
    sl_sync_fail_nth(0);
    CU_ASSERT_PTR_NULL(f);
    CU_ASSERT_STRING_EQUAL(err.msg, "factory registry: mutex could not be initialised: "
                                    "Resource temporarily unavailable");
}

static CU_TestInfo tests[] = {
    {"test_sync_factory_new_fails_cleanly", test_sync_factory_new_fails_cleanly},
    {"test_sync_client_creation_fails_cleanly", test_sync_client_creation_fails_cleanly},
    {"test_sync_limiter_creation_fails_cleanly", test_sync_limiter_creation_fails_cleanly},
    {"test_sync_message_names_the_object", test_sync_message_names_the_object},
    CU_TEST_INFO_NULL,
};

void suite_sync(void);
void suite_sync(void)
{
    tu_add_suite("sync", tests);
}
