// Page-right changes, timed by the program itself (CLOCK_MONOTONIC around the loop, so start-up
// is not counted). Prints "<name> <total ms> <ns per iteration>". With "serve" it pauses
// instead (in kvmbox) and the host calls bench(mode, n), which returns ns per iteration.
//   roundtrip N   mprotect(PROT_NONE) then mprotect(PROT_READ|PROT_WRITE) of one touched page
//   jitflip N     a JIT's W^X cycle: mprotect RW, patch the code, mprotect RX, call it
//   mapunmap N    mmap a page, touch it, munmap it
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../guest/include/kvmbox.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static const char *const MODES[] = {"roundtrip", "jitflip", "mapunmap"};

static double run(const char *mode, long n) {
  const int page = 4096;
  unsigned char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  p[0] = 0xC3; // ret
  long sum = 0;
  double start = now_ns();
  if (!strcmp(mode, "roundtrip")) {
    for (long i = 0; i < n; i++) {
      mprotect(p, page, PROT_NONE);
      mprotect(p, page, PROT_READ | PROT_WRITE);
      sum += p[0];
    }
  } else if (!strcmp(mode, "jitflip")) {
    for (long i = 0; i < n; i++) {
      mprotect(p, page, PROT_READ | PROT_WRITE);
      p[0] = 0xB8; // mov $i, %eax; ret
      int v = (int)i;
      memcpy(p + 1, &v, 4);
      p[5] = 0xC3;
      mprotect(p, page, PROT_READ | PROT_EXEC);
      sum += ((int (*)(void))p)();
    }
  } else if (!strcmp(mode, "mapunmap")) {
    for (long i = 0; i < n; i++) {
      volatile char *m = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      m[0] = 1;
      sum += m[0];
      munmap((void *)m, page);
    }
  } else {
    return -1;
  }
  munmap(p, page);
  double ns = now_ns() - start;
  return sum == -1 ? -1 : ns; // sum keeps the loop
}

KVMBOX_EXPORT long bench(long mode, long n) {
  if (mode < 0 || mode > 2 || n <= 0) return -1;
  return (long)(run(MODES[mode], n) / n);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  if (!strcmp(argv[1], "serve")) return kvmbox_pause() < 0 ? 3 : 0;
  double ns = run(argv[1], atol(argv[2]));
  if (ns < 0) return 2;
  printf("%s %.3f %.1f\n", argv[1], ns / 1e6, ns / atol(argv[2]));
  return 0;
}
