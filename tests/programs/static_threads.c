/* static_threads.c: threads that are still alive when the process exits, for the syscall
 * recorder's tests (issue 15), built with `gcc -static` and `musl-gcc -static`.
 *
 * Each thread mallocs 64 bytes (glibc then makes it a malloc arena; musl's allocator does not)
 * and blocks. The main thread prints one line per thread, then the handshake, waits for a byte
 * or EOF on stdin and exits with exit(0) while every thread still runs: their stacks are in the
 * kernel's map at exit.
 *
 * Usage: static_threads K        (1..32 threads)
 * Stdout: thread <i> tid <tid> stack <lo-hex> <hi-hex> guard <bytes> requested 0
 *         ready <pid>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

struct slot {
    pid_t tid;
    uintptr_t lo, hi;
    size_t guard;
};

static struct slot slots[32];
static pthread_barrier_t started;

static void *worker(void *arg) {
    struct slot *s = arg;
    s->tid = (pid_t)syscall(SYS_gettid);
    pthread_attr_t a;
    void *lo;
    size_t size;
    pthread_getattr_np(pthread_self(), &a);
    pthread_attr_getstack(&a, &lo, &size);
    pthread_attr_getguardsize(&a, &s->guard);
    s->lo = (uintptr_t)lo;
    s->hi = (uintptr_t)lo + size;
    void *volatile p = malloc(64);
    (void)p;
    pthread_barrier_wait(&started);
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    int k = argc > 1 ? atoi(argv[1]) : 0;
    if (k < 1 || k > 32) {
        fprintf(stderr, "usage: static_threads K (1..32)\n");
        return 2;
    }
    pthread_barrier_init(&started, NULL, (unsigned)k + 1);
    for (int i = 0; i < k; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, &slots[i]) != 0) return 1;
    }
    pthread_barrier_wait(&started);
    for (int i = 0; i < k; i++)
        printf("thread %d tid %d stack %#lx %#lx guard %zu requested 0\n", i, slots[i].tid,
               (unsigned long)slots[i].lo, (unsigned long)slots[i].hi, slots[i].guard);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char c;
    if (read(0, &c, 1) < 0) return 1;
    exit(0);
}
