/* A program to debug with gdb: compute() is called with known arguments. */
#include <stdio.h>

int compute(int x) {
    int y = x * 2;
    int z = y + 3;
    return z * z;
}

int main(void) {
    int total = 0;
    for (int i = 1; i <= 3; i++) total += compute(i * 10);
    printf("total %d\n", total);
    return total % 256;
}
