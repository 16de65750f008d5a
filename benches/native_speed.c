/* Native-speed workloads, run natively and in kvmbox by benches/native.mjs:
 *   sha256 MIB      SHA-256 over MIB MiB of generated data (CPU-bound)
 *   stream MIB      STREAM copy/scale/add/triad over three arrays of MIB MiB each
 *   touch MIB       first touch of MIB MiB of fresh memory
 * Each prints "<name> <ms> ..." lines; timing is done inside with CLOCK_MONOTONIC. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* ---- SHA-256 (FIPS 180-4) ---- */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
    0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
    0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
    0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
    0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static int sha256(size_t mib) {
    size_t n = mib << 20;
    uint8_t *data = malloc(n + 64);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; data[i] = (uint8_t)x; }
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    double t0 = now_ms();
    for (size_t off = 0; off + 64 <= n; off += 64) sha256_block(h, data + off);
    uint8_t pad[64] = {0x80};
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) pad[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(h, pad);
    double t1 = now_ms();
    printf("sha256 %.3f %08x%08x%08x%08x\n", t1 - t0, h[0], h[1], h[2], h[3]);
    return 0;
}

static int stream(size_t mib) {
    size_t n = (mib << 20) / sizeof(double);
    double *a = malloc(n * sizeof(double)), *b = malloc(n * sizeof(double)), *c = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) { a[i] = 1.0; b[i] = 2.0; c[i] = 0.0; }
    double best[4] = {1e30, 1e30, 1e30, 1e30};
    const double s = 3.0;
    for (int rep = 0; rep < 10; rep++) {
        double t = now_ms();
        for (size_t i = 0; i < n; i++) c[i] = a[i];
        double t1 = now_ms();
        for (size_t i = 0; i < n; i++) b[i] = s * c[i];
        double t2 = now_ms();
        for (size_t i = 0; i < n; i++) c[i] = a[i] + b[i];
        double t3 = now_ms();
        for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        double t4 = now_ms();
        double d[4] = {t1 - t, t2 - t1, t3 - t2, t4 - t3};
        for (int k = 0; k < 4; k++) if (d[k] < best[k]) best[k] = d[k];
    }
    double bytes[4] = {2.0 * n * 8, 2.0 * n * 8, 3.0 * n * 8, 3.0 * n * 8};
    const char *names[4] = {"copy", "scale", "add", "triad"};
    for (int k = 0; k < 4; k++) printf("stream_%s %.3f %.1f\n", names[k], best[k], bytes[k] / (best[k] / 1e3) / 1e9);
    printf("check %.1f\n", a[n / 2] + b[n / 3] + c[n / 5]);
    return 0;
}

static int touch(size_t mib) {
    size_t n = mib << 20;
    double t0 = now_ms();
    volatile uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i += 4096) p[i] = 1;
    double t1 = now_ms();
    printf("touch %.3f\n", t1 - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: native_speed sha256|stream|touch MIB\n");
        return 2;
    }
    size_t mib = (size_t)atol(argv[2]);
    if (!strcmp(argv[1], "sha256")) return sha256(mib);
    if (!strcmp(argv[1], "stream")) return stream(mib);
    if (!strcmp(argv[1], "touch")) return touch(mib);
    return 2;
}
