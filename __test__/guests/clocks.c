// Clocks: every clock read through libc (the vDSO under kvmbox, as natively) is checked against
// the raw syscall, and monotonic clocks never step back. With `loop N` it times N
// clock_gettime calls, with `rawloop N` N raw clock_gettime syscalls (for the bench); with
// `pause` it stops (kvmbox_pause) so a host can call
// now_ns() across snapshots, forks and resets.
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

static long long libc_ns(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return ns(t);
}

static long long raw_ns(clockid_t c) {
  struct timespec t;
  syscall(SYS_clock_gettime, c, &t);
  return ns(t);
}

/* CLOCK_MONOTONIC through libc, for a host to call. */
KVMBOX_EXPORT long now_ns(void) { return (long)libc_ns(CLOCK_MONOTONIC); }

static const struct { clockid_t id; const char *name; int monotonic; } CLOCKS[] = {
    {CLOCK_REALTIME, "CLOCK_REALTIME", 0},         {CLOCK_MONOTONIC, "CLOCK_MONOTONIC", 1},
    {CLOCK_BOOTTIME, "CLOCK_BOOTTIME", 1},         {CLOCK_REALTIME_COARSE, "CLOCK_REALTIME_COARSE", 0},
    {CLOCK_MONOTONIC_COARSE, "CLOCK_MONOTONIC_COARSE", 1},
};

int main(int argc, char **argv) {
  if (argc > 2 && !strcmp(argv[1], "loop")) {
    long n = atol(argv[2]);
    long long t0 = libc_ns(CLOCK_MONOTONIC), sink = 0;
    for (long i = 0; i < n; i++) sink += libc_ns(CLOCK_MONOTONIC);
    long long t1 = libc_ns(CLOCK_MONOTONIC);
    printf("%lld ns per clock_gettime (%ld calls)%s\n", (t1 - t0) / (n ? n : 1), n, sink == 42 ? "!" : "");
    return 0;
  }
  if (argc > 2 && !strcmp(argv[1], "rawloop")) {
    long n = atol(argv[2]);
    long long t0 = raw_ns(CLOCK_MONOTONIC), sink = 0;
    for (long i = 0; i < n; i++) sink += raw_ns(CLOCK_MONOTONIC);
    long long t1 = raw_ns(CLOCK_MONOTONIC);
    printf("%lld ns per raw clock_gettime syscall (%ld calls)%s\n", (t1 - t0) / (n ? n : 1), n, sink == 42 ? "!" : "");
    return 0;
  }
  if (argc > 1 && !strcmp(argv[1], "pause")) {
    kvmbox_pause();
    return 0;
  }
  for (unsigned k = 0; k < sizeof CLOCKS / sizeof *CLOCKS; k++) {
    long long before = raw_ns(CLOCKS[k].id), prev = libc_ns(CLOCKS[k].id), back = 0;
    for (int i = 0; i < 100000; i++) {
      long long now = libc_ns(CLOCKS[k].id);
      if (CLOCKS[k].monotonic && now < prev) back++;
      prev = now;
    }
    long long after = raw_ns(CLOCKS[k].id);
    // Coarse clocks may lag the precise one by a tick (4 ms at most natively).
    long long slack = strstr(CLOCKS[k].name, "COARSE") ? 10000000 : 0;
    int within = prev + slack >= before && prev <= after + slack;
    printf("%-24s steps back: %lld, between raw syscall reads: %s\n", CLOCKS[k].name, back, within ? "yes" : "no");
  }
  struct timeval tv;
  struct timespec rt;
  gettimeofday(&tv, NULL);
  clock_gettime(CLOCK_REALTIME, &rt);
  long long d = ns(rt) - (tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL);
  printf("gettimeofday then CLOCK_REALTIME: %s\n", d >= 0 && d < 100000000 ? "in order, close" : "off");
  time_t t = time(NULL);
  printf("time() within a second of CLOCK_REALTIME: %s\n", rt.tv_sec - t <= 1 && t - rt.tv_sec <= 1 ? "yes" : "no");
  int cpu = sched_getcpu();
  printf("sched_getcpu: %s\n", cpu >= 0 && cpu < 4096 ? "ok" : "failed");
  return 0;
}
