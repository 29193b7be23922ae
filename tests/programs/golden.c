// The target of the golden report snapshots (tests/golden.rs): the same calls in the same order
// on every run. main reserves 16 MiB PROT_NONE and opens 1 MiB of it; then two threads, one after
// the other, each malloc (a malloc arena of its own) and map 1 MiB or 2 MiB; both stay alive,
// blocked on a pipe, until main has printed "ready PID" and read stdin to its end.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int done_pipe[2], go_pipe[2];

static void *worker(void *arg) {
    char *p = malloc(1000);
    memset(p, 1, 1000);
    char *q = mmap(NULL, (size_t)arg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    q[0] = 1;
    char c = 0;
    if (write(done_pipe[1], &c, 1) != 1) abort();
    if (read(go_pipe[0], &c, 1) < 0) abort();
    return p;
}

int main(void) {
    if (pipe(done_pipe) || pipe(go_pipe)) return 1;
    char *big = mmap(NULL, 16 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(big, 1 << 20, PROT_READ | PROT_WRITE);
    pthread_t t[2];
    for (long i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, worker, (void *)((i + 1) << 20));
        char c;
        if (read(done_pipe[0], &c, 1) != 1) return 1;
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    close(go_pipe[1]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return 0;
}
