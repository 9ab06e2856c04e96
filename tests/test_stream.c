/* Streamed bodies and content decoding against the mock API: responses
 * handed to on_body as they arrive (1 GiB with bounded memory, abort, no
 * retry after a delivered byte, never coalesced, the size bound), uploads
 * pulled from body_read (by length, chunked, rewound for a retry, never
 * re-sent without a rewind), and gzip/deflate bodies decoded by default,
 * within max_response_bytes, refused when corrupt. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zlib.h>

#include "testutil.h"

/* The mock API's body pattern: byte i is (i * 31 + 7) & 0xff. */
static unsigned char pat[65536 + 256];

static void pat_init(void)
{
    size_t i;

    for (i = 0; i < sizeof pat; i++)
        pat[i] = (unsigned char)((i * 31 + 7) & 0xff);
}

/* What a streaming callback saw. */
typedef struct sink {
    uint64_t total;
    size_t calls;
    size_t max_piece;
    int bad;                /* a byte differed from the pattern */
    uint64_t stop_after;    /* return non-zero once total passes this; 0 = never */
} sink;

static int on_body(const void *chunk, size_t len, void *ud)
{
    sink *s = ud;
    const unsigned char *p = chunk;

    s->calls++;
    if (len > s->max_piece)
        s->max_piece = len;
    while (len) {
        size_t k = len < 65536 ? len : 65536;
        if (memcmp(p, pat + (s->total & 255), k) != 0)
            s->bad = 1;
        p += k;
        len -= k;
        s->total += k;
    }
    return s->stop_after && s->total >= s->stop_after ? 7 : 0;
}

static sluice_client *client(sluice_factory **f, const char *name, void (*tune)(sluice_client_opts *))
{
    sluice_client *c;

    pat_init();
    c = tu_client(f, name, tu_http_base(), tune);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    return c;
}

static int stream_get(sluice_client *c, const char *path, sink *s, sluice_response **r,
                      sluice_error *err)
{
    sluice_request req = {0};

    req.path = path;
    req.on_body = on_body;
    req.body_ud = s;
    req.timeout_ms = 120000;
    return sluice_client_do(c, &req, r, err);
}

/* --- streamed responses --------------------------------------------------- */

static void test_stream_download_pieces(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "stream-pieces", NULL);
    sluice_response *r = NULL;
    sluice_error err;
    size_t len = 99;
    sink s = {0};

    CU_ASSERT_EQUAL_FATAL(stream_get(c, "/bytes/300001", &s, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_STRING_EQUAL(sluice_response_header(r, "Content-Length"), "300001");
    sluice_response_body(r, &len);
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_EQUAL(s.total, 300001);
    CU_ASSERT_FALSE(s.bad);
    CU_ASSERT(s.calls > 1);
    CU_ASSERT(s.max_piece <= 65536);
    sluice_response_free(r);

    memset(&s, 0, sizeof s);
    CU_ASSERT_EQUAL_FATAL(stream_get(c, "/chunked/200000", &s, &r, &err), 0);
    CU_ASSERT_EQUAL(s.total, 200000);
    CU_ASSERT_FALSE(s.bad);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static long maxrss_kib(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void big_limit(sluice_client_opts *o)
{
    o->read_timeout_ms = 30000;
}

/* 1 GiB goes through a callback while the process's peak resident size
 * grows by less than 32 MiB: the body is never gathered. */
static void test_stream_1gib_bounded_rss(void)
{
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_client *c;
    sluice_response *r = NULL;
    sluice_error err;
    sink s = {0};
    long before, after;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_response_bytes = (size_t)2 << 30;
    f = sluice_factory_new(&fo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(&f, "stream-1gib", big_limit);
    before = maxrss_kib();
    CU_ASSERT_EQUAL_FATAL(stream_get(c, "/bytes/1073741824", &s, &r, &err), 0);
    after = maxrss_kib();
    CU_ASSERT_EQUAL(s.total, (uint64_t)1 << 30);
    CU_ASSERT_FALSE(s.bad);
    CU_ASSERT(after - before < 32 * 1024);
    if (after - before >= 32 * 1024)
        fprintf(stderr, "\n  peak RSS grew %ld KiB\n", after - before);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void test_stream_abort_closes_connection(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "stream-abort", NULL);
    sluice_response *r = NULL;
    sluice_error err;
    sink s = {0};

    CU_ASSERT_EQUAL_FATAL(tu_get_status(c, "/json", &err), 200);
    s.stop_after = 100000;
    CU_ASSERT_EQUAL(stream_get(c, "/bytes/5000000", &s, &r, &err), SLUICE_ECANCELED);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(s.total >= 100000 && s.total < 5000000);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "returned 7"));
    /* The one pooled connection was dropped, not put back mid-body. */
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/json", &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_reused(r), 0);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void retries_on(sluice_client_opts *o)
{
    o->retry.max_retries = 3;
    o->retry.backoff_factor_ms = 1;
    o->retry.backoff_max_ms = 5;
}

static void test_stream_no_retry_after_byte(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "stream-noretry", retries_on);
    const char *addr = tu_http_addr();
    sluice_response *r = NULL;
    sluice_error err;
    sink s = {0};
    long h0, h1, h2;

    TU_REQUIRE(addr);
    h0 = tu_hits(addr, "/truncated");
    /* Buffered, the cut body is a transport error and is retried. */
    CU_ASSERT_EQUAL(sluice_get(c, "/truncated?bytes=5000&pause_ms=50", &r, &err), SLUICE_EIO);
    h1 = tu_hits(addr, "/truncated");
    CU_ASSERT_EQUAL(h1 - h0, 4);
    /* Streamed, 5000 bytes reached the caller: one attempt only. */
    CU_ASSERT_EQUAL(stream_get(c, "/truncated?bytes=5000&pause_ms=50", &s, &r, &err), SLUICE_EIO);
    h2 = tu_hits(addr, "/truncated");
    CU_ASSERT_EQUAL(h2 - h1, 1);
    CU_ASSERT_EQUAL(s.total, 5000);
    CU_ASSERT_EQUAL(err.attempts, 1);
    sluice_factory_free(f);
}

typedef struct flight_arg {
    sluice_client *c;
    int stream;
    int rc;
} flight_arg;

static void *flight(void *p)
{
    flight_arg *a = p;
    sluice_response *r = NULL;
    sink s = {0};

    if (a->stream) {
        a->rc = stream_get(a->c, "/drip?bytes=2&interval_ms=150", &s, &r, NULL);
        if (a->rc == 0 && s.total != 2)
            a->rc = -100;
    } else {
        a->rc = sluice_get(a->c, "/drip?bytes=2&interval_ms=150", &r, NULL);
    }
    sluice_response_free(r);
    return NULL;
}

static long run_flights(sluice_client *c, int stream, const char *addr)
{
    pthread_t t[4];
    flight_arg a[4];
    long h0 = tu_hits(addr, "/drip");
    int i;

    for (i = 0; i < 4; i++) {
        a[i] = (flight_arg){c, stream, -1};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, flight, &a[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(a[i].rc, 0);
    }
    return tu_hits(addr, "/drip") - h0;
}

static void test_stream_never_coalesced(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "stream-coalesce", NULL);
    const char *addr = tu_http_addr();

    TU_REQUIRE(addr);
    CU_ASSERT(run_flights(c, 0, addr) < 4);     /* buffered GETs share flights */
    CU_ASSERT_EQUAL(run_flights(c, 1, addr), 4);
    sluice_factory_free(f);
}

static void small_limit_factory(sluice_factory **f, size_t max)
{
    sluice_factory_opts fo;
    sluice_error err;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.max_response_bytes = max;
    *f = sluice_factory_new(&fo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*f);
}

static void test_stream_bounded_by_max_response_bytes(void)
{
    sluice_factory *f;
    sluice_client *c;
    sluice_response *r = NULL;
    sluice_error err;
    sink s = {0};

    small_limit_factory(&f, 100000);
    c = client(&f, "stream-limit", NULL);
    CU_ASSERT_EQUAL(stream_get(c, "/chunked/300000", &s, &r, &err), SLUICE_ETOOBIG);
    CU_ASSERT(s.total <= 100000);
    CU_ASSERT_EQUAL(stream_get(c, "/bytes/100001", &s, &r, &err), SLUICE_ETOOBIG);
    memset(&s, 0, sizeof s);
    CU_ASSERT_EQUAL(stream_get(c, "/bytes/100000", &s, &r, &err), 0);
    CU_ASSERT_EQUAL(s.total, 100000);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static uint64_t hook_bytes;

static void on_end(const sluice_request_info *info, void *ud)
{
    __atomic_store_n(&hook_bytes, info->bytes_received, __ATOMIC_RELAXED);
}

static void test_stream_hooks_and_stats_count_bytes(void)
{
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_client *c;
    struct sluice_client_stats st0, st1;
    sluice_response *r = NULL;
    sluice_error err;
    sink s = {0};

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.on_request_end = on_end;
    f = sluice_factory_new(&fo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(&f, "stream-hooks", NULL);
    CU_ASSERT_EQUAL_FATAL(sluice_client_stats(c, &st0), 0);
    CU_ASSERT_EQUAL_FATAL(stream_get(c, "/bytes/2000000", &s, &r, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sluice_client_stats(c, &st1), 0);
    CU_ASSERT(st1.bytes_received - st0.bytes_received >= 2000000);
    CU_ASSERT(__atomic_load_n(&hook_bytes, __ATOMIC_RELAXED) >= 2000000);
    sluice_response_free(r);
    sluice_factory_free(f);
}

/* --- streamed uploads ----------------------------------------------------- */

typedef struct source {
    size_t len;         /* bytes to give */
    size_t off;
    size_t piece;       /* at most this per call */
    int rewinds;
    int reads;
    long fail_at;       /* return -1 once off passes this; 0 = never */
} source;

static long body_read(void *buf, size_t cap, void *ud)
{
    source *s = ud;
    size_t n = s->len - s->off, i;
    unsigned char *p = buf;

    s->reads++;
    if (s->fail_at && s->off >= (size_t)s->fail_at)
        return -1;
    if (n > cap)
        n = cap;
    if (n > s->piece)
        n = s->piece;
    for (i = 0; i < n; i++)
        p[i] = (unsigned char)(((s->off + i) * 31 + 7) & 0xff);
    s->off += n;
    return (long)n;
}

static int body_rewind(void *ud)
{
    source *s = ud;

    s->off = 0;
    s->rewinds++;
    return 0;
}

static unsigned long pattern_crc(size_t len)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    size_t off = 0;

    pat_init();
    while (off < len) {
        size_t k = len - off < 65536 ? len - off : 65536;
        crc = crc32(crc, pat + (off & 255), (uInt)k);
        off += k;
    }
    return crc;
}

static int upload(sluice_client *c, const char *path, source *src, size_t body_len,
                  int rewind, sluice_response **r, sluice_error *err)
{
    sluice_request req = {0};

    req.method = "POST";
    req.path = path;
    req.body_read = body_read;
    req.body_rewind = rewind ? body_rewind : NULL;
    req.body_ud = src;
    req.body_len = body_len;
    req.flags = SLUICE_REQ_IDEMPOTENT;
    return sluice_client_do(c, &req, r, err);
}

static void check_upload_answer(sluice_response *r, size_t len, int chunked)
{
    char want[128];

    snprintf(want, sizeof want, "{\"bytes\":%zu,\"crc32\":%lu,\"chunked\":%d}", len,
             pattern_crc(len), chunked);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    CU_ASSERT_STRING_EQUAL(sluice_response_body(r, NULL), want);
}

static void test_stream_upload_with_length(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "upload-length", NULL);
    sluice_response *r = NULL;
    sluice_error err;
    source src = {3 << 20, 0, 1000, 0, 0, 0};

    CU_ASSERT_EQUAL_FATAL(upload(c, "/upload", &src, src.len, 0, &r, &err), 0);
    check_upload_answer(r, src.len, 0);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void test_stream_upload_chunked(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "upload-chunked", NULL);
    sluice_response *r = NULL;
    sluice_error err;
    source src = {1000003, 0, 70000, 0, 0, 0};

    CU_ASSERT_EQUAL_FATAL(upload(c, "/upload", &src, SLUICE_BODY_CHUNKED, 0, &r, &err), 0);
    check_upload_answer(r, src.len, 1);
    sluice_response_free(r);
    /* An empty chunked body is the last chunk alone. */
    src = (source){0, 0, 1, 0, 0, 0};
    CU_ASSERT_EQUAL_FATAL(upload(c, "/upload", &src, SLUICE_BODY_CHUNKED, 0, &r, &err), 0);
    check_upload_answer(r, 0, 1);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void test_stream_upload_rewind_retried(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "upload-rewind", retries_on);
    sluice_response *r = NULL;
    sluice_error err;
    source src = {500000, 0, 65536, 0, 0, 0};

    CU_ASSERT_EQUAL_FATAL(
        upload(c, "/upload?fail_key=rewind-1&fail=1", &src, src.len, 1, &r, &err), 0);
    check_upload_answer(r, src.len, 0);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 2);
    CU_ASSERT_EQUAL(src.rewinds, 1);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void test_stream_upload_without_rewind_not_resent(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "upload-norewind", retries_on);
    sluice_response *r = NULL;
    sluice_error err;
    source src = {500000, 0, 65536, 0, 0, 0};

    CU_ASSERT_EQUAL_FATAL(
        upload(c, "/upload?fail_key=norewind-1&fail=1", &src, SLUICE_BODY_CHUNKED, 0, &r, &err), 0);
    CU_ASSERT_EQUAL(sluice_response_status(r), 503);
    CU_ASSERT_EQUAL(sluice_response_attempts(r), 1);
    CU_ASSERT_EQUAL(src.off, src.len);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void test_stream_upload_abort_and_short(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "upload-abort", retries_on);
    sluice_response *r = NULL;
    sluice_error err;
    source src = {500000, 0, 10000, 0, 0, 100000};
    sluice_request req = {0};

    CU_ASSERT_EQUAL(upload(c, "/upload", &src, src.len, 1, &r, &err), SLUICE_ECANCELED);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(src.rewinds, 0);
    /* The callback ends before body_len: the request cannot be framed. */
    src = (source){500, 0, 100, 0, 0, 0};
    CU_ASSERT_EQUAL(upload(c, "/upload", &src, 1000, 0, &r, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "500 of body_len 1000"));
    /* body and body_read together make no sense. */
    req.path = "/upload";
    req.body = "x";
    req.body_len = 1;
    req.body_read = body_read;
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_EINVAL);
    /* The connection left mid-body was not reused for what follows. */
    CU_ASSERT_EQUAL(tu_get_status(c, "/json", &err), 200);
    sluice_factory_free(f);
}

/* --- content decoding ----------------------------------------------------- */

static void check_pattern_body(sluice_response *r, size_t want)
{
    size_t len = 0;
    const unsigned char *b = sluice_response_body(r, &len);
    size_t off = 0;

    CU_ASSERT_EQUAL(len, want);
    if (len != want)
        return;
    while (off < len) {
        size_t k = len - off < 65536 ? len - off : 65536;
        if (memcmp(b + off, pat + (off & 255), k) != 0)
            break;
        off += k;
    }
    CU_ASSERT_EQUAL(off, len);
}

static void test_encoding_decoded_by_default(void)
{
    static const char *const paths[] = {"/gzip/200000", "/gzip/200000?chunked=1",
                                        "/gzip/100000?members=2", "/deflate/150000",
                                        "/deflate/150000?raw=1", "/deflate/150000?chunked=1",
                                        "/br/150000", "/br/150000?chunked=1"};
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "decode-default", NULL);
    sluice_response *r = NULL;
    sluice_error err;
    size_t i;

    for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        size_t want = strstr(paths[i], "200000") ? 200000 : strstr(paths[i], "100000") ? 100000
                                                                                       : 150000;
        CU_ASSERT_EQUAL_FATAL(sluice_get(c, paths[i], &r, &err), 0);
        CU_ASSERT_EQUAL(sluice_response_status(r), 200);
        CU_ASSERT_EQUAL(sluice_response_decoded(r), 1);
        CU_ASSERT_PTR_NULL(sluice_response_header(r, "Content-Encoding"));
        CU_ASSERT_PTR_NULL(sluice_response_header(r, "Content-Length"));
        check_pattern_body(r, want);
        sluice_response_free(r);
    }
    /* The request said it takes both. */
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/echo", &r, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(sluice_response_body(r, NULL),
                                  "[\"Accept-Encoding\",\"gzip, deflate, br\"]"));
    CU_ASSERT_EQUAL(sluice_response_decoded(r), 0);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void decompress_off(sluice_client_opts *o)
{
    o->decompress = SLUICE_OFF;
}

static void check_raw_gzip(sluice_response *r)
{
    size_t len = 0;
    const unsigned char *b = sluice_response_body(r, &len);

    CU_ASSERT(len > 10 && len < 200000);
    CU_ASSERT(b[0] == 0x1f && b[1] == 0x8b);
    CU_ASSERT_EQUAL(sluice_response_decoded(r), 0);
    CU_ASSERT_STRING_EQUAL(sluice_response_header(r, "Content-Encoding"), "gzip");
}

static void test_encoding_opt_out_and_callers_header(void)
{
    sluice_factory *f = NULL;
    sluice_client *off = client(&f, "decode-off", decompress_off);
    sluice_client *on = client(&f, "decode-own-header", NULL);
    sluice_header ae = {"Accept-Encoding", "gzip"};
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;

    CU_ASSERT_EQUAL_FATAL(sluice_get(off, "/gzip/200000", &r, &err), 0);
    check_raw_gzip(r);
    sluice_response_free(r);
    CU_ASSERT_EQUAL_FATAL(sluice_get(off, "/echo", &r, &err), 0);
    CU_ASSERT_PTR_NULL(strstr(sluice_response_body(r, NULL), "Accept-Encoding"));
    sluice_response_free(r);

    req.path = "/gzip/200000";
    req.headers = &ae;
    req.nheaders = 1;
    CU_ASSERT_EQUAL_FATAL(sluice_client_do(on, &req, &r, &err), 0);
    check_raw_gzip(r);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static void test_encoding_bomb_and_bound(void)
{
    sluice_factory *f;
    sluice_client *c;
    sluice_response *r = NULL;
    sluice_error err;
    sink s = {0};

    small_limit_factory(&f, 1 << 20);
    c = client(&f, "decode-bomb", NULL);
    /* 4 GiB of zeros in about 4 MB: refused at the bound, not the allocator. */
    CU_ASSERT_EQUAL(sluice_get(c, "/bomb/4294967296", &r, &err), SLUICE_ETOOBIG);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "gzip"));
    /* The bound is on the decoded size: a small encoded body, too big decoded. */
    CU_ASSERT_EQUAL(sluice_get(c, "/gzip/1048577", &r, &err), SLUICE_ETOOBIG);
    CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/gzip/1048576", &r, &err), 0);
    check_pattern_body(r, 1048576);
    sluice_response_free(r);
    /* Streamed, the same bound holds over the pieces. */
    CU_ASSERT_EQUAL(stream_get(c, "/bomb/4294967296", &s, &r, &err), SLUICE_ETOOBIG);
    sluice_factory_free(f);
}

static void test_encoding_corrupt_refused(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "decode-corrupt", NULL);
    sluice_response *r = NULL;
    sluice_error err;

    CU_ASSERT_EQUAL(sluice_get(c, "/corrupt", &r, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "corrupt gzip body"));
    CU_ASSERT_EQUAL(sluice_get(c, "/corrupt?coding=deflate", &r, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NULL(r);
    sluice_factory_free(f);
}

static void test_encoding_streamed_decoded(void)
{
    sluice_factory *f = NULL;
    sluice_client *c = client(&f, "decode-stream", NULL);
    sluice_response *r = NULL;
    sluice_error err;
    sink s = {0};

    CU_ASSERT_EQUAL_FATAL(stream_get(c, "/gzip/3000000?chunked=1", &s, &r, &err), 0);
    CU_ASSERT_EQUAL(s.total, 3000000);
    CU_ASSERT_FALSE(s.bad);
    CU_ASSERT(s.calls > 1);
    CU_ASSERT_EQUAL(sluice_response_decoded(r), 1);
    sluice_response_free(r);
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_stream_download_pieces", test_stream_download_pieces},
    {"test_stream_1gib_bounded_rss", test_stream_1gib_bounded_rss},
    {"test_stream_abort_closes_connection", test_stream_abort_closes_connection},
    {"test_stream_no_retry_after_byte", test_stream_no_retry_after_byte},
    {"test_stream_never_coalesced", test_stream_never_coalesced},
    {"test_stream_bounded_by_max_response_bytes", test_stream_bounded_by_max_response_bytes},
    {"test_stream_hooks_and_stats_count_bytes", test_stream_hooks_and_stats_count_bytes},
    {"test_stream_upload_with_length", test_stream_upload_with_length},
    {"test_stream_upload_chunked", test_stream_upload_chunked},
    {"test_stream_upload_rewind_retried", test_stream_upload_rewind_retried},
    {"test_stream_upload_without_rewind_not_resent", test_stream_upload_without_rewind_not_resent},
    {"test_stream_upload_abort_and_short", test_stream_upload_abort_and_short},
    {"test_encoding_decoded_by_default", test_encoding_decoded_by_default},
    {"test_encoding_opt_out_and_callers_header", test_encoding_opt_out_and_callers_header},
    {"test_encoding_bomb_and_bound", test_encoding_bomb_and_bound},
    {"test_encoding_corrupt_refused", test_encoding_corrupt_refused},
    {"test_encoding_streamed_decoded", test_encoding_streamed_decoded},
    CU_TEST_INFO_NULL,
};

void suite_stream(void);
void suite_stream(void)
{
    tu_add_suite("stream", tests);
}
