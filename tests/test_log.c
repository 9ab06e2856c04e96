/* Logging: off by default, levels filter, callback receives lines. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "testutil.h"

static int seen[5];
static char last[512];

static void capture(sluice_log_level level, const char *msg, void *ud)
{
    (void)ud;
    seen[level]++;
    strncpy(last, msg, sizeof last - 1);
}

static void test_log_levels_filter(void)
{
    memset(seen, 0, sizeof seen);
    sluice_set_log(capture, SLUICE_LOG_WARN, NULL);
    SL_DEBUG("debug %d", 1);
    SL_INFO("info %d", 2);
    SL_WARN("warn %d", 3);
    SL_ERROR("error %d", 4);
    CU_ASSERT_EQUAL(seen[SLUICE_LOG_DEBUG], 0);
    CU_ASSERT_EQUAL(seen[SLUICE_LOG_INFO], 0);
    CU_ASSERT_EQUAL(seen[SLUICE_LOG_WARN], 1);
    CU_ASSERT_EQUAL(seen[SLUICE_LOG_ERROR], 1);
    CU_ASSERT_STRING_EQUAL(last, "error 4");
    sluice_set_log(capture, SLUICE_LOG_DEBUG, NULL);
    SL_DEBUG("now %s", "visible");
    CU_ASSERT_EQUAL(seen[SLUICE_LOG_DEBUG], 1);
    CU_ASSERT_STRING_EQUAL(last, "now visible");
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    SL_ERROR("after removal");
    CU_ASSERT_EQUAL(seen[SLUICE_LOG_ERROR], 1);
}

static void test_log_off_by_default(void)
{
    /* run.sh does not set SLUICE_LOG, so nothing is enabled. */
    if (getenv("SLUICE_LOG") == NULL) {
        sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
        CU_ASSERT_FALSE(sl_log_enabled(SLUICE_LOG_ERROR));
    } else {
        CU_ASSERT_TRUE(sl_log_enabled(SLUICE_LOG_ERROR));
    }
}

/* SLUICE_LOG is read once: changing it later (setenv races with getenv in
 * other threads) has no effect, not even when the callback is removed. */
static void test_log_env_read_once(void)
{
    const char *v = getenv("SLUICE_LOG");
    char *saved = v ? strdup(v) : NULL;
    int was = sl_log_enabled(SLUICE_LOG_DEBUG);   /* the first use is behind us */

    setenv("SLUICE_LOG", was ? "error" : "debug", 1);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    CU_ASSERT_EQUAL(sl_log_enabled(SLUICE_LOG_DEBUG), was);
    if (saved)
        setenv("SLUICE_LOG", saved, 1);
    else
        unsetenv("SLUICE_LOG");
    free(saved);
}

static CU_TestInfo tests[] = {
    {"test_log_levels_filter", test_log_levels_filter},
    {"test_log_off_by_default", test_log_off_by_default},
    {"test_log_env_read_once", test_log_env_read_once},
    CU_TEST_INFO_NULL,
};

void suite_log(void);
void suite_log(void)
{
    tu_add_suite("log", tests);
}
