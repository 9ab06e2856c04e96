/* HTTP proxy configuration: parsing a proxy URL, reading the environment
 * once, and matching NO_PROXY entries the way curl does. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "ascii.h"
#include "buf.h"
#include "error.h"
#include "proxy.h"

#define DEFAULT_PROXY_PORT 1080     /* curl's, for a proxy URL without one */

static int nomem(sluice_error *err)
{
    return sl_err(err, SLUICE_ENOMEM, "proxy: out of memory");
}

static void base64(sl_buf *b, const unsigned char *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], tab[v & 63]};
        sl_buf_append(b, q, 4);
    }
    if (i < n) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     '='};
        sl_buf_append(b, q, 4);
    }
}

/* "user[:password]", percent-encoded, into "Basic base64(user:password)". */
static int parse_auth(const char *s, size_t n, sl_proxy *p, sluice_error *err)
{
    const char *colon = memchr(s, ':', n);
    size_t ulen = colon ? (size_t)(colon - s) : n;
    char *user, *pass = NULL;
    sl_buf plain = SL_BUF_INIT, hdr = SL_BUF_INIT;
    int bad = 0, rc = 0;

    user = sl_url_pct_decode(s, ulen, &bad);
    if (user && colon)
        pass = sl_url_pct_decode(colon + 1, n - ulen - 1, &bad);
    if (!user || (colon && !pass)) {
        rc = bad ? sl_err(err, SLUICE_EINVAL, "proxy URL: bad byte or escape in the credentials")
                 : nomem(err);
        goto out;
    }
    sl_buf_printf(&plain, "%s:%s", user, pass ? pass : "");
    sl_buf_puts(&hdr, "Basic ");
    if (!plain.failed)
        base64(&hdr, (const unsigned char *)plain.data, plain.len);
    if (plain.failed || hdr.failed) {
        rc = nomem(err);
        goto out;
    }
    p->auth = sl_buf_detach(&hdr, NULL);
out:
    if (plain.data)
        memset(plain.data, 0, plain.len);
    if (pass)
        memset(pass, 0, strlen(pass));
    sl_buf_free(&plain);
    sl_buf_free(&hdr);
    sl_free(user);
    sl_free(pass);
    return rc;
}

/* Whether host[:port] (or [v6][:port]) names a port. */
static int has_port(const char *hp, size_t n)
{
    const char *close = hp[0] == '[' ? memchr(hp, ']', n) : NULL;

    if (hp[0] == '[')
        return close && close + 1 < hp + n && close[1] == ':';
    return memchr(hp, ':', n) != NULL;
}

int sl_proxy_parse(const char *url, sl_proxy *out, sluice_error *err)
{
    const char *s = url, *auth_end, *at = NULL, *hp;
    size_t alen, i;
    sl_buf tmp = SL_BUF_INIT;
    sl_url u;
    int rc;

    memset(out, 0, sizeof *out);
    if (!url || !*url)
        return sl_err(err, SLUICE_EINVAL, "proxy URL is empty");
    if (strstr(s, "://")) {
        if (strncasecmp(s, "http://", 7) != 0)
            return sl_err(err, SLUICE_EINVAL,
                          "proxy URL: only http:// proxies are supported");
        s += 7;
    }
    alen = strcspn(s, "/?#");
    auth_end = s + alen;
    if (*auth_end && strcmp(auth_end, "/") != 0)
        return sl_err(err, SLUICE_EINVAL, "proxy URL: a path, query or fragment is not allowed");
    for (i = 0; i < alen; i++)
        if (s[i] == '@')
            at = s + i;
    hp = at ? at + 1 : s;
    if (hp == auth_end)
        return sl_err(err, SLUICE_EINVAL, "proxy URL: no host");
    if (at && (rc = parse_auth(s, (size_t)(at - s), out, err)))
        return rc;
    sl_buf_printf(&tmp, "http://%.*s/", (int)(auth_end - hp), hp);
    if (tmp.failed) {
        sl_proxy_free(out);
        return nomem(err);
    }
    rc = sl_url_parse(tmp.data, &u, err);
    if (rc) {
        sl_err_append(err, " (in the proxy URL)");
        sl_buf_free(&tmp);
        sl_proxy_free(out);
        return rc;
    }
    out->port = has_port(hp, (size_t)(auth_end - hp)) ? u.port : DEFAULT_PROXY_PORT;
    out->host = sl_strdup(u.host);
    sl_buf_reset(&tmp);
    sl_buf_printf(&tmp, u.is_ipv6 ? "http://[%s]:%d" : "http://%s:%d", u.host, out->port);
    out->origin = tmp.failed ? NULL : sl_buf_detach(&tmp, NULL);
    sl_url_free(&u);
    sl_buf_free(&tmp);
    if (!out->host || !out->origin) {
        sl_proxy_free(out);
        return nomem(err);
    }
    return 0;
}

void sl_proxy_free(sl_proxy *p)
{
    if (p->auth)
        memset(p->auth, 0, strlen(p->auth));
    sl_free(p->host);
    sl_free(p->origin);
    sl_free(p->auth);
    memset(p, 0, sizeof *p);
}

/* The first of the variables that is set and not empty. */
static const char *env_first(const char *const *names, const char **which)
{
    for (; *names; names++) {
        const char *v = getenv(*names);
        if (v && *v) {
            *which = *names;
            return v;
        }
    }
    return NULL;
}

static int from_env(sl_proxy *p, const char *const *names, sluice_error *err)
{
    const char *which = NULL, *v = env_first(names, &which);
    int rc;

    if (!v)
        return 0;
    rc = sl_proxy_parse(v, p, err);
    if (rc)
        sl_err_append(err, " (from the environment variable %s)", which);
    return rc;
}

int sl_proxy_conf_init(sl_proxy_conf *c, const char *url, sluice_error *err)
{
    static const char *const https_vars[] = {"https_proxy", "HTTPS_PROXY", "all_proxy",
                                             "ALL_PROXY", NULL};
    static const char *const http_vars[] = {"http_proxy", "all_proxy", "ALL_PROXY", NULL};
    static const char *const no_vars[] = {"no_proxy", "NO_PROXY", NULL};
    const char *which, *no;
    int rc;

    memset(c, 0, sizeof *c);
    if (url && !*url)
        return 0;
    if (url) {
        if ((rc = sl_proxy_parse(url, &c->http, err)) ||
            (rc = sl_proxy_parse(url, &c->https, err)))
            goto fail;
    } else if ((rc = from_env(&c->http, http_vars, err)) ||
               (rc = from_env(&c->https, https_vars, err))) {
        goto fail;
    }
    no = env_first(no_vars, &which);
    if (no && !(c->no_proxy = sl_strdup(no))) {
        rc = nomem(err);
        goto fail;
    }
    return 0;
fail:
    sl_proxy_conf_free(c);
    return rc;
}

void sl_proxy_conf_free(sl_proxy_conf *c)
{
    sl_proxy_free(&c->http);
    sl_proxy_free(&c->https);
    sl_free(c->no_proxy);
    memset(c, 0, sizeof *c);
}

const sl_proxy *sl_proxy_for(const sl_proxy_conf *c, const sl_url *target)
{
    const sl_proxy *p = target->tls ? &c->https : &c->http;

    if (!p->host)
        return NULL;
    if (c->no_proxy && sl_no_proxy_match(c->no_proxy, target->host))
        return NULL;
    return p;
}

/* An address from text: 4 or 16 bytes into a, family into *fam; 0 if the
 * text is no address. */
static int parse_addr(const char *s, unsigned char a[16], int *fam)
{
    if (inet_pton(AF_INET, s, a) == 1) {
        *fam = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, s, a) == 1) {
        *fam = AF_INET6;
        return 1;
    }
    return 0;
}

/* Whether the first `bits` bits of a and b agree. */
static int prefix_equal(const unsigned char *a, const unsigned char *b, long bits)
{
    long whole = bits / 8;
    int rest = (int)(bits % 8);

    if (memcmp(a, b, (size_t)whole) != 0)
        return 0;
    return rest == 0 || ((a[whole] ^ b[whole]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* One entry (copied, NUL-terminated, brackets and dots trimmed) against an
 * address host (fam != 0) or a name. */
static int entry_matches(char *e, const char *host, const unsigned char *haddr, int hfam)
{
    char *slash = strchr(e, '/');
    unsigned char eaddr[16];
    int efam;
    size_t el, hl;

    if (hfam) {
        long bits = hfam == AF_INET ? 32 : 128;
        if (slash) {
            *slash = '\0';
            bits = sl_ascii_decimal(slash + 1, strlen(slash + 1), 0, bits);
            if (bits < 0)
                return 0;
        }
        return parse_addr(e, eaddr, &efam) && efam == hfam && prefix_equal(eaddr, haddr, bits);
    }
    el = strlen(e);
    hl = strlen(host);
    while (hl > 0 && host[hl - 1] == '.')
        hl--;
    if (el == 0 || el > hl || strncasecmp(host + hl - el, e, el) != 0)
        return 0;
    return el == hl || host[hl - el - 1] == '.';
}

int sl_no_proxy_match(const char *list, const char *host)
{
    unsigned char haddr[16];
    int hfam = 0;
    const char *s = list;

    if (!list || !host)
        return 0;
    s += strspn(s, " \t");
    if (s[0] == '*' && s[1 + strspn(s + 1, " \t")] == '\0')
        return 1;
    if (!parse_addr(host, haddr, &hfam))
        hfam = 0;
    while (*s) {
        char e[256];
        size_t n;

        s += strspn(s, ", \t");
        n = strcspn(s, ", \t");
        if (n == 0)
            break;
        if (n < sizeof e) {
            const char *b = s, *end = s + n;
            if (*b == '[' && end[-1] == ']') {          /* [v6] */
                b++;
                end--;
            }
            while (b < end && *b == '.')
                b++;
            while (end > b && end[-1] == '.')
                end--;
            memcpy(e, b, (size_t)(end - b));
            e[end - b] = '\0';
            if (entry_matches(e, host, haddr, hfam))
                return 1;
        }
        s += n;
    }
    return 0;
}
