/* HTTPS for the mock API through wolfSSL.  One server context, built once
 * before the first accept and read-only afterwards, is shared by every
 * connection thread (wolfSSL locks its own session cache).  Sessions resume
 * through the server session cache (TLS 1.2 session IDs) and tickets
 * (TLS 1.2 RFC 5077 and TLS 1.3 NewSessionTicket) sealed by wolfSSL's
 * built-in ticket key.  With --h2 every session offers ALPN "h2,http/1.1";
 * a client that offers neither still gets HTTP/1.1. */
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>

#include "mockapi.h"

#define HANDSHAKE_TIMEOUT_S 10
#define IO_TIMEOUT_S        60

static WOLFSSL_CTX *server_ctx;

static void set_timeouts(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Waits for the client's first byte.  Returns 1 when it came, 0 when the
 * peer left without a word (a port probe: not worth counting or logging
 * as a failed handshake), -1 on timeout. */
static int client_spoke(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    char b;

    if (poll(&p, 1, HANDSHAKE_TIMEOUT_S * 1000) != 1)
        return -1;
    return recv(fd, &b, 1, MSG_PEEK) == 1;
}

static const char *error_text(int err, char *buf, size_t cap)
{
    wolfSSL_ERR_error_string_n((unsigned long)err, buf, (unsigned long)cap);
    return buf;
}

static WOLFSSL_METHOD *pick_method(const mock_config *cfg)
{
    if (cfg->tls_max_version == 12)
        return wolfTLSv1_2_server_method();
    if (cfg->tls_min_version == 13)
        return wolfTLSv1_3_server_method();
    return wolfSSLv23_server_method();
}

static int load_identity(WOLFSSL_CTX *ctx, const mock_config *cfg)
{
    if (wolfSSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != WOLFSSL_SUCCESS) {
        mock_log(NULL, "cannot load the TLS certificate chain %s", cfg->tls_cert);
        return -1;
    }
    if (wolfSSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
        mock_log(NULL, "cannot load the TLS key %s (or it does not match %s)", cfg->tls_key, cfg->tls_cert);
        return -1;
    }
    if (!cfg->client_ca) {
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
        return 0;
    }
    if (wolfSSL_CTX_load_verify_locations(ctx, cfg->client_ca, NULL) != WOLFSSL_SUCCESS) {
        mock_log(NULL, "cannot load the client CA %s", cfg->client_ca);
        return -1;
    }
    wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 0;
}

int mock_tls_init(const mock_config *cfg)
{
    static const unsigned char sid_ctx[] = "sluice-mockapi";

    if (wolfSSL_Init() != WOLFSSL_SUCCESS || !(server_ctx = wolfSSL_CTX_new(pick_method(cfg)))) {
        mock_log(NULL, "cannot create the wolfSSL server context");
        return -1;
    }
    if (cfg->tls_max_version != 12 && cfg->tls_min_version != 13 &&
        wolfSSL_CTX_SetMinVersion(server_ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
        mock_log(NULL, "cannot set TLS 1.2 as the minimum version");
        return -1;
    }
    if (load_identity(server_ctx, cfg) != 0)
        return -1;
    /* Resumption checks the context a session was made in. */
    wolfSSL_CTX_set_session_id_context(server_ctx, sid_ctx, sizeof sid_ctx - 1);
    wolfSSL_CTX_set_session_cache_mode(server_ctx, WOLFSSL_SESS_CACHE_SERVER);
    return 0;
}

static int offer_h2(WOLFSSL *ssl)
{
    char protocols[] = "h2,http/1.1";     /* wolfSSL wants it writable */

    return wolfSSL_UseALPN(ssl, protocols, sizeof protocols - 1, WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) ==
                   WOLFSSL_SUCCESS ? 0 : -1;
}

int mock_tls_is_h2(WOLFSSL *ssl)
{
    char *name = NULL;
    unsigned short len = 0;

    return wolfSSL_ALPN_GetProtocol(ssl, &name, &len) == WOLFSSL_SUCCESS && len == 2 &&
           memcmp(name, "h2", 2) == 0;
}

WOLFSSL *mock_tls_accept(int fd, const mock_config *cfg)
{
    WOLFSSL *ssl = wolfSSL_new(server_ctx);
    char why[WOLFSSL_MAX_ERROR_SZ];
    int ret, err;

    if (!ssl || wolfSSL_set_fd(ssl, fd) != WOLFSSL_SUCCESS) {
        mock_log(cfg, "cannot create a TLS session");
        wolfSSL_free(ssl);
        atomic_fetch_add(&mock_state.tls_failures, 1);
        return NULL;
    }
    if ((ret = client_spoke(fd)) != 1) {
        if (ret < 0) {
            atomic_fetch_add(&mock_state.tls_failures, 1);
            mock_log(cfg, "TLS handshake failed: no ClientHello within %d s", HANDSHAKE_TIMEOUT_S);
        }
        wolfSSL_free(ssl);
        return NULL;
    }
    set_timeouts(fd, HANDSHAKE_TIMEOUT_S);
    if (cfg->h2 && offer_h2(ssl) != 0) {
        mock_log(cfg, "cannot offer ALPN h2");
        wolfSSL_free(ssl);
        atomic_fetch_add(&mock_state.tls_failures, 1);
        return NULL;
    }
    if ((ret = wolfSSL_accept(ssl)) != WOLFSSL_SUCCESS) {
        err = wolfSSL_get_error(ssl, ret);
        atomic_fetch_add(&mock_state.tls_failures, 1);
        mock_log(cfg, "TLS handshake failed: %s (%d)", error_text(err, why, sizeof why), err);
        wolfSSL_free(ssl);
        return NULL;
    }
    set_timeouts(fd, IO_TIMEOUT_S);
    atomic_fetch_add(&mock_state.tls_handshakes, 1);
    if (wolfSSL_session_reused(ssl))
        atomic_fetch_add(&mock_state.tls_resumed, 1);
    return ssl;
}

long mock_tls_read(WOLFSSL *ssl, void *buf, size_t n)
{
    int r = wolfSSL_read(ssl, buf, n > INT_MAX ? INT_MAX : (int)n), err;

    if (r > 0)
        return r;
    err = wolfSSL_get_error(ssl, r);
    return err == WOLFSSL_ERROR_ZERO_RETURN || err == SOCKET_PEER_CLOSED_E ? 0 : -1;
}

int mock_tls_pending(WOLFSSL *ssl)
{
    /* Decrypted bytes, or records already read off the socket: either way
     * polling the socket would wait for data that is already here. */
    return wolfSSL_has_pending(ssl);
}

int mock_tls_write(WOLFSSL *ssl, const void *p, size_t n)
{
    const char *s = p;

    while (n) {
        int r = wolfSSL_write(ssl, s, n > INT_MAX ? INT_MAX : (int)n);
        if (r <= 0)
            return -1;
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

static long nonblocking_result(WOLFSSL *ssl, int r)
{
    int err;

    if (r > 0)
        return r;
    err = wolfSSL_get_error(ssl, r);
    if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
        return MOCK_TLS_AGAIN;
    return err == WOLFSSL_ERROR_ZERO_RETURN || err == SOCKET_PEER_CLOSED_E ? 0 : -1;
}

long mock_tls_recv(WOLFSSL *ssl, void *buf, size_t n)
{
    return nonblocking_result(ssl, wolfSSL_read(ssl, buf, n > INT_MAX ? INT_MAX : (int)n));
}

long mock_tls_send(WOLFSSL *ssl, const void *p, size_t n)
{
    long r = nonblocking_result(ssl, wolfSSL_write(ssl, p, n > INT_MAX ? INT_MAX : (int)n));

    return r == 0 ? -1 : r;
}

void mock_tls_free(WOLFSSL *ssl, int notify)
{
    if (notify)
        wolfSSL_shutdown(ssl);
    wolfSSL_free(ssl);
}
