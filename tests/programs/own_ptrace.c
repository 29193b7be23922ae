/* own_ptrace.c: a target with a debugger inside, for the syscall recorder's tests (issue 15): it
 * forks a child that asks to be traced by it (PTRACE_TRACEME) and stops itself; the parent waits
 * for the stop, continues the child and waits for its exit. A child whose request fails says so
 * and exits 3 (a careless debugger would wait for its stop forever).
 *
 * Stdout: child stopped by signal <n>
 *         child exited <code>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) {
            printf("traceme failed: %s\n", strerror(errno));
            fflush(stdout);
            _exit(3);
        }
        raise(SIGSTOP);
        _exit(0);
    }
    int st;
    if (waitpid(child, &st, 0) != child) return 1;
    if (WIFSTOPPED(st)) {
        printf("child stopped by signal %d\n", WSTOPSIG(st));
        ptrace(PTRACE_CONT, child, 0, 0);
        if (waitpid(child, &st, 0) != child) return 1;
    }
    printf("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return 0;
}
