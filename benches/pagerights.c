// Page-right changes, timed by the program itself (CLOCK_MONOTONIC around the loop, so start-up
// is not counted). Prints "<name> <total ms> <ns per iteration>".
//   roundtrip N   mprotect(PROT_NONE) then mprotect(PROT_READ|PROT_WRITE) of one touched page
//   jitflip N     a JIT's W^X cycle: mprotect RW, patch the code, mprotect RX, call it
//   mapunmap N    mmap a page, touch it, munmap it
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *mode = argv[1];
  long n = atol(argv[2]);
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
    return 2;
  }
  double ns = now_ns() - start;
  if (sum == -1) return 3; // keep the loop
  printf("%s %.3f %.1f\n", mode, ns / 1e6, ns / n);
  return 0;
}
