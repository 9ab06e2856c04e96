/* Name resolution with deadlines, behind a thread-safe cache.
 *
 * Contract:
 *  - Lookups go through c-ares, driven on the calling thread: a channel of
 *    its own per lookup, its sockets polled until the answer or the
 *    caller's deadline, whichever comes first.  No lock is held meanwhile;
 *    the cache's mutex only guards the table.
 *  - Concurrent lookups of one host:port share one query (a coalescer keyed
 *    on "host:port"); each follower waits up to its own deadline.  When the
 *    leader's deadline ran out first, a follower with time left asks again.
 *  - Answers are kept for the records' smallest TTL, capped by ttl_ms (a
 *    TTL of 0 is not kept); names from /etc/hosts are kept ttl_ms.
 *    NXDOMAIN, "no address" and servers that all answered SERVFAIL or
 *    REFUSED (or were not listening) are kept 5 s, so a dead name does
 *    not cost every caller a query; a timeout or a deadline that passed is
 *    not kept.
 *  - The cache holds at most SL_DNS_MAX_ENTRIES names: a full table first
 *    drops what expired, then the entry closest to expiry.
 *  - Address lists are refcounted, so a connection attempt can keep using
 *    one the cache has since replaced. */
#ifndef SL_DNS_H
#define SL_DNS_H

#include <stdint.h>
#include <sys/socket.h>

#include "sluice.h"

#define SL_DNS_MAX_ENTRIES 1024

typedef struct sl_addr {
    struct sockaddr_storage sa;
    socklen_t len;
} sl_addr;

/* An immutable, refcounted list of addresses in the resolver's order. */
typedef struct sl_addrs {
    int refs;          /* atomic */
    size_t n;
    sl_addr a[];
} sl_addrs;

typedef struct sl_dns sl_dns;

/* ttl_ms: the longest an answer is kept (0 = 60 s).  servers: NULL for the
 * system's configuration (/etc/resolv.conf, /etc/hosts), else c-ares'
 * "host[:port],[v6][:port]" list (the string is copied; search domains
 * are then not appended).  Fails with SLUICE_EINVAL naming a malformed
 * servers string, or the code of what could not be set up. */
sl_dns *sl_dns_new(int ttl_ms, const char *servers, sluice_error *err);
void sl_dns_free(sl_dns *d);

/* Resolves host:port (numeric hosts without a lookup) before `deadline`
 * (monotonic ns, SL_NO_DEADLINE for none).  Returns 0 with *out holding a
 * reference the caller drops with sl_addrs_release; SLUICE_ETIMEDOUT
 * ("resolving HOST: the deadline passed") when the deadline passed first,
 * as connect and TLS report theirs; else SLUICE_ERESOLVE naming the host
 * and the reason (or SLUICE_ENOMEM).  Thread-safe. */
int sl_dns_resolve(sl_dns *d, const char *host, int port, int64_t deadline, sl_addrs **out,
                   sluice_error *err);
void sl_addrs_release(sl_addrs *a);

#endif
