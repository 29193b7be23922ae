/* pieces.c: the two halves of a shell loop's iteration under the shim, timed apart (issue 12).
 *
 *   pieces exec N  vfork and execve /bin/true N times, waiting for each. The child's environment
 *                  is this process's plus LD_PRELOAD=$PIECES_PRELOAD when that is set: run this
 *                  process bare, and only the exec'd image pays for the preload.
 *   pieces fork N  fork N children, each leaving at once with exit_group, waiting for each. Run
 *                  it preloaded: what the shim adds to a fork, parent and child side.
 *
 * Prints the microseconds per exec or fork.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
        if (c < 0 || waitpid(c, &status, 0) != c || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    }
    printf("%.1f\n", (now_us() - t) / n);
    return 0;
}
