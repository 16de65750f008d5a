/* The example server's guest: renders an HTML page from a request body.
 * In kvmbox: initializes (builds its template), pauses, then the host calls render() per
 * request. Natively (for the spawn-per-request comparison) kvmbox_pause() returns -ENOSYS and
 * main() renders the body read from stdin instead.
 * Special bodies, to show failure handling: "crash" dereferences NULL, "loop" never returns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../guest/include/kvmbox.h"

static char *template_head, *template_tail;

static void init(void) {
    template_head = strdup("<!doctype html><html><head><title>kvmbox</title></head><body><h1>Hello from a KVM sandbox</h1><p>You sent ");
    template_tail = strdup(" words:</p></body></html>\n");
}

/* Appends `s` HTML-escaped; returns the new length. */
static long put_escaped(char *out, long n, long cap, const char *s, long len) {
    for (long i = 0; i < len; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '&': rep = "&amp;"; break;
        case '"': rep = "&quot;"; break;
        }
        if (rep) {
            long r = (long)strlen(rep);
            if (n + r < cap) { memcpy(out + n, rep, (size_t)r); n += r; }
        } else if (n + 1 < cap) {
            out[n++] = s[i];
        }
    }
    return n;
}

KVMBOX_EXPORT long render(const char *body, long len, char *out, long cap) {
    if (len == 5 && !memcmp(body, "crash", 5)) return *(volatile long *)0;
    if (len == 4 && !memcmp(body, "loop", 4)) for (;;) __asm__ volatile("");
    long words = 0;
    for (long i = 0; i < len; i++) words += (i == 0 || body[i - 1] == ' ') && body[i] != ' ';
    char count[32];
    int c = snprintf(count, sizeof count, "%ld", words);
    long n = 0;
    long h = (long)strlen(template_head);
    if (h >= cap) return -1;
    memcpy(out, template_head, (size_t)h);
    n = h;
    n = put_escaped(out, n, cap, count, c);
    const char *mid = " words: <blockquote>";
    n = put_escaped(out, n, cap, "", 0);
    if (n + (long)strlen(mid) < cap) { memcpy(out + n, mid, strlen(mid)); n += (long)strlen(mid); }
    n = put_escaped(out, n, cap, body, len);
    const char *end = "</blockquote></body></html>\n";
    if (n + (long)strlen(end) < cap) { memcpy(out + n, end, strlen(end)); n += (long)strlen(end); }
    return n;
}

/* A CPU-bound request: key stretching (what a password-hashing endpoint does). Hashes the body
 * (FNV-1a), then runs `rounds` rounds of the splitmix64 finalizer over it and writes the
 * 16-hex-digit result to `out`. Returns its length. */
KVMBOX_EXPORT long stretch(const char *body, long len, long rounds, char *out, long cap) {
    unsigned long h = 0xcbf29ce484222325UL;
    for (long i = 0; i < len; i++) h = (h ^ (unsigned char)body[i]) * 0x100000001b3UL;
    for (long i = 0; i < rounds; i++) {
        h += 0x9e3779b97f4a7c15UL;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9UL;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebUL;
        h ^= h >> 31;
    }
    if (cap < 17) return -1;
    return snprintf(out, (size_t)cap, "%016lx\n", h);
}

int main(int argc, char **argv) {
    init();
    if (kvmbox_pause() == 0) return 0; /* in kvmbox the host resumes us only to finish */
    /* Natively: one request from stdin (`render stretch ROUNDS` for the CPU-bound one). */
    static char body[65536], out[1 << 20];
    long len = (long)fread(body, 1, sizeof body, stdin);
    long n = argc == 3 && !strcmp(argv[1], "stretch") ? stretch(body, len, atol(argv[2]), out, sizeof out)
                                                       : render(body, len, out, sizeof out);
    if (n < 0) return 1;
    fwrite(out, 1, (size_t)n, stdout);
    return 0;
}
