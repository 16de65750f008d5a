/* Guest for benches/calls.mjs: an empty function, a host-call loop and a getpid loop. */
#include <sys/syscall.h>
#include <unistd.h>

#include "../guest/include/kvmbox.h"

KVMBOX_EXPORT long empty(void) { return 0; }

KVMBOX_EXPORT long hostcall_loop(long n) {
    long sum = 0;
    for (long i = 0; i < n; i++) sum += kvmbox_hostcall1(0x10000, i);
    return sum;
}

KVMBOX_EXPORT long getpid_loop(long n) {
    long sum = 0;
    for (long i = 0; i < n; i++) sum += syscall(SYS_getpid);
    return sum;
}

/* Write one byte into each of n distinct pages of an 8 MiB buffer (a request that dirties n pages). */
static char pages[2048][4096] __attribute__((aligned(4096)));
KVMBOX_EXPORT long touch_pages(long n, long value) {
    for (long i = 0; i < n && i < 2048; i++) pages[i][i % 4096] = (char)value;
    return n;
}

/* Read one byte from each of n pages (a request that only reads). */
KVMBOX_EXPORT long read_pages(long n) {
    long sum = 0;
    for (long i = 0; i < n && i < 2048; i++) sum += pages[i][0];
    return sum;
}

int main(void) {
    kvmbox_pause();
    return 0;
}
