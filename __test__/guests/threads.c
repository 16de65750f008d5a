/* threads [mode]  -- pthreads scenarios for thread support (built for glibc, static-pie and musl).
 *
 * Every line printed depends only on the program, never on how its threads interleave or on
 * the number of CPUs: only the main thread prints (except in main-exit, where the one thread
 * left prints after joining the main thread), and what it prints are final counters, sums,
 * values joined in order and yes/no checks. A failed check prints "FAIL: ..." to stderr and
 * exits 1.
 *
 * Modes run by default (no argument), in this order; each prints "== <mode> ==" first:
 *   mutex         8 threads x 20000 increments of a counter under a pthread_mutex
 *   condvar       bounded queue (capacity 4) under a mutex + 2 condvars: 3 producers x 500
 *                 items, 2 consumers; every item consumed exactly once
 *   rwlock        4 readers check an invariant under rdlock while 2 writers update under
 *                 wrlock; tryrdlock/trywrlock while a read lock is held
 *   barrier       4 threads x 5 phases through a pthread_barrier: all see every slot of the
 *                 phase; exactly one PTHREAD_BARRIER_SERIAL_THREAD per phase
 *   tls           __thread variables: initial value in every thread, distinct addresses, kept
 *                 values; pthread_key_create destructors run once per thread
 *   detached      detached threads report through a semaphore and through a condvar
 *   join          pthread_join return values, joined in order
 *   pthread-exit  a thread calls pthread_exit (from a nested call, cleanup handler runs)
 *                 while two others keep working
 *   gettid        gettid distinct per thread, getpid shared, main thread's gettid == getpid
 *   spin          two threads hand a volatile turn variable back and forth 10 times with
 *                 pure busy loops (no syscalls): on one CPU this needs preemption
 *   yield         the same hand-off with sched_yield() in the wait loops
 *   sleep         4 threads nanosleep 20 ms at the same time
 *   many          100 short threads created, then joined in order
 *   timed         sem_timedwait, pthread_cond_timedwait (realtime and monotonic clocks) and
 *                 pthread_mutex_timedlock time out with ETIMEDOUT, after their deadline;
 *                 trylock/trywait/errorcheck errors
 *   main-exit     (must be last) the main thread calls pthread_exit((void *)42) while a
 *                 worker runs; the worker joins the main thread, prints its value and
 *                 returns: the last thread ending makes the process exit with status 0
 *
 * Modes only run when named (not part of the default run):
 *   main-exit-code      as main-exit, but the worker then calls exit(3): status 3
 *   worker-exit         main blocks in pthread_join; the worker calls exit(6): status 6
 *   exit-group          main returns 4 from main() while two threads wait on a condvar
 *                       forever and one spins forever: status 4
 *   join-self-deadlock  the main thread joins A, A joins B, B joins the main thread: every
 *                       thread blocks forever in a futex wait. A cycle of three rather than two
 *                       threads joining each other, so that no libc's pairwise EDEADLK check
 *                       (older glibc had one; 2.36 and musl hang) can end it early.
 *                       NEVER ENDS natively. kvmbox must detect it.
 *   mutex-deadlock      main holds mutex 1 and wants 2, a worker holds 2 and wants 1.
 *                       NEVER ENDS natively. kvmbox must detect it.
 * Unknown mode: usage on stderr, exit 2. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL (line %d): ", __LINE__);                                         \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* pthread functions return the error number. */
#define PT(call)                                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECK(rc_ == 0, "%s returned %d (%s)", #call, rc_, strerror(rc_));                         \
    } while (0)

static const char *yes(int b) { return b ? "yes" : "no"; }

static const char *err_name(int e) {
    switch (e) {
    case 0: return "0";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EBUSY: return "EBUSY";
    case EAGAIN: return "EAGAIN";
    case EDEADLK: return "EDEADLK";
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case EINTR: return "EINTR";
    default: return "other";
    }
}

static pid_t my_tid(void) { return (pid_t)syscall(SYS_gettid); }

static void spawn(pthread_t *t, void *(*fn)(void *), void *arg) { PT(pthread_create(t, NULL, fn, arg)); }

static void *join(pthread_t t) {
    void *ret;
    PT(pthread_join(t, &ret));
    return ret;
}

/* ---------------------------------------------------------------- mutex */

#define MUTEX_THREADS 8
#define MUTEX_ITERS 20000
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *mutex_worker(void *arg) {
    (void)arg;
    for (int i = 0; i < MUTEX_ITERS; i++) {
        pthread_mutex_lock(&counter_lock);
        long c = counter;
        /* A window between read and write: without the lock, increments would be lost. */
        for (volatile int k = 0; k < 3; k++) {
        }
        counter = c + 1;
        pthread_mutex_unlock(&counter_lock);
    }
    return NULL;
}

static void scenario_mutex(void) {
    pthread_t t[MUTEX_THREADS];
    counter = 0;
    for (int i = 0; i < MUTEX_THREADS; i++) spawn(&t[i], mutex_worker, NULL);
    for (int i = 0; i < MUTEX_THREADS; i++) join(t[i]);
    printf("threads=%d iterations=%d counter=%ld expected=%ld\n", MUTEX_THREADS, MUTEX_ITERS, counter,
           (long)MUTEX_THREADS * MUTEX_ITERS);
    CHECK(counter == (long)MUTEX_THREADS * MUTEX_ITERS, "counter %ld", counter);
}

/* ---------------------------------------------------------------- condvar */

#define Q_CAP 4
#define PRODUCERS 3
#define CONSUMERS 2
#define ITEMS_PER_PRODUCER 500
static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    int items[Q_CAP];
    int head, len;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0};
static unsigned char seen[PRODUCERS * ITEMS_PER_PRODUCER];
static struct consumer_result {
    long sum;
    int count;
    int duplicates;
} consumer_results[CONSUMERS];

static void q_push(int v) {
    pthread_mutex_lock(&q.lock);
    while (q.len == Q_CAP) pthread_cond_wait(&q.not_full, &q.lock);
    q.items[(q.head + q.len) % Q_CAP] = v;
    q.len++;
    pthread_cond_signal(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
}

static int q_pop(void) {
    pthread_mutex_lock(&q.lock);
    while (q.len == 0) pthread_cond_wait(&q.not_empty, &q.lock);
    int v = q.items[q.head];
    q.head = (q.head + 1) % Q_CAP;
    q.len--;
    pthread_cond_signal(&q.not_full);
    pthread_mutex_unlock(&q.lock);
    return v;
}

static void *producer(void *arg) {
    int p = (int)(intptr_t)arg;
    for (int i = 0; i < ITEMS_PER_PRODUCER; i++) q_push(p * ITEMS_PER_PRODUCER + i);
    return NULL;
}

static void *consumer(void *arg) {
    struct consumer_result *r = arg;
    for (;;) {
        int v = q_pop();
        if (v < 0) return NULL; /* poison */
        r->sum += v;
        r->count++;
        /* seen[] is only written by the consumer that popped v; the lock makes it visible. */
        pthread_mutex_lock(&q.lock);
        if (seen[v]++) r->duplicates++;
        pthread_mutex_unlock(&q.lock);
    }
}

static void scenario_condvar(void) {
    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    memset(seen, 0, sizeof seen);
    memset(consumer_results, 0, sizeof consumer_results);
    for (int i = 0; i < CONSUMERS; i++) spawn(&cons[i], consumer, &consumer_results[i]);
    for (int i = 0; i < PRODUCERS; i++) spawn(&prod[i], producer, (void *)(intptr_t)i);
    for (int i = 0; i < PRODUCERS; i++) join(prod[i]);
    for (int i = 0; i < CONSUMERS; i++) q_push(-1);
    for (int i = 0; i < CONSUMERS; i++) join(cons[i]);
    long sum = 0;
    int count = 0, dups = 0, missing = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        sum += consumer_results[i].sum;
        count += consumer_results[i].count;
        dups += consumer_results[i].duplicates;
    }
    for (int i = 0; i < PRODUCERS * ITEMS_PER_PRODUCER; i++) missing += !seen[i];
    long n = PRODUCERS * ITEMS_PER_PRODUCER;
    printf("producers=%d consumers=%d capacity=%d items=%d sum=%ld expected=%ld\n", PRODUCERS, CONSUMERS, Q_CAP,
           count, sum, n * (n - 1) / 2);
    printf("every item consumed exactly once: %s\n", yes(dups == 0 && missing == 0 && count == n));
    CHECK(dups == 0 && missing == 0, "duplicates %d missing %d", dups, missing);
}

/* ---------------------------------------------------------------- rwlock */

#define READERS 4
#define WRITERS 2
#define READS 2000
#define WRITES 500
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static struct {
    long a, b;
} shared;

static void *rw_reader(void *arg) {
    (void)arg;
    long violations = 0;
    for (int i = 0; i < READS; i++) {
        pthread_rwlock_rdlock(&rw);
        long a = shared.a;
        for (volatile int k = 0; k < 3; k++) {
        }
        if (shared.b != a) violations++;
        pthread_rwlock_unlock(&rw);
    }
    return (void *)(intptr_t)violations;
}

static void *rw_writer(void *arg) {
    (void)arg;
    for (int i = 0; i < WRITES; i++) {
        pthread_rwlock_wrlock(&rw);
        shared.a++;
        for (volatile int k = 0; k < 3; k++) {
        }
        shared.b++;
        pthread_rwlock_unlock(&rw);
    }
    return NULL;
}

static int try_rd_result, try_wr_result;
static void *rw_trier(void *arg) {
    (void)arg;
    try_wr_result = pthread_rwlock_trywrlock(&rw);
    try_rd_result = pthread_rwlock_tryrdlock(&rw);
    if (try_rd_result == 0) pthread_rwlock_unlock(&rw);
    return NULL;
}

static void scenario_rwlock(void) {
    pthread_t r[READERS], w[WRITERS];
    shared.a = shared.b = 0;
    for (int i = 0; i < READERS; i++) spawn(&r[i], rw_reader, NULL);
    for (int i = 0; i < WRITERS; i++) spawn(&w[i], rw_writer, NULL);
    long violations = 0;
    for (int i = 0; i < WRITERS; i++) join(w[i]);
    for (int i = 0; i < READERS; i++) violations += (long)(intptr_t)join(r[i]);
    printf("readers=%d writers=%d a=%ld b=%ld reader violations=%ld\n", READERS, WRITERS, shared.a, shared.b,
           violations);
    CHECK(violations == 0 && shared.a == WRITERS * WRITES, "violations %ld a %ld", violations, shared.a);

    /* While the main thread holds a read lock, another thread can read-lock but not write-lock. */
    pthread_t t;
    PT(pthread_rwlock_rdlock(&rw));
    spawn(&t, rw_trier, NULL);
    join(t);
    PT(pthread_rwlock_unlock(&rw));
    printf("read lock held elsewhere: trywrlock=%s tryrdlock=%s\n", err_name(try_wr_result), err_name(try_rd_result));
}

/* ---------------------------------------------------------------- barrier */

#define B_THREADS 4
#define B_PHASES 5
static pthread_barrier_t barrier;
static int slots[B_THREADS];
static long phase_sums[B_THREADS][B_PHASES];
static int serial_count[B_PHASES];
static pthread_mutex_t serial_lock = PTHREAD_MUTEX_INITIALIZER;

static void *barrier_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int ph = 0; ph < B_PHASES; ph++) {
        slots[id] = (ph + 1) * 100 + id;
        pthread_barrier_wait(&barrier); /* all slots of this phase written */
        long s = 0;
        for (int i = 0; i < B_THREADS; i++) s += slots[i];
        phase_sums[id][ph] = s;
        int rc = pthread_barrier_wait(&barrier); /* all read before the next phase writes */
        if (rc == PTHREAD_BARRIER_SERIAL_THREAD) {
            pthread_mutex_lock(&serial_lock);
            serial_count[ph]++;
            pthread_mutex_unlock(&serial_lock);
        } else {
            CHECK(rc == 0, "pthread_barrier_wait returned %d", rc);
        }
    }
    return NULL;
}

static void scenario_barrier(void) {
    pthread_t t[B_THREADS];
    memset(serial_count, 0, sizeof serial_count);
    PT(pthread_barrier_init(&barrier, NULL, B_THREADS));
    for (int i = 0; i < B_THREADS; i++) spawn(&t[i], barrier_worker, (void *)(intptr_t)i);
    for (int i = 0; i < B_THREADS; i++) join(t[i]);
    PT(pthread_barrier_destroy(&barrier));
    printf("threads=%d phases=%d sums:", B_THREADS, B_PHASES);
    int agree = 1, one_serial = 1;
    for (int ph = 0; ph < B_PHASES; ph++) {
        printf(" %ld", phase_sums[0][ph]);
        for (int i = 1; i < B_THREADS; i++) agree &= phase_sums[i][ph] == phase_sums[0][ph];
        one_serial &= serial_count[ph] == 1;
    }
    printf("\nall threads saw the same sums: %s\none serial thread per phase: %s\n", yes(agree), yes(one_serial));
}

/* ---------------------------------------------------------------- tls */

#define TLS_THREADS 6
static __thread int tls_value = 100;
static __thread char tls_name[16] = "initial";
static __thread long tls_zero; /* .tbss */
static int *tls_addrs[TLS_THREADS + 1];
static int tls_initial_ok[TLS_THREADS];
static int tls_kept[TLS_THREADS];
static pthread_barrier_t tls_barrier;
static pthread_key_t key;
static int destructor_runs;
static long destructor_sum;
static pthread_mutex_t destructor_lock = PTHREAD_MUTEX_INITIALIZER;

static void key_destructor(void *v) {
    pthread_mutex_lock(&destructor_lock);
    destructor_runs++;
    destructor_sum += (long)(intptr_t)v;
    pthread_mutex_unlock(&destructor_lock);
}

static void *tls_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    tls_initial_ok[id] = tls_value == 100 && strcmp(tls_name, "initial") == 0 && tls_zero == 0 &&
                         pthread_getspecific(key) == NULL;
    tls_value = 1000 + id;
    snprintf(tls_name, sizeof tls_name, "thread-%d", id);
    tls_zero = id * 7L;
    tls_addrs[id] = &tls_value;
    PT(pthread_setspecific(key, (void *)(intptr_t)(id + 1)));
    pthread_barrier_wait(&tls_barrier); /* every thread alive and has written its values */
    char want[16];
    snprintf(want, sizeof want, "thread-%d", id);
    tls_kept[id] = tls_value == 1000 + id && strcmp(tls_name, want) == 0 && tls_zero == id * 7L &&
                   pthread_getspecific(key) == (void *)(intptr_t)(id + 1);
    return NULL;
}

static void scenario_tls(void) {
    pthread_t t[TLS_THREADS];
    PT(pthread_key_create(&key, key_destructor));
    PT(pthread_barrier_init(&tls_barrier, NULL, TLS_THREADS));
    tls_addrs[TLS_THREADS] = &tls_value;
    for (int i = 0; i < TLS_THREADS; i++) spawn(&t[i], tls_worker, (void *)(intptr_t)i);
    for (int i = 0; i < TLS_THREADS; i++) join(t[i]);
    PT(pthread_barrier_destroy(&tls_barrier));
    int initial = 1, kept = 1, distinct = 1;
    for (int i = 0; i < TLS_THREADS; i++) {
        initial &= tls_initial_ok[i];
        kept &= tls_kept[i];
        for (int j = 0; j < i; j++) distinct &= tls_addrs[i] != tls_addrs[j];
        distinct &= tls_addrs[i] != tls_addrs[TLS_THREADS];
    }
    printf("threads=%d initial values (100, \"initial\", 0) in every thread: %s\n", TLS_THREADS, yes(initial));
    printf("addresses distinct (workers and main): %s\nvalues kept after a barrier: %s\n", yes(distinct), yes(kept));
    printf("main thread's values untouched: %s\n", yes(tls_value == 100 && strcmp(tls_name, "initial") == 0 && tls_zero == 0));
    printf("key destructors: runs=%d sum=%ld\n", destructor_runs, destructor_sum);
    PT(pthread_key_delete(key));
}

/* ---------------------------------------------------------------- detached */

static sem_t detached_done;
static long detached_result;
static pthread_mutex_t flag_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flag_cond = PTHREAD_COND_INITIALIZER;
static int flag_done;
static long flag_result;

static void *detached_sem_worker(void *arg) {
    long n = (long)(intptr_t)arg, s = 0;
    for (long i = 1; i <= n; i++) s += i * i;
    detached_result = s;
    sem_post(&detached_done);
    return NULL;
}

static void *detached_cond_worker(void *arg) {
    long n = (long)(intptr_t)arg, s = 1;
    for (long i = 1; i <= n; i++) s = s * 3 % 1000003;
    pthread_mutex_lock(&flag_lock);
    flag_result = s;
    flag_done = 1;
    pthread_cond_signal(&flag_cond);
    pthread_mutex_unlock(&flag_lock);
    return NULL;
}

static void scenario_detached(void) {
    pthread_attr_t attr;
    pthread_t t1, t2;
    PT(pthread_attr_init(&attr));
    PT(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED));
    CHECK(sem_init(&detached_done, 0, 0) == 0, "sem_init");
    PT(pthread_create(&t1, &attr, detached_sem_worker, (void *)(intptr_t)1000));
    PT(pthread_create(&t2, &attr, detached_cond_worker, (void *)(intptr_t)1000));
    PT(pthread_attr_destroy(&attr));
    while (sem_wait(&detached_done) != 0) CHECK(errno == EINTR, "sem_wait: %s", strerror(errno));
    printf("detached (semaphore): sum of squares 1..1000 = %ld\n", detached_result);
    pthread_mutex_lock(&flag_lock);
    while (!flag_done) pthread_cond_wait(&flag_cond, &flag_lock);
    pthread_mutex_unlock(&flag_lock);
    printf("detached (condvar): 3^1000 mod 1000003 = %ld\n", flag_result);
}

/* ---------------------------------------------------------------- join */

static void *join_worker(void *arg) {
    long i = (long)(intptr_t)arg;
    return (void *)(intptr_t)(i * i + 1);
}

static void scenario_join(void) {
    pthread_t t[5];
    for (int i = 0; i < 5; i++) spawn(&t[i], join_worker, (void *)(intptr_t)i);
    printf("returned:");
    for (int i = 0; i < 5; i++) printf(" %ld", (long)(intptr_t)join(t[i]));
    printf("\n");
}

/* ---------------------------------------------------------------- pthread-exit */

static int cleanup_ran;
static sem_t keep_going;

static void cleanup_handler(void *arg) { cleanup_ran = (int)(intptr_t)arg; }

static void nested_exit(int depth) {
    if (depth < 0) return;
    if (depth == 0) pthread_exit((void *)(intptr_t)77);
    nested_exit(depth - 1);
    printf("not reached\n");
}

static void *exiting_worker(void *arg) {
    (void)arg;
    pthread_cleanup_push(cleanup_handler, (void *)(intptr_t)5);
    nested_exit(3);
    pthread_cleanup_pop(0);
    return (void *)(intptr_t)-1; /* not reached */
}

static void *continuing_worker(void *arg) {
    long base = (long)(intptr_t)arg, s = 0;
    /* Start after the other thread has exited; keep going after it. */
    while (sem_wait(&keep_going) != 0) {
    }
    for (long i = 0; i < 100000; i++) s += (i ^ base) & 0xff;
    return (void *)(intptr_t)s;
}

static void scenario_pthread_exit(void) {
    pthread_t ex, c1, c2;
    CHECK(sem_init(&keep_going, 0, 0) == 0, "sem_init");
    cleanup_ran = 0;
    spawn(&c1, continuing_worker, (void *)(intptr_t)1);
    spawn(&c2, continuing_worker, (void *)(intptr_t)2);
    spawn(&ex, exiting_worker, NULL);
    long v = (long)(intptr_t)join(ex);
    printf("pthread_exit value=%ld cleanup handler ran with arg %d\n", v, cleanup_ran);
    sem_post(&keep_going);
    sem_post(&keep_going);
    long r1 = (long)(intptr_t)join(c1), r2 = (long)(intptr_t)join(c2);
    printf("others kept working: %ld %ld\n", r1, r2);
    sem_destroy(&keep_going);
}

/* ---------------------------------------------------------------- gettid */

#define TID_THREADS 4
static pid_t tids[TID_THREADS];
static pid_t pids[TID_THREADS];
static pthread_barrier_t tid_barrier;

static void *tid_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    tids[id] = my_tid();
    pids[id] = getpid();
    pthread_barrier_wait(&tid_barrier); /* all alive at once: no tid reuse */
    return NULL;
}

static void scenario_gettid(void) {
    pthread_t t[TID_THREADS];
    PT(pthread_barrier_init(&tid_barrier, NULL, TID_THREADS));
    for (int i = 0; i < TID_THREADS; i++) spawn(&t[i], tid_worker, (void *)(intptr_t)i);
    for (int i = 0; i < TID_THREADS; i++) join(t[i]);
    PT(pthread_barrier_destroy(&tid_barrier));
    pid_t main_tid = my_tid(), pid = getpid();
    int distinct = 1, same_pid = 1, positive = 1;
    for (int i = 0; i < TID_THREADS; i++) {
        positive &= tids[i] > 0;
        same_pid &= pids[i] == pid;
        distinct &= tids[i] != main_tid;
        for (int j = 0; j < i; j++) distinct &= tids[i] != tids[j];
    }
    printf("threads=%d tids positive: %s distinct (incl. main): %s\n", TID_THREADS, yes(positive), yes(distinct));
    printf("getpid same in every thread: %s\nmain thread gettid == getpid: %s\n", yes(same_pid), yes(main_tid == pid));
}

/* ---------------------------------------------------------------- spin / yield */

#define HANDOFF_ROUNDS 5
static volatile int turn;

static inline void cpu_relax(void) { __asm__ __volatile__("pause" ::: "memory"); }

static void *spin_partner(void *arg) {
    (void)arg;
    for (int r = 0; r < HANDOFF_ROUNDS; r++) {
        while (turn != 2 * r) cpu_relax(); /* no syscalls */
        turn = 2 * r + 1;
    }
    return NULL;
}

static void *yield_partner(void *arg) {
    (void)arg;
    for (int r = 0; r < HANDOFF_ROUNDS; r++) {
        while (turn != 2 * r) sched_yield();
        turn = 2 * r + 1;
    }
    return NULL;
}

static int handoffs(void *(*partner)(void *), int use_yield) {
    pthread_t t;
    int n = 0;
    turn = -1;
    spawn(&t, partner, NULL);
    turn = 0; /* the partner may already be spinning, or not yet running */
    for (int r = 0; r < HANDOFF_ROUNDS; r++) {
        while (turn != 2 * r + 1) {
            if (use_yield) sched_yield();
            else cpu_relax();
        }
        n++;
        turn = 2 * r + 2;
        n++;
    }
    join(t);
    return n;
}

static void scenario_spin(void) {
    printf("busy-wait hand-offs: %d\n", handoffs(spin_partner, 0));
}

static void scenario_yield(void) {
    printf("sched_yield hand-offs: %d\n", handoffs(yield_partner, 1));
}

/* ---------------------------------------------------------------- sleep */

static void *sleeper(void *arg) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0) CHECK(errno == EINTR, "nanosleep: %s", strerror(errno));
    return arg;
}

static void scenario_sleep(void) {
    pthread_t t[4];
    long s = 0;
    for (int i = 0; i < 4; i++) spawn(&t[i], sleeper, (void *)(intptr_t)(i + 1));
    for (int i = 0; i < 4; i++) s += (long)(intptr_t)join(t[i]);
    printf("4 sleepers joined, sum of their values=%ld\n", s);
}

/* ---------------------------------------------------------------- sleep-spin */

/* A thread spins without syscalls while the main thread sleeps in short steps: each sleep must
 * end on time (the sleeper wakes and preempts the spinner), or the main thread would never run
 * again on one CPU. */
static volatile int spin_stop;
static void *pure_spinner(void *arg) {
    unsigned long n = 0;
    while (!spin_stop) n++;
    return arg;
}

static void scenario_sleep_spin(void) {
    pthread_t t;
    spawn(&t, pure_spinner, (void *)7);
    struct timespec ts = {0, 20 * 1000};
    int done = 0;
    for (int i = 0; i < 50; i++) done += nanosleep(&ts, NULL) == 0;
    struct timespec longer = {0, 15 * 1000 * 1000};
    done += nanosleep(&longer, NULL) == 0;
    spin_stop = 1;
    printf("51 sleeps ended while a thread spun: %s, spinner joined: %s\n", yes(done == 51), yes((intptr_t)join(t) == 7));
}

/* ---------------------------------------------------------------- many */

#define MANY 100
static void *short_worker(void *arg) { return (void *)((intptr_t)arg * 3 + 1); }

static void scenario_many(void) {
    static pthread_t t[MANY];
    for (int i = 0; i < MANY; i++) spawn(&t[i], short_worker, (void *)(intptr_t)i);
    long sum = 0;
    int in_order = 1;
    for (int i = 0; i < MANY; i++) {
        long v = (long)(intptr_t)join(t[i]);
        in_order &= v == i * 3 + 1;
        sum += v;
    }
    printf("threads=%d sum of returns=%ld each as expected: %s\n", MANY, sum, yes(in_order));
}

/* ---------------------------------------------------------------- timed */

static struct timespec deadline_in(clockid_t clk, long ms) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    ts.tv_nsec += ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}

static int reached(clockid_t clk, const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(clk, &now);
    return now.tv_sec > deadline->tv_sec || (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static int timedlock_rc, timedlock_late;
static void *timedlock_worker(void *arg) {
    (void)arg;
    struct timespec d = deadline_in(CLOCK_REALTIME, 30);
    timedlock_rc = pthread_mutex_timedlock(&held, &d);
    timedlock_late = reached(CLOCK_REALTIME, &d);
    if (timedlock_rc == 0) pthread_mutex_unlock(&held);
    return NULL;
}

static int trylock_rc;
static void *trylock_worker(void *arg) {
    (void)arg;
    trylock_rc = pthread_mutex_trylock(&held);
    if (trylock_rc == 0) pthread_mutex_unlock(&held);
    return NULL;
}

static void scenario_timed(void) {
    sem_t s;
    CHECK(sem_init(&s, 0, 0) == 0, "sem_init");
    struct timespec d = deadline_in(CLOCK_REALTIME, 30);
    int rc = sem_timedwait(&s, &d);
    int e = rc == 0 ? 0 : errno;
    printf("sem_timedwait 30 ms: rc=%d errno=%s after the deadline: %s\n", rc, err_name(e), yes(reached(CLOCK_REALTIME, &d)));
    rc = sem_trywait(&s);
    printf("sem_trywait on 0: rc=%d errno=%s\n", rc, err_name(rc == 0 ? 0 : errno));
    sem_post(&s);
    rc = sem_timedwait(&s, &d); /* deadline in the past, but the semaphore is available */
    printf("sem_timedwait when posted: rc=%d\n", rc);
    sem_destroy(&s);

    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pthread_mutex_lock(&m);
    d = deadline_in(CLOCK_REALTIME, 30);
    do rc = pthread_cond_timedwait(&c, &m, &d);
    while (rc == 0); /* a spurious wakeup would return 0: wait again */
    printf("pthread_cond_timedwait (CLOCK_REALTIME) 30 ms: %s after the deadline: %s\n", err_name(rc),
           yes(reached(CLOCK_REALTIME, &d)));
    pthread_mutex_unlock(&m);

    pthread_condattr_t ca;
    pthread_cond_t cm;
    PT(pthread_condattr_init(&ca));
    PT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
    PT(pthread_cond_init(&cm, &ca));
    pthread_mutex_lock(&m);
    d = deadline_in(CLOCK_MONOTONIC, 30);
    do rc = pthread_cond_timedwait(&cm, &m, &d);
    while (rc == 0);
    printf("pthread_cond_timedwait (CLOCK_MONOTONIC) 30 ms: %s after the deadline: %s\n", err_name(rc),
           yes(reached(CLOCK_MONOTONIC, &d)));
    pthread_mutex_unlock(&m);
    pthread_cond_destroy(&cm);
    pthread_condattr_destroy(&ca);

    /* Another thread cannot take a mutex the main thread holds. */
    pthread_t t;
    pthread_mutex_lock(&held);
    spawn(&t, timedlock_worker, NULL);
    join(t);
    spawn(&t, trylock_worker, NULL);
    join(t);
    pthread_mutex_unlock(&held);
    printf("pthread_mutex_timedlock 30 ms on a held mutex: %s after the deadline: %s\n", err_name(timedlock_rc),
           yes(timedlock_late));
    printf("pthread_mutex_trylock on a held mutex: %s\n", err_name(trylock_rc));

    pthread_mutexattr_t ma;
    pthread_mutex_t em;
    PT(pthread_mutexattr_init(&ma));
    PT(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK));
    PT(pthread_mutex_init(&em, &ma));
    PT(pthread_mutex_lock(&em));
    printf("errorcheck mutex locked twice: %s\n", err_name(pthread_mutex_lock(&em)));
    PT(pthread_mutex_unlock(&em));
    printf("errorcheck mutex unlocked when not held: %s\n", err_name(pthread_mutex_unlock(&em)));
    pthread_mutex_destroy(&em);
    pthread_mutexattr_destroy(&ma);
}

/* ---------------------------------------------------------------- main-exit and friends */

static pthread_t main_thread;
static int exit_code_after_main; /* -1: return normally */

static void *outliving_worker(void *arg) {
    (void)arg;
    void *ret;
    int rc = pthread_join(main_thread, &ret);
    /* The main thread is gone: this thread is the only one left, so it may print. */
    printf("worker: joined the main thread: rc=%s value=%ld\n", err_name(rc), (long)(intptr_t)ret);
    long s = 0;
    for (long i = 0; i < 1000; i++) s += i;
    printf("worker: still running after the main thread exited, sum=%ld\n", s);
    if (exit_code_after_main >= 0) {
        printf("worker: exit(%d)\n", exit_code_after_main);
        exit(exit_code_after_main);
    }
    printf("worker: returning (last thread: process exits 0)\n");
    return NULL;
}

static void scenario_main_exit(int code) {
    pthread_t t;
    main_thread = pthread_self();
    exit_code_after_main = code;
    spawn(&t, outliving_worker, NULL);
    printf("main: pthread_exit(42)\n");
    pthread_exit((void *)(intptr_t)42);
}

static void *exiting_process_worker(void *arg) {
    (void)arg;
    printf("worker: exit(6) while main waits in pthread_join\n");
    exit(6);
}

static void scenario_worker_exit(void) {
    pthread_t t;
    spawn(&t, exiting_process_worker, NULL);
    join(t);
    printf("not reached\n");
}

static pthread_mutex_t never_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never_cond = PTHREAD_COND_INITIALIZER;
static sem_t blocked_ready;
static volatile int spin_forever_started;

static void *block_forever(void *arg) {
    (void)arg;
    pthread_mutex_lock(&never_lock);
    sem_post(&blocked_ready);
    for (;;) pthread_cond_wait(&never_cond, &never_lock);
    return NULL;
}

static void *spin_forever(void *arg) {
    (void)arg;
    spin_forever_started = 1;
    for (;;) cpu_relax();
    return NULL;
}

static int scenario_exit_group(void) {
    pthread_t t;
    CHECK(sem_init(&blocked_ready, 0, 0) == 0, "sem_init");
    spawn(&t, block_forever, NULL);
    spawn(&t, block_forever, NULL);
    spawn(&t, spin_forever, NULL);
    while (sem_wait(&blocked_ready) != 0) {
    }
    while (sem_wait(&blocked_ready) != 0) {
    }
    while (!spin_forever_started) sched_yield();
    printf("main: returning 4 while 2 threads wait on a condvar and 1 spins\n");
    return 4;
}

/* Deadlocks: these never end natively. */
static pthread_t deadlock_a, deadlock_b;
static sem_t deadlock_go;

static void *join_next(void *arg) {
    pthread_t *next = arg;
    while (sem_wait(&deadlock_go) != 0) {
    }
    pthread_join(*next, NULL);
    printf("not reached\n");
    return NULL;
}

static void scenario_join_deadlock(void) {
    CHECK(sem_init(&deadlock_go, 0, 0) == 0, "sem_init");
    main_thread = pthread_self();
    spawn(&deadlock_a, join_next, &deadlock_b); /* A joins B */
    spawn(&deadlock_b, join_next, &main_thread); /* B joins main */
    printf("main joins A, A joins B, B joins main\n");
    fflush(stdout);
    sem_post(&deadlock_go);
    sem_post(&deadlock_go);
    int rc = pthread_join(deadlock_a, NULL);
    printf("not reached: %s\n", err_name(rc));
}

static pthread_mutex_t m1 = PTHREAD_MUTEX_INITIALIZER, m2 = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold;

static void *abba_worker(void *arg) {
    (void)arg;
    pthread_mutex_lock(&m2);
    pthread_barrier_wait(&both_hold);
    pthread_mutex_lock(&m1);
    printf("not reached\n");
    return NULL;
}

static void scenario_mutex_deadlock(void) {
    pthread_t t;
    PT(pthread_barrier_init(&both_hold, NULL, 2));
    pthread_mutex_lock(&m1);
    spawn(&t, abba_worker, NULL);
    pthread_barrier_wait(&both_hold);
    printf("main holds mutex 1 and wants 2, the worker holds 2 and wants 1\n");
    fflush(stdout);
    pthread_mutex_lock(&m2);
    printf("not reached\n");
}

/* ---------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*fn)(void);
} DEFAULT_SCENARIOS[] = {
    {"mutex", scenario_mutex},     {"condvar", scenario_condvar}, {"rwlock", scenario_rwlock},
    {"barrier", scenario_barrier}, {"tls", scenario_tls},         {"detached", scenario_detached},
    {"join", scenario_join},       {"pthread-exit", scenario_pthread_exit},
    {"gettid", scenario_gettid},   {"spin", scenario_spin},       {"yield", scenario_yield},
    {"sleep", scenario_sleep},     {"sleep-spin", scenario_sleep_spin}, {"many", scenario_many},
    {"timed", scenario_timed},
};
#define N_DEFAULT (sizeof DEFAULT_SCENARIOS / sizeof DEFAULT_SCENARIOS[0])

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : NULL;
    if (!mode) {
        for (size_t i = 0; i < N_DEFAULT; i++) {
            printf("== %s ==\n", DEFAULT_SCENARIOS[i].name);
            DEFAULT_SCENARIOS[i].fn();
        }
        printf("== main-exit ==\n");
        scenario_main_exit(-1);
    }
    for (size_t i = 0; i < N_DEFAULT; i++) {
        if (strcmp(mode, DEFAULT_SCENARIOS[i].name) == 0) {
            printf("== %s ==\n", mode);
            DEFAULT_SCENARIOS[i].fn();
            return 0;
        }
    }
    static const char *const EXTRA[] = {"main-exit",  "main-exit-code",     "worker-exit",
                                        "exit-group", "join-self-deadlock", "mutex-deadlock"};
    for (size_t i = 0; i < sizeof EXTRA / sizeof EXTRA[0]; i++)
        if (strcmp(mode, EXTRA[i]) == 0) printf("== %s ==\n", mode);
    if (strcmp(mode, "main-exit") == 0) scenario_main_exit(-1);
    if (strcmp(mode, "main-exit-code") == 0) scenario_main_exit(3);
    if (strcmp(mode, "worker-exit") == 0) scenario_worker_exit();
    if (strcmp(mode, "exit-group") == 0) return scenario_exit_group();
    if (strcmp(mode, "join-self-deadlock") == 0) scenario_join_deadlock();
    if (strcmp(mode, "mutex-deadlock") == 0) scenario_mutex_deadlock();
    fprintf(stderr, "usage: threads [mutex|condvar|rwlock|barrier|tls|detached|join|pthread-exit|gettid|spin|"
                    "yield|sleep|many|timed|main-exit|main-exit-code|worker-exit|exit-group|join-self-deadlock|"
                    "mutex-deadlock]\n");
    return 2;
}
