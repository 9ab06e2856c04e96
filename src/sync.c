/* Checked pthread set-up, with a failure hook for tests. */
#include <errno.h>
#include <stdatomic.h>

#include "clock.h"
#include "error.h"
#include "sync.h"

static atomic_int fail_countdown;

void sl_sync_fail_nth(int n)
{
    atomic_store(&fail_countdown, n > 0 ? n : 0);
}

/* 1 when this init is the one a test asked to fail. */
static int injected_failure(void)
{
    int n = atomic_load(&fail_countdown);

    while (n > 0)
        if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1))
            return n == 1;
    return 0;
}

static int fail(int rc, const char *kind, const char *what, sluice_error *err)
{
    char buf[SL_ERRNO_BUF];

    return sl_err(err, SLUICE_ENOMEM, "%s: %s could not be initialised: %s", what, kind,
                  sl_errno_str(rc, buf, sizeof buf));
}

int sl_mutex_init(pthread_mutex_t *m, const char *what, sluice_error *err)
{
    int rc = injected_failure() ? EAGAIN : pthread_mutex_init(m, NULL);

    return rc ? fail(rc, "mutex", what, err) : 0;
}

int sl_cond_init(pthread_cond_t *c, const char *what, sluice_error *err)
{
    int rc = injected_failure() ? EAGAIN : sl_cond_init_monotonic(c);

    return rc ? fail(rc, "condition variable", what, err) : 0;
}
