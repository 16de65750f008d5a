/* files <allowed-file> [<other-file>]
 * Prints the content of argv[1] (read in small chunks), then checks lseek,
 * pread, fstat and EOF behaviour on it. If argv[2] is given, tries to open it
 * and prints only "second open: ok" or "second open: failed" (+ a line with the
 * errno name on failure): natively the file is readable, inside the sandbox it
 * is expected to be denied, so the caller compares that line separately.
 * Exit status: 0 on success, 1 if argv[1] cannot be opened/checked, 2 on usage. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *errno_name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOSYS: return "ENOSYS";
    case ENOTDIR: return "ENOTDIR";
    case EROFS: return "EROFS";
    case ESPIPE: return "ESPIPE";
    case ELOOP: return "ELOOP";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    default: return "E?";
    }
}

static int failures = 0;
static void check(int ok, const char *what) {
    printf("%s: %s\n", what, ok ? "ok" : "FAILED");
    if (!ok) failures++;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: files <allowed-file> [<other-file>]\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        printf("open %s failed: %s\n", argv[1], errno_name(errno));
        return 1;
    }
    printf("open: ok\n");

    struct stat st;
    if (fstat(fd, &st) != 0) {
        printf("fstat failed: %s\n", errno_name(errno));
        return 1;
    }
    check(S_ISREG(st.st_mode), "fstat regular file");

    /* Read the whole file in 7-byte chunks. */
    size_t cap = 4096, len = 0;
    char *data = malloc(cap);
    for (;;) {
        if (len + 7 > cap) data = realloc(data, cap *= 2);
        ssize_t n = read(fd, data + len, 7);
        if (n < 0) {
            printf("read failed: %s\n", errno_name(errno));
            return 1;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    printf("--- content (%zu bytes) ---\n", len);
    fwrite(data, 1, len, stdout);
    if (len == 0 || data[len - 1] != '\n') putchar('\n');
    printf("--- end ---\n");
    check((off_t)len == st.st_size, "fstat size matches bytes read");

    char c;
    check(read(fd, &c, 1) == 0, "read at EOF returns 0");
    check(lseek(fd, 0, SEEK_CUR) == (off_t)len, "lseek SEEK_CUR == size");
    check(lseek(fd, 0, SEEK_END) == st.st_size, "lseek SEEK_END == size");

    /* Re-read a window from the middle via lseek + read. */
    size_t off = len / 3, want = len - off < 10 ? len - off : 10;
    char buf[16];
    check(lseek(fd, (off_t)off, SEEK_SET) == (off_t)off, "lseek SEEK_SET");
    ssize_t n = read(fd, buf, want);
    check(n == (ssize_t)want && memcmp(buf, data + off, want) == 0, "read after lseek matches");
    check(lseek(fd, -(off_t)want, SEEK_CUR) == (off_t)off, "lseek negative SEEK_CUR");

    /* pread must not move the file offset. */
    off_t before = lseek(fd, 0, SEEK_CUR);
    size_t poff = len / 2, pwant = len - poff < 12 ? len - poff : 12;
    n = pread(fd, buf, pwant, (off_t)poff);
    check(n == (ssize_t)pwant && memcmp(buf, data + poff, pwant) == 0, "pread matches");
    check(lseek(fd, 0, SEEK_CUR) == before, "pread keeps offset");
    check(pread(fd, buf, sizeof buf, st.st_size + 100) == 0, "pread past EOF returns 0");
    errno = 0;
    check(lseek(fd, -1, SEEK_SET) == -1 && errno == EINVAL, "lseek to -1 fails with EINVAL");
    check(close(fd) == 0, "close");
    errno = 0;
    check(read(fd, &c, 1) == -1 && errno == EBADF, "read after close fails with EBADF");
    free(data);

    if (argc > 2) {
        int fd2 = open(argv[2], O_RDONLY);
        if (fd2 >= 0) {
            printf("second open: ok\n");
            close(fd2);
        } else {
            int e = errno;
            printf("second open: failed\n");
            printf("second open errno: %s\n", errno_name(e));
        }
    }
    printf("failures: %d\n", failures);
    return failures ? 1 : 0;
}
