/* Internal error helpers: one place turns a failure into a SLUICE_E* code
 * plus a message. */
#ifndef SL_ERROR_H
#define SL_ERROR_H

#include "sluice.h"

/* Sets err (if not NULL) to `code` with a printf-style message and returns
 * `code`, so a failure path can `return sl_err(err, SLUICE_EIO, "...")`. */
int sl_err(sluice_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears err (code 0, empty message). */
void sl_err_clear(sluice_error *err);

/* Copies src into dst (either may be NULL). */
void sl_err_copy(sluice_error *dst, const sluice_error *src);

#endif
