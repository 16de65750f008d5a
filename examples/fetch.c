/* A guest with networking through its host: there is no network inside kvmbox (socket() is
 * ENOSYS), so the guest asks the embedder with a host call, and the embedder decides what it
 * may reach. HC_FETCH(url, buf, cap) returns the length of the response body written to buf
 * (cut at cap), or a negative errno.
 *   gcc -O2 -static -o examples/fetch examples/fetch.c      (then: node examples/fetch.mjs URL)
 */
#include <stdio.h>
#include <string.h>

#include "../guest/include/kvmbox.h"

#define HC_FETCH 0x10100L

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fetch URL\n");
        return 2;
    }
    static char body[1 << 16];
    long n = kvmbox_hostcall3(HC_FETCH, (long)argv[1], (long)body, (long)sizeof body);
    if (n < 0) {
        fprintf(stderr, "fetch %s: error %ld\n", argv[1], -n);
        return 1;
    }
    /* Count the words, to show the guest got the body. */
    long words = 0;
    for (long i = 0, in = 0; i < n; i++) {
        int space = body[i] == ' ' || body[i] == '\n' || body[i] == '\t';
        words += !space && !in;
        in = !space;
    }
    printf("%ld bytes, %ld words: %.*s\n", n, words, (int)(n < 60 ? n : 60), body);
    return 0;
}
