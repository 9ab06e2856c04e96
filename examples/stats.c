/* stats: a client's counters and latency percentiles, then the factory's
 * metrics in Prometheus text, printed or served to one scrape.
 *
 * Stats are snapshots that allocate nothing and take no lock worth
 * mentioning: read them from any thread, as often as you like.
 * sluice_factory_metrics returns the length the whole text needs, so a
 * first call with no buffer sizes it.
 *
 * usage: stats [BASE_URL] [PORT]
 *   default http://127.0.0.1:8080; with PORT (0 = any free one) it prints
 *   "serving metrics on 127.0.0.1:PORT", answers one GET with the metrics,
 *   and exits: try `curl 127.0.0.1:PORT/metrics`.
 */
#define _POSIX_C_SOURCE 200809L  /* sockets */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sluice.h>

/* Answers one request on 127.0.0.1:port with the text: 0, or -1. */
static int serve_once(int port, const char *text, size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    socklen_t sl = sizeof sa;
    char head[160], req[4096];
    int fd = socket(AF_INET, SOCK_STREAM, 0), conn;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("stats: listen");
        return -1;
    }
    printf("serving metrics on 127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    if ((conn = accept(fd, NULL, NULL)) >= 0) {
        int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; "
                         "version=0.0.4\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", len);
        if (read(conn, req, sizeof req) > 0 && write(conn, head, (size_t)n) == n)
            (void)!write(conn, text, len);
        close(conn);
    }
    close(fd);
    return conn >= 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *paths[] = {"/json", "/delay/20", "/status/404", "/json"};
    struct sluice_client_stats cs;
    sluice_client_opts co;
    sluice_response *r;
    sluice_error err;
    size_t i, need;
    char *text;
    int rc = 0;

    sluice_factory *f = sluice_factory_new(NULL, &err);
    sluice_client_opts_init(&co);
    co.base_url = argc > 1 ? argv[1] : "http://127.0.0.1:8080";
    sluice_client *c = f ? sluice_factory_client(f, "catalog", &co, &err) : NULL;
    for (i = 0; c && i < sizeof paths / sizeof paths[0]; i++)
        if (sluice_get(c, paths[i], &r, &err) == 0)
            sluice_response_free(r);
    if (!c || sluice_client_stats(c, &cs) != 0) {
        fprintf(stderr, "stats: %s: %s\n", sluice_err_name(err.code), err.msg);
        sluice_factory_free(f);
        return 1;
    }
    printf("requests %llu: 2xx %llu, 4xx %llu, errors %llu, retries %llu\n",
           (unsigned long long)cs.requests, (unsigned long long)cs.status_class[2],
           (unsigned long long)cs.status_class[4], (unsigned long long)cs.errors,
           (unsigned long long)cs.retries);
    printf("latency p50 %.0f us, p99 %.0f us, max %.0f us\n", cs.latency.p50_us,
           cs.latency.p99_us, cs.latency.max_us);

    need = sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, NULL, 0) + 4096;   /* slack */
    if (!(text = malloc(need)) || sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, text, need) >= need)
        rc = 1;
    else if (argc > 2)
        rc = serve_once(atoi(argv[2]), text, strlen(text)) ? 1 : 0;
    else
        fputs(text, stdout);
    free(text);
    sluice_factory_free(f);
    return rc;
}
