/* libFuzzer target: the Content-Encoding decoder, whole and split.
 *
 * Input: byte 0 picks the coding (bit 0: deflate, bit 2: br, else gzip) and
 * a decoded-size bound (bit 1: 4 KiB, else none); then n = byte 1 & 15
 * split sizes; then the encoded body.
 * Decoding in pieces must agree with decoding in one piece, and neither
 * gives more than the bound. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "decode.h"

typedef struct result {
    int rc;
    sl_buf out;
} result;

static int to_buf(const void *p, size_t n, void *ud)
{
    return sl_buf_append(ud, p, n) ? -1000 : 0;
}

static void decode(sl_coding c, size_t max, const uint8_t *in, size_t len, const uint8_t *splits,
                   size_t nsplits, result *res)
{
    sl_decoder d;
    size_t pos = 0, k = 0;

    memset(res, 0, sizeof *res);
    res->rc = sl_decoder_init(&d, c, max, NULL);
    while (res->rc == 0 && pos < len) {
        size_t n = len - pos;
        if (nsplits && splits[k % nsplits] && n > splits[k % nsplits])
            n = splits[k % nsplits];
        k++;
        res->rc = sl_decoder_feed(&d, in + pos, n, to_buf, &res->out, NULL);
        pos += n;
    }
    if (res->rc == 0)
        res->rc = sl_decoder_finish(&d, NULL);
    sl_decoder_free(&d);
    if (max && res->out.len > max)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    result whole, split;
    sl_coding c;
    size_t nsplits, max;

    if (size < 2)
        return 0;
    c = data[0] & 4 ? SL_CODING_BR : data[0] & 1 ? SL_CODING_DEFLATE : SL_CODING_GZIP;
    max = data[0] & 2 ? 4096 : 0;
    nsplits = data[1] & 15;
    if (size < 2 + nsplits)
        return 0;
    decode(c, max, data + 2 + nsplits, size - 2 - nsplits, NULL, 0, &whole);
    decode(c, max, data + 2 + nsplits, size - 2 - nsplits, data + 2, nsplits, &split);
    /* Success gives the same bytes both ways.  A failure may come after
     * different amounts of output (what a piece gave before the corrupt
     * byte is already handed on), so one output is a prefix of the other;
     * and since the bound is checked per piece of output, a stream both
     * corrupt and too big may fail as either SLUICE_EPROTO or
     * SLUICE_ETOOBIG. */
    if (whole.rc == 0 || split.rc == 0) {
        if (whole.rc != split.rc || whole.out.len != split.out.len ||
            (whole.out.len && memcmp(whole.out.data, split.out.data, whole.out.len) != 0))
            abort();
    } else {
        size_t n = whole.out.len < split.out.len ? whole.out.len : split.out.len;
        if (whole.rc != split.rc &&
            !((whole.rc == SLUICE_ETOOBIG || whole.rc == SLUICE_EPROTO) &&
              (split.rc == SLUICE_ETOOBIG || split.rc == SLUICE_EPROTO)))
            abort();
        if (n && memcmp(whole.out.data, split.out.data, n) != 0)
            abort();
    }
    sl_buf_free(&whole.out);
    sl_buf_free(&split.out);
    return 0;
}
