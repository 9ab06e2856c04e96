/* The executor: fixed worker threads taking work from one bounded FIFO
 * queue, futures for the results, and batches.
 *
 * Contract and the choices the public header leaves open:
 *  - One mutex (ex->mu) guards the queue, every future's state, result and
 *    reference count.  Work runs with no lock held.  Each future has its
 *    own condition variable (CLOCK_MONOTONIC), waited with ex->mu.
 *  - Waiting for queue space: sluice_executor_run() waits up to
 *    timeout_ms (negative = forever, 0 = not at all); sluice_submit() up to
 *    the request's timeout_ms when > 0, else until there is space.  A queue
 *    still full at the deadline gives SLUICE_EQUEUEFULL (the same code as
 *    sluice_try_submit() gives at once); a closing executor SLUICE_ECLOSED.
 *  - A future is referenced by its caller and, while queued or running, by
 *    the executor; the last one to let go frees it (and a response nobody
 *    took).  So a future may be freed before its work ran: the work still
 *    runs (cancel it first to drop it).  Every live future also holds the
 *    executor's memory (not its threads), so waiting on, cancelling or
 *    freeing a future stays valid after sluice_executor_free().
 *  - sluice_future_wait() returns the work's code: 0 for a task, the
 *    sluice_client_do() code for a request, SLUICE_ECANCELED for cancelled
 *    work, SLUICE_ETIMEDOUT when the wait ran out (the work goes on).  The
 *    response moves to the first waiter that passes `out`; later waits
 *    return the same code with *out NULL.  Any number of threads may wait.
 *  - sluice_future_cancel() removes queued work (its future completes with
 *    SLUICE_ECANCELED) and returns 0; running or finished work cannot be
 *    cancelled: SLUICE_EINVAL.
 *  - sluice_batch() always attempts every item: up to max_concurrency - 1
 *    helper tasks run on the workers while the calling thread runs items
 *    too, then cancels the helpers still queued and waits for the running
 *    ones.  It never waits on the queue, so it cannot deadlock when called
 *    from a worker of the same executor.
 *  - sluice_executor_free(): with cancel_on_free the queued work is
 *    cancelled, else it all runs; then the workers are joined.  Calls that
 *    submit while it runs get SLUICE_ECLOSED.  It must not be called from
 *    one of the executor's own workers (it logs an error and returns).
 *  - fork(): the workers stay in the parent.  In the child an executor made
 *    before the fork refuses work (SLUICE_ECLOSED), and freeing it releases
 *    nothing: no thread to join, and its condition variables may count
 *    waiters that are not there, so they are never touched.  The check is
 *    one relaxed load, before the lock (which a worker may have held).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "log.h"

#define DEFAULT_THREADS 4
#define DEFAULT_QUEUE 1024
#define MAX_THREADS 1024

enum { QUEUED, RUNNING, DONE };

struct sluice_future {
    sluice_executor *ex;
    struct sluice_future *prev, *next;  /* queue links */
    int state;
    int refs;                           /* caller + executor while pending */
    pthread_cond_t done_cv;
    /* the work: a task, or a request (owned copy) on a client */
    sluice_task_fn fn;
    void *arg;
    sluice_client *client;
    sluice_request *req;
    /* the result, written before DONE */
    int code;
    sluice_response *resp;              /* until a waiter takes it */
    sluice_error err;
};

struct sluice_executor {
    pthread_mutex_t mu;
    pthread_condattr_t cattr;           /* CLOCK_MONOTONIC */
    pthread_cond_t work_cv;             /* queue not empty, or closing */
    pthread_cond_t space_cv;            /* queue not full, or closing */
    sluice_future *head, *tail;
    int queued, capacity;
    int space_waiters;
    int closing;
    int cancel_on_free;
    int nthreads;
    pthread_t *threads;
    atomic_int refs;                    /* the owner + every live future */
    unsigned forks;                     /* fork_count when it was made */
};

/* How many fork()s this process descends through (bumped in each child). */
static unsigned fork_count;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void count_fork(void)
{
    __atomic_add_fetch(&fork_count, 1, __ATOMIC_RELAXED);
}

static void watch_fork(void)
{
    if (pthread_atfork(NULL, NULL, count_fork) != 0)
        SL_WARN("executor: cannot watch fork(); do not use an executor in a child");
}

/* Made in an ancestor process: its workers are not here. */
static int inherited(const sluice_executor *ex)
{
    return ex->forks != __atomic_load_n(&fork_count, __ATOMIC_RELAXED);
}

/* The executor whose worker this thread is, if any. */
static _Thread_local sluice_executor *current_ex;

/* ---- request copies ------------------------------------------------------- */

static int add_size(size_t *total, size_t n)
{
    if (n > SIZE_MAX - *total)
        return -1;
    *total += n;
    return 0;
}

static int add_str(size_t *total, const char *s)
{
    return s ? add_size(total, strlen(s) + 1) : 0;
}

static int add_pairs(size_t *total, const sluice_header *h, size_t n)
{
    size_t i;

    if (n && !h)
        return -1;
    if (n > (SIZE_MAX - *total) / sizeof *h || add_size(total, n * sizeof *h) != 0)
        return -1;
    for (i = 0; i < n; i++)
        if (add_str(total, h[i].name) != 0 || add_str(total, h[i].value) != 0)
            return -1;
    return 0;
}

/* The bytes one block needs to hold the request and all it points to;
 * -1 for an inconsistent request (an array or body missing). */
static int request_size(const sluice_request *r, size_t *total)
{
    *total = sizeof *r;
    if (r->body_len && !r->body && !r->body_read)   /* body_read: body_len is no size here */
        return -1;
    if (add_pairs(total, r->query, r->nquery) != 0 ||
        add_pairs(total, r->headers, r->nheaders) != 0 || add_str(total, r->method) != 0 ||
        add_str(total, r->path) != 0 || add_str(total, r->rate_key) != 0)
        return -1;
    return r->body ? add_size(total, r->body_len) : 0;
}

static const char *copy_str(char **p, const char *s)
{
    char *d = *p;
    size_t n;

    if (!s)
        return NULL;
    n = strlen(s) + 1;
    memcpy(d, s, n);
    *p += n;
    return d;
}

static const sluice_header *copy_pairs(sluice_header *dst, char **p, const sluice_header *h,
                                       size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        dst[i].name = copy_str(p, h[i].name);
        dst[i].value = copy_str(p, h[i].value);
    }
    return n ? dst : NULL;
}

/* A deep copy in one allocation: the struct, the two pair arrays, then the
 * strings and the body.  Freed with sl_free(). */
static sluice_request *request_copy(const sluice_request *r, sluice_error *err)
{
    sluice_request *c;
    sluice_header *pairs;
    size_t size;
    char *p;

    if (request_size(r, &size) != 0) {
        sl_err(err, SLUICE_EINVAL, "executor: request has a count without its array or body");
        return NULL;
    }
    c = sl_malloc(size);
    if (!c) {
        sl_err(err, SLUICE_ENOMEM, "executor: out of memory copying a %zu-byte request", size);
        return NULL;
    }
    *c = *r;
    pairs = (sluice_header *)(c + 1);
    p = (char *)(pairs + r->nquery + r->nheaders);
    c->query = copy_pairs(pairs, &p, r->query, r->nquery);
    c->headers = copy_pairs(pairs + r->nquery, &p, r->headers, r->nheaders);
    c->method = copy_str(&p, r->method);
    c->path = copy_str(&p, r->path);
    c->rate_key = copy_str(&p, r->rate_key);
    if (r->body) {
        if (r->body_len)
            memcpy(p, r->body, r->body_len);
        c->body = p;
    }
    return c;
}

/* ---- futures -------------------------------------------------------------- */

static void executor_unref(sluice_executor *ex)
{
    if (atomic_fetch_sub_explicit(&ex->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_cond_destroy(&ex->work_cv);
    pthread_cond_destroy(&ex->space_cv);
    pthread_condattr_destroy(&ex->cattr);
    pthread_mutex_destroy(&ex->mu);
    sl_free(ex);
}

static sluice_future *future_new(sluice_executor *ex, sluice_error *err)
{
    sluice_future *f = sl_calloc(1, sizeof *f);

    if (!f) {
        sl_err(err, SLUICE_ENOMEM, "executor: out of memory for a future");
        return NULL;
    }
    if (pthread_cond_init(&f->done_cv, &ex->cattr) != 0) {
        sl_free(f);
        sl_err(err, SLUICE_ENOMEM, "executor: cannot create a future's condition variable");
        return NULL;
    }
    f->ex = ex;
    f->refs = 1;
    atomic_fetch_add_explicit(&ex->refs, 1, memory_order_relaxed);
    return f;
}

/* Frees a future nobody references any more; no lock held. */
static void future_destroy(sluice_future *f)
{
    sluice_executor *ex = f->ex;

    sluice_response_free(f->resp);
    sl_free(f->req);
    pthread_cond_destroy(&f->done_cv);
    sl_free(f);
    executor_unref(ex);
}

/* Drops one reference with ex->mu held; 1 when the caller must destroy
 * the future after unlocking. */
static int future_unref_locked(sluice_future *f)
{
    return --f->refs == 0;
}

/* Publishes a result with ex->mu held and drops the executor's reference. */
static int complete_locked(sluice_future *f, int code)
{
    f->code = code;
    f->state = DONE;
    pthread_cond_broadcast(&f->done_cv);
    return future_unref_locked(f);
}

/* ---- the queue (ex->mu held) ---------------------------------------------- */

static void queue_push(sluice_executor *ex, sluice_future *f)
{
    f->next = NULL;
    f->prev = ex->tail;
    if (ex->tail)
        ex->tail->next = f;
    else
        ex->head = f;
    ex->tail = f;
    ex->queued++;
}

static void queue_remove(sluice_executor *ex, sluice_future *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        ex->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    else
        ex->tail = f->prev;
    f->prev = f->next = NULL;
    ex->queued--;
    if (ex->space_waiters)
        pthread_cond_signal(&ex->space_cv);
}

/* Waits for room until `deadline` (0 = do not wait).  Returns 0 with room,
 * SLUICE_EQUEUEFULL or SLUICE_ECLOSED. */
static int await_space(sluice_executor *ex, int64_t deadline)
{
    struct timespec ts = sl_deadline_timespec(deadline);
    int rc = 0;

    while (!ex->closing && ex->queued >= ex->capacity && rc != ETIMEDOUT) {
        if (deadline == 0)
            return SLUICE_EQUEUEFULL;
        ex->space_waiters++;
        if (deadline == SL_NO_DEADLINE)
            pthread_cond_wait(&ex->space_cv, &ex->mu);
        else
            rc = pthread_cond_timedwait(&ex->space_cv, &ex->mu, &ts);
        ex->space_waiters--;
    }
    if (ex->closing)
        return SLUICE_ECLOSED;
    return ex->queued < ex->capacity ? 0 : SLUICE_EQUEUEFULL;
}

/* Queues f (which then holds a second reference, the executor's).  On
 * failure the caller still owns f alone. */
static int enqueue(sluice_executor *ex, sluice_future *f, int64_t deadline, sluice_error *err)
{
    int rc;

    if (inherited(ex))
        return sl_err(err, SLUICE_ECLOSED, "executor: made before fork(), its threads are in the parent");
    pthread_mutex_lock(&ex->mu);
    rc = await_space(ex, deadline);
    if (rc == 0) {
        f->state = QUEUED;
        f->refs++;
        queue_push(ex, f);
        pthread_cond_signal(&ex->work_cv);
    }
    pthread_mutex_unlock(&ex->mu);
    if (rc == SLUICE_EQUEUEFULL)
        return sl_err(err, rc, "executor: queue full (%d queued)", ex->capacity);
    if (rc == SLUICE_ECLOSED)
        return sl_err(err, rc, "executor: closed, no new work accepted");
    return 0;
}

/* Creates a future for fn/arg or (client, req) and queues it. */
static sluice_future *submit(sluice_executor *ex, sluice_task_fn fn, void *arg,
                             sluice_client *c, const sluice_request *req, int64_t deadline,
                             sluice_error *err)
{
    sluice_future *f = future_new(ex, err);

    if (!f)
        return NULL;
    f->fn = fn;
    f->arg = arg;
    f->client = c;
    if (req && !(f->req = request_copy(req, err))) {
        future_destroy(f);
        return NULL;
    }
    if (enqueue(ex, f, deadline, err) != 0) {
        future_destroy(f);
        return NULL;
    }
    return f;
}

/* ---- workers -------------------------------------------------------------- */

static int run(sluice_future *f)
{
    if (f->req)
        return sluice_client_do(f->client, f->req, &f->resp, &f->err);
    f->fn(f->arg);
    return 0;
}

/* Takes the next future, or NULL when closing with an empty queue. */
static sluice_future *next_work(sluice_executor *ex)
{
    sluice_future *f;

    while (!ex->head && !ex->closing)
        pthread_cond_wait(&ex->work_cv, &ex->mu);
    f = ex->head;
    if (f) {
        queue_remove(ex, f);
        f->state = RUNNING;
    }
    return f;
}

static void *worker_main(void *arg)
{
    sluice_executor *ex = arg;
    sluice_future *f;

    current_ex = ex;
    pthread_mutex_lock(&ex->mu);
    while ((f = next_work(ex))) {
        int code, dead;

        pthread_mutex_unlock(&ex->mu);
        code = run(f);
        pthread_mutex_lock(&ex->mu);
        dead = complete_locked(f, code);
        if (dead) {
            pthread_mutex_unlock(&ex->mu);
            future_destroy(f);
            pthread_mutex_lock(&ex->mu);
        }
    }
    pthread_mutex_unlock(&ex->mu);
    return NULL;
}

/* ---- executor life cycle -------------------------------------------------- */

void sluice_executor_opts_init(sluice_executor_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->threads = DEFAULT_THREADS;
    o->queue_capacity = DEFAULT_QUEUE;
}

static int init_sync(sluice_executor *ex)
{
    if (pthread_condattr_init(&ex->cattr) != 0)
        return -1;
    if (pthread_condattr_setclock(&ex->cattr, CLOCK_MONOTONIC) != 0 ||
        pthread_mutex_init(&ex->mu, NULL) != 0) {
        pthread_condattr_destroy(&ex->cattr);
        return -1;
    }
    if (pthread_cond_init(&ex->work_cv, &ex->cattr) != 0) {
        pthread_mutex_destroy(&ex->mu);
        pthread_condattr_destroy(&ex->cattr);
        return -1;
    }
    if (pthread_cond_init(&ex->space_cv, &ex->cattr) != 0) {
        pthread_cond_destroy(&ex->work_cv);
        pthread_mutex_destroy(&ex->mu);
        pthread_condattr_destroy(&ex->cattr);
        return -1;
    }
    return 0;
}

/* Stops and joins the first n workers. */
static void stop_workers(sluice_executor *ex, int n)
{
    int i;

    pthread_mutex_lock(&ex->mu);
    ex->closing = 1;
    pthread_cond_broadcast(&ex->work_cv);
    pthread_cond_broadcast(&ex->space_cv);
    pthread_mutex_unlock(&ex->mu);
    for (i = 0; i < n; i++)
        pthread_join(ex->threads[i], NULL);
    sl_free(ex->threads);
    ex->threads = NULL;
}

static int start_workers(sluice_executor *ex, sluice_error *err)
{
    int i, rc;

    ex->threads = sl_calloc((size_t)ex->nthreads, sizeof *ex->threads);
    if (!ex->threads)
        return sl_err(err, SLUICE_ENOMEM, "executor: out of memory for %d threads", ex->nthreads);
    for (i = 0; i < ex->nthreads; i++) {
        rc = pthread_create(&ex->threads[i], NULL, worker_main, ex);
        if (rc != 0) {
            stop_workers(ex, i);
            return sl_err(err, SLUICE_ENOMEM, "executor: cannot start worker thread %d of %d (errno %d)",
                          i + 1, ex->nthreads, rc);
        }
    }
    return 0;
}

sluice_executor *sluice_executor_new_opts(const sluice_executor_opts *o, sluice_error *err)
{
    sluice_executor_opts d;
    sluice_executor *ex;

    sluice_executor_opts_init(&d);
    if (o) {
        d.threads = o->threads ? o->threads : DEFAULT_THREADS;
        d.queue_capacity = o->queue_capacity ? o->queue_capacity : DEFAULT_QUEUE;
        d.cancel_on_free = o->cancel_on_free;
    }
    if (d.threads < 1 || d.threads > MAX_THREADS || d.queue_capacity < 1) {
        sl_err(err, SLUICE_EINVAL, "executor: %d threads (1..%d) and queue capacity %d (>= 1)",
               d.threads, MAX_THREADS, d.queue_capacity);
        return NULL;
    }
    ex = sl_calloc(1, sizeof *ex);
    if (!ex) {
        sl_err(err, SLUICE_ENOMEM, "executor: out of memory");
        return NULL;
    }
    if (init_sync(ex) != 0) {
        sl_free(ex);
        sl_err(err, SLUICE_ENOMEM, "executor: cannot create its mutex and condition variables");
        return NULL;
    }
    pthread_once(&fork_once, watch_fork);
    ex->forks = __atomic_load_n(&fork_count, __ATOMIC_RELAXED);
    ex->capacity = d.queue_capacity;
    ex->nthreads = d.threads;
    ex->cancel_on_free = d.cancel_on_free != 0;
    atomic_init(&ex->refs, 1);
    if (start_workers(ex, err) != 0) {
        executor_unref(ex);
        return NULL;
    }
    return ex;
}

sluice_executor *sluice_executor_new(int threads, int queue_capacity, sluice_error *err)
{
    sluice_executor_opts o;

    sluice_executor_opts_init(&o);
    o.threads = threads;
    o.queue_capacity = queue_capacity;
    return sluice_executor_new_opts(&o, err);
}

/* Completes every queued future with SLUICE_ECANCELED (ex->mu held); the
 * ones nobody references any more are chained on *dead. */
static void cancel_queued_locked(sluice_executor *ex, sluice_future **dead)
{
    while (ex->head) {
        sluice_future *f = ex->head;
        queue_remove(ex, f);
        sl_err(&f->err, SLUICE_ECANCELED, "executor: freed before the work ran");
        if (complete_locked(f, SLUICE_ECANCELED)) {
            f->next = *dead;
            *dead = f;
        }
    }
}

void sluice_executor_free(sluice_executor *ex)
{
    sluice_future *dead = NULL;

    if (!ex)
        return;
    if (current_ex == ex) {
        SL_ERROR("sluice_executor_free called from one of the executor's own workers; ignored");
        return;
    }
    if (inherited(ex)) {
        SL_WARN("sluice_executor_free: made before fork(), left to the parent");
        return;
    }
    pthread_mutex_lock(&ex->mu);
    ex->closing = 1;
    if (ex->cancel_on_free)
        cancel_queued_locked(ex, &dead);
    pthread_mutex_unlock(&ex->mu);
    while (dead) {
        sluice_future *next = dead->next;
        future_destroy(dead);
        dead = next;
    }
    stop_workers(ex, ex->nthreads);
    executor_unref(ex);
}

/* ---- submitting ----------------------------------------------------------- */

static int check_submit(sluice_executor *ex, sluice_client *c, const sluice_request *req,
                        sluice_error *err)
{
    if (!ex || !c || !req)
        return sl_err(err, SLUICE_EINVAL, "executor: submit needs an executor, a client and a request");
    return 0;
}

sluice_future *sluice_submit(sluice_executor *ex, sluice_client *c, const sluice_request *req,
                             sluice_error *err)
{
    if (check_submit(ex, c, req, err) != 0)
        return NULL;
    return submit(ex, NULL, NULL, c, req, req->timeout_ms > 0 ? sl_deadline_in_ms(req->timeout_ms)
                                                              : SL_NO_DEADLINE, err);
}

sluice_future *sluice_try_submit(sluice_executor *ex, sluice_client *c, const sluice_request *req,
                                 sluice_error *err)
{
    if (check_submit(ex, c, req, err) != 0)
        return NULL;
    return submit(ex, NULL, NULL, c, req, 0, err);
}

sluice_future *sluice_executor_run(sluice_executor *ex, sluice_task_fn fn, void *arg,
                                   int timeout_ms, sluice_error *err)
{
    if (!ex || !fn) {
        sl_err(err, SLUICE_EINVAL, "executor: run needs an executor and a function");
        return NULL;
    }
    return submit(ex, fn, arg, NULL, NULL, timeout_ms == 0 ? 0 : sl_deadline_in_ms(timeout_ms),
                  err);
}

/* ---- futures -------------------------------------------------------------- */

/* Waits for DONE with ex->mu held; 0, or ETIMEDOUT at the deadline. */
static int await_done(sluice_future *f, int64_t deadline)
{
    struct timespec ts = sl_deadline_timespec(deadline);
    sluice_executor *ex = f->ex;

    while (f->state != DONE) {
        if (deadline == SL_NO_DEADLINE)
            pthread_cond_wait(&f->done_cv, &ex->mu);
        else if (pthread_cond_timedwait(&f->done_cv, &ex->mu, &ts) == ETIMEDOUT)
            return f->state == DONE ? 0 : ETIMEDOUT;
    }
    return 0;
}

int sluice_future_wait(sluice_future *f, int timeout_ms, sluice_response **out, sluice_error *err)
{
    int code;

    if (out)
        *out = NULL;
    if (!f)
        return sl_err(err, SLUICE_EINVAL, "future: NULL");
    pthread_mutex_lock(&f->ex->mu);
    if (await_done(f, sl_deadline_in_ms(timeout_ms)) != 0) {
        pthread_mutex_unlock(&f->ex->mu);
        return sl_err(err, SLUICE_ETIMEDOUT, "future: work not finished after %d ms", timeout_ms);
    }
    code = f->code;
    if (out) {
        *out = f->resp;
        f->resp = NULL;
    }
    pthread_mutex_unlock(&f->ex->mu);
    /* The result is immutable once DONE: no lock needed to copy it. */
    if (code)
        sl_err_copy(err, &f->err);
    else
        sl_err_clear(err);
    return code;
}

int sluice_future_cancel(sluice_future *f)
{
    sluice_executor *ex;
    int state;

    if (!f)
        return SLUICE_EINVAL;
    ex = f->ex;
    pthread_mutex_lock(&ex->mu);
    state = f->state;
    if (state == QUEUED) {
        queue_remove(ex, f);
        sl_err(&f->err, SLUICE_ECANCELED, "executor: work canceled before it ran");
        complete_locked(f, SLUICE_ECANCELED);   /* the caller still holds f */
    }
    pthread_mutex_unlock(&ex->mu);
    return state == QUEUED ? 0 : SLUICE_EINVAL;
}

void sluice_future_free(sluice_future *f)
{
    int dead;

    if (!f)
        return;
    pthread_mutex_lock(&f->ex->mu);
    dead = future_unref_locked(f);
    pthread_mutex_unlock(&f->ex->mu);
    if (dead)
        future_destroy(f);
}

/* ---- batches -------------------------------------------------------------- */

typedef struct batch {
    sluice_client *client;
    const sluice_request *reqs;
    size_t n;
    atomic_size_t next;          /* the next item to claim */
    sluice_response **outs;
    int *codes;
} batch;

/* Claims and runs items until none is left; run by helpers and the caller. */
static void batch_work(void *arg)
{
    batch *b = arg;
    size_t i;

    while ((i = atomic_fetch_add_explicit(&b->next, 1, memory_order_relaxed)) < b->n)
        b->codes[i] = sluice_client_do(b->client, &b->reqs[i], &b->outs[i], NULL);
}

/* Queues up to n helper tasks without waiting for space; returns how many
 * were queued (fewer when the queue is full or memory short). */
static size_t start_helpers(sluice_executor *ex, batch *b, sluice_future **helpers, size_t n)
{
    size_t k;

    for (k = 0; k < n; k++) {
        helpers[k] = submit(ex, batch_work, b, NULL, NULL, 0, NULL);
        if (!helpers[k])
            break;
    }
    return k;
}

/* A helper still queued is cancelled; a running one is waited for. */
static void finish_helpers(sluice_future **helpers, size_t n)
{
    size_t k;

    for (k = 0; k < n; k++) {
        if (sluice_future_cancel(helpers[k]) != 0)
            sluice_future_wait(helpers[k], -1, NULL, NULL);
        sluice_future_free(helpers[k]);
    }
}

static int batch_closed(sluice_executor *ex, size_t n, int *codes)
{
    int closed = 1;
    size_t i;

    if (!inherited(ex)) {
        pthread_mutex_lock(&ex->mu);
        closed = ex->closing;
        pthread_mutex_unlock(&ex->mu);
    }
    for (i = 0; closed && i < n; i++)
        codes[i] = SLUICE_ECLOSED;
    return closed;
}

int sluice_batch(sluice_executor *ex, sluice_client *c, const sluice_request *reqs, size_t n,
                 int max_concurrency, sluice_response **outs, int *codes)
{
    batch b = {c, reqs, n, 0, outs, codes};
    sluice_future **helpers = NULL;
    size_t i, want, started = 0;

    if (!ex || !c || (!reqs && n) || (n && (!outs || !codes)) || max_concurrency < 0)
        return SLUICE_EINVAL;
    for (i = 0; i < n; i++) {
        outs[i] = NULL;
        codes[i] = SLUICE_ECANCELED;
    }
    if (n == 0)
        return 0;
    if (batch_closed(ex, n, codes))
        return SLUICE_ECLOSED;
    want = (size_t)(max_concurrency ? max_concurrency : ex->nthreads);
    want = (want < n ? want : n) - 1;
    if (want && (helpers = sl_calloc(want, sizeof *helpers)))
        started = start_helpers(ex, &b, helpers, want);
    batch_work(&b);
    if (helpers)
        finish_helpers(helpers, started);
    sl_free(helpers);
    return 0;
}
