/* Prints argc/argv/environ and checks the auxiliary vector. */
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>

extern char **environ;
extern const ElfW(Ehdr) __ehdr_start; /* provided by the linker */
extern void _start(void);             /* crt1.o / rcrt1.o entry point */

static const char *str_or_null(unsigned long v) {
    return v ? (const char *)v : "(null)";
}

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    printf("argv[argc] is NULL: %s\n", argv[argc] == NULL ? "yes" : "no");

    int n = 0;
    for (char **e = environ; *e; e++, n++)
        printf("env[%d]=%s\n", n, *e);
    printf("envc=%d\n", n);

    printf("AT_PAGESZ=%lu\n", getauxval(AT_PAGESZ));
    printf("AT_UID=%lu\n", getauxval(AT_UID));
    printf("AT_EUID=%lu\n", getauxval(AT_EUID));
    printf("AT_GID=%lu\n", getauxval(AT_GID));
    printf("AT_EGID=%lu\n", getauxval(AT_EGID));
    printf("AT_SECURE=%lu\n", getauxval(AT_SECURE));
    printf("AT_CLKTCK=%lu\n", getauxval(AT_CLKTCK));
    printf("AT_PLATFORM=%s\n", str_or_null(getauxval(AT_PLATFORM)));
    printf("AT_EXECFN=%s\n", str_or_null(getauxval(AT_EXECFN)));

    const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
    int rnd_ok = 0;
    if (rnd)
        for (int i = 0; i < 16; i++)
            if (rnd[i]) rnd_ok = 1;
    printf("AT_RANDOM: %s\n", rnd_ok ? "random ok" : "random BAD");

    unsigned long phdr = getauxval(AT_PHDR);
    unsigned long expect_phdr = (unsigned long)((const char *)&__ehdr_start + __ehdr_start.e_phoff);
    int phdr_ok = phdr == expect_phdr;
    if (phdr_ok) {
        /* The table must contain a PT_LOAD and the PT_PHDR (if any) must describe itself. */
        const ElfW(Phdr) *ph = (const ElfW(Phdr) *)phdr;
        int has_load = 0;
        for (unsigned i = 0; i < __ehdr_start.e_phnum; i++)
            if (ph[i].p_type == PT_LOAD) has_load = 1;
        phdr_ok = has_load;
    }
    printf("AT_PHDR: %s\n", phdr_ok ? "consistent" : "INCONSISTENT");
    printf("AT_PHNUM matches e_phnum: %s\n",
           getauxval(AT_PHNUM) == __ehdr_start.e_phnum ? "yes" : "NO");
    printf("AT_PHENT == sizeof(Elf64_Phdr): %s\n",
           getauxval(AT_PHENT) == sizeof(Elf64_Phdr) ? "yes" : "NO");
    printf("AT_ENTRY == &_start: %s\n",
           getauxval(AT_ENTRY) == (unsigned long)&_start ? "yes" : "NO");
    printf("AT_HWCAP nonzero: %s\n", getauxval(AT_HWCAP) ? "yes" : "NO");
    printf("ELF magic at __ehdr_start: %s\n",
           memcmp(__ehdr_start.e_ident, ELFMAG, SELFMAG) == 0 ? "yes" : "NO");
    return 0;
}
