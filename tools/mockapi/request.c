/* The mock API's request parser (contract in request.h).  Each call starts
 * over from the first byte: the head is at most 64 KiB and a chunked body
 * is scanned without copying until it is complete, so re-parsing a growing
 * buffer costs little and keeps the parser free of state. */
#include <string.h>
#include <strings.h>

#include "request.h"

#define MAX_CHUNK_LINE 4096u   /* chunk size plus extensions */

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Field values and chunk extensions: visible ASCII, obs-text, SP, HTAB. */
static int is_field_char(unsigned char c)
{
    return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int bad(mock_request *req, const char *why)
{
    req->error = why;
    return -1;
}

static int token_is(const char *s, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(s, word, len) == 0;
}

int mock_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0)
        return -1;
    for (i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Finds the line starting at *pos within buf[0..limit): on success stores
 * its start and length (without CRLF) and moves *pos past it.  Returns 1,
 * 0 when no LF has arrived yet, -1 on a bare LF. */
static int take_line(const char *buf, size_t limit, size_t *pos, const char **line, size_t *line_len)
{
    const char *start, *lf;

    if (*pos >= limit)
        return 0;
    start = buf + *pos;
    if (!(lf = memchr(start, '\n', limit - *pos)))
        return 0;
    if (lf == start || lf[-1] != '\r')
        return -1;
    *line = start;
    *line_len = (size_t)(lf - 1 - start);
    *pos = (size_t)(lf + 1 - buf);
    return 1;
}

/* Splits the target into path and query; accepts origin-form, absolute-
 * form (http/https) and "*" for OPTIONS. */
static int split_target(mock_request *req)
{
    const char *t = req->target, *end = t + req->target_len, *p = t, *q;

    if (t[0] == '*' && req->target_len == 1) {
        if (!token_is(req->method, req->method_len, "OPTIONS"))
            return bad(req, "'*' target outside OPTIONS");
        req->path = t;
        req->path_len = 1;
        return 0;
    }
    if (t[0] != '/') {
        size_t skip = 0;
        if (req->target_len > 7 && strncasecmp(t, "http://", 7) == 0)
            skip = 7;
        else if (req->target_len > 8 && strncasecmp(t, "https://", 8) == 0)
            skip = 8;
        else
            return bad(req, "unsupported request target form");
        p = t + skip;
        while (p < end && *p != '/' && *p != '?')
            p++;
        if (p == t + skip)
            return bad(req, "absolute-form target without authority");
    }
    q = memchr(p, '?', (size_t)(end - p));
    req->path = p < end && *p == '/' ? p : "/";
    req->path_len = req->path == p ? (size_t)((q ? q : end) - p) : 1;
    if (q) {
        req->query = q + 1;
        req->query_len = (size_t)(end - q - 1);
    }
    return 0;
}

static int parse_request_line(const char *line, size_t n, mock_request *req)
{
    size_t i = 0, t;

    while (i < n && is_tchar((unsigned char)line[i]))
        i++;
    if (i == 0 || i == n || line[i] != ' ')
        return bad(req, "malformed request line (method)");
    req->method = line;
    req->method_len = i;
    t = ++i;
    while (i < n && line[i] != ' ') {
        if ((unsigned char)line[i] <= 0x20 || (unsigned char)line[i] >= 0x7f)
            return bad(req, "invalid character in request target");
        i++;
    }
    if (i == t || i == n)
        return bad(req, "malformed request line (target)");
    req->target = line + t;
    req->target_len = i - t;
    i++;
    if (n - i != 8 || memcmp(line + i, "HTTP/", 5) != 0 || line[i + 6] != '.' ||
        hex_value((unsigned char)line[i + 5]) < 0 || hex_value((unsigned char)line[i + 7]) < 0 ||
        line[i + 5] > '9' || line[i + 7] > '9')
        return bad(req, "malformed request line (version)");
    if (line[i + 5] != '1' || line[i + 7] > '1')
        return bad(req, "unsupported HTTP version");
    req->minor = line[i + 7] - '0';
    return split_target(req);
}

/* One "name: value" line, for header and trailer fields alike. */
static int parse_field(const char *line, size_t n, mock_header *h, mock_request *req)
{
    size_t i = 0, name_len, v, e;

    if (n > 0 && is_ows(line[0]))
        return bad(req, "obsolete line folding");
    while (i < n && is_tchar((unsigned char)line[i]))
        i++;
    if (i < n && is_ows(line[i]))
        return bad(req, "whitespace between header name and colon");
    if (i == 0 || i == n || line[i] != ':')
        return bad(req, "malformed header field");
    name_len = i;
    for (v = i + 1; v < n && is_ows(line[v]); v++)
        ;
    for (e = n; e > v && is_ows(line[e - 1]); e--)
        ;
    for (i = v; i < e; i++)
        if (!is_field_char((unsigned char)line[i]))
            return bad(req, "invalid character in header value");
    h->name = line;
    h->name_len = name_len;
    h->value = line + v;
    h->value_len = e - v;
    return 0;
}

/* Calls fn on each comma-separated element of a list-valued field. */
static void each_list_item(const mock_header *h, void (*fn)(const char *, size_t, mock_request *),
                           mock_request *req)
{
    const char *p = h->value, *end = h->value + h->value_len;

    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma ? comma : end;
        const char *s = p;
        while (s < e && is_ows(*s))
            s++;
        while (e > s && is_ows(e[-1]))
            e--;
        fn(s, (size_t)(e - s), req);
        p = comma ? comma + 1 : end;
    }
}

static void connection_option(const char *s, size_t len, mock_request *req)
{
    if (token_is(s, len, "close"))
        req->keep_alive = -1;               /* close wins over keep-alive */
    else if (token_is(s, len, "keep-alive") && req->keep_alive == 0)
        req->keep_alive = 1;
}

static int content_length(const mock_header *h, int seen, mock_request *req)
{
    uint64_t v;

    if (mock_parse_u64(h->value, h->value_len, UINT64_MAX, &v) != 0)
        return bad(req, "invalid Content-Length");
    if (seen && v != req->content_length)
        return bad(req, "conflicting Content-Length fields");
    if (v > MOCK_MAX_BODY)
        return bad(req, "request body too large");
    req->content_length = v;
    return 0;
}

/* Applies the fields that frame the message and steer the connection. */
static int apply_fields(mock_request *req)
{
    int hosts = 0, lengths = 0, encodings = 0;
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        const mock_header *h = &req->headers[i];
        if (token_is(h->name, h->name_len, "content-length")) {
            if (content_length(h, lengths++, req) != 0)
                return -1;
        } else if (token_is(h->name, h->name_len, "transfer-encoding")) {
            if (encodings++ || !token_is(h->value, h->value_len, "chunked"))
                return bad(req, "unsupported Transfer-Encoding");
            req->chunked = 1;
        } else if (token_is(h->name, h->name_len, "host")) {
            hosts++;
        } else if (token_is(h->name, h->name_len, "connection")) {
            each_list_item(h, connection_option, req);
        } else if (token_is(h->name, h->name_len, "expect")) {
            req->expect_continue = token_is(h->value, h->value_len, "100-continue");
        }
    }
    if (encodings && lengths)
        return bad(req, "both Content-Length and Transfer-Encoding");
    if (encodings && req->minor == 0)
        return bad(req, "Transfer-Encoding in an HTTP/1.0 request");
    if (hosts > 1)
        return bad(req, "repeated Host field");
    if (hosts == 0 && req->minor == 1)
        return bad(req, "missing Host field");
    req->keep_alive = req->keep_alive < 0 ? 0 : req->minor == 1 ? 1 : req->keep_alive;
    return 0;
}

/* Returns the head length, MOCK_REQ_PARTIAL or MOCK_REQ_BAD. */
static long parse_head(const char *buf, size_t len, mock_request *req)
{
    size_t limit = len < MOCK_MAX_HEAD ? len : MOCK_MAX_HEAD, pos = 0, n;
    const char *line;
    int r;

    while ((r = take_line(buf, limit, &pos, &line, &n)) == 1) {
        if (!req->method) {
            if (parse_request_line(line, n, req) != 0)
                return MOCK_REQ_BAD;
        } else if (n == 0) {
            return apply_fields(req) == 0 ? (long)pos : MOCK_REQ_BAD;
        } else if (req->nheaders == MOCK_MAX_HEADERS) {
            return bad(req, "too many header fields");
        } else if (parse_field(line, n, &req->headers[req->nheaders++], req) != 0) {
            return MOCK_REQ_BAD;
        }
    }
    if (r < 0)
        return bad(req, req->method ? "bare LF in header section" : "bare LF in request line");
    if (len >= MOCK_MAX_HEAD)
        return bad(req, "request head too large");
    return MOCK_REQ_PARTIAL;
}

/* "1a;name=value": hex size, then optional whitespace and extensions. */
static int chunk_size(const char *line, size_t n, uint64_t *size, mock_request *req)
{
    uint64_t v = 0;
    size_t i = 0;

    for (; i < n && hex_value((unsigned char)line[i]) >= 0; i++) {
        if (v > (MOCK_MAX_BODY >> 4))
            return bad(req, "chunk too large");
        v = v * 16 + (uint64_t)hex_value((unsigned char)line[i]);
    }
    if (i == 0)
        return bad(req, "invalid chunk size");
    while (i < n && is_ows(line[i]))
        i++;
    if (i < n && line[i] != ';')
        return bad(req, "invalid chunk size");
    for (; i < n; i++)
        if (!is_field_char((unsigned char)line[i]))
            return bad(req, "invalid character in chunk extension");
    *size = v;
    return 0;
}

/* Trailer fields after the last chunk, up to the blank line.  Returns the
 * bytes they occupy (blank line included), 0 when partial, -1 when bad. */
static long walk_trailers(const char *p, size_t len, mock_request *req)
{
    size_t limit = len < MOCK_MAX_HEAD ? len : MOCK_MAX_HEAD, pos = 0, n, count = 0;
    const char *line;
    mock_header h;
    int r;

    while ((r = take_line(p, limit, &pos, &line, &n)) == 1) {
        if (n == 0)
            return (long)pos;
        if (++count > MOCK_MAX_HEADERS)
            return bad(req, "too many trailer fields");
        if (parse_field(line, n, &h, req) != 0)
            return -1;
    }
    if (r < 0)
        return bad(req, "bare LF in trailer section");
    return len >= MOCK_MAX_HEAD ? bad(req, "trailer section too large") : 0;
}

/* Walks a chunked body at p[0..len).  Returns its encoded length when
 * complete, 0 when partial, -1 when bad.  With `out` (which may overlap p,
 * never after it) the data is copied there and *decoded set. */
static long walk_chunked(char *p, size_t len, char *out, size_t *decoded, mock_request *req)
{
    size_t pos = 0, total = 0, n;
    const char *line;
    uint64_t size;
    long tr;
    int r;

    for (;;) {
        size_t limit = len - pos < MAX_CHUNK_LINE + 2 ? len : pos + MAX_CHUNK_LINE + 2;
        if ((r = take_line(p, limit, &pos, &line, &n)) <= 0)
            return r < 0 ? bad(req, "bare LF in chunk size line")
                         : limit < len ? bad(req, "chunk size line too long") : 0;
        if (chunk_size(line, n, &size, req) != 0)
            return -1;
        if (size == 0)
            break;
        if (size > MOCK_MAX_BODY - total)
            return bad(req, "request body too large");
        if (len - pos < size + 2)
            return 0;
        if (p[pos + size] != '\r' || p[pos + size + 1] != '\n')
            return bad(req, "chunk data not followed by CRLF");
        if (out)
            memmove(out + total, p + pos, size);
        total += size;
        pos += size + 2;
    }
    if ((tr = walk_trailers(p + pos, len - pos, req)) <= 0)
        return tr;
    *decoded = total;
    return (long)(pos + (size_t)tr);
}

long mock_request_parse(char *buf, size_t len, mock_request *req)
{
    long head;
    size_t decoded = 0;

    memset(req, 0, sizeof *req);
    if (len == 0)
        return MOCK_REQ_PARTIAL;      /* buf may still be NULL */
    if ((head = parse_head(buf, len, req)) <= 0)
        return head;
    req->head_len = (size_t)head;
    req->body = buf + head;
    if (req->chunked) {
        long enc = walk_chunked(buf + head, len - (size_t)head, NULL, &decoded, req);
        if (enc <= 0)
            return enc;
        walk_chunked(buf + head, len - (size_t)head, buf + head, &decoded, req);
        req->body_len = decoded;
        return head + enc;
    }
    if (len - (size_t)head < req->content_length)
        return MOCK_REQ_PARTIAL;
    req->body_len = (size_t)req->content_length;
    return head + (long)req->content_length;
}

const mock_header *mock_request_header(const mock_request *req, const char *name)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++)
        if (token_is(req->headers[i].name, req->headers[i].name_len, name))
            return &req->headers[i];
    return NULL;
}

static int percent_decode(const char *s, size_t len, char *out, size_t cap, size_t *out_len)
{
    size_t i, o = 0;

    if (cap == 0)
        return -1;
    for (i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (len - i < 3 || hex_value((unsigned char)s[i + 1]) < 0 || hex_value((unsigned char)s[i + 2]) < 0)
                return -1;
            c = hex_value((unsigned char)s[i + 1]) * 16 + hex_value((unsigned char)s[i + 2]);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    *out_len = o;
    return 0;
}

int mock_query_get(const char *query, size_t qlen, const char *name,
                   char *out, size_t cap, size_t *out_len)
{
    const char *p = query, *end = query ? query + qlen : NULL;
    size_t nlen = strlen(name);

    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *ne = eq ? eq : e;
        if ((size_t)(ne - p) == nlen && memcmp(p, name, nlen) == 0) {
            if (!eq)
                eq = e - 1;         /* "name" alone: an empty value */
            return percent_decode(eq + 1, (size_t)(e - eq - 1), out, cap, out_len) == 0 ? 1 : -1;
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}
