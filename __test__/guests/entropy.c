/* A guest with a PRNG seeded once at start-up, and kvmbox_reseed() to re-seed it: every fork
 * and reset of a snapshot would otherwise produce the same "random" numbers. */
#include <stdint.h>
#include <string.h>

#include "../../guest/include/kvmbox.h"

static uint64_t state = 0x2545F4914F6CDD1DULL; /* the same in every fork: the problem */
static long reseeds;

KVMBOX_EXPORT void kvmbox_reseed(const unsigned char *bytes, long len) {
    uint64_t seed = 0;
    memcpy(&seed, bytes, len < 8 ? (size_t)len : 8);
    state ^= seed;
    reseeds++;
}

KVMBOX_EXPORT long next_random(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (long)(state >> 33);
}

KVMBOX_EXPORT long reseed_count(void) { return reseeds; }

int main(void) {
    kvmbox_pause();
    return 0;
}
