/* Retry policy: which outcomes retry, how long to back off, Retry-After,
 * and the retry budget that stops retry storms.
 *
 * A policy is immutable once initialised: any number of threads may read
 * one at once.  The budget is the only shared mutable state here, and it
 * is lock-free.  Nothing in this module sleeps; the caller does. */
#ifndef SL_RETRY_H
#define SL_RETRY_H

#include <stdint.h>

#include "sluice.h"

/* A normalised, owned copy of sluice_retry_opts (defaults applied). */
typedef struct sl_retry_policy {
    int max_retries;            /* 0 = none */
    int *statuses;              /* sorted, no duplicates */
    size_t nstatuses;
    char **methods;             /* NULL-terminated, upper-case, sorted, no duplicates */
    int64_t backoff_factor_ns;
    int64_t backoff_max_ns;
    sluice_jitter jitter;
    int64_t retry_after_max_ns; /* 0 = Retry-After is not honoured */
    /* The budget's settings, normalised as sl_retry_budget_new() reads
     * them: pass them on unchanged. */
    int budget_ratio_pct;       /* SLUICE_OFF = no budget */
    int budget_window_ms;
    int budget_min_per_sec;     /* SLUICE_OFF = no floor */
} sl_retry_policy;

/* Writes every field's default into `o` (sluice_client_opts_init uses it). */
void sl_retry_opts_defaults(sluice_retry_opts *o);

/* Fills `p` from `o` (NULL = every default).  0 is a real value for
 * max_retries (none), backoff_factor_ms and backoff_max_ms (no sleep) and
 * retry_after_max_ms (ignore Retry-After); SLUICE_OFF means the same.
 * The budget's fields take their defaults at 0; SLUICE_OFF means
 * budget_ratio_pct no budget, budget_min_per_sec no floor.  An empty (but
 * non-NULL) retry_methods list retries no method unless the request says
 * SLUICE_REQ_IDEMPOTENT.  SLUICE_EINVAL names the bad field; SLUICE_ENOMEM.
 * On failure `p` holds nothing to free (sl_retry_policy_free is still
 * safe). */
int sl_retry_policy_init(sl_retry_policy *p, const sluice_retry_opts *o, sluice_error *err);
/* Releases what init allocated; NULL or a zeroed policy is a no-op. */
void sl_retry_policy_free(sl_retry_policy *p);

/* The query functions below take a NULL or zeroed policy as "retry
 * nothing" (0), so a caller never crashes on a policy that failed init. */

/* 1 if the status is one the policy retries. */
int sl_retry_status_retryable(const sl_retry_policy *p, int status);
/* 1 if the method may be retried (SLUICE_REQ_IDEMPOTENT in flags says yes;
 * NULL means GET; compared case-insensitively). */
int sl_retry_method_allowed(const sl_retry_policy *p, const char *method, unsigned flags);
/* The sleep before retry number n (1-based), jittered as configured:
 * base = min(backoff_max, factor * 2^(n-1)); full jitter is uniform in
 * [0, base], equal jitter base/2 + uniform in [0, base/2].  0 for n < 1.
 * Uses the thread-local random source: no lock. */
int64_t sl_retry_backoff_ns(const sl_retry_policy *p, int n);
/* 1 when a status's Retry-After is honoured (413, 429, 503). */
int sl_retry_after_applies(int status);

/* Parses a Retry-After value: delta-seconds or an IMF-fixdate (also the
 * obsolete RFC 850 and asctime forms).  Returns milliseconds from now
 * (0 for a date in the past), or -1 when the value is invalid.
 * Surrounding spaces and tabs are ignored; anything else outside the
 * grammar (signs, fractions, wrong case, impossible dates) is invalid.
 * Names are case-sensitive as RFC 9110 writes them; the day name is
 * checked for spelling, not against the date.  Results are capped at
 * 2^31 seconds (RFC 9111's cap for delta-seconds); the caller applies its
 * own retry_after_max.  `now_wall_ms` is the wall clock (sl_wall_ms()); it
 * also places an RFC 850 two-digit year.  Pure: thread-safe. */
int64_t sl_retry_after_parse_ms(const char *value, int64_t now_wall_ms);

/* The retry budget: retries may be at most ratio_pct of requests over
 * window_ms, with min_per_sec always allowed.  Thread-safe, no lock on the
 * hot path beyond atomics.
 *
 * The window is ten buckets of window_ms / 10 (the current one partly
 * filled); the oldest slides out in one step.  A spend succeeds only if,
 * counting it, retries in the window <= ratio_pct% of requests in the
 * window + min_per_sec * window_ms / 1000.  Callers whose now_ns values
 * fall in one bucket are counted exactly; callers racing across a bucket
 * boundary may overshoot by one retry each. */
typedef struct sl_retry_budget sl_retry_budget;
/* Arguments as in sl_retry_policy (0 = default; ratio_pct SLUICE_OFF = no
 * budget: spend always succeeds; min_per_sec SLUICE_OFF = no floor).
 * Returns NULL when out of memory, or when an argument is out of range
 * (sl_retry_policy_init rejects those with a message first). */
sl_retry_budget *sl_retry_budget_new(int ratio_pct, int window_ms, int min_per_sec);
void sl_retry_budget_free(sl_retry_budget *b);
/* Counts one request (a first attempt, not a retry).  NULL is a no-op. */
void sl_retry_budget_note_request(sl_retry_budget *b, int64_t now_ns);
/* 1 and the retry is counted, or 0 when the budget is spent.  NULL: 1. */
int sl_retry_budget_spend(sl_retry_budget *b, int64_t now_ns);

#endif
