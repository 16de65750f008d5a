/* For the gdb thread tests: three workers each call work(id) while the main thread waits. */
#include <pthread.h>
#include <stdio.h>

static pthread_barrier_t started;

__attribute__((noinline)) long work(long id) {
    long acc = 0;
    for (long i = 0; i <= id * 1000; i++) acc += i;
    return acc;
}

static void *worker(void *arg) {
    long id = (long)arg;
    pthread_barrier_wait(&started);
    return (void *)work(id);
}

int main(void) {
    pthread_t t[3];
    pthread_barrier_init(&started, NULL, 4);
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    pthread_barrier_wait(&started);
    long sum = 0;
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    printf("sum %ld\n", sum);
    return 0;
}
