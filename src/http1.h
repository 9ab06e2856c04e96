/* HTTP/1.1: the request writer and a strict incremental response parser.
 * No locks, no global state; one parse belongs to one connection. */
#ifndef SL_HTTP1_H
#define SL_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "sluice.h"

/* What the writer needs.  `target` is the request-target already encoded
 * (path, then '?' and the query when there is one). */
typedef struct sl_http_req {
    const char *method;             /* "GET", ... (validated as a token) */
    const char *target;
    const char *host;               /* Host header value */
    const char *user_agent;         /* NULL = none written */
    const sluice_header *headers1;  /* the client's defaults */
    size_t nheaders1;
    const sluice_header *headers2;  /* the request's own; a name here
                                       replaces the same name in headers1 */
    size_t nheaders2;
    size_t body_len;
    int send_length;                /* 1 = write Content-Length (also 0) */
    const char *absolute;           /* "http://host:port" before the target
                                       (absolute form, to a proxy); NULL = origin form */
    const char *proxy_auth;         /* Proxy-Authorization value, or NULL */
    int chunked;                    /* 1 = write Transfer-Encoding: chunked instead */
    const char *accept_encoding;    /* written unless a caller header names it; NULL = none */
} sl_http_req;

/* Appends the request line and headers (ending with the blank line) to
 * `out`.  Host, User-Agent and Content-Length are written by the library;
 * a caller header of that name (case-insensitive) replaces Host/User-Agent
 * and is refused for Content-Length and Transfer-Encoding.  A method or
 * header name that is not an RFC 9110 token, or CR, LF or NUL in a target
 * or value, gives SLUICE_EINVAL naming the part, and nothing is written. */
int sl_http1_write_head(sl_buf *out, const sl_http_req *r, sluice_error *err);

/* What sl_http1_write_head would refuse in a method (NULL: not checked)
 * and a header list, found without writing anything, so a request can be
 * refused before it costs a connection, a rate-limit token or a breaker
 * probe.  0 or SLUICE_EINVAL with the same message. */
int sl_http1_check_request(const char *method, const sluice_header *h, size_t n,
                           sluice_error *err);

/* Where the parser gets bytes.  read() blocks until at least one byte or
 * the deadline: returns the count, 0 at EOF, or a negative SLUICE_E*
 * (ETIMEDOUT, EIO, ETLS) with err set. */
typedef struct sl_http_io {
    ssize_t (*read)(void *ctx, char *buf, size_t cap, int64_t deadline, sluice_error *err);
    void *ctx;
} sl_http_io;

/* A parsed response.  Owns its memory; release with sl_http_resp_free. */
typedef struct sl_http_resp {
    int status;
    int minor_version;          /* 0 or 1 */
    int keep_alive;             /* the connection may carry another request */
    sluice_header *headers;     /* names and values NUL-terminated */
    size_t nheaders;
    char *body;                 /* NUL-terminated; never NULL after success */
    size_t body_len;
    size_t wire_bytes;          /* bytes read for this response, also on failure */
    int decoded;                /* a Content-Encoding was removed (sl_http_sink.decode) */
    int version;                /* 10, 11 or 20, set by the client (0: not yet) */
    void *mem_;                 /* private: header storage */
} sl_http_resp;

typedef struct sl_http_limits {
    size_t max_header_bytes;    /* status line + headers (default 64 KiB) */
    size_t max_headers;         /* header count (default 100) */
    size_t max_body_bytes;      /* default 64 MiB */
} sl_http_limits;

/* Reads one response.  `rbuf` holds bytes already read from the
 * connection; bytes past this response stay in it.  Interim 1xx responses
 * (other than 101) are skipped.  `head_request` = the request was HEAD (no
 * body).  SLUICE_EPROTO for a malformed status line or header, obsolete
 * line folding, Content-Length with Transfer-Encoding, differing duplicate
 * Content-Length, a bad chunk size or a header block past the limits;
 * SLUICE_ETOOBIG past max_body_bytes; the io's error otherwise.  An EOF
 * before a complete response is SLUICE_EIO unless the body is delimited
 * by close. */
int sl_http1_read_response(const sl_http_io *io, sl_buf *rbuf, int head_request,
                           const sl_http_limits *lim, int64_t deadline,
                           sl_http_resp *out, sluice_error *err);
void sl_http_resp_free(sl_http_resp *r);

/* Where a body goes when it is not kept as sent.  With on_body set, the
 * decoded body is handed over piece by piece as it arrives (never more
 * than the read buffer at once) and the response's body stays empty; a
 * non-zero return stops the read with SLUICE_ECANCELED.  With decode set,
 * a gzip or deflate Content-Encoding is removed, and with it the
 * Content-Encoding and Content-Length fields, which would describe the
 * encoded form; another coding is left as sent.  max_body_bytes bounds
 * the decoded body and the encoded one alike. */
typedef struct sl_http_sink {
    int decode;
    int (*on_body)(const void *chunk, size_t len, void *ud);
    void *ud;
    int skip_redirect_body;     /* a 3xx with Location: read and drop its body */
    size_t delivered;           /* out: bytes handed to on_body */
} sl_http_sink;

/* sl_http1_read_response with a sink (NULL: the same as without). */
int sl_http1_read_response_to(const sl_http_io *io, sl_buf *rbuf, int head_request,
                              const sl_http_limits *lim, sl_http_sink *sink, int64_t deadline,
                              sl_http_resp *out, sluice_error *err);

/* The lower-level pieces, exposed for tests and fuzzing. */

/* Parses a complete response head in buf[0..len).  Returns the head's
 * length (through the blank line), 0 if more bytes are needed, or
 * SLUICE_EPROTO.  Header entries point into buf (not NUL-terminated). */
typedef struct sl_http_hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} sl_http_hdr;

typedef struct sl_http_head {
    int minor_version;
    int status;
    sl_http_hdr *hdrs;      /* caller's array */
    size_t nhdrs;           /* in: capacity; out: count */
} sl_http_head;

ssize_t sl_http1_parse_head(const char *buf, size_t len, sl_http_head *h, sluice_error *err);

/* Incremental chunked-body decoder. */
typedef struct sl_chunked {
    int state;
    uint64_t remaining;
    size_t trailer_bytes;
} sl_chunked;

/* Decodes in[0..len): appends data to `out`, sets *consumed.  Returns 1
 * when the last chunk and trailers are done, 0 when more input is needed,
 * SLUICE_EPROTO for bad framing, SLUICE_ENOMEM. */
int sl_chunked_decode(sl_chunked *c, const char *in, size_t len, sl_buf *out, size_t *consumed,
                      sluice_error *err);

#endif
