/* Connections: resolve, connect, optional TLS, then deadline-bound I/O. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "conn.h"
#include "error.h"
#include "http1.h"

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

const char *sl_conn_route(const sl_conn_env *e, const sl_url *u, const char *unix_path,
                          int connect_timeout_ms, sl_conn_target *t, char *key)
{
    *t = (sl_conn_target){u->host, u->port, u->tls, u->origin, connect_timeout_ms, NULL, NULL, 0, NULL};
    if (unix_path) {
        t->unix_path = unix_path;
        snprintf(key, SL_CONN_KEY_MAX, "%s unix:%s", u->origin, unix_path);
        return key;
    }
    if (!(t->proxy = sl_proxy_for(&e->proxy, u)))
        return u->origin;
    snprintf(key, SL_CONN_KEY_MAX, "%s via %s", u->origin, t->proxy->origin);
    return key;
}

/* The proxy's name goes in front of a connect or lookup failure, so the
 * caller knows it was the proxy, not the target, that could not be
 * reached. */
static int proxy_failed(const sl_conn_target *t, int rc, sluice_error *err)
{
    int code = rc == SLUICE_ERESOLVE || rc == SLUICE_ETIMEDOUT || rc == SLUICE_ENOMEM
                   ? rc
                   : SLUICE_ECONNECT;
    char msg[sizeof err->msg];

    if (!err)
        return code;
    snprintf(msg, sizeof msg, "%s", err->msg);
    return sl_err(err, code, "proxy %s (for %s): %s", t->proxy->origin, t->origin, msg);
}

static int connect_tcp(const sl_conn_target *t, sl_dns *dns, const sl_sock_cfg *cfg,
                       int64_t deadline, sluice_error *err)
{
    const char *host = t->proxy ? t->proxy->host : t->host;
    int port = t->proxy ? t->proxy->port : t->port;
    sl_addrs *addrs = NULL;
    int rc;

    rc = sl_dns_resolve(dns, host, port, deadline, &addrs, err);
    if (rc == 0) {
        rc = sl_sock_connect(addrs, cfg, deadline, host, port, err);
        sl_addrs_release(addrs);
    }
    if (rc < 0 && t->proxy)
        return proxy_failed(t, rc, err);
    return rc;
}

/* Asks the proxy for a tunnel to the target ("CONNECT host:port") and
 * reads its answer; any 2xx opens the tunnel. */
static int open_tunnel(sl_conn *c, const sl_conn_target *t, int64_t deadline, sluice_error *err)
{
    sl_http_io io = {sl_conn_read, c};
    sl_http_limits lim = {16384, 100, 16384};
    sl_http_resp resp = {0};
    struct iovec iov;
    int rc;

    sl_buf_printf(&c->wbuf, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", c->peer, c->peer);
    if (t->proxy->auth)
        sl_buf_printf(&c->wbuf, "Proxy-Authorization: %s\r\n", t->proxy->auth);
    sl_buf_puts(&c->wbuf, "\r\n");
    if (c->wbuf.failed)
        return sl_err(err, SLUICE_ENOMEM, "out of memory writing a CONNECT");
    iov = (struct iovec){c->wbuf.data, c->wbuf.len};
    rc = sl_sock_writev(c->fd, &iov, 1, deadline, NULL, t->proxy->origin, err);
    sl_buf_reset(&c->wbuf);
    /* The answer to CONNECT has no body we want: read it as a HEAD's. */
    if (rc == 0)
        rc = sl_http1_read_response(&io, &c->rbuf, 1, &lim, deadline, &resp, err);
    if (rc)
        return proxy_failed(t, rc, err);
    if (resp.status / 100 != 2) {
        rc = sl_err(err, SLUICE_ECONNECT, "proxy %s answered CONNECT %s with status %d",
                    t->proxy->origin, c->peer, resp.status);
        if (err)
            err->http_status = resp.status;
    } else if (c->rbuf.len) {
        rc = sl_err(err, SLUICE_EPROTO, "proxy %s sent bytes after its CONNECT answer",
                    t->proxy->origin);
    }
    sl_http_resp_free(&resp);
    return rc;
}

/* Plain http through a proxy talks to the proxy: errors name it. */
static void set_peer_proxy(sl_conn *c, const sl_proxy *p)
{
    snprintf(c->peer, sizeof c->peer, "proxy %s", p->origin + strlen("http://"));
}

int sl_conn_open(const sl_conn_target *t, sl_dns *dns, sl_tls_ctx *tls, const sl_sock_cfg *cfg,
                 int64_t deadline, sl_conn **out, sluice_error *err)
{
    sl_conn *c;
    int rc;

    *out = NULL;
    if (t->unix_path)
        rc = sl_sock_connect_unix(t->unix_path, deadline, err);
    else
        rc = connect_tcp(t, dns, cfg, deadline, err);
    if (rc < 0)
        return rc;
    c = sl_calloc(1, sizeof *c);
    if (!c) {
        close(rc);
        return sl_err(err, SLUICE_ENOMEM, "out of memory connecting to %s", t->origin);
    }
    c->fd = rc;
    set_peer(c, t);
    if (t->proxy && t->tls && (rc = open_tunnel(c, t, deadline, err)))
        goto fail;
    if (t->proxy && !t->tls) {
        c->http_proxy = t->proxy;
        set_peer_proxy(c, t->proxy);
    }
    if (t->unix_path)
        snprintf(c->peer, sizeof c->peer, "%s", t->unix_path);
    if (t->tls) {
        if (!tls) {
            rc = sl_err(err, SLUICE_ETLS, "no TLS context for %s", t->origin);
            goto fail;
        }
        rc = sl_tls_connect(tls, c->fd, t->host, t->origin, t->offer_h2, deadline, &c->tls,
                            &c->resumed, err);
        if (rc)
            goto fail;
        c->h2 = t->offer_h2 && sl_tls_alpn_h2(c->tls);
    }
    *out = c;
    return 0;
fail:
    close(c->fd);
    sl_buf_free(&c->rbuf);
    sl_buf_free(&c->wbuf);
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

void sl_conn_forget(sl_conn *c)
{
    conn_release(c, 1);
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
    sl_conn_target *t = arg;
    int ms = t->connect_timeout_ms > 0 ? t->connect_timeout_ms : e->opts->connect_timeout_ms;
    int64_t d = sl_deadline_min(deadline, sl_deadline_in_ms(ms));
    sl_tls_ctx *tls = NULL;

    (void)key;
    if (t && t->adopt) {
        *res = t->adopt;
        t->adopt = NULL;
        return 0;
    }
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
