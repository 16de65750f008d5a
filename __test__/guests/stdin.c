/* Reads all of stdin, prints its length, an FNV-1a checksum and the content
 * uppercased (ASCII only). Empty stdin is fine (length 0). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    size_t cap = 1024, len = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (len == cap) buf = realloc(buf, cap *= 2);
        ssize_t n = read(0, buf + len, cap - len);
        if (n < 0) {
            perror("read");
            return 1;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= buf[i];
        h *= 16777619u;
    }
    printf("length: %zu\n", len);
    printf("fnv1a: %08x\n", h);
    for (size_t i = 0; i < len; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 32;
    printf("--- upper ---\n");
    fwrite(buf, 1, len, stdout);
    printf("\n--- end ---\n");
    free(buf);
    return 0;
}
