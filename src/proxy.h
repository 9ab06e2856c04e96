/* HTTP proxy configuration: the proxy URL, the environment as curl reads
 * it, and NO_PROXY matching.  A configuration is built once (at factory
 * creation) and then only read, so any thread may use it without a lock. */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include "sluice.h"
#include "url.h"

/* One proxy: "http://[user:password@]host[:port]". */
typedef struct sl_proxy {
    char *host;         /* lower-case; IPv6 without brackets */
    int port;           /* explicit, or 1080 as curl assumes */
    char *origin;       /* "http://host:port", never with credentials: for
                           messages, logs and the pool key */
    char *auth;         /* "Basic <base64>" for Proxy-Authorization, or NULL */
} sl_proxy;

/* Parses a proxy URL.  No scheme means http://; https:// and socks
 * proxies, a path other than "/", a query or a fragment are SLUICE_EINVAL.
 * Credentials are percent-decoded into `auth` and never appear in a
 * message. */
int sl_proxy_parse(const char *url, sl_proxy *out, sluice_error *err);
void sl_proxy_free(sl_proxy *p);

typedef struct sl_proxy_conf {
    sl_proxy http;      /* for http:// targets; host NULL = direct */
    sl_proxy https;     /* for https:// targets (CONNECT); host NULL = direct */
    char *no_proxy;     /* the NO_PROXY list, or NULL */
} sl_proxy_conf;

/* Builds the configuration.  `url` non-empty: that proxy for every target.
 * "" : no proxy at all, whatever the environment says.  NULL: the
 * environment, as curl reads it: https_proxy or HTTPS_PROXY for https://
 * targets, http_proxy (lower case only: an HTTP_PROXY variable may come
 * from a request's "Proxy:" header in CGI, "httpoxy") for http://, then
 * all_proxy or ALL_PROXY for either.  no_proxy or NO_PROXY applies in both
 * of the first two cases.  A malformed proxy variable is SLUICE_EINVAL
 * naming the variable (not its value, which may hold a password). */
int sl_proxy_conf_init(sl_proxy_conf *c, const char *url, sluice_error *err);
void sl_proxy_conf_free(sl_proxy_conf *c);

/* The proxy a request to `target` goes through, or NULL for a direct
 * connection. */
const sl_proxy *sl_proxy_for(const sl_proxy_conf *c, const sl_url *target);

/* Whether `host` (lower-case, IPv6 without brackets) is in a NO_PROXY
 * list, with curl's rules: entries separated by commas or blanks, case
 * ignored; a list that is just "*" matches every host; a name matches itself and its
 * subdomains, with or without a leading dot ("example.com" and
 * ".example.com" both match "a.example.com" and "example.com"); an IP
 * address matches itself, and "addr/bits" (CIDR, IPv4 or IPv6) matches the
 * addresses in that network. */
int sl_no_proxy_match(const char *list, const char *host);

#endif
