/* TLS client connections through wolfSSL, with a per-origin session cache
 * so that later connections to an origin resume instead of doing a full
 * handshake.
 *
 * Locking: sl_tls_ctx.lock guards the session cache only.  It is held for
 * table look-ups and pointer swaps, never across I/O, a handshake or a
 * session copy.  A cached WOLFSSL_SESSION is a private copy nobody
 * modifies; a reader takes a reference under the lock and copies it after
 * for its connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "log.h"
#include "sock.h"
#include "sync.h"
#include "tls.h"

#define SESSION_SLOTS 256      /* origins remembered per context */
#define READ_AHEAD 4096        /* bytes read at once when wolfSSL asks for less */
#define ALPN_HTTP11 "http/1.1"
#define ALPN_H2_FIRST "h2,http/1.1"
/* A CA directory may hold other files (hash links, READMEs): skip them. */
#define DIR_LOAD_FLAGS (WOLFSSL_LOAD_FLAG_IGNORE_ERR | WOLFSSL_LOAD_FLAG_PEM_CA_ONLY)

typedef struct cached_session {
    char *origin;              /* NULL: free slot */
    WOLFSSL_SESSION *sess;     /* our own copy; referenced, never modified */
    uint64_t last_used;        /* for LRU eviction */
} cached_session;

struct sl_tls_ctx {
    WOLFSSL_CTX *ctx;
    int insecure;
    int has_client_cert;
    pthread_mutex_t lock;      /* guards cache[] and clock */
    cached_session cache[SESSION_SLOTS];
    uint64_t clock;
    _Atomic uint64_t full, resumed;
};

struct sl_tls {
    sl_tls_ctx *t;
    WOLFSSL *ssl;
    int fd;
    char *origin;              /* session cache key; NULL: no caching */
    char *peer;                /* "host:port" for messages */
    int io_errno;              /* last hard errno from recv/send */
    int io_eof;                /* the peer closed its side */
    int cert_requested;        /* the server asked for a client certificate */
    int broken;                /* no close_notify on free */
    int reading;               /* in sl_tls_read: io_recv may wait for bytes */
    int64_t read_deadline;     /* ... until then */
    int rcvtimeo_ms;           /* the socket's SO_RCVTIMEO (sl_sock_recv_wait) */
    size_t ra_off, ra_len;     /* ra[ra_off, ra_len): read, not yet given to wolfSSL */
    unsigned char ra[READ_AHEAD];
};


/* ---- process-wide initialisation ---------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;
static pthread_key_t thread_state;   /* set in threads that ran a handshake */

/* wolfSSL keeps per-thread state: an ECC point cache of about 3 MB (this
 * build has FP_ECC) and an error queue.  Both are lost when a thread ends
 * unless freed on that thread, so a thread that ran a handshake frees
 * them on its way out. */
static void free_thread_state(void *unused)
{
    (void)unused;
    wc_ecc_fp_free();
    wolfSSL_ERR_remove_thread_state(NULL);
}

/* wolfSSL_Cleanup is never called: other contexts may still live, and the
 * library's global state is small and process-long. */
static void init_wolfssl(void)
{
    init_rc = wolfSSL_Init();
    if (init_rc == WOLFSSL_SUCCESS && pthread_key_create(&thread_state, free_thread_state) != 0)
        init_rc = WOLFSSL_FAILURE;
}

static void note_thread_uses_wolfssl(void)
{
    if (!pthread_getspecific(thread_state))
        (void)pthread_setspecific(thread_state, &thread_state);
}

/* ---- I/O callbacks ------------------------------------------------------ */

/* Hands wolfSSL up to sz bytes of the read-ahead buffer. */
static int take_ahead(sl_tls *s, char *buf, int sz)
{
    size_t n = s->ra_len - s->ra_off;

    if (n > (size_t)sz)
        n = (size_t)sz;
    memcpy(buf, s->ra + s->ra_off, n);
    s->ra_off += n;
    return (int)n;
}

/* While sl_tls_read runs, a read waits inside recv() (bounded short of its
 * deadline, see sl_sock_recv_wait); otherwise it never waits. */
static ssize_t net_recv(sl_tls *s, void *buf, size_t cap)
{
    if (s->reading)
        return sl_sock_recv_wait(s->fd, &s->rcvtimeo_ms, buf, cap, s->read_deadline);
    return recv(s->fd, buf, cap, MSG_DONTWAIT);
}

/* Our own recv/send so that the socket error (reset, EOF) is known exactly,
 * send never raises SIGPIPE in the host program, and no call blocks past
 * its deadline even on a socket left in blocking mode.  wolfSSL asks for a
 * record's 5-byte header and then for its body: a small request is served
 * from one larger recv() into the read-ahead buffer, so a small response
 * takes one system call instead of two. */
static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    sl_tls *s = arg;
    ssize_t n;

    (void)ssl;
    if (s->ra_off < s->ra_len)
        return take_ahead(s, buf, sz);
    if ((size_t)sz < sizeof s->ra) {
        n = net_recv(s, s->ra, sizeof s->ra);
        if (n > 0) {
            s->ra_off = 0;
            s->ra_len = (size_t)n;
            return take_ahead(s, buf, sz);
        }
    } else {
        n = net_recv(s, buf, (size_t)sz);
    }
    if (n > 0)
        return (int)n;
    if (n == 0) {
        s->io_eof = 1;
        return WOLFSSL_CBIO_ERR_CONN_CLOSE;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return WOLFSSL_CBIO_ERR_WANT_READ;
    if (errno == EINTR)
        return WOLFSSL_CBIO_ERR_ISR;
    s->io_errno = errno;
    return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    sl_tls *s = arg;
    ssize_t n;

    (void)ssl;
    n = send(s->fd, buf, (size_t)sz, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return WOLFSSL_CBIO_ERR_WANT_WRITE;
    if (errno == EINTR)
        return WOLFSSL_CBIO_ERR_ISR;
    s->io_errno = errno;
    if (errno == EPIPE)
        return WOLFSSL_CBIO_ERR_CONN_CLOSE;
    return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
}

/* Waits until the socket is ready for what wolfSSL wants (`e`, WANT_READ
 * or WANT_WRITE); 1 when the deadline passed first.  A poll error counts
 * as ready: the next I/O call reports it. */
static int io_timed_out(const sl_tls *s, int e, int64_t deadline)
{
    return sl_sock_wait(s->fd, e == WOLFSSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) == 0;
}

/* ---- session cache ------------------------------------------------------ */

static cached_session *cache_find(sl_tls_ctx *t, const char *origin)
{
    size_t i;

    for (i = 0; i < SESSION_SLOTS; i++)
        if (t->cache[i].origin && strcmp(t->cache[i].origin, origin) == 0)
            return &t->cache[i];
    return NULL;
}

/* A free slot, or the least recently used one. */
static cached_session *cache_victim(sl_tls_ctx *t)
{
    cached_session *v = &t->cache[0];
    size_t i;

    for (i = 0; i < SESSION_SLOTS; i++) {
        if (!t->cache[i].origin)
            return &t->cache[i];
        if (t->cache[i].last_used < v->last_used)
            v = &t->cache[i];
    }
    return v;
}

static int session_expired(const WOLFSSL_SESSION *sess)
{
    return wolfSSL_SESSION_get_time(sess) + wolfSSL_SESSION_get_timeout(sess) <= (long)time(NULL);
}

/* A private copy of the session cached for origin, or NULL.  A copy,
 * because wolfSSL_set_session() adopts the object it is given and the
 * connection then updates it in place. */
static WOLFSSL_SESSION *cache_get_copy(sl_tls_ctx *t, const char *origin)
{
    WOLFSSL_SESSION *ref = NULL, *copy;
    cached_session *c;

    pthread_mutex_lock(&t->lock);
    c = cache_find(t, origin);
    if (c && !session_expired(c->sess) && wolfSSL_SESSION_up_ref(c->sess) == WOLFSSL_SUCCESS) {
        c->last_used = ++t->clock;
        ref = c->sess;
    }
    pthread_mutex_unlock(&t->lock);
    if (!ref)
        return NULL;
    copy = wolfSSL_SESSION_dup(ref);
    wolfSSL_SESSION_free(ref);
    return copy;
}

/* Takes ownership of sess (NULL removes the origin's entry).  What gets
 * replaced is freed after the lock is released. */
static void cache_put(sl_tls_ctx *t, const char *origin, WOLFSSL_SESSION *sess)
{
    char *key = sess ? sl_strdup(origin) : NULL;
    char *old_key = NULL;
    WOLFSSL_SESSION *old = NULL;
    cached_session *c;

    if (sess && !key) {         /* out of memory: simply do not cache */
        wolfSSL_SESSION_free(sess);
        return;
    }
    pthread_mutex_lock(&t->lock);
    c = cache_find(t, origin);
    if (!c && sess)
        c = cache_victim(t);
    if (c) {
        old_key = c->origin;
        old = c->sess;
        c->origin = key;
        c->sess = sess;
        c->last_used = ++t->clock;
        key = NULL;
    }
    pthread_mutex_unlock(&t->lock);
    sl_free(key);
    sl_free(old_key);
    if (old)
        wolfSSL_SESSION_free(old);
}

/* Called by wolfSSL whenever a connection gets a session worth keeping:
 * after a TLS 1.2 handshake, and for each TLS 1.3 NewSessionTicket, which
 * arrives after the handshake while reading.  The session belongs to the
 * connection and keeps changing, so the cache stores a copy. */
static int on_new_session(WOLFSSL *ssl, WOLFSSL_SESSION *sess)
{
    sl_tls *s = wolfSSL_get_app_data(ssl);
    WOLFSSL_SESSION *copy;

    if (!s || !s->origin || !wolfSSL_SESSION_is_resumable(sess))
        return 0;
    copy = wolfSSL_SESSION_dup(sess);
    if (copy)
        cache_put(s->t, s->origin, copy);
    return 0;   /* wolfSSL drops the reference it lent us */
}

/* Called by wolfSSL when the server asks for a client certificate and the
 * context has none: noted, so that a server hanging up next is explained. */
static int on_cert_request(WOLFSSL *ssl, WOLFSSL_X509 **x509, WOLFSSL_EVP_PKEY **pkey)
{
    sl_tls *s = wolfSSL_get_app_data(ssl);

    (void)x509;
    (void)pkey;
    if (s)
        s->cert_requested = 1;
    return 0;   /* no certificate: continue without one */
}

/* ---- context ------------------------------------------------------------ */

/* 0, or SLUICE_ETLS naming the file and why it cannot be read. */
static int file_readable(const char *path, sluice_error *err, const char *what)
{
    char ebuf[SL_ERRNO_BUF];

    if (access(path, R_OK) == 0)
        return 0;
    return sl_err(err, SLUICE_ETLS, "TLS %s %s cannot be read: %s", what, path,
                  sl_errno_str(errno, ebuf, sizeof ebuf));
}

static int load_trust(sl_tls_ctx *t, const sluice_factory_opts *o, sluice_error *err)
{
    const char *file = o->ca_file && *o->ca_file ? o->ca_file : NULL;
    const char *path = o->ca_path && *o->ca_path ? o->ca_path : NULL;

    if (o->tls_insecure_skip_verify == 1) {
        wolfSSL_CTX_set_verify(t->ctx, WOLFSSL_VERIFY_NONE, NULL);
        t->insecure = 1;
        /* Once per factory (its one TLS context), and even with logging
         * off: nobody should run this way without knowing. */
        sl_log_notice("TLS verification disabled (tls_insecure_skip_verify): "
                      "connections are insecure, any server certificate is accepted");
        return 0;
    }
    wolfSSL_CTX_set_verify(t->ctx, WOLFSSL_VERIFY_PEER, NULL);
    if (!file && !path) {
        if (wolfSSL_CTX_load_system_CA_certs(t->ctx) != WOLFSSL_SUCCESS)
            return sl_err(err, SLUICE_ETLS, "TLS: the system CA store could not be loaded");
        return 0;
    }
    if ((file && file_readable(file, err, "CA file") < 0) ||
        (path && file_readable(path, err, "CA directory") < 0))
        return SLUICE_ETLS;
    if (file && wolfSSL_CTX_load_verify_locations(t->ctx, file, NULL) != WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS CA file %s holds no usable PEM certificate", file);
    if (path && wolfSSL_CTX_load_verify_locations_ex(t->ctx, NULL, path, DIR_LOAD_FLAGS) !=
                    WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS CA directory %s holds no usable PEM certificate",
                      path);
    return 0;
}

static int load_client_cert(sl_tls_ctx *t, const sluice_factory_opts *o, sluice_error *err)
{
    const char *cert = o->client_cert_file && *o->client_cert_file ? o->client_cert_file : NULL;
    const char *key = o->client_key_file && *o->client_key_file ? o->client_key_file : NULL;

    if (!cert && !key)
        return 0;
    if (!cert || !key)
        return sl_err(err, SLUICE_ETLS, "TLS client %s given without client %s",
                      cert ? "certificate" : "key", cert ? "key" : "certificate");
    if (file_readable(cert, err, "client certificate") < 0 ||
        file_readable(key, err, "client key") < 0)
        return SLUICE_ETLS;
    if (wolfSSL_CTX_use_certificate_chain_file(t->ctx, cert) != WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS client certificate %s is not a PEM certificate",
                      cert);
    if (wolfSSL_CTX_use_PrivateKey_file(t->ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS client key %s is not a PEM private key", key);
    if (wolfSSL_CTX_check_private_key(t->ctx) != WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS client key %s does not match certificate %s", key,
                      cert);
    t->has_client_cert = 1;
    return 0;
}

/* Forward-secret suites only, AEAD first, and ChaCha20-Poly1305 before
 * AES-GCM: the wolfSSL packaged here has no AES-NI code, and in software
 * ChaCha20-Poly1305 costs a third of AES-GCM per record (a keep-alive GET
 * over TLS 1.3: 35,300 instructions with AES-128-GCM, 23,200 with
 * ChaCha20).  CBC suites stay at the end for older servers; RC4, 3DES,
 * NULL, anonymous and PSK suites are not offered. */
static const char cipher_list[] =
    "TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";

/* Key exchange: X25519 first (the TLS 1.3 key share), then the NIST
 * curves.  This wolfSSL does P-256 in generic big-number code: a resumed
 * handshake spent 6.3 million instructions in one P-256 shared secret and
 * 7.0 million in all; with X25519 it takes 2.3 million. */
static int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1};

static int configure_ctx(sl_tls_ctx *t, const sluice_factory_opts *o, sluice_error *err)
{
    int min = o->tls_min_version == 13 ? WOLFSSL_TLSV1_3 : WOLFSSL_TLSV1_2;
    int rc;

    if (o->tls_min_version != 0 && o->tls_min_version != 12 && o->tls_min_version != 13)
        return sl_err(err, SLUICE_EINVAL, "tls_min_version %d: use 12 or 13", o->tls_min_version);
    if (wolfSSL_CTX_SetMinVersion(t->ctx, min) != WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS: cannot set the minimum protocol version");
    if (wolfSSL_CTX_set_cipher_list(t->ctx, cipher_list) != WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS: cannot set the cipher suites");
    if (wolfSSL_CTX_set_groups(t->ctx, groups, (int)(sizeof groups / sizeof groups[0])) !=
        WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS: cannot set the key exchange groups");
    rc = load_trust(t, o, err);
    if (rc == 0)
        rc = load_client_cert(t, o, err);
    if (rc < 0)
        return rc;
    /* TLS 1.2 tickets need the extension offered; TLS 1.3 has them built in. */
    if (wolfSSL_CTX_UseSessionTicket(t->ctx) != WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS: cannot enable session tickets");
    /* Our cache replaces wolfSSL's process-wide one (shared by every
     * context, bounded by a build constant). */
    wolfSSL_CTX_set_session_cache_mode(t->ctx, WOLFSSL_SESS_CACHE_CLIENT |
                                       WOLFSSL_SESS_CACHE_NO_INTERNAL);
    wolfSSL_CTX_sess_set_new_cb(t->ctx, on_new_session);
    if (!t->has_client_cert)
        wolfSSL_CTX_set_client_cert_cb(t->ctx, on_cert_request);
    wolfSSL_CTX_SetIORecv(t->ctx, io_recv);
    wolfSSL_CTX_SetIOSend(t->ctx, io_send);
    return 0;
}

sl_tls_ctx *sl_tls_ctx_new(const sluice_factory_opts *o, sluice_error *err)
{
    static const sluice_factory_opts defaults;   /* zero: every TLS default */
    sl_tls_ctx *t;

    if (!o)
        o = &defaults;
    pthread_once(&init_once, init_wolfssl);
    if (init_rc != WOLFSSL_SUCCESS) {
        sl_err(err, SLUICE_ETLS, "wolfSSL could not be initialised (%d)", init_rc);
        return NULL;
    }
    t = sl_calloc(1, sizeof *t);
    if (!t) {
        sl_err(err, SLUICE_ENOMEM, "out of memory for the TLS context");
        return NULL;
    }
    if (sl_mutex_init(&t->lock, "TLS session cache", err)) {
        sl_free(t);
        return NULL;
    }
    t->ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
    if (!t->ctx) {
        sl_err(err, SLUICE_ENOMEM, "wolfSSL could not create a TLS context");
        sl_tls_ctx_free(t);
        return NULL;
    }
    if (configure_ctx(t, o, err) < 0) {
        sl_tls_ctx_free(t);
        return NULL;
    }
    return t;
}

void sl_tls_ctx_free(sl_tls_ctx *t)
{
    size_t i;

    if (!t)
        return;
    for (i = 0; i < SESSION_SLOTS; i++) {
        sl_free(t->cache[i].origin);
        if (t->cache[i].sess)
            wolfSSL_SESSION_free(t->cache[i].sess);
    }
    if (t->ctx)
        wolfSSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->lock);
    sl_free(t);
}

void sl_tls_ctx_counts(sl_tls_ctx *t, uint64_t *full, uint64_t *resumed)
{
    if (full)
        *full = t ? atomic_load(&t->full) : 0;
    if (resumed)
        *resumed = t ? atomic_load(&t->resumed) : 0;
}

/* ---- error translation -------------------------------------------------- */

/* Plain words for the wolfSSL error codes a client meets. */
static const struct {
    int code;
    const char *text;
} reasons[] = {
    {ASN_AFTER_DATE_E, "certificate has expired (ASN_AFTER_DATE_E)"},
    {ASN_BEFORE_DATE_E, "certificate is not yet valid (ASN_BEFORE_DATE_E)"},
    {ASN_NO_SIGNER_E, "certificate signed by an unknown CA (ASN_NO_SIGNER_E)"},
    {ASN_SELF_SIGNED_E, "self-signed certificate (ASN_SELF_SIGNED_E)"},
    {ASN_SIG_CONFIRM_E, "certificate signature does not verify (ASN_SIG_CONFIRM_E)"},
    {DOMAIN_NAME_MISMATCH, "certificate does not match the host name (DOMAIN_NAME_MISMATCH)"},
    {IPADDR_MISMATCH, "certificate does not match the IP address (IPADDR_MISMATCH)"},
    {VERSION_ERROR, "protocol version mismatch: the server offers none the client accepts "
                    "(VERSION_ERROR)"},
    {MATCH_SUITE_ERROR, "no cipher suite in common (MATCH_SUITE_ERROR)"},
    {NO_PEER_CERT, "server sent no certificate (NO_PEER_CERT)"},
};

static const char *known_reason(int code)
{
    size_t i;

    for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].code == code)
            return reasons[i].text;
    return NULL;
}

static const char *alert_name(int code)
{
    switch (code) {
    case 10: return "unexpected_message";
    case 20: return "bad_record_mac";
    case 40: return "handshake_failure";
    case 42: return "bad_certificate";
    case 43: return "unsupported_certificate";
    case 44: return "certificate_revoked";
    case 45: return "certificate_expired";
    case 46: return "certificate_unknown";
    case 47: return "illegal_parameter";
    case 48: return "unknown_ca";
    case 49: return "access_denied";
    case 50: return "decode_error";
    case 51: return "decrypt_error";
    case 70: return "protocol_version";
    case 71: return "insufficient_security";
    case 80: return "internal_error";
    case 86: return "inappropriate_fallback";
    case 109: return "missing_extension";
    case 110: return "unsupported_extension";
    case 112: return "unrecognized_name";
    case 116: return "certificate_required";
    case 120: return "no_application_protocol";
    default: return "alert";
    }
}

/* What a fatal alert from the server most likely means for us. */
static const char *alert_hint(const sl_tls *s, int code)
{
    if (code == 70)
        return ": no protocol version in common";
    if (code == 116)
        return ": the server requires a client certificate";
    if (code == 120)
        return ": the server does not speak HTTP/1.1 (ALPN)";
    if ((code == 40 || code == 42) && !s->t->has_client_cert)
        return ": the server may require a client certificate";
    return "";
}

/* The reason for a failed wolfSSL call whose result was `rc`. */
static void describe_failure(sl_tls *s, int rc, char *buf, size_t cap)
{
    /* wolfSSL_get_error() folds several causes into generic values; the
     * connection's own error keeps the precise negative code. */
    int detail = wolfSSL_state(s->ssl) ? wolfSSL_state(s->ssl) : wolfSSL_get_error(s->ssl, rc);
    const char *known = known_reason(detail);
    long vr = wolfSSL_get_verify_result(s->ssl);
    WOLFSSL_ALERT_HISTORY h;
    char wolf[WOLFSSL_MAX_ERROR_SZ];

    wolfSSL_ERR_clear_error();     /* the per-thread queue would only grow */
    if (detail == FATAL_ERROR && wolfSSL_get_alert_history(s->ssl, &h) == WOLFSSL_SUCCESS &&
        h.last_rx.code > 0) {
        snprintf(buf, cap, "server sent alert %s (%d)%s", alert_name(h.last_rx.code),
                 h.last_rx.code, alert_hint(s, h.last_rx.code));
    } else if (known) {
        snprintf(buf, cap, "%s", known);
    } else if (vr != 0 /* X509_V_OK */) {
        snprintf(buf, cap, "certificate verification failed: %s (%ld)",
                 wolfSSL_X509_verify_cert_error_string(vr), vr);
    } else {
        wolfSSL_ERR_error_string_n((unsigned long)detail, wolf, sizeof wolf);
        snprintf(buf, cap, "%s (wolfSSL %d)", wolf, detail);
    }
}

/* Translates a failed wolfSSL call; `what` is "handshake with", "read
 * from" or "write to". */
static int tls_fail(sl_tls *s, int rc, const char *what, sluice_error *err)
{
    char reason[200];
    char ebuf[SL_ERRNO_BUF];

    note_thread_uses_wolfssl();   /* the error queue is per thread */
    s->broken = 1;
    if (s->cert_requested && (s->io_eof || s->io_errno))
        return sl_err(err, SLUICE_ETLS, "TLS %s %s failed: the server asked for a client "
                      "certificate, none is configured, and it closed the connection",
                      what, s->peer);
    if (s->io_errno)
        return sl_err(err, SLUICE_EIO, "TLS %s %s failed: %s", what, s->peer,
                      sl_errno_str(s->io_errno, ebuf, sizeof ebuf));
    if (s->io_eof)
        return sl_err(err, SLUICE_EIO, "TLS %s %s failed: connection closed by the peer", what,
                      s->peer);
    describe_failure(s, rc, reason, sizeof reason);
    return sl_err(err, SLUICE_ETLS, "TLS %s %s failed: %s", what, s->peer, reason);
}

/* ---- connection --------------------------------------------------------- */

static int is_ip_literal(const char *host)
{
    unsigned char a[16];

    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* "host:port" out of "scheme://host:port", or the host itself. */
static char *peer_name(const char *host, const char *origin)
{
    const char *p = origin ? strstr(origin, "://") : NULL;

    return sl_strdup(p && p[3] ? p + 3 : host);
}

/* SNI and the name or address the certificate must match. */
static int set_peer_identity(sl_tls *s, const char *host, sluice_error *err)
{
    int ok;

    if (is_ip_literal(host)) {
        /* No SNI for addresses (RFC 6066); match an IP SAN instead. */
        ok = s->t->insecure ||
             wolfSSL_X509_VERIFY_PARAM_set1_ip_asc(wolfSSL_get0_param(s->ssl), host) ==
                 WOLFSSL_SUCCESS;
    } else {
        ok = wolfSSL_UseSNI(s->ssl, WOLFSSL_SNI_HOST_NAME, host, (unsigned short)strlen(host)) ==
                 WOLFSSL_SUCCESS &&
             (s->t->insecure || wolfSSL_check_domain_name(s->ssl, host) == WOLFSSL_SUCCESS);
    }
    if (!ok)
        return sl_err(err, SLUICE_ETLS, "TLS: cannot set the expected identity for %s", s->peer);
    return 0;
}

static int setup_ssl(sl_tls *s, const char *host, int offer_h2, sluice_error *err)
{
    char h11[] = ALPN_HTTP11, h2[] = ALPN_H2_FIRST;
    char *alpn = offer_h2 ? h2 : h11;
    WOLFSSL_SESSION *cached;

    s->ssl = wolfSSL_new(s->t->ctx);
    if (!s->ssl)
        return sl_err(err, SLUICE_ENOMEM, "out of memory for a TLS connection to %s", s->peer);
    wolfSSL_SetIOReadCtx(s->ssl, s);
    wolfSSL_SetIOWriteCtx(s->ssl, s);
    wolfSSL_set_app_data(s->ssl, s);
    if (set_peer_identity(s, host, err) < 0)
        return SLUICE_ETLS;
    if (wolfSSL_UseALPN(s->ssl, alpn, (unsigned)strlen(alpn), WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) !=
        WOLFSSL_SUCCESS)
        return sl_err(err, SLUICE_ETLS, "TLS: cannot offer ALPN to %s", s->peer);
    if (s->origin && (cached = cache_get_copy(s->t, s->origin)) != NULL) {
        /* A refused session only means a full handshake. */
        (void)wolfSSL_set_session(s->ssl, cached);
        wolfSSL_SESSION_free(cached);   /* the connection holds its own reference */
    }
    return 0;
}

static int handshake(sl_tls *s, int64_t deadline, sluice_error *err)
{
    for (;;) {
        int rc = wolfSSL_connect(s->ssl);
        int e;

        if (rc == WOLFSSL_SUCCESS)
            return 0;
        e = wolfSSL_get_error(s->ssl, rc);
        if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE)
            return tls_fail(s, rc, "handshake with", err);
        if (io_timed_out(s, e, deadline)) {
            s->broken = 1;
            return sl_err(err, SLUICE_ETIMEDOUT, "TLS handshake with %s timed out", s->peer);
        }
    }
}

/* One debug line per connection: version, resumption, cipher, ALPN. */
static void log_established(sl_tls *s)
{
    char *proto = NULL;
    unsigned short len = 0;
    int have = wolfSSL_ALPN_GetProtocol(s->ssl, &proto, &len) == WOLFSSL_SUCCESS && proto;

    SL_DEBUG("TLS %s with %s: %s, %s, ALPN %.*s", wolfSSL_get_version(s->ssl), s->peer,
             wolfSSL_session_reused(s->ssl) ? "resumed" : "full handshake",
             wolfSSL_get_cipher_name(s->ssl), have ? (int)len : 4, have ? proto : "none");
}

int sl_tls_connect(sl_tls_ctx *t, int fd, const char *host, const char *origin, int offer_h2,
                   int64_t deadline, sl_tls **out, int *resumed, sluice_error *err)
{
    sl_tls *s;
    int rc;

    if (out)
        *out = NULL;
    if (resumed)
        *resumed = 0;
    if (!t || fd < 0 || !host || !*host || !out)
        return sl_err(err, SLUICE_EINVAL, "sl_tls_connect: missing context, socket, host or out");
    if (strlen(host) > 255)     /* DNS names are shorter; SNI holds 16 bits */
        return sl_err(err, SLUICE_EINVAL, "TLS host name longer than 255 bytes");
    s = sl_calloc(1, sizeof *s);
    if (!s)
        return sl_err(err, SLUICE_ENOMEM, "out of memory for a TLS connection to %s", host);
    s->t = t;
    s->fd = fd;
    s->peer = peer_name(host, origin);
    s->origin = origin ? sl_strdup(origin) : NULL;
    if (!s->peer || (origin && !s->origin)) {
        sl_tls_free(s);
        return sl_err(err, SLUICE_ENOMEM, "out of memory for a TLS connection to %s", host);
    }
    rc = setup_ssl(s, host, offer_h2, err);
    note_thread_uses_wolfssl();
    if (rc == 0)
        rc = handshake(s, deadline, err);
    if (rc < 0) {
        if (s->origin && rc == SLUICE_ETLS)
            cache_put(t, s->origin, NULL);   /* do not offer that session again */
        sl_tls_free(s);
        return rc;
    }
    if (wolfSSL_session_reused(s->ssl))
        atomic_fetch_add(&t->resumed, 1);
    else
        atomic_fetch_add(&t->full, 1);
    if (resumed)
        *resumed = wolfSSL_session_reused(s->ssl) ? 1 : 0;
    if (sl_log_enabled(SLUICE_LOG_DEBUG))
        log_established(s);
    *out = s;
    return 0;
}

static ssize_t read_app_data(sl_tls *s, void *buf, int want, int64_t deadline,
                             sluice_error *err)
{
    for (;;) {
        int rc = wolfSSL_read(s->ssl, buf, want);
        int e;

        if (rc > 0)
            return rc;
        e = wolfSSL_get_error(s->ssl, rc);
        if (e == WOLFSSL_ERROR_ZERO_RETURN || (s->io_eof && !s->io_errno)) {
            s->broken = s->io_eof;   /* no one to send close_notify to */
            return 0;
        }
        if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE)
            return tls_fail(s, rc, "read from", err);
        if (io_timed_out(s, e, deadline))
            return sl_err(err, SLUICE_ETIMEDOUT, "TLS read from %s timed out", s->peer);
    }
}

ssize_t sl_tls_read(sl_tls *s, void *buf, size_t cap, int64_t deadline, sluice_error *err)
{
    ssize_t n;

    if (!s || (!buf && cap))
        return sl_err(err, SLUICE_EINVAL, "sl_tls_read: missing connection or buffer");
    if (cap == 0)
        return 0;
    s->reading = 1;
    s->read_deadline = deadline;
    n = read_app_data(s, buf, cap > INT_MAX ? INT_MAX : (int)cap, deadline, err);
    s->reading = 0;
    return n;
}

int sl_tls_write(sl_tls *s, const void *buf, size_t len, int64_t deadline, sluice_error *err)
{
    const char *p = buf;

    if (!s || (!buf && len))
        return sl_err(err, SLUICE_EINVAL, "sl_tls_write: missing connection or buffer");
    while (len > 0) {
        /* After WANT_*, wolfSSL requires the same arguments again. */
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int rc = wolfSSL_write(s->ssl, p, chunk);
        int e;

        if (rc > 0) {
            p += rc;
            len -= (size_t)rc;
            continue;
        }
        e = wolfSSL_get_error(s->ssl, rc);
        if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE)
            return tls_fail(s, rc, "write to", err);
        if (io_timed_out(s, e, deadline)) {
            s->broken = 1;   /* a record may be half sent */
            return sl_err(err, SLUICE_ETIMEDOUT, "TLS write to %s timed out", s->peer);
        }
    }
    return 0;
}

int sl_tls_alpn_h2(sl_tls *s)
{
    char *proto = NULL;
    unsigned short len = 0;

    return s && s->ssl && wolfSSL_ALPN_GetProtocol(s->ssl, &proto, &len) == WOLFSSL_SUCCESS &&
           proto && len == 2 && memcmp(proto, "h2", 2) == 0;
}

ssize_t sl_tls_read_now(sl_tls *s, void *buf, size_t cap, int *eof, sluice_error *err)
{
    int rc, e;

    *eof = 0;
    if (cap == 0)
        return 0;
    rc = wolfSSL_read(s->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
    if (rc > 0)
        return rc;
    e = wolfSSL_get_error(s->ssl, rc);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
        return 0;
    if (e == WOLFSSL_ERROR_ZERO_RETURN || (s->io_eof && !s->io_errno)) {
        s->broken = s->io_eof;
        *eof = 1;
        return 0;
    }
    return tls_fail(s, rc, "read from", err);
}

ssize_t sl_tls_write_now(sl_tls *s, const void *buf, size_t len, sluice_error *err)
{
    int rc = wolfSSL_write(s->ssl, buf, len > INT_MAX ? INT_MAX : (int)len), e;

    if (rc > 0)
        return rc;
    e = wolfSSL_get_error(s->ssl, rc);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
        return 0;
    s->broken = 1;
    return tls_fail(s, rc, "write to", err);
}

int sl_tls_pending(sl_tls *s)
{
    if (!s || !s->ssl)
        return 0;
    return wolfSSL_pending(s->ssl) + (int)(s->ra_len - s->ra_off);
}

void sl_tls_free(sl_tls *s)
{
    if (!s)
        return;
    if (s->ssl) {
        /* One non-blocking attempt: a full socket buffer just loses the
         * close_notify, which peers tolerate. */
        if (!s->broken && wolfSSL_is_init_finished(s->ssl))
            (void)wolfSSL_shutdown(s->ssl);
        wolfSSL_free(s->ssl);
    }
    sl_free(s->origin);
    sl_free(s->peer);
    sl_free(s);
}

void sl_tls_forget(sl_tls *s)
{
    if (!s)
        return;
    s->broken = 1;      /* so sl_tls_free sends no close_notify */
    sl_tls_free(s);
}
