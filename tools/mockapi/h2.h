/* HTTP/2 for the mock API: the contract between h2.c (one connection: the
 * nghttp2 session, its socket and its worker threads) and h1resp.c (the
 * decoder that turns a handler's HTTP/1.1 output into an HTTP/2 head and
 * body).  Handlers never know which protocol they answer: each stream's
 * handler writes HTTP/1.1 into its mock_conn, whose sink is the stream. */
#ifndef MOCK_H2_H
#define MOCK_H2_H

#include <stdint.h>

#include "mockapi.h"

/* --- HTTP/1.1 response decoder (h1resp.c) --------------------------------
 * Incremental: feed it the bytes a handler writes, in any pieces.  Interim
 * (1xx) heads are skipped; the final head's fields are kept lower-cased
 * without the HTTP/1.1-only ones (Connection, Keep-Alive,
 * Proxy-Connection, Transfer-Encoding, Upgrade, TE); a chunked body is
 * de-chunked and its trailer fields dropped.  Not thread-safe: one decoder
 * belongs to one stream, used under that stream's lock. */
enum { MOCK_H1_HEAD, MOCK_H1_BODY, MOCK_H1_CHUNK_SIZE, MOCK_H1_CHUNK_DATA, MOCK_H1_CHUNK_END,
       MOCK_H1_TRAILER, MOCK_H1_UNTIL_END, MOCK_H1_DONE, MOCK_H1_BAD };

typedef struct mock_h1resp {
    int state;
    int head_only;              /* answering HEAD: no body whatever the head says */
    int status;                 /* of the final head; 0 until it is complete */
    mock_buf head;              /* the head being received */
    mock_buf fields;            /* kept fields, "name\0value\0" each */
    size_t nfields;
    uint64_t left;              /* body or chunk bytes still due */
    mock_buf line;              /* a chunk-size, chunk-end or trailer line being received */
} mock_h1resp;

/* Decodes p[0..n), appending body bytes to *body.  0, or -1 once the
 * response is malformed (the decoder stays MOCK_H1_BAD). */
int mock_h1resp_feed(mock_h1resp *d, const char *p, size_t n, mock_buf *body);
/* The writer is done: 1 when the response is complete (a body delimited
 * by the end of the connection ends here), 0 when it was cut short. */
int mock_h1resp_finish(mock_h1resp *d);
void mock_h1resp_free(mock_h1resp *d);

#endif
