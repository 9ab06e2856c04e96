/* Redis URLs: "redis://[[user]:password@]host[:port][/db]",
 * "unix://[[user]:password@]/path[?db=N]", the cluster's seed list
 * "redis+cluster://[[user]:password@]host:port[,host:port...]" and the
 * sentinels' "redis+sentinel://[[user]:password@]host:port[,...]/master[/db]",
 * parsed strictly into owned strings, with a masked form for messages. */
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "ascii.h"
#include "buf.h"
#include "error.h"
#include "redis_conn.h"
#include "url.h"

#define DEFAULT_PORT 6379
#define SENTINEL_DEFAULT_PORT 26379
#define MAX_MASTER_NAME 128

static int url_nomem(sluice_error *err)
{
    return sl_err(err, SLUICE_ENOMEM, "redis URL: out of memory");
}

/* "user:password" or ":password" (percent-encoded). */
static int parse_userinfo(const char *s, size_t n, sl_redis_url *u, sluice_error *err)
{
    const char *colon = memchr(s, ':', n);
    int bad;

    if (!colon)
        return sl_err(err, SLUICE_EINVAL,
                      "redis URL: userinfo must be ':password' or 'user:password'");
    if (colon > s) {
        u->user = sl_url_pct_decode(s, (size_t)(colon - s), &bad);
        if (!u->user)
            return bad ? sl_err(err, SLUICE_EINVAL, "redis URL: bad byte or escape in the user")
                       : url_nomem(err);
    }
    n -= (size_t)(colon + 1 - s);
    if (n == 0)
        return sl_err(err, SLUICE_EINVAL, "redis URL: empty password in the userinfo");
    u->password = sl_url_pct_decode(colon + 1, n, &bad);
    if (!u->password)
        return bad ? sl_err(err, SLUICE_EINVAL, "redis URL: bad byte or escape in the password")
                   : url_nomem(err);
    return 0;
}

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';   /* '_': container service names */
}

static int v6_char(char c)
{
    return sl_ascii_hexval((unsigned char)c) >= 0 || c == ':' || c == '.';
}

/* host[:port] or [v6][:port]; no port: default_port. */
static int parse_hostport(const char *s, size_t n, int default_port, sl_redis_url *u,
                          sluice_error *err)
{
    const char *h = s, *end = s + n, *p;
    size_t hl;
    int v6 = n > 0 && s[0] == '[';

    if (v6) {
        const char *close = memchr(s, ']', n);
        if (!close)
            return sl_err(err, SLUICE_EINVAL, "redis URL: IPv6 host lacks its ']'");
        h = s + 1;
        hl = (size_t)(close - h);
        p = close + 1;
        if (p < end && *p != ':')
            return sl_err(err, SLUICE_EINVAL, "redis URL: junk after the IPv6 host");
    } else {
        p = memchr(s, ':', n);
        if (!p)
            p = end;
        hl = (size_t)(p - s);
    }
    if (hl == 0 || hl > 253)
        return sl_err(err, SLUICE_EINVAL, "redis URL: the host is empty or too long");
    for (size_t i = 0; i < hl; i++)
        if (!(v6 ? v6_char(h[i]) : host_char(h[i])))
            return sl_err(err, SLUICE_EINVAL, "redis URL: invalid character in the host");
    u->host = sl_strndup(h, hl);
    if (!u->host)
        return url_nomem(err);
    u->port = default_port;
    if (p < end) {
        long port = sl_ascii_decimal(p + 1, (size_t)(end - p - 1), 1, 65535);
        if (port < 0)
            return sl_err(err, SLUICE_EINVAL, "redis URL: the port must be 1..65535");
        u->port = (int)port;
    }
    return 0;
}

/* redis://[userinfo@]host[:port][/db] */
static int parse_tcp(const char *s, sl_redis_url *u, sluice_error *err)
{
    size_t alen = strcspn(s, "/?#");
    const char *at = NULL, *rest = s + alen;
    int rc;

    for (size_t i = 0; i < alen; i++)
        if (s[i] == '@')
            at = s + i;
    if (at && (rc = parse_userinfo(s, (size_t)(at - s), u, err)))
        return rc;
    rc = parse_hostport(at ? at + 1 : s, at ? (size_t)(rest - at - 1) : alen, DEFAULT_PORT, u,
                        err);
    if (rc)
        return rc;
    if (*rest == '/' && rest[1]) {
        long db = sl_ascii_decimal(rest + 1, strlen(rest + 1), 0, INT_MAX);
        if (db < 0)
            return sl_err(err, SLUICE_EINVAL, "redis URL: the db must be a number 0..%d",
                          INT_MAX);
        u->db = (int)db;
    } else if (*rest && strcmp(rest, "/") != 0) {
        return sl_err(err, SLUICE_EINVAL, "redis URL: no query or fragment is accepted");
    }
    return 0;
}

/* unix://[userinfo@]/path[?db=N] */
static int parse_unix(const char *s, sl_redis_url *u, sluice_error *err)
{
    const char *path = s, *q;
    size_t plen;
    int rc;

    if (*s != '/') {
        const char *at = strchr(s, '@');
        const char *slash = strchr(s, '/');
        if (!at || (slash && slash < at))
            return sl_err(err, SLUICE_EINVAL, "redis URL: a unix socket path must be absolute");
        if ((rc = parse_userinfo(s, (size_t)(at - s), u, err)))
            return rc;
        path = at + 1;
    }
    q = strchr(path, '?');
    plen = q ? (size_t)(q - path) : strlen(path);
    if (plen < 2 || path[0] != '/' || plen >= 108)
        return sl_err(err, SLUICE_EINVAL,
                      "redis URL: a unix socket path must be absolute and under 108 bytes");
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f || path[i] == '#')
            return sl_err(err, SLUICE_EINVAL, "redis URL: invalid character in the path");
    if (q) {
        long db = strncmp(q, "?db=", 4) == 0
                      ? sl_ascii_decimal(q + 4, strlen(q + 4), 0, INT_MAX)
                      : -1;
        if (db < 0)
            return sl_err(err, SLUICE_EINVAL, "redis URL: the only query accepted is ?db=N");
        u->db = (int)db;
    }
    u->path = sl_strndup(path, plen);
    return u->path ? 0 : url_nomem(err);
}

/* The masked URL and the short "where" for messages. */
static int describe(sl_redis_url *u)
{
    sl_buf d = SL_BUF_INIT, w = SL_BUF_INIT;
    int v6 = u->host && strchr(u->host, ':') != NULL;

    sl_buf_puts(&d, u->path ? "unix://" : "redis://");
    if (u->password)
        sl_buf_printf(&d, "%s:***@", u->user ? u->user : "");
    if (u->path) {
        sl_buf_puts(&w, u->path);
        sl_buf_puts(&d, u->path);
        if (u->db)
            sl_buf_printf(&d, "?db=%d", u->db);
    } else {
        sl_buf_printf(&w, v6 ? "[%s]:%d" : "%s:%d", u->host, u->port);
        sl_buf_printf(&d, "%s", w.data ? w.data : "");
        if (u->db)
            sl_buf_printf(&d, "/%d", u->db);
    }
    if (d.failed || w.failed) {
        sl_buf_free(&d);
        sl_buf_free(&w);
        return SLUICE_ENOMEM;
    }
    u->display = sl_buf_detach(&d, NULL);
    u->where = sl_buf_detach(&w, NULL);
    return 0;
}

int sl_redis_url_parse(const char *s, sl_redis_url *u, sluice_error *err)
{
    int rc;

    memset(u, 0, sizeof *u);
    if (!s)
        return sl_err(err, SLUICE_EINVAL, "redis URL: NULL");
    if (strncasecmp(s, "redis://", 8) == 0)
        rc = parse_tcp(s + 8, u, err);
    else if (strncasecmp(s, "unix://", 7) == 0)
        rc = parse_unix(s + 7, u, err);
    else if (strncasecmp(s, "rediss://", 9) == 0)
        rc = sl_err(err, SLUICE_EINVAL, "redis URL: rediss:// (TLS) is not supported by hiredis 0.14");
    else
        rc = sl_err(err, SLUICE_EINVAL,
                    "redis URL: the scheme must be redis://, unix:// or (for the limiter) "
                    "redis+sentinel://");
    if (rc == 0 && describe(u) != 0)
        rc = url_nomem(err);
    if (rc)
        sl_redis_url_free(u);
    return rc;
}

void sl_redis_url_free(sl_redis_url *u)
{
    if (!u)
        return;
    sl_free(u->host);
    sl_free(u->path);
    sl_free(u->user);
    if (u->password) {
        /* Do not leave the secret in freed memory. */
        volatile char *p = u->password;
        while (*p)
            *p++ = 0;
        sl_free(u->password);
    }
    sl_free(u->display);
    sl_free(u->where);
    memset(u, 0, sizeof *u);
}

/* --- Redis Cluster seed lists ---------------------------------------------- */

void sl_redis_cluster_url_free(sl_redis_url *seeds, size_t n)
{
    size_t i;

    for (i = 0; seeds && i < n; i++)
        sl_redis_url_free(&seeds[i]);
    sl_free(seeds);
}

/* One seed: the credentials copied from `cred` (when not NULL), then
 * host[:port]. */
static int parse_seed(const char *s, size_t n, int default_port, const sl_redis_url *cred,
                      sl_redis_url *u, sluice_error *err)
{
    int rc;

    memset(u, 0, sizeof *u);
    if (cred && ((cred->user && !(u->user = sl_strdup(cred->user))) ||
                 (cred->password && !(u->password = sl_strdup(cred->password)))))
        return url_nomem(err);
    if ((rc = parse_hostport(s, n, default_port, u, err)))
        return rc;
    return describe(u) != 0 ? url_nomem(err) : 0;
}

/* The comma-separated "host[:port]" list in [p, end): one sl_redis_url per
 * seed, each with cred's credentials when cred is not NULL.  Shared by the
 * cluster's and the sentinels' URLs. */
static int parse_seed_list(const char *p, const char *end, int default_port,
                           const sl_redis_url *cred, sl_redis_url **out, size_t *nout,
                           sluice_error *err)
{
    sl_redis_url *seeds;
    size_t n = 1, i;
    int rc;

    for (i = 0; p + i < end; i++)
        n += p[i] == ',';
    if (n > SL_REDIS_MAX_SEEDS)
        return sl_err(err, SLUICE_EINVAL, "redis URL: more than %d seed nodes", SL_REDIS_MAX_SEEDS);
    if (!(seeds = sl_calloc(n, sizeof *seeds)))
        return url_nomem(err);
    for (i = 0; i < n; i++) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;

        if ((rc = parse_seed(p, (size_t)(stop - p), default_port, cred, &seeds[i], err))) {
            sl_redis_cluster_url_free(seeds, n);
            return rc;
        }
        p = stop + 1;
    }
    *out = seeds;
    *nout = n;
    return 0;
}

/* The part after the authority: nothing, "/" or "/0". */
static int cluster_tail(const char *rest, sluice_error *err)
{
    if (*rest == '\0' || strcmp(rest, "/") == 0 || strcmp(rest, "/0") == 0)
        return 0;
    if (*rest == '/' && sl_ascii_decimal(rest + 1, strlen(rest + 1), 0, INT_MAX) > 0)
        return sl_err(err, SLUICE_EINVAL, "redis URL: Redis Cluster has only db 0");
    return sl_err(err, SLUICE_EINVAL, "redis URL: a cluster URL takes no path, query or fragment");
}

/* Splits "[userinfo@]hostlist" at p (up to the first '/', '?' or '#'):
 * the credentials into *cred, the host list's bounds into *list, *rest. */
static int split_authority(const char *p, sl_redis_url *cred, const char **list,
                           const char **rest, sluice_error *err)
{
    size_t alen = strcspn(p, "/?#"), i;
    const char *at = NULL;
    int rc;

    for (i = 0; i < alen; i++)
        if (p[i] == '@')
            at = p + i;
    *rest = p + alen;
    *list = at ? at + 1 : p;
    if (at && (rc = parse_userinfo(p, (size_t)(at - p), cred, err)))
        return rc;
    return 0;
}

int sl_redis_cluster_url_parse(const char *s, sl_redis_url **out, size_t *nout,
                               sluice_error *err)
{
    sl_redis_url cred;
    const char *list, *rest;
    int rc;

    *out = NULL;
    *nout = 0;
    memset(&cred, 0, sizeof cred);
    if (!s || strncasecmp(s, "redis+cluster://", 16) != 0)
        return sl_err(err, SLUICE_EINVAL, "redis URL: the scheme must be redis+cluster://");
    if ((rc = split_authority(s + 16, &cred, &list, &rest, err)) == 0 &&
        (rc = cluster_tail(rest, err)) == 0)
        rc = parse_seed_list(list, rest, DEFAULT_PORT, &cred, out, nout, err);
    sl_redis_url_free(&cred);
    return rc;
}

/* --- Redis Sentinel ------------------------------------------------------------ */

/* "/<master>[/db]" after the sentinel list: the name into u->master, the
 * db into u->auth.db. */
static int sentinel_tail(const char *rest, sl_redis_sentinel_url *u, sluice_error *err)
{
    const char *name, *slash;
    size_t nlen, i;

    if (rest[strcspn(rest, "?#")])
        return sl_err(err, SLUICE_EINVAL,
                      "redis URL: a sentinel URL takes no query or fragment");
    if (*rest != '/' || rest[1] == '\0' || rest[1] == '/')
        return sl_err(err, SLUICE_EINVAL,
                      "redis URL: a sentinel URL needs the master name: /<master>[/db]");
    name = rest + 1;
    slash = strchr(name, '/');
    nlen = slash ? (size_t)(slash - name) : strlen(name);
    if (nlen > MAX_MASTER_NAME)
        return sl_err(err, SLUICE_EINVAL, "redis URL: the master name is longer than %d bytes",
                      MAX_MASTER_NAME);
    for (i = 0; i < nlen; i++)
        if (!host_char(name[i]))
            return sl_err(err, SLUICE_EINVAL,
                          "redis URL: invalid character in the master name "
                          "(letters, digits, '-', '.', '_')");
    if (slash && slash[1]) {
        long db = sl_ascii_decimal(slash + 1, strlen(slash + 1), 0, INT_MAX);
        if (db < 0)
            return sl_err(err, SLUICE_EINVAL, "redis URL: the db must be a number 0..%d",
                          INT_MAX);
        u->auth.db = (int)db;
    }
    u->master = sl_strndup(name, nlen);
    return u->master ? 0 : url_nomem(err);
}

/* For messages: "redis+sentinel://[user:***@]h:p,.../master[/db]" and
 * "master 'NAME'". */
static int describe_sentinel(sl_redis_sentinel_url *u)
{
    sl_buf d = SL_BUF_INIT, w = SL_BUF_INIT;
    size_t i;

    sl_buf_puts(&d, "redis+sentinel://");
    if (u->auth.password)
        sl_buf_printf(&d, "%s:***@", u->auth.user ? u->auth.user : "");
    for (i = 0; i < u->n; i++)
        sl_buf_printf(&d, "%s%s", i ? "," : "", u->sentinels[i].where);
    sl_buf_printf(&d, "/%s", u->master);
    if (u->auth.db)
        sl_buf_printf(&d, "/%d", u->auth.db);
    sl_buf_printf(&w, "master '%s'", u->master);
    if (d.failed || w.failed) {
        sl_buf_free(&d);
        sl_buf_free(&w);
        return SLUICE_ENOMEM;
    }
    u->auth.display = sl_buf_detach(&d, NULL);
    u->auth.where = sl_buf_detach(&w, NULL);
    return 0;
}

int sl_redis_sentinel_url_parse(const char *s, sl_redis_sentinel_url *u, sluice_error *err)
{
    const char *list, *rest;
    int rc;

    memset(u, 0, sizeof *u);
    if (!s || strncasecmp(s, "redis+sentinel://", 17) != 0)
        return sl_err(err, SLUICE_EINVAL, "redis URL: the scheme must be redis+sentinel://");
    /* The credentials are the master's: the sentinels get none. */
    if ((rc = split_authority(s + 17, &u->auth, &list, &rest, err)) == 0 &&
        (rc = sentinel_tail(rest, u, err)) == 0 &&
        (rc = parse_seed_list(list, rest, SENTINEL_DEFAULT_PORT, NULL, &u->sentinels, &u->n,
                              err)) == 0 &&
        describe_sentinel(u) != 0)
        rc = url_nomem(err);
    if (rc)
        sl_redis_sentinel_url_free(u);
    return rc;
}

void sl_redis_sentinel_url_free(sl_redis_sentinel_url *u)
{
    if (!u)
        return;
    sl_redis_cluster_url_free(u->sentinels, u->n);
    sl_free(u->master);
    sl_redis_url_free(&u->auth);
    memset(u, 0, sizeof *u);
}

int sl_redis_url_at(const sl_redis_url *cred, const char *host, int port, sl_redis_url *u,
                    sluice_error *err)
{
    size_t hl = host ? strlen(host) : 0, i;
    int v6 = host && strchr(host, ':') != NULL;

    memset(u, 0, sizeof *u);
    if (hl == 0 || hl > 253 || port < 1 || port > 65535)
        return sl_err(err, SLUICE_EINVAL, "redis address: bad host or port");
    for (i = 0; i < hl; i++)
        if (!(v6 ? v6_char(host[i]) : host_char(host[i])))
            return sl_err(err, SLUICE_EINVAL, "redis address: invalid character in the host");
    if (!(u->host = sl_strdup(host)) ||
        (cred->user && !(u->user = sl_strdup(cred->user))) ||
        (cred->password && !(u->password = sl_strdup(cred->password))))
        goto nomem;
    u->port = port;
    u->db = cred->db;
    if (describe(u) != 0)
        goto nomem;
    return 0;
nomem:
    sl_redis_url_free(u);
    return url_nomem(err);
}
