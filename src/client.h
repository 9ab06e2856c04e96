/* The factory and its clients: what factory.c and client.c share.
 *
 * Locks: factory->lock guards only the client registry.  No I/O, no
 * connect, no TLS and no Redis call happens while it is held; client
 * creation parses and copies outside it and inserts under it. */
#ifndef SL_CLIENT_H
#define SL_CLIENT_H

#include <pthread.h>
#include <stdint.h>

#include "adaptive.h"
#include "breaker.h"
#include "conn.h"
#include "dns.h"
#include "h2.h"
#include "http_coalesce.h"
#include "metrics.h"
#include "pool.h"
#include "retry.h"
#include "sluice.h"
#include "sock.h"
#include "tls.h"
#include "url.h"
#include "waitq.h"

struct sluice_factory {
    sluice_factory_opts opts;     /* strings point into owned copies below */
    char *strs[8];                /* owned copies of the option strings */
    sl_pool *pool;
    sl_h2_pool *h2;               /* origins' protocols and HTTP/2 connections */
    sl_conn_env net;              /* what the pool's connections share */
    sluice_limiter *limiter;
    sluice_coalescer *co;

    pthread_mutex_t lock;         /* the registry; also closed/in_flight waits */
    pthread_cond_t idle;          /* signalled when in_flight drops to 0 */
    sluice_client *clients;
    int nclients;
    int closed;                   /* atomic */
    long in_flight;               /* atomic */
    sl_metrics_totals totals;     /* the rest is summed from the clients */
};

/* One base or fallback URL with its own breaker. */
typedef struct sl_endpoint {
    sl_url url;
    sl_breaker *breaker;
} sl_endpoint;

struct sluice_client {
    sluice_client *next;          /* registry list, under factory->lock */
    sluice_factory *f;
    char *service;
    char *api_version;
    char *fingerprint;            /* the normalised options, for EEXIST */

    sl_endpoint *eps;
    size_t neps;
    unsigned rr;                  /* atomic: round-robin cursor */
    sluice_client_opts opts;      /* scalars; pointers below are owned copies */
    sluice_header *headers;
    size_t nheaders;
    char *base_path;              /* base_url's path without a trailing '/' */
    size_t base_path_len;
    sl_http_key_prefix key_prefix;  /* the client's part of a coalescing key */
    char *unix_path;              /* unix_socket_path's copy, or NULL */

    sl_retry_policy retry;
    sl_retry_budget *budget;

    pthread_mutex_t bulk_lock;    /* max_in_flight: guards the queue */
    sl_waitq bulk_q;              /* the pool's kind of queue (waitq.h) */
    _Atomic int bulk_used;        /* places taken; changed without the lock only
                                     while nobody is queued (client.c) */
    _Atomic int bulk_waiting;     /* calls in bulk_q */
    sl_adaptive adapt;            /* adaptive_concurrency: the limit (adaptive.h) */
    _Atomic uint64_t limited;     /* calls that waited for a place or were refused one */

    sl_metrics metrics;
};

/* factory.c */
/* Enters a call: SLUICE_ECLOSED once sluice_factory_free has begun. */
int sl_factory_enter(sluice_factory *f, sluice_error *err);
void sl_factory_leave(sluice_factory *f);

/* client.c */
sluice_client *sl_client_new(sluice_factory *f, const char *service,
                             const sluice_client_opts *o, sluice_error *err);
void sl_client_free(sluice_client *c);

#endif
