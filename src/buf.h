/* A growable byte buffer.  Not thread-safe; owned by one object. */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct sl_buf {
    char *data;     /* always NUL-terminated when cap > 0 */
    size_t len;
    size_t cap;
    int failed;     /* an append ran out of memory; later appends do nothing */
} sl_buf;

#define SL_BUF_INIT {NULL, 0, 0, 0}

/* Makes room for `extra` more bytes plus a NUL.  Returns 0 or SLUICE_ENOMEM. */
int sl_buf_reserve(sl_buf *b, size_t extra);
int sl_buf_append(sl_buf *b, const void *p, size_t n);
int sl_buf_puts(sl_buf *b, const char *s);
int sl_buf_printf(sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sl_buf_vprintf(sl_buf *b, const char *fmt, va_list ap);
/* Drops the first n bytes. */
void sl_buf_consume(sl_buf *b, size_t n);
void sl_buf_reset(sl_buf *b);   /* len = 0, memory kept */
void sl_buf_free(sl_buf *b);    /* releases memory; back to SL_BUF_INIT */
/* Hands the memory to the caller (NUL-terminated, never NULL unless out of
 * memory) and resets the buffer. */
char *sl_buf_detach(sl_buf *b, size_t *len);

#endif
