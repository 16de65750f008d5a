/* Guests that attack the sandbox. Each mode tries one thing a ring-3 program must not be able
 * to do; kvmbox must stop it with a fault (or an errno) and stay intact.
 *   escape MODE [ARG]   (prints "escape: MODE" first; reaching the end prints "NOT STOPPED") */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((noinline)) void attempt(const char *mode, const char *arg) {
    uint64_t tbl[2] = {0, 0};
    if (!strcmp(mode, "lgdt")) __asm__ volatile("lgdt %0" ::"m"(tbl));
    else if (!strcmp(mode, "lidt")) __asm__ volatile("lidt %0" ::"m"(tbl));
    else if (!strcmp(mode, "sgdt_then_write")) {
        /* sgdt works in ring 3 (no UMIP) and reveals the GDT address; writing there must fault. */
        struct __attribute__((packed)) { uint16_t limit; uint64_t base; } g;
        __asm__ volatile("sgdt %0" : "=m"(g));
        *(volatile uint64_t *)g.base = 0;
    } else if (!strcmp(mode, "mov_cr3")) __asm__ volatile("mov %0, %%cr3" ::"r"(0UL));
    else if (!strcmp(mode, "mov_cr0")) __asm__ volatile("mov %0, %%cr0" ::"r"(0UL));
    else if (!strcmp(mode, "wrmsr")) __asm__ volatile("wrmsr" ::"c"(0xC0000082), "a"(0), "d"(0));
    else if (!strcmp(mode, "rdmsr")) { uint32_t a, d; __asm__ volatile("rdmsr" : "=a"(a), "=d"(d) : "c"(0xC0000082)); }
    else if (!strcmp(mode, "hlt")) __asm__ volatile("hlt");
    else if (!strcmp(mode, "cli")) __asm__ volatile("cli");
    else if (!strcmp(mode, "sti")) __asm__ volatile("sti");
    else if (!strcmp(mode, "out")) {
        int port = arg ? (int)strtol(arg, NULL, 0) : 0x80;
        __asm__ volatile("outb %%al, %%dx" ::"a"(0), "d"((uint16_t)port));
    } else if (!strcmp(mode, "in")) {
        int port = arg ? (int)strtol(arg, NULL, 0) : 0x80;
        uint8_t v;
        __asm__ volatile("inb %%dx, %%al" : "=a"(v) : "d"((uint16_t)port));
    } else if (!strcmp(mode, "int")) {
        /* int n for one vector (the test loops over all of them). */
        int n = arg ? atoi(arg) : 0x80;
        /* Text is read-only and the heap is not executable: a switch of int n instructions. */
        switch (n) {
#define V(x) case x: __asm__ volatile("int $" #x); break;
            V(0) V(1) V(2) V(4) V(5) V(6) V(7) V(8) V(9) V(10) V(11) V(12) V(13) V(14) V(15) V(16) V(17) V(18) V(19) V(20)
            V(21) V(30) V(31) V(32) V(33) V(0x40) V(0x80) V(0x81) V(0xC0) V(0xE0) V(0xE1) V(0xFE) V(0xFF)
        default: break;
        }
    } else if (!strcmp(mode, "iretq_forged")) {
        /* A forged frame asking for ring 0 (CS 0x10). */
        __asm__ volatile("push $0x18\n push %%rsp\n pushf\n push $0x10\n lea 1f(%%rip), %%rax\n push %%rax\n iretq\n 1:" ::: "rax", "memory");
    } else if (!strcmp(mode, "far_call_kernel")) {
        struct __attribute__((packed)) { uint64_t off; uint16_t sel; } target = {0, 0x10};
        __asm__ volatile("rex64 lcall *%0" ::"m"(target));
    } else if (!strcmp(mode, "sysret")) __asm__ volatile("sysretq");
    else if (!strcmp(mode, "exec_heap")) {
        /* Heap memory is never executable here (NX), even with PROT_EXEC. */
        unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 0xC3; /* ret */
        ((void (*)(void))p)();
    } else if (!strcmp(mode, "write_text")) {
        *(volatile unsigned char *)(void *)attempt = 0xCC; /* self-modifying code: text is read-only */
    } else if (!strcmp(mode, "jump_noncanonical")) ((void (*)(void))0x8000000000000000UL)();
    else if (!strcmp(mode, "stack_pivot")) __asm__ volatile("mov $0x10, %%rsp\n push %%rax" ::: "memory");
    else if (!strcmp(mode, "touch_r") || !strcmp(mode, "touch_w") || !strcmp(mode, "touch_x")) {
        /* Read, write or execute one byte at a given address (the host's system pages). */
        volatile unsigned char *p = (volatile unsigned char *)(uintptr_t)strtoull(arg ? arg : "0", NULL, 16);
        if (mode[6] == 'r') (void)*p;
        else if (mode[6] == 'w') *p = 0xCC;
        else ((void (*)(void))(uintptr_t)p)();
    } else if (!strcmp(mode, "read_kernel_ptr")) {
        /* A syscall pointer into the kernel half and into the system area: EFAULT, not a read. */
        long r1 = syscall(SYS_write, 1, (void *)0xffffffff81000000UL, 8);
        long r2 = syscall(SYS_write, 1, (void *)(uintptr_t)strtoull(arg ? arg : "0", NULL, 16), 8);
        long r3 = syscall(SYS_read, 0, (void *)0x1000, 0x7fffffffffffffffL);
        long r4 = syscall(SYS_write, 1, (void *)0x1000, (size_t)-4096);
        printf("results %ld %ld %ld %ld\n", r1, r2, r3, r4);
        fflush(stdout);
        exit(0);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        exit(2);
    }
    printf("NOT STOPPED\n");
    fflush(stdout);
    exit(1);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    printf("escape: %s\n", mode);
    fflush(stdout);
    attempt(mode, argc > 2 ? argv[2] : NULL);
    return 3;
}
