/* The mock API's HTTP/1.1 request parser: strict, allocation-free, and
 * stateless (call it again on the grown buffer until it says complete).
 *
 * It refuses what a careful origin server refuses: bare LF, CR or NUL
 * inside a line, obs-fold, whitespace before a header colon, a field name
 * that is not a token, versions other than HTTP/1.0 and HTTP/1.1, a
 * missing or repeated Host in HTTP/1.1, a bad or conflicting
 * Content-Length, Transfer-Encoding other than "chunked" (or together with
 * Content-Length, or in HTTP/1.0), malformed chunks, and anything over the
 * limits below.  Nothing here allocates, so the fuzzer can feed it freely. */
#ifndef MOCK_REQUEST_H
#define MOCK_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define MOCK_MAX_HEAD     65536u          /* request line + fields + blank line */
#define MOCK_MAX_HEADERS  100u            /* header fields (and, separately, trailer fields) */
#define MOCK_MAX_BODY     (64u << 20)     /* decoded body bytes */

typedef struct mock_header {
    const char *name;
    size_t name_len;
    const char *value;       /* without leading and trailing whitespace */
    size_t value_len;
} mock_header;

typedef struct mock_request {
    const char *method;
    size_t method_len;
    const char *target;      /* as received */
    size_t target_len;
    const char *path;        /* the target's path (absolute-form: after the authority) */
    size_t path_len;
    const char *query;       /* after '?', without it; NULL when the target has no '?' */
    size_t query_len;
    int minor;               /* HTTP/1.<minor>, 0 or 1 */
    mock_header headers[MOCK_MAX_HEADERS];
    size_t nheaders;
    size_t head_len;         /* bytes of the head; 0 until the head is complete */
    int chunked;
    uint64_t content_length;
    int keep_alive;          /* the client allows another request on this connection */
    int expect_continue;     /* "Expect: 100-continue" was sent */
    const char *body;        /* set when complete: points into the caller's buffer */
    size_t body_len;
    const char *error;       /* static text saying why, when MOCK_REQ_BAD */
} mock_request;

#define MOCK_REQ_PARTIAL 0L
#define MOCK_REQ_BAD     (-1L)

/* Parses the request at the start of buf[0..len).  Returns the bytes the
 * whole request (head and body) occupies once complete, MOCK_REQ_PARTIAL
 * when more input is needed (req->head_len is non-zero if the head is
 * already complete, so a caller can answer "Expect: 100-continue"), or
 * MOCK_REQ_BAD with req->error set.  A chunked body is decoded in place,
 * only once the request is complete, and only within the request's own
 * bytes; every pointer in req points into buf (except the path "/" of an
 * absolute-form target without one, which is static). */
long mock_request_parse(char *buf, size_t len, mock_request *req);

/* The first header named `name` (case-insensitive), or NULL. */
const mock_header *mock_request_header(const mock_request *req, const char *name);

/* Finds query parameter `name` in query[0..qlen) ("a=1&b=2"), percent-
 * and '+'-decodes its value into out (NUL-terminated, at most cap - 1
 * bytes) and stores its length in *out_len.  Returns 1 when found, 0 when
 * absent, -1 when the value is malformed (bad %-escape) or too long. */
int mock_query_get(const char *query, size_t qlen, const char *name,
                   char *out, size_t cap, size_t *out_len);

/* Parses s[0..len) as a decimal number in [0, max]: digits only, no sign,
 * no whitespace.  Returns 0 or -1. */
int mock_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

#endif
