/* Internal allocation: every allocation in the library goes through these,
 * so sluice_set_allocator() can replace (and tests can fail) any of them. */
#ifndef SL_ALLOC_H
#define SL_ALLOC_H

#include <stddef.h>

void *sl_malloc(size_t n);
void *sl_calloc(size_t count, size_t size);   /* NULL on overflow too */
void *sl_realloc(void *p, size_t n);
void sl_free(void *p);
char *sl_strdup(const char *s);               /* NULL in, NULL out */
char *sl_strndup(const char *s, size_t n);
void *sl_memdup(const void *p, size_t n);

#endif
