/* Monotonic clock, deadlines and a per-thread random source. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

int64_t sl_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t sl_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sl_deadline_in_ms(int ms)
{
    if (ms < 0)
        return SL_NO_DEADLINE;
    return sl_now_ns() + (int64_t)ms * 1000000;
}

int sl_ms_left(int64_t deadline)
{
    int64_t left;

    if (deadline == SL_NO_DEADLINE)
        return -1;
    left = deadline - sl_now_ns();
    if (left <= 0)
        return 0;
    left = (left + 999999) / 1000000;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

int sl_cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    int rc;

    if ((rc = pthread_condattr_init(&attr)))
        return rc;
    /* A cond left on CLOCK_REALTIME would misread every deadline here. */
    if (!(rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)))
        rc = pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

struct timespec sl_deadline_timespec(int64_t deadline)
{
    struct timespec ts;

    if (deadline == SL_NO_DEADLINE)
        deadline = sl_now_ns() + (int64_t)3600 * 1000000000;
    ts.tv_sec = deadline / 1000000000;
    ts.tv_nsec = deadline % 1000000000;
    return ts;
}

void sl_sleep_until(int64_t deadline)
{
    struct timespec ts = sl_deadline_timespec(deadline);

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static _Thread_local uint64_t rand_state;
static pthread_once_t rand_fork_once = PTHREAD_ONCE_INIT;

/* A fork() child starts from its parent's state: the forking thread (the
 * only one there) seeds again, so prefork workers do not jitter alike.
 * Threads the child starts later seed on their first draw. */
static void rand_fork_child(void)
{
    rand_state = 0;
}

static void rand_watch_fork(void)
{
    if (pthread_atfork(NULL, NULL, rand_fork_child) != 0)
        SL_WARN("cannot watch fork(): a child's random draws repeat its parent's");
}

/* From time, the process and the thread's own address, so threads and
 * processes differ. */
static uint64_t rand_seed(void)
{
    uint64_t x;

    pthread_once(&rand_fork_once, rand_watch_fork);
    x = (uint64_t)sl_now_ns() ^ ((uint64_t)(uintptr_t)&rand_state * 0x9E3779B97F4A7C15ull) ^
        ((uint64_t)getpid() * 0xBF58476D1CE4E5B9ull);
    return x ? x : 0x2545F4914F6CDD1Dull;
}

uint64_t sl_rand64(void)
{
    uint64_t x = rand_state;

    if (x == 0)
        x = rand_seed();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rand_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t sl_rand_below(uint64_t n)
{
    return n ? sl_rand64() % n : 0;
}
