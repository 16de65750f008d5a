/* Minimal guest: prints one line and exits 0. */
#include <stdio.h>

int main(void) {
    fputs("hello from kvmbox guest\n", stdout);
    return 0;
}
