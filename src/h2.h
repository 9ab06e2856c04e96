/* HTTP/2 (RFC 9113) through libnghttp2: connections every thread of the
 * process shares, and the table of origins that sends each request to
 * HTTP/1.1 or to a stream on one of them.
 *
 * Contract:
 *  - Each connection has one I/O thread (Go's readLoop), for wolfSSL as
 *    packaged has no wolfSSL_write_dup: it alone reads, writes and closes
 *    the socket and its TLS session.  It polls the socket and an eventfd,
 *    feeds what arrives to nghttp2, sends what nghttp2 has to send, wakes
 *    the callers whose streams moved, and keeps the PING and idle timers.
 *  - A connection's lock guards its nghttp2 session and its streams.  A
 *    caller submits its request and takes its response bytes under it; the
 *    I/O thread feeds and drains nghttp2 under it.  No socket I/O happens
 *    with it held.
 *  - The table's lock guards the origins, their connection lists, the
 *    stream slots leased on each connection and the queues of callers
 *    waiting for one.  Order: table, then connection; the I/O thread
 *    takes the table's lock only without its connection's.
 *  - Per origin (the HTTP/1.1 pool's key): UNKNOWN until the first dial
 *    tells (one dial at a time, the others wait for it), then H1 (the
 *    HTTP/1.1 pool serves it from then on) or H2.  An H2 origin opens
 *    another connection only when every open one is at its stream limit
 *    (the server's SETTINGS_MAX_CONCURRENT_STREAMS, or the client's cap;
 *    one stream, the dialer's, until the server's SETTINGS arrive),
 *    within max_per_origin; until then callers wait, first come first
 *    served, in an sl_waitq (the pool's queue) up to their deadline.
 *  - A request that the server refused unprocessed (REFUSED_STREAM, a
 *    stream above a GOAWAY's last id), or that found its connection
 *    draining or out of stream ids, comes back as SL_H2_AGAIN: it may go
 *    to another connection as it is, which is not a retry.
 *  - Response bytes reach the caller as an HTTP/1.1 response (the head
 *    written out from the HEADERS frame, then the DATA), so the one
 *    response parser, its limits, the decoders and the streaming sink
 *    serve both protocols.  Flow-control credit goes back only as the
 *    caller takes the bytes: a slow reader stalls only its own stream.
 */
#ifndef SL_H2_H
#define SL_H2_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "conn.h"
#include "http1.h"
#include "sluice.h"

typedef struct sl_h2_pool sl_h2_pool;
typedef struct sl_h2_conn sl_h2_conn;

/* Returned for a request that may go to another connection unchanged. */
#define SL_H2_AGAIN 1

typedef struct sl_h2_cfg {
    int max_per_origin;         /* connections per origin; 0 = unlimited */
    int max_streams;            /* the client's cap per connection; 0 = the server's */
    int stream_window;          /* per-stream receive window (bytes) */
    int ping_interval_ms;       /* PING after this long without a frame; 0 = never */
    int ping_timeout_ms;        /* and give up this long after */
    int idle_timeout_ms;        /* close a connection without streams this long; 0 = never */
    size_t max_header_bytes;    /* a response head past it resets its stream */
    int first_stream_id;        /* tests: start stream ids here (0 = 1) */
} sl_h2_cfg;

/* `env` (the factory's) must outlive the table. */
sl_h2_pool *sl_h2_pool_new(const sl_h2_cfg *cfg, sl_conn_env *env, sluice_error *err);
/* Ends every stream with SLUICE_ECLOSED and every wait, and stops the I/O
 * threads (new acquires fail with SLUICE_ECLOSED). */
void sl_h2_pool_close(sl_h2_pool *p);
/* Closes, joins every I/O thread and frees; no lease may be held. */
void sl_h2_pool_free(sl_h2_pool *p);

/* Where a request goes. */
typedef struct sl_h2_lease {
    sl_h2_conn *conn;           /* a stream slot on it; NULL: HTTP/1.1 */
    sl_conn *h1;                /* HTTP/1.1 found by this caller's dial: the
                                   connection, for the HTTP/1.1 pool to adopt */
    int fresh;                  /* conn (or h1) was opened for this request */
    int resumed;                /* ... with a resumed TLS session */
    int64_t wait_ns;            /* waited this long for a slot or the dial */
} sl_h2_lease;

/* Finds the route for `key` (target t, `prior` = h2c prior knowledge for
 * http://): a stream slot on an h2 connection, or HTTP/1.1.  May dial
 * (outside every lock) and may wait, until `deadline`: SLUICE_EPOOLTIMEOUT
 * then, SLUICE_ECLOSED after close, or the dial's error (which the callers
 * that waited for that dial share). */
int sl_h2_acquire(sl_h2_pool *p, const char *key, const sl_conn_target *t, int prior,
                  int64_t deadline, sl_h2_lease *l, sluice_error *err);
/* Gives the slot back (nothing for HTTP/1.1 leases). */
void sl_h2_release(sl_h2_pool *p, sl_h2_lease *l);

/* One request on a connection, owned by the calling thread. */
typedef struct sl_h2_stream {
    sl_h2_conn *conn;
    int32_t id;
    struct sl_h2_stream *prev, *next;   /* the connection's streams (its lock) */
    struct sl_h2_stream *tnext;         /* moved in this I/O round */
    int touched;
    _Atomic uint32_t seq;               /* bumped and woken when it moved */
    sl_buf in;                          /* the head as HTTP/1.1, then DATA, not yet taken */
    size_t in_off;
    sl_buf mine;                        /* taken by the reader: read without the lock */
    size_t mine_off;
    int detached;                       /* off the connection (sl_h2_stream_end's work done) */
    size_t head_len;                    /* bytes of the head still in `in` */
    int status;                         /* of the head being received */
    size_t head_mark;                   /* where that head began in `in` */
    size_t header_bytes;
    int head_done;
    int closed;                         /* no more bytes will come */
    int rc;                             /* the reason, when not a clean end */
    int refused;                        /* unprocessed: may go elsewhere */
    int headers_out;                    /* the request's HEADERS went on the wire */
    char msg[200];
    int64_t read_timeout_ns;
    /* the request body: in memory, or pushed by the caller (streamed) */
    const char *body;
    size_t body_len, body_off;
    int streamed;
    sl_buf up;
    size_t up_off;
    int up_eof, deferred;
    size_t sent;                        /* body bytes handed to nghttp2 */
    size_t received;                    /* DATA bytes that arrived */
} sl_h2_stream;

/* Submits `r` (as for HTTP/1.1; `scheme` "https" or "http") on the
 * lease's connection.  The body is `body`/`body_len` in memory (it must
 * stay until sl_h2_stream_end), or, with `streamed`, what the caller then
 * passes to sl_h2_stream_push.  0, SL_H2_AGAIN (draining, out of ids), or
 * a negative SLUICE_E*. */
int sl_h2_stream_open(sl_h2_stream *st, sl_h2_conn *c, const sl_http_req *r, const char *scheme,
                      const void *body, size_t body_len, int streamed, int64_t read_timeout_ns,
                      sluice_error *err);
/* A streamed body's next bytes (eof: the last); waits for room (64 KiB
 * pending at most) until the deadline.  0; SLUICE_ETIMEDOUT; or the
 * stream's error when it ended first (an early answer: the rest is
 * dropped). */
int sl_h2_stream_push(sl_h2_stream *st, const void *p, size_t n, int eof, int64_t deadline,
                      sluice_error *err);
/* An sl_http_io read callback, ctx the stream: the response as HTTP/1.1
 * bytes; each read waits at most the read timeout, never past deadline. */
ssize_t sl_h2_read(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err);
/* Done with the stream: after a complete response (ok), waits until
 * `deadline` for the stream to end; otherwise (or then) resets it with
 * CANCEL.  Late DATA is consumed and dropped.  Returns 1 when the stream
 * was refused unprocessed (SL_H2_AGAIN's case). */
int sl_h2_stream_end(sl_h2_stream *st, int ok, int64_t deadline);

/* Tests and fuzzing: serves `key` over an h2 connection on `fd`, already
 * connected (no TLS, h2 from the first byte); takes fd. */
int sl_h2_pool_adopt(sl_h2_pool *p, const char *key, int fd, sluice_error *err);

/* Tests: new connections start their stream ids at `id` (odd), so that
 * running out of ids can be seen without 2^30 requests. */
void sl_h2_pool_set_first_stream_id(sl_h2_pool *p, int id);

/* Counters for struct sluice_pool_stats. */
void sl_h2_stats(sl_h2_pool *p, struct sluice_pool_stats *out);

#endif
