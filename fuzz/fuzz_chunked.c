/* libFuzzer target: the chunked decoder, whole and split.
 *
 * Input: byte 0 = n, then n split sizes, then the chunked stream.  Decoding
 * in pieces must give what decoding in one piece gives: the same result,
 * the same data and the same number of bytes consumed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http1.h"

typedef struct result {
    int rc;
    size_t consumed;
    sl_buf out;
} result;

static void decode(const uint8_t *in, size_t len, const uint8_t *splits, size_t nsplits,
                   result *res)
{
    sl_chunked c = {0};
    size_t pos = 0, k = 0;

    memset(res, 0, sizeof *res);
    do {
        size_t n = len - pos, used = 0;
        if (nsplits && splits[k % nsplits] && n > splits[k % nsplits])
            n = splits[k % nsplits];
        k++;
        res->rc = sl_chunked_decode(&c, (const char *)in + pos, n, &res->out, &used, NULL);
        if (used > n)
            abort();
        pos += used;
        if (res->rc == 0 && used < n)   /* wanting more yet leaving input */
            abort();
    } while (res->rc == 0 && pos < len);
    res->consumed = pos;
    if (res->out.len > pos)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    result whole, split;
    size_t nsplits;

    if (size < 1)
        return 0;
    nsplits = data[0] & 15;
    if (size < 1 + nsplits)
        return 0;
    decode(data + 1 + nsplits, size - 1 - nsplits, NULL, 0, &whole);
    decode(data + 1 + nsplits, size - 1 - nsplits, data + 1, nsplits, &split);
    if (whole.rc != split.rc || whole.out.len != split.out.len ||
        (whole.out.len && memcmp(whole.out.data, split.out.data, whole.out.len) != 0))
        abort();
    if (whole.rc == 1 && whole.consumed != split.consumed)
        abort();
    sl_buf_free(&whole.out);
    sl_buf_free(&split.out);
    return 0;
}
