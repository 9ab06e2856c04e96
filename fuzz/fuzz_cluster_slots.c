/* Redis Cluster addressing over arbitrary bytes: the first byte chooses
 * the CLUSTER SLOTS parser (odd: the rest as RESP through hiredis' reader
 * with the library's array bound) or the MOVED / ASK redirect parser (even:
 * the rest as an error reply's text, not NUL-terminated), and the key-slot
 * function on the same bytes.  Invariants: an accepted map names only
 * primaries it holds, with a non-empty host of allowed bytes and a port in
 * 1..65535; a refused one is all empty; an accepted redirect has a slot
 * below 16384 and a port in 1..65535; a key's slot is below 16384 and
 * depends on its hash tag only. */
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "redis_cluster.h"
#include "redis_conn.h"

static sl_slot_map map;

static void check_map(int rc)
{
    size_t i;

    if (rc != 0) {
        if (map.nnodes != 0 || map.owner[0] != SL_CLUSTER_NO_NODE)
            abort();
        return;
    }
    for (i = 0; i < map.nnodes; i++)
        if (!map.nodes[i].host[0] || map.nodes[i].port < 1 || map.nodes[i].port > 65535 ||
            strlen(map.nodes[i].host) > SL_CLUSTER_HOST_MAX)
            abort();
    for (i = 0; i < SL_CLUSTER_SLOTS; i++)
        if (map.owner[i] != SL_CLUSTER_NO_NODE && map.owner[i] >= map.nnodes)
            abort();
}

static void slots(const uint8_t *p, size_t n)
{
    redisReader *rd = redisReaderCreate();
    sluice_error err;
    void *reply = NULL;

    if (!rd)
        return;
    if (sl_redis_bound_reader(rd) == 0 && redisReaderFeed(rd, (const char *)p, n) == REDIS_OK &&
        redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
        check_map(sl_cluster_parse_slots(reply, "127.0.0.1", &map, &err));
        check_map(sl_cluster_parse_slots(reply, NULL, &map, &err));
        freeReplyObject(reply);
    }
    redisReaderFree(rd);
}

static void redirect(const uint8_t *p, size_t n)
{
    /* A copy of exactly n bytes, so reading past them is caught. */
    char *s = malloc(n ? n : 1);
    sl_redirect_kind kind;
    sl_cluster_addr to;
    sluice_error err;
    unsigned slot = 0;

    if (!s)
        return;
    memcpy(s, p, n);
    if (sl_cluster_parse_redirect(s, n, &kind, &slot, &to, &err) == 0 && kind != SL_REDIRECT_NONE &&
        (slot >= SL_CLUSTER_SLOTS || to.port < 1 || to.port > 65535))
        abort();
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        slots(data + 1, size - 1);
    else
        redirect(data + 1, size - 1);
    if (sl_cluster_keyslot((const char *)data + 1, size - 1) >= SL_CLUSTER_SLOTS)
        abort();
    return 0;
}
