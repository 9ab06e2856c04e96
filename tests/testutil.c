/* Shared test helpers. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

int64_t tu_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sluice_limiter *tu_limiter(const char *url, const char *prefix, sluice_fail_mode mode,
                           int timeout_ms, sluice_error *err)
{
    sluice_limiter_opts o;

    sluice_limiter_opts_init(&o);
    o.prefix = prefix;
    o.fail_mode = mode;
    o.redis_timeout_ms = timeout_ms;
    return sluice_limiter_new(url, &o, err);
}

const char *tu_fresh_prefix(char *buf, size_t cap, const char *tag)
{
    static _Atomic int n;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, cap, "%s%d-%lld-%d", tag, (int)getpid(),
             (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, atomic_fetch_add(&n, 1));
    return buf;
}

int tu_wait_until(int (*cond)(void *arg), void *arg, int max_ms)
{
    int64_t end = tu_now_ms() + max_ms;

    for (;;) {
        if (cond(arg))
            return 1;
        if (tu_now_ms() > end)
            return 0;
        usleep(1000);
    }
}

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);

    if (!v || !*v) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s is not set: run the suite through tests/run.sh (make check)", name);
        fprintf(stderr, "\n  %s\n", msg);
        CU_FAIL(msg);
        return NULL;
    }
    return v;
}

const char *tu_http_addr(void)
{
    return env_or_fail("SLUICE_TEST_HTTP");
}

const char *tu_http_base(void)
{
    static _Thread_local char base[96];
    const char *a = tu_http_addr();

    if (!a)
        return NULL;
    snprintf(base, sizeof base, "http://%s", a);
    return base;
}

const char *tu_redis_url(void)
{
    return env_or_fail("SLUICE_TEST_REDIS");
}

int tu_listen(int backlog, int *port)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

int tu_free_port(void)
{
    int port = -1, fd = tu_listen(1, &port);

    if (fd >= 0)
        close(fd);
    return port;
}

static int wait_listening(int port, int timeout_ms)
{
    char addr[64];
    int64_t end = tu_now_ms() + timeout_ms;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    while (tu_now_ms() < end) {
        int fd = tu_connect(addr);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        usleep(10000);
    }
    return -1;
}

static pid_t spawn(char *const argv[], const char *log_path)
{
    pid_t pid = fork();

    if (pid == 0) {
        int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int tu_mockapi_start(tu_server *s, const char *const *extra)
{
    return tu_mockapi_start_port(s, 0, extra);
}

/* Reads the port a server wrote to `path` (waiting up to timeout_ms while
 * `pid` lives); 0 if none came. */
static int read_port_file(const char *path, pid_t pid, int timeout_ms)
{
    int64_t end = tu_now_ms() + timeout_ms;
    int port = 0, status;

    while (tu_now_ms() < end && port <= 0) {
        FILE *fp = fopen(path, "r");
        if (fp) {
            if (fscanf(fp, "%d", &port) != 1)
                port = 0;
            fclose(fp);
        }
        if (port <= 0) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                return 0;
            usleep(5000);
        }
    }
    return port > 0 ? port : 0;
}

/* 1 while the child has not exited (it may have failed to bind). */
static int alive(pid_t pid)
{
    int status;

    return pid > 0 && waitpid(pid, &status, WNOHANG) == 0;
}

int tu_mockapi_start_port(tu_server *s, int port, const char *const *extra)
{
    const char *bin = env_or_fail("SLUICE_TEST_MOCKAPI");
    static _Atomic int seq;
    char *argv[40], portbuf[16], portfile[128];
    int n, attempt;

    memset(s, 0, sizeof *s);
    if (!bin)
        return -1;
    for (attempt = 0; attempt < 5; attempt++) {
        /* Without a wanted port the server picks one and writes it down:
         * guessing a free port races with every other socket on the box. */
        n = 0;
        argv[n++] = (char *)bin;
        if (port) {
            snprintf(portbuf, sizeof portbuf, "%d", port);
            argv[n++] = "--port";
            argv[n++] = portbuf;
        } else {
            snprintf(portfile, sizeof portfile, "/tmp/sluice-test-mock-%d-%d.port", (int)getpid(),
                     atomic_fetch_add(&seq, 1));
            unlink(portfile);
            argv[n++] = "--port-file";
            argv[n++] = portfile;
        }
        argv[n++] = "--exit-after";
        argv[n++] = "600";
        while (extra && *extra && n < 38)
            argv[n++] = (char *)*extra++;
        argv[n] = NULL;
        s->pid = spawn(argv, NULL);
        s->port = port;
        if (s->pid > 0 && !port) {
            s->port = read_port_file(portfile, s->pid, 5000);
            unlink(portfile);
        }
        if (s->pid > 0 && s->port > 0 && wait_listening(s->port, 3000) == 0 && alive(s->pid)) {
            snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
            snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
            return 0;
        }
        tu_server_stop(s);
        if (port)
            usleep(100000);
    }
    CU_FAIL("could not start a private sluice-mockapi");
    return -1;
}

int tu_redis_start(tu_server *s, int port)
{
    const char *bin = env_or_fail("SLUICE_TEST_REDIS_SERVER");
    char portbuf[16], dir[64];
    int attempt;

    memset(s, 0, sizeof *s);
    if (!bin)
        return -1;
    for (attempt = 0; attempt < 5; attempt++) {
        s->port = port ? port : tu_free_port();
        snprintf(portbuf, sizeof portbuf, "%d", s->port);
        snprintf(dir, sizeof dir, "/tmp/sluice-test-redis-%d", s->port);
        mkdir(dir, 0700);
        {
            char *argv[] = {(char *)bin, "--port", portbuf, "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", dir,
                            "--daemonize", "no", NULL};
            s->pid = spawn(argv, NULL);
        }
        if (s->pid > 0 && wait_listening(s->port, 5000) == 0 && alive(s->pid)) {
            snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
            snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
            return 0;
        }
        tu_server_stop(s);
        if (port)
            usleep(100000);
    }
    CU_FAIL("could not start a private redis-server");
    return -1;
}

void tu_server_stop(tu_server *s)
{
    int i, status;

    if (s->pid <= 0)
        return;
    kill(s->pid, SIGCONT);
    kill(s->pid, SIGTERM);
    for (i = 0; i < 200; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid)
            goto done;
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
done:
    s->pid = 0;
}

void tu_server_pause(tu_server *s, int paused)
{
    if (s->pid > 0)
        kill(s->pid, paused ? SIGSTOP : SIGCONT);
}

int tu_connect(const char *addr)
{
    struct sockaddr_in sa = {0};
    char host[64];
    const char *colon = strrchr(addr, ':');
    struct timeval tv = {2, 0};
    int fd;

    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int tu_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static ssize_t read_some(int fd, char *buf, size_t cap, int64_t end)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    int left = (int)(end - tu_now_ms());

    if (left <= 0 || poll(&pfd, 1, left) <= 0)
        return -2;
    return recv(fd, buf, cap, 0);
}

ssize_t tu_read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
    int64_t end = tu_now_ms() + timeout_ms;
    size_t len = 0;

    while (len + 1 < cap) {
        ssize_t n = read_some(fd, buf + len, cap - 1 - len, end);
        if (n == -2 || n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

ssize_t tu_read_response(int fd, char *buf, size_t cap, int timeout_ms)
{
    int64_t end = tu_now_ms() + timeout_ms;
    size_t len = 0;

    while (len + 1 < cap) {
        ssize_t n = read_some(fd, buf + len, cap - 1 - len, end);
        const char *eoh, *cl;
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        eoh = strstr(buf, "\r\n\r\n");
        if (!eoh)
            continue;
        cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl && cl < eoh) {
            size_t want = (size_t)(eoh + 4 - buf) + strtoul(cl + 17, NULL, 10);
            if (len >= want)
                break;
        } else if (!strcasestr(buf, "\r\ntransfer-encoding:")) {
            break;
        }
    }
    buf[len] = '\0';
    return len ? (ssize_t)len : -1;
}

ssize_t tu_roundtrip(const char *addr, const char *req, char *buf, size_t cap, int timeout_ms)
{
    int fd = tu_connect(addr);
    ssize_t n;

    if (fd < 0)
        return -1;
    if (tu_write_all(fd, req, strlen(req)) != 0) {
        close(fd);
        return -1;
    }
    n = tu_read_response(fd, buf, cap, timeout_ms);
    close(fd);
    return n;
}

int tu_status(const char *buf)
{
    int status;

    if (!buf || sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    return status;
}

const char *tu_body(const char *buf)
{
    const char *p = buf ? strstr(buf, "\r\n\r\n") : NULL;

    return p ? p + 4 : NULL;
}

int tu_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own descriptor */
}

/* --- failing allocator -------------------------------------------------- */

static _Atomic long alloc_count, alloc_live, alloc_fail_at;
static int alloc_sticky;

static int should_fail(void)
{
    long n = atomic_fetch_add(&alloc_count, 1) + 1;
    long at = atomic_load(&alloc_fail_at);

    return at > 0 && (n == at || (alloc_sticky && n > at));
}

static void *t_malloc(size_t n, void *ud)
{
    void *p;

    (void)ud;
    if (should_fail())
        return NULL;
    p = malloc(n);
    if (p)
        atomic_fetch_add(&alloc_live, 1);
    return p;
}

static void *t_realloc(void *p, size_t n, void *ud)
{
    void *q;

    (void)ud;
    if (should_fail())
        return NULL;
    q = realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&alloc_live, 1);
    return q;
}

static void t_free(void *p, void *ud)
{
    (void)ud;
    if (p) {
        atomic_fetch_sub(&alloc_live, 1);
        free(p);
    }
}

void tu_alloc_install(long fail_at, int sticky)
{
    sluice_allocator a = {t_malloc, t_realloc, t_free, NULL};

    atomic_store(&alloc_count, 0);
    atomic_store(&alloc_live, 0);
    atomic_store(&alloc_fail_at, fail_at);
    alloc_sticky = sticky;
    sluice_set_allocator(&a);
}

long tu_alloc_count(void)
{
    return atomic_load(&alloc_count);
}

long tu_alloc_outstanding(void)
{
    return atomic_load(&alloc_live);
}

void tu_alloc_uninstall(void)
{
    sluice_set_allocator(NULL);
}

sluice_client *tu_client(sluice_factory **f, const char *service, const char *base,
                         void (*tune)(sluice_client_opts *))
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    if (!base)
        return NULL;
    if (!*f && !(*f = sluice_factory_new(NULL, &err))) {
        fprintf(stderr, "\n  factory: %s\n", err.msg);
        return NULL;
    }
    sluice_client_opts_init(&co);
    co.base_url = base;
    co.read_timeout_ms = 3000;
    co.retry.max_retries = SLUICE_OFF;
    co.breaker.disabled = 1;
    if (tune)
        tune(&co);
    c = sluice_factory_client(*f, service, &co, &err);
    if (!c)
        fprintf(stderr, "\n  client %s: %s\n", service, err.msg);
    return c;
}

int tu_get_status(sluice_client *c, const char *path, sluice_error *err)
{
    sluice_response *r = NULL;
    int rc = sluice_get(c, path, &r, err);

    if (rc == 0) {
        rc = sluice_response_status(r);
        sluice_response_free(r);
    }
    return rc;
}

/* GETs path from the mock API at addr on a connection of its own: the
 * body, in buf, or NULL. */
static const char *mock_get(const char *addr, const char *path, char *buf, size_t cap)
{
    char req[512];

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    if (!addr || tu_roundtrip(addr, req, buf, cap, 3000) < 0 || tu_status(buf) != 200)
        return NULL;
    return tu_body(buf);
}

long tu_mock_stat(const char *addr, const char *field)
{
    char buf[8192], key[64];
    const char *body, *at;

    snprintf(key, sizeof key, "\"%s\":", field);
    if (!(body = mock_get(addr, "/stats", buf, sizeof buf)) || !(at = strstr(body, key)))
        return -1;
    return strtol(at + strlen(key), NULL, 10);
}

int tu_mock_idle(void *addr)
{
    return tu_mock_stat(addr, "connections_open") == 1;
}

long tu_hits(const char *addr, const char *path)
{
    char hits[512], buf[4096];
    const char *body;

    snprintf(hits, sizeof hits, "/hits%s", path);
    if (!(body = mock_get(addr, hits, buf, sizeof buf)))
        return -1;
    return strtol(body, NULL, 10);
}

/* ---- a DNS server of the tests' own ------------------------------------- */

#define TU_DNS_NAMES 32

struct tu_dns_name {
    char name[128];
    int known;              /* answered with addr in TU_DNS_ANSWER mode */
    struct in_addr addr;
    unsigned ttl;
    long a_queries;
};

struct tu_dns {
    int fd;
    char servers[32];
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t lock;   /* the fields below */
    tu_dns_mode mode;
    int delay_ms;
    long queries;
    struct tu_dns_name names[TU_DNS_NAMES];
};

/* The entry for name, made when absent (NULL when the table is full);
 * called with the lock held. */
static struct tu_dns_name *dns_name(tu_dns *d, const char *name)
{
    int i;

    for (i = 0; i < TU_DNS_NAMES && d->names[i].name[0]; i++)
        if (strcasecmp(d->names[i].name, name) == 0)
            return &d->names[i];
    if (i == TU_DNS_NAMES)
        return NULL;
    snprintf(d->names[i].name, sizeof d->names[i].name, "%s", name);
    return &d->names[i];
}

/* The dotted name of the question at q[12..]; its end offset, or -1. */
static int dns_qname(const unsigned char *q, int len, char *name, size_t cap)
{
    int off = 12;
    size_t n = 0;

    while (off < len && q[off]) {
        int l = q[off++];
        if (l > 63 || off + l > len || n + (size_t)l + 2 > cap)
            return -1;
        if (n)
            name[n++] = '.';
        memcpy(name + n, q + off, (size_t)l);
        n += (size_t)l;
        off += l;
    }
    name[n] = '\0';
    return off < len ? off + 1 : -1;
}

/* Builds the answer to query q in r; its length, or 0 for none. */
static int dns_answer(tu_dns *d, const unsigned char *q, int len, unsigned char *r)
{
    char name[256];
    int qend = dns_qname(q, len, name, sizeof name), rcode = 0, an = 0, type;
    struct tu_dns_name *e;
    tu_dns_mode mode;

    if (qend < 0 || qend + 4 > len || len > 512)
        return 0;
    type = q[qend] << 8 | q[qend + 1];
    memcpy(r, q, (size_t)qend + 4);
    pthread_mutex_lock(&d->lock);
    d->queries++;
    mode = d->mode;
    e = dns_name(d, name);
    if (e && type == 1)
        e->a_queries++;
    if (mode == TU_DNS_SERVFAIL)
        rcode = 2;
    else if (mode == TU_DNS_NXDOMAIN || !e || !e->known)
        rcode = 3;
    else if (type == 1) {
        unsigned char rr[16] = {0xc0, 0x0c, 0, 1, 0, 1, (unsigned char)(e->ttl >> 24),
                                (unsigned char)(e->ttl >> 16), (unsigned char)(e->ttl >> 8),
                                (unsigned char)e->ttl, 0, 4};
        memcpy(rr + 12, &e->addr, 4);
        memcpy(r + qend + 4, rr, sizeof rr);
        an = 1;
    }
    pthread_mutex_unlock(&d->lock);
    if (mode == TU_DNS_SILENT)
        return 0;
    r[2] = (unsigned char)(0x80 | (q[2] & 0x79));   /* QR, the opcode and RD */
    r[3] = (unsigned char)(0x80 | rcode);           /* RA */
    memset(r + 4, 0, 8);
    r[5] = 1;                                       /* one question */
    r[7] = (unsigned char)an;
    return qend + 4 + an * 16;
}

static void *dns_serve(void *arg)
{
    tu_dns *d = arg;
    unsigned char q[512], r[600];

    while (!atomic_load(&d->stop)) {
        struct pollfd p = {d->fd, POLLIN, 0};
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n;
        int rlen, delay;

        if (poll(&p, 1, 50) <= 0)
            continue;
        n = recvfrom(d->fd, q, sizeof q, 0, (struct sockaddr *)&from, &fromlen);
        if (n < 12)
            continue;
        rlen = dns_answer(d, q, (int)n, r);
        pthread_mutex_lock(&d->lock);
        delay = d->delay_ms;
        pthread_mutex_unlock(&d->lock);
        if (delay > 0)
            usleep((useconds_t)delay * 1000);
        if (rlen > 0)
            sendto(d->fd, r, (size_t)rlen, 0, (struct sockaddr *)&from, fromlen);
    }
    return NULL;
}

tu_dns *tu_dns_start(tu_dns_mode mode)
{
    struct sockaddr_in sin = {0};
    socklen_t len = sizeof sin;
    tu_dns *d = calloc(1, sizeof *d);

    if (!d) {
        CU_FAIL("test DNS server: out of memory");
        return NULL;
    }
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (d->fd < 0 || bind(d->fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        getsockname(d->fd, (struct sockaddr *)&sin, &len) != 0) {
        CU_FAIL("test DNS server: cannot bind a UDP socket on 127.0.0.1");
        if (d->fd >= 0)
            close(d->fd);
        free(d);
        return NULL;
    }
    snprintf(d->servers, sizeof d->servers, "127.0.0.1:%d", ntohs(sin.sin_port));
    d->mode = mode;
    pthread_mutex_init(&d->lock, NULL);
    if (pthread_create(&d->thread, NULL, dns_serve, d) != 0) {
        CU_FAIL("test DNS server: cannot start its thread");
        pthread_mutex_destroy(&d->lock);
        close(d->fd);
        free(d);
        return NULL;
    }
    return d;
}

void tu_dns_add(tu_dns *d, const char *name, const char *ipv4, unsigned ttl)
{
    struct tu_dns_name *e;

    pthread_mutex_lock(&d->lock);
    if ((e = dns_name(d, name)) && inet_pton(AF_INET, ipv4, &e->addr) == 1) {
        e->known = 1;
        e->ttl = ttl;
    }
    pthread_mutex_unlock(&d->lock);
    CU_ASSERT_PTR_NOT_NULL(e);
}

void tu_dns_set_mode(tu_dns *d, tu_dns_mode mode)
{
    pthread_mutex_lock(&d->lock);
    d->mode = mode;
    pthread_mutex_unlock(&d->lock);
}

void tu_dns_set_delay(tu_dns *d, int ms)
{
    pthread_mutex_lock(&d->lock);
    d->delay_ms = ms;
    pthread_mutex_unlock(&d->lock);
}

const char *tu_dns_servers(const tu_dns *d)
{
    return d->servers;
}

long tu_dns_queries(tu_dns *d, const char *name)
{
    struct tu_dns_name *e;
    long n;

    pthread_mutex_lock(&d->lock);
    if (!name)
        n = d->queries;
    else
        n = (e = dns_name(d, name)) ? e->a_queries : -1;
    pthread_mutex_unlock(&d->lock);
    return n;
}

void tu_dns_stop(tu_dns *d)
{
    if (!d)
        return;
    atomic_store(&d->stop, 1);
    pthread_join(d->thread, NULL);
    close(d->fd);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
