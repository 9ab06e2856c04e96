/* The Redis backend: URL parsing, pooled hiredis connections, the GCRA
 * script and the batcher that lets concurrent decisions share a round
 * trip. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "alloc.h"
#include "buf.h"
#include "clock.h"
#include "error.h"
#include "limiter.h"
#include "log.h"

#define DEFAULT_PORT 6379
#define MAX_BATCH 256
#define NUM_MAX 32                /* bytes one formatted number may take */
#define SOCKET_TIMEOUT_SLACK_MS 2 /* a set socket timeout this close is kept */

/* The GCRA script; see limiter.h for the arithmetic, which it repeats
 * operation for operation (sl_gcra_eval).  TATs are microseconds since
 * 2020-01-01 (small enough for exact doubles), stored with %.17g so they
 * read back bit for bit.  A key that is not a number (or not a string) is
 * treated as absent and overwritten. */
const char sl_redis_script[] =
    "local tol, epoch = 0.5, 1577836800\n"
    "local n = #KEYS\n"
    "if #ARGV ~= n * 6 then\n"
    "  return redis.error_reply('ERR sluice gcra: 6 arguments per key expected')\n"
    "end\n"
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local function ceil_ms(us)\n"
    "  local v = math.ceil((us - tol) / 1000)\n"
    "  if v > 0 then return v end\n"
    "  return 0\n"
    "end\n"
    "local out = {}\n"
    "local function admit(t, boff, tat, now, cost)\n"
    "  local new_tat = tat + t * cost\n"
    "  local diff = now - (new_tat - boff)\n"
    "  local k = #out\n"
    "  if diff < -tol then\n"
    "    out[k + 1], out[k + 2], out[k + 3], out[k + 4] = 0, 0, ceil_ms(-diff), ceil_ms(tat - now)\n"
    "    return nil\n"
    "  end\n"
    "  out[k + 1], out[k + 2] = 1, math.floor((diff + tol) / t)\n"
    "  out[k + 3], out[k + 4] = -1, ceil_ms(new_tat - now)\n"
    "  return new_tat\n"
    "end\n"
    "local clock\n"
    "for i = 1, n do\n"
    "  local a = (i - 1) * 6\n"
    "  local op, rate = ARGV[a + 1], tonumber(ARGV[a + 2])\n"
    "  local period, burst = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])\n"
    "  local arg, now = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])\n"
    "  if now < 0 then\n"
    "    if not clock then\n"
    "      local tm = redis.call('TIME')\n"
    "      clock = (tonumber(tm[1]) - epoch) * 1000000 + tonumber(tm[2])\n"
    "    end\n"
    "    now = clock\n"
    "  end\n"
    "  local t = period * 1000 / rate\n"
    "  local boff = t * burst\n"
    "  local tat = tonumber(redis.pcall('GET', KEYS[i]))\n"
    "  if not tat or tat < now then tat = now end\n"
    "  local store\n"
    "  if op == 'c' then\n"
    "    store = admit(t, boff, tat, now, arg)\n"
    "  elseif op == 'p' then\n"
    "    admit(t, boff, tat, now, 1)\n"
    "  elseif op == 'd' then\n"
    "    local want = now + arg * 1000 + t * (burst - 1)\n"
    "    if want > tat then tat = want; store = tat end\n"
    "    admit(t, boff, tat, now, 1)\n"
    "  else\n"
    "    return redis.error_reply('ERR sluice gcra: unknown op')\n"
    "  end\n"
    "  if store then\n"
    "    redis.call('SET', KEYS[i], string.format('%.17g', store), 'PX',\n"
    "               math.max(1, ceil_ms(store - now)))\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ------------------------------------------------------------------------ */
/* URL parsing                                                              */
/* ------------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; NULL with *bad set for a bad
 * escape, a NUL, a raw control byte or space, or with *bad clear on ENOMEM. */
static char *pct_decode(const char *s, size_t n, int *bad)
{
    char *out = sl_malloc(n + 1), *o = out;
    size_t i;

    *bad = 0;
    if (!out)
        return NULL;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
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
        u->user = pct_decode(s, (size_t)(colon - s), &bad);
        if (!u->user)
            return bad ? sl_err(err, SLUICE_EINVAL, "redis URL: bad byte or escape in the user")
                       : url_nomem(err);
    }
    n -= (size_t)(colon + 1 - s);
    if (n == 0)
        return sl_err(err, SLUICE_EINVAL, "redis URL: empty password in the userinfo");
    u->password = pct_decode(colon + 1, n, &bad);
    if (!u->password)
        return bad ? sl_err(err, SLUICE_EINVAL, "redis URL: bad byte or escape in the password")
                   : url_nomem(err);
    return 0;
}

/* Decimal digits only, value in [min, max]; -1 otherwise. */
static long parse_num(const char *s, size_t n, long min, long max)
{
    long v = 0;
    size_t i;

    if (n == 0 || n > 10)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= min && v <= max ? v : -1;
}

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';   /* '_': container service names */
}

static int v6_char(char c)
{
    return hexval(c) >= 0 || c == ':' || c == '.';
}

/* host[:port] or [v6][:port]. */
static int parse_hostport(const char *s, size_t n, sl_redis_url *u, sluice_error *err)
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
    u->port = DEFAULT_PORT;
    if (p < end) {
        long port = parse_num(p + 1, (size_t)(end - p - 1), 1, 65535);
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
    rc = parse_hostport(at ? at + 1 : s, at ? (size_t)(rest - at - 1) : alen, u, err);
    if (rc)
        return rc;
    if (*rest == '/' && rest[1]) {
        long db = parse_num(rest + 1, strlen(rest + 1), 0, INT_MAX);
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
        long db = strncmp(q, "?db=", 4) == 0 ? parse_num(q + 4, strlen(q + 4), 0, INT_MAX) : -1;
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
        rc = sl_err(err, SLUICE_EINVAL, "redis URL: the scheme must be redis:// or unix://");
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

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

/* One pooled connection with the scratch space its round trips need (a
 * connection is used by one leader at a time, so the scratch is too). */
typedef struct rconn {
    redisContext *c;
    int timeout_ms;              /* the socket timeouts currently set */
    const char **argv;
    size_t *argvlen;
    size_t argcap;
    sl_buf nums;                 /* formatted numbers argv points into */
    sluice_limit_result *res;    /* decoded results, argcap / 7 of them */
} rconn;

typedef enum wstate { W_QUEUED, W_TAKEN, W_DONE } wstate;

/* A decision waiting for its batch.  Lives on the caller's stack; the
 * caller leaves only when it is DONE, or while still QUEUED (it unlinks
 * itself), so a leader never touches a waiter that is gone. */
typedef struct waiter {
    struct waiter *next;
    const sl_lim_req *rq;
    sluice_limit_result r;
    sluice_error e;
    int code;
    int64_t deadline;
    wstate state;
    pthread_cond_t cond;
} waiter;

struct sl_redis {
    sl_redis_url url;
    sl_redis_cfg cfg;
    sluice_pool *pool;
    pthread_condattr_t condattr;  /* CLOCK_MONOTONIC */

    pthread_mutex_t mu;           /* guards everything below */
    waiter *head, *tail;          /* queued decisions, arrival order */
    int inflight;                 /* leaders with a round trip under way */
    char sha[41];                 /* the script's SHA1 once loaded, else "" */

    _Atomic uint64_t round_trips, errors;
};

/* The pool's create() runs on the thread that called sluice_pool_get, which
 * tells it its deadline and where its error goes through these. */
static _Thread_local int64_t tl_deadline;
static _Thread_local sluice_error *tl_err;
static _Thread_local int tl_refused;

static struct timeval tv_until(int64_t deadline)
{
    int ms = sl_ms_left(deadline);
    struct timeval tv;

    if (ms <= 0)
        ms = 1;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* hiredis writes with write(): a peer that closed would raise SIGPIPE and
 * kill a program that did not ignore it.  Block it in this thread for the
 * duration of the I/O and swallow one we caused. */
typedef struct sigpipe_guard {
    sigset_t old;
    int blocked;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    g->blocked = pthread_sigmask(SIG_BLOCK, &set, &g->old) == 0 && !sigismember(&g->old, SIGPIPE);
}

static void sigpipe_restore(sigpipe_guard *g, int io_failed)
{
    sigset_t set, pending;
    struct timespec zero = {0, 0};

    if (!g->blocked)
        return;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (io_failed && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static redisReply *command(redisContext *c, int argc, const char **argv, const size_t *lens)
{
    sigpipe_guard g;
    redisReply *reply;

    sigpipe_block(&g);
    reply = redisCommandArgv(c, argc, argv, lens);
    sigpipe_restore(&g, reply == NULL);
    return reply;
}

/* Copies a reply's text for a message: bounded, control bytes replaced. */
static void reply_text(const redisReply *r, char *buf, size_t cap)
{
    size_t n = 0, i;

    if (r && r->str)
        for (i = 0; i < r->len && n + 1 < cap; i++) {
            unsigned char c = (unsigned char)r->str[i];
            buf[n++] = c < 0x20 || c > 0x7e ? '?' : (char)c;
        }
    buf[n] = '\0';
}

/* Replaces each occurrence of `secret` in msg by "***": a server's error
 * text must never carry the password into a message or a log line. */
static void scrub(char *msg, size_t cap, const char *secret)
{
    size_t sl = secret ? strlen(secret) : 0, o = 0;
    char out[256];
    const char *p = msg;

    if (sl == 0 || cap > sizeof out)
        return;
    while (*p && o + 1 < cap) {
        if (strncmp(p, secret, sl) == 0) {
            size_t k;
            for (k = 0; k < 3 && o + 1 < cap; k++)
                out[o++] = '*';
            p += sl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    memcpy(msg, out, o + 1);
}

static int set_timeout(rconn *cn, int64_t deadline)
{
    int ms = sl_ms_left(deadline);

    if (ms <= 0)
        ms = 1;
    if (cn->timeout_ms && abs(ms - cn->timeout_ms) <= SOCKET_TIMEOUT_SLACK_MS)
        return 0;
    if (redisSetTimeout(cn->c, tv_until(deadline)) != REDIS_OK)
        return -1;
    cn->timeout_ms = ms;
    return 0;
}

static void rconn_free(rconn *cn)
{
    if (!cn)
        return;
    if (cn->c)
        redisFree(cn->c);
    sl_free(cn->argv);
    sl_free(cn->argvlen);
    sl_free(cn->res);
    sl_buf_free(&cn->nums);
    sl_free(cn);
}

/* Runs one setup command (AUTH, SELECT, SCRIPT LOAD).  A refusal by Redis
 * sets tl_refused: the credentials or the db are wrong, not the network. */
static int setup_command(sl_redis *rd, rconn *cn, int argc, const char **argv,
                         const char *what, redisReply **out, sluice_error *err)
{
    size_t lens[3];
    redisReply *r;
    char text[128];
    int i;

    for (i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    r = command(cn->c, argc, argv, lens);
    if (!r)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: %s failed: %s", rd->url.where, what,
                      cn->c->errstr);
    if (r->type == REDIS_REPLY_ERROR) {
        reply_text(r, text, sizeof text);
        scrub(text, sizeof text, rd->url.password);
        freeReplyObject(r);
        tl_refused = 1;
        return sl_err(err, SLUICE_ELIMITER, "%s failed for %s: %s", what, rd->url.display, text);
    }
    if (out)
        *out = r;
    else
        freeReplyObject(r);
    return 0;
}

static int load_script(sl_redis *rd, rconn *cn, sluice_error *err)
{
    const char *argv[] = {"SCRIPT", "LOAD", sl_redis_script};
    redisReply *r = NULL;
    int rc = setup_command(rd, cn, 3, argv, "SCRIPT LOAD", &r, err);

    if (rc)
        return rc;
    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        freeReplyObject(r);
        return sl_err(err, SLUICE_ELIMITER, "redis %s: SCRIPT LOAD gave no SHA1", rd->url.where);
    }
    pthread_mutex_lock(&rd->mu);
    memcpy(rd->sha, r->str, 40);
    rd->sha[40] = '\0';
    pthread_mutex_unlock(&rd->mu);
    freeReplyObject(r);
    return 0;
}

/* Connects, authenticates, selects the db and, the first time, loads the
 * script, all before `deadline`. */
static int connect_redis(sl_redis *rd, int64_t deadline, rconn **out, sluice_error *err)
{
    rconn *cn = sl_calloc(1, sizeof *cn);
    char db[16];
    int rc = 0, have_sha;

    if (!cn)
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory", rd->url.where);
    cn->c = rd->url.path ? redisConnectUnixWithTimeout(rd->url.path, tv_until(deadline))
                         : redisConnectWithTimeout(rd->url.host, rd->url.port, tv_until(deadline));
    if (!cn->c) {
        rc = sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory connecting", rd->url.where);
    } else if (cn->c->err) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot connect: %s", rd->url.where,
                    cn->c->errstr);
    } else if (set_timeout(cn, deadline) != 0) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts",
                    rd->url.where);
    } else if (rd->url.password) {
        const char *a2[] = {"AUTH", rd->url.password};
        const char *a3[] = {"AUTH", rd->url.user ? rd->url.user : "", rd->url.password};
        rc = rd->url.user ? setup_command(rd, cn, 3, a3, "AUTH", NULL, err)
                          : setup_command(rd, cn, 2, a2, "AUTH", NULL, err);
    }
    if (rc == 0 && rd->url.db) {
        const char *argv[] = {"SELECT", db};
        snprintf(db, sizeof db, "%d", rd->url.db);
        rc = setup_command(rd, cn, 2, argv, "SELECT", NULL, err);
    }
    pthread_mutex_lock(&rd->mu);
    have_sha = rd->sha[0] != '\0';
    pthread_mutex_unlock(&rd->mu);
    if (rc == 0 && !have_sha)
        rc = load_script(rd, cn, err);
    if (rc) {
        rconn_free(cn);
        return rc;
    }
    *out = cn;
    return 0;
}

static int pool_create(void *ctx, void **res, sluice_error *err)
{
    sl_redis *rd = ctx;
    int64_t deadline = tl_deadline ? tl_deadline : sl_deadline_in_ms(rd->cfg.timeout_ms);
    rconn *cn = NULL;
    int rc = connect_redis(rd, deadline, &cn, tl_err ? tl_err : err);

    if (rc && err && tl_err)
        sl_err_copy(err, tl_err);
    *res = cn;
    return rc;
}

static void pool_destroy(void *ctx, void *res)
{
    (void)ctx;
    rconn_free(res);
}

/* An idle connection has nothing to read; readable means the server closed
 * it (or sent something unasked), so it must not be reused. */
static int pool_alive(void *ctx, void *res)
{
    rconn *cn = res;
    struct pollfd p = {cn->c->fd, POLLIN, 0};

    (void)ctx;
    return poll(&p, 1, 0) == 0;
}

static const sluice_pool_ops pool_ops = {pool_create, pool_destroy, pool_alive};

/* Checks a connection out before `deadline`; err says why not. */
static int get_conn(sl_redis *rd, int64_t deadline, rconn **out, int *refused, sluice_error *err)
{
    sluice_error e;
    void *res = NULL;
    int rc, ms = sl_ms_left(deadline);

    sl_err_clear(&e);
    tl_deadline = deadline;
    tl_err = &e;
    tl_refused = 0;
    rc = sluice_pool_get(rd->pool, ms > 0 ? ms : 1, &res);
    tl_deadline = 0;
    tl_err = NULL;
    if (refused)
        *refused = tl_refused;
    if (rc == 0) {
        *out = res;
        return 0;
    }
    if (e.code)
        sl_err_copy(err, &e);
    else if (rc == SLUICE_EPOOLTIMEOUT)
        sl_err(err, SLUICE_ELIMITER, "redis %s: no connection free before the deadline",
               rd->url.where);
    else if (rc == SLUICE_ENOMEM)
        sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory checking out a connection",
               rd->url.where);
    else
        sl_err(err, SLUICE_ELIMITER, "redis %s: cannot connect (%s)", rd->url.where,
               sluice_strerror(rc));
    atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
    return rc == SLUICE_ENOMEM ? rc : SLUICE_ELIMITER;
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */
/* ------------------------------------------------------------------------ */

/* Makes room for a batch of n: argv, lengths, results and number text. */
static int reserve_scratch(rconn *cn, size_t n)
{
    size_t argc = 3 + n * (1 + SL_REDIS_ARGS_PER_DECISION);

    if (argc > cn->argcap) {
        size_t cap = argc * 2;
        const char **argv = sl_realloc(cn->argv, cap * sizeof *argv);
        size_t *lens;
        sluice_limit_result *res;

        if (!argv)
            return SLUICE_ENOMEM;
        cn->argv = argv;
        lens = sl_realloc(cn->argvlen, cap * sizeof *lens);
        if (!lens)
            return SLUICE_ENOMEM;
        cn->argvlen = lens;
        res = sl_realloc(cn->res, cap / (1 + SL_REDIS_ARGS_PER_DECISION) * sizeof *res);
        if (!res)
            return SLUICE_ENOMEM;
        cn->res = res;
        cn->argcap = cap;
    }
    sl_buf_reset(&cn->nums);
    /* Reserved once, so the pointers argv keeps into it stay valid. */
    return sl_buf_reserve(&cn->nums, (n * SL_REDIS_ARGS_PER_DECISION + 1) * NUM_MAX);
}

static const char *fmt_num(sl_buf *b, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const char *fmt_num(sl_buf *b, size_t *len, const char *fmt, ...)
{
    char *p = b->data + b->len;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(p, NUM_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= NUM_MAX)
        n = 0;      /* cannot happen for the formats used */
    b->len += (size_t)n + 1;
    *len = (size_t)n;
    return p;
}

/* EVALSHA sha n key1..keyn, then the fields of each decision. */
static int build_evalsha(rconn *cn, const char *sha, waiter **batch, size_t n)
{
    static const char *const ops[] = {"c", "p", "d"};
    const char **av;
    size_t *al, a = 0, i;

    if (reserve_scratch(cn, n))
        return SLUICE_ENOMEM;
    av = cn->argv;
    al = cn->argvlen;
    av[a] = "EVALSHA", al[a++] = 7;
    av[a] = sha, al[a++] = 40;
    av[a] = fmt_num(&cn->nums, &al[a], "%zu", n), a++;
    for (i = 0; i < n; i++)
        av[a] = batch[i]->rq->key, al[a++] = batch[i]->rq->key_len;
    for (i = 0; i < n; i++) {
        const sl_lim_req *rq = batch[i]->rq;
        av[a] = ops[rq->op], al[a++] = 1;
        av[a] = fmt_num(&cn->nums, &al[a], "%.17g", rq->lim.rate), a++;
        av[a] = fmt_num(&cn->nums, &al[a], "%d", rq->lim.period_ms), a++;
        av[a] = fmt_num(&cn->nums, &al[a], "%d", rq->lim.burst), a++;
        av[a] = fmt_num(&cn->nums, &al[a], "%d", rq->op == SL_LIM_PEEK ? 1 : rq->arg), a++;
        av[a] = fmt_num(&cn->nums, &al[a], "%lld", (long long)rq->now_us), a++;
    }
    return (int)a;
}

static int io_error(sl_redis *rd, rconn *cn, sluice_error *err)
{
    const redisContext *c = cn->c;

    if (c->err == REDIS_ERR_EOF)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: connection closed by the server",
                      rd->url.where);
    if (c->err == REDIS_ERR_IO && strstr(c->errstr, "temporarily unavailable"))
        return sl_err(err, SLUICE_ELIMITER, "redis %s: no reply within %d ms", rd->url.where,
                      cn->timeout_ms);
    return sl_err(err, SLUICE_ELIMITER, "redis %s: %s", rd->url.where, c->errstr);
}

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str && r->len >= 8 &&
           memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* One EVALSHA for the batch; after NOSCRIPT (a SCRIPT FLUSH, a restarted
 * or failed-over server) loads the script and tries once more.  Results go
 * to cn->res. */
static int round_trip(sl_redis *rd, rconn *cn, waiter **batch, size_t n, int64_t deadline,
                      sluice_error *err)
{
    char sha[41];
    int attempt, argc, rc;

    for (attempt = 0; attempt < 2; attempt++) {
        redisReply *reply;

        pthread_mutex_lock(&rd->mu);
        memcpy(sha, rd->sha, sizeof sha);
        pthread_mutex_unlock(&rd->mu);
        if (set_timeout(cn, deadline) != 0)
            return sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts",
                          rd->url.where);
        if (!sha[0]) {
            if ((rc = load_script(rd, cn, err)))
                return rc;
            continue;
        }
        argc = build_evalsha(cn, sha, batch, n);
        if (argc < 0)
            return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory for a batch of %zu",
                          rd->url.where, n);
        reply = command(cn->c, argc, cn->argv, cn->argvlen);
        atomic_fetch_add_explicit(&rd->round_trips, 1, memory_order_relaxed);
        if (!reply)
            return io_error(rd, cn, err);
        if (attempt == 0 && is_noscript(reply)) {
            freeReplyObject(reply);
            if ((rc = load_script(rd, cn, err)))
                return rc;
            continue;
        }
        rc = sl_redis_decode_reply(reply, n, cn->res, rd->url.where, err);
        freeReplyObject(reply);
        return rc;
    }
    return sl_err(err, SLUICE_ELIMITER, "redis %s: the script is missing after SCRIPT LOAD",
                  rd->url.where);
}

/* ------------------------------------------------------------------------ */
/* The batcher                                                              */
/* ------------------------------------------------------------------------ */

/* Lock held. */
static void finish(waiter *w, int code, const sluice_error *e)
{
    w->code = code;
    if (code)
        sl_err_copy(&w->e, e);
    w->state = W_DONE;
    pthread_cond_signal(&w->cond);
}

/* Lock held: wakes the head of the queue to lead when a slot is free. */
static void hand_off(sl_redis *rd)
{
    if (rd->head && rd->inflight < rd->cfg.max_inflight)
        pthread_cond_signal(&rd->head->cond);
}

static void unlink_waiter(sl_redis *rd, waiter *w)
{
    waiter **link = &rd->head, *prev = NULL;

    while (*link && *link != w) {
        prev = *link;
        link = &(*link)->next;
    }
    if (!*link)
        return;
    *link = w->next;
    if (rd->tail == w)
        rd->tail = prev;
}

/* Sends one batch: the queue's head, up to MAX_BATCH decisions.  Called
 * and returns with rd->mu held; drops it for the I/O.  A connection that
 * failed is discarded, and every decision still queued fails with the same
 * error at once instead of each waiting for its own timeout. */
static void lead(sl_redis *rd)
{
    waiter *batch[MAX_BATCH];
    int64_t deadline = SL_NO_DEADLINE;
    size_t n = 0, i;
    rconn *cn = NULL;
    sluice_error e;
    int rc, broken;

    while (rd->head && n < MAX_BATCH) {
        waiter *w = rd->head;
        rd->head = w->next;
        w->state = W_TAKEN;
        batch[n++] = w;
        deadline = sl_deadline_min(deadline, w->deadline);
    }
    if (!rd->head)
        rd->tail = NULL;
    rd->inflight++;
    pthread_mutex_unlock(&rd->mu);

    sl_err_clear(&e);
    rc = get_conn(rd, deadline, &cn, NULL, &e);
    broken = rc == SLUICE_ELIMITER;
    if (rc == 0) {
        rc = round_trip(rd, cn, batch, n, deadline, &e);
        broken = cn->c->err != 0;
        for (i = 0; rc == 0 && i < n; i++)
            batch[i]->r = cn->res[i];
        sluice_pool_put(rd->pool, cn, !broken);
        if (rc == SLUICE_ELIMITER)
            atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
    }

    pthread_mutex_lock(&rd->mu);
    rd->inflight--;
    for (i = 0; i < n; i++)
        finish(batch[i], rc, &e);
    while (broken && rd->head) {
        waiter *w = rd->head;
        rd->head = w->next;
        finish(w, rc, &e);
    }
    if (!rd->head)
        rd->tail = NULL;
    hand_off(rd);
}

int sl_redis_decide(sl_redis *rd, const sl_lim_req *rq, sluice_limit_result *r,
                    sluice_error *err)
{
    waiter w;

    w.next = NULL;
    w.rq = rq;
    w.code = 0;
    w.state = W_QUEUED;
    w.deadline = sl_deadline_in_ms(rd->cfg.timeout_ms);
    pthread_cond_init(&w.cond, &rd->condattr);

    pthread_mutex_lock(&rd->mu);
    if (rd->tail)
        rd->tail->next = &w;
    else
        rd->head = &w;
    rd->tail = &w;
    while (w.state != W_DONE) {
        struct timespec ts;

        if (w.state == W_QUEUED && rd->inflight < rd->cfg.max_inflight) {
            lead(rd);
            continue;
        }
        if (w.state == W_TAKEN) {
            /* The leader's I/O is bounded by the batch's earliest deadline. */
            pthread_cond_wait(&w.cond, &rd->mu);
            continue;
        }
        ts = sl_deadline_timespec(w.deadline);
        if (pthread_cond_timedwait(&w.cond, &rd->mu, &ts) == ETIMEDOUT && w.state == W_QUEUED) {
            unlink_waiter(rd, &w);
            hand_off(rd);
            w.code = sl_err(&w.e, SLUICE_ELIMITER,
                            "redis %s: no reply within %d ms (queued behind a slow round trip)",
                            rd->url.where, rd->cfg.timeout_ms);
            atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
            break;
        }
    }
    pthread_mutex_unlock(&rd->mu);
    pthread_cond_destroy(&w.cond);
    if (w.code)
        sl_err_copy(err, &w.e);
    else
        *r = w.r;
    return w.code;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

sl_redis *sl_redis_new(sl_redis_url *url, const sl_redis_cfg *cfg, int *reachable,
                       sluice_error *err)
{
    sl_redis *rd = sl_calloc(1, sizeof *rd);
    sluice_pool_opts po = {0};
    rconn *cn = NULL;
    int refused = 0, rc;

    *reachable = 0;
    if (!rd) {
        sl_redis_url_free(url);
        sl_err(err, SLUICE_ENOMEM, "redis: out of memory");
        return NULL;
    }
    rd->url = *url;
    memset(url, 0, sizeof *url);
    rd->cfg = *cfg;
    pthread_mutex_init(&rd->mu, NULL);
    pthread_condattr_init(&rd->condattr);
    pthread_condattr_setclock(&rd->condattr, CLOCK_MONOTONIC);
    po.max_size = cfg->pool_size;
    po.max_idle = cfg->pool_size;
    rd->pool = sluice_pool_new(&po, &pool_ops, rd, err);
    if (!rd->pool) {
        sl_redis_free(rd);
        return NULL;
    }
    rc = get_conn(rd, sl_deadline_in_ms(cfg->create_timeout_ms), &cn, &refused, err);
    if (rc == 0) {
        sluice_pool_put(rd->pool, cn, 1);
        *reachable = 1;
        sl_err_clear(err);
    } else if (refused || rc == SLUICE_ENOMEM) {
        sl_redis_free(rd);
        return NULL;
    }
    return rd;
}

void sl_redis_free(sl_redis *rd)
{
    if (!rd)
        return;
    sluice_pool_free(rd->pool);
    pthread_condattr_destroy(&rd->condattr);
    pthread_mutex_destroy(&rd->mu);
    sl_redis_url_free(&rd->url);
    sl_free(rd);
}

uint64_t sl_redis_round_trips(sl_redis *rd)
{
    return atomic_load_explicit(&rd->round_trips, memory_order_relaxed);
}

uint64_t sl_redis_errors(sl_redis *rd)
{
    return atomic_load_explicit(&rd->errors, memory_order_relaxed);
}

const char *sl_redis_where(const sl_redis *rd)
{
    return rd->url.where;
}

const char *sl_redis_display(const sl_redis *rd)
{
    return rd->url.display;
}

/* ------------------------------------------------------------------------ */
/* Reply decoding                                                           */
/* ------------------------------------------------------------------------ */

static int bad_reply(sluice_error *err, const char *where, const char *what, size_t i)
{
    return sl_err(err, SLUICE_ELIMITER, "redis %s: malformed script reply: %s (decision %zu)",
                  where, what, i);
}

static int decode_one(redisReply *const *e, size_t i, sluice_limit_result *out, const char *where,
                      sluice_error *err)
{
    long long v[4];
    int j;

    for (j = 0; j < 4; j++) {
        if (!e[j] || e[j]->type != REDIS_REPLY_INTEGER)
            return bad_reply(err, where, "an element is not an integer", i);
        v[j] = e[j]->integer;
        if (v[j] > LONG_MAX || v[j] < -1)
            return bad_reply(err, where, "a value is out of range", i);
    }
    if ((v[0] != 0 && v[0] != 1) || v[1] < 0 || v[3] < 0 || (v[0] ? v[2] != -1 : v[2] < 0))
        return bad_reply(err, where, "inconsistent values", i);
    out->allowed = (int)v[0];
    out->remaining = (long)v[1];
    out->retry_after_ms = (long)v[2];
    out->reset_after_ms = (long)v[3];
    return 0;
}

int sl_redis_decode_reply(const redisReply *reply, size_t n, sluice_limit_result *out,
                          const char *where, sluice_error *err)
{
    char text[128];
    size_t i;

    if (!where)
        where = "(unknown)";
    if (!reply)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: no reply", where);
    if (reply->type == REDIS_REPLY_ERROR) {
        reply_text(reply, text, sizeof text);
        return sl_err(err, SLUICE_ELIMITER, "redis %s: script failed: %s", where, text);
    }
    if (reply->type != REDIS_REPLY_ARRAY)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: malformed script reply: type %d, not an array",
                      where, reply->type);
    if (n > SIZE_MAX / 4 || reply->elements != 4 * n || (n && !reply->element))
        return sl_err(err, SLUICE_ELIMITER,
                      "redis %s: malformed script reply: %zu elements for %zu decisions", where,
                      reply->elements, n);
    for (i = 0; i < n; i++) {
        int rc = decode_one(reply->element + 4 * i, i, &out[i], where, err);
        if (rc)
            return rc;
    }
    return 0;
}
