/* spawner.c: starts children every way a C program can: fork (the child maps memory and
 * exits), vfork + exec, posix_spawn, system(). Each child that runs a program runs TRUE
 * (argv[1], a dynamically linked `true`).
 *
 * Stdout: "fork <pid>", "vfork <pid>", "posix_spawn <pid>", "system <status>", then "done".
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char *child_argv[] = {argv[1], NULL};
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        void *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        _exit(m == MAP_FAILED);
    }
    waitpid(p, NULL, 0);
    printf("fork %d\n", p);
    fflush(stdout);
    p = vfork();
    if (p == 0) {
        execve(argv[1], child_argv, environ);
        _exit(127);
    }
    waitpid(p, NULL, 0);
    printf("vfork %d\n", p);
    if (posix_spawn(&p, argv[1], NULL, NULL, child_argv, environ) != 0) return 3;
    waitpid(p, NULL, 0);
    printf("posix_spawn %d\n", p);
    fflush(stdout);
    int st = system(argv[1]);
    printf("system %d\ndone\n", st);
    return 0;
}
