/* threads.c: thread stacks of known sizes, for checking vmshim's thread_stack attribution.
 *
 * Exercises pthread_create with explicit stack sizes (pthread_attr_setstacksize), so each
 * stack is a fresh glibc-internal mmap of SIZE + guard bytes that the mmap hook never sees:
 * only the pthread_create hook can attribute it. All threads stay alive (blocked on a
 * barrier) through the handshake, so their stacks are mapped when /proc is read.
 *
 * Usage: threads [--malloc] K [SIZE...]
 *   K       number of threads to create (1..64)
 *   SIZE    stack size in bytes of thread i (i-th SIZE); 0 or missing = glibc's default
 *           (RLIMIT_STACK, no attr). Page-multiple sizes map exactly SIZE + one guard page.
 *   --malloc  each thread mallocs and frees 64 bytes before signalling, which makes glibc
 *           create a malloc arena for it. Without it the threads never call malloc: no arenas.
 *
 * Stdout, one line each, flushed before the handshake:
 *   thread <i> tid <tid> stack <lo-hex> <hi-hex> guard <bytes> requested <bytes>
 *       (lo..hi is the usable stack from pthread_getattr_np; the guard lies just below lo)
 *   ready <pid>
 * Then reads one byte (or EOF) from stdin, releases the threads, joins them, exits 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_THREADS 64

struct slot {
    size_t requested;
    pid_t tid;
    uintptr_t lo, hi;
    size_t guard;
};

static struct slot slots[MAX_THREADS];
static pthread_barrier_t started, release;
static int do_malloc;

static void die(const char *what, int err) {
    fprintf(stderr, "threads: %s: %s\n", what, strerror(err));
    exit(1);
}

static void *worker(void *arg) {
    struct slot *s = arg;
    s->tid = (pid_t)syscall(SYS_gettid);
    if (do_malloc) {
        /* volatile: keep the compiler from eliding the pair */
        void *volatile p = malloc(64);
        free(p);
    }
    pthread_barrier_wait(&started);
    pthread_barrier_wait(&release);
    return NULL;
}

/* Reads a thread's stack from the main thread: pthread_getattr_np allocates (a cpuset), and
 * a first malloc in a worker would give it a malloc arena that only --malloc should make. */
static void read_stack(pthread_t id, struct slot *s) {
    pthread_attr_t attr;
    void *addr;
    size_t size;
    int err;
    if ((err = pthread_getattr_np(id, &attr)) != 0) die("pthread_getattr_np", err);
    pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_getguardsize(&attr, &s->guard);
    pthread_attr_destroy(&attr);
    s->lo = (uintptr_t)addr;
    s->hi = (uintptr_t)addr + size;
}

int main(int argc, char **argv) {
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--malloc") == 0) {
        do_malloc = 1;
        first = 2;
    }
    if (argc <= first) {
        fprintf(stderr, "usage: threads [--malloc] K [SIZE...]\n");
        return 2;
    }
    int k = atoi(argv[first]);
    if (k < 1 || k > MAX_THREADS) {
        fprintf(stderr, "threads: K must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    pthread_t ids[MAX_THREADS];
    int err;
    if ((err = pthread_barrier_init(&started, NULL, (unsigned)k + 1)) != 0) die("barrier", err);
    if ((err = pthread_barrier_init(&release, NULL, (unsigned)k + 1)) != 0) die("barrier", err);
    for (int i = 0; i < k; i++) {
        int arg = first + 1 + i;
        slots[i].requested = arg < argc ? strtoull(argv[arg], NULL, 0) : 0;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (slots[i].requested != 0 &&
            (err = pthread_attr_setstacksize(&attr, slots[i].requested)) != 0)
            die("pthread_attr_setstacksize", err);
        if ((err = pthread_create(&ids[i], &attr, worker, &slots[i])) != 0)
            die("pthread_create", err);
        pthread_attr_destroy(&attr);
    }
    pthread_barrier_wait(&started);
    for (int i = 0; i < k; i++) read_stack(ids[i], &slots[i]);
    for (int i = 0; i < k; i++)
        printf("thread %d tid %d stack %#lx %#lx guard %zu requested %zu\n", i, (int)slots[i].tid,
               (unsigned long)slots[i].lo, (unsigned long)slots[i].hi, slots[i].guard,
               slots[i].requested);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);

    char c;
    ssize_t n = read(0, &c, 1); /* a byte or EOF: either releases */
    (void)n;

    pthread_barrier_wait(&release);
    for (int i = 0; i < k; i++) pthread_join(ids[i], NULL);
    return 0;
}
