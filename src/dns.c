/* DNS cache: a small hash table of host:port -> refcounted address list. */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "dns.h"
#include "error.h"
#include "log.h"

#define NEG_TTL_NS (5 * (int64_t)1000000000)   /* failures are kept 5 s */
#define NBUCKETS 64
#define MAX_ENTRIES 1024

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
    size_t count;
    struct entry *buckets[NBUCKETS];
};

sl_dns *sl_dns_new(int ttl_ms, sluice_error *err)
{
    sl_dns *d = sl_calloc(1, sizeof *d);

    if (!d) {
        sl_err(err, SLUICE_ENOMEM, "out of memory creating the DNS cache");
        return NULL;
    }
    pthread_mutex_init(&d->lock, NULL);
    d->ttl_ns = (int64_t)(ttl_ms > 0 ? ttl_ms : 60000) * 1000000;
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

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
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

static int lookup(const char *host, int port, sl_addrs **out, sluice_error *err)
{
    struct addrinfo hints = {0}, *res = NULL, *ai;
    char portstr[8];
    size_t n = 0;
    sl_addrs *a;
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    snprintf(portstr, sizeof portstr, "%d", port);
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0)
        return sl_err(err, SLUICE_ERESOLVE, "cannot resolve %s: %s", host,
                      rc == EAI_SYSTEM ? "system error" : gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next)
        n++;
    a = sl_calloc(1, sizeof *a + n * sizeof a->a[0]);
    if (!a) {
        freeaddrinfo(res);
        return sl_err(err, SLUICE_ENOMEM, "out of memory resolving %s", host);
    }
    for (ai = res, n = 0; ai; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof a->a[0].sa)
            continue;
        memcpy(&a->a[n].sa, ai->ai_addr, ai->ai_addrlen);
        a->a[n].len = ai->ai_addrlen;
        n++;
    }
    freeaddrinfo(res);
    a->n = n;
    a->refs = 1;
    if (n == 0) {
        sl_free(a);
        return sl_err(err, SLUICE_ERESOLVE, "cannot resolve %s: no usable address", host);
    }
    *out = a;
    return 0;
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

static struct entry *find(struct entry *head, const char *key)
{
    for (; head; head = head->next)
        if (strcmp(head->key, key) == 0)
            return head;
    return NULL;
}

/* 0 with a reference in *out, a cached failure's code, or 1 when absent. */
static int cached(struct entry **head, const char *key, sl_addrs **out, sluice_error *err)
{
    struct entry *e = find(*head, key);

    if (e) {
        if (e->addrs) {
            *out = addrs_retain(e->addrs);
            return 0;
        }
        sl_err_copy(err, &e->fail);
        return e->fail.code;
    }
    return 1;
}

static void store(sl_dns *d, struct entry **head, const char *key, sl_addrs *a,
                  const sluice_error *fail, int64_t now)
{
    struct entry *e;

    if (d->count >= MAX_ENTRIES)
        return;
    e = sl_calloc(1, sizeof *e);
    if (!e || !(e->key = sl_strdup(key))) {
        sl_free(e);
        return;   /* not caching is always correct */
    }
    e->addrs = addrs_retain(a);
    if (fail)
        e->fail = *fail;
    e->expires = now + (a ? d->ttl_ns : NEG_TTL_NS);
    e->next = *head;
    *head = e;
    d->count++;
}

int sl_dns_resolve(sl_dns *d, const char *host, int port, sl_addrs **out, sluice_error *err)
{
    char key[300];
    struct entry **head;
    sluice_error local;
    int64_t now;
    int rc;

    *out = numeric(host, port);
    if (*out)
        return 0;
    if ((size_t)snprintf(key, sizeof key, "%s:%d", host, port) >= sizeof key)
        return sl_err(err, SLUICE_ERESOLVE, "host name too long");
    head = &d->buckets[hash_str(key) % NBUCKETS];
    now = sl_now_ns();
    pthread_mutex_lock(&d->lock);
    prune(d, head, now);
    rc = cached(head, key, out, err);
    pthread_mutex_unlock(&d->lock);
    if (rc <= 0)
        return rc;

    sl_err_clear(&local);
    rc = lookup(host, port, out, &local);   /* no lock held */
    if (rc == SLUICE_ENOMEM)
        return sl_err(err, rc, "%s", local.msg);
    SL_DEBUG("resolved %s: %s", key, rc ? local.msg : "ok");
    pthread_mutex_lock(&d->lock);
    if (!find(*head, key))   /* another thread may have stored it meanwhile */
        store(d, head, key, rc ? NULL : *out, rc ? &local : NULL, now);
    pthread_mutex_unlock(&d->lock);
    if (rc)
        sl_err_copy(err, &local);
    return rc;
}
