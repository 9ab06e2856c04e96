/* The limiter on a Redis Cluster: the slot map, its refresher thread, one
 * Redis backend per primary, and the redirects a decision follows.  See
 * limiter_cluster.h for the contract. */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "limiter_cluster.h"
#include "redis_cluster.h"
#include "sync.h"

#define REFRESH_MIN_NS 200000000LL      /* at most one refresh per 200 ms */
#define MAP_MAX_AGE_NS 60000000000LL    /* a map older than this is fetched again */
#define NODE_DOWN_NS 100000000LL        /* a failed node is skipped this long */
#define TRYAGAIN_PAUSE_MS 5

typedef struct cnode {
    sl_cluster_addr addr;
    sl_redis *rd;
    _Atomic uint64_t fallbacks;     /* decisions its failures sent to the fail mode */
} cnode;

struct sl_cluster {
    sl_redis_url *seeds;
    size_t nseeds;
    sl_redis_cfg cfg;               /* each node's: cluster, lazy */
    int fetch_timeout_ms;           /* one CLUSTER SLOTS, connect included */

    pthread_mutex_t mu;             /* guards everything down to `thread` */
    pthread_cond_t cv;              /* wakes the refresher */
    uint16_t owner[SL_CLUSTER_SLOTS];
    cnode *nodes[SL_CLUSTER_MAX_NODES];
    unsigned char in_map[SL_CLUSTER_MAX_NODES];   /* owns a slot in the map */
    size_t nnodes;                  /* append-only: a node lives until free */
    int64_t map_at;                 /* when the map was fetched (0: never) */
    int64_t tried_at;               /* when the refresher last fetched */
    int want, stop;
    pthread_t thread;
    int thread_started;

    /* The refresher's own (sl_cluster_new's before it starts). */
    sl_slot_map *scratch;
    uint16_t next_owner[SL_CLUSTER_SLOTS];

    _Atomic uint64_t nodes_known, moved, ask, tryagain, refreshes, node_fallbacks;
};

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Nodes                                                                    */
/* ------------------------------------------------------------------------ */

/* A node's URL: its address with the seeds' credentials. */
static int node_url(const sl_cluster *cl, const sl_cluster_addr *a, sl_redis_url *u)
{
    const sl_redis_url *s = &cl->seeds[0];
    int v6 = strchr(a->host, ':') != NULL;
    char where[SL_CLUSTER_HOST_MAX + 16], display[SL_CLUSTER_HOST_MAX + 32];

    memset(u, 0, sizeof *u);
    snprintf(where, sizeof where, "%s%s%s:%d", v6 ? "[" : "", a->host, v6 ? "]" : "", a->port);
    snprintf(display, sizeof display, "redis://%s%s", s->password ? "***@" : "", where);
    u->port = a->port;
    u->host = sl_strdup(a->host);
    u->where = sl_strdup(where);
    u->display = sl_strdup(display);
    u->user = sl_strdup(s->user);
    u->password = sl_strdup(s->password);
    if (!u->host || !u->where || !u->display || (s->user && !u->user) ||
        (s->password && !u->password)) {
        sl_redis_url_free(u);
        return SLUICE_ENOMEM;
    }
    return 0;
}

/* Lock held. */
static int find_node(const sl_cluster *cl, const sl_cluster_addr *a)
{
    size_t i;

    for (i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i]->addr.port == a->port && strcmp(cl->nodes[i]->addr.host, a->host) == 0)
            return (int)i;
    return -1;
}

/* The index of the node at `a`, made (without I/O: it connects on its
 * first decision) when it is new.  -1: out of memory or the table full. */
static int node_index(sl_cluster *cl, const sl_cluster_addr *a)
{
    sl_redis_url u;
    sluice_error e;
    cnode *nd;
    int i, reachable;

    pthread_mutex_lock(&cl->mu);
    i = find_node(cl, a);
    pthread_mutex_unlock(&cl->mu);
    if (i >= 0)
        return i;
    if (!(nd = sl_calloc(1, sizeof *nd)))
        return -1;
    nd->addr = *a;
    if (node_url(cl, a, &u) || !(nd->rd = sl_redis_new(&u, NULL, &cl->cfg, &reachable, &e))) {
        sl_free(nd);
        return -1;
    }
    pthread_mutex_lock(&cl->mu);
    if ((i = find_node(cl, a)) < 0 && cl->nnodes < SL_CLUSTER_MAX_NODES) {
        i = (int)cl->nnodes;
        cl->nodes[cl->nnodes++] = nd;
        nd = NULL;
    }
    pthread_mutex_unlock(&cl->mu);
    if (nd) {   /* another thread made it meanwhile */
        sl_redis_free(nd->rd);
        sl_free(nd);
    }
    return i;
}

/* The primary of `slot`, or NULL when the map names none. */
static cnode *owner_of(sl_cluster *cl, unsigned slot)
{
    cnode *nd = NULL;

    pthread_mutex_lock(&cl->mu);
    if (cl->owner[slot] < cl->nnodes)
        nd = cl->nodes[cl->owner[slot]];
    pthread_mutex_unlock(&cl->mu);
    return nd;
}

static cnode *node_at(sl_cluster *cl, int i)
{
    cnode *nd;

    pthread_mutex_lock(&cl->mu);
    nd = cl->nodes[i];
    pthread_mutex_unlock(&cl->mu);
    return nd;
}

/* ------------------------------------------------------------------------ */
/* The slot map                                                             */
/* ------------------------------------------------------------------------ */

static void request_refresh(sl_cluster *cl)
{
    pthread_mutex_lock(&cl->mu);
    if (!cl->want) {
        cl->want = 1;
        pthread_cond_signal(&cl->cv);
    }
    pthread_mutex_unlock(&cl->mu);
}

/* CLUSTER SLOTS from the node at u into *map.  *disabled: the node is not
 * a cluster node; *refused: it refused the credentials. */
static int fetch_map(sl_cluster *cl, const sl_redis_url *u, sl_slot_map *map, int *refused,
                     int *disabled, sluice_error *err)
{
    static const char *const argv[] = {"CLUSTER", "SLOTS"};
    static const size_t lens[] = {7, 5};
    redisContext *c = NULL;
    redisReply *r;
    char text[160];
    int rc;

    *refused = *disabled = 0;
    rc = sl_redis_open(u, sl_deadline_in_ms(cl->fetch_timeout_ms), &c, refused, err);
    if (rc)
        return rc;
    r = sl_redis_command(c, 2, (const char **)argv, lens);
    if (!r) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: CLUSTER SLOTS failed: %s", u->where,
                    c->errstr);
    } else if (r->type == REDIS_REPLY_ERROR) {
        sl_redis_reply_text(r, text, sizeof text);
        *disabled = strstr(text, "cluster support disabled") != NULL;
        rc = sl_err(err, *disabled ? SLUICE_EINVAL : SLUICE_ELIMITER,
                    "redis %s: %s: CLUSTER SLOTS answered %s", u->where,
                    *disabled ? "not a cluster node (use a redis:// URL)" : "no slot map", text);
    } else if ((rc = sl_cluster_parse_slots(r, u->host, map, err)) == 0 && map->nnodes == 0) {
        rc = sl_err(err, SLUICE_ELIMITER, "redis %s: the cluster serves no slot", u->where);
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* Makes the nodes *map names and copies its slots in. */
static int apply_map(sl_cluster *cl, const sl_slot_map *map, sluice_error *err)
{
    int idx[SL_CLUSTER_MAX_NODES];
    size_t i;

    for (i = 0; i < map->nnodes; i++)
        if ((idx[i] = node_index(cl, &map->nodes[i])) < 0)
            return sl_err(err, SLUICE_ENOMEM, "redis cluster: out of memory for node %s:%d",
                          map->nodes[i].host, map->nodes[i].port);
    for (i = 0; i < SL_CLUSTER_SLOTS; i++)
        cl->next_owner[i] = map->owner[i] < map->nnodes ? (uint16_t)idx[map->owner[i]]
                                                         : SL_CLUSTER_NO_NODE;
    pthread_mutex_lock(&cl->mu);
    memcpy(cl->owner, cl->next_owner, sizeof cl->owner);
    memset(cl->in_map, 0, sizeof cl->in_map);
    for (i = 0; i < map->nnodes; i++)
        cl->in_map[idx[i]] = 1;
    cl->map_at = sl_now_ns();
    pthread_mutex_unlock(&cl->mu);
    atomic_store_explicit(&cl->nodes_known, map->nnodes, memory_order_relaxed);
    count(&cl->refreshes);
    return 0;
}

/* Lock held.  Up to `cap` known nodes into out: the primaries of the
 * current map first, then nodes it names no more (a node that left it,
 * dead or silent, would cost every refresh a fetch timeout before a live
 * primary is asked). */
static size_t known_nodes(const sl_cluster *cl, sl_cluster_addr *out, size_t cap)
{
    size_t n = 0, i;
    int pass;

    for (pass = 1; pass >= 0; pass--)
        for (i = 0; i < cl->nnodes && n < cap; i++)
            if (cl->in_map[i] == pass)
                out[n++] = cl->nodes[i]->addr;
    return n;
}

/* Asks the known nodes (known_nodes), then the seeds, until one gives a
 * map.  A node that is not a cluster node or refuses the credentials ends
 * the search (*fatal set): the settings are wrong. */
static int refresh(sl_cluster *cl, int *fatal, sluice_error *err)
{
    sl_cluster_addr known[8];
    size_t nknown, i;
    sl_redis_url u;
    int rc = SLUICE_ELIMITER, refused, disabled, stop = 0;

    *fatal = 0;
    sl_err(err, SLUICE_ELIMITER, "redis cluster %s: no node reachable", cl->seeds[0].where);
    pthread_mutex_lock(&cl->mu);
    nknown = known_nodes(cl, known, sizeof known / sizeof known[0]);
    pthread_mutex_unlock(&cl->mu);
    for (i = 0; i < nknown + cl->nseeds && !stop; i++) {
        if (i < nknown && node_url(cl, &known[i], &u))
            return sl_err(err, SLUICE_ENOMEM, "redis cluster: out of memory");
        rc = fetch_map(cl, i < nknown ? &u : &cl->seeds[i - nknown], cl->scratch, &refused,
                       &disabled, err);
        if (i < nknown)
            sl_redis_url_free(&u);
        if (rc == 0)
            return apply_map(cl, cl->scratch, err);
        if (refused || disabled) {
            *fatal = 1;
            return rc;
        }
        pthread_mutex_lock(&cl->mu);
        stop = cl->stop;
        pthread_mutex_unlock(&cl->mu);
    }
    return rc;
}

/* The refresher: fetches the map when asked (at most every 200 ms) and
 * when it is older than 60 s. */
static void *refresher_main(void *arg)
{
    sl_cluster *cl = arg;
    sluice_error e;
    int fatal;

    pthread_mutex_lock(&cl->mu);
    while (!cl->stop) {
        int64_t now = sl_now_ns();
        int64_t due = cl->want ? cl->tried_at + REFRESH_MIN_NS : cl->map_at + MAP_MAX_AGE_NS;

        if (now < due) {
            struct timespec ts = sl_deadline_timespec(due);

            pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
            continue;
        }
        cl->want = 0;
        cl->tried_at = now;
        pthread_mutex_unlock(&cl->mu);
        refresh(cl, &fatal, &e);
        pthread_mutex_lock(&cl->mu);
    }
    pthread_mutex_unlock(&cl->mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Decisions                                                                */
/* ------------------------------------------------------------------------ */

/* nd: the node that failed, or NULL when the map names none. */
static int node_failed(sl_cluster *cl, cnode *nd, const sluice_error *why, sluice_error *err)
{
    count(&cl->node_fallbacks);
    if (nd)
        count(&nd->fallbacks);
    request_refresh(cl);
    if (err && why != err)
        sl_err_copy(err, why);
    return SLUICE_ELIMITER;
}

/* Where a redirect answer (err->msg, from node nd) sends the decision:
 * sets *target (a node index, or -1 for the map's owner) and rt's flags.
 * SLUICE_ELIMITER for CLUSTERDOWN and anything not understood. */
static int follow(sl_cluster *cl, cnode *nd, sl_redis_route *rt, int *target,
                  sluice_error *err)
{
    sl_redirect_kind kind;
    sl_cluster_addr to;
    unsigned slot;
    sluice_error pe;
    char text[200];
    int i;

    if (sl_cluster_parse_redirect(err->msg, strlen(err->msg), &kind, &slot, &to, &pe))
        return sl_err(err, SLUICE_ELIMITER, "redis %s: %s", sl_redis_where(nd->rd), pe.msg);
    if (kind == SL_REDIRECT_NONE) {
        if (strncmp(err->msg, "TRYAGAIN", 8) == 0) {
            count(&cl->tryagain);
            sl_sleep_until(sl_deadline_min(sl_deadline_in_ms(TRYAGAIN_PAUSE_MS), rt->deadline));
            rt->single = 1;
            rt->asking = 0;
            *target = -1;
            return 0;
        }
        /* CLUSTERDOWN: the slot has no working primary right now. */
        memcpy(text, err->msg, sizeof text);
        text[sizeof text - 1] = '\0';
        sl_err(err, SLUICE_ELIMITER, "redis %s: %s", sl_redis_where(nd->rd), text);
        return node_failed(cl, nd, err, err);
    }
    if (!to.host[0])   /* Redis 7's ":port": the node that answered */
        memcpy(to.host, nd->addr.host, sizeof to.host);
    if ((i = node_index(cl, &to)) < 0)
        return sl_err(err, SLUICE_ENOMEM, "redis cluster: out of memory for node %s:%d",
                      to.host, to.port);
    *target = i;
    rt->asking = kind == SL_REDIRECT_ASK;
    if (kind == SL_REDIRECT_MOVED) {
        count(&cl->moved);
        pthread_mutex_lock(&cl->mu);
        cl->owner[slot % SL_CLUSTER_SLOTS] = (uint16_t)i;
        cl->in_map[i] = 1;
        pthread_mutex_unlock(&cl->mu);
        request_refresh(cl);
    } else {
        count(&cl->ask);
    }
    return 0;
}

int sl_cluster_decide(sl_cluster *cl, const sl_lim_req *rq, sluice_limit_result *r,
                      sluice_error *err)
{
    sl_redis_route rt = {sl_cluster_keyslot(rq->key, rq->key_len), 0, 0,
                         sl_deadline_in_ms(cl->cfg.timeout_ms)};
    int target = -1, redirects, rc;
    sluice_error e;

    for (redirects = 0;; redirects++) {
        cnode *nd = target >= 0 ? node_at(cl, target) : owner_of(cl, rt.slot);
        int64_t failed;

        if (!nd) {
            sl_err(&e, SLUICE_ELIMITER, "redis cluster %s: no primary known for slot %u",
                   cl->seeds[0].where, rt.slot);
            return node_failed(cl, NULL, &e, err);
        }
        failed = sl_redis_failed_at(nd->rd);
        if (failed && sl_now_ns() - failed < NODE_DOWN_NS) {
            sl_err(&e, SLUICE_ELIMITER, "redis %s: failed less than %lld ms ago",
                   sl_redis_where(nd->rd), NODE_DOWN_NS / 1000000);
            return node_failed(cl, nd, &e, err);
        }
        rc = sl_redis_decide_routed(nd->rd, rq, &rt, r, &e);
        if (rc == 0)
            return 0;
        if (rc == SLUICE_ELIMITER)
            return node_failed(cl, nd, &e, err);
        if (rc != SL_LIM_REDIRECT) {
            sl_err_copy(err, &e);
            return rc;
        }
        if (redirects == SL_CLUSTER_MAX_REDIRECTS) {
            sl_err(err, SLUICE_ELIMITER, "redis cluster: slot %u still redirected after %d "
                   "redirects (last: %.120s)", rt.slot, redirects, e.msg);
            return node_failed(cl, nd, err, err);
        }
        if ((rc = follow(cl, nd, &rt, &target, &e))) {
            sl_err_copy(err, &e);
            return rc;
        }
        if (sl_now_ns() >= rt.deadline) {
            sl_err(&e, SLUICE_ELIMITER, "redis cluster: slot %u redirected past the deadline",
                   rt.slot);
            return node_failed(cl, nd, &e, err);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

sl_cluster *sl_cluster_new(sl_redis_url **seeds, size_t n, const sl_redis_cfg *cfg,
                           int *reachable, sluice_error *err)
{
    sl_cluster *cl = sl_calloc(1, sizeof *cl);
    int fatal = 0, rc;
    size_t i;

    *reachable = 0;
    if (!cl) {
        sl_redis_cluster_url_free(*seeds, n);
        *seeds = NULL;
        sl_err(err, SLUICE_ENOMEM, "redis cluster: out of memory");
        return NULL;
    }
    cl->seeds = *seeds;
    cl->nseeds = n;
    *seeds = NULL;
    cl->cfg = *cfg;
    cl->cfg.cluster = 1;
    cl->cfg.lazy = 1;
    cl->fetch_timeout_ms = cfg->create_timeout_ms;
    for (i = 0; i < SL_CLUSTER_SLOTS; i++)
        cl->owner[i] = SL_CLUSTER_NO_NODE;
    if (sl_mutex_init(&cl->mu, "redis cluster", err) ||
        sl_cond_init_monotonic(&cl->cv) != 0 || !(cl->scratch = sl_calloc(1, sizeof *cl->scratch))) {
        if (!err || !err->code)
            sl_err(err, SLUICE_ENOMEM, "redis cluster: out of memory");
        sl_free(cl->scratch);
        sl_redis_cluster_url_free(cl->seeds, cl->nseeds);
        sl_free(cl);
        return NULL;
    }
    rc = refresh(cl, &fatal, err);
    if (fatal || rc == SLUICE_ENOMEM) {
        sl_cluster_free(cl);
        return NULL;
    }
    *reachable = rc == 0;
    /* Later fetches are in the background: keep them short. */
    cl->fetch_timeout_ms = cfg->timeout_ms < 200 ? 200 : cfg->timeout_ms;
    cl->want = rc != 0;
    if (pthread_create(&cl->thread, NULL, refresher_main, cl) != 0) {
        sl_err(err, SLUICE_ENOMEM, "redis cluster: cannot start the map refresher");
        sl_cluster_free(cl);
        return NULL;
    }
    cl->thread_started = 1;
    if (rc == 0)
        sl_err_clear(err);
    return cl;
}

void sl_cluster_free(sl_cluster *cl)
{
    size_t i;

    if (!cl)
        return;
    if (cl->thread_started) {
        pthread_mutex_lock(&cl->mu);
        cl->stop = 1;
        pthread_cond_signal(&cl->cv);
        pthread_mutex_unlock(&cl->mu);
        pthread_join(cl->thread, NULL);
    }
    for (i = 0; i < cl->nnodes; i++) {
        sl_redis_free(cl->nodes[i]->rd);
        sl_free(cl->nodes[i]);
    }
    pthread_cond_destroy(&cl->cv);
    pthread_mutex_destroy(&cl->mu);
    sl_free(cl->scratch);
    sl_redis_cluster_url_free(cl->seeds, cl->nseeds);
    sl_free(cl);
}

void sl_cluster_get_stats(sl_cluster *cl, sl_cluster_stats *out)
{
    cnode *nodes[SL_CLUSTER_MAX_NODES];
    size_t n, i;

    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&cl->mu);
    n = cl->nnodes;
    memcpy(nodes, cl->nodes, n * sizeof *nodes);
    pthread_mutex_unlock(&cl->mu);
    for (i = 0; i < n; i++) {
        out->round_trips += sl_redis_round_trips(nodes[i]->rd);
        out->decisions += sl_redis_decisions(nodes[i]->rd);
        out->errors += sl_redis_errors(nodes[i]->rd);
    }
    out->nodes = atomic_load_explicit(&cl->nodes_known, memory_order_relaxed);
    out->moved = atomic_load_explicit(&cl->moved, memory_order_relaxed);
    out->ask = atomic_load_explicit(&cl->ask, memory_order_relaxed);
    out->tryagain = atomic_load_explicit(&cl->tryagain, memory_order_relaxed);
    out->refreshes = atomic_load_explicit(&cl->refreshes, memory_order_relaxed);
    out->node_fallbacks = atomic_load_explicit(&cl->node_fallbacks, memory_order_relaxed);
}

int sl_cluster_node_at(sl_cluster *cl, size_t i, struct sluice_limiter_node_stats *out)
{
    cnode *nd = NULL;
    int primary = 0;

    pthread_mutex_lock(&cl->mu);
    if (i < cl->nnodes) {
        nd = cl->nodes[i];
        primary = cl->in_map[i];
    }
    pthread_mutex_unlock(&cl->mu);
    if (!nd)
        return 0;
    memset(out, 0, sizeof *out);
    snprintf(out->addr, sizeof out->addr, "%s", sl_redis_where(nd->rd));
    out->primary = primary;
    out->round_trips = sl_redis_round_trips(nd->rd);
    out->decisions = sl_redis_decisions(nd->rd);
    out->redis_errors = sl_redis_errors(nd->rd);
    out->fallbacks = atomic_load_explicit(&nd->fallbacks, memory_order_relaxed);
    return 1;
}

size_t sl_cluster_node_stats(sl_cluster *cl, struct sluice_limiter_node_stats *out, size_t cap)
{
    size_t n;

    pthread_mutex_lock(&cl->mu);
    n = cl->nnodes;
    pthread_mutex_unlock(&cl->mu);
    for (size_t i = 0; i < n && i < cap; i++)
        sl_cluster_node_at(cl, i, &out[i]);
    return n;
}

const char *sl_cluster_where(const sl_cluster *cl)
{
    return cl->seeds[0].where;
}
