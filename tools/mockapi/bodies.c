/* Encoded response bodies and an upload sink, for content decoding and
 * streamed uploads.  Bodies are the /bytes pattern (byte i is
 * (i * 31 + 7) & 0xff), so a test can check the decoded bytes exactly.
 * Everything large is generated and compressed as it is written: a bomb
 * of gigabytes costs the server a 64 KiB block. */
#include <brotli/encode.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "bodies.h"

#define MAX_ENCODED_BYTES (1ull << 34)
#define BLOCK 65536u

static unsigned char block[BLOCK + 256];
static pthread_once_t block_once = PTHREAD_ONCE_INIT;

static void block_init(void)
{
    size_t i;

    for (i = 0; i < sizeof block; i++)
        block[i] = (unsigned char)((i * 31 + 7) & 0xff);
}

static void answer_400(mock_conn *c, const char *what)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"error\":\"bad parameter\",\"detail\":\"%s\"}", what);

    mock_respond(c, 400, "application/json", NULL, body, (size_t)n);
}

/* A numeric query parameter, `def` when absent; -1 after answering 400. */
static int qnum(mock_conn *c, const mock_request *r, const char *name, uint64_t max, uint64_t def,
                uint64_t *out)
{
    char v[32];
    size_t n;
    int found = mock_query_get(r->query, r->query_len, name, v, sizeof v, &n);

    *out = def;
    if (found == 0)
        return 0;
    if (found < 0 || mock_parse_u64(v, n, max, out) != 0) {
        answer_400(c, name);
        return -1;
    }
    return 0;
}

static int pathnum(mock_conn *c, const char *arg, size_t len, uint64_t *out)
{
    if (mock_parse_u64(arg, len, MAX_ENCODED_BYTES, out) == 0)
        return 0;
    answer_400(c, "number in path");
    return -1;
}

/* Where compressed bytes go: into a buffer (for a Content-Length body) or
 * straight out as chunks. */
typedef struct enc_out {
    mock_conn *c;
    int chunked;
    mock_buf buf;
} enc_out;

static int out_write(enc_out *o, const void *p, size_t n)
{
    char line[32];

    if (n == 0)
        return 0;
    if (!o->chunked) {
        mock_buf_add(&o->buf, p, n);
        return o->buf.failed ? -1 : 0;
    }
    snprintf(line, sizeof line, "%zx\r\n", n);
    if (mock_conn_write(o->c, line, strlen(line)) != 0 || mock_conn_write(o->c, p, n) != 0 ||
        mock_conn_write(o->c, "\r\n", 2) != 0)
        return -1;
    return 0;
}

/* Compresses pattern bytes [from, n) (or zeros) through z into o. */
static int deflate_stream(z_stream *z, enc_out *o, uint64_t from, uint64_t n, int zeros)
{
    static const unsigned char zero[BLOCK];
    unsigned char out[BLOCK];
    uint64_t off = from;
    int flush, zrc;

    pthread_once(&block_once, block_init);
    do {
        size_t k = n - off < BLOCK ? (size_t)(n - off) : BLOCK;
        z->next_in = (unsigned char *)(zeros ? zero : block + (off & 255));
        z->avail_in = (unsigned)k;
        off += k;
        flush = off == n ? Z_FINISH : Z_NO_FLUSH;
        do {
            z->next_out = out;
            z->avail_out = sizeof out;
            zrc = deflate(z, flush);
            if (zrc == Z_STREAM_ERROR || out_write(o, out, sizeof out - z->avail_out) != 0)
                return -1;
        } while (z->avail_out == 0);
    } while (flush != Z_FINISH);
    return 0;
}

/* One encoded response: head, then the members, the body held whole for
 * a Content-Length or streamed in chunks. */
static void send_encoded(mock_conn *c, const char *coding, int window_bits, uint64_t n,
                         int chunked, int members, int zeros)
{
    enc_out o = {c, chunked, MOCK_BUF_INIT};
    char extra[96];
    int i, rc = 0;

    snprintf(extra, sizeof extra, "Content-Encoding: %s\r\n%s", coding,
             chunked ? "Transfer-Encoding: chunked\r\n" : "");
    if (chunked && (mock_write_head(c, 200, "application/octet-stream", extra, -1) != 0 ||
                    c->head_only))
        return;
    for (i = 0; i < members && rc == 0; i++) {
        z_stream z;
        memset(&z, 0, sizeof z);
        if (deflateInit2(&z, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return;
        rc = deflate_stream(&z, &o, members == 2 && i ? n / 2 : 0, members == 2 && !i ? n / 2 : n,
                            zeros);
        deflateEnd(&z);
    }
    if (chunked) {
        if (rc == 0)
            mock_conn_write(c, "0\r\n\r\n", 5);
        else
            c->last = 1;
        return;
    }
    if (rc == 0)
        mock_respond(c, 200, "application/octet-stream", extra, o.buf.data, o.buf.len);
    else
        mock_respond(c, 500, "text/plain", NULL, "encoding failed\n", 16);
    mock_buf_free(&o.buf);
}

void mock_h_gzip(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    uint64_t n, chunked, members;

    if (pathnum(c, arg, len, &n) != 0 || qnum(c, r, "chunked", 1, 0, &chunked) != 0 ||
        qnum(c, r, "members", 2, 1, &members) != 0)
        return;
    if (!chunked && n > MOCK_MAX_BODY) {
        answer_400(c, "a Content-Length body is at most 64 MiB; use ?chunked=1");
        return;
    }
    send_encoded(c, "gzip", 16 + MAX_WBITS, n, (int)chunked, members ? (int)members : 1, 0);
}

void mock_h_deflate(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    uint64_t n, raw, chunked;

    if (pathnum(c, arg, len, &n) != 0 || qnum(c, r, "raw", 1, 0, &raw) != 0 ||
        qnum(c, r, "chunked", 1, 0, &chunked) != 0)
        return;
    if (!chunked && n > MOCK_MAX_BODY) {
        answer_400(c, "a Content-Length body is at most 64 MiB; use ?chunked=1");
        return;
    }
    send_encoded(c, "deflate", raw ? -MAX_WBITS : MAX_WBITS, n, (int)chunked, 1, 0);
}

/* The pattern br-encoded (quality 5), streamed through the encoder. */
static int brotli_stream(enc_out *o, uint64_t n)
{
    BrotliEncoderState *st = BrotliEncoderCreateInstance(NULL, NULL, NULL);
    unsigned char out[BLOCK];
    uint64_t off = 0;
    int rc = 0;

    if (!st)
        return -1;
    BrotliEncoderSetParameter(st, BROTLI_PARAM_QUALITY, 5);
    pthread_once(&block_once, block_init);
    while (rc == 0) {
        size_t k = n - off < BLOCK ? (size_t)(n - off) : BLOCK, avail_in = k, avail_out;
        const uint8_t *next_in = block + (off & 255);
        BrotliEncoderOperation op = off + k == n ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_PROCESS;
        do {
            uint8_t *next_out = out;
            avail_out = sizeof out;
            if (!BrotliEncoderCompressStream(st, op, &avail_in, &next_in, &avail_out, &next_out,
                                             NULL) ||
                out_write(o, out, sizeof out - avail_out) != 0)
                rc = -1;
        } while (rc == 0 && (avail_in > 0 || BrotliEncoderHasMoreOutput(st)));
        off += k;
        if (op == BROTLI_OPERATION_FINISH && BrotliEncoderIsFinished(st))
            break;
    }
    BrotliEncoderDestroyInstance(st);
    return rc;
}

void mock_h_br(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    enc_out o = {c, 0, MOCK_BUF_INIT};
    uint64_t n, chunked;

    if (pathnum(c, arg, len, &n) != 0 || qnum(c, r, "chunked", 1, 0, &chunked) != 0)
        return;
    o.chunked = (int)chunked;
    if (!chunked && n > MOCK_MAX_BODY) {
        answer_400(c, "a Content-Length body is at most 64 MiB; use ?chunked=1");
        return;
    }
    if (chunked) {
        if (mock_write_head(c, 200, "application/octet-stream",
                            "Content-Encoding: br\r\nTransfer-Encoding: chunked\r\n", -1) != 0 ||
            c->head_only)
            return;
        if (brotli_stream(&o, n) == 0)
            mock_conn_write(c, "0\r\n\r\n", 5);
        else
            c->last = 1;
        return;
    }
    if (brotli_stream(&o, n) == 0)
        mock_respond(c, 200, "application/octet-stream", "Content-Encoding: br\r\n", o.buf.data,
                     o.buf.len);
    else
        mock_respond(c, 500, "text/plain", NULL, "encoding failed\n", 16);
    mock_buf_free(&o.buf);
}

void mock_h_bomb(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    uint64_t n;

    if (pathnum(c, arg, len, &n) == 0)
        send_encoded(c, "gzip", 16 + MAX_WBITS, n, 1, 1, 1);
}

/* A valid gzip (or zlib) header and first bytes, then damage: the decoder
 * must refuse it, not hand the bytes over. */
void mock_h_corrupt(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    static const unsigned char gz[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3,
                                       0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x13, 0x37};
    static const unsigned char zl[] = {0x78, 0x9c, 0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x13, 0x37};
    char v[16];
    size_t n;
    int deflate_ = mock_query_get(r->query, r->query_len, "coding", v, sizeof v, &n) == 1 &&
                   strcmp(v, "deflate") == 0;

    mock_respond(c, 200, "application/octet-stream",
                 deflate_ ? "Content-Encoding: deflate\r\n" : "Content-Encoding: gzip\r\n",
                 deflate_ ? (const void *)zl : (const void *)gz, deflate_ ? sizeof zl : sizeof gz);
}

/* A body cut short by a clean close, after the client surely read the
 * part that came (a RST could overtake it). */
void mock_h_truncated(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    uint64_t n, pause;
    struct timespec ts;

    if (qnum(c, r, "bytes", 1u << 30, 1000, &n) != 0 || qnum(c, r, "pause_ms", 60000, 100, &pause) != 0)
        return;
    pthread_once(&block_once, block_init);
    c->last = 1;
    if (mock_write_head(c, 200, "application/octet-stream", NULL, (long long)(2 * n)) != 0 ||
        c->head_only)
        return;
    while (n) {
        size_t k = n < BLOCK ? (size_t)n : BLOCK;
        if (mock_conn_write(c, block, k) != 0)
            return;
        n -= k;
    }
    ts.tv_sec = (time_t)(pause / 1000);
    ts.tv_nsec = (long)(pause % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* The body's length and CRC-32, and how it was framed.  With fail_key,
 * the first `fail` uploads per key get a 503 (after the whole body was
 * read), so a client must send the body again. */
void mock_h_upload(mock_conn *c, const mock_request *r, const char *arg, size_t len)
{
    char key[128], body[192];
    uint64_t fail;
    size_t klen;
    uLong crc = crc32(0L, Z_NULL, 0);
    const char *p = r->body;
    size_t left = r->body_len;
    int n;

    if (qnum(c, r, "fail", 1000000, 0, &fail) != 0)
        return;
    while (left) {
        uInt k = left > (1u << 30) ? (1u << 30) : (uInt)left;
        crc = crc32(crc, (const Bytef *)p, k);
        p += k;
        left -= k;
    }
    if (mock_query_get(r->query, r->query_len, "fail_key", key, sizeof key, &klen) == 1 &&
        mock_counters_add(&mock_state.flaky, key, klen, 1) <= (long)fail) {
        n = snprintf(body, sizeof body, "{\"failed\":true,\"bytes\":%zu}", r->body_len);
        mock_respond(c, 503, "application/json", NULL, body, (size_t)n);
        return;
    }
    n = snprintf(body, sizeof body, "{\"bytes\":%zu,\"crc32\":%lu,\"chunked\":%d}", r->body_len,
                 (unsigned long)crc, r->chunked);
    mock_respond(c, 200, "application/json", NULL, body, (size_t)n);
}
