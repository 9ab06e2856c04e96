/* Shared helpers for the CUnit suites: the servers tests/run.sh started,
 * raw sockets, a failing allocator, file-descriptor counts. */
#ifndef SLUICE_TESTUTIL_H
#define SLUICE_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sluice.h"

/* Registers a suite; each tests/test_<name>.c defines suite_<name>() that
 * calls this. */
void tu_add_suite(const char *name, CU_TestInfo *tests);

/* "127.0.0.1:PORT" of the shared mock API ($SLUICE_TEST_HTTP), or NULL after
 * failing the current test with the reason. */
const char *tu_http_addr(void);
/* "http://127.0.0.1:PORT" of the shared mock API (static buffer), or NULL
 * after failing the test. */
const char *tu_http_base(void);
/* The shared redis-server's URL ($SLUICE_TEST_REDIS), or NULL after
 * failing the test. */
const char *tu_redis_url(void);

/* Fails the current test (fatally) when `p` is NULL. */
#define TU_REQUIRE(p) do { if (!(p)) { CU_FAIL_FATAL("required test server missing"); } } while (0)

/* A private server started for one test.  tu_server_stop() kills it
 * (SIGTERM, then SIGKILL) and reaps it. */
typedef struct tu_server {
    pid_t pid;
    int port;
    char addr[64];      /* 127.0.0.1:PORT */
    char url[96];       /* http://... or redis://... */
} tu_server;

/* Starts $SLUICE_TEST_MOCKAPI with extra arguments (NULL-terminated) on a
 * free port.  Returns 0 or -1 after failing the test with the reason. */
int tu_mockapi_start(tu_server *s, const char *const *extra_args);
/* The same on a given port (to restart a server where it was). */
int tu_mockapi_start_port(tu_server *s, int port, const char *const *extra_args);
/* Starts a private redis-server on a free loopback port (port 0 = pick). */
int tu_redis_start(tu_server *s, int port);
void tu_server_stop(tu_server *s);
/* SIGSTOP / SIGCONT, to make a server unresponsive without closing. */
void tu_server_pause(tu_server *s, int paused);

/* A listening socket on 127.0.0.1 with the given backlog, its port in
 * *port; -1 on failure.  The caller accepts on it and closes it. */
int tu_listen(int backlog, int *port);

/* A loopback port nothing listens on right now (for "connection
 * refused"; a server of the tests' own picks its own port instead). */
int tu_free_port(void);

/* Connects to host:port (blocking, 2 s timeout), or returns -1. */
int tu_connect(const char *addr);
/* Writes all of buf; 0 or -1. */
int tu_write_all(int fd, const void *buf, size_t len);
/* Reads until close, timeout or cap-1 bytes; NUL-terminates; returns the
 * length read or -1. */
ssize_t tu_read_all(int fd, char *buf, size_t cap, int timeout_ms);
/* Reads one HTTP/1.1 response with a Content-Length body (no chunked);
 * returns its length or -1. */
ssize_t tu_read_response(int fd, char *buf, size_t cap, int timeout_ms);
/* Sends `req` on a new connection, reads to close or one response. */
ssize_t tu_roundtrip(const char *addr, const char *req, char *buf, size_t cap, int timeout_ms);
/* The status code in an HTTP response held in buf, or -1. */
int tu_status(const char *buf);
/* The body of an HTTP response held in buf (after the blank line), or NULL. */
const char *tu_body(const char *buf);

/* Open file descriptors of this process. */
int tu_fd_count(void);

/* A counting allocator: after tu_alloc_install(n), allocation number n
 * (1-based) fails, and every one after it too when `sticky`; n = 0 never
 * fails.  tu_alloc_count() is the number of allocations attempted. */
void tu_alloc_install(long fail_at, int sticky);
long tu_alloc_count(void);
long tu_alloc_outstanding(void);   /* allocations not yet freed */
void tu_alloc_uninstall(void);

/* A client of a fresh factory for tests: base URL, no retries, no breaker,
 * 3 s read timeout.  Options can be adjusted through `tune` (may be NULL). */
sluice_client *tu_client(sluice_factory **f, const char *service, const char *base,
                         void (*tune)(sluice_client_opts *));
/* GETs path: the status, or the negative error code. */
int tu_get_status(sluice_client *c, const char *path, sluice_error *err);
/* The mock API's hit counter for `path` (GET /hits<path>), or -1. */
long tu_hits(const char *addr, const char *path);
/* A number in the mock API's GET /stats (e.g. "connections_open"; the
 * asking connection counts itself), or -1. */
long tu_mock_stat(const char *addr, const char *field);
/* For tu_wait_until: true once the mock API at `addr` (a const char *)
 * holds no connection but the asker's, e.g. after its --idle-timeout. */
int tu_mock_idle(void *addr);
/* Polls cond(arg) every millisecond until it returns non-zero (1) or
 * max_ms pass (0).  For waiting on an event instead of sleeping for it:
 * max_ms only keeps a broken build from hanging, so make it generous; a
 * test asserts on the event, not on how soon it came. */
int tu_wait_until(int (*cond)(void *arg), void *arg, int max_ms);

/* Monotonic milliseconds. */
int64_t tu_now_ms(void);

/* A limiter on `url` (sluice_limiter_new's rules) with this prefix, fail
 * mode and redis_timeout_ms; NULL with err set on failure. */
sluice_limiter *tu_limiter(const char *url, const char *prefix, sluice_fail_mode mode,
                           int timeout_ms, sluice_error *err);

/* "<tag><pid>-<us>-<n>" into buf: a limiter prefix no other test, nor an
 * earlier run against the same Redis, used.  Returns buf.  Thread-safe. */
const char *tu_fresh_prefix(char *buf, size_t cap, const char *tag);

/* A DNS server of the tests' own on 127.0.0.1 (UDP, a thread of this
 * process), so no test asks the system's resolver.  In TU_DNS_ANSWER mode
 * it answers A queries for the names added with tu_dns_add (AAAA: no
 * records), NXDOMAIN for the rest; the other modes answer every query
 * SERVFAIL, NXDOMAIN, or never.  tu_dns_start returns NULL after failing
 * the test. */
typedef enum tu_dns_mode { TU_DNS_ANSWER, TU_DNS_SILENT, TU_DNS_SERVFAIL, TU_DNS_NXDOMAIN } tu_dns_mode;
typedef struct tu_dns tu_dns;
tu_dns *tu_dns_start(tu_dns_mode mode);
/* Answers `name` (case-insensitive, no trailing dot) with ipv4 and ttl. */
void tu_dns_add(tu_dns *d, const char *name, const char *ipv4, unsigned ttl);
void tu_dns_set_mode(tu_dns *d, tu_dns_mode mode);
/* Holds every answer back this long (0: none). */
void tu_dns_set_delay(tu_dns *d, int ms);
/* "127.0.0.1:PORT", for sluice_factory_opts.dns_servers. */
const char *tu_dns_servers(const tu_dns *d);
/* A (IPv4) queries received for name; NULL: queries of any type and name. */
long tu_dns_queries(tu_dns *d, const char *name);
void tu_dns_stop(tu_dns *d);   /* NULL is a no-op */

#endif
