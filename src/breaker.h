/* Circuit breaker, one per (client, endpoint).  Thread-safe; its own small
 * mutex, never held across I/O or the state-change hook.
 *
 * CLOSED opens after failure_threshold consecutive failures, or when the
 * last window_size calls hold at least min_calls and a failure rate >=
 * failure_rate_pct.  OPEN fails calls at once until recovery_timeout_ms
 * has passed since it opened; then HALF_OPEN has half_open_probes slots:
 * a probe holds one while in flight and keeps it when it succeeds, so at
 * most that many probes run, and when that many have succeeded the
 * breaker closes (counters and window reset).  A probe failure opens it
 * again with a new timer.  Outcomes of non-probe calls recorded while it
 * is not CLOSED are ignored (those calls were allowed before it opened).
 * The OPEN -> HALF_OPEN step happens in the first allow() or state() at
 * or after the timeout.
 *
 * Hooks: each transition calls on_state_change once (and logs at info).
 * For one breaker the hook calls run one at a time, in transition order,
 * and never with the breaker's lock held, so a hook may call any
 * sl_breaker_* function on it.  The thread whose call made a transition
 * runs its hook before that call returns, unless another thread is
 * already running this breaker's hooks (or the hook itself made the
 * transition): then that thread runs it after the earlier ones, and the
 * call may return first.  Only if memory to queue a transition runs out
 * is its hook call skipped (logged as a warning); the order holds.
 *
 * Time is always passed in (monotonic ns), so tests drive it.  A NULL
 * breaker, like a disabled one, allows everything and records nothing.
 * Costs on the hot path: allow() on a closed breaker is one atomic load;
 * record() is one short mutex section; neither allocates. */
#ifndef SL_BREAKER_H
#define SL_BREAKER_H

#include <stdint.h>

#include "sluice.h"

typedef struct sl_breaker sl_breaker;

/* Writes every field's default into `o` (sluice_client_opts_init uses
 * it).  A zero field means the same default: no breaker count is
 * meaningful at 0. */
void sl_breaker_opts_defaults(sluice_breaker_opts *o);

/* `in` with its zero fields replaced by the defaults they stand for, so
 * two option sets that behave alike compare alike. */
void sl_breaker_opts_effective(const sluice_breaker_opts *in, sluice_breaker_opts *out);

/* Copies the options and the names (used for the hook and messages; NULL
 * is taken as "").  `o` NULL means every default; zero fields take their
 * defaults; SLUICE_OFF turns failure_threshold or failure_rate_pct off
 * and makes min_calls 1; min_calls above window_size is lowered to it.
 * Returns NULL with err set: SLUICE_EINVAL naming the bad field, or
 * SLUICE_ENOMEM. */
sl_breaker *sl_breaker_new(const sluice_breaker_opts *o, const char *service,
                           const char *endpoint, sluice_error *err);
void sl_breaker_free(sl_breaker *b);

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
