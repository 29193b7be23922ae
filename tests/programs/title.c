/* title.c: a parent that rewrites its title over its arguments, as setproctitle does (nginx,
 * postgres), between two forks, for the fork children's command lines (issue 12). The first
 * child is forked with the arguments as exec gave them; then the parent copies its environment
 * to the heap and writes a title longer than its arguments over them and into the environment
 * strings' place; the second child is forked with that title. Each child prints its line and
 * waits for EOF on stdin; the parent prints its ready line, waits for EOF too, then for both.
 *
 * Usage: title ARG...
 * Stdout (write(2), so nothing is buffered twice by a fork):
 *   before <pid>     (the child forked before the title; the two children's lines may come
 *   after <pid>       in either order, and before or after the parent's)
 *   ready <pid>
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void say(const char *what, int pid) {
    char line[64];
    int n = snprintf(line, sizeof line, "%s %d\n", what, pid);
    if (write(1, line, (size_t)n) != n) _exit(1);
}

static pid_t waiting_child(const char *which) {
    pid_t p = fork();
    if (p == 0) {
        say(which, (int)getpid());
        char byte;
        while (read(0, &byte, 1) > 0) {
        }
        _exit(0);
    }
    return p;
}

int main(int argc, char **argv) {
    pid_t before = waiting_child("before");
    /* The area: from argv[0] to the end of the last environment string. */
    char *end = argv[0];
    for (char **a = argv; *a; a++) end = *a + strlen(*a) + 1;
    int envc = 0;
    for (char **e = environ; *e; e++, envc++) end = *e + strlen(*e) + 1;
    char **copy = malloc(sizeof(char *) * (size_t)(envc + 1));
    for (int i = 0; i < envc; i++) copy[i] = strdup(environ[i]);
    copy[envc] = NULL;
    environ = copy;
    /* "title: xxx...", 40 bytes longer than the arguments were, within the area. */
    size_t args = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
    size_t room = (size_t)(end - argv[0]);
    size_t len = args + 40 < room - 1 ? args + 40 : room - 1;
    memset(argv[0], 0, room);
    memset(argv[0], 'x', len);
    memcpy(argv[0], "title: ", 7);
    pid_t after = waiting_child("after");
    say("ready", (int)getpid());
    char byte;
    while (read(0, &byte, 1) > 0) {
    }
    int s1, s2;
    waitpid(before, &s1, 0);
    waitpid(after, &s2, 0);
    return 0;
}
