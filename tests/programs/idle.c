/* idle.c: a process that makes no call the shim records (no malloc, no mmap, no thread), for the
 * exit watcher's capture of such a process (issue 12). It prints its ready line with write(2),
 * waits for EOF on stdin, and leaves with an exit_group made from main's own code, so that
 * nothing it runs after the wait can fault in a page: its resident size at the exit is the
 * one a test read while it waited.
 *
 * Usage: idle
 * Stdout: ready <pid>
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    char line[32];
    int n = snprintf(line, sizeof line, "ready %d\n", (int)getpid());
    if (write(1, line, (size_t)n) != n) return 1;
    char byte;
    while (read(0, &byte, 1) > 0) {
    }
    long nr = SYS_exit_group, status = 0;
    __asm__ volatile("syscall" : "+a"(nr) : "D"(status) : "rcx", "r11", "memory");
    return 1;
}
