/* Circuit breaker, one per (client, endpoint).  Thread-safe; its own small
 * mutex, never held across I/O or the state-change hook. */
#ifndef SL_BREAKER_H
#define SL_BREAKER_H

#include <stdint.h>

#include "sluice.h"

typedef struct sl_breaker sl_breaker;

/* Copies the options and the names (used for the hook and messages).
 * Returns NULL on ENOMEM with err set. */
sl_breaker *sl_breaker_new(const sluice_breaker_opts *o, const char *service,
                           const char *endpoint, sluice_error *err);
void sl_breaker_free(sl_breaker *b);
/* 1 if two option sets normalise the same. */
int sl_breaker_opts_equal(const sluice_breaker_opts *a, const sluice_breaker_opts *b);

/* Asks to make a call.  0: go ahead (*probe = 1 when it is a half-open
 * probe); SLUICE_ECIRCUITOPEN (err says which service and endpoint and when
 * it retries) when open or when half-open probes are all taken. */
int sl_breaker_allow(sl_breaker *b, int64_t now_ns, int *probe, sluice_error *err);
/* Records the outcome of an allowed call.  failure = a 5xx or a transport
 * error; 4xx counts as success. */
void sl_breaker_record(sl_breaker *b, int probe, int failure, int64_t now_ns);
/* Gives a probe slot back without an outcome (the call never reached the
 * network, e.g. rate limited). */
void sl_breaker_release(sl_breaker *b, int probe);

sluice_breaker_state sl_breaker_state(sl_breaker *b, int64_t now_ns);
uint64_t sl_breaker_transitions(sl_breaker *b);

#endif
