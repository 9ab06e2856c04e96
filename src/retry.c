/* Retry policy: normalised options, jittered backoff, Retry-After parsing
 * and the lock-free retry budget. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "retry.h"

#define NS_PER_MS 1000000LL

/* urllib3's defaults: statuses worth a second try, idempotent methods
 * (sorted, as a normalised policy keeps them). */
static const int default_statuses[] = {408, 429, 500, 502, 503, 504};
static const char *const default_methods[] = {"DELETE", "GET", "HEAD", "OPTIONS", "PUT",
                                              "TRACE", NULL};

/* Keeps ratio * requests (in the budget's 64-bit sums) far from overflow. */
#define MAX_RATIO_PCT 10000
#define MAX_WINDOW_MS 86400000

/* ------------------------------------------------------------------------ */
/* Policy                                                                   */
/* ------------------------------------------------------------------------ */

/* The defaults sluice_client_opts_init() writes and a NULL opts means. */
#define DEFAULT_MAX_RETRIES 3
#define DEFAULT_BACKOFF_FACTOR_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000
#define DEFAULT_RETRY_AFTER_MAX_MS 30000
#define DEFAULT_BUDGET_RATIO_PCT 20
#define DEFAULT_BUDGET_WINDOW_MS 10000
#define DEFAULT_BUDGET_MIN_PER_SEC 10

void sl_retry_opts_defaults(sluice_retry_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_retries = DEFAULT_MAX_RETRIES;
    o->backoff_factor_ms = DEFAULT_BACKOFF_FACTOR_MS;
    o->backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
    o->jitter = SLUICE_JITTER_FULL;
    o->retry_after_max_ms = DEFAULT_RETRY_AFTER_MAX_MS;
    o->budget_ratio_pct = DEFAULT_BUDGET_RATIO_PCT;
    o->budget_window_ms = DEFAULT_BUDGET_WINDOW_MS;
    o->budget_min_per_sec = DEFAULT_BUDGET_MIN_PER_SEC;
}

/* A count or duration where 0 is a real value (no retries, no sleep, no
 * Retry-After): 0 and SLUICE_OFF both give 0. */
static int norm_zero(int v, const char *name, int *out, sluice_error *err)
{
    if (v < 0 && v != SLUICE_OFF)
        return sl_err(err, SLUICE_EINVAL, "retry option %s is negative (%d)", name, v);
    *out = v < 0 ? 0 : v;
    return 0;
}

/* A count or duration option: 0 takes `def`, SLUICE_OFF gives `off`. */
static int norm_opt(int v, int def, int off, const char *name, int *out, sluice_error *err)
{
    if (v == 0)
        *out = def;
    else if (v == SLUICE_OFF)
        *out = off;
    else if (v < 0)
        return sl_err(err, SLUICE_EINVAL, "retry option %s is negative (%d)", name, v);
    else
        *out = v;
    return 0;
}

static int norm_budget(int *ratio, int *window, int *floor_, sluice_error *err)
{
    /* A window cannot be turned off: no budget is budget_ratio_pct's OFF. */
    if (*window < 0 || *window > MAX_WINDOW_MS)
        return sl_err(err, SLUICE_EINVAL, "retry option budget_window_ms %d is not 0..%d",
                      *window, MAX_WINDOW_MS);
    if (*ratio > MAX_RATIO_PCT)
        return sl_err(err, SLUICE_EINVAL, "retry option budget_ratio_pct %d is above %d", *ratio,
                      MAX_RATIO_PCT);
    if (norm_opt(*ratio, DEFAULT_BUDGET_RATIO_PCT, SLUICE_OFF, "budget_ratio_pct", ratio, err) ||
        norm_opt(*window, DEFAULT_BUDGET_WINDOW_MS, 0, "budget_window_ms", window, err) ||
        norm_opt(*floor_, DEFAULT_BUDGET_MIN_PER_SEC, SLUICE_OFF, "budget_min_per_sec", floor_,
                 err))
        return SLUICE_EINVAL;
    return 0;
}

static int norm_scalars(sl_retry_policy *p, const sluice_retry_opts *o, sluice_error *err)
{
    int factor = 0, max = 0, ra_max = 0;

    if (norm_zero(o->max_retries, "max_retries", &p->max_retries, err) ||
        norm_zero(o->backoff_factor_ms, "backoff_factor_ms", &factor, err) ||
        norm_zero(o->backoff_max_ms, "backoff_max_ms", &max, err) ||
        norm_zero(o->retry_after_max_ms, "retry_after_max_ms", &ra_max, err))
        return SLUICE_EINVAL;
    if (o->jitter != SLUICE_JITTER_FULL && o->jitter != SLUICE_JITTER_EQUAL &&
        o->jitter != SLUICE_JITTER_NONE)
        return sl_err(err, SLUICE_EINVAL, "retry option jitter has no kind %d", (int)o->jitter);
    p->backoff_factor_ns = factor * NS_PER_MS;
    p->backoff_max_ns = max * NS_PER_MS;
    p->retry_after_max_ns = ra_max * NS_PER_MS;
    p->jitter = o->jitter;
    p->budget_ratio_pct = o->budget_ratio_pct;
    p->budget_window_ms = o->budget_window_ms;
    p->budget_min_per_sec = o->budget_min_per_sec;
    return norm_budget(&p->budget_ratio_pct, &p->budget_window_ms, &p->budget_min_per_sec, err);
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

static int copy_statuses(sl_retry_policy *p, const sluice_retry_opts *o, sluice_error *err)
{
    const int *src = o->retry_statuses;
    size_t n = o->nretry_statuses, i, out = 0;

    if (n == 0) {
        src = default_statuses;
        n = sizeof default_statuses / sizeof default_statuses[0];
    } else if (!src) {
        return sl_err(err, SLUICE_EINVAL, "retry option retry_statuses is NULL with %zu entries",
                      n);
    }
    for (i = 0; i < n; i++)
        if (src[i] < 100 || src[i] > 599)
            return sl_err(err, SLUICE_EINVAL, "retry status %d is not an HTTP status", src[i]);
    p->statuses = sl_malloc(n * sizeof *p->statuses);
    if (!p->statuses)
        return sl_err(err, SLUICE_ENOMEM, "out of memory copying %zu retry statuses", n);
    memcpy(p->statuses, src, n * sizeof *src);
    qsort(p->statuses, n, sizeof *p->statuses, cmp_int);
    for (i = 0; i < n; i++)
        if (out == 0 || p->statuses[out - 1] != p->statuses[i])
            p->statuses[out++] = p->statuses[i];
    p->nstatuses = out;
    return 0;
}

/* RFC 9110 tchar: what a method token may hold. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return 0;
    return 1;
}

static char *upper_dup(const char *m)
{
    char *u = sl_strdup(m), *c;

    for (c = u; c && *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    return u;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts and drops duplicates so equal sets compare equal. */
static void sort_methods(char **m, size_t n)
{
    size_t i, out = 0;

    qsort(m, n, sizeof *m, cmp_str);
    for (i = 0; i < n; i++) {
        if (out > 0 && strcmp(m[out - 1], m[i]) == 0)
            sl_free(m[i]);
        else
            m[out++] = m[i];
    }
    m[out] = NULL;
}

static int copy_methods(sl_retry_policy *p, const char *const *src, sluice_error *err)
{
    size_t n, i;

    if (!src)
        src = default_methods;
    for (n = 0; src[n]; n++)
        if (!is_token(src[n]))
            return sl_err(err, SLUICE_EINVAL, "retry method \"%.64s\" is not an HTTP token",
                          src[n]);
    p->methods = sl_calloc(n + 1, sizeof *p->methods);
    if (!p->methods)
        return sl_err(err, SLUICE_ENOMEM, "out of memory copying %zu retry methods", n);
    for (i = 0; i < n; i++)
        if (!(p->methods[i] = upper_dup(src[i])))
            return sl_err(err, SLUICE_ENOMEM, "out of memory copying retry method %s", src[i]);
    sort_methods(p->methods, n);
    return 0;
}

int sl_retry_policy_init(sl_retry_policy *p, const sluice_retry_opts *o, sluice_error *err)
{
    sluice_retry_opts defaults;
    int rc;

    if (!p)
        return sl_err(err, SLUICE_EINVAL, "retry policy: NULL policy");
    memset(p, 0, sizeof *p);
    if (!o) {
        sl_retry_opts_defaults(&defaults);
        o = &defaults;
    }
    rc = norm_scalars(p, o, err);
    if (rc == 0)
        rc = copy_statuses(p, o, err);
    if (rc == 0)
        rc = copy_methods(p, o->retry_methods, err);
    if (rc != 0)
        sl_retry_policy_free(p);
    return rc;
}

void sl_retry_policy_free(sl_retry_policy *p)
{
    size_t i;

    if (!p)
        return;
    for (i = 0; p->methods && p->methods[i]; i++)
        sl_free(p->methods[i]);
    sl_free(p->methods);
    sl_free(p->statuses);
    memset(p, 0, sizeof *p);
}

int sl_retry_status_retryable(const sl_retry_policy *p, int status)
{
    if (!p || p->nstatuses == 0)
        return 0;
    return bsearch(&status, p->statuses, p->nstatuses, sizeof *p->statuses, cmp_int) != NULL;
}

int sl_retry_method_allowed(const sl_retry_policy *p, const char *method, unsigned flags)
{
    size_t i;

    if (flags & SLUICE_REQ_IDEMPOTENT)
        return 1;
    if (!p || !p->methods)
        return 0;
    if (!method)
        method = "GET";
    for (i = 0; p->methods[i]; i++)
        if (strcasecmp(p->methods[i], method) == 0)
            return 1;
    return 0;
}

/* min(max, factor * 2^(n-1)) without overflow. */
static int64_t backoff_base(const sl_retry_policy *p, int n)
{
    int shift = n - 1;

    if (!p || n < 1 || p->backoff_factor_ns <= 0)
        return 0;
    if (shift >= 62 || p->backoff_factor_ns > (p->backoff_max_ns >> shift))
        return p->backoff_max_ns;
    return p->backoff_factor_ns << shift;
}

int64_t sl_retry_backoff_ns(const sl_retry_policy *p, int n)
{
    int64_t base = backoff_base(p, n), half = base / 2;

    if (base == 0)
        return 0;
    switch (p->jitter) {
    case SLUICE_JITTER_NONE:
        return base;
    case SLUICE_JITTER_EQUAL:
        return half + (int64_t)sl_rand_below((uint64_t)(base - half) + 1);
    case SLUICE_JITTER_FULL:
    default:
        return (int64_t)sl_rand_below((uint64_t)base + 1);
    }
}

int sl_retry_after_applies(int status)
{
    return status == 413 || status == 429 || status == 503;
}

/* ------------------------------------------------------------------------ */
/* Retry-After (RFC 9110 10.2.3 and 5.6.7)                                  */
/* ------------------------------------------------------------------------ */

/* RFC 9111 1.2.2: delta-seconds past 2^31 are taken as 2^31. */
#define RA_CAP_S 2147483648LL

static const char *const day_short[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const day_long[] = {"Monday", "Tuesday", "Wednesday", "Thursday",
                                       "Friday", "Saturday", "Sunday"};
static const char *const month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* A cursor over the value; every take_* consumes only on a match. */
typedef struct scan {
    const char *p, *end;
} scan;

/* A broken-down UTC time as the three date forms spell it. */
typedef struct civil {
    int64_t year;
    int month, day, hour, min, sec;
} civil;

static int take(scan *s, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

static int take_digits(scan *s, int n, int *out)
{
    int v = 0, i;

    if (s->end - s->p < n)
        return 0;
    for (i = 0; i < n; i++) {
        if (s->p[i] < '0' || s->p[i] > '9')
            return 0;
        v = v * 10 + (s->p[i] - '0');
    }
    s->p += n;
    *out = v;
    return 1;
}

/* The index of the name matched (1-based), or 0. */
static int take_name(scan *s, const char *const *names, int count)
{
    int i;

    for (i = 0; i < count; i++)
        if (take(s, names[i]))
            return i + 1;
    return 0;
}

/* hour ":" minute ":" second, 00:00:00 to 23:59:60 (a leap second). */
static int take_time(scan *s, civil *c)
{
    return take_digits(s, 2, &c->hour) && take(s, ":") && take_digits(s, 2, &c->min) &&
           take(s, ":") && take_digits(s, 2, &c->sec) && c->hour <= 23 && c->min <= 59 &&
           c->sec <= 60;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" */
static int parse_imf(scan s, civil *c)
{
    int year;

    if (!(take_name(&s, day_short, 7) && take(&s, ", ") && take_digits(&s, 2, &c->day) &&
          take(&s, " ") && (c->month = take_name(&s, month_names, 12)) && take(&s, " ") &&
          take_digits(&s, 4, &year) && take(&s, " ") && take_time(&s, c) && take(&s, " GMT")))
        return 0;
    c->year = year;
    return s.p == s.end;
}

/* "Sunday, 06-Nov-94 08:49:37 GMT"; the century is placed later. */
static int parse_rfc850(scan s, civil *c)
{
    int yy;

    if (!(take_name(&s, day_long, 7) && take(&s, ", ") && take_digits(&s, 2, &c->day) &&
          take(&s, "-") && (c->month = take_name(&s, month_names, 12)) && take(&s, "-") &&
          take_digits(&s, 2, &yy) && take(&s, " ") && take_time(&s, c) && take(&s, " GMT")))
        return 0;
    c->year = yy;
    return s.p == s.end;
}

/* "Sun Nov  6 08:49:37 1994" (the day as 2DIGIT or SP DIGIT). */
static int parse_asctime(scan s, civil *c)
{
    int year;

    if (!(take_name(&s, day_short, 7) && take(&s, " ") &&
          (c->month = take_name(&s, month_names, 12)) && take(&s, " ")))
        return 0;
    if (!(take_digits(&s, 2, &c->day) || (take(&s, " ") && take_digits(&s, 1, &c->day))))
        return 0;
    if (!(take(&s, " ") && take_time(&s, c) && take(&s, " ") && take_digits(&s, 4, &year)))
        return 0;
    c->year = year;
    return s.p == s.end;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): no timegm, so no dependence on TZ or locale. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = floor_div(y, 400);
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The year holding a day counted as days_from_civil counts. */
static int64_t year_of_day(int64_t z)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    return yoe + era * 400 + (mp >= 10);
}

static int days_in_month(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

/* RFC 9110 5.6.7: a two-digit year more than 50 years ahead is the most
 * recent past year with those digits; so the year lands in (now-50, now+50]. */
static int64_t place_two_digit_year(int yy, int64_t now_wall_ms)
{
    int64_t now_year = year_of_day(floor_div(now_wall_ms, 86400000));
    int64_t year = now_year - (now_year % 100 + 100) % 100 + yy;

    if (year > now_year + 50)
        year -= 100;
    else if (year <= now_year - 50)
        year += 100;
    return year;
}

/* Milliseconds from now until the date (0 if past), capped at RA_CAP_S. */
static int64_t ms_until(const civil *c, int64_t now_wall_ms)
{
    int64_t date_s, now_s, now_rem_ms, diff_s;

    if (c->day < 1 || c->day > days_in_month(c->year, c->month))
        return -1;
    date_s = days_from_civil(c->year, c->month, c->day) * 86400 + c->hour * 3600 + c->min * 60 +
             c->sec;
    /* Whole seconds and a remainder, so no step can overflow even for
     * the most extreme clock. */
    now_s = floor_div(now_wall_ms, 1000);
    now_rem_ms = now_wall_ms % 1000;
    if (now_rem_ms < 0)
        now_rem_ms += 1000;
    diff_s = date_s - now_s;
    if (diff_s <= 0)
        return 0;
    if (diff_s > RA_CAP_S)
        return RA_CAP_S * 1000;
    return diff_s * 1000 - now_rem_ms;
}

static int64_t parse_delta_seconds(scan s)
{
    int64_t v = 0;

    for (; s.p < s.end; s.p++) {
        if (*s.p < '0' || *s.p > '9')
            return -1;
        v = v * 10 + (*s.p - '0');
        if (v > RA_CAP_S)
            v = RA_CAP_S;   /* saturate; keep checking the digits */
    }
    return v * 1000;
}

int64_t sl_retry_after_parse_ms(const char *value, int64_t now_wall_ms)
{
    scan s;
    civil c;

    if (!value)
        return -1;
    s.p = value;
    s.end = value + strlen(value);
    while (s.p < s.end && (*s.p == ' ' || *s.p == '\t'))
        s.p++;
    while (s.end > s.p && (s.end[-1] == ' ' || s.end[-1] == '\t'))
        s.end--;
    if (s.p == s.end)
        return -1;
    if (*s.p >= '0' && *s.p <= '9')
        return parse_delta_seconds(s);
    if (parse_imf(s, &c) || parse_asctime(s, &c))
        return ms_until(&c, now_wall_ms);
    if (parse_rfc850(s, &c)) {
        c.year = place_two_digit_year((int)c.year, now_wall_ms);
        return ms_until(&c, now_wall_ms);
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Retry budget                                                             */
/* ------------------------------------------------------------------------ */

#define BUDGET_BUCKETS 10

/* Each bucket counter is one 64-bit word, (bucket number mod 2^32) << 32 |
 * count, so moving a bucket on to a new period and counting in it is one
 * compare-and-swap: no count is ever lost to a reset. */
struct sl_retry_budget {
    int unlimited;
    int ratio_pct;
    int64_t bucket_ns;
    int64_t floor_x100;     /* retries always allowed per window, times 100 */
    _Atomic uint64_t requests[BUDGET_BUCKETS];
    _Atomic uint64_t retries[BUDGET_BUCKETS];
};

sl_retry_budget *sl_retry_budget_new(int ratio_pct, int window_ms, int min_per_sec)
{
    sl_retry_budget *b;
    int i;

    if (norm_budget(&ratio_pct, &window_ms, &min_per_sec, NULL) != 0)
        return NULL;
    b = sl_calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->unlimited = ratio_pct == SLUICE_OFF;
    b->ratio_pct = ratio_pct;
    b->bucket_ns = (int64_t)window_ms * NS_PER_MS / BUDGET_BUCKETS;
    b->floor_x100 = min_per_sec == SLUICE_OFF ? 0 : (int64_t)min_per_sec * window_ms / 10;
    for (i = 0; i < BUDGET_BUCKETS; i++) {
        atomic_init(&b->requests[i], 0);
        atomic_init(&b->retries[i], 0);
    }
    return b;
}

void sl_retry_budget_free(sl_retry_budget *b)
{
    sl_free(b);
}

static uint64_t bucket_of(const sl_retry_budget *b, int64_t now_ns)
{
    return (uint64_t)floor_div(now_ns, b->bucket_ns);
}

/* The word after counting one more in `bucket`, or `w` itself when the
 * count is saturated. */
static uint64_t counted(uint64_t w, uint64_t bucket)
{
    uint32_t tag = (uint32_t)bucket;

    if ((uint32_t)(w >> 32) != tag)
        return (uint64_t)tag << 32 | 1;
    if ((uint32_t)w == UINT32_MAX)
        return w;
    return w + 1;
}

/* The sum over the buckets that are still inside the window. */
static uint64_t window_sum(_Atomic uint64_t *words, uint64_t bucket)
{
    uint64_t sum = 0;
    int i;

    for (i = 0; i < BUDGET_BUCKETS; i++) {
        uint64_t w = atomic_load_explicit(&words[i], memory_order_relaxed);
        if ((uint32_t)((uint32_t)bucket - (uint32_t)(w >> 32)) < BUDGET_BUCKETS)
            sum += (uint32_t)w;
    }
    return sum;
}

void sl_retry_budget_note_request(sl_retry_budget *b, int64_t now_ns)
{
    uint64_t bucket, old;
    _Atomic uint64_t *w;

    if (!b || b->unlimited)
        return;
    bucket = bucket_of(b, now_ns);
    w = &b->requests[bucket % BUDGET_BUCKETS];
    old = atomic_load_explicit(w, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(w, &old, counted(old, bucket),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

int sl_retry_budget_spend(sl_retry_budget *b, int64_t now_ns)
{
    uint64_t bucket, old, spent, reqs;
    _Atomic uint64_t *w;

    if (!b || b->unlimited)
        return 1;
    bucket = bucket_of(b, now_ns);
    w = &b->retries[bucket % BUDGET_BUCKETS];
    old = atomic_load_explicit(w, memory_order_relaxed);
    for (;;) {
        /* The CAS below fails if any spender counted since `old` was read,
         * so the check and the count act as one step. */
        spent = window_sum(b->retries, bucket);
        reqs = window_sum(b->requests, bucket);
        if ((spent + 1) * 100 > reqs * (uint64_t)b->ratio_pct + (uint64_t)b->floor_x100)
            return 0;
        if (atomic_compare_exchange_weak_explicit(w, &old, counted(old, bucket),
                                                  memory_order_relaxed, memory_order_relaxed))
            return 1;
    }
}
