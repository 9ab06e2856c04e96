/* The in-flight table behind sluice_coalescer, with the extras the HTTP
 * path needs: a deadline, a micro-cache window and a cacheability test. */
#ifndef SL_COALESCE_H
#define SL_COALESCE_H

#include <stdint.h>

#include "sluice.h"

/* 1 when a finished value may serve later callers for the window. */
typedef int (*sl_cacheable_fn)(int code, void *value);

typedef struct sl_coalesce_stats {
    uint64_t flights;       /* leader calls */
    uint64_t followers;     /* callers served by another's flight */
    uint64_t cache_hits;    /* callers served by the window */
    uint64_t timeouts;      /* followers that gave up */
} sl_coalesce_stats;

/* Like sluice_coalesce, with an absolute deadline for followers and a
 * window: a result for which cacheable() says yes serves same-key callers
 * for window_ms after it finished (0 = no window). */
int sl_coalesce(sluice_coalescer *co, const void *key, size_t keylen, int64_t deadline,
                int window_ms, sl_cacheable_fn cacheable, sluice_flight_fn fn, void *arg,
                sluice_flight_result *out);
void sl_coalesce_stats(sluice_coalescer *co, sl_coalesce_stats *out);

#endif
