/* The batcher: concurrent decisions queue, a leader sends them as one
 * round trip through the transport, and waiters sleep on futex words.  See
 * limiter_batch.h for the contract. */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "futex.h"
#include "limiter_batch.h"
#include "sync.h"

enum { W_QUEUED, W_TAKEN, W_LEAD, W_DONE };

/* Sleeping waiters park on one of these words (Linux futexes): the queued
 * ones on the word of the batch that will take them, so a leader wakes a
 * whole batch with one system call.  A word only ever counts up. */
#define NWORDS 64

/* A decision waiting for its batch.  Lives on the caller's stack.  The
 * caller leaves once it sees DONE (a leader writes nothing to it after
 * that), or while still QUEUED or asked to LEAD, after unlinking itself
 * under the lock. */
typedef struct waiter {
    struct waiter *next;
    sl_batch_call *call;
    int64_t deadline;
    _Atomic int state;     /* W_*: QUEUED -> TAKEN or LEAD under the lock, -> DONE */
    unsigned word;         /* lock held: the word it sleeps on ... */
    uint32_t seen;         /* ... and that word's value when it went to sleep */
} waiter;

struct sl_batcher {
    sl_batch_cfg cfg;
    sl_batch_ops ops;
    void *ctx;

    pthread_mutex_t mu;           /* guards everything below but the atomics */
    waiter *head, *tail;          /* queued decisions, arrival order */
    size_t queued;                /* how many */
    int inflight;                 /* leaders with a round trip under way */
    uint32_t next_batch;          /* number of the next batch to be taken */

    _Atomic uint32_t words[NWORDS];
    _Atomic uint64_t queue_timeouts;
};

/* --- sleeping and waking -------------------------------------------------- */

/* Counts the word up and wakes everyone sleeping on it. */
static void word_wake(_Atomic uint32_t *word)
{
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    sl_futex_wake(word, INT_MAX);
}

/* Lock held: w will sleep on the word of batch `batch`. */
static void park(sl_batcher *b, waiter *w, unsigned batch)
{
    w->word = batch % NWORDS;
    w->seen = atomic_load_explicit(&b->words[w->word], memory_order_relaxed);
}

/* --- leading ----------------------------------------------------------------- */

/* A leader serves batch after batch while decisions keep arriving, up to
 * this many after its own result is in (and never past its own deadline),
 * then hands over: the next batch goes out as soon as a reply is in,
 * without waiting for another thread to be scheduled, and no caller is
 * kept long past its own result. */
#define LEAD_BUDGET 16

/* Another leader (on another connection, up to max_inflight) starts as
 * soon as this many decisions queue behind the round trips under way.
 * Waiting for a reply before sending the next batch leaves the client and
 * Redis taking turns: with 8 threads on two cores, one flight at a time
 * averaged 6 decisions per round trip but 51,000 decisions/s, against
 * 91,000/s with 1.6 per round trip here (and 165,000 against 123,000 with
 * 64 threads, whose batches still average 14).  When Redis is the slow
 * side the queue grows during each round trip and batches grow with it. */
#define PARALLEL_BACKLOG 2

/* Lock held: may a queued caller start leading now? */
static int can_lead(const sl_batcher *b)
{
    return b->inflight == 0 ||
           (b->inflight < b->cfg.max_inflight && b->queued >= PARALLEL_BACKLOG);
}

/* Lock held. */
static void enqueue(sl_batcher *b, waiter *w)
{
    if (b->tail)
        b->tail->next = w;
    else
        b->head = w;
    b->tail = w;
    b->queued++;
}

/* Lock held.  The head of the queue. */
static waiter *dequeue(sl_batcher *b)
{
    waiter *w = b->head;

    b->head = w->next;
    if (!b->head)
        b->tail = NULL;
    b->queued--;
    return w;
}

/* Lock held.  The oldest queued decisions, marked TAKEN as batch *no. */
static size_t take_batch(sl_batcher *b, waiter **batch, sl_batch_call **calls, unsigned *no,
                         int64_t *deadline)
{
    size_t n = 0;

    *no = b->next_batch++;
    *deadline = SL_NO_DEADLINE;
    while (b->head && n < SL_BATCH_MAX) {
        waiter *w = dequeue(b);
        park(b, w, *no);
        atomic_store_explicit(&w->state, W_TAKEN, memory_order_relaxed);
        calls[n] = w->call;
        batch[n++] = w;
        *deadline = sl_deadline_min(*deadline, w->deadline);
    }
    return n;
}

/* No lock: marks a TAKEN waiter decided.  Once DONE is visible the waiter
 * may return and free its stack: nothing touches it after that. */
static void complete(waiter *w)
{
    atomic_store_explicit(&w->state, W_DONE, memory_order_release);
}

/* Lock held: asks the head of the queue to lead next.  The queued all
 * sleep on one word, so they all wake; the others go back to sleep.  It
 * happens once per LEAD_BUDGET batches at most. */
static void pass_lead(sl_batcher *b)
{
    if (b->head && can_lead(b) &&
        atomic_load_explicit(&b->head->state, memory_order_relaxed) == W_QUEUED) {
        atomic_store_explicit(&b->head->state, W_LEAD, memory_order_relaxed);
        word_wake(&b->words[b->next_batch % NWORDS]);
    }
}

static void unlink_waiter(sl_batcher *b, waiter *w)
{
    waiter **link = &b->head, *prev = NULL;

    while (*link && *link != w) {
        prev = *link;
        link = &(*link)->next;
    }
    if (!*link)
        return;
    *link = w->next;
    if (b->tail == w)
        b->tail = prev;
    b->queued--;
}

/* Lock held: fails every queued decision at once (the connection broke, so
 * they would only wait for their own timeouts). */
static void fail_queue(sl_batcher *b, int code, const sluice_error *e)
{
    unsigned no = b->next_batch++;

    while (b->head) {
        waiter *w = dequeue(b);
        w->call->code = code;
        sl_err_copy(&w->call->e, e);
        complete(w);
    }
    word_wake(&b->words[no % NWORDS]);
}

/* Called with the lock held by `self`, a queued caller allowed to lead;
 * returns with it released once self is DONE.  It keeps one connection
 * while it leads.  See LEAD_BUDGET. */
static void lead(sl_batcher *b, waiter *self)
{
    waiter *batch[SL_BATCH_MAX];
    sl_batch_call *calls[SL_BATCH_MAX];
    int served_after_self = 0;
    void *conn = NULL;
    sluice_error e;

    b->inflight++;
    for (;;) {
        int64_t deadline;
        unsigned no;
        size_t n = take_batch(b, batch, calls, &no, &deadline), i;
        int broken;

        pthread_mutex_unlock(&b->mu);
        sl_err_clear(&e);
        broken = b->ops.round_trip(b->ctx, &conn, calls, n, deadline, &e);
        for (i = 0; i < n; i++)
            complete(batch[i]);
        word_wake(&b->words[no % NWORDS]);
        pthread_mutex_lock(&b->mu);
        if (broken)
            fail_queue(b, broken, &e);
        if (atomic_load_explicit(&self->state, memory_order_relaxed) == W_DONE &&
            (!b->head || ++served_after_self > LEAD_BUDGET || sl_now_ns() > self->deadline))
            break;
    }
    b->inflight--;
    pass_lead(b);
    pthread_mutex_unlock(&b->mu);
    if (conn)
        b->ops.release(b->ctx, conn);
}

/* --- waiting ------------------------------------------------------------------ */

/* A queued caller's wait: for its outcome, for a request to lead, or for
 * its deadline while still queued (then it unlinks itself).  Once TAKEN it
 * waits without a deadline: the leader's I/O is bounded by the batch's
 * earliest deadline. */
static void await_outcome(sl_batcher *b, waiter *w, unsigned word, uint32_t seen)
{
    int64_t deadline = w->deadline;

    for (;;) {
        int timed_out = 0, st;

        if (atomic_load_explicit(&w->state, memory_order_acquire) == W_DONE)
            return;
        timed_out = sl_futex_wait(&b->words[word], seen, deadline) ||
                    (deadline != SL_NO_DEADLINE && sl_now_ns() >= deadline);
        if (atomic_load_explicit(&w->state, memory_order_acquire) == W_DONE)
            return;
        pthread_mutex_lock(&b->mu);
        st = atomic_load_explicit(&w->state, memory_order_relaxed);
        if (st == W_LEAD && !timed_out) {
            atomic_store_explicit(&w->state, W_QUEUED, memory_order_relaxed);
            lead(b, w);
            return;
        }
        if (timed_out && (st == W_QUEUED || st == W_LEAD)) {
            unlink_waiter(b, w);
            pass_lead(b);
            pthread_mutex_unlock(&b->mu);
            w->call->code = sl_err(&w->call->e, SLUICE_ELIMITER,
                                   "redis %s: no reply within %d ms (queued behind a slow "
                                   "round trip)",
                                   b->cfg.where, b->cfg.timeout_ms);
            atomic_fetch_add_explicit(&b->queue_timeouts, 1, memory_order_relaxed);
            return;
        }
        if (st == W_QUEUED)
            park(b, w, b->next_batch);   /* woken, but not taken: the next one */
        if (timed_out)
            deadline = SL_NO_DEADLINE;     /* TAKEN: the leader is bounded */
        word = w->word;
        seen = w->seen;
        pthread_mutex_unlock(&b->mu);
    }
}

void sl_batcher_decide(sl_batcher *b, sl_batch_call *call)
{
    waiter w;

    w.next = NULL;
    w.call = call;
    w.deadline = sl_deadline_in_ms(b->cfg.timeout_ms);
    call->code = 0;
    atomic_init(&w.state, W_QUEUED);

    pthread_mutex_lock(&b->mu);
    enqueue(b, &w);
    if (can_lead(b)) {
        lead(b, &w);
    } else {
        unsigned word;
        uint32_t seen;

        park(b, &w, b->next_batch);
        word = w.word;
        seen = w.seen;
        pthread_mutex_unlock(&b->mu);
        await_outcome(b, &w, word, seen);
    }
}

/* --- life cycle ---------------------------------------------------------------- */

sl_batcher *sl_batcher_new(const sl_batch_cfg *cfg, const sl_batch_ops *ops, void *ctx,
                           sluice_error *err)
{
    sl_batcher *b = sl_calloc(1, sizeof *b);

    if (!b) {
        sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory for the batcher", cfg->where);
        return NULL;
    }
    b->cfg = *cfg;
    b->ops = *ops;
    b->ctx = ctx;
    if (b->cfg.max_inflight < 1)
        b->cfg.max_inflight = 1;
    if (sl_mutex_init(&b->mu, "redis batcher", err)) {
        sl_free(b);
        return NULL;
    }
    return b;
}

void sl_batcher_free(sl_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    sl_free(b);
}

uint64_t sl_batcher_queue_timeouts(sl_batcher *b)
{
    return atomic_load_explicit(&b->queue_timeouts, memory_order_relaxed);
}
