/* The batcher (limiter_batch.c): concurrent decisions share round trips.
 *
 * A caller that finds no round trip under way becomes the leader: it takes
 * every queued decision (arrival order, up to SL_BATCH_MAX), hands them to
 * the transport's round_trip as one batch, completes each waiter, and goes
 * on with the decisions queued meanwhile, so the next batch is on the wire
 * as soon as a reply is in, for at most 16 batches after its own result,
 * then hands over to the head of the queue.  Further leaders, each on its
 * own connection, start while decisions wait and fewer round trips than
 * the window are in flight.  The window (1 to max_inflight) adapts to the
 * load by hill climbing on decisions per second: when Redis is the
 * bottleneck it shrinks and decisions queue behind fewer, larger batches;
 * when the client is, it grows (limiter_batch.c: EPOCH_NS).  No artificial
 * delay: a caller that finds no round trip under way sends at once.
 *
 * Waiters sleep on futex words, one per batch, so one system call wakes a
 * batch (Linux).  Every call returns by its own deadline (now +
 * timeout_ms, plus scheduling): a waiter not yet taken gives up at it, a
 * round trip is given the earliest deadline of its batch, and when the
 * transport says a connection broke every queued decision fails with it
 * at once.
 *
 * Locking: the batcher's mutex guards its queue and counters only; it is
 * never held across a round trip, a connect or a transport callback.
 * Threading: sl_batcher_decide is thread-safe; sl_batcher_free once no
 * call is in flight.
 */
#ifndef SL_LIMITER_BATCH_H
#define SL_LIMITER_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "limiter.h"
#include "sluice.h"

#define SL_BATCH_MAX 256
#define SL_BATCH_NUM_MAX 32   /* bytes one formatted number may take */

/* One decision: the request and its arguments as text (formatted by the
 * caller before it queues, off the leader's serial path), then the
 * outcome, which the transport's round_trip fills in. */
typedef struct sl_batch_call {
    const sl_lim_req *rq;
    char args[SL_REDIS_ARGS_PER_DECISION - 1][SL_BATCH_NUM_MAX];   /* T .. now */
    size_t arglen[SL_REDIS_ARGS_PER_DECISION - 1];
    int code;               /* 0: r holds the result; else e says why */
    sluice_limit_result r;
    sluice_error e;
    /* Redis Cluster routing (limiter_cluster.c; ignored by a single
     * server): the key's slot, ASKING before the command (an ASK
     * redirect), and alone in its command (after TRYAGAIN). */
    unsigned slot;
    unsigned char asking, single;
} sl_batch_call;

typedef struct sl_batch_ops {
    /* One round trip for calls[0..n) before `deadline`, on *conn (NULL:
     * check a connection out first; the leader keeps it for its next
     * batches).  Sets every call's code and r or e.  Returns 0, or the
     * code to fail every queued decision with when the connection broke
     * (*conn is then released and cleared, and *e says why).  Called
     * without the batcher's lock. */
    int (*round_trip)(void *ctx, void **conn, sl_batch_call *const *calls, size_t n,
                      int64_t deadline, sluice_error *e);
    /* Returns a healthy connection the leader held once it stops leading. */
    void (*release)(void *ctx, void *conn);
} sl_batch_ops;

typedef struct sl_batch_cfg {
    int timeout_ms;       /* bound on one decision */
    int max_inflight;     /* round trips at once */
    const char *where;    /* "host:port" for messages; borrowed */
} sl_batch_cfg;

typedef struct sl_batcher sl_batcher;

/* NULL with err set (SLUICE_ENOMEM or a mutex failure). */
sl_batcher *sl_batcher_new(const sl_batch_cfg *cfg, const sl_batch_ops *ops, void *ctx,
                           sluice_error *err);
void sl_batcher_free(sl_batcher *b);

/* Queues *call (whose rq and args the caller set) and returns once it is
 * decided, by its deadline: call->code is then 0 with call->r set, or an
 * error with call->e set (SLUICE_ELIMITER naming `where` for a decision
 * still queued at its deadline). */
void sl_batcher_decide(sl_batcher *b, sl_batch_call *call);
/* The same with the decision's own deadline, when it is earlier than
 * now + timeout_ms (a redirected decision keeps its first deadline). */
void sl_batcher_decide_by(sl_batcher *b, sl_batch_call *call, int64_t deadline);

/* Decisions that gave up while still queued. */
uint64_t sl_batcher_queue_timeouts(sl_batcher *b);

/* The current window (round trips allowed in flight at once).  For tests
 * and stats. */
int sl_batcher_window(sl_batcher *b);

#endif
