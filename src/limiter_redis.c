/* The Redis backend: URL parsing, pooled hiredis connections, the GCRA
 * script and the batcher that lets concurrent decisions share a round
 * trip. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "alloc.h"
#include "ascii.h"
#include "buf.h"
#include "clock.h"
#include "error.h"
#include "futex.h"
#include "limiter.h"
#include "log.h"
#include "sock.h"
#include "sync.h"

#define DEFAULT_PORT 6379
#define MAX_BATCH 256
_Static_assert(4 * MAX_BATCH <= SL_REDIS_MAX_REPLY_ELEMENTS, "a batch's reply must fit the bound");
#define NUM_MAX 32                /* bytes one formatted number may take */
#define SOCKET_TIMEOUT_SLACK_MS 2 /* a set socket timeout this close is kept */

/* The GCRA script; see limiter.h for the arithmetic, which it repeats
 * operation for operation (sl_gcra_eval).  TATs are microseconds since
 * 2020-01-01 (small enough for exact doubles) and go to SET as Lua numbers,
 * which Redis writes with 17 significant digits (or the shortest exact
 * form), so they read back bit for bit.  A key that is not a number (or
 * not a string) is treated as absent and overwritten.  Each key is read
 * once and written once per batch however many decisions it has: the
 * decisions still see each other in order, and the script is atomic. */
const char sl_redis_script[] =
    "local tol, epoch = 0.5, 1577836800\n"
    "local n = #KEYS\n"
    "if #ARGV ~= n * 5 then\n"
    "  return redis.error_reply('ERR sluice gcra: 5 arguments per key expected')\n"
    "end\n"
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local floor, ceil = math.floor, math.ceil\n"
    "local function ceil_ms(us)\n"
    "  local v = ceil((us - tol) / 1000)\n"
    "  if v > 0 then return v end\n"
    "  return 0\n"
    "end\n"
    "local out, tats, stored, clock = {}, {}, {}, nil\n"
    "for i = 1, n do\n"
    "  local a, key, k = (i - 1) * 5, KEYS[i], (i - 1) * 4\n"
    "  local op, t, burst = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
    "  local arg, now = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])\n"
    "  if now < 0 then\n"
    "    if not clock then\n"
    "      local tm = redis.call('TIME')\n"
    "      clock = (tonumber(tm[1]) - epoch) * 1000000 + tonumber(tm[2])\n"
    "    end\n"
    "    now = clock\n"
    "  end\n"
    "  local tat = tats[key]\n"
    "  if tat == nil then\n"
    "    tat = tonumber(redis.pcall('GET', key)) or false\n"
    "    tats[key] = tat\n"
    "  end\n"
    "  if not tat or tat < now then tat = now end\n"
    "  local boff, cost = t * burst, arg\n"
    "  if op == 'd' then\n"
    "    local want = now + arg * 1000 + t * (burst - 1)\n"
    "    if want > tat then tat = want; tats[key] = tat; stored[key] = now end\n"
    "    cost = 1\n"
    "  elseif op == 'p' then\n"
    "    cost = 1\n"
    "  elseif op ~= 'c' then\n"
    "    return redis.error_reply('ERR sluice gcra: unknown op')\n"
    "  end\n"
    "  local new_tat = tat + t * cost\n"
    "  local diff = now - (new_tat - boff)\n"
    "  if diff < -tol then\n"
    "    out[k + 1], out[k + 2], out[k + 3], out[k + 4] = 0, 0, ceil_ms(-diff), ceil_ms(tat - now)\n"
    "  else\n"
    "    out[k + 1], out[k + 2] = 1, floor((diff + tol) / t)\n"
    "    out[k + 3], out[k + 4] = -1, ceil_ms(new_tat - now)\n"
    "    if op == 'c' then tats[key] = new_tat; stored[key] = now end\n"
    "  end\n"
    "end\n"
    "for key, at in pairs(stored) do\n"
    "  local tat = tats[key]\n"
    "  redis.call('SET', key, tat, 'PX', math.max(1, ceil_ms(tat - at)))\n"
    "end\n"
    "return out\n";

/* ------------------------------------------------------------------------ */
/* URL parsing                                                              */
/* ------------------------------------------------------------------------ */

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
    return sl_ascii_hexval((unsigned char)c) >= 0 || c == ':' || c == '.';
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
    char numkeys[24];
    sluice_limit_result *res;    /* decoded results, one per decision */
} rconn;

enum { W_QUEUED, W_TAKEN, W_LEAD, W_DONE };

/* Sleeping waiters park on one of these words (Linux futexes): the queued
 * ones on the word of the batch that will take them, so a leader wakes a
 * whole batch with one system call.  A word only ever counts up. */
#define NWORDS 64

/* A decision waiting for its batch.  Lives on the caller's stack.  The
 * caller leaves once it sees DONE (a leader writes nothing to it after
 * that), or while still QUEUED or asked to LEAD, after unlinking itself
 * under the lock.  Its arguments are formatted by the caller before it
 * queues, off the leader's serial path. */
typedef struct waiter {
    struct waiter *next;
    const sl_lim_req *rq;
    char args[SL_REDIS_ARGS_PER_DECISION - 1][NUM_MAX];  /* T .. now */
    size_t arglen[SL_REDIS_ARGS_PER_DECISION - 1];
    sluice_limit_result r;
    sluice_error e;
    int code;
    int64_t deadline;
    _Atomic int state;     /* W_*: QUEUED -> TAKEN or LEAD under the lock, -> DONE */
    unsigned word;         /* lock held: the word it sleeps on ... */
    uint32_t seen;         /* ... and that word's value when it went to sleep */
} waiter;

struct sl_redis {
    sl_redis_url url;
    sl_redis_cfg cfg;
    sluice_pool *pool;

    pthread_mutex_t mu;           /* guards everything below but `words` */
    waiter *head, *tail;          /* queued decisions, arrival order */
    size_t queued;                /* how many */
    int inflight;                 /* leaders with a round trip under way */
    uint32_t next_batch;          /* number of the next batch to be taken */
    char sha[41];                 /* the script's SHA1 once loaded, else "" */

    _Atomic uint32_t words[NWORDS];
    _Atomic uint64_t round_trips, decisions, errors;
};

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
    /* Keep the timeout set when it is a little shorter than what is left,
     * never when it is longer: the deadline is a bound. */
    if (cn->timeout_ms && cn->timeout_ms <= ms && ms - cn->timeout_ms <= SOCKET_TIMEOUT_SLACK_MS)
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
    sl_free(cn);
}

/* Runs one setup command (AUTH, SELECT, SCRIPT LOAD).  A refusal by Redis
 * sets *refused: the credentials or the db are wrong, not the network. */
static int setup_command(const sl_redis_url *u, redisContext *c, int argc, const char **argv,
                         const char *what, redisReply **out, int *refused, sluice_error *err)
{
    size_t lens[3];
    redisReply *r;
    char text[128];
    int i;

    for (i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    r = command(c, argc, argv, lens);
    if (!r)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: %s failed: %s", u->where, what, c->errstr);
    if (r->type == REDIS_REPLY_ERROR) {
        reply_text(r, text, sizeof text);
        scrub(text, sizeof text, u->password);
        freeReplyObject(r);
        if (refused)
            *refused = 1;
        return sl_err(err, SLUICE_ELIMITER, "%s failed for %s: %s", what, u->display, text);
    }
    if (out)
        *out = r;
    else
        freeReplyObject(r);
    return 0;
}

static int load_script(sl_redis *rd, rconn *cn, int *refused, sluice_error *err)
{
    const char *argv[] = {"SCRIPT", "LOAD", sl_redis_script};
    redisReply *r = NULL;
    int rc = setup_command(&rd->url, cn->c, 3, argv, "SCRIPT LOAD", &r, refused, err);

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

/* hiredis's reply functions with a bound on an array's count (limiter.h):
 * filled once from a throwaway reader, then only read. */
static redisReplyObjectFunctions bounded_fns;
static void *(*hiredis_create_array)(const redisReadTask *, int);
static pthread_once_t bounded_once = PTHREAD_ONCE_INIT;

static void *bounded_create_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > SL_REDIS_MAX_REPLY_ELEMENTS)
        return NULL;
    return hiredis_create_array(task, elements);
}

static void init_bounded_fns(void)
{
    redisReader *r = redisReaderCreate();

    if (!r)
        return;
    bounded_fns = *r->fn;
    bounded_fns.createArray = bounded_create_array;
    hiredis_create_array = r->fn->createArray;
    redisReaderFree(r);
}

int sl_redis_bound_reader(redisReader *r)
{
    pthread_once(&bounded_once, init_bounded_fns);
    if (!r || !hiredis_create_array)
        return -1;
    r->fn = &bounded_fns;
    return 0;
}

int sl_redis_open(const sl_redis_url *u, int64_t deadline, redisContext **out, int *refused,
                  sluice_error *err)
{
    redisContext *c;
    char db[16];
    int rc = 0;

    if (refused)
        *refused = 0;
    *out = NULL;
    c = u->path ? redisConnectUnixWithTimeout(u->path, tv_until(deadline))
                : redisConnectWithTimeout(u->host, u->port, tv_until(deadline));
    if (!c)
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory connecting", u->where);
    if (!c->err && sl_redis_bound_reader(c->reader) != 0) {
        redisFree(c);
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory connecting", u->where);
    }
    if (c->err) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot connect: %s", u->where, c->errstr);
    } else if (redisSetTimeout(c, tv_until(deadline)) != REDIS_OK) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts", u->where);
    } else if (u->password) {
        const char *a2[] = {"AUTH", u->password};
        const char *a3[] = {"AUTH", u->user ? u->user : "", u->password};
        rc = u->user ? setup_command(u, c, 3, a3, "AUTH", NULL, refused, err)
                     : setup_command(u, c, 2, a2, "AUTH", NULL, refused, err);
    }
    if (rc == 0 && u->db) {
        const char *argv[] = {"SELECT", db};
        snprintf(db, sizeof db, "%d", u->db);
        rc = setup_command(u, c, 2, argv, "SELECT", NULL, refused, err);
    }
    if (rc) {
        redisFree(c);
        return rc;
    }
    *out = c;
    return 0;
}

struct redisContext *sl_redis_connect_url(const char *url, int timeout_ms, sluice_error *err)
{
    sl_redis_url u;
    redisContext *c = NULL;

    if (sl_redis_url_parse(url, &u, err) != 0)
        return NULL;
    sl_redis_open(&u, sl_deadline_in_ms(timeout_ms), &c, NULL, err);
    sl_redis_url_free(&u);
    return c;
}

/* Connects, authenticates, selects the db and, the first time, loads the
 * script, all before `deadline`.  *refused as for sl_redis_open. */
static int connect_redis(sl_redis *rd, int64_t deadline, rconn **out, int *refused,
                         sluice_error *err)
{
    rconn *cn = sl_calloc(1, sizeof *cn);
    int rc, have_sha;

    if (!cn)
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory", rd->url.where);
    rc = sl_redis_open(&rd->url, deadline, &cn->c, refused, err);
    if (rc == 0 && set_timeout(cn, deadline) != 0)
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts", rd->url.where);
    pthread_mutex_lock(&rd->mu);
    have_sha = rd->sha[0] != '\0';
    pthread_mutex_unlock(&rd->mu);
    if (rc == 0 && !have_sha)
        rc = load_script(rd, cn, refused, err);
    if (rc) {
        rconn_free(cn);
        return rc;
    }
    *out = cn;
    return 0;
}

/* The pool's create, given what is left of the caller's deadline.  A
 * refusal by Redis (AUTH, SELECT or SCRIPT LOAD answered with an error)
 * comes back as SLUICE_EINVAL: the settings are wrong and no retry helps,
 * unlike a network failure (SLUICE_ELIMITER).  get_conn tells them apart. */
static int pool_create(void *ctx, int timeout_ms, void **res, sluice_error *err)
{
    sl_redis *rd = ctx;
    int64_t deadline = sl_deadline_in_ms(timeout_ms < 0 ? rd->cfg.timeout_ms : timeout_ms);
    rconn *cn = NULL;
    int refused = 0;
    int rc = connect_redis(rd, deadline, &cn, &refused, err);

    *res = cn;
    if (rc == SLUICE_ELIMITER && refused)
        return SLUICE_EINVAL;
    return rc;
}

static void pool_destroy(void *ctx, void *res)
{
    (void)ctx;
    rconn_free(res);
}

/* The same test as for HTTP connections (sl_sock_idle_alive): readable
 * means the server closed it or sent something unasked. */
static int pool_alive(void *ctx, void *res)
{
    rconn *cn = res;

    (void)ctx;
    return sl_sock_idle_alive(cn->c->fd);
}

static const sluice_pool_ops pool_ops = {
    .create_timed = pool_create, .destroy = pool_destroy, .alive = pool_alive};

/* Checks a connection out before `deadline`; err says why not. */
static int get_conn(sl_redis *rd, int64_t deadline, rconn **out, int *refused, sluice_error *err)
{
    sluice_error e;
    void *res = NULL;
    int rc, ms = sl_ms_left(deadline);

    rc = sluice_pool_get_err(rd->pool, ms > 0 ? ms : 1, &res, &e);
    if (refused)
        *refused = rc == SLUICE_EINVAL;
    if (rc == 0) {
        *out = res;
        return 0;
    }
    if (e.code == SLUICE_ELIMITER || e.code == SLUICE_ENOMEM)
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

/* Makes room for a batch of n: argv, lengths and results. */
static int reserve_scratch(rconn *cn, size_t n)
{
    size_t argc = 3 + n * (1 + SL_REDIS_ARGS_PER_DECISION), cap;
    const char **argv;
    size_t *lens;
    sluice_limit_result *res;

    if (argc <= cn->argcap)
        return 0;
    cap = argc * 2;
    argv = sl_realloc(cn->argv, cap * sizeof *argv);
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
    return 0;
}

static size_t fmt(char *buf, const char *format, ...) __attribute__((format(printf, 2, 3)));

static size_t fmt(char *buf, const char *format, ...)
{
    va_list ap;
    int n;

    va_start(ap, format);
    n = vsnprintf(buf, NUM_MAX, format, ap);
    va_end(ap);
    return n < 0 || n >= NUM_MAX ? 0 : (size_t)n;   /* cannot fail for these formats */
}

/* The caller's share of building the command: its numbers as text. */
static void format_args(waiter *w)
{
    const sl_lim_req *rq = w->rq;

    w->arglen[0] = fmt(w->args[0], "%.17g", sl_gcra_interval_us(&rq->lim));
    w->arglen[1] = fmt(w->args[1], "%d", rq->lim.burst);
    w->arglen[2] = fmt(w->args[2], "%d", rq->op == SL_LIM_PEEK ? 1 : rq->arg);
    w->arglen[3] = fmt(w->args[3], "%lld", (long long)rq->now_us);
}

/* EVALSHA sha n key1..keyn, then the fields of each decision. */
static int build_evalsha(rconn *cn, const char *sha, waiter **batch, size_t n)
{
    static const char *const ops[] = {"c", "p", "d"};
    const char **av;
    size_t *al, a = 0, i, j;

    if (reserve_scratch(cn, n))
        return SLUICE_ENOMEM;
    av = cn->argv;
    al = cn->argvlen;
    av[a] = "EVALSHA", al[a++] = 7;
    av[a] = sha, al[a++] = 40;
    av[a] = cn->numkeys, al[a++] = (size_t)snprintf(cn->numkeys, sizeof cn->numkeys, "%zu", n);
    for (i = 0; i < n; i++)
        av[a] = batch[i]->rq->key, al[a++] = batch[i]->rq->key_len;
    for (i = 0; i < n; i++) {
        av[a] = ops[batch[i]->rq->op], al[a++] = 1;
        for (j = 0; j < SL_REDIS_ARGS_PER_DECISION - 1; j++)
            av[a] = batch[i]->args[j], al[a++] = batch[i]->arglen[j];
    }
    return (int)a;
}

/* `errnum` is errno right after the failed hiredis call: on a socket
 * timeout (SO_RCVTIMEO / SO_SNDTIMEO) hiredis sets REDIS_ERR_IO and leaves
 * errno EAGAIN; its errstr is strerror's text, which the locale translates. */
static int io_error(sl_redis *rd, rconn *cn, int errnum, sluice_error *err)
{
    const redisContext *c = cn->c;

    if (c->err == REDIS_ERR_EOF)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: connection closed by the server",
                      rd->url.where);
    if (c->err == REDIS_ERR_IO && (errnum == EAGAIN || errnum == EWOULDBLOCK))
        return sl_err(err, SLUICE_ELIMITER, "redis %s: no reply within %d ms", rd->url.where,
                      cn->timeout_ms);
    return sl_err(err, SLUICE_ELIMITER, "redis %s: %s", rd->url.where, c->errstr);
}

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str && r->len >= 8 &&
           memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Writes what hiredis buffered.  With send(MSG_NOSIGNAL) rather than
 * hiredis' write(): a peer that closed gives EPIPE, never a SIGPIPE that
 * would kill a program that does not ignore it, and costs no signal-mask
 * system calls per round trip.  A failure marks the context broken the way
 * hiredis does. */
static int flush_output(redisContext *c)
{
    size_t len = sdslen(c->obuf), off = 0;
    char ebuf[SL_ERRNO_BUF];

    while (off < len) {
        ssize_t k = send(c->fd, c->obuf + off, len - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = errno;

            c->err = REDIS_ERR_IO;
            snprintf(c->errstr, sizeof c->errstr, "%s",
                     k == 0 ? "write returned 0" : sl_errno_str(e, ebuf, sizeof ebuf));
            errno = k == 0 ? EIO : e;   /* io_error reads it */
            return -1;
        }
        off += (size_t)k;
    }
    sdsclear(c->obuf);
    return 0;
}

/* Sends the batch's EVALSHA; its reply is read by recv_evalsha. */
static int send_evalsha(sl_redis *rd, rconn *cn, waiter **batch, size_t n, int64_t deadline,
                        sluice_error *err)
{
    char sha[41];
    int argc, rc;

    pthread_mutex_lock(&rd->mu);
    memcpy(sha, rd->sha, sizeof sha);
    pthread_mutex_unlock(&rd->mu);
    if (set_timeout(cn, deadline) != 0)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts",
                      rd->url.where);
    if (!sha[0]) {
        if ((rc = load_script(rd, cn, NULL, err)))
            return rc;
        return send_evalsha(rd, cn, batch, n, deadline, err);
    }
    argc = build_evalsha(cn, sha, batch, n);
    if (argc < 0 || redisAppendCommandArgv(cn->c, argc, cn->argv, cn->argvlen) != REDIS_OK)
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory for a batch of %zu",
                      rd->url.where, n);
    atomic_fetch_add_explicit(&rd->round_trips, 1, memory_order_relaxed);
    if (flush_output(cn->c) != 0)
        return io_error(rd, cn, errno, err);
    return 0;
}

/* Reads the reply to the EVALSHA just sent into cn->res.  After NOSCRIPT
 * (a SCRIPT FLUSH, a restarted or failed-over server) loads the script and
 * sends once more. */
static int recv_evalsha(sl_redis *rd, rconn *cn, waiter **batch, size_t n, int64_t deadline,
                        sluice_error *err)
{
    int attempt, rc;

    for (attempt = 0; attempt < 2; attempt++) {
        redisReply *reply = NULL;

        if (redisGetReply(cn->c, (void **)&reply) != REDIS_OK || !reply)
            return io_error(rd, cn, errno, err);
        if (attempt == 0 && is_noscript(reply)) {
            freeReplyObject(reply);
            if ((rc = load_script(rd, cn, NULL, err)) ||
                (rc = send_evalsha(rd, cn, batch, n, deadline, err)))
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

/* --- sleeping and waking -------------------------------------------------- */

/* Counts the word up and wakes everyone sleeping on it. */
static void word_wake(_Atomic uint32_t *word)
{
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    sl_futex_wake(word, INT_MAX);
}

/* Lock held: w will sleep on the word of the next batch. */
static void park(sl_redis *rd, waiter *w, unsigned batch)
{
    w->word = batch % NWORDS;
    w->seen = atomic_load_explicit(&rd->words[w->word], memory_order_relaxed);
}

/* --- leading ----------------------------------------------------------------- */

/* A leader serves batch after batch while decisions keep arriving, up to
 * this many after its own result is in (and never past its own deadline),
 * then hands over: the next batch goes out as soon as a reply is in,
 * without waiting for another thread to be scheduled, and no caller is
 * kept long past its own result. */
#define LEAD_BUDGET 16

/* Another leader (on another connection, up to max_inflight) starts as
 * soon as this many decisions queue behind the round trips under way.
 * Waiting for a reply before sending the next batch leaves the client and
 * Redis taking turns: with 8 threads on two cores, one flight at a time
 * averaged 6 decisions per round trip but 51,000 decisions/s, against
 * 91,000/s with 1.6 per round trip here (and 165,000 against 123,000 with
 * 64 threads, whose batches still average 14).  When Redis is the slow
 * side the queue grows during each round trip and batches grow with it. */
#define PARALLEL_BACKLOG 2

/* Lock held: may a queued caller start leading now? */
static int can_lead(const sl_redis *rd)
{
    return rd->inflight == 0 ||
           (rd->inflight < rd->cfg.max_inflight && rd->queued >= PARALLEL_BACKLOG);
}

/* Lock held. */
static void enqueue(sl_redis *rd, waiter *w)
{
    if (rd->tail)
        rd->tail->next = w;
    else
        rd->head = w;
    rd->tail = w;
    rd->queued++;
}

/* Lock held.  The head of the queue. */
static waiter *dequeue(sl_redis *rd)
{
    waiter *w = rd->head;

    rd->head = w->next;
    if (!rd->head)
        rd->tail = NULL;
    rd->queued--;
    return w;
}

/* Lock held.  The oldest queued decisions, marked TAKEN as batch `b`. */
static size_t take_batch(sl_redis *rd, waiter **batch, unsigned *b, int64_t *deadline)
{
    size_t n = 0;

    *b = rd->next_batch++;
    *deadline = SL_NO_DEADLINE;
    while (rd->head && n < MAX_BATCH) {
        waiter *w = dequeue(rd);
        park(rd, w, *b);
        atomic_store_explicit(&w->state, W_TAKEN, memory_order_relaxed);
        batch[n++] = w;
        *deadline = sl_deadline_min(*deadline, w->deadline);
    }
    return n;
}

/* No lock: hands a TAKEN waiter its outcome.  Once DONE is visible the
 * waiter may return and free its stack: nothing touches it after that. */
static void complete(waiter *w, int code, const sluice_limit_result *r, const sluice_error *e)
{
    w->code = code;
    if (code)
        sl_err_copy(&w->e, e);
    else
        w->r = *r;
    atomic_store_explicit(&w->state, W_DONE, memory_order_release);
}

/* Lock held: asks the head of the queue to lead next.  The queued all
 * sleep on one word, so they all wake; the others go back to sleep.  It
 * happens once per LEAD_BUDGET batches at most. */
static void pass_lead(sl_redis *rd)
{
    if (rd->head && can_lead(rd) &&
        atomic_load_explicit(&rd->head->state, memory_order_relaxed) == W_QUEUED) {
        atomic_store_explicit(&rd->head->state, W_LEAD, memory_order_relaxed);
        word_wake(&rd->words[rd->next_batch % NWORDS]);
    }
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
    rd->queued--;
}

/* Sends a batch, checking a connection out first when the leader holds
 * none.  No lock held.  0, or the error to complete the batch with. */
static int send_batch(sl_redis *rd, rconn **cn, waiter **batch, size_t n, int64_t deadline,
                      sluice_error *e)
{
    int rc;

    sl_err_clear(e);
    if (!*cn && (rc = get_conn(rd, deadline, cn, NULL, e)))
        return rc;
    atomic_fetch_add_explicit(&rd->decisions, n, memory_order_relaxed);
    return send_evalsha(rd, *cn, batch, n, deadline, e);
}

/* Completes a sent (or failed) batch.  No lock held.  Returns 1 when the
 * connection broke: it is then discarded and *cn cleared. */
static int finish_batch(sl_redis *rd, rconn **cn, waiter **batch, size_t n, int64_t deadline,
                        int rc, sluice_error *e)
{
    int broken;
    size_t i;

    if (rc == 0)
        rc = recv_evalsha(rd, *cn, batch, n, deadline, e);
    broken = rc == SLUICE_ELIMITER && (!*cn || (*cn)->c->err != 0);
    if (rc == SLUICE_ELIMITER && *cn)
        atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
    for (i = 0; i < n; i++)
        complete(batch[i], rc, rc == 0 ? &(*cn)->res[i] : NULL, e);
    if (broken && *cn) {
        sluice_pool_put(rd->pool, *cn, 0);
        *cn = NULL;
    }
    return broken;
}

/* Lock held: fails every queued decision at once (the connection broke, so
 * they would only wait for their own timeouts). */
static void fail_queue(sl_redis *rd, int code, const sluice_error *e)
{
    unsigned b = rd->next_batch++;

    while (rd->head)
        complete(dequeue(rd), code, NULL, e);
    word_wake(&rd->words[b % NWORDS]);
}

/* Called with the lock held by `self`, a queued caller allowed to lead;
 * returns with it released once self is DONE.  It keeps one connection
 * while it leads.  See LEAD_BUDGET. */
static void lead(sl_redis *rd, waiter *self)
{
    waiter *batch[MAX_BATCH];
    int served_after_self = 0;
    rconn *cn = NULL;
    sluice_error e;

    rd->inflight++;
    for (;;) {
        int64_t deadline;
        unsigned b;
        size_t n = take_batch(rd, batch, &b, &deadline);
        int rc, broken;

        pthread_mutex_unlock(&rd->mu);
        rc = send_batch(rd, &cn, batch, n, deadline, &e);
        broken = finish_batch(rd, &cn, batch, n, deadline, rc, &e);
        word_wake(&rd->words[b % NWORDS]);
        pthread_mutex_lock(&rd->mu);
        if (broken)
            fail_queue(rd, rc ? rc : SLUICE_ELIMITER, &e);
        if (atomic_load_explicit(&self->state, memory_order_relaxed) == W_DONE &&
            (!rd->head || ++served_after_self > LEAD_BUDGET || sl_now_ns() > self->deadline))
            break;
    }
    rd->inflight--;
    pass_lead(rd);
    pthread_mutex_unlock(&rd->mu);
    if (cn)
        sluice_pool_put(rd->pool, cn, 1);
}

/* --- waiting ------------------------------------------------------------------ */

/* A queued caller's wait: for its outcome, for a request to lead, or for
 * its deadline while still queued (then it unlinks itself).  Once TAKEN it
 * waits without a deadline: the leader's I/O is bounded by the batch's
 * earliest deadline. */
static void await_outcome(sl_redis *rd, waiter *w, unsigned word, uint32_t seen)
{
    int64_t deadline = w->deadline;

    for (;;) {
        int timed_out = 0, st;

        if (atomic_load_explicit(&w->state, memory_order_acquire) == W_DONE)
            return;
        timed_out = sl_futex_wait(&rd->words[word], seen, deadline) ||
                    (deadline != SL_NO_DEADLINE && sl_now_ns() >= deadline);
        if (atomic_load_explicit(&w->state, memory_order_acquire) == W_DONE)
            return;
        pthread_mutex_lock(&rd->mu);
        st = atomic_load_explicit(&w->state, memory_order_relaxed);
        if (st == W_LEAD && !timed_out) {
            atomic_store_explicit(&w->state, W_QUEUED, memory_order_relaxed);
            lead(rd, w);
            return;
        }
        if (timed_out && (st == W_QUEUED || st == W_LEAD)) {
            unlink_waiter(rd, w);
            pass_lead(rd);
            pthread_mutex_unlock(&rd->mu);
            w->code = sl_err(&w->e, SLUICE_ELIMITER,
                             "redis %s: no reply within %d ms (queued behind a slow round trip)",
                             rd->url.where, rd->cfg.timeout_ms);
            atomic_fetch_add_explicit(&rd->errors, 1, memory_order_relaxed);
            return;
        }
        if (st == W_QUEUED)
            park(rd, w, rd->next_batch);   /* woken, but not taken: the next one */
        if (timed_out)
            deadline = SL_NO_DEADLINE;      /* TAKEN: the leader is bounded */
        word = w->word;
        seen = w->seen;
        pthread_mutex_unlock(&rd->mu);
    }
}

int sl_redis_decide(sl_redis *rd, const sl_lim_req *rq, sluice_limit_result *r,
                    sluice_error *err)
{
    waiter w;

    w.next = NULL;
    w.rq = rq;
    w.code = 0;
    w.deadline = sl_deadline_in_ms(rd->cfg.timeout_ms);
    atomic_init(&w.state, W_QUEUED);
    format_args(&w);

    pthread_mutex_lock(&rd->mu);
    enqueue(rd, &w);
    if (can_lead(rd)) {
        lead(rd, &w);
    } else {
        unsigned word;
        uint32_t seen;

        park(rd, &w, rd->next_batch);
        word = w.word;
        seen = w.seen;
        pthread_mutex_unlock(&rd->mu);
        await_outcome(rd, &w, word, seen);
    }
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
    po.max_size = cfg->pool_size;
    po.max_idle = cfg->pool_size;
    if (sl_mutex_init(&rd->mu, "redis", err) ||
        !(rd->pool = sluice_pool_new(&po, &pool_ops, rd, err))) {
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
    pthread_mutex_destroy(&rd->mu);
    sl_redis_url_free(&rd->url);
    sl_free(rd);
}

uint64_t sl_redis_round_trips(sl_redis *rd)
{
    return atomic_load_explicit(&rd->round_trips, memory_order_relaxed);
}

uint64_t sl_redis_decisions(sl_redis *rd)
{
    return atomic_load_explicit(&rd->decisions, memory_order_relaxed);
}

uint64_t sl_redis_errors(sl_redis *rd)
{
    return atomic_load_explicit(&rd->errors, memory_order_relaxed);
}

const char *sl_redis_where(const sl_redis *rd)
{
    return rd->url.where;
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
