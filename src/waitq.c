/* The waiter queue and the wait histogram (see waitq.h). */
#include <stddef.h>

#include "clock.h"
#include "futex.h"
#include "waitq.h"

void sl_waitq_init(sl_waitq *q, int64_t bound_ns)
{
    q->head = q->tail = NULL;
    q->n = 0;
    q->bound_ns = bound_ns < 0 ? 0 : bound_ns;
}

void sl_waitq_push(sl_waitq *q, sl_waiter *w, int64_t now)
{
    w->since = now;
    w->state = 0;
    atomic_store_explicit(&w->armed, 0, memory_order_relaxed);
    atomic_store_explicit(&w->done, 0, memory_order_relaxed);
    w->next = NULL;
    w->prev = q->tail;
    *(q->tail ? &q->tail->next : &q->head) = w;
    q->tail = w;
    q->n++;
}

void sl_waitq_remove(sl_waitq *q, sl_waiter *w)
{
    *(w->prev ? &w->prev->next : &q->head) = w->next;
    *(w->next ? &w->next->prev : &q->tail) = w->prev;
    w->prev = w->next = NULL;
    q->n--;
}

int sl_waitq_due(const sl_waitq *q, int64_t now)
{
    return q->head && now - q->head->since >= q->bound_ns;
}

void sl_waitq_finish(sl_waitq *q, sl_waiter *w, int state)
{
    sl_waitq_remove(q, w);
    w->state = state;
    /* Once `done` is 1 the waiter may return and its frame go: the wake
     * below may then reach a dead address, which at worst wakes a futex
     * sleeper there spuriously (every sleeper rechecks). */
    atomic_store_explicit(&w->done, 1, memory_order_release);
    sl_futex_wake(&w->done, 1);
}

int sl_waiter_done(sl_waiter *w)
{
    return atomic_load_explicit(&w->done, memory_order_acquire) == 1;
}

void sl_waitq_watch(sl_waitq *q)
{
    sl_waiter *w = q->head;

    if (!w || atomic_load_explicit(&w->armed, memory_order_relaxed))
        return;
    atomic_store_explicit(&w->armed, 1, memory_order_relaxed);
    atomic_store_explicit(&w->done, 2, memory_order_relaxed);
    sl_futex_wake(&w->done, 1);
}

void sl_waiter_prepare(sl_waitq *q, sl_waiter *w)
{
    if (q->head == w)
        atomic_store_explicit(&w->armed, 1, memory_order_relaxed);
    if (atomic_load_explicit(&w->done, memory_order_relaxed) == 2)
        atomic_store_explicit(&w->done, 0, memory_order_relaxed);
}

int sl_waiter_sleep(const sl_waitq *q, sl_waiter *w, int64_t deadline, int *due_seen)
{
    for (;;) {
        int64_t due = w->since + q->bound_ns, until = deadline, now;
        int polls = atomic_load_explicit(&w->armed, memory_order_relaxed) && !*due_seen;
        uint32_t d;

        if (polls) {
            until = sl_deadline_min(until, due);
            until = sl_deadline_min(until, sl_now_ns() + SL_WAITQ_POLL_NS);
        }
        if ((d = atomic_load_explicit(&w->done, memory_order_acquire)) == 0) {
            sl_futex_wait(&w->done, 0, until);
            d = atomic_load_explicit(&w->done, memory_order_acquire);
        }
        if (d == 1)
            return SL_WAKE_DONE;
        if (d == 2)
            return SL_WAKE_ARM;
        now = sl_now_ns();
        if (now >= deadline)
            return SL_WAKE_DEADLINE;
        if (!*due_seen && now >= due) {
            *due_seen = 1;
            return SL_WAKE_DUE;
        }
        if (polls)
            return SL_WAKE_POLL;
    }
}

/* ---- the wait histogram -------------------------------------------------- */

static int bucket_of(uint64_t us)
{
    int msb, i;

    if (us < 4)
        return (int)us;
    msb = 63 - __builtin_clzll(us);
    i = (msb - 1) * 4 + (int)((us >> (msb - 2)) & 3);
    return i < SL_WAIT_BUCKETS ? i : SL_WAIT_BUCKETS - 1;
}

static uint64_t bucket_top(int i)
{
    int msb;

    if (i < 4)
        return (uint64_t)i;
    msb = i / 4 + 1;
    return ((uint64_t)(4 + i % 4) << (msb - 2)) + ((uint64_t)1 << (msb - 2)) - 1;
}

void sl_wait_hist_add(sl_wait_hist *h, uint64_t us)
{
    uint64_t m = atomic_load_explicit(&h->max_us, memory_order_relaxed);

    atomic_fetch_add_explicit(&h->b[bucket_of(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->n, 1, memory_order_relaxed);
    while (us > m && !atomic_compare_exchange_weak_explicit(&h->max_us, &m, us,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed))
        ;
}

void sl_wait_hist_merge(sl_wait_hist *to, const sl_wait_hist *from)
{
    uint64_t m = atomic_load_explicit(&from->max_us, memory_order_relaxed);
    int i;

    for (i = 0; i < SL_WAIT_BUCKETS; i++)
        atomic_fetch_add_explicit(&to->b[i],
                                  atomic_load_explicit(&from->b[i], memory_order_relaxed),
                                  memory_order_relaxed);
    atomic_fetch_add_explicit(&to->n, atomic_load_explicit(&from->n, memory_order_relaxed),
                              memory_order_relaxed);
    if (m > atomic_load_explicit(&to->max_us, memory_order_relaxed))
        atomic_store_explicit(&to->max_us, m, memory_order_relaxed);
}

uint64_t sl_wait_hist_quantile(const sl_wait_hist *h, double q)
{
    uint64_t n = 0, seen = 0, want, max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    int i;

    for (i = 0; i < SL_WAIT_BUCKETS; i++)
        n += atomic_load_explicit(&h->b[i], memory_order_relaxed);
    if (n == 0)
        return 0;
    want = (uint64_t)(q * (double)n + 0.999999);
    if (want < 1)
        want = 1;
    for (i = 0; i < SL_WAIT_BUCKETS; i++) {
        seen += atomic_load_explicit(&h->b[i], memory_order_relaxed);
        if (seen >= want)
            return bucket_top(i) < max ? bucket_top(i) : max;
    }
    return max;
}
