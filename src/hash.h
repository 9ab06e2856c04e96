/* The one string hash: fast and seeded.  Every table keyed by caller input
 * (coalescer, pool origins, in-process limiter keys) hashes with it, each
 * from a random seed of its own (sl_rand64() at creation), so callers
 * cannot aim keys at one bucket. */
#ifndef SL_HASH_H
#define SL_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Folds the 128-bit product of a and b into 64 bits. */
static inline uint64_t sl_hash_mum(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 r = (unsigned __int128)a * b;

    return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
    /* The four partial products, folded without their carries. */
    uint64_t lo = (a & 0xffffffffu) * (b & 0xffffffffu), hi = (a >> 32) * (b >> 32);
    uint64_t mid = (a >> 32) * (b & 0xffffffffu) ^ (a & 0xffffffffu) * (b >> 32);

    return (lo ^ (mid << 32)) ^ (hi ^ (mid >> 32));
#endif
}

/* Hashes n bytes on from h, a table's seed or a hash made from it:
 * hashing a key's parts one after another hashes their sequence.  Sixteen
 * bytes a step with one multiply each, and one more for the tail, so a
 * short part costs a few instructions.  Seeded, so callers cannot aim
 * keys at one bucket; keys are compared in full, so this only spreads.
 * The result is mixed in every bit: top bits may pick a shard and bottom
 * bits a bucket. */
static inline uint64_t sl_hash_bytes(uint64_t h, const void *data, size_t n)
{
    const uint64_t k1 = 0xa0761d6478bd642full, k2 = 0xe7037ed1a0b428dbull;
    const unsigned char *p = data;
    uint64_t a = 0, b = 0;
    uint32_t a4, b4;

    for (; n > 16; p += 16, n -= 16) {
        memcpy(&a, p, 8);
        memcpy(&b, p + 8, 8);
        h = sl_hash_mum(a ^ k1, b ^ h);
    }
    if (n >= 8) {
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
    } else if (n >= 4) {
        memcpy(&a4, p, 4);
        memcpy(&b4, p + n - 4, 4);
        a = a4;
        b = b4;
    } else if (n) {
        a = (uint64_t)p[0] << 16 | (uint64_t)p[n >> 1] << 8 | p[n - 1];
    }
    return sl_hash_mum(a ^ k2, b ^ h ^ n);
}

#endif
