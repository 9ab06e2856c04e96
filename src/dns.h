/* Name resolution behind a thread-safe cache.
 *
 * getaddrinfo() runs without any lock held; the cache's mutex only guards
 * the table.  Results are refcounted so a connection attempt can keep
 * using an address list the cache has since replaced.  Failures are cached
 * for a few seconds so a dead name does not cost every caller a lookup. */
#ifndef SL_DNS_H
#define SL_DNS_H

#include <stdint.h>
#include <sys/socket.h>

#include "sluice.h"

typedef struct sl_addr {
    struct sockaddr_storage sa;
    socklen_t len;
} sl_addr;

/* An immutable, refcounted list of addresses in getaddrinfo's order. */
typedef struct sl_addrs {
    int refs;          /* atomic */
    size_t n;
    sl_addr a[];
} sl_addrs;

typedef struct sl_dns sl_dns;

/* ttl_ms: how long an answer is kept (0 = 60 s). */
sl_dns *sl_dns_new(int ttl_ms, sluice_error *err);
void sl_dns_free(sl_dns *d);

/* Resolves host:port (numeric hosts without a lookup).  Returns 0 with
 * *out holding a reference the caller drops with sl_addrs_release, or
 * SLUICE_ERESOLVE naming the host. */
int sl_dns_resolve(sl_dns *d, const char *host, int port, sl_addrs **out, sluice_error *err);
void sl_addrs_release(sl_addrs *a);

#endif
