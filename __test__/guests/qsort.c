/* qsort/bsearch on ints and strings plus assorted string.h / snprintf usage.
 * Comparators define a total order, so results do not depend on qsort
 * stability (glibc uses mergesort, musl smoothsort). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}
static int cmp_int_desc(const void *a, const void *b) { return cmp_int(b, a); }
static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}
static int cmp_len_then_str(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x, y);
}

#define N 5000
static int arr[N];

int main(void) {
    uint32_t s = 2463534242u;
    for (int i = 0; i < N; i++) {
        s ^= s << 13; s ^= s >> 17; s ^= s << 5;
        arr[i] = (int)(s % 200001) - 100000;
    }
    qsort(arr, N, sizeof(int), cmp_int);
    int sorted = 1;
    long long sum = 0;
    uint32_t h = 0;
    for (int i = 0; i < N; i++) {
        if (i && arr[i - 1] > arr[i]) sorted = 0;
        sum += arr[i];
        h = h * 31u + (uint32_t)arr[i];
    }
    printf("ints sorted=%d sum=%lld hash=%08x\n", sorted, sum, h);
    printf("first:");
    for (int i = 0; i < 8; i++) printf(" %d", arr[i]);
    printf("\nlast:");
    for (int i = N - 8; i < N; i++) printf(" %d", arr[i]);
    printf("\n");
    int key = arr[1234];
    int *found = bsearch(&key, arr, N, sizeof(int), cmp_int);
    printf("bsearch(%d): %s\n", key, found && *found == key ? "found" : "missing");
    key = 100001;
    printf("bsearch(%d): %s\n", key, bsearch(&key, arr, N, sizeof(int), cmp_int) ? "found" : "missing");
    int small[] = {5, -3, 9, 0, 9, -3, 42, 7};
    qsort(small, 8, sizeof(int), cmp_int_desc);
    printf("desc:");
    for (int i = 0; i < 8; i++) printf(" %d", small[i]);
    printf("\n");
    qsort(small, 0, sizeof(int), cmp_int); /* empty sort is fine */

    const char *words[] = {"pear", "apple", "fig", "banana", "kiwi", "Apple", "cherry", "date",
                           "elderberry", "grape", "", "zucchini", "apple pie", "apricot", "fig"};
    size_t nw = sizeof(words) / sizeof(words[0]);
    const char *w1[sizeof(words) / sizeof(words[0])], *w2[sizeof(words) / sizeof(words[0])];
    memcpy(w1, words, sizeof(words));
    memcpy(w2, words, sizeof(words));
    qsort(w1, nw, sizeof(char *), cmp_str);
    qsort(w2, nw, sizeof(char *), cmp_len_then_str);
    printf("strcmp order:");
    for (size_t i = 0; i < nw; i++) printf(" [%s]", w1[i]);
    printf("\nlength order:");
    for (size_t i = 0; i < nw; i++) printf(" [%s]", w2[i]);
    printf("\n");

    char buf[128];
    const char *hay = "the quick brown fox jumps over the lazy dog";
    const char *p = strstr(hay, "fox");
    printf("strlen=%zu strstr(fox)@%d strstr(cat)=%s strchr(q)@%d strrchr(o)@%d\n", strlen(hay),
           p ? (int)(p - hay) : -1, strstr(hay, "cat") ? "found" : "NULL", (int)(strchr(hay, 'q') - hay),
           (int)(strrchr(hay, 'o') - hay));
    memcpy(buf, hay, 9);
    buf[9] = '\0';
    printf("memcpy prefix=[%s]\n", buf);
    memmove(buf + 2, buf, 7);
    printf("memmove overlap=[%s]\n", buf);
    memset(buf, 'x', 5);
    buf[5] = 0;
    printf("memset=[%s] memcmp=%d strncmp=%d\n", buf, memcmp("abc", "abd", 3) < 0 ? -1 : 1,
           strncmp("hello", "help", 3));
    volatile size_t lim = 10; /* volatile: truncation is intentional */
    int n = snprintf(buf, lim, "%s-%05d-%x-%c", "trunc", 42, 255, 'Z');
    printf("snprintf truncated=[%s] would_be=%d\n", buf, n);
    n = snprintf(buf, sizeof buf, "%-6s|%6s|%+d|%lu|%llx|%%|%.3s", "ab", "cd", 7, 123456789UL, 0xdeadbeefULL, "abcdef");
    printf("snprintf=[%s] len=%d\n", buf, n);
    char tok[] = "a,b,,c;d";
    char *save, *t = strtok_r(tok, ",;", &save);
    printf("tokens:");
    while (t) { printf(" <%s>", t); t = strtok_r(NULL, ",;", &save); }
    printf("\n");
    printf("strtol: %ld %ld %lu\n", strtol("-0x1F", NULL, 16), strtol("0777", NULL, 0), strtoul("12345abc", NULL, 10));
    char *dup = strdup(hay);
    for (char *c = dup; *c; c++) if (*c == ' ') *c = '_';
    printf("strdup+replace=[%s]\n", dup);
    free(dup);
    return 0;
}
