/* Guest for benches/snapshots.mjs: initialization fills 1 GiB (a large in-memory state: a
 * model, an index, a warmed cache), then kvmbox_pause(). Each request, handle(i), writes 4
 * pages of a small request buffer, reads one page of the big state and returns a checksum. */
#include <stdlib.h>
#include <string.h>

#include "../guest/include/kvmbox.h"

#define BIG_BYTES (1L << 30)
#define BIG_PAGES (BIG_BYTES / 4096)
#define REQ_PAGES 4

static unsigned char *big;
/* volatile: otherwise GCC drops the stores to a static it can see is never read elsewhere. */
static volatile unsigned char req[REQ_PAGES][4096] __attribute__((aligned(4096)));

/* Returns sum over p of ((i + p) & 0xff) plus one byte of the big state (0x5a). */
KVMBOX_EXPORT long handle(long i) {
    long sum = 0;
    for (long p = 0; p < REQ_PAGES; p++) {
        req[p][i % 4096] = (unsigned char)(i + p);
        sum += req[p][i % 4096];
    }
    sum += big[((i * 7919) % BIG_PAGES) * 4096 + 1];
    return sum;
}

int main(void) {
    big = malloc(BIG_BYTES);
    if (!big) return 1;
    memset(big, 0x5a, BIG_BYTES);
    kvmbox_pause();
    return 0;
}
