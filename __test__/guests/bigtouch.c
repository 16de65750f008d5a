/* Touches 256 MiB (every byte of it), pauses, then verifies it and exits: for the huge-page tests. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../guest/include/kvmbox.h"

#define SIZE (256UL << 20)

int main(void) {
    uint64_t *p = malloc(SIZE);
    if (!p) return 1;
    for (size_t i = 0; i < SIZE / 8; i++) p[i] = i * 0x9E3779B97F4A7C15ULL;
    printf("filled %lu MiB\n", SIZE >> 20);
    fflush(stdout);
    kvmbox_pause(); /* natively: returns -ENOSYS and goes on */
    uint64_t sum = 0, bad = 0;
    for (size_t i = 0; i < SIZE / 8; i++) {
        sum += p[i];
        bad += p[i] != i * 0x9E3779B97F4A7C15ULL;
    }
    printf("checksum %016llx, %llu bad words\n", (unsigned long long)sum, (unsigned long long)bad);
    return bad != 0;
}
