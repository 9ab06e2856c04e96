/* Futex words and the three-state lock (see futex.h). */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "futex.h"

int sl_futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t deadline)
{
    struct timespec ts;
    long rc;

    /* With the bitset form the time is absolute, on CLOCK_MONOTONIC. */
    if (deadline != SL_NO_DEADLINE)
        ts = sl_deadline_timespec(deadline);
    rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val,
                 deadline == SL_NO_DEADLINE ? NULL : &ts, NULL, FUTEX_BITSET_MATCH_ANY);

    return rc != 0 && errno == ETIMEDOUT;
}

void sl_futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}

/* Contended: mark the lock as having sleepers and sleep until it is
 * released, taking it marked (a later release then wakes the next one). */
void sl_lock_slow(sl_lock *l)
{
    while (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) != 0)
        sl_futex_wait(&l->state, 2, SL_NO_DEADLINE);
}
