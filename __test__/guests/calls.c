/* A guest that initializes, pauses, and then serves function calls from the host. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../guest/include/kvmbox.h"

#define HC_ECHO 0x10000L
#define HC_LOOKUP 0x10001L
#define HC_UNHANDLED 0x10abcL

static long counter;
static char *table[64];
static int init_done;

KVMBOX_EXPORT long add(long a, long b) { return a + b; }
KVMBOX_EXPORT long empty(void) { return 0; }
KVMBOX_EXPORT long negate(long a) { return -a; }
KVMBOX_EXPORT long sum6(long a, long b, long c, long d, long e, long f) { return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f; }
KVMBOX_EXPORT long str_len(const char *s) { return (long)strlen(s); }
KVMBOX_EXPORT long count_byte(const unsigned char *buf, long len, long byte) {
    long n = 0;
    for (long i = 0; i < len; i++) n += buf[i] == (unsigned char)byte;
    return n;
}
/* In/out buffer: upper-cases in place, returns the length. */
KVMBOX_EXPORT long upcase(char *buf, long len) {
    for (long i = 0; i < len; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 32;
    return len;
}
KVMBOX_EXPORT long counter_next(void) { return ++counter; }
KVMBOX_EXPORT long was_initialized(void) { return init_done; }
/* A host call from inside a guest call. */
KVMBOX_EXPORT long echo_plus_one(long x) { return kvmbox_hostcall1(HC_ECHO, x) + 1; }
/* The host reads the key string and writes the value into out. */
KVMBOX_EXPORT long lookup(const char *key, char *out, long outlen) { return kvmbox_hostcall3(HC_LOOKUP, (long)key, (long)out, outlen); }
KVMBOX_EXPORT long unhandled_hostcall(void) { return kvmbox_hostcall0(HC_UNHANDLED); }
/* malloc between calls: keeps a rotating table of allocations alive across calls. */
KVMBOX_EXPORT long alloc_cycle(long i, long size) {
    int slot = (int)(i % 64);
    free(table[slot]);
    table[slot] = malloc((size_t)size);
    if (!table[slot]) return -1;
    memset(table[slot], (int)(i & 0xff), (size_t)size);
    long sum = 0;
    for (int k = 0; k < 64; k++)
        if (table[k]) sum += (unsigned char)table[k][0];
    return sum;
}
KVMBOX_EXPORT long spin(long n) {
    volatile long x = 0;
    if (n < 0)
        for (;;) x++;
    for (long i = 0; i < n; i++) x += i;
    return x;
}
KVMBOX_EXPORT long crash(void) { return *(volatile long *)16; }
KVMBOX_EXPORT long say(const char *s) {
    printf("%s\n", s);
    fflush(stdout);
    return 0;
}
KVMBOX_EXPORT long quit(long code) { exit((int)code); }
KVMBOX_EXPORT long die(void) { abort(); }
/* `size` bytes of 7s on the heap; returns their address (0 if malloc failed). */
KVMBOX_EXPORT long alloc_sevens(long size) {
    char *p = malloc((size_t)size);
    if (!p) return 0;
    memset(p, 7, (size_t)size);
    return (long)p;
}
KVMBOX_EXPORT long pause_inside(void) { return kvmbox_pause(); }
KVMBOX_EXPORT long getpid_twice(void) { return getpid() + getpid(); }
/* n syscalls in a row: a debugger's Ctrl-C almost always lands in (or right after) one. */
KVMBOX_EXPORT long syscall_spin(long n) {
    long sum = 0;
    for (long i = 0; i < n; i++) sum += getppid();
    return sum;
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    init_done = 1;
    printf("initialized\n");
    fflush(stdout);
    long r = kvmbox_pause();
    printf("resumed: %ld, counter %ld\n", r, counter);
    return 7;
}
