/* The public generic pool (sluice_pool_*): a single-key sl_pool, plus a map
 * from each checked-out resource pointer to its pool item so that
 * sluice_pool_put() can find the item from the pointer alone.
 *
 * The map has its own small lock, never held across a call into the core
 * pool, so the two locks never nest and user callbacks run under neither. */
#include <pthread.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "log.h"
#include "pool.h"

struct sluice_pool {
    sl_pool *core;
    sluice_pool_ops ops;
    void *ctx;
    pthread_mutex_t lock;       /* guards map, cap and n */
    sl_pool_item **map;         /* open addressing on item->res, at most half full */
    size_t cap, n;
};

/* ---- res -> item map (lock held) ------------------------------------------ */

static size_t home(const sluice_pool *sp, const void *res)
{
    uint64_t h = (uint64_t)(uintptr_t)res * 0x9E3779B97F4A7C15ull;

    return (size_t)(h >> 32) & (sp->cap - 1);
}

static void map_place(sluice_pool *sp, sl_pool_item *it)
{
    size_t i = home(sp, it->res);

    while (sp->map[i])
        i = (i + 1) & (sp->cap - 1);
    sp->map[i] = it;
}

static int map_grow(sluice_pool *sp)
{
    sl_pool_item **old = sp->map;
    size_t old_cap = sp->cap, i;

    sp->map = sl_calloc(old_cap * 2, sizeof *sp->map);
    if (!sp->map) {
        sp->map = old;
        return SLUICE_ENOMEM;
    }
    sp->cap = old_cap * 2;
    for (i = 0; i < old_cap; i++)
        if (old[i])
            map_place(sp, old[i]);
    sl_free(old);
    return 0;
}

static int map_insert(sluice_pool *sp, sl_pool_item *it)
{
    if ((sp->n + 1) * 2 > sp->cap && map_grow(sp) != 0)
        return SLUICE_ENOMEM;
    map_place(sp, it);
    sp->n++;
    return 0;
}

/* Removes and returns the item for `res`, or NULL.  Deletion shifts later
 * members of the probe run back, so no tombstones build up. */
static sl_pool_item *map_take(sluice_pool *sp, const void *res)
{
    size_t mask = sp->cap - 1, i = home(sp, res), j;
    sl_pool_item *it;

    while (sp->map[i] && sp->map[i]->res != res)
        i = (i + 1) & mask;
    it = sp->map[i];
    if (!it)
        return NULL;
    for (j = i;;) {
        size_t k;
        j = (j + 1) & mask;
        if (!sp->map[j])
            break;
        k = home(sp, sp->map[j]->res);
        /* Stays put when its home lies cyclically in (i, j]. */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        sp->map[i] = sp->map[j];
        i = j;
    }
    sp->map[i] = NULL;
    sp->n--;
    return it;
}

/* ---- adapters to the core pool's ops --------------------------------------- */

/* The caller's deadline reaches create_timed as the milliseconds left, the
 * form a C user can pass on to poll() or a connect timeout. */
static int pub_create(void *ctx, const char *key, void *arg, int64_t deadline, void **res,
                      sluice_error *err)
{
    sluice_pool *sp = ctx;
    int rc = sp->ops.create_timed ? sp->ops.create_timed(sp->ctx, sl_ms_left(deadline), res, err)
                                  : sp->ops.create(sp->ctx, res, err);

    if (rc == 0 && !*res)
        return sl_err(err, SLUICE_EINVAL, "sluice_pool create returned 0 but no resource");
    return rc;
}

static void pub_destroy(void *ctx, void *res, sluice_close_reason why)
{
    sluice_pool *sp = ctx;

    sp->ops.destroy(sp->ctx, res);
}

static int pub_alive(void *ctx, void *res)
{
    sluice_pool *sp = ctx;

    return sp->ops.alive(sp->ctx, res);
}

/* ---- options --------------------------------------------------------------- */

/* SLUICE_OFF reads as `off`; any other negative value is refused. */
static int opt(int v, int off, int *out)
{
    if (v == SLUICE_OFF)
        v = off;
    else if (v < 0)
        return -1;
    *out = v;
    return 0;
}

static int map_opts(const sluice_pool_opts *o, sl_pool_cfg *c, sluice_error *err)
{
    memset(c, 0, sizeof *c);
    if (!o)
        return 0;
    if (opt(o->max_size, 0, &c->max_total) || opt(o->max_idle, -1, &c->max_idle_per_key) ||
        opt(o->idle_timeout_ms, 0, &c->idle_timeout_ms) ||
        opt(o->max_lifetime_ms, 0, &c->max_lifetime_ms))
        return sl_err(err, SLUICE_EINVAL,
                      "sluice_pool_opts: negative value (max_size %d, max_idle %d, "
                      "idle_timeout_ms %d, max_lifetime_ms %d)",
                      o->max_size, o->max_idle, o->idle_timeout_ms, o->max_lifetime_ms);
    if (c->max_idle_per_key == 0)
        c->max_idle_per_key = c->max_total;
    if (o->min_idle < 0 ||
        (c->max_idle_per_key && o->min_idle > (c->max_idle_per_key < 0 ? 0 : c->max_idle_per_key)))
        return sl_err(err, SLUICE_EINVAL,
                      "sluice_pool_opts: min_idle %d must be between 0 and max_idle (%d)",
                      o->min_idle, c->max_idle_per_key < 0 ? 0 : c->max_idle_per_key);
    c->min_idle_per_key = o->min_idle;
    c->housekeeping = c->idle_timeout_ms || c->max_lifetime_ms || c->min_idle_per_key;
    return 0;
}

/* ---- API ------------------------------------------------------------------- */

sluice_pool *sluice_pool_new(const sluice_pool_opts *o, const sluice_pool_ops *ops, void *ctx,
                             sluice_error *err)
{
    sl_pool_ops core_ops = {pub_create, pub_destroy, NULL, NULL};
    sl_pool_cfg cfg;
    sluice_pool *sp;

    if (!ops || !(ops->create || ops->create_timed) || !ops->destroy) {
        sl_err(err, SLUICE_EINVAL, "sluice_pool_new: ops need create (or create_timed) and destroy");
        return NULL;
    }
    if (map_opts(o, &cfg, err) != 0)
        return NULL;
    if (ops->alive)
        core_ops.alive = pub_alive;
    sp = sl_calloc(1, sizeof *sp);
    if (!sp) {
        sl_err(err, SLUICE_ENOMEM, "no memory for a sluice_pool");
        return NULL;
    }
    sp->ops = *ops;
    sp->ctx = ctx;
    /* Room for max_size checked-out resources from the start, so a bounded
     * pool's checkout never allocates here. */
    sp->cap = 16;
    while (cfg.max_total > 0 && sp->cap < (size_t)cfg.max_total * 2 && sp->cap < 4096)
        sp->cap *= 2;
    sp->map = sl_calloc(sp->cap, sizeof *sp->map);
    if (!sp->map || pthread_mutex_init(&sp->lock, NULL) != 0) {
        sl_free(sp->map);
        sl_free(sp);
        sl_err(err, SLUICE_ENOMEM, "no memory for a sluice_pool");
        return NULL;
    }
    sp->core = sl_pool_new(&cfg, &core_ops, sp, err);
    /* The one key made known now, so that min_idle fills it from the start. */
    if (sp->core && cfg.min_idle_per_key && sl_pool_prefill(sp->core, "", NULL, 0, 0, err) < 0) {
        sl_pool_free(sp->core);
        sp->core = NULL;
    }
    if (!sp->core) {
        pthread_mutex_destroy(&sp->lock);
        sl_free(sp->map);
        sl_free(sp);
        return NULL;
    }
    return sp;
}

int sluice_pool_get_err(sluice_pool *sp, int timeout_ms, void **res, sluice_error *err)
{
    sl_pool_item *it;
    int rc;

    sl_err_clear(err);
    if (res)
        *res = NULL;
    if (!sp || !res)
        return sl_err(err, SLUICE_EINVAL, "sluice_pool_get: needs a pool and a result pointer");
    rc = sl_pool_get(sp->core, "", NULL, 0, sl_deadline_in_ms(timeout_ms), &it, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&sp->lock);
    rc = map_insert(sp, it);
    pthread_mutex_unlock(&sp->lock);
    if (rc != 0) {
        /* Untracked it could never come back: return it at once. */
        sl_pool_put(sp->core, it, 1);
        return sl_err(err, rc, "sluice_pool_get: no memory to track a checked-out resource");
    }
    *res = it->res;
    return 0;
}

int sluice_pool_get(sluice_pool *sp, int timeout_ms, void **res)
{
    return sluice_pool_get_err(sp, timeout_ms, res, NULL);
}

void sluice_pool_put(sluice_pool *sp, void *res, int reusable)
{
    sl_pool_item *it;

    if (!sp || !res)
        return;
    pthread_mutex_lock(&sp->lock);
    it = map_take(sp, res);
    pthread_mutex_unlock(&sp->lock);
    if (!it) {
        SL_WARN("sluice_pool_put: %p is not checked out of this pool; ignored", res);
        return;
    }
    sl_pool_put(sp->core, it, reusable);
}

void sluice_pool_stats(sluice_pool *sp, struct sluice_pool_stats *out)
{
    if (!out)
        return;
    if (!sp) {
        memset(out, 0, sizeof *out);
        return;
    }
    sl_pool_stats(sp->core, NULL, out);
}

void sluice_pool_free(sluice_pool *sp)
{
    if (!sp)
        return;
    sl_pool_free(sp->core);
    if (sp->n)
        SL_WARN("sluice_pool_free: %zu resources were never returned", sp->n);
    pthread_mutex_destroy(&sp->lock);
    sl_free(sp->map);
    sl_free(sp);
}

int sluice_pool_prefill(sluice_pool *sp, int n, sluice_error *err)
{
    sl_err_clear(err);
    if (!sp || n < 0)
        return sl_err(err, SLUICE_EINVAL, "sluice_pool_prefill: %s",
                      sp ? "negative count" : "NULL pool");
    return sl_pool_prefill(sp->core, "", NULL, n, sl_deadline_in_ms(30000), err);
}

size_t sluice_pool_usage(sluice_pool *sp, struct sluice_pool_usage *out, size_t cap)
{
    if (!sp || (!out && cap))
        return 0;
    return sl_pool_usage(sp->core, NULL, out, cap);
}
