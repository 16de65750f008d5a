/* Prints to stdout and stderr, then exits with the status given in argv[1]
 * (default 3). The status is truncated to 8 bits by the kernel (exit(256) -> 0). */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int code = argc > 1 ? atoi(argv[1]) : 3;
    printf("exit guest: stdout line, exiting with %d\n", code);
    fprintf(stderr, "exit guest: stderr line, exiting with %d\n", code);
    exit(code);
}
