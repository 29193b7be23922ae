/* static_callers.c: a static C program whose address-space calls are made by libc on behalf of
 * named functions of the program, for the syscall recorder's `.eh_frame` unwinding (issue 15):
 * start_worker_threads() calls pthread_create (libc maps the thread stacks), and
 * reserve_big_block() mallocs 8 MiB (libc maps the chunk). Built with `gcc -static` and
 * `musl-gcc -static`.
 *
 * Usage: static_callers
 * Stdout: big <address-hex>
 *         ready <pid>
 * then waits for a byte or EOF on stdin and exits with exit(0), the threads still running.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define THREADS 2

static pthread_barrier_t started;

static void *worker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&started);
    for (;;) pause();
    return NULL;
}

__attribute__((noinline)) void start_worker_threads(void) {
    for (int i = 0; i < THREADS; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) exit(1);
    }
}

__attribute__((noinline)) void *reserve_big_block(void) {
    return malloc(8 << 20);
}

int main(void) {
    pthread_barrier_init(&started, NULL, THREADS + 1);
    start_worker_threads();
    pthread_barrier_wait(&started);
    void *volatile big = reserve_big_block();
    if (big == NULL) return 1;
    printf("big %#lx\n", (unsigned long)big);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char c;
    if (read(0, &c, 1) < 0) return 1;
    exit(0);
}
