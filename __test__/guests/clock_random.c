/* Clock and getrandom sanity checks; prints only "ok"/"FAILED" lines, never
 * the times or random bytes themselves. Exit 0 iff all checks pass. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

static int failures = 0;
static void check(int ok, const char *what) {
    printf("%s: %s\n", what, ok ? "ok" : "FAILED");
    if (!ok) failures++;
}

static long long ts_ns(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(void) {
    struct timespec m1, m2, r, m3, m4;
    check(clock_gettime(CLOCK_MONOTONIC, &m1) == 0, "clock_gettime(CLOCK_MONOTONIC)");
    check(clock_gettime(CLOCK_MONOTONIC, &m2) == 0, "clock_gettime(CLOCK_MONOTONIC) again");
    check(ts_ns(m2) >= ts_ns(m1), "clock monotonic non-decreasing");
    check(m1.tv_nsec >= 0 && m1.tv_nsec < 1000000000L, "clock monotonic tv_nsec in range");

    check(clock_gettime(CLOCK_REALTIME, &r) == 0, "clock_gettime(CLOCK_REALTIME)");
    check(r.tv_sec > 1577836800LL, "clock realtime after 2020");
    check(r.tv_nsec >= 0 && r.tv_nsec < 1000000000L, "clock realtime tv_nsec in range");

    struct timeval tv;
    check(gettimeofday(&tv, NULL) == 0, "gettimeofday");
    long long diff = (long long)tv.tv_sec - (long long)r.tv_sec;
    check(diff >= -2 && diff <= 2, "gettimeofday agrees with realtime");
    check(tv.tv_usec >= 0 && tv.tv_usec < 1000000, "gettimeofday tv_usec in range");
    time_t t = time(NULL);
    diff = (long long)t - (long long)r.tv_sec;
    check(diff >= -2 && diff <= 2, "time() agrees with realtime");

    struct timespec res;
    check(clock_getres(CLOCK_MONOTONIC, &res) == 0 && res.tv_sec == 0 && res.tv_nsec > 0 &&
              res.tv_nsec <= 10000000,
          "clock_getres(CLOCK_MONOTONIC) <= 10ms");

    clock_gettime(CLOCK_MONOTONIC, &m3);
    struct timespec req = {0, 10 * 1000 * 1000}, rem;
    int rc;
    while ((rc = nanosleep(&req, &rem)) == -1 && errno == EINTR) req = rem;
    check(rc == 0, "nanosleep(10ms)");
    clock_gettime(CLOCK_MONOTONIC, &m4);
    check(ts_ns(m4) - ts_ns(m3) >= 10000000LL, "nanosleep advanced monotonic by >= 10ms");
    check(ts_ns(m4) - ts_ns(m3) < 5000000000LL, "nanosleep returned within 5s");

    unsigned char a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    check(getrandom(a, sizeof a, 0) == (ssize_t)sizeof a, "getrandom(64) filled");
    check(getrandom(b, sizeof b, 0) == (ssize_t)sizeof b, "getrandom(64) again filled");
    int nonzero = 0;
    for (size_t i = 0; i < sizeof a; i++) nonzero |= a[i];
    check(nonzero != 0, "getrandom not all zero");
    check(memcmp(a, b, sizeof a) != 0, "getrandom calls differ");
    check(getrandom(a, 0, 0) == 0, "getrandom(0 bytes) returns 0");

    printf("failures: %d\n", failures);
    return failures ? 1 : 0;
}
