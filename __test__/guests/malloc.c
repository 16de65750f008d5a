/* Exercises malloc/free/realloc/calloc/aligned allocation for sizes from 1 byte
 * to 16 MiB (several > 1 MiB, which glibc/musl serve with mmap) and prints a
 * checksum over the (deterministic) contents. Peak live heap is about 40 MiB. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024UL * 1024UL)

static uint64_t fnv = 1469598103934665603ULL;
static void hash_bytes(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        fnv ^= p[i];
        fnv *= 1099511628211ULL;
    }
}

static unsigned char pat(size_t tag, size_t j) {
    return (unsigned char)(tag * 31u + j * 7u + (j >> 8) + (j >> 16));
}

static void fill(unsigned char *p, size_t n, size_t tag) {
    for (size_t j = 0; j < n; j++) p[j] = pat(tag, j);
}

static int verify(const unsigned char *p, size_t n, size_t tag) {
    for (size_t j = 0; j < n; j++)
        if (p[j] != pat(tag, j)) return 0;
    return 1;
}

static int failures = 0;
static void check(int ok, const char *what, size_t size) {
    if (!ok) {
        failures++;
        printf("FAIL: %s (size %zu)\n", what, size);
    }
}

static const size_t sizes[] = {
    1, 2, 3, 7, 8, 15, 16, 17, 24, 31, 32, 33, 63, 64, 65, 100, 127, 128, 255, 256,
    511, 512, 1000, 1023, 1024, 2047, 4095, 4096, 4097, 8191, 8192, 16384,
    65535, 65536, 65537, 131071, 131072, 131073, 262144, 500000,
    1 * MiB, 1 * MiB + 1, 2 * MiB - 3, 3 * MiB + 123, 5 * MiB, 8 * MiB - 1, 16 * MiB,
};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

int main(void) {
    unsigned char *ptrs[NSIZES];

    /* Round 1: allocate everything, fill, verify, hash. */
    for (size_t i = 0; i < NSIZES; i++) {
        ptrs[i] = malloc(sizes[i]);
        check(ptrs[i] != NULL, "malloc", sizes[i]);
        if (!ptrs[i]) return 1;
        fill(ptrs[i], sizes[i], i);
    }
    for (size_t i = 0; i < NSIZES; i++) {
        check(verify(ptrs[i], sizes[i], i), "verify round 1", sizes[i]);
        hash_bytes(ptrs[i], sizes[i]);
    }
    printf("round 1: %zu blocks ok\n", NSIZES);

    /* Free every other block, reallocate with a different pattern. */
    for (size_t i = 0; i < NSIZES; i += 2) free(ptrs[i]);
    for (size_t i = 0; i < NSIZES; i += 2) {
        ptrs[i] = malloc(sizes[i]);
        check(ptrs[i] != NULL, "malloc round 2", sizes[i]);
        if (!ptrs[i]) return 1;
        fill(ptrs[i], sizes[i], i + 1000);
    }
    for (size_t i = 0; i < NSIZES; i++) {
        size_t tag = (i % 2 == 0) ? i + 1000 : i;
        check(verify(ptrs[i], sizes[i], tag), "verify round 2", sizes[i]);
        hash_bytes(ptrs[i], sizes[i]);
    }
    printf("round 2: %zu blocks ok\n", NSIZES);
    for (size_t i = NSIZES; i-- > 0;) free(ptrs[i]);

    /* realloc grow / shrink, prefix must be preserved. */
    static const size_t steps[] = {100, 1000, 100000, 2 * MiB, 10 * MiB, 3 * MiB, 50, 4096, 12 * MiB, 1};
    size_t cur = steps[0];
    unsigned char *r = malloc(cur);
    check(r != NULL, "realloc base", cur);
    if (!r) return 1;
    fill(r, cur, 77);
    for (size_t s = 1; s < sizeof(steps) / sizeof(steps[0]); s++) {
        size_t nsz = steps[s];
        unsigned char *nr = realloc(r, nsz);
        check(nr != NULL, "realloc", nsz);
        if (!nr) return 1;
        r = nr;
        size_t keep = cur < nsz ? cur : nsz;
        check(verify(r, keep, 77), "realloc prefix preserved", nsz);
        fill(r, nsz, 77);
        cur = nsz;
    }
    hash_bytes(r, cur);
    free(r);
    printf("realloc: grow/shrink ok\n");

    /* calloc must return zeroed memory, also when reusing dirty freed memory. */
    static const size_t csz[] = {1, 40, 4096, 70000, 200000, 1 * MiB + 5, 6 * MiB};
    for (size_t i = 0; i < sizeof(csz) / sizeof(csz[0]); i++) {
        unsigned char *d = malloc(csz[i]);
        if (d) { memset(d, 0xAB, csz[i]); free(d); }
        unsigned char *c = calloc(csz[i], 1);
        check(c != NULL, "calloc", csz[i]);
        if (!c) return 1;
        int zero = 1;
        for (size_t j = 0; j < csz[i]; j++) if (c[j]) { zero = 0; break; }
        check(zero, "calloc zeroed", csz[i]);
        fill(c, csz[i], i + 500);
        hash_bytes(c, csz[i]);
        free(c);
    }
    unsigned char *cz = calloc(1000, 1000);
    check(cz != NULL, "calloc(1000,1000)", 1000000);
    if (cz) { int zero = 1; for (size_t j = 0; j < 1000000; j++) if (cz[j]) { zero = 0; break; } check(zero, "calloc(1000,1000) zeroed", 1000000); free(cz); }
    /* Overflowing calloc must fail rather than return a short buffer. */
    volatile size_t huge = SIZE_MAX / 2; /* volatile: avoid -Walloc-size-larger-than */
    void *ov = calloc(huge, 4);
    check(ov == NULL, "calloc overflow returns NULL", 0);
    printf("calloc: zeroed ok\n");

    /* Aligned allocations. */
    static const size_t aligns[] = {16, 64, 256, 4096, 65536};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        void *p = NULL;
        int rc = posix_memalign(&p, aligns[i], 3000 + i);
        check(rc == 0 && p && ((uintptr_t)p % aligns[i]) == 0, "posix_memalign", aligns[i]);
        if (p) { fill(p, 3000 + i, i + 900); hash_bytes(p, 3000 + i); free(p); }
        void *q = aligned_alloc(aligns[i], aligns[i] * 4);
        check(q && ((uintptr_t)q % aligns[i]) == 0, "aligned_alloc", aligns[i]);
        free(q);
    }
    printf("aligned: ok\n");

    /* Many small allocations with deterministic pseudo-random sizes and lifetimes. */
    enum { SLOTS = 4096 };
    static unsigned char *slot[SLOTS];
    static size_t slotsz[SLOTS];
    uint32_t lcg = 12345;
    for (int it = 0; it < 200000; it++) {
        lcg = lcg * 1103515245u + 12345u;
        size_t k = (lcg >> 8) % SLOTS;
        if (slot[k]) {
            check(verify(slot[k], slotsz[k], k), "small verify", slotsz[k]);
            free(slot[k]);
            slot[k] = NULL;
        } else {
            lcg = lcg * 1103515245u + 12345u;
            size_t sz = 1 + (lcg >> 12) % ((lcg & 0x100) ? 64 : 3000);
            slot[k] = malloc(sz);
            check(slot[k] != NULL, "small malloc", sz);
            if (!slot[k]) return 1;
            slotsz[k] = sz;
            fill(slot[k], sz, k);
        }
    }
    for (int k = 0; k < SLOTS; k++) {
        if (slot[k]) {
            check(verify(slot[k], slotsz[k], k), "small verify final", slotsz[k]);
            hash_bytes(slot[k], slotsz[k]);
            free(slot[k]);
        }
    }
    printf("small churn: ok\n");

    free(NULL);
    printf("failures: %d\n", failures);
    printf("checksum: %016llx\n", (unsigned long long)fnv);
    return failures ? 1 : 0;
}
