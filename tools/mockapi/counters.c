/* Thread-safe key -> count tables and the server-wide statistics.  Each
 * table has its own mutex, held only for memory work (never for I/O). */
#include <stdlib.h>
#include <string.h>

#include "mockapi.h"

struct mock_counter {
    mock_counter *next;
    long value;
    size_t len;
    char key[];
};

#define COUNTERS_INIT {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0}

mock_stats mock_state = {
    .hits = COUNTERS_INIT,
    .counts = COUNTERS_INIT,
    .flaky = COUNTERS_INIT,
};

static size_t hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    size_t i;

    for (i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return (size_t)(h % MOCK_COUNTER_BUCKETS);
}

/* Caller holds t->lock. */
static mock_counter *find(mock_counters *t, const char *key, size_t len, size_t slot)
{
    mock_counter *e;

    for (e = t->bucket[slot]; e; e = e->next)
        if (e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

long mock_counters_add(mock_counters *t, const char *key, size_t len, long delta)
{
    size_t slot = hash(key, len);
    mock_counter *e;
    long v = -1;

    pthread_mutex_lock(&t->lock);
    e = find(t, key, len, slot);
    if (!e && t->nkeys < MOCK_COUNTER_MAX_KEYS && (e = malloc(sizeof *e + len + 1))) {
        memcpy(e->key, key, len);
        e->key[len] = '\0';
        e->len = len;
        e->value = 0;
        e->next = t->bucket[slot];
        t->bucket[slot] = e;
        t->nkeys++;
    }
    if (e)
        v = e->value += delta;
    pthread_mutex_unlock(&t->lock);
    return v;
}

long mock_counters_get(mock_counters *t, const char *key, size_t len)
{
    mock_counter *e;
    long v;

    pthread_mutex_lock(&t->lock);
    e = find(t, key, len, hash(key, len));
    v = e ? e->value : 0;
    pthread_mutex_unlock(&t->lock);
    return v;
}

void mock_counters_clear(mock_counters *t)
{
    mock_counter *list = NULL, *e;
    size_t i;

    /* Unlink under the lock, free after it. */
    pthread_mutex_lock(&t->lock);
    for (i = 0; i < MOCK_COUNTER_BUCKETS; i++) {
        while ((e = t->bucket[i])) {
            t->bucket[i] = e->next;
            e->next = list;
            list = e;
        }
    }
    t->nkeys = 0;
    pthread_mutex_unlock(&t->lock);
    while ((e = list)) {
        list = e->next;
        free(e);
    }
}

void mock_counters_json(mock_counters *t, mock_buf *out)
{
    const char *sep = "";
    mock_counter *e;
    size_t i;

    mock_buf_add(out, "{", 1);
    pthread_mutex_lock(&t->lock);
    for (i = 0; i < MOCK_COUNTER_BUCKETS; i++) {
        for (e = t->bucket[i]; e; e = e->next) {
            mock_buf_puts(out, sep);
            mock_buf_json_str(out, e->key, e->len);
            mock_buf_printf(out, ":%ld", e->value);
            sep = ",";
        }
    }
    pthread_mutex_unlock(&t->lock);
    mock_buf_add(out, "}", 1);
}

void mock_stats_reset(void)
{
    atomic_store(&mock_state.connections_accepted, 0);
    atomic_store(&mock_state.requests, 0);
    atomic_store(&mock_state.bad_requests, 0);
    atomic_store(&mock_state.tls_handshakes, 0);
    atomic_store(&mock_state.tls_resumed, 0);
    atomic_store(&mock_state.tls_failures, 0);
    atomic_store(&mock_state.h2_connections, 0);
    atomic_store(&mock_state.h2_streams, 0);
    mock_counters_clear(&mock_state.hits);
    mock_counters_clear(&mock_state.counts);
    mock_counters_clear(&mock_state.flaky);
}
