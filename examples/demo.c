/* The demo guest: an ordinary static C program that shows what it sees inside kvmbox. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct utsname u;
    uname(&u);
    printf("Hello from a static Linux program running in a KVM virtual machine with no guest OS.\n");
    printf("  uname: %s %s %s (nodename %s)\n", u.sysname, u.release, u.machine, u.nodename);
    printf("  pid %d, uid %d, argv:", (int)getpid(), (int)getuid());
    for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    char *block = malloc(64 << 20);
    memset(block, 1, 64 << 20);
    printf("  allocated and touched 64 MiB: %s\n", block ? "ok" : "failed");
    int fd = open("/etc/passwd", O_RDONLY);
    printf("  open(\"/etc/passwd\"): %s\n", fd < 0 ? strerror(errno) : "opened (it was allowed)");
    return 0;
}
