/* The limiter's Redis Cluster backend (limiter_cluster.c): a slot map and
 * one Redis backend (limiter_redis.c: pool, batcher, script) per primary.
 *
 * Routing: a decision's key picks its slot (redis_cluster.c), the slot
 * its primary, and the decision queues on that primary's batcher, so a
 * batch holds keys of one node only; its round trip sends one EVALSHA per
 * slot group, pipelined.  Replicas never decide.
 *
 * Redirects, at most SL_CLUSTER_MAX_REDIRECTS per decision and all within
 * its deadline (now + timeout_ms): MOVED patches the slot in the map,
 * asks for a refresh and sends to the new owner; ASK sends ASKING and the
 * command to the target once, the map unchanged; TRYAGAIN sends again
 * alone after a short pause; NOSCRIPT is handled by the node's round trip
 * (SCRIPT LOAD there).  CLUSTERDOWN, a failed connect or an I/O error
 * give SLUICE_ELIMITER at once (never sent again: the script may have
 * run) and ask for a refresh; the front then applies its fail mode to
 * that decision only, so a dead node sends only its own keys there.  A
 * node that failed to connect or broke is skipped (SLUICE_ELIMITER) for
 * NODE_DOWN_MS, so a dead primary costs one connect attempt per window.
 *
 * The map: fetched with CLUSTER SLOTS from a known node (the current
 * map's primaries first) or a seed by a refresher thread, when a decision
 * asks (MOVED, CLUSTERDOWN, a node failure, no owner for a slot) and when
 * it is older than 60 s; one refresh at a time, at most every 200 ms.
 * The new map is built without the lock and copied in under it.  No
 * caller ever waits for a refresh.
 *
 * Locking: `mu` guards the slot table, the node table and the refresher's
 * schedule; it is held for look-ups and copies only, never across I/O,
 * a connect or a close.  Nodes are created without the lock (no I/O: the
 * first decision connects) and live until sl_cluster_free.
 * Threading: everything is thread-safe except sl_cluster_free, called
 * once no decision is in flight.
 */
#ifndef SL_LIMITER_CLUSTER_H
#define SL_LIMITER_CLUSTER_H

#include <stdint.h>

#include "limiter.h"
#include "redis_conn.h"
#include "sluice.h"

#define SL_CLUSTER_MAX_REDIRECTS 3

typedef struct sl_cluster sl_cluster;

/* Takes ownership of seeds[0..n) (freed, *seeds cleared, on return).
 * Asks the seeds for the slot map within cfg->create_timeout_ms:
 * SLUICE_EINVAL and NULL when a seed answers that it has cluster support
 * disabled, SLUICE_ELIMITER and NULL when one refuses the credentials.
 * No seed reachable is not an error: *reachable is 0, the refresher keeps
 * trying and decisions fail until a map is in. */
sl_cluster *sl_cluster_new(sl_redis_url **seeds, size_t n, const sl_redis_cfg *cfg,
                           int *reachable, sluice_error *err);
void sl_cluster_free(sl_cluster *cl);

/* Decides rq on the primary that owns its key's slot, following redirects.
 * SLUICE_ELIMITER naming the node and the cause when the node cannot
 * decide (the caller's fail mode applies); SLUICE_ENOMEM. */
int sl_cluster_decide(sl_cluster *cl, const sl_lim_req *rq, sluice_limit_result *r,
                      sluice_error *err);

/* Counters for sluice_limiter_stats: round trips, decisions and errors
 * summed over the nodes, and the cluster's own. */
typedef struct sl_cluster_stats {
    uint64_t round_trips, decisions, errors;
    uint64_t nodes, moved, ask, tryagain, refreshes, node_fallbacks;
} sl_cluster_stats;
void sl_cluster_get_stats(sl_cluster *cl, sl_cluster_stats *out);

/* sluice_limiter_cluster_nodes: the nodes known, at most cap copied. */
size_t sl_cluster_node_stats(sl_cluster *cl, struct sluice_limiter_node_stats *out, size_t cap);
/* Node i's figures into *out: 1, or 0 past the last node.  Allocates
 * nothing (the metrics export calls it). */
int sl_cluster_node_at(sl_cluster *cl, size_t i, struct sluice_limiter_node_stats *out);

/* The first seed's "host:port", for messages. */
const char *sl_cluster_where(const sl_cluster *cl);

#endif
