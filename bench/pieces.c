/* pieces.c: the two halves of a shell loop's iteration under the shim, timed apart (issue 12).
 *
 *   pieces exec N  vfork and execve /bin/true N times, waiting for each. The child's environment
 *                  is this process's plus LD_PRELOAD=$PIECES_PRELOAD when that is set: run this
 *                  process bare, and only the exec'd image pays for the preload.
 *   pieces fork N  fork N children, each leaving at once with exit_group, waiting for each. Run
 *                  it preloaded: what the shim adds to a fork, parent and child side.
 *
 * Prints the microseconds per exec or fork, then the page faults per exec or fork of the child
 * (wait4's rusage: the exec'd image's, or the fork child's) and of this process (getrusage).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: pieces exec|fork N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    int envc = 0;
    while (environ[envc]) envc++;
    char **env = calloc((size_t)envc + 2, sizeof *env);
    memcpy(env, environ, (size_t)envc * sizeof *env);
    const char *pre = getenv("PIECES_PRELOAD");
    char line[4096];
    if (pre && *pre) {
        snprintf(line, sizeof line, "LD_PRELOAD=%s", pre);
        env[envc] = line;
    }
    char *args[] = {"/bin/true", NULL};
    int exec = strcmp(argv[1], "exec") == 0;
    struct rusage self0, self1;
    getrusage(RUSAGE_SELF, &self0);
    long child_faults = 0;
    double t = now_us();
    for (int i = 0; i < n; i++) {
        pid_t c = exec ? vfork() : fork();
        if (c == 0) {
            if (exec) {
                execve("/bin/true", args, env);
                _exit(127);
            }
            syscall(SYS_exit_group, 0);
        }
        int status;
        struct rusage ru;
        if (c < 0 || wait4(c, &status, 0, &ru) != c || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
        child_faults += ru.ru_minflt + ru.ru_majflt;
    }
    double us = (now_us() - t) / n;
    getrusage(RUSAGE_SELF, &self1);
    long self_faults = (self1.ru_minflt + self1.ru_majflt) - (self0.ru_minflt + self0.ru_majflt);
    printf("%.1f %.2f %.2f\n", us, (double)child_faults / n, (double)self_faults / n);
    return 0;
}
