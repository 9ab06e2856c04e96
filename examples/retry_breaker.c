/* retry_breaker: retries with backoff, then a circuit breaker opening,
 * with hooks printing every attempt as it happens.
 *
 * Part 1 asks /flaky/KEY?fail=2, which answers 503 twice, then 200: the
 * call retries (503 is a retryable status for a GET) and succeeds on its
 * third attempt.  Part 2 asks /status/503 until the breaker opens: then a
 * call fails at once with SLUICE_ECIRCUITOPEN, without touching the network.
 * Hooks run on the calling thread, never with a library lock held.
 *
 * usage: retry_breaker [BASE_URL]     (default http://127.0.0.1:8080)
 */
#define _POSIX_C_SOURCE 200809L  /* getpid */
#include <stdio.h>
#include <unistd.h>

#include <sluice.h>

static const char *state_name[] = {"closed", "open", "half-open"};

static void on_start(const sluice_request_info *i, void *ud)
{
    (void)ud;   /* fo.hook_ud: unused here */
    printf("  attempt %d: %s %s\n", i->attempt, i->method, i->url);
}

/* on_request_end (a response arrived) and on_request_error (none did). */
static void on_done(const sluice_request_info *i, void *ud)
{
    (void)ud;
    if (i->error)
        printf("  attempt %d: %s\n", i->attempt, sluice_err_name(i->error));
    else
        printf("  attempt %d: status %d in %.1f ms\n", i->attempt, i->status, i->duration_us / 1e3);
}

static void on_breaker(const char *svc, const char *ep, sluice_breaker_state from,
                       sluice_breaker_state to, void *ud)
{
    (void)ud;
    printf("  breaker of %s at %s: %s -> %s\n", svc, ep, state_name[from], state_name[to]);
}

int main(int argc, char **argv)
{
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_response *r;
    sluice_error err;
    char path[64];
    int i, rc;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.on_request_start = on_start;
    fo.on_request_end = on_done;
    fo.on_request_error = on_done;
    sluice_factory *f = sluice_factory_new(&fo, &err);
    sluice_client_opts_init(&co);
    co.base_url = argc > 1 ? argv[1] : "http://127.0.0.1:8080";
    co.retry.max_retries = 3;            /* up to 4 attempts a call */
    co.retry.backoff_factor_ms = 20;     /* sleeps up to 20, 40, 80 ms (full jitter) */
    co.breaker.failure_threshold = 4;    /* 4 failures in a row open it */
    co.breaker.recovery_timeout_ms = 10000;
    co.breaker.on_state_change = on_breaker;
    sluice_client *c = f ? sluice_factory_client(f, "flaky", &co, &err) : NULL;
    if (!c) {
        fprintf(stderr, "retry_breaker: %s: %s\n", sluice_err_name(err.code), err.msg);
        sluice_factory_free(f);
        return 1;
    }

    snprintf(path, sizeof path, "/flaky/retry-example-%ld?fail=2", (long)getpid());
    printf("GET %s\n", path);
    if ((rc = sluice_get(c, path, &r, &err)) == 0) {
        printf("-> status %d after %d attempts\n", sluice_response_status(r),
               sluice_response_attempts(r));
        sluice_response_free(r);
    }
    for (i = 1; rc == 0 && i <= 8; i++) {
        printf("GET /status/503 (call %d)\n", i);
        if ((rc = sluice_get(c, "/status/503", &r, &err)) == 0) {
            printf("-> status %d after %d attempts\n", sluice_response_status(r),
                   sluice_response_attempts(r));
            sluice_response_free(r);
        }
    }
    sluice_factory_free(f);
    if (rc == SLUICE_ECIRCUITOPEN) {
        printf("-> %s: %s\n", sluice_err_name(rc), err.msg);
        return 0;
    }
    fprintf(stderr, "retry_breaker: %s: %s\n", rc ? sluice_err_name(rc) : "breaker never opened",
            rc ? err.msg : "");
    return 1;
}
