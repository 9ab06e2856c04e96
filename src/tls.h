/* TLS through wolfSSL.  One sl_tls_ctx per factory (thread-safe), one
 * sl_tls per connection (used by one thread at a time).  wolfSSL is
 * initialised once per process. */
#ifndef SL_TLS_H
#define SL_TLS_H

#include <stdint.h>
#include <sys/types.h>

#include "sluice.h"

typedef struct sl_tls_ctx sl_tls_ctx;
typedef struct sl_tls sl_tls;

/* Builds the context from the factory's TLS options: verification on
 * against the system store or ca_file/ca_path, TLS 1.2 minimum unless
 * tls_min_version = 13, client certificate and key when given.
 * tls_insecure_skip_verify logs a warning.  SLUICE_ETLS naming the file on
 * failure. */
sl_tls_ctx *sl_tls_ctx_new(const sluice_factory_opts *o, sluice_error *err);
void sl_tls_ctx_free(sl_tls_ctx *t);

/* Runs the handshake on connected `fd` for `host` (SNI
 * unless an IP literal; name or IP verified), offering ALPN http/1.1
 * (with offer_h2: "h2" first, then http/1.1; sl_tls_alpn_h2 tells the
 * server's choice) and
 * resuming the session cached for `origin` when there is one.  Honours
 * `deadline`.  *resumed tells whether the session was resumed.  On
 * failure SLUICE_ETLS (or ETIMEDOUT/EIO) with wolfSSL's reason and the
 * host in the message; fd stays open (the caller closes it). */
int sl_tls_connect(sl_tls_ctx *t, int fd, const char *host, const char *origin, int offer_h2,
                   int64_t deadline, sl_tls **out, int *resumed, sluice_error *err);

/* 1 when the server chose "h2" by ALPN. */
int sl_tls_alpn_h2(sl_tls *s);

/* For an event loop (the HTTP/2 I/O thread) that polls the socket itself:
 * never waits.  read: count > 0, or 0 when nothing is there now (*eof = 1
 * when the peer closed), or a negative SLUICE_E*.  write: len once the
 * record is out, 0 when the socket is full (call again with the same buf
 * and len once it is writable), or a negative SLUICE_E*. */
ssize_t sl_tls_read_now(sl_tls *s, void *buf, size_t cap, int *eof, sluice_error *err);
ssize_t sl_tls_write_now(sl_tls *s, const void *buf, size_t len, sluice_error *err);

/* Reads up to cap bytes: count, 0 on close (close_notify or EOF), or a
 * negative SLUICE_E* with err set.  Waits up to deadline: inside recv()
 * when fd is in blocking mode (SO_RCVTIMEO, see sl_sock_recv_wait), with
 * poll otherwise and for the last milliseconds.  Every other call here
 * uses MSG_DONTWAIT, whatever the fd's mode. */
ssize_t sl_tls_read(sl_tls *s, void *buf, size_t cap, int64_t deadline, sluice_error *err);
/* Writes all len bytes before the deadline: 0 or a negative SLUICE_E*. */
int sl_tls_write(sl_tls *s, const void *buf, size_t len, int64_t deadline, sluice_error *err);
/* Bytes buffered but not yet read: decrypted, or received and not yet
 * decrypted. */
int sl_tls_pending(sl_tls *s);
/* Sends close_notify without blocking, saves nothing, frees.  Does not
 * close the fd. */
void sl_tls_free(sl_tls *s);
/* Frees without a word to the peer: for a session another process still
 * uses (one a fork() child inherited).  Does not close the fd. */
void sl_tls_forget(sl_tls *s);

/* Handshake counters since the context was made. */
void sl_tls_ctx_counts(sl_tls_ctx *t, uint64_t *full, uint64_t *resumed);

#endif
