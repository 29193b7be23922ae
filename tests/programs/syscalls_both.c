/* syscalls_both.c: glibc's internal mappings, for `vmshim run --syscalls` with the shim and
 * without it (issue 15): K threads, each alive at exit, each with a malloc arena of its own (its
 * first malloc) and a large chunk that malloc maps by itself, plus one large chunk of the main
 * thread. None of these mappings goes through an interposable mmap: the shim infers them, the
 * syscall recorder sees the system calls.
 *
 * Usage: syscalls_both K        (1..16 threads)
 * Stdout: thread <i> tid <tid> stack <lo-hex> <hi-hex> guard <bytes> requested 0
 *         big <tid> <ptr-hex> <bytes>
 *         threads <K>
 *         ready <pid>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct slot {
    pid_t tid;
    uintptr_t lo, hi;
    size_t guard;
    void *big;
    size_t big_size;
};

static struct slot slots[17];
static pthread_barrier_t started;

/* Above glibc's mmap threshold (128 KiB, unchanged: no large chunk is freed), a size per thread. */
static size_t big_size(int i) { return (1u << 20) + (size_t)i * 12345; }

static void *worker(void *arg) {
    struct slot *s = arg;
    s->tid = (pid_t)syscall(SYS_gettid);
    void *volatile small = malloc(64);
    memset(small, 1, 64);
    s->big = malloc(s->big_size);
    memset(s->big, 2, 4096);
    pthread_attr_t a;
    void *lo;
    size_t size;
    pthread_getattr_np(pthread_self(), &a);
    pthread_attr_getstack(&a, &lo, &size);
    pthread_attr_getguardsize(&a, &s->guard);
    pthread_attr_destroy(&a);
    s->lo = (uintptr_t)lo;
    s->hi = (uintptr_t)lo + size;
    pthread_barrier_wait(&started);
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    int k = argc > 1 ? atoi(argv[1]) : 0;
    if (k < 1 || k > 16) {
        fprintf(stderr, "usage: syscalls_both K (1..16)\n");
        return 2;
    }
    pthread_barrier_init(&started, NULL, (unsigned)k + 1);
    for (int i = 0; i < k; i++) {
        pthread_t t;
        slots[i].big_size = big_size(i + 1);
        if (pthread_create(&t, NULL, worker, &slots[i]) != 0) return 1;
    }
    pthread_barrier_wait(&started);
    size_t main_size = big_size(0);
    void *main_big = malloc(main_size);
    memset(main_big, 3, 4096);
    for (int i = 0; i < k; i++)
        printf("thread %d tid %d stack %#lx %#lx guard %zu requested 0\n", i, slots[i].tid,
               (unsigned long)slots[i].lo, (unsigned long)slots[i].hi, slots[i].guard);
    for (int i = 0; i < k; i++)
        printf("big %d %#lx %zu\n", slots[i].tid, (unsigned long)slots[i].big, slots[i].big_size);
    printf("big %d %#lx %zu\n", (int)getpid(), (unsigned long)main_big, main_size);
    printf("threads %d\n", k);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char c;
    if (read(0, &c, 1) < 0) return 1;
    exit(0);
}
