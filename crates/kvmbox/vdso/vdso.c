/*
 * kvmbox's vDSO: clock_gettime, gettimeofday, time and getcpu in guest user code, without a VM
 * exit. The host keeps a parameters page (`kvmbox_vvar`, the page just below this image) current:
 * a TSC reading and the clocks' values at that moment, and how to turn TSC ticks into
 * nanoseconds. Clocks it does not cover, and any call while it says "off", go to the real
 * syscall, which the host emulates. Built by scripts/build-vdso.sh into vdso.so (checked in);
 * src/vdso.rs documents the page's layout, which must match `struct vvar` here.
 */
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;

struct timespec { i64 tv_sec; i64 tv_nsec; };
struct timeval { i64 tv_sec; i64 tv_usec; };

struct vvar {
    volatile u32 seq;      /* changes whenever the host rewrites the page */
    volatile u32 enabled;  /* 0: every call goes to the syscall */
    volatile u64 tsc_base; /* TSC at the reference moment */
    volatile u64 mult;     /* ns = ((tsc - tsc_base) * mult) >> shift */
    volatile u32 shift;
    volatile u32 pad;
    volatile u64 mono_ns;  /* CLOCK_MONOTONIC at tsc_base */
    volatile u64 real_ns;  /* CLOCK_REALTIME at tsc_base */
    volatile u64 boot_ns;  /* CLOCK_BOOTTIME at tsc_base */
};

extern const struct vvar kvmbox_vvar __attribute__((visibility("hidden")));

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define CLOCK_REALTIME_COARSE 5
#define CLOCK_MONOTONIC_COARSE 6
#define CLOCK_BOOTTIME 7

static inline u64 rdtsc_ordered(void) {
    u32 lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((u64)hi << 32) | lo;
}

static inline long syscall2(long nr, long a, long b) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "0"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}

/* The clock's value now in nanoseconds; 0 when the page says to ask the host. */
static int read_ns(int clock, u64 *out) {
    const struct vvar *v = &kvmbox_vvar;
    u32 seq;
    u64 ns;
    do {
        seq = v->seq;
        __asm__ volatile("" ::: "memory");
        if (!v->enabled) return 0;
        u64 ticks = rdtsc_ordered() - v->tsc_base;
        if ((long)ticks < 0) ticks = 0; /* never before the reference moment */
        u64 delta = (u64)(((unsigned __int128)ticks * v->mult) >> v->shift);
        switch (clock) {
        case CLOCK_REALTIME:
        case CLOCK_REALTIME_COARSE:
            ns = v->real_ns + delta;
            break;
        case CLOCK_BOOTTIME:
            ns = v->boot_ns + delta;
            break;
        default:
            ns = v->mono_ns + delta;
            break;
        }
        __asm__ volatile("" ::: "memory");
    } while (seq != v->seq); /* rewritten while this thread was preempted: read again */
    *out = ns;
    return 1;
}

static int covered(int clock) {
    return clock == CLOCK_REALTIME || clock == CLOCK_MONOTONIC || clock == CLOCK_REALTIME_COARSE ||
           clock == CLOCK_MONOTONIC_COARSE || clock == CLOCK_BOOTTIME;
}

int __vdso_clock_gettime(int clock, struct timespec *ts) {
    u64 ns;
    if (covered(clock) && read_ns(clock, &ns)) {
        ts->tv_sec = (i64)(ns / 1000000000UL);
        ts->tv_nsec = (i64)(ns % 1000000000UL);
        return 0;
    }
    return (int)syscall2(228, clock, (long)ts);
}

int __vdso_gettimeofday(struct timeval *tv, void *tz) {
    u64 ns;
    if (tz == 0 && read_ns(CLOCK_REALTIME, &ns)) {
        if (tv) {
            tv->tv_sec = (i64)(ns / 1000000000UL);
            tv->tv_usec = (i64)(ns % 1000000000UL / 1000);
        }
        return 0;
    }
    return (int)syscall2(96, (long)tv, (long)tz);
}

i64 __vdso_time(i64 *t) {
    u64 ns;
    if (!read_ns(CLOCK_REALTIME, &ns)) return syscall2(201, (long)t, 0);
    i64 s = (i64)(ns / 1000000000UL);
    if (t) *t = s;
    return s;
}

int __vdso_getcpu(unsigned *cpu, unsigned *node, void *unused) {
    (void)unused;
    if (cpu) *cpu = 0; /* one vCPU */
    if (node) *node = 0;
    return 0;
}

int __vdso_clock_getres(int clock, struct timespec *res) {
    return (int)syscall2(229, clock, (long)res);
}

int clock_gettime(int, struct timespec *) __attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct timeval *, void *) __attribute__((weak, alias("__vdso_gettimeofday")));
i64 time(i64 *) __attribute__((weak, alias("__vdso_time")));
int getcpu(unsigned *, unsigned *, void *) __attribute__((weak, alias("__vdso_getcpu")));
int clock_getres(int, struct timespec *) __attribute__((weak, alias("__vdso_clock_getres")));
