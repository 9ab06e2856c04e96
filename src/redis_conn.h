/* Redis connections as the limiter makes them (redis_url.c, redis_conn.c):
 * the URL, connecting with AUTH and SELECT, a reader bounded against
 * hostile replies, and the small helpers every Redis caller in sluice
 * shares (SIGPIPE-safe commands and writes, messages that never carry a
 * password).  Nothing here holds a lock or keeps state between calls
 * except the bounded reader's function table, set up once.  A
 * redisContext is not thread-safe: one thread uses it at a time.
 */
#ifndef SL_REDIS_CONN_H
#define SL_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "sluice.h"

struct redisContext;
struct redisReader;
struct redisReply;

/* A parsed Redis URL: "redis://[[user]:password@]host[:port][/db]" or
 * "unix://[[user]:password@]/path[?db=N]".  User and password are
 * percent-decoded.  Owned strings, freed by sl_redis_url_free. */
typedef struct sl_redis_url {
    char *host;        /* NULL for a unix socket; IPv6 without brackets */
    int port;          /* default 6379 */
    char *path;        /* unix socket path, or NULL */
    char *user;        /* NULL: AUTH with the password only */
    char *password;    /* NULL: no AUTH */
    int db;            /* SELECT after connecting when not 0 */
    char *display;     /* the URL with the password as "***": for messages */
    char *where;       /* "host:port" ("[v6]:port") or the socket path */
} sl_redis_url;

/* Parses strictly: scheme redis or unix (rediss is refused: no TLS in
 * hiredis 0.14), host letters/digits/'-'/'.'/'_' or a bracketed IPv6 literal,
 * port 1..65535, db 0..2^31-1, no other query or fragment.  SLUICE_EINVAL
 * naming the part ("scheme", "userinfo", "host", "port", "db", "path",
 * "query"); the message never contains the password. */
int sl_redis_url_parse(const char *s, sl_redis_url *out, sluice_error *err);
void sl_redis_url_free(sl_redis_url *u);

/* Parses "redis+cluster://[[user]:password@]host[:port][,host[:port]...]"
 * (optionally "/0": Redis Cluster has no other db) into one sl_redis_url
 * per seed node, each holding the credentials.  SLUICE_EINVAL naming the
 * part: a db other than 0, a path, query or fragment, an empty or bad
 * seed, more than SL_REDIS_MAX_SEEDS seeds.  *out is owned by the caller:
 * sl_redis_cluster_url_free(*out, *n). */
#define SL_REDIS_MAX_SEEDS 64
int sl_redis_cluster_url_parse(const char *s, sl_redis_url **out, size_t *n, sluice_error *err);
void sl_redis_cluster_url_free(sl_redis_url *seeds, size_t n);

/* Parses "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master>[/db]":
 * the sentinels (port 26379 by default; no credentials: those are the
 * master's), the master's name (1..128 letters, digits, '-', '.', '_') and
 * in `auth` the master's user, password and db, with auth.display the
 * whole URL masked and auth.where "master '<name>'" (auth.host is NULL: the
 * sentinels tell the address).  SLUICE_EINVAL naming the part: no master
 * name, a bad name, an empty or bad sentinel, a bad db, a query or
 * fragment, more than SL_REDIS_MAX_SEEDS sentinels; the message never
 * contains the password.  Free with sl_redis_sentinel_url_free. */
typedef struct sl_redis_sentinel_url {
    sl_redis_url *sentinels;
    size_t n;
    char *master;
    sl_redis_url auth;
} sl_redis_sentinel_url;
int sl_redis_sentinel_url_parse(const char *s, sl_redis_sentinel_url *out, sluice_error *err);
void sl_redis_sentinel_url_free(sl_redis_sentinel_url *u);

/* A URL for host:port (a host name, an IPv4 or an unbracketed IPv6
 * literal, as a sentinel names a master) with cred's user, password and
 * db.  SLUICE_EINVAL for a host or port that is not one; SLUICE_ENOMEM. */
int sl_redis_url_at(const sl_redis_url *cred, const char *host, int port, sl_redis_url *out,
                    sluice_error *err);

/* Connects to u before `deadline` (which also bounds every later reply
 * until the caller sets another timeout), then AUTH and SELECT as u asks.
 * 0 with *out set; SLUICE_ELIMITER with *refused set (when refused is not
 * NULL) if Redis answered but refused the credentials or the db, and a
 * message that never holds the password; SLUICE_ENOMEM. */
int sl_redis_open(const sl_redis_url *u, int64_t deadline, struct redisContext **out,
                  int *refused, sluice_error *err);

/* sl_redis_open for a URL string, within timeout_ms: the connection, or
 * NULL with err set.  For tools and tests that talk to Redis directly. */
struct redisContext *sl_redis_connect_url(const char *url, int timeout_ms, sluice_error *err);

/* hiredis (0.14) allocates a multi-bulk reply's element array as soon as
 * it reads the count, so "*400000004" from a hostile or broken server
 * would make it allocate 3.2 GB.  No reply to a command sluice sends has
 * more than SL_REDIS_MAX_REPLY_ELEMENTS elements (4 integers for each of
 * up to 256 batched decisions): this gives a reader hiredis's own reply
 * functions with that bound on an array's count.  A longer array fails
 * the reader with hiredis's out-of-memory error before anything is
 * allocated for it.  sl_redis_open() applies it to every connection.
 * 0, or -1 when out of memory.  Thread-safe. */
#define SL_REDIS_MAX_REPLY_ELEMENTS 1024
int sl_redis_bound_reader(struct redisReader *r);

/* The socket timeout for what is left before `deadline` (at least 1 ms). */
struct timeval sl_redis_tv_until(int64_t deadline);

/* redisCommandArgv with SIGPIPE blocked in this thread for the call (and
 * one we caused swallowed): a peer that closed must not kill a program
 * that does not ignore the signal.  NULL on an I/O error (c->err says). */
struct redisReply *sl_redis_command(struct redisContext *c, int argc, const char **argv,
                                    const size_t *lens);

/* Writes what hiredis buffered in c->obuf with send(MSG_NOSIGNAL): no
 * SIGPIPE and no signal-mask system calls.  0, or -1 with c->err and
 * c->errstr set the way hiredis sets them and errno kept for the caller. */
int sl_redis_flush(struct redisContext *c);

/* Copies a reply's text into buf for a message: bounded, NUL-terminated,
 * control bytes replaced by '?'. */
void sl_redis_reply_text(const struct redisReply *r, char *buf, size_t cap);

/* Replaces each occurrence of `secret` in msg (at most 256 bytes) by
 * "***": a server's error text must never carry the password into a
 * message or a log line. */
void sl_redis_scrub(char *msg, size_t cap, const char *secret);

/* Runs one setup command (AUTH, SELECT, SCRIPT LOAD) of at most 3
 * arguments.  An error reply sets *refused (when not NULL): the settings
 * are wrong, not the network.  With `out`, the reply is handed over (the
 * caller frees it).  SLUICE_ELIMITER naming u's host and `what`. */
int sl_redis_setup_command(const sl_redis_url *u, struct redisContext *c, int argc,
                           const char **argv, const char *what, struct redisReply **out,
                           int *refused, sluice_error *err);

#endif
