/* Issues N random syscalls with random arguments (seeded): numbers across the Linux range and
 * kvmbox's own, arguments mixing small integers, pointers into its own memory, wild and
 * kernel-half pointers. kvmbox must answer each with a result or an errno — or stop the guest
 * with a typed fault if the guest damaged itself — and never crash or hang the host.
 *   syscall_fuzz SEED N */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint64_t state;
static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static char scratch[1 << 16];

static long arg(void) {
    switch (next() % 8) {
    case 0: return (long)(next() % 16);
    case 1: return (long)(next() % 4096);
    case 2: return (long)(scratch + next() % sizeof scratch);
    case 3: return (long)next();
    case 4: return (long)(0xffff800000000000UL + (next() % 0x100000));
    case 5: return -(long)(next() % 4096);
    case 6: return (long)(uintptr_t)&state;
    default: return 0;
    }
}

int main(int argc, char **argv) {
    state = argc > 1 ? strtoull(argv[1], NULL, 0) | 1 : 88172645463325252ULL;
    long n = argc > 2 ? atol(argv[2]) : 1000;
    long ok = 0, errs = 0;
    for (long i = 0; i < n; i++) {
        long nr = (long)(next() % 460);
        if (next() % 16 == 0) nr = 0x10000 + (long)(next() % 8);
        /* Leave out what ends or blocks the process by design (natively too), and what would unmap our own
         * code/stack (that is a legitimate way for a program to crash itself, tested elsewhere). */
        if (nr == SYS_exit || nr == SYS_exit_group || nr == SYS_kill || nr == SYS_tkill || nr == SYS_tgkill ||
            nr == SYS_munmap || nr == SYS_mremap || nr == SYS_brk || nr == SYS_madvise || nr == SYS_rt_sigreturn ||
            nr == SYS_nanosleep || nr == SYS_clock_nanosleep || nr == SYS_arch_prctl || nr == SYS_mmap || nr == SYS_read ||
            nr == SYS_readv || nr == SYS_pread64 || nr == SYS_close || nr == SYS_dup2 || nr == SYS_dup3 ||
            /* signals that end the process, waits nothing ends, threads running random code */
            nr == SYS_alarm || nr == SYS_setitimer || nr == SYS_timer_create || nr == SYS_pause || nr == SYS_rt_sigsuspend ||
            nr == SYS_rt_sigtimedwait || nr == SYS_futex || nr == SYS_clone || nr == SYS_clone3 || nr == SYS_rt_sigaction ||
            /* waits with a random timeout (nothing to wait for: they sleep it out, natively too), and
             * rights taken from our own code or stack (a crash, like munmap) */
            nr == SYS_poll || nr == SYS_ppoll || nr == SYS_select || nr == SYS_pselect6 || nr == SYS_epoll_wait ||
            nr == SYS_epoll_pwait || nr == SYS_epoll_pwait2 || nr == SYS_mprotect)
            continue;
        long r = syscall(nr, arg(), arg(), arg(), arg(), arg(), arg());
        if (r < 0) errs++; else ok++;
    }
    printf("survived %ld calls (%ld ok, %ld errors)\n", ok + errs, ok, errs);
    return 0;
}
