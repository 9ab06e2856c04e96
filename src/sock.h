/* TCP sockets with deadlines.  A connected socket is left in blocking
 * mode so that a read can wait inside recv() (one system call instead of
 * recv, poll, recv); every other call passes MSG_DONTWAIT, and every wait
 * is bounded by an absolute deadline: a poll(), or SO_RCVTIMEO set below
 * the time left.  SIGPIPE is never raised (MSG_NOSIGNAL). */
#ifndef SL_SOCK_H
#define SL_SOCK_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "dns.h"
#include "sluice.h"

typedef struct sl_sock_cfg {
    int tcp_keepalive;          /* 1 = SO_KEEPALIVE */
    int keepidle_s, keepintvl_s, keepcnt;
} sl_sock_cfg;

/* Connects to the addresses in order; each attempt gets an equal share of
 * the time left so one black-holed address cannot eat the whole deadline.
 * Returns a connected fd in blocking mode with TCP_NODELAY set (see above:
 * no call here blocks past its deadline on it), or SLUICE_ECONNECT /
 * SLUICE_ETIMEDOUT naming host:port. */
int sl_sock_connect(const sl_addrs *a, const sl_sock_cfg *cfg, int64_t deadline,
                    const char *host, int port, sluice_error *err);

/* Connects to the Unix domain socket at `path` before the deadline, in
 * the same mode as sl_sock_connect's sockets.  SLUICE_EINVAL for a path
 * too long for sockaddr_un, SLUICE_ECONNECT (or SLUICE_ETIMEDOUT while
 * the listener's backlog stays full) naming the path.  Since 0.3. */
int sl_sock_connect_unix(const char *path, int64_t deadline, sluice_error *err);

/* Waits for `events` (POLLIN/POLLOUT): 1 ready, 0 deadline passed, -1 error. */
int sl_sock_wait(int fd, short events, int64_t deadline);

/* Reads what is there, waiting up to the deadline: count, 0 at EOF, or
 * SLUICE_ETIMEDOUT / SLUICE_EIO with a message naming `peer` ("host:port").  Waits inside recv() on a socket in
 * blocking mode (one system call for a response that is on its way),
 * bounded by SO_RCVTIMEO.  *timeo_ms is the SO_RCVTIMEO the socket has now
 * (0 = none, a new socket's); it is changed only when it would overrun the
 * deadline or is far shorter than the time left, so a run of reads with
 * the same read timeout sets it once.  The last few milliseconds before
 * the deadline are waited in poll(), which is exact where SO_RCVTIMEO
 * rounds up to the kernel's tick. */
ssize_t sl_sock_read_blocking(int fd, int *timeo_ms, void *buf, size_t cap, int64_t deadline,
                              const char *peer, sluice_error *err);

/* The one recv() of sl_sock_read_blocking, for callers with their own error
 * handling (the TLS I/O callback): recv()'s result and errno.  -1 with
 * EAGAIN when nothing came before SO_RCVTIMEO ran out, which is always
 * short of the deadline; the caller then polls the rest of the way. */
ssize_t sl_sock_recv_wait(int fd, int *timeo_ms, void *buf, size_t cap, int64_t deadline);

/* Writes every byte of iov before the deadline: 0, SLUICE_ETIMEDOUT or
 * SLUICE_EIO naming `peer`.  *sent (optional) counts bytes written, also on failure. */
int sl_sock_writev(int fd, struct iovec *iov, int iovcnt, int64_t deadline, size_t *sent,
                   const char *peer, sluice_error *err);

/* 1 if an idle connection still looks usable: no EOF, no error and no
 * unexpected bytes waiting (a zero-timeout poll). */
int sl_sock_idle_alive(int fd);

#endif
