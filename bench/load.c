/* load.c: the benchmark workloads, one per mode, timed by scripts/bench.py.
 *
 * Usage: load mmap N      2 threads, each N x (mmap 64 KiB, touch every page, munmap)
 *        load malloc N    2 threads, each N/2 x (malloc(32), free): N pairs in all
 *        load threads N   N x (pthread_create, pthread_join) of an empty thread
 *        load event N     1 thread, N x mprotect of one page to the protection it has, from
 *                         16 C frames deep: the cost of recording one event with its stack
 *        load event-mix N the same from two call sites in turn: no event has the stack of the
 *                         one before it
 *        load maps N      N x (munmap the oldest of 2,048 live one-page mappings, mmap a new
 *                         one), from 4 call sites at 50 stack depths: 2N recorded events, 200
 *                         distinct stacks, a bounded set of live regions (the report's input
 *                         for its scaling benchmark)
 * Prints the wall time of the work itself in seconds on stdout.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static long n;

static void *mmap_loop(void *a) {
    for (long i = 0; i < n; i++) {
        char *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (int off = 0; off < 65536; off += 4096) p[off] = 1;
        munmap(p, 65536);
    }
    return a;
}

static void *malloc_loop(void *a) {
    for (long i = 0; i < n / 2; i++) {
        void *volatile p = malloc(32);
        free(p);
    }
    return a;
}

static void *nothing(void *a) { return a; }

static char *page;

static int mix;

static volatile int last; /* makes the two call sites different code (gcc merges twins) */
static __attribute__((noinline)) void event_a(void) { mprotect(page, 4096, PROT_READ | PROT_WRITE); last = 1; }
static __attribute__((noinline)) void event_b(void) { mprotect(page, 4096, PROT_READ | PROT_WRITE); last = 2; }

#define LIVE 2048
static void *live[LIVE];

/* One step of the `maps` mode from call site `site`, `depth` frames down. */
static __attribute__((noinline)) int maps_step(long i, int site, int depth) {
    if (depth > 0) {
        int r = maps_step(i, site, depth - 1);
        __asm__ volatile("" ::: "memory");
        return r;
    }
    long k = i % LIVE;
    if (live[k]) munmap(live[k], 4096);
    live[k] = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    last = site;
    return live[k] == MAP_FAILED;
}
static __attribute__((noinline)) int site0(long i) { return maps_step(i, 0, (int)(i % 50)); }
static __attribute__((noinline)) int site1(long i) { return maps_step(i, 1, (int)(i % 50)); }
static __attribute__((noinline)) int site2(long i) { return maps_step(i, 2, (int)(i % 50)); }
static __attribute__((noinline)) int site3(long i) { return maps_step(i, 3, (int)(i % 50)); }

/* Recurses `depth` frames before its loop, so that each event has a stack of C frames to walk. */
static __attribute__((noinline)) long event_loop(int depth) {
    if (depth > 0) {
        long r = event_loop(depth - 1);
        __asm__ volatile("" ::: "memory"); /* not a tail call, not a loop */
        return r + 1;
    }
    for (long i = 0; i < n; i++) {
        if (mix && (i & 1)) event_b();
        else event_a();
    }
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    n = atol(argv[2]);
    double t0 = now();
    if (strcmp(argv[1], "event") == 0 || strcmp(argv[1], "event-mix") == 0) {
        mix = strcmp(argv[1], "event-mix") == 0;
        page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        t0 = now();
        if (event_loop(16) < 0) return 1;
    } else if (strcmp(argv[1], "maps") == 0) {
        int (*sites[4])(long) = {site0, site1, site2, site3};
        for (long i = 0; i < n; i++)
            if (sites[(i / 50) % 4](i)) return 1;
    } else if (strcmp(argv[1], "threads") == 0) {
        for (long i = 0; i < n; i++) {
            pthread_t t;
            pthread_create(&t, NULL, nothing, NULL);
            pthread_join(t, NULL);
        }
    } else {
        void *(*f)(void *) = strcmp(argv[1], "mmap") == 0 ? mmap_loop : malloc_loop;
        pthread_t t[2];
        for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, f, NULL);
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    }
    printf("%.6f\n", now() - t0);
    return 0;
}
