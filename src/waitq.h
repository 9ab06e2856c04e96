/* The queue callers wait in for capacity: the pool's checkout and the
 * client's bulkhead (max_in_flight) use it, and so may any other limit on
 * calls at once, so that waiting above the pool costs what waiting in it
 * costs.
 *
 * Contract:
 *  - The owner's lock guards the queue; sl_waitq_* run with it held,
 *    sl_waiter_sleep without it.
 *  - Order: waiters are served in arrival order (the owner's dispatch walks
 *    from the head).
 *  - Bounded barging: capacity freed while the oldest waiter has waited
 *    less than the queue's bound stays free, and the next caller (most
 *    often the thread that freed it, coming straight back) takes it
 *    without sleeping or waking anyone.  Once the oldest waiter has waited
 *    the bound, nobody barges: freed capacity goes to waiters, oldest
 *    first.  The oldest waiter sleeps with a timer ("armed") from when it
 *    is the head or when capacity is left free while it is
 *    (sl_waitq_watch): it wakes when its bound passes, and also every
 *    SL_WAITQ_POLL_NS before that, taking what capacity is free then.  So
 *    capacity that nobody came back for is never kept from a waiter for
 *    more than about a millisecond, while a thread that frees capacity
 *    and asks again at once (within microseconds) still keeps it.  The others sleep
 *    to their deadlines, so a thread's wait costs no wake-up of its own
 *    but the one that serves it.  Bound 0 is strict first come, first
 *    served.
 *  - A waiter is finished (granted, closed, timed out) under the lock; a
 *    granted waiter reads what it was given without taking the lock again.
 *  - The wait histogram counts waits with relaxed atomics, so it may be
 *    filled outside any lock.
 */
#ifndef SL_WAITQ_H
#define SL_WAITQ_H

#include <stdatomic.h>
#include <stdint.h>

/* The default bound, chosen by measurement (README, "Pool fairness"):
 * against a fast upstream a hand-off to a sleeping thread costs a context
 * switch and two futex calls per request, and the share of requests that
 * pay it is about (waiting threads / bound) / requests per second; 20 ms
 * keeps 64 threads on 8 loopback connections within 0.9x of 8 on 8 (1 ms:
 * 0.4x, 5 ms: 0.65x, 50 ms: 0.93x).  A request to a slower upstream holds
 * its connection longer, so the queue serves in strict order there. */
#define SL_WAITQ_BOUND_NS (20 * 1000000LL)

/* How often the armed head looks for capacity left free: a wake-up a
 * millisecond for one thread a queue, against a hand-off per request. */
#define SL_WAITQ_POLL_NS (1000000LL)

typedef struct sl_waiter {
    struct sl_waiter *prev, *next;
    int64_t since;                /* when it queued (monotonic ns) */
    int state;                    /* the owner's, set before `done` */
    _Atomic int armed;            /* sleeps with the bound's timer (written under the lock) */
    _Atomic uint32_t done;        /* 0 waiting, 1 finished, 2 to arm (a futex word) */
} sl_waiter;

typedef struct sl_waitq {
    sl_waiter *head, *tail;
    int n;
    int64_t bound_ns;
} sl_waitq;

void sl_waitq_init(sl_waitq *q, int64_t bound_ns);
void sl_waitq_push(sl_waitq *q, sl_waiter *w, int64_t now);
void sl_waitq_remove(sl_waitq *q, sl_waiter *w);

/* 1 when the oldest waiter has waited the bound: freed capacity must go to
 * the queue now, and no newcomer may take free capacity. */
int sl_waitq_due(const sl_waitq *q, int64_t now);

/* Dequeues `w` with `state` and wakes it. */
void sl_waitq_finish(sl_waitq *q, sl_waiter *w, int state);

/* Capacity is free while waiters sleep: makes sure the oldest one sleeps
 * armed (waking it to arm its timer if it is not). */
void sl_waitq_watch(sl_waitq *q);

/* Why sl_waiter_sleep returned. */
enum { SL_WAKE_DONE, SL_WAKE_DUE, SL_WAKE_DEADLINE, SL_WAKE_ARM, SL_WAKE_POLL };

/* Under the lock, right before releasing it to sleep: arms the head. */
void sl_waiter_prepare(sl_waitq *q, sl_waiter *w);

/* Sleeps, without the owner's lock, until `w` is finished (SL_WAKE_DONE),
 * its bound passes while armed (SL_WAKE_DUE, once: the owner then
 * dispatches, under its lock, what free capacity there is), its poll
 * timer fires while armed (SL_WAKE_POLL: the owner dispatches as for
 * SL_WAKE_DUE, and the waiter stays armed), it is to arm (SL_WAKE_ARM: the
 * owner just prepares and sleeps again) or `deadline` passes
 * (SL_WAKE_DEADLINE).  `*due_seen` starts 0. */
int sl_waiter_sleep(const sl_waitq *q, sl_waiter *w, int64_t deadline, int *due_seen);

/* 1 once `w` was finished; its state may then be read without the lock. */
int sl_waiter_done(sl_waiter *w);

/* ---- the wait histogram -------------------------------------------------- */

/* Waits in microseconds, four buckets per power of two (within 25%). */
#define SL_WAIT_BUCKETS 144

typedef struct sl_wait_hist {
    _Atomic uint64_t n, max_us;
    _Atomic uint64_t b[SL_WAIT_BUCKETS];
} sl_wait_hist;

void sl_wait_hist_add(sl_wait_hist *h, uint64_t us);
/* to += from (both may be in use). */
void sl_wait_hist_merge(sl_wait_hist *to, const sl_wait_hist *from);
/* The q-quantile (0 < q <= 1) in microseconds: the top of its bucket, never
 * above the largest wait seen; 0 when empty. */
uint64_t sl_wait_hist_quantile(const sl_wait_hist *h, double q);

#endif
