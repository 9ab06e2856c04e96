/* Error codes: every code has a distinct name and message. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "testutil.h"

static const int all_codes[] = {
#define XX(name, num, msg) SLUICE_##name,
    SLUICE_ERRNO_MAP(XX)
#undef XX
};
#define NCODES (sizeof all_codes / sizeof all_codes[0])

static void test_error_every_code_named(void)
{
    size_t i, j;

    CU_ASSERT_EQUAL(NCODES, (size_t)(-SLUICE_ERRNO_MAX_ - 1));
    for (i = 0; i < NCODES; i++) {
        const char *name = sluice_err_name(all_codes[i]);
        const char *msg = sluice_strerror(all_codes[i]);
        CU_ASSERT(all_codes[i] < 0);
        CU_ASSERT_EQUAL(all_codes[i], -(int)(i + 1));
        CU_ASSERT(strncmp(name, "SLUICE_E", 8) == 0);
        CU_ASSERT_STRING_NOT_EQUAL(name, "SLUICE_EUNKNOWN");
        CU_ASSERT_STRING_NOT_EQUAL(msg, "unknown error");
        for (j = 0; j < i; j++) {
            CU_ASSERT_STRING_NOT_EQUAL(name, sluice_err_name(all_codes[j]));
            CU_ASSERT_STRING_NOT_EQUAL(msg, sluice_strerror(all_codes[j]));
        }
    }
    CU_ASSERT_STRING_EQUAL(sluice_err_name(SLUICE_ETIMEDOUT), "SLUICE_ETIMEDOUT");
    CU_ASSERT_STRING_EQUAL(sluice_err_name(SLUICE_ERRNO_MAX_), "SLUICE_EUNKNOWN");
    CU_ASSERT_STRING_EQUAL(sluice_strerror(12345), "unknown error");
    CU_ASSERT_STRING_EQUAL(sluice_err_name(0), "SLUICE_OK");
}

static void test_error_message_formats(void)
{
    sluice_error e;
    char longhost[600];

    CU_ASSERT_EQUAL(sl_err(&e, SLUICE_ECONNECT, "connect to %s:%d: refused", "127.0.0.1", 9), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(e.code, SLUICE_ECONNECT);
    CU_ASSERT_STRING_EQUAL(e.msg, "connect to 127.0.0.1:9: refused");
    /* A long message is cut, never overflows. */
    memset(longhost, 'h', sizeof longhost - 1);
    longhost[sizeof longhost - 1] = '\0';
    sl_err(&e, SLUICE_ERESOLVE, "resolve %s", longhost);
    CU_ASSERT_EQUAL(strlen(e.msg), sizeof e.msg - 1);
    /* NULL err is allowed everywhere. */
    CU_ASSERT_EQUAL(sl_err(NULL, SLUICE_EIO, "x"), SLUICE_EIO);
    sl_err_clear(&e);
    CU_ASSERT_EQUAL(e.code, 0);
    CU_ASSERT_STRING_EQUAL(e.msg, "");
}

static void test_error_version(void)
{
    CU_ASSERT_EQUAL(sluice_version(), SLUICE_VERSION_NUM);
    CU_ASSERT_STRING_EQUAL(sluice_version_string(), SLUICE_VERSION_STRING);
}

/* Unknown errno values are where strerror() formats into one static
 * buffer: threads that each ask for their own must each get their own. */
static void *errno_text_worker(void *arg)
{
    int errnum = 5000 + (int)(intptr_t)arg, i, bad = 0;
    char want[64], buf[SL_ERRNO_BUF];

    snprintf(want, sizeof want, "Unknown error %d", errnum);
    for (i = 0; i < 20000; i++)
        bad += strcmp(sl_errno_str(errnum, buf, sizeof buf), want) != 0;
    return (void *)(intptr_t)bad;
}

static void test_error_errno_text_per_thread(void)
{
    pthread_t th[4];
    char buf[SL_ERRNO_BUF], tiny[4];
    intptr_t i, bad = 0;
    void *r;

    CU_ASSERT_STRING_EQUAL(sl_errno_str(ECONNRESET, buf, sizeof buf), "Connection reset by peer");
    CU_ASSERT_PTR_NOT_NULL(sl_errno_str(5000, tiny, sizeof tiny));   /* cut, never NULL */
    for (i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, errno_text_worker, (void *)i);
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], &r);
        bad += (intptr_t)r;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static CU_TestInfo tests[] = {
    {"test_error_every_code_named", test_error_every_code_named},
    {"test_error_message_formats", test_error_message_formats},
    {"test_error_version", test_error_version},
    {"test_error_errno_text_per_thread", test_error_errno_text_per_thread},
    CU_TEST_INFO_NULL,
};

void suite_error(void);
void suite_error(void)
{
    tu_add_suite("error", tests);
}
