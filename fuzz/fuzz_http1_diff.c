/* libFuzzer target: our response reader against libhttp-parser 2.9.
 *
 * Input: byte 0 = flags (bit 0 the request was HEAD), then the bytes the
 * server sends, followed by EOF.  When both parsers accept the first final
 * response, status, headers, body and keep-alive must agree; otherwise
 * the process aborts.  Inputs only one side accepts are expected: see
 * fuzz/README for each deliberate difference. */
#include <ctype.h>
#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "clock.h"
#include "http1.h"

#define MAX_FIELDS 256

typedef struct ref_msg {
    int head_request;
    int status;
    int keep_alive;
    int complete;
    int in_trailers;    /* header callbacks after headers_complete are trailers */
    int odd_trailer;    /* a trailer libhttp-parser reads as framing (README) */
    int interim;        /* a 1xx response came first */
    int error;          /* its http_errno */
    int last_was_value;
    size_t nfields;
    sl_buf names[MAX_FIELDS], values[MAX_FIELDS];
    sl_buf body;
} ref_msg;

/* 1 if name[0..len) is a framing header name, or (proper = 1) begins
 * with one and goes on: libhttp-parser 2.9 matches these by prefix. */
static int framing_prefix(const char *name, size_t len, int proper)
{
    static const char *const names[] = {"transfer-encoding", "content-length", "connection"};
    size_t i;

    for (i = 0; i < 3; i++) {
        size_t n = strlen(names[i]);
        if (len >= n + (size_t)proper && strncasecmp(name, names[i], n) == 0)
            return 1;
    }
    return 0;
}

static void ref_reset(ref_msg *m)
{
    size_t i;

    for (i = 0; i < MAX_FIELDS; i++) {
        sl_buf_free(&m->names[i]);
        sl_buf_free(&m->values[i]);
    }
    sl_buf_free(&m->body);
    m->status = m->keep_alive = m->complete = m->in_trailers = m->last_was_value = 0;
    m->odd_trailer = 0;
    m->nfields = 0;
}

static int on_begin(http_parser *p)
{
    ref_reset(p->data);
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    ref_msg *m = p->data;

    if (m->in_trailers) {
        /* It applies Transfer-Encoding, Content-Length and Connection
         * (and any name they begin) from trailers to keep-alive; they are
         * not framing there. */
        if (framing_prefix(at, len, 0))
            m->odd_trailer = 1;
        return 0;
    }
    if (m->last_was_value || m->nfields == 0) {
        if (m->nfields == MAX_FIELDS)
            return 1;
        m->nfields++;
    }
    m->last_was_value = 0;
    sl_buf_append(&m->names[m->nfields - 1], at, len);
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    ref_msg *m = p->data;

    if (m->in_trailers || m->nfields == 0)
        return 0;
    m->last_was_value = 1;
    sl_buf_append(&m->values[m->nfields - 1], at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    ref_msg *m = p->data;

    m->in_trailers = 1;
    m->status = p->status_code;
    if (m->status < 200)
        m->interim = 1;
    return m->head_request ? 1 : 0;     /* 1 = no body follows */
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    sl_buf_append(&((ref_msg *)p->data)->body, at, len);
    return 0;
}

static int on_complete(http_parser *p)
{
    ref_msg *m = p->data;

    if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101)
        return 0;   /* interim: the next message is the one */
    m->keep_alive = http_should_keep_alive(p);
    m->complete = 1;
    return 1;       /* stop: what follows belongs to the next response */
}

static int ref_parse(const uint8_t *data, size_t len, ref_msg *m)
{
    http_parser_settings s;
    http_parser p;

    http_parser_settings_init(&s);
    s.on_message_begin = on_begin;
    s.on_header_field = on_field;
    s.on_header_value = on_value;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_complete;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = m;
    http_parser_execute(&p, &s, (const char *)data, len);
    if (!m->complete && HTTP_PARSER_ERRNO(&p) == HPE_OK)
        http_parser_execute(&p, &s, NULL, 0);  /* EOF */
    m->error = HTTP_PARSER_ERRNO(&p);
    if (!m->complete && p.status_code >= 100 && p.status_code < 200)
        m->interim = 1;     /* it stopped inside a 1xx response */
    return m->complete;
}

typedef struct feed {
    const uint8_t *data;
    size_t len, pos;
} feed;

static ssize_t feed_read(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err)
{
    feed *f = ctx;
    size_t n = f->len - f->pos < cap ? f->len - f->pos : cap;

    (void)deadline;
    (void)err;
    memcpy(buf, f->data + f->pos, n);
    f->pos += n;
    return (ssize_t)n;
}

static void disagree(const char *what)
{
    fprintf(stderr, "fuzz_http1_diff: parsers disagree on %s\n", what);
    abort();
}

/* Differences in libhttp-parser that fuzz/README lists: it applies
 * Transfer-Encoding and Content-Length to 101 responses (and
 * Transfer-Encoding to 204 and 304), lets Transfer-Encoding
 * in HTTP/1.0 keep the connection, and matches framing header names by
 * prefix. */
typedef struct quirks {
    int prefix_name;    /* "Transfer-Encodingx" and the like */
    int odd_connection;
    int te;
    int cl;
    int no_body_status;
    int http10;
} quirks;

static void compare(const sl_http_resp *r, const ref_msg *m, const quirks *q)
{
    /* After 101 the connection speaks another protocol: never reusable. */
    int framing_differs = (q->te && (q->no_body_status || q->http10)) || r->status == 101 ||
                          q->odd_connection;

    size_t i;

    if (r->status != m->status)
        disagree("the status");
    if (r->nheaders != m->nfields)
        disagree("the header count");
    for (i = 0; i < r->nheaders; i++) {
        const sl_buf *n = &m->names[i], *v = &m->values[i];
        size_t vl = v->len;
        /* libhttp-parser keeps trailing whitespace of a value; RFC 9110
         * says it is not part of it. */
        while (vl && (v->data[vl - 1] == ' ' || v->data[vl - 1] == '\t'))
            vl--;
        if (n->len != strlen(r->headers[i].name) || memcmp(n->data, r->headers[i].name, n->len))
            disagree("a header name");
        if (vl != strlen(r->headers[i].value) || (vl && memcmp(v->data, r->headers[i].value, vl)))
            disagree("a header value");
    }
    if (q->no_body_status && r->body_len)
        disagree("a body where none can be");
    if (((q->te || q->cl) && q->no_body_status) || q->prefix_name)
        return;
    if (r->body_len != m->body.len || (r->body_len && memcmp(r->body, m->body.data, r->body_len)))
        disagree("the body");
    /* Closing where the reference would reuse is always safe (and is what
     * we do for any list element "close", whatever else the list holds);
     * reusing where it would close is the finding. */
    if (r->keep_alive && !m->keep_alive && !framing_differs && !m->odd_trailer)
        disagree("keep-alive");
}

static int has_header(const sl_http_resp *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return 1;
    return 0;
}

/* A Connection list with an empty element or a tab: libhttp-parser misses
 * "close" in ",close", "a,,close", "close\t" and "x,\tclose".  Looks at
 * its raw values, which keep the whitespace ours trims. */
static int odd_connection_list(const ref_msg *m)
{
    size_t i;

    for (i = 0; i < m->nfields; i++) {
        const sl_buf *n = &m->names[i], *v = &m->values[i];
        const char *p;
        if (n->len != 10 || strncasecmp(n->data, "connection", 10) != 0 || !v->data)
            continue;
        if (memchr(v->data, '\t', v->len) || v->data[strspn(v->data, " ")] == ',')
            return 1;
        for (p = strchr(v->data, ','); p; p = strchr(p + 1, ','))
            if (p[1 + strspn(p + 1, " ")] == ',')
                return 1;
    }
    return 0;
}

static int has_prefixed_name(const sl_http_resp *r)
{
    size_t i;

    for (i = 0; i < r->nheaders; i++)
        if (framing_prefix(r->headers[i].name, strlen(r->headers[i].name), 1))
            return 1;
    return 0;
}

/* Inputs we accept and libhttp-parser refuses, listed in fuzz/README:
 * a Content-Length it refuses (repeated or listed identical values, HTAB
 * around the value); a 101, 204 or 304 response (or one to HEAD) whose
 * framing headers it applies anyway; framing headers in chunked trailers,
 * which it applies too; framing headers in a 1xx response, where it reads
 * a body; whitespace between a chunk size and ';' (BWS, RFC 9112 section
 * 7.1.1). */
static int known_lenient(const sl_http_resp *r, int head, const ref_msg *m, const uint8_t *d,
                         size_t n)
{
    size_t i, j;

    if (m->error == HPE_INVALID_CHUNK_SIZE)
        for (i = 1; i < n; i++)
            if (isxdigit(d[i - 1]) && (d[i] == ' ' || d[i] == '\t')) {
                for (j = i; j < n && (d[j] == ' ' || d[j] == '\t'); j++)
                    ;
                if (j < n && d[j] == ';')
                    return 1;
            }
    if (head || r->status == 101 || r->status == 204 || r->status == 304 || m->odd_trailer ||
        m->interim)
        return 1;
    return (m->error == HPE_INVALID_CONTENT_LENGTH || m->error == HPE_UNEXPECTED_CONTENT_LENGTH) &&
           has_header(r, "content-length");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ref_msg m;
    feed f;
    sl_http_io io = {feed_read, &f};
    sl_buf rbuf = SL_BUF_INIT;
    sl_http_resp r;
    int ours, theirs;

    if (size < 1)
        return 0;
    f = (feed){data + 1, size - 1, 0};
    ours = sl_http1_read_response(&io, &rbuf, data[0] & 1, NULL, SL_NO_DEADLINE, &r, NULL) == 0;
    ref_reset(&m);
    m.interim = 0;
    m.head_request = data[0] & 1;
    theirs = ref_parse(data + 1, size - 1, &m);
    if (ours && theirs) {
        quirks q = {has_prefixed_name(&r), odd_connection_list(&m),
                    has_header(&r, "transfer-encoding"), has_header(&r, "content-length"),
                    r.status == 101 || r.status == 204 || r.status == 304, r.minor_version == 0};
        compare(&r, &m, &q);
    }
    if (ours && !theirs && getenv("FUZZ_DIFF_REPORT_LENIENT") && !known_lenient(&r, data[0] & 1, &m, data + 1, size - 1)) {
        fprintf(stderr, "only ours accepts this input\n");
        abort();
    }
    sl_http_resp_free(&r);
    sl_buf_free(&rbuf);
    ref_reset(&m);
    return 0;
}
