/* Error codes, names and messages: generated from SLUICE_ERRNO_MAP. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

const char *sluice_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define XX(name, num, msg) \
    case SLUICE_##name:    \
        return msg;
        SLUICE_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *sluice_err_name(int code)
{
    switch (code) {
    case 0:
        return "SLUICE_OK";
#define XX(name, num, msg) \
    case SLUICE_##name:    \
        return "SLUICE_" #name;
        SLUICE_ERRNO_MAP(XX)
#undef XX
    default:
        return "SLUICE_EUNKNOWN";
    }
}

int sl_err(sluice_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void sl_err_append(sluice_error *err, const char *fmt, ...)
{
    size_t len;
    va_list ap;

    if (!err)
        return;
    len = strnlen(err->msg, sizeof err->msg - 1);
    va_start(ap, fmt);
    vsnprintf(err->msg + len, sizeof err->msg - len, fmt, ap);
    va_end(ap);
}

void sl_err_clear(sluice_error *err)
{
    if (err) {
        err->code = 0;
        err->http_status = 0;
        err->msg[0] = '\0';
        err->attempts = 0;
    }
}

void sl_err_copy(sluice_error *dst, const sluice_error *src)
{
    if (dst && src && dst != src)
        memcpy(dst, src, sizeof *dst);
}

/* With _GNU_SOURCE, strerror_r is the GNU form: it returns the text, which
 * may be a static string rather than buf. */
const char *sl_errno_str(int errnum, char *buf, size_t cap)
{
    const char *s = strerror_r(errnum, buf, cap);

    return s ? s : "unknown error";
}

unsigned sluice_version(void)
{
    return SLUICE_VERSION_NUM;
}

const char *sluice_version_string(void)
{
    return SLUICE_VERSION_STRING;
}
