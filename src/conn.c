/* Connections: resolve, connect, optional TLS, then deadline-bound I/O. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "conn.h"
#include "error.h"

/* "host:port" out of the origin "scheme://host:port" (which brackets an
 * IPv6 host), as the TLS layer names its peer. */
static void set_peer(sl_conn *c, const sl_conn_target *t)
{
    const char *p = t->origin ? strstr(t->origin, "://") : NULL;

    if (p && p[3])
        snprintf(c->peer, sizeof c->peer, "%s", p + 3);
    else
        snprintf(c->peer, sizeof c->peer, "%s:%d", t->host, t->port);
}

int sl_conn_open(const sl_conn_target *t, sl_dns *dns, sl_tls_ctx *tls, const sl_sock_cfg *cfg,
                 int64_t deadline, sl_conn **out, sluice_error *err)
{
    sl_addrs *addrs = NULL;
    sl_conn *c;
    int rc;

    *out = NULL;
    rc = sl_dns_resolve(dns, t->host, t->port, deadline, &addrs, err);
    if (rc)
        return rc;
    rc = sl_sock_connect(addrs, cfg, deadline, t->host, t->port, err);
    sl_addrs_release(addrs);
    if (rc < 0)
        return rc;
    c = sl_calloc(1, sizeof *c);
    if (!c) {
        close(rc);
        return sl_err(err, SLUICE_ENOMEM, "out of memory connecting to %s", t->origin);
    }
    c->fd = rc;
    set_peer(c, t);
    if (t->tls) {
        if (!tls) {
            rc = sl_err(err, SLUICE_ETLS, "no TLS context for %s", t->origin);
            goto fail;
        }
        rc = sl_tls_connect(tls, c->fd, t->host, t->origin, deadline, &c->tls, &c->resumed, err);
        if (rc)
            goto fail;
    }
    *out = c;
    return 0;
fail:
    close(c->fd);
    sl_free(c);
    return rc;
}

static int64_t io_deadline(int64_t deadline, int64_t timeout_ns)
{
    if (timeout_ns <= 0)
        return deadline;
    return sl_deadline_min(deadline, sl_now_ns() + timeout_ns);
}

ssize_t sl_conn_read(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err)
{
    sl_conn *c = ctx;
    int64_t d = io_deadline(deadline, c->read_timeout_ns);

    if (c->tls)
        return sl_tls_read(c->tls, buf, cap, d, err);
    return sl_sock_read_blocking(c->fd, &c->rcvtimeo_ms, buf, cap, d, c->peer, err);
}

/* wolfSSL has no writev: small pieces are joined so a request goes out in
 * one record; large bodies are written piece by piece. */
static int tls_writev(sl_conn *c, struct iovec *iov, int iovcnt, int64_t d, size_t *sent,
                      sluice_error *err)
{
    char join[16384];
    size_t total = 0;
    int i, rc;

    for (i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total <= sizeof join) {
        total = 0;
        for (i = 0; i < iovcnt; i++) {
            memcpy(join + total, iov[i].iov_base, iov[i].iov_len);
            total += iov[i].iov_len;
        }
        rc = sl_tls_write(c->tls, join, total, d, err);
        if (rc == 0 && sent)
            *sent += total;
        return rc;
    }
    for (i = 0; i < iovcnt; i++) {
        rc = sl_tls_write(c->tls, iov[i].iov_base, iov[i].iov_len, d, err);
        if (rc)
            return rc;
        if (sent)
            *sent += iov[i].iov_len;
    }
    return 0;
}

int sl_conn_writev(sl_conn *c, struct iovec *iov, int iovcnt, int64_t deadline, size_t *sent,
                   sluice_error *err)
{
    int64_t d = io_deadline(deadline, c->write_timeout_ns);

    if (c->tls)
        return tls_writev(c, iov, iovcnt, d, sent, err);
    return sl_sock_writev(c->fd, iov, iovcnt, d, sent, c->peer, err);
}

int sl_conn_alive(sl_conn *c)
{
    if (c->rbuf.len > 0)
        return 0;   /* leftover bytes: the peer said something unasked */
    if (c->tls && sl_tls_pending(c->tls) > 0)
        return 0;
    return sl_sock_idle_alive(c->fd);
}

/* `quiet`: the connection came from before a fork() and the parent still
 * uses it, so nothing is written (no close_notify); closing our fd leaves
 * the parent's open. */
static void conn_release(sl_conn *c, int quiet)
{
    if (!c)
        return;
    if (quiet)
        sl_tls_forget(c->tls);
    else
        sl_tls_free(c->tls);
    close(c->fd);
    sl_buf_free(&c->rbuf);
    sl_buf_free(&c->wbuf);
    sl_free(c);
}

void sl_conn_close(sl_conn *c)
{
    conn_release(c, 0);
}

/* --- the pool's view of connections ------------------------------------ */

sl_tls_ctx *sl_conn_env_tls(sl_conn_env *e, sluice_error *err)
{
    sl_tls_ctx *t = __atomic_load_n(&e->tls, __ATOMIC_ACQUIRE);

    if (t)
        return t;
    /* Loading the CA store is file I/O, but this lock guards nothing else:
     * callers that need TLS wait for the one context they all share. */
    pthread_mutex_lock(&e->tls_lock);
    if (!(t = e->tls)) {
        t = sl_tls_ctx_new(e->opts, err);
        __atomic_store_n(&e->tls, t, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&e->tls_lock);
    return t;
}

static int pool_create(void *ctx, const char *key, void *arg, int64_t deadline, void **res,
                       sluice_error *err)
{
    sl_conn_env *e = ctx;
    const sl_conn_target *t = arg;
    int ms = t->connect_timeout_ms > 0 ? t->connect_timeout_ms : e->opts->connect_timeout_ms;
    int64_t d = sl_deadline_min(deadline, sl_deadline_in_ms(ms));
    sl_tls_ctx *tls = NULL;

    (void)key;
    if (t->tls && !(tls = sl_conn_env_tls(e, err)))
        return err ? err->code : SLUICE_ETLS;
    return sl_conn_open(t, e->dns, tls, &e->sock, d, (sl_conn **)res, err);
}

static void pool_destroy(void *ctx, void *res, sluice_close_reason why)
{
    (void)ctx;
    conn_release(res, why == SL_CLOSE_INHERITED);
}

static int pool_alive(void *ctx, void *res)
{
    (void)ctx;
    return sl_conn_alive(res);
}

static void pool_event(void *ctx, const sluice_pool_event *ev)
{
    const sl_conn_env *e = ctx;

    if (e->opts->on_pool_event)
        e->opts->on_pool_event(ev, e->opts->hook_ud);
}

const sl_pool_ops sl_conn_pool_ops = {pool_create, pool_destroy, pool_alive, pool_event};
