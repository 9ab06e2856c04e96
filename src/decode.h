/* Content-Encoding: gzip and deflate response bodies decoded with zlib,
 * br with libbrotli's decoder,
 * incrementally, so a streamed body is decoded chunk by chunk and a
 * buffered one in a single feed.  A decoder is owned by one call and not
 * thread-safe; the functions keep no global state. */
#ifndef SL_DECODE_H
#define SL_DECODE_H

#include <stddef.h>

#include "sluice.h"

typedef enum sl_coding {
    SL_CODING_IDENTITY = 0,
    SL_CODING_GZIP,     /* RFC 1952, members may follow one another */
    SL_CODING_DEFLATE,  /* RFC 1950 (zlib) as the RFC says; raw RFC 1951 as
                           some servers send it, told apart by the header */
    SL_CODING_BR        /* RFC 7932 brotli */
} sl_coding;

/* The coding a Content-Encoding value names ("gzip", "x-gzip", "deflate",
 * "br", "identity", case-insensitive, surrounding blanks ignored).  NULL or an
 * empty value is identity.  Returns 0, or -1 for a coding sluice cannot
 * decode: another name, or a list of several codings. */
int sl_coding_parse(const char *value, sl_coding *out);

/* Receives decoded bytes; a non-zero return stops decoding and becomes
 * sl_decoder_feed's return value. */
typedef int (*sl_decode_sink)(const void *data, size_t len, void *ud);

typedef struct sl_decoder {
    sl_coding coding;
    size_t max_out;     /* decoded bytes allowed in all; 0 = no bound */
    size_t out_total;   /* decoded bytes so far */
    size_t in_total;    /* encoded bytes fed so far */
    int state;          /* private */
    void *z;            /* private: the z_stream, or the brotli decoder */
} sl_decoder;

/* Prepares d for `coding`.  SLUICE_ENOMEM if zlib or brotli cannot start.  An
 * identity decoder passes bytes through (bounded by max_out all the same). */
int sl_decoder_init(sl_decoder *d, sl_coding coding, size_t max_out, sluice_error *err);

/* Decodes len bytes of the encoded body and hands what they give to sink.
 * SLUICE_EPROTO for a corrupt stream or bytes after its end (gzip may
 * carry another member); SLUICE_ETOOBIG once the decoded size would pass
 * max_out; the sink's own non-zero code as it returned it. */
int sl_decoder_feed(sl_decoder *d, const void *in, size_t len, sl_decode_sink sink, void *ud,
                    sluice_error *err);

/* The encoded body has ended: SLUICE_EPROTO when the stream stopped short
 * of its end (a truncated body), 0 otherwise. */
int sl_decoder_finish(sl_decoder *d, sluice_error *err);

void sl_decoder_free(sl_decoder *d);

#endif
