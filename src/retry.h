/* Retry policy: which outcomes retry, how long to back off, Retry-After,
 * and the retry budget that stops retry storms. */
#ifndef SL_RETRY_H
#define SL_RETRY_H

#include <stdint.h>

#include "sluice.h"

/* A normalised, owned copy of sluice_retry_opts (defaults applied). */
typedef struct sl_retry_policy {
    int max_retries;            /* 0 = none */
    int *statuses;
    size_t nstatuses;
    char **methods;             /* NULL-terminated, upper-case */
    int64_t backoff_factor_ns;
    int64_t backoff_max_ns;
    sluice_jitter jitter;
    int64_t retry_after_max_ns;
} sl_retry_policy;

int sl_retry_policy_init(sl_retry_policy *p, const sluice_retry_opts *o, sluice_error *err);
void sl_retry_policy_free(sl_retry_policy *p);
/* 1 if the two option sets normalise to the same policy. */
int sl_retry_policy_equal(const sl_retry_policy *a, const sl_retry_policy *b);

int sl_retry_status_retryable(const sl_retry_policy *p, int status);
/* 1 if the method may be retried (SLUICE_REQ_IDEMPOTENT in flags says yes). */
int sl_retry_method_allowed(const sl_retry_policy *p, const char *method, unsigned flags);
/* The sleep before retry number n (1-based), jittered as configured. */
int64_t sl_retry_backoff_ns(const sl_retry_policy *p, int n);
/* 1 when a status's Retry-After is honoured (413, 429, 503). */
int sl_retry_after_applies(int status);

/* Parses a Retry-After value: delta-seconds or an IMF-fixdate (also the
 * obsolete RFC 850 and asctime forms).  Returns milliseconds from now
 * (0 for a date in the past), or -1 when the value is invalid. */
int64_t sl_retry_after_parse_ms(const char *value, int64_t now_wall_ms);

/* The retry budget: retries may be at most ratio_pct of requests over
 * window_ms, with min_per_sec always allowed.  Thread-safe, no lock on the
 * hot path beyond atomics. */
typedef struct sl_retry_budget sl_retry_budget;
sl_retry_budget *sl_retry_budget_new(int ratio_pct, int window_ms, int min_per_sec);
void sl_retry_budget_free(sl_retry_budget *b);
void sl_retry_budget_note_request(sl_retry_budget *b, int64_t now_ns);
/* 1 and the retry is counted, or 0 when the budget is spent. */
int sl_retry_budget_spend(sl_retry_budget *b, int64_t now_ns);

#endif
