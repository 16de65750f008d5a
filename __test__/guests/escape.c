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
        /* int n for one vector, 0-255 (the test loops over all of them). */
        int n = arg ? atoi(arg) : 0x80;
        /* Text is read-only and the heap is not executable: a switch of int n instructions. */
        switch (n) {
#define V(x) case x: __asm__ volatile("int $" #x); break;
            V(0) V(1) V(2) V(3) V(4) V(5) V(6) V(7) V(8) V(9) V(10) V(11) V(12) V(13) V(14) V(15)
            V(16) V(17) V(18) V(19) V(20) V(21) V(22) V(23) V(24) V(25) V(26) V(27) V(28) V(29) V(30) V(31)
            V(32) V(33) V(34) V(35) V(36) V(37) V(38) V(39) V(40) V(41) V(42) V(43) V(44) V(45) V(46) V(47)
            V(48) V(49) V(50) V(51) V(52) V(53) V(54) V(55) V(56) V(57) V(58) V(59) V(60) V(61) V(62) V(63)
            V(64) V(65) V(66) V(67) V(68) V(69) V(70) V(71) V(72) V(73) V(74) V(75) V(76) V(77) V(78) V(79)
            V(80) V(81) V(82) V(83) V(84) V(85) V(86) V(87) V(88) V(89) V(90) V(91) V(92) V(93) V(94) V(95)
            V(96) V(97) V(98) V(99) V(100) V(101) V(102) V(103) V(104) V(105) V(106) V(107) V(108) V(109) V(110) V(111)
            V(112) V(113) V(114) V(115) V(116) V(117) V(118) V(119) V(120) V(121) V(122) V(123) V(124) V(125) V(126) V(127)
            V(128) V(129) V(130) V(131) V(132) V(133) V(134) V(135) V(136) V(137) V(138) V(139) V(140) V(141) V(142) V(143)
            V(144) V(145) V(146) V(147) V(148) V(149) V(150) V(151) V(152) V(153) V(154) V(155) V(156) V(157) V(158) V(159)
            V(160) V(161) V(162) V(163) V(164) V(165) V(166) V(167) V(168) V(169) V(170) V(171) V(172) V(173) V(174) V(175)
            V(176) V(177) V(178) V(179) V(180) V(181) V(182) V(183) V(184) V(185) V(186) V(187) V(188) V(189) V(190) V(191)
            V(192) V(193) V(194) V(195) V(196) V(197) V(198) V(199) V(200) V(201) V(202) V(203) V(204) V(205) V(206) V(207)
            V(208) V(209) V(210) V(211) V(212) V(213) V(214) V(215) V(216) V(217) V(218) V(219) V(220) V(221) V(222) V(223)
            V(224) V(225) V(226) V(227) V(228) V(229) V(230) V(231) V(232) V(233) V(234) V(235) V(236) V(237) V(238) V(239)
            V(240) V(241) V(242) V(243) V(244) V(245) V(246) V(247) V(248) V(249) V(250) V(251) V(252) V(253) V(254) V(255)
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
        /* Memory mapped without PROT_EXEC is not executable (NX), as on Linux. */
        unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
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
    } else if (!strcmp(mode, "lstar_noncanonical") || !strcmp(mode, "lstar_iopl")) {
        /* Jump straight into the syscall entry page (address in ARG) with a return address and
         * flags of the guest's choosing, as if `syscall` had set them: a non-canonical rcx, or
         * r11 asking for IOPL 3 (every port, cli/sti). Neither may take effect. */
        uint64_t entry = strtoull(arg ? arg : "0", NULL, 16);
        uint64_t rcx = mode[6] == 'n' ? 0x8000000000000000UL : 0;
        uint64_t flags;
        __asm__ volatile("lea 1f(%%rip), %%rcx\n"
                         "test %[rcx], %[rcx]\n jz 2f\n mov %[rcx], %%rcx\n"
                         "2: mov $0x3202, %%r11\n mov $39, %%eax\n jmp *%[entry]\n"
                         "1: pushfq\n pop %[flags]"
                         : [flags] "=r"(flags)
                         : [entry] "r"(entry), [rcx] "r"(rcx)
                         : "rax", "rcx", "r11", "memory", "cc");
        printf("iopl=%lu\n", (unsigned long)((flags >> 12) & 3));
        fflush(stdout);
        __asm__ volatile("cli");
    } else if (!strcmp(mode, "syscall_rsp_gdt")) {
        /* `syscall` with the stack pointer on the GDT (ARG): on VMX/SVM the entry stub runs in
         * ring 0 on the guest's rsp, so nothing may be pushed there. */
        uint64_t gdt = strtoull(arg ? arg : "0", NULL, 16);
        long pid;
        __asm__ volatile("mov %%rsp, %%r12\n mov %[gdt], %%rsp\n mov $39, %%eax\n syscall\n mov %%r12, %%rsp"
                         : "=a"(pid)
                         : [gdt] "r"(gdt)
                         : "rcx", "r11", "r12", "memory");
        printf("getpid %s\n", pid > 0 ? "ok" : "failed");
        fflush(stdout);
        exit(0);
    } else if (!strcmp(mode, "far_jump_compat")) {
        /* Into 32-bit compatibility mode through selector 0x23 (STAR's sysret base, left empty),
         * at an int3 (the same byte in both modes): reaching it would be a #BP. */
        struct __attribute__((packed)) { uint32_t off; uint16_t sel; } target = {0, 0x23};
        uint64_t at;
        __asm__ volatile("lea 1f(%%rip), %0\n jmp 2f\n 1: int3\n 2:" : "=r"(at));
        target.off = (uint32_t)at;
        __asm__ volatile("ljmp *%0" ::"m"(target));
    } else if (!strcmp(mode, "vmcall")) {
        /* A hypercall from ring 3: a fault, or an error in rax; never a rewrite of the guest's code
         * (KVM's hypercall-patching quirk is off). */
        unsigned char *site;
        long rax = 0;
        __asm__ volatile("lea 1f(%%rip), %[site]\n 1: vmcall" : [site] "=r"(site), "+a"(rax) :: "memory");
        printf("vmcall rax=%ld code=%02x%02x%02x\n", rax, site[0], site[1], site[2]);
        fflush(stdout);
        exit(0);
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
