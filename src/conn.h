/* One HTTP connection: a socket, its TLS session when https, and its read
 * buffer.  A connection is used by one thread at a time (the one that
 * checked it out of the pool); nothing here locks. */
#ifndef SL_CONN_H
#define SL_CONN_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "buf.h"
#include "dns.h"
#include "pool.h"
#include "proxy.h"
#include "sock.h"
#include "sluice.h"
#include "tls.h"

/* Where to connect: what the pool's create callback receives as `arg`. */
typedef struct sl_conn_target {
    const char *host;
    int port;
    int tls;
    const char *origin;
    int connect_timeout_ms;   /* the asking client's; 0 = the factory's */
    const sl_proxy *proxy;    /* NULL = direct; https targets tunnel (CONNECT) */
    const char *unix_path;    /* connect to this Unix socket instead of host:port */
    int offer_h2;             /* https: offer "h2" by ALPN before http/1.1 */
    struct sl_conn *adopt;    /* open already (by the HTTP/2 probe, which found
                                 HTTP/1.1): the pool's create takes it and sets
                                 this to NULL instead of connecting */
} sl_conn_target;

/* Room for a pool key: an origin, a proxy's origin or a socket path. */
#define SL_CONN_KEY_MAX 1024

/* A DNS name (255) in brackets, a colon and a port; a longer one is cut. */
#define SL_CONN_PEER_MAX 264

typedef struct sl_conn {
    int fd;
    int h2;               /* the server chose h2 by ALPN */
    sl_tls *tls;          /* NULL for plain http */
    sl_buf rbuf;          /* bytes read but not yet parsed */
    sl_buf wbuf;          /* the request head being written */
    int64_t read_timeout_ns;   /* per read, set by the request path */
    int64_t write_timeout_ns;
    int resumed;          /* the TLS session was resumed */
    int rcvtimeo_ms;      /* the socket's SO_RCVTIMEO (see sl_sock_read_blocking) */
    char peer[SL_CONN_PEER_MAX];   /* "host:port", for error messages */
    const sl_proxy *http_proxy;    /* plain http through this proxy: requests go in
                                      absolute form, with its Proxy-Authorization */
} sl_conn;

/* What every connection of a factory's pool shares; the factory fills it
 * and hands it to the pool as the ops' ctx (sl_conn_pool_ops). */
typedef struct sl_conn_env {
    const sluice_factory_opts *opts;  /* connect timeout, TLS settings, pool hook */
    sl_dns *dns;
    sl_sock_cfg sock;
    pthread_mutex_t tls_lock;         /* guards the lazy creation of tls */
    sl_tls_ctx *tls;                  /* atomic: set once, freed by the owner */
    sl_proxy_conf proxy;              /* read-only after the factory is made */
} sl_conn_env;

/* The HTTP connection pool's callbacks; ctx is an sl_conn_env and the
 * create callback's arg an sl_conn_target. */
extern const sl_pool_ops sl_conn_pool_ops;

/* The shared TLS context, created on first use (or up front by the factory
 * when the options name files, so a typo fails there). */
sl_tls_ctx *sl_conn_env_tls(sl_conn_env *e, sluice_error *err);

/* Where a request to `u` goes: fills *t (through the factory's proxy
 * unless NO_PROXY exempts the host, or to `unix_path` when not NULL) and
 * returns its pool key: the origin for a direct TCP connection, else the
 * origin with the proxy's origin or the socket path (written into key,
 * SL_CONN_KEY_MAX bytes), so routes never share connections.  The key
 * never holds proxy credentials.  t's strings point into u, e and
 * unix_path. */
const char *sl_conn_route(const sl_conn_env *e, const sl_url *u, const char *unix_path,
                          int connect_timeout_ms, sl_conn_target *t, char *key);

/* Resolves, connects (and does TLS) before `deadline`.  Takes no lock.
 * Through a proxy: connects to the proxy (a failure is SLUICE_ECONNECT
 * naming the proxy's origin), and for an https target opens a CONNECT
 * tunnel first (a non-2xx answer is SLUICE_ECONNECT with the proxy's
 * status in err->http_status and the message), then TLS inside it for the
 * target's name.  With unix_path: connects to that socket (SLUICE_ECONNECT
 * naming the path), TLS still for the target's name. */
int sl_conn_open(const sl_conn_target *t, sl_dns *dns, sl_tls_ctx *tls, const sl_sock_cfg *cfg,
                 int64_t deadline, sl_conn **out, sluice_error *err);

/* An sl_http_io read callback: ctx is the sl_conn.  Each read waits at most
 * read_timeout_ns, and never past `deadline`. */
ssize_t sl_conn_read(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err);

/* Writes all of iov (may modify it).  *sent counts bytes written. */
int sl_conn_writev(sl_conn *c, struct iovec *iov, int iovcnt, int64_t deadline, size_t *sent,
                   sluice_error *err);

/* 1 if an idle connection may carry another request. */
int sl_conn_alive(sl_conn *c);

/* Closes the connection (TLS close_notify without waiting) and frees it. */
void sl_conn_close(sl_conn *c);
/* Frees it without a word to the peer: one a fork() child inherited, which
 * the parent still uses. */
void sl_conn_forget(sl_conn *c);

#endif
