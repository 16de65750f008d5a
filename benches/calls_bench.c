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

int main(void) {
    kvmbox_pause();
    return 0;
}
