/* ASCII character helpers, locale-free: HTTP, URLs and Redis URLs are
 * defined over bytes, never over the program's locale (tolower() and
 * isxdigit() would follow it). */
#ifndef SL_ASCII_H
#define SL_ASCII_H

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

#endif
