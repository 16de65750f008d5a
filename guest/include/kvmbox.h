/*
 * kvmbox guest ABI — include this in a guest program (C or C++) to talk to the host.
 *
 * Everything goes through the x86-64 `syscall` instruction with the Linux register
 * convention (number in rax; arguments in rdi, rsi, rdx, r10, r8, r9; result in rax), so any
 * language that can make a raw syscall can use the ABI without this header:
 *
 *   number                      meaning
 *   0 … 0xFFFF                  Linux syscalls (emulated by kvmbox; the host may override any)
 *   0x10000 … 0xFFFFF           host calls: handled by the embedder's vm.onSyscall(nr, handler);
 *                               unhandled numbers return -ENOSYS (-38)
 *   0x100000 (KVMBOX_SYS_PAUSE) "initialized, ready for calls": the host's run() returns
 *                               { status: 'paused' }; the host may now call exported functions;
 *                               the next run() resumes here and kvmbox_pause() returns 0
 *   0x100001                    reserved: kvmbox's call-return trampoline (-ENOSYS elsewhere)
 *
 * Functions the host calls with vm.call() are ordinary SysV x86-64 functions of up to six
 * integer/pointer arguments returning an integer (rax). Mark them KVMBOX_EXPORT so the
 * compiler keeps them (and their symbol) even if nothing in the program calls them.
 * To hand back bytes, write them into a Buffer argument (Buffers are copied in and back out)
 * or return a pointer the host reads with vm.memory.read().
 *
 * Per-request entropy: a snapshot's forks and resets all start from the same memory, so every
 * request would see the same PRNG state (same rand() sequence, hash seeds, UUIDs). A guest that
 * defines
 *     KVMBOX_EXPORT void kvmbox_reseed(const unsigned char *bytes, long len)
 * is called by kvmbox with KVMBOX_RESEED_BYTES fresh random bytes from the host after every
 * fork() and reset() — re-seed PRNGs there (it runs like any called function: keep it short).
 * getrandom() and AT_RANDOM are always fresh host randomness.
 *
 * Run natively (outside kvmbox), kvmbox_pause() and kvmbox_hostcall() return -ENOSYS.
 */
#ifndef KVMBOX_H
#define KVMBOX_H

#define KVMBOX_HOSTCALL_FIRST 0x10000L
#define KVMBOX_HOSTCALL_LAST 0xFFFFFL
#define KVMBOX_SYS_PAUSE 0x100000L
#define KVMBOX_RESEED_BYTES 32

#ifdef __cplusplus
#define KVMBOX_EXTERN_C extern "C"
#else
#define KVMBOX_EXTERN_C
#endif

/* Keep a function callable from the host: not inlined away, not garbage-collected. */
#define KVMBOX_EXPORT KVMBOX_EXTERN_C __attribute__((used, noinline, visibility("default")))

static inline long kvmbox_syscall6(long nr, long a0, long a1, long a2, long a3, long a4, long a5) {
    long ret;
    register long r10 __asm__("r10") = a3;
    register long r8 __asm__("r8") = a4;
    register long r9 __asm__("r9") = a5;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* Tell the host the program is initialized; returns 0 when the host resumes it. */
static inline long kvmbox_pause(void) {
    return kvmbox_syscall6(KVMBOX_SYS_PAUSE, 0, 0, 0, 0, 0, 0);
}

/* A host call: `nr` in [KVMBOX_HOSTCALL_FIRST, KVMBOX_HOSTCALL_LAST]; returns the handler's value. */
static inline long kvmbox_hostcall(long nr, long a0, long a1, long a2, long a3, long a4, long a5) {
    return kvmbox_syscall6(nr, a0, a1, a2, a3, a4, a5);
}
static inline long kvmbox_hostcall0(long nr) { return kvmbox_syscall6(nr, 0, 0, 0, 0, 0, 0); }
static inline long kvmbox_hostcall1(long nr, long a0) { return kvmbox_syscall6(nr, a0, 0, 0, 0, 0, 0); }
static inline long kvmbox_hostcall2(long nr, long a0, long a1) { return kvmbox_syscall6(nr, a0, a1, 0, 0, 0, 0); }
static inline long kvmbox_hostcall3(long nr, long a0, long a1, long a2) { return kvmbox_syscall6(nr, a0, a1, a2, 0, 0, 0); }
static inline long kvmbox_hostcall4(long nr, long a0, long a1, long a2, long a3) {
    return kvmbox_syscall6(nr, a0, a1, a2, a3, 0, 0);
}

#endif /* KVMBOX_H */
