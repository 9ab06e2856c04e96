/* One HTTP/2 connection and its I/O thread (h2_conn.c), as the origin
 * table (h2.c) sees it.  See h2.h for the threads and locks. */
#ifndef SL_H2_CONN_H
#define SL_H2_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "h2.h"

typedef struct sl_h2_origin sl_h2_origin;

/* The counters behind sluice_pool_stats' h2 fields (relaxed atomics). */
typedef struct sl_h2_counts {
    _Atomic int open, streams, streams_peak;
    _Atomic uint64_t goaways, refused;
} sl_h2_counts;

struct sl_h2_conn {
    /* the table's (under its lock) */
    sl_h2_conn *next;           /* the origin's connections */
    sl_h2_origin *origin;
    int reserved;               /* stream slots leased */
    int reaped;                 /* off the list, to be joined */
    /* written by the I/O thread, read by the table without a lock */
    _Atomic int limit;          /* streams the server allows (capped by the client's) */
    _Atomic int draining;       /* no new streams: GOAWAY, ids out, idle, failed */
    _Atomic int finished;       /* the I/O thread is past its last stream */
    _Atomic int exited;         /* ... and done with the table: it may be joined */
    /* fixed at the start */
    sl_h2_pool *pool;
    sl_h2_counts *counts;
    pthread_t thread;
    char peer[SL_CONN_PEER_MAX];
    int tls;
};

/* Starts a connection over `net` (connected; TLS done when https, h2
 * chosen or known) and its I/O thread; takes `net` (closed on failure
 * too).  NULL with err set on failure. */
sl_h2_conn *sl_h2_conn_start(sl_h2_pool *p, sl_h2_origin *o, sl_conn *net, const sl_h2_cfg *cfg,
                             sl_h2_counts *counts, sluice_error *err);
/* Asks the I/O thread to end every stream with SLUICE_ECLOSED and stop. */
void sl_h2_conn_shut(sl_h2_conn *c);
/* Joins the I/O thread (it must have been shut or have finished) and frees. */
void sl_h2_conn_free(sl_h2_conn *c);
/* In a fork() child: frees a connection made in the parent, whose I/O
 * thread is not here, without writing to the socket. */
void sl_h2_conn_forget(sl_h2_conn *c);

/* h2.c: the I/O thread's news for the table (its limit grew, it drains,
 * it finished): the origin's waiters are served again.  Called without
 * the connection's lock. */
void sl_h2_pool_notify(sl_h2_pool *p, sl_h2_origin *o);

#endif
