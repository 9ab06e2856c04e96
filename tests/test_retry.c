/* Retry policy: status and method tables, backoff bounds per jitter kind,
 * Retry-After parsing, policy equality and the retry budget. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "retry.h"
#include "testutil.h"

#define MS 1000000LL
#define SEC 1000000000LL

static void init_ok(sl_retry_policy *p, const sluice_retry_opts *o)
{
    sluice_error err = {0};

    CU_ASSERT_EQUAL_FATAL(sl_retry_policy_init(p, o, &err), 0);
}

/* --- options ------------------------------------------------------------ */

static void test_retry_defaults_urllib3(void)
{
    sl_retry_policy p;

    init_ok(&p, NULL);
    CU_ASSERT_EQUAL(p.max_retries, 3);
    CU_ASSERT_EQUAL(p.nstatuses, 6);
    CU_ASSERT_EQUAL(p.backoff_factor_ns, 100 * MS);
    CU_ASSERT_EQUAL(p.backoff_max_ns, 10000 * MS);
    CU_ASSERT_EQUAL(p.jitter, SLUICE_JITTER_FULL);
    CU_ASSERT_EQUAL(p.retry_after_max_ns, 30000 * MS);
    CU_ASSERT_EQUAL(p.budget_ratio_pct, 20);
    CU_ASSERT_EQUAL(p.budget_window_ms, 10000);
    CU_ASSERT_EQUAL(p.budget_min_per_sec, 10);
    sl_retry_policy_free(&p);
    sl_retry_policy_free(&p);   /* a freed policy is zeroed: harmless */
    sl_retry_policy_free(NULL);
    /* A zeroed or NULL policy retries nothing and does not crash. */
    CU_ASSERT_FALSE(sl_retry_status_retryable(&p, 503));
    CU_ASSERT_FALSE(sl_retry_method_allowed(&p, "GET", 0));
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 1), 0);
    CU_ASSERT_FALSE(sl_retry_status_retryable(NULL, 503));
    CU_ASSERT_FALSE(sl_retry_method_allowed(NULL, "GET", 0));
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(NULL, 1), 0);
}

static void test_retry_off_values(void)
{
    sluice_retry_opts o = {0};
    sl_retry_policy p;

    o.max_retries = SLUICE_OFF;
    o.backoff_factor_ms = SLUICE_OFF;
    o.retry_after_max_ms = SLUICE_OFF;
    o.budget_ratio_pct = SLUICE_OFF;
    o.budget_min_per_sec = SLUICE_OFF;
    init_ok(&p, &o);
    CU_ASSERT_EQUAL(p.max_retries, 0);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 1), 0);
    CU_ASSERT_EQUAL(p.retry_after_max_ns, 0);
    CU_ASSERT_EQUAL(p.budget_ratio_pct, SLUICE_OFF);
    CU_ASSERT_EQUAL(p.budget_min_per_sec, SLUICE_OFF);
    sl_retry_policy_free(&p);
}

/* 0 is a real value where it means something: no retries, no sleep, no
 * Retry-After; the budget's window still takes its default. */
static void test_retry_zero_is_zero(void)
{
    sluice_retry_opts o = {0};
    sl_retry_policy p;

    init_ok(&p, &o);
    CU_ASSERT_EQUAL(p.max_retries, 0);
    CU_ASSERT_EQUAL(p.backoff_factor_ns, 0);
    CU_ASSERT_EQUAL(p.backoff_max_ns, 0);
    CU_ASSERT_EQUAL(p.retry_after_max_ns, 0);
    CU_ASSERT_EQUAL(p.budget_window_ms, 10000);
    CU_ASSERT_EQUAL(p.nstatuses, 6);
    sl_retry_policy_free(&p);
}

static void expect_einval(const sluice_retry_opts *o, const char *field)
{
    sluice_error err = {0};
    sl_retry_policy p;

    CU_ASSERT_EQUAL(sl_retry_policy_init(&p, o, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, field));
    CU_ASSERT_PTR_NULL(p.statuses);
    CU_ASSERT_PTR_NULL(p.methods);
}

static void test_retry_opts_invalid(void)
{
    static const int bad_status[] = {503, 600};
    static const char *const bad_method[] = {"GET", "GE T", NULL};
    static const char *const empty_method[] = {"", NULL};
    sluice_retry_opts o;

    memset(&o, 0, sizeof o);
    o.max_retries = -2;
    expect_einval(&o, "max_retries");
    memset(&o, 0, sizeof o);
    o.retry_statuses = bad_status;
    o.nretry_statuses = 2;
    expect_einval(&o, "600");
    o.retry_statuses = NULL;
    expect_einval(&o, "retry_statuses");
    memset(&o, 0, sizeof o);
    o.retry_methods = bad_method;
    expect_einval(&o, "GE T");
    o.retry_methods = empty_method;
    expect_einval(&o, "method");
    memset(&o, 0, sizeof o);
    o.jitter = (sluice_jitter)7;
    expect_einval(&o, "jitter");
    memset(&o, 0, sizeof o);
    o.budget_window_ms = SLUICE_OFF;
    expect_einval(&o, "budget_window_ms");
    memset(&o, 0, sizeof o);
    o.budget_ratio_pct = 20000;
    expect_einval(&o, "budget_ratio_pct");
    memset(&o, 0, sizeof o);
    o.backoff_max_ms = -5;
    expect_einval(&o, "backoff_max_ms");
    CU_ASSERT_EQUAL(sl_retry_policy_init(NULL, NULL, NULL), SLUICE_EINVAL);
}

/* --- status and method tables --------------------------------------------- */

static void test_retry_status_table(void)
{
    static const struct {
        int status, retry;
    } table[] = {{408, 1}, {429, 1}, {500, 1}, {502, 1}, {503, 1}, {504, 1}, {200, 0},
                 {201, 0}, {301, 0}, {400, 0}, {404, 0}, {413, 0}, {501, 0}, {505, 0}};
    static const int custom[] = {503, 418, 503};
    sluice_retry_opts o = {0};
    sl_retry_policy p;
    size_t i;

    init_ok(&p, NULL);
    for (i = 0; i < sizeof table / sizeof table[0]; i++)
        CU_ASSERT_EQUAL(sl_retry_status_retryable(&p, table[i].status), table[i].retry);
    sl_retry_policy_free(&p);

    o.retry_statuses = custom;
    o.nretry_statuses = 3;
    init_ok(&p, &o);
    CU_ASSERT_EQUAL(p.nstatuses, 2);    /* the duplicate is dropped */
    CU_ASSERT_TRUE(sl_retry_status_retryable(&p, 418));
    CU_ASSERT_TRUE(sl_retry_status_retryable(&p, 503));
    CU_ASSERT_FALSE(sl_retry_status_retryable(&p, 500));
    sl_retry_policy_free(&p);
}

static void test_retry_method_table(void)
{
    static const struct {
        const char *method;
        int retry;
    } table[] = {{"GET", 1},   {"HEAD", 1},  {"PUT", 1},     {"DELETE", 1}, {"OPTIONS", 1},
                 {"TRACE", 1}, {"get", 1},   {"POST", 0},    {"PATCH", 0},  {"CONNECT", 0},
                 {"GETX", 0},  {"", 0},      {NULL, 1}};
    static const char *const custom[] = {"post", "Get", "POST", NULL};
    static const char *const none[] = {NULL};
    sluice_retry_opts o = {0};
    sl_retry_policy p;
    size_t i;

    init_ok(&p, NULL);
    for (i = 0; i < sizeof table / sizeof table[0]; i++)
        CU_ASSERT_EQUAL(sl_retry_method_allowed(&p, table[i].method, 0), table[i].retry);
    /* The request's own word beats the table. */
    CU_ASSERT_TRUE(sl_retry_method_allowed(&p, "POST", SLUICE_REQ_IDEMPOTENT));
    CU_ASSERT_FALSE(sl_retry_method_allowed(&p, "POST", SLUICE_REQ_NO_COALESCE));
    sl_retry_policy_free(&p);

    o.retry_methods = custom;
    init_ok(&p, &o);
    CU_ASSERT_STRING_EQUAL(p.methods[0], "GET");
    CU_ASSERT_STRING_EQUAL(p.methods[1], "POST");
    CU_ASSERT_PTR_NULL(p.methods[2]);
    CU_ASSERT_TRUE(sl_retry_method_allowed(&p, "POST", 0));
    CU_ASSERT_FALSE(sl_retry_method_allowed(&p, "PUT", 0));
    sl_retry_policy_free(&p);

    o.retry_methods = none;
    init_ok(&p, &o);
    CU_ASSERT_FALSE(sl_retry_method_allowed(&p, "GET", 0));
    CU_ASSERT_TRUE(sl_retry_method_allowed(&p, "GET", SLUICE_REQ_IDEMPOTENT));
    sl_retry_policy_free(&p);
}

static void test_retry_after_applies_table(void)
{
    CU_ASSERT_TRUE(sl_retry_after_applies(413));
    CU_ASSERT_TRUE(sl_retry_after_applies(429));
    CU_ASSERT_TRUE(sl_retry_after_applies(503));
    CU_ASSERT_FALSE(sl_retry_after_applies(500));
    CU_ASSERT_FALSE(sl_retry_after_applies(502));
    CU_ASSERT_FALSE(sl_retry_after_applies(301));
}

/* --- backoff --------------------------------------------------------------- */

#define SAMPLES 20000

/* Draws SAMPLES sleeps for retry n; checks every one is in [lo, hi] and
 * the mean is within 3% of `mean`; returns the smallest and largest. */
static void check_samples(const sl_retry_policy *p, int n, int64_t lo, int64_t hi, double mean,
                          int64_t *min_out, int64_t *max_out)
{
    int64_t min = INT64_MAX, max = INT64_MIN, v;
    double sum = 0;
    int i, out = 0;

    for (i = 0; i < SAMPLES; i++) {
        v = sl_retry_backoff_ns(p, n);
        out += v < lo || v > hi;
        min = v < min ? v : min;
        max = v > max ? v : max;
        sum += (double)v;
    }
    CU_ASSERT_EQUAL(out, 0);
    sum /= SAMPLES;
    CU_ASSERT(sum > mean * 0.97 && sum < mean * 1.03);
    *min_out = min;
    *max_out = max;
}

static void test_retry_backoff_full_jitter(void)
{
    sl_retry_policy p;
    int64_t base, min, max;
    int n;

    init_ok(&p, NULL);      /* factor 100 ms, cap 10 s, full jitter */
    for (n = 1; n <= 9; n++) {
        base = 100 * MS << (n - 1);
        if (base > 10 * SEC)
            base = 10 * SEC;
        check_samples(&p, n, 0, base, base / 2.0, &min, &max);
        /* Spread over the whole range, not a narrow band. */
        CU_ASSERT(min < base / 50);
        CU_ASSERT(max > base - base / 50);
    }
    /* Far past the cap, and where factor * 2^(n-1) would overflow. */
    check_samples(&p, 40, 0, 10 * SEC, 5.0 * SEC, &min, &max);
    check_samples(&p, 1000, 0, 10 * SEC, 5.0 * SEC, &min, &max);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 0), 0);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, -3), 0);
    sl_retry_policy_free(&p);
}

static void test_retry_backoff_equal_jitter(void)
{
    sluice_retry_opts o = {0};
    sl_retry_policy p;
    int64_t base, min, max;
    int n;

    o.jitter = SLUICE_JITTER_EQUAL;
    o.backoff_factor_ms = 50;
    o.backoff_max_ms = 1000;
    init_ok(&p, &o);
    for (n = 1; n <= 8; n++) {
        base = 50 * MS << (n - 1);
        if (base > 1000 * MS)
            base = 1000 * MS;
        check_samples(&p, n, base / 2, base, base * 0.75, &min, &max);
        CU_ASSERT(min < base / 2 + base / 100);
        CU_ASSERT(max > base - base / 100);
    }
    sl_retry_policy_free(&p);
}

static void test_retry_backoff_no_jitter(void)
{
    sluice_retry_opts o = {0};
    sl_retry_policy p;

    o.jitter = SLUICE_JITTER_NONE;
    o.backoff_factor_ms = 250;
    o.backoff_max_ms = 1500;
    init_ok(&p, &o);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 1), 250 * MS);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 2), 500 * MS);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 3), 1000 * MS);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 4), 1500 * MS);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 63), 1500 * MS);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 64), 1500 * MS);
    CU_ASSERT_EQUAL(sl_retry_backoff_ns(&p, 2147483647), 1500 * MS);
    sl_retry_policy_free(&p);
}

/* --- Retry-After ------------------------------------------------------------- */

/* Sun, 06 Nov 1994 08:49:37 GMT, in ms since the epoch. */
#define RFC_DATE_MS 784111777000LL

static void test_retry_after_seconds(void)
{
    static const struct {
        const char *v;
        int64_t ms;
    } table[] = {
        {"0", 0},
        {"1", 1000},
        {"120", 120000},
        {"007", 7000},
        {" 120", 120000},
        {"120 ", 120000},
        {"\t 120 \t", 120000},
        {"2147483647", 2147483647000LL},
        {"2147483648", 2147483648000LL},
        {"2147483649", 2147483648000LL},
        {"99999999999999999999999999999999999999", 2147483648000LL},
        {"", -1},
        {"   ", -1},
        {"-1", -1},
        {"+1", -1},
        {"1.5", -1},
        {"1e3", -1},
        {"0x10", -1},
        {"1 20", -1},
        {"120\r", -1},
        {"\n120", -1},
        {"12a", -1},
        {"soon", -1},
    };
    size_t i;

    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        int64_t got = sl_retry_after_parse_ms(table[i].v, RFC_DATE_MS);
        if (got != table[i].ms)
            fprintf(stderr, "\n  Retry-After \"%s\": %lld, want %lld\n", table[i].v,
                    (long long)got, (long long)table[i].ms);
        CU_ASSERT_EQUAL(got, table[i].ms);
    }
    CU_ASSERT_EQUAL(sl_retry_after_parse_ms(NULL, RFC_DATE_MS), -1);
}

static void test_retry_after_dates(void)
{
    static const struct {
        const char *v;
        int64_t now, ms;
    } table[] = {
        /* The three forms of one instant, 10 s ahead. */
        {"Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS - 10000, 10000},
        {"Sunday, 06-Nov-94 08:49:37 GMT", RFC_DATE_MS - 10000, 10000},
        {"Sun Nov  6 08:49:37 1994", RFC_DATE_MS - 10000, 10000},
        {"Sun Nov 06 08:49:37 1994", RFC_DATE_MS - 10000, 10000},
        {"  Sun, 06 Nov 1994 08:49:37 GMT\t", RFC_DATE_MS - 10000, 10000},
        /* Sub-second "now": the wait is to the date, not rounded. */
        {"Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS - 1500, 1500},
        /* Now, and in the past: no wait. */
        {"Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS, 0},
        {"Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS + 999, 0},
        {"Sun Nov  6 08:49:37 1994", RFC_DATE_MS + 86400000, 0},
        {"Sunday, 06-Nov-94 08:49:37 GMT", 1700000000000LL, 0},
        /* Day name is checked for spelling only, as in most parsers. */
        {"Mon, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS - 10000, 10000},
        /* Leap day, leap second, the end of a year. */
        {"Tue, 29 Feb 2000 00:00:00 GMT", 951782400000LL - 1000, 1000},
        {"Thu, 31 Dec 1998 23:59:60 GMT", 915148800000LL - 1000, 1000},
        {"Fri, 31 Dec 1999 23:59:59 GMT", 946684799000LL - 2000, 2000},
        /* Far future: capped like delta-seconds. */
        {"Fri, 31 Dec 9999 23:59:59 GMT", RFC_DATE_MS, 2147483648000LL},
    };
    size_t i;

    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        int64_t got = sl_retry_after_parse_ms(table[i].v, table[i].now);
        if (got != table[i].ms)
            fprintf(stderr, "\n  Retry-After \"%s\": %lld, want %lld\n", table[i].v,
                    (long long)got, (long long)table[i].ms);
        CU_ASSERT_EQUAL(got, table[i].ms);
    }
}

static void test_retry_after_garbage(void)
{
    static const char *const bad[] = {
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 06 Nov 1994 08:49:37 GMTT",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994",
        "Sun,",
        "Sun",
        "Son, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nob 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 29 Feb 1994 08:49:37 GMT",
        "Sun, 29 Feb 1900 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 23:60:00 GMT",
        "Sun, 06 Nov 1994 23:59:61 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT\r\n",
        "Sun, 06 Nov 1994\t08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 6-Nov-94 08:49:37 GMT",
        "Sunday, 31-Apr-94 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun Nov   6 08:49:37 1994",
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "Sun Nov 31 08:49:37 1994",
        "Sunday Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "1994-11-06T08:49:37Z",
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t got = sl_retry_after_parse_ms(bad[i], RFC_DATE_MS - 10000);
        if (got != -1)
            fprintf(stderr, "\n  Retry-After \"%s\" accepted as %lld\n", bad[i], (long long)got);
        CU_ASSERT_EQUAL(got, -1);
    }
}

/* Every form agrees with timegm() (an independent UTC conversion) on dates
 * spread over four centuries. */
static void test_retry_after_matches_timegm(void)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    uint64_t seed = 12345;
    char imf[64], asc[64];
    int i;

    for (i = 0; i < 5000; i++) {
        struct tm tm = {0};
        time_t t;
        int64_t now;

        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        tm.tm_year = 1970 + (int)((seed >> 33) % 430) - 1900;
        tm.tm_mon = (int)((seed >> 20) % 12);
        tm.tm_mday = 1 + (int)((seed >> 8) % (unsigned)mdays[tm.tm_mon]);
        tm.tm_hour = (int)((seed >> 40) % 24);
        tm.tm_min = (int)((seed >> 46) % 60);
        tm.tm_sec = (int)((seed >> 52) % 60);
        t = timegm(&tm);
        now = (int64_t)t * 1000 - 7000 - (int64_t)(seed % 1000);
        snprintf(imf, sizeof imf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
                 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        snprintf(asc, sizeof asc, "%s %s %2d %02d:%02d:%02d %04d", days[tm.tm_wday],
                 months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 tm.tm_year + 1900);
        CU_ASSERT_EQUAL(sl_retry_after_parse_ms(imf, now), (int64_t)t * 1000 - now);
        CU_ASSERT_EQUAL(sl_retry_after_parse_ms(asc, now), (int64_t)t * 1000 - now);
    }
}

/* RFC 850's two-digit year is placed within 50 years of now. */
static void test_retry_after_rfc850_century(void)
{
    /* 2023-11-14T22:13:20Z */
    const int64_t now = 1700000000000LL;
    /* 2030-01-01T00:00:00Z and 2073-01-01T00:00:00Z are ahead; 2074 is
     * more than 50 years ahead, so it is 1974 (past). */
    CU_ASSERT_EQUAL(sl_retry_after_parse_ms("Tuesday, 01-Jan-30 00:00:00 GMT", now),
                    1893456000000LL - now);
    CU_ASSERT_EQUAL(sl_retry_after_parse_ms("Sunday, 01-Jan-73 00:00:00 GMT", now),
                    3250454400000LL - now);
    CU_ASSERT_EQUAL(sl_retry_after_parse_ms("Tuesday, 01-Jan-74 00:00:00 GMT", now), 0);
    CU_ASSERT_EQUAL(sl_retry_after_parse_ms("Tuesday, 01-Jan-74 00:00:00 GMT",
                                            126230400000LL - 5000), 5000);
}

/* Found by fuzzing: the most extreme clocks overflowed the ms arithmetic
 * (UBSan in `make asan` catches a regression). */
static void test_retry_after_extreme_clock(void)
{
    static const char *const v[] = {"Sunday, 06-Nov-94 08:49:37 GMT",
                                    "Sun, 06 Nov 1994 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"};
    size_t i;

    /* RFC 850's year follows the clock's, so it can be ahead of either. */
    for (i = 0; i < 3; i++) {
        int64_t lo = sl_retry_after_parse_ms(v[i], INT64_MIN);
        int64_t hi = sl_retry_after_parse_ms(v[i], INT64_MAX);
        CU_ASSERT(lo >= 0 && lo <= 2147483648000LL);
        CU_ASSERT(hi >= 0 && hi <= 2147483648000LL);
        if (i > 0)
            CU_ASSERT_EQUAL(hi, 0);
    }
    CU_ASSERT_EQUAL(sl_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", INT64_MIN),
                    2147483648000LL);
}

/* Every allocation in init fails in turn: ENOMEM, nothing leaked. */
static void test_retry_policy_init_enomem(void)
{
    static const char *const m[] = {"GET", "POST", "get", NULL};
    sluice_retry_opts o = {0};
    sluice_error err;
    sl_retry_policy p;
    long at;
    int rc = SLUICE_ENOMEM;

    o.retry_methods = m;
    for (at = 1; rc == SLUICE_ENOMEM && at < 100; at++) {
        tu_alloc_install(at, 0);
        memset(&err, 0, sizeof err);
        rc = sl_retry_policy_init(&p, &o, &err);
        if (rc == SLUICE_ENOMEM) {
            CU_ASSERT_EQUAL(err.code, SLUICE_ENOMEM);
            CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        }
        sl_retry_policy_free(&p);
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        tu_alloc_uninstall();
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(at > 3);   /* several allocations were failed on the way */

    tu_alloc_install(1, 0);
    CU_ASSERT_PTR_NULL(sl_retry_budget_new(0, 0, 0));
    CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
    tu_alloc_uninstall();
}

/* --- budget ---------------------------------------------------------------- */

/* A bucket-aligned start, far from zero. */
#define T0 (1000 * SEC)

static int spend_all(sl_retry_budget *b, int64_t now)
{
    int n = 0;

    while (n < 100000 && sl_retry_budget_spend(b, now))
        n++;
    return n;
}

static void test_retry_budget_ratio_and_floor(void)
{
    sl_retry_budget *b = sl_retry_budget_new(20, 10000, 10);
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    /* With no requests, only the floor: 10/s over 10 s. */
    CU_ASSERT_EQUAL(spend_all(b, T0), 100);
    /* 500 requests earn 20% more. */
    for (i = 0; i < 500; i++)
        sl_retry_budget_note_request(b, T0 + i * MS);
    CU_ASSERT_EQUAL(spend_all(b, T0 + SEC), 100);
    CU_ASSERT_FALSE(sl_retry_budget_spend(b, T0 + SEC));
    sl_retry_budget_free(b);

    b = sl_retry_budget_new(50, 1000, SLUICE_OFF);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_FALSE(sl_retry_budget_spend(b, T0));      /* no floor */
    sl_retry_budget_note_request(b, T0);
    sl_retry_budget_note_request(b, T0);
    CU_ASSERT_TRUE(sl_retry_budget_spend(b, T0));
    CU_ASSERT_FALSE(sl_retry_budget_spend(b, T0));
    sl_retry_budget_free(b);
}

/* The window slides: old requests and old retries both age out. */
static void test_retry_budget_refills_over_time(void)
{
    sl_retry_budget *b = sl_retry_budget_new(20, 1000, 1);   /* 100 ms buckets */
    int i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    for (i = 0; i < 100; i++)
        sl_retry_budget_note_request(b, T0);
    CU_ASSERT_EQUAL(spend_all(b, T0), 21);              /* 20% of 100 + floor 1 */
    CU_ASSERT_FALSE(sl_retry_budget_spend(b, T0 + 500 * MS));
    CU_ASSERT_FALSE(sl_retry_budget_spend(b, T0 + 999 * MS));
    /* At 1 s the first bucket has left the window: the floor is back. */
    CU_ASSERT_EQUAL(spend_all(b, T0 + 1000 * MS), 1);
    for (i = 0; i < 50; i++)
        sl_retry_budget_note_request(b, T0 + 1050 * MS);
    CU_ASSERT_EQUAL(spend_all(b, T0 + 1099 * MS), 10);
    /* Much later, everything has aged out. */
    CU_ASSERT_EQUAL(spend_all(b, T0 + 60 * SEC), 1);
    sl_retry_budget_free(b);
}

static void test_retry_budget_unlimited_and_null(void)
{
    sl_retry_budget *b = sl_retry_budget_new(SLUICE_OFF, 0, 0);

    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(spend_all(b, T0), 100000);
    sl_retry_budget_free(b);
    sl_retry_budget_note_request(NULL, T0);
    CU_ASSERT_TRUE(sl_retry_budget_spend(NULL, T0));
    sl_retry_budget_free(NULL);
}

#define HAMMER_THREADS 100
#define HAMMER_ITERS 300

typedef struct hammer {
    sl_retry_budget *b;
    pthread_barrier_t *start;
    _Atomic long requests, spent;
} hammer;

/* Every request "fails" and asks for a retry: the worst storm. */
static void *hammer_thread(void *arg)
{
    hammer *h = arg;
    int i;

    pthread_barrier_wait(h->start);
    for (i = 0; i < HAMMER_ITERS; i++) {
        int64_t now = T0 + i * MS;      /* all inside one 1 s bucket */
        sl_retry_budget_note_request(h->b, now);
        atomic_fetch_add(&h->requests, 1);
        if (sl_retry_budget_spend(h->b, now))
            atomic_fetch_add(&h->spent, 1);
    }
    return NULL;
}

static void test_retry_budget_concurrent_bound(void)
{
    pthread_t t[HAMMER_THREADS];
    pthread_barrier_t start;
    hammer h;
    long reqs, spent;
    int i;

    memset(&h, 0, sizeof h);
    h.b = sl_retry_budget_new(20, 10000, 10);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h.b);
    h.start = &start;
    pthread_barrier_init(&start, NULL, HAMMER_THREADS);
    for (i = 0; i < HAMMER_THREADS; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, hammer_thread, &h), 0);
    for (i = 0; i < HAMMER_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    reqs = atomic_load(&h.requests);
    spent = atomic_load(&h.spent);
    CU_ASSERT_EQUAL(reqs, HAMMER_THREADS * HAMMER_ITERS);
    /* 20% of requests plus the floor (10/s over the 10 s window)... */
    CU_ASSERT(spent * 100 <= reqs * 20 + 100 * 100);
    /* ...and, since every request wanted a retry, nearly all of it: the
     * budget is not lost to races either. */
    CU_ASSERT(spent > 0);
    CU_ASSERT(spent + spend_all(h.b, T0) == reqs / 5 + 100);
    sl_retry_budget_free(h.b);
}

static CU_TestInfo tests[] = {
    {"test_retry_defaults_urllib3", test_retry_defaults_urllib3},
    {"test_retry_zero_is_zero", test_retry_zero_is_zero},
    {"test_retry_off_values", test_retry_off_values},
    {"test_retry_opts_invalid", test_retry_opts_invalid},
    {"test_retry_status_table", test_retry_status_table},
    {"test_retry_method_table", test_retry_method_table},
    {"test_retry_after_applies_table", test_retry_after_applies_table},
    {"test_retry_backoff_full_jitter", test_retry_backoff_full_jitter},
    {"test_retry_backoff_equal_jitter", test_retry_backoff_equal_jitter},
    {"test_retry_backoff_no_jitter", test_retry_backoff_no_jitter},
    {"test_retry_after_seconds", test_retry_after_seconds},
    {"test_retry_after_dates", test_retry_after_dates},
    {"test_retry_after_garbage", test_retry_after_garbage},
    {"test_retry_after_matches_timegm", test_retry_after_matches_timegm},
    {"test_retry_after_rfc850_century", test_retry_after_rfc850_century},
    {"test_retry_after_extreme_clock", test_retry_after_extreme_clock},
    {"test_retry_policy_init_enomem", test_retry_policy_init_enomem},
    {"test_retry_budget_ratio_and_floor", test_retry_budget_ratio_and_floor},
    {"test_retry_budget_refills_over_time", test_retry_budget_refills_over_time},
    {"test_retry_budget_unlimited_and_null", test_retry_budget_unlimited_and_null},
    {"test_retry_budget_concurrent_bound", test_retry_budget_concurrent_bound},
    CU_TEST_INFO_NULL,
};

void suite_retry(void);
void suite_retry(void)
{
    tu_add_suite("retry", tests);
}
