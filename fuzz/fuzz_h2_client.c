/* Arbitrary server bytes into an HTTP/2 client connection with two
 * streams open (a GET and a POST with a body), read back through the
 * response parser as the client does.  Whatever arrives, every stream must
 * end (a response or a SLUICE_E* code) once the server side closes, and
 * nothing may leak or touch freed memory.  The first byte chooses whether
 * a valid empty SETTINGS frame goes first, so the mutations reach past
 * the preface check. */
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "h2.h"
#include "http1.h"

static void read_stream(sl_h2_stream *st, int head)
{
    sl_http_io io = {sl_h2_read, st};
    sl_http_limits lim = {16384, 100, 1 << 20};
    sl_buf rbuf = SL_BUF_INIT;
    sl_http_resp resp = {0};
    sluice_error err;
    int rc = sl_http1_read_response(&io, &rbuf, head, &lim, sl_deadline_in_ms(2000), &resp, &err);

    if (rc == 0 && !resp.body)
        __builtin_trap();   /* a parsed response always has a body */
    sl_http_resp_free(&resp);
    sl_buf_free(&rbuf);
    sl_h2_stream_end(st, 0, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    sluice_factory_opts fo;
    sl_conn_env env = {0};
    sl_h2_cfg cfg = {0};
    sl_h2_pool *p;
    sl_h2_lease l;
    sl_h2_stream get, post;
    sl_http_req req = {0};
    sluice_error err;
    int sv[2];

    if (size < 1 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return 0;
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    env.opts = &fo;
    cfg.stream_window = 65535;
    cfg.max_header_bytes = 16384;
    cfg.max_per_origin = 1;
    /* One lease (a fresh connection grants one stream until the server's
     * SETTINGS come); both streams go on its connection. */
    if (!(p = sl_h2_pool_new(&cfg, &env, &err)) ||
        sl_h2_pool_adopt(p, "http://fuzz", sv[0], &err) != 0 ||
        sl_h2_acquire(p, "http://fuzz", NULL, 1, sl_deadline_in_ms(1000), &l, &err) != 0 ||
        !l.conn)
        __builtin_trap();
    req.method = "GET";
    req.target = "/a";
    req.host = "fuzz";
    if (sl_h2_stream_open(&get, l.conn, &req, "http", NULL, 0, 0, 0, &err) != 0)
        __builtin_trap();
    req.method = "POST";
    req.body_len = 100;
    req.send_length = 1;
    if (sl_h2_stream_open(&post, l.conn, &req, "http", "0123456789012345678901234567890123456789"
                          "01234567890123456789012345678901234567890123456789012345678901234567"
                          "89", 100, 0, 0, &err) != 0)
        __builtin_trap();
    if (data[0] & 1)
        (void)!write(sv[1], settings, sizeof settings);
    (void)!write(sv[1], data + 1, size - 1);
    shutdown(sv[1], SHUT_WR);
    read_stream(&get, 0);
    read_stream(&post, 0);
    sl_h2_release(p, &l);
    sl_h2_pool_free(p);
    close(sv[1]);
    return 0;
}
