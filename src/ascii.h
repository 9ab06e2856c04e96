/* ASCII character helpers, locale-free: HTTP, URLs and Redis URLs are
 * defined over bytes, never over the program's locale (tolower() and
 * isxdigit() would follow it). */
#ifndef SL_ASCII_H
#define SL_ASCII_H

#include <stddef.h>

/* 'A'..'Z' to 'a'..'z'; every other byte unchanged. */
static inline unsigned char sl_ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* The value of a hex digit (either case), or -1. */
static inline int sl_ascii_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = sl_ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The n bytes at s as a decimal number in [min, max]: digits only (no
 * sign, no space), at most 10 of them; -1 otherwise. */
static inline long sl_ascii_decimal(const char *s, size_t n, long min, long max)
{
    long v = 0;
    size_t i;

    if (n == 0 || n > 10)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= min && v <= max ? v : -1;
}

#endif
