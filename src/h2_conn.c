/* One HTTP/2 connection: the nghttp2 client session, the streams callers
 * have open on it, and the I/O thread that alone touches its socket (see
 * h2.h for the threads and locks). */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "futex.h"
#include "h2_conn.h"
#include "log.h"
#include "sync.h"

#define RBUF 65536                  /* read from the socket per round */
#define OUT_MAX (256 * 1024)        /* frames gathered before writing */
#define PUSH_ROOM (64 * 1024)       /* a streamed body's bytes waiting for nghttp2 */
#define WAKE_BYTES (16 * 1024)      /* DATA that wakes a reader before the end */
#define CONN_WINDOW (1 << 30)       /* the connection's window: the streams' bound it */
#define FIRST_LIMIT 100             /* nghttp2's assumption before the server's SETTINGS */

typedef struct h2c {
    sl_h2_conn pub;                 /* first: the table's view */
    pthread_mutex_t lock;           /* the session and the streams */
    nghttp2_session *s;
    sl_h2_stream *streams;          /* open (or ended, not yet collected) */
    int nstreams;
    sl_h2_stream *touched;          /* moved in this round: wake them */
    int polling;                    /* the I/O thread sleeps: write efd to wake it */
    int shut;                       /* sl_h2_conn_shut: end with ECLOSED */
    int notify;                     /* the table should hear of this round */
    int fail_rc;                    /* why the connection failed (0: it did not) */
    char fail_msg[200];
    int cap;                        /* the client's stream cap (0 = none) */
    int64_t idle_since;             /* no stream since (0: streams open) */
    /* the I/O thread's alone */
    sl_conn *net;
    int efd;
    _Atomic uint32_t **wakes;       /* the streams mark_touched marked */
    size_t nwakes_cap;
    sl_buf out;
    size_t out_off, tls_chunk;
    int64_t last_read, ping_sent;
    sl_h2_cfg cfg;
    char rbuf[RBUF];
} h2c;

static h2c *of(sl_h2_conn *c)
{
    return (h2c *)c;
}

/* ---- waking ------------------------------------------------------------- */

static void touch(h2c *c, sl_h2_stream *st)
{
    if (st->touched)
        return;
    st->touched = 1;
    st->tnext = c->touched;
    c->touched = st;
}

/* Lock held: every stream that moved this round is marked (its seq
 * bumped) and its word kept in `wakes` for wake_marked to wake once the
 * lock is released, so callers are not woken into a lock still held.  A
 * woken caller may be gone by the time of the wake: waking a word nobody
 * waits on is harmless (waitq.c does the same).  Returns how many. */
static size_t mark_touched(h2c *c)
{
    sl_h2_stream *st = c->touched, *next;
    size_t n = 0;

    c->touched = NULL;
    for (; st; st = next) {
        next = st->tnext;
        st->touched = 0;
        atomic_fetch_add_explicit(&st->seq, 1, memory_order_release);
        if (n == c->nwakes_cap) {
            size_t cap = n ? n * 2 : 64;
            _Atomic uint32_t **w = sl_realloc(c->wakes, cap * sizeof *w);
            if (!w) {       /* wake it now, under the lock, rather than never */
                sl_futex_wake(&st->seq, 1);
                continue;
            }
            c->wakes = w;
            c->nwakes_cap = cap;
        }
        c->wakes[n++] = &st->seq;
    }
    return n;
}

static void wake_marked(h2c *c, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        sl_futex_wake(c->wakes[i], 1);
}

/* Lock held by a caller that gave nghttp2 something to send: 1 when the
 * I/O thread sleeps and must be woken (kick() after unlocking). */
static int needs_kick(h2c *c)
{
    int k = c->polling;

    c->polling = 0;
    return k;
}

static void kick(h2c *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->efd, &one, sizeof one);

    (void)n;    /* EAGAIN: the counter is full, so the thread wakes anyway */
}

/* Lock held: sleeps until the stream moves or `until`, then relocks. */
static void wait_stream(h2c *c, sl_h2_stream *st, int64_t until)
{
    uint32_t seen = atomic_load_explicit(&st->seq, memory_order_acquire);

    pthread_mutex_unlock(&c->lock);
    sl_futex_wait(&st->seq, seen, until);
    pthread_mutex_lock(&c->lock);
}

/* ---- ending streams ------------------------------------------------------ */

static void end_stream(h2c *c, sl_h2_stream *st, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void end_stream(h2c *c, sl_h2_stream *st, int rc, const char *fmt, ...)
{
    va_list ap;

    if (st->closed)
        return;
    st->closed = 1;
    if (rc && !st->rc) {
        st->rc = rc;
        va_start(ap, fmt);
        vsnprintf(st->msg, sizeof st->msg, fmt, ap);
        va_end(ap);
    }
    touch(c, st);
}

/* Lock held: the connection is gone; every stream still open ends. */
static void fail_all(h2c *c, int rc, const char *why)
{
    sl_h2_stream *st;

    if (!c->fail_rc) {
        c->fail_rc = rc;
        snprintf(c->fail_msg, sizeof c->fail_msg, "%s", why);
    }
    atomic_store(&c->pub.draining, 1);
    for (st = c->streams; st; st = st->next) {
        st->refused |= !st->headers_out;    /* never on the wire: it may go elsewhere */
        end_stream(c, st, c->fail_rc, "HTTP/2 connection to %s: %s", c->pub.peer, c->fail_msg);
    }
}

/* ---- nghttp2 callbacks (lock held: inside mem_recv or mem_send) ---------- */

static sl_h2_stream *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    sl_h2_stream *st = stream_of(s, f->hd.stream_id);

    (void)ud;
    if (!st || st->head_done)
        return 0;       /* trailers: the body's end is the stream's */
    st->head_mark = st->in.len;
    st->status = 0;
    return 0;
}

/* Appends "<a><sep><b><end>" (sep and end short literals) with one
 * reservation. */
static int head_line(sl_buf *out, const void *a, size_t al, const char *sep, const void *b,
                     size_t bl, const char *end)
{
    size_t sl = strlen(sep), el = strlen(end);
    char *p;

    if (sl_buf_reserve(out, al + sl + bl + el))
        return SLUICE_ENOMEM;
    p = out->data + out->len;
    memcpy(p, a, al);
    memcpy(p + al, sep, sl);
    memcpy(p + al + sl, b, bl);
    memcpy(p + al + sl + bl, end, el);
    out->len += al + sl + bl + el;
    out->data[out->len] = '\0';
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    sl_h2_stream *st = stream_of(s, f->hd.stream_id);
    h2c *c = ud;
    int bad;

    (void)flags;
    if (!st || st->head_done || st->closed || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    st->header_bytes += namelen + valuelen + 32;    /* RFC 9113 6.5.2's measure */
    if (st->header_bytes > c->cfg.max_header_bytes) {
        end_stream(c, st, SLUICE_EPROTO,
                   "response header block from %s larger than max_header_bytes (%zu); "
                   "HTTP/2 stream %d reset", c->pub.peer, c->cfg.max_header_bytes, st->id);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;   /* resets this stream only */
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        st->status = valuelen == 3 ? atoi((const char *)value) : 0;
        bad = head_line(&st->in, "HTTP/1.1", 8, " ", value, valuelen, " \r\n");
    } else if (namelen && name[0] == ':') {
        return 0;
    } else {
        bad = head_line(&st->in, name, namelen, ": ", value, valuelen, "\r\n");
    }
    if (bad) {
        end_stream(c, st, SLUICE_ENOMEM, "out of memory receiving a response from %s", c->pub.peer);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

/* A complete header block: the head is out for the reader, or an interim
 * 1xx head is dropped. */
static void head_end(h2c *c, sl_h2_stream *st)
{
    if (st->head_done || st->closed)
        return;
    if (st->status >= 100 && st->status < 200) {
        st->in.len = st->head_mark;
        st->header_bytes = 0;
        return;
    }
    if (sl_buf_append(&st->in, "\r\n", 2)) {
        end_stream(c, st, SLUICE_ENOMEM, "out of memory receiving a response from %s", c->pub.peer);
        return;
    }
    st->head_done = 1;
    st->head_len = st->in.len - st->in_off;
    touch(c, st);
}

static void settings_in(h2c *c)
{
    uint32_t n = nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    int limit = n > INT_MAX ? INT_MAX : (int)n;

    if (c->cap && limit > c->cap)
        limit = c->cap;
    if (limit > atomic_load(&c->pub.limit))
        c->notify = 1;
    atomic_store(&c->pub.limit, limit);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    h2c *c = ud;
    sl_h2_stream *st;

    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if ((st = stream_of(s, f->hd.stream_id)) && (f->hd.flags & NGHTTP2_FLAG_END_HEADERS))
            head_end(c, st);
        break;
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            settings_in(c);
        break;
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_sent = 0;
        break;
    case NGHTTP2_GOAWAY:
        atomic_fetch_add_explicit(&c->pub.counts->goaways, 1, memory_order_relaxed);
        atomic_store(&c->pub.draining, 1);
        c->notify = 1;
        if (f->goaway.error_code != NGHTTP2_NO_ERROR) {
            char why[160];
            snprintf(why, sizeof why, "the server sent GOAWAY %s",
                     nghttp2_http2_strerror(f->goaway.error_code));
            fail_all(c, SLUICE_EPROTO, why);
        }
        SL_DEBUG("HTTP/2 %s: GOAWAY %s, last stream %d", c->pub.peer,
                 nghttp2_http2_strerror(f->goaway.error_code), f->goaway.last_stream_id);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    sl_h2_stream *st = stream_of(s, id);
    h2c *c = ud;

    (void)flags;
    if (!st || st->closed) {
        /* nobody reads it: the credit goes back at once */
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    if (sl_buf_append(&st->in, data, len)) {
        nghttp2_session_consume(s, id, len);
        end_stream(c, st, SLUICE_ENOMEM, "out of memory receiving a response from %s", c->pub.peer);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->received += len;
    if (st->in.len - st->in_off >= WAKE_BYTES)
        touch(c, st);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    sl_h2_stream *st = stream_of(s, id);
    h2c *c = ud;

    if (code == NGHTTP2_REFUSED_STREAM)
        atomic_fetch_add_explicit(&c->pub.counts->refused, 1, memory_order_relaxed);
    if (!st)
        return 0;
    if (code == NGHTTP2_NO_ERROR) {
        end_stream(c, st, 0, " ");
    } else if (code == NGHTTP2_REFUSED_STREAM && !st->head_done) {
        st->refused = 1;
        end_stream(c, st, SLUICE_EIO, "%s refused HTTP/2 stream %d", c->pub.peer, id);
    } else {
        int rc = code == NGHTTP2_PROTOCOL_ERROR || code == NGHTTP2_FRAME_SIZE_ERROR ||
                         code == NGHTTP2_COMPRESSION_ERROR
                     ? SLUICE_EPROTO
                     : SLUICE_EIO;
        if (c->fail_rc)
            end_stream(c, st, c->fail_rc, "HTTP/2 connection to %s: %s", c->pub.peer, c->fail_msg);
        else
            end_stream(c, st, rc, "%s reset HTTP/2 stream %d (%s)", c->pub.peer, id,
                       nghttp2_http2_strerror(code));
    }
    return 0;
}

/* We end the session over the peer's protocol error: every stream fails
 * with EPROTO. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    h2c *c = ud;
    sl_h2_stream *st;
    char why[160];

    if (f->hd.type == NGHTTP2_HEADERS && (st = stream_of(s, f->hd.stream_id)))
        st->headers_out = 1;
    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR) {
        snprintf(why, sizeof why, "protocol error from the server (%s)",
                 nghttp2_http2_strerror(f->goaway.error_code));
        fail_all(c, SLUICE_EPROTO, why);
    }
    return 0;
}

/* A request nghttp2 would not send (a GOAWAY came first): it never left,
 * so it may go to another connection. */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int code, void *ud)
{
    sl_h2_stream *st;

    if (f->hd.type == NGHTTP2_HEADERS && (st = stream_of(s, f->hd.stream_id))) {
        st->refused = 1;
        end_stream(ud, st, SLUICE_EIO, "HTTP/2 request to %s not sent: %s",
                   ((h2c *)ud)->pub.peer, nghttp2_strerror(code));
    }
    return 0;
}

static int on_error(nghttp2_session *s, int code, const char *msg, size_t len, void *ud)
{
    h2c *c = ud;

    (void)s;
    (void)code;
    SL_DEBUG("HTTP/2 %s: %.*s", c->pub.peer, (int)len, msg);
    return 0;
}

/* The request body, pulled by nghttp2 as the windows allow. */
static ssize_t body_source(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    sl_h2_stream *st = stream_of(s, id);
    size_t n;

    (void)src;
    (void)ud;
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;    /* the caller gave up */
    if (!st->streamed) {
        n = st->body_len - st->body_off < len ? st->body_len - st->body_off : len;
        memcpy(buf, st->body + st->body_off, n);
        st->body_off += n;
        if (st->body_off == st->body_len)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        st->sent += n;
        return (ssize_t)n;
    }
    n = st->up.len - st->up_off < len ? st->up.len - st->up_off : len;
    if (n == 0 && !st->up_eof) {
        st->deferred = 1;
        touch(of(st->conn), st);    /* the pusher may have waited for room */
        return NGHTTP2_ERR_DEFERRED;
    }
    memcpy(buf, st->up.data + st->up_off, n);
    st->up_off += n;
    if (st->up_off == st->up.len) {
        st->up_off = 0;
        sl_buf_reset(&st->up);
        touch(of(st->conn), st);
        if (st->up_eof)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    st->sent += n;
    return (ssize_t)n;
}

/* ---- the request ---------------------------------------------------------- */

/* The request's fields for nghttp2: names and values copied (names in
 * lower case) into one block sized up front, on the caller's stack when
 * it fits. */
typedef struct nvlist {
    nghttp2_nv *nv;
    size_t n, cap;
    char *str;
    size_t len, room;
    void *heap;         /* the block, when it did not fit the stack */
} nvlist;

static void nv_add(nvlist *l, const char *name, size_t nl, const char *value, size_t vl)
{
    char *p = l->str + l->len;
    size_t i;

    if (l->n == l->cap || nl + vl > l->room - l->len)
        return;     /* cannot happen: the block was sized for every field */
    for (i = 0; i < nl; i++)        /* field names go lower case in HTTP/2 */
        p[i] = name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] + 32) : name[i];
    memcpy(p + nl, value, vl);
    l->len += nl + vl;
    l->nv[l->n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)p + nl, nl, vl, NGHTTP2_NV_FLAG_NONE};
}

/* Fields that describe an HTTP/1.1 connection, not a message: RFC 9113
 * 8.2.2 forbids them (Host becomes :authority). */
static int connection_field(const char *name)
{
    static const char *const drop[] = {"connection", "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade", "host", "te"};
    size_t i;

    for (i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (strcasecmp(name, drop[i]) == 0)
            return 1;
    return 0;
}

static const char *named(const sluice_header *h, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (h[i].name && strcasecmp(h[i].name, name) == 0)
            return h[i].value ? h[i].value : "";
    return NULL;
}

static void nv_str(nvlist *l, const char *name, const char *value)
{
    nv_add(l, name, strlen(name), value, strlen(value));
}

static size_t list_bytes(const sluice_header *h, size_t n)
{
    size_t i, b = 0;

    for (i = 0; i < n; i++)
        if (h[i].name)
            b += strlen(h[i].name) + (h[i].value ? strlen(h[i].value) : 0);
    return b;
}

/* Room for every field request_nv may add, in `stack` when it fits. */
static int nv_init(nvlist *l, const sl_http_req *r, const char *scheme, void *stack,
                   size_t stack_size)
{
    size_t room = strlen(r->method) + strlen(scheme) + strlen(r->target) + strlen(r->host) +
                  (r->user_agent ? strlen(r->user_agent) : 0) +
                  (r->accept_encoding ? strlen(r->accept_encoding) : 0) + 128 +
                  list_bytes(r->headers1, r->nheaders1) + list_bytes(r->headers2, r->nheaders2);
    size_t cap = 8 + r->nheaders1 + r->nheaders2;
    size_t need = cap * sizeof(nghttp2_nv) + room;
    char *block = stack;

    memset(l, 0, sizeof *l);
    if (need > stack_size && !(block = l->heap = sl_malloc(need)))
        return SLUICE_ENOMEM;
    l->nv = (nghttp2_nv *)(void *)block;
    l->cap = cap;
    l->str = block + cap * sizeof(nghttp2_nv);
    l->room = room;
    return 0;
}

/* The request's fields as sl_http1_write_head would write them, in
 * HTTP/2's form.  The caller checked them (sl_http1_check_request). */
static void request_nv(nvlist *l, const sl_http_req *r, const char *scheme)
{
    const char *host = named(r->headers2, r->nheaders2, "host");
    const char *ua = named(r->headers2, r->nheaders2, "user-agent");
    char len[24];
    size_t i;

    if (!host)
        host = named(r->headers1, r->nheaders1, "host");
    if (!ua)
        ua = named(r->headers1, r->nheaders1, "user-agent");
    nv_str(l, ":method", r->method);
    nv_str(l, ":scheme", scheme);
    nv_str(l, ":authority", host ? host : r->host);
    nv_str(l, ":path", r->target);
    if (ua || r->user_agent)
        nv_str(l, "user-agent", ua ? ua : r->user_agent);
    if (r->accept_encoding && !named(r->headers1, r->nheaders1, "accept-encoding") &&
        !named(r->headers2, r->nheaders2, "accept-encoding"))
        nv_str(l, "accept-encoding", r->accept_encoding);
    if (r->send_length && !r->chunked) {
        snprintf(len, sizeof len, "%zu", r->body_len);
        nv_str(l, "content-length", len);
    }
    for (i = 0; i < r->nheaders1; i++)
        if (r->headers1[i].name && !connection_field(r->headers1[i].name) &&
            strcasecmp(r->headers1[i].name, "user-agent") != 0 &&
            !named(r->headers2, r->nheaders2, r->headers1[i].name))
            nv_str(l, r->headers1[i].name, r->headers1[i].value ? r->headers1[i].value : "");
    for (i = 0; i < r->nheaders2; i++)
        if (r->headers2[i].name && !connection_field(r->headers2[i].name) &&
            strcasecmp(r->headers2[i].name, "user-agent") != 0)
            nv_str(l, r->headers2[i].name, r->headers2[i].value ? r->headers2[i].value : "");
}

static void count_stream(sl_h2_counts *n)
{
    int now = atomic_fetch_add_explicit(&n->streams, 1, memory_order_relaxed) + 1;
    int peak = atomic_load_explicit(&n->streams_peak, memory_order_relaxed);

    while (now > peak && !atomic_compare_exchange_weak_explicit(&n->streams_peak, &peak, now,
                                                                memory_order_relaxed,
                                                                memory_order_relaxed))
        ;
}

int sl_h2_stream_open(sl_h2_stream *st, sl_h2_conn *pc, const sl_http_req *r, const char *scheme,
                      const void *body, size_t body_len, int streamed, int64_t read_timeout_ns,
                      sluice_error *err)
{
    h2c *c = of(pc);
    _Alignas(nghttp2_nv) char stack[2048];
    nghttp2_data_provider prd = {{0}, body_source};
    nvlist l;
    int32_t id;
    int k, again;

    memset(st, 0, sizeof *st);
    st->conn = pc;
    st->body = body;
    st->body_len = body_len;
    st->streamed = streamed;
    st->read_timeout_ns = read_timeout_ns;
    if (sl_buf_reserve(&st->in, 1024))    /* a typical head, allocated once */
        return sl_err(err, SLUICE_ENOMEM, "out of memory building an HTTP/2 request");
    if (nv_init(&l, r, scheme, stack, sizeof stack)) {
        sl_buf_free(&st->in);
        return sl_err(err, SLUICE_ENOMEM, "out of memory building an HTTP/2 request");
    }
    request_nv(&l, r, scheme);
    pthread_mutex_lock(&c->lock);
    /* A connection that drains (or has run out of ids) takes no stream:
     * the request goes elsewhere as it is. */
    again = atomic_load(&pc->draining) || c->shut;
    id = again ? 0 : nghttp2_submit_request(c->s, NULL, l.nv, l.n,
                                             streamed || body_len ? &prd : NULL, st);
    if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
        atomic_store(&pc->draining, 1);
        c->notify = 1;
        again = 1;
        SL_DEBUG("HTTP/2 %s: stream ids used up, draining", pc->peer);
    }
    if (again || id < 0) {
        k = needs_kick(c);
        pthread_mutex_unlock(&c->lock);
        sl_free(l.heap);
        sl_buf_free(&st->in);
        if (k)
            kick(c);
        if (again)
            return SL_H2_AGAIN;
        return sl_err(err, id == NGHTTP2_ERR_NOMEM ? SLUICE_ENOMEM : SLUICE_EPROTO,
                      "HTTP/2 request to %s: %s", pc->peer, nghttp2_strerror(id));
    }
    st->id = id;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->nstreams++;
    c->idle_since = 0;
    count_stream(pc->counts);
    k = needs_kick(c);
    pthread_mutex_unlock(&c->lock);
    sl_free(l.heap);
    if (k)
        kick(c);
    return 0;
}

int sl_h2_stream_push(sl_h2_stream *st, const void *p, size_t n, int eof, int64_t deadline,
                      sluice_error *err)
{
    h2c *c = of(st->conn);
    int rc = 0, k;

    pthread_mutex_lock(&c->lock);
    while (!st->closed && st->up.len - st->up_off >= PUSH_ROOM) {
        if (sl_now_ns() >= deadline) {
            pthread_mutex_unlock(&c->lock);
            return sl_err(err, SLUICE_ETIMEDOUT, "sending the request body to %s", st->conn->peer);
        }
        wait_stream(c, st, deadline);
    }
    if (st->closed) {
        /* the server answered (or failed) first: the rest is not wanted */
        rc = st->rc;
        if (rc)
            sl_err(err, rc, "%s", st->msg);
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    if (sl_buf_append(&st->up, p, n))
        rc = sl_err(err, SLUICE_ENOMEM, "out of memory sending a request body");
    st->up_eof = eof;
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(c->s, st->id);
    }
    k = needs_kick(c);
    pthread_mutex_unlock(&c->lock);
    if (k)
        kick(c);
    return rc;
}

/* Lock held: the stream leaves the connection (nghttp2 keeps no pointer
 * to it, late DATA is consumed and dropped).  Returns whether the I/O
 * thread must be woken. */
static int detach(h2c *c, sl_h2_stream *st)
{
    if (!st->closed) {
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
        st->closed = 1;
    }
    nghttp2_session_set_stream_user_data(c->s, st->id, NULL);
    if (st->head_done && st->in.len - st->in_off > st->head_len)   /* the connection's credit */
        nghttp2_session_consume(c->s, st->id, st->in.len - st->in_off - st->head_len);
    if (st->touched) {      /* not woken after all: off the round's list */
        sl_h2_stream **pp = &c->touched;
        while (*pp != st)
            pp = &(*pp)->tnext;
        *pp = st->tnext;
    }
    *(st->prev ? &st->prev->next : &c->streams) = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (--c->nstreams == 0)
        c->idle_since = sl_now_ns();
    atomic_fetch_sub_explicit(&st->conn->counts->streams, 1, memory_order_relaxed);
    st->detached = 1;
    return nghttp2_session_want_write(c->s) ? needs_kick(c) : 0;
}

/* Lock held: the reader takes everything `in` holds (swapped into its own
 * buffer, so the I/O thread appends to an empty one); the DATA among it
 * goes back to the server as credit.  A stream that has ended and is
 * drained leaves the connection here, in the same hold of the lock. */
static int take_all(h2c *c, sl_h2_stream *st)
{
    sl_buf t = st->mine;
    /* DATA never precedes the head (nghttp2 refuses it): before the head
     * is complete, `in` holds head bytes only. */
    size_t data = st->head_done ? st->in.len - st->in_off - st->head_len : 0;
    int k = 0;

    st->mine = st->in;
    st->mine_off = st->in_off;
    sl_buf_reset(&t);
    st->in = t;
    st->in_off = 0;
    st->head_len = 0;
    if (data)   /* the stream's credit while it is open, the connection's always */
        nghttp2_session_consume(c->s, st->id, data);
    if (st->closed)
        k = detach(c, st);
    else if (data && nghttp2_session_want_write(c->s))
        k = needs_kick(c);   /* a WINDOW_UPDATE */
    return k;
}

ssize_t sl_h2_read(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err)
{
    sl_h2_stream *st = ctx;
    h2c *c = of(st->conn);
    int64_t until;
    ssize_t rc;
    int k = 0;

    if (st->mine.len > st->mine_off) {     /* the reader's own: no lock */
        size_t n = st->mine.len - st->mine_off < cap ? st->mine.len - st->mine_off : cap;
        memcpy(buf, st->mine.data + st->mine_off, n);
        st->mine_off += n;
        return (ssize_t)n;
    }
    if (st->detached)
        return st->rc ? sl_err(err, st->rc, "%s", st->msg) : 0;
    until = st->read_timeout_ns > 0 ? sl_deadline_min(deadline, sl_now_ns() + st->read_timeout_ns)
                                    : deadline;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        if ((st->head_done && st->in.len > st->in_off) || st->closed) {
            k = take_all(c, st);
            rc = 1;
            break;
        }
        if (sl_now_ns() >= until) {
            rc = sl_err(err, SLUICE_ETIMEDOUT, "reading the response from %s timed out "
                        "(HTTP/2 stream %d)", st->conn->peer, st->id);
            break;
        }
        wait_stream(c, st, until);
    }
    pthread_mutex_unlock(&c->lock);
    if (k)
        kick(c);
    if (rc < 0)
        return rc;
    /* a stream that ended before its head has only its error to give */
    if (!st->head_done && st->rc)
        st->mine_off = st->mine.len;
    return sl_h2_read(ctx, buf, cap, deadline, err);
}

int sl_h2_stream_end(sl_h2_stream *st, int ok, int64_t deadline)
{
    h2c *c = of(st->conn);
    int k;

    if (!st->detached) {
        /* The END_STREAM flag comes with the last DATA frame from every
         * server seen, so this rarely waits; one that sends it late gets a
         * second. */
        deadline = sl_deadline_min(deadline, sl_now_ns() + 1000000000LL);
        pthread_mutex_lock(&c->lock);
        while (ok && !st->closed && sl_now_ns() < deadline)
            wait_stream(c, st, deadline);
        k = detach(c, st);
        pthread_mutex_unlock(&c->lock);
        if (k)
            kick(c);
    }
    sl_buf_free(&st->in);
    sl_buf_free(&st->mine);
    sl_buf_free(&st->up);
    return st->refused;
}

/* ---- the I/O thread -------------------------------------------------------- */

/* Lock held: what nghttp2 has to send, into `out`. */
static int gather(h2c *c)
{
    while (c->out.len < OUT_MAX) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->s, &p);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        if (sl_buf_append(&c->out, p, (size_t)n))
            return NGHTTP2_ERR_NOMEM;
    }
    return 0;
}

/* Without the lock: writes what `out` holds, as far as the socket takes
 * it.  0, or a negative SLUICE_E* with err set. */
static int flush(h2c *c, sluice_error *err)
{
    while (c->out_off < c->out.len) {
        ssize_t n;
        if (c->net->tls) {
            /* wolfSSL wants the same buffer again after a short write */
            if (!c->tls_chunk)
                c->tls_chunk = c->out.len - c->out_off < 16384 ? c->out.len - c->out_off : 16384;
            n = sl_tls_write_now(c->net->tls, c->out.data + c->out_off, c->tls_chunk, err);
            if (n > 0)
                c->tls_chunk = 0;
        } else {
            n = send(c->net->fd, c->out.data + c->out_off, c->out.len - c->out_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                n = 0;
            else if (n < 0)
                return sl_err(err, SLUICE_EIO, "writing to %s: %s", c->pub.peer, strerror(errno));
        }
        if (n < 0)
            return (int)n;
        if (n == 0)
            return 0;
        c->out_off += (size_t)n;
    }
    c->out_off = 0;
    sl_buf_reset(&c->out);
    return 0;
}

/* Without the lock: reads what is there now into rbuf[at..].  Bytes read
 * (0: none now), or a negative SLUICE_E*; *eof when the peer closed. */
static ssize_t read_some(h2c *c, size_t at, int *eof, sluice_error *err)
{
    ssize_t n;

    if (c->net->tls)
        return sl_tls_read_now(c->net->tls, c->rbuf + at, sizeof c->rbuf - at, eof, err);
    n = recv(c->net->fd, c->rbuf + at, sizeof c->rbuf - at, MSG_DONTWAIT);
    if (n > 0)
        return n;
    if (n == 0) {
        *eof = 1;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    return sl_err(err, SLUICE_EIO, "reading from %s: %s", c->pub.peer, strerror(errno));
}

/* Fills rbuf as far as the socket (and TLS, a record at a time) has bytes:
 * how many, or a negative SLUICE_E* when nothing came before the error. */
static ssize_t fill(h2c *c, int *eof, sluice_error *err)
{
    size_t got = 0;

    *eof = 0;
    while (got < sizeof c->rbuf && !*eof) {
        ssize_t n = read_some(c, got, eof, err);
        if (n < 0)
            return got ? (ssize_t)got : n;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Lock held: the timers.  Returns how long poll may sleep (ms), or -2
 * when the connection is to end (fail_all done). */
static int timers(h2c *c, int64_t now)
{
    int64_t next = INT64_MAX;
    const sl_h2_cfg *g = &c->cfg;
    char why[160];

    if (g->ping_interval_ms > 0) {
        if (c->ping_sent && now - c->ping_sent >= (int64_t)g->ping_timeout_ms * 1000000) {
            snprintf(why, sizeof why, "no answer to PING within h2_ping_timeout_ms (%d ms)",
                     g->ping_timeout_ms);
            fail_all(c, SLUICE_EIO, why);
            return -2;
        }
        if (!c->ping_sent && now - c->last_read >= (int64_t)g->ping_interval_ms * 1000000) {
            nghttp2_submit_ping(c->s, NGHTTP2_FLAG_NONE, NULL);
            c->ping_sent = now;
        }
        next = c->ping_sent ? c->ping_sent + (int64_t)g->ping_timeout_ms * 1000000
                            : c->last_read + (int64_t)g->ping_interval_ms * 1000000;
    }
    if (g->idle_timeout_ms > 0 && c->idle_since && !atomic_load(&c->pub.draining)) {
        int64_t end = c->idle_since + (int64_t)g->idle_timeout_ms * 1000000;
        if (now >= end) {
            atomic_store(&c->pub.draining, 1);
            c->notify = 1;
            nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR);
            SL_DEBUG("HTTP/2 %s: idle for %d ms, closing", c->pub.peer, g->idle_timeout_ms);
        } else if (end < next) {
            next = end;
        }
    }
    if (next == INT64_MAX)
        return -1;
    return next <= now ? 0 : (int)((next - now) / 1000000 + 1);
}

/* One round: bytes in, frames out, wakes.  0 to go on, else stop. */
static int round_in(h2c *c, const char *p, size_t n)
{
    ssize_t used;

    c->last_read = sl_now_ns();
    c->ping_sent = 0;
    used = nghttp2_session_mem_recv(c->s, (const uint8_t *)p, n);
    if (used < 0) {
        char why[160];
        snprintf(why, sizeof why, "%s", nghttp2_strerror((int)used));
        fail_all(c, used == NGHTTP2_ERR_NOMEM ? SLUICE_ENOMEM : SLUICE_EPROTO, why);
        return -1;
    }
    return 0;
}

static void *io_main(void *arg)
{
    h2c *c = arg;
    sluice_error e = {0};
    int stop = 0, yielded = 0;
    size_t end_woken;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        struct pollfd pf[2];
        int wait_ms, eof = 0, rc, tell;
        size_t woken;
        ssize_t n;

        if (c->shut) {
            fail_all(c, SLUICE_ECLOSED, "the factory is being freed");
            break;
        }
        if (c->out.len == 0 && (rc = gather(c)) != 0) {
            fail_all(c, SLUICE_EPROTO, nghttp2_strerror(rc));
            break;
        }
        if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s) &&
            c->out.len == 0) {
            fail_all(c, SLUICE_EIO, "the connection ended (GOAWAY)");
            break;
        }
        if ((wait_ms = timers(c, sl_now_ns())) == -2)
            break;
        if (c->out.len == 0 && (rc = gather(c)) != 0) {      /* a PING or GOAWAY */
            fail_all(c, SLUICE_EPROTO, nghttp2_strerror(rc));
            break;
        }
        if ((woken = mark_touched(c)) != 0 && !yielded) {
            /* The callers woken mostly come straight back with their next
             * request: let them, and send all of it in one write. */
            pthread_mutex_unlock(&c->lock);
            wake_marked(c, woken);
            sched_yield();
            pthread_mutex_lock(&c->lock);
            yielded = 1;
            continue;
        }
        yielded = 0;
        c->polling = 1;
        tell = c->notify;   /* what the table can lease changed */
        c->notify = 0;
        pthread_mutex_unlock(&c->lock);
        wake_marked(c, woken);
        if (tell)
            sl_h2_pool_notify(c->pub.pool, c->pub.origin);

        if (c->net->tls && sl_tls_pending(c->net->tls) > 0)
            wait_ms = 0;
        pf[0] = (struct pollfd){c->net->fd, (short)(POLLIN | (c->out.len ? POLLOUT : 0)), 0};
        pf[1] = (struct pollfd){c->efd, POLLIN, 0};
        if (poll(pf, 2, wait_ms) < 0 && errno != EINTR) {
            pthread_mutex_lock(&c->lock);
            fail_all(c, SLUICE_EIO, "poll failed");
            break;
        }
        if (pf[1].revents & POLLIN) {
            uint64_t v;
            n = read(c->efd, &v, sizeof v);
            (void)n;
        }
        rc = c->out.len ? flush(c, &e) : 0;
        n = rc == 0 ? fill(c, &eof, &e) : 0;
        pthread_mutex_lock(&c->lock);
        c->polling = 0;
        if (rc < 0 || n < 0) {
            fail_all(c, rc < 0 ? rc : (int)n, e.msg);
            break;
        }
        while (n > 0 && !stop) {
            stop = round_in(c, c->rbuf, (size_t)n);
            /* more may wait in the socket (or in wolfSSL): up to a few rounds */
            if (stop || (size_t)n < sizeof c->rbuf)
                break;
            pthread_mutex_unlock(&c->lock);
            n = fill(c, &eof, &e);
            pthread_mutex_lock(&c->lock);
            if (n < 0) {
                fail_all(c, (int)n, e.msg);
                stop = 1;
            }
        }
        if (stop)
            break;
        if (eof) {
            fail_all(c, SLUICE_EIO, "the server closed the connection");
            break;
        }
    }
    /* No stream can start here any more; the ones open have ended. */
    atomic_store(&c->pub.draining, 1);
    if (c->out.len)     /* a GOAWAY, close_notify: one try, no waiting */
        (void)flush(c, &e);
    end_woken = mark_touched(c);
    pthread_mutex_unlock(&c->lock);
    wake_marked(c, end_woken);
    atomic_fetch_sub_explicit(&c->pub.counts->open, 1, memory_order_relaxed);
    SL_DEBUG("HTTP/2 connection to %s closed: %s", c->pub.peer,
             c->fail_rc ? c->fail_msg : "done");
    sl_conn_close(c->net);
    c->net = NULL;
    atomic_store(&c->pub.finished, 1);
    sl_h2_pool_notify(c->pub.pool, c->pub.origin);
    atomic_store(&c->pub.exited, 1);
    return NULL;
}

/* ---- start and end ---------------------------------------------------------- */

static nghttp2_session_callbacks *callbacks(void)
{
    nghttp2_session_callbacks *cb;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_session_callbacks_set_error_callback2(cb, on_error);
    return cb;
}

static int new_session(h2c *c)
{
    nghttp2_session_callbacks *cb = callbacks();
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)c->cfg.stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)(c->cfg.max_header_bytes > UINT32_MAX
                                                               ? UINT32_MAX
                                                               : c->cfg.max_header_bytes)},
    };
    int rc = NGHTTP2_ERR_NOMEM;

    if (cb && nghttp2_option_new(&opt) == 0) {
        nghttp2_option_set_no_auto_window_update(opt, 1);
        nghttp2_option_set_peer_max_concurrent_streams(opt, FIRST_LIMIT);
        rc = nghttp2_session_client_new2(&c->s, cb, c, opt);
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc == 0)
        rc = nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    if (rc == 0)
        rc = nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    if (rc == 0 && c->cfg.first_stream_id > 1)
        rc = nghttp2_session_set_next_stream_id(c->s, c->cfg.first_stream_id);
    return rc;
}

static void conn_free(h2c *c)
{
    if (c->s)
        nghttp2_session_del(c->s);
    if (c->efd >= 0)
        close(c->efd);
    sl_conn_close(c->net);
    sl_buf_free(&c->out);
    sl_free(c->wakes);
    pthread_mutex_destroy(&c->lock);
    sl_free(c);
}

sl_h2_conn *sl_h2_conn_start(sl_h2_pool *p, sl_h2_origin *o, sl_conn *net, const sl_h2_cfg *cfg,
                             sl_h2_counts *counts, sluice_error *err)
{
    h2c *c = sl_calloc(1, sizeof *c);
    int rc;

    if (!c) {
        sl_conn_close(net);
        sl_err(err, SLUICE_ENOMEM, "out of memory for an HTTP/2 connection");
        return NULL;
    }
    c->net = net;
    c->efd = -1;
    c->cfg = *cfg;
    c->cap = cfg->max_streams;
    c->pub.pool = p;
    c->pub.origin = o;
    c->pub.counts = counts;
    c->pub.tls = net->tls != NULL;
    /* One stream (the dialer's) until the server's SETTINGS tell its limit,
     * so a server that allows few is not sent a burst it must refuse. */
    atomic_init(&c->pub.limit, 1);
    snprintf(c->pub.peer, sizeof c->pub.peer, "%s", net->peer);
    c->last_read = c->idle_since = sl_now_ns();
    if (sl_mutex_init(&c->lock, "HTTP/2 connection", err)) {
        sl_conn_close(net);
        sl_free(c);
        return NULL;
    }
    if ((c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        sl_err(err, SLUICE_ENOMEM, "eventfd for an HTTP/2 connection: %s", strerror(errno));
        goto fail;
    }
    if ((rc = new_session(c)) != 0) {
        sl_err(err, rc == NGHTTP2_ERR_NOMEM ? SLUICE_ENOMEM : SLUICE_EPROTO,
               "HTTP/2 session for %s: %s", net->peer, nghttp2_strerror(rc));
        goto fail;
    }
    atomic_fetch_add_explicit(&counts->open, 1, memory_order_relaxed);
    if ((rc = pthread_create(&c->pub.thread, NULL, io_main, c)) != 0) {
        atomic_fetch_sub_explicit(&counts->open, 1, memory_order_relaxed);
        sl_err(err, SLUICE_ENOMEM, "cannot start the I/O thread for %s: %s", net->peer,
               strerror(rc));
        goto fail;
    }
    SL_DEBUG("HTTP/2 connection to %s (%s) opened", c->pub.peer, c->pub.tls ? "h2 by ALPN" : "h2c");
    return &c->pub;
fail:
    conn_free(c);
    return NULL;
}

void sl_h2_conn_shut(sl_h2_conn *pc)
{
    h2c *c = of(pc);
    int k;

    pthread_mutex_lock(&c->lock);
    c->shut = 1;
    k = needs_kick(c);
    pthread_mutex_unlock(&c->lock);
    if (k)
        kick(c);
}

void sl_h2_conn_forget(sl_h2_conn *pc)
{
    h2c *c = of(pc);

    /* Its I/O thread stayed in the parent, and its lock may be held by one
     * of the parent's threads: only the memory and the descriptors go. */
    nghttp2_session_del(c->s);
    close(c->efd);
    sl_conn_forget(c->net);
    sl_buf_free(&c->out);
    sl_free(c->wakes);
    sl_free(c);
}

void sl_h2_conn_free(sl_h2_conn *pc)
{
    h2c *c = of(pc);

    if (!c)
        return;
    pthread_join(pc->thread, NULL);
    conn_free(c);
}
