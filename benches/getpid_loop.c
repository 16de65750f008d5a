/*
 * Guest for the syscall round-trip benchmark (benches/run.mjs).
 *
 *   getpid_loop N
 *
 * Makes N raw getpid system calls (syscall(SYS_getpid): no libc caching, every
 * call really traps) between two CLOCK_MONOTONIC readings and prints
 *
 *   ns_per_call=<float> n=<N> total_ns=<integer>
 *
 * Under kvmbox the two clock_gettime calls are syscalls themselves (static
 * binaries get no vDSO there); they add two round trips in total, negligible
 * over N.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
    if (n <= 0) {
        fprintf(stderr, "usage: %s N (N > 0)\n", argv[0]);
        return 2;
    }

    struct timespec t0, t1;
    volatile long sink = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++)
        sink += syscall(SYS_getpid);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    long long total = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("ns_per_call=%.1f n=%ld total_ns=%lld\n", (double)total / (double)n, n, total);
    return sink == 0; /* getpid() is never 0 here; keeps the loop from being optimised out */
}
