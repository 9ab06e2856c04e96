/* Logging: off by default, levels filter, callback receives lines. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Lines captured from a real run, for the per-attempt checks. */
static pthread_mutex_t lines_lock = PTHREAD_MUTEX_INITIALIZER;
static char lines[64][512];
static int nlines;

static void keep(sluice_log_level level, const char *msg, void *ud)
{
    (void)level;
    (void)ud;
    pthread_mutex_lock(&lines_lock);
    if (nlines < 64)
        snprintf(lines[nlines++], sizeof lines[0], "%s", msg);
    pthread_mutex_unlock(&lines_lock);
}

static int count_lines(const char *needle)
{
    int i, n = 0;

    for (i = 0; i < nlines; i++)
        if (strstr(lines[i], needle))
            n++;
    return n;
}

static void retrying(sluice_client_opts *co)
{
    co->retry.max_retries = 2;
    co->retry.backoff_factor_ms = 1;
}

static void tripping(sluice_client_opts *co)
{
    retrying(co);
    co->breaker.disabled = 0;
    co->breaker.failure_threshold = 1;
}

static void limited(sluice_client_opts *co)
{
    co->rate_limit.rate = 1000;
}

/* SLUICE_LOG=debug's lines: one per attempt (refused connects, retries,
 * a success), each retry decision, and never a credential or a query
 * value. */
static void test_log_debug_line_per_attempt_without_secrets(void)
{
    static const sluice_header auth[] = {{"Authorization", "Bearer SECRET123"}};
    sluice_factory *f = NULL;
    sluice_client *dead, *live, *tripped, *paced;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    char base[64], path[96];
    int i;

    snprintf(base, sizeof base, "http://127.0.0.1:%d", tu_free_port());
    dead = tu_client(&f, "dead", base, retrying);
    live = tu_client(&f, "live", tu_http_base(), retrying);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dead);
    CU_ASSERT_PTR_NOT_NULL_FATAL(live);
    nlines = 0;
    sluice_set_log(keep, SLUICE_LOG_DEBUG, NULL);
    req.headers = auth;
    req.nheaders = 1;
    req.path = "/json?token=SECRET123";
    CU_ASSERT_EQUAL(sluice_client_do(dead, &req, &r, &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.attempts, 3);
    snprintf(path, sizeof path, "/flaky/log%d?fail=2&token=SECRET123", (int)getpid());
    req.path = path;
    CU_ASSERT_EQUAL(sluice_client_do(live, &req, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 3);
    sluice_response_free(r);
    /* A breaker decision and a limiter decision are logged too. */
    tripped = tu_client(&f, "tripped", base, tripping);
    paced = tu_client(&f, "paced", tu_http_base(), limited);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tripped);
    CU_ASSERT_PTR_NOT_NULL_FATAL(paced);
    CU_ASSERT_EQUAL(sluice_get(tripped, "/x", &r, &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.attempts, 1);
    CU_ASSERT_EQUAL(tu_get_status(paced, "/json", &err), 200);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    CU_ASSERT(count_lines("tripped: breaker refused") >= 1);
    CU_ASSERT(count_lines("tripped: no retry, the circuit breaker opened") >= 1);
    CU_ASSERT(count_lines("paced: rate limiter") >= 1);
    CU_ASSERT(count_lines("dead: GET http://127.0.0.1:") >= 3);
    CU_ASSERT(count_lines("live: GET http://") >= 3);
    CU_ASSERT(count_lines("SLUICE_ECONNECT") >= 3);
    CU_ASSERT(count_lines("attempt 3:") >= 2);
    CU_ASSERT(count_lines(", 200, ") >= 1);
    CU_ASSERT(count_lines("retry 1 of 2") >= 2);
    CU_ASSERT(count_lines("connection") >= 3);
    CU_ASSERT_EQUAL(count_lines("SECRET123"), 0);
    CU_ASSERT_EQUAL(count_lines("Bearer"), 0);
    for (i = 0; i < nlines; i++)
        if (strstr(lines[i], "SECRET123"))
            fprintf(stderr, "\n  leaked: %s\n", lines[i]);
    sluice_factory_free(f);
}

/* tls_insecure_skip_verify warns once per factory: to the callback when
 * one is set, to stderr even with logging off otherwise. */
static void test_log_insecure_tls_warns_once_per_factory(void)
{
    sluice_factory_opts fo;
    sluice_factory *f1, *f2;
    char path[] = "/tmp/sluice-log-XXXXXX", buf[1024] = "";
    int fd, saved;
    ssize_t n;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.tls_insecure_skip_verify = 1;
    nlines = 0;
    sluice_set_log(keep, SLUICE_LOG_WARN, NULL);
    f1 = sluice_factory_new(&fo, NULL);
    f2 = sluice_factory_new(&fo, NULL);
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    CU_ASSERT_EQUAL(count_lines("tls_insecure_skip_verify"), 2);
    sluice_factory_free(f1);
    sluice_factory_free(f2);

    fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    fflush(stderr);
    saved = dup(2);
    dup2(fd, 2);
    f1 = sluice_factory_new(&fo, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    CU_ASSERT(n > 0 && strstr(buf, "tls_insecure_skip_verify") != NULL);
    sluice_factory_free(f1);
}

/* Level names are case-insensitive (SLUICE_LOG=DEBUG works).  The
 * variable itself is read once per process, so its parser is checked. */
static void test_log_level_names_case_insensitive(void)
{
    CU_ASSERT_EQUAL(sl_log_level_from_name("DEBUG"), SLUICE_LOG_DEBUG);
    CU_ASSERT_EQUAL(sl_log_level_from_name("Warn"), SLUICE_LOG_WARN);
    CU_ASSERT_EQUAL(sl_log_level_from_name("error"), SLUICE_LOG_ERROR);
    CU_ASSERT_EQUAL(sl_log_level_from_name("loud"), SLUICE_LOG_NONE);
    CU_ASSERT_EQUAL(sl_log_level_from_name(NULL), SLUICE_LOG_NONE);
}

static CU_TestInfo tests[] = {
    {"test_log_debug_line_per_attempt_without_secrets", test_log_debug_line_per_attempt_without_secrets},
    {"test_log_insecure_tls_warns_once_per_factory", test_log_insecure_tls_warns_once_per_factory},
    {"test_log_level_names_case_insensitive", test_log_level_names_case_insensitive},
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
