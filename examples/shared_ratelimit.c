/* shared_ratelimit: a fleet of processes under ONE rate limit.
 *
 * The program forks N processes.  Each is what one instance of a real
 * service would be: its own factory, its own worker threads, all calling
 * the same upstream through a client limited to 100 requests/s with a
 * burst of 10.  With a Redis URL the limit is shared: the whole fleet gets
 * 100/s, however many processes it has.  Without one, every process has
 * its own in-process limit and the fleet gets N times the quota; the
 * program runs either way to show the difference.
 *
 * Each process reports its admitted calls through a pipe; the parent
 * prints them, the total, and the most the limit allows over the run
 * (burst + rate x seconds).  The upstream's own count of the calls it
 * received is printed too.
 *
 * usage: shared_ratelimit BASE_URL [processes] [threads] [seconds] [REDIS_URL]
 *   defaults 4 processes, 4 threads each, 3 seconds; REDIS_URL defaults to
 *   $SLUICE_REDIS_URL, and "-" means none (each process limits itself).
 *   e.g. shared_ratelimit http://127.0.0.1:8080 4 4 3 redis://127.0.0.1:6379
 */
#define _POSIX_C_SOURCE 200809L  /* fork, pipes, unsetenv, clock_gettime */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sluice.h>

#define RATE 100.0     /* requests per second for the whole fleet */
#define BURST 10
#define MAX_PROCS 64
#define MAX_THREADS 64

struct config {
    const char *base;
    const char *redis_url;     /* NULL: in-process limit */
    int procs, threads;
    double seconds;
    char path[64];             /* /count/<unique>: the upstream counts our calls */
};

/* What a child writes to its pipe: one fixed-size record (atomic, it is
 * smaller than PIPE_BUF). */
struct report {
    long admitted;             /* calls the limiter let through and that got a response */
    long errors;               /* any other failure */
    long fallbacks;            /* decisions made locally: Redis was unreachable */
    int shared;                /* 1 when the limiter was Redis */
};

/* ------------------------------------------------------------------------ */
/* A child: one instance of the service                                     */
/* ------------------------------------------------------------------------ */

struct worker {
    pthread_t tid;
    sluice_client *client;
    const char *path;
    double end;                /* CLOCK_MONOTONIC seconds */
    struct report r;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Calls as fast as the limiter admits until the end of the run.  Each
 * call's deadline is the end of the run, so no token is taken after it,
 * and a call the limiter refuses could not have been admitted before the
 * end: the rest of the run is spoken for, and the thread stops. */
static void *work(void *arg)
{
    struct worker *w = arg;
    double left;

    while ((left = w->end - now_s()) > 0.001) {
        sluice_request req = {.path = w->path, .timeout_ms = (int)(left * 1000)};
        sluice_response *resp = NULL;
        int rc = sluice_client_do(w->client, &req, &resp, NULL);

        sluice_response_free(resp);
        if (rc == 0) {
            w->r.admitted++;
        } else if (rc == SLUICE_ERATELIMITED) {
            break;
        } else if (rc != SLUICE_ETIMEDOUT) {   /* cut by the end of the run: not an error */
            w->r.errors++;
        }
    }
    return NULL;
}

static sluice_client *limited_client(sluice_factory *f, const char *base)
{
    sluice_client_opts co;
    sluice_error err;
    sluice_client *c;

    sluice_client_opts_init(&co);
    co.base_url = base;
    co.rate_limit.rate = RATE;
    co.rate_limit.period_ms = 1000;
    co.rate_limit.burst = BURST;
    /* One call, one token: coalesced followers take none, and a retry
     * takes another, so both are off to count calls one for one. */
    co.disable_coalescing = 1;
    co.retry.max_retries = SLUICE_OFF;
    c = sluice_factory_client(f, "shared-quota", &co, &err);
    if (!c)
        fprintf(stderr, "shared_ratelimit: client: %s\n", err.msg);
    return c;
}

static sluice_factory *instance_factory(const struct config *cfg)
{
    sluice_factory_opts fo;
    sluice_error err;
    sluice_factory *f;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.redis_url = cfg->redis_url;
    /* A decision waits this long for Redis before the fallback below
     * decides locally.  The default (50 ms) suits a production host; this
     * example also runs on loaded test machines and under sanitizers. */
    fo.redis_timeout_ms = 250;
    /* Should Redis become unreachable, each instance falls back to its
     * share of the limit, so the fleet still stays near it. */
    fo.limiter_fail_mode = SLUICE_FAIL_LOCAL;
    fo.expected_instances = cfg->procs;
    f = sluice_factory_new(&fo, &err);
    if (!f)
        fprintf(stderr, "shared_ratelimit: factory: %s\n", err.msg);
    return f;
}

/* Reads until `fd` reaches end of file: the parent's start signal. */
static void wait_for_go(int fd)
{
    char c;

    for (;;) {
        ssize_t n = read(fd, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR))
            return;
    }
}

/* Sets up, says "ready", waits for every sibling to be ready too, runs,
 * reports.  Returns the exit status. */
static int child_main(const struct config *cfg, int go_fd, int report_fd)
{
    struct worker w[MAX_THREADS];
    struct sluice_factory_stats st;
    struct report total = {0};
    sluice_factory *f = instance_factory(cfg);
    sluice_client *c = f ? limited_client(f, cfg->base) : NULL;
    double end;
    int i, started;

    if (!c || write(report_fd, "R", 1) != 1) {
        sluice_factory_free(f);
        return 1;
    }
    wait_for_go(go_fd);
    end = now_s() + cfg->seconds;
    for (started = 0; started < cfg->threads; started++) {
        w[started] = (struct worker){.client = c, .path = cfg->path, .end = end};
        if (pthread_create(&w[started].tid, NULL, work, &w[started]) != 0)
            break;
    }
    for (i = 0; i < started; i++) {
        pthread_join(w[i].tid, NULL);
        total.admitted += w[i].r.admitted;
        total.errors += w[i].r.errors;
    }
    sluice_factory_stats(f, &st);
    total.shared = st.limiter_shared;
    total.fallbacks = (long)st.limiter.fallbacks;
    sluice_factory_free(f);
    return write(report_fd, &total, sizeof total) == (ssize_t)sizeof total ? 0 : 1;
}

/* ------------------------------------------------------------------------ */
/* The parent                                                               */
/* ------------------------------------------------------------------------ */

struct child {
    pid_t pid;
    int fd;                    /* read end of its report pipe */
    struct report r;
    int got;
};

/* Forks the children.  The parent is still single-threaded here, as fork
 * requires: no factory exists in it yet. */
static int spawn_children(const struct config *cfg, struct child *ch, int go[2])
{
    int i;

    for (i = 0; i < cfg->procs; i++) {
        int p[2];
        if (pipe(p) != 0)
            return -1;
        ch[i].pid = fork();
        if (ch[i].pid < 0)
            return -1;
        if (ch[i].pid == 0) {
            close(go[1]);
            close(p[0]);
            exit(child_main(cfg, go[0], p[1]));
        }
        close(p[1]);
        ch[i].fd = p[0];
    }
    return 0;
}

/* Reads exactly `len` bytes from fd before the deadline: 0, or -1. */
static int read_full(int fd, void *buf, size_t len, double deadline)
{
    char *p = buf;

    while (len) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int ms = (int)((deadline - now_s()) * 1000);
        ssize_t n;

        if (ms <= 0 || poll(&pfd, 1, ms) <= 0)
            return -1;
        n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Ready from every child, then start them all at once (closing the "go"
 * pipe wakes every reader together), then their reports. */
static int run_fleet(const struct config *cfg, struct child *ch, int go[2])
{
    double deadline = now_s() + 30;
    char ready;
    int i;

    close(go[0]);
    for (i = 0; i < cfg->procs; i++)
        if (read_full(ch[i].fd, &ready, 1, deadline) != 0) {
            fprintf(stderr, "shared_ratelimit: process %d did not start\n", i + 1);
            return -1;
        }
    close(go[1]);
    deadline = now_s() + cfg->seconds + 30;
    for (i = 0; i < cfg->procs; i++) {
        ch[i].got = read_full(ch[i].fd, &ch[i].r, sizeof ch[i].r, deadline) == 0;
        if (!ch[i].got)
            fprintf(stderr, "shared_ratelimit: process %d sent no report\n", i + 1);
    }
    return 0;
}

/* Reaps every child; kills those that outlived a failed run.  Returns the
 * number that did not exit 0. */
static int reap_children(struct child *ch, int n)
{
    int i, failed = 0, status;

    for (i = 0; i < n; i++) {
        if (ch[i].pid <= 0)
            continue;
        if (!ch[i].got)
            kill(ch[i].pid, SIGKILL);
        if (waitpid(ch[i].pid, &status, 0) != ch[i].pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed++;
        if (ch[i].fd >= 0)
            close(ch[i].fd);
    }
    return failed;
}

/* The upstream's count of the calls it received (GET /hits/<path>), or -1.
 * Runs after every child has exited. */
static long upstream_calls(const struct config *cfg)
{
    sluice_factory *f = sluice_factory_new(NULL, NULL);
    sluice_client_opts co;
    sluice_client *c;
    sluice_response *r = NULL;
    char hits[96];
    long n = -1;

    sluice_client_opts_init(&co);
    co.base_url = cfg->base;
    snprintf(hits, sizeof hits, "/hits%s", cfg->path);
    if (f && (c = sluice_factory_client(f, "mockapi-stats", &co, NULL)) &&
        sluice_get(c, hits, &r, NULL) == 0 && sluice_response_status(r) == 200)
        n = strtol(sluice_response_body(r, NULL), NULL, 10);
    sluice_response_free(r);
    sluice_factory_free(f);
    return n;
}

/* A URL fit to print: the password, if any, left out. */
static void print_redis(const char *url)
{
    const char *at = strrchr(url, '@'), *scheme = strstr(url, "://");

    if (at && scheme)
        printf("%.*s***%s", (int)(scheme + 3 - url), url, at);
    else
        printf("%s", url);
}

/* The last line: what the numbers mean.  Returns the exit status. */
static int verdict(const struct config *cfg, int shared, long fallbacks, long total, long bound)
{
    if (!shared) {
        printf("result: %.1fx the fleet's quota: each process used the whole limit on its own;\n"
               "        a limiter shared through Redis keeps the fleet within it\n",
               (double)total / bound);
        return 0;
    }
    if (fallbacks) {
        printf("result: Redis was unreachable, so each process fell back to its share of the\n"
               "        limit (1/%d, fail mode LOCAL): the fleet stays near it without Redis\n",
               cfg->procs);
        return 0;
    }
    if (total <= bound) {
        printf("result: the fleet stayed within its one shared limit\n");
        return 0;
    }
    printf("result: OVER the shared limit (a bug: please report it)\n");
    return 1;
}

static int report(const struct config *cfg, const struct child *ch, long upstream)
{
    long total = 0, fallbacks = 0, bound = BURST + (long)(RATE * cfg->seconds);
    int i, shared = 1;

    for (i = 0; i < cfg->procs; i++) {
        printf("  process %d (pid %d): %5ld admitted  %6.1f/s", i + 1, (int)ch[i].pid,
               ch[i].r.admitted, ch[i].r.admitted / cfg->seconds);
        if (ch[i].r.errors)
            printf("   (%ld calls failed)", ch[i].r.errors);
        if (ch[i].r.fallbacks)
            printf("   (Redis unreachable: %ld decisions made locally)", ch[i].r.fallbacks);
        printf("\n");
        total += ch[i].r.admitted;
        shared &= ch[i].r.shared;
        fallbacks += ch[i].r.fallbacks;
    }
    printf("total admitted: %ld in %.1f s = %.1f/s; the limit allows at most %ld "
           "(burst %d + %.0f/s x %.1f s)\n",
           total, cfg->seconds, total / cfg->seconds, bound, BURST, RATE, cfg->seconds);
    if (upstream >= 0)
        printf("upstream received: %ld calls\n", upstream);
    return verdict(cfg, shared, fallbacks, total, bound);
}

static int parse_args(int argc, char **argv, struct config *cfg)
{
    const char *env = getenv("SLUICE_REDIS_URL");

    cfg->base = argc > 1 ? argv[1] : NULL;
    cfg->procs = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 4;
    cfg->threads = argc > 3 ? (int)strtol(argv[3], NULL, 10) : 4;
    cfg->seconds = argc > 4 ? strtod(argv[4], NULL) : 3;
    cfg->redis_url = argc > 5 ? argv[5] : env && *env ? env : NULL;
    if (cfg->redis_url && strcmp(cfg->redis_url, "-") == 0) {
        cfg->redis_url = NULL;
        unsetenv("SLUICE_REDIS_URL");   /* else the factory would find it */
    }
    /* A path of our own, so that the upstream's counter is ours alone. */
    snprintf(cfg->path, sizeof cfg->path, "/count/shared-ratelimit-%d", (int)getpid());
    return argc >= 2 && argc <= 6 && cfg->procs >= 1 && cfg->procs <= MAX_PROCS &&
                   cfg->threads >= 1 && cfg->threads <= MAX_THREADS && cfg->seconds > 0 &&
                   cfg->seconds <= 3600
               ? 0
               : -1;
}

int main(int argc, char **argv)
{
    static struct child ch[MAX_PROCS];
    struct config cfg;
    int go[2], i, rc = 1, failed;

    if (parse_args(argc, argv, &cfg) != 0) {
        fprintf(stderr, "usage: shared_ratelimit BASE_URL [processes 1-%d] [threads 1-%d] "
                        "[seconds] [REDIS_URL | -]\n", MAX_PROCS, MAX_THREADS);
        return 2;
    }
    for (i = 0; i < MAX_PROCS; i++)
        ch[i] = (struct child){.pid = 0, .fd = -1};
    printf("shared_ratelimit: %d processes x %d threads for %.1f s against %s\n", cfg.procs,
           cfg.threads, cfg.seconds, cfg.base);
    printf("limit: %.0f requests/s, burst %d, for the whole fleet\nlimiter: ", RATE, BURST);
    if (cfg.redis_url) {
        printf("Redis at ");
        print_redis(cfg.redis_url);
        printf(", shared by every process\n");
    } else {
        printf("in-process (no REDIS_URL argument or $SLUICE_REDIS_URL): each process has its "
               "own limit\n");
    }
    fflush(stdout);   /* the children must not inherit unwritten output */
    if (pipe(go) != 0 || spawn_children(&cfg, ch, go) != 0) {
        perror("shared_ratelimit: fork");
    } else if (run_fleet(&cfg, ch, go) == 0) {
        rc = 0;
    }
    failed = reap_children(ch, cfg.procs);
    if (rc != 0 || failed) {
        fprintf(stderr, "shared_ratelimit: %d of %d processes failed\n", failed, cfg.procs);
        return 1;
    }
    return report(&cfg, ch, upstream_calls(&cfg));
}
