/* URL parsing, resolution and encoding: absolute http and https URLs only.
 *
 * A parsed URL keeps all its strings in one allocation (mem_), laid out as
 * host, path, query, origin, host_header, each NUL-terminated. */
#include <arpa/inet.h>
#include <string.h>

#include "alloc.h"
#include "ascii.h"
#include "error.h"
#include "url.h"

#define MAX_HOST_LEN 255

/* The pieces of a URL string, pointing into it.  Lengths are in bytes. */
typedef struct url_parts {
    int tls;
    const char *host;
    size_t host_len;
    int is_ipv6;
    int port;
    const char *path;
    size_t path_len;
    const char *query;      /* NULL when there is no '?' */
    size_t query_len;
} url_parts;

static const char hexdig[] = "0123456789ABCDEF";

static int is_alpha(unsigned char c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_unreserved(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static const char *byte_name(unsigned char c)
{
    switch (c) {
    case '\r': return "CR";
    case '\n': return "LF";
    case '\0': return "NUL";
    case ' ': return "a space";
    case 0x7f: return "DEL";
    default: return "a control byte";
    }
}

int sl_url_check_bytes(const char *s, size_t len, const char *what, sluice_error *err)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return sl_err(err, SLUICE_EINVAL, "URL %s contains %s (0x%02x) at offset %zu",
                          what, byte_name(c), c, i);
    }
    return 0;
}

/* "http" or "https", any case, then "://"; returns the bytes used or 0. */
static size_t parse_scheme(const char *s, int *tls)
{
    size_t n = 0;

    while (is_alpha((unsigned char)s[n]))
        n++;
    if (strncmp(s + n, "://", 3) != 0)
        return 0;
    if (n == 4 && strncasecmp(s, "http", 4) == 0)
        *tls = 0;
    else if (n == 5 && strncasecmp(s, "https", 5) == 0)
        *tls = 1;
    else
        return 0;
    return n + 3;
}

/* Digits only, 1..65535.  An empty port means the scheme's default
 * (RFC 3986 section 3.2.3). */
static int parse_port(const char *s, size_t len, int *port, sluice_error *err)
{
    size_t i;
    long v = 0;

    if (sl_url_check_bytes(s, len, "port", err))
        return SLUICE_EINVAL;
    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]) || i >= 5)
            return sl_err(err, SLUICE_EINVAL, "URL port is not a number from 1 to 65535");
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return sl_err(err, SLUICE_EINVAL, "URL port %ld is out of range 1..65535", v);
    *port = (int)v;
    return 0;
}

static int parse_ipv6(const char *h, size_t len, sluice_error *err)
{
    char tmp[64];
    unsigned char addr[16];

    if (memchr(h, '%', len))
        return sl_err(err, SLUICE_EINVAL, "URL host: IPv6 zone identifiers are not accepted");
    if (len == 0 || len >= sizeof tmp)
        return sl_err(err, SLUICE_EINVAL, "URL host is not a valid IPv6 address");
    memcpy(tmp, h, len);
    tmp[len] = '\0';
    if (inet_pton(AF_INET6, tmp, addr) != 1)
        return sl_err(err, SLUICE_EINVAL, "URL host is not a valid IPv6 address");
    return 0;
}

/* A registered name or an IPv4 address.  Bytes past the ASCII unreserved
 * set (percent-encoding, sub-delims) are refused: DNS cannot carry them. */
static int check_reg_name(const char *h, size_t len, sluice_error *err)
{
    size_t i;
    int dotted_digits = 1;
    char tmp[MAX_HOST_LEN + 1];
    struct in_addr a;

    if (len == 0)
        return sl_err(err, SLUICE_EINVAL, "URL host is empty");
    if (len > MAX_HOST_LEN)
        return sl_err(err, SLUICE_EINVAL, "URL host is longer than %d bytes", MAX_HOST_LEN);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!is_unreserved(c))
            return sl_err(err, SLUICE_EINVAL, "URL host contains byte 0x%02x, not allowed in a host name",
                          c);
        if (!is_digit(c) && c != '.')
            dotted_digits = 0;
    }
    /* All digits and dots reads as IPv4; resolvers would take "1.2.3" as
     * 1.2.0.3, so only the four-part form is accepted. */
    if (dotted_digits) {
        memcpy(tmp, h, len);
        tmp[len] = '\0';
        if (inet_pton(AF_INET, tmp, &a) != 1)
            return sl_err(err, SLUICE_EINVAL, "URL host is not a valid IPv4 address");
    }
    return 0;
}

/* host, [v6] or either with ":port", in s[0..len). */
static int parse_authority(const char *s, size_t len, url_parts *p, sluice_error *err)
{
    const char *colon;
    size_t hlen;
    int rc;

    if (memchr(s, '@', len))
        return sl_err(err, SLUICE_EINVAL,
                      "credentials in URLs are not accepted; use an Authorization header");
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return sl_err(err, SLUICE_EINVAL, "URL host: '[' without ']'");
        if (sl_url_check_bytes(s, (size_t)(close - s), "host", err))
            return SLUICE_EINVAL;
        p->host = s + 1;
        p->host_len = (size_t)(close - s) - 1;
        p->is_ipv6 = 1;
        if ((rc = parse_ipv6(p->host, p->host_len, err)))
            return rc;
        colon = close + 1;
        if (colon < s + len && *colon != ':')
            return sl_err(err, SLUICE_EINVAL, "URL host: unexpected bytes after ']'");
    } else {
        colon = memchr(s, ':', len);
        hlen = colon ? (size_t)(colon - s) : len;
        if (sl_url_check_bytes(s, hlen, "host", err))
            return SLUICE_EINVAL;
        p->host = s;
        p->host_len = hlen;
        if ((rc = check_reg_name(s, hlen, err)))
            return rc;
    }
    p->port = p->tls ? 443 : 80;
    if (colon && colon < s + len)
        return parse_port(colon + 1, (size_t)(s + len - colon - 1), &p->port, err);
    return 0;
}

/* Splits path, query and fragment and checks each for forbidden bytes. */
static int split_rest(const char *s, url_parts *p, sluice_error *err)
{
    size_t n = strcspn(s, "?#");

    if (sl_url_check_bytes(s, n, "path", err))
        return SLUICE_EINVAL;
    p->path = s;
    p->path_len = n;
    s += n;
    if (*s == '?') {
        p->query = ++s;
        p->query_len = strcspn(s, "#");
        if (sl_url_check_bytes(s, p->query_len, "query", err))
            return SLUICE_EINVAL;
        s += p->query_len;
    }
    if (*s == '#' && sl_url_check_bytes(s + 1, strlen(s + 1), "fragment", err))
        return SLUICE_EINVAL;
    return 0;
}

static int split_url(const char *s, url_parts *p, sluice_error *err)
{
    size_t n = parse_scheme(s, &p->tls), alen;
    int rc;

    if (n == 0) {
        size_t slen = strcspn(s, ":/?#");
        if (sl_url_check_bytes(s, slen, "scheme", err))
            return SLUICE_EINVAL;
        return sl_err(err, SLUICE_EINVAL, "URL scheme must be http:// or https://");
    }
    s += n;
    alen = strcspn(s, "/?#");
    if ((rc = parse_authority(s, alen, p, err)))
        return rc;
    return split_rest(s + alen, p, err);
}

/* Bytes >= 0x80 in a path or query are sent percent-encoded, as browsers
 * do, so the request-target stays ASCII. */
static size_t encoded_len(const char *s, size_t n)
{
    size_t i, len = n;

    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            len += 2;
    return len;
}

static char *put_encoded(char *d, const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            *d++ = '%';
            *d++ = hexdig[c >> 4];
            *d++ = hexdig[c & 15];
        } else {
            *d++ = (char)c;
        }
    }
    *d++ = '\0';
    return d;
}

static char *put(char *d, const char *s, size_t n)
{
    memcpy(d, s, n);
    return d + n;
}

static char *put_port(char *d, int port)
{
    char tmp[8];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + port % 10);
        port /= 10;
    } while (port);
    while (n)
        *d++ = tmp[--n];
    return d;
}

static char *put_lower(char *d, const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        *d++ = (char)sl_ascii_lower((unsigned char)s[i]);
    return d;
}

/* "[v6]" or the host, lower-cased; used for origin and host_header. */
static char *put_host(char *d, const url_parts *p)
{
    if (p->is_ipv6)
        *d++ = '[';
    d = put_lower(d, p->host, p->host_len);
    if (p->is_ipv6)
        *d++ = ']';
    return d;
}

static int build_url(const url_parts *p, sl_url *out)
{
    size_t path_len = p->path_len ? encoded_len(p->path, p->path_len) : 1;
    size_t query_len = p->query ? encoded_len(p->query, p->query_len) + 1 : 0;
    size_t host_len = p->host_len + 2 * (size_t)p->is_ipv6;
    size_t size = (p->host_len + 1) + (path_len + 1) + query_len + (8 + host_len + 7) +
                  (host_len + 7);
    int default_port = p->port == (p->tls ? 443 : 80);
    char *d = sl_malloc(size);

    if (!d)
        return SLUICE_ENOMEM;
    out->mem_ = d;
    out->tls = p->tls;
    out->port = p->port;
    out->is_ipv6 = p->is_ipv6;
    out->host = d;
    d = put_lower(d, p->host, p->host_len);
    *d++ = '\0';
    out->path = d;
    d = p->path_len ? put_encoded(d, p->path, p->path_len) : put(d, "/", 2);
    if (p->query) {
        out->query = d;
        d = put_encoded(d, p->query, p->query_len);
    }
    out->origin = d;
    d = put(d, p->tls ? "https://" : "http://", p->tls ? 8 : 7);
    d = put_host(d, p);
    *d++ = ':';
    d = put_port(d, p->port);
    *d++ = '\0';
    out->host_header = d;
    d = put_host(d, p);
    if (!default_port) {
        *d++ = ':';
        d = put_port(d, p->port);
    }
    *d = '\0';
    return 0;
}

char *sl_url_pct_decode(const char *s, size_t n, int *bad)
{
    char *out = sl_malloc(n + 1), *o = out;
    size_t i;

    *bad = 0;
    if (!out)
        return NULL;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? sl_ascii_hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? sl_ascii_hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                goto bad;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
            if (c == 0)
                goto bad;
        } else if (c <= 0x20 || c == 0x7f) {
            goto bad;
        }
        *o++ = (char)c;
    }
    *o = '\0';
    return out;
bad:
    sl_free(out);
    *bad = 1;
    return NULL;
}

int sl_url_parse(const char *s, sl_url *out, sluice_error *err)
{
    url_parts p = {0};
    int rc;

    if (!out)
        return sl_err(err, SLUICE_EINVAL, "no URL output given");
    memset(out, 0, sizeof *out);
    if (!s)
        return sl_err(err, SLUICE_EINVAL, "URL is NULL");
    if ((rc = split_url(s, &p, err)))
        return rc;
    if ((rc = build_url(&p, out)))
        return sl_err(err, rc, "out of memory parsing a URL");
    return 0;
}

void sl_url_free(sl_url *u)
{
    if (u) {
        sl_free(u->mem_);
        memset(u, 0, sizeof *u);
    }
}

/* --- resolution (RFC 3986 section 5.2) ----------------------------------- */

/* A reference starts with a scheme when letters, digits, '+', '-' or '.'
 * after a letter run into ':' before any '/', '?' or '#'. */
static int has_scheme(const char *r)
{
    if (!is_alpha((unsigned char)*r))
        return 0;
    for (r++; *r; r++) {
        unsigned char c = (unsigned char)*r;
        if (c == ':')
            return 1;
        if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.')
            return 0;
    }
    return 0;
}

/* Appends p[0..n) (an absolute path) to b with "." and ".." segments
 * removed (RFC 3986 section 5.2.4). */
static void remove_dot_segments(sl_buf *b, const char *p, size_t n)
{
    size_t start = b->len;
    const char *end = p + n;

    while (p < end) {
        const char *seg = p + 1, *next = memchr(seg, '/', (size_t)(end - seg));
        size_t len;
        int last = !next;

        if (!next)
            next = end;
        len = (size_t)(next - seg);
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (b->len > start && b->data[--b->len] != '/')
                ;
            if (b->data)
                b->data[b->len] = '\0';
        } else if (!(len == 1 && seg[0] == '.')) {
            sl_buf_append(b, p, (size_t)(next - p));
            last = 0;
        }
        if (last)
            sl_buf_append(b, "/", 1);
        p = next;
    }
    if (b->len == start)
        sl_buf_append(b, "/", 1);
}

/* The base path up to and including its last '/', then the reference. */
static void merge_paths(sl_buf *b, const sl_url *base, const char *ref, size_t ref_len)
{
    sl_buf merged = SL_BUF_INIT;
    const char *slash = strrchr(base->path, '/');

    sl_buf_append(&merged, base->path, slash ? (size_t)(slash - base->path) + 1 : 0);
    if (merged.len == 0)
        sl_buf_append(&merged, "/", 1);
    sl_buf_append(&merged, ref, ref_len);
    if (merged.failed)
        b->failed = 1;
    else
        remove_dot_segments(b, merged.data, merged.len);
    sl_buf_free(&merged);
}

static int resolve_relative(const sl_url *base, const char *ref, sl_url *out, sluice_error *err)
{
    url_parts r = {0};
    sl_buf b = SL_BUF_INIT;
    int rc;

    if ((rc = split_rest(ref, &r, err)))
        return rc;
    sl_buf_printf(&b, "%s://%s", base->tls ? "https" : "http", base->host_header);
    if (r.path_len == 0)
        sl_buf_puts(&b, base->path);
    else if (r.path[0] == '/')
        remove_dot_segments(&b, r.path, r.path_len);
    else
        merge_paths(&b, base, r.path, r.path_len);
    if (r.query) {
        sl_buf_append(&b, "?", 1);
        sl_buf_append(&b, r.query, r.query_len);
    } else if (r.path_len == 0 && base->query) {
        sl_buf_printf(&b, "?%s", base->query);
    }
    rc = b.failed ? sl_err(err, SLUICE_ENOMEM, "out of memory resolving a URL")
                  : sl_url_parse(b.data, out, err);
    sl_buf_free(&b);
    return rc;
}

int sl_url_resolve(const sl_url *base, const char *ref, sl_url *out, sluice_error *err)
{
    sl_buf b = SL_BUF_INIT;
    int rc;

    if (!out)
        return sl_err(err, SLUICE_EINVAL, "no URL output given");
    memset(out, 0, sizeof *out);
    if (!ref)
        return sl_err(err, SLUICE_EINVAL, "redirect location is NULL");
    if (has_scheme(ref))
        return sl_url_parse(ref, out, err);
    if (!base || !base->mem_)
        return sl_err(err, SLUICE_EINVAL, "relative redirect location without a base URL");
    if (ref[0] != '/' || ref[1] != '/')
        return resolve_relative(base, ref, out, err);
    sl_buf_puts(&b, base->tls ? "https:" : "http:");
    sl_buf_puts(&b, ref);
    rc = b.failed ? sl_err(err, SLUICE_ENOMEM, "out of memory resolving a URL")
                  : sl_url_parse(b.data, out, err);
    sl_buf_free(&b);
    return rc;
}

/* --- encoding -------------------------------------------------------------- */

int sl_url_encode(sl_buf *b, const char *s)
{
    size_t n;
    char *d;

    if (!b || !s)
        return SLUICE_EINVAL;
    n = strlen(s);
    if (n > ((size_t)-1 / 2 - b->len) / 3 || sl_buf_reserve(b, 3 * n))
        return SLUICE_ENOMEM;
    d = b->data + b->len;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (is_unreserved(c)) {
            *d++ = (char)c;
        } else {
            *d++ = '%';
            *d++ = hexdig[c >> 4];
            *d++ = hexdig[c & 15];
        }
    }
    *d = '\0';
    b->len = (size_t)(d - b->data);
    return 0;
}
