/* Redis Cluster addressing: CRC16 key slots, the CLUSTER SLOTS map and the
 * MOVED / ASK redirects.  See redis_cluster.h. */
#include <hiredis/hiredis.h>
#include <string.h>

#include "ascii.h"
#include "error.h"
#include "redis_cluster.h"

/* --- slots ------------------------------------------------------------------- */

uint16_t sl_cluster_crc16(const char *key, size_t len)
{
    uint16_t crc = 0;
    size_t i;
    int b;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)key[i] << 8);
        for (b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned sl_cluster_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);

    if (open) {
        size_t rest = len - (size_t)(open + 1 - key);
        const char *close = memchr(open + 1, '}', rest);
        /* "{}" is no hash tag: the whole key counts, as in Redis. */
        if (close && close > open + 1)
            return sl_cluster_crc16(open + 1, (size_t)(close - open - 1)) % SL_CLUSTER_SLOTS;
    }
    return sl_cluster_crc16(key, len) % SL_CLUSTER_SLOTS;
}

/* --- addresses ---------------------------------------------------------------- */

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == ':';
}

/* Copies a host of n bytes into a; 0, or -1 when empty, too long or
 * holding a byte no host name or address has. */
static int set_host(sl_cluster_addr *a, const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > SL_CLUSTER_HOST_MAX)
        return -1;
    for (i = 0; i < n; i++)
        if (!host_char(s[i]))
            return -1;
    memcpy(a->host, s, n);
    a->host[n] = '\0';
    return 0;
}

/* --- CLUSTER SLOTS -------------------------------------------------------------- */

static int bad_slots(sl_slot_map *map, sluice_error *err, const char *what, size_t i)
{
    memset(map->owner, 0xff, sizeof map->owner);
    map->nnodes = 0;
    return sl_err(err, SLUICE_ELIMITER, "redis cluster: malformed CLUSTER SLOTS reply: %s (entry %zu)",
                  what, i);
}

/* The index of `a` in the map, added when new; -1 when the map is full. */
static int node_index(sl_slot_map *map, const sl_cluster_addr *a)
{
    size_t i;

    for (i = 0; i < map->nnodes; i++)
        if (map->nodes[i].port == a->port && strcmp(map->nodes[i].host, a->host) == 0)
            return (int)i;
    if (map->nnodes == SL_CLUSTER_MAX_NODES)
        return -1;
    map->nodes[map->nnodes] = *a;
    return (int)map->nnodes++;
}

/* The primary of one entry: [host, port, id?, ...]. */
static int entry_primary(const redisReply *p, const char *asked_host, sl_cluster_addr *a)
{
    const redisReply *h, *port;

    if (!p || p->type != REDIS_REPLY_ARRAY || p->elements < 2 || !p->element)
        return -1;
    h = p->element[0];
    port = p->element[1];
    if (!h || h->type != REDIS_REPLY_STRING || !port || port->type != REDIS_REPLY_INTEGER)
        return -1;
    if (port->integer < 1 || port->integer > 65535)
        return -1;
    a->port = (int)port->integer;
    if (h->len == 0)
        return asked_host ? set_host(a, asked_host, strlen(asked_host)) : -1;
    return set_host(a, h->str, h->len);
}

int sl_cluster_parse_slots(const redisReply *r, const char *asked_host, sl_slot_map *map,
                           sluice_error *err)
{
    size_t i;

    memset(map->owner, 0xff, sizeof map->owner);
    map->nnodes = 0;
    if (!r)
        return bad_slots(map, err, "no reply", 0);
    if (r->type == REDIS_REPLY_ERROR)
        return bad_slots(map, err, "an error reply", 0);
    if (r->type != REDIS_REPLY_ARRAY || (r->elements && !r->element))
        return bad_slots(map, err, "not an array", 0);
    for (i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        sl_cluster_addr a;
        long long lo, hi, s;
        int idx;

        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 3 || !e->element ||
            !e->element[0] || e->element[0]->type != REDIS_REPLY_INTEGER || !e->element[1] ||
            e->element[1]->type != REDIS_REPLY_INTEGER)
            return bad_slots(map, err, "an entry is not [start, end, primary, ...]", i);
        lo = e->element[0]->integer;
        hi = e->element[1]->integer;
        if (lo < 0 || hi >= SL_CLUSTER_SLOTS || lo > hi)
            return bad_slots(map, err, "a slot range is out of 0..16383", i);
        if (entry_primary(e->element[2], asked_host, &a) != 0)
            return bad_slots(map, err, "a primary's host or port is invalid", i);
        if ((idx = node_index(map, &a)) < 0)
            return bad_slots(map, err, "too many primaries", i);
        for (s = lo; s <= hi; s++)
            map->owner[s] = (uint16_t)idx;
    }
    return 0;
}

/* --- redirects ---------------------------------------------------------------- */

static int bad_redirect(sluice_error *err, const char *what)
{
    return sl_err(err, SLUICE_ELIMITER, "redis cluster: malformed redirect: %s", what);
}

/* "host:port", "[v6]:port" or ":port". */
static int parse_endpoint(const char *s, size_t n, sl_cluster_addr *to)
{
    const char *colon = NULL, *h = s;
    size_t hl, i;
    long port;

    for (i = n; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (!colon)
        return -1;
    hl = (size_t)(colon - s);
    port = sl_ascii_decimal(colon + 1, n - hl - 1, 1, 65535);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        h = s + 1;
        hl -= 2;
    }
    if (port < 0)
        return -1;
    to->port = (int)port;
    to->host[0] = '\0';
    return hl == 0 ? 0 : set_host(to, h, hl);
}

int sl_cluster_parse_redirect(const char *s, size_t len, sl_redirect_kind *kind, unsigned *slot,
                              sl_cluster_addr *to, sluice_error *err)
{
    const char *p, *sp, *end = s + len;
    size_t skip;
    long v;

    *kind = SL_REDIRECT_NONE;
    if (len >= 5 && memcmp(s, "MOVED", 5) == 0 && (len == 5 || s[5] == ' '))
        *kind = SL_REDIRECT_MOVED, skip = 5;
    else if (len >= 3 && memcmp(s, "ASK", 3) == 0 && (len == 3 || s[3] == ' '))
        *kind = SL_REDIRECT_ASK, skip = 3;
    else
        return 0;
    if (skip == len)
        return bad_redirect(err, "no slot");
    p = s + skip + 1;
    sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp)
        return bad_redirect(err, "no endpoint after the slot");
    v = sl_ascii_decimal(p, (size_t)(sp - p), 0, SL_CLUSTER_SLOTS - 1);
    if (v < 0)
        return bad_redirect(err, "the slot is not 0..16383");
    *slot = (unsigned)v;
    p = sp + 1;
    if (parse_endpoint(p, (size_t)(end - p), to) != 0)
        return bad_redirect(err, "the endpoint is not host:port");
    return 0;
}
