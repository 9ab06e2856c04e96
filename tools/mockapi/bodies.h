/* The mock API's encoded bodies and uploads (bodies.c): gzip, deflate
 * and br responses, a corrupt one, a decompression bomb, and an upload sink that
 * answers with the body's length and CRC-32.  MOCK_BODY_ROUTES goes into
 * handlers.c's route table. */
#ifndef MOCK_BODIES_H
#define MOCK_BODIES_H

#include "mockapi.h"

void mock_h_gzip(mock_conn *c, const mock_request *r, const char *arg, size_t len);
void mock_h_deflate(mock_conn *c, const mock_request *r, const char *arg, size_t len);
void mock_h_corrupt(mock_conn *c, const mock_request *r, const char *arg, size_t len);
void mock_h_br(mock_conn *c, const mock_request *r, const char *arg, size_t len);
void mock_h_bomb(mock_conn *c, const mock_request *r, const char *arg, size_t len);
void mock_h_truncated(mock_conn *c, const mock_request *r, const char *arg, size_t len);
void mock_h_upload(mock_conn *c, const mock_request *r, const char *arg, size_t len);

#define MOCK_BODY_ROUTES                                                                        \
    {"/gzip/", 1, mock_h_gzip,                                                                  \
     "/gzip/N                the /bytes/N pattern gzip-encoded (Content-Encoding: gzip);\n"     \
     "                         ?chunked=1 streams it chunked ?members=2 two gzip members"},     \
    {"/deflate/", 1, mock_h_deflate,                                                            \
     "/deflate/N             the pattern deflate-encoded (zlib); ?raw=1 raw deflate; ?chunked=1"}, \
    {"/br/", 1, mock_h_br,                                                                      \
     "/br/N                  the pattern br-encoded (brotli, quality 5); ?chunked=1"},          \
    {"/corrupt", 0, mock_h_corrupt,                                                             \
     "/corrupt               Content-Encoding: gzip over a damaged stream; ?coding=deflate"},   \
    {"/bomb/", 1, mock_h_bomb,                                                                  \
     "/bomb/N                N zero bytes gzip-encoded on the fly (about N/1000 on the wire)"}, \
    {"/upload", 0, mock_h_upload,                                                               \
     "/upload                the request body's length and CRC-32 as JSON;\n"                 \
     "                         ?fail_key=K&fail=N answers 503 to the first N per K"},         \
    {"/truncated", 0, mock_h_truncated,                                                         \
     "/truncated             promises 2N bytes, sends N (?bytes=N, default 1000), waits\n"     \
     "                         ?pause_ms=MS (default 100), then closes"},

#endif
