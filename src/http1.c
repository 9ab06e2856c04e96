/* HTTP/1.1 request writer and strict response parser (RFC 9110, 9112).
 *
 * Strictness is deliberate: CRLF line endings only, no obsolete line
 * folding, no whitespace before a header colon, no control bytes in field
 * values, one agreed Content-Length, never Content-Length together with
 * Transfer-Encoding, no Transfer-Encoding but one "chunked".  Each of
 * these is a request-smuggling or response-splitting vector when two
 * parties read a message differently (fuzz/README lists them all).
 *
 * The head is parsed one line at a time as line ends arrive, and the
 * parser never reads past the bytes it is given (SWAR loads only while 8
 * bytes remain), so a trickled or hostile head costs linear time.
 *
 * The hot path (a keep-alive GET with a Content-Length body) makes one
 * allocation per response: header array, body and head copy share it. */
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "ascii.h"
#include "decode.h"
#include "error.h"
#include "http1.h"

#define READ_CHUNK (16 * 1024)
#define STREAM_CHUNK (64 * 1024 - 1)  /* a sink's reads: with the NUL, 64 KiB */
#define DEFAULT_MAX_HEADER_BYTES (64 * 1024)
#define DEFAULT_MAX_HEADERS 100
#define DEFAULT_MAX_BODY_BYTES (64 * 1024 * 1024)
#define MAX_INTERIM 32              /* 1xx responses skipped before giving up */
#define MAX_CHUNK_LINE 4096         /* chunk size plus extensions */
#define MAX_TRAILER_BYTES (64 * 1024)
#define STACK_HDRS DEFAULT_MAX_HEADERS  /* above it the array is allocated */

/* --- byte classes ---------------------------------------------------------- */

enum {
    C_TOKEN = 1,    /* RFC 9110 tchar */
    C_VALUE = 2,    /* field-vchar, SP, HTAB: allowed in a field value */
    C_TARGET = 4    /* allowed in a request-target: no space or control */
};

static const unsigned char cls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6,
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
};

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Length of the prefix of p[0..n) allowed in a field value.  Eight bytes
 * at a time while none is below 0x20 or DEL (exact tests, no false
 * negatives); the table finishes the word that stopped it. */
static size_t value_span(const char *p, size_t n)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, p + i, 8);
        y = x ^ (0x7f * ONES);
        if (((x - 0x20 * ONES) & ~x & HIGHS) | ((y - ONES) & ~y & HIGHS))
            break;
    }
    while (i < n && (cls[(unsigned char)p[i]] & C_VALUE))
        i++;
    return i;
}

/* Length of the prefix of NUL-terminated s made of bytes in class `c`. */
static size_t class_span(const char *s, unsigned c)
{
    const unsigned char *p = (const unsigned char *)s;

    while (cls[*p] & c)
        p++;
    return (size_t)(p - (const unsigned char *)s);
}

/* Case-insensitive equality of p[0..n) and a lower-case literal. */
static int ieq(const char *p, size_t n, const char *lit, size_t lit_len)
{
    size_t i;

    if (n != lit_len)
        return 0;
    for (i = 0; i < n; i++)
        if (sl_ascii_lower((unsigned char)p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

#define IEQ(p, n, lit) ieq((p), (n), lit, sizeof lit - 1)

/* Case-insensitive equality of two NUL-terminated names. */
static int name_eq(const char *a, const char *b)
{
    while (*a && sl_ascii_lower((unsigned char)*a) == sl_ascii_lower((unsigned char)*b)) {
        a++;
        b++;
    }
    return *a == *b;
}

/* --- request writer ---------------------------------------------------------- */

enum { H_OTHER, H_HOST, H_UA, H_FRAMING };

static int header_kind(const char *name)
{
    switch (sl_ascii_lower((unsigned char)name[0])) {
    case 'h':
        return name_eq(name, "host") ? H_HOST : H_OTHER;
    case 'u':
        return name_eq(name, "user-agent") ? H_UA : H_OTHER;
    case 'c':
        return name_eq(name, "content-length") ? H_FRAMING : H_OTHER;
    case 't':
        return name_eq(name, "transfer-encoding") ? H_FRAMING : H_OTHER;
    default:
        return H_OTHER;
    }
}

static int in_list(const char *name, const sluice_header *h, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (h[i].name && name_eq(name, h[i].name))
            return 1;
    return 0;
}

/* The value the caller gave for Host or User-Agent (the request's own list
 * wins over the defaults, a later entry over an earlier), or `ours`. */
static const char *override(const sl_http_req *r, int kind, const char *ours)
{
    size_t i;

    for (i = r->nheaders2; i-- > 0;)
        if (r->headers2[i].name && header_kind(r->headers2[i].name) == kind)
            return r->headers2[i].value;
    for (i = r->nheaders1; i-- > 0;)
        if (r->headers1[i].name && header_kind(r->headers1[i].name) == kind)
            return r->headers1[i].value;
    return ours;
}

/* A field the writer would refuse: 0 or SLUICE_EINVAL naming it (never
 * quoting the value, which may be a credential). */
static int check_field(const char *name, const char *value, sluice_error *err)
{
    size_t nlen;

    if (!name || !value)
        return sl_err(err, SLUICE_EINVAL, "request header with a NULL name or value");
    nlen = class_span(name, C_TOKEN);
    if (nlen == 0 || name[nlen])
        return sl_err(err, SLUICE_EINVAL,
                      "request header name is not an HTTP token (byte 0x%02x at offset %zu)",
                      (unsigned char)name[nlen], nlen);
    if (value_span(value, strlen(value)) != strlen(value))
        return sl_err(err, SLUICE_EINVAL,
                      "value of request header %.64s contains CR, LF or a control byte", name);
    return 0;
}

/* Appends "name: value\r\n" after validating both. */
static int put_field(sl_buf *out, const char *name, const char *value, sluice_error *err)
{
    size_t nlen, vlen;
    int rc;
    char *d;

    if ((rc = check_field(name, value, err)))
        return rc;
    nlen = strlen(name);
    vlen = strlen(value);
    if (sl_buf_reserve(out, nlen + vlen + 4))
        return sl_err(err, SLUICE_ENOMEM, "out of memory writing a request");
    d = out->data + out->len;
    memcpy(d, name, nlen);
    d += nlen;
    *d++ = ':';
    *d++ = ' ';
    memcpy(d, value, vlen);
    d += vlen;
    *d++ = '\r';
    *d++ = '\n';
    out->len = (size_t)(d - out->data);
    return 0;
}

/* A caller header list; Host and User-Agent were taken already. */
static int put_list(sl_buf *out, const sluice_header *h, size_t n, const sluice_header *skip,
                    size_t nskip, sluice_error *err)
{
    size_t i;
    int rc;

    for (i = 0; i < n; i++) {
        const char *name = h[i].name;
        int kind = name ? header_kind(name) : H_OTHER;

        if (kind == H_FRAMING)
            return sl_err(err, SLUICE_EINVAL,
                          "request header %s is not accepted: the library frames the body", name);
        if (kind != H_OTHER || (name && in_list(name, skip, nskip)))
            continue;
        if ((rc = put_field(out, name, h[i].value, err)))
            return rc;
    }
    return 0;
}

static int check_method(const char *method, sluice_error *err)
{
    size_t mlen = class_span(method, C_TOKEN);

    if (mlen == 0 || method[mlen])
        return sl_err(err, SLUICE_EINVAL,
                      "request method is not an HTTP token (byte 0x%02x at offset %zu)",
                      (unsigned char)method[mlen], mlen);
    return 0;
}

static int put_request_line(sl_buf *out, const sl_http_req *r, sluice_error *err)
{
    size_t mlen, tlen, alen;
    char *d;
    int rc;

    if (!r->method || !r->target)
        return sl_err(err, SLUICE_EINVAL, "request without a method or target");
    if ((rc = check_method(r->method, err)))
        return rc;
    mlen = strlen(r->method);
    tlen = class_span(r->target, C_TARGET);
    if (tlen == 0 || r->target[tlen])
        return sl_err(err, SLUICE_EINVAL,
                      "request target is empty or contains a space or control byte");
    alen = r->absolute ? strlen(r->absolute) : 0;
    if (sl_buf_reserve(out, mlen + alen + tlen + 12))
        return sl_err(err, SLUICE_ENOMEM, "out of memory writing a request");
    d = out->data + out->len;
    memcpy(d, r->method, mlen);
    d += mlen;
    *d++ = ' ';
    if (alen)
        memcpy(d, r->absolute, alen);
    d += alen;
    memcpy(d, r->target, tlen);
    d += tlen;
    memcpy(d, " HTTP/1.1\r\n", 11);
    out->len = (size_t)(d + 11 - out->data);
    return 0;
}

static int put_content_length(sl_buf *out, size_t n, sluice_error *err)
{
    char tmp[24];
    size_t i = sizeof tmp;

    do {
        tmp[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    if (sl_buf_append(out, "Content-Length: ", 16) ||
        sl_buf_append(out, tmp + i, sizeof tmp - i) || sl_buf_append(out, "\r\n", 2))
        return sl_err(err, SLUICE_ENOMEM, "out of memory writing a request");
    return 0;
}

/* The library's Accept-Encoding goes out unless the caller wrote one: a
 * caller who asks for codings itself gets the body as sent. */
static int want_accept_encoding(const sl_http_req *r)
{
    return r->accept_encoding && !in_list("accept-encoding", r->headers1, r->nheaders1) &&
           !in_list("accept-encoding", r->headers2, r->nheaders2);
}

static int write_head(sl_buf *out, const sl_http_req *r, sluice_error *err)
{
    const char *host = override(r, H_HOST, r->host);
    const char *ua = override(r, H_UA, r->user_agent);
    int rc;

    if (!host)
        return sl_err(err, SLUICE_EINVAL, "request without a Host");
    if ((rc = put_request_line(out, r, err)) || (rc = put_field(out, "Host", host, err)) ||
        (ua && (rc = put_field(out, "User-Agent", ua, err))) ||
        (r->proxy_auth && (rc = put_field(out, "Proxy-Authorization", r->proxy_auth, err))) ||
        (rc = put_list(out, r->headers1, r->nheaders1, r->headers2, r->nheaders2, err)) ||
        (rc = put_list(out, r->headers2, r->nheaders2, NULL, 0, err)) ||
        (want_accept_encoding(r) &&
         (rc = put_field(out, "Accept-Encoding", r->accept_encoding, err))) ||
        (r->chunked && (rc = put_field(out, "Transfer-Encoding", "chunked", err))) ||
        (!r->chunked && r->send_length && (rc = put_content_length(out, r->body_len, err))))
        return rc;
    if (sl_buf_append(out, "\r\n", 2))
        return sl_err(err, SLUICE_ENOMEM, "out of memory writing a request");
    return 0;
}

/* The caller list's refusals, as put_list makes them. */
static int check_list(const sluice_header *h, size_t n, sluice_error *err)
{
    size_t i;
    int rc;

    if (n && !h)
        return sl_err(err, SLUICE_EINVAL, "request header count without headers");
    for (i = 0; i < n; i++) {
        if (h[i].name && header_kind(h[i].name) == H_FRAMING)
            return sl_err(err, SLUICE_EINVAL,
                          "request header %s is not accepted: the library frames the body",
                          h[i].name);
        if ((rc = check_field(h[i].name, h[i].value, err)))
            return rc;
    }
    return 0;
}

int sl_http1_check_request(const char *method, const sluice_header *h, size_t n,
                           sluice_error *err)
{
    int rc;

    if (method && (rc = check_method(method, err)))
        return rc;
    return check_list(h, n, err);
}

int sl_http1_write_head(sl_buf *out, const sl_http_req *r, sluice_error *err)
{
    size_t start;
    int failed, rc;

    if (!out || !r)
        return sl_err(err, SLUICE_EINVAL, "no request or output buffer");
    if ((r->nheaders1 && !r->headers1) || (r->nheaders2 && !r->headers2))
        return sl_err(err, SLUICE_EINVAL, "request header count without headers");
    start = out->len;
    failed = out->failed;
    rc = write_head(out, r, err);
    if (rc) {
        out->len = start;
        out->failed = failed;
        if (out->data)
            out->data[start] = '\0';
    }
    return rc;
}

/* --- response head parser ------------------------------------------------------ */

static int proto_err_byte(sluice_error *err, const char *where, unsigned char c)
{
    if (c == '\n')
        return sl_err(err, SLUICE_EPROTO, "bare LF in %s (CRLF line endings are required)", where);
    if (c == '\r')
        return sl_err(err, SLUICE_EPROTO, "CR not followed by LF in %s", where);
    return sl_err(err, SLUICE_EPROTO, "invalid byte 0x%02x in %s", c, where);
}

/* Checks the bytes present of "HTTP/1.x SSS".  1 = complete, 0 = partial. */
static int status_prefix(const char *p, size_t avail, sl_http_head *h, sluice_error *err)
{
    static const char want[] = "HTTP/1.";
    size_t i, n = avail < 7 ? avail : 7;
    int status = 0;

    if (memcmp(p, want, n) != 0)
        return memcmp(p, want, n < 5 ? n : 5) == 0
                   ? sl_err(err, SLUICE_EPROTO, "unsupported HTTP version in the status line")
                   : sl_err(err, SLUICE_EPROTO, "response does not start with an HTTP/1.x status line");
    if (avail > 7 && p[7] != '0' && p[7] != '1')
        return sl_err(err, SLUICE_EPROTO, "unsupported HTTP version in the status line");
    if (avail > 8 && p[8] != ' ')
        return sl_err(err, SLUICE_EPROTO, "malformed status line: no space after the version");
    for (i = 9; i < 12 && i < avail; i++) {
        if (p[i] < '0' || p[i] > '9')
            return sl_err(err, SLUICE_EPROTO, "status code is not three digits");
        status = status * 10 + (p[i] - '0');
    }
    if (avail < 12)
        return 0;
    if (status < 100 || status > 599)
        return sl_err(err, SLUICE_EPROTO, "status code %d is out of range 100..599", status);
    h->minor_version = p[7] - '0';
    h->status = status;
    return 1;
}

/* "HTTP/1.x SSS[ reason]\r\n".  Returns 1 with *pp past the line, 0 when
 * partial, or SLUICE_EPROTO. */
static int parse_status_line(const char **pp, const char *end, sl_http_head *h, sluice_error *err)
{
    const char *p = *pp;
    int rc = status_prefix(p, (size_t)(end - p), h, err);

    if (rc <= 0)
        return rc;
    p += 12;
    if (p < end && *p == ' ') {
        p++;
        p += value_span(p, (size_t)(end - p));
    }
    if (p == end || (*p == '\r' && p + 1 == end))
        return 0;
    if (*p != '\r' || p[1] != '\n')
        return proto_err_byte(err, "the status line", (unsigned char)*p);
    *pp = p + 2;
    return 1;
}

/* One "name: value\r\n" line.  Returns 1 with *pp past it, 0 when partial,
 * or SLUICE_EPROTO. */
static int parse_field(const char **pp, const char *end, sl_http_hdr *f, sluice_error *err)
{
    const char *p = *pp, *name = p, *value, *vend;

    while (p < end && (cls[(unsigned char)*p] & C_TOKEN))
        p++;
    if (p == end)
        return 0;
    if (*p != ':') {
        if (*p == ' ' || *p == '\t')
            return sl_err(err, SLUICE_EPROTO, "whitespace before the colon in header %.*s",
                          (int)(p - name > 64 ? 64 : p - name), name);
        return proto_err_byte(err, "a header name", (unsigned char)*p);
    }
    if (p == name)
        return sl_err(err, SLUICE_EPROTO, "empty header name");
    f->name = name;
    f->name_len = (size_t)(p - name);
    for (p++; p < end && (*p == ' ' || *p == '\t'); p++)
        ;
    value = p;
    p += value_span(p, (size_t)(end - p));
    if (p == end || (*p == '\r' && p + 1 == end))
        return 0;
    if (*p != '\r' || p[1] != '\n')
        return sl_err(err, SLUICE_EPROTO, "%s in the value of header %.*s",
                      *p == '\n' ? "bare LF (CRLF line endings are required)"
                      : *p == '\r' ? "CR not followed by LF"
                      : *p == '\0' ? "NUL byte" : "control byte",
                      (int)(f->name_len > 64 ? 64 : f->name_len), name);
    for (vend = p; vend > value && (vend[-1] == ' ' || vend[-1] == '\t'); vend--)
        ;
    f->value = value;
    f->value_len = (size_t)(vend - value);
    *pp = p + 2;
    return 1;
}

/* Where an interrupted parse resumes: the first line not yet parsed (0 =
 * the status line) and the headers counted before it. */
typedef struct parse_pos {
    size_t off;
    size_t count;
} parse_pos;

/* Parses whole lines from pos->off on.  Returns the head length, 0 when
 * partial (pos then marks the first incomplete line, after which no line
 * ends), or SLUICE_EPROTO.  Entries before pos->count were filled by an
 * earlier call, possibly in a buffer since moved. */
static ssize_t parse_from(const char *buf, size_t len, parse_pos *pos, sl_http_head *h,
                          size_t cap, sluice_error *err)
{
    const char *p = buf + pos->off, *end = buf + len;
    int rc;

    if (pos->off == 0) {
        if ((rc = parse_status_line(&p, end, h, err)) <= 0)
            return rc;
        pos->off = (size_t)(p - buf);
    }
    for (;;) {
        sl_http_hdr f;
        if (p == end)
            return 0;
        if (*p == '\r') {
            if (p + 1 == end)
                return 0;
            if (p[1] != '\n')
                return proto_err_byte(err, "the header block", '\r');
            return p + 2 - buf;
        }
        if (*p == ' ' || *p == '\t')
            return sl_err(err, SLUICE_EPROTO, "obsolete line folding in the response head");
        if ((rc = parse_field(&p, end, &f, err)) <= 0)
            return rc;
        if (pos->count == cap)
            return sl_err(err, SLUICE_EPROTO, "too many headers (limit %zu)", cap);
        h->hdrs[pos->count++] = f;
        pos->off = (size_t)(p - buf);
    }
}

ssize_t sl_http1_parse_head(const char *buf, size_t len, sl_http_head *h, sluice_error *err)
{
    parse_pos pos = {0, 0};
    ssize_t rc;

    if (!buf || !h || (h->nhdrs && !h->hdrs))
        return sl_err(err, SLUICE_EINVAL, "no buffer or head to parse into");
    rc = parse_from(buf, len, &pos, h, h->nhdrs, err);
    if (rc > 0)
        h->nhdrs = pos.count;
    return rc;
}

/* --- chunked decoder ----------------------------------------------------------- */

enum {
    CH_SIZE,        /* hex digits; trailer_bytes counts the size line so far */
    CH_SIZE_WS,     /* BWS after the size */
    CH_EXT,         /* chunk extensions, ignored */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,     /* start of a trailer line, or the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_FINAL_LF,
    CH_DONE
};

static int chunk_size_digit(sl_chunked *c, int v, sluice_error *err)
{
    if (c->trailer_bytes == 16)
        return sl_err(err, SLUICE_EPROTO, "chunk size has more than 16 hex digits");
    if (c->remaining >> 59)
        return sl_err(err, SLUICE_EPROTO, "chunk size is past 2^63");
    c->remaining = c->remaining << 4 | (uint64_t)v;
    c->trailer_bytes++;
    return 0;
}

/* After the digits: CR, or BWS then ';' and extensions.  Whitespace not
 * followed by ';' is refused (RFC 9112 section 7.1.1 allows BWS only
 * before an extension), since parsers disagree on "5 \r\n". */
static int chunk_size_tail(sl_chunked *c, unsigned char ch, sluice_error *err)
{
    if (c->state == CH_SIZE && c->trailer_bytes == 0)
        return sl_err(err, SLUICE_EPROTO, "chunk size is not a hex number");
    if (++c->trailer_bytes > MAX_CHUNK_LINE)
        return sl_err(err, SLUICE_EPROTO, "chunk size line longer than %d bytes", MAX_CHUNK_LINE);
    if (ch == ' ' || ch == '\t')
        c->state = CH_SIZE_WS;
    else if (ch == ';')
        c->state = CH_EXT;
    else if (ch == '\r' && c->state == CH_SIZE)
        c->state = CH_SIZE_LF;
    else if (ch == '\r')
        return sl_err(err, SLUICE_EPROTO, "whitespace after a chunk size without an extension");
    else
        return proto_err_byte(err, "a chunk size line", ch);
    return 0;
}

static int chunk_line_byte(sl_chunked *c, unsigned char ch, sluice_error *err)
{
    int v;

    switch (c->state) {
    case CH_SIZE:
        v = sl_ascii_hexval(ch);
        if (v >= 0)
            return chunk_size_digit(c, v, err);
        return chunk_size_tail(c, ch, err);
    case CH_SIZE_WS:
        return chunk_size_tail(c, ch, err);
    case CH_EXT:
        if (ch == '\r') {
            c->state = CH_SIZE_LF;
            return 0;
        }
        if (!(cls[ch] & C_VALUE))
            return proto_err_byte(err, "a chunk extension", ch);
        if (++c->trailer_bytes > MAX_CHUNK_LINE)
            return sl_err(err, SLUICE_EPROTO, "chunk size line longer than %d bytes",
                          MAX_CHUNK_LINE);
        return 0;
    default: /* CH_SIZE_LF */
        if (ch != '\n')
            return proto_err_byte(err, "a chunk size line", ch);
        c->trailer_bytes = 0;
        c->state = c->remaining ? CH_DATA : CH_TRAILER;
        return 0;
    }
}

/* Trailer fields are checked like header fields and then dropped. */
static int trailer_byte(sl_chunked *c, unsigned char ch, sluice_error *err)
{
    if (++c->trailer_bytes > MAX_TRAILER_BYTES)
        return sl_err(err, SLUICE_EPROTO, "chunked trailers larger than %d bytes",
                      MAX_TRAILER_BYTES);
    switch (c->state) {
    case CH_TRAILER:
        if (ch == '\r')
            c->state = CH_FINAL_LF;
        else if (cls[ch] & C_TOKEN)
            c->state = CH_TRAILER_NAME;
        else if (ch == ' ' || ch == '\t')
            return sl_err(err, SLUICE_EPROTO, "obsolete line folding in the chunked trailers");
        else
            return proto_err_byte(err, "a trailer name", ch);
        return 0;
    case CH_TRAILER_NAME:
        if (ch == ':')
            c->state = CH_TRAILER_VALUE;
        else if (ch == '\r' || ch == '\n')
            return sl_err(err, SLUICE_EPROTO, "trailer line without a colon");
        else if (!(cls[ch] & C_TOKEN))
            return proto_err_byte(err, "a trailer name", ch);
        return 0;
    case CH_TRAILER_VALUE:
        if (ch == '\r')
            c->state = CH_TRAILER_LF;
        else if (!(cls[ch] & C_VALUE))
            return proto_err_byte(err, "a trailer value", ch);
        return 0;
    default: /* CH_TRAILER_LF, CH_FINAL_LF */
        if (ch != '\n')
            return proto_err_byte(err, "the chunked trailers", ch);
        c->state = c->state == CH_FINAL_LF ? CH_DONE : CH_TRAILER;
        return 0;
    }
}

static int chunk_byte(sl_chunked *c, unsigned char ch, sluice_error *err)
{
    switch (c->state) {
    case CH_DATA_CR:
    case CH_DATA_LF:
        if (ch != (c->state == CH_DATA_CR ? '\r' : '\n'))
            return sl_err(err, SLUICE_EPROTO, "chunk data not followed by CRLF");
        c->state = c->state == CH_DATA_CR ? CH_DATA_LF : CH_SIZE;
        return 0;
    case CH_SIZE:
    case CH_SIZE_WS:
    case CH_EXT:
    case CH_SIZE_LF:
        return chunk_line_byte(c, ch, err);
    default:
        return trailer_byte(c, ch, err);
    }
}

int sl_chunked_decode(sl_chunked *c, const char *in, size_t len, sl_buf *out, size_t *consumed,
                      sluice_error *err)
{
    const char *p = in, *end = in + len;
    int rc = 0;

    if (!c || (!in && len) || !out || !consumed)
        return sl_err(err, SLUICE_EINVAL, "bad arguments to the chunked decoder");
    while (p < end && c->state != CH_DONE) {
        if (c->state == CH_DATA) {
            size_t n = (size_t)(end - p) < c->remaining ? (size_t)(end - p) : (size_t)c->remaining;
            if (sl_buf_append(out, p, n)) {
                rc = sl_err(err, SLUICE_ENOMEM, "out of memory decoding a chunked body");
                break;
            }
            p += n;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            continue;
        }
        if ((rc = chunk_byte(c, (unsigned char)*p, err)))
            break;
        p++;
    }
    *consumed = (size_t)(p - in);
    if (rc)
        return rc;
    return c->state == CH_DONE;
}

/* --- response reader ----------------------------------------------------------- */

/* The single allocation behind a response: header array, then the body
 * when its length was known, then the head copy the headers point into. */
typedef struct resp_mem {
    int body_allocated;     /* body is a separate allocation (chunked, until close) */
    sluice_header hdrs[];
} resp_mem;

enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };

typedef struct framing {
    int kind;
    uint64_t length;        /* BODY_LENGTH */
    int keep_alive;
} framing;

typedef struct reader {
    const sl_http_io *io;
    sl_buf *rbuf;
    int64_t deadline;
    size_t got;             /* rbuf's bytes at the start plus every byte read */
    sluice_error *err;
    sl_http_sink *sink;     /* NULL: the body is kept as sent */
} reader;

/* Reads into rbuf with at least `chunk` bytes of room.  Returns the count,
 * 0 at EOF, or a negative code. */
static ssize_t fill_n(reader *rd, size_t chunk)
{
    sl_buf *b = rd->rbuf;
    ssize_t n;
    size_t room;

    if (sl_buf_reserve(b, chunk))
        return sl_err(rd->err, SLUICE_ENOMEM, "out of memory reading a response");
    room = b->cap - b->len - 1;
    n = rd->io->read(rd->io->ctx, b->data + b->len, room, rd->deadline, rd->err);
    if (n > (ssize_t)room)
        return sl_err(rd->err, SLUICE_EIO, "connection read returned more than asked");
    if (n > 0) {
        b->len += (size_t)n;
        b->data[b->len] = '\0';
        rd->got += (size_t)n;
    }
    return n;
}

static ssize_t fill(reader *rd)
{
    return fill_n(rd, READ_CHUNK);
}

/* The head being read: how far the scan for line ends got, and where
 * the parse resumes. */
typedef struct head_scan {
    size_t scan;
    parse_pos pos;
} head_scan;

/* Parses each complete line once, as its line end arrives, so a bad line
 * is refused at once and a trickled head costs linear time.  Returns the
 * head length, 0 if incomplete, or SLUICE_EPROTO. */
static ssize_t find_head(reader *rd, head_scan *hs, sl_http_head *h, size_t cap)
{
    const char *d = rd->rbuf->data;
    size_t len = rd->rbuf->len, started = hs->pos.off;
    ssize_t rc;

    if (hs->scan >= len || !memchr(d + hs->scan, '\n', len - hs->scan)) {
        hs->scan = len;
        return 0;
    }
    hs->scan = len;     /* a partial parse leaves no line end after pos */
    rc = parse_from(d, len, &hs->pos, h, cap, rd->err);
    if (rc <= 0)
        return rc;
    h->nhdrs = hs->pos.count;
    /* Entries from earlier reads point into a buffer that may have moved. */
    if (started != 0) {
        h->nhdrs = cap;
        rc = sl_http1_parse_head(d, len, h, rd->err);
    }
    return rc;
}

/* The connection ended or the size limit was reached: a parse of what is
 * there names a malformed line first, whichever way the bytes were split. */
static int head_cut_short(reader *rd, head_scan *hs, sl_http_head *h, size_t cap)
{
    ssize_t rc = parse_from(rd->rbuf->data, rd->rbuf->len, &hs->pos, h, cap, rd->err);

    return rc < 0 ? (int)rc : 0;
}

static int read_head(reader *rd, const sl_http_limits *lim, sl_http_head *h, size_t cap,
                     size_t *hlen)
{
    head_scan hs = {0, {0, 0}};

    for (;;) {
        ssize_t rc = find_head(rd, &hs, h, cap);
        if (rc < 0)
            return (int)rc;
        if (rc > 0 && (size_t)rc <= lim->max_header_bytes) {
            *hlen = (size_t)rc;
            return 0;
        }
        if (rc > 0 || rd->rbuf->len >= lim->max_header_bytes) {
            if (rc == 0 && (rc = head_cut_short(rd, &hs, h, cap)))
                return (int)rc;
            return sl_err(rd->err, SLUICE_EPROTO, "response head larger than %zu bytes",
                          lim->max_header_bytes);
        }
        rc = fill(rd);
        if (rc < 0)
            return (int)rc;
        if (rc == 0 && (rc = head_cut_short(rd, &hs, h, cap)))
            return (int)rc;
        if (rc == 0)
            return rd->got ? sl_err(rd->err, SLUICE_EIO,
                                    "connection closed in the middle of the response head")
                           : sl_err(rd->err, SLUICE_EIO,
                                    "connection closed before the response head");
    }
}

/* A comma-separated list element by element, OWS trimmed; calls fn for
 * each one, empty ones included.  Returns fn's first non-zero result. */
static int each_element(const char *v, size_t n, int (*fn)(const char *, size_t, void *),
                        void *arg)
{
    const char *end = v + n;

    for (;;) {
        const char *comma = memchr(v, ',', (size_t)(end - v)), *e = comma ? comma : end;
        int rc;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((rc = fn(v, (size_t)(e - v), arg)))
            return rc;
        if (!comma)
            return 0;
        v = comma + 1;
    }
}

typedef struct head_facts {
    int have_length;
    uint64_t length;
    const char *length_text;    /* the first value as written */
    size_t length_text_len;
    int te;                 /* Transfer-Encoding present */
    int te_chunked;         /* it is "chunked" (nothing else is accepted) */
    int conn_close;
    int conn_keep_alive;
} head_facts;

enum {
    LIST_EMPTY = 1, LIST_NOT_NUMBER, LIST_TOO_LARGE, LIST_DIFFERS, LIST_NOT_CHUNKED, LIST_TWICE
};

/* One Content-Length value: digits only, and written exactly as any seen
 * before.  Repeated fields and lists ("5, 5") are accepted when every value
 * is the same (RFC 9110 section 8.6); "5, 05" is refused, since a peer
 * comparing text would see two lengths. */
static int length_element(const char *s, size_t n, void *arg)
{
    head_facts *f = arg;
    uint64_t v = 0;
    size_t i;

    if (n == 0)
        return LIST_EMPTY;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return LIST_NOT_NUMBER;
        if (v > (UINT64_C(1) << 59))
            return LIST_TOO_LARGE;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (f->have_length)
        return n == f->length_text_len && memcmp(s, f->length_text, n) == 0 ? 0 : LIST_DIFFERS;
    f->have_length = 1;
    f->length = v;
    f->length_text = s;
    f->length_text_len = n;
    return 0;
}

/* Transfer-Encoding must be exactly one "chunked".  We never send TE, so
 * a server may apply no other coding (RFC 9112 section 7.4), and a body
 * under a coding we cannot remove would reach the caller as wrong data.
 * Refusing every other list also ends the ways parsers disagree on where
 * such a body ends: "chunked,", "x<HTAB>;y, chunked", "gzip, chunked",
 * "chunked, gzip" (read to the close by some, chunked by others). */
static int te_element(const char *s, size_t n, void *arg)
{
    head_facts *f = arg;

    if (n == 0)
        return LIST_EMPTY;
    if (!IEQ(s, n, "chunked"))
        return LIST_NOT_CHUNKED;
    if (f->te_chunked)
        return LIST_TWICE;
    f->te_chunked = 1;
    return 0;
}

static int connection_element(const char *s, size_t n, void *arg)
{
    head_facts *f = arg;

    if (IEQ(s, n, "close"))
        f->conn_close = 1;
    else if (IEQ(s, n, "keep-alive"))
        f->conn_keep_alive = 1;
    return 0;
}

static int list_error(int rc, const char *name, sluice_error *err)
{
    static const char *const why[] = {"", "has an empty list element", "is not a number",
                                      "is too large", "has differing values",
                                      "names a coding other than chunked",
                                      "names chunked more than once"};

    return sl_err(err, SLUICE_EPROTO, "%s %s", name, why[rc]);
}

/* HTAB anywhere in a field's value or the whitespace around it.  The
 * entry points into the complete line: the colon is before the value and
 * CR after it. */
static int raw_value_has_tab(const sl_http_hdr *x)
{
    const char *p;

    for (p = x->value; p[-1] != ':'; p--)
        if (p[-1] == '\t')
            return 1;
    for (p = x->value + x->value_len; *p != '\r'; p++)
        if (*p == '\t')
            return 1;
    return memchr(x->value, '\t', x->value_len) != NULL;
}

static int gather_facts(const sl_http_head *h, head_facts *f, sluice_error *err)
{
    size_t i;

    for (i = 0; i < h->nhdrs; i++) {
        const sl_http_hdr *x = &h->hdrs[i];
        int rc;
        int frames = IEQ(x->name, x->name_len, "content-length") ||
                      IEQ(x->name, x->name_len, "transfer-encoding");
        /* RFC 9110 allows HTAB as whitespace, but some parsers do not
         * take "chunked<HTAB>" as chunked: a framing value with a tab is
         * refused rather than read one way of two. */
        if (frames && raw_value_has_tab(x))
            return sl_err(err, SLUICE_EPROTO, "%.*s has a tab in its value", (int)x->name_len,
                          x->name);
        if (IEQ(x->name, x->name_len, "content-length")) {
            if ((rc = each_element(x->value, x->value_len, length_element, f)))
                return list_error(rc, "Content-Length", err);
        } else if (IEQ(x->name, x->name_len, "transfer-encoding")) {
            f->te = 1;
            if ((rc = each_element(x->value, x->value_len, te_element, f)))
                return list_error(rc, "Transfer-Encoding", err);
        } else if (IEQ(x->name, x->name_len, "connection")) {
            each_element(x->value, x->value_len, connection_element, f);
        }
    }
    if (f->te && f->have_length)
        return sl_err(err, SLUICE_EPROTO, "response has both Content-Length and Transfer-Encoding");
    return 0;
}

/* RFC 9112 section 6.3, in order, and section 9.3 for persistence. */
static int decide_framing(const sl_http_head *h, int head_request, framing *fr, sluice_error *err)
{
    head_facts f = {0};

    if (gather_facts(h, &f, err))
        return SLUICE_EPROTO;
    fr->keep_alive = h->minor_version ? !f.conn_close : f.conn_keep_alive && !f.conn_close;
    if (h->status == 101) {
        fr->kind = BODY_NONE;
        fr->keep_alive = 0;     /* the connection now speaks another protocol */
    } else if (head_request || h->status < 200 || h->status == 204 || h->status == 304) {
        fr->kind = BODY_NONE;
    } else if (f.te) {
        fr->kind = BODY_CHUNKED;
        /* Transfer-Encoding in HTTP/1.0 is faulty framing (section 6.1). */
        if (h->minor_version == 0)
            fr->keep_alive = 0;
    } else if (f.have_length) {
        fr->kind = BODY_LENGTH;
        fr->length = f.length;
    } else {
        fr->kind = BODY_CLOSE;
        fr->keep_alive = 0;
    }
    return 0;
}

/* Allocates the response block and copies the head into it, with names
 * and values NUL-terminated in place. */
static int store_head(sl_http_resp *out, const char *head, size_t hlen, const sl_http_head *h,
                      size_t body_room)
{
    size_t arr = sizeof(resp_mem) + h->nhdrs * sizeof(sluice_header);
    resp_mem *m = sl_malloc(arr + body_room + hlen + 1);
    char *copy;
    size_t i;

    if (!m)
        return SLUICE_ENOMEM;
    m->body_allocated = 0;
    copy = (char *)m + arr + body_room;
    memcpy(copy, head, hlen);
    copy[hlen] = '\0';
    for (i = 0; i < h->nhdrs; i++) {
        size_t no = (size_t)(h->hdrs[i].name - head), vo = (size_t)(h->hdrs[i].value - head);
        copy[no + h->hdrs[i].name_len] = '\0';
        copy[vo + h->hdrs[i].value_len] = '\0';
        m->hdrs[i].name = copy + no;
        m->hdrs[i].value = copy + vo;
    }
    out->mem_ = m;
    out->headers = m->hdrs;
    out->nheaders = h->nhdrs;
    out->status = h->status;
    out->minor_version = h->minor_version;
    out->body = (char *)m + arr;
    out->body[0] = '\0';
    return 0;
}

/* Content-Length body: what rbuf holds, then straight into the body. */
static int read_length_body(reader *rd, sl_http_resp *out, size_t hlen, size_t len)
{
    sl_buf *b = rd->rbuf;
    size_t have = b->len - hlen < len ? b->len - hlen : len;

    memcpy(out->body, b->data + hlen, have);
    sl_buf_consume(b, hlen + have);
    while (have < len) {
        ssize_t n = rd->io->read(rd->io->ctx, out->body + have, len - have, rd->deadline, rd->err);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return sl_err(rd->err, SLUICE_EIO, "connection closed after %zu of %zu body bytes",
                          have, len);
        if ((size_t)n > len - have)
            return sl_err(rd->err, SLUICE_EIO, "connection read returned more than asked");
        have += (size_t)n;
        rd->got += (size_t)n;
    }
    out->body[len] = '\0';
    out->body_len = len;
    return 0;
}

static int too_big(reader *rd, size_t max)
{
    return sl_err(rd->err, SLUICE_ETOOBIG, "response body larger than %zu bytes", max);
}

static int read_chunked_body(reader *rd, sl_buf *body, size_t max)
{
    sl_chunked c = {0};

    for (;;) {
        size_t used;
        ssize_t n;
        int rc = sl_chunked_decode(&c, rd->rbuf->data, rd->rbuf->len, body, &used, rd->err);
        if (rc < 0)
            return rc;
        sl_buf_consume(rd->rbuf, used);
        if (body->len > max || (c.state == CH_DATA && c.remaining > max - body->len))
            return too_big(rd, max);
        if (rc == 1)
            return 0;
        n = fill(rd);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return sl_err(rd->err, SLUICE_EIO,
                          "connection closed in the middle of a chunked body after %zu bytes",
                          body->len);
    }
}

static int read_close_body(reader *rd, sl_buf *body, size_t max)
{
    sl_buf *b = rd->rbuf;

    if (b->len > max)
        return too_big(rd, max);
    if (sl_buf_append(body, b->data, b->len))
        return sl_err(rd->err, SLUICE_ENOMEM, "out of memory reading a response body");
    sl_buf_consume(b, b->len);
    for (;;) {
        ssize_t n;
        if (sl_buf_reserve(body, READ_CHUNK))
            return sl_err(rd->err, SLUICE_ENOMEM, "out of memory reading a response body");
        n = rd->io->read(rd->io->ctx, body->data + body->len, body->cap - body->len - 1,
                         rd->deadline, rd->err);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return 0;
        if ((size_t)n > body->cap - body->len - 1)
            return sl_err(rd->err, SLUICE_EIO, "connection read returned more than asked");
        body->len += (size_t)n;
        body->data[body->len] = '\0';
        rd->got += (size_t)n;
        if (body->len > max)
            return too_big(rd, max);
    }
}

/* Chunked or until-close: the body grows in its own buffer. */
static int read_growing_body(reader *rd, sl_http_resp *out, const framing *fr, size_t hlen,
                             size_t max)
{
    sl_buf body = SL_BUF_INIT;
    int rc;

    sl_buf_consume(rd->rbuf, hlen);
    rc = fr->kind == BODY_CHUNKED ? read_chunked_body(rd, &body, max)
                                  : read_close_body(rd, &body, max);
    if (rc == 0) {
        /* The append makes an empty body a NUL-terminated allocation too. */
        char *p = sl_buf_append(&body, "", 0) ? NULL : sl_buf_detach(&body, &out->body_len);
        if (!p)
            return sl_err(rd->err, SLUICE_ENOMEM, "out of memory reading a response body");
        out->body = p;
        ((resp_mem *)out->mem_)->body_allocated = 1;
    }
    sl_buf_free(&body);
    return rc;
}

/* --- bodies through a sink ---------------------------------------------------- */

/* A body on its way to a sink: unframed bytes go through the decoder, and
 * what it gives goes to the callback, into `body`, or nowhere. */
typedef struct pump {
    reader *rd;
    sl_decoder dec;
    sl_buf body;            /* kept body when there is no callback */
    int discard;
    size_t max;
    size_t wire;            /* unframed (encoded) body bytes so far */
} pump;

static int pump_out(const void *p, size_t n, void *ud)
{
    pump *pm = ud;
    sl_http_sink *s = pm->rd->sink;
    int rc;

    if (pm->discard)
        return 0;
    if (!s->on_body)
        return sl_buf_append(&pm->body, p, n)
                   ? sl_err(pm->rd->err, SLUICE_ENOMEM, "out of memory reading a response body")
                   : 0;
    s->delivered += n;
    if ((rc = s->on_body(p, n, s->ud)) != 0)
        return sl_err(pm->rd->err, SLUICE_ECANCELED,
                      "the body callback stopped the transfer (returned %d) after %zu bytes", rc,
                      s->delivered);
    return 0;
}

static int pump_in(pump *pm, const char *p, size_t n)
{
    if (n > pm->max - pm->wire)
        return too_big(pm->rd, pm->max);
    pm->wire += n;
    return sl_decoder_feed(&pm->dec, p, n, pump_out, pm, pm->rd->err);
}

/* rbuf's bytes go to the sink as they arrive; they are never gathered. */
static int pump_length(pump *pm, uint64_t len)
{
    sl_buf *b = pm->rd->rbuf;

    for (;;) {
        size_t take = b->len < len ? b->len : (size_t)len;
        ssize_t n;
        int rc;
        if (take) {
            rc = pump_in(pm, b->data, take);
            sl_buf_consume(b, take);
            if (rc)
                return rc;
            len -= take;
        }
        if (len == 0)
            return 0;
        if ((n = fill_n(pm->rd, STREAM_CHUNK)) < 0)
            return (int)n;
        if (n == 0)
            return sl_err(pm->rd->err, SLUICE_EIO,
                          "connection closed with %llu body bytes still to come",
                          (unsigned long long)len);
    }
}

static int pump_chunked(pump *pm)
{
    sl_buf *b = pm->rd->rbuf, piece = SL_BUF_INIT;
    sl_chunked c = {0};
    int rc;

    for (;;) {
        size_t used;
        ssize_t n;
        rc = sl_chunked_decode(&c, b->data, b->len, &piece, &used, pm->rd->err);
        if (rc < 0)
            break;
        sl_buf_consume(b, used);
        if (piece.len) {
            int prc = pump_in(pm, piece.data, piece.len);
            sl_buf_reset(&piece);
            if (prc) {
                rc = prc;
                break;
            }
        }
        if (rc == 1) {
            rc = 0;
            break;
        }
        if ((n = fill_n(pm->rd, STREAM_CHUNK)) <= 0) {
            rc = n < 0 ? (int)n
                       : sl_err(pm->rd->err, SLUICE_EIO,
                                "connection closed in the middle of a chunked body after %zu bytes",
                                pm->wire);
            break;
        }
    }
    sl_buf_free(&piece);
    return rc;
}

static int pump_close(pump *pm)
{
    sl_buf *b = pm->rd->rbuf;

    for (;;) {
        ssize_t n;
        if (b->len) {
            int rc = pump_in(pm, b->data, b->len);
            sl_buf_consume(b, b->len);
            if (rc)
                return rc;
        }
        if ((n = fill_n(pm->rd, STREAM_CHUNK)) <= 0)
            return (int)n;
    }
}

/* The first value of field `name` in a stored response, and how many
 * fields have that name. */
static const char *stored_field(const sl_http_resp *r, const char *name, int *count)
{
    const char *v = NULL;
    size_t i;

    *count = 0;
    for (i = 0; i < r->nheaders; i++)
        if (name_eq(r->headers[i].name, name) && (*count)++ == 0)
            v = r->headers[i].value;
    return v;
}

/* After decoding, the fields that described the encoded form go: a
 * caller must not take Content-Length for the decoded size. */
static void drop_encoding_fields(sl_http_resp *r)
{
    size_t i, m = 0;

    for (i = 0; i < r->nheaders; i++)
        if (!name_eq(r->headers[i].name, "content-encoding") &&
            !name_eq(r->headers[i].name, "content-length"))
            r->headers[m++] = r->headers[i];
    r->nheaders = m;
    r->decoded = 1;
}

/* The coding the sink removes from this response: identity when it does
 * not decode, or the coding is not one it knows (the body is then handed
 * over as sent, its fields intact). */
static sl_coding sink_coding(const reader *rd, const sl_http_head *h)
{
    sl_coding coding = SL_CODING_IDENTITY;
    const sl_http_hdr *ce = NULL;
    char v[32];
    size_t i;

    if (!rd->sink || !rd->sink->decode)
        return coding;
    for (i = 0; i < h->nhdrs; i++) {
        if (!IEQ(h->hdrs[i].name, h->hdrs[i].name_len, "content-encoding"))
            continue;
        if (ce)
            return SL_CODING_IDENTITY;  /* two codings: not one sluice undoes */
        ce = &h->hdrs[i];
    }
    if (!ce || ce->value_len >= sizeof v)
        return coding;
    memcpy(v, ce->value, ce->value_len);
    v[ce->value_len] = '\0';
    if (sl_coding_parse(v, &coding) != 0)
        return SL_CODING_IDENTITY;
    return coding;
}

static int is_redirect_status(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static int pump_body(reader *rd, sl_http_resp *out, const framing *fr, sl_coding coding,
                     size_t max)
{
    pump pm = {rd, {0}, SL_BUF_INIT, 0, max, 0};
    int count, rc;

    pm.discard = rd->sink->skip_redirect_body && is_redirect_status(out->status) &&
                 stored_field(out, "location", &count);
    if ((rc = sl_decoder_init(&pm.dec, coding, max, rd->err)))
        return rc;
    /* A kept body starts with room for a typical ratio (JSON compresses
     * four to ten times), so it is not grown from nothing in doublings. */
    if (!rd->sink->on_body && !pm.discard) {
        uint64_t guess = fr->kind == BODY_LENGTH ? fr->length * 4 : 0;
        guess = guess < READ_CHUNK ? READ_CHUNK : guess > max ? max : guess;
        if (guess > DEFAULT_MAX_BODY_BYTES)
            guess = DEFAULT_MAX_BODY_BYTES;     /* past that, let it grow as it comes */
        if (sl_buf_reserve(&pm.body, (size_t)guess)) {
            sl_decoder_free(&pm.dec);
            return sl_err(rd->err, SLUICE_ENOMEM, "out of memory reading a response body");
        }
    }
    if (coding != SL_CODING_IDENTITY)
        drop_encoding_fields(out);
    rc = fr->kind == BODY_LENGTH ? pump_length(&pm, fr->length)
         : fr->kind == BODY_CHUNKED ? pump_chunked(&pm)
                                    : pump_close(&pm);
    if (rc == 0)
        rc = sl_decoder_finish(&pm.dec, rd->err);
    sl_decoder_free(&pm.dec);
    if (rc == 0 && !rd->sink->on_body && !pm.discard) {
        char *p = sl_buf_append(&pm.body, "", 0) ? NULL : sl_buf_detach(&pm.body, &out->body_len);
        if (!p)
            rc = sl_err(rd->err, SLUICE_ENOMEM, "out of memory reading a response body");
        else {
            out->body = p;
            ((resp_mem *)out->mem_)->body_allocated = 1;
        }
    }
    sl_buf_free(&pm.body);
    return rc;
}

static int read_body(reader *rd, sl_http_resp *out, const sl_http_head *h, const framing *fr,
                     size_t hlen, size_t max)
{
    sl_coding coding = sink_coding(rd, h);
    int pumped = rd->sink && (rd->sink->on_body || coding != SL_CODING_IDENTITY);
    size_t room = fr->kind == BODY_LENGTH && !pumped ? (size_t)fr->length + 1 : 1;

    if (fr->kind == BODY_LENGTH && fr->length > max)
        return too_big(rd, max);
    if (store_head(out, rd->rbuf->data, hlen, h, room))
        return sl_err(rd->err, SLUICE_ENOMEM, "out of memory storing a response");
    out->keep_alive = fr->keep_alive;
    if (fr->kind == BODY_NONE) {
        sl_buf_consume(rd->rbuf, hlen);
        return 0;
    }
    if (pumped) {
        sl_buf_consume(rd->rbuf, hlen);
        return pump_body(rd, out, fr, coding, max);
    }
    if (fr->kind == BODY_LENGTH)
        return read_length_body(rd, out, hlen, (size_t)fr->length);
    return read_growing_body(rd, out, fr, hlen, max);
}

static void limits_or_defaults(const sl_http_limits *in, sl_http_limits *l)
{
    l->max_header_bytes = in && in->max_header_bytes ? in->max_header_bytes
                                                     : DEFAULT_MAX_HEADER_BYTES;
    l->max_headers = in && in->max_headers ? in->max_headers : DEFAULT_MAX_HEADERS;
    l->max_body_bytes = in && in->max_body_bytes ? in->max_body_bytes : DEFAULT_MAX_BODY_BYTES;
}

/* Reads heads until a final one (1xx other than 101 are skipped). */
static int read_final_head(reader *rd, const sl_http_limits *lim, sl_http_head *h, size_t *hlen)
{
    size_t cap = h->nhdrs;
    int i, rc;

    for (i = 0;; i++) {
        h->nhdrs = cap;
        if ((rc = read_head(rd, lim, h, cap, hlen)))
            return rc;
        if (h->status >= 200 || h->status == 101)
            return 0;
        if (i == MAX_INTERIM)
            return sl_err(rd->err, SLUICE_EPROTO, "more than %d interim 1xx responses",
                          MAX_INTERIM);
        sl_buf_consume(rd->rbuf, *hlen);
    }
}

static int read_response(reader *rd, int head_request, const sl_http_limits *lim,
                         sl_http_hdr *hdrs, sl_http_resp *out)
{
    sl_http_head h = {0, 0, hdrs, lim->max_headers};
    framing fr = {0};
    size_t hlen = 0;
    int rc;

    if ((rc = read_final_head(rd, lim, &h, &hlen)))
        return rc;
    if (rd->err)
        rd->err->http_status = h.status;
    if ((rc = decide_framing(&h, head_request, &fr, rd->err)))
        return rc;
    return read_body(rd, out, &h, &fr, hlen, lim->max_body_bytes);
}

int sl_http1_read_response(const sl_http_io *io, sl_buf *rbuf, int head_request,
                           const sl_http_limits *lim, int64_t deadline, sl_http_resp *out,
                           sluice_error *err)
{
    return sl_http1_read_response_to(io, rbuf, head_request, lim, NULL, deadline, out, err);
}

int sl_http1_read_response_to(const sl_http_io *io, sl_buf *rbuf, int head_request,
                              const sl_http_limits *lim, sl_http_sink *sink, int64_t deadline,
                              sl_http_resp *out, sluice_error *err)
{
    sl_http_hdr stack_hdrs[STACK_HDRS], *hdrs = stack_hdrs;
    sl_http_limits l;
    reader rd = {io, rbuf, deadline, 0, err, sink};
    int rc;

    if (!out)
        return sl_err(err, SLUICE_EINVAL, "no response to read into");
    memset(out, 0, sizeof *out);
    if (!io || !io->read || !rbuf)
        return sl_err(err, SLUICE_EINVAL, "no connection or buffer to read a response from");
    limits_or_defaults(lim, &l);
    rd.got = rbuf->len;
    if (l.max_headers > STACK_HDRS) {
        hdrs = sl_calloc(l.max_headers, sizeof *hdrs);
        if (!hdrs)
            return sl_err(err, SLUICE_ENOMEM, "out of memory reading a response");
    }
    rc = read_response(&rd, head_request, &l, hdrs, out);
    if (hdrs != stack_hdrs)
        sl_free(hdrs);
    if (rc) {
        sl_http_resp_free(out);
        out->wire_bytes = rd.got;
        return rc;
    }
    out->wire_bytes = rd.got - rbuf->len;
    return 0;
}

void sl_http_resp_free(sl_http_resp *r)
{
    if (!r)
        return;
    if (r->mem_ && ((resp_mem *)r->mem_)->body_allocated)
        sl_free(r->body);
    sl_free(r->mem_);
    memset(r, 0, sizeof *r);
}
