/* signals [mode]  -- signal delivery scenarios (built for glibc, static-pie and musl, -pthread).
 *
 * Every line printed depends only on the program, never on timing, addresses or how threads
 * interleave: signal numbers are printed by name, si_code by name, addresses and values only as
 * yes/no checks, and event orders only where Linux defines them. Handlers never call stdio:
 * they record what they saw in globals (or append to an event log with async-signal-safe code)
 * and the main code prints afterwards. A failed sanity check prints "FAIL (line N): ..." to
 * stderr and exits 1.
 *
 * Waits for "the other thread is blocked in a syscall now" never rely on sleeping long enough:
 * the signalling side keeps sending (1 ms apart) until the handler reports, from the
 * interrupted context in its ucontext, that it interrupted the syscall (rip right after a
 * `syscall` instruction with rax = -EINTR, or rewound onto it for a restart).
 *
 * Modes run by default (no argument), in this order; each prints "== <mode> ==" first:
 *   segv          SA_SIGINFO SIGSEGV handler + sigsetjmp/siglongjmp, 3 rounds: NULL write
 *                 (SEGV_MAPERR, si_addr 0), write to .rodata (SEGV_ACCERR, si_addr = the
 *                 address); a non-canonical address (#GP: SI_KERNEL, si_addr 0); hlt in user
 *                 mode (#GP); a handler that repairs the faulting store's pointer register in
 *                 its ucontext and returns (the store is retried and completes)
 *   fpe           1/0 and INT_MIN/-1 (volatile): SIGFPE FPE_INTDIV, si_addr = rip, siglongjmp
 *   ill           ud2: SIGILL ILL_ILLOPN, si_addr = rip; siglongjmp, and a handler that skips
 *                 the ud2 by editing REG_RIP in its ucontext and returns
 *   trap          int3: SIGTRAP (SI_KERNEL), rip is after the int3; the handler returns and
 *                 execution continues
 *   raise         raise()/kill(getpid()) run the handler before returning; the interrupted code
 *                 resumes; si_code/si_pid/si_uid seen by an SA_SIGINFO handler; SA_RESETHAND
 *                 (the disposition becomes SIG_DFL, sa_flags are kept); SA_NODEFER (nesting
 *                 depth 2) vs the default (depth 1, the second delivery after the handler
 *                 returns); sa_mask defers SIGUSR2 raised in the SIGUSR1 handler until it
 *                 returns; registers, extended state, the red zone and DF across a handler;
 *                 sigaction/signal return old actions
 *   mask          sigprocmask block/raise/sigpending/unblock order; standard signals do not
 *                 queue, real-time ones do; two pending signals unblocked at once (Linux nests
 *                 the second handler inside the first); sigwaitinfo (SI_USER, SI_TKILL),
 *                 sigwait, sigtimedwait timeout -> EAGAIN; SIGKILL/SIGSTOP cannot be blocked or
 *                 caught; invalid signal numbers and sigset sizes; unknown sa_flags bits are
 *                 dropped; a blocked ignored signal stays pending; SIG_IGN discards a pending one
 *   alarm         setitimer(ITIMER_REAL, 20 ms, 20 ms) ticks interrupt a syscall-free busy loop
 *                 (FP state preserved across them); alarm() return values; pause() -> EINTR
 *   timer         timer_create(CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN, sival_int 42):
 *                 sigwaitinfo gets SI_TIMER and 42; a periodic timer with a handler;
 *                 SIGEV_THREAD_ID to a worker thread; timer_delete
 *   sigsuspend    another thread pthread_kill()s the main thread, blocked in sigsuspend with
 *                 SIGUSR1 otherwise blocked: handler, -1 EINTR, old mask back; sigsuspend with
 *                 the signal already pending returns at once
 *   altstack      stack overflow (unbounded recursion) caught by a SIGSEGV handler running on
 *                 a sigaltstack (SA_ONSTACK), twice; sigaltstack errors
 *   restart       a thread blocked in FUTEX_WAIT / sem_wait / nanosleep is sent SIGUSR1: with
 *                 SA_RESTART the wait goes on (the syscall is rewound), without it -1 EINTR;
 *                 nanosleep is EINTR either way
 *   thread-signal pthread_kill runs the handler on the target thread; a process-directed signal
 *                 goes to the only thread not blocking it; raise() in a thread and a fault in a
 *                 thread stay in that thread; new threads inherit the creator's mask
 *
 * Modes only run when named (not part of the default run); each prints "== <mode> ==" first
 * (flushed):
 *   segv-mprotect   a SIGSEGV handler mprotect()s a read-only page writable and returns: the
 *                   write is retried and completes (kvmbox's mprotect cannot change page rights
 *                   yet, see README "Limits", so this one is not compared)
 *   default-term    raise(SIGTERM) without a handler: killed by SIGTERM
 *   default-ignore  raise SIGCHLD, SIGURG, SIGWINCH, SIGCONT without handlers, and SIGUSR1 set
 *                   to SIG_IGN: nothing happens, exit 0
 *   abort           abort(): killed by SIGABRT
 *   abort-handler   abort() with a SIGABRT handler that returns: the handler runs (it writes a
 *                   line), then the process is killed by SIGABRT anyway
 *   unhandled-segv  NULL write without a handler: killed by SIGSEGV
 *   blocked-fault   a SIGSEGV handler is installed but SIGSEGV is blocked; NULL write: Linux
 *                   kills the process with SIGSEGV without running the handler
 *   ignored-fault   SIGSEGV set to SIG_IGN; NULL write: killed by SIGSEGV
 * Unknown mode: usage on stderr, exit 2. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

/* <linux/futex.h> is not in musl-gcc's include path. */
#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129

#ifndef sigev_notify_thread_id /* glibc < 2.41 has no name for it */
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL (line %d): ", __LINE__);                                         \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* pthread functions return the error number. */
#define PT(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECK(rc_ == 0, "%s returned %d (%s)", #call, rc_, strerror(rc_));                         \
    } while (0)

/* libc calls returning -1 and setting errno. */
#define OK(call)                                                                                   \
    do {                                                                                           \
        if ((call) != 0) CHECK(0, "%s failed: %s", #call, strerror(errno));                        \
    } while (0)

static const char *yes(int b) { return b ? "yes" : "no"; }

static const char *err_name(int e) {
    switch (e) {
    case 0: return "0";
    case EINTR: return "EINTR";
    case EAGAIN: return "EAGAIN";
    case EINVAL: return "EINVAL";
    case EPERM: return "EPERM";
    case ENOMEM: return "ENOMEM";
    case ESRCH: return "ESRCH";
    case EFAULT: return "EFAULT";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOSYS: return "ENOSYS";
    default: return "other";
    }
}

static const char *sig_name(int s) {
    switch (s) {
    case 0: return "0";
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGCHLD: return "SIGCHLD";
    case SIGCONT: return "SIGCONT";
    case SIGSTOP: return "SIGSTOP";
    case SIGURG: return "SIGURG";
    case SIGWINCH: return "SIGWINCH";
    default:
        if (s == SIGRTMIN) return "SIGRTMIN";
        if (s == SIGRTMIN + 1) return "SIGRTMIN+1";
        return "other";
    }
}

static const char *code_name(int signo, int code) {
    switch (code) {
    case SI_USER: return "SI_USER";
    case SI_KERNEL: return "SI_KERNEL";
    case SI_QUEUE: return "SI_QUEUE";
    case SI_TIMER: return "SI_TIMER";
    case SI_TKILL: return "SI_TKILL";
    default: break;
    }
    if (signo == SIGSEGV && code == SEGV_MAPERR) return "SEGV_MAPERR";
    if (signo == SIGSEGV && code == SEGV_ACCERR) return "SEGV_ACCERR";
    if (signo == SIGFPE && code == FPE_INTDIV) return "FPE_INTDIV";
    if (signo == SIGFPE && code == FPE_INTOVF) return "FPE_INTOVF";
    if (signo == SIGILL && code == ILL_ILLOPN) return "ILL_ILLOPN";
    if (signo == SIGILL && code == ILL_ILLOPC) return "ILL_ILLOPC";
    if (signo == SIGILL && code == ILL_PRVOPC) return "ILL_PRVOPC";
    if (signo == SIGTRAP && code == TRAP_BRKPT) return "TRAP_BRKPT";
    if (signo == SIGTRAP && code == TRAP_TRACE) return "TRAP_TRACE";
    return "other";
}

static pid_t my_tid(void) { return (pid_t)syscall(SYS_gettid); }

static void install(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    OK(sigaction(sig, &sa, NULL));
}

static void install_info(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = flags | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    OK(sigaction(sig, &sa, NULL));
}

static void set_default(int sig) { install(sig, SIG_DFL, 0); }

static void mask_one(int how, int sig) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    OK(sigprocmask(how, &s, NULL));
}

static int is_blocked(int sig) {
    sigset_t cur;
    OK(sigprocmask(SIG_BLOCK, NULL, &cur));
    return sigismember(&cur, sig) == 1;
}

static int is_pending(int sig) {
    sigset_t p;
    OK(sigpending(&p));
    return sigismember(&p, sig) == 1;
}

static int none_pending(void) {
    sigset_t p;
    OK(sigpending(&p));
    for (int s = 1; s < 65; s++)
        if (sigismember(&p, s) == 1) return 0;
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) CHECK(errno == EINTR, "nanosleep: %s", strerror(errno));
}

/* An event log handlers can append to (async-signal-safe: no stdio, no malloc). */
static char evlog[1024];
static volatile int evlen;

static void ev(const char *s) {
    int n = evlen;
    if (n && n < (int)sizeof evlog - 1) evlog[n++] = ' ';
    while (*s && n < (int)sizeof evlog - 1) evlog[n++] = *s++;
    evlog[n] = 0;
    evlen = n;
}

static void ev_reset(void) {
    evlen = 0;
    evlog[0] = 0;
}

/* ---------------------------------------------------------------- synchronous faults */

/* What the catching handler saw; it then siglongjmp()s back to catch_fault(). */
static sigjmp_buf fault_jmp;
static volatile int caught_signo, caught_code;
static void *volatile caught_addr;
static volatile uintptr_t caught_rip;

static void catching_handler(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    caught_signo = si->si_signo == sig ? sig : -1;
    caught_code = si->si_code;
    caught_addr = si->si_addr;
    caught_rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    siglongjmp(fault_jmp, 1);
}

/* Runs fn; returns 1 if a signal handler siglongjmp()ed out of it. sigsetjmp(.., 1) saves the
 * mask, so the signal (blocked while its handler runs) is unblocked again afterwards. */
static int catch_fault(void (*fn)(void)) {
    caught_signo = 0;
    caught_code = 0;
    caught_addr = (void *)1;
    caught_rip = 0;
    if (sigsetjmp(fault_jmp, 1) == 0) {
        fn();
        return 0;
    }
    return 1;
}

/* volatile: gcc must not see the NULL store (it would replace it by ud2). */
static int *volatile null_ptr;
static const char RODATA[64] = "a read-only string in .rodata";
static const char *volatile rodata_ptr = RODATA + 8;
static volatile uintptr_t noncanonical = 0x8000000000000000ULL;

static void write_null(void) { *null_ptr = 1; }
static void write_rodata(void) { *(volatile char *)rodata_ptr = 'X'; }
static void write_noncanonical(void) { *(volatile int *)noncanonical = 1; }
static void do_hlt(void) { __asm__ volatile("hlt"); }

/* A handler that repairs the fault and returns: the faulting instruction runs again. The
 * pointer is in rbx; the handler points rbx at a valid variable in the ucontext. */
static volatile int fixup_target, fixup_runs, fixup_code_ok, fixup_addr_ok;

static void fixup_rbx_handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    ucontext_t *uc = ctx;
    fixup_runs++;
    fixup_code_ok = si->si_code == SEGV_MAPERR;
    fixup_addr_ok = si->si_addr == NULL && uc->uc_mcontext.gregs[REG_RBX] == 0;
    uc->uc_mcontext.gregs[REG_RBX] = (greg_t)(uintptr_t)&fixup_target;
}

static void store_42_via_rbx(int *p) { __asm__ volatile("movl $42, (%%rbx)" : "+b"(p) : : "memory"); }

/* The same repaired with mprotect() (not in the default run: kvmbox's mprotect cannot change
 * page rights yet, see README "Limits"). */
static char *fixup_page;
static volatile int mprotect_runs, mprotect_code_ok, mprotect_addr_ok;

static void fixup_mprotect_handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    mprotect_runs++;
    mprotect_code_ok = si->si_code == SEGV_ACCERR;
    mprotect_addr_ok = (char *)si->si_addr == fixup_page + 100;
    mprotect(fixup_page, 4096, PROT_READ | PROT_WRITE);
}

static void scenario_segv_mprotect(void) {
    fixup_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(fixup_page != MAP_FAILED, "mmap: %s", strerror(errno));
    fixup_page[100] = 1;
    OK(mprotect(fixup_page, 4096, PROT_READ));
    install_info(SIGSEGV, fixup_mprotect_handler, 0);
    *(volatile char *)(fixup_page + 100) = 42;
    printf("mprotect fix-up: handler ran %d time(s), SEGV_ACCERR: %s, si_addr ok: %s, write completed: %s\n",
           mprotect_runs, yes(mprotect_code_ok), yes(mprotect_addr_ok), yes(fixup_page[100] == 42));
    munmap(fixup_page, 4096);
    set_default(SIGSEGV);
}

static void scenario_segv(void) {
    install_info(SIGSEGV, catching_handler, 0);
    for (int round = 1; round <= 3; round++) {
        int c = catch_fault(write_null);
        printf("round %d: NULL write: caught=%s si_signo=%s si_code=%s si_addr is the address: %s\n", round, yes(c),
               sig_name(caught_signo), code_name(caught_signo, caught_code), yes(caught_addr == NULL));
        c = catch_fault(write_rodata);
        printf("round %d: .rodata write: caught=%s si_signo=%s si_code=%s si_addr is the address: %s\n", round, yes(c),
               sig_name(caught_signo), code_name(caught_signo, caught_code), yes(caught_addr == rodata_ptr));
        printf("round %d: SIGSEGV blocked after siglongjmp: %s\n", round, yes(is_blocked(SIGSEGV)));
    }
    printf(".rodata unchanged: %s\n", yes(strcmp(RODATA, "a read-only string in .rodata") == 0));

    int c = catch_fault(write_noncanonical);
    printf("non-canonical address write: caught=%s si_signo=%s si_code=%s si_addr is 0: %s\n", yes(c),
           sig_name(caught_signo), code_name(caught_signo, caught_code), yes(caught_addr == NULL));
    c = catch_fault(do_hlt);
    printf("hlt in user mode: caught=%s si_signo=%s si_code=%s si_addr is 0: %s\n", yes(c), sig_name(caught_signo),
           code_name(caught_signo, caught_code), yes(caught_addr == NULL));

    /* A handler that repairs the fault (in the saved registers) and returns. */
    install_info(SIGSEGV, fixup_rbx_handler, 0);
    fixup_target = 0;
    store_42_via_rbx(NULL);
    printf("register fix-up: handler ran %d time(s), SEGV_MAPERR: %s, si_addr and rbx 0: %s, "
           "the store was retried with the new rbx: %s\n",
           fixup_runs, yes(fixup_code_ok), yes(fixup_addr_ok), yes(fixup_target == 42));
    set_default(SIGSEGV);
}

/* ---------------------------------------------------------------- fpe */

static volatile int int_one = 1, int_zero = 0, int_min = INT_MIN, int_minus_one = -1;
static volatile int int_sink;
static void div_zero(void) { int_sink = int_one / int_zero; }
static void div_overflow(void) { int_sink = int_min / int_minus_one; }

static void scenario_fpe(void) {
    install_info(SIGFPE, catching_handler, 0);
    for (int round = 1; round <= 2; round++) {
        int c = catch_fault(div_zero);
        printf("round %d: 1/0: caught=%s si_signo=%s si_code=%s si_addr == rip: %s\n", round, yes(c),
               sig_name(caught_signo), code_name(caught_signo, caught_code), yes((uintptr_t)caught_addr == caught_rip));
    }
    int c = catch_fault(div_overflow);
    printf("INT_MIN/-1: caught=%s si_signo=%s si_code=%s si_addr == rip: %s\n", yes(c), sig_name(caught_signo),
           code_name(caught_signo, caught_code), yes((uintptr_t)caught_addr == caught_rip));
    set_default(SIGFPE);
}

/* ---------------------------------------------------------------- ill */

static void do_ud2(void) { __builtin_trap(); }

static volatile int skip_runs, skip_saw_ud2, skip_code;
static void skip_ud2_handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    ucontext_t *uc = ctx;
    const unsigned char *rip = (const unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    skip_runs++;
    skip_code = si->si_code;
    skip_saw_ud2 = rip[0] == 0x0f && rip[1] == 0x0b && (void *)rip == si->si_addr;
    uc->uc_mcontext.gregs[REG_RIP] += 2; /* continue after the ud2 */
}

static void scenario_ill(void) {
    install_info(SIGILL, catching_handler, 0);
    for (int round = 1; round <= 2; round++) {
        int c = catch_fault(do_ud2);
        const unsigned char *rip = (const unsigned char *)caught_rip;
        printf("round %d: ud2: caught=%s si_signo=%s si_code=%s si_addr == rip: %s rip at the ud2: %s\n", round,
               yes(c), sig_name(caught_signo), code_name(caught_signo, caught_code),
               yes((uintptr_t)caught_addr == caught_rip), yes(rip && rip[0] == 0x0f && rip[1] == 0x0b));
    }
    install_info(SIGILL, skip_ud2_handler, 0);
    volatile int after = 0;
    __asm__ volatile("ud2" ::: "memory");
    after = 1;
    printf("handler moved REG_RIP past the ud2 and returned: runs=%d si_code=%s saw the ud2: %s continued: %s\n",
           skip_runs, code_name(SIGILL, skip_code), yes(skip_saw_ud2), yes(after));
    set_default(SIGILL);
}

/* ---------------------------------------------------------------- trap */

static volatile int trap_runs, trap_signo, trap_code, trap_rip_after_int3;
static void trap_handler(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    const unsigned char *rip = (const unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    trap_runs++;
    trap_signo = si->si_signo == sig ? sig : -1;
    trap_code = si->si_code;
    trap_rip_after_int3 = rip[-1] == 0xcc;
}

static void scenario_trap(void) {
    install_info(SIGTRAP, trap_handler, 0);
    volatile int steps = 0;
    for (int i = 0; i < 3; i++) {
        steps++;
        __asm__ volatile("int3" ::: "memory");
        steps++;
    }
    printf("int3 x3: handler runs=%d si_signo=%s si_code=%s rip after the int3: %s execution continued: %s\n",
           trap_runs, sig_name(trap_signo), code_name(trap_signo, trap_code), yes(trap_rip_after_int3),
           yes(steps == 6));
    set_default(SIGTRAP);
}

/* ---------------------------------------------------------------- raise */

static volatile sig_atomic_t flag, flag_blocked_inside;
static void set_flag(int sig) {
    flag = sig;
    flag_blocked_inside = is_blocked(sig);
}

static volatile long global_value;
static void add_ten(int sig) {
    (void)sig;
    global_value += 10;
}

static volatile int depth, max_depth, calls;
static void nesting_handler(int sig) {
    calls++;
    depth++;
    if (depth > max_depth) max_depth = depth;
    if (calls == 1) raise(sig);
    depth--;
}

static volatile int info_code, info_pid_ok, info_uid_ok;
static void record_info(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    info_code = si->si_code;
    info_pid_ok = si->si_pid == getpid();
    info_uid_ok = si->si_uid == getuid();
}

static void usr1_logs_and_raises_usr2(int sig) {
    (void)sig;
    ev("usr1:begin");
    raise(SIGUSR2);
    ev(is_pending(SIGUSR2) ? "usr1:usr2-pending" : "usr1:usr2-not-pending");
    ev("usr1:end");
}
static void usr2_logs(int sig) {
    (void)sig;
    ev("usr2");
}

/* Registers across a handler. The signal is sent by a `syscall` in inline assembly, so the
 * handler runs exactly between two known instructions: before it, the 128-byte red zone below
 * rsp is filled, r8-r10 and xmm0-15 hold patterns and DF is set; the handler (which must start
 * with DF clear and rsp 16-byte aligned after the call, as the ABI says) overwrites all those
 * registers; after it, everything must be as before (rt_sigreturn restores the registers and
 * the extended state; the frame was put below the red zone). */
static volatile int handler_df_clear, handler_aligned;
__attribute__((noinline)) static void clobbering_handler(int sig) {
    (void)sig;
    unsigned long fl;
    __asm__ volatile("pushf\n\tpop %0" : "=r"(fl));
    handler_df_clear = !(fl & 0x400);
    handler_aligned = ((uintptr_t)__builtin_frame_address(0) & 15) == 0;
    __asm__ volatile("mov $-1, %%r8\n\tmov $-1, %%r9\n\tmov $-1, %%r10\n\t"
                     "mov $-1, %%rdx\n\tmov $-1, %%rsi\n\tmov $-1, %%rdi\n\t"
                     "pcmpeqd %%xmm0, %%xmm0\n\tpcmpeqd %%xmm1, %%xmm1\n\tpcmpeqd %%xmm2, %%xmm2\n\t"
                     "pcmpeqd %%xmm3, %%xmm3\n\tpcmpeqd %%xmm4, %%xmm4\n\tpcmpeqd %%xmm5, %%xmm5\n\t"
                     "pcmpeqd %%xmm6, %%xmm6\n\tpcmpeqd %%xmm7, %%xmm7\n\tpcmpeqd %%xmm8, %%xmm8\n\t"
                     "pcmpeqd %%xmm9, %%xmm9\n\tpcmpeqd %%xmm10, %%xmm10\n\tpcmpeqd %%xmm11, %%xmm11\n\t"
                     "pcmpeqd %%xmm12, %%xmm12\n\tpcmpeqd %%xmm13, %%xmm13\n\tpcmpeqd %%xmm14, %%xmm14\n\t"
                     "pcmpeqd %%xmm15, %%xmm15" ::
                         : "r8", "r9", "r10", "rdx", "rsi", "rdi", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
                           "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

struct regs_after {
    unsigned long r8, r9, r10, rdi, rsi, rdx, flags, redzone_bad;
};

__attribute__((noinline)) static void tgkill_with_live_state(const unsigned char *xin, unsigned char *xout,
                                                              struct regs_after *g) {
    long pid = getpid(), tid = my_tid(), sig = SIGUSR1;
    __asm__ volatile(
        /* red zone: the quadword at rsp+off holds off, for off = -8 .. -128 */
        "mov $-8, %%rcx\n"
        "1: mov %%rcx, (%%rsp,%%rcx)\n\tsub $8, %%rcx\n\tcmp $-128, %%rcx\n\tjge 1b\n\t"
        "movdqu 0(%[xin]), %%xmm0\n\tmovdqu 16(%[xin]), %%xmm1\n\tmovdqu 32(%[xin]), %%xmm2\n\t"
        "movdqu 48(%[xin]), %%xmm3\n\tmovdqu 64(%[xin]), %%xmm4\n\tmovdqu 80(%[xin]), %%xmm5\n\t"
        "movdqu 96(%[xin]), %%xmm6\n\tmovdqu 112(%[xin]), %%xmm7\n\tmovdqu 128(%[xin]), %%xmm8\n\t"
        "movdqu 144(%[xin]), %%xmm9\n\tmovdqu 160(%[xin]), %%xmm10\n\tmovdqu 176(%[xin]), %%xmm11\n\t"
        "movdqu 192(%[xin]), %%xmm12\n\tmovdqu 208(%[xin]), %%xmm13\n\tmovdqu 224(%[xin]), %%xmm14\n\t"
        "movdqu 240(%[xin]), %%xmm15\n\t"
        "movabs $0x1111111111111111, %%r8\n\tmovabs $0x2222222222222222, %%r9\n\t"
        "movabs $0x3333333333333333, %%r10\n\t"
        "std\n\t"
        "mov $234, %%eax\n\t" /* tgkill(pid, tid, SIGUSR1): the handler runs on the way back */
        "syscall\n\t"
        /* the red zone first: pushf below writes into it */
        "xor %%eax, %%eax\n\tmov $-8, %%rcx\n"
        "2: cmp %%rcx, (%%rsp,%%rcx)\n\tje 3f\n\tinc %%eax\n"
        "3: sub $8, %%rcx\n\tcmp $-128, %%rcx\n\tjge 2b\n\t"
        "mov %%rax, 56(%[g])\n\t"
        "pushf\n\tpop %%rcx\n\tmov %%rcx, 48(%[g])\n\tcld\n\t"
        "mov %%r8, 0(%[g])\n\tmov %%r9, 8(%[g])\n\tmov %%r10, 16(%[g])\n\t"
        "mov %%rdi, 24(%[g])\n\tmov %%rsi, 32(%[g])\n\tmov %%rdx, 40(%[g])\n\t"
        "movdqu %%xmm0, 0(%[xout])\n\tmovdqu %%xmm1, 16(%[xout])\n\tmovdqu %%xmm2, 32(%[xout])\n\t"
        "movdqu %%xmm3, 48(%[xout])\n\tmovdqu %%xmm4, 64(%[xout])\n\tmovdqu %%xmm5, 80(%[xout])\n\t"
        "movdqu %%xmm6, 96(%[xout])\n\tmovdqu %%xmm7, 112(%[xout])\n\tmovdqu %%xmm8, 128(%[xout])\n\t"
        "movdqu %%xmm9, 144(%[xout])\n\tmovdqu %%xmm10, 160(%[xout])\n\tmovdqu %%xmm11, 176(%[xout])\n\t"
        "movdqu %%xmm12, 192(%[xout])\n\tmovdqu %%xmm13, 208(%[xout])\n\tmovdqu %%xmm14, 224(%[xout])\n\t"
        "movdqu %%xmm15, 240(%[xout])"
        : "+D"(pid), "+S"(tid), "+d"(sig)
        : [xin] "r"(xin), [xout] "r"(xout), [g] "r"(g)
        : "rax", "rcx", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
          "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
}

static void check_registers_across_handler(void) {
    static unsigned char xin[256], xout[256];
    struct regs_after g;
    for (int i = 0; i < 256; i++) xin[i] = (unsigned char)(i * 7 + 3);
    memset(xout, 0, sizeof xout);
    memset(&g, 0, sizeof g);
    handler_df_clear = handler_aligned = 0;
    install(SIGUSR1, clobbering_handler, 0);
    long pid = getpid(), tid = my_tid();
    tgkill_with_live_state(xin, xout, &g);
    printf("registers across a handler: red zone intact: %s, r8-r10 restored: %s, rdi/rsi/rdx restored: %s, "
           "xmm0-15 restored: %s\n",
           yes(g.redzone_bad == 0),
           yes(g.r8 == 0x1111111111111111UL && g.r9 == 0x2222222222222222UL && g.r10 == 0x3333333333333333UL),
           yes(g.rdi == (unsigned long)pid && g.rsi == (unsigned long)tid && g.rdx == SIGUSR1),
           yes(memcmp(xin, xout, sizeof xin) == 0));
    printf("handler entered with DF clear: %s, with the stack aligned as after a call: %s; DF set again after "
           "it: %s\n",
           yes(handler_df_clear), yes(handler_aligned), yes((g.flags & 0x400) != 0));
    set_default(SIGUSR1);
}

static void scenario_raise(void) {
    flag = 0;
    install(SIGUSR1, set_flag, 0);
    int rc = raise(SIGUSR1);
    printf("raise(SIGUSR1)=%d: handler ran before raise returned: %s, SIGUSR1 blocked inside it: %s, "
           "unblocked after: %s\n",
           rc, yes(flag == SIGUSR1), yes(flag_blocked_inside), yes(!is_blocked(SIGUSR1)));

    global_value = 5;
    install(SIGUSR1, add_ten, 0);
    long before = global_value;
    rc = kill(getpid(), SIGUSR1);
    long after = global_value;
    printf("kill(getpid(), SIGUSR1)=%d: the handler changed a global (%ld -> %ld) and the interrupted code resumed\n",
           rc, before, after);

    /* What an SA_SIGINFO handler is told about the sender (libc's sigwaitinfo may rewrite it,
     * see the mask scenario; a handler gets the kernel's siginfo as is). */
    install_info(SIGUSR1, record_info, 0);
    info_code = 12345;
    raise(SIGUSR1);
    printf("SA_SIGINFO handler, raise: si_code=%s si_pid is getpid: %s si_uid is getuid: %s\n",
           code_name(SIGUSR1, info_code), yes(info_pid_ok), yes(info_uid_ok));
    info_code = 12345;
    kill(getpid(), SIGUSR1);
    printf("SA_SIGINFO handler, kill: si_code=%s si_pid is getpid: %s si_uid is getuid: %s\n",
           code_name(SIGUSR1, info_code), yes(info_pid_ok), yes(info_uid_ok));
    info_code = 12345;
    PT(pthread_kill(pthread_self(), SIGUSR1));
    printf("SA_SIGINFO handler, pthread_kill(self): si_code=%s si_pid is getpid: %s\n", code_name(SIGUSR1, info_code),
           yes(info_pid_ok));

    struct sigaction old;
    install(SIGUSR1, set_flag, SA_RESETHAND);
    flag = 0;
    raise(SIGUSR1);
    OK(sigaction(SIGUSR1, NULL, &old));
    printf("SA_RESETHAND: handler ran: %s, disposition now SIG_DFL: %s, sa_flags kept: %s\n", yes(flag == SIGUSR1),
           yes(old.sa_handler == SIG_DFL), yes((old.sa_flags & SA_RESETHAND) != 0));

    depth = max_depth = calls = 0;
    install(SIGUSR1, nesting_handler, SA_NODEFER);
    raise(SIGUSR1);
    printf("SA_NODEFER: handler raised its signal again: calls=%d max nesting depth=%d\n", calls, max_depth);
    depth = max_depth = calls = 0;
    install(SIGUSR1, nesting_handler, 0);
    raise(SIGUSR1);
    printf("without SA_NODEFER: calls=%d max nesting depth=%d (the second ran after the first returned)\n", calls,
           max_depth);

    /* SIGUSR2 is in the SIGUSR1 handler's sa_mask: raised inside it, it waits for it to return. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = usr1_logs_and_raises_usr2;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    OK(sigaction(SIGUSR1, &sa, NULL));
    install(SIGUSR2, usr2_logs, 0);
    ev_reset();
    raise(SIGUSR1);
    ev("main:after-raise");
    printf("sa_mask {SIGUSR2}: %s\n", evlog);
    printf("SIGUSR2 blocked after the handler returned: %s\n", yes(is_blocked(SIGUSR2)));

    /* Old actions come back from sigaction and signal(). */
    OK(sigaction(SIGUSR1, NULL, &old));
    printf("sigaction returns the installed handler and sa_mask: %s\n",
           yes(old.sa_handler == usr1_logs_and_raises_usr2 && sigismember(&old.sa_mask, SIGUSR2) == 1 &&
               sigismember(&old.sa_mask, SIGTERM) == 0 && (old.sa_flags & SA_SIGINFO) == 0));
    void (*prev)(int) = signal(SIGUSR2, SIG_IGN);
    printf("signal() returns the previous handler: %s\n", yes(prev == usr2_logs));
    prev = signal(SIGUSR2, SIG_DFL);
    printf("then SIG_IGN: %s\n", yes(prev == SIG_IGN));
    set_default(SIGUSR1);

    check_registers_across_handler();
}

/* ---------------------------------------------------------------- mask */

static volatile int count_usr1, count_rt;
static void count_usr1_handler(int sig) {
    (void)sig;
    count_usr1++;
    ev("handler");
}
static void count_rt_handler(int sig) {
    (void)sig;
    count_rt++;
}
static void log_usr1(int sig) {
    (void)sig;
    ev("SIGUSR1-handler");
}
static void log_usr2(int sig) {
    (void)sig;
    ev("SIGUSR2-handler");
}

static void scenario_mask(void) {
    ev_reset();
    count_usr1 = 0;
    install(SIGUSR1, count_usr1_handler, 0);
    mask_one(SIG_BLOCK, SIGUSR1);
    raise(SIGUSR1);
    ev(count_usr1 ? "raised(handler-ran!)" : "raised");
    ev(is_pending(SIGUSR1) ? "pending" : "not-pending");
    mask_one(SIG_UNBLOCK, SIGUSR1);
    ev("after-unblock");
    printf("blocked SIGUSR1: %s\n", evlog);
    printf("pending after delivery: %s\n", yes(is_pending(SIGUSR1)));

    /* Standard signals do not queue; real-time signals do. */
    count_usr1 = 0;
    mask_one(SIG_BLOCK, SIGUSR1);
    for (int i = 0; i < 3; i++) raise(SIGUSR1);
    mask_one(SIG_UNBLOCK, SIGUSR1);
    count_rt = 0;
    install(SIGRTMIN, count_rt_handler, 0);
    mask_one(SIG_BLOCK, SIGRTMIN);
    for (int i = 0; i < 3; i++) raise(SIGRTMIN);
    mask_one(SIG_UNBLOCK, SIGRTMIN);
    printf("raised 3 times while blocked: SIGUSR1 handled %d time(s), SIGRTMIN handled %d time(s)\n", count_usr1,
           count_rt);
    set_default(SIGRTMIN);

    /* Two pending signals unblocked at once. Linux dequeues the lowest number first and sets up
     * its frame, then (still on the way back to user mode) the next one's frame on top of it, so
     * SIGUSR2's handler runs first, returning into SIGUSR1's. */
    install(SIGUSR1, log_usr1, 0);
    install(SIGUSR2, log_usr2, 0);
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    OK(sigprocmask(SIG_BLOCK, &both, NULL));
    raise(SIGUSR2);
    raise(SIGUSR1);
    ev_reset();
    OK(sigprocmask(SIG_UNBLOCK, &both, NULL));
    ev("main");
    printf("SIGUSR2 then SIGUSR1 raised while blocked, both unblocked at once: %s\n", evlog);

    /* sigwaitinfo / sigwait / sigtimedwait on a blocked signal. */
    mask_one(SIG_BLOCK, SIGUSR2);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    kill(getpid(), SIGUSR2);
    int s = sigwaitinfo(&both, &si);
    printf("kill + sigwaitinfo: %s si_code=%s si_pid is getpid: %s si_uid is getuid: %s\n", sig_name(s),
           code_name(si.si_signo, si.si_code), yes(si.si_pid == getpid()), yes(si.si_uid == getuid()));
    memset(&si, 0, sizeof si);
    raise(SIGUSR2); /* tgkill: SI_TKILL, which glibc's sigwaitinfo reports as SI_USER */
    s = sigwaitinfo(&both, &si);
    printf("raise + sigwaitinfo: %s si_code=%s si_pid is getpid: %s\n", sig_name(s), code_name(si.si_signo, si.si_code),
           yes(si.si_pid == getpid()));
    raise(SIGUSR2);
    int got = 0;
    int rc = sigwait(&both, &got);
    printf("raise + sigwait: rc=%d sig=%s, nothing pending after: %s\n", rc, sig_name(got), yes(none_pending()));
    struct timespec ten_ms = {0, 10 * 1000000L}, zero = {0, 0};
    errno = 0;
    s = sigtimedwait(&both, &si, &ten_ms);
    printf("sigtimedwait 10 ms, nothing pending: %d %s\n", s, err_name(errno));
    errno = 0;
    s = sigtimedwait(&both, &si, &zero);
    printf("sigtimedwait 0 ms, nothing pending: %d %s\n", s, err_name(errno));
    raise(SIGUSR2);
    s = sigtimedwait(&both, &si, &ten_ms);
    printf("sigtimedwait with SIGUSR2 pending: %s si_code=%s\n", sig_name(s), code_name(si.si_signo, si.si_code));
    OK(sigprocmask(SIG_UNBLOCK, &both, NULL));

    /* SIGKILL and SIGSTOP can be neither blocked nor caught. */
    sigset_t all, cur;
    sigfillset(&all);
    OK(sigprocmask(SIG_SETMASK, &all, &cur));
    printf("sigfillset mask: SIGKILL blocked: %s SIGSTOP blocked: %s SIGUSR1 blocked: %s\n", yes(is_blocked(SIGKILL)),
           yes(is_blocked(SIGSTOP)), yes(is_blocked(SIGUSR1)));
    OK(sigprocmask(SIG_SETMASK, &cur, NULL));
    printf("old mask given back by SIG_SETMASK: SIGUSR1 blocked: %s\n", yes(is_blocked(SIGUSR1)));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = log_usr1;
    errno = 0;
    rc = sigaction(SIGKILL, &sa, NULL);
    printf("sigaction(SIGKILL): %d %s\n", rc, err_name(errno));
    errno = 0;
    rc = sigaction(SIGSTOP, &sa, NULL);
    printf("sigaction(SIGSTOP): %d %s\n", rc, err_name(errno));
    errno = 0;
    long lrc = syscall(SYS_rt_sigaction, 65, NULL, NULL, 8);
    printf("rt_sigaction(65): %ld %s\n", lrc, err_name(errno));
    errno = 0;
    lrc = syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, NULL, 16);
    printf("rt_sigprocmask with sigsetsize 16: %ld %s\n", lrc, err_name(errno));
    printf("kill(getpid(), 0): %d\n", kill(getpid(), 0));

    /* The kernel keeps only the sa_flags bits it knows (so programs can probe for new flags, e.g.
     * SA_UNSUPPORTED 0x400); libcs pass an int, sign-extended: SA_RESETHAND sets bits 32-63. */
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        unsigned long mask;
    } kact = {SIG_IGN, 0xffffffff00000000UL | 0x400 | SA_SIGINFO | SA_RESETHAND, NULL, 0}, kold;
    memset(&kold, 0xff, sizeof kold);
    lrc = syscall(SYS_rt_sigaction, SIGUSR2, &kact, NULL, 8);
    long lrc2 = syscall(SYS_rt_sigaction, SIGUSR2, NULL, &kold, 8);
    printf("raw rt_sigaction with unknown sa_flags bits: %ld, read back: handler SIG_IGN: %s, only the known "
           "flags: %s\n",
           lrc, yes(lrc2 == 0 && kold.handler == SIG_IGN),
           yes(kold.flags == (unsigned long)(SA_SIGINFO | SA_RESETHAND) && kold.mask == 0));
    set_default(SIGUSR2);

    /* Blocked signals are never discarded as ignored when sent (the disposition may change
     * before they are unblocked)... */
    ev_reset();
    install(SIGUSR1, SIG_IGN, 0);
    mask_one(SIG_BLOCK, SIGUSR1);
    raise(SIGUSR1);
    printf("SIG_IGN + blocked SIGUSR1 raised: pending: %s\n", yes(is_pending(SIGUSR1)));
    mask_one(SIG_UNBLOCK, SIGUSR1);
    printf("unblocked: pending: %s, nothing happened: %s\n", yes(is_pending(SIGUSR1)), yes(evlen == 0));
    /* ...but setting SIG_IGN discards one that is pending. */
    install(SIGUSR1, log_usr1, 0);
    mask_one(SIG_BLOCK, SIGUSR1);
    raise(SIGUSR1);
    int was = is_pending(SIGUSR1);
    install(SIGUSR1, SIG_IGN, 0);
    printf("pending SIGUSR1 then SIG_IGN: pending before: %s after: %s\n", yes(was), yes(is_pending(SIGUSR1)));
    install(SIGUSR1, log_usr1, 0);
    mask_one(SIG_UNBLOCK, SIGUSR1);
    printf("unblocked with a handler again: handler ran: %s\n", yes(evlen != 0));
    set_default(SIGUSR1);
    set_default(SIGUSR2);
}

/* ---------------------------------------------------------------- alarm */

static volatile sig_atomic_t ticks;
static volatile double fp_sink;
static void tick(int sig) {
    (void)sig;
    ticks++;
    /* Use the SSE registers, as the interrupted loop does. */
    volatile double x = ticks * 1.75;
    fp_sink = x * x + 0.125;
}

static double fp_step(double acc, long n) { return acc * 0.999 + (double)(n & 7) * 0.5; }

static void set_itimer_ms(long value_ms, long interval_ms) {
    struct itimerval it = {{interval_ms / 1000, (interval_ms % 1000) * 1000},
                           {value_ms / 1000, (value_ms % 1000) * 1000}};
    OK(setitimer(ITIMER_REAL, &it, NULL));
}

static void scenario_alarm(void) {
    install(SIGALRM, tick, 0);
    ticks = 0;
    set_itimer_ms(20, 20);
    struct itimerval cur;
    OK(getitimer(ITIMER_REAL, &cur));
    int armed = (cur.it_value.tv_sec > 0 || cur.it_value.tv_usec > 0) && cur.it_value.tv_sec == 0 &&
                cur.it_value.tv_usec <= 20000 && cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == 20000;
    /* A busy loop without syscalls: only asynchronous delivery can end it. */
    double acc = 0;
    long n = 0;
    while (ticks < 3) acc = fp_step(acc, n++);
    set_itimer_ms(0, 0);
    OK(getitimer(ITIMER_REAL, &cur));
    int disarmed = cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0;
    double again = 0;
    for (long i = 0; i < n; i++) again = fp_step(again, i);
    printf("setitimer 20 ms: getitimer shows it armed: %s\n", yes(armed));
    printf("busy loop ended by SIGALRM ticks (>= 3): %s, FP state intact across the handlers: %s\n", yes(ticks >= 3),
           yes(acc == again));
    printf("disarmed: %s\n", yes(disarmed));

    unsigned a = alarm(5);
    unsigned b = alarm(0);
    unsigned c = alarm(0);
    printf("alarm(5)=%u alarm(0)=%u alarm(0)=%u\n", a, b, c);
    set_itimer_ms(3900, 0);
    printf("alarm(0) after setitimer(3.9 s) = %u (rounded to the nearest second)\n", alarm(0));

    /* pause() until a SIGALRM; a periodic timer so no wake-up can be missed. */
    ticks = 0;
    set_itimer_ms(20, 20);
    errno = 0;
    int rc = pause();
    int e = errno;
    set_itimer_ms(0, 0);
    printf("pause() = %d %s, the SIGALRM handler ran: %s\n", rc, err_name(e), yes(ticks >= 1));
    set_default(SIGALRM);
}

/* ---------------------------------------------------------------- timer */

static volatile int timer_ticks;
static void timer_tick(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    if (si->si_code == SI_TIMER && si->si_value.sival_int == 7) timer_ticks++;
}

static volatile pid_t thread_timer_target, thread_timer_handled_by;
static volatile int thread_timer_code, thread_timer_value;
static void thread_timer_handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    thread_timer_code = si->si_code;
    thread_timer_value = si->si_value.sival_int;
    thread_timer_handled_by = my_tid();
}

static sem_t worker_ready;
static void *timer_target_worker(void *arg) {
    (void)arg;
    thread_timer_target = my_tid();
    sigset_t none;
    sigemptyset(&none);
    sem_post(&worker_ready);
    /* SIGRTMIN+1 is blocked in this thread too, except while in sigsuspend. */
    while (!thread_timer_handled_by) sigsuspend(&none);
    return NULL;
}

static void scenario_timer(void) {
    /* One-shot, collected with sigwaitinfo. */
    struct sigevent sev;
    timer_t t;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN;
    sev.sigev_value.sival_int = 42;
    mask_one(SIG_BLOCK, SIGRTMIN);
    OK(timer_create(CLOCK_MONOTONIC, &sev, &t));
    struct itimerspec its = {{0, 0}, {0, 10 * 1000000L}}, cur;
    OK(timer_settime(t, 0, &its, NULL));
    sigset_t rtmin;
    sigemptyset(&rtmin);
    sigaddset(&rtmin, SIGRTMIN);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int s = sigwaitinfo(&rtmin, &si);
    printf("one-shot 10 ms timer: sigwaitinfo=%s si_code=%s si_value=%d\n", sig_name(s),
           code_name(si.si_signo, si.si_code), si.si_value.sival_int);
    OK(timer_gettime(t, &cur));
    printf("after expiry: timer_gettime shows it disarmed: %s, timer_getoverrun=%d\n",
           yes(cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0), timer_getoverrun(t));
    OK(timer_delete(t));
    errno = 0;
    int rc = timer_delete(t);
    /* musl returns the raw syscall result here (-EINVAL, errno untouched); glibc -1 EINVAL. */
    printf("timer_delete=0, again: %s\n", rc == -1 ? err_name(errno) : rc == -EINVAL ? "-EINVAL" : "other");

    /* Periodic, with an SA_SIGINFO handler, waited for with sigsuspend. */
    install_info(SIGRTMIN, timer_tick, 0);
    sev.sigev_value.sival_int = 7;
    OK(timer_create(CLOCK_MONOTONIC, &sev, &t));
    struct itimerspec periodic = {{0, 5 * 1000000L}, {0, 5 * 1000000L}};
    OK(timer_settime(t, 0, &periodic, NULL));
    OK(timer_gettime(t, &cur));
    printf("periodic 5 ms timer: timer_gettime interval 5 ms: %s\n",
           yes(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 5 * 1000000L));
    sigset_t waitmask;
    OK(sigprocmask(SIG_BLOCK, NULL, &waitmask));
    sigdelset(&waitmask, SIGRTMIN);
    timer_ticks = 0;
    while (timer_ticks < 3) {
        errno = 0;
        rc = sigsuspend(&waitmask);
        CHECK(rc == -1 && errno == EINTR, "sigsuspend: %d %s", rc, strerror(errno));
    }
    OK(timer_delete(t));
    printf("periodic timer: handler saw SI_TIMER with si_value 7 at least 3 times: %s\n", yes(timer_ticks >= 3));
    /* A tick may still be pending from before the delete: collect it. */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&rtmin, &si, &zero) > 0) {
    }
    mask_one(SIG_UNBLOCK, SIGRTMIN);
    set_default(SIGRTMIN);

    /* SIGEV_THREAD_ID: to one thread. The worker is in sigsuspend; the main thread sleeps with
     * the signal unblocked, so a process-directed signal could land on it. */
    int sig = SIGRTMIN + 1;
    install_info(sig, thread_timer_handler, 0);
    mask_one(SIG_BLOCK, sig); /* inherited by the worker */
    thread_timer_target = thread_timer_handled_by = 0;
    CHECK(sem_init(&worker_ready, 0, 0) == 0, "sem_init");
    pthread_t w;
    PT(pthread_create(&w, NULL, timer_target_worker, NULL));
    while (sem_wait(&worker_ready) != 0) {
    }
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = sig;
    sev.sigev_value.sival_int = 99;
    sev.sigev_notify_thread_id = thread_timer_target;
    OK(timer_create(CLOCK_MONOTONIC, &sev, &t));
    OK(timer_settime(t, 0, &its, NULL));
    mask_one(SIG_UNBLOCK, sig);
    while (!thread_timer_handled_by) sleep_ms(1);
    pid_t by = thread_timer_handled_by;
    if (by != thread_timer_target) pthread_kill(w, sig); /* release the worker */
    PT(pthread_join(w, NULL));
    OK(timer_delete(t));
    printf("SIGEV_THREAD_ID timer: handled by the target thread: %s si_code=%s si_value=%d\n",
           yes(by == thread_timer_target), code_name(sig, thread_timer_code), thread_timer_value);
    set_default(sig);
    sem_destroy(&worker_ready);
}

/* ---------------------------------------------------------------- sigsuspend */

static volatile int suspend_handler_ran;
static void suspend_handler(int sig) {
    (void)sig;
    suspend_handler_ran++;
}

static pthread_t main_thread;
static void *kill_main_later(void *arg) {
    (void)arg;
    sleep_ms(10);
    PT(pthread_kill(main_thread, SIGUSR1));
    return NULL;
}

static void scenario_sigsuspend(void) {
    install(SIGUSR1, suspend_handler, 0);
    mask_one(SIG_BLOCK, SIGUSR1);
    suspend_handler_ran = 0;
    main_thread = pthread_self();
    pthread_t t;
    PT(pthread_create(&t, NULL, kill_main_later, NULL));
    sigset_t empty;
    sigemptyset(&empty);
    errno = 0;
    int rc = sigsuspend(&empty);
    int e = errno;
    int ran = suspend_handler_ran;
    PT(pthread_join(t, NULL));
    printf("sigsuspend(empty mask) = %d %s, handler ran once: %s, SIGUSR1 blocked again after: %s\n", rc, err_name(e),
           yes(ran == 1), yes(is_blocked(SIGUSR1)));

    /* Already pending when sigsuspend is called: returns at once. */
    raise(SIGUSR1);
    errno = 0;
    rc = sigsuspend(&empty);
    printf("sigsuspend with SIGUSR1 already pending = %d %s, handler ran: %s\n", rc, err_name(errno),
           yes(suspend_handler_ran == 2));
    mask_one(SIG_UNBLOCK, SIGUSR1);
    set_default(SIGUSR1);
}

/* ---------------------------------------------------------------- altstack */

#define ALTSTACK_SIZE (64 * 1024)
static char *altstack;
static sigjmp_buf overflow_jmp;
static volatile int overflow_signo, overflow_on_alt, overflow_aligned, overflow_onstack_flag, overflow_change_errno;

__attribute__((noinline)) static void overflow_handler(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    char local;
    overflow_signo = si->si_signo == sig ? sig : -1;
    overflow_on_alt = &local > altstack && &local < altstack + ALTSTACK_SIZE;
    overflow_aligned = ((uintptr_t)__builtin_frame_address(0) & 15) == 0;
    stack_t cur;
    overflow_onstack_flag = sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_ONSTACK) != 0;
    /* Changing the alternate stack while running on it is refused. */
    stack_t other = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    overflow_change_errno = sigaltstack(&other, NULL) == 0 ? 0 : errno;
    siglongjmp(overflow_jmp, 1);
}

static volatile int keep_recursing = 1;
static volatile long recursion_depth;
__attribute__((noinline)) static int recurse(int depth) {
    volatile char pad[4096];
    pad[0] = (char)depth;
    pad[4095] = (char)depth;
    recursion_depth = depth;
    if (!keep_recursing) return depth;
    return recurse(depth + 1) + pad[0] + pad[4095]; /* not a tail call */
}

static void scenario_altstack(void) {
    /* The main thread's stack grows up to RLIMIT_STACK: bound it (natively it may be unlimited). */
    struct rlimit rl;
    OK(getrlimit(RLIMIT_STACK, &rl));
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 64UL << 20) {
        rl.rlim_cur = 8UL << 20;
        OK(setrlimit(RLIMIT_STACK, &rl));
    }

    stack_t ss, old;
    OK(sigaltstack(NULL, &old));
    printf("initially: SS_DISABLE: %s\n", yes(old.ss_flags == SS_DISABLE));
    ss.ss_sp = malloc(1024);
    ss.ss_size = 1024;
    ss.ss_flags = 0;
    errno = 0;
    int rc = sigaltstack(&ss, NULL);
    printf("sigaltstack with 1 KiB (< MINSIGSTKSZ): %d %s\n", rc, err_name(errno));
    free(ss.ss_sp);
    ss.ss_flags = 12345;
    ss.ss_sp = NULL;
    ss.ss_size = ALTSTACK_SIZE;
    errno = 0;
    rc = sigaltstack(&ss, NULL);
    printf("sigaltstack with bad flags: %d %s\n", rc, err_name(errno));

    altstack = malloc(ALTSTACK_SIZE);
    CHECK(altstack, "malloc");
    ss.ss_sp = altstack;
    ss.ss_size = ALTSTACK_SIZE;
    ss.ss_flags = 0;
    OK(sigaltstack(&ss, NULL));
    OK(sigaltstack(NULL, &old));
    printf("installed: ss_sp/ss_size read back: %s, ss_flags=0: %s\n",
           yes(old.ss_sp == altstack && old.ss_size == ALTSTACK_SIZE), yes(old.ss_flags == 0));
    install_info(SIGSEGV, overflow_handler, SA_ONSTACK);
    for (int round = 1; round <= 2; round++) {
        overflow_signo = overflow_on_alt = overflow_aligned = overflow_onstack_flag = 0;
        overflow_change_errno = -1;
        recursion_depth = 0;
        volatile int caught = 0;
        if (sigsetjmp(overflow_jmp, 1) == 0)
            recurse(0);
        else
            caught = 1;
        printf("round %d: caught overflow: %s signal=%s deep (> 100 frames of 4 KiB): %s\n", round, yes(caught),
               sig_name(overflow_signo), yes(recursion_depth > 100));
        printf("round %d: handler ran on the alternate stack: %s (aligned: %s), sigaltstack said SS_ONSTACK: %s, "
               "changing it from the handler: %s\n",
               round, yes(overflow_on_alt), yes(overflow_aligned), yes(overflow_onstack_flag),
               err_name(overflow_change_errno));
        OK(sigaltstack(NULL, &old));
        printf("round %d: back on the normal stack: %s\n", round, yes((old.ss_flags & SS_ONSTACK) == 0));
    }
    set_default(SIGSEGV);
    ss.ss_flags = SS_DISABLE;
    OK(sigaltstack(&ss, NULL));
    OK(sigaltstack(NULL, &old));
    printf("disabled: %s\n", yes(old.ss_flags == SS_DISABLE));
    free(altstack);
}

/* ---------------------------------------------------------------- restart */

/* Where the handler found the interrupted thread: in a syscall that returns -EINTR (rip right
 * after the `syscall` instruction, rax = -EINTR), or in one the kernel restarts (rip rewound
 * onto the `syscall` instruction, rax = the syscall number again). */
static volatile int hit_eintr, hit_restart, handler_runs;
static volatile long hit_nr;
static void probe_handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)si;
    ucontext_t *uc = ctx;
    const unsigned char *rip = (const unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    long rax = uc->uc_mcontext.gregs[REG_RAX];
    handler_runs++;
    if (rip[-2] == 0x0f && rip[-1] == 0x05 && rax == -EINTR) {
        hit_eintr++;
    } else if (rip[0] == 0x0f && rip[1] == 0x05 && (rax == SYS_futex || rax == SYS_restart_syscall)) {
        hit_nr = rax;
        hit_restart++;
    }
}

static int futex_word;
static volatile int waiter_started, waiter_rc, waiter_errno, waiter_rem_ok;
static sem_t restart_sem;

static void *futex_waiter(void *arg) {
    (void)arg;
    waiter_started = 1;
    int rc = 0, e = 0;
    while (__atomic_load_n(&futex_word, __ATOMIC_SEQ_CST) == 0) {
        rc = (int)syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        e = rc ? errno : 0;
        if (rc == -1 && e == EINTR) break;
    }
    waiter_rc = rc == -1 && e == EINTR ? -1 : 0;
    waiter_errno = rc == -1 && e == EINTR ? EINTR : 0;
    return NULL;
}

static void *sem_waiter(void *arg) {
    (void)arg;
    waiter_started = 1;
    int rc = sem_wait(&restart_sem);
    waiter_rc = rc;
    waiter_errno = rc ? errno : 0;
    return NULL;
}

static void *nanosleep_waiter(void *arg) {
    (void)arg;
    waiter_started = 1;
    struct timespec ts = {10, 0}, rem = {0, 0};
    int rc = nanosleep(&ts, &rem);
    waiter_rc = rc;
    waiter_errno = rc ? errno : 0;
    /* Written (not 0) and about what was left: the kernel counts from the timer's hard expiry
     * (with the 50 us timer slack), so an early interrupt leaves slightly more than 10 s. */
    waiter_rem_ok = rem.tv_sec <= 10 && (rem.tv_sec > 0 || rem.tv_nsec > 0);
    return NULL;
}

/* Starts fn in a thread, sends it SIGUSR1 until the handler reports it interrupted a syscall,
 * then wakes it with `wake` (if given) and joins it. */
static void interrupt_waiter(void *(*fn)(void *), void (*wake)(void)) {
    hit_eintr = hit_restart = handler_runs = 0;
    hit_nr = 0;
    waiter_started = 0;
    waiter_rc = waiter_errno = 12345;
    pthread_t t;
    PT(pthread_create(&t, NULL, fn, NULL));
    while (!waiter_started) sleep_ms(1);
    while (!hit_eintr && !hit_restart) {
        PT(pthread_kill(t, SIGUSR1));
        sleep_ms(1);
    }
    if (wake) wake();
    PT(pthread_join(t, NULL));
}

static void wake_futex(void) {
    __atomic_store_n(&futex_word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}
static void wake_sem(void) { sem_post(&restart_sem); }

static void scenario_restart(void) {
    for (int restart = 1; restart >= 0; restart--) {
        const char *how = restart ? "SA_RESTART" : "no SA_RESTART";
        install_info(SIGUSR1, probe_handler, restart ? SA_RESTART : 0);

        futex_word = 0;
        interrupt_waiter(futex_waiter, restart ? wake_futex : NULL);
        const char *as = !hit_restart ? "" : hit_nr == SYS_futex ? " (futex)" : " (restart_syscall)";
        printf("%s: FUTEX_WAIT interrupted: %s, restarted: %s%s, returned %d %s\n", how, yes(hit_eintr || hit_restart),
               yes(hit_restart != 0), as, waiter_rc, err_name(waiter_errno));

        CHECK(sem_init(&restart_sem, 0, 0) == 0, "sem_init");
        interrupt_waiter(sem_waiter, restart ? wake_sem : NULL);
        printf("%s: sem_wait interrupted: %s, restarted: %s, returned %d %s\n", how, yes(hit_eintr || hit_restart),
               yes(hit_restart != 0), waiter_rc, err_name(waiter_errno));
        sem_destroy(&restart_sem);

        waiter_rem_ok = 0;
        interrupt_waiter(nanosleep_waiter, NULL);
        printf("%s: nanosleep(10 s) interrupted: %s, restarted: %s, returned %d %s, remaining time set: %s\n", how,
               yes(hit_eintr || hit_restart), yes(hit_restart != 0), waiter_rc, err_name(waiter_errno),
               yes(waiter_rem_ok));
    }
    set_default(SIGUSR1);
}

/* ---------------------------------------------------------------- thread-signal */

static volatile pid_t handled_tid;
static volatile int thread_handler_runs;
static void record_tid(int sig) {
    (void)sig;
    handled_tid = my_tid();
    thread_handler_runs++;
}

static volatile pid_t worker_tids[3];
static volatile int worker_inherited_mask[3];
static sem_t ready_sem, release_sem;

/* Worker 0 waits in sigsuspend (nothing blocked while there); 1 and 2 block SIGUSR2 and wait on
 * a semaphore. All were created with SIGUSR1 and SIGUSR2 blocked. */
static void *signal_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    worker_tids[id] = my_tid();
    worker_inherited_mask[id] = is_blocked(SIGUSR1) && is_blocked(SIGUSR2);
    if (id == 0) {
        sigset_t none;
        sigemptyset(&none);
        sem_post(&ready_sem);
        while (!thread_handler_runs) sigsuspend(&none);
    } else {
        sem_post(&ready_sem);
        while (sem_wait(&release_sem) != 0) {
        }
    }
    return NULL;
}

static volatile pid_t raised_in, raised_handled_by;
static void record_raise(int sig) {
    (void)sig;
    raised_handled_by = my_tid();
}
static void *raising_worker(void *arg) {
    (void)arg;
    raised_in = my_tid();
    raise(SIGUSR1);
    return NULL;
}

/* A fault in a worker thread is delivered to that thread. */
static volatile pid_t fault_thread_tid, fault_handled_by;
static sigjmp_buf thread_fault_jmp;
static void thread_fault_handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)si;
    (void)ctx;
    fault_handled_by = my_tid();
    siglongjmp(thread_fault_jmp, 1);
}
static void *faulting_worker(void *arg) {
    (void)arg;
    fault_thread_tid = my_tid();
    if (sigsetjmp(thread_fault_jmp, 1) == 0) write_null();
    return NULL;
}

static void *pthread_kill_target(void *arg) {
    (void)arg;
    worker_tids[0] = my_tid();
    mask_one(SIG_UNBLOCK, SIGUSR1);
    sem_post(&ready_sem);
    sigset_t none;
    sigemptyset(&none);
    while (!thread_handler_runs) sigsuspend(&none);
    return NULL;
}

static void scenario_thread_signal(void) {
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    CHECK(sem_init(&ready_sem, 0, 0) == 0, "sem_init");
    CHECK(sem_init(&release_sem, 0, 0) == 0, "sem_init");

    /* pthread_kill to one thread. The main thread leaves SIGUSR1 unblocked. */
    install(SIGUSR1, record_tid, 0);
    mask_one(SIG_BLOCK, SIGUSR1);
    pthread_t t;
    handled_tid = 0;
    thread_handler_runs = 0;
    PT(pthread_create(&t, NULL, pthread_kill_target, NULL));
    while (sem_wait(&ready_sem) != 0) {
    }
    mask_one(SIG_UNBLOCK, SIGUSR1);
    PT(pthread_kill(t, SIGUSR1));
    PT(pthread_join(t, NULL));
    printf("pthread_kill: handler ran once, on the target thread: %s\n",
           yes(thread_handler_runs == 1 && handled_tid == worker_tids[0]));

    /* A process-directed signal goes to the only thread that does not block it. */
    install(SIGUSR2, record_tid, 0);
    OK(sigprocmask(SIG_BLOCK, &both, NULL));
    handled_tid = 0;
    thread_handler_runs = 0;
    pthread_t w[3];
    for (int i = 0; i < 3; i++) PT(pthread_create(&w[i], NULL, signal_worker, (void *)(intptr_t)i));
    for (int i = 0; i < 3; i++)
        while (sem_wait(&ready_sem) != 0) {
        }
    kill(getpid(), SIGUSR2);
    PT(pthread_join(w[0], NULL));
    sem_post(&release_sem);
    sem_post(&release_sem);
    PT(pthread_join(w[1], NULL));
    PT(pthread_join(w[2], NULL));
    printf("kill(getpid(), SIGUSR2) blocked everywhere but in one thread: handled once, by that thread: %s\n",
           yes(thread_handler_runs == 1 && handled_tid == worker_tids[0]));
    printf("new threads inherit the creator's mask: %s\n",
           yes(worker_inherited_mask[0] && worker_inherited_mask[1] && worker_inherited_mask[2]));
    printf("main thread's mask unchanged: %s\n", yes(is_blocked(SIGUSR1) && is_blocked(SIGUSR2)));
    OK(sigprocmask(SIG_UNBLOCK, &both, NULL));

    /* raise() in a thread is delivered to that thread. */
    install(SIGUSR1, record_raise, 0);
    raised_in = raised_handled_by = 0;
    PT(pthread_create(&t, NULL, raising_worker, NULL));
    PT(pthread_join(t, NULL));
    printf("raise() in a thread: handled by that thread: %s\n", yes(raised_in && raised_handled_by == raised_in));

    install_info(SIGSEGV, thread_fault_handler, 0);
    fault_thread_tid = fault_handled_by = 0;
    PT(pthread_create(&t, NULL, faulting_worker, NULL));
    PT(pthread_join(t, NULL));
    set_default(SIGSEGV);
    printf("NULL write in a thread: SIGSEGV handled by that thread: %s\n",
           yes(fault_thread_tid && fault_handled_by == fault_thread_tid));

    /* pthread_kill with signal 0 checks the thread exists. */
    printf("pthread_kill(self, 0): %s\n", err_name(pthread_kill(pthread_self(), 0)));
    set_default(SIGUSR1);
    set_default(SIGUSR2);
    sem_destroy(&ready_sem);
    sem_destroy(&release_sem);
}

/* ---------------------------------------------------------------- modes that end the process */

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

static void abort_handler(int sig) {
    (void)sig;
    say("SIGABRT handler ran and returns\n");
}

static void never_called(int sig) {
    (void)sig;
    say("not reached: the handler of a blocked fault ran\n");
    _exit(9);
}

static int run_fatal_mode(const char *mode) {
    if (strcmp(mode, "default-term") == 0) {
        raise(SIGTERM);
        printf("not reached\n");
        return 0;
    }
    if (strcmp(mode, "default-ignore") == 0) {
        static const int sigs[] = {SIGCHLD, SIGURG, SIGWINCH, SIGCONT};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
            int rc = raise(sigs[i]);
            printf("raise(%s) with the default action (ignore): %d, still running\n", sig_name(sigs[i]), rc);
        }
        install(SIGUSR1, SIG_IGN, 0);
        printf("raise(SIGUSR1) set to SIG_IGN: %d, still running\n", raise(SIGUSR1));
        printf("kill(getpid(), SIGUSR1) set to SIG_IGN: %d, still running\n", kill(getpid(), SIGUSR1));
        printf("nothing pending: %s\n", yes(none_pending()));
        return 0;
    }
    if (strcmp(mode, "abort") == 0) {
        abort();
    }
    if (strcmp(mode, "abort-handler") == 0) {
        install(SIGABRT, abort_handler, 0);
        abort();
    }
    if (strcmp(mode, "unhandled-segv") == 0) {
        write_null();
        printf("not reached\n");
        return 0;
    }
    if (strcmp(mode, "blocked-fault") == 0) {
        install(SIGSEGV, never_called, 0);
        mask_one(SIG_BLOCK, SIGSEGV);
        write_null();
        printf("not reached\n");
        return 0;
    }
    if (strcmp(mode, "ignored-fault") == 0) {
        install(SIGSEGV, SIG_IGN, 0);
        write_null();
        printf("not reached\n");
        return 0;
    }
    return -1;
}

/* ---------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*fn)(void);
} DEFAULT_SCENARIOS[] = {
    {"segv", scenario_segv},
    {"fpe", scenario_fpe},
    {"ill", scenario_ill},
    {"trap", scenario_trap},
    {"raise", scenario_raise},
    {"mask", scenario_mask},
    {"alarm", scenario_alarm},
    {"timer", scenario_timer},
    {"sigsuspend", scenario_sigsuspend},
    {"altstack", scenario_altstack},
    {"restart", scenario_restart},
    {"thread-signal", scenario_thread_signal},
};
#define N_DEFAULT (sizeof DEFAULT_SCENARIOS / sizeof DEFAULT_SCENARIOS[0])

static const struct {
    const char *name;
    void (*fn)(void);
} EXTRA_SCENARIOS[] = {
    {"segv-mprotect", scenario_segv_mprotect},
};
#define N_EXTRA (sizeof EXTRA_SCENARIOS / sizeof EXTRA_SCENARIOS[0])

static const char *const FATAL_MODES[] = {"default-term",   "default-ignore", "abort",        "abort-handler",
                                          "unhandled-segv", "blocked-fault",  "ignored-fault"};

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : NULL;
    if (!mode) {
        for (size_t i = 0; i < N_DEFAULT; i++) {
            printf("== %s ==\n", DEFAULT_SCENARIOS[i].name);
            DEFAULT_SCENARIOS[i].fn();
            CHECK(none_pending(), "a signal is still pending after %s", DEFAULT_SCENARIOS[i].name);
        }
        return 0;
    }
    for (size_t i = 0; i < N_DEFAULT; i++) {
        if (strcmp(mode, DEFAULT_SCENARIOS[i].name) == 0) {
            printf("== %s ==\n", mode);
            DEFAULT_SCENARIOS[i].fn();
            CHECK(none_pending(), "a signal is still pending after %s", mode);
            return 0;
        }
    }
    for (size_t i = 0; i < N_EXTRA; i++) {
        if (strcmp(mode, EXTRA_SCENARIOS[i].name) == 0) {
            printf("== %s ==\n", mode);
            EXTRA_SCENARIOS[i].fn();
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof FATAL_MODES / sizeof FATAL_MODES[0]; i++) {
        if (strcmp(mode, FATAL_MODES[i]) == 0) {
            printf("== %s ==\n", mode);
            fflush(stdout);
            return run_fatal_mode(mode);
        }
    }
    fprintf(stderr, "usage: signals [segv|fpe|ill|trap|raise|mask|alarm|timer|sigsuspend|altstack|restart|"
                    "thread-signal|segv-mprotect|default-term|default-ignore|abort|abort-handler|unhandled-segv|"
                    "blocked-fault|ignored-fault]\n");
    return 2;
}
