/* The rate limiter: the public front (limiter.c) and its backends, the
 * in-process table (limiter_local.c), Redis (limiter_redis.c) and Redis
 * Cluster (limiter_cluster.c, one Redis backend per primary).
 *
 * The algorithm is GCRA as in go-redis/redis_rate.  All times are in
 * microseconds held in doubles (exact integers up to 2^53).  For a limit of
 * `rate` per `period_ms` with `burst`:
 *
 *   T            = period_ms * 1000 / rate       emission interval
 *   burst_offset = T * burst
 *   tat          = max(stored TAT or now, now)   theoretical arrival time
 *   new_tat      = tat + T * cost
 *   diff         = now - (new_tat - burst_offset)
 *   diff < -SL_GCRA_TOL_US: denied, remaining 0, retry_after = -diff,
 *                           reset_after = tat - now, nothing stored
 *   otherwise:   allowed, remaining = floor((diff + tol) / T), retry_after -1,
 *                reset_after = new_tat - now, new_tat stored (check only),
 *                expiring when it is reached (the key is then a full burst)
 *
 * so over any span S, admitted <= burst + S / T (+ tol / T): the "exact"
 * bound.  Milliseconds returned are rounded up (waiting retry_after_ms is
 * always enough).  `peek` is a check of cost 1 that stores nothing.
 * `cooldown(ms)` sets TAT = max(TAT, now + ms*1000 + T*(burst-1)): every
 * decision is denied until exactly now + ms (a cost-c decision until
 * now + ms + (c-1)*T) with retry_after_ms saying so; after that the bucket
 * refills from empty at the normal rate (one request at now + ms, then one
 * per T): a slow start after an upstream's 429, not a stampede.
 *
 * The Lua script in limiter_script.c performs the same operations in the
 * same order on the same doubles, so both backends give identical results
 * for the same inputs and the same `now` (tests check a table of cases).
 *
 * Keys: the caller's key K is stored as "<prefix>:K".  The HTTP client
 * passes K = "{<service>}:<endpoint>", so the Redis key is
 * "<prefix>:{<service>}:<endpoint>": the braces are a Redis Cluster hash
 * tag, so every key of one service lives in one slot.  Every key a script
 * touches is passed in KEYS.  A batch (below) may carry keys of several
 * services; on a Redis Cluster (limiter_cluster.h) a node's round trip
 * sends one EVALSHA per slot instead, pipelined.  A key expires in Redis when its bucket
 * is full again, and the in-process table drops it then too.
 *
 * The front's behaviour (limiter.c), beyond sluice.h:
 *  - sluice_limiter_new(NULL, ...) reads $SLUICE_REDIS_URL; "" (or an unset
 *    or empty variable) means in-process.  A malformed URL is SLUICE_EINVAL.
 *    A redis+sentinel:// URL (redis_conn.h) finds the master through Redis
 *    Sentinel (redis_sentinel.h); a master the sentinels do not know or
 *    none of them reachable is a Redis failure like a dead server: the
 *    fail mode applies, with SLUICE_ELIMITER naming the master.  After a
 *    failover the decisions that meet the old master's connections closed
 *    or answering -READONLY go to the fail mode, and the next probe asks
 *    the sentinels again; the sentinel's watcher moves decisions within
 *    about a second of the sentinels naming the new master even while the
 *    old one still accepts writes.
 *    "redis+cluster://" selects the cluster backend, which has no global
 *    down state: each decision whose node fails goes to the fail mode
 *    alone (limiter_cluster.h).
 *    The first connection gets max(redis_timeout_ms, 1 s); a server that
 *    refuses the credentials or the db fails creation (SLUICE_ELIMITER),
 *    an unreachable one does not: the limiter starts in its fail mode.
 *  - Fail modes, when a Redis decision fails (connect, I/O, timeout, error
 *    reply): OPEN answers allowed with remaining -1 ("not known"), CLOSED
 *    returns SLUICE_ELIMITER (the message names host:port, never the
 *    password) with allowed 0, LOCAL decides in the in-process table with
 *    rate / expected_instances and burst / expected_instances (rounded up,
 *    at least the cost).  The first failure switches the limiter to its
 *    fail mode (one SL_WARN); from then on calls skip Redis, except one
 *    probe after 100 ms, then 200, 400 ... at most every second; the
 *    probe's success switches back (one SL_INFO).  So a dead Redis costs
 *    one connect attempt per second, not one per call, and a restarted one
 *    is used again within about a second.  No decision waits longer than
 *    redis_timeout_ms (plus scheduling).
 *  - acquire checks; while denied it sleeps retry_after_ms plus 0-5 ms of
 *    jitter and checks again, never past its deadline (timeout_ms < 0: no
 *    deadline, 0: one check).  When the announced wait already ends past
 *    the deadline it returns SLUICE_ERATELIMITED at once rather than sleep
 *    in vain (the TAT only moves forward, so it could not succeed); the
 *    result then carries retry_after_ms.  SLUICE_ELIMITER (CLOSED) and
 *    SLUICE_EINVAL (cost > burst included) return at once.
 *  - cooldown(0) changes nothing.
 *  - Stats: allowed/throttled count check outcomes (acquire's checks
 *    included), waits acquire's sleeps, fallbacks the decisions answered by
 *    the fail mode, decisions those the limiter's own backend evaluated
 *    (every one in-process; for Redis those sent, so decisions/round_trips
 *    is the batching factor), round_trips the EVALSHAs sent, redis_errors
 *    failed connects, round trips and queue timeouts.
 *
 * Threading: every function here is thread-safe except *_free, which the
 * owner calls once no other call is in flight.
 */
#ifndef SL_LIMITER_H
#define SL_LIMITER_H

#include <stddef.h>
#include <stdint.h>

#include "redis_conn.h"
#include "sluice.h"

struct redisReply;

/* Half the clock's resolution: boundaries closer than this count as met,
 * so floating-point rounding never denies a request that is due. */
#define SL_GCRA_TOL_US 0.5
/* Limits whose emission interval is shorter than this are refused: the
 * limiter counts in microseconds. */
#define SL_GCRA_MIN_T_US 1.0
/* Longest burst_offset (or cost * T) accepted: about 115 days. */
#define SL_GCRA_MAX_SPAN_US 1e13
/* Longest caller key and prefix, in bytes.  Keys up to SL_LIMITER_KEY_INLINE
 * are assembled on the stack, longer ones on the heap. */
#define SL_LIMITER_MAX_KEY 16384
#define SL_LIMITER_KEY_INLINE 512
#define SL_LIMITER_MAX_PREFIX 64
/* "now" argument meaning "read the backend's clock". */
#define SL_LIM_NOW (-1)

typedef enum sl_lim_op {
    SL_LIM_CHECK = 0,     /* arg = cost */
    SL_LIM_PEEK = 1,      /* arg ignored (cost 1, nothing stored) */
    SL_LIM_COOLDOWN = 2   /* arg = milliseconds */
} sl_lim_op;

/* One decision as the front hands it to a backend.  `key` is the full
 * key ("<prefix>:<caller key>"), owned by the caller for the whole call;
 * `lim` and `arg` are already validated. */
typedef struct sl_lim_req {
    sl_lim_op op;
    const char *key;
    size_t key_len;
    sluice_limit lim;
    int arg;
    int64_t now_us;       /* SL_LIM_NOW, or a test's fixed clock */
} sl_lim_req;

/* --- GCRA (limiter_local.c) -------------------------------------------- */

/* SLUICE_EINVAL naming the field unless the limit and cost are usable:
 * rate finite and > 0, period_ms > 0, burst > 0, 0 < cost <= burst, and
 * the emission interval within [SL_GCRA_MIN_T_US, SL_GCRA_MAX_SPAN_US]. */
int sl_gcra_validate(const sluice_limit *lim, int cost, sluice_error *err);

/* T = period_ms * 1000 / rate: the emission interval in microseconds. */
double sl_gcra_interval_us(const sluice_limit *lim);

/* Evaluates one validated decision at `now_us`.  *tat is the stored TAT
 * (negative: none) and is updated when the decision changes the state;
 * returns 1 when it did (the caller stores *tat until it is reached),
 * else 0.  Pure; the Lua script mirrors it operation for operation. */
int sl_gcra_eval(const sl_lim_req *rq, double now_us, double *tat, sluice_limit_result *r);

/* --- in-process backend (limiter_local.c) ------------------------------ */

/* A table of TATs: 64 shards chosen by key hash, each a chained hash table
 * under its own mutex (held only for the look-up, the GCRA arithmetic and
 * an allocation; no I/O).  Entries whose TAT has passed are equivalent to
 * absent ones and are dropped when met in a chain and by a sweep of the
 * shard whenever it has doubled since the last sweep. */
typedef struct sl_local sl_local;

sl_local *sl_local_new(sluice_error *err);
void sl_local_free(sl_local *t);
/* Decides rq against the table; now is rq->now_us, or the monotonic clock
 * for SL_LIM_NOW.  0, or SLUICE_ENOMEM when a new key cannot be stored
 * (then *r says denied). */
int sl_local_decide(sl_local *t, const sl_lim_req *rq, sluice_limit_result *r, sluice_error *err);
/* Entries held (expired ones not yet dropped included).  For tests. */
size_t sl_local_entries(sl_local *t);

/* --- Redis backend (limiter_redis.c; its URL and connections are
 * redis_url.c and redis_conn.c, its batcher limiter_batch.c, its script
 * and the script's reply limiter_script.c) --------------------------- */

typedef struct sl_redis sl_redis;

typedef struct sl_redis_cfg {
    int timeout_ms;        /* bound on one decision */
    int pool_size;         /* connections at most */
    int max_inflight;      /* round trips at once (pool_size) */
    int create_timeout_ms; /* the first connection, made by sl_redis_new */
    int cluster;           /* a Redis Cluster primary: group batches by slot */
    int lazy;              /* no first connection: the first decision makes it */
} sl_redis_cfg;

/* Takes ownership of *url (zeroed on return) and of `sentinel` (NULL: url
 * names the server; else url holds the master's credentials and db and
 * every connection goes to the master the sentinel finds, see
 * redis_sentinel.h).  Connects once, within cfg->create_timeout_ms:
 * SLUICE_ELIMITER ("AUTH failed for <display>" or "SELECT n failed ...")
 * and NULL when Redis answers but refuses the credentials or the db.  An
 * unreachable server (or no sentinel that names a reachable master) is
 * not an error here: *reachable is set to 0 and decisions will say why. */
struct sl_sentinel;
sl_redis *sl_redis_new(sl_redis_url *url, struct sl_sentinel *sentinel, const sl_redis_cfg *cfg,
                       int *reachable, sluice_error *err);
void sl_redis_free(sl_redis *rd);

/* Decides rq in Redis through the batcher (limiter_batch.h says how
 * concurrent calls share round trips and how every call returns by its own
 * deadline, now + timeout_ms).  SLUICE_ELIMITER naming `where` for a failed
 * connect, I/O error, timeout, error reply or malformed reply;
 * SLUICE_ENOMEM. */
int sl_redis_decide(sl_redis *rd, const sl_lim_req *rq, sluice_limit_result *r,
                    sluice_error *err);

/* Redis Cluster (limiter_cluster.c routes; the round trip is here).  A
 * node's round trip sends one EVALSHA per slot group of its batch (an
 * ASKING decision or one marked `single` alone, ASKING before it), all
 * pipelined in one round trip, and after NOSCRIPT loads the script and
 * sends the groups that had it again.  A group answered with MOVED, ASK,
 * TRYAGAIN or CLUSTERDOWN gives SL_LIM_REDIRECT with err->msg the
 * server's text: routing is the caller's business. */
#define SL_LIM_REDIRECT 1
typedef struct sl_redis_route {
    unsigned slot;         /* the key's slot */
    int asking;            /* send ASKING first (an ASK redirect) */
    int single;            /* one key in its EVALSHA (after TRYAGAIN) */
    int64_t deadline;      /* the decision's own deadline */
} sl_redis_route;
int sl_redis_decide_routed(sl_redis *rd, const sl_lim_req *rq, const sl_redis_route *rt,
                           sluice_limit_result *r, sluice_error *err);

/* Round trips made, decisions they carried, and failures (connects, I/O,
 * timeouts, error replies).  In cluster mode a round trip is one pipeline
 * of EVALSHAs (one per slot group). */
uint64_t sl_redis_round_trips(sl_redis *rd);
uint64_t sl_redis_decisions(sl_redis *rd);
uint64_t sl_redis_errors(sl_redis *rd);
/* Times the sentinel's master address was marked stale and looked up
 * again (0 without a sentinel). */
uint64_t sl_redis_rediscoveries(sl_redis *rd);
/* "host:port", the socket path, or "master '<name>'" with a sentinel. */
/* When a connect last failed or a connection last broke (monotonic ns;
 * 0: never). */
int64_t sl_redis_failed_at(sl_redis *rd);
/* "host:port" or the socket path. */
const char *sl_redis_where(const sl_redis *rd);

/* (limiter_script.c) Turns the script's reply into n results: an array of 4*n integers
 * (allowed 0|1, remaining >= 0, retry_after_ms -1 when allowed else >= 0,
 * reset_after_ms >= 0).  Anything else gives SLUICE_ELIMITER naming what
 * was wrong (an error reply's text included, control bytes replaced).
 * Never reads past what the reply declares. */
int sl_redis_decode_reply(const struct redisReply *reply, size_t n, sluice_limit_result *out,
                          const char *where, sluice_error *err);

/* The GCRA script (for the benchmark's one-decision-per-EVALSHA loop).
 * KEYS[i] is decision i's key; ARGV holds SL_REDIS_ARGS_PER_DECISION
 * fields per decision: op ("c" check, "p" peek, "d" cooldown), T in
 * microseconds (sl_gcra_interval_us, %.17g so it reads back exactly),
 * burst, arg (cost or ms), now_us (-1 = Redis TIME).  The reply is 4
 * integers per decision (see sl_redis_decode_reply). */
extern const char sl_redis_script[];
#define SL_REDIS_ARGS_PER_DECISION 5

/* --- the front (limiter.c) --------------------------------------------- */

/* The public calls with an error out-argument: SLUICE_EINVAL names the bad
 * argument, SLUICE_ELIMITER the Redis host (password masked) and the
 * cause.  sl_limiter_acquire takes an absolute deadline (SL_NO_DEADLINE:
 * none), the form a whole-call timeout has. */
int sl_limiter_check(sluice_limiter *l, const char *key, const sluice_limit *lim, int cost,
                     sluice_limit_result *r, sluice_error *err);
int sl_limiter_peek(sluice_limiter *l, const char *key, const sluice_limit *lim,
                    sluice_limit_result *r, sluice_error *err);
int sl_limiter_acquire(sluice_limiter *l, const char *key, const sluice_limit *lim, int cost,
                       int64_t deadline, sluice_limit_result *r, sluice_error *err);
int sl_limiter_cooldown(sluice_limiter *l, const char *key, const sluice_limit *lim, int ms,
                        sluice_limit_result *r, sluice_error *err);

/* One decision at a fixed clock (now_us >= 0, microseconds) or the real one
 * (SL_LIM_NOW), through the same path as the public calls (fail modes
 * included).  Test-only: it is how both backends are checked against one
 * table of cases. */
int sl_limiter_decide_at(sluice_limiter *l, sl_lim_op op, const char *key,
                         const sluice_limit *lim, int arg, int64_t now_us,
                         sluice_limit_result *r, sluice_error *err);

/* A Redis Cluster limiter's node i into *out: 1, or 0 past the last node
 * or when not on a cluster.  Allocates nothing. */
int sl_limiter_cluster_node(sluice_limiter *l, size_t i, struct sluice_limiter_node_stats *out);

/* The in-process table (the limiter itself, or the Redis limiter's
 * SLUICE_FAIL_LOCAL fallback).  For tests. */
sl_local *sl_limiter_local(sluice_limiter *l);

#endif
