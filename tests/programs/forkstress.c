/* forkstress.c: forks while another thread is busy inside mmap/munmap (so inside the shim's
 * hooks, when traced). Each child maps CHILD_PAGES pages, prints nothing, and exits.
 *
 * Usage: forkstress FORKS
 * Stdout: one "child <pid> <addr-hex>" line per fork, then "done".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *busy(void *a) {
    while (!atomic_load(&stop)) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || munmap(p, 4096) != 0) exit(4);
    }
    return a;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int forks = atoi(argv[1]);
    pthread_t t;
    pthread_create(&t, NULL, busy, NULL);
    for (int i = 0; i < forks; i++) {
        int fds[2];
        if (pipe(fds) != 0) return 3;
        pid_t p = fork();
        if (p == 0) {
            void *m = mmap(NULL, 3 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            (void)!write(fds[1], &m, sizeof m);
            _exit(m == MAP_FAILED);
        }
        void *m = NULL;
        (void)!read(fds[0], &m, sizeof m);
        int st = 0;
        waitpid(p, &st, 0);
        close(fds[0]);
        close(fds[1]);
        if (st != 0) return 5;
        printf("child %d %p\n", p, m);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("done\n");
    return 0;
}
