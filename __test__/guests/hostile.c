/* Guests that attack the host side of kvmbox (issue "hardening round 2"): each mode tries to
 * make the host allocate, work or wait without bound, or to carry data across a reset.
 *   hostile writev_flood        writev: 1024 iovecs x 100 MiB over one range (8 MiB written)
 *   hostile nanosleep_max       nanosleep with tv_sec = INT64_MAX
 *   hostile write_forever       write 64 KiB chunks to stdout until stopped
 *   hostile stdout_mib N        write N MiB to stdout in 64 KiB chunks, then exit 0
 *   hostile (no mode)           pause for calls: map_file, peek, read_file, sleep_ms, hostcall
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

static char chunk[64 << 10];

/* Map `path` privately at `addr` (MAP_FIXED) and return its first byte. */
KVMBOX_EXPORT long map_file(const char *path, long addr) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -errno;
    void *p = mmap((void *)addr, 4096, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return -errno;
    return *(volatile unsigned char *)p;
}

/* Map anonymous memory at `addr` (MAP_FIXED) and return the sum of its first 64 bytes. */
KVMBOX_EXPORT long anon_sum(long addr) {
    unsigned char *p = mmap((void *)addr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) return -errno;
    long sum = 0;
    for (int i = 0; i < 64; i++) sum += p[i];
    return sum;
}

/* Read up to 64 bytes of `path`: the byte count, or -errno. */
KVMBOX_EXPORT long read_file(const char *path) {
    char buf[64];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -errno;
    long n = read(fd, buf, sizeof buf);
    close(fd);
    return n;
}

/* Sleep `ms` milliseconds (negative: for ever). */
KVMBOX_EXPORT long sleep_ms(long ms) {
    struct timespec ts = ms < 0 ? (struct timespec){INT64_MAX, 999999999} : (struct timespec){ms / 1000, (ms % 1000) * 1000000};
    return syscall(SYS_nanosleep, &ts, NULL);
}

/* One host call 0x10000 with `x`; returns what the host answered. */
KVMBOX_EXPORT long hostcall(long x) { return kvmbox_hostcall1(0x10000, x); }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "writev_flood")) {
        /* 100 MiB the guest may read, of which it touches 8 MiB. */
        char *buf = mmap(NULL, 100UL << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (buf == MAP_FAILED) return 2;
        memset(buf, 'x', 8 << 20);
        static struct iovec iov[1024];
        for (int i = 0; i < 1024; i++) iov[i] = (struct iovec){buf, 100UL << 20};
        long r = syscall(SYS_writev, 1, iov, 1024);
        fprintf(stderr, "writev %ld\n", r);
        return 0;
    }
    if (!strcmp(mode, "nanosleep_max")) {
        struct timespec ts = {INT64_MAX, 999999999};
        long r = syscall(SYS_nanosleep, &ts, NULL);
        printf("nanosleep returned %ld\n", r);
        return 0;
    }
    if (!strcmp(mode, "write_forever") || !strcmp(mode, "stdout_mib")) {
        long chunks = argc > 2 ? atol(argv[2]) * 16 : LONG_MAX;
        memset(chunk, 'y', sizeof chunk);
        for (long i = 0; i < chunks; i++)
            if (write(1, chunk, sizeof chunk) != (long)sizeof chunk) return 1;
        return 0;
    }
    printf("ready\n");
    fflush(stdout);
    kvmbox_pause();
    return 0;
}
