/* The HTTP side of coalescing: a request's key, and the value a shared
 * flight hands its other callers.  The request path (client.c) freezes a
 * call's key parts here before it asks the coalescer, and publishes its
 * result through sl_http_flight_end.
 *
 * Contract:
 *  - A key (sl_http_key) points at the parts of a request as they stood
 *    when the call began: the client's prefix, the method, the path and
 *    query, the caller's headers and body.  Followers read a leader's key
 *    under the coalescer's stripe lock while the leader runs, so nothing
 *    may change those parts until the leader's sl_http_flight_end()
 *    returns: the redirect code works on its own copies.
 *  - A prefix belongs to its client and lives as long as the client;
 *    window entries that still name one are dropped with the coalescer,
 *    and clients are only freed with the factory that owns both.
 *  - The flight's value is a reference of its own on the leader's response
 *    and a copy of its error; followers get a handle of their own.
 */
#ifndef SL_HTTP_COALESCE_H
#define SL_HTTP_COALESCE_H

#include <stdint.h>

#include "coalesce.h"
#include "sluice.h"

/* The client's share of every key, written and hashed once: the origin,
 * the base path and the default headers (so two credentials never share
 * a flight). */
typedef struct sl_http_key_prefix {
    char *bytes;
    size_t len;
    uint64_t hash;              /* of bytes */
    uint64_t hash_get;          /* of bytes and "GET" */
} sl_http_key_prefix;

/* 0, or SLUICE_ENOMEM (with err naming the service). */
int sl_http_key_prefix_init(sl_http_key_prefix *p, const sluice_coalescer *co, const char *origin,
                            const char *base_path, size_t base_path_len,
                            const sluice_header *headers, size_t nheaders, const char *service,
                            sluice_error *err);
void sl_http_key_prefix_free(sl_http_key_prefix *p);

/* A request's frozen parts.  rel is path[?query] as sent; rel_path_len is
 * its path's length, up to the '?'. */
typedef struct sl_http_key {
    const sl_http_key_prefix *prefix;
    const char *method;
    int is_get;                 /* method is "GET" (its hash is the prefix's) */
    const char *rel;
    size_t rel_len, rel_path_len;
    const sluice_header *headers;
    size_t nheaders;
    const void *body;
    size_t body_len;
} sl_http_key;

/* The factory's coalescer, whose flights carry a call's response or error;
 * its window holds about max_bytes at most (0: the default), responses
 * counted. */
sluice_coalescer *sl_http_coalescer_new(size_t max_bytes, sluice_error *err);

/* Asks the coalescer for the key (sl_flight_begin): 1 when the caller
 * leads and must call sl_http_flight_end(), else 0 with *out filled. */
int sl_http_flight_begin(sluice_coalescer *co, const sl_http_key *key, const sl_flight_opts *o,
                         sl_flight_lead *lead, sluice_flight_result *out);

/* Publishes the leader's result: rc, its response (still the leader's)
 * and, when rc is not 0, its error.  keep asks for the window. */
void sl_http_flight_end(sluice_coalescer *co, sl_flight_lead *lead, int rc,
                        sluice_response *resp, const sluice_error *err, int keep, int window_ms);

/* The HTTP status a flight's result carries, 0 when none. */
int sl_http_flight_status(const sluice_flight_result *r);

/* What a caller the leader served gets: a handle of its own on the
 * leader's response (in *out), or the leader's error, or the coalescer's
 * own; releases the result.  Returns the code. */
int sl_http_flight_take(sluice_flight_result *r, sluice_response **out, sluice_error *err);

#endif
