/* The mock API's behaviours by path (the route table is at the bottom).
 * A handler gets the rest of the path after its prefix.  A bad parameter
 * is answered 400 and an unknown path 404, both with a JSON body; neither
 * ends a keep-alive connection. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bodies.h"
#include "mockapi.h"

#define MAX_STREAM_BYTES  (1ull << 34)    /* /bytes and /chunked */
#define MAX_DELAY_MS      600000u
#define PATTERN_BLOCK     65536u

typedef void handler_fn(mock_conn *c, const mock_request *r, const char *arg, size_t arg_len);

/* The /bytes pattern, byte i = (i * 31 + 7) & 0xff.  It repeats every 256
 * bytes, so any run of up to PATTERN_BLOCK bytes starting at offset `from`
 * is pattern + (from & 255). */
static unsigned char pattern[PATTERN_BLOCK + 256];
static pthread_once_t pattern_once = PTHREAD_ONCE_INIT;

static void pattern_init(void)
{
    size_t i;

    for (i = 0; i < sizeof pattern; i++)
        pattern[i] = (unsigned char)((i * 31 + 7) & 0xff);
}

static int write_pattern(mock_conn *c, uint64_t from, uint64_t n)
{
    pthread_once(&pattern_once, pattern_init);
    while (n) {
        size_t k = n < PATTERN_BLOCK ? (size_t)n : PATTERN_BLOCK;
        if (mock_conn_write(c, pattern + (from & 255), k) != 0)
            return -1;
        from += k;
        n -= k;
    }
    return 0;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    return len >= n && memcmp(s, prefix, n) == 0;
}

/* --- responses and parameters ------------------------------------------- */

/* Sends b as a JSON body (500 when building it ran out of memory). */
static void send_json(mock_conn *c, int status, const char *extra, mock_buf *b)
{
    if (b->failed)
        mock_respond(c, 500, "text/plain", NULL, "out of memory\n", 14);
    else
        mock_respond(c, status, "application/json", extra, b->data, b->len);
    mock_buf_free(b);
}

static void send_error(mock_conn *c, int status, const char *error, const char *detail, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;

    mock_buf_puts(&b, "{\"error\":");
    mock_buf_json_str(&b, error, strlen(error));
    mock_buf_puts(&b, ",\"detail\":");
    mock_buf_json_str(&b, detail, len);
    mock_buf_puts(&b, "}");
    send_json(c, status, NULL, &b);
}

static void send_text_number(mock_conn *c, int status, const char *extra, long v)
{
    char body[32];
    int n = snprintf(body, sizeof body, "%ld", v);

    mock_respond(c, status, "text/plain", extra, body, (size_t)n);
}

/* Answers 400 naming the parameter; returns -1 for the caller to pass on. */
static int bad_param(mock_conn *c, const char *what)
{
    send_error(c, 400, "bad parameter", what, strlen(what));
    return -1;
}

/* Numeric query parameter in [lo, hi], `def` when absent.  0, or -1 after
 * answering 400. */
static int query_num(mock_conn *c, const mock_request *r, const char *name,
                     uint64_t lo, uint64_t hi, uint64_t def, uint64_t *out)
{
    char v[32];
    size_t n;
    int found = mock_query_get(r->query, r->query_len, name, v, sizeof v, &n);

    if (found == 0) {
        *out = def;
        return 0;
    }
    if (found < 0 || mock_parse_u64(v, n, hi, out) != 0 || *out < lo)
        return bad_param(c, name);
    return 0;
}

static int path_num(mock_conn *c, const char *arg, size_t len, uint64_t hi, uint64_t *out)
{
    return mock_parse_u64(arg, len, hi, out) == 0 ? 0 : bad_param(c, "number in path");
}

/* Text that may go into a header value as is. */
static int header_safe(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static void imf_date(time_t t, char *out, size_t cap)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* The Retry-After line asked for by ?retry_after=TEXT (sent verbatim) or
 * ?retry_after_date=S (an IMF-fixdate S seconds from now, S may be
 * negative).  `line` is left empty when neither is given.  0, or -1 after
 * answering 400. */
static int retry_after(mock_conn *c, const mock_request *r, char *line, size_t cap)
{
    char v[64], date[40];
    size_t n;
    uint64_t secs;
    int f = mock_query_get(r->query, r->query_len, "retry_after", v, sizeof v, &n);

    line[0] = '\0';
    if (f < 0 || (f > 0 && !header_safe(v, n)))
        return bad_param(c, "retry_after");
    if (f > 0) {
        snprintf(line, cap, "Retry-After: %s\r\n", v);
        return 0;
    }
    f = mock_query_get(r->query, r->query_len, "retry_after_date", v, sizeof v, &n);
    if (f == 0)
        return 0;
    if (f < 0 || n == 0 || mock_parse_u64(v + (v[0] == '-'), n - (v[0] == '-'), 1u << 30, &secs) != 0)
        return bad_param(c, "retry_after_date");
    imf_date(time(NULL) + (v[0] == '-' ? -(time_t)secs : (time_t)secs), date, sizeof date);
    snprintf(line, cap, "Retry-After: %s\r\n", date);
    return 0;
}

/* --- handlers ------------------------------------------------------------ */

static void h_json(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    static const char body[] = "{\"ok\":true,\"service\":\"sluice-mockapi\",\"items\":[1,2,3]}";

    mock_respond(c, 200, "application/json", NULL, body, sizeof body - 1);
}

static void h_bytes(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    uint64_t n;

    if (path_num(c, arg, len, MAX_STREAM_BYTES, &n) != 0)
        return;
    if (mock_write_head(c, 200, "application/octet-stream", NULL, (long long)n) == 0 && !c->head_only)
        write_pattern(c, 0, n);
}

/* Chunks of 1, 7 (with extensions) and 4096 bytes, then 60000 (size in
 * upper-case hex), then a trailer field. */
static void h_chunked(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    static const uint64_t sizes[] = {1, 7, 4096, 60000};
    uint64_t n, off = 0;
    unsigned k;
    char line[64];

    if (path_num(c, arg, len, MAX_STREAM_BYTES, &n) != 0)
        return;
    if (mock_write_head(c, 200, "application/octet-stream",
                        "Transfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n", -1) != 0 || c->head_only)
        return;
    for (k = 0; off < n; k++) {
        uint64_t size = sizes[k < 3 ? k : 3];
        if (size > n - off)
            size = n - off;
        if (k == 1)
            snprintf(line, sizeof line, "%llx;sluice=ext;q=\"a b\"\r\n", (unsigned long long)size);
        else
            snprintf(line, sizeof line, k < 3 ? "%llx\r\n" : "%llX\r\n", (unsigned long long)size);
        if (mock_conn_write(c, line, strlen(line)) != 0 || write_pattern(c, off, size) != 0 ||
            mock_conn_write(c, "\r\n", 2) != 0)
            return;
        off += size;
    }
    mock_conn_write(c, "0\r\nX-Trailer: done\r\n\r\n", 22);
}

static void h_delay(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;
    uint64_t ms;

    if (path_num(c, arg, len, MAX_DELAY_MS, &ms) != 0)
        return;
    sleep_ms(ms);
    mock_buf_printf(&b, "{\"delay_ms\":%llu}", (unsigned long long)ms);
    send_json(c, 200, NULL, &b);
}

/* 1xx: the interim head alone, then the connection closes (a final
 * response never follows).  Others: a short JSON body, none for 204/304. */
static void h_status(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;
    char extra[128];
    uint64_t code;

    if (len != 3 || mock_parse_u64(arg, len, 999, &code) != 0 || code < 100) {
        bad_param(c, "status code");
        return;
    }
    if (retry_after(c, r, extra, sizeof extra) != 0)
        return;
    if (code < 200) {
        c->last = 1;
        mock_write_head(c, (int)code, NULL, extra, -1);
        return;
    }
    mock_buf_printf(&b, "{\"status\":%d}", (int)code);
    send_json(c, (int)code, extra, &b);
}

/* ?cache_control=V answers with "Cache-Control: V" (micro-cache tests). */
static int cache_control(mock_conn *c, const mock_request *r, char *line, size_t cap)
{
    char v[64];
    size_t n;
    int f = mock_query_get(r->query, r->query_len, "cache_control", v, sizeof v, &n);

    line[0] = '\0';
    if (f < 0 || (f > 0 && !header_safe(v, n)))
        return bad_param(c, "cache_control");
    if (f > 0)
        snprintf(line, cap, "Cache-Control: %s\r\n", v);
    return 0;
}

static void h_count(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    uint64_t delay, status;
    char extra[96];
    long n;

    if (len == 0) {
        bad_param(c, "counter key");
        return;
    }
    if (query_num(c, r, "delay", 0, MAX_DELAY_MS, 0, &delay) != 0 ||
        query_num(c, r, "status", 200, 999, 200, &status) != 0 ||
        cache_control(c, r, extra, sizeof extra) != 0)
        return;
    if ((n = mock_counters_add(&mock_state.counts, arg, len, 1)) < 0) {
        send_error(c, 503, "counter table full", arg, len);
        return;
    }
    sleep_ms(delay);
    send_text_number(c, (int)status, extra[0] ? extra : NULL, n);
}

/* /hits/delay/200 reports the count of "/delay/200": the path is the
 * argument with the slash before it. */
static void h_hits(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    send_text_number(c, 200, NULL, mock_counters_get(&mock_state.hits, arg - 1, len + 1));
}

static void h_flaky(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;
    uint64_t fail, status;
    char extra[128];
    long attempt;

    if (len == 0) {
        bad_param(c, "flaky key");
        return;
    }
    if (query_num(c, r, "fail", 0, 1000000000, 1, &fail) != 0 ||
        query_num(c, r, "status", 200, 999, 503, &status) != 0 ||
        retry_after(c, r, extra, sizeof extra) != 0)
        return;
    if ((attempt = mock_counters_add(&mock_state.flaky, arg, len, 1)) < 0) {
        send_error(c, 503, "counter table full", arg, len);
        return;
    }
    if ((uint64_t)attempt > fail) {
        send_text_number(c, 200, NULL, attempt);
        return;
    }
    mock_buf_printf(&b, "{\"attempt\":%ld,\"status\":%d}", attempt, (int)status);
    send_json(c, (int)status, extra, &b);
}

static void echo_json(mock_conn *c, const mock_request *r)
{
    mock_buf b = MOCK_BUF_INIT;
    size_t i;

    mock_buf_puts(&b, "{\"method\":");
    mock_buf_json_str(&b, r->method, r->method_len);
    mock_buf_puts(&b, ",\"target\":");
    mock_buf_json_str(&b, r->target, r->target_len);
    mock_buf_puts(&b, ",\"path\":");
    mock_buf_json_str(&b, r->path, r->path_len);
    mock_buf_puts(&b, ",\"query\":");
    if (r->query)
        mock_buf_json_str(&b, r->query, r->query_len);
    else
        mock_buf_puts(&b, "null");
    if (c->sink)
        mock_buf_puts(&b, ",\"version\":\"HTTP/2\",\"headers\":[");
    else
        mock_buf_printf(&b, ",\"version\":\"HTTP/1.%d\",\"headers\":[", r->minor);
    for (i = 0; i < r->nheaders; i++) {
        mock_buf_puts(&b, i ? ",[" : "[");
        mock_buf_json_str(&b, r->headers[i].name, r->headers[i].name_len);
        mock_buf_puts(&b, ",");
        mock_buf_json_str(&b, r->headers[i].value, r->headers[i].value_len);
        mock_buf_puts(&b, "]");
    }
    mock_buf_printf(&b, "],\"body_len\":%zu,\"body\":", r->body_len);
    mock_buf_json_str(&b, r->body, r->body_len);
    mock_buf_puts(&b, "}");
    send_json(c, 200, NULL, &b);
}

/* ?raw=1 sends the body back byte for byte under the request's own
 * Content-Type. */
static void h_echo(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    const mock_header *ct = mock_request_header(r, "content-type");
    char v[8], ctype[512];
    size_t n;

    if (mock_query_get(r->query, r->query_len, "raw", v, sizeof v, &n) != 1 || strcmp(v, "1") != 0) {
        echo_json(c, r);
        return;
    }
    snprintf(ctype, sizeof ctype, "%.*s", ct ? (int)ct->value_len : 24,
             ct ? ct->value : "application/octet-stream");
    mock_respond(c, 200, ctype, NULL, r->body, r->body_len);
}

static void h_close(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    c->last = 1;
    mock_respond(c, 200, "application/json", NULL, "{\"closed\":true}", 15);
}

/* Promises 1000000 bytes, sends 1000, then aborts with a RST. */
static void h_reset(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    if (mock_write_head(c, 200, "application/octet-stream", NULL, 1000000) == 0 && !c->head_only)
        write_pattern(c, 0, 1000);
    mock_conn_reset(c);
}

/* A head cut short, then silence until the client leaves (60 s at most). */
static void h_stall(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    static const char partial[] = "HTTP/1.1 200 OK\r\nContent-";

    c->last = 1;
    if (mock_conn_write(c, partial, sizeof partial - 1) == 0)
        mock_conn_hold(c, 60000);
}

static void h_drip(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    uint64_t n, interval, i;

    if (query_num(c, r, "bytes", 0, 10000000, 10, &n) != 0 ||
        query_num(c, r, "interval_ms", 0, 60000, 100, &interval) != 0)
        return;
    if (mock_write_head(c, 200, "application/octet-stream", NULL, (long long)n) != 0 || c->head_only)
        return;
    for (i = 0; i < n; i++) {
        sleep_ms(interval);
        if (write_pattern(c, i, 1) != 0)
            return;
    }
}

static void h_redirect(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;
    char location[64];
    uint64_t n;

    if (path_num(c, arg, len, 1000000000, &n) != 0)
        return;
    if (n == 0) {
        mock_buf_puts(&b, "{\"redirected\":true}");
        send_json(c, 200, NULL, &b);
        return;
    }
    snprintf(location, sizeof location, "Location: /redirect/%llu\r\n", (unsigned long long)n - 1);
    mock_buf_printf(&b, "{\"redirect\":%llu}", (unsigned long long)n - 1);
    send_json(c, 302, location, &b);
}

static void h_redirect_to(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf extra = MOCK_BUF_INIT, b = MOCK_BUF_INIT;
    char url[8192];
    uint64_t status;
    size_t n;

    if (mock_query_get(r->query, r->query_len, "url", url, sizeof url, &n) != 1 || !header_safe(url, n)) {
        bad_param(c, "url");
        return;
    }
    if (query_num(c, r, "status", 100, 999, 302, &status) != 0)
        return;
    mock_buf_printf(&extra, "Location: %s\r\n", url);
    mock_buf_puts(&b, "{\"location\":");
    mock_buf_json_str(&b, url, n);
    mock_buf_puts(&b, "}");
    if (extra.failed)
        b.failed = 1;
    send_json(c, (int)status, extra.data, &b);
    mock_buf_free(&extra);
}

/* N extra fields X-H-1: v1 ... X-H-N: vN. */
static void h_headers(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf extra = MOCK_BUF_INIT, b = MOCK_BUF_INIT;
    uint64_t n, i;

    if (path_num(c, arg, len, 100000, &n) != 0)
        return;
    for (i = 1; i <= n; i++)
        mock_buf_printf(&extra, "X-H-%llu: v%llu\r\n", (unsigned long long)i, (unsigned long long)i);
    mock_buf_printf(&b, "{\"headers\":%llu}", (unsigned long long)n);
    if (extra.failed)
        b.failed = 1;
    send_json(c, 200, extra.data, &b);
    mock_buf_free(&extra);
}

/* One field X-Big whose value is N letters a..z repeating. */
static void h_bigheader(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz";
    mock_buf extra = MOCK_BUF_INIT, b = MOCK_BUF_INIT;
    uint64_t n, i;

    if (path_num(c, arg, len, 16u << 20, &n) != 0)
        return;
    mock_buf_puts(&extra, "X-Big: ");
    /* a..z over and over, a run at a time: byte by byte, 16 MiB take
     * seconds under a sanitizer, past the client's read timeout. */
    for (i = 0; i < n && !extra.failed; i += 26)
        mock_buf_add(&extra, alphabet, n - i < 26 ? (size_t)(n - i) : 26);
    mock_buf_puts(&extra, "\r\n");
    mock_buf_printf(&b, "{\"bigheader\":%llu}", (unsigned long long)n);
    if (extra.failed)
        b.failed = 1;
    send_json(c, 200, extra.data, &b);
    mock_buf_free(&extra);
}

static void h_raw(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    const char *names = mock_raw_names();

    if (mock_raw_respond(c, arg, len) != 0)
        send_error(c, 404, "no such raw response; known", names, strlen(names));
}

static void h_stats(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;

    mock_buf_printf(&b,
                    "{\"connections_accepted\":%ld,\"connections_open\":%ld,\"requests\":%ld,"
                    "\"bad_requests\":%ld,\"tls_handshakes\":%ld,\"tls_resumed\":%ld,"
                    "\"tls_failures\":%ld,\"h2_connections\":%ld,\"h2_streams\":%ld,\"hits\":",
                    atomic_load(&mock_state.connections_accepted), atomic_load(&mock_state.connections_open),
                    atomic_load(&mock_state.requests), atomic_load(&mock_state.bad_requests),
                    atomic_load(&mock_state.tls_handshakes), atomic_load(&mock_state.tls_resumed),
                    atomic_load(&mock_state.tls_failures), atomic_load(&mock_state.h2_connections),
                    atomic_load(&mock_state.h2_streams));
    mock_counters_json(&mock_state.hits, &b);
    mock_buf_puts(&b, "}");
    send_json(c, 200, NULL, &b);
}

static void h_reset_stats(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    mock_buf b = MOCK_BUF_INIT;

    if (r->method_len != 4 || memcmp(r->method, "POST", 4) != 0) {
        mock_buf_puts(&b, "{\"error\":\"method not allowed\",\"detail\":\"POST\"}");
        send_json(c, 405, "Allow: POST\r\n", &b);
        return;
    }
    mock_stats_reset();
    mock_buf_puts(&b, "{\"reset\":true}");
    send_json(c, 200, NULL, &b);
}

/* The route table; `help` is what --help prints for the route (main.c
 * prints the table itself, so the list cannot fall behind it). */
static const struct route {
    const char *path;
    int prefix;               /* path is a prefix; the rest is the argument */
    handler_fn *fn;
    const char *help;
} routes[] = {
    {"/json", 0, h_json, "/json                  a fixed small JSON body"},
    {"/bytes/", 1, h_bytes, "/bytes/N               N bytes of a known pattern (Content-Length)"},
    {"/chunked/", 1, h_chunked, "/chunked/N             the same N bytes, chunked, with a trailer"},
    {"/delay/", 1, h_delay, "/delay/MS              answers after MS milliseconds"},
    {"/status/", 1, h_status,
     "/status/CODE           answers CODE (1xx: the interim head, then close);\n"
     "                         ?retry_after=TEXT or ?retry_after_date=S adds Retry-After"},
    {"/count/", 1, h_count,
     "/count/KEY             counts calls per KEY, answers the count;\n"
     "                         ?delay=MS ?status=CODE ?cache_control=V"},
    {"/hits/", 1, h_hits, "/hits/PATH             how many requests /PATH received (itself not counted)"},
    {"/flaky/", 1, h_flaky,
     "/flaky/KEY             fails the first N calls per KEY, then 200 with the count;\n"
     "                         ?fail=N (default 1) ?status=CODE (default 503) ?retry_after=..."},
    {"/echo", 0, h_echo, "/echo                  the request as JSON; ?raw=1 echoes the body verbatim"},
    {"/close", 0, h_close, "/close                 answers, then closes the connection"},
    {"/reset", 0, h_reset, "/reset                 promises 1000000 bytes, sends 1000, then RST"},
    {"/stall", 0, h_stall, "/stall                 half a response head, then silence (60 s at most)"},
    {"/drip", 0, h_drip, "/drip                  a slow body; ?bytes=N (default 10) ?interval_ms=MS (default 100)"},
    {"/redirect/", 1, h_redirect, "/redirect/N            a chain of N 302s ending in 200"},
    {"/redirect-to", 0, h_redirect_to, "/redirect-to           redirects to ?url=URL with ?status=CODE (default 302)"},
    {"/headers/", 1, h_headers, "/headers/N             N extra header fields X-H-1 .. X-H-N"},
    {"/bigheader/", 1, h_bigheader, "/bigheader/N           one header field X-Big of N bytes"},
    {"/raw/", 1, h_raw, "/raw/NAME              a canned, often malformed, response (see below)"},
    {"/capacity", 1, mock_h_capacity, "/capacity              answers after ms * max(1, n/cap)^2 with n in flight; ?cap=N (8) ?ms=MS (10)"},
    {"/sessions", 1, mock_h_sessions, "/sessions              POST: a session id for ?ttl_ms=T (1000); /sessions/ID: 200 while it lives, else 401"},
    {"/h2/", 1, mock_h_h2,
     "/h2/mute               (h2) answers 200 \"muted\", then the connection neither reads nor\n"
     "                         writes (no PING ACK) for 60 s or until the peer closes\n"
     "  /h2/data-after-close   (h2) a whole 200 response, then a DATA frame on its closed stream\n"
     "  /h2/bigheader          a head of 64 fields x-big-1..64 of 16 KiB each (HEADERS +\n"
     "                         CONTINUATION over h2), status 200, a small body\n"
     "  /h2/bad-frame          (h2) no response; a SETTINGS frame on stream 1 instead\n"
     "                         (a connection PROTOCOL_ERROR for the client)\n"
     "  /h2/goaway             (h2) answers 200, then GOAWAY(NO_ERROR, last id = this stream)\n"
     "                         and closes when done; (h2) paths answer 404 over HTTP/1.1"},
    {"/stats", 0, h_stats, "/stats                 server counters and per-path hits as JSON"},
    {"/reset-stats", 0, h_reset_stats, "/reset-stats           POST: zeroes the counters"},
    MOCK_BODY_ROUTES
};

void mock_routes_usage(FILE *out)
{
    size_t i;

    fputs("endpoints (any method; HEAD gets the head alone):\n", out);
    for (i = 0; i < sizeof routes / sizeof routes[0]; i++)
        fprintf(out, "  %s\n", routes[i].help);
    fprintf(out, "  raw names: %s\n", mock_raw_names());
}

void mock_handle(mock_conn *c, const mock_request *r)
{
    size_t i;

    atomic_fetch_add(&mock_state.requests, 1);
    if (!has_prefix(r->path, r->path_len, "/hits/"))
        mock_counters_add(&mock_state.hits, r->path, r->path_len, 1);
    for (i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *rt = &routes[i];
        size_t n = strlen(rt->path);
        if (rt->prefix ? has_prefix(r->path, r->path_len, rt->path)
                       : r->path_len == n && memcmp(r->path, rt->path, n) == 0) {
            rt->fn(c, r, r->path + n, r->path_len - n);
            return;
        }
    }
    send_error(c, 404, "not found", r->path, r->path_len);
}
