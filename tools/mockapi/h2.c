/* HTTP/2 connections (RFC 9113) through nghttp2's server session.
 *
 * The connection thread (the one conn.c gave the socket to) owns the
 * socket, the WOLFSSL and the nghttp2_session: no other thread touches
 * them.  It polls the socket and an eventfd, feeds what it reads to
 * nghttp2_session_mem_recv and writes what nghttp2_session_mem_send
 * produces, without blocking on either.
 *
 * A complete request (END_STREAM seen) goes to the connection's worker
 * pool: threads started on demand and kept until the connection ends, so
 * a slow handler (/delay, /drip) holds up only its own stream.  A worker
 * runs the ordinary handler against a mock_conn whose sink is the stream;
 * mock_h2_write decodes the HTTP/1.1 the handler writes (h1resp.c) into a
 * head and body bytes and kicks the eventfd when the connection thread has
 * something to do: submit the head, resume a deferred data provider, reset
 * the stream.
 *
 * Locking: one mutex per connection (h->lock) guards the pool and every
 * stream's shared part; it is never held across socket I/O or an nghttp2
 * call.  A stream is freed by the connection thread only, once nghttp2 has
 * closed it and its worker, if it got one, is done with it. */
#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "h2.h"

#define READ_CHUNK        65536
#define OUT_HIGH          (256u << 10)   /* ask nghttp2 for no more frames past this much unsent */
#define STREAM_BUF_MAX    (1u << 20)     /* a handler waits while this much of its body is unsent */
#define WORKER_STACK      (1u << 20)
#define MUTE_MS           60000
#define MAX_HEADER_BLOCK  (40u << 20)    /* /bigheader/N is up to 16 MiB */
#define BIG_FIELDS        64
#define BIG_FIELD_LEN     16384

/* What the connection does once a stream's END_STREAM is out. */
enum after { AFTER_NONE, AFTER_GOAWAY, AFTER_MUTE, AFTER_DATA };

typedef struct h2conn h2conn;
typedef struct mock_h2_stream h2stream;

struct mock_h2_stream {
    h2conn *h;
    int32_t id;
    h2stream *prev, *next;        /* h->streams; connection thread only */
    h2stream *next_work;          /* a dirty batch being processed; connection thread only */
    /* The request: the connection thread's until the stream is queued, read-only after. */
    mock_buf method, target, fields, body;
    size_t nfields;               /* "name\0value\0" pairs in fields */
    const char *bad;              /* answer 400 with this reason instead of running the route */
    int expect_continue;          /* "expect: 100-continue" came */
    /* Under h->lock. */
    h2stream *next_queued, *next_dirty;
    mock_h1resp resp;             /* the handler's response being decoded */
    mock_buf out;                 /* body bytes decoded, not yet given to nghttp2 */
    size_t out_off;
    int queued, finished, complete, closed, dirty, deferred, waiting;
    int head_submitted, reset_wanted, rst_sent, bad_frame, bad_frame_sent;
    int after;                    /* enum after */
    pthread_cond_t wake;          /* room in out, or the stream's end */
};

struct h2conn {
    mock_conn *c;
    const mock_config *cfg;
    nghttp2_session *session;
    int efd;                      /* workers kick the connection thread through it */
    mock_buf out;                 /* frames to write */
    size_t out_off, tls_retry;    /* tls_retry: a TLS write to repeat with this length */
    mock_buf post;                /* raw frames to follow the frame nghttp2 just produced */
    mock_buf raw;                 /* raw frames to send between two frames */
    unsigned nth;                 /* streams begun */
    int32_t goaway_id;            /* last id of the GOAWAY --h2-goaway-after sent; 0 = none */
    int64_t send_after;           /* nothing is sent before; 0 until the preface arrived */
    int64_t last_active;
    int mute_pending, idle_goaway;
    int more;                     /* produce() stopped at OUT_HIGH, not for lack of frames */
    h2stream *streams;
    /* Under lock. */
    pthread_mutex_t lock;
    pthread_cond_t work, workers_gone;
    h2stream *queue_head, *queue_tail, *dirty;
    unsigned nqueued, nidle, nworkers;
    int kicked, ending;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t unsent(const h2stream *s)
{
    return s->out.len - s->out_off;
}

/* Puts s on the dirty list for the connection thread; with `kick`, wakes
 * it too (callers other than the connection thread).  Caller holds h->lock. */
static void mark_dirty(h2conn *h, h2stream *s, int kick)
{
    uint64_t one = 1;

    if (!s->dirty) {
        s->dirty = 1;
        s->next_dirty = h->dirty;
        h->dirty = s;
    }
    if (kick && !h->kicked) {
        h->kicked = 1;
        if (write(h->efd, &one, sizeof one) < 0)
            h->kicked = 0;
    }
}

/* --- streams: the worker's side -------------------------------------------- */

int mock_h2_write(h2stream *s, const void *p, size_t n)
{
    h2conn *h = s->h;
    int had_head, r = 0;
    size_t before;

    pthread_mutex_lock(&h->lock);
    if (s->closed || h->ending || s->reset_wanted) {
        pthread_mutex_unlock(&h->lock);
        return -1;
    }
    had_head = s->resp.status != 0;
    before = s->out.len;
    if (mock_h1resp_feed(&s->resp, p, n, &s->out) != 0) {
        s->reset_wanted = 1;
        mark_dirty(h, s, 1);
        r = -1;
    } else if ((!had_head && s->resp.status) || (s->deferred && s->out.len > before)) {
        mark_dirty(h, s, 1);
    }
    while (r == 0 && unsent(s) > STREAM_BUF_MAX && !s->closed && !h->ending) {
        s->waiting = 1;
        pthread_cond_wait(&s->wake, &h->lock);
        s->waiting = 0;
    }
    if (s->closed || h->ending)
        r = -1;
    pthread_mutex_unlock(&h->lock);
    return r;
}

void mock_h2_reset(h2stream *s)
{
    pthread_mutex_lock(&s->h->lock);
    s->reset_wanted = 1;
    mark_dirty(s->h, s, 1);
    pthread_mutex_unlock(&s->h->lock);
}

void mock_h2_hold(h2stream *s, int max_ms)
{
    struct timespec end;

    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += max_ms / 1000;
    end.tv_nsec += (long)(max_ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->h->lock);
    while (!s->closed && !s->h->ending)
        if (pthread_cond_timedwait(&s->wake, &s->h->lock, &end) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&s->h->lock);
}

static void set_after(h2stream *s, int after)
{
    pthread_mutex_lock(&s->h->lock);
    s->after = after;
    pthread_mutex_unlock(&s->h->lock);
}

/* The handler returned: the response is complete, or the stream is reset. */
static void stream_done(h2stream *s, const mock_conn *c)
{
    h2conn *h = s->h;

    pthread_mutex_lock(&h->lock);
    s->finished = 1;
    if (!s->bad_frame) {
        s->complete = !s->reset_wanted && !c->gone && mock_h1resp_finish(&s->resp);
        s->reset_wanted = !s->complete;
        /* /close and the /raw/ responses end an HTTP/1.1 connection. */
        if (s->complete && c->last && s->after == AFTER_NONE)
            s->after = AFTER_GOAWAY;
    }
    mark_dirty(h, s, 1);
    pthread_mutex_unlock(&h->lock);
}

static void request_from(const h2stream *s, mock_request *req)
{
    const char *p = s->fields.data, *q;
    size_t i;

    memset(req, 0, sizeof *req);
    req->method = s->method.data ? s->method.data : "";
    req->method_len = s->method.len;
    req->target = req->path = s->target.data ? s->target.data : "";
    req->target_len = req->path_len = s->target.len;
    if ((q = memchr(req->target, '?', req->target_len))) {
        req->path_len = (size_t)(q - req->target);
        req->query = q + 1;
        req->query_len = req->target_len - req->path_len - 1;
    }
    req->minor = 1;
    req->keep_alive = 1;
    for (i = 0; i < s->nfields; i++) {
        mock_header *f = &req->headers[i];
        f->name = p;
        f->name_len = strlen(p);
        p += f->name_len + 1;
        f->value = p;
        f->value_len = strlen(p);
        p += f->value_len + 1;
    }
    req->nheaders = s->nfields;
    req->body = s->body.data ? s->body.data : "";
    req->body_len = req->content_length = s->body.len;
}

/* A request nghttp2 let through but the routes cannot take, answered as
 * conn.c answers a bad HTTP/1.1 request (the connection stays up). */
static void reject(mock_conn *c, const char *why)
{
    mock_buf b = MOCK_BUF_INIT;

    atomic_fetch_add(&mock_state.bad_requests, 1);
    mock_log(c->cfg, "400 Bad Request: %s", why);
    mock_buf_puts(&b, "{\"error\":\"bad request\",\"reason\":");
    mock_buf_json_str(&b, why, strlen(why));
    mock_buf_puts(&b, "}");
    if (!b.failed)
        mock_respond(c, 400, "application/json", NULL, b.data, b.len);
    mock_buf_free(&b);
}

static void run_stream(h2stream *s)
{
    mock_request req;
    mock_conn c;
    int closed;

    memset(&c, 0, sizeof c);
    c.fd = -1;
    c.cfg = s->h->cfg;
    c.sink = s;
    request_from(s, &req);
    c.head_only = req.method_len == 4 && memcmp(req.method, "HEAD", 4) == 0;
    pthread_mutex_lock(&s->h->lock);
    s->resp.head_only = c.head_only;
    closed = s->closed;
    pthread_mutex_unlock(&s->h->lock);
    if (!closed) {
        atomic_fetch_add(&mock_state.h2_streams, 1);
        if (s->bad)
            reject(&c, s->bad);
        else
            mock_handle(&c, &req);
    }
    stream_done(s, &c);
}

static void *worker_main(void *arg)
{
    h2conn *h = arg;

    pthread_mutex_lock(&h->lock);
    for (;;) {
        h2stream *s;
        while (!h->queue_head && !h->ending) {
            h->nidle++;
            pthread_cond_wait(&h->work, &h->lock);
            h->nidle--;
        }
        if (h->ending)
            break;
        s = h->queue_head;
        if (!(h->queue_head = s->next_queued))
            h->queue_tail = NULL;
        h->nqueued--;
        pthread_mutex_unlock(&h->lock);
        run_stream(s);
        pthread_mutex_lock(&h->lock);
    }
    if (--h->nworkers == 0)
        pthread_cond_broadcast(&h->workers_gone);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Caller holds h->lock. */
static void start_worker(h2conn *h)
{
    pthread_attr_t attr;
    pthread_t tid;
    int err = -1;

    if (pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, WORKER_STACK);
        err = pthread_create(&tid, &attr, worker_main, h);
        pthread_attr_destroy(&attr);
    }
    if (err == 0)
        h->nworkers++;
    else
        mock_log(h->cfg, "cannot start an HTTP/2 worker: %s", strerror(err > 0 ? err : ENOMEM));
}

/* The request is complete: a worker runs it, a new one when all are busy. */
static void enqueue(h2conn *h, h2stream *s)
{
    if (!s->bad && (!s->method.len || !s->target.len))
        s->bad = "no :method or :path";
    if (!s->bad && (s->fields.failed || s->method.failed || s->target.failed || s->body.failed))
        s->bad = "out of memory";
    pthread_mutex_lock(&h->lock);
    s->queued = 1;
    if (h->queue_tail)
        h->queue_tail->next_queued = s;
    else
        h->queue_head = s;
    h->queue_tail = s;
    if (++h->nqueued > h->nidle)
        start_worker(h);
    else
        pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->lock);
}

/* --- streams: the connection thread's side ------------------------------ */

static h2stream *stream_new(h2conn *h, int32_t id)
{
    h2stream *s = calloc(1, sizeof *s);
    pthread_condattr_t attr;

    if (!s)
        return NULL;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &attr);
    pthread_condattr_destroy(&attr);
    s->h = h;
    s->id = id;
    if ((s->next = h->streams))
        s->next->prev = s;
    h->streams = s;
    return s;
}

static void stream_free(h2conn *h, h2stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    mock_buf_free(&s->method);
    mock_buf_free(&s->target);
    mock_buf_free(&s->fields);
    mock_buf_free(&s->body);
    mock_buf_free(&s->out);
    mock_h1resp_free(&s->resp);
    pthread_cond_destroy(&s->wake);
    free(s);
}

/* Hands nghttp2 the decoded body; defers while the handler is still at it. */
static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user)
{
    h2stream *s = src->ptr;
    size_t k;
    ssize_t r;

    pthread_mutex_lock(&s->h->lock);
    k = unsent(s) < length ? unsent(s) : length;
    if (k)
        memcpy(buf, s->out.data + s->out_off, k);
    s->out_off += k;
    if (s->out_off == s->out.len) {
        s->out.len = s->out_off = 0;
    } else if (s->out_off >= STREAM_BUF_MAX) {
        memmove(s->out.data, s->out.data + s->out_off, unsent(s));
        s->out.len -= s->out_off;
        s->out_off = 0;
    }
    if (k && s->waiting)
        pthread_cond_signal(&s->wake);
    r = (ssize_t)k;
    if (unsent(s) == 0 && s->finished && s->complete)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (k == 0 && (s->reset_wanted || s->finished))
        r = NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;     /* RST_STREAM(INTERNAL_ERROR) */
    else if (k == 0)
        s->deferred = 1, r = NGHTTP2_ERR_DEFERRED;
    pthread_mutex_unlock(&s->h->lock);
    return r;
}

static void submit_head(h2conn *h, h2stream *s, int with_body)
{
    nghttp2_data_provider body = {.source.ptr = s, .read_callback = read_body};
    nghttp2_nv *nva = calloc(s->resp.nfields + 1, sizeof *nva);
    const char *p = s->resp.fields.data;
    char status[8];
    size_t i;

    if (!nva) {
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    snprintf(status, sizeof status, "%d", s->resp.status);
    nva[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE};
    for (i = 1; i <= s->resp.nfields; i++) {
        nva[i].name = (uint8_t *)p;
        nva[i].namelen = strlen(p);
        p += nva[i].namelen + 1;
        nva[i].value = (uint8_t *)p;
        nva[i].valuelen = strlen(p);
        p += nva[i].valuelen + 1;
    }
    if (nghttp2_submit_response(h->session, s->id, nva, s->resp.nfields + 1, with_body ? &body : NULL) != 0)
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    free(nva);
}

/* Does what a dirty stream needs from the session; frees it when done. */
static void attend(h2conn *h, h2stream *s)
{
    static const unsigned char settings_on_stream_1[9] = {0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 1};
    int head, with_body, rst, resume, bad_frame, freeable;

    pthread_mutex_lock(&h->lock);
    freeable = s->closed && (!s->queued || s->finished) && !s->dirty;
    /* A head already decoded goes out even when the stream is to be reset:
     * read_body sends what body came, then resets (/reset's 1000 bytes). */
    head = !s->closed && s->resp.status && !s->head_submitted;
    with_body = !(s->finished && s->complete && unsent(s) == 0);
    rst = !s->closed && s->reset_wanted && !s->resp.status && !s->rst_sent;
    resume = !s->closed && s->deferred && (unsent(s) || s->finished || s->reset_wanted);
    bad_frame = s->bad_frame && s->finished && !s->bad_frame_sent;
    s->head_submitted |= head;
    s->rst_sent |= rst;
    s->bad_frame_sent |= bad_frame;
    if (resume)
        s->deferred = 0;
    pthread_mutex_unlock(&h->lock);
    if (freeable) {
        stream_free(h, s);
        return;
    }
    if (rst)
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    if (head)
        submit_head(h, s, with_body);
    if (resume)
        nghttp2_session_resume_data(h->session, s->id);
    if (bad_frame)
        mock_buf_add(&h->raw, settings_on_stream_1, sizeof settings_on_stream_1);
}

static void attend_dirty(h2conn *h)
{
    h2stream *batch = NULL, *s;

    pthread_mutex_lock(&h->lock);
    for (s = h->dirty; s; s = s->next_dirty) {
        s->dirty = 0;
        s->next_work = batch;
        batch = s;
    }
    h->dirty = NULL;
    pthread_mutex_unlock(&h->lock);
    while ((s = batch)) {
        batch = s->next_work;
        attend(h, s);
    }
}

/* --- nghttp2 callbacks (connection thread) ------------------------------- */

static int goaway_at(const mock_config *cfg)
{
    int a = cfg->h2_goaway_after, b = cfg->max_requests;

    return a && b ? (a < b ? a : b) : a ? a : b;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    h2conn *h = user;
    int32_t id = frame->hd.stream_id;
    h2stream *s;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h->nth++;
    if ((h->goaway_id && id > h->goaway_id) || h->nth == (unsigned)h->cfg->h2_refuse) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    if (!(s = stream_new(h, id)))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(session, id, s);
    if (h->nth == (unsigned)goaway_at(h->cfg)) {
        nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR, NULL, 0);
        h->goaway_id = id;
    }
    return 0;
}

static void add_field(h2stream *s, const char *name, size_t nlen, const uint8_t *value, size_t vlen)
{
    if (s->nfields == MOCK_MAX_HEADERS) {
        s->bad = "too many header fields";
        return;
    }
    mock_buf_add(&s->fields, name, nlen);
    mock_buf_add(&s->fields, "", 1);
    mock_buf_add(&s->fields, value, vlen);
    mock_buf_add(&s->fields, "", 1);
    s->nfields++;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    h2stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    const char *n = (const char *)name;

    if (!s || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    /* Handlers see fields as HTTP/1.1 would send them: the text stops at
     * a NUL, which nghttp2 refuses in values anyway. */
    if (nlen == 7 && memcmp(n, ":method", 7) == 0)
        mock_buf_add(&s->method, value, vlen);
    else if (nlen == 5 && memcmp(n, ":path", 5) == 0)
        mock_buf_add(&s->target, value, vlen);
    else if (nlen == 10 && memcmp(n, ":authority", 10) == 0)
        add_field(s, "host", 4, value, vlen);
    else if (nlen && n[0] != ':')
        add_field(s, n, nlen, value, vlen);
    if (nlen == 6 && memcmp(n, "expect", 6) == 0 && vlen == 12 &&
        strncasecmp((const char *)value, "100-continue", 12) == 0)
        s->expect_continue = 1;
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    h2stream *s = nghttp2_session_get_stream_user_data(session, id);

    if (!s || s->bad)
        return 0;
    if (s->body.len + len > MOCK_MAX_BODY) {
        s->bad = "request too large";
        mock_buf_free(&s->body);
        return 0;
    }
    mock_buf_add(&s->body, data, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    static const nghttp2_nv go_on[] = {{(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE}};
    h2stream *s;

    /* As conn.c does for HTTP/1.1: the body is read before the route runs. */
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id)) && s->expect_continue)
        nghttp2_submit_headers(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NULL, go_on, 1, NULL);

    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id)) && !s->queued)
        enqueue(user, s);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    h2conn *h = user;
    int32_t id = frame->hd.stream_id;
    h2stream *s;
    unsigned char extra[14] = {0, 0, 5, NGHTTP2_DATA, 0, (unsigned char)((id >> 24) & 0x7f),
                               (unsigned char)(id >> 16), (unsigned char)(id >> 8), (unsigned char)id,
                               'e', 'x', 't', 'r', 'a'};

    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        !(s = nghttp2_session_get_stream_user_data(session, id)))
        return 0;
    /* s->after was set before the handler finished, and END_STREAM goes
     * out only after that: no lock needed to read it. */
    if (s->after == AFTER_GOAWAY)
        nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR, NULL, 0);
    else if (s->after == AFTER_MUTE)
        h->mute_pending = 1;
    else if (s->after == AFTER_DATA)
        mock_buf_add(&h->post, extra, sizeof extra);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *user)
{
    h2conn *h = user;
    h2stream *s = nghttp2_session_get_stream_user_data(session, id);

    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    pthread_mutex_lock(&h->lock);
    s->closed = 1;
    pthread_cond_broadcast(&s->wake);
    mark_dirty(h, s, 0);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

/* --- the connection -------------------------------------------------------- */

static int session_new(h2conn *h)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)h->cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)h->cfg->h2_window},
    };
    int rv;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, MAX_HEADER_BLOCK);
    rv = nghttp2_session_server_new2(&h->session, cb, h, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0)
        return -1;
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, 2) != 0)
        return -1;
    /* Uploads get the connection window the streams get (never below the
     * protocol's 65535). */
    if (h->cfg->h2_window > 65535 &&
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, h->cfg->h2_window) != 0)
        return -1;
    return 0;
}

static int take_input(h2conn *h, const void *p, size_t n)
{
    ssize_t rv;

    h->last_active = now_ms();
    if (!h->send_after)
        h->send_after = h->last_active + h->cfg->h2_settings_delay_ms;
    if ((rv = nghttp2_session_mem_recv(h->session, p, n)) < 0) {
        mock_log(h->cfg, "HTTP/2: %s", nghttp2_strerror((int)rv));
        return -1;
    }
    return 0;
}

/* Reads what the socket has, a bounded amount.  0, or -1 when the
 * connection is over. */
static int read_input(h2conn *h)
{
    char buf[READ_CHUNK];
    int i;

    for (i = 0; i < 16; i++) {
        long n;
        if (h->c->ssl) {
            n = mock_tls_recv(h->c->ssl, buf, sizeof buf);
        } else if ((n = recv(h->c->fd, buf, sizeof buf, 0)) < 0) {
            if (errno == EINTR)
                continue;
            n = errno == EAGAIN || errno == EWOULDBLOCK ? MOCK_TLS_AGAIN : -1;
        }
        if (n == MOCK_TLS_AGAIN)
            return 0;
        if (n <= 0 || take_input(h, buf, (size_t)n) != 0)
            return -1;
    }
    return 0;
}

/* Takes frames from nghttp2 into h->out, unless --h2-settings-delay still
 * runs or the connection is about to go mute.  0 or -1. */
static int produce(h2conn *h)
{
    h->more = 0;
    if (!h->send_after || now_ms() < h->send_after)
        return 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n;
        if (h->out.len - h->out_off >= OUT_HIGH || h->mute_pending) {
            h->more = !h->mute_pending;
            break;
        }
        n = nghttp2_session_mem_send(h->session, &p);
        if (n < 0) {
            mock_log(h->cfg, "HTTP/2: %s", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0) {
            /* Between frames: room for a deliberately bad one. */
            mock_buf_add(&h->out, h->raw.data, h->raw.len);
            h->raw.len = 0;
            break;
        }
        mock_buf_add(&h->out, p, (size_t)n);
        mock_buf_add(&h->out, h->post.data, h->post.len);
        h->post.len = 0;
    }
    return h->out.failed ? -1 : 0;
}

/* Writes what the socket takes.  0, or -1 when the connection is broken. */
static int flush(h2conn *h)
{
    while (h->out_off < h->out.len) {
        size_t n = h->tls_retry ? h->tls_retry : h->out.len - h->out_off;
        long w;
        if (h->c->ssl) {
            w = mock_tls_send(h->c->ssl, h->out.data + h->out_off, n);
            h->tls_retry = w == MOCK_TLS_AGAIN ? n : 0;
        } else if ((w = send(h->c->fd, h->out.data + h->out_off, n, MSG_NOSIGNAL)) < 0) {
            if (errno == EINTR)
                continue;
            w = errno == EAGAIN || errno == EWOULDBLOCK ? MOCK_TLS_AGAIN : -1;
        }
        if (w == MOCK_TLS_AGAIN)
            break;
        if (w <= 0) {
            h->c->broken = 1;
            return -1;
        }
        h->out_off += (size_t)w;
    }
    if (h->out_off == h->out.len) {
        h->out.len = h->out_off = 0;
    } else if (h->out_off >= OUT_HIGH && !h->tls_retry) {
        memmove(h->out.data, h->out.data + h->out_off, h->out.len - h->out_off);
        h->out.len -= h->out_off;
        h->out_off = 0;
    }
    return 0;
}

/* /h2/mute: neither read nor write (so no PING is answered) until the
 * peer closes or MUTE_MS pass. */
static void mute(h2conn *h)
{
    int64_t end = now_ms() + MUTE_MS;

    for (;;) {
        struct pollfd p = {h->c->fd, POLLRDHUP, 0};
        int64_t left = end - now_ms();
        int r;
        if (left <= 0)
            return;
        r = poll(&p, 1, (int)left);
        if ((r < 0 && errno != EINTR) || (r > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))))
            return;
    }
}

/* The poll timeout: until --h2-settings-delay ends or --idle-timeout
 * strikes; -1 for neither. */
static int next_timeout(h2conn *h, int64_t now)
{
    int64_t t = -1;

    if (h->send_after > now)
        t = h->send_after - now;
    if (h->cfg->idle_timeout_ms && !h->streams && !h->idle_goaway) {
        int64_t idle = h->last_active + h->cfg->idle_timeout_ms - now;
        if (idle < 0)
            idle = 0;
        if (t < 0 || idle < t)
            t = idle;
    }
    return t > 86400000 ? 86400000 : (int)t;
}

static void run(h2conn *h)
{
    h->last_active = now_ms();
    if (h->c->in_len && take_input(h, h->c->in, h->c->in_len) != 0)
        return;
    for (;;) {
        struct pollfd p[2] = {{h->c->fd, 0, 0}, {h->efd, POLLIN, 0}};
        int64_t now;
        int timeout;
        attend_dirty(h);
        if (produce(h) != 0 || flush(h) != 0)
            return;
        if (h->more && h->out.len == 0)
            continue;             /* the socket took it all: there is more to send now */
        /* Streams nghttp2 closed while producing go now, so the idle timer
         * sees them gone (a head a worker just decoded also kicked efd, so
         * the poll below returns at once to send it). */
        attend_dirty(h);
        if (h->mute_pending && h->out.len == 0) {
            mute(h);
            return;
        }
        if (!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session) &&
            h->out.len == 0)
            return;
        now = now_ms();
        timeout = h->c->ssl && mock_tls_pending(h->c->ssl) ? 0 : next_timeout(h, now);
        if (nghttp2_session_want_read(h->session) && !h->mute_pending)
            p[0].events |= POLLIN;
        if (h->out.len)
            p[0].events |= POLLOUT;
        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            return;
        if (p[1].revents & POLLIN) {
            uint64_t v;
            if (read(h->efd, &v, sizeof v) < 0 && errno != EAGAIN)
                return;
            pthread_mutex_lock(&h->lock);
            h->kicked = 0;
            pthread_mutex_unlock(&h->lock);
        }
        if (((p[0].revents & (POLLIN | POLLHUP | POLLERR)) || timeout == 0) && read_input(h) != 0)
            return;
        if (h->cfg->idle_timeout_ms && !h->streams && !h->idle_goaway &&
            now_ms() - h->last_active >= h->cfg->idle_timeout_ms) {
            h->idle_goaway = 1;
            nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->session),
                                  NGHTTP2_NO_ERROR, NULL, 0);
        }
    }
}

/* Closes the socket first (the peer learns at once), then waits for the
 * workers: a handler asleep in /delay keeps its thread, not the socket. */
static void teardown(h2conn *h)
{
    h2stream *s;

    mock_conn_close(h->c);
    pthread_mutex_lock(&h->lock);
    h->ending = 1;
    pthread_cond_broadcast(&h->work);
    for (s = h->streams; s; s = s->next)
        pthread_cond_broadcast(&s->wake);
    while (h->nworkers)
        pthread_cond_wait(&h->workers_gone, &h->lock);
    pthread_mutex_unlock(&h->lock);
    while (h->streams)
        stream_free(h, h->streams);
    nghttp2_session_del(h->session);
    close(h->efd);
    mock_buf_free(&h->out);
    mock_buf_free(&h->post);
    mock_buf_free(&h->raw);
    pthread_cond_destroy(&h->work);
    pthread_cond_destroy(&h->workers_gone);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void mock_h2_serve(mock_conn *c)
{
    h2conn *h = calloc(1, sizeof *h);
    int fl = fcntl(c->fd, F_GETFL);

    atomic_fetch_add(&mock_state.h2_connections, 1);
    if (!h || fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
        (h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        mock_log(c->cfg, "cannot set up an HTTP/2 connection: %s", strerror(errno));
        if (h && h->efd > 0)
            close(h->efd);
        free(h);
        return;
    }
    h->c = c;
    h->cfg = c->cfg;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->work, NULL);
    pthread_cond_init(&h->workers_gone, NULL);
    if (session_new(h) == 0)
        run(h);
    else
        mock_log(c->cfg, "cannot set up an HTTP/2 session");
    teardown(h);
}

/* --- /h2/NAME ---------------------------------------------------------------- */

/* BIG_FIELDS fields x-big-1.. of BIG_FIELD_LEN letters each. */
static void big_header(mock_conn *c)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz";
    mock_buf extra = MOCK_BUF_INIT;
    char body[64];
    int i, n;
    size_t k;

    for (i = 1; i <= BIG_FIELDS; i++) {
        mock_buf_printf(&extra, "X-Big-%d: ", i);
        for (k = 0; k < BIG_FIELD_LEN; k += 26)
            mock_buf_add(&extra, alphabet, BIG_FIELD_LEN - k < 26 ? BIG_FIELD_LEN - k : 26);
        mock_buf_puts(&extra, "\r\n");
    }
    n = snprintf(body, sizeof body, "{\"fields\":%d,\"field_bytes\":%d}", BIG_FIELDS, BIG_FIELD_LEN);
    if (extra.failed)
        mock_respond(c, 500, "text/plain", NULL, "out of memory\n", 14);
    else
        mock_respond(c, 200, "application/json", extra.data, body, (size_t)n);
    mock_buf_free(&extra);
}

static int named(const char *arg, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(arg, name, len) == 0;
}

void mock_h_h2(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    static const char not_found[] = "{\"error\":\"not found\",\"detail\":\"no such /h2/ path\"}";
    static const char h1[] = "{\"error\":\"not found\",\"detail\":\"HTTP/2 only\"}";
    h2stream *s = c->sink;

    if (named(arg, len, "bigheader")) {
        big_header(c);
    } else if (!named(arg, len, "mute") && !named(arg, len, "data-after-close") &&
               !named(arg, len, "bad-frame") && !named(arg, len, "goaway")) {
        mock_respond(c, 404, "application/json", NULL, not_found, sizeof not_found - 1);
    } else if (!s) {
        mock_respond(c, 404, "application/json", NULL, h1, sizeof h1 - 1);
    } else if (named(arg, len, "bad-frame")) {
        pthread_mutex_lock(&s->h->lock);
        s->bad_frame = 1;
        pthread_mutex_unlock(&s->h->lock);
    } else {
        int mute_ = named(arg, len, "mute");
        set_after(s, mute_ ? AFTER_MUTE : named(arg, len, "goaway") ? AFTER_GOAWAY : AFTER_DATA);
        mock_respond(c, 200, "text/plain", NULL, mute_ ? "muted" : arg, mute_ ? 5 : len);
    }
}
