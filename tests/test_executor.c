/* The executor: tasks run exactly once, the bounded queue pushes back,
 * futures time out, cancel and outlive their work safely, freeing the
 * executor drains or cancels, and requests and batches go through the real
 * client to the shared mock API. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

/* A task that blocks its worker until the test opens the gate. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
} gate;

static void gate_init(gate *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void gate_destroy(gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static void gate_task(void *arg)
{
    gate *g = arg;

    pthread_mutex_lock(&g->mu);
    g->entered++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_await_entered(gate *g, int n)
{
    pthread_mutex_lock(&g->mu);
    while (g->entered < n)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static atomic_int counter;

static void count_task(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void noop_task(void *arg)
{
}

/* ---- every task exactly once ------------------------------------------- */

#define NTASKS 10000

static void test_executor_tasks_run_exactly_once(void)
{
    static atomic_int runs[NTASKS];
    static sluice_future *futs[NTASKS];
    sluice_executor *ex = sluice_executor_new(8, 256, NULL);
    int i, once = 0, ok = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    for (i = 0; i < NTASKS; i++) {
        atomic_store(&runs[i], 0);
        futs[i] = sluice_executor_run(ex, count_task, &runs[i], -1, NULL);
        /* Half the futures are dropped at once: the work still runs. */
        if (futs[i] && i % 2) {
            sluice_future_free(futs[i]);
            futs[i] = NULL;
            ok++;
        }
    }
    for (i = 0; i < NTASKS; i += 2) {
        ok += futs[i] && sluice_future_wait(futs[i], -1, NULL, NULL) == 0;
        sluice_future_free(futs[i]);
    }
    sluice_executor_free(ex);
    for (i = 0; i < NTASKS; i++)
        once += atomic_load(&runs[i]) == 1;
    CU_ASSERT_EQUAL(ok, NTASKS);
    CU_ASSERT_EQUAL(once, NTASKS);
}

/* ---- backpressure -------------------------------------------------------- */

typedef struct blocked_run {
    sluice_executor *ex;
    sluice_future *f;
    sluice_error err;
} blocked_run;

static void *run_forever_thread(void *arg)
{
    blocked_run *b = arg;

    b->f = sluice_executor_run(b->ex, count_task, &counter, -1, &b->err);
    return NULL;
}

static void test_executor_backpressure(void)
{
    sluice_executor *ex = sluice_executor_new(1, 2, NULL);
    sluice_request req = {.path = "/json"};
    sluice_future *g, *q1, *q2, *f;
    sluice_error err = {0};
    blocked_run b = {0};
    pthread_t th;
    int64_t t0;
    gate gt;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    gate_init(&gt);
    atomic_store(&counter, 0);
    g = sluice_executor_run(ex, gate_task, &gt, -1, NULL);
    gate_await_entered(&gt, 1);
    q1 = sluice_executor_run(ex, count_task, &counter, -1, NULL);
    q2 = sluice_executor_run(ex, count_task, &counter, -1, NULL);
    CU_ASSERT_PTR_NOT_NULL(q1);
    CU_ASSERT_PTR_NOT_NULL(q2);
    /* Full: run waits its timeout, then gives up. */
    t0 = tu_now_ms();
    f = sluice_executor_run(ex, count_task, &counter, 150, &err);
    CU_ASSERT_PTR_NULL(f);
    CU_ASSERT_EQUAL(err.code, SLUICE_EQUEUEFULL);
    CU_ASSERT(tu_now_ms() - t0 >= 140);
    /* try_submit and a zero timeout do not wait at all (the client is
     * never touched: the queue refuses first).  Nothing frees a slot: a
     * zero taken for "forever" would hang here, one taken for some default
     * wait shows on the clock; the bound is room for a loaded host. */
    t0 = tu_now_ms();
    CU_ASSERT_PTR_NULL(sluice_try_submit(ex, (sluice_client *)&req, &req, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EQUEUEFULL);
    CU_ASSERT_PTR_NULL(sluice_executor_run(ex, count_task, &counter, 0, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EQUEUEFULL);
    CU_ASSERT(tu_now_ms() - t0 < 500);
    /* A caller willing to wait gets in once the worker frees a slot. */
    b.ex = ex;
    pthread_create(&th, NULL, run_forever_thread, &b);
    gate_open(&gt);
    pthread_join(th, NULL);
    CU_ASSERT_PTR_NOT_NULL(b.f);
    CU_ASSERT_EQUAL(sluice_future_wait(b.f, -1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(sluice_future_wait(q1, -1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(sluice_future_wait(q2, -1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(atomic_load(&counter), 3);
    sluice_future_free(b.f);
    sluice_future_free(q1);
    sluice_future_free(q2);
    sluice_future_free(g);
    sluice_executor_free(ex);
    gate_destroy(&gt);
}

/* ---- futures ------------------------------------------------------------- */

static void test_executor_wait_timeout_work_continues(void)
{
    sluice_executor *ex = sluice_executor_new(2, 8, NULL);
    sluice_error err = {0};
    sluice_response *out = (sluice_response *)&err;
    sluice_future *f;
    int64_t t0;
    gate g;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    gate_init(&g);
    f = sluice_executor_run(ex, gate_task, &g, -1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    t0 = tu_now_ms();
    CU_ASSERT_EQUAL(sluice_future_wait(f, 50, &out, &err), SLUICE_ETIMEDOUT);
    CU_ASSERT(tu_now_ms() - t0 >= 45);
    CU_ASSERT_EQUAL(err.code, SLUICE_ETIMEDOUT);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(sluice_future_wait(f, 0, NULL, NULL), SLUICE_ETIMEDOUT);
    gate_open(&g);
    CU_ASSERT_EQUAL(sluice_future_wait(f, -1, &out, &err), 0);
    CU_ASSERT_EQUAL(err.code, 0);
    CU_ASSERT_EQUAL(g.entered, 1);
    /* Waiting again gives the same code. */
    CU_ASSERT_EQUAL(sluice_future_wait(f, 0, NULL, NULL), 0);
    sluice_future_free(f);
    sluice_executor_free(ex);
    gate_destroy(&g);
}

static void test_executor_future_freed_before_completion(void)
{
    sluice_executor *ex = sluice_executor_new(1, 8, NULL);
    sluice_future *f, *q;
    gate g;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    gate_init(&g);
    atomic_store(&counter, 0);
    f = sluice_executor_run(ex, gate_task, &g, -1, NULL);
    q = sluice_executor_run(ex, count_task, &counter, -1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    gate_await_entered(&g, 1);
    sluice_future_free(f);      /* running */
    sluice_future_free(q);      /* queued */
    gate_open(&g);
    sluice_executor_free(ex);   /* drains: q still runs */
    CU_ASSERT_EQUAL(atomic_load(&counter), 1);
    gate_destroy(&g);
}

static void test_executor_cancel_queued(void)
{
    sluice_executor *ex = sluice_executor_new(1, 8, NULL);
    atomic_int ran_a = 0, ran_b = 0;
    sluice_future *g, *a, *b;
    sluice_error err = {0};
    gate gt;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    gate_init(&gt);
    g = sluice_executor_run(ex, gate_task, &gt, -1, NULL);
    gate_await_entered(&gt, 1);
    a = sluice_executor_run(ex, count_task, &ran_a, -1, NULL);
    b = sluice_executor_run(ex, count_task, &ran_b, -1, NULL);
    CU_ASSERT_EQUAL(sluice_future_cancel(b), 0);
    CU_ASSERT_EQUAL(sluice_future_wait(b, 0, NULL, &err), SLUICE_ECANCELED);
    CU_ASSERT_EQUAL(err.code, SLUICE_ECANCELED);
    CU_ASSERT_EQUAL(sluice_future_cancel(b), SLUICE_EINVAL);  /* done already */
    CU_ASSERT_EQUAL(sluice_future_cancel(g), SLUICE_EINVAL);  /* running */
    gate_open(&gt);
    CU_ASSERT_EQUAL(sluice_future_wait(g, -1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(sluice_future_wait(a, -1, NULL, NULL), 0);
    sluice_executor_free(ex);
    CU_ASSERT_EQUAL(atomic_load(&ran_a), 1);
    CU_ASSERT_EQUAL(atomic_load(&ran_b), 0);
    /* Futures stay usable after the executor is gone. */
    CU_ASSERT_EQUAL(sluice_future_wait(b, -1, NULL, NULL), SLUICE_ECANCELED);
    CU_ASSERT_EQUAL(sluice_future_cancel(a), SLUICE_EINVAL);
    sluice_future_free(a);
    sluice_future_free(b);
    sluice_future_free(g);
    gate_destroy(&gt);
}

/* ---- freeing the executor ------------------------------------------------ */

typedef struct freer {
    sluice_executor *ex;
    gate *g;
    int probes;             /* tasks queued before free was seen */
    sluice_error err;
} freer;

/* Submits until the executor says it is closing, then lets the blocked
 * worker go: everything queued before that point met a closing executor. */
static void *open_when_closed_thread(void *arg)
{
    freer *fr = arg;
    sluice_future *f;

    for (;;) {
        f = sluice_executor_run(fr->ex, noop_task, NULL, 0, &fr->err);
        if (f) {
            fr->probes++;
            sluice_future_free(f);
        } else if (fr->err.code == SLUICE_ECLOSED) {
            break;
        }
        usleep(1000);
    }
    gate_open(fr->g);
    return NULL;
}

#define NQUEUED 50

static void free_with_queue(int cancel, atomic_int *ran, int *codes)
{
    sluice_executor_opts o;
    sluice_future *futs[NQUEUED], *g;
    sluice_executor *ex;
    freer fr = {0};
    pthread_t th;
    gate gt;
    int i;

    sluice_executor_opts_init(&o);
    o.threads = 1;
    o.queue_capacity = NQUEUED + 1000;
    o.cancel_on_free = cancel;
    ex = sluice_executor_new_opts(&o, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    gate_init(&gt);
    g = sluice_executor_run(ex, gate_task, &gt, -1, NULL);
    gate_await_entered(&gt, 1);
    for (i = 0; i < NQUEUED; i++)
        futs[i] = sluice_executor_run(ex, count_task, ran, -1, NULL);
    fr.ex = ex;
    fr.g = &gt;
    pthread_create(&th, NULL, open_when_closed_thread, &fr);
    sluice_executor_free(ex);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(fr.err.code, SLUICE_ECLOSED);
    CU_ASSERT_EQUAL(sluice_future_wait(g, -1, NULL, NULL), 0);
    for (i = 0; i < NQUEUED; i++) {
        codes[i] = sluice_future_wait(futs[i], -1, NULL, NULL);
        sluice_future_free(futs[i]);
    }
    sluice_future_free(g);
    gate_destroy(&gt);
}

static void test_executor_free_drains_queue(void)
{
    atomic_int ran = 0;
    int codes[NQUEUED], i, zero = 0;

    free_with_queue(0, &ran, codes);
    for (i = 0; i < NQUEUED; i++)
        zero += codes[i] == 0;
    CU_ASSERT_EQUAL(zero, NQUEUED);
    CU_ASSERT_EQUAL(atomic_load(&ran), NQUEUED);
}

static void test_executor_free_cancels_queue(void)
{
    atomic_int ran = 0;
    int codes[NQUEUED], i, canceled = 0;

    free_with_queue(1, &ran, codes);
    for (i = 0; i < NQUEUED; i++)
        canceled += codes[i] == SLUICE_ECANCELED;
    CU_ASSERT_EQUAL(canceled, NQUEUED);
    CU_ASSERT_EQUAL(atomic_load(&ran), 0);
}

/* A submitter blocked on a full queue is told the executor closed. */
static void test_executor_free_wakes_blocked_submitter(void)
{
    sluice_executor_opts o;
    sluice_executor *ex;
    sluice_future *g, *q;
    blocked_run b = {0};
    freer fr = {0};
    pthread_t th, opener;
    gate gt;

    sluice_executor_opts_init(&o);
    o.threads = 1;
    o.queue_capacity = 1;
    o.cancel_on_free = 1;
    ex = sluice_executor_new_opts(&o, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    gate_init(&gt);
    g = sluice_executor_run(ex, gate_task, &gt, -1, NULL);
    gate_await_entered(&gt, 1);
    q = sluice_executor_run(ex, noop_task, NULL, -1, NULL);
    b.ex = ex;
    pthread_create(&th, NULL, run_forever_thread, &b);
    fr.ex = ex;
    fr.g = &gt;
    pthread_create(&opener, NULL, open_when_closed_thread, &fr);
    sluice_executor_free(ex);
    pthread_join(th, NULL);
    pthread_join(opener, NULL);
    CU_ASSERT_PTR_NULL(b.f);
    CU_ASSERT_EQUAL(b.err.code, SLUICE_ECLOSED);
    CU_ASSERT_EQUAL(sluice_future_wait(q, -1, NULL, NULL), SLUICE_ECANCELED);
    sluice_future_free(q);
    sluice_future_free(g);
    gate_destroy(&gt);
}

/* ---- tasks that use their own executor ----------------------------------- */

typedef struct nested {
    sluice_executor *ex;
    atomic_int inner;
    int code;
} nested;

static void nested_task(void *arg)
{
    nested *n = arg;
    sluice_future *f = sluice_executor_run(n->ex, count_task, &n->inner, -1, NULL);

    n->code = sluice_future_wait(f, -1, NULL, NULL);
    sluice_future_free(f);
    /* Freeing the executor from its own worker is refused, not a hang. */
    sluice_executor_free(n->ex);
}

static void test_executor_task_submits_to_own_executor(void)
{
    nested n = {0};
    sluice_future *f;

    n.ex = sluice_executor_new(2, 4, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(n.ex);
    f = sluice_executor_run(n.ex, nested_task, &n, -1, NULL);
    CU_ASSERT_EQUAL(sluice_future_wait(f, -1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(n.code, 0);
    CU_ASSERT_EQUAL(atomic_load(&n.inner), 1);
    sluice_future_free(f);
    sluice_executor_free(n.ex);
}

/* ---- bad input, allocation failure -------------------------------------- */

static void test_executor_bad_input(void)
{
    sluice_executor *ex;
    sluice_error err = {0};
    sluice_request req = {.path = "/x", .nheaders = 2};
    sluice_executor_opts o;

    CU_ASSERT_PTR_NULL(sluice_executor_new(-1, 8, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(sluice_executor_new(100000, 8, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(sluice_executor_new(2, -5, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    sluice_executor_opts_init(&o);
    CU_ASSERT_EQUAL(o.threads, 4);
    CU_ASSERT_EQUAL(o.queue_capacity, 1024);
    CU_ASSERT_EQUAL(o.cancel_on_free, 0);
    sluice_executor_opts_init(NULL);
    ex = sluice_executor_new(0, 0, &err);   /* defaults */
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    err.code = 0;
    CU_ASSERT_PTR_NULL(sluice_executor_run(NULL, noop_task, NULL, -1, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(sluice_executor_run(ex, NULL, NULL, -1, &err));
    CU_ASSERT_PTR_NULL(sluice_submit(ex, NULL, &req, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(sluice_submit(ex, (sluice_client *)&req, NULL, &err));
    /* A count without its array is refused before anything is queued. */
    err.code = 0;
    CU_ASSERT_PTR_NULL(sluice_submit(ex, (sluice_client *)&req, &req, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    req.nheaders = 0;
    req.body_len = 4;
    CU_ASSERT_PTR_NULL(sluice_try_submit(ex, (sluice_client *)&req, &req, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_future_wait(NULL, 0, NULL, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_future_cancel(NULL), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_batch(NULL, NULL, NULL, 0, 0, NULL, NULL), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_batch(ex, (sluice_client *)&req, &req, 1, 0, NULL, NULL),
                    SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_batch(ex, (sluice_client *)&req, &req, 1, -1, NULL, NULL),
                    SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sluice_batch(ex, (sluice_client *)&req, NULL, 0, 0, NULL, NULL), 0);
    sluice_future_free(NULL);
    sluice_executor_free(NULL);
    sluice_executor_free(ex);
}

static void test_executor_alloc_failure_loop(void)
{
    long n;
    int done = 0;

    for (n = 1; !done && n < 100; n++) {
        sluice_error err = {0};
        sluice_executor *ex;
        sluice_future *f = NULL;

        atomic_store(&counter, 0);
        tu_alloc_install(n, 0);
        ex = sluice_executor_new(2, 4, &err);
        if (ex) {
            f = sluice_executor_run(ex, count_task, &counter, -1, &err);
            if (f) {
                CU_ASSERT_EQUAL(sluice_future_wait(f, -1, NULL, NULL), 0);
            } else {
                CU_ASSERT_EQUAL(err.code, SLUICE_ENOMEM);
            }
            sluice_future_free(f);
            sluice_executor_free(ex);
            done = f && tu_alloc_count() < n;
        } else {
            CU_ASSERT_EQUAL(err.code, SLUICE_ENOMEM);
        }
        CU_ASSERT_EQUAL(atomic_load(&counter), f ? 1 : 0);
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        tu_alloc_uninstall();
    }
    CU_ASSERT(done);
}

/* ---- requests through the real client and the shared mock API ---------- */

/* A loopback port nothing listens on: bound, read, closed. */
static int refused_port(void)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* A factory and a client on `base` with one attempt per call. */
static sluice_client *http_client(sluice_factory **fp, const char *service, const char *base)
{
    sluice_client_opts o;
    sluice_error err = {0};
    sluice_client *c;

    *fp = sluice_factory_new(NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*fp);
    sluice_client_opts_init(&o);
    o.base_url = base;
    o.retry.max_retries = SLUICE_OFF;
    o.breaker.disabled = 1;
    c = sluice_factory_client(*fp, service, &o, &err);
    if (!c)
        fprintf(stderr, "\n  client: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    return c;
}

static void test_executor_batch_order_and_item_errors(void)
{
    const char *base = tu_http_base();
    sluice_request reqs[5] = {{.path = "/status/201"}, {.path = "/status/500"},
                              {.path = "/delay/3000", .timeout_ms = 300},
                              {.path = "/json"}, {.path = "/status/204"}};
    const int want_status[5] = {201, 500, 0, 200, 204};
    sluice_response *outs[5];
    sluice_factory *f, *f2;
    sluice_client *c, *dead;
    sluice_executor *ex;
    char url[64];
    int codes[5], i;

    TU_REQUIRE(base);
    c = http_client(&f, "batch", base);
    ex = sluice_executor_new(3, 16, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    CU_ASSERT_EQUAL(sluice_batch(ex, c, reqs, 5, 2, outs, codes), 0);
    for (i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(codes[i], i == 2 ? SLUICE_ETIMEDOUT : 0);
        CU_ASSERT_EQUAL(outs[i] ? sluice_response_status(outs[i]) : 0, want_status[i]);
        sluice_response_free(outs[i]);
    }
    /* A refused port fails each item on its own, in place. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d", refused_port());
    dead = http_client(&f2, "refused", url);
    CU_ASSERT_EQUAL(sluice_batch(ex, dead, reqs, 2, 0, outs, codes), 0);
    CU_ASSERT_EQUAL(codes[0], SLUICE_ECONNECT);
    CU_ASSERT_EQUAL(codes[1], SLUICE_ECONNECT);
    CU_ASSERT_PTR_NULL(outs[0]);
    CU_ASSERT_PTR_NULL(outs[1]);
    sluice_executor_free(ex);
    sluice_factory_free(f2);
    sluice_factory_free(f);
}

static void test_executor_submit_copies_request(void)
{
    const char *base = tu_http_base();
    char path[32], hname[16], hval[16], body[16], qval[16];
    sluice_header h[1] = {{hname, hval}}, q[1] = {{"probe", qval}};
    sluice_request req = {0};
    sluice_response *r = NULL, *again;
    sluice_executor *ex;
    sluice_future *fut;
    sluice_factory *f;
    sluice_client *c;
    const char *got;
    size_t len;

    TU_REQUIRE(base);
    c = http_client(&f, "copy", base);
    ex = sluice_executor_new(1, 4, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ex);
    snprintf(path, sizeof path, "/echo");
    snprintf(hname, sizeof hname, "X-Probe");
    snprintf(hval, sizeof hval, "p-123");
    snprintf(body, sizeof body, "payload");
    snprintf(qval, sizeof qval, "q-456");
    req.method = "POST";
    req.path = path;
    req.headers = h;
    req.nheaders = 1;
    req.body = body;
    req.body_len = strlen(body);
    req.query = q;
    req.nquery = 1;
    fut = sluice_submit(ex, c, &req, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fut);
    /* The caller's memory changes at once; the queued copy must not. */
    memset(path, 'z', sizeof path - 1);
    memset(hval, 'z', sizeof hval - 1);
    memset(body, 'z', sizeof body - 1);
    memset(qval, 'z', sizeof qval - 1);
    CU_ASSERT_EQUAL(sluice_future_wait(fut, -1, &r, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(sluice_response_status(r), 200);
    got = sluice_response_body(r, &len);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "payload"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "p-123"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "q-456"));
    CU_ASSERT_PTR_NULL(strstr(got, "zzz"));
    /* The response moves out once. */
    CU_ASSERT_EQUAL(sluice_future_wait(fut, 0, &again, NULL), 0);
    CU_ASSERT_PTR_NULL(again);
    sluice_response_free(r);
    sluice_future_free(fut);
    /* A future dropped before its response arrived: the worker frees it. */
    req.method = NULL;
    req.path = "/delay/100";
    req.nheaders = 0;
    req.body = NULL;
    req.body_len = 0;
    req.nquery = 0;
    fut = sluice_submit(ex, c, &req, NULL);
    CU_ASSERT_PTR_NOT_NULL(fut);
    sluice_future_free(fut);
    sluice_executor_free(ex);
    sluice_factory_free(f);
}

typedef struct worker_batch {
    sluice_executor *ex;
    sluice_client *c;
    int rc, codes[6];
} worker_batch;

static void batch_task(void *arg)
{
    worker_batch *w = arg;
    sluice_request reqs[6] = {{.path = "/json"}, {.path = "/json"}, {.path = "/json"},
                              {.path = "/json"}, {.path = "/json"}, {.path = "/json"}};
    sluice_response *outs[6];
    int i;

    w->rc = sluice_batch(w->ex, w->c, reqs, 6, 0, outs, w->codes);
    for (i = 0; i < 6; i++)
        sluice_response_free(outs[i]);
}

/* On the only worker of its executor, a batch runs inline: no deadlock. */
static void test_executor_batch_from_worker(void)
{
    const char *base = tu_http_base();
    worker_batch w = {0};
    sluice_future *fut;
    sluice_factory *f;
    int i;

    TU_REQUIRE(base);
    w.c = http_client(&f, "inworker", base);
    w.ex = sluice_executor_new(1, 2, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w.ex);
    fut = sluice_executor_run(w.ex, batch_task, &w, -1, NULL);
    CU_ASSERT_EQUAL(sluice_future_wait(fut, 30000, NULL, NULL), 0);
    CU_ASSERT_EQUAL(w.rc, 0);
    for (i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(w.codes[i], 0);
    sluice_future_free(fut);
    sluice_executor_free(w.ex);
    sluice_factory_free(f);
}

static CU_TestInfo tests[] = {
    {"test_executor_tasks_run_exactly_once", test_executor_tasks_run_exactly_once},
    {"test_executor_backpressure", test_executor_backpressure},
    {"test_executor_wait_timeout_work_continues", test_executor_wait_timeout_work_continues},
    {"test_executor_future_freed_before_completion", test_executor_future_freed_before_completion},
    {"test_executor_cancel_queued", test_executor_cancel_queued},
    {"test_executor_free_drains_queue", test_executor_free_drains_queue},
    {"test_executor_free_cancels_queue", test_executor_free_cancels_queue},
    {"test_executor_free_wakes_blocked_submitter", test_executor_free_wakes_blocked_submitter},
    {"test_executor_task_submits_to_own_executor", test_executor_task_submits_to_own_executor},
    {"test_executor_bad_input", test_executor_bad_input},
    {"test_executor_alloc_failure_loop", test_executor_alloc_failure_loop},
    {"test_executor_batch_order_and_item_errors", test_executor_batch_order_and_item_errors},
    {"test_executor_submit_copies_request", test_executor_submit_copies_request},
    {"test_executor_batch_from_worker", test_executor_batch_from_worker},
    CU_TEST_INFO_NULL,
};

void suite_executor(void);
void suite_executor(void)
{
    tu_add_suite("executor", tests);
}
