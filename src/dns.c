/* DNS: c-ares lookups bounded by the caller's deadline, shared between
 * concurrent callers, behind a small bounded cache of host:port ->
 * refcounted address list. */
#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "clock.h"
#include "coalesce.h"
#include "dns.h"
#include "error.h"
#include "log.h"
#include "sync.h"

#define NEG_TTL_NS (5 * (int64_t)1000000000)   /* NXDOMAIN, SERVFAIL: 5 s */
#define NBUCKETS 64
#define NO_CACHE (-1)

struct entry {
    struct entry *next;
    char *key;           /* "host:port" */
    sl_addrs *addrs;     /* NULL for a cached failure */
    int64_t expires;
    sluice_error fail;
};

struct sl_dns {
    pthread_mutex_t lock;
    int64_t ttl_ns;
    char *servers;           /* NULL: the system's configuration */
    sluice_coalescer *co;    /* one query per host:port at a time */
    uint64_t seed;           /* for sl_hash_bytes */
    size_t count;
    struct entry *buckets[NBUCKETS];
};

/* What one lookup hands to every caller that shared it. */
struct answer {
    sl_addrs *addrs;
    int deadline_passed;     /* the leader's own deadline ran out first */
    sluice_error err;
};

/* ---- c-ares set-up -------------------------------------------------------- */

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_rc;

/* ares_library_init is not thread-safe and does nothing on Linux but
 * count; once per process is what it asks for. */
static void library_init(void)
{
    library_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

static int ares_code(int rc)
{
    return rc == ARES_ENOMEM ? SLUICE_ENOMEM : SLUICE_ERESOLVE;
}

/* A fresh channel: c-ares channels are not thread-safe in 1.18, and a new
 * one per lookup also picks up an edited /etc/resolv.conf. */
static int channel_new(const sl_dns *d, ares_channel *ch, sluice_error *err)
{
    struct ares_options o;
    int rc;

    memset(&o, 0, sizeof o);
    o.flags = ARES_FLAG_NOSEARCH;   /* named servers get the names as given */
    rc = ares_init_options(ch, &o, d->servers ? ARES_OPT_FLAGS : 0);
    if (rc != ARES_SUCCESS)
        return sl_err(err, ares_code(rc), "DNS: cannot set up a resolver: %s", ares_strerror(rc));
    if (d->servers && (rc = ares_set_servers_ports_csv(*ch, d->servers)) != ARES_SUCCESS) {
        ares_destroy(*ch);
        return sl_err(err, rc == ARES_ENOMEM ? SLUICE_ENOMEM : SLUICE_EINVAL,
                      "dns_servers \"%s\": %s", d->servers, ares_strerror(rc));
    }
    return 0;
}

static int valid_port(const char *s)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9')
        return 0;
    v = strtol(s, &end, 10);
    return (*end == ',' || *end == '\0') && v >= 1 && v <= 65535;
}

/* c-ares takes an empty list, an empty item or port 99999 without a word;
 * those are typos here, refused before c-ares checks the addresses. */
static int servers_shape_ok(const char *s)
{
    const char *item = s, *colon;

    for (;;) {
        const char *end = strchr(item, ',');
        size_t len = end ? (size_t)(end - item) : strlen(item);
        const char *close = memchr(item, ']', len);

        if (len == 0)
            return 0;
        colon = close ? close + 1 : memchr(item, ':', len);
        if (colon && !close && memchr(colon + 1, ':', len - (size_t)(colon + 1 - item)))
            colon = NULL;   /* a bare IPv6 address: no port */
        if (colon && colon < item + len && (*colon != ':' || !valid_port(colon + 1)))
            return 0;
        if (!end)
            return 1;
        item = end + 1;
    }
}

static int check_servers(sl_dns *d, sluice_error *err)
{
    ares_channel ch;
    int rc;

    if (!servers_shape_ok(d->servers))
        return sl_err(err, SLUICE_EINVAL, "dns_servers \"%s\": expected \"ip[:port],[ipv6][:port]\"",
                      d->servers);
    if ((rc = channel_new(d, &ch, err)) != 0)
        return rc;
    ares_destroy(ch);
    return 0;
}

/* ---- the cache's life cycle -------------------------------------------- */

static void answer_free(void *v)
{
    struct answer *a = v;

    if (a) {
        sl_addrs_release(a->addrs);
        sl_free(a);
    }
}

/* Everything after the lock; sl_dns_free undoes any part of it. */
static int dns_init(sl_dns *d, int ttl_ms, const char *servers, sluice_error *err)
{
    d->ttl_ns = (int64_t)(ttl_ms > 0 ? ttl_ms : 60000) * 1000000;
    d->seed = sl_rand64();
    pthread_once(&library_once, library_init);
    if (library_rc != ARES_SUCCESS)
        return sl_err(err, ares_code(library_rc), "DNS: c-ares: %s", ares_strerror(library_rc));
    if (servers && !(d->servers = sl_strdup(servers)))
        return sl_err(err, SLUICE_ENOMEM, "out of memory copying dns_servers");
    if (servers) {
        int rc = check_servers(d, err);
        if (rc)
            return rc;
    }
    d->co = sl_coalescer_new(answer_free, 0, 0, err);   /* no window: nothing to bound */
    return d->co ? 0 : (err ? err->code : SLUICE_ENOMEM);
}

sl_dns *sl_dns_new(int ttl_ms, const char *servers, sluice_error *err)
{
    sl_dns *d = sl_calloc(1, sizeof *d);

    if (!d) {
        sl_err(err, SLUICE_ENOMEM, "out of memory creating the DNS cache");
        return NULL;
    }
    if (sl_mutex_init(&d->lock, "DNS cache", err) != 0) {
        sl_free(d);
        return NULL;
    }
    if (dns_init(d, ttl_ms, servers, err) != 0) {
        sl_dns_free(d);
        return NULL;
    }
    return d;
}

static void entry_free(struct entry *e)
{
    sl_addrs_release(e->addrs);
    sl_free(e->key);
    sl_free(e);
}

void sl_dns_free(sl_dns *d)
{
    size_t i;

    if (!d)
        return;
    for (i = 0; i < NBUCKETS; i++) {
        struct entry *e = d->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    }
    sluice_coalescer_free(d->co);
    sl_free(d->servers);
    pthread_mutex_destroy(&d->lock);
    sl_free(d);
}

void sl_addrs_release(sl_addrs *a)
{
    if (a && __atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0)
        sl_free(a);
}

static sl_addrs *addrs_retain(sl_addrs *a)
{
    if (a)
        __atomic_add_fetch(&a->refs, 1, __ATOMIC_RELAXED);
    return a;
}

/* A numeric host needs no lookup and no cache entry. */
static sl_addrs *numeric(const char *host, int port)
{
    struct in_addr v4;
    struct in6_addr v6;
    sl_addrs *a;

    if (inet_pton(AF_INET, host, &v4) == 1) {
        struct sockaddr_in *sin;
        if (!(a = sl_calloc(1, sizeof *a + sizeof a->a[0])))
            return NULL;
        sin = (struct sockaddr_in *)&a->a[0].sa;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        sin->sin_addr = v4;
        a->a[0].len = sizeof *sin;
    } else if (inet_pton(AF_INET6, host, &v6) == 1) {
        struct sockaddr_in6 *sin6;
        if (!(a = sl_calloc(1, sizeof *a + sizeof a->a[0])))
            return NULL;
        sin6 = (struct sockaddr_in6 *)&a->a[0].sa;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        sin6->sin6_addr = v6;
        a->a[0].len = sizeof *sin6;
    } else {
        return NULL;
    }
    a->n = 1;
    a->refs = 1;
    return a;
}

/* ---- one lookup -------------------------------------------------------- */

struct query {
    int done;
    int status;
    struct ares_addrinfo *res;
};

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct query *q = arg;

    q->done = 1;
    q->status = status;
    q->res = res;
}

/* ms until c-ares wants to retransmit, bounded by the deadline. */
static int wait_ms(ares_channel ch, int64_t deadline)
{
    struct timeval tv, *tvp = ares_timeout(ch, NULL, &tv);
    int left = sl_ms_left(deadline);
    int ms = tvp ? (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000) : 100;

    return left >= 0 && left < ms ? left : ms;
}

/* Polls the channel's sockets until the answer came: 0, SLUICE_ETIMEDOUT
 * at the deadline, or a poll failure's errno negated. */
static int drive(ares_channel ch, struct query *q, int64_t deadline)
{
    while (!q->done) {
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        /* Unsigned: ARES_GETSOCK_WRITABLE shifts an int 1 into the sign bit. */
        unsigned bits = (unsigned)ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
        int n = 0, i, ready;

        if (sl_now_ns() >= deadline)
            return SLUICE_ETIMEDOUT;
        for (i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            short ev = (short)((bits >> i & 1u ? POLLIN : 0) |
                               (bits >> (i + ARES_GETSOCK_MAXNUM) & 1u ? POLLOUT : 0));
            if (ev)
                pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
        }
        ready = poll(pfd, (nfds_t)n, wait_ms(ch, deadline));
        if (ready < 0 && errno != EINTR)
            return -errno;
        if (ready <= 0) {
            ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);   /* timeouts */
            continue;
        }
        for (i = 0; i < n && !q->done; i++)
            if (pfd[i].revents)
                ares_process_fd(ch, pfd[i].revents & (POLLIN | POLLERR | POLLHUP) ? pfd[i].fd
                                                                                 : ARES_SOCKET_BAD,
                                pfd[i].revents & POLLOUT ? pfd[i].fd : ARES_SOCKET_BAD);
    }
    return 0;
}

/* The address list and the smallest TTL (seconds) of an answer. */
static sl_addrs *to_addrs(const struct ares_addrinfo *res, int *min_ttl)
{
    const struct ares_addrinfo_node *node;
    size_t n = 0;
    sl_addrs *a;

    for (node = res->nodes; node; node = node->ai_next)
        n++;
    if (!(a = sl_calloc(1, sizeof *a + n * sizeof a->a[0])))
        return NULL;
    *min_ttl = -1;
    for (node = res->nodes, n = 0; node; node = node->ai_next) {
        if ((size_t)node->ai_addrlen > sizeof a->a[0].sa)
            continue;
        memcpy(&a->a[n].sa, node->ai_addr, node->ai_addrlen);
        a->a[n++].len = node->ai_addrlen;
        if (*min_ttl < 0 || node->ai_ttl < *min_ttl)
            *min_ttl = node->ai_ttl;
    }
    a->n = n;
    a->refs = 1;
    return a;
}

/* A failed lookup's code and message in *a; returns how long it may be
 * kept (NEG_TTL_NS for an answer about the name, else NO_CACHE). */
static int64_t failure(int status, const char *host, struct answer *a)
{
    const char *why = ares_strerror(status);
    int64_t keep = NO_CACHE;

    if (status == ARES_ENOTFOUND) {
        why = "no such name (NXDOMAIN)";
        keep = NEG_TTL_NS;
    } else if (status == ARES_ESERVFAIL || status == ARES_ECONNREFUSED) {
        /* c-ares 1.18 moves on from a server that answers SERVFAIL or
         * REFUSED (or is not listening), and reports ECONNREFUSED once
         * every one did: an answer about the servers, worth keeping. */
        why = "every DNS server failed (SERVFAIL, REFUSED or unreachable)";
        keep = NEG_TTL_NS;
    } else if (status == ARES_ENODATA) {
        why = "no address records";
        keep = NEG_TTL_NS;
    } else if (status == ARES_ETIMEOUT) {
        why = "no answer from the DNS servers";
    }
    sl_err(&a->err, ares_code(status), "cannot resolve %s: %s", host, why);
    return keep;
}

/* How long an answer is kept: its smallest TTL capped by the cache's life;
 * one from /etc/hosts (answered inside ares_getaddrinfo, with TTL 0) the
 * cache's life. */
static int64_t life_of(const sl_dns *d, int min_ttl, int from_hosts)
{
    if (from_hosts)
        return d->ttl_ns;
    if (min_ttl <= 0)
        return NO_CACHE;
    return sl_deadline_min((int64_t)min_ttl * 1000000000, d->ttl_ns);
}

static int64_t answer_of(const sl_dns *d, struct query *q, const char *host, int from_hosts,
                         struct answer *a)
{
    int min_ttl;

    if (q->status != ARES_SUCCESS)
        return failure(q->status, host, a);
    if (!(a->addrs = to_addrs(q->res, &min_ttl))) {
        sl_err(&a->err, SLUICE_ENOMEM, "out of memory resolving %s", host);
        return NO_CACHE;
    }
    if (a->addrs->n == 0) {
        sl_addrs_release(a->addrs);
        a->addrs = NULL;
        return failure(ARES_ENODATA, host, a);
    }
    return life_of(d, min_ttl, from_hosts);
}

/* Runs one query to the end or the deadline; returns how long its answer
 * (in *a, a->err.code its code) may be kept. */
static int64_t lookup(const sl_dns *d, const char *host, int port, int64_t deadline,
                      struct answer *a)
{
    struct ares_addrinfo_hints hints = {0, AF_UNSPEC, SOCK_STREAM, 0};
    struct query q = {0};
    ares_channel ch;
    char portstr[8], buf[128];
    int64_t keep = NO_CACHE;
    int rc, from_hosts;

    if (channel_new(d, &ch, &a->err) != 0)
        return NO_CACHE;
    snprintf(portstr, sizeof portstr, "%d", port);
    hints.ai_flags = ARES_AI_NUMERICSERV;
    ares_getaddrinfo(ch, host, portstr, &hints, on_answer, &q);
    from_hosts = q.done;
    rc = drive(ch, &q, deadline);
    if (rc == 0 && q.status != ARES_SUCCESS && strcasecmp(host, "localhost") == 0 &&
        (a->addrs = numeric("127.0.0.1", port))) {
        keep = d->ttl_ns;   /* RFC 6761: loopback, with or without /etc/hosts */
    } else if (rc == 0) {
        keep = answer_of(d, &q, host, from_hosts, a);
    } else if (rc == SLUICE_ETIMEDOUT) {
        a->deadline_passed = 1;
        sl_err(&a->err, rc, "resolving %s: the deadline passed", host);
    } else {
        sl_err(&a->err, SLUICE_ERESOLVE, "resolving %s: poll: %s", host,
               sl_errno_str(-rc, buf, sizeof buf));
    }
    ares_destroy(ch);        /* a query still pending ends here, answering on_answer */
    if (q.res)
        ares_freeaddrinfo(q.res);
    return keep;
}

/* ---- the table ----------------------------------------------------------- */

static struct entry **bucket_of(sl_dns *d, const char *key, size_t klen)
{
    return &d->buckets[sl_hash_bytes(d->seed, key, klen) % NBUCKETS];
}

/* Drops expired entries of one bucket; called with the lock held.  The
 * freed lists are only memory: no I/O happens here. */
static void prune(sl_dns *d, struct entry **head, int64_t now)
{
    struct entry **pp = head, *e;

    while ((e = *pp)) {
        if (e->expires <= now) {
            *pp = e->next;
            entry_free(e);
            d->count--;
        } else {
            pp = &e->next;
        }
    }
}

/* A full table drops what expired, then the entry closest to expiry: a
 * scan of at most SL_DNS_MAX_ENTRIES, only when an insert finds it full. */
static void make_room(sl_dns *d, int64_t now)
{
    struct entry **victim = NULL, **pp;
    size_t i;

    for (i = 0; i < NBUCKETS; i++)
        prune(d, &d->buckets[i], now);
    if (d->count < SL_DNS_MAX_ENTRIES)
        return;
    for (i = 0; i < NBUCKETS; i++)
        for (pp = &d->buckets[i]; *pp; pp = &(*pp)->next)
            if (!victim || (*pp)->expires < (*victim)->expires)
                victim = pp;
    if (victim) {
        struct entry *e = *victim;
        *victim = e->next;
        entry_free(e);
        d->count--;
    }
}

static struct entry *find(struct entry *head, const char *key)
{
    for (; head; head = head->next)
        if (strcmp(head->key, key) == 0)
            return head;
    return NULL;
}

/* 0 with a reference in *out, a cached failure's code, or 1 when absent. */
static int cached(sl_dns *d, const char *key, size_t klen, sl_addrs **out, sluice_error *err)
{
    struct entry **head = bucket_of(d, key, klen), *e;
    int rc = 1;

    pthread_mutex_lock(&d->lock);
    prune(d, head, sl_now_ns());
    if ((e = find(*head, key))) {
        if (e->addrs)
            *out = addrs_retain(e->addrs);
        else
            sl_err_copy(err, &e->fail);
        rc = e->addrs ? 0 : e->fail.code;
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static void store(sl_dns *d, const char *key, size_t klen, const struct answer *a, int64_t life)
{
    struct entry **head = bucket_of(d, key, klen), *e;
    int64_t now = sl_now_ns();

    e = sl_calloc(1, sizeof *e);
    if (!e || !(e->key = sl_strdup(key))) {
        sl_free(e);
        return;   /* not caching is always correct */
    }
    e->addrs = addrs_retain(a->addrs);
    if (!a->addrs)
        e->fail = a->err;
    e->expires = now + life;
    pthread_mutex_lock(&d->lock);
    prune(d, head, now);
    if (find(*head, key)) {
        pthread_mutex_unlock(&d->lock);
        entry_free(e);
        return;
    }
    if (d->count >= SL_DNS_MAX_ENTRIES)
        make_room(d, now);
    e->next = *head;
    *head = e;
    d->count++;
    pthread_mutex_unlock(&d->lock);
}

/* ---- resolving ------------------------------------------------------------ */

struct job {
    sl_dns *d;
    const char *host, *key;
    size_t klen;
    int port;
    int64_t deadline;
};

/* The leader's work: the cache once more (a flight that ended just before
 * this one began has stored its answer there), else a query. */
static int lead(void *arg, void **value)
{
    struct job *j = arg;
    struct answer *a = sl_calloc(1, sizeof *a);
    int64_t life;

    if (!a)
        return SLUICE_ENOMEM;
    *value = a;
    if (cached(j->d, j->key, j->klen, &a->addrs, &a->err) <= 0)
        return a->addrs ? 0 : a->err.code;
    life = lookup(j->d, j->host, j->port, j->deadline, a);
    SL_DEBUG("resolved %s: %s", j->key, a->addrs ? "ok" : a->err.msg);
    if (life != NO_CACHE)
        store(j->d, j->key, j->klen, a, life);
    return a->addrs ? 0 : a->err.code;
}

/* One shared lookup; *again is set when the leader's deadline ran out and
 * this caller's has not. */
static int shared_lookup(struct job *j, sl_addrs **out, sluice_error *err, int *again)
{
    sl_flight_opts o = {j->deadline, 0, NULL};
    sluice_flight_result fr;
    struct answer *a;
    int rc;

    sl_coalesce(j->d->co, j->key, j->klen, &o, lead, j, &fr);
    a = fr.value;
    rc = fr.code;
    *again = fr.shared && a && a->deadline_passed && sl_now_ns() < j->deadline;
    if (rc == 0)
        *out = addrs_retain(a->addrs);   /* a leader's 0 always comes with addresses */
    else if (a)
        sl_err_copy(err, &a->err);
    else if (rc == SLUICE_ETIMEDOUT)
        sl_err(err, rc, "resolving %s: the deadline passed", j->host);
    else
        sl_err(err, rc ? rc : SLUICE_ENOMEM, "resolving %s: out of memory", j->host);
    sluice_flight_result_release(&fr);
    return rc;
}

int sl_dns_resolve(sl_dns *d, const char *host, int port, int64_t deadline, sl_addrs **out,
                   sluice_error *err)
{
    char key[300];
    struct job j = {d, host, key, 0, port, deadline};
    int rc, again;
    int n;

    *out = numeric(host, port);
    if (*out)
        return 0;
    n = snprintf(key, sizeof key, "%s:%d", host, port);
    if (n < 0 || (size_t)n >= sizeof key)
        return sl_err(err, SLUICE_ERESOLVE, "cannot resolve %.64s...: host name too long", host);
    j.klen = (size_t)n;
    rc = cached(d, key, j.klen, out, err);
    if (rc <= 0)
        return rc;
    do
        rc = shared_lookup(&j, out, err, &again);
    while (again);
    return rc;
}
