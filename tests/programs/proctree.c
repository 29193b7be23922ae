/* proctree.c: a small process tree for the report's process table (issue 12). The parent
 * reserves 8 MiB of anonymous memory in parent_reserve() before it forks, so each child inherits
 * that region; then it forks two children. The first maps 1 MiB of its own and exits 0; the
 * second forks a grandchild (which exits 3) and then exits 0. Everyone is waited for. Every
 * process maps at least one page of its own, so that each makes a call the shim records; with
 * `quiet`, child2 and the grandchild map nothing and make no call the shim records at all; with
 * `clearenv`, the parent replaces its environment with PATH alone before it forks, as daemons and
 * sudo's env_reset do.
 *
 * Usage: proctree [quiet] [clearenv]
 * Stdout (each line flushed by the process that writes it; the order between processes varies):
 *   parent <pid> reserve <start-hex> <end-hex>
 *   fork <child-pid> at <CLOCK_MONOTONIC ns just before the fork>   (one per fork, by the forker)
 *   child1 <pid> mmap <start-hex> <end-hex>
 *   child2 <pid>
 *   grandchild <pid>
 *   done <pid>                                                      (the parent, last)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

__attribute__((noinline)) static char *parent_reserve(size_t len) {
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("forktree: mmap");
        exit(1);
    }
    return p;
}

static void own_page(void) {
    if (mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) _exit(1);
}

/* Forks, printing the child's pid and the time just before the fork. */
static pid_t fork_noted(void) {
    fflush(stdout);
    unsigned long long t = mono_ns();
    pid_t p = fork();
    if (p < 0) {
        perror("forktree: fork");
        exit(1);
    }
    if (p > 0) {
        printf("fork %d at %llu\n", (int)p, t);
        fflush(stdout);
    }
    return p;
}

static int wait_for(pid_t p) {
    int st;
    if (waitpid(p, &st, 0) != p) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(int argc, char **argv) {
    int quiet = 0, clear = 0;
    for (int i = 1; i < argc; i++) {
        quiet |= strcmp(argv[i], "quiet") == 0;
        clear |= strcmp(argv[i], "clearenv") == 0;
    }
    const size_t len = 8 << 20;
    char *r = parent_reserve(len);
    memset(r, 1, 4096);
    printf("parent %d reserve %#lx %#lx\n", (int)getpid(), (unsigned long)r, (unsigned long)(r + len));
    if (clear && (clearenv() != 0 || setenv("PATH", "/usr/bin:/bin", 1) != 0)) return 1;
    pid_t c1 = fork_noted();
    if (c1 == 0) {
        char *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        printf("child1 %d mmap %#lx %#lx\n", (int)getpid(), (unsigned long)m, (unsigned long)(m + (1 << 20)));
        fflush(stdout);
        _exit(m == MAP_FAILED);
    }
    pid_t c2 = fork_noted();
    if (c2 == 0) {
        if (!quiet) own_page();
        printf("child2 %d\n", (int)getpid());
        pid_t g = fork_noted();
        if (g == 0) {
            if (!quiet) own_page();
            printf("grandchild %d\n", (int)getpid());
            fflush(stdout);
            _exit(3);
        }
        _exit(wait_for(g) == 3 ? 0 : 1);
    }
    int a = wait_for(c1), b = wait_for(c2);
    printf("done %d\n", (int)getpid());
    fflush(stdout);
    return a == 0 && b == 0 ? 0 : 1;
}
