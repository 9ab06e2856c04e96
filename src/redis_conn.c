/* Opening a Redis connection (connect, AUTH, SELECT) within a deadline,
 * the bounded reply reader, and the SIGPIPE-safe I/O and message helpers
 * the limiter's Redis code shares. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "clock.h"
#include "error.h"
#include "redis_conn.h"

struct timeval sl_redis_tv_until(int64_t deadline)
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

redisReply *sl_redis_command(redisContext *c, int argc, const char **argv, const size_t *lens)
{
    sigpipe_guard g;
    redisReply *reply;

    sigpipe_block(&g);
    reply = redisCommandArgv(c, argc, argv, lens);
    sigpipe_restore(&g, reply == NULL);
    return reply;
}

/* Copies a reply's text for a message: bounded, control bytes replaced. */
void sl_redis_reply_text(const redisReply *r, char *buf, size_t cap)
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
void sl_redis_scrub(char *msg, size_t cap, const char *secret)
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

/* Writes what hiredis buffered.  With send(MSG_NOSIGNAL) rather than
 * hiredis' write(): a peer that closed gives EPIPE, never a SIGPIPE that
 * would kill a program that does not ignore it, and costs no signal-mask
 * system calls per round trip.  A failure marks the context broken the way
 * hiredis does. */
int sl_redis_flush(redisContext *c)
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
            errno = k == 0 ? EIO : e;   /* the caller reports it */
            return -1;
        }
        off += (size_t)k;
    }
    sdsclear(c->obuf);
    return 0;
}

/* Runs one setup command (AUTH, SELECT, SCRIPT LOAD).  A refusal by Redis
 * sets *refused: the credentials or the db are wrong, not the network. */
int sl_redis_setup_command(const sl_redis_url *u, redisContext *c, int argc, const char **argv,
                           const char *what, redisReply **out, int *refused, sluice_error *err)
{
    size_t lens[3];
    redisReply *r;
    char text[128];
    int i;

    for (i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    r = sl_redis_command(c, argc, argv, lens);
    if (!r)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: %s failed: %s", u->where, what, c->errstr);
    if (r->type == REDIS_REPLY_ERROR) {
        sl_redis_reply_text(r, text, sizeof text);
        sl_redis_scrub(text, sizeof text, u->password);
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

/* hiredis's reply functions with a bound on an array's count (redis_conn.h):
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
    c = u->path ? redisConnectUnixWithTimeout(u->path, sl_redis_tv_until(deadline))
                : redisConnectWithTimeout(u->host, u->port, sl_redis_tv_until(deadline));
    if (!c)
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory connecting", u->where);
    if (!c->err && sl_redis_bound_reader(c->reader) != 0) {
        redisFree(c);
        return sl_err(err, SLUICE_ENOMEM, "redis %s: out of memory connecting", u->where);
    }
    if (c->err) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot connect: %s", u->where, c->errstr);
    } else if (redisSetTimeout(c, sl_redis_tv_until(deadline)) != REDIS_OK) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: cannot set socket timeouts", u->where);
    } else if (u->password) {
        const char *a2[] = {"AUTH", u->password};
        const char *a3[] = {"AUTH", u->user ? u->user : "", u->password};
        rc = u->user ? sl_redis_setup_command(u, c, 3, a3, "AUTH", NULL, refused, err)
                     : sl_redis_setup_command(u, c, 2, a2, "AUTH", NULL, refused, err);
    }
    if (rc == 0 && u->db) {
        const char *argv[] = {"SELECT", db};
        snprintf(db, sizeof db, "%d", u->db);
        rc = sl_redis_setup_command(u, c, 2, argv, "SELECT", NULL, refused, err);
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
