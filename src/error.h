/* Internal error helpers: one place turns a failure into a SLUICE_E* code
 * plus a message. */
#ifndef SL_ERROR_H
#define SL_ERROR_H

#include <stddef.h>

#include "sluice.h"

/* Sets err (if not NULL) to `code` with a printf-style message and returns
 * `code`, so a failure path can `return sl_err(err, SLUICE_EIO, "...")`. */
int sl_err(sluice_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends a printf-style note to err's message (cut at its size); the
 * code stays.  NULL err is a no-op. */
void sl_err_append(sluice_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears err (code 0, no status, empty message, no attempts). */
void sl_err_clear(sluice_error *err);

/* Copies src into dst (either may be NULL). */
void sl_err_copy(sluice_error *dst, const sluice_error *src);

/* The text of errno value `errnum`, written into buf (cap bytes) when the
 * C library needs it: strerror() is not thread-safe.  Returns the text
 * (buf or a static string), never NULL. */
const char *sl_errno_str(int errnum, char *buf, size_t cap);

/* A buffer size that holds any errno text. */
#define SL_ERRNO_BUF 128

#endif
