/* Redis Cluster's addressing (redis_cluster.c): the slot of a key, the
 * slot map a CLUSTER SLOTS reply describes, and the MOVED / ASK redirects
 * a node answers with.  Pure functions over caller-owned data: no I/O, no
 * locks, no state; safe from any thread.  Parsers read only what a reply
 * declares and refuse anything malformed with SLUICE_ELIMITER naming what
 * was wrong (a server's answer, not the caller's settings, is at fault).
 *
 * This is the addressing layer the limiter's cluster mode routes with;
 * the URL form "redis+cluster://" is parsed in redis_url.c.
 */
#ifndef SL_REDIS_CLUSTER_H
#define SL_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

struct redisReply;

#define SL_CLUSTER_SLOTS 16384
#define SL_CLUSTER_HOST_MAX 255     /* longest host name or address kept */
#define SL_CLUSTER_MAX_NODES 1024   /* primaries a map may name */
#define SL_CLUSTER_NO_NODE 0xffff   /* a slot no primary serves */

/* CRC16/XMODEM (polynomial 0x1021, initial 0) of key[0..len), as Redis
 * Cluster computes it. */
uint16_t sl_cluster_crc16(const char *key, size_t len);

/* The slot of a key: the CRC16 of its hash tag (the bytes between the
 * first '{' and the first '}' after it, when there is at least one) or
 * else of the whole key, mod 16384. */
unsigned sl_cluster_keyslot(const char *key, size_t len);

/* A primary as CLUSTER SLOTS names it. */
typedef struct sl_cluster_addr {
    char host[SL_CLUSTER_HOST_MAX + 1];
    int port;
} sl_cluster_addr;

/* For each slot, the index in nodes[] of its primary, or
 * SL_CLUSTER_NO_NODE.  Replicas are not kept: the limiter's script
 * writes, so only primaries ever decide. */
typedef struct sl_slot_map {
    uint16_t owner[SL_CLUSTER_SLOTS];
    sl_cluster_addr nodes[SL_CLUSTER_MAX_NODES];
    size_t nnodes;
} sl_slot_map;

/* Fills *map (which the caller allocates: it is large) from a CLUSTER
 * SLOTS reply: an array of [start, end, [host, port, ...], replicas...].
 * An empty host means the node that was asked, `asked_host`; Redis 7's
 * "?" (unknown endpoint) and any host that is not letters, digits, '-',
 * '.', '_' or ':' are refused, as are ports outside 1..65535, ranges
 * outside 0..16383 or reversed, and more than SL_CLUSTER_MAX_NODES
 * primaries.  Overlapping ranges: the later wins.  0, or SLUICE_ELIMITER
 * (the map is then all SL_CLUSTER_NO_NODE). */
int sl_cluster_parse_slots(const struct redisReply *r, const char *asked_host, sl_slot_map *map,
                           sluice_error *err);

/* What an error reply asks for. */
typedef enum sl_redirect_kind {
    SL_REDIRECT_NONE = 0,   /* not a redirect */
    SL_REDIRECT_MOVED = 1,  /* "MOVED <slot> <host>:<port>": the map is stale */
    SL_REDIRECT_ASK = 2     /* "ASK <slot> <host>:<port>": this once, with ASKING */
} sl_redirect_kind;

/* Parses an error reply's text (s[0..len), not NUL-terminated).  For MOVED
 * and ASK fills *slot and *to ("host:port", "[v6]:port" or, as Redis 7
 * sends when the endpoint is unknown, ":port", which means the node that
 * answered: to->host is then empty).  A text that starts with MOVED or ASK
 * but is malformed gives SLUICE_ELIMITER; any other text is
 * SL_REDIRECT_NONE (0 returned).  Returns 0 with *kind set, or
 * SLUICE_ELIMITER. */
int sl_cluster_parse_redirect(const char *s, size_t len, sl_redirect_kind *kind, unsigned *slot,
                              sl_cluster_addr *to, sluice_error *err);

#endif
