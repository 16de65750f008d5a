/* Native peer for benches/snapshots.mjs: a fresh process that touches 64 pages of a static
 * buffer (one byte each, like touch_pages(64, v) in calls_bench.c) and exits 0. */
static char pages[64][4096] __attribute__((aligned(4096)));

int main(int argc, char **argv) {
    volatile char *p = &pages[0][0];
    char v = (char)argc;
    for (long i = 0; i < 64; i++) p[i * 4096 + i] = v;
    (void)argv;
    return 0;
}
