/* stress.c: THREADS threads each make N mmap/munmap pairs at once, while a SIGALRM handler
 * (every 1 ms, on whichever thread it lands) maps and unmaps a page too: hooks reentered from a
 * signal handler, and many writers racing for the trace.
 *
 * Usage: stress THREADS N
 * Stdout: "calls <c> handler <h>": c mmap+munmap calls made by the threads, h by the handler.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>

static long n;
static atomic_long handler_calls;

static void on_alarm(int sig) {
    (void)sig;
    void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED && munmap(p, 4096) == 0) atomic_fetch_add(&handler_calls, 2);
}

static void *work(void *a) {
    for (long i = 0; i < n; i++) {
        void *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || munmap(p, 8192) != 0) exit(4);
    }
    return a;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int threads = atoi(argv[1]);
    n = atol(argv[2]);
    if (threads < 1 || threads > 256) return 2;
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    pthread_t t[256];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("calls %ld handler %ld\n", 2 * n * threads, atomic_load(&handler_calls));
    return 0;
}
