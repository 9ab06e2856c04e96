/* libFuzzer target: arbitrary bytes into the mock API's request parser.
 * Beyond "no crash, no over-read", it checks the parser's promises: a
 * complete request lies within the input, its body within the request,
 * and every shorter prefix of a complete request is merely partial. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long parse_copy(const uint8_t *data, size_t len, mock_request *req)
{
    /* An exact-size copy, so ASan catches any read past the input. */
    char *buf = malloc(len ? len : 1);
    long r;

    if (!buf)
        abort();
    memcpy(buf, data, len);
    r = mock_request_parse(buf, len, req);
    if (r > 0) {
        char out[256];
        size_t n;
        if ((size_t)r > len || req->head_len > (size_t)r ||
            req->body < buf || req->body + req->body_len > buf + r)
            abort();
        mock_query_get(req->query, req->query_len, "a", out, sizeof out, &n);
        mock_query_get(req->query, req->query_len, "url", out, 4, &n);
        mock_request_header(req, "content-type");
    } else if (r == MOCK_REQ_BAD && !req->error) {
        abort();
    }
    free(buf);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mock_request req;
    long r;

    /* A connection's buffer starts out unallocated. */
    if (mock_request_parse(NULL, 0, &req) != MOCK_REQ_PARTIAL)
        abort();
    r = parse_copy(data, size, &req);
    size_t head = req.head_len, cut[3], i;

    if (r <= 0)
        return 0;
    cut[0] = (size_t)r - 1;
    cut[1] = (size_t)r / 2;
    cut[2] = head ? head - 1 : 0;
    for (i = 0; i < 3; i++)
        if (parse_copy(data, cut[i], &req) != MOCK_REQ_PARTIAL)
            abort();
    return 0;
}
