/* Linux futex words, and the small lock built on them that the
 * coalescer's stripes use.
 *
 * pthread_mutex_lock and _unlock cost about 60 instructions a pair through
 * glibc's type dispatch; the lock below costs one atomic instruction each
 * way when nobody waits, which matters where every coalescible call takes
 * a lock twice.  It is the three-state lock of Drepper's "Futexes Are
 * Tricky": 0 free, 1 held, 2 held with sleepers.  Use pthread mutexes
 * everywhere else: this one has no owner, no error checking and no
 * condition variables.
 *
 * The words are process-private (FUTEX_PRIVATE_FLAG). */
#ifndef SL_FUTEX_H
#define SL_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

/* Sleeps while *word == val, until woken, interrupted or `deadline` (an
 * absolute CLOCK_MONOTONIC time; SL_NO_DEADLINE for none).  Returns 1 on
 * timeout, else 0: callers recheck their condition either way. */
int sl_futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t deadline);
/* Wakes up to n sleepers on the word (INT_MAX: all). */
void sl_futex_wake(_Atomic uint32_t *word, int n);

typedef struct sl_lock {
    _Atomic uint32_t state;      /* 0 free, 1 held, 2 held and contended */
} sl_lock;

void sl_lock_slow(sl_lock *l);

/* Zero-initialised memory is an unlocked lock too. */
static inline void sl_lock_init(sl_lock *l)
{
    atomic_init(&l->state, 0);
}

static inline void sl_lock_acquire(sl_lock *l)
{
    uint32_t free = 0;

    if (!atomic_compare_exchange_strong_explicit(&l->state, &free, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        sl_lock_slow(l);
}

static inline void sl_lock_release(sl_lock *l)
{
    if (atomic_exchange_explicit(&l->state, 0, memory_order_release) == 2)
        sl_futex_wake(&l->state, 1);
}

#endif
