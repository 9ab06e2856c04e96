/* Non-blocking sockets with deadlines. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "sock.h"

int sl_sock_wait(int fd, short events, int64_t deadline)
{
    struct pollfd pfd = {fd, events, 0};

    for (;;) {
        int rc = poll(&pfd, 1, sl_ms_left(deadline));
        if (rc > 0)
            return 1;
        if (rc == 0)
            return sl_ms_left(deadline) == 0 ? 0 : 1;
        if (errno != EINTR)
            return -1;
    }
}

static void set_options(int fd, const sl_sock_cfg *cfg)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg && cfg->tcp_keepalive) {
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        if (cfg->keepidle_s > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->keepidle_s, sizeof(int));
        if (cfg->keepintvl_s > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->keepintvl_s, sizeof(int));
        if (cfg->keepcnt > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->keepcnt, sizeof(int));
    }
}

/* Reads may then wait inside recv(); every other call says MSG_DONTWAIT.
 * Should this fail, reads still work: an EAGAIN is followed by a poll. */
static void set_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl != -1)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* One attempt; returns the fd, or -errno (-ETIMEDOUT at the deadline). */
static int connect_one(const sl_addr *addr, int64_t deadline)
{
    int fd, soerr = 0;
    socklen_t len = sizeof soerr;

    fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)&addr->sa, addr->len) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        soerr = errno;
        goto fail;
    }
    switch (sl_sock_wait(fd, POLLOUT, deadline)) {
    case 0:
        soerr = ETIMEDOUT;
        goto fail;
    case -1:
        soerr = errno;
        goto fail;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = errno;
    if (soerr == 0)
        return fd;
fail:
    close(fd);
    return -soerr;
}

int sl_sock_connect(const sl_addrs *a, const sl_sock_cfg *cfg, int64_t deadline,
                    const char *host, int port, sluice_error *err)
{
    char ebuf[SL_ERRNO_BUF];
    int last = ECONNREFUSED;
    size_t i;

    for (i = 0; i < a->n; i++) {
        int64_t now = sl_now_ns(), share = deadline;
        int fd;

        if (now >= deadline)
            break;
        if (deadline != SL_NO_DEADLINE)
            share = now + (deadline - now) / (int64_t)(a->n - i);
        fd = connect_one(&a->a[i], share);
        if (fd >= 0) {
            set_options(fd, cfg);
            set_blocking(fd);
            return fd;
        }
        last = -fd;
    }
    if (last == ETIMEDOUT || sl_now_ns() >= deadline)
        return sl_err(err, SLUICE_ETIMEDOUT, "connect to %s:%d timed out", host, port);
    return sl_err(err, SLUICE_ECONNECT, "connect to %s:%d failed: %s", host, port,
                  sl_errno_str(last, ebuf, sizeof ebuf));
}

int sl_sock_connect_unix(const char *path, int64_t deadline, sluice_error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char ebuf[SL_ERRNO_BUF];
    int fd, e;

    if (strlen(path) >= sizeof sa.sun_path)
        return sl_err(err, SLUICE_EINVAL, "unix socket path %.64s... is longer than %zu bytes",
                      path, sizeof sa.sun_path - 1);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sl_err(err, SLUICE_ECONNECT, "connect to unix socket %s failed: %s", path,
                      sl_errno_str(errno, ebuf, sizeof ebuf));
    /* A Unix socket connects at once or not at all; EAGAIN means the
     * listener's backlog is full, so try again until the deadline. */
    while (connect(fd, (const struct sockaddr *)&sa, sizeof sa) != 0) {
        struct timespec ms = {0, 1000000};

        e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN || sl_ms_left(deadline) == 0) {
            close(fd);
            if (e == EAGAIN)
                return sl_err(err, SLUICE_ETIMEDOUT, "connect to unix socket %s timed out",
                              path);
            return sl_err(err, SLUICE_ECONNECT, "connect to unix socket %s failed: %s", path,
                          sl_errno_str(e, ebuf, sizeof ebuf));
        }
        nanosleep(&ms, NULL);
    }
    set_blocking(fd);
    return fd;
}

/* SO_RCVTIMEO can overshoot by one kernel tick (10 ms at HZ=100). */
#define TICK_SLACK_MS 10

static int timeo_fits(int cur, int want)
{
    if (want == 0)
        return cur == 0;
    return cur > 0 && cur <= want && cur >= want / 2;
}

static int set_rcvtimeo(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

ssize_t sl_sock_recv_wait(int fd, int *timeo_ms, void *buf, size_t cap, int64_t deadline)
{
    int left = sl_ms_left(deadline), want;

    if (left >= 0 && left <= 2 * TICK_SLACK_MS)
        return recv(fd, buf, cap, MSG_DONTWAIT);
    want = left < 0 ? 0 : left - TICK_SLACK_MS;   /* 0: no deadline, no timeout */
    if (!timeo_fits(*timeo_ms, want)) {
        /* A little lower than needed, so later reads with a little less
         * time left still fit. */
        int t = want - want / 8;
        if (set_rcvtimeo(fd, t) != 0)
            return recv(fd, buf, cap, MSG_DONTWAIT);
        *timeo_ms = t;
    }
    return recv(fd, buf, cap, 0);
}

ssize_t sl_sock_read_blocking(int fd, int *timeo_ms, void *buf, size_t cap, int64_t deadline,
                              const char *peer, sluice_error *err)
{
    char ebuf[SL_ERRNO_BUF];

    for (;;) {
        ssize_t n = sl_sock_recv_wait(fd, timeo_ms, buf, cap, deadline);

        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return sl_err(err, SLUICE_EIO, "read from %s failed: %s", peer,
                          sl_errno_str(errno, ebuf, sizeof ebuf));
        /* SO_RCVTIMEO ran out (it is set short of the deadline), or the
         * socket is not in blocking mode after all: wait the rest in poll. */
        switch (sl_sock_wait(fd, POLLIN, deadline)) {
        case 0:
            return sl_err(err, SLUICE_ETIMEDOUT, "read from %s timed out", peer);
        case -1:
            return sl_err(err, SLUICE_EIO, "waiting to read from %s failed: %s", peer,
                          sl_errno_str(errno, ebuf, sizeof ebuf));
        }
    }
}

int sl_sock_writev(int fd, struct iovec *iov, int iovcnt, int64_t deadline, size_t *sent,
                   const char *peer, sluice_error *err)
{
    struct msghdr msg = {0};
    char ebuf[SL_ERRNO_BUF];

    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)iovcnt;
    while (msg.msg_iovlen > 0) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return sl_err(err, SLUICE_EIO, "write to %s failed: %s", peer,
                              sl_errno_str(errno, ebuf, sizeof ebuf));
            switch (sl_sock_wait(fd, POLLOUT, deadline)) {
            case 0:
                return sl_err(err, SLUICE_ETIMEDOUT, "write to %s timed out", peer);
            case -1:
                return sl_err(err, SLUICE_EIO, "waiting to write to %s failed: %s", peer,
                              sl_errno_str(errno, ebuf, sizeof ebuf));
            }
            continue;
        }
        if (sent)
            *sent += (size_t)n;
        while (msg.msg_iovlen > 0 && (size_t)n >= msg.msg_iov->iov_len) {
            n -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
            msg.msg_iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

int sl_sock_idle_alive(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    int rc;

    do
        rc = poll(&pfd, 1, 0);
    while (rc < 0 && errno == EINTR);
    /* Readable on an idle connection means EOF, an error, or bytes nobody
     * asked for: in every case it must not carry another request. */
    return rc == 0;
}
