/* firstfree.c: a thread whose first malloc-family call is a free().
 *
 * glibc attaches a thread's arena in its first malloc-family call, and that call can be a
 * free (tcache_init): Go's cgo thread entry does exactly this. Here main mallocs a block and
 * hands it to a new thread, which frees it and does nothing else with malloc.
 *
 * Stdout: "freer tid <tid>", then "ready <pid>"; then reads one byte (or EOF) from stdin and
 * exits 0 with the thread still blocked (its arena stays as it was).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_barrier_t freed;
static pid_t freer_tid;

static void *freer(void *block) {
    free(block);
    freer_tid = gettid();
    pthread_barrier_wait(&freed);
    pause();
    return NULL;
}

int main(void) {
    pthread_barrier_init(&freed, NULL, 2);
    void *block = malloc(64);
    pthread_t t;
    if (pthread_create(&t, NULL, freer, block) != 0) return 1;
    pthread_barrier_wait(&freed);
    printf("freer tid %d\nready %d\n", freer_tid, getpid());
    fflush(stdout);
    char c;
    (void)read(0, &c, 1);
    _exit(0);
}
