/* Requests through a real HTTP proxy (Debian's tinyproxy, started here on
 * loopback with a generated configuration) and over Unix domain sockets:
 * absolute form, CONNECT tunnels with the target's name verified, proxy
 * authentication, failures named, pooling by route, NO_PROXY, deadlines. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conn.h"
#include "http1.h"
#include "testutil.h"

#define USER "proxyuser"
#define PASS "s3cret-pw"

/* --- tinyproxy ----------------------------------------------------------- */

typedef struct tproxy {
    tu_server s;
    char conf[256];
    char log[256];
    char url[128];          /* http://127.0.0.1:PORT */
} tproxy;

static const char *tmpdir(void)
{
    const char *d = getenv("SLUICE_TEST_TMP");

    return d ? d : "/tmp";
}

/* Starts tinyproxy on 127.0.0.1: it listens there, connects out only from
 * there, serves only loopback clients, and allows CONNECT only to
 * `connect_port`.  `extra` adds configuration lines (BasicAuth). */
static int tproxy_start(tproxy *p, int connect_port, const char *extra)
{
    int attempt;

    memset(p, 0, sizeof *p);
    for (attempt = 0; attempt < 5; attempt++) {
        FILE *f;
        pid_t pid;

        p->s.port = tu_free_port();
        snprintf(p->conf, sizeof p->conf, "%s/tinyproxy-%d.conf", tmpdir(), p->s.port);
        snprintf(p->log, sizeof p->log, "%s/tinyproxy-%d.log", tmpdir(), p->s.port);
        unlink(p->log);
        if (!(f = fopen(p->conf, "w"))) {
            CU_FAIL("cannot write the tinyproxy configuration");
            return -1;
        }
        fprintf(f,
                "Port %d\nListen 127.0.0.1\nBind 127.0.0.1\nAllow 127.0.0.1\n"
                "Timeout 30\nMaxClients 64\nConnectPort %d\nLogFile \"%s\"\n"
                "LogLevel Info\n%s",
                p->s.port, connect_port, p->log, extra ? extra : "");
        fclose(f);
        pid = fork();
        if (pid == 0) {
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execlp("tinyproxy", "tinyproxy", "-d", "-c", p->conf, (char *)NULL);
            _exit(127);
        }
        p->s.pid = pid;
        snprintf(p->s.addr, sizeof p->s.addr, "127.0.0.1:%d", p->s.port);
        snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->s.port);
        if (pid > 0) {
            int64_t end = tu_now_ms() + 5000;
            while (tu_now_ms() < end) {
                int fd = tu_connect(p->s.addr), st;
                if (fd >= 0) {
                    close(fd);
                    return 0;
                }
                if (waitpid(pid, &st, WNOHANG) == pid) {
                    p->s.pid = 0;
                    break;
                }
                usleep(10000);
            }
        }
        tu_server_stop(&p->s);
    }
    CU_FAIL("could not start tinyproxy (tools/install-deps.sh installs it)");
    return -1;
}

static void tproxy_stop(tproxy *p)
{
    tu_server_stop(&p->s);
    unlink(p->conf);
    unlink(p->log);
}

/* How many lines of tinyproxy's log hold `needle`. */
static int tproxy_log_count(const tproxy *p, const char *needle)
{
    char line[2048];
    int n = 0;
    FILE *f = fopen(p->log, "r");

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

typedef struct log_probe {
    const tproxy *p;
    const char *needle;
    int want;
} log_probe;

static int log_has(void *arg)
{
    const log_probe *lp = arg;

    return tproxy_log_count(lp->p, lp->needle) >= lp->want;
}

/* --- helpers ------------------------------------------------------------- */

static const char *cert(const char *name, char *buf, size_t cap)
{
    const char *dir = getenv("SLUICE_TEST_CERTS");

    if (!dir) {
        CU_FAIL("SLUICE_TEST_CERTS is not set: run through tests/run.sh (make check)");
        return NULL;
    }
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

/* An HTTPS mock API with certificate `name` ("server" is for localhost and
 * 127.0.0.1, "wronghost" for wrong.example); `unix_path` adds a Unix
 * listener. */
static int start_https(tu_server *s, const char *name, const char *unix_path)
{
    char crt[320], key[320], n1[64], n2[64];
    const char *args[8];
    int n = 0;

    snprintf(n1, sizeof n1, "%s.pem", name);
    snprintf(n2, sizeof n2, "%s.key", name);
    if (!cert(n1, crt, sizeof crt) || !cert(n2, key, sizeof key))
        return -1;
    args[n++] = "--tls-cert";
    args[n++] = crt;
    args[n++] = "--tls-key";
    args[n++] = key;
    if (unix_path) {
        args[n++] = "--unix";
        args[n++] = unix_path;
    }
    args[n] = NULL;
    if (tu_mockapi_start(s, args))
        return -1;
    snprintf(s->url, sizeof s->url, "https://localhost:%d", s->port);
    return 0;
}

static sluice_factory *factory(const char *proxy_url)
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;
    char ca[320];

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.proxy_url = proxy_url;
    fo.ca_file = cert("ca.pem", ca, sizeof ca);
    fo.connect_timeout_ms = 5000;
    f = sluice_factory_new(&fo, &err);
    if (!f)
        fprintf(stderr, "\n  factory: %s\n", err.msg);
    return f;
}

static sluice_client *named_client(sluice_factory *f, const char *service, const char *base,
                                   const char *unix_path)
{
    sluice_client_opts o;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&o);
    o.base_url = base;
    o.unix_socket_path = unix_path;
    o.retry.max_retries = 0;
    o.timeout_ms = 10000;
    c = sluice_factory_client(f, service, &o, &err);
    if (!c)
        fprintf(stderr, "\n  client: %s\n", err.msg);
    return c;
}

static sluice_client *client(sluice_factory *f, const char *base, const char *unix_path)
{
    return named_client(f, "proxied", base, unix_path);
}

/* GET path: the status (body in `body` when given) or the error code. */
static int get(sluice_client *c, const char *path, char *body, size_t cap, sluice_error *err)
{
    sluice_response *r = NULL;
    int rc = sluice_get(c, path, &r, err);

    if (rc)
        return rc;
    rc = sluice_response_status(r);
    if (body) {
        size_t len;
        const char *b = sluice_response_body(r, &len);
        snprintf(body, cap, "%.*s", (int)len, b);
    }
    sluice_response_free(r);
    return rc;
}

static char logged[65536];
static size_t logged_len;

static void capture(sluice_log_level level, const char *msg, void *ud)
{
    size_t n = strlen(msg);

    (void)level;
    (void)ud;
    if (logged_len + n + 2 < sizeof logged) {
        memcpy(logged + logged_len, msg, n);
        logged_len += n;
        logged[logged_len++] = '\n';
        logged[logged_len] = '\0';
    }
}

/* --- tests --------------------------------------------------------------- */

static void test_proxy_http_absolute_form(void)
{
    tu_server mock;
    tproxy p;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;
    char body[4096], line[256];
    log_probe lp;
    int i;

    if (tu_mockapi_start(&mock, NULL))
        return;
    if (tproxy_start(&p, 1, NULL)) {
        tu_server_stop(&mock);
        return;
    }
    f = factory(p.url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(get(c, "/echo?n=1", body, sizeof body, &err), 200);
        /* tinyproxy adds its Via on the way through. */
        CU_ASSERT_PTR_NOT_NULL(strstr(body, "tinyproxy"));
        /* The origin server sees the Host of the target. */
        snprintf(line, sizeof line, "[\"Host\",\"127.0.0.1:%d\"]", mock.port);
        CU_ASSERT_PTR_NOT_NULL(strstr(body, line));
    }
    /* The request line tinyproxy received was in absolute form. */
    snprintf(line, sizeof line, "GET http://127.0.0.1:%d/echo?n=1 HTTP/1.1", mock.port);
    lp = (log_probe){&p, line, 3};
    CU_ASSERT_TRUE(tu_wait_until(log_has, &lp, 5000));
    CU_ASSERT_EQUAL(tu_hits(mock.addr, "/echo"), 3);
    sluice_factory_free(f);
    tproxy_stop(&p);
    tu_server_stop(&mock);
}

static void test_proxy_https_connect_tunnel_reused(void)
{
    tu_server mock;
    tproxy p;
    sluice_factory *f;
    sluice_client *c;
    struct sluice_factory_stats st;
    sluice_response *r = NULL;
    sluice_error err;
    char body[4096], line[128];
    int i;

    if (start_https(&mock, "server", NULL))
        return;
    if (tproxy_start(&p, mock.port, NULL)) {
        tu_server_stop(&mock);
        return;
    }
    f = factory(p.url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL_FATAL(sluice_get(c, "/echo", &r, &err), 0);
        CU_ASSERT_EQUAL(sluice_response_status(r), 200);
        CU_ASSERT_EQUAL(sluice_response_reused(r), i > 0);
        sluice_response_free(r);
    }
    CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
    /* Inside the tunnel the proxy sees nothing: no Via, the Host is the
     * target's. */
    CU_ASSERT_PTR_NULL(strstr(body, "tinyproxy"));
    snprintf(line, sizeof line, "[\"Host\",\"localhost:%d\"]", mock.port);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, line));
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 1);
    CU_ASSERT_EQUAL(st.pool.reused, 5);
    snprintf(line, sizeof line, "CONNECT localhost:%d HTTP/1.1", mock.port);
    CU_ASSERT_EQUAL(tproxy_log_count(&p, line), 1);
    sluice_factory_free(f);
    tproxy_stop(&p);
    tu_server_stop(&mock);
}

typedef struct worker {
    sluice_client *c;
    int id, ok;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    sluice_error err;
    char path[64];
    int i;

    /* Distinct paths: identical concurrent GETs would be coalesced. */
    for (i = 0; i < 25; i++) {
        snprintf(path, sizeof path, "/json?w=%d&i=%d", w->id, i);
        w->ok += get(w->c, path, NULL, 0, &err) == 200;
    }
    return NULL;
}

/* Threads share the factory's tunnels: at most one per thread is opened,
 * each with one CONNECT, and every call succeeds. */
static void test_proxy_threads_share_tunnels(void)
{
    tu_server mock;
    tproxy p;
    sluice_factory *f;
    sluice_client *c;
    struct sluice_factory_stats st;
    pthread_t tid[4];
    worker w[4];
    char line[128];
    int i, ok = 0;

    if (start_https(&mock, "server", NULL))
        return;
    if (tproxy_start(&p, mock.port, NULL)) {
        tu_server_stop(&mock);
        return;
    }
    f = factory(p.url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 4; i++) {
        w[i] = (worker){c, i, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&tid[i], NULL, worker_main, &w[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(tid[i], NULL);
        ok += w[i].ok;
    }
    CU_ASSERT_EQUAL(ok, 100);
    sluice_factory_stats(f, &st);
    CU_ASSERT_TRUE(st.pool.created >= 1 && st.pool.created <= 4);
    CU_ASSERT_EQUAL(st.pool.created + st.pool.reused, 100);
    snprintf(line, sizeof line, "CONNECT localhost:%d HTTP/1.1", mock.port);
    CU_ASSERT_EQUAL(tproxy_log_count(&p, line), (int)st.pool.created);
    sluice_factory_free(f);
    tproxy_stop(&p);
    tu_server_stop(&mock);
}

/* The certificate behind the tunnel is checked against the target's name,
 * not the proxy's: a server whose certificate names another host fails. */
static void test_proxy_https_target_name_verified(void)
{
    tu_server mock;
    tproxy p;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;

    if (start_https(&mock, "wronghost", NULL))
        return;
    if (tproxy_start(&p, mock.port, NULL)) {
        tu_server_stop(&mock);
        return;
    }
    f = factory(p.url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get(c, "/json", NULL, 0, &err), SLUICE_ETLS);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "localhost"));
    sluice_factory_free(f);
    tproxy_stop(&p);
    tu_server_stop(&mock);
}

static void test_proxy_basic_auth(void)
{
    tu_server mock, smock;
    tproxy p;
    sluice_factory *f, *anon;
    sluice_client *c, *sc;
    sluice_error err;
    char url[192], body[4096];
    struct sluice_factory_stats st;

    if (tu_mockapi_start(&mock, NULL))
        return;
    if (start_https(&smock, "server", NULL)) {
        tu_server_stop(&mock);
        return;
    }
    if (tproxy_start(&p, smock.port, "BasicAuth " USER " " PASS "\n")) {
        tu_server_stop(&mock);
        tu_server_stop(&smock);
        return;
    }
    snprintf(url, sizeof url, "http://" USER ":%s@127.0.0.1:%d", "s3cret%2Dpw", p.s.port);
    logged_len = 0;
    logged[0] = '\0';
    sluice_set_log(capture, SLUICE_LOG_DEBUG, NULL);
    f = factory(url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    sc = named_client(f, "secure", smock.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sc);
    CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
    /* The proxy took the credentials off: the origin never sees them. */
    CU_ASSERT_PTR_NULL(strstr(body, "Proxy-Authorization"));
    CU_ASSERT_EQUAL(get(sc, "/json", NULL, 0, &err), 200);
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 2);

    /* Without credentials: a plain request gets the proxy's 407 as its
     * response; a CONNECT answered 407 is an error carrying the status. */
    anon = factory(p.url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(anon);
    c = client(anon, mock.url, NULL);
    sc = named_client(anon, "secure", smock.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sc);
    CU_ASSERT_EQUAL(get(c, "/echo", NULL, 0, &err), 407);
    CU_ASSERT_EQUAL(get(sc, "/json", NULL, 0, &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.http_status, 407);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "407"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, p.url + 7));
    sluice_set_log(NULL, SLUICE_LOG_NONE, NULL);
    /* The debug log names the proxy by its origin; the password and its
     * Base64 form are nowhere in it. */
    CU_ASSERT_TRUE(logged_len > 0);
    snprintf(url, sizeof url, "via proxy %s", p.url);
    CU_ASSERT_PTR_NOT_NULL(strstr(logged, url));
    CU_ASSERT_PTR_NULL(strstr(logged, PASS));
    CU_ASSERT_PTR_NULL(strstr(logged, "s3cret"));
    CU_ASSERT_PTR_NULL(strstr(logged, "cHJveHl1c2VyOnMzY3JldC1wdw")); /* user:pass */
    CU_ASSERT_PTR_NULL(strstr(logged, USER));
    sluice_factory_free(anon);
    sluice_factory_free(f);
    tproxy_stop(&p);
    tu_server_stop(&smock);
    tu_server_stop(&mock);
}

static void test_proxy_refused_names_proxy(void)
{
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;
    char url[128];
    int port = tu_free_port();

    snprintf(url, sizeof url, "http://" USER ":" PASS "@127.0.0.1:%d", port);
    f = factory(url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, tu_http_base(), NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get(c, "/json", NULL, 0, &err), SLUICE_ECONNECT);
    snprintf(url, sizeof url, "proxy http://127.0.0.1:%d", port);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, url));
    CU_ASSERT_PTR_NULL(strstr(err.msg, PASS));
    CU_ASSERT_PTR_NULL(strstr(err.msg, USER));
    sluice_factory_free(f);
}

/* tinyproxy allows CONNECT only to the ports named by ConnectPort: a
 * tunnel to another port is answered 403. */
static void test_proxy_connect_refused_status(void)
{
    tu_server mock;
    tproxy p;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;

    if (start_https(&mock, "server", NULL))
        return;
    if (tproxy_start(&p, 1, NULL)) {
        tu_server_stop(&mock);
        return;
    }
    f = factory(p.url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get(c, "/json", NULL, 0, &err), SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(err.http_status, 403);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "CONNECT"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "403"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, p.url));
    CU_ASSERT_EQUAL(tproxy_log_count(&p, "Established connection"), 0);
    sluice_factory_free(f);
    tproxy_stop(&p);
    tu_server_stop(&mock);
}

/* A proxy that accepts the connection and never answers CONNECT holds the
 * call no longer than its deadline. */
static void test_proxy_connect_honours_deadline(void)
{
    sluice_factory *f;
    sluice_client *c;
    sluice_request req = {0};
    sluice_response *r = NULL;
    sluice_error err;
    char url[64];
    int port, lfd = tu_listen(16, &port);
    int64_t t0;

    CU_ASSERT_TRUE_FATAL(lfd >= 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    f = factory(url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, "https://localhost:9", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    req.path = "/json";
    req.timeout_ms = 300;
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_client_do(c, &req, &r, &err), SLUICE_ETIMEDOUT);
    CU_ASSERT_TRUE(tu_now_ms() - t0 < 300 + 500);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, url));
    sluice_factory_free(f);
    close(lfd);
}

/* Routes never share connections: the pool key holds the proxy or the
 * socket path, never credentials. */
static void test_proxy_pool_key_by_route(void)
{
    sl_conn_env e;
    sl_conn_target t;
    sl_url direct, secure, bypass;
    sluice_error err;
    char key[SL_CONN_KEY_MAX];
    const char *k;

    memset(&e, 0, sizeof e);
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&e.proxy, "http://u:pw@proxy.test:3128", &err), 0);
    CU_ASSERT_EQUAL_FATAL(sl_url_parse("http://api.test/x", &direct, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sl_url_parse("https://api.test/x", &secure, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sl_url_parse("http://127.0.0.1:8080/", &bypass, &err), 0);

    k = sl_conn_route(&e, &direct, NULL, 0, &t, key);
    CU_ASSERT_STRING_EQUAL(k, "http://api.test:80 via http://proxy.test:3128");
    CU_ASSERT_PTR_NOT_NULL(t.proxy);
    k = sl_conn_route(&e, &secure, NULL, 0, &t, key);
    CU_ASSERT_STRING_EQUAL(k, "https://api.test:443 via http://proxy.test:3128");
    k = sl_conn_route(&e, &direct, "/run/api.sock", 0, &t, key);
    CU_ASSERT_STRING_EQUAL(k, "http://api.test:80 unix:/run/api.sock");
    CU_ASSERT_PTR_NULL(t.proxy);
    CU_ASSERT_STRING_EQUAL(t.unix_path, "/run/api.sock");
    sl_proxy_conf_free(&e.proxy);

    /* No proxy: the key is the origin alone, as before. */
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&e.proxy, "", &err), 0);
    k = sl_conn_route(&e, &bypass, NULL, 0, &t, key);
    CU_ASSERT_STRING_EQUAL(k, "http://127.0.0.1:8080");
    CU_ASSERT_PTR_NULL(t.proxy);
    sl_proxy_conf_free(&e.proxy);
    sl_url_free(&direct);
    sl_url_free(&secure);
    sl_url_free(&bypass);
}

/* To a proxy, the request line carries the whole URL, and the proxy's
 * credentials go in Proxy-Authorization. */
static void test_proxy_request_absolute_form(void)
{
    sl_http_req r = {0};
    sl_buf b = SL_BUF_INIT;
    sluice_error err;

    r.method = "GET";
    r.target = "/a?b=1";
    r.host = "api.test:8080";
    r.absolute = "http://api.test:8080";
    r.proxy_auth = "Basic dTpw";
    CU_ASSERT_EQUAL_FATAL(sl_http1_write_head(&b, &r, &err), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "GET http://api.test:8080/a?b=1 HTTP/1.1\r\n"
                                   "Host: api.test:8080\r\n"
                                   "Proxy-Authorization: Basic dTpw\r\n\r\n");
    sl_buf_free(&b);
}

static char *save_env(const char *name)
{
    const char *v = getenv(name);

    return v ? strdup(v) : NULL;
}

static void restore_env(const char *name, char *v)
{
    if (v)
        setenv(name, v, 1);
    else
        unsetenv(name);
    free(v);
}

/* The environment is read at factory creation: http_proxy sends requests
 * through the proxy, unless NO_PROXY names the host. */
static void test_proxy_environment_and_no_proxy(void)
{
    static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                       "ALL_PROXY", "no_proxy", "NO_PROXY"};
    char *saved[7];
    tu_server mock;
    tproxy p;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;
    char body[4096];
    size_t i;

    if (tu_mockapi_start(&mock, NULL))
        return;
    if (tproxy_start(&p, 1, NULL)) {
        tu_server_stop(&mock);
        return;
    }
    for (i = 0; i < 7; i++) {
        saved[i] = save_env(vars[i]);
        unsetenv(vars[i]);
    }
    setenv("http_proxy", p.url, 1);
    f = factory(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "tinyproxy"));
    sluice_factory_free(f);

    /* NO_PROXY (upper case here) lists the mock's address: direct. */
    setenv("NO_PROXY", "example.test, 127.0.0.0/8", 1);
    f = factory(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
    CU_ASSERT_PTR_NULL(strstr(body, "tinyproxy"));
    sluice_factory_free(f);

    /* "" overrides the environment. */
    unsetenv("NO_PROXY");
    f = factory("");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
    CU_ASSERT_PTR_NULL(strstr(body, "tinyproxy"));
    sluice_factory_free(f);

    /* HTTP_PROXY in upper case is ignored (httpoxy), as curl does. */
    unsetenv("http_proxy");
    setenv("HTTP_PROXY", p.url, 1);
    f = factory(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, mock.url, NULL);
    CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
    CU_ASSERT_PTR_NULL(strstr(body, "tinyproxy"));
    sluice_factory_free(f);
    unsetenv("HTTP_PROXY");

    for (i = 0; i < 7; i++)
        restore_env(vars[i], saved[i]);
    CU_ASSERT_EQUAL(tproxy_log_count(&p, "Request (file descriptor"), 1);
    tproxy_stop(&p);
    tu_server_stop(&mock);
}

/* --- Unix domain sockets -------------------------------------------------- */

static void sock_path(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/tmp/sluice-test-%d-%s.sock", (int)getpid(), tag);
}

static void test_unix_socket_host_and_pooling(void)
{
    const char *args[] = {"--unix", NULL, NULL};
    tu_server mock;
    sluice_factory *f;
    sluice_client *c;
    struct sluice_factory_stats st;
    sluice_error err;
    char path[128], body[4096];
    int i;

    sock_path(path, sizeof path, "plain");
    args[1] = path;
    if (tu_mockapi_start(&mock, args))
        return;
    f = factory("");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, "http://api.sidecar.test:8080", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
        CU_ASSERT_PTR_NOT_NULL(strstr(body, "[\"Host\",\"api.sidecar.test:8080\"]"));
    }
    sluice_factory_stats(f, &st);
    CU_ASSERT_EQUAL(st.pool.created, 1);
    CU_ASSERT_EQUAL(st.pool.reused, 3);
    /* api.sidecar.test resolves nowhere: only the socket could carry them. */
    CU_ASSERT_EQUAL(tu_hits(mock.addr, "/echo"), 4);
    sluice_factory_free(f);
    tu_server_stop(&mock);
    unlink(path);
}

static void test_unix_socket_https_sni(void)
{
    tu_server mock;
    sluice_factory *f;
    sluice_client *c;
    sluice_error err;
    char path[128], body[4096];

    sock_path(path, sizeof path, "tls");
    if (start_https(&mock, "server", path))
        return;
    f = factory("");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    /* The certificate names localhost: verified against base_url's host. */
    c = client(f, "https://localhost", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get(c, "/echo", body, sizeof body, &err), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "[\"Host\",\"localhost\"]"));
    sluice_factory_free(f);
    tu_server_stop(&mock);
    unlink(path);
}

static void test_unix_socket_missing_names_path(void)
{
    sluice_factory *f;
    sluice_client *c;
    sluice_client_opts o;
    sluice_error err;
    char path[128], longpath[200];

    sock_path(path, sizeof path, "absent");
    unlink(path);
    f = factory("");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    c = client(f, "http://localhost", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(get(c, "/json", NULL, 0, &err), SLUICE_ECONNECT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, path));

    memset(longpath, 'x', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    sluice_client_opts_init(&o);
    o.base_url = "http://localhost";
    o.unix_socket_path = longpath;
    CU_ASSERT_PTR_NULL(sluice_factory_client(f, "too-long", &o, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "unix_socket_path"));
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_proxy_http_absolute_form", test_proxy_http_absolute_form},
    {"test_proxy_https_connect_tunnel_reused", test_proxy_https_connect_tunnel_reused},
    {"test_proxy_threads_share_tunnels", test_proxy_threads_share_tunnels},
    {"test_proxy_https_target_name_verified", test_proxy_https_target_name_verified},
    {"test_proxy_basic_auth", test_proxy_basic_auth},
    {"test_proxy_refused_names_proxy", test_proxy_refused_names_proxy},
    {"test_proxy_connect_refused_status", test_proxy_connect_refused_status},
    {"test_proxy_connect_honours_deadline", test_proxy_connect_honours_deadline},
    {"test_proxy_pool_key_by_route", test_proxy_pool_key_by_route},
    {"test_proxy_request_absolute_form", test_proxy_request_absolute_form},
    {"test_proxy_environment_and_no_proxy", test_proxy_environment_and_no_proxy},
    {"test_unix_socket_host_and_pooling", test_unix_socket_host_and_pooling},
    {"test_unix_socket_https_sni", test_unix_socket_https_sni},
    {"test_unix_socket_missing_names_path", test_unix_socket_missing_names_path},
    CU_TEST_INFO_NULL,
};

void suite_proxy_conn(void);
void suite_proxy_conn(void)
{
    tu_add_suite("proxy_conn", tests);
}
