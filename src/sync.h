/* Checked pthread set-up.  The library's mutexes and condition variables
 * are made here, so a failed init is reported as the creation's error
 * instead of being ignored, and tests can make one fail on purpose.
 *
 * On failure the object is left as calloc made it: all zero, which glibc
 * takes as the static initialiser, so the owner's usual free path (destroy
 * and free) stays correct. */
#ifndef SL_SYNC_H
#define SL_SYNC_H

#include <pthread.h>

#include "sluice.h"

/* pthread_mutex_init with default attributes.  0, or SLUICE_ENOMEM (the
 * system lacked memory or another resource) with a message naming `what`. */
int sl_mutex_init(pthread_mutex_t *m, const char *what, sluice_error *err);

/* A condition variable on CLOCK_MONOTONIC (sl_cond_init_monotonic); errors
 * as sl_mutex_init. */
int sl_cond_init(pthread_cond_t *c, const char *what, sluice_error *err);

/* Test only: the n-th sl_mutex_init or sl_cond_init from now (1-based)
 * fails as if pthread returned EAGAIN; 0 disarms.  One failure per call. */
void sl_sync_fail_nth(int n);

#endif
