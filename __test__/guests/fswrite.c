// Writable files: what a program does in /tmp (create, write, read back, rename, link,
// symlink, directories, metadata, locks), printed so a native run and a kvmbox run compare.
// Everything happens in a fresh directory below $TMPDIR (default /tmp); names printed are
// relative to it.
//
// With arguments it runs commands instead, one after another, for targeted tests:
//   put PATH TEXT | append PATH TEXT | cat PATH | ls DIR | rm PATH | mkdir DIR | rmdir DIR
//   fill PATH BYTES (write zeros until BYTES or an error) | pause (kvmbox_pause: a snapshot point)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

// musl has no renameat2 wrapper.
#define RENAME2(from, to, flags) syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags)
#define NOREPLACE 1
#define EXCHANGE 2

// The errno's name (musl has no strerrorname_np).
static const char *ename(int e) {
  switch (e) {
#define N(x) case x: return #x;
    N(EEXIST) N(ENOENT) N(EBADF) N(ENOTEMPTY) N(ELOOP) N(EISDIR) N(ENOTDIR) N(EINVAL)
    N(EACCES) N(EROFS) N(EXDEV) N(ENOSPC) N(EPERM) N(EBUSY) N(ENAMETOOLONG) N(EFBIG)
#undef N
  }
  static char buf[16];
  snprintf(buf, sizeof buf, "E%d", e);
  return buf;
}

#define CHECK(what, expr)                                                      \
  do {                                                                         \
    long r_ = (long)(expr);                                                    \
    printf("%-28s %ld%s%s\n", what, r_ < 0 ? -1L : r_, r_ < 0 ? " " : "",     \
           r_ < 0 ? ename(errno) : "");                              \
  } while (0)

static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }

static void list(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) { printf("opendir %s: %s\n", dir, ename(errno)); return; }
  char *names[64]; int n = 0; struct dirent *e;
  while ((e = readdir(d)) && n < 64) {
    char buf[300];
    snprintf(buf, sizeof buf, "%s:%c", e->d_name, e->d_type == DT_DIR ? 'd' : e->d_type == DT_REG ? 'f' : e->d_type == DT_LNK ? 'l' : '?');
    names[n++] = strdup(buf);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp);
  printf("ls %s:", dir);
  for (int i = 0; i < n; i++) { printf(" %s", names[i]); free(names[i]); }
  printf("\n");
}

static void show(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) { printf("stat %s: %s\n", path, ename(errno)); return; }
  // A directory's size is the filesystem's own (4096 on ext4, 20 per entry on tmpfs): not shown.
  printf("stat %s: mode %o size %ld nlink %ld\n", path, st.st_mode, S_ISDIR(st.st_mode) ? 0L : (long)st.st_size, (long)st.st_nlink);
}

static void put(const char *path, const char *text, int flags) {
  int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
  if (fd < 0) { printf("put %s: %s\n", path, ename(errno)); return; }
  long n = write(fd, text, strlen(text));
  printf("put %s: %ld\n", path, n);
  close(fd);
}

static void cat(const char *path) {
  char buf[4096];
  int fd = open(path, O_RDONLY);
  if (fd < 0) { printf("cat %s: %s\n", path, ename(errno)); return; }
  long n = read(fd, buf, sizeof buf - 1);
  buf[n < 0 ? 0 : n] = 0;
  printf("cat %s: %s\n", path, buf);
  close(fd);
}

static void fill(const char *path, long bytes) {
  static char zeros[1 << 16];
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { printf("fill %s: %s\n", path, ename(errno)); return; }
  long done = 0, n = 0;
  while (done < bytes && (n = write(fd, zeros, bytes - done < (long)sizeof zeros ? bytes - done : (long)sizeof zeros)) > 0) done += n;
  printf("fill %s: %ld%s%s\n", path, done, n < 0 ? " " : "", n < 0 ? ename(errno) : "");
  close(fd);
}

static int commands(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *c = argv[i], *a = i + 1 < argc ? argv[i + 1] : "", *b = i + 2 < argc ? argv[i + 2] : "";
    if (!strcmp(c, "put")) put(a, b, O_TRUNC), i += 2;
    else if (!strcmp(c, "append")) put(a, b, O_APPEND), i += 2;
    else if (!strcmp(c, "cat")) cat(a), i += 1;
    else if (!strcmp(c, "ls")) list(a), i += 1;
    else if (!strcmp(c, "rm")) { CHECK(c, unlink(a)); i += 1; }
    else if (!strcmp(c, "mkdir")) { CHECK(c, mkdir(a, 0755)); i += 1; }
    else if (!strcmp(c, "rmdir")) { CHECK(c, rmdir(a)); i += 1; }
    else if (!strcmp(c, "fill")) fill(a, atol(b)), i += 2;
    else if (!strcmp(c, "pause")) { fflush(stdout); kvmbox_pause(); }
    else { printf("unknown command %s\n", c); return 2; }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1) return commands(argc, argv);
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char dir[256];
  snprintf(dir, sizeof dir, "%s/fswXXXXXX", tmp);
  if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
  CHECK("chdir", chdir(dir));
  umask(022);

  // Create, write, append, read back.
  int fd = open("a.txt", O_CREAT | O_RDWR | O_EXCL, 0644);
  CHECK("open O_CREAT|O_EXCL", fd >= 0);
  CHECK("open again O_EXCL", open("a.txt", O_CREAT | O_RDWR | O_EXCL, 0644));
  CHECK("write", write(fd, "hello world\n", 12));
  CHECK("pwrite", pwrite(fd, "HELLO", 5, 0));
  CHECK("lseek end", lseek(fd, 0, SEEK_END));
  CHECK("lseek set past", lseek(fd, 100, SEEK_SET));
  CHECK("write past end", write(fd, "!", 1));
  struct stat st; fstat(fd, &st);
  printf("size after gap %ld\n", (long)st.st_size);
  char buf[256] = {0};
  CHECK("pread", pread(fd, buf, 11, 0));
  printf("read back: %s\n", buf);
  CHECK("ftruncate", ftruncate(fd, 12));
  CHECK("fsync", fsync(fd));
  CHECK("fdatasync", fdatasync(fd));
  close(fd);

  fd = open("a.txt", O_WRONLY | O_APPEND);
  CHECK("append", write(fd, "more\n", 5));
  CHECK("read on O_WRONLY", read(fd, buf, 1));
  close(fd);
  FILE *f = fopen("a.txt", "r");
  while (fgets(buf, sizeof buf, f)) printf("line: %s", buf);
  fclose(f);
  fd = open("a.txt", O_RDWR | O_TRUNC);
  fstat(fd, &st);
  printf("after O_TRUNC size %ld\n", (long)st.st_size);
  write(fd, "abc", 3);
  close(fd);

  // Directories.
  CHECK("mkdir d", mkdir("d", 0755));
  CHECK("mkdir d again", mkdir("d", 0755));
  CHECK("mkdir d/e/f", mkdir("d/e/f", 0755));
  CHECK("mkdir d/e", mkdir("d/e", 0700));
  CHECK("rmdir d (not empty)", rmdir("d"));
  CHECK("rename a.txt d/b.txt", rename("a.txt", "d/b.txt"));
  CHECK("stat a.txt", access("a.txt", F_OK));
  CHECK("link", link("d/b.txt", "c.txt"));
  CHECK("symlink", symlink("d/b.txt", "s"));
  CHECK("symlink dangling", symlink("nowhere", "dang"));
  CHECK("readlink", readlink("s", buf, sizeof buf));
  CHECK("open via symlink", open("s", O_RDONLY) >= 0);
  CHECK("open dangling", open("dang", O_RDONLY));
  CHECK("O_NOFOLLOW", open("s", O_RDONLY | O_NOFOLLOW));
  show("c.txt");
  show("d");
  show("d/e");
  list(".");
  list("d");
  CHECK("unlink c.txt", unlink("c.txt"));
  show("d/b.txt");
  CHECK("unlink dir", unlink("d"));
  CHECK("rmdir file", rmdir("d/b.txt"));
  CHECK("rmdir d/e", rmdir("d/e"));
  CHECK("rename dir into itself", rename("d", "d/x"));
  CHECK("renameat2 NOREPLACE", RENAME2("s", "dang", NOREPLACE));
  CHECK("renameat2 EXCHANGE", RENAME2("s", "dang", EXCHANGE));
  CHECK("readlink s", readlink("s", buf, sizeof buf));
  buf[7] = 0;
  printf("s -> %s\n", buf);
  CHECK("rename over", rename("dang", "s"));
  list(".");

  // Unlinked while open: still readable.
  fd = open("tmpfile", O_CREAT | O_RDWR, 0600);
  write(fd, "ghost", 5);
  CHECK("unlink open file", unlink("tmpfile"));
  memset(buf, 0, sizeof buf);
  CHECK("pread unlinked", pread(fd, buf, 5, 0));
  printf("ghost: %s\n", buf);
  fstat(fd, &st);
  printf("nlink of unlinked %ld\n", (long)st.st_nlink);
  close(fd);

  // Metadata.
  CHECK("chmod", chmod("d/b.txt", 0600));
  CHECK("access X_OK (0600)", access("d/b.txt", X_OK));
  CHECK("chmod +x", chmod("d/b.txt", 0755));
  CHECK("access X_OK (0755)", access("d/b.txt", X_OK));
  CHECK("access W_OK", access("d/b.txt", W_OK));
  show("d/b.txt");
  struct timespec ts[2] = {{1000000000, 0}, {1234567890, 500}};
  CHECK("utimensat", utimensat(AT_FDCWD, "d/b.txt", ts, 0));
  stat("d/b.txt", &st);
  printf("mtime %ld.%ld atime %ld\n", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long)st.st_atim.tv_sec);
  CHECK("chown to self", chown("d/b.txt", getuid(), getgid()));
  CHECK("truncate", truncate("d/b.txt", 2));
  show("d/b.txt");
  struct statfs sfs;
  CHECK("statfs", statfs(".", &sfs));
  CHECK("fallocate", fallocate(fd = open("d/b.txt", O_RDWR), 0, 0, 4096));
  fstat(fd, &st);
  printf("size after fallocate %ld\n", (long)st.st_size);

  // Locks (one process: always granted).
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
  CHECK("F_SETLK", fcntl(fd, F_SETLK, &fl));
  fl.l_type = F_WRLCK;
  CHECK("F_GETLK", fcntl(fd, F_GETLK, &fl));
  printf("F_GETLK type %s\n", fl.l_type == F_UNLCK ? "F_UNLCK" : "locked");
  CHECK("flock", flock(fd, LOCK_EX | LOCK_NB));
  CHECK("F_GETFL", fcntl(fd, F_GETFL) & O_ACCMODE);

  // mmap of a written file.
  write(fd, "mapped!", 7);
  char *m = mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
  printf("mmap: %.7s\n", m == MAP_FAILED ? "FAILED" : m);
  close(fd);

  // fchdir and getcwd relative names.
  int dfd = open("d", O_RDONLY | O_DIRECTORY);
  CHECK("fchdir", fchdir(dfd));
  getcwd(buf, sizeof buf);
  printf("cwd ends with /d: %d\n", strlen(buf) > 2 && strcmp(buf + strlen(buf) - 2, "/d") == 0);
  CHECK("openat relative", openat(dfd, "b.txt", O_RDONLY) >= 0);
  CHECK("mkdirat", mkdirat(dfd, "sub", 0700));
  CHECK("unlinkat dir", unlinkat(dfd, "sub", AT_REMOVEDIR));
  CHECK("chdir ..", chdir(".."));

  // Clean up like a tidy program.
  CHECK("unlink s", unlink("s"));
  CHECK("unlink d/b.txt", unlink("d/b.txt"));
  CHECK("rmdir d", rmdir("d"));
  CHECK("chdir /", chdir("/"));
  CHECK("rmdir dir", rmdir(dir));
  CHECK("gone", access(dir, F_OK));
  return 0;
}
