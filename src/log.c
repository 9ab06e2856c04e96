/* Logging: a user callback, or stderr at the level $SLUICE_LOG names. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

struct log_sink {
    sluice_log_fn fn;
    void *ud;
};

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_sink sink;           /* guarded by sink_lock */
_Atomic int sl_log_min_level = -1;     /* -1: $SLUICE_LOG not read yet */
static _Atomic int user_set;
static int env_level = SLUICE_LOG_NONE;  /* written once, under env_once */

static const char *level_names[] = {"debug", "info", "warn", "error"};

/* $SLUICE_LOG is read here, once per process: the first time the library
 * logs or sluice_set_log() is called.  getenv() races with setenv() in
 * another thread, so it never runs again afterwards. */
sluice_log_level sl_log_level_from_name(const char *name)
{
    int i;

    for (i = 0; name && i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return (sluice_log_level)i;
    return SLUICE_LOG_NONE;
}

static void read_env(void)
{
    int expect = -1;

    env_level = sl_log_level_from_name(getenv("SLUICE_LOG"));
    /* A concurrent sluice_set_log() has already stored its level. */
    atomic_compare_exchange_strong(&sl_log_min_level, &expect, env_level);
}

void sluice_set_log(sluice_log_fn fn, sluice_log_level level, void *ud)
{
    pthread_once(&env_once, read_env);
    pthread_mutex_lock(&sink_lock);
    sink.fn = fn;
    sink.ud = ud;
    pthread_mutex_unlock(&sink_lock);
    atomic_store(&user_set, fn != NULL);
    if (level < SLUICE_LOG_DEBUG || level > SLUICE_LOG_NONE)
        level = SLUICE_LOG_NONE;
    /* No callback: back to the environment's choice, as read at first use. */
    atomic_store(&sl_log_min_level, fn ? (int)level : env_level);
}

int sl_log_enabled_slow(sluice_log_level level)
{
    pthread_once(&env_once, read_env);
    return (int)level >= atomic_load_explicit(&sl_log_min_level, memory_order_relaxed);
}

static void emit(sluice_log_level level, const char *line, int force)
{
    struct log_sink s;

    pthread_mutex_lock(&sink_lock);
    s = sink;
    pthread_mutex_unlock(&sink_lock);
    if (s.fn) {
        if (sl_log_enabled(level))
            s.fn(level, line, s.ud);
    } else if (force || sl_log_enabled(level)) {
        fprintf(stderr, "sluice %s: %s\n", level_names[level < 4 ? level : 3], line);
    }
}

void sl_log(sluice_log_level level, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (!sl_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    emit(level, line, 0);
}

void sl_log_notice(const char *fmt, ...)
{
    char line[512];
    va_list ap;

    pthread_once(&env_once, read_env);
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    emit(SLUICE_LOG_WARN, line, 1);
}
