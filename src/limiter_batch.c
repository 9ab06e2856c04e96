/* The batcher: concurrent decisions queue, a leader sends them as one
 * round trip through the transport, and waiters sleep on futex words.  See
 * limiter_batch.h for the contract. */
#include <errno.h>
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
    int window;                   /* ... allowed at once (adapt_window) */
    int dir, probing, hold;       /* the climb: next step, probe under way, epochs to wait */
    double base_rate;             /* decisions/s before the probe */
    int64_t epoch_start;
    uint64_t epoch_done;          /* decisions decided this epoch */
    size_t gather_target;         /* a leader gathers until this many queue; 0: none */
    pthread_cond_t gather_cv;     /* signalled when gather_target is reached */
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
 * kept long past its own result.  With a window of 1 (Redis the
 * bottleneck, see gather) it hands over as soon as its own result is in,
 * so that its caller can ask again and ride the next batch instead of
 * leaving it one short. */
#define LEAD_BUDGET 16

/* Another leader (on another connection) starts as soon as this many
 * decisions queue behind the round trips under way, while fewer than
 * `window` round trips are.  Waiting for a reply before sending the next
 * batch leaves the client and Redis taking turns: unthrottled, with 8
 * threads on two cores, one flight at a time averaged 6 decisions per
 * round trip but 51,000 decisions/s, against 91,000/s with up to 4
 * flights and 1.6 decisions per round trip.  But when Redis is the slow
 * side, parallel flights only split the queue into small batches, and
 * Redis pays its per-call cost (about 12 us of its 14 us for a lone
 * decision) once per batch: there one flight carrying everything queued
 * is worth 3-4 times more. */
#define PARALLEL_BACKLOG 2

/* The window: how many round trips may be in flight at once, between 1
 * and max_inflight, found by hill climbing on the decisions completed per
 * second.  Time is cut into epochs of EPOCH_NS; an epoch with fewer than
 * EPOCH_MIN_DECISIONS is idle and changes nothing (an idle limiter keeps
 * its window; a lone decision goes at once whatever the window).  After a
 * busy epoch at a settled window the next epoch probes one step (up, or
 * down when up is not possible or was the last failed direction); a probe
 * that raises the rate by PROBE_GAIN stays and the climb goes on in the
 * same direction, one that does not is undone and the window holds for
 * HOLD_EPOCHS before probing again, the other way first.  So an idle or a
 * Redis-bound limiter settles on 1 flight and batches as large as the
 * queue, a client-bound one on as many flights as help, and a change of
 * regime is found within a second or so.  The epoch is long enough that
 * the 10 ms scheduling period of a CPU-throttled Redis averages out. */
#define EPOCH_NS 100000000LL
#define EPOCH_MIN_DECISIONS 64
#define PROBE_GAIN 1.05
#define HOLD_EPOCHS 5

/* Lock held: may a queued caller start leading now? */
static int can_lead(const sl_batcher *b)
{
    return b->inflight == 0 || (b->inflight < b->window && b->queued >= PARALLEL_BACKLOG);
}

/* Lock held: counts n decided decisions and, at an epoch's end, moves the
 * window (see EPOCH_NS). */
static void adapt_window(sl_batcher *b, size_t n, int64_t now)
{
    double rate;
    int next;

    b->epoch_done += n;
    if (now - b->epoch_start < EPOCH_NS)
        return;
    rate = (double)b->epoch_done * 1e9 / (double)(now - b->epoch_start);
    b->epoch_start = now;
    if (b->epoch_done < EPOCH_MIN_DECISIONS) {
        b->epoch_done = 0;
        return;
    }
    b->epoch_done = 0;
    if (b->probing) {
        b->probing = 0;
        if (rate >= b->base_rate * PROBE_GAIN) {
            b->base_rate = rate;
            return;                          /* kept: probe on next epoch */
        }
        b->window -= b->dir;                 /* undone */
        b->dir = -b->dir;
        b->hold = HOLD_EPOCHS;
        return;
    }
    if (b->hold > 0) {
        b->hold--;
        return;
    }
    next = b->window + b->dir;
    if (next < 1 || next > b->cfg.max_inflight) {
        b->dir = -b->dir;
        next = b->window + b->dir;
        if (next < 1 || next > b->cfg.max_inflight)
            return;                          /* max_inflight 1: nothing to learn */
    }
    b->base_rate = rate;
    b->window = next;
    b->probing = 1;
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

/* With a window of 1 (Redis the bottleneck), a leader about to send its
 * next batch first waits until `target` decisions are queued: the callers
 * of the batch just decided, who need a moment to be scheduled and ask
 * again, plus those that were left queued.  Without it the callers split
 * into two groups that alternate, one on the wire while the other queues,
 * and batches stay at half the callers.  The wait is bounded by a quarter
 * of the last round trip (at least GATHER_MIN_NS, at most GATHER_MAX_NS)
 * and by the oldest queued decision's deadline, so it costs at most a
 * quarter of the throughput in a regime where a round trip costs Redis
 * far more than a turnaround costs the client, and the window's hill
 * climb keeps the window at 1 only where that pays. */
#define GATHER_MIN_NS 100000LL
#define GATHER_MAX_NS 2000000LL

/* Lock held (released while waiting). */
static void gather(sl_batcher *b, size_t target, int64_t last_rtt)
{
    int64_t until, wait = last_rtt / 4;

    if (target > SL_BATCH_MAX)
        target = SL_BATCH_MAX;
    if (b->window > 1 || !b->head || b->queued >= target)
        return;
    wait = wait < GATHER_MIN_NS ? GATHER_MIN_NS : wait > GATHER_MAX_NS ? GATHER_MAX_NS : wait;
    until = sl_deadline_min(sl_now_ns() + wait, b->head->deadline);
    b->gather_target = target;
    while (b->queued < target && b->head) {
        struct timespec ts = sl_deadline_timespec(until);
        if (pthread_cond_timedwait(&b->gather_cv, &b->mu, &ts) == ETIMEDOUT ||
            sl_now_ns() >= until)
            break;
    }
    b->gather_target = 0;
}

/* Called with the lock held by `self`, a queued caller allowed to lead;
 * returns with it released once self is DONE.  It keeps one connection
 * while it leads.  See LEAD_BUDGET. */
static void lead(sl_batcher *b, waiter *self)
{
    waiter *batch[SL_BATCH_MAX];
    sl_batch_call *calls[SL_BATCH_MAX];
    int served_after_self = 0;
    size_t target = 0;
    int64_t rtt = 0;
    void *conn = NULL;
    sluice_error e;

    b->inflight++;
    for (;;) {
        int64_t deadline;
        unsigned no;
        size_t n, i, left;
        int broken, self_in;

        gather(b, target, rtt);
        self_in = atomic_load_explicit(&self->state, memory_order_relaxed) != W_DONE;
        n = take_batch(b, batch, calls, &no, &deadline);
        left = b->queued;

        pthread_mutex_unlock(&b->mu);
        sl_err_clear(&e);
        rtt = sl_now_ns();
        broken = b->ops.round_trip(b->ctx, &conn, calls, n, deadline, &e);
        rtt = sl_now_ns() - rtt;
        for (i = 0; i < n; i++)
            complete(batch[i]);
        word_wake(&b->words[no % NWORDS]);
        pthread_mutex_lock(&b->mu);
        adapt_window(b, n, sl_now_ns());
        if (broken)
            fail_queue(b, broken, &e);
        target = left + n - (size_t)self_in;   /* who will have asked again */
        if (atomic_load_explicit(&self->state, memory_order_relaxed) == W_DONE &&
            (!b->head || ++served_after_self > (b->window == 1 ? 0 : LEAD_BUDGET) ||
             sl_now_ns() > self->deadline))
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
    sl_batcher_decide_by(b, call, SL_NO_DEADLINE);
}

void sl_batcher_decide_by(sl_batcher *b, sl_batch_call *call, int64_t deadline)
{
    waiter w;

    w.next = NULL;
    w.call = call;
    w.deadline = sl_deadline_min(sl_deadline_in_ms(b->cfg.timeout_ms), deadline);
    call->code = 0;
    atomic_init(&w.state, W_QUEUED);

    pthread_mutex_lock(&b->mu);
    enqueue(b, &w);
    if (b->gather_target && b->queued >= b->gather_target)
        pthread_cond_signal(&b->gather_cv);
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
    b->window = 1;
    b->dir = 1;
    b->epoch_start = sl_now_ns();
    if (sl_mutex_init(&b->mu, "redis batcher", err)) {
        sl_free(b);
        return NULL;
    }
    if (sl_cond_init(&b->gather_cv, "redis batcher", err)) {
        pthread_mutex_destroy(&b->mu);
        sl_free(b);
        return NULL;
    }
    return b;
}

void sl_batcher_free(sl_batcher *b)
{
    if (!b)
        return;
    pthread_cond_destroy(&b->gather_cv);
    pthread_mutex_destroy(&b->mu);
    sl_free(b);
}

uint64_t sl_batcher_queue_timeouts(sl_batcher *b)
{
    return atomic_load_explicit(&b->queue_timeouts, memory_order_relaxed);
}

int sl_batcher_window(sl_batcher *b)
{
    int w;

    pthread_mutex_lock(&b->mu);
    w = b->window;
    pthread_mutex_unlock(&b->mu);
    return w;
}
