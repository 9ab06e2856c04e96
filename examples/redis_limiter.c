/* redis_limiter: one rate limit shared by every process that uses the same
 * Redis, service and path.
 *
 * The client admits 5 calls a second with a burst of 2; the decision is made
 * in Redis (GCRA, one round trip), so two copies of this program started
 * together get 5 a second between them, not each.  Calls wait for their
 * turn (up to the call's deadline) unless rate_limit.fail_fast is set.
 * With SLUICE_FAIL_CLOSED an unreachable Redis fails calls with
 * SLUICE_ELIMITER instead of falling back to a local limit.
 *
 * usage: redis_limiter [BASE_URL] [REDIS_URL] [CALLS]
 *   defaults http://127.0.0.1:8080, redis://127.0.0.1:6379 and 8
 */
#define _POSIX_C_SOURCE 200809L  /* clock_gettime */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <sluice.h>

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int i, calls = argc > 3 ? atoi(argv[3]) : 8, rc = 0;
    struct sluice_factory_stats st;
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_response *r;
    sluice_error err;
    double t0;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.redis_url = argc > 2 ? argv[2] : "redis://127.0.0.1:6379";
    fo.limiter_prefix = "sluice-example";
    fo.limiter_fail_mode = SLUICE_FAIL_CLOSED;
    sluice_factory *f = sluice_factory_new(&fo, &err);
    sluice_client_opts_init(&co);
    co.base_url = argc > 1 ? argv[1] : "http://127.0.0.1:8080";
    co.rate_limit.rate = 5;          /* per period_ms (default 1000) */
    co.rate_limit.burst = 2;
    sluice_client *c = f ? sluice_factory_client(f, "limited", &co, &err) : NULL;

    t0 = now_s();
    for (i = 1; c && i <= calls && rc == 0; i++)
        if ((rc = sluice_get(c, "/json", &r, &err)) == 0) {
            printf("call %d admitted at %.2f s: status %d\n", i, now_s() - t0,
                   sluice_response_status(r));
            sluice_response_free(r);
        }
    if (!c || rc != 0) {
        fprintf(stderr, "redis_limiter: %s: %s\n", sluice_err_name(err.code), err.msg);
        sluice_factory_free(f);
        return 1;
    }
    sluice_factory_stats(f, &st);
    printf("%d calls in %.2f s; limiter %s: %llu admitted, %llu waits\n", calls,
           now_s() - t0, st.limiter_shared ? "shared through Redis" : "in-process",
           (unsigned long long)st.limiter.allowed, (unsigned long long)st.limiter.waits);
    sluice_factory_free(f);
    return 0;
}
