/* Routes that model an upstream under load: /capacity, a server that slows
 * down past its capacity, and /sessions, a server of short-lived sessions.
 *
 * Every connection has its own thread (conn.c), so a slow answer here
 * sleeps on that thread alone and never holds up other connections. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mockapi.h"

#define MAX_CAP        100000u
#define MAX_BASE_MS    60000u
#define MAX_DELAY_MS   600000.0
#define MAX_TTL_MS     86400000u
#define MAX_SESSIONS   4096

static void load_sleep_ms(double ms)
{
    struct timespec ts;

    if (ms > MAX_DELAY_MS)
        ms = MAX_DELAY_MS;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void load_json(mock_conn *c, int status, mock_buf *b)
{
    if (b->failed)
        mock_respond(c, 500, "text/plain", NULL, "out of memory\n", 14);
    else
        mock_respond(c, status, "application/json", NULL, b->data, b->len);
    mock_buf_free(b);
}

static void load_error(mock_conn *c, int status, const char *what)
{
    mock_buf b = MOCK_BUF_INIT;

    mock_buf_printf(&b, "{\"error\":\"%s\"}", what);
    load_json(c, status, &b);
}

/* 0 with *out = the parameter (def when absent), -1 after answering 400. */
static int load_param(mock_conn *c, const mock_request *r, const char *name, uint64_t lo,
                      uint64_t hi, uint64_t def, uint64_t *out)
{
    char v[32];
    size_t n;
    int found = mock_query_get(r->query, r->query_len, name, v, sizeof v, &n);

    if (found == 0) {
        *out = def;
        return 0;
    }
    if (found > 0 && mock_parse_u64(v, n, hi, out) == 0 && *out >= lo)
        return 0;
    load_error(c, 400, "bad query parameter");
    return -1;
}

/* --- /capacity ------------------------------------------------------------ */

static atomic_long capacity_in_flight;

/* A request that arrives with n in flight (itself included) takes
 * ms * max(1, n / cap)^2: a server of capacity `cap` that thrashes past it. */
void mock_h_capacity(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;
    uint64_t cap, base;
    long n;
    double f, ms;

    (void)arg;
    if (len != 0) {
        load_error(c, 404, "no such capacity path");
        return;
    }
    if (load_param(c, r, "cap", 1, MAX_CAP, 8, &cap) != 0 ||
        load_param(c, r, "ms", 0, MAX_BASE_MS, 10, &base) != 0)
        return;
    n = atomic_fetch_add(&capacity_in_flight, 1) + 1;
    f = (double)n / (double)cap;
    if (f < 1)
        f = 1;
    ms = (double)base * f * f;
    load_sleep_ms(ms);
    atomic_fetch_sub(&capacity_in_flight, 1);
    mock_buf_printf(&b, "{\"in_flight\":%ld,\"delay_ms\":%.3f}", n, ms);
    load_json(c, 200, &b);
}

/* --- /sessions ------------------------------------------------------------ */

typedef struct session {
    unsigned long id;
    struct timespec expires;
    long uses;
} session;

static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static session sessions[MAX_SESSIONS];
static unsigned long sessions_next = 1;

static struct timespec after_ms(uint64_t ms)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static int expired(const session *s, const struct timespec *now)
{
    return now->tv_sec > s->expires.tv_sec ||
           (now->tv_sec == s->expires.tv_sec && now->tv_nsec >= s->expires.tv_nsec);
}

/* POST /sessions?ttl_ms=T: a new session {"session":"ID","ttl_ms":T}.  A
 * slot of an expired session is reused; 503 when all are live. */
static void session_create(mock_conn *c, const mock_request *r)
{
    mock_buf b = MOCK_BUF_INIT;
    struct timespec now;
    uint64_t ttl;
    unsigned long id = 0;
    size_t i;

    if (load_param(c, r, "ttl_ms", 1, MAX_TTL_MS, 1000, &ttl) != 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&sessions_lock);
    for (i = 0; i < MAX_SESSIONS; i++) {
        session *s = &sessions[i];
        if (s->id && !expired(s, &now))
            continue;
        s->id = id = sessions_next++;
        s->expires = after_ms(ttl);
        s->uses = 0;
        break;
    }
    pthread_mutex_unlock(&sessions_lock);
    if (!id) {
        load_error(c, 503, "session table full");
        return;
    }
    mock_buf_printf(&b, "{\"session\":\"s%lu\",\"ttl_ms\":%llu}", id, (unsigned long long)ttl);
    load_json(c, 201, &b);
}

/* /sessions/ID: 200 with the session's use count while it lives, 401 once
 * it expired or when it never existed. */
static void session_use(mock_conn *c, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;
    struct timespec now;
    uint64_t id;
    long uses = -1;
    size_t i;

    if (len < 2 || arg[0] != 's' || mock_parse_u64(arg + 1, len - 1, ~0ul, &id) != 0) {
        load_error(c, 400, "bad session id");
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&sessions_lock);
    for (i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i].id == id && !expired(&sessions[i], &now)) {
            uses = ++sessions[i].uses;
            break;
        }
    pthread_mutex_unlock(&sessions_lock);
    if (uses < 0) {
        load_error(c, 401, "session expired or unknown");
        return;
    }
    mock_buf_printf(&b, "{\"session\":\"s%llu\",\"uses\":%ld}", (unsigned long long)id, uses);
    load_json(c, 200, &b);
}

void mock_h_sessions(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    if (len == 0 && r->method_len == 4 && memcmp(r->method, "POST", 4) == 0)
        session_create(c, r);
    else if (len > 1 && arg[0] == '/')
        session_use(c, arg + 1, len - 1);
    else
        load_error(c, 400, "POST /sessions or GET /sessions/ID");
}
