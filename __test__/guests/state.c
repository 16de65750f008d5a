/*
 * A guest for the snapshot / fork / reset tests (__test__/snapshots.test.mjs).
 *
 * main() builds a distinctive state, then pauses (the host takes its snapshot there):
 *   - globals: global_value = 111, counter = 41, secret_area (64 KiB) and a malloc'd block
 *     holding "snapshot-area" / "snapshot-heap";
 *   - FPU/SSE state: rounding mode FE_UPWARD (MXCSR and the x87 control word), and a known
 *     pattern in ymm15 (set right before the pause: nothing runs between it and the snapshot);
 *   - the file argv[1] (if given) open as file_fd with its first 5 bytes already read;
 *   - static_buf filled with 'S' (host_only_buf is left untouched: zero);
 *   - one malloc'd block in the brk heap and one mmap'd block (mmap_block);
 *   - SIGUSR2 handled by on_signal (other signals: default).
 * The exported functions change or report each piece of that state.
 */
#include <errno.h>
#include <fcntl.h>
#include <fenv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

#define HC_ASK 0x10000L
#define AREA_SIZE (64 << 10)
#define HEAP_BLOCK 4096
#define SCRATCH_PAGES 1024 /* 4 MiB */

long global_value;
static long counter;
char secret_area[AREA_SIZE];
char *secret_heap;
char *mmap_block;
int file_fd = -1;
char first5[8];
char static_buf[8192];
char host_only_buf[16384];
static char scratch[SCRATCH_PAGES][4096] __attribute__((aligned(4096))); /* one row = one page */
static unsigned long ymm_init[4] = {0x1111222233334444UL, 0x5555666677778888UL, 0x99990000aaaabbbbUL, 0xccccddddeeeeffffUL};

/* ---- plain globals ---- */
KVMBOX_EXPORT long get_global(void) { return global_value; }
KVMBOX_EXPORT long set_global(long v) {
    long old = global_value;
    global_value = v;
    return old;
}
/* Same name as the `calls` guest's function (resetting to that program must switch symbols). */
KVMBOX_EXPORT long counter_next(void) { return ++counter; }
KVMBOX_EXPORT long ask_host(long x) { return kvmbox_hostcall1(HC_ASK, x); }

/* ---- secrets: copied into the global area, the heap block, a fresh malloc, an mmap'd block and the stack ---- */
static volatile char *volatile stack_sink;
KVMBOX_EXPORT long put_secret(const char *s) {
    size_t n = strlen(s);
    if (n + 1 > 1000) return -1;
    for (int i = 0; i < 16; i++) memcpy(secret_area + i * 4000, s, n + 1); /* spans all 16 pages */
    memcpy(secret_heap, s, n + 1);
    char *fresh = malloc(100000); /* brk heap growth */
    if (!fresh) return -2;
    memcpy(fresh + 50000, s, n + 1);
    char *big = malloc(3 << 20); /* a new mmap */
    if (!big) return -3;
    memcpy(big + (2 << 20), s, n + 1);
    char *moved = malloc(2 << 20); /* an mmap that realloc grows with mremap (moving it) */
    if (!moved) return -4;
    memcpy(moved + 1000, s, n + 1);
    moved = realloc(moved, 9 << 20);
    if (!moved) return -5;
    memcpy(mmap_block + 100, s, n + 1);
    char local[1024];
    memcpy(local, s, n + 1);
    stack_sink = local;
    (void)stack_sink[0];
    printf("secret stored: %s\n", s);
    fflush(stdout);
    return (long)n;
}
/* Copies secret_area (or its first `len` bytes) out. */
KVMBOX_EXPORT long copy_area(char *out, long len) {
    if (len > AREA_SIZE) len = AREA_SIZE;
    memcpy(out, secret_area, (size_t)len);
    return len;
}
KVMBOX_EXPORT long copy_heap(char *out, long len) {
    if (len > HEAP_BLOCK) len = HEAP_BLOCK;
    memcpy(out, secret_heap, (size_t)len);
    return len;
}
KVMBOX_EXPORT long area_addr(void) { return (long)secret_area; }
KVMBOX_EXPORT long heap_addr(void) { return (long)secret_heap; }
/* Occurrences of "TOPSECRET" in secret_area, the heap block and the mmap block. */
KVMBOX_EXPORT long count_marker(void) {
    static const char m[] = "TOPSECRET";
    long n = 0;
    const char *regions[3] = {secret_area, secret_heap, mmap_block};
    size_t sizes[3] = {AREA_SIZE, HEAP_BLOCK, 1 << 20};
    for (int r = 0; r < 3; r++)
        for (size_t i = 0; i + sizeof m - 1 <= sizes[r]; i++)
            if (memcmp(regions[r] + i, m, sizeof m - 1) == 0) n++;
    return n;
}

/* ---- FPU / SSE / AVX state ---- */
KVMBOX_EXPORT long get_mxcsr(void) { return __builtin_ia32_stmxcsr(); }
KVMBOX_EXPORT long set_mxcsr(long v) {
    __builtin_ia32_ldmxcsr((unsigned)v);
    return __builtin_ia32_stmxcsr();
}
KVMBOX_EXPORT long get_fpucw(void) {
    unsigned short cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    return cw;
}
KVMBOX_EXPORT long set_fpucw(long v) {
    unsigned short cw = (unsigned short)v;
    __asm__ volatile("fldcw %0" : : "m"(cw));
    return get_fpucw();
}
/* The bits of 1.0/3.0 computed with SSE under the current rounding mode. */
KVMBOX_EXPORT long third_bits(long num) {
    volatile double a = (double)num, b = 3.0;
    double q = a / b;
    long bits;
    memcpy(&bits, &q, sizeof bits);
    return bits;
}
/* ymm15 is not touched by the compiler here (caller-saved, unused), so it keeps its value between calls. */
KVMBOX_EXPORT long set_ymm15(const unsigned long *v) {
    __asm__ volatile("vmovdqu (%0), %%ymm15" : : "r"(v) : "xmm15", "memory");
    return 0;
}
KVMBOX_EXPORT long get_ymm15(unsigned long *out) {
    __asm__ volatile("vmovdqu %%ymm15, (%0)" : : "r"(out) : "memory");
    return 0;
}

/* Stores ymm0..ymm15 (and ymm16..ymm31 where AVX-512VL is usable) into out[0..1024): nothing
 * before the stores touches a vector register, so this is the state the call started with.
 * Returns the number of registers stored. */
KVMBOX_EXPORT long dump_vregs(unsigned char *out) {
    __asm__ volatile(
        "vmovdqu %%ymm0, 0(%0)\n vmovdqu %%ymm1, 32(%0)\n vmovdqu %%ymm2, 64(%0)\n vmovdqu %%ymm3, 96(%0)\n"
        "vmovdqu %%ymm4, 128(%0)\n vmovdqu %%ymm5, 160(%0)\n vmovdqu %%ymm6, 192(%0)\n vmovdqu %%ymm7, 224(%0)\n"
        "vmovdqu %%ymm8, 256(%0)\n vmovdqu %%ymm9, 288(%0)\n vmovdqu %%ymm10, 320(%0)\n vmovdqu %%ymm11, 352(%0)\n"
        "vmovdqu %%ymm12, 384(%0)\n vmovdqu %%ymm13, 416(%0)\n vmovdqu %%ymm14, 448(%0)\n vmovdqu %%ymm15, 480(%0)\n"
        :
        : "r"(out)
        : "memory");
    if (!__builtin_cpu_supports("avx512vl")) return 16;
    __asm__ volatile(
        "vmovdqu64 %%ymm16, 512(%0)\n vmovdqu64 %%ymm17, 544(%0)\n vmovdqu64 %%ymm18, 576(%0)\n vmovdqu64 %%ymm19, 608(%0)\n"
        "vmovdqu64 %%ymm20, 640(%0)\n vmovdqu64 %%ymm21, 672(%0)\n vmovdqu64 %%ymm22, 704(%0)\n vmovdqu64 %%ymm23, 736(%0)\n"
        "vmovdqu64 %%ymm24, 768(%0)\n vmovdqu64 %%ymm25, 800(%0)\n vmovdqu64 %%ymm26, 832(%0)\n vmovdqu64 %%ymm27, 864(%0)\n"
        "vmovdqu64 %%ymm28, 896(%0)\n vmovdqu64 %%ymm29, 928(%0)\n vmovdqu64 %%ymm30, 960(%0)\n vmovdqu64 %%ymm31, 992(%0)\n"
        :
        : "r"(out)
        : "memory");
    return 32;
}

/* ---- FS base (TLS) ---- */
KVMBOX_EXPORT long get_fs_base(void) {
    unsigned long v;
    __asm__ volatile("rdfsbase %0" : "=r"(v));
    return (long)v;
}
/* The TCB's self pointer (%fs:0), which equals the FS base libc set up. */
KVMBOX_EXPORT long tls_self(void) {
    unsigned long v;
    __asm__ volatile("mov %%fs:0, %0" : "=r"(v));
    return (long)v;
}
/* Points FS somewhere else and returns without restoring it (TLS is broken until a reset). */
KVMBOX_EXPORT long clobber_fs_base(long v) {
    __asm__ volatile("wrfsbase %0" : : "r"(v) : "memory");
    unsigned long back;
    __asm__ volatile("rdfsbase %0" : "=r"(back));
    return (long)back;
}
/* Uses TLS (errno) and libc: works only with a sane FS base. */
KVMBOX_EXPORT long libc_works(void) {
    errno = 0;
    if (close(-1) != -1 || errno != EBADF) return -1;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%d-%s", 42, "ok");
    char *p = strdup(buf);
    long r = (long)n * 100 + (p ? (long)strlen(p) : -50);
    free(p);
    return r; /* 5 * 100 + 5 */
}

/* ---- heap and mmap allocator ---- */
/* Map every free page of the address space read-only (what a request hunting for an earlier
 * request's data would do first): 64 KiB at a time, page by page where a granule is partly
 * taken, up to where the address space ends (ENOMEM). Returns the bytes mapped. Only meant
 * for kvmbox, whose address space is the machine's memory. */
KVMBOX_EXPORT long map_all_free(void) {
    const long granule = 0x10000, page = 4096;
    long mapped = 0;
    for (long a = granule;; a += granule) {
        void *r = mmap((void *)a, granule, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (r == (void *)a) {
            mapped += granule;
            continue;
        }
        if (errno == ENOMEM) return mapped;
        for (long p = a; p < a + granule; p += page)
            if (mmap((void *)p, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == (void *)p) mapped += page;
    }
}
KVMBOX_EXPORT long heap_alloc(long n) { return (long)malloc((size_t)n); }
KVMBOX_EXPORT long raw_brk(long addr) { return syscall(SYS_brk, addr); }
KVMBOX_EXPORT long raw_mmap(long len) {
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -errno;
    ((char *)p)[0] = 1;
    return (long)p;
}

/* ---- descriptors ---- */
KVMBOX_EXPORT long get_file_fd(void) { return file_fd; }
KVMBOX_EXPORT long read_some(char *out, long n) {
    long r = read(file_fd, out, (size_t)n);
    return r < 0 ? -errno : r;
}
KVMBOX_EXPORT long file_pos(void) {
    long r = lseek(file_fd, 0, SEEK_CUR);
    return r < 0 ? -errno : r;
}
KVMBOX_EXPORT long open_path(const char *p) {
    int fd = open(p, O_RDONLY);
    return fd < 0 ? -errno : fd;
}
KVMBOX_EXPORT long fd_valid(long fd) { return fcntl((int)fd, F_GETFD) == -1 ? -errno : 1; }
KVMBOX_EXPORT long close_fd(long fd) { return close((int)fd) == 0 ? 0 : -errno; }
/* read() straight into static pages: the bytes are written by kvmbox, not by guest code. */
KVMBOX_EXPORT long read_into_static(long off, long n) {
    if (off < 0 || off + n > (long)sizeof static_buf) return -1;
    long r = read(file_fd, static_buf + off, (size_t)n);
    return r < 0 ? -errno : r;
}
KVMBOX_EXPORT long read_into_host_only(long off, long n) {
    if (off < 0 || off + n > (long)sizeof host_only_buf) return -1;
    long r = read(file_fd, host_only_buf + off, (size_t)n);
    return r < 0 ? -errno : r;
}
KVMBOX_EXPORT long scratch_addr(void) { return (long)scratch; }
KVMBOX_EXPORT long static_buf_addr(void) { return (long)static_buf; }
KVMBOX_EXPORT long host_only_addr(void) { return (long)host_only_buf; }

/* ---- stdin and signal dispositions ---- */
KVMBOX_EXPORT long read_stdin(char *out, long n) {
    long r = read(0, out, (size_t)n);
    return r < 0 ? -errno : r;
}
static void on_signal(int sig) { (void)sig; }
KVMBOX_EXPORT long signal_handler_addr(void) { return (long)on_signal; }
/* The current disposition of `sig` as an address (0 = SIG_DFL, 1 = SIG_IGN). */
KVMBOX_EXPORT long disposition(long sig) {
    struct sigaction old;
    if (sigaction((int)sig, NULL, &old) != 0) return -errno;
    return (long)old.sa_handler;
}
/* mode 0: default, 1: ignore, 2: on_signal. */
KVMBOX_EXPORT long set_disposition(long sig, long mode) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = mode == 0 ? SIG_DFL : mode == 1 ? SIG_IGN : on_signal;
    return sigaction((int)sig, &sa, NULL) == 0 ? 0 : -errno;
}

/* ---- output ---- */
KVMBOX_EXPORT long say(const char *s) {
    printf("%s\n", s);
    fflush(stdout);
    fprintf(stderr, "err: %s\n", s);
    return 0;
}

/* ---- page writes ---- */
/* Writes one byte into each of `k` distinct scratch pages starting at page `first`. */
KVMBOX_EXPORT long touch_pages(long first, long k) {
    if (first < 0 || first + k > SCRATCH_PAGES) return -1;
    for (long i = 0; i < k; i++) scratch[first + i][(i * 64) % 4096] = (char)(i + 1);
    return k;
}
/* munmap and memory: a mapping filled before the snapshot (its pages are image data in forks),
 * and fresh mappings of which only the first and last page are written. */
static unsigned char *kept;
static long kept_len;
KVMBOX_EXPORT long keep_mapping(long bytes) {
    kept = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (kept == MAP_FAILED) return -1;
    memset(kept, 0x55, bytes);
    kept_len = bytes;
    return 0;
}
KVMBOX_EXPORT long kept_ends(void) { return kept[0] + kept[kept_len - 1]; }
/* munmap the kept mapping, map the same range again and check that every page reads as zero. */
KVMBOX_EXPORT long remap_kept(void) {
    munmap(kept, kept_len);
    unsigned char *p = mmap(kept, kept_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != kept) return -2;
    for (long i = 0; i < kept_len; i += 4096)
        if (p[i] || p[i + 4095]) return 1;
    return 0;
}
/* mmap `bytes` (at the range the previous call unmapped), check it reads as zero, write its first
 * and last page, munmap. Returns 0, or 1 if the fresh mapping was not zero. */
static unsigned char *last_unmapped;
KVMBOX_EXPORT long map_unmap(long bytes) {
    unsigned char *p = mmap(last_unmapped, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || (last_unmapped && p != last_unmapped)) return -2;
    long bad = p[0] | p[bytes / 2] | p[bytes - 1];
    p[0] = p[bytes - 1] = 0xaa;
    munmap(p, bytes);
    last_unmapped = p;
    return bad ? 1 : 0;
}
/* One request of the reset loop: dirties a few pages, moves the file position, and returns a
 * value derived only from the snapshot state (so it is the same after every reset). */
KVMBOX_EXPORT long cycle(long x) {
    long c = ++counter;
    scratch[0][x & 4095] = (char)c;
    scratch[1][0] += 1;
    scratch[2][100] += (char)x;
    char b[4] = {0};
    long r = read(file_fd, b, 4);
    char *p = malloc(64);
    long ret = c * 1000000 + global_value * 1000 + (r == 4 ? b[0] : -1) + scratch[1][0] + (p != NULL);
    free(p);
    return ret;
}

/* ---- failures ---- */
KVMBOX_EXPORT long crash(void) {
    global_value = -1;
    return *(volatile long *)16;
}
KVMBOX_EXPORT long spin_forever(void) {
    global_value = -2;
    volatile long x = 0;
    for (;;) x++;
}
KVMBOX_EXPORT long quit(long code) {
    global_value = -3;
    exit((int)code);
}

int main(int argc, char **argv) {
    global_value = 111;
    counter = 41;
    strcpy(secret_area, "snapshot-area");
    secret_heap = malloc(HEAP_BLOCK);
    if (!secret_heap) return 1;
    memset(secret_heap, 0, HEAP_BLOCK);
    strcpy(secret_heap, "snapshot-heap");
    mmap_block = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mmap_block == MAP_FAILED) return 2;
    strcpy(mmap_block, "snapshot-mmap");
    memset(static_buf, 'S', sizeof static_buf);
    if (argc > 1) {
        file_fd = open(argv[1], O_RDONLY);
        if (file_fd < 0) return 3;
        if (read(file_fd, first5, 5) != 5) return 4;
    }
    set_disposition(SIGUSR2, 2);
    fesetround(FE_UPWARD);
    printf("ready\n");
    fflush(stdout);
    set_ymm15(ymm_init);
    long r = kvmbox_pause();
    printf("resumed: %ld, global %ld\n", r, global_value);
    return 9;
}
