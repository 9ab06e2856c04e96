/* batch: many requests over an executor's worker threads, results in input
 * order.
 *
 * sluice_batch runs n requests with at most max_concurrency in flight and
 * fills outs[i] and codes[i] for request i whatever order they finish in;
 * one item's failure never hides another's result.  The calling thread
 * runs items too.  Each response is the caller's to free.
 *
 * usage: batch [BASE_URL]     (default http://127.0.0.1:8080)
 */
#include <stdio.h>

#include <sluice.h>

#define N 6

int main(int argc, char **argv)
{
    sluice_request reqs[N] = {{.path = "/delay/200"}, {.path = "/json"},   {.path = "/delay/100"},
                              {.path = "/status/404"}, {.path = "/echo"},  {.path = "/bytes/1000"}};
    sluice_response *outs[N];
    int codes[N], i, failed = 0;
    sluice_client_opts co;
    sluice_executor *ex;
    sluice_error err;

    sluice_factory *f = sluice_factory_new(NULL, &err);
    sluice_client_opts_init(&co);
    co.base_url = argc > 1 ? argv[1] : "http://127.0.0.1:8080";
    sluice_client *c = f ? sluice_factory_client(f, "batch", &co, &err) : NULL;
    if (!c || !(ex = sluice_executor_new(4, 64, &err))) {   /* 4 workers, a queue of 64 */
        fprintf(stderr, "batch: %s: %s\n", sluice_err_name(err.code), err.msg);
        sluice_factory_free(f);
        return 1;
    }
    if (sluice_batch(ex, c, reqs, N, 4, outs, codes) != 0)
        failed = N;
    for (i = 0; i < N; i++) {
        if (codes[i] == 0)
            printf("%-12s status %d, %d attempt(s)\n", reqs[i].path, sluice_response_status(outs[i]),
                   sluice_response_attempts(outs[i]));
        else
            printf("%-12s %s: %s\n", reqs[i].path, sluice_err_name(codes[i]),
                   sluice_strerror(codes[i])), failed++;
        sluice_response_free(outs[i]);   /* NULL for a failed item: a no-op */
    }
    sluice_executor_free(ex);            /* before the factory its work uses */
    sluice_factory_free(f);
    printf("%d of %d requests failed\n", failed, N);
    return failed ? 1 : 0;
}
