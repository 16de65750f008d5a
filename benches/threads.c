/* Thread benchmarks, each timing itself with CLOCK_MONOTONIC (so process start-up is not
 * counted):  create N  — create + join N threads one after the other;
 *            pingpong N — two threads hand a token back and forth N times over futexes;
 *            mutex N   — 4 threads increment one mutex-protected counter N times in all.
 * Prints "<name> <ms> <ns per op>". */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *nothing(void *arg) { return arg; }

static _Atomic int token; /* whose turn: 0 or 1 */
static long rounds;

static void futex_wait(_Atomic int *addr, int val) { syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0); }
static void futex_wake(_Atomic int *addr) { syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

static void *player(void *arg) {
    int me = (int)(long)arg;
    for (long i = 0; i < rounds; i++) {
        while (atomic_load(&token) != me) futex_wait(&token, !me);
        atomic_store(&token, !me);
        futex_wake(&token);
    }
    return NULL;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter, per_thread;
static void *incrementer(void *arg) {
    for (long i = 0; i < per_thread; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = atol(argv[2]);
    double t0 = now_ms(), ms;
    if (!strcmp(argv[1], "create")) {
        for (long i = 0; i < n; i++) {
            pthread_t t;
            pthread_create(&t, NULL, nothing, NULL);
            pthread_join(t, NULL);
        }
        ms = now_ms() - t0;
    } else if (!strcmp(argv[1], "pingpong")) {
        rounds = n;
        pthread_t a, b;
        pthread_create(&a, NULL, player, (void *)0L);
        pthread_create(&b, NULL, player, (void *)1L);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        ms = now_ms() - t0;
    } else if (!strcmp(argv[1], "mutex")) {
        per_thread = n / 4;
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, incrementer, NULL);
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
        ms = now_ms() - t0;
        if (counter != per_thread * 4) return 3;
    } else {
        return 2;
    }
    printf("%s %.3f %.1f\n", argv[1], ms, ms * 1e6 / n);
    return 0;
}
