// Page rights as Linux enforces them: guard pages, mprotect taking rights away and giving
// them back, munmap, W^X JIT flips (RW -> RX -> RW), RWX code, NX data, read-only data,
// brk shrinking, mremap keeping rights. Every check prints what happened (and, for a fault,
// its si_code and where it hit), so the test compares the run with the native one.
// With an argument, the program instead dies of one fault with no handler.
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

static sigjmp_buf jump;
static void *volatile fault_addr;
static volatile int fault_code;

static void on_segv(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  fault_addr = si->si_addr;
  fault_code = si->si_code;
  siglongjmp(jump, 1);
}

static int try_read(volatile char *p) {
  if (sigsetjmp(jump, 1)) return 1;
  (void)*p;
  return 0;
}

static int try_write(volatile char *p, char v) {
  if (sigsetjmp(jump, 1)) return 1;
  *p = v;
  return 0;
}

static int result;
static int try_call(void *code) {
  if (sigsetjmp(jump, 1)) return 1;
  result = ((int (*)(void))code)();
  return 0;
}

static const char *code_name(int c) {
  return c == SEGV_MAPERR ? "MAPERR" : c == SEGV_ACCERR ? "ACCERR" : "other";
}

static void report(const char *what, int faulted, void *base) {
  printf("%-44s %s", what, faulted ? "fault" : "ok");
  if (faulted) printf(" %s at %+ld", code_name(fault_code), (long)((char *)fault_addr - (char *)base));
  printf("\n");
}

#define PAGE 4096

// mov $value, %eax; ret
static void emit(unsigned char *at, int value) {
  at[0] = 0xB8;
  memcpy(at + 1, &value, 4);
  at[5] = 0xC3;
}

static const char rodata[PAGE] = "read-only";
static int target = 5;
static int *const relro_pointer = &target; // .data.rel.ro: RELRO where the libc protects it

static int fatal(const char *mode) {
  char *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 90;
  emit((unsigned char *)p, 1);
  if (!strcmp(mode, "guard")) {
    mprotect(p + PAGE, PAGE, PROT_NONE);
    p[PAGE] = 1;
  } else if (!strcmp(mode, "nx")) {
    return ((int (*)(void))p)();
  } else if (!strcmp(mode, "ro")) {
    mprotect(p, PAGE, PROT_READ | PROT_EXEC);
    p[1] = 2;
  } else if (!strcmp(mode, "unmapped")) {
    munmap(p, 2 * PAGE);
    return p[0];
  }
  return 91;
}

// `serve` mode: pages whose rights the host changes through calls, before and after a
// snapshot, to check that forks and resets restore rights as well as contents.
static char *pages;        // page 0: RW holding 'a'; page 1: PROT_NONE holding 'b'
static unsigned char *code; // RX: returns 1

KVMBOX_EXPORT long page_addr(long which) { return (long)(pages + which * PAGE); }
KVMBOX_EXPORT long read_at(long addr) { return try_read((char *)addr) ? -1 : *(volatile char *)addr; }
KVMBOX_EXPORT long write_at(long addr, long v) { return try_write((char *)addr, (char)v) ? -1 : 0; }
KVMBOX_EXPORT long protect(long which, long prot) { return mprotect(pages + which * PAGE, PAGE, (int)prot); }
KVMBOX_EXPORT long unmap(long which) { return munmap(pages + which * PAGE, PAGE); }
KVMBOX_EXPORT long map_new(void) {
  void *m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return m == MAP_FAILED ? -1 : (long)m;
}
KVMBOX_EXPORT long jit_call(void) { return try_call(code) ? -1 : result; }
KVMBOX_EXPORT long jit_set(long v) {
  if (mprotect(code, PAGE, PROT_READ | PROT_WRITE)) return -1;
  emit(code, (int)v);
  return mprotect(code, PAGE, PROT_READ | PROT_EXEC);
}

static void catch_segv(void) {
  struct sigaction sa = {0};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGSEGV, &sa, NULL);
}

static int serve(void) {
  catch_segv();
  pages = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  pages[0] = 'a';
  pages[PAGE] = 'b';
  mprotect(pages + PAGE, PAGE, PROT_NONE);
  code = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  jit_set(1);
  if (kvmbox_pause() < 0) return 3; // not in kvmbox
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0); // no output lost to a fatal fault
  if (argc > 1 && !strcmp(argv[1], "serve")) return serve();
  if (argc > 1) return fatal(argv[1]);
  catch_segv();

  // Guard page in the middle of a mapping; data survives every rights change.
  char *p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  p[PAGE] = 'x';
  printf("mprotect(PROT_NONE): %d\n", mprotect(p + PAGE, PAGE, PROT_NONE));
  report("read a PROT_NONE page", try_read(p + PAGE), p);
  report("write a PROT_NONE page", try_write(p + PAGE + 8, 1), p);
  report("write the page below it", try_write(p, 1), p);
  report("write the page above it", try_write(p + 2 * PAGE, 1), p);
  mprotect(p + PAGE, PAGE, PROT_READ);
  report("read after PROT_READ", try_read(p + PAGE), p);
  printf("data kept: %c\n", p[PAGE]);
  report("write after PROT_READ", try_write(p + PAGE + 16, 1), p);
  mprotect(p + PAGE, PAGE, PROT_READ | PROT_WRITE);
  report("write after PROT_READ|PROT_WRITE", try_write(p + PAGE, 'y'), p);
  printf("data now: %c\n", p[PAGE]);

  // A page taken away for good; its neighbours stay.
  munmap(p + 2 * PAGE, PAGE);
  report("read an unmapped page", try_read(p + 2 * PAGE), p);
  report("read its neighbour", try_read(p + PAGE), p);

  // mprotect's own errors.
  // Linux changes the mapped pages before the hole, then fails.
  int rc = mprotect(p, 3 * PAGE, PROT_READ);
  printf("mprotect over a hole: %d errno %d\n", rc, errno);
  report("write a page before the hole", try_write(p, 2), p);
  rc = mprotect(p + 1, PAGE, PROT_READ | PROT_WRITE);
  printf("mprotect unaligned: %d errno %d\n", rc, errno);
  rc = mprotect(p + 2 * PAGE, PAGE, PROT_READ | PROT_WRITE);
  printf("mprotect of the hole alone: %d errno %d\n", rc, errno);

  // A JIT's W^X cycle: write code, flip to RX, call; flip back, patch, flip, call many times.
  unsigned char *jit = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  emit(jit, 42);
  report("call code in a RW (NX) page", try_call(jit), jit);
  mprotect(jit, PAGE, PROT_READ | PROT_EXEC);
  report("call after RW -> RX", try_call(jit), jit);
  printf("returned %d\n", result);
  report("write the RX page", try_write((char *)jit + 8, 1), jit);
  long sum = 0;
  for (int round = 0; round < 20; round++) {
    mprotect(jit, PAGE, PROT_READ | PROT_WRITE);
    emit(jit, 100 + round);
    mprotect(jit, PAGE, PROT_READ | PROT_EXEC);
    for (int i = 0; i < 1000; i++) sum += ((int (*)(void))jit)();
  }
  printf("20 W^X rounds of 1000 calls: %ld\n", sum);

  // RWX: code that is rewritten in place and called again.
  unsigned char *rwx = mmap(NULL, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  emit(rwx, 7);
  report("call RWX code", try_call(rwx), rwx);
  emit(rwx, 8);
  try_call(rwx);
  printf("RWX returned %d after a rewrite\n", result);
  mprotect(rwx, PAGE, PROT_READ | PROT_WRITE);
  report("call after RWX -> RW", try_call(rwx), rwx);

  // mremap keeps the rights of what it moves.
  mprotect(jit, PAGE, PROT_READ | PROT_EXEC);
  void *moved = mremap(jit, PAGE, 4 * PAGE, MREMAP_MAYMOVE);
  report("call code moved by mremap", try_call(moved), moved);
  report("write code moved by mremap", try_write(moved, 1), moved);
  report("read the grown part", try_read((char *)moved + 3 * PAGE), moved);

  // The program's own read-only data and RELRO.
  report("write .rodata", try_write((char *)rodata + 1, 1), (void *)rodata);
  report("write .data.rel.ro", try_write((char *)&relro_pointer, 1), (void *)&relro_pointer);
  printf("through relro pointer: %d\n", *relro_pointer);

  // The brk heap: pages given back by shrinking it are gone.
  char *old = sbrk(0);
  char *grown = sbrk(4 * PAGE);
  char *page = (char *)(((uintptr_t)old + PAGE - 1) & ~(uintptr_t)(PAGE - 1)) + PAGE;
  report("write the grown heap", try_write(page, 1), page);
  sbrk(-4 * PAGE);
  report("write the heap after shrinking", try_write(page, 1), page);
  (void)grown;

  // A thread-stack-like guard: PROT_NONE at the bottom of a mapping.
  char *stack = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  mprotect(stack, PAGE, PROT_NONE);
  report("write the stack guard", try_write(stack + PAGE - 1, 1), stack);
  report("write just above it", try_write(stack + PAGE, 1), stack);

  // MADV_DONTNEED keeps rights and zeroes the data.
  char *m = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(m, PAGE, MADV_DONTNEED);
  report("write a read-only page after MADV_DONTNEED", try_write(m, 1), m);
  printf("done\n");
  return 0;
}
