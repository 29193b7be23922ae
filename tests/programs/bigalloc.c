/* bigalloc.c: large mallocs (served by glibc with their own mmap) from several threads, some
 * freed, some kept.
 *
 * Usage: bigalloc THREADS BLOCKS SIZE   each thread mallocs BLOCKS blocks of SIZE bytes (above
 * the 128 KiB mmap threshold, which it fixes with mallopt), then frees every other one,
 * starting with the first.
 *
 * Stdout: "kept <tid> <ptr-hex>" and "freed <tid> <ptr-hex>" per block, then "ready <pid>";
 * then reads one byte (or EOF) from stdin and exits 0 (kept blocks still mapped).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int blocks;
static size_t size;
static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;

static void *work(void *arg) {
    (void)arg;
    void *p[64];
    for (int i = 0; i < blocks; i++) {
        p[i] = malloc(size);
        memset(p[i], 1, 4096);
    }
    pid_t tid = gettid();
    for (int i = 0; i < blocks; i++) {
        pthread_mutex_lock(&out);
        printf("%s %d %p\n", i % 2 == 0 ? "freed" : "kept", tid, p[i]);
        pthread_mutex_unlock(&out);
    }
    for (int i = 0; i < blocks; i += 2) free(p[i]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int threads = atoi(argv[1]);
    blocks = atoi(argv[2]);
    size = strtoul(argv[3], NULL, 0);
    if (threads < 1 || threads > 16 || blocks < 1 || blocks > 64) return 2;
    /* A fixed threshold: glibc otherwise raises it to the size of the first mapped chunk
     * freed, and later blocks of that size would come from an arena heap instead. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    pthread_t t[16];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char c;
    (void)read(0, &c, 1);
    _exit(0);
}
