/* faults <mode> [arg]
 * Every mode first prints "faults: mode=<mode>" to stdout (flushed).
 *   null        write through a NULL pointer            -> SIGSEGV
 *   ud2         __builtin_trap() (ud2)                  -> SIGILL
 *   div0        integer 1/0 (volatile operands)         -> SIGFPE
 *   divovf      INT_MIN / -1 (volatile operands)        -> SIGFPE
 *   loop        infinite loop (caller must time out)    -> never ends
 *   write_text  write to a function's own text bytes    -> SIGSEGV
 *   jump_high   call function pointer <hex arg> (default 0x7ffffffff000) -> SIGSEGV
 *   stack       unbounded recursion (stack overflow)    -> SIGSEGV
 *   efault      raw syscalls with bad pointers; prints each result, exit 0.
 *               NOTE: run with NON-EMPTY stdin: read() from an empty pipe or
 *               /dev/null returns 0 before touching the buffer.
 *   bomb [cap]  malloc+touch 1 MiB chunks until malloc returns NULL; prints
 *               "bomb: got NULL" (stdout) and "malloc returned NULL after N MiB"
 *               (stderr), exit 0. With [cap] (MiB) stops there: "bomb: cap
 *               reached", exit 1. Do NOT run natively without a cap/ulimit -v.
 *   abort       abort()                                 -> SIGABRT
 *   raise       raise(SIGTERM)                          -> SIGTERM
 * Unknown/missing mode: usage on stderr, exit 2. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *errno_name(int e) {
    switch (e) {
    case 0: return "0";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case ENOSYS: return "ENOSYS";
    case EAGAIN: return "EAGAIN";
    default: return "E?";
    }
}

__attribute__((noinline)) static int text_victim(int x) { return x * 3 + 1; }

static void report(const char *what, long rc) {
    int e = errno;
    if (rc < 0)
        printf("%s = %ld %s\n", what, rc, errno_name(e));
    else
        printf("%s = %ld\n", what, rc);
}

static volatile int keep_recursing = 1; /* volatile: hides the infinite recursion from gcc */
__attribute__((noinline)) static int recurse(int depth) {
    volatile char pad[4096];
    pad[0] = (char)depth;
    pad[4095] = (char)depth;
    if (!keep_recursing) return depth;
    return recurse(depth + 1) + pad[0] + pad[4095];
}

static void do_efault(void) {
    /* A readable but not writable address: our own code. */
    void *text = (void *)(uintptr_t)&text_victim;
    long rc;
    errno = 0; rc = syscall(SYS_write, 1, (void *)1, 10);
    report("write(1, 0x1, 10)", rc);
    errno = 0; rc = syscall(SYS_write, 1, (void *)0xffff800000000000ULL, 10);
    report("write(1, 0xffff800000000000, 10)", rc);
    errno = 0; rc = syscall(SYS_write, 1, (void *)0x0000800000000000ULL, 10);
    report("write(1, 0x800000000000, 10)", rc);
    errno = 0; rc = syscall(SYS_read, 0, text, 10);
    report("read(0, <text>, 10)", rc);
    errno = 0; rc = syscall(SYS_clock_gettime, CLOCK_MONOTONIC, (void *)1);
    report("clock_gettime(CLOCK_MONOTONIC, 0x1)", rc);
    errno = 0; rc = syscall(SYS_clock_gettime, CLOCK_REALTIME, text);
    report("clock_gettime(CLOCK_REALTIME, <text>)", rc);
    errno = 0; rc = syscall(SYS_getrandom, text, 16, 0);
    report("getrandom(<text>, 16, 0)", rc);
    /* The sandbox must not have modified our code. */
    printf("text intact: %s\n", text_victim(4) == 13 ? "yes" : "NO");
    fflush(stdout);
    errno = 0; rc = syscall(SYS_write, 1, "efault done\n", 12);
    report("write(1, \"efault done\\n\", 12)", rc);
}

static int do_bomb(long cap_mib) {
    size_t chunk = 1024 * 1024;
    long n = 0;
    for (;;) {
        if (cap_mib > 0 && n >= cap_mib) {
            printf("bomb: cap reached\n");
            fprintf(stderr, "bomb: stopped at cap of %ld MiB\n", cap_mib);
            return 1;
        }
        unsigned char *p = malloc(chunk);
        if (!p) break;
        for (size_t i = 0; i < chunk; i += 4096) p[i] = (unsigned char)(i + n);
        n++; /* intentionally leaked */
    }
    printf("bomb: got NULL\n");
    fprintf(stderr, "malloc returned NULL after %ld MiB\n", n);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    printf("faults: mode=%s\n", mode);
    fflush(stdout);

    if (!strcmp(mode, "null")) {
        volatile int *p = (volatile int *)(uintptr_t)0;
        *p = 42;
    } else if (!strcmp(mode, "ud2")) {
        __builtin_trap();
    } else if (!strcmp(mode, "div0")) {
        volatile int a = 1, b = 0;
        printf("result %d\n", a / b);
    } else if (!strcmp(mode, "divovf")) {
        volatile int a = INT_MIN, b = -1;
        printf("result %d\n", a / b);
    } else if (!strcmp(mode, "loop")) {
        for (;;) __asm__ volatile("" ::: "memory");
    } else if (!strcmp(mode, "write_text")) {
        volatile uintptr_t addr = (uintptr_t)&text_victim;
        *(volatile unsigned char *)addr = 0xcc;
        printf("text write did not fault (text_victim(1)=%d)\n", text_victim(1));
    } else if (!strcmp(mode, "jump_high")) {
        const char *s = argc > 2 ? argv[2] : "0x7ffffffff000";
        volatile uintptr_t target = (uintptr_t)strtoull(s, NULL, 16);
        void (*fn)(void) = (void (*)(void))target;
        fn();
        printf("jump returned?!\n");
    } else if (!strcmp(mode, "peek") || !strcmp(mode, "poke")) {
        /* Read or write one byte at the hex address argv[2] (system pages, page tables…). */
        volatile unsigned char *p = (volatile unsigned char *)(uintptr_t)strtoull(argc > 2 ? argv[2] : "0", NULL, 16);
        if (mode[1] == 'e') printf("peek read %d\n", *p);
        else { *p = 0x90; printf("poke wrote\n"); }
    } else if (!strcmp(mode, "stack")) {
        printf("depth %d\n", recurse(0));
    } else if (!strcmp(mode, "efault")) {
        do_efault();
        return 0;
    } else if (!strcmp(mode, "bomb")) {
        return do_bomb(argc > 2 ? atol(argv[2]) : 0);
    } else if (!strcmp(mode, "abort")) {
        abort();
    } else if (!strcmp(mode, "raise")) {
        raise(SIGTERM);
    } else {
        fprintf(stderr, "usage: faults null|ud2|div0|divovf|loop|write_text|jump_high [hex]|peek hex|poke hex|stack|efault|bomb [cap]|abort|raise\n");
        return 2;
    }
    printf("faults: mode %s did not terminate the process\n", mode);
    return 1;
}
