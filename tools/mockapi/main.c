/* sluice-mockapi: command line, listener, signals.  The main thread only
 * accepts; every connection is served on its own thread (conn.c).
 * SIGINT/SIGTERM and --exit-after end the process at once: connection
 * threads hold nothing that must outlive it. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mockapi.h"

#define BACKLOG 4096

static const char usage[] =
    "usage: sluice-mockapi [options]\n"
    "  --port N              listen on port N (default 0: the kernel picks)\n"
    "  --host ADDR           numeric address to bind (default 127.0.0.1)\n"
    "  --port-file F         write the chosen port to F (atomically)\n"
    "  --idle-timeout MS     close keep-alive connections idle this long\n"
    "  --max-requests N      close each connection after its Nth response\n"
    "  --exit-after S        exit by itself after S seconds\n"
    "  --threads N           accepted and ignored (one thread per connection)\n"
    "  --quiet               no log lines on stderr\n"
    "  --tls-cert F --tls-key F   serve HTTPS with this PEM chain and key\n"
    "  --client-ca F         require client certificates signed by this CA\n"
    "  --tls-min-version 12|13, --tls-max-version 12|13   protocol range (default 12..13)\n"
    "  --unix PATH           also serve on a Unix socket at PATH (replaced if present)\n"
    "  --h2                  also speak HTTP/2: ALPN \"h2,http/1.1\" on TLS; on plain TCP and\n"
    "                        --unix a connection opening with the HTTP/2 preface is h2c\n"
    "                        (prior knowledge); anything else is HTTP/1.1 as without it.\n"
    "                        Routes answer alike on both; over h2: /reset ends its stream\n"
    "                        with RST_STREAM(INTERNAL_ERROR) after its 1000 bytes, /close and\n"
    "                        the /raw/ responses that are valid HTTP/1.1 answer, then GOAWAY\n"
    "                        (last id = that stream) and close when the streams are done;\n"
    "                        a response that is malformed or cut short (most of /raw/,\n"
    "                        /truncated, /stall after its 60 s, /status/1xx) ends in\n"
    "                        RST_STREAM(INTERNAL_ERROR); 1xx heads and trailers are dropped.\n"
    "                        --max-requests N sends GOAWAY at a connection's Nth stream,\n"
    "                        --idle-timeout sends GOAWAY once idle that long.\n"
    "  --h2-max-streams N    SETTINGS_MAX_CONCURRENT_STREAMS (default 100)\n"
    "  --h2-settings-delay MS   send nothing, not even SETTINGS, for MS after the preface\n"
    "                        arrives (requests are still read and run)\n"
    "  --h2-goaway-after N   at a connection's Nth stream, GOAWAY(NO_ERROR, last id = it);\n"
    "                        streams up to it finish, then the connection closes\n"
    "  --h2-refuse N         RST_STREAM(REFUSED_STREAM) a connection's Nth stream (not run,\n"
    "                        not counted)\n"
    "  --h2-window N         initial stream window for uploads, also the connection\n"
    "                        window (default 1048576)\n"
    "  (the --h2-* options need --h2 and apply to every HTTP/2 connection)\n";

/* Parses s as a whole decimal number in [lo, hi]. */
static int number(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sluice-mockapi: %s wants a number in [%ld, %ld], not \"%s\"\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

enum { FLAG, NUMBER, TEXT };

static const struct opt_spec {
    const char *name;
    int kind;
    size_t offset;          /* of the int or const char * in mock_config */
    long lo, hi;
} options[] = {
    {"--port", NUMBER, offsetof(mock_config, port), 0, 65535},
    {"--host", TEXT, offsetof(mock_config, host), 0, 0},
    {"--port-file", TEXT, offsetof(mock_config, port_file), 0, 0},
    {"--idle-timeout", NUMBER, offsetof(mock_config, idle_timeout_ms), 0, 86400000},
    {"--max-requests", NUMBER, offsetof(mock_config, max_requests), 0, 1000000000},
    {"--exit-after", NUMBER, offsetof(mock_config, exit_after_s), 0, 86400 * 365},
    {"--quiet", FLAG, offsetof(mock_config, quiet), 0, 0},
    {"--tls-cert", TEXT, offsetof(mock_config, tls_cert), 0, 0},
    {"--tls-key", TEXT, offsetof(mock_config, tls_key), 0, 0},
    {"--client-ca", TEXT, offsetof(mock_config, client_ca), 0, 0},
    {"--tls-min-version", NUMBER, offsetof(mock_config, tls_min_version), 12, 13},
    {"--tls-max-version", NUMBER, offsetof(mock_config, tls_max_version), 12, 13},
    {"--unix", TEXT, offsetof(mock_config, unix_path), 0, 0},
    {"--h2", FLAG, offsetof(mock_config, h2), 0, 0},
    {"--h2-max-streams", NUMBER, offsetof(mock_config, h2_max_streams), 0, 2147483647},
    {"--h2-settings-delay", NUMBER, offsetof(mock_config, h2_settings_delay_ms), 0, 86400000},
    {"--h2-goaway-after", NUMBER, offsetof(mock_config, h2_goaway_after), 0, 1000000000},
    {"--h2-refuse", NUMBER, offsetof(mock_config, h2_refuse), 0, 1000000000},
    {"--h2-window", NUMBER, offsetof(mock_config, h2_window), 0, 2147483647},
};

/* One option and its value; returns how many arguments it took, or -1. */
static int option(mock_config *cfg, const char *opt, const char *val)
{
    size_t i;
    long v;

    /* Kept for callers written for a thread-pool server; its value is optional. */
    if (strcmp(opt, "--threads") == 0)
        return val && val[0] >= '0' && val[0] <= '9' ? 2 : 1;
    for (i = 0; i < sizeof options / sizeof options[0]; i++) {
        const struct opt_spec *o = &options[i];
        char *field = (char *)cfg + o->offset;
        if (strcmp(opt, o->name) != 0)
            continue;
        if (o->kind == FLAG) {
            *(int *)field = 1;
            return 1;
        }
        if (!val) {
            fprintf(stderr, "sluice-mockapi: %s needs a value\n", opt);
            return -1;
        }
        if (o->kind == TEXT)
            *(const char **)field = val;
        else if (number(opt, val, o->lo, o->hi, &v) == 0)
            *(int *)field = (int)v;
        else
            return -1;
        return 2;
    }
    fprintf(stderr, "sluice-mockapi: unknown option %s\n%s", opt, usage);
    return -1;
}

/* Returns 0, 1 when the program should exit 0 (--help), -1 on error. */
static int parse_args(int argc, char **argv, mock_config *cfg)
{
    int i = 1, n;

    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->tls_min_version = 12;
    cfg->tls_max_version = 13;
    cfg->h2_max_streams = 100;
    cfg->h2_window = 1 << 20;
    while (i < argc) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            mock_routes_usage(stdout);
            return 1;
        }
        if ((n = option(cfg, argv[i], i + 1 < argc ? argv[i + 1] : NULL)) < 0)
            return -1;
        i += n;
    }
    if (!cfg->tls_cert != !cfg->tls_key || (cfg->client_ca && !cfg->tls_cert)) {
        fprintf(stderr, "sluice-mockapi: --tls-cert and --tls-key go together (and --client-ca needs them)\n");
        return -1;
    }
    if (cfg->tls_min_version > cfg->tls_max_version) {
        fprintf(stderr, "sluice-mockapi: --tls-min-version is above --tls-max-version\n");
        return -1;
    }
    return 0;
}

/* Binds and listens; returns the socket and stores the port, or -1. */
static int listen_on(const mock_config *cfg, int *port)
{
    struct addrinfo hints = {0}, *ai = NULL;
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    char portstr[16];
    int fd = -1, one = 1, err;

    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    if ((err = getaddrinfo(cfg->host, portstr, &hints, &ai)) != 0) {
        fprintf(stderr, "sluice-mockapi: bad --host %s: %s\n", cfg->host, gai_strerror(err));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
        fprintf(stderr, "sluice-mockapi: cannot listen on %s port %d: %s\n", cfg->host, cfg->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    *port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                           : ((struct sockaddr_in *)&sa)->sin_port);
    return fd;
}

/* The --unix listener: the same server on a Unix socket, or -1. */
static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "sluice-mockapi: --unix path is too long\n");
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, BACKLOG) != 0) {
        fprintf(stderr, "sluice-mockapi: cannot listen on %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Writes the port to a temporary file and renames it into place, so a
 * reader never sees a partial number. */
static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    FILE *f;

    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp ||
        !(f = fopen(tmp, "w"))) {
        fprintf(stderr, "sluice-mockapi: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "sluice-mockapi: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void stop_now(int sig)
{
    (void)sig;
    _exit(0);
}

/* Blocks the stop signals in every thread (workers inherit the mask) and
 * returns a descriptor that becomes readable when one arrives.  Should one
 * still reach a thread that does not block it (a runtime's helper thread,
 * say), the handler ends the process just as cleanly. */
static int stop_signals(void)
{
    struct sigaction sa;
    sigset_t set;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stop_now;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    return signalfd(-1, &set, SFD_CLOEXEC);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void accept_one(int lfd, const mock_config *cfg)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd >= 0) {
        mock_conn_spawn(fd, cfg);
    } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        mock_log(cfg, "accept: %s", strerror(errno));
        poll(NULL, 0, 50);     /* let connections finish rather than spin */
    }
}

/* Accepts until a stop signal or the --exit-after deadline. */
static void accept_loop(int lfd, int ufd, int sigfd, const mock_config *cfg)
{
    int64_t deadline = cfg->exit_after_s ? now_ms() + (int64_t)cfg->exit_after_s * 1000 : 0;
    struct pollfd p[3] = {{lfd, POLLIN, 0}, {sigfd, POLLIN, 0}, {ufd, POLLIN, 0}};

    for (;;) {
        int64_t left = deadline ? deadline - now_ms() : -1;
        int r;
        if (deadline && left <= 0) {
            mock_log(cfg, "--exit-after reached, exiting");
            return;
        }
        r = poll(p, ufd >= 0 ? 3 : 2, left > INT32_MAX ? INT32_MAX : (int)left);
        if (r < 0 && errno != EINTR)
            return;
        if (p[1].revents) {
            mock_log(cfg, "signal received, exiting");
            return;
        }
        if (p[0].revents & POLLIN)
            accept_one(lfd, cfg);
        if (ufd >= 0 && (p[2].revents & POLLIN))
            accept_one(ufd, cfg);
    }
}

int main(int argc, char **argv)
{
    static mock_config cfg;
    int lfd, ufd = -1, sigfd, port, r;

    if ((r = parse_args(argc, argv, &cfg)) != 0)
        return r > 0 ? 0 : 2;
    if ((sigfd = stop_signals()) < 0) {
        perror("sluice-mockapi: signalfd");
        return 1;
    }
    if (cfg.tls_cert && mock_tls_init(&cfg) != 0)
        return 1;
    if ((lfd = listen_on(&cfg, &port)) < 0)
        return 1;
    if (cfg.unix_path && (ufd = listen_unix(cfg.unix_path)) < 0)
        return 1;
    if (cfg.port_file && write_port_file(cfg.port_file, port) != 0)
        return 1;
    if (strchr(cfg.host, ':'))
        printf("listening on [%s]:%d\n", cfg.host, port);
    else
        printf("listening on %s:%d\n", cfg.host, port);
    fflush(stdout);
    accept_loop(lfd, ufd, sigfd, &cfg);
    close(lfd);
    if (ufd >= 0) {
        close(ufd);
        unlink(cfg.unix_path);
    }
    fflush(stdout);
    fflush(stderr);
    /* Connection threads may be mid-request: leave without running exit
     * handlers under their feet. */
    _exit(0);
}
