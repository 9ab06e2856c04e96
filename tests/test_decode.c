/* Content-Encoding decoding: gzip, zlib and raw deflate, whole and split,
 * the decoded-size bound, corrupt and truncated streams, and the response
 * reader's sink (sl_http1_read_response_to) over every framing, fed a
 * few bytes at a time.  The encoded
 * inputs are made by zlib's own encoder in each test. */
#include <brotli/encode.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "buf.h"
#include "clock.h"
#include "decode.h"
#include "http1.h"
#include "testutil.h"

enum { FMT_GZIP, FMT_ZLIB, FMT_RAW };

/* Encodes in[0..n) in the given format into a new buffer. */
static unsigned char *encode(int fmt, const void *in, size_t n, size_t *out_len)
{
    static const int bits[] = {16 + MAX_WBITS, MAX_WBITS, -MAX_WBITS};
    z_stream z;
    size_t cap = deflateBound(NULL, (uLong)n) + 64;
    unsigned char *out = malloc(cap);

    memset(&z, 0, sizeof z);
    CU_ASSERT_FATAL(out != NULL);
    CU_ASSERT_FATAL(deflateInit2(&z, 6, Z_DEFLATED, bits[fmt], 8, Z_DEFAULT_STRATEGY) == Z_OK);
    z.next_in = (unsigned char *)in;
    z.avail_in = (unsigned)n;
    z.next_out = out;
    z.avail_out = (unsigned)cap;
    CU_ASSERT_FATAL(deflate(&z, Z_FINISH) == Z_STREAM_END);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static int to_buf(const void *p, size_t n, void *ud)
{
    return sl_buf_append(ud, p, n);
}

/* Decodes in[0..n) fed in pieces of `step` bytes (0 = whole). */
static int decode(sl_coding c, const unsigned char *in, size_t n, size_t step, size_t max,
                  sl_buf *out, sluice_error *err)
{
    sl_decoder d;
    size_t pos = 0;
    int rc = sl_decoder_init(&d, c, max, err);

    while (rc == 0 && pos < n) {
        size_t k = step && n - pos > step ? step : n - pos;
        rc = sl_decoder_feed(&d, in + pos, k, to_buf, out, err);
        pos += k;
    }
    if (rc == 0)
        rc = sl_decoder_finish(&d, err);
    sl_decoder_free(&d);
    return rc;
}

/* Text that compresses, but not to nothing. */
static char *sample(size_t n)
{
    char *s = malloc(n);
    size_t i;

    CU_ASSERT_FATAL(s != NULL);
    for (i = 0; i < n; i++)
        s[i] = (char)("{\"id\":12,\"name\":\"sluice\"}"[i % 25] + (i / 1000) % 3);
    return s;
}

static void test_decode_coding_names(void)
{
    static const struct {
        const char *value;
        int rc;
        sl_coding c;
    } cases[] = {
        {NULL, 0, SL_CODING_IDENTITY},      {"", 0, SL_CODING_IDENTITY},
        {"identity", 0, SL_CODING_IDENTITY}, {" gzip ", 0, SL_CODING_GZIP},
        {"GZip", 0, SL_CODING_GZIP},        {"x-gzip", 0, SL_CODING_GZIP},
        {"deflate", 0, SL_CODING_DEFLATE},  {"br", 0, SL_CODING_BR},
        {"zstd", -1, SL_CODING_IDENTITY},
        {"gzip, gzip", -1, SL_CODING_IDENTITY}, {"gzipx", -1, SL_CODING_IDENTITY},
        {"compress", -1, SL_CODING_IDENTITY},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_coding c = SL_CODING_DEFLATE;
        int rc = sl_coding_parse(cases[i].value, &c);
        CU_ASSERT_EQUAL(rc, cases[i].rc);
        if (rc == 0)
            CU_ASSERT_EQUAL(c, cases[i].c);
    }
}

/* Each format, whole and one byte at a time, gives the original back. */
static void test_decode_round_trips_split_anywhere(void)
{
    static const size_t steps[] = {0, 1, 7, 4096};
    static const struct {
        int fmt;
        sl_coding c;
    } fmts[] = {{FMT_GZIP, SL_CODING_GZIP}, {FMT_ZLIB, SL_CODING_DEFLATE},
                {FMT_RAW, SL_CODING_DEFLATE}};
    size_t n = 100000, f, s;
    char *plain = sample(n);

    for (f = 0; f < 3; f++) {
        size_t elen;
        unsigned char *enc = encode(fmts[f].fmt, plain, n, &elen);
        CU_ASSERT(elen < n / 4);
        for (s = 0; s < sizeof steps / sizeof steps[0]; s++) {
            sl_buf out = SL_BUF_INIT;
            sluice_error err = {0};
            CU_ASSERT_EQUAL(decode(fmts[f].c, enc, elen, steps[s], 0, &out, &err), 0);
            CU_ASSERT_EQUAL(out.len, n);
            CU_ASSERT(out.len == n && memcmp(out.data, plain, n) == 0);
            sl_buf_free(&out);
        }
        free(enc);
    }
    free(plain);
}

/* Two gzip members one after the other decode to both texts. */
static void test_decode_gzip_members_follow(void)
{
    size_t la, lb;
    unsigned char *a = encode(FMT_GZIP, "first,", 6, &la);
    unsigned char *b = encode(FMT_GZIP, "second", 6, &lb);
    unsigned char *ab = malloc(la + lb);
    sl_buf out = SL_BUF_INIT;
    sluice_error err = {0};

    memcpy(ab, a, la);
    memcpy(ab + la, b, lb);
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, ab, la + lb, 3, 0, &out, &err), 0);
    CU_ASSERT_STRING_EQUAL(out.data ? out.data : "", "first,second");
    sl_buf_free(&out);
    free(a);
    free(b);
    free(ab);
}

/* 64 MiB of zeros packed into about 64 KB stops at the bound with
 * SLUICE_ETOOBIG, having decoded no more than the bound. */
static void test_decode_bomb_stops_at_bound(void)
{
    size_t n = 64u << 20, elen;
    char *zeros = calloc(1, n);
    unsigned char *enc;
    sl_buf out = SL_BUF_INIT;
    sluice_error err = {0};

    CU_ASSERT_FATAL(zeros != NULL);
    enc = encode(FMT_GZIP, zeros, n, &elen);
    free(zeros);
    CU_ASSERT(elen < (size_t)n / 500);
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, enc, elen, 0, 1u << 20, &out, &err), SLUICE_ETOOBIG);
    CU_ASSERT(out.len <= 1u << 20);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "more than 1048576 bytes"));
    sl_buf_free(&out);

    /* Exactly at the bound is allowed. */
    enc = (free(enc), encode(FMT_GZIP, "0123456789", 10, &elen));
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, enc, elen, 0, 10, &out, &err), 0);
    CU_ASSERT_EQUAL(out.len, 10);
    sl_buf_free(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, enc, elen, 0, 9, &out, &err), SLUICE_ETOOBIG);
    sl_buf_free(&out);
    free(enc);
}

static void test_decode_corrupt_and_truncated(void)
{
    size_t n = 5000, elen;
    char *plain = sample(n);
    unsigned char *enc = encode(FMT_GZIP, plain, n, &elen);
    sl_buf out = SL_BUF_INIT;
    sluice_error err = {0};

    /* A flipped byte inside the compressed data, or in the CRC. */
    enc[elen / 2] ^= 0x55;
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, enc, elen, 0, 0, &out, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "corrupt gzip body"));
    enc[elen / 2] ^= 0x55;
    enc[elen - 6] ^= 1;
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, enc, elen, 0, 0, &out, &err), SLUICE_EPROTO);
    enc[elen - 6] ^= 1;

    /* Cut short: the decoder knows at the end. */
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, enc, elen - 3, 0, 0, &out, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "ends early"));

    /* Not gzip at all. */
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, (const unsigned char *)"hello, world", 12, 0, 0, &out,
                           &err),
                    SLUICE_EPROTO);
    free(enc);

    /* Bytes after a deflate stream's end. */
    enc = encode(FMT_ZLIB, plain, n, &elen);
    enc = realloc(enc, elen + 4);
    memcpy(enc + elen, "junk", 4);
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_DEFLATE, enc, elen + 4, 0, 0, &out, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "after the end"));

    /* An empty body stays empty. */
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_GZIP, enc, 0, 0, 0, &out, &err), 0);
    CU_ASSERT_EQUAL(out.len, 0);
    sl_buf_free(&out);
    free(enc);
    free(plain);
}

static int refuse_second(const void *p, size_t n, void *ud)
{
    int *calls = ud;

    (void)p;
    (void)n;
    return ++*calls == 2 ? SLUICE_ECANCELED : 0;
}

/* A sink's code stops decoding and comes back as it was. */
static void test_decode_sink_stops_it(void)
{
    size_t n = 200000, elen;
    char *plain = sample(n);
    unsigned char *enc = encode(FMT_GZIP, plain, n, &elen);
    sl_decoder d;
    sluice_error err = {0};
    int calls = 0;

    CU_ASSERT_EQUAL_FATAL(sl_decoder_init(&d, SL_CODING_GZIP, 0, &err), 0);
    CU_ASSERT_EQUAL(sl_decoder_feed(&d, enc, elen, refuse_second, &calls, &err),
                    SLUICE_ECANCELED);
    CU_ASSERT_EQUAL(calls, 2);
    sl_decoder_free(&d);

    /* Identity passes through, bounded too. */
    CU_ASSERT_EQUAL_FATAL(sl_decoder_init(&d, SL_CODING_IDENTITY, 4, &err), 0);
    calls = 0;
    CU_ASSERT_EQUAL(sl_decoder_feed(&d, "abcd", 4, refuse_second, &calls, &err), 0);
    CU_ASSERT_EQUAL(sl_decoder_feed(&d, "e", 1, refuse_second, &calls, &err), SLUICE_ETOOBIG);
    CU_ASSERT_EQUAL(calls, 1);
    sl_decoder_free(&d);
    free(enc);
    free(plain);
}

/* --- through the response reader ---------------------------------------------- */

typedef struct trickle {
    const char *data;
    size_t len, pos, step;
} trickle;

static ssize_t trickle_read(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err)
{
    trickle *t = ctx;
    size_t n = t->len - t->pos;

    (void)deadline, (void)err;
    if (n > t->step)
        n = t->step;
    if (n > cap)
        n = cap;
    memcpy(buf, t->data + t->pos, n);
    t->pos += n;
    return (ssize_t)n;
}

/* A response with `fields` and `enc` as its body, framed by length,
 * chunks of 1000 or the close, followed by "NEXT" when framed. */
static char *wire(const char *fields, int framing, const unsigned char *enc, size_t n,
                  size_t *len)
{
    sl_buf b = SL_BUF_INIT;
    size_t off;

    sl_buf_printf(&b, "HTTP/1.1 200 OK\r\n%s", fields);
    if (framing == 0)
        sl_buf_printf(&b, "Content-Length: %zu\r\n\r\n", n);
    else if (framing == 1)
        sl_buf_puts(&b, "Transfer-Encoding: chunked\r\n\r\n");
    else
        sl_buf_puts(&b, "Connection: close\r\n\r\n");
    for (off = 0; framing == 1 && off < n; off += 1000) {
        size_t k = n - off < 1000 ? n - off : 1000;
        sl_buf_printf(&b, "%zx\r\n", k);
        sl_buf_append(&b, enc + off, k);
        sl_buf_puts(&b, "\r\n");
    }
    if (framing == 1)
        sl_buf_puts(&b, "0\r\n\r\n");
    else
        sl_buf_append(&b, enc, n);
    if (framing != 2)
        sl_buf_puts(&b, "NEXT");
    CU_ASSERT_FATAL(!b.failed);
    return sl_buf_detach(&b, len);
}

static int read_through(const char *w, size_t wlen, size_t step, sl_http_sink *sink, size_t max,
                        sl_http_resp *r, sl_buf *rbuf, sluice_error *err)
{
    trickle t = {w, wlen, 0, step};
    sl_http_io io = {trickle_read, &t};
    sl_http_limits lim = {0, 0, max};

    return sl_http1_read_response_to(&io, rbuf, 0, &lim, sink, SL_NO_DEADLINE, r, err);
}

static const char *field(const sl_http_resp *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static void test_decode_reader_every_framing_and_split(void)
{
    static const size_t split[] = {1, 3, 1000, 100000};
    static const char *const fields[] = {"Content-Encoding: gzip\r\n",
                                         "Content-Encoding: deflate\r\n",
                                         "Content-Encoding: deflate\r\n"};
    size_t n = 20000, elen, wlen, i;
    char *plain = sample(n);
    int fmt, framing;

    for (fmt = FMT_GZIP; fmt <= FMT_RAW; fmt++) {
        unsigned char *enc = encode(fmt, plain, n, &elen);
        for (framing = 0; framing < 3; framing++) {
            char *w = wire(fields[fmt], framing, enc, elen, &wlen);
            for (i = 0; i < sizeof split / sizeof split[0]; i++) {
                sl_http_sink sink = {1, NULL, NULL, 0, 0};
                sl_buf rbuf = SL_BUF_INIT;
                sl_http_resp r;
                sluice_error err;
                CU_ASSERT_EQUAL_FATAL(read_through(w, wlen, split[i], &sink, 0, &r, &rbuf, &err), 0);
                CU_ASSERT_EQUAL(r.body_len, n);
                CU_ASSERT(r.body_len == n && memcmp(r.body, plain, n) == 0);
                CU_ASSERT_EQUAL(r.decoded, 1);
                CU_ASSERT_PTR_NULL(field(&r, "Content-Encoding"));
                CU_ASSERT_PTR_NULL(field(&r, "Content-Length"));
                /* What follows a framed body stays for the next response. */
                if (framing != 2 && split[i] == 100000)
                    CU_ASSERT(rbuf.len == 4 && memcmp(rbuf.data, "NEXT", 4) == 0);
                CU_ASSERT_EQUAL(r.keep_alive, framing != 2);
                sl_http_resp_free(&r);
                sl_buf_free(&rbuf);
            }
            free(w);
        }
        free(enc);
    }
    free(plain);
}

static int collect(const void *p, size_t n, void *ud)
{
    return sl_buf_append(ud, p, n);
}

static void test_decode_reader_streams_and_passes_unknown(void)
{
    size_t n = 50000, elen, wlen;
    char *plain = sample(n), *w;
    unsigned char *enc = encode(FMT_GZIP, plain, n, &elen);
    sl_buf got = SL_BUF_INIT, rbuf = SL_BUF_INIT;
    sl_http_sink sink = {1, collect, &got, 0, 0};
    sl_http_resp r;
    sluice_error err;

    /* Streamed and decoded: the pieces make the body; the response has none. */
    w = wire("Content-Encoding: gzip\r\n", 1, enc, elen, &wlen);
    CU_ASSERT_EQUAL_FATAL(read_through(w, wlen, 777, &sink, 0, &r, &rbuf, &err), 0);
    CU_ASSERT_EQUAL(r.body_len, 0);
    CU_ASSERT_EQUAL(sink.delivered, n);
    CU_ASSERT(got.len == n && memcmp(got.data, plain, n) == 0);
    sl_http_resp_free(&r);
    sl_buf_reset(&rbuf);
    free(w);
    /* A coding sluice does not undo, or two of them, is handed over as sent. */
    w = wire("Content-Encoding: zstd\r\n", 0, enc, elen, &wlen);
    sink.on_body = NULL;
    CU_ASSERT_EQUAL_FATAL(read_through(w, wlen, 100, &sink, 0, &r, &rbuf, &err), 0);
    CU_ASSERT(r.body_len == elen && memcmp(r.body, enc, elen) == 0);
    CU_ASSERT_EQUAL(r.decoded, 0);
    CU_ASSERT_STRING_EQUAL(field(&r, "Content-Encoding"), "zstd");
    sl_http_resp_free(&r);
    sl_buf_reset(&rbuf);
    free(w);
    w = wire("Content-Encoding: gzip\r\nContent-Encoding: gzip\r\n", 0, enc, elen, &wlen);
    CU_ASSERT_EQUAL_FATAL(read_through(w, wlen, 100, &sink, 0, &r, &rbuf, &err), 0);
    CU_ASSERT_EQUAL(r.body_len, elen);
    CU_ASSERT_EQUAL(r.decoded, 0);
    sl_http_resp_free(&r);
    sl_buf_reset(&rbuf);
    free(w);
    /* The bound is the decoded size, also when the encoded one is far under it. */
    w = wire("Content-Encoding: gzip\r\n", 0, enc, elen, &wlen);
    CU_ASSERT_EQUAL(read_through(w, wlen, 100, &sink, n - 1, &r, &rbuf, &err), SLUICE_ETOOBIG);
    sl_buf_reset(&rbuf);
    /* A connection that ends before the framing does is EIO; an encoded
     * stream that ends before its own end, under framing that is
     * complete (here the close), is corrupt. */
    CU_ASSERT_EQUAL(read_through(w, wlen - 4 - 10, 100, &sink, 0, &r, &rbuf, &err),
                    SLUICE_EIO);
    free(w);
    w = wire("Content-Encoding: gzip\r\n", 2, enc, elen - 10, &wlen);
    sl_buf_reset(&rbuf);
    CU_ASSERT_EQUAL(read_through(w, wlen, 100, &sink, 0, &r, &rbuf, &err), SLUICE_EPROTO);
    free(w);
    sl_buf_free(&rbuf);
    sl_buf_free(&got);
    free(enc);
    free(plain);
}

static unsigned char *encode_br(const void *in, size_t n, size_t *out_len)
{
    size_t cap = BrotliEncoderMaxCompressedSize(n) + 64;
    unsigned char *out = malloc(cap);

    CU_ASSERT_FATAL(out != NULL);
    *out_len = cap;
    CU_ASSERT_FATAL(BrotliEncoderCompress(5, 22, BROTLI_MODE_TEXT, n, in, out_len, out));
    return out;
}

/* br: whole and split, the bound, corruption, a cut and trailing bytes. */
static void test_decode_br(void)
{
    static const size_t steps[] = {0, 1, 7, 4096};
    size_t n = 100000, elen, s;
    char *plain = sample(n);
    unsigned char *enc = encode_br(plain, n, &elen);
    sl_buf out = SL_BUF_INIT;
    sluice_error err = {0};
    sl_coding c;

    CU_ASSERT_EQUAL(sl_coding_parse(" BR ", &c), 0);
    CU_ASSERT_EQUAL(c, SL_CODING_BR);
    for (s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        sl_buf_reset(&out);
        CU_ASSERT_EQUAL(decode(SL_CODING_BR, enc, elen, steps[s], 0, &out, &err), 0);
        CU_ASSERT(out.len == n && memcmp(out.data, plain, n) == 0);
    }
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_BR, enc, elen, 100, n - 1, &out, &err), SLUICE_ETOOBIG);
    CU_ASSERT(out.len <= n - 1);
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_BR, enc, elen - 2, 0, 0, &out, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "ends early"));
    enc = realloc(enc, elen + 4);
    memcpy(enc + elen, "junk", 4);
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_BR, enc, elen + 4, 0, 0, &out, &err), SLUICE_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "after the end of the br body"));
    enc[elen / 2] ^= 0x55;
    enc[elen / 2 + 1] ^= 0xff;
    sl_buf_reset(&out);
    CU_ASSERT_EQUAL(decode(SL_CODING_BR, enc, elen, 0, 0, &out, &err), SLUICE_EPROTO);
    sl_buf_free(&out);
    free(enc);
    free(plain);
}

static CU_TestInfo tests[] = {
    {"test_decode_coding_names", test_decode_coding_names},
    {"test_decode_round_trips_split_anywhere", test_decode_round_trips_split_anywhere},
    {"test_decode_gzip_members_follow", test_decode_gzip_members_follow},
    {"test_decode_bomb_stops_at_bound", test_decode_bomb_stops_at_bound},
    {"test_decode_corrupt_and_truncated", test_decode_corrupt_and_truncated},
    {"test_decode_sink_stops_it", test_decode_sink_stops_it},
    {"test_decode_br", test_decode_br},
    {"test_decode_reader_every_framing_and_split", test_decode_reader_every_framing_and_split},
    {"test_decode_reader_streams_and_passes_unknown", test_decode_reader_streams_and_passes_unknown},
    CU_TEST_INFO_NULL,
};

void suite_decode(void);
void suite_decode(void)
{
    tu_add_suite("decode", tests);
}
