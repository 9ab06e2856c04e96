/* Internal logging.  Off unless sluice_set_log() or $SLUICE_LOG turns it
 * on.  sl_log_enabled() is inline: one relaxed load, one compare and one
 * predictable branch while logging is off, so a disabled log costs the hot
 * path nothing more, and callers check it before formatting anything. */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdatomic.h>

#include "sluice.h"

/* The lowest level that is logged; -1 until $SLUICE_LOG has been read (so
 * the first check takes the slow path, which reads it). */
extern _Atomic int sl_log_min_level;
int sl_log_enabled_slow(sluice_log_level level);

static inline int sl_log_enabled(sluice_log_level level)
{
    int min = atomic_load_explicit(&sl_log_min_level, memory_order_relaxed);

    if (__builtin_expect((int)level < min, 1))
        return 0;
    return min >= 0 || sl_log_enabled_slow(level);
}

/* "debug", "info", "warn" or "error" in any case; anything else (or NULL)
 * is SLUICE_LOG_NONE.  Pure. */
sluice_log_level sl_log_level_from_name(const char *name);

void sl_log(sluice_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A warning the user must see even with logging off: it goes to the log
 * callback when one is set (at WARN, if its level takes WARN), else to
 * stderr whatever $SLUICE_LOG says. */
void sl_log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define SL_DEBUG(...) do { if (sl_log_enabled(SLUICE_LOG_DEBUG)) sl_log(SLUICE_LOG_DEBUG, __VA_ARGS__); } while (0)
#define SL_INFO(...)  do { if (sl_log_enabled(SLUICE_LOG_INFO))  sl_log(SLUICE_LOG_INFO, __VA_ARGS__); } while (0)
#define SL_WARN(...)  do { if (sl_log_enabled(SLUICE_LOG_WARN))  sl_log(SLUICE_LOG_WARN, __VA_ARGS__); } while (0)
#define SL_ERROR(...) do { if (sl_log_enabled(SLUICE_LOG_ERROR)) sl_log(SLUICE_LOG_ERROR, __VA_ARGS__); } while (0)

#endif
