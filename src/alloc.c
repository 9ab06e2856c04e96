/* The replaceable allocator. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "sluice.h"

static void *default_malloc(size_t n, void *ud)
{
    (void)ud;
    return malloc(n);
}

static void *default_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    return realloc(p, n);
}

static void default_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static sluice_allocator allocator = {default_malloc, default_realloc, default_free, NULL};

void sluice_set_allocator(const sluice_allocator *a)
{
    if (a && a->malloc_fn && a->realloc_fn && a->free_fn)
        allocator = *a;
    else
        allocator = (sluice_allocator){default_malloc, default_realloc, default_free, NULL};
}

void *sl_malloc(size_t n)
{
    return allocator.malloc_fn(n ? n : 1, allocator.ud);
}

void *sl_calloc(size_t count, size_t size)
{
    void *p;

    if (size && count > SIZE_MAX / size)
        return NULL;
    p = sl_malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *sl_realloc(void *p, size_t n)
{
    return allocator.realloc_fn(p, n ? n : 1, allocator.ud);
}

void sl_free(void *p)
{
    if (p)
        allocator.free_fn(p, allocator.ud);
}

void *sl_memdup(const void *p, size_t n)
{
    void *q = sl_malloc(n + 1);

    if (q) {
        if (n)
            memcpy(q, p, n);
        ((char *)q)[n] = '\0';
    }
    return q;
}

char *sl_strndup(const char *s, size_t n)
{
    return s ? sl_memdup(s, n) : NULL;
}

char *sl_strdup(const char *s)
{
    return s ? sl_memdup(s, strlen(s)) : NULL;
}
