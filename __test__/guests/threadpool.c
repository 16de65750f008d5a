/* A guest that starts a pool of worker threads, then pauses: the host calls functions that hand
 * work to the pool and wait for it (so the workers run during a call), and snapshots, forks and
 * resets the whole thread set. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "../../guest/include/kvmbox.h"

#define WORKERS 4
#define SLOTS 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;
static long queue[SLOTS];
static int queued, taken, finished;
static long results;
static long jobs_by_worker[WORKERS];
static long worker_tids[WORKERS];
static __thread long my_jobs; /* per-thread: proves each worker keeps its TLS across snapshots */
static long total_calls;

static long work(long n) {
    long x = n;
    for (int i = 0; i < 1000; i++) x = (x * 1103515245 + 12345) & 0x7fffffff;
    return n * n + (x & 0);
}

static void *worker(void *arg) {
    long id = (long)arg;
    worker_tids[id] = syscall(SYS_gettid);
    for (;;) {
        pthread_mutex_lock(&lock);
        while (taken == queued) pthread_cond_wait(&work_ready, &lock);
        long n = queue[taken++ % SLOTS];
        pthread_mutex_unlock(&lock);
        long r = work(n);
        my_jobs++;
        pthread_mutex_lock(&lock);
        results += r;
        jobs_by_worker[id] = my_jobs;
        finished++;
        pthread_cond_broadcast(&work_done);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* Hand n jobs (1..n) to the pool and wait for all of them: returns the sum of their squares. */
KVMBOX_EXPORT long run_jobs(long n) {
    if (n < 0 || n > SLOTS) return -1;
    pthread_mutex_lock(&lock);
    results = 0;
    int target = finished + (int)n;
    for (long i = 1; i <= n; i++) queue[queued++ % SLOTS] = i;
    pthread_cond_broadcast(&work_ready);
    while (finished < target) pthread_cond_wait(&work_done, &lock);
    long r = results;
    pthread_mutex_unlock(&lock);
    total_calls++;
    return r;
}

/* How many calls this machine has served since the snapshot (reset/forks start from it). */
KVMBOX_EXPORT long calls_served(void) { return total_calls; }

/* The sum of the per-worker job counters (each written by its own thread from its TLS). */
KVMBOX_EXPORT long jobs_done(void) {
    pthread_mutex_lock(&lock);
    long s = 0;
    for (int i = 0; i < WORKERS; i++) s += jobs_by_worker[i];
    pthread_mutex_unlock(&lock);
    return s;
}

/* 1 if every worker has its own tid, different from the caller's. */
KVMBOX_EXPORT long distinct_tids(void) {
    long me = syscall(SYS_gettid);
    for (int i = 0; i < WORKERS; i++) {
        if (worker_tids[i] <= 0 || worker_tids[i] == me) return 0;
        for (int j = 0; j < i; j++)
            if (worker_tids[i] == worker_tids[j]) return 0;
    }
    return 1;
}

int main(void) {
    pthread_t t[WORKERS];
    for (long i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    /* Wait until every worker has started (and blocks waiting for work). */
    for (;;) {
        int ready = 1;
        for (int i = 0; i < WORKERS; i++) ready &= worker_tids[i] != 0;
        if (ready) break;
        sched_yield();
    }
    printf("pool of %d ready\n", WORKERS);
    fflush(stdout);
    kvmbox_pause();
    /* Natively (no kvmbox) or when run on after the pause: serve one batch and exit. */
    printf("run_jobs(10) = %ld\n", run_jobs(10));
    return 0;
}
