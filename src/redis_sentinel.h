/* Redis Sentinel discovery for the limiter's connections (redis_sentinel.c).
 *
 * The master's address is asked of the sentinels, in the order the URL
 * lists them, with SENTINEL get-master-addr-by-name; the answer is only
 * used once a connection to it says ROLE master (a sentinel with a stale
 * view that names a replica is passed over for the next one).  The address
 * found is kept and every later connection goes to it, each checked with
 * ROLE again, until a caller marks it stale (sl_sentinel_stale: a
 * connection closed by the server, a -READONLY reply, a failed connect, a
 * ROLE that is not master); the next connection then asks the sentinels
 * again.
 *
 * Generations: the address has a generation, bumped when it is marked
 * stale.  A connection remembers the generation it was made under; once
 * that is no longer sl_sentinel_gen() it goes to an old address and its
 * owner closes it (the limiter's pool drops such connections at checkout
 * and when they are put back).
 *
 * A watcher thread (one per sl_sentinel) asks the sentinels once a second
 * where the master is and marks the address stale when they name another:
 * a master demoted by a failover can keep accepting writes for seconds
 * before the sentinels reconfigure it and close its clients.
 *
 * Locking: one mutex guards the address, its generation and the
 * discovery flag; it is never held across a connect, a command or a
 * close.  At most one thread asks the sentinels at a time; others wait
 * for its result on a condition variable, never past their own deadline.
 * Thread-safe except sl_sentinel_free.
 */
#ifndef SL_REDIS_SENTINEL_H
#define SL_REDIS_SENTINEL_H

#include <stdint.h>

#include "redis_conn.h"
#include "sluice.h"

struct redisContext;

typedef struct sl_sentinel sl_sentinel;

/* Takes the sentinel list and the master's name out of *u (they are
 * zeroed there; u->auth stays the caller's) and starts the watcher.  NULL
 * with err set (SLUICE_ENOMEM, also when no thread can be started). */
sl_sentinel *sl_sentinel_new(sl_redis_sentinel_url *u, sluice_error *err);
/* Stops the watcher (within its current question, at most half a second)
 * and frees.  NULL is a no-op. */
void sl_sentinel_free(sl_sentinel *s);

/* Connects to the current master before `deadline`, asking the sentinels
 * first when no address is known or it was marked stale, then AUTH and
 * SELECT as `auth` says (the master's credentials and db) and ROLE.
 * 0 with *out and *gen set.  SLUICE_ELIMITER naming the master when no
 * sentinel answered or knew it, no address it gave was a reachable
 * master, or the deadline passed (a failed connect or a ROLE that is not
 * master also marks the address stale); *refused set (when not NULL) as
 * for sl_redis_open when the master refused the credentials or the db.
 * SLUICE_ENOMEM. */
int sl_sentinel_open(sl_sentinel *s, const sl_redis_url *auth, int64_t deadline,
                     struct redisContext **out, uint64_t *gen, int *refused, sluice_error *err);

/* Marks the address stale if it is still the one of generation `gen`
 * (a second report about the same address changes nothing).  Cannot
 * fail; takes the mutex briefly. */
void sl_sentinel_stale(sl_sentinel *s, uint64_t gen);

/* The current generation (no lock). */
uint64_t sl_sentinel_gen(sl_sentinel *s);

/* Times a known address was marked stale and is looked up again. */
uint64_t sl_sentinel_rediscoveries(sl_sentinel *s);

#endif
