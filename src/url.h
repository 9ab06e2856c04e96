/* URL parsing and encoding.  Pure functions; thread-safe. */
#ifndef SL_URL_H
#define SL_URL_H

#include "buf.h"
#include "sluice.h"

/* A parsed, normalised http or https URL.  Every string is owned by the
 * struct (one allocation freed by sl_url_free). */
typedef struct sl_url {
    int tls;            /* 1 for https */
    char *host;         /* lower-case; an IPv6 literal without brackets */
    int port;           /* explicit, or 80 / 443 */
    int is_ipv6;
    char *path;         /* starts with '/', no query, percent-encoding kept */
    char *query;        /* after '?', without the fragment; NULL if none */
    char *origin;       /* "http://host:port" with the port always written,
                           IPv6 in brackets: the pool key */
    char *host_header;  /* Host header value: host, or host:port when the port is
                           not the scheme's default; IPv6 in brackets */
    void *mem_;         /* private */
} sl_url;

/* Parses an absolute http:// or https:// URL.  The scheme and host are
 * lower-cased; userinfo is refused (credentials belong in headers);
 * a fragment is dropped.  CR, LF, NUL, space or another control byte in
 * any part gives SLUICE_EINVAL with a message naming the part ("host",
 * "path", "query", "port", "scheme").  `out` is zeroed on failure. */
int sl_url_parse(const char *s, sl_url *out, sluice_error *err);
void sl_url_free(sl_url *u);

/* Resolves `ref` (a redirect Location: absolute, scheme-relative,
 * absolute-path or relative-path) against `base` into `out`. */
int sl_url_resolve(const sl_url *base, const char *ref, sl_url *out, sluice_error *err);

/* Appends `s` percent-encoded for a query name or value: RFC 3986
 * unreserved bytes stay, every other byte becomes %XX. */
int sl_url_encode(sl_buf *b, const char *s);

/* SLUICE_EINVAL naming `what` if s[0..len) holds CR, LF, NUL, space, DEL or
 * another control byte; else 0. */
int sl_url_check_bytes(const char *s, size_t len, const char *what, sluice_error *err);

/* Percent-decodes s[0..n) (userinfo of a Redis or proxy URL) into a new
 * string; NULL with *bad set for a bad escape, a NUL, a raw control byte
 * or space, or with *bad clear on ENOMEM. */
char *sl_url_pct_decode(const char *s, size_t n, int *bad);

#endif
