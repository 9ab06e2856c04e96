/* /raw/NAME: canned responses written byte for byte, then the connection
 * closes.  They exercise a client's response parser: the first group must
 * be refused by a strict client, the second accepted. */
#include <string.h>

#include "mockapi.h"

#define RAW(name, text) {name, text, sizeof text - 1}

static const struct raw {
    const char *name;
    const char *text;
    size_t len;             /* texts may hold NUL bytes */
} raws[] = {
    /* Must be refused. */
    RAW("cl-te", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n0\r\n\r\n"),
    RAW("dup-cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    RAW("list-cl", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    RAW("neg-cl", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello"),
    RAW("plus-cl", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
    RAW("big-cl", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello"),
    RAW("bad-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    RAW("te-gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                   "5\r\nhello\r\n0\r\n\r\n"),
    RAW("chunk-overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "10000000000000005\r\nhello\r\n0\r\n\r\n"),
    RAW("chunk-no-crlf", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    RAW("chunk-truncated", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
    RAW("short-body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
    RAW("fold", "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("bad-status", "HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("short-status", "HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("bad-version", "HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("not-http", "SSH-2.0-OpenSSH_9.2\r\n"),
    RAW("nul-header", "HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("cr-header", "HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("space-before-colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"),
    RAW("no-colon", "HTTP/1.1 200 OK\r\nX-No-Colon\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("bad-name", "HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("lf-only", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"),
    /* Odd but valid: must be accepted, body "hello" (or "hello until close"). */
    RAW("same-cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("http10", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close"),
    RAW("no-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close"),
    RAW("continue", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("early-hints", "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    RAW("empty-reason", "HTTP/1.1 200 \r\nContent-Length: 5\r\n\r\nhello"),
};

#define NRAWS (sizeof raws / sizeof raws[0])

static char names[1024];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void names_init(void)
{
    size_t i, len = 0;

    for (i = 0; i < NRAWS; i++) {
        size_t n = strlen(raws[i].name);
        if (len + n + 2 > sizeof names)
            break;
        if (i)
            names[len++] = ',';
        memcpy(names + len, raws[i].name, n);
        len += n;
    }
    names[len] = '\0';
}

const char *mock_raw_names(void)
{
    pthread_once(&names_once, names_init);
    return names;
}

int mock_raw_respond(mock_conn *c, const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < NRAWS; i++) {
        if (strlen(raws[i].name) == len && memcmp(raws[i].name, name, len) == 0) {
            c->last = 1;
            mock_conn_write(c, raws[i].text, raws[i].len);
            return 0;
        }
    }
    return -1;
}
