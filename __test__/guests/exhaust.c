/* Resource exhaustion from inside a guest, as functions called after kvmbox_pause(). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

static const char *file_path = "/";

KVMBOX_EXPORT long ok(long x) { return x + 1; }

/* Writes `mib` MiB to stdout. */
KVMBOX_EXPORT long flood(long mib) {
    static char buf[1 << 16];
    memset(buf, 'x', sizeof buf);
    long total = 0;
    for (long i = 0; i < mib * 16; i++) {
        long n = write(1, buf, sizeof buf);
        if (n < 0) return -1;
        total += n;
    }
    return total;
}

/* Opens the allowed file until open fails; returns how many opened (negative errno at the end). */
KVMBOX_EXPORT long fds(void) {
    long n = 0;
    for (;;) {
        int fd = open(file_path, O_RDONLY);
        if (fd < 0) return n;
        n++;
    }
}

static long depth(long n) {
    volatile char pad[4096];
    pad[0] = (char)n;
    return depth(n + 1) + pad[0];
}
KVMBOX_EXPORT long recurse(void) { return depth(0); }

/* Host calls forever. */
KVMBOX_EXPORT long hostcall_storm(void) {
    for (;;) kvmbox_hostcall0(0x10000);
}

/* Allocates until malloc fails; returns MiB obtained. */
KVMBOX_EXPORT long bomb(void) {
    long mib = 0;
    while (malloc(1 << 20)) mib++;
    return mib;
}

int main(int argc, char **argv) {
    if (argc > 1) file_path = argv[1];
    kvmbox_pause();
    return 0;
}
