/* The limiter's reply decoder, fed with redisReply trees built from the
 * input: either hiredis' own parser over the bytes as RESP (first byte odd)
 * or a tree shaped directly by the bytes (first byte even), so shapes no
 * server would send are tried too.  The decoder must never crash, never
 * read past what a reply declares, and either accept a well-formed reply
 * (results then consistent) or refuse it with SLUICE_ELIMITER. */
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "limiter.h"

typedef struct input {
    const uint8_t *p;
    size_t n;
} input;

static int next(input *in)
{
    if (!in->n)
        return -1;
    in->n--;
    return *in->p++;
}

static long long next_int(input *in)
{
    static const long long pick[] = {0, 1, -1, 2, 100, -2, LLONG_MAX, LLONG_MIN,
                                     (long long)LONG_MAX + 0, 4294967296LL};
    int b = next(in);
    long long v = 0;
    int i;

    if (b < 0)
        return 0;
    if (b < 0x50)
        return pick[b % (int)(sizeof pick / sizeof pick[0])];
    if (b < 0xf0)
        return (long long)(b - 0x50) - 1;     /* small values, -1 .. 158 */
    for (i = 0; i < 8; i++)
        v = (long long)((unsigned long long)v << 8 | (unsigned)(next(in) & 0xff));
    return v;
}

static void free_tree(redisReply *r)
{
    size_t i;

    if (!r)
        return;
    for (i = 0; r->element && i < r->elements; i++)
        free_tree(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

/* A node, or NULL (a hole in an array) when the bytes say so. */
static redisReply *build(input *in, int depth)
{
    int t = next(in);
    redisReply *r;
    size_t i;

    if (t < 0 || t % 8 == 7)
        return NULL;
    r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->type = t % 8 == 0 ? REDIS_REPLY_ARRAY : 1 + t % 6;
    if (depth >= 3 && r->type == REDIS_REPLY_ARRAY)
        r->type = REDIS_REPLY_INTEGER;
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        r->integer = next_int(in);
        break;
    case REDIS_REPLY_ARRAY:
        r->elements = (size_t)(next(in) & 0x3f);
        r->element = r->elements ? calloc(r->elements, sizeof *r->element) : NULL;
        if (!r->element)
            r->elements = 0;
        for (i = 0; i < r->elements; i++)
            r->element[i] = build(in, depth + 1);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        r->len = (size_t)(next(in) & 0x7f);
        if (r->len > in->n)
            r->len = in->n;
        r->str = malloc(r->len + 1);
        if (r->str) {
            memcpy(r->str, in->p, r->len);
            r->str[r->len] = '\0';
        } else {
            r->len = 0;
        }
        in->p += r->len;
        in->n -= r->len;
        break;
    default:
        break;
    }
    return r;
}

static void check(const redisReply *reply, size_t n)
{
    sluice_limit_result out[8];
    sluice_error err;
    size_t i;
    int rc;

    memset(&err, 0, sizeof err);
    rc = sl_redis_decode_reply(reply, n, out, "fuzz:1", &err);
    if (rc != 0 && (rc != SLUICE_ELIMITER || err.code != SLUICE_ELIMITER ||
                    !memchr(err.msg, '\0', sizeof err.msg)))
        abort();
    for (i = 0; rc == 0 && i < n; i++)
        if ((out[i].allowed != 0 && out[i].allowed != 1) || out[i].remaining < 0 ||
            out[i].reset_after_ms < 0 ||
            (out[i].allowed ? out[i].retry_after_ms != -1 : out[i].retry_after_ms < 0))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    int mode = next(&in), nb = next(&in);
    size_t n = nb < 0 ? 1 : (size_t)(nb % 8);

    if (mode < 0)
        return 0;
    if (mode & 1) {
        redisReader *rd = redisReaderCreate();
        void *reply = NULL;

        if (!rd)
            return 0;
        /* As the library reads: no array longer than any reply it expects. */
        if (sl_redis_bound_reader(rd) != 0) {
            redisReaderFree(rd);
            return 0;
        }
        if (redisReaderFeed(rd, (const char *)in.p, in.n) == REDIS_OK &&
            redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
            check(reply, n);
            freeReplyObject(reply);
        }
        redisReaderFree(rd);
    } else {
        redisReply *r = build(&in, 0);
        check(r, n);
        free_tree(r);
    }
    return 0;
}
