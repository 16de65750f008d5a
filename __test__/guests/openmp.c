/* openmp -- OpenMP (GCC libgomp, linked statically; glibc and static-pie builds only: the
 * libgomp.a that comes with gcc is built against glibc). Run with OMP_NUM_THREADS=4.
 *
 * Output depends only on the program, never on scheduling or the number of CPUs: only the
 * master thread prints after the parallel regions, and only reductions, sums, counts and
 * yes/no checks. The team size is not printed as such, only whether every thread of the team
 * took part and agreed on omp_get_num_threads().
 *
 * Regions: parallel for with a reduction(+) and reduction(max); a critical section; atomic
 * updates; a static and a dynamic schedule covering every index once; barrier + single +
 * master; sections; tasks (recursive fib with taskwait); threadprivate; nested lock API. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *yes(int b) { return b ? "yes" : "no"; }

static int tp_value = 7;
#pragma omp threadprivate(tp_value)

static long fib(int n) {
    if (n < 2) return n;
    long a, b;
#pragma omp task shared(a) if (n > 12)
    a = fib(n - 1);
#pragma omp task shared(b) if (n > 12)
    b = fib(n - 2);
#pragma omp taskwait
    return a + b;
}

int main(void) {
    const int N = 100000;

    long sum = 0;
    long maxv = 0;
#pragma omp parallel for reduction(+ : sum) reduction(max : maxv) schedule(static)
    for (int i = 0; i < N; i++) {
        long v = (long)i * i % 1009;
        sum += v;
        if (v > maxv) maxv = v;
    }
    printf("parallel for reduction: sum=%ld max=%ld\n", sum, maxv);

    /* Every thread of the team reports omp_get_num_threads() and its thread number. */
    int team = 0, agree = 1, expected = omp_get_max_threads();
    unsigned long seen_mask = 0;
    long critical_total = 0;
    long atomic_total = 0;
#pragma omp parallel
    {
        int n = omp_get_num_threads(), me = omp_get_thread_num();
        long local = 0;
        for (int i = me; i < N; i += n) local += i % 13;
#pragma omp critical
        {
            critical_total += local;
            team++;
            if (n != expected) agree = 0;
            if (me < 64) seen_mask |= 1UL << me;
        }
        for (int k = 0; k < 1000; k++) {
#pragma omp atomic
            atomic_total++;
        }
    }
    int all_numbers = team <= 64 && seen_mask == (team == 64 ? ~0UL : (1UL << team) - 1);
    printf("critical: total=%ld; every thread took part once with numbers 0..n-1: %s; all agreed on the team size "
           "(= omp_get_max_threads()): %s\n",
           critical_total, yes(all_numbers && team == expected), yes(agree));
    printf("atomic: total == 1000 * team size: %s\n", yes(atomic_total == 1000L * team));

    static unsigned char hits_static[10000], hits_dynamic[10000];
    memset(hits_static, 0, sizeof hits_static);
    memset(hits_dynamic, 0, sizeof hits_dynamic);
#pragma omp parallel
    {
#pragma omp for schedule(static, 7)
        for (int i = 0; i < 10000; i++) hits_static[i]++;
#pragma omp for schedule(dynamic, 13)
        for (int i = 0; i < 10000; i++) hits_dynamic[i]++;
    }
    int once = 1;
    for (int i = 0; i < 10000; i++) once &= hits_static[i] == 1 && hits_dynamic[i] == 1;
    printf("static and dynamic schedules covered every index exactly once: %s\n", yes(once));

    int singles = 0, masters = 0, phase_ok = 1;
    int phase[64] = {0};
#pragma omp parallel
    {
        int me = omp_get_thread_num();
        if (me < 64) phase[me] = 1;
#pragma omp barrier
#pragma omp single
        {
            for (int i = 0; i < omp_get_num_threads() && i < 64; i++) phase_ok &= phase[i] == 1;
            singles++;
        }
#pragma omp master
        masters++;
    }
    printf("barrier then single: all threads had arrived: %s; single ran %d time(s), master %d time(s)\n",
           yes(phase_ok), singles, masters);

    long s1 = 0, s2 = 0, s3 = 0;
#pragma omp parallel sections
    {
#pragma omp section
        for (int i = 1; i <= 100; i++) s1 += i;
#pragma omp section
        for (int i = 1; i <= 100; i++) s2 += (long)i * i;
#pragma omp section
        for (int i = 1; i <= 20; i++) s3 += i % 2 ? i : -i;
    }
    printf("sections: %ld %ld %ld\n", s1, s2, s3);

    long f = 0;
#pragma omp parallel
#pragma omp single
    f = fib(25);
    printf("tasks: fib(25)=%ld\n", f);

    int tp_ok = 1;
#pragma omp parallel reduction(& : tp_ok)
    {
        tp_ok = tp_value == 7;
        tp_value = 100 + omp_get_thread_num();
#pragma omp barrier
        tp_ok &= tp_value == 100 + omp_get_thread_num();
    }
    printf("threadprivate: initial value and per-thread copies ok: %s\n", yes(tp_ok));

    omp_lock_t lock;
    omp_init_lock(&lock);
    long locked_total = 0;
#pragma omp parallel for
    for (int i = 0; i < 1000; i++) {
        omp_set_lock(&lock);
        locked_total += i;
        omp_unset_lock(&lock);
    }
    omp_destroy_lock(&lock);
    printf("omp lock: total=%ld\n", locked_total);
    return 0;
}
