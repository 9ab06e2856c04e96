/*
 * sluice: a thread-safe, blocking HTTP(S) client library for multithreaded
 * C programs.
 *
 * This header is the whole public API: if a function, type or macro does
 * not appear here, it is not part of the published interface.
 *
 * Conventions used throughout:
 *   - Functions return 0 on success or a negative SLUICE_E* code.
 *   - An optional `sluice_error *err` (may be NULL) receives the code, the
 *     HTTP status where one was seen, and a message naming what failed.
 *   - Option structs are filled by *_opts_init(), which writes every
 *     field's real default.  Where 0 is a meaningful value (a retry count,
 *     a backoff) an explicit 0 means 0, and a struct zeroed without
 *     *_opts_init() gets 0 there; where it is not (timeouts, sizes, the
 *     breaker's counts) a field left at 0 takes its documented default.
 *     Each field's comment says which.  SLUICE_OFF (-1) turns a count or a
 *     feature off where zero means "default".
 *   - The library copies every string and array it keeps from an options
 *     struct; the caller's memory may be freed once the call returns.
 *   - *_free(NULL) is a harmless no-op.
 *
 * SPDX-License-Identifier: BSD-3-Clause
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(SLUICE_STATIC_ONLY)
#define SLUICE_API __attribute__((visibility("default")))
#else
#define SLUICE_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

#define SLUICE_VERSION_MAJOR 0
#define SLUICE_VERSION_MINOR 3
#define SLUICE_VERSION_PATCH 0
#define SLUICE_VERSION_STRING "0.3.0"
#define SLUICE_VERSION_NUM \
    ((SLUICE_VERSION_MAJOR << 16) | (SLUICE_VERSION_MINOR << 8) | SLUICE_VERSION_PATCH)

/* The version of the library actually linked, as SLUICE_VERSION_NUM and as
 * a string.  Thread-safe. */
SLUICE_API unsigned sluice_version(void);
SLUICE_API const char *sluice_version_string(void);

/* Turns a count or a feature off in an options struct where 0 means
 * "default". */
#define SLUICE_OFF (-1)

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* One list generates the codes, their names and their messages.  Codes are
 * only ever appended, never renumbered. */
#define SLUICE_ERRNO_MAP(XX)                                                  \
    XX(EINVAL, 1, "invalid argument")                                         \
    XX(ENOMEM, 2, "out of memory")                                            \
    XX(ETIMEDOUT, 3, "operation timed out")                                   \
    XX(EPOOLTIMEOUT, 4, "timed out waiting for a pooled connection")          \
    XX(ERESOLVE, 5, "host name could not be resolved")                        \
    XX(ECONNECT, 6, "could not connect")                                      \
    XX(ETLS, 7, "TLS failure")                                                \
    XX(EIO, 8, "I/O error on the connection")                                 \
    XX(EPROTO, 9, "HTTP protocol violation")                                  \
    XX(ETOOBIG, 10, "response larger than allowed")                           \
    XX(ERATELIMITED, 11, "rate limited")                                      \
    XX(ECIRCUITOPEN, 12, "circuit breaker is open")                           \
    XX(ELIMITER, 13, "rate limiter backend unavailable")                      \
    XX(ECLOSED, 14, "object is closed")                                       \
    XX(EQUEUEFULL, 15, "queue or concurrency limit is full")                  \
    XX(ECANCELED, 16, "operation canceled")                                   \
    XX(EEXIST, 17, "exists already with different options")                  \
    XX(ENOTFOUND, 18, "no such object")                                       \
    XX(EREDIRECT, 19, "redirect refused or too many redirects")

typedef enum sluice_errno {
#define SLUICE_ERRNO_ENUM_(name, num, msg) SLUICE_##name = -(num),
    SLUICE_ERRNO_MAP(SLUICE_ERRNO_ENUM_)
#undef SLUICE_ERRNO_ENUM_
    SLUICE_ERRNO_MAX_ = -20 /* one past the last code; not an error */
} sluice_errno;

/* Details of a failed call.  `code` is the SLUICE_E* code (0 on success),
 * `http_status` the last HTTP status seen (0 if none), `msg` a NUL-terminated
 * message naming what failed (host:port, which deadline and its length,
 * file, key).  Messages never carry credentials or query values.
 * `attempts` is the number of attempts the call made on the network
 * (1 + retries; 0 when it was refused before any, e.g. by an open breaker;
 * a coalesced caller sees its leader's count).  Fields are only ever
 * appended. */
typedef struct sluice_error {
    int code;
    int http_status;
    char msg[256];
    int attempts;
} sluice_error;

/* A static message for `code` ("unknown error" for an unknown one).
 * Thread-safe. */
SLUICE_API const char *sluice_strerror(int code);
/* The code's name, e.g. "SLUICE_ETIMEDOUT" ("SLUICE_EUNKNOWN" for an
 * unknown one).  Thread-safe. */
SLUICE_API const char *sluice_err_name(int code);

/* ------------------------------------------------------------------------ */
/* Allocator and logging (process-wide)                                     */
/* ------------------------------------------------------------------------ */

/* Every allocation the library makes goes through these functions.  `ud`
 * is passed back to each.  realloc_fn(NULL, n) must behave as malloc_fn and
 * free_fn(NULL) must be a no-op. */
typedef struct sluice_allocator {
    void *(*malloc_fn)(size_t size, void *ud);
    void *(*realloc_fn)(void *ptr, size_t size, void *ud);
    void (*free_fn)(void *ptr, void *ud);
    void *ud;
} sluice_allocator;

/* Replaces the allocator; NULL restores malloc/realloc/free.  Not
 * thread-safe: call it before any other sluice function, or while no
 * sluice object is alive.  Memory must be freed by the allocator that
 * allocated it.  Allocations made inside wolfSSL, hiredis and c-ares do
 * not go through it. */
SLUICE_API void sluice_set_allocator(const sluice_allocator *a);

typedef enum sluice_log_level {
    SLUICE_LOG_DEBUG = 0,
    SLUICE_LOG_INFO = 1,
    SLUICE_LOG_WARN = 2,
    SLUICE_LOG_ERROR = 3,
    SLUICE_LOG_NONE = 4
} sluice_log_level;

/* Receives one formatted log line (no trailing newline).  Called on the
 * thread that logs, never with a library lock held. */
typedef void (*sluice_log_fn)(sluice_log_level level, const char *msg, void *ud);

/* Sets the log callback and the lowest level passed to it.  With no
 * callback set, the environment variable SLUICE_LOG=debug|info|warn|error
 * (case-insensitive) prints at that level and above to stderr; otherwise
 * logging is off.  At debug level every attempt logs one line (service,
 * method, origin and path without query values, new or reused connection,
 * TLS resumed or full, status, bytes, duration), and so do retry
 * decisions, limiter waits and breaker refusals; headers never appear.
 * Exception: tls_insecure_skip_verify warns once per factory to stderr
 * even with logging off, unless a callback is set (it then gets the
 * warning at SLUICE_LOG_WARN).
 * SLUICE_LOG is read once, when the library first logs or this is first
 * called; later changes to the environment are not seen.
 * Thread-safe; takes effect for lines logged after it returns. */
SLUICE_API void sluice_set_log(sluice_log_fn fn, sluice_log_level min_level, void *ud);

/* ------------------------------------------------------------------------ */
/* Opaque handles                                                           */
/* ------------------------------------------------------------------------ */

typedef struct sluice_factory sluice_factory;
typedef struct sluice_client sluice_client;
typedef struct sluice_response sluice_response;
typedef struct sluice_limiter sluice_limiter;
typedef struct sluice_pool sluice_pool;
typedef struct sluice_coalescer sluice_coalescer;
typedef struct sluice_executor sluice_executor;
typedef struct sluice_future sluice_future;

/* A name/value pair: a header, or a query parameter. */
typedef struct sluice_header {
    const char *name;
    const char *value;
} sluice_header;

/* ------------------------------------------------------------------------ */
/* Hooks and observability types                                            */
/* ------------------------------------------------------------------------ */

/* What a request hook is told.  Strings are valid only during the call. */
typedef struct sluice_request_info {
    const char *service;
    const char *method;
    const char *url;        /* origin and path; query values left out */
    int attempt;            /* 1 for the first attempt */
    int status;             /* HTTP status, 0 if none */
    int error;              /* SLUICE_E* code, 0 on success */
    int64_t duration_us;    /* this attempt (end/error hooks) */
    int reused;             /* the connection was reused from the pool */
    int coalesced;          /* served by another caller's flight */
    /* Since 0.3: this attempt's HTTP bytes written and read (end/error
     * hooks), streamed bodies included. */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    /* Since 0.3: the protocol of this attempt's response: 10, 11 or 20
     * (0 when none came). */
    int http_version;
} sluice_request_info;

typedef void (*sluice_request_hook)(const sluice_request_info *info, void *ud);

typedef enum sluice_pool_event_type {
    SLUICE_POOL_CONNECT = 0,
    SLUICE_POOL_CHECKOUT = 1,
    SLUICE_POOL_CHECKIN = 2,
    SLUICE_POOL_CLOSE = 3
} sluice_pool_event_type;

/* Why a pooled resource was closed. */
typedef enum sluice_close_reason {
    SLUICE_CLOSE_EXPIRED = 0,      /* idle past keepalive_expiry_ms */
    SLUICE_CLOSE_LIFETIME = 1,     /* older than max_lifetime_ms */
    SLUICE_CLOSE_OVERFLOW = 2,     /* returned past max_idle_per_host, or closed to make room at a limit */
    SLUICE_CLOSE_BROKEN = 3,       /* returned as not reusable */
    SLUICE_CLOSE_STALE = 4,        /* found closed by the peer before reuse */
    SLUICE_CLOSE_SHUTDOWN = 5,     /* pool freed */
    SLUICE_CLOSE_REASONS_ = 6
} sluice_close_reason;

typedef struct sluice_pool_event {
    sluice_pool_event_type type;
    const char *origin;          /* "scheme://host:port" */
    int reason;                  /* sluice_close_reason for CLOSE, else -1 */
    int64_t wait_us;             /* CHECKOUT: time spent waiting */
} sluice_pool_event;

typedef void (*sluice_pool_hook)(const sluice_pool_event *ev, void *ud);

/* ------------------------------------------------------------------------ */
/* Factory                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum sluice_preset {
    SLUICE_PRESET_DEFAULT = 0,          /* 100 / 20 idle per host / 5 s expiry */
    SLUICE_PRESET_HIGH_THROUGHPUT = 1,  /* 200 / 50 / 30 s */
    SLUICE_PRESET_SERVERLESS = 2,       /* 50 / 10 / 5 s */
    SLUICE_PRESET_BACKGROUND_WORKER = 3 /* 100 / 30 / 120 s */
} sluice_preset;

typedef enum sluice_fail_mode {
    SLUICE_FAIL_OPEN = 0,    /* Redis unreachable: allow */
    SLUICE_FAIL_CLOSED = 1,  /* Redis unreachable: deny with SLUICE_ELIMITER */
    SLUICE_FAIL_LOCAL = 2    /* Redis unreachable: in-process GCRA at rate / expected_instances */
} sluice_fail_mode;

/* HTTP/2 (since 0.3).  Over https the protocol is negotiated by ALPN; an
 * origin that speaks h2 is reached over few connections (one, until its
 * stream limit is met) that every thread of the factory multiplexes. */
typedef enum sluice_http2_mode {
    SLUICE_HTTP2_AUTO = 0,            /* https: offer "h2,http/1.1" by ALPN; http: HTTP/1.1 */
    SLUICE_HTTP2_OFF = 1,             /* HTTP/1.1 only */
    SLUICE_HTTP2_PRIOR_KNOWLEDGE = 2, /* http: h2c without Upgrade (RFC 9113 3.3); https: as AUTO */
    SLUICE_HTTP2_ALPN = 3             /* in a client: AUTO whatever the factory says */
} sluice_http2_mode;

typedef struct sluice_factory_opts {
    /* connection pool (shared by every client of the factory) */
    int max_connections;          /* all origins; SLUICE_OFF = unlimited */
    int max_connections_per_host; /* 0 = max_connections */
    int max_idle_per_host;        /* idle kept per origin; more are closed */
    int keepalive_expiry_ms;      /* idle longer and it is closed */
    int max_lifetime_ms;          /* recycled after this age; 0 = never */
    int pool_timeout_ms;          /* checkout wait at the limit (default 5000) */
    int connect_timeout_ms;       /* name lookup + TCP connect + TLS handshake (default 5000) */
    int dns_ttl_ms;               /* longest a DNS answer is kept; shorter TTLs win (default 60000) */
    /* DNS servers as "ip[:port],[ipv6][:port]", e.g. "127.0.0.1:5353,[::1]:53"
     * (default port 53); NULL = the system's configuration (/etc/resolv.conf).
     * /etc/hosts is read first either way; with servers named here, search
     * domains are not appended.  Copied.  A malformed list fails
     * sluice_factory_new with SLUICE_EINVAL. */
    const char *dns_servers;
    int tcp_keepalive;            /* 1 = SO_KEEPALIVE on pooled sockets */
    int tcp_keepidle_s, tcp_keepintvl_s, tcp_keepcnt;
    size_t max_response_bytes;    /* default 64 MiB */
    size_t max_header_bytes;      /* default 64 KiB */
    const char *user_agent;       /* default "sluice/VERSION" */

    /* TLS */
    const char *ca_file;          /* PEM bundle; default: the system store */
    const char *ca_path;          /* directory of hashed PEM certificates */
    const char *client_cert_file; /* PEM, for mutual TLS */
    const char *client_key_file;
    int tls_min_version;          /* 12 or 13 (default 12) */
    int tls_insecure_skip_verify; /* 1 = do not verify (logs a warning) */

    /* rate limiter */
    const char *redis_url;        /* NULL: $SLUICE_REDIS_URL, else in-process */
    const char *limiter_prefix;   /* Redis key prefix (default "sluice") */
    int redis_timeout_ms;         /* bound on one decision (default 50) */
    sluice_fail_mode limiter_fail_mode; /* default SLUICE_FAIL_LOCAL */
    int expected_instances;       /* for SLUICE_FAIL_LOCAL (default 1) */

    /* coalescer */
    size_t coalesce_cache_max_bytes; /* bound on the micro-cache (coalesce_window_ms):
                                        entries with their responses; past it the
                                        oldest go first (default 8 MiB, 0 = default) */

    /* Hooks, each called with hook_ud; every one may be NULL.  They run
     * on the thread named below, never with a library lock held, so a
     * hook may call back into the library; the info, the event and their
     * strings are valid only during the call.  Keep them short: a request
     * hook runs inside the caller's sluice_client_do.
     *
     * Request hooks, per attempt.  Each attempt a call makes upstream
     * (the first, every retry, each redirect hop) fires on_request_start
     * when it goes to the pool (info.attempt = 1, 2, ...), then exactly
     * one of on_request_end, when a response arrived (any status, in
     * info.status), or on_request_error, when none did (info.error);
     * duration_us covers that attempt, pool wait and connect included.
     * An attempt refused before it starts (circuit open, rate limited,
     * bad input) fires none: the call's return code tells.  All of them
     * run on the thread inside sluice_client_do (an executor's worker for
     * sluice_submit).
     *
     * Coalesced callers.  A follower of another caller's flight, or a
     * caller served by the micro-cache, makes no attempt: it gets no
     * on_request_start, and exactly one on_request_end (the shared
     * status) or on_request_error (the shared error, or SLUICE_ETIMEDOUT
     * when it gave up waiting) with coalesced = 1, attempt = 0 and
     * duration_us the call's time so far.  The leader's hooks are the ones above,
     * with coalesced = 0, fired once for the flight however many callers
     * share it.
     *
     * Pool events.  SLUICE_POOL_CONNECT when a new connection is made,
     * then its SLUICE_POOL_CHECKOUT; SLUICE_POOL_CHECKOUT for every
     * checkout (wait_us = the time it waited for capacity, else 0);
     * SLUICE_POOL_CHECKIN when a checked-out connection is given back,
     * before it is kept or closed; SLUICE_POOL_CLOSE with the reason
     * whenever one is closed.  sluice_client_warmup makes them too.  They
     * run on the thread that caused them: a caller's, the pool's
     * housekeeping thread (EXPIRED, LIFETIME when idle) or the one in
     * sluice_factory_free (SHUTDOWN).  Counted, they
     * match the pool statistics: CONNECT = created, CHECKOUT = created +
     * reused, CLOSE by reason = closed[reason]. */
    sluice_request_hook on_request_start;
    sluice_request_hook on_request_end;
    sluice_request_hook on_request_error;
    sluice_pool_hook on_pool_event;
    void *hook_ud;

    /* HTTP proxy (since 0.3): "http://[user:password@]host[:port]" (port
     * 1080 when none is given, as curl assumes) for every request of the
     * factory's clients.  NULL = the environment, read once here in
     * sluice_factory_new with curl's rules: https_proxy or HTTPS_PROXY for
     * https:// targets, http_proxy (lower case only) for http://, then
     * all_proxy or ALL_PROXY; no_proxy or NO_PROXY lists hosts reached
     * directly (names with their subdomains, IPs, CIDR networks, or "*").
     * "" = no proxy, whatever the environment says.  http:// targets go to
     * the proxy in absolute form; https:// targets through a CONNECT
     * tunnel, with TLS inside it verified against the target's name.
     * Credentials are sent as Proxy-Authorization: Basic and never appear
     * in messages or logs.  Copied (parsed) at creation; a malformed URL
     * fails sluice_factory_new with SLUICE_EINVAL. */
    const char *proxy_url;
    /* Since 0.3.  Idle connections kept open per origin (HikariCP's
     * minimumIdle; default 0).  For every origin that has been used or
     * warmed up, the pool's housekeeping thread checks about every 100 ms
     * that idle connections are still open and reconnects what is missing
     * (after expiry, lifetime recycling or a close by the server), within
     * max_connections_per_host and max_connections, off every caller's
     * path and never under the pool lock.  A failing reconnect backs off
     * from 100 ms to 30 s and logs one warning.  Capped at
     * max_idle_per_host.  Its connects and closes make pool events
     * (CONNECT; CLOSE with STALE for one found closed) on that thread. */
    int min_idle_per_host;
    /* Since 0.3: HTTP/2 (README "HTTP/2").  `http2` is the default mode of
     * every client (SLUICE_HTTP2_AUTO).  An h2 origin gets one connection,
     * and another only when every open one carries as many streams as the
     * server's SETTINGS_MAX_CONCURRENT_STREAMS allows (or h2_max_streams,
     * when lower), within max_connections_per_host; a call that finds all
     * at their limit waits in arrival order up to pool_timeout_ms (and its
     * deadline) for SLUICE_EPOOLTIMEOUT.  h2_stream_window is each
     * stream's receive window (default 1 MiB): a caller that reads slowly
     * stalls only its own stream.  A connection with no frame for
     * h2_ping_interval_ms (default 30000; SLUICE_OFF = never) is sent a
     * PING; without an answer within h2_ping_timeout_ms (default 15000)
     * its calls fail with SLUICE_EIO.  Idle h2 connections close after
     * keepalive_expiry_ms. */
    sluice_http2_mode http2;
    int h2_max_streams;           /* 0 = the server's limit */
    int h2_stream_window;         /* bytes; 0 = 1 MiB */
    int h2_ping_interval_ms;
    int h2_ping_timeout_ms;
} sluice_factory_opts;

/* Fills `o` with the preset's defaults.  Thread-safe. */
SLUICE_API void sluice_factory_opts_init(sluice_factory_opts *o, sluice_preset p);

/* Creates a factory: one connection pool, TLS context, DNS cache, limiter
 * and in-flight table shared by every client it hands out.  `o` may be NULL
 * for the default preset; it is copied.  Returns NULL on failure with `err`
 * set.  The caller owns the factory and frees it with sluice_factory_free().
 * Thread-safe.
 *
 * fork(): the child may use the factory (or free it) on connections of its
 * own: its first checkout drops the parent's pooled connections without
 * writing to them (no TLS close_notify), so the parent's go on unharmed;
 * the housekeeping thread starts again and the random jitter is seeded
 * again.  Call fork() only while no other thread is inside a sluice call:
 * a lock a caller held stays held in the child.  sluice's own threads are
 * taken care of.  The same goes for limiters and sluice_pools; an executor
 * stays with the parent (see sluice_executor_free). */
SLUICE_API sluice_factory *sluice_factory_new(const sluice_factory_opts *o, sluice_error *err);

/* Closes the factory: new calls through it or its clients fail with
 * SLUICE_ECLOSED, calls in flight finish, then every client, connection and
 * thread it owns is released.  Client pointers are invalid afterwards.
 * Call it once, from one thread; NULL is a no-op. */
SLUICE_API void sluice_factory_free(sluice_factory *f);

/* ------------------------------------------------------------------------ */
/* Clients                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum sluice_jitter {
    SLUICE_JITTER_FULL = 0,  /* sleep uniform in [0, backoff] (default) */
    SLUICE_JITTER_EQUAL = 1, /* backoff/2 + uniform in [0, backoff/2] */
    SLUICE_JITTER_NONE = 2
} sluice_jitter;

/* Retry policy, with urllib3's Retry meaning.  sluice_client_opts_init()
 * writes the defaults below; 0 means 0 where noted ("0 = ..."), else 0
 * takes the default. */
typedef struct sluice_retry_opts {
    int max_retries;              /* retries after the first attempt (default 3; 0 = none) */
    const int *retry_statuses;    /* default 408, 429, 500, 502, 503, 504 */
    size_t nretry_statuses;
    const char *const *retry_methods; /* NULL-terminated; default the idempotent ones */
    int backoff_factor_ms;        /* attempt n sleeps up to factor * 2^(n-1) (default 100; 0 = no sleep) */
    int backoff_max_ms;           /* cap on one sleep (default 10000; 0 = no sleep) */
    sluice_jitter jitter;         /* default (and zero value) FULL; NONE = no jitter */
    int retry_after_max_ms;       /* cap on an honoured Retry-After (default 30000; 0 = ignore it) */
    int budget_ratio_pct;         /* retries at most this % of requests (default 20; SLUICE_OFF = no budget) */
    int budget_window_ms;         /* over this window (default 10000) */
    int budget_min_per_sec;       /* floor of retries always allowed (default 10; SLUICE_OFF = none) */
} sluice_retry_opts;

typedef enum sluice_breaker_state {
    SLUICE_BREAKER_CLOSED = 0,
    SLUICE_BREAKER_OPEN = 1,
    SLUICE_BREAKER_HALF_OPEN = 2
} sluice_breaker_state;

typedef void (*sluice_breaker_hook)(const char *service, const char *endpoint,
                                    sluice_breaker_state from, sluice_breaker_state to,
                                    void *ud);

/* Circuit breaker, one per client endpoint.  Every attempt is recorded,
 * retries included (a 5xx or transport error is a failure, a 4xx is not),
 * so with the defaults a call's 4 failed attempts and the next call's
 * first open it.  A call whose retry the breaker then refuses returns its
 * last real outcome, its message saying the breaker opened; only a call
 * that made no attempt gets SLUICE_ECIRCUITOPEN.  A zero field takes its
 * default (no count here is meaningful at 0).  resilience4j's defaults,
 * for comparison: rate 50% over 100 calls after 100 calls, 60 s open, 10
 * probes, no consecutive rule. */
typedef struct sluice_breaker_opts {
    int disabled;                 /* 1 = no breaker */
    int failure_threshold;        /* consecutive failures that open (default 5) */
    int failure_rate_pct;         /* failure rate that opens (default 50) */
    int window_size;              /* calls in the rate window (default 100) */
    int min_calls;                /* calls before the rate counts (default 20) */
    int recovery_timeout_ms;      /* open for this long (default 30000) */
    int half_open_probes;         /* probes that must succeed (default 3) */
    sluice_breaker_hook on_state_change;
    void *hook_ud;
} sluice_breaker_opts;

typedef enum sluice_failover {
    SLUICE_FAILOVER_PRIMARY_FIRST = 0,
    SLUICE_FAILOVER_ROUND_ROBIN = 1
} sluice_failover;

typedef enum sluice_limit_scope {
    SLUICE_LIMIT_PER_SERVICE = 0,  /* one key for the service */
    SLUICE_LIMIT_PER_ENDPOINT = 1  /* one key per rate_key (default: the path) */
} sluice_limit_scope;

typedef struct sluice_client_rate_limit {
    double rate;                  /* requests per period; 0 = no limit */
    int period_ms;                /* default 1000 */
    int burst;                    /* default max(1, rate) */
    sluice_limit_scope scope;
    int fail_fast;                /* 1 = SLUICE_ERATELIMITED at once instead of waiting */
} sluice_client_rate_limit;

typedef struct sluice_client_opts {
    const char *base_url;              /* "https://api.example.com/v1" (required to create) */
    const char *const *fallback_urls;  /* NULL-terminated, tried after base_url */
    sluice_failover failover;
    const char *api_version;           /* part of the client's key; may be NULL */
    const sluice_header *headers;      /* sent with every request */
    size_t nheaders;

    int connect_timeout_ms;  /* default: the factory's */
    int read_timeout_ms;     /* per read (default 30000) */
    int write_timeout_ms;    /* per write (default 30000) */
    int timeout_ms;          /* whole call when the request gives none (default 60000) */

    sluice_retry_opts retry;
    sluice_breaker_opts breaker;
    sluice_client_rate_limit rate_limit;

    int max_in_flight;       /* bulkhead: concurrent calls (0 = unlimited) */

    int follow_redirects;    /* 1 = follow 301/302/303/307/308 */
    int max_redirects;       /* default 10 */
    int allow_https_to_http; /* 1 = allow a redirect from https to http */

    int disable_coalescing;  /* 1 = never coalesce */
    int coalesce_window_ms;  /* micro-cache for finished 2xx results (default 0) */

    /* Unix domain socket (since 0.3): connect to this path instead of
     * base_url's host and port, which are still sent as Host (and used
     * for SNI and verification when base_url is https).  NULL = TCP.
     * Connections are pooled per origin and path; the factory's proxy is
     * not used.  Copied; a path longer than a sockaddr_un holds is
     * SLUICE_EINVAL at creation, a missing socket SLUICE_ECONNECT naming
     * the path on the call. */
    const char *unix_socket_path;
    /* Since 0.3: content decoding.  0 (default) sends "Accept-Encoding:
     * gzip, deflate, br" and decodes such a body before the caller sees it
     * (sluice_response_decoded()); SLUICE_OFF sends nothing and
     * hands the body over as sent.  A request or client header of the
     * caller's own named Accept-Encoding also turns decoding off for that
     * call.  max_response_bytes bounds the decoded size. */
    int decompress;
    /* Since 0.3.  1 = an adaptive concurrency limit on the calls this
     * client has upstream: the limit follows measured latency (a gradient
     * of the baseline RTT against the recent one, after Netflix's
     * Gradient2; README "Sizing"), starting at 4.  A call over the limit
     * waits in arrival order up to its deadline, holding no connection,
     * then fails with SLUICE_EQUEUEFULL.  Only calls that go upstream take
     * a place: a coalesced follower or a micro-cache hit takes none.
     * max_in_flight then bounds the limit from above (0 = no bound) in
     * place of the static bulkhead.  Default 0: off. */
    int adaptive_concurrency;
    /* Since 0.3.  The adaptive limit's floor (default 1; 0 = default,
     * negative is SLUICE_EINVAL). */
    int min_in_flight;
    /* Since 0.3.  This client's HTTP/2 mode (sluice_http2_mode): 0 = the
     * factory's, SLUICE_HTTP2_ALPN = AUTO even where the factory says
     * otherwise. */
    int http2;
} sluice_client_opts;

/* Fills every field of `o` with its default, retry and breaker included
 * (connect_timeout_ms stays 0: the factory's).  Thread-safe. */
SLUICE_API void sluice_client_opts_init(sluice_client_opts *o);

/* Gets or creates the client for (service, o->api_version).  The same key
 * gives the same pointer from any thread.  With `o` NULL it only looks up
 * the client without an api_version (SLUICE_ENOTFOUND if absent, the
 * message listing the api_versions the service has; use
 * sluice_factory_client_lookup() for a versioned one).  A later call
 * whose options differ from the first gives SLUICE_EEXIST naming the
 * service.  The factory owns the client; it lives until the factory is
 * freed.  Thread-safe. */
SLUICE_API sluice_client *sluice_factory_client(sluice_factory *f, const char *service,
                                                const sluice_client_opts *o, sluice_error *err);

/* Like sluice_factory_client() with an explicit api_version for look-up. */
SLUICE_API sluice_client *sluice_factory_client_lookup(sluice_factory *f, const char *service,
                                                       const char *api_version,
                                                       sluice_error *err);

/* Opens up to n connections to the client's base URL ahead of time and
 * leaves them idle in the pool.  Returns the number opened or a negative
 * code.  An origin that speaks HTTP/2 needs one connection, shared: that
 * one is opened (or found open) and 1 returned.  Thread-safe. */
SLUICE_API int sluice_client_warmup(sluice_client *c, int n, sluice_error *err);

/* ------------------------------------------------------------------------ */
/* Requests and responses                                                   */
/* ------------------------------------------------------------------------ */

#define SLUICE_REQ_NO_COALESCE 0x1u  /* never share this request's flight */
#define SLUICE_REQ_COALESCE 0x2u     /* coalesce although the method is not GET/HEAD */
#define SLUICE_REQ_IDEMPOTENT 0x4u   /* safe to retry whatever the method */
#define SLUICE_REQ_NO_RETRY 0x8u     /* one attempt only */

typedef struct sluice_request {
    const char *method;             /* NULL = GET */
    const char *path;               /* relative to base_url; may carry a query; a URL
                                       ("http://..." or "//host/...") is SLUICE_EINVAL */
    const sluice_header *query;     /* appended, percent-encoded */
    size_t nquery;
    const sluice_header *headers;
    size_t nheaders;
    const void *body;
    size_t body_len;
    int timeout_ms;                 /* whole call; 0 = the client's timeout_ms */
    const char *rate_key;           /* limiter endpoint key; NULL = path without query */
    unsigned flags;                 /* SLUICE_REQ_* */

    /* Since 0.3: streamed bodies.  Each callback runs in the thread that
     * called sluice_client_do() (an executor's worker for sluice_submit),
     * never with a library lock held, and gets body_ud.
     *
     * on_body: the response body is handed over piece by piece as it
     * arrives (decoded, see sluice_client_opts.decompress), and the
     * response's own body is empty; status and headers are there as
     * usual.  A piece is valid only during the call.  A non-zero return
     * ends the call with SLUICE_ECANCELED and closes the connection.  Once
     * a byte was handed over the call is never retried; a streamed call
     * is never coalesced; max_response_bytes still bounds the total.
     * With follow_redirects, a redirect's own body is not handed over.
     *
     * body_read: the request body is pulled in pieces instead of `body`
     * (which must then be NULL): it writes at most cap bytes into buf and
     * returns their count, 0 at the end, or a negative value to stop the
     * call with SLUICE_ECANCELED.  body_len is then the length (the
     * callback must give exactly that many bytes) or SLUICE_BODY_CHUNKED
     * for chunked transfer coding.  Without body_rewind a body that was
     * read from is never sent again: no retry, no stale-connection resend.
     * body_rewind, when set, starts the body over (0, or non-zero to stop
     * with SLUICE_ECANCELED) and makes the request retryable as usual. */
    int (*on_body)(const void *chunk, size_t len, void *ud);
    long (*body_read)(void *buf, size_t cap, void *ud);
    int (*body_rewind)(void *ud);
    void *body_ud;
} sluice_request;

/* body_len of a body_read request whose length is not known: it is sent
 * with Transfer-Encoding: chunked.  Since 0.3. */
#define SLUICE_BODY_CHUNKED ((size_t)-1)

/* Sends the request and blocks until a response or the deadline.  On
 * success returns 0 and *out holds a response the caller frees with
 * sluice_response_free(); any HTTP status counts as success (including
 * a retryable status after retries ran out).  On failure returns a
 * negative code, *out is NULL and `err` says why.  The request and
 * everything it points to are only read during the call.  Thread-safe:
 * any number of threads may call it on the same client. */
SLUICE_API int sluice_client_do(sluice_client *c, const sluice_request *req,
                                sluice_response **out, sluice_error *err);

/* GET `path`; the same contract as sluice_client_do(). */
SLUICE_API int sluice_get(sluice_client *c, const char *path, sluice_response **out,
                          sluice_error *err);

/* Responses are immutable; readers on any thread.  Pointers returned stay
 * valid until the response is freed. */
SLUICE_API int sluice_response_status(const sluice_response *r);
/* The first header called `name` (case-insensitive), or NULL. */
SLUICE_API const char *sluice_response_header(const sluice_response *r, const char *name);
/* The number of headers, and the i-th one (NULL past the end). */
SLUICE_API size_t sluice_response_header_count(const sluice_response *r);
SLUICE_API const sluice_header *sluice_response_header_at(const sluice_response *r, size_t i);
/* The body (never NULL; NUL-terminated for convenience) and its length
 * in *len; `len` may be NULL when the length is not wanted. */
SLUICE_API const void *sluice_response_body(const sluice_response *r, size_t *len);
/* 1 if this response was served by another caller's flight or the
 * micro-cache. */
SLUICE_API int sluice_response_coalesced(const sluice_response *r);
/* 1 if the connection came from the pool rather than a new connect. */
SLUICE_API int sluice_response_reused(const sluice_response *r);
/* Number of attempts the call made (1 + retries). */
SLUICE_API int sluice_response_attempts(const sluice_response *r);
/* 1 if a gzip, deflate or br Content-Encoding was removed from the body (its
 * Content-Encoding and Content-Length fields are then gone too, as they
 * described the encoded form).  Since 0.3. */
SLUICE_API int sluice_response_decoded(const sluice_response *r);
/* The protocol the response came by: 10 (HTTP/1.0), 11 (HTTP/1.1) or 20
 * (HTTP/2).  Since 0.3. */
SLUICE_API int sluice_response_http_version(const sluice_response *r);
/* Releases the caller's reference.  Thread-safe. */
SLUICE_API void sluice_response_free(sluice_response *r);

/* ------------------------------------------------------------------------ */
/* Rate limiter (GCRA)                                                      */
/* ------------------------------------------------------------------------ */

typedef struct sluice_limiter_opts {
    const char *prefix;           /* key prefix (default "sluice") */
    int redis_timeout_ms;         /* bound on one decision (default 50) */
    sluice_fail_mode fail_mode;   /* default SLUICE_FAIL_LOCAL */
    int expected_instances;       /* for SLUICE_FAIL_LOCAL (default 1) */

    /* coalescer */
    size_t coalesce_cache_max_bytes; /* bound on the micro-cache (coalesce_window_ms):
                                        entries with their responses; past it the
                                        oldest go first (default 8 MiB, 0 = default) */
    int pool_size;                /* Redis connections (default 4) */
} sluice_limiter_opts;

/* `rate` requests per `period_ms`, with up to `burst` at once. */
typedef struct sluice_limit {
    double rate;
    int period_ms;
    int burst;
} sluice_limit;

typedef struct sluice_limit_result {
    int allowed;
    long remaining;        /* requests allowed right now after this one */
    long retry_after_ms;   /* when denied: until the request would be allowed; else -1 */
    long reset_after_ms;   /* until the key is back to a full burst */
} sluice_limit_result;

/* Named like the function that fills it (as POSIX's struct stat): use
 * `struct sluice_limiter_stats`. */
struct sluice_limiter_stats {
    uint64_t allowed, throttled, waits, fallbacks, redis_errors;
    uint64_t round_trips, decisions;
    /* Redis Cluster only (0 otherwise).  round_trips then counts one
     * pipeline to one primary (one EVALSHA per slot group in it). */
    uint64_t cluster_nodes;          /* primaries in the current slot map */
    uint64_t cluster_moved;          /* MOVED redirects followed */
    uint64_t cluster_ask;            /* ASK redirects followed */
    uint64_t cluster_tryagain;       /* TRYAGAIN answers sent again */
    uint64_t cluster_refreshes;      /* slot maps fetched (CLUSTER SLOTS) */
    uint64_t cluster_node_fallbacks; /* decisions sent to the fail mode because
                                        their node failed, had no primary or
                                        the cluster was down (in fallbacks too) */
    /* Redis Sentinel only (0 otherwise): times the master's address went
     * stale and the sentinels were asked again. */
    uint64_t sentinel_rediscoveries;
};

SLUICE_API void sluice_limiter_opts_init(sluice_limiter_opts *o);

/* Creates a limiter.  `redis_url` is "redis://[[user]:password@]host[:port][/db]",
 * "unix:///path[?db=N]",
 * "redis+sentinel://[[user]:password@]host[:port][,...]/master[/db]" (the
 * master found through Redis Sentinel, followed across failovers; the
 * credentials are the master's) or, for a Redis Cluster,
 * "redis+cluster://[[user]:password@]host:port[,host:port...]" (seed
 * nodes; no db but 0, no '{' or '}' in the prefix, and a seed without
 * cluster support are SLUICE_EINVAL); NULL means $SLUICE_REDIS_URL (read here, at
 * creation, and never on a decision), and with that
 * unset (or "") the in-process limiter.  A malformed URL gives SLUICE_EINVAL;
 * a password Redis refuses, SLUICE_ELIMITER; an unreachable Redis does not
 * fail creation (the fail mode applies until it is back).  Passwords never
 * appear in messages or logs.  Returns NULL with `err` set on failure.
 * Caller owns it.  Every other limiter function is thread-safe.
 * Results: allowed; remaining right now after this one (-1 when the OPEN
 * fail mode answered); retry_after_ms (-1 when allowed); reset_after_ms. */
SLUICE_API sluice_limiter *sluice_limiter_new(const char *redis_url, const sluice_limiter_opts *o,
                                              sluice_error *err);
/* Decides whether `cost` requests under `key` are allowed now, consuming
 * them if so. */
SLUICE_API int sluice_limiter_check(sluice_limiter *l, const char *key, const sluice_limit *lim,
                                    int cost, sluice_limit_result *r);
/* The result a check of cost 1 would give, consuming nothing. */
SLUICE_API int sluice_limiter_peek(sluice_limiter *l, const char *key, const sluice_limit *lim,
                                   sluice_limit_result *r);
/* Waits until allowed, up to timeout_ms (negative = no limit, 0 = one
 * check).  SLUICE_ERATELIMITED when the deadline comes first, at once when
 * the announced wait already ends past it. */
SLUICE_API int sluice_limiter_acquire(sluice_limiter *l, const char *key, const sluice_limit *lim,
                                      int cost, int timeout_ms, sluice_limit_result *r);
/* Holds off every user of `key` (every instance, with Redis) for `ms`
 * from now; then the bucket refills from empty at the normal rate. */
SLUICE_API int sluice_limiter_cooldown(sluice_limiter *l, const char *key, const sluice_limit *lim,
                                       int ms);
/* Counters since creation.  Thread-safe. */
SLUICE_API void sluice_limiter_stats(sluice_limiter *l, struct sluice_limiter_stats *out);

/* One Redis Cluster node the limiter has known, as
 * sluice_limiter_cluster_nodes reports it. */
struct sluice_limiter_node_stats {
    char addr[272];           /* "host:port" ("[v6]:port" for IPv6) */
    int primary;              /* 1 when the current slot map names it for a slot */
    uint64_t round_trips;     /* pipelines sent to it */
    uint64_t decisions;       /* decisions they carried */
    uint64_t redis_errors;    /* failed connects, round trips and queue timeouts */
    uint64_t fallbacks;       /* decisions the fail mode made because it failed */
};
/* Fills out[0..cap) with the nodes of the limiter's Redis Cluster (every
 * primary it has routed to or seen in a slot map, in the order it met
 * them) and returns how many there are, which may be more than cap; 0 for
 * a limiter not on a cluster.  `out` may be NULL when cap is 0.
 * Thread-safe. */
SLUICE_API size_t sluice_limiter_cluster_nodes(sluice_limiter *l,
                                               struct sluice_limiter_node_stats *out, size_t cap);
/* 1 when backed by Redis, 0 when in-process. */
SLUICE_API int sluice_limiter_is_shared(const sluice_limiter *l);
SLUICE_API void sluice_limiter_free(sluice_limiter *l);

/* ------------------------------------------------------------------------ */
/* Generic resource pool                                                    */
/* ------------------------------------------------------------------------ */

/* How the pool makes, checks and destroys resources.  The pool never calls
 * these with its lock held.  Set `create` or `create_timed` (both set:
 * `create_timed` is used). */
typedef struct sluice_pool_ops {
    /* Creates a resource into *res; returns 0 or a SLUICE_E* code. */
    int (*create)(void *ctx, void **res, sluice_error *err);
    /* Destroys a resource. */
    void (*destroy)(void *ctx, void *res);
    /* Optional: 1 if an idle resource is still usable before reuse. */
    int (*alive)(void *ctx, void *res);
    /* Since 0.2.  Like create, and told how long the caller of
     * sluice_pool_get still waits: `timeout_ms` milliseconds (rounded up;
     * 0 = the deadline has passed, negative = no deadline), so a connect
     * can give up in time.  `err` is the one given to
     * sluice_pool_get_err (NULL from sluice_pool_get); a code returned
     * here is returned by the get. */
    int (*create_timed)(void *ctx, int timeout_ms, void **res, sluice_error *err);
} sluice_pool_ops;

typedef struct sluice_pool_opts {
    int max_size;          /* open resources at most; 0 = unlimited */
    int max_idle;          /* idle kept; more are destroyed (default max_size) */
    int idle_timeout_ms;   /* idle longer and it is destroyed; 0 = never */
    int max_lifetime_ms;   /* recycled after this age; 0 = never */
    /* Since 0.3.  Idle resources a housekeeping thread keeps ready from
     * sluice_pool_new on (HikariCP's minimumIdle): it creates what is
     * missing within about 100 ms, never on a caller's thread, up to
     * max_size; a failing create is retried with a backoff from 100 ms to
     * 30 s and logs one warning.  With ops->alive it also drops idle ones
     * that are no longer usable.  0 = none; more than max_idle is
     * SLUICE_EINVAL. */
    int min_idle;
} sluice_pool_opts;

/* Use as `struct sluice_pool_stats` (the function has the same name). */
struct sluice_pool_stats {
    int open, idle, in_use, waiting;
    uint64_t created, reused, timeouts;
    uint64_t closed[SLUICE_CLOSE_REASONS_];
    int peak_in_use;
    uint64_t wait_us_total;        /* summed over checkouts that queued */
    uint64_t handshakes_full, handshakes_resumed;  /* TLS pools */
    /* Since 0.2.  Checkouts that queued (granted or timed out) and their
     * wait: median, 99th percentile (within 25%) and the longest, in
     * microseconds.  Checkouts that found capacity at once are not in it. */
    uint64_t waited, wait_p50_us, wait_p99_us, wait_max_us;
    /* Since 0.3, the factory's pool only: HTTP/2 connections open, streams
     * open now and at most, GOAWAYs received, streams the server refused
     * (REFUSED_STREAM; sent again elsewhere when they could be). */
    int h2_open, h2_streams, h2_streams_peak;
    uint64_t h2_goaways, h2_refused;
};

/* Creates a pool.  `ops` and `ctx` must outlive it.  Thread-safe.  In a
 * fork() child, resources made before the fork are never handed out: the
 * first checkout there passes them to ops->destroy, which must release them
 * without writing (the parent still uses what is under them). */
SLUICE_API sluice_pool *sluice_pool_new(const sluice_pool_opts *o, const sluice_pool_ops *ops,
                                        void *ctx, sluice_error *err);
/* Checks a resource out: reuses the most recently used idle one, or
 * creates one, or waits up to `timeout_ms` (negative = forever) for
 * SLUICE_EPOOLTIMEOUT.  Waiters are served in arrival order; a resource put
 * back while the oldest waiter has waited less than 20 ms stays free for
 * the next caller (often the thread that put it back), so no waiter waits
 * past 20 ms plus its turn among those that have waited that long; one left
 * free is taken by the oldest waiter within about a millisecond. */
SLUICE_API int sluice_pool_get(sluice_pool *p, int timeout_ms, void **res);
/* Since 0.2.  sluice_pool_get with the reason for a failure in *err: the
 * create callback's own error when creating failed.  `err` may be NULL. */
SLUICE_API int sluice_pool_get_err(sluice_pool *p, int timeout_ms, void **res,
                                   sluice_error *err);
/* Returns a resource; `reusable` 0 destroys it. */
SLUICE_API void sluice_pool_put(sluice_pool *p, void *res, int reusable);
/* A consistent snapshot.  Thread-safe. */
SLUICE_API void sluice_pool_stats(sluice_pool *p, struct sluice_pool_stats *out);
/* Destroys idle resources; every resource must have been returned. */
SLUICE_API void sluice_pool_free(sluice_pool *p);

/* Since 0.3.  Creates up to n resources now, on the calling thread, and
 * leaves them idle (seed "initialize()"): fewer when max_size leaves no
 * room; it never waits for capacity.  Each create gets up to 30 s (as
 * timeout_ms for create_timed).  Returns how many it created, or the
 * first create's error (with `err`, which may be NULL) when it created
 * none.  Thread-safe. */
SLUICE_API int sluice_pool_prefill(sluice_pool *p, int n, sluice_error *err);

/* Since 0.3.  One resource's usage (use as `struct sluice_pool_usage`). */
struct sluice_pool_usage {
    const void *res;        /* the resource, for identity: do not use it unless checked out */
    uint64_t checkouts;     /* times it was checked out */
    int64_t age_ms;         /* since it was created */
    int64_t idle_ms;        /* since it was last returned (or created, if never checked out); 0 while checked out */
    int in_use;             /* checked out now */
};

/* Since 0.3.  Fills out[0..cap) with the usage of every resource the pool
 * holds, oldest first, and returns how many it holds (more than cap when
 * out was too small; out may be NULL when cap is 0).  A consistent
 * snapshot; allocates nothing.  Thread-safe. */
SLUICE_API size_t sluice_pool_usage(sluice_pool *p, struct sluice_pool_usage *out, size_t cap);

/* ------------------------------------------------------------------------ */
/* Generic coalescer (singleflight)                                         */
/* ------------------------------------------------------------------------ */

/* A flight's result: `value` is shared by every caller and released with
 * the coalescer's release(value) when the last holder calls
 * sluice_flight_result_release().  Call that once for every result,
 * whatever the code.  On error, value is what fn left (NULL unless it set
 * one) and is still released.  Results without a flight (EINVAL, ENOMEM, a
 * follower's ETIMEDOUT) hold NULL; releasing them is a no-op.  A result may
 * be released after the coalescer was freed. */
typedef struct sluice_flight_result {
    int code;              /* the function's return code */
    void *value;
    int shared;            /* 1 for a follower */
    void *internal_;       /* private */
} sluice_flight_result;

/* The leader's work: fills *value, returns 0 or a SLUICE_E* code.  Runs on
 * the leader's thread with no coalescer lock held, so it may use the
 * coalescer for another key (asking for its own key gives SLUICE_EINVAL). */
typedef int (*sluice_flight_fn)(void *arg, void **value);
typedef void (*sluice_flight_release_fn)(void *value);

/* Creates a coalescer; `release` (may be NULL) frees a flight's value.
 * Caller owns it.  Thread-safe. */
SLUICE_API sluice_coalescer *sluice_coalescer_new(sluice_flight_release_fn release,
                                                  sluice_error *err);
/* Runs fn once for all concurrent callers with the same key bytes.  A
 * follower waits up to timeout_ms (negative = forever) and then gets
 * SLUICE_ETIMEDOUT without cancelling the leader.  Returns the code that
 * `out->code` holds.  Thread-safe. */
SLUICE_API int sluice_coalesce(sluice_coalescer *co, const void *key, size_t keylen,
                               int timeout_ms, sluice_flight_fn fn, void *arg,
                               sluice_flight_result *out);
SLUICE_API void sluice_flight_result_release(sluice_flight_result *r);
/* No call may be in flight; releases nothing the callers still hold. */
SLUICE_API void sluice_coalescer_free(sluice_coalescer *co);

/* ------------------------------------------------------------------------ */
/* Executor: worker threads, bounded queue, futures, batches                */
/* ------------------------------------------------------------------------ */

typedef struct sluice_executor_opts {
    int threads;            /* default 4 */
    int queue_capacity;     /* default 1024 */
    int cancel_on_free;     /* 1 = free cancels queued work; 0 = drains it */
} sluice_executor_opts;

typedef void (*sluice_task_fn)(void *arg);

/* Defaults: 4 threads, a queue of 1024, drain on free. */
SLUICE_API void sluice_executor_opts_init(sluice_executor_opts *o);
/* Starts `threads` workers (0 = 4, at most 1024) with a bounded queue
 * (0 = 1024).  Caller owns it.  Every function but _free is thread-safe. */
SLUICE_API sluice_executor *sluice_executor_new(int threads, int queue_capacity, sluice_error *err);
SLUICE_API sluice_executor *sluice_executor_new_opts(const sluice_executor_opts *o,
                                                     sluice_error *err);
/* Queues sluice_client_do(c, req) on a worker.  The request and all it
 * points to are copied.  Waits for queue space up to req->timeout_ms when
 * > 0, else until there is space; a queue still full then gives NULL with
 * SLUICE_EQUEUEFULL, a closing executor SLUICE_ECLOSED.  The caller owns
 * the future (sluice_future_free). */
SLUICE_API sluice_future *sluice_submit(sluice_executor *ex, sluice_client *c,
                                        const sluice_request *req, sluice_error *err);
/* Like sluice_submit but SLUICE_EQUEUEFULL at once when full. */
SLUICE_API sluice_future *sluice_try_submit(sluice_executor *ex, sluice_client *c,
                                            const sluice_request *req, sluice_error *err);
/* Runs fn(arg) on a worker; waits for queue space up to timeout_ms
 * (negative = forever, 0 = not at all).  The caller owns the returned
 * future and frees it with sluice_future_free() (at any time; the task
 * still runs), even when it does not wait for it; NULL with `err` set when
 * queueing failed. */
SLUICE_API sluice_future *sluice_executor_run(sluice_executor *ex, sluice_task_fn fn, void *arg,
                                              int timeout_ms, sluice_error *err);
/* Waits up to timeout_ms (negative = forever) and returns the work's code;
 * SLUICE_ETIMEDOUT leaves the work running.  The response moves to the
 * first waiter that passes `out` (later waits: same code, *out NULL). */
SLUICE_API int sluice_future_wait(sluice_future *f, int timeout_ms, sluice_response **out,
                                  sluice_error *err);
/* Cancels queued work, which completes with SLUICE_ECANCELED (returns 0);
 * running or finished work gives SLUICE_EINVAL. */
SLUICE_API int sluice_future_cancel(sluice_future *f);
/* Frees the future at any time: before, during or after its work, and
 * after sluice_executor_free.  Work still to come runs and its response is
 * freed. */
SLUICE_API void sluice_future_free(sluice_future *f);
/* Runs the n requests with at most max_concurrency in flight (0 = the
 * thread count); the calling thread runs items too, so it never deadlocks
 * from a worker.  outs[i] and codes[i] follow input order; one item's
 * failure never hides another's result.  Returns 0 once every item was
 * attempted, SLUICE_ECLOSED (in every code) for a closing executor. */
SLUICE_API int sluice_batch(sluice_executor *ex, sluice_client *c, const sluice_request *reqs,
                            size_t n, int max_concurrency, sluice_response **outs, int *codes);
/* Drains (or with cancel_on_free cancels) the queue, then joins the
 * workers.  Not from one of its own workers.  NULL is a no-op.  In a fork()
 * child an executor made before the fork has no workers: submitting fails
 * with SLUICE_ECLOSED and freeing it releases nothing (make a new one). */
SLUICE_API void sluice_executor_free(sluice_executor *ex);

/* ------------------------------------------------------------------------ */
/* Observability                                                            */
/* ------------------------------------------------------------------------ */

/* Latency of whole calls, from sluice_client_do's entry to its return
 * (coalesced waits, pool waits, retries and backoff included), read from a
 * log-linear histogram: from 1 us up, each percentile is within 1% of the
 * exact one (the max is exact). */
struct sluice_latency_stats {
    uint64_t count;                 /* calls measured */
    double sum_us;
    double mean_us, p50_us, p90_us, p99_us, p999_us, max_us;   /* 0 when none */
};

/* Errors are counted per code in errors_by_code[-code]; a code past the
 * array counts at [0].  Fixed, so appending codes never changes a struct. */
#define SLUICE_STATS_CODES 32

/* Use as `struct sluice_client_stats` (the function has the same name). */
struct sluice_client_stats {
    uint64_t requests;              /* calls finished: answered + errors */
    uint64_t status_class[6];       /* answered with 1xx..5xx at [1]..[5] */
    uint64_t errors;                /* calls that returned a SLUICE_E* code */
    uint64_t errors_by_code[SLUICE_STATS_CODES];
    uint64_t retries;               /* policy retries (attempts after the first) */
    uint64_t bytes_sent;            /* HTTP bytes written (before TLS), every attempt */
    uint64_t bytes_received;        /* HTTP bytes read, every attempt */
    int in_flight, peak_in_flight;  /* calls inside sluice_client_do */
    struct sluice_latency_stats latency;
    int endpoints;                  /* base URL and fallbacks */
    int breakers_open;              /* endpoints whose breaker is not closed */
    uint64_t breaker_transitions;
    /* Since 0.3.  The limit on calls in flight now: the adaptive limit
     * with adaptive_concurrency, else max_in_flight (0 = none). */
    int concurrency_limit;
    /* Since 0.3.  Calls that waited for a place under that limit, or
     * were refused one (SLUICE_EQUEUEFULL). */
    uint64_t limited;
};

/* A snapshot of one client's counters into *out (zeroed first).  Returns
 * 0, or SLUICE_EINVAL for a NULL argument.  Allocates nothing.
 * Thread-safe; it takes no lock but each breaker's own, briefly (reading a
 * breaker past its recovery timeout moves it to half-open, and its
 * on_state_change hook then runs on this thread). */
SLUICE_API int sluice_client_stats(sluice_client *c, struct sluice_client_stats *out);

/* How well the connection pool fits its load.  The window is the last 10
 * seconds (less while the factory is younger).  By Little's law the pool
 * keeps arrival_rate x mean_latency connections busy; the recommendation
 * adds 25% headroom. */
struct sluice_pool_health {
    int max_connections;            /* the configured limit, 0 = unlimited */
    double utilization;             /* in use / max_connections, -1 when unlimited */
    int waiting;                    /* checkouts waiting for capacity now */
    uint64_t overflow;              /* closed as SLUICE_CLOSE_OVERFLOW so far */
    double arrival_rate;            /* upstream exchanges per second, in the window */
    double mean_latency_us;         /* mean time an exchange held a connection */
    int recommended_max_connections; /* ceil(1.25 x rate x latency); 0 = no traffic */
};

/* Use as `struct sluice_factory_stats` (the function has the same name).
 * Request figures are sums over the factory's clients. */
struct sluice_factory_stats {
    struct sluice_pool_stats pool;  /* all origins */
    int clients;
    uint64_t requests, errors, retries;
    uint64_t coalesce_flights;      /* coalesced calls that went upstream (leaders) */
    uint64_t coalesce_followers;    /* calls saved: served by another's flight or the cache */
    struct sluice_limiter_stats limiter;
    int limiter_shared;             /* 1 when the limiter uses Redis */
    uint64_t breaker_transitions;   /* summed over every client's endpoints */

    uint64_t status_class[6];       /* as in sluice_client_stats */
    uint64_t errors_by_code[SLUICE_STATS_CODES];
    uint64_t bytes_sent, bytes_received;
    int in_flight, peak_in_flight;  /* calls through any client, warm-ups included */
    struct sluice_latency_stats latency;   /* every client's calls */
    uint64_t coalesce_cache_hits;   /* the part of coalesce_followers the micro-cache served */
    struct sluice_pool_health health;
    uint64_t coalesce_cache_entries;   /* micro-cache entries held now */
    uint64_t coalesce_cache_bytes;     /* their memory with their responses, about */
    uint64_t coalesce_cache_evictions; /* entries dropped before expiry for the bound */
    /* Since 0.3.  Requests served per open connection: the least, the
     * median (exact up to 7, within 25% past) and the most; 0 when none is
     * open. */
    uint64_t conn_requests_min, conn_requests_median, conn_requests_max;
};

/* A snapshot of the factory's counters into *out (zeroed first; a NULL
 * factory leaves it zeroed).  Allocates nothing.  Thread-safe; it takes the
 * pool's and the registry's locks briefly, never across a hook. */
SLUICE_API void sluice_factory_stats(sluice_factory *f, struct sluice_factory_stats *out);

#define SLUICE_METRICS_PROMETHEUS 0   /* text exposition format 0.0.4 */
#define SLUICE_METRICS_JSON 1

/* Writes the factory's metrics (every client, origin, limiter, coalescer
 * and breaker; names in README "Observability") into buf and returns the
 * length the whole text needs, excluding the NUL.  With cap > 0 at most
 * cap - 1 bytes are written and buf is NUL-terminated; buf may be NULL
 * when cap is 0, to ask the size.  Counters move between calls, so size
 * the buffer with slack, or call again while the result is >= cap.
 * Returns 0 (and writes "") for a NULL factory or an unknown format.
 * Allocates nothing; thread-safe; must not race sluice_factory_free. */
SLUICE_API size_t sluice_factory_metrics(sluice_factory *f, int format, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_H */
