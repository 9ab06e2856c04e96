/* Monotonic time and deadlines.  A deadline is an absolute CLOCK_MONOTONIC
 * time in nanoseconds; SL_NO_DEADLINE means none. */
#ifndef SL_CLOCK_H
#define SL_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define SL_NO_DEADLINE INT64_MAX

int64_t sl_now_ns(void);        /* CLOCK_MONOTONIC */
int64_t sl_wall_ms(void);       /* CLOCK_REALTIME, milliseconds since the epoch */

/* now + ms; ms < 0 means no deadline. */
int64_t sl_deadline_in_ms(int ms);

/* Milliseconds left until `deadline`, rounded up, 0 if past, -1 if none;
 * the form poll() takes. */
int sl_ms_left(int64_t deadline);

/* The earlier of two deadlines. */
static inline int64_t sl_deadline_min(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Initialises a condition variable that waits on CLOCK_MONOTONIC, so the
 * timespecs below mean what they say.  Returns 0 or the errno value of the
 * pthread call that failed (attribute set-up included); sl_cond_init in
 * sync.h wraps it with an error message. */
int sl_cond_init_monotonic(pthread_cond_t *c);

/* A CLOCK_MONOTONIC timespec for pthread_cond_timedwait on a condition
 * variable made by sl_cond_init_monotonic(). */
struct timespec sl_deadline_timespec(int64_t deadline);

/* Sleeps until `deadline` (returns early never; at once if past). */
void sl_sleep_until(int64_t deadline);

/* A fast thread-local xorshift random number; seeded per thread. */
uint64_t sl_rand64(void);
/* Uniform in [0, n); 0 when n == 0. */
uint64_t sl_rand_below(uint64_t n);

#endif
