/* sluice-mockapi: the project's scriptable HTTP/1.1 and HTTP/2 (+TLS) test
 * server.
 *
 * One thread accepts (main.c); each connection gets its own detached thread
 * (conn.c) that parses requests (request.c), answers them by path
 * (handlers.c, canned hostile responses in raw.c) and speaks TLS through
 * wolfSSL when configured (tls.c).  With --h2, a connection that chooses h2
 * by ALPN, or opens with the HTTP/2 preface on a plain listener, is handed
 * to h2.c: the connection thread drives an nghttp2 session and runs each
 * stream's handler on a worker thread, against a mock_conn whose output is
 * decoded from HTTP/1.1 (h1resp.c) into HEADERS and DATA.  Shared counters live in counters.c and
 * are safe to touch from any thread.  The program does not link libsluice:
 * it is the independent peer the library is tested against. */
#ifndef MOCKAPI_H
#define MOCKAPI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "request.h"

struct WOLFSSL;

/* The command line, read-only once the listener runs. */
typedef struct mock_config {
    const char *host;            /* numeric address to bind */
    int port;                    /* 0 = let the kernel pick */
    const char *port_file;       /* write the chosen port here, atomically */
    int idle_timeout_ms;         /* close a keep-alive connection idle this long; 0 = never */
    int max_requests;            /* per connection; the last response says close; 0 = unlimited */
    int exit_after_s;            /* exit by itself after this long; 0 = never */
    int quiet;                   /* no log lines on stderr */
    const char *tls_cert;        /* both set: serve HTTPS */
    const char *tls_key;
    const char *client_ca;       /* require client certificates signed by this CA */
    int tls_min_version;         /* 12 or 13 */
    int tls_max_version;         /* 12 or 13 */
    const char *unix_path;       /* also listen on this Unix socket; NULL = not */
    int h2;                      /* offer HTTP/2: ALPN h2 on TLS, prior knowledge on plain */
    int h2_max_streams;          /* SETTINGS_MAX_CONCURRENT_STREAMS */
    int h2_settings_delay_ms;    /* send nothing this long after the preface */
    int h2_goaway_after;         /* GOAWAY at a connection's Nth stream; 0 = never */
    int h2_refuse;               /* RST_STREAM(REFUSED_STREAM) a connection's Nth stream; 0 = none */
    int h2_window;               /* initial stream (and connection) window for uploads */
} mock_config;

/* Logs one line to stderr unless cfg->quiet. */
void mock_log(const mock_config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --- growable output buffer (util.c) -------------------------------------
 * Appends never fail visibly: an allocation failure sets `failed`, later
 * appends do nothing, and the caller checks `failed` once at the end. */
typedef struct mock_buf {
    char *data;
    size_t len, cap;
    int failed;
} mock_buf;

#define MOCK_BUF_INIT {NULL, 0, 0, 0}

void mock_buf_add(mock_buf *b, const void *p, size_t n);
void mock_buf_puts(mock_buf *b, const char *s);
void mock_buf_printf(mock_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends p[0..n) as a quoted JSON string.  Valid UTF-8 passes through;
 * any other byte >= 0x80 is written as \u00XX, so the output is always
 * valid JSON. */
void mock_buf_json_str(mock_buf *b, const char *p, size_t n);
void mock_buf_free(mock_buf *b);

/* --- counters (counters.c) -----------------------------------------------
 * A key -> count table guarded by its own mutex; callers never hold it. */
#define MOCK_COUNTER_BUCKETS 1024
#define MOCK_COUNTER_MAX_KEYS 100000     /* new keys past this are refused */

typedef struct mock_counter mock_counter;
typedef struct mock_counters {
    pthread_mutex_t lock;
    mock_counter *bucket[MOCK_COUNTER_BUCKETS];
    size_t nkeys;
} mock_counters;

/* Adds delta to key's count (creating it at 0) and returns the new count,
 * or -1 when the key cannot be stored (out of memory, table full). */
long mock_counters_add(mock_counters *t, const char *key, size_t len, long delta);
/* key's count, 0 when absent. */
long mock_counters_get(mock_counters *t, const char *key, size_t len);
void mock_counters_clear(mock_counters *t);
/* Appends {"key":count,...} (unordered). */
void mock_counters_json(mock_counters *t, mock_buf *out);

/* Everything /stats reports, plus the tables behind /count and /flaky. */
typedef struct mock_stats {
    atomic_long connections_accepted;
    atomic_long connections_open;
    atomic_long requests;            /* well-formed requests */
    atomic_long bad_requests;        /* answered 400 */
    atomic_long tls_handshakes;      /* completed */
    atomic_long tls_resumed;         /* completed by resuming a session */
    atomic_long tls_failures;
    atomic_long h2_connections;      /* accepted as HTTP/2 (also in connections_*) */
    atomic_long h2_streams;          /* HTTP/2 streams whose request was answered */
    mock_counters hits;              /* per path, /hits/... excluded */
    mock_counters counts;            /* /count/KEY */
    mock_counters flaky;             /* /flaky/KEY */
} mock_stats;

extern mock_stats mock_state;

/* Zeroes every counter and table except connections_open (a gauge). */
void mock_stats_reset(void);

/* --- connections (conn.c) ------------------------------------------------ */
struct mock_h2_stream;

typedef struct mock_conn {
    int fd;
    struct WOLFSSL *ssl;         /* NULL for plain HTTP */
    const mock_config *cfg;
    char *in;                    /* received, not yet consumed */
    size_t in_len, in_cap;
    unsigned served;             /* requests answered so far */
    int last;                    /* this response ends the connection (says "Connection: close") */
    int head_only;               /* answering HEAD: headers, no body */
    int keep_alive_10;           /* HTTP/1.0 keep-alive: say "Connection: keep-alive" */
    int broken;                  /* a write failed: no more I/O */
    int gone;                    /* a handler already closed the socket (reset) */
    struct mock_h2_stream *sink; /* set: an HTTP/2 stream's handler; output goes there, not to fd */
} mock_conn;

/* Serves fd on a new detached thread.  Takes ownership of fd (closed on
 * failure too).  Returns 0 or -1. */
int mock_conn_spawn(int fd, const mock_config *cfg);

/* Writes all of p; 0, or -1 with c->broken set. */
int mock_conn_write(mock_conn *c, const void *p, size_t n);
/* Writes a response head: status line, Content-Type when ctype, Content-
 * Length when length >= 0 (never for 1xx/204/304), the preformatted
 * `extra` lines ("Name: value\r\n"...), and the Connection field the
 * connection's state calls for.  0 or -1. */
int mock_write_head(mock_conn *c, int status, const char *ctype, const char *extra, long long length);
/* A whole response with a Content-Length body (headers only for HEAD and
 * for statuses that carry no body).  0 or -1. */
int mock_respond(mock_conn *c, int status, const char *ctype, const char *extra,
                 const void *body, size_t len);
/* Aborts the connection with a TCP RST (SO_LINGER {1, 0}); no more I/O. */
void mock_conn_reset(mock_conn *c);
/* Reads and discards until the peer closes or max_ms pass. */
void mock_conn_hold(mock_conn *c, int max_ms);
/* Closes the socket gracefully (our FIN, then the peer's, bounded) unless
 * it is gone already; sets c->gone. */
void mock_conn_close(mock_conn *c);
/* The reason phrase for a status ("Unknown" for unregistered ones). */
const char *mock_reason(int status);

/* --- paths (handlers.c, raw.c) ------------------------------------------- */

/* Counts the request and answers it; may set c->last, or reset the
 * connection. */
void mock_handle(mock_conn *c, const mock_request *req);
/* Prints every route with its parameters, from the route table (--help). */
void mock_routes_usage(FILE *out);
/* Writes the canned response `name` verbatim and marks the connection
 * last.  Returns 0, or -1 when there is no such response. */
int mock_raw_respond(mock_conn *c, const char *name, size_t len);
/* /capacity and /sessions (load.c): an upstream past its capacity, and
 * short-lived sessions. */
void mock_h_capacity(mock_conn *c, const mock_request *r, const char *arg, size_t len);
void mock_h_sessions(mock_conn *c, const mock_request *r, const char *arg, size_t len);
/* The canned responses' names, comma-separated (for the 404 body). */
const char *mock_raw_names(void);

/* --- HTTP/2 (h2.c) ---------------------------------------------------------
 * The stream functions are called by a stream's handler, on its worker
 * thread, through its mock_conn (conn.c routes them there when c->sink). */

/* Serves c as HTTP/2 until the session ends, then closes the socket; c->in
 * holds bytes already read (the preface, perhaps more).  c->gone after. */
void mock_h2_serve(mock_conn *c);
/* Takes n bytes of the handler's HTTP/1.1 response.  0, or -1 when the
 * stream is gone (the handler should stop). */
int mock_h2_write(struct mock_h2_stream *s, const void *p, size_t n);
/* Ends the stream with RST_STREAM(INTERNAL_ERROR) once what was written
 * has been sent. */
void mock_h2_reset(struct mock_h2_stream *s);
/* Waits until the stream or its connection ends, max_ms at most. */
void mock_h2_hold(struct mock_h2_stream *s, int max_ms);
/* /h2/NAME: behaviours of an HTTP/2 connection (404 over HTTP/1.1, but
 * /h2/bigheader, which works on both). */
void mock_h_h2(mock_conn *c, const mock_request *r, const char *arg, size_t len);

/* --- TLS (tls.c) ------------------------------------------------------------ */

/* Builds the server context from cfg.  0, or -1 after printing why. */
int mock_tls_init(const mock_config *cfg);
/* Runs the server handshake on fd within 10 s.  Returns the session, or
 * NULL after logging why (fd stays open, the caller closes it). */
struct WOLFSSL *mock_tls_accept(int fd, const mock_config *cfg);
/* Bytes read (> 0), 0 when the peer closed, -1 on error or timeout. */
long mock_tls_read(struct WOLFSSL *ssl, void *buf, size_t n);
/* Non-zero when wolfSSL holds input already read from the socket. */
int mock_tls_pending(struct WOLFSSL *ssl);
/* Writes all of p; 0 or -1. */
int mock_tls_write(struct WOLFSSL *ssl, const void *p, size_t n);
/* 1 when ALPN chose "h2" (offered only with --h2). */
int mock_tls_is_h2(struct WOLFSSL *ssl);
/* For a socket in O_NONBLOCK mode: bytes moved (> 0), 0 when the peer
 * closed (recv only), MOCK_TLS_AGAIN when the socket is not ready, -1 on
 * error.  A send that returned MOCK_TLS_AGAIN must be repeated with the
 * same bytes. */
#define MOCK_TLS_AGAIN (-2L)
long mock_tls_recv(struct WOLFSSL *ssl, void *buf, size_t n);
long mock_tls_send(struct WOLFSSL *ssl, const void *p, size_t n);
/* Frees the session, sending close_notify first when `notify`. */
void mock_tls_free(struct WOLFSSL *ssl, int notify);

#endif
