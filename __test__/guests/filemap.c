// File mappings: MAP_PRIVATE reads the file, writes stay private (the file and other mappings
// keep the original), offsets, the partial last page, MAP_FIXED over anonymous memory and back,
// munmap then anonymous memory at the same place (zeros). Prints what it sees, so the test
// compares with the native run. Usage: filemap FILE (at least 3 pages long, not page-aligned).
// `filemap FILE serve` maps the file and pauses (kvmbox), for snapshot/fork/reset tests.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

#define PAGE 4096

static int fd;
static long size;
static char *mapped;

KVMBOX_EXPORT long read_byte(long off) { return (unsigned char)mapped[off]; }
KVMBOX_EXPORT long write_byte(long off, long v) {
  mapped[off] = (char)v;
  return 0;
}
KVMBOX_EXPORT long map_new(long off) {
  char *p = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, off);
  return p == MAP_FAILED ? -1 : (long)p;
}
KVMBOX_EXPORT long byte_at(long addr) { return *(volatile unsigned char *)addr; }
KVMBOX_EXPORT long sum_all(void) {
  long sum = 0;
  for (long i = 0; i < size; i += 64) sum += (unsigned char)mapped[i];
  return sum;
}
KVMBOX_EXPORT long file_byte(long off) {
  unsigned char c = 0;
  return pread(fd, &c, 1, off) == 1 ? c : -1;
}

static long pages(long n) { return (n + PAGE - 1) / PAGE * PAGE; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return 3;
  size = st.st_size;
  mapped = mmap(NULL, pages(size), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (mapped == MAP_FAILED) return 4;
  if (argc > 2) return kvmbox_pause() < 0 ? 5 : 0;

  printf("size %ld, first %c, last %c, after the end %d\n", size, mapped[0], mapped[size - 1], mapped[size]);
  mapped[0] = 'X';
  mapped[PAGE + 1] = 'Y';
  unsigned char c;
  pread(fd, &c, 1, 0);
  printf("written privately: %c %c; the file still has %c\n", mapped[0], mapped[PAGE + 1], c);
  char *again = mmap(NULL, pages(size), PROT_READ, MAP_PRIVATE, fd, 0);
  printf("a second mapping sees %c %c\n", again[0], again[PAGE + 1]);
  char *off = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, PAGE);
  printf("at offset %d: %.8s (file: %.8s)\n", PAGE, off, again + PAGE);

  // MAP_FIXED of the file over anonymous memory holding data, then anonymous memory again.
  char *anon = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  memset(anon, 'a', 2 * PAGE);
  mmap(anon, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
  printf("file over anonymous memory: %c, next page still %c\n", anon[0], anon[PAGE]);
  mmap(anon, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  printf("anonymous again: %d\n", anon[0]);

  // munmap, then fresh anonymous memory where the file was: zeros, never the file.
  munmap(mapped, pages(size));
  char *fresh = mmap(mapped, pages(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  long nonzero = 0;
  for (long i = 0; i < pages(size); i++) nonzero += fresh[i] != 0;
  printf("after munmap, fresh memory there has %ld nonzero bytes\n", nonzero);
  madvise(again, pages(size), MADV_DONTNEED);
  printf("a read-only file mapping after MADV_DONTNEED: %c\n", again[0]);
  return 0;
}
