/* Content-Encoding decoding with zlib.  Output goes out in pieces of one
 * stack buffer, so memory stays bounded whatever the body expands to, and
 * the size bound is checked before a piece is handed on: a decompression
 * bomb ends at max_out, not at the allocator. */
#include <brotli/decode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ascii.h"
#include "decode.h"
#include "error.h"

#define OUT_CHUNK 16384

enum {
    STATE_SNIFF,    /* deflate: the first two bytes tell zlib from raw */
    STATE_BODY,
    STATE_END       /* the stream ended; only another gzip member may follow */
};

static int name_is(const char *s, size_t n, const char *name)
{
    size_t i;

    if (strlen(name) != n)
        return 0;
    for (i = 0; i < n; i++)
        if (sl_ascii_lower((unsigned char)s[i]) != name[i])
            return 0;
    return 1;
}

int sl_coding_parse(const char *value, sl_coding *out)
{
    const char *s = value, *e;

    *out = SL_CODING_IDENTITY;
    if (!s)
        return 0;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e == s || name_is(s, (size_t)(e - s), "identity"))
        return 0;
    if (name_is(s, (size_t)(e - s), "gzip") || name_is(s, (size_t)(e - s), "x-gzip")) {
        *out = SL_CODING_GZIP;
        return 0;
    }
    if (name_is(s, (size_t)(e - s), "deflate")) {
        *out = SL_CODING_DEFLATE;
        return 0;
    }
    if (name_is(s, (size_t)(e - s), "br")) {
        *out = SL_CODING_BR;
        return 0;
    }
    return -1;
}

static int zstart(sl_decoder *d, int window_bits, sluice_error *err)
{
    z_stream *z = calloc(1, sizeof *z);

    if (!z)
        return sl_err(err, SLUICE_ENOMEM, "out of memory starting the %s decoder",
                      d->coding == SL_CODING_GZIP ? "gzip" : "deflate");
    if (inflateInit2(z, window_bits) != Z_OK) {
        free(z);
        return sl_err(err, SLUICE_ENOMEM, "zlib could not start the %s decoder",
                      d->coding == SL_CODING_GZIP ? "gzip" : "deflate");
    }
    d->z = z;
    return 0;
}

int sl_decoder_init(sl_decoder *d, sl_coding coding, size_t max_out, sluice_error *err)
{
    memset(d, 0, sizeof *d);
    d->coding = coding;
    d->max_out = max_out;
    d->state = STATE_BODY;
    if (coding == SL_CODING_GZIP)
        return zstart(d, 16 + MAX_WBITS, err);
    if (coding == SL_CODING_BR && !(d->z = BrotliDecoderCreateInstance(NULL, NULL, NULL)))
        return sl_err(err, SLUICE_ENOMEM, "out of memory starting the br decoder");
    if (coding == SL_CODING_DEFLATE)
        d->state = STATE_SNIFF;
    return 0;
}

static const char *coding_name(const sl_decoder *d)
{
    return d->coding == SL_CODING_GZIP      ? "gzip"
           : d->coding == SL_CODING_DEFLATE ? "deflate"
           : d->coding == SL_CODING_BR      ? "br"
                                            : "identity";
}

/* Hands n decoded bytes on, within the bound. */
static int emit(sl_decoder *d, const void *p, size_t n, sl_decode_sink sink, void *ud,
                sluice_error *err)
{
    int rc;

    if (n == 0)
        return 0;
    if (d->max_out && n > d->max_out - d->out_total)
        return sl_err(err, SLUICE_ETOOBIG,
                      "the %s body decodes to more than %zu bytes (from %zu encoded)",
                      coding_name(d), d->max_out, d->in_total);
    d->out_total += n;
    rc = sink(p, n, ud);
    return rc;
}

/* A zlib stream (RFC 1950) starts with CM 8, a window of at most 32 KiB and
 * a check over the two bytes; raw deflate data almost never passes all
 * three, which is how curl and browsers tell the two apart. */
static int looks_like_zlib(unsigned char cmf, unsigned char flg)
{
    return (cmf & 0x0f) == 8 && (cmf >> 4) <= 7 && ((unsigned)cmf * 256 + flg) % 31 == 0;
}

static int inflate_some(sl_decoder *d, const unsigned char *in, size_t len, sl_decode_sink sink,
                        void *ud, size_t *used, sluice_error *err)
{
    z_stream *z = d->z;
    unsigned char out[OUT_CHUNK];
    int zrc, rc;

    z->next_in = (unsigned char *)in;
    z->avail_in = len > UINT32_MAX ? UINT32_MAX : (unsigned)len;
    do {
        z->next_out = out;
        z->avail_out = sizeof out;
        zrc = inflate(z, Z_NO_FLUSH);
        if (zrc == Z_NEED_DICT || zrc == Z_DATA_ERROR || zrc == Z_STREAM_ERROR)
            return sl_err(err, SLUICE_EPROTO, "corrupt %s body after %zu encoded bytes: %s",
                          coding_name(d), d->in_total + (len - z->avail_in),
                          z->msg ? z->msg : "invalid data");
        if (zrc == Z_MEM_ERROR)
            return sl_err(err, SLUICE_ENOMEM, "out of memory decoding the %s body",
                          coding_name(d));
        rc = emit(d, out, sizeof out - z->avail_out, sink, ud, err);
        if (rc)
            return rc;
        if (zrc == Z_STREAM_END) {
            d->state = STATE_END;
            break;
        }
        /* Z_BUF_ERROR: no progress possible until more input arrives. */
    } while (zrc != Z_BUF_ERROR && (z->avail_in > 0 || z->avail_out == 0));
    *used = len - z->avail_in;
    return 0;
}

/* Brotli: one stream, nothing after it.  The decoder takes every input
 * byte it is given and asks for more output while it has some. */
static int brotli_feed(sl_decoder *d, const unsigned char *in, size_t len, sl_decode_sink sink,
                       void *ud, sluice_error *err)
{
    unsigned char out[OUT_CHUNK];
    BrotliDecoderResult r;
    int rc;

    if (d->state == STATE_END && len > 0)
        return sl_err(err, SLUICE_EPROTO, "%zu bytes after the end of the br body", len);
    do {
        size_t avail_in = len, avail_out = sizeof out;
        const uint8_t *next_in = in;
        uint8_t *next_out = out;
        r = BrotliDecoderDecompressStream(d->z, &avail_in, &next_in, &avail_out, &next_out, NULL);
        d->in_total += len - avail_in;
        in = next_in;
        len = avail_in;
        if (r == BROTLI_DECODER_RESULT_ERROR)
            return sl_err(err, SLUICE_EPROTO, "corrupt br body after %zu encoded bytes: %s",
                          d->in_total,
                          BrotliDecoderErrorString(BrotliDecoderGetErrorCode(d->z)));
        if ((rc = emit(d, out, sizeof out - avail_out, sink, ud, err)))
            return rc;
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            d->state = STATE_END;
            if (len > 0)
                return sl_err(err, SLUICE_EPROTO, "%zu bytes after the end of the br body", len);
        }
    } while (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT);
    return 0;
}

int sl_decoder_feed(sl_decoder *d, const void *in, size_t len, sl_decode_sink sink, void *ud,
                    sluice_error *err)
{
    const unsigned char *p = in;
    int rc;

    if (d->coding == SL_CODING_BR)
        return brotli_feed(d, p, len, sink, ud, err);
    if (d->coding == SL_CODING_IDENTITY) {
        rc = emit(d, p, len, sink, ud, err);
        d->in_total += rc ? 0 : len;
        return rc;
    }
    while (len > 0) {
        size_t used = 0;

        if (d->state == STATE_SNIFF) {
            /* One byte alone is enough to start: a lone first byte is
             * sniffed as zlib only if it could begin a zlib header. */
            int zlib = len >= 2 ? looks_like_zlib(p[0], p[1]) : (p[0] & 0x0f) == 8;
            rc = zstart(d, zlib ? MAX_WBITS : -MAX_WBITS, err);
            if (rc)
                return rc;
            d->state = STATE_BODY;
        } else if (d->state == STATE_END) {
            if (d->coding != SL_CODING_GZIP)
                return sl_err(err, SLUICE_EPROTO, "%zu bytes after the end of the deflate body",
                              len);
            inflateReset(d->z);     /* another gzip member */
            d->state = STATE_BODY;
        }
        rc = inflate_some(d, p, len, sink, ud, &used, err);
        if (rc)
            return rc;
        d->in_total += used;
        p += used;
        len -= used;
        if (used == 0 && d->state == STATE_BODY)   /* zlib took nothing: never so */
            return sl_err(err, SLUICE_EPROTO, "the %s decoder stopped after %zu encoded bytes",
                          coding_name(d), d->in_total);
    }
    return 0;
}

int sl_decoder_finish(sl_decoder *d, sluice_error *err)
{
    /* An empty body stays empty, whatever its header says (as Go's
     * Transport reads it): servers label bodiless answers that way. */
    if (d->coding == SL_CODING_IDENTITY || d->state == STATE_END || d->in_total == 0)
        return 0;
    return sl_err(err, SLUICE_EPROTO, "the %s body ends early, after %zu encoded bytes",
                  coding_name(d), d->in_total);
}

void sl_decoder_free(sl_decoder *d)
{
    if (d->z && d->coding == SL_CODING_BR) {
        BrotliDecoderDestroyInstance(d->z);
        d->z = NULL;
    }
    if (d->z) {
        inflateEnd(d->z);
        free(d->z);
        d->z = NULL;
    }
}
